/* A devlink client over generic netlink with libmnl: see devlink.h.
 *
 * Each operation: parse the handle, open a NETLINK_GENERIC socket (extended
 * acks on, acks capped, a receive timeout), resolve the "devlink" family
 * with CTRL_CMD_GETFAMILY, send one request, read answers until the ack or
 * the dump's end, close the socket. One exit path per operation closes
 * what was opened. */
#define _XOPEN_SOURCE 700

#include "vendor-plugins/mlx5/devlink.h"

#include <errno.h>
#include <libmnl/libmnl.h>
#include <linux/devlink.h>
#include <linux/genetlink.h>
#include <linux/netlink.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>

/* The port function capabilities came with Linux 6.2; Debian 12's
 * linux-libc-dev (6.1) has not got them. Values from the kernel's
 * include/uapi/linux/devlink.h (6.12): enum devlink_port_function_attr
 * continues HW_ADDR (1), STATE (2), OPSTATE (3) with CAPS (4), a
 * bitfield32; enum devlink_port_fn_attr_cap has ROCE_BIT (0) then
 * MIGRATABLE_BIT (1). */
#ifdef DEVLINK_PORT_FN_CAP_MIGRATABLE
#define MIGD_PORT_FN_ATTR_CAPS DEVLINK_PORT_FN_ATTR_CAPS
#define MIGD_PORT_FN_CAP_MIGRATABLE DEVLINK_PORT_FN_CAP_MIGRATABLE
#else
#define MIGD_PORT_FN_ATTR_CAPS (DEVLINK_PORT_FN_ATTR_OPSTATE + 1)
#define MIGD_PORT_FN_CAP_MIGRATABLE (1u << 1)
#endif
_Static_assert(MIGD_PORT_FN_ATTR_CAPS == 4,
               "DEVLINK_PORT_FN_ATTR_CAPS is 4 in the kernel's uAPI");

/* Large enough for any devlink message the kernel builds for a dump. */
#define BUFFER_SIZE 32768

/* ---- names ---- */

static const char *errno_name(int err) {
  switch (err) {
    case EPERM:
      return "EPERM";
    case ENOENT:
      return "ENOENT";
    case EIO:
      return "EIO";
    case ENOMEM:
      return "ENOMEM";
    case EACCES:
      return "EACCES";
    case EFAULT:
      return "EFAULT";
    case EBUSY:
      return "EBUSY";
    case EEXIST:
      return "EEXIST";
    case ENODEV:
      return "ENODEV";
    case EINVAL:
      return "EINVAL";
    case ENOSPC:
      return "ENOSPC";
    case ERANGE:
      return "ERANGE";
    case EAGAIN:
      return "EAGAIN";
    case ENOMSG:
      return "ENOMSG";
    case ENODATA:
      return "ENODATA";
    case EPROTO:
      return "EPROTO";
    case EBADMSG:
      return "EBADMSG";
    case EMSGSIZE:
      return "EMSGSIZE";
    case EPROTONOSUPPORT:
      return "EPROTONOSUPPORT";
    case EOPNOTSUPP:
      return "EOPNOTSUPP";
    case ENOTCONN:
      return "ENOTCONN";
    case ETIMEDOUT:
      return "ETIMEDOUT";
    case EREMOTEIO:
      return "EREMOTEIO";
    default:
      return NULL;
  }
}

const char *migd_devlink_flavour_name(int flavour) {
  switch (flavour) {
    case DEVLINK_PORT_FLAVOUR_PHYSICAL:
      return "physical";
    case DEVLINK_PORT_FLAVOUR_CPU:
      return "cpu";
    case DEVLINK_PORT_FLAVOUR_DSA:
      return "dsa";
    case DEVLINK_PORT_FLAVOUR_PCI_PF:
      return "pcipf";
    case DEVLINK_PORT_FLAVOUR_PCI_VF:
      return "pcivf";
    case DEVLINK_PORT_FLAVOUR_VIRTUAL:
      return "virtual";
    case DEVLINK_PORT_FLAVOUR_UNUSED:
      return "unused";
    case DEVLINK_PORT_FLAVOUR_PCI_SF:
      return "pcisf";
    default:
      return "unknown";
  }
}

const char *migd_devlink_eswitch_mode_name(int mode) {
  switch (mode) {
    case MIGD_DEVLINK_ESWITCH_LEGACY:
      return "legacy";
    case MIGD_DEVLINK_ESWITCH_SWITCHDEV:
      return "switchdev";
    default:
      return "unknown";
  }
}

