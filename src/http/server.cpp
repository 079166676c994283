#include "http/server.hpp"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <regex>
#include <stdexcept>
#include <system_error>
#include <thread>

#include <httplib.h>
#include <sys/socket.h>

#include "http/auth.hpp"
#include "http/errors.hpp"
#include "http/json.hpp"
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

using httplib::Request;
using httplib::Response;
using std::chrono::steady_clock;

constexpr const char* json_content_type = "application/json";

void send_json(Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(dump(body), json_content_type);
  res.set_header("Cache-Control", "no-store");
}

void send_error(Response& res, error_code code, std::string_view message) {
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
api_error classify(const std::exception_ptr& ep, const Request& req) {
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

std::optional<std::string> query_param(const Request& req, const char* name) {
  if (!req.has_param(name)) return std::nullopt;
  return req.get_param_value(name);
}

int limit_param(const Request& req) {
  const auto text = query_param(req, "limit");
  if (!text) return 50;
  const auto v = parse_positive(*text);
  if (!v || *v > 1000) {
    throw api_error(error_code::bad_request, "limit: must be an integer between 1 and 1000");
  }
  return static_cast<int>(*v);
}

std::optional<std::int64_t> before_param(const Request& req) {
  const auto text = query_param(req, "before");
  if (!text) return std::nullopt;
  const auto v = parse_positive(*text);
  if (!v) {
    throw api_error(error_code::bad_request,
                    "before: must be a positive integer (the \"next\" of the previous page)");
  }
  return v;
}

std::int64_t path_id(const std::smatch& m) {
  const auto v = parse_positive(m[1].str());
  if (!v) throw api_error(error_code::not_found, "no task with id " + m[1].str());
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
void require_empty_body(const Request& req) {
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
  using handler_fn = std::function<void(const Request&, Response&, const std::smatch&)>;
  using method_map = std::map<std::string, handler_fn>;

  server_settings settings;
  app& a;
  pool_history history;
  pool_pressure pressure;  // /ready's memory of how long pools have been short
  httplib::Server http;
  static_handler static_fn;
  struct route {
    std::string pattern;
    std::regex re;
    method_map methods;
  };
  std::vector<route> routes;  // in registration order; fixed once the constructor returns

  std::mutex lifecycle_mutex;
  std::thread thread;  // guarded by lifecycle_mutex
  std::atomic<int> bound_port{0};
  std::mutex done_mutex;
  std::condition_variable done_cv;
  bool listen_done = false;  // guarded by done_mutex: the accept loop has returned

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
                }) {
    bound_port = settings.port;
    configure();
    add_routes();
  }

  // ---- plumbing ----

  void configure() {
    const std::size_t threads = std::max<std::size_t>(settings.threads, 1);
    // httplib takes ownership of the queue it is handed.
    http.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };  // NOLINT
    http.set_payload_max_length(settings.max_body_bytes);
    // An idle keep-alive connection holds a worker until this passes, and stop() waits for it.
    http.set_keep_alive_timeout(2);
    http.set_tcp_nodelay(true);
    // httplib's default adds SO_REUSEPORT, which would let a second daemon bind the same port
    // silently; SO_REUSEADDR alone still allows a quick restart.
    http.set_socket_options([](socket_t sock) {
      int yes = 1;
      ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    });
    http.set_default_headers({{"X-Content-Type-Options", "nosniff"}});

    // Errors raised by httplib itself (413, malformed requests, unknown methods) get the API's
    // JSON body; responses a handler already wrote are left alone.
    httplib::Server::HandlerWithResponse on_error = [this](const Request&, Response& res) {
      if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
      const error_code code = code_for_status(res.status);
      std::string message;
      switch (code) {
        case error_code::payload_too_large:
          message = "request body is larger than " + std::to_string(settings.max_body_bytes) +
                    " bytes (http.max_body_bytes)";
          break;
        case error_code::not_found:
          message = "no such endpoint";
          break;
        case error_code::bad_request:
          message = "malformed HTTP request";
          break;
        default:
          message = "request failed";
      }
      const int status = res.status;
      send_json(res, status, error_json(code, message));
      return httplib::Server::HandlerResponse::Handled;
    };
    http.set_error_handler(std::move(on_error));
    http.set_exception_handler([](const Request& req, Response& res, const std::exception_ptr& ep) {
      const api_error e = classify(ep, req);
      send_error(res, e.code(), e.what());
    });
    http.set_logger([](const Request& req, const Response& res) {
      log(log_level::debug, "http", req.method + " " + req.path + " " + std::to_string(res.status));
    });
  }

  void authorize(const Request& req) const {
    if (settings.token.empty()) {
      throw api_error(error_code::forbidden,
                      "no API token configured: mutating calls are refused (set http.token or "
                      "http.token_file)");
    }
    const std::string header = req.get_header_value("Authorization");
    const auto presented = bearer_token(header);  // a view into `header`
    if (!presented) {
      throw api_error(error_code::unauthorized,
                      "missing bearer token: send \"Authorization: Bearer <token>\"");
    }
    if (!constant_time_equal(*presented, settings.token)) {
      throw api_error(error_code::unauthorized, "wrong bearer token");
    }
  }

  void add(const std::string& pattern, const std::string& method, handler_fn fn) {
    auto it = std::find_if(routes.begin(), routes.end(),
                           [&](const route& r) { return r.pattern == pattern; });
    if (it == routes.end()) {
      routes.push_back({pattern, std::regex(pattern), {}});
      it = std::prev(routes.end());
    }
    it->methods[method] = std::move(fn);
  }

  // Routes the request; false when no route's pattern matches the path. A known path with
  // another method is answered 405.
  bool dispatch(const Request& req, Response& res) {
    for (const auto& r : routes) {
      std::smatch m;
      if (!std::regex_match(req.path, m, r.re)) continue;
      const std::string method = req.method == "HEAD" ? "GET" : req.method;
      const auto it = r.methods.find(method);
      if (it == r.methods.end()) {
        std::string allow;
        for (const auto& [name, fn] : r.methods)
          allow += (allow.empty() ? "" : ", ") + name + (name == "GET" ? ", HEAD" : "");
        send_error(res, error_code::method_not_allowed,
                   req.method + " is not allowed here; allowed: " + allow);
        res.set_header("Allow", allow);
        return true;
      }
      try {
        if (is_mutating(req.method)) authorize(req);
        it->second(req, res, m);
      } catch (...) {
        const api_error e = classify(std::current_exception(), req);
        send_error(res, e.code(), e.what());
      }
      return true;
    }
    return false;
  }

  void install_routes() {
    // httplib matches and reads the body; our table does the routing. GET/HEAD that no route
    // takes goes to the dashboard hook.
    http.Get(".*", [this](const Request& req, Response& res) {
      if (!dispatch(req, res)) serve_static(req, res);
    });
    const auto other = [this](const Request& req, Response& res) {
      if (!dispatch(req, res)) {
        send_error(res, error_code::not_found, "no such endpoint: " + req.method + " " + req.path);
      }
    };
    http.Post(".*", other);
    http.Put(".*", other);
    http.Patch(".*", other);
    http.Delete(".*", other);
    // httplib 0.11 waits for a body until the read timeout when a POST/PUT/PATCH has neither
    // Content-Length nor Transfer-Encoding (curl -X POST sends neither), then answers 400. By
    // RFC 9112 such a request has an empty body: route it here, before httplib tries to read.
    httplib::Server::HandlerWithResponse bodyless = [this, other](const Request& req,
                                                                  Response& res) {
      // Before anything else, and before a body is read: a request under a host name this
      // server does not answer to is refused (DNS rebinding).
      const std::string host = req.get_header_value("Host");
      if (!host_allowed(host, settings.allowed_hosts)) {
        send_error(res, error_code::forbidden,
                   "host '" + host.substr(0, 100) +
                       "' is not allowed; reach this server by IP address or localhost, or add "
                       "the name to http.allowed_hosts");
        return httplib::Server::HandlerResponse::Handled;
      }
      const bool expects_body =
          req.method == "POST" || req.method == "PUT" || req.method == "PATCH";
      if (!expects_body || req.has_header("Content-Length") ||
          req.has_header("Transfer-Encoding")) {
        return httplib::Server::HandlerResponse::Unhandled;
      }
      other(req, res);
      return httplib::Server::HandlerResponse::Handled;
    };
    http.set_pre_routing_handler(std::move(bodyless));
  }

  void serve_static(const Request& req, Response& res) {
    const bool api = req.path.rfind("/api/", 0) == 0 || req.path == "/api";
    if (!api && static_fn) {
      try {
        static_request sr;
        sr.method = req.method;
        sr.path = req.path;
        for (const auto& [k, v] : req.params)
          sr.query.emplace(k, v);
        for (const auto& [k, v] : req.headers) {
          std::string lower = k;
          std::transform(lower.begin(), lower.end(), lower.begin(),
                         [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
          sr.headers.emplace(std::move(lower), v);
        }
        if (auto out = static_fn(sr)) {
          res.status = out->status;
          for (const auto& [k, v] : out->headers)
            res.set_header(k, v);
          res.set_content(out->body, out->content_type);
          return;
        }
      } catch (...) {
        const api_error e = classify(std::current_exception(), req);
        send_error(res, e.code(), e.what());
        return;
      }
    }
    send_error(res, error_code::not_found, "no such endpoint: " + req.method + " " + req.path);
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
    add("/health", "GET", [this](const Request&, Response& res, const std::smatch&) {
      send_json(res, 200,
                {{"status", "healthy"},
                 {"uptime_s", uptime_s()},
                 {"version", a.version},
                 {"node_id", a.scheduler.node_id()}});
    });
    add("/ready", "GET", [this](const Request&, Response& res, const std::smatch&) { ready(res); });
    add("/metrics", "GET",
        [this](const Request&, Response& res, const std::smatch&) { metrics(res); });

    add("/api/v1/pools", "GET", [this](const Request&, Response& res, const std::smatch&) {
      json list = json::array();
      for (const auto& s : all_pool_stats()) {
        json p = json_of(s);
        p["lane"] = s.name == a.lane.name();
        list.push_back(std::move(p));
      }
      send_json(res, 200, {{"pools", std::move(list)}});
    });
    add("/api/v1/pools/history", "GET",
        [this](const Request& req, Response& res, const std::smatch&) {
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
        });
    add("/api/v1/scheduler", "GET", [this](const Request&, Response& res, const std::smatch&) {
      const auto status = a.scheduler.status();
      json node = json_of(status, steady_clock::now(), std::chrono::system_clock::now());
      json nodes = json::array();
      for (const auto& n : a.store.nodes())
        nodes.push_back(json_of(n));
      json queues = json::array();
      for (const auto& q : a.store.queues())
        queues.push_back(json_of(q));
      const auto leader = a.store.leader();
      send_json(res, 200,
                {{"node", std::move(node)},
                 {"stats", json_of(a.store.stats())},
                 {"nodes", std::move(nodes)},
                 {"leader", leader ? json(*leader) : json(nullptr)},
                 {"queues", std::move(queues)}});
    });
    add("/api/v1/cycles", "GET", [this](const Request& req, Response& res, const std::smatch&) {
      const int limit = limit_param(req);
      send_json(res, 200, page("cycles", a.store.cycles(limit, before_param(req)), limit));
    });

    add("/api/v1/tasks", "GET", [this](const Request& req, Response& res, const std::smatch&) {
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
    });
    add("/api/v1/tasks", "POST",
        [this](const Request& req, Response& res, const std::smatch&) { create(req, res); });
    add(R"(/api/v1/tasks/(\d+))", "GET",
        [this](const Request&, Response& res, const std::smatch& m) {
          const auto id = path_id(m);
          const auto t = a.store.get(id);
          if (!t) throw api_error(error_code::not_found, "no task with id " + std::to_string(id));
          send_json(res, 200, json_of(*t));
        });
    add(R"(/api/v1/tasks/(\d+)/runs)", "GET",
        [this](const Request& req, Response& res, const std::smatch& m) {
          const auto id = path_id(m);
          const int limit = limit_param(req);
          const auto before = before_param(req);
          if (!a.store.get(id)) {
            throw api_error(error_code::not_found, "no task with id " + std::to_string(id));
          }
          send_json(res, 200, page("runs", a.store.runs(id, limit, before), limit));
        });
    for (const auto& action : actions) {
      add(std::string(R"(/api/v1/tasks/(\d+)/)") + action.name, "POST",
          [this, &action](const Request& req, Response& res, const std::smatch& m) {
            change(req, res, m, action);
          });
    }
    install_routes();
  }

  void ready(Response& res) {
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

  void metrics(Response& res) {
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
        m.database_ok = true;
      } catch (const std::exception& e) {
        m.stats.reset();
        m.queues.reset();
        m.nodes.reset();
        log(log_level::warn, "http", std::string("/metrics could not read the store: ") + e.what());
      }
    }
    res.status = 200;
    res.set_content(render_metrics(m), std::string(metrics_content_type));
    res.set_header("Cache-Control", "no-store");
  }

  void create(const Request& req, Response& res) {
    const sched::task_spec spec = task_spec_from_json(std::string_view(req.body), a.type_defaults);
    if (a.validate_payload) {
      try {
        a.validate_payload(spec.type, spec.payload);
      } catch (const std::exception& e) {
        throw api_error(error_code::bad_request, e.what());
      }
    }
    const std::int64_t id = a.store.create(spec);
    a.scheduler.wake();
    const auto t = a.store.get(id);
    res.set_header("Location", "/api/v1/tasks/" + std::to_string(id));
    send_json(res, 201, t ? json_of(*t) : json{{"id", id}});
  }

  void change(const Request& req, Response& res, const std::smatch& m, const action_info& action) {
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
  const std::scoped_lock lock(d.lifecycle_mutex);
  if (d.thread.joinable()) return;
  const auto& s = d.settings;
  errno = 0;
  int port = -1;
  if (s.port == 0) {
    port = d.http.bind_to_any_port(s.address);
  } else if (d.http.bind_to_port(s.address, s.port)) {
    port = s.port;
  }
  if (port < 0) {
    const int err = errno;
    throw std::runtime_error(
        "http: cannot listen on " + s.address + ":" + std::to_string(s.port) + ": " +
        (err != 0 ? std::generic_category().message(err) : std::string("bind failed")) +
        " (is another process using the port? set http.address/http.port)");
  }
  d.bound_port = port;
  {
    const std::scoped_lock done_lock(d.done_mutex);
    d.listen_done = false;
  }
  d.thread = std::thread([&d] {
    d.http.listen_after_bind();
    {
      const std::scoped_lock done_lock(d.done_mutex);
      d.listen_done = true;
    }
    d.done_cv.notify_all();
  });
  // The socket is already listening (bind_to_port listens), so clients can connect now; stop()
  // copes with the accept loop not having started yet.
  d.history.start();
  log(log_level::info, "http", "listening on " + s.address + ":" + std::to_string(port));
}

void server::stop() {
  impl& d = *impl_;
  const std::scoped_lock lock(d.lifecycle_mutex);
  if (d.thread.joinable()) {
    // httplib's stop() does nothing until the accept loop has set its running flag, so a stop()
    // racing a start() is repeated until the loop is seen to end.
    for (;;) {
      d.http.stop();
      std::unique_lock done_lock(d.done_mutex);
      if (d.done_cv.wait_for(done_lock, std::chrono::milliseconds(50),
                             [&d] { return d.listen_done; })) {
        break;
      }
    }
    d.thread.join();
  }
  d.history.stop();
}

int server::port() const noexcept {
  return impl_->bound_port;
}

const server_settings& server::settings() const noexcept {
  return impl_->settings;
}

const pool_history& server::history() const noexcept {
  return impl_->history;
}

}  // namespace sluice::http
