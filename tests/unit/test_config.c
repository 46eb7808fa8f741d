/* Unit tests for daemon/config: the key table, every type, every error
 * with its file and line, --set, defaults, copy and equality, and a
 * deterministic bit-flip loop over a valid file. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/buf.h"
#include "common/log.h"
#include "daemon/config.h"

/* The environment changes some defaults (systemd's directories, a user's
 * runtime directory): the tests run without it. */
static int
setup_env(void **state)
{
    (void)state;
    unsetenv("STATE_DIRECTORY");
    unsetenv("RUNTIME_DIRECTORY");
    unsetenv("XDG_RUNTIME_DIR");
    return 0;
}

static struct config
fresh(void)
{
    struct config c;
    assert_int_equal(config_init(&c), 0);
    return c;
}

/* The value of key as config_get() gives it. */
static char *
get(const struct config *c, const char *key)
{
    static char out[8192];
    struct buf b;
    buf_init(&b, sizeof(out) - 1);
    assert_int_equal(config_get(c, key, &b), 0);
    snprintf(out, sizeof(out), "%s", b.data ? b.data : "");
    buf_release(&b);
    return out;
}

static void
test_table(void **state)
{
    (void)state;
    size_t n;
    const struct config_key *k = config_keys(&n);
    static const char *const required[] = {"state_dir",
                                           "download_dir",
                                           "control_socket",
                                           "status_socket",
                                           "listen",
                                           "dht",
                                           "dht_bootstrap",
                                           "max_peers",
                                           "max_peers_per_torrent",
                                           "download_rate_limit",
                                           "upload_rate_limit",
                                           "watch_dir",
                                           "on_complete",
                                           "log_level",
                                           "max_active_downloads",
                                           "watch_interval",
                                           "on_complete_timeout"};
    assert_true(n >= sizeof(required) / sizeof(required[0]));
    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
        const struct config_key *f = config_key_find(required[i]);
        assert_non_null(f);
        assert_string_equal(f->name, required[i]);
    }
    for (size_t i = 0; i < n; i++) {
        assert_ptr_equal(config_key_find(k[i].name), &k[i]);
        assert_true(k[i].type < CONFIG_TYPE_MAX);
        assert_non_null(k[i].help);
        assert_true(k[i].offset < sizeof(struct config));
        if (k[i].type == CONFIG_UINT)
            assert_true(k[i].min <= k[i].max);
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(k[i].name, k[j].name);
    }
    assert_null(config_key_find("nope"));
    assert_null(config_key_find(""));
    assert_null(config_key_find(NULL));
    assert_int_equal(config_key_find("state_dir")->apply, CONFIG_RESTART);
    assert_int_equal(config_key_find("max_peers")->apply, CONFIG_LIVE);
}

static void
test_defaults(void **state)
{
    (void)state;
    struct config c = fresh();
    assert_string_equal(c.state_dir, "/var/lib/torrentd");
    assert_string_equal(c.download_dir, "/var/lib/torrentd/downloads");
    assert_string_equal(c.control_socket, "/run/torrentd/control.sock");
    assert_string_equal(c.status_socket, "/run/torrentd/status.sock");
    assert_string_equal(c.listen, "0.0.0.0:6881");
    assert_true(c.dht);
    /* Never a public router by default: the shipped file lists them. */
    assert_string_equal(c.dht_bootstrap, "");
    assert_false(c.lsd); /* multicast on the LAN: only when asked */
    assert_int_equal(c.max_peers, 200);
    assert_int_equal(c.max_peers_per_torrent, 50);
    assert_int_equal(c.max_active_downloads, 0);
    assert_int_equal(c.download_rate_limit, 0);
    assert_int_equal(c.upload_rate_limit, 0);
    assert_string_equal(c.watch_dir, "");
    assert_int_equal(c.watch_interval, 5);
    assert_string_equal(c.on_complete, "");
    assert_int_equal(c.on_complete_timeout, 60);
    assert_int_equal(c.log_level, LOG_LEVEL_INFO);

    /* Every default reads back as the table says, and is valid. */
    size_t n;
    const struct config_key *k = config_keys(&n);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(get(&c, k[i].name), k[i].def);
    struct config_error e;
    assert_int_equal(config_validate(&c, &e), 0);
    config_release(&c);
    config_release(&c); /* twice is fine */
}

