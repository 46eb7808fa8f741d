/* fuzz_mse — libFuzzer target for common/mse.
 *
 * The first byte chooses what the input is, the second how it is cut:
 *   mode 0  raw bytes from a would-be initiator to a responder;
 *   mode 1  a valid Ya, PadA, HASH('req1', S) and HASH('req2', SKEY) xor
 *           HASH('req3', S) for a torrent the responder has (the pad's
 *           length from the input), then the rest of the input encrypted
 *           with the initiator's keystream: the fuzzer writes the
 *           plaintext of VC, crypto_provide, PadC, len(IA) and the IA;
 *   mode 2  raw bytes from a would-be responder to an initiator;
 *   mode 3  a valid Yb and PadB, then the rest encrypted with the
 *           responder's keystream (VC, crypto_select, PadD).
 * Each input runs whole and again in chunks (1..64 bytes from the low
 * bits of the second byte; its bit 6 makes the responder answer
 * MSE_WANT_SKEY instead of using a lookup callback): both must end the
 * same way, with the same method and IA.  Any broken invariant
 * abort()s.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "common/mse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_HEAD 2

static void
fail(const char *what)
{
    fprintf(stderr, "fuzz_mse: %s\n", what);
    abort();
}

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond))                                                           \
            fail(#cond);                                                       \
    } while (0)

static const uint8_t skey_a[MSE_HASH_LEN] = "fuzz-torrent-aaaaaaa";
static const uint8_t skey_b[MSE_HASH_LEN] = "fuzz-torrent-bbbbbbb";
static uint8_t req2_a[MSE_HASH_LEN], req2_b[MSE_HASH_LEN];

/* The fixed keys: the side under test's, and the forged peer's. */
static uint8_t priv_us[MSE_PRIV_LEN], priv_peer[MSE_PRIV_LEN];
static uint8_t pub_us[MSE_KEY_LEN], pub_peer[MSE_KEY_LEN];
static uint8_t secret[MSE_KEY_LEN];
static bool ready;

static void
setup(void)
{
    if (ready)
        return;
    for (int i = 0; i < MSE_PRIV_LEN; i++) {
        priv_us[i] = (uint8_t)(0x31 + 3 * i);
        priv_peer[i] = (uint8_t)(0x77 ^ (5 * i));
    }
    CHECK(mse_dh_public(priv_us, pub_us) == 0);
    CHECK(mse_dh_public(priv_peer, pub_peer) == 0);
    CHECK(mse_dh_secret(priv_peer, pub_us, secret) == 0);
    CHECK(mse_req2(skey_a, req2_a) == 0);
    CHECK(mse_req2(skey_b, req2_b) == 0);
    ready = true;
}

static bool
find(void *ud, const uint8_t req2[MSE_HASH_LEN], uint8_t ret[MSE_HASH_LEN])
{
    (void)ud;
    if (memcmp(req2, req2_a, MSE_HASH_LEN) == 0) {
        memcpy(ret, skey_a, MSE_HASH_LEN);
        return true;
    }
    if (memcmp(req2, req2_b, MSE_HASH_LEN) == 0) {
        memcpy(ret, skey_b, MSE_HASH_LEN);
        return true;
    }
    return false;
}

static void
sha1_tag(uint8_t out[MSE_HASH_LEN], const char *tag)
{
    uint8_t in[4 + MSE_KEY_LEN];
    memcpy(in, tag, 4);
    memcpy(in + 4, secret, MSE_KEY_LEN);
    CHECK(EVP_Digest(in, sizeof(in), out, NULL, EVP_sha1(), NULL) == 1);
}

struct outcome {
    int r;
    unsigned selected;
    size_t ia_len;
    uint8_t ia_head[16];
    size_t used; /* of the whole stream, when done */
};

/* Run the stream through a fresh side, chunk bytes at a time (0: whole);
 * a responder without the callback answers MSE_WANT_SKEY itself. */
