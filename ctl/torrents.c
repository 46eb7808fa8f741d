/* torrents — the torrentctl commands about torrents: add, list, info,
 * start, stop, remove, verify, files, peers, trackers, set.  Each sends
 * one request (torrentd-api(7)) and prints the result for people, or with
 * --json exactly the result the daemon sent.  Also the formatting helpers
 * the daemon commands share (ctl.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>
#include <openssl/evp.h>

#include "common/buf.h"
#include "ctl/client.h"
#include "ctl/ctl.h"
#include "ctl/output.h"

/* The largest .torrent file add sends: the daemon's limit for "metainfo"
 * (torrentd-api(7)).  Base64 makes it 4/3 larger, well under the daemon's
 * 64 MiB line limit. */
#define ADD_MAX_FILE (32u << 20)

/* --- Formatting helpers --- */

void
ctl_fmt_rate(char out[CTL_FMT_LEN], uint64_t bytes_per_s)
{
    char size[CTL_SIZE_LEN];

    ctl_human_size(size, bytes_per_s);
    (void)snprintf(out, CTL_FMT_LEN, "%s/s", size);
}

void
ctl_fmt_duration(char out[CTL_FMT_LEN], int64_t s)
{
    if (s < 0)
        (void)snprintf(out, CTL_FMT_LEN, "-");
    else if (s < 60)
        (void)snprintf(out, CTL_FMT_LEN, "%" PRId64 "s", s);
    else if (s < 3600)
        (void)snprintf(out, CTL_FMT_LEN, "%" PRId64 "m%02" PRId64 "s", s / 60,
                       s % 60);
    else if (s < 86400)
        (void)snprintf(out, CTL_FMT_LEN, "%" PRId64 "h%02" PRId64 "m", s / 3600,
                       s / 60 % 60);
    else
        (void)snprintf(out, CTL_FMT_LEN, "%" PRId64 "d%02" PRId64 "h",
                       s / 86400, s / 3600 % 24);
}

void
ctl_fmt_time(char out[CTL_FMT_LEN], int64_t unix_time)
{
    struct tm tm;
    time_t t = (time_t)unix_time;

    if (unix_time <= 0 || !localtime_r(&t, &tm) ||
        strftime(out, CTL_FMT_LEN, "%Y-%m-%d %H:%M:%S", &tm) == 0)
        (void)snprintf(out, CTL_FMT_LEN, "-");
}

void
ctl_fmt_percent(char out[CTL_FMT_LEN], double fraction)
{
    if (!isfinite(fraction) || fraction < 0)
        fraction = 0;
    if (fraction > 1)
        fraction = 1;
    /* Never show 100.0% for a torrent that is not quite complete. */
    if (fraction < 1 && fraction * 1000 >= 999.5)
        (void)snprintf(out, CTL_FMT_LEN, "99.9%%");
    else
        (void)snprintf(out, CTL_FMT_LEN, "%.1f%%", fraction * 100);
}

static struct json_object *
jget(struct json_object *obj, const char *key)
{
    struct json_object *v;

    if (!obj || !json_object_is_type(obj, json_type_object) ||
        !json_object_object_get_ex(obj, key, &v))
        return NULL;
    return v;
}

bool
ctl_jhas(struct json_object *obj, const char *key)
{
    return jget(obj, key) != NULL;
}

const char *
ctl_jstr(struct json_object *obj, const char *key, const char *def)
{
    struct json_object *v = jget(obj, key);

    return v ? json_object_get_string(v) : def;
}

int64_t
ctl_jint(struct json_object *obj, const char *key, int64_t def)
{
    struct json_object *v = jget(obj, key);

    if (!v || !(json_object_is_type(v, json_type_int) ||
                json_object_is_type(v, json_type_double)))
        return def;
    return json_object_get_int64(v);
}

double
ctl_jdouble(struct json_object *obj, const char *key, double def)
{
    struct json_object *v = jget(obj, key);

    if (!v || !(json_object_is_type(v, json_type_int) ||
                json_object_is_type(v, json_type_double)))
        return def;
    return json_object_get_double(v);
}

/* --- Common shape of a command --- */

/* What the options of a command said. */
struct cmd_opts {
    const char *dir;
    const char *fields;
    bool paused;
    bool delete_data;
    bool no_move;
};

enum {
    OPT_DIR = 'd',
    OPT_PAUSED = 'p',
    OPT_HELP = 'h',
    OPT_JSON = 0x100,
    OPT_DELETE_DATA,
    OPT_FIELDS,
    OPT_NO_MOVE,
};

/* Parse the options every daemon command shares (--help, --json) plus
 * the command's own (extra, at most five).  Returns -1 to go on, or an
 * exit status. */
