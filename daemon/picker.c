/* picker — rarest-first piece picking with partial pieces, whole pieces
 * for fast peers, sequential mode and strict end-game.
 *
 * The ordered array.  order[] holds every piece, sorted by a key:
 *   key = (PICKER_PRIO_MAX - prio) * (cap + 1) + avail
 * for pieces that can be started (idle, wanted), and key = nkey (after all
 * others) for the rest (had, in progress, priority 0).  Bucket k occupies
 * order[bstart[k] .. bstart[k + 1]); pos[] is the inverse of order[].
 * cap is the largest availability a key can hold; it is kept at least the
 * number of peers (a piece's availability never exceeds the non-seed
 * peers), so availability changes never fail; picker_peer_add() doubles
 * it and rebuilds when needed.
 *
 * Moving a piece one bucket up swaps it with the last piece of its bucket
 * and moves the boundary; moving it down swaps it with the first.  A piece
 * that enters a pickable bucket then swaps with a random member of it, so
 * the order inside a bucket is a random permutation: that is the random
 * tie-break, paid once per move instead of once per pick.
 *
 * A scan of a bucket range while pieces leave it for nkey stays valid:
 * the piece at the scan position is replaced by an unvisited one (the last
 * of its bucket), and every other displaced piece comes from further on.
 */
#include "daemon/picker.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

enum { P_IDLE, P_ACTIVE, P_HAVE };
enum { B_NONE, B_REQ, B_RECV, B_WRITTEN };
enum { L_FREE, L_BUSY, L_MAX };

#define PICKER_CAP_INITIAL 16
#define PICKER_BLOCK_MIN 1024
#define PICKER_BLOCK_MAX (1u << 17)
#define PICKER_RTT_MAX_MS 60000
#define PICKER_RATE_MAX (UINT64_C(1) << 40)
#define PIECE_NONE UINT32_MAX

struct blk {
    uint8_t state;
    uint8_t nreq;                 /* peers in req[] */
    uint16_t times;               /* requests ever made (saturating) */
    uint32_t from;                /* tag of the peer that delivered it */
    int32_t req[PICKER_MAX_DUPS]; /* handles of the requesting peers */
};

/* A piece in progress. */
struct dl {
    struct dl *prev, *next; /* on lists[list] */
    uint32_t piece;
    uint32_t nblocks;
    uint32_t n_none;    /* blocks in B_NONE */
    uint32_t n_recv;    /* blocks in B_RECV or B_WRITTEN */
    uint32_t n_written; /* blocks in B_WRITTEN */
    uint32_t hint;      /* no B_NONE block below this index */
    int32_t owner;      /* the fast peer that claimed it, or -1 */
    uint8_t list;       /* L_FREE (n_none > 0) or L_BUSY */
    struct blk b[];
};

struct dlist {
    struct dl *head, *tail;
};

struct ppeer {
    bool used;
    bool seed; /* counted in n_seeds, not in avail[] */
    bool fast;
    uint32_t tag;
    uint32_t n_bits;        /* pieces it has */
    uint32_t n_interesting; /* of those, wanted and not had (not seeds) */
    uint8_t *bits;          /* owned, nbytes */
};

struct picker {
    uint32_t n, plen, last_len, bsize, nbytes;
    unsigned initial_random;
    unsigned dups;
    bool sequential;
    uint32_t seq_cursor; /* no startable piece below it */
    uint64_t rng;

    uint32_t *avail; /* owned, per piece: non-seed peers having it */
    uint32_t *pos;   /* owned, per piece: index in order */
    uint32_t *order; /* owned, pieces by key */
    uint8_t *prio;   /* owned, per piece */
    uint8_t *state;  /* owned, per piece */
    struct dl **dl;  /* owned array, per piece; owned entries */

    uint32_t cap;
    uint32_t nkey;
    uint32_t *bstart; /* owned, nkey + 2 */
    uint32_t *cursor; /* owned, nkey + 2, scratch for rebuild */

    struct dlist lists[L_MAX];
    uint32_t n_have;
    uint32_t n_missing; /* wanted and not had */
    uint32_t n_seeds;

    struct ppeer *peers; /* owned, n_alloc */
    int *free_slots;     /* owned, n_alloc */
    size_t n_alloc, n_used, n_free, n_live;
};

static uint64_t
rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint32_t
rng_below(struct picker *p, uint32_t n)
{
    return (uint32_t)(rng_next(&p->rng) % n);
}

static bool
bit_get(const uint8_t *bits, uint32_t i)
{
    return bits[i >> 3] & (0x80 >> (i & 7));
}

static void
bit_set(uint8_t *bits, uint32_t i)
{
    bits[i >> 3] |= (uint8_t)(0x80 >> (i & 7));
}

uint32_t
picker_piece_size(const struct picker *p, uint32_t piece)
{
    if (piece >= p->n)
        return 0;
    return piece == p->n - 1 ? p->last_len : p->plen;
}

uint32_t
picker_piece_blocks(const struct picker *p, uint32_t piece)
{
    return (picker_piece_size(p, piece) + p->bsize - 1) / p->bsize;
}

static uint32_t
block_len(const struct picker *p, uint32_t piece, uint32_t bi)
{
    uint32_t size = picker_piece_size(p, piece);
    uint32_t off = bi * p->bsize;
    return size - off < p->bsize ? size - off : p->bsize;
}

