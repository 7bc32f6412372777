/*
 * tb-agent: the netswap testbed's guest agent. Runs as PID 1 after tb-init,
 * locked in memory and OOM-protected, and speaks JSON lines over the
 * virtio-serial port named "tb.agent":
 *   guest -> host: {"type":"ready",...}, {"type":"telemetry",...} at 1 Hz,
 *                  {"type":"output","id":N,"line":...} for streamed jobs,
 *                  {"type":"result","id":N,"status":S,"stdout":...,"stderr":...}
 *   host -> guest: {"op":"exec","id":N,"argv":[...],"timeout":T,"stream":B}
 *                  {"op":"kill","id":N,"signal":S}, {"op":"ping","id":N}
 * Every buffer is static: once running, the agent allocates nothing, so it
 * keeps answering when the rest of the guest is starved of memory.
 * Bytes >= 0x80 are sent as \u00XX (latin-1); the host re-decodes them.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PORT_NAME "tb.agent"
#define MAXJOBS 8
#define OUTCAP (64 * 1024)
#define ERRCAP (16 * 1024)
#define LINECAP 4096
#define MAXARGS 64
#define REQCAP (32 * 1024)

extern char **environ;

struct job {
    int used;
    long id;
    pid_t pid;
    int fds[2]; /* stdout, stderr read ends; -1 when closed */
    int stream;
    int exited, status, timed_out;
    double deadline;
    char out[OUTCAP];
    size_t outlen;
    int outtrunc;
    char err[ERRCAP];
    size_t errlen;
    int errtrunc;
    char line[LINECAP];
    size_t linelen;
};

static struct job jobs[MAXJOBS];
static int port = -1;
static char wbuf[16 * 1024];
static size_t wlen;
static char rbuf[REQCAP];
static size_t rlen;
static char pbuf[32 * 1024]; /* /proc file contents */
static unsigned long seq;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- output ---------------------------------------------------------- */

/* virtio_console kmallocs a kernel buffer of each write's size (GFP_KERNEL). Small writes come from
 * a small slab that recycles as the host reads; a 16 KB write needs fresh order-2 pages, and under
 * memory pressure that blocked PID 1 in direct reclaim. */
#define WRITE_CHUNK 1024

static int broken_line; /* a message was cut short: end its line before the next one */

static void flush_out(void)
{
    size_t off = 0;
    if (broken_line && write(port, "\n", 1) == 1)
        broken_line = 0;
    while (off < wlen) {
        size_t len = wlen - off < WRITE_CHUNK ? wlen - off : WRITE_CHUNK;
        ssize_t n = write(port, wbuf + off, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                /* Wait for the host, but not forever: a host that stopped reading must not turn
                 * PID 1 into a busy loop (that CPU would look like a reclaim livelock). */
                struct pollfd pf = {.fd = port, .events = POLLOUT};
                if (poll(&pf, 1, 2000) > 0 && (pf.revents & POLLOUT))
                    continue;
            }
            broken_line = off > 0;
            break; /* host gone or stuck: drop this message, keep running */
        }
        off += n;
    }
    wlen = 0;
}

static void put(const char *s, size_t n)
{
    while (n) {
        size_t room = sizeof(wbuf) - wlen;
        size_t k = n < room ? n : room;
        memcpy(wbuf + wlen, s, k);
        wlen += k;
        s += k;
        n -= k;
        if (wlen == sizeof(wbuf))
            flush_out();
    }
}

static void puts_(const char *s) { put(s, strlen(s)); }

static void putf(const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n > 0)
        put(tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

static void put_str(const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    put("\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            put(e, 2);
        } else if (c == '\n') {
            put("\\n", 2);
        } else if (c < 0x20 || c >= 0x7f) {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            put(e, 6);
        } else {
            put((const char *)&s[i], 1);
        }
    }
    put("\"", 1);
}

static void put_cstr(const char *s) { put_str(s, strlen(s)); }

