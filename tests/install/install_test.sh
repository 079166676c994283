#!/usr/bin/env bash
# The installed sluice, as a user of the library and of the package sees it:
#   1. a staged install (DESTDIR=<work>/stage cmake --install <build> --prefix /usr);
#   2. every installed header compiles on its own, and includes nothing that is not installed;
#   3. examples/pool and examples/embedded-scheduler build with find_package(sluice) against the
#      staged install and run against the database in the environment (PG* / DATABASE_URL);
#   4. sluice configures as a subdirectory without its tests; pkg-config finds sluice in the staged install and a program links with it;
#   5. the Debian package builds (cpack -G DEB) and holds the binary, headers, unit and config.
# Usage: install_test.sh <build dir> <source dir> <work dir>
set -euo pipefail

build=$1
src=$2
work=$3
jobs=${SLUICE_TEST_JOBS:-2}

fail() {
  echo "install_test: FAIL: $*" >&2
  exit 1
}
step() { echo "== $*"; }

rm -rf "$work"
mkdir -p "$work"
work=$(cd "$work" && pwd)
build=$(cd "$build" && pwd)
src=$(cd "$src" && pwd)
stage=$work/stage
prefix=$stage/usr

step "staged install"
DESTDIR=$stage cmake --install "$build" --prefix /usr >"$work/install.log" ||
  fail "cmake --install failed (see $work/install.log)"
[ -x "$prefix/bin/sluice" ] || fail "bin/sluice not installed"
"$prefix/bin/sluice" version >/dev/null || fail "the installed sluice does not run"
config=$(find "$prefix" -name sluiceConfig.cmake | head -1)
[ -n "$config" ] || fail "no sluiceConfig.cmake installed"
pcfile=$(find "$prefix" -name sluice.pc | head -1)
[ -n "$pcfile" ] || fail "no sluice.pc installed"

step "each installed header compiles on its own"
count=0
while IFS= read -r header; do
  printf '#include <%s>\n#include <%s>\n' "$header" "$header" >"$work/header_check.cpp"
  g++ -std=c++20 -fsyntax-only -Wall -Wextra -Wpedantic -Werror -I"$prefix/include" \
    "$work/header_check.cpp" || fail "$header does not compile on its own"
  # Only the -I above is searched, so any private (src/) header would already have failed to
  # compile; also refuse quoted includes outside sluice/, which could resolve by accident.
  if grep -nE '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$prefix/include/$header" |
    grep -vE '"sluice/'; then
    fail "$header includes a header outside sluice/"
  fi
  count=$((count + 1))
done < <(cd "$prefix/include" && find sluice -name '*.hpp' | sort)
[ "$count" -ge 10 ] || fail "only $count headers installed"
echo "$count headers"

step "examples against the staged install"
for example in pool embedded-scheduler; do
  cmake -S "$src/examples/$example" -B "$work/$example" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF \
    -Dsluice_DIR="$(dirname "$config")" >"$work/$example.configure.log" 2>&1 ||
    { cat "$work/$example.configure.log" >&2; fail "examples/$example does not configure"; }
  cmake --build "$work/$example" -j"$jobs" >"$work/$example.build.log" 2>&1 ||
    { tail -50 "$work/$example.build.log" >&2; fail "examples/$example does not build"; }
done
"$work/pool/pool_example" || fail "pool_example failed"
"$work/embedded-scheduler/embedded_scheduler" --once || fail "embedded_scheduler failed"

step "add_subdirectory"
mkdir -p "$work/subdir"
cat >"$work/subdir/CMakeLists.txt" <<CMAKE
cmake_minimum_required(VERSION 3.25)
project(uses_sluice LANGUAGES CXX)
add_subdirectory("$src" sluice)
add_executable(pool_example "$src/examples/pool/main.cpp")
target_link_libraries(pool_example PRIVATE sluice::sluice)
CMAKE
cmake -S "$work/subdir" -B "$work/subdir/build" -DSLUICE_BUILD_DAEMON=OFF >"$work/subdir.log" 2>&1 ||
  { tail -30 "$work/subdir.log" >&2; fail "sluice does not configure as a subdirectory"; }
targets=$(cmake --build "$work/subdir/build" --target help)
grep -q pool_example <<<"$targets" || fail "the subdirectory project lacks its own target"
if grep -qE 'unit_|integration_|_bench' <<<"$targets"; then
  fail "sluice as a subdirectory builds its tests or benchmarks"
fi

step "pkg-config"
export PKG_CONFIG_PATH
PKG_CONFIG_PATH=$(dirname "$pcfile")
flags=$(pkg-config --cflags --libs sluice) || fail "pkg-config does not know sluice"
printf '#include <sluice/pool/pool.hpp>\nint main() { sluice::pool::settings s; return s.size > 0 ? 0 : 1; }\n' \
  >"$work/pc_check.cpp"
# shellcheck disable=SC2086 # word splitting of the flags is intended
g++ -std=c++20 "$work/pc_check.cpp" -o "$work/pc_check" $flags || fail "linking with pkg-config flags failed: $flags"
"$work/pc_check" || fail "pc_check did not run"

step "Debian package"
(cd "$build" && cpack -G DEB -B "$work/deb" >"$work/cpack.log" 2>&1) ||
  { tail -30 "$work/cpack.log" >&2; fail "cpack -G DEB failed"; }
deb=$(ls "$work"/deb/*.deb 2>/dev/null | head -1)
[ -n "$deb" ] || fail "no .deb produced"
dpkg-deb --info "$deb" >"$work/deb.info"
dpkg-deb --contents "$deb" >"$work/deb.contents"
for path in ./usr/bin/sluice ./usr/include/sluice/pool/pool.hpp ./usr/include/sluice/version.hpp \
  ./etc/sluice/sluice.toml sluice.service sluiceConfig.cmake sluice.pc; do
  grep -q -- "$path" "$work/deb.contents" || fail "$path missing from $(basename "$deb")"
done
depends=$(dpkg-deb -f "$deb" Depends)
for dep in libpq5 libcurl adduser; do
  grep -q "$dep" <<<"$depends" || fail "Depends lacks $dep: $depends"
done
control=$(dpkg-deb --ctrl-tarfile "$deb" | tar -t)
for script in postinst prerm postrm conffiles; do
  grep -q "$script" <<<"$control" || fail "control file $script missing"
done
echo "$(basename "$deb"): Depends: $depends"
echo "install_test: OK"
