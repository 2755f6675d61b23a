/*
 * edu_uapi_check: drives kernel/edu_vfio_pci through the VFIO migration
 * uAPI v2 directly (no migd), on two edu devices in a QEMU guest.
 *
 *   edu_uapi_check [--precopy=yes|no] [--dma-report=yes|no]
 *                  GROUP0 BDF0 GROUP1 BDF1
 *   edu_uapi_check prepare GROUP BDF FILE
 *   edu_uapi_check verify GROUP BDF FILE [NAME [migrated]]
 *   edu_uapi_check state GROUP BDF
 *
 * The first form checks the driver: --precopy says whether the kernel has
 * PRE_COPY (6.2+), --dma-report whether DMA_LOGGING_REPORT can work (no on
 * kernels without the IOVA-bitmap helpers, where it must fail with
 * EOPNOTSUPP).
 *
 * prepare and verify bracket a migration done by someone else (the agents):
 * prepare gives the device distinct state (registers, a factorial started,
 * a DMA into its buffer, a pattern in its internal memory; the driver's
 * memory churn must be off) and writes what to expect to FILE; verify, on
 * the destination device after the migration, checks it holds exactly that
 * state and still works. The device is closed in between: the driver keeps
 * the state across the reset that opening and closing do. verify names its
 * checks NAME_registers, NAME_memory and NAME_device_works (NAME defaults to
 * "agents", the check after a migration; any other NAME checks a device
 * against what prepare set on it, e.g. the source after a failed migration,
 * unless "migrated" follows it: then it is another migration's destination).
 *
 * state opens the device and prints its migration state as a GET of
 * MIG_DEVICE_STATE reads it, one word ("RUNNING", "RESUMING", ...), and
 * nothing else: no region, register or state is touched. What the open
 * itself does is the driver's (the uAPI lets a reopened device keep its
 * state; edu_vfio_pci resets to RUNNING on open).
 *
 * Prints one machine-readable line per check, "PASS <name>: <what>" or
 * "FAIL <name>: <why>", and at the end "edu_uapi_check: N passed, N failed".
 * Exits 0 only when nothing failed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <linux/vfio.h>

/* What Debian 12's 6.1 uapi header lacks. */
#ifndef VFIO_MIGRATION_PRE_COPY
#define VFIO_MIGRATION_PRE_COPY (1 << 2)
struct vfio_precopy_info {
	__u32 argsz;
	__u32 flags;
	__aligned_u64 initial_bytes;
	__aligned_u64 dirty_bytes;
};
#define VFIO_MIG_GET_PRECOPY_INFO _IO(VFIO_TYPE, VFIO_BASE + 21)
#endif
#ifndef VFIO_DEVICE_FEATURE_MIG_DATA_SIZE
#define VFIO_DEVICE_FEATURE_MIG_DATA_SIZE 9
struct vfio_device_feature_mig_data_size {
	__aligned_u64 stop_copy_length;
};
#endif

enum {
	ST_ERROR = 0,
	ST_STOP = 1,
	ST_RUNNING = 2,
	ST_STOP_COPY = 3,
	ST_RESUMING = 4,
	ST_RUNNING_P2P = 5,
	ST_PRE_COPY = 6,
	ST_PRE_COPY_P2P = 7,
};

static const char *state_name(unsigned s)
{
	static const char *n[] = { "ERROR", "STOP", "RUNNING", "STOP_COPY",
				   "RESUMING", "RUNNING_P2P", "PRE_COPY",
				   "PRE_COPY_P2P" };
	return s < 8 ? n[s] : "?";
}

/* edu registers (QEMU hw/misc/edu.c). */
#define REG_ID 0x00
#define REG_LIVENESS 0x04
#define REG_FACT 0x08
#define REG_STATUS 0x20
#define REG_IRQ_STATUS 0x24
#define REG_IRQ_RAISE 0x60
#define REG_IRQ_ACK 0x64
#define REG_DMA_SRC 0x80
#define REG_DMA_DST 0x88
#define REG_DMA_CNT 0x90
#define REG_DMA_CMD 0x98
#define DMA_RUN 1
#define DMA_TO_RAM 2
/* edu's 4 KiB DMA buffer, in device address space. A transfer must end
 * before the buffer's last byte (QEMU 7.2 stops the machine otherwise; the
 * driver refuses such commands). */
#define EDU_BUF 0x40000

/* The driver's stream (kernel/README.md). */
#define REC_HDR 32
#define CHUNK 4096
#define REGS_SIZE 72

/* Guest RAM the devices DMA into. */
#define IOVA_BASE ((uint64_t)0x100000)
#define RAM_SIZE ((uint64_t)4 << 20)

static int passed, failed;
static bool want_precopy, want_dma_report = true;

static void pass(const char *name, const char *fmt, ...)
{
	va_list ap;

	printf("PASS %s: ", name);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	passed++;
}

static void fail(const char *name, const char *fmt, ...)
{
	va_list ap;

	printf("FAIL %s: ", name);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	failed++;
}

static void skip(const char *name, const char *fmt, ...)
{
	va_list ap;

	printf("SKIP %s: ", name);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
}

