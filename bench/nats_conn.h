/*  =========================================================================
    nats_conn.h - a minimal NATS client connection for the benchmarks
    (plain POSIX sockets, OpenSSL for TLS 1.3, no NATS client library),
    shared by nats_bench.c (request/reply) and jetstream_bench.c
    (JetStream): connect, publish, buffered writes, incremental parsing.
    Header-only, like proc.h: each program is one file.
    =========================================================================
*/
#ifndef NATS_CONN_H_INCLUDED
#define NATS_CONN_H_INCLUDED

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>


#define CONTROL_LINE_MAX 4096  //  longest protocol line we accept

typedef struct conn_t conn_t;

//  Called for every MSG: subject, reply subject (NULL when absent), payload
typedef void (msg_fn) (conn_t *conn, const char *subject, const char *reply,
                       const char *payload, size_t size, void *arg);

struct conn_t {
    int fd;              //  TCP socket to nats-server
    SSL_CTX *ssl_ctx;    //  TLS context, NULL in plaintext
    SSL *ssl;            //  TLS session, NULL in plaintext
    char *input;         //  bytes read, not yet parsed
    size_t input_size;   //  bytes held in input
    size_t input_max;    //  allocated size of input
    char *output;        //  protocol waiting for the next flush
    size_t output_size;  //  bytes held in output
    size_t output_max;   //  allocated size of output
    long pongs;          //  PONGs received
    char error [256];    //  why the last call failed
};

static int64_t
s_usecs (void)
{
    struct timespec now;
    clock_gettime (CLOCK_MONOTONIC, &now);
    return (int64_t) now.tv_sec * 1000000 + now.tv_nsec / 1000;
}

//  --------------------------------------------------------------------------
//  Record why the connection failed, with OpenSSL's reason when it has one.

static int
s_fail (conn_t *self, const char *format, ...)
{
    va_list args;
    va_start (args, format);
    int used = vsnprintf (self->error, sizeof self->error, format, args);
    va_end (args);
    unsigned long ssl_error = ERR_get_error ();
    if (ssl_error && used > 0 && (size_t) used < sizeof self->error - 3) {
        strcat (self->error, ": ");
        ERR_error_string_n (ssl_error, self->error + used + 2,
                            sizeof self->error - (size_t) used - 2);
    }
    ERR_clear_error ();
    return -1;
}

static void
s_grow (char **buffer, size_t *max, size_t needed)
{
    if (needed <= *max)
        return;
    size_t size = *max ? *max : 65536;
    while (size < needed)
        size *= 2;
    char *bigger = realloc (*buffer, size);
    if (!bigger) {
        fputs ("nats-bench: out of memory\n", stderr);
        exit (2);
    }
    *buffer = bigger;
    *max = size;
}

//  --------------------------------------------------------------------------
//  Queue bytes for the next flush.

static void
s_conn_append (conn_t *self, const void *data, size_t size)
{
    s_grow (&self->output, &self->output_max, self->output_size + size);
    memcpy (self->output + self->output_size, data, size);
    self->output_size += size;
}

//  --------------------------------------------------------------------------
//  Queue "PUB subject reply size\r\npayload\r\n" for the next flush.

static void
s_conn_publish (conn_t *self, const char *subject, const char *reply,
                size_t reply_size, const char *payload, size_t size)
{
    char line [CONTROL_LINE_MAX];
    int used = snprintf (line, sizeof line, "PUB %s %.*s %zu\r\n", subject,
                         (int) reply_size, reply, size);
    if (used < 0 || (size_t) used >= sizeof line) {
        fputs ("nats-bench: subject too long\n", stderr);
        exit (2);
    }
    s_grow (&self->output, &self->output_max,
            self->output_size + (size_t) used + size + 2);
    memcpy (self->output + self->output_size, line, (size_t) used);
    memcpy (self->output + self->output_size + used, payload, size);
    memcpy (self->output + self->output_size + used + size, "\r\n", 2);
    self->output_size += (size_t) used + size + 2;
}

//  --------------------------------------------------------------------------
//  Write everything queued, in one write or SSL_write where the kernel takes
//  it. Returns 0, or -1 with self->error set.

