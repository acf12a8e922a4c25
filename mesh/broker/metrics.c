/*  =========================================================================
    metrics.c - what operators see of a running broker (metrics.h): the
    Prometheus text for --metrics-listen and the JSON of $stats, rendered
    on the broker's thread from the counters the core, the gate and the
    budgets keep. Never on a request's path: a scrape or a $stats request
    costs a walk of the service and identity records (both bounded,
    stats.h) and of their workers.
    =========================================================================
*/
#include <inttypes.h>
#include <jansson.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include "broker_internal.h"

//  --------------------------------------------------------------------------
//  Names from peers, as text a Prometheus label or a JSON key can hold

//  Bytes of the valid UTF-8 sequence at text, 0 if there is none.
static size_t
s_utf8_length (const unsigned char *text)
{
    unsigned char first = text [0];
    size_t length;
    uint32_t code, minimum;
    if (first < 0x80)
        return 1;
    if ((first & 0xe0) == 0xc0) {
        length = 2;
        code = first & 0x1f;
        minimum = 0x80;
    }
    else if ((first & 0xf0) == 0xe0) {
        length = 3;
        code = first & 0x0f;
        minimum = 0x800;
    }
    else if ((first & 0xf8) == 0xf0) {
        length = 4;
        code = first & 0x07;
        minimum = 0x10000;
    }
    else
        return 0;
    for (size_t index = 1; index < length; index++) {
        if ((text [index] & 0xc0) != 0x80)
            return 0;  //  the terminating NUL stops here too
        code = (code << 6) | (text [index] & 0x3f);
    }
    if (code < minimum || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff))
        return 0;
    return length;
}

//  A name as valid UTF-8: bytes that are no UTF-8 become the text \xNN
//  (a name that holds such bytes is shown, not dropped: JSON and labels
//  must be UTF-8). For a Prometheus label (label true) '\\', '"' and a
//  newline are escaped as the text format wants, and other control bytes
//  are shown as \xNN too (a carriage return would split the line for some
//  readers). Caller frees; NULL if out of memory.
static char *
s_clean (const char *name, bool label)
{
    size_t size = strlen (name);
    char *text = (char *) malloc (size * 5 + 1);  //  "\\\\xNN" at most
    if (!text)
        return NULL;
    size_t used = 0;
    const unsigned char *at = (const unsigned char *) name;
    while (*at) {
        size_t length = s_utf8_length (at);
        if (label && *at == '\n') {
            memcpy (text + used, "\\n", 2);
            used += 2;
            at++;
            continue;
        }
        if (label && length == 1 && (*at < 0x20 || *at == 0x7f))
            length = 0;
        if (length == 0) {
            used += (size_t) sprintf (text + used,
                                      label ? "\\\\x%02x" : "\\x%02x", *at);
            at++;
            continue;
        }
        if (label && (*at == '\\' || *at == '"'))
            text [used++] = '\\';
        memcpy (text + used, at, length);
        used += length;
        at += length;
    }
    text [used] = 0;
    return text;
}

//  --------------------------------------------------------------------------
//  A service record with what its service shows now

typedef struct {
    pigato__service_stats_t *record;
    char *label;          //  its name for a label, NULL if out of memory
    bool other;           //  the record of every other name
    int64_t workers;      //  registered now
    int64_t concurrency;  //  their limits summed, -1: one has none
    int64_t queued;       //  requests waiting in its queue
    int64_t in_flight;    //  requests its workers hold
} s_service_t;

static void
s_service_now (pigato__core_t *core, s_service_t *view)
{
    const char *name = view->record->name;
    pigato__service_t *service = view->other
                                   ? NULL
                                   : pigato__services_lookup (
                                       core->services, name, strlen (name));
    view->workers = view->concurrency = view->queued = view->in_flight = 0;
    if (!service)
        return;
    view->queued = (int64_t) service->queued;
    for (pigato__worker_t *worker = service->workers; worker;
         worker = worker->next) {
        view->workers++;
        view->in_flight += (int64_t) worker->in_flight;
        if (worker->concurrency < 0 || view->concurrency < 0)
            view->concurrency = -1;
        else
            view->concurrency += worker->concurrency;
    }
}

