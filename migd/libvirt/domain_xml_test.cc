#include "migd/libvirt/domain_xml.h"

#include <cstdlib>
#include <fstream>
#include <string>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "migd/libvirt/libvirt_check.h"

namespace migd::libvirt {
namespace {

// A definition as libvirt writes it for a VM with a ConnectX VF and an mdev,
// with migd's metadata, another driver's namespace and a comment.
constexpr char kDomain[] =
    R"(<domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>vm1</name>
  <uuid>5F2A3C1E-0B7D-4C8E-9A4F-1D2E3F405060</uuid>
  <metadata>
    <migd:devices xmlns:migd="https://migd.dev/libvirt/1">
      <migd:device source="0000:3b:02.0" class="pci:15b3:101e"/>
      <migd:device source="c2177883-f1bb-47f0-914d-32a22e3a8804" class="mdev:mbochs-small@mbochs"/>
    </migd:devices>
  </metadata>
  <memory unit='KiB'>524288</memory>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
  </os>
  <devices>
    <!-- the VF -->
    <hostdev mode='subsystem' type='pci' managed='no'>
      <source>
        <address domain='0x0000' bus='0x3b' slot='0x02' function='0x0'/>
      </source>
      <address type='pci' domain='0x0000' bus='0x05' slot='0x00' function='0x0'/>
    </hostdev>
    <hostdev mode='subsystem' type='pci' managed='no'>
      <source>
        <address domain='0' bus='94' slot='1' function='3'/>
      </source>
    </hostdev>
    <hostdev mode='subsystem' type='mdev' model='vfio-pci'>
      <source>
        <address uuid='c2177883-f1bb-47f0-914d-32a22e3a8804'/>
      </source>
    </hostdev>
  </devices>
  <qemu:commandline>
    <qemu:arg value='-no-hpet'/>
  </qemu:commandline>
</domain>
)";

TEST(DomainXml, ReadsNameUuidHostdevsAndMigdMetadata) {
  absl::StatusOr<DomainXml> d = DomainXml::Parse(kDomain);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->name(), "vm1");
  EXPECT_EQ(d->uuid(), "5f2a3c1e-0b7d-4c8e-9a4f-1d2e3f405060");
  ASSERT_EQ(d->hostdevs().size(), 3u);
  EXPECT_EQ(d->hostdevs()[0].source, "0000:3b:02.0");
  // Decimal address parts, as libvirt also accepts them.
  EXPECT_EQ(d->hostdevs()[1].source, "0000:5e:01.3");
  EXPECT_EQ(d->hostdevs()[2].kind, Hostdev::Kind::kMdev);
  EXPECT_EQ(d->hostdevs()[2].source, "c2177883-f1bb-47f0-914d-32a22e3a8804");
  ASSERT_EQ(d->migd_devices().size(), 2u);
  EXPECT_EQ(d->migd_devices()[0].device_class, "pci:15b3:101e");
  EXPECT_EQ(d->migd_devices()[1].source,
            "c2177883-f1bb-47f0-914d-32a22e3a8804");
}

TEST(DomainXml, RetargetMovesSourcesAndMetadataAndKeepsEverythingElse) {
  absl::StatusOr<DomainXml> d = DomainXml::Parse(kDomain);
  ASSERT_TRUE(d.ok()) << d.status();
  // The first VF goes where the second one is, the second one elsewhere:
  // all at once, neither is taken for the other.
  ASSERT_TRUE(d->Retarget({{"0000:3b:02.0", {"0000:5e:01.3", ""}},
                           {"0000:5e:01.3", {"0000:af:00.7", ""}},
                           {"c2177883-f1bb-47f0-914d-32a22e3a8804",
                            {"", "0C1D2E3F-4A5B-4C6D-8E9F-A0B1C2D3E4F5"}}})
                  .ok());
  ASSERT_EQ(d->hostdevs().size(), 3u);
  EXPECT_EQ(d->hostdevs()[0].source, "0000:5e:01.3");
  EXPECT_EQ(d->hostdevs()[1].source, "0000:af:00.7");
  EXPECT_EQ(d->hostdevs()[2].source, "0c1d2e3f-4a5b-4c6d-8e9f-a0b1c2d3e4f5");
  EXPECT_EQ(d->migd_devices()[0].source, "0000:5e:01.3");
  EXPECT_EQ(d->migd_devices()[1].source,
            "0c1d2e3f-4a5b-4c6d-8e9f-a0b1c2d3e4f5");
  const std::string out = d->Serialize();
  EXPECT_TRUE(
      absl::StrContains(out,
                        "<address domain=\"0x0000\" bus=\"0x5e\" slot=\"0x01\" "
                        "function=\"0x3\"/>"))
      << out;
  // The guest-side address, the comment and the qemu namespace are kept.
  EXPECT_TRUE(absl::StrContains(out,
                                "<address type='pci' domain='0x0000' "
                                "bus='0x05'") ||
              absl::StrContains(out,
                                "<address type=\"pci\" domain=\"0x0000\" "
                                "bus=\"0x05\""))
      << out;
  EXPECT_TRUE(absl::StrContains(out, "<!-- the VF -->")) << out;
  EXPECT_TRUE(absl::StrContains(out, "<qemu:arg value=\"-no-hpet\"/>")) << out;
  // And libvirt takes it.
  EXPECT_TRUE(CheckWithLibvirt(out).ok()) << CheckWithLibvirt(out);
  // Read back, it says the same.
  absl::StatusOr<DomainXml> again = DomainXml::Parse(out);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->hostdevs()[1].source, "0000:af:00.7");
}

