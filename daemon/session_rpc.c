/* session_rpc — the control API's methods (rpc.h) on the session: what a
 * client asks for, checked completely before anything changes; the answer
 * comes once a change is durable where the method says so (torrentd-api(7)).
 *
 * Thread: reactor only.  Work that grows with its input (decoding and
 * parsing a .torrent) runs on the cpu worker.
 */
#include "daemon/session_int.h"

#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/buf.h"
#include "common/log.h"
#include "common/magnet.h"
#include "common/metainfo.h"
#include "daemon/engine.h"
#include "daemon/events.h"
#include "daemon/hook.h"
#include "daemon/listen.h"
#include "daemon/lsd.h"
#include "daemon/move.h"
#include "daemon/rpc.h"
#include "daemon/verify.h"
#include "daemon/watch.h"
#include "daemon/worker.h"

/* --- rpc helpers ---------------------------------------------------------- */

static struct json_object *
param(struct json_object *params, const char *key)
{
    struct json_object *v = NULL;
    if (params && json_object_is_type(params, json_type_object) &&
        json_object_object_get_ex(params, key, &v))
        return v;
    return NULL;
}

/* A boolean parameter: *ret keeps its default when absent.  False (after
 * failing the call) for another type. */
static bool
param_bool(struct rpc_call *call, struct json_object *params, const char *key,
           bool *ret)
{
    struct json_object *v = param(params, key);
    if (!v)
        return true;
    if (!json_object_is_type(v, json_type_boolean)) {
        rpc_call_fail(call, RPC_INVALID_PARAMS, NULL,
                      "'%s' must be true or false", key);
        return false;
    }
    *ret = json_object_get_boolean(v);
    return true;
}

static bool
refuse_if_stopping(struct session *s, struct rpc_call *call)
{
    if (!s->stopping)
        return false;
    rpc_call_fail(call, RPC_E_SHUTTING_DOWN, NULL,
                  "torrentd is shutting down; try again once it is back");
    return true;
}

/* The torrent named by params "torrent"; fails the call and returns NULL
 * when there is none. */
static struct torrent *
param_torrent(struct session *s, struct rpc_call *call,
              struct json_object *params)
{
    struct json_object *spec = param(params, "torrent");
    if (!spec) {
        rpc_call_fail(call, RPC_INVALID_PARAMS, NULL,
                      "missing 'torrent': give an id, an info-hash or a "
                      "prefix of at least 6 hex digits");
        return NULL;
    }
    struct torrent *t = NULL;
    int r = torrent_find(s->v, s->n, spec, &t);
    if (r == 0)
        return t;
    struct json_object *data = json_object_new_object();
    if (data)
        json_object_object_add(data, "torrent", json_object_get(spec));
    const char *txt =
        json_object_to_json_string_ext(spec, JSON_C_TO_STRING_PLAIN);
    if (r == -ENOTUNIQ) {
        struct json_object *m = json_object_new_array();
        size_t len = strlen(json_object_get_string(spec));
        for (size_t i = 0; m && i < s->n; i++)
            if (strncasecmp(s->v[i]->hex, json_object_get_string(spec), len) ==
                0)
                json_object_array_add(m, json_object_new_string(s->v[i]->hex));
        if (data)
            json_object_object_add(data, "matches", m);
        else
            json_object_put(m);
        rpc_call_fail(call, RPC_E_AMBIGUOUS, data,
                      "%s names several torrents: give more hex digits", txt);
    } else if (r == -EINVAL) {
        json_object_put(data);
        rpc_call_fail(call, RPC_INVALID_PARAMS, NULL,
                      "'torrent' must be an id, a 40-digit info-hash or a "
                      "prefix of at least 6 hex digits, not %s",
                      txt);
    } else {
        rpc_call_fail(call, RPC_E_TORRENT_NOT_FOUND, data,
                      "no torrent %s: see torrent.list", txt);
    }
    return NULL;
}

static void
log_change(struct rpc_call *call, const struct torrent *t, const char *what)
{
    const struct rpc_caller *c = call ? rpc_call_caller(call) : NULL;
    if (c)
        log_field(LOG_LEVEL_INFO, "TORRENT", t->hex,
                  "%s '%s' (id %" PRIu32 ") by uid %u", what, torrent_name(t),
                  t->id, (unsigned)c->uid);
    else
        log_field(LOG_LEVEL_INFO, "TORRENT", t->hex, "%s '%s' (id %" PRIu32 ")",
                  what, torrent_name(t), t->id);
}

/* --- torrent.add ------------------------------------------------------------
 */

struct add_req {
    struct session *s;
    struct rpc_call *call;      /* or NULL (watch directory) */
    struct json_object *params; /* owned reference: keeps b64 alive */
    const char *b64;            /* borrowed from params */
    size_t b64_len;
    char *download_dir; /* owned */
    bool paused;
    /* From the cpu job. */
    uint8_t *raw; /* owned: the .torrent */
    size_t raw_len;
    struct meta_info *meta; /* owned */
    int err;                /* 0, -EINVAL (base64), or enum meta_error */
    struct meta_errinfo ei;
    void *watch_token; /* watch directory: watch_added() */
};

static void
add_req_free(struct add_req *a)
{
    if (!a)
        return;
    json_object_put(a->params);
    free(a->download_dir);
    free(a->raw);
    meta_free(a->meta);
    free(a);
}

