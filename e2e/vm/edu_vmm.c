/*
 * edu_vmm: a stand-in for a VMM in the QEMU guest of the VM tier. It owns
 * one edu device the way a VMM owns an assigned device while its VM runs,
 * hands the device fd to the migd source agent, and makes the device write
 * guest "RAM" by DMA while the agent migrates it, recording which pages it
 * had the device write: the ground truth for the agent's dirty-page bitmaps.
 *
 *   edu_vmm GROUP BDF SOCKET GROUND_TRUTH
 *
 * 1. Opens the VFIO container and group GROUP, maps 1 MiB of anonymous
 *    memory for DMA at IOVA 0x200000 (VFIO_IOMMU_MAP_DMA), gets the device
 *    fd of BDF, enables memory decode and bus mastering, and loads a known
 *    pattern into edu's DMA buffer (RAM -> device, before anyone logs).
 * 2. Listens on the UNIX socket SOCKET (bound under a temporary name and
 *    renamed into place, so the path appears only once it listens), accepts
 *    one connection and sends the device fd in migd's fd handoff format
 *    (migd/device/fd_handoff.h): one sendmsg of "MGFD", u16 version 1, u16
 *    name length, the name (BDF), little-endian, with the fd attached by
 *    SCM_RIGHTS. The agent's config line is "vfio NAME fd_socket=SOCKET".
 * 3. Waits until DMA logging is on: a DMA_LOGGING_REPORT of the range's last
 *    page, which it never has the device write, fails with EINVAL until the
 *    agent started logging and succeeds after (kernels that cannot report at
 *    all, EOPNOTSUPP, are watched through the device state instead: the agent
 *    starts logging before it moves the device to PRE_COPY).
 * 4. Issues edu DMA commands through the device fd's BAR0 region (pwrite at
 *    the region offset): device -> RAM writes into chosen IOVA pages, some
 *    crossing a page boundary, some pages written twice, and one RAM ->
 *    device read (which writes no RAM). Before each it checks the device is
 *    still running (RUNNING or PRE_COPY); it waits for each to finish and
 *    checks the bytes landed in RAM.
 * 5. Writes the IOVAs of the pages the device wrote, one "0x..." per line,
 *    ascending, to GROUND_TRUTH (through a temporary file and a rename); on
 *    failure it writes the reason to GROUND_TRUTH.error instead.
 * 6. Keeps the container, its DMA mapping and the device open until SIGTERM
 *    or SIGINT (at most 10 minutes), as the VMM does while the VM runs.
 *
 * Prints "edu_vmm: ..." progress lines. Exits 0 after a signal when step 5
 * succeeded, 1 otherwise.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <linux/vfio.h>

/* Device states (Debian 12's 6.1 header lacks the PRE_COPY ones). */
enum {
	ST_RUNNING = 2,
	ST_PRE_COPY = 6,
};

/* edu registers (QEMU hw/misc/edu.c). */
#define REG_DMA_SRC 0x80
#define REG_DMA_DST 0x88
#define REG_DMA_CNT 0x90
#define REG_DMA_CMD 0x98
#define DMA_RUN 1
#define DMA_TO_RAM 2
/* edu's 4 KiB DMA buffer in device address space; a transfer must end
 * before its last byte (the driver refuses others). */
#define EDU_BUF 0x40000
#define EDU_BUF_USABLE 4095

/* The guest RAM this VMM maps for the device, and the page it never has
 * the device write (the logging probe). */
#define IOVA_BASE ((uint64_t)0x200000)
#define RAM_SIZE ((uint64_t)1 << 20)
#define PAGE ((uint64_t)4096)
#define PROBE_IOVA (IOVA_BASE + RAM_SIZE - PAGE)
/* Where the buffer pattern comes from (RAM -> device, before logging). */
#define PATTERN_IOVA (IOVA_BASE + 0xc0000)

#define WAIT_SECONDS 120

