#pragma once

// Small helpers shared by the store and the engine.

#include <chrono>
#include <string>
#include <string_view>

#include "sluice/pg/result.hpp"
#include "sluice/sched/task.hpp"

namespace sluice::sched::detail {

// Replaces every "{s}" in `sql` with the quoted schema identifier.
std::string with_schema(std::string_view sql, std::string_view schema);

// `s` with ASCII letters in lower case (schedule kinds, policies, cron names). Inline: the
// parsers' fuzz targets link cron.cpp and schedule.cpp without the rest of this file.
inline std::string lower(std::string_view s) {
  std::string out{s};
  for (auto& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

// JSON string literal (with quotes) for `text`.
std::string json_quote(std::string_view text);

task row_to_task(const pg::row& r);

}  // namespace sluice::sched::detail
