/* Unit tests for daemon/torrent: naming a torrent (id, hash, prefix),
 * verified bytes per file, wanted sizes, resume records and the JSON
 * object's fields. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "common/bencode.h"
#include "common/buf.h"
#include "common/hex.h"
#include "common/magnet.h"
#include "common/metainfo.h"
#include "daemon/state.h"
#include "daemon/torrent.h"

/* A two-file torrent: a (20000 bytes) and b (30000), pieces of 16 KiB: 4
 * pieces, piece 1 spans both files. */
static struct meta_info *
make_meta(const char *name)
{
    struct buf b;
    buf_init(&b, 1 << 16);
    uint8_t pieces[80];
    memset(pieces, 0x11, sizeof(pieces));
    assert_int_equal(benc_put_dict(&b), 0);
    benc_put_cstr(&b, "info");
    benc_put_dict(&b);
    benc_put_cstr(&b, "files");
    benc_put_list(&b);
    benc_put_dict(&b);
    benc_put_cstr(&b, "length");
    benc_put_int(&b, 20000);
    benc_put_cstr(&b, "path");
    benc_put_list(&b);
    benc_put_cstr(&b, "a");
    benc_put_end(&b);
    benc_put_end(&b);
    benc_put_dict(&b);
    benc_put_cstr(&b, "length");
    benc_put_int(&b, 30000);
    benc_put_cstr(&b, "path");
    benc_put_list(&b);
    benc_put_cstr(&b, "b");
    benc_put_end(&b);
    benc_put_end(&b);
    benc_put_end(&b);
    benc_put_cstr(&b, "name");
    benc_put_cstr(&b, name);
    benc_put_cstr(&b, "piece length");
    benc_put_int(&b, 16384);
    benc_put_cstr(&b, "pieces");
    benc_put_str(&b, pieces, sizeof(pieces));
    benc_put_end(&b);
    assert_int_equal(benc_put_end(&b), 0);
    struct meta_info *m = NULL;
    struct meta_errinfo ei;
    assert_int_equal(meta_parse(&m, b.data, b.len, NULL, &ei), 0);
    buf_release(&b);
    return m;
}

static struct torrent *
make_magnet_torrent(const char *hex, uint32_t id)
{
    char uri[128];
    snprintf(uri, sizeof(uri), "magnet:?xt=urn:btih:%s&dn=mag", hex);
    struct magnet m;
    assert_int_equal(magnet_parse(&m, uri, strlen(uri), NULL, NULL), 0);
    struct torrent *t;
    assert_int_equal(torrent_new_magnet(&t, &m, id, "/dl", 100), 0);
    return t;
}

static void
test_find(void **state)
{
    (void)state;
    struct torrent *v[4];
    v[0] = make_magnet_torrent("abcdef0123456789abcdef0123456789abcdef01", 1);
    v[1] = make_magnet_torrent("abcdef9999999999999999999999999999999999", 2);
    v[2] = make_magnet_torrent("1234567890123456789012345678901234567890", 3);
    v[3] = make_magnet_torrent("0000000000000000000000000000000000000012", 12);
    struct torrent *t = NULL;
    struct json_object *spec;

#define FIND(js, want_r, want_t)                                               \
    do {                                                                       \
        spec = (js);                                                           \
        t = NULL;                                                              \
        assert_int_equal(torrent_find(v, 4, spec, &t), (want_r));              \
        if ((want_r) == 0)                                                     \
            assert_ptr_equal(t, (want_t));                                     \
        json_object_put(spec);                                                 \
    } while (0)

    FIND(json_object_new_int(2), 0, v[1]);
    FIND(json_object_new_int(12), 0, v[3]);
    FIND(json_object_new_int(5), -ENOENT, NULL);
    FIND(json_object_new_int(-1), -ENOENT, NULL);
    FIND(json_object_new_string("3"), 0, v[2]);
    FIND(json_object_new_string("12"), 0, v[3]);
    FIND(json_object_new_string("99"), -ENOENT, NULL);
    FIND(json_object_new_string("ABCDEF0123456789ABCDEF0123456789ABCDEF01"), 0,
         v[0]);
    FIND(json_object_new_string("abcdef0"), 0, v[0]);
    FIND(json_object_new_string("abcdef"), -ENOTUNIQ, NULL);
    FIND(json_object_new_string("abcde"), -EINVAL, NULL);
    FIND(json_object_new_string("123456"), 0, v[2]); /* digits: a prefix */
    FIND(json_object_new_string("ffffff"), -ENOENT, NULL);
    FIND(json_object_new_string("xyzxyzxyz"), -EINVAL, NULL);
    FIND(json_object_new_string(""), -EINVAL, NULL);
    FIND(json_object_new_string("abcdef0123456789abcdef0123456789abcdef0100"),
         -EINVAL, NULL);
    FIND(json_object_new_double(1.0), -EINVAL, NULL);
    FIND(json_object_new_boolean(true), -EINVAL, NULL);
    assert_int_equal(torrent_find(v, 4, NULL, &t), -EINVAL);
    /* A removed torrent is nobody's. */
    v[1]->removed = true;
    FIND(json_object_new_string("abcdef"), 0, v[0]);
    FIND(json_object_new_int(2), -ENOENT, NULL);
#undef FIND
    for (int i = 0; i < 4; i++)
        torrent_free(v[i]);
}

