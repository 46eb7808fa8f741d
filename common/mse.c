/* mse — Message Stream Encryption; see mse.h for the protocol and the
 * contract.
 *
 * The machine takes bytes as they come and keeps what a step needs in a
 * small accumulator: a fixed-size field (a key, a hash, the encrypted
 * head of step 3 or 4) or the synchronisation window, which is never
 * longer than the spec's bound.  Pads and the IA are decrypted as they
 * pass.  Nothing grows with the input but the IA, capped by ia_max.
 */
#include "common/mse.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/provider.h>
#include <openssl/rand.h>

#include "common/be.h"

/* The spec's prime (768 bits; it is not the Oakley group 1 prime, whose
 * tail differs), generator 2. */
static const uint8_t dh_prime[MSE_KEY_LEN] = {
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xc9, 0x0f, 0xda, 0xa2,
    0x21, 0x68, 0xc2, 0x34, 0xc4, 0xc6, 0x62, 0x8b, 0x80, 0xdc, 0x1c, 0xd1,
    0x29, 0x02, 0x4e, 0x08, 0x8a, 0x67, 0xcc, 0x74, 0x02, 0x0b, 0xbe, 0xa6,
    0x3b, 0x13, 0x9b, 0x22, 0x51, 0x4a, 0x08, 0x79, 0x8e, 0x34, 0x04, 0xdd,
    0xef, 0x95, 0x19, 0xb3, 0xcd, 0x3a, 0x43, 0x1b, 0x30, 0x2b, 0x0a, 0x6d,
    0xf2, 0x5f, 0x14, 0x37, 0x4f, 0xe1, 0x35, 0x6d, 0x6d, 0x51, 0xc2, 0x45,
    0xe4, 0x85, 0xb5, 0x76, 0x62, 0x5e, 0x7e, 0xc6, 0xf4, 0x4c, 0x42, 0xe9,
    0xa6, 0x3a, 0x36, 0x21, 0x00, 0x00, 0x00, 0x00, 0x00, 0x09, 0x05, 0x63,
};

/* Fields of step 3 after the two hashes: VC, crypto_provide, len(PadC);
 * of step 4 after the VC that the search found: crypto_select,
 * len(PadD). */
#define HEAD3_LEN (MSE_VC_LEN + 4 + 2)
#define HEAD4_LEN (4 + 2)
/* The most we ever queue: step 1 or 2, then step 3 (or 4) and the IA. */
#define OUT_BASE                                                               \
    (MSE_KEY_LEN + MSE_PAD_MAX + 2 * MSE_HASH_LEN + HEAD3_LEN + MSE_PAD_MAX + 2)

const char *
mse_strerror(int err)
{
    switch (err) {
    case MSE_E_NOMEM:
        return "out of memory";
    case MSE_E_CRYPTO:
        return "cryptographic library failure";
    case MSE_E_PARAMS:
        return "invalid handshake parameters";
    case MSE_E_DH_KEY:
        return "peer's public key out of range";
    case MSE_E_SYNC_REQ1:
        return "no HASH('req1', S) within the padding limit";
    case MSE_E_SYNC_VC:
        return "no encrypted VC within the padding limit";
    case MSE_E_UNKNOWN_SKEY:
        return "the peer's SKEY names no torrent of ours";
    case MSE_E_VC:
        return "verification constant is not zero";
    case MSE_E_PROVIDE:
        return "no allowed method in crypto_provide";
    case MSE_E_SELECT:
        return "crypto_select is not one of the methods provided";
    case MSE_E_PAD_LEN:
        return "padding length over 512";
    case MSE_E_IA_LEN:
        return "initial payload too long";
    case MSE_E_STATE:
        return "handshake call out of order";
    default:
        return "unknown error";
    }
}

/* ---- RC4 ----------------------------------------------------------- */

struct mse_rc4 {
    EVP_CIPHER_CTX *evp; /* owned; NULL: the built-in RC4 below */
    uint8_t i, j;
    uint8_t s[256];
};

/* OpenSSL's RC4, fetched once from the legacy provider loaded into a
 * private library context (see mse.h).  Written once by rc4_load() under
 * pthread_once, read-only after; the context and provider live as long
 * as the process. */
static pthread_once_t rc4_once = PTHREAD_ONCE_INIT;
static OSSL_LIB_CTX *rc4_lib;
static OSSL_PROVIDER *rc4_prov;
static EVP_CIPHER *rc4_cipher;

