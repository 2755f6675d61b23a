// The libvirt hook as libvirt runs it: the migd-libvirt-hook binary with
// libvirt's arguments and the domain's definition on stdin, its stdout read
// back, against a real agent (mutual TLS, the operator's certificate in the
// hook's configuration file) whose host is a fake sysfs tree
// (--sysfs_root; migd/host/fake_kernel.h builds it). The tree's two
// ConnectX VFs already sit on vfio-pci, the driver the domain's metadata
// asks for, so the agent allocates them without writing to the tree (no
// kernel answers its writes); binding for real is the VM tier's.
//
// Shown: `migrate begin` points every hostdev the metadata names at a
// device the agent allocated (all at once), and the metadata with it;
// `prepare begin` keeps them on their driver; `release end` gives them back,
// once; a domain asking for more devices than the host has is refused with
// the reason on stderr and nothing left allocated, and so is one whose agent
// does not answer; a definition without migd metadata passes unchanged (and
// operations the hook has nothing to do for pass); one libvirt's parser
// refuses is refused. The definitions are libvirt's own: defined on the
// library's test driver and read back, as libvirtd hands them to a hook.

#include <libvirt/libvirt.h>
#include <sys/utsname.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "e2e/testing/agent_process.h"
#include "e2e/testing/agent_test.h"
#include "e2e/testing/run_pki.h"
#include "e2e/testing/shell.h"
#include "e2e/testing/status_macros.h"
#include "gtest/gtest.h"
#include "migd/host/fake_kernel.h"
#include "migd/libvirt/domain_xml.h"

namespace migd::e2e {
namespace {

using host::testing::FakeKernel;
using host::testing::FakePciDevice;

// --hook_binary=PATH.
std::string& HookPath() {
  static auto* path = new std::string();
  return *path;
}

std::string Tmp() {
  const char* d = getenv("TEST_TMPDIR");
  return d != nullptr ? d : "/tmp";
}

constexpr char kUuid[] = "5f2a3c1e-0b7d-4c8e-9a4f-1d2e3f405060";

// The definition as libvirt itself writes it: `xml` defined on the
// library's test driver and read back (inactive), as libvirtd hands a hook
// its domain's XML.
std::string AsLibvirtWritesIt(const std::string& xml) {
  virConnectPtr conn = virConnectOpen("test:///default");
  if (conn == nullptr) return "";
  std::string out;
  if (virDomainPtr d = virDomainDefineXML(conn, xml.c_str()); d != nullptr) {
    if (char* text = virDomainGetXMLDesc(d, VIR_DOMAIN_XML_INACTIVE)) {
      out = text;
      free(text);
    }
    virDomainUndefine(d);
    virDomainFree(d);
  }
  virConnectClose(conn);
  return out;
}

// A domain with `sources` as PCI hostdevs, each named by migd's metadata
// (class pci:15b3:101e on vfio_pci) when `metadata`, as libvirt writes it.
std::string Domain(const std::vector<std::string>& sources,
                   bool metadata = true);

// The same, as written here (libvirt's test driver may refuse it).
std::string HandWritten(const std::vector<std::string>& sources,
                        bool metadata = true) {
  std::string devices, entries;
  for (const std::string& s : sources) {
    unsigned d = 0, b = 0, sl = 0, f = 0;
    sscanf(s.c_str(), "%x:%x:%x.%x", &d, &b, &sl, &f);
    absl::StrAppend(&devices,
                    "    <hostdev mode='subsystem' type='pci' managed='no'>\n"
                    "      <source><address domain='0x",
                    absl::Hex(d, absl::kZeroPad4), "' bus='0x",
                    absl::Hex(b, absl::kZeroPad2), "' slot='0x",
                    absl::Hex(sl, absl::kZeroPad2), "' function='0x",
                    absl::Hex(f), "'/></source>\n    </hostdev>\n");
    absl::StrAppend(&entries, "      <migd:device source='", s,
                    "' class='pci:15b3:101e' driver='vfio_pci'/>\n");
  }
  return absl::StrCat(
      "<domain type='kvm'>\n  <name>vm1</name>\n  <uuid>", kUuid, "</uuid>\n",
      metadata ? absl::StrCat("  <metadata>\n    <migd:devices "
                              "xmlns:migd='https://migd.dev/libvirt/1'>\n",
                              entries, "    </migd:devices>\n  </metadata>\n")
               : "",
      "  <memory unit='KiB'>524288</memory>\n"
      "  <os><type arch='x86_64' machine='q35'>hvm</type></os>\n"
      "  <devices>\n",
      devices, "  </devices>\n</domain>\n");
}

std::string Domain(const std::vector<std::string>& sources, bool metadata) {
  return AsLibvirtWritesIt(HandWritten(sources, metadata));
}

class HookTest : public AgentTest {
 protected:
  void SetUp() override {
    ASSERT_FALSE(HookPath().empty()) << "no --hook_binary";
    kernel_.AddDriver({"pci", "vfio-pci", "vfio_pci", {}, "vfio_pci_core"});
    kernel_.AddDriver({"pci", "mlx5_core", "mlx5_core", {"15b3:101e"}, ""});
    int group = 21;
    for (const char* bdf : {"0000:5e:01.1", "0000:5e:01.2"}) {
      FakePciDevice vf;
      vf.bdf = bdf;
      vf.group = group;
      vf.driver = "vfio-pci";
      kernel_.AddPciDevice(vf);
      kernel_.WriteFile(absl::StrCat("/dev/vfio/", group++), "");
    }
    struct utsname u;
    ASSERT_EQ(uname(&u), 0);
    kernel_.WriteFile(
        absl::StrCat("/lib/modules/", u.release, "/modules.alias"),
        "alias vfio_pci:v*d*sv*sd*bc*sc*i* vfio_pci\n");
    before_ = kernel_.Snapshot();
    agent_ = StartAgent("agent", {absl::StrCat("--sysfs_root=", kernel_.root()),
                                  "--emulated_devices=emu0"});
    ASSERT_NE(agent_, nullptr);
    ASSERT_OK_AND_ASSIGN(RunPki * pki, RunPki::Get());
    ASSERT_OK_AND_ASSIGN(security::TlsFiles op, pki->Files("operator"));
    config_ = absl::StrCat(Tmp(), "/libvirt-hook.conf");
    log_ = absl::StrCat(Tmp(), "/hook.log");
    std::ofstream(config_) << "# as /etc/migd/libvirt-hook.conf\n"
                           << "--agent=" << agent_->address() << "\n"
                           << "--agent_identity=" << agent_->identity() << "\n"
                           << "--tls_cert=" << op.cert << "\n"
                           << "--tls_key=" << op.key << "\n"
                           << "--tls_ca=" << op.ca << "\n"
                           << "--log_file=" << log_ << "\n"
                           << "--timeout_seconds=30\n";
  }

