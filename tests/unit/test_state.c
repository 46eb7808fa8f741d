/* Unit tests for daemon/state: the resume record, the session record and
 * the settings file (round trips, every error value, truncation at every
 * length, bit flips), and the atomic file operations in a temp dir. */
#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/buf.h"
#include "daemon/state.h"

static void
sample(struct state_resume *r)
{
    static uint8_t have[2] = {0xff, 0xe0}; /* 11 pieces, all verified */
    static uint8_t prio[3] = {STATE_PRIO_NORMAL, STATE_PRIO_SKIP,
                              STATE_PRIO_HIGH};
    memset(r, 0, sizeof(*r));
    r->id = 7;
    r->paused = true;
    static char dir[] = "/srv/torrents";
    static char err[] = "cannot read 'x': Permission denied";
    r->download_dir = dir;
    r->added_at = 1700000000;
    r->completed_at = 1700000100;
    r->downloaded = 123456789;
    r->uploaded = 42;
    r->download_limit = 1000;
    r->upload_limit = 0;
    r->ratio_limit = 1500;
    r->have = have;
    r->pieces = 11;
    r->priority = prio;
    r->n_priority = 3;
    r->error = err;
}

static char *
encode_sample(size_t *ret_len)
{
    struct state_resume r;
    sample(&r);
    struct buf b;
    buf_init(&b, STATE_MAX_RECORD);
    assert_int_equal(state_resume_encode(&r, &b), 0);
    return buf_steal(&b, ret_len);
}

static void
test_resume_round_trip(void **state)
{
    (void)state;
    size_t len;
    char *data = encode_sample(&len);
    struct state_resume a, r;
    sample(&a);
    struct state_errinfo ei;
    assert_int_equal(state_resume_decode(&r, data, len, &ei), 0);
    assert_int_equal(r.id, a.id);
    assert_true(r.paused);
    assert_string_equal(r.download_dir, a.download_dir);
    assert_int_equal(r.added_at, a.added_at);
    assert_int_equal(r.completed_at, a.completed_at);
    assert_int_equal(r.downloaded, a.downloaded);
    assert_int_equal(r.uploaded, a.uploaded);
    assert_int_equal(r.download_limit, a.download_limit);
    assert_int_equal(r.upload_limit, 0);
    assert_int_equal(r.ratio_limit, 1500);
    assert_int_equal(r.pieces, 11);
    assert_memory_equal(r.have, a.have, 2);
    assert_int_equal(r.n_priority, 3);
    assert_memory_equal(r.priority, a.priority, 3);
    assert_string_equal(r.error, a.error);
    state_resume_release(&r);
    state_resume_release(&r); /* twice is harmless */

    /* Empty bitfield and priorities, no error. */
    sample(&a);
    a.have = NULL;
    a.pieces = 0;
    a.priority = NULL;
    a.n_priority = 0;
    a.error = NULL;
    struct buf b;
    buf_init(&b, STATE_MAX_RECORD);
    assert_int_equal(state_resume_encode(&a, &b), 0);
    assert_int_equal(state_resume_decode(&r, b.data, b.len, NULL), 0);
    assert_null(r.have);
    assert_null(r.priority);
    assert_null(r.error);
    assert_false(r.sequential);
    assert_null(memmem(b.data, b.len, "sequential", 10)); /* absent */
    state_resume_release(&r);
    buf_release(&b);

    /* The optional sequential flag. */
    sample(&a);
    a.sequential = true;
    buf_init(&b, STATE_MAX_RECORD);
    assert_int_equal(state_resume_encode(&a, &b), 0);
    assert_non_null(memmem(b.data, b.len, "10:sequentiali1e", 16));
    assert_int_equal(state_resume_decode(&r, b.data, b.len, NULL), 0);
    assert_true(r.sequential);
    state_resume_release(&r);
    buf_release(&b);
    free(data);
}

