#pragma once

// One HTTP exchange as the API sees it, independent of the transport that carried it
// (http/transport.hpp): a request whose header has been checked (the target split and
// percent-decoded, no NUL byte, valid UTF-8) and the response a handler fills in.
//
// Thread-safety: plain values; the functions are pure.
// Throws: parse_target() throws api_error(bad_request) naming what is wrong.

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sluice::http {

struct request {
  std::string method;                                        // as sent: "GET", "POST", ...
  std::string target;                                        // as sent: "/api/v1/tasks?limit=5"
  std::string path;                                          // percent-decoded, without the query
  std::vector<std::pair<std::string, std::string>> query;    // decoded, in the order sent
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-case, in order
  int version = 11;                                          // 10 for HTTP/1.0, 11 for HTTP/1.1
  bool has_body = false;  // a body follows the header (Content-Length > 0, or chunked)
  std::string body;       // the body, once read

  // The first value of a header field (name in lower case); empty when absent.
  [[nodiscard]] std::string_view header(std::string_view lower_case_name) const;
  [[nodiscard]] bool has_header(std::string_view lower_case_name) const;
  // How many lines of this header field the request has.
  [[nodiscard]] std::size_t header_count(std::string_view lower_case_name) const;
  // The first value of a query parameter; nullopt when absent.
  [[nodiscard]] std::optional<std::string_view> param(std::string_view name) const;
};

struct response {
  int status = 200;
  std::string content_type;  // empty: no Content-Type (and then no body)
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // besides Content-Type/-Length

  // Replaces any earlier value of the field (names compared case-insensitively).
  void set_header(std::string name, std::string value);
  [[nodiscard]] std::string_view header(std::string_view name) const;
  void set_content(std::string content, std::string type);
};

// Splits an origin-form target ("/path?a=1&b=x%20y") into request::path and request::query,
// percent-decoding both ('+' is a space in the query only). Refused: a target that is not a
// path (absolute or authority form, "*"), malformed percent-encoding, and a decoded path or
// query name or value holding NUL or invalid UTF-8.
void parse_target(std::string_view target, request& into);

// Whether `text` is well-formed UTF-8 (no overlong forms, surrogates or code points past
// U+10FFFF).
[[nodiscard]] bool valid_utf8(std::string_view text) noexcept;

// Whether a Content-Type value names application/json (case-insensitive, parameters such as
// "; charset=utf-8" allowed).
[[nodiscard]] bool is_json_media_type(std::string_view content_type) noexcept;

// ASCII case-insensitive equality.
[[nodiscard]] bool iequals(std::string_view a, std::string_view b) noexcept;

}  // namespace sluice::http
