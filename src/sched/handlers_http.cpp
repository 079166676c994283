// The `http` handler: one request through libcurl's easy API, bounded by the task's deadline and
// aborted when its token is cancelled.

#include <algorithm>
#include <array>
#include <cctype>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sys/socket.h>

#include "sched/handlers_common.hpp"
#include "sluice/sched/handlers.hpp"
#include "sluice/version.hpp"

namespace sluice::sched {

namespace {

struct refused_range {
  ip_network net;
  const char* what;
};

const std::vector<refused_range>& refused_ranges() {
  static const std::vector<refused_range> ranges = [] {
    const std::pair<const char*, const char*> table[] = {
        {"0.0.0.0/8", "an unspecified (\"this network\") address"},
        {"127.0.0.0/8", "a loopback address"},
        {"10.0.0.0/8", "a private address"},
        {"172.16.0.0/12", "a private address"},
        {"192.168.0.0/16", "a private address"},
        {"100.64.0.0/10", "a shared (carrier-grade NAT) address"},
        {"169.254.0.0/16", "a link-local address (cloud metadata services live here)"},
        {"224.0.0.0/4", "a multicast address"},
        {"240.0.0.0/4", "a reserved or broadcast address"},
        {"::/128", "the unspecified address"},
        {"::1/128", "a loopback address"},
        {"::/96", "an IPv4-compatible address (deprecated, refused)"},
        {"64:ff9b::/96", "a NAT64 address (it could reach an internal IPv4 address)"},
        {"fe80::/10", "a link-local address"},
        {"fc00::/7", "a private (unique local) address"},
        {"ff00::/8", "a multicast address"},
    };
    std::vector<refused_range> out;
    for (const auto& [cidr, what] : table)
      out.push_back({*parse_ip_network(cidr), what});
    return out;
  }();
  return ranges;
}

std::string address_text(const std::array<unsigned char, 16>& a) {
  char buf[INET6_ADDRSTRLEN] = {};
  static constexpr unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
  if (std::memcmp(a.data(), mapped, 12) == 0) {
    ::inet_ntop(AF_INET, a.data() + 12, buf, sizeof buf);
  } else {
    ::inet_ntop(AF_INET6, a.data(), buf, sizeof buf);
  }
  return buf;
}

}  // namespace

std::optional<std::string> http_address_refusal(const std::array<unsigned char, 16>& address,
                                                const std::vector<ip_network>& allow) {
  for (const auto& n : allow)
    if (n.contains(address)) return std::nullopt;
  for (const auto& r : refused_ranges())
    if (r.net.contains(address)) return address_text(address) + " is " + r.what;
  return std::nullopt;
}

std::string http_signature(std::string_view secret, std::string_view timestamp,
                           std::string_view body) {
  std::string message;
  message.reserve(timestamp.size() + 1 + body.size());
  message.append(timestamp).append(1, '.').append(body);
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_len = 0;
  if (HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
           reinterpret_cast<const unsigned char*>(message.data()), message.size(), mac,
           &mac_len) == nullptr)
    throw std::bad_alloc();
  static constexpr char hex[] = "0123456789abcdef";
  std::string out = "v1=";
  for (unsigned int i = 0; i < mac_len; ++i) {
    out.push_back(hex[mac[i] >> 4U]);
    out.push_back(hex[mac[i] & 0xFU]);
  }
  return out;
}

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
  const std::vector<ip_network>* allow = nullptr;
  std::string refused;  // why the last connection was refused, if one was
};

// libcurl opens every socket through this, for the first request and each redirect, with the
// address it resolved: the check cannot be bypassed by a name that resolves differently later.
curl_socket_t on_open_socket(void* user, curlsocktype purpose, curl_sockaddr* address) {
  auto* state = static_cast<transfer_state*>(user);
  if (purpose != CURLSOCKTYPE_IPCXN) return CURL_SOCKET_BAD;
  std::array<unsigned char, 16> a{};
  if (address->family == AF_INET) {
    const auto* sin = reinterpret_cast<const sockaddr_in*>(&address->addr);
    a[10] = 0xFF;
    a[11] = 0xFF;
    std::memcpy(a.data() + 12, &sin->sin_addr, 4);
  } else if (address->family == AF_INET6) {
    const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(&address->addr);
    std::memcpy(a.data(), &sin6->sin6_addr, 16);
  } else {
    state->refused = "address family " + std::to_string(address->family) + " is not IP";
    return CURL_SOCKET_BAD;
  }
  if (auto why = http_address_refusal(a, *state->allow)) {
    state->refused = std::move(*why);
    return CURL_SOCKET_BAD;
  }
  return ::socket(address->family, address->socktype | SOCK_CLOEXEC, address->protocol);
}

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
  explicit http_runner(http_policy policy) : policy_(std::move(policy)) {}

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
    state.max_excerpt = policy_.max_body_excerpt;
    state.allow = &policy_.allow_networks;
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
    const std::string* secret = policy_.signing_secret.empty() ? nullptr : &policy_.signing_secret;
    if (p.signing_key) {
      const auto it = policy_.signing_keys.find(*p.signing_key);
      if (it == policy_.signing_keys.end())
        return handler_result::failure("HTTP " + where + ": signing_key '" + *p.signing_key +
                                       "' is not a key of [http_tasks.signing_keys]");
      secret = &it->second;
    }
    if (secret != nullptr) {
      const std::string ts = std::to_string(std::chrono::duration_cast<std::chrono::seconds>(
                                                std::chrono::system_clock::now().time_since_epoch())
                                                .count());
      add_header("Sluice-Timestamp: " + ts);
      add_header("Sluice-Signature: " +
                 http_signature(*secret, ts, p.body ? *p.body : std::string()));
    }

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
    curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, on_open_socket);
    curl_easy_setopt(h, CURLOPT_OPENSOCKETDATA, &state);
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
      } else if (!state.refused.empty()) {
        why = "refused to connect: " + state.refused +
              "; HTTP tasks may call such addresses only when [http_tasks] allow_networks "
              "lists them";
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
  http_policy policy_;
};

}  // namespace

handler make_http_handler(http_policy policy) {
  return http_runner(std::move(policy));
}

handler make_http_handler(std::size_t max_body_excerpt) {
  http_policy policy;
  policy.max_body_excerpt = max_body_excerpt;
  return http_runner(std::move(policy));
}

}  // namespace sluice::sched
