#include "http/server.hpp"

#include <algorithm>
#include <charconv>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string_view>
#include <vector>

#include "http/auth.hpp"
#include "http/errors.hpp"
#include "http/json.hpp"
#include "http/message.hpp"
#include "http/metrics.hpp"
#include "http/readiness.hpp"
#include "http/task_spec_json.hpp"
#include "sluice/log.hpp"
#include "sluice/pg/error.hpp"
#include "sluice/sched/cron.hpp"

namespace sluice::http {

std::string static_request::header(std::string_view lower_case_name) const {
  const auto it = headers.find(std::string(lower_case_name));
  return it == headers.end() ? std::string() : it->second;
}

namespace {

using std::chrono::steady_clock;

constexpr const char* json_content_type = "application/json";

void send_json(response& res, int status, const json& body) {
  res.status = status;
  res.set_content(dump(body), json_content_type);
  res.set_header("Cache-Control", "no-store");
}

void send_error(response& res, error_code code, std::string_view message) {
  send_json(res, http_status(code), error_json(code, message));
  if (code == error_code::unauthorized)
    res.set_header("WWW-Authenticate", "Bearer realm=\"sluice\"");
}

bool is_mutating(const std::string& method) {
  return method == "POST" || method == "PUT" || method == "PATCH" || method == "DELETE";
}

// What a handler's exception means for the client. Database trouble is 503 (retry later);
// anything unexpected is 500 with the details in the log only, since exception texts may quote
// SQL or server internals.
api_error classify(const std::exception_ptr& ep, const request& req) {
  const auto internal = [&](const std::string& detail) {
    log(log_level::error, "http", req.method + " " + req.path + " failed: " + detail);
    return api_error(error_code::internal, "internal error; the server log has the details");
  };
  try {
    std::rethrow_exception(ep);
  } catch (const api_error& e) {
    return e;
  } catch (const sched::conflict_error& e) {
    return {error_code::conflict, e.what()};
  } catch (const sched::schedule_error& e) {
    return {error_code::bad_request, e.what()};
  } catch (const sched::schema_error& e) {
    return {error_code::unavailable, e.what()};
  } catch (const pool::pool_timeout& e) {
    return {error_code::unavailable, std::string("database busy: ") + e.what()};
  } catch (const pool::pool_closed&) {
    return {error_code::unavailable, "database pool is closed (shutting down)"};
  } catch (const pg::connection_error& e) {
    return {error_code::unavailable, std::string("database unreachable: ") + e.what()};
  } catch (const pg::sql_error& e) {
    switch (e.kind()) {
      case pg::error_kind::poisoning:
      case pg::error_kind::back_pressure:
      case pg::error_kind::query_canceled:
      case pg::error_kind::retry_transaction:
      case pg::error_kind::outcome_unknown:
        log(log_level::warn, "http", req.method + " " + req.path + ": " + e.what());
        return {error_code::unavailable,
                "database error (SQLSTATE " + e.sqlstate() + "); try again later"};
      case pg::error_kind::ordinary:
        break;
    }
    return internal(e.what());
  } catch (const std::exception& e) {
    return internal(e.what());
  } catch (...) {
    return internal("unknown exception");
  }
}

// ---- request parameters -------------------------------------------------------------------

std::optional<std::int64_t> parse_positive(std::string_view text) {
  if (text.empty() || text.size() > 19) return std::nullopt;
  std::int64_t v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc{} || end != text.data() + text.size() || v <= 0) return std::nullopt;
  return v;
}

std::optional<std::string> query_param(const request& req, const char* name) {
  const auto value = req.param(name);
  if (!value) return std::nullopt;
  return std::string(*value);
}

int limit_param(const request& req) {
  const auto text = query_param(req, "limit");
  if (!text) return 50;
  const auto v = parse_positive(*text);
  if (!v || *v > 1000) {
    throw api_error(error_code::bad_request, "limit: must be an integer between 1 and 1000");
  }
  return static_cast<int>(*v);
}

std::optional<std::int64_t> before_param(const request& req) {
  const auto text = query_param(req, "before");
  if (!text) return std::nullopt;
  const auto v = parse_positive(*text);
  if (!v) {
    throw api_error(error_code::bad_request,
                    "before: must be a positive integer (the \"next\" of the previous page)");
  }
  return v;
}

// What a route's pattern captured from the path: the {id} segment.
struct route_args {
  std::string id;
};

std::int64_t path_id(const route_args& args) {
  const auto v = parse_positive(args.id);
  if (!v) throw api_error(error_code::not_found, "no task with id " + args.id.substr(0, 40));
  return *v;
}

// A page of a newest-first listing and the cursor of the next one (null on the last page).
template <class T>
json page(const char* key, const std::vector<T>& items, int limit) {
  json list = json::array();
  for (const auto& item : items)
    list.push_back(json_of(item));
  json next = nullptr;
  if (!items.empty() && static_cast<int>(items.size()) >= limit) next = items.back().id;
  return {{key, std::move(list)}, {"next", std::move(next)}};
}

// Actions take no body; an empty object is accepted for clients that always send one.
void require_empty_body(const request& req) {
  if (req.body.find_first_not_of(" \t\r\n") == std::string::npos) return;
  const json body = parse_json_body(req.body);
  if (!body.is_object() || !body.empty()) {
    throw api_error(error_code::bad_request, "this action takes no request body (or {})");
  }
}

struct action_info {
  const char* name;
  const char* applies_to;
  bool wakes;  // may make work due now
};

constexpr action_info actions[] = {
    {"pause", "scheduled, available or retryable", false},
    {"resume", "paused", true},
    {"cancel", "scheduled, available, retryable, paused or failed", false},
    {"run-now", "scheduled, available, retryable, paused, failed or succeeded", true},
    {"reschedule", "scheduled, available, retryable or paused", true},
};

}  // namespace

