// validate_payload(): every payload error names the type and the field, and the handlers refuse
// at run time what validation refuses at creation.

#include <chrono>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "sluice/pg/connection.hpp"
#include "sluice/sched/handlers.hpp"

namespace sched = sluice::sched;
using namespace std::chrono_literals;

namespace {

struct bad_payload {
  const char* type;
  const char* payload;
  const char* message;
};

sched::command_policy test_policy() {
  sched::command_policy policy;
  policy.allow = {"/bin/echo"};
  return policy;
}

std::string validation_error(std::string_view type, std::string_view payload,
                             const sched::command_policy* policy) {
  try {
    sched::validate_payload(type, payload, policy);
  } catch (const sched::schedule_error& e) {
    return e.what();
  }
  return "(accepted)";
}

const std::vector<bad_payload> bad_payloads = {
    // shape shared by every type
    {"sql", "{\"pool\": ", "sql payload: not valid JSON (error at byte 10)"},
    {"sql", "[1, 2]", "sql payload: must be a JSON object"},
    {"noop", "\"x\"", "noop payload: must be a JSON object"},
    {"my.custom", "{oops}", "my.custom payload: not valid JSON (error at byte 2)"},
    // sql
    {"sql", "{\"sql\": \"SELECT 1\"}", "sql payload: 'pool' is required"},
    {"sql", "{\"pool\": 7, \"sql\": \"SELECT 1\"}", "sql payload: 'pool' must be a string"},
    {"sql", "{\"pool\": \"\", \"sql\": \"SELECT 1\"}", "sql payload: 'pool' must not be empty"},
    {"sql", "{\"pool\": \"p\"}", "sql payload: 'sql' is required"},
    {"sql", "{\"pool\": \"p\", \"sql\": null}", "sql payload: 'sql' is required"},
    {"sql", "{\"pool\": \"p\", \"sql\": \"SELECT 1\", \"parms\": []}",
     "sql payload: unknown field 'parms' (known: pool, sql, params, transactional)"},
    {"sql", "{\"pool\": \"p\", \"sql\": \"SELECT 1\", \"transactional\": \"yes\"}",
     "sql payload: 'transactional' must be true or false"},
    {"sql", "{\"pool\": \"p\", \"sql\": \"SELECT $1\", \"params\": 1}",
     "sql payload: 'params' must be an array"},
    {"sql", R"({"pool": "p", "sql": "SELECT $1", "params": [1, "a\u0000b"]})",
     "sql payload: 'params[1]' cannot be sent: text parameter contains a NUL byte; PostgreSQL "
     "text cannot hold one (send binary data as bytes)"},
    // http
    {"http", "{}", "http payload: 'url' is required"},
    {"http", "{\"url\": \"ftp://example.com/x\"}",
     "http payload: 'url' must start with http:// or https://"},
    {"http", "{\"url\": \"file:///etc/passwd\"}",
     "http payload: 'url' must start with http:// or https://"},
    {"http", "{\"url\": \"http:///path\"}", "http payload: 'url' has no host"},
    {"http", "{\"url\": \"http://a b/\"}",
     "http payload: 'url' must not contain spaces or control characters"},
    {"http", "{\"url\": \"http://h/\", \"method\": \"BREW\"}",
     "http payload: 'method' must be one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"},
    {"http", "{\"url\": \"http://h/\", \"headers\": [\"X-A: b\"]}",
     "http payload: 'headers' must be an object of strings"},
    {"http", "{\"url\": \"http://h/\", \"headers\": {\"X-A\": 1}}",
     "http payload: 'headers.X-A' must be a string"},
    {"http", "{\"url\": \"http://h/\", \"headers\": {\"Bad Name\": \"v\"}}",
     "http payload: 'headers.Bad Name' is not a valid header name"},
    {"http", "{\"url\": \"http://h/\", \"headers\": {\"X-A\": \"v\\r\\nX-Injected: 1\"}}",
     "http payload: 'headers.X-A' must not contain CR or LF"},
    {"http", "{\"url\": \"http://h/\", \"body\": {\"a\": 1}}",
     "http payload: 'body' must be a string (serialise JSON bodies yourself)"},
    {"http", "{\"url\": \"http://h/\", \"method\": \"HEAD\", \"body\": \"x\"}",
     "http payload: 'body' is not allowed with method HEAD"},
    {"http", "{\"url\": \"http://h/\", \"expect_status\": []}",
     "http payload: 'expect_status' must be a non-empty array of status codes"},
    {"http", "{\"url\": \"http://h/\", \"expect_status\": [200, 700]}",
     "http payload: 'expect_status' must hold status codes between 100 and 599"},
    {"http", "{\"url\": \"http://h/\", \"timeout_ms\": 0}",
     "http payload: 'timeout_ms' must be an integer in 1..86400000"},
    {"http", "{\"url\": \"http://h/\", \"timeout_ms\": 1.5}",
     "http payload: 'timeout_ms' must be an integer in 1..86400000"},
    {"http", "{\"url\": \"http://h/\", \"timeout_ms\": 18446744073709551615}",
     "http payload: 'timeout_ms' must be an integer in 1..86400000"},
    {"http", "{\"url\": \"http://h/\", \"follow_redirects\": \"yes\"}",
     "http payload: 'follow_redirects' must be true or false"},
    {"http", "{\"url\": \"http://h/\", \"headers\": {\"sluice-signature\": \"v1=00\"}}",
     "http payload: 'headers.sluice-signature' is set by sluice when it signs requests "
     "([http_tasks] signing_secret)"},
    {"http", "{\"url\": \"http://h/\", \"headers\": {\"Sluice-Timestamp\": \"1\"}}",
     "http payload: 'headers.Sluice-Timestamp' is set by sluice when it signs requests "
     "([http_tasks] signing_secret)"},
    {"http", "{\"url\": \"http://h/\", \"signing_key\": \"has space\"}",
     "http payload: 'signing_key' must be the name of a key of [http_tasks.signing_keys] (1 to "
     "64 of A-Z a-z 0-9 _ - .), never the secret itself"},
    {"http", "{\"url\": \"http://h/\", \"signing_key\": 3}",
     "http payload: 'signing_key' must be a string"},
    {"http", "{\"url\": \"http://h/\", \"header\": {}}",
     "http payload: unknown field 'header' (known: method, url, headers, body, expect_status, "
     "timeout_ms, follow_redirects, signing_key)"},
    // command
    {"command", "{}", "command payload: 'argv' is required"},
    {"command", "{\"argv\": []}", "command payload: 'argv' must be a non-empty array of strings"},
    {"command", "{\"argv\": \"/bin/echo hi\"}",
     "command payload: 'argv' must be a non-empty array of strings"},
    {"command", "{\"argv\": [\"/bin/echo\", 1]}", "command payload: 'argv[1]' must be a string"},
    {"command", "{\"argv\": [\"echo\", \"hi\"]}",
     "command payload: 'argv[0]' must be an absolute path (no PATH search is done)"},
    {"command", "{\"argv\": [\"/bin/rm\", \"-rf\", \"/\"]}",
     "command payload: command not allowed: /bin/rm (argv[0] must be one of the allow-listed "
     "paths)"},
    {"command", "{\"argv\": [\"/bin/./echo\"]}",
     "command payload: command not allowed: /bin/./echo (argv[0] must be one of the "
     "allow-listed paths)"},
    {"command", "{\"argv\": [\"/bin/echo\"], \"env\": {\"A=B\": \"c\"}}",
     "command payload: 'env.A=B' is not a valid variable name (letters, digits and '_', not "
     "starting with a digit)"},
    {"command", "{\"argv\": [\"/bin/echo\"], \"env\": {\"\": \"c\"}}",
     "command payload: 'env.' is not a valid variable name (letters, digits and '_', not "
     "starting with a digit)"},
    {"command", "{\"argv\": [\"/bin/echo\"], \"env\": {\"BASH_FUNC_ls%%\": \"() { id; }\"}}",
     "command payload: 'env.BASH_FUNC_ls%%' is not a valid variable name (letters, digits and "
     "'_', not starting with a digit)"},
    {"command", "{\"argv\": [\"/bin/echo\"], \"env\": {\"1X\": \"c\"}}",
     "command payload: 'env.1X' is not a valid variable name (letters, digits and '_', not "
     "starting with a digit)"},
    {"command", "{\"argv\": [\"/bin/echo\"], \"env\": {\"LD_PRELOAD\": \"/tmp/x.so\"}}",
     "command payload: 'env.LD_PRELOAD' is not allowed: the dynamic loader reads it, so it could "
     "load a library of the task's choosing into the allowed program"},
    {"command", "{\"argv\": [\"/bin/echo\"], \"env\": {\"Ld_Library_Path\": \"/tmp\"}}",
     "command payload: 'env.Ld_Library_Path' is not allowed: the dynamic loader reads it, so it "
     "could load a library of the task's choosing into the allowed program"},
    {"command", "{\"argv\": [\"/bin/echo\"], \"env\": {\"PATH\": \"/tmp\"}}",
     "command payload: 'env.PATH' is not allowed: it decides which program a command runs by "
     "name; the operator sets PATH (commands.path)"},
    {"command", "{\"argv\": [\"/bin/echo\"], \"env\": {\"GCONV_PATH\": \"/tmp\"}}",
     "command payload: 'env.GCONV_PATH' is not allowed: the C library loads or reads the files it "
     "names, which could be files of the task's choosing"},
    {"command", "{\"argv\": [\"/bin/echo\"], \"env\": {\"BASH_ENV\": \"/tmp/rc\"}}",
     "command payload: 'env.BASH_ENV' is not allowed: shells read it and could run code of the "
     "task's choosing"},
    {"command", "{\"argv\": [\"/bin/echo\"], \"env\": {\"PYTHONPATH\": \"/tmp\"}}",
     "command payload: 'env.PYTHONPATH' is not allowed: an interpreter loads code or options from "
     "it, which could be code of the task's choosing"},
    {"command", "{\"argv\": [\"/bin/echo\"], \"env\": {\"GIT_SSH_COMMAND\": \"id\"}}",
     "command payload: 'env.GIT_SSH_COMMAND' is not allowed: programs run the command it names, "
     "which could be a program of the task's choosing"},
    {"command", "{\"argv\": [\"/bin/echo\"], \"env\": {\"K\": 1}}",
     "command payload: 'env.K' must be a string"},
    {"command", "{\"argv\": [\"/bin/echo\"], \"cwd\": \"tmp\"}",
     "command payload: 'cwd' must be an absolute path"},
    {"command", "{\"argv\": [\"/bin/echo\"], \"stdin\": 5}",
     "command payload: 'stdin' must be a string"},
    {"command", "{\"argv\": [\"/bin/echo\"], \"shell\": true}",
     "command payload: unknown field 'shell' (known: argv, env, cwd, stdin)"},
};

}  // namespace

