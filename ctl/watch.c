/* watch — the torrentctl commands that follow the daemon's event stream:
 * watch (print events as they happen) and wait (block until torrents reach
 * a state).
 *
 * Both subscribe with events.subscribe and then only read: no polling.
 * wait subscribes before it looks at the torrents' current state, so an
 * event that happens in between is not lost: it is queued on the
 * connection and read after the look.
 *
 * torrent.progress events (live: no sequence number, never replayed, at
 * most one a second per torrent) come only to a subscription that names
 * them: watch asks for them with --progress, wait when it draws its bar,
 * which then moves with every one of them.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "common/jsonrpc.h"
#include "ctl/client.h"
#include "ctl/ctl.h"
#include "ctl/output.h"

/* The most torrents one wait may name. */
#define WAIT_MAX_TORRENTS 1024
/* The longest --timeout: a day is plenty, and keeps the arithmetic sane. */
#define WAIT_MAX_TIMEOUT_S (7 * 86400.0)
/* The bar is redrawn at most this often for progress events (many
 * torrents send many). */
#define WAIT_REDRAW_MS 100

#define PROGRESS_TYPE "torrent.progress"

/* types (an array, or NULL for all the kept types) plus torrent.progress;
 * types is taken.  NULL on out of memory. */
static struct json_object *
types_with_progress(struct json_object *types)
{
    if (!types) {
        types = json_object_new_array();
        /* "*": every type the daemon keeps (torrentd-api(7)). */
        if (!types ||
            json_object_array_add(types, json_object_new_string("*")) < 0) {
            json_object_put(types);
            return NULL;
        }
    }
    if (json_object_array_add(types, json_object_new_string(PROGRESS_TYPE)) <
        0) {
        json_object_put(types);
        return NULL;
    }
    return types;
}

/* Does the daemon know "*" and torrent.progress (control API 1.1)?  An
 * older one takes "*" for a type of that name and sends no progress, so a
 * subscription that names them would get none of the events asked for.
 * One daemon.version call; a daemon that cannot answer it is old.
 * Returns CTL_EXIT_OK and *ret, or an exit status (a transport failure,
 * printed). */
static int
progress_supported(struct ctl_client *c, bool *ret)
{
    struct json_object *result = NULL, *error = NULL, *v;
    int r = ctl_client_rpc(c, "daemon.version", NULL, &result, &error);
    if (r < 0)
        return -r;
    *ret = r == 0 && json_object_object_get_ex(result, "api", &v) &&
           json_object_is_type(v, json_type_string) &&
           jsonrpc_api_at_least(json_object_get_string(v), 1, 1);
    json_object_put(result);
    json_object_put(error);
    return CTL_EXIT_OK;
}

/* Subscribe c to events (all types, or the given array; since > 0 replays
 * what came after since).  Returns CTL_EXIT_OK or an exit status. */
static int
subscribe(struct ctl_client *c, uint64_t since, struct json_object *types,
          uint64_t *ret_last_seq)
{
    struct json_object *params, *result = NULL, *v;
    int r;

    params = json_object_new_object();
    if (!params) {
        json_object_put(types);
        ctl_err("out of memory");
        return CTL_EXIT_FAILURE;
    }
    r = 0;
    if (since > 0)
        r |= json_object_object_add(params, "since",
                                    json_object_new_int64((int64_t)since));
    if (types)
        r |= json_object_object_add(params, "types", types);
    if (r < 0) {
        json_object_put(params);
        ctl_err("out of memory");
        return CTL_EXIT_FAILURE;
    }
    r = ctl_client_call(c, "events.subscribe", params, &result);
    if (r != CTL_EXIT_OK)
        return r;
    if (ret_last_seq)
        *ret_last_seq = json_object_object_get_ex(result, "last_seq", &v)
                            ? (uint64_t)json_object_get_int64(v)
                            : 0;
    json_object_put(result);
    return CTL_EXIT_OK;
}

