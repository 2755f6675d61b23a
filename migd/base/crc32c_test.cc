#include "migd/base/crc32c.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace migd::base {
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

}  // namespace
}  // namespace migd::base
