/* tracker — per-torrent tracker state over trk_http and trk_udp.
 *
 * The trackers live in one array, tier after tier (tier_start[] gives the
 * first index of each tier); moving a tracker to the front of its tier
 * rotates that slice.  A round walks the array from index 0 and stops at
 * the first tracker that answers.  One announce is in flight at a time
 * (ts->active); the stop at shutdown sends to all trackers at once.
 */
#include "daemon/tracker.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <json-c/json.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/be.h"
#include "common/buf.h"
#include "common/metainfo.h"
#include "daemon/trk_http.h"
#include "daemon/trk_udp.h"

#define STOP_DEFAULT_TIMEOUT 5.0
#define MSG_MAX 512

enum trk_kind { KIND_HTTP, KIND_UDP, KIND_OTHER };
enum trk_status {
    ST_IDLE,
    ST_UPDATING,
    ST_WORKING,
    ST_ERROR,
    ST_UNSUPPORTED,
    ST_STOPPED,
};

static const char *const status_names[] = {
    [ST_IDLE] = "not contacted",
    [ST_UPDATING] = "announcing",
    [ST_WORKING] = "working",
    [ST_ERROR] = "error",
    [ST_UNSUPPORTED] = "unsupported",
    [ST_STOPPED] = "stopped",
};

struct tracker_set;

struct trk_entry {
    struct tracker_set *ts;     /* borrowed: the owner */
    char *url;                  /* owned */
    unsigned tier;
    enum trk_kind kind;
    enum trk_status status;
    bool started_sent;          /* told "started", not yet "stopped" */
    enum tracker_event event;   /* of the request in flight */
    bool sent_complete;         /* that request was made while
                                   completed_pending (it said left=0) */
    struct trk_http_req *hreq;  /* in flight, or NULL */
    struct trk_udp_req *ureq;
    bool scraping;              /* hreq/ureq is a scrape */
    double last_announce;       /* wall clock; 0: never */
    double last_scrape;
    double retry_at;            /* out of the rotation until then */
    int64_t interval, min_interval;
    int64_t seeders, leechers, downloaded;
    uint64_t peers_last, peers_total;
    unsigned fails;
    char *last_error;           /* owned or NULL */
    char *warning;              /* owned or NULL */
    uint8_t *tracker_id;        /* owned or NULL */
    size_t tracker_id_len;
};

struct tracker_set {
    struct tracker_set_config cfg;
    struct tracker_set_cbs cbs;
    uint8_t info_hash[TRACKER_HASH_LEN];
    uint32_t key;
    /* The torrent's counters at the last STARTED: announces report what
     * was moved since (see tracker.h). */
    uint64_t base_up, base_down;
    struct trk_entry **trk;     /* owned, in tier order */
    size_t n;
    size_t *tier_start;         /* owned: n_tiers + 1 entries */
    size_t n_tiers;
    ev_timer timer;             /* the next announce */
    double next_announce;       /* wall clock; 0: none planned */
    size_t cur;                 /* index being tried in this round */
    struct trk_entry *active;   /* announce in flight */
    struct trk_entry *scraping; /* scrape in flight */
    bool running;
    bool completed_pending;
    bool again;                 /* announce again when active returns */
    /* Stopping. */
    size_t stop_pending;
    ev_timer stop_timer;
    tracker_set_done_t stop_done;
    void *stop_arg;
};

static void round_start(struct tracker_set *ts);
static void round_next(struct tracker_set *ts);

/* --- helpers ------------------------------------------------------------ */

static void
set_str(char **dst, const char *s)
{
    free(*dst);
    *dst = s ? strdup(s) : NULL;
}

static double
now(const struct tracker_set *ts)
{
    return ev_now(ts->cfg.loop);
}

static enum trk_kind
url_kind(const char *url)
{
    if (strncasecmp(url, "http://", 7) == 0 ||
        strncasecmp(url, "https://", 8) == 0)
        return KIND_HTTP;
    if (strncasecmp(url, "udp://", 6) == 0)
        return KIND_UDP;
    return KIND_OTHER;
}

static uint32_t
random_u32(void)
{
    uint32_t v = 0;
    if (RAND_bytes((unsigned char *)&v, sizeof(v)) != 1)
        v = (uint32_t)rand();
    return v;
}

