/* vchan-peer: a libxenvchan peer for `cargo xtask xen-test vchan`.
 *
 *   vchan-peer server DOMID PORT BYTES [READ_MIN WRITE_MIN]   (dom0 serves DOMID)
 *   vchan-peer client DOMID PORT BYTES                        (DOMID serves dom0)
 *
 * Sends BYTES bytes and receives BYTES bytes at the same time. Stream contents: byte i of the
 * server -> client stream is pattern(i, 0x5a), of the client -> server stream pattern(i, 0xa5)
 * (see pattern() below; portcullis' side generates and checks the same). Prints FNV-1a
 * checksums and throughput; exit 0 only if every received byte matched. */
#include "vchan-util.h"

static uint8_t pattern(uint64_t i, uint8_t seed)
{
    return (uint8_t)((uint8_t)(i ^ (i >> 8) ^ (i >> 16)) * 31u + seed);
}

int main(int argc, char **argv)
{
    if (argc < 5 || (strcmp(argv[1], "server") && strcmp(argv[1], "client"))) {
        fprintf(stderr, "usage: %s server|client DOMID PORT BYTES [READ_MIN WRITE_MIN]\n", argv[0]);
        return 2;
    }
    int server = !strcmp(argv[1], "server");
    int domid = atoi(argv[2]), port = atoi(argv[3]);
    uint64_t total = strtoull(argv[4], NULL, 0);
    size_t read_min = argc > 5 ? strtoul(argv[5], NULL, 0) : 4096;
    size_t write_min = argc > 6 ? strtoul(argv[6], NULL, 0) : 4096;
    struct libxenvchan *c = server ? vchan_server(domid, port, read_min, write_min, 120)
                                   : vchan_client(domid, port, 120);
    uint8_t out_seed = server ? 0x5a : 0xa5, in_seed = server ? 0xa5 : 0x5a;
    uint64_t sent = 0, got = 0, bad_at = UINT64_MAX;
    uint64_t fnv_out = 0xcbf29ce484222325ull, fnv_in = 0xcbf29ce484222325ull;
    static uint8_t buf[65536];
    double t0 = now_s();
    while (sent < total || got < total) {
        int progress = 0;
        if (sent < total) {
            size_t n = total - sent < sizeof buf ? (size_t)(total - sent) : sizeof buf;
            for (size_t k = 0; k < n; k++)
                buf[k] = pattern(sent + k, out_seed);
            int w = libxenvchan_write(c, buf, n);
            if (w < 0)
                die("write");
            for (int k = 0; k < w; k++)
                fnv_out = (fnv_out ^ buf[k]) * 0x100000001b3ull;
            sent += (uint64_t)w;
            progress |= w > 0;
        }
        int r = libxenvchan_read(c, buf, sizeof buf);
        if (r < 0)
            die("read");
        for (int k = 0; k < r; k++) {
            if (bad_at == UINT64_MAX && buf[k] != pattern(got + (uint64_t)k, in_seed))
                bad_at = got + (uint64_t)k;
            fnv_in = (fnv_in ^ buf[k]) * 0x100000001b3ull;
        }
        got += (uint64_t)r;
        progress |= r > 0;
        if (!progress) {
            if (!libxenvchan_is_open(c) && libxenvchan_data_ready(c) == 0)
                break;
            if (libxenvchan_wait(c) < 0)
                die("wait");
        }
    }
    double dt = now_s() - t0;
    printf("role=%s domid=%d port=%d sent=%llu fnv_out=%016llx received=%llu fnv_in=%016llx "
           "seconds=%.3f MBps=%.1f\n",
           argv[1], domid, port, (unsigned long long)sent, (unsigned long long)fnv_out,
           (unsigned long long)got, (unsigned long long)fnv_in, dt, dt > 0 ? 2.0 * (double)total / dt / 1e6 : 0.0);
    int ok = sent == total && got == total && bad_at == UINT64_MAX;
    if (bad_at != UINT64_MAX)
        printf("MISMATCH at byte %llu\n", (unsigned long long)bad_at);
    printf("%s\n", ok ? "OK" : "FAIL");
    libxenvchan_close(c);
    return ok ? 0 : 1;
}