static int
b64_value(int c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Strict base64 (RFC 4648, padding optional, whitespace ignored).  Returns
 * 0 and a new buffer, -EINVAL or -ENOMEM. */
static int
b64_decode(const char *in, size_t n, uint8_t **ret, size_t *ret_len)
{
    uint8_t *out = malloc(n / 4 * 3 + 3);
    if (!out)
        return -ENOMEM;
    size_t o = 0, pad = 0;
    uint32_t acc = 0;
    unsigned bits = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c == ' ' || c == '\n' || c == '\r' || c == '\t')
            continue;
        if (c == '=') {
            pad++;
            continue;
        }
        int v = b64_value(c);
        if (v < 0 || pad) {
            free(out);
            return -EINVAL;
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    /* Leftover bits must be zero and fewer than 6; padding at most 2. */
    if (bits >= 6 || (acc & ((1u << bits) - 1u)) || pad > 2) {
        free(out);
        return -EINVAL;
    }
    *ret = out;
    *ret_len = o;
    return 0;
}

static int
add_parse_run(void *arg)
{
    struct add_req *a = arg;
    int r = b64_decode(a->b64, a->b64_len, &a->raw, &a->raw_len);
    if (r < 0) {
        a->err = r;
        return r;
    }
    r = meta_parse(&a->meta, a->raw, a->raw_len, NULL, &a->ei);
    if (r < 0)
        a->err = r;
    return r;
}

static struct json_object *
add_result(const char *status, const struct torrent *t)
{
    struct json_object *o = json_object_new_object();
    if (!o)
        return NULL;
    json_object_object_add(o, "status", json_object_new_string(status));
    json_object_object_add(o, "info_hash", json_object_new_string(t->hex));
    json_object_object_add(o, "id", json_object_new_int64(t->id));
    json_object_object_add(o, "name", json_object_new_string(torrent_name(t)));
    return o;
}

static void
add_done(struct session *s, struct io_job *j, int r)
{
    struct torrent *t = j->t;
    if (r < 0) {
        if (j->call)
            rpc_call_fail(j->call, RPC_E_IO, NULL,
                          "cannot save the torrent: %s: %s; check the state "
                          "directory '%s'",
                          j->failed, strerror(-r), j->dir);
        j->call = NULL;
        if (!t->removed) {
            /* Leave no half-written torrent behind. */
            struct io_job *u = session_io_job_new(s, NULL, NULL);
            if (u) {
                char name[64];
                snprintf(name, sizeof(name), "%s.resume", t->hex);
                session_io_add(u, IO_UNLINK, name);
                snprintf(name, sizeof(name), "%s.%s", t->hex,
                         t->meta ? "torrent" : "magnet");
                session_io_add(u, IO_UNLINK, name);
                session_io_submit(s, u);
            }
            session_list_remove(s, t);
            session_status_changed(s);
        }
        return;
    }
    if (j->call) {
        rpc_call_reply(j->call, json_object_get(j->result));
        j->call = NULL;
    }
    if (t->removed || s->stopping)
        return;
    session_publish_torrent(s, "torrent.added", t, NULL);
    if (j->any_data) {
        session_start_check(s, t);
    } else {
        session_settle(s, t);
    }
    session_status_changed(s);
}

/* A new torrent (taken, not yet in the list): save it, then reply. */
static void
add_new(struct session *s, struct rpc_call *call, struct torrent *t,
        uint8_t *raw, size_t raw_len, struct add_req *a)
{
    char name[64];
    struct io_job *j = NULL;
    int r = session_list_insert(s, t);
    if (r < 0) {
        free(raw);
        torrent_free(t);
        goto nomem;
    }
    j = session_io_job_new(s, t, call);
    if (!j) {
        free(raw);
        session_list_remove(s, t);
        goto nomem;
    }
    if (t->meta) {
        snprintf(name, sizeof(name), "%s.torrent", t->hex);
        r = session_io_add_write(j, name, (char *)raw, raw_len);
    } else {
        struct buf b;
        buf_init(&b, STATE_MAX_MAGNET);
        r = magnet_format(&t->magnet, &b);
        if (r == 0)
            r = buf_putc(&b, '\n');
        size_t len = 0;
        char *text = buf_steal(&b, &len);
        buf_release(&b);
        snprintf(name, sizeof(name), "%s.magnet", t->hex);
        if (r == 0)
            r = session_io_add_write(j, name, text, len);
        else
            free(text);
    }
    if (r == 0)
        r = session_io_add_resume(j, t);
    if (r == 0 && t->meta) {
        session_io_add(j, IO_STAT, NULL);
        j->meta = t->meta;
        j->data_dir = strdup(t->download_dir);
        if (!j->data_dir)
            r = -ENOMEM;
    }
    if (r < 0) {
        j->call = NULL;
        session_torrent_unref(j->t);
        session_io_job_free(j);
        session_list_remove(s, t);
        goto nomem;
    }
    j->result = add_result("added", t);
    j->after = add_done;
    if (a) {
        j->watch_token = a->watch_token;
        a->watch_token = NULL;
    }
    log_change(call, t, "added");
    session_io_submit(s, j);
    session_status_changed(s);
    return;
nomem:
    if (call)
        rpc_call_fail(call, RPC_INTERNAL_ERROR, NULL, "out of memory");
    else
        log_err("cannot add a torrent: out of memory");
}

/* Metadata for a torrent that was a magnet: keep its record, add what the
 * .torrent tells. */
static void
add_upgrade(struct session *s, struct torrent *t, struct meta_info *meta,
            uint8_t *raw, size_t raw_len)
{
    uint64_t *fh = calloc(meta->n_files + 1, sizeof(*fh));
    struct io_job *j = fh ? session_io_job_new(s, t, NULL) : NULL;
    char name[64];
    snprintf(name, sizeof(name), "%s.torrent", t->hex);
    if (!j || session_io_add_write(j, name, (char *)raw, raw_len) < 0) {
        free(fh);
        if (j) {
            session_torrent_unref(j->t);
            session_io_job_free(j);
        } else {
            free(raw);
        }
        meta_free(meta);
        return;
    }
    magnet_release(&t->magnet);
    t->meta = meta;
    free(t->file_have);
    t->file_have = fh;
    torrent_recount(t);
    (void)session_io_add_resume(j, t);
    snprintf(name, sizeof(name), "%s.magnet", t->hex);
    session_io_add(j, IO_UNLINK, name);
    session_io_submit(s, j);
    log_field(LOG_LEVEL_INFO, "TORRENT", t->hex, "'%s' now has its metadata",
              torrent_name(t));
    if (t->state == TORRENT_METADATA)
        session_settle(s, t);
    if (!t->paused)
        session_quick_check(s, t); /* its data may be on disk already */
}

void
session_metadata_received(struct session *s, struct torrent *t,
                          struct meta_info *meta, uint8_t *raw, size_t len)
{
    if (t->meta || t->removed || s->stopping ||
        memcmp(meta->info_hash, t->info_hash, sizeof(t->info_hash)) != 0) {
        meta_free(meta);
        free(raw);
        return;
    }
    add_upgrade(s, t, meta, raw, len);
}

/* The torrent is there already: answer once its add is durable. */
static void
add_exists(struct session *s, struct rpc_call *call, struct torrent *t,
           struct add_req *a)
{
    struct io_job *j = session_io_job_new(s, t, call);
    if (!j) {
        if (call)
            rpc_call_fail(call, RPC_INTERNAL_ERROR, NULL, "out of memory");
        return;
    }
    j->result = add_result("exists", t);
    if (a) {
        j->watch_token = a->watch_token;
        a->watch_token = NULL;
    }
    session_io_submit(s, j);
}

static void
add_with_meta(struct session *s, struct add_req *a)
{
    struct torrent *t = session_find_hash(s, a->meta->info_hash);
    if (t) {
        if (!t->meta) {
            add_upgrade(s, t, a->meta, a->raw, a->raw_len);
            a->meta = NULL;
            a->raw = NULL;
        }
        add_exists(s, a->call, t, a);
        return;
    }
    if (s->n >= SESSION_MAX_TORRENTS) {
        if (a->call)
            rpc_call_fail(a->call, RPC_E_BUSY, NULL,
                          "torrentd holds %d torrents, its limit: remove "
                          "some first",
                          SESSION_MAX_TORRENTS);
        return;
    }
    struct meta_info *meta = a->meta;
    a->meta = NULL;
    int r = torrent_new_meta(&t, meta, s->next_id, a->download_dir,
                             session_now_s());
    if (r < 0) {
        if (a->call)
            rpc_call_fail(a->call, RPC_INTERNAL_ERROR, NULL, "out of memory");
        return;
    }
    s->next_id++;
    t->paused = a->paused;
    uint8_t *raw = a->raw;
    a->raw = NULL;
    add_new(s, a->call, t, raw, a->raw_len, a);
}

static void
add_parse_done(void *arg, int r)
{
    struct add_req *a = arg;
    struct session *s = a->s;
    (void)r;
    if (s->stopping) {
        if (a->call)
            rpc_call_fail(a->call, RPC_E_SHUTTING_DOWN, NULL,
                          "torrentd is shutting down; add it again once it "
                          "is back");
    } else if (a->err == -EINVAL) {
        rpc_call_fail(a->call, RPC_E_INVALID_TORRENT, NULL,
                      "'metainfo' is not valid base64: send the .torrent "
                      "file's bytes in base64 (RFC 4648)");
    } else if (a->err == -ENOMEM) {
        rpc_call_fail(a->call, RPC_INTERNAL_ERROR, NULL, "out of memory");
    } else if (a->err < 0) {
        struct json_object *data = json_object_new_object();
        if (data) {
            json_object_object_add(
                data, "reason", json_object_new_string(meta_strerror(a->err)));
            json_object_object_add(data, "detail",
                                   json_object_new_string(a->ei.detail));
            json_object_object_add(data, "offset",
                                   json_object_new_uint64(a->ei.offset));
            if (a->ei.file_index >= 0)
                json_object_object_add(data, "file_index",
                                       json_object_new_int64(a->ei.file_index));
        }
        rpc_call_fail(a->call, RPC_E_INVALID_TORRENT, data,
                      "not a usable .torrent: %s (%s)", meta_strerror(a->err),
                      a->ei.detail);
    } else {
        add_with_meta(s, a);
    }
    add_req_free(a);
}

static bool
valid_dir(const char *d)
{
    return d[0] == '/' && strlen(d) < 4000;
}

static void
m_torrent_add(struct session *s, struct rpc_call *call,
              struct json_object *params)
{
    if (refuse_if_stopping(s, call))
        return;
    struct json_object *mi = param(params, "metainfo");
    struct json_object *mg = param(params, "magnet");
    struct json_object *dd = param(params, "download_dir");
    bool paused = false;
    if (!param_bool(call, params, "paused", &paused))
        return;
    if (!mi == !mg) {
        rpc_call_fail(call, RPC_INVALID_PARAMS, NULL,
                      "give exactly one of 'metainfo' (the .torrent file in "
                      "base64) and 'magnet' (a magnet URI)");
        return;
    }
    if ((mi && !json_object_is_type(mi, json_type_string)) ||
        (mg && !json_object_is_type(mg, json_type_string))) {
        rpc_call_fail(call, RPC_INVALID_PARAMS, NULL, "'%s' must be a string",
                      mi ? "metainfo" : "magnet");
        return;
    }
    const char *dir = s->cfg.download_dir;
    if (dd) {
        if (!json_object_is_type(dd, json_type_string) ||
            !valid_dir(json_object_get_string(dd)) ||
            (size_t)json_object_get_string_len(dd) !=
                strlen(json_object_get_string(dd))) {
            rpc_call_fail(call, RPC_INVALID_PARAMS, NULL,
                          "'download_dir' must be an absolute path");
            return;
        }
        dir = json_object_get_string(dd);
    }

    if (mg) {
        const char *uri = json_object_get_string(mg);
        size_t len = (size_t)json_object_get_string_len(mg);
        struct magnet m;
        size_t off = 0;
        int r = magnet_parse(&m, uri, len, NULL, &off);
        if (r == 0 && !m.has_btih) {
            magnet_release(&m);
            rpc_call_fail(call, RPC_E_INVALID_TORRENT, NULL,
                          "this magnet has only a v2 (btmh) hash; torrentd "
                          "needs a v1 info-hash (xt=urn:btih:)");
            return;
        }
        if (r < 0) {
            struct json_object *data = json_object_new_object();
            if (data) {
                json_object_object_add(
                    data, "reason", json_object_new_string(magnet_strerror(r)));
                json_object_object_add(data, "offset",
                                       json_object_new_uint64(off));
            }
            rpc_call_fail(call, RPC_E_INVALID_TORRENT, data,
                          "not a usable magnet URI: %s at byte %zu",
                          magnet_strerror(r), off);
            return;
        }
        struct torrent *t = session_find_hash(s, m.btih);
        if (t) {
            magnet_release(&m);
            add_exists(s, call, t, NULL);
            return;
        }
        if (s->n >= SESSION_MAX_TORRENTS) {
            magnet_release(&m);
            rpc_call_fail(call, RPC_E_BUSY, NULL,
                          "torrentd holds its limit of torrents: remove "
                          "some first");
            return;
        }
        if (torrent_new_magnet(&t, &m, s->next_id, dir, session_now_s()) < 0) {
            rpc_call_fail(call, RPC_INTERNAL_ERROR, NULL, "out of memory");
            return;
        }
        s->next_id++;
        t->paused = paused;
        add_new(s, call, t, NULL, 0, NULL);
        return;
    }

    size_t len = (size_t)json_object_get_string_len(mi);
    if (len > SESSION_MAX_B64) {
        rpc_call_fail(call, RPC_E_INVALID_TORRENT, NULL,
                      "the .torrent is larger than %u bytes",
                      STATE_MAX_TORRENT);
        return;
    }
    struct add_req *a = calloc(1, sizeof(*a));
    if (!a || !(a->download_dir = strdup(dir))) {
        free(a);
        rpc_call_fail(call, RPC_INTERNAL_ERROR, NULL, "out of memory");
        return;
    }
    a->s = s;
    a->call = call;
    a->paused = paused;
    /* The worker only reads the string; the reference keeps it alive. */
    a->params = json_object_get(params);
    a->b64 = json_object_get_string(mi);
    a->b64_len = len;
    if (worker_submit(s->parse, add_parse_run, add_parse_done, a) < 0) {
        add_req_free(a);
        rpc_call_fail(call, RPC_INTERNAL_ERROR, NULL, "out of memory");
    }
}

/* --- torrent.list, torrent.get -------------------------------------------- */

static const char *const torrent_fields[] = {
    "id",
    "info_hash",
    "name",
    "state",
    "progress",
    "size_bytes",
    "have_bytes",
    "downloaded_bytes",
    "uploaded_bytes",
    "download_rate",
    "upload_rate",
    "peers_connected",
    "eta_s",
    "ratio",
    "download_dir",
    "error",
    "added_at",
    "completed_at",
    "paused",
    "has_metadata",
    "total_size",
    "piece_length",
    "piece_count",
    "file_count",
    "private",
    "download_limit",
    "upload_limit",
    "ratio_limit",
    "idle_limit",
    "stop_reason",
    "seed_limit_override",
    "sequential",
    NULL,
};

/* Check the "fields" parameter: NULL-or-array of known names. */
static bool
check_fields(struct rpc_call *call, struct json_object *fields)
{
    if (!fields)
        return true;
    if (!json_object_is_type(fields, json_type_array)) {
        rpc_call_fail(call, RPC_INVALID_PARAMS, NULL,
                      "'fields' must be an array of field names");
        return false;
    }
    size_t n = json_object_array_length(fields);
    for (size_t i = 0; i < n; i++) {
        struct json_object *f = json_object_array_get_idx(fields, i);
        const char *name = json_object_is_type(f, json_type_string)
                               ? json_object_get_string(f)
                               : NULL;
        bool known = false;
        for (size_t k = 0; name && torrent_fields[k] && !known; k++)
            known = strcmp(torrent_fields[k], name) == 0;
        if (!known) {
            rpc_call_fail(call, RPC_INVALID_PARAMS, NULL,
                          "unknown field %s: see torrentd-api(7), THE "
                          "TORRENT OBJECT",
                          json_object_to_json_string(f));
            return false;
        }
    }
    return true;
}

static struct json_object *
project(struct json_object *full, struct json_object *fields)
{
    if (!full || !fields)
        return full;
    struct json_object *o = json_object_new_object();
    if (!o) {
        json_object_put(full);
        return NULL;
    }
    size_t n = json_object_array_length(fields);
    for (size_t i = 0; i < n; i++) {
        const char *k =
            json_object_get_string(json_object_array_get_idx(fields, i));
        struct json_object *v;
        if (json_object_object_get_ex(full, k, &v))
            json_object_object_add(o, k, json_object_get(v));
    }
    json_object_put(full);
    return o;
}

static void
m_torrent_list(struct session *s, struct rpc_call *call,
               struct json_object *params)
{
    struct json_object *fields = param(params, "fields");
    if (!check_fields(call, fields))
        return;
    struct json_object *arr = json_object_new_array_ext((int)s->n);
    struct json_object *res = json_object_new_object();
    if (!arr || !res)
        goto nomem;
    for (size_t i = 0; i < s->n; i++) {
        struct json_object *o = project(session_torrent_json(s->v[i]), fields);
        if (!o || json_object_array_add(arr, o) < 0) {
            json_object_put(o);
            goto nomem;
        }
    }
    json_object_object_add(res, "torrents", arr);
    rpc_call_reply(call, res);
    return;
nomem:
    json_object_put(arr);
    json_object_put(res);
    rpc_call_fail(call, RPC_INTERNAL_ERROR, NULL, "out of memory");
}

static void
m_torrent_get(struct session *s, struct rpc_call *call,
              struct json_object *params)
{
    struct json_object *fields = param(params, "fields");
    if (!check_fields(call, fields))
        return;
    struct torrent *t = param_torrent(s, call, params);
    if (!t)
        return;
    struct json_object *o = project(session_torrent_json(t), fields);
    if (!o) {
        rpc_call_fail(call, RPC_INTERNAL_ERROR, NULL, "out of memory");
        return;
    }
    rpc_call_reply(call, o);
}

/* --- torrent.start, torrent.stop ------------------------------------------ */

static void
start_one(struct session *s, struct torrent *t)
{
    /* A start by hand past a seed limit (paused for one, or at its ratio
     * now): it seeds on until one of its limits changes (seedlimit.h). */
    if (t->paused &&
        (t->stop_reason != SEEDLIMIT_NONE || session_seed_ratio_reached(s, t)))
        t->seed_override = true;
    t->stop_reason = SEEDLIMIT_NONE;
    t->paused = false;
    if (t->move) {
        /* Only the wish: the move's end settles it (and checks it first
         * when it was in error: a fresh look, as below). */
        if (t->state == TORRENT_ERROR)
            t->check_wanted = true;
        return;
    }
    if (t->state == TORRENT_ERROR) {
        free(t->error);
        t->error = NULL;
        /* A fresh look at the data: the error may be gone. */
        if (t->meta) {
            t->state = TORRENT_PAUSED;
            session_start_check(s, t);
            return;
        }
    }
    session_settle(s, t);
}

static void
stop_one(struct session *s, struct torrent *t)
{
    t->paused = true;
    t->stop_reason = SEEDLIMIT_NONE; /* the user's stop, not a limit's */
    /* A running check or move ends first (only the wish is recorded: its
     * end settles it), then it is paused. */
    session_settle(s, t);
}

static void
start_stop(struct session *s, struct rpc_call *call, struct json_object *params,
           bool start)
{
    if (refuse_if_stopping(s, call))
        return;
    bool all = false;
    if (!param_bool(call, params, "all", &all))
        return;
    if (all) {
        size_t changed = 0;
        for (size_t i = 0; i < s->n; i++) {
            struct torrent *t = s->v[i];
            if (t->paused == !start && t->state != TORRENT_ERROR)
                continue;
            if (start)
                start_one(s, t);
            else
                stop_one(s, t);
            session_save_resume(s, t);
            changed++;
        }
        const struct rpc_caller *c = rpc_call_caller(call);
        log_info("%s all torrents (%zu changed) by uid %u",
                 start ? "started" : "stopped", changed,
                 c ? (unsigned)c->uid : 0u);
        struct json_object *res = json_object_new_object();
        if (res)
            json_object_object_add(res, "changed",
                                   json_object_new_uint64(changed));
        session_reply_when_durable(s, call, res);
        return;
    }
    struct torrent *t = param_torrent(s, call, params);
    if (!t)
        return;
    if (start)
        start_one(s, t);
    else
        stop_one(s, t);
    log_change(call, t, start ? "started" : "stopped");
    session_save_and_reply(s, t, call, session_torrent_json(t));
}

static void
m_torrent_start(struct session *s, struct rpc_call *call,
                struct json_object *params)
{
    start_stop(s, call, params, true);
}

static void
m_torrent_stop(struct session *s, struct rpc_call *call,
               struct json_object *params)
{
    start_stop(s, call, params, false);
}

/* --- torrent.remove, torrent.verify ------------------------------------------
 */

static void
m_torrent_remove(struct session *s, struct rpc_call *call,
                 struct json_object *params)
{
    if (refuse_if_stopping(s, call))
        return;
    bool delete_data = false;
    if (!param_bool(call, params, "delete_data", &delete_data))
        return;
    struct torrent *t = param_torrent(s, call, params);
    if (!t)
        return;
    if (t->move && delete_data) {
        /* Its files are in two places until the move ends. */
        rpc_call_fail(call, RPC_E_INVALID_STATE, NULL,
                      "torrent %" PRIu32 " is being moved; remove it with "
                      "its data once the move has ended",
                      t->id);
        return;
    }
    struct io_job *j = session_io_job_new(s, t, call);
    if (!j) {
        rpc_call_fail(call, RPC_INTERNAL_ERROR, NULL, "out of memory");
        return;
    }
    char name[64];
    /* The .torrent first: a crash half-way leaves a resume record without
     * a torrent, which the next start removes. */
    snprintf(name, sizeof(name), "%s.torrent", t->hex);
    session_io_add(j, IO_UNLINK, name);
    snprintf(name, sizeof(name), "%s.magnet", t->hex);
    session_io_add(j, IO_UNLINK, name);
    snprintf(name, sizeof(name), "%s.resume", t->hex);
    session_io_add(j, IO_UNLINK, name);
    /* The session record keeps next_id, so that this torrent's id is not
     * given again even if it was the largest and torrentd crashes. */
    struct state_session rec = {
        .next_id = s->next_id,
        .event_seq = events_last_seq(s->events),
        .clean = false,
    };
    struct buf b;
    buf_init(&b, 4096);
    if (state_session_encode(&rec, &b) == 0) {
        size_t len;
        char *data = buf_steal(&b, &len);
        (void)session_io_add_write(j, "session", data, len);
    }
    buf_release(&b);
    if (delete_data && t->meta) {
        session_io_add(j, IO_DELETE_DATA, NULL);
        j->meta = t->meta;
        j->data_dir = strdup(t->download_dir);
    }
    j->result = json_object_new_object();
    if (j->result) {
        json_object_object_add(j->result, "status",
                               json_object_new_string("removed"));
        json_object_object_add(j->result, "info_hash",
                               json_object_new_string(t->hex));
        json_object_object_add(j->result, "id", json_object_new_int64(t->id));
        json_object_object_add(j->result, "data_deleted",
                               json_object_new_boolean(delete_data && t->meta));
    }
    log_change(call, t, delete_data ? "removed (and its data)" : "removed");
    if (t->check) {
        verify_cancel(t->check);
        t->check = NULL;
    }
    struct json_object *x = json_object_new_object();
    if (x)
        json_object_object_add(x, "data_deleted",
                               json_object_new_boolean(delete_data && t->meta));
    session_publish_torrent(s, "torrent.removed", t, x);
    bool was_downloading = t->state == TORRENT_DOWNLOADING;
    session_list_remove(s, t); /* j borrows it until the files are gone */
    if (was_downloading)
        session_queue_pass(s);
    session_status_changed(s);
    session_io_submit(s, j);
}

static void
m_torrent_verify(struct session *s, struct rpc_call *call,
                 struct json_object *params)
{
    if (refuse_if_stopping(s, call))
        return;
    struct torrent *t = param_torrent(s, call, params);
    if (!t)
        return;
    if (!t->meta) {
        rpc_call_fail(call, RPC_E_INVALID_STATE, NULL,
                      "torrent %" PRIu32 " has no metadata yet: nothing to "
                      "verify",
                      t->id);
        return;
    }
    if (t->check) {
        rpc_call_fail(call, RPC_E_INVALID_STATE, NULL,
                      "torrent %" PRIu32 " is being checked already", t->id);
        return;
    }
    if (t->state == TORRENT_ERROR && !t->move) {
        free(t->error);
        t->error = NULL;
        t->state = TORRENT_PAUSED;
    }
    log_change(call, t, "verifying"); /* moving: once the move has ended */
    session_start_check(s, t);
    rpc_call_reply(call, session_torrent_json(t));
}

/* --- torrent.move ------------------------------------------------------------
 *
 * The torrent goes to state moving (its engine stops: peers closed, no
 * new I/O); once the engine's last storage is closed (no peer thread, hash
 * or flush job does I/O on the files any more: session_storage_closed()),
 * move_run() moves the files on the "move" worker (daemon/move.h).  Then
 * the torrent takes its new directory, its resume record is written and
 * the call answered once it is durable, and it settles where it was
 * (paused, seeding, downloading; a check first with move=false, or when
 * one was asked for meanwhile).  A failure moved everything back: the
 * torrent goes on from its old directory and the call fails; a failure
 * that could not move everything back puts the torrent in state error.
 *
 * The move begins at a safe point: session_storage_closed() runs inside
 * the engine's call chain (e_stop() dropping its last reference), so it
 * only marks the move ready and starts s->move_prep; its ev_prepare pass
 * submits the ready moves (and ends those that cannot be submitted:
 * move_end() settles the torrent, which may start its engine again).
 * torrent.start/stop/verify meanwhile only record the wish (t->paused,
 * t->check_wanted); move_end() acts on it.  Stopping, the moves not
 * submitted yet end at once (cancelled, nothing moved) and the running
 * one is asked to stop and move back (session_moves_cancel()).
 */

struct move_ctx {
    struct session *s;
    struct torrent *t;      /* borrowed, counted in t->jobs */
    struct move_job *job;   /* owned */
    struct rpc_call *call;  /* answered in move_end() */
    char *dir;              /* owned: the new download_dir */
    enum torrent_state was; /* before the move */
    bool ready;             /* its storages are closed: submit it */
    bool submitted;
    struct move_ctx *prev, *next; /* s->moves, until move_end() */
};

static void
move_end(struct session *s, struct move_ctx *c, int r)
{
    struct torrent *t = c->t;
    struct move_job *j = c->job;
    if (t->move == c)
        t->move = NULL;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->moves = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (r < 0 && !j->error[0])
        snprintf(j->error, sizeof(j->error), "cannot move: %s", strerror(-r));
    if (r == 0 && !j->same && j->move_data)
        log_field(LOG_LEVEL_INFO, "TORRENT", t->hex,
                  "moved '%s' from '%s' to '%s': %zu files renamed, %zu "
                  "copied (%" PRIu64 " bytes)",
                  torrent_name(t), j->from, j->to, j->renamed, j->copied,
                  j->copied_bytes);
    else if (r < 0)
        log_field(LOG_LEVEL_WARN, "TORRENT", t->hex, "'%s': %s",
                  torrent_name(t), j->error);
    if (t->removed) {
        if (c->call)
            rpc_call_fail(c->call, RPC_E_INVALID_STATE, NULL,
                          "torrent %" PRIu32 " was removed while it moved; "
                          "its files are in '%s'",
                          t->id, r == 0 ? j->to : j->from);
        goto out;
    }
    if (r == 0) {
        free(t->download_dir);
        t->download_dir = c->dir;
        c->dir = NULL;
        /* A flush that failed meanwhile (state error): its pieces are
         * not counted, the files are whole at their new place. */
        free(t->error);
        t->error = NULL;
    }
    if (s->stopping) {
        /* Shutting down: only the record (the io worker ends after the
         * move worker; in session_free() a move that was never submitted
         * ends before it, and nothing is saved once it is gone). */
        if (s->io)
            session_save_resume(s, t);
        if (r == 0)
            rpc_call_reply(c->call, session_torrent_json(t));
        else
            rpc_call_fail(c->call, RPC_E_IO, NULL, "%s", j->error);
        goto out;
    }
    if (r < 0 && j->split) {
        session_set_error(s, t, "%s", j->error);
    } else if (r < 0 && t->error && !t->check_wanted) {
        /* In error before the move, or a flush failed meanwhile. */
        session_set_state(s, t, TORRENT_ERROR);
    } else {
        bool check = t->check_wanted ||
                     (r == 0 && (!j->move_data || c->was == TORRENT_ERROR));
        t->check_wanted = false;
        if (check) {
            free(t->error);
            t->error = NULL;
            session_start_check(s, t);
        } else {
            session_settle(s, t);
        }
    }
    if (r == 0) {
        session_save_and_reply(s, t, c->call, session_torrent_json(t));
    } else {
        session_save_resume(s, t);
        struct json_object *data = json_object_new_object();
        if (data)
            json_object_object_add(data, "download_dir",
                                   json_object_new_string(t->download_dir));
        rpc_call_fail(c->call, RPC_E_IO, data, "%s%s", j->error,
                      j->split ? "" : "; nothing moved");
    }
out:
    move_job_free(j);
    free(c->dir);
    session_torrent_unref(t);
    free(c);
}

static void
move_done(void *arg, int r)
{
    struct move_job *j = arg;
    struct move_ctx *c = j->owner;
    move_end(c->s, c, r);
}

static void
move_submit(struct session *s, struct move_ctx *c)
{
    c->submitted = true;
    if (s->stopping || !s->mover) {
        move_end(s, c, -ECANCELED);
        return;
    }
    int r = worker_submit(s->mover, move_run, move_done, c->job);
    if (r < 0)
        move_end(s, c, r);
}

/* s->move_prep: submit the moves whose storages are closed. */
static void
moves_prepare(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)revents;
    struct session *s = w->data;
    ev_prepare_stop(loop, w);
    for (;;) {
        /* From the start each time: a move_end() may end others. */
        struct move_ctx *c = s->moves;
        while (c && (!c->ready || c->submitted))
            c = c->next;
        if (!c)
            break;
        move_submit(s, c);
    }
}

