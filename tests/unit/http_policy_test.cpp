// What HTTP tasks may connect to (sched::parse_ip_network, sched::http_address_refusal) and how
// their requests are signed (sched::http_signature). No network, no database.

#include <array>
#include <optional>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "sluice/sched/handlers.hpp"

namespace sched = sluice::sched;
using testing::HasSubstr;

namespace {

std::optional<std::string> refusal(const std::string& address,
                                   const std::vector<std::string>& allow = {}) {
  std::vector<sched::ip_network> nets;
  for (const auto& a : allow)
    nets.push_back(sched::parse_ip_network(a).value());
  return sched::http_address_refusal(sched::parse_ip_address(address).value(), nets);
}

}  // namespace

TEST(HttpPolicy, ParsesNetworksOfBothFamilies) {
  EXPECT_TRUE(sched::parse_ip_network("10.0.0.0/8"));
  EXPECT_TRUE(sched::parse_ip_network("127.0.0.1/32"));
  EXPECT_TRUE(sched::parse_ip_network("127.0.0.1"));
  EXPECT_TRUE(sched::parse_ip_network("0.0.0.0/0"));
  EXPECT_TRUE(sched::parse_ip_network("fd00::/8"));
  EXPECT_TRUE(sched::parse_ip_network("::1"));
  EXPECT_TRUE(sched::parse_ip_network("::/0"));
  EXPECT_EQ(sched::parse_ip_network("10.0.0.0/8")->prefix, 104);  // held as v4-mapped IPv6
  EXPECT_EQ(sched::parse_ip_network("fd00::/8")->prefix, 8);
}

TEST(HttpPolicy, RefusesWhatIsNotANetwork) {
  for (const char* bad : {"", "10.0.0.0/", "10.0.0.0/33", "::/129", "10.0.0.1/8", "10.0.0/8",
                          "localhost", "10.0.0.0/8 ", "10.0.0.0/-1", "10.0.0.0/+8", "fe80::1%eth0",
                          "10.0.0.0/0008", "fd00::1/8"}) {
    EXPECT_FALSE(sched::parse_ip_network(bad)) << bad;
  }
}

TEST(HttpPolicy, RefusesLoopbackLinkLocalPrivateAndUnspecifiedByDefault) {
  for (const char* a :
       {"127.0.0.1", "127.255.255.254", "169.254.169.254", "169.254.0.1", "10.1.2.3", "172.16.0.1",
        "172.31.255.255", "192.168.1.1", "0.0.0.0", "100.64.0.1", "224.0.0.1", "255.255.255.255",
        "::1", "::", "fe80::1", "febf::1", "fc00::1", "fd12:3456::1", "ff02::1",
        // IPv4-mapped IPv6 is the IPv4 address it maps
        "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:10.0.0.1", "::ffff:0.0.0.0",
        // IPv4-compatible and NAT64 forms of an IPv4 address
        "::127.0.0.1", "64:ff9b::a9fe:a9fe"}) {
    EXPECT_TRUE(refusal(a)) << a;
  }
  EXPECT_EQ(refusal("127.0.0.1"), "127.0.0.1 is a loopback address");
  EXPECT_EQ(refusal("::ffff:127.0.0.1"), "127.0.0.1 is a loopback address");
  EXPECT_EQ(refusal("::1"), "::1 is a loopback address");
  EXPECT_THAT(refusal("169.254.169.254").value(), HasSubstr("link-local"));
  EXPECT_THAT(refusal("10.0.0.1").value(), HasSubstr("private"));
}

TEST(HttpPolicy, AllowsPublicAddresses) {
  for (const char* a :
       {"93.184.216.34", "8.8.8.8", "172.15.255.255", "172.32.0.0", "192.169.0.1", "169.255.0.1",
        "11.0.0.1", "2606:4700::1111", "::ffff:8.8.8.8", "fec0::1"}) {
    EXPECT_FALSE(refusal(a)) << a << ": " << refusal(a).value_or("");
  }
}

TEST(HttpPolicy, TheAllowListOpensExactlyItsNetworks) {
  EXPECT_FALSE(refusal("127.0.0.1", {"127.0.0.1/32"}));
  EXPECT_FALSE(refusal("::ffff:127.0.0.1", {"127.0.0.1/32"}));
  EXPECT_TRUE(refusal("127.0.0.2", {"127.0.0.1/32"}));
  EXPECT_TRUE(refusal("::1", {"127.0.0.1/32"}));
  EXPECT_FALSE(refusal("10.200.3.4", {"10.0.0.0/8"}));
  EXPECT_TRUE(refusal("192.168.0.1", {"10.0.0.0/8"}));
  EXPECT_FALSE(refusal("172.20.0.5", {"172.20.0.0/14"}));
  EXPECT_TRUE(refusal("172.24.0.5", {"172.20.0.0/14"}));
  EXPECT_FALSE(refusal("fd00::5", {"fd00::/8"}));
  EXPECT_TRUE(refusal("fc00::5", {"fd00::/8"}));
  EXPECT_FALSE(refusal("::1", {"::1"}));
  // An IPv4 network never matches a native IPv6 address that merely shares its bits.
  EXPECT_TRUE(refusal("fe80::1", {"0.0.0.0/0"}));
  EXPECT_FALSE(refusal("169.254.169.254", {"0.0.0.0/0"}));
}

// Computed independently:
//   printf '%s' '1700000000.{"order":42}' | openssl dgst -sha256 -hmac whsec_test_secret_0123456789
TEST(HttpPolicy, TheSignatureIsTheHmacSha256OfTimestampDotBody) {
  EXPECT_EQ(sched::http_signature("whsec_test_secret_0123456789", "1700000000", R"({"order":42})"),
            "v1=ab5565b2d81870f6d0128831864af6aafe52419a819debc9f3f243f4990b1934");
  EXPECT_EQ(sched::http_signature("whsec_test_secret_0123456789", "1700000000", ""),
            "v1=8f40661c06ee078c83c534185b6a503938fdf41ab4f0a17e2ac9c109da2e2c92");
  EXPECT_NE(sched::http_signature("whsec_test_secret_0123456789", "1700000001", ""),
            sched::http_signature("whsec_test_secret_0123456789", "1700000000", ""));
}
