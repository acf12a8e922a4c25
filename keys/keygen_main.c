/*  =========================================================================
    keygen_main.c - pigato-keygen: issues CURVE identities.

    pigato-keygen new NAME [-o DIR] [--force]
        NAME.key (public, 0644) and NAME.key_secret (secret, 0600), czmq
        zcert format with `name` metadata.
    =========================================================================
*/
#include <czmq.h>
#include <errno.h>
#include <getopt.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "../include/pigato.h"
#include "keyfile.h"

#define EXIT_USAGE 64

static const char *s_usage =
"Usage: pigato-keygen new NAME [-o DIR] [--force]\n"
"\n"
"Creates a CURVE key pair for the identity NAME, in czmq's zcert format:\n"
"  DIR/NAME.key          public key, mode 0644 - give it to the broker/ACL\n"
"  DIR/NAME.key_secret   secret key, mode 0600 - keep it with the program\n"
"and prints the public key (Z85) and its fingerprint.\n"
"\n"
"Options:\n"
"  -o, --output DIR   where to write (default: current directory)\n"
"  -f, --force        overwrite existing files\n"
"  -h, --help         this text\n"
"  -V, --version      print the version\n";

//  Identity names end up in file names, ACLs and logs: keep them plain.
static bool
s_valid_name (const char *name)
{
    size_t length = strlen (name);
    if (length == 0 || length > 64 || name [0] == '.' || name [0] == '-')
        return false;
    for (size_t index = 0; index < length; index++) {
        char c = name [index];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
              || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.'))
            return false;
    }
    return true;
}

//  Writes the secret file with mode 0600 from its first byte: umask 077
//  while zcert writes a temporary name, then an atomic rename.
static int
s_save_secret (zcert_t *cert, const char *path)
{
    char *temp = zsys_sprintf ("%s.tmp%d", path, (int) getpid ());
    if (!temp)
        return -1;
    mode_t saved = umask (077);
    int rc = zcert_save_secret (cert, temp);
    umask (saved);
    if (rc == 0)
        rc = chmod (temp, 0600);
    if (rc == 0)
        rc = rename (temp, path);
    if (rc != 0)
        unlink (temp);
    zstr_free (&temp);
    return rc;
}

static int
s_new (const char *name, const char *dir, bool force)
{
    if (!s_valid_name (name)) {
        fprintf (stderr, "pigato-keygen: invalid name '%s' (use letters, "
                 "digits, '-', '_' and '.', at most 64, not starting with "
                 "'.' or '-')\n", name);
        return EXIT_USAGE;
    }
    if (mkdir (dir, 0755) != 0 && errno != EEXIST) {
        fprintf (stderr, "pigato-keygen: cannot create directory '%s': %s\n",
                 dir, strerror (errno));
        return 1;
    }
    char *public_path = zsys_sprintf ("%s/%s.key", dir, name);
    char *secret_path = zsys_sprintf ("%s/%s.key_secret", dir, name);
    int rc = 0;
    zcert_t *cert = NULL;
    if (!force && (access (public_path, F_OK) == 0
                   || access (secret_path, F_OK) == 0)) {
        fprintf (stderr, "pigato-keygen: '%s' already exists; not "
                 "overwriting it without --force\n",
                 access (secret_path, F_OK) == 0 ? secret_path : public_path);
        rc = 1;
        goto cleanup;
    }
    cert = zcert_new ();
    if (!cert) {
        fputs ("pigato-keygen: cannot generate a key pair\n", stderr);
        rc = 1;
        goto cleanup;
    }
    zcert_set_meta (cert, "name", "%s", name);
    if (s_save_secret (cert, secret_path) != 0) {
        fprintf (stderr, "pigato-keygen: cannot write '%s': %s\n",
                 secret_path, strerror (errno));
        rc = 1;
        goto cleanup;
    }
    mode_t saved = umask (022);
    int saved_rc = zcert_save_public (cert, public_path);
    umask (saved);
    if (saved_rc != 0) {
        fprintf (stderr, "pigato-keygen: cannot write '%s': %s\n",
                 public_path, strerror (errno));
        unlink (secret_path);
        rc = 1;
        goto cleanup;
    }
    char fingerprint [PIGATO_FINGERPRINT_SIZE];
    pigato_key_fingerprint (zcert_public_txt (cert), fingerprint);
    printf ("identity:    %s\npublic key:  %s\nfingerprint: %s\n"
            "public file: %s\nsecret file: %s (mode 0600)\n",
            name, zcert_public_txt (cert), fingerprint, public_path,
            secret_path);
cleanup:
    pigato__keyfile_cert_destroy (&cert);
    zstr_free (&public_path);
    zstr_free (&secret_path);
    return rc;
}

int
main (int argc, char *argv [])
{
    static const struct option options [] = {
        { "output", required_argument, NULL, 'o' },
        { "force", no_argument, NULL, 'f' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 }
    };
    const char *dir = ".";
    bool force = false;
    int option;
    while ((option = getopt_long (argc, argv, "o:fhV", options, NULL)) != -1) {
        switch (option) {
            case 'o': dir = optarg; break;
            case 'f': force = true; break;
            case 'h': fputs (s_usage, stdout); return 0;
            case 'V': printf ("pigato-keygen %s\n", pigato_version ()); return 0;
            default:
                fputs ("Try 'pigato-keygen --help'.\n", stderr);
                return EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        fputs (s_usage, stderr);
        return EXIT_USAGE;
    }
    const char *command = argv [optind];
    if (streq (command, "new")) {
        if (argc - optind != 2) {
            fputs ("Usage: pigato-keygen new NAME [-o DIR] [--force]\n",
                   stderr);
            return EXIT_USAGE;
        }
        return s_new (argv [optind + 1], dir, force);
    }
    fprintf (stderr, "pigato-keygen: unknown command '%s'\nTry "
             "'pigato-keygen --help'.\n", command);
    return EXIT_USAGE;
}
