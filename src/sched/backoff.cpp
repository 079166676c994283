#include "sluice/sched/backoff.hpp"

#include <algorithm>
#include <cmath>
#include <random>

namespace sluice::sched {

std::chrono::milliseconds retry_delay(int attempt, std::chrono::milliseconds base,
                                      std::chrono::milliseconds cap, double jitter_fraction,
                                      std::uint64_t random) noexcept {
  using rep = std::chrono::milliseconds::rep;
  const rep b = std::max<rep>(base.count(), 0);
  const rep c = std::max<rep>(cap.count(), 0);
  const int doublings = std::max(attempt, 1) - 1;

  // base * 2^doublings, stopping at the cap before it can overflow.
  rep d = std::min(b, c);
  for (int i = 0; i < doublings && d > 0 && d < c; ++i)
    d = d > c / 2 ? c : d * 2;

  const double jitter = std::isnan(jitter_fraction) ? 0.0 : std::clamp(jitter_fraction, 0.0, 1.0);
  const double u = static_cast<double>(random >> 11) * 0x1.0p-53;  // [0, 1)
  const auto cut = static_cast<rep>(static_cast<double>(d) * jitter * u);
  return std::chrono::milliseconds{d - std::clamp<rep>(cut, 0, d)};
}

std::chrono::milliseconds retry_delay(int attempt, std::chrono::milliseconds base,
                                      std::chrono::milliseconds cap, double jitter_fraction) {
  thread_local std::mt19937_64 generator{[] {
    std::random_device device;
    return (std::uint64_t{device()} << 32) ^ device();
  }()};
  return retry_delay(attempt, base, cap, jitter_fraction, generator());
}

}  // namespace sluice::sched
