/* magnet_fetch — BEP 9 for one magnet link; see magnet_fetch.h. */
#include "daemon/magnet_fetch.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/bencode.h"
#include "common/buf.h"
#include "common/ext.h"
#include "common/hex.h"
#include "common/log.h"
#include "common/metainfo.h"
#include "daemon/peer.h"
#include "daemon/worker.h"

struct msrc {
    struct peer *p; /* borrowed: until mfetch_peer_gone */
    uint32_t serial;
    uint32_t size;
    uint32_t req[MFETCH_INFLIGHT];
    int64_t sent_ms[MFETCH_INFLIGHT];
    unsigned n_req;
    unsigned strikes;
    int64_t rest_until_ms;
    bool bad;
};

struct mjob;

struct mfetch {
    uint8_t hash[20];
    struct worker *w; /* borrowed */
    char **tr;        /* owned */
    size_t n_tr;
    mfetch_done_t done;
    void *arg;
    struct ext_metadata md; /* valid while have_md */
    bool have_md;
    uint32_t *from; /* owned: serial of the source of each piece */
    struct msrc src[MFETCH_SOURCES_MAX];
    size_t n_src;
    uint32_t next_serial;
    uint32_t cursor;
    struct mjob *job; /* the check running, or NULL */
    unsigned failures;
    /* After a failed check with several senders: one sender at a time,
     * so that the next failure names the liar. */
    bool solo;
};

struct mjob {
    struct mfetch *mf; /* NULL once the fetch is freed */
    struct ext_metadata md;
    uint32_t *from; /* owned */
    uint8_t hash[20];
    char **tr; /* owned copies */
    size_t n_tr;
    struct meta_info *meta; /* result */
    uint8_t *raw;
    size_t raw_len;
};

static int64_t
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
strv_free(char **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        free(v[i]);
    free(v);
}

static int
strv_copy(char ***ret, char *const *v, size_t n)
{
    if (n > MFETCH_TRACKERS_MAX)
        n = MFETCH_TRACKERS_MAX;
    char **c = calloc(n ? n : 1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        c[i] = strdup(v[i]);
        if (!c[i]) {
            strv_free(c, i);
            return -ENOMEM;
        }
    }
    *ret = c;
    return (int)n;
}

int
mfetch_new(struct mfetch **ret, const uint8_t info_hash[20], struct worker *w,
           char *const *tr, size_t n_tr, mfetch_done_t done, void *arg)
{
    struct mfetch *mf = calloc(1, sizeof(*mf));
    if (!mf)
        return -ENOMEM;
    int r = strv_copy(&mf->tr, tr, n_tr);
    if (r < 0) {
        free(mf);
        return r;
    }
    mf->n_tr = (size_t)r;
    memcpy(mf->hash, info_hash, 20);
    mf->w = w;
    mf->done = done;
    mf->arg = arg;
    *ret = mf;
    return 0;
}

static void
md_drop(struct mfetch *mf)
{
    if (mf->have_md)
        ext_metadata_release(&mf->md);
    mf->have_md = false;
    free(mf->from);
    mf->from = NULL;
}

void
mfetch_free(struct mfetch *mf)
{
    if (!mf)
        return;
    if (mf->job)
        mf->job->mf = NULL;
    md_drop(mf);
    strv_free(mf->tr, mf->n_tr);
    free(mf);
}

static struct msrc *
src_find(struct mfetch *mf, const struct peer *p)
{
    for (size_t i = 0; i < mf->n_src; i++)
        if (mf->src[i].p == p)
            return &mf->src[i];
    return NULL;
}

/* Start assembling size bytes. */
static int
md_start(struct mfetch *mf, uint32_t size)
{
    if (ext_metadata_init(&mf->md, size) < 0)
        return -ENOMEM;
    mf->from = calloc(mf->md.n_pieces ? mf->md.n_pieces : 1,
                      sizeof(*mf->from));
    if (!mf->from) {
        ext_metadata_release(&mf->md);
        return -ENOMEM;
    }
    mf->have_md = true;
    mf->cursor = 0;
    return 0;
}

