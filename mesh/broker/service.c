/*  =========================================================================
    service.c - service table, FIFO queues, worker lists and worker choice
    (see service.h)
    =========================================================================
*/
#include <sodium.h>
#include <string.h>
#include "service.h"

struct _pigato__services_t {
    zhashx_t *by_name;                //  name -> pigato__service_t
    size_t wildcards;                 //  wildcard services with workers
    size_t wildcard_longest;          //  longest prefix among them (an upper
                                      //  bound: not lowered on removal)
    zhashx_t *versions;               //  base name -> zlistx of versioned
                                      //  services with workers
    pigato__service_t *pending;       //  services with queued requests, the
    pigato__service_t *pending_tail;  //  longest waiting first
    pigato__service_t *parked;  //  ... that nothing could serve when checked
    pigato__service_t *parked_tail;
    size_t parked_count;
    uint64_t epoch;           //  +1 whenever parked services return
    pigato__service_t *last;  //  the last one looked up (a cache: a
                              //  stream of requests names one service;
                              //  cleared when a service goes)
    zhashx_t *lanes;          //  (service, caller) -> pigato__lane_t
};

//  Lanes are keyed by their first two fields, two pointers of ours.
static size_t
s_lane_hash (const void *key)
{
    const pigato__lane_t *lane = (const pigato__lane_t *) key;
    uint64_t value = (uint64_t) (uintptr_t) lane->service * 0x9E3779B97F4A7C15u
                   ^ (uint64_t) (uintptr_t) lane->caller * 0xC2B2AE3D27D4EB4Fu;
    return (size_t) (value ^ (value >> 29));
}

static int
s_lane_compare (const void *a, const void *b)
{
    const pigato__lane_t *left = (const pigato__lane_t *) a;
    const pigato__lane_t *right = (const pigato__lane_t *) b;
    return left->service == right->service && left->caller == right->caller ? 0
                                                                            : 1;
}

static void
s_lane_destroy (void **item_p)
{
    free (*item_p);
    *item_p = NULL;
}

static void s_unpark_all (pigato__services_t *self);

//  Takes note of how a name reads: wildcard, version or range.
static void
s_classify (pigato__service_t *service)
{
    const char *name = service->name;
    size_t size = strlen (name);
    const char *at = strrchr (name, '@');
    if (at && at != name && at [1] != 0) {
        size_t base_size = (size_t) (at - name);
        const char *tail = at + 1;
        size_t tail_size = size - base_size - 1;
        if (pigato__version_parse (tail, tail_size, &service->version))
            service->versioned = true;
        else if (pigato__range_parse (tail, tail_size, &service->range))
            service->ranged = true;
        service->base_size = base_size;
    }
    if (!service->versioned && !service->ranged && size >= 1
        && name [size - 1] == '*')
        service->wildcard = true;
}

//  A service gained its first worker or lost its last: the indexes of
//  wildcard and versioned services with workers follow.
static void
s_index (pigato__services_t *self, pigato__service_t *service, bool serving)
{
    if (serving && (service->wildcard || service->versioned))
        s_unpark_all (self);
    if (service->wildcard) {
        size_t prefix = strlen (service->name) - 1;
        if (serving) {
            self->wildcards++;
            if (prefix > self->wildcard_longest)
                self->wildcard_longest = prefix;
        }
        else
            self->wildcards--;
    }
    if (!service->versioned)
        return;
    char base [PIGATO_SERVICE_MAX + 1];
    memcpy (base, service->name, service->base_size);
    base [service->base_size] = 0;
    zlistx_t *list = (zlistx_t *) zhashx_lookup (self->versions, base);
    if (serving) {
        if (!list) {
            list = zlistx_new ();
            if (!list || zhashx_insert (self->versions, base, list)) {
                zlistx_destroy (&list);
                return;
            }
        }
        zlistx_add_end (list, service);
    }
    else if (list) {
        void *handle = zlistx_find (list, service);
        if (handle)
            zlistx_delete (list, handle);
        if (zlistx_size (list) == 0)
            zhashx_delete (self->versions, base);
    }
}

