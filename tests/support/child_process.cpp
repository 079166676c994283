#include "support/child_process.hpp"

#include <cerrno>
#include <system_error>

#include <sys/wait.h>

namespace sluice::test {

bool reap_child(pid_t pid, int& status, bool block, const std::string& who) {
  for (;;) {
    const pid_t r = ::waitpid(pid, &status, block ? 0 : WNOHANG);
    if (r == pid) return true;
    if (r == 0) return false;
    if (errno == EINTR) continue;
    throw std::system_error(errno, std::generic_category(), who + ": waitpid");
  }
}

}  // namespace sluice::test
