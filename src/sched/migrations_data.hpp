#pragma once

// The schema migrations compiled into the library (generated from sql/migrations/).

#include <vector>

namespace sluice::sched::detail {

struct embedded_migration {
  int version;
  const char* name;
  const char* sql;
};

// Sorted by version.
const std::vector<embedded_migration>& embedded_migrations();

}  // namespace sluice::sched::detail
