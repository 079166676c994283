#pragma once

// Who a node process is, precisely enough that another process starting under the same node id
// on the same machine can tell at once whether the earlier one still runs (Linux /proc).

#include <string>
#include <string_view>

namespace sluice::sched::detail {

// "<kernel boot id>:<pid namespace>:<pid>:<start time in clock ticks after boot>" for this
// process; empty when /proc cannot say (then only heartbeats tell whether a process lives).
[[nodiscard]] std::string own_process_key();

enum class process_liveness {
  alive,    // the process that `key` names is running on this machine
  gone,     // it ran on this machine (same boot, same pid namespace) and has exited
  unknown,  // another machine, another pid namespace, or no key: this machine cannot tell
};

[[nodiscard]] process_liveness liveness_of(std::string_view key);

}  // namespace sluice::sched::detail