TEST(HandlersPayload, EachBadPayloadIsRefusedWithAMessageNamingTheField) {
  const sched::command_policy policy = test_policy();
  for (const auto& c : bad_payloads) {
    EXPECT_EQ(validation_error(c.type, c.payload, &policy), c.message)
        << "type " << c.type << ", payload " << c.payload;
  }
}

TEST(HandlersPayload, GoodPayloadsAreAccepted) {
  const sched::command_policy policy = test_policy();
  EXPECT_NO_THROW(
      sched::validate_payload("sql",
                              R"({"pool": "platform", "sql": "UPDATE t SET a = $2 WHERE id = $1",
          "params": [1, "x", null, true, 2.5, 18446744073709551615, [1, 2], {"k": "v"}]})",
                              &policy));
  EXPECT_NO_THROW(sched::validate_payload("sql", R"({"pool": "p", "sql": "SELECT 1"})", nullptr));
  EXPECT_NO_THROW(sched::validate_payload(
      "http",
      R"({"method": "post", "url": "HTTPS://127.0.0.1:9000/hook?x=1", "headers": {"X-A": "b",
          "X-Empty": ""}, "body": "{}", "expect_status": [200, 204], "timeout_ms": 5000,
          "follow_redirects": true})",
      &policy));
  EXPECT_NO_THROW(sched::validate_payload(
      "command", R"({"argv": ["/bin/echo", "hi"], "env": {"K": "V"}, "cwd": "/tmp", "stdin": "x"})",
      &policy));
  // Optional fields may be given as null.
  EXPECT_NO_THROW(sched::validate_payload(
      "command", R"({"argv": ["/bin/echo"], "env": null, "cwd": null, "stdin": null})", &policy));
  EXPECT_NO_THROW(sched::validate_payload("noop", R"({"anything": [1, 2, 3]})", nullptr));
  EXPECT_NO_THROW(sched::validate_payload("my.custom", R"({"whatever": true})", nullptr));
}

