/* NVIDIA/Mellanox ConnectX VFs (15b3:101e) on the upstream mlx5_vfio_pci
 * variant driver (drivers/vfio/pci/mlx5).
 *
 * What the driver does, and so what this plugin says:
 *   - It binds 15b3:101e only ("ConnectX Family mlx5Gen Virtual
 *     Function", its whole id table in 6.1 and 6.12).
 *   - It decides once, when a VF binds, whether the VF migrates
 *     (mlx5vf_cmd_set_migratable): the firmware's migration capability and,
 *     in 6.12, the VF's own `migratable` HCA capability, which the PF's
 *     devlink port function sets (DEVLINK_PORT_FN_CAP_MIGRATABLE, Linux
 *     6.2+, switchdev mode). Then it advertises STOP_COPY | P2P (6.1) or
 *     STOP_COPY | P2P | PRE_COPY (6.12), and tracks dirty pages itself
 *     (DMA logging) when the firmware has adv_virtualization.
 *   - The saved state is an opaque firmware image (SAVE_VHCA_STATE /
 *     LOAD_VHCA_STATE). The board id (PSID) and the firmware version are
 *     the PF's devlink info: fixed fw.psid, running fw.version. The
 *     descriptor carries both; a destination accepts only equal ones.
 *
 * The logic lives in mlx5_logic.c (testable without netlink); the devlink
 * client in devlink.c. This file is the ABI glue. */
#define _XOPEN_SOURCE 700

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "migd/plugin.h"
#include "vendor-plugins/mlx5/devlink.h"
#include "vendor-plugins/mlx5/mlx5_logic.h"

#define MLX5_VENDOR_ID 0x15b3

/* mlx5vf_pci_table (drivers/vfio/pci/mlx5/main.c). */
static const uint16_t kVfIds[] = {
    0x101e, /* ConnectX Family mlx5Gen Virtual Function */
};

/* The plugin's state: the host's logging. */
struct mlx5_plugin {
  const struct migd_host *host;
};

static void log_info(void *context, const char *message) {
  const struct mlx5_plugin *p = context;
  if (p != NULL && p->host != NULL &&
      p->host->struct_size >= offsetof(struct migd_host, host_context) +
                                  sizeof(p->host->host_context) &&
      p->host->log != NULL) {
    p->host->log(p->host->host_context, 0, message);
  }
}

static int mlx5_create(const struct migd_host *host, void **context,
                       struct migd_text error) {
  struct mlx5_plugin *p = calloc(1, sizeof(*p));
  if (p == NULL) {
    snprintf(error.data, error.capacity, "out of memory");
    return -ENOMEM;
  }
  p->host = host;
  *context = p;
  return 0;
}

static void mlx5_destroy(void *context) { free(context); }

static int mlx5_claim(void *context, const struct migd_device_info *d) {
  (void)context;
  if (d->vendor_id != MLX5_VENDOR_ID) return 0;
  for (size_t i = 0; i < sizeof(kVfIds) / sizeof(kVfIds[0]); ++i) {
    if (d->device_id == kVfIds[i]) return 100;
  }
  return 0;
}

/* The VF's PF and VF number, with the device named in errors. */
static int find_parent(const struct migd_device_info *d, char *pf_bdf,
                       size_t pf_bdf_size, int *vf, struct migd_text error) {
  char why[768];
  const int rc =
      mlx5_vf_parent(d->sysfs_path, pf_bdf, pf_bdf_size, vf, why, sizeof(why));
  if (rc != 0) {
    snprintf(error.data, error.capacity, "device %s: %s", d->name, why);
  }
  return rc;
}

/* The identity of the PF of `d`, from devlink info of pci/<PF>. */
static int read_identity(const struct migd_device_info *d,
                         struct mlx5_identity *id, struct migd_text error) {
  char pf[MLX5_BDF_MAX], handle[MLX5_BDF_MAX + 8];
  int vf;
  int rc = find_parent(d, pf, sizeof(pf), &vf, error);
  if (rc != 0) return rc;
  snprintf(handle, sizeof(handle), "pci/%s", pf);
  struct migd_devlink_info *info = malloc(sizeof(*info));
  if (info == NULL) {
    snprintf(error.data, error.capacity, "out of memory");
    return -ENOMEM;
  }
  char why[1024];
  rc = migd_devlink_info_get(handle, info, why, sizeof(why));
  if (rc == 0) rc = mlx5_identity_from_info(info, handle, id, why, sizeof(why));
  free(info);
  if (rc != 0) {
    snprintf(error.data, error.capacity, "device %s (VF %d of %s): %s", d->name,
             vf, pf, why);
  }
  return rc;
}