static void
s_versions_destroy (void **item_p)
{
    zlistx_destroy ((zlistx_t **) item_p);
}

static void
s_service_destroy (void **item_p)
{
    pigato__service_t *service = (pigato__service_t *) *item_p;
    if (service) {
        pigato__heap_destroy (&service->ready);
        free (service->name);
        free (service);
        *item_p = NULL;
    }
}

pigato__services_t *
pigato__services_new (void)
{
    pigato__services_t *self = (pigato__services_t *) calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->by_name = zhashx_new ();
    if (!self->by_name) {
        free (self);
        return NULL;
    }
    //  Names come from peers: a keyed hash, so they cannot be chosen to
    //  collide
    zhashx_set_destructor (self->by_name, s_service_destroy);
    zhashx_set_key_hasher (self->by_name, pigato__hash_keyed_text);
    self->versions = zhashx_new ();
    if (!self->versions) {
        zhashx_destroy (&self->by_name);
        free (self);
        return NULL;
    }
    zhashx_set_destructor (self->versions, s_versions_destroy);
    zhashx_set_key_hasher (self->versions, pigato__hash_keyed_text);
    self->lanes = zhashx_new ();
    if (!self->lanes) {
        zhashx_destroy (&self->versions);
        zhashx_destroy (&self->by_name);
        free (self);
        return NULL;
    }
    zhashx_set_key_hasher (self->lanes, s_lane_hash);
    zhashx_set_key_comparator (self->lanes, s_lane_compare);
    zhashx_set_key_duplicator (self->lanes, NULL);
    zhashx_set_key_destructor (self->lanes, NULL);
    zhashx_set_destructor (self->lanes, s_lane_destroy);
    return self;
}

void
pigato__services_destroy (pigato__services_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    pigato__services_t *self = *self_p;
    zhashx_destroy (&self->lanes);
    zhashx_destroy (&self->versions);
    zhashx_destroy (&self->by_name);
    free (self);
    *self_p = NULL;
}

//  Service names arrive as bytes; the table is keyed by C strings, so a
//  name holding a NUL byte is refused by the caller (codec checks sizes).
static bool
s_name_copy (const void *name, size_t size, char *buffer)
{
    if (size == 0 || size > PIGATO_SERVICE_MAX || memchr (name, 0, size))
        return false;
    memcpy (buffer, name, size);
    buffer [size] = 0;
    return true;
}

//  The service of this name if it is the last one looked up.
static pigato__service_t *
s_last (pigato__services_t *self, const void *name, size_t size)
{
    //  strncmp stops at the cached name's end, so [size] is inside it
    pigato__service_t *last = self->last;
    if (last && size && !memchr (name, 0, size)
        && strncmp (last->name, (const char *) name, size) == 0
        && last->name [size] == 0)
        return last;
    return NULL;
}

pigato__service_t *
pigato__services_lookup (pigato__services_t *self, const void *name,
                         size_t size)
{
    pigato__service_t *service = s_last (self, name, size);
    if (service)
        return service;
    char key [PIGATO_SERVICE_MAX + 1];
    if (!s_name_copy (name, size, key))
        return NULL;
    service = (pigato__service_t *) zhashx_lookup (self->by_name, key);
    if (service)
        self->last = service;
    return service;
}

pigato__service_t *
pigato__services_require (pigato__services_t *self, const void *name,
                          size_t size)
{
    pigato__service_t *service = s_last (self, name, size);
    if (service)
        return service;
    char key [PIGATO_SERVICE_MAX + 1];
    if (!s_name_copy (name, size, key))
        return NULL;
    service = (pigato__service_t *) zhashx_lookup (self->by_name, key);
    if (service) {
        self->last = service;
        return service;
    }
    service = (pigato__service_t *) calloc (1, sizeof *service);
    if (!service)
        return NULL;
    service->name = strdup (key);
    if (!service->name || zhashx_insert (self->by_name, key, service)) {
        free (service->name);
        free (service);
        return NULL;
    }
    service->table = self;
    s_classify (service);
    return service;
}

