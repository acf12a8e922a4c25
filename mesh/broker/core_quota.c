/*  =========================================================================
    core_quota.c - what one identity may hold in the broker (core.h): a
    tenant record per identity with the requests and bytes its requests
    hold and a token bucket for its request rate, checked against the
    limits the policy gives it (`limit` lines, auth/acl.h) before a
    request is taken. Over a limit: E_QUOTA at once, counted and logged.
    =========================================================================
*/
#include <string.h>
#include "core.h"

void
pigato__core_set_limits (pigato__core_t *self, pigato__limits_fn *limits,
                         void *arg)
{
    self->limits = limits;
    self->limits_arg = arg;
    self->limits_epoch++;  //  every tenant asks again
}

//  The tenant's limits, as the current policy has them.
static void
s_tenant_refresh (pigato__core_t *self, pigato__tenant_t *tenant)
{
    if (tenant->epoch == self->limits_epoch)
        return;
    tenant->epoch = self->limits_epoch;
    pigato__limits_t limits = PIGATO__LIMITS_DEFAULT;
    if (self->limits)
        self->limits (self->limits_arg, tenant->identity, &limits);
    if (limits.rate != tenant->limits.rate || tenant->at_ms == 0) {
        //  A new rate starts with a full burst
        tenant->tokens = limits.rate > 0 ? (double) limits.rate : 0;
        tenant->at_ms = self->now_ms ? self->now_ms : 1;
    }
    tenant->limits = limits;
}

//  Brings the rate bucket up to now; true if it is full.
static bool
s_bucket_fill (pigato__core_t *self, pigato__tenant_t *tenant)
{
    int64_t rate = tenant->limits.rate;
    if (rate <= 0)
        return true;
    if (self->now_ms > tenant->at_ms) {
        tenant->tokens += (double) (self->now_ms - tenant->at_ms)
                        * (double) rate / 1000.0;
        tenant->at_ms = self->now_ms;
    }
    if (tenant->tokens >= (double) rate) {
        tenant->tokens = (double) rate;
        return true;
    }
    return false;
}

//  Forgets tenants that hold nothing (no request, no connection, no
//  durable request) and
//  whose bucket is full: one made
//  again later starts the same, so nothing is lost.
static void
s_tenants_prune (pigato__core_t *self)
{
    zlistx_t *idle = zlistx_new ();
    if (!idle)
        return;
    for (pigato__tenant_t *tenant =
             (pigato__tenant_t *) zhashx_first (self->tenants);
         tenant; tenant = (pigato__tenant_t *) zhashx_next (self->tenants))
        if (tenant->pending == 0 && tenant->connections == 0
            && tenant->stored == 0 && tenant != self->last_tenant
            && s_bucket_fill (self, tenant))
            zlistx_add_end (idle, tenant->identity);
    for (const char *identity = (const char *) zlistx_first (idle); identity;
         identity = (const char *) zlistx_next (idle))
        zhashx_delete (self->tenants, identity);
    zlistx_destroy (&idle);
}

pigato__tenant_t *
pigato__core_tenant (pigato__core_t *self, const char *identity)
{
    if (!identity)
        identity = "";
    pigato__tenant_t *tenant = self->last_tenant;
    if (!tenant || !streq (tenant->identity, identity)) {
        tenant = (pigato__tenant_t *) zhashx_lookup (self->tenants, identity);
        if (!tenant) {
            if (strlen (identity) > PIGATO__NAME_MAX)
                return NULL;
            if (zhashx_size (self->tenants) >= PIGATO__QUOTAS_MAX)
                s_tenants_prune (self);
            tenant = (pigato__tenant_t *) calloc (1, sizeof *tenant);
            if (!tenant)
                return NULL;
            strcpy (tenant->identity, identity);
            tenant->stats = pigato__stats_identity (self->stats, identity);
            if (zhashx_insert (self->tenants, tenant->identity, tenant)) {
                free (tenant);
                return NULL;
            }
            tenant->epoch = self->limits_epoch - 1;  //  not asked yet
        }
        self->last_tenant = tenant;
    }
    s_tenant_refresh (self, tenant);
    return tenant;
}

