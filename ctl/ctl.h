/* ctl — what torrentctl's commands share: exit codes, the command table's
 * row type, the run-time context, the error helpers, and the formatting
 * helpers of the commands that talk to the daemon.
 *
 * Thread: main only.  (A command may start its own worker threads, as
 * create does for hashing, but these helpers are called from main.)
 *
 * Adding a command: write ctl/<family>.c with a handler
 *     int ctl_cmd_<name>(struct ctl_ctx *ctx, int argc, char **argv);
 * declare it below and add one row to the table in ctl/main.c.  The handler
 * gets argv[0] = the command name and its own arguments after it, parses
 * them with getopt_long (main resets optind; start the optstring with ':'
 * and hand '?' and ':' to ctl_option_error()), and returns an enum
 * ctl_exit.  It reports its own errors with ctl_err(), and usage errors with
 * ctl_usage_error(), which also prints the command's usage line.
 */
#ifndef TD_CTL_CTL_H
#define TD_CTL_CTL_H

#include <stdbool.h>
#include <stdint.h>

struct json_object;

/* Exit status of torrentctl: distinct values that scripts can test, and
 * documented in torrentctl(1), EXIT STATUS.  Keep the two in step. */
enum ctl_exit {
    CTL_EXIT_OK = 0,          /* success */
    CTL_EXIT_FAILURE = 1,     /* a failure was reported: bad input, an
                               * error returned by the daemon, I/O error */
    CTL_EXIT_USAGE = 2,       /* bad command line */
    CTL_EXIT_CONNECT = 3,     /* cannot connect to the daemon's socket */
    CTL_EXIT_PERMISSION = 4,  /* permission denied (socket or request) */
    CTL_EXIT_NOT_FOUND = 5,   /* no such torrent (or other named object) */
    CTL_EXIT_TIMEOUT = 6,     /* a wait or a request timed out */
    CTL_EXIT_MAX
};

/* The system daemon's control socket: the first well-known place that
 * ctl_socket_find() (client.h) looks at after --socket and
 * $TORRENTD_SOCKET; $XDG_RUNTIME_DIR/torrentd/control.sock is the second. */
#define CTL_DEFAULT_SOCKET "/run/torrentd/control.sock"

struct ctl_ctx;
typedef int (*ctl_handler_t)(struct ctl_ctx *ctx, int argc, char **argv);

/* One row of the command table (OpenSMTPD smtpctl's cmd_install). */
struct ctl_cmd {
    const char *name;      /* "create" */
    ctl_handler_t handler;
    const char *usage;     /* the arguments after the name, for usage lines */
    const char *help;      /* one line for `torrentctl --help` */
};

/* What every command may read.  Set up by main() before the handler runs. */
struct ctl_ctx {
    const char *progname;      /* "torrentctl", for messages */
    const struct ctl_cmd *cmd; /* borrowed: the running command's row */
    const char *socket_path;   /* borrowed: --socket PATH, or NULL when not
                                * given (ctl_socket_find() in client.h then
                                * looks at $TORRENTD_SOCKET and the
                                * well-known paths) */
    bool json;                 /* --json: one JSON document on stdout */
};

/* The commands (one file per family). */
int ctl_cmd_create(struct ctl_ctx *ctx, int argc, char **argv);
int ctl_cmd_show(struct ctl_ctx *ctx, int argc, char **argv);

/* The commands that talk to torrentd (client.h has the connection).
 * torrents.c: */