static bool
wanted(const struct picker *p, uint32_t i)
{
    return p->prio[i] > 0 && p->state[i] != P_HAVE;
}

/* ------------------------------------------------------------------ */
/* The ordered array */

static uint32_t
key_of(const struct picker *p, uint32_t i)
{
    if (p->state[i] != P_IDLE || p->prio[i] == 0)
        return p->nkey;
    return (uint32_t)(PICKER_PRIO_MAX - p->prio[i]) * (p->cap + 1) +
           p->avail[i];
}

static void
swap_at(struct picker *p, uint32_t a, uint32_t b)
{
    uint32_t x = p->order[a], y = p->order[b];
    p->order[a] = y;
    p->order[b] = x;
    p->pos[y] = a;
    p->pos[x] = b;
}

static void
move_key(struct picker *p, uint32_t i, uint32_t from, uint32_t to)
{
    if (from == to)
        return;
    while (from < to) {
        swap_at(p, p->pos[i], p->bstart[from + 1] - 1);
        p->bstart[from + 1]--;
        from++;
    }
    while (from > to) {
        swap_at(p, p->pos[i], p->bstart[from]);
        p->bstart[from]++;
        from--;
    }
    if (to < p->nkey) {
        uint32_t s = p->bstart[to], e = p->bstart[to + 1];
        swap_at(p, p->pos[i], s + rng_below(p, e - s));
    }
}

/* Sort order[] by key from scratch (counting sort) and shuffle each
 * pickable bucket.  O(pieces + nkey); never allocates. */
static void
rebuild(struct picker *p)
{
    uint32_t nk = p->nkey;
    memset(p->bstart, 0, (nk + 2) * sizeof(*p->bstart));
    for (uint32_t i = 0; i < p->n; i++)
        p->bstart[key_of(p, i) + 1]++;
    for (uint32_t k = 1; k <= nk + 1; k++)
        p->bstart[k] += p->bstart[k - 1];
    memcpy(p->cursor, p->bstart, (nk + 2) * sizeof(*p->cursor));
    for (uint32_t i = 0; i < p->n; i++) {
        uint32_t k = key_of(p, i);
        p->order[p->cursor[k]] = i;
        p->pos[i] = p->cursor[k]++;
    }
    for (uint32_t k = 0; k < nk; k++) {
        uint32_t s = p->bstart[k], e = p->bstart[k + 1];
        for (uint32_t j = e; j > s + 1; j--)
            swap_at(p, j - 1, s + rng_below(p, j - s));
    }
}

static int
set_cap(struct picker *p, uint32_t cap)
{
    uint32_t nk = (uint32_t)PICKER_PRIO_MAX * (cap + 1);
    uint32_t *b = calloc(nk + 2, sizeof(*b));
    uint32_t *c = calloc(nk + 2, sizeof(*c));
    if (!b || !c) {
        free(b);
        free(c);
        return -ENOMEM;
    }
    free(p->bstart);
    free(p->cursor);
    p->bstart = b;
    p->cursor = c;
    p->cap = cap;
    p->nkey = nk;
    rebuild(p);
    return 0;
}

static void
avail_add(struct picker *p, uint32_t i, int d)
{
    uint32_t old = key_of(p, i);
    p->avail[i] = (uint32_t)((int64_t)p->avail[i] + d);
    move_key(p, i, old, key_of(p, i));
}

/* A piece became startable again: sequential mode must see it. */
static void
seq_back(struct picker *p, uint32_t i)
{
    if (i < p->seq_cursor)
        p->seq_cursor = i;
}

/* ------------------------------------------------------------------ */
/* Pieces in progress */

static void
list_remove(struct picker *p, struct dl *d)
{
    struct dlist *l = &p->lists[d->list];
    if (d->prev)
        d->prev->next = d->next;
    else
        l->head = d->next;
    if (d->next)
        d->next->prev = d->prev;
    else
        l->tail = d->prev;
    d->prev = d->next = NULL;
}

static void
list_append(struct picker *p, struct dl *d, uint8_t list)
{
    struct dlist *l = &p->lists[list];
    d->list = list;
    d->prev = l->tail;
    d->next = NULL;
    if (l->tail)
        l->tail->next = d;
    else
        l->head = d;
    l->tail = d;
}

static void
list_move(struct picker *p, struct dl *d, uint8_t list)
{
    if (d->list == list)
        return;
    list_remove(p, d);
    list_append(p, d, list);
}

static struct dl *
activate(struct picker *p, uint32_t i, int owner)
{
    uint32_t nb = picker_piece_blocks(p, i);
    struct dl *d = calloc(1, sizeof(*d) + (size_t)nb * sizeof(struct blk));
    if (!d)
        return NULL;
    d->piece = i;
    d->nblocks = nb;
    d->n_none = nb;
    d->owner = owner;
    uint32_t old = key_of(p, i);
    p->state[i] = P_ACTIVE;
    move_key(p, i, old, p->nkey);
    p->dl[i] = d;
    list_append(p, d, L_FREE);
    return d;
}

/* Drop a piece's progress record; the piece becomes idle (or had). */
static void
deactivate(struct picker *p, struct dl *d, uint8_t new_state)
{
    uint32_t i = d->piece;
    list_remove(p, d);
    p->dl[i] = NULL;
    free(d);
    p->state[i] = new_state;
    move_key(p, i, p->nkey, key_of(p, i));
    if (new_state == P_IDLE)
        seq_back(p, i);
}

