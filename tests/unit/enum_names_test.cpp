// sluice::enum_name (include/sluice/enum_names.hpp) and the to_string() functions built on it.

#include "sluice/enum_names.hpp"

#include <array>
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
