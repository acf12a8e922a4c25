/*  =========================================================================
    metrics_http.c - GET /metrics over libmicrohttpd (metrics_http.h). The
    HTTP thread and the broker's thread share only this object's text,
    under its mutex; the broker's thread is asked for a new text through
    an eventfd it polls.
    =========================================================================
*/
#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "metrics_http.h"

struct _pigato__metrics_http_t {
    struct MHD_Daemon *daemon;  //  the HTTP server and its thread
    int wakeup;                 //  eventfd: a scrape waits for a text
    char address [INET6_ADDRSTRLEN + 16];  //  HOST:PORT listened on
    pthread_mutex_t lock;                  //  guards what follows
    pthread_cond_t published;              //  a new text, or closing
    char *text;                            //  the last text, NULL: none
    size_t size;                           //  its bytes
    int64_t text_at;                       //  when it came (ms, monotonic)
    uint64_t generation;                   //  texts published so far
    bool asked;                            //  wakeup was written to
    bool closing;                          //  destroy has begun
};

//  An answer of a fixed text (404, 405, 503).
static enum MHD_Result
s_plain (struct MHD_Connection *connection, unsigned int status,
         const char *text)
{
    struct MHD_Response *response = MHD_create_response_from_buffer (
        strlen (text), (void *) text, MHD_RESPMEM_PERSISTENT);
    if (!response)
        return MHD_NO;
    MHD_add_response_header (response, MHD_HTTP_HEADER_CONTENT_TYPE,
                             "text/plain; charset=utf-8");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header (response, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    enum MHD_Result rc = MHD_queue_response (connection, status, response);
    MHD_destroy_response (response);
    return rc;
}

//  Waits (lock held) for a text no older than PIGATO__METRICS_FRESH_MS,
//  asking the broker for one, at most PIGATO__METRICS_WAIT_MS. What is
//  held when the wait ends is served, fresh or not.
static void
s_wait_fresh (pigato__metrics_http_t *self)
{
    if (self->text
        && pigato__now_ms () - self->text_at < PIGATO__METRICS_FRESH_MS)
        return;
    uint64_t wanted = self->generation + 1;
    if (!self->asked) {
        uint64_t one = 1;
        if (write (self->wakeup, &one, sizeof one) == sizeof one)
            self->asked = true;
    }
    struct timespec until;
    clock_gettime (CLOCK_MONOTONIC, &until);
    until.tv_sec += PIGATO__METRICS_WAIT_MS / 1000;
    until.tv_nsec += (PIGATO__METRICS_WAIT_MS % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    while (self->generation < wanted && !self->closing)
        if (pthread_cond_timedwait (&self->published, &self->lock, &until)
            == ETIMEDOUT)
            break;
}

//  libmicrohttpd's handler, in its thread: GET or HEAD /metrics.
static enum MHD_Result
s_answer (void *cls, struct MHD_Connection *connection, const char *url,
          const char *method, const char *version, const char *upload_data,
          size_t *upload_data_size, void **state)
{
    (void) version, (void) upload_data, (void) upload_data_size;
    (void) state;
    pigato__metrics_http_t *self = (pigato__metrics_http_t *) cls;
    if (!streq (method, MHD_HTTP_METHOD_GET)
        && !streq (method, MHD_HTTP_METHOD_HEAD))
        return s_plain (connection, MHD_HTTP_METHOD_NOT_ALLOWED,
                        "only GET /metrics\n");
    if (!streq (url, "/metrics"))
        return s_plain (connection, MHD_HTTP_NOT_FOUND,
                        "not found: the metrics are at /metrics\n");
    pthread_mutex_lock (&self->lock);
    s_wait_fresh (self);
    struct MHD_Response *response = NULL;
    if (self->text && !self->closing)
        response = MHD_create_response_from_buffer (self->size, self->text,
                                                    MHD_RESPMEM_MUST_COPY);
    pthread_mutex_unlock (&self->lock);
    if (!response)
        return s_plain (connection, MHD_HTTP_SERVICE_UNAVAILABLE,
                        "the broker is not running\n");
    MHD_add_response_header (response, MHD_HTTP_HEADER_CONTENT_TYPE,
                             PIGATO__METRICS_CONTENT_TYPE);
    enum MHD_Result rc = MHD_queue_response (connection, MHD_HTTP_OK, response);
    MHD_destroy_response (response);
    return rc;
}

//  Splits "HOST:PORT" ("[V6]:PORT", "*:PORT") into host (NULL for every
//  interface) and port. False if it is not of that form.
static bool
s_split (const char *address, char *host, size_t host_size, char *port)
{
    const char *colon = strrchr (address, ':');
    if (!colon || colon [1] == 0 || strlen (colon + 1) > 5
        || strspn (colon + 1, "0123456789") != strlen (colon + 1)
        || atoi (colon + 1) > 65535)
        return false;
    strcpy (port, colon + 1);
    const char *start = address, *end = colon;
    if (*start == '[') {
        if (end == start || end [-1] != ']')
            return false;
        start++;
        end--;
    }
    size_t size = (size_t) (end - start);
    if (size == 0 || size >= host_size)
        return false;
    memcpy (host, start, size);
    host [size] = 0;
    return !strchr (host, '[') && !strchr (host, ']');
}

//  A listening TCP socket on address, its bound "HOST:PORT" in bound;
//  -1 with the reason in err and the status in *status.
static int
s_listen (const char *address, char *bound, size_t bound_size, int *status,
          char *err, size_t err_size)
{
    *status = PIGATO_E_INVALID;
    char host [256], port [6];
    if (!s_split (address, host, sizeof host, port)) {
        pigato__errorf (err, err_size,
                        "metrics address '%s' is not HOST:PORT (e.g. "
                        "127.0.0.1:9464, [::1]:9464 or *:9464)",
                        address);
        return -1;
    }
    struct addrinfo hints = { .ai_flags = AI_PASSIVE | AI_NUMERICSERV,
                              .ai_family = AF_UNSPEC,
                              .ai_socktype = SOCK_STREAM };
    struct addrinfo *found = NULL;
    int rc = getaddrinfo (streq (host, "*") ? NULL : host, port, &hints,
                          &found);
    if (rc) {
        pigato__errorf (err, err_size, "metrics address '%s': %s", address,
                        gai_strerror (rc));
        return -1;
    }
    *status = PIGATO_E_BIND;
    int fd = -1, error = 0;
    for (struct addrinfo *each = found; each && fd < 0; each = each->ai_next) {
        fd = socket (each->ai_family, each->ai_socktype | SOCK_CLOEXEC, 0);
        int on = 1;
        if (fd >= 0
            && (setsockopt (fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on)
                || bind (fd, each->ai_addr, each->ai_addrlen)
                || listen (fd, 16))) {
            error = errno;
            close (fd);
            fd = -1;
        }
        else if (fd < 0)
            error = errno;
    }
    freeaddrinfo (found);
    if (fd < 0) {
        pigato__errorf (err, err_size,
                        "cannot listen on metrics address "
                        "'%s': %s",
                        address, strerror (error));
        return -1;
    }
    struct sockaddr_storage name;
    socklen_t name_size = sizeof name;
    char text [INET6_ADDRSTRLEN] = "?";
    int number = 0;
    if (getsockname (fd, (struct sockaddr *) &name, &name_size) == 0) {
        if (name.ss_family == AF_INET6) {
            struct sockaddr_in6 *in6 = (struct sockaddr_in6 *) &name;
            inet_ntop (AF_INET6, &in6->sin6_addr, text, sizeof text);
            number = ntohs (in6->sin6_port);
        }
        else {
            struct sockaddr_in *in = (struct sockaddr_in *) &name;
            inet_ntop (AF_INET, &in->sin_addr, text, sizeof text);
            number = ntohs (in->sin_port);
        }
    }
    snprintf (bound, bound_size,
              name.ss_family == AF_INET6 ? "[%s]:%d" : "%s:%d", text, number);
    return fd;
}

int
pigato__metrics_http_new (const char *address, pigato__metrics_http_t **self_p,
                          char *err, size_t err_size)
{
    *self_p = NULL;
    pigato__metrics_http_t *self = (pigato__metrics_http_t *) calloc (
        1, sizeof *self);
    if (!self) {
        pigato__errorf (err, err_size, "out of memory");
        return PIGATO_E_NOMEM;
    }
    self->wakeup = -1;
    pthread_condattr_t attributes;
    pthread_condattr_init (&attributes);
    pthread_condattr_setclock (&attributes, CLOCK_MONOTONIC);
    pthread_cond_init (&self->published, &attributes);
    pthread_condattr_destroy (&attributes);
    pthread_mutex_init (&self->lock, NULL);
    int status;
    int listener = s_listen (address ? address : "", self->address,
                             sizeof self->address, &status, err, err_size);
    self->wakeup = eventfd (0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (listener < 0 || self->wakeup < 0) {
        if (listener >= 0) {
            pigato__errorf (err, err_size, "cannot make an eventfd: %s",
                            strerror (errno));
            close (listener);
            status = PIGATO_E_SYSTEM;
        }
        pigato__metrics_http_destroy (&self);
        return status;
    }
    //  Its thread takes no signal: the application's handlers run on the
    //  threads it made (a stop signal must wake the broker's poll)
    sigset_t all, before;
    sigfillset (&all);
    pthread_sigmask (SIG_SETMASK, &all, &before);
    self->daemon = MHD_start_daemon (
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO, 0, NULL, NULL, s_answer,
        self, MHD_OPTION_LISTEN_SOCKET, listener, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned int) PIGATO__METRICS_CONNECTIONS,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int) PIGATO__METRICS_IDLE_S,
        MHD_OPTION_END);
    pthread_sigmask (SIG_SETMASK, &before, NULL);
    if (!self->daemon) {
        pigato__errorf (err, err_size, "cannot serve metrics on '%s'",
                        self->address);
        close (listener);
        pigato__metrics_http_destroy (&self);
        return PIGATO_E_SYSTEM;
    }
    *self_p = self;
    return 0;
}

void
pigato__metrics_http_destroy (pigato__metrics_http_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    pigato__metrics_http_t *self = *self_p;
    pthread_mutex_lock (&self->lock);
    self->closing = true;
    pthread_cond_broadcast (&self->published);
    pthread_mutex_unlock (&self->lock);
    if (self->daemon)
        MHD_stop_daemon (self->daemon);  //  joins its thread, closes
                                         //  the listening socket
    if (self->wakeup >= 0)
        close (self->wakeup);
    pthread_cond_destroy (&self->published);
    pthread_mutex_destroy (&self->lock);
    free (self->text);
    free (self);
    *self_p = NULL;
}

const char *
pigato__metrics_http_address (pigato__metrics_http_t *self)
{
    return self->address;
}

int
pigato__metrics_http_fd (pigato__metrics_http_t *self)
{
    return self->wakeup;
}

bool
pigato__metrics_http_wanted (pigato__metrics_http_t *self)
{
    uint64_t count;
    return read (self->wakeup, &count, sizeof count) == sizeof count;
}

void
pigato__metrics_http_publish (pigato__metrics_http_t *self, char **text_p,
                              size_t size)
{
    pthread_mutex_lock (&self->lock);
    free (self->text);
    self->text = *text_p;
    self->size = size;
    self->text_at = pigato__now_ms ();
    self->generation++;
    self->asked = false;
    pthread_cond_broadcast (&self->published);
    pthread_mutex_unlock (&self->lock);
    *text_p = NULL;
}
