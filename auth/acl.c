/*  =========================================================================
    acl.c - mesh policy: parse, validate, evaluate, cache (see acl.h)
    =========================================================================
*/
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <libgen.h>
#include <sodium.h>
#include <string.h>
#include <unistd.h>
#include "acl.h"
#include "../certs/ca.h"
#include "../keys/keyfile.h"
#include "../mesh/base/bkey.h"

#define MAX_TOKENS      1024                //  per line
#define CACHE_MAX       100000              //  cached decisions before a purge
#define GROUP_DEPTH_MAX 16                  //  nesting of @groups
#define ACL_FILE_MAX    (64 * 1024 * 1024)  //  ~1M identities; a bound

typedef struct {
    char name [PIGATO__NAME_MAX + 1];
    byte key [32];
    char z85 [PIGATO_Z85_KEY_SIZE + 1];
    int64_t not_after;  //  certificate expiry (epoch s), 0 = never
    char *cert_path;    //  its certificate file, NULL = not from one
} identity_t;

//  A trusted CA certificate (`trust` line), for expiry warnings.
typedef struct {
    int64_t not_after;  //  its notAfter, epoch seconds
    char path [];       //  the file
} trusted_ca_t;

//  Lines of certificate_expiring about identities in one check; the rest
//  are counted in one line, so a folder of thousands cannot flood the log.
#define EXPIRY_LINES_MAX 100

typedef struct {
    char name [PIGATO__NAME_MAX + 1];
    int line;               //  where it was defined
    zlistx_t *raw_members;  //  as written (names, @groups)
    zhashx_t *members;      //  identity names after expansion
    bool expanding;         //  cycle detection
} group_t;

typedef enum { SUBJECT_ANY, SUBJECT_IDENTITY, SUBJECT_GROUP } subject_t;

typedef struct {
    bool deny;
    int verb;
    int subject_kind;
    char subject [PIGATO__NAME_MAX + 1];
    group_t *group;  //  SUBJECT_GROUP
    char **patterns;
    size_t pattern_count;
} rule_t;

//  A `limit` line: which keys it sets (LIMIT_* bits), to what.
enum {
    LIMIT_PENDING = 1,
    LIMIT_PENDING_BYTES = 2,
    LIMIT_RATE = 4,
    LIMIT_CONNECTIONS = 8,
    LIMIT_STORED = 16,
    LIMIT_STORED_BYTES = 32
};
typedef struct {
    int subject_kind;
    char subject [PIGATO__NAME_MAX + 1];
    group_t *group;  //  SUBJECT_GROUP
    int set;         //  LIMIT_* bits
    pigato__limits_t values;
} limit_t;

struct _pigato__acl_t {
    bool allow_all;         //  no rules: everything allowed
    zlistx_t *entries;      //  every identity_t (owned)
    zlistx_t *cas;          //  every trusted_ca_t (owned), trust lines
    zhashx_t *identities;   //  name -> first identity_t with that name
    zhashx_t *by_key;       //  Z85 key -> identity_t
    zhashx_t *groups;       //  name -> group_t (owned)
    zlistx_t *group_order;  //  groups in file order (borrowed items)
    rule_t *rules;
    size_t rule_count;
    limit_t *limits;  //  limit lines, in file order
    size_t limit_count;
    zhashx_t *cache;  //  "verb identity \x1f service" -> 1 deny, 2 allow
    //  The last decision: a batch of requests from one caller to one
    //  service asks the same question over and over
    struct {
        bool valid;
        bool allowed;
        int verb;
        char identity [PIGATO__NAME_MAX + 1];
        char service [PIGATO_SERVICE_MAX + 1];
    } last;
};

//  Parsing context: file, line, error buffer.
typedef struct {
    const char *path;
    char *dir;  //  the file's directory, for relative paths
    int line;
    char *err;
    size_t err_size;
    zlistx_t *trusts;  //  trust lines: "LINE CA DIR" (pass 0)
    zlistx_t *crls;    //  revoked lines: "LINE CRL" (pass 0)
} parse_t;

static void
s_group_destroy (void **item_p)
{
    group_t *group = (group_t *) *item_p;
    if (group) {
        zlistx_destroy (&group->raw_members);
        zhashx_destroy (&group->members);
        free (group);
        *item_p = NULL;
    }
}

static void
s_identity_destroy (void **item_p)
{
    identity_t *identity = (identity_t *) *item_p;
    if (identity)
        free (identity->cert_path);
    free (identity);
    *item_p = NULL;
}

static void
s_free_item (void **item_p)
{
    free (*item_p);
    *item_p = NULL;
}

//  Adds an identity entry (takes ownership).
static void
s_identity_add (pigato__acl_t *self, identity_t *identity)
{
    zlistx_add_end (self->entries, identity);
    if (!zhashx_lookup (self->identities, identity->name))
        zhashx_insert (self->identities, identity->name, identity);
    zhashx_insert (self->by_key, identity->z85, identity);
}

static pigato__acl_t *
s_new (void)
{
    pigato__acl_t *self = (pigato__acl_t *) calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->entries = zlistx_new ();
    self->cas = zlistx_new ();
    self->identities = zhashx_new ();
    self->by_key = zhashx_new ();
    self->groups = zhashx_new ();
    self->cache = zhashx_new ();
    if (self->cache)
        //  Keys hold service names peers chose: a keyed hash, so they
        //  cannot pick names that all fall in one bucket
        zhashx_set_key_hasher (self->cache, pigato__hash_keyed_text);
    self->group_order = zlistx_new ();
    if (!self->entries || !self->cas || !self->identities || !self->by_key
        || !self->groups || !self->cache || !self->group_order) {
        pigato__acl_destroy (&self);
        return NULL;
    }
    zlistx_set_destructor (self->entries, s_identity_destroy);
    zlistx_set_destructor (self->cas, s_free_item);
    zhashx_set_destructor (self->groups, s_group_destroy);
    return self;
}

