/* output — human sizes, safe text, colour, tables, progress bar, JSON. */
#include "ctl/output.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "common/buf.h"

/* ---------------------------------------------------------------- sizes */

void
ctl_human_size(char out[CTL_SIZE_LEN], uint64_t bytes)
{
    static const char *const units[] = {
        "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"
    };
    unsigned u = 0;
    double v;

    if (bytes < 1024) {
        snprintf(out, CTL_SIZE_LEN, "%" PRIu64 " B", bytes);
        return;
    }
    while (u + 1 < sizeof(units) / sizeof(units[0]) &&
           bytes >= ((uint64_t)1024 << (10 * u)))
        u++;
    /* bytes >= 1024^u here, and < 1024^(u+1) (or u is the last unit). */
    if (bytes % ((uint64_t)1 << (10 * u)) == 0) {
        snprintf(out, CTL_SIZE_LEN, "%" PRIu64 " %s", bytes >> (10 * u),
                 units[u]);
        return;
    }
    v = (double)bytes / (double)((uint64_t)1 << (10 * u));
    if (v >= 1023.95 && u + 1 < sizeof(units) / sizeof(units[0])) {
        v /= 1024.0;
        u++;
    }
    snprintf(out, CTL_SIZE_LEN, "%.1f %s", v, units[u]);
}

