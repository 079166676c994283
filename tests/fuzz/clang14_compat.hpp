#pragma once

// Force-included into every file of the fuzz build (tests/fuzz/CMakeLists.txt), never into the
// main build.
//
// Why: Debian 12's clang 14 compiles against g++ 12's libstdc++, whose <source_location> only
// declares std::source_location when the compiler has __builtin_source_location (clang 15+).
// sluice/pool/pool.hpp uses it as a default argument, and the configuration loader and the HTTP
// JSON layer include that header. The fuzz targets never call those functions, so a minimal
// stand-in with the same interface is enough; it is only declared when the library has none.

#include <source_location>

#if !defined(__cpp_lib_source_location)
namespace std {  // NOLINT(cert-dcl58-cpp): test-only stand-in, see above
struct source_location {
  static constexpr source_location current(const char* file = __builtin_FILE(),
                                           const char* function = __builtin_FUNCTION(),
                                           unsigned line = __builtin_LINE(),
                                           unsigned column = __builtin_COLUMN()) noexcept {
    source_location s;
    s.file_ = file;
    s.function_ = function;
    s.line_ = line;
    s.column_ = column;
    return s;
  }
  constexpr const char* file_name() const noexcept { return file_; }
  constexpr const char* function_name() const noexcept { return function_; }
  constexpr unsigned line() const noexcept { return line_; }
  constexpr unsigned column() const noexcept { return column_; }

 private:
  const char* file_ = "";
  const char* function_ = "";
  unsigned line_ = 0;
  unsigned column_ = 0;
};
}  // namespace std
#endif
