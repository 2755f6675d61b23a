// SPDX-License-Identifier: GPL-2.0
/*
 * edu_vfio_pci: a vfio-pci-core variant driver with live migration for QEMU's
 * "edu" educational PCI device (1234:11e8).
 *
 * It is migd's reference device for the VFIO migration uAPI v2: a device
 * whose real kernel driver path (data fds, state arcs, validation, DMA dirty
 * logging, P2P quiesce) can be exercised in a QEMU guest without special
 * hardware. See kernel/README.md for the state stream and the parameters.
 *
 * Device state: edu's registers, read through BAR0, plus a device-internal
 * memory of `mem_kib` KiB that the device rewrites while it runs (a churn
 * worker), so PRE_COPY has dirty data to report. The memory is visible to
 * userspace as a vendor region (type VFIO_REGION_TYPE_PCI_VENDOR_TYPE |
 * 0x1234, subtype 1).
 *
 * DMA dirty logging is done in software: BAR0 is not mmap-able, so every
 * write to edu's DMA command register passes through this driver, which
 * records the IOVA range of each device-to-RAM transfer.
 *
 * Builds against Linux 6.1 (no PRE_COPY, no MIG_DATA_SIZE) and later
 * kernels; features follow the uAPI macros the headers define.
 */
#include <linux/anon_inodes.h>
#include <linux/bitmap.h>
#include <linux/crc32.h>
#include <linux/delay.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/interval_tree.h>
#include <linux/io.h>
#include <linux/iova_bitmap.h>
#include <linux/jiffies.h>
#include <linux/module.h>
#include <linux/pci.h>
#include <linux/poll.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/version.h>
#include <linux/vfio.h>
#include <linux/vfio_pci_core.h>
#include <linux/vmalloc.h>
#include <linux/wait.h>
#include <linux/workqueue.h>

#ifdef VFIO_MIGRATION_PRE_COPY
#define EDU_HAVE_PRE_COPY 1
#else
#define EDU_HAVE_PRE_COPY 0
#endif

#ifdef VFIO_DEVICE_FEATURE_MIG_DATA_SIZE
#define EDU_HAVE_DATA_SIZE 1
#else
#define EDU_HAVE_DATA_SIZE 0
#endif

/* ---- module parameters ---- */

static unsigned int mem_kib = 4096;
module_param(mem_kib, uint, 0444);
MODULE_PARM_DESC(mem_kib,
		 "Size of each device's internal memory in KiB (part of the migrated state; rounded up to 4 KiB; default 4096)");

static unsigned int churn_ms = 20;
module_param(churn_ms, uint, 0644);
MODULE_PARM_DESC(churn_ms,
		 "While running, rewrite churn_pages pages of internal memory every churn_ms milliseconds (0: never; default 20)");

static unsigned int churn_pages = 4;
module_param(churn_pages, uint, 0644);
MODULE_PARM_DESC(churn_pages, "Pages rewritten per churn tick (default 4)");

static unsigned int fault_corrupt_record;
module_param(fault_corrupt_record, uint, 0644);
MODULE_PARM_DESC(fault_corrupt_record,
		 "Testing: flip a byte of record N (1-based) of the next save stream after its CRC is computed, so the destination rejects it (EBADMSG); back to 0 once used");

static unsigned int log_start_delay_ms;
module_param(log_start_delay_ms, uint, 0644);
MODULE_PARM_DESC(log_start_delay_ms,
		 "Testing: the next DMA_LOGGING_START returns this many ms after logging is on, the device still running (a window to DMA in before an agent stops a device without PRE_COPY); back to 0 once used");

static unsigned int dma_bits = 28;
module_param(dma_bits, uint, 0444);
MODULE_PARM_DESC(dma_bits,
		 "Address bits of edu's DMA engine (QEMU's edu dma_mask; default 28)");

/* ---- the edu device (QEMU hw/misc/edu.c) ---- */

#define EDU_VENDOR_ID		0x1234
#define EDU_DEVICE_ID		0x11e8

#define EDU_REG_ID		0x00
#define EDU_REG_LIVENESS	0x04
#define EDU_REG_FACT		0x08
#define EDU_REG_STATUS		0x20
#define EDU_REG_IRQ_STATUS	0x24
#define EDU_REG_IRQ_RAISE	0x60
#define EDU_REG_IRQ_ACK		0x64
#define EDU_REG_DMA_SRC		0x80
#define EDU_REG_DMA_DST		0x88
#define EDU_REG_DMA_CNT		0x90
#define EDU_REG_DMA_CMD		0x98

#define EDU_STATUS_COMPUTING	0x01
#define EDU_STATUS_IRQFACT	0x80
#define EDU_DMA_RUN		0x1
#define EDU_DMA_TO_RAM		0x2

/* edu's DMA buffer in the device's address space. */
#define EDU_DMA_BUF		0x40000
#define EDU_DMA_BUF_SIZE	0x1000

/* How long a stop waits for a running DMA or factorial to finish. */
#define EDU_QUIESCE_TIMEOUT_MS	2000

/* ---- the state stream (see kernel/README.md) ---- */

#define EDU_REC_MAGIC		0x53554445	/* "EDUS" little-endian */
#define EDU_STREAM_VERSION	1
#define EDU_CHUNK		4096		/* bytes of memory per MEM record */

enum edu_rec_type {
	EDU_REC_MEM = 1,
	EDU_REC_REGS = 2,
	EDU_REC_END = 3,
};

struct edu_rec_hdr {
	__le32 magic;
	__le16 version;
	__le16 type;
	__le64 offset;		/* MEM: byte offset; END: records before END */
	__le64 mem_size;	/* internal memory size of the source device */
	__le32 length;		/* payload bytes after this header */
	__le32 crc;		/* CRC-32 of this header (crc = 0) + payload */
};

#define EDU_FLAG_FACT_INPUT	0x1

struct edu_regs_state {
	__le32 card_id;
	__le32 liveness;
	__le32 fact;		/* value read from the factorial register */
	__le32 fact_input;	/* last value written to it (EDU_FLAG_FACT_INPUT) */
	__le32 status;
	__le32 irq_status;
	__le32 flags;
	__le32 reserved;
	__le64 dma_src;
	__le64 dma_dst;
	__le64 dma_cnt;
	__le64 dma_cmd;		/* last command started, RUN cleared */
	__le64 pending_cmd;	/* a command held back by P2P quiesce, or 0 */
};

#define EDU_REC_HDR_SIZE	sizeof(struct edu_rec_hdr)
#define EDU_MEM_REC_SIZE	(EDU_REC_HDR_SIZE + EDU_CHUNK)

static_assert(sizeof(struct edu_rec_hdr) == 32);
static_assert(sizeof(struct edu_regs_state) == 72);

/* ---- driver state ---- */

struct edu_range {
	u64 start;
	u64 end;	/* exclusive */
};

#define EDU_MAX_DIRTY_RANGES	1024

struct edu_vdev;

struct edu_migf {
	struct file *filp;
	struct edu_vdev *e;
	struct mutex lock;
	bool disabled;

	/* Saving. */
	bool final;		/* device stopped, regs captured: stream has an end */
	bool regs_sent;
	bool end_sent;
	u64 nrecords;
	struct edu_regs_state regs;
	u8 *rec;		/* the record being read out */
	size_t rec_len;
	size_t rec_pos;
	bool rec_initial;	/* it counts toward initial_bytes */
	unsigned long init_cursor;

	/* Resuming. */
	union {
		struct edu_rec_hdr hdr;
		u8 hdr_bytes[EDU_REC_HDR_SIZE];
	};
	size_t hdr_have;
	u8 *payload;		/* bounce buffer, EDU_CHUNK bytes */
	size_t payload_have;
	u32 crc;
	int load_err;
	bool got_regs;
	bool got_end;
	u64 loaded_records;
	unsigned long *covered;
	struct edu_regs_state lregs;
};

struct edu_vdev {
	struct vfio_pci_core_device core;
	void __iomem *bar;
	bool is_open;
	/*
	 * The state stream version this device saves and loads (sysfs
	 * edu_migration/state_version). Changed under state_mutex, only while
	 * the device is not open, so a session sees one value throughout.
	 */
	u16 state_version;

	/* Migration state; shadows of what edu cannot read back. */
	struct mutex state_mutex;
	enum vfio_device_mig_state mig_state;
	spinlock_t reset_lock;
	bool deferred_reset;
	struct edu_migf *saving_migf;
	struct edu_migf *resuming_migf;
	u32 fact_input;
	bool fact_input_valid;
	u64 dma_cmd;
	u64 pending_cmd;

	/* Internal memory and its pre-copy tracking. */
	struct mutex mem_lock;
	u8 *mem;
	size_t mem_size;
	unsigned long npages;
	unsigned long *init_pending;
	unsigned long *dirty_pending;
	unsigned long init_count;
	unsigned long dirty_count;
	bool tracking;
	struct delayed_work churn_work;
	bool churn_on;
	u64 churn_gen;
	wait_queue_head_t save_wq;

