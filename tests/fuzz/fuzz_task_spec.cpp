// libFuzzer target: the body of POST /api/v1/tasks, task_spec_from_json() on arbitrary bytes.
//
// Beyond "no crash", it checks what src/http/task_spec_json.hpp promises:
//   - it throws api_error(bad_request) and nothing else (std::bad_alloc aside);
//   - a spec it returns passes task_spec::validate(), carries a payload that is a JSON object,
//     and has a schedule that survives to_string() -> schedule::parse() unchanged;
//   - the same for reschedule_time_from_json() on the same document.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <optional>
#include <string>
#include <string_view>

#include "http/errors.hpp"
#include "http/json.hpp"
#include "http/task_spec_json.hpp"
#include "sluice/sched/schedule.hpp"
#include "sluice/sched/task.hpp"

namespace {

using sluice::http::api_error;
using sluice::http::error_code;

[[noreturn]] void fail(const char* what, std::string_view detail) {
  std::fprintf(stderr, "fuzz_task_spec invariant broken: %s [%.*s]\n", what,
               static_cast<int>(detail.size()), detail.data());
  std::abort();
}

void expect_bad_request(const api_error& e) {
  if (e.code() != error_code::bad_request)
    fail("api_error with a code other than bad_request", e.what());
  if (std::string_view(e.what()).empty()) fail("api_error without a message", "");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > 65536) return -1;
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  std::optional<sluice::sched::task_spec> spec;
  try {
    spec = sluice::http::task_spec_from_json(text);
  } catch (const api_error& e) {
    expect_bad_request(e);
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const std::exception& e) {
    fail("task_spec_from_json threw something other than api_error", e.what());
  }

  if (spec) {
    try {
      spec->validate();
    } catch (const std::exception& e) {
      fail("a returned spec fails validate()", e.what());
    }
    const auto payload = sluice::http::json::parse(spec->payload, nullptr, false);
    if (!payload.is_object()) fail("payload is not a JSON object", spec->payload);
    const auto text_form = spec->when.to_string();
    try {
      if (!(sluice::sched::schedule::parse(text_form) == spec->when))
        fail("schedule round trip differs", text_form);
    } catch (const sluice::sched::schedule_error& e) {
      fail("schedule to_string() does not parse", e.what());
    }
  }

  // The reschedule body parser, on the same document when it is one.
  const auto body = sluice::http::json::parse(text, nullptr, false);
  if (!body.is_discarded() && !sluice::http::nesting_exceeds(body, sluice::http::max_json_depth)) {
    try {
      (void)sluice::http::reschedule_time_from_json(body);
    } catch (const api_error& e) {
      expect_bad_request(e);
    } catch (const std::bad_alloc&) {
      throw;
    } catch (const std::exception& e) {
      fail("reschedule_time_from_json threw something other than api_error", e.what());
    }
  }
  return 0;
}
