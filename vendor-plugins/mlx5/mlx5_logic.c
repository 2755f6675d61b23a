/* The mlx5 plugin's decisions, without netlink: see mlx5_logic.h. */
#define _XOPEN_SOURCE 700

#include "vendor-plugins/mlx5/mlx5_logic.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "migd/plugin.h"

/* ---- sysfs ---- */

static const char *base_name(const char *path) {
  const char *slash = strrchr(path, '/');
  return slash != NULL ? slash + 1 : path;
}

/* 1 when `name` is "virtfn<digits>", with the number in *n. */
static int virtfn_number(const char *name, int *n) {
  if (strncmp(name, "virtfn", 6) != 0 || name[6] == '\0') return 0;
  long v = 0;
  for (const char *p = name + 6; *p != '\0'; ++p) {
    if (*p < '0' || *p > '9' || v > 65535) return 0;
    v = v * 10 + (*p - '0');
  }
  *n = (int)v;
  return 1;
}

int mlx5_vf_parent(const char *vf_sysfs_path, char *pf_bdf, size_t pf_bdf_size,
                   int *vf, char *error, size_t error_size) {
  char vf_real[PATH_MAX], link[PATH_MAX], pf_real[PATH_MAX], target[PATH_MAX];
  *vf = -1;
  if (vf_sysfs_path == NULL || vf_sysfs_path[0] == '\0') {
    snprintf(error, error_size,
             "no sysfs directory to find the VF's PF from (physfn)");
    return -ENOENT;
  }
  if (realpath(vf_sysfs_path, vf_real) == NULL) {
    const int err = errno;
    snprintf(error, error_size, "cannot resolve %s: %s", vf_sysfs_path,
             strerror(err));
    return -err;
  }
  if (snprintf(link, sizeof(link), "%s/physfn", vf_real) >= (int)sizeof(link) ||
      realpath(link, pf_real) == NULL) {
    snprintf(error, error_size,
             "%s/physfn does not lead to a PF: %s is not an SR-IOV VF",
             vf_sysfs_path, base_name(vf_real));
    return -ENOENT;
  }
  DIR *dir = opendir(pf_real);
  if (dir == NULL) {
    const int err = errno;
    snprintf(error, error_size, "cannot list the VF's PF %s: %s", pf_real,
             strerror(err));
    return -err;
  }
  const struct dirent *entry;
  while ((entry = readdir(dir)) != NULL) {
    int n;
    if (!virtfn_number(entry->d_name, &n)) continue;
    if (snprintf(link, sizeof(link), "%s/%s", pf_real, entry->d_name) <
            (int)sizeof(link) &&
        realpath(link, target) != NULL && strcmp(target, vf_real) == 0) {
      *vf = n;
      break;
    }
  }
  closedir(dir);
  if (*vf < 0) {
    snprintf(error, error_size,
             "the PF %s of %s has no virtfnN link to it: cannot tell the VF "
             "number",
             base_name(pf_real), base_name(vf_real));
    return -ENOENT;
  }
  snprintf(pf_bdf, pf_bdf_size, "%s", base_name(pf_real));
  return 0;
}

/* ---- identity ---- */

int mlx5_identity_from_info(const struct migd_devlink_info *info,
                            const char *handle, struct mlx5_identity *out,
                            char *error, size_t error_size) {
  memset(out, 0, sizeof(*out));
  const char *driver = info->driver[0] != '\0' ? info->driver : "unnamed";
  /* mlx5_core's mlx5_devlink_info_get: fixed "fw.psid" (the board id),
   * running and stored "fw.version" and "fw", on a PF only. */
  const char *psid =
      migd_devlink_version_find(info->fixed, info->fixed_count, "fw.psid");
  if (psid == NULL || psid[0] == '\0') {
    snprintf(error, error_size,
             "devlink %s (driver %s) reports no fixed fw.psid: mlx5_core "
             "reports the board id on a ConnectX PF only",
             handle, driver);
    return -ENODATA;
  }
  const char *fw = migd_devlink_version_find(info->running, info->running_count,
                                             "fw.version");
  if (fw == NULL) {
    fw = migd_devlink_version_find(info->running, info->running_count, "fw");
  }
  if (fw == NULL || fw[0] == '\0') {
    snprintf(error, error_size,
             "devlink %s (driver %s) reports no running fw.version", handle,
             driver);
    return -ENODATA;
  }
  /* mlx5_fw_version_query reports U32_MAX (255.255.65535) or 0
   * (0.0.0000) when it cannot read the version. */
  if (strcmp(fw, "255.255.65535") == 0 || strcmp(fw, "0.0.0000") == 0) {
    snprintf(error, error_size,
             "devlink %s reports running fw.version %s, mlx5_core's marker "
             "for a firmware version it could not query: the firmware cannot "
             "be compared",
             handle, fw);
    return -EIO;
  }
  if (strlen(psid) >= sizeof(out->psid) ||
      strlen(fw) >= sizeof(out->firmware)) {
    snprintf(error, error_size,
             "devlink %s: fw.psid or fw.version longer than %zu bytes", handle,
             sizeof(out->psid) - 1);
    return -ERANGE;
  }
  snprintf(out->psid, sizeof(out->psid), "%s", psid);
  snprintf(out->firmware, sizeof(out->firmware), "%s", fw);
  return 0;
}

