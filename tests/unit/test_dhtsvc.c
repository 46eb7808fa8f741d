/* Unit tests for daemon/dhtsvc: real UDP sockets on 127.0.0.1 and a real
 * libev loop in one process.  Three nodes join through the first one; an
 * announce by one is found by another's get_peers; the announce schedule;
 * lookups ended by dhtsvc_stop()/dhtsvc_free(); the state file written at
 * stop gives the same node id at the next start; a taken port fails
 * cleanly; dht.status without a DHT.  Every wait is bounded. */
#include <errno.h>
#include <ev.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <json-c/json.h>
#include <netinet/in.h>

#include <cmocka.h>

#include "common/log.h"
#include "daemon/config.h"
#include "daemon/dhtsvc.h"
#include "daemon/worker.h"

#define WAIT_S 10.0

struct env {
    struct ev_loop *loop;
    struct worker *io;
    char dir[64];
};

struct lk_state {
    bool done;
    struct dhtsvc_result res;
    unsigned peers;
    bool saw_7000;
};

static void
on_peers(void *arg, const uint8_t info_hash[20],
         const struct sockaddr_storage *addrs, size_t n)
{
    struct lk_state *s = arg;
    (void)info_hash;
    for (size_t i = 0; i < n; i++) {
        s->peers++;
        const struct sockaddr_in *s4 = (const void *)&addrs[i];
        if (s4->sin_family == AF_INET && ntohs(s4->sin_port) == 7000 &&
            ntohl(s4->sin_addr.s_addr) == 0x7f000001)
            s->saw_7000 = true;
    }
}

static void
on_done(void *arg, const uint8_t info_hash[20],
        const struct dhtsvc_result *res)
{
    struct lk_state *s = arg;
    (void)info_hash;
    s->done = true;
    s->res = *res;
}

static void
tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    (void)w;
    ev_break(loop, EVBREAK_ONE);
}

/* Run the loop until pred(arg) or WAIT_S; returns pred's last value. */
static bool
run_until(struct env *e, bool (*pred)(void *), void *arg)
{
    ev_timer tick;
    ev_timer_init(&tick, tick_cb, 0.01, 0.01);
    ev_timer_start(e->loop, &tick);
    ev_tstamp end = ev_time() + WAIT_S;
    bool ok;
    while (!(ok = pred(arg)) && ev_time() < end)
        ev_run(e->loop, 0);
    ev_timer_stop(e->loop, &tick);
    return ok;
}

static bool
lk_done(void *arg)
{
    return ((struct lk_state *)arg)->done;
}

static bool
saw_peer(void *arg)
{
    return ((struct lk_state *)arg)->saw_7000;
}

struct good_arg {
    struct dhtsvc *svc;
    unsigned want;
};

static bool
has_good(void *arg)
{
    struct good_arg *g = arg;
    return dhtsvc_good_nodes(g->svc) >= g->want;
}

static struct dhtsvc *
node(struct env *e, const char *listen, const char *boot, const char *dir)
{
    struct config c;
    struct config_error err;
    struct dhtsvc *svc = NULL;
    assert_int_equal(config_init(&c), 0);
    assert_int_equal(config_set(&c, "listen", listen, &err), 0);
    assert_int_equal(config_set(&c, "dht_bootstrap", boot, &err), 0);
    assert_int_equal(config_set(&c, "state_dir", dir, &err), 0);
    int r = dhtsvc_new(&svc, e->loop, &c, e->io);
    config_release(&c);
    return r == 0 ? svc : NULL;
}

static int
setup(void **state)
{
    struct env *e = calloc(1, sizeof(*e));
    assert_non_null(e);
    e->loop = ev_loop_new(EVFLAG_AUTO);
    assert_non_null(e->loop);
    assert_int_equal(worker_new(&e->io, e->loop, "state", 1), 0);
    snprintf(e->dir, sizeof(e->dir), "/tmp/test_dhtsvc.XXXXXX");
    assert_non_null(mkdtemp(e->dir));
    *state = e;
    return 0;
}

static int
teardown(void **state)
{
    struct env *e = *state;
    worker_free(e->io);
    ev_loop_destroy(e->loop);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", e->dir);
    (void)system(cmd);
    free(e);
    return 0;
}

