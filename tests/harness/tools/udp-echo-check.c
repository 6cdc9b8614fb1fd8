/* udp-echo-check HOST PORT COUNT [WINDOW]
 *
 * Sends COUNT UDP datagrams of mixed sizes (1..1472 bytes, the edges included) to an echo
 * service, at most WINDOW outstanding, and checks that each comes back byte for byte. Exits
 * 0 only if every datagram came back intact exactly once; prints the totals either way.
 * Built statically by `cargo xtask xen-test` and run in the harness dom0. */
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_PAYLOAD 1472

static size_t size_of(uint32_t seq) {
    static const size_t edges[] = {1, 4, 8, 60, 1024, 1471, 1472};
    if (seq % 10 < 7) return edges[seq % 10] < 8 ? 8 : edges[seq % 10];
    return 8 + (seq * 2654435761u) % (MAX_PAYLOAD - 8 + 1);
}

static void fill(uint8_t *buf, uint32_t seq, size_t len) {
    uint32_t x = seq * 2246822519u + 1;
    memcpy(buf, &seq, 4);
    uint32_t l = (uint32_t)len;
    memcpy(buf + 4, &l, 4);
    for (size_t i = 8; i < len; i++) {
        x ^= x << 13; x ^= x >> 17; x ^= x << 5;
        buf[i] = (uint8_t)x;
    }
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s HOST PORT COUNT [WINDOW]\n", argv[0]);
        return 2;
    }
    uint32_t count = (uint32_t)strtoul(argv[3], 0, 10);
    uint32_t window = argc > 4 ? (uint32_t)strtoul(argv[4], 0, 10) : 16;
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &dst.sin_addr) != 1) return 2;
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&dst, sizeof dst) < 0) {
        perror("socket");
        return 2;
    }
    uint8_t *seen = calloc(count, 1);
    uint8_t out[MAX_PAYLOAD], in[MAX_PAYLOAD + 1], want[MAX_PAYLOAD];
    uint32_t next = 0, received = 0, corrupt = 0, dup = 0, bytes = 0;
    double t0 = now(), last = now();
    while (received + corrupt < count) {
        while (next < count && next - received - corrupt < window) {
            size_t len = size_of(next);
            fill(out, next, len);
            if (send(fd, out, len, 0) < 0 && errno != ENOBUFS) {
                perror("send");
                return 2;
            }
            next++;
        }
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 200) <= 0) {
            if (now() - last > 3.0) break; /* nothing for 3 s: the rest is lost */
            continue;
        }
        ssize_t n = recv(fd, in, sizeof in, 0);
        if (n < 8) { corrupt++; continue; }
        last = now();
        uint32_t seq;
        memcpy(&seq, in, 4);
        if (seq >= count) { corrupt++; continue; }
        if (seen[seq]) { dup++; continue; }
        fill(want, seq, size_of(seq));
        if ((size_t)n != size_of(seq) || memcmp(in, want, (size_t)n) != 0) { corrupt++; seen[seq] = 1; continue; }
        seen[seq] = 1;
        received++;
        bytes += (uint32_t)n;
    }
    double dt = now() - t0;
    uint32_t lost = count - received - corrupt;
    printf("udp-echo-check: sent %u received %u intact (%u bytes) corrupt %u duplicate %u lost %u in %.1f s (%.0f datagrams/s)\n",
           next, received, bytes, corrupt, dup, lost, dt, received / (dt > 0 ? dt : 1));
    return (received == count && dup == 0) ? 0 : 1;
}
