/* qubesdb-double: the dom0 QubesDB daemon as a VM sees it (qubes-protocols.md §1).
 *
 *   qubesdb-double DOMID KEYS SCRIPT LOG [LINGER_SECONDS]
 *
 * vchan server on port 111 for DOMID with 4096/4096 rings. KEYS: one entry a line,
 * "/path value" (value may be empty, runs to the end of the line). Answers exactly one
 * QDB_CMD_MULTIREAD (empty path) with every entry as QDB_RESP_MULTIREAD in reverse order and
 * the empty terminator. Then runs SCRIPT, one command a line:
 *   write /path value   push QDB_CMD_WRITE, wait for its QDB_RESP_OK
 *   rm /path            push QDB_CMD_RM (a trailing '/' removes a subtree), wait for RESP_OK
 *   sleep MS            pause (still answering the VM)
 *   expect /path        wait until the VM writes /path (e.g. /qubes-iptables-error)
 *   waitfile FILE       wait (still answering the VM) until FILE exists in dom0, so a
 *                       scenario can run steps between the script's
 * Every message from the VM is logged to LOG ("<type> <path> <value>"); its WRITEs are
 * stored and answered with QDB_RESP_OK. After the script it keeps serving for LINGER_SECONDS
 * (default 5). Exit 0 if the script ran to the end. */
#include "vchan-util.h"

#define QDB_MAX_DATA 3072
#define QDB_MAX_PATH 64
#define HDR_LEN 72
enum { CMD_READ, CMD_WRITE, CMD_MULTIREAD, CMD_LIST, CMD_RM, CMD_WATCH, CMD_UNWATCH, RESP_OK,
       RESP_ERROR_NOENT, RESP_ERROR, RESP_READ, RESP_MULTIREAD, RESP_LIST, RESP_WATCH };

struct msg {
    uint8_t type;
    char path[QDB_MAX_PATH];
    uint32_t len;
    char data[QDB_MAX_DATA + 1];
};

static struct libxenvchan *ch;
static FILE *logf;
static char expected[QDB_MAX_PATH];
static int expected_seen;

static void send_msg(uint8_t type, const char *path, const char *data, uint32_t len)
{
    uint8_t hdr[HDR_LEN] = { 0 };
    hdr[0] = type;
    strncpy((char *)hdr + 1, path, QDB_MAX_PATH - 1);
    put_le32(hdr + 68, len);
    if (send_all(ch, hdr, HDR_LEN) || (len && send_all(ch, data, len)))
        die("vchan closed while sending");
}

static int recv_msg(struct msg *m)
{
    uint8_t hdr[HDR_LEN];
    if (recv_all(ch, hdr, HDR_LEN))
        return -1;
    m->type = hdr[0];
    memcpy(m->path, hdr + 1, QDB_MAX_PATH);
    m->path[QDB_MAX_PATH - 1] = 0;
    m->len = get_le32(hdr + 68);
    if (m->len >= QDB_MAX_DATA) {
        fprintf(logf, "BAD data_len %u\n", m->len);
        die("VM sent data_len >= 3072");
    }
    if (recv_all(ch, m->data, m->len))
        return -1;
    m->data[m->len] = 0;
    return 0;
}

/* Logs and answers one message from the VM; returns its type. */
static int handle_one(void)
{
    struct msg m;
    if (recv_msg(&m))
        die("VM closed the vchan");
    static const char *names[] = { "READ", "WRITE", "MULTIREAD", "LIST", "RM", "WATCH", "UNWATCH",
                                   "RESP_OK", "RESP_ERROR_NOENT", "RESP_ERROR", "RESP_READ",
                                   "RESP_MULTIREAD", "RESP_LIST", "RESP_WATCH" };
    fprintf(logf, "%s %s %.*s\n", m.type < 14 ? names[m.type] : "UNKNOWN", m.path, (int)m.len, m.data);
    fflush(logf);
    if (m.type == CMD_WRITE) {
        send_msg(RESP_OK, m.path, NULL, 0);
        if (!strcmp(m.path, expected))
            expected_seen = 1;
    } else if (m.type != RESP_OK) {
        fprintf(logf, "unexpected message type %u\n", m.type);
    }
    return m.type;
}