/* The "key" of an info-hash: the same for the whole run of the daemon (a
 * torrent stopped and started again gets a new set, not a new key, as in
 * Transmission and libtorrent), different per torrent, and not derived
 * from anything peers or trackers see (it proves who we are when our
 * address changes): SHA-1 of a random secret of this process and the
 * info-hash.  The secret is reactor-only state, made on first use. */
static uint32_t
announce_key(const uint8_t info_hash[TRACKER_HASH_LEN])
{
    static uint8_t secret[16];
    static bool have_secret;
    uint8_t in[sizeof(secret) + TRACKER_HASH_LEN];
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned md_len = 0;

    if (!have_secret) {
        if (RAND_bytes(secret, sizeof(secret)) != 1)
            for (size_t i = 0; i < sizeof(secret); i += 4) {
                uint32_t v = (uint32_t)rand();
                memcpy(secret + i, &v, 4);
            }
        have_secret = true;
    }
    memcpy(in, secret, sizeof(secret));
    memcpy(in + sizeof(secret), info_hash, TRACKER_HASH_LEN);
    if (EVP_Digest(in, sizeof(in), md, &md_len, EVP_sha1(), NULL) != 1 ||
        md_len < 4)
        return random_u32();
    return be32_get(md);
}

static void
entry_cancel(struct trk_entry *e)
{
    trk_http_cancel(e->hreq);
    trk_udp_cancel(e->ureq);
    e->hreq = NULL;
    e->ureq = NULL;
    if (e->ts->scraping == e)
        e->ts->scraping = NULL;
    if (e->ts->active == e)
        e->ts->active = NULL;
    e->scraping = false;
}

static void
entry_free(struct trk_entry *e)
{
    if (!e)
        return;
    entry_cancel(e);
    free(e->url);
    free(e->last_error);
    free(e->warning);
    free(e->tracker_id);
    free(e);
}

static void
schedule(struct tracker_set *ts, double at)
{
    double t = now(ts);
    ev_timer_stop(ts->cfg.loop, &ts->timer);
    ts->next_announce = at;
    ev_timer_set(&ts->timer, at > t ? at - t : 0., 0.);
    ev_timer_start(ts->cfg.loop, &ts->timer);
}