static void
test_defaults_env(void **state)
{
    (void)state;
    setenv("STATE_DIRECTORY", "/var/lib/td2:/other", 1);
    setenv("RUNTIME_DIRECTORY", "/run/td2", 1);
    struct config c = fresh();
    assert_string_equal(c.state_dir, "/var/lib/td2");
    assert_string_equal(c.download_dir, "/var/lib/td2/downloads");
    assert_string_equal(c.control_socket, "/run/td2/control.sock");
    assert_string_equal(c.status_socket, "/run/td2/status.sock");
    config_release(&c);
    unsetenv("STATE_DIRECTORY");
    unsetenv("RUNTIME_DIRECTORY");
    if (geteuid() != 0) {
        setenv("XDG_RUNTIME_DIR", "/run/user/1000", 1);
        c = fresh();
        assert_string_equal(c.control_socket,
                            "/run/user/1000/torrentd/control.sock");
        config_release(&c);
        unsetenv("XDG_RUNTIME_DIR");
    }
}

/* A table of values: key, text, 0 or the error, and the value that
 * config_get() gives back afterwards (NULL: the text itself). */
static const struct {
    const char *key, *value;
    int err;
    const char *back;
    const char *why; /* a word the error message must contain */
} values[] = {
    /* CONFIG_PATH */
    {"state_dir", "/srv/td", 0, NULL, NULL},
    {"state_dir", "relative/dir", -EINVAL, NULL, "absolute"},
    {"state_dir", "/a\x01b", -EINVAL, NULL, "control character"},
    {"watch_dir", "", 0, NULL, NULL},
    {"on_complete", "/usr/local/bin/done hook", 0, NULL, NULL},
    {"on_complete", "done.sh", -EINVAL, NULL, "absolute"},
    /* CONFIG_BOOL */
    {"dht", "on", 0, "on", NULL},
    {"dht", "off", 0, "off", NULL},
    {"dht", "yes", 0, "on", NULL},
    {"dht", "No", 0, "off", NULL},
    {"dht", "TRUE", 0, "on", NULL},
    {"dht", "false", 0, "off", NULL},
    {"dht", "1", 0, "on", NULL},
    {"dht", "0", 0, "off", NULL},
    {"dht", "", -EINVAL, NULL, "on or off"},
    {"dht", "enabled", -EINVAL, NULL, "on or off"},
    /* CONFIG_UINT */
    {"max_peers", "1", 0, NULL, NULL},
    {"max_peers", "10000", 0, NULL, NULL},
    {"max_peers", "0", -EINVAL, NULL, "between 1 and 10000"},
    {"max_peers", "10001", -EINVAL, NULL, "between 1 and 10000"},
    {"max_peers", "", -EINVAL, NULL, "not a number"},
    {"max_peers", "-1", -EINVAL, NULL, "not a number"},
    {"max_peers", "12x", -EINVAL, NULL, "not a number"},
    {"max_peers", "1 2", -EINVAL, NULL, "not a number"},
    {"max_peers", "0x10", -EINVAL, NULL, "not a number"},
    {"download_rate_limit", "0", 0, NULL, NULL},
    {"download_rate_limit", "100k", 0, "102400", NULL},
    {"download_rate_limit", "100K", 0, "102400", NULL},
    {"download_rate_limit", "2M", 0, "2097152", NULL},
    {"upload_rate_limit", "1G", 0, "1073741824", NULL},
    {"upload_rate_limit", "1KB", -EINVAL, NULL, "not a number"},
    {"upload_rate_limit", "99999999999999999999", -EINVAL, NULL, "too large"},
    {"upload_rate_limit", "18446744073709551615G", -EINVAL, NULL, "too large"},
    {"upload_rate_limit", "2000G", -EINVAL, NULL, "between"},
    {"watch_interval", "0", -EINVAL, NULL, "between 1 and 3600"},
    /* CONFIG_ADDR */
    {"listen", "127.0.0.1:6881", 0, NULL, NULL},
    {"listen", "127.0.0.1:0", 0, NULL, NULL},
    {"listen", "[::1]:6881", 0, NULL, NULL},
    {"listen", "[::]:51413", 0, NULL, NULL},
    {"listen", "localhost:6881", 0, NULL, NULL},
    {"listen", "127.0.0.1", -EINVAL, NULL, "port"},
    {"listen", "127.0.0.1:", -EINVAL, NULL, "port"},
    {"listen", "127.0.0.1:65536", -EINVAL, NULL, "between 0 and 65535"},
    {"listen", "127.0.0.1:99999999999", -EINVAL, NULL, "port"},
    {"listen", "127.0.0.1:6a", -EINVAL, NULL, "port"},
    {"listen", "::1:6881", -EINVAL, NULL, "brackets"},
    {"listen", "[::1]6881", -EINVAL, NULL, "port"},
    {"listen", "[::1", -EINVAL, NULL, "IPv6"},
    {"listen", "[zz::1]:1", -EINVAL, NULL, "IPv6"},
    {"listen", "300.1.1.1:1", -EINVAL, NULL, "IPv4"},
    {"listen", ":6881", -EINVAL, NULL, "host"},
    {"listen", "bad host:1", -EINVAL, NULL, "host"},
    {"listen", "-x:1", -EINVAL, NULL, "host"},
    {"listen", "", -EINVAL, NULL, "empty"},
    /* CONFIG_ADDRLIST */
    {"dht_bootstrap", "", 0, NULL, NULL},
    {"dht_bootstrap", "127.0.0.1:6881", 0, NULL, NULL},
    {"dht_bootstrap", "127.0.0.1:6881, [::1]:6882 ,localhost:7", 0,
     "127.0.0.1:6881,[::1]:6882,localhost:7", NULL},
    {"dht_bootstrap", "127.0.0.1:0", -EINVAL, NULL, "between 1 and 65535"},
    {"dht_bootstrap", "127.0.0.1:1,", -EINVAL, NULL, "empty entry"},
    {"dht_bootstrap", ",127.0.0.1:1", -EINVAL, NULL, "empty entry"},
    {"dht_bootstrap", "a:1,,b:2", -EINVAL, NULL, "empty entry"},
    {"dht_bootstrap", "a:1,b", -EINVAL, NULL, "port"},
    /* CONFIG_LOGLEVEL */
    {"log_level", "err", 0, NULL, NULL},
    {"log_level", "warn", 0, NULL, NULL},
    {"log_level", "notice", 0, NULL, NULL},
    {"log_level", "info", 0, NULL, NULL},
    {"log_level", "debug", 0, NULL, NULL},
    {"log_level", "warning", 0, "warn", NULL},
    {"log_level", "loud", -EINVAL, NULL, "debug"},
    /* CONFIG_DECIMAL (thousandths; printed in the shortest form) */
    {"seed_ratio_limit", "2", 0, "2", NULL},
    {"seed_ratio_limit", "2.0", 0, "2", NULL},
    {"seed_ratio_limit", "1.5", 0, "1.5", NULL},
    {"seed_ratio_limit", "0.125", 0, "0.125", NULL},
    {"seed_ratio_limit", "1.2500", 0, "1.25", NULL},
    {"seed_ratio_limit", "", 0, "0", NULL},
    {"seed_ratio_limit", "0", 0, "0", NULL},
    {"seed_ratio_limit", "1000000", 0, "1000000", NULL},
    {"seed_ratio_limit", "1000000.001", -EINVAL, NULL, "between 0.000 and"},
    {"seed_ratio_limit", "1.2345", -EINVAL, NULL, "three decimal places"},
    {"seed_ratio_limit", "-1", -EINVAL, NULL, "not a number"},
    {"seed_ratio_limit", "1.", -EINVAL, NULL, "not a number"},
    {"seed_ratio_limit", ".5", -EINVAL, NULL, "not a number"},
    {"seed_ratio_limit", "1e3", -EINVAL, NULL, "not a number"},
    {"seed_ratio_limit", "99999999999999999999", -EINVAL, NULL, "too large"},
    {"seed_idle_limit", "30", 0, "30", NULL},
    {"seed_idle_limit", "0.05", 0, "0.05", NULL},
    {"seed_idle_limit", "525601", -EINVAL, NULL, "between"},
    /* unknown */
    {"no_such_key", "1", -ENOENT, NULL, "unknown key 'no_such_key'"},
};

