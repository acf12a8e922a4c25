/*  =========================================================================
    service.c - service table, FIFO queues, worker lists and worker choice
    (see service.h)
    =========================================================================
*/
#include <sodium.h>
#include <string.h>
#include "service.h"

struct _pigato__services_t {
    zhashx_t *by_name;          //  name -> pigato__service_t
};

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
    zhashx_set_destructor (self->by_name, s_service_destroy);
    return self;
}

void
pigato__services_destroy (pigato__services_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    pigato__services_t *self = *self_p;
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

pigato__service_t *
pigato__services_lookup (pigato__services_t *self, const void *name,
                         size_t size)
{
    char key [PIGATO_SERVICE_MAX + 1];
    if (!s_name_copy (name, size, key))
        return NULL;
    return (pigato__service_t *) zhashx_lookup (self->by_name, key);
}

pigato__service_t *
pigato__services_require (pigato__services_t *self, const void *name,
                          size_t size)
{
    char key [PIGATO_SERVICE_MAX + 1];
    if (!s_name_copy (name, size, key))
        return NULL;
    pigato__service_t *service =
        (pigato__service_t *) zhashx_lookup (self->by_name, key);
    if (service)
        return service;
    service = (pigato__service_t *) calloc (1, sizeof *service);
    if (!service)
        return NULL;
    service->name = strdup (key);
    if (!service->name || zhashx_insert (self->by_name, key, service)) {
        free (service->name);
        free (service);
        return NULL;
    }
    return service;
}

void
pigato__services_release (pigato__services_t *self,
                          pigato__service_t **service_p)
{
    pigato__service_t *service = *service_p;
    if (service && service->worker_count == 0 && service->queued == 0) {
        zhashx_delete (self->by_name, service->name);
        *service_p = NULL;
    }
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
    if (front) {
        request->prev = NULL;
        request->next = self->queue_head;
        if (self->queue_head)
            self->queue_head->prev = request;
        else
            self->queue_tail = request;
        self->queue_head = request;
    }
    else {
        request->next = NULL;
        request->prev = self->queue_tail;
        if (self->queue_tail)
            self->queue_tail->next = request;
        else
            self->queue_head = request;
        self->queue_tail = request;
    }
    self->queued++;
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
    self->queued--;
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
    else
    if (!service->ready_broken
    &&  (!service->ready || pigato__heap_set (service->ready,
                                              &worker->ready_node,
                                              s_load_key (worker))))
        service->ready_broken = true;       //  out of memory: scan
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
}

bool
pigato__worker_has_room (const pigato__worker_t *worker)
{
    return worker->concurrency < 0
        || worker->in_flight < (size_t) worker->concurrency;
}

pigato__worker_t *
pigato__service_pick (pigato__service_t *self,
                      const pigato__request_t *request, int dmode)
{
    if (dmode != PIGATO__DMODE_RAND && request->rejected_count == 0
    &&  !self->ready_broken) {
        pigato__timer_t *top = self->ready ? pigato__heap_peek (self->ready)
                                           : NULL;
        return top ? pigato__container_of (top, pigato__worker_t, ready_node)
                   : NULL;
    }
    pigato__worker_t *best = NULL;
    uint32_t eligible = 0;
    for (pigato__worker_t *worker = self->workers; worker;
         worker = worker->next) {
        if (!pigato__worker_has_room (worker)
        ||  pigato__request_rejected_by (request, worker->serial))
            continue;
        eligible++;
        if (dmode == PIGATO__DMODE_RAND) {
            //  Reservoir sampling: each eligible worker equally likely
            if (randombytes_uniform (eligible) == 0)
                best = worker;
        }
        else
        if (!best || worker->in_flight < best->in_flight
        ||  (worker->in_flight == best->in_flight
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