void
session_storage_closed(struct session *s, struct torrent *t)
{
    struct move_ctx *c = t->move;
    if (!c || c->submitted || c->ready)
        return;
    c->ready = true;
    if (!ev_is_active(&s->move_prep)) {
        ev_prepare_init(&s->move_prep, moves_prepare);
        s->move_prep.data = s;
        ev_prepare_start(s->loop, &s->move_prep);
    }
}

void
session_moves_cancel(struct session *s)
{
    if (ev_is_active(&s->move_prep))
        ev_prepare_stop(s->loop, &s->move_prep);
    struct move_ctx *c = s->moves;
    while (c) {
        if (c->submitted) {
            move_job_cancel(c->job); /* its move_done() comes */
            c = c->next;
            continue;
        }
        move_end(s, c, -ECANCELED);
        c = s->moves; /* c is gone */
    }
}

static void
m_torrent_move(struct session *s, struct rpc_call *call,
               struct json_object *params)
{
    if (refuse_if_stopping(s, call))
        return;
    bool move = true;
    if (!param_bool(call, params, "move", &move))
        return;
    struct json_object *v = param(params, "download_dir");
    char dir[MOVE_DIR_MAX], cur[MOVE_DIR_MAX];
    if (!v || !json_object_is_type(v, json_type_string) ||
        strlen(json_object_get_string(v)) !=
            (size_t)json_object_get_string_len(v) ||
        move_dir_normalize(json_object_get_string(v), dir, sizeof(dir)) < 0) {
        rpc_call_fail(call, RPC_INVALID_PARAMS, NULL,
                      "'download_dir' must be an absolute path without "
                      "'..' components");
        return;
    }
    struct torrent *t = param_torrent(s, call, params);
    if (!t)
        return;
    if (t->move) {
        rpc_call_fail(call, RPC_E_INVALID_STATE, NULL,
                      "torrent %" PRIu32 " is being moved already", t->id);
        return;
    }
    if (t->check) {
        rpc_call_fail(call, RPC_E_INVALID_STATE, NULL,
                      "torrent %" PRIu32 " is being checked: move it "
                      "afterwards",
                      t->id);
        return;
    }
    if (move_dir_normalize(t->download_dir, cur, sizeof(cur)) >= 0 &&
        strcmp(cur, dir) == 0) {
        rpc_call_reply(call, session_torrent_json(t)); /* no-op */
        return;
    }
    if (!t->meta) {
        /* A magnet has no files yet: only the directory changes. */
        char *d = strdup(dir);
        if (!d) {
            rpc_call_fail(call, RPC_INTERNAL_ERROR, NULL, "out of memory");
            return;
        }
        free(t->download_dir);
        t->download_dir = d;
        log_change(call, t, "changed the directory of");
        session_save_and_reply(s, t, call, session_torrent_json(t));
        return;
    }
    struct move_ctx *c = calloc(1, sizeof(*c));
    if (c) {
        c->dir = strdup(dir);
        c->job = move_job_new(t->meta, t->download_dir, dir, move);
    }
    if (!c || !c->dir || !c->job) {
        if (c) {
            free(c->dir);
            move_job_free(c->job);
        }
        free(c);
        rpc_call_fail(call, RPC_INTERNAL_ERROR, NULL, "out of memory");
        return;
    }
    c->s = s;
    c->t = t;
    c->call = call;
    c->was = t->state;
    c->job->owner = c;
    t->jobs++;
    t->move = c;
    c->next = s->moves;
    if (s->moves)
        s->moves->prev = c;
    s->moves = c;
    log_change(call, t, move ? "moving" : "changing the directory of");
    /* The engine stops; its last storage may close right here or once
     * the peer threads and jobs that hold it are done (then
     * session_storage_closed() has the job submitted at a safe point). */
    session_set_state(s, t, TORRENT_MOVING);
    if (t->move == c && !c->submitted && t->storages == 0)
        move_submit(s, c);
}

