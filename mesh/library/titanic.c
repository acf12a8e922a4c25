/*  =========================================================================
    titanic.c - durable requests from a client (pigato.h): blocking calls
    of titanic.request, titanic.reply and titanic.close (ZeroMQ RFC 9) as
    pigato-broker answers them to pigato peers (docs/protocol.md,
    "Durable requests"): a 200 is a reply with status 0 (the id as a JSON
    string, the stored reply, or "200"); anything else is an error reply
    whose text starts with its status, "300 E_PENDING ...". A stored error
    reply (the service's, or E_EXPIRED, E_ACCESS_DENIED) comes as an error
    reply too, without the three digits in front.
    =========================================================================
*/
#include <ctype.h>
#include <jansson.h>
#include <sodium.h>
#include <string.h>
#include "../base/internal.h"

//  The status at the front of a titanic error text ("300 E_..."), or 0
//  when the text is not one (a stored error reply).
static int
s_status_of (const char *text)
{
    if (!text || !isdigit ((unsigned char) text [0])
        || !isdigit ((unsigned char) text [1])
        || !isdigit ((unsigned char) text [2]) || text [3] != ' '
        || strncmp (text + 4, "E_", 2) != 0)
        return 0;
    return (text [0] - '0') * 100 + (text [1] - '0') * 10 + (text [2] - '0');
}

//  True if text is an id: 32 hex digits.
static bool
s_id_valid (const char *text, size_t size)
{
    if (size != PIGATO_TITANIC_ID_SIZE - 1)
        return false;
    for (size_t index = 0; index < size; index++)
        if (!isxdigit ((unsigned char) text [index]))
            return false;
    return true;
}

//  Hands *text to the caller as reason (or frees it).
static void
s_reason (char **text, char **reason)
{
    if (reason)
        *reason = *text;
    else
        free (*text);
    *text = NULL;
}

//  The opts of a submission: the caller's, with the service and the key.
static char *
s_submit_opts (const char *service, const char *opts_json, const char *key)
{
    json_t *opts = opts_json ? json_loads (opts_json, 0, NULL) : json_object ();
    if (!json_is_object (opts)) {
        json_decref (opts);
        return NULL;
    }
    char made [2 * 16 + 1];
    if (!key) {
        //  A key of our own: the client's resend after a lost broker is
        //  then the same request, not a second one
        byte random [16];
        randombytes_buf (random, sizeof random);
        for (size_t index = 0; index < sizeof random; index++)
            snprintf (made + 2 * index, 3, "%02x", random [index]);
        key = made;
    }
    json_object_set_new (opts, "service", json_string (service));
    json_object_set_new (opts, "key", json_string (key));
    if (!json_object_get (opts, "retry"))
        json_object_set_new (opts, "retry", json_integer (2));
    char *text = json_dumps (opts, JSON_COMPACT);
    json_decref (opts);
    return text;
}

PIGATO_EXPORT int
pigato_titanic_submit (pigato_client_t *client, const char *service,
                       const void *data, size_t size, const char *opts_json,
                       const char *key, char *id, char **reason)
{
    if (reason)
        *reason = NULL;
    if (!client || !service || !id || (size && !data)
        || (key && (strlen (key) < 1 || strlen (key) > 64)))
        return PIGATO_E_INVALID;
    if (sodium_init () < 0)
        return PIGATO_E_SYSTEM;
    char *opts = s_submit_opts (service, opts_json, key);
    if (!opts)
        return PIGATO_E_INVALID;
    char *reply = NULL;
    size_t reply_size = 0;
    int rc = pigato_client_call (client, "titanic.request", data, size, opts,
                                 NULL, NULL, &reply, &reply_size);
    free (opts);
    if (rc == PIGATO_OK) {
        //  The id as a JSON string
        if (reply_size == PIGATO_TITANIC_ID_SIZE + 1 && reply [0] == '"'
            && reply [reply_size - 1] == '"'
            && s_id_valid (reply + 1, reply_size - 2)) {
            memcpy (id, reply + 1, PIGATO_TITANIC_ID_SIZE - 1);
            id [PIGATO_TITANIC_ID_SIZE - 1] = 0;
            free (reply);
            return PIGATO_OK;
        }
        //  Not a broker with a store: something else answered
        free (reply);
        reply = strdup ("the answer is not an id: does the broker have a "
                        "store (--store)?");
        rc = PIGATO_E_REPLY;
    }
    else if (rc == PIGATO_E_REPLY && s_status_of (reply) == 500)
        rc = PIGATO_E_STORE;
    s_reason (&reply, reason);
    return rc;
}

PIGATO_EXPORT int
pigato_titanic_fetch (pigato_client_t *client, const char *id, char **reply,
                      size_t *reply_size)
{
    if (reply)
        *reply = NULL;
    if (reply_size)
        *reply_size = 0;
    if (!client || !id || !s_id_valid (id, strlen (id)))
        return PIGATO_E_INVALID;
    char *answer = NULL;
    size_t size = 0;
    int rc = pigato_client_call (client, "titanic.reply", id, strlen (id), NULL,
                                 NULL, NULL, &answer, &size);
    if (rc == PIGATO_E_REPLY) {
        int status = s_status_of (answer);
        rc = status == 300 ? PIGATO_E_PENDING
           : status == 400 ? PIGATO_E_UNKNOWN
           : status == 500 ? PIGATO_E_STORE
                           : PIGATO_E_REPLY;
    }
    if (reply)
        *reply = answer;
    else
        free (answer);
    if (reply_size)
        *reply_size = size;
    return rc;
}

PIGATO_EXPORT int
pigato_titanic_close (pigato_client_t *client, const char *id, char **reason)
{
    if (reason)
        *reason = NULL;
    if (!client || !id || !s_id_valid (id, strlen (id)))
        return PIGATO_E_INVALID;
    char *answer = NULL;
    int rc = pigato_client_call (client, "titanic.close", id, strlen (id), NULL,
                                 NULL, NULL, &answer, NULL);
    if (rc == PIGATO_E_REPLY && s_status_of (answer) == 500)
        rc = PIGATO_E_STORE;
    if (rc == PIGATO_OK)
        free (answer);
    else
        s_reason (&answer, reason);
    return rc;
}
