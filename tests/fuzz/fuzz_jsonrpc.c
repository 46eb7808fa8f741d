/* fuzz_jsonrpc — libFuzzer target for common/jsonrpc.
 *
 * The first byte chooses how the rest is cut into reads (a seed for the
 * piece sizes) and whether small limits are used.  The rest goes through
 * a jsonrpc_reader twice: whole, and cut into pieces.  Both must give the
 * same lines with the same results and offsets, and the same values
 * (compared as serialised JSON).  Every value is then checked as a request
 * (and each element of an array as a batch entry) and as a reply, an
 * answer is built for it, and the answer's line must be valid UTF-8 with a
 * single '\n', at its end, and read back as one value.  Any broken
 * invariant abort()s.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "common/buf.h"
#include "common/jsonrpc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_MAX_LINES 4096

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "fuzz_jsonrpc: %s (line %d)\n", #cond, __LINE__);  \
            abort();                                                           \
        }                                                                      \
    } while (0)

struct outcome {
    int rc;
    size_t off;
    char *json; /* owned: the value serialised, for rc == 1 */
};

struct run {
    struct outcome lines[FUZZ_MAX_LINES];
    size_t n;
};

static char *
serialise(struct json_object *o)
{
    const char *s = json_object_to_json_string_ext(
        o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    return strdup(s ? s : "");
}

static void
record(struct run *run, int rc, size_t off, struct json_object *doc)
{
    CHECK(rc != 0);
    CHECK(rc == 1 || (rc < 0 && rc > JSONRPC_E_MIN));
    if (run->n == FUZZ_MAX_LINES) {
        json_object_put(doc);
        return;
    }
    struct outcome *o = &run->lines[run->n++];
    o->rc = rc;
    o->off = rc < 0 && rc != JSONRPC_E_EMPTY ? off : 0;
    o->json = rc == 1 ? serialise(doc) : NULL;
    json_object_put(doc);
}

/* Read data[0..size) in pieces whose sizes come from seed (0: whole). */
static void
read_all(const uint8_t *data, size_t size, const struct jsonrpc_limits *lim,
         uint32_t seed, struct run *run)
{
    struct jsonrpc_reader r;
    if (jsonrpc_reader_init(&r, lim) < 0)
        abort();
    size_t pos = 0;
    uint32_t x = seed | 1;
    while (pos < size) {
        size_t k = size - pos;
        if (seed) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            size_t piece = 1 + x % 17;
            if (piece < k)
                k = piece;
        }
        while (k > 0) {
            size_t used = SIZE_MAX, off = SIZE_MAX;
            struct json_object *doc = NULL;
            int rc = jsonrpc_reader_feed(&r, data + pos, k, &used, &doc, &off);
            CHECK(used <= k);
            pos += used;
            k -= used;
            if (rc == 0) {
                CHECK(k == 0);
                break;
            }
            CHECK(used > 0);
            if (rc < 0)
                CHECK(off != SIZE_MAX);
            record(run, rc, off, doc);
        }
    }
    bool pending = jsonrpc_reader_pending(&r);
    struct json_object *doc = NULL;
    size_t off = SIZE_MAX;
    int rc = jsonrpc_reader_finish(&r, &doc, &off);
    if (pending && rc != JSONRPC_E_EMPTY)
        record(run, rc, off, doc);
    CHECK(!jsonrpc_reader_pending(&r));
    jsonrpc_reader_release(&r);
}

