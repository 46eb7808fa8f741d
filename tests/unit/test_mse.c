/* Unit tests for common/mse: RC4 against known vectors (OpenSSL's and the
 * built-in one), DH agreement and the range check of public keys,
 * initiator <-> responder round trips in memory (plaintext and RC4, with
 * and without IA, whole, in chunks and a byte at a time, with a lookup
 * callback or an answer to MSE_WANT_SKEY), one test per error value
 * (hand-made peers built from the exported pieces of the protocol hit
 * each limit exactly), truncation at every length, a bit-flip loop over
 * a valid transcript, and allocation failures injected through
 * CRYPTO_set_mem_functions (mse.c allocates with OPENSSL_malloc). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "common/mse.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* --- allocation failure injection (OpenSSL's allocator, which mse.c
 * uses for everything) --- */
static int fail_allocs_in; /* the n-th allocation from now fails; 0: none */
static int allocs_seen;
static bool hooked; /* CRYPTO_set_mem_functions took */

static void *
t_malloc(size_t n, const char *file, int line)
{
    (void)file;
    (void)line;
    allocs_seen++;
    if (fail_allocs_in > 0 && --fail_allocs_in == 0)
        return NULL;
    return malloc(n);
}

static void *
t_realloc(void *p, size_t n, const char *file, int line)
{
    (void)file;
    (void)line;
    allocs_seen++;
    if (fail_allocs_in > 0 && --fail_allocs_in == 0)
        return NULL;
    return realloc(p, n);
}

static void
t_free(void *p, const char *file, int line)
{
    (void)file;
    (void)line;
    free(p);
}

/* --- helpers --- */

static const uint8_t skey1[MSE_HASH_LEN] = "torrent-one-infohash";
static const uint8_t skey2[MSE_HASH_LEN] = "torrent-two-infohash";

static void
priv_make(uint8_t p[MSE_PRIV_LEN], uint8_t seed)
{
    for (int i = 0; i < MSE_PRIV_LEN; i++)
        p[i] = (uint8_t)(seed * 31 + i * 7 + 1);
}

/* A lookup table of HASH('req2', SKEY) for the torrents we "have". */
struct table {
    uint8_t req2[4][MSE_HASH_LEN];
    const uint8_t *skey[4];
    size_t n;
    int calls;
};

static void
table_add(struct table *t, const uint8_t *skey)
{
    assert_int_equal(mse_req2(skey, t->req2[t->n]), 0);
    t->skey[t->n++] = skey;
}

static bool
table_find(void *ud, const uint8_t req2[MSE_HASH_LEN],
           uint8_t ret_skey[MSE_HASH_LEN])
{
    struct table *t = ud;
    t->calls++;
    for (size_t i = 0; i < t->n; i++)
        if (memcmp(t->req2[i], req2, MSE_HASH_LEN) == 0) {
            memcpy(ret_skey, t->skey[i], MSE_HASH_LEN);
            return true;
        }
    return false;
}

/* A byte pipe between the two sides. */
struct pipe {
    uint8_t b[1 << 17];
    size_t len, off;
};

static void
pipe_put(struct pipe *p, const void *d, size_t n)
{
    assert_true(p->len + n <= sizeof(p->b));
    memcpy(p->b + p->len, d, n);
    p->len += n;
}

static void
drain_output(struct mse *m, struct pipe *p)
{
    size_t n;
    const uint8_t *o = mse_output(m, &n);
    if (n) {
        pipe_put(p, o, n);
        mse_output_consumed(m, n);
    }
}

struct end {
    struct mse *m;
    int r; /* last mse_input result */
    bool done;
    uint8_t got[4096]; /* payload received, decrypted */
    size_t got_len;
    struct table *table; /* responder answering MSE_WANT_SKEY */
};

/* Give the side up to chunk bytes from p.  Returns false when nothing
 * moved. */
static bool
feed(struct end *e, struct pipe *p, size_t chunk)
{
    size_t avail = p->len - p->off;
    if (avail == 0 || e->r < 0)
        return false;
    size_t n = avail < chunk ? avail : chunk;
    const uint8_t *in = p->b + p->off;
    p->off += n;
    if (e->done) {
        assert_true(e->got_len + n <= sizeof(e->got));
        mse_decrypt(e->m, e->got + e->got_len, in, n);
        e->got_len += n;
        return true;
    }
    size_t off = 0;
    while (off < n && !e->done && e->r >= 0) {
        size_t used = SIZE_MAX;
        e->r = mse_input(e->m, in + off, n - off, &used);
        if (e->r < 0)
            break;
        assert_true(used <= n - off);
        off += used;
        if (e->r == MSE_WANT_SKEY) {
            uint8_t sk[MSE_HASH_LEN];
            bool found = table_find(e->table, mse_req2_seen(e->m), sk);
            int r = mse_set_skey(e->m, found ? sk : NULL);
            if (r < 0) {
                e->r = r;
                break;
            }
        } else if (e->r == MSE_DONE) {
            e->done = true;
        } else {
            assert_int_equal(e->r, MSE_MORE);
            assert_int_equal(off, n);
        }
    }
    if (e->done && off < n) {
        mse_decrypt(e->m, e->got + e->got_len, in + off, n - off);
        e->got_len += n - off;
    }
    return true;
}

static const char msg_a[] = "payload from the initiator, after the handshake";
static const char msg_b[] = "the responder's payload, right after step 4";

struct rt_result {
    int ra, rb;
    unsigned sel_a, sel_b;
    uint8_t ia[MSE_IA_LEN_MAX];
    size_t ia_len;
};

/* Run a handshake between a and b in memory, chunk bytes per delivery,
 * then send a payload each way (B's in the same delivery as its step 4,
 * A's once it is done). */
