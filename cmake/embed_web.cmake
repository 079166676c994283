# Turns the dashboard's files (web/*) and Chart.js into a C++ source with one byte array per
# file, so `sluice serve` carries its dashboard and reads no file at run time (and needs no
# internet: nothing is fetched from a CDN).
#   cmake -DWEB_DIR=... -DCHART_JS=... -DOUTPUT=... -P embed_web.cmake
# CHART_JS must be a browser build that defines the global `Chart` (Debian's libjs-chart.js
# ships one as /usr/share/javascript/chart.js/chart.min.js); it is served as /chart.min.js.
# Each file gets a strong ETag: the first 20 hex digits of its SHA-256.
foreach(var WEB_DIR CHART_JS OUTPUT)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "embed_web.cmake: -D${var}=... is required")
  endif()
endforeach()

if(NOT EXISTS "${CHART_JS}")
  message(FATAL_ERROR "embed_web.cmake: ${CHART_JS} does not exist; install Debian's libjs-chart.js (scripts/bootstrap)")
endif()
# The ES-module builds (chart.esm.js, chart.mjs) would load but define nothing for the page's
# plain <script>; only the UMD build sets the global.
file(STRINGS "${CHART_JS}" umd_marker LIMIT_COUNT 1 REGEX "define\\.amd.*\\.Chart=|global\\.Chart *=")
if(NOT umd_marker)
  message(FATAL_ERROR "embed_web.cmake: ${CHART_JS} is not a UMD build of Chart.js (no global Chart); use chart.min.js or chart.js from libjs-chart.js")
endif()

file(GLOB web_files LIST_DIRECTORIES false "${WEB_DIR}/*")
list(SORT web_files)
set(entries "")
foreach(f IN LISTS web_files)
  get_filename_component(name "${f}" NAME)
  # Editors' hidden and backup files are not part of the page.
  if(name MATCHES "^\\.|~$")
    continue()
  endif()
  list(APPEND entries "${name}=${f}")
endforeach()
list(APPEND entries "chart.min.js=${CHART_JS}")

set(arrays "")
set(table "")
set(index 0)
foreach(entry IN LISTS entries)
  string(FIND "${entry}" "=" eq)
  string(SUBSTRING "${entry}" 0 ${eq} name)
  math(EXPR from "${eq} + 1")
  string(SUBSTRING "${entry}" ${from} -1 path)
  # Names become URL paths and C++ string literals: keep them plain.
  if(NOT name MATCHES "^[A-Za-z0-9][A-Za-z0-9._-]*$")
    message(FATAL_ERROR "embed_web.cmake: '${name}' is not a plain file name ([A-Za-z0-9._-]); rename it")
  endif()
  file(READ "${path}" hex HEX)
  file(SHA256 "${path}" sha)
  string(SUBSTRING "${sha}" 0 20 etag)
  file(SIZE "${path}" size)
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
  string(REGEX REPLACE "((0x..,){24})" "\\1\n" bytes "${bytes}")
  # A trailing zero keeps an empty file's array well-formed; the size leaves it out.
  string(APPEND arrays "// ${name}\nconst unsigned char asset_${index}[] = {\n${bytes}0x00};\n\n")
  string(APPEND table "    {\"${name}\", R\"(\"${etag}\")\", asset_${index}, ${size}},\n")
  math(EXPR index "${index} + 1")
endforeach()

file(WRITE "${OUTPUT}.tmp" "// Generated from web/ and ${CHART_JS} by cmake/embed_web.cmake; do not edit.
#include \"http/dashboard.hpp\"

namespace sluice::http::detail {
namespace {

${arrays}const web_asset assets[] = {
${table}};

}  // namespace

std::span<const web_asset> embedded_web_assets() noexcept {
  return assets;
}

}  // namespace sluice::http::detail
")
# Replaced even when unchanged, so the output is newer than its inputs and make does not run this
# again on every build (ccache makes the recompile of identical content cheap).
file(RENAME "${OUTPUT}.tmp" "${OUTPUT}")
