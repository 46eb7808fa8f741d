/* state — the state directory: records and atomic file operations. */
#include "daemon/state.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/bencode.h"
#include "common/buf.h"

static const struct benc_limits resume_limits = {
    .max_input = STATE_MAX_RECORD,
    .max_depth = 4,
    .max_nodes = 256,
};

const char *
state_strerror(int err)
{
    switch (err) {
    case STATE_OK:
        return "success";
    case STATE_E_BENCODE:
        return "not valid bencode";
    case STATE_E_NOT_DICT:
        return "not a dictionary";
    case STATE_E_FIELD:
        return "a field is missing or of the wrong type";
    case STATE_E_RANGE:
        return "a value is out of bounds";
    case STATE_E_VERSION:
        return "unknown record version";
    case STATE_E_SYNTAX:
        return "a line is not 'key = value'";
    case STATE_E_NOMEM:
        return "out of memory";
    default:
        return "unknown error";
    }
}

static int
fail(struct state_errinfo *reterr, int err, size_t off, const char *what)
{
    if (reterr) {
        reterr->offset = off;
        snprintf(reterr->detail, sizeof(reterr->detail), "%s", what);
    }
    return err;
}

void
state_resume_release(struct state_resume *r)
{
    if (!r)
        return;
    free(r->download_dir);
    free(r->have);
    free(r->priority);
    free(r->error);
    memset(r, 0, sizeof(*r));
}

/* --- encoding ----------------------------------------------------------- */

static int
put_int(struct buf *b, const char *key, int64_t v)
{
    int r = benc_put_cstr(b, key);
    return r < 0 ? r : benc_put_int(b, v);
}

static int
put_bytes(struct buf *b, const char *key, const void *p, size_t n)
{
    int r = benc_put_cstr(b, key);
    return r < 0 ? r : benc_put_str(b, p, n);
}

static bool
too_big(uint64_t v)
{
    return v > INT64_MAX;
}

int
state_resume_encode(const struct state_resume *r, struct buf *out)
{
    if (!r->download_dir || r->id == 0 || too_big(r->downloaded) ||
        too_big(r->uploaded) || too_big(r->download_limit) ||
        too_big(r->upload_limit) || (r->pieces && !r->have) ||
        (r->n_priority && !r->priority))
        return -EINVAL;
    size_t before = out->len;
    int e = 0;
    /* Keys in sorted order (BEP 3). */
    if ((e = benc_put_dict(out)) < 0 ||
        (e = put_int(out, "added_at", r->added_at)) < 0 ||
        (e = put_int(out, "completed_at", r->completed_at)) < 0 ||
        (e = put_bytes(out, "download_dir", r->download_dir,
                       strlen(r->download_dir))) < 0 ||
        (e = put_int(out, "download_limit", (int64_t)r->download_limit)) < 0 ||
        (e = put_int(out, "downloaded", (int64_t)r->downloaded)) < 0)
        goto fail;
    if (r->error &&
        (e = put_bytes(out, "error", r->error, strlen(r->error))) < 0)
        goto fail;
    if ((e = put_bytes(out, "have", r->have ? (const void *)r->have : "",
                       (r->pieces + 7u) / 8u)) < 0 ||
        (e = put_int(out, "id", r->id)) < 0 ||
        /* Optional: written only when not the default. */
        (r->idle_limit >= 0 &&
         (e = put_int(out, "idle_limit", r->idle_limit)) < 0) ||
        (e = put_int(out, "paused", r->paused)) < 0 ||
        (e = put_int(out, "pieces", r->pieces)) < 0 ||
        (e = put_bytes(out, "priority",
                       r->priority ? (const void *)r->priority : "",
                       r->n_priority)) < 0 ||
        (e = put_int(out, "ratio_limit", r->ratio_limit)) < 0 ||
        /* Optional: written only when set, so older records stay. */
        (r->seed_override && (e = put_int(out, "seed_override", 1)) < 0) ||
        (r->sequential && (e = put_int(out, "sequential", 1)) < 0) ||
        (r->stop_reason &&
         (e = put_int(out, "stop_reason", r->stop_reason)) < 0) ||
        (e = put_int(out, "upload_limit", (int64_t)r->upload_limit)) < 0 ||
        (e = put_int(out, "uploaded", (int64_t)r->uploaded)) < 0 ||
        (e = put_int(out, "version", STATE_RESUME_VERSION)) < 0 ||
        (e = benc_put_end(out)) < 0)
        goto fail;
    return 0;
fail:
    out->len = before;
    if (out->data)
        out->data[before] = '\0';
    return e;
}