// ---- the server ---------------------------------------------------------------------------

struct server::impl {
  using handler_fn = std::function<void(const request&, response&, const route_args&)>;

  // One method of a route.
  struct endpoint {
    handler_fn fn;
    lane where = lane::worker;
    // The query parameters it takes; any other is refused with 400. The probes take any (a
    // load balancer's health check may add its own), since they read none.
    std::vector<std::string_view> params;
    bool any_params = false;
  };
  struct route {
    std::string pattern;                // "/api/v1/tasks/{id}/runs"
    std::vector<std::string> segments;  // "api", "v1", "tasks", "{id}", "runs"
    std::map<std::string, endpoint> methods;
  };

  server_settings settings;
  app& a;
  pool_history history;
  pool_pressure pressure;  // /ready's memory of how long pools have been short
  static_handler static_fn;
  std::vector<route> routes;  // in registration order; fixed once the constructor returns
  transport http;

  impl(server_settings s, app& application)
      : settings(std::move(s)),
        a(application),
        history(settings.sample_interval,
                static_cast<std::size_t>(std::max<std::int64_t>(
                    1, settings.history /
                           std::max(settings.sample_interval, std::chrono::milliseconds(1)))),
                [this] {
                  return take_sample(a.pools, a.lane,
                                     std::min<std::chrono::milliseconds>(settings.sample_interval,
                                                                         std::chrono::seconds(1)));
                }),
        http(transport_settings_of(settings), [this](const request& req) { return admit(req); }) {
    add_routes();
  }

  static transport_settings transport_settings_of(const server_settings& s) {
    transport_settings t;
    t.address = s.address;
    t.port = s.port;
    t.worker_threads = std::max<std::size_t>(s.threads, 1);
    t.limits.max_connections = s.max_connections;
    t.limits.max_header_bytes = s.max_header_bytes;
    t.limits.max_header_count = s.max_header_count;
    t.limits.max_body_bytes = s.max_body_bytes;
    t.limits.max_buffered_body_bytes = s.max_buffered_body_bytes;
    t.limits.header_timeout = s.header_timeout;
    t.limits.body_timeout = s.body_timeout;
    t.limits.idle_timeout = s.idle_timeout;
    t.limits.write_timeout = s.write_timeout;
    return t;
  }

