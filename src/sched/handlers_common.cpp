#include "sched/handlers_common.hpp"

#include <algorithm>
#include <cctype>
#include <cstddef>
#include <initializer_list>
#include <string>
#include <utility>

#include "sluice/pg/error.hpp"

namespace sluice::sched {
namespace detail {
namespace {

using nlohmann::json;

// The longest timeout_ms a payload may ask for: a day. Longer is a typo, not a webhook.
constexpr std::int64_t max_timeout_ms = 24LL * 60 * 60 * 1000;

std::string join(std::initializer_list<std::string_view> names) {
  std::string out;
  for (const auto name : names) {
    if (!out.empty()) out += ", ";
    out += name;
  }
  return out;
}

bool has_nul(std::string_view s) {
  return s.find('\0') != std::string_view::npos;
}

// Reads one payload object: parses it, refuses fields it does not know, and offers typed
// getters whose errors name the field. Every error starts with "<type> payload: ".
class payload_reader {
 public:
  payload_reader(std::string_view type, std::string_view text,
                 std::initializer_list<std::string_view> known)
      : type_(type) {
    try {
      doc_ = json::parse(text);
    } catch (const json::parse_error& e) {
      // Not e.what(): it quotes the payload, which may hold a secret.
      fail("not valid JSON (error at byte " + std::to_string(e.byte) + ")");
    }
    if (!doc_.is_object()) fail("must be a JSON object");
    for (const auto& [key, value] : doc_.items()) {
      if (std::find(known.begin(), known.end(), key) == known.end())
        fail("unknown field '" + key + "' (known: " + join(known) + ")");
    }
  }

  [[noreturn]] void fail(const std::string& message) const {
    throw schedule_error(std::string(type_) + " payload: " + message);
  }
  [[noreturn]] void fail(std::string_view field, const std::string& message) const {
    fail("'" + std::string(field) + "' " + message);
  }

  // The field, or nullptr when it is absent or null.
  [[nodiscard]] const json* find(std::string_view field) const {
    const auto it = doc_.find(field);
    if (it == doc_.end() || it->is_null()) return nullptr;
    return &*it;
  }

  [[nodiscard]] const json& required(std::string_view field) const {
    const json* v = find(field);
    if (v == nullptr) fail(field, "is required");
    return *v;
  }

  [[nodiscard]] std::string string_field(std::string_view field, const json& v) const {
    if (!v.is_string()) fail(field, "must be a string");
    auto s = v.get<std::string>();
    if (has_nul(s)) fail(field, "must not contain a NUL character");
    return s;
  }

  [[nodiscard]] std::string required_string(std::string_view field) const {
    auto s = string_field(field, required(field));
    if (s.empty()) fail(field, "must not be empty");
    return s;
  }

  [[nodiscard]] std::optional<std::string> optional_string(std::string_view field) const {
    const json* v = find(field);
    if (v == nullptr) return std::nullopt;
    return string_field(field, *v);
  }

  [[nodiscard]] std::optional<std::int64_t> optional_integer(std::string_view field,
                                                             std::int64_t min,
                                                             std::int64_t max) const {
    const json* v = find(field);
    if (v == nullptr) return std::nullopt;
    const std::string range = std::to_string(min) + ".." + std::to_string(max);
    if (!v->is_number_integer()) fail(field, "must be an integer in " + range);
    if (v->is_number_unsigned() && v->get<std::uint64_t>() > static_cast<std::uint64_t>(max))
      fail(field, "must be an integer in " + range);
    const auto n = v->get<std::int64_t>();
    if (n < min || n > max) fail(field, "must be an integer in " + range);
    return n;
  }

  [[nodiscard]] std::optional<bool> optional_bool(std::string_view field) const {
    const json* v = find(field);
    if (v == nullptr) return std::nullopt;
    if (!v->is_boolean()) fail(field, "must be true or false");
    return v->get<bool>();
  }

  // An object whose values are all strings, in document order.
  [[nodiscard]] std::vector<std::pair<std::string, std::string>> string_map(
      std::string_view field) const {
    std::vector<std::pair<std::string, std::string>> out;
    const json* v = find(field);
    if (v == nullptr) return out;
    if (!v->is_object()) fail(field, "must be an object of strings");
    for (const auto& [key, value] : v->items()) {
      const std::string name = std::string(field) + "." + key;
      out.emplace_back(key, string_field(name, value));
    }
    return out;
  }

 private:
  std::string_view type_;
  json doc_;
};

// RFC 9110 token characters: what a header field name may consist of.
bool is_token(std::string_view s) {
  if (s.empty()) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u) != 0) return true;
    return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
  });
}

bool is_signing_key_name(std::string_view name) {
  return !name.empty() && name.size() <= 64 && std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_' || c == '-' || c == '.';
  });
}

