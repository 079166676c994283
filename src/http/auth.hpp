#pragma once

// Bearer-token checks for the API's mutating calls.
//
// Thread-safety: pure functions.

#include <optional>
#include <string_view>

namespace sluice::http {

// Compares two strings in time that depends only on the length of `expected`, never on where
// they differ (or on how long `presented` is), so timing reveals nothing about the token.
[[nodiscard]] bool constant_time_equal(std::string_view presented,
                                       std::string_view expected) noexcept;

// The token of an "Authorization: Bearer <token>" header value (the scheme is case-insensitive,
// RFC 6750); nullopt for another scheme, a missing token or an empty header.
[[nodiscard]] std::optional<std::string_view> bearer_token(std::string_view header) noexcept;

}  // namespace sluice::http
