// migd/libvirt/hook.h
//
// What migd does when libvirt runs its qemu hook
// (/etc/libvirt/hooks/qemu.d/migd) as `HOOK DOMAIN OPERATION SUB-OP EXTRA`,
// the domain's definition on stdin:
//
//   migrate begin   on the destination, before the definition is used: a
//                   filter. For each host device migd's metadata names
//                   (domain_xml.h), the local agent allocates a device of
//                   its class and binds it (HostService.AllocateDevices,
//                   owner: the domain's UUID); the definition comes out with
//                   each such device's source pointed at the allocated one.
//                   Any failure releases what was allocated and refuses the
//                   migration (exit 1, the reason on stderr, which libvirt
//                   reports). A definition without migd metadata passes
//                   unchanged (empty output); host devices the metadata does
//                   not name are left as they are.
//   prepare begin   before QEMU starts (an incoming migration or a plain
//                   start): every PCI device the metadata names that the
//                   agent did not allocate for the domain (those are on
//                   their driver already) is put on its driver
//                   (HostService.BindDevice; nothing to do when it is there
//                   already). A failure stops the start.
//   stopped end,
//   release end     the domain stopped, or its resources were let go (also
//                   after an incoming migration failed, and on the source
//                   after it left): what the agent allocated for the domain
//                   is released (PCI devices back to their original drivers,
//                   mdev instances removed). Idempotent.
//   anything else   nothing.
//
// Both the definition that came in and the one that goes out must pass
// libvirt's own parser (libvirt_check.h). Every action is logged with the
// domain's name.

#ifndef MIGD_LIBVIRT_HOOK_H_
#define MIGD_LIBVIRT_HOOK_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace migd::libvirt {

// A device the hook asks the agent for: `key` is its source in the
// definition (echoed back), the class as the metadata spells it, parsed.
struct DeviceRequest {
  std::string key;
  std::string pci_ids;      // "1ac3:0101"
  std::string mdev_type;    // "mbochs-small"
  std::string mdev_parent;  // "mbochs", or empty
  std::string driver;       // a module, or empty: the agent's choice
};

// What the agent allocated for one request.
struct Allocation {
  std::string key;
  std::string pci_address;  // PCI
  std::string driver;
  std::string mdev_uuid;  // mdev
};

// The local agent, as the hook uses it (agent_client.h speaks gRPC).
class Agent {
 public:
  virtual ~Agent() = default;
  // All or nothing; in request order.
  virtual absl::StatusOr<std::vector<Allocation>> Allocate(
      const std::string& owner, const std::vector<DeviceRequest>& devices) = 0;
  // What `owner` held, now released; empty when it held nothing.
  virtual absl::StatusOr<std::vector<Allocation>> Release(
      const std::string& owner) = 0;
  // What `owner` holds.
  virtual absl::StatusOr<std::vector<Allocation>> List(
      const std::string& owner) = 0;
  // Puts the PCI device at `address` on `driver` (empty: the agent's
  // choice); OK when it is there already.
  virtual absl::Status Bind(const std::string& address,
                            const std::string& driver) = 0;
};

struct HookCall {
  std::string domain;
  std::string operation;
  std::string sub_operation;
  std::string extra;
  std::string definition;  // stdin
};

struct HookResult {
  int exit_code = 0;
  std::string output;  // what libvirt reads on stdout
  std::string error;   // stderr, when the hook refuses
};

// "pci:1ac3:0101", "pci:1ac3:0101:1ac3:0080", "mdev:TYPE", "mdev:TYPE@PARENT"
// into `request`'s class fields. kInvalidArgument naming the text otherwise.
absl::Status ParseDeviceClass(absl::string_view text, DeviceRequest* request);

// Runs the hook; `log` gets one line per action ("domain vm1: ...").
HookResult RunHook(const HookCall& call, Agent& agent,
                   const std::function<void(const std::string&)>& log);

}  // namespace migd::libvirt

#endif  // MIGD_LIBVIRT_HOOK_H_