static void
rc4_load(void)
{
    OSSL_LIB_CTX *lib = OSSL_LIB_CTX_new();
    OSSL_PROVIDER *prov = lib ? OSSL_PROVIDER_load(lib, "legacy") : NULL;
    EVP_CIPHER *c = prov ? EVP_CIPHER_fetch(lib, "RC4", NULL) : NULL;
    if (!c) {
        if (prov)
            (void)OSSL_PROVIDER_unload(prov);
        OSSL_LIB_CTX_free(lib);
        ERR_clear_error(); /* not an error of the caller's */
        return;
    }
    rc4_lib = lib;
    rc4_prov = prov;
    rc4_cipher = c;
}

bool
mse_rc4_openssl(void)
{
    (void)pthread_once(&rc4_once, rc4_load);
    return rc4_cipher != NULL;
}

static void
rc4_builtin_key(struct mse_rc4 *c, const uint8_t *key, size_t len)
{
    for (int i = 0; i < 256; i++)
        c->s[i] = (uint8_t)i;
    uint8_t j = 0;
    for (size_t i = 0; i < 256; i++) {
        uint8_t t = c->s[i];
        j = (uint8_t)(j + t + key[i % len]);
        c->s[i] = c->s[j];
        c->s[j] = t;
    }
    c->i = c->j = 0;
}

static void
rc4_builtin_apply(struct mse_rc4 *c, uint8_t *dst, const uint8_t *src, size_t n)
{
    uint8_t i = c->i, j = c->j;
    uint8_t *s = c->s;
    for (size_t k = 0; k < n; k++) {
        i++;
        uint8_t a = s[i];
        j = (uint8_t)(j + a);
        uint8_t b = s[j];
        s[i] = b;
        s[j] = a;
        dst[k] = src[k] ^ s[(uint8_t)(a + b)];
    }
    c->i = i;
    c->j = j;
}

void
mse_rc4_apply(struct mse_rc4 *c, void *dst, const void *src, size_t n)
{
    uint8_t *d = dst;
    const uint8_t *s = src;
    if (!c->evp) {
        rc4_builtin_apply(c, d, s, n);
        return;
    }
    while (n > 0) {
        int k = n > (size_t)INT_MAX / 2 ? INT_MAX / 2 : (int)n;
        int outl = 0;
        /* RC4 in OpenSSL does not fail once keyed; a failure would be
         * a library bug, and garbage on the wire makes the peer close. */
        (void)EVP_EncryptUpdate(c->evp, d, &outl, s, k);
        d += k;
        s += k;
        n -= (size_t)k;
    }
}

int
mse_rc4_new(struct mse_rc4 **ret, const uint8_t *key, size_t len,
            size_t discard, bool builtin)
{
    if (!key || len == 0 || len > 256)
        return MSE_E_PARAMS;
    struct mse_rc4 *c = OPENSSL_zalloc(sizeof(*c));
    if (!c)
        return MSE_E_NOMEM;
    if (!builtin && mse_rc4_openssl()) {
        c->evp = EVP_CIPHER_CTX_new();
        if (!c->evp ||
            EVP_EncryptInit_ex2(c->evp, rc4_cipher, NULL, NULL, NULL) != 1 ||
            EVP_CIPHER_CTX_set_key_length(c->evp, (int)len) != 1 ||
            EVP_EncryptInit_ex2(c->evp, NULL, key, NULL, NULL) != 1) {
            EVP_CIPHER_CTX_free(c->evp);
            OPENSSL_free(c);
            ERR_clear_error();
            return MSE_E_CRYPTO;
        }
    } else {
        rc4_builtin_key(c, key, len);
    }
    uint8_t junk[256];
    memset(junk, 0, sizeof(junk));
    while (discard > 0) {
        size_t k = discard < sizeof(junk) ? discard : sizeof(junk);
        mse_rc4_apply(c, junk, junk, k);
        discard -= k;
    }
    OPENSSL_cleanse(junk, sizeof(junk));
    *ret = c;
    return 0;
}

void
mse_rc4_free(struct mse_rc4 *c)
{
    if (!c)
        return;
    EVP_CIPHER_CTX_free(c->evp);
    OPENSSL_clear_free(c, sizeof(*c));
}

