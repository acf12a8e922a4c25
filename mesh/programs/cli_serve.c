/*  =========================================================================
    cli_serve.c - `pigato serve SERVICE (--echo | -- CMD ARGS...)`: a worker
    on a zloop; with a command, each request runs it as a child process
    (stdin = request data, stdout = reply, non-zero exit = error reply),
    at most --concurrency at once, stopped when its client gives up
    (SIGTERM, then SIGKILL after a grace period: a command never keeps its
    slot), and never replying with more than the broker accepts.

    The worker enforces the concurrency it announces (libpigato rejects
    what comes beyond it), so every request handed to us has a free slot
    and starts at once: nothing queues here. A job costs what its request
    holds: its data is written to the child's pipe at once and only what
    the pipe did not take is kept; stderr is kept in a buffer that grows
    as it comes, up to STDERR_MAX. SIGTERM drains (pigato_worker_drain):
    what runs finishes, nothing new starts.
    =========================================================================
*/
#include <czmq.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <unistd.h>
#include "cli.h"

extern char **environ;

#define OUTPUT_MAX       PIGATO_BODY_MAX  //  largest stdout we reply with
#define STDERR_MAX       4096             //  stderr kept for the error message
#define STDERR_FIRST     256              //  its first allocation
#define REAP_RETRY_MS    10               //  waitpid retry after pipes hit EOF
#define JOB_CHECK_MS     250              //  how often we look at running jobs
#define REFUSAL_CHECK_MS 100              //  how often we ask about refusals
#define KILL_GRACE_MS    2000  //  SIGTERM -> SIGKILL (pigato(1) says 2 s)

//  Where a job is. A job goes down the list, never back; it may skip
//  TERMINATING (SIGKILL at once) and KILLED (it ended by itself).
typedef enum {
    JOB_RUNNING,      //  child running, not signalled
    JOB_TERMINATING,  //  SIGTERM sent; SIGKILL at kill_at
    JOB_KILLED,       //  SIGKILL sent; reaped even if its pipes stay open
    JOB_DONE          //  answered, slot free; freed by the next check
} job_state_t;

//  Why a job was stopped before it ended by itself.
typedef enum {
    JOB_STOP_NONE,       //  not stopped
    JOB_STOP_ABANDONED,  //  its client gave up
    JOB_STOP_TOO_LARGE,  //  its stdout passed OUTPUT_MAX
    JOB_STOP_NO_MEMORY   //  no memory to keep its stdout
} job_stop_t;

//  One command run for one request (serve -- CMD).
typedef struct _serve_t serve_t;
typedef struct _job_t job_t;
struct _job_t {
    serve_t *serve;         //  the serve loop we belong to
    pigato_reply_t *reply;  //  owned; ended when the child is reaped
    byte *input;            //  request data the pipe did not take at once
    size_t input_size;      //  bytes of request data in all
    size_t input_sent;      //  bytes written so far (of input: - skipped)
    size_t input_skipped;   //  bytes written before input was made
    pid_t pid;              //  child (and its process group), 0 = none
    int stdin_fd;           //  our end of the child's stdin, -1 closed
    int stdout_fd;          //  our end of the child's stdout, -1 closed
    int stderr_fd;          //  our end of the child's stderr, -1 closed
    byte *output;           //  stdout collected so far
    size_t output_size;     //  bytes in output
    size_t output_max;      //  bytes allocated for output
    char *errors;           //  first bytes of stderr, up to STDERR_MAX
    size_t errors_size;     //  bytes in errors
    size_t errors_max;      //  bytes allocated for errors
    size_t output_seen;     //  stdout bytes read, kept or not
    job_state_t state;      //  see job_state_t
    job_stop_t stop;        //  why it was stopped, if it was
    int64_t kill_at;        //  TERMINATING: when SIGKILL follows
    bool reaped;            //  waitpid collected the child
    int wait_status;        //  its status once reaped
    int64_t started;        //  zclock_mono () when the request came
    job_t *next_done;       //  DONE: next in serve->done
};