static void
test_values(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        struct config c = fresh();
        struct config_error e;
        memset(&e, 0x55, sizeof(e));
        int r = config_set(&c, values[i].key, values[i].value, &e);
        if (r != values[i].err)
            fail_msg("%s = '%s': %d, expected %d (%s)", values[i].key,
                     values[i].value, r, values[i].err, r < 0 ? e.message : "");
        if (r == 0) {
            const char *want =
                values[i].back ? values[i].back : values[i].value;
            assert_string_equal(get(&c, values[i].key), want);
        } else {
            assert_string_equal(e.file, "");
            assert_int_equal(e.line, 0);
            if (!strstr(e.message, values[i].why))
                fail_msg("%s = '%s': message '%s' lacks '%s'", values[i].key,
                         values[i].value, e.message, values[i].why);
            if (values[i].err == -EINVAL)
                assert_non_null(strstr(e.message, values[i].key));
        }
        config_release(&c);
    }
}

/* A failed set leaves the old value. */
static void
test_set_keeps_old_on_error(void **state)
{
    (void)state;
    struct config c = fresh();
    struct config_error e;
    assert_int_equal(config_set(&c, "listen", "127.0.0.1:1", &e), 0);
    assert_int_equal(config_set(&c, "listen", "nope", &e), -EINVAL);
    assert_string_equal(c.listen, "127.0.0.1:1");
    assert_int_equal(config_set(&c, "max_peers", "7", &e), 0);
    assert_int_equal(config_set(&c, "max_peers", "x", &e), -EINVAL);
    assert_int_equal(c.max_peers, 7);
    /* reterr may be NULL */
    assert_int_equal(config_set(&c, "max_peers", "x", NULL), -EINVAL);
    assert_int_equal(config_set(&c, "nope", "x", NULL), -ENOENT);
    config_release(&c);
}

