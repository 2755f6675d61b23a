#include "migd/base/crc32c.h"

#include <array>
#include <cstring>

#include "migd/base/crc32c_internal.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

// Each accelerated function carries its own instruction set so that the
// binary needs no -march flag and still runs, via the portable table, on any
// x86-64; nothing here runs before its *Available() check has passed.
#define MIGD_CRC32C_SSE42 __attribute__((target("sse4.2")))
#define MIGD_CRC32C_PCLMUL __attribute__((target("pclmul,sse4.2")))
#define MIGD_CRC32C_VPCLMUL256 \
  __attribute__((target("avx2,vpclmulqdq,pclmul,sse4.2")))
#define MIGD_CRC32C_VPCLMUL512 \
  __attribute__((target("avx512f,avx512vl,vpclmulqdq,pclmul,sse4.2")))

namespace migd::base {
namespace crc32c_internal {
namespace {

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

bool Always() { return true; }

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

MIGD_CRC32C_SSE42 uint64_t Lanes3(uint64_t crc0, const uint8_t*& p, size_t& n,
                                  size_t block, const ShiftTable& table) {
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

// One stream, for what is too short for three; `c` is the raw register.
MIGD_CRC32C_SSE42 uint64_t Crc32Instruction(uint64_t c, const uint8_t* p,
                                            size_t n) {
  for (; n >= 8; p += 8, n -= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    c = _mm_crc32_u64(c, v);
  }
  for (; n > 0; --n) c = _mm_crc32_u8(static_cast<uint32_t>(c), *p++);
  return c;
}

// --- Folding with carry-less multiplication (see FoldConstants) ---
//
// 256 bytes of message sit in four zmm (or eight ymm) accumulators, each
// 128-bit lane a block. Every step folds each block 256 bytes forward onto
// the next 256 bytes of input. At the end the accumulators are folded onto
// the last of them, its lanes onto its last lane, and the 16 bytes left
// stand for the whole message so far: their CRC is its CRC.

MIGD_CRC32C_PCLMUL __m128i Constants128(FoldConstants k) {
  return _mm_set_epi64x(static_cast<int64_t>(k.high_qword),
                        static_cast<int64_t>(k.low_qword));
}

// Returns `acc` moved forward by `k`'s distance, xored with `next`.
MIGD_CRC32C_PCLMUL __m128i Fold128(__m128i acc, __m128i k, __m128i next) {
  return _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(acc, k, 0x00),
                                     _mm_clmulepi64_si128(acc, k, 0x11)),
                       next);
}

// Finishes from one folded block `acc` followed by the `n` bytes at `p`:
// the CRC of the folded bytes from a zero register (the crc32 instruction on
// its two qwords) is the CRC of all that came before. Exact, and shorter than
// a Barrett reduction.
//
// Always inlined, so that it is compiled as part of its AVX caller: VEX-encoded
// (no SSE/AVX transition penalties), and under the caller's vzeroupper before
// returning. As a separate function GCC 12 tail-calls it without one, and the
// dirty upper register state slows down the caller's legacy SSE code.
MIGD_CRC32C_PCLMUL inline __attribute__((always_inline)) uint32_t Finish(
    __m128i acc, const uint8_t* p, size_t n) {
  const __m128i k16 = Constants128(kFold16);
  for (; n >= 16; p += 16, n -= 16) {
    acc =
        Fold128(acc, k16, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  uint64_t c = _mm_crc32_u64(0, static_cast<uint64_t>(_mm_cvtsi128_si64(acc)));
  c = _mm_crc32_u64(c, static_cast<uint64_t>(_mm_extract_epi64(acc, 1)));
  return ~static_cast<uint32_t>(Crc32Instruction(c, p, n));
}

MIGD_CRC32C_VPCLMUL256 __m256i Constants256(FoldConstants k) {
  const auto lo = static_cast<int64_t>(k.low_qword);
  const auto hi = static_cast<int64_t>(k.high_qword);
  return _mm256_set_epi64x(hi, lo, hi, lo);
}

MIGD_CRC32C_VPCLMUL256 __m256i Load256(const uint8_t* p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}

MIGD_CRC32C_VPCLMUL256 __m256i Fold256(__m256i acc, __m256i k, __m256i next) {
  return _mm256_xor_si256(
      _mm256_xor_si256(_mm256_clmulepi64_epi128(acc, k, 0x00),
                       _mm256_clmulepi64_epi128(acc, k, 0x11)),
      next);
}

// Folds the lower lane of `acc` onto the upper one.
MIGD_CRC32C_VPCLMUL256 __m128i Reduce256(__m256i acc) {
  return Fold128(_mm256_castsi256_si128(acc), Constants128(kFold16),
                 _mm256_extracti128_si256(acc, 1));
}

MIGD_CRC32C_VPCLMUL512 __m512i Constants512(FoldConstants k) {
  const auto lo = static_cast<int64_t>(k.low_qword);
  const auto hi = static_cast<int64_t>(k.high_qword);
  return _mm512_set4_epi64(hi, lo, hi, lo);
}

MIGD_CRC32C_VPCLMUL512 __m512i Load512(const uint8_t* p) {
  return _mm512_loadu_si512(p);
}

MIGD_CRC32C_VPCLMUL512 __m512i Fold512(__m512i acc, __m512i k, __m512i next) {
  return _mm512_ternarylogic_epi64(_mm512_clmulepi64_epi128(acc, k, 0x00),
                                   _mm512_clmulepi64_epi128(acc, k, 0x11), next,
                                   0x96);  // a ^ b ^ c
}

// What the accelerated paths need from the CPU and the kernel.
struct CpuFeatures {
  bool sse42 = false;
  bool pclmul = false;
  bool avx2 = false;
  bool avx512f = false;
  bool avx512vl = false;
  bool vpclmulqdq = false;
  bool os_saves_ymm = false;  // XCR0: SSE and AVX state
  bool os_saves_zmm = false;  // XCR0: also opmask, ZMM_Hi256, Hi16_ZMM
};

CpuFeatures ReadCpuFeatures() {
  CpuFeatures f;
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  f.sse42 = (c & bit_SSE4_2) != 0;
  f.pclmul = (c & bit_PCLMUL) != 0;
  // The CPU having AVX registers is not enough: unless the kernel saves them
  // on a context switch (XCR0), using them corrupts other threads' state.
  if ((c & bit_OSXSAVE) != 0 && (c & bit_AVX) != 0) {
    uint32_t xcr0_lo, xcr0_hi;
    __asm__("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
    f.os_saves_ymm = (xcr0_lo & 0x06) == 0x06;
    f.os_saves_zmm = (xcr0_lo & 0xe6) == 0xe6;
  }
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
    f.avx2 = (b & bit_AVX2) != 0;
    f.avx512f = (b & bit_AVX512F) != 0;
    f.avx512vl = (b & bit_AVX512VL) != 0;
    f.vpclmulqdq = (c & bit_VPCLMULQDQ) != 0;
  }
  return f;
}
#endif  // defined(__x86_64__)

}  // namespace

uint32_t ExtendPortable(uint32_t crc, const uint8_t* p, size_t n) {
  uint32_t c = ~crc;
  for (size_t i = 0; i < n; ++i) c = kTable[(c ^ p[i]) & 0xff] ^ (c >> 8);
  return ~c;
}

#if defined(__x86_64__)
bool Sse42Available() { return ReadCpuFeatures().sse42; }

MIGD_CRC32C_SSE42 uint32_t ExtendSse42(uint32_t crc, const uint8_t* p,
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
  return ~static_cast<uint32_t>(Crc32Instruction(c, p, n));
}

bool Vpclmul256Available() {
  const CpuFeatures f = ReadCpuFeatures();
  return f.sse42 && f.pclmul && f.avx2 && f.vpclmulqdq && f.os_saves_ymm;
}

MIGD_CRC32C_VPCLMUL256 uint32_t ExtendVpclmul256(uint32_t crc, const uint8_t* p,
                                                 size_t n) {
  if (n < kMinFoldBytes) return ExtendSse42(crc, p, n);
  // The register's starting value is xored into the first 32 message bits,
  // after which folding starts from zero.
  const __m256i init =
      _mm256_zextsi128_si256(_mm_cvtsi32_si128(static_cast<int>(~crc)));
  __m256i x0 = _mm256_xor_si256(Load256(p), init);
  __m256i x1 = Load256(p + 32), x2 = Load256(p + 64), x3 = Load256(p + 96);
  __m256i x4 = Load256(p + 128), x5 = Load256(p + 160);
  __m256i x6 = Load256(p + 192), x7 = Load256(p + 224);
  p += 256;
  n -= 256;
  const __m256i k256 = Constants256(kFold256);
  for (; n >= 256; p += 256, n -= 256) {
    x0 = Fold256(x0, k256, Load256(p));
    x1 = Fold256(x1, k256, Load256(p + 32));
    x2 = Fold256(x2, k256, Load256(p + 64));
    x3 = Fold256(x3, k256, Load256(p + 96));
    x4 = Fold256(x4, k256, Load256(p + 128));
    x5 = Fold256(x5, k256, Load256(p + 160));
    x6 = Fold256(x6, k256, Load256(p + 192));
    x7 = Fold256(x7, k256, Load256(p + 224));
  }
  const __m256i k128 = Constants256(kFold128);
  x4 = Fold256(x0, k128, x4);
  x5 = Fold256(x1, k128, x5);
  x6 = Fold256(x2, k128, x6);
  x7 = Fold256(x3, k128, x7);
  const __m256i k64 = Constants256(kFold64);
  x6 = Fold256(x4, k64, x6);
  x7 = Fold256(x5, k64, x7);
  const __m256i k32 = Constants256(kFold32);
  x7 = Fold256(x6, k32, x7);
  for (; n >= 32; p += 32, n -= 32) x7 = Fold256(x7, k32, Load256(p));
  return Finish(Reduce256(x7), p, n);
}

bool Vpclmul512Available() {
  const CpuFeatures f = ReadCpuFeatures();
  return f.sse42 && f.pclmul && f.avx2 && f.avx512f && f.avx512vl &&
         f.vpclmulqdq && f.os_saves_zmm;
}

MIGD_CRC32C_VPCLMUL512 uint32_t ExtendVpclmul512(uint32_t crc, const uint8_t* p,
                                                 size_t n) {
  if (n < kMinFoldBytes) return ExtendSse42(crc, p, n);
  const __m512i init =
      _mm512_zextsi128_si512(_mm_cvtsi32_si128(static_cast<int>(~crc)));
  __m512i x0 = _mm512_xor_si512(Load512(p), init);
  __m512i x1 = Load512(p + 64), x2 = Load512(p + 128), x3 = Load512(p + 192);
  p += 256;
  n -= 256;
  const __m512i k256 = Constants512(kFold256);
  for (; n >= 256; p += 256, n -= 256) {
    x0 = Fold512(x0, k256, Load512(p));
    x1 = Fold512(x1, k256, Load512(p + 64));
    x2 = Fold512(x2, k256, Load512(p + 128));
    x3 = Fold512(x3, k256, Load512(p + 192));
  }
  const __m512i k128 = Constants512(kFold128);
  x2 = Fold512(x0, k128, x2);
  x3 = Fold512(x1, k128, x3);
  const __m512i k64 = Constants512(kFold64);
  x3 = Fold512(x2, k64, x3);
  for (; n >= 64; p += 64, n -= 64) x3 = Fold512(x3, k64, Load512(p));
  // Zero-masked extracts that keep all four qwords are the plain ones; GCC 12
  // warns (-Wmaybe-uninitialized) inside the unmasked intrinsics.
  const __m256i lower = _mm512_maskz_extracti64x4_epi64(0xf, x3, 0);
  const __m256i upper = _mm512_maskz_extracti64x4_epi64(0xf, x3, 1);
  const __m256i y = Fold256(lower, Constants256(kFold32), upper);
  return Finish(Reduce256(y), p, n);
}
#endif  // defined(__x86_64__)

std::span<const Implementation> Implementations() {
  static constexpr Implementation kAll[] = {
    {"portable", Always, ExtendPortable},
#if defined(__x86_64__)
    {"sse42", Sse42Available, ExtendSse42},
    {"vpclmul256", Vpclmul256Available, ExtendVpclmul256},
    {"vpclmul512", Vpclmul512Available, ExtendVpclmul512},
#endif
  };
  return kAll;
}

}  // namespace crc32c_internal

namespace {

// The last, so fastest, implementation this machine can run.
crc32c_internal::ExtendFn ChooseExtend() {
  const auto all = crc32c_internal::Implementations();
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    if (it->available()) return it->extend;
  }
  return crc32c_internal::ExtendPortable;
}

}  // namespace

uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t n) {
  static const crc32c_internal::ExtendFn extend = ChooseExtend();
  return extend(crc, static_cast<const uint8_t*>(data), n);
}

}  // namespace migd::base
