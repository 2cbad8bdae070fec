/* smtp-tls-source: smtp-source's load with TLS and AUTH, for submission benchmarks.
 *
 * Each of -s sessions is a forked process that opens connections one after another:
 * greeting, EHLO, STARTTLS (-t starttls) or a TLS handshake first (-t tls), EHLO again,
 * AUTH PLAIN (-a user:password), then -n messages (MAIL, RCPT, DATA, lockstep like
 * smtp-source: no pipelining), QUIT. -r offers the previous connection's TLS session
 * (a ticket) on the next connection, as a client library that keeps its sessions does.
 * The sessions share -m messages. On exit: one line "sent=N resumed=R failed=F" on
 * stdout; the first failures on stderr; exit status 0 only when every message got 250.
 *
 * Build: cc -O2 -o smtp-tls-source smtp-tls-source.c -lssl -lcrypto
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

enum tls_mode { TLS_NONE, TLS_STARTTLS, TLS_IMPLICIT };

struct options {
    const char *host;
    int port;
    int sessions;
    long messages;
    int per_connection;
    int size;
    enum tls_mode tls;
    const char *auth; /* user:password, or NULL */
    int resume;
    const char *sender;
    const char *recipient;
    const char *helo;
};

struct conn {
    int fd;
    SSL *ssl;
    char buf[8192];
    size_t len; /* bytes in buf not yet consumed */
};

static int conn_write(struct conn *c, const char *data, size_t n) {
    while (n > 0) {
        ssize_t w = c->ssl ? SSL_write(c->ssl, data, (int)n) : write(c->fd, data, n);
        if (w <= 0) {
            if (!c->ssl && w < 0 && errno == EINTR)
                continue;
            return -1;
        }
        data += w;
        n -= (size_t)w;
    }
    return 0;
}

static int conn_fill(struct conn *c) {
    if (c->len >= sizeof c->buf)
        return -1;
    ssize_t r;
    do {
        r = c->ssl ? SSL_read(c->ssl, c->buf + c->len, (int)(sizeof c->buf - c->len))
                   : read(c->fd, c->buf + c->len, sizeof c->buf - c->len);
    } while (!c->ssl && r < 0 && errno == EINTR);
    if (r <= 0)
        return -1;
    c->len += (size_t)r;
    return 0;
}

/* Read one whole reply (all its lines); return its code, -1 on a lost connection. The
 * last line's text is left in `last` for error messages. */
static int read_reply(struct conn *c, char *last, size_t last_size) {
    for (;;) {
        char *eol;
        while ((eol = memchr(c->buf, '\n', c->len)) == NULL)
            if (conn_fill(c) < 0)
                return -1;
        size_t line_len = (size_t)(eol - c->buf) + 1;
        int more = line_len > 4 && c->buf[3] == '-';
        int code = line_len >= 4 ? atoi(c->buf) : -1;
        if (!more && last) {
            size_t n = line_len < last_size - 1 ? line_len : last_size - 1;
            memcpy(last, c->buf, n);
            last[n] = 0;
            while (n > 0 && (last[n - 1] == '\n' || last[n - 1] == '\r'))
                last[--n] = 0;
        }
        memmove(c->buf, c->buf + line_len, c->len - line_len);
        c->len -= line_len;
        if (!more)
            return code;
    }
}

static int failures_reported;

static void fail(const char *fmt, ...) {
    if (failures_reported++ >= 3)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "smtp-tls-source[%d]: ", (int)getpid());
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* Send a command and expect a reply of class `want` (2 or 3); 0 when it came. */
static int command(struct conn *c, const char *line, int want) {
    char last[512];
    if (conn_write(c, line, strlen(line)) < 0) {
        fail("connection lost sending %.*s", (int)strcspn(line, "\r"), line);
        return -1;
    }
    int code = read_reply(c, last, sizeof last);
    if (code / 100 != want) {
        fail("%.*s: %s", (int)strcspn(line, "\r"), line, code < 0 ? "connection lost" : last);
        return -1;
    }
    return 0;
}