  // ---- admission: everything decided from the header, before a body is read ----

  void authorize(const request& req) const {
    if (settings.token.empty()) {
      throw api_error(error_code::forbidden,
                      "no API token configured: mutating calls are refused (set http.token or "
                      "http.token_file)");
    }
    const auto presented = bearer_token(req.header("authorization"));
    if (!presented) {
      throw api_error(error_code::unauthorized,
                      "missing bearer token: send \"Authorization: Bearer <token>\"");
    }
    if (!constant_time_equal(*presented, settings.token)) {
      throw api_error(error_code::unauthorized, "wrong bearer token");
    }
  }

  static void check_params(const request& req, const endpoint& ep) {
    if (ep.any_params) return;
    for (std::size_t i = 0; i < req.query.size(); ++i) {
      const std::string& name = req.query[i].first;
      if (std::find(ep.params.begin(), ep.params.end(), name) == ep.params.end()) {
        std::string known;
        for (const auto p : ep.params)
          known += (known.empty() ? "" : ", ") + std::string(p);
        throw api_error(
            error_code::bad_request,
            "unknown query parameter '" + name.substr(0, 64) + "' (" +
                (known.empty() ? std::string("this endpoint takes none") : "known: " + known) +
                ")");
      }
      for (std::size_t j = 0; j < i; ++j) {
        if (req.query[j].first == name) {
          throw api_error(error_code::bad_request,
                          "query parameter '" + name + "' is given more than once");
        }
      }
    }
  }

  static std::vector<std::string> split_path(std::string_view path) {
    std::vector<std::string> out;
    if (!path.empty() && path.front() == '/') path.remove_prefix(1);
    for (;;) {
      const auto slash = path.find('/');
      out.emplace_back(path.substr(0, slash));
      if (slash == std::string_view::npos) break;
      path.remove_prefix(slash + 1);
    }
    return out;
  }

  // The route whose pattern matches `path`; "{id}" matches a segment of digits.
  const route* match(const std::string& path, route_args& args) const {
    const auto segments = split_path(path);
    for (const auto& r : routes) {
      if (r.segments.size() != segments.size()) continue;
      bool ok = true;
      for (std::size_t i = 0; ok && i < segments.size(); ++i) {
        if (r.segments[i] == "{id}") {
          ok = !segments[i].empty() &&
               std::all_of(segments[i].begin(), segments[i].end(),
                           [](unsigned char c) { return c >= '0' && c <= '9'; });
          if (ok) args.id = segments[i];
        } else {
          ok = r.segments[i] == segments[i];
        }
      }
      if (ok) return &r;
    }
    return nullptr;
  }