void mlx5_identity_summary(const struct mlx5_identity *id, char *out,
                           size_t size) {
  snprintf(out, size, "PSID %s, firmware %s", id->psid, id->firmware);
}

/* ---- descriptor ---- */

#define DESCRIPTOR_MAGIC "mlx5-desc "
#define DESCRIPTOR_MAX 1024

size_t mlx5_descriptor_encode(const struct mlx5_identity *id, char *out,
                              size_t size) {
  char text[DESCRIPTOR_MAX];
  const int n =
      snprintf(text, sizeof(text), DESCRIPTOR_MAGIC "%d\npsid=%s\nfw=%s\n",
               MLX5_DESCRIPTOR_VERSION, id->psid, id->firmware);
  if (n > 0 && (size_t)n <= size) memcpy(out, text, (size_t)n);
  return n > 0 ? (size_t)n : 0;
}

/* Stores `value` (length n) of field `key` into `out`, once. */
static int take_field(const char *key, const char *value, size_t n, char *out,
                      size_t size, char *error, size_t error_size) {
  if (out[0] != '\0') {
    snprintf(error, error_size, "mlx5 descriptor has %s twice", key);
    return -EINVAL;
  }
  if (n == 0 || n >= size) {
    snprintf(error, error_size,
             "mlx5 descriptor's %s is %s (1 to %zu bytes expected)", key,
             n == 0 ? "empty" : "too long", size - 1);
    return -EINVAL;
  }
  memcpy(out, value, n);
  out[n] = '\0';
  return 0;
}

int mlx5_descriptor_decode(const uint8_t *data, size_t length,
                           struct mlx5_identity *out, char *error,
                           size_t error_size) {
  memset(out, 0, sizeof(*out));
  char text[DESCRIPTOR_MAX + 1];
  if (length > DESCRIPTOR_MAX) {
    snprintf(error, error_size,
             "descriptor of %zu bytes: too long for an mlx5 descriptor",
             length);
    return -EINVAL;
  }
  memcpy(text, data, length);
  text[length] = '\0';
  if (strlen(text) != length) {
    snprintf(error, error_size,
             "descriptor holds a NUL byte: not an mlx5 "
             "descriptor");
    return -EINVAL;
  }
  const size_t magic = strlen(DESCRIPTOR_MAGIC);
  if (strncmp(text, DESCRIPTOR_MAGIC, magic) != 0) {
    snprintf(error, error_size,
             "not an mlx5 descriptor: it begins \"%.16s\", not \"%s\"", text,
             DESCRIPTOR_MAGIC "N");
    return -EINVAL;
  }
  char *end = NULL;
  errno = 0;
  const unsigned long version = strtoul(text + magic, &end, 10);
  if (errno != 0 || end == text + magic || *end != '\n' || version == 0) {
    snprintf(error, error_size,
             "malformed mlx5 descriptor header \"%.24s\" (\"%sN\" expected)",
             text, DESCRIPTOR_MAGIC);
    return -EINVAL;
  }
  if (version > MLX5_DESCRIPTOR_VERSION) {
    snprintf(error, error_size,
             "mlx5 descriptor format %lu is newer than this plugin's (%d): "
             "upgrade the mlx5 plugin on this host",
             version, MLX5_DESCRIPTOR_VERSION);
    return -EINVAL;
  }
  int line_number = 1;
  for (char *line = end + 1; *line != '\0';) {
    ++line_number;
    char *newline = strchr(line, '\n');
    if (newline == NULL) {
      snprintf(error, error_size,
               "mlx5 descriptor is truncated: line %d \"%.32s\" has no end",
               line_number, line);
      return -EINVAL;
    }
    const char *eq = memchr(line, '=', (size_t)(newline - line));
    if (eq == NULL) {
      snprintf(error, error_size,
               "mlx5 descriptor line %d \"%.*s\" is not key=value", line_number,
               (int)(newline - line < 32 ? newline - line : 32), line);
      return -EINVAL;
    }
    const size_t key_length = (size_t)(eq - line);
    const size_t value_length = (size_t)(newline - eq - 1);
    int rc = 0;
    if (key_length == 4 && strncmp(line, "psid", 4) == 0) {
      rc = take_field("psid", eq + 1, value_length, out->psid,
                      sizeof(out->psid), error, error_size);
    } else if (key_length == 2 && strncmp(line, "fw", 2) == 0) {
      rc = take_field("fw", eq + 1, value_length, out->firmware,
                      sizeof(out->firmware), error, error_size);
    }
    /* Other keys: added within format 1 by a newer plugin; not needed. */
    if (rc != 0) return rc;
    line = newline + 1;
  }
  if (out->psid[0] == '\0' || out->firmware[0] == '\0') {
    snprintf(error, error_size, "mlx5 descriptor has no %s",
             out->psid[0] == '\0' ? "psid" : "fw");
    return -EINVAL;
  }
  return 0;
}