TEST(HandlersPayload, VariablesThatInjectCodeAreNeverAllowed) {
  for (const char* name : {"LD_PRELOAD",
                           "LD_LIBRARY_PATH",
                           "LD_AUDIT",
                           "ld_preload",
                           "PATH",
                           "Path",
                           "GLIBC_TUNABLES",
                           "GCONV_PATH",
                           "LOCPATH",
                           "NLSPATH",
                           "HOSTALIASES",
                           "RESOLV_HOST_CONF",
                           "MALLOC_CHECK_",
                           "MALLOC_TRACE",
                           "BASH_ENV",
                           "ENV",
                           "IFS",
                           "SHELLOPTS",
                           "PS4",
                           "PYTHONPATH",
                           "PYTHONSTARTUP",
                           "PYTHONWARNINGS",
                           "PERL5LIB",
                           "PERL5OPT",
                           "RUBYOPT",
                           "NODE_OPTIONS",
                           "JAVA_TOOL_OPTIONS",
                           "LUA_INIT",
                           "PSQLRC",
                           "GIT_CONFIG_COUNT",
                           "PAGER",
                           "OPENSSL_CONF",
                           "SSLKEYLOGFILE"}) {
    EXPECT_TRUE(sched::never_allowed_env(name).has_value()) << name;
  }
  for (const char* name : {"HOME", "LANG", "LC_ALL", "TZ", "LOG_DIR", "NODE_ENV", "ENVIRONMENT",
                           "PATHS", "MY_PATH", "LDAP_URI", "XLD_PRELOAD"}) {
    EXPECT_FALSE(sched::never_allowed_env(name).has_value()) << name;
  }
}