const char *migd_devlink_version_find(const struct migd_devlink_version *v,
                                      size_t count, const char *name) {
  for (size_t i = 0; i < count; ++i) {
    if (strcmp(v[i].name, name) == 0) return v[i].value;
  }
  return NULL;
}

/* ---- error texts ---- */

/* strerror, thread-safe. */
static const char *errno_text(int err, char *out, size_t size) {
  if (strerror_r(err < 0 ? -err : err, out, size) != 0) {
    snprintf(out, size, "errno %d", err < 0 ? -err : err);
  }
  return out;
}

/* "devlink HANDLE" or "devlink HANDLE port N (pcivf V)". */
static void subject_of(const struct migd_devlink_what *w, char *out,
                       size_t size) {
  const struct migd_devlink_port *p = w->port;
  if (p == NULL) {
    snprintf(out, size, "devlink %s", w->handle);
  } else if (p->flavour == DEVLINK_PORT_FLAVOUR_PCI_VF && p->vf >= 0) {
    snprintf(out, size, "devlink %s port %u (pcivf %d)", w->handle, p->index,
             p->vf);
  } else {
    snprintf(out, size, "devlink %s port %u (%s)", w->handle, p->index,
             migd_devlink_flavour_name(p->flavour));
  }
}

static void action_of(const struct migd_devlink_what *w, char *out,
                      size_t size) {
  switch (w->op) {
    case MIGD_DEVLINK_OP_INFO:
      snprintf(out, size, "cannot read device info");
      break;
    case MIGD_DEVLINK_OP_PORTS:
      snprintf(out, size, "cannot list ports");
      break;
    case MIGD_DEVLINK_OP_ESWITCH_GET:
      snprintf(out, size, "cannot read the eswitch mode");
      break;
    case MIGD_DEVLINK_OP_ESWITCH_SET:
      snprintf(out, size, "cannot set the eswitch mode to %s",
               migd_devlink_eswitch_mode_name(w->value));
      break;
    case MIGD_DEVLINK_OP_SET_MIGRATABLE:
      snprintf(out, size,
               "the port function's migratable capability cannot be %s",
               w->value ? "set" : "cleared");
      break;
  }
}

/* What a person can do about `err` from `w`, or "". */
static const char *hint_of(const struct migd_devlink_what *w, int err) {
  switch (err) {
    case EOPNOTSUPP:
      switch (w->op) {
        case MIGD_DEVLINK_OP_SET_MIGRATABLE:
          return "the PF's driver or firmware does not support it";
        case MIGD_DEVLINK_OP_INFO:
          return "the driver reports no device info";
        case MIGD_DEVLINK_OP_ESWITCH_GET:
        case MIGD_DEVLINK_OP_ESWITCH_SET:
          return "the driver has no eswitch modes";
        default:
          return "";
      }
    case EINVAL:
      /* Linux 6.1's devlink parses the port function strictly and knows
       * no DEVLINK_PORT_FN_ATTR_CAPS: "Fail to parse port function
       * attributes". */
      return w->op == MIGD_DEVLINK_OP_SET_MIGRATABLE
                 ? "kernels before 6.2 do not know the migratable "
                   "capability"
                 : "";
    case EPERM:
      return "this needs CAP_NET_ADMIN";
    default:
      return "";
  }
}

void migd_devlink_failure_text(const struct migd_devlink_what *w, int err,
                               const char *extack, char *out, size_t size) {
  char subject[256], action[128], detail[320], name[32];
  subject_of(w, subject, sizeof(subject));
  action_of(w, action, sizeof(action));
  const int e = err < 0 ? -err : err;
  const char *n = errno_name(e);
  if (n == NULL) {
    snprintf(name, sizeof(name), "errno %d", e);
    n = name;
  }
  if (extack != NULL && extack[0] != '\0') {
    snprintf(detail, sizeof(detail), "%s: %s", n, extack);
  } else if (e == ETIMEDOUT) {
    snprintf(detail, sizeof(detail),
             "%s: no answer from the kernel within %d ms", n,
             MIGD_DEVLINK_TIMEOUT_MS);
  } else {
    char text[128];
    snprintf(detail, sizeof(detail), "%s: %s", n,
             errno_text(e, text, sizeof(text)));
  }
  if (e == ENODEV) {
    if (w->port != NULL) {
      snprintf(out, size,
               "%s: %s: no devlink instance %s, or no port %u on it (%s)",
               subject, action, w->handle, w->port->index, detail);
    } else {
      snprintf(out, size, "%s: %s: no devlink instance %s (%s)", subject,
               action, w->handle, detail);
    }
    return;
  }
  const char *hint = hint_of(w, e);
  snprintf(out, size, "%s: %s (%s)%s%s", subject, action, detail,
           hint[0] != '\0' ? ": " : "", hint);
}

