/* torrent — the reactor-side record of one torrent. */
#include "daemon/torrent.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

#include "common/hex.h"
#include "common/metainfo.h"
#include "daemon/seedlimit.h"
#include "daemon/state.h"

static const char *const state_names[TORRENT_STATE_MAX] = {
    [TORRENT_CHECKING] = "checking", [TORRENT_QUEUED] = "queued",
    [TORRENT_METADATA] = "metadata", [TORRENT_DOWNLOADING] = "downloading",
    [TORRENT_SEEDING] = "seeding",   [TORRENT_PAUSED] = "paused",
    [TORRENT_ERROR] = "error",       [TORRENT_MOVING] = "moving",
};

const char *
torrent_state_name(enum torrent_state s)
{
    return s < TORRENT_STATE_MAX ? state_names[s] : "unknown";
}

static int
torrent_alloc(struct torrent **ret, uint32_t id, const char *download_dir,
              int64_t now)
{
    struct torrent *t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    t->download_dir = strdup(download_dir);
    if (!t->download_dir) {
        free(t);
        return -ENOMEM;
    }
    t->id = id;
    t->state = TORRENT_PAUSED;
    t->added_at = now;
    t->ratio_limit = -1;
    t->idle_limit = -1;
    *ret = t;
    return 0;
}

int
torrent_new_meta(struct torrent **ret, struct meta_info *meta, uint32_t id,
                 const char *download_dir, int64_t now)
{
    struct torrent *t;
    int r = torrent_alloc(&t, id, download_dir, now);
    if (r < 0) {
        meta_free(meta);
        return r;
    }
    t->meta = meta;
    memcpy(t->info_hash, meta->info_hash, sizeof(t->info_hash));
    hex_encode(t->hex, t->info_hash, sizeof(t->info_hash));
    t->file_have =
        calloc(meta->n_files ? meta->n_files : 1, sizeof(*t->file_have));
    if (!t->file_have) {
        torrent_free(t);
        return -ENOMEM;
    }
    torrent_recount(t);
    *ret = t;
    return 0;
}

int
torrent_new_magnet(struct torrent **ret, struct magnet *m, uint32_t id,
                   const char *download_dir, int64_t now)
{
    struct torrent *t;
    int r = torrent_alloc(&t, id, download_dir, now);
    if (r < 0) {
        magnet_release(m);
        return r;
    }
    t->magnet = *m;
    memset(m, 0, sizeof(*m));
    memcpy(t->info_hash, t->magnet.btih, sizeof(t->info_hash));
    hex_encode(t->hex, t->info_hash, sizeof(t->info_hash));
    *ret = t;
    return 0;
}

void
torrent_free(struct torrent *t)
{
    if (!t)
        return;
    meta_free(t->meta);
    magnet_release(&t->magnet);
    free(t->download_dir);
    free(t->error);
    free(t->have);
    free(t->priority);
    free(t->file_have);
    free(t);
}

const char *
torrent_name(const struct torrent *t)
{
    if (t->meta)
        return t->meta->name;
    if (t->magnet.dn && *t->magnet.dn)
        return t->magnet.dn;
    return t->hex;
}

size_t
torrent_n_files(const struct torrent *t)
{
    return t->meta ? t->meta->n_files : 0;
}

bool
torrent_file_wanted(const struct torrent *t, size_t i)
{
    return !t->priority || t->priority[i] != STATE_PRIO_SKIP;
}

void
torrent_recount(struct torrent *t)
{
    t->size_wanted = 0;
    t->have_wanted = 0;
    t->size_total = 0;
    t->have_total = 0;
    for (size_t i = 0; i < torrent_n_files(t); i++) {
        const struct meta_file *f = &t->meta->files[i];
        if (f->attr & META_ATTR_PAD)
            continue;
        uint64_t have = t->file_have ? t->file_have[i] : 0;
        if (have > f->length)
            have = f->length; /* never: torrent_file_have() clips */
        t->size_total += f->length;
        t->have_total += have;
        if (!torrent_file_wanted(t, i))
            continue;
        t->size_wanted += f->length;
        t->have_wanted += have;
    }
}

