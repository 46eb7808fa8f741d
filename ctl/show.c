/* show — `torrentctl show`: what a .torrent file or a magnet URI says.
 *
 * The input goes through the parsers the daemon uses (common/metainfo,
 * common/magnet), with their default limits, so show refuses exactly what
 * torrentd would refuse, with the parser's message.  Everything printed for
 * people goes through the safe printers of output.h: a hostile name or
 * comment cannot send escape sequences to the terminal.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "common/buf.h"
#include "common/hex.h"
#include "common/magnet.h"
#include "common/metainfo.h"
#include "ctl/ctl.h"
#include "ctl/output.h"

#define SHOW_MAGNET_MAX (64 * 1024) /* bytes of a formatted magnet URI */

/* Read the whole of path ("-" is standard input), at most max bytes, into
 * a new buffer.  Returns 0, -errno, or -EFBIG past max. */
static int
read_input(const char *path, size_t max, uint8_t **ret_data,
           size_t *ret_len)
{
    struct buf b;
    struct stat st;
    int fd, r = 0;

    if (strcmp(path, "-") == 0) {
        fd = STDIN_FILENO;
    } else {
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
            return -errno;
        if (fstat(fd, &st) < 0) {
            r = -errno;
            close(fd);
            return r;
        }
        if (S_ISDIR(st.st_mode)) {
            close(fd);
            return -EISDIR;
        }
        if (S_ISREG(st.st_mode) && (uint64_t)st.st_size > max) {
            close(fd);
            return -EFBIG;
        }
    }
    buf_init(&b, max);
    for (;;) {
        ssize_t n;

        r = buf_reserve(&b, 64 * 1024);
        if (r == -EMSGSIZE)
            r = buf_reserve(&b, 1); /* less room left under the cap */
        if (r == -EMSGSIZE) {
            char c;

            /* Full: one more byte means the input is too large. */
            n = read(fd, &c, 1);
            if (n < 0 && errno == EINTR)
                continue;
            r = n < 0 ? -errno : n > 0 ? -EFBIG : 0;
            break;
        }
        if (r < 0)
            break;
        n = read(fd, b.data + b.len, b.size - b.len - 1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            r = -errno;
            break;
        }
        if (n == 0)
            break;
        b.len += (size_t)n;
        b.data[b.len] = '\0';
    }
    if (fd != STDIN_FILENO)
        close(fd);
    if (r < 0) {
        buf_release(&b);
        return r;
    }
    *ret_data = (uint8_t *)buf_steal(&b, ret_len);
    if (!*ret_data)
        *ret_len = 0;
    return 0;
}

/* The letters of BEP 47 attributes, "" for none. */
static void
attr_string(char out[5], unsigned attr)
{
    size_t n = 0;

    if (attr & META_ATTR_PAD)
        out[n++] = 'p';
    if (attr & META_ATTR_EXEC)
        out[n++] = 'x';
    if (attr & META_ATTR_HIDDEN)
        out[n++] = 'h';
    if (attr & META_ATTR_SYMLINK)
        out[n++] = 'l';
    out[n] = '\0';
}

/* The magnet URI for a torrent: btih (and btmh for a hybrid), dn, tr, ws.
 * Returns a new string or NULL on ENOMEM. */
static char *
torrent_magnet(const struct meta_info *mi)
{
    struct magnet m;
    struct buf b;
    size_t n = 0;
    char *s = NULL;

    memset(&m, 0, sizeof(m));
    m.has_btih = true;
    memcpy(m.btih, mi->info_hash, sizeof(m.btih));
    if (mi->version == META_HYBRID) {
        m.has_btmh = true;
        memcpy(m.btmh, mi->info_hash_v2, sizeof(m.btmh));
    }
    m.dn = mi->name;
    for (size_t t = 0; t < mi->n_tiers; t++)
        n += mi->tiers[t].n_urls;
    if (n) {
        m.tr = calloc(n, sizeof(char *));
        if (!m.tr)
            return NULL;
        for (size_t t = 0; t < mi->n_tiers; t++)
            for (size_t u = 0; u < mi->tiers[t].n_urls; u++)
                m.tr[m.n_tr++] = mi->tiers[t].urls[u];
    }
    m.ws = mi->web_seeds;
    m.n_ws = mi->n_web_seeds;
    buf_init(&b, SHOW_MAGNET_MAX * 16);
    if (magnet_format(&m, &b) == 0)
        s = buf_steal(&b, NULL);
    buf_release(&b);
    free(m.tr); /* the strings are borrowed from mi */
    return s;
}

