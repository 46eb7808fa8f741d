/* seedlimit — when a seeding torrent has seeded enough (see seedlimit.h). */
#include "daemon/seedlimit.h"

#include <stddef.h>

uint64_t
seedlimit_effective(int64_t own, uint64_t session)
{
    return own >= 0 ? (uint64_t)own : session;
}

enum seedlimit_reason
seedlimit_check(const struct seedlimit_in *in)
{
    uint64_t ratio =
        seedlimit_effective(in->ratio_limit, in->session_ratio_limit);
    uint64_t idle = seedlimit_effective(in->idle_limit, in->session_idle_limit);
    uint64_t base =
        in->downloaded > in->size_wanted ? in->downloaded : in->size_wanted;

    /* uploaded / base >= ratio / 1000, without overflow or rounding. */
    if (ratio && base &&
        (unsigned __int128)in->uploaded * 1000u >=
            (unsigned __int128)base * ratio)
        return SEEDLIMIT_RATIO;
    /* Thousandths of a minute are 60 ms each. */
    if (idle && in->idle_ms >= 0 &&
        (unsigned __int128)in->idle_ms >= (unsigned __int128)idle * 60u)
        return SEEDLIMIT_IDLE;
    return SEEDLIMIT_NONE;
}

const char *
seedlimit_reason_name(enum seedlimit_reason r)
{
    switch (r) {
    case SEEDLIMIT_RATIO:
        return "ratio";
    case SEEDLIMIT_IDLE:
        return "idle";
    case SEEDLIMIT_NONE:
    case SEEDLIMIT_REASON_MAX:
        break;
    }
    return NULL;
}
