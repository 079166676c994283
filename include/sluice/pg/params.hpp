#pragma once

// Typed statement parameters. Every value sent to the server is bound, never spliced into SQL.
// Values are encoded as PostgreSQL text format, except bytes, which are sent in binary.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sluice::pg {

using oid = unsigned int;

// Well-known type oids (from pg_type.h) for the parameters we bind.
namespace oids {
inline constexpr oid unspecified = 0;  // let the server infer
inline constexpr oid boolean = 16;
inline constexpr oid bytea = 17;
inline constexpr oid int8 = 20;
inline constexpr oid int4 = 23;
inline constexpr oid text = 25;
inline constexpr oid json = 114;
inline constexpr oid float8 = 701;
inline constexpr oid timestamptz = 1184;
inline constexpr oid numeric = 1700;  // unsigned integers above INT64_MAX
inline constexpr oid jsonb = 3802;
}  // namespace oids

// JSON sent as text; the server parses it (jsonb unless the column says json).
struct json_text {
  std::string text;
};

// A one-dimensional array in PostgreSQL's text array form ("{1,NULL,\"a b\"}"), sent as one
// parameter that the SQL casts to its element type ($1::int8[]). Every element is quoted, so any
// text is safe; a NUL byte is refused as for text parameters. For batches: one statement over
// `unnest($1::int8[], $2::text[], ...)` reads N rows without parsing JSON per row.
class array_literal {
 public:
  array_literal& null();
  array_literal& add(std::int64_t v);
  array_literal& add(int v) { return add(static_cast<std::int64_t>(v)); }
  array_literal& add(bool v);
  array_literal& add(std::string_view v);
  array_literal& add(const char* v) { return add(std::string_view(v)); }
  array_literal& add(std::chrono::system_clock::time_point v);
  template <class T>
  array_literal& add(const std::optional<T>& v) {
    return v ? add(*v) : null();
  }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  // The literal, closed: "{...}".
  [[nodiscard]] std::string text() const { return body_ + "}"; }

 private:
  void separator();
  std::string body_ = "{";
  std::size_t size_ = 0;
};

// A timestamp with time zone, sent as an ISO-8601 UTC string with microseconds.
using timestamp = std::chrono::time_point<std::chrono::system_clock, std::chrono::microseconds>;

// One encoded parameter. `value` empty means SQL NULL.
struct param {
  std::optional<std::string> value;
  oid type = oids::unspecified;
  bool binary = false;

  param() = default;                               // NULL
  param(std::nullptr_t) {}                         // NULL  // NOLINT(google-explicit-constructor)
  param(std::nullopt_t) {}                         // NULL  // NOLINT(google-explicit-constructor)
  param(bool v);                                   // NOLINT(google-explicit-constructor)
  param(int v);                                    // NOLINT(google-explicit-constructor)
  param(long v);                                   // NOLINT(google-explicit-constructor)
  param(long long v);                              // NOLINT(google-explicit-constructor)
  param(unsigned v);                               // NOLINT(google-explicit-constructor)
  param(unsigned long v);                          // NOLINT(google-explicit-constructor)
  param(unsigned long long v);                     // NOLINT(google-explicit-constructor)
  param(double v);                                 // NOLINT(google-explicit-constructor)
  param(const char* v);                            // NOLINT(google-explicit-constructor)
  param(std::string v);                            // NOLINT(google-explicit-constructor)
  param(std::string_view v);                       // NOLINT(google-explicit-constructor)
  param(std::span<const std::byte> v);             // NOLINT(google-explicit-constructor)
  param(const std::vector<std::byte>& v);          // NOLINT(google-explicit-constructor)
  param(json_text v);                              // NOLINT(google-explicit-constructor)
  param(const array_literal& v);                   // NOLINT(google-explicit-constructor)
  param(std::chrono::system_clock::time_point v);  // NOLINT(google-explicit-constructor)
  template <class T>
  param(const std::optional<T>& v) {  // NOLINT(google-explicit-constructor)
    if (v) *this = param(*v);
  }

  [[nodiscard]] bool is_null() const noexcept { return !value.has_value(); }
};

// Formats a time point as the ISO-8601 UTC text PostgreSQL accepts for timestamptz.
[[nodiscard]] std::string format_timestamp(std::chrono::system_clock::time_point tp);
// Parses PostgreSQL's timestamptz text output ("2026-11-26 15:49:20.123456+00"), any offset.
// Throws conversion_error on malformed input.
[[nodiscard]] std::chrono::system_clock::time_point parse_timestamp(std::string_view text);

// Arrays of pointers/lengths/formats in the shape PQexecParams wants. Keeps the params alive.
class param_list {
 public:
  param_list() = default;
  explicit param_list(std::vector<param> params);
  // The pointer arrays point into params_' elements; a vector move keeps them in place, a copy
  // would not, so copying is not offered.
  param_list(param_list&&) noexcept = default;
  param_list& operator=(param_list&&) noexcept = default;
  param_list(const param_list&) = delete;
  param_list& operator=(const param_list&) = delete;
  ~param_list() = default;
  template <class... Ts>
  static param_list of(Ts&&... values) {
    std::vector<param> v;
    v.reserve(sizeof...(Ts));
    (v.emplace_back(std::forward<Ts>(values)), ...);
    return param_list(std::move(v));
  }

  [[nodiscard]] int size() const noexcept { return static_cast<int>(params_.size()); }
  [[nodiscard]] const oid* types() const noexcept { return types_.data(); }
  [[nodiscard]] const char* const* values() const noexcept { return values_.data(); }
  [[nodiscard]] const int* lengths() const noexcept { return lengths_.data(); }
  [[nodiscard]] const int* formats() const noexcept { return formats_.data(); }
  [[nodiscard]] const std::vector<param>& params() const noexcept { return params_; }

 private:
  std::vector<param> params_;
  std::vector<oid> types_;
  std::vector<const char*> values_;
  std::vector<int> lengths_;
  std::vector<int> formats_;
};

}  // namespace sluice::pg
