/*  =========================================================================
    stats.c - the records the core counts in (stats.h): service and
    identity tables, bounded, and what the rare paths (refusals) need to
    find a record by name. The per-request counts are inline in stats.h.
    =========================================================================
*/
#include <string.h>
#include "stats.h"
#include "../base/bkey.h"

const int64_t pigato__latency_bounds_us [PIGATO__LATENCY_BUCKETS] = {
    100,     250,     500,     1000,     2500,     5000,
    10000,   25000,   50000,   100000,   250000,   500000,
    1000000, 2500000, 5000000, 10000000, 30000000, 60000000
};

static const char *s_outcome_names [PIGATO__OUTCOME_COUNT] = {
    "ok",          "error", "timeout",    "rejected", "denied",
    "worker_lost", "quota", "overloaded", "failed",   "dropped"
};

static void
s_record_destroy (void **item_p)
{
    free (*item_p);
    *item_p = NULL;
}

pigato__stats_t *
pigato__stats_new (void)
{
    pigato__stats_t *self = (pigato__stats_t *) calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->services = zhashx_new ();
    self->identities = zhashx_new ();
    self->other_service = (pigato__service_stats_t *) calloc (
        1, sizeof *self->other_service + sizeof PIGATO__STATS_OTHER);
    if (!self->services || !self->identities || !self->other_service) {
        pigato__stats_destroy (&self);
        return NULL;
    }
    strcpy (self->other_service->name, PIGATO__STATS_OTHER);
    //  Bounds below 2^power: each latency of [2^power, 2^(power+1)) is
    //  above them
    for (int power = 0; power < 64; power++) {
        uint8_t below = 0;
        while (below < PIGATO__LATENCY_BUCKETS
               && (power == 63
                   || pigato__latency_bounds_us [below] < (int64_t) 1 << power))
            below++;
        self->bucket_from [power] = below;
    }
    strcpy (self->other_identity.name, PIGATO__STATS_OTHER);
    zhashx_set_destructor (self->services, s_record_destroy);
    zhashx_set_destructor (self->identities, s_record_destroy);
    zhashx_set_key_hasher (self->services, pigato__hash_keyed_text);
    zhashx_set_key_hasher (self->identities, pigato__hash_keyed_text);
    return self;
}

void
pigato__stats_destroy (pigato__stats_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    pigato__stats_t *self = *self_p;
    zhashx_destroy (&self->services);
    zhashx_destroy (&self->identities);
    free (self->other_service);
    free (self);
    *self_p = NULL;
}

pigato__service_stats_t *
pigato__stats_service (pigato__stats_t *self, const char *name)
{
    return name
             ? (pigato__service_stats_t *) zhashx_lookup (self->services, name)
             : NULL;
}

pigato__service_stats_t *
pigato__stats_service_make (pigato__stats_t *self, const char *name)
{
    pigato__service_stats_t *record = pigato__stats_service (self, name);
    if (record || !name
        || zhashx_size (self->services) >= PIGATO__STATS_SERVICES_MAX)
        return record;
    size_t size = strlen (name);
    record = (pigato__service_stats_t *) calloc (1, sizeof *record + size + 1);
    if (!record)
        return NULL;
    memcpy (record->name, name, size + 1);
    if (zhashx_insert (self->services, record->name, record)) {
        free (record);
        return NULL;
    }
    return record;
}

pigato__identity_stats_t *
pigato__stats_identity (pigato__stats_t *self, const char *name)
{
    if (!name || !*name || strlen (name) > PIGATO__NAME_MAX)
        return &self->other_identity;
    pigato__identity_stats_t *record = (pigato__identity_stats_t *)
        zhashx_lookup (self->identities, name);
    if (record)
        return record;
    if (zhashx_size (self->identities) >= PIGATO__STATS_IDENTITIES_MAX)
        return &self->other_identity;
    record = (pigato__identity_stats_t *) calloc (1, sizeof *record);
    if (!record)
        return &self->other_identity;
    strcpy (record->name, name);
    if (zhashx_insert (self->identities, record->name, record)) {
        free (record);
        return &self->other_identity;
    }
    return record;
}

pigato__outcome_t
pigato__stats_outcome_of (const char *text)
{
    static const struct {
        const char *code;
        pigato__outcome_t outcome;
    } codes [] = { { "E_WORKER_LOST", PIGATO__OUTCOME_WORKER_LOST },
                   { "E_REJECTED", PIGATO__OUTCOME_REJECTED },
                   { "E_ACCESS_DENIED", PIGATO__OUTCOME_DENIED },
                   { "E_QUOTA", PIGATO__OUTCOME_QUOTA },
                   { "E_OVERLOADED", PIGATO__OUTCOME_OVERLOADED } };
    for (size_t index = 0; text && index < sizeof codes / sizeof codes [0];
         index++) {
        size_t size = strlen (codes [index].code);
        //  The code is the text's first word
        if (strncmp (text, codes [index].code, size) == 0
            && (text [size] == ' ' || text [size] == 0))
            return codes [index].outcome;
    }
    return PIGATO__OUTCOME_FAILED;
}

const char *
pigato__stats_outcome_name (pigato__outcome_t outcome)
{
    return outcome < PIGATO__OUTCOME_COUNT ? s_outcome_names [outcome] : "?";
}

void
pigato__stats_denied (pigato__stats_t *self, const char *identity,
                      const char *name)
{
    pigato__stats_identity (self, identity)->denials++;
    if (name)
        pigato__stats_finish (self, pigato__stats_service (self, name),
                              PIGATO__OUTCOME_DENIED, 0, 0);
}

//  qsort's comparisons of two records by name.
static int
s_by_service_name (const void *a, const void *b)
{
    return strcmp ((*(pigato__service_stats_t *const *) a)->name,
                   (*(pigato__service_stats_t *const *) b)->name);
}

static int
s_by_identity_name (const void *a, const void *b)
{
    return strcmp ((*(pigato__identity_stats_t *const *) a)->name,
                   (*(pigato__identity_stats_t *const *) b)->name);
}

//  Every item of a table, sorted with compare (caller frees).
static void **
s_sorted (zhashx_t *table, int (*compare) (const void *, const void *),
          size_t *count)
{
    *count = 0;
    size_t size = zhashx_size (table);
    void **items = size ? (void **) malloc (size * sizeof *items) : NULL;
    if (!items)
        return NULL;
    for (void *item = zhashx_first (table); item && *count < size;
         item = zhashx_next (table))
        items [(*count)++] = item;
    qsort (items, *count, sizeof *items, compare);
    return items;
}

pigato__service_stats_t **
pigato__stats_services_sorted (pigato__stats_t *self, size_t *count)
{
    return (pigato__service_stats_t **) s_sorted (self->services,
                                                  s_by_service_name, count);
}

pigato__identity_stats_t **
pigato__stats_identities_sorted (pigato__stats_t *self, size_t *count)
{
    return (pigato__identity_stats_t **) s_sorted (self->identities,
                                                   s_by_identity_name, count);
}
