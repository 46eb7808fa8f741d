/* peerconn — the peer thread; see peerconn.h for the contract.
 *
 * One loop: build the poll set from the state, poll, read commands, read
 * the socket and decode in place, write what is queued, check deadlines,
 * publish the events gathered on the way in one pipe write.  Nothing here
 * touches reactor state; everything the thread knows came in its start
 * arguments or in command records.
 */
#include "daemon/peerconn.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/ext.h"
#include "common/log.h"
#include "common/metainfo.h"
#include "common/mse.h"
#include "daemon/rate.h"
#include "daemon/storage.h"

#ifndef TD_VERSION
#define TD_VERSION "0.0.0"
#endif

/* ---- the torrent object and record helpers (any thread) ------------- */

int
pconn_torrent_new(struct pconn_torrent **ret, const struct meta_info *info,
                  struct storage *storage, struct rate_bucket *up,
                  struct rate_bucket *down,
                  void (*release)(struct pconn_torrent *, void *),
                  void *release_arg)
{
    struct wire_torrent wt;
    if (!info || wire_torrent_set(&wt, info->total_size, info->piece_length))
        return -EINVAL;
    struct pconn_torrent *t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    /* Zero bytes are a valid zero atomic (not sealed, no writer). */
    t->pieces = calloc(wt.piece_count ? wt.piece_count : 1,
                       sizeof(*t->pieces));
    if (!t->pieces) {
        free(t);
        return -ENOMEM;
    }
    atomic_init(&t->refs, 1);
    memcpy(t->info_hash, info->info_hash, WIRE_HASH_LEN);
    if (mse_req2(t->info_hash, t->mse_req2) < 0) {
        free((void *)(uintptr_t)t->pieces);
        free(t);
        return -ENOMEM;
    }
    t->info = info;
    t->storage = storage;
    t->up = up;
    t->down = down;
    t->wt = wt;
    t->release = release;
    t->release_arg = release_arg;
    *ret = t;
    return 0;
}

int
pconn_torrent_new_magnet(struct pconn_torrent **ret,
                         const uint8_t info_hash[WIRE_HASH_LEN],
                         struct rate_bucket *up, struct rate_bucket *down,
                         void (*release)(struct pconn_torrent *, void *),
                         void *release_arg)
{
    struct pconn_torrent *t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    atomic_init(&t->refs, 1);
    memcpy(t->info_hash, info_hash, WIRE_HASH_LEN);
    if (mse_req2(t->info_hash, t->mse_req2) < 0) {
        free(t);
        return -ENOMEM;
    }
    t->up = up;
    t->down = down;
    t->release = release;
    t->release_arg = release_arg;
    *ret = t; /* info, storage NULL; wt zero: piece count unknown */
    return 0;
}

struct pconn_torrent *
pconn_torrent_ref(struct pconn_torrent *t)
{
    atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
    return t;
}

