#include "migd/security/tls_files.h"

#include <stdio.h>

#include <fstream>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "migd/security/testing/test_pki.h"
#include "migd/security/trust_store.h"

namespace migd::security {
namespace {

using ::migd::security::testing::TestPki;
using ::testing::HasSubstr;

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << text;
  ASSERT_TRUE(f.good()) << "cannot write " << path;
}

std::string ReadFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadSmallFile("test file", path);
  EXPECT_TRUE(text.ok()) << text.status();
  return text.ok() ? *text : "";
}

// Replaces `path` the way a rotation should: a new file renamed over it.
void ReplaceFile(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".new";
  WriteFile(tmp, text);
  ASSERT_EQ(rename(tmp.c_str(), path.c_str()), 0) << "rename over " << path;
}

// One PKI for the tests that only read it.
class TlsFilesTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<TestPki> pki = TestPki::Create("tls_files");
    ASSERT_TRUE(pki.ok()) << pki.status();
    pki_ = new TestPki(*std::move(pki));
  }
  static void TearDownTestSuite() {
    delete pki_;
    pki_ = nullptr;
  }
  static TestPki& pki() { return *pki_; }

 private:
  static TestPki* pki_;
};
TestPki* TlsFilesTest::pki_ = nullptr;

TEST_F(TlsFilesTest, CheckAcceptsAMatchingSet) {
  EXPECT_TRUE(CheckTlsFiles(pki().FilesFor("agent-a")).ok());
}

TEST_F(TlsFilesTest, CheckNamesFlagAndPathOfAMissingCertificate) {
  TlsFiles files = pki().FilesFor("agent-a");
  files.cert = pki().Path("no-such.pem");
  absl::Status s = CheckTlsFiles(files);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("--tls_cert"));
  EXPECT_THAT(s.message(), HasSubstr(files.cert));
}

TEST_F(TlsFilesTest, CheckUsesTheGivenFlagPrefix) {
  TlsFiles files = pki().FilesFor("agent-a");
  files.cert = pki().Path("no-such.pem");
  absl::Status s = CheckTlsFiles(files, "--peer_tls_");
  EXPECT_THAT(s.message(), HasSubstr("--peer_tls_cert"));
}

TEST_F(TlsFilesTest, CheckRefusesTheKeyOfAnotherCertificate) {
  TlsFiles files = pki().FilesFor("agent-a");
  files.key = pki().Path("agent-b.key");
  absl::Status s = CheckTlsFiles(files);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("does not match"));
  EXPECT_THAT(s.message(), HasSubstr("--tls_key"));
  EXPECT_THAT(s.message(), HasSubstr(files.key));
}

TEST_F(TlsFilesTest, CheckRefusesAnEmptyCaFile) {
  TlsFiles files = pki().FilesFor("agent-a");
  files.ca = pki().Path("empty-ca.pem");
  WriteFile(files.ca, "");
  absl::Status s = CheckTlsFiles(files);
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(s.message(), HasSubstr("--tls_ca"));
  EXPECT_THAT(s.message(), HasSubstr(files.ca));
}

TEST_F(TlsFilesTest, CheckRefusesACaFileHoldingNoCertificate) {
  TlsFiles files = pki().FilesFor("agent-a");
  files.ca = pki().Path("agent-a.key");  // PEM, but a key
  absl::Status s = CheckTlsFiles(files);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("--tls_ca"));
  EXPECT_THAT(s.message(), HasSubstr("no PEM certificate"));
}

TEST_F(TlsFilesTest, CheckRefusesADirectoryAsKey) {
  TlsFiles files = pki().FilesFor("agent-a");
  files.key = pki().dir();
  absl::Status s = CheckTlsFiles(files);
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(s.message(), HasSubstr("--tls_key"));
  EXPECT_THAT(s.message(), HasSubstr("not a regular file"));
}

TEST_F(TlsFilesTest, DescribeGivesTheUriIdentity) {
  absl::StatusOr<CertificateInfo> info =
      DescribeCertificate(ReadFile(pki().Path("agent-a.pem")));
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->identity, TestPki::AgentIdentity("agent-a"));
  EXPECT_THAT(info->subject, HasSubstr("agent-a"));
  EXPECT_LT(info->not_before, info->not_after);
}

TEST_F(TlsFilesTest, DescribeFallsBackToTheDnsName) {
  absl::StatusOr<std::string> pem =
      pki().Issue("dns-only", {"--dns=db7.example.org"});
  ASSERT_TRUE(pem.ok()) << pem.status();
  absl::StatusOr<CertificateInfo> info = DescribeCertificate(ReadFile(*pem));
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->identity, "db7.example.org");
}

TEST_F(TlsFilesTest, DescribeGivesTheSerialInHex) {
  absl::StatusOr<std::string> pem =
      pki().Issue("serial", {"--serial=4660"});
  ASSERT_TRUE(pem.ok()) << pem.status();
  absl::StatusOr<CertificateInfo> info = DescribeCertificate(ReadFile(*pem));
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->serial, "1234");
}