/* --- torrent.set, torrent.files, peers, trackers ----------------------------
 */

static const char *const prio_names[STATE_PRIO_MAX] = {
    [STATE_PRIO_SKIP] = "skip",
    [STATE_PRIO_LOW] = "low",
    [STATE_PRIO_NORMAL] = "normal",
    [STATE_PRIO_HIGH] = "high",
};

static bool
get_uint(struct json_object *v, uint64_t *ret)
{
    if (!json_object_is_type(v, json_type_int))
        return false;
    int64_t i = json_object_get_int64(v);
    if (i < 0)
        return false;
    *ret = (uint64_t)i;
    return true;
}

static void
m_torrent_set(struct session *s, struct rpc_call *call,
              struct json_object *params)
{
    if (refuse_if_stopping(s, call))
        return;
    struct torrent *t = param_torrent(s, call, params);
    if (!t)
        return;
    struct json_object *v;
    uint64_t dl = t->download_limit, ul = t->upload_limit;
    int64_t ratio = t->ratio_limit, idle = t->idle_limit;
    bool rearm = false;
    bool sequential = t->sequential;
    if (!param_bool(call, params, "sequential", &sequential))
        return;
    const char *dir = NULL;
    uint8_t *prio = NULL;
    size_t nf = torrent_n_files(t);