int
ctl_parse_size(const char *s, uint64_t *ret)
{
    uint64_t v = 0;
    unsigned shift = 0;
    const char *p = s;

    if (*p < '0' || *p > '9')
        return -EINVAL;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (v > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
            return -ERANGE;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    switch (*p) {
    case '\0':
        break;
    case 'k': case 'K':
        shift = 10;
        break;
    case 'm': case 'M':
        shift = 20;
        break;
    case 'g': case 'G':
        shift = 30;
        break;
    default:
        return -EINVAL;
    }
    if (*p) {
        p++;
        if ((p[0] == 'i' || p[0] == 'I') && (p[1] == 'b' || p[1] == 'B'))
            p += 2;
        else if (p[0] == 'b' || p[0] == 'B')
            p++;
        if (*p)
            return -EINVAL;
    }
    if (shift && v > (UINT64_MAX >> shift))
        return -ERANGE;
    *ret = v << shift;
    return 0;
}

/* ------------------------------------------------------------ safe text */

/* The length of the valid UTF-8 sequence at p (1-4), or 0 if the bytes
 * there are not one (overlong forms, surrogates and values past U+10FFFF
 * are not). */
static size_t
utf8_len(const unsigned char *p)
{
    if (p[0] < 0x80)
        return 1;
    if (p[0] >= 0xc2 && p[0] <= 0xdf)
        return (p[1] & 0xc0) == 0x80 ? 2 : 0;
    if (p[0] >= 0xe0 && p[0] <= 0xef) {
        if ((p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80)
            return 0;
        if (p[0] == 0xe0 && p[1] < 0xa0)
            return 0; /* overlong */
        if (p[0] == 0xed && p[1] >= 0xa0)
            return 0; /* surrogate */
        return 3;
    }
    if (p[0] >= 0xf0 && p[0] <= 0xf4) {
        if ((p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80 ||
            (p[3] & 0xc0) != 0x80)
            return 0;
        if (p[0] == 0xf0 && p[1] < 0x90)
            return 0;
        if (p[0] == 0xf4 && p[1] >= 0x90)
            return 0;
        return 4;
    }
    return 0;
}

/* Append the safe form of s to b. */
static int
safe_append(struct buf *b, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    int r = 0;

    while (*p && r == 0) {
        size_t n = utf8_len(p);

        if (n == 1 && *p >= 0x20 && *p != 0x7f && *p != '\\') {
            r = buf_putc(b, (char)*p);
        } else if (n == 1 && *p == '\\') {
            r = buf_puts(b, "\\\\");
        } else if (n == 2 && p[0] == 0xc2 && p[1] < 0xa0) {
            /* C1 control: U+0080..U+009F */
            r = buf_printf(b, "\\x%02x\\x%02x", p[0], p[1]);
        } else if (n > 1) {
            r = buf_append(b, p, n);
        } else {
            n = 1;
            r = buf_printf(b, "\\x%02x", *p);
        }
        p += n;
    }
    return r;
}

char *
ctl_safe_strdup(const char *s)
{
    struct buf b;
    char *out;

    buf_init(&b, SIZE_MAX);
    if (safe_append(&b, s ? s : "") < 0 || buf_putc(&b, '\0') < 0) {
        buf_release(&b);
        return NULL;
    }
    out = buf_steal(&b, NULL);
    return out;
}

void
ctl_fputs_safe(const char *s, FILE *fp)
{
    char *t = ctl_safe_strdup(s);

    if (t) {
        fputs(t, fp);
        free(t);
    } else {
        fputs("?", fp);
    }
}

/* -------------------------------------------------------------- colour */

bool
ctl_color_enabled(FILE *fp)
{
    const char *nc = getenv("NO_COLOR");
    const char *term = getenv("TERM");

    if (nc && *nc)
        return false;
    if (!term || strcmp(term, "dumb") == 0)
        return false;
    return isatty(fileno(fp)) == 1;
}

const char *
ctl_style(FILE *fp, enum ctl_style style)
{
    static const char *const seq[CTL_STYLE_MAX] = {
        [CTL_STYLE_RESET] = "\033[0m",
        [CTL_STYLE_BOLD] = "\033[1m",
        [CTL_STYLE_DIM] = "\033[2m",
        [CTL_STYLE_RED] = "\033[31m",
        [CTL_STYLE_GREEN] = "\033[32m",
        [CTL_STYLE_YELLOW] = "\033[33m",
    };

    if ((unsigned)style >= CTL_STYLE_MAX || !ctl_color_enabled(fp))
        return "";
    return seq[style];
}

/* -------------------------------------------------------------- tables */

struct ctl_table {
    size_t n_cols;
    size_t n_rows;           /* the header row included */
    size_t size_rows;
    char **cells;            /* owned: n_rows * n_cols, each owned */
    bool *right;             /* owned: n_cols */
};

/* Columns a string takes on a terminal: its UTF-8 code points (wide
 * characters are rare in file names; this is an approximation). */
static size_t
text_width(const char *s)
{
    size_t w = 0;

    for (; *s; s++)
        if (((unsigned char)*s & 0xc0) != 0x80)
            w++;
    return w;
}

void
ctl_table_free(struct ctl_table *t)
{
    if (!t)
        return;
    if (t->cells)
        for (size_t i = 0; i < t->n_rows * t->n_cols; i++)
            free(t->cells[i]);
    free(t->cells);
    free(t->right);
    free(t);
}

int
ctl_table_add(struct ctl_table *t, const char *const *cells)
{
    if (t->n_rows == t->size_rows) {
        size_t n = t->size_rows ? t->size_rows * 2 : 16;
        char **c;

        if (n > SIZE_MAX / sizeof(char *) / t->n_cols)
            return -ENOMEM;
        c = realloc(t->cells, n * t->n_cols * sizeof(char *));
        if (!c)
            return -ENOMEM;
        t->cells = c;
        t->size_rows = n;
    }
    for (size_t i = 0; i < t->n_cols; i++) {
        char *s = ctl_safe_strdup(cells[i] ? cells[i] : "");

        if (!s) {
            for (size_t j = 0; j < i; j++)
                free(t->cells[t->n_rows * t->n_cols + j]);
            return -ENOMEM;
        }
        t->cells[t->n_rows * t->n_cols + i] = s;
    }
    t->n_rows++;
    return 0;
}

struct ctl_table *
ctl_table_new(size_t n_cols, const char *const *headers)
{
    struct ctl_table *t;

    if (n_cols == 0)
        return NULL;
    t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->n_cols = n_cols;
    t->right = calloc(n_cols, sizeof(bool));
    if (!t->right || ctl_table_add(t, headers) < 0) {
        ctl_table_free(t);
        return NULL;
    }
    return t;
}

void
ctl_table_align_right(struct ctl_table *t, size_t col)
{
    if (col < t->n_cols)
        t->right[col] = true;
}

void
ctl_table_print(const struct ctl_table *t, FILE *fp, int indent)
{
    size_t *w = calloc(t->n_cols, sizeof(size_t));

    if (!w)
        return;
    for (size_t r = 0; r < t->n_rows; r++)
        for (size_t c = 0; c < t->n_cols; c++) {
            size_t cw = text_width(t->cells[r * t->n_cols + c]);
            if (cw > w[c])
                w[c] = cw;
        }
    for (size_t r = 0; r < t->n_rows; r++) {
        fprintf(fp, "%*s", indent, "");
        if (r == 0)
            fputs(ctl_style(fp, CTL_STYLE_BOLD), fp);
        for (size_t c = 0; c < t->n_cols; c++) {
            const char *s = t->cells[r * t->n_cols + c];
            size_t pad = w[c] - text_width(s);
            bool last = c + 1 == t->n_cols;

            if (t->right[c])
                fprintf(fp, "%*s", (int)pad, "");
            fputs(s, fp);
            if (!t->right[c] && !last)
                fprintf(fp, "%*s", (int)pad, "");
            if (!last)
                fputs("  ", fp);
        }
        if (r == 0)
            fputs(ctl_style(fp, CTL_STYLE_RESET), fp);
        fputc('\n', fp);
    }
    free(w);
}

/* ------------------------------------------------------------ progress */

static double
elapsed_since(const struct timespec *t0)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t0->tv_sec) +
           (double)(now.tv_nsec - t0->tv_nsec) / 1e9;
}

void
ctl_progress_start(struct ctl_progress *p, const char *label, uint64_t total)
{
    const char *term = getenv("TERM");

    p->on = isatty(STDERR_FILENO) == 1 && !(term && strcmp(term, "dumb") == 0);
    p->label = label;
    p->total = total;
    p->drawn = 0;
    p->rate = -1;
    clock_gettime(CLOCK_MONOTONIC, &p->start);
}

void
ctl_progress_set_rate(struct ctl_progress *p, double rate)
{
    p->rate = rate;
}

void
ctl_progress_update(struct ctl_progress *p, uint64_t done)
{
    struct winsize ws;
    char d[CTL_SIZE_LEN], t[CTL_SIZE_LEN], tail[96], bar[256];
    int cols = 80, barw, fill, n;
    double secs, pct;

    if (!p->on)
        return;
    if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
        cols = ws.ws_col;
    if (done > p->total)
        done = p->total;
    pct = p->total ? 100.0 * (double)done / (double)p->total : 100.0;
    secs = elapsed_since(&p->start);
    ctl_human_size(d, done);
    ctl_human_size(t, p->total);
    double rate = p->rate >= 0                 ? p->rate
                  : secs > 0.05 ? (double)done / secs
                                : 0.0;
    if (rate >= 10e6 || rate == 0)
        snprintf(tail, sizeof(tail), " %3.0f%%  %s/%s  %.0f MB/s", pct, d,
                 t, rate / 1e6);
    else
        snprintf(tail, sizeof(tail), " %3.0f%%  %s/%s  %.1f MB/s", pct, d,
                 t, rate / 1e6);

    /* label + " [" + bar + "]" + tail, within cols - 1 columns */
    barw = cols - 1 - (int)strlen(p->label) - 3 - (int)strlen(tail);
    if (barw > (int)sizeof(bar) - 1)
        barw = (int)sizeof(bar) - 1;
    if (barw < 10) {
        n = fprintf(stderr, "\r%.*s", cols - 1 > 0 ? cols - 1 : 0, tail);
    } else {
        fill = (int)(pct / 100.0 * barw);
        memset(bar, '#', (size_t)fill);
        memset(bar + fill, '.', (size_t)(barw - fill));
        bar[barw] = '\0';
        n = fprintf(stderr, "\r%s [%s]%s", p->label, bar, tail);
    }
    if (n > 1 && n - 1 < p->drawn)
        fprintf(stderr, "%*s", p->drawn - (n - 1), "");
    if (n > 1)
        p->drawn = n - 1;
    (void)fflush(stderr);
}

void
ctl_progress_end(struct ctl_progress *p)
{
    if (!p->on || p->drawn == 0)
        return;
    fprintf(stderr, "\r%*s\r", p->drawn, "");
    (void)fflush(stderr);
    p->drawn = 0;
}

/* ---------------------------------------------------------------- JSON */

struct json_object *
ctl_json_string(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    struct json_object *o;
    struct buf b;

    if (!s)
        return NULL;
    buf_init(&b, SIZE_MAX);
    while (*p) {
        size_t n = utf8_len(p);
        int r;

        if (n == 0) {
            r = buf_append(&b, "\xef\xbf\xbd", 3); /* U+FFFD */
            n = 1;
        } else {
            r = buf_append(&b, p, n);
        }
        if (r < 0) {
            buf_release(&b);
            return NULL;
        }
        p += n;
    }
    o = json_object_new_string_len(b.data ? b.data : "", (int)b.len);
    buf_release(&b);
    return o;
}

int
ctl_json_print(struct json_object *obj)
{
    const char *s = json_object_to_json_string_ext(
        obj, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);

    if (!s || fputs(s, stdout) == EOF || fputc('\n', stdout) == EOF)
        return -EIO;
    return 0;
}
