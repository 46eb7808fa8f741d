/* Unit tests for common/metainfo: valid single-file, multi-file (pad files,
 * attributes, symlinks, .utf-8 keys), hybrid v1+v2 torrents, a known
 * info-hash, one table row (at least) per error value, the limits, and
 * no crash on every truncation and every bit flip of valid torrents. */
#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "common/bencode.h"
#include "common/buf.h"
#include "common/hex.h"
#include "common/metainfo.h"
#include "common/path.h"

#define S(lit) lit, sizeof(lit) - 1
#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Building blocks for hand-written torrents (keys in sorted order). */
#define H20 "PPPPPPPPPPPPPPPPPPPP"
#define H40 H20 H20
#define R32 "RRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRR"
#define PL "12:piece lengthi16384e"
#define PS1 "6:pieces20:" H20
#define TOR(info) "d4:info" info "e"
#define SINGLE_INFO "d6:lengthi16384e4:name1:a" PL PS1 "e"
#define SINGLE TOR(SINGLE_INFO)
#define MULTI(files) TOR("d5:filesl" files "e4:name1:d" PL PS1 "e")
#define F(len, path) "d6:lengthi" len "e4:pathl" path "ee"
#define F2 F("16000", "1:x") F("384", "1:y")

/* A single-file torrent; its info-hash was computed once with python3:
 * hashlib.sha1(<the info dictionary below>).hexdigest() */
static const char single_torrent[] =
    "d8:announce20:http://t.example/ann7:comment5:hello10:created by"
    "6:mktest13:creation datei1700000000e"
    "4:infod6:lengthi20000e4:name5:a.bin12:piece lengthi16384e6:pieces40:"
    H40 "ee";
static const char single_info[] =
    "d6:lengthi20000e4:name5:a.bin12:piece lengthi16384e6:pieces40:" H40
    "e";
#define SINGLE_SHA1 "ebaa2aaa7ccc054a193181178b191bbe6b0fce93"

/* Multi-file: an executable, a pad file, a file, a nameless pad file (32
 * KiB so far), a symlink, an empty file named by path.utf-8, a BitComet
 * pad file.  name.utf-8 wins over name. */
static const char multi_torrent[] =
    "d4:infod5:filesl"
    "d4:attr1:x6:lengthi10000e4:pathl3:bin3:runee"
    "d4:attr1:p6:lengthi6384e4:pathl4:.pad4:6384ee"
    "d6:lengthi16000e4:pathl4:dataee"
    "d4:attr1:p6:lengthi384e4:pathlee"
    "d4:attr1:l4:pathl4:linke12:symlink pathl3:bin3:runee"
    "d4:attr2:hz6:lengthi0e4:pathl4:old\xff" "e10:path.utf-8l3:newee"
    "d6:lengthi0e4:pathl20:_____padding_file_0_ee"
    "e4:name1:d10:name.utf-85:dir\xc3\xa9" PL "6:pieces40:" H40
    "7:privatei1ee"
    "8:url-list18:http://seed.ex/ds/e";

/* A hybrid v1+v2 torrent (BEP 52); hashes from python3 hashlib. */
static const char hybrid_torrent[] =
    "d4:infod9:file treed1:xd0:d6:lengthi10000e11:pieces root32:" R32
    "ee1:yd0:d6:lengthi6384e11:pieces root32:"
    "SSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSeee"
    "5:filesld6:lengthi10000e4:pathl1:xeed4:attr1:p6:lengthi6384e"
    "4:pathl4:.pad4:6384eed6:lengthi6384e4:pathl1:yeee"
    "12:meta versioni2e4:name1:d12:piece lengthi16384e6:pieces40:"
    "HHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHe12:piece layersdee";
#define HYBRID_SHA1 "3804f7e12bc5b1d606c304a17f83dc46dbd4ee23"
#define HYBRID_SHA256 \
    "e99225228d4a5706a05caa1eb31be92e2b753b714d22e274a8b876bc753e56ea"

static const struct {
    const char *data;
    size_t len;
} fixtures[] = {
    {S(single_torrent)},
    {S(multi_torrent)},
    {S(hybrid_torrent)},
    {S(MULTI(F2))},
};

static void
assert_hash(const uint8_t *h, size_t n, const char *hex)
{
    char out[2 * META_HASH2_LEN + 1];
    hex_encode(out, h, n);
    assert_string_equal(out, hex);
}

/* What every successful parse must give, whatever the input. */
static void
check_invariants(const struct meta_info *info, const struct meta_limits *lim)
{
    uint64_t off = 0;
    uint8_t h[META_HASH_LEN];

    assert_non_null(info->name);
    assert_int_equal(path_check_relative(info->name), 0);
    assert_true(info->n_files >= 1);
    for (size_t i = 0; i < info->n_files; i++) {
        const struct meta_file *f = &info->files[i];
        assert_int_equal(path_check_relative(f->path), 0);
        assert_true(strlen(f->path) <= lim->max_path_len);
        if (info->multi_file) {
            size_t nl = strlen(info->name);
            assert_memory_equal(f->path, info->name, nl);
            assert_int_equal(f->path[nl], '/');
        } else {
            assert_string_equal(f->path, info->name);
        }
        if (f->symlink)
            assert_int_equal(path_check_relative(f->symlink), 0);
        assert_true(f->offset == off);
        off += f->length;
    }
    assert_true(off == info->total_size);
    assert_true(info->total_size > 0);
    assert_true(info->total_size <= lim->max_total_size);
    assert_int_equal(info->n_pieces,
                     meta_piece_count(info->total_size, info->piece_length));
    assert_true(info->pieces >= info->info_raw);
    assert_true(info->pieces + (size_t)info->n_pieces * META_HASH_LEN <=
                info->info_raw + info->info_len);
    assert_int_equal(EVP_Digest(info->info_raw, info->info_len, h, NULL,
                                EVP_sha1(), NULL), 1);
    assert_memory_equal(h, info->info_hash, sizeof(h));
    for (size_t t = 0; t < info->n_tiers; t++) {
        assert_true(info->tiers[t].n_urls >= 1);
        for (size_t u = 0; u < info->tiers[t].n_urls; u++)
            assert_true(strlen(info->tiers[t].urls[u]) > 0);
    }
}