uint64_t
torrent_bytes_missing(const struct torrent *t)
{
    return t->size_total > t->have_total ? t->size_total - t->have_total : 0;
}

bool
torrent_complete(const struct torrent *t)
{
    return t->meta && t->have_wanted == t->size_wanted;
}

void
torrent_set_have(struct torrent *t, uint8_t *have, uint32_t n_pieces,
                 uint64_t *file_have)
{
    free(t->have);
    t->have = have;
    t->n_pieces = have ? n_pieces : 0;
    if (file_have) {
        free(t->file_have);
        t->file_have = file_have;
    } else if (t->file_have) {
        memset(t->file_have, 0, torrent_n_files(t) * sizeof(*t->file_have));
    }
    torrent_recount(t);
}

static bool
bit(const uint8_t *v, uint32_t i)
{
    return v[i / 8] & (0x80u >> (i % 8));
}

void
torrent_file_have(const struct meta_info *meta, const uint8_t *have,
                  uint32_t n_pieces, uint64_t *ret)
{
    memset(ret, 0, meta->n_files * sizeof(*ret));
    if (!have || n_pieces != meta->n_pieces)
        return;
    /* Files are in offset order: walk pieces and files together. */
    size_t f = 0;
    for (uint32_t p = 0; p < n_pieces; p++) {
        uint64_t start = (uint64_t)p * meta->piece_length;
        uint64_t end = start + meta_piece_size(meta, p);
        while (f < meta->n_files &&
               meta->files[f].offset + meta->files[f].length <= start)
            f++;
        if (!bit(have, p))
            continue;
        for (size_t k = f; k < meta->n_files && meta->files[k].offset < end;
             k++) {
            const struct meta_file *mf = &meta->files[k];
            uint64_t a = mf->offset > start ? mf->offset : start;
            uint64_t b =
                mf->offset + mf->length < end ? mf->offset + mf->length : end;
            if (b > a)
                ret[k] += b - a;
        }
    }
}

int
torrent_apply_resume(struct torrent *t, const struct state_resume *r)
{
    char *dir = strdup(r->download_dir);
    char *err = r->error ? strdup(r->error) : NULL;
    if (!dir || (r->error && !err)) {
        free(dir);
        free(err);
        return -ENOMEM;
    }
    free(t->download_dir);
    t->download_dir = dir;
    free(t->error);
    t->error = err;
    t->id = r->id;
    t->paused = r->paused;
    t->added_at = r->added_at;
    t->completed_at = r->completed_at;
    t->downloaded = r->downloaded;
    t->uploaded = r->uploaded;
    t->download_limit = r->download_limit;
    t->upload_limit = r->upload_limit;
    t->ratio_limit = r->ratio_limit;
    t->idle_limit = r->idle_limit;
    t->stop_reason = r->stop_reason;
    t->seed_override = r->seed_override;
    t->sequential = r->sequential;
    if (!t->meta)
        return 0;

    size_t nf = t->meta->n_files;
    if (r->n_priority == nf) {
        uint8_t *p = malloc(nf ? nf : 1);
        if (!p)
            return -ENOMEM;
        memcpy(p, r->priority, nf);
        free(t->priority);
        t->priority = p;
    }
    if (r->pieces == t->meta->n_pieces && r->have) {
        size_t n = (r->pieces + 7u) / 8u;
        uint8_t *h = malloc(n);
        uint64_t *fh = malloc((nf ? nf : 1) * sizeof(*fh));
        if (!h || !fh) {
            free(h);
            free(fh);
            return -ENOMEM;
        }
        memcpy(h, r->have, n);
        torrent_file_have(t->meta, h, r->pieces, fh);
        torrent_set_have(t, h, r->pieces, fh);
    }
    torrent_recount(t);
    return 0;
}

