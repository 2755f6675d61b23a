// migd/base/crc32c.h
//
// CRC32C (Castagnoli), the checksum on every transfer chunk and in the emulated
// device's state. Picks, on first use, the fastest way this CPU allows:
// carry-less-multiply folding (VPCLMULQDQ on 512- or 256-bit vectors), the
// SSE4.2 crc32 instruction, or a table. All give the same values (RFC 3720
// test vectors); crc32c_internal.h has the individual implementations.

#ifndef MIGD_BASE_CRC32C_H_
#define MIGD_BASE_CRC32C_H_

#include <cstddef>
#include <cstdint>

namespace migd::base {

// Extends `crc` (the value returned for the preceding bytes, 0 to start) with
// `n` bytes at `data`. Crc32c(Crc32c(0, a), b) == Crc32c(0, a + b).
uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t n);

inline uint32_t Crc32c(const void* data, size_t n) {
  return Crc32cExtend(0, data, n);
}

}  // namespace migd::base

#endif  // MIGD_BASE_CRC32C_H_
