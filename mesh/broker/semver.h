/*  =========================================================================
    semver.h - versions and ranges for versioned services (name@1.2.3)

    Workers register `name@MAJOR.MINOR.PATCH`; requests may name a range:
    `^1.2`, `~1.2.0`, `1.x`, `1.2.*`, `*`, comparators `>=1.2.0 <2` (space =
    and), alternatives `1.x || 3.x`, or an exact version. Pre-release tags
    are not supported: a name like `x@1.0.0-beta` is simply not versioned.
    =========================================================================
*/
#ifndef PIGATO_SEMVER_H_INCLUDED
#define PIGATO_SEMVER_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t major, minor, patch;
} pigato__version_t;

#define PIGATO__RANGE_MAX 16  //  comparators in a range, all alternatives

typedef struct {
    struct {
        int op;  //  '>', 'g' (>=), '<', 'l' (<=), '='
        pigato__version_t version;
        int alternative;  //  index of the || group
    } terms [PIGATO__RANGE_MAX];
    size_t count;
    int alternatives;  //  groups
} pigato__range_t;

//  Parses "1.2.3" (exactly three numbers). true if valid.
bool pigato__version_parse (const char *text, size_t size,
                            pigato__version_t *version);

//  Parses a range (see above). true if valid.
bool pigato__range_parse (const char *text, size_t size,
                          pigato__range_t *range);

//  True if the version satisfies the range.
bool pigato__range_match (const pigato__range_t *range,
                          const pigato__version_t *version);

//  <0, 0, >0 like strcmp.
int pigato__version_compare (const pigato__version_t *a,
                             const pigato__version_t *b);

#endif
