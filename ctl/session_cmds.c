/* session_cmds — the torrentctl commands about the daemon as a whole:
 * stats, config get|set, shutdown.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "ctl/client.h"
#include "ctl/ctl.h"
#include "ctl/output.h"

/* How long shutdown --wait waits for the daemon to close the connection. */
#define SHUTDOWN_WAIT_MS 60000

/* --help, --json, and --wait for shutdown.  Returns -1 to go on, or an
 * exit status. */
static int
parse_simple(struct ctl_ctx *ctx, int argc, char **argv, bool *wait)
{
    static const struct option opts[] = {{"help", no_argument, NULL, 'h'},
                                         {"json", no_argument, NULL, 'J'},
                                         {"wait", no_argument, NULL, 'w'},
                                         {NULL, 0, NULL, 0}};
    int c;

    optind = 0;
    while ((c = getopt_long(argc, argv, wait ? ":hw" : ":h", opts, NULL)) !=
           -1) {
        switch (c) {
        case 'h':
            return ctl_cmd_help(ctx);
        case 'J':
            ctx->json = true;
            break;
        case 'w':
            if (wait) {
                *wait = true;
                break;
            }
            /* fall through */
        default:
            return ctl_option_error(ctx, c, argv);
        }
    }
    return -1;
}

static int
call(struct ctl_ctx *ctx, enum ctl_access access, const char *method,
     struct json_object *params, struct json_object **ret_result)
{
    struct ctl_client client;
    int r;

    r = ctl_client_open(&client, ctx, access);
    if (r == CTL_EXIT_OK)
        r = ctl_client_call(&client, method, params, ret_result);
    else
        json_object_put(params);
    ctl_client_close(&client);
    return r;
}