static void
test_file_have_and_sizes(void **state)
{
    (void)state;
    struct meta_info *m = make_meta("pair");
    assert_int_equal(m->n_pieces, 4);
    uint64_t fh[2];
    uint8_t have = 0x80; /* piece 0: 0..16384, all in a */
    torrent_file_have(m, &have, 4, fh);
    assert_int_equal(fh[0], 16384);
    assert_int_equal(fh[1], 0);
    have = 0x40; /* piece 1: 16384..32768: 3616 of a, 12768 of b */
    torrent_file_have(m, &have, 4, fh);
    assert_int_equal(fh[0], 20000 - 16384);
    assert_int_equal(fh[1], 32768 - 20000);
    have = 0xf0;
    torrent_file_have(m, &have, 4, fh);
    assert_int_equal(fh[0], 20000);
    assert_int_equal(fh[1], 30000);
    torrent_file_have(m, &have, 3, fh); /* wrong count: nothing */
    assert_int_equal(fh[0] + fh[1], 0);

    struct torrent *t;
    assert_int_equal(torrent_new_meta(&t, m, 1, "/dl", 5), 0);
    assert_int_equal(t->size_wanted, 50000);
    assert_false(torrent_complete(t));
    uint8_t *h = malloc(1);
    uint64_t *f = malloc(2 * sizeof(*f));
    *h = 0xf0;
    torrent_file_have(t->meta, h, 4, f);
    torrent_set_have(t, h, 4, f);
    assert_true(torrent_complete(t));
    assert_int_equal(t->have_wanted, 50000);
    /* Skip b: only a counts. */
    t->priority = malloc(2);
    t->priority[0] = STATE_PRIO_NORMAL;
    t->priority[1] = STATE_PRIO_SKIP;
    torrent_recount(t);
    assert_int_equal(t->size_wanted, 20000);
    assert_true(torrent_complete(t));
    assert_false(torrent_file_wanted(t, 1));
    torrent_set_have(t, NULL, 0, NULL);
    assert_int_equal(t->have_wanted, 0);
    assert_false(torrent_complete(t));
    torrent_free(t);
}

/* The totals (what trackers are told is "left") count every non-pad
 * file, wanted or not, and follow every change of the bitfield. */
static void
test_totals(void **state)
{
    (void)state;
    struct torrent *t;
    assert_int_equal(torrent_new_meta(&t, make_meta("t"), 1, "/dl", 5), 0);
    assert_int_equal(t->size_total, 50000);
    assert_int_equal(t->have_total, 0);
    assert_int_equal(torrent_bytes_missing(t), 50000);

    /* Piece 1 spans a and b; skip b: wanted and total part ways. */
    t->priority = malloc(2);
    t->priority[0] = STATE_PRIO_NORMAL;
    t->priority[1] = STATE_PRIO_SKIP;
    uint8_t *h = malloc(1);
    uint64_t *f = malloc(2 * sizeof(*f));
    *h = 0x40;
    torrent_file_have(t->meta, h, 4, f);
    torrent_set_have(t, h, 4, f);
    assert_int_equal(t->size_wanted, 20000);
    assert_int_equal(t->have_wanted, 20000 - 16384);
    assert_int_equal(t->size_total, 50000);
    assert_int_equal(t->have_total, 16384);
    assert_int_equal(torrent_bytes_missing(t), 50000 - 16384);

    /* Every wanted byte: complete, yet no seed (b is missing). */
    t->have[0] = 0xc0;
    torrent_file_have(t->meta, t->have, 4, t->file_have);
    torrent_recount(t);
    assert_true(torrent_complete(t));
    assert_int_equal(torrent_bytes_missing(t), 50000 - 32768);

    /* The whole torrent. */
    t->have[0] = 0xf0;
    torrent_file_have(t->meta, t->have, 4, t->file_have);
    torrent_recount(t);
    assert_int_equal(t->have_total, 50000);
    assert_int_equal(torrent_bytes_missing(t), 0);

    /* A piece lost again (a failed flush) and the resume path. */
    t->have[0] = 0x70;
    torrent_file_have(t->meta, t->have, 4, t->file_have);
    torrent_recount(t);
    assert_int_equal(torrent_bytes_missing(t), 16384);
    torrent_set_have(t, NULL, 0, NULL);
    assert_int_equal(t->have_total, 0);
    assert_int_equal(torrent_bytes_missing(t), 50000);

    uint8_t have = 0xf0;
    char dir[] = "/dl";
    struct state_resume r = {.download_dir = dir, .have = &have, .pieces = 4};
    assert_int_equal(torrent_apply_resume(t, &r), 0);
    assert_int_equal(torrent_bytes_missing(t), 0);
    torrent_free(t);

    /* A magnet has no size yet. */
    struct torrent *m =
        make_magnet_torrent("abcdef0123456789abcdef0123456789abcdef01", 2);
    assert_int_equal(m->size_total, 0);
    assert_int_equal(torrent_bytes_missing(m), 0);
    torrent_free(m);
}