static void
print_label(const char *label)
{
    printf("%s%-13s%s ", ctl_style(stdout, CTL_STYLE_BOLD), label,
           ctl_style(stdout, CTL_STYLE_RESET));
}

static void
print_field(const char *label, const char *value)
{
    print_label(label);
    ctl_fputs_safe(value, stdout);
    fputc('\n', stdout);
}

static void
print_date(int64_t date)
{
    time_t t = (time_t)date;
    struct tm tm;
    char s[64];

    print_label("Created on:");
    if (gmtime_r(&t, &tm) && strftime(s, sizeof(s), "%Y-%m-%d %H:%M:%S UTC",
                                      &tm) > 0)
        printf("%s\n", s);
    else
        printf("%" PRId64 "\n", date);
}

static int
print_files(const struct meta_info *mi)
{
    static const char *const hdr3[] = { "SIZE", "ATTR", "PATH" };
    static const char *const hdr2[] = { "SIZE", "PATH" };
    struct ctl_table *t;
    bool attrs = false;

    for (size_t i = 0; i < mi->n_files; i++)
        if (mi->files[i].attr)
            attrs = true;
    t = ctl_table_new(attrs ? 3 : 2, attrs ? hdr3 : hdr2);
    if (!t)
        return -ENOMEM;
    ctl_table_align_right(t, 0);
    for (size_t i = 0; i < mi->n_files; i++) {
        const struct meta_file *f = &mi->files[i];
        char sz[CTL_SIZE_LEN], at[5];
        const char *row[3];

        ctl_human_size(sz, f->length);
        attr_string(at, f->attr);
        row[0] = sz;
        row[1] = attrs ? at : f->path;
        row[2] = f->path;
        if (ctl_table_add(t, row) < 0) {
            ctl_table_free(t);
            return -ENOMEM;
        }
    }
    printf("%sFiles (%zu):%s\n", ctl_style(stdout, CTL_STYLE_BOLD),
           mi->n_files, ctl_style(stdout, CTL_STYLE_RESET));
    ctl_table_print(t, stdout, 2);
    ctl_table_free(t);
    return 0;
}

static void
print_trackers(char **urls, size_t n, const char *first_prefix,
               const char *prefix)
{
    for (size_t u = 0; u < n; u++) {
        fputs(u == 0 ? first_prefix : prefix, stdout);
        ctl_fputs_safe(urls[u], stdout);
        fputc('\n', stdout);
    }
}

static int
show_torrent_human(const struct meta_info *mi, const char *magnet)
{
    char hex[2 * META_HASH2_LEN + 1], sz[CTL_SIZE_LEN], ps[CTL_SIZE_LEN];
    char line[128];

    print_field("Name:", mi->name);
    hex_encode(hex, mi->info_hash, META_HASH_LEN);
    print_field("Info-hash:", hex);
    if (mi->version == META_HYBRID) {
        hex_encode(hex, mi->info_hash_v2, META_HASH2_LEN);
        print_field("Info-hash v2:", hex);
    }
    ctl_human_size(sz, mi->total_size);
    snprintf(line, sizeof(line), "%s (%" PRIu64 " bytes)", sz,
             mi->total_size);
    print_field("Size:", line);
    ctl_human_size(ps, mi->piece_length);
    snprintf(line, sizeof(line), "%" PRIu32 " x %s", mi->n_pieces, ps);
    print_field("Pieces:", line);
    print_field("Private:", mi->private_torrent ? "yes" : "no");
    if (mi->created_by)
        print_field("Created by:", mi->created_by);
    if (mi->creation_date)
        print_date(mi->creation_date);
    if (mi->comment)
        print_field("Comment:", mi->comment);
    if (magnet)
        print_field("Magnet:", magnet);
    if (mi->sanitised)
        print_field("Note:", "some names were changed to be usable here");

    if (mi->n_tiers > 0) {
        printf("%sTrackers:%s\n", ctl_style(stdout, CTL_STYLE_BOLD),
               ctl_style(stdout, CTL_STYLE_RESET));
        for (size_t t = 0; t < mi->n_tiers; t++) {
            char first[32];

            snprintf(first, sizeof(first), "  tier %-3zu ", t + 1);
            print_trackers(mi->tiers[t].urls, mi->tiers[t].n_urls, first,
                           "           ");
        }
    }
    if (mi->n_web_seeds > 0) {
        printf("%sWeb seeds:%s\n", ctl_style(stdout, CTL_STYLE_BOLD),
               ctl_style(stdout, CTL_STYLE_RESET));
        print_trackers(mi->web_seeds, mi->n_web_seeds, "  ", "  ");
    }
    return print_files(mi);
}