/* ---- parsing ---- */

/* Copies a string attribute into `out` (NUL-terminated, truncated). */
static void copy_string(const struct nlattr *attr, char *out, size_t size) {
  size_t len = mnl_attr_get_payload_len(attr);
  const char *s = mnl_attr_get_payload(attr);
  while (len > 0 && s[len - 1] == '\0') --len;
  if (len >= size) len = size - 1;
  memcpy(out, s, len);
  out[len] = '\0';
}

static int is_devlink_message(const struct nlmsghdr *nlh, uint8_t cmd1,
                              uint8_t cmd2) {
  if (nlh->nlmsg_len < NLMSG_HDRLEN + GENL_HDRLEN) return 0;
  const struct genlmsghdr *genl = mnl_nlmsg_get_payload(nlh);
  return genl->cmd == cmd1 || genl->cmd == cmd2;
}

/* One DEVLINK_ATTR_INFO_VERSION_* nest into `list`. */
static void add_version(const struct nlattr *nest,
                        struct migd_devlink_version *list, size_t *count) {
  if (*count >= MIGD_DEVLINK_MAX_VERSIONS) return;
  struct migd_devlink_version *v = &list[*count];
  memset(v, 0, sizeof(*v));
  const struct nlattr *attr;
  mnl_attr_for_each_nested(attr, nest) {
    if (mnl_attr_get_type(attr) == DEVLINK_ATTR_INFO_VERSION_NAME) {
      copy_string(attr, v->name, sizeof(v->name));
    } else if (mnl_attr_get_type(attr) == DEVLINK_ATTR_INFO_VERSION_VALUE) {
      copy_string(attr, v->value, sizeof(v->value));
    }
  }
  if (v->name[0] != '\0') ++*count;
}

int migd_devlink_parse_info(const struct nlmsghdr *nlh,
                            struct migd_devlink_info *out) {
  memset(out, 0, sizeof(*out));
  if (!is_devlink_message(nlh, DEVLINK_CMD_INFO_GET, DEVLINK_CMD_INFO_GET)) {
    return -EPROTO;
  }
  const struct nlattr *attr;
  mnl_attr_for_each(attr, nlh, GENL_HDRLEN) {
    switch (mnl_attr_get_type(attr)) {
      case DEVLINK_ATTR_INFO_DRIVER_NAME:
        copy_string(attr, out->driver, sizeof(out->driver));
        break;
      case DEVLINK_ATTR_INFO_SERIAL_NUMBER:
        copy_string(attr, out->serial_number, sizeof(out->serial_number));
        break;
      case DEVLINK_ATTR_INFO_VERSION_FIXED:
        add_version(attr, out->fixed, &out->fixed_count);
        break;
      case DEVLINK_ATTR_INFO_VERSION_RUNNING:
        add_version(attr, out->running, &out->running_count);
        break;
      case DEVLINK_ATTR_INFO_VERSION_STORED:
        add_version(attr, out->stored, &out->stored_count);
        break;
      default:
        break;
    }
  }
  return 0;
}

