/* worker — a small pool of threads: job in, result out, through pipes.
 *
 * The job pipe is shared by the pool's threads: every record is written
 * whole (sizeof < PIPE_BUF) and read whole (each read asks for exactly one
 * record, and the kernel serialises readers of a pipe), so a record is
 * never split between two threads.  The reactor never blocks on it: at
 * most WORKER_MAX_INFLIGHT records are in flight, far below the pipe's
 * capacity, and the rest wait in a list only the reactor touches.
 */
#include "daemon/worker.h"

#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"

#define WORKER_STACK (256u << 10)
#define WORKER_MAGIC 0x776b6a62u /* "wkjb" */

struct worker_job {
    worker_run_t run;
    worker_done_t done;
    void *arg; /* owned by whoever holds the job */
    int result;
    struct worker_job *next; /* the reactor's queue */
};

/* What goes through both pipes: one owned pointer. */
struct worker_rec {
    uint32_t magic;
    uint32_t pad;
    struct worker_job *job;
};
_Static_assert(sizeof(struct worker_rec) <= PIPE_BUF,
               "pipe records must be written atomically");

struct worker {
    struct ev_loop *loop; /* borrowed */
    ev_io res_watcher;
    int job_rd, job_wr; /* job pipe: threads read, reactor writes */
    int res_rd, res_wr; /* result pipe: threads write, reactor reads */
    pthread_t threads[WORKER_MAX_THREADS];
    unsigned n_threads;
    struct worker_job *queue_head, *queue_tail; /* not yet in the pipe */
    size_t inflight; /* records in the pipes or being run */
    size_t pending;  /* submitted, done() not yet called */
    char name[16];
};

struct thread_arg {
    struct worker *w;
    unsigned index;
};

static void *
thread_main(void *p)
{
    struct thread_arg ta = *(struct thread_arg *)p;
    free(p);
    char tname[16];
    snprintf(tname, sizeof(tname), "%.10s/%u", ta.w->name, ta.index);
    (void)pthread_setname_np(pthread_self(), tname);

    int job_rd = ta.w->job_rd, res_wr = ta.w->res_wr;
    for (;;) {
        struct worker_rec rec;
        ssize_t n = read(job_rd, &rec, sizeof(rec));
        if (n == 0)
            break; /* the reactor closed the job pipe: stop */
        if (n < 0 && errno == EINTR)
            continue;
        if (n != (ssize_t)sizeof(rec) || rec.magic != WORKER_MAGIC) {
            log_err("worker: bad job record (%zd bytes)", n);
            abort();
        }
        struct worker_job *job = rec.job;
        job->result = job->run ? job->run(job->arg) : 0;
        /* The job (and its arg) belong to the reactor again after this
         * write: do not touch them. */
        for (;;) {
            n = write(res_wr, &rec, sizeof(rec));
            if (n == (ssize_t)sizeof(rec))
                break;
            if (n < 0 && errno == EINTR)
                continue;
            log_err("worker: cannot write a result record");
            abort();
        }
    }
    return NULL;
}

/* Move queued jobs into the job pipe while there is credit. */
static void
flush(struct worker *w)
{
    while (w->queue_head && w->inflight < WORKER_MAX_INFLIGHT) {
        struct worker_job *job = w->queue_head;
        struct worker_rec rec = {.magic = WORKER_MAGIC, .job = job};
        ssize_t n = write(w->job_wr, &rec, sizeof(rec));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            break; /* cannot happen with the credit, but never block */
        if (n != (ssize_t)sizeof(rec)) {
            log_err("worker: cannot write a job record");
            abort();
        }
        w->queue_head = job->next;
        if (!w->queue_head)
            w->queue_tail = NULL;
        job->next = NULL;
        w->inflight++;
    }
}

/* Read at most max results (non-blocking) and call their done(). */
static size_t
take_results(struct worker *w, size_t max)
{
    size_t got = 0;
    while (got < max) {
        struct worker_rec rec;
        ssize_t n = read(w->res_rd, &rec, sizeof(rec));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            break;
        if (n != (ssize_t)sizeof(rec) || rec.magic != WORKER_MAGIC) {
            log_err("worker: bad result record (%zd bytes)", n);
            abort();
        }
        struct worker_job *job = rec.job;
        w->inflight--;
        w->pending--;
        got++;
        worker_done_t done = job->done;
        void *arg = job->arg;
        int result = job->result;
        free(job);
        if (done)
            done(arg, result);
    }
    flush(w);
    return got;
}

