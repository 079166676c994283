// sluice::enum_name (include/sluice/enum_names.hpp) and the to_string() functions built on it.

#include "sluice/enum_names.hpp"

#include <array>
#include <optional>
#include <stdexcept>
#include <string_view>

#include <gtest/gtest.h>

#include "sluice/log.hpp"
#include "sluice/pg/connection.hpp"
#include "sluice/pg/error.hpp"
#include "sluice/pool/settings.hpp"
#include "sluice/sched/schedule.hpp"
#include "sluice/sched/store.hpp"
#include "sluice/sched/task.hpp"

namespace {

enum class colour { red, green, blue };
constexpr std::array<std::string_view, 3> colour_names{"red", "green", "blue"};

TEST(EnumNames, NamesEachEnumeratorInDeclarationOrder) {
  EXPECT_EQ(sluice::enum_name<colour::blue>(colour::red, colour_names), "red");
  EXPECT_EQ(sluice::enum_name<colour::blue>(colour::green, colour_names), "green");
  EXPECT_EQ(sluice::enum_name<colour::blue>(colour::blue, colour_names), "blue");
}

TEST(EnumNames, AValueOutsideTheEnumGivesTheFallback) {
  EXPECT_EQ(sluice::enum_name<colour::blue>(static_cast<colour>(3), colour_names), "?");
  EXPECT_EQ(sluice::enum_name<colour::blue>(static_cast<colour>(-1), colour_names, "none"), "none");
}

TEST(EnumNames, IsUsableAtCompileTime) {
  static_assert(sluice::enum_name<colour::blue>(colour::green, colour_names) == "green");
}

TEST(EnumNames, FindsAnEnumeratorByItsExactName) {
  EXPECT_EQ(sluice::enum_from_name<colour>(colour_names, "red"), colour::red);
  EXPECT_EQ(sluice::enum_from_name<colour>(colour_names, "blue"), colour::blue);
  EXPECT_EQ(sluice::enum_from_name<colour>(colour_names, "Blue"), std::nullopt);
  EXPECT_EQ(sluice::enum_from_name<colour>(colour_names, ""), std::nullopt);
  EXPECT_EQ(sluice::enum_from_name<colour>(colour_names, "blues"), std::nullopt);
}

TEST(EnumNames, ParsersKeepTheirSpellingsAndMessages) {
  using namespace sluice;
  EXPECT_EQ(sched::parse_schedule_kind("EVERY"), sched::schedule_kind::interval);
  EXPECT_EQ(sched::parse_schedule_kind("Cron"), sched::schedule_kind::cron);
  EXPECT_EQ(sched::parse_misfire_policy("catch-up"), sched::misfire_policy::catch_up);
  EXPECT_EQ(sched::parse_misfire_policy("SKIP"), sched::misfire_policy::skip);
  EXPECT_EQ(sched::parse_task_state("paused"), sched::task_state::paused);
  EXPECT_EQ(pool::parse_reset_mode("discard_all"), pool::reset_mode::discard_all);
  try {
    (void)pool::parse_reset_mode("Rollback", "pool.reset");
    FAIL() << "a reset mode is matched exactly";
  } catch (const pool::settings_error& e) {
    EXPECT_STREQ(e.what(), "pool.reset: 'Rollback' is not one of none, rollback, discard_all");
  }
  try {
    (void)sched::parse_schedule_kind("weekly");
    FAIL() << "weekly is no schedule kind";
  } catch (const sched::schedule_error& e) {
    EXPECT_STREQ(e.what(), "schedule: kind 'weekly' is not one of once, interval, cron");
  }
  try {
    (void)sched::parse_misfire_policy("Later");
    FAIL() << "later is no misfire policy";
  } catch (const sched::schedule_error& e) {
    EXPECT_STREQ(e.what(), "misfire policy 'Later' is not one of coalesce, catch_up, skip");
  }
  try {
    (void)sched::parse_task_state("Paused");
    FAIL() << "a task state is matched exactly";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(),
                 "unknown task state 'Paused' (scheduled, available, running, retryable, "
                 "succeeded, failed, cancelled, paused, blocked)");
  }
}

TEST(EnumNames, EveryLibraryEnumKeepsItsNames) {
  EXPECT_EQ(sluice::to_string(sluice::log_level::debug), "debug");
  EXPECT_EQ(sluice::to_string(sluice::log_level::error), "error");
  EXPECT_EQ(sluice::pg::to_string(sluice::pg::transaction_status::in_transaction),
            "in_transaction");
  EXPECT_EQ(sluice::pg::to_string(static_cast<sluice::pg::transaction_status>(99)), "unknown");
  EXPECT_EQ(sluice::pg::to_string(sluice::pg::error_kind::outcome_unknown), "outcome_unknown");
  EXPECT_EQ(sluice::pg::to_string(static_cast<sluice::pg::error_kind>(99)), "unknown");
  EXPECT_EQ(sluice::pool::to_string(sluice::pool::reset_mode::discard_all), "discard_all");
  EXPECT_EQ(sluice::sched::to_string(sluice::sched::schedule_kind::interval), "interval");
  EXPECT_EQ(sluice::sched::to_string(sluice::sched::misfire_policy::catch_up), "catch_up");
  EXPECT_EQ(sluice::sched::to_string(sluice::sched::add_outcome::replaced), "replaced");
  EXPECT_EQ(sluice::sched::to_string(sluice::sched::task_state::scheduled), "scheduled");
  EXPECT_EQ(sluice::sched::to_string(sluice::sched::task_state::blocked), "blocked");
  EXPECT_EQ(sluice::sched::to_string(static_cast<sluice::sched::task_state>(99)), "?");
}

}  // namespace