int migd_devlink_parse_port(const struct nlmsghdr *nlh,
                            struct migd_devlink_port *out, char *handle,
                            size_t handle_size) {
  memset(out, 0, sizeof(*out));
  out->flavour = out->pf = out->vf = -1;
  out->sf = out->controller = -1;
  if (handle_size > 0) handle[0] = '\0';
  /* Linux 6.1's port dump (devlink_nl_cmd_port_get_dumpit) answers with
   * DEVLINK_CMD_NEW; a doit, and later kernels' dumps, with PORT_NEW. */
  if (!is_devlink_message(nlh, DEVLINK_CMD_PORT_NEW, DEVLINK_CMD_PORT_GET) &&
      !is_devlink_message(nlh, DEVLINK_CMD_NEW, DEVLINK_CMD_NEW)) {
    return -EPROTO;
  }
  char bus[MIGD_DEVLINK_NAME_MAX] = "", dev[MIGD_DEVLINK_VALUE_MAX] = "";
  int has_index = 0;
  const struct nlattr *attr;
  mnl_attr_for_each(attr, nlh, GENL_HDRLEN) {
    const uint16_t type = mnl_attr_get_type(attr);
    const size_t len = mnl_attr_get_payload_len(attr);
    switch (type) {
      case DEVLINK_ATTR_BUS_NAME:
        copy_string(attr, bus, sizeof(bus));
        break;
      case DEVLINK_ATTR_DEV_NAME:
        copy_string(attr, dev, sizeof(dev));
        break;
      case DEVLINK_ATTR_PORT_INDEX:
        if (len < sizeof(uint32_t)) return -EPROTO;
        out->index = mnl_attr_get_u32(attr);
        has_index = 1;
        break;
      case DEVLINK_ATTR_PORT_FLAVOUR:
        if (len < sizeof(uint16_t)) return -EPROTO;
        out->flavour = mnl_attr_get_u16(attr);
        break;
      case DEVLINK_ATTR_PORT_PCI_PF_NUMBER:
        if (len < sizeof(uint16_t)) return -EPROTO;
        out->pf = mnl_attr_get_u16(attr);
        break;
      case DEVLINK_ATTR_PORT_PCI_VF_NUMBER:
        if (len < sizeof(uint16_t)) return -EPROTO;
        out->vf = mnl_attr_get_u16(attr);
        break;
      case DEVLINK_ATTR_PORT_PCI_SF_NUMBER:
        if (len < sizeof(uint32_t)) return -EPROTO;
        out->sf = (long)mnl_attr_get_u32(attr);
        break;
      case DEVLINK_ATTR_PORT_CONTROLLER_NUMBER:
        if (len < sizeof(uint32_t)) return -EPROTO;
        out->controller = (long)mnl_attr_get_u32(attr);
        break;
      case DEVLINK_ATTR_PORT_EXTERNAL:
        if (len < sizeof(uint8_t)) return -EPROTO;
        out->external = mnl_attr_get_u8(attr) != 0;
        break;
      case DEVLINK_ATTR_PORT_NETDEV_NAME:
        copy_string(attr, out->netdev, sizeof(out->netdev));
        break;
      default:
        break;
    }
  }
  if (!has_index) return -EPROTO;
  if (handle_size > 0) snprintf(handle, handle_size, "%s/%s", bus, dev);
  return 0;
}

struct extack_data {
  char *text;
  size_t size;
};

static int extack_attr_cb(const struct nlattr *attr, void *data) {
  struct extack_data *d = data;
  if (mnl_attr_get_type(attr) == NLMSGERR_ATTR_MSG && d->size > 0) {
    copy_string(attr, d->text, d->size);
  }
  return MNL_CB_OK;
}

int migd_devlink_parse_error(const struct nlmsghdr *nlh, int *err, char *extack,
                             size_t extack_size) {
  if (extack_size > 0) extack[0] = '\0';
  if (nlh->nlmsg_type != NLMSG_ERROR) return -EPROTO;
  const size_t payload_len = mnl_nlmsg_get_payload_len(nlh);
  if (payload_len < sizeof(struct nlmsgerr)) return -EPROTO;
  const struct nlmsgerr *e = mnl_nlmsg_get_payload(nlh);
  *err = e->error;
  if ((nlh->nlmsg_flags & NLM_F_ACK_TLVS) == 0) return 0;
  /* The TLVs follow the request's header (capped) or the whole request. */
  size_t offset = sizeof(struct nlmsgerr);
  if ((nlh->nlmsg_flags & NLM_F_CAPPED) == 0) {
    if (e->msg.nlmsg_len < sizeof(struct nlmsghdr)) return -EPROTO;
    offset += e->msg.nlmsg_len - sizeof(struct nlmsghdr);
  }
  if (offset >= payload_len) return 0;
  struct extack_data d = {extack, extack_size};
  mnl_attr_parse_payload((const char *)e + offset, payload_len - offset,
                         extack_attr_cb, &d);
  return 0;
}

void migd_devlink_put_migratable(struct nlmsghdr *nlh, uint32_t port_index,
                                 int enable) {
  mnl_attr_put_u32(nlh, DEVLINK_ATTR_PORT_INDEX, port_index);
  /* mnl_attr_nest_start sets NLA_F_NESTED, which the kernel's strict
   * parsing of the port function requires. */
  struct nlattr *function =
      mnl_attr_nest_start(nlh, DEVLINK_ATTR_PORT_FUNCTION);
  struct nla_bitfield32 caps = {
      .value = enable ? MIGD_PORT_FN_CAP_MIGRATABLE : 0,
      .selector = MIGD_PORT_FN_CAP_MIGRATABLE,
  };
  mnl_attr_put(nlh, MIGD_PORT_FN_ATTR_CAPS, sizeof(caps), &caps);
  mnl_attr_nest_end(nlh, function);
}