static void
round_trip(const struct mse_params *pa, const struct mse_params *pb,
           size_t chunk, struct table *tb, struct rt_result *res)
{
    static struct pipe ab, ba;
    memset(&ab, 0, sizeof(ab));
    memset(&ba, 0, sizeof(ba));
    struct end a = {0}, b = {0};
    b.table = tb;
    assert_int_equal(mse_new(&a.m, pa), 0);
    assert_int_equal(mse_new(&b.m, pb), 0);
    bool sent_a = false, sent_b = false;
    for (int round = 0; round < 200000; round++) {
        drain_output(a.m, &ab);
        drain_output(b.m, &ba);
        if (b.done && !sent_b) {
            uint8_t c[sizeof(msg_b)];
            mse_encrypt(b.m, c, msg_b, sizeof(msg_b));
            pipe_put(&ba, c, sizeof(c));
            sent_b = true;
        }
        if (a.done && !sent_a) {
            uint8_t c[sizeof(msg_a)];
            mse_encrypt(a.m, c, msg_a, sizeof(msg_a));
            pipe_put(&ab, c, sizeof(c));
            sent_a = true;
        }
        bool moved = feed(&b, &ab, chunk);
        moved |= feed(&a, &ba, chunk);
        if (!moved)
            break;
    }
    res->ra = a.r;
    res->rb = b.r;
    res->sel_a = mse_selected(a.m);
    res->sel_b = mse_selected(b.m);
    res->ia_len = 0;
    if (a.done && b.done) {
        assert_int_equal(res->sel_a, res->sel_b);
        size_t n;
        const uint8_t *ia = mse_ia(b.m, &n);
        assert_non_null(ia);
        assert_true(n <= sizeof(res->ia));
        memcpy(res->ia, ia, n);
        res->ia_len = n;
        assert_int_equal(mse_provided(b.m), pa->crypto);
        assert_memory_equal(mse_skey(b.m), pa->skey, MSE_HASH_LEN);
        /* Both payloads arrived, decrypted. */
        assert_int_equal(a.got_len, sizeof(msg_b));
        assert_memory_equal(a.got, msg_b, sizeof(msg_b));
        assert_int_equal(b.got_len, sizeof(msg_a));
        assert_memory_equal(b.got, msg_a, sizeof(msg_a));
        /* Nothing more to say, and no more input taken. */
        size_t n2;
        (void)mse_output(a.m, &n2);
        assert_int_equal(n2, 0);
        (void)mse_output(b.m, &n2);
        assert_int_equal(n2, 0);
        assert_int_equal(mse_input(a.m, "x", 1, NULL), MSE_E_STATE);
        mse_trim(a.m);
        mse_trim(b.m);
        (void)mse_ia(b.m, &n);
        assert_int_equal(n, 0);
        /* The keystreams still run after a trim. */
        uint8_t c[8], d[8];
        mse_encrypt(a.m, c, "12345678", 8);
        mse_decrypt(b.m, d, c, 8);
        assert_memory_equal(d, "12345678", 8);
        if (res->sel_a == MSE_CRYPTO_RC4)
            assert_memory_not_equal(c, "12345678", 8);
        else
            assert_memory_equal(c, "12345678", 8);
    }
    mse_free(a.m);
    mse_free(b.m);
}

static void
params_a(struct mse_params *p, unsigned crypto, const uint8_t *ia,
         size_t ia_len)
{
    memset(p, 0, sizeof(*p));
    p->initiator = true;
    memcpy(p->skey, skey1, MSE_HASH_LEN);
    p->crypto = crypto;
    p->ia = ia;
    p->ia_len = ia_len;
    p->pad_max = MSE_PAD_MAX;
    p->pad_cd_max = MSE_PAD_MAX;
}

static void
params_b(struct mse_params *p, unsigned crypto, struct table *t)
{
    memset(p, 0, sizeof(*p));
    p->crypto = crypto;
    p->find_skey = t ? table_find : NULL;
    p->find_ud = t;
    p->pad_max = MSE_PAD_MAX;
    p->pad_cd_max = MSE_PAD_MAX;
}

/* --- tests --- */

static void
test_strerror(void **state)
{
    (void)state;
    for (int e = -1; e > MSE_E_MIN; e--) {
        const char *s = mse_strerror(e);
        assert_string_not_equal(s, "unknown error");
        for (int f = e - 1; f > MSE_E_MIN; f--)
            assert_string_not_equal(s, mse_strerror(f));
    }
    assert_string_equal(mse_strerror(MSE_E_MIN), "unknown error");
    assert_string_equal(mse_strerror(0), "unknown error");
    assert_string_equal(mse_strerror(-1000), "unknown error");
}

static void
test_rc4_vectors(void **state)
{
    (void)state;
    static const struct {
        const char *key, *plain;
        const uint8_t cipher[16];
    } v[] = {
        {"Key",
         "Plaintext",
         {0xbb, 0xf3, 0x16, 0xe8, 0xd9, 0x40, 0xaf, 0x0a, 0xd3}},
        {"Wiki", "pedia", {0x10, 0x21, 0xbf, 0x04, 0x20}},
        {"Secret",
         "Attack at dawn",
         {0x45, 0xa0, 0x1f, 0x64, 0x5f, 0xc3, 0x5b, 0x38, 0x35, 0x52, 0x54,
          0x4b, 0x9b, 0xf5}},
    };
    for (int builtin = 0; builtin < 2; builtin++) {
        for (size_t i = 0; i < ARRAY_SIZE(v); i++) {
            struct mse_rc4 *c;
            size_t n = strlen(v[i].plain);
            uint8_t out[16];
            assert_int_equal(mse_rc4_new(&c, (const uint8_t *)v[i].key,
                                         strlen(v[i].key), 0, builtin),
                             0);
            mse_rc4_apply(c, out, v[i].plain, n);
            assert_memory_equal(out, v[i].cipher, n);
            mse_rc4_free(c);
        }
    }
    /* OpenSSL's and ours agree after a discard, across odd splits. */
    uint8_t key[20];
    priv_make(key, 9);
    struct mse_rc4 *x, *y;
    assert_int_equal(mse_rc4_new(&x, key, sizeof(key), MSE_DISCARD, false), 0);
    assert_int_equal(mse_rc4_new(&y, key, sizeof(key), MSE_DISCARD, true), 0);
    static uint8_t bx[70000], by[70000];
    memset(bx, 0x5a, sizeof(bx));
    memcpy(by, bx, sizeof(by));
    size_t off = 0;
    for (size_t step = 1; off < sizeof(bx); step = step * 3 + 1) {
        size_t k = step < sizeof(bx) - off ? step : sizeof(bx) - off;
        mse_rc4_apply(x, bx + off, bx + off, k);
        mse_rc4_apply(y, by + off, by + off, k);
        off += k;
    }
    assert_memory_equal(bx, by, sizeof(bx));
    mse_rc4_free(x);
    mse_rc4_free(y);
    mse_rc4_free(NULL);
    /* Bad keys. */
    assert_int_equal(mse_rc4_new(&x, key, 0, 0, false), MSE_E_PARAMS);
    assert_int_equal(mse_rc4_new(&x, NULL, 5, 0, false), MSE_E_PARAMS);
    assert_int_equal(mse_rc4_new(&x, bx, 257, 0, false), MSE_E_PARAMS);
    /* Debian 12 ships the legacy provider in libssl3. */
    print_message("rc4: %s\n",
                  mse_rc4_openssl() ? "openssl legacy provider" : "built-in");
}

