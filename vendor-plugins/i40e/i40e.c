/* Intel X710/XL710/X722 virtual functions (i40e PFs, iavf VFs).
 *
 * No kernel driver saves the device state of an i40e VF: there is no
 * upstream i40e variant driver (an RFC from 2020 was never merged), and
 * Intel's out-of-tree driver for its newer NICs speaks the removed v1
 * migration protocol. This plugin writes no such driver and promises
 * nothing it cannot verify: it claims the VFs so that `migctl check` says,
 * before anything is attempted, that they cannot migrate with their state,
 * and names what clouds do instead. */
#include <stdio.h>
#include <string.h>

#include "migd/plugin.h"

/* The VF device ids the kernel's iavf driver binds on i40e-based NICs. */
static const uint16_t kVfIds[] = {
    0x154c, /* X710/XL710 VF */
    0x1571, /* X710/XL710 VF, Hyper-V */
    0x37cd, /* X722 VF */
};

static int i40e_claim(void *context, const struct migd_device_info *d) {
  (void)context;
  if (d->vendor_id != 0x8086) return 0;
  for (size_t i = 0; i < sizeof(kVfIds) / sizeof(kVfIds[0]); ++i) {
    if (d->device_id == kVfIds[i]) return 100;
  }
  return 0;
}

static int i40e_capabilities(void *context, const struct migd_device_info *d,
                             struct migd_capabilities *out,
                             struct migd_text error) {
  (void)context;
  (void)error;
  out->migratable = 0;
  snprintf(out->reason.data, out->reason.capacity,
           "device %s is an Intel i40e virtual function (8086:%04x): no "
           "kernel driver saves an i40e VF's device state (there is no "
           "upstream i40e VFIO variant driver)",
           d->name, d->device_id);
  snprintf(out->remedy.data, out->remedy.capacity,
           "hot-unplug the VF from the guest before migrating (keep the "
           "guest's network on a bonded or failover virtio-net device), "
           "migrate, then plug a VF of the destination host in");
  out->migration_flags = 0;
  out->dirty_tracking = "none";
  return 0;
}

static const struct migd_plugin kPlugin = {
    .abi_version = MIGD_PLUGIN_ABI_VERSION,
    .struct_size = sizeof(struct migd_plugin),
    .name = "i40e",
    .version = "1.0",
    .description =
        "Intel X710/XL710/X722 VFs: not migratable with their state; says "
        "why and what to do instead",
    .claim = i40e_claim,
    .capabilities = i40e_capabilities,
};

const struct migd_plugin *migd_plugin_entry(void) { return &kPlugin; }