/* ---- hashes and DH -------------------------------------------------- */

/* SHA-1 of tag (4 bytes) | a | b. */
static int
hash_tag(uint8_t out[MSE_HASH_LEN], const char *tag, const uint8_t *a,
         size_t alen, const uint8_t *b, size_t blen)
{
    uint8_t in[4 + MSE_KEY_LEN + MSE_HASH_LEN];
    if (alen + blen > sizeof(in) - 4)
        return MSE_E_PARAMS;
    memcpy(in, tag, 4);
    if (alen)
        memcpy(in + 4, a, alen);
    if (blen)
        memcpy(in + 4 + alen, b, blen);
    unsigned n = 0;
    int r = EVP_Digest(in, 4 + alen + blen, out, &n, EVP_sha1(), NULL);
    OPENSSL_cleanse(in, sizeof(in));
    if (r != 1 || n != MSE_HASH_LEN) {
        ERR_clear_error();
        return MSE_E_CRYPTO;
    }
    return 0;
}

int
mse_req2(const uint8_t skey[MSE_HASH_LEN], uint8_t ret[MSE_HASH_LEN])
{
    return hash_tag(ret, "req2", skey, MSE_HASH_LEN, NULL, 0);
}

/* base^priv mod P into out (MSE_KEY_LEN bytes); base NULL means 2.  A
 * peer's key must be in 2 .. P-2 (0, 1 and P-1 give a secret anyone
 * knows). */
static int
dh_modexp(const uint8_t priv[MSE_PRIV_LEN], const uint8_t *base,
          uint8_t out[MSE_KEY_LEN])
{
    int ret = MSE_E_CRYPTO;
    BN_CTX *ctx = BN_CTX_secure_new();
    BIGNUM *p = BN_bin2bn(dh_prime, MSE_KEY_LEN, NULL);
    BIGNUM *x = BN_secure_new();
    BIGNUM *g = BN_new();
    BIGNUM *y = BN_secure_new();
    BIGNUM *lim = BN_new();
    if (!ctx || !p || !x || !g || !y || !lim)
        goto out;
    if (!BN_bin2bn(priv, MSE_PRIV_LEN, x))
        goto out;
    BN_set_flags(x, BN_FLG_CONSTTIME);
    if (base) {
        if (!BN_bin2bn(base, MSE_KEY_LEN, g) || !BN_sub(lim, p, BN_value_one()))
            goto out;
        if (BN_cmp(g, BN_value_one()) <= 0 || BN_cmp(g, lim) >= 0) {
            ret = MSE_E_DH_KEY;
            goto out;
        }
    } else if (!BN_set_word(g, 2)) {
        goto out;
    }
    if (!BN_mod_exp(y, g, x, p, ctx) || BN_bn2binpad(y, out, MSE_KEY_LEN) < 0)
        goto out;
    ret = 0;
out:
    BN_clear_free(y);
    BN_free(lim);
    BN_free(g);
    BN_clear_free(x);
    BN_free(p);
    BN_CTX_free(ctx);
    if (ret == MSE_E_CRYPTO)
        ERR_clear_error();
    return ret;
}

int
mse_dh_public(const uint8_t priv[MSE_PRIV_LEN], uint8_t ret_pub[MSE_KEY_LEN])
{
    uint8_t pub[MSE_KEY_LEN];
    int r = dh_modexp(priv, NULL, pub);
    if (r == 0)
        memcpy(ret_pub, pub, MSE_KEY_LEN);
    return r;
}

int
mse_dh_secret(const uint8_t priv[MSE_PRIV_LEN],
              const uint8_t peer_pub[MSE_KEY_LEN],
              uint8_t ret_secret[MSE_KEY_LEN])
{
    uint8_t s[MSE_KEY_LEN];
    int r = dh_modexp(priv, peer_pub, s);
    if (r == 0)
        memcpy(ret_secret, s, MSE_KEY_LEN);
    OPENSSL_cleanse(s, sizeof(s));
    return r;
}

int
mse_rc4_new_stream(struct mse_rc4 **ret, const uint8_t s[MSE_KEY_LEN],
                   const uint8_t skey[MSE_HASH_LEN], bool from_initiator)
{
    uint8_t key[MSE_HASH_LEN];
    int r = hash_tag(key, from_initiator ? "keyA" : "keyB", s, MSE_KEY_LEN,
                     skey, MSE_HASH_LEN);
    if (r == 0)
        r = mse_rc4_new(ret, key, sizeof(key), MSE_DISCARD, false);
    OPENSSL_cleanse(key, sizeof(key));
    return r;
}