static int
parse_u64(const char *s, uint64_t *ret)
{
    char *end;
    unsigned long long v;

    if (!*s || *s < '0' || *s > '9')
        return -EINVAL;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || *end)
        return -EINVAL;
    *ret = v;
    return 0;
}

/* --- watch --- */

static bool
is_header_key(const char *k)
{
    return strcmp(k, "seq") == 0 || strcmp(k, "type") == 0 ||
           strcmp(k, "time") == 0 || strcmp(k, "info_hash") == 0 ||
           strcmp(k, "id") == 0;
}

/* torrent.progress: "TIME  TYPE  HASH (ID)  45.2%  HAVE/SIZE  down RATE
 * up RATE  N peers  eta 1m05s  NAME" (no sequence number: it has none). */
static void
print_progress_human(struct json_object *ev)
{
    char when[CTL_FMT_LEN], pct[CTL_FMT_LEN], down[CTL_FMT_LEN],
        up[CTL_FMT_LEN], eta[CTL_FMT_LEN];
    char have[CTL_SIZE_LEN], size[CTL_SIZE_LEN];
    const char *hash = ctl_jstr(ev, "info_hash", "?");
    const char *state = ctl_jstr(ev, "state", "");
    const char *name = ctl_jstr(ev, "name", NULL);
    FILE *o = stdout;

    ctl_fmt_time(when, ctl_jint(ev, "time", 0));
    ctl_fmt_percent(pct, ctl_jdouble(ev, "progress", 0));
    ctl_fmt_rate(down, (uint64_t)ctl_jint(ev, "download_rate", 0));
    ctl_fmt_rate(up, (uint64_t)ctl_jint(ev, "upload_rate", 0));
    ctl_human_size(have, (uint64_t)ctl_jint(ev, "have_bytes", 0));
    ctl_human_size(size, (uint64_t)ctl_jint(ev, "size_bytes", 0));
    printf("%s  %s%-17s%s  %.8s (%" PRId64 ")", when,
           ctl_style(o, CTL_STYLE_DIM), PROGRESS_TYPE,
           ctl_style(o, CTL_STYLE_RESET), hash, ctl_jint(ev, "id", 0));
    if (strcmp(state, "checking") == 0)
        printf("  checking %s", pct);
    else
        printf("  %s  %s/%s", pct, have, size);
    printf("  down %s  up %s  %" PRId64 " peer%s", down, up,
           ctl_jint(ev, "peers_connected", 0),
           ctl_jint(ev, "peers_connected", 0) == 1 ? "" : "s");
    if (ctl_jhas(ev, "eta_s")) {
        ctl_fmt_duration(eta, ctl_jint(ev, "eta_s", -1));
        printf("  eta %s", eta);
    }
    if (name && *name) {
        printf("  ");
        ctl_fputs_safe(name, o);
    }
    putchar('\n');
}

