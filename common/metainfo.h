/* metainfo — .torrent files (BEP 3, 12, 19, 27, 47; BEP 52 recognised).
 *
 * Thread: any.  No I/O, no globals, no logging.
 *
 * meta_parse() reads a whole .torrent file, meta_parse_info() a bare info
 * dictionary (what BEP 9 metadata exchange delivers).  Both validate
 * everything a downloader relies on — piece length, pieces, file lengths,
 * and every file path, which comes out safe to join under a download
 * directory — and refuse anything else with a precise error: what is wrong
 * and where (byte offset, and the file index for path problems).
 *
 * Paths (common/path.h has the rules for one component): components joined
 * with '/', never empty, never "." or "..", never absolute, no NUL, no '/'
 * or '\\' inside a component, no duplicates (also when one file's path is
 * a directory prefix of another's; byte-exact, so case-sensitive).  Names
 * that are only awkward — invalid UTF-8, control characters, direction
 * overrides that disguise an extension, components over 255 bytes — are
 * sanitised the way libtorrent does on Linux and flagged in
 * meta_info.sanitised.  "name.utf-8" and "path.utf-8" are preferred when
 * they are valid UTF-8 (as libtorrent does); they are then checked the
 * same way.
 *
 * Strictness: unsorted keys are accepted (the info-hash is over the raw
 * bytes); a key repeated inside the info dictionary (at any depth), or
 * "info" twice, is refused: two clients could see two different torrents
 * behind one info-hash.  Bytes after the top-level dictionary of a .torrent
 * are ignored; meta_parse_info() wants exactly one dictionary.  A torrent
 * whose files hold no data at all is refused (META_E_TOTAL_SIZE).  Outside
 * the info dictionary, a value of the wrong type is refused but a single
 * unusable tracker or web seed URL (empty, control characters, not UTF-8)
 * is skipped, as mature clients do.
 *
 * Version 2 (BEP 52): a pure v2 torrent ("meta version" 2 and no "pieces")
 * is recognised and refused with META_E_V2_ONLY; a hybrid torrent is
 * accepted as v1 and its v2 info-hash is reported too, after checking that
 * its "file tree" lists the same files as its v1 "files" (pad files
 * aside).  "piece layers" is not read.
 */
#ifndef TD_COMMON_METAINFO_H
#define TD_COMMON_METAINFO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define META_HASH_LEN 20    /* SHA-1, a v1 piece hash and info-hash */
#define META_HASH2_LEN 32   /* SHA-256, a v2 info-hash */

enum meta_error {
    META_OK = 0,
    META_E_BENCODE = -1,          /* not valid bencode (detail says why) */
    META_E_NOT_DICT = -2,         /* top level is not a dictionary */
    META_E_NO_INFO = -3,          /* no "info" dictionary */
    META_E_NAME = -4,             /* missing or unusable "name" */
    META_E_PIECE_LENGTH = -5,     /* missing, not a power of two, bounds */
    META_E_PIECES = -6,           /* missing, not a multiple of 20 */
    META_E_PIECES_COUNT = -7,     /* count does not match the total size */
    META_E_LENGTH = -8,           /* bad file length */
    META_E_FILES = -9,            /* "files" malformed or empty; a hybrid
                                   * whose v1 and v2 file lists differ */
    META_E_BOTH_LENGTH_FILES = -10, /* single and multi-file at once */
    META_E_TOTAL_SIZE = -11,      /* the sizes add up past the limit, or
                                   * to 0 (nothing to download) */
    META_E_PATH = -12,            /* missing or malformed "path" list */
    META_E_PATH_UNSAFE = -13,     /* "..", absolute, NUL, separator ... */
    META_E_PATH_DUPLICATE = -14,  /* two files with the same path, or a
                                   * file where another needs a directory */
    META_E_PATH_TOO_LONG = -15,
    META_E_TOO_MANY_FILES = -16,
    META_E_DUPLICATE_KEY = -17,   /* a key twice in the info dictionary
                                   * (at any depth), or "info" twice */
    META_E_V2_ONLY = -18,         /* BEP 52 v2-only torrent: not supported */
    META_E_ANNOUNCE = -19,        /* malformed announce or announce-list */
    META_E_URL_LIST = -20,        /* malformed url-list */
    META_E_TOO_LARGE = -21,       /* the file is larger than the limit */
    META_E_NOMEM = -22,
    META_E_VERSION = -23,         /* "meta version" other than 1 or 2 */
    META_E_MIN = -24
};

/* BEP 47 file attributes. */
enum meta_attr {
    META_ATTR_PAD = 1 << 0,       /* 'p' */
    META_ATTR_EXEC = 1 << 1,      /* 'x' */
    META_ATTR_HIDDEN = 1 << 2,    /* 'h' */
    META_ATTR_SYMLINK = 1 << 3,   /* 'l' */
};

