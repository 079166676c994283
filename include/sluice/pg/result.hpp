#pragma once

// The result of one statement: rows of text-format values with typed getters.
// Thread-safety: a result is a value; distinct results may be used from different threads.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "sluice/pg/params.hpp"

struct pg_result;  // libpq's PGresult

namespace sluice::pg {

namespace detail {

template <class T, class... Ts>
inline constexpr bool one_of = (std::is_same_v<T, Ts> || ...);

template <class T>
inline constexpr bool is_optional = false;
template <class T>
inline constexpr bool is_optional<std::optional<T>> = true;

}  // namespace detail

// A type a value converts to, NULL aside:
//  - bool (the server's "t"/"f");
//  - every standard integer type: short, int, long, long long, their unsigned variants, and
//    signed char / unsigned char, which are std::int8_t / std::uint8_t (so all of std::int8_t ..
//    std::uint64_t). A value outside the type's range throws conversion_error, never wraps; a
//    negative value for an unsigned type is out of range. char, wchar_t and char8/16/32_t are not
//    integers here: read text as std::string;
//  - float, double, long double (also NaN and +-Infinity as float8out spells them; a value
//    beyond the type's range throws);
//  - std::string (a copy) and std::string_view (a view into the result, valid while the result
//    lives, like text());
//  - std::vector<std::byte> (bytea, hex or escape output format);
//  - std::chrono::system_clock::time_point and pg::timestamp (timestamptz; years 1678-2262, the
//    range of system_clock; "infinity" throws).
template <class T>
concept field_type =
    detail::one_of<T, bool, signed char, unsigned char, short, unsigned short, int, unsigned, long,
                   unsigned long, long long, unsigned long long, float, double, long double,
                   std::string, std::string_view, std::vector<std::byte>,
                   std::chrono::system_clock::time_point, timestamp>;

// What row::get<T>() and result::one<T>() accept: a field_type, or std::optional of one (NULL
// gives nullopt). Any other T fails to compile, with a static_assert listing these types.
template <class T>
concept readable = field_type<T> ||(detail::is_optional<T>&& field_type<typename T::value_type>);

namespace detail {

// The conversions behind row::get<T>, one per field_type (src/pg/result.cpp). `column` names the
// column in messages; `text` is a non-NULL value in text format. Throw conversion_error.
void read_value(std::string_view column, std::string_view text, bool& out);
void read_value(std::string_view column, std::string_view text, signed char& out);
void read_value(std::string_view column, std::string_view text, unsigned char& out);
void read_value(std::string_view column, std::string_view text, short& out);
void read_value(std::string_view column, std::string_view text, unsigned short& out);
void read_value(std::string_view column, std::string_view text, int& out);
void read_value(std::string_view column, std::string_view text, unsigned& out);
void read_value(std::string_view column, std::string_view text, long& out);
void read_value(std::string_view column, std::string_view text, unsigned long& out);
void read_value(std::string_view column, std::string_view text, long long& out);
void read_value(std::string_view column, std::string_view text, unsigned long long& out);
void read_value(std::string_view column, std::string_view text, float& out);
void read_value(std::string_view column, std::string_view text, double& out);
void read_value(std::string_view column, std::string_view text, long double& out);
void read_value(std::string_view column, std::string_view text, std::string& out);
void read_value(std::string_view column, std::string_view text, std::string_view& out);
void read_value(std::string_view column, std::string_view text, std::vector<std::byte>& out);
void read_value(std::string_view column, std::string_view text,
                std::chrono::system_clock::time_point& out);
void read_value(std::string_view column, std::string_view text, timestamp& out);

// Fails the compilation of get<T>/one<T> for a T that is not readable, naming what is.
template <class T>
constexpr bool check_readable() {
  static_assert(readable<T>,
                "sluice::pg: row::get<T>() and result::one<T>() do not support this T. Supported: "
                "bool; short, int, long, long long and their unsigned variants; signed char and "
                "unsigned char (std::int8_t, std::uint8_t); float, double, long double; "
                "std::string, std::string_view; std::vector<std::byte> (bytea); "
                "std::chrono::system_clock::time_point, sluice::pg::timestamp; and std::optional "
                "of any of these (see sluice::pg::readable)");
  return readable<T>;
}

}  // namespace detail

class result;

// One row of a result, valid while the result lives.
class row {
 public:
  row(const result& res, int index) noexcept : res_(&res), index_(index) {}