/* A piece with nothing requested or received is not in progress. */
static void
maybe_deactivate(struct picker *p, struct dl *d)
{
    if (d->n_none == d->nblocks)
        deactivate(p, d, P_IDLE);
}

static void
became_none(struct picker *p, struct dl *d, uint32_t bi)
{
    d->b[bi].state = B_NONE;
    d->n_none++;
    if (bi < d->hint)
        d->hint = bi;
    list_move(p, d, L_FREE);
}

static void
left_none(struct picker *p, struct dl *d)
{
    d->n_none--;
    if (d->n_none == 0)
        list_move(p, d, L_BUSY);
}

/* Remove peer h from the requesters of block bi.  Returns whether it was
 * one; the block goes back to none when nobody is left.  The caller calls
 * maybe_deactivate() when done with the piece. */
static bool
drop_req(struct picker *p, struct dl *d, uint32_t bi, int h)
{
    struct blk *b = &d->b[bi];
    for (unsigned k = 0; k < b->nreq; k++) {
        if (b->req[k] != h)
            continue;
        b->req[k] = b->req[--b->nreq];
        if (b->nreq == 0 && b->state == B_REQ)
            became_none(p, d, bi);
        return true;
    }
    return false;
}

static void
request_blk(struct picker *p, struct dl *d, uint32_t bi, int h,
            struct picker_block *out)
{
    struct blk *b = &d->b[bi];
    if (b->state == B_NONE) {
        b->state = B_REQ;
        left_none(p, d);
    }
    b->req[b->nreq++] = h;
    if (b->times < UINT16_MAX)
        b->times++;
    out->piece = d->piece;
    out->begin = bi * p->bsize;
    out->length = block_len(p, d->piece, bi);
}

/* Request every unrequested block of d, up to max. */
static size_t
take_blocks(struct picker *p, struct dl *d, int h, struct picker_block *out,
            size_t max)
{
    size_t n = 0;
    uint32_t bi = d->hint;
    for (; bi < d->nblocks && n < max; bi++)
        if (d->b[bi].state == B_NONE)
            request_blk(p, d, bi, h, &out[n++]);
    d->hint = bi;
    return n;
}

/* Release every request of peer h (and its claims); pieces left with
 * nothing go back to idle.  O(blocks in progress). */
static void
release_peer(struct picker *p, int h)
{
    for (int l = 0; l < L_MAX; l++) {
        struct dl *next;
        for (struct dl *d = p->lists[l].head; d; d = next) {
            next = d->next;
            if (d->owner == h)
                d->owner = -1;
            for (uint32_t bi = 0; bi < d->nblocks; bi++)
                if (d->b[bi].nreq)
                    (void)drop_req(p, d, bi, h);
            maybe_deactivate(p, d);
        }
    }
}

/* ------------------------------------------------------------------ */

int
picker_new(struct picker **ret, const struct picker_params *params)
{
    const struct picker_params *pp = params;
    if (!pp || pp->n_pieces == 0 || pp->n_pieces > PICKER_PIECES_MAX ||
        pp->piece_length == 0 || pp->piece_length > PICKER_PIECE_LENGTH_MAX ||
        pp->last_piece_length > pp->piece_length)
        return -EINVAL;
    uint32_t bsize = pp->block_size ? pp->block_size : PICKER_BLOCK_SIZE;
    if (bsize < PICKER_BLOCK_MIN || bsize > PICKER_BLOCK_MAX)
        return -EINVAL;
    if (pp->endgame_dups == 1 || pp->endgame_dups > PICKER_MAX_DUPS)
        return -EINVAL;

    struct picker *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->n = pp->n_pieces;
    p->plen = pp->piece_length;
    p->last_len =
        pp->last_piece_length ? pp->last_piece_length : pp->piece_length;
    p->bsize = bsize;
    p->nbytes = (p->n + 7) / 8;
    p->initial_random = pp->no_initial_random ? 0
                        : pp->initial_random  ? pp->initial_random
                                              : PICKER_INITIAL_RANDOM;
    p->dups = pp->endgame_dups ? pp->endgame_dups : PICKER_ENDGAME_DUPS;
    p->rng = pp->seed;

    p->avail = calloc(p->n, sizeof(*p->avail));
    p->pos = calloc(p->n, sizeof(*p->pos));
    p->order = calloc(p->n, sizeof(*p->order));
    p->prio = malloc(p->n);
    p->state = calloc(p->n, 1);
    p->dl = calloc(p->n, sizeof(*p->dl));
    if (!p->avail || !p->pos || !p->order || !p->prio || !p->state || !p->dl)
        goto fail;
    for (uint32_t i = 0; i < p->n; i++) {
        uint8_t pr = pp->priority ? pp->priority[i] : PICKER_PRIO_DEFAULT;
        p->prio[i] = pr > PICKER_PRIO_MAX ? PICKER_PRIO_MAX : pr;
        if (pp->have && bit_get(pp->have, i)) {
            p->state[i] = P_HAVE;
            p->n_have++;
        } else if (p->prio[i] > 0) {
            p->n_missing++;
        }
    }
    if (set_cap(p, PICKER_CAP_INITIAL) < 0)
        goto fail;
    *ret = p;
    return 0;

fail:
    picker_free(p);
    return -ENOMEM;
}