/* ---- the handshake -------------------------------------------------- */

enum mse_state {
    ST_KEY,       /* the peer's public key */
    ST_SYNC,      /* B: HASH('req1', S) / A: ENCRYPT(VC), after the pad */
    ST_SKEY,      /* B: HASH('req2', SKEY) xor HASH('req3', S) */
    ST_SKEY_WAIT, /* B: for mse_set_skey() */
    ST_HEAD,      /* B: HEAD3_LEN bytes / A: HEAD4_LEN bytes, encrypted */
    ST_PAD,       /* B: PadC / A: PadD, decrypted and dropped */
    ST_IA_LEN,    /* B: len(IA) */
    ST_IA,        /* B: the IA */
    ST_DONE,
    ST_FAILED,
};

struct mse {
    bool initiator;
    enum mse_state st;
    int err;           /* ST_FAILED: the error */
    unsigned crypto;   /* A: provided; B: allowed */
    bool prefer_plain; /* B: plaintext over RC4 when both are offered */
    unsigned provided; /* B: the peer's crypto_provide */
    unsigned selected;
    unsigned pad_max, pad_cd_max;
    size_t ia_max;
    mse_skey_fn find_skey;
    void *find_ud;

    uint8_t priv[MSE_PRIV_LEN];
    uint8_t pub[MSE_KEY_LEN];
    uint8_t s[MSE_KEY_LEN];
    uint8_t skey[MSE_HASH_LEN];
    bool have_skey;
    uint8_t req1[MSE_HASH_LEN];
    uint8_t req3[MSE_HASH_LEN];
    uint8_t req2_seen[MSE_HASH_LEN];
    uint8_t vc_enc[MSE_VC_LEN]; /* A: ENCRYPT(VC) under B's keystream */
    struct mse_rc4 *enc;        /* owned: what we send */
    struct mse_rc4 *dec;        /* owned: what we receive */

    /* The accumulator: a field being collected, or the sync window. */
    uint8_t acc[MSE_SYNC_REQ1];
    size_t acc_len;
    size_t scanned; /* sync: window offsets already compared */
    size_t pad_left;

    uint8_t *ia; /* owned: A's to send (until step 3), or B's
                  * received; NULL if none */
    size_t ia_len, ia_have;

    uint8_t *out; /* owned: bytes to send */
    size_t out_len, out_off, out_cap;
};

static int
fail(struct mse *m, int err)
{
    m->st = ST_FAILED;
    m->err = err;
    return err;
}

static int
rand_bytes(void *p, size_t n)
{
    if (n && RAND_bytes(p, (int)n) != 1) {
        ERR_clear_error();
        return MSE_E_CRYPTO;
    }
    return 0;
}

/* A random length in 0 .. max (max <= MSE_PAD_MAX). */
static int
rand_len(unsigned max, size_t *ret)
{
    uint8_t b[2];
    if (max == 0) {
        *ret = 0;
        return 0;
    }
    int r = rand_bytes(b, sizeof(b));
    if (r == 0)
        *ret = (((size_t)b[0] << 8) | b[1]) % (max + 1);
    return r;
}

/* Room for n more output bytes (the buffer is sized at mse_new() for
 * the whole handshake: this never grows it). */
static uint8_t *
out_room(struct mse *m, size_t n)
{
    if (m->out_len + n > m->out_cap)
        return NULL;
    uint8_t *p = m->out + m->out_len;
    m->out_len += n;
    return p;
}

/* Our public key and a random pad (step 1 or 2). */
static int
out_key(struct mse *m)
{
    size_t pad = 0;
    int r = rand_len(m->pad_max, &pad);
    if (r < 0)
        return r;
    uint8_t *p = out_room(m, MSE_KEY_LEN + pad);
    if (!p)
        return MSE_E_STATE;
    memcpy(p, m->pub, MSE_KEY_LEN);
    return rand_bytes(p + MSE_KEY_LEN, pad);
}

