#include "http/auth.hpp"

#include <cctype>
#include <cstddef>

#include <arpa/inet.h>

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

namespace {

bool iequal(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  }
  return true;
}

bool is_ip_literal(std::string_view text, int family) noexcept {
  char buf[64];
  unsigned char addr[16];
  if (text.empty() || text.size() >= sizeof buf) return false;
  text.copy(buf, text.size());
  buf[text.size()] = '\0';
  return ::inet_pton(family, buf, addr) == 1;
}

}  // namespace

bool host_allowed(std::string_view host, const std::vector<std::string>& allowed) noexcept {
  while (!host.empty() && (host.front() == ' ' || host.front() == '\t'))
    host.remove_prefix(1);
  while (!host.empty() && (host.back() == ' ' || host.back() == '\t'))
    host.remove_suffix(1);
  if (host.empty()) return true;
  for (const auto& a : allowed)
    if (a == "*") return true;
  if (host.front() == '[') {  // [IPv6]:port
    const auto close = host.find(']');
    if (close == std::string_view::npos) return false;
    const auto rest = host.substr(close + 1);
    if (!rest.empty() && rest.front() != ':') return false;
    return is_ip_literal(host.substr(1, close - 1), AF_INET6);
  }
  if (const auto colon = host.rfind(':'); colon != std::string_view::npos) {
    host = host.substr(0, colon);
  }
  if (!host.empty() && host.back() == '.') host.remove_suffix(1);
  if (host.empty()) return false;
  if (is_ip_literal(host, AF_INET)) return true;
  constexpr std::string_view localhost = "localhost";
  if (iequal(host, localhost)) return true;
  if (host.size() > localhost.size() + 1 &&
      iequal(host.substr(host.size() - localhost.size() - 1), ".localhost"))
    return true;
  for (const auto& a : allowed) {
    std::string_view name = a;
    if (!name.empty() && name.back() == '.') name.remove_suffix(1);
    if (iequal(host, name)) return true;
  }
  return false;
}

}  // namespace sluice::http
