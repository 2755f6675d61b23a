// The devlink client's message layer on netlink messages built with
// libmnl as the kernel builds them (net/devlink/dev.c, port.c;
// netlink_ack), its requests as the kernel's strict parser reads them, and
// its error texts. The socket path runs once against this host's kernel.

#include "vendor-plugins/mlx5/devlink.h"

#include <libmnl/libmnl.h>
#include <linux/devlink.h>
#include <linux/genetlink.h>
#include <linux/netlink.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace {

// DEVLINK_PORT_FN_ATTR_CAPS and DEVLINK_PORT_FN_CAP_MIGRATABLE as the
// kernel's include/uapi/linux/devlink.h (6.2+) defines them; the installed
// header may predate them.
constexpr uint16_t kPortFnAttrCaps = DEVLINK_PORT_FN_ATTR_OPSTATE + 1;
constexpr uint32_t kCapMigratable = 1u << 1;

constexpr uint16_t kDevlinkFamily = 0x15;  // any dynamic genetlink id

// A message buffer, aligned as netlink wants.
struct Message {
  alignas(NLMSG_ALIGNTO) char buffer[4096] = {};
  nlmsghdr* nlh = nullptr;

  // A devlink message `cmd` about `bus`/`dev`.
  Message(uint8_t cmd, const char* bus, const char* dev) {
    nlh = mnl_nlmsg_put_header(buffer);
    nlh->nlmsg_type = kDevlinkFamily;
    auto* genl = static_cast<genlmsghdr*>(
        mnl_nlmsg_put_extra_header(nlh, sizeof(genlmsghdr)));
    genl->cmd = cmd;
    genl->version = DEVLINK_GENL_VERSION;
    if (bus != nullptr) mnl_attr_put_strz(nlh, DEVLINK_ATTR_BUS_NAME, bus);
    if (dev != nullptr) mnl_attr_put_strz(nlh, DEVLINK_ATTR_DEV_NAME, dev);
  }

  void PutVersion(uint16_t kind, const char* name, const char* value) {
    nlattr* nest = mnl_attr_nest_start(nlh, kind);
    mnl_attr_put_strz(nlh, DEVLINK_ATTR_INFO_VERSION_NAME, name);
    mnl_attr_put_strz(nlh, DEVLINK_ATTR_INFO_VERSION_VALUE, value);
    mnl_attr_nest_end(nlh, nest);
  }
};

// What mlx5_core's mlx5_devlink_info_get and devlink's core put in a
// DEVLINK_CMD_INFO_GET reply for a ConnectX-7 PF (values of the recorded
// testdata/netdev-2025-03-18-pirko.txt).
Message Mlx5InfoReply() {
  Message m(DEVLINK_CMD_INFO_GET, "pci", "0000:08:00.0");
  mnl_attr_put_strz(m.nlh, DEVLINK_ATTR_INFO_DRIVER_NAME, "mlx5_core");
  mnl_attr_put_strz(m.nlh, DEVLINK_ATTR_INFO_SERIAL_NUMBER,
                    "e4397f872caeed218000846daa7d2f49");
  mnl_attr_put_strz(m.nlh, DEVLINK_ATTR_INFO_BOARD_SERIAL_NUMBER,
                    "MT2314XZ00YA");
  m.PutVersion(DEVLINK_ATTR_INFO_VERSION_FIXED, "fw.psid", "MT_0000000894");
  m.PutVersion(DEVLINK_ATTR_INFO_VERSION_RUNNING, "fw.version", "28.41.1000");
  m.PutVersion(DEVLINK_ATTR_INFO_VERSION_RUNNING, "fw", "28.41.1000");
  m.PutVersion(DEVLINK_ATTR_INFO_VERSION_STORED, "fw.version", "28.41.1000");
  m.PutVersion(DEVLINK_ATTR_INFO_VERSION_STORED, "fw", "28.41.1000");
  return m;
}

TEST(ParseInfo, ReadsDriverSerialAndEveryVersionKind) {
  Message m = Mlx5InfoReply();
  migd_devlink_info info;
  ASSERT_EQ(migd_devlink_parse_info(m.nlh, &info), 0);
  EXPECT_STREQ(info.driver, "mlx5_core");
  EXPECT_STREQ(info.serial_number, "e4397f872caeed218000846daa7d2f49");
  ASSERT_EQ(info.fixed_count, 1u);
  EXPECT_STREQ(info.fixed[0].name, "fw.psid");
  EXPECT_STREQ(info.fixed[0].value, "MT_0000000894");
  ASSERT_EQ(info.running_count, 2u);
  EXPECT_STREQ(
      migd_devlink_version_find(info.running, info.running_count, "fw.version"),
      "28.41.1000");
  EXPECT_EQ(info.stored_count, 2u);
  EXPECT_EQ(migd_devlink_version_find(info.fixed, info.fixed_count, "fw"),
            nullptr);
}

