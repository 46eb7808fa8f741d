/* engine — torrents that move data; see engine.h.
 *
 * The flow of a download, per torrent:
 *   peer thread writes blocks -> on_blocks_done -> picker_block_received;
 *   a complete piece -> sealed (no peer thread writes to it from then
 *   on: a late end-game copy, or one from a peer whose requests went to
 *   others, is dropped; the job waits for writes already begun, see
 *   peerconn.h "Sealed pieces") -> a hash job on the "verify" workers;
 *   pass -> picker_hash_passed, HAVE queued to every peer (one record per
 *   peer per loop iteration), the piece waits in e->pending;
 *   every tick (or at once when many wait, or at completion) the pending
 *   pieces go to the torrent's bitfield and one io job on the session's
 *   ordered io worker runs storage_flush() and then writes the resume
 *   record: the record names a piece only once its data is durable; a
 *   failed flush stops the job before the write.
 *   fail -> picker_hash_failed, unsealed, strikes against the senders,
 *   ban.  A pass keeps the piece sealed for good.
 * Requests: after every batch of blocks from a peer, its pipeline is
 * filled again with picker_pick(), sized by picker_pipeline_depth() from
 * its rate (at least ENGINE_PIPELINE_MIN), in one command record.  A
 * peer that chokes us but sent ALLOWED_FAST (BEP 6) is asked for those
 * pieces only (picker_pick_from()).
 */
#include "daemon/engine.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "common/log.h"
#include "common/metainfo.h"
#include "common/wire.h"
#include "daemon/choker.h"
#include "daemon/dhtsvc.h"
#include "daemon/listen.h"
#include "daemon/lsd.h"
#include "daemon/magnet_fetch.h"
#include "daemon/peer.h"
#include "daemon/peerconn.h"
#include "daemon/picker.h"
#include "daemon/rate.h"
#include "daemon/resolver.h"
#include "daemon/session_int.h"
#include "daemon/storage.h"
#include "daemon/tracker.h"
#include "daemon/trk_http.h"
#include "daemon/trk_udp.h"
#include "daemon/worker.h"

struct engine;

struct dying_ts {
    struct engine_ctx *x;
    struct tracker_set *ts; /* owned */
    struct dying_ts *next, *prev;
};

struct engine_ctx {
    struct session *s;        /* borrowed: owns the ctx */
    struct ev_loop *loop;     /* borrowed */
    struct peer_table *peers; /* owned */
    struct pconn_config pcfg;
    struct rate_bucket up, down; /* global limits */
    struct listen *ln;           /* owned, or NULL */
    struct trk_http *http;       /* owned, or NULL */
    struct trk_udp *udp;         /* owned, or NULL */
    struct resolver *res;        /* owned, or NULL: x.pe names, and
                                    lent to udp (freed after it) */
    struct tracker_set_config tcfg;
    char bind_ip[80]; /* numeric listen address, "" = any */
    struct sockaddr_storage self;
    socklen_t self_len;
    struct worker *hash; /* owned */
    struct engine *engines;
    struct dying_ts *dying;
    uint32_t next_tag;
    uint64_t seed;
    bool freeing;
    bool lsd_hooked; /* lsd_set_peer_cb done */
    void (*stop_done)(void *arg); /* engine_ctx_stop's, until x->dying
                                     is empty */
    void *stop_arg;
};

/* An x.pe name being resolved for a magnet's run. */
struct xpe_lookup {
    struct engine *e;           /* borrowed: cancels the lookup first */
    struct resolver_lookup *lk; /* while resolving, or NULL */
    char host[RESOLVER_HOST_MAX + 1];
};

struct cand {
    struct sockaddr_storage addr;
    socklen_t len;
    unsigned fails;
    int64_t next_ms;
    bool connected;
    bool dead;      /* ourselves, or banned */
    bool plaintext; /* with encryption prefer: it dropped our MSE and took
                     * the plaintext reconnect, so dial it so */
};

struct epeer {
    struct engine_ctx *x;
    struct engine *e; /* NULL: incoming, no torrent yet */
    struct peer *p;   /* borrowed: valid until on_closed */
    struct epeer *next, *prev;
    uint32_t tag;
    uint32_t gen; /* e->gen when added to picker and choker */
    int pk, ck;   /* handles, -1 = none */
    long cand;    /* index in e->cands, or -1 */
    uint8_t id[WIRE_PEER_ID_LEN];
    char client[WIRE_EXT_CLIENT_MAX + 1];
    unsigned features;
    unsigned reqq;
    bool handshaken, incoming;
    bool choking_us, interested_in_us, am_interested, unchoked;
    bool seed;
    bool snubbed; /* it left our requests unanswered: ask it no more */
    uint32_t af[PCONN_ALLOWED_FAST_RX_MAX]; /* BEP 6: it lets us fetch these
                                             * while it chokes us */
    uint32_t n_af;
    uint32_t outstanding;
    int64_t waiting_since_ms; /* requests in flight and no block since */
    unsigned strikes;
    int64_t connected_ms, last_block_ms;
    uint64_t down_total, up_total;
    uint32_t n_have;
    struct rate_meter down, up;
    struct sockaddr_storage addr;
    socklen_t addr_len;
    struct ext_pex_state pex; /* BEP 11: what we told it */
    bool pex_ok;              /* its extension handshake has ut_pex */
    /* What it announced while the piece count was unknown (a magnet),
     * checked once the metadata is there (magnet_join). */
    uint8_t *m_bits; /* owned, or NULL */
    uint32_t m_bits_len;
    uint32_t *m_haves; /* owned: at most ENGINE_MAGNET_HAVES_MAX */
    size_t n_m_haves;
    bool m_have_all;
};

/* What the pconn_torrent's release frees: it outlives the engine's run. */
struct edata {
    struct rate_bucket up, down;
    struct storage *st;
    struct torrent *t; /* a job reference: meta stays while storage does */
    struct session *s; /* borrowed: told when t's last storage closes */
};

struct engine {
    struct engine_ctx *x;
    struct torrent *t; /* a job reference (t->jobs) */
    struct engine *next, *prev;
    unsigned refs; /* 1 for the torrent + peers + jobs */
    bool running, removed, seeding;
    bool whole; /* every byte of the torrent verified ("completed" sent,
                   or it started so) */
    uint32_t gen;
    struct pconn_torrent *ptor; /* owned reference while running */
    struct edata *ed;           /* borrowed through ptor */
    char *dir;                  /* owned: the download dir of this run */
    struct picker *pk;
    struct choker *ch;
    struct tracker_set *ts;
    uint8_t *have; /* verified pieces (also those not yet durable) */
    uint32_t nbytes;
    struct epeer *peers;
    size_t n_peers;
    struct epeer **by_pk, **by_ck;
    size_t cap_pk, cap_ck;
    struct cand *cands;
    size_t n_cands, cap_cands;
    uint32_t *pending;
    size_t n_pending, cap_pending;
    bool flushing;
    ev_timer tick;
    struct rate_meter down, up;
    /* Seed limits (seedlimit.h): since when it seeds without uploading. */
    uint64_t idle_up;      /* t->uploaded at idle_since_ms */
    int64_t idle_since_ms; /* mono_ms() */
    /* BEP 9: a run without metadata (state metadata). */
    bool magnet;
    struct mfetch *mf; /* owned while magnet */
    /* Peer sources (never for a private torrent). */
    struct dhtsvc_announce *dht_ann; /* owned while running */
    struct dhtsvc_lookup *dht_lk;    /* a get_peers running, or NULL */
    int64_t dht_next_ms;
    /* x.pe names of the magnet (e_start_magnet), cancelled by e_stop(). */
    struct xpe_lookup *xpe; /* owned, or NULL */
    size_t n_xpe;
};

static int64_t
mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t
mono_ms(void)
{
    return mono_us() / 1000;
}

static void e_unref(struct engine *e);
static void e_stop(struct engine *e);
static void flush_pending(struct engine *e);
static void fill(struct engine *e, struct epeer *ep);
static void sources_tick(struct engine *e, int64_t now_ms);
static void sources_stop(struct engine *e);
static int e_start_magnet(struct engine *e);
static void xpe_cancel(struct engine *e);
static void connect_more(struct engine *e);
static void magnet_keep_haves(struct epeer *ep, const uint32_t *pieces,
                              size_t n);
static void magnet_forget(struct epeer *ep);
static int magnet_switch(struct engine *e);
static uint64_t bytes_missing(const struct torrent *t);
static void on_lsd_peer(void *arg, const uint8_t *info_hash,
                        const struct sockaddr *addr, socklen_t len);

/* --- addresses ------------------------------------------------------------ */

static bool
same_ip(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return false;
    if (a->ss_family == AF_INET)
        return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
               ((const struct sockaddr_in *)b)->sin_addr.s_addr;
    if (a->ss_family == AF_INET6)
        return !memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
                       &((const struct sockaddr_in6 *)b)->sin6_addr, 16);
    return false;
}

static uint16_t
addr_port(const struct sockaddr_storage *a)
{
    if (a->ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)a)->sin_port);
    if (a->ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)a)->sin6_port);
    return 0;
}

static void
set_port(struct sockaddr_storage *a, uint16_t port)
{
    if (a->ss_family == AF_INET)
        ((struct sockaddr_in *)a)->sin_port = htons(port);
    else if (a->ss_family == AF_INET6)
        ((struct sockaddr_in6 *)a)->sin6_port = htons(port);
}

static bool
same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    return same_ip(a, b) && addr_port(a) == addr_port(b);
}

/* --- candidates ------------------------------------------------------------
 */

static long
cand_find(struct engine *e, const struct sockaddr_storage *a)
{
    for (size_t i = 0; i < e->n_cands; i++)
        if (same_addr(&e->cands[i].addr, a))
            return (long)i;
    return -1;
}

static bool
ip_banned(struct engine *e, const struct sockaddr_storage *a)
{
    for (size_t i = 0; i < e->n_cands; i++)
        if (e->cands[i].dead && e->cands[i].fails == UINT32_MAX &&
            same_ip(&e->cands[i].addr, a))
            return true;
    return false;
}

/* Returns the index, or -1 without memory / past the limit. */
static long
cand_add(struct engine *e, const struct sockaddr_storage *a, socklen_t len)
{
    long i = cand_find(e, a);
    if (i >= 0)
        return i;
    if (e->n_cands >= ENGINE_MAX_CANDIDATES)
        return -1;
    if (e->n_cands == e->cap_cands) {
        size_t cap = e->cap_cands ? e->cap_cands * 2 : 16;
        struct cand *v = realloc(e->cands, cap * sizeof(*v));
        if (!v)
            return -1;
        e->cands = v;
        e->cap_cands = cap;
    }
    struct cand *c = &e->cands[e->n_cands];
    memset(c, 0, sizeof(*c));
    c->addr = *a;
    c->len = len;
    /* Our own listen address (a tracker hands it back). */
    if (e->x->self_len && same_addr(a, &e->x->self))
        c->dead = true;
    return (long)e->n_cands++;
}

/* --- small helpers ------------------------------------------------------- */

static bool
bit_get(const uint8_t *b, uint32_t i)
{
    return b && (b[i >> 3] & (0x80u >> (i & 7)));
}

static void
bit_set(uint8_t *b, uint32_t i)
{
    b[i >> 3] |= (uint8_t)(0x80u >> (i & 7));
}

static int
map_set(struct epeer ***v, size_t *cap, int h, struct epeer *ep)
{
    if (h < 0)
        return -EINVAL;
    if ((size_t)h >= *cap) {
        size_t nc = *cap ? *cap : 16;
        while (nc <= (size_t)h)
            nc *= 2;
        struct epeer **nv = realloc(*v, nc * sizeof(*nv));
        if (!nv)
            return -ENOMEM;
        memset(nv + *cap, 0, (nc - *cap) * sizeof(*nv));
        *v = nv;
        *cap = nc;
    }
    (*v)[h] = ep;
    return 0;
}

/* Give ep a slot in e's picker and choker (ep->pk, ep->ck).  Returns 0,
 * or -1 with nothing taken (out of memory). */
