// migd/host/binding_store_test.cc
//
// BindingStore on a real directory under $TEST_TMPDIR: what it writes, what
// it reads back after a "restart" (a new store over the same directory),
// what it refuses to read, and that changes from several threads end up in
// the file one after the other.

#include "migd/host/binding_store.h"

#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "gtest/gtest.h"

namespace migd::host {
namespace {

namespace fs = std::filesystem;

BindRecord Record(const std::string& device, const std::string& driver,
                  std::optional<std::string> original_driver,
                  std::optional<std::string> original_override = {}) {
  return BindRecord{
      Bus::kPci, device, driver,
      Binding{std::move(original_driver), std::move(original_override)}, true};
}

// The i-th PCI address on `bus`: 8 functions to a device.
std::string Address(int bus, int i) {
  return absl::StrFormat("0000:%02x:%02x.%d", bus, i / 8, i % 8);
}

bool SameRecord(const BindRecord& a, const BindRecord& b) {
  return a.bus == b.bus && a.device == b.device && a.driver == b.driver &&
         a.original == b.original;
}

class BindingStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* base = getenv("TEST_TMPDIR");
    std::string pattern =
        absl::StrCat(base != nullptr ? base : "/tmp", "/stateXXXXXX");
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  std::string File() const { return absl::StrCat(dir_, "/host-bindings"); }

