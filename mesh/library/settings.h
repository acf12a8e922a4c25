/*  =========================================================================
    settings.h - what a client or a worker is configured with before it
    connects: CURVE keys, heartbeat, framing. One implementation behind
    both classes' pigato_*_set_* calls, so the two validate, store and
    explain a refusal the same way; each public setter is one call here.
    =========================================================================
*/
#ifndef PIGATO_SETTINGS_H_INCLUDED
#define PIGATO_SETTINGS_H_INCLUDED

#include "../wire/native.h"
#include "peer.h"

typedef struct {
    pigato__peer_security_t security;  //  CURVE settings, borrowed by links
    int interval_ms;                   //  heartbeat interval
    int liveness;               //  intervals of silence before a link is lost
    pigato__framing_t framing;  //  for links connected from now on
    int64_t max_outbound;       //  per link, bytes (link_budget.h)
    char *err;                  //  owner's last-error buffer, borrowed
    size_t err_size;            //  its size
} pigato__settings_t;

//  Defaults from pigato.h: no keys (CURVE with an ephemeral key pair),
//  PIGATO_HEARTBEAT_MS, PIGATO_LIVENESS, auto framing,
//  PIGATO_LINK_MAX_OUTBOUND. Setters write why
//  they refuse a value into err, which must outlive the settings.
void pigato__settings_init (pigato__settings_t *self, char *err,
                            size_t err_size);

//  Frees what the settings own (key file, certificate and CA paths); not
//  the struct itself.
void pigato__settings_reset (pigato__settings_t *self);

//  Every setter returns PIGATO_E_INVALID when self is NULL (a NULL client
//  or worker), and then writes no message.

//  The broker's public key: Z85 text, a zcert file or an X.509
//  certificate (checked against the CA when one is set). A status, the
//  reason in err (pigato__peer_security_set_server_key).
int pigato__settings_set_server_key (pigato__settings_t *self,
                                     const char *key) PIGATO__MUST_CHECK;

//  The CA a server certificate must verify against; NULL or "" = none.
//  A status, the reason in err (pigato__peer_security_set_server_ca).
int pigato__settings_set_server_ca (pigato__settings_t *self,
                                    const char *ca_crt) PIGATO__MUST_CHECK;

//  Own key pair from a zcert secret file, checked to load with safe
//  permissions. A status, the reason in err.
int pigato__settings_set_key_file (pigato__settings_t *self,
                                   const char *path) PIGATO__MUST_CHECK;

//  NULL mechanism instead of CURVE. PIGATO_OK.
int pigato__settings_set_insecure (pigato__settings_t *self, bool insecure);

//  Heartbeat interval and liveness: a value that is not positive leaves
//  the current one (pigato.h has these setters return nothing, so this is
//  not an error). PIGATO_OK.
int pigato__settings_set_heartbeat (pigato__settings_t *self, int interval_ms,
                                    int liveness);

//  "auto", "native" or "0.0.46" (pigato__framing_parse). PIGATO_OK, or
//  PIGATO_E_INVALID for any other name (NULL too) with the reason in err;
//  the framing is then unchanged.
int pigato__settings_set_framing (pigato__settings_t *self,
                                  const char *framing) PIGATO__MUST_CHECK;

//  The outbound budget per link: PIGATO_OK, or PIGATO_E_INVALID outside
//  PIGATO__LINK_OUTBOUND_MIN to _MAX with the reason in err (unchanged).
#define PIGATO__LINK_OUTBOUND_MIN (1024LL * 1024)
#define PIGATO__LINK_OUTBOUND_MAX (1LL << 40)
int pigato__settings_set_max_outbound (pigato__settings_t *self,
                                       int64_t bytes) PIGATO__MUST_CHECK;

#endif