static int
ep_enlist(struct engine *e, struct epeer *ep)
{
    int h = picker_peer_add(e->pk, ep->tag);
    int c = h >= 0 ? choker_peer_add(e->ch, ep->tag, mono_ms()) : -1;
    if (h < 0 || c < 0 || map_set(&e->by_pk, &e->cap_pk, h, ep) < 0 ||
        map_set(&e->by_ck, &e->cap_ck, c, ep) < 0) {
        if (h >= 0)
            picker_peer_remove(e->pk, h);
        if (c >= 0)
            choker_peer_remove(e->ch, c);
        return -1;
    }
    ep->pk = h;
    ep->ck = c;
    return 0;
}

static struct epeer *
map_get(struct epeer **v, size_t cap, int h)
{
    return h >= 0 && (size_t)h < cap ? v[h] : NULL;
}

static uint8_t
picker_prio_of(const struct torrent *t, size_t i)
{
    uint8_t p = t->priority ? t->priority[i] : STATE_PRIO_NORMAL;
    switch (p) {
    case STATE_PRIO_SKIP:
        return 0;
    case STATE_PRIO_LOW:
        return 1;
    case STATE_PRIO_HIGH:
        return PICKER_PRIO_MAX;
    default:
        return PICKER_PRIO_DEFAULT;
    }
}

static void
apply_priorities(struct engine *e)
{
    const struct meta_info *m = e->t->meta;
    struct picker_file *f = calloc(m->n_files ? m->n_files : 1, sizeof(*f));
    if (!f)
        return;
    for (size_t i = 0; i < m->n_files; i++) {
        f[i].offset = m->files[i].offset;
        f[i].length = m->files[i].length;
        f[i].priority =
            (m->files[i].attr & META_ATTR_PAD) ? 0 : picker_prio_of(e->t, i);
    }
    (void)picker_set_file_priorities(e->pk, f, m->n_files);
    free(f);
    picker_set_sequential(e->pk, e->t->sequential);
}

/* --- peers: bookkeeping -------------------------------------------------- */

static void
ep_link(struct engine *e, struct epeer *ep)
{
    ep->e = e;
    ep->next = e->peers;
    ep->prev = NULL;
    if (e->peers)
        e->peers->prev = ep;
    e->peers = ep;
    e->n_peers++;
    e->refs++;
}

static void
ep_unlink(struct engine *e, struct epeer *ep)
{
    if (ep->prev)
        ep->prev->next = ep->next;
    else
        e->peers = ep->next;
    if (ep->next)
        ep->next->prev = ep->prev;
    e->n_peers--;
}

static struct epeer *
ep_new(struct engine_ctx *x, const struct sockaddr *addr, socklen_t len,
       bool incoming)
{
    struct epeer *ep = calloc(1, sizeof(*ep));
    if (!ep)
        return NULL;
    ep->x = x;
    ep->tag = ++x->next_tag;
    ep->pk = ep->ck = -1;
    ep->cand = -1;
    ep->incoming = incoming;
    ep->choking_us = true;
    ep->connected_ms = mono_ms();
    ext_pex_state_init(&ep->pex);
    if (len > sizeof(ep->addr))
        len = sizeof(ep->addr);
    memcpy(&ep->addr, addr, len);
    ep->addr_len = len;
    rate_meter_init(&ep->down, 20);
    rate_meter_init(&ep->up, 20);
    return ep;
}

/* Take the peer out of the picker and the choker (while e runs). */
static void
ep_detach(struct engine *e, struct epeer *ep)
{
    if (e->running && ep->gen == e->gen) {
        if (ep->pk >= 0) {
            picker_peer_remove(e->pk, ep->pk);
            (void)map_set(&e->by_pk, &e->cap_pk, ep->pk, NULL);
        }
        if (ep->ck >= 0) {
            choker_peer_remove(e->ch, ep->ck);
            (void)map_set(&e->by_ck, &e->cap_ck, ep->ck, NULL);
        }
    }
    ep->pk = ep->ck = -1;
    ep->outstanding = 0;
}

static void
update_interest(struct engine *e, struct epeer *ep)
{
    if (!e->running || ep->pk < 0 || !ep->handshaken)
        return;
    bool want = !e->seeding && picker_peer_interesting(e->pk, ep->pk);
    if (want && !ep->am_interested) {
        if (peer_interested(ep->p) == 0)
            ep->am_interested = true;
    } else if (!want && ep->am_interested) {
        if (peer_not_interested(ep->p) == 0)
            ep->am_interested = false;
    }
}

static void
choker_feed(struct engine *e, struct epeer *ep, int64_t now_ms, int64_t now_us)
{
    if (ep->ck < 0)
        return;
    struct choker_peer_info info = {
        .interested = ep->interested_in_us,
        .am_interested = ep->am_interested,
        .choking_us = ep->choking_us,
        .down_rate = rate_meter_get(&ep->down, now_us),
        .up_rate = rate_meter_get(&ep->up, now_us),
        .last_block_ms = ep->last_block_ms,
    };
    choker_peer_update(e->ch, ep->ck, &info, now_ms);
}

static void
rechoke(struct engine *e)
{
    if (!e->running)
        return;
    struct choker_decision d[64];
    int64_t now = mono_ms();
    for (int round = 0; round < 64; round++) {
        size_t n = choker_run(e->ch, now, d, 64);
        for (size_t i = 0; i < n; i++) {
            struct epeer *ep = map_get(e->by_ck, e->cap_ck, d[i].peer);
            if (!ep)
                continue;
            if (d[i].unchoke) {
                if (peer_unchoke(ep->p) == 0)
                    ep->unchoked = true;
            } else if (peer_choke(ep->p) == 0) {
                ep->unchoked = false;
            }
        }
        if (n < 64)
            break;
    }
}

/* --- requests ------------------------------------------------------------- */

static void
fill(struct engine *e, struct epeer *ep)
{
    /* Choked: only its allowed-fast pieces (BEP 6), if it gave any. */
    bool af_only = ep->choking_us;
    if (af_only && (!(ep->features & WIRE_F_FAST) || ep->n_af == 0))
        return;
    if (!e->running || e->seeding || !ep->handshaken ||
        !ep->am_interested || ep->pk < 0 || ep->snubbed || peer_closing(ep->p))
        return;
    int64_t now = mono_us();
    unsigned depth =
        picker_pipeline_depth(rate_meter_get(&ep->down, now), ep->reqq, 20);
    unsigned cap = ep->reqq ? ep->reqq : PICKER_REQQ_DEFAULT;
    if (depth < ENGINE_PIPELINE_MIN)
        depth = ENGINE_PIPELINE_MIN < cap ? ENGINE_PIPELINE_MIN : cap;
    if (depth > PCONN_MAX_OUTSTANDING)
        depth = PCONN_MAX_OUTSTANDING;
    if (ep->outstanding >= depth)
        return;
    size_t want = depth - ep->outstanding;
    /* Ask in batches of at least a few blocks: fewer, larger records. */
    if (ep->outstanding > 0 && want < depth / 8)
        return;
    if (want > ENGINE_PICK_MAX)
        want = ENGINE_PICK_MAX;
    struct picker_block pb[ENGINE_PICK_MAX];
    int n = af_only ? picker_pick_from(e->pk, ep->pk, ep->af, ep->n_af, pb,
                                       want)
                    : picker_pick(e->pk, ep->pk, pb, want);
    if (n <= 0)
        return;
    struct wire_block wb[ENGINE_PICK_MAX];
    for (int i = 0; i < n; i++) {
        wb[i].index = pb[i].piece;
        wb[i].begin = pb[i].begin;
        wb[i].length = pb[i].length;
    }
    if (peer_request(ep->p, wb, (size_t)n) < 0) {
        for (int i = 0; i < n; i++)
            (void)picker_peer_rejected(e->pk, ep->pk, pb[i].piece, pb[i].begin);
        return;
    }
    if (ep->outstanding == 0)
        ep->waiting_since_ms = now / 1000;
    ep->outstanding += (uint32_t)n;
}

static void
fill_all(struct engine *e)
{
    for (struct epeer *ep = e->peers; ep; ep = ep->next)
        fill(e, ep);
}

/* --- hashing -------------------------------------------------------------- */

struct hjob {
    struct engine *e;
    uint32_t gen;
    struct pconn_torrent *ptor; /* a reference */
    uint32_t piece;
};

static int
hash_run(void *arg)
{
    struct hjob *h = arg;
    const struct meta_info *m = h->ptor->info;
    /* The piece is sealed (hash_submit): no write begins now; wait for
     * those that began before (peerconn.h, "Sealed pieces").  One stuck
     * on the disk: the data is not trusted, the piece is fetched again. */
    if (pconn_piece_wait_writers(h->ptor, h->piece, PCONN_WAIT_WRITERS_MS) <
        0)
        return -EAGAIN;
    uint32_t size = meta_piece_size(m, h->piece);
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        return -ENOMEM;
    int r = storage_read_piece(h->ptor->storage, h->piece, buf);
    if (r >= 0) {
        uint8_t md[EVP_MAX_MD_SIZE];
        unsigned mdlen = 0;
        if (EVP_Digest(buf, (size_t)r, md, &mdlen, EVP_sha1(), NULL) != 1)
            r = -EIO;
        else
            r = memcmp(md, m->pieces + (size_t)h->piece * 20, 20) == 0;
    }
    free(buf);
    return r;
}

static void
engine_fail(struct engine *e, int err, const char *what)
{
    struct torrent *t = e->t;
    struct storage_error se;
    char msg[512];
    if (e->ed && e->ed->st && storage_get_error(e->ed->st, &se) != 0)
        storage_error_format(&se, msg, sizeof(msg));
    else
        snprintf(msg, sizeof(msg), "%s: %s", what, strerror(-err));
    if (t->state == TORRENT_ERROR || t->removed)
        return;
    session_set_error(e->x->s, t, "%s", msg);
    session_save_resume(e->x->s, t);
}

static void
strike(struct engine *e, uint32_t tag, unsigned n)
{
    for (struct epeer *ep = e->peers; ep; ep = ep->next) {
        if (ep->tag != tag)
            continue;
        ep->strikes += n;
        if (ep->strikes < ENGINE_BAN_STRIKES)
            return;
        char a[80];
        listen_format_addr((struct sockaddr *)&ep->addr, a, sizeof(a));
        log_field(LOG_LEVEL_INFO, "TORRENT", e->t->hex,
                  "banning peer %s: it sent bad data %u times", a, ep->strikes);
        long c = cand_add(e, &ep->addr, ep->addr_len);
        if (c >= 0) {
            e->cands[c].dead = true;
            e->cands[c].fails = UINT32_MAX;
        }
        peer_close(ep->p);
        return;
    }
}

static void
piece_passed(struct engine *e, uint32_t piece)
{
    if (picker_hash_passed(e->pk, piece) < 0)
        return;
    bit_set(e->have, piece);
    if (e->n_pending == e->cap_pending) {
        size_t cap = e->cap_pending ? e->cap_pending * 2 : 64;
        uint32_t *v = realloc(e->pending, cap * sizeof(*v));
        if (!v) {
            /* Kept in memory only: a restart fetches it again. */
            return;
        }
        e->pending = v;
        e->cap_pending = cap;
    }
    e->pending[e->n_pending++] = piece;
    for (struct epeer *ep = e->peers; ep; ep = ep->next)
        if (ep->handshaken && !peer_closing(ep->p))
            (void)peer_send_have(ep->p, &piece, 1);
    if (picker_complete(e->pk)) {
        e->seeding = true;
        choker_set_seeding(e->ch, true);
        for (struct epeer *ep = e->peers; ep; ep = ep->next)
            update_interest(e, ep);
        flush_pending(e);
    } else if (e->n_pending >= ENGINE_FLUSH_PIECES) {
        flush_pending(e);
    }
}

static void
hash_done(void *arg, int r)
{
    struct hjob *h = arg;
    struct engine *e = h->e;
    if (!e->x->freeing && e->running && h->gen == e->gen) {
        if (r == 1) {
            piece_passed(e, h->piece);
        } else if (r == 0) {
            uint32_t tags[16];
            int n = picker_hash_failed(e->pk, h->piece, tags, 16);
            log_field(LOG_LEVEL_DEBUG, "TORRENT", e->t->hex,
                      "piece %" PRIu32 " failed its hash check", h->piece);
            for (int i = 0; i < n; i++)
                strike(e, tags[i], n == 1 ? 2 : 1);
            pconn_piece_unseal(h->ptor, h->piece); /* fetched again */
            fill_all(e);
        } else if (r == -ENOMEM || r == -EAGAIN) {
            (void)picker_hash_failed(e->pk, h->piece, NULL, 0);
            pconn_piece_unseal(h->ptor, h->piece);
        } else {
            engine_fail(e, r, "cannot read a piece");
        }
    }
    pconn_torrent_unref(h->ptor);
    free(h);
    e_unref(e);
}

