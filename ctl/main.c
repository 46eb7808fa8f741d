/* torrentctl — entry point: global options and the command table.
 *
 * Like OpenSMTPD's smtpctl, every command is one row of cmd_table: its
 * name, its handler, its usage and a help line.  Global options come before
 * the command name; each handler parses its own options.
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl/client.h"
#include "ctl/ctl.h"

static const struct ctl_cmd cmd_table[] = {
    /* The daemon's torrents (torrents.c). */
    { "add", ctl_cmd_add, "FILE.torrent|MAGNET|- [--dir DIR] [--paused]",
      "add a torrent to the daemon" },
    { "list", ctl_cmd_list, "[--json [--fields FIELD,...]]",
      "list the torrents" },
    { "info", ctl_cmd_info, "ID", "show everything about one torrent" },
    { "start", ctl_cmd_start, "ID|all", "start (resume) torrents" },
    { "stop", ctl_cmd_stop, "ID|all", "stop (pause) torrents" },
    { "remove", ctl_cmd_remove, "ID [--delete-data]",
      "remove a torrent (and its data with --delete-data)" },
    { "verify", ctl_cmd_verify, "ID", "check a torrent's data again" },
    { "move", ctl_cmd_move, "ID DIR [--no-move]",
      "move a torrent's data to DIR (--no-move: it is there already)" },
    { "files", ctl_cmd_files, "ID", "list a torrent's files" },
    { "peers", ctl_cmd_peers, "ID", "list a torrent's peers" },
    { "trackers", ctl_cmd_trackers, "ID", "list a torrent's trackers" },
    { "set", ctl_cmd_set, "ID KEY=VALUE...", "change a torrent's settings" },
    /* The daemon itself (session_cmds.c, watch.c). */
    { "stats", ctl_cmd_stats, "", "show the daemon's totals" },
    { "config", ctl_cmd_config,
      "get [KEY] | set KEY=VALUE... | reset KEY...",
      "show or change the daemon's run-time settings" },
    { "watch", ctl_cmd_watch,
      "[--since SEQ] [--count N] [--type TYPE]... [--progress]",
      "print the daemon's events as they happen" },
    { "wait", ctl_cmd_wait,
      "ID... [--for complete|seeding|metadata|removed] [--timeout S]",
      "wait until torrents reach a state" },
    { "shutdown", ctl_cmd_shutdown, "[--wait]", "stop the daemon" },
    { "dht", ctl_cmd_dht, "[get-peers INFOHASH] [--json]",
      "show the daemon's DHT node, or look up peers in the DHT" },
    /* .torrent files, without the daemon (create.c, show.c). */
    { "create", ctl_cmd_create,
      "PATH [-o OUT.torrent] [-t URL]... [-w URL]... [--private]\n"
      "       [--comment TEXT] [--piece-size N] [-j N] [--force]",
      "make a .torrent file from a file or a directory" },
    { "show", ctl_cmd_show,
      "FILE.torrent|MAGNET [--json]",
      "print what a .torrent file or a magnet URI describes" },
};

#define CMD_COUNT (sizeof(cmd_table) / sizeof(cmd_table[0]))

static const char progname[] = "torrentctl";

void
ctl_err(const char *fmt, ...)
{
    va_list ap;

    (void)fflush(stdout);
    fprintf(stderr, "%s: ", progname);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

int
ctl_usage_error(const struct ctl_ctx *ctx, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "%s: ", progname);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    if (ctx && ctx->cmd)
        fprintf(stderr, "usage: %s %s %s\n", progname, ctx->cmd->name,
                ctx->cmd->usage);
    return CTL_EXIT_USAGE;
}

