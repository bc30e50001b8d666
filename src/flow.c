/* flow.c: one flow layer forward (h^(l-1) -> h^(l)) and inverse over a range
 * of steps, the visiting orders (l2r, flip with block B), channel mixing,
 * and the per-window workspace (DESIGN §2.2, §2.4, §2.5).
 *
 * States are stored in window order; h^(l) for l < L is channel-mixed. A
 * layer visits positions in its own order; step n reads the previous
 * step's input X_{n-1} (sos at n = 0). Ownership flags say which channels
 * belong to real (non-pad) tokens; they move with every ChannelMix. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "flow.h"

/* ---- channel mixing ------------------------------------------------------ */
void chmix_perm(int c, int *perm) {
    int j = 0;
    for (int i = 0; i < c; i += 2) perm[j++] = i;
    for (int i = 1; i < c; i += 2) perm[j++] = i;
}

void chmix(const float *in, float *out, int c) {
    int j = 0;
    for (int i = 0; i < c; i += 2) out[j++] = in[i];
    for (int i = 1; i < c; i += 2) out[j++] = in[i];
}

void chunmix(const float *in, float *out, int c) {
    int j = 0;
    for (int i = 0; i < c; i += 2) out[i] = in[j++];
    for (int i = 1; i < c; i += 2) out[i] = in[j++];
}

static void chmix_u8(const unsigned char *in, unsigned char *out, int c) {
    int j = 0;
    for (int i = 0; i < c; i += 2) out[j++] = in[i];
    for (int i = 1; i < c; i += 2) out[j++] = in[i];
}

/* ---- visiting order ------------------------------------------------------ */
int flow_visit(int dir, int B, int N, int n) {
    if (dir == DIR_L2R) return n;
    int Bb = B > 0 ? B : N;
    int start = (n / Bb) * Bb;
    int len = N - start < Bb ? N - start : Bb;
    return start + (len - 1 - (n - start));
}

/* ---- workspace ------------------------------------------------------------- */
tflm_status work_init(Work *w, const Model *m) {
    const Config *cf = &m->cfg;
    memset(w, 0, sizeof *w);
    w->m = m;
    int N = cf->N, c = cf->c, D = cf->D, L = cf->L;
    int hmax = 0;
    for (int l = 1; l <= L; l++) {
        int h = flow_head(cf, l, NULL, NULL, NULL);
        if (h > hmax) hmax = h;
        if (kv_init(&w->kv[l - 1], cf->flow[l - 1].layers, N, D) != TFLM_OK) goto oom;
    }
    for (int l = 0; l <= L; l++) {
        w->h[l] = calloc((size_t)N * c, sizeof(float));
        w->own[l] = calloc((size_t)N * c, 1);
        if (!w->h[l] || !w->own[l]) goto oom;
    }
    for (int l = 0; l < L; l++) {
        w->lp_pos[l] = calloc(N, sizeof(double));
        w->ln_pos[l] = calloc(N, sizeof(double));
        if (!w->lp_pos[l] || !w->ln_pos[l]) goto oom;
    }
    w->xin = malloc((size_t)N * (c > cf->d ? c : cf->d) * sizeof(float));
    w->G = malloc((size_t)N * D * sizeof(float));
    w->HO = malloc((size_t)N * (hmax > 0 ? hmax : 1) * sizeof(float));
    w->pidx = malloc((size_t)N * sizeof(int));
    if (!w->xin || !w->G || !w->HO || !w->pidx) goto oom;
    return TFLM_OK;
oom:
    work_free(w);
    return tflm__err(TFLM_ENOMEM, "out of memory allocating a window workspace");
}

void work_free(Work *w) {
    for (int l = 0; l < MAX_FLOWS; l++) {
        kv_free(&w->kv[l]);
        free(w->lp_pos[l]);
        free(w->ln_pos[l]);
    }
    for (int l = 0; l <= MAX_FLOWS; l++) {
        free(w->h[l]);
        free(w->own[l]);
    }
    free(w->xin);
    free(w->G);
    free(w->HO);
    free(w->pidx);
    memset(w, 0, sizeof *w);
}

void work_set_tokens(Work *w, const int *tok) {
    const Config *cf = &w->m->cfg;
    int N = cf->N, c = cf->c, d = cf->d, L = cf->L;
    for (int n = 0; n < N; n++)
        for (int j = 0; j < c; j++)
            w->own[0][(size_t)n * c + j] = tok[n * cf->P + j / d] != 0;
    for (int l = 1; l <= L; l++)
        for (int n = 0; n < N; n++) {
            const unsigned char *src = w->own[l - 1] + (size_t)n * c;
            unsigned char *dst = w->own[l] + (size_t)n * c;
            if (l < L) chmix_u8(src, dst, c);
            else memcpy(dst, src, c);
        }
}

