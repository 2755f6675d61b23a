#include "migd/base/crc32c.h"

#include <algorithm>
#include <cstring>
#include <ostream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "migd/base/crc32c_internal.h"

namespace migd::base {
namespace crc32c_internal {

// Names the implementation in failure messages, rather than its bytes.
void PrintTo(const Implementation& impl, std::ostream* os) { *os << impl.name; }

}  // namespace crc32c_internal

namespace {

TEST(Crc32c, MatchesRfc3720Vectors) {
  std::vector<uint8_t> zeros(32, 0), ones(32, 0xff), inc(32), dec(32);
  for (int i = 0; i < 32; ++i) {
    inc[i] = i;
    dec[i] = 31 - i;
  }
  EXPECT_EQ(Crc32c(zeros.data(), 32), 0x8A9136AAu);
  EXPECT_EQ(Crc32c(ones.data(), 32), 0x62A8AB43u);
  EXPECT_EQ(Crc32c(inc.data(), 32), 0x46DD794Eu);
  EXPECT_EQ(Crc32c(dec.data(), 32), 0x113FDB5Cu);
}

TEST(Crc32c, CheckValueOf123456789) {
  const std::string s = "123456789";
  EXPECT_EQ(Crc32c(s.data(), s.size()), 0xE3069283u);
}

TEST(Crc32c, ExtendEqualsWholeAtEverySplitAndAlignment) {
  std::vector<uint8_t> buf(1000);
  for (size_t i = 0; i < buf.size(); ++i)
    buf[i] = static_cast<uint8_t>(i * 31 + 7);
  for (size_t start = 0; start < 9; ++start) {
    const uint8_t* p = buf.data() + start;
    size_t n = buf.size() - start;
    uint32_t whole = Crc32c(p, n);
    for (size_t split :
         {size_t{0}, size_t{1}, size_t{7}, size_t{64}, n / 2, n}) {
      EXPECT_EQ(Crc32cExtend(Crc32c(p, split), p + split, n - split), whole)
          << "start " << start << " split " << split;
    }
  }
}

// Long inputs take the three-lane paths (blocks of 8 KiB and 256 bytes, then
// combined): they must agree with the byte-at-a-time table.
TEST(Crc32c, LongInputsMatchTheBytewiseDefinition) {
  std::vector<uint8_t> buf(3 * 8192 * 2 + 3 * 256 + 77);
  uint64_t x = 0x9E3779B97F4A7C15ull;
  for (auto& b : buf) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    b = static_cast<uint8_t>(x);
  }
  for (size_t len : {size_t{24576}, size_t{24577}, size_t{768}, buf.size(),
                     buf.size() - 5}) {
    uint32_t c = ~0u;
    for (size_t i = 0; i < len; ++i) {
      c ^= buf[i];
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    }
    EXPECT_EQ(Crc32c(buf.data(), len), ~c) << len;
    EXPECT_EQ(Crc32cExtend(Crc32c(buf.data(), 3), buf.data() + 3, len - 3), ~c)
        << len;
  }
}

TEST(Crc32c, DetectsASingleBitFlip) {
  std::vector<uint8_t> buf(4096, 0x5a);
  uint32_t before = Crc32c(buf.data(), buf.size());
  buf[1234] ^= 0x10;
  EXPECT_NE(Crc32c(buf.data(), buf.size()), before);
}

// --- Each implementation on its own, against the byte-at-a-time table ---

using crc32c_internal::ExtendPortable;
using crc32c_internal::FoldConstants;
using crc32c_internal::Implementation;

std::vector<uint8_t> RandomBytes(size_t n, uint64_t seed) {
  std::vector<uint8_t> out(n);
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (auto& b : out) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    b = static_cast<uint8_t>(x >> 24);
  }
  return out;
}

class Crc32cImplementation : public testing::TestWithParam<Implementation> {
 protected:
  void SetUp() override {
    if (!GetParam().available()) {
      GTEST_SKIP() << GetParam().name << " is not supported on this machine";
    }
  }

  uint32_t Extend(uint32_t crc, const uint8_t* p, size_t n) const {
    return GetParam().extend(crc, p, n);
  }
};

TEST_P(Crc32cImplementation, CheckValueOf123456789) {
  const std::string s = "123456789";
  EXPECT_EQ(Extend(0, reinterpret_cast<const uint8_t*>(s.data()), s.size()),
            0xE3069283u);
}

// Lengths up to 2048 reach every step of the folding paths (the 256-byte
// loop, each reduction, the 16-byte blocks and the last bytes); offsets 0..63
// put the same bytes at every alignment relative to a cache line.
TEST_P(Crc32cImplementation, MatchesPortableForEveryLengthAndAlignment) {
  constexpr size_t kMaxLen = 2048;
  const std::vector<uint8_t> data = RandomBytes(kMaxLen, 1);
  std::vector<uint32_t> want(kMaxLen + 1);
  for (size_t len = 0; len <= kMaxLen; ++len) {
    want[len] = ExtendPortable(0, data.data(), len);
  }
  std::vector<uint8_t> storage(kMaxLen + 2 * 64);
  uint8_t* line =
      storage.data() + (64 - reinterpret_cast<uintptr_t>(storage.data()) % 64);
  for (size_t offset = 0; offset < 64; ++offset) {
    std::memcpy(line + offset, data.data(), kMaxLen);
    for (size_t len = 0; len <= kMaxLen; ++len) {
      ASSERT_EQ(Extend(0, line + offset, len), want[len])
          << "offset " << offset << " length " << len;
    }
  }
}

