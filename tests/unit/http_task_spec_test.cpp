// task_spec_from_json: the body of POST /api/v1/tasks. Every accepted field lands in the spec;
// every refusal is an api_error(bad_request) whose message names the field; and no input,
// however mangled, makes it throw anything else.

#include <chrono>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "http/json.hpp"
#include "http/task_spec_json.hpp"
#include "sluice/sched/schedule.hpp"

namespace http = sluice::http;
namespace sched = sluice::sched;
using namespace std::chrono_literals;

namespace {

// The message of the bad_request the text is refused with ("" when it is accepted).
std::string refusal(const std::string& text) {
  try {
    (void)http::task_spec_from_json(std::string_view(text));
    return "";
  } catch (const http::api_error& e) {
    EXPECT_EQ(e.code(), http::error_code::bad_request) << text;
    return e.what();
  }
}

}  // namespace

TEST(HttpTaskSpec, MinimalBodyGivesDefaults) {
  const auto spec = http::task_spec_from_json(std::string_view(R"({"type":"noop"})"));
  const sched::task_spec defaults;
  EXPECT_EQ(spec.type, "noop");
  EXPECT_FALSE(spec.name);
  EXPECT_EQ(spec.payload, "{}");
  EXPECT_EQ(spec.when, defaults.when);
  EXPECT_EQ(spec.priority, defaults.priority);
  EXPECT_EQ(spec.max_attempts, defaults.max_attempts);
  EXPECT_EQ(spec.timeout, defaults.timeout);
  EXPECT_EQ(spec.misfire, defaults.misfire);
}

TEST(HttpTaskSpec, EveryFieldLandsInTheSpec) {
  const auto spec = http::task_spec_from_json(std::string_view(R"({
    "type": "sql", "name": "nightly", "payload": {"sql": "SELECT 1", "n": [1, 2, {"x": null}]},
    "schedule": {"kind": "cron", "expr": "*/5 * * * *", "tz": "Europe/Berlin"},
    "priority": -5, "max_attempts": 7, "backoff_base_ms": 250, "backoff_cap_ms": 60000,
    "timeout_ms": 1500, "misfire_policy": "catch_up", "misfire_grace_s": 30,
    "catch_up_limit": 4, "pause_after_failures": 3})"));
  EXPECT_EQ(spec.type, "sql");
  EXPECT_EQ(spec.name, "nightly");
  EXPECT_EQ(http::json::parse(spec.payload),
            http::json::parse(R"({"sql":"SELECT 1","n":[1,2,{"x":null}]})"));
  EXPECT_EQ(spec.when, sched::schedule::cron("*/5 * * * *", "Europe/Berlin"));
  EXPECT_EQ(spec.priority, -5);
  EXPECT_EQ(spec.max_attempts, 7);
  EXPECT_EQ(spec.backoff_base, 250ms);
  EXPECT_EQ(spec.backoff_cap, 60000ms);
  EXPECT_EQ(spec.timeout, 1500ms);
  EXPECT_EQ(spec.misfire, sched::misfire_policy::catch_up);
  EXPECT_EQ(spec.misfire_grace, 30s);
  EXPECT_EQ(spec.catch_up_limit, 4);
  EXPECT_EQ(spec.pause_after_failures, 3);
}

