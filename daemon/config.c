/* config — torrentd's settings: defaults, the key = value file, --set.
 *
 * Everything about a key lives in one row of config_table: adding a key is
 * adding a field to struct config and a row here (and a paragraph to
 * torrentd.conf(5)).  The parser is pure: text in, struct config out, the
 * first error with its line; it never allocates more than the values it
 * keeps, and the file is bounded by CONFIG_FILE_MAX.
 */
#include "daemon/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/log.h"

#define CONFIG_FILE_MAX (1u << 20) /* config_load_file() reads at most */
#define CONFIG_VALUE_MAX 4096      /* bytes in one value */
#define CONFIG_KEY_MAX 64          /* bytes in one key name */
#define CONFIG_ADDRLIST_MAX 64     /* entries in an address list */
#define CONFIG_HOST_MAX 253        /* a DNS name */

#define OFF(field) offsetof(struct config, field)
#define KIB 1024ull
#define GIB (1024ull * 1024 * 1024)

/* Defaults that depend on the environment (systemd's StateDirectory= and
 * RuntimeDirectory=, a user's $XDG_RUNTIME_DIR) are computed by
 * default_value(); the def column shows the usual result. */
static const struct config_key config_table[] = {
    {"state_dir", CONFIG_PATH, CONFIG_RESTART, OFF(state_dir),
     "/var/lib/torrentd", 0, 0,
     "directory for .torrent files, resume records and run-time settings"},
    {"download_dir", CONFIG_PATH, CONFIG_LIVE, OFF(download_dir),
     "/var/lib/torrentd/downloads", 0, 0,
     "where new torrents download to unless they name a directory"},
    {"control_socket", CONFIG_PATH, CONFIG_RESTART, OFF(control_socket),
     "/run/torrentd/control.sock", 0, 0,
     "the control socket (full rights), mode 0660"},
    {"status_socket", CONFIG_PATH, CONFIG_RESTART, OFF(status_socket),
     "/run/torrentd/status.sock", 0, 0,
     "the read-only status socket, mode 0666; empty for none"},
    {"listen", CONFIG_ADDR, CONFIG_RESTART, OFF(listen), "0.0.0.0:6881", 0, 0,
     "address:port for incoming peer connections"},
    {"dht", CONFIG_BOOL, CONFIG_RESTART, OFF(dht), "on", 0, 0,
     "take part in the Mainline DHT"},
    {"dht_bootstrap", CONFIG_ADDRLIST, CONFIG_RESTART, OFF(dht_bootstrap), "",
     0, 0, "comma-separated host:port of DHT nodes to start from"},
    {"lsd", CONFIG_BOOL, CONFIG_RESTART, OFF(lsd), "off", 0, 0,
     "local service discovery (BEP 14): multicast on the listen interface"},
    {"max_peers", CONFIG_UINT, CONFIG_LIVE, OFF(max_peers), "200", 1, 10000,
     "peer connections in all, one thread each"},
    {"max_peers_per_torrent", CONFIG_UINT, CONFIG_LIVE,
     OFF(max_peers_per_torrent), "50", 1, 10000,
     "peer connections per torrent"},
    {"max_active_downloads", CONFIG_UINT, CONFIG_LIVE,
     OFF(max_active_downloads), "0", 0, 10000,
     "torrents downloading at once, others queued; 0 = no limit"},
    {"download_rate_limit", CONFIG_UINT, CONFIG_LIVE, OFF(download_rate_limit),
     "0", 0, 1024 * GIB, "bytes/s for all downloads; 0 = no limit"},
    {"upload_rate_limit", CONFIG_UINT, CONFIG_LIVE, OFF(upload_rate_limit), "0",
     0, 1024 * GIB, "bytes/s for all uploads; 0 = no limit"},
    {"upload_slots", CONFIG_UINT, CONFIG_LIVE, OFF(upload_slots), "4", 1, 100,
     "peers each torrent unchokes by tit-for-tat, besides one optimistic"},
    {"seed_ratio_limit", CONFIG_DECIMAL, CONFIG_LIVE, OFF(seed_ratio_limit),
     "0", 0, 1000000000,
     "share ratio at which a seeding torrent stops, e.g. 2.0; 0 = none"},
    {"seed_idle_limit", CONFIG_DECIMAL, CONFIG_LIVE, OFF(seed_idle_limit), "0",
     0, 525600000,
     "minutes (fractions allowed) a seeding torrent may upload nothing "
     "before it stops; 0 = none"},
    {"encryption", CONFIG_ENCRYPTION, CONFIG_RESTART, OFF(encryption),
     "prefer", 0, 0,
     "peer connections: prefer (MSE with RC4, plaintext accepted), require "
     "(RC4 only) or off (plaintext only)"},
    {"watch_dir", CONFIG_PATH, CONFIG_LIVE, OFF(watch_dir), "", 0, 0,
     "directory whose new .torrent files are added; empty for none"},
    {"watch_interval", CONFIG_UINT, CONFIG_LIVE, OFF(watch_interval), "5", 1,
     3600, "seconds between scans of watch_dir without inotify"},
    {"on_complete", CONFIG_PATH, CONFIG_LIVE, OFF(on_complete), "", 0, 0,
     "program run (without a shell) when a torrent completes"},
    {"on_complete_timeout", CONFIG_UINT, CONFIG_LIVE, OFF(on_complete_timeout),
     "60", 1, 86400, "seconds before on_complete is killed"},
    {"tracker_listen", CONFIG_ADDR, CONFIG_RESTART, OFF(tracker_listen), "", 0,
     0, "numeric address:port of the built-in tracker (HTTP and UDP); "
        "empty for none"},
    {"tracker_interval", CONFIG_UINT, CONFIG_LIVE, OFF(tracker_interval),
     "1800", 5, 86400, "seconds the built-in tracker asks peers to wait"},
    {"tracker_allowlist", CONFIG_PATH, CONFIG_LIVE, OFF(tracker_allowlist), "",
     0, 0, "file of hex info-hashes the tracker serves; empty for all"},
    {"tracker_max_peers", CONFIG_UINT, CONFIG_LIVE, OFF(tracker_max_peers),
     "100000", 1, 10000000, "peers the built-in tracker keeps, in all"},
    {"tracker_dht", CONFIG_BOOL, CONFIG_LIVE, OFF(tracker_dht), "on", 0, 0,
     "the built-in tracker looks up swarms it has too few peers for in "
     "the DHT"},
    {"log_level", CONFIG_LOGLEVEL, CONFIG_LIVE, OFF(log_level), "info", 0, 0,
     "err, warn, notice, info or debug"},
};

