#pragma once

// What the tests' child processes (daemon_process, node_process) share: collecting a child's
// exit status.
//
// Thread-safety: thread-safe, for a child that only one thread waits for.

#include <string>

#include <sys/types.h>

namespace sluice::test {

// Collects child `pid` (waitpid): with `block`, waits until it has exited. Returns true once it
// is collected, its wait status in `status`; false while it still runs. Throws
// std::system_error "<who>: waitpid" when waitpid fails.
bool reap_child(pid_t pid, int& status, bool block, const std::string& who);

}  // namespace sluice::test