	/* DMA dirty logging. */
	struct mutex log_lock;
	bool logging;
	struct edu_range *log_ranges;
	u32 log_nranges;
	struct edu_range *dirty;
	u32 ndirty;
	bool dirty_overflow;
	struct edu_range inflight;
	bool has_inflight;
};

static struct edu_vdev *edu_from_vdev(struct vfio_device *vdev)
{
	return container_of(vdev, struct edu_vdev, core.vdev);
}

static struct edu_vdev *edu_from_pdev(struct pci_dev *pdev)
{
	struct vfio_pci_core_device *core = dev_get_drvdata(&pdev->dev);

	return container_of(core, struct edu_vdev, core);
}

static struct device *edu_dev(struct edu_vdev *e)
{
	return &e->core.pdev->dev;
}

static const char *edu_state_name(enum vfio_device_mig_state s)
{
	switch (s) {
	case VFIO_DEVICE_STATE_ERROR: return "ERROR";
	case VFIO_DEVICE_STATE_STOP: return "STOP";
	case VFIO_DEVICE_STATE_RUNNING: return "RUNNING";
	case VFIO_DEVICE_STATE_STOP_COPY: return "STOP_COPY";
	case VFIO_DEVICE_STATE_RESUMING: return "RESUMING";
	case VFIO_DEVICE_STATE_RUNNING_P2P: return "RUNNING_P2P";
#if EDU_HAVE_PRE_COPY
	case VFIO_DEVICE_STATE_PRE_COPY: return "PRE_COPY";
	case VFIO_DEVICE_STATE_PRE_COPY_P2P: return "PRE_COPY_P2P";
#endif
	default: return "?";
	}
}

/* New DMA may start only in these states (P2P quiesce defers the rest). */
static bool edu_dma_allowed(enum vfio_device_mig_state s)
{
#if EDU_HAVE_PRE_COPY
	if (s == VFIO_DEVICE_STATE_PRE_COPY)
		return true;
#endif
	return s == VFIO_DEVICE_STATE_RUNNING;
}

/* The device runs (its internal memory changes) in these states. */
static bool edu_running(enum vfio_device_mig_state s)
{
#if EDU_HAVE_PRE_COPY
	if (s == VFIO_DEVICE_STATE_PRE_COPY ||
	    s == VFIO_DEVICE_STATE_PRE_COPY_P2P)
		return true;
#endif
	return s == VFIO_DEVICE_STATE_RUNNING ||
	       s == VFIO_DEVICE_STATE_RUNNING_P2P;
}

/* BAR access by the driver itself needs memory decode on. */
static u16 edu_bar_begin(struct edu_vdev *e)
{
	u16 cmd = 0;

	pci_read_config_word(e->core.pdev, PCI_COMMAND, &cmd);
	if (!(cmd & PCI_COMMAND_MEMORY))
		pci_write_config_word(e->core.pdev, PCI_COMMAND,
				      cmd | PCI_COMMAND_MEMORY);
	return cmd;
}

static void edu_bar_end(struct edu_vdev *e, u16 cmd)
{
	if (!(cmd & PCI_COMMAND_MEMORY))
		pci_write_config_word(e->core.pdev, PCI_COMMAND, cmd);
}

static u64 edu_dma_mask(void)
{
	return dma_bits >= 64 ? ~0ULL : (1ULL << dma_bits) - 1;
}

/* ---- internal memory ---- */

static void edu_mark_dirty_locked(struct edu_vdev *e, unsigned long page)
{
	lockdep_assert_held(&e->mem_lock);
	if (!e->tracking || test_bit(page, e->init_pending))
		return;
	if (!__test_and_set_bit(page, e->dirty_pending))
		e->dirty_count++;
}

static void edu_churn_fn(struct work_struct *work)
{
	struct edu_vdev *e = container_of(to_delayed_work(work),
					  struct edu_vdev, churn_work);
	unsigned int i, n = READ_ONCE(churn_pages);

	mutex_lock(&e->mem_lock);
	for (i = 0; i < n && e->npages; i++) {
		unsigned long page = (e->churn_gen * n + i) * 7919 % e->npages;
		u64 *w = (u64 *)(e->mem + page * EDU_CHUNK);
		unsigned int k;

		for (k = 0; k < EDU_CHUNK / sizeof(u64); k++)
			w[k] = (e->churn_gen << 32) ^ ((u64)page << 12) ^ k;
		edu_mark_dirty_locked(e, page);
	}
	e->churn_gen++;
	mutex_unlock(&e->mem_lock);
	wake_up_interruptible(&e->save_wq);

	if (READ_ONCE(e->churn_on) && READ_ONCE(churn_ms))
		schedule_delayed_work(&e->churn_work,
				      msecs_to_jiffies(READ_ONCE(churn_ms)));
}

static void edu_churn_start(struct edu_vdev *e)
{
	if (!churn_ms || !e->npages || !e->is_open)
		return;
	WRITE_ONCE(e->churn_on, true);
	schedule_delayed_work(&e->churn_work, msecs_to_jiffies(churn_ms));
}

static void edu_churn_stop(struct edu_vdev *e)
{
	WRITE_ONCE(e->churn_on, false);
	cancel_delayed_work_sync(&e->churn_work);
}

/* Starts pre-copy tracking: every page is initial data, nothing dirty. */
static void edu_tracking_start(struct edu_vdev *e)
{
	mutex_lock(&e->mem_lock);
	bitmap_fill(e->init_pending, e->npages);
	bitmap_zero(e->dirty_pending, e->npages);
	e->init_count = e->npages;
	e->dirty_count = 0;
	e->tracking = true;
	mutex_unlock(&e->mem_lock);
}

static void edu_tracking_stop(struct edu_vdev *e)
{
	mutex_lock(&e->mem_lock);
	e->tracking = false;
	e->init_count = 0;
	e->dirty_count = 0;
	mutex_unlock(&e->mem_lock);
}

/* The vendor region through which userspace sees the internal memory. */
static ssize_t edu_mem_rw(struct vfio_pci_core_device *core, char __user *buf,
			  size_t count, loff_t *ppos, bool iswrite)
{
	struct edu_vdev *e = container_of(core, struct edu_vdev, core);
	u64 pos = *ppos & VFIO_PCI_OFFSET_MASK;
	unsigned long p;
	int ret = 0;

	if (pos >= e->mem_size)
		return -EINVAL;
	count = min_t(size_t, count, e->mem_size - pos);
	if (!count)
		return 0;
	if (iswrite && !edu_running(READ_ONCE(e->mig_state)))
		return -EBUSY;

	mutex_lock(&e->mem_lock);
	if (iswrite) {
		if (copy_from_user(e->mem + pos, buf, count))
			ret = -EFAULT;
		else
			for (p = pos / EDU_CHUNK; p <= (pos + count - 1) / EDU_CHUNK; p++)
				edu_mark_dirty_locked(e, p);
	} else if (copy_to_user(buf, e->mem + pos, count)) {
		ret = -EFAULT;
	}
	mutex_unlock(&e->mem_lock);
	if (ret)
		return ret;
	*ppos += count;
	return count;
}

static void edu_mem_release(struct vfio_pci_core_device *core,
			    struct vfio_pci_region *region)
{
}

static const struct vfio_pci_regops edu_mem_regops = {
	.rw = edu_mem_rw,
	.release = edu_mem_release,
};

/* ---- DMA dirty logging ---- */

static void edu_state_mutex_unlock(struct edu_vdev *e);

static void edu_log_add_locked(struct edu_vdev *e, struct edu_range r)
{
	if (e->ndirty >= EDU_MAX_DIRTY_RANGES) {
		e->dirty_overflow = true;
		return;
	}
	e->dirty[e->ndirty++] = r;
}

/* Records a device-to-RAM transfer about to start. */
static void edu_log_dma(struct edu_vdev *e, u64 iova, u64 len)
{
	if (!len)
		return;
	mutex_lock(&e->log_lock);
	if (e->logging) {
		/* edu runs one DMA at a time: the previous one is done. */
		if (e->has_inflight)
			edu_log_add_locked(e, e->inflight);
		e->inflight.start = iova;
		e->inflight.end = iova + len;
		e->has_inflight = true;
	}
	mutex_unlock(&e->log_lock);
}

