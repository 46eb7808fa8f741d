/* Unit tests for daemon/events: numbering, the ring, replay with since,
 * type filters, unsubscribing from inside a callback, live events and
 * the throttle of torrent.progress. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
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

/* A subscriber that records the types it got and whether each had a
 * sequence number. */
struct live_rec {
    char types[64][32];
    bool had_seq[64];
    size_t n;
};

static void
live_cb(void *arg, struct json_object *o)
{
    struct live_rec *r = arg;
    struct json_object *t;
    assert_true(json_object_object_get_ex(o, "time", NULL));
    assert_true(json_object_object_get_ex(o, "type", &t));
    if (r->n < 64) { /* the first 64 are recorded, the rest counted */
        snprintf(r->types[r->n], sizeof(r->types[r->n]), "%s",
                 json_object_get_string(t));
        r->had_seq[r->n] = json_object_object_get_ex(o, "seq", NULL);
    }
    r->n++;
}

static void
test_live_events(void **state)
{
    (void)state;
    struct events *e;
    assert_int_equal(events_new(&e, 1), 0);
    const char *const star[] = {"*", NULL};
    const char *const prog[] = {"torrent.progress", NULL};
    const char *const both[] = {"*", "torrent.progress", NULL};
    struct live_rec all = {0}, kept = {0}, only = {0}, every = {0};
    struct events_sub *s_all, *s_kept, *s_only, *s_every;
    assert_false(events_wanted(e, "torrent.progress"));
    assert_int_equal(events_subscribe(e, NULL, 0, live_cb, &all, &s_all), 0);
    assert_int_equal(events_subscribe(e, star, 0, live_cb, &kept, &s_kept), 0);
    /* Unfiltered and "*" subscribers do not ask for live events. */
    assert_false(events_wanted(e, "torrent.progress"));
    assert_int_equal(events_subscribe(e, prog, 0, live_cb, &only, &s_only), 0);
    assert_true(events_wanted(e, "torrent.progress"));
    assert_false(events_wanted(e, "torrent.state"));
    assert_int_equal(events_subscribe(e, both, 0, live_cb, &every, &s_every),
                     0);

    events_publish(e, ev("torrent.state"));
    events_publish_live(e, ev("torrent.progress"));
    events_publish(e, ev("torrent.completed"));

    assert_int_equal(all.n, 2);
    assert_string_equal(all.types[0], "torrent.state");
    assert_string_equal(all.types[1], "torrent.completed");
    assert_int_equal(kept.n, 2);
    assert_int_equal(only.n, 1);
    assert_string_equal(only.types[0], "torrent.progress");
    assert_false(only.had_seq[0]);
    assert_int_equal(every.n, 3);
    assert_string_equal(every.types[1], "torrent.progress");
    assert_true(every.had_seq[0]);
    assert_false(every.had_seq[1]);
    assert_true(every.had_seq[2]);
    /* Live events take no number: the kept ones are 1 and 2. */
    assert_int_equal(events_last_seq(e), 2);

    /* Many more live events than the ring holds push nothing out. */
    for (int i = 0; i < 2 * EVENTS_KEEP; i++)
        events_publish_live(e, ev("torrent.progress"));
    assert_int_equal(only.n, 1 + 2 * EVENTS_KEEP);
    assert_int_equal(all.n, 2);
    assert_int_equal(events_last_seq(e), 2);
    assert_int_equal(events_oldest_seq(e), 1);
    struct events_sub *sub;
    /* A replay holds the kept events only, even for a subscriber that
     * names the live type. */
    struct live_rec replay = {0};
    assert_int_equal(events_subscribe(e, both, 1, live_cb, &replay, &sub), 0);
    assert_int_equal(replay.n, 1);
    assert_string_equal(replay.types[0], "torrent.completed");
    events_unsubscribe(sub);

    events_unsubscribe(s_only);
    assert_true(events_wanted(e, "torrent.progress"));
    events_unsubscribe(s_every);
    assert_false(events_wanted(e, "torrent.progress"));
    events_unsubscribe(s_all);
    events_unsubscribe(s_kept);
    events_publish_live(e, NULL); /* accepted, nothing happens */
    events_free(e);
}