struct _serve_t {
    pigato_worker_t *worker;  //  our worker
    zloop_t *loop;            //  the loop the worker and pipes share
    char **cmd_argv;          //  CMD ARGS..., NULL = echo mode
    int concurrency;          //  children at most at once
    bool log_requests;        //  one info line per request
    zlist_t *running;         //  job_t * with a child
    job_t *done;              //  answered jobs a poller may still name
    int refusal;              //  why a broker refused us, ends serve, or 0
    int drain_timeout_ms;     //  --drain-timeout
    bool draining;            //  SIGTERM came: pigato_worker_drain
    int64_t drain_deadline;   //  zclock_mono () when serve stops anyway
    bool drained;             //  nothing left (or out of time): the end
};

//  Set by the first SIGTERM (cli.c): drain, then exit.
static volatile sig_atomic_t s_drain_asked = 0;

//  --------------------------------------------------------------------------
//  serve: logging and the echo handler

//  Copies bytes for a log line, replacing those a terminal could misread
//  (a rid is bytes: an MDP client's starts with 0x00).
static void
s_printable (const char *text, size_t size, char *out, size_t out_size)
{
    size_t index = 0;
    for (; text && index < size && index + 1 < out_size; index++)
        out [index] = text [index] > ' ' && text [index] < 127 ? text [index]
                                                               : '?';
    out [index] = 0;
}

static void
s_log_request (serve_t *self, pigato_reply_t *reply, size_t in_size,
               size_t out_size, const char *result, int64_t started)
{
    if (!self->log_requests)
        return;
    char service [64], rid [PIGATO_RID_MAX + 1], line [512];
    const char *name = pigato_reply_service (reply);
    size_t rid_size;
    const void *rid_bytes = pigato_reply_rid_bytes (reply, &rid_size);
    s_printable (name, strlen (name), service, sizeof service);
    s_printable ((const char *) rid_bytes, rid_size, rid, sizeof rid);
    snprintf (line, sizeof line,
              "event=request service=%s rid=%s in=%zu "
              "out=%zu result=%s ms=%lld",
              service, rid, in_size, out_size, result,
              (long long) (zclock_mono () - started));
    pigato_log_stderr (PIGATO_LOG_INFO, line, NULL);
}

static void
s_on_echo (pigato_worker_t *worker, pigato_reply_t *reply, const void *data,
           size_t size, void *arg)
{
    (void) worker;
    int rc = pigato_reply_end (reply, data, size);
    s_log_request ((serve_t *) arg, reply, size, size,
                   rc ? pigato_strerror (rc) : "ok", zclock_mono ());
    pigato_reply_destroy (&reply);
}

//  --------------------------------------------------------------------------
//  serve -- CMD: one child per request, its pipes in the worker's zloop

static void
s_close_fd (job_t *job, int *fd_p)
{
    if (*fd_p < 0)
        return;
    zmq_pollitem_t item = { NULL, *fd_p, 0, 0 };
    zloop_poller_end (job->serve->loop, &item);
    close (*fd_p);
    *fd_p = -1;
}

static void
s_job_destroy (job_t **job_p)
{
    job_t *job = *job_p;
    if (!job)
        return;
    s_close_fd (job, &job->stdin_fd);
    s_close_fd (job, &job->stdout_fd);
    s_close_fd (job, &job->stderr_fd);
    pigato_reply_destroy (&job->reply);
    free (job->input);
    free (job->output);
    free (job->errors);
    free (job);
    *job_p = NULL;
}

//  Frees the jobs answered before this pass of the loop. zloop calls the
//  pollers that were ready when it polled even if a timer ended them
//  earlier in the same pass, so a job answered from a timer is kept (its
//  handlers see JOB_DONE) until the pass after.
static void
s_jobs_free_done (serve_t *self)
{
    while (self->done) {
        job_t *job = self->done;
        self->done = job->next_done;
        s_job_destroy (&job);
    }
}