/* A value for people: sizes, rates and durations by the key's suffix. */
static void
print_value(const char *key, struct json_object *v)
{
    char tmp[CTL_FMT_LEN];
    size_t n = strlen(key);
    bool is_num = json_object_is_type(v, json_type_int);

#define ENDS(s)                                                                \
    (n >= sizeof(s) - 1 && strcmp(key + n - (sizeof(s) - 1), s) == 0)
    if (!v) {
        printf("-");
    } else if (is_num && ENDS("_bytes")) {
        ctl_human_size(tmp, (uint64_t)json_object_get_int64(v));
        printf("%s", tmp);
    } else if (is_num && (ENDS("_rate") || ENDS("_rate_limit")) &&
               json_object_get_int64(v) >= 0) {
        if (ENDS("_limit") && json_object_get_int64(v) == 0) {
            printf("none");
        } else {
            ctl_fmt_rate(tmp, (uint64_t)json_object_get_int64(v));
            printf("%s", tmp);
        }
    } else if (is_num && ENDS("_at")) {
        ctl_fmt_time(tmp, json_object_get_int64(v));
        printf("%s", tmp);
    } else if (is_num && (ENDS("_s") || ENDS("uptime"))) {
        ctl_fmt_duration(tmp, json_object_get_int64(v));
        printf("%s", tmp);
    } else if (json_object_is_type(v, json_type_string)) {
        ctl_fputs_safe(json_object_get_string(v), stdout);
    } else {
        printf("%s",
               json_object_to_json_string_ext(
                   v, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    }
#undef ENDS
}

/* Print an object as "key: value" lines, nested objects as "a.b". */
static void
print_object(struct json_object *obj, const char *prefix, int width)
{
    char key[256];

    json_object_object_foreach(obj, k, v)
    {
        (void)snprintf(key, sizeof(key), "%s%s%s", prefix, *prefix ? "." : "",
                       k);
        if (v && json_object_is_type(v, json_type_object)) {
            print_object(v, key, width);
            continue;
        }
        printf("%-*s ", width, key);
        print_value(k, v);
        putchar('\n');
    }
}

/* --- stats --- */

int
ctl_cmd_stats(struct ctl_ctx *ctx, int argc, char **argv)
{
    struct json_object *result = NULL;
    int r;

    r = parse_simple(ctx, argc, argv, NULL);
    if (r >= 0)
        return r;
    if (optind != argc)
        return ctl_usage_error(ctx, "stats takes no arguments");
    r = call(ctx, CTL_ACCESS_READ, "session.stats", NULL, &result);
    if (r != CTL_EXIT_OK)
        return r;
    if (ctx->json)
        r = ctl_json_print(result) < 0 ? CTL_EXIT_FAILURE : CTL_EXIT_OK;
    else if (json_object_is_type(result, json_type_object))
        print_object(result, "", 24);
    json_object_put(result);
    return r;
}

/* --- config --- */

/* The value of KEY=VALUE for the daemon: true, false and null as JSON,
 * numbers as JSON numbers, a byte count with a suffix ("1M", "512KiB") as
 * a number of bytes, anything else ("on", a path) as text, which the
 * daemon parses as the configuration file would. */
static struct json_object *
setting_value(const char *text)
{
    char *end;
    long long n;
    double d;
    uint64_t bytes;

    if (strcmp(text, "true") == 0)
        return json_object_new_boolean(1);
    if (strcmp(text, "false") == 0)
        return json_object_new_boolean(0);
    if (strcmp(text, "null") == 0)
        return NULL;
    if (*text >= '0' && *text <= '9') {
        errno = 0;
        n = strtoll(text, &end, 10);
        if (errno == 0 && *end == '\0')
            return json_object_new_int64(n);
        errno = 0;
        d = strtod(text, &end);
        if (errno == 0 && *end == '\0')
            return json_object_new_double(d);
        if (ctl_parse_size(text, &bytes) == 0 && bytes <= INT64_MAX)
            return json_object_new_int64((int64_t)bytes);
    }
    return json_object_new_string(text);
}

int
ctl_add_settings(struct ctl_ctx *ctx, struct json_object *obj, int n,
                 char **args)
{
    struct json_object *v;
    const char *eq;
    char *key;

    for (int i = 0; i < n; i++) {
        eq = strchr(args[i], '=');
        if (!eq || eq == args[i])
            return ctl_usage_error(ctx, "'%s' is not KEY=VALUE", args[i]);
        key = strndup(args[i], (size_t)(eq - args[i]));
        v = key ? setting_value(eq + 1) : NULL;
        if (!key || (!v && strcmp(eq + 1, "null") != 0) ||
            json_object_object_add(obj, key, v) < 0) {
            json_object_put(v);
            free(key);
            ctl_err("out of memory");
            return CTL_EXIT_FAILURE;
        }
        free(key);
    }
    return CTL_EXIT_OK;
}

/* The effective settings in a session.get result: its "config" member
 * (the file, --set and run-time layers applied). */
static struct json_object *
settings_of(struct json_object *result)
{
    struct json_object *s;

    if (json_object_object_get_ex(result, "config", &s) &&
        json_object_is_type(s, json_type_object))
        return s;
    return result;
}

/* "applied: a, b" for a non-empty array member of obj. */
static void
print_list(struct json_object *obj, const char *key, const char *label)
{
    struct json_object *arr;
    size_t n;

    if (!json_object_object_get_ex(obj, key, &arr) ||
        !json_object_is_type(arr, json_type_array))
        return;
    n = json_object_array_length(arr);
    if (n == 0)
        return;
    printf("%s: ", label);
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            printf(", ");
        ctl_fputs_safe(
            json_object_get_string(json_object_array_get_idx(arr, i)), stdout);
    }
    putchar('\n');
}

/* A setting's value in the configuration file's syntax. */
static void
print_setting(struct json_object *val)
{
    if (!val)
        ;
    else if (json_object_is_type(val, json_type_string))
        ctl_fputs_safe(json_object_get_string(val), stdout);
    else if (json_object_is_type(val, json_type_boolean))
        printf("%s", json_object_get_boolean(val) ? "on" : "off");
    else
        printf("%s", json_object_to_json_string_ext(
                         val, JSON_C_TO_STRING_PLAIN |
                                  JSON_C_TO_STRING_NOSLASHESCAPE));
}

static int
config_get(struct ctl_ctx *ctx, int argc, char **argv)
{
    struct json_object *result = NULL, *settings, *v;
    int r;

    /* argv[0] is "get". */
    if (argc > 2)
        return ctl_usage_error(ctx, "config get takes at most one KEY");
    r = call(ctx, CTL_ACCESS_READ, "session.get", NULL, &result);
    if (r != CTL_EXIT_OK)
        return r;
    settings = settings_of(result);
    if (!json_object_is_type(settings, json_type_object)) {
        json_object_put(result);
        ctl_err("torrentd sent settings that are not an object");
        return CTL_EXIT_FAILURE;
    }
    if (argc == 2) {
        if (!json_object_object_get_ex(settings, argv[1], &v)) {
            json_object_put(result);
            ctl_err("no setting '%s'; 'torrentctl config get' lists them",
                    argv[1]);
            return CTL_EXIT_NOT_FOUND;
        }
        if (ctx->json) {
            r = ctl_json_print(v) < 0 ? CTL_EXIT_FAILURE : CTL_EXIT_OK;
        } else {
            print_setting(v);
            putchar('\n');
        }
        json_object_put(result);
        return r;
    }
    if (ctx->json) {
        r = ctl_json_print(result) < 0 ? CTL_EXIT_FAILURE : CTL_EXIT_OK;
    } else {
        /* The configuration file's syntax, so it can be pasted there. */
        json_object_object_foreach(settings, k, val)
        {
            printf("%s = ", k);
            print_setting(val);
            putchar('\n');
        }
    }
    json_object_put(result);
    return r;
}

/* config set KEY=VALUE..., or config reset KEY... (null: back to the
 * configuration file's value). */
static int
config_set(struct ctl_ctx *ctx, int argc, char **argv, bool reset)
{
    struct json_object *params, *result = NULL;
    int r = CTL_EXIT_OK;

    /* argv[0] is "set" or "reset". */
    if (argc < 2)
        return ctl_usage_error(ctx, reset ? "config reset needs a KEY"
                                          : "config set needs KEY=VALUE");
    params = json_object_new_object();
    if (!params) {
        ctl_err("out of memory");
        return CTL_EXIT_FAILURE;
    }
    if (reset) {
        for (int i = 1; i < argc && r == CTL_EXIT_OK; i++) {
            if (strchr(argv[i], '='))
                r = ctl_usage_error(ctx, "config reset takes KEY, not "
                                         "KEY=VALUE");
            else if (json_object_object_add(params, argv[i], NULL) < 0)
                r = CTL_EXIT_FAILURE;
        }
    } else {
        r = ctl_add_settings(ctx, params, argc - 1, argv + 1);
    }
    if (r != CTL_EXIT_OK) {
        json_object_put(params);
        return r;
    }
    r = call(ctx, CTL_ACCESS_WRITE, "session.set", params, &result);
    if (r != CTL_EXIT_OK)
        return r;
    if (ctx->json) {
        r = ctl_json_print(result) < 0 ? CTL_EXIT_FAILURE : CTL_EXIT_OK;
    } else {
        print_list(result, "applied", "applied");
        print_list(result, "needs_restart", "needs a restart");
        print_list(result, "reverted", "reverted to the configuration file");
    }
    json_object_put(result);
    return r;
}

int
ctl_cmd_config(struct ctl_ctx *ctx, int argc, char **argv)
{
    int r;

    r = parse_simple(ctx, argc, argv, NULL);
    if (r >= 0)
        return r;
    if (optind >= argc)
        return ctl_usage_error(ctx, "config needs 'get' or 'set'");
    if (strcmp(argv[optind], "get") == 0)
        return config_get(ctx, argc - optind, argv + optind);
    if (strcmp(argv[optind], "set") == 0)
        return config_set(ctx, argc - optind, argv + optind, false);
    if (strcmp(argv[optind], "reset") == 0)
        return config_set(ctx, argc - optind, argv + optind, true);
    return ctl_usage_error(ctx, "unknown config action '%s'", argv[optind]);
}

/* --- shutdown --- */

int
ctl_cmd_shutdown(struct ctl_ctx *ctx, int argc, char **argv)
{
    struct ctl_client client;
    struct json_object *result = NULL, *ev = NULL;
    bool wait = false;
    int64_t deadline;
    int r;

    r = parse_simple(ctx, argc, argv, &wait);
    if (r >= 0)
        return r;
    if (optind != argc)
        return ctl_usage_error(ctx, "shutdown takes no arguments");
    r = ctl_client_open(&client, ctx, CTL_ACCESS_WRITE);
    if (r == CTL_EXIT_OK)
        r = ctl_client_call(&client, "daemon.shutdown", NULL, &result);
    if (r != CTL_EXIT_OK) {
        ctl_client_close(&client);
        return r;
    }
    if (wait) {
        /* The daemon closes every connection as it exits. */
        deadline = ctl_now_ms() + SHUTDOWN_WAIT_MS;
        while ((r = ctl_client_next_event(&client, deadline, &ev)) > 0)
            json_object_put(ev);
        if (r == -CTL_EXIT_TIMEOUT)
            ctl_err("torrentd did not stop within %d s",
                    SHUTDOWN_WAIT_MS / 1000);
        r = r < 0 ? -r : CTL_EXIT_OK;
    }
    ctl_client_close(&client);
    if (ctx->json)
        r = ctl_json_print(result) < 0 ? CTL_EXIT_FAILURE : r;
    else if (r == CTL_EXIT_OK)
        printf(wait ? "torrentd stopped\n" : "torrentd is shutting down\n");
    json_object_put(result);
    return r;
}