static void
test_resume_encode_refuses(void **state)
{
    (void)state;
    struct state_resume a;
    struct buf b;
    buf_init(&b, STATE_MAX_RECORD);
    sample(&a);
    a.id = 0;
    assert_int_equal(state_resume_encode(&a, &b), -EINVAL);
    sample(&a);
    a.download_dir = NULL;
    assert_int_equal(state_resume_encode(&a, &b), -EINVAL);
    sample(&a);
    a.uploaded = UINT64_MAX;
    assert_int_equal(state_resume_encode(&a, &b), -EINVAL);
    assert_int_equal(b.len, 0);
    /* Past the buffer's cap: nothing is left half-written. */
    struct buf small;
    buf_init(&small, 20);
    sample(&a);
    assert_int_equal(state_resume_encode(&a, &small), -EMSGSIZE);
    assert_int_equal(small.len, 0);
    buf_release(&small);
    buf_release(&b);
}

static int
decode_text(const char *text)
{
    struct state_resume r;
    struct state_errinfo ei;
    int e = state_resume_decode(&r, text, strlen(text), &ei);
    if (e == 0)
        state_resume_release(&r);
    return e;
}

/* A valid record with one field replaced: field=NULL drops it. */
static char *
record_with(const char *key, const char *value)
{
    static const char *const keys[] = {
        "added_at",   "completed_at", "download_dir", "download_limit",
        "downloaded", "have",         "id",           "paused",
        "pieces",     "priority",     "ratio_limit",  "upload_limit",
        "uploaded",   "version",      NULL,
    };
    static const char *const vals[] = {
        "i1e", "i0e", "4:/srv", "i0e", "i0e", "1:\x80", "i3e", "i0e",
        "i1e", "0:",  "i-1e",   "i0e", "i0e", "i1e",    NULL,
    };
    struct buf b;
    buf_init(&b, 4096);
    assert_int_equal(buf_putc(&b, 'd'), 0);
    for (size_t i = 0; keys[i]; i++) {
        const char *v = vals[i];
        if (strcmp(keys[i], key) == 0) {
            if (!value)
                continue;
            v = value;
        }
        assert_int_equal(
            buf_printf(&b, "%zu:%s%s", strlen(keys[i]), keys[i], v), 0);
    }
    assert_int_equal(buf_putc(&b, 'e'), 0);
    return buf_steal(&b, NULL);
}

static void
expect_field(const char *key, const char *value, int err)
{
    char *text = record_with(key, value);
    assert_int_equal(decode_text(text), err);
    free(text);
}

static void
test_resume_errors(void **state)
{
    (void)state;
    expect_field("", NULL, 0); /* the base record is valid */
    assert_int_equal(decode_text(""), STATE_E_BENCODE);
    assert_int_equal(decode_text("d3:fooi1e"), STATE_E_BENCODE);
    assert_int_equal(decode_text("i5e"), STATE_E_NOT_DICT);
    assert_int_equal(decode_text("le"), STATE_E_NOT_DICT);
    /* Unsorted keys are corruption, not a quirk to forgive. */
    assert_int_equal(decode_text("d1:bi1e1:ai1ee"), STATE_E_BENCODE);

    const char *const required[] = {
        "added_at",   "completed_at", "download_dir", "download_limit",
        "downloaded", "have",         "id",           "paused",
        "pieces",     "priority",     "ratio_limit",  "upload_limit",
        "uploaded",   "version",      NULL,
    };
    for (size_t i = 0; required[i]; i++)
        expect_field(required[i], NULL, STATE_E_FIELD);
    expect_field("id", "3:abc", STATE_E_FIELD);
    expect_field("download_dir", "i1e", STATE_E_FIELD);
    expect_field("version", "i2e", STATE_E_VERSION);
    expect_field("id", "i0e", STATE_E_RANGE);
    expect_field("id", "i4294967296e", STATE_E_RANGE);
    expect_field("paused", "i2e", STATE_E_RANGE);
    expect_field("added_at", "i-1e", STATE_E_RANGE);
    expect_field("downloaded", "i-5e", STATE_E_RANGE);
    expect_field("ratio_limit", "i-2e", STATE_E_RANGE);
    expect_field("download_dir", "3:rel", STATE_E_RANGE);
    expect_field("download_dir", "0:", STATE_E_RANGE);
    expect_field("pieces", "i9e", STATE_E_RANGE);  /* have is 1 byte */
    expect_field("have", "1:\x81", STATE_E_RANGE); /* a bit past pieces */
    expect_field("priority", "2:\x02\x04", STATE_E_RANGE);
    expect_field("pieces", "i67108865e", STATE_E_RANGE);
    /* error is optional, but a string when present. */
    char *text = record_with("downloaded", "i0e5:errori3e");
    assert_int_equal(decode_text(text), STATE_E_FIELD);
    free(text);
    /* Unknown keys are ignored (a newer torrentd may add some). */
    text = record_with("version", "i1e8:zzfuturei1e");
    assert_int_equal(decode_text(text), 0);
    free(text);

    assert_string_equal(state_strerror(STATE_E_FIELD),
                        "a field is missing or of the wrong type");
    for (int e = STATE_E_MIN + 1; e <= 0; e++)
        assert_string_not_equal(state_strerror(e), "unknown error");
    assert_string_equal(state_strerror(STATE_E_MIN), "unknown error");
}

