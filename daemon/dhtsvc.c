/* dhtsvc — the DHT node wired into the reactor (contract in dhtsvc.h). */
#include "daemon/dhtsvc.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>
#include <json-c/json.h>
#include <openssl/rand.h>

#include "common/bencode.h"
#include "common/buf.h"
#include "common/hex.h"
#include "common/krpc.h"
#include "common/log.h"
#include "daemon/config.h"
#include "daemon/dht.h"
#include "daemon/state.h"
#include "daemon/worker.h"

#define FAM_V4 0
#define FAM_V6 1
#define FAM_MAX 2
#define REBOOT_MIN_S 5.0   /* first re-bootstrap of an empty table */
#define REBOOT_MAX_S 120.0 /* the period doubles up to this */
#define HOST_MAX 256

struct dhtsvc_fam {
    struct dhtsvc *svc; /* borrowed: the owner */
    uint8_t family;     /* 4 or 6 */
    int fd;             /* owned; -1: none */
    ev_io io;
    struct dht *d; /* owned */
};

/* One family's half of a lookup. */
struct lk_part {
    struct dhtsvc_lookup *lk; /* borrowed: the owner */
    int handle;               /* 0: not running */
};

struct dhtsvc_lookup {
    struct dhtsvc *svc;
    uint8_t hash[20];
    struct lk_part part[FAM_MAX];
    struct dhtsvc_result res;
    dhtsvc_peers_t on_peers;
    dhtsvc_done_t on_done;
    void *arg;
    uint64_t started;
    struct dhtsvc_lookup *prev, *next;
};

struct dhtsvc_announce {
    struct dhtsvc *svc; /* NULL once the dhtsvc is gone */
    uint8_t hash[20];
    uint16_t port;
    dhtsvc_peers_t on_peers;
    void *arg;
    ev_timer timer;
    struct dhtsvc_lookup *lk; /* running round, or NULL */
    struct dhtsvc_announce *prev, *next;
};

struct dhtsvc {
    struct ev_loop *loop; /* borrowed */
    struct worker *io;    /* borrowed: the session's io worker */
    struct worker *dns;   /* owned, made when a name must be resolved */
    char *state_dir;      /* owned */
    struct dhtsvc_fam fam[FAM_MAX];
    ev_timer timer;  /* dht_periodic's deadline */
    ev_timer save;   /* DHTSVC_SAVE_S */
    ev_timer reboot; /* the table is empty: bootstrap again */
    double reboot_every;
    unsigned reboots;
    struct krpc_addr routers[DHTSVC_ROUTERS_MAX];
    size_t n_routers;
    char *saved;  /* owned: the state file's bytes, for re-bootstrap */
    size_t saved_len;
    bool stopping, freeing;
    struct dhtsvc_lookup *lookups;
    struct dhtsvc_announce *announces;
    /* Counters. */
    uint64_t msgs_in, msgs_out, send_dropped, recv_errors;
    uint64_t lk_started, lk_finished, lk_queries;
    uint64_t durations[DHT_STATS_LOOKUPS];
    unsigned n_durations, next_duration;
    uint8_t rbuf[KRPC_MAX_DATAGRAM + 1];
    struct sockaddr_storage peers[DHTSVC_PEERS_MAX];
};

static uint64_t
now_ms(void)
{
    struct timespec ts;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* --- addresses ------------------------------------------------------------ */

static bool
to_krpc(struct krpc_addr *ret, const struct sockaddr *sa)
{
    memset(ret, 0, sizeof(*ret));
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        ret->family = 4;
        memcpy(ret->addr, &s4->sin_addr, 4);
        ret->port = ntohs(s4->sin_port);
        return true;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        ret->family = 6;
        memcpy(ret->addr, &s6->sin6_addr, 16);
        ret->port = ntohs(s6->sin6_port);
        return true;
    }
    return false;
}

static socklen_t
to_sockaddr(struct sockaddr_storage *ret, const struct krpc_addr *a)
{
    memset(ret, 0, sizeof(*ret));
    if (a->family == 4) {
        struct sockaddr_in *s4 = (struct sockaddr_in *)ret;
        s4->sin_family = AF_INET;
        memcpy(&s4->sin_addr, a->addr, 4);
        s4->sin_port = htons(a->port);
        return sizeof(*s4);
    }
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ret;
    s6->sin6_family = AF_INET6;
    memcpy(&s6->sin6_addr, a->addr, 16);
    s6->sin6_port = htons(a->port);
    return sizeof(*s6);
}

static void
format_krpc(const struct krpc_addr *a, char *out, size_t n, bool with_port)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    (void)inet_ntop(a->family == 4 ? AF_INET : AF_INET6, a->addr, ip,
                    sizeof(ip));
    if (!with_port)
        snprintf(out, n, "%s", ip);
    else if (a->family == 4)
        snprintf(out, n, "%s:%u", ip, a->port);
    else
        snprintf(out, n, "[%s]:%u", ip, a->port);
}

/* Split "host:port" / "[v6]:port" (len bytes at s) into host and port. */
static int
split_hostport(const char *s, size_t len, char host[HOST_MAX],
               uint16_t *ret_port)
{
    while (len && (*s == ' ' || *s == '\t')) {
        s++;
        len--;
    }
    while (len && (s[len - 1] == ' ' || s[len - 1] == '\t'))
        len--;
    const char *colon = NULL;
    for (size_t i = len; i > 0; i--)
        if (s[i - 1] == ':') {
            colon = s + i - 1;
            break;
        }
    if (!colon || colon == s)
        return -EINVAL;
    const char *h = s;
    size_t hl = (size_t)(colon - s);
    if (h[0] == '[') {
        if (hl < 3 || h[hl - 1] != ']')
            return -EINVAL;
        h++;
        hl -= 2;
    }
    if (hl >= HOST_MAX)
        return -EINVAL;
    memcpy(host, h, hl);
    host[hl] = '\0';
    unsigned long port = 0;
    const char *p = colon + 1, *end = s + len;
    if (p == end || end - p > 5)
        return -EINVAL;
    for (; p < end; p++) {
        if (*p < '0' || *p > '9')
            return -EINVAL;
        port = port * 10 + (unsigned long)(*p - '0');
    }
    if (port > 65535)
        return -EINVAL;
    *ret_port = (uint16_t)port;
    return 0;
}