static struct json_object *
json_hex(const uint8_t *p, size_t n)
{
    char hex[2 * META_HASH2_LEN + 1];

    hex_encode(hex, p, n);
    return json_object_new_string(hex);
}

static struct json_object *
json_string_array(char **v, size_t n)
{
    struct json_object *a = json_object_new_array();

    for (size_t i = 0; a && i < n; i++)
        json_object_array_add(a, ctl_json_string(v[i]));
    return a;
}

static int
show_torrent_json(const struct meta_info *mi, const char *magnet)
{
    struct json_object *o = json_object_new_object();
    struct json_object *files = json_object_new_array();
    struct json_object *tiers = json_object_new_array();
    int r;

    if (!o || !files || !tiers) {
        json_object_put(o);
        json_object_put(files);
        json_object_put(tiers);
        return -ENOMEM;
    }
    json_object_object_add(o, "type", json_object_new_string("torrent"));
    json_object_object_add(o, "name", ctl_json_string(mi->name));
    json_object_object_add(o, "info_hash",
                           json_hex(mi->info_hash, META_HASH_LEN));
    json_object_object_add(o, "info_hash_v2",
                           mi->version == META_HYBRID
                               ? json_hex(mi->info_hash_v2, META_HASH2_LEN)
                               : NULL);
    json_object_object_add(o, "size_bytes",
                           json_object_new_int64((int64_t)mi->total_size));
    json_object_object_add(o, "piece_size",
                           json_object_new_int64(mi->piece_length));
    json_object_object_add(o, "piece_count",
                           json_object_new_int64(mi->n_pieces));
    json_object_object_add(o, "private",
                           json_object_new_boolean(mi->private_torrent));
    json_object_object_add(o, "multi_file",
                           json_object_new_boolean(mi->multi_file));
    json_object_object_add(o, "sanitised",
                           json_object_new_boolean(mi->sanitised));
    for (size_t i = 0; i < mi->n_files; i++) {
        const struct meta_file *f = &mi->files[i];
        struct json_object *jf = json_object_new_object();
        char at[5];

        if (!jf)
            continue;
        attr_string(at, f->attr);
        json_object_object_add(jf, "path", ctl_json_string(f->path));
        json_object_object_add(jf, "size_bytes",
                               json_object_new_int64((int64_t)f->length));
        json_object_object_add(jf, "offset",
                               json_object_new_int64((int64_t)f->offset));
        json_object_object_add(jf, "attr", json_object_new_string(at));
        if (f->symlink)
            json_object_object_add(jf, "symlink",
                                   ctl_json_string(f->symlink));
        json_object_array_add(files, jf);
    }
    json_object_object_add(o, "files", files);
    for (size_t t = 0; t < mi->n_tiers; t++)
        json_object_array_add(tiers, json_string_array(
                                         mi->tiers[t].urls,
                                         mi->tiers[t].n_urls));
    json_object_object_add(o, "trackers", tiers);
    json_object_object_add(o, "web_seeds",
                           json_string_array(mi->web_seeds,
                                             mi->n_web_seeds));
    json_object_object_add(o, "comment", ctl_json_string(mi->comment));
    json_object_object_add(o, "created_by", ctl_json_string(mi->created_by));
    json_object_object_add(o, "creation_date",
                           mi->creation_date
                               ? json_object_new_int64(mi->creation_date)
                               : NULL);
    json_object_object_add(o, "magnet", ctl_json_string(magnet));
    r = ctl_json_print(o);
    json_object_put(o);
    return r;
}