/* ---- /proc readers --------------------------------------------------- */

static size_t slurp(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, pbuf + len, sizeof(pbuf) - 1 - len);
        if (n <= 0)
            break;
        len += n;
        if (len == sizeof(pbuf) - 1)
            break;
    }
    close(fd);
    pbuf[len] = 0;
    return len;
}

/* "Key:   123 kB" lines (meminfo) or "key 123" lines (vmstat) -> {"Key":123,...} */
static void put_kv_file(const char *name, const char *path)
{
    putf("\"%s\":{", name);
    slurp(path);
    int first = 1;
    char *save = NULL;
    for (char *l = strtok_r(pbuf, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        char *sep = l;
        while (*sep && *sep != ':' && *sep != ' ')
            sep++;
        if (!*sep)
            continue;
        *sep++ = 0;
        while (*sep == ' ' || *sep == ':')
            sep++;
        char *end;
        long long v = strtoll(sep, &end, 10);
        if (end == sep)
            continue;
        if (!first)
            put(",", 1);
        first = 0;
        put_cstr(l);
        putf(":%lld", v);
    }
    put("}", 1);
}

/* /proc/net/{netstat,snmp}: pairs of "Prefix: names" / "Prefix: values" lines */
static void put_pairs_file(const char *name, const char *path)
{
    putf("\"%s\":{", name);
    slurp(path);
    char *lines[64];
    int nl = 0;
    char *save = NULL;
    for (char *l = strtok_r(pbuf, "\n", &save); l && nl < 64; l = strtok_r(NULL, "\n", &save))
        lines[nl++] = l;
    int firstgrp = 1;
    for (int i = 0; i + 1 < nl; i += 2) {
        char *hn = strchr(lines[i], ':'), *hv = strchr(lines[i + 1], ':');
        if (!hn || !hv)
            continue;
        *hn = 0;
        if (!firstgrp)
            put(",", 1);
        firstgrp = 0;
        put_cstr(lines[i]);
        put(":{", 2);
        char *sn = NULL, *sv = NULL;
        int first = 1;
        char *k = strtok_r(hn + 1, " ", &sn), *v = strtok_r(hv + 1, " ", &sv);
        for (; k && v; k = strtok_r(NULL, " ", &sn), v = strtok_r(NULL, " ", &sv)) {
            if (!first)
                put(",", 1);
            first = 0;
            put_cstr(k);
            putf(":%lld", strtoll(v, NULL, 10));
        }
        put("}", 1);
    }
    put("}", 1);
}

static void put_swaps(void)
{
    puts_("\"swaps\":[");
    slurp("/proc/swaps");
    char *save = NULL;
    int first = 1, header = 1;
    for (char *l = strtok_r(pbuf, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        if (header) {
            header = 0;
            continue;
        }
        char fname[256], type[32];
        long long size, used, prio;
        if (sscanf(l, "%255s %31s %lld %lld %lld", fname, type, &size, &used, &prio) != 5)
            continue;
        if (!first)
            put(",", 1);
        first = 0;
        puts_("{\"name\":");
        put_cstr(fname);
        puts_(",\"type\":");
        put_cstr(type);
        putf(",\"size_kb\":%lld,\"used_kb\":%lld,\"prio\":%lld}", size, used, prio);
    }
    put("]", 1);
}

/* /proc/net/dev: per interface rx/tx bytes, packets, drops */
static void put_netdev(void)
{
    puts_("\"netdev\":{");
    slurp("/proc/net/dev");
    char *save = NULL;
    int first = 1, skip = 2;
    for (char *l = strtok_r(pbuf, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        if (skip) {
            skip--;
            continue;
        }
        char *c = strchr(l, ':');
        if (!c)
            continue;
        *c = 0;
        while (*l == ' ')
            l++;
        unsigned long long v[16] = {0};
        if (sscanf(c + 1, "%llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
                   &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9], &v[10], &v[11]) < 12)
            continue;
        if (!first)
            put(",", 1);
        first = 0;
        put_cstr(l);
        putf(":{\"rx_bytes\":%llu,\"rx_packets\":%llu,\"rx_errs\":%llu,\"rx_drop\":%llu,", v[0], v[1], v[2], v[3]);
        putf("\"tx_bytes\":%llu,\"tx_packets\":%llu,\"tx_errs\":%llu,\"tx_drop\":%llu}", v[8], v[9], v[10], v[11]);
    }
    put("}", 1);
}

static void send_telemetry(void)
{
    putf("{\"type\":\"telemetry\",\"seq\":%lu,\"uptime\":%.3f,", seq++, now());
    put_kv_file("meminfo", "/proc/meminfo");
    put(",", 1);
    put_kv_file("vmstat", "/proc/vmstat");
    put(",", 1);
    put_pairs_file("netstat", "/proc/net/netstat");
    put(",", 1);
    put_pairs_file("snmp", "/proc/net/snmp");
    put(",", 1);
    put_netdev();
    put(",", 1);
    put_swaps();
    put(",", 1);
    /* a command workload's CPU time (tb-work run puts it in this cgroup): its progress */
    put_kv_file("workload_cpu", "/sys/fs/cgroup/tb.workload/cpu.stat");
    puts_("}\n");
    flush_out();
}

/* ---- request parsing: a small JSON reader for flat objects ------------ */

struct req {
    char op[16];
    long id;
    char *argv[MAXARGS + 1];
    int argc;
    double timeout;
    int stream;
    int sig;
};

static char argstore[REQCAP];

static const char *skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
        p++;
    return p;
}

/* Decode a JSON string at p (pointing at the opening quote) into *out. */
static const char *parse_string(const char *p, char **out, char **store, char *store_end)
{
    if (*p != '"')
        return NULL;
    p++;
    char *o = *store;
    while (*p && *p != '"') {
        if (o >= store_end - 1)
            return NULL;
        if (*p == '\\') {
            p++;
            switch (*p) {
            case 'n': *o++ = '\n'; break;
            case 't': *o++ = '\t'; break;
            case 'r': *o++ = '\r'; break;
            case 'b': *o++ = '\b'; break;
            case 'f': *o++ = '\f'; break;
            case 'u': {
                unsigned v = 0;
                for (int i = 1; i <= 4; i++) {
                    char c = p[i];
                    v <<= 4;
                    if (c >= '0' && c <= '9') v |= c - '0';
                    else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
                    else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
                    else return NULL;
                }
                p += 4;
                *o++ = v < 0x100 ? (char)v : '?';
                break;
            }
            case 0: return NULL;
            default: *o++ = *p;
            }
            p++;
        } else {
            *o++ = *p++;
        }
    }
    if (*p != '"')
        return NULL;
    *o++ = 0;
    *out = *store;
    *store = o;
    return p + 1;
}

static int parse_req(const char *line, struct req *r)
{
    memset(r, 0, sizeof(*r));
    r->id = -1;
    char *store = argstore, *end = argstore + sizeof(argstore);
    const char *p = skip_ws(line);
    if (*p++ != '{')
        return -1;
    for (;;) {
        p = skip_ws(p);
        if (*p == '}')
            return 0;
        char *key;
        p = parse_string(p, &key, &store, end);
        if (!p)
            return -1;
        p = skip_ws(p);
        if (*p++ != ':')
            return -1;
        p = skip_ws(p);
        if (*p == '"') {
            char *val;
            p = parse_string(p, &val, &store, end);
            if (!p)
                return -1;
            if (!strcmp(key, "op"))
                snprintf(r->op, sizeof(r->op), "%s", val);
        } else if (*p == '[') {
            p = skip_ws(p + 1);
            while (*p != ']') {
                char *val;
                p = parse_string(p, &val, &store, end);
                if (!p)
                    return -1;
                if (!strcmp(key, "argv")) {
                    if (r->argc == MAXARGS)
                        return -2; /* never run a silently shortened command */
                    r->argv[r->argc++] = val;
                }
                p = skip_ws(p);
                if (*p == ',')
                    p = skip_ws(p + 1);
                else if (*p != ']')
                    return -1;
            }
            p++;
        } else if (!strncmp(p, "true", 4) || !strncmp(p, "false", 5) || !strncmp(p, "null", 4)) {
            int v = *p == 't';
            p += *p == 'f' ? 5 : 4;
            if (!strcmp(key, "stream"))
                r->stream = v;
        } else {
            char *e;
            double v = strtod(p, &e);
            if (e == p)
                return -1;
            p = e;
            if (!strcmp(key, "id"))
                r->id = (long)v;
            else if (!strcmp(key, "timeout"))
                r->timeout = v;
            else if (!strcmp(key, "signal"))
                r->sig = (int)v;
        }
        p = skip_ws(p);
        if (*p == ',')
            p++;
        else if (*p != '}')
            return -1;
    }
}

/* ---- jobs ------------------------------------------------------------ */

static void send_error(long id, const char *msg)
{
    putf("{\"type\":\"error\",\"id\":%ld,\"message\":", id);
    put_cstr(msg);
    puts_("}\n");
    flush_out();
}

static void set_oom_score_adj(const char *v)
{
    int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
        write(fd, v, strlen(v));
        close(fd);
    }
}