TEST(HttpTaskSpec, ScheduleForms) {
  const auto when = [](const std::string& schedule) {
    return http::task_spec_from_json(
               std::string_view(R"({"type":"t","schedule":)" + schedule + "}"))
        .when;
  };
  const auto at = sched::parse_timestamp("2030-01-02T03:04:05Z");
  EXPECT_EQ(when(R"({"kind":"once","at":"2030-01-02T03:04:05Z"})"), sched::schedule::once(at));
  EXPECT_EQ(when(R"({"kind":"once","at":"2030-01-02T05:04:05+02:00"})"), sched::schedule::once(at));
  EXPECT_EQ(when(R"({"kind":"once"})"), sched::schedule::once(sched::time_point{}));
  EXPECT_EQ(when(R"({"kind":"interval","every":"30s"})"), sched::schedule::every(30s));
  EXPECT_EQ(when(R"({"kind":"interval","every":"1h30m"})"), sched::schedule::every(90min));
  EXPECT_EQ(when(R"({"kind":"every","every":45})"), sched::schedule::every(45s));
  EXPECT_EQ(when(R"({"kind":"interval","every":"5m","anchor":"2030-01-02T03:04:05Z"})"),
            sched::schedule::every(5min, at));
  EXPECT_EQ(when(R"({"kind":"cron","expr":"0 9 * * MON-FRI"})"),
            sched::schedule::cron("0 9 * * MON-FRI", "UTC"));
  EXPECT_EQ(when(R"("every:30s")"), sched::schedule::every(30s));
  EXPECT_EQ(when(R"("cron:0 9 * * *@Europe/Berlin")"),
            sched::schedule::cron("0 9 * * *", "Europe/Berlin"));
}

TEST(HttpTaskSpec, NullNameMeansNoName) {
  EXPECT_FALSE(http::task_spec_from_json(std::string_view(R"({"type":"t","name":null})")).name);
}