void work_encode(Work *w, const int *tok, int mean, uint64_t seed, uint64_t stream, double *R) {
    const Model *m = w->m;
    const Config *cf = &m->cfg;
    int T = cf->T, d = cf->d;
    double r = 0;
    for (int t = 0; t < T; t++) {
        int k = tok[t];
        const float *mu = m->w.cb_mean + (size_t)k * d;
        float sg = expf(m->w.cb_logsig[k]);
        float *z = w->h[0] + (size_t)t * d;   /* token-major: position t/P, channel (t%P)*d */
        for (int i = 0; i < d; i++) {
            double eps = mean ? 0.0 : rng_normal(rng_key(seed, RNG_EPS, stream, t, i));
            z[i] = mu[i] + sg * (float)eps;
        }
        if (R && k != 0) r += codebook_R(m, z);
    }
    if (R) *R = r;
}

/* ---- per-step coupling ------------------------------------------------------ */

/* Parameters of channel i at a step: a pointer into the head output, or the
 * maf head's output (from its context part in ho and the embeddings e of
 * channels < i) computed into buf. */
static const float *chan_params(const Model *m, const FlowWeights *fw, const FlowConfig *fc,
                                const float *ho, const float *e, int i, float *buf) {
    const Config *cf = &m->cfg;
    if (fc->maf_E > 0) {
        maf_channel(fw, cf->c, fc->K, fc->maf_E, fc->maf_H, ho + (size_t)i * fc->maf_H, e, i, buf);
        return buf;
    }
    return ho + (size_t)i * 3 * fc->K;
}

/* the maf embeddings of one position: (c-1)*E floats, on the stack when small */
#define ESTACK 4096
static float *emb_buf(const Config *cf, const FlowConfig *fc, float *stack) {
    size_t n = fc->maf_E > 0 ? (size_t)(cf->c - 1) * fc->maf_E : 0;
    if (n <= ESTACK) return stack;
    float *e = malloc(n * sizeof(float));
    if (!e) tflm__err(TFLM_ENOMEM, "out of memory (maf embeddings)");
    return e;
}

/* The end of a forward coupling: y (c doubles) -> Y, and log N of the owned
 * outputs; a non-finite state is an error. */
static tflm_status couple_out(int l, int c, const double *y, float *Y, const unsigned char *own,
                              double *ln) {
    double sn = 0;
    for (int i = 0; i < c; i++) {
        if (!isfinite(y[i]))
            return tflm__err(TFLM_ENUMERIC, "flow %d produced a non-finite state", l);
        Y[i] = (float)y[i];
        if (own[i]) sn += -LOG_SQRT_2PI - 0.5 * y[i] * y[i];
    }
    *ln = sn;
    return TFLM_OK;
}

tflm_status flow_couple_params(const Model *m, int l, const float *prm, size_t stride,
                               const float *X, float *Y, const unsigned char *own,
                               double *lp, double *ln) {
    const Config *cf = &m->cfg;
    const FlowConfig *fc = &cf->flow[l - 1];
    const FlowWeights *fw = &m->w.flow[l - 1];
    int c = cf->c;
    double y[512], sp = 0;
    for (int i = 0; i < c; i++) {
        const float *p = prm + (size_t)i * stride;
        const float *cl = fw->clamp + (size_t)i * fc->K;
        double lpi = fc->type == FLOW_AFFINE ? affine_forward(p, cl, X[i], &y[i])
                                              : mix1_forward(p, cl, fc->K, X[i], &y[i]);
        if (own[i]) sp += lpi;
    }
    *lp = sp;
    return couple_out(l, c, y, Y, own, ln);
}

/* Forward coupling of one position: X (c floats) -> Y (c floats, unmixed),
 * per-channel log p summed over owned channels, and log N of owned outputs. */