/* One line per event: "TIME  #SEQ  TYPE  HASH  details". */
static void
print_event_human(struct json_object *ev)
{
    char when[CTL_FMT_LEN];
    const char *type = ctl_jstr(ev, "type", "?");
    const char *hash = ctl_jstr(ev, "info_hash", NULL);
    const char *from = ctl_jstr(ev, "old", ctl_jstr(ev, "from", NULL));
    const char *to = ctl_jstr(ev, "new", ctl_jstr(ev, "to", NULL));
    const char *name = ctl_jstr(ev, "name", NULL);
    FILE *o = stdout;

    ctl_fmt_time(when, ctl_jint(ev, "time", 0));
    printf("%s  %s#%" PRId64 "%s  %s%-17s%s", when, ctl_style(o, CTL_STYLE_DIM),
           ctl_jint(ev, "seq", 0), ctl_style(o, CTL_STYLE_RESET),
           ctl_style(o, strcmp(type, "torrent.error") == 0 ? CTL_STYLE_RED
                        : strcmp(type, "torrent.completed") == 0
                            ? CTL_STYLE_GREEN
                            : CTL_STYLE_BOLD),
           type, ctl_style(o, CTL_STYLE_RESET));
    if (hash)
        printf("  %.8s", hash);
    if (ctl_jhas(ev, "id"))
        printf(" (%" PRId64 ")", ctl_jint(ev, "id", 0));
    if (from || to) {
        printf("  ");
        ctl_fputs_safe(from ? from : "?", o);
        printf(" -> ");
        ctl_fputs_safe(to ? to : "?", o);
    }
    if (name && *name) {
        printf("  ");
        ctl_fputs_safe(name, o);
    }
    json_object_object_foreach(ev, k, v)
    {
        if (is_header_key(k) || strcmp(k, "name") == 0 ||
            ((from || to) && (strcmp(k, "old") == 0 || strcmp(k, "new") == 0 ||
                              strcmp(k, "from") == 0 || strcmp(k, "to") == 0)))
            continue;
        printf("  %s=", k);
        if (v && json_object_is_type(v, json_type_string))
            ctl_fputs_safe(json_object_get_string(v), o);
        else
            ctl_fputs_safe(
                json_object_to_json_string_ext(
                    v, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE),
                o);
    }
    putchar('\n');
}

static const char watch_help[] =
    "\nOptions:\n"
    "  -s, --since SEQ  first the kept events after number SEQ, then new "
    "ones\n"
    "  -n, --count N    exit after N events\n"
    "  -t, --type TYPE  only events of this type (may repeat)\n"
    "  -p, --progress   also torrent.progress: each downloading or checking\n"
    "                   torrent's progress, rates and peers, about once a\n"
    "                   second; never replayed by --since, no number\n"
    CTL_COMMON_OPTS_HELP;

static const char wait_help[] =
    "\nOn a terminal, a progress bar on standard error moves with the\n"
    "daemon's progress events (about once a second).\n\nOptions:\n"
    "  -f, --for STATE      complete (default), seeding, metadata or "
    "removed\n"
    "  -t, --timeout S      give up after S seconds (exit status 6)\n"
    CTL_COMMON_OPTS_HELP;