static int edu_log_start(struct vfio_device *vdev,
			 struct rb_root_cached *ranges, u32 nnodes,
			 u64 *page_size)
{
	struct edu_vdev *e = edu_from_vdev(vdev);
	struct interval_tree_node *node;
	struct edu_range *r;
	u32 i = 0;
	int ret = 0;

	if (!nnodes)
		return -EINVAL;
	r = kcalloc(nnodes, sizeof(*r), GFP_KERNEL);
	if (!r)
		return -ENOMEM;
	for (node = interval_tree_iter_first(ranges, 0, ULONG_MAX);
	     node && i < nnodes;
	     node = interval_tree_iter_next(node, 0, ULONG_MAX), i++) {
		r[i].start = node->start;
		r[i].end = (u64)node->last + 1;
	}

	/*
	 * state_mutex orders this against a DMA command being issued: one
	 * issued before logging is on may still be running, and edu writes RAM
	 * when a transfer ends, so a device-to-RAM transfer running now writes
	 * after logging started and is logged as in flight.
	 */
	mutex_lock(&e->state_mutex);
	mutex_lock(&e->log_lock);
	if (e->logging) {
		ret = -EBUSY;
		kfree(r);
	} else {
		e->log_ranges = r;
		e->log_nranges = i;
		e->ndirty = 0;
		e->dirty_overflow = false;
		e->has_inflight = false;
		e->logging = true;
		if (e->bar && (e->dma_cmd & EDU_DMA_TO_RAM)) {
			u16 pcmd = edu_bar_begin(e);

			/* edu ignores register writes while a transfer runs. */
			if (readq(e->bar + EDU_REG_DMA_CMD) & EDU_DMA_RUN) {
				u64 dst = readq(e->bar + EDU_REG_DMA_DST) & edu_dma_mask();
				u64 cnt = readq(e->bar + EDU_REG_DMA_CNT);

				if (cnt) {
					e->inflight.start = dst;
					e->inflight.end = dst + cnt;
					e->has_inflight = true;
				}
			}
			edu_bar_end(e, pcmd);
		}
	}
	mutex_unlock(&e->log_lock);
	edu_state_mutex_unlock(e);
	if (!ret) {
		unsigned int delay = xchg(&log_start_delay_ms, 0);

		dev_dbg(edu_dev(e), "DMA logging started: %u ranges, page size %llu\n",
			i, *page_size);
		if (delay) {
			dev_info(edu_dev(e), "testing: DMA_LOGGING_START returns in %u ms (log_start_delay_ms)\n",
				 delay);
			msleep(delay);
		}
	}
	return ret;
}

static void edu_log_stop_locked(struct edu_vdev *e)
{
	kfree(e->log_ranges);
	e->log_ranges = NULL;
	e->log_nranges = 0;
	e->ndirty = 0;
	e->dirty_overflow = false;
	e->has_inflight = false;
	e->logging = false;
}

static int edu_log_stop(struct vfio_device *vdev)
{
	struct edu_vdev *e = edu_from_vdev(vdev);

	mutex_lock(&e->log_lock);
	edu_log_stop_locked(e);
	mutex_unlock(&e->log_lock);
	return 0;
}

/* Sets the bits of r ∩ [iova, iova + length) ∩ the logged ranges. */
static void edu_log_report(struct edu_vdev *e, struct edu_range r,
			   u64 iova, u64 length, struct iova_bitmap *dirty)
{
	u32 i;

	r.start = max(r.start, iova);
	r.end = min(r.end, iova + length);
	for (i = 0; i < e->log_nranges && r.start < r.end; i++) {
		u64 s = max(r.start, e->log_ranges[i].start);
		u64 t = min(r.end, e->log_ranges[i].end);

		if (s < t)
			iova_bitmap_set(dirty, s, t - s);
	}
}

static int edu_log_read_and_clear(struct vfio_device *vdev, unsigned long iova,
				  unsigned long length,
				  struct iova_bitmap *dirty)
{
	struct edu_vdev *e = edu_from_vdev(vdev);
	u64 end = (u64)iova + length;
	struct edu_range *keep;
	u32 i, n = 0;
	int ret = 0;

	keep = kcalloc(EDU_MAX_DIRTY_RANGES, sizeof(*keep), GFP_KERNEL);
	if (!keep)
		return -ENOMEM;

	mutex_lock(&e->log_lock);
	if (!e->logging) {
		ret = -EINVAL;
		goto out;
	}
	if (e->has_inflight && e->bar) {
		u16 cmd = edu_bar_begin(e);
		bool busy = readq(e->bar + EDU_REG_DMA_CMD) & EDU_DMA_RUN;

		edu_bar_end(e, cmd);
		if (!busy) {
			edu_log_add_locked(e, e->inflight);
			e->has_inflight = false;
		}
	}
	if (e->dirty_overflow) {
		/* Lost track: everything logged is dirty until log_stop. */
		struct edu_range all = { 0, U64_MAX };

		edu_log_report(e, all, iova, length, dirty);
		goto out;
	}
	for (i = 0; i < e->ndirty; i++) {
		struct edu_range d = e->dirty[i];

		if (d.end <= iova || d.start >= end) {
			keep[n++] = d;
			continue;
		}
		edu_log_report(e, d, iova, length, dirty);
		if (d.start < iova && n < EDU_MAX_DIRTY_RANGES)
			keep[n++] = (struct edu_range){ d.start, iova };
		if (d.end > end && n < EDU_MAX_DIRTY_RANGES)
			keep[n++] = (struct edu_range){ end, d.end };
	}
	/* A transfer still running stays dirty until it is done. */
	if (e->has_inflight)
		edu_log_report(e, e->inflight, iova, length, dirty);
	swap(e->dirty, keep);
	e->ndirty = n;
out:
	mutex_unlock(&e->log_lock);
	kfree(keep);
	return ret;
}

static const struct vfio_log_ops edu_log_ops = {
	.log_start = edu_log_start,
	.log_stop = edu_log_stop,
	.log_read_and_clear = edu_log_read_and_clear,
};

/* ---- registers ---- */

/*
 * Whether a transfer of `cnt` bytes at device address `addr` stays inside
 * edu's DMA buffer. Some QEMU versions stop the whole machine (hw_error) on a
 * transfer that does not, and reject one that ends exactly at the buffer's
 * end, so the driver refuses those instead of starting them.
 */
static bool edu_dma_range_ok(u64 addr, u64 cnt)
{
	return cnt && addr >= EDU_DMA_BUF &&
	       addr < EDU_DMA_BUF + EDU_DMA_BUF_SIZE &&
	       cnt < EDU_DMA_BUF + EDU_DMA_BUF_SIZE - addr;
}

/* Starts DMA command `cmd` on the device (state_mutex held). */
static void edu_issue_dma(struct edu_vdev *e, u64 cmd)
{
	u16 pcmd = edu_bar_begin(e);
	u64 src, dst, cnt;

	if (readq(e->bar + EDU_REG_DMA_CMD) & EDU_DMA_RUN) {
		/* edu ignores a command while one runs; so do we. */
		goto out;
	}
	src = readq(e->bar + EDU_REG_DMA_SRC);
	dst = readq(e->bar + EDU_REG_DMA_DST);
	cnt = readq(e->bar + EDU_REG_DMA_CNT);
	if (!edu_dma_range_ok(cmd & EDU_DMA_TO_RAM ? src : dst, cnt)) {
		dev_warn_ratelimited(edu_dev(e),
				     "DMA command refused: %llu bytes at device address 0x%llx leave the DMA buffer\n",
				     cnt, cmd & EDU_DMA_TO_RAM ? src : dst);
		goto out;
	}
	if (cmd & EDU_DMA_TO_RAM)
		edu_log_dma(e, dst & edu_dma_mask(), cnt);
	e->dma_cmd = cmd;
	writeq(cmd, e->bar + EDU_REG_DMA_CMD);
out:
	edu_bar_end(e, pcmd);
}

static void edu_issue_pending(struct edu_vdev *e)
{
	u64 cmd = e->pending_cmd;

	if (!cmd)
		return;
	e->pending_cmd = 0;
	dev_dbg(edu_dev(e), "starting DMA command 0x%llx held back by P2P quiesce\n",
		cmd);
	edu_issue_dma(e, cmd);
}

/* Waits until no factorial and no DMA runs; the device is then stopped. */
static int edu_quiesce(struct edu_vdev *e)
{
	unsigned long deadline = jiffies + msecs_to_jiffies(EDU_QUIESCE_TIMEOUT_MS);
	u16 pcmd = edu_bar_begin(e);
	int ret = 0;

	for (;;) {
		bool busy = (readl(e->bar + EDU_REG_STATUS) & EDU_STATUS_COMPUTING) ||
			    (readq(e->bar + EDU_REG_DMA_CMD) & EDU_DMA_RUN);

		if (!busy)
			break;
		if (time_after(jiffies, deadline)) {
			dev_err(edu_dev(e), "device did not go idle within %u ms\n",
				EDU_QUIESCE_TIMEOUT_MS);
			ret = -ETIMEDOUT;
			break;
		}
		usleep_range(500, 1000);
	}
	edu_bar_end(e, pcmd);
	return ret;
}

