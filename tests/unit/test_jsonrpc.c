/* Unit tests for common/jsonrpc: every error value, UTF-8 edge cases,
 * depth and value limits, framing with reads split at every length,
 * truncation at every length, request checking, message building and the
 * client-side reply parser. */
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

#include "common/buf.h"
#include "common/jsonrpc.h"

/* Feed s (n bytes) in pieces of at most split bytes until the first line
 * finishes; returns what the reader said, and the bytes it took. */
static int
read_line_split(struct jsonrpc_reader *r, const char *s, size_t n, size_t split,
                struct json_object **doc, size_t *off, size_t *ret_used)
{
    size_t pos = 0;
    while (pos < n) {
        size_t k = n - pos < split ? n - pos : split;
        size_t used = 0;
        int rc = jsonrpc_reader_feed(r, s + pos, k, &used, doc, off);
        assert_true(used <= k);
        pos += used;
        if (rc != 0) {
            if (ret_used)
                *ret_used = pos;
            return rc;
        }
        assert_int_equal(used, k);
    }
    if (ret_used)
        *ret_used = pos;
    return 0;
}

/* One line with default limits, whole: result, doc and offset. */
static int
read1(const char *s, struct json_object **doc, size_t *off)
{
    struct jsonrpc_reader r;
    assert_int_equal(jsonrpc_reader_init(&r, NULL), 0);
    int rc = read_line_split(&r, s, strlen(s), SIZE_MAX, doc, off, NULL);
    jsonrpc_reader_release(&r);
    return rc;
}

static void
test_strerror(void **state)
{
    (void)state;
    for (int e = 0; e > JSONRPC_E_MIN; e--) {
        const char *m = jsonrpc_strerror(e);
        assert_non_null(m);
        assert_string_not_equal(m, "unknown error");
        int code = jsonrpc_error_code(e);
        assert_true(code <= -32600 && code >= -32700);
    }
    assert_string_equal(jsonrpc_strerror(JSONRPC_E_MIN), "unknown error");
    assert_string_equal(jsonrpc_strerror(1), "unknown error");
    assert_int_equal(jsonrpc_error_code(JSONRPC_E_SYNTAX), -32700);
    assert_int_equal(jsonrpc_error_code(JSONRPC_E_UTF8), -32700);
    assert_int_equal(jsonrpc_error_code(JSONRPC_E_DEPTH), -32700);
    assert_int_equal(jsonrpc_error_code(JSONRPC_E_LINE_TOO_LONG), -32600);
    assert_int_equal(jsonrpc_error_code(JSONRPC_E_VERSION), -32600);
    assert_int_equal(jsonrpc_error_code(JSONRPC_E_EMPTY_BATCH), -32600);
    assert_int_equal(jsonrpc_error_code(JSONRPC_E_PARAMS_BY_POSITION), -32602);
    assert_int_equal(jsonrpc_error_code(JSONRPC_E_NOMEM), -32603);
}

/* Every reader error, and where it is reported. */
static const struct {
    const char *line;
    int err;
    size_t off;
} read_errors[] = {
    {"\n", JSONRPC_E_EMPTY, 0},
    {"   \t\r\n", JSONRPC_E_EMPTY, 0},
    {"\"\xc3\x28\"\n", JSONRPC_E_UTF8, 1},
    {"\"\x01\"\n", JSONRPC_E_CONTROL_CHAR, 1},
    {"\"a\tb\"\n", JSONRPC_E_CONTROL_CHAR, 2},
    {"{\"a\":1} \x7f\n", JSONRPC_E_SYNTAX, 8},
    {"{\"a\":\n", JSONRPC_E_TRUNCATED, 5},
    {"[1,2\n", JSONRPC_E_TRUNCATED, 4},
    {"\"abc\n", JSONRPC_E_TRUNCATED, 4},
    {"tru\n", JSONRPC_E_SYNTAX, 3},
    {"{\"a\":1,}\n", JSONRPC_E_SYNTAX, 7},
    {"['a']\n", JSONRPC_E_SYNTAX, 1},
    {"NaN\n", JSONRPC_E_SYNTAX, 0},
    {"[Infinity]\n", JSONRPC_E_SYNTAX, 1},
    {"{\"a\":1} x\n", JSONRPC_E_SYNTAX, 8},
    {"{\"a\":1}{}\n", JSONRPC_E_TRAILING, 7},
    {"1 2\n", JSONRPC_E_TRAILING, 2},
    {"\xc3\xa9\n", JSONRPC_E_SYNTAX, 0},
    /* A bad escape right before a bad UTF-8 sequence: the UTF-8 error
     * comes first (at the same byte), however the bytes are split. */
    {"\"\\u\xe2"
     "3333\"\n",
     JSONRPC_E_UTF8, 3},
    {"[\"\xf0\x9f\x98\"]\n", JSONRPC_E_UTF8, 2},
    /* Numbers, RFC 8259 grammar. */
    {"01\n", JSONRPC_E_SYNTAX, 1},
    {"1.\n", JSONRPC_E_SYNTAX, 2},
    {"-\n", JSONRPC_E_SYNTAX, 1},
    {"1e\n", JSONRPC_E_SYNTAX, 2},
    {"1e+\n", JSONRPC_E_SYNTAX, 3},
    {".5\n", JSONRPC_E_SYNTAX, 0},
    {"+1\n", JSONRPC_E_SYNTAX, 0},
    {"[1.5.3]\n", JSONRPC_E_SYNTAX, 4},
    {"[-a]\n", JSONRPC_E_SYNTAX, 2},
    {"[1true]\n", JSONRPC_E_SYNTAX, 2},
    {"[1,-]\n", JSONRPC_E_SYNTAX, 4},
    {"[1,223-,5]\n", JSONRPC_E_SYNTAX, 6},
    {"[1.0e]\n", JSONRPC_E_SYNTAX, 5},
};