TEST_P(Crc32cImplementation, MatchesPortableOnLargeBuffers) {
  for (size_t len : {size_t{1 << 20} + 13, size_t{8 << 20}}) {
    const std::vector<uint8_t> data = RandomBytes(len + 1, len);
    EXPECT_EQ(Extend(0, data.data(), len), ExtendPortable(0, data.data(), len))
        << len;
    EXPECT_EQ(Extend(0, data.data() + 1, len),
              ExtendPortable(0, data.data() + 1, len))
        << len << " at offset 1";
  }
}

// A starting CRC must enter the fold exactly as the register it stands for.
TEST_P(Crc32cImplementation, ExtendAtEverySplitEqualsWhole) {
  const std::vector<uint8_t> data = RandomBytes(2048, 3);
  const uint32_t whole = ExtendPortable(0, data.data(), data.size());
  for (size_t split = 0; split <= data.size(); ++split) {
    const uint32_t head = Extend(0, data.data(), split);
    ASSERT_EQ(Extend(head, data.data() + split, data.size() - split), whole)
        << "split " << split;
  }
}

TEST_P(Crc32cImplementation, ExtendAcrossArbitrarySplitsEqualsWhole) {
  const std::vector<uint8_t> data = RandomBytes(40000, 2);
  const uint32_t whole = ExtendPortable(0, data.data(), data.size());
  uint64_t x = 12345;
  for (int round = 0; round < 50; ++round) {
    uint32_t crc = 0;
    size_t pos = 0;
    while (pos < data.size()) {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      // Pieces from empty to a few KiB, so that both the short and the
      // folding paths see nonzero starting CRCs.
      size_t piece = std::min<size_t>((x >> 33) % (round % 2 ? 700 : 5000),
                                      data.size() - pos);
      crc = Extend(crc, data.data() + pos, piece);
      pos += piece;
    }
    ASSERT_EQ(crc, whole) << "round " << round;
  }
}

TEST_P(Crc32cImplementation, AllZerosAndAllOnesMatchPortable) {
  for (uint8_t fill : {uint8_t{0}, uint8_t{0xff}}) {
    const std::vector<uint8_t> data(100000, fill);
    for (uint32_t crc : {0u, 0xffffffffu, 0x12345678u}) {
      EXPECT_EQ(Extend(crc, data.data(), data.size()),
                ExtendPortable(crc, data.data(), data.size()))
          << int{fill} << " from " << crc;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    All, Crc32cImplementation,
    testing::ValuesIn(crc32c_internal::Implementations()),
    [](const testing::TestParamInfo<Implementation>& info) {
      return std::string(info.param.name);
    });

// x^e mod P (e >= 32, a multiple of 8) from the table alone: the CRC
// register holds message * x^32 mod P, and a message that is 0x80 followed by
// z zero bytes is the polynomial x^(8z).
uint32_t XPowModPByTable(size_t e) {
  const size_t zeros = (e - 32) / 8;
  std::vector<uint8_t> msg(zeros + 1, 0);
  msg[0] = 0x80;
  // With a zero starting register and no final xor: the table's
  // conditioning cancels between the message and all-zeros of its length.
  std::vector<uint8_t> none(msg.size(), 0);
  return ExtendPortable(0, msg.data(), msg.size()) ^
         ExtendPortable(0, none.data(), none.size());
}

// Checked independently of XPowModP, so that a wrong or misplaced fold
// constant fails here even where no input happens to expose it.
TEST(Crc32cFoldConstants, AreReflectedPowersOfXModP) {
  struct Case {
    size_t bytes;
    FoldConstants k;
  };
  for (const Case& c :
       {Case{16, crc32c_internal::kFold16}, Case{32, crc32c_internal::kFold32},
        Case{64, crc32c_internal::kFold64},
        Case{128, crc32c_internal::kFold128},
        Case{256, crc32c_internal::kFold256}}) {
    EXPECT_EQ(c.k.low_qword, uint64_t{XPowModPByTable(8 * c.bytes + 32)} << 1)
        << c.bytes;
    EXPECT_EQ(c.k.high_qword, uint64_t{XPowModPByTable(8 * c.bytes - 32)} << 1)
        << c.bytes;
  }
}

// Values published for this polynomial in Intel's ISA-L
// (crc32_iscsi_by16_10.asm: rk_2/rk_1 fold by 256 bytes, rk16/rk15 by 64),
// pinned so that the constants and the test above cannot both drift to a
// wrong convention together.
TEST(Crc32cFoldConstants, MatchIsaL) {
  EXPECT_EQ(crc32c_internal::kFold256.low_qword, 0xdcb17aa4u);
  EXPECT_EQ(crc32c_internal::kFold256.high_qword, 0xb9e02b86u);
  EXPECT_EQ(crc32c_internal::kFold64.low_qword, 0x740eef02u);
  EXPECT_EQ(crc32c_internal::kFold64.high_qword, 0x9e4addf8u);
}

}  // namespace
}  // namespace migd::base