static int edu_stop_device(struct edu_vdev *e)
{
	int ret;

	edu_churn_stop(e);
	ret = edu_quiesce(e);
	if (ret)
		edu_churn_start(e);
	return ret;
}

static void edu_capture_regs(struct edu_vdev *e, struct edu_regs_state *r)
{
	u16 pcmd = edu_bar_begin(e);

	memset(r, 0, sizeof(*r));
	r->card_id = cpu_to_le32(readl(e->bar + EDU_REG_ID));
	r->liveness = cpu_to_le32(readl(e->bar + EDU_REG_LIVENESS));
	r->fact = cpu_to_le32(readl(e->bar + EDU_REG_FACT));
	r->fact_input = cpu_to_le32(e->fact_input);
	r->status = cpu_to_le32(readl(e->bar + EDU_REG_STATUS));
	r->irq_status = cpu_to_le32(readl(e->bar + EDU_REG_IRQ_STATUS));
	r->flags = cpu_to_le32(e->fact_input_valid ? EDU_FLAG_FACT_INPUT : 0);
	r->dma_src = cpu_to_le64(readq(e->bar + EDU_REG_DMA_SRC));
	r->dma_dst = cpu_to_le64(readq(e->bar + EDU_REG_DMA_DST));
	r->dma_cnt = cpu_to_le64(readq(e->bar + EDU_REG_DMA_CNT));
	r->dma_cmd = cpu_to_le64(e->dma_cmd & ~(u64)EDU_DMA_RUN);
	r->pending_cmd = cpu_to_le64(e->pending_cmd);
	edu_bar_end(e, pcmd);
}

/* Writes saved registers back into the real device (state_mutex held). */
static int edu_restore_regs(struct edu_vdev *e, const struct edu_regs_state *r)
{
	unsigned long deadline;
	u32 id, fact, flags = le32_to_cpu(r->flags);
	u16 pcmd = edu_bar_begin(e);
	int ret = 0;

	id = readl(e->bar + EDU_REG_ID);
	if (id != le32_to_cpu(r->card_id)) {
		dev_err(edu_dev(e), "state is for edu card id 0x%08x, this device is 0x%08x\n",
			le32_to_cpu(r->card_id), id);
		ret = -EINVAL;
		goto out;
	}
	/* Reads of the liveness register return the complement of the write. */
	writel(~le32_to_cpu(r->liveness), e->bar + EDU_REG_LIVENESS);
	/* No completion interrupt for the recomputation below. */
	writel(0, e->bar + EDU_REG_STATUS);
	if (flags & EDU_FLAG_FACT_INPUT) {
		writel(le32_to_cpu(r->fact_input), e->bar + EDU_REG_FACT);
		deadline = jiffies + msecs_to_jiffies(EDU_QUIESCE_TIMEOUT_MS);
		while (readl(e->bar + EDU_REG_STATUS) & EDU_STATUS_COMPUTING) {
			if (time_after(jiffies, deadline)) {
				ret = -ETIMEDOUT;
				goto out;
			}
			usleep_range(100, 200);
		}
	}
	fact = readl(e->bar + EDU_REG_FACT);
	if (fact != le32_to_cpu(r->fact)) {
		dev_err(edu_dev(e), "factorial register is 0x%08x after restore, saved 0x%08x\n",
			fact, le32_to_cpu(r->fact));
		ret = -EIO;
		goto out;
	}
	writel(le32_to_cpu(r->status) & EDU_STATUS_IRQFACT, e->bar + EDU_REG_STATUS);
	writel(~0u, e->bar + EDU_REG_IRQ_ACK);
	if (r->irq_status)
		writel(le32_to_cpu(r->irq_status), e->bar + EDU_REG_IRQ_RAISE);
	writeq(le64_to_cpu(r->dma_src), e->bar + EDU_REG_DMA_SRC);
	writeq(le64_to_cpu(r->dma_dst), e->bar + EDU_REG_DMA_DST);
	writeq(le64_to_cpu(r->dma_cnt), e->bar + EDU_REG_DMA_CNT);
	e->dma_cmd = le64_to_cpu(r->dma_cmd);
	e->pending_cmd = le64_to_cpu(r->pending_cmd);
	e->fact_input = le32_to_cpu(r->fact_input);
	e->fact_input_valid = flags & EDU_FLAG_FACT_INPUT;
out:
	edu_bar_end(e, pcmd);
	return ret;
}

/* ---- reset and the state mutex ---- */

/* Puts the device in RUNNING with no migration session (state_mutex held). */
static void edu_reset_locked(struct edu_vdev *e);

/*
 * reset_done runs with the PCI core's locks (and vfio-pci-core's
 * memory_lock) held, which the state paths may hold in the other order, so
 * a reset that finds state_mutex taken is handed to whoever holds it.
 */
static void edu_state_mutex_unlock(struct edu_vdev *e)
{
again:
	spin_lock(&e->reset_lock);
	if (e->deferred_reset) {
		e->deferred_reset = false;
		spin_unlock(&e->reset_lock);
		edu_reset_locked(e);
		goto again;
	}
	mutex_unlock(&e->state_mutex);
	spin_unlock(&e->reset_lock);
}

static void edu_reset_done(struct pci_dev *pdev)
{
	struct edu_vdev *e = edu_from_pdev(pdev);

	spin_lock(&e->reset_lock);
	e->deferred_reset = true;
	if (!mutex_trylock(&e->state_mutex)) {
		spin_unlock(&e->reset_lock);
		return;
	}
	spin_unlock(&e->reset_lock);
	edu_state_mutex_unlock(e);
}

/* ---- save: the data fd of STOP_COPY / PRE_COPY ---- */

static void edu_migf_disable(struct edu_migf *migf)
{
	mutex_lock(&migf->lock);
	migf->disabled = true;
	mutex_unlock(&migf->lock);
}

static void edu_disable_files(struct edu_vdev *e)
{
	if (e->saving_migf) {
		edu_migf_disable(e->saving_migf);
		fput(e->saving_migf->filp);
		e->saving_migf = NULL;
		edu_tracking_stop(e);
		wake_up_interruptible(&e->save_wq);
	}
	if (e->resuming_migf) {
		edu_migf_disable(e->resuming_migf);
		fput(e->resuming_migf->filp);
		e->resuming_migf = NULL;
	}
}

/*
 * A reset ends any migration session and returns to RUNNING. Like edu itself
 * (QEMU's edu keeps its registers across resets), the internal memory and
 * the shadows of edu's registers survive it; a command held back by P2P
 * quiesce does not.
 */
static void edu_reset_locked(struct edu_vdev *e)
{
	edu_disable_files(e);
	e->mig_state = VFIO_DEVICE_STATE_RUNNING;
	e->pending_cmd = 0;
	if (e->is_open && !READ_ONCE(e->churn_on))
		edu_churn_start(e);
}

static void edu_seal_record(struct edu_migf *migf, u16 type, u64 offset,
			    u32 length)
{
	struct edu_rec_hdr *h = (struct edu_rec_hdr *)migf->rec;
	u32 crc;

	h->magic = cpu_to_le32(EDU_REC_MAGIC);
	h->version = cpu_to_le16(READ_ONCE(migf->e->state_version));
	h->type = cpu_to_le16(type);
	h->offset = cpu_to_le64(offset);
	h->mem_size = cpu_to_le64(migf->e->mem_size);
	h->length = cpu_to_le32(length);
	h->crc = 0;
	crc = crc32_le(~0u, migf->rec, EDU_REC_HDR_SIZE + length);
	h->crc = cpu_to_le32(~crc);
	migf->rec_len = EDU_REC_HDR_SIZE + length;
	migf->rec_pos = 0;
	migf->nrecords++;
	if (READ_ONCE(fault_corrupt_record) == migf->nrecords) {
		WRITE_ONCE(fault_corrupt_record, 0);
		/* A payload byte, or the offset of a record without payload. */
		migf->rec[length ? EDU_REC_HDR_SIZE : 8] ^= 0x5a;
		dev_warn(edu_dev(migf->e), "fault injection: save record %llu corrupted\n",
			 migf->nrecords);
	}
}

/*
 * Fills migf->rec with the next record. Returns 1 if there is one, 0 at the
 * (temporary, before `final`) end of the stream.
 */