static void start_job(struct req *r)
{
    struct job *j = NULL;
    for (int i = 0; i < MAXJOBS; i++)
        if (!jobs[i].used) {
            j = &jobs[i];
            break;
        }
    if (!j) {
        send_error(r->id, "too many running jobs");
        return;
    }
    if (r->argc == 0) {
        send_error(r->id, "exec needs a non-empty argv");
        return;
    }
    int po[2], pe[2];
    if (pipe2(po, O_CLOEXEC) < 0)
        goto fail;
    if (pipe2(pe, O_CLOEXEC) < 0) {
        close(po[0]);
        close(po[1]);
        goto fail;
    }
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, po[1], 1);
    posix_spawn_file_actions_adddup2(&fa, pe[1], 2);
    posix_spawnattr_init(&at);
    sigset_t none;
    sigemptyset(&none);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setpgroup(&at, 0);
    sigset_t deflt; /* the agent ignores SIGPIPE; its children must not inherit that */
    sigemptyset(&deflt);
    sigaddset(&deflt, SIGPIPE);
    posix_spawnattr_setsigdefault(&at, &deflt);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF);
    r->argv[r->argc] = NULL;
    pid_t pid;
    /* oom_score_adj is inherited: children must be ordinary OOM candidates, or the kernel panics
     * with "no killable processes" instead of killing the workload. PID 1 stays unkillable anyway. */
    set_oom_score_adj("0");
    int rc = posix_spawnp(&pid, r->argv[0], &fa, &at, r->argv, environ);
    set_oom_score_adj("-1000");
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    close(po[1]);
    close(pe[1]);
    if (rc != 0) {
        close(po[0]);
        close(pe[0]);
        char msg[300];
        snprintf(msg, sizeof(msg), "cannot run %s: %s", r->argv[0], strerror(rc));
        send_error(r->id, msg);
        return;
    }
    memset(j, 0, offsetof(struct job, out));
    j->used = 1;
    j->id = r->id;
    j->pid = pid;
    j->fds[0] = po[0];
    j->fds[1] = pe[0];
    j->stream = r->stream;
    j->outlen = j->errlen = j->linelen = 0;
    j->outtrunc = j->errtrunc = 0;
    j->deadline = r->timeout > 0 ? now() + r->timeout : 0;
    fcntl(po[0], F_SETFL, O_NONBLOCK);
    fcntl(pe[0], F_SETFL, O_NONBLOCK);
    return;
