/* inspect.c: reading a trace's states back for the app's inspector: the
 * latent of one token at one layer with the channel mixes undone
 * (DESIGN §2.4), and the decoder's top-k tokens for a latent (DESIGN §2.1).
 * Both read the model only, never the context's run state. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"
#include "flow.h"

tflm_status tflm_trace_latent(const tflm_ctx *ctx, const tflm_trace *tr, int layer, int t,
                              float *z) {
    if (!ctx || !tr || !z) return tflm__err(TFLM_EINVAL, "trace latent: missing argument");
    const Config *cf = &ctx->m.cfg;
    if (layer < 0 || layer > tr->n_flows)
        return tflm__err(TFLM_EINVAL, "trace latent: layer %d out of range 0..%d", layer, tr->n_flows);
    if (t < 0 || t >= tr->n_tok)
        return tflm__err(TFLM_EINVAL, "trace latent: token %d out of range 0..%d", t, tr->n_tok - 1);
    if (tr->channels != cf->c || tr->patch != cf->P)
        return tflm__err(TFLM_EINVAL, "trace latent: the trace is not of this model");
    int P = tr->patch, c = tr->channels, d = cf->d;
    int pos = t / P, j = t % P;
    const float *h = tr->state + ((size_t)layer * tr->n_pos + pos) * c;
    float buf[512];
    if (c > 512) return tflm__err(TFLM_EUNSUPPORTED, "trace latent: %d channels", c);
    if (cf->is_ar) memcpy(buf, h, c * sizeof(float));
    else state_unmix(cf, layer, h, buf);
    memcpy(z, buf + (size_t)j * d, d * sizeof(float));
    return TFLM_OK;
}

tflm_status tflm_decode_topk(const tflm_ctx *ctx, const float *z, int k, int *ids, float *probs) {
    if (!ctx || !z || !ids || !probs || k < 1)
        return tflm__err(TFLM_EINVAL, "decode top-k: missing argument");
    const Model *m = &ctx->m;
    int V = m->cfg.V;
    if (V > 1024) return tflm__err(TFLM_EUNSUPPORTED, "decode top-k: vocabulary of %d", V);
    double lg[1024], mx = -INFINITY, s = 0;
    codebook_logits(m, z, lg);
    for (int i = 0; i < V; i++) if (lg[i] > mx) mx = lg[i];
    for (int i = 0; i < V; i++) s += exp(lg[i] - mx);
    if (k > V) k = V;
    /* partial selection sort: k is small */
    for (int r = 0; r < k; r++) {
        int best = -1;
        for (int i = 0; i < V; i++) {
            int taken = 0;
            for (int q = 0; q < r; q++) if (ids[q] == i) { taken = 1; break; }
            if (!taken && (best < 0 || lg[i] > lg[best])) best = i;
        }
        ids[r] = best;
        probs[r] = (float)(exp(lg[best] - mx) / s);
    }
    return TFLM_OK;
}