int
ctl_cmd_watch(struct ctl_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        {"help", no_argument, NULL, 'h'},
        {"json", no_argument, NULL, 'J'},
        {"since", required_argument, NULL, 's'},
        {"count", required_argument, NULL, 'n'},
        {"type", required_argument, NULL, 't'},
        {"progress", no_argument, NULL, 'p'},
        {NULL, 0, NULL, 0}};
    struct ctl_client client;
    struct json_object *types = NULL, *ev = NULL;
    uint64_t since = 0, count = 0, seen = 0, last = 0;
    bool shutdown = false, progress = false;
    int c, r;

    optind = 0;
    while ((c = getopt_long(argc, argv, ":hs:n:t:p", opts, NULL)) != -1) {
        switch (c) {
        case 'p':
            progress = true;
            break;
        case 'h':
            json_object_put(types);
            ctl_cmd_help(ctx);
            fputs(watch_help, stdout);
            return CTL_EXIT_OK;
        case 'J':
            ctx->json = true;
            break;
        case 's':
            if (parse_u64(optarg, &since) < 0) {
                json_object_put(types);
                return ctl_usage_error(ctx,
                                       "--since takes a sequence "
                                       "number, not '%s'",
                                       optarg);
            }
            break;
        case 'n':
            if (parse_u64(optarg, &count) < 0 || count == 0) {
                json_object_put(types);
                return ctl_usage_error(ctx,
                                       "--count takes a positive "
                                       "number, not '%s'",
                                       optarg);
            }
            break;
        case 't':
            if (!types)
                types = json_object_new_array();
            if (!types || json_object_array_add(
                              types, json_object_new_string(optarg)) < 0) {
                json_object_put(types);
                ctl_err("out of memory");
                return CTL_EXIT_FAILURE;
            }
            break;
        default:
            json_object_put(types);
            return ctl_option_error(ctx, c, argv);
        }
    }
    if (optind != argc) {
        json_object_put(types);
        return ctl_usage_error(ctx, "watch takes no arguments");
    }

    r = ctl_client_open(&client, ctx, CTL_ACCESS_READ);
    if (r != CTL_EXIT_OK) {
        json_object_put(types);
        ctl_client_close(&client);
        return r;
    }
    if (progress) {
        bool ok = false;
        r = progress_supported(&client, &ok);
        if (r != CTL_EXIT_OK) {
            json_object_put(types);
            ctl_client_close(&client);
            return r;
        }
        if (!ok)
            ctl_err("this torrentd sends no torrent.progress events "
                    "(control API older than 1.1), ignoring --progress");
        else if (!(types = types_with_progress(types))) {
            ctl_err("out of memory");
            ctl_client_close(&client);
            return CTL_EXIT_FAILURE;
        }
    }
    r = subscribe(&client, since, types, &last);
    types = NULL;
    if (since > 0)
        last = since; /* the replay starts after since */
    while (r == CTL_EXIT_OK && (count == 0 || seen < count)) {
        r = ctl_client_next_event(&client, -1, &ev);
        if (r == 0) {
            /* The daemon went away: expected after session.shutdown. */
            if (!shutdown)
                ctl_err("torrentd closed the connection; 'torrentctl watch "
                        "--since %" PRIu64 "' resumes after the last event "
                        "seen",
                        last);
            r = shutdown ? CTL_EXIT_OK : CTL_EXIT_FAILURE;
            break;
        }
        if (r < 0) {
            r = -r;
            break;
        }
        r = CTL_EXIT_OK;
        seen++;
        if (ctl_jint(ev, "seq", 0) > 0)
            last = (uint64_t)ctl_jint(ev, "seq", 0);
        shutdown = strcmp(ctl_jstr(ev, "type", ""), "session.shutdown") == 0;
        if (ctx->json) {
            if (ctl_json_print(ev) < 0)
                r = CTL_EXIT_FAILURE;
        } else if (strcmp(ctl_jstr(ev, "type", ""), PROGRESS_TYPE) == 0) {
            print_progress_human(ev);
        } else {
            print_event_human(ev);
        }
        json_object_put(ev);
        ev = NULL;
        /* A reader at the other end of a pipe sees each event at once. */
        if (fflush(stdout) != 0)
            r = CTL_EXIT_FAILURE;
    }
    ctl_client_close(&client);
    return r;
}

/* --- wait --- */

enum wait_for {
    WAIT_COMPLETE,
    WAIT_SEEDING,
    WAIT_METADATA,
    WAIT_REMOVED,
    WAIT_FOR_MAX
};

/* For "N of M torrents ... yet". */
static const char *const wait_not_yet[WAIT_FOR_MAX] = {
    [WAIT_COMPLETE] = "not complete",
    [WAIT_SEEDING] = "not seeding",
    [WAIT_METADATA] = "without metadata",
    [WAIT_REMOVED] = "not removed",
};

static const char *const wait_for_names[WAIT_FOR_MAX] = {
    [WAIT_COMPLETE] = "complete",
    [WAIT_SEEDING] = "seeding",
    [WAIT_METADATA] = "metadata",
    [WAIT_REMOVED] = "removed",
};

struct wait_item {
    const char *arg;          /* borrowed: argv */
    char *info_hash;          /* owned; NULL when unknown */
    struct json_object *last; /* owned: the latest torrent object */
    uint64_t size, have;
    double rate;       /* download_rate of its last progress event */
    double check_frac; /* while checking: the share checked */
    bool checking;
    bool done;
    bool warned_paused;
};

struct wait_state {
    struct ctl_ctx *ctx;
    struct ctl_client client;
    enum wait_for cond;
    struct wait_item *items;
    size_t n, n_done;
    struct ctl_progress bar;
    char *label;       /* owned: the bar's label */
    char *check_label; /* owned: the same while some torrent is checked */
    int64_t drawn_ms;  /* when the bar was last drawn */
    bool bar_on;
};