static void
hash_submit(struct engine *e, uint32_t piece)
{
    struct hjob *h = calloc(1, sizeof(*h));
    if (!h) {
        (void)picker_hash_failed(e->pk, piece, NULL, 0);
        return;
    }
    h->e = e;
    h->gen = e->gen;
    h->ptor = pconn_torrent_ref(e->ptor);
    h->piece = piece;
    e->refs++;
    /* Sealed before the job is queued: from now on no peer thread writes
     * to the piece (a late end-game copy is dropped); it stays sealed if
     * the hash passes and is unsealed if it fails (hash_done). */
    pconn_piece_seal(e->ptor, piece);
    if (worker_submit(e->x->hash, hash_run, hash_done, h) < 0) {
        pconn_piece_unseal(e->ptor, piece);
        pconn_torrent_unref(h->ptor);
        free(h);
        e->refs--;
        (void)picker_hash_failed(e->pk, piece, NULL, 0);
    }
}

/* --- flushing: durable, then recorded ----------------------------------- */

struct fjob {
    struct engine *e;
    struct pconn_torrent *ptor; /* a reference */
    bool complete;              /* create the empty files too */
    uint32_t *pieces;           /* owned: the pieces this job records */
    size_t n;
};

static int
flush_run(void *arg)
{
    struct fjob *f = arg;
    int r = storage_flush(f->ptor->storage);
    if (r == 0 && f->complete)
        r = storage_create_empty_files(f->ptor->storage);
    return r;
}

static void
flush_free(void *arg)
{
    struct fjob *f = arg;
    pconn_torrent_unref(f->ptor);
    free(f->pieces);
    free(f);
}

static void
flush_after(struct session *s, struct io_job *j, int r)
{
    struct fjob *f = j->ops[0].fn_arg;
    struct engine *e = f->e;
    struct torrent *t = e->t;
    e->flushing = false;
    if (e->x->freeing || t->removed) {
        e_unref(e);
        return;
    }
    if (r < 0) {
        struct storage_error se;
        char msg[512];
        /* Not durable: not verified either (the check at the next start
         * decides). */
        if (t->have && t->meta && t->n_pieces == t->meta->n_pieces) {
            for (size_t i = 0; i < f->n; i++)
                t->have[f->pieces[i] >> 3] &=
                    (uint8_t) ~(0x80u >> (f->pieces[i] & 7));
            torrent_file_have(t->meta, t->have, t->n_pieces, t->file_have);
            torrent_recount(t);
        }
        if (storage_get_error(f->ptor->storage, &se) != 0)
            storage_error_format(&se, msg, sizeof(msg));
        else
            snprintf(msg, sizeof(msg), "cannot save the state: %s",
                     strerror(-r));
        if (t->state != TORRENT_ERROR) {
            session_set_error(s, t, "%s", msg);
            session_save_resume(s, t);
        }
        e_unref(e);
        return;
    }
    if (torrent_complete(t) && t->state == TORRENT_DOWNLOADING) {
        session_settle(s, t); /* seeding */
        session_completed(s, t);
        session_save_resume(s, t);
    } else if (torrent_complete(t) && f->complete &&
               t->state != TORRENT_SEEDING) {
        /* Its last pieces, flushed as it stopped (torrent.stop, a move):
         * announced when it runs again (session_settle()). */
        t->completion_pending = true;
    }
    /* BEP 3: trackers count completed downloads from this event: once,
     * when the last byte of the whole torrent is verified (not when the
     * wanted files are, nor when a complete torrent starts again). */
    if (!e->whole && t->meta && bytes_missing(t) == 0) {
        e->whole = true;
        if (e->ts)
            (void)tracker_set_announce(e->ts, TRACKER_EVENT_COMPLETED);
    }
    if (e->n_pending && e->running)
        flush_pending(e);
    e_unref(e);
}

/* Move the pending pieces into the torrent's bitfield and record them once
 * durable: one io job, [flush the files, write the resume record]; the
 * worker stops at the first failure, so the record never names a piece
 * whose data is not on disk.  Later writes of the record come after this
 * job on the same ordered worker. */
static void
flush_pending(struct engine *e)
{
    struct torrent *t = e->t;
    struct session *s = e->x->s;
    if (e->flushing || e->n_pending == 0 || !e->ptor || e->x->freeing)
        return;
    uint32_t np = t->meta->n_pieces;
    if (!t->have || t->n_pieces != np) {
        uint8_t *h = calloc((np + 7) / 8, 1);
        uint64_t *fh =
            calloc(t->meta->n_files ? t->meta->n_files : 1, sizeof(*fh));
        if (!h || !fh) {
            free(h);
            free(fh);
            return;
        }
        if (t->have && t->n_pieces == np)
            memcpy(h, t->have, (np + 7) / 8);
        torrent_set_have(t, h, np, fh);
    }
    if (!t->file_have) {
        uint64_t *fh =
            calloc(t->meta->n_files ? t->meta->n_files : 1, sizeof(*fh));
        if (!fh)
            return;
        t->file_have = fh;
    }
    struct fjob *f = calloc(1, sizeof(*f));
    struct io_job *j = f ? session_io_job_new(s, t, NULL) : NULL;
    if (!j) {
        free(f);
        return;
    }
    for (size_t i = 0; i < e->n_pending; i++)
        bit_set(t->have, e->pending[i]);
    /* The job takes the list; the engine starts a new one. */
    f->pieces = e->pending;
    f->n = e->n_pending;
    e->pending = NULL;
    e->n_pending = e->cap_pending = 0;
    torrent_file_have(t->meta, t->have, np, t->file_have);
    torrent_recount(t);
    f->e = e;
    f->ptor = pconn_torrent_ref(e->ptor);
    f->complete = torrent_complete(t);
    struct io_op *op = session_io_add(j, IO_CALL, NULL);
    op->fn = flush_run;
    op->fn_arg = f;
    op->fn_free = flush_free;
    if (session_io_add_resume(j, t) < 0) {
        session_torrent_unref(j->t);
        session_io_job_free(j);
        return;
    }
    j->after = flush_after;
    e->flushing = true;
    e->refs++;
    session_io_submit(s, j);
}

/* --- peer callbacks --------------------------------------------------------
 */

/* An incoming peer named the torrent of e (NULL: none of ours): take it
 * if the torrent runs and has room, and the address is not banned.
 * Returns a new reference for the peer thread, or NULL to refuse. */
static struct pconn_torrent *
accept_incoming(struct engine_ctx *x, struct peer *p, struct engine *e)
{
    struct epeer *ep = peer_data(p);
    if (!ep || x->freeing)
        return NULL;
    if (!e || !e->running)
        return NULL;
    if (e->n_peers >= x->s->cfg.max_peers_per_torrent)
        return NULL;
    if (ip_banned(e, &ep->addr))
        return NULL;
    ep_link(e, ep);
    return pconn_torrent_ref(e->ptor);
}

static struct pconn_torrent *
cb_info_hash(void *ud, struct peer *p, const uint8_t *info_hash)
{
    struct engine_ctx *x = ud;
    struct torrent *t = session_find_hash(x->s, info_hash);
    return accept_incoming(x, p, t ? t->engine : NULL);
}

/* Incoming MSE: the peer names the torrent by HASH('req2', info-hash),
 * which each running torrent's pconn_torrent carries; as many compares
 * as torrents, like session_find_hash(), and one scan only: the engine
 * found is the one taken. */
static struct pconn_torrent *
cb_mse_hash(void *ud, struct peer *p, const uint8_t *req2)
{
    struct engine_ctx *x = ud;
    for (struct engine *e = x->engines; e; e = e->next)
        if (e->running && e->ptor && e->t->engine == e &&
            memcmp(e->ptor->mse_req2, req2, WIRE_HASH_LEN) == 0)
            return accept_incoming(x, p, e);
    return NULL;
}

/* Two connections to the same peer (both sides dialled at once): keep the
 * one dialled by the side with the smaller peer id, so both sides agree. */
static bool
keep_new_over_old(const struct engine_ctx *x, const struct epeer *nw,
                  const struct epeer *old)
{
    if (nw->incoming == old->incoming)
        return false; /* same direction: keep the older */
    bool we_smaller = memcmp(x->pcfg.peer_id, nw->id, WIRE_PEER_ID_LEN) < 0;
    /* The one we dialled is outgoing. */
    const struct epeer *ours = nw->incoming ? old : nw;
    return we_smaller ? ours == nw : ours != nw;
}

static void
cb_handshake(void *ud, struct peer *p, const uint8_t *peer_id,
             unsigned features)
{
    struct engine_ctx *x = ud;
    struct epeer *ep = peer_data(p);
    struct engine *e = ep ? ep->e : NULL;
    if (!e || !e->running) {
        peer_close(p);
        return;
    }
    memcpy(ep->id, peer_id, WIRE_PEER_ID_LEN);
    ep->features = features;
    /* Dialled with MSE (prefer), up in plaintext: the peer thread's
     * plaintext reconnect.  Later dials skip the attempt that failed. */
    if (!peer_incoming(p) && ep->cand >= 0 &&
        (size_t)ep->cand < e->n_cands &&
        x->pcfg.encryption == PCONN_ENC_PREFER &&
        peer_crypto(p) == PCONN_CRYPTO_NONE &&
        !e->cands[ep->cand].plaintext) {
        char a[80];
        listen_format_addr((struct sockaddr *)&ep->addr, a, sizeof(a));
        log_field(LOG_LEVEL_DEBUG, "TORRENT", e->t->hex,
                  "peer %s drops MSE: plaintext from now on", a);
        e->cands[ep->cand].plaintext = true;
    }
    for (struct epeer *o = e->peers; o; o = o->next) {
        if (o == ep || !o->handshaken || peer_closing(o->p) ||
            memcmp(o->id, peer_id, WIRE_PEER_ID_LEN))
            continue;
        if (keep_new_over_old(x, ep, o)) {
            peer_close(o->p);
        } else {
            peer_close(p);
            return;
        }
    }
    ep->handshaken = true;
    ep->gen = e->gen;
    if (e->magnet) {
        /* No pieces to trade yet: "have none", then ut_metadata. */
        (void)peer_send_bitfield(p, NULL, 0);
        if (ep->cand >= 0)
            e->cands[ep->cand].fails = 0;
        e->t->peers_connected++;
        return;
    }
    if (ep_enlist(e, ep) < 0) {
        peer_close(p);
        return;
    }
    (void)peer_send_bitfield(p, e->have, e->nbytes);
    if (ep->cand >= 0)
        e->cands[ep->cand].fails = 0;
    e->t->peers_connected++;
}

static void
cb_ext_handshake(void *ud, struct peer *p, const struct wire_ext_handshake *h)
{
    (void)ud;
    struct epeer *ep = peer_data(p);
    struct engine *e = ep ? ep->e : NULL;
    if (!e)
        return;
    if (h->present & WIRE_EXT_REQQ && h->reqq)
        ep->reqq = h->reqq;
    snprintf(ep->client, sizeof(ep->client), "%s", h->client);
    ep->pex_ok = h->ut_pex != 0;
    if (e->running && e->magnet)
        mfetch_peer(e->mf, p, h->ut_metadata,
                    (h->present & WIRE_EXT_METADATA_SIZE) ? h->metadata_size
                                                          : 0);
    if (ep->incoming && (h->present & WIRE_EXT_PORT) && h->port &&
        ep->cand < 0) {
        struct sockaddr_storage a = ep->addr;
        set_port(&a, h->port);
        long c = cand_add(e, &a, ep->addr_len);
        if (c >= 0 && !e->cands[c].connected) {
            e->cands[c].connected = true;
            ep->cand = c;
        }
    }
}

