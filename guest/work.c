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
 *   readers NPROC SIZE_MB PASSES SEED     Mel Gorman's swap-over-NBD shape: NPROC processes, each
 *                                         with its share of SIZE_MB of anonymous memory, write it
 *                                         once, then read it linearly PASSES times, verifying every
 *                                         page; progress is their shared page count
 *   run CGROUP ARGV...                    enter cgroup v2 CGROUP (made if absent: the agent reports
 *                                         its cpu.stat) and exec ARGV, its stderr joined to stdout:
 *                                         any command as a workload
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
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
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

/* One reader: its slice of pages [first, first + pages) of the whole, written once with the
 * pass-0 seed, then read and verified linearly PASSES times. Counts into the shared counter. */
static int reader(uint64_t first, uint64_t pages, int passes, uint64_t seed, uint64_t *shared)
{
    uint64_t *mem = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                         -1, 0);
    if (mem == MAP_FAILED) {
        say("{\"error\":\"mmap of %llu pages failed: %s\"}", (unsigned long long)pages, strerror(errno));
        return 2;
    }
    for (uint64_t i = 0; i < pages; i++) {
        fill_page(mem + i * WORDS, first + i, seed);
        __atomic_add_fetch(shared, 1, __ATOMIC_RELAXED);
    }
    for (int pass = 1; pass <= passes; pass++)
        for (uint64_t i = 0; i < pages; i++) {
            uint64_t expected;
            int w = check_page(mem + i * WORDS, first + i, seed, &expected);
            if (w >= 0)
                return mismatch(first + i, pass, w, expected, mem[i * WORDS + w]);
            __atomic_add_fetch(shared, 1, __ATOMIC_RELAXED);
        }
    return 0;
}

static void stop_readers(pid_t *pids, int nproc)
{
    for (int k = 0; k < nproc; k++)
        if (pids[k] > 0)
            kill(pids[k], SIGKILL);
    while (wait(NULL) > 0)
        ;
}

static int run_readers(int nproc, uint64_t pages, int passes, uint64_t seed)
{
    uint64_t *shared = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    pid_t *pids = calloc(nproc, sizeof(pid_t));
    if (shared == MAP_FAILED || !pids) {
        say("{\"error\":\"readers: no memory for the shared counter\"}");
        return 2;
    }
    uint64_t each = pages / nproc;
    total = each * nproc * (1 + (uint64_t)passes);
    for (int k = 0; k < nproc; k++) {
        pid_t pid = fork();
        if (pid < 0) {
            say("{\"error\":\"fork of reader %d: %s\"}", k, strerror(errno));
            stop_readers(pids, nproc);
            return 2;
        }
        if (pid == 0)
            _exit(reader(k * each, each, passes, seed, shared));
        pids[k] = pid;
    }
    for (int left = nproc; left > 0;) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid > 0) {
            for (int k = 0; k < nproc; k++)
                if (pids[k] == pid)
                    pids[k] = 0;
            left--;
            if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                int rc = WIFEXITED(status) ? WEXITSTATUS(status) : 4;
                if (!WIFEXITED(status))
                    say("{\"error\":\"a reader (pid %d) was killed by signal %d\"}", pid, WTERMSIG(status));
                stop_readers(pids, nproc);
                return rc;
            }
            continue;
        }
        done = __atomic_load_n(shared, __ATOMIC_RELAXED);
        int pass = done < each * nproc ? 0 : (int)((done - each * nproc) / (each * nproc)) + 1;
        progress(pass > passes ? passes : pass, pass ? "read" : "write", 0);
        usleep(100 * 1000);
    }
    done = __atomic_load_n(shared, __ATOMIC_RELAXED);
    progress(passes, "read", 1);
    say("{\"done\":true,\"pages\":%llu,\"passes\":%d,\"processes\":%d,\"seconds\":%.3f}",
        (unsigned long long)(each * nproc), passes, nproc, now() - t0);
    return 0;
}

/* Enter cgroup v2 CGROUP, then become the command: its processes, and any it starts, are accounted
 * there (cpu.stat), so the command's progress is its CPU time, which stops when the client stops. */
static int run_in_cgroup(const char *cgroup, char **argv)
{
    char path[512];
    if (mkdir(cgroup, 0755) < 0 && errno != EEXIST)
        return fail("mkdir", cgroup);
    snprintf(path, sizeof(path), "%s/cgroup.procs", cgroup);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return fail("open", path);
    char pid[32];
    int n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
    if (write(fd, pid, n) != n)
        return fail("write", path);
    close(fd);
    dup2(1, 2); /* one stream, in the order it was written: the agent streams stdout as lines */
    execvp(argv[0], argv);
    say("{\"error\":\"cannot run %s: %s\"}", argv[0], strerror(errno));
    return 127;
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
        " | tb-work readers NPROC SIZE_MB PASSES SEED | tb-work run CGROUP ARGV... | tb-work udp-sink PORT [RCVBUF]\"}");
    exit(2);
}

int main(int argc, char **argv)
{
    t0 = now();
    if (argc >= 4 && !strcmp(argv[1], "run"))
        return run_in_cgroup(argv[2], argv + 3);
    if (argc == 6 && !strcmp(argv[1], "readers")) {
        int nproc = atoi(argv[2]), passes = atoi(argv[4]);
        uint64_t size_mb = strtoull(argv[3], NULL, 10);
        if (nproc < 1 || nproc > 1024 || !size_mb || passes < 1 || size_mb * 256 < (uint64_t)nproc)
            usage();
        return run_readers(nproc, size_mb * 256, passes, strtoull(argv[5], NULL, 10));
    }
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