    if ((v = param(params, "download_limit")) && !get_uint(v, &dl)) {
        rpc_call_fail(call, RPC_INVALID_PARAMS, NULL,
                      "'download_limit' must be bytes per second (0 = no "
                      "limit)");
        return;
    }
    if ((v = param(params, "upload_limit")) && !get_uint(v, &ul)) {
        rpc_call_fail(call, RPC_INVALID_PARAMS, NULL,
                      "'upload_limit' must be bytes per second (0 = no "
                      "limit)");
        return;
    }
    if (params && json_object_object_get_ex(params, "ratio_limit", &v)) {
        rearm = true;
        if (!v) {
            ratio = -1;
        } else if ((json_object_is_type(v, json_type_double) ||
                    json_object_is_type(v, json_type_int)) &&
                   json_object_get_double(v) >= 0 &&
                   json_object_get_double(v) <= 1e6) {
            ratio = (int64_t)(json_object_get_double(v) * 1000.0 + 0.5);
        } else {
            rpc_call_fail(call, RPC_INVALID_PARAMS, NULL,
                          "'ratio_limit' must be a number >= 0, or null for "
                          "the session's");
            return;
        }
    }
    if (params && json_object_object_get_ex(params, "idle_limit", &v)) {
        rearm = true;
        if (!v) {
            idle = -1;
        } else if ((json_object_is_type(v, json_type_double) ||
                    json_object_is_type(v, json_type_int)) &&
                   json_object_get_double(v) >= 0 &&
                   json_object_get_double(v) * 1000.0 <=
                       (double)SEEDLIMIT_IDLE_MAX) {
            idle = (int64_t)(json_object_get_double(v) * 1000.0 + 0.5);
        } else {
            rpc_call_fail(call, RPC_INVALID_PARAMS, NULL,
                          "'idle_limit' must be minutes >= 0 (0 = none), "
                          "or null for the session's");
            return;
        }
    }
    if ((v = param(params, "download_dir"))) {
        if (!json_object_is_type(v, json_type_string) ||
            !valid_dir(json_object_get_string(v))) {
            rpc_call_fail(call, RPC_INVALID_PARAMS, NULL,
                          "'download_dir' must be an absolute path");
            return;
        }
        if (t->check || t->move) {
            rpc_call_fail(call, RPC_E_INVALID_STATE, NULL,
                          "torrent %" PRIu32 " is being %s: change its "
                          "directory afterwards",
                          t->id, t->check ? "checked" : "moved");
            return;
        }
        dir = json_object_get_string(v);
    }
    if ((v = param(params, "files"))) {
        if (!json_object_is_type(v, json_type_array)) {
            rpc_call_fail(call, RPC_INVALID_PARAMS, NULL,
                          "'files' must be an array of {\"index\": N, "
                          "\"wanted\": bool, \"priority\": "
                          "\"low\"|\"normal\"|\"high\"}");
            return;
        }
        if (!t->meta) {
            rpc_call_fail(call, RPC_E_INVALID_STATE, NULL,
                          "torrent %" PRIu32 " has no metadata yet: its "
                          "files are not known",
                          t->id);
            return;
        }
        prio = malloc(nf ? nf : 1);
        if (!prio) {
            rpc_call_fail(call, RPC_INTERNAL_ERROR, NULL, "out of memory");
            return;
        }
        for (size_t i = 0; i < nf; i++)
            prio[i] = t->priority ? t->priority[i] : STATE_PRIO_NORMAL;
        size_t n = json_object_array_length(v);
        for (size_t i = 0; i < n; i++) {
            struct json_object *e = json_object_array_get_idx(v, i), *x;
            uint64_t idx;
            if (!json_object_is_type(e, json_type_object) ||
                !json_object_object_get_ex(e, "index", &x) ||
                !get_uint(x, &idx) || idx >= nf) {
                free(prio);
                rpc_call_fail(call, RPC_INVALID_PARAMS, NULL,
                              "'files' item %zu needs an \"index\" from 0 to "
                              "%zu",
                              i, nf ? nf - 1 : 0);
                return;
            }
            uint8_t p =
                prio[idx] == STATE_PRIO_SKIP ? STATE_PRIO_NORMAL : prio[idx];
            bool wanted = prio[idx] != STATE_PRIO_SKIP;
            if (json_object_object_get_ex(e, "priority", &x)) {
                const char *pn = json_object_is_type(x, json_type_string)
                                     ? json_object_get_string(x)
                                     : "";
                int k = 1;
                while (k < STATE_PRIO_MAX && strcmp(prio_names[k], pn) != 0)
                    k++;
                if (k == STATE_PRIO_MAX) {
                    free(prio);
                    rpc_call_fail(call, RPC_INVALID_PARAMS, NULL,
                                  "'files' item %zu: priority is \"low\", "
                                  "\"normal\" or \"high\"",
                                  i);
                    return;
                }
                p = (uint8_t)k;
            }
            if (json_object_object_get_ex(e, "wanted", &x)) {
                if (!json_object_is_type(x, json_type_boolean)) {
                    free(prio);
                    rpc_call_fail(call, RPC_INVALID_PARAMS, NULL,
                                  "'files' item %zu: wanted is true or "
                                  "false",
                                  i);
                    return;
                }
                wanted = json_object_get_boolean(x);
            }
            prio[idx] = wanted ? p : STATE_PRIO_SKIP;
        }
    }

