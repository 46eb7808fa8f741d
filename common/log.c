/* log — one line per message, to journald or stderr.
 *
 * The state below is the one exception to "no mutable globals in common/":
 * a process has one log.  The level is atomic so that any thread may read
 * it while the reactor changes it on SIGHUP; the destination and the ident
 * are decided once, by the main thread, before other threads exist (or at
 * the first message, which then happens before them too).
 */
#include "common/log.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <systemd/sd-journal.h>

/* A line longer than this is cut (and marked with "..."). */
#define LOG_LINE_MAX 2048
#define LOG_IDENT_MAX 32

enum log_dest {
    LOG_DEST_UNDECIDED,
    LOG_DEST_JOURNAL,
    LOG_DEST_STDERR,     /* "<N>message": a pipe or a file */
    LOG_DEST_STDERR_TTY, /* "ident: level: message": a person */
};

static _Atomic int log_level_cur = LOG_LEVEL_INFO;
static _Atomic int log_dest = LOG_DEST_UNDECIDED;
static char log_ident[LOG_IDENT_MAX] = "torrentd";

static const char *const level_names[] = {
    [LOG_LEVEL_ERR] = "err",       [LOG_LEVEL_WARN] = "warn",
    [LOG_LEVEL_NOTICE] = "notice", [LOG_LEVEL_INFO] = "info",
    [LOG_LEVEL_DEBUG] = "debug",
};

void
log_set_level(enum log_level level)
{
    if (level < LOG_LEVEL_ERR)
        level = LOG_LEVEL_ERR;
    if (level > LOG_LEVEL_DEBUG)
        level = LOG_LEVEL_DEBUG;
    atomic_store(&log_level_cur, (int)level);
    if (atomic_load(&log_dest) == LOG_DEST_UNDECIDED)
        log_open();
}

enum log_level
log_get_level(void)
{
    return (enum log_level)atomic_load(&log_level_cur);
}

int
log_level_from_string(const char *s)
{
    if (!s)
        return -EINVAL;
    for (int l = LOG_LEVEL_ERR; l <= LOG_LEVEL_DEBUG; l++)
        if (strcmp(s, level_names[l]) == 0)
            return l;
    /* The syslog spellings people type out of habit. */
    if (strcmp(s, "error") == 0)
        return LOG_LEVEL_ERR;
    if (strcmp(s, "warning") == 0)
        return LOG_LEVEL_WARN;
    return -EINVAL;
}

const char *
log_level_to_string(enum log_level level)
{
    if (level < LOG_LEVEL_ERR || level > LOG_LEVEL_DEBUG)
        return "unknown";
    return level_names[level];
}

void
log_set_ident(const char *ident)
{
    snprintf(log_ident, sizeof(log_ident), "%s", ident ? ident : "");
}

/* True when $JOURNAL_STREAM ("DEV:INO") names the file on fd 2. */
static bool
stderr_is_journal(void)
{
    const char *e = getenv("JOURNAL_STREAM");
    if (!e || !*e)
        return false;
    unsigned long long dev, ino;
    char end;
    if (sscanf(e, "%llu:%llu%c", &dev, &ino, &end) != 2)
        return false;
    struct stat st;
    if (fstat(STDERR_FILENO, &st) < 0)
        return false;
    return (unsigned long long)st.st_dev == dev &&
           (unsigned long long)st.st_ino == ino;
}

void
log_open(void)
{
    int dest;
    if (stderr_is_journal())
        dest = LOG_DEST_JOURNAL;
    else if (isatty(STDERR_FILENO))
        dest = LOG_DEST_STDERR_TTY;
    else
        dest = LOG_DEST_STDERR;
    atomic_store(&log_dest, dest);
}

static enum log_dest
dest_get(void)
{
    int d = atomic_load(&log_dest);
    if (d == LOG_DEST_UNDECIDED) {
        log_open();
        d = atomic_load(&log_dest);
    }
    return (enum log_dest)d;
}

/* Format into buf (size LOG_LINE_MAX), mark a cut line, and drop the
 * newlines a caller may have put in (one message, one line). */