static int
mk_streams(struct mse *m)
{
    /* A sends under keyA, B under keyB. */
    int r = mse_rc4_new_stream(&m->enc, m->s, m->skey, m->initiator);
    if (r == 0)
        r = mse_rc4_new_stream(&m->dec, m->s, m->skey, !m->initiator);
    return r;
}

/* A, once S is known: step 3. */
static int
out_step3(struct mse *m)
{
    uint8_t req2[MSE_HASH_LEN];
    size_t padc = 0;
    int r = mse_req2(m->skey, req2);
    if (r == 0)
        r = rand_len(m->pad_cd_max, &padc);
    if (r == 0)
        r = mk_streams(m);
    if (r < 0)
        return r;
    size_t n = 2 * MSE_HASH_LEN + HEAD3_LEN + padc + 2 + m->ia_len;
    uint8_t *p = out_room(m, n);
    if (!p)
        return MSE_E_STATE;
    memcpy(p, m->req1, MSE_HASH_LEN);
    for (int i = 0; i < MSE_HASH_LEN; i++)
        p[MSE_HASH_LEN + i] = req2[i] ^ m->req3[i];
    uint8_t *e = p + 2 * MSE_HASH_LEN;
    memset(e, 0, MSE_VC_LEN);
    be32_put(e + MSE_VC_LEN, m->crypto);
    be16_put(e + MSE_VC_LEN + 4, (unsigned)padc);
    memset(e + HEAD3_LEN, 0, padc);
    be16_put(e + HEAD3_LEN + padc, (unsigned)m->ia_len);
    if (m->ia_len)
        memcpy(e + HEAD3_LEN + padc + 2, m->ia, m->ia_len);
    mse_rc4_apply(m->enc, e, e, HEAD3_LEN + padc + 2 + m->ia_len);
    OPENSSL_free(m->ia);
    m->ia = NULL;
    m->ia_len = 0;
    /* What B's VC looks like under B's keystream; the decrypting stream
     * is then where B's crypto_select starts. */
    memset(m->vc_enc, 0, MSE_VC_LEN);
    mse_rc4_apply(m->dec, m->vc_enc, m->vc_enc, MSE_VC_LEN);
    return 0;
}

/* B, once crypto_provide and the IA are in: step 4. */
static int
out_step4(struct mse *m)
{
    size_t padd = 0;
    int r = rand_len(m->pad_cd_max, &padd);
    if (r < 0)
        return r;
    size_t n = MSE_VC_LEN + HEAD4_LEN + padd;
    uint8_t *p = out_room(m, n);
    if (!p)
        return MSE_E_STATE;
    memset(p, 0, n);
    be32_put(p + MSE_VC_LEN, m->selected);
    be16_put(p + MSE_VC_LEN + 4, (unsigned)padd);
    mse_rc4_apply(m->enc, p, p, n);
    return 0;
}

int
mse_new(struct mse **ret, const struct mse_params *p)
{
    if (!p || p->crypto == 0 || (p->crypto & ~(unsigned)MSE_CRYPTO_ALL))
        return MSE_E_PARAMS;
    if (p->initiator && (p->ia_len > MSE_IA_LEN_MAX || (!p->ia && p->ia_len)))
        return MSE_E_PARAMS;
    if (!p->initiator && p->ia_max > MSE_IA_LEN_MAX)
        return MSE_E_PARAMS;
    struct mse *m = OPENSSL_zalloc(sizeof(*m));
    if (!m)
        return MSE_E_NOMEM;
    m->initiator = p->initiator;
    m->crypto = p->crypto;
    m->prefer_plain = p->prefer_plain;
    m->pad_max = p->pad_max > MSE_PAD_MAX ? MSE_PAD_MAX : p->pad_max;
    m->pad_cd_max = p->pad_cd_max > MSE_PAD_MAX ? MSE_PAD_MAX : p->pad_cd_max;
    m->ia_max = p->ia_max ? p->ia_max : MSE_IA_DEFAULT_MAX;
    m->find_skey = p->find_skey;
    m->find_ud = p->find_ud;
    m->st = ST_KEY;
    int r = 0;
    if (p->initiator) {
        memcpy(m->skey, p->skey, MSE_HASH_LEN);
        m->have_skey = true;
        if (p->ia_len) {
            m->ia = OPENSSL_malloc(p->ia_len);
            if (!m->ia) {
                r = MSE_E_NOMEM;
                goto fail;
            }
            memcpy(m->ia, p->ia, p->ia_len);
            m->ia_len = p->ia_len;
        }
    }
    m->out_cap = OUT_BASE + m->ia_len;
    m->out = OPENSSL_malloc(m->out_cap);
    if (!m->out) {
        r = MSE_E_NOMEM;
        goto fail;
    }
    if (p->priv) {
        memcpy(m->priv, p->priv, MSE_PRIV_LEN);
    } else {
        /* 160 random bits; all zero (Y = 1) is redrawn. */
        static const uint8_t zero[MSE_PRIV_LEN];
        for (int i = 0; i < 4 && r == 0; i++) {
            r = rand_bytes(m->priv, MSE_PRIV_LEN);
            if (memcmp(m->priv, zero, MSE_PRIV_LEN) != 0)
                break;
        }
        if (r < 0)
            goto fail;
    }
    r = mse_dh_public(m->priv, m->pub);
    if (r < 0)
        goto fail;
    if (m->initiator) {
        r = out_key(m);
        if (r < 0)
            goto fail;
    }
    *ret = m;
    return 0;
fail:
    mse_free(m);
    return r;
}

