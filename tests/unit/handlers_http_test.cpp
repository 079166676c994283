// The http handler against a local cpp-httplib server on an ephemeral port: statuses, what is
// sent, body excerpts, redirects, redaction, and deadlines and cancellation of a slow endpoint.

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <nlohmann/json.hpp>
#include <sys/socket.h>
#include <unistd.h>

#include "sluice/pg/connection.hpp"
#include "sluice/sched/handlers.hpp"
#include "support/pg_test_env.hpp"

namespace sched = sluice::sched;
using namespace std::chrono_literals;
using std::chrono::milliseconds;
using std::chrono::steady_clock;
using testing::HasSubstr;
using testing::StartsWith;

namespace {

// What /echo received.
struct received_request {
  std::string method;
  std::string body;
  std::multimap<std::string, std::string> headers;  // httplib compares names case-insensitively
};

class HandlersHttp : public testing::Test {
 protected:
  void SetUp() override {
    server_.Get("/ok", [](const httplib::Request&, httplib::Response& res) {
      res.set_content("hello", "text/plain");
    });
    server_.Get("/fail", [](const httplib::Request&, httplib::Response& res) {
      res.status = 500;
      res.set_content("boom", "text/plain");
    });
    server_.Get("/big", [](const httplib::Request&, httplib::Response& res) {
      res.set_content(std::string(100000, 'b'), "text/plain");
    });
    server_.Get("/redirect",
                [](const httplib::Request&, httplib::Response& res) { res.set_redirect("/ok"); });
    // A redirect to another loopback address than the one allowed.
    server_.Get("/elsewhere", [this](const httplib::Request&, httplib::Response& res) {
      res.set_redirect("http://127.0.0.2:" + std::to_string(port_) + "/ok");
    });
    // Answers only when the test ends (or after 20 s): a server that hangs.
    server_.Get("/slow", [this](const httplib::Request&, httplib::Response& res) {
      std::unique_lock lock(mutex_);
      slow_arrived_ = true;
      arrived_cv_.notify_all();
      released_cv_.wait_for(lock, 20s, [this] { return released_; });
      res.set_content("late", "text/plain");
    });
    const auto echo = [this](const httplib::Request& req, httplib::Response& res) {
      const std::scoped_lock lock(mutex_);
      received_.method = req.method;
      received_.body = req.body;
      received_.headers.clear();
      for (const auto& [name, value] : req.headers)
        received_.headers.emplace(name, value);
      res.status = 204;
    };
    server_.Post("/echo", echo);
    server_.Put("/echo", echo);
    server_.Delete("/echo", echo);
    server_.Get("/echo", echo);

    // 0.0.0.0 so that 127.0.0.2 reaches it too (the redirect tests).
    port_ = server_.bind_to_any_port("0.0.0.0");
    ASSERT_GT(port_, 0);
    // bind_to_any_port already listens: requests queue in the kernel until the loop accepts.
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    // httplib 0.11's stop() does nothing until the accept loop runs (the loop would then never
    // end), and it offers no signal for that moment.
    const auto give_up = steady_clock::now() + 10s;
    while (!server_.is_running() && steady_clock::now() < give_up)
      std::this_thread::sleep_for(1ms);
    ASSERT_TRUE(server_.is_running());
  }

  void TearDown() override {
    {
      const std::scoped_lock lock(mutex_);
      released_ = true;
    }
    released_cv_.notify_all();
    server_.stop();
    if (thread_.joinable()) thread_.join();
  }

  std::string url(const std::string& path) const {
    return "http://127.0.0.1:" + std::to_string(port_) + path;
  }

  struct outcome {
    sched::handler_result result;
    nlohmann::json detail;
    milliseconds elapsed{};
  };

  outcome run(const nlohmann::json& payload, milliseconds timeout = 10s,
              std::size_t max_excerpt = 4096,
              const std::function<void(sched::cancel_token&)>& while_running = {}) {
    sched::task t;
    t.id = 1;
    t.type = "http";
    t.payload = payload.dump();
    sched::cancel_token token;
    const auto started = steady_clock::now();
    token.set_deadline(started + timeout);
    std::thread helper;
    if (while_running) helper = std::thread([&] { while_running(token); });
    sched::task_context ctx(t, std::chrono::system_clock::now(), token, nullptr,
                            [](sluice::pg::connection&) { return false; });
    outcome o;
    sched::http_policy policy = policy_;
    policy.max_body_excerpt = max_excerpt;
    o.result = sched::make_http_handler(std::move(policy))(ctx);
    o.elapsed = std::chrono::duration_cast<milliseconds>(steady_clock::now() - started);
    if (helper.joinable()) helper.join();
    o.detail = ctx.detail().empty() ? nlohmann::json() : nlohmann::json::parse(ctx.detail());
    return o;
  }