void
pconn_torrent_unref(struct pconn_torrent *t)
{
    if (!t)
        return;
    if (atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (t->release)
        t->release(t, t->release_arg);
    free((void *)(uintptr_t)t->pieces); /* not shared any more */
    free(t);
}

/* ---- sealed pieces (see peerconn.h) ---------------------------------- */

static int64_t mono_us(void);

static _Atomic uint16_t *
piece_word(const struct pconn_torrent *t, uint32_t piece)
{
    if (!t || !t->pieces || piece >= t->wt.piece_count)
        return NULL;
    return &t->pieces[piece];
}

void
pconn_piece_seal(struct pconn_torrent *t, uint32_t piece)
{
    _Atomic uint16_t *w = piece_word(t, piece);
    if (w)
        (void)atomic_fetch_or(w, (uint16_t)PCONN_PIECE_SEALED);
}

void
pconn_piece_unseal(struct pconn_torrent *t, uint32_t piece)
{
    _Atomic uint16_t *w = piece_word(t, piece);
    if (w)
        (void)atomic_fetch_and(w, (uint16_t)~PCONN_PIECE_SEALED);
}

bool
pconn_piece_sealed(const struct pconn_torrent *t, uint32_t piece)
{
    _Atomic uint16_t *w = piece_word(t, piece);
    return w && (atomic_load(w) & PCONN_PIECE_SEALED);
}

bool
pconn_piece_write_begin(struct pconn_torrent *t, uint32_t piece)
{
    _Atomic uint16_t *w = piece_word(t, piece);
    if (!w)
        return true;
    uint16_t old = atomic_fetch_add(w, (uint16_t)1);
    assert((old & PCONN_PIECE_WRITERS) != PCONN_PIECE_WRITERS);
    if (old & PCONN_PIECE_SEALED) {
        (void)atomic_fetch_sub(w, (uint16_t)1);
        return false;
    }
    return true;
}

void
pconn_piece_write_end(struct pconn_torrent *t, uint32_t piece)
{
    _Atomic uint16_t *w = piece_word(t, piece);
    if (w)
        (void)atomic_fetch_sub(w, (uint16_t)1);
}

int
pconn_piece_wait_writers(const struct pconn_torrent *t, uint32_t piece,
                         unsigned timeout_ms)
{
    _Atomic uint16_t *w = piece_word(t, piece);
    if (!w)
        return 0;
    int64_t deadline_us = 0;
    for (unsigned round = 0;; round++) {
        if ((atomic_load(w) & PCONN_PIECE_WRITERS) == 0)
            return 0;
        /* A write is a pwritev() of a few blocks: yield a while first,
         * then sleep in short steps (a slow disk). */
        if (round < 64) {
            sched_yield();
            continue;
        }
        int64_t now = mono_us();
        if (deadline_us == 0)
            deadline_us = now + (int64_t)timeout_ms * 1000;
        else if (now >= deadline_us)
            return -ETIMEDOUT;
        struct timespec ts = {0, 200 * 1000};
        (void)nanosleep(&ts, NULL);
    }
}

const char *
pconn_reason_str(enum pconn_reason r)
{
    static const char *const names[PCONN_R_MAX] = {
        [PCONN_R_NONE] = "none",
        [PCONN_R_CLOSED] = "closed",
        [PCONN_R_STUCK] = "stuck",
        [PCONN_R_CONNECT] = "connect",
        [PCONN_R_CONNECT_TIMEOUT] = "connect timeout",
        [PCONN_R_HANDSHAKE_TIMEOUT] = "handshake timeout",
        [PCONN_R_HANDSHAKE] = "bad handshake",
        [PCONN_R_INFO_HASH] = "wrong info-hash",
        [PCONN_R_UNKNOWN_TORRENT] = "unknown torrent",
        [PCONN_R_SELF] = "connection to self",
        [PCONN_R_PROTOCOL] = "protocol",
        [PCONN_R_EOF] = "eof",
        [PCONN_R_IO] = "io",
        [PCONN_R_TIMEOUT] = "timeout",
        [PCONN_R_STORAGE] = "storage",
        [PCONN_R_NOMEM] = "out of memory",
        [PCONN_R_SHUTDOWN] = "shutdown",
        [PCONN_R_ENCRYPTION] = "encryption",
    };
    if ((unsigned)r >= PCONN_R_MAX || !names[r])
        return "unknown";
    return names[r];
}

const struct wire_block *
pconn_rec_blocks(const struct chan_rec *rec)
{
    if (rec->ptr)
        return rec->ptr;
    return (const struct wire_block *)(const void *)rec->p.b;
}

const uint32_t *
pconn_rec_u32(const struct chan_rec *rec)
{
    if (rec->ptr)
        return rec->ptr;
    return rec->p.u32;
}

static int
rec_set_items(struct chan_rec *rec, const void *items, size_t n, size_t size,
              size_t inline_max)
{
    if (n > UINT16_MAX)
        return -EINVAL;
    if (n <= inline_max) {
        if (n)
            memcpy(rec->p.b, items, n * size);
        rec->ptr = NULL;
        rec->ptr_free = NULL;
    } else {
        void *a = malloc(n * size);
        if (!a)
            return -ENOMEM;
        memcpy(a, items, n * size);
        rec->ptr = a;
        rec->ptr_free = free;
    }
    rec->count = (uint16_t)n;
    return 0;
}

int
pconn_rec_set_blocks(struct chan_rec *rec, const struct wire_block *b,
                     size_t n)
{
    return rec_set_items(rec, b, n, sizeof(*b), PCONN_INLINE_BLOCKS);
}

int
pconn_rec_set_u32(struct chan_rec *rec, const uint32_t *v, size_t n)
{
    return rec_set_items(rec, v, n, sizeof(*v), PCONN_INLINE_U32);
}

/* ---- the thread's state ---------------------------------------------- */

enum pc_state {
    PC_CONNECTING,  /* outgoing connect in progress */
    PC_DETECT,      /* incoming: plaintext handshake or MSE? */
    PC_MSE,         /* the MSE handshake */
    PC_MSE_ATTACH,  /* incoming MSE: req2 published, waiting for the
                     * torrent */
    PC_HANDSHAKE,   /* waiting for (the rest of) the peer's handshake */
    PC_ATTACH,      /* incoming: head published, waiting for the torrent */
    PC_ACTIVE,      /* messages */
};

/* A growable array of blocks. */
struct blocks {
    struct wire_block *v; /* owned */
    size_t n, cap;
};

struct pc {
    const struct pconn_config *cfg;   /* borrowed: the table outlives us */
    struct pconn_torrent *tor;        /* borrowed: the peer record's ref */
    uint32_t slot, gen;
    int sock;                         /* owned */
    int cmd_rd;                       /* borrowed: the reactor closes it */
    int evt_wr;                       /* owned */
    bool incoming;
    struct sockaddr_storage addr;
    socklen_t addr_len;

    enum pc_state state;
    unsigned features;                /* ours & theirs, after handshake */
    bool bitfield_sent;               /* our first message went out */
    bool got_first;                   /* the peer's first message came */
    bool am_choking, am_interested;
    bool peer_choking;
    enum pconn_reason reason;         /* != NONE: leave the loop */
    int detail;

    /* receive */
    uint8_t *rbuf;                    /* owned */
    size_t rsize, rlen, roff;
    size_t skip;                      /* bytes of an unknown message left */
    struct wire_decoder dec;
    struct wire_handshake hs;
    bool rate_wait_recv;              /* no download tokens now */

    /* send */
    struct buf out;                   /* control messages; out_off sent */
    size_t out_off;
    bool piece_active;                /* a piece message is on its way */
    uint8_t phdr[WIRE_PIECE_HEADER_LEN];
    size_t phdr_off;
    uint64_t pdata_off, pdata_left;   /* the block still to send */
    uint32_t plen;
    bool rate_wait_send;

    struct blocks outq;               /* our requests in flight */
    struct blocks inq;                /* the peer's requests, in order */
    uint8_t *have;                    /* owned: pieces we announced */
    uint32_t have_bytes;

    /* the write run: contiguous blocks for one storage_writev() */
    uint64_t run_off;
    size_t run_len;
    int run_n;
    struct iovec run_iov[PCONN_WRITE_RUN];
    struct wire_block run_blk[PCONN_WRITE_RUN];

    /* events gathered for the next pipe write */
    struct chan_rec evq[CHAN_BATCH_MAX];
    size_t n_ev;
    uint32_t cmds_read;               /* commands read so far */
    uint32_t ack_sent;                /* the last ack published */
    struct blocks done;               /* blocks written, not yet told */
    struct blocks dropped;            /* requests dead, not yet told */
    uint32_t haves[PCONN_INLINE_U32]; /* peer's haves, not yet told */
    size_t n_haves;
    int batch_kind;                   /* which of the three is gathering:
                                       * one at a time keeps the order */
    uint64_t up_bytes;                /* sent, not yet told */
    uint32_t up_blocks;
    int64_t up_since_ms;              /* when up_bytes became non-zero */

    /* clocks (CLOCK_MONOTONIC ms) */
    int64_t now_ms;
    int64_t start_ms;
    int64_t last_recv_ms;
    int64_t last_send_ms;
    int64_t rate_until_ms;            /* rate wait: retry at */

    /* BEP 9 / BEP 11 */
    uint8_t peer_md_id;               /* the peer's ut_metadata id; 0: no */
    uint8_t peer_pex_id;              /* the peer's ut_pex id; 0: no */
    uint32_t md_asked;                /* our metadata requests in flight */
    int64_t md_tat_ms;                /* serving cap (GCRA): the
                                       * theoretical arrival time */
    int64_t pex_rx_ms;                /* when the last ut_pex was taken */
    bool pex_rx_any;

    /* BEP 6 allowed fast */
    uint32_t af[PCONN_ALLOWED_FAST_K]; /* the peer's canonical set */
    size_t n_af;
    uint16_t af_sent;                 /* bit k: ALLOWED_FAST af[k] sent */
    uint32_t af_rx;                   /* the peer's ALLOWED_FAST taken */

    /* MSE (see peerconn.h, "Encryption") */
    struct mse *mse;                  /* owned: the handshake, then the
                                       * keystreams (RC4 only); NULL for
                                       * plaintext */
    bool crypt;                       /* RC4: every byte in and out goes
                                       * through mse */
    unsigned crypto;                  /* enum pconn_crypto */
    bool mse_retried;                 /* PREFER: the plaintext reconnect
                                       * was made */
    int64_t mse_start_ms;
    size_t out_enc;                   /* bytes of out in wire form already
                                       * (MSE's own, or encrypted) */
    uint8_t *pbuf;                    /* owned: RC4: the piece message in
                                       * flight, encrypted */
    size_t pbuf_size, pbuf_len, pbuf_off;
};

static int64_t
mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static unsigned
cfg_ms(unsigned v, unsigned def)
{
    return v ? v : def;
}

static void
pc_fail(struct pc *pc, enum pconn_reason r, int detail)
{
    if (pc->reason == PCONN_R_NONE) {
        pc->reason = r;
        pc->detail = detail;
    }
}

static int
blocks_push(struct blocks *a, const struct wire_block *b)
{
    if (a->n == a->cap) {
        size_t nc = a->cap ? a->cap * 2 : 64;
        struct wire_block *v = realloc(a->v, nc * sizeof(*v));
        if (!v)
            return -ENOMEM;
        a->v = v;
        a->cap = nc;
    }
    a->v[a->n++] = *b;
    return 0;
}

/* Index of b in a, or -1.  Blocks arrive mostly in the order asked, so
 * the search from the front usually stops at once. */
static ssize_t
blocks_find(const struct blocks *a, const struct wire_block *b)
{
    for (size_t i = 0; i < a->n; i++)
        if (a->v[i].index == b->index && a->v[i].begin == b->begin &&
            a->v[i].length == b->length)
            return (ssize_t)i;
    return -1;
}

static void
blocks_remove(struct blocks *a, size_t i)
{
    memmove(&a->v[i], &a->v[i + 1], (a->n - i - 1) * sizeof(a->v[0]));
    a->n--;
}

static bool
have_piece(const struct pc *pc, uint32_t i)
{
    return pc->have && i / 8 < pc->have_bytes &&
           (pc->have[i / 8] & (0x80u >> (i % 8)));
}

static void
have_set(struct pc *pc, uint32_t i)
{
    if (pc->have && i / 8 < pc->have_bytes && i < pc->tor->wt.piece_count)
        pc->have[i / 8] |= (uint8_t)(0x80u >> (i % 8));
}

/* ---- events ---------------------------------------------------------- */

static void
ev_flush(struct pc *pc)
{
    if (pc->n_ev == 0)
        return;
    for (size_t i = 0; i < pc->n_ev; i++)
        pc->evq[i].ack = pc->cmds_read;
    int r = chan_write(pc->evt_wr, pc->evq, pc->n_ev);
    if (r < 0) {
        /* The reactor is gone (it never is while we run): nobody will
         * free what the records own. */
        log_err("peer/%u: cannot publish events: %s", pc->slot,
                strerror(-r));
        for (size_t i = 0; i < pc->n_ev; i++)
            chan_rec_release(&pc->evq[i]);
        pc_fail(pc, PCONN_R_IO, r);
    }
    pc->ack_sent = pc->cmds_read;
    pc->n_ev = 0;
}

/* A new record at the end of the queue (the queue is written first if
 * full). */
static struct chan_rec *
ev_new(struct pc *pc, uint16_t type)
{
    if (pc->n_ev == CHAN_BATCH_MAX)
        ev_flush(pc);
    struct chan_rec *rec = &pc->evq[pc->n_ev++];
    memset(rec, 0, sizeof(*rec));
    rec->type = type;
    rec->slot = pc->slot;
    rec->gen = pc->gen;
    return rec;
}

static void
ev_blocks(struct pc *pc, uint16_t type, struct blocks *a)
{
    size_t i = 0;
    while (i < a->n) {
        size_t n = a->n - i;
        if (n > UINT16_MAX)
            n = UINT16_MAX;
        struct chan_rec *rec = ev_new(pc, type);
        if (pconn_rec_set_blocks(rec, a->v + i, n) < 0) {
            /* No memory for an array: inline ones still go. */
            n = PCONN_INLINE_BLOCKS;
            (void)pconn_rec_set_blocks(rec, a->v + i, n);
        }
        i += n;
    }
    a->n = 0;
}

/* Publish the batches gathered (keeps the order of events: called before
 * every single event). */
static void
ev_batches(struct pc *pc)
{
    if (pc->n_haves) {
        struct chan_rec *rec = ev_new(pc, PCONN_EV_HAVE);
        (void)pconn_rec_set_u32(rec, pc->haves, pc->n_haves);
        pc->n_haves = 0;
    }
    if (pc->done.n)
        ev_blocks(pc, PCONN_EV_BLOCKS, &pc->done);
    if (pc->dropped.n)
        ev_blocks(pc, PCONN_EV_DROPPED, &pc->dropped);
    pc->batch_kind = 0;
}

/* About to gather an event of kind (an enum pconn_event of the three
 * batched ones): publish what another kind gathered first, so that the
 * reactor sees events in the order they happened. */
static void
batch_switch(struct pc *pc, int kind)
{
    if (pc->batch_kind != kind && pc->batch_kind != 0)
        ev_batches(pc);
    pc->batch_kind = kind;
}

static void
ev_uploaded(struct pc *pc)
{
    if (pc->up_bytes == 0)
        return;
    struct chan_rec *rec = ev_new(pc, PCONN_EV_UPLOADED);
    rec->p.u64[0] = pc->up_bytes;
    rec->p.u32[2] = pc->up_blocks;
    pc->up_bytes = 0;
    pc->up_blocks = 0;
}

static void run_flush(struct pc *pc);

static struct chan_rec *
ev_single(struct pc *pc, uint16_t type)
{
    run_flush(pc); /* blocks that came before this event come first */
    ev_batches(pc);
    return ev_new(pc, type);
}

static void
ev_have(struct pc *pc, uint32_t index)
{
    run_flush(pc);
    batch_switch(pc, PCONN_EV_HAVE);
    if (pc->n_haves == PCONN_INLINE_U32) {
        struct chan_rec *rec = ev_new(pc, PCONN_EV_HAVE);
        (void)pconn_rec_set_u32(rec, pc->haves, pc->n_haves);
        pc->n_haves = 0;
    }
    pc->haves[pc->n_haves++] = index;
}

static void
drop_request(struct pc *pc, const struct wire_block *b)
{
    run_flush(pc);
    batch_switch(pc, PCONN_EV_DROPPED);
    if (blocks_push(&pc->dropped, b) < 0)
        pc_fail(pc, PCONN_R_NOMEM, -ENOMEM);
}

/* ---- output ---------------------------------------------------------- */

static void
out_append(struct pc *pc, const void *p, size_t n)
{
    int r = buf_append(&pc->out, p, n);
    if (r < 0) /* -EMSGSIZE: the peer has not read for a long while */
        pc_fail(pc, r == -ENOMEM ? PCONN_R_NOMEM : PCONN_R_IO, r);
}

static void
out_simple(struct pc *pc, enum wire_type t)
{
    uint8_t m[WIRE_SIMPLE_LEN];
    int n = wire_put_simple(m, sizeof(m), t);
    if (n > 0)
        out_append(pc, m, (size_t)n);
}

static void
out_block(struct pc *pc, enum wire_type t, const struct wire_block *b)
{
    uint8_t m[WIRE_REQUEST_LEN];
    int n = wire_put_block(m, sizeof(m), t, b);
    if (n > 0)
        out_append(pc, m, (size_t)n);
}

/* BEP 27: no peer exchange and no DHT for a private torrent. */
static bool
pc_private(const struct pc *pc)
{
    return pc->tor && pc->tor->info && pc->tor->info->private_torrent;
}

/* The features we offer on this connection. */
static unsigned
pc_features(const struct pc *pc)
{
    unsigned f = pc->cfg->features;
    if (pc_private(pc))
        f &= ~(unsigned)WIRE_F_DHT;
    return f;
}

/* Our BitTorrent handshake into m. */
static int
make_handshake(const struct pc *pc, uint8_t m[WIRE_HANDSHAKE_LEN])
{
    struct wire_handshake h;
    memset(&h, 0, sizeof(h));
    wire_reserved_set(h.reserved, pc_features(pc));
    memcpy(h.info_hash, pc->tor->info_hash, WIRE_HASH_LEN);
    memcpy(h.peer_id, pc->cfg->peer_id, WIRE_PEER_ID_LEN);
    return wire_put_handshake(m, WIRE_HANDSHAKE_LEN, &h);
}

static void
out_handshake(struct pc *pc)
{
    uint8_t m[WIRE_HANDSHAKE_LEN];
    int n = make_handshake(pc, m);
    if (n > 0)
        out_append(pc, m, (size_t)n);
}

/* The metadata we can serve (0: none). */
static uint32_t
pc_md_size(const struct pc *pc)
{
    const struct meta_info *mi = pc->tor ? pc->tor->info : NULL;
    if (!mi || !mi->info_raw || mi->info_len == 0 ||
        mi->info_len > EXT_METADATA_MAX)
        return 0;
    return (uint32_t)mi->info_len;
}

static void
out_ext_handshake(struct pc *pc)
{
    struct wire_ext_handshake h;
    memset(&h, 0, sizeof(h));
    h.ut_metadata = PCONN_EXT_UT_METADATA;
    if (!pc_private(pc))
        h.ut_pex = PCONN_EXT_UT_PEX;
    h.metadata_size = pc_md_size(pc);
    h.port = pc->cfg->listen_port;
    h.reqq = cfg_ms(pc->cfg->reqq, PCONN_REQQ_DEFAULT);
    snprintf(h.client, sizeof(h.client), "torrentd %s", TD_VERSION);
    if (pc->addr.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const void *)&pc->addr;
        memcpy(h.yourip, &a->sin_addr, 4);
        h.yourip_len = 4;
    } else if (pc->addr.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const void *)&pc->addr;
        memcpy(h.yourip, &a->sin6_addr, 16);
        h.yourip_len = 16;
    }
    int r = wire_put_ext_handshake(&pc->out, &h);
    if (r < 0)
        pc_fail(pc, r == -ENOMEM ? PCONN_R_NOMEM : PCONN_R_IO, r);
}