//  Stops a running child for a reason (the first reason sticks): SIGTERM
//  and SIGKILL after KILL_GRACE_MS, or SIGKILL at once. The whole process
//  group gets it; the pipes' EOF or the next check finishes the job.
static void
s_job_stop (job_t *job, job_stop_t stop, bool kill_now)
{
    if (job->stop == JOB_STOP_NONE)
        job->stop = stop;
    if (job->pid <= 0 || job->reaped || job->state == JOB_KILLED
        || job->state == JOB_DONE)
        return;
    if (kill_now || job->state == JOB_TERMINATING) {
        kill (-job->pid, SIGKILL);
        job->state = JOB_KILLED;
    }
    else {
        kill (-job->pid, SIGTERM);
        job->state = JOB_TERMINATING;
        job->kill_at = zclock_mono () + KILL_GRACE_MS;
    }
}

//  Sends the reply the reaped child earned (or, if failure is not NULL,
//  that error) and closes its pipes: its slot is free. The job itself is
//  freed later (s_jobs_free_done).
static void
s_job_finish (job_t *job, const char *failure)
{
    serve_t *self = job->serve;
    zlist_remove (self->running, job);
    int status = job->wait_status;
    char message [STDERR_MAX + 64];
    const char *result = "ok";
    size_t out_size = 0;
    if (failure) {
        snprintf (message, sizeof message, "%s", failure);
        result = "error";
    }
    else if (job->stop == JOB_STOP_TOO_LARGE) {
        //  Said before anything is sent: the broker would refuse it, and
        //  drop us with every other request we hold
        snprintf (message, sizeof message,
                  "E_TOO_LARGE the command's output exceeds the broker's "
                  "limit of %d bytes (stopped after %zu bytes)",
                  OUTPUT_MAX, job->output_seen);
        result = "too_large";
    }
    else if (job->stop == JOB_STOP_NO_MEMORY) {
        snprintf (message, sizeof message,
                  "worker out of memory for the command's output "
                  "(%zu bytes)",
                  job->output_seen);
        result = "error";
    }
    else if (WIFEXITED (status) && WEXITSTATUS (status) == 0)
        out_size = job->output_size;
    else {
        //  The message is stderr, trimmed; or how the child ended
        char *start = job->errors, *end = job->errors + job->errors_size;
        while (start < end && isspace ((byte) *start))
            start++;
        while (end > start && isspace ((byte) end [-1]))
            end--;
        if (end > start)
            snprintf (message, sizeof message, "%.*s", (int) (end - start),
                      start);
        else if (WIFEXITED (status))
            snprintf (message, sizeof message, "exit status %d",
                      WEXITSTATUS (status));
        else
            snprintf (message, sizeof message, "killed by signal %d (%s)",
                      WTERMSIG (status), strsignal (WTERMSIG (status)));
        result = job->stop == JOB_STOP_ABANDONED ? "abandoned" : "error";
    }
    if (streq (result, "ok"))
        pigato_reply_end (job->reply, job->output, job->output_size);
    else
        pigato_reply_error (job->reply, message);
    s_log_request (self, job->reply, job->input_size, out_size, result,
                   job->started);
    //  Everything but the memory goes now: pipes, pollers, reply
    s_close_fd (job, &job->stdin_fd);
    s_close_fd (job, &job->stdout_fd);
    s_close_fd (job, &job->stderr_fd);
    pigato_reply_destroy (&job->reply);
    job->state = JOB_DONE;
    job->next_done = self->done;
    self->done = job;
}

static int s_on_reap_timer (zloop_t *loop, int timer_id, void *arg);

//  Called when a pipe closes: once stdout and stderr are at EOF the child
//  is done talking; reap it now or retry shortly.
static void
s_job_try_finish (job_t *job)
{
    if (job->stdout_fd >= 0 || job->stderr_fd >= 0)
        return;
    //  A child that closed its output has nothing more to say; drop stdin
    //  too so that no poller of ours points at the job any longer
    s_close_fd (job, &job->stdin_fd);
    pid_t pid = waitpid (job->pid, &job->wait_status, WNOHANG);
    if (pid == 0)
        zloop_timer (job->serve->loop, REAP_RETRY_MS, 1, s_on_reap_timer, job);
    else {
        //  -1: its status is lost; never report that as success
        job->reaped = true;
        s_job_finish (job, pid < 0 ? "cannot collect the command's exit "
                                     "status"
                                   : NULL);
    }
}