static void
test_dh(void **state)
{
    (void)state;
    uint8_t one[MSE_PRIV_LEN] = {0}, pub[MSE_KEY_LEN], exp[MSE_KEY_LEN];
    one[MSE_PRIV_LEN - 1] = 1;
    assert_int_equal(mse_dh_public(one, pub), 0);
    memset(exp, 0, sizeof(exp));
    exp[MSE_KEY_LEN - 1] = 2; /* 2^1, zero-padded to 96 bytes */
    assert_memory_equal(pub, exp, MSE_KEY_LEN);
    one[MSE_PRIV_LEN - 1] = 10;
    assert_int_equal(mse_dh_public(one, pub), 0);
    exp[MSE_KEY_LEN - 1] = 0;
    exp[MSE_KEY_LEN - 2] = 4; /* 2^10 = 0x400 */
    assert_memory_equal(pub, exp, MSE_KEY_LEN);

    /* Agreement. */
    uint8_t xa[MSE_PRIV_LEN], xb[MSE_PRIV_LEN], ya[MSE_KEY_LEN],
        yb[MSE_KEY_LEN], sa[MSE_KEY_LEN], sb[MSE_KEY_LEN];
    for (int k = 0; k < 8; k++) {
        priv_make(xa, (uint8_t)(2 * k));
        priv_make(xb, (uint8_t)(2 * k + 1));
        assert_int_equal(mse_dh_public(xa, ya), 0);
        assert_int_equal(mse_dh_public(xb, yb), 0);
        assert_int_equal(mse_dh_secret(xa, yb, sa), 0);
        assert_int_equal(mse_dh_secret(xb, ya, sb), 0);
        assert_memory_equal(sa, sb, MSE_KEY_LEN);
        assert_memory_not_equal(ya, yb, MSE_KEY_LEN);
    }

    /* Range: 0, 1, P-1, P and above are refused; 2 and P-2 taken. */
    static const uint8_t p_tail[8] = {0x00, 0x00, 0x00, 0x00,
                                      0x00, 0x09, 0x05, 0x63};
    uint8_t bad[MSE_KEY_LEN];
    memset(bad, 0, sizeof(bad));
    assert_int_equal(mse_dh_secret(xa, bad, sa), MSE_E_DH_KEY);
    bad[MSE_KEY_LEN - 1] = 1;
    assert_int_equal(mse_dh_secret(xa, bad, sa), MSE_E_DH_KEY);
    bad[MSE_KEY_LEN - 1] = 2;
    assert_int_equal(mse_dh_secret(xa, bad, sa), 0);
    /* P, P-1 (the spec's prime, as in mse.c), P-2 and above. */
    uint8_t p[MSE_KEY_LEN];
    static const uint8_t prime[MSE_KEY_LEN] = {
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xc9, 0x0f, 0xda, 0xa2,
        0x21, 0x68, 0xc2, 0x34, 0xc4, 0xc6, 0x62, 0x8b, 0x80, 0xdc, 0x1c, 0xd1,
        0x29, 0x02, 0x4e, 0x08, 0x8a, 0x67, 0xcc, 0x74, 0x02, 0x0b, 0xbe, 0xa6,
        0x3b, 0x13, 0x9b, 0x22, 0x51, 0x4a, 0x08, 0x79, 0x8e, 0x34, 0x04, 0xdd,
        0xef, 0x95, 0x19, 0xb3, 0xcd, 0x3a, 0x43, 0x1b, 0x30, 0x2b, 0x0a, 0x6d,
        0xf2, 0x5f, 0x14, 0x37, 0x4f, 0xe1, 0x35, 0x6d, 0x6d, 0x51, 0xc2, 0x45,
        0xe4, 0x85, 0xb5, 0x76, 0x62, 0x5e, 0x7e, 0xc6, 0xf4, 0x4c, 0x42, 0xe9,
        0xa6, 0x3a, 0x36, 0x21, 0x00, 0x00, 0x00, 0x00, 0x00, 0x09, 0x05, 0x63,
    };
    assert_memory_equal(prime + MSE_KEY_LEN - 8, p_tail, 8);
    memcpy(p, prime, MSE_KEY_LEN);
    assert_int_equal(mse_dh_secret(xa, p, sa), MSE_E_DH_KEY); /* P */
    p[MSE_KEY_LEN - 1] = 0x62;
    assert_int_equal(mse_dh_secret(xa, p, sa), MSE_E_DH_KEY); /* P-1 */
    p[MSE_KEY_LEN - 1] = 0x61;
    assert_int_equal(mse_dh_secret(xa, p, sa), 0); /* P-2 */
    memset(p, 0xff, sizeof(p));
    assert_int_equal(mse_dh_secret(xa, p, sa), MSE_E_DH_KEY); /* > P */

    /* The generator: 2^(P-1) = 1 would need a 768-bit exponent; a 160-bit
     * one gives a key in range, and 2^x from the machine matches. */
    struct mse_params pa;
    params_a(&pa, MSE_CRYPTO_RC4, NULL, 0);
    pa.pad_max = 0;
    pa.priv = xa;
    struct mse *m;
    assert_int_equal(mse_new(&m, &pa), 0);
    size_t n;
    const uint8_t *o = mse_output(m, &n);
    assert_int_equal(n, MSE_KEY_LEN); /* no PadA */
    assert_memory_equal(o, ya, MSE_KEY_LEN);
    mse_free(m);
}

static void
test_detect(void **state)
{
    (void)state;
    static const char hs[] = "\x13"
                             "BitTorrent protocol\0\0\0\0\0\0\0\0";
    assert_int_equal(mse_detect(hs, 0), MSE_DETECT_MORE);
    for (size_t n = 1; n < MSE_DETECT_LEN; n++)
        assert_int_equal(mse_detect(hs, n), MSE_DETECT_MORE);
    assert_int_equal(mse_detect(hs, MSE_DETECT_LEN), MSE_DETECT_PLAIN);
    assert_int_equal(mse_detect(hs, sizeof(hs)), MSE_DETECT_PLAIN);
    /* A Ya that starts like a handshake is told apart at the first byte
     * that differs. */
    uint8_t y[MSE_DETECT_LEN];
    memcpy(y, hs, sizeof(y));
    for (size_t i = 0; i < MSE_DETECT_LEN; i++) {
        memcpy(y, hs, sizeof(y));
        y[i] ^= 0x20;
        assert_int_equal(mse_detect(y, i), MSE_DETECT_MORE);
        assert_int_equal(mse_detect(y, i + 1), MSE_DETECT_MSE);
    }
}