static int
parse_opts(struct ctl_ctx *ctx, int argc, char **argv, const char *shortopts,
           const struct option *extra, struct cmd_opts *o)
{
    struct option opts[8];
    size_t n = 0;
    int c;

    opts[n++] = (struct option){"help", no_argument, NULL, OPT_HELP};
    opts[n++] = (struct option){"json", no_argument, NULL, OPT_JSON};
    for (; extra && extra->name && n < 7; extra++)
        opts[n++] = *extra;
    opts[n] = (struct option){NULL, 0, NULL, 0};

    optind = 0;
    while ((c = getopt_long(argc, argv, shortopts, opts, NULL)) != -1) {
        switch (c) {
        case OPT_HELP:
            return ctl_cmd_help(ctx);
        case OPT_JSON:
            ctx->json = true;
            break;
        case OPT_DIR:
            o->dir = optarg;
            break;
        case OPT_PAUSED:
            o->paused = true;
            break;
        case OPT_DELETE_DATA:
            o->delete_data = true;
            break;
        case OPT_FIELDS:
            o->fields = optarg;
            break;
        case OPT_NO_MOVE:
            o->no_move = true;
            break;
        default:
            return ctl_option_error(ctx, c, argv);
        }
    }
    return -1;
}

/* Open a connection, make one call, print: result with --json, or via
 * human(result).  Ownership of params is taken. */
static int
call_and_print(struct ctl_ctx *ctx, enum ctl_access access, const char *method,
               struct json_object *params,
               int (*human)(struct ctl_ctx *ctx, struct json_object *result,
                            const char *arg),
               const char *arg)
{
    struct ctl_client client;
    struct json_object *result = NULL;
    int r;

    r = ctl_client_open(&client, ctx, access);
    if (r != CTL_EXIT_OK) {
        json_object_put(params);
        ctl_client_close(&client);
        return r;
    }
    r = ctl_client_call(&client, method, params, &result);
    ctl_client_close(&client);
    if (r != CTL_EXIT_OK)
        return r;
    if (ctx->json)
        r = ctl_json_print(result) < 0 ? CTL_EXIT_FAILURE : CTL_EXIT_OK;
    else
        r = human(ctx, result, arg);
    json_object_put(result);
    return r;
}

static struct json_object *
params_for(const char *torrent)
{
    struct json_object *p = json_object_new_object();

    if (p && torrent && ctl_torrent_ref(p, torrent) < 0) {
        json_object_put(p);
        return NULL;
    }
    if (!p)
        ctl_err("out of memory");
    return p;
}

static int
oom(void)
{
    ctl_err("out of memory");
    return CTL_EXIT_FAILURE;
}

/* The name of a torrent for messages: its name, else its info-hash. */
static void
print_torrent_name(struct json_object *t, const char *fallback)
{
    const char *name = ctl_jstr(t, "name", NULL);

    if (!name || !*name)
        name = ctl_jstr(t, "info_hash", fallback);
    ctl_fputs_safe(name, stdout);
}

/* --- add --- */

static bool
is_magnet(const char *s)
{
    return strncasecmp(s, "magnet:", 7) == 0;
}

/* Read a whole file ("-" is standard input), at most ADD_MAX_FILE. */
static int
read_file(const char *path, struct buf *out)
{
    int fd, r = 0;
    ssize_t k;

    fd = strcmp(path, "-") == 0 ? STDIN_FILENO
                                : open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    for (;;) {
        size_t room = out->cap - out->len;
        char probe;

        if (room > 65536)
            room = 65536;
        if (room == 0) {
            /* Full: only the end of the file may follow. */
            k = read(fd, &probe, 1);
            if (k < 0 && errno == EINTR)
                continue;
            r = k < 0 ? -errno : k > 0 ? -EMSGSIZE : 0;
            break;
        }
        r = buf_reserve(out, room);
        if (r < 0)
            break;
        k = read(fd, out->data + out->len, room);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            r = -errno;
            break;
        }
        if (k == 0)
            break;
        out->len += (size_t)k;
        out->data[out->len] = '\0';
    }
    if (fd != STDIN_FILENO)
        (void)close(fd);
    return r;
}

static struct json_object *
base64_string(const struct buf *b)
{
    struct json_object *s;
    size_t n = 4 * ((b->len + 2) / 3) + 1;
    unsigned char *out = malloc(n);
    int len;

    if (!out)
        return NULL;
    len = EVP_EncodeBlock(out, (const unsigned char *)b->data, (int)b->len);
    s = len < 0 ? NULL : json_object_new_string_len((char *)out, len);
    free(out);
    return s;
}

/* An absolute form of a directory named on the command line: the daemon
 * does not share our working directory. */
static char *
absolute_dir(const char *dir)
{
    char cwd[PATH_MAX];
    char *p;

    if (dir[0] == '/')
        return strdup(dir);
    if (!getcwd(cwd, sizeof(cwd)))
        return NULL;
    if (asprintf(&p, "%s/%s", strcmp(cwd, "/") == 0 ? "" : cwd, dir) < 0)
        return NULL;
    return p;
}

static int
add_human(struct ctl_ctx *ctx, struct json_object *result, const char *arg)
{
    const char *status = ctl_jstr(result, "status", "");
    const char *hash = ctl_jstr(result, "info_hash", "?");
    int64_t id = ctl_jint(result, "id", -1);

    (void)ctx;
    (void)arg;
    ctl_fputs_safe(hash, stdout);
    if (strcmp(status, "exists") == 0)
        printf(" already there");
    else
        printf(" added");
    if (id >= 0)
        printf(" (id %" PRId64 ")", id);
    if (ctl_jstr(result, "name", NULL) && *ctl_jstr(result, "name", "")) {
        printf(": ");
        ctl_fputs_safe(ctl_jstr(result, "name", ""), stdout);
    }
    putchar('\n');
    return CTL_EXIT_OK;
}

