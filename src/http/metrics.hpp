#pragma once

// GET /metrics: the Prometheus text exposition format, version 0.0.4. Every family has HELP and
// TYPE lines, names carry the sluice_ prefix and their unit (_seconds, _total), and label values
// are escaped. docs/api.md lists every family.
//
// The rendering is a pure function of a snapshot, so it is tested without a server; the server
// fills the snapshot (pools and scheduler from memory, cluster-wide counters from the store).
//
// Thread-safety: pure functions.

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "http/history.hpp"
#include "http/transport.hpp"
#include "sluice/pool/pool.hpp"
#include "sluice/sched/scheduler.hpp"
#include "sluice/sched/store.hpp"

namespace sluice::http {

inline constexpr std::string_view metrics_content_type = "text/plain; version=0.0.4; charset=utf-8";

struct metrics_snapshot {
  std::string version;
  double uptime_s = 0;
  std::vector<pool::pool_stats> pools;
  sched::scheduler_status scheduler;
  std::optional<double> last_cycle_age_s;  // unset before the first cycle
  // The store's part: all set when the database could be read for this scrape, else unset
  // (database_ok 0).
  bool database_ok = false;
  std::optional<sched::cumulative_stats> stats;
  std::optional<std::vector<sched::queue_depth>> queues;
  std::optional<std::vector<sched::node_info>> nodes;
  std::optional<std::vector<sched::flow_usage>> flow;  // the flow-limited types
  // The newest pool_history sample, for the server's connection counts.
  std::optional<history_sample> server;
  // The HTTP transport's connection and request counters, and its connection cap.
  std::optional<transport_stats> http;
  std::size_t http_max_connections = 0;
};

[[nodiscard]] std::string render_metrics(const metrics_snapshot& m);

// Writes families and samples in the text format. Samples must follow their family's family()
// call; the writer does not reorder.
class exposition_writer {
 public:
  using labels = std::vector<std::pair<std::string_view, std::string_view>>;

  // type: "counter", "gauge", "histogram", "summary" or "untyped".
  void family(std::string_view name, std::string_view type, std::string_view help);
  void sample(std::string_view name, const labels& l, double value);
  void sample(std::string_view name, const labels& l, std::uint64_t value);
  void sample(std::string_view name, const labels& l, std::int64_t value);
  void sample(std::string_view name, const labels& l, int value) {
    sample(name, l, static_cast<std::int64_t>(value));
  }

  [[nodiscard]] std::string take() { return std::move(out_); }

 private:
  void series(std::string_view name, const labels& l);
  std::string out_;
};

// "1", "0.25", "5e-05", "+Inf", "NaN": a float as the text format writes it (shortest form that
// reads back exactly).
[[nodiscard]] std::string format_metric_value(double v);
// Escapes \, " and newline in a label value.
[[nodiscard]] std::string escape_label_value(std::string_view v);

}  // namespace sluice::http
