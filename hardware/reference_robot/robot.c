/*
 * robopol reference robot: the robot side of docs/protocol.md (version 1) in portable C99 with POSIX
 * sockets, no other dependency. A vendor may start from it; robopol's tests and bench drive it.
 *
 * The plant is trivial: each state dimension i follows the command u[i % act_dim] as a first-order lag
 * with time constant tau (x += (u - x) * dt / tau per tick). The robot ticks at --rate Hz: it applies its
 * latest command, steps the plant and streams an OBSERVATION to the session's client. Between ticks it
 * handles datagrams as they arrive. Its own watchdog ends the session (command 0, no stepping, no
 * streaming) when no valid ACTION has come for --command-timeout seconds, or none within ARM_TIMEOUT_S
 * of the HELLO; STOP ends it at once. Non-finite ACTIONs are rejected; finite ones are clamped to
 * [-limit, limit]. With --action-log FILE it writes one line per accepted ACTION: its receive time and the
 * client's header timestamp (both CLOCK_MONOTONIC seconds when client and robot share a machine).
 *
 *   cc -std=c99 -O2 -o robot hardware/reference_robot/robot.c -lm
 *   ./robot --port 50007 --obs-dim 4 --act-dim 1 --rate 100
 *
 * Its first line on stdout is "listening HOST PORT"; on SIGINT / SIGTERM (or after --duration seconds) it
 * prints its counters as one JSON line and exits 0.
 */
#define _POSIX_C_SOURCE 200809L

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PROTOCOL_VERSION 1
#define HEADER_SIZE 20
#define TRAILER_SIZE 4
#define MAX_DATAGRAM 1400
#define SPEC_SIZE 8
#define OBS_TRAILER_SIZE 17
#define MAX_DIM 256
#define REORDER_WINDOW 64u
#define ARM_TIMEOUT_S 5.0

enum msg_type { HELLO = 1, SPEC = 2, OBSERVATION = 3, ACTION = 4, STOP = 5 };

enum drop {
    DROP_SHORT, DROP_BAD_MAGIC, DROP_WRONG_VERSION, DROP_BAD_LENGTH, DROP_BAD_CHECKSUM, DROP_UNKNOWN_TYPE,
    DROP_DUPLICATE, DROP_OUT_OF_ORDER, DROP_BAD_PAYLOAD, DROP_UNEXPECTED, N_DROPS
};
static const char *const DROP_NAMES[N_DROPS] = {
    "short", "bad_magic", "wrong_version", "bad_length", "bad_checksum", "unknown_type",
    "duplicate", "out_of_order", "bad_payload", "unexpected"
};

struct options {
    const char *host;
    int port, obs_dim, act_dim;
    double rate_hz, command_timeout_s, limit, tau_s, duration_s;
    const char *action_log;
};

struct robot {
    struct options opt;
    int sock;
    uint32_t next_seq;            /* one counter for every datagram this robot sends; 0 at start */
    int in_session, armed;
    struct sockaddr_in client;
    uint32_t client_seq;          /* the last sequence number accepted from the client */
    double commanded_at;          /* when the session began or the last valid ACTION arrived */
    float command[MAX_DIM];
    double state[MAX_DIM];
    uint32_t step;
    unsigned long ticks, skipped_ticks, sessions, actions, rejected_actions, stops, command_timeouts, lost,
        seq_restarts, drops[N_DROPS];
    FILE *action_log;
};

static volatile sig_atomic_t stop_requested = 0;
static uint32_t crc_table[256];

static void on_signal(int signum) { (void)signum; stop_requested = 1; }

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* CRC-32 as zlib computes it: reflected polynomial 0xEDB88320, initial value and final xor all ones. */
static void crc_init(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) c = (c & 1u) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[n] = c;
    }
}

static uint32_t crc32_of(const uint8_t *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) c = crc_table[(c ^ p[i]) & 0xFFu] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

/* Big-endian (network order) fields. */
static void put_u16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (24 - 8 * i));
}
static void put_f32(uint8_t *p, float f) { uint32_t v; memcpy(&v, &f, 4); put_u32(p, v); }
static void put_f64(uint8_t *p, double d) {
    uint64_t v;
    memcpy(&v, &d, 8);
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (56 - 8 * i));
}
static uint16_t get_u16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static uint32_t get_u32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}
static float get_f32(const uint8_t *p) { uint32_t v = get_u32(p); float f; memcpy(&f, &v, 4); return f; }