void
picker_free(struct picker *p)
{
    if (!p)
        return;
    for (int l = 0; l < L_MAX; l++) {
        struct dl *next;
        for (struct dl *d = p->lists[l].head; d; d = next) {
            next = d->next;
            free(d);
        }
    }
    for (size_t h = 0; h < p->n_used; h++)
        free(p->peers[h].bits);
    free(p->peers);
    free(p->free_slots);
    free(p->avail);
    free(p->pos);
    free(p->order);
    free(p->prio);
    free(p->state);
    free(p->dl);
    free(p->bstart);
    free(p->cursor);
    free(p);
}

/* ------------------------------------------------------------------ */
/* Peers */

static struct ppeer *
peer_get(const struct picker *p, int h)
{
    if (h < 0 || (size_t)h >= p->n_used || !p->peers[h].used)
        return NULL;
    return &p->peers[h];
}

static bool
peer_has(const struct ppeer *pe, uint32_t i)
{
    return pe->seed || bit_get(pe->bits, i);
}

int
picker_peer_add(struct picker *p, uint32_t tag)
{
    if (p->n_live >= PICKER_PEERS_MAX)
        return -ENOSPC;
    if (p->n_live + 1 > p->cap) {
        int r = set_cap(p, p->cap * 2);
        if (r < 0)
            return r;
    }
    if (p->n_free == 0 && p->n_used == p->n_alloc) {
        size_t na = p->n_alloc ? p->n_alloc * 2 : 16;
        struct ppeer *np = reallocarray(p->peers, na, sizeof(*np));
        if (!np)
            return -ENOMEM;
        p->peers = np;
        int *nf = reallocarray(p->free_slots, na, sizeof(*nf));
        if (!nf)
            return -ENOMEM;
        p->free_slots = nf;
        memset(p->peers + p->n_alloc, 0, (na - p->n_alloc) * sizeof(*np));
        p->n_alloc = na;
    }
    uint8_t *bits = calloc(p->nbytes, 1);
    if (!bits)
        return -ENOMEM;
    int h = p->n_free ? p->free_slots[--p->n_free] : (int)p->n_used++;
    p->peers[h] = (struct ppeer){.used = true, .tag = tag, .bits = bits};
    p->n_live++;
    return h;
}

/* Forget every piece of the peer (availability back down). */
static void
peer_clear(struct picker *p, struct ppeer *pe)
{
    if (pe->seed) {
        p->n_seeds--;
        pe->seed = false;
    } else if (pe->n_bits) {
        for (uint32_t byte = 0; byte < p->nbytes; byte++) {
            if (!pe->bits[byte])
                continue;
            for (uint32_t i = byte * 8; i < byte * 8 + 8 && i < p->n; i++)
                if (bit_get(pe->bits, i))
                    avail_add(p, i, -1);
        }
    }
    memset(pe->bits, 0, p->nbytes);
    pe->n_bits = 0;
    pe->n_interesting = 0;
}

static void
peer_make_seed(struct picker *p, struct ppeer *pe)
{
    memset(pe->bits, 0xff, p->nbytes);
    if (p->n % 8)
        pe->bits[p->nbytes - 1] = (uint8_t)(0xff << (8 - p->n % 8));
    pe->n_bits = p->n;
    pe->n_interesting = 0;
    pe->seed = true;
    p->n_seeds++;
}

void
picker_peer_remove(struct picker *p, int peer)
{
    struct ppeer *pe = peer_get(p, peer);
    if (!pe)
        return;
    release_peer(p, peer);
    peer_clear(p, pe);
    free(pe->bits);
    memset(pe, 0, sizeof(*pe));
    p->free_slots[p->n_free++] = peer;
    p->n_live--;
}

void
picker_peer_bitfield(struct picker *p, int peer, const uint8_t *bits)
{
    struct ppeer *pe = peer_get(p, peer);
    if (!pe)
        return;
    peer_clear(p, pe);
    if (!bits)
        return;
    uint32_t count = 0;
    for (uint32_t i = 0; i < p->n; i++)
        count += bit_get(bits, i);
    if (count == p->n) {
        peer_make_seed(p, pe);
        return;
    }
    for (uint32_t i = 0; i < p->n; i++) {
        if (!bit_get(bits, i))
            continue;
        bit_set(pe->bits, i);
        avail_add(p, i, 1);
        if (wanted(p, i))
            pe->n_interesting++;
    }
    pe->n_bits = count;
}

void
picker_peer_have_all(struct picker *p, int peer)
{
    struct ppeer *pe = peer_get(p, peer);
    if (!pe)
        return;
    peer_clear(p, pe);
    peer_make_seed(p, pe);
}

int
picker_peer_have(struct picker *p, int peer, uint32_t piece)
{
    struct ppeer *pe = peer_get(p, peer);
    if (!pe || piece >= p->n)
        return -EINVAL;
    if (peer_has(pe, piece))
        return 0;
    bit_set(pe->bits, piece);
    pe->n_bits++;
    if (pe->n_bits == p->n) {
        /* Now a seed: its per-piece counts come off (this piece's was
         * never added). */
        for (uint32_t i = 0; i < p->n; i++)
            if (i != piece)
                avail_add(p, i, -1);
        pe->seed = true;
        pe->n_interesting = 0;
        p->n_seeds++;
        return 0;
    }
    avail_add(p, piece, 1);
    if (wanted(p, piece))
        pe->n_interesting++;
    return 0;
}