fail:
    send_error(r->id, strerror(errno));
}

static void emit_line(struct job *j)
{
    putf("{\"type\":\"output\",\"id\":%ld,\"line\":", j->id);
    put_str(j->line, j->linelen);
    puts_("}\n");
    flush_out();
    j->linelen = 0;
}

static void take_output(struct job *j, int which, const char *buf, size_t n)
{
    if (which == 1) {
        size_t room = ERRCAP - j->errlen;
        size_t k = n < room ? n : room;
        memcpy(j->err + j->errlen, buf, k);
        j->errlen += k;
        j->errtrunc |= k < n;
        return;
    }
    if (!j->stream) {
        size_t room = OUTCAP - j->outlen;
        size_t k = n < room ? n : room;
        memcpy(j->out + j->outlen, buf, k);
        j->outlen += k;
        j->outtrunc |= k < n;
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (buf[i] == '\n' || j->linelen == LINECAP) {
            emit_line(j);
            if (buf[i] == '\n')
                continue;
        }
        j->line[j->linelen++] = buf[i];
    }
}

static void drain(struct job *j, int which)
{
    char buf[4096];
    for (;;) {
        ssize_t n = read(j->fds[which], buf, sizeof(buf));
        if (n > 0) {
            take_output(j, which, buf, n);
            continue;
        }
        if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
            close(j->fds[which]);
            j->fds[which] = -1;
        }
        return;
    }
}

