#include "migd/security/redact.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace migd::security {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(Redacted, NeverContainsTheSecret) {
  const std::string secret = "3f2b9c1e-token";
  EXPECT_THAT(Redacted(secret), Not(HasSubstr(secret)));
  EXPECT_THAT(Redacted(secret), Not(HasSubstr("token")));
}

TEST(Redacted, SaysNothingAboutTheLength) {
  EXPECT_EQ(Redacted("a"), Redacted(std::string(4096, 'x')));
}

TEST(Redacted, TellsAnEmptySecretFromAHiddenOne) {
  EXPECT_NE(Redacted(""), Redacted("s"));
}

TEST(RedactFrom, ReplacesEveryOccurrence) {
  const std::string secret = "c0ffee-uuid";
  const std::string text =
      "0000:3b:00.1 vf_token=c0ffee-uuid (was c0ffee-uuid)c0ffee-uuid";
  std::string out = RedactFrom(text, secret);
  EXPECT_THAT(out, Not(HasSubstr(secret)));
  EXPECT_EQ(out, "0000:3b:00.1 vf_token=" + Redacted(secret) + " (was " +
                     Redacted(secret) + ")" + Redacted(secret));
}

TEST(RedactFrom, LeavesTextWithoutTheSecretUnchanged) {
  EXPECT_EQ(RedactFrom("nothing to hide", "hunter2"), "nothing to hide");
}

TEST(RedactFrom, EmptySecretLeavesTextUnchanged) {
  EXPECT_EQ(RedactFrom("vf_token= and more", ""), "vf_token= and more");
}

}  // namespace
}  // namespace migd::security
