// Retry backoff: exponential growth, the cap, jitter bounds, and no overflow.

#include <chrono>
#include <climits>
#include <cmath>
#include <cstdint>
#include <limits>
#include <set>

#include <gtest/gtest.h>

#include "sluice/sched/backoff.hpp"

namespace {

using namespace std::chrono_literals;
using sluice::sched::retry_delay;
using ms = std::chrono::milliseconds;

// SplitMix64: a fixed, well-spread sequence of test inputs.
std::uint64_t splitmix(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

TEST(Backoff, DoublesFromBaseUpToTheCapWithoutJitter) {
  EXPECT_EQ(retry_delay(1, 1000ms, 60000ms, 0.0, 0), 1000ms);
  EXPECT_EQ(retry_delay(2, 1000ms, 60000ms, 0.0, 0), 2000ms);
  EXPECT_EQ(retry_delay(3, 1000ms, 60000ms, 0.0, 0), 4000ms);
  EXPECT_EQ(retry_delay(6, 1000ms, 60000ms, 0.0, 0), 32000ms);
  EXPECT_EQ(retry_delay(7, 1000ms, 60000ms, 0.0, 0), 60000ms);
  EXPECT_EQ(retry_delay(8, 1000ms, 60000ms, 0.5, 0), 60000ms);  // u = 0 removes nothing
}

TEST(Backoff, JitterStaysWithinItsBounds) {
  std::uint64_t state = 42;
  for (const double jitter : {0.1, 0.25, 0.5, 1.0}) {
    for (int attempt = 1; attempt <= 20; ++attempt) {
      const double full = std::min(250.0 * std::pow(2.0, attempt - 1), 30000.0);
      for (int i = 0; i < 200; ++i) {
        const auto d = retry_delay(attempt, 250ms, 30000ms, jitter, splitmix(state));
        EXPECT_LE(static_cast<double>(d.count()), full);
        EXPECT_GT(static_cast<double>(d.count()), full * (1.0 - jitter));
      }
    }
  }
  // The extremes of `random`.
  EXPECT_EQ(retry_delay(1, 1000ms, 60000ms, 0.5, std::numeric_limits<std::uint64_t>::max()), 501ms);
  EXPECT_EQ(retry_delay(1, 1000ms, 60000ms, 0.5, std::uint64_t{1} << 63), 750ms);
}

TEST(Backoff, NeverShrinksAsAttemptsGrow) {
  std::uint64_t state = 7;
  for (int trial = 0; trial < 50; ++trial) {
    const auto random = splitmix(state);
    ms previous{0};
    for (int attempt = 1; attempt <= 100; ++attempt) {
      const auto d = retry_delay(attempt, 100ms, 3600000ms, 0.3, random);
      EXPECT_GE(d, previous) << "attempt " << attempt;
      previous = d;
    }
    EXPECT_LE(previous, 3600000ms);
  }
}

TEST(Backoff, HugeAttemptsAndValuesDoNotOverflow) {
  EXPECT_EQ(retry_delay(64, 1000ms, 60000ms, 0.0, 0), 60000ms);
  EXPECT_EQ(retry_delay(1000, 1000ms, 60000ms, 0.0, 0), 60000ms);
  EXPECT_EQ(retry_delay(INT_MAX, 1000ms, 60000ms, 0.0, 0), 60000ms);
  EXPECT_EQ(retry_delay(INT_MAX, 1ms, ms::max(), 0.0, 0), ms::max());
  EXPECT_EQ(retry_delay(3, ms::max() / 2, ms::max(), 0.0, 0), ms::max());
  const auto jittered = retry_delay(INT_MAX, 1ms, ms::max(), 1.0, ~std::uint64_t{0});
  EXPECT_GT(jittered, 0ms);
  EXPECT_LE(jittered, ms::max());
}

TEST(Backoff, OddArguments) {
  EXPECT_EQ(retry_delay(0, 1000ms, 60000ms, 0.0, 0), 1000ms);
  EXPECT_EQ(retry_delay(-5, 1000ms, 60000ms, 0.0, 0), 1000ms);
  EXPECT_EQ(retry_delay(3, 1000ms, 500ms, 0.0, 0), 500ms);  // cap below base
  EXPECT_EQ(retry_delay(INT_MAX, 0ms, 60000ms, 0.5, 123), 0ms);
  EXPECT_EQ(retry_delay(3, -1000ms, 60000ms, 0.0, 0), 0ms);
  EXPECT_EQ(retry_delay(3, 1000ms, -1ms, 0.0, 0), 0ms);
  const auto half = std::uint64_t{1} << 63;
  EXPECT_EQ(retry_delay(1, 1000ms, 60000ms, std::nan(""), half), 1000ms);
  EXPECT_EQ(retry_delay(1, 1000ms, 60000ms, -1.0, half), 1000ms);
  EXPECT_EQ(retry_delay(1, 1000ms, 60000ms, 2.0, half), 500ms);  // clamped to 1
}

TEST(Backoff, ThreadLocalGeneratorStaysInBoundsAndVaries) {
  std::set<ms::rep> seen;
  for (int i = 0; i < 1000; ++i) {
    const auto d = retry_delay(5, 1000ms, 60000ms, 0.5);
    EXPECT_LE(d, 16000ms);
    EXPECT_GT(d, 8000ms);
    seen.insert(d.count());
  }
  EXPECT_GT(seen.size(), 100U);
}

}  // namespace
