/* qrexec-double: dom0's qrexec-daemon and qrexec-client as a VM agent sees them
 * (qubes-protocols.md §2).
 *
 *   qrexec-double DOMID SERVICE [STDIN_FILE|-] [DATA_PORT] [VERSION]
 *
 * Connects as vchan client to the agent's port 512, reads its MSG_HELLO and answers with
 * VERSION (default 3); serves the data vchan on DATA_PORT (default 513) with 65536-byte rings;
 * sends MSG_EXEC_CMDLINE {connect_domain 0, connect_port DATA_PORT, "user:QUBESRPC SERVICE
 * dom0"}; on the data vchan exchanges MSG_HELLO, sends STDIN_FILE (or nothing) as
 * MSG_DATA_STDIN and the empty EOF, copies MSG_DATA_STDOUT/STDERR to stdout/stderr, prints
 * "exit code N" and waits up to 5 s for MSG_CONNECTION_TERMINATED on the control channel.
 * Exits with the service's exit code (125 on a protocol failure). */
#include "vchan-util.h"

enum { MSG_EXEC_CMDLINE = 0x200, MSG_CONNECTION_TERMINATED = 0x211, MSG_HELLO = 0x300,
       MSG_DATA_STDIN = 0x190, MSG_DATA_STDOUT = 0x191, MSG_DATA_STDERR = 0x192, MSG_DATA_EXIT_CODE = 0x193 };

static void send_hdr(struct libxenvchan *c, uint32_t type, uint32_t len)
{
    uint8_t h[8];
    put_le32(h, type);
    put_le32(h + 4, len);
    if (send_all(c, h, 8))
        die("vchan closed");
}

static void recv_hdr(struct libxenvchan *c, uint32_t *type, uint32_t *len)
{
    uint8_t h[8];
    if (recv_all(c, h, 8))
        die("vchan closed");
    *type = get_le32(h);
    *len = get_le32(h + 4);
}

static uint32_t hello(struct libxenvchan *c, uint32_t mine, int send_first)
{
    uint8_t v[4];
    uint32_t type, len;
    if (send_first) {
        send_hdr(c, MSG_HELLO, 4);
        put_le32(v, mine);
        if (send_all(c, v, 4))
            die("vchan closed");
    }
    recv_hdr(c, &type, &len);
    if (type != MSG_HELLO || len != 4)
        die("expected MSG_HELLO");
    if (recv_all(c, v, 4))
        die("vchan closed");
    uint32_t theirs = get_le32(v);
    if (!send_first) {
        send_hdr(c, MSG_HELLO, 4);
        put_le32(v, mine);
        if (send_all(c, v, 4))
            die("vchan closed");
    }
    return theirs;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s DOMID SERVICE [STDIN_FILE|-] [DATA_PORT] [VERSION]\n", argv[0]);
        return 2;
    }
    int domid = atoi(argv[1]);
    const char *service = argv[2];
    const char *input = argc > 3 ? argv[3] : "-";
    int data_port = argc > 4 ? atoi(argv[4]) : 513;
    uint32_t version = argc > 5 ? (uint32_t)atoi(argv[5]) : 3;

    struct libxenvchan *ctl = vchan_client(domid, 512, 120);
    uint32_t agent = hello(ctl, version, 0);
    uint32_t proto = agent < version ? agent : version;
    printf("control: agent version %u, negotiated %u\n", agent, proto);
    if (proto < 2)
        die("agent protocol too old");

    char cmdline[512];
    int clen = snprintf(cmdline, sizeof cmdline, "user:QUBESRPC %s dom0", service) + 1;
    uint8_t params[8];
    put_le32(params, 0);
    put_le32(params + 4, (uint32_t)data_port);
    /* The agent connects to the data vchan as soon as it reads the command: serve it first. */
    char path[128];
    snprintf(path, sizeof path, "data/vchan/%d/%d", domid, data_port);
    struct libxenvchan *data = libxenvchan_server_init(NULL, domid, path, 65536, 65536);
    if (!data)
        die("libxenvchan_server_init (data)");
    send_hdr(ctl, MSG_EXEC_CMDLINE, 8 + (uint32_t)clen);
    if (send_all(ctl, params, 8) || send_all(ctl, cmdline, (size_t)clen))
        die("control vchan closed");
    double until = now_s() + 30;
    while (libxenvchan_is_open(data) == 2) {
        if (now_s() > until)
            die("agent did not connect the data vchan");
        usleep(10000);
    }
    struct xs_handle *xs = xs_open(0);
    if (xs) {
        char abs[160];
        snprintf(abs, sizeof abs, "/local/domain/0/%s", path);
        xs_rm(xs, XBT_NULL, abs);
        xs_close(xs);
    }
    uint32_t data_version = hello(data, version, 1);
    printf("data: agent version %u\n", data_version);

    static char buf[65536];
    FILE *in = strcmp(input, "-") ? fopen(input, "r") : NULL;
    size_t n;
    /* A service that does not read stdin may finish and close the data vchan before all of
     * it (or the EOF) is sent, as real agents do: like qrexec-client, stop sending then and
     * read what the agent left in the ring. */
    int open = 1;
    uint8_t h[8];
    while (open && in && (n = fread(buf, 1, sizeof buf, in)) > 0) {
        put_le32(h, MSG_DATA_STDIN);
        put_le32(h + 4, (uint32_t)n);
        open = !send_all(data, h, 8) && !send_all(data, buf, n);
    }
    put_le32(h, MSG_DATA_STDIN);
    put_le32(h + 4, 0);
    if (!open || send_all(data, h, 8))
        printf("data: the agent closed before stdin was sent\n");

    int code = 125;
    for (;;) {
        uint32_t type, len;
        recv_hdr(data, &type, &len);
        if (len > sizeof buf)
            die("chunk over 64 KiB");
        if (recv_all(data, buf, len))
            die("data vchan closed");
        if (type == MSG_DATA_STDOUT)
            fwrite(buf, 1, len, stdout);
        else if (type == MSG_DATA_STDERR)
            fwrite(buf, 1, len, stderr);
        else if (type == MSG_DATA_EXIT_CODE && len == 4) {
            code = (int)get_le32((uint8_t *)buf);
            break;
        } else {
            fprintf(stderr, "unexpected data message 0x%x len %u\n", type, len);
            break;
        }
    }
    fflush(stdout);
    printf("exit code %d\n", code);
    until = now_s() + 5;
    while (now_s() < until && libxenvchan_is_open(ctl)) {
        if (libxenvchan_data_ready(ctl) >= 8) {
            uint32_t type, len;
            recv_hdr(ctl, &type, &len);
            if (len > sizeof buf || recv_all(ctl, buf, len))
                die("control vchan");
            if (type == MSG_CONNECTION_TERMINATED && len == 8)
                printf("connection terminated: port %u\n", get_le32((uint8_t *)buf + 4));
            else
                printf("control message 0x%x len %u\n", type, len);
            break;
        }
        usleep(10000);
    }
    libxenvchan_close(data);
    libxenvchan_close(ctl);
    return code;
}