static void
test_read_errors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(read_errors) / sizeof(read_errors[0]); i++) {
        const char *s = read_errors[i].line;
        size_t n = strlen(s);
        /* Whole, then split at every size: the same answer. */
        for (size_t split = 1; split <= n; split++) {
            struct jsonrpc_reader r;
            assert_int_equal(jsonrpc_reader_init(&r, NULL), 0);
            struct json_object *doc = NULL;
            size_t off = 12345, used = 0;
            int rc = read_line_split(&r, s, n, split, &doc, &off, &used);
            if (rc != read_errors[i].err)
                fail_msg("line %zu split %zu: %d (%s), want %d", i, split, rc,
                         jsonrpc_strerror(rc), read_errors[i].err);
            assert_null(doc);
            assert_int_equal(used, n);
            if (rc != JSONRPC_E_EMPTY && off != read_errors[i].off)
                fail_msg("line %zu split %zu: offset %zu, want %zu", i, split,
                         off, read_errors[i].off);
            assert_false(jsonrpc_reader_pending(&r));
            jsonrpc_reader_release(&r);
        }
    }
}

/* A NUL byte is a control character, inside a string or out. */
static void
test_read_nul(void **state)
{
    (void)state;
    static const char in1[] = "{\"a\":1}\0\n", in2[] = "[\"a\0\"]\n";
    struct jsonrpc_reader r;
    struct json_object *doc = NULL;
    size_t off = 0, used = 0;
    assert_int_equal(jsonrpc_reader_init(&r, NULL), 0);
    assert_int_equal(
        read_line_split(&r, in1, sizeof(in1) - 1, 1, &doc, &off, &used),
        JSONRPC_E_CONTROL_CHAR);
    assert_int_equal(off, 7);
    assert_int_equal(
        read_line_split(&r, in2, sizeof(in2) - 1, 100, &doc, &off, &used),
        JSONRPC_E_CONTROL_CHAR);
    assert_int_equal(off, 3);
    jsonrpc_reader_release(&r);
}

static void
test_read_values(void **state)
{
    (void)state;
    static const char *const ok[] = {
        "{}\n",
        "[]\n",
        "5\n",
        "-0.5e10\n",
        "\"\\u00e9\xc3\xa9\"\n",
        "  {\"a\" : [1, true, false, null]}  \r\n",
        "null\n",
        "\"\\ud83d\\ude00\xf0\x9f\x98\x80\"\n",
        "[0,-0,1.5,-2.25e-3,4E+10,0e0,10,1e5]\n",
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        size_t n = strlen(ok[i]);
        for (size_t split = 1; split <= n; split++) {
            struct jsonrpc_reader r;
            assert_int_equal(jsonrpc_reader_init(&r, NULL), 0);
            struct json_object *doc = NULL;
            size_t used = 0;
            int rc = read_line_split(&r, ok[i], n, split, &doc, NULL, &used);
            if (rc != 1)
                fail_msg("'%s' split %zu: %d (%s)", ok[i], split, rc,
                         jsonrpc_strerror(rc));
            assert_int_equal(used, n);
            if (strcmp(ok[i], "null\n") == 0)
                assert_null(doc); /* json-c's JSON null */
            else
                assert_non_null(doc);
            json_object_put(doc);
            jsonrpc_reader_release(&r);
        }
    }
}