/* ---- BEP 6 allowed fast ---------------------------------------------- */

/* The peer's canonical allowed-fast set (empty without the fast
 * extension or a piece count). */
static void
af_compute(struct pc *pc)
{
    pc->n_af = 0;
    pc->af_sent = 0;
    if (!(pc->features & WIRE_F_FAST) || pc->tor->wt.piece_count == 0)
        return;
    uint8_t ip[16];
    size_t len = 0;
    if (pc->addr.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const void *)&pc->addr;
        memcpy(ip, &a->sin_addr, 4);
        len = 4;
    } else if (pc->addr.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const void *)&pc->addr;
        if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr)) {
            memcpy(ip, a->sin6_addr.s6_addr + 12, 4);
            len = 4;
        } else {
            memcpy(ip, &a->sin6_addr, 16);
            len = 16;
        }
    }
    if (len == 0)
        return;
    int n = wire_allowed_fast(pc->af, PCONN_ALLOWED_FAST_K,
                              pc->tor->info_hash, ip, len,
                              pc->tor->wt.piece_count);
    if (n > 0)
        pc->n_af = (size_t)n;
}

/* Send ALLOWED_FAST for the pieces of the set we have now and have not
 * announced yet.  After the bitfield only. */
static void
af_announce(struct pc *pc)
{
    if (!pc->bitfield_sent)
        return;
    for (size_t k = 0; k < pc->n_af; k++) {
        if (pc->af_sent & (1u << k) || !have_piece(pc, pc->af[k]))
            continue;
        uint8_t m[WIRE_HAVE_LEN];
        if (wire_put_have(m, sizeof(m), WIRE_ALLOWED_FAST, pc->af[k]) > 0)
            out_append(pc, m, sizeof(m));
        pc->af_sent |= (uint16_t)(1u << k);
    }
}

/* Do we let the peer fetch piece i while we choke it? */
static bool
af_allowed(const struct pc *pc, uint32_t i)
{
    for (size_t k = 0; k < pc->n_af; k++)
        if (pc->af[k] == i && pc->af_sent & (1u << k))
            return true;
    return false;
}

/* May we serve this request now? */
static bool
servable(const struct pc *pc, const struct wire_block *b)
{
    return pc->bitfield_sent && have_piece(pc, b->index) &&
           (!pc->am_choking || af_allowed(pc, b->index));
}

/* The peer's queued requests that we will not serve now (we choke it,
 * or they came before our bitfield): reject them (fast) or forget them.
 * Allowed-fast ones stay. */
static void
reject_all(struct pc *pc)
{
    size_t j = 0;
    for (size_t i = 0; i < pc->inq.n; i++) {
        if (servable(pc, &pc->inq.v[i])) {
            pc->inq.v[j++] = pc->inq.v[i];
            continue;
        }
        if (pc->features & WIRE_F_FAST)
            out_block(pc, WIRE_REJECT, &pc->inq.v[i]);
    }
    pc->inq.n = j;
}

/* sendfile() one span of the block in flight. */
static int
send_span(void *arg, int fd, uint64_t file_offset, uint64_t len)
{
    static const uint8_t zeros[WIRE_BLOCK_SIZE];
    struct pc *pc = arg;
    uint64_t done = 0;
    while (done < len) {
        ssize_t k;
        size_t want = (size_t)(len - done);
        if (fd < 0) {
            if (want > sizeof(zeros))
                want = sizeof(zeros);
            k = send(pc->sock, zeros, want, MSG_NOSIGNAL | MSG_DONTWAIT);
        } else {
            off_t off = (off_t)(file_offset + done);
            k = sendfile(pc->sock, fd, &off, want);
        }
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 1; /* the socket is full: go on at POLLOUT */
        if (k < 0) {
            pc_fail(pc, PCONN_R_IO, -errno);
            return -errno;
        }
        if (k == 0) { /* the file is shorter than the torrent says */
            pc_fail(pc, PCONN_R_STORAGE, -ENODATA);
            return -ENODATA;
        }
        done += (uint64_t)k;
        pc->pdata_off += (uint64_t)k;
        pc->pdata_left -= (uint64_t)k;
    }
    return 0;
}

/* Start the next queued request if tokens allow.  Returns true if a
 * piece is now in flight. */
static bool
start_piece(struct pc *pc)
{
    if (pc->state != PC_ACTIVE || !pc->bitfield_sent || pc->inq.n == 0)
        return false;
    if (!servable(pc, &pc->inq.v[0])) {
        reject_all(pc); /* (the queue holds servable ones only) */
        if (pc->inq.n == 0)
            return false;
    }
    struct wire_block b = pc->inq.v[0];
    int64_t now_us = mono_us();
    uint64_t got = rate_take2(pc->tor->up, pc->cfg->up_global, b.length,
                              now_us);
    if (got < b.length) {
        /* Wait for the tokens of the whole block (the delay is the
         * bucket's refill time for them), then try again. */
        if (got) {
            rate_bucket_give(pc->tor->up, got);
            rate_bucket_give(pc->cfg->up_global, got);
        }
        int64_t d1 = rate_bucket_delay_us(pc->tor->up, b.length, now_us);
        int64_t d2 = rate_bucket_delay_us(pc->cfg->up_global, b.length,
                                          now_us);
        int64_t d = d1 > d2 ? d1 : d2;
        pc->rate_wait_send = true;
        int64_t until = pc->now_ms + d / 1000 + 1;
        if (pc->rate_until_ms == 0 || until < pc->rate_until_ms)
            pc->rate_until_ms = until;
        return false;
    }
    blocks_remove(&pc->inq, 0);
    (void)wire_put_piece_header(pc->phdr, sizeof(pc->phdr), b.index, b.begin,
                                b.length);
    pc->phdr_off = 0;
    pc->pdata_off = (uint64_t)b.index * pc->tor->wt.piece_length + b.begin;
    pc->pdata_left = b.length;
    pc->plen = b.length;
    if (pc->crypt) {
        /* No sendfile under RC4: header and block into one buffer, which
         * is encrypted whole and sent as the socket takes it. */
        size_t need = WIRE_PIECE_HEADER_LEN + (size_t)b.length;
        if (pc->pbuf_size < need) {
            uint8_t *nb = realloc(pc->pbuf, need);
            if (!nb) {
                pc_fail(pc, PCONN_R_NOMEM, -ENOMEM);
                return false;
            }
            pc->pbuf = nb;
            pc->pbuf_size = need;
        }
        memcpy(pc->pbuf, pc->phdr, WIRE_PIECE_HEADER_LEN);
        int r = storage_read(pc->tor->storage, pc->pdata_off,
                             pc->pbuf + WIRE_PIECE_HEADER_LEN, b.length);
        if (r < 0) {
            pc_fail(pc, PCONN_R_STORAGE, r);
            return false;
        }
        mse_encrypt(pc->mse, pc->pbuf, pc->pbuf, need);
        pc->pbuf_len = need;
        pc->pbuf_off = 0;
    }
    pc->piece_active = true;
    return true;
}

/* RC4: send the piece message's buffer.  Returns 0 when all of it went,
 * 1 when the socket is full, -1 on failure (pc_fail done). */
