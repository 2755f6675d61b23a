#include "migd/server/validate.h"

#include "gtest/gtest.h"

namespace migd::server {
namespace {

TEST(ValidateJobId, AcceptsTheDocumentedAlphabet) {
  EXPECT_TRUE(ValidateJobId("job-1_a.B").ok());
  EXPECT_TRUE(ValidateJobId(std::string(64, 'x')).ok());
}

TEST(ValidateJobId, RefusesEmptyLongAndOddCharacters) {
  EXPECT_EQ(ValidateJobId("").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateJobId(std::string(65, 'x')).code(),
            absl::StatusCode::kInvalidArgument);
  absl::Status s = ValidateJobId("a/b");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("a/b"), absl::string_view::npos) << s;
}

TEST(ValidateAddress, AcceptsHostsIPv4AndBracketedIPv6) {
  EXPECT_TRUE(ValidateAddress("destination", "127.0.0.1:7070").ok());
  EXPECT_TRUE(ValidateAddress("destination", "host-b.example:1").ok());
  EXPECT_TRUE(ValidateAddress("destination", "[::1]:65535").ok());
}

TEST(ValidateAddress, RefusesMalformedAddressesNamingTheField) {
  for (const char* bad : {"", "127.0.0.1", "127.0.0.1:", "127.0.0.1:0",
                          "127.0.0.1:65536", "127.0.0.1:-1", ":7070",
                          "host name:1", "::1:7070", "h:7070x", "h:+70"}) {
    absl::Status s = ValidateAddress("destination", bad);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(s.message().find("destination"), absl::string_view::npos) << s;
  }
}

TEST(ValidateDevicePairs, MapsLocalAndPeerBySide) {
  google::protobuf::RepeatedPtrField<v1::DevicePair> pairs;
  v1::DevicePair* p = pairs.Add();
  p->set_source_device("a");
  p->set_destination_device("b");
  auto src = ValidateDevicePairs(pairs, /*local_is_source=*/true);
  ASSERT_TRUE(src.ok());
  EXPECT_EQ((*src)[0].local, "a");
  EXPECT_EQ((*src)[0].peer, "b");
  auto dst = ValidateDevicePairs(pairs, /*local_is_source=*/false);
  ASSERT_TRUE(dst.ok());
  EXPECT_EQ((*dst)[0].local, "b");
}

TEST(ValidateDevicePairs, RefusesEmptyListsBlankNamesAndRepeats) {
  google::protobuf::RepeatedPtrField<v1::DevicePair> pairs;
  EXPECT_EQ(ValidateDevicePairs(pairs, true).status().code(),
            absl::StatusCode::kInvalidArgument);
  v1::DevicePair* p = pairs.Add();
  p->set_source_device("a");
  EXPECT_FALSE(ValidateDevicePairs(pairs, true).ok());
  p->set_destination_device("b");
  *pairs.Add() = *p;
  absl::Status s = ValidateDevicePairs(pairs, true).status();
  EXPECT_NE(s.message().find("listed twice"), absl::string_view::npos) << s;
}

TEST(ValidateIdentity, AcceptsSpiffeAndDnsIdentities) {
  EXPECT_TRUE(
      ValidateIdentity("f", "spiffe://example.org/agent/host7", true).ok());
  EXPECT_TRUE(ValidateIdentity("f", "host7.example.org", true).ok());
}

TEST(ValidateIdentity, EmptyIsAnErrorOnlyWhenRequired) {
  EXPECT_TRUE(ValidateIdentity("f", "", false).ok());
  absl::Status s = ValidateIdentity("source_identity", "", true);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("source_identity"), absl::string_view::npos) << s;
}

TEST(ValidateIdentity, RefusesSpacesControlCharactersAndHugeValues) {
  EXPECT_FALSE(ValidateIdentity("f", "spiffe://a b", false).ok());
  EXPECT_FALSE(ValidateIdentity("f", "spiffe://a\nb", false).ok());
  EXPECT_FALSE(ValidateIdentity("f", std::string(513, 'a'), false).ok());
  EXPECT_TRUE(ValidateIdentity("f", std::string(512, 'a'), false).ok());
}

}  // namespace
}  // namespace migd::server