/* --- decoding ----------------------------------------------------------- */

struct reader {
    const struct benc_doc *doc;
    struct state_errinfo *reterr;
};

/* An integer field within [min, max]. */
static int
get_int(struct reader *rd, const char *key, int64_t min, int64_t max,
        int64_t *ret)
{
    uint32_t i = benc_dict_get(rd->doc, 0, key);
    if (i == BENC_NONE || !benc_is(rd->doc, i, BENC_INT))
        return fail(rd->reterr, STATE_E_FIELD,
                    i == BENC_NONE ? 0 : rd->doc->nodes[i].start, key);
    int64_t v = rd->doc->nodes[i].u.i;
    if (v < min || v > max)
        return fail(rd->reterr, STATE_E_RANGE, rd->doc->nodes[i].start, key);
    *ret = v;
    return 0;
}

/* A string field of at most max bytes; optional ones may be absent
 * (*ret_p = NULL then). */
static int
get_str(struct reader *rd, const char *key, size_t max, bool optional,
        const uint8_t **ret_p, size_t *ret_n)
{
    uint32_t i = benc_dict_get(rd->doc, 0, key);
    if (i == BENC_NONE && optional) {
        *ret_p = NULL;
        *ret_n = 0;
        return 0;
    }
    const uint8_t *p = i == BENC_NONE ? NULL : benc_str(rd->doc, i, ret_n);
    if (!p)
        return fail(rd->reterr, STATE_E_FIELD,
                    i == BENC_NONE ? 0 : rd->doc->nodes[i].start, key);
    if (*ret_n > max)
        return fail(rd->reterr, STATE_E_RANGE, rd->doc->nodes[i].start, key);
    *ret_p = p;
    return 0;
}

int
state_resume_decode(struct state_resume *ret, const void *buf, size_t len,
                    struct state_errinfo *reterr)
{
    struct benc_doc doc;
    size_t off = 0;
    int e = benc_parse(&doc, buf, len, &resume_limits, BENC_STRICT_KEYS, &off);
    if (e < 0)
        return fail(reterr, STATE_E_BENCODE, off, benc_strerror(e));
    struct reader rd = {.doc = &doc, .reterr = reterr};
    struct state_resume r = {0};
    int64_t v;
    const uint8_t *p;
    size_t n;

