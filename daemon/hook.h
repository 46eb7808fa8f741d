/* hook — run the on_complete program, bounded in time.
 *
 * Thread: reactor only.
 *
 * The program is run directly with posix_spawn(3) (never through a shell),
 * argv = { path, NULL }, in a process group of its own, with every signal
 * at its default disposition and unblocked.  Its standard input is a
 * socket from which it reads the given text (the torrent's JSON object)
 * followed by end of file; standard output and error are torrentd's.  Its
 * environment is torrentd's plus the given NAME=value pairs.  After
 * timeout_s seconds the process group gets SIGKILL.  Its end (exit status
 * or signal) is logged; it is reaped with ev_child (the default loop) or,
 * on another loop, by polling waitpid() every HOOK_POLL seconds.
 */
#ifndef TD_DAEMON_HOOK_H
#define TD_DAEMON_HOOK_H

#include <stddef.h>
#include <stdint.h>

struct ev_loop;
struct hooks;

#define HOOK_MAX_RUNNING 64 /* more at once are refused (and logged) */
#define HOOK_POLL 0.25

int hooks_new(struct hooks **ret, struct ev_loop *loop);

/* Stop watching every running program (they keep running, unwatched) and
 * free; accepts NULL. */
void hooks_free(struct hooks *h);

/* Start path.  label names the run in log lines (e.g. the info-hash).
 * env: n "NAME=value" strings, copied.  input: copied.  Returns 0 or a
 * negative errno (logged by the caller). */
int hooks_run(struct hooks *h, const char *path, const char *label,
              const char *const *env, size_t n_env, const char *input,
              size_t input_len, uint64_t timeout_s);

/* Programs started and not yet reaped. */
size_t hooks_running(const struct hooks *h);

#endif