/* A numeric host into a krpc_addr; false for a name. */
static bool
numeric_addr(const char *host, uint16_t port, struct krpc_addr *ret)
{
    memset(ret, 0, sizeof(*ret));
    ret->port = port;
    if (inet_pton(AF_INET, host, ret->addr) == 1) {
        ret->family = 4;
        return true;
    }
    if (inet_pton(AF_INET6, host, ret->addr) == 1) {
        ret->family = 6;
        return true;
    }
    return false;
}

/* --- sockets --------------------------------------------------------------- */

static void
send_cb(void *ud, const struct krpc_addr *to, const uint8_t *data, size_t len)
{
    struct dhtsvc_fam *f = ud;
    struct dhtsvc *svc = f->svc;
    struct sockaddr_storage ss;
    if (f->fd < 0 || svc->stopping)
        return;
    socklen_t sl = to_sockaddr(&ss, to);
    ssize_t n = sendto(f->fd, data, len, MSG_DONTWAIT | MSG_NOSIGNAL,
                       (struct sockaddr *)&ss, sl);
    if (n < 0) {
        /* Lossy by design: EAGAIN, ENOBUFS, EPERM (firewall), an
         * unreachable network... the query times out or the answer is
         * lost, as it would be on the wire. */
        svc->send_dropped++;
        return;
    }
    svc->msgs_out++;
}

static void arm_timer(struct dhtsvc *svc, uint64_t next, uint64_t now);

static void
periodic(struct dhtsvc *svc)
{
    uint64_t now = now_ms(), next = UINT64_MAX;
    for (int i = 0; i < FAM_MAX; i++) {
        if (!svc->fam[i].d)
            continue;
        uint64_t t = dht_periodic(svc->fam[i].d, now);
        if (t < next)
            next = t;
    }
    arm_timer(svc, next, now);
}

static void
arm_timer(struct dhtsvc *svc, uint64_t next, uint64_t now)
{
    if (svc->stopping)
        return;
    double delay = next > now ? (double)(next - now) / 1000.0 : 0.0;
    if (delay > DHT_MAINT_MS / 1000.0)
        delay = DHT_MAINT_MS / 1000.0;
    ev_timer_stop(svc->loop, &svc->timer);
    ev_timer_set(&svc->timer, delay, 0.);
    ev_timer_start(svc->loop, &svc->timer);
}

static void
timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    periodic(w->data);
}

static void
read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct dhtsvc_fam *f = w->data;
    struct dhtsvc *svc = f->svc;
    for (int i = 0; i < DHTSVC_RECV_BATCH && f->fd >= 0; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        ssize_t n = recvfrom(f->fd, svc->rbuf, sizeof(svc->rbuf),
                             MSG_DONTWAIT, (struct sockaddr *)&ss, &sl);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                /* ICMP errors (ECONNREFUSED ...) surface here. */
                svc->recv_errors++;
                continue;
            }
            return;
        }
        struct krpc_addr from;
        if (!to_krpc(&from, (struct sockaddr *)&ss))
            continue;
        svc->msgs_in++;
        (void)dht_receive(f->d, &from, svc->rbuf, (size_t)n, now_ms());
        if (svc->stopping)
            return;
    }
}

