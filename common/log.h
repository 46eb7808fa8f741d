/* log — one line per message, to journald or stderr.
 *
 * Thread: any.  A message is formatted into a stack buffer and written with
 * one call, so lines from different threads never interleave.
 *
 * Under systemd ($JOURNAL_STREAM names our stderr) messages go to journald
 * with sd_journal_send() and structured fields: PRIORITY=, and TORRENT=
 * (the info-hash) or PEER= or CALLER_UID= where the *_f variants give them.
 * Otherwise: one line on stderr, prefixed "<N>" (sd-daemon.h) when stderr
 * is not a terminal, else by the level's name.
 *
 * common/ modules themselves do not log (STYLE.md): this is for programs.
 */
#ifndef TD_COMMON_LOG_H
#define TD_COMMON_LOG_H

#include <stdarg.h>

enum log_level {
    LOG_LEVEL_ERR = 3,
    LOG_LEVEL_WARN = 4,
    LOG_LEVEL_NOTICE = 5,
    LOG_LEVEL_INFO = 6,
    LOG_LEVEL_DEBUG = 7,
};

/* Set the most verbose level that is written (default LOG_LEVEL_INFO). */
void log_set_level(enum log_level level);
enum log_level log_get_level(void);

/* Parse "err", "warn", "notice", "info", "debug"; -EINVAL otherwise. */
int log_level_from_string(const char *s);
const char *log_level_to_string(enum log_level level);

/* Name the program for stderr lines (default "torrentd"). */
void log_set_ident(const char *ident);

/* Decide journald or stderr now (reads $JOURNAL_STREAM); called by
 * log_set_level() and at the first message otherwise. */
void log_open(void);

void log_msg(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void log_vmsg(enum log_level level, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

/* With one structured field, e.g. log_field(LOG_LEVEL_INFO, "TORRENT",
 * hex, "added '%s'", name).  On stderr the field is shown as "[hex] ". */
void log_field(enum log_level level, const char *field, const char *value,
               const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#define log_err(...) log_msg(LOG_LEVEL_ERR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_notice(...) log_msg(LOG_LEVEL_NOTICE, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__)

/* Log with ": strerror(-r)" appended; return r (a negative errno), so that
 * "return log_err_errno(r, "cannot open '%s'", path);" works. */
int log_errno(enum log_level level, int r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#define log_err_errno(r, ...) log_errno(LOG_LEVEL_ERR, (r), __VA_ARGS__)
#define log_warn_errno(r, ...) log_errno(LOG_LEVEL_WARN, (r), __VA_ARGS__)

#endif