int ctl_cmd_add(struct ctl_ctx *ctx, int argc, char **argv);
int ctl_cmd_list(struct ctl_ctx *ctx, int argc, char **argv);
int ctl_cmd_info(struct ctl_ctx *ctx, int argc, char **argv);
int ctl_cmd_start(struct ctl_ctx *ctx, int argc, char **argv);
int ctl_cmd_stop(struct ctl_ctx *ctx, int argc, char **argv);
int ctl_cmd_remove(struct ctl_ctx *ctx, int argc, char **argv);
int ctl_cmd_verify(struct ctl_ctx *ctx, int argc, char **argv);
int ctl_cmd_move(struct ctl_ctx *ctx, int argc, char **argv);
int ctl_cmd_files(struct ctl_ctx *ctx, int argc, char **argv);
int ctl_cmd_peers(struct ctl_ctx *ctx, int argc, char **argv);
int ctl_cmd_trackers(struct ctl_ctx *ctx, int argc, char **argv);
int ctl_cmd_set(struct ctl_ctx *ctx, int argc, char **argv);

/* session_cmds.c: */
int ctl_cmd_stats(struct ctl_ctx *ctx, int argc, char **argv);
int ctl_cmd_config(struct ctl_ctx *ctx, int argc, char **argv);
int ctl_cmd_shutdown(struct ctl_ctx *ctx, int argc, char **argv);

/* dht.c: */
int ctl_cmd_dht(struct ctl_ctx *ctx, int argc, char **argv);

/* watch.c: */
int ctl_cmd_watch(struct ctl_ctx *ctx, int argc, char **argv);
int ctl_cmd_wait(struct ctl_ctx *ctx, int argc, char **argv);

/* "torrentctl: <message>\n" on stderr. */
void ctl_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The same, followed by the running command's usage line; returns
 * CTL_EXIT_USAGE for the handler to return. */
int ctl_usage_error(const struct ctl_ctx *ctx, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Report what getopt_long() returned for a bad option (c is '?' or ':';
 * the optstring must start with ':' and opterr need not be touched) and
 * return CTL_EXIT_USAGE. */
int ctl_option_error(const struct ctl_ctx *ctx, int c, char **argv);

/* Print the running command's usage and help line on stdout (for
 * `COMMAND --help`); returns CTL_EXIT_OK. */
int ctl_cmd_help(const struct ctl_ctx *ctx);

/* --- Shared by the daemon commands --- */

/* Add each "KEY=VALUE" of args[0..n) to obj as "KEY": VALUE (true,
 * false, null and numbers as JSON, "1M" and the like as bytes, anything
 * else as a string, which the daemon reads as the configuration file
 * would).  Returns CTL_EXIT_OK, or an exit status after printing why
 * (session_cmds.c). */
int ctl_add_settings(struct ctl_ctx *ctx, struct json_object *obj, int n,
                     char **args);

/* --- Formatting (torrents.c) --- */

/* Room for every ctl_fmt_* result, NUL included. */
#define CTL_FMT_LEN 40

/* "1.5 MiB/s", "0 B/s". */
void ctl_fmt_rate(char out[CTL_FMT_LEN], uint64_t bytes_per_s);
/* "45s", "12m05s", "3h20m", "2d04h"; "-" for a negative value (unknown). */
void ctl_fmt_duration(char out[CTL_FMT_LEN], int64_t seconds);
/* A Unix time as local "2026-11-29 13:20:05"; "-" for 0 or less. */
void ctl_fmt_time(char out[CTL_FMT_LEN], int64_t unix_time);
/* "45.2%" for 0.452. */
void ctl_fmt_percent(char out[CTL_FMT_LEN], double fraction);

/* Field accessors that accept a missing member, JSON null or an obj that is
 * not an object: the default is returned then.  A string is borrowed from
 * obj. */
const char *ctl_jstr(struct json_object *obj, const char *key,
                     const char *def);
int64_t ctl_jint(struct json_object *obj, const char *key, int64_t def);
double ctl_jdouble(struct json_object *obj, const char *key, double def);
/* True when key is present and not null. */
bool ctl_jhas(struct json_object *obj, const char *key);

/* The help of the options that every command accepts, for usage output. */
#define CTL_COMMON_OPTS_HELP "  -h, --help    show this help\n" \
                             "      --json    print one JSON object\n"

#endif