static int
bind_udp(const struct sockaddr_storage *ss, socklen_t sl, uint16_t *ret_port)
{
    int fd = socket(ss->ss_family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK,
                    0);
    if (fd < 0)
        return -errno;
    /* Room for bursts (capped by net.core.rmem_max). */
    int rcvbuf = DHTSVC_RCVBUF;
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    if (ss->ss_family == AF_INET6) {
        int one = 1;
        (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    }
    if (bind(fd, (const struct sockaddr *)ss, sl) < 0) {
        int r = -errno;
        (void)close(fd);
        return r;
    }
    struct sockaddr_storage got;
    socklen_t gl = sizeof(got);
    if (getsockname(fd, (struct sockaddr *)&got, &gl) == 0)
        *ret_port = ntohs(got.ss_family == AF_INET
                              ? ((struct sockaddr_in *)&got)->sin_port
                              : ((struct sockaddr_in6 *)&got)->sin6_port);
    return fd;
}

static void
set_port(struct sockaddr_storage *ss, uint16_t port)
{
    if (ss->ss_family == AF_INET)
        ((struct sockaddr_in *)ss)->sin_port = htons(port);
    else
        ((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
}

/* The sockets for `listen` (see the header). */
static int
open_sockets(struct dhtsvc *svc, const char *listen_text)
{
    char host[HOST_MAX];
    uint16_t port = 0;
    struct krpc_addr a;
    struct sockaddr_storage want[FAM_MAX];
    socklen_t want_len[FAM_MAX] = {0, 0};
    bool optional6 = false;

    if (!listen_text ||
        split_hostport(listen_text, strlen(listen_text), host, &port) < 0 ||
        !numeric_addr(host, port, &a)) {
        /* A name in `listen`: every IPv4 address of the host. */
        log_info("DHT: 'listen' is not a numeric address, using 0.0.0.0:%u",
                 port);
        memset(&a, 0, sizeof(a));
        a.family = 4;
        a.port = port;
    }
    static const uint8_t zero[16];
    bool wildcard = memcmp(a.addr, zero, a.family == 4 ? 4 : 16) == 0;
    if (a.family == 4) {
        want_len[FAM_V4] = to_sockaddr(&want[FAM_V4], &a);
        if (wildcard) {
            struct krpc_addr a6 = {.family = 6, .port = port};
            want_len[FAM_V6] = to_sockaddr(&want[FAM_V6], &a6);
            optional6 = true;
        }
    } else {
        want_len[FAM_V6] = to_sockaddr(&want[FAM_V6], &a);
        if (wildcard) {
            struct krpc_addr a4 = {.family = 4, .port = port};
            want_len[FAM_V4] = to_sockaddr(&want[FAM_V4], &a4);
        }
    }
    uint16_t chosen = port;
    for (int i = 0; i < FAM_MAX; i++) {
        if (!want_len[i])
            continue;
        uint16_t got = 0;
        if (chosen)
            set_port(&want[i], chosen);
        int fd = bind_udp(&want[i], want_len[i], &got);
        if (fd < 0 && chosen != port) {
            /* Port 0: the number the other family got is taken here. */
            set_port(&want[i], port);
            fd = bind_udp(&want[i], want_len[i], &got);
        }
        if (fd < 0) {
            if (i == FAM_V6 && optional6) {
                log_info("DHT: no IPv6 socket (%s), going on with IPv4",
                         strerror(-fd));
                continue;
            }
            char txt[80];
            struct krpc_addr w;
            (void)to_krpc(&w, (struct sockaddr *)&want[i]);
            format_krpc(&w, txt, sizeof(txt), true);
            return log_err_errno(fd, "DHT: cannot bind UDP %s", txt);
        }
        svc->fam[i].fd = fd;
        if (!chosen)
            chosen = got;
    }
    return 0;
}

/* --- saved state ----------------------------------------------------------- */

struct save_job {
    char *dir;  /* owned */
    char *data; /* owned */
    size_t len;
};

static int
save_run(void *arg)
{
    struct save_job *j = arg;
    return state_write_file(j->dir, DHTSVC_STATE_FILE, j->data, j->len);
}

static void
save_done(void *arg, int r)
{
    struct save_job *j = arg;
    if (r < 0)
        log_warn("DHT: cannot write '%s/%s': %s, ignoring", j->dir,
                 DHTSVC_STATE_FILE, strerror(-r));
    free(j->dir);
    free(j->data);
    free(j);
}

/* The state file: d "ip" (compact address, when others told us), "v4",
 * "v6" (dht_save() of each family's node, as strings) e. */
static int
encode_state(struct dhtsvc *svc, struct buf *out)
{
    struct dht_status st;
    struct buf part;
    uint8_t ip[16];
    size_t ip_len = 0;
    int r;

    for (int i = 0; i < FAM_MAX && !ip_len; i++) {
        if (!svc->fam[i].d)
            continue;
        dht_status(svc->fam[i].d, now_ms(), &st);
        if (st.has_external_ip) {
            ip_len = st.external_ip.family == 4 ? 4 : 16;
            memcpy(ip, st.external_ip.addr, ip_len);
        }
    }
    r = benc_put_dict(out);
    if (r == 0 && ip_len) {
        r = benc_put_cstr(out, "ip");
        if (r == 0)
            r = benc_put_str(out, ip, ip_len);
    }
    for (int i = 0; i < FAM_MAX && r == 0; i++) {
        if (!svc->fam[i].d)
            continue;
        buf_init(&part, DHTSVC_STATE_MAX);
        r = dht_save(svc->fam[i].d, &part);
        if (r == 0)
            r = benc_put_cstr(out, i == FAM_V4 ? "v4" : "v6");
        if (r == 0)
            r = benc_put_str(out, part.data, part.len);
        buf_release(&part);
    }
    if (r == 0)
        r = benc_put_end(out);
    return r;
}

static void
save_state(struct dhtsvc *svc)
{
    struct buf b;
    buf_init(&b, DHTSVC_STATE_MAX);
    struct save_job *j = calloc(1, sizeof(*j));
    int r = j ? encode_state(svc, &b) : -ENOMEM;
    if (r == 0) {
        j->dir = strdup(svc->state_dir);
        j->data = buf_steal(&b, &j->len);
        if (!j->dir || !j->data)
            r = -ENOMEM;
    }
    if (r == 0)
        r = worker_submit(svc->io, save_run, save_done, j);
    if (r < 0) {
        log_warn("DHT: cannot save the node state: %s, ignoring",
                 strerror(-r));
        if (j) {
            free(j->dir);
            free(j->data);
            free(j);
        }
    }
    buf_release(&b);
}

static void
save_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    save_state(w->data);
}

/* The saved string under key ("v4", "v6"), borrowed from doc. */
static const uint8_t *
saved_part(const struct benc_doc *doc, const char *key, size_t *ret_len)
{
    return benc_str(doc, benc_dict_get(doc, 0, key), ret_len);
}

/* Our id: saved, BEP 42 from a saved external address, or random. */
static void
choose_id(struct dhtsvc *svc, uint8_t id[DHT_ID_LEN])
{
    static const struct benc_limits lim = {
        .max_input = DHTSVC_STATE_MAX, .max_depth = 2, .max_nodes = 16};
    struct benc_doc doc;
    uint8_t rnd[DHT_ID_LEN];
    bool have_id = false, have_ip = false;
    struct krpc_addr ip;

    if (RAND_bytes(rnd, sizeof(rnd)) != 1)
        for (size_t i = 0; i < sizeof(rnd); i++) /* never on Linux */
            rnd[i] = (uint8_t)(now_ms() >> (i % 8));
    memcpy(id, rnd, DHT_ID_LEN);
    if (!svc->saved ||
        benc_parse(&doc, svc->saved, svc->saved_len, &lim, 0, NULL) < 0) {
        if (svc->saved)
            log_warn("DHT: '%s/%s' is not a DHT state file, ignoring it",
                     svc->state_dir, DHTSVC_STATE_FILE);
        free(svc->saved);
        svc->saved = NULL;
        return;
    }
    for (int i = 0; i < FAM_MAX && !have_id; i++) {
        size_t n;
        const uint8_t *p = saved_part(&doc, i == FAM_V4 ? "v4" : "v6", &n);
        if (p && dht_saved_id(p, n, id) == 0)
            have_id = true;
    }
    size_t n;
    const uint8_t *p = benc_str(&doc, benc_dict_get(&doc, 0, "ip"), &n);
    if (p && (n == 4 || n == 16)) {
        memset(&ip, 0, sizeof(ip));
        ip.family = n == 4 ? 4 : 6;
        memcpy(ip.addr, p, n);
        have_ip = true;
    }
    benc_doc_release(&doc);
    if (have_ip && (!have_id || !dht_id_check(id, &ip))) {
        dht_id_from_ip(id, &ip, rnd);
        char txt[64];
        format_krpc(&ip, txt, sizeof(txt), false);
        log_info("DHT: node id derived from our external address %s "
                 "(BEP 42)", txt);
    } else if (!have_id) {
        memcpy(id, rnd, DHT_ID_LEN);
    }
}

/* --- bootstrap ------------------------------------------------------------- */

static void
bootstrap_with(struct dhtsvc *svc, const struct krpc_addr *addrs, size_t n)
{
    uint64_t now = now_ms();
    for (int i = 0; i < FAM_MAX; i++) {
        if (!svc->fam[i].d)
            continue;
        struct krpc_addr mine[DHT_BOOTSTRAP_MAX];
        size_t k = 0;
        for (size_t j = 0; j < n && k < DHT_BOOTSTRAP_MAX; j++)
            if (addrs[j].family == svc->fam[i].family)
                mine[k++] = addrs[j];
        if (k > 0) {
            int r = dht_bootstrap(svc->fam[i].d, mine, k, now);
            if (r < 0)
                log_debug("DHT: bootstrap (IPv%u): %s", svc->fam[i].family,
                          strerror(-r));
        }
    }
    periodic(svc);
}

static void
load_saved_nodes(struct dhtsvc *svc)
{
    static const struct benc_limits lim = {
        .max_input = DHTSVC_STATE_MAX, .max_depth = 2, .max_nodes = 16};
    struct benc_doc doc;
    if (!svc->saved ||
        benc_parse(&doc, svc->saved, svc->saved_len, &lim, 0, NULL) < 0)
        return;
    uint64_t now = now_ms();
    for (int i = 0; i < FAM_MAX; i++) {
        size_t n;
        const uint8_t *p = saved_part(&doc, i == FAM_V4 ? "v4" : "v6", &n);
        if (!p || !svc->fam[i].d)
            continue;
        int r = dht_load(svc->fam[i].d, p, n, now);
        if (r > 0)
            log_info("DHT: bootstrapping from %d saved IPv%u nodes", r,
                     svc->fam[i].family);
    }
    benc_doc_release(&doc);
}

struct dns_job {
    struct dhtsvc *svc; /* borrowed: worker_free() in dhtsvc_free drains */
    char *names;        /* owned: the dht_bootstrap text */
    struct krpc_addr out[DHTSVC_ROUTERS_MAX];
    size_t n;
};

static int
dns_run(void *arg)
{
    struct dns_job *j = arg;
    const char *p = j->names;
    while (*p && j->n < DHTSVC_ROUTERS_MAX) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char host[HOST_MAX], port_txt[8];
        uint16_t port;
        struct krpc_addr a;
        if (split_hostport(p, len, host, &port) == 0 && port > 0 &&
            !numeric_addr(host, port, &a)) {
            struct addrinfo hints, *res = NULL;
            memset(&hints, 0, sizeof(hints));
            hints.ai_socktype = SOCK_DGRAM;
            hints.ai_flags = AI_NUMERICSERV | AI_ADDRCONFIG;
            snprintf(port_txt, sizeof(port_txt), "%u", port);
            if (getaddrinfo(host, port_txt, &hints, &res) == 0) {
                for (struct addrinfo *ai = res;
                     ai && j->n < DHTSVC_ROUTERS_MAX; ai = ai->ai_next)
                    if (to_krpc(&j->out[j->n], ai->ai_addr))
                        j->n++;
                freeaddrinfo(res);
            }
        }
        p += len;
        if (*p == ',')
            p++;
    }
    return 0;
}

static void
dns_done(void *arg, int r)
{
    struct dns_job *j = arg;
    struct dhtsvc *svc = j->svc;
    (void)r;
    if (!svc->stopping && !svc->freeing) {
        log_info("DHT: %zu addresses for the bootstrap names", j->n);
        for (size_t i = 0; i < j->n && svc->n_routers < DHTSVC_ROUTERS_MAX;
             i++)
            svc->routers[svc->n_routers++] = j->out[i];
        bootstrap_with(svc, j->out, j->n);
    }
    free(j->names);
    free(j);
}

/* Numeric routers now; names on the dns worker. */
static void
parse_routers(struct dhtsvc *svc, const char *text)
{
    bool names = false;
    const char *p = text ? text : "";
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char host[HOST_MAX];
        uint16_t port;
        struct krpc_addr a;
        if (split_hostport(p, len, host, &port) < 0 || port == 0)
            log_warn("DHT: bad dht_bootstrap entry '%.*s', ignoring",
                     (int)len, p);
        else if (numeric_addr(host, port, &a)) {
            if (svc->n_routers < DHTSVC_ROUTERS_MAX)
                svc->routers[svc->n_routers++] = a;
        } else {
            names = true;
        }
        p += len;
        if (*p == ',')
            p++;
    }
    if (!names)
        return;
    struct dns_job *j = calloc(1, sizeof(*j));
    int r = -ENOMEM;
    if (j && (j->names = strdup(text)) != NULL) {
        j->svc = svc;
        r = worker_new(&svc->dns, svc->loop, "dns", 1);
        if (r == 0)
            r = worker_submit(svc->dns, dns_run, dns_done, j);
    }
    if (r < 0) {
        log_warn("DHT: cannot resolve the dht_bootstrap names: %s, "
                 "ignoring them", strerror(-r));
        if (j)
            free(j->names);
        free(j);
    }
}