  // Waits until a request to /slow is being served.
  bool wait_for_slow_request(milliseconds timeout) {
    std::unique_lock lock(mutex_);
    return arrived_cv_.wait_for(lock, timeout, [this] { return slow_arrived_; });
  }

  received_request received() {
    const std::scoped_lock lock(mutex_);
    return received_;
  }

  // The tests call a receiver on loopback, which HTTP tasks may call only when allowed.
  sched::http_policy policy_ = [] {
    sched::http_policy p;
    p.allow_networks.push_back(*sched::parse_ip_network("127.0.0.1/32"));
    return p;
  }();
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable released_cv_;
  std::condition_variable arrived_cv_;
  bool released_ = false;      // guarded by mutex_
  bool slow_arrived_ = false;  // guarded by mutex_
  received_request received_;  // guarded by mutex_
};

}  // namespace

TEST_F(HandlersHttp, A200Succeeds) {
  const auto o = run({{"url", url("/ok")}});
  ASSERT_TRUE(o.result.ok) << o.result.error;
  EXPECT_EQ(o.detail["status"], 200);
  EXPECT_EQ(o.detail["body_excerpt"], "hello");
  EXPECT_GE(o.detail["elapsed_ms"].get<int>(), 0);
}

TEST_F(HandlersHttp, A500FailsNamingTheUrlWithoutSecrets) {
  const auto o = run({{"url", "http://user:pa55word@127.0.0.1:" + std::to_string(port_) +
                                  "/fail?token=s3cret#frag"}});
  EXPECT_FALSE(o.result.ok);
  EXPECT_EQ(o.result.error, "HTTP 500 from " + url("/fail"));
  EXPECT_EQ(o.detail["status"], 500);
  EXPECT_EQ(o.detail["body_excerpt"], "boom");
  EXPECT_EQ(o.detail.dump().find("s3cret"), std::string::npos);
}

TEST_F(HandlersHttp, ExpectStatusReplacesTheDefault2xx) {
  auto o = run({{"url", url("/fail")}, {"expect_status", {500, 503}}});
  EXPECT_TRUE(o.result.ok) << o.result.error;
  o = run({{"url", url("/ok")}, {"expect_status", {204}}});
  EXPECT_FALSE(o.result.ok);
  EXPECT_EQ(o.result.error, "HTTP 200 from " + url("/ok"));
}

TEST_F(HandlersHttp, MethodHeadersAndBodyAreSentAsGiven) {
  auto o = run({{"method", "POST"},
                {"url", url("/echo")},
                {"headers", {{"X-A", "b"}, {"Content-Type", "application/json"}}},
                {"body", R"({"hello": "world"})"}});
  ASSERT_TRUE(o.result.ok) << o.result.error;
  EXPECT_EQ(o.detail["status"], 204);
  auto r = received();
  EXPECT_EQ(r.method, "POST");
  EXPECT_EQ(r.body, R"({"hello": "world"})");
  ASSERT_EQ(r.headers.count("X-A"), 1U);
  EXPECT_EQ(r.headers.find("X-A")->second, "b");
  EXPECT_EQ(r.headers.find("Content-Type")->second, "application/json");
  EXPECT_EQ(r.headers.count("Expect"), 0U);
  EXPECT_THAT(r.headers.find("User-Agent")->second, StartsWith("sluice/"));

  // Without a Content-Type the body is not labelled as a form.
  o = run({{"method", "put"}, {"url", url("/echo")}, {"body", "plain"}});
  ASSERT_TRUE(o.result.ok) << o.result.error;
  r = received();
  EXPECT_EQ(r.method, "PUT");
  EXPECT_EQ(r.body, "plain");
  EXPECT_EQ(r.headers.count("Content-Type"), 0U);

  o = run({{"method", "DELETE"}, {"url", url("/echo")}});
  ASSERT_TRUE(o.result.ok) << o.result.error;
  EXPECT_EQ(received().method, "DELETE");

  o = run({{"url", url("/echo")}});
  ASSERT_TRUE(o.result.ok) << o.result.error;
  EXPECT_EQ(received().method, "GET");
}

TEST_F(HandlersHttp, TheBodyExcerptIsBounded) {
  const auto o = run({{"url", url("/big")}}, 10s, 100);
  ASSERT_TRUE(o.result.ok) << o.result.error;
  EXPECT_EQ(o.detail["body_excerpt"], std::string(100, 'b'));
  EXPECT_EQ(o.detail["body_bytes"], 100000);
}

