// IP addresses and networks for the HTTP tasks' outbound policy ([http_tasks] allow_networks):
// parsing and matching only, with no network library, so the configuration parser (and its
// fuzzer) can check the list without linking libcurl.

#include <algorithm>
#include <array>
#include <cctype>
#include <cstddef>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "sluice/sched/handlers.hpp"

namespace sluice::sched {

bool ip_network::contains(const std::array<unsigned char, 16>& address) const noexcept {
  const int whole = prefix / 8;
  for (int i = 0; i < whole; ++i)
    if (bytes[static_cast<std::size_t>(i)] != address[static_cast<std::size_t>(i)]) return false;
  if (const int rest = prefix % 8; rest != 0) {
    const auto mask = static_cast<unsigned char>(0xFFU << (8 - rest));
    const auto i = static_cast<std::size_t>(whole);
    if ((bytes[i] & mask) != (address[i] & mask)) return false;
  }
  return true;
}

std::optional<std::array<unsigned char, 16>> parse_ip_address(std::string_view text) {
  if (text.empty() || text.size() > INET6_ADDRSTRLEN) return std::nullopt;
  const std::string s(text);
  std::array<unsigned char, 16> out{};
  in_addr v4{};
  if (::inet_pton(AF_INET, s.c_str(), &v4) == 1) {
    out[10] = 0xFF;
    out[11] = 0xFF;
    std::memcpy(out.data() + 12, &v4, 4);
    return out;
  }
  in6_addr v6{};
  if (::inet_pton(AF_INET6, s.c_str(), &v6) == 1) {
    std::memcpy(out.data(), &v6, 16);
    return out;
  }
  return std::nullopt;
}

std::optional<ip_network> parse_ip_network(std::string_view text) {
  const auto slash = text.find('/');
  const std::string_view addr = text.substr(0, slash);
  const auto bytes = parse_ip_address(addr);
  if (!bytes) return std::nullopt;
  const bool v4 = addr.find(':') == std::string_view::npos;
  int prefix = v4 ? 32 : 128;
  if (slash != std::string_view::npos) {
    const std::string_view digits = text.substr(slash + 1);
    if (digits.empty() || digits.size() > 3 ||
        !std::all_of(digits.begin(), digits.end(),
                     [](char c) { return std::isdigit(static_cast<unsigned char>(c)) != 0; }))
      return std::nullopt;
    prefix = std::stoi(std::string(digits));
    if (prefix > (v4 ? 32 : 128)) return std::nullopt;
  }
  ip_network n;
  n.bytes = *bytes;
  n.prefix = v4 ? prefix + 96 : prefix;
  // Host bits must be zero: "10.0.0.1/8" is more likely a typo than a network.
  ip_network exact = n;
  exact.prefix = 128;
  std::array<unsigned char, 16> masked = n.bytes;
  for (int bit = n.prefix; bit < 128; ++bit)
    masked[static_cast<std::size_t>(bit / 8)] &= static_cast<unsigned char>(~(0x80U >> (bit % 8)));
  if (!exact.contains(masked)) return std::nullopt;
  return n;
}

}  // namespace sluice::sched