static unsigned
table_nodes(struct dhtsvc *svc)
{
    unsigned n = 0;
    struct dht_status st;
    for (int i = 0; i < FAM_MAX; i++) {
        if (!svc->fam[i].d)
            continue;
        dht_status(svc->fam[i].d, now_ms(), &st);
        n += st.good + st.questionable;
    }
    return n;
}

static void
reboot_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct dhtsvc *svc = w->data;
    /* "Empty": fewer nodes than one bucket holds.  A bootstrap that came
     * when the routers knew few nodes leaves a small table, and the
     * library refreshes a bucket that is not full only every
     * DHT_FILL_MS. */
    bool empty = table_nodes(svc) < DHT_K;
    if (!empty)
        svc->reboots = 0; /* a table that empties later starts afresh */
    if (svc->stopping || !empty || svc->reboots >= DHTSVC_REBOOTSTRAP_MAX) {
        svc->reboot_every = REBOOT_MIN_S;
        ev_timer_set(w, DHTSVC_REBOOTSTRAP_S, 0.);
        if (!svc->stopping)
            ev_timer_start(loop, w);
        return;
    }
    svc->reboots++;
    log_debug("DHT: the routing table is empty, bootstrapping again");
    load_saved_nodes(svc);
    bootstrap_with(svc, svc->routers, svc->n_routers);
    svc->reboot_every *= 2;
    if (svc->reboot_every > REBOOT_MAX_S)
        svc->reboot_every = REBOOT_MAX_S;
    ev_timer_set(w, svc->reboot_every, 0.);
    ev_timer_start(loop, w);
}