    /* Everything checked: apply. */
    if (dir) {
        char *d = strdup(dir);
        if (!d) {
            free(prio);
            rpc_call_fail(call, RPC_INTERNAL_ERROR, NULL, "out of memory");
            return;
        }
        free(t->download_dir);
        t->download_dir = d;
    }
    t->download_limit = dl;
    t->upload_limit = ul;
    t->ratio_limit = ratio;
    t->idle_limit = idle;
    if (rearm)
        session_seed_rearm(s, t);
    t->sequential = sequential;
    if (prio) {
        free(t->priority);
        t->priority = prio;
        bool was = torrent_complete(t);
        torrent_recount(t);
        if (!t->check && !t->paused && t->state != TORRENT_ERROR) {
            if (torrent_complete(t) && !was && t->have)
                session_completed(s, t);
            session_settle(s, t);
            if (t->state == TORRENT_SEEDING && !torrent_complete(t))
                session_set_state(s, t, TORRENT_DOWNLOADING);
        }
    }
    engine_torrent_settings(s->engine, t);
    log_change(call, t, "changed settings of");
    session_save_and_reply(s, t, call, session_torrent_json(t));
}

static void
m_torrent_files(struct session *s, struct rpc_call *call,
                struct json_object *params)
{
    struct torrent *t = param_torrent(s, call, params);
    if (!t)
        return;
    size_t nf = torrent_n_files(t);
    struct json_object *arr = json_object_new_array_ext((int)nf);
    struct json_object *res = json_object_new_object();
    if (!arr || !res)
        goto nomem;
    for (size_t i = 0; i < nf; i++) {
        const struct meta_file *f = &t->meta->files[i];
        struct json_object *o = json_object_new_object();
        if (!o || json_object_array_add(arr, o) < 0) {
            json_object_put(o);
            goto nomem;
        }
        uint8_t p = t->priority ? t->priority[i] : STATE_PRIO_NORMAL;
        uint64_t have = t->file_have ? t->file_have[i] : 0;
        json_object_object_add(o, "index", json_object_new_uint64(i));
        json_object_object_add(o, "path", json_object_new_string(f->path));
        json_object_object_add(o, "length", json_object_new_uint64(f->length));
        json_object_object_add(o, "have_bytes", json_object_new_uint64(have));
        json_object_object_add(
            o, "progress",
            json_object_new_double(f->length ? (double)have / (double)f->length
                                             : 1.0));
        json_object_object_add(o, "wanted",
                               json_object_new_boolean(p != STATE_PRIO_SKIP));
        json_object_object_add(
            o, "priority",
            json_object_new_string(
                prio_names[p == STATE_PRIO_SKIP ? STATE_PRIO_NORMAL : p]));
        json_object_object_add(
            o, "pad", json_object_new_boolean(f->attr & META_ATTR_PAD));
    }
    json_object_object_add(res, "info_hash", json_object_new_string(t->hex));
    json_object_object_add(res, "files", arr);
    rpc_call_reply(call, res);
    return;
nomem:
    json_object_put(arr);
    json_object_put(res);
    rpc_call_fail(call, RPC_INTERNAL_ERROR, NULL, "out of memory");
}

static void
m_torrent_peers(struct session *s, struct rpc_call *call,
                struct json_object *params)
{
    struct torrent *t = param_torrent(s, call, params);
    if (!t)
        return;
    struct json_object *res = json_object_new_object();
    if (res) {
        json_object_object_add(res, "info_hash",
                               json_object_new_string(t->hex));
        json_object_object_add(res, "peers",
                               engine_peers_json(s->engine, t));
    }
    rpc_call_reply(call, res);
}

/* torrent.add_peer {torrent, address "ip:port"}: connect to a peer now
 * (libtorrent's connect_peer, qBittorrent's "Add peers"). */
static void
m_torrent_add_peer(struct session *s, struct rpc_call *call,
                   struct json_object *params)
{
    if (refuse_if_stopping(s, call))
        return;
    struct torrent *t = param_torrent(s, call, params);
    if (!t)
        return;
    struct json_object *v = param(params, "address");
    struct sockaddr_storage ss;
    socklen_t len;
    if (!v || !json_object_is_type(v, json_type_string) ||
        listen_parse_addr(json_object_get_string(v), &ss, &len) < 0 ||
        (ss.ss_family == AF_INET
             ? ((struct sockaddr_in *)&ss)->sin_port == 0
             : ((struct sockaddr_in6 *)&ss)->sin6_port == 0)) {
        rpc_call_fail(call, RPC_INVALID_PARAMS, NULL,
                      "'address' must be a numeric \"ip:port\" or "
                      "\"[ipv6]:port\"");
        return;
    }
    /* A magnet too: its peers give the metadata (BEP 9). */
    int r = engine_add_peer(s->engine, t, (struct sockaddr *)&ss, len);
    if (r < 0 && r != -EEXIST) {
        rpc_call_fail(call, RPC_INTERNAL_ERROR, NULL, "cannot add the peer: %s",
                      strerror(-r));
        return;
    }
    struct json_object *res = json_object_new_object();
    if (res) {
        json_object_object_add(res, "info_hash",
                               json_object_new_string(t->hex));
        const char *addr = json_object_get_string(v);
        const char *status = r == -EEXIST ? "connected" : "added";
        json_object_object_add(res, "address", json_object_new_string(addr));
        json_object_object_add(res, "status", json_object_new_string(status));
    }
    rpc_call_reply(call, res);
}

