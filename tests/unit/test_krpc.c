/* Unit tests for common/krpc: every error value with its offset and reply
 * decision, the BEP 5 examples byte for byte, each message type round
 * trip, truncation at every length, a deterministic bit-flip loop, the
 * lenient informational fields, limits, and allocation failure. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/buf.h"
#include "common/krpc.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* --- allocation failure injection ---
 * bencode.c grows its node array with reallocarray(); this definition,
 * linked into the test program, takes its place.  fail_allocs_in = n makes
 * the n-th call from now fail (0 = never). */
static int fail_allocs_in;

void *
reallocarray(void *p, size_t n, size_t size)
{
    if (fail_allocs_in > 0 && --fail_allocs_in == 0)
        return NULL;
    if (size && n > SIZE_MAX / size)
        return NULL;
    return realloc(p, n * size);
}

static const uint8_t ID_A[20] = "abcdefghij0123456789";
static const uint8_t ID_B[20] = "mnopqrstuvwxyz123456";

/* Parse an exact-size heap copy, so ASan sees any read past the end. */
static int
parse(struct krpc_msg *m, const void *p, size_t n, struct krpc_parse_error *e)
{
    uint8_t *q = malloc(n ? n : 1);
    assert_non_null(q);
    if (n)
        memcpy(q, p, n);
    int r = krpc_parse(m, q, n, e);
    free(q);
    return r;
}

static void
test_strerror(void **state)
{
    (void)state;
    for (int e = 0; e > KRPC_E_MIN; e--) {
        assert_string_not_equal(krpc_strerror(e), "unknown error");
        assert_int_equal(krpc_error_code(e), KRPC_ERR_PROTOCOL);
    }
    assert_string_equal(krpc_strerror(KRPC_E_MIN), "unknown error");
    assert_string_equal(krpc_strerror(1), "unknown error");
    assert_string_equal(krpc_method_name(KRPC_Q_PING), "ping");
    assert_string_equal(krpc_method_name(KRPC_Q_ANNOUNCE_PEER),
                        "announce_peer");
    assert_null(krpc_method_name(KRPC_Q_UNKNOWN));
}

/* --- errors --- */

#define ID20 "20:abcdefghij0123456789"
#define H20 "20:mnopqrstuvwxyz123456"