tflm_status flow_couple_forward(const Model *m, int l, const float *ho,
                                const float *X, float *Y, const unsigned char *own,
                                double *lp, double *ln) {
    const Config *cf = &m->cfg;
    const FlowConfig *fc = &cf->flow[l - 1];
    const FlowWeights *fw = &m->w.flow[l - 1];
    int c = cf->c, d = cf->d, n3 = 3 * fc->K;
    if (fc->type == FLOW_MIXD) {
        double x[512], y[512], lpc[512], sp = 0;
        for (int i = 0; i < c; i++) x[i] = X[i];
        for (int j = 0; j < cf->P; j++) {
            mixd_forward(ho + (size_t)j * cf->V, m->w.cb_mean, m->w.cb_logsig, cf->V, d,
                         x + j * d, y + j * d, lpc + j * d);
        }
        for (int i = 0; i < c; i++) if (own[i]) sp += lpc[i];
        *lp = sp;
        return couple_out(l, c, y, Y, own, ln);
    }
    if (fc->maf_E == 0)
        return flow_couple_params(m, l, ho, (size_t)n3, X, Y, own, lp, ln);
    /* maf: every channel's parameters first (channel i reads x_j, j < i) */
    float estack[ESTACK], *e = emb_buf(cf, fc, estack);
    if (!e) return TFLM_ENOMEM;
    float pstack[4096], *prm = (size_t)c * n3 <= 4096 ? pstack : malloc((size_t)c * n3 * sizeof(float));
    if (!prm) {
        if (e != estack) free(e);
        return tflm__err(TFLM_ENOMEM, "out of memory (maf parameters)");
    }
    for (int j = 0; j < c - 1; j++)
        maf_embed(fw, fc->maf_E, j, X[j], e + (size_t)j * fc->maf_E);
    for (int i = 0; i < c; i++)
        maf_channel(fw, c, fc->K, fc->maf_E, fc->maf_H, ho + (size_t)i * fc->maf_H, e, i,
                    prm + (size_t)i * n3);
    tflm_status st = flow_couple_params(m, l, prm, (size_t)n3, X, Y, own, lp, ln);
    if (prm != pstack) free(prm);
    if (e != estack) free(e);
    return st;
}

/* Inverse coupling of one position: Y (unmixed) -> X. */
static tflm_status couple_inverse(const Model *m, int l, const float *ho,
                                  const float *Y, float *X, const unsigned char *own,
                                  double *lp, double *ln) {
    const Config *cf = &m->cfg;
    const FlowConfig *fc = &cf->flow[l - 1];
    const FlowWeights *fw = &m->w.flow[l - 1];
    int c = cf->c, d = cf->d;
    double x[512], y[512], lpc[512];
    float buf[3 * 1024];
    for (int i = 0; i < c; i++) y[i] = Y[i];
    double sp = 0, sn = 0;
    if (fc->type == FLOW_MIXD) {
        for (int j = 0; j < cf->P; j++) {
            double lpt;
            tflm_status st = mixd_inverse(ho + (size_t)j * cf->V, m->w.cb_mean, m->w.cb_logsig,
                                          cf->V, d, y + j * d, x + j * d, lpc + j * d, &lpt);
            if (st != TFLM_OK) return st;
        }
        for (int i = 0; i < c; i++) if (own[i]) sp += lpc[i];
    } else {
        float estack[ESTACK], *e = emb_buf(cf, fc, estack);
        if (!e) return TFLM_ENOMEM;
        for (int i = 0; i < c; i++) {
            const float *prm = chan_params(m, fw, fc, ho, e, i, buf);
            const float *cl = fw->clamp + (size_t)i * fc->K;
            double lpi;
            if (fc->type == FLOW_AFFINE) {
                lpi = affine_inverse(prm, cl, y[i], &x[i]);
            } else {
                tflm_status st = mix1_inverse(prm, cl, fc->K, y[i], &x[i], &lpi);
                if (st != TFLM_OK) {
                    if (e != estack) free(e);
                    return st;
                }
            }
            x[i] = (double)(float)x[i];   /* what the forward pass will see */
            if (fc->maf_E > 0 && i < c - 1)
                maf_embed(fw, fc->maf_E, i, x[i], e + (size_t)i * fc->maf_E);
            if (own[i]) sp += lpi;
        }
        if (e != estack) free(e);
    }
    for (int i = 0; i < c; i++) {
        if (!isfinite(x[i]))
            return tflm__err(TFLM_ENUMERIC, "inverse of flow %d produced a non-finite state", l);
        X[i] = (float)x[i];
        if (own[i]) sn += -LOG_SQRT_2PI - 0.5 * y[i] * y[i];
    }
    *lp = sp;
    *ln = sn;
    return TFLM_OK;
}

static void tf_dims(const Config *cf, int l, TfDims *dm) {
    dm->D = cf->D;
    dm->H = cf->H;
    dm->nblk = cf->flow[l - 1].layers;
    dm->cin = cf->c;
    dm->eps = (float)cf->ln_eps;
}

/* the transformer input row of step n: sos or the input at the previous step */
static void step_input(const Work *w, int l, int n, float *row) {
    const Config *cf = &w->m->cfg;
    int c = cf->c, dir = cf->flow[l - 1].dir;
    if (n == 0) memcpy(row, w->m->w.flow[l - 1].sos, c * sizeof(float));
    else memcpy(row, w->h[l - 1] + (size_t)flow_visit(dir, cf->B, cf->N, n - 1) * c,
                c * sizeof(float));
}