pigato__acl_t *
pigato__acl_new_allow_all (void)
{
    pigato__acl_t *self = s_new ();
    if (self)
        self->allow_all = true;
    return self;
}

void
pigato__acl_destroy (pigato__acl_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    pigato__acl_t *self = *self_p;
    for (size_t index = 0; index < self->rule_count; index++) {
        for (size_t pattern = 0; pattern < self->rules [index].pattern_count;
             pattern++)
            free (self->rules [index].patterns [pattern]);
        free (self->rules [index].patterns);
    }
    free (self->rules);
    free (self->limits);
    zlistx_destroy (&self->group_order);
    zhashx_destroy (&self->by_key);
    zhashx_destroy (&self->identities);
    zlistx_destroy (&self->entries);
    zlistx_destroy (&self->cas);
    zhashx_destroy (&self->groups);
    zhashx_destroy (&self->cache);
    free (self);
    *self_p = NULL;
}

static int s_error (parse_t *parse, const char *format, ...)
    __attribute__ ((format (printf, 2, 3)));

static int
s_error (parse_t *parse, const char *format, ...)
{
    char message [512];
    va_list args;
    va_start (args, format);
    vsnprintf (message, sizeof message, format, args);
    va_end (args);
    if (parse->line)
        pigato__errorf (parse->err, parse->err_size, "%s:%d: %s", parse->path,
                        parse->line, message);
    else
        pigato__errorf (parse->err, parse->err_size, "%s: %s", parse->path,
                        message);
    return -1;
}

//  Splits a line into tokens in place. A token starting with '#' ends the
//  line. (A Z85 key never starts with '#': its first digit is at most 82
//  of 85, as 2^32 / 85^4 < 83.)
static size_t
s_tokenize (char *line, char **tokens, size_t max)
{
    size_t count = 0;
    char *cursor = line;
    while (count < max) {
        while (*cursor && isspace ((unsigned char) *cursor))
            cursor++;
        if (!*cursor)
            break;
        if (*cursor == '#')
            break;
        tokens [count++] = cursor;
        while (*cursor && !isspace ((unsigned char) *cursor))
            cursor++;
        if (*cursor)
            *cursor++ = 0;
    }
    return count;
}

//  Resolves a path from the ACL file's folder. Caller frees.
static char *
s_resolve (parse_t *parse, const char *path)
{
    return path [0] == '/' ? strdup (path)
                           : zsys_sprintf ("%s/%s", parse->dir, path);
}

//  Reads a public key from a file: a zcert public (or secret) key file, or
//  a mesh certificate (PEM). Only the public key is taken from a zcert;
//  the file is read by the key file reader (regular files only, bytes in
//  wiped memory), never zconfig_load, which leaves a secret's text behind.
static int
s_read_key_file (const char *path, char *z85, char *err, size_t err_size)
{
    pigato__keyfile_info_t info;
    if (pigato__keyfile_inspect (path, &info, err, err_size) != PIGATO_OK)
        return -1;
    if (info.pem)
        return pigato__cert_public_key (path, z85, err, err_size) ? -1 : 0;
    if (!info.public_z85 [0]) {
        pigato__errorf (err, err_size, "not a zcert key file or certificate");
        return -1;
    }
    memcpy (z85, info.public_z85, sizeof info.public_z85);
    return 0;
}

//  Resolves an identity's key: a key file (zcert or certificate; relative
//  paths from the ACL file's folder) if one exists at that path, else
//  40-character Z85 text. The file comes first: many 40-character paths
//  are valid Z85 too.
static int
s_parse_key (parse_t *parse, const char *token, identity_t *identity)
{
    char *path = s_resolve (parse, token);
    char err [256] = "no such file";
    int rc = -1;
    if (access (path, F_OK) == 0)
        rc = s_read_key_file (path, identity->z85, err, sizeof err);
    else if (strlen (token) == PIGATO_Z85_KEY_SIZE
             && zmq_z85_decode (identity->key, token)) {
        strcpy (identity->z85, token);
        rc = 0;
    }
    if (rc)
        s_error (parse,
                 "identity %s: key '%s' is neither a readable key file "
                 "nor a 40-character Z85 key (%s: %s)",
                 identity->name, token, path, err);
    else
        zmq_z85_decode (identity->key, identity->z85);
    free (path);
    return rc;
}

static int
s_line_identity (pigato__acl_t *self, parse_t *parse, char **tokens,
                 size_t count)
{
    if (count < 3)
        return s_error (parse, "expected 'identity NAME KEY|KEYFILE "
                               "[KEY|KEYFILE...]'");
    if (!pigato__name_valid (tokens [1]))
        return s_error (parse,
                        "invalid identity name '%s' (letters, digits, "
                        "'.', '_', '-'; at most %d)",
                        tokens [1], PIGATO__NAME_MAX);
    if (zhashx_lookup (self->identities, tokens [1]))
        return s_error (parse, "identity '%s' is defined twice", tokens [1]);
    if (zhashx_lookup (self->groups, tokens [1]))
        return s_error (parse, "'%s' is already a group name", tokens [1]);
    //  Several keys (key rotation): one entry per key, all the same name
    for (size_t index = 2; index < count; index++) {
        identity_t *identity = (identity_t *) calloc (1, sizeof *identity);
        if (!identity)
            return s_error (parse, "out of memory");
        strcpy (identity->name, tokens [1]);
        if (s_parse_key (parse, tokens [index], identity)) {
            free (identity);
            return -1;
        }
        identity_t *other = (identity_t *) zhashx_lookup (self->by_key,
                                                          identity->z85);
        if (other) {
            int rc = s_error (parse, "identity '%s' has the same key as '%s'",
                              identity->name, other->name);
            free (identity);
            return rc;
        }
        s_identity_add (self, identity);
    }
    return 0;
}

