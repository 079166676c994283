// libFuzzer target: the HTTP/1.1 request parser of the daemon's transport,
// http::parse_request() on arbitrary bytes, read as a pipeline (request after request until
// one is incomplete or refused), with small limits so that the fuzzer reaches them.
//
// Beyond "no crash", it checks what src/http/request_parser.hpp promises:
//   - it throws nothing (std::bad_alloc aside);
//   - a refusal is 400, 413 or 431 with a message;
//   - a complete request took between 1 byte and what was left, has a method, HTTP/1.0 or 1.1,
//     at most one Host (one in HTTP/1.1), at most max_header_count fields with lower-case
//     names, a body of at most max_body_bytes, and a path that starts with '/' and, like every
//     query parameter name and value, holds no NUL and is valid UTF-8;
//   - the same bytes parse the same way twice (no hidden state).

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <string>
#include <string_view>

#include "http/message.hpp"
#include "http/request_parser.hpp"
#include "http/transport.hpp"

namespace {

namespace http = sluice::http;
using state = http::parse_outcome::state;

[[noreturn]] void fail(const char* what, std::string_view detail) {
  std::fprintf(stderr, "fuzz_http_request invariant broken: %s [%.*s]\n", what,
               static_cast<int>(detail.size()), detail.data());
  std::abort();
}

bool clean_text(std::string_view s) {
  return s.find('\0') == std::string_view::npos && http::valid_utf8(s);
}

void check(const http::parse_outcome& o, std::string_view input,
           const http::transport_limits& limits) {
  switch (o.what) {
    case state::incomplete:
      return;
    case state::refused:
      if (o.status != 400 && o.status != 413 && o.status != 431) fail("refusal status", o.message);
      if (o.message.empty()) fail("refusal without a message", "");
      return;
    case state::complete:
      break;
  }
  const http::request& r = o.req;
  if (o.consumed == 0 || o.consumed > input.size()) fail("consumed out of range", input);
  if (r.method.empty()) fail("no method", input);
  if (r.version != 10 && r.version != 11) fail("version", r.method);
  const std::size_t hosts = r.header_count("host");
  if (hosts > 1 || (r.version == 11 && hosts == 0)) fail("Host count", r.target);
  if (r.headers.size() > limits.max_header_count) fail("too many fields", r.target);
  for (const auto& [name, value] : r.headers) {
    for (const char c : name) {
      if (c >= 'A' && c <= 'Z') fail("header name not lower-case", name);
    }
  }
  if (r.body.size() > limits.max_body_bytes) fail("body over the limit", r.target);
  if (r.path.empty() || r.path.front() != '/') fail("path not starting with /", r.path);
  if (!clean_text(r.path)) fail("path with NUL or invalid UTF-8", r.target);
  for (const auto& [name, value] : r.query) {
    if (!clean_text(name) || !clean_text(value)) fail("query with NUL or invalid UTF-8", r.target);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  http::transport_limits limits;
  limits.max_header_bytes = 1024;
  limits.max_header_count = 16;
  limits.max_body_bytes = 256;
  std::string_view rest(reinterpret_cast<const char*>(data), size);
  try {
    for (int i = 0; i < 64; ++i) {  // a pipeline of at most 64 requests
      const auto o = http::parse_request(rest, limits);
      check(o, rest, limits);
      const auto again = http::parse_request(rest, limits);
      if (again.what != o.what || again.status != o.status || again.consumed != o.consumed ||
          again.req.target != o.req.target || again.req.body != o.req.body) {
        fail("the same bytes parsed differently", rest.substr(0, 200));
      }
      if (o.what != state::complete) break;
      rest.remove_prefix(o.consumed);
    }
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const std::exception& e) {
    fail("exception", e.what());
  }
  return 0;
}