static void
test_round_trips(void **state)
{
    (void)state;
    static const size_t chunks[] = {1, 3, 7, 64, 97, 600, 1 << 16};
    uint8_t ia[68];
    for (size_t i = 0; i < sizeof(ia); i++)
        ia[i] = (uint8_t)(0x13 + i);
    struct table t = {0};
    table_add(&t, skey2);
    table_add(&t, skey1);
    static const struct {
        unsigned provide, allow, expect;
        bool prefer_plain; /* the responder's */
    } modes[] = {
        {MSE_CRYPTO_RC4, MSE_CRYPTO_RC4, MSE_CRYPTO_RC4, false},
        {MSE_CRYPTO_PLAIN, MSE_CRYPTO_PLAIN, MSE_CRYPTO_PLAIN, false},
        {MSE_CRYPTO_ALL, MSE_CRYPTO_ALL, MSE_CRYPTO_RC4, false},
        {MSE_CRYPTO_ALL, MSE_CRYPTO_PLAIN, MSE_CRYPTO_PLAIN, false},
        {MSE_CRYPTO_PLAIN, MSE_CRYPTO_ALL, MSE_CRYPTO_PLAIN, false},
        {MSE_CRYPTO_ALL, MSE_CRYPTO_RC4, MSE_CRYPTO_RC4, false},
        /* Offered both, a responder that prefers plaintext takes it;
         * offered RC4 only, it still takes RC4. */
        {MSE_CRYPTO_ALL, MSE_CRYPTO_ALL, MSE_CRYPTO_PLAIN, true},
        {MSE_CRYPTO_RC4, MSE_CRYPTO_ALL, MSE_CRYPTO_RC4, true},
        {MSE_CRYPTO_ALL, MSE_CRYPTO_RC4, MSE_CRYPTO_RC4, true},
    };
    for (size_t mi = 0; mi < ARRAY_SIZE(modes); mi++) {
        for (size_t ci = 0; ci < ARRAY_SIZE(chunks); ci++) {
            for (int with_ia = 0; with_ia < 2; with_ia++) {
                for (int cb = 0; cb < 2; cb++) {
                    struct mse_params pa, pb;
                    params_a(&pa, modes[mi].provide, with_ia ? ia : NULL,
                             with_ia ? sizeof(ia) : 0);
                    params_b(&pb, modes[mi].allow, cb ? &t : NULL);
                    pb.prefer_plain = modes[mi].prefer_plain;
                    struct rt_result res;
                    round_trip(&pa, &pb, chunks[ci], &t, &res);
                    assert_int_equal(res.ra, MSE_DONE);
                    assert_int_equal(res.rb, MSE_DONE);
                    assert_int_equal(res.sel_a, modes[mi].expect);
                    assert_int_equal(res.ia_len, with_ia ? sizeof(ia) : 0);
                    if (with_ia)
                        assert_memory_equal(res.ia, ia, sizeof(ia));
                }
            }
        }
    }
    /* The longest IA, and no pads at all. */
    static uint8_t big[MSE_IA_LEN_MAX];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (uint8_t)(i * 7);
    struct mse_params pa, pb;
    params_a(&pa, MSE_CRYPTO_RC4, big, sizeof(big));
    params_b(&pb, MSE_CRYPTO_RC4, &t);
    pb.ia_max = MSE_IA_LEN_MAX;
    pa.pad_max = pa.pad_cd_max = pb.pad_max = pb.pad_cd_max = 0;
    struct rt_result *res = malloc(sizeof(*res));
    assert_non_null(res);
    round_trip(&pa, &pb, 4096, &t, res);
    assert_int_equal(res->ra, MSE_DONE);
    assert_int_equal(res->rb, MSE_DONE);
    assert_int_equal(res->ia_len, sizeof(big));
    assert_memory_equal(res->ia, big, sizeof(big));
    free(res);
}

/* --- hand-made peers: every field under the test's control --- */

struct forge {
    uint8_t priv[MSE_PRIV_LEN], pub[MSE_KEY_LEN], s[MSE_KEY_LEN];
    struct mse_rc4 *enc; /* keyA (forging A) or keyB (forging B) */
};

/* Forge A's step 3 against responder m, whose Yb is in peer_pub. */
static size_t
forge_step3(uint8_t *out, struct forge *f, const uint8_t *peer_pub,
            const uint8_t *skey, const uint8_t vc[MSE_VC_LEN], uint32_t provide,
            unsigned padc_field, size_t padc, unsigned ia_field, size_t ia)
{
    uint8_t req1[MSE_HASH_LEN], req2[MSE_HASH_LEN], req3[MSE_HASH_LEN];
    assert_int_equal(mse_dh_secret(f->priv, peer_pub, f->s), 0);
    /* HASH('req1', S) and HASH('req3', S) the long way: via mse_req2's
     * sibling is not exported, so hash here with OpenSSL. */
    uint8_t buf[4 + MSE_KEY_LEN];
    unsigned hl;
    memcpy(buf, "req1", 4);
    memcpy(buf + 4, f->s, MSE_KEY_LEN);
    assert_int_equal(EVP_Digest(buf, sizeof(buf), req1, &hl, EVP_sha1(), NULL),
                     1);
    memcpy(buf, "req3", 4);
    assert_int_equal(EVP_Digest(buf, sizeof(buf), req3, &hl, EVP_sha1(), NULL),
                     1);
    assert_int_equal(mse_req2(skey, req2), 0);
    size_t n = 0;
    memcpy(out, req1, MSE_HASH_LEN);
    n += MSE_HASH_LEN;
    for (int i = 0; i < MSE_HASH_LEN; i++)
        out[n + i] = req2[i] ^ req3[i];
    n += MSE_HASH_LEN;
    size_t e = n;
    memcpy(out + n, vc, MSE_VC_LEN);
    n += MSE_VC_LEN;
    out[n++] = (uint8_t)(provide >> 24);
    out[n++] = (uint8_t)(provide >> 16);
    out[n++] = (uint8_t)(provide >> 8);
    out[n++] = (uint8_t)provide;
    out[n++] = (uint8_t)(padc_field >> 8);
    out[n++] = (uint8_t)padc_field;
    memset(out + n, 0xee, padc);
    n += padc;
    out[n++] = (uint8_t)(ia_field >> 8);
    out[n++] = (uint8_t)ia_field;
    memset(out + n, 'i', ia);
    n += ia;
    assert_int_equal(mse_rc4_new_stream(&f->enc, f->s, skey, true), 0);
    mse_rc4_apply(f->enc, out + e, out + e, n - e);
    return n;
}