int
ctl_option_error(const struct ctl_ctx *ctx, int c, char **argv)
{
    const char *arg = optind > 0 ? argv[optind - 1] : "?";

    if (c == ':')
        return ctl_usage_error(ctx, "option '%s' needs an argument", arg);
    if (optopt > 0 && optopt < 128 && optopt != '?')
        return ctl_usage_error(ctx, "unknown option '-%c'", optopt);
    return ctl_usage_error(ctx, "unknown option '%s'", arg);
}

int
ctl_cmd_help(const struct ctl_ctx *ctx)
{
    printf("usage: %s %s %s\n\n%s\n", progname, ctx->cmd->name,
           ctx->cmd->usage, ctx->cmd->help);
    return CTL_EXIT_OK;
}

static void
usage(FILE *fp)
{
    fprintf(fp,
            "usage: %s [--socket PATH] [--json] COMMAND [ARGS]...\n"
            "       %s --help | --version\n"
            "\n"
            "Global options:\n"
            "  -s, --socket PATH  the daemon's control socket (default:\n"
            "                     $TORRENTD_SOCKET, else %s,\n"
            "                     else $XDG_RUNTIME_DIR/%s)\n"
            "      --json         print one JSON object for scripts\n"
            "  -h, --help         show this help\n"
            "  -V, --version      show the version\n"
            "\n"
            "Commands:\n",
            progname, progname, CTL_DEFAULT_SOCKET, CTL_XDG_SOCKET);
    for (size_t i = 0; i < CMD_COUNT; i++)
        fprintf(fp, "  %-9s %s\n", cmd_table[i].name, cmd_table[i].help);
    fprintf(fp, "\n'%s COMMAND --help' shows a command's options; "
            "see torrentctl(1).\n", progname);
}

static const struct ctl_cmd *
cmd_find(const char *name)
{
    for (size_t i = 0; i < CMD_COUNT; i++)
        if (strcmp(cmd_table[i].name, name) == 0)
            return &cmd_table[i];
    return NULL;
}

int
main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "socket", required_argument, NULL, 's' },
        { "json", no_argument, NULL, 'J' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 }
    };
    struct ctl_ctx ctx = {
        .progname = progname,
        .socket_path = NULL,
        .json = false,
    };
    int c, rc;

    /* '+': stop at the command name; its options are its own. */
    while ((c = getopt_long(argc, argv, "+s:hV", opts, NULL)) != -1) {
        switch (c) {
        case 's':
            ctx.socket_path = optarg;
            break;
        case 'J':
            ctx.json = true;
            break;
        case 'h':
            usage(stdout);
            return CTL_EXIT_OK;
        case 'V':
            printf("%s %s\n", progname, TD_VERSION);
            return CTL_EXIT_OK;
        default:
            fprintf(stderr, "Try '%s --help'.\n", progname);
            return CTL_EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return CTL_EXIT_USAGE;
    }

    if (strcmp(argv[optind], "help") == 0) {
        if (optind + 1 >= argc) {
            usage(stdout);
            return CTL_EXIT_OK;
        }
        ctx.cmd = cmd_find(argv[optind + 1]);
        if (!ctx.cmd) {
            ctl_err("unknown command '%s'; see '%s --help'",
                    argv[optind + 1], progname);
            return CTL_EXIT_USAGE;
        }
        return ctl_cmd_help(&ctx);
    }
    ctx.cmd = cmd_find(argv[optind]);
    if (!ctx.cmd) {
        ctl_err("unknown command '%s'; see '%s --help'", argv[optind],
                progname);
        return CTL_EXIT_USAGE;
    }

    argc -= optind;
    argv += optind;
    optind = 0; /* glibc: a full re-initialisation for the handler */
    rc = ctx.cmd->handler(&ctx, argc, argv);

    errno = 0;
    if (fflush(stdout) != 0 || ferror(stdout)) {
        if (errno != EPIPE)
            ctl_err("cannot write to standard output: %s",
                    strerror(errno ? errno : EIO));
        if (rc == CTL_EXIT_OK)
            rc = CTL_EXIT_FAILURE;
    }
    return rc;
}