/* --- life cycle ------------------------------------------------------------ */

int
dhtsvc_new(struct dhtsvc **ret, struct ev_loop *loop, const struct config *cfg,
           struct worker *io)
{
    struct dhtsvc *svc = calloc(1, sizeof(*svc));
    int r = -ENOMEM;
    if (!svc)
        return log_err_errno(r, "cannot start the DHT");
    svc->loop = loop;
    svc->io = io;
    for (int i = 0; i < FAM_MAX; i++) {
        svc->fam[i].svc = svc;
        svc->fam[i].fd = -1;
        svc->fam[i].family = i == FAM_V4 ? 4 : 6;
    }
    ev_timer_init(&svc->timer, timer_cb, 0., 0.);
    ev_timer_init(&svc->save, save_cb, DHTSVC_SAVE_S, DHTSVC_SAVE_S);
    ev_timer_init(&svc->reboot, reboot_cb, REBOOT_MIN_S, 0.);
    svc->timer.data = svc->save.data = svc->reboot.data = svc;
    svc->reboot_every = REBOOT_MIN_S;
    svc->state_dir = strdup(cfg->state_dir ? cfg->state_dir : "");
    if (!svc->state_dir)
        goto fail_log;
    if ((r = open_sockets(svc, cfg->listen)) < 0)
        goto fail;

    r = state_read_file(svc->state_dir, DHTSVC_STATE_FILE, DHTSVC_STATE_MAX,
                        &svc->saved, &svc->saved_len);
    if (r < 0 && r != -ENOENT)
        log_warn("DHT: cannot read '%s/%s': %s, starting afresh",
                 svc->state_dir, DHTSVC_STATE_FILE, strerror(-r));
    if (r < 0)
        svc->saved = NULL;

    struct dht_config dc;
    memset(&dc, 0, sizeof(dc));
    choose_id(svc, dc.id);
    dc.send = send_cb;
    uint64_t now = now_ms();
    for (int i = 0; i < FAM_MAX; i++) {
        struct dhtsvc_fam *f = &svc->fam[i];
        if (f->fd < 0)
            continue;
        dc.family = f->family;
        dc.send_ud = f;
        if (RAND_bytes(dc.seed, sizeof(dc.seed)) != 1) {
            r = -EIO;
            goto fail_log;
        }
        f->d = dht_new(&dc, now);
        if (!f->d) {
            r = -ENOMEM;
            goto fail_log;
        }
        ev_io_init(&f->io, read_cb, f->fd, EV_READ);
        f->io.data = f;
        ev_io_start(loop, &f->io);
    }
    dht_set_sibling(svc->fam[FAM_V4].d, svc->fam[FAM_V6].d);

    char hex[2 * DHT_ID_LEN + 1];
    hex_encode(hex, dc.id, DHT_ID_LEN);
    log_info("DHT: node %s on UDP port %u%s%s", hex, dhtsvc_port(svc),
             svc->fam[FAM_V4].d ? ", IPv4" : "",
             svc->fam[FAM_V6].d ? ", IPv6" : "");

    load_saved_nodes(svc);
    parse_routers(svc, cfg->dht_bootstrap);
    bootstrap_with(svc, svc->routers, svc->n_routers);
    ev_timer_start(loop, &svc->save);
    ev_timer_start(loop, &svc->reboot);
    *ret = svc;
    return 0;
fail_log:
    log_err_errno(r, "cannot start the DHT");
fail:
    dhtsvc_free(svc);
    return r;
}