bool
picker_peer_has(const struct picker *p, int peer, uint32_t piece)
{
    const struct ppeer *pe = peer_get(p, peer);
    return pe && piece < p->n && peer_has(pe, piece);
}

bool
picker_peer_interesting(const struct picker *p, int peer)
{
    const struct ppeer *pe = peer_get(p, peer);
    if (!pe)
        return false;
    return pe->seed ? p->n_missing > 0 : pe->n_interesting > 0;
}

void
picker_peer_set_fast(struct picker *p, int peer, bool fast)
{
    struct ppeer *pe = peer_get(p, peer);
    if (pe)
        pe->fast = fast;
}

void
picker_peer_choked(struct picker *p, int peer)
{
    if (peer_get(p, peer))
        release_peer(p, peer);
}

/* The piece in progress and block index at offset begin.  Returns 0,
 * -EINVAL (out of range, unaligned) or -ENOENT (not in progress). */
static int
find_block(const struct picker *p, uint32_t piece, uint32_t begin,
           struct dl **ret_d, uint32_t *ret_bi)
{
    if (piece >= p->n || begin % p->bsize ||
        begin >= picker_piece_size(p, piece))
        return -EINVAL;
    if (p->state[piece] != P_ACTIVE)
        return -ENOENT;
    *ret_d = p->dl[piece];
    *ret_bi = begin / p->bsize;
    return 0;
}

int
picker_peer_rejected(struct picker *p, int peer, uint32_t piece, uint32_t begin)
{
    struct dl *d;
    uint32_t bi;
    if (!peer_get(p, peer))
        return -EINVAL;
    int r = find_block(p, piece, begin, &d, &bi);
    if (r < 0)
        return r;
    if (!drop_req(p, d, bi, peer))
        return -ENOENT;
    maybe_deactivate(p, d);
    return 0;
}

int
picker_request_timeout(struct picker *p, int peer, uint32_t piece,
                       uint32_t begin)
{
    return picker_peer_rejected(p, peer, piece, begin);
}

/* ------------------------------------------------------------------ */
/* Picking */

/* Is d claimed by a fast peer other than h?  Stale claims (the owner
 * left or is no longer fast) are dropped on the way. */
static bool
claimed_by_other(struct picker *p, struct dl *d, int h)
{
    if (d->owner < 0 || d->owner == h)
        return false;
    const struct ppeer *o = peer_get(p, d->owner);
    if (!o || !o->fast) {
        d->owner = -1;
        return false;
    }
    return true;
}

enum { PARTIAL_OWN, PARTIAL_ANY };

static size_t
pick_partial(struct picker *p, int h, const struct ppeer *pe, int mode,
             struct picker_block *out, size_t max)
{
    size_t n = 0;
    struct dl *next;
    for (struct dl *d = p->lists[L_FREE].head; d && n < max; d = next) {
        next = d->next;
        if (p->prio[d->piece] == 0 || !peer_has(pe, d->piece))
            continue;
        if (mode == PARTIAL_OWN ? d->owner != h : claimed_by_other(p, d, h))
            continue;
        n += take_blocks(p, d, h, out + n, max - n);
    }
    return n;
}

/* Where a scan for new pieces is, across calls within one pick. */
struct scan {
    bool started;
    unsigned prio;
    uint32_t pos;
    unsigned probes;
};

/* First and last key of the pickable buckets of priority prio that a
 * peer may have pieces in (a non-seed has none of availability 0). */
static uint32_t
key_first(const struct picker *p, unsigned prio, bool seed)
{
    return (uint32_t)(PICKER_PRIO_MAX - prio) * (p->cap + 1) + (seed ? 0 : 1);
}

static uint32_t
next_fresh(struct picker *p, const struct ppeer *pe, struct scan *sc)
{
    if (p->sequential) {
        if (!sc->started) {
            sc->started = true;
            sc->pos = p->seq_cursor;
        }
        for (; sc->pos < p->n; sc->pos++) {
            uint32_t i = sc->pos;
            if (p->state[i] == P_IDLE && p->prio[i] > 0) {
                if (peer_has(pe, i))
                    return i;
            } else if (i == p->seq_cursor) {
                p->seq_cursor++;
            }
        }
        return PIECE_NONE;
    }

    uint32_t n_pickable = p->bstart[p->nkey];
    if (p->n_have < p->initial_random) {
        while (n_pickable > 0 && sc->probes < PICKER_RANDOM_PROBES) {
            sc->probes++;
            uint32_t i = p->order[rng_below(p, n_pickable)];
            if (peer_has(pe, i))
                return i;
        }
    }

    if (!sc->started) {
        sc->started = true;
        sc->prio = PICKER_PRIO_MAX;
        sc->pos = p->bstart[key_first(p, sc->prio, pe->seed)];
    }
    while (sc->prio > 0) {
        uint32_t end_key =
            (uint32_t)(PICKER_PRIO_MAX - sc->prio) * (p->cap + 1) + p->cap;
        uint32_t end = p->bstart[end_key + 1];
        for (; sc->pos < end; sc->pos++) {
            uint32_t i = p->order[sc->pos];
            if (peer_has(pe, i))
                return i; /* the caller starts it; pos is then new */
        }
        if (--sc->prio > 0)
            sc->pos = p->bstart[key_first(p, sc->prio, pe->seed)];
    }
    return PIECE_NONE;
}