static bool
src_usable(const struct mfetch *mf, const struct msrc *s, int64_t now)
{
    return !s->bad && mf->have_md && s->size == mf->md.size &&
           s->rest_until_ms <= now;
}

static bool
requested(const struct mfetch *mf, uint32_t piece)
{
    for (size_t i = 0; i < mf->n_src; i++)
        for (unsigned k = 0; k < mf->src[i].n_req; k++)
            if (mf->src[i].req[k] == piece)
                return true;
    return false;
}

/* Choose the size to assemble: keep the current one while a source has
 * it or pieces are in; else the first good source's. */
static void
choose_size(struct mfetch *mf)
{
    if (mf->job)
        return;
    if (mf->have_md) {
        if (mf->md.n_have)
            return;
        for (size_t i = 0; i < mf->n_src; i++)
            if (!mf->src[i].bad && mf->src[i].size == mf->md.size)
                return;
        md_drop(mf);
    }
    for (size_t i = 0; i < mf->n_src; i++)
        if (!mf->src[i].bad) {
            (void)md_start(mf, mf->src[i].size);
            return;
        }
}

static void submit(struct mfetch *mf);

/* Did every piece in come from the source with this serial? */
static bool
md_from_only(const struct mfetch *mf, uint32_t serial)
{
    for (uint32_t i = 0; i < mf->md.n_pieces; i++)
        if (ext_metadata_has(&mf->md, i) && mf->from[i] != serial)
            return false;
    return true;
}

static void
pump_one(struct mfetch *mf, struct msrc *s, int64_t now)
{
    while (src_usable(mf, s, now) && s->n_req < MFETCH_INFLIGHT) {
        uint32_t n = mf->md.n_pieces, pick = UINT32_MAX;
        for (uint32_t k = 0; k < n; k++) {
            uint32_t i = (mf->cursor + k) % n;
            if (!ext_metadata_has(&mf->md, i) && !requested(mf, i)) {
                pick = i;
                break;
            }
        }
        if (pick == UINT32_MAX)
            return;
        if (peer_send_metadata_request(s->p, pick) < 0) {
            s->bad = true;
            return;
        }
        mf->cursor = (pick + 1) % n;
        s->req[s->n_req] = pick;
        s->sent_ms[s->n_req] = now;
        s->n_req++;
    }
}

static void
pump(struct mfetch *mf)
{
    if (mf->job)
        return;
    choose_size(mf);
    if (!mf->have_md)
        return;
    int64_t now = now_ms();
    size_t n = mf->n_src;
    if (mf->solo) {
        /* The source that has requests out, else the first usable. */
        for (size_t k = 0; k < n; k++)
            if (mf->src[k].n_req) {
                pump_one(mf, &mf->src[k], now);
                return;
            }
        for (size_t k = 0; k < n; k++)
            if (src_usable(mf, &mf->src[k], now)) {
                /* Start over: every piece from this one source. */
                if (mf->md.n_have && !md_from_only(mf, mf->src[k].serial))
                    ext_metadata_reset(&mf->md);
                pump_one(mf, &mf->src[k], now);
                return;
            }
        return;
    }
    /* Rotate the starting source so that one peer does not get it all. */
    size_t start = n ? (size_t)(now / 1000) % n : 0;
    for (size_t k = 0; k < n; k++)
        pump_one(mf, &mf->src[(start + k) % n], now);
}

void
mfetch_peer(struct mfetch *mf, struct peer *p, uint8_t ut_metadata,
            uint32_t metadata_size)
{
    if (!mf)
        return;
    struct msrc *s = src_find(mf, p);
    if (!ut_metadata || !metadata_size || metadata_size > EXT_METADATA_MAX) {
        if (s)
            s->bad = true; /* it no longer offers it */
        return;
    }
    if (!s) {
        if (mf->n_src >= MFETCH_SOURCES_MAX)
            return;
        s = &mf->src[mf->n_src++];
        memset(s, 0, sizeof(*s));
        s->p = p;
        s->serial = ++mf->next_serial;
    }
    s->size = metadata_size;
    pump(mf);
}