static int
show_torrent(struct ctl_ctx *ctx, const char *path)
{
    const struct meta_limits *lim = &meta_limits_default;
    struct meta_errinfo ei;
    struct meta_info *mi = NULL;
    uint8_t *data = NULL;
    size_t len = 0;
    char *magnet = NULL;
    int r;

    r = read_input(path, lim->max_input, &data, &len);
    if (r == -EFBIG) {
        ctl_err("cannot read '%s': %s: larger than %zu bytes", path,
                meta_strerror(META_E_TOO_LARGE), lim->max_input);
        return CTL_EXIT_FAILURE;
    }
    if (r < 0) {
        ctl_err("cannot read '%s': %s", path, strerror(-r));
        return CTL_EXIT_FAILURE;
    }
    memset(&ei, 0, sizeof(ei));
    ei.file_index = -1;
    r = meta_parse(&mi, data, len, lim, &ei);
    free(data);
    if (r < 0) {
        ei.detail[sizeof(ei.detail) - 1] = '\0';
        ctl_err("cannot read '%s': %s%s%s", path, meta_strerror(r),
                ei.detail[0] ? ": " : "", ei.detail);
        return CTL_EXIT_FAILURE;
    }
    magnet = torrent_magnet(mi);
    r = ctx->json ? show_torrent_json(mi, magnet)
                  : show_torrent_human(mi, magnet);
    free(magnet);
    meta_free(mi);
    if (r < 0) {
        ctl_err("cannot print '%s': %s", path, strerror(-r));
        return CTL_EXIT_FAILURE;
    }
    return CTL_EXIT_OK;
}

static void
format_ranges(struct buf *b, const struct magnet *m)
{
    for (size_t i = 0; i < m->n_so; i++) {
        if (m->so[i].first == m->so[i].last)
            (void)buf_printf(b, "%s%" PRIu32, i ? "," : "", m->so[i].first);
        else
            (void)buf_printf(b, "%s%" PRIu32 "-%" PRIu32, i ? "," : "",
                             m->so[i].first, m->so[i].last);
    }
}

static int
show_magnet_human(const struct magnet *m, const char *canon)
{
    char hex[2 * META_HASH2_LEN + 1];

    print_field("Name:", m->dn ? m->dn : "(unknown)");
    if (m->has_btih) {
        hex_encode(hex, m->btih, sizeof(m->btih));
        print_field("Info-hash:", hex);
    }
    if (m->has_btmh) {
        hex_encode(hex, m->btmh, sizeof(m->btmh));
        print_field("Info-hash v2:", hex);
    }
    print_field("Size:", "unknown until the metadata is fetched");
    if (m->n_so > 0) {
        struct buf b;

        buf_init(&b, 1 << 20);
        format_ranges(&b, m);
        print_field("Select only:", b.data ? b.data : "");
        buf_release(&b);
    }
    if (canon)
        print_field("Magnet:", canon);
    if (m->n_tr > 0) {
        printf("%sTrackers:%s\n", ctl_style(stdout, CTL_STYLE_BOLD),
               ctl_style(stdout, CTL_STYLE_RESET));
        print_trackers(m->tr, m->n_tr, "  ", "  ");
    }
    if (m->n_ws > 0) {
        printf("%sWeb seeds:%s\n", ctl_style(stdout, CTL_STYLE_BOLD),
               ctl_style(stdout, CTL_STYLE_RESET));
        print_trackers(m->ws, m->n_ws, "  ", "  ");
    }
    if (m->n_peers > 0) {
        printf("%sPeers:%s\n", ctl_style(stdout, CTL_STYLE_BOLD),
               ctl_style(stdout, CTL_STYLE_RESET));
        print_trackers(m->peers, m->n_peers, "  ", "  ");
    }
    return 0;
}