static int
send_pbuf(struct pc *pc)
{
    while (pc->pbuf_off < pc->pbuf_len) {
        ssize_t k = send(pc->sock, pc->pbuf + pc->pbuf_off,
                         pc->pbuf_len - pc->pbuf_off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 1;
        if (k < 0) {
            pc_fail(pc, PCONN_R_IO, -errno);
            return -1;
        }
        pc->pbuf_off += (size_t)k;
        pc->last_send_ms = pc->now_ms;
    }
    return 0;
}

/* Write what is queued until the socket is full.  Control messages go
 * between blocks, never inside one. */
/* The piece message in flight has left whole: count it. */
static void
piece_sent(struct pc *pc)
{
    pc->piece_active = false;
    if (pc->up_bytes == 0)
        pc->up_since_ms = pc->now_ms;
    pc->up_bytes += pc->plen;
    pc->up_blocks++;
    if (pc->up_bytes >= PCONN_UPLOAD_FLUSH)
        ev_uploaded(pc);
}

static void
do_send(struct pc *pc)
{
    while (pc->reason == PCONN_R_NONE) {
        if (pc->piece_active && pc->crypt) {
            int r = send_pbuf(pc);
            if (r != 0)
                return;
            piece_sent(pc);
            continue;
        }
        if (pc->piece_active) {
            if (pc->phdr_off < sizeof(pc->phdr)) {
                ssize_t k = send(pc->sock, pc->phdr + pc->phdr_off,
                                 sizeof(pc->phdr) - pc->phdr_off,
                                 MSG_NOSIGNAL | MSG_DONTWAIT | MSG_MORE);
                if (k < 0 && errno == EINTR)
                    continue;
                if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                    return;
                if (k < 0) {
                    pc_fail(pc, PCONN_R_IO, -errno);
                    return;
                }
                pc->phdr_off += (size_t)k;
                pc->last_send_ms = pc->now_ms;
                continue;
            }
            int r = storage_sendfile_span(pc->tor->storage, pc->pdata_off,
                                          pc->pdata_left, send_span, pc);
            pc->last_send_ms = pc->now_ms;
            if (r == 1)
                return;
            if (r < 0) {
                pc_fail(pc, PCONN_R_STORAGE, r);
                return;
            }
            piece_sent(pc);
            continue;
        }
        if (pc->out_off < pc->out.len) {
            if (pc->crypt && pc->out_enc < pc->out.len) {
                /* What was queued since the last send, in stream order:
                 * nothing else goes out between (pieces wait for an
                 * empty queue). */
                mse_encrypt(pc->mse, pc->out.data + pc->out_enc,
                            pc->out.data + pc->out_enc,
                            pc->out.len - pc->out_enc);
                pc->out_enc = pc->out.len;
            }
            ssize_t k = send(pc->sock, pc->out.data + pc->out_off,
                             pc->out.len - pc->out_off,
                             MSG_NOSIGNAL | MSG_DONTWAIT);
            if (k < 0 && errno == EINTR)
                continue;
            if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                return;
            if (k < 0) {
                pc_fail(pc, PCONN_R_IO, -errno);
                return;
            }
            pc->out_off += (size_t)k;
            pc->last_send_ms = pc->now_ms;
            if (pc->out_off == pc->out.len) {
                buf_reset(&pc->out);
                pc->out_off = 0;
                pc->out_enc = 0;
            }
            continue;
        }
        if (!start_piece(pc))
            return;
    }
}

static bool
want_send(const struct pc *pc)
{
    if (pc->state == PC_CONNECTING)
        return true;
    if (pc->piece_active || pc->out_off < pc->out.len)
        return true;
    /* While choking, the queue holds allowed-fast requests only. */
    return pc->state == PC_ACTIVE && pc->bitfield_sent && pc->inq.n > 0 &&
           !pc->rate_wait_send;
}

/* ---- commands -------------------------------------------------------- */

static void
cmd_bitfield(struct pc *pc, struct chan_rec *rec)
{
    uint32_t count = pc->tor->wt.piece_count;
    uint32_t nbytes = (count + 7) / 8;
    free(pc->have);
    pc->have = calloc(nbytes ? nbytes : 1, 1);
    if (!pc->have) {
        pc_fail(pc, PCONN_R_NOMEM, -ENOMEM);
        return;
    }
    pc->have_bytes = nbytes;
    if (rec->ptr) {
        uint32_t n = rec->p.u32[0] < nbytes ? rec->p.u32[0] : nbytes;
        memcpy(pc->have, rec->ptr, n);
        if (count % 8 && n == nbytes) /* spare bits stay zero */
            pc->have[nbytes - 1] &= (uint8_t)(0xffu << (8 - count % 8));
    }
    uint32_t set = 0;
    for (uint32_t i = 0; i < nbytes; i++)
        set += (uint32_t)__builtin_popcount(pc->have[i]);
    if (pc->bitfield_sent) {
        af_announce(pc); /* a second one only updates what we serve */
        return;
    }
    pc->bitfield_sent = true;
    if (pc->features & WIRE_F_FAST && set == count && count > 0)
        out_simple(pc, WIRE_HAVE_ALL); /* count 0: a magnet, have none */
    else if (pc->features & WIRE_F_FAST && set == 0)
        out_simple(pc, WIRE_HAVE_NONE);
    else if (set > 0) {
        size_t len = WIRE_SIMPLE_LEN + nbytes;
        uint8_t *m = malloc(len);
        if (!m) {
            pc_fail(pc, PCONN_R_NOMEM, -ENOMEM);
            return;
        }
        int n = wire_put_bitfield(m, len, pc->have, nbytes);
        if (n > 0)
            out_append(pc, m, (size_t)n);
        free(m);
    }
    if (pc->features & WIRE_F_EXTENDED)
        out_ext_handshake(pc);
    if (pc->features & WIRE_F_DHT && pc->cfg->dht_port) {
        uint8_t m[WIRE_PORT_LEN];
        if (wire_put_port(m, sizeof(m), pc->cfg->dht_port) > 0)
            out_append(pc, m, sizeof(m));
    }
    af_compute(pc);
    af_announce(pc);
    reject_all(pc); /* requests that came before the bitfield */
}

static void
cmd_request(struct pc *pc, const struct wire_block *b, size_t n)
{
    bool dead = pc->peer_choking && !(pc->features & WIRE_F_FAST);
    for (size_t i = 0; i < n; i++) {
        if (dead || pc->outq.n >= PCONN_MAX_OUTSTANDING ||
            b[i].index >= pc->tor->wt.piece_count) {
            drop_request(pc, &b[i]);
            continue;
        }
        if (blocks_push(&pc->outq, &b[i]) < 0) {
            drop_request(pc, &b[i]);
            continue;
        }
        out_block(pc, WIRE_REQUEST, &b[i]);
    }
}

static void
cmd_cancel(struct pc *pc, const struct wire_block *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        ssize_t j = blocks_find(&pc->outq, &b[i]);
        if (j < 0)
            continue;
        blocks_remove(&pc->outq, (size_t)j);
        out_block(pc, WIRE_CANCEL, &b[i]);
    }
}

static void
cmd_reject(struct pc *pc, const struct wire_block *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        ssize_t j = blocks_find(&pc->inq, &b[i]);
        if (j < 0)
            continue;
        blocks_remove(&pc->inq, (size_t)j);
        if (pc->features & WIRE_F_FAST)
            out_block(pc, WIRE_REJECT, &b[i]);
    }
}

static void handle_input(struct pc *pc);
static void cmd_set_torrent(struct pc *pc, struct pconn_torrent *t);
static void cmd_metadata_request(struct pc *pc, uint32_t piece);
static void cmd_pex(struct pc *pc, const struct ext_pex_msg *x);

static void
handle_command(struct pc *pc, struct chan_rec *rec)
{
    if (rec->type == PCONN_CMD_CLOSE) {
        pc_fail(pc, PCONN_R_CLOSED, 0);
        return;
    }
    if (rec->type == PCONN_CMD_ATTACH && pc->state == PC_MSE_ATTACH) {
        struct pconn_torrent *t = rec->ptr;
        rec->ptr = NULL; /* borrowed, not freed */
        if (!t || memcmp(t->mse_req2, mse_req2_seen(pc->mse), WIRE_HASH_LEN)) {
            log_err("peer/%u: bad attach command, ignoring", pc->slot);
            return;
        }
        int r = mse_set_skey(pc->mse, t->info_hash);
        if (r < 0) {
            pc_fail(pc, r == MSE_E_NOMEM ? PCONN_R_NOMEM : PCONN_R_ENCRYPTION,
                    r);
            return;
        }
        pc->tor = t;
        (void)wire_decoder_set_torrent(&pc->dec, &t->wt);
        pc->state = PC_MSE;
        handle_input(pc); /* the rest of step 3 may be here already */
        return;
    }
    if (rec->type == PCONN_CMD_ATTACH) {
        struct pconn_torrent *t = rec->ptr;
        rec->ptr = NULL; /* borrowed, not freed */
        if (pc->state != PC_ATTACH || !t ||
            memcmp(t->info_hash, pc->hs.info_hash, WIRE_HASH_LEN)) {
            log_err("peer/%u: bad attach command, ignoring", pc->slot);
            return;
        }
        pc->tor = t;
        (void)wire_decoder_set_torrent(&pc->dec, &t->wt);
        out_handshake(pc);
        pc->state = PC_HANDSHAKE;
        handle_input(pc); /* the peer id may be here already */
        return;
    }
    if (pc->state != PC_ACTIVE) {
        log_err("peer/%u: command %u before the handshake, ignoring",
                pc->slot, rec->type);
        return;
    }
    switch (rec->type) {
    case PCONN_CMD_BITFIELD:
        cmd_bitfield(pc, rec);
        break;
    case PCONN_CMD_HAVE: {
        const uint32_t *v = pconn_rec_u32(rec);
        for (size_t i = 0; i < rec->count; i++) {
            if (have_piece(pc, v[i]) || v[i] >= pc->tor->wt.piece_count)
                continue;
            have_set(pc, v[i]);
            uint8_t m[WIRE_HAVE_LEN];
            if (wire_put_have(m, sizeof(m), WIRE_HAVE, v[i]) > 0)
                out_append(pc, m, sizeof(m));
        }
        af_announce(pc);
        break;
    }
    case PCONN_CMD_CHOKE:
        if (!pc->am_choking) {
            pc->am_choking = true;
            out_simple(pc, WIRE_CHOKE);
            reject_all(pc);
        }
        break;
    case PCONN_CMD_UNCHOKE:
        if (pc->am_choking) {
            pc->am_choking = false;
            out_simple(pc, WIRE_UNCHOKE);
        }
        break;
    case PCONN_CMD_INTERESTED:
        if (!pc->am_interested) {
            pc->am_interested = true;
            out_simple(pc, WIRE_INTERESTED);
        }
        break;
    case PCONN_CMD_NOT_INTERESTED:
        if (pc->am_interested) {
            pc->am_interested = false;
            out_simple(pc, WIRE_NOT_INTERESTED);
        }
        break;
    case PCONN_CMD_REQUEST:
        cmd_request(pc, pconn_rec_blocks(rec), rec->count);
        break;
    case PCONN_CMD_CANCEL:
        cmd_cancel(pc, pconn_rec_blocks(rec), rec->count);
        break;
    case PCONN_CMD_REJECT:
        cmd_reject(pc, pconn_rec_blocks(rec), rec->count);
        break;
    case PCONN_CMD_METADATA_REQUEST:
        cmd_metadata_request(pc, rec->p.u32[0]);
        break;
    case PCONN_CMD_PEX:
        cmd_pex(pc, rec->ptr);
        break;
    case PCONN_CMD_SET_TORRENT:
        cmd_set_torrent(pc, rec->ptr);
        rec->ptr = NULL; /* borrowed, not freed */
        break;
    default:
        log_err("peer/%u: unknown command %u, ignoring", pc->slot, rec->type);
        break;
    }
}

/* Read and run a batch of commands.  A closed command pipe (the reactor
 * dropped us) ends the connection. */
