/* peer — the reactor's half of the peer connections; see peer.h.
 *
 * A peer record lives from peer_connect()/peer_accept() until its thread
 * has ended (end of file on the event pipe), has been joined, and
 * on_closed has returned.  Ending is in two steps so that no record is
 * freed inside its own callback chain: the ev_io that sees the end of
 * file only moves the record to the table's dead list; an ev_prepare,
 * which libev runs before it next waits, joins the thread, drains both
 * pipes (freeing what records still own), calls on_closed and frees.
 */
#include "daemon/peer.h"

#include <assert.h>
#include <errno.h>
#include <ev.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/mse.h"

struct peer {
    struct peer_table *t;          /* borrowed: the table outlives it */
    uint32_t slot, gen;
    pthread_t thread;
    int evt_rd;                    /* owned: events, O_NONBLOCK */
    int cmd_rd;                    /* owned: the thread reads it; we drain
                                    * and close it after the join */
    int cmd_wr;                    /* owned: commands, O_NONBLOCK */
    struct chan_tx tx;
    ev_io io;
    struct pconn_torrent *tor;     /* owned reference, or NULL */
    struct sockaddr_storage addr;
    socklen_t addr_len;
    bool incoming;
    bool handshaked;               /* on_handshake was called */
    unsigned crypto;               /* enum pconn_crypto, from then on */
    bool bitfield_sent;
    bool closing;                  /* no callback but on_closed */
    bool ended;                    /* the event pipe is at its end */
    enum pconn_reason reason;
    int detail;
    void *data;                    /* the engine's */
    struct peer *next_dead;
    uint32_t *haves;               /* owned: peer_send_have() pieces not
                                    * yet sent (coalesced per iteration) */
    size_t n_haves, cap_haves;
    bool in_have_list;
    struct peer *next_have;
    struct pconn_torrent *old_tor; /* owned reference: the magnet's, kept
                                    * after peer_set_torrent() while the
                                    * thread may read it */
};

struct peer_table {
    struct ev_loop *loop;          /* borrowed */
    struct pconn_config cfg;       /* read by every thread: immutable */
    struct peer_callbacks cbs;
    void *ud;
    struct peer **slots;           /* owned array; the peers too */
    uint32_t *gens;                /* per slot */
    uint32_t *free_slots;          /* a stack of free slot indices */
    size_t n_free;
    size_t max;
    size_t count;
    struct peer *dead;             /* ended, to reap */
    struct peer *have_list;        /* peers with haves to send */
    ev_prepare reap;               /* the safe point: haves, reaping */
    pthread_t owner;               /* the reactor thread */
};

#define REACTOR_ONLY(t) assert(pthread_equal(pthread_self(), (t)->owner))

static void reap_cb(struct ev_loop *loop, ev_prepare *w, int revents);
static void events_cb(struct ev_loop *loop, ev_io *w, int revents);

int
peer_table_new(struct peer_table **ret, struct ev_loop *loop,
               const struct pconn_config *cfg,
               const struct peer_callbacks *cbs, void *ud, size_t max_peers)
{
    if (!loop || !cfg || !cbs || max_peers == 0 || max_peers > UINT32_MAX - 1)
        return -EINVAL;
    struct peer_table *t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    t->slots = calloc(max_peers, sizeof(*t->slots));
    t->gens = calloc(max_peers, sizeof(*t->gens));
    t->free_slots = calloc(max_peers, sizeof(*t->free_slots));
    if (!t->slots || !t->gens || !t->free_slots) {
        free(t->slots);
        free(t->gens);
        free(t->free_slots);
        free(t);
        return -ENOMEM;
    }
    t->loop = loop;
    t->cfg = *cfg;
    t->cbs = *cbs;
    t->ud = ud;
    t->max = max_peers;
    for (size_t i = 0; i < max_peers; i++) /* slot 0 on top */
        t->free_slots[i] = (uint32_t)(max_peers - 1 - i);
    t->n_free = max_peers;
    t->owner = pthread_self();
    /* Load OpenSSL's RC4 (a provider: dlopen, config) here, once, rather
     * than on a peer thread's small stack at its first MSE handshake. */
    if (cfg->encryption != PCONN_ENC_OFF)
        (void)mse_rc4_openssl();
    ev_prepare_init(&t->reap, reap_cb);
    t->reap.data = t;
    *ret = t;
    return 0;
}