void
torrent_to_resume(const struct torrent *t, struct state_resume *r)
{
    memset(r, 0, sizeof(*r));
    r->id = t->id;
    r->paused = t->paused;
    r->download_dir = t->download_dir;
    r->added_at = t->added_at;
    r->completed_at = t->completed_at;
    r->downloaded = t->downloaded;
    r->uploaded = t->uploaded;
    r->download_limit = t->download_limit;
    r->upload_limit = t->upload_limit;
    r->ratio_limit = t->ratio_limit;
    r->idle_limit = t->idle_limit;
    r->stop_reason = t->paused ? t->stop_reason : SEEDLIMIT_NONE;
    r->seed_override = t->seed_override;
    r->sequential = t->sequential;
    r->have = t->have;
    r->pieces = t->have ? t->n_pieces : 0;
    r->priority = t->priority;
    r->n_priority = t->priority ? (uint32_t)torrent_n_files(t) : 0;
    r->error = t->state == TORRENT_ERROR ? t->error : NULL;
}

static int
add(struct json_object *o, const char *key, struct json_object *v)
{
    /* json-c takes v; a NULL v is JSON null, which is what we want only
     * where we ask for it, so the callers pass real objects. */
    return json_object_object_add(o, key, v);
}

struct json_object *
torrent_to_json(const struct torrent *t)
{
    struct json_object *o = json_object_new_object();
    if (!o)
        return NULL;
    double progress = 0.0;
    if (t->meta)
        progress = t->size_wanted
                       ? (double)t->have_wanted / (double)t->size_wanted
                       : 1.0;
    if (t->state == TORRENT_CHECKING && t->meta && t->meta->n_pieces)
        progress = (double)t->check_done / (double)t->meta->n_pieces;
    if (progress > 1.0)
        progress = 1.0;
    uint64_t base =
        t->downloaded > t->have_wanted ? t->downloaded : t->have_wanted;
    double ratio = base ? (double)t->uploaded / (double)base : 0.0;

    int r = 0;
    r |= add(o, "id", json_object_new_int64(t->id));
    r |= add(o, "info_hash", json_object_new_string(t->hex));
    r |= add(o, "name", json_object_new_string(torrent_name(t)));
    r |= add(o, "state", json_object_new_string(torrent_state_name(t->state)));
    r |= add(o, "progress", json_object_new_double(progress));
    r |= add(o, "size_bytes", json_object_new_uint64(t->size_wanted));
    r |= add(o, "have_bytes", json_object_new_uint64(t->have_wanted));
    r |= add(o, "downloaded_bytes", json_object_new_uint64(t->downloaded));
    r |= add(o, "uploaded_bytes", json_object_new_uint64(t->uploaded));
    /* Nothing moves data yet (no engine): the rates are truly 0. */
    r |= add(o, "download_rate", json_object_new_uint64(t->down_rate));
    r |= add(o, "upload_rate", json_object_new_uint64(t->up_rate));
    r |= add(o, "peers_connected", json_object_new_int64(t->peers_connected));
    r |= add(o, "sequential", json_object_new_boolean(t->sequential));
    r |= add(o, "eta_s",
             t->down_rate && t->size_wanted > t->have_wanted
                 ? json_object_new_int64((int64_t)((t->size_wanted -
                                                    t->have_wanted) /
                                                   t->down_rate))
                 : NULL); /* unknown without a rate */
    r |= add(o, "ratio", json_object_new_double(ratio));
    r |= add(o, "download_dir", json_object_new_string(t->download_dir));
    r |= add(o, "error",
             t->state == TORRENT_ERROR && t->error
                 ? json_object_new_string(t->error)
                 : NULL);
    r |= add(o, "added_at", json_object_new_int64(t->added_at));
    r |= add(o, "completed_at",
             t->completed_at ? json_object_new_int64(t->completed_at) : NULL);
    r |= add(o, "paused", json_object_new_boolean(t->paused));
    r |= add(o, "has_metadata", json_object_new_boolean(t->meta != NULL));
    r |= add(o, "total_size",
             t->meta ? json_object_new_uint64(t->meta->total_size) : NULL);
    r |= add(o, "piece_length",
             t->meta ? json_object_new_int64(t->meta->piece_length) : NULL);
    r |= add(o, "piece_count",
             t->meta ? json_object_new_int64(t->meta->n_pieces) : NULL);
    r |= add(o, "file_count", json_object_new_uint64(torrent_n_files(t)));
    r |= add(o, "private",
             json_object_new_boolean(t->meta && t->meta->private_torrent));
    r |= add(o, "download_limit", json_object_new_uint64(t->download_limit));
    r |= add(o, "upload_limit", json_object_new_uint64(t->upload_limit));
    r |= add(o, "ratio_limit",
             t->ratio_limit >= 0
                 ? json_object_new_double((double)t->ratio_limit / 1000.0)
                 : NULL);
    r |= add(o, "idle_limit",
             t->idle_limit >= 0
                 ? json_object_new_double((double)t->idle_limit / 1000.0)
                 : NULL);
    /* Why it is paused when a seed limit paused it; null otherwise. */
    const char *why = t->paused ? seedlimit_reason_name(
                                      (enum seedlimit_reason)t->stop_reason)
                                : NULL;
    r |= add(o, "stop_reason", why ? json_object_new_string(why) : NULL);
    r |= add(o, "seed_limit_override",
             json_object_new_boolean(t->seed_override));
    if (r != 0) {
        json_object_put(o);
        return NULL;
    }
    return o;
}

