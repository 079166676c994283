#include "sluice/pool/manager.hpp"

#include <mutex>

namespace sluice::pool {

pool_manager::pool_manager(manager_settings s, std::shared_ptr<connector> conn)
    : settings_(s), connector_(std::move(conn)) {
  if (settings_.connection_budget && *settings_.connection_budget < 1) {
    throw settings_error("connection_budget must be at least 1");
  }
  if (settings_.dedicated_connections < 0)
    throw settings_error("dedicated_connections must not be negative");
}

pool_manager::~pool_manager() {
  shutdown(std::chrono::milliseconds(0));
}

pool& pool_manager::add(settings s) {
  validate(s);
  std::unique_lock lock(mutex_);
  if (pools_.contains(s.name)) throw settings_error("pool '" + s.name + "' already exists");
  if (settings_.connection_budget) {
    int needed = settings_.dedicated_connections + s.max_connections();
    for (const auto& [name, p] : pools_)
      needed += p->config().max_connections();
    if (needed > *settings_.connection_budget) {
      throw budget_error("pool '" + s.name + "' (size " + std::to_string(s.size) + " + overflow " +
                         std::to_string(s.max_overflow) + ") would bring this process to " +
                         std::to_string(needed) + " connections, over its connection budget of " +
                         std::to_string(*settings_.connection_budget) +
                         ": lower size/max_overflow of some pool or raise the budget");
    }
  }
  std::string name = s.name;
  auto p = std::make_unique<pool>(std::move(s), connector_);
  return *pools_.emplace(std::move(name), std::move(p)).first->second;
}

pool* pool_manager::find(std::string_view name) const noexcept {
  std::shared_lock lock(mutex_);
  const auto it = pools_.find(name);
  return it == pools_.end() ? nullptr : it->second.get();
}

pool& pool_manager::get(std::string_view name) const {
  if (pool* p = find(name)) return *p;
  std::string known;
  for (const auto& n : names())
    known += (known.empty() ? "" : ", ") + n;
  throw std::out_of_range("no pool named '" + std::string(name) +
                          "' (pools: " + (known.empty() ? "none" : known) + ")");
}

std::vector<std::string> pool_manager::names() const {
  std::shared_lock lock(mutex_);
  std::vector<std::string> out;
  for (const auto& [name, p] : pools_)
    out.push_back(name);
  return out;
}

std::vector<pool_stats> pool_manager::status() const {
  std::shared_lock lock(mutex_);
  std::vector<pool_stats> out;
  out.reserve(pools_.size());
  for (const auto& [name, p] : pools_)
    out.push_back(p->stats());
  return out;
}

int pool_manager::connections_needed() const {
  std::shared_lock lock(mutex_);
  int needed = settings_.dedicated_connections;
  for (const auto& [name, p] : pools_)
    needed += p->config().max_connections();
  return needed;
}

budget_report pool_manager::evaluate(int server_max, int server_reserved, int others) const {
  budget_report r;
  {
    std::shared_lock lock(mutex_);
    for (const auto& [name, p] : pools_)
      r.pools += p->config().max_connections();
  }
  r.dedicated = settings_.dedicated_connections;
  r.needed = r.pools + r.dedicated;
  r.explicit_budget = settings_.connection_budget;
  r.server_max_connections = server_max;
  r.server_reserved = server_reserved;
  r.server_capacity = server_max - server_reserved;
  r.others = others;
  r.available = r.server_capacity - others;
  return r;
}

budget_report pool_manager::check_budget(pg::connection& conn, int others) const {
  const auto res = conn.exec(
      "SELECT current_setting('max_connections')::int AS max_connections, "
      "current_setting('superuser_reserved_connections')::int "
      "+ coalesce(current_setting('reserved_connections', true), '0')::int AS reserved");
  budget_report r =
      evaluate(res[0].get<int>("max_connections"), res[0].get<int>("reserved"), others);
  try {
    r.through_proxy = conn.through_proxy();
  } catch (const pg::sql_error&) {
    r.through_proxy = false;  // a server that cannot say (no inet_server_port()): direct
  }
  if (!r.fits()) throw budget_error(describe(r));
  return r;
}

budget_report pool_manager::check_budget(int others) const {
  pool* first = nullptr;
  {
    std::shared_lock lock(mutex_);
    if (pools_.empty()) throw budget_error("no pools to check the budget of");
    first = pools_.begin()->second.get();
  }
  auto lease = first->acquire();
  return check_budget(lease.conn(), others);
}

int pool_manager::shutdown(std::chrono::milliseconds grace) {
  std::vector<pool*> all;
  {
    std::shared_lock lock(mutex_);
    for (const auto& [name, p] : pools_)
      all.push_back(p.get());
  }
  const auto deadline = std::chrono::steady_clock::now() + grace;
  int out = 0;
  for (pool* p : all) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    out += p->close(std::max(left, std::chrono::milliseconds(0)));
  }
  return out;
}

std::string describe(const budget_report& r) {
  std::string s = "this process needs up to " + std::to_string(r.needed) + " connections (pools " +
                  std::to_string(r.pools) + " as the sum of size + max_overflow, plus " +
                  std::to_string(r.dedicated) + " dedicated); the server allows " +
                  std::to_string(r.server_capacity) + " (max_connections " +
                  std::to_string(r.server_max_connections) + " minus " +
                  std::to_string(r.server_reserved) + " reserved)";
  if (r.others > 0)
    s += ", of which " + std::to_string(r.others) + " are budgeted by other sluice nodes";
  if (r.explicit_budget)
    s += "; the configured connection_budget is " + std::to_string(*r.explicit_budget);
  if (r.through_proxy) {
    s += ". These connections go through a proxy such as PgBouncer, whose own server "
         "connections the server's limit applies to (size its pools against it), so they are "
         "not checked against it";
    if (r.explicit_budget && !r.fits()) {
      s += ". Over the connection_budget by " + std::to_string(r.needed - *r.explicit_budget) +
           ": lower size or max_overflow of the pools, or raise connection_budget";
    }
    return s;
  }
  if (!r.fits()) {
    const int limit = r.explicit_budget ? std::min(*r.explicit_budget, r.available) : r.available;
    s += ". Over by " + std::to_string(r.needed - limit) +
         ": lower size or max_overflow of the pools, run fewer nodes, put PgBouncer in front, or "
         "raise "
         "max_connections on the server";
  } else {
    s += ". Fits, with " + std::to_string(r.available - r.needed) + " to spare";
  }
  return s;
}

}  // namespace sluice::pool
