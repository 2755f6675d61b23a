#include "migd/base/crc32c.h"

#include <array>
#include <cstring>

#if defined(__x86_64__)
#include <cpuid.h>
#include <nmmintrin.h>
#endif

namespace migd::base {
namespace {

constexpr uint32_t kPoly = 0x82F63B78;  // reflected Castagnoli polynomial

constexpr std::array<uint32_t, 256> MakeTable() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ kPoly : c >> 1;
    t[i] = c;
  }
  return t;
}

constexpr std::array<uint32_t, 256> kTable = MakeTable();

uint32_t ExtendPortable(uint32_t crc, const uint8_t* p, size_t n) {
  uint32_t c = ~crc;
  for (size_t i = 0; i < n; ++i) c = kTable[(c ^ p[i]) & 0xff] ^ (c >> 8);
  return ~c;
}

#if defined(__x86_64__)
// The crc32 instruction has a latency of three cycles and a throughput of
// one: three independent streams over three adjacent blocks keep it busy, and
// their CRCs are then combined by "appending" zeros to the earlier ones (a
// linear operator, tabulated per block length). Mark Adler's method.
constexpr size_t kLong = 8192;
constexpr size_t kShort = 256;

uint32_t Gf2MatrixTimes(const uint32_t* mat, uint32_t vec) {
  uint32_t sum = 0;
  while (vec != 0) {
    if (vec & 1) sum ^= *mat;
    vec >>= 1;
    ++mat;
  }
  return sum;
}

void Gf2MatrixSquare(uint32_t* square, const uint32_t* mat) {
  for (int n = 0; n < 32; ++n) square[n] = Gf2MatrixTimes(mat, mat[n]);
}

// The operator that appends `len` zero bytes to a CRC register.
void ZerosOperator(uint32_t* even, size_t len) {
  uint32_t odd[32];
  odd[0] = kPoly;  // one zero bit
  uint32_t row = 1;
  for (int n = 1; n < 32; ++n) {
    odd[n] = row;
    row <<= 1;
  }
  Gf2MatrixSquare(even, odd);  // two zero bits
  Gf2MatrixSquare(odd, even);  // four zero bits
  // Squaring doubles the zeros: eight bits (one byte) first, then len's bits.
  do {
    Gf2MatrixSquare(even, odd);
    len >>= 1;
    if (len == 0) return;
    Gf2MatrixSquare(odd, even);
    len >>= 1;
  } while (len != 0);
  for (int n = 0; n < 32; ++n) even[n] = odd[n];
}

struct ShiftTable {
  uint32_t t[4][256];
};

ShiftTable MakeShiftTable(size_t len) {
  uint32_t op[32];
  ZerosOperator(op, len);
  ShiftTable table;
  for (uint32_t n = 0; n < 256; ++n) {
    table.t[0][n] = Gf2MatrixTimes(op, n);
    table.t[1][n] = Gf2MatrixTimes(op, n << 8);
    table.t[2][n] = Gf2MatrixTimes(op, n << 16);
    table.t[3][n] = Gf2MatrixTimes(op, n << 24);
  }
  return table;
}

uint32_t Shift(const ShiftTable& table, uint32_t crc) {
  return table.t[0][crc & 0xff] ^ table.t[1][(crc >> 8) & 0xff] ^
         table.t[2][(crc >> 16) & 0xff] ^ table.t[3][crc >> 24];
}

__attribute__((target("sse4.2"))) uint64_t Lanes3(uint64_t crc0,
                                                  const uint8_t*& p, size_t& n,
                                                  size_t block,
                                                  const ShiftTable& table) {
  while (n >= 3 * block) {
    uint64_t crc1 = 0, crc2 = 0;
    const uint8_t* end = p + block;
    do {
      uint64_t a, b, c;
      std::memcpy(&a, p, 8);
      std::memcpy(&b, p + block, 8);
      std::memcpy(&c, p + 2 * block, 8);
      crc0 = _mm_crc32_u64(crc0, a);
      crc1 = _mm_crc32_u64(crc1, b);
      crc2 = _mm_crc32_u64(crc2, c);
      p += 8;
    } while (p < end);
    crc0 = Shift(table, static_cast<uint32_t>(crc0)) ^ crc1;
    crc0 = Shift(table, static_cast<uint32_t>(crc0)) ^ crc2;
    p += 2 * block;
    n -= 3 * block;
  }
  return crc0;
}

__attribute__((target("sse4.2"))) uint32_t ExtendHardware(uint32_t crc,
                                                          const uint8_t* p,
                                                          size_t n) {
  static const ShiftTable* const long_table =
      new ShiftTable(MakeShiftTable(kLong));
  static const ShiftTable* const short_table =
      new ShiftTable(MakeShiftTable(kShort));
  uint64_t c = ~crc & 0xffffffffu;
  while (n > 0 && (reinterpret_cast<uintptr_t>(p) & 7) != 0) {
    c = _mm_crc32_u8(static_cast<uint32_t>(c), *p++);
    --n;
  }
  c = Lanes3(c, p, n, kLong, *long_table);
  c = Lanes3(c, p, n, kShort, *short_table);
  while (n >= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    c = _mm_crc32_u64(c, v);
    p += 8;
    n -= 8;
  }
  while (n > 0) {
    c = _mm_crc32_u8(static_cast<uint32_t>(c), *p++);
    --n;
  }
  return ~static_cast<uint32_t>(c);
}

bool HasSse42() {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
  return (c & bit_SSE4_2) != 0;
}
#endif

}  // namespace

uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
#if defined(__x86_64__)
  static const bool hw = HasSse42();  // immutable after first use
  if (hw) return ExtendHardware(crc, p, n);
#endif
  return ExtendPortable(crc, p, n);
}

}  // namespace migd::base