/* Feed buf to m whole; return the result. */
static int
feed_all(struct mse *m, const uint8_t *buf, size_t n)
{
    size_t used = 0;
    return mse_input(m, buf, n, &used);
}

/* A responder (with the table) that got our Ya + pad bytes of PadA. */
static struct mse *
responder_after_ya(struct forge *f, struct table *t, unsigned allow,
                   size_t ia_max, uint8_t yb[MSE_KEY_LEN])
{
    struct mse_params pb;
    params_b(&pb, allow, t);
    pb.ia_max = ia_max;
    struct mse *m;
    assert_int_equal(mse_new(&m, &pb), 0);
    priv_make(f->priv, 77);
    assert_int_equal(mse_dh_public(f->priv, f->pub), 0);
    assert_int_equal(feed_all(m, f->pub, MSE_KEY_LEN), MSE_MORE);
    size_t n;
    const uint8_t *o = mse_output(m, &n);
    assert_true(n >= MSE_KEY_LEN && n <= MSE_KEY_LEN + MSE_PAD_MAX);
    memcpy(yb, o, MSE_KEY_LEN);
    mse_output_consumed(m, n);
    return m;
}

static const uint8_t vc0[MSE_VC_LEN];

static void
test_responder_errors(void **state)
{
    (void)state;
    struct table t = {0};
    table_add(&t, skey1);
    struct forge f = {0};
    uint8_t yb[MSE_KEY_LEN], pad[MSE_SYNC_REQ1 + 1], s3[2048];
    memset(pad, 0xab, sizeof(pad));

    /* Sync: PadA of exactly 512 bytes then req1 is found ... */
    struct mse *m = responder_after_ya(&f, &t, MSE_CRYPTO_ALL, 0, yb);
    assert_int_equal(feed_all(m, pad, MSE_PAD_MAX), MSE_MORE);
    size_t n = forge_step3(s3, &f, yb, skey1, vc0, MSE_CRYPTO_RC4, 0, 0, 0, 0);
    size_t used = 0;
    assert_int_equal(mse_input(m, s3, n, &used), MSE_DONE);
    assert_int_equal(used, n);
    assert_int_equal(mse_selected(m), MSE_CRYPTO_RC4);
    mse_rc4_free(f.enc);
    mse_free(m);
    /* ... 513 bytes are one too many: refused once 532 bytes are in. */
    m = responder_after_ya(&f, &t, MSE_CRYPTO_ALL, 0, yb);
    assert_int_equal(feed_all(m, pad, MSE_PAD_MAX + 1), MSE_MORE);
    n = forge_step3(s3, &f, yb, skey1, vc0, MSE_CRYPTO_RC4, 0, 0, 0, 0);
    assert_int_equal(feed_all(m, s3, MSE_HASH_LEN - 2), MSE_MORE);
    assert_int_equal(feed_all(m, s3 + MSE_HASH_LEN - 2, 1), MSE_E_SYNC_REQ1);
    assert_int_equal(feed_all(m, s3, 1), MSE_E_SYNC_REQ1); /* sticky */
    mse_rc4_free(f.enc);
    mse_free(m);
    /* Garbage never syncs. */
    m = responder_after_ya(&f, &t, MSE_CRYPTO_ALL, 0, yb);
    assert_int_equal(feed_all(m, pad, MSE_SYNC_REQ1 - 1), MSE_MORE);
    assert_int_equal(feed_all(m, pad, 1), MSE_E_SYNC_REQ1);
    mse_free(m);

    /* An unknown torrent: by callback, and by answer. */
    m = responder_after_ya(&f, &t, MSE_CRYPTO_ALL, 0, yb);
    n = forge_step3(s3, &f, yb, skey2, vc0, MSE_CRYPTO_RC4, 0, 0, 0, 0);
    assert_int_equal(feed_all(m, s3, n), MSE_E_UNKNOWN_SKEY);
    mse_rc4_free(f.enc);
    mse_free(m);
    {
        struct mse_params pb;
        params_b(&pb, MSE_CRYPTO_ALL, NULL);
        assert_int_equal(mse_new(&m, &pb), 0);
        priv_make(f.priv, 78);
        assert_int_equal(mse_dh_public(f.priv, f.pub), 0);
        assert_int_equal(feed_all(m, f.pub, MSE_KEY_LEN), MSE_MORE);
        const uint8_t *o = mse_output(m, &n);
        memcpy(yb, o, MSE_KEY_LEN);
        assert_int_equal(mse_set_skey(m, skey1), MSE_E_STATE); /* early */
        n = forge_step3(s3, &f, yb, skey2, vc0, MSE_CRYPTO_RC4, 0, 0, 0, 0);
        used = 0;
        assert_int_equal(mse_input(m, s3, n, &used), MSE_WANT_SKEY);
        assert_int_equal(used, 2 * MSE_HASH_LEN);
        uint8_t want[MSE_HASH_LEN];
        assert_int_equal(mse_req2(skey2, want), 0);
        assert_memory_equal(mse_req2_seen(m), want, MSE_HASH_LEN);
        /* Asked again before the answer: nothing taken. */
        used = 99;
        assert_int_equal(mse_input(m, s3 + 40, n - 40, &used), MSE_WANT_SKEY);
        assert_int_equal(used, 0);
        assert_int_equal(mse_set_skey(m, NULL), MSE_E_UNKNOWN_SKEY);
        assert_int_equal(feed_all(m, s3, 1), MSE_E_UNKNOWN_SKEY);
        mse_rc4_free(f.enc);
        mse_free(m);
    }

    /* A VC that is not zero (as if A had used another SKEY's keys). */
    static const uint8_t vc1[MSE_VC_LEN] = {0, 0, 0, 0, 0, 0, 0, 1};
    m = responder_after_ya(&f, &t, MSE_CRYPTO_ALL, 0, yb);
    n = forge_step3(s3, &f, yb, skey1, vc1, MSE_CRYPTO_RC4, 0, 0, 0, 0);
    assert_int_equal(feed_all(m, s3, n), MSE_E_VC);
    mse_rc4_free(f.enc);
    mse_free(m);

    /* crypto_provide without an allowed method. */
    static const struct {
        uint32_t provide;
        unsigned allow;
    } np[] = {
        {0, MSE_CRYPTO_ALL},
        {0x04, MSE_CRYPTO_ALL},
        {0xfffffffc, MSE_CRYPTO_ALL},
        {MSE_CRYPTO_PLAIN, MSE_CRYPTO_RC4},
        {MSE_CRYPTO_RC4, MSE_CRYPTO_PLAIN},
    };
    for (size_t i = 0; i < ARRAY_SIZE(np); i++) {
        m = responder_after_ya(&f, &t, np[i].allow, 0, yb);
        n = forge_step3(s3, &f, yb, skey1, vc0, np[i].provide, 0, 0, 0, 0);
        assert_int_equal(feed_all(m, s3, n), MSE_E_PROVIDE);
        mse_rc4_free(f.enc);
        mse_free(m);
    }
    /* Unknown bits beside a known one are fine. */
    m = responder_after_ya(&f, &t, MSE_CRYPTO_ALL, 0, yb);
    n = forge_step3(s3, &f, yb, skey1, vc0, 0xf0 | MSE_CRYPTO_PLAIN, 0, 0, 0,
                    0);
    assert_int_equal(feed_all(m, s3, n), MSE_DONE);
    assert_int_equal(mse_selected(m), MSE_CRYPTO_PLAIN);
    mse_rc4_free(f.enc);
    mse_free(m);

    /* len(PadC): 512 taken, 513 refused (before the pad comes). */
    m = responder_after_ya(&f, &t, MSE_CRYPTO_ALL, 0, yb);
    n = forge_step3(s3, &f, yb, skey1, vc0, MSE_CRYPTO_RC4, 512, 512, 0, 0);
    assert_int_equal(feed_all(m, s3, n), MSE_DONE);
    mse_rc4_free(f.enc);
    mse_free(m);
    m = responder_after_ya(&f, &t, MSE_CRYPTO_ALL, 0, yb);
    n = forge_step3(s3, &f, yb, skey1, vc0, MSE_CRYPTO_RC4, 513, 0, 0, 0);
    assert_int_equal(feed_all(m, s3, 2 * MSE_HASH_LEN + 14), MSE_E_PAD_LEN);
    mse_rc4_free(f.enc);
    mse_free(m);
    m = responder_after_ya(&f, &t, MSE_CRYPTO_ALL, 0, yb);
    n = forge_step3(s3, &f, yb, skey1, vc0, MSE_CRYPTO_RC4, 0xffff, 0, 0, 0);
    assert_int_equal(feed_all(m, s3, n), MSE_E_PAD_LEN);
    mse_rc4_free(f.enc);
    mse_free(m);

    /* len(IA): the limit taken, one more refused. */
    m = responder_after_ya(&f, &t, MSE_CRYPTO_ALL, 100, yb);
    n = forge_step3(s3, &f, yb, skey1, vc0, MSE_CRYPTO_RC4, 0, 0, 100, 100);
    assert_int_equal(feed_all(m, s3, n), MSE_DONE);
    size_t ial;
    const uint8_t *ia = mse_ia(m, &ial);
    assert_int_equal(ial, 100);
    assert_int_equal(ia[0], 'i');
    assert_int_equal(ia[99], 'i');
    mse_rc4_free(f.enc);
    mse_free(m);
    m = responder_after_ya(&f, &t, MSE_CRYPTO_ALL, 100, yb);
    n = forge_step3(s3, &f, yb, skey1, vc0, MSE_CRYPTO_RC4, 0, 0, 101, 0);
    assert_int_equal(feed_all(m, s3, n), MSE_E_IA_LEN);
    mse_rc4_free(f.enc);
    mse_free(m);
    m = responder_after_ya(&f, &t, MSE_CRYPTO_ALL, 0, yb);
    n = forge_step3(s3, &f, yb, skey1, vc0, MSE_CRYPTO_RC4, 0, 0,
                    MSE_IA_DEFAULT_MAX + 1, 0);
    assert_int_equal(feed_all(m, s3, n), MSE_E_IA_LEN);
    mse_rc4_free(f.enc);
    mse_free(m);

    /* A public key out of range. */
    {
        struct mse_params pb;
        params_b(&pb, MSE_CRYPTO_ALL, &t);
        assert_int_equal(mse_new(&m, &pb), 0);
        uint8_t zero[MSE_KEY_LEN] = {0};
        assert_int_equal(feed_all(m, zero, 50), MSE_MORE);
        assert_int_equal(feed_all(m, zero, 46), MSE_E_DH_KEY);
        const uint8_t *o = mse_output(m, &n);
        assert_int_equal(n, 0); /* nothing said to such a peer */
        (void)o;
        mse_free(m);
    }
}

