#pragma once

// A small checker for the Prometheus text exposition format (0.0.4), used by the /metrics tests
// (tests/unit/http_metrics_test.cpp, tests/integration/http_api_test.cpp). It parses every line
// and reports each rule broken:
//   - every sample belongs to a family with a TYPE line (histogram samples through their
//     _bucket/_sum/_count suffixes), and every family has a HELP line;
//   - names and label names are valid, every name starts with "sluice_", counters end in _total;
//   - a family's samples are contiguous, and no series (name + label set) appears twice;
//   - histogram buckets carry "le", are cumulative in increasing le order, end with le="+Inf",
//     and the +Inf bucket equals _count, with _sum present.
// Header-only so the unit and integration tests share it without a library.

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sluice::test {

struct exposition_sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

struct exposition {
  std::map<std::string, std::string> types;  // family -> type
  std::map<std::string, std::string> help;   // family -> help text
  std::vector<exposition_sample> samples;

  // The value of the one sample with this name whose labels include `match`; nullopt when there
  // is none (or more than one).
  [[nodiscard]] std::optional<double> value(
      const std::string& name, const std::map<std::string, std::string>& match = {}) const {
    std::optional<double> found;
    int n = 0;
    for (const auto& s : samples) {
      if (s.name != name) continue;
      const bool all = std::all_of(match.begin(), match.end(), [&](const auto& kv) {
        const auto it = s.labels.find(kv.first);
        return it != s.labels.end() && it->second == kv.second;
      });
      if (all) {
        found = s.value;
        ++n;
      }
    }
    if (n != 1) return std::nullopt;
    return found;
  }
  [[nodiscard]] int count(const std::string& name) const {
    return static_cast<int>(std::count_if(samples.begin(), samples.end(),
                                          [&](const auto& s) { return s.name == name; }));
  }
};

namespace detail {

inline bool valid_metric_name(std::string_view n) {
  if (n.empty()) return false;
  for (std::size_t i = 0; i < n.size(); ++i) {
    const char c = n[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

inline bool valid_label_name(std::string_view n) {
  if (n.empty() || n.substr(0, 2) == "__") return false;
  for (std::size_t i = 0; i < n.size(); ++i) {
    const char c = n[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

inline std::optional<double> parse_value(const std::string& t) {
  if (t == "+Inf") return INFINITY;
  if (t == "-Inf") return -INFINITY;
  if (t == "NaN") return NAN;
  if (t.empty()) return std::nullopt;
  char* end = nullptr;
  const double v = std::strtod(t.c_str(), &end);
  if (end != t.c_str() + t.size()) return std::nullopt;
  return v;
}

inline bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// Parses `name{a="x",b="y"} value`; false with `why` set when malformed.
inline bool parse_sample(const std::string& line, exposition_sample& out, std::string& why) {
  std::size_t i = 0;
  while (i < line.size() && line[i] != '{' && line[i] != ' ')
    ++i;
  out.name = line.substr(0, i);
  if (!valid_metric_name(out.name)) {
    why = "invalid metric name '" + out.name + "'";
    return false;
  }
  if (i < line.size() && line[i] == '{') {
    ++i;
    for (;;) {
      if (i < line.size() && line[i] == '}') {
        ++i;
        break;
      }
      const std::size_t eq = line.find('=', i);
      if (eq == std::string::npos) {
        why = "label without '='";
        return false;
      }
      const std::string key = line.substr(i, eq - i);
      if (!valid_label_name(key)) {
        why = "invalid label name '" + key + "'";
        return false;
      }
      i = eq + 1;
      if (i >= line.size() || line[i] != '"') {
        why = "label value not quoted";
        return false;
      }
      ++i;
      std::string value;
      bool closed = false;
      while (i < line.size()) {
        const char c = line[i++];
        if (c == '"') {
          closed = true;
          break;
        }
        if (c == '\\') {
          if (i >= line.size()) break;
          const char e = line[i++];
          if (e == 'n') {
            value += '\n';
          } else if (e == '\\' || e == '"') {
            value += e;
          } else {
            why = "invalid escape in label value";
            return false;
          }
        } else {
          value += c;
        }
      }
      if (!closed) {
        why = "unterminated label value";
        return false;
      }
      if (!out.labels.emplace(key, value).second) {
        why = "label '" + key + "' repeated";
        return false;
      }
      if (i < line.size() && line[i] == ',') ++i;
    }
  }
  if (i >= line.size() || line[i] != ' ') {
    why = "no space before the value";
    return false;
  }
  std::string rest = line.substr(i + 1);
  // An optional timestamp may follow the value.
  const auto sp = rest.find(' ');
  const auto v = parse_value(sp == std::string::npos ? rest : rest.substr(0, sp));
  if (!v) {
    why = "unparseable value '" + rest + "'";
    return false;
  }
  out.value = *v;
  return true;
}

inline std::string series_key(const exposition_sample& s, const char* skip = nullptr) {
  std::string k = s.name + "{";
  for (const auto& [n, v] : s.labels) {
    if (skip != nullptr && n == skip) continue;
    k += n + "=" + v + ",";
  }
  return k + "}";
}

}  // namespace detail

// Parses `text` into `out` (when not null) and returns every problem found; empty means valid.
inline std::vector<std::string> check_exposition(const std::string& text,
                                                 exposition* out = nullptr) {
  exposition e;
  std::vector<std::string> problems;
  std::set<std::string> series;
  std::set<std::string> finished_families;  // families whose samples ended
  std::string current_family;
  std::map<std::string, int> line_of_family;

  const auto family_of = [&](const std::string& name) -> std::string {
    if (e.types.count(name) != 0) return name;
    for (const char* suffix : {"_bucket", "_sum", "_count"}) {
      if (!detail::ends_with(name, suffix)) continue;
      const std::string base = name.substr(0, name.size() - std::string_view(suffix).size());
      const auto t = e.types.find(base);
      if (t == e.types.end()) continue;
      if (t->second == "histogram" || (t->second == "summary" && std::string(suffix) != "_bucket"))
        return base;
    }
    return {};
  };

  std::istringstream in(text);
  std::string line;
  int n = 0;
  if (!text.empty() && text.back() != '\n') problems.push_back("the last line has no newline");
  while (std::getline(in, line)) {
    ++n;
    const std::string where = "line " + std::to_string(n) + ": ";
    if (line.empty()) continue;
    if (line[0] == '#') {
      std::istringstream words(line);
      std::string hash, kind, name;
      words >> hash >> kind >> name;
      if (kind != "HELP" && kind != "TYPE") continue;  // a plain comment
      if (!detail::valid_metric_name(name)) {
        problems.push_back(where + "invalid family name '" + name + "'");
        continue;
      }
      std::string rest;
      std::getline(words, rest);
      if (!rest.empty() && rest[0] == ' ') rest.erase(0, 1);
      if (kind == "HELP") {
        if (!e.help.emplace(name, rest).second)
          problems.push_back(where + "second HELP for " + name);
      } else {
        static const std::set<std::string> types{"counter", "gauge", "histogram", "summary",
                                                 "untyped"};
        if (types.count(rest) == 0) problems.push_back(where + "unknown type '" + rest + "'");
        if (!e.types.emplace(name, rest).second)
          problems.push_back(where + "second TYPE for " + name);
        if (finished_families.count(name) != 0 || line_of_family.count(name) != 0)
          problems.push_back(where + "TYPE for " + name + " after its samples");
      }
      continue;
    }
    exposition_sample s;
    std::string why;
    if (!detail::parse_sample(line, s, why)) {
      problems.push_back(where + why);
      continue;
    }
    const std::string family = family_of(s.name);
    if (family.empty()) {
      problems.push_back(where + "sample " + s.name + " has no TYPE'd family");
    } else {
      if (family != current_family) {
        if (!current_family.empty()) finished_families.insert(current_family);
        if (finished_families.count(family) != 0)
          problems.push_back(where + "samples of " + family + " are not contiguous");
        current_family = family;
      }
      line_of_family.emplace(family, n);
      const auto& type = e.types[family];
      if (type == "counter" && (std::isnan(s.value) || s.value < 0))
        problems.push_back(where + "counter " + s.name + " is negative or NaN");
      if (type == "histogram" && detail::ends_with(s.name, "_bucket") && s.labels.count("le") == 0)
        problems.push_back(where + "bucket without le: " + s.name);
    }
    if (!series.insert(detail::series_key(s)).second)
      problems.push_back(where + "duplicate series " + detail::series_key(s));
    e.samples.push_back(std::move(s));
  }

  for (const auto& [family, type] : e.types) {
    if (e.help.count(family) == 0) problems.push_back(family + ": TYPE without HELP");
    if (family.rfind("sluice_", 0) != 0) problems.push_back(family + ": no sluice_ prefix");
    if (type == "counter" && !detail::ends_with(family, "_total"))
      problems.push_back(family + ": counter name does not end in _total");
    if (type != "histogram") continue;
    // Group buckets by their labels without le, in the order they appear.
    std::map<std::string, std::vector<std::pair<double, double>>> buckets;
    std::map<std::string, double> counts;
    std::set<std::string> sums;
    for (const auto& s : e.samples) {
      if (s.name == family + "_bucket") {
        const auto le = detail::parse_value(s.labels.count("le") ? s.labels.at("le") : "");
        if (!le) {
          problems.push_back(family + ": unparseable le");
          continue;
        }
        exposition_sample base = s;
        base.name = family;
        buckets[detail::series_key(base, "le")].emplace_back(*le, s.value);
      } else if (s.name == family + "_count") {
        exposition_sample base = s;
        base.name = family;
        counts[detail::series_key(base)] = s.value;
      } else if (s.name == family + "_sum") {
        exposition_sample base = s;
        base.name = family;
        sums.insert(detail::series_key(base));
      }
    }
    for (const auto& [key, list] : buckets) {
      for (std::size_t i = 1; i < list.size(); ++i) {
        if (!(list[i].first > list[i - 1].first))
          problems.push_back(key + ": bucket bounds not increasing");
        if (list[i].second < list[i - 1].second)
          problems.push_back(key + ": buckets not cumulative");
      }
      if (list.empty() || !std::isinf(list.back().first))
        problems.push_back(key + ": last bucket is not +Inf");
      const auto c = counts.find(key);
      if (c == counts.end()) {
        problems.push_back(key + ": no _count");
      } else if (!list.empty() && c->second != list.back().second) {
        problems.push_back(key + ": +Inf bucket differs from _count");
      }
      if (sums.count(key) == 0) problems.push_back(key + ": no _sum");
    }
  }
  if (out != nullptr) *out = std::move(e);
  return problems;
}

}  // namespace sluice::test