static const struct {
    const char *in;
    int err;
    const char *at; /* the offset is where this text starts; NULL: 0 */
    bool can_reply;
} error_cases[] = {
    {"x", KRPC_E_BENCODE, NULL, false},
    {"d1:t2:aa", KRPC_E_BENCODE, NULL, false},
    {"le", KRPC_E_NOT_DICT, NULL, false},
    {"i5e", KRPC_E_NOT_DICT, NULL, false},
    {"d1:y1:qe", KRPC_E_TID, NULL, false},
    {"d1:t0:1:y1:qe", KRPC_E_TID, "0:", false},
    {"d1:ti1e1:y1:qe", KRPC_E_TID, "i1e", false},
    {"d1:t17:aaaaaaaaaaaaaaaaa1:y1:qe", KRPC_E_TID, "17:", false},
    {"d1:t2:aae", KRPC_E_TYPE, NULL, false},
    {"d1:t2:aa1:y1:xe", KRPC_E_TYPE, "1:x", false},
    {"d1:t2:aa1:yi1ee", KRPC_E_TYPE, "i1e", false},
    {"d1:t2:aa1:y1:qe", KRPC_E_METHOD, NULL, true},
    {"d1:qi1e1:t2:aa1:y1:qe", KRPC_E_METHOD, NULL, true},
    {"d1:q4:ping1:t2:aa1:y1:qe", KRPC_E_ARGS, NULL, true},
    {"d1:ali1ee1:q4:ping1:t2:aa1:y1:qe", KRPC_E_ARGS, NULL, true},
    {"d1:ade1:q4:ping1:t2:aa1:y1:qe", KRPC_E_ID, "de", true},
    {"d1:ad2:id3:abce1:q4:ping1:t2:aa1:y1:qe", KRPC_E_ID, "3:abc", true},
    {"d1:ad2:id21:abcdefghij0123456789xe1:q4:ping1:t2:aa1:y1:qe", KRPC_E_ID,
     "21:", true},
    {"d1:ad2:id" ID20 "e1:q9:find_node1:t2:aa1:y1:qe", KRPC_E_TARGET, "d2:id",
     true},
    {"d1:ad2:id" ID20 "6:target3:abce1:q9:find_node1:t2:aa1:y1:qe",
     KRPC_E_TARGET, "3:abc", true},
    {"d1:ad2:id" ID20 "e1:q9:get_peers1:t2:aa1:y1:qe", KRPC_E_TARGET, "d2:id",
     true},
    {"d1:ad2:id" ID20 "9:info_hash" H20 "e1:q13:announce_peer1:t2:aa1:y1:qe",
     KRPC_E_PORT, "d2:id", true},
    {"d1:ad2:id" ID20 "9:info_hash" H20
     "4:porti0e5:token2:xxe1:q13:announce_peer1:t2:aa1:y1:qe",
     KRPC_E_PORT, "i0e", true},
    {"d1:ad2:id" ID20 "12:implied_porti1e9:info_hash" H20
     "4:porti65536e5:token2:xxe1:q13:announce_peer1:t2:aa1:y1:qe",
     KRPC_E_PORT, "i65536e", true},
    {"d1:ad2:id" ID20 "9:info_hash" H20
     "4:porti80ee1:q13:announce_peer1:t2:aa1:y1:qe",
     KRPC_E_TOKEN, "d2:id", true},
    {"d1:ad2:id" ID20 "9:info_hash" H20
     "4:porti80e5:token0:e1:q13:announce_peer1:t2:aa1:y1:qe",
     KRPC_E_TOKEN, "0:e", true},
    {"d1:ad2:id" ID20 "9:info_hash" H20 "4:porti80e5:token65:"
     "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
     "e1:q13:announce_peer1:t2:aa1:y1:qe",
     KRPC_E_TOKEN, "65:", true},
    {"d1:t2:aa1:y1:re", KRPC_E_RESPONSE, NULL, false},
    {"d1:rle1:t2:aa1:y1:re", KRPC_E_RESPONSE, NULL, false},
    {"d1:rd5:nodes0:e1:t2:aa1:y1:re", KRPC_E_ID, "d5:", false},
    {"d1:rd2:id" ID20 "5:nodes25:xxxxxxxxxxxxxxxxxxxxxxxxxe1:t2:aa1:y1:re",
     KRPC_E_NODES, "25:", false},
    {"d1:rd2:id" ID20 "5:nodesi1ee1:t2:aa1:y1:re", KRPC_E_NODES, "i1e", false},
    {"d1:rd2:id" ID20 "6:nodes637:xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
     "e1:t2:aa1:y1:re",
     KRPC_E_NODES, "37:", false},
    {"d1:rd2:id" ID20 "6:values6:xxxxxxe1:t2:aa1:y1:re", KRPC_E_VALUES,
     "6:xxxxxx", false},
    {"d1:rd2:id" ID20 "6:valuesl6:xxxxxx5:xxxxxee1:t2:aa1:y1:re", KRPC_E_VALUES,
     "5:", false},
    {"d1:rd2:id" ID20 "6:valuesli1eee1:t2:aa1:y1:re", KRPC_E_VALUES, "i1e",
     false},
    {"d1:rd2:id" ID20 "5:token0:e1:t2:aa1:y1:re", KRPC_E_TOKEN, "0:e", false},
    {"d1:t2:aa1:y1:ee", KRPC_E_ERROR, NULL, false},
    {"d1:ei201e1:t2:aa1:y1:ee", KRPC_E_ERROR, "i201e", false},
    {"d1:ele1:t2:aa1:y1:ee", KRPC_E_ERROR, "le", false},
    {"d1:el3:abce1:t2:aa1:y1:ee", KRPC_E_ERROR, "3:abc", false},
    {"d1:e3:abc1:t2:aa1:y1:ee", KRPC_E_ERROR, "3:abc", false},
};