static int edu_next_record(struct edu_migf *migf)
{
	struct edu_vdev *e = migf->e;
	unsigned long page;
	bool initial = false;

	mutex_lock(&e->mem_lock);
	page = e->npages;
	if (e->init_count) {
		page = find_next_bit(e->init_pending, e->npages, migf->init_cursor);
		if (page >= e->npages)
			page = find_first_bit(e->init_pending, e->npages);
		if (page < e->npages) {
			__clear_bit(page, e->init_pending);
			e->init_count--;
			migf->init_cursor = page + 1;
			initial = true;
		}
	} else if (e->dirty_count) {
		page = find_first_bit(e->dirty_pending, e->npages);
		if (page < e->npages) {
			__clear_bit(page, e->dirty_pending);
			e->dirty_count--;
		}
	}
	if (page < e->npages)
		memcpy(migf->rec + EDU_REC_HDR_SIZE, e->mem + page * EDU_CHUNK,
		       EDU_CHUNK);
	mutex_unlock(&e->mem_lock);

	if (page < e->npages) {
		edu_seal_record(migf, EDU_REC_MEM, (u64)page * EDU_CHUNK, EDU_CHUNK);
		migf->rec_initial = initial;
		return 1;
	}
	migf->rec_initial = false;
	if (!migf->final)
		return 0;
	if (!migf->regs_sent) {
		memcpy(migf->rec + EDU_REC_HDR_SIZE, &migf->regs, sizeof(migf->regs));
		edu_seal_record(migf, EDU_REC_REGS, 0, sizeof(migf->regs));
		migf->regs_sent = true;
		return 1;
	}
	if (!migf->end_sent) {
		edu_seal_record(migf, EDU_REC_END, migf->nrecords, 0);
		migf->end_sent = true;
		return 1;
	}
	return 0;
}

static ssize_t edu_save_read(struct file *filp, char __user *buf, size_t len,
			     loff_t *pos)
{
	struct edu_migf *migf = filp->private_data;
	ssize_t done = 0;
	int ret = 0;

	if (pos)
		return -ESPIPE;

	mutex_lock(&migf->lock);
	if (migf->disabled) {
		ret = -ENODEV;
		goto out;
	}
	while (done < len) {
		size_t n;

		if (migf->rec_pos == migf->rec_len && !edu_next_record(migf))
			break;
		n = min_t(size_t, len - done, migf->rec_len - migf->rec_pos);
		if (copy_to_user(buf + done, migf->rec + migf->rec_pos, n)) {
			ret = -EFAULT;
			goto out;
		}
		migf->rec_pos += n;
		done += n;
	}
	/* The temporary end of pre-copy data; STOP_COPY ends with 0. */
	if (!done && !migf->final)
		ret = -ENOMSG;
out:
	mutex_unlock(&migf->lock);
	return ret ? ret : done;
}

static __poll_t edu_save_poll(struct file *filp, struct poll_table_struct *wait)
{
	struct edu_migf *migf = filp->private_data;
	struct edu_vdev *e = migf->e;
	__poll_t mask = 0;

	poll_wait(filp, &e->save_wq, wait);
	mutex_lock(&migf->lock);
	if (migf->disabled) {
		mask = EPOLLERR;
	} else if (migf->final || migf->rec_pos < migf->rec_len) {
		mask = EPOLLIN | EPOLLRDNORM;
	} else {
		mutex_lock(&e->mem_lock);
		if (e->init_count || e->dirty_count)
			mask = EPOLLIN | EPOLLRDNORM;
		mutex_unlock(&e->mem_lock);
	}
	mutex_unlock(&migf->lock);
	return mask;
}

#if EDU_HAVE_PRE_COPY
static long edu_precopy_ioctl(struct file *filp, unsigned int cmd,
			      unsigned long arg)
{
	struct edu_migf *migf = filp->private_data;
	struct edu_vdev *e = migf->e;
	struct vfio_precopy_info info = {};
	unsigned long minsz = offsetofend(struct vfio_precopy_info, dirty_bytes);
	size_t rest;
	int ret = 0;

	if (cmd != VFIO_MIG_GET_PRECOPY_INFO)
		return -ENOTTY;
	if (copy_from_user(&info, (void __user *)arg, minsz))
		return -EFAULT;
	if (info.argsz < minsz)
		return -EINVAL;

	mutex_lock(&e->state_mutex);
	if (e->mig_state != VFIO_DEVICE_STATE_PRE_COPY &&
	    e->mig_state != VFIO_DEVICE_STATE_PRE_COPY_P2P) {
		ret = -EINVAL;
		goto unlock;
	}
	mutex_lock(&migf->lock);
	if (migf->disabled) {
		mutex_unlock(&migf->lock);
		ret = -ENODEV;
		goto unlock;
	}
	rest = migf->rec_len - migf->rec_pos;
	mutex_lock(&e->mem_lock);
	info.initial_bytes = (u64)e->init_count * EDU_MEM_REC_SIZE;
	info.dirty_bytes = (u64)e->dirty_count * EDU_MEM_REC_SIZE;
	mutex_unlock(&e->mem_lock);
	if (migf->rec_initial)
		info.initial_bytes += rest;
	else
		info.dirty_bytes += rest;
	mutex_unlock(&migf->lock);
	info.flags = 0;
	if (copy_to_user((void __user *)arg, &info, minsz))
		ret = -EFAULT;
unlock:
	edu_state_mutex_unlock(e);
	return ret;
}
#endif

static int edu_release_migf(struct inode *inode, struct file *filp)
{
	struct edu_migf *migf = filp->private_data;

	edu_migf_disable(migf);
	mutex_destroy(&migf->lock);
	kfree(migf->rec);
	kfree(migf->payload);
	bitmap_free(migf->covered);
	kfree(migf);
	return 0;
}

static const struct file_operations edu_save_fops = {
	.owner = THIS_MODULE,
	.read = edu_save_read,
	.poll = edu_save_poll,
#if EDU_HAVE_PRE_COPY
	.unlocked_ioctl = edu_precopy_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
#endif
	.release = edu_release_migf,
};

static struct edu_migf *edu_migf_alloc(struct edu_vdev *e,
				       const struct file_operations *fops,
				       int flags)
{
	struct edu_migf *migf;
	struct file *filp;

	migf = kzalloc(sizeof(*migf), GFP_KERNEL_ACCOUNT);
	if (!migf)
		return ERR_PTR(-ENOMEM);
	migf->e = e;
	mutex_init(&migf->lock);
	filp = anon_inode_getfile("edu_vfio_mig", fops, migf, flags);
	if (IS_ERR(filp)) {
		mutex_destroy(&migf->lock);
		kfree(migf);
		return ERR_CAST(filp);
	}
	migf->filp = filp;
	stream_open(filp->f_inode, filp);
	return migf;
}

/* A save session; `final`: the device is stopped (STOP -> STOP_COPY). */
static struct file *edu_save_open(struct edu_vdev *e, bool final)
{
	struct edu_migf *migf;

	migf = edu_migf_alloc(e, &edu_save_fops, O_RDONLY);
	if (IS_ERR(migf))
		return ERR_CAST(migf);
	migf->rec = kmalloc(EDU_MEM_REC_SIZE, GFP_KERNEL_ACCOUNT);
	if (!migf->rec) {
		fput(migf->filp);
		return ERR_PTR(-ENOMEM);
	}
	edu_tracking_start(e);
	if (final) {
		edu_capture_regs(e, &migf->regs);
		migf->final = true;
	}
	e->saving_migf = migf;
	get_file(migf->filp);
	return migf->filp;
}

#if EDU_HAVE_PRE_COPY
/* PRE_COPY_P2P -> STOP_COPY: the device stopped, the stream gets its end. */
static void edu_save_finalize(struct edu_vdev *e)
{
	struct edu_migf *migf = e->saving_migf;

	mutex_lock(&migf->lock);
	edu_capture_regs(e, &migf->regs);
	migf->final = true;
	mutex_unlock(&migf->lock);
	wake_up_interruptible(&e->save_wq);
}
#endif

/* ---- resume: the data fd of RESUMING ---- */

static void edu_load_fail(struct edu_migf *migf, int err, const char *why)
{
	if (migf->load_err)
		return;
	migf->load_err = err;
	dev_warn(edu_dev(migf->e), "migration stream rejected: %s (record %llu)\n",
		 why, migf->loaded_records + 1);
}

/* Checks a complete record header. */
static void edu_load_header(struct edu_migf *migf)
{
	struct edu_vdev *e = migf->e;
	const struct edu_rec_hdr *h = &migf->hdr;
	u32 len = le32_to_cpu(h->length);
	u64 off = le64_to_cpu(h->offset);
	struct edu_rec_hdr zeroed = *h;
	const char *why = NULL;

	if (migf->got_end)
		why = "data after the END record";
	else if (le32_to_cpu(h->magic) != EDU_REC_MAGIC)
		why = "bad magic";
	else if (le16_to_cpu(h->version) != READ_ONCE(e->state_version))
		why = "stream version differs from this device's state_version";
	else if (le64_to_cpu(h->mem_size) != e->mem_size)
		why = "internal memory size differs from this device's";
	else if (le16_to_cpu(h->type) == EDU_REC_MEM)
		why = (len != EDU_CHUNK || off % EDU_CHUNK || off >= e->mem_size) ?
		      "bad memory record size or offset" : NULL;
	else if (le16_to_cpu(h->type) == EDU_REC_REGS)
		why = len != sizeof(struct edu_regs_state) ?
		      "bad register record size" : NULL;
	else if (le16_to_cpu(h->type) == EDU_REC_END)
		why = len ? "bad end record size" : NULL;
	else
		why = "unknown record type";
	if (why) {
		edu_load_fail(migf, -EINVAL, why);
		return;
	}
	zeroed.crc = 0;
	migf->crc = crc32_le(~0u, (u8 *)&zeroed, EDU_REC_HDR_SIZE);
	migf->payload_have = 0;
}