static int
show_magnet_json(const struct magnet *m, const char *canon)
{
    struct json_object *o = json_object_new_object();
    struct json_object *tiers = json_object_new_array();
    struct json_object *so = json_object_new_array();
    int r;

    if (!o || !tiers || !so) {
        json_object_put(o);
        json_object_put(tiers);
        json_object_put(so);
        return -ENOMEM;
    }
    json_object_object_add(o, "type", json_object_new_string("magnet"));
    json_object_object_add(o, "name", ctl_json_string(m->dn));
    json_object_object_add(o, "info_hash", m->has_btih
                           ? json_hex(m->btih, sizeof(m->btih)) : NULL);
    json_object_object_add(o, "info_hash_v2", m->has_btmh
                           ? json_hex(m->btmh, sizeof(m->btmh)) : NULL);
    json_object_object_add(o, "size_bytes", NULL);
    json_object_object_add(o, "piece_size", NULL);
    json_object_object_add(o, "piece_count", NULL);
    json_object_object_add(o, "private", NULL);
    json_object_object_add(o, "files", NULL);
    /* A magnet's trackers have no tiers: each is its own, as in
     * libtorrent and Transmission. */
    for (size_t i = 0; i < m->n_tr; i++)
        json_object_array_add(tiers, json_string_array(&m->tr[i], 1));
    json_object_object_add(o, "trackers", tiers);
    json_object_object_add(o, "web_seeds",
                           json_string_array(m->ws, m->n_ws));
    json_object_object_add(o, "peers",
                           json_string_array(m->peers, m->n_peers));
    for (size_t i = 0; i < m->n_so; i++) {
        struct json_object *pair = json_object_new_array();

        if (!pair)
            continue;
        json_object_array_add(pair, json_object_new_int64(m->so[i].first));
        json_object_array_add(pair, json_object_new_int64(m->so[i].last));
        json_object_array_add(so, pair);
    }
    json_object_object_add(o, "select_only", so);
    json_object_object_add(o, "comment", NULL);
    json_object_object_add(o, "created_by", NULL);
    json_object_object_add(o, "creation_date", NULL);
    json_object_object_add(o, "magnet", ctl_json_string(canon));
    r = ctl_json_print(o);
    json_object_put(o);
    return r;
}

static int
show_magnet(struct ctl_ctx *ctx, const char *uri)
{
    struct magnet m;
    struct buf b;
    size_t off = 0;
    int r;

    memset(&m, 0, sizeof(m));
    r = magnet_parse(&m, uri, strlen(uri), &magnet_limits_default, &off);
    if (r < 0) {
        ctl_err("cannot read magnet URI: %s (at byte %zu)",
                magnet_strerror(r), off);
        return CTL_EXIT_FAILURE;
    }
    buf_init(&b, SHOW_MAGNET_MAX * 16);
    if (magnet_format(&m, &b) < 0)
        buf_release(&b);
    r = ctx->json ? show_magnet_json(&m, b.data)
                  : show_magnet_human(&m, b.data);
    buf_release(&b);
    magnet_release(&m);
    if (r < 0) {
        ctl_err("cannot print the magnet URI: %s", strerror(-r));
        return CTL_EXIT_FAILURE;
    }
    return CTL_EXIT_OK;
}

int
ctl_cmd_show(struct ctl_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        { "json", no_argument, NULL, 'J' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };
    int c;

    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (c) {
        case 'J':
            ctx->json = true;
            break;
        case 'h':
            ctl_cmd_help(ctx);
            fputs("\nFILE may be '-' for standard input.\n\nOptions:\n"
                  CTL_COMMON_OPTS_HELP, stdout);
            return CTL_EXIT_OK;
        default:
            return ctl_option_error(ctx, c, argv);
        }
    }
    if (optind >= argc)
        return ctl_usage_error(ctx, "missing FILE.torrent or MAGNET");
    if (optind + 1 < argc)
        return ctl_usage_error(ctx, "unexpected argument '%s'",
                               argv[optind + 1]);
    if (strncmp(argv[optind], "magnet:", 7) == 0)
        return show_magnet(ctx, argv[optind]);
    return show_torrent(ctx, argv[optind]);
}
