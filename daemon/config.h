/* config — torrentd's settings: defaults, the key = value file, --set.
 *
 * Thread: reactor only (and main before the reactor starts).
 *
 * One table describes every key: its name, type, default, bounds and
 * whether a change applies at run time or needs a restart.  Layers, lowest
 * first: built-in defaults < the configuration file < --set KEY=VALUE <
 * run-time settings (session.set, kept in the state directory by the
 * session).  torrentd never rewrites the administrator's file.
 *
 * The file: one "key = value" per line, '#' starts a comment (whole line,
 * or after whitespace), blank lines ignored, values may be empty, no
 * quoting.  Unknown keys and bad values are refused with file, line and
 * reason.  config_parse_text() is the pure parser (fuzzed).
 */
#ifndef TD_DAEMON_CONFIG_H
#define TD_DAEMON_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct buf;

enum config_type {
    CONFIG_STRING,   /* char * (owned), may be "" */
    CONFIG_PATH,     /* char * (owned), absolute or "" */
    CONFIG_BOOL,     /* bool: on/off, yes/no, true/false, 1/0 */
    CONFIG_UINT,     /* uint64_t, bounded by min/max; K/M/G suffixes */
    CONFIG_ADDR,     /* char *: host:port or [v6]:port; "" only for a
                        key whose default is "" (off) */
    CONFIG_ADDRLIST, /* char *: comma-separated host:port, may be "" */
    CONFIG_LOGLEVEL, /* int: enum log_level */
    CONFIG_ENCRYPTION, /* int: enum config_encryption */
    CONFIG_DECIMAL,    /* uint64_t thousandths: "2", "1.5", "0.05" (at most
                          three decimals), "" = 0; bounded by min/max, in
                          thousandths */
    CONFIG_TYPE_MAX
};

enum config_apply {
    CONFIG_LIVE,    /* applied at run time (SIGHUP, session.set) */
    CONFIG_RESTART, /* takes effect at the next start */
};

/* The key "encryption" (peer connections, MSE: daemon/peerconn.h). */
enum config_encryption {
    CONFIG_ENC_OFF = 0,     /* "off": plaintext only, MSE refused */
    CONFIG_ENC_PREFER = 1,  /* "prefer": MSE with RC4 out, plaintext
                             * fallback; both accepted in */
    CONFIG_ENC_REQUIRE = 2, /* "require": RC4 only, both ways */
};

struct config {
    char *state_dir;
    char *download_dir;
    char *control_socket;
    char *status_socket;
    char *listen;
    bool dht;
    char *dht_bootstrap;
    bool lsd;                      /* BEP 14 local service discovery */
    uint64_t max_peers;
    uint64_t max_peers_per_torrent;
    uint64_t max_active_downloads; /* 0 = no limit */
    uint64_t download_rate_limit;  /* bytes/s, 0 = none */
    uint64_t upload_rate_limit;    /* bytes/s, 0 = none */
    uint64_t upload_slots;         /* peers unchoked per torrent */
    int encryption;                /* enum config_encryption */
    char *watch_dir;               /* "" = off */
    uint64_t watch_interval;       /* seconds, the polling fallback */
    char *on_complete;             /* "" = none; a program, no shell */
    uint64_t on_complete_timeout;  /* seconds */
    char *tracker_listen;          /* "" = no built-in tracker */
    uint64_t tracker_interval;     /* seconds between announces */
    char *tracker_allowlist;       /* "" = every info-hash */
    uint64_t tracker_max_peers;    /* peers the tracker keeps, in all */
    bool tracker_dht;              /* unknown swarms looked up in the DHT */
    uint64_t seed_ratio_limit;     /* thousandths of a ratio, 0 = none */
    uint64_t seed_idle_limit;      /* thousandths of a minute, 0 = none */
    int log_level;                 /* enum log_level */
};

struct config_key {
    const char *name;
    enum config_type type;
    enum config_apply apply;
    size_t offset;      /* of the field in struct config */
    const char *def;    /* default, as text */
    uint64_t min, max;  /* CONFIG_UINT */
    const char *help;   /* one line, for torrentd.conf(5) and --help */
};

/* Where a value was refused. */
struct config_error {
    char file[256]; /* "" for --set and session.set */
    unsigned line;  /* 0 when not from a file */
    char message[256];
};

/* All keys, in the order of torrentd.conf(5); *ret_n is their count. */
const struct config_key *config_keys(size_t *ret_n);
const struct config_key *config_key_find(const char *name);

/* Fill c with the defaults.  Returns 0 or -ENOMEM. */
int config_init(struct config *c);
/* Free the strings; accepts a zeroed config. */
void config_release(struct config *c);
/* Deep copy src into a zeroed or released dst. */
int config_copy(struct config *dst, const struct config *src);

/* Set one key from text.  Returns 0, -ENOENT for an unknown key, -EINVAL
 * for a bad value (reterr->message says why), -ENOMEM. */
int config_set(struct config *c, const char *key, const char *value,
               struct config_error *reterr);

/* Parse "KEY=VALUE" (the --set argument) and set it. */
int config_set_arg(struct config *c, const char *arg,
                   struct config_error *reterr);

/* Apply text in the file format; file names it in errors.  Stops at the
 * first error (nothing after it is applied). */
int config_parse_text(struct config *c, const char *text, size_t len,
                      const char *file, struct config_error *reterr);

/* Read and apply a file (at most 1 MiB).  -errno when it cannot be read. */
int config_load_file(struct config *c, const char *path,
                     struct config_error *reterr);

/* Append the value of key as text (the form config_set() takes). */
int config_get(const struct config *c, const char *key, struct buf *out);

/* True when key has the same value in a and b. */
bool config_key_equal(const struct config *a, const struct config *b,
                      const struct config_key *key);

/* Copy one key's value from src to dst. */
int config_copy_key(struct config *dst, const struct config *src,
                    const struct config_key *key);

/* Check relations between keys (e.g. control and status sockets differ).
 * Returns 0 or -EINVAL with reterr->message. */
int config_validate(const struct config *c, struct config_error *reterr);

#endif
