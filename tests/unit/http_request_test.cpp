// The HTTP request as the transport reads it, without a socket: target splitting and decoding
// (NUL, invalid UTF-8, malformed escapes), the JSON media type check, and parse_request() on raw
// bytes: limits on header and body for each transfer encoding, the header checks (Host,
// version, Transfer-Encoding, Content-Length), and pipelined requests read one after another.

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "http/errors.hpp"
#include "http/message.hpp"
#include "http/request_parser.hpp"
#include "http/transport.hpp"

namespace http = sluice::http;
using state = http::parse_outcome::state;

namespace {

http::request target(const std::string& t) {
  http::request r;
  http::parse_target(t, r);
  return r;
}

std::string target_error(const std::string& t) {
  try {
    (void)target(t);
  } catch (const http::api_error& e) {
    EXPECT_EQ(e.code(), http::error_code::bad_request);
    return e.what();
  }
  return "<accepted>";
}

http::transport_limits small_limits() {
  http::transport_limits l;
  l.max_header_bytes = 1024;
  l.max_header_count = 10;
  l.max_body_bytes = 100;
  return l;
}

http::parse_outcome parse(const std::string& input) {
  return http::parse_request(input, small_limits());
}

}  // namespace

TEST(HttpTarget, SplitsAndDecodesPathAndQuery) {
  const auto r = target("/api/v1/tasks?name=a%20b+c&limit=5&flag&&empty=");
  EXPECT_EQ(r.path, "/api/v1/tasks");
  ASSERT_EQ(r.query.size(), 4U);
  EXPECT_EQ(r.query[0], (std::pair<std::string, std::string>{"name", "a b c"}));
  EXPECT_EQ(r.query[1], (std::pair<std::string, std::string>{"limit", "5"}));
  EXPECT_EQ(r.query[2], (std::pair<std::string, std::string>{"flag", ""}));
  EXPECT_EQ(r.query[3], (std::pair<std::string, std::string>{"empty", ""}));
  EXPECT_EQ(r.param("limit"), "5");
  EXPECT_FALSE(r.param("missing"));
  EXPECT_EQ(target("/a+b/%C3%A9").path, "/a+b/\xC3\xA9");  // '+' is a space in the query only
}

TEST(HttpTarget, RefusesNulInvalidUtf8AndBadEscapes) {
  EXPECT_NE(target_error("/api/v1/tasks?name=%00").find("NUL"), std::string::npos);
  EXPECT_NE(target_error("/api/v1/tasks?na%00me=x").find("NUL"), std::string::npos);
  EXPECT_NE(target_error("/api/%00/tasks").find("NUL"), std::string::npos);
  EXPECT_NE(target_error("/x?name=%C3%28").find("UTF-8"), std::string::npos);
  EXPECT_NE(target_error("/%C0%AF").find("UTF-8"), std::string::npos);     // overlong '/'
  EXPECT_NE(target_error("/%ED%A0%80").find("UTF-8"), std::string::npos);  // a surrogate
  EXPECT_NE(target_error("/x?name=%").find("percent"), std::string::npos);
  EXPECT_NE(target_error("/x?name=%4").find("percent"), std::string::npos);
  EXPECT_NE(target_error("/x%zz").find("percent"), std::string::npos);
  EXPECT_NE(target_error("http://host/x").find("not a path"), std::string::npos);
  EXPECT_NE(target_error("*").find("not a path"), std::string::npos);
  EXPECT_NE(target_error("").find("not a path"), std::string::npos);
  // The message quotes the client's bytes escaped, so it is itself printable UTF-8.
  EXPECT_TRUE(http::valid_utf8(target_error("/x?name=%FF%FE")));
}

TEST(HttpTarget, Utf8Validation) {
  EXPECT_TRUE(http::valid_utf8(""));
  EXPECT_TRUE(http::valid_utf8("plain ascii"));
  EXPECT_TRUE(http::valid_utf8("\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80"));  // é € 😀
  EXPECT_TRUE(http::valid_utf8("\xF4\x8F\xBF\xBF"));                      // U+10FFFF
  EXPECT_FALSE(http::valid_utf8("\xF4\x90\x80\x80"));                     // past U+10FFFF
  EXPECT_FALSE(http::valid_utf8("\xC0\x80"));                             // overlong NUL
  EXPECT_FALSE(http::valid_utf8("\xE0\x80\xAF"));                         // overlong
  EXPECT_FALSE(http::valid_utf8("\xED\xBF\xBF"));                         // surrogate
  EXPECT_FALSE(http::valid_utf8("\xC3"));                                 // cut short
  EXPECT_FALSE(http::valid_utf8("\x80"));                                 // stray continuation
  EXPECT_FALSE(http::valid_utf8("\xFF"));
}

TEST(HttpTarget, JsonMediaType) {
  EXPECT_TRUE(http::is_json_media_type("application/json"));
  EXPECT_TRUE(http::is_json_media_type("Application/JSON; charset=utf-8"));
  EXPECT_TRUE(http::is_json_media_type("  application/json  "));
  EXPECT_FALSE(http::is_json_media_type(""));
  EXPECT_FALSE(http::is_json_media_type("text/plain"));
  EXPECT_FALSE(http::is_json_media_type("application/x-www-form-urlencoded"));
  EXPECT_FALSE(http::is_json_media_type("application/jsonx"));
}

