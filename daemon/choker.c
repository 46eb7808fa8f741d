/* choker — tit-for-tat with rotation, optimistic unchoke, snubbing.
 *
 * Each peer has a target (regular slot, optimistic slot, or choked) and the
 * state the caller was last told (unchoked).  choker_run() recomputes the
 * targets and returns the differences, so a caller that passes a short
 * output array gets the rest at the next call and the two never drift.
 * Scratch space for sorting is sized at peer_add() time, so choker_run()
 * never allocates.
 */
#include "daemon/choker.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct cpeer {
    bool used;
    bool regular;    /* holds a regular slot */
    bool optimistic; /* holds the optimistic slot */
    bool unchoked;   /* what the caller was last told */
    bool active;     /* we are interested and it does not choke us */
    uint32_t tag;
    int64_t added_ms;
    int64_t active_since;
    struct choker_peer_info info;
};

struct choker {
    struct cpeer *peers; /* owned, n_alloc slots */
    int *scratch;        /* owned, n_alloc entries */
    int *free_slots;     /* owned stack of unused handles below n_used */
    size_t n_alloc;
    size_t n_used; /* handles 0..n_used-1 were ever given */
    size_t n_free;
    unsigned slots;
    bool optimistic_on;
    bool seeding;
    bool rechoke_now; /* mode or slots changed, or the first run */
    bool pending;     /* the last run had more changes than room */
    int64_t next_rechoke;
    int64_t next_optimistic;
    uint64_t rng;
};

static uint64_t
rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

int
choker_new(struct choker **ret, const struct choker_params *params)
{
    struct choker *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    struct choker_params def = {0};
    if (!params)
        params = &def;
    c->slots =
        params->upload_slots ? params->upload_slots : CHOKER_SLOTS_DEFAULT;
    if (c->slots > CHOKER_SLOTS_MAX)
        c->slots = CHOKER_SLOTS_MAX;
    c->optimistic_on = !params->no_optimistic;
    c->rng = params->seed;
    c->rechoke_now = true;
    *ret = c;
    return 0;
}

void
choker_free(struct choker *c)
{
    if (!c)
        return;
    free(c->peers);
    free(c->scratch);
    free(c->free_slots);
    free(c);
}

void
choker_set_seeding(struct choker *c, bool seeding)
{
    if (c->seeding != seeding)
        c->rechoke_now = true;
    c->seeding = seeding;
}

void
choker_set_slots(struct choker *c, unsigned upload_slots)
{
    unsigned s = upload_slots ? upload_slots : CHOKER_SLOTS_DEFAULT;
    if (s > CHOKER_SLOTS_MAX)
        s = CHOKER_SLOTS_MAX;
    if (s != c->slots)
        c->rechoke_now = true;
    c->slots = s;
}

static int
grow(struct choker *c)
{
    size_t n = c->n_alloc ? c->n_alloc * 2 : 16;
    if (n > CHOKER_PEERS_MAX)
        n = CHOKER_PEERS_MAX;
    if (n <= c->n_alloc)
        return -ENOSPC;
    struct cpeer *p = reallocarray(c->peers, n, sizeof(*p));
    if (!p)
        return -ENOMEM;
    c->peers = p;
    int *s = reallocarray(c->scratch, n, sizeof(*s));
    if (!s)
        return -ENOMEM;
    c->scratch = s;
    int *f = reallocarray(c->free_slots, n, sizeof(*f));
    if (!f)
        return -ENOMEM;
    c->free_slots = f;
    memset(c->peers + c->n_alloc, 0, (n - c->n_alloc) * sizeof(*p));
    c->n_alloc = n;
    return 0;
}

int
choker_peer_add(struct choker *c, uint32_t tag, int64_t now_ms)
{
    int h;
    if (c->n_free > 0) {
        h = c->free_slots[--c->n_free];
    } else {
        if (c->n_used == c->n_alloc) {
            int r = grow(c);
            if (r < 0)
                return r;
        }
        h = (int)c->n_used++;
    }
    c->peers[h] = (struct cpeer){.used = true, .tag = tag, .added_ms = now_ms};
    return h;
}

static struct cpeer *
peer_get(const struct choker *c, int h)
{
    if (h < 0 || (size_t)h >= c->n_used || !c->peers[h].used)
        return NULL;
    return &c->peers[h];
}

void
choker_peer_remove(struct choker *c, int peer)
{
    struct cpeer *p = peer_get(c, peer);
    if (!p)
        return;
    memset(p, 0, sizeof(*p));
    c->free_slots[c->n_free++] = peer;
}

void
choker_peer_update(struct choker *c, int peer,
                   const struct choker_peer_info *info, int64_t now_ms)
{
    struct cpeer *p = peer_get(c, peer);
    if (!p)
        return;
    bool active = info->am_interested && !info->choking_us;
    if (active && !p->active)
        p->active_since = now_ms;
    p->active = active;
    p->info = *info;
}

static bool
snubbed(const struct cpeer *p, int64_t now_ms)
{
    if (!p->active)
        return false;
    int64_t ref = p->active_since;
    if (p->info.last_block_ms > ref)
        ref = p->info.last_block_ms;
    return now_ms - ref >= CHOKER_SNUB_MS;
}

bool
choker_peer_snubbed(const struct choker *c, int peer, int64_t now_ms)
{
    const struct cpeer *p = peer_get(c, peer);
    return p && snubbed(p, now_ms);
}

