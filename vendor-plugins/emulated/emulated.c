/* The plugin for migd's emulated devices (migd/device/emulated_device.h):
 * the reference for vendor plugins, and what the loopback tests and the demo
 * load. An emulated device loads only a stream of its own state format and
 * size, as a device whose firmware changed its state layout; this plugin
 * says so before any state moves.
 *
 * The agent passes an emulated device's parameters as "format=N size=N".
 * The descriptor is the same text: format and size are all a destination
 * needs to know. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "migd/plugin.h"

/* The value of `key` in "key=value key=value", or 0 when absent. */
static uint64_t param(const char *params, const char *key) {
  size_t n = strlen(key);
  for (const char *p = params; p != NULL && *p != '\0';) {
    while (*p == ' ') ++p;
    if (strncmp(p, key, n) == 0 && p[n] == '=') {
      return strtoull(p + n + 1, NULL, 10);
    }
    p = strchr(p, ' ');
  }
  return 0;
}

static int emulated_claim(void *context, const struct migd_device_info *d) {
  (void)context;
  return d->backend != NULL && strcmp(d->backend, "emulated") == 0 ? 100 : 0;
}

static int emulated_capabilities(void *context,
                                 const struct migd_device_info *d,
                                 struct migd_capabilities *out,
                                 struct migd_text error) {
  (void)context;
  (void)error;
  out->migratable = 1;
  out->migration_flags = d->migration_flags;
  out->dirty_tracking = "device";
  out->dirty_page_sizes = UINT64_C(1) << 12;
  return 0;
}

static int emulated_describe(void *context, const struct migd_device_info *d,
                             struct migd_bytes *descriptor,
                             struct migd_text summary,
                             struct migd_text error) {
  (void)context;
  const uint64_t format = param(d->parameters, "format");
  const uint64_t size = param(d->parameters, "size");
  if (format == 0 || size == 0) {
    snprintf(error.data, error.capacity,
             "the agent gave no format and size for device %s (\"%s\")",
             d->name, d->parameters ? d->parameters : "");
    return -EINVAL;
  }
  char text[64];
  int n = snprintf(text, sizeof(text), "format=%" PRIu64 " size=%" PRIu64,
                   format, size);
  descriptor->length = (size_t)n;
  if ((size_t)n > descriptor->capacity) return -ENOSPC;
  memcpy(descriptor->data, text, (size_t)n);
  snprintf(summary.data, summary.capacity,
           "state format %" PRIu64 ", %" PRIu64 " bytes", format, size);
  return 0;
}

static int emulated_check(void *context, const struct migd_device_info *d,
                          const uint8_t *descriptor, size_t length,
                          struct migd_verdict *verdict,
                          struct migd_text error) {
  (void)context;
  char source[64];
  if (length >= sizeof(source)) {
    snprintf(error.data, error.capacity, "descriptor of %zu bytes: not ours",
             length);
    return -EINVAL;
  }
  memcpy(source, descriptor, length);
  source[length] = '\0';
  const struct {
    const char *key, *field;
  } fields[] = {{"format", "state_format"}, {"size", "state_size"}};
  for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); ++i) {
    const uint64_t theirs = param(source, fields[i].key);
    const uint64_t ours = param(d->parameters, fields[i].key);
    if (theirs != ours) {
      verdict->compatible = 0;
      snprintf(verdict->field.data, verdict->field.capacity, "%s",
               fields[i].field);
      snprintf(verdict->source_value.data, verdict->source_value.capacity,
               "%" PRIu64, theirs);
      snprintf(verdict->destination_value.data,
               verdict->destination_value.capacity, "%" PRIu64, ours);
      return 0;
    }
  }
  verdict->compatible = 1;
  return 0;
}

static const struct migd_plugin kPlugin = {
    .abi_version = MIGD_PLUGIN_ABI_VERSION,
    .struct_size = sizeof(struct migd_plugin),
    .name = "emulated",
    .version = "1.0",
    .description = "migd's emulated devices: state format and size",
    .claim = emulated_claim,
    .capabilities = emulated_capabilities,
    .describe = emulated_describe,
    .check = emulated_check,
};

const struct migd_plugin *migd_plugin_entry(void) { return &kPlugin; }