bool starts_with_icase(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(s[i])) != prefix[i]) return false;
  }
  return true;
}

// Environment variables no task may set (docs/handlers.md, "Environment"). Each lets a task
// run code of its choosing inside an allow-listed program, or point one at files of its
// choosing, which would make the allow-list meaningless.
struct env_rule {
  std::string_view name;
  bool prefix;  // matches every name that starts with `name`
  std::string_view why;
};

constexpr std::string_view why_loader =
    "the dynamic loader reads it, so it could load a library of the task's choosing into the "
    "allowed program";
constexpr std::string_view why_path =
    "it decides which program a command runs by name; the operator sets PATH (commands.path)";
constexpr std::string_view why_libc =
    "the C library loads or reads the files it names, which could be files of the task's "
    "choosing";
constexpr std::string_view why_shell = "shells read it and could run code of the task's choosing";
constexpr std::string_view why_interpreter =
    "an interpreter loads code or options from it, which could be code of the task's choosing";
constexpr std::string_view why_program =
    "programs run the command it names, which could be a program of the task's choosing";
constexpr std::string_view why_files =
    "libraries load configuration, modules or terminal descriptions from the files it names, "
    "or write secrets to it";

constexpr env_rule never_allowed[] = {
    {"LD_", true, why_loader},
    {"PATH", false, why_path},
    {"GLIBC_TUNABLES", false, why_libc},
    {"GCONV_PATH", false, why_libc},
    {"GETCONF_DIR", false, why_libc},
    {"HOSTALIASES", false, why_libc},
    {"LOCALDOMAIN", false, why_libc},
    {"LOCPATH", false, why_libc},
    {"MALLOC_", true, why_libc},
    {"NLSPATH", false, why_libc},
    {"RESOLV_HOST_CONF", false, why_libc},
    {"RES_OPTIONS", false, why_libc},
    {"TZDIR", false, why_libc},
    {"BASH_", true, why_shell},
    {"BASHOPTS", false, why_shell},
    {"CDPATH", false, why_shell},
    {"ENV", false, why_shell},
    {"IFS", false, why_shell},
    {"PROMPT_COMMAND", false, why_shell},
    {"PS4", false, why_shell},
    {"SHELLOPTS", false, why_shell},
    {"ZDOTDIR", false, why_shell},
    {"CLASSPATH", false, why_interpreter},
    {"GEM_HOME", false, why_interpreter},
    {"GEM_PATH", false, why_interpreter},
    {"JAVA_TOOL_OPTIONS", false, why_interpreter},
    {"JDK_JAVA_OPTIONS", false, why_interpreter},
    {"_JAVA_OPTIONS", false, why_interpreter},
    {"LUA_", true, why_interpreter},
    {"NODE_OPTIONS", false, why_interpreter},
    {"NODE_PATH", false, why_interpreter},
    {"PERL", true, why_interpreter},
    {"PHPRC", false, why_interpreter},
    {"PHP_INI_SCAN_DIR", false, why_interpreter},
    {"PSQLRC", false, why_interpreter},
    {"PYTHON", true, why_interpreter},
    {"RUBY", true, why_interpreter},
    {"TCLLIBPATH", false, why_interpreter},
    {"BROWSER", false, why_program},
    {"EDITOR", false, why_program},
    {"GIT_", true, why_program},
    {"MANPAGER", false, why_program},
    {"PAGER", false, why_program},
    {"SSH_ASKPASS", false, why_program},
    {"SUDO_ASKPASS", false, why_program},
    {"VISUAL", false, why_program},
    {"OPENSSL_CONF", false, why_files},
    {"OPENSSL_ENGINES", false, why_files},
    {"OPENSSL_MODULES", false, why_files},
    {"SSLKEYLOGFILE", false, why_files},
    {"TERMCAP", false, why_files},
    {"TERMINFO", false, why_files},
    {"TERMINFO_DIRS", false, why_files},
};

// A portable environment variable name: letters, digits and '_', not starting with a digit.
// Anything else (BASH_FUNC_x%%, names with '=' or NUL) is refused outright.
bool is_env_name(std::string_view s) {
  if (s.empty() || std::isdigit(static_cast<unsigned char>(s.front())) != 0) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_';
  });
}

// Both sides folded to lower case (starts_with_icase expects a lower-case prefix).
bool starts_with_icase_ascii(std::string_view s, std::string_view prefix) noexcept {
  if (s.size() < prefix.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(s[i])) !=
        std::tolower(static_cast<unsigned char>(prefix[i])))
      return false;
  }
  return true;
}