enum meta_version {
    META_V1,
    META_HYBRID,
    META_VERSION_MAX
};

struct meta_limits {
    size_t max_input;          /* bytes of .torrent */
    uint32_t min_piece_length; /* power of two */
    uint32_t max_piece_length; /* power of two */
    uint32_t max_files;
    uint32_t max_path_len;     /* bytes of a joined relative path */
    uint64_t max_total_size;   /* bytes of all files */
    uint32_t max_urls;         /* trackers, and web seeds, each */
};

/* Defaults: 32 MiB input, pieces 16 KiB..256 MiB, 1 M files, paths of
 * 4096 bytes, 2^50 bytes in total, 1000 URLs. */
extern const struct meta_limits meta_limits_default;

struct meta_file {
    /* owned: relative to the download directory, '/'-separated, passes
     * path_check_relative(), UTF-8.  Single-file: the name; multi-file:
     * name/...; a pad file without a path is name/.pad/<length>. */
    char *path;
    uint64_t length;
    uint64_t offset; /* where the file starts in the torrent's data */
    /* enum meta_attr.  BitComet "_____padding_file_" names count as 'p'.
     * Pad files hold zeros and are never written: storage skips them, and
     * their paths (safe, but possibly repeated) are not checked for
     * duplicates.  A symlink has length 0.  A single file keeps 'x' and
     * 'h' only. */
    unsigned attr;
    /* owned: BEP 47 symlink target, or NULL.  Like path it is relative to
     * the download directory (name/... in a multi-file torrent) and passes
     * path_check_relative(): it cannot point outside the torrent, but
     * storage must still never write through a symlink (O_NOFOLLOW). */
    char *symlink;
};

struct meta_tier {
    char **urls;     /* owned, each owned */
    size_t n_urls;
};

struct meta_info {
    uint8_t info_hash[META_HASH_LEN]; /* SHA-1 of the raw info dict */
    uint8_t info_hash_v2[META_HASH2_LEN]; /* SHA-256; META_HYBRID only */
    enum meta_version version;

    char *name;            /* owned: sanitised top-level name */
    bool multi_file;       /* "files" (directory) rather than "length" */
    bool private_torrent;  /* BEP 27 */
    bool sanitised;        /* some name was changed to make it usable */

    uint64_t total_size;   /* all files, pad files included */
    uint32_t piece_length;
    uint32_t n_pieces;
    const uint8_t *pieces; /* n_pieces * 20 bytes, inside info_raw */

    struct meta_file *files; /* owned; single-file torrents have one */
    size_t n_files;

    struct meta_tier *tiers; /* owned: BEP 12 tiers, or "announce" alone */
    size_t n_tiers;
    char **web_seeds;        /* owned: BEP 19 url-list (string or list) */
    size_t n_web_seeds;

    /* owned or NULL; invalid UTF-8 and control characters other than tab
     * and newline are replaced by U+FFFD ("comment.utf-8" preferred). */
    char *comment;
    char *created_by;
    int64_t creation_date;   /* seconds since the epoch, or 0 */

    uint8_t *info_raw;       /* owned: the info dictionary's exact bytes */
    size_t info_len;
};

/* Where and why a parse failed. */
struct meta_errinfo {
    size_t offset;      /* byte offset in the input, where known */
    long file_index;    /* the offending file, or -1 */
    char detail[160];   /* one line for people, e.g. the bencode error */
};

/* Parse a whole .torrent file.  On success returns 0 and *ret_info is a
 * new object for meta_free() (immutable from then on: any thread may read
 * it); on failure returns a negative enum meta_error, leaves *ret_info
 * alone and, if reterr is not NULL, fills it.  lim may be NULL for the
 * defaults.  The input buffer is not referenced after the call.  Memory:
 * the decoder's node array (at most 12 bytes per input byte, and 192 MiB)
 * plus the result. */
int meta_parse(struct meta_info **ret_info, const void *buf, size_t len,
               const struct meta_limits *lim, struct meta_errinfo *reterr);

/* Parse a bare info dictionary (BEP 9 metadata).  The result has no
 * trackers, web seeds or comment. */
int meta_parse_info(struct meta_info **ret_info, const void *buf,
                    size_t len, const struct meta_limits *lim,
                    struct meta_errinfo *reterr);

/* Free an object from meta_parse*(); accepts NULL. */
void meta_free(struct meta_info *info);

/* A static message for an error value. */
const char *meta_strerror(int err);

/* The piece count for a size and piece length (the last piece may be
 * shorter; 0 for a piece length of 0; UINT32_MAX if it would be more);
 * the length of piece i (0 past the last piece). */
uint32_t meta_piece_count(uint64_t total_size, uint32_t piece_length);
uint32_t meta_piece_size(const struct meta_info *info, uint32_t piece);

#endif