static struct meta_info *
parse_ok(const char *data, size_t len)
{
    struct meta_info *info = NULL;
    struct meta_errinfo err;
    int r = meta_parse(&info, data, len, NULL, &err);
    if (r != 0)
        fail_msg("meta_parse: %s: %s", meta_strerror(r), err.detail);
    check_invariants(info, &meta_limits_default);
    return info;
}

static void
test_single(void **state)
{
    (void)state;
    struct meta_info *info = parse_ok(S(single_torrent));

    assert_hash(info->info_hash, META_HASH_LEN, SINGLE_SHA1);
    assert_int_equal(info->info_len, sizeof(single_info) - 1);
    assert_memory_equal(info->info_raw, single_info, info->info_len);
    assert_int_equal(info->version, META_V1);
    assert_string_equal(info->name, "a.bin");
    assert_false(info->multi_file);
    assert_false(info->private_torrent);
    assert_false(info->sanitised);
    assert_int_equal(info->n_files, 1);
    assert_string_equal(info->files[0].path, "a.bin");
    assert_int_equal(info->files[0].length, 20000);
    assert_int_equal(info->files[0].offset, 0);
    assert_int_equal(info->files[0].attr, 0);
    assert_null(info->files[0].symlink);
    assert_int_equal(info->total_size, 20000);
    assert_int_equal(info->piece_length, 16384);
    assert_int_equal(info->n_pieces, 2);
    assert_memory_equal(info->pieces, H40, 40);
    assert_int_equal(meta_piece_size(info, 0), 16384);
    assert_int_equal(meta_piece_size(info, 1), 20000 - 16384);
    assert_int_equal(meta_piece_size(info, 2), 0);
    assert_int_equal(info->n_tiers, 1);
    assert_int_equal(info->tiers[0].n_urls, 1);
    assert_string_equal(info->tiers[0].urls[0], "http://t.example/ann");
    assert_int_equal(info->n_web_seeds, 0);
    assert_string_equal(info->comment, "hello");
    assert_string_equal(info->created_by, "mktest");
    assert_int_equal(info->creation_date, 1700000000);
    meta_free(info);
}

static void
test_multi(void **state)
{
    (void)state;
    struct meta_info *info = parse_ok(S(multi_torrent));

    assert_string_equal(info->name, "dir\xc3\xa9");
    assert_true(info->multi_file);
    assert_true(info->private_torrent);
    assert_false(info->sanitised); /* path.utf-8 hid the bad byte */
    assert_int_equal(info->n_files, 7);
    static const struct {
        const char *path;
        uint64_t length, offset;
        unsigned attr;
    } want[] = {
        {"dir\xc3\xa9/bin/run", 10000, 0, META_ATTR_EXEC},
        {"dir\xc3\xa9/.pad/6384", 6384, 10000, META_ATTR_PAD},
        {"dir\xc3\xa9/data", 16000, 16384, 0},
        {"dir\xc3\xa9/.pad/384", 384, 32384, META_ATTR_PAD},
        {"dir\xc3\xa9/link", 0, 32768, META_ATTR_SYMLINK},
        {"dir\xc3\xa9/new", 0, 32768, META_ATTR_HIDDEN},
        {"dir\xc3\xa9/_____padding_file_0_", 0, 32768, META_ATTR_PAD},
    };
    for (size_t i = 0; i < ARRAY_LEN(want); i++) {
        assert_string_equal(info->files[i].path, want[i].path);
        assert_int_equal(info->files[i].length, want[i].length);
        assert_int_equal(info->files[i].offset, want[i].offset);
        assert_int_equal(info->files[i].attr, want[i].attr);
    }
    assert_string_equal(info->files[4].symlink, "dir\xc3\xa9/bin/run");
    assert_int_equal(info->total_size, 32768);
    assert_int_equal(info->n_pieces, 2);
    assert_int_equal(info->n_tiers, 0);
    assert_int_equal(info->n_web_seeds, 1);
    assert_string_equal(info->web_seeds[0], "http://seed.ex/ds/");
    assert_null(info->comment);
    assert_int_equal(info->creation_date, 0);
    meta_free(info);
}

static void
test_hybrid(void **state)
{
    (void)state;
    struct meta_info *info = parse_ok(S(hybrid_torrent));

    assert_int_equal(info->version, META_HYBRID);
    assert_hash(info->info_hash, META_HASH_LEN, HYBRID_SHA1);
    assert_hash(info->info_hash_v2, META_HASH2_LEN, HYBRID_SHA256);
    assert_int_equal(info->n_files, 3);
    assert_string_equal(info->files[2].path, "d/y");
    assert_int_equal(info->files[1].attr, META_ATTR_PAD);
    meta_free(info);

    /* A single-file hybrid: the tree's only key is the name. */
    static const char one[] =
        "d4:infod9:file treed1:ad0:d6:lengthi16384e11:pieces root32:" R32
        "eee6:lengthi16384e12:meta versioni2e4:name1:a" PL PS1 "ee";
    info = parse_ok(S(one));
    assert_int_equal(info->version, META_HYBRID);
    meta_free(info);
}