    if (!benc_is(&doc, 0, BENC_DICT)) {
        e = fail(reterr, STATE_E_NOT_DICT, 0, "top level");
        goto out;
    }
    if ((e = get_int(&rd, "version", 0, INT64_MAX, &v)) < 0)
        goto out;
    if (v != STATE_RESUME_VERSION) {
        e = fail(reterr, STATE_E_VERSION, 0, "version");
        goto out;
    }
    if ((e = get_int(&rd, "id", 1, UINT32_MAX, &v)) < 0)
        goto out;
    r.id = (uint32_t)v;
    if ((e = get_int(&rd, "paused", 0, 1, &v)) < 0)
        goto out;
    r.paused = v != 0;
    if ((e = get_int(&rd, "added_at", 0, INT64_MAX, &r.added_at)) < 0 ||
        (e = get_int(&rd, "completed_at", 0, INT64_MAX, &r.completed_at)) < 0)
        goto out;
    if ((e = get_int(&rd, "downloaded", 0, INT64_MAX, &v)) < 0)
        goto out;
    r.downloaded = (uint64_t)v;
    if ((e = get_int(&rd, "uploaded", 0, INT64_MAX, &v)) < 0)
        goto out;
    r.uploaded = (uint64_t)v;
    if ((e = get_int(&rd, "download_limit", 0, INT64_MAX, &v)) < 0)
        goto out;
    r.download_limit = (uint64_t)v;
    if ((e = get_int(&rd, "upload_limit", 0, INT64_MAX, &v)) < 0)
        goto out;
    r.upload_limit = (uint64_t)v;
    if ((e = get_int(&rd, "ratio_limit", -1, INT32_MAX, &r.ratio_limit)) < 0)
        goto out;
    if (benc_dict_get(&doc, 0, "sequential") != BENC_NONE) {
        if ((e = get_int(&rd, "sequential", 0, 1, &v)) < 0)
            goto out;
        r.sequential = v != 0;
    }
    r.idle_limit = -1;
    if (benc_dict_get(&doc, 0, "idle_limit") != BENC_NONE &&
        (e = get_int(&rd, "idle_limit", -1, INT32_MAX, &r.idle_limit)) < 0)
        goto out;
    if (benc_dict_get(&doc, 0, "seed_override") != BENC_NONE) {
        if ((e = get_int(&rd, "seed_override", 0, 1, &v)) < 0)
            goto out;
        r.seed_override = v != 0;
    }
    /* 1 ratio, 2 idle (enum seedlimit_reason). */
    if (benc_dict_get(&doc, 0, "stop_reason") != BENC_NONE) {
        if ((e = get_int(&rd, "stop_reason", 0, 2, &v)) < 0)
            goto out;
        r.stop_reason = (int)v;
    }

    /* download_dir: absolute, no NUL. */
    if ((e = get_str(&rd, "download_dir", 4096, false, &p, &n)) < 0)
        goto out;
    if (n == 0 || p[0] != '/' || memchr(p, '\0', n)) {
        e = fail(reterr, STATE_E_RANGE, 0, "download_dir");
        goto out;
    }
    if (!(r.download_dir = buf_memdup0(p, n)))
        goto nomem;

    if ((e = get_int(&rd, "pieces", 0, STATE_MAX_PIECES, &v)) < 0)
        goto out;
    r.pieces = (uint32_t)v;
    if ((e = get_str(&rd, "have", STATE_MAX_PIECES / 8, false, &p, &n)) < 0)
        goto out;
    if (n != (r.pieces + 7u) / 8u) {
        e = fail(reterr, STATE_E_RANGE, 0, "have");
        goto out;
    }
    if (n) {
        /* Bits past the last piece must be zero. */
        unsigned spare = (unsigned)(n * 8 - r.pieces);
        if (spare && (p[n - 1] & ((1u << spare) - 1u))) {
            e = fail(reterr, STATE_E_RANGE, 0, "have");
            goto out;
        }
        if (!(r.have = malloc(n)))
            goto nomem;
        memcpy(r.have, p, n);
    }

    if ((e = get_str(&rd, "priority", STATE_MAX_FILES, false, &p, &n)) < 0)
        goto out;
    for (size_t i = 0; i < n; i++) {
        if (p[i] >= STATE_PRIO_MAX) {
            e = fail(reterr, STATE_E_RANGE, 0, "priority");
            goto out;
        }
    }
    if (n) {
        if (!(r.priority = malloc(n)))
            goto nomem;
        memcpy(r.priority, p, n);
        r.n_priority = (uint32_t)n;
    }

