/* events — the numbered event log that clients subscribe to.
 *
 * A ring of the last EVENTS_KEEP events (json objects, one reference each)
 * and a list of subscribers.  Live events (torrent.progress) go through
 * the same list but never into the ring, and only to subscribers that
 * named their type.  Publishing walks the subscriber list; a
 * subscriber that unsubscribes (itself or another) while a walk is under
 * way is only marked dead and unlinked when no walk is running, so the
 * walk never touches freed memory.
 */
#include "daemon/events.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Type names per subscription, and the length of one. */
#define EVENTS_MAX_TYPES 64
#define EVENTS_MAX_TYPE_LEN 64

struct events_sub {
    struct events *owner; /* borrowed: the log outlives its subs */
    struct events_sub *next;
    events_cb_t cb;
    void *arg;
    char **types; /* owned, NULL-terminated; NULL = all */
    bool dead;
};

struct events {
    struct json_object *ring[EVENTS_KEEP]; /* owned references */
    uint64_t next_seq;                     /* the seq the next event gets */
    uint64_t first_seq;      /* the first seq given out by this process */
    struct events_sub *subs; /* owned list */
    unsigned walking;        /* nesting of publish/replay walks */
    bool have_dead;
};

int
events_new(struct events **ret, uint64_t first_seq)
{
    struct events *e = calloc(1, sizeof(*e));
    if (!e)
        return -ENOMEM;
    e->next_seq = first_seq ? first_seq : 1;
    e->first_seq = e->next_seq;
    *ret = e;
    return 0;
}

static void
sub_free(struct events_sub *sub)
{
    if (!sub)
        return;
    if (sub->types) {
        for (char **t = sub->types; *t; t++)
            free(*t);
        free(sub->types);
    }
    free(sub);
}

void
events_free(struct events *e)
{
    if (!e)
        return;
    for (size_t i = 0; i < EVENTS_KEEP; i++)
        json_object_put(e->ring[i]);
    struct events_sub *sub = e->subs;
    while (sub) {
        struct events_sub *next = sub->next;
        sub_free(sub);
        sub = next;
    }
    free(e);
}

/* Unlink and free the subscriptions marked dead, once no walk runs. */
static void
reap(struct events *e)
{
    if (e->walking || !e->have_dead)
        return;
    struct events_sub **pp = &e->subs;
    while (*pp) {
        struct events_sub *sub = *pp;
        if (sub->dead) {
            *pp = sub->next;
            sub_free(sub);
        } else {
            pp = &sub->next;
        }
    }
    e->have_dead = false;
}

static bool
sub_names(const struct events_sub *sub, const char *type)
{
    if (!sub->types || !type)
        return false;
    for (char **p = sub->types; *p; p++)
        if (strcmp(*p, type) == 0)
            return true;
    return false;
}

/* A kept event goes to unfiltered subscribers, to those with "*" and to
 * those that name its type; a live one only to those that name it. */
static bool
sub_wants(const struct events_sub *sub, struct json_object *ev, bool live)
{
    if (sub->dead)
        return false;
    if (!live && (!sub->types || sub_names(sub, EVENTS_ALL_KEPT)))
        return true;
    struct json_object *t;
    if (!json_object_object_get_ex(ev, "type", &t))
        return false;
    return sub_names(sub, json_object_get_string(t));
}

static struct json_object **
slot(struct events *e, uint64_t seq)
{
    return &e->ring[seq % EVENTS_KEEP];
}

void
events_publish(struct events *e, struct json_object *obj)
{
    if (!obj)
        return;
    uint64_t seq = e->next_seq++;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    /* seq and time come first in the printed object only if absent; the
     * publisher's own fields keep their order after them. */
    json_object_object_add(obj, "seq", json_object_new_uint64(seq));
    json_object_object_add(obj, "time", json_object_new_int64(ts.tv_sec));

    struct json_object **s = slot(e, seq);
    json_object_put(*s);
    *s = obj;

    /* Keep our own reference: a callback may publish in turn and push
     * this event out of the ring. */
    json_object_get(obj);
    e->walking++;
    for (struct events_sub *sub = e->subs; sub; sub = sub->next)
        if (sub_wants(sub, obj, false))
            sub->cb(sub->arg, obj);
    e->walking--;
    json_object_put(obj);
    reap(e);
}

