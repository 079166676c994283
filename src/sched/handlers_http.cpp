// The `http` handler: one request through libcurl's easy API, bounded by the task's deadline and
// aborted when its token is cancelled.

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstddef>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include <curl/curl.h>

#include "sched/handlers_common.hpp"
#include "sluice/sched/handlers.hpp"
#include "sluice/version.hpp"

namespace sluice::sched {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;
using namespace std::chrono_literals;

// curl_global_init is not thread-safe and must run once before any other libcurl call.
CURLcode global_init() {
  static std::once_flag once;
  static CURLcode result = CURLE_OK;
  std::call_once(once, [] { result = curl_global_init(CURL_GLOBAL_DEFAULT); });
  return result;
}

struct easy_deleter {
  void operator()(CURL* c) const noexcept { curl_easy_cleanup(c); }
};
struct slist_deleter {
  void operator()(curl_slist* l) const noexcept { curl_slist_free_all(l); }
};
using easy_ptr = std::unique_ptr<CURL, easy_deleter>;
using slist_ptr = std::unique_ptr<curl_slist, slist_deleter>;

// What the callbacks see during curl_easy_perform.
struct transfer_state {
  const cancel_token* token = nullptr;
  std::size_t max_excerpt = 0;
  std::string excerpt;
  std::size_t body_bytes = 0;
  bool cancelled = false;
};

// Keeps the first max_excerpt bytes and accepts (discards) the rest, so a large response is
// still read to the end and the status stays meaningful.
std::size_t on_body(char* data, std::size_t size, std::size_t count, void* user) {
  auto* state = static_cast<transfer_state*>(user);
  const std::size_t n = size * count;
  state->body_bytes += n;
  if (state->excerpt.size() < state->max_excerpt)
    state->excerpt.append(data, std::min(n, state->max_excerpt - state->excerpt.size()));
  return n;
}

// libcurl calls this often while data flows and about once a second while it waits; a non-zero
// return aborts the transfer with CURLE_ABORTED_BY_CALLBACK.
int on_progress(void* user, curl_off_t /*dltotal*/, curl_off_t /*dlnow*/, curl_off_t /*ultotal*/,
                curl_off_t /*ulnow*/) {
  auto* state = static_cast<transfer_state*>(user);
  if (state->token->cancelled()) {
    state->cancelled = true;
    return 1;
  }
  return 0;
}

bool has_header(const detail::http_payload& p, std::string_view name) {
  return std::any_of(p.headers.begin(), p.headers.end(), [&](const auto& h) {
    return std::equal(h.first.begin(), h.first.end(), name.begin(), name.end(), [](char a, char b) {
      return std::tolower(static_cast<unsigned char>(a)) ==
             std::tolower(static_cast<unsigned char>(b));
    });
  });
}

bool expected(const detail::http_payload& p, long status) {
  if (p.expect_status.empty()) return status >= 200 && status <= 299;
  return std::find(p.expect_status.begin(), p.expect_status.end(), status) != p.expect_status.end();
}

class http_runner {
 public:
  explicit http_runner(std::size_t max_body_excerpt) : max_body_excerpt_(max_body_excerpt) {}