static void
test_errors(void **state)
{
    (void)state;
    bool seen[-KRPC_E_MIN] = {false};
    for (size_t i = 0; i < ARRAY_SIZE(error_cases); i++) {
        const char *in = error_cases[i].in;
        struct krpc_msg m;
        struct krpc_parse_error e;
        memset(&e, 0xaa, sizeof(e));
        int r = parse(&m, in, strlen(in), &e);
        if (r != error_cases[i].err)
            fail_msg("case %zu (%s): %d (%s), want %d", i, in, r,
                     krpc_strerror(r), error_cases[i].err);
        size_t want_off = 0;
        if (error_cases[i].at) {
            const char *p = strstr(in, error_cases[i].at);
            assert_non_null(p);
            want_off = (size_t)(p - in);
        }
        if (r != KRPC_E_BENCODE && e.offset != want_off)
            fail_msg("case %zu (%s): offset %zu, want %zu", i, in, e.offset,
                     want_off);
        assert_true(e.offset <= strlen(in));
        assert_int_equal(e.can_reply, error_cases[i].can_reply);
        assert_int_equal(e.code, KRPC_ERR_PROTOCOL);
        if (e.can_reply) {
            assert_int_equal(e.tid_len, 2);
            assert_memory_equal(e.tid, "aa", 2);
        }
        seen[-r] = true;
    }

    /* Too large: one byte over, whatever it holds. */
    uint8_t *big = calloc(1, KRPC_MAX_DATAGRAM + 1);
    assert_non_null(big);
    struct krpc_msg m;
    struct krpc_parse_error e;
    assert_int_equal(parse(&m, big, KRPC_MAX_DATAGRAM + 1, &e),
                     KRPC_E_TOO_LARGE);
    assert_int_equal(e.offset, KRPC_MAX_DATAGRAM);
    assert_false(e.can_reply);
    seen[-KRPC_E_TOO_LARGE] = true;
    free(big);

    /* Out of memory inside bencode. */
    const char *ping = "d1:ad2:id" ID20 "e1:q4:ping1:t2:aa1:y1:qe";
    fail_allocs_in = 1;
    assert_int_equal(parse(&m, ping, strlen(ping), &e), KRPC_E_NOMEM);
    fail_allocs_in = 0;
    assert_false(e.can_reply);
    seen[-KRPC_E_NOMEM] = true;
    assert_int_equal(parse(&m, ping, strlen(ping), NULL), 0);

    /* A bencode offset is bencode's. */
    assert_int_equal(parse(&m, "d1:tx", 5, &e), KRPC_E_BENCODE);
    assert_int_equal(e.offset, 4);

    for (int i = 1; i < -KRPC_E_MIN; i++)
        if (!seen[i])
            fail_msg("error %d (%s) has no test", -i, krpc_strerror(-i));
}

/* --- BEP 5 examples, both ways --- */

static const char *const bep5[] = {
    "d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe",
    "d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:re",
    "d1:ad2:id20:abcdefghij01234567896:target20:mnopqrstuvwxyz123456e"
    "1:q9:find_node1:t2:aa1:y1:qe",
    "d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz123456e"
    "1:q9:get_peers1:t2:aa1:y1:qe",
    "d1:ad2:id20:abcdefghij012345678912:implied_porti1e"
    "9:info_hash20:mnopqrstuvwxyz1234564:porti6881e5:token8:aoeusnthe"
    "1:q13:announce_peer1:t2:aa1:y1:qe",
    "d1:eli201e23:A Generic Error Ocurrede1:t2:aa1:y1:ee",
    "d1:rd2:id20:abcdefghij01234567895:token8:aoeusnth"
    "6:valuesl6:axje.u6:idhtnmee1:t2:aa1:y1:re",
};

