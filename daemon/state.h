/* state — the state directory: records and atomic file operations.
 *
 * Thread: any.  The codecs (state_resume_*, state_session_*,
 * state_settings_*) are pure: no I/O, no logging.  The file operations
 * (state_write_file, state_read_file, state_unlink, state_set_aside) block
 * on the disk: the session calls them on a worker thread, or before the
 * reactor runs.
 *
 * Layout of the state directory:
 *   <infohash>.torrent   the .torrent file as it was added
 *   <infohash>.magnet    the magnet URI of a torrent without metadata
 *   <infohash>.resume    struct state_resume, bencoded
 *   settings             run-time settings (session.set): "key = value"
 *   session              struct state_session, bencoded
 *   dht                  the DHT node id and good nodes (dhtsvc.h)
 *   *.corrupt-<time>     files that could not be read, set aside
 *   *.tmp                a write that was interrupted (removed at start)
 *
 * The resume record is a bencoded dictionary (keys sorted, BEP 3):
 *   added_at i  completed_at i  download_dir s  download_limit i
 *   downloaded i  error s (optional)  have s (bitfield)  id i
 *   idle_limit i (optional: thousandths of a minute, -1 or absent = the
 *   session's, 0 = none)  paused i
 *   pieces i (bits in have)  priority s (a byte per file: 0 skip, 1 low,
 *   2 normal, 3 high; empty = all normal)  ratio_limit i (thousandths,
 *   -1 = the session's)  seed_override i (optional: 1 = seed limits
 *   ignored after a start by hand)  sequential i (optional: 1 = pieces in
 *   order)  stop_reason i (optional: 1 ratio, 2 idle, absent = 0: why a
 *   seed limit paused it)  upload_limit i  uploaded i  version i (1)
 * Unknown keys are ignored (a newer torrentd may add some); a missing or
 * mistyped known key makes the record corrupt.
 */
#ifndef TD_DAEMON_STATE_H
#define TD_DAEMON_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct buf;

#define STATE_RESUME_VERSION 1
#define STATE_MAX_RECORD (16u << 20)  /* bytes of a resume record */
#define STATE_MAX_SETTINGS (1u << 20) /* bytes of the settings file */
#define STATE_MAX_TORRENT (32u << 20) /* bytes of a stored .torrent */
#define STATE_MAX_MAGNET (64u << 10)
#define STATE_MAX_FILES (1u << 20)  /* entries in priority */
#define STATE_MAX_PIECES (1u << 26) /* bits in have */

enum state_prio {
    STATE_PRIO_SKIP = 0, /* not wanted */
    STATE_PRIO_LOW = 1,
    STATE_PRIO_NORMAL = 2,
    STATE_PRIO_HIGH = 3,
    STATE_PRIO_MAX
};

enum state_error {
    STATE_OK = 0,
    STATE_E_BENCODE = -1, /* not bencode (detail: the decoder's reason) */
    STATE_E_NOT_DICT = -2,
    STATE_E_FIELD = -3,   /* a field is missing or of the wrong type */
    STATE_E_RANGE = -4,   /* a value out of its bounds */
    STATE_E_VERSION = -5, /* a version this torrentd does not know */
    STATE_E_SYNTAX = -6,  /* settings: a line that is not key = value */
    STATE_E_NOMEM = -7,
    STATE_E_MIN = -8
};

struct state_errinfo {
    size_t offset;    /* byte offset in the input, where known */
    char detail[128]; /* e.g. the field's name */
};

struct state_resume {
    uint32_t id; /* >= 1 */
    bool paused;
    char *download_dir;   /* owned, absolute */
    int64_t added_at;     /* seconds since the epoch */
    int64_t completed_at; /* 0 = never */
    uint64_t downloaded;
    uint64_t uploaded;
    uint64_t download_limit; /* bytes/s, 0 = none */
    uint64_t upload_limit;
    int64_t ratio_limit; /* thousandths; -1 = the session's */
    int64_t idle_limit;  /* thousandths of a minute; -1 = the session's
                          * (optional key: absent = -1) */
    int stop_reason;     /* enum seedlimit_reason (optional key: absent =
                          * 0) */
    bool seed_override;  /* optional key, 1 when set */
    bool sequential;     /* optional key, 1 when set */
    uint8_t *have;       /* owned bitfield, (pieces + 7) / 8 bytes */
    uint32_t pieces;     /* bits in have; 0 = nothing verified */
    uint8_t *priority;   /* owned, enum state_prio per file */
    uint32_t n_priority; /* 0 = every file normal */
    char *error;         /* owned or NULL */
};

/* Free the owned fields and zero r; accepts a zeroed record. */
void state_resume_release(struct state_resume *r);

/* Append the bencoded record to out.  Returns 0 or a negative errno. */
int state_resume_encode(const struct state_resume *r, struct buf *out);

/* Decode buf[0..len).  On success ret owns new copies of everything; on
 * failure returns a negative enum state_error, ret is untouched and
 * reterr (if not NULL) says where and what. */
int state_resume_decode(struct state_resume *ret, const void *buf, size_t len,
                        struct state_errinfo *reterr);

const char *state_strerror(int err);

/* The session record: numbers that must keep growing across restarts. */
struct state_session {
    uint32_t next_id;   /* the next torrent id to give */
    uint64_t event_seq; /* the last event sequence number given */
    bool clean;         /* written by a clean stop */
};

int state_session_encode(const struct state_session *s, struct buf *out);
int state_session_decode(struct state_session *ret, const void *buf, size_t len,
                         struct state_errinfo *reterr);

/* Run-time settings: an ordered list of key = value pairs. */
struct state_setting {
    char *key;   /* owned */
    char *value; /* owned */
};

struct state_settings {
    struct state_setting *items; /* owned */
    size_t n;
};

void state_settings_release(struct state_settings *s);
/* Set key to value (replacing an earlier value).  -EINVAL if either holds
 * a newline or NUL, or key is empty; -ENOMEM. */
int state_settings_put(struct state_settings *s, const char *key,
                       const char *value);
/* The value for key, or NULL. */
const char *state_settings_get(const struct state_settings *s, const char *key);
/* Remove key; returns true if it was there. */
bool state_settings_del(struct state_settings *s, const char *key);
int state_settings_encode(const struct state_settings *s, struct buf *out);
/* Parse the file format: "key = value" lines, '#' comments, blank lines.
 * Keys are not checked here (the caller checks them with config.h). */
int state_settings_decode(struct state_settings *ret, const char *text,
                          size_t len, struct state_errinfo *reterr);

/* --- File operations: block; worker threads or start-up only. --- */

/* Write dir/name atomically: dir/name.tmp, fsync, rename, fsync(dir).
 * Returns 0 or a negative errno. */
int state_write_file(const char *dir, const char *name, const void *data,
                     size_t len);

/* Read dir/name (at most max bytes: -EFBIG beyond).  *ret_data is NUL
 * terminated (not counted in *ret_len) and freed by the caller. */
int state_read_file(const char *dir, const char *name, size_t max,
                    char **ret_data, size_t *ret_len);

/* Remove dir/name and fsync(dir); a missing file is not an error. */
int state_unlink(const char *dir, const char *name);

/* Rename dir/name to dir/name.corrupt-<unix time> (with -<n> appended if
 * that exists).  The new name is written to ret_name (size n). */
int state_set_aside(const char *dir, const char *name, char *ret_name,
                    size_t n);

/* Create dir (mode 0700) if it does not exist. */
int state_mkdir(const char *dir);

#endif