  handler_result operator()(task_context& ctx) const {
    detail::http_payload p;
    try {
      p = detail::parse_http_payload(ctx.payload());
    } catch (const schedule_error& e) {
      return handler_result::failure(e.what());
    }
    // Only the redacted form of the URL ever appears in a message or a detail.
    const std::string where = p.method + " " + detail::redact_url(p.url);

    const cancel_token& token = ctx.cancel();
    std::optional<milliseconds> limit = p.timeout;
    if (const auto deadline = detail::deadline_of(token)) {
      // Rounded up: a transfer cut at this limit ends at or past the task's deadline, which the
      // engine records as timed_out rather than failed.
      const auto left = std::chrono::ceil<milliseconds>(*deadline - steady_clock::now());
      if (left <= 0ms)
        return handler_result::failure("HTTP " + where + ": timed out before the request was sent");
      limit = limit ? std::min(*limit, left) : left;
    }
    if (token.cancelled())
      return handler_result::failure("HTTP " + where + ": cancelled before the request was sent");

    if (const CURLcode rc = global_init(); rc != CURLE_OK)
      return handler_result::failure(std::string("libcurl could not start: ") +
                                     curl_easy_strerror(rc));

    // Everything the handle points to is declared before it, so it outlives the handle.
    transfer_state state;
    state.token = &token;
    state.max_excerpt = max_body_excerpt_;
    char error_buffer[CURL_ERROR_SIZE] = {};
    slist_ptr headers;
    const auto add_header = [&headers](const std::string& line) {
      curl_slist* next = curl_slist_append(headers.get(), line.c_str());
      if (next == nullptr) throw std::bad_alloc();
      static_cast<void>(headers.release());
      headers.reset(next);
    };
    for (const auto& [name, value] : p.headers)
      add_header(value.empty() ? name + ";" : name + ": " + value);  // "Name;" sends it empty
    // libcurl would otherwise wait up to a second for "100 Continue" before sending larger
    // bodies, and label every body as a form; send exactly what the payload says instead.
    if (!has_header(p, "Expect")) add_header("Expect:");
    if (p.body && !has_header(p, "Content-Type")) add_header("Content-Type:");

    const easy_ptr easy(curl_easy_init());
    if (!easy) return handler_result::failure("libcurl could not create a handle");
    CURL* h = easy.get();

    curl_easy_setopt(h, CURLOPT_URL, p.url.c_str());
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, p.follow_redirects ? 1L : 0L);
    curl_easy_setopt(h, CURLOPT_MAXREDIRS, 10L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);  // no SIGALRM for DNS timeouts in a threaded daemon
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, error_buffer);
    curl_easy_setopt(h, CURLOPT_USERAGENT, (std::string("sluice/") + version_string).c_str());
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers.get());
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &state);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, &state);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    if (limit) {
      // At least 1 ms: 0 would mean "no timeout" to libcurl.
      const long ms = static_cast<long>(std::max<milliseconds::rep>(limit->count(), 1));
      curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, ms);
      curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, ms);
    }

    const bool sends_body =
        p.body.has_value() || p.method == "POST" || p.method == "PUT" || p.method == "PATCH";
    if (p.method == "HEAD") {
      curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    } else if (sends_body) {
      static const std::string empty;
      const std::string& body = p.body ? *p.body : empty;
      curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
      curl_easy_setopt(h, CURLOPT_POSTFIELDS, body.data());
      if (p.method != "POST") curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, p.method.c_str());
    } else if (p.method != "GET") {
      curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, p.method.c_str());
    }

    const auto started = steady_clock::now();
    const CURLcode rc = curl_easy_perform(h);
    const auto elapsed_ms =
        std::chrono::duration_cast<milliseconds>(steady_clock::now() - started).count();

    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    nlohmann::json detail = {{"status", nullptr},
                             {"body_excerpt", state.excerpt},
                             {"body_bytes", state.body_bytes},
                             {"elapsed_ms", elapsed_ms}};
    if (status != 0) detail["status"] = status;

    if (rc != CURLE_OK) {
      std::string why;
      if (rc == CURLE_ABORTED_BY_CALLBACK && state.cancelled) {
        why = "cancelled after " + std::to_string(elapsed_ms) + " ms";
      } else if (rc == CURLE_OPERATION_TIMEDOUT) {
        why = "timed out after " + std::to_string(elapsed_ms) + " ms";
      } else {
        why = error_buffer[0] != '\0' ? error_buffer : curl_easy_strerror(rc);
      }
      detail["error"] = why;
      ctx.set_detail(detail::dump_detail(detail));
      return handler_result::failure("HTTP " + where + ": " + why);
    }
    ctx.set_detail(detail::dump_detail(detail));
    if (!expected(p, status))
      return handler_result::failure("HTTP " + std::to_string(status) + " from " +
                                     detail::redact_url(p.url));
    return handler_result::success();
  }

 private:
  std::size_t max_body_excerpt_;
};

}  // namespace

handler make_http_handler(std::size_t max_body_excerpt) {
  return http_runner(max_body_excerpt);
}

}  // namespace sluice::sched