/* Top-level and info keys out of order are accepted (the hash is over the
 * raw bytes); duplicates outside "info" keep the first value. */
static void
test_unsorted_keys(void **state)
{
    (void)state;
    static const char t[] =
        "d4:infod4:name1:a6:lengthi16384e6:pieces20:" H20 PL
        "e8:announce5:http:8:announce4:ftp:e";
    static const char raw[] =
        "d4:name1:a6:lengthi16384e6:pieces20:" H20 PL "e";
    struct meta_info *info = parse_ok(S(t));
    assert_string_equal(info->tiers[0].urls[0], "http:");
    assert_int_equal(info->info_len, sizeof(raw) - 1);
    assert_memory_equal(info->info_raw, raw, sizeof(raw) - 1);
    meta_free(info);
}

static void
test_sanitised(void **state)
{
    (void)state;
    static const char t[] =
        TOR("d5:filesl" F("16000", "3:x\x1by") F("384", "6:\xe2\x80\xaetxt")
            "e4:name3:a\tb" PL PS1 "e");
    struct meta_info *info = parse_ok(S(t));
    assert_true(info->sanitised);
    assert_string_equal(info->name, "a_b");
    assert_string_equal(info->files[0].path, "a_b/x_y");
    assert_string_equal(info->files[1].path, "a_b/_txt");
    meta_free(info);

    /* An invalid name.utf-8 is ignored in favour of name. */
    static const char u[] =
        "d4:infod6:lengthi16384e4:name1:a10:name.utf-81:\xff" PL PS1 "ee";
    info = parse_ok(S(u));
    assert_string_equal(info->name, "a");
    assert_false(info->sanitised);
    meta_free(info);
}

static void
test_trackers(void **state)
{
    (void)state;
    static const char t[] =
        "d8:announce9:http://a/13:announce-listll9:http://b/0:e"
        "lel3: \x01x11: http://c/ 9:http://d/ee"
        "7:comment4:a\x1b" "b\n" "4:info" SINGLE_INFO
        "8:url-listl0:9:http://e/ee";
    struct meta_info *info = parse_ok(S(t));
    assert_int_equal(info->n_tiers, 2);
    assert_int_equal(info->tiers[0].n_urls, 1);
    assert_string_equal(info->tiers[0].urls[0], "http://b/");
    assert_int_equal(info->tiers[1].n_urls, 2);
    assert_string_equal(info->tiers[1].urls[0], "http://c/");
    assert_string_equal(info->tiers[1].urls[1], "http://d/");
    assert_int_equal(info->n_web_seeds, 1);
    assert_string_equal(info->web_seeds[0], "http://e/");
    assert_string_equal(info->comment, "a\xef\xbf\xbd" "b\n");
    meta_free(info);

    /* An announce-list with no usable URL falls back to announce. */
    static const char u[] =
        "d8:announce9:http://a/13:announce-listll0:ee4:info" SINGLE_INFO
        "e";
    info = parse_ok(S(u));
    assert_int_equal(info->n_tiers, 1);
    assert_string_equal(info->tiers[0].urls[0], "http://a/");
    meta_free(info);
}

static void
test_private(void **state)
{
    (void)state;
    static const struct {
        const char *data;
        size_t len;
        bool private_torrent;
    } cases[] = {
        {S(TOR("d6:lengthi16384e4:name1:a" PL PS1 "7:privatei1ee")), true},
        {S(TOR("d6:lengthi16384e4:name1:a" PL PS1 "7:privatei0ee")), false},
        {S(TOR("d6:lengthi16384e4:name1:a" PL PS1 "7:privatei2ee")), false},
        {S(TOR("d6:lengthi16384e4:name1:a" PL PS1 "7:private1:1e")), false},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        struct meta_info *info = parse_ok(cases[i].data, cases[i].len);
        assert_int_equal(info->private_torrent, cases[i].private_torrent);
        meta_free(info);
    }
}

/* BEP 9: the bare info dictionary gives the same torrent and hash. */
static void
test_parse_info(void **state)
{
    (void)state;
    struct meta_info *info = NULL;
    struct meta_errinfo err;

    assert_int_equal(meta_parse_info(&info, S(single_info), NULL, &err), 0);
    assert_hash(info->info_hash, META_HASH_LEN, SINGLE_SHA1);
    assert_int_equal(info->n_tiers, 0);
    assert_null(info->comment);
    assert_int_equal(info->n_pieces, 2);
    check_invariants(info, &meta_limits_default);
    meta_free(info);

    /* Trailing bytes: ignored after a .torrent, refused after metadata. */
    info = NULL;
    assert_int_equal(meta_parse_info(&info, S(SINGLE_INFO "x"), NULL, &err),
                     META_E_BENCODE);
    assert_null(info);
    assert_non_null(strstr(err.detail, "data after the end"));
    info = parse_ok(S(SINGLE "\n"));
    meta_free(info);

    assert_int_equal(meta_parse_info(&info, S("li1ee"), NULL, &err),
                     META_E_NOT_DICT);
    assert_int_equal(meta_parse_info(&info, S("d4:infod" "ee"), NULL, &err),
                     META_E_NAME);
}

/* --- one row (at least) per error value --- */