//  trust CA.crt CERTDIR / revoked CA.crl: collected in pass 0, applied
//  after it (a revoked line may come after its trust line).
static int
s_line_trust (parse_t *parse, char **tokens, size_t count)
{
    bool trust = streq (tokens [0], "trust");
    if (trust && count != 3)
        return s_error (parse, "expected 'trust CA.crt CERTDIR'");
    if (!trust && count != 2)
        return s_error (parse, "expected 'revoked CA.crl'");
    char *first = s_resolve (parse, tokens [1]);
    char *second = trust ? s_resolve (parse, tokens [2]) : NULL;
    char *entry = trust
                    ? zsys_sprintf ("%d\n%s\n%s", parse->line, first, second)
                    : zsys_sprintf ("%d\n%s", parse->line, first);
    zlistx_add_end (trust ? parse->trusts : parse->crls, entry);
    free (first);
    free (second);
    return 0;
}

typedef struct {
    pigato__acl_t *self;
    parse_t *parse;
    size_t added;
    size_t skipped;
} scan_t;

//  Every certificate in a trusted folder: valid ones become identities
//  named by their CN; others are logged and skipped, so one bad file does
//  not take the mesh down.
static void
s_on_cert (const pigato__cert_info_t *info, const char *path,
           const char *problem, void *arg)
{
    scan_t *scan = (scan_t *) arg;
    char z85 [PIGATO_Z85_KEY_SIZE + 1];
    if (!problem) {
        zmq_z85_encode (z85, info->public_key, 32);
        identity_t *other = (identity_t *) zhashx_lookup (scan->self->by_key,
                                                          z85);
        identity_t *pinned = (identity_t *) zhashx_lookup (
            scan->self->identities, info->name);
        //  A renewal with the same key (pigato-keygen renew) beside the
        //  certificate it renews: one identity, valid as long as the
        //  later of the two
        if (other && other->cert_path && streq (other->name, info->name)) {
            if (info->not_after > other->not_after) {
                char *copy = strdup (path);
                if (copy) {
                    free (other->cert_path);
                    other->cert_path = copy;
                    other->not_after = info->not_after;
                }
            }
            scan->added++;
            return;
        }
        if (other)
            problem = "its key is already the identity of another entry";
        //  An `identity` line pins a name to one key (not_after 0: not
        //  from a certificate). A CA-issued CN equal to it would get that
        //  identity's rights with another key: refused, whoever issued it
        else if (pinned && pinned->not_after == 0)
            problem = "its CN is pinned to another key by an 'identity' "
                      "line; the certificate does not authenticate";
        else if (streq (info->name, PIGATO__ANONYMOUS))
            problem = "its CN is 'anonymous', the reserved name of "
                      "unauthenticated peers";
    }
    if (problem) {
        scan->skipped++;
        //  File names and the reason (which quotes file name, CN and
        //  issuer) come from whoever can write the folder: escaped
        if (pigato__log_level >= PIGATO_LOG_WARNING) {
            char path_text [1024], problem_text [1024];
            pigato__printable (path, strlen (path), path_text,
                               sizeof path_text);
            pigato__printable_quoted (problem, problem_text,
                                      sizeof problem_text);
            pigato__log (PIGATO_LOG_WARNING,
                         "event=cert_skipped path=%s "
                         "reason=\"%s\"",
                         path_text, problem_text);
        }
        return;
    }
    identity_t *identity = (identity_t *) calloc (1, sizeof *identity);
    if (!identity)
        return;
    snprintf (identity->name, sizeof identity->name, "%s", info->name);
    memcpy (identity->key, info->public_key, 32);
    strcpy (identity->z85, z85);
    identity->not_after = info->not_after > 0 ? info->not_after : 1;
    identity->cert_path = strdup (path);
    s_identity_add (scan->self, identity);
    scan->added++;
}

//  A folder the broker trusts holds certificates; a secret key there is
//  readable by whoever may read the folder and sits where it is easy to
//  copy with it (pigato-keygen issue -o certs used to put it there). The
//  broker cannot fix it, so it says so, once per file and load.
static void
s_warn_secrets (const char *dir)
{
    DIR *folder = opendir (dir);
    if (!folder)
        return;
    struct dirent *entry;
    while ((entry = readdir (folder))) {
        size_t length = strlen (entry->d_name);
        if (length < 7 || !streq (entry->d_name + length - 7, "_secret"))
            continue;
        char dir_text [512], file_text [512];
        pigato__log (PIGATO_LOG_WARNING,
                     "event=secret_in_trust_dir dir=%s file=%s "
                     "hint=\"a trusted folder should hold certificates "
                     "only: move secret keys elsewhere (pigato-keygen issue "
                     "NAME --ca CA -o CERTDIR -s SECRETDIR)\"",
                     pigato__printable (dir, strlen (dir), dir_text,
                                        sizeof dir_text),
                     pigato__printable (entry->d_name, length, file_text,
                                        sizeof file_text));
    }
    closedir (folder);
}