void
pigato__services_release (pigato__services_t *self,
                          pigato__service_t **service_p)
{
    pigato__service_t *service = *service_p;
    if (service && service->worker_count == 0 && service->queued == 0
        && service->requests == 0 && service->pins == 0) {
        if (self->last == service)
            self->last = NULL;
        zhashx_delete (self->by_name, service->name);
        *service_p = NULL;
    }
}

size_t
pigato__services_resolve (pigato__services_t *self,
                          pigato__service_t *requested, pigato__service_t **out,
                          size_t max)
{
    if (max == 0)
        return 0;
    if (requested->workers) {
        out [0] = requested;
        return 1;
    }
    size_t count = 0;
    if (requested->ranged) {
        char base [PIGATO_SERVICE_MAX + 1];
        memcpy (base, requested->name, requested->base_size);
        base [requested->base_size] = 0;
        zlistx_t *list = (zlistx_t *) zhashx_lookup (self->versions, base);
        for (pigato__service_t *service =
                 list ? (pigato__service_t *) zlistx_first (list) : NULL;
             service; service = (pigato__service_t *) zlistx_next (list)) {
            if (!service->workers
                || !pigato__range_match (&requested->range, &service->version))
                continue;
            //  Insert in order, highest version first
            size_t at = count < max ? count : max - 1;
            if (count == max
                && pigato__version_compare (&service->version,
                                            &out [max - 1]->version)
                       <= 0)
                continue;
            while (at > 0
                   && pigato__version_compare (&out [at - 1]->version,
                                               &service->version)
                          < 0) {
                out [at] = out [at - 1];
                at--;
            }
            out [at] = service;
            if (count < max)
                count++;
        }
        if (count)
            return count;
    }
    if (self->wildcards == 0)
        return 0;
    //  Longest prefix first: "foo*" for "foobar" before "f*"
    char key [PIGATO_SERVICE_MAX + 2];
    size_t size = strlen (requested->name);
    size_t prefix = size < self->wildcard_longest ? size
                                                  : self->wildcard_longest;
    for (;; prefix--) {
        memcpy (key, requested->name, prefix);
        key [prefix] = '*';
        key [prefix + 1] = 0;
        pigato__service_t *service = (pigato__service_t *) zhashx_lookup (
            self->by_name, key);
        if (service && service->workers && service != requested) {
            out [0] = service;
            return 1;
        }
        if (prefix == 0)
            break;
    }
    return 0;
}

pigato__service_t *
pigato__services_first (pigato__services_t *self)
{
    return (pigato__service_t *) zhashx_first (self->by_name);
}

pigato__service_t *
pigato__services_next (pigato__services_t *self)
{
    return (pigato__service_t *) zhashx_next (self->by_name);
}

bool
pigato__service_matches (const pigato__service_t *service,
                         const pigato__service_t *requested)
{
    if (service == requested)
        return true;
    if (service->versioned && requested->ranged
        && service->base_size == requested->base_size
        && memcmp (service->name, requested->name, service->base_size) == 0)
        return pigato__range_match (&requested->range, &service->version);
    if (service->wildcard) {
        size_t prefix = strlen (service->name) - 1;
        return strncmp (service->name, requested->name, prefix) == 0;
    }
    return false;
}

pigato__service_t *
pigato__services_pending (pigato__services_t *self)
{
    return self->pending;
}

pigato__service_t *
pigato__services_pending_last (pigato__services_t *self)
{
    return self->pending_tail;
}

bool
pigato__service_serves_others (const pigato__service_t *self)
{
    return self->wildcard || self->versioned;
}

//  Lists of services with queued requests: pending (walked) and parked.
//  A service joins at the tail.
static void
s_list_add (pigato__service_t **head, pigato__service_t **tail,
            pigato__service_t *self)
{
    self->pending_next = NULL;
    self->pending_prev = *tail;
    if (*tail)
        (*tail)->pending_next = self;
    else
        *head = self;
    *tail = self;
}