size_t
peer_table_count(const struct peer_table *t)
{
    return t->count;
}

/* ---- records --------------------------------------------------------- */

static void
peer_free(struct peer *p)
{
    struct peer_table *t = p->t;
    p->cmd_wr = chan_close(p->cmd_wr);
    if (p->cmd_rd >= 0)
        (void)chan_drain(p->cmd_rd); /* commands the thread never read */
    p->cmd_rd = chan_close(p->cmd_rd);
    if (p->evt_rd >= 0)
        (void)chan_drain(p->evt_rd);
    p->evt_rd = chan_close(p->evt_rd);
    pconn_torrent_unref(p->tor);
    pconn_torrent_unref(p->old_tor);
    free(p->haves);
    uint32_t i = p->slot - 1;
    t->slots[i] = NULL;
    t->free_slots[t->n_free++] = i;
    t->count--;
    free(p);
}

/* The thread has ended: join it, tell the engine, free. */
static void
peer_finish(struct peer *p)
{
    struct peer_table *t = p->t;
    (void)pthread_join(p->thread, NULL);
    enum pconn_reason reason = p->reason ? p->reason : PCONN_R_IO;
    if (t->cbs.on_closed)
        t->cbs.on_closed(t->ud, p, reason, p->detail);
    peer_free(p);
}

static int send_cmd(struct peer *p, struct chan_rec *rec);

/* Send the haves gathered since the last iteration: one record per peer
 * however many pieces completed (a burst of hash results must not use
 * up a peer's command credit). */
static void
flush_haves(struct peer_table *t)
{
    while (t->have_list) {
        struct peer *p = t->have_list;
        t->have_list = p->next_have;
        p->next_have = NULL;
        p->in_have_list = false;
        size_t n = p->n_haves;
        p->n_haves = 0;
        if (p->closing || n == 0)
            continue;
        struct chan_rec rec;
        memset(&rec, 0, sizeof(rec));
        rec.type = PCONN_CMD_HAVE;
        if (pconn_rec_set_u32(&rec, p->haves, n) < 0) {
            peer_close(p);
            p->reason = PCONN_R_NOMEM;
            p->detail = -ENOMEM;
            continue;
        }
        (void)send_cmd(p, &rec);
    }
}

/* The safe point, before libev waits: send coalesced haves, then reap
 * the peers whose threads ended (never inside their own callbacks). */
static void
reap_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)revents;
    struct peer_table *t = w->data;
    ev_prepare_stop(loop, w);
    flush_haves(t);
    while (t->dead) {
        struct peer *p = t->dead;
        t->dead = p->next_dead;
        peer_finish(p);
    }
}

/* Stop giving commands: the thread sees the end of its command pipe and
 * ends (after the CLOSE record, if it got one). */
static void
peer_shut(struct peer *p, enum pconn_reason reason, int detail)
{
    if (!p->closing) {
        p->closing = true;
        p->reason = reason;
        p->detail = detail;
    }
    p->cmd_wr = chan_close(p->cmd_wr);
    p->tx.fd = -1;
}

void
peer_close(struct peer *p)
{
    REACTOR_ONLY(p->t);
    if (p->closing)
        return;
    if (p->cmd_wr >= 0) {
        struct chan_rec rec;
        memset(&rec, 0, sizeof(rec));
        rec.type = PCONN_CMD_CLOSE;
        rec.slot = p->slot;
        rec.gen = p->gen;
        (void)chan_send(&p->tx, &rec); /* the end of the pipe says it too */
    }
    peer_shut(p, PCONN_R_CLOSED, 0);
}