static void
read_commands(struct pc *pc)
{
    struct chan_rec recs[CHAN_BATCH_MAX];
    ssize_t n = chan_read(pc->cmd_rd, recs, CHAN_BATCH_MAX);
    if (n == -EAGAIN)
        return;
    if (n <= 0) {
        pc_fail(pc, n == 0 ? PCONN_R_STUCK : PCONN_R_IO, (int)n);
        return;
    }
    pc->cmds_read += (uint32_t)n;
    for (ssize_t i = 0; i < n; i++) {
        if (!chan_rec_current(&recs[i], pc->slot, pc->gen)) {
            log_err("peer/%u: command for another connection, ignoring",
                    pc->slot);
        } else if (pc->reason == PCONN_R_NONE) {
            handle_command(pc, &recs[i]);
        }
        chan_rec_release(&recs[i]);
    }
}

/* ---- input ----------------------------------------------------------- */

/* Write the run of contiguous blocks; on success they are done.  Each
 * piece the run touches is entered as a writer first (peerconn.h,
 * "Sealed pieces"): the blocks of a sealed piece are not written but
 * reported dropped; the others go out in as few storage_writev() calls
 * as the sealed ones allow (one, usually), and the pieces are left only
 * once those returned. */
static void
run_flush(struct pc *pc)
{
    if (pc->run_n == 0)
        return;
    int n = pc->run_n;
    pc->run_n = 0;
    pc->run_len = 0;
    struct pconn_torrent *t = pc->tor;
    bool open[PCONN_WRITE_RUN]; /* per block: its piece is entered */
    /* The run is contiguous: its pieces are consecutive, in order. */
    for (int i = 0; i < n; i++) {
        if (i > 0 && pc->run_blk[i].index == pc->run_blk[i - 1].index)
            open[i] = open[i - 1];
        else
            open[i] = pconn_piece_write_begin(t, pc->run_blk[i].index);
    }
    int r = 0;
    for (int i = 0; i < n && r >= 0;) {
        if (!open[i]) {
            i++;
            continue;
        }
        int j = i;
        uint64_t off = (uint64_t)pc->run_blk[i].index * t->wt.piece_length +
                       pc->run_blk[i].begin;
        while (j < n && open[j])
            j++;
        r = storage_writev(t->storage, off, pc->run_iov + i, j - i);
        i = j;
    }
    for (int i = 0; i < n; i++)
        if (open[i] && (i == 0 || pc->run_blk[i].index !=
                                      pc->run_blk[i - 1].index))
            pconn_piece_write_end(t, pc->run_blk[i].index);
    if (r < 0) {
        pc_fail(pc, PCONN_R_STORAGE, r);
        return;
    }
    for (int i = 0; i < n; i++) {
        if (!open[i]) {
            /* Sealed: hashed now, or verified.  Never written. */
            batch_switch(pc, PCONN_EV_DROPPED);
            if (blocks_push(&pc->dropped, &pc->run_blk[i]) < 0)
                pc_fail(pc, PCONN_R_NOMEM, -ENOMEM);
            continue;
        }
        batch_switch(pc, PCONN_EV_BLOCKS);
        if (blocks_push(&pc->done, &pc->run_blk[i]) < 0)
            pc_fail(pc, PCONN_R_NOMEM, -ENOMEM);
    }
}

static void
on_piece(struct pc *pc, const struct wire_msg *m)
{
    struct wire_block b = {m->index, m->begin, m->data_len};
    ssize_t j = blocks_find(&pc->outq, &b);
    if (j < 0)
        return; /* not asked for, or cancelled: never written */
    blocks_remove(&pc->outq, (size_t)j);
    uint64_t off = (uint64_t)b.index * pc->tor->wt.piece_length + b.begin;
    if (pc->run_n > 0 &&
        (pc->run_n == PCONN_WRITE_RUN || off != pc->run_off + pc->run_len))
        run_flush(pc);
    if (pc->run_n == 0)
        pc->run_off = off;
    pc->run_iov[pc->run_n].iov_base = (void *)(uintptr_t)m->data;
    pc->run_iov[pc->run_n].iov_len = m->data_len;
    pc->run_blk[pc->run_n] = b;
    pc->run_n++;
    pc->run_len += m->data_len;
}

static void
on_request(struct pc *pc, const struct wire_msg *m)
{
    struct wire_block b = {m->index, m->begin, m->length};
    bool fast = pc->features & WIRE_F_FAST;
    uint32_t reqq = cfg_ms(pc->cfg->reqq, PCONN_REQQ_DEFAULT);
    if (!pc->bitfield_sent) {
        /* Nothing may go out before our bitfield, not even a reject:
         * judged once it went (cmd_bitfield). */
        if (pc->inq.n < reqq && blocks_push(&pc->inq, &b) < 0)
            pc_fail(pc, PCONN_R_NOMEM, -ENOMEM);
        return;
    }
    if (!servable(pc, &b) || pc->inq.n >= reqq) {
        if (fast)
            out_block(pc, WIRE_REJECT, &b);
        return;
    }
    if (blocks_push(&pc->inq, &b) < 0 && fast)
        out_block(pc, WIRE_REJECT, &b);
}

static void
protocol_error(struct pc *pc, int detail)
{
    pc_fail(pc, PCONN_R_PROTOCOL, detail);
}

/* ---- BEP 9, BEP 11 ---------------------------------------------------- */

static void
ev_md_reject(struct pc *pc, uint32_t piece)
{
    struct chan_rec *rec = ev_single(pc, PCONN_EV_METADATA_REJECT);
    rec->p.u32[0] = piece;
}

static void
out_md(struct pc *pc, enum ext_md_type type, uint32_t piece)
{
    int r;
    uint32_t size = pc_md_size(pc);
    if (type == EXT_MD_DATA) {
        const uint8_t *raw = pc->tor->info->info_raw;
        r = ext_metadata_put(&pc->out, pc->peer_md_id, type, piece, size,
                             raw + (size_t)piece * EXT_METADATA_PIECE,
                             ext_metadata_piece_len(size, piece));
    } else {
        r = ext_metadata_put(&pc->out, pc->peer_md_id, type, piece, 0, NULL,
                             0);
    }
    if (r < 0)
        pc_fail(pc, r == -ENOMEM ? PCONN_R_NOMEM : PCONN_R_IO, r);
}

/* May we serve one more metadata piece now?  A GCRA: PCONN_MD_PER_S a
 * second with bursts of PCONN_MD_BURST. */
static bool
md_serve_ok(struct pc *pc)
{
    const int64_t t = 1000 / PCONN_MD_PER_S;
    int64_t tat = pc->md_tat_ms > pc->now_ms ? pc->md_tat_ms : pc->now_ms;
    if (tat - pc->now_ms > (int64_t)(PCONN_MD_BURST - 1) * t)
        return false;
    pc->md_tat_ms = tat + t;
    return true;
}

/* A ut_metadata message from the peer.  Bad ones are ignored (BEP 9:
 * unknown types must be): the connection is still good for data. */
static void
on_ut_metadata(struct pc *pc, const struct wire_msg *m)
{
    /* Before our extension handshake the peer cannot know our id: and an
     * answer now would go out before our bitfield. */
    if (!pc->bitfield_sent)
        return;
    struct ext_metadata_msg mm;
    size_t off = 0;
    int r = ext_metadata_parse(&mm, m->data, m->data_len, 0, &off);
    if (r < 0) {
        log_debug("peer/%u: ut_metadata: %s at offset %zu, ignoring",
                  pc->slot, ext_strerror(r), off);
        return;
    }
    uint32_t size = pc_md_size(pc);
    switch (mm.type) {
    case EXT_MD_REQUEST:
        if (pc->peer_md_id == 0)
            return; /* it cannot hear our answer */
        if (size && mm.piece < ext_metadata_piece_count(size) &&
            pc->out.len < PCONN_OUT_MAX / 2 && md_serve_ok(pc))
            out_md(pc, EXT_MD_DATA, mm.piece);
        else
            out_md(pc, EXT_MD_REJECT, mm.piece);
        break;
    case EXT_MD_DATA: {
        if (pc->md_asked == 0)
            return; /* nobody asked */
        pc->md_asked--;
        uint8_t *d = malloc(mm.data_len);
        if (!d) {
            pc_fail(pc, PCONN_R_NOMEM, -ENOMEM);
            return;
        }
        memcpy(d, mm.data, mm.data_len);
        struct chan_rec *rec = ev_single(pc, PCONN_EV_METADATA);
        rec->ptr = d;
        rec->ptr_free = free;
        rec->p.u32[0] = mm.piece;
        rec->p.u32[1] = mm.total_size;
        rec->p.u32[2] = mm.data_len;
        break;
    }
    case EXT_MD_REJECT:
        if (pc->md_asked == 0)
            return;
        pc->md_asked--;
        ev_md_reject(pc, mm.piece);
        break;
    default:
        break;
    }
}

static void
on_ut_pex(struct pc *pc, const struct wire_msg *m)
{
    if (pc_private(pc) || !pc->bitfield_sent)
        return; /* BEP 27, or before we offered it */
    if (pc->pex_rx_any && pc->now_ms - pc->pex_rx_ms < PCONN_PEX_RX_MIN_MS) {
        log_debug("peer/%u: ut_pex too soon, ignoring", pc->slot);
        return;
    }
    struct ext_pex_msg *x = malloc(sizeof(*x));
    if (!x) {
        pc_fail(pc, PCONN_R_NOMEM, -ENOMEM);
        return;
    }
    size_t off = 0;
    int r = ext_pex_parse(x, m->data, m->data_len, &off);
    if (r < 0) {
        free(x);
        log_debug("peer/%u: ut_pex: %s at offset %zu, ignoring", pc->slot,
                  ext_strerror(r), off);
        if (r == EXT_E_NOMEM)
            pc_fail(pc, PCONN_R_NOMEM, -ENOMEM);
        return;
    }
    pc->pex_rx_any = true;
    pc->pex_rx_ms = pc->now_ms;
    if (x->n_added + x->n_dropped == 0) {
        ext_pex_msg_free(x);
        return;
    }
    struct chan_rec *rec = ev_single(pc, PCONN_EV_PEX);
    rec->ptr = x;
    rec->ptr_free = ext_pex_msg_free;
}

static void
cmd_metadata_request(struct pc *pc, uint32_t piece)
{
    if (pc->peer_md_id == 0 || pc->md_asked >= PCONN_MD_ASKED ||
        piece >= EXT_METADATA_PIECES_MAX) {
        ev_md_reject(pc, piece); /* every request gets its answer */
        return;
    }
    out_md(pc, EXT_MD_REQUEST, piece);
    pc->md_asked++;
}