static bool
endgame(const struct picker *p)
{
    if (p->n_missing == 0 || p->bstart[p->nkey] > 0)
        return false;
    for (const struct dl *d = p->lists[L_FREE].head; d; d = d->next)
        if (p->prio[d->piece] > 0)
            return false;
    return true;
}

bool
picker_endgame(const struct picker *p)
{
    return endgame(p);
}

static size_t
pick_endgame(struct picker *p, int h, const struct ppeer *pe,
             struct picker_block *out, size_t max)
{
    size_t n = 0;
    for (unsigned level = 1; level < p->dups && n < max; level++) {
        for (struct dl *d = p->lists[L_BUSY].head; d && n < max; d = d->next) {
            if (p->prio[d->piece] == 0 || !peer_has(pe, d->piece))
                continue;
            for (uint32_t bi = 0; bi < d->nblocks && n < max; bi++) {
                struct blk *b = &d->b[bi];
                if (b->state != B_REQ || b->nreq != level)
                    continue;
                bool mine = false;
                for (unsigned k = 0; k < b->nreq; k++)
                    mine |= b->req[k] == h;
                if (!mine)
                    request_blk(p, d, bi, h, &out[n++]);
            }
        }
    }
    return n;
}

int
picker_pick(struct picker *p, int peer, struct picker_block *out, size_t max)
{
    const struct ppeer *pe = peer_get(p, peer);
    if (!pe || max == 0 || !picker_peer_interesting(p, peer))
        return 0;
    size_t n = 0;
    int err = 0;
    struct scan sc = {0};

    if (pe->fast)
        n += pick_partial(p, peer, pe, PARTIAL_OWN, out, max);
    else
        n += pick_partial(p, peer, pe, PARTIAL_ANY, out, max);
    while (n < max) {
        uint32_t i = next_fresh(p, pe, &sc);
        if (i == PIECE_NONE)
            break;
        struct dl *d = activate(p, i, pe->fast ? peer : -1);
        if (!d) {
            err = -ENOMEM;
            break;
        }
        n += take_blocks(p, d, peer, out + n, max - n);
    }
    if (pe->fast && n < max)
        n += pick_partial(p, peer, pe, PARTIAL_ANY, out + n, max - n);
    if (n < max && endgame(p))
        n += pick_endgame(p, peer, pe, out + n, max - n);
    if (n == 0 && err)
        return err;
    return (int)n;
}

int
picker_pick_from(struct picker *p, int peer, const uint32_t *pieces,
                 size_t n_pieces, struct picker_block *out, size_t max)
{
    const struct ppeer *pe = peer_get(p, peer);
    if (!pe || max == 0 || !pieces)
        return 0;
    size_t n = 0;
    /* Two passes: partial pieces first, so they complete. */
    for (int pass = 0; pass < 2 && n < max; pass++) {
        for (size_t k = 0; k < n_pieces && n < max; k++) {
            uint32_t i = pieces[k];
            if (i >= p->n || p->prio[i] == 0 || !peer_has(pe, i))
                continue;
            struct dl *d = NULL;
            if (pass == 0 && p->state[i] == P_ACTIVE) {
                d = p->dl[i];
                if (d->list != L_FREE || claimed_by_other(p, d, peer))
                    continue;
            } else if (pass == 1 && p->state[i] == P_IDLE) {
                d = activate(p, i, -1);
                if (!d)
                    return n ? (int)n : -ENOMEM;
            } else {
                continue;
            }
            n += take_blocks(p, d, peer, out + n, max - n);
        }
    }
    return (int)n;
}

unsigned
picker_pipeline_depth(uint64_t rate_bytes_per_s, unsigned reqq, unsigned rtt_ms)
{
    if (reqq == 0)
        reqq = PICKER_REQQ_DEFAULT;
    uint64_t rate =
        rate_bytes_per_s > PICKER_RATE_MAX ? PICKER_RATE_MAX : rate_bytes_per_s;
    uint64_t ms = PICKER_PIPELINE_MS +
                  (rtt_ms > PICKER_RTT_MAX_MS ? PICKER_RTT_MAX_MS : rtt_ms);
    uint64_t blocks =
        (rate * ms / 1000 + PICKER_BLOCK_SIZE - 1) / PICKER_BLOCK_SIZE;
    if (blocks < PICKER_PIPELINE_MIN)
        blocks = PICKER_PIPELINE_MIN;
    if (blocks > reqq)
        blocks = reqq;
    return (unsigned)blocks;
}

/* ------------------------------------------------------------------ */
/* Data */