//  Loads each trusted CA with the CRL that it signed (if any), and turns
//  its folder of certificates into identities. Every revoked line must
//  belong to some trusted CA.
static int
s_apply_trust (pigato__acl_t *self, parse_t *parse)
{
    size_t crl_count = zlistx_size (parse->crls);
    bool *used = (bool *) calloc (crl_count + 1, sizeof (bool));
    //  Why each CRL did not load. Every CRL is tried with every CA, so
    //  "not signed by the CA" is kept only when nothing better came: an
    //  expired or rolled-back CRL must be reported as such
    char (*crl_errors) [512] = (char (*) [512]) calloc (crl_count + 1, 512);
    int rc = 0;
    if (!used || !crl_errors) {
        free (used);
        free (crl_errors);
        return s_error (parse, "out of memory");
    }
    for (char *entry = (char *) zlistx_first (parse->trusts); entry && !rc;
         entry = (char *) zlistx_next (parse->trusts)) {
        char *copy = strdup (entry);
        char *ca = strchr (copy, '\n') + 1;
        char *dir = strchr (ca, '\n');
        *dir++ = 0;
        parse->line = atoi (copy);
        char message [512];
        pigato__trust_t *trust = pigato__trust_load (ca, NULL, message,
                                                     sizeof message);
        if (!trust)
            rc = s_error (parse, "%s", message);
        //  The CRL this CA signed, if a revoked line names one
        size_t index = 0;
        for (char *crl_entry = (char *) zlistx_first (parse->crls);
             crl_entry && trust;
             crl_entry = (char *) zlistx_next (parse->crls), index++) {
            const char *crl_path = strchr (crl_entry, '\n') + 1;
            char attempt [512] = "";
            pigato__trust_t *with_crl = pigato__trust_load (
                ca, crl_path, attempt, sizeof attempt);
            if (!with_crl) {
                if (!crl_errors [index][0]
                    || !strstr (attempt, "is not signed by the CA"))
                    snprintf (crl_errors [index], 512, "%s", attempt);
                continue;
            }
            pigato__trust_destroy (&trust);
            trust = with_crl;
            used [index] = true;
            int64_t number = 0, next_update = 0;
            if (pigato__trust_crl (trust, &number, &next_update)
                && pigato__log_level >= PIGATO_LOG_INFO) {
                char path_text [512];
                pigato__log (PIGATO_LOG_INFO,
                             "event=crl_loaded path=%s number=%" PRId64
                             " next_update=%" PRId64,
                             pigato__printable (crl_path, strlen (crl_path),
                                                path_text, sizeof path_text),
                             number, next_update);
            }
            break;
        }
        if (trust) {
            trusted_ca_t *noted = (trusted_ca_t *) malloc (sizeof *noted
                                                           + strlen (ca) + 1);
            if (noted) {
                noted->not_after = pigato__trust_ca_not_after (trust);
                strcpy (noted->path, ca);
                zlistx_add_end (self->cas, noted);
            }
            scan_t scan = { self, parse, 0, 0 };
            if (pigato__trust_scan (trust, dir, s_on_cert, &scan, message,
                                    sizeof message)
                < 0)
                rc = s_error (parse, "%s", message);
            else {
                s_warn_secrets (dir);
                if (pigato__log_level >= PIGATO_LOG_INFO) {
                    char ca_text [512], dir_text [512];
                    pigato__log (PIGATO_LOG_INFO,
                                 "event=trust_loaded ca=%s "
                                 "dir=%s identities=%zu skipped=%zu",
                                 pigato__printable (ca, strlen (ca), ca_text,
                                                    sizeof ca_text),
                                 pigato__printable (dir, strlen (dir), dir_text,
                                                    sizeof dir_text),
                                 scan.added, scan.skipped);
                }
            }
        }
        pigato__trust_destroy (&trust);
        free (copy);
    }
    size_t index = 0;
    for (char *crl_entry = (char *) zlistx_first (parse->crls);
         crl_entry && !rc;
         crl_entry = (char *) zlistx_next (parse->crls), index++)
        if (!used [index]) {
            parse->line = atoi (crl_entry);
            //  The loader's message names the file and what is wrong
            //  (unreadable, expired, older than one loaded before, not
            //  signed by the CA)
            if (crl_errors [index][0])
                rc = s_error (parse, "the CRL cannot be used: %s",
                              crl_errors [index]);
            else
                rc = s_error (parse,
                              "the CRL '%s' belongs to no CA (no trust "
                              "line)",
                              strchr (crl_entry, '\n') + 1);
        }
    free (used);
    free (crl_errors);
    return rc;
}

static int
s_line_group (pigato__acl_t *self, parse_t *parse, char **tokens, size_t count)
{
    if (count < 3)
        return s_error (parse, "expected 'group NAME MEMBER...'");
    if (!pigato__name_valid (tokens [1]))
        return s_error (parse, "invalid group name '%s'", tokens [1]);
    if (zhashx_lookup (self->groups, tokens [1]))
        return s_error (parse, "group '%s' is defined twice", tokens [1]);
    group_t *group = (group_t *) calloc (1, sizeof *group);
    if (!group)
        return s_error (parse, "out of memory");
    strcpy (group->name, tokens [1]);
    group->line = parse->line;
    group->raw_members = zlistx_new ();
    zlistx_set_duplicator (group->raw_members, (zlistx_duplicator_fn *) strdup);
    zlistx_set_destructor (group->raw_members,
                           (zlistx_destructor_fn *) zstr_free);
    for (size_t index = 2; index < count; index++)
        zlistx_add_end (group->raw_members, tokens [index]);
    zhashx_insert (self->groups, group->name, group);
    zlistx_add_end (self->group_order, group);
    return 0;
}