pigato__tenant_t *
pigato__core_tenant_of (pigato__core_t *self, const pigato__conn_t *conn,
                        const char *identity)
{
    //  A connection's identity never changes: its owner is the tenant
    if (conn->fd >= 0 && (size_t) conn->fd < self->owners_size) {
        pigato__conn_owner_t *owner = &self->owners [conn->fd];
        if (owner->tenant && owner->generation == conn->generation) {
            s_tenant_refresh (self, owner->tenant);
            return owner->tenant;
        }
    }
    return pigato__core_tenant (self, identity);
}

void
pigato__core_quota_log (pigato__core_t *self, const char *identity,
                        const pigato__bytes_t *service, const char *limit)
{
    self->counters.over_quota++;
    pigato__stats_identity (self->stats, identity)->quota++;
    if (pigato__log_level >= PIGATO_LOG_WARNING
        && pigato__ratelimit_allow_at (&self->quota_log, "quota_exceeded",
                                       PIGATO_LOG_WARNING)) {
        char printable [PIGATO__SERVICE_TEXT], who [PIGATO__NAME_MAX * 4 + 4];
        pigato__log (PIGATO_LOG_WARNING,
                     "event=quota_exceeded identity=%s service=%s limit=%s",
                     pigato__printable (identity ? identity : "",
                                        identity ? strlen (identity) : 0, who,
                                        sizeof who),
                     service->size
                         ? pigato__printable (service->data, service->size,
                                              printable, sizeof printable)
                         : "-",
                     limit);
    }
}

//  The rate limit: a token from the identity's bucket, or "rate" with
//  the error text when it is empty (NULL: taken, or no rate limit).
static const char *
s_rate_take (pigato__core_t *self, pigato__tenant_t *tenant, char *error,
             size_t error_size)
{
    if (tenant->limits.rate < 0)
        return NULL;
    s_bucket_fill (self, tenant);
    if (tenant->tokens >= 1) {
        tenant->tokens -= 1;
        return NULL;
    }
    snprintf (error, error_size,
              "E_QUOTA identity %s may send %" PRId64
              " requests a second (rate); try again later",
              tenant->identity, tenant->limits.rate);
    return "rate";
}

int
pigato__core_quota_admit (pigato__core_t *self, pigato__tenant_t *tenant,
                          const pigato__bytes_t *service, size_t bytes,
                          char *error, size_t error_size)
{
    const pigato__limits_t *limits = &tenant->limits;
    const char *limit = NULL;
    if (limits->pending >= 0 && tenant->pending + 1 > limits->pending) {
        limit = "pending";
        snprintf (error, error_size,
                  "E_QUOTA identity %s may hold %" PRId64
                  " requests at once (pending); try again later",
                  tenant->identity, limits->pending);
    }
    else if (limits->pending_bytes >= 0
             && tenant->pending_bytes + (int64_t) bytes
                    > limits->pending_bytes) {
        limit = "pending-bytes";
        snprintf (error, error_size,
                  "E_QUOTA identity %s may hold %" PRId64
                  " bytes of requests at once (pending-bytes); try again "
                  "later",
                  tenant->identity, limits->pending_bytes);
    }
    else
        limit = s_rate_take (self, tenant, error, error_size);
    if (!limit)
        return 0;
    pigato__core_quota_log (self, tenant->identity, service, limit);
    return PIGATO_E_NOMEM;
}