static void finish(struct job *j)
{
    for (int w = 0; w < 2; w++)
        if (j->fds[w] >= 0) {
            drain(j, w);
            if (j->fds[w] >= 0) {
                close(j->fds[w]);
                j->fds[w] = -1;
            }
        }
    if (j->stream && j->linelen)
        emit_line(j);
    int status = WIFEXITED(j->status) ? WEXITSTATUS(j->status) : -WTERMSIG(j->status);
    putf("{\"type\":\"result\",\"id\":%ld,\"status\":%d,\"timed_out\":%s,\"stdout\":", j->id, status,
         j->timed_out ? "true" : "false");
    put_str(j->out, j->outlen);
    puts_(",\"stderr\":");
    put_str(j->err, j->errlen);
    putf(",\"truncated\":%s}\n", (j->outtrunc || j->errtrunc) ? "true" : "false");
    flush_out();
    j->used = 0;
}

static void reap(void)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        for (int i = 0; i < MAXJOBS; i++)
            if (jobs[i].used && jobs[i].pid == pid) {
                jobs[i].exited = 1;
                jobs[i].status = status;
                finish(&jobs[i]);
            }
    }
}

static void handle_line(char *line)
{
    struct req r;
    int rc = parse_req(line, &r);
    if (rc == -2) {
        send_error(r.id, "argv has more than 64 arguments");
        return;
    }
    if (rc < 0) {
        send_error(-1, "malformed request");
        return;
    }
    if (!strcmp(r.op, "exec")) {
        start_job(&r);
    } else if (!strcmp(r.op, "kill")) {
        for (int i = 0; i < MAXJOBS; i++)
            if (jobs[i].used && jobs[i].id == r.id)
                kill(-jobs[i].pid, r.sig ? r.sig : SIGKILL);
    } else if (!strcmp(r.op, "ping")) {
        putf("{\"type\":\"pong\",\"id\":%ld,\"uptime\":%.3f}\n", r.id, now());
        flush_out();
    } else if (!strcmp(r.op, "poweroff")) {
        sync();
        reboot(RB_POWER_OFF);
    } else {
        send_error(r.id, "unknown op");
    }
}

static void read_port(void)
{
    for (;;) {
        ssize_t n = read(port, rbuf + rlen, sizeof(rbuf) - 1 - rlen);
        if (n <= 0)
            return;
        rlen += n;
        char *start = rbuf, *nl;
        while ((nl = memchr(start, '\n', rbuf + rlen - start))) {
            *nl = 0;
            handle_line(start);
            start = nl + 1;
        }
        rlen -= start - rbuf;
        memmove(rbuf, start, rlen);
        if (rlen == sizeof(rbuf) - 1) {
            send_error(-1, "request too long");
            rlen = 0;
        }
    }
}

