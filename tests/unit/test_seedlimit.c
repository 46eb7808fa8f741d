/* Unit tests for daemon/seedlimit: which limit applies (the torrent's,
 * the session's, none), the ratio's base (downloaded or wanted size),
 * exact boundaries without rounding, huge counters, the idle limit in
 * thousandths of a minute, and the reason names. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "daemon/seedlimit.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define MIB (1024ull * 1024)

static void
test_effective(void **state)
{
    (void)state;
    assert_int_equal(seedlimit_effective(-1, 0), 0);
    assert_int_equal(seedlimit_effective(-1, 2000), 2000);
    assert_int_equal(seedlimit_effective(0, 2000), 0); /* none for this one */
    assert_int_equal(seedlimit_effective(1500, 2000), 1500);
    assert_int_equal(seedlimit_effective(1500, 0), 1500);
}

struct row {
    const char *what;
    struct seedlimit_in in;
    enum seedlimit_reason want;
};

static void
test_table(void **state)
{
    (void)state;
    static const struct row rows[] = {
        {"no limits at all", {.uploaded = 10 * MIB, .size_wanted = MIB,
                              .ratio_limit = -1, .idle_limit = -1,
                              .idle_ms = 1000000000}, SEEDLIMIT_NONE},
        {"own ratio reached exactly", {.uploaded = MIB, .size_wanted = MIB,
                                       .ratio_limit = 1000, .idle_limit = -1},
         SEEDLIMIT_RATIO},
        {"own ratio one byte short", {.uploaded = MIB - 1,
                                      .size_wanted = MIB,
                                      .ratio_limit = 1000, .idle_limit = -1},
         SEEDLIMIT_NONE},
        {"fractional ratio", {.uploaded = 3 * MIB / 2, .size_wanted = MIB,
                              .ratio_limit = 1500, .idle_limit = -1},
         SEEDLIMIT_RATIO},
        {"session ratio applies", {.uploaded = 2 * MIB, .size_wanted = MIB,
                                   .ratio_limit = -1, .idle_limit = -1,
                                   .session_ratio_limit = 2000},
         SEEDLIMIT_RATIO},
        {"own 0 overrides the session", {.uploaded = 9 * MIB,
                                         .size_wanted = MIB,
                                         .ratio_limit = 0, .idle_limit = 0,
                                         .session_ratio_limit = 1000,
                                         .session_idle_limit = 1,
                                         .idle_ms = 1000000},
         SEEDLIMIT_NONE},
        {"own higher than session", {.uploaded = 2 * MIB, .size_wanted = MIB,
                                     .ratio_limit = 3000, .idle_limit = -1,
                                     .session_ratio_limit = 1000},
         SEEDLIMIT_NONE},
        {"downloaded is the base when larger", {.uploaded = 3 * MIB / 2,
                                                .downloaded = 2 * MIB,
                                                .size_wanted = MIB,
                                                .ratio_limit = 1000,
                                                .idle_limit = -1},
         SEEDLIMIT_NONE},
        {"nothing wanted: no ratio", {.uploaded = MIB, .ratio_limit = 1,
                                      .idle_limit = -1},
         SEEDLIMIT_NONE},
        {"huge counters do not overflow", {.uploaded = UINT64_MAX,
                                           .size_wanted = UINT64_MAX / 2,
                                           .ratio_limit = 2000,
                                           .idle_limit = -1},
         SEEDLIMIT_RATIO},
        {"huge limit not reached", {.uploaded = UINT64_MAX / 2,
                                    .size_wanted = UINT64_MAX / 2,
                                    .ratio_limit = SEEDLIMIT_RATIO_MAX,
                                    .idle_limit = -1},
         SEEDLIMIT_NONE},
        {"idle: 50 thousandths of a minute are 3 s", {.size_wanted = MIB,
                                                      .ratio_limit = -1,
                                                      .idle_limit = 50,
                                                      .idle_ms = 3000},
         SEEDLIMIT_IDLE},
        {"idle: one ms short", {.size_wanted = MIB, .ratio_limit = -1,
                                .idle_limit = 50, .idle_ms = 2999},
         SEEDLIMIT_NONE},
        {"idle: the session's", {.size_wanted = MIB, .ratio_limit = -1,
                                 .idle_limit = -1,
                                 .session_idle_limit = 1000,
                                 .idle_ms = 60000},
         SEEDLIMIT_IDLE},
        {"idle: a clock that went back", {.size_wanted = MIB,
                                          .ratio_limit = -1, .idle_limit = 1,
                                          .idle_ms = -5},
         SEEDLIMIT_NONE},
        {"both reached: ratio first", {.uploaded = MIB, .size_wanted = MIB,
                                       .ratio_limit = 1000, .idle_limit = 1,
                                       .idle_ms = 1000000},
         SEEDLIMIT_RATIO},
    };
    for (size_t i = 0; i < ARRAY_SIZE(rows); i++) {
        enum seedlimit_reason got = seedlimit_check(&rows[i].in);
        if (got != rows[i].want)
            fail_msg("%s: got %d, want %d", rows[i].what, (int)got,
                     (int)rows[i].want);
    }
}

static void
test_names(void **state)
{
    (void)state;
    assert_null(seedlimit_reason_name(SEEDLIMIT_NONE));
    assert_string_equal(seedlimit_reason_name(SEEDLIMIT_RATIO), "ratio");
    assert_string_equal(seedlimit_reason_name(SEEDLIMIT_IDLE), "idle");
    assert_null(seedlimit_reason_name(SEEDLIMIT_REASON_MAX));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_effective),
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
