/* krpc — the KRPC message codec of the Mainline DHT.
 *
 * The parser reads the bencode tree that common/bencode builds (bounded by
 * the KRPC_* limits) and copies what it needs into the message struct.
 * "t" and "y" are read first, so that a malformed query still tells the
 * caller whether and how to answer it.
 */
#include "common/krpc.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/bencode.h"
#include "common/buf.h"

static const struct benc_limits krpc_benc_limits = {
    .max_input = KRPC_MAX_DATAGRAM,
    .max_depth = KRPC_MAX_DEPTH,
    .max_nodes = KRPC_MAX_BENC_NODES,
};

static const char *const krpc_errors[] = {
    [-KRPC_OK] = "success",
    [-KRPC_E_TOO_LARGE] = "datagram too large",
    [-KRPC_E_BENCODE] = "not valid bencode",
    [-KRPC_E_NOT_DICT] = "message is not a dictionary",
    [-KRPC_E_TID] = "missing or malformed transaction id",
    [-KRPC_E_TYPE] = "missing or unknown message type",
    [-KRPC_E_METHOD] = "query without a method name",
    [-KRPC_E_ARGS] = "query without arguments",
    [-KRPC_E_ID] = "missing or malformed node id",
    [-KRPC_E_TARGET] = "missing or malformed target or info_hash",
    [-KRPC_E_PORT] = "missing or invalid port",
    [-KRPC_E_TOKEN] = "missing or malformed token",
    [-KRPC_E_RESPONSE] = "response without a return value",
    [-KRPC_E_NODES] = "malformed nodes",
    [-KRPC_E_VALUES] = "malformed values",
    [-KRPC_E_ERROR] = "malformed error",
    [-KRPC_E_NOMEM] = "out of memory",
};

const char *
krpc_strerror(int err)
{
    if (err > 0 || err <= KRPC_E_MIN)
        return "unknown error";
    return krpc_errors[-err];
}

int
krpc_error_code(int err)
{
    (void)err;
    return KRPC_ERR_PROTOCOL;
}

static const char *const krpc_methods[] = {
    [KRPC_Q_PING] = "ping",
    [KRPC_Q_FIND_NODE] = "find_node",
    [KRPC_Q_GET_PEERS] = "get_peers",
    [KRPC_Q_ANNOUNCE_PEER] = "announce_peer",
};

const char *
krpc_method_name(enum krpc_method m)
{
    if ((unsigned)m >= KRPC_Q_UNKNOWN)
        return NULL;
    return krpc_methods[m];
}

/* --- compact forms --- */

size_t
krpc_put_compact_addr(uint8_t *out, const struct krpc_addr *addr)
{
    size_t alen;
    if (addr->family == 4)
        alen = 4;
    else if (addr->family == 6)
        alen = 16;
    else
        return 0;
    memcpy(out, addr->addr, alen);
    out[alen] = (uint8_t)(addr->port >> 8);
    out[alen + 1] = (uint8_t)addr->port;
    return alen + 2;
}

bool
krpc_get_compact_addr(struct krpc_addr *ret, const uint8_t *p, size_t len)
{
    size_t alen;
    if (len == KRPC_PEER4_LEN)
        alen = 4;
    else if (len == KRPC_PEER6_LEN)
        alen = 16;
    else
        return false;
    memset(ret, 0, sizeof(*ret));
    ret->family = alen == 4 ? 4 : 6;
    memcpy(ret->addr, p, alen);
    ret->port = (uint16_t)(p[alen] << 8 | p[alen + 1]);
    return true;
}

size_t
krpc_put_compact_node(uint8_t *out, const struct krpc_node *node)
{
    size_t n = krpc_put_compact_addr(out + KRPC_ID_LEN, &node->addr);
    if (n == 0)
        return 0;
    memcpy(out, node->id, KRPC_ID_LEN);
    return KRPC_ID_LEN + n;
}

bool
krpc_get_compact_node(struct krpc_node *ret, const uint8_t *p, size_t len)
{
    if (len != KRPC_NODE4_LEN && len != KRPC_NODE6_LEN)
        return false;
    if (!krpc_get_compact_addr(&ret->addr, p + KRPC_ID_LEN, len - KRPC_ID_LEN))
        return false;
    memcpy(ret->id, p, KRPC_ID_LEN);
    return true;
}