/* The transfers made while the agent logs. */
static const struct transfer {
	bool to_ram;
	uint32_t buf_off;	/* in edu's buffer */
	uint64_t iova_off;	/* from IOVA_BASE */
	uint32_t count;
} transfers[] = {
	{ true, 0x000, 0x03000, 256 },
	{ true, 0x100, 0x10ff0, 64 },	/* crosses into the next page */
	{ false, 0xe00, 0x50000, 256 },	/* a read: writes no RAM */
	{ true, 0x200, 0x20000, 2048 },
	{ true, 0x000, 0x41800, 4000 },	/* crosses into the next page */
	{ true, 0x300, 0x80000, 1 },
	{ true, 0x000, 0x03080, 128 },	/* the first page again */
	{ true, 0x001, 0xfe000, 4094 },	/* the page before the probe page */
};
#define NTRANSFERS (sizeof(transfers) / sizeof(transfers[0]))

static int device = -1;
static uint64_t bar_off;
static uint8_t *ram;
static uint8_t pattern[EDU_BUF_USABLE];
static const char *truth_path;

static void say(const char *fmt, ...)
{
	va_list ap;

	printf("edu_vmm: ");
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

/* Records why the run failed, for the test script, and says it. */
static void failure(const char *fmt, ...)
{
	char why[512], path[512];
	va_list ap;
	FILE *f;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	say("error: %s", why);
	snprintf(path, sizeof(path), "%s.error", truth_path);
	f = fopen(path, "w");
	if (f) {
		fprintf(f, "%s\n", why);
		fclose(f);
	}
}

static int wr32(uint64_t off, uint32_t v)
{
	return pwrite(device, &v, 4, bar_off + off) == 4 ? 0 : errno;
}

static int wr64(uint64_t off, uint64_t v)
{
	return pwrite(device, &v, 8, bar_off + off) == 8 ? 0 : errno;
}

static uint64_t rd64(uint64_t off)
{
	uint64_t v = ~0ULL;

	if (pread(device, &v, 8, bar_off + off) != 8)
		return ~0ULL;
	return v;
}

/* The device's migration state, or -1. */
static int device_state(void)
{
	struct {
		struct vfio_device_feature f;
		struct vfio_device_feature_mig_state s;
	} a;

	memset(&a, 0, sizeof(a));
	a.f.argsz = sizeof(a);
	a.f.flags = VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE;
	if (ioctl(device, VFIO_DEVICE_FEATURE, &a))
		return -1;
	return (int)a.s.device_state;
}

/* DMA_LOGGING_REPORT of the probe page: 0 or errno. Reading clears only
 * what the device wrote into that page, which is nothing. */
static int probe_report(void)
{
	struct {
		struct vfio_device_feature f;
		struct vfio_device_feature_dma_logging_report r;
	} a;
	uint64_t bitmap = 0;

	memset(&a, 0, sizeof(a));
	a.f.argsz = sizeof(a);
	a.f.flags = VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT;
	a.r.iova = PROBE_IOVA;
	a.r.length = PAGE;
	a.r.page_size = PAGE;
	a.r.bitmap = (uintptr_t)&bitmap;
	return ioctl(device, VFIO_DEVICE_FEATURE, &a) ? errno : 0;
}

/* Starts one transfer; waits at most 2 s for it. 0, ETIMEDOUT (still
 * running or held back) or the errno of a register write. */
static int dma(bool to_ram, uint64_t iova, uint64_t devaddr, uint32_t count)
{
	double deadline;
	int err;

	/* 32-bit register writes: vfio-pci on 6.1 splits 8-byte ones and edu
	 * ignores the upper half; the driver takes the command whole. */
	if ((err = wr32(REG_DMA_SRC, to_ram ? devaddr : iova)) ||
	    (err = wr32(REG_DMA_DST, to_ram ? iova : devaddr)) ||
	    (err = wr32(REG_DMA_CNT, count)) ||
	    (err = wr64(REG_DMA_CMD, DMA_RUN | (to_ram ? DMA_TO_RAM : 0))))
		return err;
	deadline = now_s() + 2;
	while (rd64(REG_DMA_CMD) & DMA_RUN) {
		if (now_s() > deadline)
			return ETIMEDOUT;
		usleep(2000);
	}
	return 0;
}

static int setup(const char *group_name, const char *bdf)
{
	struct vfio_group_status gs = { .argsz = sizeof(gs) };
	struct vfio_region_info ri = { .argsz = sizeof(ri) };
	struct vfio_iommu_type1_dma_map map = { .argsz = sizeof(map),
		.flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
		.iova = IOVA_BASE, .size = RAM_SIZE };
	uint64_t cfg_off;
	uint16_t cmd;
	char path[64];
	int container, group, err;

	container = open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC);
	if (container < 0) {
		failure("open /dev/vfio/vfio: %s", strerror(errno));
		return -1;
	}
	snprintf(path, sizeof(path), "/dev/vfio/%s", group_name);
	group = open(path, O_RDWR | O_CLOEXEC);
	if (group < 0) {
		failure("open %s: %s", path, strerror(errno));
		return -1;
	}
	if (ioctl(group, VFIO_GROUP_GET_STATUS, &gs) ||
	    !(gs.flags & VFIO_GROUP_FLAGS_VIABLE)) {
		failure("group %s is not viable", group_name);
		return -1;
	}
	if (ioctl(group, VFIO_GROUP_SET_CONTAINER, &container) ||
	    ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU)) {
		failure("group %s: container setup: %s", group_name, strerror(errno));
		return -1;
	}
	ram = mmap(NULL, RAM_SIZE, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (ram == MAP_FAILED) {
		failure("mmap: %s", strerror(errno));
		return -1;
	}
	map.vaddr = (uintptr_t)ram;
	if (ioctl(container, VFIO_IOMMU_MAP_DMA, &map)) {
		failure("VFIO_IOMMU_MAP_DMA iova 0x%" PRIx64 " size 0x%" PRIx64 ": %s",
			IOVA_BASE, RAM_SIZE, strerror(errno));
		return -1;
	}
	device = ioctl(group, VFIO_GROUP_GET_DEVICE_FD, bdf);
	if (device < 0) {
		failure("VFIO_GROUP_GET_DEVICE_FD %s: %s", bdf, strerror(errno));
		return -1;
	}
	ri.index = VFIO_PCI_CONFIG_REGION_INDEX;
	if (ioctl(device, VFIO_DEVICE_GET_REGION_INFO, &ri)) {
		failure("%s: config region: %s", bdf, strerror(errno));
		return -1;
	}
	cfg_off = ri.offset;
	memset(&ri, 0, sizeof(ri));
	ri.argsz = sizeof(ri);
	ri.index = VFIO_PCI_BAR0_REGION_INDEX;
	if (ioctl(device, VFIO_DEVICE_GET_REGION_INFO, &ri)) {
		failure("%s: BAR0 region: %s", bdf, strerror(errno));
		return -1;
	}
	bar_off = ri.offset;
	/* Memory decode and bus mastering. */
	if (pread(device, &cmd, 2, cfg_off + 4) != 2) {
		failure("%s: read PCI command: %s", bdf, strerror(errno));
		return -1;
	}
	cmd |= 0x6;
	if (pwrite(device, &cmd, 2, cfg_off + 4) != 2) {
		failure("%s: write PCI command: %s", bdf, strerror(errno));
		return -1;
	}
	/* edu's buffer gets a known pattern; nobody logs yet. */
	for (size_t i = 0; i < sizeof(pattern); i++)
		pattern[i] = (uint8_t)(i * 7 + 0x5a + (i >> 8));
	memcpy(ram + (PATTERN_IOVA - IOVA_BASE), pattern, sizeof(pattern));
	err = dma(false, PATTERN_IOVA, EDU_BUF, sizeof(pattern));
	if (err) {
		failure("%s: loading edu's buffer by DMA: %s", bdf, strerror(err));
		return -1;
	}
	/* What the read transfer copies is the same pattern, so the buffer
	 * keeps it. */
	for (size_t i = 0; i < NTRANSFERS; i++)
		if (!transfers[i].to_ram)
			memcpy(ram + transfers[i].iova_off,
			       pattern + transfers[i].buf_off, transfers[i].count);
	say("%s (group %s): 0x%" PRIx64 " bytes mapped at IOVA 0x%" PRIx64
	    ", device fd %d, state %d", bdf, group_name, RAM_SIZE, IOVA_BASE,
	    device, device_state());
	return 0;
}