static bool
state_is(struct json_object *t, const char *state)
{
    return strcmp(ctl_jstr(t, "state", ""), state) == 0;
}

/* Has torrent t reached the condition? */
static bool
reached(enum wait_for cond, struct json_object *t)
{
    switch (cond) {
    case WAIT_COMPLETE:
        if (state_is(t, "seeding"))
            return true;
        if (state_is(t, "checking") || state_is(t, "metadata") ||
            ctl_jint(t, "size_bytes", 0) <= 0)
            return false;
        return ctl_jdouble(t, "progress", 0) >= 1.0 ||
               ctl_jint(t, "have_bytes", 0) >= ctl_jint(t, "size_bytes", 0);
    case WAIT_SEEDING:
        return state_is(t, "seeding");
    case WAIT_METADATA:
        if (ctl_jhas(t, "has_metadata"))
            return json_object_get_boolean(
                json_object_object_get(t, "has_metadata"));
        return !state_is(t, "metadata") && ctl_jint(t, "size_bytes", 0) > 0;
    case WAIT_REMOVED:
    case WAIT_FOR_MAX:
        break;
    }
    return false;
}

static void
item_name(const struct wait_item *it, FILE *fp)
{
    const char *name = ctl_jstr(it->last, "name", NULL);

    if (name && *name)
        ctl_fputs_safe(name, fp);
    else
        ctl_fputs_safe(it->info_hash ? it->info_hash : it->arg, fp);
}

/* Redraw the bar: the verified bytes of every torrent, or for a torrent
 * being checked the share of it checked ("checking" in front of the
 * label then).  Unless forced, at most every WAIT_REDRAW_MS. */
static void
bar_update(struct wait_state *w, bool force)
{
    uint64_t have = 0;
    bool checking = false;
    int64_t now;

    if (!w->bar_on)
        return;
    now = ctl_now_ms();
    if (!force && now - w->drawn_ms < WAIT_REDRAW_MS)
        return;
    w->drawn_ms = now;
    for (size_t i = 0; i < w->n; i++) {
        const struct wait_item *it = &w->items[i];

        if (it->checking && !it->done) {
            checking = true;
            have += (uint64_t)(it->check_frac * (double)it->size);
        } else {
            have += it->have;
        }
    }
    if (checking && w->check_label)
        w->bar.label = w->check_label;
    else if (w->label)
        w->bar.label = w->label;
    ctl_progress_update(&w->bar, have);
}

static double
clamp01(double v)
{
    return isfinite(v) && v > 0 ? (v < 1 ? v : 1) : 0;
}

/* A torrent.progress event: move the bar, without asking the daemon. */
static void
progress_event(struct wait_state *w, struct json_object *ev, const char *hash)
{
    for (size_t i = 0; i < w->n; i++) {
        struct wait_item *it = &w->items[i];

        if (it->done || !it->info_hash || strcmp(it->info_hash, hash) != 0)
            continue;
        if (ctl_jint(ev, "size_bytes", 0) > 0)
            it->size = (uint64_t)ctl_jint(ev, "size_bytes", 0);
        if (ctl_jint(ev, "have_bytes", 0) >= 0)
            it->have = (uint64_t)ctl_jint(ev, "have_bytes", 0);
        it->checking = state_is(ev, "checking");
        it->check_frac = clamp01(ctl_jdouble(ev, "progress", 0));
        it->rate = ctl_jdouble(ev, "download_rate", 0);
    }
    /* The daemon's rate: an average since the bar began would be wrong
     * for a wait that starts halfway through. */
    double rate = 0;
    for (size_t i = 0; i < w->n && rate >= 0; i++) {
        if (w->items[i].checking)
            rate = -1; /* checking: the average of the bar */
        else if (!w->items[i].done)
            rate += w->items[i].rate;
    }
    ctl_progress_set_rate(&w->bar, rate);
    bar_update(w, false);
}