static const struct {
    const char *name;
    const char *data;
    size_t len;
    int err;
    const char *detail; /* a substring of errinfo.detail */
    long file;
} errors[] = {
    {"empty", S(""), META_E_BENCODE, "empty input", -1},
    {"truncated", S("d4:infod"), META_E_BENCODE, "ends inside a value", -1},
    {"neg zero", S("i-0e"), META_E_BENCODE, "\"-0\"", -1},
    {"huge string", S("d4:infod4:name99999999999:ee"), META_E_BENCODE,
     "string runs past the end", -1},
    {"key not string", S("di1ei2ee"), META_E_BENCODE, "key is not a string",
     -1},
    {"list", S("li1ee"), META_E_NOT_DICT, "top level is a list", -1},
    {"string", S("4:spam"), META_E_NOT_DICT, "top level is a string", -1},
    {"no info", S("d8:announce3:urle"), META_E_NO_INFO, "no 'info' key", -1},
    {"info int", S("d4:infoi1ee"), META_E_NO_INFO,
     "'info' is an integer, not a dictionary", -1},
    {"info list", S("d4:infol1:aee"), META_E_NO_INFO, "'info' is a list",
     -1},
    {"no name", S(TOR("d6:lengthi16384e" PL PS1 "e")), META_E_NAME,
     "no 'name'", -1},
    {"name int", S(TOR("d6:lengthi16384e4:namei5e" PL PS1 "e")), META_E_NAME,
     "'name' is an integer", -1},
    {"name empty", S(TOR("d6:lengthi16384e4:name0:" PL PS1 "e")),
     META_E_NAME, "name is empty", -1},
    {"name dotdot", S(TOR("d6:lengthi16384e4:name2:.." PL PS1 "e")),
     META_E_NAME, "name '..' is not allowed", -1},
    {"name dot", S(TOR("d6:lengthi16384e4:name1:." PL PS1 "e")),
     META_E_NAME, "name '.' is not allowed", -1},
    {"name slash", S(TOR("d6:lengthi16384e4:name3:a/b" PL PS1 "e")),
     META_E_NAME, "contains a path separator", -1},
    {"name abs", S(TOR("d6:lengthi16384e4:name4:/etc" PL PS1 "e")),
     META_E_NAME, "name '/etc' makes an absolute path", -1},
    {"name nul", S(TOR("d6:lengthi16384e4:name3:a\0b" PL PS1 "e")),
     META_E_NAME, "name 'a\\x00b' contains a NUL byte", -1},
    {"no piece length", S(TOR("d6:lengthi16384e4:name1:a" PS1 "e")),
     META_E_PIECE_LENGTH, "no 'piece length'", -1},
    {"piece length 0",
     S(TOR("d6:lengthi16384e4:name1:a12:piece lengthi0e" PS1 "e")),
     META_E_PIECE_LENGTH, "piece length 0 is not a power of two", -1},
    {"piece length 3",
     S(TOR("d6:lengthi16384e4:name1:a12:piece lengthi3e" PS1 "e")),
     META_E_PIECE_LENGTH, "piece length 3 is not a power of two", -1},
    {"piece length odd",
     S(TOR("d6:lengthi16384e4:name1:a12:piece lengthi16385e" PS1 "e")),
     META_E_PIECE_LENGTH, "not a power of two", -1},
    {"piece length neg",
     S(TOR("d6:lengthi16384e4:name1:a12:piece lengthi-16384e" PS1 "e")),
     META_E_PIECE_LENGTH, "not a power of two", -1},
    {"piece length huge",
     S(TOR("d6:lengthi16384e4:name1:a12:piece lengthi1073741824e" PS1
           "e")),
     META_E_PIECE_LENGTH, "is outside 16384..268435456", -1},
    {"piece length tiny",
     S(TOR("d6:lengthi16384e4:name1:a12:piece lengthi8192e" PS1 "e")),
     META_E_PIECE_LENGTH, "piece length 8192 is outside", -1},
    {"piece length str",
     S(TOR("d6:lengthi16384e4:name1:a12:piece length2:16" PS1 "e")),
     META_E_PIECE_LENGTH, "'piece length' is a string", -1},
    {"no pieces", S(TOR("d6:lengthi16384e4:name1:a" PL "e")), META_E_PIECES,
     "no 'pieces'", -1},
    {"pieces 19",
     S(TOR("d6:lengthi16384e4:name1:a" PL "6:pieces19:PPPPPPPPPPPPPPPPPPPe")),
     META_E_PIECES, "'pieces' is 19 bytes, not a multiple of 20", -1},
    {"pieces int", S(TOR("d6:lengthi16384e4:name1:a" PL "6:piecesi1ee")),
     META_E_PIECES, "'pieces' is an integer", -1},
    {"too many hashes",
     S(TOR("d6:lengthi16384e4:name1:a" PL "6:pieces40:" H40 "e")),
     META_E_PIECES_COUNT,
     "2 piece hashes for 16384 bytes in pieces of 16384: 1 expected", -1},
    {"too few hashes", S(TOR("d6:lengthi16385e4:name1:a" PL PS1 "e")),
     META_E_PIECES_COUNT, "2 expected", -1},
    {"no hashes", S(TOR("d6:lengthi1e4:name1:a" PL "6:pieces0:e")),
     META_E_PIECES_COUNT, "0 piece hashes", -1},
    {"negative length", S(TOR("d6:lengthi-1e4:name1:a" PL PS1 "e")),
     META_E_LENGTH, "length -1 is negative", -1},
    {"length str", S(TOR("d6:length1:14:name1:a" PL PS1 "e")), META_E_LENGTH,
     "'length' is a string", -1},
    {"file no length",
     S(MULTI(F("16384", "1:x") "d4:pathl1:yee")), META_E_LENGTH,
     "file 1: no 'length'", 1},
    {"file negative length",
     S(MULTI(F("16384", "1:x") F("-5", "1:y"))), META_E_LENGTH,
     "file 1: length -5 is negative", 1},
    {"neither", S(TOR("d4:name1:a" PL PS1 "e")), META_E_FILES,
     "neither 'length' nor 'files'", -1},
    {"files dict", S(TOR("d5:filesde4:name1:a" PL PS1 "e")), META_E_FILES,
     "'files' is a dictionary, not a list", -1},
    {"files empty", S(MULTI("")), META_E_FILES, "'files' is empty", -1},
    {"file int", S(MULTI("i1e")), META_E_FILES,
     "file 0 is an integer, not a dictionary", 0},
    {"both", S(TOR("d5:filesl" F("16384", "1:x") "e6:lengthi16384e4:name1:a"
                   PL PS1 "e")),
     META_E_BOTH_LENGTH_FILES, "both 'length'", -1},
    {"sum overflow",
     S(MULTI(F("9223372036854775807", "1:x") F("9223372036854775807",
                                                 "1:y"))),
     META_E_TOTAL_SIZE, "more than 1125899906842624 bytes", 0},
    {"sum past limit",
     S(MULTI(F("562949953421312", "1:x") F("562949953421313", "1:y"))),
     META_E_TOTAL_SIZE, "file 1: the file sizes add up", 1},
    {"total zero", S(TOR("d6:lengthi0e4:name1:a" PL "6:pieces0:e")),
     META_E_TOTAL_SIZE, "total size 0", -1},
    {"no path", S(MULTI("d6:lengthi16384ee")), META_E_PATH,
     "file 0: no 'path'", 0},
    {"path str", S(MULTI("d6:lengthi16384e4:path1:xe")), META_E_PATH,
     "file 0: 'path' is a string, not a list", 0},
    {"path empty", S(MULTI(F("16384", ""))), META_E_PATH,
     "file 0: 'path' is empty", 0},
    {"path element int", S(MULTI(F("16384", "1:ai1e"))), META_E_PATH,
     "file 0: path element 1 is an integer", 0},
    {"dotdot", S(MULTI(F("16000", "1:x") F("384", "2:..6:passwd"))),
     META_E_PATH_UNSAFE, "file 1: path component '..' is not allowed", 1},
    {"dotdot later", S(MULTI(F("16384", "1:a2:..2:.."))),
     META_E_PATH_UNSAFE, "file 0: path component '..' is not allowed", 0},
    {"dot", S(MULTI(F("16384", "1:."))), META_E_PATH_UNSAFE,
     "'.' is not allowed", 0},
    {"empty component", S(MULTI(F("16384", "1:a0:1:b"))), META_E_PATH_UNSAFE,
     "file 0: path component 1 is empty", 0},
    {"absolute", S(MULTI(F("16384", "11:/etc/passwd"))), META_E_PATH_UNSAFE,
     "makes an absolute path", 0},
    {"slash inside", S(MULTI(F("16384", "9:../../etc"))),
     META_E_PATH_UNSAFE, "contains a path separator", 0},
    {"backslash", S(MULTI(F("16384", "9:..\\..\\etc"))), META_E_PATH_UNSAFE,
     "contains a path separator", 0},
    {"nul", S(MULTI(F("16384", "5:a\0.sh"))), META_E_PATH_UNSAFE,
     "'a\\x00.sh' contains a NUL byte", 0},
    {"utf-8 dotdot",
     S(MULTI("d6:lengthi16384e4:pathl1:xe10:path.utf-8l2:..ee")),
     META_E_PATH_UNSAFE, "'..' is not allowed", 0},
    {"symlink dotdot",
     S(MULTI(F("16384", "1:x") "d4:attr1:l4:pathl1:le"
             "12:symlink pathl2:..3:etcee")),
     META_E_PATH_UNSAFE, "file 1: symlink path component '..'", 1},
    {"symlink path str",
     S(MULTI(F("16384", "1:x") "d4:attr1:l4:pathl1:le12:symlink path1:xe")),
     META_E_PATH, "'symlink path' is not a non-empty list", 1},
    {"duplicate", S(MULTI(F("16000", "1:x") F("384", "1:x"))),
     META_E_PATH_DUPLICATE, "file 1: path 'd/x' is used twice (also by file 0)",
     1},
    {"file is dir", S(MULTI(F("16000", "1:x") F("384", "1:x1:y"))),
     META_E_PATH_DUPLICATE, "file 0: path 'd/x' is also a directory of file 1",
     0},
    {"dir is file", S(MULTI(F("16000", "1:x1:y") F("384", "1:x"))),
     META_E_PATH_DUPLICATE, "file 1: path 'd/x' is also a directory of file 0",
     1},
    {"clash apart",
     S(MULTI(F("16000", "1:a1:b") F("300", "3:a b") F("84", "1:a"))),
     META_E_PATH_DUPLICATE, "path 'd/a' is also a directory", 2},
    {"deep clash", S(MULTI(F("16000", "1:a1:b1:c") F("384", "1:a1:b"))),
     META_E_PATH_DUPLICATE, "path 'd/a/b' is also a directory", 1},
    {"sanitised alike", S(MULTI(F("16000", "2:a\x01") F("384", "2:a\x02"))),
     META_E_PATH_DUPLICATE, "used twice", 1},
    {"dup key sorted",
     S(TOR("d6:lengthi16384e6:lengthi1e4:name1:a" PL PS1 "e")),
     META_E_DUPLICATE_KEY,
     "key 'length' appears twice in the info dictionary", -1},
    {"dup key unsorted",
     S(TOR("d4:name1:a6:lengthi16384e4:name1:b" PL PS1 "e")),
     META_E_DUPLICATE_KEY, "key 'name' appears twice", -1},
    {"dup key nested",
     S(MULTI("d6:lengthi16384e4:pathl1:xe4:pathl1:yee")),
     META_E_DUPLICATE_KEY, "key 'path' appears twice in a dictionary inside",
     -1},
    {"dup info", S("d4:info" SINGLE_INFO "4:info" SINGLE_INFO "e"),
     META_E_DUPLICATE_KEY, "key 'info' appears twice in the top-level", -1},
    {"v2 only",
     S(TOR("d9:file treed1:ad0:d6:lengthi16384e11:pieces root32:" R32
           "eee12:meta versioni2e4:name1:a" PL "e")),
     META_E_V2_ONLY, "v2-only torrents are not supported yet", -1},
    {"announce int", S("d8:announcei1e4:info" SINGLE_INFO "e"),
     META_E_ANNOUNCE, "'announce' is an integer", -1},
    {"announce-list str", S("d13:announce-list1:x4:info" SINGLE_INFO "e"),
     META_E_ANNOUNCE, "'announce-list' is a string, not a list", -1},
    {"tier str", S("d13:announce-listl1:xe4:info" SINGLE_INFO "e"),
     META_E_ANNOUNCE, "announce-list tier 0 is a string", -1},
    {"tracker int", S("d13:announce-listll1:xi1eee4:info" SINGLE_INFO "e"),
     META_E_ANNOUNCE, "tier 0, URL 1 is an integer", -1},
    {"url-list int", S("d4:info" SINGLE_INFO "8:url-listi1ee"),
     META_E_URL_LIST, "'url-list' is an integer", -1},
    {"url-list item", S("d4:info" SINGLE_INFO "8:url-listl1:xdeee"),
     META_E_URL_LIST, "url-list item 1 is a dictionary", -1},
    {"meta version 3",
     S(TOR("d6:lengthi16384e12:meta versioni3e4:name1:a" PL PS1 "e")),
     META_E_VERSION, "meta version 3 is not supported", -1},
    {"meta version str",
     S(TOR("d6:lengthi16384e12:meta version1:24:name1:a" PL PS1 "e")),
     META_E_VERSION, "'meta version' is a string", -1},
    {"hybrid no tree",
     S(TOR("d6:lengthi16384e12:meta versioni2e4:name1:a" PL PS1 "e")),
     META_E_FILES, "without a 'file tree'", -1},
    {"hybrid length differs",
     S(TOR("d9:file treed1:ad0:d6:lengthi16383e11:pieces root32:" R32
           "eee6:lengthi16384e12:meta versioni2e4:name1:a" PL PS1 "e")),
     META_E_FILES, "hybrid torrent: file 0 differs", 0},
    {"hybrid name differs",
     S(TOR("d9:file treed1:bd0:d6:lengthi16384e11:pieces root32:" R32
           "eee6:lengthi16384e12:meta versioni2e4:name1:a" PL PS1 "e")),
     META_E_FILES, "hybrid torrent: file 0 differs", 0},
    {"hybrid v2 more",
     S(TOR("d9:file treed1:ad0:d6:lengthi16384eee1:bd0:d6:lengthi1eeee"
           "6:lengthi16384e12:meta versioni2e4:name1:a" PL PS1 "e")),
     META_E_FILES, "v2 file tree has more files", -1},
    {"hybrid v1 more",
     S(TOR("d9:file treed1:xd0:d6:lengthi16000eeee5:filesl" F2
           "e12:meta versioni2e4:name1:d" PL PS1 "e")),
     META_E_FILES, "v1 file list has more files", -1},
    {"hybrid tree dotdot",
     S(TOR("d9:file treed2:..d0:d6:lengthi16384eeee6:lengthi16384e"
           "12:meta versioni2e4:name1:a" PL PS1 "e")),
     META_E_PATH_UNSAFE, "file tree: path component '..' is not allowed",
     -1},
};