/* ---- startup --------------------------------------------------------- */

static int open_port(void)
{
    for (int tries = 0; tries < 500; tries++) {
        DIR *d = opendir("/sys/class/virtio-ports");
        if (d) {
            struct dirent *e;
            while ((e = readdir(d))) {
                char path[300], name[64] = {0};
                snprintf(path, sizeof(path), "/sys/class/virtio-ports/%s/name", e->d_name);
                int fd = open(path, O_RDONLY);
                if (fd < 0)
                    continue;
                ssize_t n = read(fd, name, sizeof(name) - 1);
                close(fd);
                if (n > 0 && !strncmp(name, PORT_NAME, strlen(PORT_NAME))) {
                    snprintf(path, sizeof(path), "/dev/%s", e->d_name);
                    closedir(d);
                    return open(path, O_RDWR | O_CLOEXEC);
                }
            }
            closedir(d);
        }
        usleep(20000);
    }
    return -1;
}

int main(void)
{
    int locked = mlockall(MCL_CURRENT | MCL_FUTURE) == 0;
    set_oom_score_adj("-1000");
    port = open_port();
    if (port < 0) {
        fprintf(stderr, "tb-agent: no virtio-serial port named %s\n", PORT_NAME);
        return 1;
    }
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_IGN);
    int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    fcntl(port, F_SETFL, O_NONBLOCK);

    struct utsname u;
    uname(&u);
    putf("{\"type\":\"ready\",\"uptime\":%.3f,\"pid\":%d,\"mlocked\":%s,\"kernel\":", now(), getpid(),
         locked ? "true" : "false");
    put_cstr(u.release);
    puts_("}\n");
    flush_out();

    double next_tick = now();
    for (;;) {
        struct pollfd pf[2 + 2 * MAXJOBS];
        struct job *owner[2 + 2 * MAXJOBS];
        int which[2 + 2 * MAXJOBS];
        int n = 0;
        pf[n] = (struct pollfd){.fd = port, .events = POLLIN};
        owner[n++] = NULL;
        pf[n] = (struct pollfd){.fd = sfd, .events = POLLIN};
        owner[n++] = NULL;
        double t = now(), wake = next_tick;
        for (int i = 0; i < MAXJOBS; i++) {
            struct job *j = &jobs[i];
            if (!j->used)
                continue;
            if (j->deadline && t >= j->deadline && !j->timed_out) {
                j->timed_out = 1;
                kill(-j->pid, SIGKILL);
            }
            if (j->deadline && !j->timed_out && j->deadline < wake)
                wake = j->deadline;
            for (int w = 0; w < 2; w++)
                if (j->fds[w] >= 0) {
                    pf[n] = (struct pollfd){.fd = j->fds[w], .events = POLLIN};
                    owner[n] = j;
                    which[n++] = w;
                }
        }
        int ms = wake > t ? (int)((wake - t) * 1000) + 1 : 0;
        int rc = poll(pf, n, ms);
        if (rc < 0 && errno != EINTR)
            usleep(10000);
        if (rc > 0) {
            if (pf[0].revents & POLLIN)
                read_port();
            else if (pf[0].revents & (POLLHUP | POLLERR))
                usleep(100000); /* host side closed: wait for it to come back without spinning */
            if (pf[1].revents) {
                struct signalfd_siginfo si;
                while (read(sfd, &si, sizeof(si)) > 0)
                    ;
            }
            for (int i = 2; i < n; i++)
                if (pf[i].revents && owner[i]->used && owner[i]->fds[which[i]] == pf[i].fd)
                    drain(owner[i], which[i]);
        }
        reap();
        if (now() >= next_tick) {
            send_telemetry();
            next_tick += 1.0;
            if (next_tick < now())
                next_tick = now() + 1.0;
        }
    }
}
