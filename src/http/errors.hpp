#pragma once

// The errors the HTTP API answers with: an HTTP status, a stable machine-readable code and a
// message for people, sent as {"error": {"code": "...", "message": "..."}}. Whatever a request
// handler throws is mapped to one of these (server.cpp), so clients only ever see these codes.

#include <stdexcept>
#include <string>
#include <string_view>

namespace sluice::http {

enum class error_code {
  bad_request,             // 400: malformed JSON, wrong types, unknown fields, invalid values
  unauthorized,            // 401: missing or wrong bearer token
  forbidden,               // 403: mutating call while no API token is configured
  not_found,               // 404: unknown path or id
  method_not_allowed,      // 405: known path, other method
  conflict,                // 409: duplicate name, task in the wrong state for the change
  payload_too_large,       // 413: body over max_body_bytes
  unsupported_media_type,  // 415: a request body that is not application/json
  header_too_large,        // 431: request header over max_header_bytes or max_header_count
  unavailable,             // 503: the database cannot be reached or the pool has no connection
  internal,                // 500: anything else; details go to the log, not to the client
};

// "bad_request", "unauthorized", ...: the value of the "code" field.
[[nodiscard]] std::string_view to_string(error_code code) noexcept;
[[nodiscard]] int http_status(error_code code) noexcept;
// The code for a status that no handler chose (errors raised by the HTTP library itself).
[[nodiscard]] error_code code_for_status(int status) noexcept;

// Thrown by request handlers and parsers; what() is the message sent to the client, so it must
// never contain a secret.
class api_error : public std::runtime_error {
 public:
  api_error(error_code code, const std::string& message)
      : std::runtime_error(message), code_(code) {}

  [[nodiscard]] error_code code() const noexcept { return code_; }
  [[nodiscard]] int status() const noexcept { return http_status(code_); }

 private:
  error_code code_;
};

}  // namespace sluice::http