static double
clamp(double v, double lo, double hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* The event a tracker gets now. */
static enum tracker_event
event_for(const struct tracker_set *ts, const struct trk_entry *e)
{
    if (!e->started_sent)
        return TRACKER_EVENT_STARTED;
    if (ts->completed_pending)
        return TRACKER_EVENT_COMPLETED;
    return TRACKER_EVENT_NONE;
}

static void
fill_req(const struct tracker_set *ts, const struct trk_entry *e,
         enum tracker_event ev, struct tracker_announce_req *req)
{
    memset(req, 0, sizeof(*req));
    memcpy(req->info_hash, ts->info_hash, TRACKER_HASH_LEN);
    memcpy(req->peer_id, ts->cfg.peer_id, TRACKER_PEER_ID_LEN);
    req->port = ts->cfg.port;
    if (ts->cbs.get_stats) {
        ts->cbs.get_stats(ts->cbs.arg, &req->uploaded, &req->downloaded,
                          &req->left);
        /* Since "started" (what mature clients send), not all-time. */
        req->uploaded = req->uploaded > ts->base_up
                            ? req->uploaded - ts->base_up : 0;
        req->downloaded = req->downloaded > ts->base_down
                              ? req->downloaded - ts->base_down : 0;
    }
    req->event = ev;
    req->numwant = ev == TRACKER_EVENT_STOPPED ? 0 : ts->cfg.numwant;
    req->key = ts->key;
    req->tracker_id = e->tracker_id;
    req->tracker_id_len = e->tracker_id_len;
}

/* Move e to the front of its tier (BEP 12). */
static void
move_to_front(struct tracker_set *ts, struct trk_entry *e)
{
    size_t first = ts->tier_start[e->tier];
    size_t i = first;
    while (i < ts->n && ts->trk[i] != e)
        i++;
    if (i >= ts->n)
        return;
    memmove(&ts->trk[first + 1], &ts->trk[first],
            (i - first) * sizeof(ts->trk[0]));
    ts->trk[first] = e;
}

static void
deliver_peers(struct tracker_set *ts, const struct tracker_announce_resp *a)
{
    if (!ts->cbs.on_peers || a->n_peers == 0)
        return;
    struct sockaddr_storage *v = calloc(a->n_peers, sizeof(*v));
    if (!v)
        return;
    for (size_t i = 0; i < a->n_peers; i++) {
        const struct tracker_peer *p = &a->peers[i];
        if (p->family == AF_INET) {
            struct sockaddr_in *s = (struct sockaddr_in *)&v[i];
            s->sin_family = AF_INET;
            s->sin_port = htons(p->port);
            memcpy(&s->sin_addr, p->addr, 4);
        } else {
            struct sockaddr_in6 *s = (struct sockaddr_in6 *)&v[i];
            s->sin6_family = AF_INET6;
            s->sin6_port = htons(p->port);
            memcpy(&s->sin6_addr, p->addr, 16);
        }
    }
    ts->cbs.on_peers(ts->cbs.arg, v, a->n_peers);
    free(v);
}

/* --- announce results --------------------------------------------------- */

static void
announce_failed(struct trk_entry *e, const char *msg)
{
    struct tracker_set *ts = e->ts;
    e->status = ST_ERROR;
    e->fails++;
    set_str(&e->last_error, msg);
    double back = ts->cfg.retry_min;
    for (unsigned i = 1; i < e->fails && back < ts->cfg.retry_max; i++)
        back *= 2;
    e->retry_at = now(ts) + clamp(back, ts->cfg.retry_min,
                                  ts->cfg.retry_max);
    ts->active = NULL;
    ts->cur++;
    round_next(ts);
}

static void
announce_ok(struct trk_entry *e, const struct tracker_announce_resp *a)
{
    struct tracker_set *ts = e->ts;
    double t = now(ts);

    ts->active = NULL;
    e->status = ST_WORKING;
    e->fails = 0;
    e->retry_at = 0;
    e->last_announce = t;
    set_str(&e->last_error, NULL);
    set_str(&e->warning, a->warning);
    e->interval = a->interval;
    e->min_interval = a->min_interval;
    if (a->complete >= 0)
        e->seeders = a->complete;
    if (a->incomplete >= 0)
        e->leechers = a->incomplete;
    if (a->downloaded >= 0)
        e->downloaded = a->downloaded;
    if (a->tracker_id) {
        uint8_t *id = malloc(a->tracker_id_len);
        if (id) {
            memcpy(id, a->tracker_id, a->tracker_id_len);
            free(e->tracker_id);
            e->tracker_id = id;
            e->tracker_id_len = a->tracker_id_len;
        }
    }
    e->peers_last = a->n_peers;
    e->peers_total += a->n_peers;
    if (e->event == TRACKER_EVENT_STARTED)
        e->started_sent = true;
    /* A "started" made after the download ended said left=0: the tracker
     * knows.  One made before (still in flight when it ended) did not:
     * "completed" still goes. */
    if (e->event == TRACKER_EVENT_COMPLETED ||
        (e->event == TRACKER_EVENT_STARTED && e->sent_complete))
        ts->completed_pending = false;
    move_to_front(ts, e);

    double iv = a->interval > 0 ? (double)a->interval
                                : ts->cfg.default_interval;
    if (a->min_interval > 0 && iv < (double)a->min_interval)
        iv = (double)a->min_interval;
    iv = clamp(iv, ts->cfg.interval_floor, TRACKER_SET_INTERVAL_MAX);
    if (ts->again) {
        ts->again = false;
        round_start(ts);
    } else {
        schedule(ts, t + iv);
    }
    deliver_peers(ts, a);
}

static void
http_announce_cb(void *arg, int result, long status, const uint8_t *body,
                 size_t len, const char *error)
{
    struct trk_entry *e = arg;
    char msg[MSG_MAX];
    e->hreq = NULL;
    if (result < 0) {
        announce_failed(e, error);
        return;
    }
    struct tracker_announce_resp a;
    size_t off = 0;
    int r = tracker_parse_announce(&a, body, len, NULL, &off);
    if (r == 0 && a.failure) {
        (void)snprintf(msg, sizeof(msg), "%s", a.failure);
        tracker_announce_resp_release(&a);
        announce_failed(e, msg);
        return;
    }
    if (status != 200) {
        if (r == 0)
            tracker_announce_resp_release(&a);
        (void)snprintf(msg, sizeof(msg), "HTTP status %ld", status);
        announce_failed(e, msg);
        return;
    }
    if (r < 0) {
        (void)snprintf(msg, sizeof(msg), "bad response: %s at byte %zu",
                       tracker_strerror(r), off);
        announce_failed(e, msg);
        return;
    }
    announce_ok(e, &a);
    tracker_announce_resp_release(&a);
}

static void
udp_announce_cb(void *arg, int result, const struct tracker_udp_resp *resp,
                const char *error)
{
    struct trk_entry *e = arg;
    e->ureq = NULL;
    if (result < 0) {
        announce_failed(e, error);
        return;
    }
    if (resp->announce.failure) {
        announce_failed(e, resp->announce.failure);
        return;
    }
    announce_ok(e, &resp->announce);
}

/* Start an announce to e; returns 0 or a negative error (e untouched). */
static int
send_announce(struct trk_entry *e, enum tracker_event ev, unsigned tries,
              trk_http_cb_t hcb, trk_udp_cb_t ucb, const char **why)
{
    struct tracker_set *ts = e->ts;
    struct tracker_announce_req req;
    int r;

    fill_req(ts, e, ev, &req);
    e->event = ev;
    e->sent_complete = ts->completed_pending;
    if (e->kind == KIND_HTTP) {
        if (!ts->cfg.http) {
            *why = "HTTP trackers are disabled";
            return -ENOTSUP;
        }
        struct buf url;
        buf_init(&url, TRACKER_SET_URL_MAX);
        r = tracker_http_announce_url(&url, e->url, &req);
        if (r < 0) {
            buf_release(&url);
            *why = r == -EMSGSIZE ? "announce URL too long"
                                  : "malformed URL";
            return r;
        }
        struct trk_http_opts o = {
            .url = url.data,
            .timeout_ms = ts->cfg.http_timeout_ms,
            .bind_addr = ts->cfg.bind_addr,
        };
        r = trk_http_get(ts->cfg.http, &o, hcb, e, &e->hreq);
        buf_release(&url);
        if (r < 0)
            *why = "cannot start the request";
        return r;
    }
    if (e->kind == KIND_UDP) {
        if (!ts->cfg.udp) {
            *why = "UDP trackers are disabled";
            return -ENOTSUP;
        }
        r = trk_udp_announce(ts->cfg.udp, e->url, &req, tries, ucb, e,
                             &e->ureq);
        if (r < 0)
            *why = r == TRACKER_E_URL ? "malformed URL"
                                      : "cannot start the request";
        return r;
    }
    *why = "unsupported protocol";
    return -ENOTSUP;
}

/* --- rounds ------------------------------------------------------------- */

static void
round_start(struct tracker_set *ts)
{
    if (ts->active) {
        ts->again = true;
        return;
    }
    ev_timer_stop(ts->cfg.loop, &ts->timer);
    ts->next_announce = 0;
    ts->cur = 0;
    round_next(ts);
}

/* Try trackers from ts->cur on until one request is in flight. */
static void
round_next(struct tracker_set *ts)
{
    double t = now(ts);
    double earliest = 0;

    for (; ts->cur < ts->n; ts->cur++) {
        struct trk_entry *e = ts->trk[ts->cur];
        if (e->status == ST_UNSUPPORTED)
            continue;
        if (e->retry_at > t) {
            if (earliest == 0 || e->retry_at < earliest)
                earliest = e->retry_at;
            continue;
        }
        if (e->scraping)
            entry_cancel(e);
        const char *why = "";
        int r = send_announce(e, event_for(ts, e), 0, http_announce_cb,
                              udp_announce_cb, &why);
        if (r == 0) {
            e->status = ST_UPDATING;
            ts->active = e;
            return;
        }
        set_str(&e->last_error, why);
        if (r == -ENOTSUP || r == TRACKER_E_URL || r == -EINVAL) {
            e->status = ST_UNSUPPORTED;
            continue;
        }
        e->status = ST_ERROR;
        e->fails++;
        e->retry_at = t + ts->cfg.retry_min;
        if (earliest == 0 || e->retry_at < earliest)
            earliest = e->retry_at;
    }
    /* Nobody answered: again when the first back-off ends. */
    for (size_t i = 0; i < ts->n; i++) {
        const struct trk_entry *e = ts->trk[i];
        if (e->status != ST_UNSUPPORTED && e->retry_at > 0 &&
            (earliest == 0 || e->retry_at < earliest))
            earliest = e->retry_at;
    }
    ts->again = false;
    if (earliest > 0)
        schedule(ts, earliest);
    else
        ts->next_announce = 0;
}

static void
timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct tracker_set *ts = w->data;
    (void)loop;
    (void)revents;
    ts->next_announce = 0;
    if (ts->running)
        round_start(ts);
}