static int
s_on_reap_timer (zloop_t *loop, int timer_id, void *arg)
{
    (void) loop, (void) timer_id;
    s_job_try_finish ((job_t *) arg);
    return 0;
}

//  Feeds the request data to the child's stdin as the pipe takes it.
static int
s_on_stdin_ready (zloop_t *loop, zmq_pollitem_t *item, void *arg)
{
    (void) loop;
    job_t *job = (job_t *) arg;
    if (job->state == JOB_DONE || item->fd != job->stdin_fd)
        return 0;  //  answered from a timer in this pass: nothing to feed
    ssize_t written = write (job->stdin_fd,
                             job->input + job->input_sent - job->input_skipped,
                             job->input_size - job->input_sent);
    if (written > 0)
        job->input_sent += written;
    if (job->input_sent == job->input_size
        || (written < 0 && errno != EAGAIN && errno != EINTR))
        s_close_fd (job, &job->stdin_fd);  //  done, or the child quit
    return 0;
}

//  Collects the child's stdout or stderr; EOF may finish the job.
static int
s_on_output_ready (zloop_t *loop, zmq_pollitem_t *item, void *arg)
{
    (void) loop;
    job_t *job = (job_t *) arg;
    if (job->state == JOB_DONE
        || (item->fd != job->stdout_fd && item->fd != job->stderr_fd))
        return 0;  //  answered from a timer in this pass: nothing to read
    bool is_stdout = item->fd == job->stdout_fd;
    byte buffer [65536];
    ssize_t got = read (item->fd, buffer, sizeof buffer);
    if (got < 0 && (errno == EAGAIN || errno == EINTR))
        return 0;
    if (got <= 0) {
        s_close_fd (job, is_stdout ? &job->stdout_fd : &job->stderr_fd);
        s_job_try_finish (job);
        return 0;
    }
    if (!is_stdout) {
        size_t keep = STDERR_MAX - job->errors_size;
        keep = (size_t) got < keep ? (size_t) got : keep;
        if (keep && job->errors_size + keep > job->errors_max) {
            //  Most commands write little or nothing there
            size_t max = job->errors_max ? job->errors_max : STDERR_FIRST;
            while (max < job->errors_size + keep)
                max *= 2;
            max = max < STDERR_MAX ? max : STDERR_MAX;
            char *bigger = realloc (job->errors, max);
            if (!bigger)
                return 0;  //  the message falls back to the exit status
            job->errors = bigger;
            job->errors_max = max;
        }
        if (keep)
            memcpy (job->errors + job->errors_size, buffer, keep);
        job->errors_size += keep;
    }
    else {
        job->output_seen += got;
        if (job->stop == JOB_STOP_TOO_LARGE || job->stop == JOB_STOP_NO_MEMORY)
            return 0;  //  read to EOF, not kept
        //  More than the broker takes is never sent, so never kept: the
        //  command is stopped at once and its request gets an error reply
        if (job->output_size + got > OUTPUT_MAX) {
            s_job_stop (job, JOB_STOP_TOO_LARGE, true);
            return 0;
        }
        if (job->output_size + got > job->output_max) {
            size_t max = job->output_max ? job->output_max * 2 : 65536;
            while (max < job->output_size + got)
                max *= 2;
            byte *bigger = realloc (job->output, max);
            if (!bigger) {
                s_job_stop (job, JOB_STOP_NO_MEMORY, true);
                return 0;
            }
            job->output = bigger;
            job->output_max = max;
        }
        memcpy (job->output + job->output_size, buffer, got);
        job->output_size += got;
    }
    return 0;
}