static void
s_list_remove (pigato__service_t **head, pigato__service_t **tail,
               pigato__service_t *self)
{
    if (self->pending_prev)
        self->pending_prev->pending_next = self->pending_next;
    else
        *head = self->pending_next;
    if (self->pending_next)
        self->pending_next->pending_prev = self->pending_prev;
    else
        *tail = self->pending_prev;
    self->pending_prev = self->pending_next = NULL;
}

void
pigato__services_pending_rotate (pigato__services_t *self,
                                 pigato__service_t *service)
{
    if (service->pending && !service->parked && service != self->pending_tail) {
        s_list_remove (&self->pending, &self->pending_tail, service);
        s_list_add (&self->pending, &self->pending_tail, service);
    }
}

//  Keeps the table's lists of services with queued requests.
static void
s_pending (pigato__service_t *self, bool pending)
{
    pigato__services_t *table = self->table;
    if (!table || self->pending == pending)
        return;
    if (pending)
        s_list_add (&table->pending, &table->pending_tail, self);
    else if (self->parked) {
        s_list_remove (&table->parked, &table->parked_tail, self);
        table->parked_count--;
        self->parked = false;
    }
    else
        s_list_remove (&table->pending, &table->pending_tail, self);
    self->pending = pending;
}

bool
pigato__services_park_unservable (pigato__services_t *self,
                                  pigato__service_t *service)
{
    if (!service->pending || service->parked
        || service->park_epoch == self->epoch + 1)
        return false;
    service->park_epoch = self->epoch + 1;  //  checked in this epoch
    pigato__service_t *target;
    if (pigato__services_resolve (self, service, &target, 1) > 0)
        return false;
    s_list_remove (&self->pending, &self->pending_tail, service);
    s_list_add (&self->parked, &self->parked_tail, service);
    self->parked_count++;
    service->parked = true;
    return true;
}

size_t
pigato__services_parked (pigato__services_t *self)
{
    return self->parked_count;
}

//  A wildcard or versioned service gained its first worker: what was
//  parked may resolve to it now
static void
s_unpark_all (pigato__services_t *self)
{
    self->epoch++;
    while (self->parked) {
        pigato__service_t *service = self->parked;
        s_list_remove (&self->parked, &self->parked_tail, service);
        s_list_add (&self->pending, &self->pending_tail, service);
        service->parked = false;
    }
    self->parked_count = 0;
}

size_t
pigato__services_size (pigato__services_t *self)
{
    return zhashx_size (self->by_name);
}

void
pigato__service_enqueue (pigato__service_t *self, pigato__request_t *request,
                         bool front)
{
    request->worker = NULL;
    request->lane = NULL;
    if (front) {
        request->round = self->queue_head ? self->queue_head->round : 0;
        request->prev = NULL;
        request->next = self->queue_head;
        if (self->queue_head)
            self->queue_head->prev = request;
        else
            self->queue_tail = request;
        self->queue_head = request;
    }
    else {
        request->round = self->queue_tail ? self->queue_tail->round : 0;
        request->next = NULL;
        request->prev = self->queue_tail;
        if (self->queue_tail)
            self->queue_tail->next = request;
        else
            self->queue_head = request;
        self->queue_tail = request;
    }
    self->queued++;
    s_pending (self, true);
}

//  The caller's lane in this service, made if it has none. NULL if out
//  of memory.
static pigato__lane_t *
s_lane_require (pigato__service_t *self, const void *caller)
{
    pigato__lane_t key = { .service = self, .caller = caller };
    pigato__lane_t *lane = (pigato__lane_t *) zhashx_lookup (self->table->lanes,
                                                             &key);
    if (lane)
        return lane;
    lane = (pigato__lane_t *) calloc (1, sizeof *lane);
    if (!lane)
        return NULL;
    *lane = key;
    if (zhashx_insert (self->table->lanes, lane, lane)) {
        free (lane);
        return NULL;
    }
    return lane;
}

static void
s_lane_add (pigato__lane_t *lane, pigato__request_t *request)
{
    request->lane = lane;
    lane->count++;
    if (!lane->last || request->round >= lane->last_round) {
        lane->last = request;
        lane->last_round = request->round;
    }
}