/* --- stop --------------------------------------------------------------- */

static void
stop_finish(struct tracker_set *ts)
{
    tracker_set_done_t done = ts->stop_done;
    void *arg = ts->stop_arg;
    ev_timer_stop(ts->cfg.loop, &ts->stop_timer);
    for (size_t i = 0; i < ts->n; i++)
        entry_cancel(ts->trk[i]);
    ts->stop_pending = 0;
    ts->stop_done = NULL;
    ts->stop_arg = NULL;
    if (done)
        done(arg); /* last: it may free ts */
}

static void
stop_one_done(struct trk_entry *e, const char *error)
{
    struct tracker_set *ts = e->ts;
    if (error && *error) {
        set_str(&e->last_error, error);
        e->status = ST_ERROR;
    } else {
        e->status = ST_STOPPED;
        e->last_announce = now(ts);
    }
    if (ts->stop_pending > 0 && --ts->stop_pending == 0)
        stop_finish(ts);
}

static void
http_stop_cb(void *arg, int result, long status, const uint8_t *body,
             size_t len, const char *error)
{
    struct trk_entry *e = arg;
    char msg[64];
    (void)body;
    (void)len;
    e->hreq = NULL;
    if (result == 0 && status != 200) {
        (void)snprintf(msg, sizeof(msg), "HTTP status %ld", status);
        error = msg;
    }
    stop_one_done(e, error);
}

