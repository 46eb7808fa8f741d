/* fuzz_metainfo — libFuzzer target for meta_parse() and meta_parse_info().
 *
 * Whatever parses must keep the header's promises: every path and symlink
 * passes path_check_relative(), offsets add up, the piece count matches
 * and the piece hashes lie inside info_raw.  A broken promise traps. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/metainfo.h"
#include "common/path.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check(const struct meta_info *info)
{
    uint64_t off = 0;

    if (path_check_relative(info->name) != 0 || info->n_files == 0)
        __builtin_trap();
    for (size_t i = 0; i < info->n_files; i++) {
        const struct meta_file *f = &info->files[i];
        if (path_check_relative(f->path) != 0 || f->offset != off ||
            (f->symlink && path_check_relative(f->symlink) != 0))
            __builtin_trap();
        off += f->length;
    }
    if (off != info->total_size || info->total_size == 0 ||
        info->n_pieces !=
            meta_piece_count(info->total_size, info->piece_length) ||
        info->pieces < info->info_raw ||
        info->pieces + (size_t)info->n_pieces * META_HASH_LEN >
            info->info_raw + info->info_len)
        __builtin_trap();
    for (size_t t = 0; t < info->n_tiers; t++)
        if (info->tiers[t].n_urls == 0)
            __builtin_trap();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct meta_info *info = NULL;
    struct meta_errinfo err;

    if (meta_parse(&info, data, size, NULL, &err) == 0) {
        check(info);
        meta_free(info);
    } else if (err.detail[0] == '\0' || !memchr(err.detail, '\0',
                                                sizeof(err.detail))) {
        __builtin_trap();
    }
    info = NULL;
    if (meta_parse_info(&info, data, size, NULL, &err) == 0) {
        check(info);
        meta_free(info);
    }
    return 0;
}
