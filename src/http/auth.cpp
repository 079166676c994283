#include "http/auth.hpp"

#include <cctype>
#include <cstddef>

namespace sluice::http {

bool constant_time_equal(std::string_view presented, std::string_view expected) noexcept {
  // Every byte of `expected` is visited whatever `presented` holds; a length mismatch is folded
  // into the result instead of returning early. `volatile` keeps the compiler from turning the
  // loop back into an early-exit comparison.
  volatile unsigned char diff = presented.size() == expected.size() ? 0 : 1;
  const std::size_t n = presented.size();
  for (std::size_t i = 0; i < expected.size(); ++i) {
    const auto p =
        n == 0 ? static_cast<unsigned char>(0) : static_cast<unsigned char>(presented[i % n]);
    diff = static_cast<unsigned char>(diff | (p ^ static_cast<unsigned char>(expected[i])));
  }
  return diff == 0;
}

std::optional<std::string_view> bearer_token(std::string_view header) noexcept {
  constexpr std::string_view scheme = "bearer";
  const auto is_space = [](char c) { return c == ' ' || c == '\t'; };
  while (!header.empty() && is_space(header.front()))
    header.remove_prefix(1);
  while (!header.empty() && is_space(header.back()))
    header.remove_suffix(1);
  if (header.size() <= scheme.size() || !is_space(header[scheme.size()])) return std::nullopt;
  for (std::size_t i = 0; i < scheme.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(header[i])) != scheme[i]) return std::nullopt;
  }
  header.remove_prefix(scheme.size());
  while (!header.empty() && is_space(header.front()))
    header.remove_prefix(1);
  if (header.empty()) return std::nullopt;
  return header;
}

}  // namespace sluice::http