int
picker_block_received(struct picker *p, int peer, uint32_t piece,
                      uint32_t begin, unsigned flags, int *cancel,
                      size_t *ret_n_cancel)
{
    const struct ppeer *pe = peer_get(p, peer);
    struct dl *d;
    uint32_t bi;
    if (!pe)
        return -EINVAL;
    int r = find_block(p, piece, begin, &d, &bi);
    if (r < 0)
        return r;
    struct blk *b = &d->b[bi];
    if (b->state == B_RECV || b->state == B_WRITTEN)
        return -EALREADY;
    size_t nc = 0;
    for (unsigned k = 0; k < b->nreq; k++)
        if (b->req[k] != peer)
            cancel[nc++] = b->req[k];
    b->nreq = 0;
    if (b->state == B_NONE)
        left_none(p, d);
    bool written = flags & PICKER_WRITTEN;
    b->state = written ? B_WRITTEN : B_RECV;
    b->from = pe->tag;
    d->n_recv++;
    if (written)
        d->n_written++;
    *ret_n_cancel = nc;
    return d->n_written == d->nblocks ? PICKER_PIECE_COMPLETE : PICKER_BLOCK_OK;
}

int
picker_block_written(struct picker *p, uint32_t piece, uint32_t begin)
{
    struct dl *d;
    uint32_t bi;
    int r = find_block(p, piece, begin, &d, &bi);
    if (r < 0)
        return r;
    if (d->b[bi].state != B_RECV)
        return -ENOENT;
    d->b[bi].state = B_WRITTEN;
    d->n_written++;
    return d->n_written == d->nblocks ? PICKER_PIECE_COMPLETE : PICKER_BLOCK_OK;
}

int
picker_block_lost(struct picker *p, uint32_t piece, uint32_t begin)
{
    struct dl *d;
    uint32_t bi;
    int r = find_block(p, piece, begin, &d, &bi);
    if (r < 0)
        return r;
    struct blk *b = &d->b[bi];
    if (b->state != B_RECV && b->state != B_WRITTEN)
        return -ENOENT;
    if (b->state == B_WRITTEN)
        d->n_written--;
    d->n_recv--;
    became_none(p, d, bi);
    maybe_deactivate(p, d);
    return 0;
}

int
picker_hash_passed(struct picker *p, uint32_t piece)
{
    if (piece >= p->n)
        return -EINVAL;
    if (p->state[piece] == P_HAVE)
        return -EALREADY;
    if (p->state[piece] == P_ACTIVE) {
        struct dl *d = p->dl[piece];
        if (d->n_written != d->nblocks)
            return -EBUSY;
        deactivate(p, d, P_HAVE);
    } else {
        uint32_t old = key_of(p, piece);
        p->state[piece] = P_HAVE;
        move_key(p, piece, old, p->nkey);
    }
    p->n_have++;
    if (p->prio[piece] > 0) {
        p->n_missing--;
        for (size_t h = 0; h < p->n_used; h++) {
            struct ppeer *pe = &p->peers[h];
            if (pe->used && !pe->seed && bit_get(pe->bits, piece))
                pe->n_interesting--;
        }
    }
    return 0;
}

int
picker_hash_failed(struct picker *p, uint32_t piece, uint32_t *tags, size_t max)
{
    if (piece >= p->n)
        return -EINVAL;
    if (p->state[piece] != P_ACTIVE)
        return -ENOENT;
    struct dl *d = p->dl[piece];
    if (d->n_written != d->nblocks)
        return -EBUSY;
    size_t n = 0;
    for (uint32_t bi = 0; bi < d->nblocks && n < max; bi++) {
        uint32_t t = d->b[bi].from;
        bool seen = false;
        for (size_t k = 0; k < n && !seen; k++)
            seen = tags[k] == t;
        if (!seen)
            tags[n++] = t;
    }
    deactivate(p, d, P_IDLE);
    return (int)n;
}

/* ------------------------------------------------------------------ */
/* Priorities */

/* Account for piece i's priority going from old to new (counters only). */
static void
prio_counts(struct picker *p, uint32_t i, uint8_t old, uint8_t new)
{
    if ((old > 0) == (new > 0) || p->state[i] == P_HAVE)
        return;
    int d = new > 0 ? 1 : -1;
    p->n_missing = (uint32_t)((int64_t)p->n_missing + d);
    for (size_t h = 0; h < p->n_used; h++) {
        struct ppeer *pe = &p->peers[h];
        if (pe->used && !pe->seed && bit_get(pe->bits, i))
            pe->n_interesting = (uint32_t)((int64_t)pe->n_interesting + d);
    }
}

void
picker_set_piece_priority(struct picker *p, uint32_t piece, uint8_t prio)
{
    if (piece >= p->n)
        return;
    if (prio > PICKER_PRIO_MAX)
        prio = PICKER_PRIO_MAX;
    uint8_t old = p->prio[piece];
    if (old == prio)
        return;
    uint32_t old_key = key_of(p, piece);
    prio_counts(p, piece, old, prio);
    p->prio[piece] = prio;
    move_key(p, piece, old_key, key_of(p, piece));
    seq_back(p, piece);
}

int
picker_set_file_priorities(struct picker *p, const struct picker_file *files,
                           size_t n)
{
    uint8_t *np = calloc(p->n, 1);
    if (!np)
        return -ENOMEM;
    uint64_t total = (uint64_t)p->plen * (p->n - 1) + p->last_len;
    for (size_t f = 0; f < n; f++) {
        const struct picker_file *fi = &files[f];
        if (fi->length == 0 || fi->offset >= total)
            continue;
        uint8_t pr =
            fi->priority > PICKER_PRIO_MAX ? PICKER_PRIO_MAX : fi->priority;
        uint64_t end = fi->offset + fi->length;
        if (end > total || end < fi->offset)
            end = total;
        uint32_t first = (uint32_t)(fi->offset / p->plen);
        uint32_t last = (uint32_t)((end - 1) / p->plen);
        for (uint32_t i = first; i <= last; i++)
            if (np[i] < pr)
                np[i] = pr;
    }
    bool changed = false;
    for (uint32_t i = 0; i < p->n; i++) {
        if (np[i] == p->prio[i])
            continue;
        prio_counts(p, i, p->prio[i], np[i]);
        p->prio[i] = np[i];
        changed = true;
    }
    free(np);
    if (changed) {
        rebuild(p);
        p->seq_cursor = 0;
    }
    return 0;
}