static void
test_bep5_examples(void **state)
{
    (void)state;
    for (size_t i = 0; i < ARRAY_SIZE(bep5); i++) {
        struct krpc_msg m;
        assert_int_equal(parse(&m, bep5[i], strlen(bep5[i]), NULL), 0);
        struct buf b;
        buf_init(&b, KRPC_MAX_DATAGRAM);
        int n = krpc_encode(&b, &m);
        assert_int_equal(n, (int)strlen(bep5[i]));
        assert_memory_equal(b.data, bep5[i], (size_t)n);
        buf_release(&b);
    }
    struct krpc_msg m;
    assert_int_equal(parse(&m, bep5[4], strlen(bep5[4]), NULL), 0);
    assert_int_equal(m.type, KRPC_QUERY);
    assert_int_equal(m.method, KRPC_Q_ANNOUNCE_PEER);
    assert_true(m.implied_port);
    assert_int_equal(m.port, 6881);
    assert_int_equal(m.token_len, 8);
    assert_memory_equal(m.target, ID_B, 20);
    assert_memory_equal(m.id, ID_A, 20);
    assert_int_equal(parse(&m, bep5[5], strlen(bep5[5]), NULL), 0);
    assert_int_equal(m.type, KRPC_ERROR_MSG);
    assert_int_equal(m.err_code, 201);
    assert_string_equal(m.err_msg, "A Generic Error Ocurred");
    assert_int_equal(parse(&m, bep5[6], strlen(bep5[6]), NULL), 0);
    assert_int_equal(m.n_values, 2);
    assert_int_equal(m.values[0].family, 4);
    assert_memory_equal(m.values[0].addr, "axje", 4);
    assert_int_equal(m.values[0].port, ('.' << 8) | 'u');
}

/* --- round trips of messages we build --- */

static void
fill_node(struct krpc_node *n, int i, int family)
{
    memset(n, 0, sizeof(*n));
    for (int k = 0; k < 20; k++)
        n->id[k] = (uint8_t)(i * 7 + k);
    n->addr.family = (uint8_t)family;
    for (int k = 0; k < (family == 4 ? 4 : 16); k++)
        n->addr.addr[k] = (uint8_t)(i + k + 1);
    n->addr.port = (uint16_t)(1000 + i);
}

/* The set of messages the tests use: one of every kind. */
static size_t
make_messages(struct krpc_msg *out)
{
    static const uint8_t tid[KRPC_TID_MAX] = {0, 1, 0xfe, 0xff, 'x'};
    size_t n = 0;
    struct krpc_msg *m;

    for (int meth = 0; meth < KRPC_Q_UNKNOWN; meth++) {
        m = &out[n++];
        krpc_msg_init(m, KRPC_QUERY, tid, 4, ID_A);
        m->method = (uint8_t)meth;
        memcpy(m->target, ID_B, 20);
        if (meth != KRPC_Q_PING)
            m->has |= KRPC_HAS_TARGET;
        if (meth == KRPC_Q_ANNOUNCE_PEER) {
            m->port = 51413;
            m->has |= KRPC_HAS_PORT | KRPC_HAS_TOKEN;
            memcpy(m->token, "tok12345", 8);
            m->token_len = 8;
        }
        if (meth == KRPC_Q_FIND_NODE) {
            m->has |= KRPC_HAS_WANT;
            m->want = KRPC_WANT_N4 | KRPC_WANT_N6;
        }
        m->ro = meth == KRPC_Q_GET_PEERS;
        memcpy(m->v, "TD\0\1", 4);
        m->v_len = 4;
        m->has |= KRPC_HAS_V;
    }
    /* announce with implied_port and no port */
    m = &out[n++];
    krpc_msg_init(m, KRPC_QUERY, tid, 1, ID_A);
    m->method = KRPC_Q_ANNOUNCE_PEER;
    memcpy(m->target, ID_B, 20);
    m->implied_port = true;
    m->has |= KRPC_HAS_TARGET | KRPC_HAS_TOKEN;
    memset(m->token, 'T', KRPC_TOKEN_MAX);
    m->token_len = KRPC_TOKEN_MAX;

    /* responses: ping (with ip), nodes + nodes6, values + token */
    m = &out[n++];
    krpc_msg_init(m, KRPC_RESPONSE, tid, KRPC_TID_MAX, ID_B);
    m->has |= KRPC_HAS_IP;
    m->ip.family = 4;
    memcpy(m->ip.addr, "\x7c\x1f\x4b\x15", 4);
    m->ip.port = 6881;
    m = &out[n++];
    krpc_msg_init(m, KRPC_RESPONSE, tid, 2, ID_B);
    m->has |= KRPC_HAS_NODES | KRPC_HAS_NODES6 | KRPC_HAS_IP;
    m->n_nodes = 8;
    m->n_nodes6 = 8;
    for (int i = 0; i < 8; i++) {
        fill_node(&m->nodes[i], i, 4);
        fill_node(&m->nodes6[i], i + 50, 6);
    }
    m->ip.family = 6;
    memset(m->ip.addr, 0x20, 16);
    m->ip.port = 1;
    m = &out[n++];
    krpc_msg_init(m, KRPC_RESPONSE, tid, 2, ID_B);
    m->has |= KRPC_HAS_VALUES | KRPC_HAS_TOKEN;
    m->n_values = 20;
    for (int i = 0; i < 20; i++) {
        struct krpc_node t;
        fill_node(&t, i, i % 3 ? 4 : 6);
        m->values[i] = t.addr;
    }
    memcpy(m->token, "\0\1\2\3", 4);
    m->token_len = 4;
    /* an empty nodes list and an empty values list */
    m = &out[n++];
    krpc_msg_init(m, KRPC_RESPONSE, tid, 2, ID_B);
    m->has |= KRPC_HAS_NODES | KRPC_HAS_VALUES;
    /* errors */
    m = &out[n++];
    krpc_msg_init(m, KRPC_ERROR_MSG, tid, 2, NULL);
    m->err_code = KRPC_ERR_METHOD;
    memcpy(m->err_msg, "Method Unknown", 14);
    m->err_msg_len = 14;
    m = &out[n++];
    krpc_msg_init(m, KRPC_ERROR_MSG, tid, 3, NULL);
    m->err_code = -5;
    return n;
}

