#include "errclass.h"

#include <string.h>

static const char *const names[] = {
#define SL_EC_NAME(sym, name, dflt) name,
    SL_ERRCLASS_MAP(SL_EC_NAME)
#undef SL_EC_NAME
};

const char *sl_errclass_name(sl_errclass c) {
    if ((int)c < 0 || c >= SL_EC__COUNT) return "internal";
    return names[c];
}

int sl_errclass_parse(const char *name) {
    for (int i = 0; i < SL_EC__COUNT; i++)
        if (strcmp(names[i], name) == 0) return i;
    return -1;
}

unsigned sl_errclass_default_mask(void) {
    unsigned m = 0;
#define SL_EC_MASK(sym, name, dflt) \
    if (dflt) m |= 1u << SL_EC_##sym;
    SL_ERRCLASS_MAP(SL_EC_MASK)
#undef SL_EC_MASK
    return m;
}