  // Runs on the transport's I/O thread for every request, once its header is in: the host
  // check, routing, the method, the token, the query parameters and the Content-Type are all
  // decided here, so a refused request's body is never read (nor "100 Continue" sent).
  admission admit(const request& req) {
    admission out;
    const auto refuse = [&out](response res) {
      out.refusal = std::move(res);
      return std::move(out);
    };
    const auto refuse_error = [&refuse](error_code code, const std::string& message) {
      response res;
      send_error(res, code, message);
      return refuse(std::move(res));
    };
    // A request under a host name this server does not answer to is refused before anything
    // else (DNS rebinding).
    const std::string_view host = req.header("host");
    if (!host_allowed(host, settings.allowed_hosts)) {
      return refuse_error(error_code::forbidden,
                          "host '" + std::string(host.substr(0, 100)) +
                              "' is not allowed; reach this server by IP address or localhost, "
                              "or add the name to http.allowed_hosts");
    }
    route_args args;
    const route* r = match(req.path, args);
    if (r == nullptr) {
      const bool api = req.path.rfind("/api/", 0) == 0 || req.path == "/api";
      if ((req.method == "GET" || req.method == "HEAD") && !api && static_fn) {
        out.run = [this](const request& rq) { return serve_static(rq); };
        return out;
      }
      return refuse_error(error_code::not_found,
                          "no such endpoint: " + req.method + " " + req.path.substr(0, 200));
    }
    const std::string method = req.method == "HEAD" ? "GET" : req.method;
    const auto it = r->methods.find(method);
    if (it == r->methods.end()) {
      std::string allow;
      for (const auto& [name, ep] : r->methods)
        allow += (allow.empty() ? "" : ", ") + name + (name == "GET" ? ", HEAD" : "");
      response res;
      send_error(res, error_code::method_not_allowed,
                 req.method.substr(0, 40) + " is not allowed here; allowed: " + allow);
      res.set_header("Allow", allow);
      return refuse(std::move(res));
    }
    const endpoint& ep = it->second;
    try {
      if (is_mutating(req.method)) authorize(req);
      check_params(req, ep);
      if (req.has_body && (method == "POST" || method == "PUT" || method == "PATCH") &&
          !is_json_media_type(req.header("content-type"))) {
        const auto type = req.header("content-type");
        throw api_error(error_code::unsupported_media_type,
                        "request bodies must be JSON: send Content-Type: application/json" +
                            (type.empty() ? std::string(" (none was sent)")
                                          : " (not '" + std::string(type.substr(0, 100)) + "')"));
      }
    } catch (const api_error& e) {
      return refuse_error(e.code(), e.what());
    }
    out.where = ep.where;
    out.run = [&ep, args](const request& rq) {
      response res;
      try {
        ep.fn(rq, res, args);
      } catch (...) {
        const api_error e = classify(std::current_exception(), rq);
        res = response{};
        send_error(res, e.code(), e.what());
      }
      return res;
    };
    return out;
  }

  void add(const std::string& pattern, const std::string& method, handler_fn fn,
           std::vector<std::string_view> params = {}, lane where = lane::worker) {
    auto it = std::find_if(routes.begin(), routes.end(),
                           [&](const route& r) { return r.pattern == pattern; });
    if (it == routes.end()) {
      routes.push_back({pattern, split_path(pattern), {}});
      it = std::prev(routes.end());
    }
    endpoint ep;
    ep.fn = std::move(fn);
    ep.where = where;
    ep.params = std::move(params);
    it->methods[method] = std::move(ep);
  }

  // A probe: answered on `where`, query parameters ignored.
  void add_probe(const std::string& pattern, handler_fn fn, lane where) {
    add(pattern, "GET", std::move(fn), {}, where);
    routes.back().methods["GET"].any_params = true;
  }

  response serve_static(const request& req) const {
    response res;
    try {
      static_request sr;
      sr.method = req.method;
      sr.path = req.path;
      for (const auto& [k, v] : req.query)
        sr.query.emplace(k, v);
      for (const auto& [k, v] : req.headers)
        sr.headers.emplace(k, v);  // names are lower-case already
      if (auto out = static_fn(sr)) {
        res.status = out->status;
        for (auto& [k, v] : out->headers)
          res.set_header(k, v);
        res.set_content(std::move(out->body), std::move(out->content_type));
        return res;
      }
    } catch (...) {
      const api_error e = classify(std::current_exception(), req);
      res = response{};
      send_error(res, e.code(), e.what());
      return res;
    }
    send_error(res, error_code::not_found,
               "no such endpoint: " + req.method + " " + req.path.substr(0, 200));
    return res;
  }

  // ---- data gathering ----

  // Every pool of the manager, and the lane when it is not one of them, in that order.
  std::vector<pool::pool_stats> all_pool_stats() const {
    auto out = a.pools.status();
    if (a.pools.find(a.lane.name()) != &a.lane) out.push_back(a.lane.stats());
    return out;
  }

  double uptime_s() const {
    return std::chrono::duration<double>(steady_clock::now() - a.started).count();
  }

  // ---- handlers ----

