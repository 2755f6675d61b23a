// migd/libvirt/domain_xml.h
//
// A libvirt domain definition as the migd hook reads and changes it: the
// domain's name and UUID, its host devices (<hostdev> of type pci and mdev),
// and migd's own metadata, which says of which class each host device is so
// that the agent on a destination host can pick one of its own:
//
//   <metadata>
//     <migd:devices xmlns:migd="https://migd.dev/libvirt/1">
//       <migd:device source="0000:3b:02.0" class="pci:1ac3:0101"/>
//       <migd:device source="c2177883-f1bb-47f0-914d-32a22e3a8804"
//                    class="mdev:acme-2g" driver=""/>
//     </migd:devices>
//   </metadata>
//
// `source` is the host device's address on the host the definition comes
// from (a PCI address, or an mdev UUID), `class` what may replace it
// ("pci:VVVV:DDDD[:SVVV:SDDD]", "mdev:TYPE[@PARENT]"), `driver` the module
// to bind a PCI device to (empty: the agent's choice). libvirt keeps
// metadata of a foreign namespace as it is, so the definition carries it from
// host to host; an operator writes it once (virsh metadata, or the
// definition itself).
//
// The document is parsed with libxml2 (no network, no entity expansion) and
// changed in place: what the hook does not touch (devices, other
// namespaces' elements such as qemu:commandline, comments) comes out as it
// went in. Whether the result is a domain libvirt accepts is checked
// separately (libvirt_check.h).

#ifndef MIGD_LIBVIRT_DOMAIN_XML_H_
#define MIGD_LIBVIRT_DOMAIN_XML_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace migd::libvirt {

// migd's metadata namespace.
inline constexpr absl::string_view kMigdNamespace =
    "https://migd.dev/libvirt/1";

// A <hostdev mode='subsystem'> of type pci or mdev.
struct Hostdev {
  enum class Kind { kPci, kMdev };
  Kind kind = Kind::kPci;
  // Where it is on this definition's host: "0000:3b:02.0" (lowercase), or
  // the mdev's UUID (lowercase).
  std::string source;
};

// One <migd:device> of the metadata.
struct MigdDevice {
  std::string source;
  std::string device_class;  // "pci:1ac3:0101", "mdev:mbochs-small@mbochs"
  std::string driver;
};

// Where a host device goes on this host: a PCI address, or an mdev UUID.
struct Target {
  std::string pci_address;  // "0000:5e:01.3"
  std::string mdev_uuid;
};

class DomainXml {
 public:
  // kInvalidArgument naming what is wrong: not XML, not a <domain>, no
  // <name> or <uuid>, a hostdev whose source address is malformed, migd
  // metadata that is malformed (a device without source or class, a source
  // named twice).
  static absl::StatusOr<DomainXml> Parse(absl::string_view xml);

  DomainXml(DomainXml&&) noexcept;
  DomainXml& operator=(DomainXml&&) noexcept;
  ~DomainXml();

  const std::string& name() const { return name_; }
  const std::string& uuid() const { return uuid_; }
  // In document order.
  const std::vector<Hostdev>& hostdevs() const { return hostdevs_; }
  // In document order; empty when there is no migd metadata.
  const std::vector<MigdDevice>& migd_devices() const { return migd_devices_; }

  // Points each host device whose source is a key of `targets` at its
  // target (a PCI device's <source><address domain bus slot function>, an
  // mdev's <source><address uuid>), and its <migd:device> at the new
  // source, so that the definition says where the device is on this host
  // (and the next migration starts from there). All at once: a device
  // moving to where another one was is not taken for that other one.
  // kNotFound naming a source no host device has; kInvalidArgument when a
  // target does not fit its device's kind. Nothing changes on an error.
  absl::Status Retarget(const std::map<std::string, Target>& targets);

  // The document as XML text.
  std::string Serialize() const;

 private:
  struct Doc;
  explicit DomainXml(std::unique_ptr<Doc> doc);
  absl::Status Load();

  std::unique_ptr<Doc> doc_;
  std::string name_;
  std::string uuid_;
  std::vector<Hostdev> hostdevs_;
  std::vector<MigdDevice> migd_devices_;
};

}  // namespace migd::libvirt

#endif  // MIGD_LIBVIRT_DOMAIN_XML_H_
