/* migd-devlink: the devlink client of the mlx5 plugin as a command line,
 * for operators and for the VM tier's guest script (e2e/vm/devlink_test.sh),
 * which depends on this output exactly:
 *
 *   migd-devlink info HANDLE
 *       driver NAME
 *       serial_number VALUE            (only when reported)
 *       fixed|running|stored NAME VALUE (one line per version)
 *   migd-devlink ports HANDLE
 *       INDEX flavour=FLAVOUR [pf=N] [vf=N] [controller=N] [netdev=NAME]
 *   migd-devlink eswitch HANDLE [legacy|switchdev]
 *       mode legacy|switchdev          (without a mode: reads it)
 *   migd-devlink set-migratable HANDLE VF_NUMBER on|off
 *
 * Exit 0 on success; 1 on an error, written as one line
 * "migd-devlink: <error>" on stderr; 2 for bad usage. */
#define _XOPEN_SOURCE 700

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vendor-plugins/mlx5/devlink.h"

static int usage(void) {
  fprintf(stderr,
          "usage: migd-devlink info HANDLE\n"
          "       migd-devlink ports HANDLE\n"
          "       migd-devlink eswitch HANDLE [legacy|switchdev]\n"
          "       migd-devlink set-migratable HANDLE VF_NUMBER on|off\n"
          "HANDLE is a devlink handle BUS/DEVICE: pci/0000:3b:00.0, "
          "netdevsim/netdevsim10\n");
  return 2;
}

static int failed(const char *error) {
  fprintf(stderr, "migd-devlink: %s\n", error);
  return 1;
}

static void print_versions(const char *kind,
                           const struct migd_devlink_version *v, size_t n) {
  for (size_t i = 0; i < n; ++i)
    printf("%s %s %s\n", kind, v[i].name, v[i].value);
}

static int cmd_info(const char *handle) {
  char error[1024];
  struct migd_devlink_info *info = malloc(sizeof(*info));
  if (info == NULL) return failed("out of memory");
  int rc = migd_devlink_info_get(handle, info, error, sizeof(error));
  if (rc == 0) {
    printf("driver %s\n", info->driver);
    if (info->serial_number[0] != '\0') {
      printf("serial_number %s\n", info->serial_number);
    }
    print_versions("fixed", info->fixed, info->fixed_count);
    print_versions("running", info->running, info->running_count);
    print_versions("stored", info->stored, info->stored_count);
  }
  free(info);
  return rc == 0 ? 0 : failed(error);
}

static int cmd_ports(const char *handle) {
  char error[1024];
  size_t capacity = 256, count = 0;
  struct migd_devlink_port *ports = NULL;
  int rc;
  for (;;) {
    struct migd_devlink_port *grown = realloc(ports, capacity * sizeof(*ports));
    if (grown == NULL) {
      free(ports);
      return failed("out of memory");
    }
    ports = grown;
    rc = migd_devlink_port_list(handle, ports, capacity, &count, error,
                                sizeof(error));
    if (rc != -ENOSPC || count <= capacity) break;
    capacity = count; /* ports came and went: try once more at this size */
  }
  if (rc == 0) {
    for (size_t i = 0; i < count; ++i) {
      const struct migd_devlink_port *p = &ports[i];
      printf("%u flavour=%s", p->index, migd_devlink_flavour_name(p->flavour));
      if (p->pf >= 0) printf(" pf=%d", p->pf);
      if (p->vf >= 0) printf(" vf=%d", p->vf);
      if (p->controller >= 0) printf(" controller=%ld", p->controller);
      if (p->netdev[0] != '\0') printf(" netdev=%s", p->netdev);
      printf("\n");
    }
  }
  free(ports);
  return rc == 0 ? 0 : failed(error);
}

static int cmd_eswitch(const char *handle, const char *mode_name) {
  char error[1024];
  int mode;
  if (mode_name == NULL) {
    if (migd_devlink_eswitch_get(handle, &mode, error, sizeof(error)) != 0) {
      return failed(error);
    }
    printf("mode %s\n", migd_devlink_eswitch_mode_name(mode));
    return 0;
  }
  if (strcmp(mode_name, "legacy") == 0) {
    mode = MIGD_DEVLINK_ESWITCH_LEGACY;
  } else if (strcmp(mode_name, "switchdev") == 0) {
    mode = MIGD_DEVLINK_ESWITCH_SWITCHDEV;
  } else {
    return usage();
  }
  if (migd_devlink_eswitch_set(handle, mode, error, sizeof(error)) != 0) {
    return failed(error);
  }
  printf("mode %s\n", mode_name);
  return 0;
}

static int cmd_set_migratable(const char *handle, const char *vf_text,
                              const char *state) {
  char *end = NULL;
  errno = 0;
  const long vf = strtol(vf_text, &end, 10);
  if (errno != 0 || end == vf_text || *end != '\0' || vf < 0 || vf > 65535) {
    return usage();
  }
  int enable;
  if (strcmp(state, "on") == 0) {
    enable = 1;
  } else if (strcmp(state, "off") == 0) {
    enable = 0;
  } else {
    return usage();
  }
  char error[1024];
  struct migd_devlink_port port;
  if (migd_devlink_find_vf_port(handle, (int)vf, &port, error, sizeof(error)) !=
          0 ||
      migd_devlink_port_set_migratable(handle, &port, enable, error,
                                       sizeof(error)) != 0) {
    return failed(error);
  }
  printf("%s port %u (pcivf %ld): migratable %s\n", handle, port.index, vf,
         state);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 3) return usage();
  const char *cmd = argv[1];
  if (strcmp(cmd, "info") == 0 && argc == 3) return cmd_info(argv[2]);
  if (strcmp(cmd, "ports") == 0 && argc == 3) return cmd_ports(argv[2]);
  if (strcmp(cmd, "eswitch") == 0 && (argc == 3 || argc == 4)) {
    return cmd_eswitch(argv[2], argc == 4 ? argv[3] : NULL);
  }
  if (strcmp(cmd, "set-migratable") == 0 && argc == 5) {
    return cmd_set_migratable(argv[2], argv[3], argv[4]);
  }
  return usage();
}
