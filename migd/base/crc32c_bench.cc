// migd/base/crc32c_bench.cc
//
// Throughput of every CRC32C implementation this machine can run, on a 1 MiB
// buffer that stays in cache (the transfer path's chunk size) and on a
// 256 MiB one that does not (whole-buffer checksums). Prints the median of
// several repetitions in GB/s (10^9 bytes per second).
//
//   bazel run -c opt //migd/base:crc32c_bench

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "migd/base/crc32c.h"
#include "migd/base/crc32c_internal.h"

namespace migd::base {
namespace {

using crc32c_internal::ExtendFn;

constexpr int kRepetitions = 9;
// Each repetition runs for at least this long, so that short buffers are
// timed over many calls.
constexpr double kMinRepetitionSeconds = 0.05;

uint32_t Dispatched(uint32_t crc, const uint8_t* p, size_t n) {
  return Crc32cExtend(crc, p, n);
}

volatile uint32_t sink;  // keeps the CRCs from being optimized away

double MedianGbPerSecond(ExtendFn extend, const std::vector<uint8_t>& buf) {
  using Clock = std::chrono::steady_clock;
  uint32_t crc = extend(0, buf.data(), buf.size());  // warm up, fault in
  std::vector<double> rates;
  for (int r = 0; r < kRepetitions; ++r) {
    const Clock::time_point start = Clock::now();
    double seconds = 0;
    size_t calls = 0;
    do {
      crc = extend(crc, buf.data(), buf.size());
      ++calls;
      seconds = std::chrono::duration<double>(Clock::now() - start).count();
    } while (seconds < kMinRepetitionSeconds);
    rates.push_back(static_cast<double>(calls * buf.size()) / seconds / 1e9);
  }
  sink = crc;
  std::nth_element(rates.begin(), rates.begin() + rates.size() / 2,
                   rates.end());
  return rates[rates.size() / 2];
}

std::vector<uint8_t> RandomBuffer(size_t n) {
  std::vector<uint8_t> buf(n);
  uint64_t x = 0x9E3779B97F4A7C15ull;
  for (auto& b : buf) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    b = static_cast<uint8_t>(x >> 24);
  }
  return buf;
}

struct Row {
  std::string name;
  double hot;
  double memory;
};

int Main() {
  const std::vector<uint8_t> hot = RandomBuffer(size_t{1} << 20);
  const std::vector<uint8_t> memory = RandomBuffer(size_t{256} << 20);
  std::vector<Row> rows;
  for (const auto& impl : crc32c_internal::Implementations()) {
    if (!impl.available()) {
      std::printf("%-12s not supported on this machine\n", impl.name);
      continue;
    }
    rows.push_back({impl.name, MedianGbPerSecond(impl.extend, hot),
                    MedianGbPerSecond(impl.extend, memory)});
  }
  rows.push_back({"Crc32cExtend", MedianGbPerSecond(Dispatched, hot),
                  MedianGbPerSecond(Dispatched, memory)});

  std::printf("%-12s %14s %14s   (GB/s, median of %d)\n", "", "1 MiB (hot)",
              "256 MiB (mem)", kRepetitions);
  const Row* sse42 = nullptr;
  const Row* fastest = &rows.front();
  for (const Row& row : rows) {
    std::printf("%-12s %14.2f %14.2f\n", row.name.c_str(), row.hot, row.memory);
    if (row.name == "sse42") sse42 = &row;
    // The dispatcher is one of the implementations, not a contender.
    if (&row != &rows.back() && row.hot > fastest->hot) fastest = &row;
  }
  if (sse42 != nullptr) {
    std::printf("%s / sse42: %.2fx hot, %.2fx memory\n", fastest->name.c_str(),
                fastest->hot / sse42->hot, fastest->memory / sse42->memory);
  }
  return 0;
}

}  // namespace
}  // namespace migd::base

int main() { return migd::base::Main(); }