bool
krpc_addr_same_ip(const struct krpc_addr *a, const struct krpc_addr *b)
{
    if (a->family != b->family)
        return false;
    return memcmp(a->addr, b->addr, a->family == 4 ? 4 : 16) == 0;
}

bool
krpc_addr_equal(const struct krpc_addr *a, const struct krpc_addr *b)
{
    return a->port == b->port && krpc_addr_same_ip(a, b);
}

/* --- parser --- */

struct kp {
    const struct benc_doc *doc;
    struct krpc_msg *m;
    size_t err_off;
};

static int
kp_fail(struct kp *k, int err, uint32_t node)
{
    const struct benc_node *n = benc_node(k->doc, node);
    k->err_off = n ? n->start : 0;
    return err;
}

/* A string of exactly len bytes at key of dict, copied to out.  Returns 1
 * if present and right, 0 if absent, -1 if present and wrong (*ret_node
 * is then the offending node). */
static int
get_fixed(const struct benc_doc *doc, uint32_t dict, const char *key,
          uint8_t *out, size_t len, uint32_t *ret_node)
{
    uint32_t v = benc_dict_get(doc, dict, key);
    *ret_node = v;
    if (v == BENC_NONE)
        return 0;
    size_t n;
    const uint8_t *s = benc_str(doc, v, &n);
    if (!s || n != len)
        return -1;
    memcpy(out, s, len);
    return 1;
}

static int
get_token(struct kp *k, uint32_t dict, bool required)
{
    uint32_t v = benc_dict_get(k->doc, dict, "token");
    if (v == BENC_NONE)
        return required ? kp_fail(k, KRPC_E_TOKEN, dict) : 0;
    size_t n;
    const uint8_t *s = benc_str(k->doc, v, &n);
    if (!s || n == 0 || n > KRPC_TOKEN_MAX)
        return kp_fail(k, KRPC_E_TOKEN, v);
    memcpy(k->m->token, s, n);
    k->m->token_len = (uint8_t)n;
    k->m->has |= KRPC_HAS_TOKEN;
    return 0;
}

static int
get_nodes(struct kp *k, uint32_t dict, const char *key, size_t entry,
          size_t max, struct krpc_node *out, uint16_t *ret_n, unsigned flag)
{
    uint32_t v = benc_dict_get(k->doc, dict, key);
    if (v == BENC_NONE)
        return 0;
    size_t n;
    const uint8_t *s = benc_str(k->doc, v, &n);
    if (!s || n % entry != 0 || n / entry > max)
        return kp_fail(k, KRPC_E_NODES, v);
    for (size_t i = 0; i < n / entry; i++)
        (void)krpc_get_compact_node(&out[i], s + i * entry, entry);
    *ret_n = (uint16_t)(n / entry);
    k->m->has |= flag;
    return 0;
}

static int
get_values(struct kp *k, uint32_t dict)
{
    uint32_t v = benc_dict_get(k->doc, dict, "values");
    if (v == BENC_NONE)
        return 0;
    if (!benc_is(k->doc, v, BENC_LIST))
        return kp_fail(k, KRPC_E_VALUES, v);
    uint16_t cnt = 0;
    for (uint32_t c = benc_first(k->doc, v); c != BENC_NONE;
         c = benc_next(k->doc, v, c)) {
        size_t n;
        const uint8_t *s = benc_str(k->doc, c, &n);
        if (cnt >= KRPC_MAX_VALUES || !s ||
            !krpc_get_compact_addr(&k->m->values[cnt], s, n))
            return kp_fail(k, KRPC_E_VALUES, c);
        cnt++;
    }
    k->m->n_values = cnt;
    k->m->has |= KRPC_HAS_VALUES;
    return 0;
}

/* The lenient top-level fields: v, ip, ro. */
static void
get_info(struct kp *k, uint32_t top)
{
    const struct benc_doc *doc = k->doc;
    struct krpc_msg *m = k->m;
    size_t n;
    const uint8_t *s = benc_str(doc, benc_dict_get(doc, top, "v"), &n);
    if (s && n <= KRPC_VERSION_MAX) {
        memcpy(m->v, s, n);
        m->v_len = (uint8_t)n;
        m->has |= KRPC_HAS_V;
    }
    s = benc_str(doc, benc_dict_get(doc, top, "ip"), &n);
    if (s && krpc_get_compact_addr(&m->ip, s, n))
        m->has |= KRPC_HAS_IP;
    const struct benc_node *ro =
        benc_node(doc, benc_dict_get_type(doc, top, "ro", BENC_INT));
    m->ro = ro && ro->u.i == 1;
}