#define CONFIG_NKEYS (sizeof(config_table) / sizeof(config_table[0]))

const struct config_key *
config_keys(size_t *ret_n)
{
    if (ret_n)
        *ret_n = CONFIG_NKEYS;
    return config_table;
}

const struct config_key *
config_key_find(const char *name)
{
    if (!name)
        return NULL;
    for (size_t i = 0; i < CONFIG_NKEYS; i++)
        if (strcmp(config_table[i].name, name) == 0)
            return &config_table[i];
    return NULL;
}

static bool
key_is_string(const struct config_key *k)
{
    return k->type == CONFIG_STRING || k->type == CONFIG_PATH ||
           k->type == CONFIG_ADDR || k->type == CONFIG_ADDRLIST;
}

static char **
field_str(struct config *c, const struct config_key *k)
{
    return (char **)(void *)((char *)c + k->offset);
}

static const char *
field_cstr(const struct config *c, const struct config_key *k)
{
    const char *const *p =
        (const char *const *)(const void *)((const char *)c + k->offset);
    return *p ? *p : "";
}

static bool *
field_bool(struct config *c, const struct config_key *k)
{
    return (bool *)(void *)((char *)c + k->offset);
}

static uint64_t *
field_uint(struct config *c, const struct config_key *k)
{
    return (uint64_t *)(void *)((char *)c + k->offset);
}

static int *
field_int(struct config *c, const struct config_key *k)
{
    return (int *)(void *)((char *)c + k->offset);
}

static void error_set(struct config_error *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
error_set(struct config_error *e, const char *fmt, ...)
{
    if (!e)
        return;
    e->file[0] = '\0';
    e->line = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof(e->message), fmt, ap);
    va_end(ap);
}

/* A value quoted in a message: at most 64 bytes, control bytes as '?'. */
static const char *
quote(char *out, size_t size, const char *s, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n && k + 4 < size; i++) {
        unsigned char ch = (unsigned char)s[i];
        out[k++] = (ch < 0x20 || ch == 0x7f) ? '?' : (char)ch;
        if (i == 64 && i + 1 < n) {
            memcpy(out + k, "...", 3);
            k += 3;
            break;
        }
    }
    out[k] = '\0';
    return out;
}

/* ---- value parsers: text -> field, or an error message ---------------- */

