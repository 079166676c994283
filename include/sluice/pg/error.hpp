#pragma once

// Errors raised by the pg layer, and the SQLSTATE classification the pool and the scheduler
// rely on to decide between "evict the connection", "back off", "retry the transaction" and
// "carry on".

#include <stdexcept>
#include <string>
#include <string_view>

#include "sluice/error.hpp"
// redact_conninfo() was declared here; it lives with the other conninfo functions now.
#include "sluice/pg/conninfo.hpp"

namespace sluice::pg {

// What a caller should do after an error with a given SQLSTATE.
enum class error_kind {
  ordinary,           // a plain SQL error (syntax, constraint, ...): the connection stays usable
  query_canceled,     // 57014: statement_timeout or a cancel request; the connection stays usable
  poisoning,          // the connection must not be lent again (08xxx, 57P01-57P05, 25P03, 0A000)
  back_pressure,      // 53300 too_many_connections, 57P03 cannot_connect_now: back off and retry
  retry_transaction,  // 40001 serialization_failure, 40P01 deadlock_detected
  outcome_unknown,    // 08007, 40003: the commit may or may not have happened; never retry blindly
};

// Classifies a five-character SQLSTATE. Unknown or empty codes are `ordinary`.
[[nodiscard]] error_kind classify_sqlstate(std::string_view sqlstate) noexcept;
[[nodiscard]] bool sqlstate_poisons_connection(std::string_view sqlstate) noexcept;
[[nodiscard]] bool sqlstate_is_back_pressure(std::string_view sqlstate) noexcept;
[[nodiscard]] bool sqlstate_is_retryable(std::string_view sqlstate) noexcept;
[[nodiscard]] bool sqlstate_outcome_unknown(std::string_view sqlstate) noexcept;
[[nodiscard]] std::string_view to_string(error_kind kind) noexcept;
// The SQLSTATE of a server error found in libpq's message text, for the one case where no
// PGresult carries it: a refused connection. Reads the "SEVERITY:  XXXXX:" layout of verbose
// messages, else recognises the server's English texts ("too many clients", "remaining
// connection slots are reserved" and "too many connections for role/database" give 53300;
// "the database system is starting up / shutting down / in recovery mode / not yet accepting
// connections" give 57P03). Empty when unknown.
[[nodiscard]] std::string sqlstate_from_message(std::string_view message);

// Base of every error the pg layer throws.
class error : public sluice::error {
 public:
  using sluice::error::error;
  // True when the connection that raised this error must be discarded, not reused.
  [[nodiscard]] virtual bool poisons_connection() const noexcept { return false; }
  [[nodiscard]] virtual error_kind kind() const noexcept { return error_kind::ordinary; }
};

// The server answered a statement with an error. Carries the SQLSTATE and the server's fields.
class sql_error : public error {
 public:
  sql_error(std::string sqlstate, std::string message, std::string detail, std::string hint,
            std::string query);

  [[nodiscard]] const std::string& sqlstate() const noexcept { return sqlstate_; }
  [[nodiscard]] const std::string& message() const noexcept { return message_; }
  [[nodiscard]] const std::string& detail() const noexcept { return detail_; }
  [[nodiscard]] const std::string& hint() const noexcept { return hint_; }
  [[nodiscard]] const std::string& query() const noexcept { return query_; }
  [[nodiscard]] bool poisons_connection() const noexcept override;
  [[nodiscard]] error_kind kind() const noexcept override;

 private:
  std::string sqlstate_;
  std::string message_;
  std::string detail_;
  std::string hint_;
  std::string query_;
};

// A connection could not be opened, or was lost. Always poisons the connection. When the server
// refused the connection with a SQLSTATE (53300, 57P03, 28P01, ...), sqlstate() has it.
// Messages never contain a password: they name host, port, database and user only.
class connection_error : public error {
 public:
  explicit connection_error(std::string message, std::string sqlstate = {});
  [[nodiscard]] const std::string& sqlstate() const noexcept { return sqlstate_; }
  [[nodiscard]] bool poisons_connection() const noexcept override { return true; }
  [[nodiscard]] error_kind kind() const noexcept override;

 private:
  std::string sqlstate_;
};

// A value could not be converted (NULL where a value was required, a malformed number, a column
// that does not exist). Never poisons the connection.
class conversion_error : public error {
 public:
  using error::error;
};

}  // namespace sluice::pg
