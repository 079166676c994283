// LISTEN / NOTIFY between two connections.

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "sluice/pg/connection.hpp"
#include "support/pg_test_env.hpp"

namespace pg = sluice::pg;
namespace test = sluice::test;
using namespace std::chrono_literals;
using std::chrono::steady_clock;

namespace {

class PgNotify : public ::testing::Test {
 protected:
  void SetUp() override {
    listener_ = test::test_connect("sluice-test-listener");
    notifier_ = test::test_connect("sluice-test-notifier");
  }

  // Channels are cluster-wide per database: make them unique so parallel runs do not mix.
  const std::string channel_ = "sluice_test_" + test::unique_suffix();
  pg::connection listener_;
  pg::connection notifier_;
};

}  // namespace

TEST_F(PgNotify, ANotificationReachesTheListener) {
  listener_.listen(channel_);
  notifier_.notify(channel_, "hello");
  const auto start = steady_clock::now();
  const std::optional<pg::notification> n = listener_.wait_notification(5s);
  ASSERT_TRUE(n.has_value());
  EXPECT_LT(steady_clock::now() - start, 2s);
  EXPECT_EQ(n->channel, channel_);
  EXPECT_EQ(n->payload, "hello");
  EXPECT_EQ(n->backend_pid, notifier_.backend_pid());
  EXPECT_FALSE(listener_.poisoned());
}

TEST_F(PgNotify, WaitingWithNothingPendingTimesOut) {
  listener_.listen(channel_);
  const auto start = steady_clock::now();
  EXPECT_EQ(listener_.wait_notification(300ms), std::nullopt);
  const auto elapsed = steady_clock::now() - start;
  EXPECT_GE(elapsed, 290ms);
  EXPECT_LT(elapsed, 2s);
  // A zero timeout only looks.
  const auto instant = steady_clock::now();
  EXPECT_EQ(listener_.wait_notification(0ms), std::nullopt);
  EXPECT_LT(steady_clock::now() - instant, 200ms);
  EXPECT_TRUE(listener_.drain_notifications().empty());
  EXPECT_FALSE(listener_.poisoned());
}

TEST_F(PgNotify, ANotificationWakesAWaitingListener) {
  listener_.listen(channel_);
  // The notifier sends from another thread while the listener is already blocked in poll().
  std::thread sender([&] {
    std::this_thread::sleep_for(200ms);  // the point of the test is to arrive during the wait
    notifier_.notify(channel_, "late");
  });
  const auto start = steady_clock::now();
  const auto n = listener_.wait_notification(10s);
  const auto elapsed = steady_clock::now() - start;
  sender.join();
  ASSERT_TRUE(n.has_value());
  EXPECT_EQ(n->payload, "late");
  EXPECT_LT(elapsed, 5s);
}

TEST_F(PgNotify, ChannelNamesAreQuotedAndPayloadsKeptVerbatim) {
  const std::string odd = "Mixed Case \"quoted\" " + test::unique_suffix();
  const std::string payload = "it's {\"json\": true} ż €";
  listener_.listen(odd);
  notifier_.notify(odd, payload);
  const auto n = listener_.wait_notification(5s);
  ASSERT_TRUE(n.has_value());
  EXPECT_EQ(n->channel, odd);
  EXPECT_EQ(n->payload, payload);
}

TEST_F(PgNotify, SeveralNotificationsArriveInOrder) {
  listener_.listen(channel_);
  {
    pg::transaction tx(notifier_);
    notifier_.notify(channel_, "a");
    notifier_.notify(channel_, "b");
    notifier_.notify(channel_, "c");
    tx.commit();  // delivered together at commit
  }
  std::vector<std::string> payloads;
  const auto deadline = steady_clock::now() + 5s;
  while (payloads.size() < 3 && steady_clock::now() < deadline) {
    const auto remaining =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - steady_clock::now());
    if (auto n = listener_.wait_notification(remaining)) payloads.push_back(n->payload);
    for (auto& n : listener_.drain_notifications())
      payloads.push_back(n.payload);
  }
  EXPECT_EQ(payloads, (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_TRUE(listener_.drain_notifications().empty());
}

TEST_F(PgNotify, ANotificationReadAlongWithAResultIsNotLost) {
  listener_.listen(channel_);
  notifier_.notify(channel_, "early");
  // Whether it came with this result or comes just after, the next wait returns it.
  (void)listener_.exec("SELECT 1");
  const auto n = listener_.wait_notification(5s);
  ASSERT_TRUE(n.has_value());
  EXPECT_EQ(n->payload, "early");
}

TEST_F(PgNotify, UnlistenStopsDelivery) {
  listener_.listen(channel_);
  listener_.unlisten(channel_);
  notifier_.notify(channel_, "nobody hears this");
  EXPECT_EQ(listener_.wait_notification(300ms), std::nullopt);
}

TEST_F(PgNotify, ALostConnectionEndsTheWaitWithAnError) {
  listener_.listen(channel_);
  EXPECT_TRUE(notifier_.query("SELECT pg_terminate_backend($1, 5000)", listener_.backend_pid())
                  .one<bool>());
  const auto start = steady_clock::now();
  EXPECT_THROW((void)listener_.wait_notification(10s), pg::connection_error);
  EXPECT_LT(steady_clock::now() - start, 2s);
  EXPECT_TRUE(listener_.poisoned());
  EXPECT_THROW((void)listener_.drain_notifications(), pg::connection_error);
}

TEST_F(PgNotify, LosingTheConnectionWhileBlockedWakesTheWaiter) {
  listener_.listen(channel_);
  const int pid = listener_.backend_pid();
  std::thread killer([&] {
    std::this_thread::sleep_for(200ms);  // let the listener block first
    (void)notifier_.query("SELECT pg_terminate_backend($1, 5000)", pid);
  });
  const auto start = steady_clock::now();
  EXPECT_THROW((void)listener_.wait_notification(20s), pg::connection_error);
  const auto elapsed = steady_clock::now() - start;
  killer.join();
  EXPECT_LT(elapsed, 5s);
  EXPECT_TRUE(listener_.poisoned());
}