static void
test_utf8(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        bool ok;
        size_t off;
    } cases[] = {
        {"", true, 0},
        {"abc", true, 0},
        {"\xc2\x80", true, 0},          /* U+0080 */
        {"\xdf\xbf", true, 0},          /* U+07FF */
        {"\xe0\xa0\x80", true, 0},      /* U+0800 */
        {"\xed\x9f\xbf", true, 0},      /* U+D7FF */
        {"\xee\x80\x80", true, 0},      /* U+E000 */
        {"\xef\xbf\xbf", true, 0},      /* U+FFFF */
        {"\xf0\x90\x80\x80", true, 0},  /* U+10000 */
        {"\xf4\x8f\xbf\xbf", true, 0},  /* U+10FFFF */
        {"\xc0\x80", false, 0},         /* overlong NUL */
        {"\xc1\xbf", false, 0},         /* overlong */
        {"\xe0\x80\xaf", false, 0},     /* overlong '/' */
        {"\xe0\x9f\xbf", false, 0},     /* overlong U+07FF */
        {"\xf0\x80\x80\xaf", false, 0}, /* overlong */
        {"\xf0\x8f\xbf\xbf", false, 0}, /* overlong U+FFFF */
        {"\xed\xa0\x80", false, 0},     /* U+D800 */
        {"\xed\xbf\xbf", false, 0},     /* U+DFFF */
        {"\xf4\x90\x80\x80", false, 0}, /* U+110000 */
        {"\xf5\x80\x80\x80", false, 0},
        {"\xff", false, 0},
        {"a\x80", false, 1},         /* stray continuation */
        {"ab\xc3", false, 2},        /* truncated */
        {"ab\xe2\x82", false, 2},    /* truncated */
        {"a\xe2\x28\xa1", false, 1}, /* bad continuation */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t off = 999;
        bool ok = jsonrpc_utf8_valid(cases[i].s, strlen(cases[i].s), &off);
        if (ok != cases[i].ok)
            fail_msg("case %zu: %d", i, ok);
        if (!ok)
            assert_int_equal(off, cases[i].off);
        /* The same inside a JSON string, read through the reader. */
        char line[64];
        snprintf(line, sizeof(line), "\"%s\"\n", cases[i].s);
        struct json_object *doc = NULL;
        size_t loff = 999;
        int rc = read1(line, &doc, &loff);
        if (cases[i].ok) {
            assert_int_equal(rc, 1);
            assert_string_equal(json_object_get_string(doc), cases[i].s);
            json_object_put(doc);
        } else {
            assert_int_equal(rc, JSONRPC_E_UTF8);
            assert_int_equal(loff, cases[i].off + 1);
        }
    }
}

static void
test_depth(void **state)
{
    (void)state;
    struct jsonrpc_limits lim = jsonrpc_limits_default;
    lim.max_depth = 3;
    static const struct {
        const char *s;
        int rc;
        size_t off;
    } cases[] = {
        {"[[[]]]\n", 1, 0},
        {"[[[[]]]]\n", JSONRPC_E_DEPTH, 3},
        {"{\"a\":{\"b\":[{}]}}\n", JSONRPC_E_DEPTH, 11},
        {"[\"[[[[[[\",[[]]]\n", 1, 0},   /* brackets in strings */
        {"[\"\\\"[[[[\",[[]]]\n", 1, 0}, /* after an escaped quote */
        {"[[]],[[[]]]\n", JSONRPC_E_TRAILING, 4},
        {"[[[]]],[\n", JSONRPC_E_TRAILING, 6},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct jsonrpc_reader r;
        assert_int_equal(jsonrpc_reader_init(&r, &lim), 0);
        struct json_object *doc = NULL;
        size_t off = 999;
        int rc = read_line_split(&r, cases[i].s, strlen(cases[i].s), 2, &doc,
                                 &off, NULL);
        if (rc != cases[i].rc)
            fail_msg("case %zu: %d (%s)", i, rc, jsonrpc_strerror(rc));
        if (rc < 0)
            assert_int_equal(off, cases[i].off);
        json_object_put(doc);
        jsonrpc_reader_release(&r);
    }

    /* 10000 levels with the default limit: refused before json-c. */
    size_t n = 20001;
    char *deep = malloc(n + 1);
    assert_non_null(deep);
    memset(deep, '[', 10000);
    memset(deep + 10000, ']', 10000);
    deep[20000] = '\n';
    deep[20001] = '\0';
    size_t off = 0;
    struct json_object *doc = NULL;
    assert_int_equal(read1(deep, &doc, &off), JSONRPC_E_DEPTH);
    assert_int_equal(off, 64);
    free(deep);
}

