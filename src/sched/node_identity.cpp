#include "sched/node_identity.hpp"

#include <array>
#include <fstream>
#include <sstream>
#include <vector>

#include <unistd.h>

namespace sluice::sched::detail {

namespace {

std::string first_line(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

std::string pid_namespace() {
  std::array<char, 128> buf{};
  const ssize_t n = ::readlink("/proc/self/ns/pid", buf.data(), buf.size() - 1);
  if (n <= 0) return {};
  std::string link(buf.data(), static_cast<std::size_t>(n));  // "pid:[4026531836]"
  const auto open = link.find('[');
  const auto close = link.find(']');
  if (open == std::string::npos || close == std::string::npos || close <= open + 1) return {};
  return link.substr(open + 1, close - open - 1);
}

struct proc_stat {
  bool found = false;
  std::string pid;
  char state = '?';
  std::string start_time;
};

// /proc/<pid>/stat: "pid (comm) state ppid ... starttime(22nd field) ...". The command name may
// hold spaces and parentheses, so the fields are counted from its last ')'.
proc_stat read_stat(const std::string& pid) {
  proc_stat st;
  std::ifstream in("/proc/" + pid + "/stat");
  if (!in) return st;
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto paren = text.rfind(')');
  if (paren == std::string::npos) return st;
  st.pid = text.substr(0, text.find(' '));
  std::istringstream rest(text.substr(paren + 1));
  std::vector<std::string> fields;  // fields[0] is field 3 (state)
  for (std::string f; rest >> f;)
    fields.push_back(std::move(f));
  if (fields.size() < 20) return st;
  st.found = true;
  st.state = fields[0].empty() ? '?' : fields[0][0];
  st.start_time = fields[19];
  return st;
}

std::vector<std::string> split_key(std::string_view key) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  for (;;) {
    const auto colon = key.find(':', start);
    parts.emplace_back(
        key.substr(start, colon == std::string_view::npos ? key.npos : colon - start));
    if (colon == std::string_view::npos) break;
    start = colon + 1;
  }
  return parts;
}

}  // namespace

std::string own_process_key() {
  const std::string boot = first_line("/proc/sys/kernel/random/boot_id");
  const std::string ns = pid_namespace();
  // The pid as this /proc sees it (which is what liveness_of() will look up), not getpid().
  const proc_stat self = read_stat("self");
  if (boot.empty() || ns.empty() || !self.found || self.pid.empty()) return {};
  return boot + ":" + ns + ":" + self.pid + ":" + self.start_time;
}

process_liveness liveness_of(std::string_view key) {
  const auto parts = split_key(key);
  if (parts.size() != 4 || parts[2].empty()) return process_liveness::unknown;
  const auto mine = split_key(own_process_key());
  if (mine.size() != 4 || mine[0] != parts[0] || mine[1] != parts[1])
    return process_liveness::unknown;
  for (const char ch : parts[2]) {
    if (ch < '0' || ch > '9') return process_liveness::unknown;
  }
  const proc_stat st = read_stat(parts[2]);
  // A pid that is free, reused by a later process, or a zombie: the process named has exited.
  if (!st.found || st.start_time != parts[3] || st.state == 'Z' || st.state == 'X')
    return process_liveness::gone;
  return process_liveness::alive;
}

}  // namespace sluice::sched::detail