//  True if a name in a group or rule may stand: a listed identity or
//  anonymous. With `trust` lines, identities come and go with their
//  certificates (revoked, expired, not issued yet), so an unknown name is
//  only a warning there; without them it is most likely a typo: an error.
static bool
s_known_name (pigato__acl_t *self, parse_t *parse, const char *name, int line)
{
    if (zhashx_lookup (self->identities, name)
        || streq (name, PIGATO__ANONYMOUS))
        return true;
    if (zlistx_size (parse->trusts) == 0 || !pigato__name_valid (name))
        return false;
    char path_text [512];
    pigato__log (PIGATO_LOG_WARNING,
                 "event=acl_warning file=%s line=%d "
                 "message=\"no valid certificate for identity '%s' now\"",
                 pigato__printable (parse->path, strlen (parse->path),
                                    path_text, sizeof path_text),
                 line, name);
    return true;
}

//  Expands a group's members into identity names, following @groups.
static int
s_expand (pigato__acl_t *self, parse_t *parse, group_t *group, int depth)
{
    if (group->members)
        return 0;
    if (group->expanding || depth > GROUP_DEPTH_MAX) {
        parse->line = group->line;
        return s_error (parse, "group '%s' contains itself", group->name);
    }
    group->expanding = true;
    zhashx_t *members = zhashx_new ();
    for (const char *member = (const char *) zlistx_first (group->raw_members);
         member; member = (const char *) zlistx_next (group->raw_members)) {
        if (member [0] == '@') {
            group_t *inner = (group_t *) zhashx_lookup (self->groups,
                                                        member + 1);
            if (!inner) {
                parse->line = group->line;
                zhashx_destroy (&members);
                return s_error (parse, "group '%s': unknown group '%s'",
                                group->name, member);
            }
            if (s_expand (self, parse, inner, depth + 1)) {
                zhashx_destroy (&members);
                return -1;
            }
            for (void *item = zhashx_first (inner->members); item;
                 item = zhashx_next (inner->members))
                zhashx_insert (members,
                               (const char *) zhashx_cursor (inner->members),
                               (void *) 1);
        }
        else if (s_known_name (self, parse, member, group->line))
            zhashx_insert (members, member, (void *) 1);
        else {
            parse->line = group->line;
            zhashx_destroy (&members);
            return s_error (parse, "group '%s': unknown identity '%s'",
                            group->name, member);
        }
    }
    group->members = members;
    group->expanding = false;
    return 0;
}

static bool
s_valid_pattern (const char *pattern)
{
    size_t length = strlen (pattern);
    if (length == 0 || length > PIGATO_SERVICE_MAX)
        return false;
    const char *star = strchr (pattern, '*');
    return !star || star == pattern + length - 1;
}

//  A rule's or limit's SUBJECT: *, @GROUP or an identity name.
static int
s_subject (pigato__acl_t *self, parse_t *parse, const char *subject, int *kind,
           char *name, group_t **group)
{
    if (streq (subject, "*"))
        *kind = SUBJECT_ANY;
    else if (subject [0] == '@') {
        *kind = SUBJECT_GROUP;
        *group = (group_t *) zhashx_lookup (self->groups, subject + 1);
        if (!*group)
            return s_error (parse, "unknown group '%s'", subject);
    }
    else {
        *kind = SUBJECT_IDENTITY;
        if (!s_known_name (self, parse, subject, parse->line))
            return s_error (parse,
                            "unknown identity '%s' (define it with "
                            "'identity %s KEY' first)",
                            subject, subject);
        snprintf (name, PIGATO__NAME_MAX + 1, "%s", subject);
    }
    return 0;
}

static int
s_line_rule (pigato__acl_t *self, parse_t *parse, char **tokens, size_t count)
{
    if (count < 4)
        return s_error (parse, "expected '%s SUBJECT serve|call PATTERN...'",
                        tokens [0]);
    rule_t rule = { .deny = streq (tokens [0], "deny") };
    if (s_subject (self, parse, tokens [1], &rule.subject_kind, rule.subject,
                   &rule.group))
        return -1;
    if (streq (tokens [2], "serve"))
        rule.verb = PIGATO__VERB_SERVE;
    else if (streq (tokens [2], "call"))
        rule.verb = PIGATO__VERB_CALL;
    else
        return s_error (parse, "unknown verb '%s' (expected serve or call)",
                        tokens [2]);
    for (size_t index = 3; index < count; index++)
        if (!s_valid_pattern (tokens [index]))
            return s_error (parse,
                            "invalid service pattern '%s' (a name, "
                            "prefix* or *)",
                            tokens [index]);
    rule.pattern_count = count - 3;
    rule.patterns = (char **) calloc (rule.pattern_count, sizeof (char *));
    rule_t *rules = (rule_t *) realloc (self->rules, (self->rule_count + 1)
                                                         * sizeof (rule_t));
    if (!rule.patterns || !rules) {
        free (rule.patterns);
        if (rules)
            self->rules = rules;
        return s_error (parse, "out of memory");
    }
    self->rules = rules;
    for (size_t index = 0; index < rule.pattern_count; index++)
        rule.patterns [index] = strdup (tokens [index + 3]);
    self->rules [self->rule_count++] = rule;
    return 0;
}

//  A limit's value: a count, or a size with K, M or G (KiB, MiB, GiB),
//  or "unlimited". -2 if it is none of these.
static int64_t
s_limit_value (const char *text, bool size)
{
    if (streq (text, "unlimited"))
        return PIGATO__UNLIMITED;
    if (!isdigit ((unsigned char) text [0]))
        return -2;
    errno = 0;
    char *end;
    unsigned long long value = strtoull (text, &end, 10);
    unsigned long long unit = 1;
    if (size && *end && !end [1]) {
        switch (toupper ((unsigned char) *end)) {
            case 'K':
                unit = 1ULL << 10;
                end++;
                break;
            case 'M':
                unit = 1ULL << 20;
                end++;
                break;
            case 'G':
                unit = 1ULL << 30;
                end++;
                break;
        }
    }
    if (errno || *end || value > (unsigned long long) INT64_MAX / unit)
        return -2;
    return (int64_t) (value * unit);
}