pg::param to_param(const json& v) {
  switch (v.type()) {
    case json::value_t::null:
      return {};
    case json::value_t::boolean:
      return v.get<bool>();
    case json::value_t::number_integer:
      return static_cast<long long>(v.get<std::int64_t>());
    case json::value_t::number_unsigned:
      // Above INT64_MAX the pg layer sends numeric; below, int8.
      return static_cast<unsigned long long>(v.get<std::uint64_t>());
    case json::value_t::number_float:
      return v.get<double>();
    case json::value_t::string:
      return v.get<std::string>();
    default:
      // Arrays and objects: JSON text; the server reads it as the json/jsonb (or text) the
      // statement expects.
      return pg::json_text{v.dump()};
  }
}

}  // namespace

sql_payload parse_sql_payload(std::string_view text) {
  const payload_reader r("sql", text, {"pool", "sql", "params", "transactional"});
  sql_payload p;
  p.pool = r.required_string("pool");
  p.sql = r.required_string("sql");
  p.transactional = r.optional_bool("transactional").value_or(false);
  if (const json* params = r.find("params")) {
    if (!params->is_array()) r.fail("params", "must be an array");
    p.params.reserve(params->size());
    for (std::size_t i = 0; i < params->size(); ++i) {
      try {
        p.params.push_back(to_param((*params)[i]));
      } catch (const pg::conversion_error& e) {
        r.fail("params[" + std::to_string(i) + "]", std::string("cannot be sent: ") + e.what());
      }
    }
  }
  return p;
}

http_payload parse_http_payload(std::string_view text) {
  const payload_reader r("http", text,
                         {"method", "url", "headers", "body", "expect_status", "timeout_ms",
                          "follow_redirects", "signing_key"});
  http_payload p;
  if (auto method = r.optional_string("method")) {
    std::transform(method->begin(), method->end(), method->begin(), [](char c) {
      return static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    });
    static constexpr std::string_view methods[] = {"GET",   "HEAD",   "POST",   "PUT",
                                                   "PATCH", "DELETE", "OPTIONS"};
    if (std::find(std::begin(methods), std::end(methods), *method) == std::end(methods))
      r.fail("method", "must be one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS");
    p.method = std::move(*method);
  }

  p.url = r.required_string("url");
  const bool http = starts_with_icase(p.url, "http://");
  const bool https = starts_with_icase(p.url, "https://");
  if (!http && !https) r.fail("url", "must start with http:// or https://");
  if (p.url.size() == (http ? 7U : 8U) ||
      std::string_view("/?#").find(p.url[http ? 7 : 8]) != std::string_view::npos)
    r.fail("url", "has no host");
  if (std::any_of(p.url.begin(), p.url.end(),
                  [](char c) { return static_cast<unsigned char>(c) <= 0x20 || c == 0x7f; }))
    r.fail("url", "must not contain spaces or control characters");

  p.headers = r.string_map("headers");
  for (const auto& [name, value] : p.headers) {
    if (!is_token(name)) r.fail("headers." + name, "is not a valid header name");
    if (value.find_first_of("\r\n") != std::string::npos)
      r.fail("headers." + name, "must not contain CR or LF");
    if ((name.size() == 16 && starts_with_icase(name, "sluice-signature")) ||
        (name.size() == 16 && starts_with_icase(name, "sluice-timestamp")))
      r.fail("headers." + name,
             "is set by sluice when it signs requests ([http_tasks] signing_secret)");
  }

  if (const json* body = r.find("body")) {
    if (!body->is_string()) r.fail("body", "must be a string (serialise JSON bodies yourself)");
    p.body = body->get<std::string>();
    if (p.method == "HEAD") r.fail("body", "is not allowed with method HEAD");
  }

  if (const json* expect = r.find("expect_status")) {
    if (!expect->is_array() || expect->empty())
      r.fail("expect_status", "must be a non-empty array of status codes");
    for (const auto& code : *expect) {
      if (!code.is_number_integer() || code.get<std::int64_t>() < 100 ||
          code.get<std::int64_t>() > 599)
        r.fail("expect_status", "must hold status codes between 100 and 599");
      p.expect_status.push_back(static_cast<int>(code.get<std::int64_t>()));
    }
  }

  if (const auto ms = r.optional_integer("timeout_ms", 1, max_timeout_ms))
    p.timeout = std::chrono::milliseconds(*ms);
  p.follow_redirects = r.optional_bool("follow_redirects").value_or(false);
  if (auto key = r.optional_string("signing_key")) {
    // A name, not a secret: short, and never echoed in a message.
    if (!is_signing_key_name(*key))
      r.fail("signing_key",
             "must be the name of a key of [http_tasks.signing_keys] (1 to 64 of A-Z a-z 0-9 _ "
             "- .), never the secret itself");
    p.signing_key = std::move(*key);
  }
  return p;
}