int
pigato__core_quota_store (pigato__core_t *self, pigato__tenant_t *tenant,
                          const pigato__bytes_t *service, size_t bytes,
                          char *error, size_t error_size)
{
    const pigato__limits_t *limits = &tenant->limits;
    const char *limit = NULL;
    if (limits->stored >= 0 && tenant->stored + 1 > limits->stored) {
        limit = "stored";
        snprintf (error, error_size,
                  "E_QUOTA identity %s may store %" PRId64
                  " durable requests at once (stored); close some or try "
                  "again later",
                  tenant->identity, limits->stored);
    }
    else if (limits->stored_bytes >= 0
             && tenant->stored_bytes + (int64_t) bytes > limits->stored_bytes) {
        limit = "stored-bytes";
        snprintf (error, error_size,
                  "E_QUOTA identity %s may store %" PRId64
                  " bytes of durable requests at once (stored-bytes); close "
                  "some or try again later",
                  tenant->identity, limits->stored_bytes);
    }
    else
        limit = s_rate_take (self, tenant, error, error_size);
    if (!limit)
        return 0;
    pigato__core_quota_log (self, tenant->identity, service, limit);
    return PIGATO_E_NOMEM;
}

void
pigato__core_tenant_hold (pigato__tenant_t *tenant, pigato__request_t *request)
{
    request->tenant = tenant;
    tenant->pending++;
    tenant->pending_bytes += (int64_t) (request->body_size
                                        + request->opts_size);
}

void
pigato__core_tenant_release (pigato__tenant_t *tenant,
                             pigato__request_t *request)
{
    tenant->pending--;
    tenant->pending_bytes -= (int64_t) (request->body_size
                                        + request->opts_size);
    request->tenant = NULL;
}

int
pigato__core_connection_owner (pigato__core_t *self, const pigato__conn_t *conn,
                               const char *identity)
{
    if (conn->fd < 0)
        return PIGATO__CONN_OWNED;
    size_t fd = (size_t) conn->fd;
    if (fd < self->owners_size
        && self->owners [fd].generation == conn->generation) {
        //  Known: every message after the first
        if (self->owners [fd].tenant)
            return PIGATO__CONN_OWNED;
        if (self->owners [fd].refused)
            return PIGATO__CONN_REFUSED_BEFORE;
    }
    if (fd >= self->owners_size) {
        size_t size = self->owners_size ? self->owners_size : 64;
        while (size <= fd)
            size *= 2;
        pigato__conn_owner_t *owners = (pigato__conn_owner_t *) realloc (
            self->owners, size * sizeof *owners);
        if (!owners)
            return PIGATO__CONN_OWNED;  //  not counted rather than refused
        memset (owners + self->owners_size, 0,
                (size - self->owners_size) * sizeof *owners);
        self->owners = owners;
        self->owners_size = size;
    }
    pigato__conn_owner_t *owner = &self->owners [fd];
    if (owner->tenant) {
        //  An earlier connection on this fd whose close we did not see
        pigato__conn_t old = { conn->fd, owner->generation };
        pigato__core_connection_disown (self, &old);
    }
    pigato__tenant_t *tenant = pigato__core_tenant (self, identity);
    if (!tenant)
        return PIGATO__CONN_OWNED;
    owner->generation = conn->generation;
    int64_t limit = tenant->limits.connections;
    if (limit >= 0 && tenant->connections >= limit) {
        pigato__bytes_t none = { NULL, 0 };
        pigato__core_quota_log (self, tenant->identity, &none, "connections");
        owner->refused = true;
        return PIGATO__CONN_REFUSED;
    }
    tenant->connections++;
    owner->tenant = tenant;
    owner->refused = false;
    return PIGATO__CONN_OWNED;
}

void
pigato__core_connection_disown (pigato__core_t *self,
                                const pigato__conn_t *dead)
{
    if (dead->fd < 0 || (size_t) dead->fd >= self->owners_size)
        return;
    pigato__conn_owner_t *owner = &self->owners [dead->fd];
    if (owner->tenant && owner->generation == dead->generation) {
        owner->tenant->connections--;
        owner->tenant = NULL;
        owner->refused = true;  //  not counted again (it is gone)
    }
}