  [[nodiscard]] int index() const noexcept { return index_; }
  [[nodiscard]] bool is_null(int column) const;
  [[nodiscard]] bool is_null(std::string_view column) const;
  // Raw text of a value (empty for NULL).
  [[nodiscard]] std::string_view text(int column) const;
  [[nodiscard]] std::string_view text(std::string_view column) const;

  // Converts a value to T, any `readable` type (see field_type above). Throws conversion_error on
  // NULL for a non-optional T, on malformed text, on a value out of T's range, and on an unknown
  // column.
  template <class T>
  [[nodiscard]] T get(int column) const {
    if constexpr (detail::check_readable<T>()) {
      const field f = field_at(column);
      if constexpr (detail::is_optional<T>) {
        if (f.null) return std::nullopt;
        typename T::value_type value{};
        detail::read_value(f.name, f.text, value);
        return value;
      } else {
        if (f.null) null_value(f.name);
        T value{};
        detail::read_value(f.name, f.text, value);
        return value;
      }
    }
  }
  template <class T>
  [[nodiscard]] T get(std::string_view column) const {
    return get<T>(column_index(column));
  }

 private:
  struct field {
    std::string_view name;
    std::string_view text;
    bool null = false;
  };
  // The column's name, text and NULL flag; throws conversion_error for a column out of range.
  [[nodiscard]] field field_at(int column) const;
  [[nodiscard]] int column_index(std::string_view name) const;
  [[noreturn]] static void null_value(std::string_view column);

  const result* res_;
  int index_;
};

class result {
 public:
  result() = default;
  // Takes ownership of a PGresult; `query` is kept for error messages.
  result(pg_result* res, std::string query);

  [[nodiscard]] int rows() const noexcept;
  [[nodiscard]] int columns() const noexcept;
  [[nodiscard]] bool empty() const noexcept { return rows() == 0; }
  // Rows affected by INSERT/UPDATE/DELETE/... (PQcmdTuples); 0 when not applicable.
  [[nodiscard]] std::int64_t affected_rows() const;
  [[nodiscard]] std::string_view column_name(int column) const;
  // Index of a column by name; throws conversion_error when there is no such column.
  [[nodiscard]] int column_index(std::string_view name) const;
  [[nodiscard]] const std::string& query() const noexcept { return query_; }

  [[nodiscard]] row operator[](int index) const;
  [[nodiscard]] row at(int index) const;  // throws std::out_of_range

  // Shorthand for a single-row, single-column result: at(0).get<T>(0), any `readable` T. Throws
  // conversion_error when there is not exactly one row.
  template <class T>
  [[nodiscard]] T one() const& {
    if constexpr (detail::check_readable<T>()) {
      require_one_row();
      return row(*this, 0).get<T>(0);
    }
  }
  // On a temporary result (`conn.query(...).one<T>()`): a std::string_view would outlive the
  // text it points into, so that one T is refused here.
  template <class T>
  [[nodiscard]] T one() const&& {
    static_assert(
        !std::is_same_v<T, std::string_view> && !std::is_same_v<T, std::optional<std::string_view>>,
        "sluice::pg: one<std::string_view>() on a temporary result would dangle; keep the "
        "result in a variable or read std::string");
    return static_cast<const result&>(*this).one<T>();
  }

  class iterator {
   public:
    using value_type = row;
    using difference_type = int;
    iterator(const result& res, int index) noexcept : res_(&res), index_(index) {}
    row operator*() const noexcept { return row(*res_, index_); }
    iterator& operator++() noexcept {
      ++index_;
      return *this;
    }
    bool operator==(const iterator& other) const noexcept { return index_ == other.index_; }

   private:
    const result* res_;
    int index_;
  };
  [[nodiscard]] iterator begin() const noexcept { return {*this, 0}; }
  [[nodiscard]] iterator end() const noexcept { return {*this, rows()}; }

  [[nodiscard]] pg_result* native() const noexcept { return res_.get(); }

 private:
  void require_one_row() const;

  struct deleter {
    void operator()(pg_result* r) const noexcept;
  };
  std::unique_ptr<pg_result, deleter> res_;
  std::string query_;
};

}  // namespace sluice::pg
