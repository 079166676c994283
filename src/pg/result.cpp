#include "sluice/pg/result.hpp"

#include <charconv>
#include <cstddef>
#include <cstdint>
#include <limits>
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

std::string describe_value(std::string_view text) {
  constexpr std::size_t limit = 64;
  if (text.size() <= limit) return std::string(text);
  return std::string(text.substr(0, limit)) + "...";
}

[[noreturn]] void bad_value(std::string_view column, std::string_view text, std::string_view what) {
  throw conversion_error("column '" + std::string(column) + "': '" + describe_value(text) +
                         "' is not " + std::string(what));
}

[[noreturn]] void out_of_range(std::string_view column, std::string_view text,
                               std::string_view type, const std::string& range = {}) {
  throw conversion_error("column '" + std::string(column) + "': '" + describe_value(text) +
                         "' is out of range for " + std::string(type) +
                         (range.empty() ? std::string() : " (" + range + ")"));
}

template <class Int>
std::string integer_range() {
  // Through long long / unsigned long long so that signed char and unsigned char print as numbers.
  using wide = std::conditional_t<std::is_signed_v<Int>, long long, unsigned long long>;
  return std::to_string(static_cast<wide>(std::numeric_limits<Int>::min())) + " to " +
         std::to_string(static_cast<wide>(std::numeric_limits<Int>::max()));
}

// The digits of int2out/int4out/int8out/numeric_out for an integral value: an optional '-' and
// decimal digits, nothing else (no '+', no spaces, no fraction). Anything outside Int's range
// throws instead of wrapping; a negative number is out of range for an unsigned type ("-0"
// excepted).
template <class Int>
void read_integer(std::string_view column, std::string_view text, Int& out, std::string_view type) {
  const char* first = text.data();
  const char* last = text.data() + text.size();
  if constexpr (std::is_unsigned_v<Int>) {
    if (!text.empty() && text.front() == '-') {
      long long negative = 0;
      const auto [ptr, ec] = std::from_chars(first, last, negative);
      const bool integer = text.size() > 1 && text[1] != '-' && ptr == last &&
                           (ec == std::errc() || ec == std::errc::result_out_of_range);
      if (!integer) bad_value(column, text, "an integer");
      if (ec == std::errc() && negative == 0) {
        out = 0;
        return;
      }
      out_of_range(column, text, type, integer_range<Int>());
    }
  }
  Int v{};
  const auto [ptr, ec] = std::from_chars(first, last, v);
  if (text.empty() || ptr != last) bad_value(column, text, "an integer");
  if (ec == std::errc::result_out_of_range) out_of_range(column, text, type, integer_range<Int>());
  if (ec != std::errc()) bad_value(column, text, "an integer");
  out = v;
}

// float8out's text, or a numeric's: from_chars reads "NaN", "Infinity" and "-Infinity" as well.
// A finite value beyond the type's range throws.
template <class Float>
void read_floating(std::string_view column, std::string_view text, Float& out,
                   std::string_view type) {
  Float v = 0;
  const char* last = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), last, v);
  if (text.empty() || ptr != last) bad_value(column, text, "a number");
  if (ec == std::errc::result_out_of_range) out_of_range(column, text, type);
  if (ec != std::errc()) bad_value(column, text, "a number");
  out = v;
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

row::field row::field_at(int column) const {
  check_column(res_->native(), column);
  const pg_result* r = res_->native();
  return {PQfname(r, column),
          {PQgetvalue(r, index_, column), static_cast<std::size_t>(PQgetlength(r, index_, column))},
          PQgetisnull(r, index_, column) != 0};
}

int row::column_index(std::string_view name) const {
  return res_->column_index(name);
}

void row::null_value(std::string_view column) {
  throw conversion_error("column '" + std::string(column) + "' is NULL");
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

void result::require_one_row() const {
  if (rows() != 1) {
    throw conversion_error("expected exactly one row, got " + std::to_string(rows()) +
                           (query_.empty() ? std::string() : " [query: " + query_ + "]"));
  }
}

// ---- conversions ----

namespace detail {

void read_value(std::string_view column, std::string_view text, bool& out) {
  if (text == "t" || text == "true") {
    out = true;
  } else if (text == "f" || text == "false") {
    out = false;
  } else {
    bad_value(column, text, "a boolean");
  }
}

void read_value(std::string_view column, std::string_view text, signed char& out) {
  read_integer(column, text, out, "signed char");
}
void read_value(std::string_view column, std::string_view text, unsigned char& out) {
  read_integer(column, text, out, "unsigned char");
}
void read_value(std::string_view column, std::string_view text, short& out) {
  read_integer(column, text, out, "short");
}
void read_value(std::string_view column, std::string_view text, unsigned short& out) {
  read_integer(column, text, out, "unsigned short");
}
void read_value(std::string_view column, std::string_view text, int& out) {
  read_integer(column, text, out, "int");
}
void read_value(std::string_view column, std::string_view text, unsigned& out) {
  read_integer(column, text, out, "unsigned int");
}
void read_value(std::string_view column, std::string_view text, long& out) {
  read_integer(column, text, out, "long");
}
void read_value(std::string_view column, std::string_view text, unsigned long& out) {
  read_integer(column, text, out, "unsigned long");
}
void read_value(std::string_view column, std::string_view text, long long& out) {
  read_integer(column, text, out, "long long");
}
void read_value(std::string_view column, std::string_view text, unsigned long long& out) {
  read_integer(column, text, out, "unsigned long long");
}

void read_value(std::string_view column, std::string_view text, float& out) {
  read_floating(column, text, out, "float");
}
void read_value(std::string_view column, std::string_view text, double& out) {
  read_floating(column, text, out, "double");
}
void read_value(std::string_view column, std::string_view text, long double& out) {
  read_floating(column, text, out, "long double");
}

void read_value(std::string_view, std::string_view text, std::string& out) {
  out.assign(text);
}
void read_value(std::string_view, std::string_view text, std::string_view& out) {
  out = text;
}

void read_value(std::string_view column, std::string_view text, std::vector<std::byte>& out) {
  out = parse_bytea(column, text);
}

void read_value(std::string_view column, std::string_view text,
                std::chrono::system_clock::time_point& out) {
  try {
    out = parse_timestamp(text);
  } catch (const conversion_error& e) {
    throw conversion_error("column '" + std::string(column) + "': " + e.what());
  }
}

void read_value(std::string_view column, std::string_view text, timestamp& out) {
  std::chrono::system_clock::time_point tp;
  read_value(column, text, tp);
  out = std::chrono::floor<std::chrono::microseconds>(tp);
}

}  // namespace detail

}  // namespace sluice::pg