static void
after_availability(struct engine *e, struct epeer *ep)
{
    if (e->seeding && ep->seed) {
        /* Two seeds have nothing to trade. */
        if (ep->cand >= 0)
            e->cands[ep->cand].next_ms = mono_ms() + ENGINE_BACKOFF_MAX_MS;
        peer_close(ep->p);
        return;
    }
    update_interest(e, ep);
    fill(e, ep);
}

static void
cb_bitfield(void *ud, struct peer *p, uint8_t *bits, uint32_t nbytes)
{
    (void)ud;
    (void)nbytes;
    struct epeer *ep = peer_data(p);
    struct engine *e = ep ? ep->e : NULL;
    if (e && e->running && e->magnet) {
        free(ep->m_bits); /* kept for magnet_join */
        ep->m_bits = bits;
        ep->m_bits_len = nbytes;
        ep->m_have_all = false;
        return;
    }
    if (e && e->running && ep->pk >= 0 && nbytes != e->nbytes) {
        peer_close(p); /* taken while the piece count was unknown */
        free(bits);
        return;
    }
    if (e && e->running && ep->pk >= 0) {
        picker_peer_bitfield(e->pk, ep->pk, bits);
        uint32_t n = 0, np = e->t->meta->n_pieces;
        for (uint32_t i = 0; i < np; i++)
            n += bit_get(bits, i);
        ep->n_have = n;
        ep->seed = n == np;
        after_availability(e, ep);
    }
    free(bits);
}

static void
cb_have(void *ud, struct peer *p, const uint32_t *pieces, size_t n)
{
    (void)ud;
    struct epeer *ep = peer_data(p);
    struct engine *e = ep ? ep->e : NULL;
    if (e && e->running && e->magnet) {
        magnet_keep_haves(ep, pieces, n);
        return;
    }
    if (!e || !e->running || ep->pk < 0)
        return;
    for (size_t i = 0; i < n; i++)
        if (!picker_peer_has(e->pk, ep->pk, pieces[i]) &&
            picker_peer_have(e->pk, ep->pk, pieces[i]) == 0)
            ep->n_have++;
    ep->seed = ep->n_have >= e->t->meta->n_pieces;
    after_availability(e, ep);
}

static void
cb_have_all(void *ud, struct peer *p)
{
    (void)ud;
    struct epeer *ep = peer_data(p);
    struct engine *e = ep ? ep->e : NULL;
    if (e && e->running && e->magnet) {
        ep->m_have_all = true;
        return;
    }
    if (!e || !e->running || ep->pk < 0)
        return;
    picker_peer_have_all(e->pk, ep->pk);
    ep->n_have = e->t->meta->n_pieces;
    ep->seed = true;
    after_availability(e, ep);
}

static void
cb_have_none(void *ud, struct peer *p)
{
    (void)ud;
    struct epeer *ep = peer_data(p);
    struct engine *e = ep ? ep->e : NULL;
    if (!e || !e->running || ep->pk < 0)
        return;
    picker_peer_bitfield(e->pk, ep->pk, NULL);
    ep->n_have = 0;
    ep->seed = false;
}

static void
cb_choke(void *ud, struct peer *p)
{
    (void)ud;
    struct epeer *ep = peer_data(p);
    struct engine *e = ep ? ep->e : NULL;
    if (!e)
        return;
    ep->choking_us = true;
    if (e->running && ep->pk >= 0 && !(ep->features & WIRE_F_FAST)) {
        picker_peer_choked(e->pk, ep->pk);
        ep->outstanding = 0;
    }
}

static void
cb_unchoke(void *ud, struct peer *p)
{
    (void)ud;
    struct epeer *ep = peer_data(p);
    struct engine *e = ep ? ep->e : NULL;
    if (!e)
        return;
    ep->choking_us = false;
    fill(e, ep);
}

static void
interest_changed(struct epeer *ep, bool on)
{
    struct engine *e = ep->e;
    if (!e)
        return;
    ep->interested_in_us = on;
    if (e->running && ep->ck >= 0) {
        int64_t us = mono_us();
        choker_feed(e, ep, us / 1000, us);
        rechoke(e);
    }
}

static void
cb_interested(void *ud, struct peer *p)
{
    (void)ud;
    interest_changed(peer_data(p), true);
}

static void
cb_not_interested(void *ud, struct peer *p)
{
    (void)ud;
    interest_changed(peer_data(p), false);
}

static void
cb_blocks_done(void *ud, struct peer *p, const struct wire_block *b, size_t n)
{
    (void)ud;
    struct epeer *ep = peer_data(p);
    struct engine *e = ep ? ep->e : NULL;
    if (!e)
        return;
    int64_t now = mono_us();
    uint64_t bytes = 0;
    for (size_t i = 0; i < n; i++)
        bytes += b[i].length;
    e->t->downloaded += bytes;
    ep->down_total += bytes;
    rate_meter_add(&ep->down, bytes, now);
    rate_meter_add(&e->down, bytes, now);
    ep->last_block_ms = now / 1000;
    ep->waiting_since_ms = now / 1000;
    ep->snubbed = false;
    ep->outstanding = ep->outstanding > n ? ep->outstanding - (uint32_t)n : 0;
    if (!e->running || ep->pk < 0)
        return;
    for (size_t i = 0; i < n; i++) {
        int cancel[PICKER_MAX_DUPS];
        size_t nc = 0;
        int r = picker_block_received(e->pk, ep->pk, b[i].index, b[i].begin,
                                      PICKER_WRITTEN, cancel, &nc);
        if (r < 0)
            continue;
        for (size_t k = 0; k < nc; k++) {
            struct epeer *o = map_get(e->by_pk, e->cap_pk, cancel[k]);
            if (o && !peer_closing(o->p) && peer_cancel(o->p, &b[i], 1) == 0)
                o->outstanding = o->outstanding ? o->outstanding - 1 : 0;
        }
        if (r == PICKER_PIECE_COMPLETE)
            hash_submit(e, b[i].index);
    }
    fill(e, ep);
}

static void
cb_dropped(void *ud, struct peer *p, const struct wire_block *b, size_t n)
{
    (void)ud;
    struct epeer *ep = peer_data(p);
    struct engine *e = ep ? ep->e : NULL;
    if (!e)
        return;
    ep->outstanding = ep->outstanding > n ? ep->outstanding - (uint32_t)n : 0;
    if (!e->running || ep->pk < 0)
        return;
    for (size_t i = 0; i < n; i++) {
        (void)picker_peer_rejected(e->pk, ep->pk, b[i].index, b[i].begin);
        /* Rejected while it chokes us: not allowed fast (any more). */
        for (uint32_t k = 0; ep->choking_us && k < ep->n_af;) {
            if (ep->af[k] == b[i].index)
                ep->af[k] = ep->af[--ep->n_af];
            else
                k++;
        }
    }
    /* Someone else may take them. */
    for (struct epeer *o = e->peers; o; o = o->next)
        if (o != ep)
            fill(e, o);
}

/* BEP 6: pieces it lets us fetch while it chokes us (fill()). */
static void
cb_allowed_fast(void *ud, struct peer *p, const uint32_t *pieces, size_t n)
{
    (void)ud;
    struct epeer *ep = peer_data(p);
    struct engine *e = ep ? ep->e : NULL;
    if (!e)
        return;
    for (size_t i = 0; i < n; i++) {
        bool known = false;
        for (uint32_t k = 0; k < ep->n_af; k++)
            known |= ep->af[k] == pieces[i];
        if (!known && ep->n_af < PCONN_ALLOWED_FAST_RX_MAX)
            ep->af[ep->n_af++] = pieces[i];
    }
    fill(e, ep);
}

static void
cb_uploaded(void *ud, struct peer *p, uint64_t bytes, uint32_t blocks)
{
    (void)ud;
    (void)blocks;
    struct epeer *ep = peer_data(p);
    struct engine *e = ep ? ep->e : NULL;
    if (!e)
        return;
    int64_t now = mono_us();
    e->t->uploaded += bytes;
    ep->up_total += bytes;
    rate_meter_add(&ep->up, bytes, now);
    rate_meter_add(&e->up, bytes, now);
}

static void
cb_closed(void *ud, struct peer *p, enum pconn_reason reason, int detail)
{
    struct engine_ctx *x = ud;
    struct epeer *ep = peer_data(p);
    if (!ep)
        return;
    peer_set_data(p, NULL);
    ext_pex_state_release(&ep->pex);
    magnet_forget(ep);
    struct engine *e = ep->e;
    if (e && e->mf && !x->freeing)
        mfetch_peer_gone(e->mf, p); /* may ask the others */
    if (e && e->magnet && e->running && ep->handshaken && ep->gen == e->gen &&
        e->t->peers_connected)
        e->t->peers_connected--;
    if (!e || x->freeing) {
        if (e && !x->freeing)
            e_unref(e);
        free(ep);
        return;
    }
    ep_unlink(e, ep);
    /* Counted while in this run's picker (e_stop zeroes the count). */
    if (ep->pk >= 0 && e->running && ep->gen == e->gen &&
        e->t->peers_connected)
        e->t->peers_connected--;
    ep_detach(e, ep);
    int64_t now = mono_ms();
    if (ep->cand >= 0 && (size_t)ep->cand < e->n_cands) {
        struct cand *c = &e->cands[ep->cand];
        c->connected = false;
        if (reason == PCONN_R_SELF) {
            c->dead = true;
        } else if (!ep->handshaken) {
            c->fails++;
            int64_t b = (int64_t)ENGINE_BACKOFF_MIN_MS
                        << (c->fails > 10 ? 10 : c->fails - 1);
            c->next_ms =
                now + (b > ENGINE_BACKOFF_MAX_MS ? ENGINE_BACKOFF_MAX_MS : b);
        } else if (c->next_ms < now + ENGINE_BACKOFF_MIN_MS) {
            c->next_ms = now + ENGINE_BACKOFF_MIN_MS;
        }
    }
    char a[80];
    listen_format_addr((struct sockaddr *)&ep->addr, a, sizeof(a));
    log_field(LOG_LEVEL_DEBUG, "TORRENT", e->t->hex, "peer %s closed: %s (%d)",
              a, pconn_reason_str(reason), detail);
    if (reason == PCONN_R_STORAGE && e->running) {
        free(ep);
        engine_fail(e, detail, "cannot read or write the data");
        e_unref(e);
        return;
    }
    if (e->running)
        fill_all(e); /* its requests are free again */
    free(ep);
    e_unref(e);
}

/* --- BEP 9 and BEP 11 callbacks ------------------------------------------ */

static bool
e_private(const struct engine *e)
{
    return e->t->meta && e->t->meta->private_torrent;
}

static void
cb_metadata_data(void *ud, struct peer *p, uint32_t piece, uint32_t total_size,
                 uint8_t *data, uint32_t len)
{
    (void)ud;
    struct epeer *ep = peer_data(p);
    struct engine *e = ep ? ep->e : NULL;
    if (!e || !e->running || !e->magnet) {
        free(data);
        return;
    }
    mfetch_data(e->mf, p, piece, total_size, data, len);
}

static void
cb_metadata_reject(void *ud, struct peer *p, uint32_t piece)
{
    (void)ud;
    struct epeer *ep = peer_data(p);
    struct engine *e = ep ? ep->e : NULL;
    if (e && e->running && e->magnet)
        mfetch_reject(e->mf, p, piece);
}

static void
cb_pex(void *ud, struct peer *p, const struct ext_pex_peer *added,
       size_t n_added, const struct ext_pex_peer *dropped, size_t n_dropped)
{
    (void)ud;
    (void)dropped;
    (void)n_dropped;
    struct epeer *ep = peer_data(p);
    struct engine *e = ep ? ep->e : NULL;
    if (!e || !e->running || e_private(e))
        return;
    if (n_added > ENGINE_PEX_ADD_MAX)
        n_added = ENGINE_PEX_ADD_MAX;
    log_field(LOG_LEVEL_DEBUG, "TORRENT", e->t->hex,
              "pex from peer %u: %zu added", peer_slot(p), n_added);
    for (size_t i = 0; i < n_added; i++) {
        const struct ext_pex_peer *q = &added[i];
        if (e->seeding && (q->flags & EXT_PEX_F_SEED))
            continue; /* two seeds have nothing to trade */
        struct sockaddr_storage a;
        socklen_t len;
        memset(&a, 0, sizeof(a));
        if (q->addr_len == 4) {
            struct sockaddr_in *in = (struct sockaddr_in *)&a;
            in->sin_family = AF_INET;
            memcpy(&in->sin_addr, q->addr, 4);
            in->sin_port = htons(q->port);
            len = sizeof(*in);
        } else if (q->addr_len == 16) {
            struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&a;
            in6->sin6_family = AF_INET6;
            memcpy(&in6->sin6_addr, q->addr, 16);
            in6->sin6_port = htons(q->port);
            len = sizeof(*in6);
        } else {
            continue;
        }
        (void)cand_add(e, &a, len);
    }
    connect_more(e);
}