  void add_routes() {
    // /health reads nothing that can block, so the I/O thread answers it at once; /ready waits
    // for the database (at most about ready_timeout) on a lane of its own, never behind API
    // calls on the request threads.
    add_probe(
        "/health",
        [this](const request&, response& res, const route_args&) {
          send_json(res, 200,
                    {{"status", "healthy"},
                     {"uptime_s", uptime_s()},
                     {"version", a.version},
                     {"node_id", a.scheduler.node_id()}});
        },
        lane::io);
    add_probe(
        "/ready", [this](const request&, response& res, const route_args&) { ready(res); },
        lane::probe);
    add_probe(
        "/metrics", [this](const request&, response& res, const route_args&) { metrics(res); },
        lane::worker);

    add("/api/v1/pools", "GET", [this](const request&, response& res, const route_args&) {
      json list = json::array();
      for (const auto& s : all_pool_stats()) {
        json p = json_of(s);
        p["lane"] = s.name == a.lane.name();
        list.push_back(std::move(p));
      }
      send_json(res, 200, {{"pools", std::move(list)}});
    });
    add("/api/v1/pools/history", "GET",
        [this](const request& req, response& res, const route_args&) {
          std::optional<sched::time_point> since;
          if (const auto text = query_param(req, "since")) {
            try {
              since = sched::parse_timestamp(*text);
            } catch (const sched::schedule_error& e) {
              throw api_error(error_code::bad_request, std::string("since: ") + e.what());
            }
          }
          json samples = json::array();
          for (const auto& s : history.samples(since))
            samples.push_back(json_of(s));
          send_json(res, 200,
                    {{"interval_ms", history.interval().count()},
                     {"capacity", history.capacity()},
                     {"samples", std::move(samples)}});
        },
        {"since"});
    add("/api/v1/scheduler", "GET", [this](const request&, response& res, const route_args&) {
      const auto status = a.scheduler.status();
      json node = json_of(status, steady_clock::now(), std::chrono::system_clock::now());
      json nodes = json::array();
      for (const auto& n : a.store.nodes())
        nodes.push_back(json_of(n));
      json queues = json::array();
      for (const auto& q : a.store.queues())
        queues.push_back(json_of(q));
      json flow = json::array();
      for (const auto& f : a.store.flow_usages()) {
        json l = {{"type", f.type}, {"running", f.running}};
        l["max_running"] = f.limit.max_running ? json(*f.limit.max_running) : json(nullptr);
        l["rate"] = f.limit.rate ? json(*f.limit.rate) : json(nullptr);
        l["rate_period_ms"] = f.limit.rate ? json(f.limit.rate_period.count()) : json(nullptr);
        l["started_in_window"] = f.started_in_window;
        l["key"] = f.limit.key.empty() ? json(nullptr) : json(f.limit.key);
        if (!f.limit.key.empty()) {
          json keys = json::array();
          for (const auto& k : f.by_key)
            keys.push_back({{"key", k.key},
                            {"running", k.running},
                            {"started_in_window", k.started_in_window}});
          l["by_key"] = std::move(keys);
        }
        flow.push_back(std::move(l));
      }
      const auto leader = a.store.leader();
      send_json(res, 200,
                {{"node", std::move(node)},
                 {"stats", json_of(a.store.stats())},
                 {"nodes", std::move(nodes)},
                 {"leader", leader ? json(*leader) : json(nullptr)},
                 {"queues", std::move(queues)},
                 {"flow", std::move(flow)}});
    });
    add("/api/v1/cycles", "GET",
        [this](const request& req, response& res, const route_args&) {
          const int limit = limit_param(req);
          send_json(res, 200, page("cycles", a.store.cycles(limit, before_param(req)), limit));
        },
        {"limit", "before"});

    add("/api/v1/tasks", "GET",
        [this](const request& req, response& res, const route_args&) {
          sched::task_filter f;
          f.type = query_param(req, "type");
          f.name = query_param(req, "name");
          if (const auto state = query_param(req, "state")) {
            try {
              f.state = sched::parse_task_state(*state);
            } catch (const std::invalid_argument& e) {
              throw api_error(error_code::bad_request, std::string("state: ") + e.what());
            }
          }
          f.limit = limit_param(req);
          f.before_id = before_param(req);
          send_json(res, 200, page("tasks", a.store.list(f), f.limit));
        },
        {"type", "name", "state", "limit", "before"});
    add("/api/v1/tasks", "POST",
        [this](const request& req, response& res, const route_args&) { create(req, res); });
    add("/api/v1/graphs", "POST",
        [this](const request& req, response& res, const route_args&) { create_graph(req, res); });
    add("/api/v1/tasks/{id}", "GET", [this](const request&, response& res, const route_args& m) {
      const auto id = path_id(m);
      const auto t = a.store.get(id);
      if (!t) throw api_error(error_code::not_found, "no task with id " + std::to_string(id));
      json body = json_of(*t);
      // The tasks it runs after and the tasks that run after it (docs/flow-control.md).
      const auto neighbours = [this](const std::vector<std::int64_t>& ids) {
        json out = json::array();
        for (const auto other : ids) {
          if (const auto n = a.store.get(other)) {
            out.push_back({{"id", n->id},
                           {"name", n->name ? json(*n->name) : json(nullptr)},
                           {"type", n->type},
                           {"state", sched::to_string(n->state)}});
          }
        }
        return out;
      };
      body["upstream"] = neighbours(a.store.upstream_of(id));
      body["downstream"] = neighbours(a.store.downstream_of(id));
      send_json(res, 200, body);
    });
    add("/api/v1/tasks/{id}/runs", "GET",
        [this](const request& req, response& res, const route_args& m) {
          const auto id = path_id(m);
          const int limit = limit_param(req);
          const auto before = before_param(req);
          if (!a.store.get(id)) {
            throw api_error(error_code::not_found, "no task with id " + std::to_string(id));
          }
          send_json(res, 200, page("runs", a.store.runs(id, limit, before), limit));
        },
        {"limit", "before"});
    for (const auto& action : actions) {
      add(std::string("/api/v1/tasks/{id}/") + action.name, "POST",
          [this, &action](const request& req, response& res, const route_args& m) {
            change(req, res, m, action);
          });
    }
  }

