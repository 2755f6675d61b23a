/* QEMU's edu device (1234:11e8) bound to kernel/edu_vfio_pci, migd's
 * reference device with a kernel migration driver.
 *
 * The driver loads only a state of its own stream version and internal
 * memory size (anything else fails RESUMING -> STOP, after the downtime has
 * begun). It exposes both per device in sysfs,
 *
 *   /sys/bus/pci/devices/BDF/edu_migration/state_version
 *   /sys/bus/pci/devices/BDF/edu_migration/mem_kib
 *
 * and this plugin compares them before any state moves. The descriptor is
 * "state_version=N mem_kib=M": all a destination needs to know. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "migd/plugin.h"

#define EDU_VENDOR_ID 0x1234
#define EDU_DEVICE_ID 0x11e8
/* The name kernel/edu_vfio_pci registers its PCI driver under. */
#define EDU_DRIVER "edu_vfio_pci"

/* What the descriptor carries, in order: sysfs attribute and field name. */
static const char *const kFields[] = {"state_version", "mem_kib"};
#define EDU_NFIELDS (sizeof(kFields) / sizeof(kFields[0]))

/* Reads edu_migration/<field> of `d` into *value. On failure fills `error`
 * naming the file and returns a negative errno. */
static int read_attr(const struct migd_device_info *d, const char *field,
                     uint64_t *value, struct migd_text error) {
  char path[512];
  if (d->sysfs_path == NULL) {
    snprintf(error.data, error.capacity,
             "device %s: no sysfs directory to read edu_migration/%s from",
             d->name, field);
    return -ENOENT;
  }
  snprintf(path, sizeof(path), "%s/edu_migration/%s", d->sysfs_path, field);
  FILE *f = fopen(path, "re");
  if (f == NULL) {
    const int err = errno;
    snprintf(error.data, error.capacity,
             "device %s: cannot read %s: %s (is it bound to %s, with "
             "edu_migration attributes?)",
             d->name, path, strerror(err), EDU_DRIVER);
    return -err;
  }
  char line[64];
  char *end = NULL;
  int rc = 0;
  if (fgets(line, sizeof(line), f) == NULL) {
    rc = -EIO;
  } else {
    errno = 0;
    *value = strtoull(line, &end, 10);
    if (errno != 0 || end == line || (*end != '\n' && *end != '\0')) {
      rc = -EINVAL;
    }
  }
  fclose(f);
  if (rc != 0) {
    snprintf(error.data, error.capacity, "device %s: %s does not hold a number",
             d->name, path);
  }
  return rc;
}

/* Reads every field of `d`. */
static int read_fields(const struct migd_device_info *d,
                       uint64_t values[EDU_NFIELDS], struct migd_text error) {
  for (size_t i = 0; i < EDU_NFIELDS; ++i) {
    int rc = read_attr(d, kFields[i], &values[i], error);
    if (rc != 0) return rc;
  }
  return 0;
}

/* The value of `key` in "key=value key=value" into *value; 0 when found. */
static int param(const char *text, const char *key, uint64_t *value) {
  size_t n = strlen(key);
  for (const char *p = text; p != NULL && *p != '\0';) {
    while (*p == ' ') ++p;
    if (strncmp(p, key, n) == 0 && p[n] == '=') {
      char *end = NULL;
      errno = 0;
      *value = strtoull(p + n + 1, &end, 10);
      if (errno != 0 || end == p + n + 1) return -EINVAL;
      return 0;
    }
    p = strchr(p, ' ');
  }
  return -ENOENT;
}

static int edu_claim(void *context, const struct migd_device_info *d) {
  (void)context;
  if (d->vendor_id != EDU_VENDOR_ID || d->device_id != EDU_DEVICE_ID) return 0;
  return d->driver != NULL && strcmp(d->driver, EDU_DRIVER) == 0 ? 100 : 0;
}

static int edu_capabilities(void *context, const struct migd_device_info *d,
                            struct migd_capabilities *out,
                            struct migd_text error) {
  (void)context;
  uint64_t values[EDU_NFIELDS];
  int rc = read_fields(d, values, error);
  if (rc != 0) return rc;
  out->migratable = 1;
  out->migration_flags =
      d->migration_flags &
      (MIGD_MIGRATION_STOP_COPY | MIGD_MIGRATION_P2P | MIGD_MIGRATION_PRE_COPY);
  out->dirty_tracking = "device";
  out->dirty_page_sizes = UINT64_C(1) << 12;
  /* No bound on the state: pre-copy may send a page more than once. */
  out->max_state_bytes = 0;
  return 0;
}

static int edu_describe(void *context, const struct migd_device_info *d,
                        struct migd_bytes *descriptor, struct migd_text summary,
                        struct migd_text error) {
  (void)context;
  uint64_t values[EDU_NFIELDS];
  int rc = read_fields(d, values, error);
  if (rc != 0) return rc;
  char text[96];
  int n =
      snprintf(text, sizeof(text), "state_version=%" PRIu64 " mem_kib=%" PRIu64,
               values[0], values[1]);
  descriptor->length = (size_t)n;
  if ((size_t)n > descriptor->capacity) return -ENOSPC;
  memcpy(descriptor->data, text, (size_t)n);
  snprintf(summary.data, summary.capacity,
           "edu state version %" PRIu64 ", %" PRIu64 " KiB internal memory",
           values[0], values[1]);
  return 0;
}

static int edu_check(void *context, const struct migd_device_info *d,
                     const uint8_t *descriptor, size_t length,
                     struct migd_verdict *verdict, struct migd_text error) {
  (void)context;
  char source[96];
  if (length >= sizeof(source)) {
    snprintf(error.data, error.capacity, "descriptor of %zu bytes: not ours",
             length);
    return -EINVAL;
  }
  memcpy(source, descriptor, length);
  source[length] = '\0';
  uint64_t ours[EDU_NFIELDS];
  int rc = read_fields(d, ours, error);
  if (rc != 0) return rc;
  for (size_t i = 0; i < EDU_NFIELDS; ++i) {
    uint64_t theirs = 0;
    if (param(source, kFields[i], &theirs) != 0) {
      snprintf(error.data, error.capacity,
               "descriptor \"%s\" has no %s: not an edu descriptor", source,
               kFields[i]);
      return -EINVAL;
    }
    if (theirs != ours[i]) {
      verdict->compatible = 0;
      snprintf(verdict->field.data, verdict->field.capacity, "%s", kFields[i]);
      snprintf(verdict->source_value.data, verdict->source_value.capacity,
               "%" PRIu64, theirs);
      snprintf(verdict->destination_value.data,
               verdict->destination_value.capacity, "%" PRIu64, ours[i]);
      snprintf(verdict->message.data, verdict->message.capacity,
               "edu_vfio_pci loads only a state of its own %s", kFields[i]);
      return 0;
    }
  }
  verdict->compatible = 1;
  return 0;
}

static const struct migd_plugin kPlugin = {
    .abi_version = MIGD_PLUGIN_ABI_VERSION,
    .struct_size = sizeof(struct migd_plugin),
    .name = "edu",
    .version = "1.0",
    .description =
        "QEMU's edu device on edu_vfio_pci: state version and internal "
        "memory size",
    .claim = edu_claim,
    .capabilities = edu_capabilities,
    .describe = edu_describe,
    .check = edu_check,
};

const struct migd_plugin *migd_plugin_entry(void) { return &kPlugin; }