static const struct peer_callbacks peer_cbs = {
    .on_info_hash = cb_info_hash,
    .on_mse_hash = cb_mse_hash,
    .on_handshake = cb_handshake,
    .on_ext_handshake = cb_ext_handshake,
    .on_bitfield = cb_bitfield,
    .on_have = cb_have,
    .on_have_all = cb_have_all,
    .on_have_none = cb_have_none,
    .on_choke = cb_choke,
    .on_unchoke = cb_unchoke,
    .on_interested = cb_interested,
    .on_not_interested = cb_not_interested,
    .on_blocks_done = cb_blocks_done,
    .on_dropped = cb_dropped,
    .on_uploaded = cb_uploaded,
    .on_closed = cb_closed,
    .on_allowed_fast = cb_allowed_fast,
    .on_metadata_data = cb_metadata_data,
    .on_metadata_reject = cb_metadata_reject,
    .on_pex = cb_pex,
};

/* --- connecting ------------------------------------------------------------
 */

static void
connect_more(struct engine *e)
{
    struct engine_ctx *x = e->x;
    if (!e->running)
        return;
    int64_t now = mono_ms();
    unsigned made = 0;
    uint64_t per = x->s->cfg.max_peers_per_torrent;
    for (size_t i = 0; i < e->n_cands && made < ENGINE_CONNECTS_PER_TICK; i++) {
        struct cand *c = &e->cands[i];
        if (c->connected || c->dead || c->next_ms > now)
            continue;
        if (e->n_peers >= per ||
            peer_table_count(x->peers) >= x->s->cfg.max_peers)
            break;
        struct epeer *ep =
            ep_new(x, (struct sockaddr *)&c->addr, c->len, false);
        if (!ep)
            break;
        struct peer *p = NULL;
        int r = peer_connect_with_flags(
            x->peers, e->ptor, (struct sockaddr *)&c->addr, c->len,
            c->plaintext ? PEER_CONNECT_PLAINTEXT : 0, &p);
        if (r < 0 || !p) {
            free(ep);
            c->next_ms = now + ENGINE_BACKOFF_MIN_MS;
            if (r == -EMFILE)
                break;
            continue;
        }
        ep->p = p;
        ep->cand = (long)i;
        c->connected = true;
        peer_set_data(p, ep);
        ep_link(e, ep);
        made++;
    }
}

static void
on_peers(void *arg, const struct sockaddr_storage *addrs, size_t n)
{
    struct engine *e = arg;
    for (size_t i = 0; i < n; i++) {
        socklen_t len = addrs[i].ss_family == AF_INET6
                            ? sizeof(struct sockaddr_in6)
                            : sizeof(struct sockaddr_in);
        (void)cand_add(e, &addrs[i], len);
    }
    connect_more(e);
}

/* Bytes of the whole torrent (pad files aside), wanted or not, that are
 * not verified yet: what trackers call "left" (a client with files
 * skipped is no seed).  O(1): torrent_recount() keeps the totals. */
static uint64_t
bytes_missing(const struct torrent *t)
{
    return torrent_bytes_missing(t);
}

static void
get_stats(void *arg, uint64_t *up, uint64_t *down, uint64_t *left)
{
    struct engine *e = arg;
    *up = e->t->uploaded;
    *down = e->t->downloaded;
    if (e->magnet) {
        *left = 1; /* unknown, not zero: we are no seed */
        return;
    }
    *left = bytes_missing(e->t);
}

/* --- the tick ------------------------------------------------------------- */

/* Seed limits, once a tick: O(1).  Idleness counts while the torrent
 * seeds and its upload counter stands still.  Returns true when a limit
 * stopped the torrent (e no longer runs: touch nothing more). */
static bool
seed_limits(struct engine *e, int64_t ms)
{
    struct torrent *t = e->t;
    struct seedlimit_in in;
    if (t->state != TORRENT_SEEDING || t->uploaded != e->idle_up ||
        ms < e->idle_since_ms) {
        e->idle_up = t->uploaded;
        e->idle_since_ms = ms;
    }
    if (t->state != TORRENT_SEEDING || t->seed_override || t->paused)
        return false;
    session_seed_input(e->x->s, t, ms - e->idle_since_ms, &in);
    enum seedlimit_reason why = seedlimit_check(&in);
    if (why == SEEDLIMIT_NONE)
        return false;
    session_seed_limit_reached(e->x->s, t, why);
    return !e->running;
}

static void
tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct engine *e = w->data;
    if (!e->running)
        return;
    int64_t us = mono_us(), ms = us / 1000;
    sources_tick(e, ms);
    if (e->magnet) {
        mfetch_tick(e->mf, ms);
        connect_more(e);
        return;
    }
    e->t->down_rate = rate_meter_get(&e->down, us);
    e->t->up_rate = rate_meter_get(&e->up, us);
    if (seed_limits(e, ms))
        return;
    for (struct epeer *ep = e->peers; ep; ep = ep->next) {
        if (ep->pk < 0)
            continue;
        if (e->seeding && ep->seed) {
            after_availability(e, ep); /* two seeds: close */
            continue;
        }
        update_interest(e, ep);
        choker_feed(e, ep, ms, us);
        bool fast = rate_meter_get(&ep->down, us) > (4u << 20);
        picker_peer_set_fast(e->pk, ep->pk, fast);
        if (ep->outstanding && !ep->snubbed &&
            ms - ep->waiting_since_ms > ENGINE_REQUEST_TIMEOUT_MS) {
            /* It sits on our requests: give them to others.  A block
             * that still comes is taken (picker_block_received). */
            picker_peer_choked(e->pk, ep->pk);
            ep->outstanding = 0;
            ep->snubbed = true;
        }
    }
    rechoke(e);
    fill_all(e);
    flush_pending(e);
    connect_more(e);
}

/* --- start and stop ---------------------------------------------------------
 */

static void
edata_release(struct pconn_torrent *pt, void *arg)
{
    (void)pt;
    struct edata *ed = arg;
    storage_close(ed->st);
    /* No I/O on it is left (the last reference is gone): torrent.move
     * may begin (session_storage_closed()). */
    if (ed->st && --ed->t->storages == 0)
        session_storage_closed(ed->s, ed->t);
    session_torrent_unref(ed->t);
    free(ed);
}

static struct engine *
e_get(struct engine_ctx *x, struct torrent *t)
{
    if (t->engine)
        return t->engine;
    struct engine *e = calloc(1, sizeof(*e));
    if (!e)
        return NULL;
    e->x = x;
    e->t = t;
    t->jobs++;
    e->refs = 1;
    e->next = x->engines;
    if (x->engines)
        x->engines->prev = e;
    x->engines = e;
    ev_timer_init(&e->tick, tick_cb, ENGINE_TICK_S, ENGINE_TICK_S);
    e->tick.data = e;
    t->engine = e;
    return e;
}

static void
e_free(struct engine *e)
{
    struct engine_ctx *x = e->x;
    if (e->prev)
        e->prev->next = e->next;
    else
        x->engines = e->next;
    if (e->next)
        e->next->prev = e->prev;
    if (e->t->engine == e)
        e->t->engine = NULL;
    xpe_cancel(e);
    free(e->have);
    free(e->dir);
    free(e->by_pk);
    free(e->by_ck);
    free(e->cands);
    free(e->pending);
    session_torrent_unref(e->t);
    free(e);
}

static void
e_unref(struct engine *e)
{
    if (--e->refs == 0 && !e->x->freeing)
        e_free(e);
}

static void
ts_stopped(void *arg)
{
    struct dying_ts *d = arg;
    struct engine_ctx *x = d->x;
    if (d->prev)
        d->prev->next = d->next;
    else
        x->dying = d->next;
    if (d->next)
        d->next->prev = d->prev;
    tracker_set_free(d->ts);
    free(d);
    if (!x->dying && x->stop_done) {
        void (*done)(void *) = x->stop_done;
        x->stop_done = NULL;
        done(x->stop_arg);
    }
}

static void
ts_retire(struct engine_ctx *x, struct tracker_set *ts)
{
    if (!ts)
        return;
    struct dying_ts *d = calloc(1, sizeof(*d));
    if (!d || x->freeing) {
        free(d);
        tracker_set_free(ts);
        return;
    }
    d->x = x;
    d->ts = ts;
    d->next = x->dying;
    if (x->dying)
        x->dying->prev = d;
    x->dying = d;
    tracker_set_stop(ts, 5.0, ts_stopped, d);
}

static int
e_start(struct engine *e)
{
    struct engine_ctx *x = e->x;
    struct torrent *t = e->t;
    const struct meta_info *m = t->meta;
    int r;
    struct edata *ed = calloc(1, sizeof(*ed));
    if (!ed)
        return -ENOMEM;
    rate_bucket_init(&ed->down, t->download_limit, 0);
    rate_bucket_init(&ed->up, t->upload_limit, 0);
    r = storage_open(&ed->st, m, t->download_dir, 0);
    if (r < 0) {
        free(ed);
        return r;
    }
    ed->t = t;
    ed->s = x->s;
    t->storages++;
    t->jobs++;
    r = pconn_torrent_new(&e->ptor, m, ed->st, &ed->up, &ed->down,
                          edata_release, ed);
    if (r < 0) {
        edata_release(NULL, ed);
        return r;
    }
    e->ed = ed;
    free(e->dir);
    e->dir = strdup(t->download_dir);
    e->nbytes = (m->n_pieces + 7) / 8;
    free(e->have);
    e->have = calloc(e->nbytes ? e->nbytes : 1, 1);
    if (!e->have) {
        r = -ENOMEM;
        goto fail;
    }
    if (t->have && t->n_pieces == m->n_pieces)
        memcpy(e->have, t->have, e->nbytes);
    /* Verified pieces are never written (peerconn.h, "Sealed pieces"). */
    for (uint32_t i = 0; i < m->n_pieces; i++)
        if (bit_get(e->have, i))
            pconn_piece_seal(e->ptor, i);
    uint32_t last = (uint32_t)(m->total_size -
                               (uint64_t)(m->n_pieces - 1) * m->piece_length);
    struct picker_params pp = {
        .n_pieces = m->n_pieces,
        .piece_length = m->piece_length,
        .last_piece_length = last,
        .have = e->have,
        .seed = x->seed++,
    };
    if ((r = picker_new(&e->pk, &pp)) < 0)
        goto fail;
    struct choker_params cp = {
        .upload_slots = (unsigned)x->s->cfg.upload_slots,
        .seed = x->seed++,
    };
    if ((r = choker_new(&e->ch, &cp)) < 0)
        goto fail;
    apply_priorities(e);
    e->seeding = picker_complete(e->pk);
    choker_set_seeding(e->ch, e->seeding);
    rate_meter_init(&e->down, 5);
    rate_meter_init(&e->up, 5);
    e->n_pending = 0;
    e->gen++;
    e->running = true;
    e->whole = bytes_missing(t) == 0;
    e->idle_up = t->uploaded;
    e->idle_since_ms = mono_ms();
    if (m->n_tiers && (x->http || x->udp)) {
        struct tracker_set_cbs cbs = {
            .on_peers = on_peers, .get_stats = get_stats, .arg = e};
        if (tracker_set_new(&e->ts, &x->tcfg, m->tiers, m->n_tiers,
                            t->info_hash, &cbs) == 0)
            (void)tracker_set_announce(e->ts, TRACKER_EVENT_STARTED);
        else
            e->ts = NULL;
    }
    for (size_t i = 0; i < e->n_cands; i++)
        if (e->cands[i].fails != UINT32_MAX)
            e->cands[i].next_ms = 0;
    ev_timer_again(x->loop, &e->tick);
    connect_more(e);
    return 0;
fail:
    picker_free(e->pk);
    e->pk = NULL;
    choker_free(e->ch);
    e->ch = NULL;
    pconn_torrent_unref(e->ptor);
    e->ptor = NULL;
    e->ed = NULL;
    return r;
}

