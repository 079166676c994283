#include "cli/config_keys.hpp"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <type_traits>

#include <unistd.h>

#include "sluice/sched/handlers.hpp"

namespace sluice::cli::config_detail {

namespace {

// ---- how each type of value is read, shown and described ----------------------------------

// A field of S, reachable for reading and writing: a member pointer, or a lambda taking
// `auto&` for fields nested deeper.
template <class S, class M>
auto field(M S::*m) {
  return [m](auto& s) -> auto& {
    return s.*m;
  };
}

template <class F, class S>
using field_type = std::remove_cvref_t<decltype(std::declval<F>()(std::declval<S&>()))>;

template <class T>
struct is_optional : std::false_type {};
template <class T>
struct is_optional<std::optional<T>> : std::true_type {};

// "1KiB", "64MiB", "1000 bytes": sizes in the largest binary unit that divides them.
std::string format_size(std::size_t n) {
  static constexpr std::pair<std::size_t, std::string_view> units[] = {
      {std::size_t{1024} * 1024 * 1024, "GiB"}, {std::size_t{1024} * 1024, "MiB"}, {1024, "KiB"}};
  for (const auto& [size, name] : units) {
    if (n >= size && n % size == 0) return std::to_string(n / size) + std::string(name);
  }
  return std::to_string(n);
}

std::string range_text(const std::string& min, const std::string& max) {
  return min + "–" + max;
}

template <class S>
key<S> make_key(std::string_view name, std::string type, std::string range) {
  key<S> k;
  k.name = name;
  k.type = std::move(type);
  k.range = std::move(range);
  return k;
}

// A whole number (int, std::size_t, or optional<int>).
template <class S, class F>
key<S> whole(std::string_view name, F f, long long min, long long max) {
  using M = field_type<F, S>;
  auto k = make_key<S>(name, "whole number", range_text(std::to_string(min), std::to_string(max)));
  k.read = [name, f, min, max](section& t, S& s) {
    if (auto v = t.integer(name, min, max)) {
      if constexpr (is_optional<M>::value) {
        f(s) = static_cast<typename M::value_type>(*v);
      } else {
        f(s) = static_cast<M>(*v);
      }
    }
  };
  k.show = [f](const S& s) -> json {
    if constexpr (is_optional<M>::value) {
      return f(s) ? json(*f(s)) : json(nullptr);
    } else {
      return json(f(s));
    }
  };
  return k;
}
template <class S, class M>
key<S> whole(std::string_view name, M S::*m, long long min, long long max) {
  return whole<S>(name, field(m), min, max);
}

template <class S>
key<S> number(std::string_view name, double S::*m, double min, double max) {
  std::ostringstream lo;
  std::ostringstream hi;
  lo << min;
  hi << max;
  auto k = make_key<S>(name, "number", range_text(lo.str(), hi.str()));
  k.read = [name, m, min, max](section& t, S& s) {
    if (auto v = t.number(name, min, max)) s.*m = *v;
  };
  k.show = [m](const S& s) { return json(s.*m); };
  return k;
}

template <class S>
key<S> flag(std::string_view name, bool S::*m) {
  auto k = make_key<S>(name, "boolean", "");
  k.read = [name, m](section& t, S& s) {
    if (auto v = t.boolean(name)) s.*m = *v;
  };
  k.show = [m](const S& s) { return json(s.*m); };
  return k;
}

// A string; `problem` says why a value is unusable (nullopt: it is fine).
using string_check = std::function<std::optional<std::string>(const std::string&)>;

template <class S>
key<S> text(std::string_view name, std::string S::*m, std::string range = "",
            string_check problem = {}) {
  auto k = make_key<S>(name, "string", std::move(range));
  k.read = [name, m, problem](section& t, S& s) {
    if (auto v = t.string(name)) {
      if (problem) {
        if (auto why = problem(*v)) t.fail(name, *why);
      }
      s.*m = *v;
    }
  };
  k.show = [m](const S& s) { return json(s.*m); };
  return k;
}

// A conninfo string or URI: checked with libpq's parser, shown without its passwords.
template <class S>
key<S> conninfo(std::string_view name, std::string S::*m) {
  auto k = make_key<S>(name, "conninfo string or URI", "");
  k.secret = true;
  k.read = [name, m](section& t, S& s) {
    if (auto v = t.string(name)) {
      if (auto problem = conninfo_problem(*v)) t.fail(name, *problem);
      s.*m = *v;
    }
  };
  k.show = [m](const S& s) { return json(pg::redact_conninfo(s.*m)); };
  return k;
}

// One of a few names, each standing for a value of the field.
template <class S, class M>
key<S> choice(std::string_view name, M S::*m, std::vector<std::pair<std::string, M>> options) {
  std::vector<std::string> names;
  std::string type;
  for (const auto& [n, v] : options) {
    names.push_back(n);
    type += (type.empty() ? "" : ", ") + ("`\"" + n + "\"`");
  }
  auto k = make_key<S>(name, type, "");
  k.read = [name, m, names, options](section& t, S& s) {
    if (auto v = t.choice(name, names)) {
      for (const auto& [n, value] : options) {
        if (n == *v) s.*m = value;
      }
    }
  };
  k.show = [m, options](const S& s) {
    for (const auto& [n, value] : options) {
      if (value == s.*m) return json(n);
    }
    return json(nullptr);
  };
  return k;
}

// A duration (milliseconds or optional<milliseconds>): a bare integer is seconds.
template <class S, class F>
key<S> duration(std::string_view name, F f, milliseconds min, milliseconds max = max_duration) {
  using M = field_type<F, S>;
  auto k = make_key<S>(name, "duration", range_text(format_duration(min), format_duration(max)));
  if (min == 0ms) k.range = "0–" + format_duration(max);
  k.read = [name, f, min, max](section& t, S& s) {
    if (auto v = t.duration(name, min, max)) f(s) = *v;
  };
  k.show = [f](const S& s) -> json {
    if constexpr (is_optional<M>::value) {
      return f(s) ? json(format_duration(*f(s))) : json(nullptr);
    } else {
      return json(format_duration(f(s)));
    }
  };
  return k;
}
template <class S, class M>
key<S> duration(std::string_view name, M S::*m, milliseconds min, milliseconds max = max_duration) {
  return duration<S>(name, field(m), min, max);
}

// A duration of whole hours (0: keep forever).
template <class S>
key<S> hours(std::string_view name, std::chrono::hours S::*m, std::chrono::hours max) {
  auto k = make_key<S>(name, "duration, whole hours", "0–" + format_duration(max));
  k.read = [name, m, max](section& t, S& s) {
    if (auto v = t.hours(name, max)) s.*m = *v;
  };
  k.show = [m](const S& s) { return json(format_duration(s.*m)); };
  return k;
}

// A size in bytes: a whole number, or a string with a binary unit.
template <class S>
key<S> bytes(std::string_view name, std::size_t S::*m, std::size_t min, std::size_t max) {
  auto k = make_key<S>(name, "size", range_text(format_size(min), format_size(max)));
  k.read = [name, m, min, max](section& t, S& s) {
    if (auto v = t.bytes(name, min, max)) s.*m = *v;
  };
  k.show = [m](const S& s) { return json(s.*m); };
  return k;
}

// An array of strings, each checked by `problem` (whose reason names the item itself), kept in
// file order; `dedupe` drops repeated items. `empty_problem`: why an empty array is refused.
template <class S>
key<S> string_list(std::string_view name, std::vector<std::string> S::*m, std::string type,
                   std::string what, string_check problem, bool dedupe,
                   std::string empty_problem = "") {
  auto k = make_key<S>(name, std::move(type), "");
  k.read = [name, m, what, problem, dedupe, empty_problem](section& t, S& s) {
    const toml::node* n = t.node(name);
    if (n == nullptr) return;
    const auto* list = n->as_array();
    if (list == nullptr) {
      t.fail(name, "expected an array of " + what + ", got " + std::string(type_name(*n)));
    }
    auto& out = s.*m;
    for (std::size_t i = 0; i < list->size(); ++i) {
      const toml::node& item = *list->get(i);
      const std::string item_key = t.key_path(name) + "[" + std::to_string(i) + "]";
      const auto* value = item.as_string();
      if (value == nullptr) {
        t.ctx().fail(item_key, "expected a string, got " + std::string(type_name(item)),
                     where(item.source()));
      }
      const std::string& v = value->get();
      if (auto why = problem(v)) t.ctx().fail(item_key, *why, where(item.source()));
      if (!dedupe || std::find(out.begin(), out.end(), v) == out.end()) out.push_back(v);
    }
    if (list->empty() && !empty_problem.empty()) t.fail(name, empty_problem);
  };
  k.show = [m](const S& s) { return json(s.*m); };
  return k;
}

// A key whose reading is its own (several keys at once, a table of names, the environment).
template <class S>
key<S> custom(std::string_view name, std::string type, std::string range,
              std::function<void(section&, S&)> read, std::function<json(const S&)> show) {
  auto k = make_key<S>(name, std::move(type), std::move(range));
  k.read = std::move(read);
  k.show = std::move(show);
  return k;
}

// ---- checks shared by several keys ----------------------------------------------------------

string_check printable(std::size_t max) {
  return [max](const std::string& v) -> std::optional<std::string> {
    if (v.empty() || v.size() > max || !is_printable_ascii(v)) {
      return "must be 1 to " + std::to_string(max) + " printable ASCII characters";
    }
    return std::nullopt;
  };
}

bool valid_schema_name(std::string_view name) {
  if (name.empty() || name.size() > 63) return false;
  if (!((name[0] >= 'a' && name[0] <= 'z') || name[0] == '_')) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
  });
}

