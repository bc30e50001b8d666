/* ar.c: the discrete autoregressive baseline (DESIGN §2.6): the same
 * transformer over tokens with input W_in mu_{x_{t-1}} (sos at t = 0),
 * positions t, and a head of V logits. */
#include <math.h>
#include <string.h>
#include "flow.h"

tflm_status ar_steps(Work *w, const Ops *ops, const int *tok, int s0, int s1) {
    const Model *m = w->m;
    const Config *cf = &m->cfg;
    const FlowWeights *fw = &m->w.flow[0];
    int d = cf->d, n = s1 - s0;
    if (n <= 0) return TFLM_OK;
    if (w->kv[0].len != s0) return tflm__err(TFLM_EINVAL, "ar: cache holds %d steps, not %d", w->kv[0].len, s0);
    for (int s = s0; s < s1; s++) {
        const float *src = s == 0 ? fw->sos : m->w.cb_mean + (size_t)tok[s - 1] * d;
        memcpy(w->xin + (size_t)(s - s0) * d, src, d * sizeof(float));
        w->pidx[s - s0] = s;
    }
    TfDims dm = { cf->D, cf->H, cf->flow[0].layers, d, (float)cf->ln_eps };
    tflm_status st = tf_forward(ops, fw, &dm, &w->kv[0], w->xin, w->pidx, n, w->G);
    if (st != TFLM_OK) return st;
    ops->matmul(w->HO, w->G, fw->head_w, fw->head_b, n, cf->D, cf->V);
    return TFLM_OK;
}

double ar_logsoftmax(const float *lg, int V, int k, double temp) {
    double mx = -INFINITY, s = 0;
    for (int i = 0; i < V; i++) if (lg[i] / temp > mx) mx = lg[i] / temp;
    for (int i = 0; i < V; i++) s += exp(lg[i] / temp - mx);
    return lg[k] / temp - mx - log(s);
}
