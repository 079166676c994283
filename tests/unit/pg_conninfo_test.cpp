// redact_conninfo(), conninfo_error() and scrub_conninfo_message() over every form in which
// libpq accepts a secret: URIs (userinfo, query parameters, percent-encoded keywords and values,
// multi-host lists), key=value strings (spaces around '=', quotes, backslash escapes),
// sslpassword, and a connection string nested in dbname. No database needed.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <gtest/gtest.h>

#include "sluice/pg/conninfo.hpp"

namespace pg = sluice::pg;

namespace {

struct redaction_case {
  std::string_view input;
  std::string_view expected;
};

// The form of the input is kept; only secrets (and values libpq would not accept) are masked.
const redaction_case redactions[] = {
    {"", ""},
    // key=value
    {"host=db port=5432 dbname=app user=bob", "host=db port=5432 dbname=app user=bob"},
    {"host=db password=s3cret user=bob", "host=db password=*** user=bob"},
    {"password=s3cret", "password=***"},
    {"host=db password = s3cret", "host=db password = ***"},
    {"host=db password = 'se cret' user=bob", "host=db password = *** user=bob"},
    {R"(host=db password='it\'s \\ here' user=bob)", "host=db password=*** user=bob"},
    {R"(password='a\'b')", "password=***"},
    {R"(host=db password=se\ cret user=bob)", "host=db password=*** user=bob"},
    {"host=db password=", "host=db password=***"},
    {"host=db password=''", "host=db password=***"},
    {"  host=db\tpassword=x1  ", "  host=db\tpassword=***  "},
    {"host=db sslpassword=k3y sslkey=/etc/k.pem", "host=db sslpassword=*** sslkey=/etc/k.pem"},
    {"host=db application_name='nightly report'", "host=db application_name='nightly report'"},
    // Keywords libpq does not know (it refuses the string): their values are not shown.
    {"host=db PASSWORD=s3cret", "host=db PASSWORD=***"},
    {"host=db passwrd=s3cret", "host=db passwrd=***"},
    {"host=db passwor%64=s3cret", "host=db passwor%64=***"},
    // Unterminated quote: libpq reads to the end, so do we.
    {"host=db password='abc def", "host=db password=***"},
    // Malformed tail (a password with a space, unquoted): not echoed.
    {"host=db password=se cret user=bob", "host=db password=*** ***"},
    // dbname may carry a whole URI or conninfo (expand_dbname).
    {"dbname=postgresql://u:pw@h/db", "dbname=postgresql://u:***@h/db"},
    {"dbname='host=h password=pw' user=x", "dbname='host=h password=***' user=x"},
    {"dbname=app", "dbname=app"},
    // URIs
    {"postgresql://bob:s3cret@db.example.com:5432/app",
     "postgresql://bob:***@db.example.com:5432/app"},
    {"postgres://bob:s3cret@db/app", "postgres://bob:***@db/app"},
    {"postgresql://bob@db/app", "postgresql://bob@db/app"},
    {"postgresql://db/app", "postgresql://db/app"},
    {"postgresql://", "postgresql://"},
    {"postgresql://bob:@db/app", "postgresql://bob:***@db/app"},
    {"postgresql://bob:p%40ss@db/app", "postgresql://bob:***@db/app"},
    // A raw '@' or '/' in the password (which libpq misreads, but people write) is still hidden.
    {"postgresql://bob:p@ss/w@db/app", "postgresql://bob:***@db/app"},
    {"postgresql://bob:se@cret@h/db", "postgresql://bob:***@h/db"},
    {"postgresql://db/app?password=s3cret&sslmode=require",
     "postgresql://db/app?password=***&sslmode=require"},
    {"postgresql://u:a@db/app?sslmode=require&password=b&application_name=x",
     "postgresql://u:***@db/app?sslmode=require&password=***&application_name=x"},
    {"postgresql://db/app?sslpassword=k3y&sslkey=%2Fetc%2Fk.pem",
     "postgresql://db/app?sslpassword=***&sslkey=%2Fetc%2Fk.pem"},
    // libpq decodes keywords too: each of these is the password.
    {"postgresql://db/app?passwor%64=s3cret", "postgresql://db/app?passwor%64=***"},
    {"postgresql://db/app?%70%61%73%73%77%6f%72%64=s3cret",
     "postgresql://db/app?%70%61%73%73%77%6f%72%64=***"},
    {"postgresql://db/app?password=s%33cret", "postgresql://db/app?password=***"},
    // Multi-host lists, IPv6 literals.
    {"postgresql://h1:5432,h2:5433/app?target_session_attrs=read-write",
     "postgresql://h1:5432,h2:5433/app?target_session_attrs=read-write"},
    {"postgresql://bob:s3cret@h1:5432,h2:5433/app?target_session_attrs=any",
     "postgresql://bob:***@h1:5432,h2:5433/app?target_session_attrs=any"},
    {"postgresql://bob:s3cret@[::1]:5432,[2001:db8::2]/app",
     "postgresql://bob:***@[::1]:5432,[2001:db8::2]/app"},
    {"POSTGRESQL://bob:s3cret@db/app", "POSTGRESQL://bob:***@db/app"},
    // The password is also the user's and the database's name: they are still shown.
    {"postgresql://postgres:postgres@localhost/postgres",
     "postgresql://postgres:***@localhost/postgres"},
    // A nested connection string in a URI's dbname, percent-encoded.
    {"postgresql://db/app?dbname=host%3Dx%20password%3Dpw",
     "postgresql://db/app?dbname=host%3Dx%20password%3D%2A%2A%2A"},
    // Query keywords libpq does not know: refused by libpq, values not shown.
    {"postgresql://db/app?bogus=s3cret", "postgresql://db/app?bogus=***"},
    {"postgresql://db/app?ssl=true", "postgresql://db/app?ssl=true"},
    // A raw '?' in the password: libpq takes everything up to the '@' as userinfo, where the
    // string's own structure suggests a query. libpq's reading wins: rebuilt as key=value.
    {"postgresql://bob:sec?ret@h/db", "user=bob password=*** dbname=db host=h"},
    // A plain database name (libpq's rule: no URI prefix and no '=') is not shown.
    {"mydb", "***"},
    {"postgress://bob:s3cret@db/app", "***"},
};

}  // namespace