void
events_publish_live(struct events *e, struct json_object *obj)
{
    if (!obj)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    json_object_object_add(obj, "time", json_object_new_int64(ts.tv_sec));
    e->walking++;
    for (struct events_sub *sub = e->subs; sub; sub = sub->next)
        if (sub_wants(sub, obj, true))
            sub->cb(sub->arg, obj);
    e->walking--;
    json_object_put(obj);
    reap(e);
}

bool
events_wanted(const struct events *e, const char *type)
{
    for (const struct events_sub *sub = e->subs; sub; sub = sub->next)
        if (!sub->dead && sub_names(sub, type))
            return true;
    return false;
}

static int
types_copy(const char *const *types, char ***ret)
{
    size_t n = 0;
    while (types[n])
        n++;
    if (n > EVENTS_MAX_TYPES)
        return -E2BIG;
    char **v = calloc(n + 1, sizeof(*v));
    if (!v)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if (strlen(types[i]) > EVENTS_MAX_TYPE_LEN ||
            !(v[i] = strdup(types[i]))) {
            for (size_t k = 0; k < i; k++)
                free(v[k]);
            free(v);
            return strlen(types[i]) > EVENTS_MAX_TYPE_LEN ? -E2BIG : -ENOMEM;
        }
    }
    *ret = v;
    return 0;
}

int
events_subscribe(struct events *e, const char *const *types, uint64_t since,
                 events_cb_t cb, void *arg, struct events_sub **ret_sub)
{
    uint64_t last = e->next_seq - 1;
    /* Events since+1 .. last must all still be kept.  since beyond last is
     * a number we never gave out yet: nothing to replay. */
    if (since > 0 && since < last && since + 1 < events_oldest_seq(e))
        return -ESTALE;
    if (since > 0 && since < last && events_oldest_seq(e) == 0)
        return -ESTALE;

    struct events_sub *sub = calloc(1, sizeof(*sub));
    if (!sub)
        return -ENOMEM;
    if (types) {
        int r = types_copy(types, &sub->types);
        if (r < 0) {
            free(sub);
            return r;
        }
    }
    sub->owner = e;
    sub->cb = cb;
    sub->arg = arg;
    /* Append, so that subscribers are called in the order they came. */
    struct events_sub **pp = &e->subs;
    while (*pp)
        pp = &(*pp)->next;
    *pp = sub;
    /* Written before the replay so that the callback may unsubscribe. */
    *ret_sub = sub;

    if (since > 0 && since < last) {
        e->walking++;
        for (uint64_t seq = since + 1; seq <= last && !sub->dead; seq++) {
            /* A callback that publishes may push old events out. */
            if (seq < events_oldest_seq(e))
                continue;
            struct json_object *ev = *slot(e, seq);
            if (ev && sub_wants(sub, ev, false)) {
                json_object_get(ev);
                cb(arg, ev);
                json_object_put(ev);
            }
            /* A callback that publishes moves last on; those events
             * reach this subscriber through events_publish(). */
        }
        e->walking--;
        reap(e);
    }
    return 0;
}

void
events_unsubscribe(struct events_sub *sub)
{
    if (!sub || sub->dead)
        return;
    sub->dead = true;
    sub->owner->have_dead = true;
    reap(sub->owner);
}

uint64_t
events_last_seq(const struct events *e)
{
    return e->next_seq - 1;
}

uint64_t
events_oldest_seq(const struct events *e)
{
    uint64_t last = e->next_seq - 1;
    if (last < e->first_seq)
        return 0; /* nothing published since start */
    if (last - e->first_seq >= EVENTS_KEEP)
        return last - EVENTS_KEEP + 1;
    return e->first_seq;
}

/* --- throttling live reports -------------------------------------------- */

static bool
progress_equal(const struct events_progress *a, const struct events_progress *b)
{
    return a->done == b->done && a->down_rate == b->down_rate &&
           a->up_rate == b->up_rate && a->peers == b->peers &&
           a->state == b->state;
}

bool
events_throttle_due(const struct events_throttle *th,
                    const struct events_progress *now, double now_s)
{
    if (!th->sent)
        return true;
    /* A clock that went back: start again rather than fall silent. */
    if (now_s >= th->at && now_s - th->at < EVENTS_PROGRESS_INTERVAL)
        return false;
    return !progress_equal(&th->last, now);
}

void
events_throttle_sent(struct events_throttle *th,
                     const struct events_progress *p, double now_s)
{
    th->last = *p;
    th->at = now_s;
    th->sent = true;
}