static void send_packet(struct robot *r, uint8_t type, const uint8_t *payload, uint16_t len) {
    uint8_t buf[MAX_DATAGRAM];
    memcpy(buf, "RBPL", 4);
    buf[4] = PROTOCOL_VERSION;
    buf[5] = type;
    put_u16(buf + 6, len);
    put_u32(buf + 8, r->next_seq++);
    put_f64(buf + 12, now_s());
    if (len) memcpy(buf + HEADER_SIZE, payload, len);
    put_u32(buf + HEADER_SIZE + len, crc32_of(buf, HEADER_SIZE + (size_t)len));
    /* UDP is best effort: a full buffer loses this datagram, as the wire could */
    (void)sendto(r->sock, buf, HEADER_SIZE + (size_t)len + TRAILER_SIZE, 0, (const struct sockaddr *)&r->client,
                 sizeof r->client);
}

static void send_spec(struct robot *r) {
    uint8_t p[SPEC_SIZE];
    put_u16(p, (uint16_t)r->opt.obs_dim);
    put_u16(p + 2, (uint16_t)r->opt.act_dim);
    put_f32(p + 4, (float)r->opt.rate_hz);
    send_packet(r, SPEC, p, SPEC_SIZE);
}

static void send_observation(struct robot *r) {
    uint8_t p[4 * MAX_DIM + OBS_TRAILER_SIZE];
    size_t n = 4 * (size_t)r->opt.obs_dim;
    for (int i = 0; i < r->opt.obs_dim; i++) put_f32(p + 4 * i, (float)r->state[i]);
    put_f32(p + n, 0.0f);      /* reward: a real robot has none */
    put_f32(p + n + 4, 0.0f);  /* episode return */
    p[n + 8] = 0;              /* flags: neither terminated nor truncated */
    put_u32(p + n + 9, 0);     /* episode */
    put_u32(p + n + 13, r->step);
    send_packet(r, OBSERVATION, p, (uint16_t)(n + OBS_TRAILER_SIZE));
}

/* The safe state: command zero, no stepping, no streaming, until the next HELLO. */
static void end_session(struct robot *r) {
    r->in_session = 0;
    r->armed = 0;
    memset(r->command, 0, sizeof r->command);
}

static int same_peer(const struct sockaddr_in *a, const struct sockaddr_in *b) {
    return a->sin_addr.s_addr == b->sin_addr.s_addr && a->sin_port == b->sin_port;
}

/* Sequence rules of docs/protocol.md for a non-session message from the client: 1 = accept. */
static int accept_seq(struct robot *r, uint32_t seq) {
    uint32_t ahead = seq - r->client_seq; /* modulo 2^32 */
    if (ahead == 0) { r->drops[DROP_DUPLICATE]++; return 0; }
    if (ahead < 0x80000000u) {
        r->lost += ahead - 1;
    } else if (seq != 0 && (uint32_t)(0u - ahead) <= REORDER_WINDOW) {
        r->drops[DROP_OUT_OF_ORDER]++;
        return 0;
    } else {
        r->seq_restarts++;
    }
    r->client_seq = seq;
    return 1;
}

static double get_f64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
    double d;
    memcpy(&d, &v, 8);
    return d;
}

/* `sent` is the client's header timestamp: logged beside the receive time, never acted on. */
static void handle_action(struct robot *r, const uint8_t *payload, uint16_t len, double t, double sent) {
    float u[MAX_DIM];
    if (len != 4 * r->opt.act_dim) { r->drops[DROP_BAD_PAYLOAD]++; return; }
    for (int i = 0; i < r->opt.act_dim; i++) {
        u[i] = get_f32(payload + 4 * i);
        if (!isfinite(u[i])) { r->rejected_actions++; return; }
    }
    for (int i = 0; i < r->opt.act_dim; i++)
        r->command[i] = (float)fmax(-r->opt.limit, fmin(r->opt.limit, (double)u[i]));
    r->armed = 1;
    r->commanded_at = t;
    r->actions++;
    if (r->action_log) fprintf(r->action_log, "%.9f %.9f\n", t, sent);
}