static void
tracker_add(struct json_object *arr, size_t tier, const char *url)
{
    struct json_object *o = json_object_new_object();
    if (!o)
        return;
    json_object_object_add(o, "tier", json_object_new_uint64(tier));
    json_object_object_add(o, "url", json_object_new_string(url));
    json_object_object_add(o, "status",
                           json_object_new_string("not contacted"));
    json_object_object_add(o, "last_announce", NULL);
    json_object_object_add(o, "seeders", NULL);
    json_object_object_add(o, "leechers", NULL);
    json_object_object_add(o, "message", NULL);
    json_object_array_add(arr, o);
}

static void
m_torrent_trackers(struct session *s, struct rpc_call *call,
                   struct json_object *params)
{
    struct torrent *t = param_torrent(s, call, params);
    if (!t)
        return;
    struct json_object *arr = json_object_new_array();
    struct json_object *res = json_object_new_object();
    if (!arr || !res) {
        json_object_put(arr);
        json_object_put(res);
        rpc_call_fail(call, RPC_INTERNAL_ERROR, NULL, "out of memory");
        return;
    }
    struct json_object *live = engine_trackers_json(s->engine, t);
    if (live) {
        json_object_put(arr);
        arr = live;
    } else if (t->meta) {
        for (size_t i = 0; i < t->meta->n_tiers; i++)
            for (size_t k = 0; k < t->meta->tiers[i].n_urls; k++)
                tracker_add(arr, i, t->meta->tiers[i].urls[k]);
    } else {
        /* BEP 9: each tr of a magnet is a tier of its own. */
        for (size_t i = 0; i < t->magnet.n_tr; i++)
            tracker_add(arr, i, t->magnet.tr[i]);
    }
    json_object_object_add(res, "info_hash", json_object_new_string(t->hex));
    json_object_object_add(res, "trackers", arr);
    rpc_call_reply(call, res);
}

/* --- session.get, session.set, session.stats, daemon.shutdown --------------
 */

/* Keys that only the administrator may set, in torrentd.conf: they name
 * programs to run or places torrentd reads, writes or listens on. */
static const char *const admin_keys[] = {
    "state_dir",   "control_socket", "status_socket",
    "on_complete", "watch_dir",      NULL,
};

static bool
is_admin_key(const char *k)
{
    for (size_t i = 0; admin_keys[i]; i++)
        if (strcmp(admin_keys[i], k) == 0)
            return true;
    return false;
}

static struct json_object *
config_value(const struct config *c, const struct config_key *k)
{
    struct buf b;
    buf_init(&b, 1 << 16);
    struct json_object *v = NULL;
    if (config_get(c, k->name, &b) == 0) {
        const char *text = b.data ? b.data : "";
        if (k->type == CONFIG_BOOL)
            v = json_object_new_boolean(strcmp(text, "on") == 0);
        else if (k->type == CONFIG_UINT)
            v = json_object_new_uint64(strtoull(text, NULL, 10));
        else if (k->type == CONFIG_DECIMAL)
            v = json_object_new_double(strtod(text, NULL));
        else
            v = json_object_new_string(text);
    }
    buf_release(&b);
    return v;
}

static void
m_session_get(struct session *s, struct rpc_call *call,
              struct json_object *params)
{
    (void)params;
    size_t n;
    const struct config_key *keys = config_keys(&n);
    struct json_object *res = json_object_new_object();
    struct json_object *cfg = json_object_new_object();
    struct json_object *rt = json_object_new_object();
    struct json_object *restart = json_object_new_array();
    struct json_object *live = json_object_new_array();
    if (!res || !cfg || !rt || !restart || !live) {
        json_object_put(res);
        json_object_put(cfg);
        json_object_put(rt);
        json_object_put(restart);
        json_object_put(live);
        rpc_call_fail(call, RPC_INTERNAL_ERROR, NULL, "out of memory");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const struct config_key *k = &keys[i];
        json_object_object_add(cfg, k->name, config_value(&s->cfg, k));
        if (k->apply == CONFIG_LIVE && !is_admin_key(k->name))
            json_object_array_add(live, json_object_new_string(k->name));
        const char *val = state_settings_get(&s->runtime, k->name);
        if (!val)
            continue;
        /* The stored value, typed as the key is. */
        struct config tmp;
        if (config_copy(&tmp, &s->cfg) == 0) {
            struct config_error ce;
            if (config_set(&tmp, k->name, val, &ce) == 0) {
                json_object_object_add(rt, k->name, config_value(&tmp, k));
                if (!config_key_equal(&tmp, &s->cfg, k))
                    json_object_array_add(restart,
                                          json_object_new_string(k->name));
            }
            config_release(&tmp);
        }
    }
    json_object_object_add(res, "config", cfg);
    json_object_object_add(res, "runtime", rt);
    json_object_object_add(res, "pending_restart", restart);
    json_object_object_add(res, "settable", live);
    rpc_call_reply(call, res);
}

static bool
value_text(struct json_object *v, struct buf *out)
{
    switch (json_object_get_type(v)) {
    case json_type_string:
        return buf_append(out, json_object_get_string(v),
                          (size_t)json_object_get_string_len(v)) == 0;
    case json_type_int:
        if (json_object_get_int64(v) < 0)
            return false;
        return buf_printf(out, "%" PRId64, json_object_get_int64(v)) == 0;
    case json_type_double: {
        /* A decimal key (seed_ratio_limit): three places, as config.c
         * takes them. */
        double d = json_object_get_double(v);
        if (!(d >= 0 && d <= 1e12))
            return false;
        return buf_printf(out, "%.3f", d) == 0;
    }
    case json_type_boolean:
        return buf_puts(out, json_object_get_boolean(v) ? "on" : "off") == 0;
    default:
        return false;
    }
}

static void
settings_done(struct session *s, struct io_job *j, int r)
{
    (void)s;
    if (r < 0)
        rpc_call_fail(j->call, RPC_E_IO, NULL,
                      "the settings apply now but could not be saved: %s; "
                      "check the state directory '%s'",
                      strerror(-r), j->dir);
    else
        rpc_call_reply(j->call, json_object_get(j->result));
    j->call = NULL;
}

static void
m_session_set(struct session *s, struct rpc_call *call,
              struct json_object *params)
{
    if (refuse_if_stopping(s, call))
        return;
    if (!params || !json_object_is_type(params, json_type_object) ||
        json_object_object_length(params) == 0) {
        rpc_call_fail(call, RPC_INVALID_PARAMS, NULL,
                      "give settings as named params, e.g. "
                      "{\"download_rate_limit\": 1048576}; null reverts one "
                      "to the configuration file");
        return;
    }
    /* Check every key and value on a copy first: all or nothing. */
    struct config next;
    struct state_settings rt = {0};
    int r = config_copy(&next, &s->cfg);
    if (r < 0)
        goto nomem;
    for (size_t i = 0; i < s->runtime.n; i++)
        if (state_settings_put(&rt, s->runtime.items[i].key,
                               s->runtime.items[i].value) < 0)
            goto nomem_cfg;
    struct json_object *applied = json_object_new_array();
    struct json_object *restart = json_object_new_array();
    struct json_object *reverted = json_object_new_array();
    struct buf text;
    buf_init(&text, 8192);
    json_object_object_foreach(params, key, val)
    {
        const struct config_key *k = config_key_find(key);
        if (!k) {
            rpc_call_fail(call, RPC_INVALID_PARAMS, NULL,
                          "unknown setting '%s': see session.get", key);
            goto out;
        }
        if (is_admin_key(key)) {
            struct json_object *data = json_object_new_object();
            if (data)
                json_object_object_add(data, "key",
                                       json_object_new_string(key));
            rpc_call_fail(call, RPC_E_PERMISSION_DENIED, data,
                          "'%s' can only be set in torrentd.conf by the "
                          "administrator",
                          key);
            goto out;
        }
        if (!val) {
            /* null: back to the file's value. */
            state_settings_del(&rt, key);
            if (k->apply == CONFIG_LIVE &&
                config_copy_key(&next, &s->base, k) < 0)
                goto nomem_all;
            json_object_array_add(reverted, json_object_new_string(key));
            continue;
        }
        buf_reset(&text);
        struct config_error ce = {0};
        if (!value_text(val, &text) || memchr(text.data, '\n', text.len) ||
            strlen(text.data) != text.len) {
            rpc_call_fail(call, RPC_INVALID_PARAMS, NULL,
                          "bad value for '%s': give a string, a number or "
                          "true/false",
                          key);
            goto out;
        }
        struct config probe;
        if (config_copy(&probe, &next) < 0)
            goto nomem_all;
        r = config_set(&probe, key, text.data, &ce);
        if (r == 0) {
            struct config_error ve = {0};
            if (config_validate(&probe, &ve) < 0) {
                r = -EINVAL;
                snprintf(ce.message, sizeof(ce.message), "%s", ve.message);
            }
        }
        if (r < 0) {
            config_release(&probe);
            if (r == -ENOMEM)
                goto nomem_all;
            rpc_call_fail(call, RPC_INVALID_PARAMS, NULL,
                          "bad value for '%s': %s", key, ce.message);
            goto out;
        }
        if (k->apply == CONFIG_LIVE) {
            r = config_copy_key(&next, &probe, k);
            json_object_array_add(applied, json_object_new_string(key));
        } else {
            json_object_array_add(restart, json_object_new_string(key));
        }
        config_release(&probe);
        if (r < 0 || state_settings_put(&rt, key, text.data) < 0)
            goto nomem_all;
    }

