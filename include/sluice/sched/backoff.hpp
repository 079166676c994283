#pragma once

// Retry delays: exponential backoff with a cap and jitter. Formula and advice: docs/schedules.md.

#include <chrono>
#include <cstdint>

namespace sluice::sched {

// The delay before retry number `attempt` (1 = the first retry):
//   d = min(cap, base * 2^(attempt - 1)),  then  delay = d - floor(d * jitter * u)
// where u in [0, 1) is taken from the top 53 bits of `random`. So the delay lies in
// (d * (1 - jitter), d], never exceeds `cap`, and for a fixed `random` never shrinks as `attempt`
// grows. Saturates instead of overflowing for any attempt. An attempt below 1 counts as 1,
// negative base or cap as 0, and jitter is clamped to [0, 1] (NaN counts as 0).
// Pure and deterministic; thread-safe.
[[nodiscard]] std::chrono::milliseconds retry_delay(int attempt, std::chrono::milliseconds base,
                                                    std::chrono::milliseconds cap,
                                                    double jitter_fraction,
                                                    std::uint64_t random) noexcept;

// The same, with `random` drawn from a per-thread generator seeded from std::random_device.
// Thread-safe.
[[nodiscard]] std::chrono::milliseconds retry_delay(int attempt, std::chrono::milliseconds base,
                                                    std::chrono::milliseconds cap,
                                                    double jitter_fraction);

}  // namespace sluice::sched