static int
s_conn_flush (conn_t *self)
{
    size_t written = 0;
    while (written < self->output_size) {
        size_t left = self->output_size - written;
        if (self->ssl) {
            int rc = SSL_write (self->ssl, self->output + written,
                                left > INT32_MAX ? INT32_MAX : (int) left);
            if (rc <= 0)
                return s_fail (self, "SSL_write failed (%d)",
                               SSL_get_error (self->ssl, rc));
            written += (size_t) rc;
        }
        else {
            ssize_t rc = send (self->fd, self->output + written, left,
                               MSG_NOSIGNAL);
            if (rc < 0 && errno == EINTR)
                continue;
            if (rc < 0)
                return s_fail (self, "send: %s", strerror (errno));
            written += (size_t) rc;
        }
    }
    self->output_size = 0;
    return 0;
}

//  --------------------------------------------------------------------------
//  Read what is available into the input buffer, waiting up to timeout_ms
//  (-1: forever). Returns 1 when bytes arrived, 0 on timeout, -1 when the
//  connection failed or closed.

static int
s_conn_fill (conn_t *self, int timeout_ms)
{
    if (!self->ssl || SSL_pending (self->ssl) == 0) {
        struct pollfd item = { .fd = self->fd, .events = POLLIN };
        int rc = poll (&item, 1, timeout_ms);
        if (rc < 0 && errno == EINTR)
            return 0;
        if (rc < 0)
            return s_fail (self, "poll: %s", strerror (errno));
        if (rc == 0)
            return 0;
    }
    //  Keep at least 16 KiB free: one TLS record's worth
    s_grow (&self->input, &self->input_max, self->input_size + 16384);
    size_t room = self->input_max - self->input_size;
    if (self->ssl) {
        int rc = SSL_read (self->ssl, self->input + self->input_size,
                           room > INT32_MAX ? INT32_MAX : (int) room);
        if (rc <= 0) {
            int reason = SSL_get_error (self->ssl, rc);
            if (reason == SSL_ERROR_WANT_READ || reason == SSL_ERROR_WANT_WRITE)
                return 0;
            return s_fail (self,
                           reason == SSL_ERROR_ZERO_RETURN
                               ? "server closed the connection"
                               : "SSL_read failed (%d)",
                           reason);
        }
        self->input_size += (size_t) rc;
    }
    else {
        ssize_t rc = recv (self->fd, self->input + self->input_size, room, 0);
        if (rc < 0 && errno == EINTR)
            return 0;
        if (rc < 0)
            return s_fail (self, "recv: %s", strerror (errno));
        if (rc == 0)
            return s_fail (self, "server closed the connection");
        self->input_size += (size_t) rc;
    }
    return 1;
}

//  --------------------------------------------------------------------------
//  Split a control line into space/tab separated tokens, in place.
//  Returns how many, at most max.

static int
s_tokens (char *line, char **tokens, int max)
{
    int count = 0;
    char *cursor = line;
    while (*cursor && count < max) {
        while (*cursor == ' ' || *cursor == '\t')
            *cursor++ = 0;
        if (!*cursor)
            break;
        tokens [count++] = cursor;
        while (*cursor && *cursor != ' ' && *cursor != '\t')
            cursor++;
    }
    return count;
}

//  --------------------------------------------------------------------------
//  Parse every complete protocol message in the input buffer: MSG goes to
//  on_msg, PING is answered, PONG counted, +OK and INFO ignored, -ERR fails.
//  An incomplete line or payload stays for the next read. Returns 0, or -1
//  with self->error set.

