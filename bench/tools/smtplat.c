/* smtplat: SMTP load with per-message latency of the final reply, C speed.
 *
 * usage: smtplat HOST PORT CONC MSGS SIZE FROM TO MAXSECONDS
 *   Like `smtp-source -s CONC -m MSGS -l SIZE -f FROM -t TO HOST:PORT`: CONC connections at
 *   a time, ONE message per connection (connect, banner, EHLO, MAIL, RCPT, DATA, message,
 *   ".", QUIT, close), no pipelining. For every message it times
 *     dot:  the last byte of "<CRLF>.<CRLF>" handed to the kernel -> the 250 reply read
 *           (what the server spends making the message durable before acknowledging it)
 *     txn:  connect() -> that 250 (the whole transaction as the client sees it)
 *   Stops after MSGS messages or MAXSECONDS (<= 600). Prints one line:
 *     msgs=N errors=E seconds=S msgs_per_sec=R dot_p50_ms= dot_p90_ms= dot_p99_ms= dot_max_ms=
 *     txn_p50_ms= txn_p99_ms= [first_error="..."]
 *   Percentiles are nearest-rank over the messages that got their 250.
 * Only 127.0.0.0/8 targets are accepted; CONC <= 2000, SIZE <= 10 MiB.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>
#include <errno.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/epoll.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
static int cmpd(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return x < y ? -1 : x > y; }

enum { S_CONNECT, S_BANNER, S_EHLO, S_MAIL, S_RCPT, S_DATA, S_BODY, S_DOT, S_QUIT };
static const int expect[] = { 0, 220, 250, 250, 250, 354, 0, 250, 221 };

struct conn {
    int fd, state;
    double t_connect, t_dot;
    char rbuf[8192];
    size_t rlen;
    const char *w;   /* pending write */
    size_t wlen, woff;
    char cmd[600];
};

static struct sockaddr_in addr;
static int ep;
static char *message;  /* headers + body + ".\r\n" */
static size_t message_len;
static char mail_cmd[300], rcpt_cmd[300];
static long started, finished, ok, errors, total;
static double *dot_lat, *txn_lat;
static char first_error[200];

static void fail(struct conn *c, const char *why) {
    errors++;
    if (!first_error[0]) snprintf(first_error, sizeof first_error, "%s", why);
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    finished++;
}

static int start(struct conn *c) {
    if (started >= total) { c->fd = -1; return 0; }
    started++;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0) { fail(c, "socket"); return -1; }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->t_connect = now();
    c->rlen = 0; c->w = NULL; c->wlen = c->woff = 0;
    int r = connect(c->fd, (struct sockaddr *)&addr, sizeof addr);
    if (r < 0 && errno != EINPROGRESS) { fail(c, "connect"); return -1; }
    c->state = S_CONNECT;
    struct epoll_event ev = { .events = EPOLLOUT | EPOLLIN, .data.ptr = c };
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    return 0;
}

/* write as much of the pending buffer as the socket takes; 1 when all written, 0 if not yet, -1 on error */
static int flush(struct conn *c) {
    while (c->woff < c->wlen) {
        ssize_t n = write(c->fd, c->w + c->woff, c->wlen - c->woff);
        if (n < 0) {
            if (errno == EAGAIN) return 0;
            return -1;
        }
        c->woff += n;
    }
    return 1;
}

static int send_buf(struct conn *c, const char *p, size_t len, int next_state) {
    c->w = p; c->wlen = len; c->woff = 0;
    c->state = next_state;
    return flush(c);
}

/* a complete reply (the last line "ddd " + CRLF) in rbuf? returns its code, 0 if incomplete, -1 if garbage */
static int reply_code(struct conn *c) {
    size_t start = 0;
    for (size_t i = 0; i + 1 < c->rlen; i++) {
        if (c->rbuf[i] == '\r' && c->rbuf[i + 1] == '\n') {
            if (i - start < 3) return -1;
            if (i - start == 3 || c->rbuf[start + 3] == ' ') {
                int code = atoi(c->rbuf + start);
                size_t used = i + 2;
                memmove(c->rbuf, c->rbuf + used, c->rlen - used);
                c->rlen -= used;
                return code;
            }
            start = i + 2;
        }
    }
    if (c->rlen == sizeof c->rbuf) return -1;
    return 0;
}

