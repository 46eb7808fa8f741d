/* dht — torrentctl dht: the daemon's DHT node (dht.status), and
 * `dht get-peers HASH` (dht.get_peers) for scripts and checks.
 */
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

static int
dht_call(struct ctl_ctx *ctx, enum ctl_access access, const char *method,
         struct json_object *params, struct json_object **ret_result)
{
    struct ctl_client client;
    int r = ctl_client_open(&client, ctx, access);
    if (r == CTL_EXIT_OK)
        r = ctl_client_call(&client, method, params, ret_result);
    else
        json_object_put(params);
    ctl_client_close(&client);
    return r;
}

static struct json_object *
member(struct json_object *o, const char *key)
{
    struct json_object *v = NULL;
    if (o && json_object_is_type(o, json_type_object) &&
        json_object_object_get_ex(o, key, &v))
        return v;
    return NULL;
}

static void
print_buckets(struct json_object *arr, const char *title)
{
    static const char *const hdr[] = {"BUCKET", "NODES", "GOOD"};
    size_t n = arr && json_object_is_type(arr, json_type_array)
                   ? json_object_array_length(arr)
                   : 0;
    if (n == 0)
        return;
    struct ctl_table *t = ctl_table_new(3, hdr);
    if (!t)
        return;
    ctl_table_align_right(t, 0);
    ctl_table_align_right(t, 1);
    ctl_table_align_right(t, 2);
    for (size_t i = 0; i < n; i++) {
        struct json_object *b = json_object_array_get_idx(arr, i);
        char c0[24], c1[24], c2[24];
        snprintf(c0, sizeof(c0), "%" PRId64, ctl_jint(b, "index", 0));
        snprintf(c1, sizeof(c1), "%" PRId64, ctl_jint(b, "nodes", 0));
        snprintf(c2, sizeof(c2), "%" PRId64, ctl_jint(b, "good", 0));
        const char *const row[] = {c0, c1, c2};
        (void)ctl_table_add(t, row);
    }
    printf("\n%s\n", title);
    ctl_table_print(t, stdout, 2);
    ctl_table_free(t);
}

static void
print_status(struct json_object *st)
{
    if (!json_object_get_boolean(member(st, "enabled"))) {
        printf("DHT          off (dht = off in torrentd.conf)\n");
        return;
    }
    struct json_object *nodes = member(st, "nodes");
    struct json_object *stored = member(st, "stored");
    struct json_object *lk = member(st, "lookups");
    struct json_object *c = member(st, "counters");
    struct json_object *fams = member(st, "families");
    printf("node id      %s\n", ctl_jstr(st, "node_id", "-"));
    printf("port         %" PRId64 " (UDP", ctl_jint(st, "port", 0));
    for (size_t i = 0; fams && json_object_is_type(fams, json_type_array) &&
                       i < json_object_array_length(fams);
         i++)
        printf(", %s",
               json_object_get_string(json_object_array_get_idx(fams, i)));
    printf(")\n");
    printf("external ip  %s\n", ctl_jstr(st, "external_ip", "-"));
    printf("nodes        %" PRId64 " good, %" PRId64 " questionable, %" PRId64
           " bad\n",
           ctl_jint(nodes, "good", 0), ctl_jint(nodes, "questionable", 0),
           ctl_jint(nodes, "bad", 0));
    printf("stored       %" PRId64 " info-hashes, %" PRId64 " peers\n",
           ctl_jint(stored, "info_hashes", 0), ctl_jint(stored, "peers", 0));
    printf("lookups      %" PRId64 " started, %" PRId64 " finished, %" PRId64
           " running, %" PRId64 " queries, median %" PRId64 " ms\n",
           ctl_jint(lk, "started", 0), ctl_jint(lk, "finished", 0),
           ctl_jint(lk, "running", 0), ctl_jint(lk, "queries", 0),
           ctl_jint(lk, "median_ms", 0));
    printf("messages     %" PRId64 " in, %" PRId64 " out; %" PRId64
           " malformed, %" PRId64 " rate-limited, %" PRId64 " timeouts, %" PRId64
           " ids not BEP 42\n",
           ctl_jint(c, "messages_in", 0), ctl_jint(c, "messages_out", 0),
           ctl_jint(c, "malformed", 0), ctl_jint(c, "rate_limited", 0),
           ctl_jint(c, "timeouts", 0), ctl_jint(c, "non_bep42", 0));
    print_buckets(member(st, "buckets"), "Routing table:");
    print_buckets(member(st, "buckets6"), "Routing table (IPv6):");
}

static bool
is_hash(const char *s)
{
    if (strlen(s) != 40)
        return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f') ||
              (*p >= 'A' && *p <= 'F')))
            return false;
    return true;
}

int
ctl_cmd_dht(struct ctl_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {{"help", no_argument, NULL, 'h'},
                                         {"json", no_argument, NULL, 'J'},
                                         {NULL, 0, NULL, 0}};
    struct json_object *result = NULL, *params = NULL;
    const char *method = "dht.status";
    enum ctl_access access = CTL_ACCESS_READ;
    int c, r;

    optind = 0;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (c) {
        case 'h':
            return ctl_cmd_help(ctx);
        case 'J':
            ctx->json = true;
            break;
        default:
            return ctl_option_error(ctx, c, argv);
        }
    }
    if (optind < argc) {
        if (strcmp(argv[optind], "get-peers") != 0)
            return ctl_usage_error(ctx, "unknown dht command '%s'",
                                   argv[optind]);
        if (argc - optind != 2 || !is_hash(argv[optind + 1]))
            return ctl_usage_error(ctx, "get-peers takes one info-hash "
                                        "(40 hex digits)");
        params = json_object_new_object();
        if (!params) {
            ctl_err("out of memory");
            return CTL_EXIT_FAILURE;
        }
        json_object_object_add(params, "info_hash",
                               json_object_new_string(argv[optind + 1]));
        method = "dht.get_peers";
        access = CTL_ACCESS_WRITE;
    }
    r = dht_call(ctx, access, method, params, &result);
    if (r != CTL_EXIT_OK)
        return r;
    if (ctx->json) {
        r = ctl_json_print(result) < 0 ? CTL_EXIT_FAILURE : CTL_EXIT_OK;
    } else if (params) {
        struct json_object *arr = member(result, "peers");
        size_t n = arr && json_object_is_type(arr, json_type_array)
                       ? json_object_array_length(arr)
                       : 0;
        for (size_t i = 0; i < n; i++)
            printf("%s\n",
                   json_object_get_string(json_object_array_get_idx(arr, i)));
        fprintf(stderr, "%zu peers (%" PRId64 " queries, %" PRId64 " ms)\n", n,
                ctl_jint(result, "queries", 0), ctl_jint(result, "ms", 0));
    } else {
        print_status(result);
    }
    json_object_put(result);
    return r;
}