/* ---- the socket ---- */

struct handle {
  char bus[MIGD_DEVLINK_NAME_MAX];
  char dev[MIGD_DEVLINK_VALUE_MAX];
};

static int parse_handle(const char *text, struct handle *h, char *error,
                        size_t error_size) {
  const char *slash = text != NULL ? strchr(text, '/') : NULL;
  if (slash == NULL || slash == text || slash[1] == '\0' ||
      strchr(slash + 1, '/') != NULL ||
      (size_t)(slash - text) >= sizeof(h->bus) ||
      strlen(slash + 1) >= sizeof(h->dev)) {
    snprintf(error, error_size,
             "devlink: \"%s\" is not a devlink handle (BUS/DEVICE, e.g. "
             "pci/0000:3b:00.0)",
             text != NULL ? text : "");
    return -EINVAL;
  }
  memcpy(h->bus, text, (size_t)(slash - text));
  h->bus[slash - text] = '\0';
  snprintf(h->dev, sizeof(h->dev), "%s", slash + 1);
  return 0;
}

struct conn {
  struct mnl_socket *nl;
  char *buffer;
  unsigned int portid;
  unsigned int seq;
  uint16_t family;
};

/* Answers to one request: what the data callback is given, and what the
 * control callbacks found. */
struct talk {
  int (*on_message)(const struct nlmsghdr *nlh, void *user);
  void *user;
  int err; /* negative errno from the kernel or a callback */
  char extack[256];
};

static int data_cb(const struct nlmsghdr *nlh, void *data) {
  struct talk *t = data;
  if (t->on_message == NULL) return MNL_CB_OK;
  const int rc = t->on_message(nlh, t->user);
  if (rc < 0) {
    t->err = rc;
    return MNL_CB_ERROR;
  }
  return MNL_CB_OK;
}

static int error_cb(const struct nlmsghdr *nlh, void *data) {
  struct talk *t = data;
  int err = 0;
  if (migd_devlink_parse_error(nlh, &err, t->extack, sizeof(t->extack)) != 0) {
    t->err = -EPROTO;
    return MNL_CB_ERROR;
  }
  if (err == 0) return MNL_CB_STOP; /* the ack */
  t->err = err < 0 ? err : -err;
  return MNL_CB_ERROR;
}

/* A dump's end; an error code in it means the dump failed. */
static int done_cb(const struct nlmsghdr *nlh, void *data) {
  struct talk *t = data;
  if (mnl_nlmsg_get_payload_len(nlh) >= sizeof(int)) {
    int err;
    memcpy(&err, mnl_nlmsg_get_payload(nlh), sizeof(err));
    if (err < 0) {
      t->err = err;
      if (nlh->nlmsg_flags & NLM_F_ACK_TLVS) {
        struct extack_data d = {t->extack, sizeof(t->extack)};
        mnl_attr_parse_payload(
            (const char *)mnl_nlmsg_get_payload(nlh) + sizeof(int),
            mnl_nlmsg_get_payload_len(nlh) - sizeof(int), extack_attr_cb, &d);
      }
      return MNL_CB_ERROR;
    }
  }
  return MNL_CB_STOP;
}

/* Sends `req` (built in c->buffer) and reads answers until the ack or the
 * dump's end. 0, or a negative errno (t->extack set when the kernel gave
 * one). */
static int conn_talk(struct conn *c, struct nlmsghdr *req, struct talk *t) {
  const unsigned int seq = req->nlmsg_seq;
  t->err = 0;
  t->extack[0] = '\0';
  if (mnl_socket_sendto(c->nl, req, req->nlmsg_len) < 0) return -errno;
  mnl_cb_t control[NLMSG_MIN_TYPE] = {0};
  control[NLMSG_ERROR] = error_cb;
  control[NLMSG_DONE] = done_cb;
  for (;;) {
    const ssize_t n = mnl_socket_recvfrom(c->nl, c->buffer, BUFFER_SIZE);
    if (n < 0) {
      return errno == EAGAIN || errno == EWOULDBLOCK ? -ETIMEDOUT : -errno;
    }
    errno = 0;
    const int rc = mnl_cb_run2(c->buffer, (size_t)n, seq, c->portid, data_cb, t,
                               control, NLMSG_MIN_TYPE);
    if (rc == MNL_CB_ERROR) {
      if (t->err != 0) return t->err;
      return errno != 0 ? -errno : -EPROTO;
    }
    if (rc == MNL_CB_STOP) return 0;
  }
}