static void
test_swarm_announce_and_find(void **state)
{
    struct env *e = *state;
    char da[96], db[96], dc[96], boot[64];
    snprintf(da, sizeof(da), "%s/a", e->dir);
    snprintf(db, sizeof(db), "%s/b", e->dir);
    snprintf(dc, sizeof(dc), "%s/c", e->dir);
    assert_int_equal(mkdir(da, 0700), 0);
    assert_int_equal(mkdir(db, 0700), 0);
    assert_int_equal(mkdir(dc, 0700), 0);

    struct dhtsvc *a = node(e, "127.0.0.1:0", "", da);
    assert_non_null(a);
    assert_true(dhtsvc_port(a) > 0);
    snprintf(boot, sizeof(boot), "127.0.0.1:%u", dhtsvc_port(a));
    struct dhtsvc *b = node(e, "127.0.0.1:0", boot, db);
    struct dhtsvc *c = node(e, "127.0.0.1:0", boot, dc);
    assert_non_null(b);
    assert_non_null(c);
    struct good_arg gb = {b, 1}, gc = {c, 1}, ga = {a, 2};
    assert_true(run_until(e, has_good, &gb));
    assert_true(run_until(e, has_good, &gc));
    assert_true(run_until(e, has_good, &ga));

    uint8_t hash[20];
    memset(hash, 0x5a, sizeof(hash));
    struct lk_state ann = {0}, get = {0};
    int r = 0;
    assert_non_null(
        dhtsvc_get_peers(b, hash, 7000, on_peers, on_done, &ann, &r));
    assert_true(run_until(e, lk_done, &ann));
    assert_false(ann.res.aborted);
    assert_true(ann.res.announced >= 1);
    assert_true(ann.res.queries >= 1);

    assert_non_null(dhtsvc_get_peers(c, hash, 0, on_peers, on_done, &get, &r));
    assert_true(run_until(e, lk_done, &get));
    assert_true(get.saw_7000);

    /* dht.status of a running node. */
    struct json_object *st = dhtsvc_status_json(c);
    assert_non_null(st);
    struct json_object *v;
    assert_true(json_object_object_get_ex(st, "lookups", &v));
    assert_true(json_object_object_get_ex(v, "finished", &v));
    assert_int_equal(json_object_get_int64(v), 1);
    json_object_put(st);

    /* A schedule: its first round runs at once and finds the peer. */
    struct lk_state sched = {0};
    struct dhtsvc_announce *an =
        dhtsvc_announce_new(c, hash, 7001, on_peers, &sched);
    assert_non_null(an);
    assert_true(run_until(e, saw_peer, &sched));
    dhtsvc_announce_free(an);

    /* A lookup still running when the node stops ends as aborted. */
    struct lk_state cut = {0};
    hash[0] ^= 1;
    assert_non_null(dhtsvc_get_peers(a, hash, 0, NULL, on_done, &cut, &r));
    dhtsvc_stop(a);
    assert_true(cut.done && cut.res.aborted);
    assert_null(dhtsvc_get_peers(a, hash, 0, NULL, on_done, &cut, &r));
    assert_int_equal(r, -ESHUTDOWN);

    /* A schedule that outlives its node is detached, then freed. */
    struct dhtsvc_announce *late = dhtsvc_announce_new(b, hash, 7002, NULL,
                                                       NULL);
    assert_non_null(late);
    struct lk_state cut2 = {0};
    assert_non_null(dhtsvc_get_peers(b, hash, 0, NULL, on_done, &cut2, &r));
    dhtsvc_free(b);
    assert_true(cut2.done && cut2.res.aborted);
    dhtsvc_announce_free(late);
    dhtsvc_free(c);
    dhtsvc_free(a);
}

static void
test_state_file_keeps_id(void **state)
{
    struct env *e = *state;
    char d[96];
    snprintf(d, sizeof(d), "%s/keep", e->dir);
    assert_int_equal(mkdir(d, 0700), 0);

    struct dhtsvc *a = node(e, "127.0.0.1:0", "", d);
    assert_non_null(a);
    struct json_object *st = dhtsvc_status_json(a), *v;
    assert_true(json_object_object_get_ex(st, "node_id", &v));
    char id[41];
    snprintf(id, sizeof(id), "%s", json_object_get_string(v));
    json_object_put(st);
    dhtsvc_stop(a);
    dhtsvc_free(a);
    /* The io worker runs the write: worker_free() waits for it. */
    worker_free(e->io);
    assert_int_equal(worker_new(&e->io, e->loop, "state", 1), 0);
    char path[128];
    snprintf(path, sizeof(path), "%s/%s", d, DHTSVC_STATE_FILE);
    assert_int_equal(access(path, R_OK), 0);

    a = node(e, "127.0.0.1:0", "", d);
    assert_non_null(a);
    st = dhtsvc_status_json(a);
    assert_true(json_object_object_get_ex(st, "node_id", &v));
    assert_string_equal(json_object_get_string(v), id);
    json_object_put(st);
    dhtsvc_free(a);

    /* A file that is not ours: ignored, a new id. */
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("garbage", f);
    fclose(f);
    a = node(e, "127.0.0.1:0", "", d);
    assert_non_null(a);
    dhtsvc_free(a);
}

static void
test_port_taken_and_off(void **state)
{
    struct env *e = *state;
    struct dhtsvc *a = node(e, "127.0.0.1:0", "", e->dir);
    assert_non_null(a);
    char listen[64];
    snprintf(listen, sizeof(listen), "127.0.0.1:%u", dhtsvc_port(a));
    assert_null(node(e, listen, "", e->dir));
    /* A name goes to the resolver thread; freeing waits for it. */
    struct dhtsvc *b = node(e, "127.0.0.1:0", "localhost:1,127.0.0.1:1",
                            e->dir);
    assert_non_null(b);
    dhtsvc_free(b);
    dhtsvc_free(a);

    struct json_object *st = dhtsvc_status_json(NULL), *v;
    assert_non_null(st);
    assert_true(json_object_object_get_ex(st, "enabled", &v));
    assert_false(json_object_get_boolean(v));
    json_object_put(st);
    dhtsvc_free(NULL);
    dhtsvc_announce_free(NULL);
}

int
main(void)
{
    log_set_level(LOG_LEVEL_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_swarm_announce_and_find, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_state_file_keeps_id, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_port_taken_and_off, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