static void
get_want(struct kp *k, uint32_t args)
{
    uint32_t w = benc_dict_get_type(k->doc, args, "want", BENC_LIST);
    if (w == BENC_NONE)
        return;
    k->m->has |= KRPC_HAS_WANT;
    for (uint32_t c = benc_first(k->doc, w); c != BENC_NONE;
         c = benc_next(k->doc, w, c)) {
        if (benc_str_eq(k->doc, c, "n4"))
            k->m->want |= KRPC_WANT_N4;
        else if (benc_str_eq(k->doc, c, "n6"))
            k->m->want |= KRPC_WANT_N6;
    }
}

static int
parse_query(struct kp *k, uint32_t top)
{
    const struct benc_doc *doc = k->doc;
    struct krpc_msg *m = k->m;
    uint32_t q = benc_dict_get_type(doc, top, "q", BENC_STR);
    if (q == BENC_NONE)
        return kp_fail(k, KRPC_E_METHOD, top);
    m->method = KRPC_Q_UNKNOWN;
    for (unsigned i = 0; i < KRPC_Q_UNKNOWN; i++)
        if (benc_str_eq(doc, q, krpc_methods[i]))
            m->method = (uint8_t)i;
    uint32_t a = benc_dict_get_type(doc, top, "a", BENC_DICT);
    if (a == BENC_NONE)
        return kp_fail(k, KRPC_E_ARGS, top);
    uint32_t v;
    if (get_fixed(doc, a, "id", m->id, KRPC_ID_LEN, &v) != 1)
        return kp_fail(k, KRPC_E_ID, v == BENC_NONE ? a : v);

    const char *tkey = NULL;
    switch (m->method) {
    case KRPC_Q_FIND_NODE:
        tkey = "target";
        break;
    case KRPC_Q_GET_PEERS:
    case KRPC_Q_ANNOUNCE_PEER:
        tkey = "info_hash";
        break;
    case KRPC_Q_UNKNOWN:
        /* Keep what a future method may want answered (BEP 44 get, ...). */
        if (get_fixed(doc, a, "target", m->target, KRPC_ID_LEN, &v) == 1 ||
            get_fixed(doc, a, "info_hash", m->target, KRPC_ID_LEN, &v) == 1)
            m->has |= KRPC_HAS_TARGET;
        break;
    default:
        break;
    }
    if (tkey) {
        if (get_fixed(doc, a, tkey, m->target, KRPC_ID_LEN, &v) != 1)
            return kp_fail(k, KRPC_E_TARGET, v == BENC_NONE ? a : v);
        m->has |= KRPC_HAS_TARGET;
    }
    if (m->method == KRPC_Q_ANNOUNCE_PEER) {
        const struct benc_node *ip = benc_node(
            doc, benc_dict_get_type(doc, a, "implied_port", BENC_INT));
        m->implied_port = ip && ip->u.i == 1;
        uint32_t p = benc_dict_get(doc, a, "port");
        const struct benc_node *pn = benc_node(doc, p);
        if (pn && pn->type == BENC_INT && pn->u.i > 0 && pn->u.i <= 65535) {
            m->port = (uint16_t)pn->u.i;
            m->has |= KRPC_HAS_PORT;
        } else if (pn || !m->implied_port) {
            /* A bad port is refused even with implied_port: the sender is
             * broken.  A missing one is fine with implied_port. */
            return kp_fail(k, KRPC_E_PORT, pn ? p : a);
        }
        int r = get_token(k, a, true);
        if (r < 0)
            return r;
    }
    get_want(k, a);
    return 0;
}