static struct nlmsghdr *put_request(struct conn *c, uint16_t type,
                                    uint16_t flags, uint8_t cmd,
                                    uint8_t version) {
  struct nlmsghdr *nlh = mnl_nlmsg_put_header(c->buffer);
  nlh->nlmsg_type = type;
  nlh->nlmsg_flags = NLM_F_REQUEST | flags;
  nlh->nlmsg_seq = ++c->seq;
  struct genlmsghdr *genl =
      mnl_nlmsg_put_extra_header(nlh, sizeof(struct genlmsghdr));
  genl->cmd = cmd;
  genl->version = version;
  return nlh;
}

static int family_cb(const struct nlmsghdr *nlh, void *user) {
  uint16_t *family = user;
  const struct nlattr *attr;
  mnl_attr_for_each(attr, nlh, GENL_HDRLEN) {
    if (mnl_attr_get_type(attr) == CTRL_ATTR_FAMILY_ID &&
        mnl_attr_get_payload_len(attr) >= sizeof(uint16_t)) {
      *family = mnl_attr_get_u16(attr);
    }
  }
  return 0;
}

static void conn_close(struct conn *c) {
  if (c->nl != NULL) mnl_socket_close(c->nl);
  free(c->buffer);
  c->nl = NULL;
  c->buffer = NULL;
}

/* Opens the socket and resolves the devlink family. On failure fills
 * `error` (naming `w`) and leaves nothing open. */
static int conn_open(struct conn *c, const struct migd_devlink_what *w,
                     char *error, size_t error_size) {
  memset(c, 0, sizeof(*c));
  char subject[256], action[128], text[128];
  subject_of(w, subject, sizeof(subject));
  action_of(w, action, sizeof(action));
  int rc = 0;
  c->buffer = malloc(BUFFER_SIZE);
  c->nl = mnl_socket_open(NETLINK_GENERIC);
  if (c->buffer == NULL || c->nl == NULL) {
    rc = c->buffer == NULL ? -ENOMEM : -errno;
    snprintf(error, error_size,
             "%s: %s: cannot open a generic netlink socket: %s", subject,
             action, errno_text(rc, text, sizeof(text)));
    conn_close(c);
    return rc;
  }
  int one = 1;
  /* Extended acks carry the kernel's message; capped acks do not echo the
   * request. Both are best effort (kernels since 4.12 have them). */
  mnl_socket_setsockopt(c->nl, NETLINK_EXT_ACK, &one, sizeof(one));
  mnl_socket_setsockopt(c->nl, NETLINK_CAP_ACK, &one, sizeof(one));
  const struct timeval timeout = {
      .tv_sec = MIGD_DEVLINK_TIMEOUT_MS / 1000,
      .tv_usec = (MIGD_DEVLINK_TIMEOUT_MS % 1000) * 1000,
  };
  if (setsockopt(mnl_socket_get_fd(c->nl), SOL_SOCKET, SO_RCVTIMEO, &timeout,
                 sizeof(timeout)) != 0 ||
      mnl_socket_bind(c->nl, 0, MNL_SOCKET_AUTOPID) != 0) {
    rc = -errno;
    snprintf(error, error_size,
             "%s: %s: cannot set up a generic netlink socket: %s", subject,
             action, errno_text(rc, text, sizeof(text)));
    conn_close(c);
    return rc;
  }
  c->portid = mnl_socket_get_portid(c->nl);
  c->seq = (unsigned int)time(NULL);

  struct nlmsghdr *nlh =
      put_request(c, GENL_ID_CTRL, NLM_F_ACK, CTRL_CMD_GETFAMILY, 1);
  mnl_attr_put_strz(nlh, CTRL_ATTR_FAMILY_NAME, DEVLINK_GENL_NAME);
  struct talk t = {.on_message = family_cb, .user = &c->family};
  rc = conn_talk(c, nlh, &t);
  if (rc == 0 && c->family == 0) rc = -EPROTO;
  if (rc == -ENOENT) {
    snprintf(error, error_size,
             "%s: %s: no devlink family in this kernel (generic netlink has "
             "no \"%s\" family: a kernel without CONFIG_NET_DEVLINK)",
             subject, action, DEVLINK_GENL_NAME);
  } else if (rc != 0) {
    snprintf(error, error_size,
             "%s: %s: cannot resolve the generic netlink family \"%s\": %s",
             subject, action, DEVLINK_GENL_NAME,
             errno_text(rc, text, sizeof(text)));
  }
  if (rc != 0) conn_close(c);
  return rc;
}