int
ctl_cmd_add(struct ctl_ctx *ctx, int argc, char **argv)
{
    static const struct option extra[] = {
        {"dir", required_argument, NULL, OPT_DIR},
        {"paused", no_argument, NULL, OPT_PAUSED},
        {NULL, 0, NULL, 0}};
    struct cmd_opts o = {0};
    struct json_object *params, *v;
    struct buf file;
    const char *what;
    char *dir;
    int r;

    r = parse_opts(ctx, argc, argv, ":hd:p", extra, &o);
    if (r >= 0)
        return r;
    if (optind + 1 != argc)
        return ctl_usage_error(ctx, optind >= argc
                                        ? "add needs a .torrent file or a "
                                          "magnet URI"
                                        : "add takes one torrent at a time");
    what = argv[optind];
    params = json_object_new_object();
    if (!params)
        return oom();

    if (is_magnet(what)) {
        v = json_object_new_string(what);
        if (!v || json_object_object_add(params, "magnet", v) < 0)
            goto nomem;
    } else {
        buf_init(&file, ADD_MAX_FILE);
        r = read_file(what, &file);
        if (r < 0) {
            if (r == -EMSGSIZE)
                ctl_err("'%s' is larger than %u MiB: not a .torrent file", what,
                        ADD_MAX_FILE >> 20);
            else
                ctl_err("cannot read '%s': %s", what, strerror(-r));
            buf_release(&file);
            json_object_put(params);
            return r == -ENOENT || r == -EACCES ? CTL_EXIT_USAGE
                                                : CTL_EXIT_FAILURE;
        }
        if (file.len == 0) {
            ctl_err("'%s' is empty: not a .torrent file", what);
            buf_release(&file);
            json_object_put(params);
            return CTL_EXIT_FAILURE;
        }
        v = base64_string(&file);
        buf_release(&file);
        if (!v || json_object_object_add(params, "metainfo", v) < 0)
            goto nomem;
    }
    if (o.dir) {
        dir = absolute_dir(o.dir);
        if (!dir) {
            ctl_err("cannot make '%s' an absolute path: %s", o.dir,
                    strerror(errno));
            json_object_put(params);
            return CTL_EXIT_FAILURE;
        }
        v = json_object_new_string(dir);
        free(dir);
        if (!v || json_object_object_add(params, "download_dir", v) < 0)
            goto nomem;
    }
    if (o.paused && json_object_object_add(params, "paused",
                                           json_object_new_boolean(1)) < 0)
        goto nomem;
    return call_and_print(ctx, CTL_ACCESS_WRITE, "torrent.add", params,
                          add_human, what);
nomem:
    json_object_put(params);
    return oom();
}

/* --- list --- */

static const char *const list_fields[] = {
    "id",       "info_hash",  "name",          "state",
    "progress", "size_bytes", "download_rate", "upload_rate",
    "ratio",    "eta_s",      "error",         NULL};

static int
list_human(struct ctl_ctx *ctx, struct json_object *result, const char *arg)
{
    static const char *const headers[] = {"ID",   "HASH", "STATE", "DONE",
                                          "SIZE", "DOWN", "UP",    "RATIO",
                                          "ETA",  "NAME"};
    struct json_object *arr = NULL, *t;
    struct ctl_table *tab;
    char id[24], hash[9], pct[CTL_FMT_LEN], size[CTL_SIZE_LEN];
    char down[CTL_FMT_LEN], up[CTL_FMT_LEN], ratio[CTL_FMT_LEN];
    char eta[CTL_FMT_LEN];
    uint64_t total_down = 0, total_up = 0;
    size_t n;
    int r = CTL_EXIT_OK;

    (void)ctx;
    (void)arg;
    if (!json_object_object_get_ex(result, "torrents", &arr) ||
        !json_object_is_type(arr, json_type_array)) {
        ctl_err("torrentd sent a torrent list without \"torrents\"");
        return CTL_EXIT_FAILURE;
    }
    n = json_object_array_length(arr);
    if (n == 0) {
        printf("no torrents\n");
        return CTL_EXIT_OK;
    }
    tab = ctl_table_new(10, headers);
    if (!tab)
        return oom();
    for (size_t col = 0; col < 9; col++)
        if (col != 1 && col != 2)
            ctl_table_align_right(tab, col);
    for (size_t i = 0; i < n; i++) {
        const char *state, *name;
        int64_t rate_down, rate_up;

        t = json_object_array_get_idx(arr, i);
        (void)snprintf(id, sizeof(id), "%" PRId64, ctl_jint(t, "id", -1));
        (void)snprintf(hash, sizeof(hash), "%.8s",
                       ctl_jstr(t, "info_hash", ""));
        state = ctl_jstr(t, "state", "?");
        ctl_fmt_percent(pct, ctl_jdouble(t, "progress", 0));
        if (ctl_jhas(t, "size_bytes"))
            ctl_human_size(size, (uint64_t)ctl_jint(t, "size_bytes", 0));
        else
            (void)snprintf(size, sizeof(size), "-");
        rate_down = ctl_jint(t, "download_rate", 0);
        rate_up = ctl_jint(t, "upload_rate", 0);
        total_down += rate_down > 0 ? (uint64_t)rate_down : 0;
        total_up += rate_up > 0 ? (uint64_t)rate_up : 0;
        ctl_fmt_rate(down, rate_down > 0 ? (uint64_t)rate_down : 0);
        ctl_fmt_rate(up, rate_up > 0 ? (uint64_t)rate_up : 0);
        (void)snprintf(ratio, sizeof(ratio), "%.2f",
                       ctl_jdouble(t, "ratio", 0));
        ctl_fmt_duration(eta, ctl_jint(t, "eta_s", -1));
        name = ctl_jstr(t, "name", NULL);
        if (!name || !*name)
            name = "(no metadata yet)";
        {
            const char *cells[] = {id,   hash, state, pct, size,
                                   down, up,   ratio, eta, name};
            if (ctl_table_add(tab, cells) < 0) {
                r = oom();
                goto out;
            }
        }
    }
    ctl_table_print(tab, stdout, 0);
    ctl_fmt_rate(down, total_down);
    ctl_fmt_rate(up, total_up);
    printf("%zu torrent%s, down %s, up %s\n", n, n == 1 ? "" : "s", down, up);
out:
    ctl_table_free(tab);
    return r;
}