void
mfetch_peer_gone(struct mfetch *mf, struct peer *p)
{
    if (!mf)
        return;
    struct msrc *s = src_find(mf, p);
    if (!s)
        return;
    size_t i = (size_t)(s - mf->src);
    mf->src[i] = mf->src[--mf->n_src];
    pump(mf); /* its requests are free again */
}

/* Forget piece from s's requests; false if it was not asked of s. */
static bool
req_remove(struct msrc *s, uint32_t piece)
{
    for (unsigned k = 0; k < s->n_req; k++)
        if (s->req[k] == piece) {
            s->req[k] = s->req[s->n_req - 1];
            s->sent_ms[k] = s->sent_ms[s->n_req - 1];
            s->n_req--;
            return true;
        }
    return false;
}

static void
strike(struct msrc *s, int64_t now)
{
    s->rest_until_ms = now + MFETCH_REST_MS;
    if (++s->strikes >= MFETCH_STRIKES)
        s->bad = true;
}

void
mfetch_data(struct mfetch *mf, struct peer *p, uint32_t piece,
            uint32_t total_size, uint8_t *data, uint32_t len)
{
    struct msrc *s = mf ? src_find(mf, p) : NULL;
    if (!s || !req_remove(s, piece) || mf->job || !mf->have_md) {
        free(data);
        return;
    }
    if (total_size != s->size || total_size != mf->md.size) {
        s->bad = true; /* not what its handshake said */
        free(data);
        pump(mf);
        return;
    }
    int r = ext_metadata_add(&mf->md, piece, data, len);
    free(data);
    if (r < 0) {
        s->bad = true;
    } else if (r == 1) {
        mf->from[piece] = s->serial;
        s->strikes = 0;
    }
    if (ext_metadata_complete(&mf->md)) {
        submit(mf);
        return;
    }
    pump(mf);
}

void
mfetch_reject(struct mfetch *mf, struct peer *p, uint32_t piece)
{
    struct msrc *s = mf ? src_find(mf, p) : NULL;
    if (!s || !req_remove(s, piece))
        return;
    strike(s, now_ms());
    pump(mf);
}

void
mfetch_tick(struct mfetch *mf, int64_t now)
{
    if (!mf)
        return;
    for (size_t i = 0; i < mf->n_src; i++) {
        struct msrc *s = &mf->src[i];
        bool late = false;
        for (unsigned k = 0; k < s->n_req;) {
            if (now - s->sent_ms[k] > MFETCH_TIMEOUT_MS) {
                late = true;
                (void)req_remove(s, s->req[k]);
            } else {
                k++;
            }
        }
        if (late)
            strike(s, now);
    }
    if (!mf->job && mf->have_md && ext_metadata_complete(&mf->md)) {
        submit(mf); /* it could not be queued before */
        return;
    }
    pump(mf);
}

size_t
mfetch_sources(const struct mfetch *mf)
{
    size_t n = 0;
    int64_t now = now_ms();
    for (size_t i = 0; mf && i < mf->n_src; i++)
        n += !mf->src[i].bad && mf->src[i].rest_until_ms <= now;
    return n;
}

/* --- the check, on the worker ------------------------------------------ */

static void
mjob_free(struct mjob *j)
{
    ext_metadata_release(&j->md);
    free(j->from);
    strv_free(j->tr, j->n_tr);
    meta_free(j->meta);
    free(j->raw);
    free(j);
}

/* The .torrent: {announce, announce-list (a tier per tracker), info}. */
static int
build_torrent(struct mjob *j, struct buf *b)
{
    int r = benc_put_dict(b);
    if (r >= 0 && j->n_tr) {
        r = benc_put_cstr(b, "announce");
        if (r >= 0)
            r = benc_put_cstr(b, j->tr[0]);
        if (r >= 0)
            r = benc_put_cstr(b, "announce-list");
        if (r >= 0)
            r = benc_put_list(b);
        for (size_t i = 0; r >= 0 && i < j->n_tr; i++) {
            r = benc_put_list(b);
            if (r >= 0)
                r = benc_put_cstr(b, j->tr[i]);
            if (r >= 0)
                r = benc_put_end(b);
        }
        if (r >= 0)
            r = benc_put_end(b);
    }
    if (r >= 0)
        r = benc_put_cstr(b, "info");
    if (r >= 0)
        r = buf_append(b, j->md.buf, j->md.size);
    if (r >= 0)
        r = benc_put_end(b);
    return r < 0 ? r : 0;
}