static bool
all_digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return n > 0;
}

static bool
all_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (hex_digit((unsigned char)s[i]) < 0)
            return false;
    return n > 0;
}

static int
find_id(struct torrent *const *v, size_t n, uint64_t id, struct torrent **ret)
{
    for (size_t i = 0; i < n; i++) {
        if (!v[i]->removed && v[i]->id == id) {
            *ret = v[i];
            return 0;
        }
    }
    return -ENOENT;
}

int
torrent_find(struct torrent *const *v, size_t n, struct json_object *spec,
             struct torrent **ret)
{
    if (!spec)
        return -EINVAL;
    if (json_object_is_type(spec, json_type_int)) {
        int64_t id = json_object_get_int64(spec);
        if (id < 1 || id > UINT32_MAX)
            return -ENOENT;
        return find_id(v, n, (uint64_t)id, ret);
    }
    if (!json_object_is_type(spec, json_type_string))
        return -EINVAL;
    const char *s = json_object_get_string(spec);
    size_t len = (size_t)json_object_get_string_len(spec);
    if (strlen(s) != len)
        return -EINVAL; /* an embedded NUL */
    /* Digits only: an id when short, else a hash (prefix) made of digits.
     * An id never has 6 or more digits in practice, but a hash prefix of
     * 6+ decimal digits is possible: try the id first, then the hash. */
    if (all_digits(s, len) && len <= 10) {
        uint64_t id = 0;
        for (size_t i = 0; i < len; i++)
            id = id * 10 + (uint64_t)(s[i] - '0');
        if (id >= 1 && id <= UINT32_MAX && find_id(v, n, id, ret) == 0)
            return 0;
        if (len < 6)
            return -ENOENT;
    }
    if (len < 6 || len > 40 || !all_hex(s, len))
        return -EINVAL;
    char lower[41];
    for (size_t i = 0; i < len; i++)
        lower[i] =
            (char)((s[i] >= 'A' && s[i] <= 'F') ? s[i] - 'A' + 'a' : s[i]);
    lower[len] = '\0';
    struct torrent *found = NULL;
    for (size_t i = 0; i < n; i++) {
        if (v[i]->removed || memcmp(v[i]->hex, lower, len) != 0)
            continue;
        if (found)
            return -ENOTUNIQ;
        found = v[i];
    }
    if (!found)
        return -ENOENT;
    *ret = found;
    return 0;
}
