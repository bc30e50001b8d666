/* tests/tap.h: a tiny test harness. Each check prints "ok"/"not ok" in TAP
 * style; tap_done() returns the exit status (0 when everything passed). */
#ifndef TFLM_TAP_H
#define TFLM_TAP_H
#include <stdio.h>
#include <math.h>

static int tap_n, tap_fail;

#define CHECK(cond, ...) do { \
    tap_n++; \
    if (cond) { printf("ok %d - ", tap_n); } \
    else { tap_fail++; printf("not ok %d - ", tap_n); } \
    printf(__VA_ARGS__); printf("\n"); fflush(stdout); \
} while (0)

/* |a - b| <= tol, printing both values */
#define CHECK_NEAR(a, b, tol, ...) do { \
    double _a = (a), _b = (b), _t = (tol); \
    tap_n++; \
    if (fabs(_a - _b) <= _t && !isnan(_a) && !isnan(_b)) printf("ok %d - ", tap_n); \
    else { tap_fail++; printf("not ok %d - ", tap_n); } \
    printf(__VA_ARGS__); printf(" (got %.10g, want %.10g, tol %.3g)\n", _a, _b, _t); fflush(stdout); \
} while (0)

static inline int tap_done(void) {
    printf("1..%d\n", tap_n);
    if (tap_fail) printf("# %d of %d checks failed\n", tap_fail, tap_n);
    return tap_fail ? 1 : 0;
}
#endif