TEST_F(HandlersHttp, RedirectsAreFollowedOnlyWhenAsked) {
  auto o = run({{"url", url("/redirect")}});
  EXPECT_FALSE(o.result.ok);
  EXPECT_EQ(o.result.error, "HTTP 302 from " + url("/redirect"));
  o = run({{"url", url("/redirect")}, {"follow_redirects", true}});
  ASSERT_TRUE(o.result.ok) << o.result.error;
  EXPECT_EQ(o.detail["status"], 200);
  EXPECT_EQ(o.detail["body_excerpt"], "hello");
}

TEST_F(HandlersHttp, ASlowServerIsAbandonedAtTheDeadline) {
  const milliseconds timeout = 400ms;
  const auto o = run({{"url", url("/slow")}}, timeout);
  EXPECT_FALSE(o.result.ok);
  EXPECT_THAT(o.result.error, StartsWith("HTTP GET " + url("/slow") + ": timed out after "));
  EXPECT_TRUE(o.detail["status"].is_null());
  EXPECT_GE(o.elapsed, timeout - 10ms);  // libcurl rounds its own timers
  EXPECT_LT(o.elapsed, timeout + 1s);
}

TEST_F(HandlersHttp, ThePayloadsTimeoutWinsWhenShorter) {
  const auto o = run({{"url", url("/slow")}, {"timeout_ms", 200}}, 30s);
  EXPECT_FALSE(o.result.ok);
  EXPECT_THAT(o.result.error, HasSubstr(": timed out after "));
  EXPECT_LT(o.elapsed, 200ms + 1s);
}

TEST_F(HandlersHttp, CancellingTheTokenAbortsTheTransfer) {
  steady_clock::time_point cancelled_at{};
  const auto o = run({{"url", url("/slow")}}, 30s, 4096, [&](sched::cancel_token& token) {
    EXPECT_TRUE(wait_for_slow_request(10s));
    cancelled_at = steady_clock::now();
    token.cancel();
  });
  const auto finished_at = steady_clock::now();
  EXPECT_FALSE(o.result.ok);
  EXPECT_THAT(o.result.error, StartsWith("HTTP GET " + url("/slow") + ": cancelled after "));
  // libcurl calls the progress callback about once a second while it waits for data.
  EXPECT_LT(finished_at - cancelled_at, 1500ms);
}

TEST_F(HandlersHttp, AConnectionErrorIsAFailure) {
  const int port = sluice::test::unused_local_port();
  const std::string target = "http://127.0.0.1:" + std::to_string(port) + "/x";
  const auto o = run({{"url", target}});
  EXPECT_FALSE(o.result.ok);
  EXPECT_THAT(o.result.error, StartsWith("HTTP GET " + target + ": "));
  EXPECT_TRUE(o.detail["status"].is_null());
}

// httplib drops header lines with an empty value, so this one reads the request off a raw socket.
TEST_F(HandlersHttp, AnEmptyHeaderValueIsSentAsAnEmptyHeader) {
  const int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(listener, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&addr), len), 0);
  ASSERT_EQ(::listen(listener, 1), 0);
  ASSERT_EQ(::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  std::string request;
  std::thread server([&] {
    const int c = ::accept(listener, nullptr, nullptr);
    if (c < 0) return;
    char buf[4096];
    while (request.find("\r\n\r\n") == std::string::npos) {
      const ssize_t n = ::read(c, buf, sizeof buf);
      if (n <= 0) break;
      request.append(buf, static_cast<std::size_t>(n));
    }
    const std::string reply = "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n";
    static_cast<void>(::write(c, reply.data(), reply.size()));
    ::close(c);
  });
  const auto o = run({{"url", "http://127.0.0.1:" + std::to_string(ntohs(addr.sin_port)) + "/"},
                      {"headers", {{"X-Empty", ""}, {"X-A", "b"}}}});
  server.join();
  ::close(listener);
  ASSERT_TRUE(o.result.ok) << o.result.error;
  EXPECT_THAT(request, HasSubstr("\r\nX-Empty:\r\n"));
  EXPECT_THAT(request, HasSubstr("\r\nX-A: b\r\n"));
}

TEST_F(HandlersHttp, LoopbackIsRefusedByDefault) {
  policy_ = {};
  const auto o = run({{"url", url("/ok")}});
  EXPECT_FALSE(o.result.ok);
  EXPECT_EQ(o.result.error, "HTTP GET " + url("/ok") +
                                ": refused to connect: 127.0.0.1 is a loopback address; HTTP "
                                "tasks may call such addresses only when [http_tasks] "
                                "allow_networks lists them");
  EXPECT_TRUE(o.detail["status"].is_null());
  EXPECT_THAT(o.detail["error"].get<std::string>(), HasSubstr("127.0.0.1 is a loopback address"));
}

