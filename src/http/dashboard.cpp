#include "http/dashboard.hpp"

#include <algorithm>
#include <string>

namespace sluice::http {

namespace detail {

std::string_view web_content_type(std::string_view name) noexcept {
  struct mapping {
    std::string_view extension;
    std::string_view type;
  };
  static constexpr mapping types[] = {
      {".html", "text/html; charset=utf-8"},
      {".js", "text/javascript; charset=utf-8"},
      {".css", "text/css; charset=utf-8"},
      {".svg", "image/svg+xml"},
      {".png", "image/png"},
      {".ico", "image/x-icon"},
      {".json", "application/json"},
      {".txt", "text/plain; charset=utf-8"},
  };
  for (const auto& [extension, type] : types) {
    if (name.size() > extension.size() && name.ends_with(extension)) return type;
  }
  return "application/octet-stream";
}

}  // namespace detail

namespace {

// The page loads only its own scripts, styles and API (no inline script, no CDN), and may not
// be framed: a defence in depth should a task's name or error ever slip past the page's
// escaping. Chart.js styles its canvases through the CSSOM, which style-src does not restrict.
constexpr const char* content_security_policy =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

// True when an If-None-Match header lists `etag` (or is "*"). Weak validators ("W/...") match
// their strong form, as RFC 9110 specifies for If-None-Match.
bool etag_matches(std::string_view header, std::string_view etag) {
  while (!header.empty()) {
    const auto comma = header.find(',');
    std::string_view item = header.substr(0, comma);
    header = comma == std::string_view::npos ? std::string_view() : header.substr(comma + 1);
    const auto first = item.find_first_not_of(" \t");
    if (first == std::string_view::npos) continue;
    item = item.substr(first, item.find_last_not_of(" \t") - first + 1);
    if (item == "*") return true;
    if (item.starts_with("W/")) item.remove_prefix(2);
    if (item == etag) return true;
  }
  return false;
}

}  // namespace

static_handler make_dashboard_handler() {
  return [](const static_request& request) -> std::optional<static_response> {
    if (request.method != "GET" && request.method != "HEAD") return std::nullopt;
    if (!request.path.starts_with('/')) return std::nullopt;
    const std::string_view name = request.path == "/" ? std::string_view("index.html")
                                                      : std::string_view(request.path).substr(1);
    const auto assets = detail::embedded_web_assets();
    const auto it = std::find_if(assets.begin(), assets.end(),
                                 [&](const detail::web_asset& a) { return a.name == name; });
    if (it == assets.end()) return std::nullopt;

    static_response out;
    out.content_type = std::string(detail::web_content_type(it->name));
    out.headers = {
        {"ETag", std::string(it->etag)},
        // Revalidate every time: the 304 is cheap, and a restarted daemon of another version
        // must never be paired with the old page's script.
        {"Cache-Control", "no-cache"},
        {"Content-Security-Policy", content_security_policy},
        {"X-Frame-Options", "DENY"},
        {"Referrer-Policy", "no-referrer"},
    };
    if (etag_matches(request.header("if-none-match"), it->etag)) {
      out.status = 304;
      return out;
    }
    // HEAD gets the body too: the server drops it and keeps the Content-Length it implies.
    out.body.assign(reinterpret_cast<const char*>(it->data), it->size);
    return out;
  };
}

}  // namespace sluice::http