command_payload parse_command_payload(std::string_view text, const command_policy& policy) {
  const payload_reader r("command", text, {"argv", "env", "cwd", "stdin"});
  command_payload p;
  const json& argv = r.required("argv");
  if (!argv.is_array() || argv.empty()) r.fail("argv", "must be a non-empty array of strings");
  for (std::size_t i = 0; i < argv.size(); ++i)
    p.argv.push_back(r.string_field("argv[" + std::to_string(i) + "]", argv[i]));
  if (p.argv[0].empty() || p.argv[0].front() != '/')
    r.fail("argv[0]", "must be an absolute path (no PATH search is done)");
  if (std::find(policy.allow.begin(), policy.allow.end(), p.argv[0]) == policy.allow.end())
    r.fail("command not allowed: " + p.argv[0] +
           " (argv[0] must be one of the allow-listed paths)");

  p.env = r.string_map("env");
  for (const auto& [name, value] : p.env) {
    if (const auto problem = command_env_problem(name, policy)) r.fail("env." + name, *problem);
  }

  if (auto cwd = r.optional_string("cwd")) {
    if (cwd->empty() || cwd->front() != '/') r.fail("cwd", "must be an absolute path");
    p.cwd = std::move(cwd);
  }

  if (const json* in = r.find("stdin")) {
    if (!in->is_string()) r.fail("stdin", "must be a string");
    p.stdin_data = in->get<std::string>();
  }
  return p;
}

std::optional<std::chrono::steady_clock::time_point> deadline_of(
    const cancel_token& token) noexcept {
  const auto d = token.deadline();
  if (d == std::chrono::steady_clock::time_point{}) return std::nullopt;
  return d;
}

std::string dump_detail(const nlohmann::json& detail) {
  return detail.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string redact_url(std::string_view url) {
  const auto scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) return "<url>";
  const std::string_view scheme = url.substr(0, scheme_end);
  std::string_view rest = url.substr(scheme_end + 3);
  const auto authority_end = rest.find_first_of("/?#");
  std::string_view authority = rest.substr(0, authority_end);
  if (const auto at = authority.rfind('@'); at != std::string_view::npos)
    authority.remove_prefix(at + 1);
  std::string_view path;
  if (authority_end != std::string_view::npos && rest[authority_end] == '/') {
    path = rest.substr(authority_end);
    path = path.substr(0, path.find_first_of("?#"));
  }
  return std::string(scheme) + "://" + std::string(authority) + std::string(path);
}

}  // namespace detail

std::optional<std::string_view> never_allowed_env(std::string_view name) noexcept {
  for (const auto& rule : detail::never_allowed) {
    const bool match = rule.prefix ? detail::starts_with_icase_ascii(name, rule.name)
                                   : name.size() == rule.name.size() &&
                                         detail::starts_with_icase_ascii(name, rule.name);
    if (match) return rule.why;
  }
  return std::nullopt;
}

std::optional<std::string> command_env_problem(std::string_view name,
                                               const command_policy& policy) {
  if (!detail::is_env_name(name))
    return "is not a valid variable name (letters, digits and '_', not starting with a digit)";
  if (const auto why = never_allowed_env(name)) return "is not allowed: " + std::string(*why);
  const auto& allowed = policy.allowed_env;
  if (!allowed.empty() && std::find(allowed.begin(), allowed.end(), name) == allowed.end()) {
    std::string names;
    for (const auto& a : allowed)
      names += (names.empty() ? "" : ", ") + a;
    return "is not allowed: not one of the variables the operator allows (allowed_env: " + names +
           ")";
  }
  return std::nullopt;
}

handler make_noop_handler() {
  return [](task_context&) { return handler_result::success(); };
}

void validate_payload(std::string_view type, std::string_view payload_json,
                      const command_policy* policy) {
  if (type == "sql") {
    static_cast<void>(detail::parse_sql_payload(payload_json));
  } else if (type == "http") {
    static_cast<void>(detail::parse_http_payload(payload_json));
  } else if (type == "command") {
    const command_policy none;
    const command_policy& p = policy != nullptr ? *policy : none;
    static_cast<void>(detail::parse_command_payload(payload_json, p));
  } else {
    // noop and handlers registered in C++: their payload is theirs to read; only the shape
    // every task shares is checked.
    nlohmann::json doc;
    try {
      doc = nlohmann::json::parse(payload_json);
    } catch (const nlohmann::json::parse_error& e) {
      throw schedule_error(std::string(type) + " payload: not valid JSON (error at byte " +
                           std::to_string(e.byte) + ")");
    }
    if (!doc.is_object())
      throw schedule_error(std::string(type) + " payload: must be a JSON object");
  }
}

}  // namespace sluice::sched