static void
test_long_value(void **state)
{
    (void)state;
    struct config c = fresh();
    struct config_error e;
    char *v = malloc(5000);
    v[0] = '/';
    memset(v + 1, 'a', 4998);
    v[4999] = '\0';
    assert_int_equal(config_set(&c, "watch_dir", v, &e), -EINVAL);
    assert_non_null(strstr(e.message, "too long"));
    free(v);
    config_release(&c);
}

static const char good_file[] =
    "# a comment\n"
    "\n"
    "   # an indented comment\n"
    "state_dir = /tmp/td/state\n"
    "download_dir=/tmp/td/dl\n"
    "\tcontrol_socket\t=\t/tmp/td/c.sock   # trailing comment\n"
    "status_socket = /tmp/td/s.sock\r\n"
    "listen = 127.0.0.1:0\n"
    "dht = off\n"
    "dht_bootstrap =\n"
    "max_peers = 30\n"
    "upload_rate_limit = 1M\n"
    "on_complete = /bin/true#not-a-comment\n"
    "log_level = debug"; /* no final newline */

static void
test_parse_good(void **state)
{
    (void)state;
    struct config c = fresh();
    struct config_error e;
    assert_int_equal(
        config_parse_text(&c, good_file, strlen(good_file), "t.conf", &e), 0);
    assert_string_equal(c.state_dir, "/tmp/td/state");
    assert_string_equal(c.download_dir, "/tmp/td/dl");
    assert_string_equal(c.control_socket, "/tmp/td/c.sock");
    assert_string_equal(c.status_socket, "/tmp/td/s.sock");
    assert_string_equal(c.listen, "127.0.0.1:0");
    assert_false(c.dht);
    assert_string_equal(c.dht_bootstrap, "");
    assert_int_equal(c.max_peers, 30);
    assert_int_equal(c.upload_rate_limit, 1048576);
    assert_string_equal(c.on_complete, "/bin/true#not-a-comment");
    assert_int_equal(c.log_level, LOG_LEVEL_DEBUG);
    /* Untouched keys keep their defaults. */
    assert_int_equal(c.max_peers_per_torrent, 50);
    assert_int_equal(config_validate(&c, &e), 0);
    config_release(&c);

    /* A byte order mark is skipped; only at the start. */
    c = fresh();
    const char *bom = "\xef\xbb\xbfmax_peers = 9\n";
    assert_int_equal(config_parse_text(&c, bom, strlen(bom), "b", &e), 0);
    assert_int_equal(c.max_peers, 9);
    const char *bom2 = "dht = on\n\xef\xbb\xbfmax_peers = 9\n";
    assert_int_equal(config_parse_text(&c, bom2, strlen(bom2), "b", &e),
                     -EINVAL);
    assert_int_equal(e.line, 2);
    config_release(&c);

    /* Empty text, and a value emptied by a comment. */
    c = fresh();
    assert_int_equal(config_parse_text(&c, "", 0, "e", &e), 0);
    const char *t = "watch_dir = # none\n";
    assert_int_equal(config_parse_text(&c, t, strlen(t), "e", &e), 0);
    assert_string_equal(c.watch_dir, "");
    config_release(&c);
}