/* Listens on `path`, sends the device fd named `name` to the first peer. */
static int serve_fd(const char *path, const char *name)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	uint8_t msg[8 + 128];
	size_t len = strlen(name);
	char tmp[sizeof(addr.sun_path)];
	char control[CMSG_SPACE(sizeof(int))];
	struct iovec iov;
	struct msghdr mh;
	struct cmsghdr *cm;
	struct pollfd p;
	int listener, conn;
	ssize_t n;

	if (len == 0 || len > 128) {
		failure("device name \"%s\" is not 1..128 bytes", name);
		return -1;
	}
	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp)) {
		failure("socket path %s is too long", path);
		return -1;
	}
	listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (listener < 0) {
		failure("socket: %s", strerror(errno));
		return -1;
	}
	memcpy(addr.sun_path, tmp, strlen(tmp) + 1);
	unlink(tmp);
	if (bind(listener, (struct sockaddr *)&addr, sizeof(addr)) ||
	    listen(listener, 1) || rename(tmp, path)) {
		failure("listen on %s: %s", path, strerror(errno));
		return -1;
	}
	say("listening on %s", path);
	p.fd = listener;
	p.events = POLLIN;
	if (poll(&p, 1, WAIT_SECONDS * 1000) != 1) {
		failure("nobody connected to %s in %d s", path, WAIT_SECONDS);
		return -1;
	}
	conn = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
	if (conn < 0) {
		failure("accept: %s", strerror(errno));
		return -1;
	}
	memcpy(msg, "MGFD", 4);
	msg[4] = 1;
	msg[5] = 0;
	msg[6] = (uint8_t)len;
	msg[7] = (uint8_t)(len >> 8);
	memcpy(msg + 8, name, len);
	iov.iov_base = msg;
	iov.iov_len = 8 + len;
	memset(&mh, 0, sizeof(mh));
	memset(control, 0, sizeof(control));
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = control;
	mh.msg_controllen = sizeof(control);
	cm = CMSG_FIRSTHDR(&mh);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &device, sizeof(int));
	do {
		n = sendmsg(conn, &mh, MSG_NOSIGNAL);
	} while (n < 0 && errno == EINTR);
	if (n != (ssize_t)(8 + len)) {
		failure("sendmsg: %s", n < 0 ? strerror(errno) : "short write");
		return -1;
	}
	close(conn);
	close(listener);
	unlink(path);
	say("sent the device fd named %s over %s", name, path);
	return 0;
}