static void
test_errors(void **state)
{
    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(errors); i++) {
        struct meta_info *info = NULL;
        struct meta_errinfo err;
        memset(&err, 0x55, sizeof(err));
        int r = meta_parse(&info, errors[i].data, errors[i].len, NULL, &err);
        if (r != errors[i].err || !strstr(err.detail, errors[i].detail) ||
            err.file_index != errors[i].file)
            fail_msg("%s: got %d (%s) file %ld: '%s'; want %d '%s' file %ld",
                     errors[i].name, r, meta_strerror(r), err.file_index,
                     r < 0 ? err.detail : "", errors[i].err,
                     errors[i].detail, errors[i].file);
        assert_null(info);
        assert_true(err.offset <= errors[i].len);
        assert_true(memchr(err.detail, '\0', sizeof(err.detail)) != NULL);
    }
}

/* Every error value has a row above (or a limits test below). */
static void
test_every_error_covered(void **state)
{
    (void)state;
    for (int e = META_E_BENCODE; e > META_E_MIN; e--) {
        bool seen = e == META_E_TOO_LARGE || e == META_E_TOO_MANY_FILES ||
                    e == META_E_PATH_TOO_LONG || e == META_E_NOMEM;
        for (size_t i = 0; i < ARRAY_LEN(errors) && !seen; i++)
            seen = errors[i].err == e;
        if (!seen)
            fail_msg("no test for %d (%s)", e, meta_strerror(e));
    }
}