TEST_F(HandlersHttp, AHostNameIsCheckedOnTheAddressItResolvesTo) {
  policy_ = {};
  const std::string target = "http://localhost:" + std::to_string(port_) + "/ok";
  const auto o = run({{"url", target}});
  EXPECT_FALSE(o.result.ok);
  EXPECT_THAT(o.result.error, HasSubstr("is a loopback address"));
}

TEST_F(HandlersHttp, CloudMetadataIsRefusedByDefault) {
  policy_ = {};
  const auto o = run({{"url", "http://169.254.169.254/latest/meta-data/"}}, 5s);
  EXPECT_FALSE(o.result.ok);
  EXPECT_THAT(o.result.error,
              HasSubstr("refused to connect: 169.254.169.254 is a link-local address"));
  EXPECT_LT(o.elapsed, 2s);  // refused before any packet is sent
}

TEST_F(HandlersHttp, ARedirectToARefusedAddressIsRefused) {
  // 127.0.0.1 allowed, 127.0.0.2 not: the first request succeeds, the redirected one is refused.
  const auto o = run({{"url", url("/elsewhere")}, {"follow_redirects", true}});
  EXPECT_FALSE(o.result.ok);
  EXPECT_THAT(o.result.error, HasSubstr("refused to connect: 127.0.0.2 is a loopback address"));
  policy_.allow_networks.push_back(*sched::parse_ip_network("127.0.0.2"));
  const auto allowed = run({{"url", url("/elsewhere")}, {"follow_redirects", true}});
  ASSERT_TRUE(allowed.result.ok) << allowed.result.error;
  EXPECT_EQ(allowed.detail["body_excerpt"], "hello");
}

TEST_F(HandlersHttp, AllowedWhenTheWholeRangeIsListed) {
  policy_ = {};
  policy_.allow_networks.push_back(*sched::parse_ip_network("127.0.0.0/8"));
  const auto o = run({{"url", url("/ok")}});
  ASSERT_TRUE(o.result.ok) << o.result.error;
}

TEST_F(HandlersHttp, RequestsAreSignedWhenASecretIsSet) {
  policy_.signing_secret = "0123456789abcdef-test-secret";
  const std::string body = R"({"order":42})";
  const auto before = std::chrono::duration_cast<std::chrono::seconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  const auto o = run({{"method", "POST"}, {"url", url("/echo")}, {"body", body}});
  ASSERT_TRUE(o.result.ok) << o.result.error;
  const auto r = received();
  ASSERT_EQ(r.headers.count("Sluice-Timestamp"), 1U);
  ASSERT_EQ(r.headers.count("Sluice-Signature"), 1U);
  const std::string ts = r.headers.find("Sluice-Timestamp")->second;
  EXPECT_NEAR(std::stoll(ts), before, 5);
  // What a receiver computes from what it received.
  EXPECT_EQ(r.headers.find("Sluice-Signature")->second,
            sched::http_signature(policy_.signing_secret, ts, r.body));
  EXPECT_EQ(r.body, body);
}

TEST_F(HandlersHttp, RequestsAreNotSignedWithoutASecret) {
  const auto o = run({{"method", "POST"}, {"url", url("/echo")}, {"body", "x"}});
  ASSERT_TRUE(o.result.ok) << o.result.error;
  EXPECT_EQ(received().headers.count("Sluice-Signature"), 0U);
  EXPECT_EQ(received().headers.count("Sluice-Timestamp"), 0U);
}

TEST_F(HandlersHttp, ATaskPicksANamedSigningKey) {
  policy_.signing_secret = "the-default-secret-0123456789";
  policy_.signing_keys["partner_a"] = "partner-a-secret-0123456789";
  const auto o = run(
      {{"method", "POST"}, {"url", url("/echo")}, {"body", "hi"}, {"signing_key", "partner_a"}});
  ASSERT_TRUE(o.result.ok) << o.result.error;
  const auto r = received();
  const std::string ts = r.headers.find("Sluice-Timestamp")->second;
  EXPECT_EQ(r.headers.find("Sluice-Signature")->second,
            sched::http_signature("partner-a-secret-0123456789", ts, "hi"));

  const auto unknown = run({{"url", url("/echo")}, {"signing_key", "partner_b"}});
  EXPECT_FALSE(unknown.result.ok);
  EXPECT_EQ(unknown.result.error, "HTTP GET " + url("/echo") +
                                      ": signing_key 'partner_b' is not a key of "
                                      "[http_tasks.signing_keys]");
}
