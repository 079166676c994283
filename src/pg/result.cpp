#include "sluice/pg/result.hpp"

#include <charconv>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <vector>

#include <libpq-fe.h>

#include "sluice/pg/error.hpp"
#include "sluice/pg/params.hpp"

namespace sluice::pg {
namespace {

template <class T>
struct is_optional : std::false_type {};
template <class T>
struct is_optional<std::optional<T>> : std::true_type {};

std::string describe_value(std::string_view text) {
  constexpr std::size_t limit = 64;
  if (text.size() <= limit) return std::string(text);
  return std::string(text.substr(0, limit)) + "...";
}

[[noreturn]] void bad_value(std::string_view column, std::string_view text, std::string_view what) {
  throw conversion_error("column '" + std::string(column) + "': '" + describe_value(text) +
                         "' is not " + std::string(what));
}

template <class Int>
Int parse_integer(std::string_view column, std::string_view text, std::string_view what) {
  Int v{};
  const char* first = text.data();
  const char* last = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(first, last, v);
  if (ec == std::errc::result_out_of_range) {
    throw conversion_error("column '" + std::string(column) + "': '" + describe_value(text) +
                           "' is out of range for " + std::string(what));
  }
  if (ec != std::errc() || ptr != last || text.empty()) bad_value(column, text, "an integer");
  return v;
}

int hex_digit(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::vector<std::byte> parse_bytea(std::string_view column, std::string_view text) {
  std::vector<std::byte> out;
  if (text.size() >= 2 && text[0] == '\\' && text[1] == 'x') {
    // Hex format (bytea_output = hex, the default since 9.0).
    std::string_view hex = text.substr(2);
    if (hex.size() % 2 != 0) bad_value(column, text, "hex-format bytea (odd number of digits)");
    out.reserve(hex.size() / 2);
    for (std::size_t i = 0; i < hex.size(); i += 2) {
      const int hi = hex_digit(hex[i]);
      const int lo = hex_digit(hex[i + 1]);
      if (hi < 0 || lo < 0) bad_value(column, text, "hex-format bytea");
      out.push_back(static_cast<std::byte>(hi * 16 + lo));
    }
    return out;
  }
  // Escape format (bytea_output = escape): "\\" is a backslash, "\ooo" an octal byte, every
  // other byte stands for itself.
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    if (text[i] != '\\') {
      out.push_back(static_cast<std::byte>(text[i]));
      ++i;
    } else if (i + 1 < text.size() && text[i + 1] == '\\') {
      out.push_back(std::byte{'\\'});
      i += 2;
    } else if (i + 3 < text.size() && text[i + 1] >= '0' && text[i + 1] <= '3' &&
               text[i + 2] >= '0' && text[i + 2] <= '7' && text[i + 3] >= '0' &&
               text[i + 3] <= '7') {
      out.push_back(static_cast<std::byte>((text[i + 1] - '0') * 64 + (text[i + 2] - '0') * 8 +
                                           (text[i + 3] - '0')));
      i += 4;
    } else {
      bad_value(column, text, "escape-format bytea");
    }
  }
  return out;
}

// Converts the text of a non-NULL value.
template <class T>
T from_text(std::string_view column, std::string_view text);

template <>
bool from_text<bool>(std::string_view column, std::string_view text) {
  if (text == "t" || text == "true") return true;
  if (text == "f" || text == "false") return false;
  bad_value(column, text, "a boolean");
}

template <>
int from_text<int>(std::string_view column, std::string_view text) {
  return parse_integer<int>(column, text, "int");
}

template <>
std::int64_t from_text<std::int64_t>(std::string_view column, std::string_view text) {
  return parse_integer<std::int64_t>(column, text, "int64");
}

template <>
double from_text<double>(std::string_view column, std::string_view text) {
  // from_chars reads "NaN", "Infinity" and "-Infinity" (float8out's spellings) as well.
  double v = 0;
  const char* last = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), last, v);
  if (ec == std::errc::result_out_of_range) {
    throw conversion_error("column '" + std::string(column) + "': '" + describe_value(text) +
                           "' is out of range for double");
  }
  if (ec != std::errc() || ptr != last || text.empty()) bad_value(column, text, "a number");
  return v;
}

template <>
std::string from_text<std::string>(std::string_view, std::string_view text) {
  return std::string(text);
}

template <>
std::chrono::system_clock::time_point from_text<std::chrono::system_clock::time_point>(
    std::string_view column, std::string_view text) {
  try {
    return parse_timestamp(text);
  } catch (const conversion_error& e) {
    throw conversion_error("column '" + std::string(column) + "': " + e.what());
  }
}

template <>
std::vector<std::byte> from_text<std::vector<std::byte>>(std::string_view column,
                                                         std::string_view text) {
  return parse_bytea(column, text);
}