    if ((e = get_str(&rd, "error", 1024, true, &p, &n)) < 0)
        goto out;
    if (p) {
        if (memchr(p, '\0', n)) {
            e = fail(reterr, STATE_E_RANGE, 0, "error");
            goto out;
        }
        if (!(r.error = buf_memdup0(p, n)))
            goto nomem;
    }
    *ret = r;
    benc_doc_release(&doc);
    return 0;

nomem:
    e = fail(reterr, STATE_E_NOMEM, 0, "out of memory");
out:
    state_resume_release(&r);
    benc_doc_release(&doc);
    return e;
}

/* --- the session record ------------------------------------------------- */

int
state_session_encode(const struct state_session *s, struct buf *out)
{
    if (s->event_seq > INT64_MAX)
        return -EINVAL;
    size_t before = out->len;
    int e;
    if ((e = benc_put_dict(out)) < 0 ||
        (e = put_int(out, "clean", s->clean)) < 0 ||
        (e = put_int(out, "event_seq", (int64_t)s->event_seq)) < 0 ||
        (e = put_int(out, "next_id", s->next_id)) < 0 ||
        (e = put_int(out, "version", STATE_RESUME_VERSION)) < 0 ||
        (e = benc_put_end(out)) < 0) {
        out->len = before;
        if (out->data)
            out->data[before] = '\0';
        return e;
    }
    return 0;
}

int
state_session_decode(struct state_session *ret, const void *buf, size_t len,
                     struct state_errinfo *reterr)
{
    struct benc_doc doc;
    size_t off = 0;
    int e = benc_parse(&doc, buf, len, &resume_limits, BENC_STRICT_KEYS, &off);
    if (e < 0)
        return fail(reterr, STATE_E_BENCODE, off, benc_strerror(e));
    struct reader rd = {.doc = &doc, .reterr = reterr};
    struct state_session s = {0};
    int64_t v;
    if (!benc_is(&doc, 0, BENC_DICT)) {
        e = fail(reterr, STATE_E_NOT_DICT, 0, "top level");
        goto out;
    }
    if ((e = get_int(&rd, "version", 0, INT64_MAX, &v)) < 0)
        goto out;
    if (v != STATE_RESUME_VERSION) {
        e = fail(reterr, STATE_E_VERSION, 0, "version");
        goto out;
    }
    if ((e = get_int(&rd, "clean", 0, 1, &v)) < 0)
        goto out;
    s.clean = v != 0;
    if ((e = get_int(&rd, "event_seq", 0, INT64_MAX, &v)) < 0)
        goto out;
    s.event_seq = (uint64_t)v;
    if ((e = get_int(&rd, "next_id", 1, UINT32_MAX, &v)) < 0)
        goto out;
    s.next_id = (uint32_t)v;
    *ret = s;
out:
    benc_doc_release(&doc);
    return e;
}

/* --- run-time settings -------------------------------------------------- */

void
state_settings_release(struct state_settings *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++) {
        free(s->items[i].key);
        free(s->items[i].value);
    }
    free(s->items);
    s->items = NULL;
    s->n = 0;
}

static bool
text_ok(const char *s)
{
    return !strpbrk(s, "\r\n");
}

const char *
state_settings_get(const struct state_settings *s, const char *key)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->items[i].key, key) == 0)
            return s->items[i].value;
    return NULL;
}

int
state_settings_put(struct state_settings *s, const char *key, const char *value)
{
    if (!*key || !text_ok(key) || !text_ok(value) || strchr(key, '=') ||
        strchr(key, '#') || strchr(key, ' '))
        return -EINVAL;
    char *v = strdup(value);
    if (!v)
        return -ENOMEM;
    for (size_t i = 0; i < s->n; i++) {
        if (strcmp(s->items[i].key, key) == 0) {
            free(s->items[i].value);
            s->items[i].value = v;
            return 0;
        }
    }
    char *k = strdup(key);
    struct state_setting *items =
        k ? realloc(s->items, (s->n + 1) * sizeof(*items)) : NULL;
    if (!items) {
        free(k);
        free(v);
        return -ENOMEM;
    }
    s->items = items;
    s->items[s->n].key = k;
    s->items[s->n].value = v;
    s->n++;
    return 0;
}