/* Forge B: Yb, PadB of padb bytes, then ENCRYPT(VC, select, len(PadD),
 * PadD) against initiator m, whose Ya is ya. */
static size_t
forge_step2_4(uint8_t *out, struct forge *f, const uint8_t *ya, size_t padb,
              const uint8_t vc[MSE_VC_LEN], uint32_t select,
              unsigned padd_field, size_t padd)
{
    priv_make(f->priv, 55);
    assert_int_equal(mse_dh_public(f->priv, f->pub), 0);
    assert_int_equal(mse_dh_secret(f->priv, ya, f->s), 0);
    size_t n = 0;
    memcpy(out, f->pub, MSE_KEY_LEN);
    n += MSE_KEY_LEN;
    memset(out + n, 0xcd, padb);
    n += padb;
    size_t e = n;
    memcpy(out + n, vc, MSE_VC_LEN);
    n += MSE_VC_LEN;
    out[n++] = (uint8_t)(select >> 24);
    out[n++] = (uint8_t)(select >> 16);
    out[n++] = (uint8_t)(select >> 8);
    out[n++] = (uint8_t)select;
    out[n++] = (uint8_t)(padd_field >> 8);
    out[n++] = (uint8_t)padd_field;
    memset(out + n, 0, padd);
    n += padd;
    assert_int_equal(mse_rc4_new_stream(&f->enc, f->s, skey1, false), 0);
    mse_rc4_apply(f->enc, out + e, out + e, n - e);
    return n;
}

static struct mse *
initiator(unsigned provide, uint8_t ya[MSE_KEY_LEN])
{
    struct mse_params pa;
    params_a(&pa, provide, (const uint8_t *)"IA", 2);
    struct mse *m;
    assert_int_equal(mse_new(&m, &pa), 0);
    size_t n;
    const uint8_t *o = mse_output(m, &n);
    memcpy(ya, o, MSE_KEY_LEN);
    mse_output_consumed(m, n);
    return m;
}