static void
test_too_many_values(void **state)
{
    (void)state;
    struct jsonrpc_limits lim = jsonrpc_limits_default;
    lim.max_values = 4;
    struct jsonrpc_reader r;
    assert_int_equal(jsonrpc_reader_init(&r, &lim), 0);
    struct json_object *doc = NULL;
    size_t used, off = 0;
    const char *ok = "[1,2,\"a,b,c,d\"]\n"; /* 1 + '[' + 2 commas */
    assert_int_equal(jsonrpc_reader_feed(&r, ok, strlen(ok), &used, &doc, &off),
                     1);
    json_object_put(doc);
    const char *bad = "[1,2,3,4]\n";
    assert_int_equal(
        jsonrpc_reader_feed(&r, bad, strlen(bad), &used, &doc, &off),
        JSONRPC_E_TOO_MANY_VALUES);
    assert_int_equal(off, 6);
    jsonrpc_reader_release(&r);
}

/* Several lines in one buffer, fed at every split size: the same lines. */
static void
test_framing(void **state)
{
    (void)state;
    const char *in = "{\"a\":1}\n\n[2]\r\n\"x\"\nbad\n  3  \n{\"b\"";
    size_t n = strlen(in);
    static const int want[] = {1, JSONRPC_E_EMPTY, 1, 1, JSONRPC_E_SYNTAX, 1};
    static const char *const want_doc[] = {"{\"a\":1}", NULL, "[2]",
                                           "\"x\"",     NULL, "3"};
    for (size_t split = 1; split <= n; split++) {
        struct jsonrpc_reader r;
        assert_int_equal(jsonrpc_reader_init(&r, NULL), 0);
        size_t got = 0, pos = 0;
        while (pos < n) {
            size_t k = n - pos < split ? n - pos : split;
            size_t off = 0;
            while (k > 0) {
                size_t used = 0;
                struct json_object *doc = NULL;
                int rc =
                    jsonrpc_reader_feed(&r, in + pos, k, &used, &doc, NULL);
                pos += used;
                k -= used;
                off += used;
                if (rc == 0) {
                    assert_int_equal(k, 0);
                    break;
                }
                assert_true(got < sizeof(want) / sizeof(want[0]));
                assert_int_equal(rc, want[got]);
                if (rc == 1) {
                    assert_string_equal(json_object_to_json_string_ext(
                                            doc, JSON_C_TO_STRING_PLAIN),
                                        want_doc[got]);
                    json_object_put(doc);
                }
                got++;
            }
        }
        assert_int_equal(got, sizeof(want) / sizeof(want[0]));
        /* "{\"b\"" is pending: finishing says it is truncated. */
        assert_true(jsonrpc_reader_pending(&r));
        struct json_object *doc = NULL;
        assert_int_equal(jsonrpc_reader_finish(&r, &doc, NULL),
                         JSONRPC_E_TRUNCATED);
        assert_false(jsonrpc_reader_pending(&r));
        assert_int_equal(jsonrpc_reader_finish(&r, &doc, NULL),
                         JSONRPC_E_EMPTY);
        jsonrpc_reader_release(&r);
    }

    /* A last line without '\n' is finished at the end of the stream. */
    struct jsonrpc_reader r;
    assert_int_equal(jsonrpc_reader_init(&r, NULL), 0);
    size_t used;
    struct json_object *doc = NULL;
    assert_int_equal(jsonrpc_reader_feed(&r, "42", 2, &used, &doc, NULL), 0);
    assert_int_equal(jsonrpc_reader_finish(&r, &doc, NULL), 1);
    assert_int_equal(json_object_get_int(doc), 42);
    json_object_put(doc);
    jsonrpc_reader_release(&r);
}