bool
state_settings_del(struct state_settings *s, const char *key)
{
    for (size_t i = 0; i < s->n; i++) {
        if (strcmp(s->items[i].key, key) == 0) {
            free(s->items[i].key);
            free(s->items[i].value);
            memmove(&s->items[i], &s->items[i + 1],
                    (s->n - i - 1) * sizeof(s->items[0]));
            s->n--;
            return true;
        }
    }
    return false;
}

int
state_settings_encode(const struct state_settings *s, struct buf *out)
{
    int e = buf_puts(out, "# run-time settings of torrentd (session.set); "
                          "written by torrentd\n");
    for (size_t i = 0; e == 0 && i < s->n; i++)
        e = buf_printf(out, "%s = %s\n", s->items[i].key, s->items[i].value);
    return e;
}

static const char *
skip_space(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    return p;
}

static const char *
trim_end(const char *start, const char *end)
{
    while (end > start &&
           (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
        end--;
    return end;
}

int
state_settings_decode(struct state_settings *ret, const char *text, size_t len,
                      struct state_errinfo *reterr)
{
    if (len > STATE_MAX_SETTINGS)
        return fail(reterr, STATE_E_RANGE, STATE_MAX_SETTINGS, "size");
    if (memchr(text, '\0', len))
        return fail(reterr, STATE_E_SYNTAX,
                    (size_t)((const char *)memchr(text, '\0', len) - text),
                    "NUL byte");
    struct state_settings s = {0};
    const char *p = text, *end = text + len;
    int e = 0;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = nl ? nl : end;
        const char *k = skip_space(p, line_end);
        if (k < line_end && *k != '#') {
            const char *eq = memchr(k, '=', (size_t)(line_end - k));
            if (!eq) {
                e = fail(reterr, STATE_E_SYNTAX, (size_t)(p - text), "no '='");
                goto out;
            }
            const char *kend = trim_end(k, eq);
            const char *v = skip_space(eq + 1, line_end);
            const char *vend = trim_end(v, line_end);
            if (kend == k) {
                e = fail(reterr, STATE_E_SYNTAX, (size_t)(p - text),
                         "empty key");
                goto out;
            }
            /* Not strndup(): the input need not be NUL-terminated. */
            char *key = buf_memdup0(k, (size_t)(kend - k));
            char *val = buf_memdup0(v, (size_t)(vend - v));
            int r = key && val ? state_settings_put(&s, key, val) : -ENOMEM;
            free(key);
            free(val);
            if (r == -EINVAL) {
                e = fail(reterr, STATE_E_SYNTAX, (size_t)(p - text), "bad key");
                goto out;
            }
            if (r < 0) {
                e = fail(reterr, STATE_E_NOMEM, 0, "out of memory");
                goto out;
            }
        }
        p = nl ? nl + 1 : end;
    }
    *ret = s;
    return 0;
out:
    state_settings_release(&s);
    return e;
}

/* --- files -------------------------------------------------------------- */

static int
path_join(char *out, size_t n, const char *dir, const char *name,
          const char *suffix)
{
    int k = snprintf(out, n, "%s/%s%s", dir, name, suffix);
    return k < 0 || (size_t)k >= n ? -ENAMETOOLONG : 0;
}

static int
fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    /* Some file systems cannot fsync a directory (EINVAL): there is
     * nothing more to do there. */
    int r = fsync(fd) < 0 && errno != EINVAL ? -errno : 0;
    close(fd);
    return r;
}