/* Split "a,b,c" into a JSON array of strings. */
static struct json_object *
fields_array(const char *list)
{
    struct json_object *arr = json_object_new_array(), *s;
    const char *p = list, *comma;

    while (arr && *p) {
        comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        if (n > 0) {
            s = json_object_new_string_len(p, (int)n);
            if (!s || json_object_array_add(arr, s) < 0) {
                json_object_put(s);
                json_object_put(arr);
                return NULL;
            }
        }
        p += n + (comma ? 1 : 0);
    }
    return arr;
}

int
ctl_cmd_list(struct ctl_ctx *ctx, int argc, char **argv)
{
    static const struct option extra[] = {
        {"fields", required_argument, NULL, OPT_FIELDS}, {NULL, 0, NULL, 0}};
    struct cmd_opts o = {0};
    struct json_object *params, *fields = NULL;
    int r;

    r = parse_opts(ctx, argc, argv, ":h", extra, &o);
    if (r >= 0)
        return r;
    if (optind != argc)
        return ctl_usage_error(ctx, "list takes no arguments");
    if (o.fields && !ctx->json)
        return ctl_usage_error(ctx, "--fields goes with --json");
    params = json_object_new_object();
    if (!params)
        return oom();
    if (o.fields) {
        fields = fields_array(o.fields);
    } else if (!ctx->json) {
        fields = json_object_new_array();
        for (size_t i = 0; fields && list_fields[i]; i++)
            if (json_object_array_add(
                    fields, json_object_new_string(list_fields[i])) < 0)
                break;
    }
    if ((o.fields || !ctx->json) &&
        (!fields || json_object_object_add(params, "fields", fields) < 0)) {
        json_object_put(fields);
        json_object_put(params);
        return oom();
    }
    return call_and_print(ctx, CTL_ACCESS_READ, "torrent.list", params,
                          list_human, NULL);
}

/* --- info --- */

static void
kv(const char *key, const char *value)
{
    printf("%-12s ", key);
    ctl_fputs_safe(value, stdout);
    putchar('\n');
}