#define N_MSGS 16

static void
assert_same_msg(const struct krpc_msg *a, const struct krpc_msg *b)
{
    assert_int_equal(a->type, b->type);
    assert_int_equal(a->tid_len, b->tid_len);
    assert_memory_equal(a->tid, b->tid, a->tid_len);
    assert_int_equal(a->v_len, b->v_len);
    assert_memory_equal(a->v, b->v, a->v_len);
    assert_int_equal(a->ro, b->ro);
    assert_int_equal(a->has & KRPC_HAS_IP, b->has & KRPC_HAS_IP);
    if (a->has & KRPC_HAS_IP)
        assert_true(krpc_addr_equal(&a->ip, &b->ip));
    if (a->type == KRPC_ERROR_MSG) {
        assert_int_equal(a->err_code, b->err_code);
        assert_int_equal(a->err_msg_len, b->err_msg_len);
        assert_memory_equal(a->err_msg, b->err_msg, a->err_msg_len);
        return;
    }
    assert_memory_equal(a->id, b->id, 20);
    if (a->type == KRPC_QUERY) {
        assert_int_equal(a->method, b->method);
        if (a->method != KRPC_Q_PING)
            assert_memory_equal(a->target, b->target, 20);
        if (a->method == KRPC_Q_ANNOUNCE_PEER) {
            assert_int_equal(a->port, b->port);
            assert_int_equal(a->implied_port, b->implied_port);
            assert_int_equal(a->token_len, b->token_len);
            assert_memory_equal(a->token, b->token, a->token_len);
        }
        assert_int_equal(a->want, b->want);
        return;
    }
    assert_int_equal(a->has & (KRPC_HAS_NODES | KRPC_HAS_NODES6 |
                               KRPC_HAS_VALUES | KRPC_HAS_TOKEN),
                     b->has & (KRPC_HAS_NODES | KRPC_HAS_NODES6 |
                               KRPC_HAS_VALUES | KRPC_HAS_TOKEN));
    assert_int_equal(a->n_nodes, b->n_nodes);
    assert_int_equal(a->n_nodes6, b->n_nodes6);
    assert_int_equal(a->n_values, b->n_values);
    for (int i = 0; i < a->n_nodes; i++) {
        assert_memory_equal(a->nodes[i].id, b->nodes[i].id, 20);
        assert_true(krpc_addr_equal(&a->nodes[i].addr, &b->nodes[i].addr));
    }
    for (int i = 0; i < a->n_nodes6; i++) {
        assert_memory_equal(a->nodes6[i].id, b->nodes6[i].id, 20);
        assert_true(krpc_addr_equal(&a->nodes6[i].addr, &b->nodes6[i].addr));
    }
    for (int i = 0; i < a->n_values; i++)
        assert_true(krpc_addr_equal(&a->values[i], &b->values[i]));
    assert_int_equal(a->token_len, b->token_len);
    assert_memory_equal(a->token, b->token, a->token_len);
}

