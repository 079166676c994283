#pragma once

// Every SQL statement of the scheduler, as sluice::sched::queries::<name> (queries::claim, ...).
// The SQL lives in sql/queries/<area>/<name>.sql; cmake/embed_queries.cmake embeds it at build
// time (shared fragments, sql/queries/fragments/, are spliced in by `-- @include <fragment>`).
// `{s}` stands for the quoted schema name and is substituted once when the store or engine is
// built; values are always bound parameters.

#include "sched/queries_sql.hpp"