static void
test_resume_truncated_and_flipped(void **state)
{
    (void)state;
    size_t len;
    char *data = encode_sample(&len);
    for (size_t n = 0; n < len; n++) {
        char *cut = malloc(n ? n : 1);
        memcpy(cut, data, n);
        struct state_resume r;
        struct state_errinfo ei;
        assert_true(state_resume_decode(&r, cut, n, &ei) < 0);
        free(cut);
    }
    /* Every single bit flipped: refused or decoded, never a crash, and
     * what decodes is within bounds. */
    for (size_t i = 0; i < len; i++) {
        for (int bit = 0; bit < 8; bit++) {
            char *f = malloc(len);
            memcpy(f, data, len);
            f[i] ^= (char)(1 << bit);
            struct state_resume r;
            if (state_resume_decode(&r, f, len, NULL) == 0) {
                assert_true(r.id >= 1);
                assert_true(r.download_dir[0] == '/');
                assert_true(r.n_priority <= STATE_MAX_FILES);
                state_resume_release(&r);
            }
            free(f);
        }
    }
    free(data);
}

static void
test_session_record(void **state)
{
    (void)state;
    struct state_session s = {.next_id = 12, .event_seq = 99999, .clean = true};
    struct buf b;
    buf_init(&b, 4096);
    assert_int_equal(state_session_encode(&s, &b), 0);
    struct state_session r;
    assert_int_equal(state_session_decode(&r, b.data, b.len, NULL), 0);
    assert_int_equal(r.next_id, 12);
    assert_int_equal(r.event_seq, 99999);
    assert_true(r.clean);
    for (size_t n = 0; n < b.len; n++)
        assert_true(state_session_decode(&r, b.data, n, NULL) < 0);
    const char *bad = "d5:cleani0e9:event_seqi1e7:next_idi0e7:versioni1ee";
    assert_int_equal(state_session_decode(&r, bad, strlen(bad), NULL),
                     STATE_E_RANGE);
    bad = "d5:cleani0e9:event_seqi1e7:next_idi1e7:versioni9ee";
    assert_int_equal(state_session_decode(&r, bad, strlen(bad), NULL),
                     STATE_E_VERSION);
    bad = "d9:event_seqi1e7:next_idi1e7:versioni1ee";
    assert_int_equal(state_session_decode(&r, bad, strlen(bad), NULL),
                     STATE_E_FIELD);
    bad = "l1:ae";
    assert_int_equal(state_session_decode(&r, bad, strlen(bad), NULL),
                     STATE_E_NOT_DICT);
    buf_release(&b);
}

