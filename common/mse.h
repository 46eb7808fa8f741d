/* mse — Message Stream Encryption (MSE, also "protocol encryption"), the
 * Vuze/Azureus handshake that libtorrent, Transmission and qBittorrent
 * speak: a Diffie-Hellman exchange, then an RC4 (or plaintext) stream
 * under the BitTorrent handshake.
 *
 * Thread: any (one struct mse per thread at a time).  No I/O, no
 * logging.  The only shared state is libcrypto's, plus one RC4 cipher
 * fetched once (pthread_once) and never changed after: see "RC4" below.
 *
 * The handshake (A the initiator, who knows the info-hash SKEY; B the
 * responder; S the DH secret; HASH is SHA-1):
 *
 *   1 A->B  Ya, PadA
 *   2 B->A  Yb, PadB
 *   3 A->B  HASH('req1', S), HASH('req2', SKEY) xor HASH('req3', S),
 *           ENCRYPT(VC, crypto_provide, len(PadC), PadC, len(IA)),
 *           ENCRYPT(IA)
 *   4 B->A  ENCRYPT(VC, crypto_select, len(PadD), PadD),
 *           ENCRYPT2(payload stream)
 *   5 A->B  ENCRYPT2(payload stream)
 *
 * Ya, Yb: 768-bit DH public keys (MSE_KEY_LEN bytes, big endian), prime
 * P of the spec, generator 2, private keys of 160 bits.  Pads: 0 to 512
 * bytes (PadA/PadB random bytes in the clear, PadC/PadD encrypted).  VC:
 * 8 zero bytes.  crypto_provide / crypto_select: 32-bit bit sets
 * (MSE_CRYPTO_PLAIN, MSE_CRYPTO_RC4); the lengths are 16-bit; all big
 * endian.  ENCRYPT is RC4 keyed HASH('keyA', S, SKEY) from A to B and
 * HASH('keyB', S, SKEY) from B to A, the first 1024 bytes of each
 * keystream discarded; it covers the rest of step 3 and all of step 4
 * whatever is selected.  ENCRYPT2 is the same keystream going on if RC4
 * was selected, or nothing (plaintext) after the handshake.  IA, the
 * initial payload, is the start of A's payload stream (usually A's
 * BitTorrent handshake), always sent under RC4.
 *
 * Synchronisation: pads have unknown lengths, so B looks for
 * HASH('req1', S) within the MSE_SYNC_REQ1 bytes after Ya and A looks
 * for ENCRYPT(VC) within the MSE_SYNC_VC bytes after Yb (the spec's
 * bounds); a peer that does not synchronise within them is refused.
 *
 * Use: mse_new() for one side; loop { send mse_output() (and
 * mse_output_consumed()), feed what the peer sent to mse_input() } until
 * it returns MSE_DONE.  Then mse_selected() tells the method and the
 * bytes of the last input after *ret_used are the payload stream; with
 * RC4, every byte in goes through mse_decrypt() and every byte out
 * through mse_encrypt() for the rest of the connection.  The responder
 * finds SKEY among its torrents from HASH('req2', SKEY) (mse_req2()),
 * through a callback or by answering MSE_WANT_SKEY with mse_set_skey().
 * Whether a stream is MSE at all (or a plaintext BitTorrent handshake) is
 * mse_detect()'s business, before any of this.
 *
 * RC4.  OpenSSL 3 has RC4 only in its legacy provider, which Debian 12's
 * libssl3 package ships (ossl-modules/legacy.so).  It is loaded into a
 * private library context (OSSL_LIB_CTX), so the process's default
 * context and its providers are untouched, once per process; the cipher
 * is an assembler implementation, measured at 1.1-1.3 times the speed of
 * the plain C one here.  Where the legacy provider cannot be loaded (a
 * build without it, a FIPS-only setup) a built-in RC4 (a few lines,
 * checked against the RFC 6229 vectors in the unit tests) takes its
 * place: MSE must not depend on a module a distribution may leave out.
 */
