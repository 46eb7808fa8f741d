/* Unit tests for daemon/events: numbering, the ring, replay with since,
 * type filters, unsubscribing from inside a callback. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "daemon/events.h"

struct rec {
    uint64_t seqs[2 * EVENTS_KEEP + 16];
    size_t n;
    struct events_sub *sub;   /* to unsubscribe from the callback */
    struct events_sub *other; /* to unsubscribe another one */
    struct events *e;
    size_t stop_after; /* unsubscribe after this many, 0 = never */
    bool publish_in_cb;
};

static struct json_object *
ev(const char *type)
{
    struct json_object *o = json_object_new_object();
    assert_non_null(o);
    json_object_object_add(o, "type", json_object_new_string(type));
    return o;
}

static uint64_t
seq_of(struct json_object *o)
{
    struct json_object *s;
    assert_true(json_object_object_get_ex(o, "seq", &s));
    return (uint64_t)json_object_get_int64(s);
}

static void
cb(void *arg, struct json_object *o)
{
    struct rec *r = arg;
    assert_true(json_object_object_get_ex(o, "time", NULL));
    r->seqs[r->n++] = seq_of(o);
    if (r->other) {
        events_unsubscribe(r->other);
        r->other = NULL;
    }
    if (r->stop_after && r->n == r->stop_after)
        events_unsubscribe(r->sub);
    if (r->publish_in_cb) {
        r->publish_in_cb = false;
        events_publish(r->e, ev("nested"));
    }
}

static void
test_numbering(void **state)
{
    (void)state;
    struct events *e;
    assert_int_equal(events_new(&e, 1), 0);
    assert_int_equal(events_last_seq(e), 0);
    assert_int_equal(events_oldest_seq(e), 0);
    struct rec r = {0};
    assert_int_equal(events_subscribe(e, NULL, 0, cb, &r, &r.sub), 0);
    for (int i = 0; i < 5; i++)
        events_publish(e, ev("torrent.added"));
    assert_int_equal(r.n, 5);
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(r.seqs[i], i + 1);
    assert_int_equal(events_last_seq(e), 5);
    assert_int_equal(events_oldest_seq(e), 1);
    events_unsubscribe(r.sub);
    events_publish(e, ev("x"));
    assert_int_equal(r.n, 5);
    events_free(e);
}

static void
test_restored_counter(void **state)
{
    (void)state;
    struct events *e;
    assert_int_equal(events_new(&e, 1001), 0);
    assert_int_equal(events_last_seq(e), 1000);
    assert_int_equal(events_oldest_seq(e), 0);
    /* Events before the restart are gone: since inside them is stale. */
    struct rec r = {0};
    struct events_sub *sub;
    assert_int_equal(events_subscribe(e, NULL, 500, cb, &r, &sub), -ESTALE);
    /* since = the last one: nothing missed. */
    assert_int_equal(events_subscribe(e, NULL, 1000, cb, &r, &sub), 0);
    events_publish(e, ev("a"));
    assert_int_equal(r.n, 1);
    assert_int_equal(r.seqs[0], 1001);
    assert_int_equal(events_oldest_seq(e), 1001);
    events_free(e); /* frees the subscription too */
}

static void
test_replay_and_ring(void **state)
{
    (void)state;
    struct events *e;
    assert_int_equal(events_new(&e, 1), 0);
    for (int i = 0; i < 10; i++)
        events_publish(e, ev(i % 2 ? "odd" : "even"));
    struct rec r = {0};
    struct events_sub *sub;
    assert_int_equal(events_subscribe(e, NULL, 7, cb, &r, &sub), 0);
    assert_int_equal(r.n, 3);
    assert_int_equal(r.seqs[0], 8);
    assert_int_equal(r.seqs[2], 10);
    events_unsubscribe(sub);

    /* A future since: nothing to replay, accepted. */
    struct rec f = {0};
    assert_int_equal(events_subscribe(e, NULL, 50, cb, &f, &sub), 0);
    assert_int_equal(f.n, 0);
    events_unsubscribe(sub);

    /* Wrap the ring. */
    for (int i = 0; i < EVENTS_KEEP; i++)
        events_publish(e, ev("fill"));
    uint64_t last = events_last_seq(e);
    assert_int_equal(last, 10 + EVENTS_KEEP);
    assert_int_equal(events_oldest_seq(e), last - EVENTS_KEEP + 1);
    struct rec g = {0};
    assert_int_equal(events_subscribe(e, NULL, 9, cb, &g, &sub), -ESTALE);
    assert_int_equal(g.n, 0);
    /* The oldest kept minus one is the earliest since accepted. */
    assert_int_equal(
        events_subscribe(e, NULL, events_oldest_seq(e) - 1, cb, &g, &sub), 0);
    assert_int_equal(g.n, EVENTS_KEEP);
    assert_int_equal(g.seqs[0], events_oldest_seq(e));
    assert_int_equal(g.seqs[EVENTS_KEEP - 1], last);
    events_free(e);
}