/* Every error of the file parser, with the line it names. */
static const struct {
    const char *text;
    int err;
    unsigned line;
    const char *why;
} bad_files[] = {
    {"max_peers = 1\nbogus = 1\n", -ENOENT, 2, "unknown key 'bogus'"},
    {"\n\n\nmax_peers = many\n", -EINVAL, 4, "bad value 'many' for max_peers"},
    {"dht\n", -EINVAL, 1, "expected 'key = value'"},
    {"# c\n = 3\n", -EINVAL, 2, "missing key"},
    {"Max_Peers = 3\n", -EINVAL, 1, "bad key"},
    {"max peers = 3\n", -EINVAL, 1, "bad key"},
    {"max_peers = 3\nmax_peers = 4\n", -EINVAL, 2, "already set on line 1"},
    {"max_peers = 3\nlisten = x\0y\n", -EINVAL, 2, "NUL"},
    {"state_dir = relative\n", -EINVAL, 1, "absolute"},
    {"dht_bootstrap = 1.2.3.4:5,\n", -EINVAL, 1, "empty entry"},
    {"log_level = chatty", -EINVAL, 1, "log_level"},
};

static void
test_parse_errors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(bad_files) / sizeof(bad_files[0]); i++) {
        struct config c = fresh();
        struct config_error e;
        size_t len = strlen(bad_files[i].text);
        if (strstr(bad_files[i].why, "NUL"))
            len = sizeof("max_peers = 3\nlisten = x\0y\n") - 1;
        int r =
            config_parse_text(&c, bad_files[i].text, len, "/etc/t.conf", &e);
        if (r != bad_files[i].err || e.line != bad_files[i].line ||
            !strstr(e.message, bad_files[i].why))
            fail_msg("case %zu: r=%d line=%u '%s'", i, r, e.line, e.message);
        assert_string_equal(e.file, "/etc/t.conf");
        config_release(&c);
    }
}

/* Stops at the first error: what came before is applied, not after. */
static void
test_parse_stops(void **state)
{
    (void)state;
    struct config c = fresh();
    struct config_error e;
    const char *t = "max_peers = 11\nnope = 1\nmax_peers_per_torrent = 7\n";
    assert_int_equal(config_parse_text(&c, t, strlen(t), "f", &e), -ENOENT);
    assert_int_equal(c.max_peers, 11);
    assert_int_equal(c.max_peers_per_torrent, 50);
    config_release(&c);
}