#ifndef TD_COMMON_MSE_H
#define TD_COMMON_MSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* --- constants of the protocol --- */
#define MSE_KEY_LEN 96       /* DH public keys and the secret S: 768 bits */
#define MSE_PRIV_LEN 20      /* private keys: 160 bits */
#define MSE_HASH_LEN 20      /* SHA-1; also SKEY, the info-hash */
#define MSE_VC_LEN 8         /* the verification constant: 8 zero bytes */
#define MSE_PAD_MAX 512      /* PadA, PadB, PadC, PadD: 0 .. 512 bytes */
#define MSE_DISCARD 1024     /* keystream bytes dropped before use */
#define MSE_IA_LEN_MAX 65535 /* what len(IA) can say */
/* B finds HASH('req1', S) within this many bytes after Ya (PadA + the
 * hash), A finds ENCRYPT(VC) within this many after Yb (PadB + VC). */
#define MSE_SYNC_REQ1 (MSE_PAD_MAX + MSE_HASH_LEN) /* 532 */
#define MSE_SYNC_VC (MSE_PAD_MAX + MSE_VC_LEN)     /* 520 */
/* The IA a responder takes by default: a BitTorrent handshake is 68
 * bytes; a little room for clients that send more. */
#define MSE_IA_DEFAULT_MAX 1024

/* crypto_provide / crypto_select bits. */
enum mse_crypto {
    MSE_CRYPTO_PLAIN = 0x01,
    MSE_CRYPTO_RC4 = 0x02,
};
#define MSE_CRYPTO_ALL (MSE_CRYPTO_PLAIN | MSE_CRYPTO_RC4)

/* Results of mse_input(). */
#define MSE_MORE 0      /* all input taken: send mse_output(), feed more */
#define MSE_DONE 1      /* the handshake is complete */
#define MSE_WANT_SKEY 2 /* responder: answer with mse_set_skey() */

/* Errors: each is a distinct value with mse_strerror().  After one, the
 * handshake is dead: every later mse_input() returns the same error. */
enum mse_error {
    MSE_E_NOMEM = -1,        /* out of memory */
    MSE_E_CRYPTO = -2,       /* libcrypto failed (DH, SHA-1, random, RC4) */
    MSE_E_PARAMS = -3,       /* struct mse_params is inconsistent */
    MSE_E_DH_KEY = -4,       /* the peer's public key is 0, 1, P-1 or more */
    MSE_E_SYNC_REQ1 = -5,    /* B: no HASH('req1', S) within MSE_SYNC_REQ1
                              * bytes after Ya */
    MSE_E_SYNC_VC = -6,      /* A: no ENCRYPT(VC) within MSE_SYNC_VC bytes
                              * after Yb */
    MSE_E_UNKNOWN_SKEY = -7, /* B: HASH('req2', SKEY) names no torrent */
    MSE_E_VC = -8,           /* B: the decrypted VC is not zero (the peer
                              * used another SKEY or S) */
    MSE_E_PROVIDE = -9,      /* B: crypto_provide holds no method allowed */
    MSE_E_SELECT = -10,      /* A: crypto_select is not exactly one of the
                              * methods provided */
    MSE_E_PAD_LEN = -11,     /* len(PadC) or len(PadD) over MSE_PAD_MAX */
    MSE_E_IA_LEN = -12,      /* B: len(IA) over the limit (ia_max) */
    MSE_E_STATE = -13,       /* a call out of order: input after the end,
                              * mse_set_skey() when not asked, ... */
    MSE_E_MIN = -14
};

/* A static message for an error value ("unknown error" for others). */
const char *mse_strerror(int err);

/* A responder's lookup: HASH('req2', SKEY) -> SKEY.  Returns true and
 * writes ret_skey if one of our torrents has that hash, else false. */
typedef bool (*mse_skey_fn)(void *ud, const uint8_t req2[MSE_HASH_LEN],
                            uint8_t ret_skey[MSE_HASH_LEN]);