static void
test_types(void **state)
{
    (void)state;
    struct events *e;
    assert_int_equal(events_new(&e, 1), 0);
    const char *const types[] = {"odd", NULL};
    for (int i = 1; i <= 6; i++)
        events_publish(e, ev(i % 2 ? "odd" : "even"));
    struct rec r = {0};
    struct events_sub *sub;
    assert_int_equal(events_subscribe(e, types, 1, cb, &r, &sub), 0);
    assert_int_equal(r.n, 2); /* 3 and 5 */
    assert_int_equal(r.seqs[0], 3);
    assert_int_equal(r.seqs[1], 5);
    events_publish(e, ev("even"));
    events_publish(e, ev("odd"));
    assert_int_equal(r.n, 3);
    assert_int_equal(r.seqs[2], 8);
    /* An event without a type reaches only unfiltered subscribers. */
    events_publish(e, json_object_new_object());
    assert_int_equal(r.n, 3);
    events_free(e);
}

static void
test_unsubscribe_in_callback(void **state)
{
    (void)state;
    struct events *e;
    assert_int_equal(events_new(&e, 1), 0);
    struct rec a = {0}, b = {0}, c = {0};
    a.stop_after = 2;
    assert_int_equal(events_subscribe(e, NULL, 0, cb, &a, &a.sub), 0);
    assert_int_equal(events_subscribe(e, NULL, 0, cb, &b, &b.sub), 0);
    assert_int_equal(events_subscribe(e, NULL, 0, cb, &c, &c.sub), 0);
    /* b ends c's subscription from its callback, before c is called. */
    b.other = c.sub;
    events_publish(e, ev("one"));
    assert_int_equal(a.n, 1);
    assert_int_equal(b.n, 1);
    assert_int_equal(c.n, 0);
    events_publish(e, ev("two")); /* a unsubscribes itself here */
    events_publish(e, ev("three"));
    assert_int_equal(a.n, 2);
    assert_int_equal(b.n, 3);
    /* Unsubscribing during the replay stops the replay. */
    struct rec d = {0};
    d.stop_after = 1;
    assert_int_equal(events_subscribe(e, NULL, 1, cb, &d, &d.sub), 0);
    assert_int_equal(d.n, 1);
    events_publish(e, ev("four"));
    assert_int_equal(d.n, 1);
    events_unsubscribe(b.sub);
    events_free(e);
}

static void
test_publish_in_callback(void **state)
{
    (void)state;
    struct events *e;
    assert_int_equal(events_new(&e, 1), 0);
    struct rec a = {0};
    a.e = e;
    a.publish_in_cb = true;
    assert_int_equal(events_subscribe(e, NULL, 0, cb, &a, &a.sub), 0);
    events_publish(e, ev("outer"));
    assert_int_equal(a.n, 2);
    assert_int_equal(a.seqs[0], 1);
    assert_int_equal(a.seqs[1], 2);
    assert_int_equal(events_last_seq(e), 2);
    events_free(e);
}

static void
test_too_many_types(void **state)
{
    (void)state;
    struct events *e;
    assert_int_equal(events_new(&e, 1), 0);
    const char *types[70];
    for (int i = 0; i < 69; i++)
        types[i] = "t";
    types[69] = NULL;
    struct rec r = {0};
    struct events_sub *sub;
    assert_int_equal(events_subscribe(e, types, 0, cb, &r, &sub), -E2BIG);
    events_free(e);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_numbering),
        cmocka_unit_test(test_restored_counter),
        cmocka_unit_test(test_replay_and_ring),
        cmocka_unit_test(test_types),
        cmocka_unit_test(test_unsubscribe_in_callback),
        cmocka_unit_test(test_publish_in_callback),
        cmocka_unit_test(test_too_many_types),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