  std::string Read() const {
    std::ifstream in(File());
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

  void WriteRaw(const std::string& text) { std::ofstream(File()) << text; }

  std::unique_ptr<BindingStore> Open() {
    absl::StatusOr<std::unique_ptr<BindingStore>> s = BindingStore::Open(dir_);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? *std::move(s) : nullptr;
  }

  std::string dir_;
};

TEST_F(BindingStoreTest, StartsEmptyAndWritesNothingUntilAChange) {
  std::unique_ptr<BindingStore> store = Open();
  ASSERT_NE(store, nullptr);
  EXPECT_TRUE(store->List().empty());
  EXPECT_FALSE(store->Find(Bus::kPci, "0000:03:00.1").has_value());
  EXPECT_FALSE(fs::exists(File()));
  EXPECT_EQ(store->path(), File());
}

TEST_F(BindingStoreTest, ARecordSurvivesARestart) {
  {
    std::unique_ptr<BindingStore> store = Open();
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(
        store->Put(Record("0000:03:00.1", "vfio-pci", "mlx5_core")).ok());
    ASSERT_TRUE(store
                    ->Put(Record("0000:04:00.0", "mlx5_vfio_pci", std::nullopt,
                                 "vfio-pci"))
                    .ok());
  }
  std::unique_ptr<BindingStore> again = Open();
  ASSERT_NE(again, nullptr);
  std::optional<BindRecord> r = again->Find(Bus::kPci, "0000:03:00.1");
  ASSERT_TRUE(r.has_value());
  EXPECT_TRUE(SameRecord(*r, Record("0000:03:00.1", "vfio-pci", "mlx5_core")));
  EXPECT_TRUE(r->changed);
  r = again->Find(Bus::kPci, "0000:04:00.0");
  ASSERT_TRUE(r.has_value());
  EXPECT_TRUE(SameRecord(
      *r, Record("0000:04:00.0", "mlx5_vfio_pci", std::nullopt, "vfio-pci")));
  EXPECT_EQ(again->List().size(), 2u);
}

TEST_F(BindingStoreTest, TheFileIsOneLinePerDeviceAndOwnerOnly) {
  std::unique_ptr<BindingStore> store = Open();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->Put(Record("0000:03:00.1", "vfio-pci", "mlx5_core")).ok());
  EXPECT_TRUE(absl::StrContains(
      Read(),
      "\npci 0000:03:00.1 driver=vfio-pci original_driver=mlx5_core "
      "original_override=\n"))
      << Read();
  struct stat st;
  ASSERT_EQ(stat(File().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_FALSE(fs::exists(File() + ".tmp"));
}

TEST_F(BindingStoreTest, PutReplacesAndRemoveForgetsDurably) {
  {
    std::unique_ptr<BindingStore> store = Open();
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(
        store->Put(Record("0000:03:00.1", "vfio-pci", "mlx5_core")).ok());
    ASSERT_TRUE(
        store->Put(Record("0000:03:00.1", "mlx5_vfio_pci", "mlx5_core")).ok());
    ASSERT_TRUE(store->Put(Record("0000:05:00.0", "vfio-pci", "e1000e")).ok());
    ASSERT_TRUE(store->Remove(Bus::kPci, "0000:05:00.0").ok());
    EXPECT_TRUE(store->Remove(Bus::kPci, "0000:05:00.0").ok());  // none: OK
  }
  std::unique_ptr<BindingStore> again = Open();
  ASSERT_NE(again, nullptr);
  ASSERT_EQ(again->List().size(), 1u);
  EXPECT_EQ(again->List()[0].driver, "mlx5_vfio_pci");
  EXPECT_FALSE(again->Find(Bus::kPci, "0000:05:00.0").has_value());
}

TEST_F(BindingStoreTest, AFailedWriteChangesNothing) {
  std::unique_ptr<BindingStore> store = Open();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->Put(Record("0000:03:00.1", "vfio-pci", "mlx5_core")).ok());
  const std::string before = Read();
  // The temporary file cannot be created where a directory stands.
  fs::create_directory(File() + ".tmp");
  absl::Status s = store->Put(Record("0000:05:00.0", "vfio-pci", "e1000e"));
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(absl::StrContains(s.message(), File() + ".tmp")) << s;
  EXPECT_FALSE(store->Find(Bus::kPci, "0000:05:00.0").has_value());
  s = store->Remove(Bus::kPci, "0000:03:00.1");
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(store->Find(Bus::kPci, "0000:03:00.1").has_value());
  EXPECT_EQ(Read(), before);
}

TEST_F(BindingStoreTest, PutRefusesANameThatIsNotOneSysfsEntry) {
  std::unique_ptr<BindingStore> store = Open();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->Put(Record("0000:03:00.1", "vfio pci", "x")).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store->Put(Record("0000:03:00.1", "vfio-pci", "a\nb")).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store->Put(Record("03:00.1", "vfio-pci", "x")).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(fs::exists(File()));
}

TEST_F(BindingStoreTest, ACorruptLineStopsOpenNamingTheFileAndTheLine) {
  WriteRaw(
      "# migd host bindings v1\n"
      "pci 0000:03:00.1 driver=vfio-pci original_driver=mlx5_core "
      "original_override=\n"
      "pci 0000:04:00.0 driver=vfio-pci\n");
  absl::StatusOr<std::unique_ptr<BindingStore>> s = BindingStore::Open(dir_);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(absl::StrContains(s.status().message(), File() + ":3"))
      << s.status();
}

TEST_F(BindingStoreTest, ACutOffLastLineIsCorrupt) {
  WriteRaw(
      "# migd host bindings v1\n"
      "pci 0000:03:00.1 driver=vfio-pci original_driver=mlx5_core "
      "original_over");
  absl::StatusOr<std::unique_ptr<BindingStore>> s = BindingStore::Open(dir_);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(absl::StrContains(s.status().message(), File() + ":2"))
      << s.status();
  EXPECT_TRUE(absl::StrContains(s.status().message(), "cut off")) << s.status();
}

TEST_F(BindingStoreTest, ADeviceRecordedTwiceIsCorrupt) {
  const std::string line =
      "pci 0000:03:00.1 driver=vfio-pci original_driver= original_override=\n";
  WriteRaw(line + line);
  absl::StatusOr<std::unique_ptr<BindingStore>> s = BindingStore::Open(dir_);
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(absl::StrContains(s.status().message(), File() + ":2"))
      << s.status();
  EXPECT_TRUE(absl::StrContains(s.status().message(), "recorded twice"))
      << s.status();
}

TEST_F(BindingStoreTest, AnUnnormalizedAddressInTheFileIsCorrupt) {
  WriteRaw(
      "pci 0000:03:00.A driver=vfio-pci original_driver= "
      "original_override=\n");
  absl::StatusOr<std::unique_ptr<BindingStore>> s = BindingStore::Open(dir_);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(absl::StrContains(s.status().message(), File() + ":1"))
      << s.status();
}

TEST_F(BindingStoreTest, ChangesFromTwoThreadsAreAllKept) {
  std::unique_ptr<BindingStore> store = Open();
  ASSERT_NE(store, nullptr);
  constexpr int kEach = 40;
  auto writer = [&](int bus) {
    for (int i = 0; i < kEach; ++i) {
      const std::string device = Address(bus, i);
      absl::Status s = store->Put(Record(device, "vfio-pci", "e1000e"));
      EXPECT_TRUE(s.ok()) << s;
      // Every other one comes and goes again.
      if (i % 2 == 1) {
        EXPECT_TRUE(store->Remove(Bus::kPci, device).ok());
      }
    }
  };
  std::thread a(writer, 0x10);
  std::thread b(writer, 0x20);
  a.join();
  b.join();
  EXPECT_EQ(store->List().size(), static_cast<size_t>(kEach));
  std::unique_ptr<BindingStore> again = Open();
  ASSERT_NE(again, nullptr);
  EXPECT_EQ(again->List().size(), static_cast<size_t>(kEach));
  for (int bus : {0x10, 0x20}) {
    for (int i = 0; i < kEach; ++i) {
      const std::string device = Address(bus, i);
      EXPECT_EQ(again->Find(Bus::kPci, device).has_value(), i % 2 == 0)
          << device;
    }
  }
}

TEST(BindingLine, RoundTripsWithAndWithoutAnOriginal) {
  for (const BindRecord& r :
       {Record("0000:03:00.1", "vfio-pci", "mlx5_core"),
        Record("0000:03:00.1", "vfio-pci", std::nullopt),
        Record("0000:03:00.1", "mlx5_vfio_pci", std::nullopt, "vfio-pci")}) {
    absl::StatusOr<BindRecord> back = ParseBindingLine(FormatBindingLine(r));
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_TRUE(SameRecord(*back, r)) << FormatBindingLine(r);
  }
}

TEST(BindingLine, RefusesMissingOrReorderedKeysAndUnknownBuses) {
  for (const char* line :
       {"pci 0000:03:00.1 driver=vfio-pci original_driver=",
        "pci 0000:03:00.1 original_driver= driver=vfio-pci original_override=",
        "usb 1-1 driver=x original_driver= original_override=",
        "pci 0000:03:00.1 driver= original_driver= original_override="}) {
    EXPECT_EQ(ParseBindingLine(line).status().code(),
              absl::StatusCode::kInvalidArgument)
        << line;
  }
}

}  // namespace
}  // namespace migd::host