static int
info_human(struct ctl_ctx *ctx, struct json_object *result, const char *arg)
{
    struct json_object *t = result;
    char a[CTL_FMT_LEN], b[CTL_FMT_LEN], c[CTL_FMT_LEN];
    char line[4 * CTL_FMT_LEN];
    const char *state = ctl_jstr(t, "state", "?");
    const char *err = ctl_jstr(t, "error", NULL);
    FILE *o = stdout;

    (void)ctx;
    (void)arg;
    kv("name:", ctl_jstr(t, "name", "(no metadata yet)"));
    kv("info-hash:", ctl_jstr(t, "info_hash", "?"));
    (void)snprintf(a, sizeof(a), "%" PRId64, ctl_jint(t, "id", -1));
    kv("id:", a);
    printf("%-12s %s", "state:",
           ctl_style(o, strcmp(state, "error") == 0     ? CTL_STYLE_RED
                        : strcmp(state, "seeding") == 0 ? CTL_STYLE_GREEN
                        : strcmp(state, "paused") == 0  ? CTL_STYLE_DIM
                                                        : CTL_STYLE_BOLD));
    ctl_fputs_safe(state, o);
    printf("%s\n", ctl_style(o, CTL_STYLE_RESET));
    if (err && *err)
        kv("error:", err);
    if (ctl_jhas(t, "stop_reason")) {
        const char *why = ctl_jstr(t, "stop_reason", "?");
        (void)snprintf(line, sizeof(line), "its seed %s limit",
                       strcmp(why, "ratio") == 0  ? "ratio"
                       : strcmp(why, "idle") == 0 ? "idle"
                                                  : "?");
        kv("stopped by:", line);
    }
    ctl_fmt_percent(a, ctl_jdouble(t, "progress", 0));
    ctl_human_size(b, (uint64_t)ctl_jint(t, "have_bytes", 0));
    ctl_human_size(c, (uint64_t)ctl_jint(t, "size_bytes", 0));
    (void)snprintf(line, sizeof(line), "%s (%s of %s)", a, b, c);
    kv("progress:", line);
    ctl_human_size(a, (uint64_t)ctl_jint(t, "downloaded_bytes", 0));
    kv("downloaded:", a);
    ctl_human_size(a, (uint64_t)ctl_jint(t, "uploaded_bytes", 0));
    (void)snprintf(line, sizeof(line), "%s (ratio %.2f)", a,
                   ctl_jdouble(t, "ratio", 0));
    kv("uploaded:", line);
    ctl_fmt_rate(a, (uint64_t)ctl_jint(t, "download_rate", 0));
    ctl_fmt_rate(b, (uint64_t)ctl_jint(t, "upload_rate", 0));
    (void)snprintf(line, sizeof(line), "down %s, up %s", a, b);
    kv("rates:", line);
    (void)snprintf(a, sizeof(a), "%" PRId64, ctl_jint(t, "peers_connected", 0));
    kv("peers:", a);
    ctl_fmt_duration(a, ctl_jint(t, "eta_s", -1));
    kv("eta:", a);
    kv("directory:", ctl_jstr(t, "download_dir", "-"));
    if (ctl_jhas(t, "piece_count")) {
        ctl_human_size(b, (uint64_t)ctl_jint(t, "piece_length", 0));
        (void)snprintf(
            line, sizeof(line), "%" PRId64 " of %s, %" PRId64 " file%s%s",
            ctl_jint(t, "piece_count", 0), b, ctl_jint(t, "file_count", 0),
            ctl_jint(t, "file_count", 0) == 1 ? "" : "s",
            json_object_get_boolean(jget(t, "private")) ? ", private" : "");
        kv("pieces:", line);
    }
    if (ctl_jhas(t, "download_limit") || ctl_jhas(t, "upload_limit") ||
        ctl_jhas(t, "ratio_limit")) {
        int64_t dl = ctl_jint(t, "download_limit", 0);
        int64_t ul = ctl_jint(t, "upload_limit", 0);

        if (dl > 0)
            ctl_fmt_rate(a, (uint64_t)dl);
        else
            (void)snprintf(a, sizeof(a), "none");
        if (ul > 0)
            ctl_fmt_rate(b, (uint64_t)ul);
        else
            (void)snprintf(b, sizeof(b), "none");
        /* Seed limits: 0 is none for this torrent, null the daemon's. */
        if (!ctl_jhas(t, "ratio_limit"))
            (void)snprintf(c, sizeof(c), "the daemon's");
        else if (ctl_jdouble(t, "ratio_limit", 0) > 0)
            (void)snprintf(c, sizeof(c), "%.2f",
                           ctl_jdouble(t, "ratio_limit", 0));
        else
            (void)snprintf(c, sizeof(c), "none");
        (void)snprintf(line, sizeof(line), "down %s, up %s, ratio %s", a, b, c);
        if (!ctl_jhas(t, "idle_limit"))
            (void)snprintf(c, sizeof(c), "the daemon's");
        else if (ctl_jdouble(t, "idle_limit", 0) > 0)
            (void)snprintf(c, sizeof(c), "%g min",
                           ctl_jdouble(t, "idle_limit", 0));
        else
            (void)snprintf(c, sizeof(c), "none");
        (void)snprintf(line + strlen(line), sizeof(line) - strlen(line),
                       ", idle %s%s", c,
                       json_object_get_boolean(jget(t, "seed_limit_override"))
                           ? " (seed limits off: started by hand)"
                           : "");
        kv("limits:", line);
    }
    ctl_fmt_time(a, ctl_jint(t, "added_at", 0));
    kv("added:", a);
    ctl_fmt_time(a, ctl_jint(t, "completed_at", 0));
    kv("completed:", a);
    return CTL_EXIT_OK;
}

/* A command of the form "NAME ID" with no options of its own. */
static int
one_torrent(struct ctl_ctx *ctx, int argc, char **argv, enum ctl_access access,
            const char *method,
            int (*human)(struct ctl_ctx *, struct json_object *, const char *))
{
    struct cmd_opts o = {0};
    struct json_object *params;
    int r;

    r = parse_opts(ctx, argc, argv, ":h", NULL, &o);
    if (r >= 0)
        return r;
    if (optind + 1 != argc)
        return ctl_usage_error(ctx, optind >= argc ? "name a torrent (its "
                                                     "id or info-hash)"
                                                   : "too many arguments");
    params = params_for(argv[optind]);
    if (!params)
        return CTL_EXIT_FAILURE;
    return call_and_print(ctx, access, method, params, human, argv[optind]);
}

