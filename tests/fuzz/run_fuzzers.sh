#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz with clang and runs them for a bounded time on the
# seed corpora in tests/fuzz-corpus/ (docs/fuzzing.md). Registered with ctest (label "fuzz"):
#
#   run_fuzzers.sh build SOURCE_DIR FUZZ_BUILD_DIR
#       configure and build tests/fuzz in FUZZ_BUILD_DIR (ccache is used when installed)
#   run_fuzzers.sh run SOURCE_DIR FUZZ_BUILD_DIR TARGET [SECONDS]
#       fuzz TARGET (cron, config, task_spec, http_request) for SECONDS (default 25, or $SLUICE_FUZZ_SECONDS)
#       starting from tests/fuzz-corpus/TARGET. The corpus in the repository is only read: new
#       inputs go to FUZZ_BUILD_DIR/corpus/TARGET, crashes to FUZZ_BUILD_DIR/artifacts/TARGET/.
#   run_fuzzers.sh all SOURCE_DIR FUZZ_BUILD_DIR [SECONDS]
#       build, then run every target in turn
#
# Environment: SLUICE_FUZZ_CXX (default: clang++, else clang++-14), SLUICE_JOBS (build jobs,
# default 2), SLUICE_FUZZ_SECONDS. Exit status 1 on a finding or when clang/libFuzzer is missing.
set -euo pipefail

die() {
  echo "run_fuzzers.sh: $*" >&2
  exit 1
}

find_clang() {
  local cxx=${SLUICE_FUZZ_CXX:-}
  if [[ -z $cxx ]]; then
    for c in clang++ clang++-14 clang++-15 clang++-16; do
      if command -v "$c" >/dev/null; then
        cxx=$(command -v "$c")
        break
      fi
    done
  fi
  [[ -n $cxx ]] || die "clang++ not found: the fuzz targets need clang with libFuzzer. Install the Debian packages clang and libclang-rt-14-dev (or set SLUICE_FUZZ_CXX)"
  # libFuzzer ships as part of clang's runtime (compiler-rt); without it linking fails late and
  # obscurely, so check first.
  local rt
  rt=$("$cxx" -print-file-name=libclang_rt.fuzzer-x86_64.a 2>/dev/null || true)
  if [[ ! -f $rt ]]; then
    rt="$("$cxx" -print-runtime-dir 2>/dev/null || true)/libclang_rt.fuzzer-x86_64.a"
  fi
  [[ -f $rt ]] || die "libFuzzer (libclang_rt.fuzzer-x86_64.a) not found for $cxx: install the Debian package libclang-rt-14-dev (or the one matching your clang)"
  echo "$cxx"
}

build() {
  local src=$1 bin=$2 cxx generator=()
  cxx=$(find_clang)
  command -v ninja >/dev/null && generator=(-G Ninja)
  # A build folder first configured with another compiler keeps it in its cache: start over.
  if [[ -f $bin/CMakeCache.txt ]] && ! grep -q "CMAKE_CXX_COMPILER:[A-Z]*=$cxx\$" "$bin/CMakeCache.txt"; then
    rm -rf "$bin"
  fi
  cmake -S "$src/tests/fuzz" -B "$bin" "${generator[@]}" -DCMAKE_CXX_COMPILER="$cxx" >/dev/null \
    || die "configuring $src/tests/fuzz in $bin failed"
  cmake --build "$bin" -j "${SLUICE_JOBS:-2}" || die "building the fuzz targets failed"
}

run() {
  local src=$1 bin=$2 target=$3 seconds=${4:-${SLUICE_FUZZ_SECONDS:-25}}
  local exe=$bin/fuzz_$target seeds=$src/tests/fuzz-corpus/$target
  [[ -x $exe ]] || die "$exe is missing: run '$0 build $src $bin' first"
  [[ -d $seeds ]] || die "no seed corpus at $seeds"
  local corpus=$bin/corpus/$target artifacts=$bin/artifacts/$target log=$bin/fuzz_$target.log
  rm -rf "$corpus" "$artifacts"
  mkdir -p "$corpus" "$artifacts"
  echo "fuzz_$target: ${seconds}s from $(find "$seeds" -type f | wc -l) seed inputs (log: $log)"
  # -timeout: one input running this long is a hang; -rss_limit_mb: a memory blow-up is a finding.
  if ! "$exe" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=4096 \
    -print_final_stats=1 -artifact_prefix="$artifacts/" "$corpus" "$seeds" >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo >&2
    echo "fuzz_$target FOUND A PROBLEM. Input(s):" >&2
    ls -1 "$artifacts"/* >&2 2>/dev/null || true
    echo "Reproduce with: $exe <input>; once fixed, copy the input into $seeds/ as a regression input." >&2
    exit 1
  fi
  grep -E '^stat::(number_of_executed_units|new_units_added|peak_rss_mb)' "$log" || true
  grep -E '^#[0-9]+ +DONE' "$log" | tail -n 1 || true
}

cmd=${1:-}
case $cmd in
  build) (($# == 3)) || die "usage: $0 build SOURCE_DIR FUZZ_BUILD_DIR"; build "$2" "$3" ;;
  run) (($# >= 4)) || die "usage: $0 run SOURCE_DIR FUZZ_BUILD_DIR TARGET [SECONDS]"; run "$2" "$3" "$4" "${5:-}" ;;
  all)
    (($# >= 3)) || die "usage: $0 all SOURCE_DIR FUZZ_BUILD_DIR [SECONDS]"
    build "$2" "$3"
    for t in cron config task_spec http_request; do run "$2" "$3" "$t" "${4:-}"; done
    ;;
  *) die "usage: $0 build|run|all ... (see the comment at the top)" ;;
esac