static int
parse_bool(const char *v, bool *ret)
{
    static const char *const yes[] = {"on", "yes", "true", "1"};
    static const char *const no[] = {"off", "no", "false", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0) {
            *ret = true;
            return 0;
        }
        if (strcasecmp(v, no[i]) == 0) {
            *ret = false;
            return 0;
        }
    }
    return -EINVAL;
}

/* Decimal digits with an optional K, M or G (powers of 1024). */
static int
parse_uint(const char *v, uint64_t *ret, const char **reterr_why)
{
    uint64_t n = 0;
    const char *p = v;
    if (!isdigit((unsigned char)*p)) {
        *reterr_why = "not a number";
        return -EINVAL;
    }
    for (; isdigit((unsigned char)*p); p++) {
        unsigned d = (unsigned)(*p - '0');
        if (n > (UINT64_MAX - d) / 10) {
            *reterr_why = "number too large";
            return -EINVAL;
        }
        n = n * 10 + d;
    }
    uint64_t mult = 1;
    switch (*p) {
    case '\0':
        break;
    case 'k':
    case 'K':
        mult = KIB;
        p++;
        break;
    case 'm':
    case 'M':
        mult = KIB * KIB;
        p++;
        break;
    case 'g':
    case 'G':
        mult = GIB;
        p++;
        break;
    default:
        *reterr_why = "not a number (digits with an optional K, M or G)";
        return -EINVAL;
    }
    if (*p != '\0') {
        *reterr_why = "not a number (digits with an optional K, M or G)";
        return -EINVAL;
    }
    if (n > UINT64_MAX / mult) {
        *reterr_why = "number too large";
        return -EINVAL;
    }
    *ret = n * mult;
    return 0;
}

/* A decimal with at most three places, as thousandths: "2" -> 2000,
 * "0.05" -> 50; "" -> 0 (no limit). */
static int
parse_decimal(const char *v, uint64_t *ret, const char **reterr_why)
{
    uint64_t n = 0;
    const char *p = v;
    if (*p == '\0') {
        *ret = 0;
        return 0;
    }
    if (!isdigit((unsigned char)*p)) {
        *reterr_why = "not a number (e.g. 2 or 1.5)";
        return -EINVAL;
    }
    for (; isdigit((unsigned char)*p); p++) {
        if (n > UINT64_MAX / 100000) {
            *reterr_why = "number too large";
            return -EINVAL;
        }
        n = n * 10 + (unsigned)(*p - '0');
    }
    n *= 1000;
    if (*p == '.') {
        p++;
        uint64_t scale = 100;
        if (!isdigit((unsigned char)*p)) {
            *reterr_why = "not a number (e.g. 2 or 1.5)";
            return -EINVAL;
        }
        for (; isdigit((unsigned char)*p); p++) {
            if (scale == 0) {
                if (*p != '0') {
                    *reterr_why = "at most three decimal places";
                    return -EINVAL;
                }
                continue;
            }
            n += (unsigned)(*p - '0') * scale;
            scale /= 10;
        }
    }
    if (*p != '\0') {
        *reterr_why = "not a number (e.g. 2 or 1.5)";
        return -EINVAL;
    }
    *ret = n;
    return 0;
}

static bool
host_char_ok(char ch)
{
    return isalnum((unsigned char)ch) || ch == '-' || ch == '.' || ch == '_';
}

/* host:port, [v6]:port.  port_min is 0 for a listening address (0 = any
 * port), 1 for one we connect to.  Names are checked for their shape
 * only: they are resolved when used, never here. */