static int
s_line_limit (pigato__acl_t *self, parse_t *parse, char **tokens, size_t count)
{
    const char *usage = "expected 'limit SUBJECT KEY=VALUE...' (keys: "
                        "pending=N, pending-bytes=SIZE, rate=N, "
                        "connections=N, stored=N, stored-bytes=SIZE)";
    if (count < 3)
        return s_error (parse, "%s", usage);
    limit_t limit = { 0 };
    if (s_subject (self, parse, tokens [1], &limit.subject_kind, limit.subject,
                   &limit.group))
        return -1;
    for (size_t index = 2; index < count; index++) {
        char *equals = strchr (tokens [index], '=');
        if (!equals)
            return s_error (parse, "'%s': %s", tokens [index], usage);
        *equals = 0;
        const char *key = tokens [index], *text = equals + 1;
        int bit = streq (key, "pending")       ? LIMIT_PENDING
                : streq (key, "pending-bytes") ? LIMIT_PENDING_BYTES
                : streq (key, "rate")          ? LIMIT_RATE
                : streq (key, "connections")   ? LIMIT_CONNECTIONS
                : streq (key, "stored")        ? LIMIT_STORED
                : streq (key, "stored-bytes")  ? LIMIT_STORED_BYTES
                                               : 0;
        if (!bit)
            return s_error (parse,
                            "unknown limit '%s' (expected pending, "
                            "pending-bytes, rate, connections, stored or "
                            "stored-bytes)",
                            key);
        if (limit.set & bit)
            return s_error (parse, "limit '%s' is given twice", key);
        bool size = bit == LIMIT_PENDING_BYTES || bit == LIMIT_STORED_BYTES;
        int64_t value = s_limit_value (text, size);
        if (value == -2)
            return s_error (
                parse, "limit %s: '%s' is not %s or 'unlimited'", key, text,
                size ? "a size (N, NK, NM or NG)" : "a whole number");
        limit.set |= bit;
        if (bit == LIMIT_PENDING)
            limit.values.pending = value;
        else if (bit == LIMIT_PENDING_BYTES)
            limit.values.pending_bytes = value;
        else if (bit == LIMIT_RATE)
            limit.values.rate = value;
        else if (bit == LIMIT_CONNECTIONS)
            limit.values.connections = value;
        else if (bit == LIMIT_STORED)
            limit.values.stored = value;
        else
            limit.values.stored_bytes = value;
    }
    limit_t *limits = (limit_t *) realloc (
        self->limits, (self->limit_count + 1) * sizeof (limit_t));
    if (!limits)
        return s_error (parse, "out of memory");
    self->limits = limits;
    self->limits [self->limit_count++] = limit;
    return 0;
}