static void
udp_stop_cb(void *arg, int result, const struct tracker_udp_resp *resp,
            const char *error)
{
    struct trk_entry *e = arg;
    e->ureq = NULL;
    if (result == 0 && resp->announce.failure)
        error = resp->announce.failure;
    stop_one_done(e, error);
}

static void
stop_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct tracker_set *ts = w->data;
    (void)loop;
    (void)revents;
    for (size_t i = 0; i < ts->n; i++) {
        struct trk_entry *e = ts->trk[i];
        if ((e->hreq || e->ureq) && !e->scraping) {
            set_str(&e->last_error, "no answer to \"stopped\"");
            e->status = ST_ERROR;
        }
    }
    stop_finish(ts);
}

void
tracker_set_stop(struct tracker_set *ts, double timeout,
                 tracker_set_done_t done, void *arg)
{
    ts->running = false;
    ts->again = false;
    ts->completed_pending = false;
    ev_timer_stop(ts->cfg.loop, &ts->timer);
    ev_timer_stop(ts->cfg.loop, &ts->stop_timer);
    ts->next_announce = 0;
    ts->stop_pending = 0;
    for (size_t i = 0; i < ts->n; i++) {
        struct trk_entry *e = ts->trk[i];
        /* A "started" without its answer yet may well have been counted
         * by the tracker: it gets "stopped" too. */
        if ((e->hreq || e->ureq) && !e->scraping &&
            e->event == TRACKER_EVENT_STARTED)
            e->started_sent = true;
        entry_cancel(e);
    }
    ts->stop_done = done;
    ts->stop_arg = arg;

    unsigned ms = (unsigned)(timeout * 1000.0);
    unsigned saved = ts->cfg.http_timeout_ms;
    ts->cfg.http_timeout_ms = ms ? ms : 1;
    for (size_t i = 0; i < ts->n; i++) {
        struct trk_entry *e = ts->trk[i];
        if (!e->started_sent)
            continue;
        e->started_sent = false;
        const char *why = "";
        if (send_announce(e, TRACKER_EVENT_STOPPED, 1, http_stop_cb,
                          udp_stop_cb, &why) == 0) {
            e->status = ST_UPDATING;
            ts->stop_pending++;
        } else {
            set_str(&e->last_error, why);
        }
    }
    ts->cfg.http_timeout_ms = saved;
    /* From the loop, even when nothing was sent. */
    ev_timer_set(&ts->stop_timer, ts->stop_pending ? timeout : 0., 0.);
    ev_timer_start(ts->cfg.loop, &ts->stop_timer);
}