static int
check_addr(const char *v, size_t n, unsigned port_min, const char **why)
{
    const char *colon;
    if (n == 0) {
        *why = "empty address";
        return -EINVAL;
    }
    if (v[0] == '[') {
        const char *close = memchr(v, ']', n);
        if (!close || close == v + 1) {
            *why = "expected [IPv6]:port";
            return -EINVAL;
        }
        size_t hl = (size_t)(close - v - 1);
        char host[INET6_ADDRSTRLEN + 1];
        struct in6_addr a6;
        if (hl >= sizeof(host)) {
            *why = "bad IPv6 address";
            return -EINVAL;
        }
        memcpy(host, v + 1, hl);
        host[hl] = '\0';
        if (inet_pton(AF_INET6, host, &a6) != 1) {
            *why = "bad IPv6 address";
            return -EINVAL;
        }
        if (close + 1 == v + n || close[1] != ':') {
            *why = "missing :port";
            return -EINVAL;
        }
        colon = close + 1;
    } else {
        colon = NULL;
        for (size_t i = 0; i < n; i++)
            if (v[i] == ':') {
                if (colon) {
                    *why = "IPv6 addresses need brackets, e.g. [::1]:6881";
                    return -EINVAL;
                }
                colon = v + i;
            }
        if (!colon) {
            *why = "missing :port";
            return -EINVAL;
        }
        size_t hl = (size_t)(colon - v);
        if (hl == 0 || hl > CONFIG_HOST_MAX) {
            *why = "bad host name";
            return -EINVAL;
        }
        bool dotted = true;
        for (size_t i = 0; i < hl; i++) {
            if (!host_char_ok(v[i])) {
                *why = "bad host name";
                return -EINVAL;
            }
            if (!isdigit((unsigned char)v[i]) && v[i] != '.')
                dotted = false;
        }
        if (v[0] == '-' || v[0] == '.' || v[hl - 1] == '-') {
            *why = "bad host name";
            return -EINVAL;
        }
        if (dotted) {
            char host[INET_ADDRSTRLEN + 1];
            struct in_addr a4;
            if (hl >= sizeof(host)) {
                *why = "bad IPv4 address";
                return -EINVAL;
            }
            memcpy(host, v, hl);
            host[hl] = '\0';
            if (inet_pton(AF_INET, host, &a4) != 1) {
                *why = "bad IPv4 address";
                return -EINVAL;
            }
        }
    }
    const char *p = colon + 1, *end = v + n;
    unsigned port = 0;
    if (p == end) {
        *why = "missing port number";
        return -EINVAL;
    }
    for (; p < end; p++) {
        if (!isdigit((unsigned char)*p) || port > 65535) {
            *why = "bad port number";
            return -EINVAL;
        }
        port = port * 10 + (unsigned)(*p - '0');
    }
    if (port > 65535 || port < port_min) {
        *why = port_min ? "port must be between 1 and 65535"
                        : "port must be between 0 and 65535";
        return -EINVAL;
    }
    return 0;
}

/* Check a comma-separated list and return it normalised: entries without
 * the spaces around them, joined by ",". */
static int
parse_addrlist(const char *v, char **ret, const char **why)
{
    struct buf out;
    buf_init(&out, CONFIG_VALUE_MAX);
    unsigned count = 0;
    const char *p = v;
    int r = 0;
    while (*p) {
        const char *comma = strchr(p, ',');
        const char *e = comma ? comma : p + strlen(p);
        const char *s = p;
        while (s < e && (*s == ' ' || *s == '\t'))
            s++;
        const char *t = e;
        while (t > s && (t[-1] == ' ' || t[-1] == '\t'))
            t--;
        if (s == t) {
            *why = "empty entry in the list";
            r = -EINVAL;
            goto fail;
        }
        if (++count > CONFIG_ADDRLIST_MAX) {
            *why = "too many entries (at most 64)";
            r = -EINVAL;
            goto fail;
        }
        r = check_addr(s, (size_t)(t - s), 1, why);
        if (r < 0)
            goto fail;
        if ((out.len && (r = buf_putc(&out, ',')) < 0) ||
            (r = buf_append(&out, s, (size_t)(t - s))) < 0) {
            *why = "list too long";
            goto fail;
        }
        if (!comma)
            break;
        p = comma + 1;
        if (!*p) {
            *why = "empty entry in the list";
            r = -EINVAL;
            goto fail;
        }
    }
    char *s = out.len ? buf_steal(&out, NULL) : strdup("");
    if (!s) {
        r = -ENOMEM;
        goto fail;
    }
    *ret = s;
    return 0;
fail:
    buf_release(&out);
    return r;
}

static int
check_path(const char *v, const char **why)
{
    if (*v == '\0')
        return 0;
    if (*v != '/') {
        *why = "not an absolute path";
        return -EINVAL;
    }
    if (strlen(v) >= PATH_MAX) {
        *why = "path too long";
        return -EINVAL;
    }
    for (const char *p = v; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) {
            *why = "control character in path";
            return -EINVAL;
        }
    return 0;
}

static int
store_string(struct config *c, const struct config_key *k, const char *v)
{
    char *s = strdup(v);
    if (!s)
        return -ENOMEM;
    char **f = field_str(c, k);
    free(*f);
    *f = s;
    return 0;
}

static int
key_set(struct config *c, const struct config_key *k, const char *v,
        struct config_error *reterr)
{
    const char *why = NULL;
    char q[96];
    int r;