//  Makes a pipe whose parent end (index parent_end) is nonblocking;
//  both ends close on exec (dup2 in the child clears that on 0/1/2).
static int
s_pipe (int fds [2], int parent_end)
{
    if (pipe2 (fds, O_CLOEXEC))
        return -1;
    return fcntl (fds [parent_end], F_SETFL, O_NONBLOCK);
}

static int
s_poll_fd (job_t *job, int fd, short events, zloop_fn handler)
{
    zmq_pollitem_t item = { NULL, fd, events, 0 };
    int rc = zloop_poller (job->serve->loop, &item, handler, job);
    if (rc == 0)
        zloop_poller_set_tolerant (job->serve->loop, &item);  //  HUP is normal
    return rc;
}

//  Writes what the child's stdin takes now of the request data (borrowed,
//  valid during the handler) and keeps a copy of the rest only: a small
//  request costs no copy. Returns -1 if no memory was left for the rest.
static int
s_job_feed (job_t *job, const void *data)
{
    ssize_t written = write (job->stdin_fd, data, job->input_size);
    if (written < 0 && errno != EAGAIN && errno != EINTR) {
        s_close_fd (job, &job->stdin_fd);  //  the child quit already
        return 0;
    }
    job->input_sent = job->input_skipped = written > 0 ? (size_t) written : 0;
    if (job->input_sent == job->input_size) {
        s_close_fd (job, &job->stdin_fd);
        return 0;
    }
    job->input = (byte *) malloc (job->input_size - job->input_sent);
    if (!job->input)
        return -1;
    memcpy (job->input, (const byte *) data + job->input_sent,
            job->input_size - job->input_sent);
    return 0;
}

//  Spawns CMD for the job in its own process group, feeds it the request
//  data (borrowed) and registers the pipes.
static void
s_job_start (job_t *job, const void *data)
{
    serve_t *self = job->serve;
    zlist_append (self->running, job);
    job->state = JOB_RUNNING;
    int in [2] = { -1, -1 }, out [2] = { -1, -1 }, err [2] = { -1, -1 };
    int rc = 0;
    if (s_pipe (in, 1) || s_pipe (out, 0) || s_pipe (err, 0))
        rc = errno;
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attributes;
    posix_spawn_file_actions_init (&actions);
    posix_spawnattr_init (&attributes);
    sigset_t no_signals, default_signals;
    sigemptyset (&no_signals);
    sigemptyset (&default_signals);
    sigaddset (&default_signals, SIGPIPE);  //  we ignore it; CMD should not
    sigaddset (&default_signals, SIGINT);
    sigaddset (&default_signals, SIGTERM);
    sigaddset (&default_signals, SIGHUP);
    posix_spawnattr_setsigmask (&attributes, &no_signals);
    posix_spawnattr_setsigdefault (&attributes, &default_signals);
    posix_spawnattr_setpgroup (&attributes, 0);
    posix_spawnattr_setflags (&attributes, POSIX_SPAWN_SETPGROUP
                                               | POSIX_SPAWN_SETSIGMASK
                                               | POSIX_SPAWN_SETSIGDEF);
    if (rc == 0) {
        posix_spawn_file_actions_adddup2 (&actions, in [0], STDIN_FILENO);
        posix_spawn_file_actions_adddup2 (&actions, out [1], STDOUT_FILENO);
        posix_spawn_file_actions_adddup2 (&actions, err [1], STDERR_FILENO);
        rc = posix_spawnp (&job->pid, self->cmd_argv [0], &actions, &attributes,
                           self->cmd_argv, environ);
    }
    posix_spawn_file_actions_destroy (&actions);
    posix_spawnattr_destroy (&attributes);
    int child_ends [] = { in [0], out [1], err [1] };
    for (int index = 0; index < 3; index++)
        if (child_ends [index] >= 0)
            close (child_ends [index]);
    job->stdin_fd = in [1];
    job->stdout_fd = out [0];
    job->stderr_fd = err [0];
    if (rc) {
        char message [256];
        snprintf (message, sizeof message, "cannot run %s: %s",
                  self->cmd_argv [0], strerror (rc));
        job->pid = 0;
        s_job_finish (job, message);
        return;
    }
    if (job->input_size == 0)
        s_close_fd (job, &job->stdin_fd);
    else if (s_job_feed (job, data) != 0) {
        kill (-job->pid, SIGKILL);
        waitpid (job->pid, &job->wait_status, 0);
        job->reaped = true;
        s_job_finish (job, "worker out of memory");
        return;
    }
    if ((job->stdin_fd >= 0
         && s_poll_fd (job, job->stdin_fd, ZMQ_POLLOUT, s_on_stdin_ready))
        || s_poll_fd (job, job->stdout_fd, ZMQ_POLLIN, s_on_output_ready)
        || s_poll_fd (job, job->stderr_fd, ZMQ_POLLIN, s_on_output_ready)) {
        //  Cannot watch the child: stop it, then report
        kill (-job->pid, SIGKILL);
        waitpid (job->pid, &job->wait_status, 0);
        job->reaped = true;
        s_job_finish (job, "worker cannot watch the command's pipes");
    }
}