/* --- scrape ------------------------------------------------------------- */

static void
scrape_done(struct trk_entry *e, const struct tracker_scrape_resp *s,
            const char *error)
{
    struct tracker_set *ts = e->ts;
    ts->scraping = NULL;
    e->scraping = false;
    if (error) {
        set_str(&e->last_error, error);
        return;
    }
    e->last_scrape = now(ts);
    for (size_t i = 0; i < s->n_files; i++) {
        const struct tracker_scrape_file *f = &s->files[i];
        if (memcmp(f->info_hash, ts->info_hash, TRACKER_HASH_LEN) != 0)
            continue;
        if (f->complete >= 0)
            e->seeders = f->complete;
        if (f->incomplete >= 0)
            e->leechers = f->incomplete;
        if (f->downloaded >= 0)
            e->downloaded = f->downloaded;
    }
}

static void
http_scrape_cb(void *arg, int result, long status, const uint8_t *body,
               size_t len, const char *error)
{
    struct trk_entry *e = arg;
    char msg[MSG_MAX];
    e->hreq = NULL;
    if (result < 0) {
        scrape_done(e, NULL, error);
        return;
    }
    struct tracker_scrape_resp s;
    size_t off = 0;
    int r = tracker_parse_scrape(&s, body, len, NULL, &off);
    if (r < 0) {
        (void)snprintf(msg, sizeof(msg), "bad scrape response: %s at byte "
                       "%zu", tracker_strerror(r), off);
        scrape_done(e, NULL, msg);
    } else if (s.failure) {
        (void)snprintf(msg, sizeof(msg), "scrape: %s", s.failure);
        scrape_done(e, NULL, msg);
    } else if (status != 200) {
        (void)snprintf(msg, sizeof(msg), "scrape: HTTP status %ld", status);
        scrape_done(e, NULL, msg);
    } else {
        scrape_done(e, &s, NULL);
    }
    if (r == 0)
        tracker_scrape_resp_release(&s);
}

static void
udp_scrape_cb(void *arg, int result, const struct tracker_udp_resp *resp,
              const char *error)
{
    struct trk_entry *e = arg;
    e->ureq = NULL;
    if (result < 0)
        scrape_done(e, NULL, error);
    else if (resp->scrape.failure)
        scrape_done(e, NULL, resp->scrape.failure);
    else
        scrape_done(e, &resp->scrape, NULL);
}

int
tracker_set_scrape(struct tracker_set *ts)
{
    if (ts->scraping)
        return -EBUSY;
    const uint8_t (*h)[TRACKER_HASH_LEN] =
        (const uint8_t (*)[TRACKER_HASH_LEN])ts->info_hash;
    /* The trackers that work first, then any, in tier order. */
    for (size_t k = 0; k < 2 * ts->n; k++) {
        struct trk_entry *e = ts->trk[k % ts->n];
        if (e->hreq || e->ureq || (k < ts->n && e->status != ST_WORKING))
            continue;
        int r;
        if (e->kind == KIND_HTTP && ts->cfg.http) {
            struct buf url;
            buf_init(&url, TRACKER_SET_URL_MAX);
            r = tracker_http_scrape_url(&url, e->url, h, 1);
            if (r == 0) {
                struct trk_http_opts o = {
                    .url = url.data,
                    .timeout_ms = ts->cfg.http_timeout_ms,
                    .bind_addr = ts->cfg.bind_addr,
                };
                r = trk_http_get(ts->cfg.http, &o, http_scrape_cb, e,
                                 &e->hreq);
            }
            buf_release(&url);
        } else if (e->kind == KIND_UDP && ts->cfg.udp) {
            r = trk_udp_scrape(ts->cfg.udp, e->url, h, 1, 0, udp_scrape_cb,
                               e, &e->ureq);
        } else {
            continue;
        }
        if (r == 0) {
            e->scraping = true;
            ts->scraping = e;
            return 0;
        }
        if (r == -ENOMEM)
            return r;
    }
    return -ENOTSUP;
}

/* --- lifecycle ---------------------------------------------------------- */