static int
parse_response(struct kp *k, uint32_t top)
{
    const struct benc_doc *doc = k->doc;
    struct krpc_msg *m = k->m;
    uint32_t r = benc_dict_get_type(doc, top, "r", BENC_DICT);
    if (r == BENC_NONE)
        return kp_fail(k, KRPC_E_RESPONSE, top);
    uint32_t v;
    if (get_fixed(doc, r, "id", m->id, KRPC_ID_LEN, &v) != 1)
        return kp_fail(k, KRPC_E_ID, v == BENC_NONE ? r : v);
    int e = get_nodes(k, r, "nodes", KRPC_NODE4_LEN, KRPC_MAX_NODES, m->nodes,
                      &m->n_nodes, KRPC_HAS_NODES);
    if (e == 0)
        e = get_nodes(k, r, "nodes6", KRPC_NODE6_LEN, KRPC_MAX_NODES6,
                      m->nodes6, &m->n_nodes6, KRPC_HAS_NODES6);
    if (e == 0)
        e = get_values(k, r);
    if (e == 0)
        e = get_token(k, r, false);
    return e;
}

static int
parse_error(struct kp *k, uint32_t top)
{
    const struct benc_doc *doc = k->doc;
    struct krpc_msg *m = k->m;
    uint32_t e = benc_dict_get(doc, top, "e");
    if (e == BENC_NONE)
        return kp_fail(k, KRPC_E_ERROR, top);
    uint32_t c = benc_first(doc, e);
    if (!benc_is(doc, e, BENC_LIST) || !benc_is(doc, c, BENC_INT))
        return kp_fail(k, KRPC_E_ERROR, c == BENC_NONE ? e : c);
    m->err_code = benc_node(doc, c)->u.i;
    size_t n;
    const uint8_t *s = benc_str(doc, benc_next(doc, e, c), &n);
    if (s) {
        if (n > KRPC_ERRMSG_MAX)
            n = KRPC_ERRMSG_MAX;
        memcpy(m->err_msg, s, n);
        m->err_msg_len = (uint8_t)n;
    }
    m->err_msg[m->err_msg_len] = '\0';
    return 0;
}

int
krpc_parse(struct krpc_msg *ret_msg, const void *data, size_t len,
           struct krpc_parse_error *reterr)
{
    struct krpc_parse_error pe = {.code = KRPC_ERR_PROTOCOL};
    struct benc_doc doc = {0};
    struct krpc_msg *m = NULL;
    int r;

    if (len > KRPC_MAX_DATAGRAM) {
        pe.offset = KRPC_MAX_DATAGRAM;
        r = KRPC_E_TOO_LARGE;
        goto fail;
    }
    r = benc_parse(&doc, data, len, &krpc_benc_limits, 0, &pe.offset);
    if (r == BENC_E_NOMEM) {
        r = KRPC_E_NOMEM;
        goto fail;
    }
    if (r < 0) {
        r = KRPC_E_BENCODE;
        goto fail;
    }
    if (!benc_is(&doc, 0, BENC_DICT)) {
        pe.offset = 0;
        r = KRPC_E_NOT_DICT;
        goto fail_doc;
    }
    /* Work in a scratch copy: ret_msg is written only on success. */
    m = calloc(1, sizeof(*m));
    if (!m) {
        r = KRPC_E_NOMEM;
        goto fail_doc;
    }
    struct kp k = {.doc = &doc, .m = m};
    uint32_t t = benc_dict_get(&doc, 0, "t");
    size_t tlen;
    const uint8_t *ts = benc_str(&doc, t, &tlen);
    if (!ts || tlen == 0 || tlen > KRPC_TID_MAX) {
        r = kp_fail(&k, KRPC_E_TID, t == BENC_NONE ? 0 : t);
        goto fail_k;
    }
    memcpy(m->tid, ts, tlen);
    m->tid_len = (uint8_t)tlen;
    uint32_t y = benc_dict_get(&doc, 0, "y");
    if (benc_str_eq(&doc, y, "q"))
        m->type = KRPC_QUERY;
    else if (benc_str_eq(&doc, y, "r"))
        m->type = KRPC_RESPONSE;
    else if (benc_str_eq(&doc, y, "e"))
        m->type = KRPC_ERROR_MSG;
    else {
        r = kp_fail(&k, KRPC_E_TYPE, y == BENC_NONE ? 0 : y);
        goto fail_k;
    }
    if (m->type == KRPC_QUERY) {
        pe.can_reply = true;
        memcpy(pe.tid, m->tid, m->tid_len);
        pe.tid_len = m->tid_len;
    }
    get_info(&k, 0);
    if (m->type == KRPC_QUERY)
        r = parse_query(&k, 0);
    else if (m->type == KRPC_RESPONSE)
        r = parse_response(&k, 0);
    else
        r = parse_error(&k, 0);
    if (r < 0)
        goto fail_k;
    memcpy(ret_msg, m, sizeof(*m));
    free(m);
    benc_doc_release(&doc);
    return 0;

fail_k:
    pe.offset = k.err_off;
    free(m);
fail_doc:
    benc_doc_release(&doc);
fail:
    if (reterr)
        *reterr = pe;
    return r;
}

