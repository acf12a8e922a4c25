/*  =========================================================================
    semver.c - versions and ranges (see semver.h). Input comes from peers:
    every number is bounded, every length checked.
    =========================================================================
*/
#include <string.h>
#include "semver.h"

#define NUMBER_MAX 999999999u

//  Reads a number, or an x-range wildcard ('x', 'X', '*') when wild is
//  not NULL. Returns characters used, 0 if none.
static size_t
s_number (const char *at, const char *end, uint32_t *value, bool *wild)
{
    if (wild && at < end && (*at == 'x' || *at == 'X' || *at == '*')) {
        *wild = true;
        *value = 0;
        return 1;
    }
    if (wild)
        *wild = false;
    const char *start = at;
    uint64_t number = 0;
    while (at < end && *at >= '0' && *at <= '9' && at - start < 9)
        number = number * 10 + (uint64_t) (*at++ - '0');
    if (at == start || (at < end && *at >= '0' && *at <= '9'))
        return 0;
    if (at - start > 1 && *start == '0')
        return 0;  //  no leading zeros
    *value = (uint32_t) number;
    return (size_t) (at - start);
}

bool
pigato__version_parse (const char *text, size_t size,
                       pigato__version_t *version)
{
    const char *at = text, *end = text + size;
    uint32_t parts [3];
    for (int index = 0; index < 3; index++) {
        if (index && (at >= end || *at++ != '.'))
            return false;
        size_t used = s_number (at, end, &parts [index], NULL);
        if (!used)
            return false;
        at += used;
    }
    if (at != end)
        return false;
    version->major = parts [0];
    version->minor = parts [1];
    version->patch = parts [2];
    return true;
}

int
pigato__version_compare (const pigato__version_t *a, const pigato__version_t *b)
{
    if (a->major != b->major)
        return a->major < b->major ? -1 : 1;
    if (a->minor != b->minor)
        return a->minor < b->minor ? -1 : 1;
    if (a->patch != b->patch)
        return a->patch < b->patch ? -1 : 1;
    return 0;
}

static bool
s_add (pigato__range_t *range, int op, uint32_t major, uint32_t minor,
       uint32_t patch)
{
    if (range->count == PIGATO__RANGE_MAX)
        return false;
    range->terms [range->count].op = op;
    range->terms [range->count].version = (pigato__version_t) { major, minor,
                                                                patch };
    range->terms [range->count].alternative = range->alternatives;
    range->count++;
    return true;
}

//  One comparator: [op] partial-version. Expands ^, ~ and x-ranges into
//  plain comparators.
static bool
s_comparator (pigato__range_t *range, const char *at, const char *end)
{
    int op = 0;  //  0: x-range or exact
    if (end - at >= 2 && at [0] == '>' && at [1] == '=') {
        op = 'g';
        at += 2;
    }
    else if (end - at >= 2 && at [0] == '<' && at [1] == '=') {
        op = 'l';
        at += 2;
    }
    else if (*at == '>' || *at == '<' || *at == '=' || *at == '^' || *at == '~')
        op = *at++;
    uint32_t parts [3] = { 0, 0, 0 };
    bool wild [3] = { true, true, true };
    int given = 0;
    for (; given < 3 && at < end; given++) {
        if (given && *at++ != '.')
            return false;
        size_t used = s_number (at, end, &parts [given], &wild [given]);
        if (!used)
            return false;
        at += used;
    }
    if (at != end || given == 0)
        return false;
    //  A wildcard makes what follows it wild too ("1.x.3" = "1.x")
    for (int index = 1; index < 3; index++)
        if (wild [index - 1])
            wild [index] = true, parts [index] = 0;
    uint32_t major = parts [0], minor = parts [1], patch = parts [2];
    if (wild [0])
        return op == 0 || op == '=' ? s_add (range, 'g', 0, 0, 0) : false;
    switch (op) {
        case 'g':
        case '>':
        case 'l':
        case '<':
            if (op == '>' && wild [2])  //  >1.2 means >=1.3.0
                return wild [1] ? s_add (range, 'g', major + 1, 0, 0)
                                : s_add (range, 'g', major, minor + 1, 0);
            if (op == 'l' && wild [2])  //  <=1.2 means <1.3.0
                return wild [1] ? s_add (range, '<', major + 1, 0, 0)
                                : s_add (range, '<', major, minor + 1, 0);
            return s_add (range, op, major, minor, patch);
        case '^':
            if (!s_add (range, 'g', major, minor, patch))
                return false;
            if (major > 0 || wild [1])
                return s_add (range, '<', major + 1, 0, 0);
            if (minor > 0 || wild [2])
                return s_add (range, '<', 0, minor + 1, 0);
            return s_add (range, '<', 0, 0, patch + 1);
        case '~':
            if (!s_add (range, 'g', major, minor, patch))
                return false;
            return wild [1] ? s_add (range, '<', major + 1, 0, 0)
                            : s_add (range, '<', major, minor + 1, 0);
        default:  //  exact or x-range
            if (!wild [2])
                return s_add (range, '=', major, minor, patch);
            if (!s_add (range, 'g', major, minor, 0))
                return false;
            return wild [1] ? s_add (range, '<', major + 1, 0, 0)
                            : s_add (range, '<', major, minor + 1, 0);
    }
}

bool
pigato__range_parse (const char *text, size_t size, pigato__range_t *range)
{
    memset (range, 0, sizeof *range);
    const char *at = text, *end = text + size;
    bool in_group = false;
    while (at < end) {
        if (*at == ' ') {
            at++;
            continue;
        }
        if (end - at >= 2 && at [0] == '|' && at [1] == '|') {
            if (!in_group)
                return false;  //  empty alternative
            range->alternatives++;
            in_group = false;
            at += 2;
            continue;
        }
        const char *start = at;
        while (at < end && *at != ' ' && *at != '|')
            at++;
        //  ">= 1.2" with a space: join the operator to its version
        if (at - start <= 2 && at < end && *at == ' '
            && (*start == '>' || *start == '<' || *start == '=')) {
            const char *next = at;
            while (next < end && *next == ' ')
                next++;
            char joined [64];
            size_t op_size = (size_t) (at - start);
            const char *version_end = next;
            while (version_end < end && *version_end != ' '
                   && *version_end != '|')
                version_end++;
            size_t version_size = (size_t) (version_end - next);
            if (op_size + version_size >= sizeof joined)
                return false;
            memcpy (joined, start, op_size);
            memcpy (joined + op_size, next, version_size);
            if (!s_comparator (range, joined, joined + op_size + version_size))
                return false;
            at = version_end;
        }
        else if (!s_comparator (range, start, at))
            return false;
        in_group = true;
    }
    if (!in_group)
        return false;
    range->alternatives++;
    return true;
}

bool
pigato__range_match (const pigato__range_t *range,
                     const pigato__version_t *version)
{
    for (int group = 0; group < range->alternatives; group++) {
        bool all = true;
        for (size_t index = 0; index < range->count && all; index++) {
            if (range->terms [index].alternative != group)
                continue;
            int order = pigato__version_compare (version,
                                                 &range->terms [index].version);
            switch (range->terms [index].op) {
                case '>': all = order > 0; break;
                case 'g': all = order >= 0; break;
                case '<': all = order < 0; break;
                case 'l': all = order <= 0; break;
                default: all = order == 0; break;
            }
        }
        if (all)
            return true;
    }
    return false;
}