TEST(HttpTaskSpec, SqlLookingTextIsJustText) {
  const auto spec = http::task_spec_from_json(
      std::string_view(R"({"type":"t","name":"x'; DROP TABLE tasks; --"})"));
  EXPECT_EQ(spec.name, "x'; DROP TABLE tasks; --");
}

struct bad_case {
  const char* body;
  const char* mentions;  // a substring the message must contain
};

TEST(HttpTaskSpec, RefusalsNameTheField) {
  const std::vector<bad_case> cases = {
      {"", "empty"},
      {"   ", "empty"},
      {"{", "malformed JSON"},
      {"{\"type\":\"t\",}", "malformed JSON"},
      {"[]", "expected a JSON object"},
      {"\"type\"", "expected a JSON object"},
      {"null", "expected a JSON object"},
      {"{}", "type: required"},
      {R"({"type":5})", "type: expected a string"},
      {R"({"type":""})", "type: must be 1-100"},
      {R"({"type":"has space"})", "type:"},
      {R"({"type":"t","bogus":1})", "unknown field 'bogus'"},
      {R"({"type":"t","Type":"x"})", "unknown field 'Type'"},
      {R"({"type":"t","name":7})", "name: expected a string"},
      {R"({"type":"t","name":""})", "name: must be 1-200"},
      {R"({"type":"t","name":"a\u0000b"})", "name: must not contain NUL"},
      {R"({"type":"t","payload":[1]})", "payload: expected a JSON object"},
      {R"({"type":"t","payload":"{}"})", "payload: expected a JSON object"},
      {R"({"type":"t","payload":{"k":"a\u0000"}})", "payload: strings must not contain"},
      {R"({"type":"t","payload":{"a\u0000":1}})", "payload: strings must not contain"},
      {R"({"type":"t","priority":"1"})", "priority: expected an integer, got a string"},
      {R"({"type":"t","priority":1.5})", "priority: expected an integer, got a non-integer"},
      {R"({"type":"t","priority":true})", "priority: expected an integer, got a boolean"},
      {R"({"type":"t","priority":null})", "priority: expected an integer, got null"},
      {R"({"type":"t","priority":1001})", "priority: must be between -1000 and 1000"},
      {R"({"type":"t","priority":18446744073709551615})", "priority: must be between"},
      {R"({"type":"t","max_attempts":0})", "max_attempts: must be between 1 and 1000"},
      {R"({"type":"t","backoff_base_ms":-1})", "backoff_base_ms: must be between 0"},
      {R"({"type":"t","backoff_base_ms":5000,"backoff_cap_ms":10})",
       "backoff_cap_ms: must be at least"},
      {R"({"type":"t","timeout_ms":0})", "timeout_ms: must be between 1"},
      {R"({"type":"t","timeout_ms":99999999999999})", "timeout_ms: must be between"},
      {R"({"type":"t","misfire_policy":"sometimes"})", "misfire_policy:"},
      {R"({"type":"t","misfire_policy":1})", "misfire_policy: expected a string"},
      {R"({"type":"t","misfire_grace_s":-1})", "misfire_grace_s: must be between 0"},
      {R"({"type":"t","catch_up_limit":0})", "catch_up_limit: must be between 1 and 10000"},
      {R"({"type":"t","pause_after_failures":-2})", "pause_after_failures: must be between 0"},
      {R"({"type":"t","schedule":5})", "schedule: expected an object"},
      {R"({"type":"t","schedule":"sometimes"})", "schedule:"},
      {R"({"type":"t","schedule":{}})", "schedule.kind: required"},
      {R"({"type":"t","schedule":{"kind":"weekly"}})", "schedule.kind:"},
      {R"({"type":"t","schedule":{"kind":"once","at":"tomorrow"}})", "schedule.at:"},
      {R"({"type":"t","schedule":{"kind":"once","every":"5s"}})",
       "unknown field 'schedule.every' for a once schedule"},
      {R"({"type":"t","schedule":{"kind":"interval"}})", "schedule.every: required"},
      {R"({"type":"t","schedule":{"kind":"interval","every":"-5s"}})",
       "schedule.every: must be positive"},
      {R"({"type":"t","schedule":{"kind":"interval","every":-5}})",
       "schedule.every: must be positive"},
      {R"({"type":"t","schedule":{"kind":"interval","every":0}})",
       "schedule.every: must be positive"},
      {R"({"type":"t","schedule":{"kind":"interval","every":"0s"}})", "schedule.every:"},
      {R"({"type":"t","schedule":{"kind":"interval","every":"5 parsecs"}})", "schedule.every:"},
      {R"({"type":"t","schedule":{"kind":"interval","every":1.5}})",
       "schedule.every: expected an integer"},
      {R"({"type":"t","schedule":{"kind":"interval","every":"5s","anchor":"x"}})",
       "schedule.anchor:"},
      {R"({"type":"t","schedule":{"kind":"cron"}})", "schedule.expr: required"},
      {R"({"type":"t","schedule":{"kind":"cron","expr":"61 * * * *"}})",
       "schedule.expr: cron: minute field"},
      {R"({"type":"t","schedule":{"kind":"cron","expr":"0 0 30 2 *"}})", "schedule.expr:"},
      {R"({"type":"t","schedule":{"kind":"cron","expr":"* * * * *","tz":"Mars/Olympus"}})",
       "schedule.expr:"},
      {R"({"type":"t","schedule":{"kind":"cron","expr":"* * * * *","tz":3}})",
       "schedule.tz: expected a string"},
      {R"({"type":"t","schedule":{"kind":"cron","expr":"* * * * *","at":"x"}})",
       "unknown field 'schedule.at' for a cron schedule"},
      {R"({"type":"t","schedule":{"kind":"cron","expr":"* * * * *","text":"cron:0 * * * *"}})",
       "schedule.text: 'cron:0 * * * *' is not the schedule the other fields give"},
      {R"({"type":"t","schedule":{"kind":"once","text":"every:5s"}})", "schedule.text:"},
      {R"({"type":"t","schedule":{"kind":"once","text":"now"}})", "schedule.text:"},
      {R"({"type":"t","schedule":{"kind":"once","text":5}})", "schedule.text: expected a string"},
      {R"({"type":"t","unique_key":""})", "unique_key: must be 1-200"},
      {R"({"type":"t","unique_key":7})", "unique_key: expected a string"},
      {R"({"type":"t","unique_key":"a\u0000b"})", "unique_key: must not contain NUL"},
      {R"({"type":"t","on_conflict":"merge"})", "on_conflict: 'merge' is not one of keep, replace"},
      {R"({"type":"t","on_conflict":null})", "on_conflict: expected a string"},
      {R"({"type":"t","stat":"paused"})", "unknown field 'stat'"},
  };
  for (const auto& c : cases) {
    const std::string message = refusal(c.body);
    EXPECT_NE(message.find(c.mentions), std::string::npos)
        << "body: " << c.body << "\nmessage: " << message
        << "\nexpected to mention: " << c.mentions;
  }
}

TEST(HttpTaskSpec, UniqueKeyAndConflictMode) {
  const auto keyed = http::task_spec_from_json(
      std::string_view(R"({"type":"t","unique_key":"order:42","on_conflict":"replace"})"));
  EXPECT_EQ(keyed.unique_key, "order:42");
  EXPECT_EQ(keyed.on_conflict, sched::conflict_mode::replace);
  const auto plain =
      http::task_spec_from_json(std::string_view(R"({"type":"t","unique_key":null})"));
  EXPECT_FALSE(plain.unique_key);
  EXPECT_EQ(plain.on_conflict, sched::conflict_mode::keep);
  EXPECT_EQ(refusal(R"({"type":"t","unique_key":")" + std::string(201, 'k') + "\"}"),
            "unique_key: must be 1-200 characters");
}

// The task JSON the API and the CLI print (json_of) is a body POST takes: the fields a producer
// sets come back into the spec, what the scheduler writes is ignored.
TEST(HttpTaskSpec, TheTaskJsonIsABodyThatGivesTheSameSpec) {
  const auto at = sched::parse_timestamp("2030-01-02T03:04:05.25Z");
  for (const auto& when :
       {sched::schedule::once(sched::time_point{}), sched::schedule::once(at),
        sched::schedule::every(90s), sched::schedule::every(1h, at),
        sched::schedule::cron("15 4 * * MON"), sched::schedule::cron("0 9 * * *", "Asia/Tokyo")}) {
    sched::task t;
    t.id = 7;
    t.type = "report.daily";
    t.name = "nightly";
    t.unique_key = "report:eu";
    t.payload = R"({"region": "eu", "n": [1, 2]})";
    t.state = sched::task_state::retryable;
    t.schedule_kind = std::string(when.kind_name());
    t.schedule_spec = when.spec();
    t.timezone = when.tz();
    t.misfire_policy = "catch_up";
    t.misfire_grace_s = 30;
    t.catch_up_limit = 3;
    t.next_run_at = at;
    t.priority = 9;
    t.attempt = 2;
    t.max_attempts = 4;
    t.backoff_base_ms = 20;
    t.backoff_cap_ms = 900;
    t.timeout_ms = 1500;
    t.pause_after_failures = 2;
    t.claim_token = 11;
    t.claimed_by = "node-1";
    t.last_error = "boom";
    t.runs = 5;
    const std::string text = http::dump(http::json_of(t));
    const auto spec = http::task_spec_from_json(std::string_view(text));
    EXPECT_EQ(spec.when, when) << text;
    EXPECT_EQ(spec.type, t.type);
    EXPECT_EQ(spec.name, t.name);
    EXPECT_EQ(spec.unique_key, t.unique_key);
    EXPECT_EQ(http::json::parse(spec.payload), http::json::parse(t.payload));
    EXPECT_EQ(spec.priority, 9);
    EXPECT_EQ(spec.max_attempts, 4);
    EXPECT_EQ(spec.backoff_base, 20ms);
    EXPECT_EQ(spec.backoff_cap, 900ms);
    EXPECT_EQ(spec.timeout, 1500ms);
    EXPECT_EQ(spec.misfire, sched::misfire_policy::catch_up);
    EXPECT_EQ(spec.misfire_grace, 30s);
    EXPECT_EQ(spec.catch_up_limit, 3);
    EXPECT_EQ(spec.pause_after_failures, 2);
  }
}

TEST(HttpTaskSpec, DeepNestingIsRefusedBeforeItIsBuilt) {
  const std::string deep =
      R"({"type":"t","payload":{"a":)" + std::string(100000, '[') + std::string(100000, ']') + "}}";
  EXPECT_NE(refusal(deep).find("nested deeper than"), std::string::npos);

  // Built in memory rather than parsed: the iterative depth check still refuses it.
  http::json payload = http::json::object();
  http::json* at = &payload;
  for (int i = 0; i < 200; ++i) {
    (*at)["a"] = http::json::object();
    at = &(*at)["a"];
  }
  const http::json body = {{"type", "t"}, {"payload", payload}};
  try {
    (void)http::task_spec_from_json(body);
    ADD_FAILURE() << "accepted a 200-deep payload";
  } catch (const http::api_error& e) {
    EXPECT_NE(std::string(e.what()).find("payload: nested deeper"), std::string::npos) << e.what();
  }
}

TEST(HttpTaskSpec, LongFieldNamesAreCutShortInMessages) {
  const std::string key(100000, 'k');
  const std::string message = refusal(R"({"type":"t",")" + key + R"(":1})");
  EXPECT_NE(message.find("unknown field"), std::string::npos);
  EXPECT_LT(message.size(), 1000U);
}

TEST(HttpTaskSpec, RescheduleBody) {
  const auto at = sched::parse_timestamp("2030-01-02T03:04:05Z");
  EXPECT_EQ(http::reschedule_time_from_json(http::json::parse(R"({"at":"2030-01-02T03:04:05Z"})")),
            at);
  const auto refused = [](const char* text) {
    try {
      (void)http::reschedule_time_from_json(http::json::parse(text));
      return std::string();
    } catch (const http::api_error& e) {
      return std::string(e.what());
    }
  };
  EXPECT_NE(refused("{}").find("at: required"), std::string::npos);
  EXPECT_NE(refused(R"({"at":5})").find("at: expected a string"), std::string::npos);
  EXPECT_NE(refused(R"({"at":"soon"})").find("at:"), std::string::npos);
  EXPECT_NE(refused(R"({"at":"2030-01-02T03:04:05Z","x":1})").find("unknown field 'x'"),
            std::string::npos);
  EXPECT_NE(refused("[]").find("expected a JSON object"), std::string::npos);
}

// A small deterministic fuzz: mutations of valid bodies are either accepted (and then valid) or
// refused with bad_request, never anything else.
TEST(HttpTaskSpec, MutatedBodiesOnlyEverGiveBadRequest) {
  const std::vector<std::string> seeds = {
      R"({"type":"sql","name":"n","payload":{"sql":"SELECT 1"},"schedule":{"kind":"cron","expr":"*/5 * * * *","tz":"Europe/Berlin"},"priority":3})",
      R"({"type":"http","schedule":{"kind":"interval","every":"30s","anchor":"2030-01-01T00:00:00Z"},"timeout_ms":500,"misfire_policy":"skip"})",
      R"({"type":"t","schedule":"cron:0 9 * * MON-FRI@Europe/Berlin","backoff_base_ms":10,"backoff_cap_ms":20})",
      R"({"type":"t","schedule":{"kind":"once","at":"2030-01-02T03:04:05.5+01:00"},"max_attempts":1})",
  };
  static constexpr char alphabet_text[] = "{}[]\":,0123456789-+.eE tfnul\\/\x00\xff\xc3\xa9*@a";
  const std::string alphabet(alphabet_text, sizeof alphabet_text - 1);  // keeps the NUL
  std::mt19937_64 rng(12345);
  int accepted = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string text = seeds[rng() % seeds.size()];
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits && !text.empty(); ++e) {
      const std::size_t pos = rng() % text.size();
      const char c = alphabet[rng() % alphabet.size()];
      switch (rng() % 3) {
        case 0:
          text[pos] = c;
          break;
        case 1:
          text.insert(text.begin() + static_cast<std::ptrdiff_t>(pos), c);
          break;
        default:
          text.erase(pos, 1 + rng() % 3);
      }
    }
    try {
      const auto spec = http::task_spec_from_json(std::string_view(text));
      EXPECT_NO_THROW(spec.validate()) << text;
      ++accepted;
    } catch (const http::api_error& e) {
      ASSERT_EQ(e.code(), http::error_code::bad_request) << text;
    } catch (const std::exception& e) {
      FAIL() << "threw " << e.what() << " for " << text;
    }
  }
  EXPECT_GT(accepted, 0);  // the mutations leave some bodies valid, so both paths ran
}