TEST(ParseInfo, KeepsTheFirstVersionsWhenThereAreTooMany) {
  Message m(DEVLINK_CMD_INFO_GET, "netdevsim", "netdevsim10");
  for (int i = 0; i < MIGD_DEVLINK_MAX_VERSIONS + 3; ++i) {
    const std::string name = "v" + std::to_string(i);
    m.PutVersion(DEVLINK_ATTR_INFO_VERSION_RUNNING, name.c_str(), "1");
  }
  migd_devlink_info info;
  ASSERT_EQ(migd_devlink_parse_info(m.nlh, &info), 0);
  EXPECT_EQ(info.running_count, size_t{MIGD_DEVLINK_MAX_VERSIONS});
  EXPECT_STREQ(info.running[0].name, "v0");
}

TEST(ParseInfo, RejectsAnotherCommand) {
  Message m(DEVLINK_CMD_PORT_NEW, "pci", "0000:08:00.0");
  migd_devlink_info info;
  EXPECT_EQ(migd_devlink_parse_info(m.nlh, &info), -EPROTO);
}

TEST(ParsePort, ReadsAVfPortAsDevlinkNlPortAttrsPutPutsIt) {
  Message m(DEVLINK_CMD_PORT_NEW, "pci", "0000:3b:00.0");
  mnl_attr_put_u32(m.nlh, DEVLINK_ATTR_PORT_INDEX, 3);
  mnl_attr_put_u16(m.nlh, DEVLINK_ATTR_PORT_TYPE, DEVLINK_PORT_TYPE_ETH);
  mnl_attr_put_strz(m.nlh, DEVLINK_ATTR_PORT_NETDEV_NAME, "eth5");
  mnl_attr_put_u16(m.nlh, DEVLINK_ATTR_PORT_FLAVOUR,
                   DEVLINK_PORT_FLAVOUR_PCI_VF);
  mnl_attr_put_u32(m.nlh, DEVLINK_ATTR_PORT_CONTROLLER_NUMBER, 0);
  mnl_attr_put_u16(m.nlh, DEVLINK_ATTR_PORT_PCI_PF_NUMBER, 0);
  mnl_attr_put_u16(m.nlh, DEVLINK_ATTR_PORT_PCI_VF_NUMBER, 1);
  mnl_attr_put_u8(m.nlh, DEVLINK_ATTR_PORT_EXTERNAL, 0);
  migd_devlink_port port;
  char handle[128];
  ASSERT_EQ(migd_devlink_parse_port(m.nlh, &port, handle, sizeof(handle)), 0);
  EXPECT_STREQ(handle, "pci/0000:3b:00.0");
  EXPECT_EQ(port.index, 3u);
  EXPECT_EQ(port.flavour, DEVLINK_PORT_FLAVOUR_PCI_VF);
  EXPECT_STREQ(migd_devlink_flavour_name(port.flavour), "pcivf");
  EXPECT_EQ(port.pf, 0);
  EXPECT_EQ(port.vf, 1);
  EXPECT_EQ(port.sf, -1);
  EXPECT_EQ(port.controller, 0);
  EXPECT_EQ(port.external, 0);
  EXPECT_STREQ(port.netdev, "eth5");
}

TEST(ParsePort, APhysicalPortHasNoPfOrVf) {
  Message m(DEVLINK_CMD_PORT_NEW, "netdevsim", "netdevsim10");
  mnl_attr_put_u32(m.nlh, DEVLINK_ATTR_PORT_INDEX, 0);
  mnl_attr_put_u16(m.nlh, DEVLINK_ATTR_PORT_FLAVOUR,
                   DEVLINK_PORT_FLAVOUR_PHYSICAL);
  mnl_attr_put_u32(m.nlh, DEVLINK_ATTR_PORT_NUMBER, 1);
  migd_devlink_port port;
  char handle[128];
  ASSERT_EQ(migd_devlink_parse_port(m.nlh, &port, handle, sizeof(handle)), 0);
  EXPECT_STREQ(handle, "netdevsim/netdevsim10");
  EXPECT_STREQ(migd_devlink_flavour_name(port.flavour), "physical");
  EXPECT_EQ(port.pf, -1);
  EXPECT_EQ(port.vf, -1);
  EXPECT_EQ(port.controller, -1);
  EXPECT_STREQ(port.netdev, "");
}