struct mse_params {
    bool initiator;
    /* Initiator: SKEY, the info-hash (copied). */
    uint8_t skey[MSE_HASH_LEN];
    /* Initiator: crypto_provide (the methods offered).  Responder: the
     * methods allowed; it selects RC4 if provided and allowed, else
     * plaintext (prefer_plain: the other way round).  Only enum
     * mse_crypto bits; not 0. */
    unsigned crypto;
    /* Responder: where the peer offers both, select plaintext (what
     * libtorrent does by default: the handshake is obfuscated, the data
     * is not, and costs no cipher). */
    bool prefer_plain;
    /* Initiator: the initial payload, copied (ia_len <= MSE_IA_LEN_MAX;
     * NULL with 0: none). */
    const uint8_t *ia;
    size_t ia_len;
    /* Responder: the longest IA taken (0: MSE_IA_DEFAULT_MAX; at most
     * MSE_IA_LEN_MAX). */
    size_t ia_max;
    /* Responder: the lookup (NULL: mse_input() returns MSE_WANT_SKEY). */
    mse_skey_fn find_skey;
    void *find_ud;
    /* Our pads are random lengths in 0 .. pad_max (PadA or PadB) and
     * 0 .. pad_cd_max (PadC or PadD); above MSE_PAD_MAX means
     * MSE_PAD_MAX.  0 sends none. */
    unsigned pad_max;
    unsigned pad_cd_max;
    /* Tests: our private key (NULL: MSE_PRIV_LEN random bytes). */
    const uint8_t *priv;
};

struct mse;

/* Start one side.  The initiator's step 1 (Ya, PadA) is in mse_output()
 * at once.  Returns 0 and *ret (free with mse_free()), or MSE_E_PARAMS,
 * MSE_E_NOMEM, MSE_E_CRYPTO. */
int mse_new(struct mse **ret, const struct mse_params *p);

/* Free (NULL is fine); wipes the keys. */
void mse_free(struct mse *m);

/* Feed bytes the peer sent, in[0..len) (any split: a byte at a time gives
 * the same result as all at once).  Returns
 *   MSE_MORE       every byte taken (*ret_used = len); more are needed
 *   MSE_WANT_SKEY  responder without find_skey: the peer's
 *                  HASH('req2', SKEY) is mse_req2_seen(); call
 *                  mse_set_skey(), then mse_input() with the rest of in
 *                  (after *ret_used)
 *   MSE_DONE       the handshake is complete: in[0..*ret_used) was
 *                  handshake, what follows is the payload stream (still
 *                  encrypted: mse_decrypt() it if RC4 was selected)
 *   < 0            an enum mse_error (*ret_used not written)
 * New output may be waiting after any call: send it before waiting for
 * the peer.  ret_used may be NULL. */
int mse_input(struct mse *m, const void *in, size_t len, size_t *ret_used);

/* The bytes to send now (*ret_len of them; 0: none), borrowed until the
 * next call on m; then mse_output_consumed() with what went out. */
const uint8_t *mse_output(const struct mse *m, size_t *ret_len);
void mse_output_consumed(struct mse *m, size_t n);

/* Responder, after MSE_WANT_SKEY: the peer's HASH('req2', SKEY). */
const uint8_t *mse_req2_seen(const struct mse *m);

/* Responder, after MSE_WANT_SKEY: the torrent's info-hash, or NULL (not
 * ours: the handshake fails with MSE_E_UNKNOWN_SKEY).  Returns 0 or an
 * error (MSE_E_STATE, MSE_E_CRYPTO, MSE_E_NOMEM, MSE_E_UNKNOWN_SKEY). */
int mse_set_skey(struct mse *m, const uint8_t *skey);