//  Every service record, sorted by name, the other one last, with what
//  it shows now; labels made when label is true. Caller frees with
//  s_services_free. NULL (count 0) if there is none or out of memory.
static s_service_t *
s_services (pigato_broker_t *self, bool label, size_t *count)
{
    pigato__stats_t *stats = self->core->stats;
    size_t records;
    pigato__service_stats_t **sorted = pigato__stats_services_sorted (stats,
                                                                      &records);
    s_service_t *views = (s_service_t *) calloc (records + 1, sizeof *views);
    *count = 0;
    if (!views) {
        free (sorted);
        return NULL;
    }
    for (size_t index = 0; index <= records; index++) {
        s_service_t *view = &views [(*count)++];
        view->other = index == records;
        view->record = view->other ? stats->other_service : sorted [index];
        view->label = label ? s_clean (view->record->name, true) : NULL;
        s_service_now (self->core, view);
    }
    free (sorted);
    return views;
}

static void
s_services_free (s_service_t *views, size_t count)
{
    for (size_t index = 0; views && index < count; index++)
        free (views [index].label);
    free (views);
}

//  --------------------------------------------------------------------------
//  Prometheus text

//  HELP and TYPE of a family.
static void
s_family (FILE *out, const char *name, const char *type, const char *help)
{
    fprintf (out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

//  A family of one sample.
static void
s_single (FILE *out, const char *name, const char *type, const char *help,
          int64_t value)
{
    s_family (out, name, type, help);
    fprintf (out, "%s %" PRId64 "\n", name, value);
}

//  The routing core's counters (CORE_COUNTERS, core.h).
static const struct {
    const char *name;
    const char *help;
    size_t offset;
} s_core_counters [] = {
    { "pigato_requests_total",
      "Requests taken (answered from the cache or by the broker itself too).",
      offsetof (pigato__counters_t, requests) },
    { "pigato_replies_total", "Final replies forwarded.",
      offsetof (pigato__counters_t, replies) },
    { "pigato_partial_replies_total", "Partial replies forwarded.",
      offsetof (pigato__counters_t, partials) },
    { "pigato_rejects_total", "Rejects received from workers.",
      offsetof (pigato__counters_t, rejects) },
    { "pigato_timeouts_total", "Requests that expired in the broker.",
      offsetof (pigato__counters_t, timeouts) },
    { "pigato_failed_total", "Requests the broker answered with an error.",
      offsetof (pigato__counters_t, failed) },
    { "pigato_retries_total",
      "Requests dispatched again after their worker was lost.",
      offsetof (pigato__counters_t, retries) },
    { "pigato_bad_messages_total",
      "Malformed or out-of-protocol messages, dropped.",
      offsetof (pigato__counters_t, bad_messages) },
    { "pigato_late_replies_total",
      "Replies for requests that are gone or not the worker's, dropped.",
      offsetof (pigato__counters_t, late_replies) },
    { "pigato_workers_gone_total",
      "Workers removed (disconnected, expired, refused).",
      offsetof (pigato__counters_t, workers_gone) },
    { "pigato_unsent_total", "Messages for a closed connection, dropped.",
      offsetof (pigato__counters_t, unsent) },
    { "pigato_over_quota_total",
      "Refusals over an identity's limits or the rate of $ services.",
      offsetof (pigato__counters_t, over_quota) },
    { "pigato_over_memory_total", "Requests refused over the memory ceiling.",
      offsetof (pigato__counters_t, over_memory) },
};

//  The durable store's series (--store): its counters and gauges, read
//  as pigato_broker_counter ("titanic_NAME") reads them (for /metrics
//  and for $stats.broker's "store").
static const struct {
    const char *name;  //  titanic_NAME
    const char *type;
    const char *help;
} s_titanic_series [] = {
    { "submitted", "counter", "Durable requests stored (acknowledged)." },
    { "duplicates", "counter",
      "Durable submissions answered with an earlier id (key)." },
    { "refused", "counter", "Durable submissions refused (400, 500)." },
    { "attempts", "counter",
      "Attempts of durable requests handed to routing." },
    { "retries", "counter", "Attempts after a durable request's first." },
    { "replied", "counter", "Final replies of durable requests stored." },
    { "expired", "counter", "Durable requests ended by their ttl." },
    { "denied", "counter", "Durable requests ended with E_ACCESS_DENIED." },
    { "closed", "counter", "titanic.close requests answered." },
    { "deleted", "counter", "Durable records removed from the store." },
    { "write_failures", "counter",
      "Batches the store could not write (see event=titanic_write_"
      "failed)." },
    { "commits", "counter", "Store transactions committed." },
    { "operations", "counter", "Writes those transactions held." },
    { "syncs", "counter", "fdatasync calls that made commits durable." },
    { "stored", "gauge", "Durable requests held (stored, not closed)." },
    { "in_flight", "gauge", "Durable requests at a worker now." },
    { "parked", "gauge",
      "Durable requests waiting for a worker of their service." },
    { "broken", "gauge",
      "1 once the store takes nothing more (a failed fdatasync) until "
      "the broker restarts." },
    { "sync_interval_ms", "gauge",
      "0: each commit is fsync'd before it is acknowledged; otherwise the "
      "store is fsync'd at most this often (--store-sync)." },
};
#define TITANIC_SERIES (sizeof s_titanic_series / sizeof s_titanic_series [0])

static int64_t
s_titanic_value (pigato_broker_t *self, size_t index)
{
    char key [64];
    snprintf (key, sizeof key, "titanic_%s", s_titanic_series [index].name);
    return pigato_broker_counter (self, key);
}

static void
s_titanic_text (pigato_broker_t *self, FILE *out)
{
    for (size_t index = 0; index < TITANIC_SERIES; index++) {
        char name [96];
        snprintf (name, sizeof name, "pigato_titanic_%s%s",
                  s_titanic_series [index].name,
                  streq (s_titanic_series [index].type, "counter") ? "_total"
                                                                   : "");
        s_single (out, name, s_titanic_series [index].type,
                  s_titanic_series [index].help, s_titanic_value (self, index));
    }
}

static void
s_broker_text (pigato_broker_t *self, FILE *out)
{
    pigato__core_t *core = self->core;
    pigato__metrics_t *metrics = &self->metrics;
    s_family (out, "pigato_build_info", "gauge",
              "The broker's version (always 1).");
    fprintf (out, "pigato_build_info{version=\"%s\"} 1\n", pigato_version ());
    s_single (out, "pigato_start_time_seconds", "gauge",
              "When the broker started, in seconds since the epoch.",
              metrics->started_at);
    s_single (out, "pigato_connections", "gauge", "Connections open.",
              self->connections);
    s_single (out, "pigato_connections_accepted_total", "counter",
              "Connections accepted.", metrics->connections_accepted);
    s_single (out, "pigato_connections_refused_total", "counter",
              "Connections shut at once: over --max-connections or their "
              "identity's connections limit.",
              self->connections_refused);
    s_single (out, "pigato_connections_evicted_total", "counter",
              "Connections shut in their handshake to let a newer one in.",
              self->connections_evicted);
    pigato__zap_t *zap = self->guard ? pigato__guard_zap (self->guard) : NULL;
    s_single (out, "pigato_handshakes_accepted_total", "counter",
              "Security handshakes accepted.",
              zap ? pigato__zap_accepted (zap) : 0);
    s_family (out, "pigato_handshakes_refused_total", "counter",
              "Security handshakes refused, by reason.");
    for (int reason = 0; reason < PIGATO__ZAP_REASONS; reason++)
        fprintf (out,
                 "pigato_handshakes_refused_total{reason=\"%s\"} %" PRId64 "\n",
                 pigato__zap_reason_name (reason),
                 zap ? pigato__zap_refused (zap, reason) : 0);
    s_single (out, "pigato_denied_total", "counter",
              "Messages the ACL refused (call or serve).",
              self->guard ? pigato__guard_denials (self->guard) : 0);
    for (size_t index = 0;
         index < sizeof s_core_counters / sizeof s_core_counters [0]; index++)
        s_single (out, s_core_counters [index].name, "counter",
                  s_core_counters [index].help,
                  *(const int64_t *) ((const char *) &core->counters
                                      + s_core_counters [index].offset));
    s_single (out, "pigato_workers", "gauge", "Workers registered.",
              (int64_t) zhashx_size (core->workers));
    s_single (out, "pigato_requests_pending", "gauge",
              "Requests held: queued or at a worker.",
              (int64_t) pigato__table_size (core->requests));
    s_single (out, "pigato_cache_hits_total", "counter",
              "Requests answered from the reply cache.",
              pigato__cache_hits (core->cache));
    s_single (out, "pigato_cache_entries", "gauge", "Replies cached.",
              (int64_t) pigato__cache_entries (core->cache));
    s_single (out, "pigato_cache_bytes", "gauge",
              "Bytes the reply cache holds.",
              (int64_t) pigato__cache_bytes (core->cache));
    s_single (out, "pigato_resident_memory_bytes", "gauge",
              "The broker's resident memory at its last reading.",
              self->budget.rss);
    s_single (out, "pigato_max_memory_bytes", "gauge",
              "The memory ceiling (--max-memory).", self->budget.max_memory);
    s_single (out, "pigato_inbound_cut_total", "counter",
              "Connections cut over their inbound budget.",
              self->budget.inbound_cut);
    s_single (out, "pigato_slow_consumers_total", "counter",
              "Connections cut over their outbound budget.",
              self->budget.slow_consumers);
    s_single (out, "pigato_memory_cut_total", "counter",
              "Connections cut over the memory ceiling.",
              self->budget.memory_cut);
    s_single (out, "pigato_messages_too_large_total", "counter",
              "Messages over the size limit, dropped whole.",
              self->budget.too_large);
    if (self->acl_path) {
        s_single (out, "pigato_acl_reloads_total", "counter",
                  "ACL reloads (SIGHUP) that took effect.",
                  metrics->acl_reloads);
        s_single (out, "pigato_acl_reload_failures_total", "counter",
                  "ACL reloads that failed (the old policy stayed).",
                  metrics->acl_reload_failures);
        s_single (out, "pigato_acl_loaded_timestamp_seconds", "gauge",
                  "When the policy in force was loaded (start or last "
                  "reload), in seconds since the epoch.",
                  metrics->acl_loaded_at ? metrics->acl_loaded_at
                                         : metrics->started_at);
    }
    if (self->titanic)
        s_titanic_text (self, out);
    static const char *kinds [PIGATO__CERT_KINDS] = { "broker", "ca",
                                                      "identity" };
    bool any = false;
    int64_t now = (int64_t) time (NULL);
    for (int kind = 0; kind < PIGATO__CERT_KINDS; kind++) {
        if (!metrics->cert_not_after [kind])
            continue;
        if (!any)
            s_family (out, "pigato_certificate_expiry_seconds", "gauge",
                      "Seconds until the earliest expiry of a kind of "
                      "certificate (negative: expired).");
        any = true;
        fprintf (out,
                 "pigato_certificate_expiry_seconds{kind=\"%s\"} %" PRId64 "\n",
                 kinds [kind], metrics->cert_not_after [kind] - now);
    }
}

//  A per-service gauge family (the other record has none).
static void
s_service_gauge (FILE *out, s_service_t *views, size_t count, const char *name,
                 const char *help, size_t field)
{
    s_family (out, name, "gauge", help);
    for (size_t index = 0; index < count; index++) {
        s_service_t *view = &views [index];
        if (view->other || !view->label)
            continue;
        int64_t value = *(const int64_t *) ((const char *) view + field);
        if (field == offsetof (s_service_t, concurrency) && value < 0)
            fprintf (out, "%s{service=\"%s\"} +Inf\n", name, view->label);
        else
            fprintf (out, "%s{service=\"%s\"} %" PRId64 "\n", name, view->label,
                     value);
    }
}

static void
s_services_text (pigato_broker_t *self, FILE *out)
{
    size_t count;
    s_service_t *views = s_services (self, true, &count);
    s_service_gauge (out, views, count, "pigato_service_workers",
                     "Workers registered for the service.",
                     offsetof (s_service_t, workers));
    s_service_gauge (out, views, count, "pigato_service_concurrency",
                     "Requests its workers take at once, summed (+Inf: a "
                     "worker without a limit).",
                     offsetof (s_service_t, concurrency));
    s_service_gauge (out, views, count, "pigato_service_queued",
                     "Requests waiting in its queue.",
                     offsetof (s_service_t, queued));
    s_service_gauge (out, views, count, "pigato_service_in_flight",
                     "Requests its workers hold.",
                     offsetof (s_service_t, in_flight));
    s_family (out, "pigato_service_requests_total", "counter",
              "Requests for the service by how they ended ($other: names "
              "no worker registered, or past the bound).");
    for (size_t index = 0; index < count; index++)
        for (int outcome = 0;
             views [index].label && outcome < PIGATO__OUTCOME_COUNT; outcome++)
            fprintf (out,
                     "pigato_service_requests_total{service=\"%s\","
                     "outcome=\"%s\"} %" PRId64 "\n",
                     views [index].label,
                     pigato__stats_outcome_name ((pigato__outcome_t) outcome),
                     views [index].record->outcomes [outcome]);
    const char *histogram = "pigato_service_request_duration_seconds";
    s_family (out, histogram, "histogram",
              "Time from admission to the final reply (ok and error), as "
              "the broker's loop sees it.");
    char bounds [PIGATO__LATENCY_BUCKETS][24];  //  "le" values, once
    for (int bucket = 0; bucket < PIGATO__LATENCY_BUCKETS; bucket++)
        snprintf (bounds [bucket], sizeof bounds [bucket], "%g",
                  (double) pigato__latency_bounds_us [bucket] / 1e6);
    for (size_t index = 0; index < count; index++) {
        pigato__service_stats_t *record = views [index].record;
        const char *label = views [index].label;
        if (!label)
            continue;
        int64_t cumulative = 0;
        for (int bucket = 0; bucket < PIGATO__LATENCY_BUCKETS; bucket++) {
            cumulative += record->latency [bucket];
            fprintf (out, "%s_bucket{service=\"%s\",le=\"%s\"} %" PRId64 "\n",
                     histogram, label, bounds [bucket], cumulative);
        }
        cumulative += record->latency [PIGATO__LATENCY_BUCKETS];
        fprintf (out, "%s_bucket{service=\"%s\",le=\"+Inf\"} %" PRId64 "\n",
                 histogram, label, cumulative);
        fprintf (out, "%s_sum{service=\"%s\"} %.6f\n", histogram, label,
                 (double) record->latency_sum_us / 1e6);
        fprintf (out, "%s_count{service=\"%s\"} %" PRId64 "\n", histogram,
                 label, cumulative);
    }
    s_family (out, "pigato_service_request_bytes_total", "counter",
              "Bytes of the bodies and opts of its requests that ended.");
    for (size_t index = 0; index < count; index++)
        if (views [index].label)
            fprintf (out,
                     "pigato_service_request_bytes_total{service=\"%s\"} "
                     "%" PRId64 "\n",
                     views [index].label, views [index].record->request_bytes);
    s_family (out, "pigato_service_reply_bytes_total", "counter",
              "Bytes of the bodies of its replies, partial ones too.");
    for (size_t index = 0; index < count; index++)
        if (views [index].label)
            fprintf (out,
                     "pigato_service_reply_bytes_total{service=\"%s\"} "
                     "%" PRId64 "\n",
                     views [index].label, views [index].record->reply_bytes);
    s_services_free (views, count);
}

static void
s_identities_text (pigato_broker_t *self, FILE *out)
{
    pigato__stats_t *stats = self->core->stats;
    size_t count;
    pigato__identity_stats_t **sorted = pigato__stats_identities_sorted (
        stats, &count);
    static const struct {
        const char *name;
        const char *help;
        size_t field;
    } families [] = {
        { "pigato_identity_requests_total",
          "Requests of the identity that reached admission.",
          offsetof (pigato__identity_stats_t, requests) },
        { "pigato_identity_denials_total",
          "Messages of the identity the ACL refused.",
          offsetof (pigato__identity_stats_t, denials) },
        { "pigato_identity_quota_refusals_total",
          "Refusals of the identity over its limits.",
          offsetof (pigato__identity_stats_t, quota) },
    };
    for (size_t family = 0; family < sizeof families / sizeof families [0];
         family++) {
        s_family (out, families [family].name, "counter",
                  families [family].help);
        for (size_t index = 0; index <= count; index++) {
            pigato__identity_stats_t *record = index < count
                                                 ? sorted [index]
                                                 : &stats->other_identity;
            //  Identity names are plain (pigato__name_valid): no escaping
            fprintf (out, "%s{identity=\"%s\"} %" PRId64 "\n",
                     families [family].name, record->name,
                     *(const int64_t *) ((const char *) record
                                         + families [family].field));
        }
    }
    free (sorted);
}

char *
pigato__metrics_text (pigato_broker_t *self, size_t *size)
{
    char *text = NULL;
    *size = 0;
    FILE *out = open_memstream (&text, size);
    if (!out)
        return NULL;
    s_broker_text (self, out);
    s_services_text (self, out);
    s_identities_text (self, out);
    bool failed = ferror (out) != 0;
    if (fclose (out) || failed) {
        free (text);
        return NULL;
    }
    return text;
}

void
pigato__metrics_serve (pigato_broker_t *self)
{
    if (!self->metrics.http
        || !pigato__metrics_http_wanted (self->metrics.http))
        return;
    size_t size;
    char *text = pigato__metrics_text (self, &size);
    if (text)
        pigato__metrics_http_publish (self->metrics.http, &text, size);
}

//  --------------------------------------------------------------------------
//  $stats: JSON

//  Sets key to an integer in object (jansson's set_new, shorter).
static void
s_set (json_t *object, const char *key, int64_t value)
{
    json_object_set_new (object, key, json_integer (value));
}

//  A service record as JSON: what it shows now and its counters.
static json_t *
s_service_json (const s_service_t *view)
{
    const pigato__service_stats_t *record = view->record;
    json_t *service = json_object ();
    json_t *requests = json_object ();
    json_t *latency = json_object ();
    json_t *buckets = json_array ();
    if (!service || !requests || !latency || !buckets) {
        json_decref (service);
        json_decref (requests);
        json_decref (latency);
        json_decref (buckets);
        return NULL;
    }
    if (!view->other) {
        s_set (service, "workers", view->workers);
        s_set (service, "concurrency", view->concurrency);
        s_set (service, "queued", view->queued);
        s_set (service, "in_flight", view->in_flight);
    }
    for (int outcome = 0; outcome < PIGATO__OUTCOME_COUNT; outcome++)
        s_set (requests,
               pigato__stats_outcome_name ((pigato__outcome_t) outcome),
               record->outcomes [outcome]);
    json_object_set_new (service, "requests", requests);
    int64_t cumulative = 0;
    for (int bucket = 0; bucket <= PIGATO__LATENCY_BUCKETS; bucket++) {
        cumulative += record->latency [bucket];
        json_array_append_new (buckets, json_integer (cumulative));
    }
    s_set (latency, "count", cumulative);
    json_object_set_new (latency, "sum_seconds",
                         json_real ((double) record->latency_sum_us / 1e6));
    json_object_set_new (latency, "buckets", buckets);
    json_object_set_new (service, "latency", latency);
    s_set (service, "request_bytes", record->request_bytes);
    s_set (service, "reply_bytes", record->reply_bytes);
    return service;
}

static json_t *
s_identity_json (const pigato__identity_stats_t *record)
{
    json_t *identity = json_object ();
    if (identity) {
        s_set (identity, "requests", record->requests);
        s_set (identity, "denials", record->denials);
        s_set (identity, "quota", record->quota);
    }
    return identity;
}

//  The broker-wide part of $stats.
static json_t *
s_broker_json (pigato_broker_t *self)
{
    pigato__core_t *core = self->core;
    pigato__metrics_t *metrics = &self->metrics;
    json_t *broker = json_object ();
    if (!broker)
        return NULL;
    int64_t now = (int64_t) time (NULL);
    s_set (broker, "started_at", metrics->started_at);
    s_set (broker, "uptime_seconds", now - metrics->started_at);
    json_t *connections = json_object ();
    s_set (connections, "open", self->connections);
    s_set (connections, "accepted", metrics->connections_accepted);
    s_set (connections, "refused", self->connections_refused);
    s_set (connections, "evicted", self->connections_evicted);
    json_object_set_new (broker, "connections", connections);
    pigato__zap_t *zap = self->guard ? pigato__guard_zap (self->guard) : NULL;
    json_t *handshakes = json_object ();
    json_t *refused = json_object ();
    s_set (handshakes, "accepted", zap ? pigato__zap_accepted (zap) : 0);
    for (int reason = 0; reason < PIGATO__ZAP_REASONS; reason++)
        s_set (refused, pigato__zap_reason_name (reason),
               zap ? pigato__zap_refused (zap, reason) : 0);
    json_object_set_new (handshakes, "refused", refused);
    json_object_set_new (broker, "handshakes", handshakes);
    json_t *counters = json_object ();
#define COUNTER_JSON(field) s_set (counters, #field, core->counters.field);
    CORE_COUNTERS (COUNTER_JSON)
#undef COUNTER_JSON
    s_set (counters, "denied",
           self->guard ? pigato__guard_denials (self->guard) : 0);
    json_object_set_new (broker, "counters", counters);
    s_set (broker, "workers", (int64_t) zhashx_size (core->workers));
    s_set (broker, "requests_pending",
           (int64_t) pigato__table_size (core->requests));
    json_t *cache = json_object ();
    s_set (cache, "hits", pigato__cache_hits (core->cache));
    s_set (cache, "entries", (int64_t) pigato__cache_entries (core->cache));
    s_set (cache, "bytes", (int64_t) pigato__cache_bytes (core->cache));
    json_object_set_new (broker, "cache", cache);
    json_t *memory = json_object ();
    s_set (memory, "resident_bytes", self->budget.rss);
    s_set (memory, "max_bytes", self->budget.max_memory);
    s_set (memory, "inbound_cut", self->budget.inbound_cut);
    s_set (memory, "slow_consumers", self->budget.slow_consumers);
    s_set (memory, "memory_cut", self->budget.memory_cut);
    s_set (memory, "messages_too_large", self->budget.too_large);
    json_object_set_new (broker, "memory", memory);
    if (self->acl_path) {
        json_t *acl = json_object ();
        s_set (acl, "reloads", metrics->acl_reloads);
        s_set (acl, "reload_failures", metrics->acl_reload_failures);
        s_set (acl, "loaded_at",
               metrics->acl_loaded_at ? metrics->acl_loaded_at
                                      : metrics->started_at);
        json_object_set_new (broker, "acl", acl);
    }
    static const char *kinds [PIGATO__CERT_KINDS] = { "broker", "ca",
                                                      "identity" };
    json_t *certificates = json_object ();
    for (int kind = 0; kind < PIGATO__CERT_KINDS; kind++)
        if (metrics->cert_not_after [kind])
            s_set (certificates, kinds [kind],
                   metrics->cert_not_after [kind] - now);
    json_object_set_new (broker, "certificate_expiry_seconds", certificates);
    if (self->titanic) {
        json_t *store = json_object ();
        for (size_t index = 0; index < TITANIC_SERIES; index++)
            s_set (store, s_titanic_series [index].name,
                   s_titanic_value (self, index));
        json_object_set_new (broker, "store", store);
    }
    json_t *identities = json_object ();
    size_t count;
    pigato__identity_stats_t **sorted = pigato__stats_identities_sorted (
        core->stats, &count);
    for (size_t index = 0; index <= count; index++) {
        pigato__identity_stats_t *record = index < count
                                             ? sorted [index]
                                             : &core->stats->other_identity;
        json_object_set_new (identities, record->name,
                             s_identity_json (record));
    }
    free (sorted);
    json_object_set_new (broker, "identities", identities);
    return broker;
}

//  True if identity may call name (no policy yet: everything).
static bool
s_may_call (pigato_broker_t *self, const char *identity, const char *name)
{
    return !self->guard
        || pigato__guard_allows (self->guard, identity, PIGATO__VERB_CALL,
                                 name);
}

char *
pigato__metrics_stats_answer (void *arg, const char *identity, const char *only,
                              bool *truncated)
{
    pigato_broker_t *self = (pigato_broker_t *) arg;
    *truncated = false;
    bool broker_wide = s_may_call (self, identity, PIGATO__STATS_BROKER_NAME);
    json_t *root = json_object ();
    json_t *services = json_object ();
    json_t *bounds = json_array ();
    if (!root || !services || !bounds) {
        json_decref (root);
        json_decref (services);
        json_decref (bounds);
        return NULL;
    }
    json_object_set_new (root, "version", json_string (pigato_version ()));
    for (int bucket = 0; bucket < PIGATO__LATENCY_BUCKETS; bucket++)
        json_array_append_new (
            bounds,
            json_real ((double) pigato__latency_bounds_us [bucket] / 1e6));
    json_object_set_new (root, "latency_bounds_seconds", bounds);
    json_t *caller = s_identity_json (
        pigato__stats_identity (self->core->stats, identity));
    json_object_set_new (caller, "name", json_string (identity));
    json_object_set_new (root, "identity", caller);
    if (broker_wide)
        json_object_set_new (root, "broker", s_broker_json (self));
    //  What is not about services, then services while they fit
    char *base = json_dumps (root, JSON_COMPACT);
    size_t used = base ? strlen (base) + 32 : PIGATO__STATS_ANSWER_MAX;
    free (base);
    size_t count;
    s_service_t *views = s_services (self, false, &count);
    for (size_t index = 0; index < count; index++) {
        s_service_t *view = &views [index];
        const char *name = view->record->name;
        if ((view->other && (!broker_wide || only))
            || (only && !streq (only, name))
            || (!view->other && !s_may_call (self, identity, name)))
            continue;
        char *key = s_clean (name, false);
        json_t *entry = s_service_json (view);
        char *text = entry ? json_dumps (entry, JSON_COMPACT) : NULL;
        size_t size = text && key ? strlen (text) + strlen (key) * 6 + 4 : 0;
        if (size && used + size <= PIGATO__STATS_ANSWER_MAX) {
            json_object_set_new (services, key, entry);
            entry = NULL;
            used += size;
        }
        else
            *truncated = true;
        json_decref (entry);
        free (text);
        free (key);
    }
    s_services_free (views, count);
    json_object_set_new (root, "services", services);
    if (*truncated)
        json_object_set_new (root, "truncated", json_true ());
    char *answer = json_dumps (root, JSON_COMPACT | JSON_REAL_PRECISION (15));
    json_decref (root);
    return answer;
}

//  --------------------------------------------------------------------------
//  The public side (pigato.h)

int
pigato_broker_set_metrics_listen (pigato_broker_t *self, const char *address)
{
    if (self->metrics.http) {
        pigato__errorf (self->error, sizeof self->error,
                        "the metrics are served already (on %s)",
                        pigato__metrics_http_address (self->metrics.http));
        return PIGATO_E_INVALID;
    }
    return pigato__metrics_http_new (address, &self->metrics.http, self->error,
                                     sizeof self->error);
}

const char *
pigato_broker_metrics_address (pigato_broker_t *self)
{
    return self->metrics.http
             ? pigato__metrics_http_address (self->metrics.http)
             : NULL;
}