/* Waits until the agent logs DMA. Returns how it knew, or NULL. */
static const char *await_logging(void)
{
	double deadline = now_s() + WAIT_SECONDS;
	bool can_report = true;
	int err, st;

	while (now_s() < deadline) {
		if (can_report) {
			err = probe_report();
			if (err == 0)
				return "DMA_LOGGING_REPORT answers";
			if (err == EOPNOTSUPP || err == ENOTTY) {
				say("DMA_LOGGING_REPORT fails with %s: watching the device "
				    "state for PRE_COPY instead", strerror(err));
				can_report = false;
			} else if (err != EINVAL) {
				failure("probing DMA logging: %s", strerror(err));
				return NULL;
			}
		}
		st = device_state();
		if (!can_report && st == ST_PRE_COPY)
			return "the device is in PRE_COPY";
		if (st != ST_RUNNING && st != ST_PRE_COPY) {
			failure("the device left RUNNING (state %d) before DMA logging was seen on",
				st);
			return NULL;
		}
		usleep(2000);
	}
	failure("DMA logging not on within %d s", WAIT_SECONDS);
	return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Makes the transfers; the pages written go to the ground truth file. */
static int run_transfers(void)
{
	uint64_t pages[64];
	size_t npages = 0, done = 0, held = 0;
	char tmp[512];
	double t0 = now_s();
	FILE *f;
	int err, st;

	for (size_t i = 0; i < NTRANSFERS; i++) {
		const struct transfer *t = &transfers[i];
		uint64_t iova = IOVA_BASE + t->iova_off;
		uint8_t *at = ram + t->iova_off;

		st = device_state();
		if (st != ST_RUNNING && st != ST_PRE_COPY) {
			say("the device left RUNNING (state %d) after %zu transfers; stopping",
			    st, done);
			break;
		}
		if (t->to_ram)
			memset(at, 0, t->count);
		err = dma(t->to_ram, iova, EDU_BUF + t->buf_off, t->count);
		if (err == ETIMEDOUT) {
			/* Held back by P2P quiesce: it runs on the destination. */
			say("transfer %zu to 0x%" PRIx64 " did not run here (held back); stopping",
			    i, iova);
			held++;
			break;
		}
		if (err) {
			failure("transfer %zu: %s", i, strerror(err));
			return -1;
		}
		done++;
		if (!t->to_ram)
			continue;
		if (memcmp(at, pattern + t->buf_off, t->count)) {
			failure("transfer %zu: the device did not write %u bytes at IOVA 0x%" PRIx64,
				i, t->count, iova);
			return -1;
		}
		for (uint64_t p = iova & ~(PAGE - 1); p < iova + t->count; p += PAGE) {
			bool seen = false;

			for (size_t j = 0; j < npages; j++)
				seen = seen || pages[j] == p;
			if (!seen)
				pages[npages++] = p;
		}
	}
	qsort(pages, npages, sizeof(pages[0]), cmp_u64);
	snprintf(tmp, sizeof(tmp), "%s.tmp", truth_path);
	f = fopen(tmp, "w");
	if (!f) {
		failure("cannot write %s: %s", tmp, strerror(errno));
		return -1;
	}
	for (size_t j = 0; j < npages; j++)
		fprintf(f, "0x%" PRIx64 "\n", pages[j]);
	if (fclose(f) || rename(tmp, truth_path)) {
		failure("cannot write %s: %s", truth_path, strerror(errno));
		return -1;
	}
	say("%zu transfers in %.2f s (%zu held back), %zu pages written by the device "
	    "-> %s", done, now_s() - t0, held, npages, truth_path);
	return 0;
}

int main(int argc, char **argv)
{
	struct timespec limit = { .tv_sec = 600 };
	const char *how;
	sigset_t stop;
	int ok = 0, sig;

	if (argc != 5) {
		fprintf(stderr, "usage: %s GROUP BDF SOCKET GROUND_TRUTH\n", argv[0]);
		return 2;
	}
	truth_path = argv[4];
	sigemptyset(&stop);
	sigaddset(&stop, SIGTERM);
	sigaddset(&stop, SIGINT);
	sigprocmask(SIG_BLOCK, &stop, NULL);
	unlink(truth_path);

	if (setup(argv[1], argv[2]) == 0 && serve_fd(argv[3], argv[2]) == 0) {
		how = await_logging();
		if (how) {
			say("DMA logging is on (%s); the device writes RAM", how);
			ok = run_transfers() == 0;
		}
	}
	/* The VMM keeps the device, the container and its mapping. */
	sig = sigtimedwait(&stop, NULL, &limit);
	say("%s; closing the device and the container", sig > 0 ? strsignal(sig) :
	    "no signal in 10 minutes");
	return ok ? 0 : 1;
}