static void
shuffle(struct trk_entry **v, size_t n)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = random_u32() % i;
        struct trk_entry *t = v[i - 1];
        v[i - 1] = v[j];
        v[j] = t;
    }
}

int
tracker_set_new(struct tracker_set **ret, const struct tracker_set_config *cfg,
                const struct meta_tier *tiers, size_t n_tiers,
                const uint8_t info_hash[TRACKER_HASH_LEN],
                const struct tracker_set_cbs *cbs)
{
    struct tracker_set *ts = calloc(1, sizeof(*ts));
    if (!ts)
        return -ENOMEM;
    ts->cfg = *cfg;
    if (cbs)
        ts->cbs = *cbs;
    if (ts->cfg.numwant == 0)
        ts->cfg.numwant = TRACKER_SET_NUMWANT;
    if (ts->cfg.http_timeout_ms == 0)
        ts->cfg.http_timeout_ms = TRACKER_SET_HTTP_TIMEOUT_MS;
    if (ts->cfg.interval_floor <= 0)
        ts->cfg.interval_floor = TRACKER_SET_INTERVAL_FLOOR;
    if (ts->cfg.default_interval <= 0)
        ts->cfg.default_interval = TRACKER_SET_DEFAULT_INTERVAL;
    if (ts->cfg.retry_min <= 0)
        ts->cfg.retry_min = TRACKER_SET_RETRY_MIN;
    if (ts->cfg.retry_max < ts->cfg.retry_min)
        ts->cfg.retry_max = ts->cfg.retry_min > TRACKER_SET_RETRY_MAX
                                ? ts->cfg.retry_min : TRACKER_SET_RETRY_MAX;
    memcpy(ts->info_hash, info_hash, TRACKER_HASH_LEN);
    ts->key = announce_key(info_hash);
    ev_timer_init(&ts->timer, timer_cb, 0., 0.);
    ts->timer.data = ts;
    ev_timer_init(&ts->stop_timer, stop_timer_cb, 0., 0.);
    ts->stop_timer.data = ts;

    size_t total = 0;
    for (size_t i = 0; i < n_tiers; i++)
        total += tiers[i].n_urls;
    if (total > TRACKER_SET_MAX_TRACKERS)
        total = TRACKER_SET_MAX_TRACKERS;
    ts->trk = calloc(total ? total : 1, sizeof(*ts->trk));
    ts->tier_start = calloc(n_tiers + 1, sizeof(*ts->tier_start));
    if (!ts->trk || !ts->tier_start)
        goto fail;
    for (size_t i = 0; i < n_tiers && ts->n < total; i++) {
        size_t first = ts->n;
        for (size_t k = 0; k < tiers[i].n_urls && ts->n < total; k++) {
            const char *u = tiers[i].urls[k];
            if (!u || !*u)
                continue;
            struct trk_entry *e = calloc(1, sizeof(*e));
            if (!e)
                goto fail;
            ts->trk[ts->n++] = e;
            e->ts = ts;
            e->url = strdup(u);
            if (!e->url)
                goto fail;
            e->tier = (unsigned)ts->n_tiers;
            e->kind = url_kind(u);
            e->status = e->kind == KIND_OTHER ? ST_UNSUPPORTED : ST_IDLE;
            e->interval = e->min_interval = -1;
            e->seeders = e->leechers = e->downloaded = -1;
        }
        if (ts->n == first)
            continue;
        ts->tier_start[ts->n_tiers++] = first;
        shuffle(&ts->trk[first], ts->n - first);
    }
    ts->tier_start[ts->n_tiers] = ts->n;
    *ret = ts;
    return 0;

fail:
    tracker_set_free(ts);
    return -ENOMEM;
}

void
tracker_set_free(struct tracker_set *ts)
{
    if (!ts)
        return;
    ev_timer_stop(ts->cfg.loop, &ts->timer);
    ev_timer_stop(ts->cfg.loop, &ts->stop_timer);
    for (size_t i = 0; ts->trk && i < ts->n; i++)
        entry_free(ts->trk[i]);
    free(ts->trk);
    free(ts->tier_start);
    free(ts);
}