static int handshake(struct conn *c, SSL_CTX *ctx, SSL_SESSION **session, int *resumed) {
    c->ssl = SSL_new(ctx);
    SSL_set_fd(c->ssl, c->fd);
    if (*session)
        SSL_set_session(c->ssl, *session);
    if (SSL_connect(c->ssl) != 1) {
        char err[256];
        ERR_error_string_n(ERR_get_error(), err, sizeof err);
        fail("TLS handshake: %s", err);
        return -1;
    }
    if (SSL_session_reused(c->ssl))
        ++*resumed;
    return 0;
}

static char *make_message(const struct options *o, size_t *len) {
    size_t cap = (size_t)o->size + 1024;
    char *m = malloc(cap);
    int n = snprintf(m, cap,
                     "From: <%s>\r\nTo: <%s>\r\nSubject: submission load\r\n"
                     "Message-ID: <load-%d@client.test>\r\n\r\n",
                     o->sender, o->recipient, (int)getpid());
    size_t at = (size_t)n;
    size_t body = 0;
    while (body < (size_t)o->size) {
        size_t line = (size_t)o->size - body < 78 ? (size_t)o->size - body : 78;
        memset(m + at, 'x', line);
        at += line;
        body += line;
        memcpy(m + at, "\r\n", 2);
        at += 2;
    }
    memcpy(m + at, ".\r\n", 3);
    at += 3;
    *len = at;
    return m;
}

/* One session process: `share` messages; returns the count sent with a 250. */
static long run_session(const struct options *o, long share, int out_fd) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT);
    SSL_SESSION *session = NULL;
    size_t message_len;
    char *message = make_message(o, &message_len);
    char ehlo[300], mail[600], rcpt[600], auth_line[1200];
    snprintf(ehlo, sizeof ehlo, "EHLO %s\r\n", o->helo);
    snprintf(mail, sizeof mail, "MAIL FROM:<%s>\r\n", o->sender);
    snprintf(rcpt, sizeof rcpt, "RCPT TO:<%s>\r\n", o->recipient);
    if (o->auth) {
        /* AUTH PLAIN: base64("\0user\0password") */
        unsigned char raw[600];
        const char *colon = strchr(o->auth, ':');
        size_t ulen = (size_t)(colon - o->auth), plen = strlen(colon + 1);
        raw[0] = 0;
        memcpy(raw + 1, o->auth, ulen);
        raw[1 + ulen] = 0;
        memcpy(raw + 2 + ulen, colon + 1, plen);
        char b64[900];
        EVP_EncodeBlock((unsigned char *)b64, raw, (int)(2 + ulen + plen));
        snprintf(auth_line, sizeof auth_line, "AUTH PLAIN %s\r\n", b64);
    }
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)o->port)};
    inet_pton(AF_INET, o->host, &addr.sin_addr);
    long sent = 0;
    int resumed = 0, failed = 0;
    while (sent + failed < share && failed < 10) {
        struct conn c = {.fd = socket(AF_INET, SOCK_STREAM, 0)};
        int one = 1;
        setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        long batch = share - sent - failed < o->per_connection ? share - sent - failed
                                                                : o->per_connection;
        int ok = connect(c.fd, (struct sockaddr *)&addr, sizeof addr) == 0;
        if (!ok)
            fail("connect: %s", strerror(errno));
        if (ok && o->tls == TLS_IMPLICIT)
            ok = handshake(&c, ctx, &session, &resumed) == 0;
        char last[512];
        if (ok && read_reply(&c, last, sizeof last) != 220) {
            fail("greeting: %s", last);
            ok = 0;
        }
        ok = ok && command(&c, ehlo, 2) == 0;
        if (ok && o->tls == TLS_STARTTLS) {
            ok = command(&c, "STARTTLS\r\n", 2) == 0;
            ok = ok && handshake(&c, ctx, &session, &resumed) == 0;
            ok = ok && command(&c, ehlo, 2) == 0;
        }
        if (ok && o->auth)
            ok = command(&c, auth_line, 2) == 0;
        long done = 0;
        while (ok && done < batch) {
            ok = command(&c, mail, 2) == 0 && command(&c, rcpt, 2) == 0 &&
                 command(&c, "DATA\r\n", 3) == 0;
            if (ok && conn_write(&c, message, message_len) < 0)
                ok = 0;
            if (ok) {
                int code = read_reply(&c, last, sizeof last);
                if (code / 100 != 2) {
                    fail("end of data: %s", code < 0 ? "connection lost" : last);
                    ok = 0;
                }
            }
            if (ok)
                done++;
        }
        sent += done;
        if (!ok)
            failed += (int)(batch - done);
        if (ok)
            command(&c, "QUIT\r\n", 2);
        if (c.ssl) {
            if (o->resume) {
                SSL_SESSION *next = SSL_get1_session(c.ssl);
                if (next) {
                    if (session)
                        SSL_SESSION_free(session);
                    session = next;
                }
            }
            SSL_shutdown(c.ssl);
            SSL_free(c.ssl);
        }
        close(c.fd);
    }
    char line[128];
    int n = snprintf(line, sizeof line, "%ld %d %d\n", sent, resumed, failed);
    if (write(out_fd, line, (size_t)n) != n)
        return -1;
    return sent;
}