int
ctl_cmd_info(struct ctl_ctx *ctx, int argc, char **argv)
{
    return one_torrent(ctx, argc, argv, CTL_ACCESS_READ, "torrent.get",
                       info_human);
}

/* --- start, stop, remove, verify --- */

static int
done_human(const char *verb, struct json_object *result, const char *arg)
{
    struct json_object *t = result; /* a torrent object, or {"changed"} */

    if (strcmp(arg, "all") == 0) {
        printf("%s all torrents", verb);
        if (ctl_jhas(result, "changed"))
            printf(" (%" PRId64 " changed)", ctl_jint(result, "changed", 0));
        putchar('\n');
        return CTL_EXIT_OK;
    }
    printf("%s ", verb);
    if (t && json_object_is_type(t, json_type_object) &&
        (ctl_jhas(t, "name") || ctl_jhas(t, "info_hash")))
        print_torrent_name(t, arg);
    else
        ctl_fputs_safe(arg, stdout);
    putchar('\n');
    return CTL_EXIT_OK;
}

static int
started_human(struct ctl_ctx *ctx, struct json_object *r, const char *arg)
{
    (void)ctx;
    return done_human("started", r, arg);
}

static int
stopped_human(struct ctl_ctx *ctx, struct json_object *r, const char *arg)
{
    (void)ctx;
    return done_human("stopped", r, arg);
}

static int
removed_human(struct ctl_ctx *ctx, struct json_object *r, const char *arg)
{
    (void)ctx;
    return done_human("removed", r, arg);
}

static int
verify_human(struct ctl_ctx *ctx, struct json_object *r, const char *arg)
{
    (void)ctx;
    return done_human("verifying", r, arg);
}

static int
start_stop(struct ctl_ctx *ctx, int argc, char **argv, const char *method,
           int (*human)(struct ctl_ctx *, struct json_object *, const char *))
{
    struct cmd_opts o = {0};
    struct json_object *params;
    int r;

    r = parse_opts(ctx, argc, argv, ":h", NULL, &o);
    if (r >= 0)
        return r;
    if (optind + 1 != argc)
        return ctl_usage_error(ctx, optind >= argc ? "name a torrent, or 'all'"
                                                   : "too many arguments");
    if (strcmp(argv[optind], "all") == 0) {
        params = json_object_new_object();
        if (!params || json_object_object_add(params, "all",
                                              json_object_new_boolean(1)) < 0) {
            json_object_put(params);
            return oom();
        }
    } else {
        params = params_for(argv[optind]);
        if (!params)
            return CTL_EXIT_FAILURE;
    }
    return call_and_print(ctx, CTL_ACCESS_WRITE, method, params, human,
                          argv[optind]);
}

int
ctl_cmd_start(struct ctl_ctx *ctx, int argc, char **argv)
{
    return start_stop(ctx, argc, argv, "torrent.start", started_human);
}

int
ctl_cmd_stop(struct ctl_ctx *ctx, int argc, char **argv)
{
    return start_stop(ctx, argc, argv, "torrent.stop", stopped_human);
}

int
ctl_cmd_remove(struct ctl_ctx *ctx, int argc, char **argv)
{
    static const struct option extra[] = {
        {"delete-data", no_argument, NULL, OPT_DELETE_DATA},
        {NULL, 0, NULL, 0}};
    struct cmd_opts o = {0};
    struct json_object *params;
    int r;

    r = parse_opts(ctx, argc, argv, ":h", extra, &o);
    if (r >= 0)
        return r;
    if (optind + 1 != argc)
        return ctl_usage_error(ctx, optind >= argc ? "name a torrent (its "
                                                     "id or info-hash)"
                                                   : "too many arguments");
    params = params_for(argv[optind]);
    if (!params)
        return CTL_EXIT_FAILURE;
    if (o.delete_data &&
        json_object_object_add(params, "delete_data",
                               json_object_new_boolean(1)) < 0) {
        json_object_put(params);
        return oom();
    }
    return call_and_print(ctx, CTL_ACCESS_WRITE, "torrent.remove", params,
                          removed_human, argv[optind]);
}

int
ctl_cmd_verify(struct ctl_ctx *ctx, int argc, char **argv)
{
    return one_torrent(ctx, argc, argv, CTL_ACCESS_WRITE, "torrent.verify",
                       verify_human);
}

/* --- move --- */

static int
moved_human(struct ctl_ctx *ctx, struct json_object *r, const char *arg)
{
    (void)ctx;
    printf("moved ");
    if (r && json_object_is_type(r, json_type_object) &&
        (ctl_jhas(r, "name") || ctl_jhas(r, "info_hash")))
        print_torrent_name(r, arg);
    else
        ctl_fputs_safe(arg, stdout);
    printf(" to ");
    ctl_fputs_safe(ctl_jstr(r, "download_dir", "?"), stdout);
    putchar('\n');
    return CTL_EXIT_OK;
}

static int
relocated_human(struct ctl_ctx *ctx, struct json_object *r, const char *arg)
{
    (void)ctx;
    printf("looking for ");
    if (r && json_object_is_type(r, json_type_object) &&
        (ctl_jhas(r, "name") || ctl_jhas(r, "info_hash")))
        print_torrent_name(r, arg);
    else
        ctl_fputs_safe(arg, stdout);
    printf(" in ");
    ctl_fputs_safe(ctl_jstr(r, "download_dir", "?"), stdout);
    putchar('\n');
    return CTL_EXIT_OK;
}