/* Write one command; rec's pointer is freed on failure. */
static int
send_cmd(struct peer *p, struct chan_rec *rec)
{
    REACTOR_ONLY(p->t);
    rec->slot = p->slot;
    rec->gen = p->gen;
    if (p->closing) {
        chan_rec_release(rec);
        return -ESHUTDOWN;
    }
    int r = chan_send(&p->tx, rec);
    if (r < 0) {
        chan_rec_release(rec);
        log_debug("peer/%u: command not taken (%s), dropping the peer",
                  p->slot, strerror(-r));
        peer_shut(p, PCONN_R_STUCK, r);
        return -ECONNRESET;
    }
    return 0;
}

static int
spawn(struct peer_table *t, struct pconn_torrent *tor, int sock,
      const struct sockaddr *addr, socklen_t addr_len, unsigned flags,
      struct peer **ret)
{
    REACTOR_ONLY(t);
    if (addr_len > sizeof(struct sockaddr_storage) || !addr)
        return -EINVAL;
    if (t->n_free == 0)
        return -EMFILE;
    struct peer *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->evt_rd = p->cmd_rd = p->cmd_wr = -1;
    int evt[2], cmd[2];
    int r = chan_pipe(evt, true, false);
    if (r < 0) {
        free(p);
        return r;
    }
    r = chan_pipe(cmd, true, true);
    if (r < 0) {
        (void)close(evt[0]);
        (void)close(evt[1]);
        free(p);
        return r;
    }
    uint32_t i = t->free_slots[t->n_free - 1];
    p->t = t;
    p->slot = i + 1;
    p->gen = ++t->gens[i];
    p->evt_rd = evt[0];
    p->cmd_rd = cmd[0];
    p->cmd_wr = cmd[1];
    chan_tx_init(&p->tx, p->cmd_wr);
    memcpy(&p->addr, addr, addr_len);
    p->addr_len = addr_len;
    p->incoming = sock >= 0;
    p->tor = tor ? pconn_torrent_ref(tor) : NULL;

    struct pconn_args a;
    memset(&a, 0, sizeof(a));
    a.slot = p->slot;
    a.gen = p->gen;
    a.sock = sock;
    a.addr = p->addr;
    a.addr_len = addr_len;
    a.tor = p->tor;
    a.plaintext = (flags & PEER_CONNECT_PLAINTEXT) != 0;
    a.cfg = &t->cfg;
    a.cmd_rd = p->cmd_rd;
    a.evt_wr = evt[1];
    r = pconn_spawn(&p->thread, &a);
    if (r < 0) {
        (void)close(evt[1]);
        (void)close(evt[0]);
        (void)close(cmd[0]);
        (void)close(cmd[1]);
        pconn_torrent_unref(p->tor);
        free(p);
        return r;
    }
    /* evt[1] is the thread's now: its close is the end of file we wait
     * for. */
    t->n_free--;
    t->slots[i] = p;
    t->count++;
    ev_io_init(&p->io, events_cb, p->evt_rd, EV_READ);
    p->io.data = p;
    ev_io_start(t->loop, &p->io);
    if (ret)
        *ret = p;
    return 0;
}

int
peer_connect(struct peer_table *t, struct pconn_torrent *tor,
             const struct sockaddr *addr, socklen_t addr_len,
             struct peer **ret)
{
    return peer_connect_with_flags(t, tor, addr, addr_len, 0, ret);
}

int
peer_connect_with_flags(struct peer_table *t, struct pconn_torrent *tor,
                        const struct sockaddr *addr, socklen_t addr_len,
                        unsigned flags, struct peer **ret)
{
    if (!tor)
        return -EINVAL;
    return spawn(t, tor, -1, addr, addr_len, flags, ret);
}

int
peer_accept(struct peer_table *t, int fd, const struct sockaddr *addr,
            socklen_t addr_len, struct peer **ret)
{
    if (fd < 0)
        return -EBADF;
    int r = spawn(t, NULL, fd, addr, addr_len, 0, ret);
    if (r < 0)
        (void)close(fd);
    return r;
}

/* ---- events ---------------------------------------------------------- */

/* PCONN_EV_INFO_HASH, or PCONN_EV_MSE_HASH (mse): the thread asks which
 * torrent the incoming peer wants. */
