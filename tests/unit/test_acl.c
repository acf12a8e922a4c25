/*  test_acl.c - the mesh policy as an operator writes it: identities from
    Z85 keys and key files, groups, allow/deny, patterns, and the errors a
    broken file gets.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include <sodium.h>
#include "../../auth/acl.h"
#include "../../certs/ca.h"

static char s_dir [] = "/tmp/pigato-test-acl.XXXXXX";

//  Two fixed, valid Z85 keys (any 32 bytes are a valid public key here)
static char s_key_a [41], s_key_b [41], s_key_c [41];

static int
setup (void **state)
{
    (void) state;
    assert_non_null (mkdtemp (s_dir));
    byte raw [32];
    for (int index = 0; index < 3; index++) {
        memset (raw, index + 1, sizeof raw);
        zmq_z85_encode (index == 0   ? s_key_a
                        : index == 1 ? s_key_b
                                     : s_key_c,
                        raw, 32);
    }
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

static char *
s_write (const char *name, const char *text)
{
    char *path = zsys_sprintf ("%s/%s", s_dir, name);
    FILE *file = fopen (path, "w");
    assert_non_null (file);
    fputs (text, file);
    fclose (file);
    return path;
}

static void
test_rules_groups_and_patterns (void **state)
{
    (void) state;
    //  A key file next to the ACL, named relatively
    zcert_t *cert = zcert_new ();
    zcert_set_meta (cert, "name", "web");
    char *key_path = zsys_sprintf ("%s/web.key", s_dir);
    assert_int_equal (zcert_save_public (cert, key_path), 0);
    char *text = zsys_sprintf ("# the mesh\n"
                               "identity  echo-worker  %s   # explicit key\n"
                               "identity  web          web.key\n"
                               "identity  ops          %s\n"
                               "group     frontends    web @admins\n"
                               "group     admins       ops\n"
                               "allow     echo-worker  serve  echo\n"
                               "allow     @frontends   call   echo billing.*\n"
                               "deny      *            call   admin.*\n"
                               "allow     ops          call   * \n",
                               s_key_a, s_key_b);
    char *path = s_write ("mesh.acl", text);
    char err [512] = "";
    pigato__acl_t *acl = pigato__acl_load (path, err, sizeof err);
    assert_non_null (acl);
    assert_string_equal (err, "");
    assert_int_equal (pigato__acl_identity_count (acl), 3);
    assert_int_equal (pigato__acl_rule_count (acl), 4);

    //  Keys map to names
    byte raw [32];
    zmq_z85_decode (raw, s_key_a);
    assert_string_equal (pigato__acl_identity_of_key (acl, raw, NULL),
                         "echo-worker");
    assert_string_equal (
        pigato__acl_identity_of_key (acl, zcert_public_key (cert), NULL),
        "web");
    zmq_z85_decode (raw, s_key_c);
    assert_null (pigato__acl_identity_of_key (acl, raw, NULL));

    //  serve / call per identity, group and pattern
    assert_true (
        pigato__acl_allows (acl, "echo-worker", PIGATO__VERB_SERVE, "echo"));
    assert_false (
        pigato__acl_allows (acl, "echo-worker", PIGATO__VERB_CALL, "echo"));
    assert_false (pigato__acl_allows (acl, "web", PIGATO__VERB_SERVE, "echo"));
    assert_true (pigato__acl_allows (acl, "web", PIGATO__VERB_CALL, "echo"));
    assert_true (
        pigato__acl_allows (acl, "web", PIGATO__VERB_CALL, "billing.charge"));
    assert_false (
        pigato__acl_allows (acl, "web", PIGATO__VERB_CALL, "billing"));
    assert_false (pigato__acl_allows (acl, "web", PIGATO__VERB_CALL, "echo2"));
    //  ops is in frontends through @admins, and may call anything...
    assert_true (
        pigato__acl_allows (acl, "ops", PIGATO__VERB_CALL, "billing.x"));
    assert_true (pigato__acl_allows (acl, "ops", PIGATO__VERB_CALL, "$dir"));
    //  ... except what deny covers: deny wins whatever the order
    assert_false (
        pigato__acl_allows (acl, "ops", PIGATO__VERB_CALL, "admin.reset"));
    //  Cached answers are the same answers
    for (int round = 0; round < 3; round++) {
        assert_false (
            pigato__acl_allows (acl, "ops", PIGATO__VERB_CALL, "admin.reset"));
        assert_true (
            pigato__acl_allows (acl, "web", PIGATO__VERB_CALL, "echo"));
    }
    //  The same question twice in a row (the remembered last answer), then
    //  one that differs from it in one field only: each keeps its answer
    for (int round = 0; round < 2; round++) {
        assert_true (
            pigato__acl_allows (acl, "web", PIGATO__VERB_CALL, "echo"));
        assert_true (
            pigato__acl_allows (acl, "web", PIGATO__VERB_CALL, "echo"));
        assert_false (
            pigato__acl_allows (acl, "web", PIGATO__VERB_SERVE, "echo"));
        assert_false (
            pigato__acl_allows (acl, "web", PIGATO__VERB_CALL, "echo2"));
        assert_false (
            pigato__acl_allows (acl, "echo-worker", PIGATO__VERB_CALL, "echo"));
        assert_true (pigato__acl_allows (acl, "echo-worker", PIGATO__VERB_SERVE,
                                         "echo"));
        assert_false (
            pigato__acl_allows (acl, "echo-worker", PIGATO__VERB_SERVE, "ech"));
    }
    //  Names too long to remember are still answered right
    char long_name [PIGATO_SERVICE_MAX + 40];
    memset (long_name, 'x', sizeof long_name - 1);
    long_name [sizeof long_name - 1] = 0;
    memcpy (long_name, "billing.", 8);
    assert_true (pigato__acl_allows (acl, "web", PIGATO__VERB_CALL, long_name));
    assert_true (pigato__acl_allows (acl, "web", PIGATO__VERB_CALL, long_name));
    assert_false (pigato__acl_allows (acl, "web", PIGATO__VERB_CALL, "echo2"));
    //  Unknown identities get nothing
    assert_false (
        pigato__acl_allows (acl, "stranger", PIGATO__VERB_CALL, "echo"));

    //  Live credentials are re-checked against the policy
    assert_true (pigato__acl_identity_current (acl, "echo-worker", s_key_a));
    assert_false (pigato__acl_identity_current (acl, "echo-worker", s_key_b));
    assert_false (pigato__acl_identity_current (acl, "gone", s_key_a));

    pigato__acl_destroy (&acl);
    assert_null (acl);
    zcert_destroy (&cert);
    free (key_path);
    free (text);
    free (path);
}

static void
test_errors_name_file_line_and_problem (void **state)
{
    (void) state;
    struct {
        const char *text;
        const char *expect;
    } cases [] = {
        { "identity a %s\nallow a serv echo\n",
          "mesh.acl:2: unknown verb 'serv' (expected serve or call)" },
        { "identity a %s\nallow b call echo\n",
          "mesh.acl:2: unknown identity 'b'" },
        { "identity a %s\nidentity a %s\n",
          "mesh.acl:2: identity 'a' is defined twice" },
        { "identity a %s\nidentity b %s\n",
          "mesh.acl:2: identity 'b' has the same key as 'a'" },
        { "identity a nokey\n",
          "mesh.acl:1: identity a: key 'nokey' is neither" },
        { "identity a %s\ngroup g a @h\ngroup h @g\n", "contains itself" },
        { "identity a %s\ngroup g b\n",
          "mesh.acl:2: group 'g': unknown identity 'b'" },
        { "identity a %s\nallow @nope call x\n",
          "mesh.acl:2: unknown group '@nope'" },
        { "identity a %s\nallow a call ec*ho\n",
          "mesh.acl:2: invalid service pattern 'ec*ho'" },
        { "identity a %s\nallow a call\n",
          "mesh.acl:2: expected 'allow SUBJECT" },
        { "permit a call x\n", "mesh.acl:1: unknown keyword 'permit'" },
        { "identity ../x %s\n", "mesh.acl:1: invalid identity name '../x'" },
        { "trust nowhere/ca.crt certs/\n", "mesh.acl:1: " },
        { "trust ca.crt\n", "mesh.acl:1: expected 'trust CA.crt CERTDIR'" },
        { "revoked a.crl b.crl\n", "mesh.acl:1: expected 'revoked CA.crl'" },
        { "revoked nowhere.crl\n", "mesh.acl:1: the CRL" },
        { "identity a %s\nlimit a\n",
          "mesh.acl:2: expected 'limit SUBJECT KEY=VALUE...'" },
        { "identity a %s\nlimit a pending\n",
          "mesh.acl:2: 'pending': expected 'limit" },
        { "identity a %s\nlimit a speed=3\n",
          "mesh.acl:2: unknown limit 'speed'" },
        { "identity a %s\nlimit a pending=-1\n",
          "mesh.acl:2: limit pending: '-1' is not a whole number" },
        { "identity a %s\nlimit a pending-bytes=3T\n",
          "mesh.acl:2: limit pending-bytes: '3T' is not a size" },
        { "identity a %s\nlimit a rate=1 rate=2\n",
          "mesh.acl:2: limit 'rate' is given twice" },
        { "identity a %s\nlimit b rate=1\n",
          "mesh.acl:2: unknown identity 'b'" },
        { "identity a %s\nlimit a pending=99999999999999999999\n",
          "is not a whole number" },
    };
    for (size_t index = 0; index < sizeof cases / sizeof cases [0]; index++) {
        char *text = zsys_sprintf (cases [index].text, s_key_a, s_key_a);
        char *path = s_write ("mesh.acl", text);
        char err [512] = "";
        pigato__acl_t *acl = pigato__acl_load (path, err, sizeof err);
        assert_null (acl);
        if (!strstr (err, cases [index].expect))
            fail_msg ("case %zu: got '%s', expected '%s'", index, err,
                      cases [index].expect);
        free (text);
        free (path);
    }
    char err [512] = "";
    assert_null (pigato__acl_load ("/nonexistent/mesh.acl", err, sizeof err));
    assert_non_null (strstr (err, "cannot read ACL file: No such file"));
}

static void
test_comments_and_keys_holding_a_hash (void **state)
{
    (void) state;
    //  Z85 keys may hold '#' (never first): only a word starting with '#'
    //  starts a comment
    byte raw [32];
    char key [41];
    do {
        randombytes_buf (raw, sizeof raw);
        zmq_z85_encode (key, raw, 32);
    } while (!strchr (key, '#'));
    char *text = zsys_sprintf ("identity hashy %s # comment\n"
                               "   # an indented comment\n"
                               "allow hashy call echo #trailing\n",
                               key);
    char *path = s_write ("mesh.acl", text);
    char err [512] = "";
    pigato__acl_t *acl = pigato__acl_load (path, err, sizeof err);
    if (!acl)
        fail_msg ("%s", err);
    assert_string_equal (pigato__acl_identity_of_key (acl, raw, NULL), "hashy");
    assert_true (pigato__acl_allows (acl, "hashy", PIGATO__VERB_CALL, "echo"));
    pigato__acl_destroy (&acl);
    free (text);
    free (path);
}

//  Issues NAME from the CA in ca_dir into certs/NAME.crt with a fresh key;
//  returns the key.
static void
s_issue (const char *ca_dir, const char *name, int64_t valid, byte *key)
{
    zcert_t *cert = zcert_new ();
    memcpy (key, zcert_public_key (cert), 32);
    char *path = zsys_sprintf ("%s/certs/%s.crt", s_dir, name);
    char err [512];
    if (pigato__ca_issue (ca_dir, name, key, valid, path, true, err,
                          sizeof err))
        fail_msg ("issue %s: %s", name, err);
    zcert_destroy (&cert);
    free (path);
}

static void
test_trusted_certificates_are_identities_until_revoked_or_expired (void **state)
{
    (void) state;
    char err [512] = "";
    char *ca_dir = zsys_sprintf ("%s/ca", s_dir);
    char *other_ca = zsys_sprintf ("%s/other-ca", s_dir);
    char *certs = zsys_sprintf ("%s/certs", s_dir);
    zsys_dir_create (certs);
    assert_int_equal (pigato__ca_init (ca_dir, "prod", true, err, sizeof err),
                      0);
    assert_int_equal (pigato__ca_init (other_ca, "prod", true, err, sizeof err),
                      0);
    byte web [32], api [32], old [32], brief [32], foreign [32];
    s_issue (ca_dir, "web", 3600, web);
    s_issue (ca_dir, "api", 3600, api);
    s_issue (ca_dir, "old", -3600, old);           //  expired before load
    s_issue (ca_dir, "brief", 2, brief);           //  expires while loaded
    s_issue (other_ca, "foreign", 3600, foreign);  //  not our CA
    char *path = s_write ("mesh.acl", "trust    ca/ca.crt certs\n"
                                      "revoked  ca/ca.crl\n"
                                      "allow    web   call  echo\n"
                                      "allow    api   call  echo\n"
                                      "group    team  web api\n"
                                      "allow    brief call  echo\n");
    pigato__acl_t *acl = pigato__acl_load (path, err, sizeof err);
    if (!acl)
        fail_msg ("%s", err);
    assert_string_equal (pigato__acl_identity_of_key (acl, web, NULL), "web");
    assert_string_equal (pigato__acl_identity_of_key (acl, api, NULL), "api");
    const char *reason = NULL;
    assert_null (pigato__acl_identity_of_key (acl, old, &reason));
    assert_null (pigato__acl_identity_of_key (acl, foreign, &reason));
    assert_string_equal (reason, "unknown_key");
    char z85 [41];
    zmq_z85_encode (z85, web, 32);
    assert_true (pigato__acl_identity_current (acl, "web", z85));
    assert_false (pigato__acl_identity_current (acl, "api", z85));
    assert_true (pigato__acl_allows (acl, "web", PIGATO__VERB_CALL, "echo"));
    assert_false (pigato__acl_allows (acl, "old", PIGATO__VERB_CALL, "echo"));

    //  Revoke api: the next load (a reload) no longer knows it, though
    //  rules and a group still name it (certificates come and go; only
    //  without trust lines is an unknown name an error)
    char *api_crt = zsys_sprintf ("%s/certs/api.crt", s_dir);
    assert_int_equal (pigato__ca_revoke (ca_dir, api_crt, err, sizeof err), 0);
    pigato__acl_t *reloaded = pigato__acl_load (path, err, sizeof err);
    if (!reloaded)
        fail_msg ("reload after a revocation failed: %s", err);
    assert_null (pigato__acl_identity_of_key (reloaded, api, NULL));
    assert_string_equal (pigato__acl_identity_of_key (reloaded, web, NULL),
                         "web");
    pigato__acl_destroy (&reloaded);

    //  brief expires while the policy is loaded: refused from then on,
    //  at the handshake and on live connections
    zmq_z85_encode (z85, brief, 32);
    assert_true (pigato__acl_identity_current (acl, "brief", z85));
    int64_t deadline = zclock_time () + 5000;
    while (pigato__acl_identity_current (acl, "brief", z85)
           && zclock_time () < deadline)
        zclock_sleep (100);
    assert_false (pigato__acl_identity_current (acl, "brief", z85));
    reason = NULL;
    assert_null (pigato__acl_identity_of_key (acl, brief, &reason));
    assert_string_equal (reason, "certificate_expired");
    pigato__acl_destroy (&acl);

    //  A CRL of another CA is an error, not a silent pass
    char *bad = s_write ("bad.acl", "trust ca/ca.crt certs\n"
                                    "revoked other-ca/ca.crl\n");
    assert_null (pigato__acl_load (bad, err, sizeof err));
    assert_non_null (strstr (err, "bad.acl:2: the CRL"));
    free (bad);
    free (api_crt);
    free (path);
    free (certs);
    free (other_ca);
    free (ca_dir);
}

//  `limit` lines: the most specific subject wins, key by key.
static void
test_limits_of_identities_groups_and_everyone (void **state)
{
    (void) state;
    char *text = zsys_sprintf ("identity a %s\n"
                               "identity b %s\n"
                               "identity c %s\n"
                               "group g a b\n"
                               "limit a pending=5 rate=unlimited "
                               "connections=4\n"
                               "limit @g pending=7 pending-bytes=2M rate=9\n"
                               "limit * pending-bytes=1k\n"
                               "limit * pending-bytes=3K # the last wins\n",
                               s_key_a, s_key_b, s_key_c);
    char *path = s_write ("mesh.acl", text);
    char err [512] = "";
    pigato__acl_t *acl = pigato__acl_load (path, err, sizeof err);
    if (!acl)
        fail_msg ("%s", err);
    pigato__limits_t limits;
    pigato__acl_limits (acl, "a", &limits);
    assert_int_equal (limits.pending, 5);
    assert_int_equal (limits.pending_bytes, 2 << 20);
    assert_int_equal (limits.rate, PIGATO__UNLIMITED);
    assert_int_equal (limits.connections, 4);
    pigato__acl_limits (acl, "b", &limits);
    assert_int_equal (limits.pending, 7);
    assert_int_equal (limits.pending_bytes, 2 << 20);
    assert_int_equal (limits.rate, 9);
    pigato__acl_limits (acl, "c", &limits);
    assert_int_equal (limits.pending, PIGATO__LIMIT_PENDING_DEFAULT);
    assert_int_equal (limits.pending_bytes, 3 << 10);
    assert_int_equal (limits.rate, PIGATO__LIMIT_RATE_DEFAULT);
    assert_int_equal (limits.connections, PIGATO__LIMIT_CONNECTIONS_DEFAULT);
    pigato__acl_destroy (&acl);
    //  No limit lines (and the allow-all policy): the defaults
    acl = pigato__acl_new_allow_all ();
    pigato__acl_limits (acl, "anonymous", &limits);
    assert_int_equal (limits.pending, PIGATO__LIMIT_PENDING_DEFAULT);
    assert_int_equal (limits.pending_bytes,
                      PIGATO__LIMIT_PENDING_BYTES_DEFAULT);
    pigato__acl_destroy (&acl);
    free (text);
    free (path);
}

static void
test_allow_all_policy (void **state)
{
    (void) state;
    pigato__acl_t *acl = pigato__acl_new_allow_all ();
    assert_true (pigato__acl_allow_all (acl));
    assert_true (
        pigato__acl_allows (acl, "anonymous", PIGATO__VERB_SERVE, "x"));
    assert_true (pigato__acl_identity_current (acl, "anonymous", NULL));
    pigato__acl_destroy (&acl);
}

//  One name rule for identities, groups, meshes and certificate names:
//  plain ASCII, 1 to 64 bytes, not starting with '.' or '-'.
static void
test_names_are_plain_ascii_up_to_64 (void **state)
{
    (void) state;
    char name [PIGATO__NAME_MAX + 2];
    memset (name, 'a', PIGATO__NAME_MAX);
    name [PIGATO__NAME_MAX] = 0;
    assert_true (pigato__name_valid (name));
    name [PIGATO__NAME_MAX] = 'a';
    name [PIGATO__NAME_MAX + 1] = 0;
    assert_false (pigato__name_valid (name));
    assert_true (pigato__name_valid ("svc-1_a.B9"));
    assert_true (pigato__name_valid ("a."));
    assert_false (pigato__name_valid (".hidden"));
    assert_false (pigato__name_valid ("-flag"));
    assert_true (pigato__name_valid ("_"));
    assert_false (pigato__name_valid ("x y"));
    assert_false (pigato__name_valid ("@group"));
    assert_false (pigato__name_valid ("a/b"));
    assert_false (pigato__name_valid ("caf\xc3\xa9"));
    assert_false (pigato__name_valid ("\xe9t\xe9"));
    assert_false (pigato__name_valid (""));
    assert_false (pigato__name_valid (NULL));
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_rules_groups_and_patterns),
        cmocka_unit_test (test_errors_name_file_line_and_problem),
        cmocka_unit_test (test_comments_and_keys_holding_a_hash),
        cmocka_unit_test (
            test_trusted_certificates_are_identities_until_revoked_or_expired),
        cmocka_unit_test (test_limits_of_identities_groups_and_everyone),
        cmocka_unit_test (test_allow_all_policy),
        cmocka_unit_test (test_names_are_plain_ascii_up_to_64),
    };
    return cmocka_run_group_tests (tests, setup, teardown);
}
