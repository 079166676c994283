#pragma once

// The built-in task handlers: `sql` (one statement on a named pool), `http` (a webhook through
// libcurl), `command` (an allow-listed executable, never a shell) and `noop`. Payload formats,
// examples and security notes: docs/handlers.md.
//
// Every handler stops its work when the task's cancel_token is cancelled or its deadline
// passes: the sql handler sends a cancel request to the server (PQcancel), the http handler
// aborts the transfer, the command handler sends SIGTERM and then SIGKILL to the command's
// process group. A handler reports what it did with task_context::set_detail().
//
// Thread-safety: the returned handlers are stateless copies; one may run on many worker threads
// at once. validate_payload() is thread-safe.
// Throws: the handlers report problems as handler_result::failure and do not throw (except
// std::bad_alloc); validate_payload() throws schedule_error.

#include <array>
#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "sluice/sched/cron.hpp"
#include "sluice/sched/scheduler.hpp"

namespace sluice::sched {

// What command tasks may run, and the limits they run under.
struct command_policy {
  // Absolute paths of the executables a command task may name as argv[0], compared as text
  // (no symlink resolution, no PATH search). Empty: no command may run.
  std::vector<std::string> allow;
  // Time limit for a command whose cancel token carries no deadline (a handler called outside
  // the scheduler). The scheduler always sets one: the task's own timeout. 0: no limit.
  std::chrono::milliseconds default_timeout = std::chrono::seconds(60);
  // Kept per stream (stdout, stderr); the rest is read and discarded so the child never blocks.
  std::size_t max_output_bytes = 64 * 1024;
  // How long a command may take to exit after SIGTERM before its process group gets SIGKILL.
  std::chrono::milliseconds kill_grace = std::chrono::seconds(2);
  // Names of the environment variables a task's `env` may set. Empty: any valid name except
  // those never_allowed_env() refuses. Not empty: only these names, and still none of those.
  std::vector<std::string> allowed_env;
  // The command's PATH. Tasks cannot set PATH: it decides which programs a command runs by name.
  std::string path = "/usr/bin:/bin";
};

// Why a task may never set the environment variable `name`, whatever the policy says, or
// nullopt when it may. Refused: the dynamic loader's LD_* variables, PATH, GLIBC_TUNABLES and the
// C library's other file-loading variables (GCONV_PATH, LOCPATH, ...), the variables shells and
// interpreters read code or options from (BASH_ENV, ENV, IFS, PYTHON*, PERL*, RUBY*,
// NODE_OPTIONS, ...), and those that name a program other programs run (PAGER, GIT_*, ...).
// Each would let a task run code of its choosing inside an allow-listed program. Names are
// compared without regard to case. The full list is in docs/handlers.md.
[[nodiscard]] std::optional<std::string_view> never_allowed_env(std::string_view name) noexcept;

// Why a command task may not set the environment variable `name` under `policy`, as words that
// follow the quoted name ("is not allowed: the dynamic loader reads it, ..."), or nullopt when
// it may. Checks that the name is a portable one (letters, digits, '_'), never_allowed_env(),
// then policy.allowed_env.
[[nodiscard]] std::optional<std::string> command_env_problem(std::string_view name,
                                                             const command_policy& policy);

// `sql`: runs the payload's statement with its parameters on a lease from the named pool of
// ctx.pools(). Detail: {"rows_affected": n, "rows": n}, or {"sqlstate": "..."} on an SQL error.
// With "transactional": true in the payload, the statement and the task's completion
// (task_context::complete_in, fenced by the claim token) commit in one transaction on that
// lease, whose pool must then be on the scheduler's database; the statement reads the task id
// as current_setting('sluice.task_id'). A stale claim rolls everything back and fails the run.
[[nodiscard]] handler make_sql_handler();

// An IP network in CIDR form. IPv4 networks are held as IPv4-mapped IPv6 (::ffff:a.b.c.d/96+n),
// so that one comparison covers both families and ::ffff:127.0.0.1 is loopback like 127.0.0.1.
struct ip_network {
  std::array<unsigned char, 16> bytes{};
  int prefix = 0;  // 0 to 128, over the IPv6 form
  [[nodiscard]] bool contains(const std::array<unsigned char, 16>& address) const noexcept;
};

// Parses "10.0.0.0/8", "fd00::/8", or a lone address (a /32 or /128). Host bits past the prefix
// must be zero ("10.0.0.1/8" is refused). nullopt when the text is not a network.
[[nodiscard]] std::optional<ip_network> parse_ip_network(std::string_view text);
// Parses an IPv4 or IPv6 address into its IPv6 (IPv4-mapped) form.
[[nodiscard]] std::optional<std::array<unsigned char, 16>> parse_ip_address(std::string_view text);

// What HTTP tasks may connect to, and how their requests are signed.
struct http_policy {
  // Networks HTTP tasks may connect to although they are refused by default: loopback
  // (127.0.0.0/8, ::1), link-local (169.254.0.0/16, fe80::/10), private (10.0.0.0/8,
  // 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10, fc00::/7), unspecified (0.0.0.0/8, ::),
  // IPv4-compatible (::/96) and NAT64 (64:ff9b::/96) IPv6, multicast and broadcast. Checked against
  // the address of every connection libcurl opens, redirects included, after name resolution.
  std::vector<ip_network> allow_networks;
  // When not empty, every request carries Sluice-Timestamp: <unix seconds> and
  // Sluice-Signature: v1=<hex HMAC-SHA256 of "<timestamp>.<body>" under this secret>.
  std::string signing_secret;
  // Secrets a task picks by name with "signing_key": "<name>" in its payload, instead of
  // signing_secret: one per receiver. A task naming a key that is not here fails its run.
  std::map<std::string, std::string, std::less<>> signing_keys;
  std::size_t max_body_excerpt = 4096;
};

// Why an HTTP task may not connect to `address` (IPv6 form) under `allow`, as words such as
// "127.0.0.1 is a loopback address", or nullopt when it may.
[[nodiscard]] std::optional<std::string> http_address_refusal(
    const std::array<unsigned char, 16>& address, const std::vector<ip_network>& allow);

// "v1=" followed by the lower-case hex HMAC-SHA256 of "<timestamp>.<body>" keyed by `secret`.
[[nodiscard]] std::string http_signature(std::string_view secret, std::string_view timestamp,
                                         std::string_view body);

// `http`: sends one request through libcurl (http and https only, no redirects unless asked),
// refusing addresses `policy` does not allow and signing it when policy has a secret.
// Detail: {"status": n, "body_excerpt": "...", "elapsed_ms": n}; the excerpt holds at most
// `max_body_excerpt` bytes of the response body. A refused address fails the run with a message
// naming the address and the [http_tasks] allow_networks setting.
[[nodiscard]] handler make_http_handler(http_policy policy);
// The default policy (no private or loopback addresses, no signature) with this excerpt size.
[[nodiscard]] handler make_http_handler(std::size_t max_body_excerpt = 4096);

// `command`: runs argv[0] (which must be in policy.allow) with argv, in its own process group,
// with exactly the payload's environment (checked against policy.allowed_env and
// never_allowed_env()) plus PATH=policy.path, without a shell, with only descriptors 0, 1, 2.
// Detail: {"exit_code", "signal", "stdout", "stderr", "timed_out", ...}.
[[nodiscard]] handler make_command_handler(command_policy policy);

// `noop`: succeeds at once and ignores its payload (tests and benchmarks).
[[nodiscard]] handler make_noop_handler();

// Checks a payload for a task type without running it, so that an API can refuse a bad task
// when it is created rather than when it first runs. Knows "sql", "http", "command" and "noop";
// for any other type it only checks that the payload is a JSON object. For "command", `policy`
// supplies the allow-list and the environment rules; a null policy allows no command.
// Throws schedule_error naming the type and the field, e.g.
// "sql payload: unknown field 'parms' (known: pool, sql, params, transactional)".
void validate_payload(std::string_view type, std::string_view payload_json,
                      const command_policy* policy);

}  // namespace sluice::sched