static void
test_error_offset(void **state)
{
    (void)state;
    static const char t[] = MULTI(F("16384", "1:a2:.."));
    struct meta_info *info = NULL;
    struct meta_errinfo err;
    assert_int_equal(meta_parse(&info, S(t), NULL, &err), META_E_PATH_UNSAFE);
    assert_memory_equal(t + err.offset, "2:..", 4);

    static const char u[] = "d4:infod6:lengthi163";
    assert_int_equal(meta_parse(&info, S(u), NULL, &err), META_E_BENCODE);
    assert_int_equal(err.offset, sizeof(u) - 1);

    /* reterr may be NULL. */
    assert_int_equal(meta_parse(&info, S(t), NULL, NULL), META_E_PATH_UNSAFE);
    assert_null(info);
}

static void
test_strerror(void **state)
{
    (void)state;
    for (int e = META_OK; e > META_E_MIN; e--)
        assert_string_not_equal(meta_strerror(e), "unknown error");
    assert_string_equal(meta_strerror(META_E_MIN), "unknown error");
    assert_string_equal(meta_strerror(1), "unknown error");
    assert_non_null(strstr(meta_strerror(META_E_V2_ONLY), "not supported"));
}

static void
test_piece_count(void **state)
{
    (void)state;
    assert_int_equal(meta_piece_count(0, 16384), 0);
    assert_int_equal(meta_piece_count(1, 16384), 1);
    assert_int_equal(meta_piece_count(16384, 16384), 1);
    assert_int_equal(meta_piece_count(16385, 16384), 2);
    assert_int_equal(meta_piece_count(100, 0), 0);
    assert_int_equal(meta_piece_count(UINT64_MAX, 1), UINT32_MAX);
    assert_int_equal(meta_piece_count((uint64_t)1 << 50, 1u << 14),
                     UINT32_MAX);
}