/* A record's header and payload are in: check its CRC, then use it. */
static void edu_load_record(struct edu_migf *migf)
{
	struct edu_vdev *e = migf->e;
	const struct edu_rec_hdr *h = &migf->hdr;
	u64 off = le64_to_cpu(h->offset);

	if (~migf->crc != le32_to_cpu(h->crc)) {
		edu_load_fail(migf, -EBADMSG, "checksum mismatch");
		return;
	}
	switch (le16_to_cpu(h->type)) {
	case EDU_REC_MEM:
		mutex_lock(&e->mem_lock);
		memcpy(e->mem + off, migf->payload, EDU_CHUNK);
		mutex_unlock(&e->mem_lock);
		__set_bit(off / EDU_CHUNK, migf->covered);
		break;
	case EDU_REC_REGS:
		memcpy(&migf->lregs, migf->payload, sizeof(migf->lregs));
		migf->got_regs = true;
		break;
	case EDU_REC_END:
		if (off != migf->loaded_records) {
			edu_load_fail(migf, -EINVAL, "record count mismatch");
			return;
		}
		migf->got_end = true;
		break;
	}
	migf->loaded_records++;
	migf->hdr_have = 0;
	migf->payload_have = 0;
}

static ssize_t edu_resume_write(struct file *filp, const char __user *buf,
				size_t len, loff_t *pos)
{
	struct edu_migf *migf = filp->private_data;
	size_t done = 0;
	int ret = 0;

	if (pos)
		return -ESPIPE;

	mutex_lock(&migf->lock);
	if (migf->disabled) {
		ret = -ENODEV;
		goto out;
	}
	while (done < len) {
		size_t n;

		if (migf->load_err) {
			/* Rejected: take the rest; RESUMING -> STOP reports it. */
			done = len;
			break;
		}
		if (migf->hdr_have < EDU_REC_HDR_SIZE) {
			n = min_t(size_t, len - done, EDU_REC_HDR_SIZE - migf->hdr_have);
			if (copy_from_user(migf->hdr_bytes + migf->hdr_have, buf + done, n)) {
				ret = -EFAULT;
				goto out;
			}
			migf->hdr_have += n;
			done += n;
			if (migf->hdr_have < EDU_REC_HDR_SIZE)
				continue;
			edu_load_header(migf);
			if (!migf->load_err && !le32_to_cpu(migf->hdr.length))
				edu_load_record(migf);
			continue;
		}
		n = min_t(size_t, len - done,
			  le32_to_cpu(migf->hdr.length) - migf->payload_have);
		if (copy_from_user(migf->payload + migf->payload_have, buf + done, n)) {
			ret = -EFAULT;
			goto out;
		}
		migf->crc = crc32_le(migf->crc, migf->payload + migf->payload_have, n);
		migf->payload_have += n;
		done += n;
		if (migf->payload_have == le32_to_cpu(migf->hdr.length))
			edu_load_record(migf);
	}
out:
	mutex_unlock(&migf->lock);
	return ret ? ret : done;
}

static const struct file_operations edu_resume_fops = {
	.owner = THIS_MODULE,
	.write = edu_resume_write,
	.release = edu_release_migf,
};

static struct file *edu_resume_open(struct edu_vdev *e)
{
	struct edu_migf *migf;

	migf = edu_migf_alloc(e, &edu_resume_fops, O_WRONLY);
	if (IS_ERR(migf))
		return ERR_CAST(migf);
	migf->payload = kmalloc(EDU_CHUNK, GFP_KERNEL_ACCOUNT);
	migf->covered = bitmap_zalloc(e->npages, GFP_KERNEL_ACCOUNT);
	if (!migf->payload || !migf->covered) {
		fput(migf->filp);
		return ERR_PTR(-ENOMEM);
	}
	e->resuming_migf = migf;
	get_file(migf->filp);
	return migf->filp;
}

/* RESUMING -> STOP: validate what was loaded and put it in the device. */
static int edu_load_commit(struct edu_vdev *e)
{
	struct edu_migf *migf = e->resuming_migf;
	int ret;

	mutex_lock(&migf->lock);
	ret = migf->load_err;
	if (!ret && (migf->hdr_have || !migf->got_end)) {
		edu_load_fail(migf, -EINVAL, "stream truncated (no END record)");
		ret = migf->load_err;
	}
	if (!ret && !migf->got_regs) {
		edu_load_fail(migf, -EINVAL, "no register record");
		ret = migf->load_err;
	}
	if (!ret && !bitmap_full(migf->covered, e->npages)) {
		edu_load_fail(migf, -EINVAL, "internal memory not fully covered");
		ret = migf->load_err;
	}
	if (!ret)
		ret = edu_restore_regs(e, &migf->lregs);
	mutex_unlock(&migf->lock);
	return ret;
}

/* ---- migration state machine ---- */

static struct file *edu_step_state(struct edu_vdev *e,
				   enum vfio_device_mig_state new)
{
	enum vfio_device_mig_state cur = e->mig_state;
	int ret;

	if (cur == VFIO_DEVICE_STATE_RUNNING &&
	    new == VFIO_DEVICE_STATE_RUNNING_P2P)
		return NULL;	/* from now on new DMA is held back */
	if (cur == VFIO_DEVICE_STATE_RUNNING_P2P &&
	    new == VFIO_DEVICE_STATE_RUNNING) {
		edu_issue_pending(e);
		return NULL;
	}
	if (cur == VFIO_DEVICE_STATE_RUNNING_P2P &&
	    new == VFIO_DEVICE_STATE_STOP) {
		ret = edu_stop_device(e);
		return ret ? ERR_PTR(ret) : NULL;
	}
	if (cur == VFIO_DEVICE_STATE_STOP &&
	    new == VFIO_DEVICE_STATE_RUNNING_P2P) {
		edu_churn_start(e);
		return NULL;
	}
	if (cur == VFIO_DEVICE_STATE_STOP &&
	    new == VFIO_DEVICE_STATE_STOP_COPY)
		return edu_save_open(e, true);
	if (cur == VFIO_DEVICE_STATE_STOP_COPY &&
	    new == VFIO_DEVICE_STATE_STOP) {
		edu_disable_files(e);
		return NULL;
	}
	if (cur == VFIO_DEVICE_STATE_STOP &&
	    new == VFIO_DEVICE_STATE_RESUMING)
		return edu_resume_open(e);
	if (cur == VFIO_DEVICE_STATE_RESUMING &&
	    new == VFIO_DEVICE_STATE_STOP) {
		ret = edu_load_commit(e);
		if (ret)
			return ERR_PTR(ret);
		edu_disable_files(e);
		return NULL;
	}
#if EDU_HAVE_PRE_COPY
	if ((cur == VFIO_DEVICE_STATE_RUNNING &&
	     new == VFIO_DEVICE_STATE_PRE_COPY) ||
	    (cur == VFIO_DEVICE_STATE_RUNNING_P2P &&
	     new == VFIO_DEVICE_STATE_PRE_COPY_P2P))
		return edu_save_open(e, false);
	if (cur == VFIO_DEVICE_STATE_PRE_COPY &&
	    new == VFIO_DEVICE_STATE_PRE_COPY_P2P)
		return NULL;
	if (cur == VFIO_DEVICE_STATE_PRE_COPY_P2P &&
	    new == VFIO_DEVICE_STATE_PRE_COPY) {
		edu_issue_pending(e);
		return NULL;
	}
	if ((cur == VFIO_DEVICE_STATE_PRE_COPY &&
	     new == VFIO_DEVICE_STATE_RUNNING) ||
	    (cur == VFIO_DEVICE_STATE_PRE_COPY_P2P &&
	     new == VFIO_DEVICE_STATE_RUNNING_P2P)) {
		edu_disable_files(e);
		if (new == VFIO_DEVICE_STATE_RUNNING)
			edu_issue_pending(e);
		return NULL;
	}
	if (cur == VFIO_DEVICE_STATE_PRE_COPY_P2P &&
	    new == VFIO_DEVICE_STATE_STOP_COPY) {
		ret = edu_stop_device(e);
		if (ret)
			return ERR_PTR(ret);
		edu_save_finalize(e);
		return NULL;	/* the PRE_COPY data fd goes on */
	}
#endif
	/* vfio_mig_get_next_state() uses no other arc. */
	WARN_ON(true);
	return ERR_PTR(-EINVAL);
}