/* Look at item i's torrent now (torrent.get) and mark it done when it has
 * reached the condition.  Returns CTL_EXIT_OK (whether done or not), or
 * an exit status for a torrent that can never get there. */
static int
check_item(struct wait_state *w, size_t i)
{
    struct wait_item *it = &w->items[i];
    struct json_object *params, *result = NULL, *error = NULL, *t;
    int r;

    if (it->done)
        return CTL_EXIT_OK;
    params = json_object_new_object();
    if (!params ||
        ctl_torrent_ref(params, it->info_hash ? it->info_hash : it->arg) < 0) {
        json_object_put(params);
        ctl_err("out of memory");
        return CTL_EXIT_FAILURE;
    }
    r = ctl_client_rpc(&w->client, "torrent.get", params, &result, &error);
    if (r < 0)
        return -r;
    if (r > 0) {
        if (w->cond == WAIT_REMOVED &&
            ctl_rpc_error_status(error) == CTL_EXIT_NOT_FOUND) {
            json_object_put(error);
            it->done = true;
            w->n_done++;
            return CTL_EXIT_OK;
        }
        r = ctl_rpc_error_exit(error);
        json_object_put(error);
        if (r == CTL_EXIT_NOT_FOUND && it->info_hash)
            ctl_err("it was removed while we waited");
        return r;
    }
    t = result; /* the torrent object */
    json_object_put(it->last);
    it->last = t;
    if (!it->info_hash && ctl_jstr(t, "info_hash", NULL)) {
        it->info_hash = strdup(ctl_jstr(t, "info_hash", ""));
        if (!it->info_hash) {
            ctl_err("out of memory");
            return CTL_EXIT_FAILURE;
        }
    }
    it->size = (uint64_t)(ctl_jint(t, "size_bytes", 0) > 0
                              ? ctl_jint(t, "size_bytes", 0)
                              : 0);
    it->have = (uint64_t)(ctl_jint(t, "have_bytes", 0) > 0
                              ? ctl_jint(t, "have_bytes", 0)
                              : 0);
    it->checking = state_is(t, "checking");
    it->check_frac = clamp01(ctl_jdouble(t, "progress", 0));
    if (w->cond != WAIT_REMOVED && reached(w->cond, t)) {
        it->done = true;
        w->n_done++;
        return CTL_EXIT_OK;
    }
    if (w->cond != WAIT_REMOVED && state_is(t, "error")) {
        (void)fflush(stdout);
        fprintf(stderr, "%s: ", w->ctx->progname);
        item_name(it, stderr);
        fprintf(stderr, ": ");
        ctl_fputs_safe(ctl_jstr(t, "error", "error"), stderr);
        fputc('\n', stderr);
        return CTL_EXIT_FAILURE;
    }
    if (state_is(t, "paused") && !it->warned_paused &&
        w->cond != WAIT_REMOVED) {
        it->warned_paused = true;
        fprintf(stderr, "%s: note: ", w->ctx->progname);
        item_name(it, stderr);
        fprintf(stderr, " is paused; 'torrentctl start %s' resumes it\n",
                it->info_hash ? it->info_hash : it->arg);
    }
    return CTL_EXIT_OK;
}

/* An event came: look again at the torrents it is about. */
static int
handle_event(struct wait_state *w, struct json_object *ev)
{
    const char *type = ctl_jstr(ev, "type", "");
    const char *hash = ctl_jstr(ev, "info_hash", NULL);
    int r;

    if (strcmp(type, "session.shutdown") == 0) {
        ctl_err("torrentd is shutting down");
        return CTL_EXIT_FAILURE;
    }
    if (!hash)
        return CTL_EXIT_OK;
    if (strcmp(type, PROGRESS_TYPE) == 0) {
        progress_event(w, ev, hash);
        return CTL_EXIT_OK;
    }
    for (size_t i = 0; i < w->n; i++) {
        struct wait_item *it = &w->items[i];

        if (it->done || !it->info_hash || strcmp(it->info_hash, hash) != 0)
            continue;
        if (strcmp(type, "torrent.removed") == 0) {
            if (w->cond == WAIT_REMOVED) {
                it->done = true;
                w->n_done++;
                continue;
            }
            (void)fflush(stdout);
            fprintf(stderr, "%s: ", w->ctx->progname);
            item_name(it, stderr);
            fprintf(stderr, " was removed\n");
            return CTL_EXIT_NOT_FOUND;
        }
        r = check_item(w, i);
        if (r != CTL_EXIT_OK)
            return r;
    }
    bar_update(w, true);
    return CTL_EXIT_OK;
}