static int
s_conn_parse (conn_t *self, msg_fn *on_msg, void *arg)
{
    size_t start = 0;
    int rc = 0;
    while (rc == 0 && start < self->input_size) {
        char *line = self->input + start;
        size_t available = self->input_size - start;
        char *end = memmem (line, available, "\r\n", 2);
        if (!end) {
            if (available > CONTROL_LINE_MAX)
                rc = s_fail (self, "protocol line longer than %d bytes",
                             CONTROL_LINE_MAX);
            break;
        }
        size_t line_size = (size_t) (end - line);
        if (line_size >= 4 && strncasecmp (line, "MSG ", 4) == 0) {
            //  MSG <subject> <sid> [reply-to] <#bytes>; the payload and its
            //  CRLF must be complete before we touch the line
            char *size_token = end;
            while (size_token > line && size_token [-1] != ' '
                   && size_token [-1] != '\t')
                size_token--;
            char *size_end;
            unsigned long long size = strtoull (size_token, &size_end, 10);
            if (size_end != end || size_token == end)
                rc = s_fail (self, "bad MSG line: %.*s", (int) line_size, line);
            else if (available < line_size + 2 + size + 2)
                break;
            else {
                *end = 0;
                char *tokens [5];
                int count = s_tokens (line + 4, tokens, 5);
                if (count != 3 && count != 4)
                    rc = s_fail (self, "bad MSG line");
                else {
                    on_msg (self, tokens [0], count == 4 ? tokens [2] : NULL,
                            end + 2, (size_t) size, arg);
                    start += line_size + 2 + (size_t) size + 2;
                }
            }
            continue;
        }
        if (line_size >= 4 && strncasecmp (line, "PING", 4) == 0)
            s_conn_append (self, "PONG\r\n", 6);
        else if (line_size >= 4 && strncasecmp (line, "PONG", 4) == 0)
            self->pongs++;
        else if (line_size >= 4 && strncasecmp (line, "-ERR", 4) == 0)
            rc = s_fail (self, "server: %.*s", (int) line_size, line);
        else if (!(line_size >= 3 && strncasecmp (line, "+OK", 3) == 0)
                 && !(line_size >= 4 && strncasecmp (line, "INFO", 4) == 0))
            rc = s_fail (self, "unexpected from server: %.*s",
                         (int) (line_size > 80 ? 80 : line_size), line);
        start += line_size + 2;
    }
    memmove (self->input, self->input + start, self->input_size - start);
    self->input_size -= start;
    return rc;
}

//  --------------------------------------------------------------------------
//  Wait until the server has answered every PING sent so far, dispatching
//  MSGs meanwhile. Returns 0, or -1 on error or after 10 seconds.

static int
s_conn_sync (conn_t *self, long pongs, msg_fn *on_msg, void *arg)
{
    int64_t deadline = s_usecs () + 10000000;
    while (self->pongs < pongs) {
        if (s_usecs () > deadline)
            return s_fail (self, "no PONG within 10 seconds");
        if (s_conn_fill (self, 1000) < 0 || s_conn_parse (self, on_msg, arg)
            || s_conn_flush (self))
            return -1;
    }
    return 0;
}

static void
s_ignore_msg (conn_t *conn, const char *subject, const char *reply,
              const char *payload, size_t size, void *arg)
{
    (void) conn, (void) subject, (void) reply, (void) payload, (void) size;
    (void) arg;
}

//  --------------------------------------------------------------------------
//  Connect: TCP, the server's INFO line, TLS 1.3 when asked (the server's
//  certificate checked against ca_file and the address), CONNECT, then
//  PING/PONG so the server has accepted us. Returns NULL with a message in
//  error on failure.

