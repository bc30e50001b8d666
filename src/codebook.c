/* codebook.c: the Gaussian codebook's tied decoder (DESIGN §2.1).
 * l_k(z) = -(d/2) log 2pi - d s_k - (|z|^2 - 2 z.mu_k + |mu_k|^2) e^{-2 s_k} / 2,
 * in double precision; p(x = k | z) = softmax_k l_k(z); R = -LSE_k l_k(z). */
#include <math.h>
#include "internal.h"

void codebook_logits(const Model *m, const float *z, double *logits) {
    int V = m->cfg.V, d = m->cfg.d;
    double zz = 0;
    for (int i = 0; i < d; i++) zz += (double)z[i] * z[i];
    for (int k = 0; k < V; k++) {
        const float *mu = m->w.cb_mean + (size_t)k * d;
        double s = m->w.cb_logsig[k], zm = 0, mm = 0;
        for (int i = 0; i < d; i++) {
            zm += (double)z[i] * mu[i];
            mm += (double)mu[i] * mu[i];
        }
        double dist = zz - 2 * zm + mm;
        if (dist < 0) dist = 0;
        logits[k] = -d * LOG_SQRT_2PI - d * s - 0.5 * dist * exp(-2 * s);
    }
}

static double lse(const double *x, int n) {
    double mx = -INFINITY;
    for (int i = 0; i < n; i++) if (x[i] > mx) mx = x[i];
    double s = 0;
    for (int i = 0; i < n; i++) s += exp(x[i] - mx);
    return mx + log(s);
}

double codebook_R(const Model *m, const float *z) {
    double lg[1024];
    codebook_logits(m, z, lg);
    return -lse(lg, m->cfg.V);
}

int codebook_decode(const Model *m, const float *z, float *prob, float *entropy) {
    int V = m->cfg.V, best = 0;
    double lg[1024];
    codebook_logits(m, z, lg);
    double Z = lse(lg, V), H = 0;
    for (int k = 0; k < V; k++) {
        if (lg[k] > lg[best]) best = k;
        double lp = lg[k] - Z;
        if (lp > -745) H -= exp(lp) * lp;
    }
    if (prob) *prob = (float)exp(lg[best] - Z);
    if (entropy) *entropy = (float)H;
    return best;
}