static void
test_round_trip(void **state)
{
    (void)state;
    struct krpc_msg *msgs = calloc(N_MSGS, sizeof(*msgs));
    struct krpc_msg *m2 = malloc(sizeof(*m2));
    assert_non_null(msgs);
    assert_non_null(m2);
    size_t n = make_messages(msgs);
    assert_true(n <= N_MSGS);
    for (size_t i = 0; i < n; i++) {
        struct buf b;
        buf_init(&b, KRPC_MAX_DATAGRAM);
        int len = krpc_encode(&b, &msgs[i]);
        assert_true(len > 0);
        assert_int_equal((size_t)len, b.len);
        assert_int_equal(parse(m2, b.data, b.len, NULL), 0);
        assert_same_msg(&msgs[i], m2);
        /* And again from the parsed form: the same bytes. */
        struct buf b2;
        buf_init(&b2, KRPC_MAX_DATAGRAM);
        assert_int_equal(krpc_encode(&b2, m2), len);
        assert_memory_equal(b.data, b2.data, b.len);
        buf_release(&b);
        buf_release(&b2);
    }
    free(m2);
    free(msgs);
}

static void
test_encode_errors(void **state)
{
    (void)state;
    struct krpc_msg *m = calloc(1, sizeof(*m));
    assert_non_null(m);
    struct buf b;
    buf_init(&b, KRPC_MAX_DATAGRAM);
    krpc_msg_init(m, KRPC_QUERY, NULL, 0, ID_A);
    assert_int_equal(krpc_encode(&b, m), -EINVAL); /* no tid */
    krpc_msg_init(m, KRPC_QUERY, (const uint8_t *)"aa", 2, ID_A);
    m->method = KRPC_Q_UNKNOWN;
    assert_int_equal(krpc_encode(&b, m), -EINVAL);
    m->method = KRPC_Q_ANNOUNCE_PEER; /* no token */
    assert_int_equal(krpc_encode(&b, m), -EINVAL);
    m->token_len = 1; /* port 0 without implied_port */
    assert_int_equal(krpc_encode(&b, m), -EINVAL);
    m->port = 1;
    assert_true(krpc_encode(&b, m) > 0);
    krpc_msg_init(m, KRPC_RESPONSE, (const uint8_t *)"aa", 2, ID_A);
    m->n_nodes = KRPC_MAX_NODES + 1;
    assert_int_equal(krpc_encode(&b, m), -EINVAL);
    m->n_nodes = 1;
    m->has = KRPC_HAS_NODES; /* family 0 */
    assert_int_equal(krpc_encode(&b, m), -EINVAL);
    m->has = KRPC_HAS_IP;
    assert_int_equal(krpc_encode(&b, m), -EINVAL);
    buf_release(&b);

    /* Past the buffer's cap: -EMSGSIZE, nothing left behind. */
    krpc_msg_init(m, KRPC_RESPONSE, (const uint8_t *)"aa", 2, ID_A);
    m->has = KRPC_HAS_NODES;
    m->n_nodes = KRPC_MAX_NODES;
    for (int i = 0; i < KRPC_MAX_NODES; i++)
        fill_node(&m->nodes[i], i, 4);
    buf_init(&b, 100);
    assert_int_equal(buf_append(&b, "xy", 2), 0);
    assert_int_equal(krpc_encode(&b, m), -EMSGSIZE);
    assert_int_equal(b.len, 2);
    buf_release(&b);
    /* The most nodes fit in a datagram. */
    buf_init(&b, KRPC_MAX_DATAGRAM);
    assert_true(krpc_encode(&b, m) > 0);
    struct krpc_msg *m2 = malloc(sizeof(*m2));
    assert_non_null(m2);
    assert_int_equal(parse(m2, b.data, b.len, NULL), 0);
    assert_int_equal(m2->n_nodes, KRPC_MAX_NODES);
    buf_release(&b);
    /* One more is refused by the parser. */
    buf_init(&b, 4096);
    uint8_t nodes[(KRPC_MAX_NODES + 1) * KRPC_NODE4_LEN];
    memset(nodes, 'n', sizeof(nodes));
    assert_int_equal(buf_puts(&b, "d1:rd2:id" ID20 "5:nodes"), 0);
    assert_int_equal(buf_printf(&b, "%zu:", sizeof(nodes)), 0);
    assert_int_equal(buf_append(&b, nodes, sizeof(nodes)), 0);
    assert_int_equal(buf_puts(&b, "e1:t2:aa1:y1:re"), 0);
    struct krpc_parse_error e;
    assert_int_equal(parse(m2, b.data, b.len, &e), KRPC_E_NODES);
    buf_release(&b);
    free(m2);
    free(m);
}