void
picker_set_sequential(struct picker *p, bool on)
{
    p->sequential = on;
    p->seq_cursor = 0;
}

/* ------------------------------------------------------------------ */
/* Queries */

uint32_t
picker_n_pieces(const struct picker *p)
{
    return p->n;
}

uint32_t
picker_n_have(const struct picker *p)
{
    return p->n_have;
}

bool
picker_have(const struct picker *p, uint32_t piece)
{
    return piece < p->n && p->state[piece] == P_HAVE;
}

uint8_t
picker_piece_priority(const struct picker *p, uint32_t piece)
{
    return piece < p->n ? p->prio[piece] : 0;
}

uint32_t
picker_availability(const struct picker *p, uint32_t piece)
{
    return piece < p->n ? p->avail[piece] + p->n_seeds : 0;
}

unsigned
picker_block_requesters(const struct picker *p, uint32_t piece, uint32_t begin)
{
    struct dl *d;
    uint32_t bi;
    if (find_block(p, piece, begin, &d, &bi) < 0)
        return 0;
    return d->b[bi].nreq;
}

bool
picker_complete(const struct picker *p)
{
    return p->n_missing == 0;
}

bool
picker_check(const struct picker *p)
{
#define CHECK(x)                                                               \
    do {                                                                       \
        if (!(x))                                                              \
            return false;                                                      \
    } while (0)
    CHECK(p->bstart[0] == 0 && p->bstart[p->nkey + 1] == p->n);
    for (uint32_t k = 0; k <= p->nkey; k++)
        CHECK(p->bstart[k] <= p->bstart[k + 1]);
    for (uint32_t x = 0; x < p->n; x++) {
        uint32_t i = p->order[x];
        CHECK(i < p->n && p->pos[i] == x);
        uint32_t k = key_of(p, i);
        CHECK(p->bstart[k] <= x && x < p->bstart[k + 1]);
    }
    uint32_t have = 0, missing = 0, seeds = 0;
    for (uint32_t i = 0; i < p->n; i++) {
        have += p->state[i] == P_HAVE;
        missing += wanted(p, i);
        CHECK((p->dl[i] != NULL) == (p->state[i] == P_ACTIVE));
        CHECK(p->prio[i] <= PICKER_PRIO_MAX);
        uint32_t a = 0;
        for (size_t h = 0; h < p->n_used; h++) {
            const struct ppeer *pe = &p->peers[h];
            a += pe->used && !pe->seed && bit_get(pe->bits, i);
        }
        CHECK(a == p->avail[i] && a <= p->cap);
    }
    CHECK(have == p->n_have && missing == p->n_missing);
    size_t live = 0;
    for (size_t h = 0; h < p->n_used; h++) {
        const struct ppeer *pe = &p->peers[h];
        if (!pe->used)
            continue;
        live++;
        seeds += pe->seed;
        uint32_t nb = 0, ni = 0;
        for (uint32_t i = 0; i < p->n; i++) {
            nb += bit_get(pe->bits, i);
            ni += bit_get(pe->bits, i) && wanted(p, i);
        }
        CHECK(nb == pe->n_bits);
        CHECK(pe->seed ? nb == p->n : ni == pe->n_interesting);
    }
    CHECK(live == p->n_live && seeds == p->n_seeds);
    for (int l = 0; l < L_MAX; l++) {
        const struct dl *prev = NULL;
        for (const struct dl *d = p->lists[l].head; d; d = d->next) {
            CHECK(d->prev == prev && d->list == l);
            CHECK(p->dl[d->piece] == d);
            CHECK(d->nblocks == picker_piece_blocks(p, d->piece));
            uint32_t none = 0, recv = 0, wr = 0;
            for (uint32_t bi = 0; bi < d->nblocks; bi++) {
                const struct blk *b = &d->b[bi];
                none += b->state == B_NONE;
                recv += b->state == B_RECV || b->state == B_WRITTEN;
                wr += b->state == B_WRITTEN;
                CHECK(b->state != B_NONE || bi >= d->hint);
                CHECK((b->state == B_REQ) == (b->nreq > 0));
                CHECK(b->nreq <= PICKER_MAX_DUPS);
                for (unsigned k = 0; k < b->nreq; k++) {
                    CHECK(peer_get(p, b->req[k]) != NULL);
                    for (unsigned j = 0; j < k; j++)
                        CHECK(b->req[j] != b->req[k]);
                }
            }
            CHECK(none == d->n_none && recv == d->n_recv && wr == d->n_written);
            CHECK(none < d->nblocks);
            CHECK((l == L_FREE) == (none > 0));
            prev = d;
        }
        CHECK(p->lists[l].tail == prev);
    }
    return true;
#undef CHECK
}