/* --- encoder --- */

void
krpc_msg_init(struct krpc_msg *msg, enum krpc_type type, const uint8_t *tid,
              size_t tid_len, const uint8_t id[KRPC_ID_LEN])
{
    memset(msg, 0, sizeof(*msg));
    msg->type = (uint8_t)type;
    if (tid_len > KRPC_TID_MAX)
        tid_len = KRPC_TID_MAX;
    if (tid_len)
        memcpy(msg->tid, tid, tid_len);
    msg->tid_len = (uint8_t)tid_len;
    if (id)
        memcpy(msg->id, id, KRPC_ID_LEN);
}

static int
put_kv_str(struct buf *b, const char *key, const void *p, size_t n)
{
    int r = benc_put_cstr(b, key);
    return r < 0 ? r : benc_put_str(b, p, n);
}

static int
put_kv_int(struct buf *b, const char *key, int64_t v)
{
    int r = benc_put_cstr(b, key);
    return r < 0 ? r : benc_put_int(b, v);
}

static int
put_nodes(struct buf *b, const char *key, const struct krpc_node *nodes,
          size_t n, size_t entry)
{
    uint8_t tmp[KRPC_MAX_NODES * KRPC_NODE4_LEN];
    _Static_assert(KRPC_MAX_NODES6 * KRPC_NODE6_LEN <= sizeof(tmp),
                   "nodes6 scratch");
    for (size_t i = 0; i < n; i++)
        if (krpc_put_compact_node(tmp + i * entry, &nodes[i]) != entry)
            return -EINVAL;
    return put_kv_str(b, key, tmp, n * entry);
}

static int
put_args(struct buf *b, const struct krpc_msg *m)
{
    int r = benc_put_dict(b);
    if (r == 0)
        r = put_kv_str(b, "id", m->id, KRPC_ID_LEN);
    if (m->method == KRPC_Q_ANNOUNCE_PEER) {
        if (r == 0 && m->implied_port)
            r = put_kv_int(b, "implied_port", 1);
        if (r == 0)
            r = put_kv_str(b, "info_hash", m->target, KRPC_ID_LEN);
        if (r == 0 && (m->port != 0 || !m->implied_port))
            r = put_kv_int(b, "port", m->port);
        if (r == 0)
            r = put_kv_str(b, "token", m->token, m->token_len);
    } else if (m->method == KRPC_Q_GET_PEERS) {
        if (r == 0)
            r = put_kv_str(b, "info_hash", m->target, KRPC_ID_LEN);
    } else if (m->method == KRPC_Q_FIND_NODE) {
        if (r == 0)
            r = put_kv_str(b, "target", m->target, KRPC_ID_LEN);
    }
    if (r == 0 && (m->has & KRPC_HAS_WANT)) {
        r = benc_put_cstr(b, "want");
        if (r == 0)
            r = benc_put_list(b);
        if (r == 0 && (m->want & KRPC_WANT_N4))
            r = benc_put_cstr(b, "n4");
        if (r == 0 && (m->want & KRPC_WANT_N6))
            r = benc_put_cstr(b, "n6");
        if (r == 0)
            r = benc_put_end(b);
    }
    if (r == 0)
        r = benc_put_end(b);
    return r;
}