static void handle_datagram(struct robot *r, const uint8_t *buf, size_t n, const struct sockaddr_in *from, double t) {
    if (n < HEADER_SIZE + TRAILER_SIZE) { r->drops[DROP_SHORT]++; return; }
    if (memcmp(buf, "RBPL", 4) != 0) { r->drops[DROP_BAD_MAGIC]++; return; }
    if (buf[4] != PROTOCOL_VERSION) { r->drops[DROP_WRONG_VERSION]++; return; }
    uint16_t len = get_u16(buf + 6);
    if (n != (size_t)HEADER_SIZE + len + TRAILER_SIZE) { r->drops[DROP_BAD_LENGTH]++; return; }
    if (get_u32(buf + HEADER_SIZE + len) != crc32_of(buf, HEADER_SIZE + (size_t)len)) {
        r->drops[DROP_BAD_CHECKSUM]++;
        return;
    }
    uint8_t type = buf[5];
    if (type < HELLO || type > STOP) { r->drops[DROP_UNKNOWN_TYPE]++; return; }
    uint32_t seq = get_u32(buf + 8);
    int from_client = r->in_session && same_peer(from, &r->client);
    if (type == HELLO) {  /* from anyone: a new session on a plant at rest, the count restarts here */
        if (from_client && seq == r->client_seq) { r->drops[DROP_DUPLICATE]++; return; }
        r->client = *from;
        r->client_seq = seq;
        r->in_session = 1;
        r->armed = 0;
        r->commanded_at = t;
        r->step = 0;
        r->sessions++;
        memset(r->command, 0, sizeof r->command);
        memset(r->state, 0, sizeof r->state);
        send_spec(r);
        send_observation(r);
        return;
    }
    if (type == STOP && !from_client) return;  /* a repeated STOP, or one for a session already over */
    if (!from_client || (type != ACTION && type != STOP)) { r->drops[DROP_UNEXPECTED]++; return; }
    if (!accept_seq(r, seq)) return;
    if (type == STOP) {
        r->stops++;
        end_session(r);
    } else {
        handle_action(r, buf + HEADER_SIZE, len, t, get_f64(buf + 12));
    }
}

static void tick(struct robot *r, double t) {
    r->ticks++;
    if (!r->in_session) return;
    double timeout = r->armed ? r->opt.command_timeout_s : ARM_TIMEOUT_S;
    if (t - r->commanded_at > timeout) {
        r->command_timeouts++;
        fprintf(stderr, "robot: no ACTION for %.3f s (timeout %.3f s): safe state, session ended\n",
                t - r->commanded_at, timeout);
        end_session(r);
        return;
    }
    if (r->armed) {
        double a = (1.0 / r->opt.rate_hz) / r->opt.tau_s;
        for (int i = 0; i < r->opt.obs_dim; i++) r->state[i] += (r->command[i % r->opt.act_dim] - r->state[i]) * a;
        r->step++;
    }
    send_observation(r);
}

static void receive_waiting(struct robot *r) {
    uint8_t buf[2048];
    for (;;) {
        struct sockaddr_in from;
        socklen_t flen = sizeof from;
        ssize_t n = recvfrom(r->sock, buf, sizeof buf, MSG_DONTWAIT, (struct sockaddr *)&from, &flen);
        if (n < 0) return; /* EAGAIN: nothing left; any other error: try again next time */
        handle_datagram(r, buf, (size_t)n, &from, now_s());
    }
}

static void print_stats(const struct robot *r) {
    printf("{\"ticks\": %lu, \"skipped_ticks\": %lu, \"sessions\": %lu, \"actions\": %lu, \"rejected_actions\": %lu, "
           "\"stops\": %lu, \"command_timeouts\": %lu, \"lost\": %lu, \"seq_restarts\": %lu, \"drops\": {",
           r->ticks, r->skipped_ticks, r->sessions, r->actions, r->rejected_actions, r->stops, r->command_timeouts,
           r->lost, r->seq_restarts);
    for (int k = 0; k < N_DROPS; k++) printf("%s\"%s\": %lu", k ? ", " : "", DROP_NAMES[k], r->drops[k]);
    printf("}}\n");
    fflush(stdout);
}