void
pigato__service_enqueue_fair (pigato__service_t *self,
                              pigato__request_t *request, const void *caller)
{
    //  A stream from one caller finds its lane at the tail, unhashed
    pigato__request_t *tail = self->queue_tail;
    pigato__lane_t *lane = tail && tail->lane && tail->lane->caller == caller
                             ? tail->lane
                             : s_lane_require (self, caller);
    if (!lane) {
        pigato__service_enqueue (self, request, false);
        return;
    }
    request->worker = NULL;
    uint64_t base = self->queue_head ? self->queue_head->round : 0;
    uint64_t round = base;
    if (lane->count && lane->last_round + 1 > base)
        round = lane->last_round + 1;
    request->round = round;
    pigato__request_t *after = self->queue_tail;
    if (after && after->round > round) {
        //  After every request of this round or an earlier one: from the
        //  lane's youngest (an earlier round) if it is still there, else
        //  from the head (round base <= round)
        after = lane->last && lane->last->round < round ? lane->last
                                                        : self->queue_head;
        while (after->next && after->next->round <= round)
            after = after->next;
    }
    request->prev = after;
    request->next = after ? after->next : NULL;
    if (request->next)
        request->next->prev = request;
    else
        self->queue_tail = request;
    if (after)
        after->next = request;
    else
        self->queue_head = request;
    s_lane_add (lane, request);
    self->queued++;
    s_pending (self, true);
}

void
pigato__service_lane_join (pigato__service_t *self, pigato__request_t *request,
                           const void *caller)
{
    if (request->lane || request->worker)
        return;
    pigato__lane_t *lane = s_lane_require (self, caller);
    if (lane)
        s_lane_add (lane, request);
}

size_t
pigato__services_lanes (pigato__services_t *self)
{
    return zhashx_size (self->lanes);
}

void
pigato__service_dequeue (pigato__service_t *self, pigato__request_t *request)
{
    if (request->prev)
        request->prev->next = request->next;
    else
        self->queue_head = request->next;
    if (request->next)
        request->next->prev = request->prev;
    else
        self->queue_tail = request->prev;
    request->prev = request->next = NULL;
    pigato__lane_t *lane = request->lane;
    if (lane) {
        request->lane = NULL;
        if (lane->last == request)
            lane->last = NULL;
        if (--lane->count == 0)
            zhashx_delete (self->table->lanes, lane);
    }
    self->queued--;
    if (self->queued == 0)
        s_pending (self, false);
}

//  Heap key: fewest in flight first, then fewest dispatched
static int64_t
s_load_key (const pigato__worker_t *worker)
{
    uint64_t in_flight = worker->in_flight < (1u << 22) ? worker->in_flight
                                                        : (1u << 22) - 1;
    return (int64_t) ((in_flight << 40)
                      | (worker->dispatched & ((UINT64_C (1) << 40) - 1)));
}

void
pigato__worker_update (pigato__worker_t *worker)
{
    pigato__service_t *service = worker->service;
    if (!service)
        return;
    if (!pigato__worker_has_room (worker))
        pigato__heap_remove (service->ready, &worker->ready_node);
    else if (!service->ready_broken
             && (!service->ready
                 || pigato__heap_set (service->ready, &worker->ready_node,
                                      s_load_key (worker))))
        service->ready_broken = true;  //  out of memory: scan
}

void
pigato__service_add_worker (pigato__service_t *self, pigato__worker_t *worker)
{
    pigato__timer_init (&worker->ready_node);
    if (!self->ready && !self->ready_broken) {
        self->ready = pigato__heap_new ();
        self->ready_broken = self->ready == NULL;
    }
    worker->service = self;
    worker->prev = NULL;
    worker->next = self->workers;
    if (self->workers)
        self->workers->prev = worker;
    self->workers = worker;
    self->worker_count++;
    if (self->worker_count == 1 && self->table)
        s_index (self->table, self, true);
    pigato__worker_update (worker);
}