static void
test_resume(void **state)
{
    (void)state;
    struct torrent *t;
    assert_int_equal(torrent_new_meta(&t, make_meta("r"), 4, "/a", 9), 0);
    uint8_t have = 0xc0, prio[2] = {STATE_PRIO_HIGH, STATE_PRIO_LOW};
    char dir[] = "/b";
    struct state_resume r = {
        .id = 8,
        .paused = true,
        .download_dir = dir,
        .added_at = 11,
        .completed_at = 0,
        .downloaded = 5,
        .uploaded = 6,
        .ratio_limit = 2000,
        .have = &have,
        .pieces = 4,
        .priority = prio,
        .n_priority = 2,
    };
    assert_int_equal(torrent_apply_resume(t, &r), 0);
    assert_int_equal(t->id, 8);
    assert_true(t->paused);
    assert_string_equal(t->download_dir, "/b");
    assert_int_equal(t->have_wanted, 32768);
    assert_int_equal(t->priority[0], STATE_PRIO_HIGH);

    struct state_resume back;
    torrent_to_resume(t, &back);
    assert_int_equal(back.id, 8);
    assert_int_equal(back.pieces, 4);
    assert_int_equal(back.have[0], 0xc0);
    assert_int_equal(back.n_priority, 2);
    assert_null(back.error);

    /* A bitfield of the wrong size is dropped, not trusted. */
    struct torrent *u;
    assert_int_equal(torrent_new_meta(&u, make_meta("r"), 4, "/a", 9), 0);
    r.pieces = 3;
    r.n_priority = 1;
    assert_int_equal(torrent_apply_resume(u, &r), 0);
    assert_null(u->have);
    assert_null(u->priority);
    assert_int_equal(u->have_wanted, 0);
    torrent_free(u);
    torrent_free(t);
}

static void
test_json(void **state)
{
    (void)state;
    static const char *const fields[] = {
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
        NULL,
    };
    struct torrent *t;
    assert_int_equal(torrent_new_meta(&t, make_meta("json"), 3, "/d", 77), 0);
    t->state = TORRENT_DOWNLOADING;
    struct json_object *o = torrent_to_json(t), *v;
    assert_non_null(o);
    for (size_t i = 0; fields[i]; i++)
        assert_true(json_object_object_get_ex(o, fields[i], NULL));
    json_object_object_get_ex(o, "id", &v);
    assert_int_equal(json_object_get_int(v), 3);
    json_object_object_get_ex(o, "info_hash", &v);
    assert_int_equal(json_object_get_string_len(v), 40);
    assert_string_equal(json_object_get_string(v), t->hex);
    json_object_object_get_ex(o, "name", &v);
    assert_string_equal(json_object_get_string(v), "json");
    json_object_object_get_ex(o, "state", &v);
    assert_string_equal(json_object_get_string(v), "downloading");
    json_object_object_get_ex(o, "size_bytes", &v);
    assert_int_equal(json_object_get_int64(v), 50000);
    json_object_object_get_ex(o, "eta_s", &v);
    assert_null(v);
    json_object_object_get_ex(o, "error", &v);
    assert_null(v);
    json_object_object_get_ex(o, "completed_at", &v);
    assert_null(v);
    json_object_object_get_ex(o, "added_at", &v);
    assert_int_equal(json_object_get_int64(v), 77);
    json_object_object_get_ex(o, "progress", &v);
    assert_true(json_object_get_double(v) == 0.0);
    json_object_put(o);

    /* An error shows only in the error state. */
    t->error = strdup("disk on fire");
    o = torrent_to_json(t);
    json_object_object_get_ex(o, "error", &v);
    assert_null(v);
    json_object_put(o);
    t->state = TORRENT_ERROR;
    t->uploaded = 100000;
    t->completed_at = 99;
    o = torrent_to_json(t);
    json_object_object_get_ex(o, "error", &v);
    assert_string_equal(json_object_get_string(v), "disk on fire");
    json_object_object_get_ex(o, "completed_at", &v);
    assert_int_equal(json_object_get_int64(v), 99);
    json_object_object_get_ex(o, "ratio", &v);
    assert_true(json_object_get_double(v) == 0.0); /* nothing down yet */
    json_object_put(o);
    torrent_free(t);

    /* A magnet: name from dn, no sizes. */
    t = make_magnet_torrent("abcdef0123456789abcdef0123456789abcdef01", 9);
    o = torrent_to_json(t);
    json_object_object_get_ex(o, "name", &v);
    assert_string_equal(json_object_get_string(v), "mag");
    json_object_object_get_ex(o, "has_metadata", &v);
    assert_false(json_object_get_boolean(v));
    json_object_put(o);
    assert_string_equal(torrent_state_name(TORRENT_METADATA), "metadata");
    assert_string_equal(torrent_state_name(TORRENT_STATE_MAX), "unknown");
    torrent_free(t);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_find),
        cmocka_unit_test(test_file_have_and_sizes),
        cmocka_unit_test(test_totals),
        cmocka_unit_test(test_resume),
        cmocka_unit_test(test_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
