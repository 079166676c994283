#include "http/errors.hpp"

#include <array>
#include <cstddef>

namespace sluice::http {

namespace {

struct code_row {
  std::string_view name;
  int status;
};

// One row per error_code, in declaration order.
constexpr std::array<code_row, 11> rows{{{"bad_request", 400},
                                         {"unauthorized", 401},
                                         {"forbidden", 403},
                                         {"not_found", 404},
                                         {"method_not_allowed", 405},
                                         {"conflict", 409},
                                         {"payload_too_large", 413},
                                         {"unsupported_media_type", 415},
                                         {"header_too_large", 431},
                                         {"unavailable", 503},
                                         {"internal", 500}}};
static_assert(rows.size() == static_cast<std::size_t>(error_code::internal) + 1,
              "one row per error_code, in order");

const code_row& row(error_code code) noexcept {
  const auto i = static_cast<std::size_t>(code);
  return i < rows.size() ? rows[i] : rows.back();
}

}  // namespace

std::string_view to_string(error_code code) noexcept {
  return row(code).name;
}

int http_status(error_code code) noexcept {
  return row(code).status;
}

error_code code_for_status(int status) noexcept {
  for (std::size_t i = 0; i < rows.size(); ++i) {
    if (rows[i].status == status) return static_cast<error_code>(i);
  }
  return status >= 400 && status < 500 ? error_code::bad_request : error_code::internal;
}

}  // namespace sluice::http
