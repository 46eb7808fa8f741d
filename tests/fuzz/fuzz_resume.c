/* fuzz_resume — libFuzzer target for the state directory's records
 * (daemon/state): the resume record, the session record and the settings
 * file, which torrentd reads from disk at start and which may be corrupt.
 *
 * Each decoder gets the input.  A resume record that decodes is encoded
 * again and must decode to the same values (and encode to the same bytes);
 * the same holds for the session record and the settings.  Any broken
 * invariant abort()s.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "daemon/state.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "fuzz_resume: %s\n", #cond);                       \
            abort();                                                           \
        }                                                                      \
    } while (0)

static void
same_resume(const struct state_resume *a, const struct state_resume *b)
{
    CHECK(a->id == b->id && a->paused == b->paused);
    CHECK(strcmp(a->download_dir, b->download_dir) == 0);
    CHECK(a->added_at == b->added_at && a->completed_at == b->completed_at);
    CHECK(a->downloaded == b->downloaded && a->uploaded == b->uploaded);
    CHECK(a->download_limit == b->download_limit &&
          a->upload_limit == b->upload_limit);
    CHECK(a->ratio_limit == b->ratio_limit && a->idle_limit == b->idle_limit);
    CHECK(a->stop_reason == b->stop_reason &&
          a->seed_override == b->seed_override &&
          a->sequential == b->sequential);
    CHECK(a->pieces == b->pieces && a->n_priority == b->n_priority);
    CHECK(!a->pieces || memcmp(a->have, b->have, (a->pieces + 7) / 8) == 0);
    CHECK(!a->n_priority ||
          memcmp(a->priority, b->priority, a->n_priority) == 0);
    CHECK(!a->error == !b->error);
    CHECK(!a->error || strcmp(a->error, b->error) == 0);
}

static void
fuzz_resume(const uint8_t *data, size_t size)
{
    struct state_resume r, r2;
    struct state_errinfo ei;
    int e = state_resume_decode(&r, data, size, &ei);
    if (e < 0) {
        CHECK(e > STATE_E_MIN);
        CHECK(strcmp(state_strerror(e), "unknown error") != 0);
        return;
    }
    CHECK(r.id >= 1 && r.download_dir && r.download_dir[0] == '/');
    CHECK(r.pieces <= STATE_MAX_PIECES && r.n_priority <= STATE_MAX_FILES);
    struct buf b, b2;
    buf_init(&b, STATE_MAX_RECORD);
    buf_init(&b2, STATE_MAX_RECORD);
    CHECK(state_resume_encode(&r, &b) == 0);
    CHECK(state_resume_decode(&r2, b.data, b.len, NULL) == 0);
    same_resume(&r, &r2);
    CHECK(state_resume_encode(&r2, &b2) == 0);
    CHECK(b.len == b2.len && memcmp(b.data, b2.data, b.len) == 0);
    buf_release(&b);
    buf_release(&b2);
    state_resume_release(&r);
    state_resume_release(&r2);
}

static void
fuzz_session(const uint8_t *data, size_t size)
{
    struct state_session s, s2;
    if (state_session_decode(&s, data, size, NULL) < 0)
        return;
    CHECK(s.next_id >= 1);
    struct buf b;
    buf_init(&b, 4096);
    CHECK(state_session_encode(&s, &b) == 0);
    CHECK(state_session_decode(&s2, b.data, b.len, NULL) == 0);
    CHECK(s.next_id == s2.next_id && s.event_seq == s2.event_seq &&
          s.clean == s2.clean);
    buf_release(&b);
}

static void
fuzz_settings(const uint8_t *data, size_t size)
{
    struct state_settings s = {0}, s2 = {0};
    struct state_errinfo ei;
    if (state_settings_decode(&s, (const char *)data, size, &ei) < 0) {
        CHECK(ei.offset <= size);
        return;
    }
    struct buf b;
    buf_init(&b, 2 * STATE_MAX_SETTINGS);
    CHECK(state_settings_encode(&s, &b) == 0);
    CHECK(state_settings_decode(&s2, b.data, b.len, NULL) == 0);
    CHECK(s.n == s2.n);
    for (size_t i = 0; i < s.n; i++) {
        CHECK(strcmp(s.items[i].key, s2.items[i].key) == 0);
        CHECK(strcmp(s.items[i].value, s2.items[i].value) == 0);
    }
    buf_release(&b);
    state_settings_release(&s);
    state_settings_release(&s2);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_resume(data, size);
    fuzz_session(data, size);
    fuzz_settings(data, size);
    return 0;
}
