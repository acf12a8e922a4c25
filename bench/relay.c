/*  =========================================================================
    relay.c - the baseline: a zero-logic ROUTER relay with pigato 0.0.46
    framing. Workers announce with READY, requests go round-robin, replies
    go back; no queues, no limits, no timers, no checks. What a broker can
    at best approach on this machine.

    pigato-relay --bind EP [--key SECRET_FILE | --insecure]
    =========================================================================
*/
#include <czmq.h>
#include <string.h>
#include "../keys/keyfile.h"

int
main (int argc, char *argv [])
{
    const char *bind = "tcp://127.0.0.1:5556", *key = NULL;
    for (int index = 1; index < argc; index++) {
        if (streq (argv [index], "--bind") && index + 1 < argc)
            bind = argv [++index];
        else if (streq (argv [index], "--key") && index + 1 < argc)
            key = argv [++index];
    }
    zsock_t *router = zsock_new (ZMQ_ROUTER);
    zsock_set_sndhwm (router, 100000);
    zsock_set_rcvhwm (router, 100000);
    zsock_set_backlog (router, 1024);  //  as pigato-broker: no dropped SYNs
    //  Wake up now and then: a signal between the interrupted check and
    //  the receive would otherwise leave the relay waiting forever
    zsock_set_rcvtimeo (router, 200);
    if (key) {
        char err [256];
        zcert_t *cert = NULL;
        if (pigato__keyfile_load_secret (key, &cert, err, sizeof err)) {
            fprintf (stderr, "pigato-relay: %s\n", err);
            return 1;
        }
        zcert_apply (cert, router);
        zsock_set_curve_server (router, 1);
        pigato__keyfile_cert_destroy (&cert);
    }
    if (zsock_bind (router, "%s", bind) == -1) {
        fprintf (stderr, "pigato-relay: cannot bind %s\n", bind);
        return 1;
    }
    fprintf (stderr, "event=ready relay=%s\n", bind);
    zframe_t *workers [64];
    size_t worker_count = 0, next = 0;
    while (!zsys_interrupted) {
        zmsg_t *msg = zmsg_recv (router);
        if (!msg)
            continue;
        zframe_t *sender = zmsg_pop (msg);
        char *header = zmsg_popstr (msg);
        char *type = zmsg_popstr (msg);
        if (!header || !type) {
        }
        else if (streq (header, "W") && streq (type, "1")) {
            if (worker_count < 64)
                workers [worker_count++] = zframe_dup (sender);
            zmsg_t *ack = zmsg_new ();
            zmsg_append (ack, &sender);
            zmsg_addstr (ack, "W");
            zmsg_addstr (ack, "1");
            zmsg_send (&ack, router);
        }
        else if (streq (type, "4") && zmsg_size (msg) < 3) {
            zmsg_t *ack = zmsg_new ();
            zmsg_append (ack, &sender);
            zmsg_addstr (ack, header);
            zmsg_addstr (ack, "4");
            zmsg_send (&ack, router);
        }
        else if (streq (header, "C") && streq (type, "2") && worker_count) {
            //  [service][rid][data][opts] -> W 2 client service "" rid data opts
            zframe_t *service = zmsg_pop (msg);
            zmsg_prepend (msg, &(zframe_t *) { zframe_new_empty () });
            zmsg_prepend (msg, &service);
            zmsg_prepend (msg, &sender);
            zmsg_pushstr (msg, "2");
            zmsg_pushstr (msg, "W");
            zmsg_prepend (msg, &(zframe_t *) { zframe_dup (
                                   workers [next++ % worker_count]) });
            zmsg_send (&msg, router);
        }
        else if (streq (header, "W")
                 && (streq (type, "3") || streq (type, "6"))) {
            //  [client]["" rid status data opts] -> client C type ...
            zframe_t *client = zmsg_pop (msg);
            zmsg_pushstr (msg, type);
            zmsg_pushstr (msg, "C");
            zmsg_prepend (msg, &client);
            zmsg_send (&msg, router);
        }
        zframe_destroy (&sender);
        zstr_free (&header);
        zstr_free (&type);
        zmsg_destroy (&msg);
    }
    for (size_t index = 0; index < worker_count; index++)
        zframe_destroy (&workers [index]);
    zsock_destroy (&router);
    return 0;
}