static void note(const char *fmt, ...)
{
	va_list ap;

	printf("  ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void sleep_ms(int ms)
{
	usleep(ms * 1000);
}

/* ---- one edu device behind VFIO ---- */

struct edu {
	const char *bdf;
	int group;
	int fd;
	uint64_t cfg_off;
	uint64_t bar_off;
	uint32_t bar_flags;
	uint64_t mem_off;	/* the driver's internal-memory vendor region */
	uint64_t mem_size;
	uint32_t num_regions;
	uint32_t dev_flags;
};

static uint8_t *ram;
static int container = -1;

static uint32_t rd32(struct edu *d, uint64_t off)
{
	uint32_t v = 0xffffffff;

	if (pread(d->fd, &v, 4, d->bar_off + off) != 4)
		note("%s: read BAR0+0x%" PRIx64 ": %s", d->bdf, off, strerror(errno));
	return v;
}

static uint64_t rd64(struct edu *d, uint64_t off)
{
	uint64_t v = ~0ULL;

	if (pread(d->fd, &v, 8, d->bar_off + off) != 8)
		note("%s: read BAR0+0x%" PRIx64 ": %s", d->bdf, off, strerror(errno));
	return v;
}

static void wr32(struct edu *d, uint64_t off, uint32_t v)
{
	if (pwrite(d->fd, &v, 4, d->bar_off + off) != 4)
		note("%s: write BAR0+0x%" PRIx64 ": %s", d->bdf, off, strerror(errno));
}

static void wr64(struct edu *d, uint64_t off, uint64_t v)
{
	if (pwrite(d->fd, &v, 8, d->bar_off + off) != 8)
		note("%s: write BAR0+0x%" PRIx64 ": %s", d->bdf, off, strerror(errno));
}

/* Returns 0 or errno. */
static int get_state(struct edu *d, unsigned *state)
{
	struct {
		struct vfio_device_feature f;
		struct vfio_device_feature_mig_state s;
	} a;

	memset(&a, 0, sizeof(a));
	a.f.argsz = sizeof(a);
	a.f.flags = VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE;
	if (ioctl(d->fd, VFIO_DEVICE_FEATURE, &a))
		return errno;
	*state = a.s.device_state;
	return 0;
}

static unsigned state_of(struct edu *d)
{
	unsigned s = 99;

	get_state(d, &s);
	return s;
}

/* Sets the state; *data_fd gets the new data fd or -1. Returns 0 or errno. */
static int set_state(struct edu *d, unsigned state, int *data_fd)
{
	struct {
		struct vfio_device_feature f;
		struct vfio_device_feature_mig_state s;
	} a;

	memset(&a, 0, sizeof(a));
	a.f.argsz = sizeof(a);
	a.f.flags = VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE;
	a.s.device_state = state;
	a.s.data_fd = -1;
	if (data_fd)
		*data_fd = -1;
	if (ioctl(d->fd, VFIO_DEVICE_FEATURE, &a))
		return errno;
	if (data_fd)
		*data_fd = a.s.data_fd;
	else if (a.s.data_fd >= 0)
		close(a.s.data_fd);
	return 0;
}

/* Moves to `state` (no data fd expected); reports a failure under `name`. */
static bool go(const char *name, struct edu *d, unsigned state)
{
	int err = set_state(d, state, NULL);

	if (err) {
		fail(name, "%s: -> %s failed: %s (now %s)", d->bdf, state_name(state),
		     strerror(err), state_name(state_of(d)));
		return false;
	}
	return true;
}

static int feature_get(struct edu *d, uint32_t feature, void *data, size_t len)
{
	char buf[sizeof(struct vfio_device_feature) + 64];
	struct vfio_device_feature *f = (void *)buf;

	memset(buf, 0, sizeof(buf));
	f->argsz = sizeof(*f) + len;
	f->flags = VFIO_DEVICE_FEATURE_GET | feature;
	if (ioctl(d->fd, VFIO_DEVICE_FEATURE, f))
		return errno;
	memcpy(data, f->data, len);
	return 0;
}

static void wait_dma(struct edu *d)
{
	double deadline = now_s() + 3;

	while ((rd64(d, REG_DMA_CMD) & DMA_RUN) && now_s() < deadline)
		sleep_ms(2);
}

static void wait_fact(struct edu *d)
{
	double deadline = now_s() + 3;

	while ((rd32(d, REG_STATUS) & 1) && now_s() < deadline)
		sleep_ms(1);
}

/* One edu DMA: RAM (iova) -> device buffer, or device buffer -> RAM. */
static void dma_start(struct edu *d, uint64_t iova, uint64_t devaddr,
		      uint64_t cnt, bool to_ram)
{
	/* 32-bit accesses: vfio-pci on 6.1 splits 8-byte ones, and edu ignores
	 * the upper half (the command register is trapped by the driver, which
	 * takes 8-byte accesses whole). */
	wr32(d, REG_DMA_SRC, to_ram ? devaddr : iova);
	wr32(d, REG_DMA_DST, to_ram ? iova : devaddr);
	wr32(d, REG_DMA_CNT, cnt);
	wr64(d, REG_DMA_CMD, DMA_RUN | (to_ram ? DMA_TO_RAM : 0));
}

static void dma(struct edu *d, uint64_t iova, uint64_t devaddr, uint64_t cnt,
		bool to_ram)
{
	dma_start(d, iova, devaddr, cnt, to_ram);
	wait_dma(d);
}

static uint8_t *ram_at(uint64_t iova)
{
	return ram + (iova - IOVA_BASE);
}

static void fill(uint8_t *p, size_t n, uint8_t seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(seed + i * 7);
}

struct regs {
	uint32_t id, liveness, fact, status, irq_status;
	uint64_t src, dst, cnt, cmd;
};

static struct regs read_regs(struct edu *d)
{
	struct regs r;

	r.id = rd32(d, REG_ID);
	r.liveness = rd32(d, REG_LIVENESS);
	r.fact = rd32(d, REG_FACT);
	r.status = rd32(d, REG_STATUS);
	r.irq_status = rd32(d, REG_IRQ_STATUS);
	r.src = rd32(d, REG_DMA_SRC);
	r.dst = rd32(d, REG_DMA_DST);
	r.cnt = rd32(d, REG_DMA_CNT);
	r.cmd = rd64(d, REG_DMA_CMD);
	return r;
}

static void print_regs(const char *who, const struct regs *r)
{
	note("%s: id=0x%08x liveness=0x%08x fact=%u status=0x%x irq=0x%x "
	     "dma src=0x%" PRIx64 " dst=0x%" PRIx64 " cnt=%" PRIu64 " cmd=0x%" PRIx64,
	     who, r->id, r->liveness, r->fact, r->status, r->irq_status, r->src,
	     r->dst, r->cnt, r->cmd);
}

static bool regs_equal(const struct regs *a, const struct regs *b)
{
	return a->id == b->id && a->liveness == b->liveness &&
	       a->fact == b->fact && a->status == b->status &&
	       a->irq_status == b->irq_status && a->src == b->src &&
	       a->dst == b->dst && a->cnt == b->cnt && a->cmd == b->cmd;
}

static uint8_t *read_mem(struct edu *d)
{
	uint8_t *m = malloc(d->mem_size);
	size_t got = 0;

	while (m && got < d->mem_size) {
		ssize_t n = pread(d->fd, m + got, d->mem_size - got, d->mem_off + got);

		if (n <= 0) {
			note("%s: read internal memory: %s", d->bdf, n ? strerror(errno) : "EOF");
			free(m);
			return NULL;
		}
		got += n;
	}
	return m;
}

/* ---- data fds ---- */

struct buf {
	uint8_t *p;
	size_t len, cap;
};

static void buf_put(struct buf *b, const void *p, size_t n)
{
	if (b->len + n > b->cap) {
		b->cap = (b->len + n) * 2;
		b->p = realloc(b->p, b->cap);
	}
	memcpy(b->p + b->len, p, n);
	b->len += n;
}

/*
 * Reads `fd` until EOF (returns 0), until ENOMSG (returns ENOMSG) or until
 * `limit` bytes; other errors are returned as errno.
 */
static int read_stream(int fd, struct buf *out, size_t limit)
{
	static uint8_t chunk[256 * 1024];
	size_t start = out->len;

	for (;;) {
		size_t want = sizeof(chunk);
		ssize_t n;

		if (limit && out->len - start >= limit)
			return 0;
		if (limit && limit - (out->len - start) < want)
			want = limit - (out->len - start);
		n = read(fd, chunk, want);
		if (n == 0)
			return 0;
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return errno;
		}
		buf_put(out, chunk, n);
	}
}

static int write_stream(int fd, const uint8_t *p, size_t len)
{
	size_t off = 0;

	while (off < len) {
		size_t n = len - off > 100000 ? 100000 : len - off; /* odd segmentation */
		ssize_t w = write(fd, p + off, n);

		if (w < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return errno;
		}
		off += w;
	}
	return 0;
}

static int precopy_info(int fd, struct vfio_precopy_info *info)
{
	memset(info, 0, sizeof(*info));
	info->argsz = sizeof(*info);
	return ioctl(fd, VFIO_MIG_GET_PRECOPY_INFO, info) ? errno : 0;
}

/* Loads `stream` into d (from any state, through STOP -> RESUMING). Returns
 * 0 or the errno of the RESUMING -> STOP arc (or of the write). */
static int load(const char *name, struct edu *d, const uint8_t *stream,
		size_t len, bool quiet)
{
	int fd, err;

	if (!go(name, d, ST_STOP))
		return EIO;
	err = set_state(d, ST_RESUMING, &fd);
	if (err || fd < 0) {
		fail(name, "%s: STOP -> RESUMING: %s (fd %d)", d->bdf, strerror(err), fd);
		return err ? err : EIO;
	}
	err = write_stream(fd, stream, len);
	close(fd);
	if (err) {
		if (!quiet)
			fail(name, "%s: write to the resuming data fd: %s", d->bdf, strerror(err));
		return err;
	}
	err = set_state(d, ST_STOP, NULL);
	if (err && !quiet)
		fail(name, "%s: RESUMING -> STOP: %s", d->bdf, strerror(err));
	return err;
}

/* ---- setup ---- */

static int find_vendor_region(struct edu *d)
{
	for (uint32_t i = VFIO_PCI_NUM_REGIONS; i < d->num_regions; i++) {
		char buf[512];
		struct vfio_region_info *ri = (void *)buf;

		memset(buf, 0, sizeof(buf));
		ri->argsz = sizeof(buf);
		ri->index = i;
		if (ioctl(d->fd, VFIO_DEVICE_GET_REGION_INFO, ri))
			continue;
		if (!(ri->flags & VFIO_REGION_INFO_FLAG_CAPS) || !ri->cap_offset)
			continue;
		for (uint32_t off = ri->cap_offset; off && off < sizeof(buf);) {
			struct vfio_info_cap_header *h = (void *)(buf + off);

			if (h->id == VFIO_REGION_INFO_CAP_TYPE) {
				struct vfio_region_info_cap_type *t = (void *)h;

				if (t->type == (VFIO_REGION_TYPE_PCI_VENDOR_TYPE | 0x1234) &&
				    t->subtype == 1) {
					d->mem_off = ri->offset;
					d->mem_size = ri->size;
					return 0;
				}
			}
			off = h->next;
		}
	}
	return -1;
}

static int open_edu(struct edu *d, const char *group, const char *bdf)
{
	char path[64];
	struct vfio_group_status gs = { .argsz = sizeof(gs) };

	d->bdf = bdf;
	snprintf(path, sizeof(path), "/dev/vfio/%s", group);
	d->group = open(path, O_RDWR);
	if (d->group < 0) {
		fail("setup", "open %s: %s", path, strerror(errno));
		return -1;
	}
	if (ioctl(d->group, VFIO_GROUP_GET_STATUS, &gs) ||
	    !(gs.flags & VFIO_GROUP_FLAGS_VIABLE)) {
		fail("setup", "group %s not viable", group);
		return -1;
	}
	if (ioctl(d->group, VFIO_GROUP_SET_CONTAINER, &container)) {
		fail("setup", "VFIO_GROUP_SET_CONTAINER %s: %s", group, strerror(errno));
		return -1;
	}
	return 0;
}

static int open_device(struct edu *d)
{
	struct vfio_device_info di = { .argsz = sizeof(di) };
	struct vfio_region_info ri = { .argsz = sizeof(ri) };
	uint16_t cmd;

	d->fd = ioctl(d->group, VFIO_GROUP_GET_DEVICE_FD, d->bdf);
	if (d->fd < 0) {
		fail("setup", "VFIO_GROUP_GET_DEVICE_FD %s: %s", d->bdf, strerror(errno));
		return -1;
	}
	if (ioctl(d->fd, VFIO_DEVICE_GET_INFO, &di)) {
		fail("setup", "VFIO_DEVICE_GET_INFO %s: %s", d->bdf, strerror(errno));
		return -1;
	}
	d->num_regions = di.num_regions;
	d->dev_flags = di.flags;
	ri.index = VFIO_PCI_CONFIG_REGION_INDEX;
	if (ioctl(d->fd, VFIO_DEVICE_GET_REGION_INFO, &ri))
		return -1;
	d->cfg_off = ri.offset;
	memset(&ri, 0, sizeof(ri));
	ri.argsz = sizeof(ri);
	ri.index = VFIO_PCI_BAR0_REGION_INDEX;
	if (ioctl(d->fd, VFIO_DEVICE_GET_REGION_INFO, &ri))
		return -1;
	d->bar_off = ri.offset;
	d->bar_flags = ri.flags;
	if (find_vendor_region(d)) {
		fail("setup", "%s: no internal-memory vendor region among %u regions",
		     d->bdf, d->num_regions);
		return -1;
	}
	/* Memory decode and bus mastering. */
	if (pread(d->fd, &cmd, 2, d->cfg_off + 4) != 2)
		return -1;
	cmd |= 0x6;
	if (pwrite(d->fd, &cmd, 2, d->cfg_off + 4) != 2)
		return -1;
	return 0;
}

/* ---- checks ---- */

static void check_device(struct edu *d)
{
	uint64_t flags = 0;
	uint64_t want = VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P |
			(want_precopy ? VFIO_MIGRATION_PRE_COPY : 0);
	int err;
	char name[64];

	snprintf(name, sizeof(name), "device_%s", d->bdf);
	if (!(d->dev_flags & VFIO_DEVICE_FLAGS_RESET)) {
		fail(name, "%s: VFIO_DEVICE_RESET not available (flags 0x%x)", d->bdf, d->dev_flags);
		return;
	}
	if (d->bar_flags & VFIO_REGION_INFO_FLAG_MMAP) {
		fail(name, "%s: BAR0 is mmap-able; DMA commands would bypass the driver", d->bdf);
		return;
	}
	{
		struct vfio_device_ioeventfd ev = { .argsz = sizeof(ev),
			.flags = VFIO_DEVICE_IOEVENTFD_64, .offset = d->bar_off + REG_DMA_CMD,
			.data = DMA_RUN, .fd = eventfd(0, 0) };

		err = ioctl(d->fd, VFIO_DEVICE_IOEVENTFD, &ev) ? errno : 0;
		close(ev.fd);
		if (err != EINVAL) {
			fail(name, "%s: an ioeventfd on the DMA command register gave %s, want EINVAL",
			     d->bdf, err ? strerror(err) : "success");
			return;
		}
	}
	err = feature_get(d, VFIO_DEVICE_FEATURE_MIGRATION, &flags, sizeof(flags));
	if (err || flags != want) {
		fail(name, "%s: migration flags 0x%" PRIx64 " (%s), want 0x%" PRIx64,
		     d->bdf, flags, err ? strerror(err) : "ok", want);
		return;
	}
	if (rd32(d, REG_ID) != 0x010000ed) {
		fail(name, "%s: edu id register 0x%08x", d->bdf, rd32(d, REG_ID));
		return;
	}
	pass(name, "%s: reset, BAR0 trapped (no mmap, no ioeventfd), migration flags 0x%" PRIx64
	     ", internal memory %" PRIu64 " KiB, state %s", d->bdf, flags,
	     d->mem_size / 1024, state_name(state_of(d)));
}

static void check_state_walk(struct edu *d)
{
	static const unsigned walk[] = { ST_RUNNING_P2P, ST_STOP, ST_RUNNING_P2P,
					 ST_RUNNING, ST_STOP, ST_RUNNING };
	const char *name = "state_walk";
	int err, fd;

	for (size_t i = 0; i < sizeof(walk) / sizeof(walk[0]); i++) {
		if (!go(name, d, walk[i]))
			return;
		if (state_of(d) != walk[i]) {
			fail(name, "%s: in %s after setting %s", d->bdf,
			     state_name(state_of(d)), state_name(walk[i]));
			return;
		}
	}
	err = set_state(d, ST_ERROR, NULL);
	if (err != EINVAL) {
		fail(name, "%s: setting ERROR gave %s, want EINVAL", d->bdf, strerror(err));
		return;
	}
	err = set_state(d, ST_STOP_COPY, &fd);
	if (err || fd < 0) {
		fail(name, "%s: RUNNING -> STOP_COPY: %s, fd %d", d->bdf, strerror(err), fd);
		return;
	}
	close(fd);
	if (!go(name, d, ST_RUNNING))
		return;
	pass(name, "%s: RUNNING<->RUNNING_P2P<->STOP, far target STOP_COPY gives a data fd, "
	     "ERROR refused (EINVAL), back in %s", d->bdf, state_name(state_of(d)));
}

/* P2P quiesce: a DMA command written in RUNNING_P2P starts only in RUNNING. */
static void check_p2p_quiesce(struct edu *d)
{
	const char *name = "p2p_quiesce";
	uint64_t src = IOVA_BASE, dst = IOVA_BASE + 0xa000;
	uint64_t cmd;

	fill(ram_at(src), 256, 0x11);
	memset(ram_at(dst), 0, 256);
	dma(d, src, EDU_BUF, 256, false);		/* RAM -> device buffer */
	if (!go(name, d, ST_RUNNING_P2P))
		return;
	dma_start(d, dst, EDU_BUF, 256, true);	/* device -> RAM, held back */
	sleep_ms(400);
	cmd = rd64(d, REG_DMA_CMD);
	if (memcmp(ram_at(dst), ram_at(src), 256) == 0) {
		fail(name, "%s: DMA ran in RUNNING_P2P", d->bdf);
		go(name, d, ST_RUNNING);
		return;
	}
	if (!(cmd & DMA_RUN)) {
		fail(name, "%s: held-back command reads 0x%" PRIx64 ", want RUN set", d->bdf, cmd);
		go(name, d, ST_RUNNING);
		return;
	}
	if (!go(name, d, ST_RUNNING))
		return;
	wait_dma(d);
	if (memcmp(ram_at(dst), ram_at(src), 256) != 0) {
		fail(name, "%s: held-back DMA did not run after RUNNING", d->bdf);
		return;
	}
	pass(name, "%s: DMA command written in RUNNING_P2P held back 400 ms (cmd reads 0x%" PRIx64
	     "), ran on RUNNING", d->bdf, cmd);
}

static int logging_start(struct edu *d, uint64_t iova, uint64_t len)
{
	struct {
		struct vfio_device_feature f;
		struct vfio_device_feature_dma_logging_control c;
	} a;
	struct vfio_device_feature_dma_logging_range r = { .iova = iova, .length = len };

	memset(&a, 0, sizeof(a));
	a.f.argsz = sizeof(a);
	a.f.flags = VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_DMA_LOGGING_START;
	a.c.page_size = 4096;
	a.c.num_ranges = 1;
	a.c.ranges = (uintptr_t)&r;
	return ioctl(d->fd, VFIO_DEVICE_FEATURE, &a) ? errno : 0;
}

static int logging_stop(struct edu *d)
{
	struct vfio_device_feature f = { .argsz = sizeof(f),
		.flags = VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP };

	return ioctl(d->fd, VFIO_DEVICE_FEATURE, &f) ? errno : 0;
}

static int logging_report(struct edu *d, uint64_t iova, uint64_t len, uint64_t *bitmap)
{
	struct {
		struct vfio_device_feature f;
		struct vfio_device_feature_dma_logging_report r;
	} a;

	memset(&a, 0, sizeof(a));
	a.f.argsz = sizeof(a);
	a.f.flags = VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT;
	a.r.iova = iova;
	a.r.length = len;
	a.r.page_size = 4096;
	a.r.bitmap = (uintptr_t)bitmap;
	return ioctl(d->fd, VFIO_DEVICE_FEATURE, &a) ? errno : 0;
}

static void bitmap_pages(const uint64_t *bm, size_t npages, char *out, size_t outlen)
{
	size_t o = 0;

	out[0] = 0;
	for (size_t i = 0; i < npages && o + 24 < outlen; i++)
		if (bm[i / 64] & (1ULL << (i % 64)))
			o += snprintf(out + o, outlen - o, "%s0x%" PRIx64, o ? "," : "",
				      IOVA_BASE + i * 4096);
}

/* DMA logging reports exactly the pages written by device -> RAM DMA. */
static void check_dma_logging(struct edu *d)
{
	const char *name = "dma_logging";
	size_t npages = RAM_SIZE / 4096;
	uint64_t *bm = calloc(npages / 64, 8);
	char got[512], want[512];
	int err;

	err = logging_start(d, IOVA_BASE, RAM_SIZE);
	if (err) {
		fail(name, "%s: DMA_LOGGING_START: %s", d->bdf, strerror(err));
		goto out;
	}
	/* Written by the device: 0x103000 (one page), 0x105ff0+32 (two pages). */
	fill(ram_at(IOVA_BASE + 0x20000), 2048, 0x22);
	dma(d, IOVA_BASE + 0x20000, EDU_BUF, 2048, false);	/* read: not logged */
	dma(d, IOVA_BASE + 0x3000, EDU_BUF, 2048, true);
	dma(d, IOVA_BASE + 0x5ff0, EDU_BUF, 32, true);
	dma(d, IOVA_BASE + 0x8000, EDU_BUF, 64, false);	/* read: not logged */

	err = logging_report(d, IOVA_BASE, RAM_SIZE, bm);
	if (!want_dma_report) {
		if (err == EOPNOTSUPP)
			pass(name, "%s: DMA_LOGGING_START ok; REPORT fails with EOPNOTSUPP as "
			     "expected on this kernel (no IOVA-bitmap helpers)", d->bdf);
		else
			fail(name, "%s: DMA_LOGGING_REPORT gave %s, want EOPNOTSUPP on this kernel",
			     d->bdf, err ? strerror(err) : "success");
		goto stop;
	}
	if (err) {
		fail(name, "%s: DMA_LOGGING_REPORT: %s", d->bdf, strerror(err));
		goto stop;
	}
	bitmap_pages(bm, npages, got, sizeof(got));
	snprintf(want, sizeof(want), "0x%" PRIx64 ",0x%" PRIx64 ",0x%" PRIx64, IOVA_BASE + 0x3000,
		 IOVA_BASE + 0x5000, IOVA_BASE + 0x6000);
	if (strcmp(got, want)) {
		fail(name, "%s: dirty pages [%s], want [%s]", d->bdf, got, want);
		goto stop;
	}
	memset(bm, 0, npages / 8);
	err = logging_report(d, IOVA_BASE, RAM_SIZE, bm);
	bitmap_pages(bm, npages, got, sizeof(got));
	if (err || got[0]) {
		fail(name, "%s: second report: %s [%s], want none (reading clears)", d->bdf,
		     strerror(err), got);
		goto stop;
	}
	pass(name, "%s: dirty pages [%s] = the pages device->RAM DMA wrote (RAM->device "
	     "reads not logged); a second report is empty", d->bdf, want);
stop:
	err = logging_stop(d);
	if (err)
		fail(name, "%s: DMA_LOGGING_STOP: %s", d->bdf, strerror(err));
out:
	free(bm);
}

/*
 * A device -> RAM DMA started before DMA_LOGGING_START and still running
 * writes RAM after it (edu writes when the transfer ends, 100 ms on): the
 * report must list its pages.
 */
static void check_dma_logging_inflight(struct edu *d)
{
	const char *name = "dma_logging_inflight";
	size_t npages = RAM_SIZE / 4096;
	uint64_t *bm = calloc(npages / 64, 8);
	uint64_t dst = IOVA_BASE + 0xef80;	/* 256 bytes: two pages */
	char got[512], want[512];
	double t0;
	int err;

	if (!want_dma_report) {
		skip(name, "DMA_LOGGING_REPORT cannot work on this kernel");
		goto out;
	}
	memset(ram_at(dst), 0, 256);
	dma_start(d, dst, EDU_BUF, 256, true);
	t0 = now_s();
	err = logging_start(d, IOVA_BASE, RAM_SIZE);
	if (err) {
		fail(name, "%s: DMA_LOGGING_START: %s", d->bdf, strerror(err));
		wait_dma(d);
		goto out;
	}
	if (!(rd64(d, REG_DMA_CMD) & DMA_RUN)) {
		/* Under heavy load the transfer may already be over. */
		skip(name, "%s: the transfer ended before DMA_LOGGING_START returned (%.3f s)",
		     d->bdf, now_s() - t0);
		goto stop;
	}
	wait_dma(d);
	err = logging_report(d, IOVA_BASE, RAM_SIZE, bm);
	bitmap_pages(bm, npages, got, sizeof(got));
	snprintf(want, sizeof(want), "0x%" PRIx64 ",0x%" PRIx64, IOVA_BASE + 0xe000,
		 IOVA_BASE + 0xf000);
	if (err || strcmp(got, want))
		fail(name, "%s: dirty pages [%s] (%s), want [%s]: a transfer running when "
		     "logging started", d->bdf, got, err ? strerror(err) : "ok", want);
	else
		pass(name, "%s: a device->RAM DMA started before DMA_LOGGING_START and "
		     "ending after it is reported: [%s]", d->bdf, got);
stop:
	err = logging_stop(d);
	if (err)
		fail(name, "%s: DMA_LOGGING_STOP: %s", d->bdf, strerror(err));
out:
	free(bm);
}

/* A stream saved from the source, kept for the corruption checks. */
static struct buf saved_stream;

static void check_data_size(struct edu *d, size_t stream_len)
{
	const char *name = "mig_data_size";
	uint64_t len = 0;
	int err = feature_get(d, VFIO_DEVICE_FEATURE_MIG_DATA_SIZE, &len, sizeof(len));

	if (!want_precopy) {
		/* 6.1 has no MIG_DATA_SIZE. */
		if (err)
			pass(name, "%s: not supported by this kernel (%s)", d->bdf, strerror(err));
		else
			fail(name, "%s: MIG_DATA_SIZE answered %" PRIu64 " on a kernel without it",
			     d->bdf, len);
		return;
	}
	if (err || len != stream_len)
		fail(name, "%s: stop_copy_length %" PRIu64 " (%s), STOP_COPY stream was %zu",
		     d->bdf, len, err ? strerror(err) : "ok", stream_len);
	else
		pass(name, "%s: stop_copy_length %" PRIu64 " = the STOP_COPY stream size",
		     d->bdf, len);
}

/*
 * STOP_COPY migration edu #0 -> edu #1: registers, a factorial started
 * before, a DMA command held back by P2P quiesce, the internal memory, RAM
 * written by DMA before; then edu #1 works.
 */
static void check_stop_copy(struct edu *s, struct edu *t)
{
	const char *name = "stop_copy_migration";
	uint64_t held = IOVA_BASE + 0xc000, kept = IOVA_BASE + 0xa000;
	uint8_t kept_copy[256];
	struct regs rs, rt;
	uint8_t *ms = NULL, *mt = NULL;
	struct buf stream = { 0 };
	double t0, t1, t2;
	int fd, err;
	unsigned st;

	memcpy(kept_copy, ram_at(kept), sizeof(kept_copy));
	/* edu #1's DMA buffer gets pattern B, edu #0's pattern A. */
	fill(ram_at(IOVA_BASE + 0x30000), 64, 0xb0);
	dma(t, IOVA_BASE + 0x30000, EDU_BUF, 64, false);
	fill(ram_at(IOVA_BASE + 0x31000), 64, 0xa0);
	dma(s, IOVA_BASE + 0x31000, EDU_BUF, 64, false);
	memset(ram_at(held), 0, 64);

	/* Source state. */
	wr32(s, REG_LIVENESS, 0xdeadbeef);
	wr32(s, REG_IRQ_RAISE, 0x100);
	wr32(s, REG_FACT, 12);		/* started, not waited for */
	if (!go(name, s, ST_RUNNING_P2P))
		goto out;
	dma_start(s, held, EDU_BUF, 64, true);	/* held back by P2P quiesce */
	t0 = now_s();
	if (!go(name, s, ST_STOP))
		goto out;
	rs = read_regs(s);
	ms = read_mem(s);
	err = set_state(s, ST_STOP_COPY, &fd);
	if (err || fd < 0) {
		fail(name, "%s: STOP -> STOP_COPY: %s", s->bdf, strerror(err));
		goto out;
	}
	err = read_stream(fd, &stream, 0);
	close(fd);
	t1 = now_s();
	if (err) {
		fail(name, "%s: reading the STOP_COPY data fd: %s", s->bdf, strerror(err));
		goto out;
	}
	check_data_size(s, stream.len);
	if (!go(name, s, ST_STOP))
		goto out;

	err = load(name, t, stream.p, stream.len, false);
	t2 = now_s();
	if (err)
		goto out;
	rt = read_regs(t);
	mt = read_mem(t);
	print_regs("source", &rs);
	print_regs("destination", &rt);
	if (!regs_equal(&rs, &rt)) {
		fail(name, "registers differ after migration");
		goto out;
	}
	if (rt.fact != 479001600) {
		fail(name, "factorial of 12 reads %u on the destination", rt.fact);
		goto out;
	}
	if (!(rt.cmd & DMA_RUN)) {
		fail(name, "held-back DMA command not carried over (cmd 0x%" PRIx64 ")", rt.cmd);
		goto out;
	}
	if (!ms || !mt || memcmp(ms, mt, s->mem_size)) {
		fail(name, "internal memory differs after migration");
		goto out;
	}
	if (memcmp(ram_at(held), (uint8_t[64]){ 0 }, 64)) {
		fail(name, "held-back DMA ran before the destination was RUNNING");
		goto out;
	}
	if (!go(name, t, ST_RUNNING))
		goto out;
	st = state_of(t);
	wait_dma(t);
	if (memcmp(ram_at(held), ram_at(IOVA_BASE + 0x30000), 64)) {
		fail(name, "held-back DMA did not run on the destination after RUNNING");
		goto out;
	}
	if (memcmp(ram_at(kept), kept_copy, sizeof(kept_copy))) {
		fail(name, "RAM written by DMA before migration changed");
		goto out;
	}
	/* The destination works: liveness, a new factorial, a DMA round trip. */
	wr32(t, REG_LIVENESS, 0x12345678);
	wr32(t, REG_FACT, 5);
	wait_fact(t);
	fill(ram_at(IOVA_BASE + 0x40000), 128, 0x5a);
	dma(t, IOVA_BASE + 0x40000, EDU_BUF, 128, false);
	dma(t, IOVA_BASE + 0x41000, EDU_BUF, 128, true);
	if (rd32(t, REG_LIVENESS) != ~0x12345678u || rd32(t, REG_FACT) != 120 ||
	    memcmp(ram_at(IOVA_BASE + 0x40000), ram_at(IOVA_BASE + 0x41000), 128)) {
		fail(name, "destination does not work after resume");
		goto out;
	}
	pass(name, "%s -> %s: %zu-byte stream (save %.2f s, load %.2f s); registers equal, "
	     "12! = %u, held-back DMA carried over and ran on RUNNING, %" PRIu64
	     " KiB internal memory equal, DMA-written RAM intact, destination %s and works",
	     s->bdf, t->bdf, stream.len, t1 - t0, t2 - t1, rt.fact, s->mem_size / 1024,
	     state_name(st));
	saved_stream = stream;
	stream.p = NULL;
out:
	free(ms);
	free(mt);
	free(stream.p);
	/* Both back to RUNNING for what follows. */
	set_state(s, ST_RUNNING, NULL);
	wait_dma(s);
	set_state(t, ST_RUNNING, NULL);
}

/* PRE_COPY: initial bytes, dirty bytes while the device runs, ENOMSG at the
 * temporary end, the same fd goes on in STOP_COPY to EOF. */
static void check_precopy(struct edu *s, struct edu *t)
{
	const char *name = "precopy_migration";
	struct vfio_precopy_info info, info2;
	struct buf stream = { 0 };
	uint8_t *ms = NULL, *mt = NULL;
	uint64_t initial, dirty_seen = 0;
	int fd, fd2, err, rounds = 0;
	struct regs rs, rt;

	if (!want_precopy) {
		skip(name, "this kernel has no PRE_COPY (the migration flags say so, as checked)");
		return;
	}
	err = set_state(s, ST_PRE_COPY, &fd);
	if (err || fd < 0) {
		fail(name, "%s: RUNNING -> PRE_COPY: %s", s->bdf, strerror(err));
		return;
	}
	err = precopy_info(fd, &info);
	if (err || !info.initial_bytes) {
		fail(name, "PRECOPY_INFO: %s, initial_bytes %llu", strerror(err),
		     (unsigned long long)info.initial_bytes);
		goto out;
	}
	initial = info.initial_bytes;
	/* Read half the initial data: initial_bytes must go down by as much. */
	err = read_stream(fd, &stream, initial / 2);
	precopy_info(fd, &info2);
	if (err || info2.initial_bytes != initial - stream.len) {
		fail(name, "after reading %zu bytes initial_bytes is %llu (was %" PRIu64 ")",
		     stream.len, (unsigned long long)info2.initial_bytes, initial);
		goto out;
	}
	/* Read to the temporary end, several rounds while the device runs. */
	for (rounds = 0; rounds < 5; rounds++) {
		err = read_stream(fd, &stream, 0);
		if (err != ENOMSG) {
			fail(name, "pre-copy read ended with %s, want ENOMSG",
			     err ? strerror(err) : "EOF");
			goto out;
		}
		sleep_ms(100);
		precopy_info(fd, &info);
		if (info.dirty_bytes > dirty_seen)
			dirty_seen = info.dirty_bytes;
	}
	if (!dirty_seen) {
		fail(name, "dirty_bytes stayed 0 while the device ran");
		goto out;
	}
	if (!go(name, s, ST_PRE_COPY_P2P))
		goto out;
	err = set_state(s, ST_STOP_COPY, &fd2);
	if (err || fd2 >= 0) {
		fail(name, "PRE_COPY_P2P -> STOP_COPY: %s, fd %d (want no new fd)",
		     strerror(err), fd2);
		goto out;
	}
	rs = read_regs(s);
	ms = read_mem(s);
	err = read_stream(fd, &stream, 0);
	if (err) {
		fail(name, "STOP_COPY read: %s, want EOF", strerror(err));
		goto out;
	}
	if (read(fd, &err, 1) != 0) {
		fail(name, "read after EOF in STOP_COPY is not 0");
		goto out;
	}
	close(fd);
	fd = -1;
	if (!go(name, s, ST_STOP))
		goto out;
	if (load(name, t, stream.p, stream.len, false))
		goto out;
	rt = read_regs(t);
	mt = read_mem(t);
	if (!regs_equal(&rs, &rt) || !ms || !mt || memcmp(ms, mt, s->mem_size)) {
		print_regs("source", &rs);
		print_regs("destination", &rt);
		fail(name, "destination differs from source (registers or internal memory)");
		goto out;
	}
	if (!go(name, t, ST_RUNNING))
		goto out;
	pass(name, "%s -> %s: initial_bytes %" PRIu64 " counted down while read, dirty_bytes up "
	     "to %" PRIu64 " while running, ENOMSG at each temporary end (%d rounds), same fd "
	     "to EOF in STOP_COPY (%zu bytes in all); registers and internal memory equal",
	     s->bdf, t->bdf, initial, dirty_seen, rounds, stream.len);
out:
	if (fd >= 0)
		close(fd);
	free(ms);
	free(mt);
	free(stream.p);
	set_state(s, ST_RUNNING, NULL);
	set_state(t, ST_RUNNING, NULL);
}

static int reset(struct edu *d)
{
	return ioctl(d->fd, VFIO_DEVICE_RESET) ? errno : 0;
}

/* A damaged stream fails RESUMING -> STOP; a reset brings the device back. */
static void check_corrupt(struct edu *t, const char *what, size_t at, uint8_t xor,
			  size_t cut, int want_err)
{
	char name[64];
	uint8_t *p;
	size_t len = saved_stream.len - cut;
	unsigned st;
	int err;

	snprintf(name, sizeof(name), "corrupt_stream_%s", what);
	if (!saved_stream.p) {
		fail(name, "no saved stream (the STOP_COPY check failed)");
		return;
	}
	p = malloc(saved_stream.len);
	memcpy(p, saved_stream.p, saved_stream.len);
	p[at] ^= xor;
	err = load(name, t, p, len, true);
	free(p);
	st = state_of(t);
	if (err != want_err) {
		fail(name, "RESUMING -> STOP gave %s, want %s", err ? strerror(err) : "success",
		     strerror(want_err));
		reset(t);
		return;
	}
	if (st != ST_RESUMING && st != ST_ERROR) {
		fail(name, "device in %s after the failed arc, want RESUMING or ERROR",
		     state_name(st));
		reset(t);
		return;
	}
	err = reset(t);
	if (err || state_of(t) != ST_RUNNING) {
		fail(name, "VFIO_DEVICE_RESET: %s, state %s", strerror(err),
		     state_name(state_of(t)));
		return;
	}
	pass(name, "%s: RESUMING -> STOP failed with %s, device left in %s, "
	     "VFIO_DEVICE_RESET -> %s", t->bdf, strerror(want_err), state_name(st),
	     state_name(state_of(t)));
}

static int setup_container(void)
{
	container = open("/dev/vfio/vfio", O_RDWR);
	if (container < 0) {
		fail("setup", "open /dev/vfio/vfio: %s", strerror(errno));
		return -1;
	}
	return 0;
}

static int setup_ram(void)
{
	struct vfio_iommu_type1_dma_map m = { .argsz = sizeof(m),
		.flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
		.iova = IOVA_BASE, .size = RAM_SIZE };

	if (ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU)) {
		fail("setup", "VFIO_SET_IOMMU: %s", strerror(errno));
		return -1;
	}
	ram = mmap(NULL, RAM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (ram == MAP_FAILED) {
		fail("setup", "mmap: %s", strerror(errno));
		return -1;
	}
	m.vaddr = (uintptr_t)ram;
	if (ioctl(container, VFIO_IOMMU_MAP_DMA, &m)) {
		fail("setup", "VFIO_IOMMU_MAP_DMA: %s", strerror(errno));
		return -1;
	}
	return 0;
}

/* FNV-1a, 64 bits. */
static uint64_t fnv(const uint8_t *p, size_t n)
{
	uint64_t h = 1469598103934665603ULL;

	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 1099511628211ULL;
	return h;
}

static int write_mem(struct edu *d, const uint8_t *m)
{
	size_t off = 0;

	while (off < d->mem_size) {
		ssize_t n = pwrite(d->fd, m + off, d->mem_size - off, d->mem_off + off);

		if (n <= 0)
			return -1;
		off += n;
	}
	return 0;
}

#define EXPECT_FMT "id=%x liveness=%x fact=%u status=%x irq=%x src=%" SCNx64 \
	" dst=%" SCNx64 " cnt=%" SCNu64 " cmd=%" SCNx64 " mem=%" SCNx64

/* prepare: distinct state on d, expectations to `path`. */
static int prepare(struct edu *d, const char *path)
{
	const char *name = "agents_prepare";
	uint8_t *m = malloc(d->mem_size);
	struct regs r;
	uint64_t mh;
	FILE *f;

	/* A DMA into edu's buffer, so the DMA registers hold a transfer. */
	fill(ram_at(IOVA_BASE + 0x50000), 256, 0xe7);
	dma(d, IOVA_BASE + 0x50000, EDU_BUF, 256, false);
	wr32(d, REG_LIVENESS, 0xc0ffee11);
	wr32(d, REG_IRQ_ACK, ~0u);
	wr32(d, REG_IRQ_RAISE, 0x200);
	wr32(d, REG_STATUS, 0);
	wr32(d, REG_FACT, 10);		/* started; the migration follows */
	wait_fact(d);
	wr32(d, REG_DMA_SRC, EDU_BUF + 0x10);
	wr32(d, REG_DMA_DST, IOVA_BASE + 0x5d000);
	wr32(d, REG_DMA_CNT, 48);
	for (size_t i = 0; i < d->mem_size; i++)
		m[i] = (uint8_t)((i * 131) ^ (i >> 12) ^ 0x5c);
	if (write_mem(d, m)) {
		fail(name, "%s: writing internal memory: %s", d->bdf, strerror(errno));
		return 1;
	}
	free(m);
	m = read_mem(d);
	if (!m) {
		fail(name, "%s: reading internal memory back", d->bdf);
		return 1;
	}
	mh = fnv(m, d->mem_size);
	r = read_regs(d);
	f = fopen(path, "w");
	if (!f || fprintf(f, "id=%x liveness=%x fact=%u status=%x irq=%x src=%" PRIx64
			  " dst=%" PRIx64 " cnt=%" PRIu64 " cmd=%" PRIx64 " mem=%" PRIx64 "\n",
			  r.id, r.liveness, r.fact, r.status, r.irq_status, r.src, r.dst,
			  r.cnt, r.cmd, mh) < 0 || fclose(f)) {
		fail(name, "cannot write %s", path);
		return 1;
	}
	print_regs("prepared", &r);
	pass(name, "%s: liveness, 10! = %u, interrupt 0x%x, DMA registers, %" PRIu64
	     " KiB internal memory (hash %016" PRIx64 ") set", d->bdf, r.fact,
	     r.irq_status, d->mem_size / 1024, mh);
	return 0;
}

/*
 * verify: d holds what `path` says: the destination after a migration when
 * `prefix` is "agents", else the device prepare was run on. Checks are named
 * <prefix>_registers, <prefix>_memory and <prefix>_device_works.
 */
static int verify(struct edu *d, const char *path, const char *prefix,
		  bool migrated)
{
	const char *ref = migrated ? "the source's" : "what agents_prepare set";
	const char *when = migrated ? "after the migration" : "on a fresh open";
	char n_regs[64], n_mem[64], n_works[64], n_verify[64];
	struct regs want, got;
	uint64_t mh, bh, want_mh;
	uint8_t *m;
	FILE *f = fopen(path, "r");
	unsigned st;

	snprintf(n_regs, sizeof(n_regs), "%s_registers", prefix);
	snprintf(n_mem, sizeof(n_mem), "%s_memory", prefix);
	snprintf(n_works, sizeof(n_works), "%s_device_works", prefix);
	snprintf(n_verify, sizeof(n_verify), "%s_verify", prefix);
	if (!f || fscanf(f, EXPECT_FMT, &want.id, &want.liveness, &want.fact,
			  &want.status, &want.irq_status, &want.src, &want.dst,
			  &want.cnt, &want.cmd, &want_mh) != 10) {
		fail(n_verify, "cannot read %s", path);
		return 1;
	}
	fclose(f);
	st = state_of(d);
	got = read_regs(d);
	print_regs("expected", &want);
	print_regs(migrated ? "destination" : d->bdf, &got);
	if (regs_equal(&want, &got) && got.fact == 3628800)
		pass(n_regs, "%s: every register equals %s; the factorial started %s "
		     "reads 10! = %u", d->bdf, ref,
		     migrated ? "on the source" : "by agents_prepare", got.fact);
	else
		fail(n_regs, "%s: registers differ from %s", d->bdf, ref);
	m = read_mem(d);
	mh = m ? fnv(m, d->mem_size) : 0;
	free(m);
	if (mh == want_mh)
		pass(n_mem, "%s: %" PRIu64 " KiB internal memory equals %s "
		     "(hash %016" PRIx64 ")", d->bdf, d->mem_size / 1024, ref, mh);
	else
		fail(n_mem, "%s: internal memory hash %016" PRIx64 ", want %016" PRIx64,
		     d->bdf, mh, want_mh);
	/* Still works: liveness, a factorial, a DMA round trip through the
	 * device's buffer (edu's buffer itself is not migrated state). */
	wr32(d, REG_LIVENESS, 0x0badcafe);
	wr32(d, REG_FACT, 6);
	wait_fact(d);
	fill(ram_at(IOVA_BASE + 0x60000), 256, 0x3c);
	dma(d, IOVA_BASE + 0x60000, EDU_BUF, 256, false);
	dma(d, IOVA_BASE + 0x61000, EDU_BUF, 256, true);
	bh = fnv(ram_at(IOVA_BASE + 0x61000), 256);
	if (st == ST_RUNNING && rd32(d, REG_LIVENESS) == ~0x0badcafeu &&
	    rd32(d, REG_FACT) == 720 && bh == fnv(ram_at(IOVA_BASE + 0x60000), 256))
		pass(n_works, "%s: %s %s; liveness, 6! = 720 and a DMA round trip work",
		     d->bdf, state_name(st), when);
	else
		fail(n_works, "%s: state %s, liveness 0x%x, fact %u, DMA %s",
		     d->bdf, state_name(st), rd32(d, REG_LIVENESS), rd32(d, REG_FACT),
		     bh == fnv(ram_at(IOVA_BASE + 0x60000), 256) ? "ok" : "wrong");
	return failed ? 1 : 0;
}

/* state: prints d's migration state, touching nothing else. */
static int show_state(struct edu *d)
{
	unsigned st;
	int err;

	if (ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU)) {
		fail("state", "VFIO_SET_IOMMU: %s", strerror(errno));
		return 1;
	}
	d->fd = ioctl(d->group, VFIO_GROUP_GET_DEVICE_FD, d->bdf);
	if (d->fd < 0) {
		fail("state", "VFIO_GROUP_GET_DEVICE_FD %s: %s", d->bdf, strerror(errno));
		return 1;
	}
	err = get_state(d, &st);
	if (err) {
		fail("state", "%s: GET MIG_DEVICE_STATE: %s", d->bdf, strerror(err));
		return 1;
	}
	printf("%s\n", state_name(st));
	return 0;
}