static void
on_info_hash(struct peer *p, const struct chan_rec *rec, bool mse)
{
    struct peer_table *t = p->t;
    struct pconn_torrent *tor = NULL;
    if (!p->incoming || p->tor) {
        log_err("peer/%u: unexpected info-hash record, ignoring", p->slot);
        return;
    }
    if (mse && t->cbs.on_mse_hash)
        tor = t->cbs.on_mse_hash(t->ud, p, rec->p.b);
    else if (!mse && t->cbs.on_info_hash)
        tor = t->cbs.on_info_hash(t->ud, p, rec->p.b);
    if (p->closing) { /* the engine closed it meanwhile */
        pconn_torrent_unref(tor);
        return;
    }
    if (tor && memcmp(mse ? tor->mse_req2 : tor->info_hash, rec->p.b,
                      WIRE_HASH_LEN)) {
        log_err("peer/%u: engine answered with another torrent", p->slot);
        pconn_torrent_unref(tor);
        tor = NULL;
    }
    if (!tor) {
        peer_close(p);
        p->reason = PCONN_R_UNKNOWN_TORRENT;
        return;
    }
    p->tor = tor; /* the reference is the peer's now */
    struct chan_rec cmd;
    memset(&cmd, 0, sizeof(cmd));
    cmd.type = PCONN_CMD_ATTACH;
    cmd.ptr = tor; /* borrowed by the thread: ptr_free stays NULL */
    (void)send_cmd(p, &cmd);
}

static void
dispatch(struct peer *p, struct chan_rec *rec)
{
    struct peer_table *t = p->t;
    const struct peer_callbacks *cb = &t->cbs;
    void *ud = t->ud;

    if (rec->type == PCONN_EV_CLOSED) {
        if (!p->closing) {
            p->closing = true;
            p->reason = (enum pconn_reason)rec->p.u32[0];
            p->detail = (int)rec->p.u32[1];
        }
        return;
    }
    if (p->closing)
        return;
    switch (rec->type) {
    case PCONN_EV_ACK:
        break;
    case PCONN_EV_INFO_HASH:
        on_info_hash(p, rec, false);
        break;
    case PCONN_EV_MSE_HASH:
        on_info_hash(p, rec, true);
        break;
    case PCONN_EV_HANDSHAKE:
        p->handshaked = true;
        p->crypto = rec->p.u32[6];
        if (cb->on_handshake)
            cb->on_handshake(ud, p, rec->p.b, rec->p.u32[5]);
        if (!p->closing && !p->bitfield_sent)
            (void)peer_send_bitfield(p, NULL, 0);
        break;
    case PCONN_EV_EXT_HANDSHAKE:
        if (cb->on_ext_handshake && rec->ptr)
            cb->on_ext_handshake(ud, p, rec->ptr);
        break;
    case PCONN_EV_BITFIELD:
        if (cb->on_bitfield && rec->ptr) {
            uint8_t *bits = rec->ptr;
            rec->ptr = NULL; /* the callee's now */
            cb->on_bitfield(ud, p, bits, rec->p.u32[0]);
        }
        break;
    case PCONN_EV_HAVE:
        if (cb->on_have)
            cb->on_have(ud, p, pconn_rec_u32(rec), rec->count);
        break;
    case PCONN_EV_HAVE_ALL:
        if (cb->on_have_all)
            cb->on_have_all(ud, p);
        break;
    case PCONN_EV_HAVE_NONE:
        if (cb->on_have_none)
            cb->on_have_none(ud, p);
        break;
    case PCONN_EV_CHOKE:
        if (cb->on_choke)
            cb->on_choke(ud, p);
        break;
    case PCONN_EV_UNCHOKE:
        if (cb->on_unchoke)
            cb->on_unchoke(ud, p);
        break;
    case PCONN_EV_INTERESTED:
        if (cb->on_interested)
            cb->on_interested(ud, p);
        break;
    case PCONN_EV_NOT_INTERESTED:
        if (cb->on_not_interested)
            cb->on_not_interested(ud, p);
        break;
    case PCONN_EV_BLOCKS:
        if (cb->on_blocks_done)
            cb->on_blocks_done(ud, p, pconn_rec_blocks(rec), rec->count);
        break;
    case PCONN_EV_DROPPED:
        if (cb->on_dropped)
            cb->on_dropped(ud, p, pconn_rec_blocks(rec), rec->count);
        break;
    case PCONN_EV_UPLOADED:
        if (cb->on_uploaded)
            cb->on_uploaded(ud, p, rec->p.u64[0], rec->p.u32[2]);
        break;
    case PCONN_EV_PORT:
        if (cb->on_port)
            cb->on_port(ud, p, rec->p.u16[0]);
        break;
    case PCONN_EV_METADATA:
        if (cb->on_metadata_data && rec->ptr) {
            uint8_t *data = rec->ptr;
            rec->ptr = NULL; /* the callee's now */
            cb->on_metadata_data(ud, p, rec->p.u32[0], rec->p.u32[1], data,
                                 rec->p.u32[2]);
        }
        break;
    case PCONN_EV_METADATA_REJECT:
        if (cb->on_metadata_reject)
            cb->on_metadata_reject(ud, p, rec->p.u32[0]);
        break;
    case PCONN_EV_PEX:
        if (cb->on_pex && rec->ptr) {
            const struct ext_pex_msg *x = rec->ptr;
            cb->on_pex(ud, p, x->peers, x->n_added, x->peers + x->n_added,
                       x->n_dropped);
        }
        break;
    case PCONN_EV_ALLOWED_FAST:
        if (cb->on_allowed_fast)
            cb->on_allowed_fast(ud, p, pconn_rec_u32(rec), rec->count);
        break;
    default:
        log_err("peer/%u: unknown event %u, ignoring", p->slot, rec->type);
        break;
    }
}