static void
test_initiator_errors(void **state)
{
    (void)state;
    struct forge f = {0};
    uint8_t ya[MSE_KEY_LEN], s4[2048];

    /* PadB of 512: VC found; 513: refused once 520 bytes are in. */
    struct mse *m = initiator(MSE_CRYPTO_ALL, ya);
    size_t n = forge_step2_4(s4, &f, ya, 512, vc0, MSE_CRYPTO_RC4, 0, 0);
    size_t used = 0;
    assert_int_equal(mse_input(m, s4, n, &used), MSE_DONE);
    assert_int_equal(used, n);
    assert_int_equal(mse_selected(m), MSE_CRYPTO_RC4);
    /* Step 3 is out: 40 + 14 + PadC + 2 + IA bytes. */
    const uint8_t *o = mse_output(m, &n);
    assert_true(n >= 2 * MSE_HASH_LEN + 14 + 2 + 2);
    (void)o;
    mse_rc4_free(f.enc);
    mse_free(m);
    m = initiator(MSE_CRYPTO_ALL, ya);
    n = forge_step2_4(s4, &f, ya, 513, vc0, MSE_CRYPTO_RC4, 0, 0);
    assert_int_equal(feed_all(m, s4, MSE_KEY_LEN + MSE_SYNC_VC - 1), MSE_MORE);
    assert_int_equal(feed_all(m, s4 + MSE_KEY_LEN + MSE_SYNC_VC - 1, 1),
                     MSE_E_SYNC_VC);
    mse_rc4_free(f.enc);
    mse_free(m);

    /* A wrong VC never syncs either. */
    static const uint8_t vc1[MSE_VC_LEN] = {1};
    m = initiator(MSE_CRYPTO_ALL, ya);
    n = forge_step2_4(s4, &f, ya, 0, vc1, MSE_CRYPTO_RC4, 0, 0);
    uint8_t more[MSE_SYNC_VC] = {0};
    assert_int_equal(feed_all(m, s4, n), MSE_MORE);
    assert_int_equal(feed_all(m, more, sizeof(more)), MSE_E_SYNC_VC);
    mse_rc4_free(f.enc);
    mse_free(m);

    /* crypto_select: not one bit, or not one we provided. */
    static const struct {
        unsigned provide;
        uint32_t select;
    } bad[] = {
        {MSE_CRYPTO_ALL, 0},
        {MSE_CRYPTO_ALL, MSE_CRYPTO_ALL},
        {MSE_CRYPTO_ALL, 0x04},
        {MSE_CRYPTO_ALL, 0x80000002},
        {MSE_CRYPTO_RC4, MSE_CRYPTO_PLAIN},
        {MSE_CRYPTO_PLAIN, MSE_CRYPTO_RC4},
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        m = initiator(bad[i].provide, ya);
        n = forge_step2_4(s4, &f, ya, 3, vc0, bad[i].select, 0, 0);
        assert_int_equal(feed_all(m, s4, n), MSE_E_SELECT);
        mse_rc4_free(f.enc);
        mse_free(m);
    }

    /* len(PadD): 512 taken, 513 refused. */
    m = initiator(MSE_CRYPTO_ALL, ya);
    n = forge_step2_4(s4, &f, ya, 0, vc0, MSE_CRYPTO_PLAIN, 512, 512);
    assert_int_equal(feed_all(m, s4, n), MSE_DONE);
    assert_int_equal(mse_selected(m), MSE_CRYPTO_PLAIN);
    mse_rc4_free(f.enc);
    mse_free(m);
    m = initiator(MSE_CRYPTO_ALL, ya);
    n = forge_step2_4(s4, &f, ya, 0, vc0, MSE_CRYPTO_RC4, 513, 0);
    assert_int_equal(feed_all(m, s4, n), MSE_E_PAD_LEN);
    mse_rc4_free(f.enc);
    mse_free(m);

    /* Yb out of range: P - 1. */
    m = initiator(MSE_CRYPTO_ALL, ya);
    uint8_t yb[MSE_KEY_LEN];
    memset(yb, 0, sizeof(yb));
    yb[MSE_KEY_LEN - 1] = 1;
    assert_int_equal(feed_all(m, yb, sizeof(yb)), MSE_E_DH_KEY);
    mse_free(m);
}

static void
test_params_state(void **state)
{
    (void)state;
    struct mse *m = NULL;
    struct mse_params p;
    params_a(&p, 0, NULL, 0);
    assert_int_equal(mse_new(&m, &p), MSE_E_PARAMS);
    params_a(&p, 0x04, NULL, 0);
    assert_int_equal(mse_new(&m, &p), MSE_E_PARAMS);
    params_a(&p, MSE_CRYPTO_RC4, NULL, 1);
    assert_int_equal(mse_new(&m, &p), MSE_E_PARAMS);
    static uint8_t big[MSE_IA_LEN_MAX + 1];
    params_a(&p, MSE_CRYPTO_RC4, big, sizeof(big));
    assert_int_equal(mse_new(&m, &p), MSE_E_PARAMS);
    params_b(&p, MSE_CRYPTO_RC4, NULL);
    p.ia_max = MSE_IA_LEN_MAX + 1;
    assert_int_equal(mse_new(&m, &p), MSE_E_PARAMS);
    assert_int_equal(mse_new(&m, NULL), MSE_E_PARAMS);
    assert_null(m);
    /* Pads above the limit are cut to it. */
    params_a(&p, MSE_CRYPTO_RC4, NULL, 0);
    p.pad_max = 100000;
    for (int i = 0; i < 20; i++) {
        assert_int_equal(mse_new(&m, &p), 0);
        size_t n;
        (void)mse_output(m, &n);
        assert_true(n >= MSE_KEY_LEN && n <= MSE_KEY_LEN + MSE_PAD_MAX);
        /* Before the end: no method, no IA, encrypt copies. */
        assert_int_equal(mse_selected(m), 0);
        assert_int_equal(mse_provided(m), 0);
        uint8_t c[4];
        mse_encrypt(m, c, "abcd", 4);
        assert_memory_equal(c, "abcd", 4);
        mse_output_consumed(m, n + 10); /* more than there is: all */
        (void)mse_output(m, &n);
        assert_int_equal(n, 0);
        assert_int_equal(mse_set_skey(m, skey1), MSE_E_STATE);
        assert_int_equal(mse_input(m, NULL, 3, NULL), MSE_E_PARAMS);
        mse_free(m);
    }
    mse_free(NULL);
}