  void ready(response& res) {
    std::vector<std::pair<std::string, check_result>> checks;
    checks.emplace_back("pools", pressure.check(all_pool_stats(), steady_clock::now()));
    checks.emplace_back("scheduler",
                        check_scheduler(a.scheduler.status(), a.scheduler.config().idle_poll_max,
                                        steady_clock::now()));
    checks.emplace_back("database", check_database(a.lane, settings.ready_timeout));
    bool ok = false;
    json body = readiness_json(checks, ok);
    send_json(res, ok ? 200 : 503, body);
  }

  void metrics(response& res) {
    metrics_snapshot m;
    m.version = a.version;
    m.uptime_s = uptime_s();
    m.pools = all_pool_stats();
    m.scheduler = a.scheduler.status();
    const auto now = steady_clock::now();
    if (m.scheduler.last_cycle_at != steady_clock::time_point{}) {
      m.last_cycle_age_s = std::chrono::duration<double>(now - m.scheduler.last_cycle_at).count();
    }
    m.server = history.latest();
    m.http = http.stats();
    m.http_max_connections = settings.max_connections;
    // The scrape must not queue behind the scheduler for the lane: read the tables only when
    // a connection is idle, or can be opened and the last attempt to open one worked.
    const auto lane = a.lane.stats();
    const bool lane_free =
        !lane.closed && !lane.saturated &&
        (lane.checked_in > 0 || (lane.open < lane.max && lane.last_connect_error.empty()));
    if (lane_free) {
      try {
        m.stats = a.store.stats();
        m.queues = a.store.queues();
        m.nodes = a.store.nodes();
        m.flow = a.store.flow_usages();
        m.database_ok = true;
      } catch (const std::exception& e) {
        m.stats.reset();
        m.queues.reset();
        m.nodes.reset();
        m.flow.reset();
        log(log_level::warn, "http", std::string("/metrics could not read the store: ") + e.what());
      }
    }
    res.status = 200;
    res.set_content(render_metrics(m), std::string(metrics_content_type));
    res.set_header("Cache-Control", "no-store");
  }

