// sluice::error is the root of every error the library reports: each layer's errors are caught
// as sluice::error (and as std::runtime_error), keep their own types and the pg layer's SQLSTATE
// classification.

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>

#include <gtest/gtest.h>

#include "sluice/sluice.hpp"
#include "support/fake_connector.hpp"

namespace pg = sluice::pg;
namespace pool = sluice::pool;
namespace sched = sluice::sched;
using namespace std::chrono_literals;

namespace {

// Runs `f`, expects it to throw something caught as sluice::error; returns what() or "".
template <class F>
std::string caught_as_sluice_error(F&& f) {
  try {
    f();
  } catch (const sluice::error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not a sluice::error: " << e.what();
    return {};
  }
  ADD_FAILURE() << "nothing thrown";
  return {};
}

template <class E>
constexpr bool rooted =
    std::is_base_of_v<sluice::error, E>&& std::is_base_of_v<std::runtime_error, E>;

}  // namespace

static_assert(std::is_base_of_v<std::runtime_error, sluice::error>);
static_assert(rooted<pg::error> && rooted<pg::sql_error> && rooted<pg::connection_error> &&
              rooted<pg::conversion_error>);
static_assert(rooted<pool::pool_timeout> && rooted<pool::pool_closed> &&
              rooted<pool::budget_error> && rooted<pool::settings_error>);
static_assert(rooted<sched::schedule_error> && rooted<sched::schema_error> &&
              rooted<sched::conflict_error>);
// The pg hierarchy is kept below the root.
static_assert(std::is_base_of_v<pg::error, pg::sql_error> &&
              std::is_base_of_v<pg::error, pg::connection_error> &&
              std::is_base_of_v<pg::error, pg::conversion_error>);

TEST(ErrorRoot, EveryErrorTypeIsCaughtAsSluiceError) {
  EXPECT_EQ(caught_as_sluice_error(
                [] { throw pg::sql_error("23505", "duplicate key", "", "", "INSERT"); }),
            "ERROR 23505: duplicate key [query: INSERT]");
  EXPECT_EQ(caught_as_sluice_error([] { throw pg::connection_error("refused", "53300"); }),
            "refused");
  EXPECT_EQ(caught_as_sluice_error([] { throw pg::conversion_error("bad"); }), "bad");
  EXPECT_EQ(caught_as_sluice_error([] { throw pool::pool_timeout("timeout"); }), "timeout");
  EXPECT_EQ(caught_as_sluice_error([] { throw pool::pool_closed("closed"); }), "closed");
  EXPECT_EQ(caught_as_sluice_error([] { throw pool::budget_error("budget"); }), "budget");
  EXPECT_EQ(caught_as_sluice_error([] { throw pool::settings_error("size"); }), "size");
  EXPECT_EQ(caught_as_sluice_error([] { throw sched::schedule_error("cron"); }), "cron");
  EXPECT_EQ(caught_as_sluice_error([] { throw sched::schema_error("schema"); }), "schema");
  EXPECT_EQ(caught_as_sluice_error([] { throw sched::conflict_error("name"); }), "name");
}

TEST(ErrorRoot, SqlstateClassificationSurvivesTheRoot) {
  // Caught through the root, the pg error still says what to do with its connection.
  try {
    throw pg::sql_error("40001", "could not serialize access", "", "", "UPDATE");
  } catch (const sluice::error& e) {
    const auto* p = dynamic_cast<const pg::error*>(&e);
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(p->kind(), pg::error_kind::retry_transaction);
    EXPECT_FALSE(p->poisons_connection());
  }
  try {
    throw pg::connection_error("FATAL:  sorry, too many clients already", "53300");
  } catch (const sluice::error& e) {
    const auto* p = dynamic_cast<const pg::error*>(&e);
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(p->kind(), pg::error_kind::back_pressure);
    EXPECT_TRUE(p->poisons_connection());
  }
  try {
    throw pg::sql_error("57P01", "terminating connection due to administrator command", "", "", "");
  } catch (const pg::error& e) {
    EXPECT_EQ(e.kind(), pg::error_kind::poisoning);
  }
}

TEST(ErrorRoot, WhatTheLibraryThrowsIsASluiceError) {
  // pg: a value that does not convert.
  EXPECT_NE(
      caught_as_sluice_error([] { (void)pg::parse_timestamp("yesterday"); }).find("yesterday"),
      std::string::npos);
  // pool: a bad setting, a budget too small, a pool that cannot lend, a closed pool.
  EXPECT_NE(caught_as_sluice_error([] {
              pool::settings s;
              s.size = 0;
              pool::validate(s);
            }).find("size"),
            std::string::npos);
  auto fake = std::make_shared<sluice::test::fake_connector>();
  EXPECT_FALSE(caught_as_sluice_error([&] {
                 pool::manager_settings ms;
                 ms.connection_budget = 2;
                 pool::pool_manager m(ms, fake);
                 pool::settings big;
                 big.name = "big";
                 big.size = 5;
                 big.max_overflow = 0;
                 (void)m.add(big);
               }).empty());
  {
    pool::settings s;
    s.name = "one";
    s.size = 1;
    s.max_overflow = 0;
    pool::pool p(s, fake);
    auto held = p.acquire();
    EXPECT_NE(caught_as_sluice_error([&] { (void)p.acquire_for(1ms); }).find("'one'"),
              std::string::npos);
    held.release();
    (void)p.close(0ms);
    EXPECT_FALSE(caught_as_sluice_error([&] { (void)p.acquire(); }).empty());
  }
  // sched: a malformed cron expression and schedule text.
  EXPECT_NE(caught_as_sluice_error([] {
              (void)sched::cron_expression::parse("61 * * * *");
            }).find("minute"),
            std::string::npos);
  EXPECT_FALSE(caught_as_sluice_error([] { (void)sched::schedule::parse("sometimes"); }).empty());
}
