/* error.c: per-thread last-error message and status names. */
#include <stdarg.h>
#include <stdio.h>
#include "internal.h"
#include "config.h"

static _Thread_local char last_error[512];

tflm_status tflm__err(tflm_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return st;
}

const char *tflm_last_error(void) { return last_error; }

const char *tflm_status_str(tflm_status s) {
    switch (s) {
    case TFLM_OK: return "ok";
    case TFLM_EINVAL: return "invalid argument";
    case TFLM_ENOMEM: return "out of memory";
    case TFLM_EIO: return "input/output error";
    case TFLM_EFORMAT: return "malformed file";
    case TFLM_EUNSUPPORTED: return "not supported by this model";
    case TFLM_ECANCELLED: return "cancelled";
    case TFLM_ENUMERIC: return "numerical failure";
    }
    return "unknown status";
}

const char *tflm_version(void) { return PACKAGE_VERSION; }