  // POST /api/v1/tasks. An Idempotency-Key header is the task's unique_key: while the task it
  // created is live, the same key gets that task back (200) instead of a new one (201).
  void create(const request& req, response& res) {
    sched::task_spec spec = task_spec_from_json(std::string_view(req.body), a.type_defaults);
    if (req.has_header("idempotency-key")) {
      if (req.header_count("idempotency-key") > 1) {
        throw api_error(error_code::bad_request, "Idempotency-Key: given more than once");
      }
      const std::string key(req.header("idempotency-key"));
      const bool visible_ascii = std::all_of(key.begin(), key.end(), [](char c) {
        return static_cast<unsigned char>(c) >= 0x20 && static_cast<unsigned char>(c) < 0x7f;
      });
      if (key.empty() || key.size() > 200 || !visible_ascii) {
        throw api_error(error_code::bad_request,
                        "Idempotency-Key: must be 1-200 printable ASCII characters");
      }
      if (spec.unique_key && *spec.unique_key != key) {
        throw api_error(error_code::bad_request,
                        "Idempotency-Key: differs from the body's unique_key (give one, or the "
                        "same value in both)");
      }
      spec.unique_key = key;
    }
    if (a.validate_payload) {
      try {
        a.validate_payload(spec.type, spec.payload);
      } catch (const std::exception& e) {
        throw api_error(error_code::bad_request, e.what());
      }
    }
    const sched::add_result added = a.store.add(spec);
    if (added.outcome != sched::add_outcome::existing) a.scheduler.wake();
    const auto t = a.store.get(added.id);
    res.set_header("Location", "/api/v1/tasks/" + std::to_string(added.id));
    res.set_header("Sluice-Task-Outcome", std::string(sched::to_string(added.outcome)));
    send_json(res, added.created() ? 201 : 200, t ? json_of(*t) : json{{"id", added.id}});
  }

  // POST /api/v1/graphs: {"tasks": [{"ref": "a", "after": ["b"], "after_ids": [17],
  // "on_dependency_failure": "cancel" | "run", ...the task JSON of POST /api/v1/tasks}]}, added in
  // one transaction (docs/flow-control.md). 201 {"tasks": {"<ref>": <id>, ...}}; a bad task, an
  // unknown ref or id, or a cycle is a 400 naming it, and nothing is added.
  void create_graph(const request& req, response& res) {
    const json body = parse_json_body(req.body);
    if (!body.is_object() || !body.contains("tasks") || !body["tasks"].is_array()) {
      throw api_error(error_code::bad_request, "expected an object {\"tasks\": [...]}");
    }
    for (const auto& [key, value] : body.items()) {
      if (key != "tasks")
        throw api_error(error_code::bad_request, "unknown field '" + key + "' (known: tasks)");
    }
    const auto& items = body["tasks"];
    if (items.empty() || items.size() > 10000) {
      throw api_error(error_code::bad_request, "tasks: 1 to 10000 tasks per graph");
    }
    std::vector<sched::graph_task> graph;
    graph.reserve(items.size());
    for (std::size_t i = 0; i < items.size(); ++i) {
      const std::string at = "tasks[" + std::to_string(i) + "]: ";
      if (!items[i].is_object())
        throw api_error(error_code::bad_request, at + "expected an object");
      json t = items[i];
      const auto take = [&t](const char* key) {
        json v;
        if (t.contains(key)) {
          v = t[key];
          t.erase(key);
        }
        return v;
      };
      sched::graph_task g;
      const json ref = take("ref");
      if (!ref.is_string()) throw api_error(error_code::bad_request, at + "ref: expected a string");
      g.ref = ref.get<std::string>();
      const json after = take("after");
      if (!after.is_null()) {
        if (!after.is_array())
          throw api_error(error_code::bad_request, at + "after: expected an array of refs");
        for (const auto& r : after) {
          if (!r.is_string())
            throw api_error(error_code::bad_request, at + "after: expected an array of refs");
          g.after.push_back(r.get<std::string>());
        }
      }
      const json after_ids = take("after_ids");
      if (!after_ids.is_null()) {
        if (!after_ids.is_array())
          throw api_error(error_code::bad_request, at + "after_ids: expected an array of ids");
        for (const auto& id : after_ids) {
          if (!id.is_number_integer() || id.get<std::int64_t>() < 1)
            throw api_error(error_code::bad_request,
                            at + "after_ids: expected an array of positive task ids");
          g.after_ids.push_back(id.get<std::int64_t>());
        }
      }
      const json policy = take("on_dependency_failure");
      try {
        if (!policy.is_null()) {
          if (!policy.is_string())
            throw sched::schedule_error(
                "on_dependency_failure: expected "
                "\"cancel\" or \"run\"");
          g.on_failure = sched::parse_dependency_failure(policy.get<std::string>());
        }
        g.spec = task_spec_from_json(t, a.type_defaults);
        if (a.validate_payload) a.validate_payload(g.spec.type, g.spec.payload);
      } catch (const std::exception& e) {
        throw api_error(error_code::bad_request, at + e.what());
      }
      graph.push_back(std::move(g));
    }
    std::vector<std::int64_t> ids;
    try {
      ids = a.store.add_graph(graph);
    } catch (const sched::schedule_error& e) {
      throw api_error(error_code::bad_request, e.what());
    } catch (const sched::conflict_error& e) {
      throw api_error(error_code::conflict, e.what());
    }
    a.scheduler.wake();
    json out = json::object();
    for (std::size_t i = 0; i < graph.size(); ++i)
      out[graph[i].ref] = ids[i];
    send_json(res, 201, {{"tasks", std::move(out)}});
  }