static void
test_line_too_long(void **state)
{
    (void)state;
    struct jsonrpc_limits lim = jsonrpc_limits_default;
    lim.max_line = 8;
    /* Exactly 8 bytes before '\n' (the '\r' counts) is fine. */
    static const struct {
        const char *in;
        int first;
    } cases[] = {
        {"\"123456\"\n", 1},
        {"[1,2,3]\r\n", 1},
        {"\"1234567\"\n", JSONRPC_E_LINE_TOO_LONG},
        {"[1,2,3] \r\n", JSONRPC_E_LINE_TOO_LONG},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct jsonrpc_reader r;
        assert_int_equal(jsonrpc_reader_init(&r, &lim), 0);
        struct json_object *doc = NULL;
        size_t off = 0;
        int rc = read_line_split(&r, cases[i].in, strlen(cases[i].in), 3, &doc,
                                 &off, NULL);
        assert_int_equal(rc, cases[i].first);
        json_object_put(doc);
        jsonrpc_reader_release(&r);
    }

    /* Reported as soon as the limit is passed, without a '\n', then the
     * rest of the line is skipped and the next line is read. */
    struct jsonrpc_reader r;
    assert_int_equal(jsonrpc_reader_init(&r, &lim), 0);
    struct json_object *doc = NULL;
    size_t used = 0, off = 0;
    assert_int_equal(jsonrpc_reader_feed(&r, "[1,2,3,4", 8, &used, &doc, &off),
                     0);
    assert_int_equal(jsonrpc_reader_feed(&r, ",5", 2, &used, &doc, &off),
                     JSONRPC_E_LINE_TOO_LONG);
    assert_int_equal(used, 2);
    assert_int_equal(off, 8);
    assert_true(jsonrpc_reader_pending(&r));
    assert_int_equal(jsonrpc_reader_feed(&r, "6,7,8,9,", 8, &used, &doc, &off),
                     0);
    assert_int_equal(used, 8);
    const char *rest = "10]\n{}\n";
    assert_int_equal(
        jsonrpc_reader_feed(&r, rest, strlen(rest), &used, &doc, &off), 1);
    assert_int_equal(used, strlen(rest));
    assert_true(json_object_is_type(doc, json_type_object));
    json_object_put(doc);
    assert_false(jsonrpc_reader_pending(&r));

    /* A huge line in one feed: reported once, all of it consumed. */
    char big[100];
    memset(big, 'x', sizeof(big));
    big[99] = '\n';
    assert_int_equal(
        jsonrpc_reader_feed(&r, big, sizeof(big), &used, &doc, &off),
        JSONRPC_E_LINE_TOO_LONG);
    assert_int_equal(used, sizeof(big));
    assert_false(jsonrpc_reader_pending(&r));
    jsonrpc_reader_release(&r);
}

/* A valid request cut at every length: never a value, and never a crash;
 * with the cut at the end of the stream, an error. */
static void
test_truncation(void **state)
{
    (void)state;
    const char *req = "{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"x.y\","
                      "\"params\":{\"a\":[1,2.5,\"\xc3\xa9\"],\"b\":null}}";
    size_t n = strlen(req);
    for (size_t cut = 1; cut < n; cut++) {
        struct jsonrpc_reader r;
        assert_int_equal(jsonrpc_reader_init(&r, NULL), 0);
        size_t used;
        struct json_object *doc = NULL;
        assert_int_equal(jsonrpc_reader_feed(&r, req, cut, &used, &doc, NULL),
                         0);
        int rc = jsonrpc_reader_finish(&r, &doc, NULL);
        if (rc == 1) {
            /* Only "{...}" minus nothing can be whole: never here. */
            fail_msg("cut %zu gave a value", cut);
        }
        assert_true(rc == JSONRPC_E_TRUNCATED || rc == JSONRPC_E_UTF8 ||
                    rc == JSONRPC_E_SYNTAX);
        jsonrpc_reader_release(&r);
    }
}

/* Flip every bit of a valid line in turn: always a defined answer. */
static void
test_bit_flips(void **state)
{
    (void)state;
    const char *req = "{\"jsonrpc\":\"2.0\",\"id\":\"a\",\"method\":\"m\","
                      "\"params\":{\"k\":[true,{\"x\":\"\xe2\x82\xac\"}]}}\n";
    size_t n = strlen(req);
    char *buf = malloc(n);
    assert_non_null(buf);
    for (size_t i = 0; i < n * 8; i++) {
        memcpy(buf, req, n);
        buf[i / 8] ^= (char)(1u << (i % 8));
        struct jsonrpc_reader r;
        assert_int_equal(jsonrpc_reader_init(&r, NULL), 0);
        size_t pos = 0;
        while (pos < n) {
            size_t used;
            struct json_object *doc = NULL;
            size_t off = SIZE_MAX;
            int rc =
                jsonrpc_reader_feed(&r, buf + pos, n - pos, &used, &doc, &off);
            pos += used;
            if (rc == 1) {
                struct jsonrpc_request q;
                (void)jsonrpc_request_parse(doc, JSONRPC_NAMED_PARAMS, &q);
                json_object_put(doc);
            } else if (rc < 0) {
                assert_true(rc > JSONRPC_E_MIN);
                assert_true(off <= n);
            }
        }
        struct json_object *doc = NULL;
        if (jsonrpc_reader_finish(&r, &doc, NULL) == 1)
            json_object_put(doc);
        jsonrpc_reader_release(&r);
    }
    free(buf);
}

static int
check_request(const char *s, unsigned flags, struct jsonrpc_request *q,
              struct json_object **doc)
{
    size_t off;
    char line[512];
    snprintf(line, sizeof(line), "%s\n", s);
    assert_int_equal(read1(line, doc, &off), 1);
    return jsonrpc_request_parse(*doc, flags, q);
}

