/*  test_broker_auth.c - the secured broker as a library user embeds it:
    it refuses to start open, and ACL decisions reach clients and workers
    through the public API. Real sockets on tcp://127.0.0.1; the broker
    runs in its own thread.
*/
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <cmocka.h>
#include <czmq.h>
#include "pigato.h"

static char s_dir [] = "/tmp/pigato-test-auth.XXXXXX";

//  Writes NAME.key and NAME.key_secret (0600); returns the public key Z85
//  in z85 (41 bytes).
static void
s_keypair (const char *name, char *z85)
{
    zcert_t *cert = zcert_new ();
    zcert_set_meta (cert, "name", "%s", name);
    char *path = zsys_sprintf ("%s/%s.key", s_dir, name);
    assert_int_equal (zcert_save (cert, path), 0);
    char *secret = zsys_sprintf ("%s_secret", path);
    chmod (secret, 0600);
    strcpy (z85, zcert_public_txt (cert));
    zcert_destroy (&cert);
    free (path);
    free (secret);
}

static char *
s_path (const char *name)
{
    return zsys_sprintf ("%s/%s", s_dir, name);
}

static int
setup (void **state)
{
    (void) state;
    assert_non_null (mkdtemp (s_dir));
    return 0;
}

static int
teardown (void **state)
{
    (void) state;
    char *command = zsys_sprintf ("rm -rf %s", s_dir);
    assert_int_equal (system (command), 0);
    free (command);
    return 0;
}

static void
test_startup_fails_closed_when_zap_endpoint_is_taken (void **state)
{
    (void) state;
    char z85 [41];
    s_keypair ("broker1", z85);
    //  Someone else in this process holds the ZAP endpoint
    zsock_t *squatter = zsock_new_rep ("inproc://zeromq.zap.01");
    assert_non_null (squatter);
    pigato_broker_t *broker = pigato_broker_new ();
    char *secret = s_path ("broker1.key_secret");
    assert_int_equal (pigato_broker_set_key_file (broker, secret), 0);
    pigato_broker_set_allow_any (broker, true);
    assert_int_equal (pigato_broker_bind (broker, "tcp://127.0.0.1:*"),
                      PIGATO_E_BIND);
    assert_non_null (strstr (pigato_broker_error (broker), "ZAP handler"));
    assert_null (pigato_broker_endpoint (broker));  //  nothing bound
    assert_int_not_equal (pigato_broker_run (broker), 0);
    pigato_broker_destroy (&broker);
    zsock_unbind (squatter, "inproc://zeromq.zap.01");
    zsock_destroy (&squatter);
    free (secret);
}

static void
test_no_security_mode_and_bad_acl_are_refused (void **state)
{
    (void) state;
    pigato_broker_t *broker = pigato_broker_new ();
    assert_int_equal (pigato_broker_bind (broker, "tcp://127.0.0.1:*"),
                      PIGATO_E_INVALID);
    assert_non_null (strstr (pigato_broker_error (broker), "no security mode"));
    char *acl = s_path ("bad.acl");
    FILE *file = fopen (acl, "w");
    fputs ("# nothing yet\nallow nobody call echo\n", file);
    fclose (file);
    assert_int_equal (pigato_broker_set_acl (broker, acl), PIGATO_E_ACL);
    char *expect = zsys_sprintf ("%s:2: unknown identity 'nobody'", acl);
    assert_non_null (strstr (pigato_broker_error (broker), expect));
    pigato_broker_destroy (&broker);
    free (acl);
    free (expect);
}

static void *
s_broker_thread (void *broker)
{
    pigato_broker_run ((pigato_broker_t *) broker);
    return NULL;
}

static void
s_echo (pigato_worker_t *worker, pigato_reply_t *reply, const void *data,
        size_t size, void *arg)
{
    (void) worker, (void) arg;
    pigato_reply_end (reply, data, size);
    pigato_reply_destroy (&reply);
}

typedef struct {
    bool done;
    int status;
    char data [256];
} result_t;

static void
s_on_reply (pigato_client_t *client, const char *rid, int status, bool final,
            const void *data, size_t size, void *arg)
{
    (void) client, (void) rid;
    result_t *result = (result_t *) arg;
    if (!final)
        return;
    result->done = true;
    result->status = status;
    snprintf (result->data, sizeof result->data, "%.*s", (int) size,
              (const char *) data);
}

//  Sends one request and drives client and worker until the final reply.
static result_t
s_call (pigato_client_t *client, pigato_worker_t *worker, const char *service,
        int timeout_ms)
{
    result_t result = { 0 };
    char opts [64];
    snprintf (opts, sizeof opts, "{\"timeout\":%d}", timeout_ms);
    assert_int_equal (pigato_client_request (client, service, "\"hi\"", 4, opts,
                                             s_on_reply, &result, NULL),
                      0);
    int64_t deadline = zclock_mono () + timeout_ms + 5000;
    while (!result.done && zclock_mono () < deadline) {
        pigato_client_wait (client, 5);
        if (worker)
            pigato_worker_wait (worker, 5);
    }
    assert_true (result.done);
    return result;
}