int
state_write_file(const char *dir, const char *name, const void *data,
                 size_t len)
{
    char path[4096], tmp[4096];
    int r;
    if ((r = path_join(path, sizeof(path), dir, name, "")) < 0 ||
        (r = path_join(tmp, sizeof(tmp), dir, name, ".tmp")) < 0)
        return r;
    int fd =
        open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return -errno;
    const char *p = data;
    size_t left = len;
    while (left) {
        ssize_t n = write(fd, p, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            r = n < 0 ? -errno : -EIO;
            goto fail;
        }
        p += n;
        left -= (size_t)n;
    }
    if (fsync(fd) < 0) {
        r = -errno;
        goto fail;
    }
    if (close(fd) < 0) {
        fd = -1;
        r = -errno;
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) < 0) {
        r = -errno;
        goto fail;
    }
    return fsync_dir(dir);
fail:
    if (fd >= 0)
        close(fd);
    (void)unlink(tmp);
    return r;
}

int
state_read_file(const char *dir, const char *name, size_t max, char **ret_data,
                size_t *ret_len)
{
    char path[4096];
    int r = path_join(path, sizeof(path), dir, name, "");
    if (r < 0)
        return r;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        r = -errno;
        close(fd);
        return r;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return -EINVAL;
    }
    if ((uint64_t)st.st_size > max) {
        close(fd);
        return -EFBIG;
    }
    size_t cap = (size_t)st.st_size;
    char *data = malloc(cap + 1);
    if (!data) {
        close(fd);
        return -ENOMEM;
    }
    size_t got = 0;
    for (;;) {
        if (got == cap) {
            /* The file may have grown since fstat: one more byte says. */
            char c;
            ssize_t n = read(fd, &c, 1);
            if (n < 0 && errno == EINTR)
                continue;
            if (n != 0) {
                r = n < 0 ? -errno : -EFBIG;
                goto fail;
            }
            break;
        }
        ssize_t n = read(fd, data + got, cap - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            r = -errno;
            goto fail;
        }
        if (n == 0)
            break; /* shrank: what is there is the file */
        got += (size_t)n;
    }
    close(fd);
    data[got] = '\0';
    *ret_data = data;
    *ret_len = got;
    return 0;
fail:
    free(data);
    close(fd);
    return r;
}

int
state_unlink(const char *dir, const char *name)
{
    char path[4096];
    int r = path_join(path, sizeof(path), dir, name, "");
    if (r < 0)
        return r;
    if (unlink(path) < 0)
        return errno == ENOENT ? 0 : -errno;
    return fsync_dir(dir);
}

int
state_set_aside(const char *dir, const char *name, char *ret_name, size_t n)
{
    char from[4096], to[4096], newname[1024];
    int r = path_join(from, sizeof(from), dir, name, "");
    if (r < 0)
        return r;
    long long now = (long long)time(NULL);
    for (unsigned i = 0; i < 100; i++) {
        int k = i ? snprintf(newname, sizeof(newname), "%s.corrupt-%lld-%u",
                             name, now, i)
                  : snprintf(newname, sizeof(newname), "%s.corrupt-%lld", name,
                             now);
        if (k < 0 || (size_t)k >= sizeof(newname))
            return -ENAMETOOLONG;
        if ((r = path_join(to, sizeof(to), dir, newname, "")) < 0)
            return r;
        /* Never overwrite an earlier one. */
        if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0) {
            if (ret_name)
                snprintf(ret_name, n, "%s", newname);
            (void)fsync_dir(dir);
            return 0;
        }
        if (errno == EEXIST)
            continue;
        if (errno != EINVAL && errno != ENOSYS)
            return -errno;
        /* A file system without RENAME_NOREPLACE. */
        struct stat st;
        if (lstat(to, &st) == 0)
            continue;
        if (rename(from, to) < 0)
            return -errno;
        if (ret_name)
            snprintf(ret_name, n, "%s", newname);
        (void)fsync_dir(dir);
        return 0;
    }
    return -EEXIST;
}

int
state_mkdir(const char *dir)
{
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        return -errno;
    struct stat st;
    if (stat(dir, &st) < 0)
        return -errno;
    return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}
