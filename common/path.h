/* path — safe relative paths built from names that come from outside.
 *
 * Thread: any.  No I/O, no allocation beyond the caller's struct buf, no
 * globals, no logging.
 *
 * A .torrent (or a peer, or a control client) names files as lists of
 * components.  This module decides, one component at a time, whether a
 * name is refused or only awkward:
 *
 * - Refused (a negative enum path_error): an empty component, "." and "..",
 *   a NUL byte, a component that starts with '/' (an absolute path), and a
 *   '/' or '\\' inside a component.  These could leave the directory the
 *   path is joined under, or name something else than they seem to.
 *
 * - Sanitised (the name is changed and the caller is told): bytes that are
 *   not valid UTF-8 (each becomes '_'), control characters (C0, DEL, C1),
 *   the Unicode controls that reverse the writing direction and hide a
 *   file's real extension (U+200E, U+200F, U+202A..U+202E, U+2066..U+2069),
 *   each becomes '_'; a component longer than PATH_NAME_MAX bytes is cut at
 *   a character boundary, keeping a short extension (".mkv") if it has
 *   one.  This follows libtorrent's sanitize_append_path_element on Linux:
 *   characters that only Windows refuses (':' '?' '*' ...) are kept.
 *
 * A sanitised component is valid UTF-8, 1..PATH_NAME_MAX bytes, and can
 * never become ".", ".." or contain a separator.  Joined paths use '/'.
 */
#ifndef TD_COMMON_PATH_H
#define TD_COMMON_PATH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct buf;

/* The most bytes of one sanitised component: Linux NAME_MAX. */
#define PATH_NAME_MAX 255
/* A trailing extension up to this many bytes (the dot included) survives
 * when an over-long component is cut. */
#define PATH_EXT_MAX 16

enum path_error {
    PATH_OK = 0,
    PATH_E_EMPTY = -1,     /* an empty component */
    PATH_E_DOT = -2,       /* "." or ".." */
    PATH_E_NUL = -3,       /* a NUL byte */
    PATH_E_ABSOLUTE = -4,  /* starts with '/' */
    PATH_E_SEPARATOR = -5, /* a '/' or '\\' inside a component */
    PATH_E_UNCLEAN = -6,   /* path_check_relative: sanitising would change
                            * it (it did not come from this module) */
    PATH_E_TOO_LONG = -7,  /* past the cap of the caller's buffer */
    PATH_E_NOMEM = -8,
    PATH_E_MIN = -9
};

/* A static message for an error value ("unknown error" for others). */
const char *path_strerror(int err);

/* Check one raw component of n bytes.  Returns 0 if it may be used (after
 * sanitising), or the negative enum path_error that refuses it. */
int path_component_check(const void *p, size_t n);

/* True if the component is usable as it is: path_component_check() passes
 * and sanitising would not change it. */
bool path_component_is_clean(const void *p, size_t n);

/* Check one raw component, sanitise it and append it to b, after a '/' if
 * b is not empty.  Returns 0, or a negative enum path_error; on failure b
 * is left as it was.  If the name had to be changed, *changed is set to
 * true (it is never set to false, so one flag can cover many calls);
 * changed may be NULL. */
int path_append_component(struct buf *b, const void *p, size_t n,
                          bool *changed);

/* Check a joined relative path (components separated by single '/'), such
 * as one path_append_component() built or one stored in a resume file:
 * 0 if every component is clean, else the first problem (PATH_E_EMPTY for
 * "" or "a//b", PATH_E_ABSOLUTE for "/a", PATH_E_UNCLEAN ...). */
int path_check_relative(const char *rel);

/* Append base, '/', rel to b (base may be "" for rel alone).  rel must
 * pass path_check_relative(), or its error is returned and b is left as
 * it was; PATH_E_TOO_LONG past b's cap, PATH_E_NOMEM. */
int path_join(struct buf *b, const char *base, const char *rel);

/* Decode one UTF-8 character from p[0..n): returns its length (1..4) and
 * writes *ret_cp, or returns 0 for a malformed, over-long, truncated or
 * surrogate sequence (or n == 0). */
size_t path_utf8_decode(const uint8_t *p, size_t n, uint32_t *ret_cp);

/* True if p[0..n) is entirely valid UTF-8. */
bool path_utf8_valid(const void *p, size_t n);

#endif