/* A valid transcript A -> B (Ya, PadA, step 3 with IA), for truncation and
 * bit flips, and B's matching private key. */
static size_t
transcript(uint8_t *out, size_t cap, uint8_t bpriv[MSE_PRIV_LEN])
{
    uint8_t apriv[MSE_PRIV_LEN], yb[MSE_KEY_LEN];
    priv_make(apriv, 1);
    priv_make(bpriv, 2);
    assert_int_equal(mse_dh_public(bpriv, yb), 0);
    struct mse_params pa;
    params_a(&pa, MSE_CRYPTO_ALL, (const uint8_t *)"hello ia", 8);
    pa.priv = apriv;
    pa.pad_max = 40;
    pa.pad_cd_max = 40;
    struct mse *a;
    assert_int_equal(mse_new(&a, &pa), 0);
    assert_int_equal(feed_all(a, yb, sizeof(yb)), MSE_MORE);
    size_t n;
    const uint8_t *o = mse_output(a, &n);
    assert_true(n <= cap);
    memcpy(out, o, n);
    mse_free(a);
    return n;
}

static struct mse *
responder_with(const uint8_t priv[MSE_PRIV_LEN], struct table *t)
{
    struct mse_params pb;
    params_b(&pb, MSE_CRYPTO_ALL, t);
    pb.priv = priv;
    struct mse *m;
    assert_int_equal(mse_new(&m, &pb), 0);
    return m;
}

static void
test_truncation_bitflip(void **state)
{
    (void)state;
    struct table t = {0};
    table_add(&t, skey1);
    uint8_t tr[4096], bpriv[MSE_PRIV_LEN];
    size_t n = transcript(tr, sizeof(tr), bpriv);
    /* Whole: done, with the IA. */
    struct mse *m = responder_with(bpriv, &t);
    assert_int_equal(feed_all(m, tr, n), MSE_DONE);
    size_t ial;
    const uint8_t *ia = mse_ia(m, &ial);
    assert_int_equal(ial, 8);
    assert_memory_equal(ia, "hello ia", 8);
    mse_free(m);
    /* Every prefix: more, never an error (exact-size heap copies). */
    for (size_t k = 0; k < n; k++) {
        uint8_t *c = malloc(k ? k : 1);
        assert_non_null(c);
        memcpy(c, tr, k);
        m = responder_with(bpriv, &t);
        assert_int_equal(feed_all(m, c, k), MSE_MORE);
        mse_free(m);
        free(c);
    }
    /* Every bit flipped: a clean error or success (a flip in PadA, PadC
     * or the IA passes); MORE only if len(IA) grew past what came. */
    int errs[-MSE_E_MIN] = {0};
    int passed = 0;
    size_t nz = n + MSE_SYNC_REQ1; /* zeros after: every sync decided */
    for (size_t bit = 0; bit < n * 8; bit++) {
        uint8_t *c = calloc(1, nz);
        assert_non_null(c);
        memcpy(c, tr, n);
        c[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        m = responder_with(bpriv, &t);
        int r = feed_all(m, c, nz);
        if (r < 0) {
            assert_true(r > MSE_E_MIN);
            errs[-r]++;
        } else if (r == MSE_DONE) {
            passed++;
        } else {
            assert_int_equal(r, MSE_MORE); /* e.g. a longer len(IA) */
        }
        mse_free(m);
        free(c);
    }
    assert_true(errs[-MSE_E_SYNC_REQ1] > 0); /* Ya or req1 flipped */
    assert_true(errs[-MSE_E_UNKNOWN_SKEY] > 0);
    assert_true(errs[-MSE_E_VC] > 0);
    assert_true(passed > 0); /* PadA, the PadC bytes, the IA's bytes */
}

static void
test_alloc_failures(void **state)
{
    (void)state;
    if (!hooked)
        skip();
    struct table t = {0};
    table_add(&t, skey1);
    (void)mse_rc4_openssl(); /* the provider is loaded before we fail */
    uint8_t ia[68] = {0x13};
    /* Count the allocations of one round trip, then fail each in turn. */
    struct mse_params pa, pb;
    params_a(&pa, MSE_CRYPTO_RC4, ia, sizeof(ia));
    params_b(&pb, MSE_CRYPTO_RC4, &t);
    allocs_seen = 0;
    struct rt_result res;
    round_trip(&pa, &pb, 1 << 16, &t, &res);
    assert_int_equal(res.ra, MSE_DONE);
    int total = allocs_seen;
    assert_true(total > 5);
    int nomem = 0, crypto = 0;
    for (int k = 1; k <= total; k++) {
        struct mse *a = NULL, *b = NULL;
        fail_allocs_in = k;
        int r = mse_new(&a, &pa);
        if (r == 0)
            r = mse_new(&b, &pb);
        uint8_t buf[4096];
        for (int round = 0; r >= 0 && round < 8; round++) {
            size_t n;
            const uint8_t *o = mse_output(a, &n);
            memcpy(buf, o, n);
            mse_output_consumed(a, n);
            r = feed_all(b, buf, n);
            if (r < 0)
                break;
            o = mse_output(b, &n);
            memcpy(buf, o, n);
            mse_output_consumed(b, n);
            r = feed_all(a, buf, n);
            if (r == MSE_DONE)
                break;
        }
        fail_allocs_in = 0;
        if (r == MSE_E_NOMEM)
            nomem++;
        else if (r == MSE_E_CRYPTO)
            crypto++;
        else
            assert_true(r >= 0);
        mse_free(a);
        mse_free(b);
    }
    assert_true(nomem > 0);
    assert_true(crypto > 0);
}

int
main(void)
{
    /* Before OpenSSL allocates anything. */
    hooked = CRYPTO_set_mem_functions(t_malloc, t_realloc, t_free) == 1;
    if (!hooked)
        fprintf(stderr, "test_mse: cannot hook OpenSSL's allocator\n");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strerror),
        cmocka_unit_test(test_rc4_vectors),
        cmocka_unit_test(test_dh),
        cmocka_unit_test(test_detect),
        cmocka_unit_test(test_round_trips),
        cmocka_unit_test(test_responder_errors),
        cmocka_unit_test(test_initiator_errors),
        cmocka_unit_test(test_params_state),
        cmocka_unit_test(test_truncation_bitflip),
        cmocka_unit_test(test_alloc_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