//  Worker handler in CMD mode: runs the command now. The worker hands us
//  no more requests than its concurrency (the same as ours), and a
//  running job leaves the list before its reply ends, so a slot is free;
//  should one not be, the request goes back to the broker.
static void
s_on_command_request (pigato_worker_t *worker, pigato_reply_t *reply,
                      const void *data, size_t size, void *arg)
{
    (void) worker;
    serve_t *self = (serve_t *) arg;
    job_t *job = NULL;
    if (zlist_size (self->running) >= (size_t) self->concurrency)
        pigato_reply_reject (reply, "E_WORKER_BUSY");
    else if (!(job = (job_t *) calloc (1, sizeof (job_t))))
        pigato_reply_error (reply, "worker out of memory");
    if (!job) {
        pigato_reply_destroy (&reply);
        return;
    }
    job->input_size = size;
    job->serve = self;
    job->reply = reply;
    job->stdin_fd = job->stdout_fd = job->stderr_fd = -1;
    job->started = zclock_mono ();
    s_job_start (job, data);
}

//  Looks at one running job: a child whose client stopped caring
//  (timeout, cancel, gone) gets SIGTERM; one that ignores SIGTERM gets
//  SIGKILL after KILL_GRACE_MS; one that was killed is reaped even when
//  its pipes stay open (a process that left its group may hold them), so
//  its slot comes back. Returns true if the job was finished.
static bool
s_job_check (job_t *job, int64_t now)
{
    if (job->state == JOB_RUNNING && !pigato_reply_active (job->reply))
        s_job_stop (job, JOB_STOP_ABANDONED, false);
    if (job->state == JOB_TERMINATING && now >= job->kill_at)
        s_job_stop (job, JOB_STOP_ABANDONED, true);
    //  With both pipes closed, the reap timer owns the job already
    if (job->state != JOB_KILLED || job->reaped
        || (job->stdout_fd < 0 && job->stderr_fd < 0))
        return false;
    pid_t pid = waitpid (job->pid, &job->wait_status, WNOHANG);
    if (pid == 0)
        return false;
    job->reaped = true;
    s_job_finish (job,
                  pid < 0 ? "cannot collect the command's exit status" : NULL);
    return true;
}

//  Every JOB_CHECK_MS: frees what earlier passes answered, then checks
//  the running jobs (from the start again after one finishes: finishing
//  changes the list).
static int
s_on_job_check (zloop_t *loop, int timer_id, void *arg)
{
    (void) loop, (void) timer_id;
    serve_t *self = (serve_t *) arg;
    s_jobs_free_done (self);
    int64_t now = zclock_mono ();
    job_t *job = (job_t *) zlist_first (self->running);
    while (job) {
        if (s_job_check (job, now))
            job = (job_t *) zlist_first (self->running);
        else
            job = (job_t *) zlist_next (self->running);
    }
    return 0;
}

