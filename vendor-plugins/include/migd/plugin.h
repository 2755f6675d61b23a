/*
 * migd/plugin.h: the interface between the migd agent and a vendor plugin.
 *
 * A plugin is a shared object that exports one function,
 *
 *   const struct migd_plugin *migd_plugin_entry(void);
 *
 * returning a table that lives as long as the shared object. The agent loads
 * every `*.so` of its plugin directory (dlopen), calls the entry point once,
 * and checks the table before it uses anything in it:
 *
 *   - `abi_version` is the MIGD_PLUGIN_ABI_VERSION the plugin was built
 *     with. An agent loads a plugin whose version is at most its own and
 *     refuses a newer one, naming both versions.
 *   - `struct_size` is sizeof(struct migd_plugin) as the plugin saw it. A
 *     member that lies beyond it (a plugin built against an older header)
 *     reads as NULL: the agent uses its generic behaviour there. New members
 *     are only ever added at the end; nothing is removed or reordered within
 *     a major ABI version.
 *   - `name` is unique among the loaded plugins ("edu", "mlx5"): it
 *     registers the plugin, and names it in logs, `migctl plugins` and the
 *     compatibility descriptors a source sends.
 *
 * Every function is optional (NULL: not provided) except `claim`. Functions
 * are called from any agent thread, possibly at the same time for different
 * devices; a plugin keeps its own state thread-safe. They must not block for
 * long (a netlink round trip is fine, a firmware update is not), must not
 * call exit() or abort(), and report failures through their return value
 * (0 on success, a negative errno value otherwise) and the `error` text
 * they fill. Strings are NUL-terminated UTF-8. Output text goes into
 * buffers the agent provides (`struct migd_text`): a plugin writes at most
 * `capacity` bytes including the NUL and truncates what does not fit.
 *
 * Plain C (C99), so that a plugin can be written in any language with a C
 * FFI and built with any compiler; no agent type crosses this boundary.
 */

#ifndef MIGD_PLUGIN_H_
#define MIGD_PLUGIN_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The version of this header. Bumped when the table grows (a compatible
 * change: older plugins still load) and for any incompatible change.
 *   1: the table up to explain_errno.
 *   2: preferred_driver. */
#define MIGD_PLUGIN_ABI_VERSION 2

/* The entry point's symbol name. */
#define MIGD_PLUGIN_ENTRY_SYMBOL "migd_plugin_entry"

/* Migration capability bits, as the kernel's VFIO_MIGRATION_* flags. */
#define MIGD_MIGRATION_STOP_COPY (1u << 0)
#define MIGD_MIGRATION_P2P (1u << 1)
#define MIGD_MIGRATION_PRE_COPY (1u << 2)

/* A device as the agent knows it. Fields the agent does not know are 0 or
 * NULL. Valid only during the call it is passed to. */
struct migd_device_info {
  /* sizeof(struct migd_device_info) as the agent saw it: a plugin built
   * against a newer header must not read members beyond it. */
  uint32_t struct_size;
  /* The agent's name for the device ("vf0"). */
  const char *name;
  /* The backend that drives it ("vfio", "emulated"). */
  const char *backend;
  /* PCI address ("0000:3b:00.2"), or NULL for a device that is not PCI. */
  const char *pci_address;
  uint16_t vendor_id;
  uint16_t device_id;
  uint16_t subsystem_vendor_id;
  uint16_t subsystem_device_id;
  /* The driver bound now ("mlx5_vfio_pci"), or NULL. */
  const char *driver;
  /* The device's modalias ("pci:v000015B3d0000101E..."), or NULL. */
  const char *modalias;
  /* For an mediated device: its type ("nvidia-35"), else NULL. */
  const char *mdev_type;
  /* The device's sysfs directory ("/sys/bus/pci/devices/0000:3b:00.2"),
   * or NULL. Under a test's fake tree when the agent runs with one. */
  const char *sysfs_path;
  /* MIGD_MIGRATION_* bits the device's driver advertises. */
  uint64_t migration_flags;
  /* Backend-specific "key=value key=value" text (the device's config line
   * parameters), or NULL. */
  const char *parameters;
};

/* A text buffer the agent owns; a plugin writes a NUL-terminated string. */
struct migd_text {
  char *data;
  size_t capacity; /* bytes, including the NUL */
};

/* Bytes a plugin returns: it writes at most `capacity` bytes to `data` and
 * sets `length`; when they do not fit it sets `length` to what it needs and
 * returns -ENOSPC (the agent calls again with a larger buffer). */
struct migd_bytes {
  uint8_t *data;
  size_t capacity;
  size_t length;
};

/* What a plugin says a device can do. The agent zeroes it, sets
 * `struct_size` and provides the text buffers before the call. */