    /* Commit. */
    {
        struct buf file;
        buf_init(&file, STATE_MAX_SETTINGS);
        struct io_job *j = session_io_job_new(s, NULL, call);
        if (!j || state_settings_encode(&rt, &file) < 0) {
            buf_release(&file);
            if (j) {
                j->call = NULL;
                session_io_job_free(j);
            }
            goto nomem_all;
        }
        size_t len;
        char *data = buf_steal(&file, &len);
        (void)session_io_add_write(j, "settings", data, len);
        struct config old = s->cfg;
        s->cfg = next;
        memset(&next, 0, sizeof(next));
        state_settings_release(&s->runtime);
        s->runtime = rt;
        memset(&rt, 0, sizeof(rt));
        session_apply_live(s, &old);
        config_release(&old);

        struct json_object *res = json_object_new_object();
        json_object_object_add(res, "applied", json_object_get(applied));
        json_object_object_add(res, "needs_restart", json_object_get(restart));
        json_object_object_add(res, "reverted", json_object_get(reverted));
        j->result = res;
        j->after = settings_done;
        const struct rpc_caller *c = rpc_call_caller(call);
        log_info(
            "run-time settings changed by uid %u: %s",
            c ? (unsigned)c->uid : 0u,
            json_object_to_json_string_ext(params, JSON_C_TO_STRING_PLAIN));
        struct json_object *ev = json_object_new_object();
        if (ev) {
            json_object_object_add(ev, "type",
                                   json_object_new_string("session.settings"));
            json_object_object_add(ev, "source",
                                   json_object_new_string("session.set"));
            json_object_object_add(ev, "applied", json_object_get(applied));
            json_object_object_add(ev, "needs_restart",
                                   json_object_get(restart));
            json_object_object_add(ev, "reverted", json_object_get(reverted));
            events_publish(s->events, ev);
        }
        session_io_submit(s, j);
        session_status_changed(s);
    }
    goto out;

nomem_all:
    rpc_call_fail(call, RPC_INTERNAL_ERROR, NULL, "out of memory");
out:
    buf_release(&text);
    json_object_put(applied);
    json_object_put(restart);
    json_object_put(reverted);
    state_settings_release(&rt);
    config_release(&next);
    return;
nomem_cfg:
    state_settings_release(&rt);
    config_release(&next);
nomem:
    rpc_call_fail(call, RPC_INTERNAL_ERROR, NULL, "out of memory");
}

static void
m_session_stats(struct session *s, struct rpc_call *call,
                struct json_object *params)
{
    (void)params;
    struct json_object *res = json_object_new_object();
    struct json_object *states = json_object_new_object();
    if (!res || !states) {
        json_object_put(res);
        json_object_put(states);
        rpc_call_fail(call, RPC_INTERNAL_ERROR, NULL, "out of memory");
        return;
    }
    uint64_t size = 0, have = 0, down = 0, up = 0;
    for (size_t i = 0; i < s->n; i++) {
        size += s->v[i]->size_wanted;
        have += s->v[i]->have_wanted;
        down += s->v[i]->downloaded;
        up += s->v[i]->uploaded;
    }
    for (int st = 0; st < TORRENT_STATE_MAX; st++)
        json_object_object_add(states,
                               torrent_state_name((enum torrent_state)st),
                               json_object_new_uint64(session_count_state(
                                   s, (enum torrent_state)st)));
    double uptime = ev_now(s->loop) - s->started_mono;
    json_object_object_add(res, "torrents", json_object_new_uint64(s->n));
    json_object_object_add(res, "states", states);
    json_object_object_add(res, "size_bytes", json_object_new_uint64(size));
    json_object_object_add(res, "have_bytes", json_object_new_uint64(have));
    json_object_object_add(res, "downloaded_bytes",
                           json_object_new_uint64(down));
    json_object_object_add(res, "uploaded_bytes", json_object_new_uint64(up));
    uint64_t drate = 0, urate = 0, npeers = 0;
    engine_ctx_rates(s->engine, &drate, &urate);
    for (size_t i = 0; i < s->n; i++)
        npeers += s->v[i]->peers_connected;
    json_object_object_add(res, "download_rate",
                           json_object_new_uint64(drate));
    json_object_object_add(res, "upload_rate", json_object_new_uint64(urate));
    json_object_object_add(res, "peers_connected",
                           json_object_new_uint64(npeers));
    json_object_object_add(res, "started_at",
                           json_object_new_int64(s->started_at));
    json_object_object_add(res, "uptime_s",
                           json_object_new_int64((int64_t)uptime));
    json_object_object_add(res, "event_seq",
                           json_object_new_uint64(events_last_seq(s->events)));
    json_object_object_add(res, "hooks_running",
                           json_object_new_uint64(hooks_running(s->progs)));
    rpc_call_reply(call, res);
}

static void
m_daemon_shutdown(struct session *s, struct rpc_call *call,
                  struct json_object *params)
{
    (void)params;
    const struct rpc_caller *c = rpc_call_caller(call);
    log_notice("shutdown asked by uid %u", c ? (unsigned)c->uid : 0u);
    struct json_object *res = json_object_new_object();
    if (res)
        json_object_object_add(res, "status",
                               json_object_new_string("stopping"));
    rpc_call_reply(call, res);
    if (s->hooks.shutdown_requested)
        s->hooks.shutdown_requested(s->hooks.arg);
}

static const struct rpc_method methods[] = {
    {"torrent.add", m_torrent_add, true},
    {"torrent.list", m_torrent_list, false},
    {"torrent.get", m_torrent_get, false},
    {"torrent.start", m_torrent_start, true},
    {"torrent.stop", m_torrent_stop, true},
    {"torrent.remove", m_torrent_remove, true},
    {"torrent.verify", m_torrent_verify, true},
    {"torrent.move", m_torrent_move, true},
    {"torrent.set", m_torrent_set, true},
    {"torrent.files", m_torrent_files, false},
    {"torrent.peers", m_torrent_peers, false},
    {"torrent.trackers", m_torrent_trackers, false},
    {"torrent.add_peer", m_torrent_add_peer, true},
    {"session.get", m_session_get, false},
    {"session.set", m_session_set, true},
    {"session.stats", m_session_stats, false},
    {"daemon.shutdown", m_daemon_shutdown, true},
    {"dht.status", session_m_dht_status, false},
    {"dht.get_peers", session_m_dht_get_peers, true},
    {"dht.announce", session_m_dht_announce, true},
    {"lsd.status", lsd_m_status, false},
};

const struct rpc_method *
session_rpc_find(const char *name)
{
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
        if (strcmp(methods[i].name, name) == 0)
            return &methods[i];
    return NULL;
}

/* --- the watch directory ------------------------------------------------- */

void
session_watch_add(void *arg, struct meta_info *meta, uint8_t *raw, size_t len,
                  const char *path, void *token)
{
    struct session *s = arg;
    (void)path;
    struct add_req a = {0};
    a.s = s;
    a.download_dir = s->cfg.download_dir; /* borrowed, not freed below */
    a.meta = meta;
    a.raw = raw;
    a.raw_len = len;
    a.watch_token = token;
    if (!s->stopping)
        add_with_meta(s, &a);
    /* What add_with_meta() did not take. */
    meta_free(a.meta);
    free(a.raw);
    if (a.watch_token)
        watch_added(a.watch_token, false);
}
