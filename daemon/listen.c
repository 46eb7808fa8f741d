/* listen — the peer listen socket; see listen.h. */
#include "daemon/listen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"

struct listen {
    struct ev_loop *loop; /* borrowed */
    int fd;               /* owned */
    ev_io io;
    listen_accept_t cb;
    void *arg;
    uint16_t port;
};

int
listen_parse_addr(const char *text, struct sockaddr_storage *ret,
                  socklen_t *ret_len)
{
    char host[64];
    const char *colon, *h = text;
    size_t hl;
    if (!text)
        return -EINVAL;
    if (text[0] == '[') {
        const char *end = strchr(text, ']');
        if (!end || end[1] != ':')
            return -EINVAL;
        h = text + 1;
        hl = (size_t)(end - h);
        colon = end + 1;
    } else {
        colon = strrchr(text, ':');
        if (!colon)
            return -EINVAL;
        hl = (size_t)(colon - text);
    }
    if (hl == 0 || hl >= sizeof(host))
        return -EINVAL;
    memcpy(host, h, hl);
    host[hl] = '\0';
    char *end;
    if (colon[1] < '0' || colon[1] > '9')
        return -EINVAL; /* no sign, no space */
    errno = 0;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (errno || *end || end == colon + 1 || port > 65535)
        return -EINVAL;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    socklen_t len;
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        len = sizeof(*s4);
    } else if (text[0] == '[' &&
               inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        len = sizeof(*s6);
    } else {
        return -EINVAL;
    }
    *ret = ss;
    *ret_len = len;
    return 0;
}

void
listen_format_addr(const struct sockaddr *addr, char *buf, size_t n)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    if (addr->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)addr;
        inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
        snprintf(buf, n, "%s:%u", ip, ntohs(s4->sin_port));
    } else if (addr->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)addr;
        inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
        snprintf(buf, n, "[%s]:%u", ip, ntohs(s6->sin6_port));
    } else {
        snprintf(buf, n, "?");
    }
}

static void
accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct listen *l = w->data;
    for (int i = 0; i < LISTEN_ACCEPT_BATCH; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        int fd = accept4(l->fd, (struct sockaddr *)&ss, &len,
                         SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                log_debug("accept: %s", strerror(errno));
            return;
        }
        l->cb(l->arg, fd, (struct sockaddr *)&ss, len);
    }
}

int
listen_new(struct listen **ret, struct ev_loop *loop, const char *text,
           listen_accept_t cb, void *arg)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int r = listen_parse_addr(text, &ss, &len);
    if (r < 0)
        return r;
    int fd =
        socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (ss.ss_family == AF_INET6)
        (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&ss, len) < 0 ||
        listen(fd, LISTEN_BACKLOG) < 0) {
        r = -errno;
        close(fd);
        return r;
    }
    struct sockaddr_storage got;
    socklen_t gl = sizeof(got);
    uint16_t port = 0;
    if (getsockname(fd, (struct sockaddr *)&got, &gl) == 0)
        port = got.ss_family == AF_INET6
                   ? ntohs(((struct sockaddr_in6 *)&got)->sin6_port)
                   : ntohs(((struct sockaddr_in *)&got)->sin_port);
    struct listen *l = calloc(1, sizeof(*l));
    if (!l) {
        close(fd);
        return -ENOMEM;
    }
    l->loop = loop;
    l->fd = fd;
    l->cb = cb;
    l->arg = arg;
    l->port = port;
    ev_io_init(&l->io, accept_cb, fd, EV_READ);
    l->io.data = l;
    ev_io_start(loop, &l->io);
    *ret = l;
    return 0;
}

void
listen_free(struct listen *l)
{
    if (!l)
        return;
    ev_io_stop(l->loop, &l->io);
    close(l->fd);
    free(l);
}

uint16_t
listen_port(const struct listen *l)
{
    return l->port;
}