TEST_F(TlsFilesTest, DescribeRefusesTextWithoutACertificate) {
  EXPECT_EQ(DescribeCertificate(ReadFile(pki().Path("agent-a.key")))
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(TlsFilesTest, TrustStoreVerifiesALeafOfItsCa) {
  absl::StatusOr<std::unique_ptr<TrustStore>> trust =
      TrustStore::Load(pki().Path("ca.pem"));
  ASSERT_TRUE(trust.ok()) << trust.status();
  absl::Status s = (*trust)->Verify(ReadFile(pki().Path("operator.pem")), "");
  EXPECT_TRUE(s.ok()) << s;
}

TEST_F(TlsFilesTest, TrustStoreRefusesAnExpiredLeaf) {
  absl::StatusOr<std::string> pem = pki().Issue("old", {"--expired"});
  ASSERT_TRUE(pem.ok()) << pem.status();
  absl::StatusOr<std::unique_ptr<TrustStore>> trust =
      TrustStore::Load(pki().Path("ca.pem"));
  ASSERT_TRUE(trust.ok()) << trust.status();
  absl::Status s = (*trust)->Verify(ReadFile(*pem), "");
  EXPECT_EQ(s.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(s.message(), HasSubstr("expired"));
  EXPECT_THAT(s.message(), HasSubstr("spiffe://migd.local/old"));
}

TEST_F(TlsFilesTest, TrustStoreRefusesALeafOfAnotherCa) {
  absl::StatusOr<TestPki> other = TestPki::Create("other");
  ASSERT_TRUE(other.ok()) << other.status();
  absl::StatusOr<std::unique_ptr<TrustStore>> trust =
      TrustStore::Load(pki().Path("ca.pem"));
  ASSERT_TRUE(trust.ok()) << trust.status();
  absl::Status s = (*trust)->Verify(ReadFile(other->Path("operator.pem")), "");
  EXPECT_EQ(s.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(s.message(), HasSubstr("not signed by a CA"));
}

TEST_F(TlsFilesTest, TrustStoreRefusesNoCertificate) {
  absl::StatusOr<std::unique_ptr<TrustStore>> trust =
      TrustStore::Load(pki().Path("ca.pem"));
  ASSERT_TRUE(trust.ok()) << trust.status();
  absl::Status s = (*trust)->Verify("", "");
  EXPECT_EQ(s.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(s.message(), HasSubstr("no client certificate"));
}

TEST_F(TlsFilesTest, TrustStoreLoadRefusesABundleWithoutCertificates) {
  absl::StatusOr<std::unique_ptr<TrustStore>> trust =
      TrustStore::Load(pki().Path("agent-a.key"));
  EXPECT_EQ(trust.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(trust.status().message(), HasSubstr(pki().Path("agent-a.key")));
}

TEST(TrustStoreReload, ARotatedCaFileReplacesTheOldCa) {
  absl::StatusOr<TestPki> first = TestPki::Create("first");
  ASSERT_TRUE(first.ok()) << first.status();
  absl::StatusOr<TestPki> second = TestPki::Create("second");
  ASSERT_TRUE(second.ok()) << second.status();
  const std::string bundle = first->Path("bundle.pem");
  WriteFile(bundle, ReadFile(first->Path("ca.pem")));
  absl::StatusOr<std::unique_ptr<TrustStore>> trust = TrustStore::Load(bundle);
  ASSERT_TRUE(trust.ok()) << trust.status();
  const std::string first_leaf = ReadFile(first->Path("agent-a.pem"));
  const std::string second_leaf = ReadFile(second->Path("agent-a.pem"));
  ASSERT_TRUE((*trust)->Verify(first_leaf, "").ok());
  ASSERT_FALSE((*trust)->Verify(second_leaf, "").ok());

  ReplaceFile(bundle, ReadFile(second->Path("ca.pem")));

  EXPECT_EQ((*trust)->Verify(first_leaf, "").code(),
            absl::StatusCode::kUnauthenticated);
  absl::Status s = (*trust)->Verify(second_leaf, "");
  EXPECT_TRUE(s.ok()) << s;
}

TEST(TrustStoreReload, ABrokenCaFileKeepsTheLastGoodCa) {
  absl::StatusOr<TestPki> pki = TestPki::Create("broken");
  ASSERT_TRUE(pki.ok()) << pki.status();
  const std::string bundle = pki->Path("bundle.pem");
  WriteFile(bundle, ReadFile(pki->Path("ca.pem")));
  absl::StatusOr<std::unique_ptr<TrustStore>> trust = TrustStore::Load(bundle);
  ASSERT_TRUE(trust.ok()) << trust.status();
  const std::string leaf = ReadFile(pki->Path("agent-a.pem"));

  ReplaceFile(bundle, "-----BEGIN CERTIFICATE-----\ntruncated");

  absl::Status s = (*trust)->Verify(leaf, "");
  EXPECT_TRUE(s.ok()) << s;
}

}  // namespace
}  // namespace migd::security