static void
test_parse_too_large(void **state)
{
    (void)state;
    struct config c = fresh();
    struct config_error e;
    size_t n = (1u << 20) + 1;
    char *t = malloc(n);
    memset(t, '\n', n);
    assert_int_equal(config_parse_text(&c, t, n, "big", &e), -EFBIG);
    assert_non_null(strstr(e.message, "too large"));
    free(t);
    config_release(&c);
}

/* Every prefix of a valid file parses or fails cleanly. */
static void
test_parse_truncated(void **state)
{
    (void)state;
    size_t n = strlen(good_file);
    for (size_t k = 0; k <= n; k++) {
        struct config c = fresh();
        struct config_error e;
        char *t = malloc(k ? k : 1);
        memcpy(t, good_file, k);
        int r = config_parse_text(&c, t, k, "p", &e);
        assert_true(r == 0 || r == -EINVAL || r == -ENOENT);
        if (r < 0)
            assert_true(e.line >= 1);
        free(t);
        config_release(&c);
    }
}

/* Deterministic bit flips (OpenSSH FUZZ_1_BIT_FLIP): never a crash, every
 * error has a line and a message. */
static void
test_parse_bitflip(void **state)
{
    (void)state;
    size_t n = strlen(good_file);
    char *t = malloc(n);
    for (size_t i = 0; i < n * 8; i++) {
        memcpy(t, good_file, n);
        t[i / 8] = (char)(t[i / 8] ^ (1 << (i % 8)));
        struct config c = fresh();
        struct config_error e;
        int r = config_parse_text(&c, t, n, "f", &e);
        if (r < 0) {
            assert_true(e.line >= 1);
            assert_true(e.message[0] != '\0');
        }
        config_release(&c);
    }
    free(t);
}

static void
test_set_arg(void **state)
{
    (void)state;
    struct config c = fresh();
    struct config_error e;
    assert_int_equal(config_set_arg(&c, "max_peers=12", &e), 0);
    assert_int_equal(c.max_peers, 12);
    assert_int_equal(config_set_arg(&c, "max_peers = 13", &e), 0);
    assert_int_equal(c.max_peers, 13);
    assert_int_equal(config_set_arg(&c, "watch_dir=", &e), 0);
    assert_string_equal(c.watch_dir, "");
    /* The value may contain '=' */
    assert_int_equal(config_set_arg(&c, "on_complete=/bin/a=b", &e), 0);
    assert_string_equal(c.on_complete, "/bin/a=b");

    assert_int_equal(config_set_arg(&c, "max_peers", &e), -EINVAL);
    assert_non_null(strstr(e.message, "KEY=VALUE"));
    assert_int_equal(config_set_arg(&c, "=5", &e), -EINVAL);
    assert_non_null(strstr(e.message, "KEY=VALUE"));
    assert_int_equal(config_set_arg(&c, "nope=5", &e), -ENOENT);
    assert_non_null(strstr(e.message, "unknown key 'nope'"));
    assert_int_equal(config_set_arg(&c, "max_peers=lots", &e), -EINVAL);
    assert_non_null(strstr(e.message, "max_peers"));
    assert_int_equal(e.line, 0);
    assert_string_equal(e.file, "");
    assert_int_equal(c.max_peers, 13);
    config_release(&c);
}