/* ---- compatibility ---- */

void mlx5_compare(const struct mlx5_identity *source,
                  const struct mlx5_identity *destination,
                  struct mlx5_verdict *out) {
  memset(out, 0, sizeof(*out));
  if (strcmp(source->psid, destination->psid) != 0) {
    out->field = "psid";
    snprintf(out->source_value, sizeof(out->source_value), "%s", source->psid);
    snprintf(out->destination_value, sizeof(out->destination_value), "%s",
             destination->psid);
    snprintf(out->message, sizeof(out->message),
             "the VFs are on different board types (PSID): mlx5_vfio_pci "
             "hands the saved state to the destination's firmware as an "
             "opaque image, and migd moves it only between equal boards");
    return;
  }
  if (strcmp(source->firmware, destination->firmware) != 0) {
    out->field = "firmware";
    snprintf(out->source_value, sizeof(out->source_value), "%s",
             source->firmware);
    snprintf(out->destination_value, sizeof(out->destination_value), "%s",
             destination->firmware);
    snprintf(out->message, sizeof(out->message),
             "the PFs run different firmware: the saved state is the "
             "firmware's own format, and migd moves it only between equal "
             "versions (update one host's firmware to match the other's)");
    return;
  }
  out->compatible = 1;
}

/* ---- capabilities ---- */

void mlx5_assess(const struct mlx5_vf_facts *f, struct mlx5_assessment *out) {
  memset(out, 0, sizeof(*out));
  char set_command[160];
  char vf[16];
  if (f->vf >= 0) {
    snprintf(vf, sizeof(vf), "%d", f->vf);
  } else {
    snprintf(vf, sizeof(vf), "<VF number>");
  }
  snprintf(set_command, sizeof(set_command),
           "migd-devlink set-migratable pci/%s %s on",
           f->pf_bdf != NULL ? f->pf_bdf : "<PF>", vf);
  const char *name = f->name != NULL ? f->name : "?";
  const int on_variant =
      f->driver != NULL && strcmp(f->driver, MLX5_VFIO_DRIVER) == 0;
  if (on_variant && (f->migration_flags & MIGD_MIGRATION_STOP_COPY) != 0) {
    out->migratable = 1;
    out->migration_flags =
        f->migration_flags & (MIGD_MIGRATION_STOP_COPY | MIGD_MIGRATION_P2P |
                              MIGD_MIGRATION_PRE_COPY);
    return;
  }
  out->migratable = 0;
  if (on_variant) {
    /* mlx5vf_cmd_set_migratable runs once, when the VF binds: without the
     * firmware's migration capability, or (6.12) without the VF's
     * migratable HCA capability, it advertises nothing. */
    snprintf(out->reason, sizeof(out->reason),
             "device %s (15b3:%04x) is bound to %s, which advertises no "
             "migration: the VF's migratable capability was off when it was "
             "bound (the driver checks it once, at bind time), or the "
             "firmware lacks migration support",
             name, f->device_id, MLX5_VFIO_DRIVER);
    snprintf(out->remedy, sizeof(out->remedy),
             "unbind the VF, enable the capability on its PF (%s, with the "
             "PF's eswitch in switchdev mode) and bind it to %s again; or let "
             "the agent's prepare step enable it before the VF is bound",
             set_command, MLX5_VFIO_DRIVER);
    return;
  }
  if (f->driver != NULL && f->driver[0] != '\0') {
    snprintf(out->reason, sizeof(out->reason),
             "device %s (15b3:%04x) is bound to %s, which has no migration "
             "support: only %s saves a ConnectX VF's state",
             name, f->device_id, f->driver, MLX5_VFIO_DRIVER);
  } else {
    snprintf(out->reason, sizeof(out->reason),
             "device %s (15b3:%04x) is bound to no driver: only %s saves a "
             "ConnectX VF's state",
             name, f->device_id, MLX5_VFIO_DRIVER);
  }
  snprintf(out->remedy, sizeof(out->remedy),
           "enable the port function's migratable capability while the VF "
           "is unbound (%s, or the agent's prepare step), then bind the VF "
           "to %s (driver_override)",
           set_command, MLX5_VFIO_DRIVER);
}