/* A magnet's metadata came: the same info-hash, now with pieces.  Our
 * requests were all dropped (piece count 0) and the peer's rejected, so
 * no queue refers to the old torrent. */
static void
cmd_set_torrent(struct pc *pc, struct pconn_torrent *t)
{
    if (!t || !t->info || pc->tor->info || pc->outq.n || pc->inq.n ||
        memcmp(t->info_hash, pc->tor->info_hash, WIRE_HASH_LEN) ||
        wire_decoder_set_torrent(&pc->dec, &t->wt) < 0) {
        log_err("peer/%u: bad set-torrent command, ignoring", pc->slot);
        return;
    }
    run_flush(pc); /* nothing (no requests), but never a run across */
    pc->tor = t;
    uint32_t nbytes = (t->wt.piece_count + 7) / 8;
    uint8_t *have = calloc(nbytes ? nbytes : 1, 1);
    if (!have) {
        pc_fail(pc, PCONN_R_NOMEM, -ENOMEM);
        return;
    }
    free(pc->have);
    pc->have = have; /* nothing announced yet: haves will be */
    pc->have_bytes = nbytes;
    af_compute(pc); /* now with a piece count; sent as haves come */
    /* BEP 10: a later handshake updates; now with metadata_size. */
    if (pc->bitfield_sent && pc->features & WIRE_F_EXTENDED)
        out_ext_handshake(pc);
}

static void
cmd_pex(struct pc *pc, const struct ext_pex_msg *x)
{
    if (!x || pc_private(pc) || pc->peer_pex_id == 0)
        return;
    int r = ext_pex_put(&pc->out, pc->peer_pex_id, x->peers, x->n_added,
                        x->peers + x->n_added, x->n_dropped);
    if (r == -EINVAL)
        log_err("peer/%u: bad pex command, ignoring", pc->slot);
    else if (r < 0)
        pc_fail(pc, r == -ENOMEM ? PCONN_R_NOMEM : PCONN_R_IO, r);
}

static void
handle_msg(struct pc *pc, const struct wire_msg *m)
{
    bool fast = pc->features & WIRE_F_FAST;
    /* Bitfield, have all and have none come first; an extension
     * handshake or port before them is tolerated. */
    bool first = !pc->got_first;
    if (m->type != WIRE_KEEPALIVE && m->type != WIRE_EXTENDED &&
        m->type != WIRE_PORT)
        pc->got_first = true;
    switch (m->type) {
    case WIRE_KEEPALIVE:
        break;
    case WIRE_CHOKE:
        if (pc->peer_choking)
            break;
        pc->peer_choking = true;
        if (!fast) { /* BEP 3: every request is gone */
            for (size_t i = 0; i < pc->outq.n; i++)
                drop_request(pc, &pc->outq.v[i]);
            pc->outq.n = 0;
        }
        ev_single(pc, PCONN_EV_CHOKE);
        break;
    case WIRE_UNCHOKE:
        if (!pc->peer_choking)
            break;
        pc->peer_choking = false;
        ev_single(pc, PCONN_EV_UNCHOKE);
        break;
    case WIRE_INTERESTED:
        ev_single(pc, PCONN_EV_INTERESTED);
        break;
    case WIRE_NOT_INTERESTED:
        ev_single(pc, PCONN_EV_NOT_INTERESTED);
        break;
    case WIRE_HAVE:
        ev_have(pc, m->index);
        break;
    case WIRE_BITFIELD: {
        if (!first) {
            protocol_error(pc, -EPROTO);
            break;
        }
        uint8_t *bits = malloc(m->data_len ? m->data_len : 1);
        if (!bits) {
            pc_fail(pc, PCONN_R_NOMEM, -ENOMEM);
            break;
        }
        memcpy(bits, m->data, m->data_len);
        struct chan_rec *rec = ev_single(pc, PCONN_EV_BITFIELD);
        rec->ptr = bits;
        rec->ptr_free = free;
        rec->p.u32[0] = m->data_len;
        break;
    }
    case WIRE_HAVE_ALL:
    case WIRE_HAVE_NONE:
        if (!fast || !first) {
            protocol_error(pc, -EPROTO);
            break;
        }
        ev_single(pc, m->type == WIRE_HAVE_ALL ? PCONN_EV_HAVE_ALL
                                               : PCONN_EV_HAVE_NONE);
        break;
    case WIRE_REQUEST:
        on_request(pc, m);
        break;
    case WIRE_CANCEL: {
        struct wire_block b = {m->index, m->begin, m->length};
        ssize_t j = blocks_find(&pc->inq, &b);
        if (j >= 0) {
            blocks_remove(&pc->inq, (size_t)j);
            if (fast) /* BEP 6: a cancel is answered */
                out_block(pc, WIRE_REJECT, &b);
        }
        break;
    }
    case WIRE_PIECE:
        on_piece(pc, m);
        break;
    case WIRE_REJECT: {
        if (!fast) {
            protocol_error(pc, -EPROTO);
            break;
        }
        struct wire_block b = {m->index, m->begin, m->length};
        ssize_t j = blocks_find(&pc->outq, &b);
        if (j >= 0) {
            blocks_remove(&pc->outq, (size_t)j);
            drop_request(pc, &b);
        }
        break;
    }
    case WIRE_ALLOWED_FAST: {
        /* BEP 6: a piece the peer lets us fetch while it chokes us (the
         * reactor decides).  Without the fast extension, or past
         * PCONN_ALLOWED_FAST_RX_MAX, ignored. */
        if (!fast || pc->tor->wt.piece_count == 0 ||
            pc->af_rx >= PCONN_ALLOWED_FAST_RX_MAX)
            break;
        pc->af_rx++;
        struct chan_rec *rec = ev_single(pc, PCONN_EV_ALLOWED_FAST);
        rec->p.u32[0] = m->index;
        rec->count = 1;
        break;
    }
    case WIRE_SUGGEST:
        /* BEP 6: a hint, ignored (see peerconn.h). */
        break;
    case WIRE_PORT: {
        struct chan_rec *rec = ev_single(pc, PCONN_EV_PORT);
        rec->p.u16[0] = m->port;
        break;
    }
    case WIRE_EXTENDED: {
        if (!(pc->features & WIRE_F_EXTENDED))
            break;
        if (m->ext_id == PCONN_EXT_UT_METADATA) {
            on_ut_metadata(pc, m);
            break;
        }
        if (m->ext_id == PCONN_EXT_UT_PEX) {
            on_ut_pex(pc, m);
            break;
        }
        if (m->ext_id != 0)
            break; /* an id we never offered: ignored */
        struct wire_ext_handshake *h = malloc(sizeof(*h));
        if (!h) {
            pc_fail(pc, PCONN_R_NOMEM, -ENOMEM);
            break;
        }
        int r = wire_ext_handshake_parse(h, m->data, m->data_len, NULL, NULL);
        if (r < 0) {
            free(h);
            protocol_error(pc, r);
            break;
        }
        /* BEP 10: an absent name keeps its id, 0 disables it. */
        if (h->present & WIRE_EXT_M_METADATA)
            pc->peer_md_id = h->ut_metadata;
        if (h->present & WIRE_EXT_M_PEX)
            pc->peer_pex_id = h->ut_pex;
        struct chan_rec *rec = ev_single(pc, PCONN_EV_EXT_HANDSHAKE);
        rec->ptr = h;
        rec->ptr_free = free;
        break;
    }
    default:
        break;
    }
}

/* The peer's handshake, from the front of the receive buffer. */
static void
handle_handshake(struct pc *pc)
{
    size_t err_off = 0;
    /* Incoming: nothing to expect until the reactor attached the
     * torrent; then the head is parsed again, against it. */
    const uint8_t *expect = pc->tor ? pc->tor->info_hash : NULL;
    struct wire_handshake h;
    int r = wire_handshake_parse(&h, pc->rbuf, pc->rlen, expect, &err_off);
    if (r == 0)
        return;
    if (r == WIRE_E_INFO_HASH) {
        pc_fail(pc, PCONN_R_INFO_HASH, r);
        return;
    }
    if (r < 0) {
        pc_fail(pc, PCONN_R_HANDSHAKE, r);
        return;
    }
    if (pc->incoming && pc->state == PC_HANDSHAKE && !pc->tor) {
        /* The head: ask the reactor for the torrent, stop reading. */
        pc->hs = h;
        pc->state = PC_ATTACH;
        struct chan_rec *rec = ev_single(pc, PCONN_EV_INFO_HASH);
        memcpy(rec->p.b, h.info_hash, WIRE_HASH_LEN);
        return;
    }
    if (r != WIRE_HANDSHAKE_LEN)
        return;
    if (!memcmp(h.peer_id, pc->cfg->peer_id, WIRE_PEER_ID_LEN)) {
        pc_fail(pc, PCONN_R_SELF, 0);
        return;
    }
    pc->hs = h;
    pc->features = pc_features(pc) & wire_reserved_features(h.reserved);
    pc->roff = WIRE_HANDSHAKE_LEN;
    pc->state = PC_ACTIVE;
    struct chan_rec *rec = ev_single(pc, PCONN_EV_HANDSHAKE);
    memcpy(rec->p.b, h.peer_id, WIRE_PEER_ID_LEN);
    rec->p.u32[5] = pc->features;
    rec->p.u32[6] = pc->crypto;
}

/* ---- MSE ------------------------------------------------------------- */

static int start_connect(struct pc *pc);
static void set_socket_options(int s);

/* The methods we offer (initiator) or allow (responder). */
static unsigned
mse_methods(const struct pc *pc)
{
    return pc->cfg->encryption == PCONN_ENC_REQUIRE ? MSE_CRYPTO_RC4
                                                    : MSE_CRYPTO_ALL;
}

/* Queue what the MSE machine has to say: bytes already in wire form. */
static void
mse_flush_out(struct pc *pc)
{
    size_t n;
    const uint8_t *o = mse_output(pc->mse, &n);
    if (n == 0)
        return;
    out_append(pc, o, n);
    mse_output_consumed(pc->mse, n);
    pc->out_enc = pc->out.len;
}

/* Drop the first n bytes of the receive buffer (handshake states parse
 * from its start). */
static void
rbuf_consume(struct pc *pc, size_t n)
{
    memmove(pc->rbuf, pc->rbuf + n, pc->rlen - n);
    pc->rlen -= n;
}

