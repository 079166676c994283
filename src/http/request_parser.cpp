#include "http/request_parser.hpp"

#include <boost/asio/buffer.hpp>
#include <boost/beast/http/error.hpp>

#include "http/errors.hpp"

namespace sluice::http {

namespace {

namespace bhttp = boost::beast::http;
using sys_error = boost::system::error_code;

}  // namespace

std::string printable(std::string_view text, std::size_t limit) {
  std::string out;
  for (const char ch : text.substr(0, limit)) {
    const auto c = static_cast<unsigned char>(ch);
    out += c >= 0x20 && c < 0x7F ? ch : '?';
  }
  if (text.size() > limit) out += "...";
  return out;
}

std::optional<std::string> header_problem(const request& req) {
  if (req.version != 10 && req.version != 11) {
    return "HTTP version " + std::to_string(req.version / 10) + "." +
           std::to_string(req.version % 10) + " is not served; use HTTP/1.1";
  }
  const std::size_t hosts = req.header_count("host");
  if (hosts > 1) return std::string("more than one Host header");
  if (hosts == 0 && req.version == 11) return std::string("HTTP/1.1 request without Host");
  if (req.has_header("transfer-encoding")) {
    if (req.version == 10) return std::string("Transfer-Encoding in an HTTP/1.0 request");
    std::string_view te = req.header("transfer-encoding");
    while (!te.empty() && (te.front() == ' ' || te.front() == '\t'))
      te.remove_prefix(1);
    while (!te.empty() && (te.back() == ' ' || te.back() == '\t'))
      te.remove_suffix(1);
    if (req.header_count("transfer-encoding") > 1 || !iequals(te, "chunked")) {
      return "Transfer-Encoding '" + printable(te, 100) +
             "' is not supported: send the body with Content-Length or chunked alone";
    }
  }
  return std::nullopt;
}

std::string framing_problem(const sys_error& ec) {
  if (ec == bhttp::error::multiple_content_length) return "conflicting Content-Length values";
  if (ec == bhttp::error::bad_content_length) {
    return "malformed Content-Length, or Content-Length together with Transfer-Encoding";
  }
  if (ec == bhttp::error::bad_transfer_encoding) {
    return "Transfer-Encoding repeated or together with Content-Length";
  }
  if (ec == bhttp::error::bad_chunk || ec == bhttp::error::bad_chunk_extension) {
    return "malformed chunked body";
  }
  if (ec == bhttp::error::bad_version) return "malformed HTTP version";
  return "malformed HTTP request (" + ec.message() + ")";
}

parse_outcome parse_request(std::string_view input, const transport_limits& limits) {
  parse_outcome out;
  request_parser parser(limits.max_header_bytes, limits.max_header_count);
  const auto refuse = [&out](int status, std::string message) {
    out.what = parse_outcome::state::refused;
    out.status = status;
    out.message = std::move(message);
    return std::move(out);
  };
  std::size_t used = 0;
  bool header_checked = false;
  while (!parser.is_done()) {
    sys_error ec;
    const std::size_t n =
        parser.put(boost::asio::buffer(input.data() + used, input.size() - used), ec);
    used += n;
    if (ec == bhttp::error::need_more || (!ec && n == 0)) return out;  // incomplete
    if (ec == bhttp::error::header_limit) {
      return refuse(431, parser.too_many_fields ? "too many header fields" : "header too large");
    }
    if (ec == bhttp::error::body_limit || parser.body_too_large)
      return refuse(413, "body too large");
    if (ec) return refuse(400, framing_problem(ec));
    if (parser.is_header_done() && !header_checked) {
      header_checked = true;
      request& head = parser.head;
      head.has_body = parser.chunked() || parser.content_length().value_or(0) > 0;
      if (auto problem = header_problem(head)) return refuse(400, std::move(*problem));
      try {
        parse_target(head.target, head);
      } catch (const api_error& e) {
        return refuse(400, e.what());
      }
      if (parser.content_length().value_or(0) > limits.max_body_bytes) {
        return refuse(413, "body too large");
      }
      parser.max_body = limits.max_body_bytes;
    }
  }
  out.what = parse_outcome::state::complete;
  out.req = std::move(parser.head);
  out.consumed = used;
  return out;
}

}  // namespace sluice::http