static int
parse_timeout(const char *s, double *ret)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < 0 ||
        v > WAIT_MAX_TIMEOUT_S)
        return -EINVAL;
    *ret = v;
    return 0;
}

static void
wait_release(struct wait_state *w)
{
    if (w->bar_on)
        ctl_progress_end(&w->bar);
    for (size_t i = 0; i < w->n; i++) {
        free(w->items[i].info_hash);
        json_object_put(w->items[i].last);
    }
    free(w->items);
    free(w->label);
    free(w->check_label);
    ctl_client_close(&w->client);
}

/* With --json: {"torrents": [the last object seen of each]}. */
static int
wait_print_json(struct wait_state *w)
{
    struct json_object *doc = json_object_new_object();
    struct json_object *arr = json_object_new_array();
    int r;

    if (!doc || !arr || json_object_object_add(doc, "torrents", arr) < 0) {
        json_object_put(arr);
        json_object_put(doc);
        ctl_err("out of memory");
        return CTL_EXIT_FAILURE;
    }
    for (size_t i = 0; i < w->n; i++)
        if (w->items[i].last)
            (void)json_object_array_add(arr, json_object_get(w->items[i].last));
    r = ctl_json_print(doc) < 0 ? CTL_EXIT_FAILURE : CTL_EXIT_OK;
    json_object_put(doc);
    return r;
}