static void
e_stop(struct engine *e)
{
    struct engine_ctx *x = e->x;
    xpe_cancel(e); /* no answer comes after this */
    if (!e->running)
        return;
    flush_pending(e); /* verified pieces are recorded once durable */
    sources_stop(e);
    mfetch_free(e->mf);
    e->mf = NULL;
    e->magnet = false;
    e->running = false;
    ev_timer_stop(x->loop, &e->tick);
    for (struct epeer *ep = e->peers; ep; ep = ep->next) {
        ep->pk = ep->ck = -1;
        peer_close(ep->p);
    }
    for (size_t i = 0; i < e->n_cands; i++)
        e->cands[i].connected = false;
    ts_retire(x, e->ts);
    e->ts = NULL;
    picker_free(e->pk);
    e->pk = NULL;
    choker_free(e->ch);
    e->ch = NULL;
    if (e->by_pk)
        memset(e->by_pk, 0, e->cap_pk * sizeof(*e->by_pk));
    if (e->by_ck)
        memset(e->by_ck, 0, e->cap_ck * sizeof(*e->by_ck));
    pconn_torrent_unref(e->ptor);
    e->ptor = NULL;
    e->ed = NULL;
    e->t->down_rate = e->t->up_rate = 0;
    e->t->peers_connected = 0;
}

/* --- the session's side ------------------------------------------------------
 */

static void
on_accept(void *arg, int fd, const struct sockaddr *addr, socklen_t len)
{
    struct engine_ctx *x = arg;
    if (x->freeing || x->s->stopping ||
        peer_table_count(x->peers) >= x->s->cfg.max_peers) {
        close(fd);
        return;
    }
    struct epeer *ep = ep_new(x, addr, len, true);
    if (!ep) {
        close(fd);
        return;
    }
    struct peer *p = NULL;
    if (peer_accept(x->peers, fd, addr, len, &p) < 0 || !p) {
        free(ep);
        return;
    }
    ep->p = p;
    peer_set_data(p, ep);
}

int
engine_ctx_new(struct engine_ctx **ret, struct session *s)
{
    struct engine_ctx *x = calloc(1, sizeof(*x));
    if (!x)
        return -ENOMEM;
    x->s = s;
    x->loop = s->loop;
    int r;
    uint8_t rnd[WIRE_PEER_ID_RANDOM + 8];
    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        r = -EIO;
        goto fail;
    }
    wire_peer_id_make(x->pcfg.peer_id, rnd);
    memcpy(&x->seed, rnd + WIRE_PEER_ID_RANDOM, 8);
    rate_bucket_init(&x->down, s->cfg.download_rate_limit, 0);
    rate_bucket_init(&x->up, s->cfg.upload_rate_limit, 0);
    x->pcfg.features = WIRE_F_EXTENDED | WIRE_F_FAST;
    x->pcfg.encryption = s->cfg.encryption == CONFIG_ENC_OFF ? PCONN_ENC_OFF
                         : s->cfg.encryption == CONFIG_ENC_REQUIRE
                             ? PCONN_ENC_REQUIRE
                             : PCONN_ENC_PREFER;
    x->pcfg.up_global = &x->up;
    x->pcfg.down_global = &x->down;

    struct sockaddr_storage la;
    socklen_t ll;
    if (listen_parse_addr(s->cfg.listen, &la, &ll) == 0) {
        char a[80];
        listen_format_addr((struct sockaddr *)&la, a, sizeof(a));
        bool any = la.ss_family == AF_INET
                       ? ((struct sockaddr_in *)&la)->sin_addr.s_addr ==
                             htonl(INADDR_ANY)
                       : !memcmp(&((struct sockaddr_in6 *)&la)->sin6_addr,
                                 &in6addr_any, 16);
        if (!any) {
            struct sockaddr_storage b = la;
            set_port(&b, 0);
            x->pcfg.bind_addr = b;
            x->pcfg.bind_len = ll;
            char *colon = strrchr(a, ':');
            if (colon)
                *colon = '\0';
            snprintf(x->bind_ip, sizeof(x->bind_ip), "%s",
                     a[0] == '[' ? a + 1 : a);
            char *rb = strchr(x->bind_ip, ']');
            if (rb)
                *rb = '\0';
        }
        r = listen_new(&x->ln, x->loop, s->cfg.listen, on_accept, x);
        if (r < 0) {
            log_err("cannot listen for peers on '%s': %s; no incoming "
                    "connections",
                    s->cfg.listen, strerror(-r));
            x->ln = NULL;
        } else {
            x->pcfg.listen_port = listen_port(x->ln);
            if (!any) {
                x->self = la;
                set_port(&x->self, x->pcfg.listen_port);
                x->self_len = ll;
            }
            log_info("listening for peers on %s (port %u)", s->cfg.listen,
                     x->pcfg.listen_port);
        }
    } else {
        log_err("bad listen address '%s': no incoming connections",
                s->cfg.listen);
    }
    /* Slots for the largest max_peers allowed (a pointer and two ints
     * each): the key changes live, the engine enforces it. */
    const struct config_key *mk = config_key_find("max_peers");
    size_t maxp = mk && mk->max ? (size_t)mk->max : (size_t)s->cfg.max_peers;
    if (maxp < s->cfg.max_peers)
        maxp = (size_t)s->cfg.max_peers;
    if ((r = peer_table_new(&x->peers, x->loop, &x->pcfg, &peer_cbs, x, maxp)) <
        0)
        goto fail;
    if ((r = worker_new(&x->hash, x->loop, "verify", ENGINE_HASH_THREADS)) < 0)
        goto fail;
    if (trk_http_new(&x->http, x->loop) < 0)
        x->http = NULL;
    /* One resolver for x.pe names and UDP trackers (without it, trk_udp
     * starts its own and x.pe names are skipped). */
    if ((r = resolver_new(&x->res, x->loop, ENGINE_RESOLVER_THREADS)) < 0) {
        log_warn("cannot start the name resolver: %s; x.pe names are "
                 "ignored", strerror(-r));
        x->res = NULL;
    }
    struct trk_udp_config uc = {.bind_addr = x->bind_ip[0] ? x->bind_ip : NULL,
                                .resolver = x->res};
    if (trk_udp_new(&x->udp, x->loop, &uc) < 0)
        x->udp = NULL;
    x->tcfg.loop = x->loop;
    x->tcfg.http = x->http;
    x->tcfg.udp = x->udp;
    x->tcfg.bind_addr = x->bind_ip[0] ? x->bind_ip : NULL;
    memcpy(x->tcfg.peer_id, x->pcfg.peer_id, TRACKER_PEER_ID_LEN);
    x->tcfg.port = x->pcfg.listen_port;
    /* Loopback swarms in tests announce often; real trackers give their
     * own min interval anyway. */
    x->tcfg.interval_floor = 5.0;
    x->tcfg.retry_min = 5.0;
    /* BEP 14: peers LSD finds go to their torrent (the session made the
     * lsd before the engine and frees it first). */
    if (s->lsd) {
        lsd_set_peer_cb(s->lsd, on_lsd_peer, x);
        x->lsd_hooked = true;
    }
    *ret = x;
    return 0;
fail:
    engine_ctx_free(x);
    return r;
}

void
engine_ctx_quiesce(struct engine_ctx *x)
{
    if (!x)
        return;
    x->freeing = true;
    listen_free(x->ln);
    x->ln = NULL;
    worker_free(x->hash);
    x->hash = NULL;
}

void
engine_ctx_free(struct engine_ctx *x)
{
    if (!x)
        return;
    engine_ctx_quiesce(x);
    peer_table_free(x->peers);
    x->peers = NULL;
    while (x->dying) {
        struct dying_ts *d = x->dying;
        x->dying = d->next;
        tracker_set_free(d->ts);
        free(d);
    }
    while (x->engines) {
        struct engine *e = x->engines;
        if (e->running) {
            ev_timer_stop(x->loop, &e->tick);
            sources_stop(e);
            mfetch_free(e->mf);
            e->mf = NULL;
            tracker_set_free(e->ts);
            e->ts = NULL;
            picker_free(e->pk);
            choker_free(e->ch);
            pconn_torrent_unref(e->ptor);
            e->running = false;
        }
        e_free(e);
    }
    trk_http_free(x->http);
    trk_udp_free(x->udp);
    resolver_free(x->res); /* after every user: engines, udp */
    free(x);
}

void
engine_ctx_stop(struct engine_ctx *x, void (*done)(void *arg), void *arg)
{
    for (struct engine *e = x->engines; e; e = e->next) {
        if (!e->running)
            continue;
        flush_pending(e);
        ts_retire(x, e->ts);
        e->ts = NULL;
    }
    listen_free(x->ln);
    x->ln = NULL;
    /* Every "stopped" (also those of torrents stopped earlier) is on its
     * way; each set calls ts_stopped() when done or after its timeout. */
    if (!x->dying) {
        done(arg);
        return;
    }
    x->stop_done = done;
    x->stop_arg = arg;
}

void
engine_ctx_config_changed(struct engine_ctx *x)
{
    if (!x)
        return;
    rate_bucket_set_limit(&x->down, x->s->cfg.download_rate_limit, 0);
    rate_bucket_set_limit(&x->up, x->s->cfg.upload_rate_limit, 0);
    for (struct engine *e = x->engines; e; e = e->next)
        if (e->ch)
            choker_set_slots(e->ch, (unsigned)x->s->cfg.upload_slots);
}

void
engine_ctx_rates(struct engine_ctx *x, uint64_t *ret_down, uint64_t *ret_up)
{
    uint64_t d = 0, u = 0;
    for (struct engine *e = x ? x->engines : NULL; e; e = e->next) {
        if (!e->running)
            continue;
        d += e->t->down_rate;
        u += e->t->up_rate;
    }
    *ret_down = d;
    *ret_up = u;
}

void
engine_torrent_state(struct engine_ctx *x, struct torrent *t)
{
    if (!x || x->freeing)
        return;
    bool want =
        t->meta && !t->removed &&
        (t->state == TORRENT_DOWNLOADING || t->state == TORRENT_SEEDING);
    /* BEP 9: a magnet fetches its metadata from peers. */
    bool magnet = !t->meta && !t->removed && t->state == TORRENT_METADATA;
    struct engine *e = t->engine;
    if (e && e->running && e->magnet && want) {
        /* Metadata came: the same peers go on with it. */
        int r = magnet_switch(e);
        if (r < 0)
            session_set_error(x->s, t, "cannot start: %s", strerror(-r));
        return;
    }
    if (e && e->running && e->magnet != magnet)
        e_stop(e);
    want = want || magnet;
    if (!want) {
        if (e)
            e_stop(e);
        return;
    }
    if (!e && !(e = e_get(x, t))) {
        session_set_error(x->s, t, "cannot start: out of memory");
        return;
    }
    if (!e->running) {
        int r = magnet ? e_start_magnet(e) : e_start(e);
        if (r < 0) {
            char msg[256];
            snprintf(msg, sizeof(msg), "cannot start: %s", strerror(-r));
            session_set_error(x->s, t, "%s", msg);
            return;
        }
    }
}

void
engine_torrent_removed(struct engine_ctx *x, struct torrent *t)
{
    struct engine *e = t->engine;
    if (!x || !e || e->removed)
        return;
    e_stop(e);
    e->removed = true;
    t->engine = NULL;
    e_unref(e);
}