void
mse_free(struct mse *m)
{
    if (!m)
        return;
    mse_rc4_free(m->enc);
    mse_rc4_free(m->dec);
    OPENSSL_free(m->ia);
    OPENSSL_free(m->out);
    OPENSSL_clear_free(m, sizeof(*m));
}

/* Collect the field of n bytes in the accumulator.  True when whole. */
static bool
collect(struct mse *m, size_t n, const uint8_t *in, size_t len, size_t *off)
{
    size_t take = n - m->acc_len;
    if (take > len - *off)
        take = len - *off;
    memcpy(m->acc + m->acc_len, in + *off, take);
    m->acc_len += take;
    *off += take;
    return m->acc_len == n;
}

/* Look for the target in the window.  Returns 1 when found (the bytes
 * after it given back to the input), 0 for more, or the error once the
 * window is full. */
static int
sync_step(struct mse *m, const uint8_t *in, size_t len, size_t *off)
{
    const uint8_t *target = m->initiator ? m->vc_enc : m->req1;
    size_t tlen = m->initiator ? MSE_VC_LEN : MSE_HASH_LEN;
    size_t limit = m->initiator ? MSE_SYNC_VC : MSE_SYNC_REQ1;
    size_t prev = m->acc_len;
    size_t take = limit - prev;
    if (take > len - *off)
        take = len - *off;
    memcpy(m->acc + prev, in + *off, take);
    m->acc_len += take;
    *off += take;
    for (size_t p = m->scanned; p + tlen <= m->acc_len; p++) {
        if (memcmp(m->acc + p, target, tlen) == 0) {
            /* Every offset whose end was in before this call was
             * compared then: the bytes after this one are all new. */
            size_t excess = m->acc_len - (p + tlen);
            *off -= excess;
            m->acc_len = 0;
            m->scanned = 0;
            return 1;
        }
        m->scanned = p + 1;
    }
    if (m->acc_len == limit)
        return m->initiator ? MSE_E_SYNC_VC : MSE_E_SYNC_REQ1;
    return 0;
}

/* B: SKEY is known; key the streams, read on. */
static int
skey_found(struct mse *m, const uint8_t skey[MSE_HASH_LEN])
{
    memcpy(m->skey, skey, MSE_HASH_LEN);
    m->have_skey = true;
    int r = mk_streams(m);
    if (r < 0)
        return r;
    m->st = ST_HEAD;
    return 0;
}

/* B: what to select from what A provides and we allow. */
static unsigned
select_method(unsigned provided, unsigned allowed, bool prefer_plain)
{
    unsigned both = provided & allowed;
    if (prefer_plain && (both & MSE_CRYPTO_PLAIN))
        return MSE_CRYPTO_PLAIN;
    if (both & MSE_CRYPTO_RC4)
        return MSE_CRYPTO_RC4;
    if (both & MSE_CRYPTO_PLAIN)
        return MSE_CRYPTO_PLAIN;
    return 0;
}

static int
finish(struct mse *m)
{
    if (m->selected == MSE_CRYPTO_PLAIN) {
        /* The payload goes in the clear: no keystream any more. */
        mse_rc4_free(m->enc);
        mse_rc4_free(m->dec);
        m->enc = m->dec = NULL;
    }
    OPENSSL_cleanse(m->priv, sizeof(m->priv));
    m->st = ST_DONE;
    return MSE_DONE;
}

