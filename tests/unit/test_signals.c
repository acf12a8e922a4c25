/*  test_signals.c - libpigato leaves SIGINT and SIGTERM to the application:
    a handler installed before the first client, worker or broker still
    runs, and czmq installs none of its own.
*/
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>
#include <czmq.h>
#include "pigato.h"

static volatile sig_atomic_t s_terminated = 0;

static void
s_on_terminate (int signal_number)
{
    (void) signal_number;
    s_terminated = 1;
}

static void
s_on_request (pigato_worker_t *worker, pigato_reply_t *reply, const void *data,
              size_t size, void *arg)
{
    (void) worker, (void) arg;
    pigato_reply_end (reply, data, size);
    pigato_reply_destroy (&reply);
}

static void
test_application_handler_runs (void **state)
{
    (void) state;
    struct sigaction action;
    memset (&action, 0, sizeof action);
    action.sa_handler = s_on_terminate;
    sigemptyset (&action.sa_mask);
    assert_int_equal (sigaction (SIGTERM, &action, NULL), 0);

    //  Every kind of object, with sockets: czmq is initialised by now
    pigato_broker_t *broker = pigato_broker_new ();
    assert_non_null (broker);
    pigato_broker_set_insecure (broker, true);
    assert_int_equal (pigato_broker_bind (broker, "tcp://127.0.0.1:*"), 0);
    const char *endpoint = pigato_broker_endpoint (broker);
    pigato_client_t *client = pigato_client_new ();
    assert_non_null (client);
    pigato_client_set_insecure (client, true);
    assert_int_equal (pigato_client_connect (client, endpoint), 0);
    pigato_worker_t *worker = pigato_worker_new ("echo", s_on_request, NULL);
    assert_non_null (worker);
    pigato_worker_set_insecure (worker, true);
    assert_int_equal (pigato_worker_connect (worker, endpoint), 0);

    //  The application's handler is still the one installed
    struct sigaction now;
    sigaction (SIGTERM, NULL, &now);
    assert_ptr_equal (now.sa_handler, s_on_terminate);
    //  SIGINT, which the application left alone, keeps its default
    sigaction (SIGINT, NULL, &now);
    assert_ptr_equal (now.sa_handler, SIG_DFL);

    assert_int_equal (raise (SIGTERM), 0);
    assert_int_equal (s_terminated, 1);
    assert_int_equal (zsys_interrupted, 0);

    pigato_worker_destroy (&worker);
    pigato_client_destroy (&client);
    pigato_broker_destroy (&broker);
}

//  czmq initialised later, by the application itself, installs nothing
//  either: libpigato told it not to
static void
test_czmq_used_later_installs_nothing (void **state)
{
    (void) state;
    zsock_t *sock = zsock_new (ZMQ_PAIR);
    assert_non_null (sock);
    struct sigaction now;
    sigaction (SIGINT, NULL, &now);
    assert_ptr_equal (now.sa_handler, SIG_DFL);
    zsock_destroy (&sock);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_application_handler_runs),
        cmocka_unit_test (test_czmq_used_later_installs_nothing),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