static struct file *edu_set_state(struct vfio_device *vdev,
				  enum vfio_device_mig_state new_state)
{
	struct edu_vdev *e = edu_from_vdev(vdev);
	enum vfio_device_mig_state next;
	struct file *res = NULL;
	int ret;

	mutex_lock(&e->state_mutex);
	while (e->mig_state != new_state) {
		ret = vfio_mig_get_next_state(vdev, e->mig_state, new_state, &next);
		if (ret) {
			res = ERR_PTR(ret);
			break;
		}
		res = edu_step_state(e, next);
		if (IS_ERR(res)) {
			dev_info(edu_dev(e), "arc %s -> %s failed: %ld\n",
				 edu_state_name(e->mig_state), edu_state_name(next),
				 PTR_ERR(res));
			break;
		}
		dev_dbg(edu_dev(e), "arc %s -> %s\n",
			edu_state_name(e->mig_state), edu_state_name(next));
		e->mig_state = next;
		if (WARN_ON(res && new_state != e->mig_state)) {
			fput(res);
			res = ERR_PTR(-EINVAL);
			break;
		}
	}
	edu_state_mutex_unlock(e);
	return res;
}

static int edu_get_state(struct vfio_device *vdev,
			 enum vfio_device_mig_state *curr_state)
{
	struct edu_vdev *e = edu_from_vdev(vdev);

	mutex_lock(&e->state_mutex);
	*curr_state = e->mig_state;
	edu_state_mutex_unlock(e);
	return 0;
}

#if EDU_HAVE_DATA_SIZE
static int edu_get_data_size(struct vfio_device *vdev,
			     unsigned long *stop_copy_length)
{
	struct edu_vdev *e = edu_from_vdev(vdev);
	unsigned long tail = EDU_REC_HDR_SIZE + sizeof(struct edu_regs_state) +
			     EDU_REC_HDR_SIZE;

	mutex_lock(&e->state_mutex);
	if ((e->mig_state == VFIO_DEVICE_STATE_PRE_COPY ||
	     e->mig_state == VFIO_DEVICE_STATE_PRE_COPY_P2P) &&
	    e->saving_migf) {
		/*
		 * In pre-copy the stop-copy stream carries only what is still
		 * pending (records not sent yet or dirtied since), then the
		 * registers and the end record: report that, so a caller can
		 * tell when pre-copy has done its work.
		 */
		struct edu_migf *migf = e->saving_migf;
		unsigned long pending;

		mutex_lock(&migf->lock);
		mutex_lock(&e->mem_lock);
		pending = (e->init_count + e->dirty_count) * EDU_MEM_REC_SIZE;
		mutex_unlock(&e->mem_lock);
		pending += migf->rec_len - migf->rec_pos;
		mutex_unlock(&migf->lock);
		*stop_copy_length = pending + tail;
	} else {
		*stop_copy_length = e->npages * EDU_MEM_REC_SIZE + tail;
	}
	edu_state_mutex_unlock(e);
	return 0;
}
#endif

static const struct vfio_migration_ops edu_mig_ops = {
	.migration_set_state = edu_set_state,
	.migration_get_state = edu_get_state,
#if EDU_HAVE_DATA_SIZE
	.migration_get_data_size = edu_get_data_size,
#endif
};

/* ---- BAR0 access: the intercepted registers ---- */

static bool edu_memory_decode_on(struct edu_vdev *e)
{
	u16 cmd = 0;

	pci_read_config_word(e->core.pdev, PCI_COMMAND, &cmd);
	return cmd & PCI_COMMAND_MEMORY;
}

static ssize_t edu_write_dma_cmd(struct edu_vdev *e, const char __user *buf,
				 size_t count, loff_t *ppos)
{
	u64 val = 0;

	if (copy_from_user(&val, buf, count))
		return -EFAULT;
	if (!edu_memory_decode_on(e))
		return -EIO;
	mutex_lock(&e->state_mutex);
	if (!(val & EDU_DMA_RUN)) {
		/* edu ignores a command without RUN. */
	} else if (!edu_dma_allowed(e->mig_state)) {
		dev_dbg(edu_dev(e), "DMA command 0x%llx held back in %s\n", val,
			edu_state_name(e->mig_state));
		e->pending_cmd = val;
	} else {
		edu_issue_dma(e, val);
	}
	edu_state_mutex_unlock(e);
	*ppos += count;
	return count;
}

static ssize_t edu_read_dma_cmd(struct edu_vdev *e, char __user *buf,
				size_t count, loff_t *ppos)
{
	u64 dev, val;

	if (!edu_memory_decode_on(e))
		return -EIO;
	mutex_lock(&e->state_mutex);
	dev = readq(e->bar + EDU_REG_DMA_CMD);
	if (e->pending_cmd)
		val = e->pending_cmd;
	else if (dev & EDU_DMA_RUN)
		val = dev;
	else
		val = e->dma_cmd & ~(u64)EDU_DMA_RUN;
	edu_state_mutex_unlock(e);
	if (copy_to_user(buf, &val, count))
		return -EFAULT;
	*ppos += count;
	return count;
}

static ssize_t edu_write_fact(struct edu_vdev *e, const char __user *buf,
			      size_t count, loff_t *ppos)
{
	u32 val;

	if (copy_from_user(&val, buf, sizeof(val)))
		return -EFAULT;
	if (!edu_memory_decode_on(e))
		return -EIO;
	mutex_lock(&e->state_mutex);
	/* edu ignores a new input while it computes. */
	if (!(readl(e->bar + EDU_REG_STATUS) & EDU_STATUS_COMPUTING)) {
		e->fact_input = val;
		e->fact_input_valid = true;
		writel(val, e->bar + EDU_REG_FACT);
	}
	edu_state_mutex_unlock(e);
	*ppos += count;
	return count;
}

static ssize_t edu_read(struct vfio_device *vdev, char __user *buf,
			size_t count, loff_t *ppos)
{
	struct edu_vdev *e = edu_from_vdev(vdev);
	unsigned int index = VFIO_PCI_OFFSET_TO_INDEX(*ppos);
	u64 off = *ppos & VFIO_PCI_OFFSET_MASK;

	if (index == VFIO_PCI_BAR0_REGION_INDEX && e->bar &&
	    off == EDU_REG_DMA_CMD && (count == 4 || count == 8))
		return edu_read_dma_cmd(e, buf, count, ppos);
	return vfio_pci_core_read(vdev, buf, count, ppos);
}

static ssize_t edu_write(struct vfio_device *vdev, const char __user *buf,
			 size_t count, loff_t *ppos)
{
	struct edu_vdev *e = edu_from_vdev(vdev);
	unsigned int index = VFIO_PCI_OFFSET_TO_INDEX(*ppos);
	u64 off = *ppos & VFIO_PCI_OFFSET_MASK;

	if (index == VFIO_PCI_BAR0_REGION_INDEX && e->bar) {
		if (off == EDU_REG_DMA_CMD && (count == 4 || count == 8))
			return edu_write_dma_cmd(e, buf, count, ppos);
		if (off == EDU_REG_FACT && count == 4)
			return edu_write_fact(e, buf, count, ppos);
	}
	return vfio_pci_core_write(vdev, buf, count, ppos);
}

/*
 * An ioeventfd on BAR0 would have vfio-pci-core write the register from the
 * eventfd itself, past edu_write: no P2P quiesce, no DMA logging. Refuse it.
 */
static long edu_ioctl(struct vfio_device *vdev, unsigned int cmd,
		      unsigned long arg)
{
	if (cmd == VFIO_DEVICE_IOEVENTFD) {
		struct vfio_device_ioeventfd ioeventfd;
		unsigned long minsz = offsetofend(struct vfio_device_ioeventfd, fd);

		if (copy_from_user(&ioeventfd, (void __user *)arg, minsz))
			return -EFAULT;
		if (ioeventfd.argsz >= minsz &&
		    VFIO_PCI_OFFSET_TO_INDEX(ioeventfd.offset) == VFIO_PCI_BAR0_REGION_INDEX)
			return -EINVAL;
	}
	return vfio_pci_core_ioctl(vdev, cmd, arg);
}

/* ---- vfio_device_ops ---- */

