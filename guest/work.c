/*
 * tb-work: the testbed's guest workloads. Each writes a verifiable pattern
 * (every page carries its index and a per-pass seed, the rest is derived from
 * both), reads it back and checks it, and prints JSON progress lines at least
 * once a second on stdout:
 *   {"progress":DONE,"total":TOTAL,"pass":P,"phase":"write"|"verify"}
 *   {"mismatch":{"page":I,"pass":P,"word":W,"expected":E,"got":G}}   (exit 3)
 *   {"done":true,"pages":N,"seconds":S}                              (exit 0)
 * Modes:
 *   anon SIZE_MB PASSES SEED              anonymous memory beyond RAM, so it must swap
 *   mmap-shared FILE SIZE_MB PASSES SEED  a file mapped MAP_SHARED, dirtied, msync'ed in chunks,
 *                                         unmapped, dropped from the page cache, re-read, verified
 *   write FILE SIZE_MB PASSES SEED        buffered write()s with an fsync every 16 MB, then the
 *                                         same drop and verify
 *   udp-sink PORT [RCVBUF]                a UDP socket bound on PORT (0: any free one) that is
 *                                         never read, so a flood fills its receive queue; prints
 *                                         {"listening":PORT,"rcvbuf":BYTES} (the kernel's figure)
 *                                         and sleeps until killed; named tb-udp-sink
 * Progress counts pages: written (or dirtied), synced, verified.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096
#define WORDS (PAGE / 8)

static char line[512];
static double t0, last_report;
static uint64_t total, done;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if (n > (int)sizeof(line) - 2)
        n = sizeof(line) - 2;
    line[n++] = '\n';
    for (int off = 0; off < n;) {
        ssize_t w = write(1, line + off, n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        off += w;
    }
}

static void progress(int pass, const char *phase, int force)
{
    double t = now();
    if (!force && t - last_report < 0.5)
        return;
    last_report = t;
    say("{\"progress\":%llu,\"total\":%llu,\"pass\":%d,\"phase\":\"%s\",\"t\":%.3f}", (unsigned long long)done,
        (unsigned long long)total, pass, phase, t - t0);
}

static inline uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static void fill_page(uint64_t *p, uint64_t index, uint64_t seed)
{
    p[0] = index;
    p[1] = seed;
    uint64_t s = mix(index * 0x9e3779b97f4a7c15ULL ^ seed);
    for (int w = 2; w < WORDS; w++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        p[w] = s;
    }
}

/* Returns -1 when the page is intact, else the index of the first bad word. */
static int check_page(const uint64_t *p, uint64_t index, uint64_t seed, uint64_t *expected)
{
    static uint64_t want[WORDS];
    fill_page(want, index, seed);
    for (int w = 0; w < WORDS; w++)
        if (p[w] != want[w]) {
            *expected = want[w];
            return w;
        }
    return -1;
}

static int run_anon(uint64_t pages, int passes, uint64_t seed0)
{
    uint64_t *mem = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                         -1, 0);
    if (mem == MAP_FAILED) {
        say("{\"error\":\"mmap of %llu pages failed: %s\"}", (unsigned long long)pages, strerror(errno));
        return 2;
    }
    total = pages * 2 * passes;
    for (int pass = 0; pass < passes; pass++) {
        uint64_t seed = seed0 + pass;
        for (uint64_t i = 0; i < pages; i++) {
            fill_page(mem + i * WORDS, i, seed);
            done++;
            if ((i & 63) == 0)
                progress(pass, "write", 0);
        }
        progress(pass, "write", 1);
        for (uint64_t i = 0; i < pages; i++) {
            uint64_t expected;
            int w = check_page(mem + i * WORDS, i, seed, &expected);
            if (w >= 0) {
                say("{\"mismatch\":{\"page\":%llu,\"pass\":%d,\"word\":%d,\"expected\":%llu,\"got\":%llu}}",
                    (unsigned long long)i, pass, w, (unsigned long long)expected,
                    (unsigned long long)mem[i * WORDS + w]);
                return 3;
            }
            done++;
            if ((i & 63) == 0)
                progress(pass, "verify", 0);
        }
        progress(pass, "verify", 1);
    }
    say("{\"done\":true,\"pages\":%llu,\"passes\":%d,\"seconds\":%.3f}", (unsigned long long)pages, passes,
        now() - t0);
    return 0;
}

static int fail(const char *what, const char *path)
{
    say("{\"error\":\"%s %s: %s\"}", what, path, strerror(errno));
    return errno == EIO ? 5 : 2;
}

static int mismatch(uint64_t page, int pass, int word, uint64_t expected, uint64_t got)
{
    say("{\"mismatch\":{\"page\":%llu,\"pass\":%d,\"word\":%d,\"expected\":%llu,\"got\":%llu}}",
        (unsigned long long)page, pass, word, (unsigned long long)expected, (unsigned long long)got);
    return 3;
}

/* Drop the file's clean pages so the verify pass reads from the storage, not from memory. */
static int drop_cache(int fd, const char *path)
{
    if (fsync(fd) < 0)
        return fail("fsync", path);
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    return 0;
}

static int verify_file(int fd, const char *path, uint64_t pages, int pass, uint64_t seed)
{
    static uint64_t buf[WORDS];
    for (uint64_t i = 0; i < pages; i++) {
        ssize_t n = pread(fd, buf, PAGE, (off_t)(i * PAGE));
        if (n != PAGE)
            return n < 0 ? fail("read", path) : mismatch(i, pass, 0, i, 0);
        uint64_t expected;
        int w = check_page(buf, i, seed, &expected);
        if (w >= 0)
            return mismatch(i, pass, w, expected, buf[w]);
        done++;
        if ((i & 63) == 0)
            progress(pass, "verify", 0);
    }
    progress(pass, "verify", 1);
    return 0;
}