  // The hook as libvirt runs it: stdout in `out`, stderr in `err`.
  int Hook(const std::string& op, const std::string& sub,
           const std::string& definition, std::string* out, std::string* err) {
    const std::string in = absl::StrCat(Tmp(), "/definition.xml");
    const std::string o = absl::StrCat(Tmp(), "/hook.out");
    const std::string e = absl::StrCat(Tmp(), "/hook.err");
    std::ofstream(in) << definition;
    // A subshell of its own: RunShell joins stderr to stdout after it.
    CommandResult r = RunShell(absl::StrCat(
        "(MIGD_HOOK_CONFIG=", ShellQuote(config_), " ", ShellQuote(HookPath()),
        " vm1 ", op, " ", sub, " - <", ShellQuote(in), " >", ShellQuote(o),
        " 2>", ShellQuote(e), ")"));
    *out = ReadFile(o);
    *err = ReadFile(e);
    return r.exit_code;
  }

  static std::string ReadFile(const std::string& path) {
    std::ifstream f(path);
    return std::string((std::istreambuf_iterator<char>(f)),
                       std::istreambuf_iterator<char>());
  }

  FakeKernel kernel_;
  std::map<std::string, std::string> before_;
  AgentProcess* agent_ = nullptr;
  std::string config_;
  std::string log_;
};

TEST_F(HookTest, MigrateBeginPointsTheDefinitionAtTheDevicesItAllocated) {
  ASSERT_TRUE(absl::StrContains(Domain({"0000:3b:02.0"}), "migd:device"))
      << "libvirt's test driver dropped migd's metadata: "
      << Domain({"0000:3b:02.0"});
  std::string out, err;
  // The source host's addresses; the second is where one of this host's
  // VFs is, which must not confuse the rewrite.
  const std::string in = Domain({"0000:3b:02.0", "0000:5e:01.1"});
  ASSERT_EQ(Hook("migrate", "begin", in, &out, &err), 0) << err;
  absl::StatusOr<libvirt::DomainXml> xml = libvirt::DomainXml::Parse(out);
  ASSERT_TRUE(xml.ok()) << xml.status() << "\n" << out;
  std::set<std::string> sources, metadata;
  for (const libvirt::Hostdev& h : xml->hostdevs()) sources.insert(h.source);
  for (const libvirt::MigdDevice& d : xml->migd_devices()) {
    metadata.insert(d.source);
  }
  const std::set<std::string> vfs = {"0000:5e:01.1", "0000:5e:01.2"};
  EXPECT_EQ(sources, vfs) << out;
  EXPECT_EQ(metadata, vfs) << out;
  EXPECT_TRUE(absl::StrContains(ReadFile(log_), "domain vm1: allocated"))
      << ReadFile(log_);

  // Again (libvirt may run it twice): the same devices.
  std::string again;
  ASSERT_EQ(Hook("migrate", "begin", in, &again, &err), 0) << err;
  absl::StatusOr<libvirt::DomainXml> xml2 = libvirt::DomainXml::Parse(again);
  ASSERT_TRUE(xml2.ok()) << xml2.status();
  for (size_t i = 0; i < xml->hostdevs().size(); ++i) {
    EXPECT_EQ(xml2->hostdevs()[i].source, xml->hostdevs()[i].source);
  }

  // QEMU is about to start: the devices are on their driver already.
  std::string none;
  EXPECT_EQ(Hook("prepare", "begin", out, &none, &err), 0) << err;
  EXPECT_EQ(none, "");

  // The domain stops: what it held is given back, once.
  EXPECT_EQ(Hook("release", "end", out, &none, &err), 0) << err;
  const std::string log = ReadFile(log_);
  EXPECT_TRUE(absl::StrContains(log, "domain vm1: released")) << log;
  EXPECT_TRUE(absl::StrContains(log, "0000:5e:01.2")) << log;
  EXPECT_EQ(Hook("stopped", "end", out, &none, &err), 0) << err;
  const std::string after = ReadFile(log_);
  EXPECT_TRUE(absl::StrContains(after, "domain vm1: stopped end -")) << after;
  EXPECT_EQ(after.find("released", log.size()), std::string::npos)
      << "a second release released something: " << after;
  EXPECT_EQ(kernel_.Snapshot(), before_);
}

TEST_F(HookTest, MoreDevicesThanTheHostHasIsRefusedAndNothingStaysAllocated) {
  std::string out, err;
  EXPECT_EQ(Hook("migrate", "begin",
                 Domain({"0000:3b:02.0", "0000:3b:02.1", "0000:3b:02.2"}), &out,
                 &err),
            1);
  EXPECT_EQ(out, "");
  EXPECT_TRUE(absl::StartsWith(err, "migd: domain vm1: cannot allocate"))
      << err;
  EXPECT_TRUE(absl::StrContains(err, "15b3:101e")) << err;
  // Nothing held: a domain with the two devices gets both.
  ASSERT_EQ(Hook("migrate", "begin", Domain({"0000:3b:02.0", "0000:3b:02.1"}),
                 &out, &err),
            0)
      << err;
  std::string none;
  EXPECT_EQ(Hook("release", "end", out, &none, &err), 0) << err;
  EXPECT_EQ(kernel_.Snapshot(), before_);
}

TEST_F(HookTest, AnAgentThatDoesNotAnswerRefusesTheMigrationNamingIt) {
  // A port nothing listens on.
  std::string config = ReadFile(config_);
  const std::string agent = absl::StrCat("--agent=", agent_->address());
  config.replace(config.find(agent), agent.size(), "--agent=127.0.0.1:1");
  config += "--timeout_seconds=3\n";
  std::ofstream(config_) << config;
  std::string out, err;
  EXPECT_EQ(Hook("migrate", "begin", Domain({"0000:3b:02.0"}), &out, &err), 1);
  EXPECT_EQ(out, "");
  EXPECT_TRUE(absl::StartsWith(err, "migd: domain vm1: cannot allocate"))
      << err;
  EXPECT_TRUE(absl::StrContains(err, "agent 127.0.0.1:1: AllocateDevices"))
      << err;
  EXPECT_EQ(kernel_.Snapshot(), before_);
}

TEST_F(HookTest, ADefinitionWithoutMigdMetadataPassesUnchanged) {
  std::string out, err;
  EXPECT_EQ(
      Hook("migrate", "begin", Domain({"0000:3b:02.0"}, false), &out, &err), 0)
      << err;
  EXPECT_EQ(out, "");  // libvirt keeps its definition
  EXPECT_TRUE(absl::StrContains(ReadFile(log_), "no migd metadata"));
  // Operations the hook has nothing to do for.
  EXPECT_EQ(Hook("started", "begin", Domain({"0000:3b:02.0"}), &out, &err), 0);
  EXPECT_EQ(out, "");
}

TEST_F(HookTest, ADefinitionLibvirtRefusesIsRefusedNamingLibvirtsReason) {
  std::string bad = HandWritten({"0000:3b:02.0"});
  bad.replace(bad.find("<memory"), 0, "<vcpu>many</vcpu>\n  ");
  std::string out, err;
  EXPECT_EQ(Hook("migrate", "begin", bad, &out, &err), 1);
  EXPECT_EQ(out, "");
  EXPECT_TRUE(absl::StrContains(err, "libvirt does not accept the definition"))
      << err;
  EXPECT_EQ(Hook("migrate", "begin", "<domain>", &out, &err), 1);
  EXPECT_TRUE(absl::StrContains(err, "not XML")) << err;
  EXPECT_EQ(kernel_.Snapshot(), before_);
}

}  // namespace
}  // namespace migd::e2e

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (absl::ConsumePrefix(&arg, "--hook_binary=")) {
      migd::e2e::HookPath() = std::string(arg);
    }
  }
  return RUN_ALL_TESTS();
}
