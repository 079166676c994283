# cmake -DCXX=<compiler> -DINCLUDE=<include dir> -DSOURCE=<file> -DCASE=<name> -DEXPECT=<text>
#       -P check.cmake
# Compiles SOURCE with -DSLUICE_CASE_<name>=1. With EXPECT empty the compile must succeed;
# otherwise it must fail and its diagnostics must contain EXPECT.
execute_process(
  COMMAND ${CXX} -std=c++20 -fsyntax-only -Wall -Wextra -Wpedantic -I${INCLUDE}
          -DSLUICE_CASE_${CASE}=1 ${SOURCE}
  RESULT_VARIABLE rc
  OUTPUT_VARIABLE out
  ERROR_VARIABLE out)
if(EXPECT STREQUAL "")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${CASE}: expected to compile, but:\n${out}")
  endif()
  message(STATUS "${CASE}: compiles, as it should")
  return()
endif()
if(rc EQUAL 0)
  message(FATAL_ERROR "${CASE}: compiled, but must not")
endif()
string(FIND "${out}" "${EXPECT}" at)
if(at EQUAL -1)
  message(FATAL_ERROR "${CASE}: failed to compile, but without \"${EXPECT}\":\n${out}")
endif()
message(STATUS "${CASE}: refused with \"${EXPECT}\"")
