#pragma once

// to_string() for an enumeration from one table of names, instead of a switch per enum.

#include <array>
#include <cstddef>
#include <optional>
#include <string_view>

namespace sluice {

// The name of `value`, where `names` lists one name per enumerator in declaration order and the
// enumerators run 0, 1, ..., `Last`. A value outside that range (a cast from a bad integer)
// gives `fallback`. Naming the last enumerator makes a table that misses one fail to compile.
template <auto Last, std::size_t N>
[[nodiscard]] constexpr std::string_view enum_name(decltype(Last) value,
                                                   const std::array<std::string_view, N>& names,
                                                   std::string_view fallback = "?") noexcept {
  static_assert(N == static_cast<std::size_t>(Last) + 1, "one name per enumerator, in order");
  const auto i = static_cast<std::size_t>(value);
  return i < N ? names[i] : fallback;
}

// The enumerator named `text` in `names` (the same table as for enum_name), or nullopt. The
// comparison is exact: a caller that accepts other spellings folds them before asking.
template <class Enum, std::size_t N>
[[nodiscard]] constexpr std::optional<Enum> enum_from_name(
    const std::array<std::string_view, N>& names, std::string_view text) noexcept {
  for (std::size_t i = 0; i < N; ++i) {
    if (names[i] == text) return static_cast<Enum>(i);
  }
  return std::nullopt;
}

}  // namespace sluice
