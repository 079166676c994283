#pragma once

// Bearer-token checks for the API's mutating calls.
//
// Thread-safety: pure functions.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sluice::http {

// Compares two strings in time that depends only on the length of `expected`, never on where
// they differ (or on how long `presented` is), so timing reveals nothing about the token.
[[nodiscard]] bool constant_time_equal(std::string_view presented,
                                       std::string_view expected) noexcept;

// The token of an "Authorization: Bearer <token>" header value (the scheme is case-insensitive,
// RFC 6750); nullopt for another scheme, a missing token or an empty header.
[[nodiscard]] std::optional<std::string_view> bearer_token(std::string_view header) noexcept;

// DNS-rebinding defence: whether a request's Host header names this server. A web page on
// another site can make a browser send requests to 127.0.0.1 under the page's own host name
// (its DNS record is switched to 127.0.0.1 after the page loads) and read the answers; such a
// request carries that name in Host. Accepted: a missing or empty header (browsers always send
// one), IP literals (IPv4, [IPv6]), "localhost" and names under ".localhost" (RFC 6761: always
// loopback), and the names in `allowed` (case-insensitive, without port; "*" accepts any).
// A port after the name is ignored, as is one trailing dot.
[[nodiscard]] bool host_allowed(std::string_view host_header,
                                const std::vector<std::string>& allowed) noexcept;

}  // namespace sluice::http