/* Unsubscribing from inside a live event's callback. */
static void
unsub_cb(void *arg, struct json_object *o)
{
    struct rec *r = arg;
    (void)o;
    r->n++;
    events_unsubscribe(r->sub);
}

static void
test_live_unsubscribe_in_callback(void **state)
{
    (void)state;
    struct events *e;
    assert_int_equal(events_new(&e, 1), 0);
    const char *const prog[] = {"torrent.progress", NULL};
    struct rec a = {0};
    assert_int_equal(events_subscribe(e, prog, 0, unsub_cb, &a, &a.sub), 0);
    events_publish_live(e, ev("torrent.progress"));
    events_publish_live(e, ev("torrent.progress"));
    assert_int_equal(a.n, 1);
    assert_false(events_wanted(e, "torrent.progress"));
    events_free(e);
}

static void
test_throttle_rules(void **state)
{
    (void)state;
    const struct events_progress p0 = {
        .done = 100, .down_rate = 10, .up_rate = 0, .peers = 1, .state = 3};
    struct events_progress more = p0, rate = p0, peers = p0, st = p0;
    more.done = 200;
    rate.down_rate = 11;
    peers.peers = 2;
    st.state = 0;
    struct events_throttle th = {0};

    /* The first report is due at once, whatever the time. */
    assert_true(events_throttle_due(&th, &p0, 0.0));
    assert_true(events_throttle_due(&th, &p0, 12345.0));
    events_throttle_sent(&th, &p0, 10.0);

    static const struct {
        double at;
        int which; /* 0 same, 1 done, 2 rate, 3 peers, 4 state */
        bool due;
    } cases[] = {
        {10.0, 1, false}, {10.5, 1, false}, {10.999, 2, false},
        {11.0, 0, false}, {11.0, 1, true},  {11.0, 2, true},
        {11.0, 3, true},  {11.0, 4, true},  {100.0, 0, false},
        {9.0, 1, true}, /* the clock went back: not silent for ever */
        {9.0, 0, false},
    };
    const struct events_progress *v[] = {&p0, &more, &rate, &peers, &st};
    for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
        bool due = events_throttle_due(&th, v[cases[i].which], cases[i].at);
        if (due != cases[i].due)
            fail_msg("case %zu: at %.3f, change %d: due %d", i, cases[i].at,
                     cases[i].which, due);
    }
    events_throttle_sent(&th, &more, 11.0);
    assert_int_equal(th.last.done, 200);
    assert_false(events_throttle_due(&th, &p0, 11.9));
    assert_true(events_throttle_due(&th, &p0, 12.0));
}

/* A download that moves at every tick of 0.25 s for 20 s: about one
 * report a second, never two within a second, and none once it stalls. */
static void
test_throttle_simulated_download(void **state)
{
    (void)state;
    struct events_throttle th = {0};
    double last = -1;
    int sent = 0;
    for (int tick = 0; tick <= 80; tick++) {
        double now = 1000.0 + tick * 0.25;
        struct events_progress p = {.done = (uint64_t)tick * 4096,
                                    .down_rate = 16384,
                                    .peers = 1,
                                    .state = 3};
        if (events_throttle_due(&th, &p, now)) {
            if (last >= 0)
                assert_true(now - last >= EVENTS_PROGRESS_INTERVAL);
            events_throttle_sent(&th, &p, now);
            last = now;
            sent++;
        }
    }
    assert_int_equal(sent, 21);
    /* Stalled: the same numbers for ten more seconds, no report. */
    struct events_progress stalled = th.last;
    for (int tick = 1; tick <= 40; tick++)
        assert_false(events_throttle_due(&th, &stalled, last + tick * 0.25));
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
        cmocka_unit_test(test_live_events),
        cmocka_unit_test(test_live_unsubscribe_in_callback),
        cmocka_unit_test(test_throttle_rules),
        cmocka_unit_test(test_throttle_simulated_download),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