    if (strlen(v) > CONFIG_VALUE_MAX) {
        error_set(reterr, "value of %s too long (at most %u bytes)", k->name,
                  CONFIG_VALUE_MAX);
        return -EINVAL;
    }
    switch (k->type) {
    case CONFIG_STRING:
        for (const char *p = v; *p; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f) {
                why = "control character in value";
                goto bad;
            }
        return store_string(c, k, v);
    case CONFIG_PATH:
        if (check_path(v, &why) < 0)
            goto bad;
        return store_string(c, k, v);
    case CONFIG_ADDR:
        /* A key that is off by default may be turned off again. */
        if (*v == '\0' && k->def[0] == '\0')
            return store_string(c, k, v);
        if (check_addr(v, strlen(v), 0, &why) < 0)
            goto bad;
        return store_string(c, k, v);
    case CONFIG_ADDRLIST: {
        char *s = NULL;
        r = parse_addrlist(v, &s, &why);
        if (r == -ENOMEM)
            return r;
        if (r < 0)
            goto bad;
        char **f = field_str(c, k);
        free(*f);
        *f = s;
        return 0;
    }
    case CONFIG_BOOL: {
        bool b;
        if (parse_bool(v, &b) < 0) {
            why = "expected on or off (yes/no, true/false, 1/0)";
            goto bad;
        }
        *field_bool(c, k) = b;
        return 0;
    }
    case CONFIG_UINT: {
        uint64_t n;
        if (parse_uint(v, &n, &why) < 0)
            goto bad;
        if (n < k->min || n > k->max) {
            error_set(reterr,
                      "bad value '%s' for %s: must be between %" PRIu64
                      " and %" PRIu64,
                      quote(q, sizeof(q), v, strlen(v)), k->name, k->min,
                      k->max);
            return -EINVAL;
        }
        *field_uint(c, k) = n;
        return 0;
    }
    case CONFIG_DECIMAL: {
        uint64_t n;
        if (parse_decimal(v, &n, &why) < 0)
            goto bad;
        if (n < k->min || n > k->max) {
            error_set(reterr,
                      "bad value '%s' for %s: must be between %" PRIu64
                      ".%03u and %" PRIu64 ".%03u",
                      quote(q, sizeof(q), v, strlen(v)), k->name,
                      k->min / 1000, (unsigned)(k->min % 1000), k->max / 1000,
                      (unsigned)(k->max % 1000));
            return -EINVAL;
        }
        *field_uint(c, k) = n;
        return 0;
    }
    case CONFIG_ENCRYPTION:
        if (strcmp(v, "prefer") == 0) {
            *field_int(c, k) = CONFIG_ENC_PREFER;
        } else if (strcmp(v, "require") == 0) {
            *field_int(c, k) = CONFIG_ENC_REQUIRE;
        } else if (strcmp(v, "off") == 0) {
            *field_int(c, k) = CONFIG_ENC_OFF;
        } else {
            why = "expected prefer, require or off";
            goto bad;
        }
        return 0;
    case CONFIG_LOGLEVEL:
        r = log_level_from_string(v);
        if (r < 0) {
            why = "expected err, warn, notice, info or debug";
            goto bad;
        }
        *field_int(c, k) = r;
        return 0;
    case CONFIG_TYPE_MAX:
        break;
    }
    error_set(reterr, "key %s has no type", k->name);
    return -EINVAL;
bad:
    error_set(reterr, "bad value '%s' for %s: %s",
              quote(q, sizeof(q), v, strlen(v)), k->name, why);
    return -EINVAL;
}

int
config_set(struct config *c, const char *key, const char *value,
           struct config_error *reterr)
{
    const struct config_key *k = config_key_find(key);
    if (!k) {
        char q[96];
        error_set(reterr, "unknown key '%s'",
                  quote(q, sizeof(q), key, strlen(key)));
        return -ENOENT;
    }
    return key_set(c, k, value ? value : "", reterr);
}

/* ---- defaults ------------------------------------------------------------ */

/* The first directory of a systemd *_DIRECTORY variable (which may list
 * several, separated by ':'), or NULL. */
static char *
env_dir(const char *name)
{
    const char *e = getenv(name);
    if (!e || e[0] != '/')
        return NULL;
    size_t n = strcspn(e, ":");
    return strndup(e, n);
}