static void lookup_finish(struct dhtsvc_lookup *lk);

/* End every lookup with aborted = true. */
static void
abort_lookups(struct dhtsvc *svc)
{
    /* Bounded: new lookups are refused while stopping. */
    while (svc->lookups) {
        struct dhtsvc_lookup *lk = svc->lookups;
        for (int i = 0; i < FAM_MAX; i++)
            if (lk->part[i].handle > 0) {
                (void)dht_lookup_cancel(svc->fam[i].d, lk->part[i].handle);
                lk->part[i].handle = 0;
            }
        lk->res.aborted = true;
        lookup_finish(lk);
    }
}

void
dhtsvc_stop(struct dhtsvc *svc)
{
    if (!svc || svc->stopping)
        return;
    save_state(svc);
    svc->stopping = true;
    for (int i = 0; i < FAM_MAX; i++)
        if (svc->fam[i].d)
            ev_io_stop(svc->loop, &svc->fam[i].io);
    ev_timer_stop(svc->loop, &svc->timer);
    ev_timer_stop(svc->loop, &svc->save);
    ev_timer_stop(svc->loop, &svc->reboot);
    for (struct dhtsvc_announce *a = svc->announces; a; a = a->next)
        ev_timer_stop(svc->loop, &a->timer);
    abort_lookups(svc);
}

void
dhtsvc_free(struct dhtsvc *svc)
{
    if (!svc)
        return;
    svc->stopping = true;
    svc->freeing = true;
    /* A name being resolved: wait for it (its done() sees freeing). */
    worker_free(svc->dns);
    svc->dns = NULL;
    ev_timer_stop(svc->loop, &svc->timer);
    ev_timer_stop(svc->loop, &svc->save);
    ev_timer_stop(svc->loop, &svc->reboot);
    abort_lookups(svc);
    while (svc->announces) {
        struct dhtsvc_announce *a = svc->announces;
        ev_timer_stop(svc->loop, &a->timer);
        a->svc = NULL;
        a->lk = NULL;
        svc->announces = a->next;
        a->prev = a->next = NULL;
    }
    dht_set_sibling(NULL, NULL);
    for (int i = 0; i < FAM_MAX; i++) {
        struct dhtsvc_fam *f = &svc->fam[i];
        if (f->fd >= 0) {
            if (f->d)
                ev_io_stop(svc->loop, &f->io);
            (void)close(f->fd);
        }
        dht_free(f->d);
    }
    free(svc->saved);
    free(svc->state_dir);
    free(svc);
}

