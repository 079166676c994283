#pragma once

// The one bounded wait of the tests: for a condition that no signal announces (a row the
// engine writes, a counter a pool's own thread moves, a process state). Prefer waiting on a
// signal where there is one.
//
// Thread-safety: eventually() is thread-safe; `done` is called on the calling thread only.

#include <chrono>
#include <functional>

namespace sluice::test {

// Calls `done` every `period` until it returns true or `timeout` passes; returns its last
// answer (so a condition that holds at the deadline still counts).
bool eventually(const std::function<bool()>& done,
                std::chrono::milliseconds timeout = std::chrono::seconds(5),
                std::chrono::milliseconds period = std::chrono::milliseconds(10));

}  // namespace sluice::test