//  At shutdown: stop every child (TERM, then KILL after a grace period),
//  reap them, answer their requests.
static void
s_serve_stop_jobs (serve_t *self)
{
    job_t *job;
    for (job = (job_t *) zlist_first (self->running); job;
         job = (job_t *) zlist_next (self->running))
        if (job->pid > 0 && !job->reaped)
            kill (-job->pid, SIGTERM);
    int64_t deadline = zclock_mono () + KILL_GRACE_MS;
    while ((job = (job_t *) zlist_pop (self->running))) {
        while (job->pid > 0 && !job->reaped) {
            if (waitpid (job->pid, &job->wait_status, WNOHANG) != 0)
                job->reaped = true;
            else if (zclock_mono () >= deadline) {
                kill (-job->pid, SIGKILL);
                waitpid (job->pid, &job->wait_status, 0);
                job->reaped = true;
            }
            else
                zclock_sleep (REAP_RETRY_MS);
        }
        pigato_reply_error (job->reply, "worker stopped");
        s_job_destroy (&job);
    }
}

//  True if CMD names an executable (PATH search like posix_spawnp).
static bool
s_command_exists (const char *command)
{
    if (strchr (command, '/'))
        return access (command, X_OK) == 0;
    const char *path = getenv ("PATH");
    char candidate [4096];
    while (path && *path) {
        size_t length = strcspn (path, ":");
        snprintf (candidate, sizeof candidate, "%.*s/%s", (int) length, path,
                  command);
        struct stat info;
        if (stat (candidate, &info) == 0 && S_ISREG (info.st_mode)
            && access (candidate, X_OK) == 0)
            return true;
        path += length + (path [length] == ':');
    }
    return false;
}

//  --------------------------------------------------------------------------
//  pigato__cli_connect_all's connect for a worker.

static int
s_worker_connect (void *peer, const char *endpoint)
{
    return pigato_worker_connect ((pigato_worker_t *) peer, endpoint);
}

//  --------------------------------------------------------------------------
//  SIGTERM: the worker drains (no room; late requests, and those the
//  library holds for a slot, rejected to go to another worker), and the
//  commands running finish. Nothing waits here: every request handed to
//  serve runs at once.

static void
s_serve_drain (serve_t *self)
{
    self->draining = true;
    self->drain_deadline = zclock_mono () + self->drain_timeout_ms;
    pigato_worker_drain (self->worker, self->drain_timeout_ms);
}

//  --------------------------------------------------------------------------
//  Every REFUSAL_CHECK_MS. A drain asked for starts; one that has nothing
//  left, or is out of time, ends serve. A broker refused the worker (key,
//  handshake, READY) and none has it: trying on would not help without a
//  change on the broker's side, so serve ends, saying why.

static int
s_on_check (zloop_t *loop, int timer_id, void *arg)
{
    (void) loop, (void) timer_id;
    serve_t *self = (serve_t *) arg;
    if (s_drain_asked && !self->draining)
        s_serve_drain (self);
    if (self->draining
        && (pigato_worker_pending (self->worker) == 0
            || zclock_mono () >= self->drain_deadline)) {
        self->drained = true;
        return -1;
    }
    self->refusal = pigato_worker_refusal (self->worker);
    return self->refusal ? -1 : 0;
}

//  --------------------------------------------------------------------------
//  pigato serve: a worker on a zloop until SIGINT/SIGTERM.