/* After MSE_DONE. */
/* The method selected: MSE_CRYPTO_PLAIN or MSE_CRYPTO_RC4 (0 before). */
unsigned mse_selected(const struct mse *m);
/* What the initiator provided (the responder's view; 0 before). */
unsigned mse_provided(const struct mse *m);
/* SKEY (the info-hash) of the connection, or NULL before it is known. */
const uint8_t *mse_skey(const struct mse *m);
/* Responder: the initial payload, decrypted (borrowed from m; *ret_len 0
 * and a non-NULL pointer if there was none). */
const uint8_t *mse_ia(const struct mse *m, size_t *ret_len);

/* After MSE_DONE with RC4: apply the keystream to n bytes, from src to
 * dst (which may be the same buffer; otherwise they must not overlap).
 * Encrypt what we send, decrypt what we receive, in stream order.  With
 * plaintext selected (or before MSE_DONE) these copy and do nothing
 * else. */
void mse_encrypt(struct mse *m, void *dst, const void *src, size_t n);
void mse_decrypt(struct mse *m, void *dst, const void *src, size_t n);

/* Free what only the handshake needed (the IA, the buffers, the DH
 * state), keeping the ciphers: call it after MSE_DONE once mse_ia() and
 * mse_output() are dealt with.  mse_ia() is then empty. */
void mse_trim(struct mse *m);

/* --- telling MSE from a plaintext handshake --- */

#define MSE_DETECT_MORE 0  /* too few bytes to tell */
#define MSE_DETECT_PLAIN 1 /* 0x13 "BitTorrent protocol": plaintext */
#define MSE_DETECT_MSE 2   /* anything else: an MSE Ya */
#define MSE_DETECT_LEN 20  /* the most bytes mse_detect() looks at */

/* What a stream that starts with buf[0..len) is.  The first 20 bytes are
 * compared, not just the first: a Ya may begin with 0x13. */
int mse_detect(const void *buf, size_t len);

/* --- pieces of the protocol, for tests and lookup tables --- */

/* HASH('req2', skey): what a responder compares (a table of these for
 * its torrents replaces a lookup that hashes on every connection).
 * Returns 0 or MSE_E_CRYPTO. */
int mse_req2(const uint8_t skey[MSE_HASH_LEN], uint8_t ret[MSE_HASH_LEN]);

/* DH: Y = 2^priv mod P; S = peer^priv mod P (MSE_E_DH_KEY for a peer key
 * out of range).  Big endian, zero-padded to MSE_KEY_LEN.  Return 0 or an
 * error. */
int mse_dh_public(const uint8_t priv[MSE_PRIV_LEN],
                  uint8_t ret_pub[MSE_KEY_LEN]);
int mse_dh_secret(const uint8_t priv[MSE_PRIV_LEN],
                  const uint8_t peer_pub[MSE_KEY_LEN],
                  uint8_t ret_secret[MSE_KEY_LEN]);

/* A bare RC4 keystream. */
struct mse_rc4;

/* RC4 keyed with key[0..len) (1..256 bytes), the first discard bytes of
 * keystream dropped.  builtin: the built-in RC4 even when OpenSSL's is
 * there (tests).  Returns 0 or MSE_E_NOMEM, MSE_E_CRYPTO, MSE_E_PARAMS. */
int mse_rc4_new(struct mse_rc4 **ret, const uint8_t *key, size_t len,
                size_t discard, bool builtin);
/* The keystream of the MSE direction: HASH(keyA or keyB, S, SKEY), 1024
 * bytes dropped.  from_initiator: 'keyA' (what A sends), else 'keyB'. */
int mse_rc4_new_stream(struct mse_rc4 **ret, const uint8_t s[MSE_KEY_LEN],
                       const uint8_t skey[MSE_HASH_LEN], bool from_initiator);
void mse_rc4_apply(struct mse_rc4 *c, void *dst, const void *src, size_t n);
void mse_rc4_free(struct mse_rc4 *c);
/* Whether mse_rc4_new(..., false) gives OpenSSL's RC4 in this process
 * (the legacy provider loaded); false: the built-in one. */
bool mse_rc4_openssl(void);

#endif
