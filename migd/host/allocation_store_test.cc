// migd/host/allocation_store_test.cc
//
// AllocationStore on a real directory under $TEST_TMPDIR: what it writes,
// that a reopened store reads it back, owner-only permissions, and that a
// corrupt file is refused naming the file and the line.

#include "migd/host/allocation_store.h"

#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace migd::host {
namespace {

Allocation Pci(const std::string& owner, const std::string& key,
               const std::string& address) {
  Allocation a;
  a.owner = owner;
  a.key = key;
  a.kind = Allocation::Kind::kPci;
  a.address = address;
  a.driver = "vfio-pci";
  a.bound = true;
  return a;
}

Allocation Mdev(const std::string& owner, const std::string& key,
                const std::string& uuid) {
  Allocation a;
  a.owner = owner;
  a.key = key;
  a.kind = Allocation::Kind::kMdev;
  a.mdev_uuid = uuid;
  a.mdev_parent = "mbochs";
  a.mdev_type = "mbochs-small";
  return a;
}

class AllocationStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* base = getenv("TEST_TMPDIR");
    dir_ = absl::StrCat(base != nullptr ? base : "/tmp", "/allocXXXXXX");
    ASSERT_NE(mkdtemp(dir_.data()), nullptr);
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::string Path() const { return dir_ + "/host-allocations"; }
  std::string Read() const {
    std::ifstream in(Path());
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  void WriteRaw(const std::string& text) {
    std::ofstream out(Path());
    out << text;
  }
  std::string dir_;
};

TEST_F(AllocationStoreTest, ChangesSurviveAReopenInOrderOwnerOnly) {
  absl::StatusOr<std::unique_ptr<AllocationStore>> store =
      AllocationStore::Open(dir_);
  ASSERT_TRUE(store.ok()) << store.status();
  const Allocation a = Pci("dom-1", "0000:3b:02.0", "0000:5e:01.3");
  const Allocation b =
      Mdev("dom-1", "k2", "0b5e4c3a-1111-4222-8333-444455556666");
  const Allocation c = Pci("job-9", "k", "0000:5e:01.1");
  ASSERT_TRUE((*store)->Put(a).ok());
  ASSERT_TRUE((*store)->Put(b).ok());
  ASSERT_TRUE((*store)->Put(c).ok());
  ASSERT_TRUE((*store)->Remove("job-9", "k").ok());
  EXPECT_TRUE(absl::StrContains(
      Read(),
      "pci owner=dom-1 key=0000:3b:02.0 address=0000:5e:01.3 driver=vfio-pci "
      "bound=yes\n"))
      << Read();
  struct stat st;
  ASSERT_EQ(stat(Path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  store = AllocationStore::Open(dir_);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->List(), (std::vector<Allocation>{a, b}));
  EXPECT_EQ((*store)->List("job-9"), std::vector<Allocation>{});
  EXPECT_EQ((*store)->Holding("0000:5e:01.3"), a);
  EXPECT_EQ((*store)->Find("dom-1", "k2"), b);
}

TEST_F(AllocationStoreTest, ADeviceIsHeldByOneAllocationOnly) {
  absl::StatusOr<std::unique_ptr<AllocationStore>> store =
      AllocationStore::Open(dir_);
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE((*store)->Put(Pci("dom-1", "a", "0000:5e:01.3")).ok());
  absl::Status s = (*store)->Put(Pci("dom-2", "a", "0000:5e:01.3"));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "allocated to dom-1")) << s;
}

TEST_F(AllocationStoreTest, ACorruptFileIsRefusedNamingTheFileAndLine) {
  WriteRaw(
      "# migd host allocations v1\n"
      "pci owner=dom-1 key=a address=0000:5e:01.3 driver=vfio-pci bound=yes\n"
      "pci owner=dom-1 key=b address=0000:5e:01.4 driver=vfio-pci "
      "bound=maybe\n");
  absl::StatusOr<std::unique_ptr<AllocationStore>> store =
      AllocationStore::Open(dir_);
  ASSERT_EQ(store.status().code(), absl::StatusCode::kDataLoss)
      << store.status();
  EXPECT_TRUE(absl::StrContains(store.status().message(),
                                "host-allocations:3 is corrupt"))
      << store.status();
  EXPECT_TRUE(absl::StrContains(store.status().message(), "bound=maybe"))
      << store.status();
}

TEST_F(AllocationStoreTest, ACutOffLastLineIsCorrupt) {
  WriteRaw(
      "# migd host allocations v1\n"
      "pci owner=dom-1 key=a address=0000:5e:01.3 driver=vfio-pci bou");
  absl::StatusOr<std::unique_ptr<AllocationStore>> store =
      AllocationStore::Open(dir_);
  ASSERT_EQ(store.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(absl::StrContains(store.status().message(), ":2 is corrupt"))
      << store.status();
}

TEST_F(AllocationStoreTest, ADeviceRecordedTwiceIsCorrupt) {
  WriteRaw(
      "pci owner=dom-1 key=a address=0000:5e:01.3 driver=vfio-pci bound=yes\n"
      "pci owner=dom-2 key=a address=0000:5e:01.3 driver=vfio-pci bound=no\n");
  absl::StatusOr<std::unique_ptr<AllocationStore>> store =
      AllocationStore::Open(dir_);
  ASSERT_EQ(store.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(absl::StrContains(store.status().message(), ":2 is corrupt"))
      << store.status();
}

TEST(ParseAllocationLine, RoundTripsBothKinds) {
  for (const Allocation& a :
       {Pci("dom-1", "0000:3b:02.0", "0000:5e:01.3"),
        Mdev("a/b", "k", "0b5e4c3a-1111-4222-8333-444455556666")}) {
    absl::StatusOr<Allocation> back =
        ParseAllocationLine(FormatAllocationLine(a));
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(*back, a);
  }
}

TEST(ValidateAllocationName, RefusesSpacesAndEmpty) {
  EXPECT_TRUE(ValidateAllocationName("owner", "6f1c0e4e-dom").ok());
  EXPECT_FALSE(ValidateAllocationName("owner", "").ok());
  EXPECT_FALSE(ValidateAllocationName("owner", "a b").ok());
  EXPECT_FALSE(ValidateAllocationName("owner", "a=b").ok());
}

}  // namespace
}  // namespace migd::host