static int edu_open_device(struct vfio_device *vdev)
{
	struct edu_vdev *e = edu_from_vdev(vdev);
	struct vfio_pci_core_device *core = &e->core;
	int ret;

	ret = vfio_pci_core_enable(core);
	if (ret)
		return ret;

	ret = vfio_pci_core_register_dev_region(core,
		VFIO_REGION_TYPE_PCI_VENDOR_TYPE | EDU_VENDOR_ID, 1,
		&edu_mem_regops, e->mem_size,
		VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE, e);
	if (ret)
		goto err_disable;

	e->bar = pci_iomap(core->pdev, 0, 0);
	if (!e->bar) {
		ret = -ENOMEM;
		goto err_disable;
	}

	mutex_lock(&e->state_mutex);
	e->is_open = true;
	e->mig_state = VFIO_DEVICE_STATE_RUNNING;
	e->pending_cmd = 0;
	e->dma_cmd = 0;
	edu_churn_start(e);
	edu_state_mutex_unlock(e);

	vfio_pci_core_finish_enable(core);
	/*
	 * Every BAR0 access must pass through edu_read/edu_write, so BAR0 is
	 * not mmap-able (finish_enable decides what is; override it after).
	 */
	core->bar_mmap_supported[0] = false;
	return 0;

err_disable:
	vfio_pci_core_disable(core);
	return ret;
}

static void edu_close_device(struct vfio_device *vdev)
{
	struct edu_vdev *e = edu_from_vdev(vdev);

	mutex_lock(&e->state_mutex);
	e->is_open = false;
	edu_churn_stop(e);
	edu_disable_files(e);
	edu_state_mutex_unlock(e);

	mutex_lock(&e->log_lock);
	edu_log_stop_locked(e);
	mutex_unlock(&e->log_lock);

	mutex_lock(&e->state_mutex);
	pci_iounmap(e->core.pdev, e->bar);
	e->bar = NULL;
	edu_state_mutex_unlock(e);

	vfio_pci_core_close_device(vdev);
}

static int edu_init_dev(struct vfio_device *vdev)
{
	struct edu_vdev *e = edu_from_vdev(vdev);
	int ret;

	mutex_init(&e->state_mutex);
	mutex_init(&e->mem_lock);
	mutex_init(&e->log_lock);
	spin_lock_init(&e->reset_lock);
	init_waitqueue_head(&e->save_wq);
	INIT_DELAYED_WORK(&e->churn_work, edu_churn_fn);
	e->mig_state = VFIO_DEVICE_STATE_RUNNING;
	e->state_version = EDU_STREAM_VERSION;

	e->npages = DIV_ROUND_UP((size_t)mem_kib * 1024, EDU_CHUNK);
	if (!e->npages)
		e->npages = 1;
	e->mem_size = e->npages * EDU_CHUNK;
	e->mem = vzalloc(e->mem_size);
	e->init_pending = bitmap_zalloc(e->npages, GFP_KERNEL);
	e->dirty_pending = bitmap_zalloc(e->npages, GFP_KERNEL);
	e->dirty = kcalloc(EDU_MAX_DIRTY_RANGES, sizeof(*e->dirty), GFP_KERNEL);
	if (!e->mem || !e->init_pending || !e->dirty_pending || !e->dirty) {
		ret = -ENOMEM;
		goto err;
	}

	vdev->migration_flags = VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P;
#if EDU_HAVE_PRE_COPY
	vdev->migration_flags |= VFIO_MIGRATION_PRE_COPY;
#endif
	vdev->mig_ops = &edu_mig_ops;
	vdev->log_ops = &edu_log_ops;

	ret = vfio_pci_core_init_dev(vdev);
	if (ret)
		goto err;
	return 0;
err:
	vfree(e->mem);
	bitmap_free(e->init_pending);
	bitmap_free(e->dirty_pending);
	kfree(e->dirty);
	e->mem = NULL;
	e->init_pending = e->dirty_pending = NULL;
	e->dirty = NULL;
	return ret;
}

static void edu_release_dev(struct vfio_device *vdev)
{
	struct edu_vdev *e = edu_from_vdev(vdev);

	mutex_destroy(&e->state_mutex);
	mutex_destroy(&e->mem_lock);
	mutex_destroy(&e->log_lock);
	vfree(e->mem);
	bitmap_free(e->init_pending);
	bitmap_free(e->dirty_pending);
	kfree(e->dirty);
	/* On 6.1 this also frees the vfio_device (vfio_free_device()). */
	vfio_pci_core_release_dev(vdev);
}

static const struct vfio_device_ops edu_vfio_ops = {
	.name = "edu-vfio-pci",
	.init = edu_init_dev,
	.release = edu_release_dev,
	.open_device = edu_open_device,
	.close_device = edu_close_device,
	.ioctl = edu_ioctl,
	.device_feature = vfio_pci_core_ioctl_feature,
	.read = edu_read,
	.write = edu_write,
	.mmap = vfio_pci_core_mmap,
	.request = vfio_pci_core_request,
	.match = vfio_pci_core_match,
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 2, 0)
	.bind_iommufd = vfio_iommufd_physical_bind,
	.unbind_iommufd = vfio_iommufd_physical_unbind,
	.attach_ioas = vfio_iommufd_physical_attach_ioas,
#endif
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 6, 0)
	.detach_ioas = vfio_iommufd_physical_detach_ioas,
#endif
};

/* ---- sysfs: the parameters the migration state depends on ---- */

/*
 * /sys/bus/pci/devices/BDF/edu_migration/: what a destination must match for
 * this device's state to load (a vendor plugin compares them before any
 * state moves). state_version can be changed while no user has the device
 * open, so that two devices can differ (EBUSY while open).
 */
static ssize_t edu_state_version_show(struct device *dev,
				      struct device_attribute *attr, char *buf)
{
	struct edu_vdev *e = edu_from_pdev(to_pci_dev(dev));

	return sysfs_emit(buf, "%u\n", READ_ONCE(e->state_version));
}

static ssize_t edu_state_version_store(struct device *dev,
				       struct device_attribute *attr,
				       const char *buf, size_t count)
{
	struct edu_vdev *e = edu_from_pdev(to_pci_dev(dev));
	u16 v;
	int ret;

	ret = kstrtou16(buf, 0, &v);
	if (ret)
		return ret;
	if (!v)
		return -EINVAL;
	mutex_lock(&e->state_mutex);
	if (e->is_open)
		ret = -EBUSY;
	else
		WRITE_ONCE(e->state_version, v);
	edu_state_mutex_unlock(e);
	if (ret)
		return ret;
	dev_info(dev, "state_version set to %u\n", v);
	return count;
}

static ssize_t edu_mem_kib_show(struct device *dev,
				struct device_attribute *attr, char *buf)
{
	struct edu_vdev *e = edu_from_pdev(to_pci_dev(dev));

	return sysfs_emit(buf, "%zu\n", e->mem_size / 1024);
}

static DEVICE_ATTR(state_version, 0644, edu_state_version_show,
		   edu_state_version_store);
static DEVICE_ATTR(mem_kib, 0444, edu_mem_kib_show, NULL);

static struct attribute *edu_migration_attrs[] = {
	&dev_attr_state_version.attr,
	&dev_attr_mem_kib.attr,
	NULL,
};

static const struct attribute_group edu_migration_group = {
	.name = "edu_migration",
	.attrs = edu_migration_attrs,
};

static const struct attribute_group *edu_dev_groups[] = {
	&edu_migration_group,
	NULL,
};

/* ---- PCI driver ---- */

static int edu_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	struct edu_vdev *e;
	int ret;

	e = vfio_alloc_device(edu_vdev, core.vdev, &pdev->dev, &edu_vfio_ops);
	if (IS_ERR(e))
		return PTR_ERR(e);
	dev_set_drvdata(&pdev->dev, &e->core);
	ret = vfio_pci_core_register_device(&e->core);
	if (ret) {
		vfio_put_device(&e->core.vdev);
		return ret;
	}
	dev_info(&pdev->dev, "edu_vfio_pci: migration %s%s, DMA logging, %zu KiB internal memory, state version %u\n",
		 "STOP_COPY|P2P", EDU_HAVE_PRE_COPY ? "|PRE_COPY" : "",
		 e->mem_size / 1024, e->state_version);
	return 0;
}

static void edu_remove(struct pci_dev *pdev)
{
	struct edu_vdev *e = edu_from_pdev(pdev);

	vfio_pci_core_unregister_device(&e->core);
	vfio_put_device(&e->core.vdev);
}

static const struct pci_device_id edu_ids[] = {
	{ PCI_DRIVER_OVERRIDE_DEVICE_VFIO(EDU_VENDOR_ID, EDU_DEVICE_ID) },
	{}
};
MODULE_DEVICE_TABLE(pci, edu_ids);

static const struct pci_error_handlers edu_err_handlers = {
	.reset_done = edu_reset_done,
	.error_detected = vfio_pci_core_aer_err_detected,
};

static struct pci_driver edu_driver = {
	.name = KBUILD_MODNAME,
	.id_table = edu_ids,
	.probe = edu_probe,
	.remove = edu_remove,
	.err_handler = &edu_err_handlers,
	.driver_managed_dma = true,
	/* Created after probe, removed before remove: drvdata is set. */
	.dev_groups = edu_dev_groups,
};
module_pci_driver(edu_driver);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("vfio-pci variant driver with live migration for QEMU's edu device");