TEST(PgConninfo, RedactsEveryFormKeepingTheRest) {
  for (const auto& c : redactions) {
    EXPECT_EQ(pg::redact_conninfo(c.input), c.expected) << "input: " << c.input;
  }
}

TEST(PgConninfo, TheSecretNeverAppearsInTheOutput) {
  // "secret" is the only secret here: it is in no host, user or database name.
  const std::string_view secret = "secret";
  const std::string_view encoded = "%73%65%63%72%65%74";  // "secret", percent-encoded
  const std::vector<std::string> inputs = {
      // key=value
      "host=h password=secret",
      "host=h password = secret user=u",
      "host=h password='secret'",
      "host=h password = 'se cret'",
      "host=h password = 'secret with spaces'",
      R"(host=h password='sec\'ret')",
      R"(host=h password='secret\\' user=u)",
      R"(host=h password=sec\ ret)",
      "host=h sslpassword=secret",
      "host=h sslpassword='secret' password=secret",
      "host=h PASSWORD=secret",
      "host=h passwrd=secret",
      "host=h passwor%64=secret",
      "host=h password=sec ret user=u",
      "host=h password='secret",
      "dbname='host=h password=secret' user=u",
      "dbname='postgresql://u:secret@h/db'",
      "dbname=postgresql://u:secret@h/db",
      // URIs
      "postgresql://u:secret@h/db",
      "postgresql://u:secret@h1:5432,h2:5433,h3/db?target_session_attrs=read-write",
      "postgresql://u:secret@[::1]:5432,[::2]:5433/db",
      "postgresql://u:" + std::string(encoded) + "@h/db",
      "postgresql://h/db?password=secret",
      "postgresql://h/db?password=" + std::string(encoded),
      "postgresql://h/db?passwor%64=secret",
      "postgresql://h/db?%70assword=secret&sslmode=require",
      "postgresql://h/db?sslpassword=secret",
      "postgresql://h/db?ssl%70assword=secret",
      "postgresql://h/db?sslmode=require&password=secret&application_name=x",
      "postgresql://h/db?dbname=host%3Dh%20password%3Dsecret",
      "postgresql://u:sec@ret@h/db",
      "postgresql://u:sec/ret@h/db",
      "postgresql://u:sec?ret@h/db",
      "postgresql://u:secret@h/db?bogus=1",
      "postgresql://u:secret@[::1/db",
      "postgresql://h/db?password",
      "postgresql://h/db?bogus=secret",
      "POSTGRES://u:secret@h/db",
      "  postgresql://u:secret@h/db",
      "postgress://u:secret@h/db",
  };
  for (const auto& input : inputs) {
    const std::string out = pg::redact_conninfo(input);
    EXPECT_EQ(out.find(secret), std::string::npos) << input << " -> " << out;
    EXPECT_EQ(out.find(encoded), std::string::npos) << input << " -> " << out;
    if (const auto error = pg::conninfo_error(input)) {
      EXPECT_EQ(error->find(secret), std::string::npos) << input << " -> " << *error;
      EXPECT_EQ(error->find(encoded), std::string::npos) << input << " -> " << *error;
    }
  }
}

