# Turns sql/migrations/*.sql into a C++ source with one entry per file, so the binary carries
# its schema and never reads SQL files at run time.
#   cmake -DSQL_DIR=... -DOUTPUT=... -P embed_sql.cmake
file(GLOB files "${SQL_DIR}/*.sql")
list(SORT files)
set(body "")
foreach(f IN LISTS files)
  get_filename_component(name "${f}" NAME_WE)
  file(READ "${f}" text)
  string(REGEX MATCH "^[0-9]+" version "${name}")
  math(EXPR version "${version}")
  string(APPEND body "  {${version}, \"${name}\", R\"sluice_sql(${text})sluice_sql\"},\n")
endforeach()
file(WRITE "${OUTPUT}.tmp" "// Generated from sql/migrations by cmake/embed_sql.cmake; do not edit.
#include \"sched/migrations_data.hpp\"

namespace sluice::sched::detail {
const std::vector<embedded_migration>& embedded_migrations() {
  static const std::vector<embedded_migration> all = {
${body}  };
  return all;
}
}  // namespace sluice::sched::detail
")
file(COPY_FILE "${OUTPUT}.tmp" "${OUTPUT}" ONLY_IF_DIFFERENT)
