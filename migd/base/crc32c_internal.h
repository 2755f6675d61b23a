// migd/base/crc32c_internal.h
//
// The individual CRC32C implementations behind Crc32cExtend, and the folding
// constants the carry-less-multiply ones use. Exposed so that tests and the
// benchmark can run every implementation this CPU supports, not only the one
// the dispatcher picks. Not for use outside crc32c*.

#ifndef MIGD_BASE_CRC32C_INTERNAL_H_
#define MIGD_BASE_CRC32C_INTERNAL_H_

#include <cstddef>
#include <cstdint>
#include <span>

namespace migd::base::crc32c_internal {

inline constexpr uint32_t kPoly = 0x82F63B78;  // reflected Castagnoli

// Same contract as Crc32cExtend.
using ExtendFn = uint32_t (*)(uint32_t crc, const uint8_t* data, size_t n);

// Byte-at-a-time table. Runs everywhere; the reference for the others.
uint32_t ExtendPortable(uint32_t crc, const uint8_t* data, size_t n);

#if defined(__x86_64__)
// Each Extend* below may run only where its *Available() returns true; on
// other CPUs it dies with SIGILL.

// The SSE4.2 crc32 instruction over three interleaved streams.
bool Sse42Available();
uint32_t ExtendSse42(uint32_t crc, const uint8_t* data, size_t n);

// Folding with VPCLMULQDQ over 256-bit (AVX2) or 512-bit (AVX-512) vectors,
// 256 bytes per step. Inputs shorter than kMinFoldBytes go to ExtendSse42.
inline constexpr size_t kMinFoldBytes = 256;
bool Vpclmul256Available();
uint32_t ExtendVpclmul256(uint32_t crc, const uint8_t* data, size_t n);
bool Vpclmul512Available();
uint32_t ExtendVpclmul512(uint32_t crc, const uint8_t* data, size_t n);
#endif

struct Implementation {
  const char* name;
  bool (*available)();  // whether this CPU and OS can run `extend`
  ExtendFn extend;
};

// Every implementation compiled in, slowest first, whether or not this CPU
// can run it.
std::span<const Implementation> Implementations();

// x^e mod P, in the layout of a CRC register: bit i holds the coefficient of
// x^(31-i). Multiplying by x is one step of the bitwise CRC (shift right,
// reduce by P when x^32 falls out), hence the loop.
constexpr uint32_t XPowModP(uint64_t e) {
  uint32_t r = 0x80000000u;  // x^0
  for (; e > 0; --e) r = (r & 1) ? (r >> 1) ^ kPoly : r >> 1;
  return r;
}

// Multipliers that move a 128-bit block of message `bytes` bytes further
// along, where it is xored into the block that sits there; the CRC of the
// message does not change (Gopal et al., "Fast CRC Computation for Generic
// Polynomials Using PCLMULQDQ", reflected variant).
//
// A lane's bit k is the coefficient of x^(127-k), so its low qword holds the
// block's upper 64 coefficients and must move by x^(8*bytes + 64), its high
// qword by x^(8*bytes). PCLMULQDQ multiplies as if bit k meant x^k: with the
// qword's bit i meaning x^(63-i) and the constant's bit j meaning x^(32-j) (a
// CRC register shifted left by one), product bit k means x^(95-k); read in the
// lane layout it is the product times x^32. That factor comes for free, so
// each constant is x^(distance - 32) mod P.
struct FoldConstants {
  uint64_t low_qword;   // x^(8*bytes + 32) mod P, reflected to 33 bits
  uint64_t high_qword;  // x^(8*bytes - 32) mod P, reflected to 33 bits
};

constexpr FoldConstants FoldBy(size_t bytes) {
  return {uint64_t{XPowModP(8 * bytes + 32)} << 1,
          uint64_t{XPowModP(8 * bytes - 32)} << 1};
}

// The distances the folding implementations use.
inline constexpr FoldConstants kFold16 = FoldBy(16);
inline constexpr FoldConstants kFold32 = FoldBy(32);
inline constexpr FoldConstants kFold64 = FoldBy(64);
inline constexpr FoldConstants kFold128 = FoldBy(128);
inline constexpr FoldConstants kFold256 = FoldBy(256);

}  // namespace migd::base::crc32c_internal

#endif  // MIGD_BASE_CRC32C_INTERNAL_H_