static void
on_results(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)loop;
    (void)revents;
    struct worker *w = io->data;
    take_results(w, WORKER_BATCH);
}

int
worker_new(struct worker **ret, struct ev_loop *loop, const char *name,
           unsigned n_threads)
{
    if (n_threads == 0 || n_threads > WORKER_MAX_THREADS)
        return -EINVAL;
    struct worker *w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    w->loop = loop;
    w->job_rd = w->job_wr = w->res_rd = w->res_wr = -1;
    snprintf(w->name, sizeof(w->name), "%s", name);
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0)
        goto fail_errno;
    w->job_rd = fds[0];
    w->job_wr = fds[1];
    if (pipe2(fds, O_CLOEXEC) < 0)
        goto fail_errno;
    w->res_rd = fds[0];
    w->res_wr = fds[1];
    /* The reactor's ends never block; the threads' ends do. */
    if (fcntl(w->job_wr, F_SETFL, O_NONBLOCK) < 0 ||
        fcntl(w->res_rd, F_SETFL, O_NONBLOCK) < 0)
        goto fail_errno;

    /* Threads get no signals: the reactor takes them. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, WORKER_STACK);
    int r = 0;
    for (unsigned i = 0; i < n_threads; i++) {
        struct thread_arg *ta = malloc(sizeof(*ta));
        if (!ta) {
            r = -ENOMEM;
            break;
        }
        ta->w = w;
        ta->index = i;
        int e = pthread_create(&w->threads[i], &attr, thread_main, ta);
        if (e != 0) {
            free(ta);
            r = -e;
            break;
        }
        w->n_threads++;
    }
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r < 0) {
        worker_free(w);
        return r;
    }

    ev_io_init(&w->res_watcher, on_results, w->res_rd, EV_READ);
    w->res_watcher.data = w;
    ev_io_start(loop, &w->res_watcher);
    *ret = w;
    return 0;

fail_errno:
    r = -errno;
    worker_free(w);
    return r;
}

int
worker_submit(struct worker *w, worker_run_t run, worker_done_t done, void *arg)
{
    struct worker_job *job = calloc(1, sizeof(*job));
    if (!job)
        return -ENOMEM;
    job->run = run;
    job->done = done;
    job->arg = arg;
    if (w->queue_tail)
        w->queue_tail->next = job;
    else
        w->queue_head = job;
    w->queue_tail = job;
    w->pending++;
    flush(w);
    return 0;
}

size_t
worker_pending(const struct worker *w)
{
    return w->pending;
}

void
worker_free(struct worker *w)
{
    if (!w)
        return;
    if (w->loop && ev_is_active(&w->res_watcher))
        ev_io_stop(w->loop, &w->res_watcher);
    /* Drain: run what is queued, and what done() callbacks queue in turn,
     * until nothing is left.  This waits, which only exit may do. */
    while (w->n_threads && w->pending) {
        flush(w);
        struct pollfd pfd = {.fd = w->res_rd, .events = POLLIN};
        if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
            break;
        take_results(w, SIZE_MAX);
    }
    if (w->job_wr >= 0)
        close(w->job_wr); /* threads read EOF and return */
    for (unsigned i = 0; i < w->n_threads; i++)
        pthread_join(w->threads[i], NULL);
    /* Without threads (a failed start) queued jobs never ran: give their
     * args back with -ECANCELED. */
    while (w->queue_head) {
        struct worker_job *job = w->queue_head;
        w->queue_head = job->next;
        if (job->done)
            job->done(job->arg, -ECANCELED);
        free(job);
    }
    if (w->job_rd >= 0)
        close(w->job_rd);
    if (w->res_rd >= 0)
        close(w->res_rd);
    if (w->res_wr >= 0)
        close(w->res_wr);
    free(w);
}
