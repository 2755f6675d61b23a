/*
 * vendor-plugins/mlx5/mlx5_logic.h
 *
 * What the mlx5 plugin decides, as pure functions the tests drive without
 * netlink: where a VF's PF and VF number are in sysfs, the identity
 * (board id and running firmware) a devlink info answer gives, whether two
 * identities may exchange a VF's state, the descriptor that carries one,
 * what a VF's binding says about its migration, and what the upstream
 * mlx5_vfio_pci driver means by an errno.
 *
 * Everything here is based on the kernel's drivers/vfio/pci/mlx5 (6.1 and
 * 6.12) and drivers/net/ethernet/mellanox/mlx5/core/devlink.c; see mlx5.c.
 * Functions return 0 or a negative errno value and fill `error`.
 */

#ifndef MIGD_VENDOR_PLUGINS_MLX5_MLX5_LOGIC_H_
#define MIGD_VENDOR_PLUGINS_MLX5_MLX5_LOGIC_H_

#include <stddef.h>
#include <stdint.h>

#include "vendor-plugins/mlx5/devlink.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The name mlx5_vfio_pci registers its PCI driver under (KBUILD_MODNAME of
 * mlx5-vfio-pci.ko), as sysfs shows it. */
#define MLX5_VFIO_DRIVER "mlx5_vfio_pci"

/* The descriptor format this plugin writes and reads. */
#define MLX5_DESCRIPTOR_VERSION 1

#define MLX5_BDF_MAX 32
#define MLX5_FIELD_MAX 64

/* ---- sysfs ---- */

/* The PF of the VF whose sysfs directory is `vf_sysfs_path` (its "physfn"
 * link) into `pf_bdf`, and its VF number (the PF's "virtfnN" link that
 * points back at it) into *vf. -ENOENT naming the path when the device is
 * not a VF or the PF does not list it. */
int mlx5_vf_parent(const char *vf_sysfs_path, char *pf_bdf, size_t pf_bdf_size,
                   int *vf, char *error, size_t error_size);

/* ---- identity ---- */

/* What must match between a source and a destination VF: its PF's board
 * id (PSID) and running firmware. */
struct mlx5_identity {
  char psid[MLX5_FIELD_MAX];
  char firmware[MLX5_FIELD_MAX];
};

/* The identity in devlink info of `handle` (fixed "fw.psid", running
 * "fw.version"). -ENODATA naming the handle and what is missing; -EIO when
 * the running version is mlx5_core's marker for a failed firmware query
 * (255.255.65535 or 0.0.0000). */
int mlx5_identity_from_info(const struct migd_devlink_info *info,
                            const char *handle, struct mlx5_identity *out,
                            char *error, size_t error_size);

/* "PSID MT_0000000359, firmware 22.31.1014". */
void mlx5_identity_summary(const struct mlx5_identity *id, char *out,
                           size_t size);

/* ---- descriptor ---- */

/* "mlx5-desc 1\npsid=...\nfw=...\n" into `out`; returns its length (may
 * exceed `size`: then nothing usable was written, call again). */
size_t mlx5_descriptor_encode(const struct mlx5_identity *id, char *out,
                              size_t size);

/* Reads a descriptor back. -EINVAL naming what is wrong (not an mlx5
 * descriptor, a newer format, a missing or malformed field). */
int mlx5_descriptor_decode(const uint8_t *data, size_t length,
                           struct mlx5_identity *out, char *error,
                           size_t error_size);

/* ---- compatibility ---- */

struct mlx5_verdict {
  int compatible;
  const char *field; /* "psid", "firmware"; NULL when compatible */
  char source_value[MLX5_FIELD_MAX];
  char destination_value[MLX5_FIELD_MAX];
  char message[256];
};

/* Whether a state saved on `source` may load on `destination`. */
void mlx5_compare(const struct mlx5_identity *source,
                  const struct mlx5_identity *destination,
                  struct mlx5_verdict *out);

/* ---- capabilities ---- */

/* What the agent knows of the VF, and where its PF is (pf_bdf NULL and
 * vf -1 when sysfs did not say). */
struct mlx5_vf_facts {
  const char *name;
  const char *pci_address;
  uint16_t device_id;
  const char *driver;
  uint64_t migration_flags; /* MIGD_MIGRATION_* the driver advertises */
  const char *pf_bdf;
  int vf;
};

struct mlx5_assessment {
  int migratable;
  uint64_t migration_flags; /* vouched for */
  char reason[512];
  char remedy[512];
};

void mlx5_assess(const struct mlx5_vf_facts *facts,
                 struct mlx5_assessment *out);

/* ---- errnos ---- */

/* What errno `err` (either sign) from `operation` ("RESUMING -> STOP",
 * "read", "write") means for mlx5_vfio_pci, into `out`; 1 when there is
 * something to say, 0 (and "") otherwise. */
int mlx5_explain_errno(const char *operation, int err, char *out, size_t size);

#ifdef __cplusplus
}
#endif

#endif /* MIGD_VENDOR_PLUGINS_MLX5_MLX5_LOGIC_H_ */
