#pragma once

// Connection strings as libpq reads them: whether a string is one, masking its secrets for
// messages, logs and `--print-config`, and libpq's own parse errors without the fragments of a
// secret they quote. The one place in sluice that knows where a password can hide in a conninfo.
//
// Thread-safety: every function is thread-safe. Throws: std::bad_alloc only.

#include <optional>
#include <string>
#include <string_view>

namespace sluice::pg {

// libpq's rule for expanding a dbname into a connection string: it starts with "postgresql://"
// or "postgres://", or it contains an '=' anywhere. Anything else is a plain database name.
[[nodiscard]] bool is_connection_string(std::string_view s) noexcept;

// Whether a keyword's value is a secret: `password`, `sslpassword` and any other keyword whose
// name contains "password", compared without regard to case.
[[nodiscard]] bool is_secret_keyword(std::string_view keyword) noexcept;

// The conninfo string or URI with every secret replaced by ***, in the form it was written:
// key=value pairs (quoted values, backslash escapes), URIs (user:***@host, multi-host lists,
// ?password=*** also when the keyword is percent-encoded as libpq allows), sslpassword, and a
// whole connection string nested in dbname. The values of keywords libpq does not know are
// masked too, and a string libpq cannot parse is shown only up to what is understood. The
// result is checked against libpq's own parser (PQconninfoParse): when libpq would find a
// secret in it that is not ***, the string is rebuilt from libpq's reading as key=value pairs.
// A plain database name ("mydb", or "postgress://..." which libpq takes as one) becomes ***.
[[nodiscard]] std::string redact_conninfo(std::string_view conninfo);

// Why libpq cannot parse `conninfo` (libpq's message on one line, through
// scrub_conninfo_message), or nullopt when it can, or when it is a plain database name.
[[nodiscard]] std::optional<std::string> conninfo_error(const std::string& conninfo);

// A message of libpq's about `conninfo` (its parse errors quote pieces of the string, e.g.
// 'missing "=" after "cret"') with each quoted piece that does not also appear in
// redact_conninfo(conninfo) replaced by ***, so a fragment of a password is never repeated.
[[nodiscard]] std::string scrub_conninfo_message(std::string_view message,
                                                 std::string_view conninfo);

}  // namespace sluice::pg
