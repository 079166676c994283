# shellcheck shell=bash
# Shared shell functions for the scripts in this folder. Sourced, never run:
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# After sourcing, SLUICE_ROOT is the repository root and SLUICE_SCRIPT the calling script's
# name, which prefixes every message so interleaved output says where it came from.

SLUICE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
SLUICE_SCRIPT="scripts/$(basename "${BASH_SOURCE[1]:-$0}")"

msg() { printf '%s: %s\n' "$SLUICE_SCRIPT" "$*"; }
warn() { printf '%s: %s\n' "$SLUICE_SCRIPT" "$*" >&2; }
die() {
  printf '%s: error: %s\n' "$SLUICE_SCRIPT" "$*" >&2
  exit 1
}

# The CMake preset the scripts build and test with: release unless SLUICE_PRESET names another
# one from CMakePresets.json. Each preset builds into build/<preset>.
sluice_preset() {
  local preset="${SLUICE_PRESET:-release}"
  case "$preset" in
    release | debug | asan | tsan) printf '%s\n' "$preset" ;;
    *) die "unknown SLUICE_PRESET '$preset' (use release, debug, asan or tsan)" ;;
  esac
}

# Configures (when needed: CMake skips work that is up to date) and builds one preset.
# Further arguments go to `cmake --build`, e.g. `--target sluice_cli`.
sluice_build() {
  local preset="$1"
  shift
  local jobs="${SLUICE_JOBS:-$(nproc)}"
  msg "configuring (cmake --preset $preset)"
  (cd "$SLUICE_ROOT" && cmake --preset "$preset" >/dev/null) ||
    die "cmake configure failed for preset '$preset' (rerun: cmake --preset $preset)"
  msg "building (cmake --build --preset $preset -j$jobs $*)"
  (cd "$SLUICE_ROOT" && cmake --build --preset "$preset" -j "$jobs" "$@") ||
    die "build failed for preset '$preset'"
}
