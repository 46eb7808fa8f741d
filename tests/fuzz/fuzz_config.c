/* fuzz_config — libFuzzer target for daemon/config's file parser.
 *
 * Parses the input as a configuration file over the defaults.  On success
 * every key must read back with config_get() and set the same value again
 * (config_get and config_set agree); on failure the error must name the
 * file and a line within the input, with a message.  A copy must equal its
 * source key by key.  Any broken invariant abort()s.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "daemon/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "fuzz_config: %s\n", what);
        abort();
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct config c, d;
    struct config_error e;
    size_t n, lines = 1;
    const struct config_key *keys = config_keys(&n);

    for (size_t i = 0; i < size; i++)
        lines += data[i] == '\n';
    if (config_init(&c) < 0)
        return 0;
    int r = config_parse_text(&c, (const char *)data, size, "fuzz.conf", &e);
    if (r < 0) {
        check(r == -EINVAL || r == -ENOENT || r == -EFBIG || r == -ENOMEM,
              "unexpected error value");
        check(strcmp(e.file, "fuzz.conf") == 0, "error without the file");
        check(r == -EFBIG || (e.line >= 1 && e.line <= lines),
              "error line out of range");
        check(e.message[0] != '\0', "error without a message");
        config_release(&c);
        return 0;
    }

    /* Round trip: every value, as text, sets the same value. */
    if (config_init(&d) < 0) {
        config_release(&c);
        return 0;
    }
    struct buf v;
    buf_init(&v, 1 << 16);
    for (size_t i = 0; i < n; i++) {
        buf_reset(&v);
        check(config_get(&c, keys[i].name, &v) == 0, "config_get failed");
        r = config_set(&d, keys[i].name, v.data ? v.data : "", &e);
        check(r == 0 || r == -ENOMEM, "a value read back is refused");
        if (r == 0)
            check(config_key_equal(&c, &d, &keys[i]), "round trip differs");
    }
    buf_release(&v);
    config_release(&d);

    memset(&d, 0, sizeof(d));
    if (config_copy(&d, &c) == 0) {
        for (size_t i = 0; i < n; i++)
            check(config_key_equal(&c, &d, &keys[i]), "copy differs");
        config_release(&d);
    }
    struct config_error ve;
    (void)config_validate(&c, &ve);
    config_release(&c);
    return 0;
}