void
engine_torrent_settings(struct engine_ctx *x, struct torrent *t)
{
    struct engine *e = t->engine;
    if (!e || !e->running || e->magnet)
        return;
    if (!e->dir || strcmp(e->dir, t->download_dir) != 0) {
        /* Another directory: the data is looked for and written there
         * from now on (torrent.verify checks what is there). */
        e_stop(e);
        int r = e_start(e);
        if (r < 0) {
            session_set_error(x->s, t, "cannot start: %s", strerror(-r));
            return;
        }
    }
    rate_bucket_set_limit(&e->ed->down, t->download_limit, 0);
    rate_bucket_set_limit(&e->ed->up, t->upload_limit, 0);
    apply_priorities(e);
    bool was = e->seeding;
    e->seeding = picker_complete(e->pk);
    if (was != e->seeding) {
        choker_set_seeding(e->ch, e->seeding);
        /* Seeds we left while seeding are worth a connection again. */
        for (size_t i = 0; i < e->n_cands && !e->seeding; i++)
            if (!e->cands[i].dead)
                e->cands[i].next_ms = 0;
        connect_more(e);
    }
    for (struct epeer *ep = e->peers; ep; ep = ep->next)
        update_interest(e, ep);
    fill_all(e);
}

int
engine_add_peer(struct engine_ctx *x, struct torrent *t,
                const struct sockaddr *addr, socklen_t len)
{
    struct engine *e = e_get(x, t);
    if (!e)
        return -ENOMEM;
    struct sockaddr_storage a;
    memset(&a, 0, sizeof(a));
    memcpy(&a, addr, len < sizeof(a) ? len : sizeof(a));
    long i = cand_find(e, &a);
    if (i >= 0) {
        struct cand *c = &e->cands[i];
        if (c->connected)
            return -EEXIST;
        if (c->fails != UINT32_MAX) {
            c->dead = false;
            c->next_ms = 0;
            c->fails = 0;
        }
    } else if (cand_add(e, &a, len) < 0) {
        return -ENOMEM;
    }
    connect_more(e);
    return 0;
}

static const char *
flags_of(const struct epeer *ep, char *buf, size_t n)
{
    /* Like libtorrent/transmission: D downloading from it, d we want but
     * it chokes us, U uploading to it, u it wants but we choke it, I
     * incoming, E/F: extension/fast protocol, S snubbed-free seed, X
     * encrypted (MSE with RC4). */
    size_t k = 0;
    if (ep->am_interested && !ep->choking_us && k + 1 < n)
        buf[k++] = 'D';
    else if (ep->am_interested && k + 1 < n)
        buf[k++] = 'd';
    if (ep->interested_in_us && ep->unchoked && k + 1 < n)
        buf[k++] = 'U';
    else if (ep->interested_in_us && k + 1 < n)
        buf[k++] = 'u';
    if (ep->incoming && k + 1 < n)
        buf[k++] = 'I';
    if ((ep->features & WIRE_F_EXTENDED) && k + 1 < n)
        buf[k++] = 'E';
    if ((ep->features & WIRE_F_FAST) && k + 1 < n)
        buf[k++] = 'F';
    if (ep->seed && k + 1 < n)
        buf[k++] = 'S';
    if (ep->p && peer_crypto(ep->p) == PCONN_CRYPTO_RC4 && k + 1 < n)
        buf[k++] = 'X';
    buf[k] = '\0';
    return buf;
}

/* torrent.peers "encryption": enum pconn_crypto. */
static const char *
crypto_name(unsigned crypto)
{
    return crypto == PCONN_CRYPTO_RC4         ? "rc4"
           : crypto == PCONN_CRYPTO_MSE_PLAIN ? "mse-plaintext"
                                              : "none";
}

struct json_object *
engine_peers_json(struct engine_ctx *x, struct torrent *t)
{
    (void)x;
    struct json_object *arr = json_object_new_array();
    struct engine *e = t->engine;
    if (!arr || !e || !e->running)
        return arr;
    int64_t now = mono_us();
    uint32_t np = t->meta ? t->meta->n_pieces : 0;
    for (struct epeer *ep = e->peers; ep; ep = ep->next) {
        if (!ep->handshaken)
            continue;
        struct json_object *o = json_object_new_object();
        if (!o)
            break;
        char a[80], client[WIRE_CLIENT_NAME_MAX], fl[16];
        listen_format_addr((struct sockaddr *)&ep->addr, a, sizeof(a));
        wire_client_name(client, sizeof(client), ep->id);
        json_object_object_add(o, "address", json_object_new_string(a));
        json_object_object_add(
            o, "client",
            json_object_new_string(
                strcmp(client, "unknown") == 0 && ep->client[0] ? ep->client
                                                                : client));
        json_object_object_add(
            o, "flags", json_object_new_string(flags_of(ep, fl, sizeof(fl))));
        json_object_object_add(o, "incoming",
                               json_object_new_boolean(ep->incoming));
        unsigned cr = peer_crypto(ep->p);
        json_object_object_add(
            o, "encrypted", json_object_new_boolean(cr == PCONN_CRYPTO_RC4));
        json_object_object_add(o, "encryption",
                               json_object_new_string(crypto_name(cr)));
        json_object_object_add(o, "choking_us",
                               json_object_new_boolean(ep->choking_us));
        json_object_object_add(o, "choked_by_us",
                               json_object_new_boolean(!ep->unchoked));
        json_object_object_add(o, "interested_in_us",
                               json_object_new_boolean(ep->interested_in_us));
        json_object_object_add(o, "am_interested",
                               json_object_new_boolean(ep->am_interested));
        json_object_object_add(
            o, "download_rate",
            json_object_new_uint64(rate_meter_get(&ep->down, now)));
        json_object_object_add(
            o, "upload_rate",
            json_object_new_uint64(rate_meter_get(&ep->up, now)));
        json_object_object_add(o, "downloaded_bytes",
                               json_object_new_uint64(ep->down_total));
        json_object_object_add(o, "uploaded_bytes",
                               json_object_new_uint64(ep->up_total));
        json_object_object_add(
            o, "progress",
            json_object_new_double(np ? (double)ep->n_have / np : 0.0));
        json_object_object_add(o, "requests",
                               json_object_new_uint64(ep->outstanding));
        json_object_object_add(o, "bad_data",
                               json_object_new_uint64(ep->strikes));
        json_object_array_add(arr, o);
    }
    return arr;
}

struct json_object *
engine_trackers_json(struct engine_ctx *x, struct torrent *t)
{
    (void)x;
    struct engine *e = t->engine;
    if (!e || !e->running || !e->ts)
        return NULL;
    return tracker_set_to_json(e->ts);
}

/* --- magnets (BEP 9) --------------------------------------------------------
 */

/* The metadata of e's magnet arrived and checked (on the hash worker):
 * the session makes the torrent a full one, which restarts e with it. */
static void
magnet_done(void *arg, struct meta_info *meta, uint8_t *raw, size_t len)
{
    struct engine *e = arg;
    struct engine_ctx *x = e->x;
    if (x->freeing || x->s->stopping || e->removed || e->t->meta ||
        e->t->removed) {
        meta_free(meta);
        free(raw);
        return;
    }
    log_field(LOG_LEVEL_INFO, "TORRENT", e->t->hex,
              "metadata received from peers (%zu bytes)", len);
    session_metadata_received(x->s, e->t, meta, raw, len);
}

/* Give up e's x.pe lookups: no xpe_resolved() comes after this. */
static void
xpe_cancel(struct engine *e)
{
    for (size_t i = 0; i < e->n_xpe; i++)
        if (e->xpe[i].lk)
            resolver_cancel(e->x->res, e->xpe[i].lk);
    free(e->xpe);
    e->xpe = NULL;
    e->n_xpe = 0;
}

/* An x.pe name resolved (or not, or not in ENGINE_XPE_DNS_TIMEOUT_S):
 * its addresses, at most ENGINE_XPE_ADDRS, of the family we dial from,
 * become candidates like the numeric ones. */
static void
xpe_resolved(void *arg, int gai, const struct addrinfo *res)
{
    struct xpe_lookup *xl = arg;
    struct engine *e = xl->e;
    const struct engine_ctx *x = e->x;
    xl->lk = NULL;
    if (gai != 0) {
        log_field(LOG_LEVEL_DEBUG, "TORRENT", e->t->hex,
                  "x.pe '%s' does not resolve: %s, ignoring", xl->host,
                  gai_strerror(gai));
        return;
    }
    if (!e->running || x->freeing || x->s->stopping)
        return;
    unsigned n = 0;
    for (; res && n < ENGINE_XPE_ADDRS; res = res->ai_next) {
        if ((res->ai_family != AF_INET && res->ai_family != AF_INET6) ||
            res->ai_addrlen > sizeof(struct sockaddr_storage) ||
            (x->pcfg.bind_len &&
             res->ai_family != x->pcfg.bind_addr.ss_family))
            continue;
        struct sockaddr_storage a;
        memset(&a, 0, sizeof(a));
        memcpy(&a, res->ai_addr, res->ai_addrlen);
        if (addr_port(&a) == 0)
            continue;
        if (cand_add(e, &a, (socklen_t)res->ai_addrlen) >= 0)
            n++;
    }
    log_field(LOG_LEVEL_DEBUG, "TORRENT", e->t->hex,
              "x.pe '%s': %u address(es)", xl->host, n);
    /* Last: it may end in callbacks that stop e (and free xl). */
    if (n)
        connect_more(e);
}

/* Start the lookup of an x.pe "name:port" (a bracketed address that did
 * not parse is no name).  n_max: the size of e->xpe when it is made. */
static int
xpe_start(struct engine *e, const char *pe, size_t n_max)
{
    struct engine_ctx *x = e->x;
    const char *colon = strrchr(pe, ':');
    size_t hl = colon ? (size_t)(colon - pe) : 0;
    if (!x->res || hl == 0 || hl > RESOLVER_HOST_MAX || pe[0] == '[' ||
        memchr(pe, ':', hl) || colon[1] < '0' || colon[1] > '9' ||
        e->n_xpe >= n_max)
        return -EINVAL;
    char *end;
    errno = 0;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (errno || *end || end == colon + 1 || port == 0 || port > 65535)
        return -EINVAL;
    if (!e->xpe && !(e->xpe = calloc(n_max, sizeof(*e->xpe))))
        return -ENOMEM;
    struct xpe_lookup *xl = &e->xpe[e->n_xpe];
    memset(xl, 0, sizeof(*xl));
    xl->e = e;
    memcpy(xl->host, pe, hl);
    xl->host[hl] = '\0';
    char service[8];
    (void)snprintf(service, sizeof(service), "%lu", port);
    int family = x->pcfg.bind_len ? x->pcfg.bind_addr.ss_family : AF_UNSPEC;
    int r = resolver_lookup(x->res, xl->host, service, family, SOCK_STREAM,
                            AI_NUMERICSERV, ENGINE_XPE_DNS_TIMEOUT_S,
                            xpe_resolved, xl, &xl->lk);
    if (r < 0) {
        log_field(LOG_LEVEL_DEBUG, "TORRENT", e->t->hex,
                  "cannot resolve x.pe '%s': %s, ignoring", xl->host,
                  strerror(-r));
        return r;
    }
    e->n_xpe++;
    return 0;
}

/* Start e's run without metadata: peers from the magnet's trackers and
 * x.pe (names resolved off the reactor), torrent.add_peer, the DHT, PEX
 * and LSD; ut_metadata from them. */
