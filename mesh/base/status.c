/*  =========================================================================
    status.c - status codes and their descriptions (one X-macro list)
    =========================================================================
*/
#include "internal.h"

const char *
pigato_strerror (int status)
{
    switch (status) {
#define PIGATO_STATUS_TEXT(name, value, text)                                  \
    case value: return text;
        PIGATO_STATUS_MAP (PIGATO_STATUS_TEXT)
#undef PIGATO_STATUS_TEXT
        default: return "unknown status";
    }
}

const char *
pigato_version (void)
{
    return PIGATO_VERSION_STRING;
}