static void
mark_ended(struct peer *p)
{
    struct peer_table *t = p->t;
    ev_io_stop(t->loop, &p->io);
    p->ended = true;
    p->closing = true;
    p->next_dead = t->dead;
    t->dead = p;
    ev_prepare_start(t->loop, &t->reap);
}

static void
events_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct peer *p = w->data;
    struct chan_rec recs[PEER_BATCH];
    ssize_t n = chan_read(p->evt_rd, recs, PEER_BATCH);
    if (n == -EAGAIN)
        return;
    if (n == 0) {
        mark_ended(p);
        return;
    }
    if (n < 0) {
        /* Our own thread wrote something we cannot read: a bug. */
        log_err("peer/%u: cannot read events: %s", p->slot, strerror((int)-n));
        assert(n >= 0); /* debug builds stop here */
        peer_shut(p, PCONN_R_IO, (int)n);
        return;
    }
    for (ssize_t i = 0; i < n; i++) {
        struct chan_rec *rec = &recs[i];
        if (chan_tx_ack(&p->tx, rec->ack) < 0)
            log_err("peer/%u: thread acknowledged more than was sent",
                    p->slot);
        if (chan_rec_current(rec, p->slot, p->gen))
            dispatch(p, rec);
        chan_rec_release(rec);
    }
}

/* ---- commands -------------------------------------------------------- */

static int
simple_cmd(struct peer *p, uint16_t type)
{
    if (p->closing)
        return -ESHUTDOWN;
    if (!p->handshaked)
        return -EAGAIN;
    struct chan_rec rec;
    memset(&rec, 0, sizeof(rec));
    rec.type = type;
    return send_cmd(p, &rec);
}

int
peer_send_bitfield(struct peer *p, const uint8_t *bits, uint32_t nbytes)
{
    if (p->closing)
        return -ESHUTDOWN;
    if (!p->handshaked)
        return -EAGAIN;
    struct chan_rec rec;
    memset(&rec, 0, sizeof(rec));
    rec.type = PCONN_CMD_BITFIELD;
    if (bits && nbytes) {
        uint8_t *copy = malloc(nbytes);
        if (!copy)
            return -ENOMEM;
        memcpy(copy, bits, nbytes);
        rec.ptr = copy;
        rec.ptr_free = free;
        rec.p.u32[0] = nbytes;
    }
    p->bitfield_sent = true;
    return send_cmd(p, &rec);
}