/* ---- errnos ---- */

/* 1 when `operation` is `word` or begins with `word` and a space. */
static int is_operation(const char *operation, const char *word) {
  const size_t n = strlen(word);
  return strncmp(operation, word, n) == 0 &&
         (operation[n] == '\0' || operation[n] == ' ');
}

int mlx5_explain_errno(const char *operation, int err, char *out, size_t size) {
  const int e = err < 0 ? -err : err;
  const char *text = NULL;
  if (size > 0) out[0] = '\0';
  if (operation == NULL) operation = "";
  if (e == ENOTCONN) {
    /* mlx5fv_vf_event: MLX5_PF_NOTIFY_DISABLE_VF sets mdev_detach, and
     * every firmware command then fails with ENOTCONN. */
    text =
        "mlx5_vfio_pci lost the VF: its PF disabled SR-IOV (or the PF's "
        "driver went away), so the driver can no longer send firmware "
        "commands for it; the VF's state is gone";
  } else if (strcmp(operation, "RESUMING -> STOP") == 0) {
    if (e == EINVAL) {
      text =
          "with Linux 6.1's mlx5_vfio_pci this arc loads the whole image "
          "into the firmware (LOAD_VHCA_STATE): EINVAL is an empty image "
          "(no state was written) or a firmware that rejected it as "
          "malformed; the kernel log names the command's status and "
          "syndrome";
    } else {
      text =
          "with Linux 6.1's mlx5_vfio_pci this arc loads the whole image "
          "into the firmware (LOAD_VHCA_STATE): the destination's firmware "
          "rejected the source's state (a different firmware or board on "
          "the two hosts?); the kernel log names the command's status and "
          "syndrome. Linux 6.12's driver loads images during the writes "
          "instead";
    }
  } else if (is_operation(operation, "write")) {
    switch (e) {
      case EOPNOTSUPP:
        text =
            "the state stream has a record this host's mlx5_vfio_pci does "
            "not know and that is not optional: the source ran a newer "
            "driver (migrate to a kernel at least as new as the source's)";
        break;
      case ENOMEM:
        text =
            "a record of the state stream is larger than the firmware's "
            "LOAD_VHCA_STATE takes, or the kernel could not allocate its "
            "buffer";
        break;
      case ENODEV:
        text =
            "an earlier write of this state failed and mlx5_vfio_pci's "
            "resume file is in its error state: the first error says why";
        break;
      case EINVAL:
      case EIO:
      case EREMOTEIO:
      case EBUSY:
      case EAGAIN:
        text =
            "Linux 6.12's mlx5_vfio_pci hands each image to the firmware "
            "(LOAD_VHCA_STATE) while it is written: the destination's "
            "firmware rejected the source's state (a different firmware "
            "or board on the two hosts?) or the stream is malformed; the "
            "kernel log names the command's status and syndrome";
        break;
      default:
        break;
    }
  } else if (is_operation(operation, "read")) {
    switch (e) {
      case ENOMSG:
        text =
            "no more pre-copy data for now (mlx5_vfio_pci's end of data "
            "in PRE_COPY): not an error; read again later or move to "
            "STOP_COPY";
        break;
      case ENODEV:
        text =
            "saving the state failed earlier and mlx5_vfio_pci's save "
            "file is in its error state; the kernel log names the "
            "firmware command that failed";
        break;
      default:
        break;
    }
  }
  if (text == NULL) return 0;
  snprintf(out, size, "%s", text);
  return 1;
}
