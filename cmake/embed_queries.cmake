# Turns sql/queries/**/*.sql into a C++ header with one constant per file,
# sluice::sched::queries::<file name without .sql>, so the scheduler's statements live as SQL and
# the binary still reads no SQL files at run time.
#   cmake -DQUERY_DIR=... -DOUTPUT=... -P embed_queries.cmake
#
# Per file, in this order:
#   - a line `-- @include <name>` is replaced by the file fragments/<name>.sql (its comments
#     stripped), each of its lines indented like the directive; fragments do not include others;
#   - whole-line `--` comments and blank lines are dropped, trailing blanks are trimmed, and one
#     final `;` is removed (a statement is sent on its own, as a prepared or parameterised query);
#   - the newlines stay, so a `--` comment at the end of a line cannot swallow the rest.
# `{s}` (the quoted schema) is left as is: detail::with_schema substitutes it at run time.
# Fragments are embedded as constants too (queries::task_columns).
cmake_minimum_required(VERSION 3.20)

# Comments, blank lines, trailing blanks and a final `;` out of `text` (in place).
function(sluice_clean_sql var)
  set(text "\n${${var}}\n")
  string(REGEX REPLACE "[ \t\r]+\n" "\n" text "${text}")
  string(REGEX REPLACE "\n[ \t]*--[^\n]*" "" text "${text}")
  string(REGEX REPLACE "\n\n+" "\n" text "${text}")
  string(STRIP "${text}" text)
  string(REGEX REPLACE ";$" "" text "${text}")
  set(${var} "${text}" PARENT_SCOPE)
endfunction()

file(GLOB_RECURSE files "${QUERY_DIR}/*.sql")
list(SORT files)

set(names "")
foreach(f IN LISTS files)
  get_filename_component(name "${f}" NAME_WE)
  get_filename_component(dir "${f}" DIRECTORY)
  get_filename_component(area "${dir}" NAME)
  if(NOT name MATCHES "^[a-z][a-z0-9_]*$")
    message(FATAL_ERROR "${f}: a query file is named like a C++ identifier (lower case, _)")
  endif()
  if(name IN_LIST names)
    message(FATAL_ERROR "${f}: a second query named ${name} (names are unique across folders)")
  endif()
  list(APPEND names "${name}")
  if(area STREQUAL "fragments")
    file(READ "${f}" text)
    if("\n${text}" MATCHES "\n[ \t]*-- @include")
      message(FATAL_ERROR "${f}: fragments do not include other fragments")
    endif()
    sluice_clean_sql(text)
    if(text MATCHES ";")
      message(FATAL_ERROR "${f}: a fragment has no `;`")
    endif()
    set(fragment_${name} "${text}")
  endif()
endforeach()

set(body "")
foreach(f IN LISTS files)
  get_filename_component(name "${f}" NAME_WE)
  file(RELATIVE_PATH rel "${QUERY_DIR}" "${f}")
  file(READ "${f}" text)
  set(text "\n${text}")
  while(text MATCHES "\n([ \t]*)-- @include ([^ \t\n]*)[ \t]*\n")
    set(directive "${CMAKE_MATCH_0}")
    set(indent "${CMAKE_MATCH_1}")
    set(fragment "${CMAKE_MATCH_2}")
    if(NOT DEFINED fragment_${fragment})
      message(FATAL_ERROR "${f}: no fragment ${QUERY_DIR}/fragments/${fragment}.sql")
    endif()
    string(REPLACE "\n" "\n${indent}" expanded "\n${fragment_${fragment}}\n")
    string(REGEX REPLACE "[ \t]+$" "" expanded "${expanded}")
    string(REPLACE "${directive}" "${expanded}" text "${text}")
  endwhile()
  sluice_clean_sql(text)
  if(text STREQUAL "")
    message(FATAL_ERROR "${f}: no SQL")
  endif()
  if(text MATCHES "\\)sluice_sql\"")
    message(FATAL_ERROR "${f}: contains the raw string delimiter )sluice_sql\"")
  endif()
  string(APPEND body "// sql/queries/${rel}\ninline constexpr const char* ${name} = R\"sluice_sql(${text})sluice_sql\";\n")
endforeach()

file(WRITE "${OUTPUT}.tmp" "// Generated from sql/queries by cmake/embed_queries.cmake; do not edit.
#pragma once

namespace sluice::sched::queries {

${body}
}  // namespace sluice::sched::queries
")
file(COPY_FILE "${OUTPUT}.tmp" "${OUTPUT}" ONLY_IF_DIFFERENT)