int
peer_send_have(struct peer *p, const uint32_t *pieces, size_t n)
{
    REACTOR_ONLY(p->t);
    if (p->closing)
        return -ESHUTDOWN;
    if (!p->handshaked)
        return -EAGAIN;
    if (n == 0)
        return 0;
    if (n > UINT16_MAX - p->n_haves)
        return -EINVAL;
    if (p->n_haves + n > p->cap_haves) {
        size_t nc = p->cap_haves ? p->cap_haves : 16;
        while (nc < p->n_haves + n)
            nc *= 2;
        uint32_t *v = realloc(p->haves, nc * sizeof(*v));
        if (!v)
            return -ENOMEM;
        p->haves = v;
        p->cap_haves = nc;
    }
    memcpy(p->haves + p->n_haves, pieces, n * sizeof(*pieces));
    p->n_haves += n;
    if (!p->in_have_list) {
        p->in_have_list = true;
        p->next_have = p->t->have_list;
        p->t->have_list = p;
        ev_prepare_start(p->t->loop, &p->t->reap);
    }
    return 0;
}

static int
blocks_cmd(struct peer *p, uint16_t type, const struct wire_block *b,
           size_t n)
{
    if (p->closing)
        return -ESHUTDOWN;
    if (!p->handshaked)
        return -EAGAIN;
    if (n == 0)
        return 0;
    /* More than one record holds: split (the credit is per record). */
    while (n > 0) {
        size_t k = n > UINT16_MAX ? UINT16_MAX : n;
        struct chan_rec rec;
        memset(&rec, 0, sizeof(rec));
        rec.type = type;
        int r = pconn_rec_set_blocks(&rec, b, k);
        if (r < 0)
            return r;
        r = send_cmd(p, &rec);
        if (r < 0)
            return r;
        b += k;
        n -= k;
    }
    return 0;
}

int
peer_choke(struct peer *p)
{
    return simple_cmd(p, PCONN_CMD_CHOKE);
}

int
peer_unchoke(struct peer *p)
{
    return simple_cmd(p, PCONN_CMD_UNCHOKE);
}

int
peer_interested(struct peer *p)
{
    return simple_cmd(p, PCONN_CMD_INTERESTED);
}

int
peer_not_interested(struct peer *p)
{
    return simple_cmd(p, PCONN_CMD_NOT_INTERESTED);
}

int
peer_request(struct peer *p, const struct wire_block *b, size_t n)
{
    return blocks_cmd(p, PCONN_CMD_REQUEST, b, n);
}

int
peer_cancel(struct peer *p, const struct wire_block *b, size_t n)
{
    return blocks_cmd(p, PCONN_CMD_CANCEL, b, n);
}

int
peer_reject(struct peer *p, const struct wire_block *b, size_t n)
{
    return blocks_cmd(p, PCONN_CMD_REJECT, b, n);
}

int
peer_send_metadata_request(struct peer *p, uint32_t piece)
{
    if (p->closing)
        return -ESHUTDOWN;
    if (!p->handshaked)
        return -EAGAIN;
    struct chan_rec rec;
    memset(&rec, 0, sizeof(rec));
    rec.type = PCONN_CMD_METADATA_REQUEST;
    rec.p.u32[0] = piece;
    return send_cmd(p, &rec);
}

int
peer_set_torrent(struct peer *p, struct pconn_torrent *tor)
{
    if (p->closing)
        return -ESHUTDOWN;
    if (!p->handshaked)
        return -EAGAIN;
    if (!tor || !tor->info || !p->tor || p->tor->info || p->old_tor ||
        memcmp(tor->info_hash, p->tor->info_hash, WIRE_HASH_LEN))
        return -EINVAL;
    struct chan_rec rec;
    memset(&rec, 0, sizeof(rec));
    rec.type = PCONN_CMD_SET_TORRENT;
    rec.ptr = tor; /* borrowed by the thread: ptr_free stays NULL */
    int r = send_cmd(p, &rec);
    if (r < 0)
        return r;
    p->old_tor = p->tor;
    p->tor = pconn_torrent_ref(tor);
    return 0;
}