TEST(HandlersPayload, AnAllowedEnvListAdmitsOnlyItsNamesAndNeverALoaderVariable) {
  sched::command_policy policy = test_policy();
  policy.allowed_env = {"LOG_DIR", "LD_PRELOAD"};  // the second can never take effect
  EXPECT_NO_THROW(sched::validate_payload(
      "command", R"({"argv": ["/bin/echo"], "env": {"LOG_DIR": "/var/log"}})", &policy));
  EXPECT_EQ(
      validation_error("command", R"({"argv": ["/bin/echo"], "env": {"HOME": "/"}})", &policy),
      "command payload: 'env.HOME' is not allowed: not one of the variables the operator "
      "allows (allowed_env: LOG_DIR, LD_PRELOAD)");
  EXPECT_EQ(
      validation_error("command", R"({"argv": ["/bin/echo"], "env": {"LD_PRELOAD": "/tmp/x.so"}})",
                       &policy),
      "command payload: 'env.LD_PRELOAD' is not allowed: the dynamic loader reads it, so it "
      "could load a library of the task's choosing into the allowed program");
}

TEST(HandlersPayload, WithoutAPolicyNoCommandIsAllowed) {
  EXPECT_EQ(validation_error("command", R"({"argv": ["/bin/echo"]})", nullptr),
            "command payload: command not allowed: /bin/echo (argv[0] must be one of the "
            "allow-listed paths)");
}

TEST(HandlersPayload, ParseErrorsDoNotQuoteThePayload) {
  // nlohmann's own message quotes the text it read, which may hold a token.
  const std::string message = validation_error(
      "http", R"({"url": "http://h/", "headers": {"Authorization": "Bearer s3cret" )", nullptr);
  EXPECT_EQ(message.find("s3cret"), std::string::npos) << message;
  EXPECT_EQ(message.rfind("http payload: not valid JSON", 0), 0U) << message;
}

TEST(HandlersPayload, HandlersRefuseWhatValidationRefuses) {
  sched::task t;
  t.id = 1;
  sched::cancel_token token;
  token.set_deadline(std::chrono::steady_clock::now() + 10s);
  const auto run = [&](const sched::handler& h, std::string payload) {
    t.payload = std::move(payload);
    sched::task_context ctx(t, std::chrono::system_clock::now(), token, nullptr,
                            [](sluice::pg::connection&) { return false; });
    return h(ctx);
  };
  auto r = run(sched::make_sql_handler(), R"({"pool": "p"})");
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "sql payload: 'sql' is required");
  r = run(sched::make_http_handler(), R"({"url": "gopher://h/"})");
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "http payload: 'url' must start with http:// or https://");
  r = run(sched::make_command_handler(test_policy()), R"({"argv": ["/bin/sh", "-c", "true"]})");
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error,
            "command payload: command not allowed: /bin/sh (argv[0] must be one of the "
            "allow-listed paths)");
  r = run(sched::make_noop_handler(), "{}");
  EXPECT_TRUE(r.ok);
}