static void format_line(char *buf, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

static void
format_line(char *buf, const char *fmt, va_list ap)
{
    int n = vsnprintf(buf, LOG_LINE_MAX, fmt, ap);
    if (n < 0) {
        snprintf(buf, LOG_LINE_MAX, "(bad log format '%s')", fmt);
        return;
    }
    if ((size_t)n >= LOG_LINE_MAX)
        memcpy(buf + LOG_LINE_MAX - 4, "...", 4);
    for (char *p = buf; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
}

static void
write_stderr(enum log_dest dest, enum log_level level, const char *field,
             const char *value, const char *msg)
{
    char line[LOG_LINE_MAX + LOG_IDENT_MAX + 128];
    char tag[96] = "";
    if (field && value)
        snprintf(tag, sizeof(tag), "[%.80s] ", value);
    int n;
    if (dest == LOG_DEST_STDERR_TTY)
        n = snprintf(line, sizeof(line), "%s: %s: %s%s\n", log_ident,
                     log_level_to_string(level), tag, msg);
    else
        n = snprintf(line, sizeof(line), "<%d>%s%s\n", (int)level, tag, msg);
    if (n < 0)
        return;
    size_t len = (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1;
    if ((size_t)n >= sizeof(line))
        line[len - 1] = '\n';
    /* One write(): lines from different threads never interleave.  A
     * short write or an error cannot be reported anywhere. */
    ssize_t w;
    do
        w = write(STDERR_FILENO, line, len);
    while (w < 0 && errno == EINTR);
}

static void
emit(enum log_level level, const char *field, const char *value,
     const char *msg)
{
    enum log_dest dest = dest_get();
    if (dest == LOG_DEST_JOURNAL) {
        int r;
        if (field && value)
            r = sd_journal_send("MESSAGE=%s", msg, "PRIORITY=%d", (int)level,
                                "SYSLOG_IDENTIFIER=%s", log_ident, "%s=%s",
                                field, value, NULL);
        else
            r = sd_journal_send("MESSAGE=%s", msg, "PRIORITY=%d", (int)level,
                                "SYSLOG_IDENTIFIER=%s", log_ident, NULL);
        if (r >= 0)
            return;
        /* journald is gone: stderr still reaches the journal's stream. */
        dest = LOG_DEST_STDERR;
    }
    write_stderr(dest, level, field, value, msg);
}

static bool
enabled(enum log_level level)
{
    return (int)level <= atomic_load(&log_level_cur);
}

void
log_vmsg(enum log_level level, const char *fmt, va_list ap)
{
    if (!enabled(level))
        return;
    char msg[LOG_LINE_MAX];
    format_line(msg, fmt, ap);
    emit(level, NULL, NULL, msg);
}

void
log_msg(enum log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vmsg(level, fmt, ap);
    va_end(ap);
}

/* A journal field name: A-Z, 0-9 and '_', not starting with '_' or a
 * digit.  Anything else is not sent as a field (it would be refused). */
static bool
field_name_ok(const char *f)
{
    if (!f || !*f || *f == '_' || (*f >= '0' && *f <= '9') || strlen(f) > 64)
        return false;
    for (; *f; f++)
        if (!((*f >= 'A' && *f <= 'Z') || (*f >= '0' && *f <= '9') ||
              *f == '_'))
            return false;
    return true;
}

void
log_field(enum log_level level, const char *field, const char *value,
          const char *fmt, ...)
{
    if (!enabled(level))
        return;
    char msg[LOG_LINE_MAX];
    va_list ap;
    va_start(ap, fmt);
    format_line(msg, fmt, ap);
    va_end(ap);
    if (!field_name_ok(field))
        field = NULL;
    emit(level, field, value, msg);
}

int
log_errno(enum log_level level, int r, const char *fmt, ...)
{
    if (!enabled(level))
        return r;
    char msg[LOG_LINE_MAX];
    va_list ap;
    va_start(ap, fmt);
    format_line(msg, fmt, ap);
    va_end(ap);
    size_t n = strlen(msg);
    int e = r < 0 ? -r : r;
    char ebuf[128];
    const char *es = strerror_r(e, ebuf, sizeof(ebuf)); /* GNU variant */
    snprintf(msg + n, sizeof(msg) - n, ": %s", es);
    emit(level, NULL, NULL, msg);
    return r;
}