static int run_mmap(const char *path, uint64_t pages, int passes, uint64_t seed0)
{
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        return fail("open", path);
    if (ftruncate(fd, (off_t)(pages * PAGE)) < 0)
        return fail("ftruncate", path);
    total = pages * 3 * passes;
    const uint64_t chunk = 1024; /* pages per msync: progress while writeback runs */
    for (int pass = 0; pass < passes; pass++) {
        uint64_t seed = seed0 + pass;
        uint64_t *mem = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (mem == MAP_FAILED)
            return fail("mmap", path);
        for (uint64_t i = 0; i < pages; i++) {
            fill_page(mem + i * WORDS, i, seed);
            done++;
            if ((i & 63) == 0)
                progress(pass, "write", 0);
        }
        progress(pass, "write", 1);
        for (uint64_t i = 0; i < pages; i += chunk) {
            uint64_t n = pages - i < chunk ? pages - i : chunk;
            if (msync(mem + i * WORDS, n * PAGE, MS_SYNC) < 0)
                return fail("msync", path);
            done += n;
            progress(pass, "sync", 0);
        }
        progress(pass, "sync", 1);
        munmap(mem, pages * PAGE);
        int rc = drop_cache(fd, path);
        if (rc)
            return rc;
        rc = verify_file(fd, path, pages, pass, seed);
        if (rc)
            return rc;
    }
    close(fd);
    say("{\"done\":true,\"pages\":%llu,\"passes\":%d,\"seconds\":%.3f}", (unsigned long long)pages, passes,
        now() - t0);
    return 0;
}

static int run_write(const char *path, uint64_t pages, int passes, uint64_t seed0)
{
    static uint64_t buf[WORDS];
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        return fail("open", path);
    total = pages * 3 * passes;
    const uint64_t every = 4096; /* pages between fsyncs: 16 MB */
    for (int pass = 0; pass < passes; pass++) {
        uint64_t seed = seed0 + pass, synced = 0;
        for (uint64_t i = 0; i < pages; i++) {
            fill_page(buf, i, seed);
            if (pwrite(fd, buf, PAGE, (off_t)(i * PAGE)) != PAGE)
                return fail("write", path);
            done++;
            if ((i & 63) == 0)
                progress(pass, "write", 0);
            if ((i + 1) % every == 0 || i + 1 == pages) {
                if (fdatasync(fd) < 0)
                    return fail("fsync", path);
                done += i + 1 - synced;
                synced = i + 1;
                progress(pass, "sync", 0);
            }
        }
        progress(pass, "sync", 1);
        int rc = drop_cache(fd, path);
        if (rc)
            return rc;
        rc = verify_file(fd, path, pages, pass, seed);
        if (rc)
            return rc;
    }
    close(fd);
    say("{\"done\":true,\"pages\":%llu,\"passes\":%d,\"seconds\":%.3f}", (unsigned long long)pages, passes,
        now() - t0);
    return 0;
}

/* Bind and never read: datagrams queue until the socket's receive buffer is full, then are dropped
 * (RcvbufErrors). Its own name keeps it apart from the workload in ps and in OOM reports. */
static int run_udp_sink(const char *port_arg, int port, int rcvbuf)
{
    prctl(PR_SET_NAME, "tb-udp-sink");
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0)
        return fail("socket", port_arg);
    if (rcvbuf > 0 && setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)) < 0)
        return fail("SO_RCVBUF", port_arg);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_ANY)};
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
        return fail("bind", port_arg);
    socklen_t len = sizeof(a);
    getsockname(fd, (struct sockaddr *)&a, &len);
    len = sizeof(rcvbuf);
    getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, &len);
    say("{\"listening\":%d,\"rcvbuf\":%d}", ntohs(a.sin_port), rcvbuf);
    for (;;)
        pause();
}

static void usage(void)
{
    say("{\"error\":\"usage: tb-work anon SIZE_MB PASSES SEED | tb-work {mmap-shared,write} FILE SIZE_MB PASSES SEED"
        " | tb-work udp-sink PORT [RCVBUF]\"}");
    exit(2);
}

int main(int argc, char **argv)
{
    t0 = now();
    if (argc >= 3 && argc <= 4 && !strcmp(argv[1], "udp-sink")) {
        char *end;
        long port = strtol(argv[2], &end, 10), rcvbuf = argc == 4 ? atol(argv[3]) : 0;
        if (*end || end == argv[2] || port < 0 || port > 65535 || rcvbuf < 0 || rcvbuf > (1L << 30))
            usage();
        return run_udp_sink(argv[2], (int)port, (int)rcvbuf);
    }
    int file = argc == 6 && (!strcmp(argv[1], "mmap-shared") || !strcmp(argv[1], "write"));
    if (!(argc == 5 && !strcmp(argv[1], "anon")) && !file)
        usage();
    char **a = argv + (file ? 3 : 2);
    uint64_t size_mb = strtoull(a[0], NULL, 10);
    int passes = atoi(a[1]);
    uint64_t seed = strtoull(a[2], NULL, 10);
    if (!size_mb || passes < 1)
        usage();
    if (!strcmp(argv[1], "anon"))
        return run_anon(size_mb * 256, passes, seed);
    if (!strcmp(argv[1], "mmap-shared"))
        return run_mmap(argv[2], size_mb * 256, passes, seed);
    return run_write(argv[2], size_mb * 256, passes, seed);
}
