#include "http/errors.hpp"

namespace sluice::http {

std::string_view to_string(error_code code) noexcept {
  switch (code) {
    case error_code::bad_request:
      return "bad_request";
    case error_code::unauthorized:
      return "unauthorized";
    case error_code::forbidden:
      return "forbidden";
    case error_code::not_found:
      return "not_found";
    case error_code::method_not_allowed:
      return "method_not_allowed";
    case error_code::conflict:
      return "conflict";
    case error_code::payload_too_large:
      return "payload_too_large";
    case error_code::unsupported_media_type:
      return "unsupported_media_type";
    case error_code::header_too_large:
      return "header_too_large";
    case error_code::unavailable:
      return "unavailable";
    case error_code::internal:
      return "internal";
  }
  return "internal";
}

int http_status(error_code code) noexcept {
  switch (code) {
    case error_code::bad_request:
      return 400;
    case error_code::unauthorized:
      return 401;
    case error_code::forbidden:
      return 403;
    case error_code::not_found:
      return 404;
    case error_code::method_not_allowed:
      return 405;
    case error_code::conflict:
      return 409;
    case error_code::payload_too_large:
      return 413;
    case error_code::unsupported_media_type:
      return 415;
    case error_code::header_too_large:
      return 431;
    case error_code::unavailable:
      return 503;
    case error_code::internal:
      return 500;
  }
  return 500;
}

error_code code_for_status(int status) noexcept {
  switch (status) {
    case 401:
      return error_code::unauthorized;
    case 403:
      return error_code::forbidden;
    case 404:
      return error_code::not_found;
    case 405:
      return error_code::method_not_allowed;
    case 409:
      return error_code::conflict;
    case 413:
      return error_code::payload_too_large;
    case 415:
      return error_code::unsupported_media_type;
    case 431:
      return error_code::header_too_large;
    case 503:
      return error_code::unavailable;
    default:
      return status >= 400 && status < 500 ? error_code::bad_request : error_code::internal;
  }
}

}  // namespace sluice::http