void
pigato__service_remove_worker (pigato__service_t *self,
                               pigato__worker_t *worker)
{
    pigato__heap_remove (self->ready, &worker->ready_node);
    if (worker->prev)
        worker->prev->next = worker->next;
    else
        self->workers = worker->next;
    if (worker->next)
        worker->next->prev = worker->prev;
    worker->prev = worker->next = NULL;
    worker->service = NULL;
    self->worker_count--;
    if (self->worker_count == 0 && self->table)
        s_index (self->table, self, false);
}

bool
pigato__service_has_room (const pigato__service_t *self)
{
    if (!self->ready_broken)
        return self->ready && pigato__heap_size (self->ready) > 0;
    for (const pigato__worker_t *worker = self->workers; worker;
         worker = worker->next)
        if (pigato__worker_has_room (worker))
            return true;
    return false;
}

bool
pigato__worker_has_room (const pigato__worker_t *worker)
{
    return worker->concurrency < 0
        || worker->in_flight < (size_t) worker->concurrency;
}

pigato__worker_t *
pigato__service_pick (pigato__service_t *self, const pigato__request_t *request,
                      int dmode, pigato__worker_filter_t *filter,
                      void *filter_arg)
{
    if (dmode != PIGATO__DMODE_RAND && request->rejected_count == 0
        && !self->ready_broken) {
        pigato__timer_t *top = self->ready ? pigato__heap_peek (self->ready)
                                           : NULL;
        pigato__worker_t *least = top ? pigato__container_of (
                                      top, pigato__worker_t, ready_node)
                                      : NULL;
        if (!least || !filter || filter (filter_arg, least))
            return least;
        //  The least loaded does not pass: the scan below finds the next
    }
    pigato__worker_t *best = NULL;
    uint32_t eligible = 0;
    for (pigato__worker_t *worker = self->workers; worker;
         worker = worker->next) {
        if (!pigato__worker_has_room (worker)
            || pigato__request_rejected_by (request, worker->serial)
            || (filter && !filter (filter_arg, worker)))
            continue;
        eligible++;
        if (dmode == PIGATO__DMODE_RAND) {
            //  Reservoir sampling: each eligible worker equally likely
            if (randombytes_uniform (eligible) == 0)
                best = worker;
        }
        else if (!best || worker->in_flight < best->in_flight
                 || (worker->in_flight == best->in_flight
                     && worker->dispatched < best->dispatched))
            best = worker;
    }
    return best;
}

bool
pigato__service_all_rejected (pigato__service_t *self,
                              const pigato__request_t *request)
{
    if (!self->workers || request->rejected_count == 0)
        return false;
    for (pigato__worker_t *worker = self->workers; worker;
         worker = worker->next)
        if (!pigato__request_rejected_by (request, worker->serial))
            return false;
    return true;
}

void
pigato__worker_wait (pigato__worker_t *worker, pigato__request_t *request)
{
    request->waiting_on = worker;
    request->next = NULL;
    request->prev = worker->waiting_tail;
    if (worker->waiting_tail)
        worker->waiting_tail->next = request;
    else
        worker->waiting_head = request;
    worker->waiting_tail = request;
}

void
pigato__worker_unwait (pigato__worker_t *worker, pigato__request_t *request)
{
    if (request->prev)
        request->prev->next = request->next;
    else
        worker->waiting_head = request->next;
    if (request->next)
        request->next->prev = request->prev;
    else
        worker->waiting_tail = request->prev;
    request->prev = request->next = NULL;
    request->waiting_on = NULL;
}

void
pigato__worker_take (pigato__worker_t *worker, pigato__request_t *request)
{
    request->worker = worker;
    request->prev = NULL;
    request->next = worker->requests;
    if (worker->requests)
        worker->requests->prev = request;
    worker->requests = request;
    worker->in_flight++;
    worker->dispatched++;
    pigato__worker_update (worker);
}

void
pigato__worker_release (pigato__worker_t *worker, pigato__request_t *request)
{
    if (request->prev)
        request->prev->next = request->next;
    else
        worker->requests = request->next;
    if (request->next)
        request->next->prev = request->prev;
    request->prev = request->next = NULL;
    request->worker = NULL;
    worker->in_flight--;
    pigato__worker_update (worker);
}
