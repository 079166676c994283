#!/usr/bin/env bash
# The installed sluice, as a user of the library and of the package sees it:
#   1. a staged install (DESTDIR=<work>/stage cmake --install <build> --prefix /usr);
#   1b. an install with --prefix X (no DESTDIR) writes nothing outside X;
#   2. every installed header compiles on its own, and includes nothing that is not installed;
#   3. examples/pool and examples/embedded-scheduler build with find_package(sluice) against the
#      staged install and run against the database in the environment (PG* / DATABASE_URL); so
#      does a consumer that includes <sluice/sluice.hpp> and reads a value with one<long long>();
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

step "an install with --prefix writes nothing outside it"
# Every file cmake installs is reported on a line "-- Installing: <path>" or "-- Up-to-date: <path>".
own_prefix=$work/prefix
cmake --install "$build" --prefix "$own_prefix" >"$work/install-prefix.log" ||
  fail "cmake --install --prefix failed (see $work/install-prefix.log)"
installed=$(sed -nE 's/^-- (Installing|Up-to-date|Set runtime path of): "?([^"]*)"?.*$/\2/p' "$work/install-prefix.log")
[ "$(wc -l <<<"$installed")" -ge 10 ] || fail "the install log lists only: $installed"
outside=$(grep -vE "^$own_prefix/" <<<"$installed" || true)
[ -z "$outside" ] || fail "cmake --install --prefix $own_prefix wrote outside the prefix: $outside"
[ -f "$own_prefix/etc/sluice/sluice.toml" ] || fail "etc/sluice/sluice.toml not under the prefix"
echo "$(wc -l <<<"$installed") files, all under the prefix"

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

step "a consumer of <sluice/sluice.hpp> and one<long long>()"
mkdir -p "$work/consumer"
cat >"$work/consumer/main.cpp" <<'CPP'
#include <sluice/sluice.hpp>

#include <cstdio>

int main() {
  try {
    sluice::pool::settings s;
    s.name = "consumer";
    s.size = 1;
    s.max_overflow = 0;
    sluice::pool::pool pool(s);
    auto lease = pool.acquire();
    const long long n = lease->query("SELECT $1::bigint * 2", 21'000'000'000LL).one<long long>();
    const auto absent = lease->query("SELECT NULL::bigint").one<std::optional<long long>>();
    std::printf("consumer: %lld, %s, sluice %s\n", n, absent ? "not null" : "null",
                sluice::version_string);
    return n == 42'000'000'000LL && !absent ? 0 : 1;
  } catch (const sluice::error& e) {
    std::fprintf(stderr, "consumer: %s\n", e.what());
    return 1;
  }
}
CPP
cat >"$work/consumer/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.25)
project(sluice_consumer LANGUAGES CXX)
find_package(sluice 0.1 CONFIG REQUIRED)
add_executable(consumer main.cpp)
target_compile_features(consumer PRIVATE cxx_std_20)
target_compile_options(consumer PRIVATE -Wall -Wextra -Wpedantic -Werror)
target_link_libraries(consumer PRIVATE sluice::sluice)
CMAKE
cmake -S "$work/consumer" -B "$work/consumer/build" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF \
  -Dsluice_DIR="$(dirname "$config")" >"$work/consumer.configure.log" 2>&1 ||
  { cat "$work/consumer.configure.log" >&2; fail "the consumer does not configure"; }
cmake --build "$work/consumer/build" -j"$jobs" >"$work/consumer.build.log" 2>&1 ||
  { tail -50 "$work/consumer.build.log" >&2; fail "the consumer does not build"; }
"$work/consumer/build/consumer" || fail "the consumer failed"
"$work/embedded-scheduler/embedded_scheduler" --once || fail "embedded_scheduler failed"

step "the README's C++ example, as printed there"
mkdir -p "$work/readme"
awk '/^```cpp$/ { inside = 1; next } inside && /^```$/ { exit } inside { print }' \
  "$src/README.md" >"$work/readme/main.cpp"
grep -q 'sluice/sluice.hpp' "$work/readme/main.cpp" || fail "no C++ example found in README.md"
sed 's/consumer/readme_example/g' "$work/consumer/CMakeLists.txt" >"$work/readme/CMakeLists.txt"
cmake -S "$work/readme" -B "$work/readme/build" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF \
  -Dsluice_DIR="$(dirname "$config")" >"$work/readme.configure.log" 2>&1 ||
  { cat "$work/readme.configure.log" >&2; fail "the README example does not configure"; }
cmake --build "$work/readme/build" -j"$jobs" >"$work/readme.build.log" 2>&1 ||
  { tail -50 "$work/readme.build.log" >&2; fail "the README example does not build"; }
out="$("$work/readme/build/readme_example")" || fail "the README example failed: $out"
grep -qE '^the server has [0-9]+ sessions$' <<<"$out" || fail "the README example printed: $out"
psql -q -c 'DROP SCHEMA IF EXISTS readme_example CASCADE' >/dev/null 2>&1 || true

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
if grep -q -- "./usr/etc" "$work/deb.contents"; then
  fail "$(basename "$deb") has files under /usr/etc; its configuration belongs in /etc"
fi
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