/* --- lenient fields and unknown methods --- */

static void
test_lenient(void **state)
{
    (void)state;
    struct krpc_msg m;
    /* Bad v, ip, ro and want are ignored. */
    const char *q = "d1:ad2:id" ID20 "4:want2:n44:wantle"
                    "e2:ip3:abc1:q4:ping2:roi2e1:t2:aa1:v17:"
                    "xxxxxxxxxxxxxxxxx1:y1:qe";
    assert_int_equal(parse(&m, q, strlen(q), NULL), 0);
    assert_int_equal(m.has & (KRPC_HAS_V | KRPC_HAS_IP | KRPC_HAS_WANT), 0);
    assert_false(m.ro);
    /* Good ones are kept; unknown want entries ignored; unsorted keys. */
    q = "d1:y1:q1:t2:aa1:q9:find_node1:ad6:target" H20 "2:id" ID20
        "4:wantl2:n62:xx2:n4ee2:ip6:\x01\x02\x03\x04\x1a\xe1"
        "2:roi1e1:v4:LT\x01\x02"
        "e";
    assert_int_equal(parse(&m, q, strlen(q), NULL), 0);
    assert_int_equal(m.method, KRPC_Q_FIND_NODE);
    assert_int_equal(m.want, KRPC_WANT_N4 | KRPC_WANT_N6);
    assert_true(m.ro);
    assert_int_equal(m.ip.family, 4);
    assert_int_equal(m.ip.port, 6881);
    assert_int_equal(m.v_len, 4);
    assert_memory_equal(m.v, "LT\x01\x02", 4);
    /* An unknown method parses, with its target. */
    q = "d1:ad2:id" ID20 "6:target" H20 "e1:q3:get1:t1:z1:y1:qe";
    assert_int_equal(parse(&m, q, strlen(q), NULL), 0);
    assert_int_equal(m.method, KRPC_Q_UNKNOWN);
    assert_true(m.has & KRPC_HAS_TARGET);
    assert_memory_equal(m.target, ID_B, 20);
    /* ... but still needs an id. */
    struct krpc_parse_error e;
    q = "d1:ade1:q3:get1:t1:z1:y1:qe";
    assert_int_equal(parse(&m, q, strlen(q), &e), KRPC_E_ID);
    assert_true(e.can_reply);
    /* A long error message is cut, implied_port without a port is fine. */
    char big[300];
    int n = snprintf(big, sizeof(big), "d1:eli202e200:%0200de1:t1:z1:y1:ee", 0);
    assert_int_equal(parse(&m, big, (size_t)n, NULL), 0);
    assert_int_equal(m.err_msg_len, KRPC_ERRMSG_MAX);
    assert_int_equal(strlen(m.err_msg), KRPC_ERRMSG_MAX);
    q = "d1:ad2:id" ID20 "12:implied_porti1e9:info_hash" H20
        "5:token1:xe1:q13:announce_peer1:t2:aa1:y1:qe";
    assert_int_equal(parse(&m, q, strlen(q), NULL), 0);
    assert_true(m.implied_port);
    assert_int_equal(m.port, 0);
}

/* --- truncation and bit flips --- */

