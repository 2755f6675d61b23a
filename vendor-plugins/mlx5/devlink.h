/*
 * vendor-plugins/mlx5/devlink.h
 *
 * A small devlink client over generic netlink (libmnl): what the mlx5
 * plugin and the migd-devlink tool need of a NIC's devlink instance, and
 * nothing more. A ConnectX VF migrates only when its port function on the
 * PF's devlink instance has the `migratable` capability, and the board id
 * and firmware a destination must match are devlink info versions.
 *
 * Every operation takes a devlink handle "BUS/DEVICE" ("pci/0000:3b:00.0",
 * "netdevsim/netdevsim10"), opens its own socket (thread-safe, nothing
 * shared), waits at most MIGD_DEVLINK_TIMEOUT_MS for each answer, and
 * returns 0 or a negative errno value with `error` (of `error_size` bytes)
 * filled: the operation, the handle (and the port), what the kernel said,
 * including its extended ack message when there is one, e.g.
 *
 *   devlink pci/0000:3b:00.0 port 3 (pcivf 0): the port function's
 *   migratable capability cannot be set (EOPNOTSUPP: Device doesn't
 *   support migration): the PF's driver or firmware does not support it
 *
 * Plain C11 (+ POSIX), so that the plugin's shared object and the tool can
 * both use it.
 */

#ifndef MIGD_VENDOR_PLUGINS_MLX5_DEVLINK_H_
#define MIGD_VENDOR_PLUGINS_MLX5_DEVLINK_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct nlmsghdr;

/* How long a call waits for each answer from the kernel (SO_RCVTIMEO). */
#define MIGD_DEVLINK_TIMEOUT_MS 2000

#define MIGD_DEVLINK_NAME_MAX 64
#define MIGD_DEVLINK_VALUE_MAX 128
#define MIGD_DEVLINK_MAX_VERSIONS 32

/* One "name value" of devlink info ("fw.psid" "MT_0000000359"). */
struct migd_devlink_version {
  char name[MIGD_DEVLINK_NAME_MAX];
  char value[MIGD_DEVLINK_VALUE_MAX];
};

/* DEVLINK_CMD_INFO_GET's answer. Strings are empty when not reported;
 * versions beyond MIGD_DEVLINK_MAX_VERSIONS per kind are dropped, longer
 * names and values truncated. */
struct migd_devlink_info {
  char driver[MIGD_DEVLINK_NAME_MAX];
  char serial_number[MIGD_DEVLINK_VALUE_MAX];
  size_t fixed_count, running_count, stored_count;
  struct migd_devlink_version fixed[MIGD_DEVLINK_MAX_VERSIONS];
  struct migd_devlink_version running[MIGD_DEVLINK_MAX_VERSIONS];
  struct migd_devlink_version stored[MIGD_DEVLINK_MAX_VERSIONS];
};

/* The value of version `name` in `versions`, or NULL. */
const char *migd_devlink_version_find(const struct migd_devlink_version *v,
                                      size_t count, const char *name);

/* A devlink port. Numbers the kernel did not report are -1. */
struct migd_devlink_port {
  uint32_t index;
  int flavour;     /* DEVLINK_PORT_FLAVOUR_*, -1 when not reported */
  int pf;          /* PCI PF number (pcipf, pcivf, pcisf) */
  int vf;          /* VF number (pcivf) */
  long sf;         /* SF number (pcisf) */
  long controller; /* controller number (pci* flavours); 0: this host */
  int external;    /* 1: the function is on an external controller */
  char netdev[MIGD_DEVLINK_NAME_MAX]; /* empty when none */
};

/* The flavour as iproute2 spells it ("physical", "pcivf", ...);
 * "unknown" for a value this client does not know. */
const char *migd_devlink_flavour_name(int flavour);

enum migd_devlink_eswitch_mode {
  MIGD_DEVLINK_ESWITCH_LEGACY = 0,    /* DEVLINK_ESWITCH_MODE_LEGACY */
  MIGD_DEVLINK_ESWITCH_SWITCHDEV = 1, /* DEVLINK_ESWITCH_MODE_SWITCHDEV */
};

/* "legacy", "switchdev", or "unknown". */
const char *migd_devlink_eswitch_mode_name(int mode);