/* Compute the default of key k as text; *ret is owned by the caller. */
static int
default_value(const struct config_key *k, char **ret)
{
    const char *sock = NULL;
    char *dir = NULL;
    int n = 0;

    if (strcmp(k->name, "control_socket") == 0)
        sock = "control.sock";
    else if (strcmp(k->name, "status_socket") == 0)
        sock = "status.sock";

    if (sock) {
        /* Under systemd: RuntimeDirectory=.  A user without systemd:
         * $XDG_RUNTIME_DIR/torrentd (torrentctl looks there too).
         * Otherwise /run/torrentd. */
        dir = env_dir("RUNTIME_DIRECTORY");
        if (dir)
            n = asprintf(ret, "%s/%s", dir, sock);
        else if (geteuid() != 0 && (dir = env_dir("XDG_RUNTIME_DIR")))
            n = asprintf(ret, "%s/torrentd/%s", dir, sock);
        else
            n = asprintf(ret, "/run/torrentd/%s", sock);
        free(dir);
        return n < 0 ? -ENOMEM : 0;
    }
    if (strcmp(k->name, "state_dir") == 0 ||
        strcmp(k->name, "download_dir") == 0) {
        dir = env_dir("STATE_DIRECTORY");
        if (!dir) {
            *ret = strdup(k->def);
            return *ret ? 0 : -ENOMEM;
        }
        if (strcmp(k->name, "state_dir") == 0)
            n = asprintf(ret, "%s", dir);
        else
            n = asprintf(ret, "%s/downloads", dir);
        free(dir);
        return n < 0 ? -ENOMEM : 0;
    }
    *ret = strdup(k->def);
    return *ret ? 0 : -ENOMEM;
}

int
config_init(struct config *c)
{
    memset(c, 0, sizeof(*c));
    for (size_t i = 0; i < CONFIG_NKEYS; i++) {
        const struct config_key *k = &config_table[i];
        char *def = NULL;
        struct config_error e;
        int r = default_value(k, &def);
        if (r < 0)
            goto fail;
        r = key_set(c, k, def, &e);
        free(def);
        /* A default that does not parse is a bug in the table; the unit
         * test checks every default. */
        if (r < 0)
            goto fail;
    }
    return 0;
fail:
    config_release(c);
    return -ENOMEM;
}

void
config_release(struct config *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < CONFIG_NKEYS; i++) {
        const struct config_key *k = &config_table[i];
        if (key_is_string(k)) {
            char **f = field_str(c, k);
            free(*f);
            *f = NULL;
        }
    }
}

int
config_copy_key(struct config *dst, const struct config *src,
                const struct config_key *key)
{
    if (key_is_string(key)) {
        char *s = strdup(field_cstr(src, key));
        if (!s)
            return -ENOMEM;
        char **f = field_str(dst, key);
        free(*f);
        *f = s;
        return 0;
    }
    /* A scalar: copy its bytes.  The field's size follows from its type. */
    size_t size = key->type == CONFIG_BOOL ? sizeof(bool)
                  : key->type == CONFIG_UINT || key->type == CONFIG_DECIMAL
                      ? sizeof(uint64_t)
                      : sizeof(int);
    memcpy((char *)dst + key->offset, (const char *)src + key->offset, size);
    return 0;
}

int
config_copy(struct config *dst, const struct config *src)
{
    struct config tmp;
    memset(&tmp, 0, sizeof(tmp));
    for (size_t i = 0; i < CONFIG_NKEYS; i++) {
        int r = config_copy_key(&tmp, src, &config_table[i]);
        if (r < 0) {
            config_release(&tmp);
            return r;
        }
    }
    *dst = tmp;
    return 0;
}

bool
config_key_equal(const struct config *a, const struct config *b,
                 const struct config_key *key)
{
    if (key_is_string(key))
        return strcmp(field_cstr(a, key), field_cstr(b, key)) == 0;
    size_t size = key->type == CONFIG_BOOL ? sizeof(bool)
                  : key->type == CONFIG_UINT || key->type == CONFIG_DECIMAL
                      ? sizeof(uint64_t)
                      : sizeof(int);
    return memcmp((const char *)a + key->offset, (const char *)b + key->offset,
                  size) == 0;
}

