/* worker — a small pool of threads for jobs that must not run on the
 * reactor: durable state writes, reading and parsing files, hashing.
 *
 * Thread: reactor only, except the run function of a job, which runs on
 * one of the pool's threads.
 *
 * A job is a pair of functions and an argument.  run(arg) is called on a
 * worker thread and returns an int (0 or a negative errno, by convention);
 * done(arg, result) is then called on the reactor.  Ownership of arg moves
 * with the job: from worker_submit() until run() returns it belongs to the
 * worker thread (the reactor must not touch what run() writes), and from
 * done() on it belongs to the reactor again; done() frees it.
 *
 * Jobs travel as fixed-size records (one owned pointer) through a job pipe
 * that the threads read, and come back through a result pipe that the
 * reactor watches with ev_io and reads in bounded batches.  Pipe writes
 * from the reactor never block: at most WORKER_MAX_INFLIGHT jobs are in the
 * pipes at once, the rest wait in a reactor-side queue.
 *
 * Order: a pool of one thread runs its jobs in submission order, and their
 * done() calls come in that order too, so a later job's done() means every
 * earlier job has finished (the session uses this as a barrier).
 */
#ifndef TD_DAEMON_WORKER_H
#define TD_DAEMON_WORKER_H

#include <stdbool.h>
#include <stddef.h>

struct ev_loop;
struct worker;

#define WORKER_MAX_THREADS 16
#define WORKER_MAX_INFLIGHT 256 /* jobs in the pipes at once */
#define WORKER_BATCH 64         /* results handled per wake-up */

typedef int (*worker_run_t)(void *arg);
typedef void (*worker_done_t)(void *arg, int result);

/* Start n_threads (1..WORKER_MAX_THREADS) threads named "<name>/<i>".
 * Returns 0 or a negative errno. */
int worker_new(struct worker **ret, struct ev_loop *loop, const char *name,
               unsigned n_threads);

/* Queue a job.  run may be NULL (a barrier: done is called once every
 * earlier job of a one-thread pool is finished, with result 0).  Returns 0
 * or -ENOMEM; on failure nothing is called and arg still belongs to the
 * caller.  May be called from a done() function, also while worker_free()
 * drains. */
int worker_submit(struct worker *w, worker_run_t run, worker_done_t done,
                  void *arg);

/* Jobs submitted and not yet done. */
size_t worker_pending(const struct worker *w);

/* Finish every job that was submitted (this blocks until they have run:
 * call it only when the reactor may wait, at exit), call their done()
 * functions, stop the threads and free the pool.  Accepts NULL. */
void worker_free(struct worker *w);

#endif