static void
test_settings(void **state)
{
    (void)state;
    struct state_settings s = {0};
    assert_int_equal(state_settings_put(&s, "download_rate_limit", "1000"), 0);
    assert_int_equal(state_settings_put(&s, "dht", "off"), 0);
    assert_int_equal(state_settings_put(&s, "download_rate_limit", "5"), 0);
    assert_int_equal(s.n, 2);
    assert_string_equal(state_settings_get(&s, "download_rate_limit"), "5");
    assert_null(state_settings_get(&s, "nope"));
    assert_int_equal(state_settings_put(&s, "a\nb", "x"), -EINVAL);
    assert_int_equal(state_settings_put(&s, "k", "x\ny"), -EINVAL);
    assert_int_equal(state_settings_put(&s, "", "x"), -EINVAL);
    assert_int_equal(state_settings_put(&s, "a=b", "x"), -EINVAL);

    struct buf b;
    buf_init(&b, STATE_MAX_SETTINGS);
    assert_int_equal(state_settings_encode(&s, &b), 0);
    struct state_settings r = {0};
    assert_int_equal(state_settings_decode(&r, b.data, b.len, NULL), 0);
    assert_int_equal(r.n, 2);
    assert_string_equal(state_settings_get(&r, "dht"), "off");
    assert_true(state_settings_del(&r, "dht"));
    assert_false(state_settings_del(&r, "dht"));
    assert_int_equal(r.n, 1);
    state_settings_release(&r);
    buf_release(&b);
    state_settings_release(&s);

    const char *text = "# c\n\n  key =  value with spaces  \r\nempty =\n";
    assert_int_equal(state_settings_decode(&r, text, strlen(text), NULL), 0);
    assert_string_equal(state_settings_get(&r, "key"), "value with spaces");
    assert_string_equal(state_settings_get(&r, "empty"), "");
    state_settings_release(&r);
    struct state_errinfo ei;
    text = "ok = 1\nno equals here\n";
    assert_int_equal(state_settings_decode(&r, text, strlen(text), &ei),
                     STATE_E_SYNTAX);
    assert_int_equal(ei.offset, 7);
    text = " = v\n";
    assert_int_equal(state_settings_decode(&r, text, strlen(text), &ei),
                     STATE_E_SYNTAX);
    assert_int_equal(state_settings_decode(&r, "a = \0", 5, &ei),
                     STATE_E_SYNTAX);
}

static char tmpdir[64];

static int
count_entries(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        n += strncmp(de->d_name, prefix, strlen(prefix)) == 0;
    closedir(d);
    return n;
}

static void
test_files(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_state.XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
    char sub[128];
    snprintf(sub, sizeof(sub), "%s/st", tmpdir);
    assert_int_equal(state_mkdir(sub), 0);
    assert_int_equal(state_mkdir(sub), 0); /* exists: fine */

    assert_int_equal(state_write_file(sub, "f", "hello", 5), 0);
    assert_int_equal(state_write_file(sub, "f", "bye", 3), 0);
    char *data;
    size_t len;
    assert_int_equal(state_read_file(sub, "f", 100, &data, &len), 0);
    assert_int_equal(len, 3);
    assert_string_equal(data, "bye");
    free(data);
    assert_int_equal(count_entries(sub, "f.tmp"), 0);
    assert_int_equal(state_read_file(sub, "f", 2, &data, &len), -EFBIG);
    assert_int_equal(state_read_file(sub, "nope", 2, &data, &len), -ENOENT);
    assert_int_equal(state_read_file(tmpdir, "st", 2, &data, &len), -EINVAL);

    char newname[256];
    assert_int_equal(state_set_aside(sub, "f", newname, sizeof(newname)), 0);
    assert_non_null(strstr(newname, "f.corrupt-"));
    assert_int_equal(state_read_file(sub, newname, 100, &data, &len), 0);
    assert_string_equal(data, "bye");
    free(data);
    /* A second one in the same second gets a name of its own. */
    assert_int_equal(state_write_file(sub, "f", "again", 5), 0);
    char second[256];
    assert_int_equal(state_set_aside(sub, "f", second, sizeof(second)), 0);
    assert_string_not_equal(second, newname);
    assert_int_equal(count_entries(sub, "f.corrupt-"), 2);

    assert_int_equal(state_unlink(sub, newname), 0);
    assert_int_equal(state_unlink(sub, newname), 0); /* gone: fine */
    assert_int_equal(state_unlink(sub, second), 0);
    /* A missing directory. */
    snprintf(sub, sizeof(sub), "%s/missing", tmpdir);
    assert_int_equal(state_write_file(sub, "f", "x", 1), -ENOENT);
    snprintf(sub, sizeof(sub), "%s/st", tmpdir);
    assert_int_equal(rmdir(sub), 0);
    assert_int_equal(rmdir(tmpdir), 0);
}