static int mlx5_capabilities(void *context, const struct migd_device_info *d,
                             struct migd_capabilities *out,
                             struct migd_text error) {
  (void)context;
  (void)error;
  char pf[MLX5_BDF_MAX] = "", why[768];
  int vf = -1;
  /* Where the PF is only improves the remedy's command: no error. */
  const int found =
      mlx5_vf_parent(d->sysfs_path, pf, sizeof(pf), &vf, why, sizeof(why)) == 0;
  const struct mlx5_vf_facts facts = {
      .name = d->name,
      .pci_address = d->pci_address,
      .device_id = d->device_id,
      .driver = d->driver,
      .migration_flags = d->migration_flags,
      .pf_bdf = found ? pf : NULL,
      .vf = found ? vf : -1,
  };
  struct mlx5_assessment a;
  mlx5_assess(&facts, &a);
  out->migratable = a.migratable;
  out->migration_flags = a.migration_flags;
  snprintf(out->reason.data, out->reason.capacity, "%s", a.reason);
  snprintf(out->remedy.data, out->remedy.capacity, "%s", a.remedy);
  /* The driver's page tracker (vfio log_ops) when migration is on; it
   * needs the firmware's adv_virtualization, which only the device's
   * DMA logging feature probe can tell. */
  out->dirty_tracking = a.migratable ? "device" : "none";
  return 0;
}

static int mlx5_describe(void *context, const struct migd_device_info *d,
                         struct migd_bytes *descriptor,
                         struct migd_text summary, struct migd_text error) {
  (void)context;
  struct mlx5_identity id;
  const int rc = read_identity(d, &id, error);
  if (rc != 0) return rc;
  const size_t n = mlx5_descriptor_encode(&id, (char *)descriptor->data,
                                          descriptor->capacity);
  descriptor->length = n;
  if (n > descriptor->capacity) return -ENOSPC;
  mlx5_identity_summary(&id, summary.data, summary.capacity);
  return 0;
}

static int mlx5_check(void *context, const struct migd_device_info *d,
                      const uint8_t *descriptor, size_t length,
                      struct migd_verdict *verdict, struct migd_text error) {
  (void)context;
  struct mlx5_identity source, ours;
  char why[512];
  int rc =
      mlx5_descriptor_decode(descriptor, length, &source, why, sizeof(why));
  if (rc != 0) {
    snprintf(error.data, error.capacity, "device %s: source's descriptor: %s",
             d->name, why);
    return rc;
  }
  rc = read_identity(d, &ours, error);
  if (rc != 0) return rc;
  struct mlx5_verdict v;
  mlx5_compare(&source, &ours, &v);
  verdict->compatible = v.compatible;
  if (!v.compatible) {
    snprintf(verdict->field.data, verdict->field.capacity, "%s", v.field);
    snprintf(verdict->source_value.data, verdict->source_value.capacity, "%s",
             v.source_value);
    snprintf(verdict->destination_value.data,
             verdict->destination_value.capacity, "%s", v.destination_value);
    snprintf(verdict->message.data, verdict->message.capacity, "%s", v.message);
  }
  return 0;
}

static int mlx5_prepare_host(void *context, const struct migd_device_info *d,
                             struct migd_text error) {
  char pf[MLX5_BDF_MAX], handle[MLX5_BDF_MAX + 8];
  int vf;
  int rc = find_parent(d, pf, sizeof(pf), &vf, error);
  if (rc != 0) return rc;
  snprintf(handle, sizeof(handle), "pci/%s", pf);
  struct migd_devlink_port port;
  rc = migd_devlink_find_vf_port(handle, vf, &port, error.data, error.capacity);
  if (rc == 0) {
    rc = migd_devlink_port_set_migratable(handle, &port, 1, error.data,
                                          error.capacity);
  }
  if (rc != 0) return rc;
  char message[256];
  snprintf(message, sizeof(message),
           "device %s: VF %d of %s (devlink port %u): migratable capability "
           "on",
           d->name, vf, handle, port.index);
  log_info(context, message);
  return 0;
}

static int mlx5_explain_errno_fn(void *context,
                                 const struct migd_device_info *d,
                                 const char *operation, int err,
                                 struct migd_text explanation) {
  (void)context;
  (void)d;
  mlx5_explain_errno(operation, err, explanation.data, explanation.capacity);
  return 0;
}

static const struct migd_plugin kPlugin = {
    .abi_version = MIGD_PLUGIN_ABI_VERSION,
    .struct_size = sizeof(struct migd_plugin),
    .name = "mlx5",
    .version = "1.0",
    .description =
        "NVIDIA ConnectX VFs on mlx5_vfio_pci: PSID and firmware from the "
        "PF's devlink info, the port function's migratable capability",
    .create = mlx5_create,
    .destroy = mlx5_destroy,
    .claim = mlx5_claim,
    .capabilities = mlx5_capabilities,
    .describe = mlx5_describe,
    .check = mlx5_check,
    .prepare_host = mlx5_prepare_host,
    .explain_errno = mlx5_explain_errno_fn,
};

const struct migd_plugin *migd_plugin_entry(void) { return &kPlugin; }
