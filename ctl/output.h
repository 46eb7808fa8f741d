/* output — what torrentctl prints for people and for scripts.
 *
 * Thread: main only (the progress bar and colour state are per call, but
 * stdio streams are shared: print from one thread).
 *
 * People: sizes in binary units ("1.5 GiB"), aligned tables, a progress bar
 * on stderr, colour.  The progress bar is drawn only when stderr is a
 * terminal; colour only when the stream is a terminal, $TERM is not "dumb"
 * and $NO_COLOR is unset or empty (https://no-color.org).  Text that comes
 * from outside (names, comments, URLs of a .torrent) goes through the safe
 * printers, which escape control characters and invalid UTF-8 so that a
 * hostile file cannot drive the terminal.
 *
 * Scripts: --json prints one JSON object built with json-c; strings from
 * outside are made valid UTF-8 first.
 */
#ifndef TD_CTL_OUTPUT_H
#define TD_CTL_OUTPUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include <json-c/json.h>

/* --- Sizes --- */

/* Room for any ctl_human_size() result, NUL included. */
#define CTL_SIZE_LEN 24

/* Write bytes as "0 B", "512 B", "16 KiB", "1.5 GiB" ... (binary units,
 * one decimal unless the value is a whole number of the unit). */
void ctl_human_size(char out[CTL_SIZE_LEN], uint64_t bytes);

/* Parse a byte count: digits with an optional suffix K, M, G (also KiB,
 * MiB, GiB, any case), meaning powers of 1024.  Returns 0 and sets *ret,
 * or -EINVAL (syntax) / -ERANGE (overflow). */
int ctl_parse_size(const char *s, uint64_t *ret);

/* --- Safe text --- */

/* Print s with control characters (C0, DEL, C1) and bytes that are not
 * valid UTF-8 written as \xNN (and a backslash as \\). */
void ctl_fputs_safe(const char *s, FILE *fp);

/* The same into a new string for the caller to free(); NULL on ENOMEM. */
char *ctl_safe_strdup(const char *s);

/* --- Colour --- */

enum ctl_style {
    CTL_STYLE_RESET,
    CTL_STYLE_BOLD,
    CTL_STYLE_DIM,
    CTL_STYLE_RED,
    CTL_STYLE_GREEN,
    CTL_STYLE_YELLOW,
    CTL_STYLE_MAX
};

/* True if colour may be written to fp (see the top of this file). */
bool ctl_color_enabled(FILE *fp);

/* The escape sequence for a style, or "" when fp gets no colour. */
const char *ctl_style(FILE *fp, enum ctl_style style);

/* --- Tables --- */

struct ctl_table;

/* A table of n_cols columns with these headers (copied).  NULL on ENOMEM. */
struct ctl_table *ctl_table_new(size_t n_cols, const char *const *headers);

/* Align column col to the right (numbers); the default is left. */
void ctl_table_align_right(struct ctl_table *t, size_t col);

/* Append a row of n_cols cells (copied, made safe; NULL is an empty cell).
 * Returns 0 or -ENOMEM. */
int ctl_table_add(struct ctl_table *t, const char *const *cells);

/* Print the table to fp, headers first (bold when coloured), columns
 * separated by two spaces, each line indented by indent spaces. */
void ctl_table_print(const struct ctl_table *t, FILE *fp, int indent);

/* Free a table; accepts NULL. */
void ctl_table_free(struct ctl_table *t);

/* --- Progress bar (stderr) --- */

struct ctl_progress {
    bool on;                 /* stderr is a terminal */
    const char *label;       /* borrowed: outlives the bar */
    uint64_t total;
    struct timespec start;
    int drawn;               /* columns written on the current line */
    double rate;             /* bytes/s to show; < 0: done / elapsed */
};

/* Start a bar for total units of work (bytes). */
void ctl_progress_start(struct ctl_progress *p, const char *label,
                        uint64_t total);

/* Redraw: "label [#####.....]  45%  1.2 GiB/2.0 GiB  850 MB/s".  Cheap;
 * the caller decides how often (a few times a second). */
void ctl_progress_update(struct ctl_progress *p, uint64_t done);

/* Show rate (bytes/s, e.g. the daemon's download rate) from now on
 * instead of the average since the start; a negative rate goes back to
 * the average. */
void ctl_progress_set_rate(struct ctl_progress *p, double rate);

/* Erase the bar, leaving the cursor at the start of an empty line. */
void ctl_progress_end(struct ctl_progress *p);

/* --- JSON --- */

/* A json-c string for s made valid UTF-8 (bad bytes become U+FFFD); NULL
 * (JSON null) when s is NULL or on ENOMEM. */
struct json_object *ctl_json_string(const char *s);

/* Print obj on one line of stdout, followed by a newline.  Returns 0 or
 * -EIO. */
int ctl_json_print(struct json_object *obj);

#endif