int
mse_input(struct mse *m, const void *in_, size_t len, size_t *ret_used)
{
    const uint8_t *in = in_;
    size_t off = 0;
    int r;
    if (m->st == ST_FAILED)
        return m->err;
    if (m->st == ST_DONE)
        return MSE_E_STATE;
    if (!in && len)
        return MSE_E_PARAMS;
    for (;;) {
        switch (m->st) {
        case ST_KEY:
            if (!collect(m, MSE_KEY_LEN, in, len, &off))
                goto more;
            r = mse_dh_secret(m->priv, m->acc, m->s);
            m->acc_len = 0;
            if (r == 0)
                r = hash_tag(m->req1, "req1", m->s, MSE_KEY_LEN, NULL, 0);
            if (r == 0)
                r = hash_tag(m->req3, "req3", m->s, MSE_KEY_LEN, NULL, 0);
            if (r == 0)
                r = m->initiator ? out_step3(m) : out_key(m);
            if (r < 0)
                return fail(m, r);
            m->st = ST_SYNC;
            break;
        case ST_SYNC:
            r = sync_step(m, in, len, &off);
            if (r < 0)
                return fail(m, r);
            if (r == 0)
                goto more;
            m->st = m->initiator ? ST_HEAD : ST_SKEY;
            break;
        case ST_SKEY:
            if (!collect(m, MSE_HASH_LEN, in, len, &off))
                goto more;
            for (int i = 0; i < MSE_HASH_LEN; i++)
                m->req2_seen[i] = m->acc[i] ^ m->req3[i];
            m->acc_len = 0;
            if (!m->find_skey) {
                m->st = ST_SKEY_WAIT;
                if (ret_used)
                    *ret_used = off;
                return MSE_WANT_SKEY;
            }
            uint8_t skey[MSE_HASH_LEN];
            if (!m->find_skey(m->find_ud, m->req2_seen, skey))
                return fail(m, MSE_E_UNKNOWN_SKEY);
            r = skey_found(m, skey);
            if (r < 0)
                return fail(m, r);
            break;
        case ST_SKEY_WAIT:
            /* Asked again before the answer: nothing taken. */
            if (ret_used)
                *ret_used = 0;
            return MSE_WANT_SKEY;
        case ST_HEAD: {
            size_t n = m->initiator ? HEAD4_LEN : HEAD3_LEN;
            if (!collect(m, n, in, len, &off))
                goto more;
            mse_rc4_apply(m->dec, m->acc, m->acc, n);
            m->acc_len = 0;
            const uint8_t *h = m->acc;
            if (!m->initiator) {
                static const uint8_t vc[MSE_VC_LEN];
                if (memcmp(h, vc, MSE_VC_LEN) != 0)
                    return fail(m, MSE_E_VC);
                h += MSE_VC_LEN;
            }
            uint32_t bits = be32_get(h);
            m->pad_left = be16_get(h + 4);
            if (m->initiator) {
                if ((bits != MSE_CRYPTO_PLAIN && bits != MSE_CRYPTO_RC4) ||
                    !(bits & m->crypto))
                    return fail(m, MSE_E_SELECT);
                m->selected = bits;
            } else {
                m->provided = bits;
                m->selected = select_method(bits, m->crypto, m->prefer_plain);
                if (!m->selected)
                    return fail(m, MSE_E_PROVIDE);
            }
            if (m->pad_left > MSE_PAD_MAX)
                return fail(m, MSE_E_PAD_LEN);
            m->st = ST_PAD;
            break;
        }
        case ST_PAD: {
            uint8_t junk[MSE_PAD_MAX];
            size_t k = m->pad_left < len - off ? m->pad_left : len - off;
            mse_rc4_apply(m->dec, junk, in + off, k);
            off += k;
            m->pad_left -= k;
            if (m->pad_left)
                goto more;
            if (m->initiator)
                goto done;
            m->st = ST_IA_LEN;
            break;
        }
        case ST_IA_LEN:
            if (!collect(m, 2, in, len, &off))
                goto more;
            mse_rc4_apply(m->dec, m->acc, m->acc, 2);
            m->acc_len = 0;
            m->ia_len = be16_get(m->acc);
            m->ia_have = 0;
            if (m->ia_len > m->ia_max)
                return fail(m, MSE_E_IA_LEN);
            m->ia = OPENSSL_malloc(m->ia_len ? m->ia_len : 1);
            if (!m->ia)
                return fail(m, MSE_E_NOMEM);
            m->st = ST_IA;
            break;
        case ST_IA: {
            size_t k = m->ia_len - m->ia_have;
            if (k > len - off)
                k = len - off;
            mse_rc4_apply(m->dec, m->ia + m->ia_have, in + off, k);
            off += k;
            m->ia_have += k;
            if (m->ia_have < m->ia_len)
                goto more;
            r = out_step4(m);
            if (r < 0)
                return fail(m, r);
            goto done;
        }
        case ST_DONE:
        case ST_FAILED:
        default:
            return MSE_E_STATE; /* not reached */
        }
    }
more:
    if (ret_used)
        *ret_used = len;
    return MSE_MORE;
done:
    if (ret_used)
        *ret_used = off;
    return finish(m);
}