/* The layers: the file over the defaults, --set over the file. */
static void
test_precedence(void **state)
{
    (void)state;
    char dir[] = "/tmp/test_config.XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[64];
    snprintf(path, sizeof(path), "%s/t.conf", dir);
    FILE *f = fopen(path, "we");
    assert_non_null(f);
    fputs("max_peers = 40\nupload_rate_limit = 5\n", f);
    fclose(f);

    struct config c = fresh();
    struct config_error e;
    assert_int_equal(config_load_file(&c, path, &e), 0);
    assert_int_equal(config_set_arg(&c, "max_peers=41", &e), 0);
    assert_int_equal(c.max_peers, 41);
    assert_int_equal(c.upload_rate_limit, 5);
    assert_int_equal(c.max_peers_per_torrent, 50);
    config_release(&c);

    /* A bad file names itself and the line. */
    f = fopen(path, "we");
    fputs("# x\nmax_peers = 40\nlisten = 1.2.3.4\n", f);
    fclose(f);
    c = fresh();
    assert_int_equal(config_load_file(&c, path, &e), -EINVAL);
    assert_string_equal(e.file, path);
    assert_int_equal(e.line, 3);
    assert_non_null(strstr(e.message, "listen"));
    config_release(&c);

    /* A missing file, a directory. */
    c = fresh();
    char missing[80];
    snprintf(missing, sizeof(missing), "%s/none.conf", dir);
    assert_int_equal(config_load_file(&c, missing, &e), -ENOENT);
    assert_string_equal(e.file, missing);
    assert_int_equal(e.line, 0);
    assert_non_null(strstr(e.message, "cannot read"));
    assert_int_equal(config_load_file(&c, dir, &e), -EISDIR);

    /* Too large a file. */
    f = fopen(path, "we");
    for (int i = 0; i < (1 << 20) / 16 + 1; i++)
        fputs("# 3456789012345\n", f); /* 16 bytes */
    fclose(f);
    assert_int_equal(config_load_file(&c, path, &e), -EFBIG);
    assert_non_null(strstr(e.message, "too large"));
    config_release(&c);

    unlink(path);
    rmdir(dir);
}

static void
test_copy_equal(void **state)
{
    (void)state;
    struct config a = fresh(), b;
    struct config_error e;
    assert_int_equal(config_set(&a, "listen", "127.0.0.1:9", &e), 0);
    assert_int_equal(config_set(&a, "dht", "off", &e), 0);
    assert_int_equal(config_set(&a, "max_peers", "9", &e), 0);
    assert_int_equal(config_set(&a, "log_level", "err", &e), 0);
    memset(&b, 0, sizeof(b));
    assert_int_equal(config_copy(&b, &a), 0);
    assert_ptr_not_equal(a.listen, b.listen);

    size_t n;
    const struct config_key *k = config_keys(&n);
    for (size_t i = 0; i < n; i++) {
        assert_true(config_key_equal(&a, &b, &k[i]));
        char *va = strdup(get(&a, k[i].name));
        assert_string_equal(va, get(&b, k[i].name));
        free(va);
    }

    /* Change one key of each type in b: only that key differs. */
    static const char *const changes[][2] = {
        {"listen", "127.0.0.1:10"}, {"dht", "on"},
        {"max_peers", "10"},        {"log_level", "debug"},
        {"watch_dir", "/w"},        {"dht_bootstrap", "a:1"},
    };
    for (size_t j = 0; j < sizeof(changes) / sizeof(changes[0]); j++) {
        struct config c;
        memset(&c, 0, sizeof(c));
        assert_int_equal(config_copy(&c, &a), 0);
        assert_int_equal(config_set(&c, changes[j][0], changes[j][1], &e), 0);
        for (size_t i = 0; i < n; i++)
            assert_int_equal(config_key_equal(&a, &c, &k[i]),
                             strcmp(k[i].name, changes[j][0]) != 0);
        /* copy_key brings it back. */
        const struct config_key *ck = config_key_find(changes[j][0]);
        assert_int_equal(config_copy_key(&c, &a, ck), 0);
        assert_true(config_key_equal(&a, &c, ck));
        config_release(&c);
    }
    config_release(&a);
    config_release(&b);

    /* A zeroed config equals one with empty strings. */
    struct config z1, z2;
    memset(&z1, 0, sizeof(z1));
    memset(&z2, 0, sizeof(z2));
    z2.watch_dir = strdup("");
    assert_true(config_key_equal(&z1, &z2, config_key_find("watch_dir")));
    config_release(&z2);
    config_release(&z1);
}