static int
mse_start(struct pc *pc, bool initiator)
{
    struct mse_params p;
    uint8_t hs[WIRE_HANDSHAKE_LEN];
    memset(&p, 0, sizeof(p));
    p.initiator = initiator;
    p.crypto = mse_methods(pc);
    /* PREFER: the peer decides; offered both, we take plaintext. */
    p.prefer_plain = pc->cfg->encryption == PCONN_ENC_PREFER;
    p.pad_max = MSE_PAD_MAX;
    p.pad_cd_max = MSE_PAD_MAX;
    if (initiator) {
        /* Our handshake rides in step 3 as the initial payload. */
        if (make_handshake(pc, hs) != WIRE_HANDSHAKE_LEN) {
            pc_fail(pc, PCONN_R_ENCRYPTION, MSE_E_PARAMS); /* not reached */
            return MSE_E_PARAMS;
        }
        memcpy(p.skey, pc->tor->info_hash, WIRE_HASH_LEN);
        p.ia = hs;
        p.ia_len = sizeof(hs);
    }
    int r = mse_new(&pc->mse, &p);
    if (r < 0) {
        pc_fail(pc, r == MSE_E_NOMEM ? PCONN_R_NOMEM : PCONN_R_ENCRYPTION, r);
        return r;
    }
    pc->state = PC_MSE;
    pc->mse_start_ms = pc->now_ms;
    mse_flush_out(pc);
    return 0;
}

/* Incoming: a plaintext handshake, or MSE? */
static void
detect(struct pc *pc)
{
    int d = mse_detect(pc->rbuf, pc->rlen);
    if (d == MSE_DETECT_MORE)
        return;
    if (d == MSE_DETECT_PLAIN) {
        if (pc->cfg->encryption == PCONN_ENC_REQUIRE) {
            log_debug("peer/%u: plaintext handshake refused (encryption "
                      "required)", pc->slot);
            pc_fail(pc, PCONN_R_ENCRYPTION, -EPROTONOSUPPORT);
            return;
        }
        pc->state = PC_HANDSHAKE;
        return;
    }
    (void)mse_start(pc, false);
}

/* The MSE handshake is complete: the rest of the buffer is the stream. */
static void
mse_done(struct pc *pc)
{
    pc->crypto = mse_selected(pc->mse);
    pc->crypt = pc->crypto == MSE_CRYPTO_RC4;
    mse_decrypt(pc->mse, pc->rbuf, pc->rbuf, pc->rlen);
    /* Responder: the initiator's initial payload (its handshake, usually)
     * comes first. */
    size_t ial;
    const uint8_t *ia = mse_ia(pc->mse, &ial);
    if (ial) {
        if (pc->rlen + ial > pc->rsize) {
            uint8_t *nb = realloc(pc->rbuf, pc->rlen + ial);
            if (!nb) {
                pc_fail(pc, PCONN_R_NOMEM, -ENOMEM);
                return;
            }
            pc->rbuf = nb;
            pc->rsize = pc->rlen + ial;
        }
        memmove(pc->rbuf + ial, pc->rbuf, pc->rlen);
        memcpy(pc->rbuf, ia, ial);
        pc->rlen += ial;
    }
    if (pc->crypt) {
        mse_trim(pc->mse);
    } else {
        mse_free(pc->mse);
        pc->mse = NULL;
    }
    pc->out_enc = pc->out.len;
    pc->state = PC_HANDSHAKE;
    if (pc->incoming)
        out_handshake(pc); /* (the initiator's went as its IA) */
}

/* Feed the MSE machine what came. */
static void
mse_step(struct pc *pc)
{
    size_t used = 0;
    int r = mse_input(pc->mse, pc->rbuf, pc->rlen, &used);
    mse_flush_out(pc);
    if (r < 0) {
        log_debug("peer/%u: MSE handshake: %s", pc->slot, mse_strerror(r));
        pc_fail(pc, r == MSE_E_NOMEM ? PCONN_R_NOMEM : PCONN_R_ENCRYPTION, r);
        return;
    }
    rbuf_consume(pc, r == MSE_MORE ? pc->rlen : used);
    if (r == MSE_MORE)
        return;
    if (r == MSE_WANT_SKEY) {
        /* Which of our torrents is it?  The reactor knows. */
        pc->state = PC_MSE_ATTACH;
        struct chan_rec *rec = ev_single(pc, PCONN_EV_MSE_HASH);
        memcpy(rec->p.b, mse_req2_seen(pc->mse), WIRE_HASH_LEN);
        return;
    }
    mse_done(pc);
}

/* PREFER, outgoing: the peer dropped the MSE handshake (or never
 * answered it).  Reconnect once in plaintext.  Returns true if the loop
 * should run again. */
static bool
mse_retry(struct pc *pc)
{
    if (pc->incoming || pc->mse_retried || pc->state != PC_MSE ||
        pc->cfg->encryption != PCONN_ENC_PREFER)
        return false;
    switch (pc->reason) {
    case PCONN_R_EOF:
    case PCONN_R_IO:
    case PCONN_R_HANDSHAKE_TIMEOUT:
    case PCONN_R_ENCRYPTION:
        break;
    default:
        return false;
    }
    log_debug("peer/%u: MSE handshake failed (%s), reconnecting in "
              "plaintext", pc->slot, pconn_reason_str(pc->reason));
    (void)close(pc->sock);
    pc->sock = -1;
    mse_free(pc->mse);
    pc->mse = NULL;
    pc->rlen = pc->roff = 0;
    buf_reset(&pc->out);
    pc->out_off = pc->out_enc = 0;
    pc->reason = PCONN_R_NONE;
    pc->detail = 0;
    pc->mse_retried = true;
    pc->now_ms = mono_us() / 1000;
    pc->start_ms = pc->last_recv_ms = pc->last_send_ms = pc->now_ms;
    int r = start_connect(pc);
    if (pc->sock >= 0)
        set_socket_options(pc->sock);
    if (r < 0) {
        pc_fail(pc, PCONN_R_CONNECT, r);
        return false;
    }
    pc->state = PC_CONNECTING;
    return true;
}

/* Decode what the buffer holds, write the blocks, make room for more. */
static void
handle_input(struct pc *pc)
{
    if (pc->state == PC_DETECT)
        detect(pc);
    if (pc->state == PC_MSE && pc->reason == PCONN_R_NONE)
        mse_step(pc);
    if (pc->state == PC_HANDSHAKE && pc->reason == PCONN_R_NONE)
        handle_handshake(pc);
    while (pc->state == PC_ACTIVE && pc->reason == PCONN_R_NONE) {
        size_t avail = pc->rlen - pc->roff;
        if (pc->skip) {
            size_t k = pc->skip < avail ? pc->skip : avail;
            pc->roff += k;
            pc->skip -= k;
            if (pc->skip)
                break;
            continue;
        }
        struct wire_msg m;
        int n = wire_decode(&pc->dec, &m, pc->rbuf + pc->roff, avail);
        if (n > 0) {
            pc->roff += (size_t)n;
            handle_msg(pc, &m);
            continue;
        }
        if (n == 0)
            break;
        if (n == WIRE_E_UNKNOWN_ID) {
            pc->skip = pc->dec.skip;
            continue;
        }
        log_debug("peer/%u: %s at offset %zu", pc->slot, wire_strerror(n),
                  pc->dec.err_offset);
        protocol_error(pc, n);
    }
    run_flush(pc); /* before the bytes move */
    if (pc->state != PC_ACTIVE)
        return;
    if (pc->roff > 0) {
        memmove(pc->rbuf, pc->rbuf + pc->roff, pc->rlen - pc->roff);
        pc->rlen -= pc->roff;
        pc->roff = 0;
    }
    if (pc->dec.need > pc->rsize) {
        uint8_t *nb = realloc(pc->rbuf, pc->dec.need);
        if (!nb) {
            pc_fail(pc, PCONN_R_NOMEM, -ENOMEM);
            return;
        }
        pc->rbuf = nb;
        pc->rsize = pc->dec.need;
    }
}

/* Grow the receive buffer (a recv filled it: blocks are streaming). */
static void
rbuf_grow(struct pc *pc)
{
    if (pc->rsize >= PCONN_RBUF_MAX)
        return;
    size_t ns = pc->rsize * 2;
    if (ns > PCONN_RBUF_MAX)
        ns = PCONN_RBUF_MAX;
    uint8_t *nb = realloc(pc->rbuf, ns);
    if (nb) {
        pc->rbuf = nb;
        pc->rsize = ns;
    }
}

static void
do_recv(struct pc *pc)
{
    for (int round = 0; round < PCONN_RECV_ROUNDS; round++) {
        if (pc->reason != PCONN_R_NONE || pc->state == PC_ATTACH ||
            pc->state == PC_MSE_ATTACH)
            return;
        size_t space = pc->rsize - pc->rlen;
        if (space == 0) {
            rbuf_grow(pc);
            space = pc->rsize - pc->rlen;
            if (space == 0)
                return;
        }
        size_t want = space;
        if (pc->state == PC_ACTIVE) {
            int64_t now_us = mono_us();
            want = (size_t)rate_take2(pc->tor->down, pc->cfg->down_global,
                                      space, now_us);
            if (want == 0) {
                int64_t d1 = rate_bucket_delay_us(pc->tor->down,
                                                  WIRE_BLOCK_SIZE, now_us);
                int64_t d2 = rate_bucket_delay_us(pc->cfg->down_global,
                                                  WIRE_BLOCK_SIZE, now_us);
                int64_t d = d1 > d2 ? d1 : d2;
                pc->rate_wait_recv = true;
                int64_t until = pc->now_ms + d / 1000 + 1;
                if (pc->rate_until_ms == 0 || until < pc->rate_until_ms)
                    pc->rate_until_ms = until;
                return;
            }
        }
        ssize_t k = recv(pc->sock, pc->rbuf + pc->rlen, want, MSG_DONTWAIT);
        int err = k < 0 ? errno : 0;
        if (pc->state == PC_ACTIVE && (size_t)(k > 0 ? k : 0) < want) {
            /* Tokens not used go back. */
            uint64_t back = want - (size_t)(k > 0 ? k : 0);
            rate_bucket_give(pc->tor->down, back);
            rate_bucket_give(pc->cfg->down_global, back);
        }
        if (err == EINTR)
            continue;
        if (err == EAGAIN || err == EWOULDBLOCK)
            return;
        if (err) {
            pc_fail(pc, PCONN_R_IO, -err);
            return;
        }
        if (k == 0) {
            pc_fail(pc, PCONN_R_EOF, 0);
            return;
        }
        pc->last_recv_ms = pc->now_ms;
        if (pc->crypt) /* decrypted in place, once, as it arrives */
            mse_decrypt(pc->mse, pc->rbuf + pc->rlen, pc->rbuf + pc->rlen,
                        (size_t)k);
        pc->rlen += (size_t)k;
        bool filled = (size_t)k == space;
        handle_input(pc);
        if (filled && pc->state == PC_ACTIVE)
            rbuf_grow(pc);
        else if ((size_t)k < want)
            return; /* drained */
    }
}