/* Device info of `handle`: driver name, serial number, versions. */
int migd_devlink_info_get(const char *handle, struct migd_devlink_info *out,
                          char *error, size_t error_size);

/* The ports of `handle` (a DEVLINK_CMD_PORT_GET dump, filtered to the
 * handle), in the kernel's order, into `ports` (`capacity` entries);
 * *count is how many there are. -ENOSPC (naming both numbers) when they
 * do not fit. */
int migd_devlink_port_list(const char *handle, struct migd_devlink_port *ports,
                           size_t capacity, size_t *count, char *error,
                           size_t error_size);

/* The pcivf port of VF `vf` on `handle`, on this host's controller (0).
 * -ENOENT naming the VF when there is none; when the handle has no pcivf
 * port at all the text says that VF ports exist only in switchdev mode. */
int migd_devlink_find_vf_port(const char *handle, int vf,
                              struct migd_devlink_port *out, char *error,
                              size_t error_size);

int migd_devlink_eswitch_get(const char *handle, int *mode, char *error,
                             size_t error_size);
int migd_devlink_eswitch_set(const char *handle, int mode, char *error,
                             size_t error_size);

/* Sets (enable 1) or clears (0) the migratable capability of `port`'s
 * function (DEVLINK_CMD_PORT_SET, DEVLINK_PORT_FN_ATTR_CAPS). `port` as
 * found by migd_devlink_find_vf_port; its flavour and VF number name it in
 * errors. */
int migd_devlink_port_set_migratable(const char *handle,
                                     const struct migd_devlink_port *port,
                                     int enable, char *error,
                                     size_t error_size);

/* ---- The message layer, exposed for tests (no socket involved). ---- */

/* What failed, for migd_devlink_failure_text. */
enum migd_devlink_op {
  MIGD_DEVLINK_OP_INFO,
  MIGD_DEVLINK_OP_PORTS,
  MIGD_DEVLINK_OP_ESWITCH_GET,
  MIGD_DEVLINK_OP_ESWITCH_SET,
  MIGD_DEVLINK_OP_SET_MIGRATABLE,
};

struct migd_devlink_what {
  enum migd_devlink_op op;
  const char *handle;
  const struct migd_devlink_port *port; /* NULL when not about a port */
  int value;                            /* eswitch mode, or migratable on/off */
};

/* The error text for `what` failing with negative errno `err` and the
 * kernel's extended ack message `extack` (NULL or empty when none). */
void migd_devlink_failure_text(const struct migd_devlink_what *what, int err,
                               const char *extack, char *out, size_t size);

/* Parses one DEVLINK_CMD_INFO_GET reply (netlink header, genetlink header,
 * attributes) into *out (zeroed first). -EPROTO when it is not one. */
int migd_devlink_parse_info(const struct nlmsghdr *nlh,
                            struct migd_devlink_info *out);

/* Parses one port message (DEVLINK_CMD_PORT_NEW; DEVLINK_CMD_NEW from
 * Linux 6.1's port dump) into *out and its handle ("bus/dev") into
 * `handle`. -EPROTO when it is not one. */
int migd_devlink_parse_port(const struct nlmsghdr *nlh,
                            struct migd_devlink_port *out, char *handle,
                            size_t handle_size);

/* Parses an NLMSG_ERROR message: *err is its (negative) error, `extack`
 * the NLMSGERR_ATTR_MSG text, empty when none. -EPROTO when malformed. */
int migd_devlink_parse_error(const struct nlmsghdr *nlh, int *err, char *extack,
                             size_t extack_size);

/* Appends DEVLINK_ATTR_PORT_INDEX and the nested DEVLINK_ATTR_PORT_FUNCTION
 * { DEVLINK_PORT_FN_ATTR_CAPS = bitfield32 {value, selector:
 * MIGRATABLE} } to a DEVLINK_CMD_PORT_SET request. */
void migd_devlink_put_migratable(struct nlmsghdr *nlh, uint32_t port_index,
                                 int enable);

#ifdef __cplusplus
}
#endif

#endif /* MIGD_VENDOR_PLUGINS_MLX5_DEVLINK_H_ */