/* Head outputs (for maf flows: the context parts) for n rows of G. */
static void head_rows(const Work *w, const Ops *ops, int l, const float *G, int n, float *HO) {
    const Config *cf = &w->m->cfg;
    const float *W, *b;
    int width = flow_head(cf, l, &w->m->w.flow[l - 1], &W, &b);
    ops->matmul(HO, G, W, b, n, cf->D, width);
}

tflm_status flow_cache_steps(Work *w, const Ops *ops, int l, int s0, int s1) {
    const Model *m = w->m;
    const Config *cf = &m->cfg;
    int c = cf->c, dir = cf->flow[l - 1].dir, n = s1 - s0;
    if (n <= 0) return TFLM_OK;
    KVCache *kv = &w->kv[l - 1];
    if (kv->len != s0) return tflm__err(TFLM_EINVAL, "flow %d: cache holds %d steps, not %d", l, kv->len, s0);
    for (int s = s0; s < s1; s++) {
        step_input(w, l, s, w->xin + (size_t)(s - s0) * c);
        w->pidx[s - s0] = flow_visit(dir, cf->B, cf->N, s);
    }
    TfDims dm;
    tf_dims(cf, l, &dm);
    return tf_forward(ops, &m->w.flow[l - 1], &dm, kv, w->xin, w->pidx, n, w->G);
}

tflm_status flow_forward_steps(Work *w, const Ops *ops, int l, int s0, int s1) {
    const Model *m = w->m;
    const Config *cf = &m->cfg;
    int c = cf->c, L = cf->L, n = s1 - s0;
    if (n <= 0) return TFLM_OK;
    tflm_status st = flow_cache_steps(w, ops, l, s0, s1);   /* G and pidx of the steps */
    if (st != TFLM_OK) return st;
    head_rows(w, ops, l, w->G, n, w->HO);
    int hout = flow_head(cf, l, NULL, NULL, NULL);
    for (int s = s0; s < s1; s++) {
        int p = w->pidx[s - s0];
        float Y[512];
        st = flow_couple_forward(m, l, w->HO + (size_t)(s - s0) * hout,
                            w->h[l - 1] + (size_t)p * c, Y, w->own[l - 1] + (size_t)p * c,
                            &w->lp_pos[l - 1][p], &w->ln_pos[l - 1][p]);
        if (st != TFLM_OK) return st;
        if (l < L) chmix(Y, w->h[l] + (size_t)p * c, c);
        else memcpy(w->h[l] + (size_t)p * c, Y, c * sizeof(float));
    }
    return TFLM_OK;
}

tflm_status flow_inverse_steps(Work *w, const Ops *ops, int l, int s0, int s1) {
    const Model *m = w->m;
    const Config *cf = &m->cfg;
    int c = cf->c, L = cf->L, dir = cf->flow[l - 1].dir;
    KVCache *kv = &w->kv[l - 1];
    if (kv->len != s0) return tflm__err(TFLM_EINVAL, "flow %d: cache holds %d steps, not %d", l, kv->len, s0);
    TfDims dm;
    tf_dims(cf, l, &dm);
    for (int s = s0; s < s1; s++) {
        int p = flow_visit(dir, cf->B, cf->N, s);
        step_input(w, l, s, w->xin);
        tflm_status st = tf_forward(ops, &m->w.flow[l - 1], &dm, kv, w->xin, &p, 1, w->G);
        if (st != TFLM_OK) return st;
        head_rows(w, ops, l, w->G, 1, w->HO);
        float Y[512];
        const float *hp = w->h[l] + (size_t)p * c;
        if (l < L) chunmix(hp, Y, c);
        else memcpy(Y, hp, c * sizeof(float));
        st = couple_inverse(m, l, w->HO, Y, w->h[l - 1] + (size_t)p * c,
                            w->own[l - 1] + (size_t)p * c, &w->lp_pos[l - 1][p], &w->ln_pos[l - 1][p]);
        if (st != TFLM_OK) return st;
    }
    return TFLM_OK;
}

/* Undo the mixes of state h^(layer) at one position: out = h^(0)-ordered channels. */
void state_unmix(const Config *cf, int layer, const float *h, float *out) {
    int c = cf->c, k = layer < cf->L ? layer : cf->L - 1;
    float a[512], b[512];
    memcpy(a, h, c * sizeof(float));
    for (int i = 0; i < k; i++) {
        chunmix(a, b, c);
        memcpy(a, b, c * sizeof(float));
    }
    memcpy(out, a, c * sizeof(float));
}