static void
test_get(void **state)
{
    (void)state;
    struct config c = fresh();
    struct buf b;
    buf_init(&b, 4);
    assert_int_equal(config_get(&c, "nope", &b), -ENOENT);
    /* The caller's cap holds. */
    assert_int_equal(config_get(&c, "state_dir", &b), -EMSGSIZE);
    buf_release(&b);
    /* Every value read back sets the same value. */
    size_t n;
    const struct config_key *k = config_keys(&n);
    struct config_error e;
    struct config d = fresh();
    assert_int_equal(config_set(&c, "upload_rate_limit", "3M", &e), 0);
    assert_int_equal(config_set(&c, "dht_bootstrap", "a:1, b:2", &e), 0);
    for (size_t i = 0; i < n; i++) {
        char *v = strdup(get(&c, k[i].name));
        assert_int_equal(config_set(&d, k[i].name, v, &e), 0);
        assert_true(config_key_equal(&c, &d, &k[i]));
        free(v);
    }
    config_release(&c);
    config_release(&d);
}

static void
test_validate(void **state)
{
    (void)state;
    struct config c = fresh();
    struct config_error e;
    assert_int_equal(config_validate(&c, &e), 0);

    assert_int_equal(config_set(&c, "status_socket", c.control_socket, &e), 0);
    assert_int_equal(config_validate(&c, &e), -EINVAL);
    assert_non_null(strstr(e.message, "differ"));

    /* No status socket at all is fine. */
    assert_int_equal(config_set(&c, "status_socket", "", &e), 0);
    assert_int_equal(config_validate(&c, &e), 0);

    char longp[200];
    memset(longp, 'a', sizeof(longp) - 1);
    longp[0] = '/';
    longp[sizeof(longp) - 1] = '\0';
    assert_int_equal(config_set(&c, "control_socket", longp, &e), 0);
    assert_int_equal(config_validate(&c, &e), -EINVAL);
    assert_non_null(strstr(e.message, "too long"));
    assert_int_equal(config_set(&c, "control_socket", "/x.sock", &e), 0);
    assert_int_equal(config_set(&c, "status_socket", longp, &e), 0);
    assert_int_equal(config_validate(&c, &e), -EINVAL);
    assert_non_null(strstr(e.message, "status_socket"));
    assert_int_equal(config_set(&c, "status_socket", "", &e), 0);

    static const char *const required[] = {"state_dir", "download_dir",
                                           "control_socket"};
    for (size_t i = 0; i < 3; i++) {
        struct config d;
        memset(&d, 0, sizeof(d));
        assert_int_equal(config_copy(&d, &c), 0);
        assert_int_equal(config_set(&d, required[i], "", &e), 0);
        assert_int_equal(config_validate(&d, &e), -EINVAL);
        assert_non_null(strstr(e.message, required[i]));
        config_release(&d);
    }
    config_release(&c);
}

static void
test_log_level_names(void **state)
{
    (void)state;
    for (int l = LOG_LEVEL_ERR; l <= LOG_LEVEL_DEBUG; l++)
        assert_int_equal(
            log_level_from_string(log_level_to_string((enum log_level)l)), l);
    assert_int_equal(log_level_from_string("nope"), -EINVAL);
    assert_int_equal(log_level_from_string(NULL), -EINVAL);
    assert_string_equal(log_level_to_string((enum log_level)99), "unknown");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_defaults_env),
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_set_keeps_old_on_error),
        cmocka_unit_test(test_long_value),
        cmocka_unit_test(test_parse_good),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_parse_stops),
        cmocka_unit_test(test_parse_too_large),
        cmocka_unit_test(test_parse_truncated),
        cmocka_unit_test(test_parse_bitflip),
        cmocka_unit_test(test_set_arg),
        cmocka_unit_test(test_precedence),
        cmocka_unit_test(test_copy_equal),
        cmocka_unit_test(test_get),
        cmocka_unit_test(test_validate),
        cmocka_unit_test(test_log_level_names),
    };
    return cmocka_run_group_tests(tests, setup_env, NULL);
}
