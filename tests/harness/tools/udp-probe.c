/* udp-probe: small UDP tools for the forwarding scenario (static; run in dom0 and in clients).
 *
 *   udp-probe server PORT SECONDS       echo server: answers every datagram to its sender and
 *                                       prints "from A.B.C.D:PORT" the first time it sees a
 *                                       source (so dom0 can tell what NAT made of a client)
 *   udp-probe probe HOST PORT SRCPORT   sends one datagram from SRCPORT on a connected socket
 *                                       and waits 3 s: prints and exits "reply" 0,
 *                                       "refused" 2 (an ICMP port unreachable came back),
 *                                       "unreachable" 4 (an ICMP host/admin prohibited or
 *                                       unreachable came back), "timeout" 3, other errors 1
 *   udp-probe send HOST PORT SRCPORT    sends one datagram from SRCPORT, exits 0
 *   udp-probe stream HOST PORT SRCPORT SECONDS
 *                                       one flow: a datagram from SRCPORT every 100 ms for
 *                                       SECONDS; prints "reply" for each answer and "refused" /
 *                                       "unreachable" for each ICMP error the socket reports
 *                                       (and keeps sending) */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int bound_socket(int port) {
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    if (s < 0) { perror("socket"); exit(1); }
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    if (bind(s, (struct sockaddr *)&a, sizeof a) < 0) { perror("bind"); exit(1); }
    return s;
}

static struct sockaddr_in address(const char *host, int port) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1) { fprintf(stderr, "bad address %s\n", host); exit(1); }
    return a;
}

static int server(int port, int seconds) {
    int s = bound_socket(port);
    struct { struct in_addr a; unsigned short p; } seen[64];
    int nseen = 0;
    time_t end = time(NULL) + seconds;
    char buf[2048];
    while (time(NULL) < end) {
        struct pollfd p = {.fd = s, .events = POLLIN};
        if (poll(&p, 1, 500) <= 0) continue;
        struct sockaddr_in from;
        socklen_t fl = sizeof from;
        ssize_t n = recvfrom(s, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl);
        if (n < 0) continue;
        int known = 0;
        for (int i = 0; i < nseen; i++)
            if (seen[i].a.s_addr == from.sin_addr.s_addr && seen[i].p == from.sin_port) known = 1;
        if (!known && nseen < 64) {
            seen[nseen].a = from.sin_addr;
            seen[nseen].p = from.sin_port;
            nseen++;
            printf("from %s:%d\n", inet_ntoa(from.sin_addr), ntohs(from.sin_port));
            fflush(stdout);
        }
        sendto(s, buf, (size_t)n, 0, (struct sockaddr *)&from, fl);
    }
    return 0;
}

static int probe(const char *host, int port, int srcport, int wait) {
    int s = bound_socket(srcport);
    struct sockaddr_in to = address(host, port);
    if (connect(s, (struct sockaddr *)&to, sizeof to) < 0) { perror("connect"); return 1; }
    const char msg[] = "udp-probe";
    if (send(s, msg, sizeof msg, 0) < 0) { perror("send"); return 1; }
    if (!wait) return 0;
    struct pollfd p = {.fd = s, .events = POLLIN};
    if (poll(&p, 1, 3000) <= 0) { puts("timeout"); return 3; }
    char buf[2048];
    if (recv(s, buf, sizeof buf, 0) >= 0) { puts("reply"); return 0; }
    if (errno == ECONNREFUSED) { puts("refused"); return 2; }
    if (errno == EHOSTUNREACH || errno == ENETUNREACH) { puts("unreachable"); return 4; }
    perror("recv");
    return 1;
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Prints what the socket's last error was, if any; returns whether there was one. */
static int report_error(int s) {
    int err = 0;
    socklen_t l = sizeof err;
    getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &l);
    if (!err) return 0;
    if (err == ECONNREFUSED) puts("refused");
    else if (err == EHOSTUNREACH || err == ENETUNREACH) puts("unreachable");
    else printf("error %s\n", strerror(err));
    return 1;
}

static int stream(const char *host, int port, int srcport, int seconds) {
    int s = bound_socket(srcport);
    struct sockaddr_in to = address(host, port);
    if (connect(s, (struct sockaddr *)&to, sizeof to) < 0) { perror("connect"); return 1; }
    double end = now_s() + seconds, next = 0;
    unsigned seq = 0;
    char buf[2048];
    while (now_s() < end) {
        if (now_s() >= next) {
            next = now_s() + 0.1;
            int n = snprintf(buf, sizeof buf, "udp-probe stream %u", seq++);
            if (send(s, buf, (size_t)n, 0) < 0) report_error(s);
        }
        struct pollfd p = {.fd = s, .events = POLLIN};
        int w = (int)((next - now_s()) * 1000) + 1;
        if (poll(&p, 1, w > 0 ? w : 1) <= 0) continue;
        if (recv(s, buf, sizeof buf, 0) >= 0) puts("reply");
        else if (errno == ECONNREFUSED) puts("refused");
        else if (errno == EHOSTUNREACH || errno == ENETUNREACH) puts("unreachable");
        else printf("error %s\n", strerror(errno));
        fflush(stdout);
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "server")) return server(atoi(argv[2]), atoi(argv[3]));
    if (argc == 5 && !strcmp(argv[1], "probe")) return probe(argv[2], atoi(argv[3]), atoi(argv[4]), 1);
    if (argc == 5 && !strcmp(argv[1], "send")) return probe(argv[2], atoi(argv[3]), atoi(argv[4]), 0);
    if (argc == 6 && !strcmp(argv[1], "stream"))
        return stream(argv[2], atoi(argv[3]), atoi(argv[4]), atoi(argv[5]));
    fprintf(stderr, "usage: udp-probe server PORT SECONDS | probe HOST PORT SRCPORT | send HOST PORT SRCPORT"
                    " | stream HOST PORT SRCPORT SECONDS\n");
    return 1;
}