/* torrentctl move ID DIR [--no-move]: torrent.move; the answer comes once
 * the files are there (a long copy: see TORRENTCTL_TIMEOUT). */
int
ctl_cmd_move(struct ctl_ctx *ctx, int argc, char **argv)
{
    static const struct option extra[] = {
        {"no-move", no_argument, NULL, OPT_NO_MOVE}, {NULL, 0, NULL, 0}};
    struct cmd_opts o = {0};
    struct json_object *params, *v;
    char *dir;
    int r;

    r = parse_opts(ctx, argc, argv, ":h", extra, &o);
    if (r >= 0)
        return r;
    if (optind + 2 != argc)
        return ctl_usage_error(ctx, optind + 2 > argc
                                        ? "name a torrent and a directory"
                                        : "too many arguments");
    dir = absolute_dir(argv[optind + 1]);
    if (!dir) {
        ctl_err("cannot make '%s' an absolute path: %s", argv[optind + 1],
                strerror(errno));
        return CTL_EXIT_FAILURE;
    }
    params = params_for(argv[optind]);
    if (!params) {
        free(dir);
        return CTL_EXIT_FAILURE;
    }
    v = json_object_new_string(dir);
    free(dir);
    if (!v || json_object_object_add(params, "download_dir", v) < 0) {
        json_object_put(v);
        json_object_put(params);
        return oom();
    }
    if (json_object_object_add(params, "move",
                               json_object_new_boolean(!o.no_move)) < 0) {
        json_object_put(params);
        return oom();
    }
    return call_and_print(ctx, CTL_ACCESS_WRITE, "torrent.move", params,
                          o.no_move ? relocated_human : moved_human,
                          argv[optind]);
}

/* --- files, peers, trackers: tables of objects --- */

enum col_kind {
    COL_STR,
    COL_INT,
    COL_SIZE,
    COL_RATE,
    COL_PERCENT,
    COL_BOOL,
    COL_DURATION,
    COL_TIME,
};

struct col {
    const char *header;
    const char *keys[3]; /* the first one present is shown */
    enum col_kind kind;
};

static void
cell_text(char *out, size_t n, struct json_object *row, const struct col *c)
{
    struct json_object *v = NULL;
    char tmp[CTL_FMT_LEN];

    for (size_t k = 0; k < 3 && c->keys[k] && !v; k++)
        v = jget(row, c->keys[k]);
    if (!v) {
        (void)snprintf(out, n, "-");
        return;
    }
    switch (c->kind) {
    case COL_STR:
        (void)snprintf(out, n, "%s", json_object_get_string(v));
        return;
    case COL_INT:
        (void)snprintf(out, n, "%" PRId64, json_object_get_int64(v));
        return;
    case COL_SIZE:
        ctl_human_size(tmp, (uint64_t)json_object_get_int64(v));
        break;
    case COL_RATE:
        ctl_fmt_rate(tmp, (uint64_t)json_object_get_int64(v));
        break;
    case COL_PERCENT:
        ctl_fmt_percent(tmp, json_object_get_double(v));
        break;
    case COL_BOOL:
        (void)snprintf(tmp, sizeof(tmp), "%s",
                       json_object_get_boolean(v) ? "yes" : "no");
        break;
    case COL_DURATION:
        ctl_fmt_duration(tmp, json_object_get_int64(v));
        break;
    case COL_TIME:
        ctl_fmt_time(tmp, json_object_get_int64(v));
        break;
    }
    (void)snprintf(out, n, "%s", tmp);
}

/* Print result[list_key] (or result itself when it is an array) as a
 * table of ncols columns. */
static int
print_rows(struct json_object *result, const char *list_key,
           const struct col *cols, size_t ncols, const char *none)
{
    struct json_object *arr = result;
    struct ctl_table *tab;
    const char *headers[8];
    char cells_buf[8][PATH_MAX];
    const char *cells[8];
    size_t n;
    int r = CTL_EXIT_OK;

    if (ncols > 8)
        return CTL_EXIT_FAILURE; /* a bug: more columns than room */

    if (!json_object_is_type(arr, json_type_array))
        arr = jget(result, list_key);
    if (!arr || !json_object_is_type(arr, json_type_array)) {
        ctl_err("torrentd sent no \"%s\" list", list_key);
        return CTL_EXIT_FAILURE;
    }
    n = json_object_array_length(arr);
    if (n == 0) {
        printf("%s\n", none);
        return CTL_EXIT_OK;
    }
    for (size_t c = 0; c < ncols; c++)
        headers[c] = cols[c].header;
    tab = ctl_table_new(ncols, headers);
    if (!tab)
        return oom();
    for (size_t c = 0; c < ncols; c++)
        if (cols[c].kind != COL_STR && cols[c].kind != COL_BOOL &&
            cols[c].kind != COL_TIME)
            ctl_table_align_right(tab, c);
    for (size_t i = 0; i < n; i++) {
        struct json_object *row = json_object_array_get_idx(arr, i);
        for (size_t c = 0; c < ncols; c++) {
            cell_text(cells_buf[c], sizeof(cells_buf[c]), row, &cols[c]);
            cells[c] = cells_buf[c];
        }
        if (ctl_table_add(tab, cells) < 0) {
            r = oom();
            goto out;
        }
    }
    ctl_table_print(tab, stdout, 0);
out:
    ctl_table_free(tab);
    return r;
}

