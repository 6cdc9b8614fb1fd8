/* icmp-ping HOST COUNT INTERVAL_MS WAIT_S
 *
 * ping -i INTERVAL -c COUNT, but every reply counts however late it comes within WAIT_S after
 * the last request (busybox ping gives the last replies only max(1 s, 2 RTT), which an
 * emulated machine's hiccup can exceed). Sends echo requests with a fixed identifier and
 * sequence numbers 0..COUNT-1 on a raw socket, prints
 *   icmp-ping: sent N received M (unique) duplicate D lost L rtt max X ms
 * and exits 0 only if every request got exactly one reply. Built statically by xtask. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/ip_icmp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static uint16_t csum(const void *p, size_t n) {
    const uint8_t *b = p;
    uint32_t s = 0;
    for (size_t i = 0; i + 1 < n; i += 2) s += (uint32_t)(b[i] << 8 | b[i + 1]);
    if (n & 1) s += (uint32_t)(b[n - 1] << 8);
    while (s >> 16) s = (s & 0xffff) + (s >> 16);
    return htons((uint16_t)~s);
}

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

int main(int argc, char **argv) {
    if (argc != 5) { fprintf(stderr, "usage: icmp-ping HOST COUNT INTERVAL_MS WAIT_S\n"); return 1; }
    int count = atoi(argv[2]), interval = atoi(argv[3]), wait_s = atoi(argv[4]);
    if (count <= 0 || count > 65536 || interval < 0 || wait_s < 0) { fprintf(stderr, "bad arguments\n"); return 1; }
    struct sockaddr_in to = {.sin_family = AF_INET};
    if (inet_pton(AF_INET, argv[1], &to.sin_addr) != 1) { fprintf(stderr, "bad address\n"); return 1; }
    int s = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
    if (s < 0) { perror("socket"); return 1; }
    uint16_t ident = (uint16_t)(getpid() & 0xffff);
    unsigned char *seen = calloc((size_t)count, 1);
    double *sent_at = calloc((size_t)count, sizeof(double));
    int sent = 0, received = 0, dups = 0;
    double rtt_max = 0, next = now_ms(), end = 0;
    for (;;) {
        double t = now_ms();
        if (sent < count && t >= next) {
            unsigned char pkt[64] = {0};
            struct icmphdr *h = (struct icmphdr *)pkt;
            h->type = ICMP_ECHO;
            h->un.echo.id = htons(ident);
            h->un.echo.sequence = htons((uint16_t)sent);
            memcpy(pkt + 8, "portcullis-icmp-ping", 20);
            h->checksum = csum(pkt, sizeof pkt);
            sent_at[sent] = t;
            if (sendto(s, pkt, sizeof pkt, 0, (struct sockaddr *)&to, sizeof to) < 0) perror("sendto");
            sent++;
            next += interval;
            if (sent == count) end = now_ms() + wait_s * 1e3;
        }
        if (sent == count && (received == count || now_ms() >= end)) break;
        int timeout = sent < count ? (int)(next - now_ms()) : (int)(end - now_ms());
        if (timeout < 0) timeout = 0;
        struct pollfd p = {.fd = s, .events = POLLIN};
        if (poll(&p, 1, timeout) <= 0) continue;
        unsigned char buf[2048];
        ssize_t n = recv(s, buf, sizeof buf, 0);
        if (n < (ssize_t)sizeof(struct iphdr)) continue;
        struct iphdr *ip = (struct iphdr *)buf;
        size_t hl = (size_t)ip->ihl * 4;
        if ((size_t)n < hl + 8 || ip->saddr != to.sin_addr.s_addr) continue;
        struct icmphdr *h = (struct icmphdr *)(buf + hl);
        if (h->type != ICMP_ECHOREPLY || ntohs(h->un.echo.id) != ident) continue;
        int seq = ntohs(h->un.echo.sequence);
        if (seq >= sent) continue;
        if (seen[seq]) { dups++; continue; }
        seen[seq] = 1;
        received++;
        double rtt = now_ms() - sent_at[seq];
        if (rtt > rtt_max) rtt_max = rtt;
    }
    printf("icmp-ping: sent %d received %d (unique) duplicate %d lost %d rtt max %.1f ms\n", sent, received, dups,
           count - received, rtt_max);
    return received == count && dups == 0 ? 0 : 2;
}