static conn_t *
s_conn_new (const char *server, bool tls, const char *ca_file, char *error,
            size_t error_size)
{
    conn_t *self = calloc (1, sizeof (conn_t));
    self->fd = -1;
    s_grow (&self->input, &self->input_max, 65536);
    s_grow (&self->output, &self->output_max, 65536);
    char host [256];
    const char *colon = strrchr (server, ':');
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *addresses = NULL;
    int rc = 0;
    if (!colon || (size_t) (colon - server) >= sizeof host)
        rc = s_fail (self, "--server wants HOST:PORT, not '%s'", server);
    if (rc == 0) {
        memcpy (host, server, (size_t) (colon - server));
        host [colon - server] = 0;
        int gai = getaddrinfo (host, colon + 1, &hints, &addresses);
        if (gai)
            rc = s_fail (self, "%s: %s", server, gai_strerror (gai));
    }
    if (rc == 0) {
        self->fd = socket (addresses->ai_family, SOCK_STREAM, 0);
        if (self->fd < 0
            || connect (self->fd, addresses->ai_addr, addresses->ai_addrlen))
            rc = s_fail (self, "connect %s: %s", server, strerror (errno));
    }
    if (addresses)
        freeaddrinfo (addresses);
    if (rc == 0) {
        int on = 1;
        setsockopt (self->fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
        //  INFO comes in plaintext first, also when TLS is required; the
        //  server then waits for our ClientHello, so nothing follows it
        while (rc == 0 && !memmem (self->input, self->input_size, "\r\n", 2))
            rc = s_conn_fill (self, 5000) == 1
                   ? 0
                   : s_fail (self, "no INFO from %s", server);
    }
    if (rc == 0) {
        if (strncmp (self->input, "INFO ", 5))
            rc = s_fail (self, "no INFO from %s", server);
        else if (!tls
                 && memmem (self->input, self->input_size,
                            "\"tls_required\":true", 19))
            rc = s_fail (self, "%s requires TLS: use --tls --ca", server);
        self->input_size = 0;
    }
    if (rc == 0 && tls) {
        self->ssl_ctx = SSL_CTX_new (TLS_client_method ());
        if (!self->ssl_ctx
            || !SSL_CTX_set_min_proto_version (self->ssl_ctx, TLS1_3_VERSION))
            rc = s_fail (self, "cannot set up TLS 1.3");
        else if (!ca_file
                 || !SSL_CTX_load_verify_locations (self->ssl_ctx, ca_file,
                                                    NULL))
            rc = s_fail (self, "cannot load CA file %s",
                         ca_file ? ca_file : "(none: --ca is required)");
    }
    if (rc == 0 && tls) {
        SSL_CTX_set_verify (self->ssl_ctx, SSL_VERIFY_PEER, NULL);
        self->ssl = SSL_new (self->ssl_ctx);
        //  The certificate must name the address we dialled (IP SAN) or the
        //  host name (DNS SAN)
        X509_VERIFY_PARAM *param = SSL_get0_param (self->ssl);
        if (!X509_VERIFY_PARAM_set1_ip_asc (param, host)) {
            SSL_set1_host (self->ssl, host);
            SSL_set_tlsext_host_name (self->ssl, host);
        }
        SSL_set_fd (self->ssl, self->fd);
        if (SSL_connect (self->ssl) != 1)
            rc = s_fail (self, "TLS handshake with %s failed (verify: %s)",
                         server,
                         X509_verify_cert_error_string (
                             SSL_get_verify_result (self->ssl)));
    }
    if (rc == 0) {
        char line [256];
        snprintf (line, sizeof line,
                  "CONNECT {\"verbose\":false,\"pedantic\":false,"
                  "\"tls_required\":%s,\"name\":\"nats-bench\",\"lang\":\"c\","
                  "\"version\":\"0.1.0\",\"protocol\":1}\r\nPING\r\n",
                  tls ? "true" : "false");
        s_conn_append (self, line, strlen (line));
        rc = s_conn_flush (self);
    }
    if (rc == 0)
        rc = s_conn_sync (self, 1, s_ignore_msg, NULL);
    if (rc) {
        snprintf (error, error_size, "%s", self->error);
        if (self->ssl)
            SSL_free (self->ssl);
        if (self->ssl_ctx)
            SSL_CTX_free (self->ssl_ctx);
        if (self->fd >= 0)
            close (self->fd);
        free (self->input);
        free (self->output);
        free (self);
        return NULL;
    }
    return self;
}

//  --------------------------------------------------------------------------
//  Close the connection and free it; accepts NULL, nulls the pointer.

static void
s_conn_destroy (conn_t **self_p)
{
    conn_t *self = *self_p;
    if (!self)
        return;
    if (self->ssl) {
        SSL_shutdown (self->ssl);
        SSL_free (self->ssl);
    }
    if (self->ssl_ctx)
        SSL_CTX_free (self->ssl_ctx);
    close (self->fd);
    free (self->input);
    free (self->output);
    free (self);
    *self_p = NULL;
}

#endif