static void step(struct conn *c, unsigned events) {
    if (c->state == S_CONNECT) {
        int err = 0; socklen_t el = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err) { fail(c, "connect refused"); start(c); return; }
        c->state = S_BANNER;
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        return;
    }
    if (c->w && c->woff < c->wlen) {  /* finishing a write (the body, usually) */
        int r = flush(c);
        if (r < 0) { fail(c, "write"); start(c); return; }
        if (r == 0) return;
        if (c->state == S_BODY) { c->t_dot = now(); c->state = S_DOT; }
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        if (!(events & EPOLLIN)) return;
    }
    if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR))) return;
    ssize_t n = read(c->fd, c->rbuf + c->rlen, sizeof c->rbuf - c->rlen);
    if (n < 0 && errno == EAGAIN) return;
    if (n <= 0) {
        if (c->state == S_QUIT) {  /* closed without 221: the message was acknowledged already */
            close(c->fd); c->fd = -1; finished++; start(c); return;
        }
        fail(c, "connection closed by server"); start(c); return;
    }
    c->rlen += n;
    for (;;) {
        int code = reply_code(c);
        if (code == 0) return;
        double t = now();
        if (code != expect[c->state]) {
            char why[120];
            snprintf(why, sizeof why, "state %d: expected %d, got %d", c->state, expect[c->state], code);
            fail(c, why); start(c); return;
        }
        int r = 1;
        switch (c->state) {
        case S_BANNER:
            snprintf(c->cmd, sizeof c->cmd, "EHLO smtplat.test\r\n");
            r = send_buf(c, c->cmd, strlen(c->cmd), S_EHLO); break;
        case S_EHLO: r = send_buf(c, mail_cmd, strlen(mail_cmd), S_MAIL); break;
        case S_MAIL: r = send_buf(c, rcpt_cmd, strlen(rcpt_cmd), S_RCPT); break;
        case S_RCPT: r = send_buf(c, "DATA\r\n", 6, S_DATA); break;
        case S_DATA:
            r = send_buf(c, message, message_len, S_BODY);
            if (r == 1) { c->t_dot = now(); c->state = S_DOT; }
            else if (r == 0) {
                struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT, .data.ptr = c };
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                return;
            }
            break;
        case S_DOT:
            dot_lat[ok] = t - c->t_dot;
            txn_lat[ok] = t - c->t_connect;
            ok++;
            r = send_buf(c, "QUIT\r\n", 6, S_QUIT); break;
        case S_QUIT:
            close(c->fd); c->fd = -1; finished++; start(c); return;
        }
        if (r < 0) { fail(c, "write"); start(c); return; }
    }
}

static double pct(double *v, long n, double p) {
    if (n == 0) return 0;
    long k = (long)(p * n + 0.999999) - 1;
    if (k < 0) k = 0;
    if (k >= n) k = n - 1;
    return v[k] * 1e3;
}

int main(int argc, char **argv) {
    if (argc != 9) {
        fprintf(stderr, "usage: smtplat HOST PORT CONC MSGS SIZE FROM TO MAXSECONDS\n");
        return 2;
    }
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons(atoi(argv[2]));
    if (inet_pton(AF_INET, argv[1], &addr.sin_addr) != 1 || (ntohl(addr.sin_addr.s_addr) >> 24) != 127) {
        fprintf(stderr, "only 127.0.0.0/8 allowed\n");
        return 2;
    }
    int conc = atoi(argv[3]);
    total = atol(argv[4]);
    long size = atol(argv[5]);
    double maxsec = atof(argv[8]);
    if (conc < 1 || conc > 2000 || total < 1 || total > 1000000 || size < 1 || size > 10 << 20
        || maxsec <= 0 || maxsec > 600 || strlen(argv[6]) > 200 || strlen(argv[7]) > 200) {
        fprintf(stderr, "bad bounds\n");
        return 2;
    }
    snprintf(mail_cmd, sizeof mail_cmd, "MAIL FROM:<%s>\r\n", argv[6]);
    snprintf(rcpt_cmd, sizeof rcpt_cmd, "RCPT TO:<%s>\r\n", argv[7]);
    /* the message: a few headers, then 78-octet lines of text, about SIZE octets, then "." */
    message = malloc(size + 1024);
    int h = snprintf(message, 1024, "From: <%s>\r\nTo: <%s>\r\nSubject: smtplat load\r\n"
                     "Message-ID: <smtplat.%ld@smtplat.test>\r\n\r\n", argv[6], argv[7], (long)getpid());
    size_t len = h;
    while ((long)len + 78 <= size) {
        memset(message + len, 'x', 76);
        message[len + 76] = '\r'; message[len + 77] = '\n';
        len += 78;
    }
    memcpy(message + len, ".\r\n", 3);
    message_len = len + 3;

    dot_lat = calloc(total, sizeof(double));
    txn_lat = calloc(total, sizeof(double));
    ep = epoll_create1(0);
    struct conn *cs = calloc(conc, sizeof *cs);
    double t0 = now(), deadline = t0 + maxsec;
    for (int i = 0; i < conc; i++) { cs[i].fd = -1; start(&cs[i]); }
    struct epoll_event evs[256];
    while (finished < total && now() < deadline) {
        int n = epoll_wait(ep, evs, 256, 200);
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c->fd >= 0) step(c, evs[i].events);
        }
    }
    double secs = now() - t0;
    if (finished < total && !first_error[0]) snprintf(first_error, sizeof first_error, "time limit");
    qsort(dot_lat, ok, sizeof(double), cmpd);
    qsort(txn_lat, ok, sizeof(double), cmpd);
    printf("msgs=%ld errors=%ld seconds=%.4f msgs_per_sec=%.1f dot_p50_ms=%.3f dot_p90_ms=%.3f "
           "dot_p99_ms=%.3f dot_max_ms=%.3f txn_p50_ms=%.3f txn_p99_ms=%.3f",
           ok, errors + (total - finished), secs, ok / secs, pct(dot_lat, ok, .5), pct(dot_lat, ok, .9),
           pct(dot_lat, ok, .99), pct(dot_lat, ok, 1), pct(txn_lat, ok, .5), pct(txn_lat, ok, .99));
    if (first_error[0]) printf(" first_error=\"%s\"", first_error);
    printf("\n");
    return ok == total ? 0 : 1;
}