static void usage(void) {
    fprintf(stderr,
            "usage: smtp-tls-source [-s sessions] [-m messages] [-n per-connection] "
            "[-l size] [-t none|starttls|tls] [-a user:password] [-r] [-f sender] "
            "[-T recipient] [-M helo] host:port\n");
    exit(2);
}

int main(int argc, char **argv) {
    struct options o = {.sessions = 1, .messages = 1, .per_connection = 1, .size = 4096,
                        .tls = TLS_NONE, .sender = "load@client.test",
                        .recipient = "bench@bench.test", .helo = "client.test"};
    int opt;
    while ((opt = getopt(argc, argv, "s:m:n:l:t:a:rf:T:M:")) != -1) {
        switch (opt) {
        case 's': o.sessions = atoi(optarg); break;
        case 'm': o.messages = atol(optarg); break;
        case 'n': o.per_connection = atoi(optarg); break;
        case 'l': o.size = atoi(optarg); break;
        case 't':
            if (!strcmp(optarg, "none")) o.tls = TLS_NONE;
            else if (!strcmp(optarg, "starttls")) o.tls = TLS_STARTTLS;
            else if (!strcmp(optarg, "tls")) o.tls = TLS_IMPLICIT;
            else usage();
            break;
        case 'a':
            if (!strchr(optarg, ':') || strlen(optarg) > 500) usage();
            o.auth = optarg;
            break;
        case 'r': o.resume = 1; break;
        case 'f': o.sender = optarg; break;
        case 'T': o.recipient = optarg; break;
        case 'M': o.helo = optarg; break;
        default: usage();
        }
    }
    if (optind != argc - 1 || o.sessions < 1 || o.messages < 1 || o.per_connection < 1 ||
        o.size < 0 || strlen(o.sender) > 500 || strlen(o.recipient) > 500 ||
        strlen(o.helo) > 250)
        usage();
    static char host[256];
    const char *colon = strrchr(argv[optind], ':');
    if (!colon || (size_t)(colon - argv[optind]) >= sizeof host)
        usage();
    memcpy(host, argv[optind], (size_t)(colon - argv[optind]));
    o.host = host;
    o.port = atoi(colon + 1);
    int pipefd[2];
    if (pipe(pipefd) < 0)
        return 1;
    for (int i = 0; i < o.sessions; i++) {
        long share = o.messages / o.sessions + (i < o.messages % o.sessions ? 1 : 0);
        if (share == 0)
            continue;
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            return 1;
        }
        if (pid == 0) {
            close(pipefd[0]);
            run_session(&o, share, pipefd[1]);
            _exit(0);
        }
    }
    close(pipefd[1]);
    long sent = 0, resumed = 0, failed = 0;
    FILE *results = fdopen(pipefd[0], "r");
    long s;
    int r, f;
    while (fscanf(results, "%ld %d %d", &s, &r, &f) == 3) {
        sent += s;
        resumed += r;
        failed += f;
    }
    while (wait(NULL) > 0)
        ;
    printf("sent=%ld resumed=%ld failed=%ld\n", sent, resumed, o.messages - sent);
    return sent == o.messages ? 0 : 1;
}
