/* dht_rpc — the control API's DHT methods (torrentd-api(7)): dht.status,
 * dht.get_peers, dht.announce.
 *
 * Thread: reactor only.  A get_peers or announce call is answered when
 * its lookup ends: bounded by the lookup's own limits (DHT_LOOKUP_MAX_MS
 * and DHT_LOOKUP_MAX_QUERIES, dht.h), or at once with RPC_E_SHUTTING_DOWN
 * when the daemon stops first.
 */
#include "daemon/session_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <json-c/json.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/hex.h"
#include "daemon/dhtsvc.h"
#include "daemon/rpc.h"

#define DHT_RPC_MAX_CALLS 16  /* get_peers/announce calls at once */
#define DHT_RPC_MAX_PEERS 200 /* peers in one answer */

struct dht_call {
    struct rpc_call *call;
    bool announce;
    uint16_t port;
    size_t n;
    struct sockaddr_storage peers[DHT_RPC_MAX_PEERS];
};

static unsigned dht_rpc_running; /* calls waiting for their lookup */

static bool
same_peer(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return false;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port &&
               x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
    return x->sin6_port == y->sin6_port &&
           memcmp(&x->sin6_addr, &y->sin6_addr, 16) == 0;
}

static void
call_peers(void *arg, const uint8_t info_hash[20],
           const struct sockaddr_storage *addrs, size_t n)
{
    struct dht_call *c = arg;
    (void)info_hash;
    for (size_t i = 0; i < n && c->n < DHT_RPC_MAX_PEERS; i++) {
        bool dup = false;
        for (size_t j = 0; j < c->n && !dup; j++)
            dup = same_peer(&c->peers[j], &addrs[i]);
        if (!dup)
            c->peers[c->n++] = addrs[i];
    }
}

static struct json_object *
peer_string(const struct sockaddr_storage *ss)
{
    char ip[INET6_ADDRSTRLEN] = "?", out[INET6_ADDRSTRLEN + 10];
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *s4 = (const void *)ss;
        (void)inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
        snprintf(out, sizeof(out), "%s:%u", ip, ntohs(s4->sin_port));
    } else {
        const struct sockaddr_in6 *s6 = (const void *)ss;
        (void)inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
        snprintf(out, sizeof(out), "[%s]:%u", ip, ntohs(s6->sin6_port));
    }
    return json_object_new_string(out);
}

static void
call_done(void *arg, const uint8_t info_hash[20],
          const struct dhtsvc_result *res)
{
    struct dht_call *c = arg;
    dht_rpc_running--;
    if (res->aborted) {
        rpc_call_fail(c->call, RPC_E_SHUTTING_DOWN, NULL,
                      "torrentd is shutting down; the lookup was stopped");
        free(c);
        return;
    }
    struct json_object *o = json_object_new_object();
    struct json_object *peers = json_object_new_array();
    if (!o || !peers) {
        json_object_put(o);
        json_object_put(peers);
        rpc_call_fail(c->call, RPC_INTERNAL_ERROR, NULL, "out of memory");
        free(c);
        return;
    }
    char hex[41];
    hex_encode(hex, info_hash, 20);
    for (size_t i = 0; i < c->n; i++)
        json_object_array_add(peers, peer_string(&c->peers[i]));
    json_object_object_add(o, "info_hash", json_object_new_string(hex));
    json_object_object_add(o, "peers", peers);
    json_object_object_add(o, "queries", json_object_new_uint64(res->queries));
    json_object_object_add(o, "answers", json_object_new_uint64(res->answers));
    json_object_object_add(o, "nodes", json_object_new_uint64(res->nodes));
    json_object_object_add(o, "ms", json_object_new_uint64(res->ms));
    if (c->announce) {
        json_object_object_add(o, "port", json_object_new_uint64(c->port));
        json_object_object_add(o, "announced",
                               json_object_new_uint64(res->announced));
    }
    rpc_call_reply(c->call, o);
    free(c);
}

static void
lookup_method(struct session *s, struct rpc_call *call,
              struct json_object *params, bool announce)
{
    struct json_object *v = NULL;
    uint8_t hash[20];
    int64_t port = 0;

    if (!s->dht) {
        rpc_call_fail(call, RPC_E_INVALID_STATE, NULL,
                      "the DHT is off: set dht = on and restart torrentd");
        return;
    }
    if (!params || !json_object_object_get_ex(params, "info_hash", &v) ||
        !json_object_is_type(v, json_type_string) ||
        json_object_get_string_len(v) != 40 ||
        hex_decode(hash, json_object_get_string(v), 20) < 0) {
        rpc_call_fail(call, RPC_INVALID_PARAMS, NULL,
                      "'info_hash' must be 40 hex digits");
        return;
    }
    if (announce) {
        if (!json_object_object_get_ex(params, "port", &v) ||
            !json_object_is_type(v, json_type_int) ||
            (port = json_object_get_int64(v)) < 1 || port > 65535) {
            rpc_call_fail(call, RPC_INVALID_PARAMS, NULL,
                          "'port' must be the TCP port to announce, "
                          "1..65535");
            return;
        }
    }
    if (s->stopping) {
        rpc_call_fail(call, RPC_E_SHUTTING_DOWN, NULL,
                      "torrentd is shutting down; try again once it is back");
        return;
    }
    if (dht_rpc_running >= DHT_RPC_MAX_CALLS) {
        rpc_call_fail(call, RPC_E_BUSY, NULL,
                      "%u DHT lookups are running already; retry when one "
                      "has finished",
                      dht_rpc_running);
        return;
    }
    struct dht_call *c = calloc(1, sizeof(*c));
    if (!c) {
        rpc_call_fail(call, RPC_INTERNAL_ERROR, NULL, "out of memory");
        return;
    }
    c->call = call;
    c->announce = announce;
    c->port = (uint16_t)port;
    int r = 0;
    if (!dhtsvc_get_peers(s->dht, hash, c->port, call_peers, call_done, c,
                          &r)) {
        free(c);
        if (r == -ENOSPC)
            rpc_call_fail(call, RPC_E_BUSY, NULL,
                          "too many DHT lookups are running; retry later");
        else if (r == -ESHUTDOWN)
            rpc_call_fail(call, RPC_E_SHUTTING_DOWN, NULL,
                          "torrentd is shutting down");
        else
            rpc_call_fail(call, RPC_INTERNAL_ERROR, NULL,
                          "cannot start the lookup: %s", strerror(-r));
        return;
    }
    dht_rpc_running++;
}

void
session_m_dht_status(struct session *s, struct rpc_call *call,
                     struct json_object *params)
{
    (void)params;
    struct json_object *o = dhtsvc_status_json(s->dht);
    if (!o) {
        rpc_call_fail(call, RPC_INTERNAL_ERROR, NULL, "out of memory");
        return;
    }
    rpc_call_reply(call, o);
}

void
session_m_dht_get_peers(struct session *s, struct rpc_call *call,
                        struct json_object *params)
{
    lookup_method(s, call, params, false);
}

void
session_m_dht_announce(struct session *s, struct rpc_call *call,
                       struct json_object *params)
{
    lookup_method(s, call, params, true);
}
