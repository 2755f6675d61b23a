// migd/device/vfio_kernel_uapi.h
//
// Kernel interfaces the VFIO backend needs beyond migd/vfio/uapi.h: the VFIO
// device cdev + iommufd calls (Linux 6.6+, include/uapi/linux/vfio.h and
// include/uapi/linux/iommufd.h), which Debian 12's 6.1 headers lack. The
// structures carry migd's own names so this header also compiles against newer
// headers that define the kernel's; the layouts are the kernel's (checked by
// static_assert) and must never change.

#ifndef MIGD_DEVICE_VFIO_KERNEL_UAPI_H_
#define MIGD_DEVICE_VFIO_KERNEL_UAPI_H_

#include <linux/ioctl.h>
#include <linux/types.h>
#include <linux/vfio.h>

#include <cstddef>
#include <cstdint>

namespace migd::device::kuapi {

// struct vfio_device_bind_iommufd (6.6). `token_uuid_ptr` (and
// VFIO_DEVICE_BIND_FLAG_TOKEN) came later, for VFs of a user-owned PF; argsz
// says which layout the caller uses, so older kernels see the 16-byte one.
struct VfioDeviceBindIommufd {
  __u32 argsz;
  __u32 flags;
  __s32 iommufd;
  __u32 out_devid;
  __aligned_u64 token_uuid_ptr;
};
inline constexpr __u32 kVfioDeviceBindFlagToken = 1u << 0;
inline constexpr size_t kVfioDeviceBindIommufdSizeV1 = 16;  // without token
inline constexpr unsigned long kVfioDeviceBindIommufd =
    _IO(VFIO_TYPE, VFIO_BASE + 18);

// struct vfio_device_attach_iommufd_pt (6.6; a later `pasid` field is only
// read with VFIO_DEVICE_ATTACH_PASID, so migd passes the 12-byte layout).
struct VfioDeviceAttachIommufdPt {
  __u32 argsz;
  __u32 flags;
  __u32 pt_id;
};
inline constexpr unsigned long kVfioDeviceAttachIommufdPt =
    _IO(VFIO_TYPE, VFIO_BASE + 19);

// iommufd: IOMMUFD_TYPE is ';' (the VFIO type), commands from 0x80.
inline constexpr unsigned kIommufdCmdBase = 0x80;
struct IommuIoasAlloc {
  __u32 size;
  __u32 flags;
  __u32 out_ioas_id;
};
inline constexpr unsigned long kIommuIoasAlloc =
    _IO(';', kIommufdCmdBase + 1);  // IOMMUFD_CMD_IOAS_ALLOC

static_assert(sizeof(VfioDeviceBindIommufd) == 24);
static_assert(offsetof(VfioDeviceBindIommufd, out_devid) + 4 ==
              kVfioDeviceBindIommufdSizeV1);
static_assert(sizeof(VfioDeviceAttachIommufdPt) == 12);
static_assert(sizeof(IommuIoasAlloc) == 12);
static_assert(VFIO_TYPE == ';');

}  // namespace migd::device::kuapi

#endif  // MIGD_DEVICE_VFIO_KERNEL_UAPI_H_