const uint8_t *
mse_output(const struct mse *m, size_t *ret_len)
{
    *ret_len = m->out_len - m->out_off;
    return m->out ? m->out + m->out_off : NULL;
}

void
mse_output_consumed(struct mse *m, size_t n)
{
    if (n > m->out_len - m->out_off)
        n = m->out_len - m->out_off;
    m->out_off += n;
    if (m->out_off == m->out_len)
        m->out_off = m->out_len = 0;
}

const uint8_t *
mse_req2_seen(const struct mse *m)
{
    return m->req2_seen;
}

int
mse_set_skey(struct mse *m, const uint8_t *skey)
{
    if (m->st != ST_SKEY_WAIT)
        return MSE_E_STATE;
    if (!skey)
        return fail(m, MSE_E_UNKNOWN_SKEY);
    int r = skey_found(m, skey);
    if (r < 0)
        return fail(m, r);
    return 0;
}

unsigned
mse_selected(const struct mse *m)
{
    return m->st == ST_DONE ? m->selected : 0;
}

unsigned
mse_provided(const struct mse *m)
{
    if (m->st != ST_DONE)
        return 0;
    return m->initiator ? m->crypto : m->provided;
}

const uint8_t *
mse_skey(const struct mse *m)
{
    return m->have_skey ? m->skey : NULL;
}

const uint8_t *
mse_ia(const struct mse *m, size_t *ret_len)
{
    static const uint8_t none[1];
    if (m->initiator || m->st != ST_DONE || !m->ia) {
        *ret_len = 0;
        return none;
    }
    *ret_len = m->ia_len;
    return m->ia;
}

static void
apply(struct mse_rc4 *c, void *dst, const void *src, size_t n)
{
    if (c)
        mse_rc4_apply(c, dst, src, n);
    else if (dst != src && n)
        memmove(dst, src, n);
}

void
mse_encrypt(struct mse *m, void *dst, const void *src, size_t n)
{
    apply(m->st == ST_DONE ? m->enc : NULL, dst, src, n);
}

void
mse_decrypt(struct mse *m, void *dst, const void *src, size_t n)
{
    apply(m->st == ST_DONE ? m->dec : NULL, dst, src, n);
}

void
mse_trim(struct mse *m)
{
    if (m->st != ST_DONE)
        return;
    OPENSSL_free(m->ia);
    m->ia = NULL;
    m->ia_len = m->ia_have = 0;
    if (m->out_off == m->out_len) {
        OPENSSL_free(m->out);
        m->out = NULL;
        m->out_len = m->out_off = m->out_cap = 0;
    }
    OPENSSL_cleanse(m->s, sizeof(m->s));
    OPENSSL_cleanse(m->acc, sizeof(m->acc));
}

int
mse_detect(const void *buf, size_t len)
{
    static const uint8_t head[MSE_DETECT_LEN] = "\x13"
                                                "BitTorrent protocol";
    const uint8_t *b = buf;
    size_t n = len < MSE_DETECT_LEN ? len : MSE_DETECT_LEN;
    for (size_t i = 0; i < n; i++)
        if (b[i] != head[i])
            return MSE_DETECT_MSE;
    return n == MSE_DETECT_LEN ? MSE_DETECT_PLAIN : MSE_DETECT_MORE;
}
