// migd/device/emulated_spec.h
//
// Parses the agent's device config lines that declare emulated devices, so
// an operator (or a loopback test) can describe a device, including its fault
// knobs, in one line:
//
//   emulated NAME [size=64MiB] [seed=N] [format=N]
//                 [flags=STOP_COPY|P2P|PRE_COPY]
//                 [fail_arc=STOP>STOP_COPY] [slow_arc=RESUMING>STOP@2s]
//                 [corrupt_stream_at=N]
//                 [fail_read=ENODEV@N]
//                 [dirty_rate=8MiB] [load_rate=1MiB] [dma_rate=N]
//                 [dma_write_log=/path/file] [dma_logging=on|off]
//
// Omitted keys keep EmulatedDeviceConfig's defaults. Errors name the token.
// dirty_rate and load_rate are bytes per second, written as ParseSize
// accepts (an optional "/s" may follow: dirty_rate=8MiB/s), load_rate above
// 0; dma_rate is DMA writes (pages) per second, plain decimal;
// dma_write_log is a path (no spaces); dma_logging is on (the default) or
// off (case-insensitive). See EmulatedDeviceConfig for what they do.

#ifndef MIGD_DEVICE_EMULATED_SPEC_H_
#define MIGD_DEVICE_EMULATED_SPEC_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "migd/device/emulated_device.h"

namespace migd::device {

// Parses a byte count: plain digits, or digits followed by K/KiB, M/MiB or
// G/GiB (powers of 1024; the suffix is case-insensitive). kInvalidArgument on
// anything else or on overflow.
absl::StatusOr<uint64_t> ParseSize(absl::string_view text);

// Parses one "emulated ..." line (words separated by spaces or tabs; each key
// at most once) and validates the result as EmulatedDevice::Create would.
// seed accepts decimal or 0x-prefixed hex; flags names are case-insensitive;
// fail_arc is FROM>TO with state names as vfio::MigStateName prints them;
// slow_arc is FROM>TO@DURATION, DURATION as absl::ParseDuration accepts
// (500ms, 2s), in (0, kMaxSlowArc];
// fail_read is ERRNO@OFFSET, ERRNO one of ENODEV, EBUSY, EIO
// (case-insensitive) and OFFSET as ParseSize accepts.
// kInvalidArgument naming the bad token otherwise. Callers skip blank and
// comment lines themselves.
absl::StatusOr<EmulatedDeviceConfig> ParseEmulatedDeviceLine(
    absl::string_view line);

}  // namespace migd::device

#endif  // MIGD_DEVICE_EMULATED_SPEC_H_