/* ---- connecting ------------------------------------------------------ */

static int
start_connect(struct pc *pc)
{
    int s = socket(pc->addr.ss_family,
                   SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s < 0)
        return -errno;
    pc->sock = s;
    if (pc->cfg->bind_len > 0 &&
        pc->cfg->bind_addr.ss_family == pc->addr.ss_family) {
        int one = 1;
        (void)setsockopt(s, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one,
                         sizeof(one));
        if (bind(s, (const struct sockaddr *)&pc->cfg->bind_addr,
                 pc->cfg->bind_len) < 0)
            return -errno;
    }
    if (connect(s, (const struct sockaddr *)&pc->addr, pc->addr_len) < 0 &&
        errno != EINPROGRESS)
        return -errno;
    return 0;
}

static void
finish_connect(struct pc *pc)
{
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(pc->sock, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err == EINPROGRESS || err == EALREADY)
        return;
    if (err) {
        pc_fail(pc, PCONN_R_CONNECT, -err);
        return;
    }
    pc->last_recv_ms = pc->now_ms;
    if (pc->cfg->encryption != PCONN_ENC_OFF && !pc->mse_retried) {
        (void)mse_start(pc, true);
        return;
    }
    pc->state = PC_HANDSHAKE;
    out_handshake(pc);
}

/* ---- the loop -------------------------------------------------------- */

static void
set_socket_options(int s)
{
    int one = 1;
    (void)setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    int fl = fcntl(s, F_GETFL);
    if (fl >= 0 && !(fl & O_NONBLOCK))
        (void)fcntl(s, F_SETFL, fl | O_NONBLOCK);
}

static int64_t
min_deadline(int64_t a, int64_t b)
{
    if (a == 0)
        return b;
    if (b == 0)
        return a;
    return a < b ? a : b;
}

/* The next protocol deadline (ms, 0: none), acting on those past. */
static int64_t
deadlines(struct pc *pc)
{
    const struct pconn_config *c = pc->cfg;
    int64_t now = pc->now_ms;
    int64_t next = 0;
    if (pc->state == PC_CONNECTING) {
        int64_t d = pc->start_ms +
                    cfg_ms(c->connect_timeout_ms, PCONN_CONNECT_TIMEOUT_MS);
        if (now >= d)
            pc_fail(pc, PCONN_R_CONNECT_TIMEOUT, -ETIMEDOUT);
        return d;
    }
    if (pc->state != PC_ACTIVE) {
        int64_t d = pc->start_ms + cfg_ms(c->handshake_timeout_ms,
                                          PCONN_HANDSHAKE_TIMEOUT_MS);
        if (pc->state == PC_MSE || pc->state == PC_MSE_ATTACH)
            d = min_deadline(d, pc->mse_start_ms + PCONN_MSE_TIMEOUT_MS);
        if (now >= d)
            pc_fail(pc, PCONN_R_HANDSHAKE_TIMEOUT, -ETIMEDOUT);
        return d;
    }
    int64_t idle = pc->last_recv_ms +
                   cfg_ms(c->inactivity_ms, PCONN_INACTIVITY_MS);
    if (now >= idle)
        pc_fail(pc, PCONN_R_TIMEOUT, -ETIMEDOUT);
    next = min_deadline(next, idle);
    if (pc->bitfield_sent) {
        int64_t ka = pc->last_send_ms + cfg_ms(c->keepalive_ms,
                                               PCONN_KEEPALIVE_MS);
        if (now >= ka) {
            /* Nothing sent for a period: a keep-alive, unless bytes are
             * already waiting for the socket (they will do). */
            if (!pc->piece_active && pc->out_off == pc->out.len) {
                uint8_t m[WIRE_KEEPALIVE_LEN];
                if (wire_put_keepalive(m, sizeof(m)) > 0)
                    out_append(pc, m, sizeof(m));
            }
            pc->last_send_ms = now; /* once per period, never a spin */
            ka = now + cfg_ms(c->keepalive_ms, PCONN_KEEPALIVE_MS);
        }
        next = min_deadline(next, ka);
    }
    if (pc->up_bytes) {
        int64_t d = pc->up_since_ms + PCONN_UPLOAD_FLUSH_MS;
        if (now >= d)
            ev_uploaded(pc);
        else
            next = min_deadline(next, d);
    }
    if (pc->rate_until_ms) {
        if (now >= pc->rate_until_ms) {
            pc->rate_until_ms = 0;
            pc->rate_wait_recv = false;
            pc->rate_wait_send = false;
        } else {
            next = min_deadline(next, pc->rate_until_ms);
        }
    }
    return next;
}

static void
pc_loop(struct pc *pc)
{
    while (pc->reason == PCONN_R_NONE) {
        pc->now_ms = mono_us() / 1000;
        int64_t next = deadlines(pc);
        if (pc->reason != PCONN_R_NONE)
            break;
        /* Publish before sleeping: the reactor decides on fresh news. */
        ev_batches(pc);
        if (pc->n_ev == 0 && pc->cmds_read - pc->ack_sent >= CHAN_ACK_EVERY)
            (void)ev_new(pc, PCONN_EV_ACK);
        ev_flush(pc);
        if (pc->reason != PCONN_R_NONE)
            break;

        struct pollfd pfd[2] = {
            {.fd = pc->sock, .events = 0},
            {.fd = pc->cmd_rd, .events = POLLIN},
        };
        if (pc->state != PC_ATTACH && pc->state != PC_MSE_ATTACH &&
            pc->state != PC_CONNECTING && !pc->rate_wait_recv)
            pfd[0].events |= POLLIN;
        if (want_send(pc))
            pfd[0].events |= POLLOUT;
        if (!pfd[0].events)
            pfd[0].fd = -1; /* or POLLHUP would wake us again and again */
        int timeout = -1;
        if (next) {
            int64_t d = next - pc->now_ms;
            timeout = d < 0 ? 0 : d > 3600000 ? 3600000 : (int)d;
        }
        int n = poll(pfd, 2, timeout);
        if (n < 0 && errno != EINTR) {
            pc_fail(pc, PCONN_R_IO, -errno);
            break;
        }
        pc->now_ms = mono_us() / 1000;
        if (n <= 0)
            continue;
        if (pfd[1].revents)
            read_commands(pc);
        if (pc->reason != PCONN_R_NONE)
            break;
        short re = pfd[0].revents;
        if (pc->state == PC_CONNECTING && re) {
            finish_connect(pc);
            continue;
        }
        if (re & (POLLIN | POLLERR | POLLHUP))
            do_recv(pc);
        if (pc->reason == PCONN_R_NONE &&
            (re & POLLOUT || pc->out.len > pc->out_off))
            do_send(pc);
    }
}

static void
pc_free(struct pc *pc)
{
    if (pc->sock >= 0)
        (void)close(pc->sock);
    if (pc->evt_wr >= 0)
        (void)close(pc->evt_wr);
    free(pc->rbuf);
    buf_release(&pc->out);
    free(pc->outq.v);
    free(pc->inq.v);
    free(pc->done.v);
    free(pc->dropped.v);
    free(pc->have);
    mse_free(pc->mse);
    free(pc->pbuf);
    free(pc);
}

static void *
pc_main(void *arg)
{
    struct pc *pc = arg;
    char name[16];
    snprintf(name, sizeof(name), "peer/%u", pc->slot);
    (void)pthread_setname_np(pthread_self(), name);

    pc->now_ms = mono_us() / 1000;
    pc->start_ms = pc->now_ms;
    pc->last_recv_ms = pc->now_ms;
    pc->last_send_ms = pc->now_ms;
    if (pc->sock < 0) {
        int r = start_connect(pc);
        if (r < 0)
            pc_fail(pc, PCONN_R_CONNECT, r);
        else
            pc->state = PC_CONNECTING;
        if (pc->sock >= 0)
            set_socket_options(pc->sock);
    } else {
        set_socket_options(pc->sock);
        pc->state = pc->cfg->encryption == PCONN_ENC_OFF ? PC_HANDSHAKE
                                                         : PC_DETECT;
    }
    while (pc->reason == PCONN_R_NONE) {
        pc_loop(pc);
        if (!mse_retry(pc))
            break;
    }

    /* What is still gathered goes out, then the last word. */
    ev_batches(pc);
    ev_uploaded(pc);
    struct chan_rec *rec = ev_new(pc, PCONN_EV_CLOSED);
    rec->p.u32[0] = (uint32_t)pc->reason;
    rec->p.u32[1] = (uint32_t)pc->detail;
    ev_flush(pc);
    pc_free(pc); /* closes the event pipe: the reactor sees the end */
    return NULL;
}

int
pconn_spawn(pthread_t *ret, const struct pconn_args *args)
{
    if (!args->cfg || args->evt_wr < 0 || args->cmd_rd < 0 ||
        (args->sock < 0 && !args->tor))
        return -EINVAL;
    struct pc *pc = calloc(1, sizeof(*pc));
    if (!pc)
        return -ENOMEM;
    pc->cfg = args->cfg;
    pc->tor = args->tor;
    pc->slot = args->slot;
    pc->gen = args->gen;
    pc->sock = args->sock;
    pc->cmd_rd = args->cmd_rd;
    pc->evt_wr = args->evt_wr;
    pc->incoming = args->sock >= 0;
    /* A peer known to drop MSE: straight to plaintext, as if the
     * reconnect were made (so none is tried either). */
    pc->mse_retried = !pc->incoming && args->plaintext &&
                      args->cfg->encryption == PCONN_ENC_PREFER;
    pc->addr = args->addr;
    pc->addr_len = args->addr_len;
    pc->am_choking = true;
    pc->peer_choking = true;
    buf_init(&pc->out, PCONN_OUT_MAX);
    int r = wire_decoder_init(&pc->dec, NULL, pc->tor ? &pc->tor->wt : NULL);
    pc->rsize = PCONN_RBUF_INIT;
    pc->rbuf = malloc(pc->rsize);
    if (r < 0 || !pc->rbuf) {
        free(pc->rbuf);
        free(pc);
        return r < 0 ? r : -ENOMEM;
    }

    pthread_attr_t attr;
    r = pthread_attr_init(&attr);
    if (r == 0)
        r = pthread_attr_setstacksize(&attr, PCONN_STACK_SIZE);
    if (r != 0) {
        free(pc->rbuf);
        free(pc);
        return -r;
    }
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    r = pthread_create(ret, &attr, pc_main, pc);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (r != 0) {
        free(pc->rbuf);
        free(pc);
        return -r;
    }
    return 0;
}
