#pragma once

// The result of one statement: rows of text-format values with typed getters.
// Thread-safety: a result is a value; distinct results may be used from different threads.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

struct pg_result;  // libpq's PGresult

namespace sluice::pg {

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

  // Converts a value. Supported T: bool, int, std::int64_t, double, std::string,
  // std::chrono::system_clock::time_point, std::vector<std::byte> (bytea),
  // and std::optional<T> of each (NULL gives nullopt). Throws conversion_error on NULL for a
  // non-optional T, on malformed text, and on an unknown column.
  template <class T>
  [[nodiscard]] T get(int column) const;
  template <class T>
  [[nodiscard]] T get(std::string_view column) const;

 private:
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

  // Shorthand for a single-row, single-column result: at(0).get<T>(0). Throws conversion_error
  // when there is not exactly one row.
  template <class T>
  [[nodiscard]] T one() const;

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
  struct deleter {
    void operator()(pg_result* r) const noexcept;
  };
  std::unique_ptr<pg_result, deleter> res_;
  std::string query_;
};

}  // namespace sluice::pg