struct migd_capabilities {
  uint32_t struct_size;
  /* 1: the device can migrate on this host. 0: it cannot (no driver saves
   * its state, a firmware without support, ...): `reason` says why, and
   * `remedy` what operators do instead (may be empty). */
  int migratable;
  struct migd_text reason;
  struct migd_text remedy;
  /* MIGD_MIGRATION_* the plugin vouches for (a subset of what the driver
   * advertises: a plugin may know a firmware where P2P is broken). */
  uint64_t migration_flags;
  /* How dirty DMA pages are tracked: "device" (the driver's DMA logging),
   * "iommu", "none", or NULL when not known. */
  const char *dirty_tracking;
  /* Page sizes the dirty tracking supports, as a bit mask of sizes
   * (bit n: 2^n bytes); 0 when not known. */
  uint64_t dirty_page_sizes;
  /* How many devices on one parent (PF) may migrate at once; 0: no limit
   * known. */
  uint32_t max_concurrent_per_parent;
  /* Upper bound of the device's state in bytes; 0 when not known. */
  uint64_t max_state_bytes;
};

/* A destination's verdict on a source device's descriptor. The agent zeroes
 * it, sets `struct_size` and provides the buffers. */
struct migd_verdict {
  uint32_t struct_size;
  /* 1: the state can move into this device. 0: it cannot; the texts say
   * why. */
  int compatible;
  /* The field that differs ("firmware", "psid", "state_format"). */
  struct migd_text field;
  /* Its value on the source and on this (the destination) device. */
  struct migd_text source_value;
  struct migd_text destination_value;
  /* Anything else a person should know (optional). */
  struct migd_text message;
};

/* What the agent lends a plugin: logging, for now. */
struct migd_host {
  uint32_t struct_size;
  /* Logs `message` under the plugin's name. level: 0 info, 1 warning,
   * 2 error. */
  void (*log)(void *host_context, int level, const char *message);
  void *host_context;
};

struct migd_plugin {
  uint32_t abi_version; /* MIGD_PLUGIN_ABI_VERSION the plugin was built with */
  uint32_t struct_size; /* sizeof(struct migd_plugin) the plugin saw */
  const char *name;     /* "edu": unique, [a-z0-9_-]+ */
  const char *version;  /* the plugin's own version, for people */
  const char *description;

  /* Creates the plugin's state (returned as *context, passed to every
   * other call). `host` lives as long as the plugin is loaded. Optional:
   * without it the context is NULL. */
  int (*create)(const struct migd_host *host, void **context,
                struct migd_text error);
  /* Frees what create made. */
  void (*destroy)(void *context);

  /* How strongly the plugin wants `device`: 0 not at all, higher is
   * stronger (a plugin that matches vendor and device ids might say 100,
   * one that matches the subsystem ids too 200). The agent gives a device
   * to the highest claim; two plugins with the same highest claim are an
   * error naming both. Required. */
  int (*claim)(void *context, const struct migd_device_info *device);

  /* What the device can do, and its limits. */
  int (*capabilities)(void *context, const struct migd_device_info *device,
                      struct migd_capabilities *out, struct migd_text error);

  /* Source side: the device's compatibility descriptor (opaque bytes only
   * this plugin reads back, in `check` on the destination) and a summary a
   * person reads ("firmware 16.35.2000, PSID MT_0000000080"). */
  int (*describe)(void *context, const struct migd_device_info *device,
                  struct migd_bytes *descriptor, struct migd_text summary,
                  struct migd_text error);

  /* Destination side: can a state described by `descriptor` (made by this
   * plugin's describe on the source host) load into `device`? Returns 0
   * with the verdict filled in; an error only when it cannot tell. */
  int (*check)(void *context, const struct migd_device_info *device,
               const uint8_t *descriptor, size_t descriptor_length,
               struct migd_verdict *verdict, struct migd_text error);

  /* Prepares the host for `device` before it is bound or opened (e.g. a
   * devlink port function attribute on the parent). */
  int (*prepare_host)(void *context, const struct migd_device_info *device,
                      struct migd_text error);

  /* Says what errno `err` from `operation` ("RESUMING -> STOP", "read")
   * means for this device's driver, in words for a person; 0 with an empty
   * text when it has nothing to add. */
  int (*explain_errno)(void *context, const struct migd_device_info *device,
                       const char *operation, int err,
                       struct migd_text explanation);

  /* ABI 2. The VFIO driver module the plugin wants `device` (a PCI device
   * not yet on a VFIO driver, as a rule) bound to so that it migrates,
   * written to `module` as modprobe and modules.alias spell it
   * ("acme_vfio_pci"); left empty: no preference. Asked of the plugin that
   * claims the device whenever the agent chooses a driver for it (migctl
   * host status, a bind or an allocation that names no driver). A driver
   * the operator names wins over it; it wins over the modules.alias rule;
   * and it must fit the device as a named driver must (one of the module's
   * vfio_pci aliases matches the device, or the module has none), else the
   * agent makes no choice and says why. Absent (NULL, or beyond
   * struct_size): no preference. */
  int (*preferred_driver)(void *context, const struct migd_device_info *device,
                          struct migd_text module, struct migd_text error);
};

/* The one symbol a plugin exports. */
typedef const struct migd_plugin *(*migd_plugin_entry_fn)(void);

#ifdef __cplusplus
}
#endif

#endif /* MIGD_PLUGIN_H_ */