TEST(HttpParse, CompleteRequestWithHeadersAndBody) {
  const auto o = parse(
      "POST /api/v1/tasks?x=1 HTTP/1.1\r\nHost: localhost\r\nX-Mixed-Case: V\r\n"
      "Content-Length: 2\r\n\r\n{}");
  ASSERT_EQ(o.what, state::complete) << o.message;
  EXPECT_EQ(o.req.method, "POST");
  EXPECT_EQ(o.req.path, "/api/v1/tasks");
  EXPECT_EQ(o.req.param("x"), "1");
  EXPECT_EQ(o.req.header("x-mixed-case"), "V");  // names lower-case, values as sent
  EXPECT_EQ(o.req.version, 11);
  EXPECT_TRUE(o.req.has_body);
  EXPECT_EQ(o.req.body, "{}");
}

TEST(HttpParse, ChunkedBodyIsDecodedAndLimited) {
  const auto ok = parse(
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
      "3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n");
  ASSERT_EQ(ok.what, state::complete) << ok.message;
  EXPECT_EQ(ok.req.body, "abcde");
  std::string chunks;
  for (int i = 0; i < 11; ++i)
    chunks += "a\r\n0123456789\r\n";  // 110 bytes in all, the limit is 100
  const auto big = parse("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" +
                         chunks + "0\r\n\r\n");
  EXPECT_EQ(big.what, state::refused);
  EXPECT_EQ(big.status, 413);
  const auto one_chunk =
      parse("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nfff\r\n" +
            std::string(4095, 'x') + "\r\n0\r\n\r\n");
  EXPECT_EQ(one_chunk.status, 413);
  EXPECT_EQ(parse("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").status,
            400);
}

// Found by fuzz_http_request: the fields of a chunked body's trailer were added to the
// request's header, after admission had decided on it (a second Host, say).
TEST(HttpParse, TrailerFieldsAreNotHeaderFields) {
  const auto o = parse(
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
      "2\r\nde\r\n0\r\nHost: other\r\nAuthorization: Bearer x\r\n\r\n");
  ASSERT_EQ(o.what, state::complete) << o.message;
  EXPECT_EQ(o.req.body, "de");
  EXPECT_EQ(o.req.header_count("host"), 1U);
  EXPECT_EQ(o.req.header("host"), "h");
  EXPECT_FALSE(o.req.has_header("authorization"));
}

TEST(HttpParse, ContentLengthOverTheLimitIsRefusedBeforeTheBody) {
  // Only the header is given: the refusal does not wait for the 101 bytes.
  const auto o = parse("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 101\r\n\r\n");
  EXPECT_EQ(o.what, state::refused);
  EXPECT_EQ(o.status, 413);
  EXPECT_EQ(
      parse("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999\r\n\r\n").status,
      400);
}

TEST(HttpParse, HeaderLimits) {
  std::string many;
  for (int i = 0; i < 10; ++i)
    many += "X-" + std::to_string(i) + ": v\r\n";
  const auto fields = parse("GET / HTTP/1.1\r\nHost: h\r\n" + many + "\r\n");  // 11 fields
  EXPECT_EQ(fields.status, 431);
  EXPECT_EQ(fields.message, "too many header fields");
  const auto bytes =
      parse("GET / HTTP/1.1\r\nHost: h\r\nX: " + std::string(2000, 'v') + "\r\n\r\n");
  EXPECT_EQ(bytes.status, 431);
  EXPECT_EQ(bytes.message, "header too large");
  // Over the limit without an end in sight is refused too, not "incomplete" forever.
  EXPECT_EQ(parse("GET / HTTP/1.1\r\nX: " + std::string(2000, 'v')).status, 431);
}

TEST(HttpParse, HeaderChecks) {
  struct c {
    std::string request;
    int status;
  };
  const std::vector<c> cases = {
      {"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\n\r\n", 400},
      {"GET / HTTP/1.0\r\n\r\n", 0},  // HTTP/1.0 needs no Host
      {"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400},
      {"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 2, 2\r\n\r\nab", 0},  // the same twice
      {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
       400},
      {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 400},
      {"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
      {"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400},
      {"GET /%00 HTTP/1.1\r\nHost: a\r\n\r\n", 400},
      {std::string("GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n", 35), 400},
      {"GET / HTTP/1.1\nHost: a\n\n", 400},
      {"GARBAGE\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nHost a\r\n\r\n", 400},
  };
  for (const auto& k : cases) {
    SCOPED_TRACE(k.request);
    const auto o = parse(k.request);
    if (k.status == 0) {
      EXPECT_EQ(o.what, state::complete) << o.message;
    } else {
      EXPECT_EQ(o.what, state::refused);
      EXPECT_EQ(o.status, k.status) << o.message;
    }
  }
}

TEST(HttpParse, PipelinedRequestsAreReadOneAfterAnother) {
  std::string input = "GET /a HTTP/1.1\r\nHost: h\r\n\r\n";
  input += "POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nxyz";
  input += "GET /c HTTP/1.1\r\nHost: h\r\n\r\n";
  input += "GET /d HTTP/1.1\r\nHo";  // the start of a fourth
  std::vector<std::string> paths;
  std::string_view rest = input;
  for (;;) {
    const auto o = http::parse_request(rest, small_limits());
    if (o.what != state::complete) {
      EXPECT_EQ(o.what, state::incomplete);
      break;
    }
    paths.push_back(o.req.path + (o.req.body.empty() ? "" : ":" + o.req.body));
    rest.remove_prefix(o.consumed);
  }
  EXPECT_EQ(paths, (std::vector<std::string>{"/a", "/b:xyz", "/c"}));
}

TEST(HttpParse, IncompleteInputIsNotAnError) {
  const std::string full = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello";
  for (std::size_t n = 0; n < full.size(); ++n) {
    EXPECT_EQ(parse(full.substr(0, n)).what, state::incomplete) << n;
  }
  EXPECT_EQ(parse(full).what, state::complete);
}