  void change(const request& req, response& res, const route_args& m, const action_info& action) {
    const auto id = path_id(m);
    const std::string name = action.name;
    sched::change_result result{};
    if (name == "reschedule") {
      result = a.store.reschedule(id, reschedule_time_from_json(parse_json_body(req.body)));
    } else {
      require_empty_body(req);
      if (name == "pause") {
        result = a.store.pause(id);
      } else if (name == "resume") {
        result = a.store.resume(id);
      } else if (name == "cancel") {
        result = a.store.cancel(id);
      } else {
        result = a.store.run_now(id);
      }
    }
    switch (result) {
      case sched::change_result::not_found:
        throw api_error(error_code::not_found, "no task with id " + std::to_string(id));
      case sched::change_result::wrong_state: {
        const auto t = a.store.get(id);
        const std::string state = t ? std::string(sched::to_string(t->state)) : "gone";
        throw api_error(error_code::conflict, "task " + std::to_string(id) + " is " + state + "; " +
                                                  name + " applies to " + action.applies_to +
                                                  " tasks");
      }
      case sched::change_result::done:
        break;
    }
    if (action.wakes) a.scheduler.wake();
    const auto t = a.store.get(id);
    if (!t) throw api_error(error_code::not_found, "no task with id " + std::to_string(id));
    send_json(res, 200, json_of(*t));
  }
};

server::server(server_settings settings, app& application)
    : impl_(std::make_unique<impl>(std::move(settings), application)) {}

server::~server() {
  stop();
}

void server::set_static_handler(static_handler handler) {
  impl_->static_fn = std::move(handler);
}

void server::start() {
  impl& d = *impl_;
  d.http.start();  // throws when the address cannot be bound; idempotent
  d.history.start();
  log(log_level::info, "http",
      "listening on " + d.settings.address + ":" + std::to_string(d.http.port()));
}

void server::stop() {
  impl& d = *impl_;
  d.http.stop();
  d.history.stop();
}

int server::port() const noexcept {
  return impl_->http.port();
}

transport_stats server::connection_stats() const noexcept {
  return impl_->http.stats();
}

const server_settings& server::settings() const noexcept {
  return impl_->settings;
}

const pool_history& server::history() const noexcept {
  return impl_->history;
}

}  // namespace sluice::http