static int
e_start_magnet(struct engine *e)
{
    struct engine_ctx *x = e->x;
    struct torrent *t = e->t;
    const struct magnet *m = &t->magnet;
    int r;
    struct edata *ed = calloc(1, sizeof(*ed));
    if (!ed)
        return -ENOMEM;
    rate_bucket_init(&ed->down, t->download_limit, 0);
    rate_bucket_init(&ed->up, t->upload_limit, 0);
    ed->t = t;
    t->jobs++;
    r = pconn_torrent_new_magnet(&e->ptor, t->info_hash, &ed->up, &ed->down,
                                 edata_release, ed);
    if (r < 0) {
        edata_release(NULL, ed);
        e->ptor = NULL;
        return r;
    }
    e->ed = ed;
    r = mfetch_new(&e->mf, t->info_hash, x->hash, m->tr, m->n_tr, magnet_done,
                   e);
    if (r < 0) {
        pconn_torrent_unref(e->ptor);
        e->ptor = NULL;
        e->ed = NULL;
        return r;
    }
    e->magnet = true;
    e->seeding = false;
    e->gen++;
    e->running = true;
    size_t n_tr = m->n_tr < MFETCH_TRACKERS_MAX ? m->n_tr : MFETCH_TRACKERS_MAX;
    if (n_tr && (x->http || x->udp)) {
        /* BEP 9: each tr is a tier of its own. */
        struct meta_tier tiers[MFETCH_TRACKERS_MAX];
        for (size_t i = 0; i < n_tr; i++) {
            tiers[i].urls = &m->tr[i];
            tiers[i].n_urls = 1;
        }
        struct tracker_set_cbs cbs = {
            .on_peers = on_peers, .get_stats = get_stats, .arg = e};
        if (tracker_set_new(&e->ts, &x->tcfg, tiers, n_tr, t->info_hash,
                            &cbs) == 0)
            (void)tracker_set_announce(e->ts, TRACKER_EVENT_STARTED);
        else
            e->ts = NULL;
    }
    /* x.pe: numeric "ip:port" peers at once, "name:port" through the
     * resolver (xpe_resolved); at most ENGINE_XPE_MAX of them. */
    size_t n_pe = m->n_peers < ENGINE_XPE_MAX ? m->n_peers : ENGINE_XPE_MAX;
    xpe_cancel(e);
    for (size_t i = 0; i < n_pe; i++) {
        struct sockaddr_storage a;
        socklen_t len;
        memset(&a, 0, sizeof(a));
        if (listen_parse_addr(m->peers[i], &a, &len) == 0) {
            if (addr_port(&a) != 0)
                (void)cand_add(e, &a, len);
            continue;
        }
        (void)xpe_start(e, m->peers[i], n_pe);
    }
    for (size_t i = 0; i < e->n_cands; i++)
        if (e->cands[i].fails != UINT32_MAX)
            e->cands[i].next_ms = 0;
    ev_timer_again(x->loop, &e->tick);
    connect_more(e);
    return 0;
}

/* --- peer sources: DHT, PEX (BEP 11), LSD (BEP 14) --------------------------
 */

static void
on_dht_peers(void *arg, const uint8_t info_hash[20],
             const struct sockaddr_storage *addrs, size_t n)
{
    (void)info_hash;
    struct engine *e = arg;
    if (!e->running || e_private(e))
        return;
    on_peers(e, addrs, n);
}

static void
on_dht_done(void *arg, const uint8_t info_hash[20],
            const struct dhtsvc_result *res)
{
    (void)info_hash;
    (void)res;
    struct engine *e = arg;
    e->dht_lk = NULL;
}

static void
on_lsd_peer(void *arg, const uint8_t *info_hash, const struct sockaddr *addr,
            socklen_t len)
{
    struct engine_ctx *x = arg;
    if (x->freeing || x->s->stopping)
        return;
    struct torrent *t = session_find_hash(x->s, info_hash);
    if (!t || t->removed || (t->meta && t->meta->private_torrent))
        return;
    (void)engine_add_peer(x, t, addr, len);
}

/* The address others can dial ep at, as a PEX entry; false if unknown (an
 * incoming peer that told no listen port). */
static bool
pex_entry(const struct engine *e, const struct epeer *ep,
          struct ext_pex_peer *ret)
{
    const struct sockaddr_storage *a = &ep->addr;
    if (ep->incoming) {
        if (ep->cand < 0 || (size_t)ep->cand >= e->n_cands)
            return false;
        a = &e->cands[ep->cand].addr;
    }
    memset(ret, 0, sizeof(*ret));
    if (a->ss_family == AF_INET) {
        memcpy(ret->addr, &((const struct sockaddr_in *)a)->sin_addr, 4);
        ret->addr_len = 4;
    } else if (a->ss_family == AF_INET6) {
        memcpy(ret->addr, &((const struct sockaddr_in6 *)a)->sin6_addr, 16);
        ret->addr_len = 16;
    } else {
        return false;
    }
    ret->port = addr_port(a);
    if (!ret->port)
        return false;
    ret->flags = (ep->incoming ? 0 : EXT_PEX_F_CONNECTABLE) |
                 (ep->seed ? EXT_PEX_F_SEED : 0);
    return true;
}

/* BEP 11: to each peer with ut_pex, at most once a minute, the peers we
 * are connected to (ext_pex_state computes added and dropped). */
static void
pex_tick(struct engine *e, int64_t now)
{
    struct ext_pex_peer cur[ENGINE_PEX_CUR_MAX], other[ENGINE_PEX_CUR_MAX];
    long owner[ENGINE_PEX_CUR_MAX];
    size_t n = 0;
    bool any_due = false;
    for (struct epeer *ep = e->peers; ep; ep = ep->next)
        if (ep->handshaken && ep->pex_ok && !peer_closing(ep->p) &&
            ext_pex_state_due(&ep->pex, now))
            any_due = true;
    if (!any_due)
        return;
    for (struct epeer *ep = e->peers; ep && n < ENGINE_PEX_CUR_MAX;
         ep = ep->next) {
        if (!ep->handshaken || peer_closing(ep->p) || ep->gen != e->gen)
            continue;
        if (pex_entry(e, ep, &cur[n]))
            owner[n++] = (long)ep->tag;
    }
    for (struct epeer *ep = e->peers; ep; ep = ep->next) {
        if (!ep->handshaken || !ep->pex_ok || peer_closing(ep->p) ||
            !ext_pex_state_due(&ep->pex, now))
            continue;
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            if (owner[i] != (long)ep->tag)
                other[k++] = cur[i];
        struct ext_pex_msg m;
        memset(&m, 0, sizeof(m));
        if (ext_pex_state_next(&ep->pex, other, k, now, &m) == 1) {
            log_field(LOG_LEVEL_DEBUG, "TORRENT", e->t->hex,
                      "pex to peer %u: %zu added, %zu dropped",
                      peer_slot(ep->p), m.n_added, m.n_dropped);
            (void)peer_send_pex(ep->p, m.peers, m.n_added,
                                m.peers + m.n_added, m.n_dropped);
        }
        ext_pex_msg_release(&m);
    }
}

static void
sources_tick(struct engine *e, int64_t now)
{
    struct engine_ctx *x = e->x;
    if (!x->lsd_hooked && x->s->lsd) {
        lsd_set_peer_cb(x->s->lsd, on_lsd_peer, x);
        x->lsd_hooked = true;
    }
    if (e_private(e) || x->s->stopping) /* BEP 27 */
        return;
    struct dhtsvc *dht = x->s->dht;
    if (dht) {
        int64_t every =
            e->magnet ? ENGINE_DHT_MAGNET_MS : ENGINE_DHT_LOOKUP_MS;
        if (!e->dht_ann && x->pcfg.listen_port) {
            /* get_peers + announce_peer now, then every
             * DHTSVC_ANNOUNCE_S (not without a listen port: then
             * get_peers only, below). */
            e->dht_ann = dhtsvc_announce_new(dht, e->t->info_hash,
                                             x->pcfg.listen_port,
                                             on_dht_peers, e);
            e->dht_next_ms = now + every;
        } else if (!e->dht_lk && now >= e->dht_next_ms && !e->seeding &&
                   e->n_peers < ENGINE_DHT_WANT_PEERS) {
            /* Few peers: look again between the announces. */
            e->dht_next_ms = now + every;
            e->dht_lk = dhtsvc_get_peers(dht, e->t->info_hash, 0,
                                         on_dht_peers, on_dht_done, e, NULL);
        }
    }
    pex_tick(e, now);
}

static void
sources_stop(struct engine *e)
{
    dhtsvc_announce_free(e->dht_ann);
    e->dht_ann = NULL;
    if (e->dht_lk) {
        dhtsvc_lookup_cancel(e->x->s->dht, e->dht_lk);
        e->dht_lk = NULL;
    }
}

/* --- from magnet to full torrent ------------------------------------------ */

static void
magnet_keep_haves(struct epeer *ep, const uint32_t *pieces, size_t n)
{
    if (ep->m_have_all)
        return;
    size_t room = ENGINE_MAGNET_HAVES_MAX - ep->n_m_haves;
    if (n > room)
        n = room;
    if (n == 0)
        return;
    uint32_t *v =
        realloc(ep->m_haves, (ep->n_m_haves + n) * sizeof(*ep->m_haves));
    if (!v)
        return;
    memcpy(v + ep->n_m_haves, pieces, n * sizeof(*v));
    ep->m_haves = v;
    ep->n_m_haves += n;
}

static void
magnet_forget(struct epeer *ep)
{
    free(ep->m_bits);
    ep->m_bits = NULL;
    ep->m_bits_len = 0;
    free(ep->m_haves);
    ep->m_haves = NULL;
    ep->n_m_haves = 0;
    ep->m_have_all = false;
}

/* ep, connected during the magnet run, goes on with e's full run: into
 * the picker and the choker, with what it announced checked against the
 * real piece count (a wrong bitfield length, spare bits set or a have
 * past the last piece close it).  Returns false if ep was closed. */
static bool
magnet_join(struct engine *e, struct epeer *ep)
{
    uint32_t np = e->t->meta->n_pieces;
    bool ok = true;
    if (ep->m_bits) {
        ok = ep->m_bits_len == e->nbytes;
        for (uint32_t i = np; ok && i < ep->m_bits_len * 8u; i++)
            ok = !bit_get(ep->m_bits, i);
    }
    for (size_t i = 0; ok && i < ep->n_m_haves; i++)
        ok = ep->m_haves[i] < np;
    if (!ok || peer_set_torrent(ep->p, e->ptor) < 0) {
        magnet_forget(ep);
        peer_close(ep->p);
        return false;
    }
    ep->gen = e->gen;
    if (ep_enlist(e, ep) < 0) {
        magnet_forget(ep);
        peer_close(ep->p);
        return false;
    }
    e->t->peers_connected++;
    /* Our pieces (data found on disk), as haves: the thread announced
     * nothing for this torrent yet. */
    uint32_t have[ENGINE_PICK_MAX];
    size_t nh = 0;
    for (uint32_t i = 0; i < np; i++) {
        if (!bit_get(e->have, i))
            continue;
        have[nh++] = i;
        if (nh == ENGINE_PICK_MAX) {
            (void)peer_send_have(ep->p, have, nh);
            nh = 0;
        }
    }
    if (nh)
        (void)peer_send_have(ep->p, have, nh);
    if (ep->m_have_all) {
        picker_peer_have_all(e->pk, ep->pk);
        ep->n_have = np;
    } else {
        if (ep->m_bits) {
            picker_peer_bitfield(e->pk, ep->pk, ep->m_bits);
            ep->n_have = 0;
            for (uint32_t i = 0; i < np; i++)
                ep->n_have += bit_get(ep->m_bits, i);
        }
        for (size_t i = 0; i < ep->n_m_haves; i++)
            if (!picker_peer_has(e->pk, ep->pk, ep->m_haves[i]) &&
                picker_peer_have(e->pk, ep->pk, ep->m_haves[i]) == 0)
                ep->n_have++;
    }
    ep->seed = ep->n_have >= np;
    magnet_forget(ep);
    return true;
}

/* The magnet run ends and the full run starts with the same peers
 * (peer_set_torrent); peers still in their handshake are closed (they
 * are dialled again from the candidates). */
static int
magnet_switch(struct engine *e)
{
    struct engine_ctx *x = e->x;
    sources_stop(e);
    mfetch_free(e->mf);
    e->mf = NULL;
    ev_timer_stop(x->loop, &e->tick);
    ts_retire(x, e->ts);
    e->ts = NULL;
    struct pconn_torrent *old = e->ptor; /* each peer holds its own */
    e->ptor = NULL;
    e->ed = NULL;
    e->magnet = false;
    e->running = false;
    e->t->peers_connected = 0;
    int r = e_start(e);
    pconn_torrent_unref(old);
    if (r < 0) {
        for (struct epeer *ep = e->peers; ep; ep = ep->next)
            peer_close(ep->p);
        return r;
    }
    unsigned kept = 0;
    for (struct epeer *ep = e->peers; ep; ep = ep->next) {
        if (peer_closing(ep->p))
            continue;
        if (!ep->handshaken) {
            peer_close(ep->p);
            continue;
        }
        if (magnet_join(e, ep)) {
            kept++;
            after_availability(e, ep);
        }
    }
    log_field(LOG_LEVEL_INFO, "TORRENT", e->t->hex,
              "%u peer(s) go on with the metadata", kept);
    return 0;
}