static void
test_requests(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        int rc;
        const char *id; /* the id as JSON, or NULL for none/null */
        bool notification;
    } cases[] = {
        {"{\"jsonrpc\":\"2.0\",\"method\":\"a\",\"id\":1}", 0, "1", false},
        {"{\"jsonrpc\":\"2.0\",\"method\":\"a\",\"id\":\"x\"}", 0, "\"x\"",
         false},
        {"{\"jsonrpc\":\"2.0\",\"method\":\"a\",\"id\":null}", 0, NULL, false},
        {"{\"jsonrpc\":\"2.0\",\"method\":\"a\",\"id\":1.5}", 0, "1.5", false},
        {"{\"jsonrpc\":\"2.0\",\"method\":\"a\"}", 0, NULL, true},
        {"{\"jsonrpc\":\"2.0\",\"method\":\"a\",\"params\":{},\"id\":2}", 0,
         "2", false},
        {"[1]", JSONRPC_E_NOT_OBJECT, NULL, false},
        {"\"x\"", JSONRPC_E_NOT_OBJECT, NULL, false},
        {"{\"method\":\"a\",\"id\":3}", JSONRPC_E_VERSION, "3", false},
        {"{\"jsonrpc\":\"1.0\",\"method\":\"a\",\"id\":3}", JSONRPC_E_VERSION,
         "3", false},
        {"{\"jsonrpc\":2.0,\"method\":\"a\",\"id\":3}", JSONRPC_E_VERSION, "3",
         false},
        {"{\"jsonrpc\":\"2.0\\u0000x\",\"method\":\"a\"}", JSONRPC_E_VERSION,
         NULL, false},
        {"{\"jsonrpc\":\"2.0\",\"id\":4}", JSONRPC_E_METHOD, "4", false},
        {"{\"jsonrpc\":\"2.0\",\"method\":1,\"id\":4}", JSONRPC_E_METHOD, "4",
         false},
        {"{\"jsonrpc\":\"2.0\",\"method\":\"a\\u0000b\",\"id\":4}",
         JSONRPC_E_METHOD, "4", false},
        {"{\"jsonrpc\":\"2.0\",\"method\":\"a\",\"id\":true}", JSONRPC_E_ID,
         NULL, false},
        {"{\"jsonrpc\":\"2.0\",\"method\":\"a\",\"id\":[1]}", JSONRPC_E_ID,
         NULL, false},
        {"{\"jsonrpc\":\"2.0\",\"method\":\"a\",\"id\":{}}", JSONRPC_E_ID, NULL,
         false},
        {"{\"jsonrpc\":\"2.0\",\"method\":\"a\",\"params\":3,\"id\":5}",
         JSONRPC_E_PARAMS, "5", false},
        {"{\"jsonrpc\":\"2.0\",\"method\":\"a\",\"params\":\"s\",\"id\":5}",
         JSONRPC_E_PARAMS, "5", false},
        {"{\"jsonrpc\":\"2.0\",\"method\":\"a\",\"params\":null,\"id\":5}",
         JSONRPC_E_PARAMS, "5", false},
        {"{\"jsonrpc\":\"2.0\",\"method\":\"a\",\"params\":[1],\"id\":6}",
         JSONRPC_E_PARAMS_BY_POSITION, "6", false},
        {"{\"jsonrpc\":\"2.0\",\"method\":\"a\",\"params\":[1]}",
         JSONRPC_E_PARAMS_BY_POSITION, NULL, true},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct jsonrpc_request q;
        struct json_object *doc = NULL;
        int rc = check_request(cases[i].s, JSONRPC_NAMED_PARAMS, &q, &doc);
        if (rc != cases[i].rc)
            fail_msg("case %zu: %d (%s)", i, rc, jsonrpc_strerror(rc));
        if (cases[i].id)
            assert_string_equal(
                json_object_to_json_string_ext(q.id, JSON_C_TO_STRING_PLAIN),
                cases[i].id);
        else
            assert_null(q.id);
        assert_int_equal(q.notification, cases[i].notification);
        if (rc == 0)
            assert_string_equal(q.method, "a");
        json_object_put(doc);
    }

    /* Without JSONRPC_NAMED_PARAMS an array is fine. */
    struct jsonrpc_request q;
    struct json_object *doc = NULL;
    assert_int_equal(
        check_request("{\"jsonrpc\":\"2.0\",\"method\":\"a\",\"params\":[1]}",
                      0, &q, &doc),
        0);
    assert_true(json_object_is_type(q.params, json_type_array));
    json_object_put(doc);
}

