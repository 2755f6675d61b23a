#include "migd/server/device_backend.h"

#include <memory>
#include <string>
#include <utility>

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace migd::server {
namespace {

// A backend that is only a kind: the registry looks at nothing else.
class KindOnly final : public DeviceBackend {
 public:
  explicit KindOnly(std::string kind) : kind_(std::move(kind)) {}
  std::string kind() const override { return kind_; }
  absl::StatusOr<std::unique_ptr<DeviceSpec>> Parse(
      absl::string_view) const override {
    return absl::UnimplementedError("kind only");
  }
  std::unique_ptr<DeviceOpener> NewOpener(const BuildOptions&) const override {
    return nullptr;
  }

 private:
  const std::string kind_;
};

TEST(DeviceBackends, FindsABackendByItsKind) {
  DeviceBackends backends;
  ASSERT_TRUE(backends.Register(std::make_unique<KindOnly>("b")).ok());
  ASSERT_TRUE(backends.Register(std::make_unique<KindOnly>("a")).ok());
  ASSERT_NE(backends.Find("a"), nullptr);
  EXPECT_EQ(backends.Find("a")->kind(), "a");
  EXPECT_EQ(backends.Find("c"), nullptr);
  EXPECT_EQ(backends.Kinds(), (std::vector<std::string>{"a", "b"}));
}

TEST(DeviceBackends, RefusesAKindRegisteredTwice) {
  DeviceBackends backends;
  ASSERT_TRUE(backends.Register(std::make_unique<KindOnly>("vfio")).ok());
  absl::Status s = backends.Register(std::make_unique<KindOnly>("vfio"));
  EXPECT_EQ(s.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_TRUE(absl::StrContains(s.message(), "\"vfio\"")) << s;
  EXPECT_EQ(backends.Kinds(), (std::vector<std::string>{"vfio"}));
}

TEST(DeviceBackends, RefusesAKindThatIsNotOneWord) {
  DeviceBackends backends;
  for (const char* kind : {"", "two words", "tab\there", "#comment"}) {
    absl::Status s = backends.Register(std::make_unique<KindOnly>(kind));
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << kind;
  }
  EXPECT_TRUE(backends.Kinds().empty());
}

}  // namespace
}  // namespace migd::server
