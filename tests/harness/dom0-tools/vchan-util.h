/* Shared helpers of the dom0 doubles: libxenvchan set-up the way Qubes' libvchan-xen does it,
 * and whole-buffer reads and writes over non-blocking vchans. */
#ifndef VCHAN_UTIL_H
#define VCHAN_UTIL_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <libxenvchan.h>
#include <xenstore.h>

static inline double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline void die(const char *what)
{
    fprintf(stderr, "fatal: %s\n", what);
    exit(2);
}

/* Server for `client` on `port`: nodes at /local/domain/0/data/vchan/<client>/<port>; waits
 * until the client sets cli_live, then removes the nodes as Qubes' libvchan_wait does. */
static inline struct libxenvchan *vchan_server(int client, int port, size_t read_min, size_t write_min,
                                               double timeout_s)
{
    char path[128];
    snprintf(path, sizeof path, "data/vchan/%d/%d", client, port);
    struct libxenvchan *c = libxenvchan_server_init(NULL, client, path, read_min, write_min);
    if (!c)
        die("libxenvchan_server_init");
    double until = now_s() + timeout_s;
    while (libxenvchan_is_open(c) == 2) {
        if (now_s() > until)
            die("client did not connect in time");
        /* The client's connect notifies; poll as well in case the event came before we waited. */
        usleep(10000);
    }
    if (libxenvchan_is_open(c) != 1)
        die("client left before connecting");
    struct xs_handle *xs = xs_open(0);
    if (xs) {
        char abs[160];
        snprintf(abs, sizeof abs, "/local/domain/0/%s", path);
        xs_rm(xs, XBT_NULL, abs);
        xs_close(xs);
    }
    return c;
}

/* Client of the vchan that domain `server` offers us (dom0) on `port`; waits for its nodes. */
static inline struct libxenvchan *vchan_client(int server, int port, double timeout_s)
{
    char path[128], key[160];
    snprintf(path, sizeof path, "/local/domain/%d/data/vchan/0/%d", server, port);
    snprintf(key, sizeof key, "%s/event-channel", path);
    struct xs_handle *xs = xs_open(0);
    if (!xs)
        die("xs_open");
    double until = now_s() + timeout_s;
    for (;;) {
        unsigned int len = 0;
        char *v = xs_read(xs, XBT_NULL, key, &len);
        int ready = v && len > 0;
        free(v);
        if (ready)
            break;
        if (now_s() > until)
            die("server nodes did not appear in time");
        usleep(50000);
    }
    xs_close(xs);
    struct libxenvchan *c = libxenvchan_client_init(NULL, server, path);
    if (!c)
        die("libxenvchan_client_init");
    return c;
}

/* Reads exactly n bytes; 0 on success, -1 if the peer closed first. */
static inline int recv_all(struct libxenvchan *c, void *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        int r = libxenvchan_read(c, (char *)buf + got, n - got);
        if (r < 0)
            return -1;
        got += (size_t)r;
        if (got < n) {
            if (!libxenvchan_is_open(c) && libxenvchan_data_ready(c) == 0)
                return -1;
            if (r == 0 && libxenvchan_wait(c) < 0)
                return -1;
        }
    }
    return 0;
}

/* Writes exactly n bytes (in pieces as space frees); 0 on success, -1 if the peer closed. */
static inline int send_all(struct libxenvchan *c, const void *buf, size_t n)
{
    size_t sent = 0;
    while (sent < n) {
        if (!libxenvchan_is_open(c))
            return -1;
        int r = libxenvchan_write(c, (const char *)buf + sent, n - sent);
        if (r < 0)
            return -1;
        sent += (size_t)r;
        if (sent < n && r == 0 && libxenvchan_wait(c) < 0)
            return -1;
    }
    return 0;
}

static inline uint32_t get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline void put_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

#endif
