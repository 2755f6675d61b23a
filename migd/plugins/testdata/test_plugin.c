/* Plugins for the loader's tests, one source built several ways:
 *   TEST_NAME        the plugin's name (a string literal)
 *   TEST_ABI         the ABI version its table claims
 *   TEST_OLD_TABLE   the table ends at `claim`, as a plugin built against
 *                    the first header would have it
 *   TEST_NO_ENTRY    exports no entry point
 *   TEST_SCORE       what claim answers for a device whose backend is
 *                    "emulated" (0 for any other)
 *   TEST_PREFER      the driver module preferred_driver (ABI 2) names for
 *                    a PCI device of vendor 0x1ac3, which it also claims;
 *                    for device 0xdead it fails. The other variants have
 *                    no preferred_driver.
 *   TEST_PREPARE     has prepare_host, and claims PCI devices of vendor
 *                    0x1ac3: for device 0x0bad it fails with a text; for
 *                    the others it appends a line to the file
 *                    $MIGD_TEST_PREPARE_LOG names (when set), saying what
 *                    the device's facts and its sysfs driver_override were
 *                    at the call: "<name> <pci_address> driver=<driver or
 *                    -> driver_override=<value>". The other variants have
 *                    no prepare_host.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "migd/plugin.h"

#ifndef TEST_SCORE
#define TEST_SCORE 100
#endif
#ifndef TEST_ABI
#define TEST_ABI MIGD_PLUGIN_ABI_VERSION
#endif

static int test_claim(void *context, const struct migd_device_info *device) {
  (void)context;
#if defined(TEST_PREFER) || defined(TEST_PREPARE)
  if (device->vendor_id == 0x1ac3) return TEST_SCORE;
#endif
  return strcmp(device->backend, "emulated") == 0 ? TEST_SCORE : 0;
}

#ifdef TEST_PREFER
static int test_preferred_driver(void *context,
                                 const struct migd_device_info *device,
                                 struct migd_text module,
                                 struct migd_text error) {
  (void)context;
  if (device->vendor_id != 0x1ac3) return 0;
  if (device->device_id == 0xdead) {
    snprintf(error.data, error.capacity, "device %s: cannot tell",
             device->name);
    return -EIO;
  }
  snprintf(module.data, module.capacity, "%s", TEST_PREFER);
  return 0;
}
#endif

#ifdef TEST_PREPARE
static int test_prepare_host(void *context,
                             const struct migd_device_info *device,
                             struct migd_text error) {
  (void)context;
  if (device->device_id == 0x0bad) {
    snprintf(error.data, error.capacity,
             "device %s: its function has no port to set", device->name);
    return -EOPNOTSUPP;
  }
  const char *log = getenv("MIGD_TEST_PREPARE_LOG");
  if (log == NULL || log[0] == '\0') return 0;
  /* driver_override as sysfs has it now: the binder's step 1 set it. */
  char path[4096], override[256] = "?";
  snprintf(path, sizeof(path), "%s/driver_override",
           device->sysfs_path ? device->sysfs_path : "");
  FILE *in = fopen(path, "r");
  if (in != NULL) {
    if (fgets(override, sizeof(override), in) == NULL) override[0] = '\0';
    override[strcspn(override, "\n")] = '\0';
    fclose(in);
  }
  FILE *out = fopen(log, "a");
  if (out == NULL) {
    const int err = errno;
    snprintf(error.data, error.capacity, "%s: %s", log, strerror(err));
    return -err;
  }
  fprintf(out, "%s %s driver=%s driver_override=%s\n", device->name,
          device->pci_address ? device->pci_address : "",
          device->driver && device->driver[0] ? device->driver : "-", override);
  fclose(out);
  return 0;
}
#endif

#ifndef TEST_OLD_TABLE
static int test_describe(void *context, const struct migd_device_info *device,
                         struct migd_bytes *descriptor,
                         struct migd_text summary, struct migd_text error) {
  (void)context;
  (void)error;
  const char *params = device->parameters ? device->parameters : "";
  size_t n = strlen(params);
  descriptor->length = n;
  if (n > descriptor->capacity) return -ENOSPC;
  memcpy(descriptor->data, params, n);
  snprintf(summary.data, summary.capacity, "parameters \"%s\"", params);
  return 0;
}

static int test_check(void *context, const struct migd_device_info *device,
                      const uint8_t *descriptor, size_t length,
                      struct migd_verdict *verdict, struct migd_text error) {
  (void)context;
  (void)error;
  const char *mine = device->parameters ? device->parameters : "";
  if (length == strlen(mine) && memcmp(descriptor, mine, length) == 0) {
    verdict->compatible = 1;
    return 0;
  }
  verdict->compatible = 0;
  snprintf(verdict->field.data, verdict->field.capacity, "parameters");
  snprintf(verdict->source_value.data, verdict->source_value.capacity, "%.*s",
           (int)length, (const char *)descriptor);
  snprintf(verdict->destination_value.data, verdict->destination_value.capacity,
           "%s", mine);
  return 0;
}

#endif

#ifdef TEST_OLD_TABLE
/* The first members only: what an older header had. */
struct old_table {
  uint32_t abi_version;
  uint32_t struct_size;
  const char *name;
  const char *version;
  const char *description;
  int (*create)(const struct migd_host *, void **, struct migd_text);
  void (*destroy)(void *);
  int (*claim)(void *, const struct migd_device_info *);
};
/* Unused (and so marked) in the variant without an entry point. */
__attribute__((unused)) static const struct old_table kTable = {
    TEST_ABI,
    sizeof(struct old_table),
    TEST_NAME,
    "0.1",
    "an older plugin",
    NULL,
    NULL,
    test_claim};
#else
__attribute__((unused)) static const struct migd_plugin kTable = {
    .abi_version = TEST_ABI,
    .struct_size = sizeof(struct migd_plugin),
    .name = TEST_NAME,
    .version = "0.1",
    .description = "a plugin for the loader's tests",
    .claim = test_claim,
    .describe = test_describe,
    .check = test_check,
#ifdef TEST_PREFER
    .preferred_driver = test_preferred_driver,
#endif
#ifdef TEST_PREPARE
    .prepare_host = test_prepare_host,
#endif
};
#endif

#ifndef TEST_NO_ENTRY
const struct migd_plugin *migd_plugin_entry(void) {
  return (const struct migd_plugin *)&kTable;
}
#endif
