#pragma once

// Private to src/cli/config*.cpp: every key of the configuration file, declared once.
//
// One entry per key says its name, type, bounds, default (taken from the structure's own
// default), environment variable, whether SIGHUP applies it, whether it is a secret, and a
// one-line description; it carries the code that reads the key from its table (with the
// file's messages) and the code that shows it in `--print-config`. Parsing, the environment
// overlay, `--print-config`, the reload decision and the reference table in
// docs/configuration.md all come from these entries.
//
// Adding a key: one entry in the right table of config_keys.cpp, the field it fills, and the
// code that uses that field. Relations between keys (max_prefetch >= prefetch, ...) are
// checked by config.cpp after the whole table was read.

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/config.hpp"
#include "cli/config_reader.hpp"

namespace sluice::cli::config_detail {

using json = nlohmann::ordered_json;

// What the reference table says of a key, whatever structure it fills.
struct key_doc {
  std::string_view name;
  std::string type;         // "whole number", "duration", ...
  std::string range;        // "1–10000", "1ms–1h"; empty: no bounds
  std::string_view env;     // the environment variable that overrides it, or empty
  bool reload = false;      // SIGHUP applies a change at once (else it needs a restart)
  bool secret = false;      // never repeated in messages; masked in --print-config
  std::string_view doc;     // one line
  std::string default_doc;  // the default as the reference writes it; empty: from show()
};

// One key of a table whose values land in a structure S.
template <class S>
struct key : key_doc {
  // Reads the key from its table into `s`, failing with the file's message. Unset: no change.
  std::function<void(section&, S&)> read;
  // The value as --print-config shows it (a secret masked); its JSON name is json_name.
  std::function<json(const S&)> show;
  std::string_view json_name;  // empty: the key's name
  // Applies the environment variable's value (set and not empty); fails with fail_env().
  std::function<void(const loader&, const std::string&, S&)> from_env;
  // Keys besides this one whose validity the environment variable's value can change.
  std::vector<std::string_view> env_also;

  key&& describe(std::string_view text) && {
    doc = text;
    return std::move(*this);
  }
  key&& environment(std::string_view variable) && {
    env = variable;
    return std::move(*this);
  }
  key&& reloadable() && {
    reload = true;
    return std::move(*this);
  }
  key&& default_is(std::string text) && {
    default_doc = std::move(text);
    return std::move(*this);
  }
};

// The tables, in file order within each (the order unknown-key messages and --print-config use).
const std::vector<key<database_config>>& database_keys();
// [pools.NAME] and [scheduler.lane].
const std::vector<key<pool::settings>>& pool_keys();
const std::vector<key<sched::scheduler_settings>>& scheduler_keys();
const std::vector<key<http_config>>& http_keys();
const std::vector<key<commands_config>>& commands_keys();
const std::vector<key<http_tasks_config>>& http_tasks_keys();
// [types.NAME]; the alias's name is set before they are read.
const std::vector<key<task_type_alias>>& type_keys();
const std::vector<key<log_config>>& log_keys();
// [flow.TYPE]; the type is set before they are read.
const std::vector<key<flow_config>>& flow_keys();

// The defaults of a pool before its table is read: what [database] passes on.
pool::settings pool_defaults(const database_config& db, std::string name);
// The lane's defaults, which differ from a pool's in three keys.
pool::settings lane_defaults(const database_config& db);

// Reads every key of `keys` from `t` into `s`, in table order.
template <class S>
void read_keys(section& t, const std::vector<key<S>>& keys, S& s) {
  for (const auto& k : keys)
    k.read(t, s);
}

// Applies the environment variables the keys name; returns the names of those that were set.
template <class S>
std::vector<std::string> apply_environment(const loader& ctx, const std::vector<key<S>>& keys,
                                           S& s) {
  std::vector<std::string> applied;
  for (const auto& k : keys) {
    if (k.env.empty() || !k.from_env) continue;
    if (auto v = ctx.env(k.env)) {
      k.from_env(ctx, *v, s);
      applied.emplace_back(k.env);
    }
  }
  return applied;
}

// The keys as one JSON object for --print-config. `skip_null`: leave unset keys out.
template <class S>
json show_keys(const std::vector<key<S>>& keys, const S& s, bool skip_null = false) {
  json j = json::object();
  for (const auto& k : keys) {
    json v = k.show(s);
    if (skip_null && v.is_null()) continue;
    j[std::string(k.json_name.empty() ? k.name : k.json_name)] = std::move(v);
  }
  return j;
}

// The whole reference (a Markdown table of every key), as docs/configuration.md holds it
// between its "BEGIN generated" and "END generated" lines.
std::string reference_markdown();

// The entry of a dotted key path as to_json_redacted() names it ("pools.platform.size",
// "http.token_set", "types.x.timeout"), or nullptr.
const key_doc* find_key(std::string_view dotted);

}  // namespace sluice::cli::config_detail