/* One devlink request about `w`: `put` adds attributes after the handle,
 * `on_message` sees each answer. */
static int devlink_call(const struct migd_devlink_what *w, uint8_t cmd,
                        int dump,
                        void (*put)(struct nlmsghdr *nlh, const void *arg),
                        const void *put_arg,
                        int (*on_message)(const struct nlmsghdr *, void *),
                        void *user, char *error, size_t error_size) {
  struct handle h;
  int rc = parse_handle(w->handle, &h, error, error_size);
  if (rc != 0) return rc;
  struct conn c;
  rc = conn_open(&c, w, error, error_size);
  if (rc != 0) return rc;
  struct nlmsghdr *nlh = put_request(
      &c, c.family, dump ? NLM_F_DUMP : NLM_F_ACK, cmd, DEVLINK_GENL_VERSION);
  mnl_attr_put_strz(nlh, DEVLINK_ATTR_BUS_NAME, h.bus);
  mnl_attr_put_strz(nlh, DEVLINK_ATTR_DEV_NAME, h.dev);
  if (put != NULL) put(nlh, put_arg);
  struct talk t = {.on_message = on_message, .user = user};
  rc = conn_talk(&c, nlh, &t);
  if (rc != 0) migd_devlink_failure_text(w, rc, t.extack, error, error_size);
  conn_close(&c);
  return rc;
}

/* ---- operations ---- */

static int info_cb(const struct nlmsghdr *nlh, void *user) {
  return migd_devlink_parse_info(nlh, user);
}

int migd_devlink_info_get(const char *handle, struct migd_devlink_info *out,
                          char *error, size_t error_size) {
  memset(out, 0, sizeof(*out));
  const struct migd_devlink_what w = {MIGD_DEVLINK_OP_INFO, handle, NULL, 0};
  return devlink_call(&w, DEVLINK_CMD_INFO_GET, 0, NULL, NULL, info_cb, out,
                      error, error_size);
}

/* Visits the ports of one handle in a dump of every port. */
struct port_visit {
  const char *handle;
  void (*visit)(const struct migd_devlink_port *port, void *data);
  void *data;
};

static int port_cb(const struct nlmsghdr *nlh, void *user) {
  struct port_visit *v = user;
  struct migd_devlink_port port;
  char handle[MIGD_DEVLINK_NAME_MAX + MIGD_DEVLINK_VALUE_MAX + 2];
  const int rc = migd_devlink_parse_port(nlh, &port, handle, sizeof(handle));
  if (rc != 0) return rc;
  /* 6.12 dumps only the handle's ports; 6.1 ignores it and dumps all. */
  if (strcmp(handle, v->handle) == 0) v->visit(&port, v->data);
  return 0;
}

static int visit_ports(const struct migd_devlink_what *w,
                       void (*visit)(const struct migd_devlink_port *, void *),
                       void *data, char *error, size_t error_size) {
  struct port_visit v = {w->handle, visit, data};
  return devlink_call(w, DEVLINK_CMD_PORT_GET, 1, NULL, NULL, port_cb, &v,
                      error, error_size);
}

struct port_array {
  struct migd_devlink_port *ports;
  size_t capacity;
  size_t count;
};

static void collect_port(const struct migd_devlink_port *port, void *data) {
  struct port_array *a = data;
  if (a->count < a->capacity) a->ports[a->count] = *port;
  ++a->count;
}

int migd_devlink_port_list(const char *handle, struct migd_devlink_port *ports,
                           size_t capacity, size_t *count, char *error,
                           size_t error_size) {
  const struct migd_devlink_what w = {MIGD_DEVLINK_OP_PORTS, handle, NULL, 0};
  struct port_array a = {ports, capacity, 0};
  *count = 0;
  const int rc = visit_ports(&w, collect_port, &a, error, error_size);
  if (rc != 0) return rc;
  *count = a.count;
  if (a.count > capacity) {
    snprintf(error, error_size,
             "devlink %s: cannot list ports: it has %zu, room for %zu", handle,
             a.count, capacity);
    return -ENOSPC;
  }
  return 0;
}

struct vf_search {
  int vf;
  int found;
  struct migd_devlink_port port;
  size_t vf_ports;    /* pcivf ports on controller 0 */
  int min_vf, max_vf; /* their VF numbers */
};