int
tracker_set_announce(struct tracker_set *ts, enum tracker_event event)
{
    switch (event) {
    case TRACKER_EVENT_STARTED:
        if (ts->stop_pending || ev_is_active(&ts->stop_timer)) {
            /* A stop still in flight: drop it, without its callback. */
            ev_timer_stop(ts->cfg.loop, &ts->stop_timer);
            for (size_t i = 0; i < ts->n; i++)
                entry_cancel(ts->trk[i]);
            ts->stop_pending = 0;
            ts->stop_done = NULL;
        }
        if (!ts->running) {
            /* A new announce session: counters from zero. */
            uint64_t left;
            ts->base_up = ts->base_down = 0;
            if (ts->cbs.get_stats)
                ts->cbs.get_stats(ts->cbs.arg, &ts->base_up,
                                  &ts->base_down, &left);
        }
        ts->running = true;
        round_start(ts);
        return 0;
    case TRACKER_EVENT_COMPLETED:
        if (!ts->running)
            return -EINVAL;
        ts->completed_pending = true;
        round_start(ts);
        return 0;
    case TRACKER_EVENT_NONE: {
        if (!ts->running)
            return -EINVAL;
        if (ts->active)
            return 0;
        /* The min interval of the tracker we use (front of the list). */
        double at = now(ts);
        for (size_t i = 0; i < ts->n; i++) {
            struct trk_entry *e = ts->trk[i];
            if (e->status != ST_WORKING)
                continue;
            if (e->min_interval > 0 &&
                e->last_announce + (double)e->min_interval > at)
                at = e->last_announce + (double)e->min_interval;
            break;
        }
        if (at > now(ts))
            schedule(ts, at);
        else
            round_start(ts);
        return 0;
    }
    case TRACKER_EVENT_STOPPED:
        tracker_set_stop(ts, STOP_DEFAULT_TIMEOUT, NULL, NULL);
        return 0;
    default:
        return -EINVAL;
    }
}

size_t
tracker_set_count(const struct tracker_set *ts)
{
    return ts->n;
}

bool
tracker_set_busy(const struct tracker_set *ts)
{
    return ts->active != NULL;
}

/* --- JSON --------------------------------------------------------------- */

static struct json_object *
json_count(int64_t v)
{
    return v >= 0 ? json_object_new_int64(v) : NULL;
}

static struct json_object *
json_time(double t)
{
    return t > 0 ? json_object_new_int64((int64_t)t) : NULL;
}

static struct json_object *
json_str(const char *s)
{
    return s ? json_object_new_string(s) : NULL;
}

struct json_object *
tracker_set_to_json(const struct tracker_set *ts)
{
    struct json_object *arr = json_object_new_array();
    if (!arr)
        return NULL;
    /* In tier order, the current order within each tier. */
    for (size_t i = 0; i < ts->n; i++) {
        const struct trk_entry *e = ts->trk[i];
        struct json_object *o = json_object_new_object();
        if (!o) {
            json_object_put(arr);
            return NULL;
        }
        bool is_active = ts->active == e;
        double next = 0;
        if (ts->running && !is_active)
            next = e->retry_at > now(ts) ? e->retry_at : ts->next_announce;
        json_object_object_add(o, "url", json_object_new_string(e->url));
        json_object_object_add(o, "tier", json_object_new_uint64(e->tier));
        json_object_object_add(o, "status",
                               json_object_new_string(
                                   status_names[e->status]));
        json_object_object_add(o, "last_announce",
                               json_time(e->last_announce));
        json_object_object_add(o, "next_announce", json_time(next));
        json_object_object_add(o, "interval", json_count(e->interval));
        json_object_object_add(o, "min_interval",
                               json_count(e->min_interval));
        json_object_object_add(o, "seeders", json_count(e->seeders));
        json_object_object_add(o, "leechers", json_count(e->leechers));
        json_object_object_add(o, "downloaded", json_count(e->downloaded));
        json_object_object_add(o, "peers",
                               json_object_new_uint64(e->peers_last));
        json_object_object_add(o, "peers_total",
                               json_object_new_uint64(e->peers_total));
        json_object_object_add(o, "fails", json_object_new_uint64(e->fails));
        json_object_object_add(o, "last_error", json_str(e->last_error));
        json_object_object_add(o, "warning", json_str(e->warning));
        json_object_object_add(o, "message",
                               json_str(e->last_error ? e->last_error
                                                      : e->warning));
        json_object_object_add(o, "last_scrape", json_time(e->last_scrape));
        json_object_array_add(arr, o);
    }
    return arr;
}