static void
run(bool initiator, bool callback, const uint8_t *s, size_t n, size_t chunk,
    struct outcome *o)
{
    struct mse_params p;
    memset(&p, 0, sizeof(p));
    p.initiator = initiator;
    memcpy(p.skey, skey_a, MSE_HASH_LEN);
    p.crypto = MSE_CRYPTO_ALL;
    p.ia = initiator ? (const uint8_t *)"ia" : NULL;
    p.ia_len = initiator ? 2 : 0;
    p.ia_max = 300;
    p.find_skey = callback ? find : NULL;
    p.priv = priv_us;
    struct mse *m;
    CHECK(mse_new(&m, &p) == 0);
    memset(o, 0, sizeof(*o));
    size_t off = 0;
    int r = MSE_MORE;
    while (off < n) {
        size_t k = chunk && chunk < n - off ? chunk : n - off;
        size_t used = SIZE_MAX;
        r = mse_input(m, s + off, k, &used);
        if (r == MSE_WANT_SKEY) {
            CHECK(!initiator && !callback && used <= k);
            off += used;
            uint8_t sk[MSE_HASH_LEN];
            bool found = find(NULL, mse_req2_seen(m), sk);
            r = mse_set_skey(m, found ? sk : NULL);
            CHECK(r == 0 || r == MSE_E_UNKNOWN_SKEY);
            if (r < 0)
                break;
            continue;
        }
        if (r < 0)
            break;
        CHECK(r == MSE_MORE || r == MSE_DONE);
        CHECK(used <= k);
        if (r == MSE_MORE)
            CHECK(used == k);
        off += used;
        size_t ol;
        (void)mse_output(m, &ol);
        CHECK(ol <= MSE_KEY_LEN + MSE_PAD_MAX + 2 * MSE_HASH_LEN + 16 +
                        MSE_PAD_MAX + 2 + 2);
        mse_output_consumed(m, ol);
        if (r == MSE_DONE)
            break;
    }
    o->r = r;
    if (r < 0) {
        CHECK(r > MSE_E_MIN);
        CHECK(strcmp(mse_strerror(r), "unknown error") != 0);
        CHECK(r != MSE_E_STATE && r != MSE_E_PARAMS);
        CHECK(mse_input(m, s, n ? 1 : 0, NULL) == r); /* sticky */
    } else if (r == MSE_DONE) {
        o->selected = mse_selected(m);
        CHECK(o->selected == MSE_CRYPTO_PLAIN || o->selected == MSE_CRYPTO_RC4);
        const uint8_t *ia = mse_ia(m, &o->ia_len);
        CHECK(o->ia_len <= 300);
        memcpy(o->ia_head, ia, o->ia_len < 16 ? o->ia_len : 16);
        o->used = off;
        CHECK(mse_input(m, s, n ? 1 : 0, NULL) == MSE_E_STATE);
        uint8_t x[4] = {1, 2, 3, 4};
        mse_decrypt(m, x, x, sizeof(x));
        mse_trim(m);
    } else {
        CHECK(off == n);
    }
    mse_free(m);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < FUZZ_HEAD)
        return 0;
    setup();
    int mode = data[0] & 3;
    size_t chunk = 1 + data[1] % 64;
    const uint8_t *rest = data + FUZZ_HEAD;
    size_t n = size - FUZZ_HEAD;
    if (n > 4096)
        return 0; /* past every limit: nothing new to find */

    uint8_t *s = malloc(MSE_KEY_LEN + MSE_PAD_MAX + 2 * MSE_HASH_LEN + n + 1);
    if (!s)
        abort();
    size_t len = 0;
    bool initiator = mode >= 2;
    if (mode == 0 || mode == 2) {
        memcpy(s, rest, n);
        len = n;
    } else {
        /* A valid prefix from the forged peer, then rest encrypted. */
        size_t pad = n ? (size_t)rest[0] * 2 % (MSE_PAD_MAX + 1) : 0;
        memcpy(s, pub_peer, MSE_KEY_LEN);
        len = MSE_KEY_LEN;
        memset(s + len, 0x5c, pad);
        len += pad;
        if (mode == 1) {
            uint8_t req1[MSE_HASH_LEN], req3[MSE_HASH_LEN];
            sha1_tag(req1, "req1");
            sha1_tag(req3, "req3");
            const uint8_t *r2 = n > 1 && (rest[1] & 1) ? req2_b : req2_a;
            memcpy(s + len, req1, MSE_HASH_LEN);
            len += MSE_HASH_LEN;
            for (int i = 0; i < MSE_HASH_LEN; i++)
                s[len + i] = r2[i] ^ req3[i];
            len += MSE_HASH_LEN;
        }
        struct mse_rc4 *enc;
        const uint8_t *sk =
            mode == 1 && n > 1 && (rest[1] & 1) ? skey_b : skey_a;
        CHECK(mse_rc4_new_stream(&enc, secret, sk, mode == 1) == 0);
        size_t body = n > 2 ? n - 2 : 0;
        if (body)
            mse_rc4_apply(enc, s + len, rest + 2, body);
        len += body;
        mse_rc4_free(enc);
    }

    /* An exact-size copy, so that ASan sees any read past the end. */
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy)
        abort();
    memcpy(copy, s, len);
    free(s);

    struct outcome whole, cut;
    bool callback = !(data[1] & 0x40);
    run(initiator, callback, copy, len, 0, &whole);
    run(initiator, callback, copy, len, chunk, &cut);
    CHECK(whole.r == cut.r);
    CHECK(whole.selected == cut.selected);
    CHECK(whole.ia_len == cut.ia_len);
    CHECK(memcmp(whole.ia_head, cut.ia_head, sizeof(whole.ia_head)) == 0);
    CHECK(whole.used == cut.used);
    free(copy);

    /* The detector on the raw bytes. */
    int d = mse_detect(rest, n);
    CHECK(d == MSE_DETECT_MORE || d == MSE_DETECT_PLAIN || d == MSE_DETECT_MSE);
    if (n >= MSE_DETECT_LEN)
        CHECK(d != MSE_DETECT_MORE);
    return 0;
}
