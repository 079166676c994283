// Flow control without a database: the checks of a graph before anything is written (order,
// cycles, refs, recurring tasks) and of a flow limit.

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "sluice/sched/cron.hpp"
#include "sluice/sched/flow.hpp"

namespace sched = sluice::sched;
using namespace std::chrono_literals;

namespace {

sched::graph_task node(std::string ref, std::vector<std::string> after = {}) {
  sched::graph_task g;
  g.ref = std::move(ref);
  g.spec.type = "t";
  g.after = std::move(after);
  return g;
}

std::string refused(const std::vector<sched::graph_task>& graph) {
  try {
    (void)sched::detail::topological_order(graph);
  } catch (const sched::schedule_error& e) {
    return e.what();
  }
  return "";
}

TEST(FlowGraph, EveryTaskComesAfterThoseItRunsAfter) {
  // d after b and c, b and c after a, e alone; given out of order.
  const std::vector<sched::graph_task> g{node("d", {"b", "c"}), node("b", {"a"}), node("e"),
                                         node("c", {"a"}), node("a")};
  const auto order = sched::detail::topological_order(g);
  ASSERT_EQ(order.size(), g.size());
  std::vector<std::size_t> pos(g.size());
  for (std::size_t i = 0; i < order.size(); ++i)
    pos[order[i]] = i;
  for (std::size_t i = 0; i < g.size(); ++i) {
    for (const auto& up : g[i].after) {
      const auto j = static_cast<std::size_t>(
          std::find_if(g.begin(), g.end(), [&](const auto& t) { return t.ref == up; }) - g.begin());
      EXPECT_LT(pos[j], pos[i]) << g[i].ref << " after " << up;
    }
  }
}

TEST(FlowGraph, ACycleIsRefusedNamingItsTasks) {
  const auto message = refused({node("a"), node("b", {"c"}), node("c", {"d"}), node("d", {"b"})});
  EXPECT_NE(message.find("cycle"), std::string::npos) << message;
  EXPECT_NE(message.find("'b'"), std::string::npos) << message;
  EXPECT_NE(message.find("'d'"), std::string::npos) << message;
  EXPECT_EQ(message.find("'a'"), std::string::npos) << message;
}

TEST(FlowGraph, BadRefsAreRefused) {
  EXPECT_NE(refused({}).find("no tasks"), std::string::npos);
  EXPECT_NE(refused({node("a"), node("a")}).find("used by two tasks"), std::string::npos);
  EXPECT_NE(refused({node("a", {"zz"})}).find("'zz', which is not in the graph"),
            std::string::npos);
  EXPECT_NE(refused({node("a", {"a"})}).find("runs after itself"), std::string::npos);
  EXPECT_NE(refused({node("")}).find("ref must be 1-200 characters"), std::string::npos);
}

TEST(FlowGraph, RecurringTasksCannotRunAfterOrBeRunAfter) {
  auto every = node("every");
  every.spec.when = sched::schedule::every(std::chrono::seconds(10));
  EXPECT_NE(refused({every, node("b", {"every"})}).find("which is recurring"), std::string::npos);
  auto late = node("late", {"a"});
  late.spec.when = sched::schedule::every(std::chrono::seconds(10));
  EXPECT_NE(refused({node("a"), late}).find("'late' is recurring"), std::string::npos);
  auto by_id = node("by_id");
  by_id.after_ids = {7};
  by_id.spec.when = sched::schedule::every(std::chrono::seconds(10));
  EXPECT_NE(refused({by_id}).find("'by_id' is recurring"), std::string::npos);
  // A recurring task on its own in a graph is fine.
  EXPECT_EQ(refused({every}), "");
}

TEST(FlowLimit, LimitsAreChecked) {
  auto running_with_period = sched::flow_limit::running(2);
  running_with_period.rate_period = 1s;
  const auto message = [](const sched::flow_limit& l) {
    try {
      l.validate("t");
    } catch (const sched::schedule_error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_EQ(message(sched::flow_limit::running(3)), "");
  EXPECT_EQ(message(sched::flow_limit::starts(30, 1min)), "");
  EXPECT_EQ(message(sched::flow_limit::running(1, "customer")), "");
  EXPECT_NE(message(sched::flow_limit{}).find("set max_running, rate, or both"), std::string::npos);
  EXPECT_NE(message(sched::flow_limit::running(0)).find("max_running must be at least 1"),
            std::string::npos);
  EXPECT_NE(
      message(sched::flow_limit::starts(5, 0ms)).find("rate_period must be between 1s and 1d"),
      std::string::npos);
  EXPECT_NE(message(sched::flow_limit::starts(5, 500ms)).find("between 1s and 1d"),
            std::string::npos);
  EXPECT_NE(message(running_with_period).find("without a rate"), std::string::npos);
  EXPECT_NE(message(sched::flow_limit::running(2, std::string(201, 'k'))).find("longer than 200"),
            std::string::npos);
  EXPECT_EQ(sched::parse_dependency_failure("run"), sched::dependency_failure::run);
  EXPECT_THROW((void)sched::parse_dependency_failure("retry"), sched::schedule_error);
}

}  // namespace