static int usage(const char *why) {
    fprintf(stderr, "error: %s\nusage: robot [--host 127.0.0.1] [--port 50007] [--obs-dim 4] [--act-dim 1] "
                    "[--rate 100] [--command-timeout 0.25] [--limit 3] [--tau 0.1] [--duration 0 (forever)] "
                    "[--action-log FILE]\n", why);
    return 2;
}

static int parse(int argc, char **argv, struct options *o) {
    for (int i = 1; i < argc; i += 2) {
        const char *key = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        char *end = NULL;
        double x = val ? strtod(val, &end) : 0.0;
        int numeric = val && end != val && *end == '\0';
        if (!val) return usage("every option takes a value");
        if (!strcmp(key, "--host")) o->host = val;
        else if (!strcmp(key, "--action-log")) o->action_log = val;
        else if (!numeric) return usage("option values must be numbers (except --host, --action-log)");
        else if (!strcmp(key, "--port")) o->port = (int)x;
        else if (!strcmp(key, "--obs-dim")) o->obs_dim = (int)x;
        else if (!strcmp(key, "--act-dim")) o->act_dim = (int)x;
        else if (!strcmp(key, "--rate")) o->rate_hz = x;
        else if (!strcmp(key, "--command-timeout")) o->command_timeout_s = x;
        else if (!strcmp(key, "--limit")) o->limit = x;
        else if (!strcmp(key, "--tau")) o->tau_s = x;
        else if (!strcmp(key, "--duration")) o->duration_s = x;
        else return usage("unknown option");
    }
    if (o->port < 0 || o->port > 65535) return usage("--port must be in [0, 65535] (0: any free port)");
    if (o->obs_dim < 1 || o->obs_dim > MAX_DIM || o->act_dim < 1 || o->act_dim > MAX_DIM)
        return usage("--obs-dim and --act-dim must be in [1, 256]");
    if (!(o->rate_hz > 0 && o->command_timeout_s > 0 && o->limit > 0 && o->tau_s > 0 && o->duration_s >= 0))
        return usage("--rate, --command-timeout, --limit and --tau must be > 0, --duration >= 0");
    return 0;
}

int main(int argc, char **argv) {
    static struct robot r;
    struct options o = {"127.0.0.1", 50007, 4, 1, 100.0, 0.25, 3.0, 0.1, 0.0, NULL};
    if (parse(argc, argv, &o)) return 2;
    r.opt = o;
    crc_init();

    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)o.port);
    if (inet_pton(AF_INET, o.host, &addr.sin_addr) != 1) return usage("--host must be an IPv4 address");
    r.sock = socket(AF_INET, SOCK_DGRAM, 0);
    if (r.sock < 0 || bind(r.sock, (struct sockaddr *)&addr, sizeof addr) < 0) {
        fprintf(stderr, "error: cannot bind %s:%d: %s\n", o.host, o.port, strerror(errno));
        return 1;
    }
    socklen_t alen = sizeof addr;
    getsockname(r.sock, (struct sockaddr *)&addr, &alen);
    if (o.action_log && !(r.action_log = fopen(o.action_log, "w"))) {
        fprintf(stderr, "error: cannot write %s: %s\n", o.action_log, strerror(errno));
        return 1;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal; /* no SA_RESTART: select() returns at once */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    printf("listening %s %d\n", o.host, ntohs(addr.sin_port));
    fflush(stdout);

    double period = 1.0 / o.rate_hz, start = now_s(), next_tick = start;
    while (!stop_requested && (o.duration_s <= 0 || now_s() - start < o.duration_s)) {
        double t = now_s();
        if (t >= next_tick) {
            tick(&r, t);
            next_tick += period;
            if (t - next_tick > period) { /* fell behind: skip the ticks it cannot catch up (counted) */
                unsigned long behind = (unsigned long)((t - next_tick) / period);
                r.skipped_ticks += behind;
                next_tick += (double)behind * period;
            }
            continue;
        }
        double wait = next_tick - t;
        struct timeval tv = {(time_t)wait, (suseconds_t)((wait - (double)(time_t)wait) * 1e6)};
        fd_set fds;
        FD_ZERO(&fds);
        FD_SET(r.sock, &fds);
        if (select(r.sock + 1, &fds, NULL, NULL, &tv) > 0) receive_waiting(&r);
    }
    if (r.action_log) fclose(r.action_log);
    close(r.sock);
    print_stats(&r);
    return 0;
}