int
config_get(const struct config *c, const char *key, struct buf *out)
{
    const struct config_key *k = config_key_find(key);
    if (!k)
        return -ENOENT;
    const char *base = (const char *)c + k->offset;
    switch (k->type) {
    case CONFIG_STRING:
    case CONFIG_PATH:
    case CONFIG_ADDR:
    case CONFIG_ADDRLIST:
        return buf_puts(out, field_cstr(c, k));
    case CONFIG_BOOL: {
        bool b;
        memcpy(&b, base, sizeof(b));
        return buf_puts(out, b ? "on" : "off");
    }
    case CONFIG_UINT: {
        uint64_t n;
        memcpy(&n, base, sizeof(n));
        return buf_printf(out, "%" PRIu64, n);
    }
    case CONFIG_DECIMAL: {
        uint64_t n;
        memcpy(&n, base, sizeof(n));
        /* The shortest form: "2", "1.5", "0.05". */
        char frac[5];
        int len = snprintf(frac, sizeof(frac), ".%03u", (unsigned)(n % 1000));
        while (len > 1 && frac[len - 1] == '0')
            frac[--len] = '\0';
        return buf_printf(out, "%" PRIu64 "%s", n / 1000, len > 1 ? frac : "");
    }
    case CONFIG_LOGLEVEL: {
        int l;
        memcpy(&l, base, sizeof(l));
        return buf_puts(out, log_level_to_string((enum log_level)l));
    }
    case CONFIG_ENCRYPTION: {
        int e;
        memcpy(&e, base, sizeof(e));
        return buf_puts(out, e == CONFIG_ENC_REQUIRE ? "require"
                             : e == CONFIG_ENC_OFF   ? "off"
                                                     : "prefer");
    }
    case CONFIG_TYPE_MAX:
        break;
    }
    return -EINVAL;
}

/* ---- the file ------------------------------------------------------------ */

static bool
is_space(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\f' || ch == '\v';
}

static bool
key_char_ok(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_';
}

/* One line, without its '\n'.  Returns 0 (also for blank and comment
 * lines), or an error with reterr->message set. */
static int
parse_line(struct config *c, const char *s, size_t n, unsigned lineno,
           unsigned *seen, struct config_error *reterr)
{
    char q[96];
    const char *end = s + n;

    while (s < end && is_space(*s))
        s++;
    while (end > s && is_space(end[-1]))
        end--;
    if (s == end || *s == '#')
        return 0;

    const char *eq = memchr(s, '=', (size_t)(end - s));
    if (!eq) {
        error_set(reterr, "expected 'key = value', got '%s'",
                  quote(q, sizeof(q), s, (size_t)(end - s)));
        return -EINVAL;
    }
    const char *ke = eq;
    while (ke > s && is_space(ke[-1]))
        ke--;
    size_t kl = (size_t)(ke - s);
    if (kl == 0) {
        error_set(reterr, "missing key before '='");
        return -EINVAL;
    }
    for (size_t i = 0; i < kl; i++)
        if (!key_char_ok(s[i]) || kl > CONFIG_KEY_MAX) {
            error_set(reterr,
                      "bad key '%s' (keys are lowercase letters, "
                      "digits and '_')",
                      quote(q, sizeof(q), s, kl));
            return -EINVAL;
        }
    char key[CONFIG_KEY_MAX + 1];
    memcpy(key, s, kl);
    key[kl] = '\0';
    const struct config_key *k = config_key_find(key);
    if (!k) {
        error_set(reterr, "unknown key '%s'", key);
        return -ENOENT;
    }
    size_t ki = (size_t)(k - config_table);
    if (seen[ki]) {
        error_set(reterr, "%s is already set on line %u", key, seen[ki]);
        return -EINVAL;
    }
    seen[ki] = lineno;

    /* The value: after '=', up to a '#' that follows whitespace. */
    const char *v = eq + 1;
    while (v < end && is_space(*v))
        v++;
    const char *ve = v;
    while (ve < end) {
        if (*ve == '#' && (ve == v || is_space(ve[-1])))
            break;
        ve++;
    }
    while (ve > v && is_space(ve[-1]))
        ve--;
    size_t vl = (size_t)(ve - v);
    if (vl > CONFIG_VALUE_MAX) {
        error_set(reterr, "value of %s too long (at most %u bytes)", key,
                  CONFIG_VALUE_MAX);
        return -EINVAL;
    }
    char *value = buf_memdup0(v, vl);
    if (!value) {
        error_set(reterr, "out of memory");
        return -ENOMEM;
    }
    int r = key_set(c, k, value, reterr);
    free(value);
    return r;
}

int
config_parse_text(struct config *c, const char *text, size_t len,
                  const char *file, struct config_error *reterr)
{
    unsigned seen[CONFIG_NKEYS];
    unsigned lineno = 0;
    size_t pos = 0;
    int r = 0;

    memset(seen, 0, sizeof(seen));
    if (len > CONFIG_FILE_MAX) {
        error_set(reterr, "file too large (at most %u bytes)", CONFIG_FILE_MAX);
        r = -EFBIG;
        goto fail;
    }
    /* A UTF-8 byte order mark, as some editors write it. */
    if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0)
        pos = 3;
    while (pos < len) {
        const char *s = text + pos;
        const char *nl = memchr(s, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - s) : len - pos;
        lineno++;
        if (memchr(s, '\0', n)) {
            error_set(reterr, "NUL byte in line");
            r = -EINVAL;
        } else {
            r = parse_line(c, s, n, lineno, seen, reterr);
        }
        if (r < 0)
            goto fail;
        pos += n + (nl ? 1 : 0);
    }
    return 0;