static void
test_truncation(void **state)
{
    (void)state;
    struct krpc_msg *msgs = calloc(N_MSGS, sizeof(*msgs));
    struct krpc_msg *m2 = malloc(sizeof(*m2));
    assert_non_null(msgs);
    assert_non_null(m2);
    size_t n = make_messages(msgs);
    for (size_t i = 0; i < n; i++) {
        struct buf b;
        buf_init(&b, KRPC_MAX_DATAGRAM);
        assert_true(krpc_encode(&b, &msgs[i]) > 0);
        for (size_t len = 0; len < b.len; len++) {
            struct krpc_parse_error e;
            int r = parse(m2, b.data, len, &e);
            assert_int_equal(r, KRPC_E_BENCODE);
            assert_true(e.offset <= len);
            assert_false(e.can_reply);
        }
        buf_release(&b);
    }
    free(m2);
    free(msgs);
}

static void
test_bitflip(void **state)
{
    (void)state;
    struct krpc_msg *msgs = calloc(N_MSGS, sizeof(*msgs));
    struct krpc_msg *m2 = malloc(sizeof(*m2));
    struct krpc_msg *m3 = malloc(sizeof(*m3));
    assert_non_null(msgs);
    assert_non_null(m2);
    assert_non_null(m3);
    size_t n = make_messages(msgs);
    unsigned ok = 0, bad = 0;
    for (size_t i = 0; i < n; i++) {
        struct buf b;
        buf_init(&b, KRPC_MAX_DATAGRAM);
        assert_true(krpc_encode(&b, &msgs[i]) > 0);
        for (size_t bit = 0; bit < b.len * 8; bit++) {
            b.data[bit / 8] ^= (char)(1 << (bit % 8));
            struct krpc_parse_error e;
            int r = parse(m2, b.data, b.len, &e);
            if (r < 0) {
                assert_true(r > KRPC_E_MIN);
                assert_true(e.offset <= b.len);
                bad++;
            } else {
                ok++;
                /* What parses re-encodes to something that parses the
                 * same (unknown methods aside). */
                struct buf b2;
                buf_init(&b2, KRPC_MAX_DATAGRAM);
                int len = krpc_encode(&b2, m2);
                if (m2->type == KRPC_QUERY && m2->method == KRPC_Q_UNKNOWN) {
                    assert_int_equal(len, -EINVAL);
                } else {
                    assert_true(len > 0);
                    assert_int_equal(parse(m3, b2.data, b2.len, NULL), 0);
                    assert_same_msg(m2, m3);
                }
                buf_release(&b2);
            }
            b.data[bit / 8] ^= (char)(1 << (bit % 8));
        }
        buf_release(&b);
    }
    assert_true(ok > 0 && bad > 0);
    free(m3);
    free(m2);
    free(msgs);
}

static void
test_compact(void **state)
{
    (void)state;
    struct krpc_addr a = {.family = 6, .port = 0xabcd}, b;
    memset(a.addr, 0x11, 16);
    uint8_t out[KRPC_NODE6_LEN];
    assert_int_equal(krpc_put_compact_addr(out, &a), 18);
    assert_int_equal(out[16], 0xab);
    assert_true(krpc_get_compact_addr(&b, out, 18));
    assert_true(krpc_addr_equal(&a, &b));
    assert_false(krpc_get_compact_addr(&b, out, 17));
    a.family = 5;
    assert_int_equal(krpc_put_compact_addr(out, &a), 0);
    struct krpc_node n;
    fill_node(&n, 3, 4);
    assert_int_equal(krpc_put_compact_node(out, &n), 26);
    struct krpc_node n2;
    assert_true(krpc_get_compact_node(&n2, out, 26));
    assert_memory_equal(n2.id, n.id, 20);
    assert_true(krpc_addr_equal(&n.addr, &n2.addr));
    assert_false(krpc_get_compact_node(&n2, out, 25));
    struct krpc_addr c = n.addr;
    c.port++;
    assert_false(krpc_addr_equal(&n.addr, &c));
    assert_true(krpc_addr_same_ip(&n.addr, &c));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strerror),      cmocka_unit_test(test_errors),
        cmocka_unit_test(test_bep5_examples), cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_encode_errors), cmocka_unit_test(test_lenient),
        cmocka_unit_test(test_truncation),    cmocka_unit_test(test_bitflip),
        cmocka_unit_test(test_compact),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