static void
test_batches(void **state)
{
    (void)state;
    struct jsonrpc_limits lim = jsonrpc_limits_default;
    lim.max_batch = 2;
    static const struct {
        const char *s;
        int rc;
        size_t n;
    } cases[] = {
        {"{}", 0, 1},
        {"5", 0, 1},
        {"[{}]", 1, 1},
        {"[1,2]", 1, 2},
        {"[]", JSONRPC_E_EMPTY_BATCH, 0},
        {"[1,2,3]", JSONRPC_E_BATCH_TOO_LARGE, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct json_object *doc = json_tokener_parse(cases[i].s);
        size_t n = 999;
        assert_int_equal(jsonrpc_batch_check(doc, &lim, &n), cases[i].rc);
        if (cases[i].rc >= 0)
            assert_int_equal(n, cases[i].n);
        else
            assert_int_equal(n, 999); /* not written on error */
        json_object_put(doc);
    }
    size_t n = 0;
    struct json_object *doc = json_tokener_parse("[1,2,3]");
    assert_int_equal(jsonrpc_batch_check(doc, NULL, &n), 1);
    assert_int_equal(n, 3);
    json_object_put(doc);
}

static char *
line_of(struct json_object *msg)
{
    struct buf b;
    buf_init(&b, 1 << 20);
    assert_int_equal(jsonrpc_put_line(&b, msg), 0);
    json_object_put(msg);
    return buf_steal(&b, NULL);
}

static void
test_build(void **state)
{
    (void)state;
    struct json_object *id = json_object_new_string("a/b");
    char *s;

    s = line_of(jsonrpc_response_new(id, json_object_new_int(3)));
    assert_string_equal(s,
                        "{\"jsonrpc\":\"2.0\",\"result\":3,\"id\":\"a/b\"}\n");
    free(s);
    s = line_of(jsonrpc_response_new(NULL, NULL));
    assert_string_equal(s,
                        "{\"jsonrpc\":\"2.0\",\"result\":null,\"id\":null}\n");
    free(s);
    s = line_of(jsonrpc_error_new(id, -32601, "no such method", NULL));
    assert_string_equal(s, "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32601,"
                           "\"message\":\"no such method\",\"data\":{}},"
                           "\"id\":\"a/b\"}\n");
    free(s);
    s = line_of(jsonrpc_error_new(NULL, 1, "m", json_object_new_int(5)));
    assert_string_equal(s, "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":1,"
                           "\"message\":\"m\",\"data\":{\"value\":5}},"
                           "\"id\":null}\n");
    free(s);
    s = line_of(jsonrpc_error_from(NULL, JSONRPC_E_SYNTAX, NULL, 4));
    assert_string_equal(s, "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32700,"
                           "\"message\":\"invalid JSON at byte 4\",\"data\":"
                           "{\"reason\":\"invalid JSON\",\"offset\":4}},"
                           "\"id\":null}\n");
    free(s);
    s = line_of(jsonrpc_error_from(id, JSONRPC_E_DEPTH, NULL, SIZE_MAX));
    assert_non_null(strstr(s, "the limit is 64 levels"));
    assert_null(strstr(s, "offset"));
    free(s);
    s = line_of(jsonrpc_notification_new("event", json_object_new_object()));
    assert_string_equal(
        s, "{\"jsonrpc\":\"2.0\",\"method\":\"event\",\"params\":{}}\n");
    free(s);
    s = line_of(jsonrpc_request_new(9, "torrent.list", NULL));
    assert_string_equal(s, "{\"jsonrpc\":\"2.0\",\"method\":\"torrent.list\","
                           "\"id\":9}\n");
    free(s);
    json_object_put(id);

    /* Past the buffer's cap: nothing appended. */
    struct buf b;
    buf_init(&b, 10);
    struct json_object *m = jsonrpc_request_new(1, "method.too.long", NULL);
    assert_int_equal(jsonrpc_put_line(&b, m), -EMSGSIZE);
    assert_int_equal(b.len, 0);
    json_object_put(m);
    buf_release(&b);
}

static void
test_replies(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        int rc;
    } cases[] = {
        {"{\"jsonrpc\":\"2.0\",\"result\":{},\"id\":1}", 0},
        {"{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32001,\"message\":\"x\","
         "\"data\":{}},\"id\":1}",
         0},
        {"{\"jsonrpc\":\"2.0\",\"method\":\"event\",\"params\":{}}", 0},
        {"{\"jsonrpc\":\"2.0\",\"result\":1}", JSONRPC_E_NOT_RESPONSE},
        {"{\"jsonrpc\":\"2.0\",\"id\":1}", JSONRPC_E_NOT_RESPONSE},
        {"{\"jsonrpc\":\"2.0\",\"result\":1,\"error\":{\"code\":1},\"id\":1}",
         JSONRPC_E_NOT_RESPONSE},
        {"{\"jsonrpc\":\"2.0\",\"error\":{\"message\":\"x\"},\"id\":1}",
         JSONRPC_E_NOT_RESPONSE},
        {"{\"jsonrpc\":\"2.0\",\"error\":5,\"id\":1}", JSONRPC_E_NOT_RESPONSE},
        {"{\"result\":1,\"id\":1}", JSONRPC_E_NOT_RESPONSE},
        {"[]", JSONRPC_E_NOT_RESPONSE},
        {"{\"jsonrpc\":\"2.0\",\"method\":5}", JSONRPC_E_NOT_RESPONSE},
        {"{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"id\":1}",
         JSONRPC_E_NOT_RESPONSE},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct json_object *doc = json_tokener_parse(cases[i].s);
        assert_non_null(doc);
        struct jsonrpc_reply r;
        int rc = jsonrpc_reply_parse(doc, &r);
        if (rc != cases[i].rc)
            fail_msg("case %zu: %d", i, rc);
        json_object_put(doc);
    }

    struct json_object *doc = json_tokener_parse(
        "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32003,\"message\":\"no\","
        "\"data\":{\"a\":1}},\"id\":7}");
    struct jsonrpc_reply r;
    assert_int_equal(jsonrpc_reply_parse(doc, &r), 0);
    assert_true(r.is_error);
    assert_int_equal(r.code, -32003);
    assert_string_equal(r.message, "no");
    assert_non_null(r.data);
    assert_true(jsonrpc_reply_is_for(&r, 7));
    assert_false(jsonrpc_reply_is_for(&r, 8));
    json_object_put(doc);

    doc = json_tokener_parse("{\"jsonrpc\":\"2.0\",\"method\":\"event\"}");
    assert_int_equal(jsonrpc_reply_parse(doc, &r), 0);
    assert_true(r.notification);
    assert_string_equal(r.method, "event");
    assert_null(r.params);
    assert_false(jsonrpc_reply_is_for(&r, 7));
    json_object_put(doc);

    /* A round trip: the request a client builds is one a server takes. */
    struct json_object *req =
        jsonrpc_request_new(11, "torrent.get", json_object_new_object());
    char *line = line_of(req);
    struct jsonrpc_request q;
    assert_int_equal(check_request(line, JSONRPC_NAMED_PARAMS, &q, &doc), 0);
    assert_string_equal(q.method, "torrent.get");
    assert_int_equal(json_object_get_int64(q.id), 11);
    struct json_object *resp = jsonrpc_response_new(q.id, NULL);
    assert_int_equal(jsonrpc_reply_parse(resp, &r), 0);
    assert_true(jsonrpc_reply_is_for(&r, 11));
    json_object_put(resp);
    json_object_put(doc);
    free(line);
}