//  Reads the file into lines, then three passes: identities, groups,
//  rules (so groups and rules may name identities defined further down).
pigato__acl_t *
pigato__acl_load (const char *path, char *err, size_t err_size)
{
    parse_t parse = { .path = path,
                      .err = err,
                      .err_size = err_size,
                      .trusts = zlistx_new (),
                      .crls = zlistx_new () };
    zlistx_set_destructor (parse.trusts, (zlistx_destructor_fn *) zstr_free);
    zlistx_set_destructor (parse.crls, (zlistx_destructor_fn *) zstr_free);
    pigato__acl_t *self = NULL;
    FILE *file = NULL;
    zlistx_t *lines = NULL;
    char *copy = strdup (path ? path : "");
    parse.dir = strdup (dirname (copy));
    free (copy);

    if (!path || !*path) {
        s_error (&parse, "no ACL file given");
        goto failed;
    }
    //  O_NONBLOCK: a FIFO given as the ACL must not hang start or SIGHUP;
    //  the type and size are checked on the descriptor that is read
    int fd = open (path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    struct stat info;
    if (fd < 0 || fstat (fd, &info) != 0) {
        s_error (&parse, "cannot read ACL file: %s", strerror (errno));
        if (fd >= 0)
            close (fd);
        goto failed;
    }
    if (!S_ISREG (info.st_mode) || info.st_size > ACL_FILE_MAX) {
        s_error (&parse, "cannot read ACL file: %s",
                 S_ISREG (info.st_mode) ? "larger than 64 MiB"
                                        : "not a regular file");
        close (fd);
        goto failed;
    }
    file = fdopen (fd, "r");
    if (!file) {
        s_error (&parse, "cannot read ACL file: %s", strerror (errno));
        close (fd);
        goto failed;
    }
    self = s_new ();
    lines = zlistx_new ();
    if (!self || !lines) {
        s_error (&parse, "out of memory");
        goto failed;
    }
    zlistx_set_destructor (lines, (zlistx_destructor_fn *) zstr_free);
    char *buffer = NULL;
    size_t buffer_size = 0;
    ssize_t length;
    size_t total = 0;  //  the file may grow after fstat: bound what is read
    while ((length = getline (&buffer, &buffer_size, file)) != -1) {
        total += (size_t) length;
        if (total > ACL_FILE_MAX) {
            free (buffer);
            s_error (&parse, "cannot read ACL file: larger than 64 MiB");
            goto failed;
        }
        if (strlen (buffer) != (size_t) length) {
            parse.line = (int) zlistx_size (lines) + 1;
            free (buffer);
            s_error (&parse, "line holds a NUL byte");
            goto failed;
        }
        zlistx_add_end (lines, strdup (buffer));
    }
    free (buffer);
    for (int pass = 0; pass < 3; pass++) {
        parse.line = 0;
        for (char *text = (char *) zlistx_first (lines); text;
             text = (char *) zlistx_next (lines)) {
            parse.line++;
            char *line = strdup (text);
            char *tokens [MAX_TOKENS];
            size_t count = s_tokenize (line, tokens, MAX_TOKENS);
            int rc = 0;
            if (count == 0) {
            }
            else if (count == MAX_TOKENS)
                rc = s_error (&parse, "too many words on one line");
            else if (streq (tokens [0], "identity"))
                rc = pass == 0 ? s_line_identity (self, &parse, tokens, count)
                               : 0;
            else if (streq (tokens [0], "group"))
                rc = pass == 1 ? s_line_group (self, &parse, tokens, count) : 0;
            else if (streq (tokens [0], "allow")
                     || streq (tokens [0], "deny")) {
                if (pass == 2)
                    rc = s_line_rule (self, &parse, tokens, count);
            }
            else if (streq (tokens [0], "limit")) {
                if (pass == 2)
                    rc = s_line_limit (self, &parse, tokens, count);
            }
            else if (streq (tokens [0], "trust")
                     || streq (tokens [0], "revoked"))
                rc = pass == 0 ? s_line_trust (&parse, tokens, count) : 0;
            else if (pass == 0)
                rc = s_error (&parse,
                              "unknown keyword '%s' (expected "
                              "identity, group, allow, deny, limit, trust "
                              "or revoked)",
                              tokens [0]);
            free (line);
            if (rc)
                goto failed;
        }
        if (pass == 0 && s_apply_trust (self, &parse))
            goto failed;
        if (pass == 1) {
            //  In file order, so an error names the first line involved
            for (group_t *group = (group_t *) zlistx_first (self->group_order);
                 group; group = (group_t *) zlistx_next (self->group_order))
                if (s_expand (self, &parse, group, 0))
                    goto failed;
        }
    }
    zlistx_destroy (&lines);
    zlistx_destroy (&parse.trusts);
    zlistx_destroy (&parse.crls);
    fclose (file);
    free (parse.dir);
    return self;

failed:
    zlistx_destroy (&lines);
    zlistx_destroy (&parse.trusts);
    zlistx_destroy (&parse.crls);
    if (file)
        fclose (file);
    free (parse.dir);
    pigato__acl_destroy (&self);
    return NULL;
}

static bool
s_expired (const identity_t *identity)
{
    return identity->not_after && (int64_t) time (NULL) >= identity->not_after;
}

const char *
pigato__acl_identity_of_key (pigato__acl_t *self, const byte *public_key,
                             const char **reason)
{
    char z85 [PIGATO_Z85_KEY_SIZE + 1];
    zmq_z85_encode (z85, public_key, 32);
    identity_t *identity = (identity_t *) zhashx_lookup (self->by_key, z85);
    if (identity && s_expired (identity)) {
        if (reason)
            *reason = "certificate_expired";
        return NULL;
    }
    if (!identity && reason)
        *reason = "unknown_key";
    return identity ? identity->name : NULL;
}

bool
pigato__acl_identity_current (pigato__acl_t *self, const char *name,
                              const char *key_z85)
{
    if (self->allow_all)
        return true;
    if (!name)
        return false;
    if (!key_z85)  //  NULL mechanism: names only
        return streq (name, PIGATO__ANONYMOUS)
            || zhashx_lookup (self->identities, name) != NULL;
    identity_t *identity = (identity_t *) zhashx_lookup (self->by_key, key_z85);
    return identity && streq (identity->name, name) && !s_expired (identity);
}

static bool
s_pattern_matches (const char *pattern, const char *service)
{
    size_t length = strlen (pattern);
    if (length && pattern [length - 1] == '*')
        return strncmp (pattern, service, length - 1) == 0;
    return streq (pattern, service);
}

static bool
s_rule_matches (const rule_t *rule, const char *identity, int verb,
                const char *service)
{
    if (rule->verb != verb)
        return false;
    if (rule->subject_kind == SUBJECT_IDENTITY
        && !streq (rule->subject, identity))
        return false;
    if (rule->subject_kind == SUBJECT_GROUP
        && !zhashx_lookup (rule->group->members, identity))
        return false;
    for (size_t index = 0; index < rule->pattern_count; index++)
        if (s_pattern_matches (rule->patterns [index], service))
            return true;
    return false;
}

bool
pigato__acl_allows (pigato__acl_t *self, const char *identity, int verb,
                    const char *service)
{
    if (self->allow_all)
        return true;
    if (!identity || !service)
        return false;
    if (self->last.valid && self->last.verb == verb
        && streq (self->last.service, service)
        && streq (self->last.identity, identity))
        return self->last.allowed;
    char key [2 + PIGATO__NAME_MAX + 1 + PIGATO_SERVICE_MAX + 1];
    snprintf (key, sizeof key, "%c%s\x1f%s",
              verb == PIGATO__VERB_SERVE ? 's' : 'c', identity, service);
    void *cached = zhashx_lookup (self->cache, key);
    bool allowed = false;
    if (cached)
        allowed = cached == (void *) 2;
    else {
        //  name@VERSION and name@RANGE are versions of name: a rule that
        //  denies name denies them too (allowing name allows none of them)
        char base [PIGATO_SERVICE_MAX + 1] = "";
        const char *at = strchr (service, '@');
        if (at && (size_t) (at - service) < sizeof base) {
            memcpy (base, service, (size_t) (at - service));
            base [at - service] = 0;
        }
        for (size_t index = 0; index < self->rule_count; index++) {
            const rule_t *rule = &self->rules [index];
            if (rule->deny && base [0]
                && s_rule_matches (rule, identity, verb, base)) {
                allowed = false;
                break;
            }
            if (s_rule_matches (rule, identity, verb, service)) {
                if (rule->deny) {
                    allowed = false;
                    break;  //  deny wins, whatever the order
                }
                allowed = true;
            }
        }
        if (zhashx_size (self->cache) >= CACHE_MAX)
            zhashx_purge (self->cache);
        zhashx_insert (self->cache, key, allowed ? (void *) 2 : (void *) 1);
    }
    //  Remembered only when both names fit whole (longer ones are not
    //  valid names anyway, and never match a truncated copy)
    self->last.valid = strlen (identity) < sizeof self->last.identity
                    && strlen (service) < sizeof self->last.service;
    if (self->last.valid) {
        self->last.verb = verb;
        self->last.allowed = allowed;
        strcpy (self->last.identity, identity);
        strcpy (self->last.service, service);
    }
    return allowed;
}

void
pigato__acl_limits (pigato__acl_t *self, const char *identity,
                    pigato__limits_t *limits)
{
    *limits = PIGATO__LIMITS_DEFAULT;
    int rank [6] = { 0 };  //  of the line that set each key
    for (size_t index = 0; index < self->limit_count; index++) {
        const limit_t *limit = &self->limits [index];
        int line_rank = 0;
        if (limit->subject_kind == SUBJECT_ANY)
            line_rank = 1;
        else if (limit->subject_kind == SUBJECT_GROUP && identity
                 && zhashx_lookup (limit->group->members, identity))
            line_rank = 2;
        else if (limit->subject_kind == SUBJECT_IDENTITY && identity
                 && streq (limit->subject, identity))
            line_rank = 3;
        if (!line_rank)
            continue;
        if ((limit->set & LIMIT_PENDING) && line_rank >= rank [0]) {
            rank [0] = line_rank;
            limits->pending = limit->values.pending;
        }
        if ((limit->set & LIMIT_PENDING_BYTES) && line_rank >= rank [1]) {
            rank [1] = line_rank;
            limits->pending_bytes = limit->values.pending_bytes;
        }
        if ((limit->set & LIMIT_RATE) && line_rank >= rank [2]) {
            rank [2] = line_rank;
            limits->rate = limit->values.rate;
        }
        if ((limit->set & LIMIT_CONNECTIONS) && line_rank >= rank [3]) {
            rank [3] = line_rank;
            limits->connections = limit->values.connections;
        }
        if ((limit->set & LIMIT_STORED) && line_rank >= rank [4]) {
            rank [4] = line_rank;
            limits->stored = limit->values.stored;
        }
        if ((limit->set & LIMIT_STORED_BYTES) && line_rank >= rank [5]) {
            rank [5] = line_rank;
            limits->stored_bytes = limit->values.stored_bytes;
        }
    }
}

bool
pigato__acl_allow_all (pigato__acl_t *self)
{
    return self->allow_all;
}

//  --------------------------------------------------------------------------
//  Logs the trusted CAs and identity certificates that end within
//  warn_seconds, or have ended (see acl.h).

void
pigato__acl_expiry_check (pigato__acl_t *self, int64_t now,
                          int64_t warn_seconds)
{
    if (!self)
        return;
    for (trusted_ca_t *ca = (trusted_ca_t *) zlistx_first (self->cas); ca;
         ca = (trusted_ca_t *) zlistx_next (self->cas))
        //  An expired CA vouches for nobody: every identity it signed is
        //  refused, so its end is an error
        pigato__cert_expiry_log ("ca", NULL, ca->path, ca->not_after, now,
                                 warn_seconds, PIGATO_LOG_ERROR);
    size_t logged = 0, suppressed = 0;
    for (identity_t *identity = (identity_t *) zlistx_first (self->entries);
         identity; identity = (identity_t *) zlistx_next (self->entries)) {
        if (!identity->cert_path || identity->not_after - now >= warn_seconds)
            continue;
        if (logged == EXPIRY_LINES_MAX)
            suppressed++;
        else if (pigato__cert_expiry_log ("identity", identity->name,
                                          identity->cert_path,
                                          identity->not_after, now,
                                          warn_seconds, PIGATO_LOG_WARNING))
            logged++;
    }
    if (suppressed)
        pigato__log (PIGATO_LOG_WARNING,
                     "event=certificate_expiring_suppressed kind=identity "
                     "count=%zu",
                     suppressed);
}

void
pigato__acl_expiry (pigato__acl_t *self, int64_t *ca, int64_t *identity)
{
    *ca = *identity = 0;
    if (!self)
        return;
    for (trusted_ca_t *each = (trusted_ca_t *) zlistx_first (self->cas); each;
         each = (trusted_ca_t *) zlistx_next (self->cas))
        if (each->not_after > 0 && (*ca == 0 || each->not_after < *ca))
            *ca = each->not_after;
    for (identity_t *each = (identity_t *) zlistx_first (self->entries); each;
         each = (identity_t *) zlistx_next (self->entries))
        if (each->cert_path && each->not_after > 0
            && (*identity == 0 || each->not_after < *identity))
            *identity = each->not_after;
}

size_t
pigato__acl_identity_count (pigato__acl_t *self)
{
    return zlistx_size (self->entries);
}

size_t
pigato__acl_rule_count (pigato__acl_t *self)
{
    return self->rule_count;
}