uint16_t
dhtsvc_port(const struct dhtsvc *svc)
{
    for (int i = 0; i < FAM_MAX; i++) {
        if (svc->fam[i].fd < 0)
            continue;
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        if (getsockname(svc->fam[i].fd, (struct sockaddr *)&ss, &sl) == 0)
            return ntohs(ss.ss_family == AF_INET
                             ? ((struct sockaddr_in *)&ss)->sin_port
                             : ((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    return 0;
}

/* --- lookups --------------------------------------------------------------- */

static void
lookup_finish(struct dhtsvc_lookup *lk)
{
    struct dhtsvc *svc = lk->svc;
    if (lk->prev)
        lk->prev->next = lk->next;
    else
        svc->lookups = lk->next;
    if (lk->next)
        lk->next->prev = lk->prev;
    if (!lk->res.aborted) {
        svc->lk_finished++;
        svc->durations[svc->next_duration] = lk->res.ms;
        svc->next_duration = (svc->next_duration + 1) % DHT_STATS_LOOKUPS;
        if (svc->n_durations < DHT_STATS_LOOKUPS)
            svc->n_durations++;
    }
    svc->lk_queries += lk->res.queries;
    if (lk->on_done)
        lk->on_done(lk->arg, lk->hash, &lk->res);
    free(lk);
}

static void
lk_peers_cb(void *ud, int handle, const uint8_t info_hash[DHT_ID_LEN],
            const struct krpc_addr *peers, size_t n)
{
    struct lk_part *part = ud;
    struct dhtsvc_lookup *lk = part->lk;
    struct dhtsvc *svc = lk->svc;
    (void)handle;
    (void)info_hash;
    if (!lk->on_peers || n == 0)
        return;
    if (n > DHTSVC_PEERS_MAX)
        n = DHTSVC_PEERS_MAX;
    for (size_t i = 0; i < n; i++)
        (void)to_sockaddr(&svc->peers[i], &peers[i]);
    lk->on_peers(lk->arg, lk->hash, svc->peers, n);
}

static void
lk_done_cb(void *ud, const struct dht_lookup_result *res)
{
    struct lk_part *part = ud;
    struct dhtsvc_lookup *lk = part->lk;
    part->handle = 0;
    lk->res.queries += res->queries;
    lk->res.answers += res->answers;
    lk->res.peers += res->peers;
    lk->res.announced += res->announced;
    lk->res.nodes += (unsigned)res->n_nodes;
    if (res->ms > lk->res.ms)
        lk->res.ms = res->ms;
    for (int i = 0; i < FAM_MAX; i++)
        if (lk->part[i].handle > 0)
            return;
    lookup_finish(lk);
}

struct dhtsvc_lookup *
dhtsvc_get_peers(struct dhtsvc *svc, const uint8_t info_hash[20],
                 uint16_t announce_port, dhtsvc_peers_t on_peers,
                 dhtsvc_done_t on_done, void *arg, int *reterr)
{
    int r = 0;
    if (svc->stopping) {
        r = -ESHUTDOWN;
        goto fail;
    }
    struct dhtsvc_lookup *lk = calloc(1, sizeof(*lk));
    if (!lk) {
        r = -ENOMEM;
        goto fail;
    }
    lk->svc = svc;
    memcpy(lk->hash, info_hash, 20);
    lk->on_peers = on_peers;
    lk->on_done = on_done;
    lk->arg = arg;
    uint64_t now = now_ms();
    lk->started = now;
    uint16_t udp_port = dhtsvc_port(svc);
    bool any = false;
    for (int i = 0; i < FAM_MAX; i++) {
        lk->part[i].lk = lk;
        if (!svc->fam[i].d)
            continue;
        struct dht_lookup_params p = {
            .kind = announce_port ? DHT_LOOKUP_ANNOUNCE : DHT_LOOKUP_GET_PEERS,
            .port = announce_port,
            .implied_port = announce_port && announce_port == udp_port,
            .on_peers = lk_peers_cb,
            .on_done = lk_done_cb,
            .ud = &lk->part[i],
        };
        memcpy(p.target, info_hash, 20);
        int h = dht_lookup(svc->fam[i].d, &p, now);
        if (h > 0) {
            lk->part[i].handle = h;
            any = true;
        } else {
            r = h;
        }
    }
    if (!any) {
        free(lk);
        if (r == 0)
            r = -ENOSPC;
        goto fail;
    }
    lk->next = svc->lookups;
    if (lk->next)
        lk->next->prev = lk;
    svc->lookups = lk;
    svc->lk_started++;
    return lk;
fail:
    if (reterr)
        *reterr = r;
    return NULL;
}

void
dhtsvc_lookup_cancel(struct dhtsvc *svc, struct dhtsvc_lookup *lk)
{
    if (!lk)
        return;
    for (int i = 0; i < FAM_MAX; i++)
        if (lk->part[i].handle > 0)
            (void)dht_lookup_cancel(svc->fam[i].d, lk->part[i].handle);
    if (lk->prev)
        lk->prev->next = lk->next;
    else
        svc->lookups = lk->next;
    if (lk->next)
        lk->next->prev = lk->prev;
    free(lk);
}

/* --- announce schedule ----------------------------------------------------- */

static void
announce_arm(struct dhtsvc_announce *a, double after)
{
    struct dhtsvc *svc = a->svc;
    if (!svc || svc->stopping)
        return;
    ev_timer_stop(svc->loop, &a->timer);
    ev_timer_set(&a->timer, after, 0.);
    ev_timer_start(svc->loop, &a->timer);
}

static void
announce_done(void *arg, const uint8_t info_hash[20],
              const struct dhtsvc_result *res)
{
    struct dhtsvc_announce *a = arg;
    (void)info_hash;
    a->lk = NULL;
    if (res->aborted)
        return;
    announce_arm(a, res->nodes == 0 ? DHTSVC_ANNOUNCE_RETRY_S
                                    : DHTSVC_ANNOUNCE_S);
}

static void
announce_peers(void *arg, const uint8_t info_hash[20],
               const struct sockaddr_storage *addrs, size_t n)
{
    struct dhtsvc_announce *a = arg;
    if (a->on_peers)
        a->on_peers(a->arg, info_hash, addrs, n);
}

static void
announce_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct dhtsvc_announce *a = w->data;
    if (!a->svc || a->lk)
        return;
    int r = 0;
    a->lk = dhtsvc_get_peers(a->svc, a->hash, a->port, announce_peers,
                             announce_done, a, &r);
    if (!a->lk)
        announce_arm(a, DHTSVC_ANNOUNCE_RETRY_S);
}

struct dhtsvc_announce *
dhtsvc_announce_new(struct dhtsvc *svc, const uint8_t info_hash[20],
                    uint16_t port, dhtsvc_peers_t on_peers, void *arg)
{
    struct dhtsvc_announce *a = calloc(1, sizeof(*a));
    if (!a)
        return NULL;
    a->svc = svc;
    memcpy(a->hash, info_hash, 20);
    a->port = port;
    a->on_peers = on_peers;
    a->arg = arg;
    ev_timer_init(&a->timer, announce_timer_cb, 0., 0.);
    a->timer.data = a;
    a->next = svc->announces;
    if (a->next)
        a->next->prev = a;
    svc->announces = a;
    announce_arm(a, 0.);
    return a;
}

void
dhtsvc_announce_set_port(struct dhtsvc_announce *a, uint16_t port)
{
    a->port = port;
}

void
dhtsvc_announce_free(struct dhtsvc_announce *a)
{
    if (!a)
        return;
    struct dhtsvc *svc = a->svc;
    if (svc) {
        ev_timer_stop(svc->loop, &a->timer);
        dhtsvc_lookup_cancel(svc, a->lk);
        if (a->prev)
            a->prev->next = a->next;
        else
            svc->announces = a->next;
        if (a->next)
            a->next->prev = a->prev;
    }
    free(a);
}

/* --- status ---------------------------------------------------------------- */

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

unsigned
dhtsvc_good_nodes(struct dhtsvc *svc)
{
    unsigned n = 0;
    struct dht_status st;
    if (!svc)
        return 0;
    for (int i = 0; i < FAM_MAX; i++) {
        if (!svc->fam[i].d)
            continue;
        dht_status(svc->fam[i].d, now_ms(), &st);
        n += st.good;
    }
    return n;
}

static void
add_u64(struct json_object *o, const char *k, uint64_t v)
{
    json_object_object_add(o, k, json_object_new_uint64(v));
}

static struct json_object *
buckets_json(const struct dht_status *st)
{
    struct json_object *arr = json_object_new_array();
    for (unsigned i = 0; arr && i < st->n_buckets; i++) {
        struct json_object *b = json_object_new_object();
        if (!b)
            break;
        add_u64(b, "index", i);
        add_u64(b, "nodes", st->bucket_nodes[i]);
        add_u64(b, "good", st->bucket_good[i]);
        json_object_array_add(arr, b);
    }
    return arr;
}

struct json_object *
dhtsvc_status_json(struct dhtsvc *svc)
{
    struct json_object *o = json_object_new_object();
    if (!o)
        return NULL;
    json_object_object_add(o, "enabled", json_object_new_boolean(svc != NULL));
    if (!svc)
        return o;
    struct dht_status st[FAM_MAX], sum;
    bool have[FAM_MAX];
    memset(&sum, 0, sizeof(sum));
    uint64_t now = now_ms();
    for (int i = 0; i < FAM_MAX; i++) {
        have[i] = svc->fam[i].d != NULL;
        if (!have[i])
            continue;
        dht_status(svc->fam[i].d, now, &st[i]);
        memcpy(sum.id, st[i].id, DHT_ID_LEN);
        sum.good += st[i].good;
        sum.questionable += st[i].questionable;
        sum.bad += st[i].bad;
        sum.replacements += st[i].replacements;
        sum.stored_hashes += st[i].stored_hashes;
        sum.stored_peers += st[i].stored_peers;
        sum.lookups_running += st[i].lookups_running;
        sum.queries_sent += st[i].queries_sent;
        sum.queries_received += st[i].queries_received;
        sum.responses_received += st[i].responses_received;
        sum.errors_received += st[i].errors_received;
        sum.timeouts += st[i].timeouts;
        sum.malformed += st[i].malformed;
        sum.rate_limited += st[i].rate_limited;
        sum.non_compliant += st[i].non_compliant;
        sum.bytes_sent += st[i].bytes_sent;
        sum.bytes_received += st[i].bytes_received;
        sum.announces_stored += st[i].announces_stored;
        sum.announces_refused += st[i].announces_refused;
        if (st[i].has_external_ip &&
            st[i].external_ip_votes > sum.external_ip_votes) {
            sum.has_external_ip = true;
            sum.external_ip = st[i].external_ip;
            sum.external_ip_votes = st[i].external_ip_votes;
        }
    }
    char hex[2 * DHT_ID_LEN + 1];
    hex_encode(hex, sum.id, DHT_ID_LEN);
    json_object_object_add(o, "node_id", json_object_new_string(hex));
    add_u64(o, "port", dhtsvc_port(svc));
    struct json_object *fams = json_object_new_array();
    for (int i = 0; fams && i < FAM_MAX; i++)
        if (have[i])
            json_object_array_add(fams, json_object_new_string(
                                            i == FAM_V4 ? "ipv4" : "ipv6"));
    json_object_object_add(o, "families", fams);

    struct json_object *nodes = json_object_new_object();
    if (nodes) {
        add_u64(nodes, "good", sum.good);
        add_u64(nodes, "questionable", sum.questionable);
        add_u64(nodes, "bad", sum.bad);
        add_u64(nodes, "replacements", sum.replacements);
    }
    json_object_object_add(o, "nodes", nodes);
    if (have[FAM_V4])
        json_object_object_add(o, "buckets", buckets_json(&st[FAM_V4]));
    else if (have[FAM_V6])
        json_object_object_add(o, "buckets", buckets_json(&st[FAM_V6]));
    if (have[FAM_V4] && have[FAM_V6])
        json_object_object_add(o, "buckets6", buckets_json(&st[FAM_V6]));

    struct json_object *stored = json_object_new_object();
    if (stored) {
        add_u64(stored, "info_hashes", sum.stored_hashes);
        add_u64(stored, "peers", sum.stored_peers);
        add_u64(stored, "announces", sum.announces_stored);
        add_u64(stored, "refused", sum.announces_refused);
    }
    json_object_object_add(o, "stored", stored);

    uint64_t median = 0;
    if (svc->n_durations) {
        uint64_t t[DHT_STATS_LOOKUPS];
        memcpy(t, svc->durations, svc->n_durations * sizeof(t[0]));
        qsort(t, svc->n_durations, sizeof(t[0]), cmp_u64);
        median = t[svc->n_durations / 2];
    }
    unsigned running = 0;
    for (struct dhtsvc_lookup *lk = svc->lookups; lk; lk = lk->next)
        running++;
    struct json_object *lookups = json_object_new_object();
    if (lookups) {
        add_u64(lookups, "started", svc->lk_started);
        add_u64(lookups, "finished", svc->lk_finished);
        add_u64(lookups, "running", running);
        add_u64(lookups, "queries", svc->lk_queries);
        add_u64(lookups, "median_ms", median);
        add_u64(lookups, "internal_running", sum.lookups_running);
    }
    json_object_object_add(o, "lookups", lookups);

    struct json_object *c = json_object_new_object();
    if (c) {
        add_u64(c, "messages_in", svc->msgs_in);
        add_u64(c, "messages_out", svc->msgs_out);
        add_u64(c, "bytes_in", sum.bytes_received);
        add_u64(c, "bytes_out", sum.bytes_sent);
        add_u64(c, "queries_in", sum.queries_received);
        add_u64(c, "queries_out", sum.queries_sent);
        add_u64(c, "responses_in", sum.responses_received);
        add_u64(c, "errors_in", sum.errors_received);
        add_u64(c, "malformed", sum.malformed);
        add_u64(c, "rate_limited", sum.rate_limited);
        add_u64(c, "timeouts", sum.timeouts);
        add_u64(c, "non_bep42", sum.non_compliant);
        add_u64(c, "send_dropped", svc->send_dropped);
        add_u64(c, "recv_errors", svc->recv_errors);
    }
    json_object_object_add(o, "counters", c);
    if (sum.has_external_ip) {
        char txt[64];
        format_krpc(&sum.external_ip, txt, sizeof(txt), false);
        json_object_object_add(o, "external_ip", json_object_new_string(txt));
    } else {
        json_object_object_add(o, "external_ip", NULL);
    }
    return o;
}