/* --- limits --- */

static int
parse_lim(const char *data, size_t len, const struct meta_limits *lim,
          struct meta_errinfo *err)
{
    struct meta_info *info = NULL;
    int r = meta_parse(&info, data, len, lim, err);
    if (r == 0)
        check_invariants(info, lim);
    meta_free(info);
    return r;
}

static void
test_limits(void **state)
{
    (void)state;
    struct meta_limits lim = meta_limits_default;
    struct meta_errinfo err;

    lim.max_input = sizeof(SINGLE) - 2;
    assert_int_equal(parse_lim(S(SINGLE), &lim, &err), META_E_TOO_LARGE);
    assert_non_null(strstr(err.detail, "the limit is"));
    lim.max_input = sizeof(SINGLE) - 1;
    assert_int_equal(parse_lim(S(SINGLE), &lim, &err), 0);

    lim = meta_limits_default;
    lim.max_files = 1;
    assert_int_equal(parse_lim(S(MULTI(F2)), &lim, &err),
                     META_E_TOO_MANY_FILES);
    assert_non_null(strstr(err.detail, "2 files, the limit is 1"));
    lim.max_files = 2;
    assert_int_equal(parse_lim(S(MULTI(F2)), &lim, &err), 0);

    lim = meta_limits_default;
    lim.max_path_len = 3; /* "d/x" */
    assert_int_equal(parse_lim(S(MULTI(F2)), &lim, &err), 0);
    lim.max_path_len = 2;
    assert_int_equal(parse_lim(S(MULTI(F2)), &lim, &err),
                     META_E_PATH_TOO_LONG);
    assert_non_null(strstr(err.detail, "file 0: path is longer than 2"));
    lim.max_path_len = 0;
    assert_int_equal(parse_lim(S(SINGLE), &lim, &err), META_E_PATH_TOO_LONG);

    lim = meta_limits_default;
    lim.max_total_size = 16383;
    assert_int_equal(parse_lim(S(SINGLE), &lim, &err), META_E_TOTAL_SIZE);
    lim.max_total_size = 16384;
    assert_int_equal(parse_lim(S(SINGLE), &lim, &err), 0);

    lim = meta_limits_default;
    lim.min_piece_length = 32768;
    assert_int_equal(parse_lim(S(SINGLE), &lim, &err), META_E_PIECE_LENGTH);
    lim.min_piece_length = 1024;
    lim.max_piece_length = 8192;
    assert_int_equal(parse_lim(S(SINGLE), &lim, &err), META_E_PIECE_LENGTH);

    static const char tr[] =
        "d13:announce-listll1:a1:bel1:cee4:info" SINGLE_INFO
        "8:url-listl1:x1:y1:zee";
    lim = meta_limits_default;
    lim.max_urls = 3;
    assert_int_equal(parse_lim(S(tr), &lim, &err), 0);
    lim.max_urls = 2;
    assert_int_equal(parse_lim(S(tr), &lim, &err), META_E_ANNOUNCE);
    assert_non_null(strstr(err.detail, "more than 2 tracker URLs"));
    static const char ws[] = "d4:info" SINGLE_INFO "8:url-listl1:x1:y1:zee";
    assert_int_equal(parse_lim(S(ws), &lim, &err), META_E_URL_LIST);
    assert_non_null(strstr(err.detail, "more than 2 web seed URLs"));
}

/* Long components are cut, deep paths hit max_path_len, deep nesting hits
 * the decoder's depth limit. */