static void match_vf(const struct migd_devlink_port *port, void *data) {
  struct vf_search *s = data;
  if (port->flavour != DEVLINK_PORT_FLAVOUR_PCI_VF || port->external ||
      port->controller > 0 || port->vf < 0) {
    return;
  }
  if (s->vf_ports == 0 || port->vf < s->min_vf) s->min_vf = port->vf;
  if (s->vf_ports == 0 || port->vf > s->max_vf) s->max_vf = port->vf;
  ++s->vf_ports;
  if (port->vf == s->vf && !s->found) {
    s->found = 1;
    s->port = *port;
  }
}

int migd_devlink_find_vf_port(const char *handle, int vf,
                              struct migd_devlink_port *out, char *error,
                              size_t error_size) {
  const struct migd_devlink_what w = {MIGD_DEVLINK_OP_PORTS, handle, NULL, 0};
  struct vf_search s = {.vf = vf};
  const int rc = visit_ports(&w, match_vf, &s, error, error_size);
  if (rc != 0) return rc;
  if (s.found) {
    *out = s.port;
    return 0;
  }
  if (s.vf_ports == 0) {
    snprintf(error, error_size,
             "devlink %s: no pcivf port for VF %d: it has no VF ports (they "
             "exist while VFs are enabled and the eswitch is in switchdev "
             "mode: migd-devlink eswitch %s switchdev)",
             handle, vf, handle);
  } else {
    snprintf(error, error_size,
             "devlink %s: no pcivf port for VF %d (it has %zu VF ports, VF "
             "%d to %d)",
             handle, vf, s.vf_ports, s.min_vf, s.max_vf);
  }
  return -ENOENT;
}

static int eswitch_cb(const struct nlmsghdr *nlh, void *user) {
  int *mode = user;
  if (!is_devlink_message(nlh, DEVLINK_CMD_ESWITCH_GET,
                          DEVLINK_CMD_ESWITCH_GET)) {
    return -EPROTO;
  }
  const struct nlattr *attr;
  mnl_attr_for_each(attr, nlh, GENL_HDRLEN) {
    if (mnl_attr_get_type(attr) == DEVLINK_ATTR_ESWITCH_MODE &&
        mnl_attr_get_payload_len(attr) >= sizeof(uint16_t)) {
      *mode = mnl_attr_get_u16(attr);
    }
  }
  return 0;
}

int migd_devlink_eswitch_get(const char *handle, int *mode, char *error,
                             size_t error_size) {
  const struct migd_devlink_what w = {MIGD_DEVLINK_OP_ESWITCH_GET, handle, NULL,
                                      0};
  *mode = -1;
  int rc = devlink_call(&w, DEVLINK_CMD_ESWITCH_GET, 0, NULL, NULL, eswitch_cb,
                        mode, error, error_size);
  if (rc == 0 && *mode < 0) {
    rc = -EPROTO;
    snprintf(error, error_size,
             "devlink %s: cannot read the eswitch mode: the answer has none",
             handle);
  }
  return rc;
}

static void put_eswitch_mode(struct nlmsghdr *nlh, const void *arg) {
  mnl_attr_put_u16(nlh, DEVLINK_ATTR_ESWITCH_MODE,
                   (uint16_t) * (const int *)arg);
}

int migd_devlink_eswitch_set(const char *handle, int mode, char *error,
                             size_t error_size) {
  const struct migd_devlink_what w = {MIGD_DEVLINK_OP_ESWITCH_SET, handle, NULL,
                                      mode};
  return devlink_call(&w, DEVLINK_CMD_ESWITCH_SET, 0, put_eswitch_mode, &mode,
                      NULL, NULL, error, error_size);
}

struct migratable_arg {
  uint32_t index;
  int enable;
};

static void put_migratable(struct nlmsghdr *nlh, const void *arg) {
  const struct migratable_arg *m = arg;
  migd_devlink_put_migratable(nlh, m->index, m->enable);
}

int migd_devlink_port_set_migratable(const char *handle,
                                     const struct migd_devlink_port *port,
                                     int enable, char *error,
                                     size_t error_size) {
  const struct migd_devlink_what w = {MIGD_DEVLINK_OP_SET_MIGRATABLE, handle,
                                      port, enable != 0};
  const struct migratable_arg arg = {port->index, enable != 0};
  return devlink_call(&w, DEVLINK_CMD_PORT_SET, 0, put_migratable, &arg, NULL,
                      NULL, error, error_size);
}
