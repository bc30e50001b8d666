/* profile.c: the refinement profile of a trace (issue 7): per layer, the
 * fraction of tokens decoded as the reference and the mean confidence. */
#include <string.h>
#include "internal.h"

tflm_status tflm_trace_profile(const tflm_trace *tr, const int *ref, int from, tflm_profile *out) {
    if (!tr || !out) return tflm__err(TFLM_EINVAL, "profile: missing argument");
    memset(out, 0, sizeof *out);
    if (!ref) ref = tr->tokens;
    if (from < 0) from = 0;
    int L = tr->n_flows, n = 0;
    out->n_flows = L;
    for (int t = from; t < tr->n_tok; t++) {
        if (ref[t] == 0) continue;   /* pads */
        n++;
        for (int l = 0; l <= L; l++) {
            size_t k = (size_t)l * tr->n_tok + t;
            out->agree[l] += tr->dec[k] == ref[t];
            out->conf[l] += tr->prob[k];
        }
    }
    if (n == 0) return tflm__err(TFLM_EINVAL, "profile: no tokens to count");
    for (int l = 0; l <= L; l++) {
        out->agree[l] /= n;
        out->conf[l] /= n;
    }
    out->n_tokens = n;
    return TFLM_OK;
}