int main(int argc, char **argv)
{
	struct edu d0 = { 0 }, d1 = { 0 };
	const char *pos[4];
	int npos = 0;
	double t0 = now_s();

	if ((argc == 5 && !strcmp(argv[1], "prepare")) ||
	    ((argc >= 5 && argc <= 7) && !strcmp(argv[1], "verify"))) {
		int rc;

		if (setup_container() || open_edu(&d0, argv[2], argv[3]) || setup_ram() ||
		    open_device(&d0))
			return 1;
		rc = !strcmp(argv[1], "prepare")
			     ? prepare(&d0, argv[4])
			     : verify(&d0, argv[4], argc >= 6 ? argv[5] : "agents",
				      argc == 5 ||
					      (argc == 7 &&
					       !strcmp(argv[6], "migrated")));
		return rc;
	}
	if (argc == 4 && !strcmp(argv[1], "state"))
		return setup_container() || open_edu(&d0, argv[2], argv[3]) ||
		       show_state(&d0);
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--precopy=yes"))
			want_precopy = true;
		else if (!strcmp(argv[i], "--precopy=no"))
			want_precopy = false;
		else if (!strcmp(argv[i], "--dma-report=yes"))
			want_dma_report = true;
		else if (!strcmp(argv[i], "--dma-report=no"))
			want_dma_report = false;
		else if (npos < 4)
			pos[npos++] = argv[i];
	}
	if (npos != 4) {
		fprintf(stderr, "usage: %s [--precopy=yes|no] [--dma-report=yes|no] "
			"GROUP0 BDF0 GROUP1 BDF1\n"
			"       %s prepare GROUP BDF FILE\n"
			"       %s verify GROUP BDF FILE [NAME [migrated]]\n"
			"       %s state GROUP BDF\n", argv[0], argv[0], argv[0], argv[0]);
		return 2;
	}

	if (setup_container() || open_edu(&d0, pos[0], pos[1]) ||
	    open_edu(&d1, pos[2], pos[3]) || setup_ram() || open_device(&d0) ||
	    open_device(&d1))
		goto done;

	check_device(&d0);
	check_device(&d1);
	check_state_walk(&d0);
	check_p2p_quiesce(&d0);
	check_dma_logging(&d0);
	check_dma_logging_inflight(&d0);
	check_stop_copy(&d0, &d1);
	check_precopy(&d0, &d1);
	check_corrupt(&d1, "magic", 0, 0xff, 0, EINVAL);
	check_corrupt(&d1, "version", 4, 0x40, 0, EINVAL);
	check_corrupt(&d1, "checksum", REC_HDR + 100, 0x01, 0, EBADMSG);
	check_corrupt(&d1, "truncated", 0, 0, REC_HDR, EINVAL);
	/* Still loads after all that. */
	if (saved_stream.p && !load("reload_after_reset", &d1, saved_stream.p,
				    saved_stream.len, false)) {
		set_state(&d1, ST_RUNNING, NULL);
		pass("reload_after_reset", "%s: the intact stream loads after the resets",
		     d1.bdf);
	}
done:
	printf("edu_uapi_check: %.1f s\n", now_s() - t0);
	printf("edu_uapi_check: %d passed, %d failed\n", passed, failed);
	return failed || !passed ? 1 : 0;
}