int
pigato__cli_serve (cli_t *cli)
{
    int exit_code = EXIT_FAILURE_NET;
    serve_t self = { 0 };
    self.cmd_argv = cli->cmd_argv;
    self.concurrency = cli->concurrency;
    self.log_requests = cli->log_level >= PIGATO_LOG_INFO;
    if (self.cmd_argv && !s_command_exists (self.cmd_argv [0])) {
        fprintf (stderr,
                 "pigato: serve: command not found or not "
                 "executable: %s\n",
                 self.cmd_argv [0]);
        return EX_USAGE;
    }
    //  A child that closes its stdin early must not kill us
    signal (SIGPIPE, SIG_IGN);
    self.running = zlist_new ();
    self.loop = zloop_new ();
    self.worker = pigato_worker_new (
        cli->service, cli->echo ? s_on_echo : s_on_command_request, &self);
    if (!self.running || !self.loop || !self.worker) {
        fprintf (stderr,
                 "pigato: cannot create the worker: bad service name "
                 "'%s' (brokers refuse empty names, $... and mmi.* names, "
                 "spaces and control characters) or out of memory\n",
                 cli->service ? cli->service : "");
        exit_code = self.worker ? EXIT_FAILURE_NET : EX_USAGE;
        goto cleanup;
    }
    //  SIGINT (and a second SIGTERM) set zsys_interrupted, which ends the
    //  loop; the first SIGTERM asks for a drain
    self.drain_timeout_ms = cli->drain_timeout_set ? cli->drain_timeout_ms
                                                   : PIGATO_DRAIN_TIMEOUT_MS;
    pigato__cli_catch_signals (&s_drain_asked);
    if (cli->insecure)
        pigato_worker_set_insecure (self.worker, true);
    else {
        if (pigato_worker_set_server_key (self.worker, cli->server_key)
            || (cli->server_ca
                && pigato_worker_set_server_ca (self.worker, cli->server_ca))
            || (cli->key_file
                && pigato_worker_set_key_file (self.worker, cli->key_file))) {
            fprintf (stderr, "pigato: %s\n", pigato_worker_error (self.worker));
            exit_code = EX_USAGE;
            goto cleanup;
        }
    }
    if (cli->heartbeat_ms)
        pigato_worker_set_heartbeat (self.worker, cli->heartbeat_ms,
                                     PIGATO_LIVENESS);
    if (cli->framing)
        pigato_worker_set_framing (self.worker, cli->framing);
    pigato_worker_set_concurrency (self.worker, cli->concurrency);
    int rc = pigato__cli_connect_all (cli, self.worker, s_worker_connect);
    if (rc) {
        fprintf (stderr, "pigato: %s\n", pigato_worker_error (self.worker));
        exit_code = rc == PIGATO_E_KEY || rc == PIGATO_E_INVALID
                      ? EX_USAGE
                      : EXIT_FAILURE_NET;
        goto cleanup;
    }
    if (pigato_worker_attach (self.worker, self.loop)) {
        fprintf (stderr, "pigato: %s\n", pigato_worker_error (self.worker));
        goto cleanup;
    }
    if (self.cmd_argv)
        zloop_timer (self.loop, JOB_CHECK_MS, 0, s_on_job_check, &self);
    zloop_timer (self.loop, REFUSAL_CHECK_MS, 0, s_on_check, &self);
    //  A signal ends a zloop's poll: SIGTERM's drain goes on in it
    while (true) {
        zloop_start (self.loop);
        if (!s_drain_asked || self.drained || self.refusal || zsys_interrupted)
            break;
        if (!self.draining)
            s_serve_drain (&self);
    }
    if (self.drained && pigato_worker_pending (self.worker))
        fprintf (stderr,
                 "pigato: serve %s: drain timeout (%d ms): stopping %zu "
                 "request(s) still running\n",
                 cli->service, self.drain_timeout_ms,
                 pigato_worker_pending (self.worker));
    s_serve_stop_jobs (&self);
    exit_code = EXIT_SUCCESS;
    if (self.refusal) {
        fprintf (stderr, "pigato: serve %s: %s\n", cli->service,
                 pigato_worker_error (self.worker));
        exit_code = pigato__cli_failure_exit (self.refusal, EXIT_FAILURE_NET);
    }
cleanup:
    s_jobs_free_done (&self);
    pigato_worker_destroy (&self.worker);  //  sends DISCONNECT
    zloop_destroy (&self.loop);
    zlist_destroy (&self.running);
    return exit_code;
}