static void
test_long_paths(void **state)
{
    (void)state;
    struct buf b;
    struct meta_errinfo err;
    struct meta_info *info = NULL;

    buf_init(&b, SIZE_MAX);
    assert_int_equal(buf_puts(&b, "d4:infod5:filesld6:lengthi16384e4:pathl"),
                     0);
    for (int i = 0; i < 20; i++) {
        assert_int_equal(buf_puts(&b, "250:"), 0);
        for (int k = 0; k < 250; k++)
            assert_int_equal(buf_putc(&b, 'a'), 0);
    }
    assert_int_equal(buf_puts(&b, "eee4:name1:d" PL PS1 "ee"), 0);
    assert_int_equal(meta_parse(&info, b.data, b.len, NULL, &err),
                     META_E_PATH_TOO_LONG);
    buf_release(&b);

    /* One 1000-byte component: cut to 255 bytes, flagged. */
    buf_init(&b, SIZE_MAX);
    assert_int_equal(buf_puts(&b, "d4:infod6:lengthi16384e4:name1004:"), 0);
    for (int k = 0; k < 1000; k++)
        assert_int_equal(buf_putc(&b, 'n'), 0);
    assert_int_equal(buf_puts(&b, ".iso" PL PS1 "ee"), 0);
    info = parse_ok(b.data, b.len);
    assert_int_equal(strlen(info->name), PATH_NAME_MAX);
    assert_string_equal(info->name + PATH_NAME_MAX - 4, ".iso");
    assert_true(info->sanitised);
    meta_free(info);
    buf_release(&b);

    /* A nesting bomb inside the info dictionary. */
    buf_init(&b, SIZE_MAX);
    assert_int_equal(buf_puts(&b, "d4:infod1:x"), 0);
    for (int k = 0; k < 100000; k++)
        assert_int_equal(buf_putc(&b, 'l'), 0);
    for (int k = 0; k < 100000; k++)
        assert_int_equal(buf_putc(&b, 'e'), 0);
    assert_int_equal(buf_puts(&b, "ee"), 0);
    assert_int_equal(meta_parse(&info, b.data, b.len, NULL, &err),
                     META_E_BENCODE);
    assert_non_null(strstr(err.detail, "nested too deeply"));
    buf_release(&b);
}

/* Many files: the duplicate check sorts, so a repeat far apart is found,
 * and a large valid torrent parses. */
static void
test_many_files(void **state)
{
    (void)state;
    enum { N = 5000 };
    for (int dup = 0; dup < 2; dup++) {
        struct buf b;
        struct meta_info *info = NULL;
        struct meta_errinfo err;
        buf_init(&b, SIZE_MAX);
        assert_int_equal(buf_puts(&b, "d4:infod5:filesl"), 0);
        for (int i = 0; i < N; i++) {
            char name[32];
            int k = dup && i == N - 1 ? 7 : i;
            (void)snprintf(name, sizeof(name), "f%d", k);
            assert_int_equal(buf_puts(&b, "d6:lengthi1e4:pathl"), 0);
            assert_int_equal(buf_puts(&b, i % 2 ? "3:sub" : ""), 0);
            assert_int_equal(benc_put_cstr(&b, name), 0);
            assert_int_equal(buf_puts(&b, "ee"), 0);
        }
        assert_int_equal(buf_puts(&b, "e4:name1:d" PL PS1 "ee"), 0);
        int r = meta_parse(&info, b.data, b.len, NULL, &err);
        if (dup) {
            assert_int_equal(r, META_E_PATH_DUPLICATE);
            assert_int_equal(err.file_index, N - 1);
        } else {
            assert_int_equal(r, 0);
            assert_int_equal(info->n_files, N);
            check_invariants(info, &meta_limits_default);
        }
        meta_free(info);
        buf_release(&b);
    }
}

/* --- robustness --- */

static void
test_truncation(void **state)
{
    (void)state;
    for (size_t f = 0; f < ARRAY_LEN(fixtures); f++) {
        for (size_t len = 0; len < fixtures[f].len; len++) {
            /* An exact-size copy, so that ASan sees any over-read. */
            char *copy = malloc(len ? len : 1);
            assert_non_null(copy);
            memcpy(copy, fixtures[f].data, len);
            struct meta_info *info = NULL;
            struct meta_errinfo err;
            int r = meta_parse(&info, copy, len, NULL, &err);
            assert_true(r < 0);
            assert_null(info);
            assert_true(err.detail[0] != '\0');
            assert_int_equal(meta_parse_info(&info, copy, len, NULL, &err) < 0,
                             1);
            free(copy);
        }
    }
}

/* Flip every bit of every fixture: parse or refuse, never crash; what
 * parses still keeps every promise. */
static void
test_bitflip(void **state)
{
    (void)state;
    long ok = 0, refused = 0;
    for (size_t f = 0; f < ARRAY_LEN(fixtures); f++) {
        size_t len = fixtures[f].len;
        char *copy = malloc(len);
        assert_non_null(copy);
        for (size_t pos = 0; pos < len; pos++) {
            for (int bit = 0; bit < 8; bit++) {
                memcpy(copy, fixtures[f].data, len);
                copy[pos] = (char)(copy[pos] ^ (1 << bit));
                struct meta_info *info = NULL;
                struct meta_errinfo err;
                int r = meta_parse(&info, copy, len, NULL, &err);
                if (r == 0) {
                    check_invariants(info, &meta_limits_default);
                    ok++;
                } else {
                    assert_true(r < 0 && r > META_E_MIN);
                    refused++;
                }
                meta_free(info);
            }
        }
        free(copy);
    }
    assert_true(ok > 0 && refused > 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_single),
        cmocka_unit_test(test_multi),
        cmocka_unit_test(test_hybrid),
        cmocka_unit_test(test_unsorted_keys),
        cmocka_unit_test(test_sanitised),
        cmocka_unit_test(test_trackers),
        cmocka_unit_test(test_private),
        cmocka_unit_test(test_parse_info),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_every_error_covered),
        cmocka_unit_test(test_error_offset),
        cmocka_unit_test(test_strerror),
        cmocka_unit_test(test_piece_count),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_long_paths),
        cmocka_unit_test(test_many_files),
        cmocka_unit_test(test_truncation),
        cmocka_unit_test(test_bitflip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