/* The control API version torrentctl checks before it asks for what a
 * newer daemon knows ("*", torrent.progress: 1.1). */
static void
test_api_at_least(void **state)
{
    (void)state;
    static const struct {
        const char *api;
        unsigned major, minor;
        bool want;
    } cases[] = {
        {"1.2.0", 1, 1, true},  {"1.1.0", 1, 1, true},
        {"1.1", 1, 1, true},    {"1.0", 1, 1, false},
        {"1.0.9", 1, 1, false}, {"2.0", 1, 1, true},
        {"0.9", 1, 1, false},   {"1.10", 1, 2, true},
        {"1.2.0", 1, 3, false}, {"10.0", 9, 99, true},
        {"1", 1, 0, false},     {"1.", 1, 0, false},
        {".1", 0, 1, false},    {"", 0, 0, false},
        {"1.1.", 1, 1, false},  {"1.1.0.0", 1, 1, false},
        {"1.1x", 1, 1, false},  {"v1.1", 1, 1, false},
        {"-1.1", 0, 0, false},  {"1.1 ", 1, 1, false},
        {"99999999999.0", 1, 1, false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        bool got = jsonrpc_api_at_least(cases[i].api, cases[i].major,
                                        cases[i].minor);
        if (got != cases[i].want)
            fail_msg("'%s' >= %u.%u: got %d", cases[i].api, cases[i].major,
                     cases[i].minor, got);
    }
    assert_false(jsonrpc_api_at_least(NULL, 0, 0));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strerror),
        cmocka_unit_test(test_read_errors),
        cmocka_unit_test(test_read_nul),
        cmocka_unit_test(test_read_values),
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_depth),
        cmocka_unit_test(test_too_many_values),
        cmocka_unit_test(test_framing),
        cmocka_unit_test(test_line_too_long),
        cmocka_unit_test(test_truncation),
        cmocka_unit_test(test_bit_flips),
        cmocka_unit_test(test_requests),
        cmocka_unit_test(test_batches),
        cmocka_unit_test(test_build),
        cmocka_unit_test(test_replies),
        cmocka_unit_test(test_api_at_least),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
