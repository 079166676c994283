#pragma once

// The HTTP/1.1 request parser under the transport (http/transport.hpp): Boost.Beast's
// basic_parser keeping what it reads as sluice's `request`, and the checks the transport makes
// on every header before the application sees it. A file of its own so that unit tests and the
// fuzzer (tests/fuzz/fuzz_http_request.cpp) drive it on bytes, without sockets.
//
// Thread-safety: a request_parser belongs to one thread; the functions are pure.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include <boost/beast/http/basic_parser.hpp>

#include "http/message.hpp"
#include "http/transport.hpp"

namespace sluice::http {

// Beast's parser with the request kept as sluice's `request`: the fields are counted as they
// arrive (so a header of many tiny fields is cut off at max_header_count, not after they are
// all stored) and the body is limited whatever its transfer encoding.
class request_parser final : public boost::beast::http::basic_parser<true> {
 public:
  request_parser(std::size_t max_header_bytes, std::size_t max_fields) : max_fields_(max_fields) {
    header_limit(static_cast<std::uint32_t>(
        std::min<std::size_t>(max_header_bytes, std::numeric_limits<std::uint32_t>::max())));
    // Content-Length is checked against the limit after admission (an unauthenticated request
    // is refused as such, not as too large); the body itself by on_body_impl.
    body_limit(boost::none);
  }

  request head;
  bool too_many_fields = false;
  bool body_too_large = false;
  std::size_t max_body = 0;  // set before the body is read

 private:
  void on_request_impl(boost::beast::http::verb, boost::beast::string_view method,
                       boost::beast::string_view target, int version,
                       boost::system::error_code&) override {
    head.method.assign(method.data(), method.size());
    head.target.assign(target.data(), target.size());
    head.version = version;
  }

  void on_response_impl(int, boost::beast::string_view, int,
                        boost::system::error_code& ec) override {
    ec = boost::beast::http::error::bad_version;  // never called for a request parser
  }

  void on_field_impl(boost::beast::http::field, boost::beast::string_view name,
                     boost::beast::string_view value, boost::system::error_code& ec) override {
    if (++fields_ > max_fields_) {  // the trailer of a chunked body counts too
      too_many_fields = true;
      ec = boost::beast::http::error::header_limit;
      return;
    }
    // Trailer fields (after a chunked body) are not the request's header: admission has
    // decided on the header alone, and the handlers see exactly that.
    if (is_header_done()) return;
    std::string lower(name.data(), name.size());
    std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) {
      return static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    });
    head.headers.emplace_back(std::move(lower), std::string(value.data(), value.size()));
  }

  void on_header_impl(boost::system::error_code&) override {}

  void on_body_init_impl(const boost::optional<std::uint64_t>& length,
                         boost::system::error_code&) override {
    if (length)
      head.body.reserve(static_cast<std::size_t>(std::min<std::uint64_t>(*length, max_body)));
  }

  std::size_t on_body_impl(boost::beast::string_view piece,
                           boost::system::error_code& ec) override {
    return append(piece, ec);
  }

  void on_chunk_header_impl(std::uint64_t, boost::beast::string_view,
                            boost::system::error_code&) override {}

  std::size_t on_chunk_body_impl(std::uint64_t, boost::beast::string_view piece,
                                 boost::system::error_code& ec) override {
    return append(piece, ec);
  }

  void on_finish_impl(boost::system::error_code&) override {}

  std::size_t append(boost::beast::string_view piece, boost::system::error_code& ec) {
    if (piece.size() > max_body - head.body.size()) {
      body_too_large = true;
      ec = boost::beast::http::error::body_limit;
      return 0;
    }
    head.body.append(piece.data(), piece.size());
    return piece.size();
  }

  std::size_t max_fields_;
  std::size_t fields_ = 0;
};

// What the transport refuses in a parsed header itself (answered 400): an HTTP version other
// than 1.0 and 1.1, two Host fields, none in HTTP/1.1, Transfer-Encoding in HTTP/1.0 or other
// than a single "chunked". nullopt when there is nothing to refuse.
[[nodiscard]] std::optional<std::string> header_problem(const request& req);

// The message of a 400 for a parser error: which framing rule the request broke.
[[nodiscard]] std::string framing_problem(const boost::system::error_code& ec);

// Client text in a log line or message: at most `limit` bytes, printable ASCII only.
[[nodiscard]] std::string printable(std::string_view text, std::size_t limit = 200);

// One request read from the start of `input` the way the transport reads it, admission left
// out: the header parsed and checked (limits, header_problem(), parse_target()), then the body
// against max_body_bytes.
struct parse_outcome {
  enum class state { complete, incomplete, refused };
  state what = state::incomplete;
  int status = 0;  // refused: 400, 413 or 431
  std::string message;
  request req;               // complete: header and body
  std::size_t consumed = 0;  // complete: the bytes of `input` it took
};
[[nodiscard]] parse_outcome parse_request(std::string_view input, const transport_limits& limits);

}  // namespace sluice::http