/* Seed limits (idle_limit, seed_override, stop_reason): optional keys,
 * written only when not the default, so records of an older torrentd
 * read as "the session's idle limit, no override, no reason". */
static void
test_resume_seed_limits(void **state)
{
    (void)state;
    struct state_resume a, r;
    struct buf b;

    sample(&a);
    a.idle_limit = 50;
    a.stop_reason = 2;
    a.seed_override = true;
    buf_init(&b, STATE_MAX_RECORD);
    assert_int_equal(state_resume_encode(&a, &b), 0);
    assert_int_equal(state_resume_decode(&r, b.data, b.len, NULL), 0);
    assert_int_equal(r.idle_limit, 50);
    assert_int_equal(r.stop_reason, 2);
    assert_true(r.seed_override);
    state_resume_release(&r);
    buf_release(&b);

    sample(&a);
    a.idle_limit = -1;
    buf_init(&b, STATE_MAX_RECORD);
    assert_int_equal(state_resume_encode(&a, &b), 0);
    assert_null(memmem(b.data, b.len, "idle_limit", 10));
    assert_null(memmem(b.data, b.len, "seed_override", 13));
    assert_null(memmem(b.data, b.len, "stop_reason", 11));
    assert_int_equal(state_resume_decode(&r, b.data, b.len, NULL), 0);
    assert_int_equal(r.idle_limit, -1);
    assert_int_equal(r.stop_reason, 0);
    assert_false(r.seed_override);
    state_resume_release(&r);
    buf_release(&b);

    /* A record without the keys (an older torrentd's). */
    char *text = record_with("", NULL);
    assert_int_equal(state_resume_decode(&r, text, strlen(text), NULL), 0);
    assert_int_equal(r.idle_limit, -1);
    assert_int_equal(r.stop_reason, 0);
    assert_false(r.seed_override);
    state_resume_release(&r);
    free(text);

    static const struct {
        const char *key, *value;
        int err;
    } bad[] = {
        {"id", "i3e10:idle_limiti-2e", STATE_E_RANGE},
        {"id", "i3e10:idle_limit1:x", STATE_E_FIELD},
        {"id", "i3e10:idle_limiti0e", 0}, /* none for this torrent */
        {"ratio_limit", "i-1e13:seed_overridei2e", STATE_E_RANGE},
        {"ratio_limit", "i-1e13:seed_overridei1e", 0},
        {"ratio_limit", "i-1e11:stop_reasoni3e", STATE_E_RANGE},
        {"ratio_limit", "i-1e11:stop_reasoni-1e", STATE_E_RANGE},
        {"ratio_limit", "i-1e11:stop_reasoni1e", 0},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_field(bad[i].key, bad[i].value, bad[i].err);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resume_round_trip),
        cmocka_unit_test(test_resume_encode_refuses),
        cmocka_unit_test(test_resume_errors),
        cmocka_unit_test(test_resume_seed_limits),
        cmocka_unit_test(test_resume_truncated_and_flipped),
        cmocka_unit_test(test_session_record),
        cmocka_unit_test(test_settings),
        cmocka_unit_test(test_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