int
ctl_cmd_wait(struct ctl_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        {"help", no_argument, NULL, 'h'},
        {"json", no_argument, NULL, 'J'},
        {"for", required_argument, NULL, 'f'},
        {"timeout", required_argument, NULL, 't'},
        {NULL, 0, NULL, 0}};
    struct wait_state w = {.ctx = ctx, .cond = WAIT_COMPLETE};
    struct json_object *ev = NULL, *types = NULL;
    double timeout_s = -1;
    int64_t deadline = -1;
    uint64_t total = 0;
    bool want_bar;
    int c, r;

    optind = 0;
    while ((c = getopt_long(argc, argv, ":hf:t:", opts, NULL)) != -1) {
        switch (c) {
        case 'h':
            ctl_cmd_help(ctx);
            fputs(wait_help, stdout);
            return CTL_EXIT_OK;
        case 'J':
            ctx->json = true;
            break;
        case 'f':
            for (w.cond = 0; w.cond < WAIT_FOR_MAX; w.cond++)
                if (strcmp(optarg, wait_for_names[w.cond]) == 0)
                    break;
            if (w.cond == WAIT_FOR_MAX)
                return ctl_usage_error(ctx,
                                       "--for takes complete, "
                                       "seeding, metadata or removed, "
                                       "not '%s'",
                                       optarg);
            break;
        case 't':
            if (parse_timeout(optarg, &timeout_s) < 0)
                return ctl_usage_error(ctx,
                                       "--timeout takes seconds "
                                       "(0 to %.0f), not '%s'",
                                       WAIT_MAX_TIMEOUT_S, optarg);
            break;
        default:
            return ctl_option_error(ctx, c, argv);
        }
    }
    if (optind >= argc)
        return ctl_usage_error(ctx, "name at least one torrent");
    if (argc - optind > WAIT_MAX_TORRENTS)
        return ctl_usage_error(ctx, "at most %d torrents at a time",
                               WAIT_MAX_TORRENTS);
    if (timeout_s >= 0)
        deadline = ctl_now_ms() + (int64_t)(timeout_s * 1000);

    w.n = (size_t)(argc - optind);
    w.items = calloc(w.n, sizeof(*w.items));
    if (!w.items) {
        ctl_err("out of memory");
        return CTL_EXIT_FAILURE;
    }
    for (size_t i = 0; i < w.n; i++)
        w.items[i].arg = argv[optind + (int)i];

    r = ctl_client_open(&w.client, ctx, CTL_ACCESS_READ);
    if (r != CTL_EXIT_OK)
        goto out;
    /* Subscribe first, then look: nothing that happens in between is
     * missed, it waits in the connection's queue.  A bar on a terminal
     * also asks for the torrents' progress (about once a second each). */
    want_bar =
        !ctx->json && w.cond != WAIT_REMOVED && isatty(STDERR_FILENO) == 1;
    if (want_bar) {
        /* An older daemon (API 1.0): every type, as before; the bar then
         * moves with the state events only. */
        bool progress = false;
        r = progress_supported(&w.client, &progress);
        if (r != CTL_EXIT_OK)
            goto out;
        if (progress && !(types = types_with_progress(NULL))) {
            ctl_err("out of memory");
            r = CTL_EXIT_FAILURE;
            goto out;
        }
    }
    r = subscribe(&w.client, 0, types, NULL);
    types = NULL;
    for (size_t i = 0; r == CTL_EXIT_OK && i < w.n; i++)
        r = check_item(&w, i);
    if (r != CTL_EXIT_OK)
        goto out;

    if (want_bar && w.n_done < w.n) {
        for (size_t i = 0; i < w.n; i++)
            total += w.items[i].size;
        if (total > 0) {
            /* One torrent: its name; several: how many. */
            const char *name = ctl_jstr(w.items[0].last, "name", NULL);
            if (w.n == 1 && name && *name)
                w.label = ctl_safe_strdup(name);
            else if (asprintf(&w.label, "%zu torrents", w.n) < 0)
                w.label = NULL;
            if (asprintf(&w.check_label, "checking %s",
                         w.label ? w.label : "data") < 0)
                w.check_label = NULL;
            ctl_progress_start(&w.bar, w.label ? w.label : "waiting", total);
            w.bar_on = w.bar.on;
            bar_update(&w, true);
        }
    }

    while (w.n_done < w.n) {
        r = ctl_client_next_event(&w.client, deadline, &ev);
        if (r == -CTL_EXIT_TIMEOUT) {
            if (w.bar_on) {
                ctl_progress_end(&w.bar);
                w.bar_on = false;
            }
            ctl_err("timed out after %g s: %zu of %zu torrent%s still %s",
                    timeout_s, w.n - w.n_done, w.n, w.n == 1 ? "" : "s",
                    wait_not_yet[w.cond]);
            r = CTL_EXIT_TIMEOUT;
            goto out;
        }
        if (r == 0) {
            ctl_err("torrentd closed the connection");
            r = CTL_EXIT_FAILURE;
            goto out;
        }
        if (r < 0) {
            r = -r;
            goto out;
        }
        r = handle_event(&w, ev);
        json_object_put(ev);
        ev = NULL;
        if (r != CTL_EXIT_OK)
            goto out;
    }
    if (w.bar_on) {
        ctl_progress_end(&w.bar);
        w.bar_on = false;
    }
    if (ctx->json) {
        r = wait_print_json(&w);
    } else {
        for (size_t i = 0; i < w.n; i++) {
            item_name(&w.items[i], stdout);
            printf(" %s\n", w.cond == WAIT_COMPLETE   ? "is complete"
                            : w.cond == WAIT_SEEDING  ? "is seeding"
                            : w.cond == WAIT_METADATA ? "has its metadata"
                                                      : "is removed");
        }
        r = CTL_EXIT_OK;
    }
out:
    wait_release(&w);
    return r;
}