static void
test_acl_decisions_reach_clients_and_workers (void **state)
{
    (void) state;
    char broker_key [41], alice_key [41], worker_key [41], stranger_key [41];
    s_keypair ("broker2", broker_key);
    s_keypair ("alice", alice_key);
    s_keypair ("echo-worker", worker_key);
    s_keypair ("stranger", stranger_key);
    char *acl = s_path ("mesh.acl");
    char *text = zsys_sprintf ("identity alice        %s\n"
                               "identity echo-worker  echo-worker.key\n"
                               "allow    echo-worker  serve echo\n"
                               "allow    alice        call  *\n"
                               "deny     *            call  admin.*\n",
                               alice_key);
    FILE *file = fopen (acl, "w");
    fputs (text, file);
    fclose (file);

    pigato_broker_t *broker = pigato_broker_new ();
    char *secret = s_path ("broker2.key_secret");
    assert_int_equal (pigato_broker_set_key_file (broker, secret), 0);
    if (pigato_broker_set_acl (broker, acl))
        fail_msg ("%s", pigato_broker_error (broker));
    pigato_broker_set_heartbeat (broker, 200, 3);
    if (pigato_broker_bind (broker, "tcp://127.0.0.1:*"))
        fail_msg ("%s", pigato_broker_error (broker));
    char endpoint [256];
    snprintf (endpoint, sizeof endpoint, "%s", pigato_broker_endpoint (broker));
    pthread_t thread;
    pthread_create (&thread, NULL, s_broker_thread, broker);

    char *worker_secret = s_path ("echo-worker.key_secret");
    pigato_worker_t *worker = pigato_worker_new ("echo", s_echo, NULL);
    pigato_worker_set_heartbeat (worker, 200, 3);
    assert_int_equal (pigato_worker_set_server_key (worker, broker_key), 0);
    assert_int_equal (pigato_worker_set_key_file (worker, worker_secret), 0);
    assert_int_equal (pigato_worker_connect (worker, endpoint), 0);

    char *alice_secret = s_path ("alice.key_secret");
    pigato_client_t *alice = pigato_client_new ();
    pigato_client_set_heartbeat (alice, 200, 3);
    assert_int_equal (pigato_client_set_server_key (alice, broker_key), 0);
    assert_int_equal (pigato_client_set_key_file (alice, alice_secret), 0);
    assert_int_equal (pigato_client_connect (alice, endpoint), 0);

    //  Allowed: served
    result_t result = s_call (alice, worker, "echo", 5000);
    assert_int_equal (result.status, PIGATO_OK);
    assert_string_equal (result.data, "\"hi\"");

    //  Denied by a deny rule that beats `allow alice call *`: refused at
    //  once, long before the 60 s timeout
    int64_t start = zclock_mono ();
    result = s_call (alice, worker, "admin.reset", 60000);
    assert_int_equal (result.status, PIGATO_E_REPLY);
    assert_string_equal (result.data, "E_ACCESS_DENIED admin.reset");
    assert_true (zclock_mono () - start < 2000);

    //  Unknown key: the handshake is refused, the request times out
    char *stranger_secret = s_path ("stranger.key_secret");
    pigato_client_t *stranger = pigato_client_new ();
    pigato_client_set_heartbeat (stranger, 200, 3);
    pigato_client_set_server_key (stranger, broker_key);
    pigato_client_set_key_file (stranger, stranger_secret);
    assert_int_equal (pigato_client_connect (stranger, endpoint), 0);
    result = s_call (stranger, worker, "echo", 800);
    assert_int_not_equal (result.status, PIGATO_OK);

    pigato_client_destroy (&stranger);
    pigato_client_destroy (&alice);
    pigato_worker_destroy (&worker);
    pigato_broker_stop (broker);
    pthread_join (thread, NULL);
    //  What the broker counted (read after its thread ended)
    assert_true (pigato_broker_counter (broker, "denied") >= 1);
    assert_true (pigato_broker_counter (broker, "zap_denied") >= 1);
    assert_int_equal (pigato_broker_counter (broker, "identities"), 2);
    assert_int_equal (pigato_broker_counter (broker, "rules"), 3);
    pigato_broker_destroy (&broker);
    free (stranger_secret);
    free (alice_secret);
    free (worker_secret);
    free (secret);
    free (text);
    free (acl);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_startup_fails_closed_when_zap_endpoint_is_taken),
        cmocka_unit_test (test_no_security_mode_and_bad_acl_are_refused),
        cmocka_unit_test (test_acl_decisions_reach_clients_and_workers),
    };
    return cmocka_run_group_tests (tests, setup, teardown);
}
