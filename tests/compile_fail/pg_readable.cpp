// Compiled by tests/compile_fail/check.cmake with -DSLUICE_CASE=<name>: every case must fail to
// compile with the message in the comment beside it, never compile (and fail later to link).

#include <optional>
#include <string_view>

#include "sluice/pg/result.hpp"

namespace {
struct not_a_column_type {};
}  // namespace

int main() {
  const sluice::pg::result res;
#if SLUICE_CASE_unsupported_type  // "do not support this T"
  (void)res.one<not_a_column_type>();
#elif SLUICE_CASE_plain_char               // "do not support this T"
  (void)res[0].get<char>(0);
#elif SLUICE_CASE_optional_of_unsupported  // "do not support this T"
  (void)res[0].get<std::optional<not_a_column_type> >("x");
#elif SLUICE_CASE_view_of_a_temporary      // "would dangle"
  (void)sluice::pg::result().one<std::string_view>();
#elif SLUICE_CASE_supported                // the control: this one compiles
  (void)res.one<long long>();
  (void)res[0].get<std::optional<std::string_view> >(0);
#endif
  return 0;
}