void check_column(const pg_result* res, int column) {
  const int n = res == nullptr ? 0 : PQnfields(res);
  if (column < 0 || column >= n) {
    throw conversion_error("column index " + std::to_string(column) + " is out of range (" +
                           std::to_string(n) + " columns)");
  }
}

}  // namespace

// ---- row ----

bool row::is_null(int column) const {
  check_column(res_->native(), column);
  return PQgetisnull(res_->native(), index_, column) != 0;
}

bool row::is_null(std::string_view column) const {
  return is_null(res_->column_index(column));
}

std::string_view row::text(int column) const {
  check_column(res_->native(), column);
  const pg_result* r = res_->native();
  return {PQgetvalue(r, index_, column), static_cast<std::size_t>(PQgetlength(r, index_, column))};
}

std::string_view row::text(std::string_view column) const {
  return text(res_->column_index(column));
}

template <class T>
T row::get(int column) const {
  check_column(res_->native(), column);
  const pg_result* r = res_->native();
  const std::string_view name = PQfname(r, column);
  if (PQgetisnull(r, index_, column) != 0) {
    if constexpr (is_optional<T>::value) {
      return std::nullopt;
    } else {
      throw conversion_error("column '" + std::string(name) + "' is NULL");
    }
  }
  const std::string_view value{PQgetvalue(r, index_, column),
                               static_cast<std::size_t>(PQgetlength(r, index_, column))};
  if constexpr (is_optional<T>::value) {
    return from_text<typename T::value_type>(name, value);
  } else {
    return from_text<T>(name, value);
  }
}

template <class T>
T row::get(std::string_view column) const {
  return get<T>(res_->column_index(column));
}

// ---- result ----

void result::deleter::operator()(pg_result* r) const noexcept {
  PQclear(r);
}

result::result(pg_result* res, std::string query) : res_(res), query_(std::move(query)) {}

int result::rows() const noexcept {
  return res_ ? PQntuples(res_.get()) : 0;
}

int result::columns() const noexcept {
  return res_ ? PQnfields(res_.get()) : 0;
}

std::int64_t result::affected_rows() const {
  if (!res_) return 0;
  const std::string_view text = PQcmdTuples(res_.get());
  if (text.empty()) return 0;
  std::int64_t n = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc() || ptr != text.data() + text.size()) {
    throw conversion_error("unexpected command tag row count '" + std::string(text) + "'");
  }
  return n;
}

std::string_view result::column_name(int column) const {
  check_column(res_.get(), column);
  return PQfname(res_.get(), column);
}

int result::column_index(std::string_view name) const {
  const int n = columns();
  for (int i = 0; i < n; ++i) {
    if (name == PQfname(res_.get(), i)) return i;
  }
  if (n > 0) {
    // PQfnumber folds an unquoted name to lower case, as SQL does: get("Total") finds the
    // column of "SELECT 1 AS Total", which the server reports as "total".
    const int i = PQfnumber(res_.get(), std::string(name).c_str());
    if (i >= 0) return i;
  }
  std::string known;
  for (int i = 0; i < n; ++i) {
    if (i > 0) known += ", ";
    known += PQfname(res_.get(), i);
  }
  throw conversion_error("column '" + std::string(name) + "' does not exist in the result (" +
                         (n == 0 ? std::string("no columns") : "columns: " + known) + ")");
}

row result::operator[](int index) const {
  return row(*this, index);
}

row result::at(int index) const {
  if (index < 0 || index >= rows()) {
    throw std::out_of_range("row " + std::to_string(index) + " is out of range (" +
                            std::to_string(rows()) + " rows)");
  }
  return row(*this, index);
}

template <class T>
T result::one() const {
  if (rows() != 1) {
    throw conversion_error("expected exactly one row, got " + std::to_string(rows()) +
                           (query_.empty() ? std::string() : " [query: " + query_ + "]"));
  }
  return row(*this, 0).get<T>(0);
}

// The supported value types. The header declares the templates only; these are the
// instantiations callers link against.
#define SLUICE_PG_INSTANTIATE(T)                                                \
  template T row::get<T>(int) const;                                            \
  template T row::get<T>(std::string_view) const;                               \
  template T result::one<T>() const;                                            \
  template std::optional<T> row::get<std::optional<T>>(int) const;              \
  template std::optional<T> row::get<std::optional<T>>(std::string_view) const; \
  template std::optional<T> result::one<std::optional<T>>() const;

SLUICE_PG_INSTANTIATE(bool)
SLUICE_PG_INSTANTIATE(int)
SLUICE_PG_INSTANTIATE(std::int64_t)
SLUICE_PG_INSTANTIATE(double)
SLUICE_PG_INSTANTIATE(std::string)
SLUICE_PG_INSTANTIATE(std::chrono::system_clock::time_point)
SLUICE_PG_INSTANTIATE(std::vector<std::byte>)

#undef SLUICE_PG_INSTANTIATE

}  // namespace sluice::pg