TEST(PgConninfo, ParseErrorsAreLibpqsWithoutFragmentsOfASecret) {
  EXPECT_EQ(pg::conninfo_error("host=db user=bob"), std::nullopt);
  EXPECT_EQ(pg::conninfo_error("postgresql://bob:pw@db/app"), std::nullopt);
  EXPECT_EQ(pg::conninfo_error("mydb"), std::nullopt);  // a plain database name
  EXPECT_EQ(pg::conninfo_error(""), std::nullopt);

  // The keyword libpq quotes is shown when it survives redaction, as a keyword does...
  EXPECT_EQ(pg::conninfo_error("host=db bogus=1"), R"(invalid connection option "bogus")");
  // ...and masked when it is the second half of a password written with a space.
  EXPECT_EQ(pg::conninfo_error("host=db password=se cret"),
            R"(missing "=" after "***" in connection info string)");
  // libpq quotes the whole URI in some errors: never shown when it holds a password.
  const auto bracket = pg::conninfo_error("postgresql://u:pw1234@[::1/db");
  ASSERT_TRUE(bracket.has_value());
  EXPECT_EQ(bracket->find("pw1234"), std::string::npos) << *bracket;
  EXPECT_NE(bracket->find("\"***\""), std::string::npos) << *bracket;
  // One line, no trailing newline.
  EXPECT_EQ(bracket->find('\n'), std::string::npos) << *bracket;
}

TEST(PgConninfo, ScrubsQuotedFragmentsOfAnyLibpqMessage) {
  EXPECT_EQ(pg::scrub_conninfo_message(R"(missing "=" after "cret" in connection info string)",
                                       "host=db password=se cret"),
            R"(missing "=" after "***" in connection info string)");
  EXPECT_EQ(pg::scrub_conninfo_message(R"(could not translate host name "db" to address)",
                                       "host=db password=s3cret"),
            R"(could not translate host name "db" to address)");
  EXPECT_EQ(pg::scrub_conninfo_message("no quotes at all", "password=x"), "no quotes at all");
  EXPECT_EQ(pg::scrub_conninfo_message(R"(an "unterminated quote)", "password=x"),
            R"(an "unterminated quote)");
}

TEST(PgConninfo, SecretKeywordsAndConnectionStrings) {
  for (const char* k : {"password", "sslpassword", "PASSWORD", "sslPassword", "newpassword"})
    EXPECT_TRUE(pg::is_secret_keyword(k)) << k;
  for (const char* k : {"passfile", "user", "host", "sslkey", "pass", ""})
    EXPECT_FALSE(pg::is_secret_keyword(k)) << k;

  EXPECT_TRUE(pg::is_connection_string("postgresql://h"));
  EXPECT_TRUE(pg::is_connection_string("postgres://h"));
  EXPECT_TRUE(pg::is_connection_string("host=h"));
  EXPECT_TRUE(pg::is_connection_string("a=b"));
  EXPECT_FALSE(pg::is_connection_string("mydb"));
  EXPECT_FALSE(pg::is_connection_string("POSTGRESQL://h"));  // libpq's prefixes are lower case
  EXPECT_FALSE(pg::is_connection_string(""));
}