// Why a token is unusable (without repeating it), or nullopt.
std::optional<std::string> token_problem(const std::string& token) {
  if (has_space_or_control(token) || !is_printable_ascii(token)) {
    return "the token must be printable ASCII without spaces";
  }
  if (token.size() < min_token_length) {
    return "the token is " + std::to_string(token.size()) + " characters long; use at least " +
           std::to_string(min_token_length) + " (e.g. the output of `openssl rand -hex 24`)";
  }
  return std::nullopt;
}

std::string read_token_file(const section& t, const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    t.fail("token_file", "cannot read '" + file.string() + "': " + std::strerror(errno));
  }
  std::string token((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  while (!token.empty() && std::isspace(static_cast<unsigned char>(token.back())))
    token.pop_back();
  if (token.empty()) t.fail("token_file", "'" + file.string() + "' is empty");
  return token;
}

std::optional<std::string> executable_problem(const std::string& p) {
  const std::filesystem::path fp(p);
  if (!fp.is_absolute()) {
    return "'" + p + "' is not an absolute path; commands are never looked up in PATH";
  }
  std::error_code ec;
  const auto status = std::filesystem::status(fp, ec);
  if (ec || !std::filesystem::exists(status)) return "'" + p + "' does not exist";
  if (!std::filesystem::is_regular_file(status)) return "'" + p + "' is not a regular file";
  if (::access(p.c_str(), X_OK) != 0) return "'" + p + "' is not executable by this user";
  return std::nullopt;
}

constexpr auto year = std::chrono::hours(24 * 366);

// ---- the tables -----------------------------------------------------------------------------

std::vector<key<database_config>> database_table() {
  using D = database_config;
  std::vector<key<D>> k;
  auto url = conninfo<D>("url", &D::url);
  url.from_env = [](const loader& ctx, const std::string& v, D& d) {
    if (auto problem = conninfo_problem(v)) ctx.fail_env("DATABASE_URL", *problem);
    d.url = v;
  };
  k.push_back(std::move(url)
                  .environment("DATABASE_URL")
                  .describe("Where every pool without a url of its own connects; empty: libpq's "
                            "defaults and the `PG*` variables."));
  k.push_back(duration<D>("connect_timeout", &D::connect_timeout, 1ms, std::chrono::hours(1))
                  .describe("Longest time opening one connection may take; pools inherit it."));
  k.push_back(duration<D>("statement_timeout", &D::statement_timeout, 0ms, max_statement_timeout)
                  .describe("PostgreSQL's `statement_timeout` for every new connection; unset: the "
                            "server's. Pools inherit it."));
  k.push_back(text<D>("application_name_prefix", &D::application_name_prefix,
                      "1–40 printable ASCII", printable(40))
                  .describe("Pools connect as `<prefix>/<pool>` in `pg_stat_activity`."));
  k.push_back(whole<D>("connection_budget", &D::connection_budget, 1, max_server_connections)
                  .describe("The most server connections this process may hold; unset: no "
                            "limit but the server's."));
  return k;
}

std::vector<key<pool::settings>> pool_table() {
  using P = pool::settings;
  std::vector<key<P>> k;
  k.push_back(conninfo<P>("url", &P::conninfo)
                  .default_is("`database.url`")
                  .describe("This pool's server, when it differs from `database.url`."));
  auto size = whole<P>("size", &P::size, 1, 10000)
                  .environment("DB_POOL_SIZE")
                  .describe("Connections kept open once created.");
  size.env_also = {"min_idle"};
  k.push_back(std::move(size));
  auto overflow = whole<P>("max_overflow", &P::max_overflow, 0, 10000)
                      .environment("DB_MAX_OVERFLOW")
                      .describe("Extra connections allowed under load, closed when returned.");
  overflow.env_also = {"size"};
  k.push_back(std::move(overflow));
  k.push_back(duration<P>("timeout", &P::timeout, 0ms, std::chrono::hours(24))
                  .environment("DB_POOL_TIMEOUT")
                  .describe("How long a borrower waits for a connection before an error."));
  k.push_back(duration<P>("recycle", &P::recycle, 0ms)
                  .environment("DB_POOL_RECYCLE")
                  .describe("A connection older than this is closed instead of lent; 0: never."));
  k.push_back(number<P>("recycle_jitter", &P::recycle_jitter, 0.0, 0.5)
                  .describe("Each lifetime is shortened by a random fraction up to this."));
  k.push_back(duration<P>("idle_timeout", &P::idle_timeout, 0ms)
                  .describe("Idle connections above `min_idle` are closed after this; 0: never."));
  k.push_back(duration<P>("overflow_idle_grace", &P::overflow_idle_grace, 0ms)
                  .describe("An idle overflow connection is closed after this; 0: on return."));
  k.push_back(whole<P>("min_idle", &P::min_idle, 0, 10000)
                  .describe("Connections kept open even when idle (at most `size`)."));
  k.push_back(flag<P>("pre_ping", &P::pre_ping)
                  .describe("Check a connection idle longer than `pre_ping_window` before "
                            "lending it."));
  k.push_back(duration<P>("pre_ping_window", &P::pre_ping_window, 0ms)
                  .describe("Connections used more recently than this are lent without a ping."));
  k.push_back(choice<P>("reset_on_return", &P::reset_on_return,
                        {{"none", pool::reset_mode::none},
                         {"rollback", pool::reset_mode::rollback},
                         {"discard_all", pool::reset_mode::discard_all}})
                  .describe("What happens to a returned connection."));
  k.push_back(duration<P>("leak_threshold", &P::leak_threshold, 0ms)
                  .describe("Warn when one lease is held longer than this; 0: off."));
  k.push_back(
      flag<P>("lifo", &P::lifo).describe("Lend the most recently returned connection first."));
  k.push_back(duration<P>("connect_timeout", &P::connect_timeout, 1ms, std::chrono::hours(1))
                  .default_is("`database.connect_timeout`")
                  .describe("Limit on opening one connection."));
  k.push_back(duration<P>("statement_timeout", &P::statement_timeout, 0ms, max_statement_timeout)
                  .default_is("`database.statement_timeout`")
                  .describe("As in `[database]`, for this pool."));
  auto app_name =
      text<P>("application_name", &P::application_name, "1–63 printable ASCII", printable(63))
          .default_is("`<prefix>/<name>`")
          .describe("What `pg_stat_activity.application_name` shows.");
  app_name.show = [](const P& s) { return json(s.effective_application_name()); };
  k.push_back(std::move(app_name));
  k.push_back(whole<P>("statement_cache", &P::statement_cache, 0, 100000)
                  .describe("Prepared statements kept per connection; 0: off (PgBouncer)."));
  k.push_back(duration<P>("connect_backoff_initial", &P::connect_backoff_initial, 1ms,
                          std::chrono::minutes(10))
                  .describe("First wait after a refused or failed connect, doubling."));
  k.push_back(
      duration<P>("connect_backoff_max", &P::connect_backoff_max, 1ms, std::chrono::hours(1))
          .describe("Longest wait between connect attempts."));
  k.push_back(
      duration<P>("housekeeping_interval", &P::housekeeping_interval, 10ms, std::chrono::hours(1))
          .describe("How often the housekeeper closes, opens and checks connections."));
  return k;
}

std::vector<key<sched::scheduler_settings>> scheduler_table() {
  using T = sched::scheduler_settings;
  std::vector<key<T>> k;
  k.push_back(text<T>("schema", &T::schema, "`[a-z_][a-z0-9_]*`, ≤ 63",
                      [](const std::string& v) -> std::optional<std::string> {
                        if (valid_schema_name(v)) return std::nullopt;
                        return "'" + v +
                               "' is not a plain schema name: 1 to 63 characters of a-z, 0-9 "
                               "and '_', not starting with a digit";
                      })
                  .describe("Schema holding the scheduler's tables."));
  k.push_back(text<T>("node_id", &T::node_id, "1–100 printable ASCII, no spaces",
                      [](const std::string& v) -> std::optional<std::string> {
                        if (v.empty() || v.size() > 100 || has_space_or_control(v) ||
                            !is_printable_ascii(v)) {
                          return "must be 1 to 100 printable ASCII characters without spaces";
                        }
                        return std::nullopt;
                      })
                  .default_is("`<host>-<pid>-<random>`")
                  .describe("This process's name in the `nodes` table, on claims and in logs."));
  k.push_back(whole<T>("workers", &T::workers, 1, 1024)
                  .describe("Handler threads: the most tasks this node runs at once."));
  k.push_back(whole<T>("claim_batch", &T::claim_batch, 1, 100000)
                  .describe("Most tasks claimed per task type in one check cycle."));
  k.push_back(whole<T>("prefetch", &T::prefetch, 0, 100000)
                  .describe("Tasks claimed beyond the free workers, the least the node queues."));
  k.push_back(whole<T>("max_prefetch", &T::max_prefetch, 0, 100000)
                  .describe("Most tasks queued while a backlog lasts (at least `prefetch`)."));
  k.push_back(duration<T>("poll_interval", &T::poll_interval, 10ms, std::chrono::hours(1))
                  .describe("Longest sleep between check cycles while work may be due."));
  k.push_back(duration<T>("idle_poll_max", &T::idle_poll_max, 10ms, std::chrono::hours(1))
                  .describe("An idle node backs off its polling up to this (at least "
                            "`poll_interval`)."));
  k.push_back(
      duration<T>("heartbeat_interval", &T::heartbeat_interval, 100ms, std::chrono::hours(1))
          .describe("How often the node records that it is alive."));
  k.push_back(duration<T>("node_expiry", &T::node_expiry, 200ms, std::chrono::hours(24))
                  .describe("A node silent this long is dead and its tasks are rescued (at "
                            "least 1.5 times `heartbeat_interval`)."));
  k.push_back(duration<T>("stop_grace", &T::stop_grace, 0ms, std::chrono::hours(24))
                  .describe("On SIGTERM, how long running handlers may finish."));
  k.push_back(duration<T>("stuck_grace", &T::stuck_grace, 0ms, std::chrono::hours(24))
                  .describe("After a timeout, how long a handler may take to stop."));
  k.push_back(hours<T>("run_retention", &T::run_retention, std::chrono::hours(24 * 365))
                  .describe("Task run history older than this is deleted; 0: kept."));
  k.push_back(hours<T>("cycle_retention", &T::cycle_retention, std::chrono::hours(24 * 365))
                  .describe("Check-cycle log older than this is deleted; 0: kept."));
  k.push_back(hours<T>("task_retention", &T::task_retention, std::chrono::hours(24 * 365))
                  .describe("Finished one-shot tasks unchanged this long are deleted; 0: kept."));
  k.push_back(flag<T>("listen", &T::listen)
                  .describe("Hold one connection in LISTEN for task notifications."));
  k.push_back(conninfo<T>("listen_url", &T::listen_conninfo)
                  .default_is("the lane's url")
                  .describe("Where the LISTEN connection goes (PostgreSQL itself, not "
                            "PgBouncer)."));
  k.push_back(custom<T>(
                  "concurrency", "table: task type = whole number", "1–`workers` each",
                  [](section& sch, T& ss) {
                    section conc = sch.table("concurrency");
                    conc.accept_all();
                    for (const auto& [type, node] : conc.entries()) {
                      if (!valid_task_type(type)) conc.fail(type, task_type_rule);
                      const auto* n = node->as_integer();
                      if (n == nullptr) {
                        conc.fail(type, "expected a whole number of handlers, got " +
                                            std::string(type_name(*node)));
                      }
                      if (n->get() < 1 || n->get() > ss.workers) {
                        conc.fail(type,
                                  "must be between 1 and scheduler.workers (" +
                                      std::to_string(ss.workers) + "), got " +
                                      std::to_string(n->get()) +
                                      ": a type never runs more handlers than there are workers");
                      }
                      ss.concurrency[type] = static_cast<int>(n->get());
                    }
                    conc.finish();
                  },
                  [](const T& ss) { return json(ss.concurrency); })
                  .default_is("empty")
                  .describe("At most that many handlers of the type run at once on this node."));
  return k;
}

std::vector<key<http_config>> http_table() {
  using H = http_config;
  std::vector<key<H>> k;
  k.push_back(
      text<H>("address", &H::address, "", [](const std::string& v) -> std::optional<std::string> {
        if (v.empty() || has_space_or_control(v)) {
          return "expected an IP address or host name such as \"127.0.0.1\"";
        }
        return std::nullopt;
      }).describe("Address the API and dashboard listen on."));
  auto port = whole<H>("port", &H::port, 0, 65535)
                  .environment("SLUICE_HTTP_PORT")
                  .describe("TCP port; 0: the operating system picks a free one.");
  port.from_env = [](const loader& ctx, const std::string& v, H& h) {
    int p = -1;
    const bool digits = v.size() <= 5 && std::all_of(v.begin(), v.end(), [](char c) {
                          return std::isdigit(static_cast<unsigned char>(c));
                        });
    if (digits) p = std::stoi(v);
    if (p < 0 || p > 65535) {
      ctx.fail_env("SLUICE_HTTP_PORT", "'" + v + "' is not a port number (0 to 65535)");
    }
    h.port = p;
  };
  k.push_back(std::move(port));
  auto token = custom<H>(
      "token", "string", "≥ 16 printable ASCII, no spaces",
      [](section& t, H& h) {
        const auto v = t.string("token");
        if (!v) return;
        if (t.has("token_file")) {
          (void)t.string("token_file");  // its type is checked first, as on its own
          t.fail("token_file", "set token or token_file, not both");
        }
        if (auto problem = token_problem(*v)) t.fail("token", *problem);
        h.token = *v;
      },
      [](const H& h) { return json(!h.token.empty()); });
  token.secret = true;
  token.json_name = "token_set";
  token.from_env = [](const loader& ctx, const std::string& v, H& h) {
    if (auto problem = token_problem(v)) ctx.fail_env("SLUICE_API_TOKEN", *problem);
    h.token = v;
    h.token_file.clear();
  };
  k.push_back(std::move(token)
                  .environment("SLUICE_API_TOKEN")
                  .default_is("none")
                  .describe("Bearer token mutating API calls must send; none: the API is "
                            "read-only."));
  k.push_back(custom<H>(
                  "token_file", "path", "",
                  [](section& t, H& h) {
                    const auto v = t.string("token_file");
                    if (!v) return;
                    if (v->empty()) t.fail("token_file", "must not be empty");
                    std::filesystem::path file(*v);
                    if (file.is_relative()) file = t.ctx().base_dir() / file;
                    h.token = read_token_file(t, file);
                    if (auto problem = token_problem(h.token)) {
                      t.fail("token_file", "'" + file.string() + "': " + *problem);
                    }
                    h.token_file = file.lexically_normal();
                  },
                  [](const H& h) { return json(h.token_file.string()); })
                  .default_is("none")
                  .describe("File holding the token, relative to the configuration file."));
  k.push_back(bytes<H>("max_body_bytes", &H::max_body_bytes, 1024, std::size_t{256} * 1024 * 1024)
                  .describe("Largest request body the API accepts."));
  k.push_back(whole<H>("max_connections", &H::max_connections, 16, 1'000'000)
                  .describe("Most client connections open at once."));
  k.push_back(bytes<H>("max_header_bytes", &H::max_header_bytes, 1024, std::size_t{1024} * 1024)
                  .describe("Largest request header, request line included."));
  k.push_back(whole<H>("max_header_count", &H::max_header_count, 8, 10'000)
                  .describe("Most header fields in a request."));
  k.push_back(bytes<H>("max_buffered_body_bytes", &H::max_buffered_body_bytes, 1024,
                       std::size_t{64} * 1024 * 1024 * 1024)
                  .describe("Request bodies held in memory at once, over all connections (at "
                            "least `max_body_bytes`)."));
  k.push_back(duration<H>("header_timeout", &H::header_timeout, 100ms, std::chrono::minutes(10))
                  .describe("Time a request header has to arrive complete."));
  k.push_back(duration<H>("body_timeout", &H::body_timeout, 100ms, std::chrono::hours(1))
                  .describe("Time an admitted request's body has to arrive."));
  k.push_back(duration<H>("idle_timeout", &H::idle_timeout, 100ms, std::chrono::hours(1))
                  .describe("A keep-alive connection with no new request this long is closed."));
  k.push_back(duration<H>("write_timeout", &H::write_timeout, 100ms, std::chrono::hours(1))
                  .describe("Time a client has to take a response."));
  k.push_back(duration<H>("history", &H::history, 1s, std::chrono::hours(24 * 7))
                  .describe("How far back the dashboard's pool charts go (at least "
                            "`sample_interval`)."));
  k.push_back(duration<H>("sample_interval", &H::sample_interval, 100ms, std::chrono::hours(1))
                  .describe("How often pool statistics are sampled for those charts."));
  k.push_back(string_list<H>(
                  "allowed_hosts", &H::allowed_hosts, "array of host names", "host names",
                  [](const std::string& h) -> std::optional<std::string> {
                    if (h.empty() || h.size() > 253 || has_space_or_control(h) ||
                        h.find_first_of(":/[]@") != std::string::npos) {
                      return "'" + h.substr(0, 100) +
                             "' is not a host name (give the name alone, without scheme or "
                             "port, or \"*\" for any)";
                    }
                    return std::nullopt;
                  },
                  false)
                  .describe("Host names clients may use besides IP addresses and `localhost`; "
                            "`\"*\"`: any."));
  return k;
}

std::vector<key<commands_config>> commands_table() {
  using C = commands_config;
  std::vector<key<C>> k;
  k.push_back(string_list<C>("allow", &C::allow, "array of absolute paths", "absolute paths",
                             executable_problem, true)
                  .reloadable()
                  .describe("Executables command tasks may run; each must exist and be "
                            "executable."));
  k.push_back(duration<C>("default_timeout", &C::default_timeout, 1s)
                  .reloadable()
                  .describe("Timeout of command tasks that do not set their own."));
  k.push_back(
      bytes<C>("max_output_bytes", &C::max_output_bytes, 1024, std::size_t{64} * 1024 * 1024)
          .reloadable()
          .describe("Output kept per run, from stdout and from stderr each."));
  k.push_back(
      string_list<C>(
          "allowed_env", &C::allowed_env, "array of variable names", "environment variable names",
          [](const std::string& v) -> std::optional<std::string> {
            // The rules a task's env follows, so that every listed name is one a
            // task can set.
            if (const auto problem = sched::command_env_problem(v, sched::command_policy{})) {
              return "'" + v + "' " + *problem;
            }
            return std::nullopt;
          },
          true,
          "is empty; leave it out to allow every name that is not refused, or list the "
          "names tasks may set")
          .reloadable()
          .default_is("not set: any name not always refused")
          .describe("The only environment variables a command task's `env` may set."));
  k.push_back(text<C>("path", &C::path, "absolute directories separated by `:`",
                      [](const std::string& v) -> std::optional<std::string> {
                        if (v.empty()) return "must not be empty";
                        std::size_t start = 0;
                        for (;;) {
                          const std::size_t colon = v.find(':', start);
                          const std::string dir = v.substr(start, colon - start);
                          // An empty entry means the working directory, which a task
                          // chooses (cwd).
                          if (dir.empty() || dir.front() != '/') {
                            return "'" + v +
                                   "' must be absolute directories separated by ':' (no "
                                   "empty entries, which would mean the working directory)";
                          }
                          if (colon == std::string::npos) return std::nullopt;
                          start = colon + 1;
                        }
                      })
                  .reloadable()
                  .describe("The `PATH` every command gets."));
  return k;
}

std::vector<key<http_tasks_config>> http_tasks_table() {
  using T = http_tasks_config;
  std::vector<key<T>> k;
  k.push_back(string_list<T>(
                  "allow_networks", &T::allow_networks, "array of networks",
                  "networks such as \"10.0.0.0/8\"",
                  [](const std::string& v) -> std::optional<std::string> {
                    if (sched::parse_ip_network(v)) return std::nullopt;
                    return "'" + v.substr(0, 100) +
                           "' is not a network: give an address with a prefix length and no "
                           "host bits set (\"127.0.0.1/32\", \"10.0.0.0/8\", \"fd00::/8\") or "
                           "a lone address";
                  },
                  true)
                  .default_is("`[]` (public addresses only)")
                  .describe("Networks HTTP tasks may call although they are refused by "
                            "default."));
  auto secret_key = custom<T>(
      "signing_secret", "string", "≥ 16 characters",
      [](section& t, T& h) {
        const auto v = t.string("signing_secret");
        if (!v) return;
        if (t.has("signing_secret_env")) {
          (void)t.string("signing_secret_env");  // its type is checked first, as on its own
          t.fail("signing_secret_env",
                 "give signing_secret or signing_secret_env, not both (signing_secret_env "
                 "keeps the secret out of the file)");
        }
        if (v->size() < 16) {
          t.fail("signing_secret", "the signing secret is " + std::to_string(v->size()) +
                                       " characters long; use at least 16 (e.g. the output of "
                                       "`openssl rand -hex 32`)");
        }
        h.signing_secret = *v;
      },
      [](const T& h) { return json(!h.signing_secret.empty()); });
  secret_key.secret = true;
  secret_key.json_name = "signing_secret_set";
  k.push_back(std::move(secret_key)
                  .default_is("none")
                  .describe("Signs every HTTP task request; prefer `signing_secret_env`."));
  k.push_back(custom<T>(
                  "signing_secret_env", "environment variable name", "",
                  [](section& t, T& h) {
                    const auto variable = t.string("signing_secret_env");
                    if (!variable) return;
                    const char* key = "signing_secret_env";
                    if (variable->empty()) t.fail(key, "must name an environment variable");
                    const auto secret = t.ctx().env(*variable);
                    if (!secret) {
                      t.fail(key, "the environment variable " + *variable +
                                      " is not set or is empty; set it to the webhook signing "
                                      "secret");
                    }
                    if (secret->size() < 16) {
                      t.fail(key, "the signing secret is " + std::to_string(secret->size()) +
                                      " characters long; use at least 16 (e.g. the output of "
                                      "`openssl rand -hex 32`)");
                    }
                    h.signing_secret_env = *variable;
                    h.signing_secret = *secret;
                  },
                  [](const T& h) { return json(h.signing_secret_env); })
                  .default_is("none")
                  .describe("The environment variable that holds the signing secret."));
  k.push_back(
      custom<T>(
          "signing_keys", "table: name = environment variable name", "",
          [](section& ht, T& h) {
            section table = ht.table("signing_keys");
            table.accept_all();
            for (const auto& [name, node] : table.entries()) {
              const auto* variable = node->as_string();
              if (variable == nullptr) {
                table.fail(name,
                           "expected the name of the environment variable that holds this "
                           "key's secret, got " +
                               std::string(type_name(*node)));
              }
              if (name.empty() || name.size() > 64 ||
                  !std::all_of(name.begin(), name.end(), [](char c) {
                    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_' ||
                           c == '-' || c == '.';
                  })) {
                table.fail(name,
                           "key names are 1 to 64 characters of A-Z, a-z, 0-9, '_', '-', '.'");
              }
              const auto secret = table.ctx().env(variable->get());
              if (!secret) {
                table.fail(name, "the environment variable " + variable->get() +
                                     " is not set or is empty; set it to this key's signing "
                                     "secret");
              }
              if (secret->size() < 16) {
                table.fail(name, "the secret in " + variable->get() + " is " +
                                     std::to_string(secret->size()) +
                                     " characters long; use at least 16");
              }
              h.signing_keys_env[name] = variable->get();
              h.signing_keys[name] = *secret;
            }
            table.finish();
          },
          // Names and variables, never the secrets.
          [](const T& h) { return json(h.signing_keys_env); })
          .default_is("empty")
          .describe("Secrets tasks pick by name, each read from the environment variable "
                    "given."));
  return k;
}

std::vector<key<task_type_alias>> type_table() {
  using A = task_type_alias;
  const std::vector<std::string> handlers(std::begin(builtin_handlers), std::end(builtin_handlers));
  std::string handler_type;
  for (const auto& h : handlers)
    handler_type += (handler_type.empty() ? "" : ", ") + ("`\"" + h + "\"`");
  std::vector<key<A>> k;
  k.push_back(
      custom<A>(
          "handler", handler_type, "",
          [handlers](section& t, A& a) {
            const auto handler = t.string("handler");
            if (!handler) {
              t.fail("handler", "missing: name the built-in handler that runs tasks of type '" +
                                    a.name + "' (" + join(handlers, ", ") + ")");
            }
            if (std::find(handlers.begin(), handlers.end(), *handler) == handlers.end()) {
              t.fail("handler", "'" + *handler + "' is not a built-in handler (" +
                                    join(handlers, ", ") + "); an alias cannot name another alias");
            }
            a.handler = *handler;
          },
          [](const A& a) { return json(a.handler); })
          .default_is("required")
          .describe("The built-in handler that runs tasks of type `NAME`."));
  const sched::task_spec general;
  k.push_back(whole<A>(
                  "priority", [](auto& a) -> auto& { return a.defaults.priority; }, -1000, 1000)
                  .default_is("`" + std::to_string(general.priority) + "`")
                  .describe("Priority of new tasks of this type that do not give their own."));
  k.push_back(whole<A>(
                  "max_attempts", [](auto& a) -> auto& { return a.defaults.max_attempts; }, 1, 1000)
                  .default_is("`" + std::to_string(general.max_attempts) + "`")
                  .describe("Attempts per occurrence of new tasks of this type."));
  k.push_back(duration<A>(
                  "timeout", [](auto& a) -> auto& { return a.defaults.timeout; }, 1ms, year)
                  .default_is("`" + format_duration(general.timeout) + "`")
                  .describe("Timeout of new tasks of this type that do not give their own."));
  k.push_back(
      duration<A>(
          "backoff_base", [](auto& a) -> auto& { return a.defaults.backoff_base; }, 0ms, year)
          .default_is("`" + format_duration(general.backoff_base) + "`")
          .describe("First retry delay of new tasks of this type."));
  k.push_back(duration<A>(
                  "backoff_cap", [](auto& a) -> auto& { return a.defaults.backoff_cap; }, 0ms, year)
                  .default_is("`" + format_duration(general.backoff_cap) + "`")
                  .describe("Longest retry delay of new tasks of this type (at least "
                            "`backoff_base`)."));
  return k;
}

std::vector<key<log_config>> log_table() {
  using L = log_config;
  std::vector<key<L>> k;
  k.push_back(
      choice<L>("format", &L::format, {{"text", log_format::text}, {"json", log_format::json}})
          .reloadable()
          .describe("`json`: one object per line; `--log-format` overrides it."));
  std::vector<std::pair<std::string, log_level>> levels;  // named as the library names them
  for (const log_level l : {log_level::debug, log_level::info, log_level::warn, log_level::error})
    levels.emplace_back(std::string(to_string(l)), l);
  k.push_back(choice<L>("level", &L::level, std::move(levels))
                  .reloadable()
                  .describe("Least severe level written."));
  return k;
}

// Built once, on first use, and read from any thread after.
std::vector<key<flow_config>> flow_table() {
  using F = flow_config;
  std::vector<key<F>> k;
  k.push_back(whole<F>("max_running", &F::max_running, 1, 1'000'000'000)
                  .default_is("unset")
                  .reloadable()
                  .describe("At most this many tasks of the type run at once, over all nodes."));
  k.push_back(whole<F>("rate", &F::rate, 1, 1'000'000'000)
                  .default_is("unset")
                  .reloadable()
                  .describe("At most this many start in any window of `rate_period`, over all "
                            "nodes."));
  k.push_back(duration<F>("rate_period", &F::rate_period, 1s, std::chrono::hours(24))
                  .default_is("unset")
                  .reloadable()
                  .describe("The rate's window (1s to 1d; required with `rate`)."));
  k.push_back(text<F>("key", &F::key, "a payload field name, ≤ 200",
                      [](const std::string& v) -> std::optional<std::string> {
                        if (v.empty() || v.size() > 200)
                          return "expected a payload field name of 1 to 200 characters";
                        return std::nullopt;
                      })
                  .default_is("unset: per type")
                  .reloadable()
                  .describe("Count the limits per value of this payload field (one running "
                            "analysis per customer)."));
  return k;
}

struct key_tables {
  std::vector<key<database_config>> database = database_table();
  std::vector<key<pool::settings>> pool = pool_table();
  std::vector<key<sched::scheduler_settings>> scheduler = scheduler_table();
  std::vector<key<http_config>> http = http_table();
  std::vector<key<commands_config>> commands = commands_table();
  std::vector<key<http_tasks_config>> http_tasks = http_tasks_table();
  std::vector<key<task_type_alias>> type = type_table();
  std::vector<key<log_config>> log = log_table();
  std::vector<key<flow_config>> flow = flow_table();
};

const key_tables& tables() {
  static const key_tables t;
  return t;
}

}  // namespace

const std::vector<key<database_config>>& database_keys() {
  return tables().database;
}
const std::vector<key<pool::settings>>& pool_keys() {
  return tables().pool;
}
const std::vector<key<sched::scheduler_settings>>& scheduler_keys() {
  return tables().scheduler;
}
const std::vector<key<http_config>>& http_keys() {
  return tables().http;
}
const std::vector<key<commands_config>>& commands_keys() {
  return tables().commands;
}
const std::vector<key<http_tasks_config>>& http_tasks_keys() {
  return tables().http_tasks;
}
const std::vector<key<task_type_alias>>& type_keys() {
  return tables().type;
}
const std::vector<key<log_config>>& log_keys() {
  return tables().log;
}
const std::vector<key<flow_config>>& flow_keys() {
  return tables().flow;
}

pool::settings pool_defaults(const database_config& db, std::string name) {
  pool::settings s;
  s.conninfo = db.url;
  s.connect_timeout = db.connect_timeout;
  s.statement_timeout = db.statement_timeout;
  s.application_name = db.application_name_prefix + "/" + name;
  s.name = std::move(name);
  return s;
}

pool::settings lane_defaults(const database_config& db) {
  pool::settings s = pool_defaults(db, std::string(lane_pool_name));
  s.size = 2;
  s.max_overflow = 1;
  // The lane is used every heartbeat (2 s): with the pools' 500 ms pre-ping window every
  // heartbeat would cost a second round trip and transaction. A dead lane connection costs one
  // failed heartbeat or cycle instead, which the engine retries on a fresh connection.
  s.pre_ping_window = std::chrono::seconds(30);
  return s;
}

// ---- the reference --------------------------------------------------------------------------

namespace {

std::string default_text(const json& v) {
  if (v.is_null()) return "unset";
  if (v.is_string()) {
    const auto s = v.get<std::string>();
    return s.empty() ? "empty" : "`" + s + "`";
  }
  if (v.is_array() && v.empty()) return "`[]`";
  if (v.is_object() && v.empty()) return "empty";
  return "`" + v.dump() + "`";
}

template <class S>
void reference_rows(std::string& out, std::string_view table, const std::vector<key<S>>& keys,
                    const S& defaults, bool environment = true) {
  for (const auto& k : keys) {
    std::string def = k.default_doc;
    if (def.empty()) {
      const json v = k.show(defaults);
      def = k.type == "size" && v.is_number() ? "`" + format_size(v.get<std::size_t>()) + "`"
                                              : default_text(v);
    }
    out += "| `" + std::string(table) + "." + std::string(k.name) + "` | " + k.type + " | " + def +
           " | " + k.range + " | " +
           (k.env.empty() || !environment ? "" : "`" + std::string(k.env) + "`") + " | " +
           (k.reload ? "applied" : "restart") + " | " + (k.secret ? "yes" : "") + " | " +
           std::string(k.doc) + " |\n";
  }
}

template <class S>
const key_doc* find_in(const std::vector<key<S>>& keys, std::string_view name) {
  for (const auto& k : keys) {
    if (k.name == name || k.json_name == name) return &k;
  }
  return nullptr;
}

}  // namespace

std::string reference_markdown() {
  const database_config db;
  std::string out =
      "| key | type | default | range | environment | on SIGHUP | secret | what it is |\n"
      "|---|---|---|---|---|---|---|---|\n";
  reference_rows(out, "database", database_keys(), db);
  reference_rows(out, "pools.NAME", pool_keys(), pool_defaults(db, "NAME"));
  reference_rows(out, "scheduler", scheduler_keys(), sched::scheduler_settings{});
  // The DB_POOL_* variables do not apply to the lane.
  reference_rows(out, "scheduler.lane", pool_keys(), lane_defaults(db), false);
  reference_rows(out, "http", http_keys(), http_config{});
  reference_rows(out, "http_tasks", http_tasks_keys(), http_tasks_config{});
  reference_rows(out, "commands", commands_keys(), commands_config{});
  reference_rows(out, "types.NAME", type_keys(), task_type_alias{});
  reference_rows(out, "flow.TYPE", flow_keys(), flow_config{});
  reference_rows(out, "log", log_keys(), log_config{});
  return out;
}

const key_doc* find_key(std::string_view dotted) {
  std::vector<std::string_view> parts;
  for (std::size_t start = 0;;) {
    const std::size_t dot = dotted.find('.', start);
    parts.push_back(dotted.substr(start, dot - start));
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  const auto n = parts.size();
  if (n < 2) return nullptr;
  const std::string_view table = parts[0];
  if (table == "database" && n == 2) return find_in(database_keys(), parts[1]);
  if (table == "pools" && n == 3) return find_in(pool_keys(), parts[2]);
  if (table == "scheduler") {
    if (n == 3 && parts[1] == "lane") return find_in(pool_keys(), parts[2]);
    if (n >= 2) return find_in(scheduler_keys(), parts[1]);
  }
  if (table == "http" && n == 2) return find_in(http_keys(), parts[1]);
  if (table == "http_tasks" && n >= 2) return find_in(http_tasks_keys(), parts[1]);
  if (table == "commands" && n == 2) return find_in(commands_keys(), parts[1]);
  if (table == "types" && n == 3) return find_in(type_keys(), parts[2]);
  if (table == "log" && n == 2) return find_in(log_keys(), parts[1]);
  if (table == "flow" && n == 3) return find_in(flow_keys(), parts[2]);
  return nullptr;
}

}  // namespace sluice::cli::config_detail
