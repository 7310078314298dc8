#include "error.h"

const char *sl_strerror(int code) {
    if (code < 0) code = -code;
    switch (code) {
    case 0: return "success";
#define SL_E_CASE(sym, num, msg) \
    case num: return msg;
        SL_ERROR_MAP(SL_E_CASE)
#undef SL_E_CASE
    }
    return "unknown error";
}