TEST(ParsePort, ReadsLinux61sDumpWhichSaysDevlinkCmdNew) {
  // devlink_nl_cmd_port_get_dumpit in 6.1 fills its answers with
  // DEVLINK_CMD_NEW (seen in the VM tier's 6.1 guest).
  Message m(DEVLINK_CMD_NEW, "netdevsim", "netdevsim10");
  mnl_attr_put_u32(m.nlh, DEVLINK_ATTR_PORT_INDEX, 129);
  mnl_attr_put_u16(m.nlh, DEVLINK_ATTR_PORT_FLAVOUR,
                   DEVLINK_PORT_FLAVOUR_PCI_VF);
  mnl_attr_put_u16(m.nlh, DEVLINK_ATTR_PORT_PCI_VF_NUMBER, 1);
  migd_devlink_port port;
  char handle[128];
  ASSERT_EQ(migd_devlink_parse_port(m.nlh, &port, handle, sizeof(handle)), 0);
  EXPECT_EQ(port.index, 129u);
  EXPECT_EQ(port.vf, 1);
}

TEST(ParsePort, RejectsAnInfoReply) {
  Message m = Mlx5InfoReply();
  migd_devlink_port port;
  char handle[128];
  EXPECT_EQ(migd_devlink_parse_port(m.nlh, &port, handle, sizeof(handle)),
            -EPROTO);
}

TEST(ParsePort, AMessageWithoutAPortIndexIsNotAPort) {
  Message m(DEVLINK_CMD_PORT_NEW, "pci", "0000:3b:00.0");
  migd_devlink_port port;
  char handle[128];
  EXPECT_EQ(migd_devlink_parse_port(m.nlh, &port, handle, sizeof(handle)),
            -EPROTO);
}

TEST(FlavourNames, AreIproute2s) {
  EXPECT_STREQ(migd_devlink_flavour_name(DEVLINK_PORT_FLAVOUR_PCI_PF), "pcipf");
  EXPECT_STREQ(migd_devlink_flavour_name(DEVLINK_PORT_FLAVOUR_PCI_SF), "pcisf");
  EXPECT_STREQ(migd_devlink_flavour_name(DEVLINK_PORT_FLAVOUR_CPU), "cpu");
  EXPECT_STREQ(migd_devlink_flavour_name(DEVLINK_PORT_FLAVOUR_DSA), "dsa");
  EXPECT_STREQ(migd_devlink_flavour_name(DEVLINK_PORT_FLAVOUR_VIRTUAL),
               "virtual");
  EXPECT_STREQ(migd_devlink_flavour_name(DEVLINK_PORT_FLAVOUR_UNUSED),
               "unused");
  EXPECT_STREQ(migd_devlink_flavour_name(42), "unknown");
}

// An NLMSG_ERROR as netlink_ack builds it for a request of `request_payload`
// bytes, with the extended ack message `text`.
struct ErrorMessage {
  alignas(NLMSG_ALIGNTO) char buffer[1024] = {};
  nlmsghdr* nlh = nullptr;

  ErrorMessage(int error, const char* text, bool capped,
               size_t request_payload) {
    nlh = mnl_nlmsg_put_header(buffer);
    nlh->nlmsg_type = NLMSG_ERROR;
    nlh->nlmsg_flags = capped ? NLM_F_CAPPED : 0;
    auto* err = static_cast<nlmsgerr*>(
        mnl_nlmsg_put_extra_header(nlh, sizeof(nlmsgerr)));
    err->error = error;
    err->msg.nlmsg_len =
        static_cast<uint32_t>(sizeof(nlmsghdr) + request_payload);
    err->msg.nlmsg_type = kDevlinkFamily;
    if (!capped) {
      // The echoed request: '#' bytes a parser must skip.
      std::memset(mnl_nlmsg_put_extra_header(nlh, request_payload), '#',
                  request_payload);
    }
    if (text != nullptr) {
      nlh->nlmsg_flags |= NLM_F_ACK_TLVS;
      mnl_attr_put_strz(nlh, NLMSGERR_ATTR_MSG, text);
      mnl_attr_put_u32(nlh, NLMSGERR_ATTR_OFFS, 40);
    }
  }
};