static int
files_human(struct ctl_ctx *ctx, struct json_object *result, const char *arg)
{
    static const struct col cols[] = {
        {"#", {"index", NULL, NULL}, COL_INT},
        {"DONE", {"progress", NULL, NULL}, COL_PERCENT},
        {"SIZE", {"size_bytes", "length", NULL}, COL_SIZE},
        {"HAVE", {"have_bytes", NULL, NULL}, COL_SIZE},
        {"WANTED", {"wanted", NULL, NULL}, COL_BOOL},
        {"PRIORITY", {"priority", NULL, NULL}, COL_STR},
        {"PATH", {"path", "name", NULL}, COL_STR},
    };

    (void)ctx;
    (void)arg;
    return print_rows(result, "files", cols, sizeof(cols) / sizeof(cols[0]),
                      "no files (no metadata yet)");
}

static int
peers_human(struct ctl_ctx *ctx, struct json_object *result, const char *arg)
{
    static const struct col cols[] = {
        {"ADDRESS", {"address", "ip", NULL}, COL_STR},
        {"CLIENT", {"client", NULL, NULL}, COL_STR},
        {"DONE", {"progress", NULL, NULL}, COL_PERCENT},
        {"DOWN", {"download_rate", NULL, NULL}, COL_RATE},
        {"UP", {"upload_rate", NULL, NULL}, COL_RATE},
        {"FLAGS", {"flags", NULL, NULL}, COL_STR},
        {"ENC", {"encryption", NULL, NULL}, COL_STR},
    };

    (void)ctx;
    (void)arg;
    return print_rows(result, "peers", cols, sizeof(cols) / sizeof(cols[0]),
                      "no peers connected");
}

static int
trackers_human(struct ctl_ctx *ctx, struct json_object *result, const char *arg)
{
    static const struct col cols[] = {
        {"TIER", {"tier", NULL, NULL}, COL_INT},
        {"URL", {"url", NULL, NULL}, COL_STR},
        {"STATUS", {"status", "state", NULL}, COL_STR},
        {"SEEDS", {"seeders", "complete", NULL}, COL_INT},
        {"PEERS", {"leechers", "incomplete", NULL}, COL_INT},
        {"LAST ANNOUNCE", {"last_announce", NULL, NULL}, COL_TIME},
        {"MESSAGE", {"error", "message", NULL}, COL_STR},
    };

    (void)ctx;
    (void)arg;
    return print_rows(result, "trackers", cols, sizeof(cols) / sizeof(cols[0]),
                      "no trackers");
}

int
ctl_cmd_files(struct ctl_ctx *ctx, int argc, char **argv)
{
    return one_torrent(ctx, argc, argv, CTL_ACCESS_READ, "torrent.files",
                       files_human);
}

int
ctl_cmd_peers(struct ctl_ctx *ctx, int argc, char **argv)
{
    return one_torrent(ctx, argc, argv, CTL_ACCESS_READ, "torrent.peers",
                       peers_human);
}

int
ctl_cmd_trackers(struct ctl_ctx *ctx, int argc, char **argv)
{
    return one_torrent(ctx, argc, argv, CTL_ACCESS_READ, "torrent.trackers",
                       trackers_human);
}

/* --- set --- */

static int
set_human(struct ctl_ctx *ctx, struct json_object *r, const char *arg)
{
    (void)ctx;
    return done_human("changed", r, arg);
}

int
ctl_cmd_set(struct ctl_ctx *ctx, int argc, char **argv)
{
    struct cmd_opts o = {0};
    struct json_object *params;
    const char *dir;
    char *abs;
    int r;

    r = parse_opts(ctx, argc, argv, ":h", NULL, &o);
    if (r >= 0)
        return r;
    if (argc - optind < 2)
        return ctl_usage_error(ctx, "name a torrent and at least one "
                                    "KEY=VALUE");
    params = params_for(argv[optind]);
    if (!params)
        return CTL_EXIT_FAILURE;
    r = ctl_add_settings(ctx, params, argc - optind - 1, argv + optind + 1);
    if (r != CTL_EXIT_OK) {
        json_object_put(params);
        return r;
    }
    /* The daemon does not share our working directory. */
    dir = ctl_jstr(params, "download_dir", NULL);
    if (dir && dir[0] != '/') {
        abs = absolute_dir(dir);
        if (!abs || json_object_object_add(params, "download_dir",
                                           json_object_new_string(abs)) < 0) {
            free(abs);
            json_object_put(params);
            return oom();
        }
        free(abs);
    }
    return call_and_print(ctx, CTL_ACCESS_WRITE, "torrent.set", params,
                          set_human, argv[optind]);
}