/* Pushes a WRITE or RM and serves the VM until it answers RESP_OK for it. */
static void push(uint8_t type, const char *path, const char *value)
{
    send_msg(type, path, value, value ? (uint32_t)strlen(value) : 0);
    while (handle_one() != RESP_OK)
        ;
}

static void serve_for(double seconds)
{
    double until = now_s() + seconds;
    while (now_s() < until && libxenvchan_is_open(ch)) {
        if (libxenvchan_data_ready(ch) > 0)
            handle_one();
        else
            usleep(5000);
    }
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: %s DOMID KEYS SCRIPT LOG [LINGER_SECONDS]\n", argv[0]);
        return 2;
    }
    int domid = atoi(argv[1]);
    double linger = argc > 5 ? atof(argv[5]) : 5;
    FILE *keys = fopen(argv[2], "r"), *script = fopen(argv[3], "r");
    logf = fopen(argv[4], "w");
    if (!keys || !script || !logf)
        die("cannot open KEYS, SCRIPT or LOG");
    static char paths[1024][QDB_MAX_PATH], values[1024][QDB_MAX_DATA];
    int n = 0;
    char line[QDB_MAX_PATH + QDB_MAX_DATA + 8];
    while (n < 1024 && fgets(line, sizeof line, keys)) {
        line[strcspn(line, "\n")] = 0;
        if (line[0] != '/')
            continue;
        char *sp = strchr(line, ' ');
        const char *val = sp ? sp + 1 : "";
        if (sp)
            *sp = 0;
        if (strlen(line) >= QDB_MAX_PATH || strlen(val) >= QDB_MAX_DATA)
            die("KEYS: path >= 64 or value >= 3072 bytes");
        memcpy(paths[n], line, strlen(line) + 1);
        memcpy(values[n], val, strlen(val) + 1);
        n++;
    }
    ch = vchan_server(domid, 111, 4096, 4096, 300);
    fprintf(logf, "connected\n");
    struct msg m;
    if (recv_msg(&m) || m.type != CMD_MULTIREAD || m.path[0] != 0)
        die("the VM's first message is not an empty-path MULTIREAD");
    fprintf(logf, "MULTIREAD\n");
    for (int i = n - 1; i >= 0; i--)
        send_msg(RESP_MULTIREAD, paths[i], values[i], (uint32_t)strlen(values[i]));
    send_msg(RESP_MULTIREAD, "", NULL, 0);
    fprintf(logf, "sent %d entries\n", n);
    fflush(logf);
    while (fgets(line, sizeof line, script)) {
        line[strcspn(line, "\n")] = 0;
        char *arg = strchr(line, ' ');
        if (arg)
            *arg++ = 0;
        if (!strcmp(line, "write") && arg) {
            char *sp = strchr(arg, ' ');
            const char *val = sp ? sp + 1 : "";
            if (sp)
                *sp = 0;
            push(CMD_WRITE, arg, val);
        } else if (!strcmp(line, "rm") && arg) {
            push(CMD_RM, arg, NULL);
        } else if (!strcmp(line, "sleep") && arg) {
            serve_for(atof(arg) / 1000.0);
        } else if (!strcmp(line, "waitfile") && arg) {
            while (access(arg, F_OK) != 0) {
                if (!libxenvchan_is_open(ch))
                    die("VM closed the vchan");
                serve_for(0.1);
            }
        } else if (!strcmp(line, "expect") && arg) {
            if (strlen(arg) >= sizeof expected)
                die("SCRIPT: path too long");
            memcpy(expected, arg, strlen(arg) + 1);
            expected_seen = 0;
            while (!expected_seen)
                handle_one();
        } else if (line[0] && line[0] != '#') {
            fprintf(stderr, "bad script line: %s\n", line);
            return 2;
        }
        fprintf(logf, "script: %s %s done\n", line, arg ? arg : "");
        fflush(logf);
    }
    serve_for(linger);
    fprintf(logf, "done\n");
    fclose(logf);
    libxenvchan_close(ch);
    return 0;
}