TEST(ParseError, ReadsTheErrnoAndTheExtendedAckOfACappedAck) {
  ErrorMessage m(-EOPNOTSUPP,
                 "Port doesn't support migratable function attribute", true,
                 40);
  int err = 0;
  char extack[256];
  ASSERT_EQ(migd_devlink_parse_error(m.nlh, &err, extack, sizeof(extack)), 0);
  EXPECT_EQ(err, -EOPNOTSUPP);
  EXPECT_STREQ(extack, "Port doesn't support migratable function attribute");
}

TEST(ParseError, SkipsTheEchoedRequestOfAnUncappedAck) {
  ErrorMessage m(-EINVAL, "Fail to parse port function attributes", false, 44);
  int err = 0;
  char extack[256];
  ASSERT_EQ(migd_devlink_parse_error(m.nlh, &err, extack, sizeof(extack)), 0);
  EXPECT_EQ(err, -EINVAL);
  EXPECT_STREQ(extack, "Fail to parse port function attributes");
}

TEST(ParseError, AnAckWithoutTlvsHasNoMessage) {
  ErrorMessage m(-ENODEV, nullptr, true, 20);
  int err = 0;
  char extack[256] = "stale";
  ASSERT_EQ(migd_devlink_parse_error(m.nlh, &err, extack, sizeof(extack)), 0);
  EXPECT_EQ(err, -ENODEV);
  EXPECT_STREQ(extack, "");
}

TEST(MigratableRequest, IsANestedBitfieldTheStrictParserAccepts) {
  for (int enable : {1, 0}) {
    Message m(DEVLINK_CMD_PORT_SET, "pci", "0000:3b:00.0");
    migd_devlink_put_migratable(m.nlh, 3, enable);
    bool saw_index = false, saw_caps = false;
    for (const nlattr* attr = static_cast<const nlattr*>(
             mnl_nlmsg_get_payload_offset(m.nlh, GENL_HDRLEN));
         mnl_attr_ok(attr,
                     static_cast<int>(static_cast<const char*>(
                                          mnl_nlmsg_get_payload_tail(m.nlh)) -
                                      reinterpret_cast<const char*>(attr)));
         attr = mnl_attr_next(attr)) {
      if (mnl_attr_get_type(attr) == DEVLINK_ATTR_PORT_INDEX) {
        EXPECT_EQ(mnl_attr_get_u32(attr), 3u);
        saw_index = true;
      }
      if (mnl_attr_get_type(attr) != DEVLINK_ATTR_PORT_FUNCTION) continue;
      // nla_parse_nested refuses a nest without NLA_F_NESTED.
      EXPECT_NE(attr->nla_type & NLA_F_NESTED, 0);
      for (const nlattr* inner =
               static_cast<const nlattr*>(mnl_attr_get_payload(attr));
           mnl_attr_ok(
               inner, static_cast<int>(
                          static_cast<const char*>(mnl_attr_get_payload(attr)) +
                          mnl_attr_get_payload_len(attr) -
                          reinterpret_cast<const char*>(inner)));
           inner = mnl_attr_next(inner)) {
        ASSERT_EQ(mnl_attr_get_type(inner), kPortFnAttrCaps);
        ASSERT_EQ(mnl_attr_get_payload_len(inner), sizeof(nla_bitfield32));
        nla_bitfield32 caps;
        std::memcpy(&caps, mnl_attr_get_payload(inner), sizeof(caps));
        EXPECT_EQ(caps.selector, kCapMigratable);
        EXPECT_EQ(caps.value, enable ? kCapMigratable : 0u);
        saw_caps = true;
      }
    }
    EXPECT_TRUE(saw_index);
    EXPECT_TRUE(saw_caps);
  }
}

migd_devlink_port VfPort(uint32_t index, int vf) {
  migd_devlink_port p;
  std::memset(&p, 0, sizeof(p));
  p.index = index;
  p.flavour = DEVLINK_PORT_FLAVOUR_PCI_VF;
  p.pf = 0;
  p.vf = vf;
  p.sf = -1;
  p.controller = 0;
  return p;
}

std::string FailureText(const migd_devlink_what& what, int err,
                        const char* extack) {
  char text[1024];
  migd_devlink_failure_text(&what, err, extack, text, sizeof(text));
  return text;
}

TEST(FailureText, MigratableUnsupportedReadsClearly) {
  const migd_devlink_port port = VfPort(3, 0);
  const migd_devlink_what what = {MIGD_DEVLINK_OP_SET_MIGRATABLE,
                                  "pci/0000:3b:00.0", &port, 1};
  EXPECT_EQ(FailureText(what, -EOPNOTSUPP, "Device doesn't support migration"),
            "devlink pci/0000:3b:00.0 port 3 (pcivf 0): the port function's "
            "migratable capability cannot be set (EOPNOTSUPP: Device doesn't "
            "support migration): the PF's driver or firmware does not support "
            "it");
}

