// migd/server/vf_tokens.h
//
// The VF tokens this agent owns: for a PF that vfio-pci drives with SR-IOV
// enabled, every open of one of its VFs must present the token (a UUID) the
// PF's user set (VFIO_DEVICE_FEATURE_PCI_VF_TOKEN). The agent becomes that
// user: it generates a random token, stores it (<state_dir>/vf-tokens/<pf>,
// mode 0600 in a 0700 directory, replaced atomically), opens the PF's VFIO
// device and sets the token, and keeps the PF open while it runs, so that no
// other process opens the PF and sets another. The kernel keeps the token
// while the PF stays bound to vfio-pci (drivers/vfio/pci/vfio_pci_core.c
// makes a random one when vfio-pci takes the PF, and frees it when the PF
// leaves); at start the agent opens the PFs with a stored token and sets it
// again. Its opens of those PFs' VFs present the stored token.
//
// The token is a secret: it goes to the kernel and the file and nowhere else
// (not in errors, not in logs). TokenId tells tokens apart. Thread-safe.

#ifndef MIGD_SERVER_VF_TOKENS_H_
#define MIGD_SERVER_VF_TOKENS_H_

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "migd/device/vfio_group.h"
#include "migd/device/vfio_paths.h"
#include "migd/device/vfio_syscalls.h"

namespace migd::server {

class VfTokens {
 public:
  // Tokens under `state_dir`/vf-tokens; PFs opened through `paths`.
  VfTokens(std::string state_dir, device::VfioPaths paths = {},
           device::VfioSyscalls syscalls = device::VfioSyscalls::Real());

  VfTokens(const VfTokens&) = delete;
  VfTokens& operator=(const VfTokens&) = delete;

  // "<state_dir>/vf-tokens".
  const std::string& dir() const { return dir_; }

  // Opens every PF with a stored token and sets it. One error per PF that
  // failed (naming it, never the token); its stored token is kept (VF opens
  // still present it).
  std::vector<absl::Status> Restore();

  // Makes this agent the owner of PF `pf` (normalized): a fresh random
  // token, stored, the PF opened and the token set. Returns its TokenId.
  // The caller has checked that the PF is on vfio-pci and free. On failure
  // nothing is stored.
  absl::StatusOr<std::string> Own(const std::string& pf);

  // True when this agent holds `pf` open with its token set.
  bool Holds(const std::string& pf) const;

  // The token stored for `pf` (a secret), nullopt when none.
  std::optional<std::string> TokenFor(const std::string& pf) const;

  // Closes `pf` and forgets its token (the PF leaves vfio-pci, and the
  // kernel's token with it). OK when there was none.
  absl::Status Release(const std::string& pf);

  // The first 8 hex digits of the SHA-256 of `token`.
  static std::string TokenId(absl::string_view token);

 private:
  absl::StatusOr<device::VfioDeviceFd> OpenAndSet(const std::string& pf,
                                                  const std::string& token);
  absl::Status EnsureDir() const;

  const std::string dir_;
  const device::VfioSyscalls sys_;
  device::VfioOpener opener_;
  mutable absl::Mutex mu_;
  // The PFs held open, by address.
  std::map<std::string, device::VfioDeviceFd> held_ ABSL_GUARDED_BY(mu_);
};

}  // namespace migd::server

#endif  // MIGD_SERVER_VF_TOKENS_H_