TEST(DomainXml, RetargetChangesNothingOnAnError) {
  absl::StatusOr<DomainXml> d = DomainXml::Parse(kDomain);
  ASSERT_TRUE(d.ok());
  const std::string before = d->Serialize();
  absl::Status missing = d->Retarget({{"0000:3b:02.0", {"0000:5e:01.4", ""}},
                                      {"0000:99:00.0", {"0000:5e:01.5", ""}}});
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(missing.message(), "0000:99:00.0")) << missing;
  absl::Status kind = d->Retarget(
      {{"c2177883-f1bb-47f0-914d-32a22e3a8804", {"0000:5e:01.5", ""}}});
  EXPECT_EQ(kind.code(), absl::StatusCode::kInvalidArgument);
  absl::Status bad = d->Retarget({{"0000:3b:02.0", {"0000:5e:3f.0", ""}}});
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument) << bad;
  EXPECT_EQ(d->Serialize(), before);
}

TEST(DomainXml, BadDefinitionsAreRefusedNamingWhatIsWrong) {
  auto error = [](const std::string& xml) {
    absl::StatusOr<DomainXml> d = DomainXml::Parse(xml);
    return d.ok() ? std::string("accepted") : std::string(d.status().message());
  };
  EXPECT_TRUE(absl::StrContains(error("<domain><name>x"), "not XML"));
  EXPECT_TRUE(absl::StrContains(error("<network/>"), "not <domain>"));
  EXPECT_TRUE(
      absl::StrContains(error("<domain><name>v</name></domain>"), "uuid"));
  const std::string head =
      "<domain><name>v</name><uuid>5f2a3c1e-0b7d-4c8e-9a4f-1d2e3f405060</uuid>";
  EXPECT_TRUE(absl::StrContains(
      error(head + "<devices><hostdev mode='subsystem' type='pci'><source>"
                   "<address domain='0' bus='0x100' slot='0' function='0'/>"
                   "</source></hostdev></devices></domain>"),
      "bus='0x100'"));
  EXPECT_TRUE(absl::StrContains(
      error(head + "<metadata><m:devices xmlns:m='https://migd.dev/libvirt/1'>"
                   "<m:device source='0000:3b:02.0'/></m:devices></metadata>"
                   "</domain>"),
      "needs both source= and class="));
  EXPECT_TRUE(absl::StrContains(
      error(head + "<metadata><m:devices xmlns:m='https://migd.dev/libvirt/1'>"
                   "<m:device source='0000:3b:02.0' class='pci:1:2'/>"
                   "<m:device source='0000:3b:02.0' class='pci:1:2'/>"
                   "</m:devices></metadata></domain>"),
      "twice"));
  // An external entity is neither fetched nor expanded: the file's text
  // never reaches the output.
  const std::string secret =
      std::string(getenv("TEST_TMPDIR") ? getenv("TEST_TMPDIR") : "/tmp") +
      "/secret.txt";
  std::ofstream(secret) << "SECRET-7f3a\n";
  absl::StatusOr<DomainXml> xxe = DomainXml::Parse(
      "<!DOCTYPE domain [<!ENTITY x SYSTEM 'file://" + secret + "'>]>" + head +
      "<description>&x;</description></domain>");
  ASSERT_TRUE(xxe.ok()) << xxe.status();
  EXPECT_FALSE(absl::StrContains(xxe->Serialize(), "SECRET-7f3a"))
      << xxe->Serialize();
}

TEST(CheckWithLibvirt, AcceptsADomainAndNamesWhatItRefuses) {
  EXPECT_TRUE(CheckWithLibvirt(kDomain).ok()) << CheckWithLibvirt(kDomain);
  // libvirt's own parser: an unknown hostdev type.
  std::string bad = kDomain;
  bad.replace(bad.find("type='mdev'"), 11, "type='nope'");
  absl::Status s = CheckWithLibvirt(bad);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(s.message(), "libvirt")) << s;
  // A domain named like the test driver's sample domain is fine.
  std::string test = kDomain;
  test.replace(test.find("<name>vm1</name>"), 16, "<name>test</name>");
  EXPECT_TRUE(CheckWithLibvirt(test).ok()) << CheckWithLibvirt(test);
}

}  // namespace
}  // namespace migd::libvirt