/* The line of an answer: valid UTF-8, one '\n' at the end, one value. */
static void
check_line(struct json_object *msg)
{
    if (!msg)
        return; /* out of memory */
    struct buf b;
    buf_init(&b, 1u << 26);
    int r = jsonrpc_put_line(&b, msg);
    json_object_put(msg);
    if (r < 0) {
        buf_release(&b);
        return;
    }
    CHECK(b.len > 0 && b.data[b.len - 1] == '\n');
    CHECK(memchr(b.data, '\n', b.len) == b.data + b.len - 1);
    CHECK(jsonrpc_utf8_valid(b.data, b.len, NULL));
    struct jsonrpc_reader rd;
    if (jsonrpc_reader_init(&rd, NULL) < 0)
        abort();
    size_t used;
    struct json_object *back = NULL;
    CHECK(jsonrpc_reader_feed(&rd, b.data, b.len, &used, &back, NULL) == 1);
    CHECK(used == b.len);
    struct jsonrpc_reply rep;
    CHECK(jsonrpc_reply_parse(back, &rep) == 0);
    json_object_put(back);
    jsonrpc_reader_release(&rd);
    buf_release(&b);
}

static void
answer(struct json_object *msg)
{
    struct jsonrpc_request q;
    int r = jsonrpc_request_parse(msg, JSONRPC_NAMED_PARAMS, &q);
    CHECK(r <= 0 && r > JSONRPC_E_MIN);
    if (r == 0) {
        CHECK(q.method != NULL);
        CHECK(!q.params || json_object_is_type(q.params, json_type_object));
        check_line(jsonrpc_response_new(q.id, json_object_get(q.params)));
        check_line(jsonrpc_error_new(q.id, -32601, q.method,
                                     json_object_get(q.params)));
    } else {
        CHECK(!q.notification || r == JSONRPC_E_PARAMS_BY_POSITION);
        check_line(jsonrpc_error_from(q.id, r, NULL, SIZE_MAX));
    }
    struct jsonrpc_reply rep;
    if (jsonrpc_reply_parse(msg, &rep) == 0 && !rep.notification)
        (void)jsonrpc_reply_is_for(&rep, 1);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct run whole, split;
    static const struct jsonrpc_limits small = {
        .max_line = 64,
        .max_depth = 4,
        .max_values = 16,
        .max_batch = 4,
    };
    if (size < 1 || size > (1u << 20))
        return 0;
    const struct jsonrpc_limits *lim = data[0] & 0x80 ? &small : NULL;
    uint32_t seed = data[0] & 0x7f;
    data++;
    size--;

    whole.n = split.n = 0;
    read_all(data, size, lim, 0, &whole);
    read_all(data, size, lim, seed + 1, &split);
    CHECK(whole.n == split.n);
    for (size_t i = 0; i < whole.n; i++) {
        struct outcome *a = &whole.lines[i], *b = &split.lines[i];
        if (a->rc != b->rc || a->off != b->off)
            fprintf(stderr, "line %zu: whole %d at %zu, split %d at %zu\n", i,
                    a->rc, a->off, b->rc, b->off);
        CHECK(a->rc == b->rc);
        CHECK(a->off == b->off);
        CHECK((a->json == NULL) == (b->json == NULL));
        if (a->json) {
            if (strcmp(a->json, b->json) != 0)
                fprintf(stderr, "line %zu: whole %s\nsplit %s\n", i, a->json,
                        b->json);
            CHECK(strcmp(a->json, b->json) == 0);
            struct json_object *doc = json_tokener_parse(a->json);
            size_t n = 0;
            int rb = jsonrpc_batch_check(doc, lim, &n);
            if (rb == 1) {
                CHECK(n == json_object_array_length(doc));
                for (size_t k = 0; k < n && k < 64; k++)
                    answer(json_object_array_get_idx(doc, k));
            } else if (rb == 0) {
                CHECK(n == 1);
                answer(doc);
            } else {
                CHECK(rb == JSONRPC_E_EMPTY_BATCH ||
                      rb == JSONRPC_E_BATCH_TOO_LARGE);
                check_line(jsonrpc_error_from(NULL, rb, lim, SIZE_MAX));
            }
            json_object_put(doc);
        } else if (a->rc < 0) {
            check_line(jsonrpc_error_from(NULL, a->rc, lim, a->off));
        }
        free(a->json);
        free(b->json);
    }
    return 0;
}