bool
choker_peer_unchoked(const struct choker *c, int peer)
{
    const struct cpeer *p = peer_get(c, peer);
    return p && p->unchoked;
}

/* Rank for a regular slot: rate, then already unchoked, then the longest
 * connected, then the handle (so the order is total and deterministic). */
static int
cmp_rank(const void *a, const void *b, void *ctx)
{
    const struct choker *c = ctx;
    const struct cpeer *x = &c->peers[*(const int *)a];
    const struct cpeer *y = &c->peers[*(const int *)b];
    uint64_t rx = c->seeding ? x->info.up_rate : x->info.down_rate;
    uint64_t ry = c->seeding ? y->info.up_rate : y->info.down_rate;
    if (rx != ry)
        return rx > ry ? -1 : 1;
    if (x->unchoked != y->unchoked)
        return x->unchoked ? -1 : 1;
    if (x->added_ms != y->added_ms)
        return x->added_ms < y->added_ms ? -1 : 1;
    int hx = *(const int *)a, hy = *(const int *)b;
    return hx < hy ? -1 : hx > hy;
}

/* Can p have a regular slot? */
static bool
regular_candidate(const struct cpeer *p, int64_t now_ms)
{
    return p->used && p->info.interested && !p->optimistic &&
           !snubbed(p, now_ms);
}

/* Give regular slots: all of them again (full) or only the free ones. */
static void
give_regular(struct choker *c, int64_t now_ms, bool full)
{
    size_t n = 0, held = 0;
    for (size_t h = 0; h < c->n_used; h++) {
        struct cpeer *p = &c->peers[h];
        if (full)
            p->regular = false;
        if (p->regular) {
            held++;
            continue;
        }
        if (regular_candidate(p, now_ms))
            c->scratch[n++] = (int)h;
    }
    if (held >= c->slots || n == 0)
        return;
    qsort_r(c->scratch, n, sizeof(*c->scratch), cmp_rank, c);
    for (size_t i = 0; i < n && held < c->slots; i++, held++)
        c->peers[c->scratch[i]].regular = true;
}

/* Draw the optimistic peer among the choked interested ones, newcomers
 * CHOKER_NEW_PEER_WEIGHT times as likely; avoid `not` if anyone else can
 * have it. */
static void
give_optimistic(struct choker *c, int64_t now_ms, int not )
{
    for (int pass = 0; pass < 2; pass++) {
        uint64_t total = 0;
        size_t n = 0;
        for (size_t h = 0; h < c->n_used; h++) {
            struct cpeer *p = &c->peers[h];
            if (!p->used || !p->info.interested || p->regular ||
                (pass == 0 && (int)h == not ))
                continue;
            c->scratch[n++] = (int)h;
            total += now_ms - p->added_ms < CHOKER_NEW_PEER_MS
                         ? CHOKER_NEW_PEER_WEIGHT
                         : 1;
        }
        if (n == 0)
            continue;
        uint64_t r = rng_next(&c->rng) % total;
        for (size_t i = 0; i < n; i++) {
            struct cpeer *p = &c->peers[c->scratch[i]];
            uint64_t w = now_ms - p->added_ms < CHOKER_NEW_PEER_MS
                             ? CHOKER_NEW_PEER_WEIGHT
                             : 1;
            if (r < w) {
                p->optimistic = true;
                return;
            }
            r -= w;
        }
    }
}

size_t
choker_run(struct choker *c, int64_t now_ms, struct choker_decision *out,
           size_t max)
{
    int had_optimistic = -1;
    bool have_optimistic = false;

    /* Peers that lost interest give their slots back. */
    for (size_t h = 0; h < c->n_used; h++) {
        struct cpeer *p = &c->peers[h];
        if (!p->used || p->info.interested)
            continue;
        p->regular = false;
        p->optimistic = false;
    }
    for (size_t h = 0; h < c->n_used; h++)
        if (c->peers[h].optimistic)
            have_optimistic = true;

    bool rotate = c->optimistic_on && now_ms >= c->next_optimistic;
    if (rotate || !c->optimistic_on) {
        for (size_t h = 0; h < c->n_used; h++) {
            if (c->peers[h].optimistic)
                had_optimistic = (int)h;
            c->peers[h].optimistic = false;
        }
        have_optimistic = false;
    }

    bool full = c->rechoke_now || now_ms >= c->next_rechoke;
    give_regular(c, now_ms, full);
    if (full) {
        c->rechoke_now = false;
        c->next_rechoke = now_ms + CHOKER_RECHOKE_MS;
    }

    if (c->optimistic_on && !have_optimistic) {
        give_optimistic(c, now_ms, had_optimistic);
        c->next_optimistic = now_ms + CHOKER_OPTIMISTIC_MS;
    }

    size_t n = 0;
    c->pending = false;
    for (size_t h = 0; h < c->n_used; h++) {
        struct cpeer *p = &c->peers[h];
        if (!p->used)
            continue;
        bool want = p->regular || p->optimistic;
        if (want == p->unchoked)
            continue;
        if (n == max) {
            c->pending = true;
            break;
        }
        p->unchoked = want;
        out[n++] = (struct choker_decision){
            .peer = (int)h, .tag = p->tag, .unchoke = want};
    }
    return n;
}

int64_t
choker_next_deadline(const struct choker *c, int64_t now_ms)
{
    if (c->rechoke_now || c->pending)
        return now_ms;
    int64_t d = c->next_rechoke;
    if (c->optimistic_on && c->next_optimistic < d)
        d = c->next_optimistic;
    return d;
}