static int
mjob_run(void *arg)
{
    struct mjob *j = arg;
    int r = ext_metadata_verify(&j->md, j->hash);
    if (r < 0)
        return r;
    struct buf b;
    buf_init(&b, (size_t)EXT_METADATA_MAX + (64u << 10));
    r = build_torrent(j, &b);
    if (r < 0) {
        buf_release(&b);
        return r;
    }
    size_t len = 0;
    uint8_t *raw = (uint8_t *)buf_steal(&b, &len);
    buf_release(&b);
    if (!raw)
        return -ENOMEM;
    struct meta_info *meta = NULL;
    if (meta_parse(&meta, raw, len, NULL, NULL) < 0) {
        free(raw);
        return -EINVAL; /* hashes right, but not a usable info dict */
    }
    if (memcmp(meta->info_hash, j->hash, 20) != 0) {
        meta_free(meta);
        free(raw);
        return -EBADMSG;
    }
    j->meta = meta;
    j->raw = raw;
    j->raw_len = len;
    return 0;
}

static void
mjob_done(void *arg, int r)
{
    struct mjob *j = arg;
    struct mfetch *mf = j->mf;
    if (!mf) {
        mjob_free(j);
        return;
    }
    mf->job = NULL;
    if (r < 0) {
        char hex[41];
        hex_encode(hex, mf->hash, 20);
        log_field(LOG_LEVEL_INFO, "TORRENT", hex,
                  "metadata from peers is unusable (%s), fetching it again",
                  r == -EBADMSG ? "wrong info-hash"
                  : r == -EINVAL ? "not a valid info dictionary"
                                 : strerror(-r));
        mf->failures++;
        /* One sender: it lied, never ask it again.  Several: a strike
         * each, and from now on one sender at a time. */
        uint32_t one = j->md.n_pieces ? j->from[0] : 0;
        bool single = true;
        for (uint32_t i = 1; i < j->md.n_pieces; i++)
            single = single && j->from[i] == one;
        for (size_t k = 0; k < mf->n_src; k++) {
            struct msrc *src = &mf->src[k];
            bool sent = false;
            for (uint32_t i = 0; i < j->md.n_pieces && !sent; i++)
                sent = j->from[i] == src->serial;
            if (sent && single)
                src->bad = true;
            else if (sent)
                strike(src, 0);
        }
        if (!single)
            mf->solo = true;
        mjob_free(j);
        pump(mf);
        return;
    }
    struct meta_info *meta = j->meta;
    uint8_t *raw = j->raw;
    size_t len = j->raw_len;
    j->meta = NULL;
    j->raw = NULL;
    mjob_free(j);
    /* Last: done may free mf. */
    mf->done(mf->arg, meta, raw, len);
}

static void
submit(struct mfetch *mf)
{
    struct mjob *j = calloc(1, sizeof(*j));
    if (!j)
        return; /* tried again at the next piece or tick */
    int r = strv_copy(&j->tr, mf->tr, mf->n_tr);
    if (r < 0) {
        free(j);
        return;
    }
    j->n_tr = (size_t)r;
    j->mf = mf;
    memcpy(j->hash, mf->hash, 20);
    j->md = mf->md;
    j->from = mf->from;
    if (worker_submit(mf->w, mjob_run, mjob_done, j) < 0) {
        strv_free(j->tr, j->n_tr);
        free(j);
        return;
    }
    memset(&mf->md, 0, sizeof(mf->md));
    mf->from = NULL;
    mf->have_md = false;
    mf->job = j;
    for (size_t i = 0; i < mf->n_src; i++)
        mf->src[i].n_req = 0;
}