fail:
    if (reterr) {
        snprintf(reterr->file, sizeof(reterr->file), "%s", file ? file : "");
        reterr->line = lineno;
    }
    return r;
}

int
config_load_file(struct config *c, const char *path,
                 struct config_error *reterr)
{
    struct buf text;
    int r = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        r = -errno;
        goto fail_msg;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        r = -errno;
        goto fail_fd;
    }
    if (S_ISDIR(st.st_mode)) {
        r = -EISDIR;
        goto fail_fd;
    }
    buf_init(&text, CONFIG_FILE_MAX + 1);
    for (;;) {
        size_t room = text.cap - text.len;
        if (room == 0) {
            r = -EFBIG;
            goto fail_buf;
        }
        r = buf_reserve(&text, room < 65536 ? room : 65536);
        if (r < 0)
            goto fail_buf;
        ssize_t got = read(fd, text.data + text.len, text.size - 1 - text.len);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            r = -errno;
            goto fail_buf;
        }
        if (got == 0)
            break;
        text.len += (size_t)got;
        text.data[text.len] = '\0';
    }
    if (text.len > CONFIG_FILE_MAX) {
        r = -EFBIG;
        goto fail_buf;
    }
    (void)close(fd);
    r = config_parse_text(c, text.data ? text.data : "", text.len, path,
                          reterr);
    buf_release(&text);
    return r;

fail_buf:
    buf_release(&text);
fail_fd:
    (void)close(fd);
fail_msg:
    if (reterr) {
        if (r == -EFBIG)
            snprintf(reterr->message, sizeof(reterr->message),
                     "file too large (at most %u bytes)", CONFIG_FILE_MAX);
        else
            snprintf(reterr->message, sizeof(reterr->message),
                     "cannot read: %s", strerror(-r));
        snprintf(reterr->file, sizeof(reterr->file), "%s", path);
        reterr->line = 0;
    }
    return r;
}

int
config_set_arg(struct config *c, const char *arg, struct config_error *reterr)
{
    char q[96];
    const char *eq = strchr(arg, '=');
    if (!eq || eq == arg) {
        error_set(reterr, "expected KEY=VALUE, got '%s'",
                  quote(q, sizeof(q), arg, strlen(arg)));
        return -EINVAL;
    }
    size_t kl = (size_t)(eq - arg);
    while (kl > 0 && is_space(arg[kl - 1]))
        kl--;
    if (kl == 0 || kl > CONFIG_KEY_MAX) {
        error_set(reterr, "expected KEY=VALUE, got '%s'",
                  quote(q, sizeof(q), arg, strlen(arg)));
        return -EINVAL;
    }
    char key[CONFIG_KEY_MAX + 1];
    memcpy(key, arg, kl);
    key[kl] = '\0';
    const char *v = eq + 1;
    while (is_space(*v))
        v++;
    size_t vl = strlen(v);
    while (vl > 0 && is_space(v[vl - 1]))
        vl--;
    char *value = strndup(v, vl);
    if (!value) {
        error_set(reterr, "out of memory");
        return -ENOMEM;
    }
    int r = config_set(c, key, value, reterr);
    free(value);
    return r;
}

int
config_validate(const struct config *c, struct config_error *reterr)
{
    static const char *const required[] = {"state_dir", "download_dir",
                                           "control_socket"};
    struct sockaddr_un sun;

    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
        const struct config_key *k = config_key_find(required[i]);
        if (*field_cstr(c, k) == '\0') {
            error_set(reterr, "%s must not be empty", k->name);
            return -EINVAL;
        }
    }
    if (strlen(c->control_socket) >= sizeof(sun.sun_path)) {
        error_set(reterr,
                  "control_socket is too long for a socket path "
                  "(at most %zu bytes)",
                  sizeof(sun.sun_path) - 1);
        return -EINVAL;
    }
    if (c->status_socket && *c->status_socket) {
        if (strlen(c->status_socket) >= sizeof(sun.sun_path)) {
            error_set(reterr,
                      "status_socket is too long for a socket path "
                      "(at most %zu bytes)",
                      sizeof(sun.sun_path) - 1);
            return -EINVAL;
        }
        if (strcmp(c->status_socket, c->control_socket) == 0) {
            error_set(reterr, "control_socket and status_socket must "
                              "differ");
            return -EINVAL;
        }
    }
    return 0;
}