TEST(FailureText, WithoutAnExtackItUsesTheErrnosText) {
  const migd_devlink_port port = VfPort(130, 2);
  const migd_devlink_what what = {MIGD_DEVLINK_OP_SET_MIGRATABLE,
                                  "netdevsim/netdevsim10", &port, 0};
  const std::string text = FailureText(what, -EOPNOTSUPP, nullptr);
  EXPECT_TRUE(absl::StartsWith(
      text,
      "devlink netdevsim/netdevsim10 port 130 (pcivf 2): the port "
      "function's migratable capability cannot be cleared (EOPNOTSUPP: "))
      << text;
  EXPECT_TRUE(absl::StrContains(text, strerror(EOPNOTSUPP))) << text;
}

TEST(FailureText, AnOlderKernelsEinvalSaysWhy) {
  const migd_devlink_port port = VfPort(128, 0);
  const migd_devlink_what what = {MIGD_DEVLINK_OP_SET_MIGRATABLE,
                                  "netdevsim/netdevsim10", &port, 1};
  const std::string text =
      FailureText(what, -EINVAL, "Fail to parse port function attributes");
  EXPECT_TRUE(absl::StrContains(
      text, "(EINVAL: Fail to parse port function attributes)"))
      << text;
  EXPECT_TRUE(absl::StrContains(text, "kernels before 6.2")) << text;
}

TEST(FailureText, AMissingInstanceIsNamed) {
  const migd_devlink_what info = {MIGD_DEVLINK_OP_INFO, "pci/0000:3b:00.0",
                                  nullptr, 0};
  EXPECT_TRUE(absl::StrContains(FailureText(info, -ENODEV, nullptr),
                                "devlink pci/0000:3b:00.0: cannot read device "
                                "info: no devlink instance pci/0000:3b:00.0 "
                                "(ENODEV: "));
  const migd_devlink_port port = VfPort(9, 7);
  const migd_devlink_what set = {MIGD_DEVLINK_OP_SET_MIGRATABLE,
                                 "pci/0000:3b:00.0", &port, 1};
  EXPECT_TRUE(absl::StrContains(
      FailureText(set, -ENODEV, nullptr),
      "no devlink instance pci/0000:3b:00.0, or no port 9 on it"));
}

TEST(FailureText, NamesTheEswitchModeAndPermission) {
  const migd_devlink_what what = {MIGD_DEVLINK_OP_ESWITCH_SET,
                                  "pci/0000:3b:00.0", nullptr,
                                  MIGD_DEVLINK_ESWITCH_SWITCHDEV};
  const std::string text = FailureText(what, -EPERM, nullptr);
  EXPECT_TRUE(absl::StrContains(text,
                                "cannot set the eswitch mode to "
                                "switchdev (EPERM: "))
      << text;
  EXPECT_TRUE(absl::StrContains(text, "CAP_NET_ADMIN")) << text;
  EXPECT_TRUE(absl::StrContains(FailureText(what, -ETIMEDOUT, nullptr),
                                "no answer from the kernel within 2000 ms"));
}

TEST(Client, RefusesWhatIsNotAHandle) {
  char error[512];
  migd_devlink_info info;
  for (const char* bad : {"pci", "/0000:3b:00.0", "pci/", "pci/a/b", ""}) {
    EXPECT_EQ(migd_devlink_info_get(bad, &info, error, sizeof(error)), -EINVAL)
        << bad;
    EXPECT_TRUE(absl::StrContains(error, "is not a devlink handle")) << error;
  }
}

TEST(Client, OnThisHostAnAbsentDeviceFailsNamingHandleAndOperation) {
  // This host has no such PCI device; its kernel may have no devlink at all.
  char error[1024] = "";
  migd_devlink_info info;
  const int rc =
      migd_devlink_info_get("pci/0000:ff:1f.7", &info, error, sizeof(error));
  EXPECT_TRUE(rc == -ENOENT || rc == -ENODEV) << rc << ": " << error;
  EXPECT_TRUE(absl::StartsWith(
      error, "devlink pci/0000:ff:1f.7: cannot read device info: "))
      << error;
  EXPECT_TRUE(absl::StrContains(error, "no devlink family") ||
              absl::StrContains(error, "no devlink instance pci/0000:ff:1f.7"))
      << error;
}

}  // namespace