static int
put_return(struct buf *b, const struct krpc_msg *m)
{
    int r = benc_put_dict(b);
    if (r == 0)
        r = put_kv_str(b, "id", m->id, KRPC_ID_LEN);
    if (r == 0 && (m->has & KRPC_HAS_NODES))
        r = put_nodes(b, "nodes", m->nodes, m->n_nodes, KRPC_NODE4_LEN);
    if (r == 0 && (m->has & KRPC_HAS_NODES6))
        r = put_nodes(b, "nodes6", m->nodes6, m->n_nodes6, KRPC_NODE6_LEN);
    if (r == 0 && (m->has & KRPC_HAS_TOKEN))
        r = put_kv_str(b, "token", m->token, m->token_len);
    if (r == 0 && (m->has & KRPC_HAS_VALUES)) {
        r = benc_put_cstr(b, "values");
        if (r == 0)
            r = benc_put_list(b);
        for (size_t i = 0; r == 0 && i < m->n_values; i++) {
            uint8_t tmp[KRPC_PEER6_LEN];
            size_t n = krpc_put_compact_addr(tmp, &m->values[i]);
            r = n ? benc_put_str(b, tmp, n) : -EINVAL;
        }
        if (r == 0)
            r = benc_put_end(b);
    }
    if (r == 0)
        r = benc_put_end(b);
    return r;
}

static bool
encodable(const struct krpc_msg *m)
{
    if (m->tid_len == 0 || m->tid_len > KRPC_TID_MAX ||
        m->type >= KRPC_TYPE_MAX || m->v_len > KRPC_VERSION_MAX)
        return false;
    if ((m->has & KRPC_HAS_IP) && m->ip.family != 4 && m->ip.family != 6)
        return false;
    if (m->type == KRPC_QUERY) {
        if (m->method >= KRPC_Q_UNKNOWN)
            return false;
        if (m->method == KRPC_Q_ANNOUNCE_PEER &&
            (m->token_len == 0 || m->token_len > KRPC_TOKEN_MAX ||
             (m->port == 0 && !m->implied_port)))
            return false;
    } else if (m->type == KRPC_RESPONSE) {
        if (m->n_nodes > KRPC_MAX_NODES || m->n_nodes6 > KRPC_MAX_NODES6 ||
            m->n_values > KRPC_MAX_VALUES)
            return false;
        if ((m->has & KRPC_HAS_TOKEN) &&
            (m->token_len == 0 || m->token_len > KRPC_TOKEN_MAX))
            return false;
    } else if (m->err_msg_len > KRPC_ERRMSG_MAX) {
        return false;
    }
    return true;
}

int
krpc_encode(struct buf *b, const struct krpc_msg *m)
{
    if (!encodable(m))
        return -EINVAL;
    size_t start = b->len;
    int r = benc_put_dict(b);
    if (r == 0 && m->type == KRPC_QUERY)
        r = benc_put_cstr(b, "a");
    if (r == 0 && m->type == KRPC_QUERY)
        r = put_args(b, m);
    if (r == 0 && m->type == KRPC_ERROR_MSG) {
        r = benc_put_cstr(b, "e");
        if (r == 0)
            r = benc_put_list(b);
        if (r == 0)
            r = benc_put_int(b, m->err_code);
        if (r == 0)
            r = benc_put_str(b, m->err_msg, m->err_msg_len);
        if (r == 0)
            r = benc_put_end(b);
    }
    if (r == 0 && (m->has & KRPC_HAS_IP)) {
        uint8_t tmp[KRPC_PEER6_LEN];
        size_t n = krpc_put_compact_addr(tmp, &m->ip);
        r = put_kv_str(b, "ip", tmp, n);
    }
    if (r == 0 && m->type == KRPC_QUERY)
        r = put_kv_str(b, "q", krpc_methods[m->method],
                       strlen(krpc_methods[m->method]));
    if (r == 0 && m->type == KRPC_RESPONSE) {
        r = benc_put_cstr(b, "r");
        if (r == 0)
            r = put_return(b, m);
    }
    if (r == 0 && m->ro)
        r = put_kv_int(b, "ro", 1);
    if (r == 0)
        r = put_kv_str(b, "t", m->tid, m->tid_len);
    if (r == 0 && (m->has & KRPC_HAS_V))
        r = put_kv_str(b, "v", m->v, m->v_len);
    if (r == 0)
        r = put_kv_str(b, "y",
                       m->type == KRPC_QUERY      ? "q"
                       : m->type == KRPC_RESPONSE ? "r"
                                                  : "e",
                       1);
    if (r == 0)
        r = benc_put_end(b);
    if (r < 0) {
        b->len = start;
        if (b->data)
            b->data[start] = '\0';
        return r;
    }
    return (int)(b->len - start);
}