int
peer_send_pex(struct peer *p, const struct ext_pex_peer *added,
              size_t n_added, const struct ext_pex_peer *dropped,
              size_t n_dropped)
{
    if (p->closing)
        return -ESHUTDOWN;
    if (!p->handshaked)
        return -EAGAIN;
    if (n_added > EXT_PEX_SEND_MAX || n_dropped > EXT_PEX_SEND_MAX)
        return -EINVAL;
    for (size_t i = 0; i < n_added; i++)
        if (added[i].addr_len != 4 && added[i].addr_len != 16)
            return -EINVAL;
    for (size_t i = 0; i < n_dropped; i++)
        if (dropped[i].addr_len != 4 && dropped[i].addr_len != 16)
            return -EINVAL;
    struct ext_pex_msg *x = calloc(1, sizeof(*x));
    size_t n = n_added + n_dropped;
    if (x)
        x->peers = calloc(n ? n : 1, sizeof(*x->peers));
    if (!x || !x->peers) {
        ext_pex_msg_free(x);
        return -ENOMEM;
    }
    if (n_added)
        memcpy(x->peers, added, n_added * sizeof(*added));
    if (n_dropped)
        memcpy(x->peers + n_added, dropped, n_dropped * sizeof(*dropped));
    x->n_added = n_added;
    x->n_dropped = n_dropped;
    struct chan_rec rec;
    memset(&rec, 0, sizeof(rec));
    rec.type = PCONN_CMD_PEX;
    rec.ptr = x;
    rec.ptr_free = ext_pex_msg_free;
    return send_cmd(p, &rec);
}

/* ---- accessors ------------------------------------------------------- */

void *
peer_data(const struct peer *p)
{
    return p->data;
}

void
peer_set_data(struct peer *p, void *data)
{
    p->data = data;
}

uint32_t
peer_slot(const struct peer *p)
{
    return p->slot;
}

bool
peer_incoming(const struct peer *p)
{
    return p->incoming;
}

bool
peer_closing(const struct peer *p)
{
    return p->closing;
}

struct pconn_torrent *
peer_torrent(const struct peer *p)
{
    return p->tor;
}

const struct sockaddr *
peer_addr(const struct peer *p, socklen_t *ret_len)
{
    if (ret_len)
        *ret_len = p->addr_len;
    return (const struct sockaddr *)&p->addr;
}

uint32_t
peer_inflight(const struct peer *p)
{
    return chan_tx_inflight(&p->tx);
}

unsigned
peer_crypto(const struct peer *p)
{
    return p->crypto;
}

/* ---- the end --------------------------------------------------------- */

/* Wait (blocking) for p's thread to end, releasing its events. */
static void
wait_end(struct peer *p)
{
    while (!p->ended) {
        struct chan_rec recs[PEER_BATCH];
        ssize_t n = chan_read(p->evt_rd, recs, PEER_BATCH);
        if (n == -EAGAIN) {
            struct pollfd pfd = {.fd = p->evt_rd, .events = POLLIN};
            (void)poll(&pfd, 1, -1);
            continue;
        }
        if (n <= 0) {
            p->ended = true;
            break;
        }
        for (ssize_t i = 0; i < n; i++)
            chan_rec_release(&recs[i]);
    }
}

void
peer_table_free(struct peer_table *t)
{
    if (!t)
        return;
    REACTOR_ONLY(t);
    for (struct peer *p = t->have_list; p; p = p->next_have)
        p->in_have_list = false; /* not sent: every peer closes */
    t->have_list = NULL;
    for (size_t i = 0; i < t->max; i++) {
        struct peer *p = t->slots[i];
        if (p && !p->closing) {
            peer_close(p);
            p->reason = PCONN_R_SHUTDOWN;
        }
    }
    for (size_t i = 0; i < t->max; i++) {
        struct peer *p = t->slots[i];
        if (!p || p->ended)
            continue;
        ev_io_stop(t->loop, &p->io);
        wait_end(p);
        peer_finish(p);
    }
    ev_prepare_stop(t->loop, &t->reap);
    while (t->dead) {
        struct peer *p = t->dead;
        t->dead = p->next_dead;
        peer_finish(p);
    }
    free(t->slots);
    free(t->gens);
    free(t->free_slots);
    free(t);
}
