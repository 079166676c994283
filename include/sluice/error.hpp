#pragma once

// sluice::error: the one base of every error libsluice reports, so that a caller can handle
// "sluice failed" in one place and still tell the layers apart:
//
//   sluice::error                      (std::runtime_error)
//   ├── pg::error                      poisons_connection(), kind() (the SQLSTATE's class)
//   │   ├── pg::sql_error              the server's error: sqlstate(), detail(), hint(), query()
//   │   ├── pg::connection_error       refused or lost; sqlstate() when the server said why
//   │   └── pg::conversion_error       a value that does not convert to the type asked for
//   ├── pool::pool_timeout             acquire() waited its timeout
//   ├── pool::pool_closed              the pool is closed
//   ├── pool::budget_error             the pools need more connections than the budget allows
//   ├── pool::settings_error           a pool setting is out of range
//   ├── sched::schedule_error          malformed schedule, cron, time zone or payload text
//   ├── sched::schema_error            the schema is missing, behind, or newer than the library
//   └── sched::conflict_error          a task name that is taken
//
// A call that breaks a documented precondition (a member called in the wrong state, an index
// past the end, a negative timeout) throws std::logic_error or one of its standard subclasses
// (std::invalid_argument, std::out_of_range), as the standard library does; running out of
// memory or threads gives std::bad_alloc and std::system_error.
// Thread-safety: exceptions are values.

#include <stdexcept>

namespace sluice {

class error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
  error(const error&) = default;
  error& operator=(const error&) = default;
  error(error&&) = default;
  error& operator=(error&&) = default;
  // Out of line (src/pg/error.cpp), so that its type information lives in libsluice alone.
  ~error() override;
};

}  // namespace sluice
