/* test_ops.c: the compute ops (kernels/) and the transformer (src/transformer.c).
 *
 * - Each op of the BLAS table against the reference table on random inputs
 *   of several shapes (n = 1, odd sizes, shapes that span several tiles).
 * - Attention from a cache (start > 0) against the rows of one call over
 *   the whole sequence.
 * - tf_forward over a window in one call, step by step (n = 1) and in
 *   chunks (3 + 5 + rest): the KV-cache path.
 * - tf_forward against a straightforward double-precision transformer
 *   written here, independent of the ops.
 * - Bit-for-bit identical results with 1 and 2 OpenMP threads.
 *
 * Tolerances, and why:
 * - matmul: both sides sum k products in float, in different orders
 *   (sgemm blocks and vectorises the k loop). Each float sum is within
 *   (k+1) u sum_k |x_k w_k| of the exact value (u = 2^-24, the standard
 *   worst-case bound), so two of them differ by at most twice that, plus
 *   |b| u for the bias. We check that bound element by element; an
 *   indexing bug is off by O(1) of the scale and cannot hide under it.
 * - layernorm: the BLAS table runs the reference loop, so equal.
 * - gelu: the BLAS table uses x / (1 + e^-2u) with its own exp, the
 *   reference 0.5 x (1 + tanhf u); each is within a few float roundings
 *   of exact, so 1e-6 relative (of 1 + |y|) between them.
 * - attention: outputs are convex combinations of v (|v| <= 1 here); a
 *   score error e changes them by about 2e|v|. With hs <= 16 and |q|,|k|
 *   <= 3 the scores are within ~1e-5 of exact in float, so we allow 2e-5
 *   absolute between backends and 3e-5 against double. Typical errors
 *   are ~1e-7. From a cache (start > 0) the reference must give exactly
 *   the rows of one call over the whole sequence (same loops per row);
 *   the BLAS table tiles rows differently, so 2e-5 there too.
 * - tf_forward, one call vs steps vs chunks: the reference ops compute
 *   every row with the same loops whatever n is, so they must agree
 *   exactly; the BLAS ops use sgemv for n = 1 and sgemm tiles otherwise,
 *   so rounding differs: 2e-5 of max|G| (G is a LayerNorm output, O(1);
 *   a few float roundings per block, amplified by the following
 *   LayerNorms, measure ~1e-6).
 * - tf_forward vs double: 1e-4 relative (max error / max|G|), the
 *   agreement DESIGN §6 asks of the single-precision transformer. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include "config.h"
#include "internal.h"
#include "tap.h"
#ifdef _OPENMP
#include <omp.h>
#endif

#define U 5.9604644775390625e-08    /* 2^-24, float unit roundoff */

/* ---- random numbers and buffers -------------------------------------------- */

static uint64_t rstate = 0x9e3779b97f4a7c15ULL;

static double urand(void) {         /* uniform in [-1, 1) */
    rstate ^= rstate << 13;
    rstate ^= rstate >> 7;
    rstate ^= rstate << 17;
    return (double)(rstate >> 11) * (2.0 / 9007199254740992.0) - 1.0;
}

static float *rvec(size_t n, double scale, double offset) {
    float *p = malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = (float)(offset + scale * urand());
    return p;
}

static float *fzeros(size_t n) { return calloc(n ? n : 1, sizeof(float)); }

static double maxdiff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= m)) m = d;   /* NaN propagates as the max */
    }
    return m;
}

static void set_threads(int t) {
#ifdef _OPENMP
    omp_set_num_threads(t);
#else
    (void)t;
#endif
}

/* ---- ops ----------------------------------------------------------------------- */

static void test_matmul(const Ops *ref, const Ops *fast) {
    static const int shapes[][3] = {    /* n, in, out */
        {1, 1, 1}, {1, 37, 5}, {1, 256, 768}, {1, 300, 129}, {2, 3, 4}, {3, 17, 33},
        {7, 64, 64}, {70, 37, 300}, {130, 256, 513}, {65, 1024, 256},
    };
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int n = shapes[s][0], in = shapes[s][1], out = shapes[s][2];
        float *x = rvec((size_t)n * in, 1.0, 0.0), *w = rvec((size_t)out * in, 1.0, 0.0);
        float *b = (s % 2) ? rvec(out, 1.0, 0.0) : NULL;
        float *yr = fzeros((size_t)n * out), *yf = fzeros((size_t)n * out);
        ref->matmul(yr, x, w, b, n, in, out);
        fast->matmul(yf, x, w, b, n, in, out);
        double worst_fast = 0, worst_ref = 0;   /* error / bound */
        for (int i = 0; i < n; i++)
            for (int o = 0; o < out; o++) {
                double exact = b ? b[o] : 0, scale = b ? fabs(b[o]) : 0;
                for (int k = 0; k < in; k++) {
                    double p = (double)x[(size_t)i * in + k] * w[(size_t)o * in + k];
                    exact += p;
                    scale += fabs(p);
                }
                double bound = (in + 1) * U * scale + 1e-30;
                size_t j = (size_t)i * out + o;
                double ef = fabs(yf[j] - (double)yr[j]) / (2 * bound);
                double er = fabs(yr[j] - exact) / bound;
                if (!(ef <= worst_fast)) worst_fast = ef;
                if (!(er <= worst_ref)) worst_ref = er;
            }
        CHECK(worst_ref <= 1, "matmul ref n=%d in=%d out=%d%s vs double: %.3g of the bound",
              n, in, out, b ? " +b" : "", worst_ref);
        CHECK(worst_fast <= 1, "matmul %s n=%d in=%d out=%d%s vs ref: %.3g of the bound",
              fast->name, n, in, out, b ? " +b" : "", worst_fast);
        free(x); free(w); free(b); free(yr); free(yf);
    }
}

static void test_layernorm_gelu(const Ops *ref, const Ops *fast) {
    static const int shapes[][2] = { {1, 1}, {1, 7}, {5, 64}, {33, 48}, {300, 256} };
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int n = shapes[s][0], D = shapes[s][1];
        size_t nd = (size_t)n * D;
        float *x = rvec(nd, 3.0, 0.5), *w = rvec(D, 0.5, 1.0), *b = rvec(D, 0.5, 0.0);
        float *yr = fzeros(nd), *yf = fzeros(nd);
        float eps = 1e-5f;
        ref->layernorm(yr, x, w, b, n, D, eps);
        fast->layernorm(yf, x, w, b, n, D, eps);
        double err = 0;
        for (int i = 0; i < n; i++) {
            const float *xi = x + (size_t)i * D;
            double mean = 0, var = 0;
            for (int j = 0; j < D; j++) mean += xi[j];
            mean /= D;
            for (int j = 0; j < D; j++) var += (xi[j] - mean) * (xi[j] - mean);
            var /= D;
            for (int j = 0; j < D; j++) {
                double want = (xi[j] - mean) / sqrt(var + eps) * w[j] + b[j];
                double e = fabs(yr[(size_t)i * D + j] - want);
                if (!(e <= err)) err = e;
            }
        }
        CHECK(err <= 1e-5, "layernorm ref n=%d D=%d vs double: max error %.3g (tol 1e-5)",
              n, D, err);
        CHECK(memcmp(yr, yf, nd * sizeof(float)) == 0, "layernorm %s n=%d D=%d equals ref",
              fast->name, n, D);
        /* in place gives the same result */
        memcpy(yf, x, nd * sizeof(float));
        fast->layernorm(yf, yf, w, b, n, D, eps);
        CHECK(memcmp(yr, yf, nd * sizeof(float)) == 0, "layernorm %s n=%d D=%d in place",
              fast->name, n, D);
        free(x); free(w); free(b); free(yr); free(yf);
    }
    static const int lens[] = { 1, 999, 20000 };
    for (size_t s = 0; s < sizeof lens / sizeof lens[0]; s++) {
        int n = lens[s];
        float *x = rvec(n, 6.0, 0.0), *yr = fzeros(n), *yf = fzeros(n);
        ref->gelu(yr, x, n);
        fast->gelu(yf, x, n);
        double err = 0;
        for (int i = 0; i < n; i++) {
            double v = x[i];
            double want = 0.5 * v * (1 + tanh(sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
            double e = fabs(yr[i] - want) / (1 + fabs(want));
            if (!(e <= err)) err = e;
        }
        double ef = 0;
        for (int i = 0; i < n; i++) {
            double e = fabs(yf[i] - (double)yr[i]) / (1 + fabs(yr[i]));
            if (!(e <= ef)) ef = e;
        }
        CHECK(err <= 1e-6, "gelu ref n=%d vs double: max error %.3g (tol 1e-6 relative)", n, err);
        CHECK(ef <= 1e-6, "gelu %s n=%d vs ref: max error %.3g (tol 1e-6 relative)",
              fast->name, n, ef);
        free(x); free(yr); free(yf);
    }
}

/* double-precision causal attention of rows start..start+n-1 */
static void attention_double(double *out, const float *q, const float *k, const float *v,
                             int start, int n, int D, int H) {
    int hs = D / H;
    double *p = malloc((size_t)(start + n) * sizeof(double));
    for (int i = 0; i < n; i++)
        for (int h = 0; h < H; h++) {
            int t = start + i;
            double mx = -INFINITY, sum = 0;
            for (int j = 0; j <= t; j++) {
                double s = 0;
                for (int e = 0; e < hs; e++)
                    s += (double)q[(size_t)i * D + h * hs + e] * k[(size_t)j * D + h * hs + e];
                p[j] = s / sqrt((double)hs);
                if (p[j] > mx) mx = p[j];
            }
            for (int j = 0; j <= t; j++) sum += (p[j] = exp(p[j] - mx));
            for (int e = 0; e < hs; e++) {
                double o = 0;
                for (int j = 0; j <= t; j++) o += p[j] * v[(size_t)j * D + h * hs + e];
                out[(size_t)i * D + h * hs + e] = o / sum;
            }
        }
    free(p);
}

static void test_attention(const Ops *ref, const Ops *fast) {
    static const int shapes[][4] = {    /* start, n, D, H */
        {0, 1, 8, 2}, {0, 13, 40, 4}, {5, 1, 48, 3}, {7, 9, 48, 3}, {0, 70, 64, 4},
        {30, 50, 96, 6}, {0, 3, 5, 1}, {2040, 20, 8, 2},
    };
    int maxthreads = 1;
#ifdef _OPENMP
    maxthreads = omp_get_max_threads();
#endif
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int start = shapes[s][0], n = shapes[s][1], D = shapes[s][2], H = shapes[s][3];
        int T = start + n;
        float *q = rvec((size_t)T * D, 3.0, 0.0), *k = rvec((size_t)T * D, 1.0, 0.0);
        float *v = rvec((size_t)T * D, 1.0, 0.0);
        float *scratch = fzeros((size_t)maxthreads * T);
        float *yr = fzeros((size_t)n * D), *yf = fzeros((size_t)n * D);
        double *yd = malloc((size_t)n * D * sizeof(double));
        const float *qs = q + (size_t)start * D;
        ref->attention(yr, qs, k, v, start, n, D, H, scratch);
        fast->attention(yf, qs, k, v, start, n, D, H, scratch);
        attention_double(yd, qs, k, v, start, n, D, H);
        double er = 0, ef = maxdiff(yr, yf, (size_t)n * D);
        for (size_t i = 0; i < (size_t)n * D; i++)
            if (!(fabs(yr[i] - yd[i]) <= er)) er = fabs(yr[i] - yd[i]);
        CHECK(er <= 3e-5, "attention ref start=%d n=%d D=%d H=%d vs double: %.3g (tol 3e-5)",
              start, n, D, H, er);
        CHECK(ef <= 2e-5, "attention %s start=%d n=%d D=%d H=%d vs ref: %.3g (tol 2e-5)",
              fast->name, start, n, D, H, ef);

        /* from a cache: the same rows of one call over all T steps */
        if (start > 0 || n > 4) {
            int s0 = start > 0 ? start : n / 3;
            float *full = fzeros((size_t)T * D), *part = fzeros((size_t)(T - s0) * D);
            for (int f = 0; f < 2; f++) {
                const Ops *o = f ? fast : ref;
                o->attention(full, q, k, v, 0, T, D, H, scratch);
                o->attention(part, q + (size_t)s0 * D, k, v, s0, T - s0, D, H, scratch);
                double e = maxdiff(full + (size_t)s0 * D, part, (size_t)(T - s0) * D);
                double tol = f ? 2e-5 : 0;
                CHECK(e <= tol, "attention %s from start=%d vs rows %d.. of the whole "
                      "(T=%d D=%d H=%d): %.3g (tol %.3g)", o->name, s0, s0, T, D, H, e, tol);
            }
            free(full); free(part);
        }
        free(q); free(k); free(v); free(scratch); free(yr); free(yf); free(yd);
    }
}

/* 1 vs 2 threads: bit-for-bit */
static void test_threads(const Ops *fast) {
#ifdef _OPENMP
    int n = 130, in = 256, out = 513;
    float *x = rvec((size_t)n * in, 1.0, 0.0), *w = rvec((size_t)out * in, 1.0, 0.0);
    float *b = rvec(out, 1.0, 0.0);
    float *y1 = fzeros((size_t)n * out), *y2 = fzeros((size_t)n * out);
    int rows[] = { 1, 130 };
    for (int r = 0; r < 2; r++) {
        set_threads(1);
        fast->matmul(y1, x, w, b, rows[r], in, out);
        set_threads(2);
        fast->matmul(y2, x, w, b, rows[r], in, out);
        CHECK(memcmp(y1, y2, (size_t)rows[r] * out * sizeof(float)) == 0,
              "matmul %s n=%d: 1 and 2 threads bit-identical", fast->name, rows[r]);
    }
    /* attention: sgemm tiles (n > 1), per-row sgemv (n = 1, and n > 1 over
     * more steps than a score tile holds) */
    static const int att[][4] = { {30, 50, 96, 6}, {1000, 1, 96, 6}, {2100, 3, 96, 6} };
    for (int c = 0; c < 3; c++) {
        int start = att[c][0], na = att[c][1], D = att[c][2], H = att[c][3], T = start + na;
        float *kv = rvec((size_t)2 * T * D, 1.0, 0.0), *qa = rvec((size_t)na * D, 3.0, 0.0);
        float *scratch = fzeros((size_t)2 * T);
        set_threads(1);
        fast->attention(y1, qa, kv, kv + (size_t)T * D, start, na, D, H, scratch);
        set_threads(2);
        fast->attention(y2, qa, kv, kv + (size_t)T * D, start, na, D, H, scratch);
        CHECK(memcmp(y1, y2, (size_t)na * D * sizeof(float)) == 0,
              "attention %s start=%d n=%d: 1 and 2 threads bit-identical", fast->name, start, na);
        free(kv); free(qa); free(scratch);
    }
    set_threads(1);
    fast->layernorm(y1, x, w, b, n, in, 1e-5f);
    fast->gelu(y1 + (size_t)n * in, x, 20000);
    set_threads(2);
    fast->layernorm(y2, x, w, b, n, in, 1e-5f);
    fast->gelu(y2 + (size_t)n * in, x, 20000);
    CHECK(memcmp(y1, y2, ((size_t)n * in + 20000) * sizeof(float)) == 0,
          "layernorm, gelu %s: 1 and 2 threads bit-identical", fast->name);
    free(x); free(w); free(b); free(y1); free(y2);
#else
    (void)fast;
    printf("# no OpenMP: thread checks skipped\n");
#endif
}

/* ---- transformer ------------------------------------------------------------- */

typedef struct {
    TfDims dm;
    int N;
    FlowWeights fw;
} TfCase;

static void tf_make(TfCase *c, int D, int H, int nblk, int cin, int N) {
    memset(c, 0, sizeof *c);
    c->dm = (TfDims){ .D = D, .H = H, .nblk = nblk, .cin = cin, .eps = 1e-5f };
    c->N = N;
    FlowWeights *fw = &c->fw;
    double sD = 1 / sqrt((double)D), s4 = 1 / sqrt(4.0 * D);
    fw->in_w = rvec((size_t)D * cin, 1 / sqrt((double)cin), 0);
    fw->in_b = rvec(D, 0.1, 0);
    fw->pos = rvec((size_t)N * D, 0.5, 0);
    for (int l = 0; l < nblk; l++) {
        BlockWeights *b = &fw->blk[l];
        b->ln1_w = rvec(D, 0.2, 1); b->ln1_b = rvec(D, 0.1, 0);
        b->qkv_w = rvec((size_t)3 * D * D, 2 * sD, 0); b->qkv_b = rvec(3 * D, 0.1, 0);
        b->out_w = rvec((size_t)D * D, sD, 0); b->out_b = rvec(D, 0.1, 0);
        b->ln2_w = rvec(D, 0.2, 1); b->ln2_b = rvec(D, 0.1, 0);
        b->fc_w = rvec((size_t)4 * D * D, sD, 0); b->fc_b = rvec(4 * D, 0.1, 0);
        b->proj_w = rvec((size_t)4 * D * D, s4, 0); b->proj_b = rvec(D, 0.1, 0);
    }
    fw->lnf_w = rvec(D, 0.2, 1);
    fw->lnf_b = rvec(D, 0.1, 0);
}

static void tf_free(TfCase *c) {
    FlowWeights *fw = &c->fw;
    free(fw->in_w); free(fw->in_b); free(fw->pos); free(fw->lnf_w); free(fw->lnf_b);
    for (int l = 0; l < c->dm.nblk; l++) {
        BlockWeights *b = &fw->blk[l];
        free(b->ln1_w); free(b->ln1_b); free(b->qkv_w); free(b->qkv_b); free(b->out_w);
        free(b->out_b); free(b->ln2_w); free(b->ln2_b); free(b->fc_w); free(b->fc_b);
        free(b->proj_w); free(b->proj_b);
    }
}

/* Straightforward double-precision transformer over a whole window. */
static void ln_d(double *y, const double *x, const float *w, const float *b, int D, double eps) {
    double mean = 0, var = 0;
    for (int j = 0; j < D; j++) mean += x[j];
    mean /= D;
    for (int j = 0; j < D; j++) var += (x[j] - mean) * (x[j] - mean);
    var /= D;
    for (int j = 0; j < D; j++) y[j] = (x[j] - mean) / sqrt(var + eps) * w[j] + b[j];
}

static void lin_d(double *y, const double *x, const float *w, const float *b, int in, int out) {
    for (int o = 0; o < out; o++) {
        double s = b[o];
        for (int k = 0; k < in; k++) s += (double)w[(size_t)o * in + k] * x[k];
        y[o] = s;
    }
}

static void tf_double(const TfCase *c, const float *xin, const int *pos, int n, double *G) {
    const FlowWeights *fw = &c->fw;
    int D = c->dm.D, H = c->dm.H, hs = D / H, cin = c->dm.cin;
    double eps = c->dm.eps;
    double *x = malloc((size_t)n * D * sizeof(double)), *a = malloc((size_t)n * D * sizeof(double));
    double *qkv = malloc((size_t)n * 3 * D * sizeof(double));
    double *att = malloc((size_t)D * sizeof(double)), *h = malloc((size_t)4 * D * sizeof(double));
    double *p = malloc((size_t)n * sizeof(double)), *xi = malloc((size_t)cin * sizeof(double));
    double *t = malloc((size_t)D * sizeof(double));
    for (int i = 0; i < n; i++) {
        for (int k = 0; k < cin; k++) xi[k] = xin[(size_t)i * cin + k];
        lin_d(x + (size_t)i * D, xi, fw->in_w, fw->in_b, cin, D);
        for (int j = 0; j < D; j++) x[(size_t)i * D + j] += fw->pos[(size_t)pos[i] * D + j];
    }
    for (int l = 0; l < c->dm.nblk; l++) {
        const BlockWeights *bw = &fw->blk[l];
        for (int i = 0; i < n; i++) {
            ln_d(a + (size_t)i * D, x + (size_t)i * D, bw->ln1_w, bw->ln1_b, D, eps);
            lin_d(qkv + (size_t)i * 3 * D, a + (size_t)i * D, bw->qkv_w, bw->qkv_b, D, 3 * D);
        }
        for (int i = 0; i < n; i++) {
            for (int hh = 0; hh < H; hh++) {
                const double *q = qkv + (size_t)i * 3 * D + hh * hs;
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j <= i; j++) {
                    const double *k = qkv + (size_t)j * 3 * D + D + hh * hs;
                    double s = 0;
                    for (int e = 0; e < hs; e++) s += q[e] * k[e];
                    p[j] = s / sqrt((double)hs);
                    if (p[j] > mx) mx = p[j];
                }
                for (int j = 0; j <= i; j++) sum += (p[j] = exp(p[j] - mx));
                for (int e = 0; e < hs; e++) {
                    double o = 0;
                    for (int j = 0; j <= i; j++) o += p[j] * qkv[(size_t)j * 3 * D + 2 * D + hh * hs + e];
                    att[hh * hs + e] = o / sum;
                }
            }
            lin_d(t, att, bw->out_w, bw->out_b, D, D);
            for (int j = 0; j < D; j++) x[(size_t)i * D + j] += t[j];
        }
        for (int i = 0; i < n; i++) {
            ln_d(a, x + (size_t)i * D, bw->ln2_w, bw->ln2_b, D, eps);
            lin_d(h, a, bw->fc_w, bw->fc_b, D, 4 * D);
            for (int j = 0; j < 4 * D; j++)
                h[j] = 0.5 * h[j] * (1 + tanh(sqrt(2 / M_PI) * (h[j] + 0.044715 * h[j] * h[j] * h[j])));
            lin_d(t, h, bw->proj_w, bw->proj_b, 4 * D, D);
            for (int j = 0; j < D; j++) x[(size_t)i * D + j] += t[j];
        }
    }
    for (int i = 0; i < n; i++)
        ln_d(G + (size_t)i * D, x + (size_t)i * D, fw->lnf_w, fw->lnf_b, D, eps);
    free(x); free(a); free(qkv); free(att); free(h); free(p); free(xi); free(t);
}

/* Run the window through tf_forward in calls of sizes[0], sizes[1], ...; the
 * last size repeats, and 0 means the rest of the window. */
static tflm_status tf_run(const Ops *ops, const TfCase *c, KVCache *kv, const float *xin,
                          const int *pos, const int *sizes, int nsizes, float *G) {
    kv_reset(kv);
    int done = 0, D = c->dm.D, cin = c->dm.cin;
    for (int s = 0; done < c->N; s++) {
        int n = sizes[s < nsizes ? s : nsizes - 1];
        if (n == 0 || n > c->N - done) n = c->N - done;
        tflm_status st = tf_forward(ops, &c->fw, &c->dm, kv, xin + (size_t)done * cin,
                                    pos + done, n, G + (size_t)done * D);
        if (st != TFLM_OK) return st;
        done += n;
    }
    return TFLM_OK;
}

static void test_transformer(const Ops *ref, const Ops *fast, int D, int H, int nblk, int cin,
                             int N, int flip) {
    TfCase c;
    tf_make(&c, D, H, nblk, cin, N);
    size_t nd = (size_t)N * D;
    float *xin = rvec((size_t)N * cin, 1.5, 0);
    int *pos = malloc((size_t)N * sizeof(int));
    for (int i = 0; i < N; i++) pos[i] = flip ? N - 1 - i : i;
    double *Gd = malloc(nd * sizeof(double));
    tf_double(&c, xin, pos, N, Gd);
    double gmax = 0;
    for (size_t i = 0; i < nd; i++) if (fabs(Gd[i]) > gmax) gmax = fabs(Gd[i]);

    KVCache kv;
    CHECK(kv_init(&kv, nblk, N, D) == TFLM_OK, "kv_init %d blocks, %d steps, D=%d", nblk, N, D);
    static const int whole[] = { 0 }, steps1[] = { 1 }, chunks[] = { 3, 5, 0 };
    float *Gw = fzeros(nd), *Gs = fzeros(nd), *Gc = fzeros(nd), *G2 = fzeros(nd);
    const char *shape = flip ? "flipped" : "l2r";
    for (int f = 0; f < 2; f++) {
        const Ops *o = f ? fast : ref;
        tflm_status s1 = tf_run(o, &c, &kv, xin, pos, whole, 1, Gw);
        int len1 = kv.len;
        tflm_status s2 = tf_run(o, &c, &kv, xin, pos, steps1, 1, Gs);
        tflm_status s3 = tf_run(o, &c, &kv, xin, pos, chunks, 3, Gc);
        CHECK(s1 == TFLM_OK && s2 == TFLM_OK && s3 == TFLM_OK && len1 == N && kv.len == N,
              "tf_forward %s D=%d H=%d blocks=%d N=%d %s runs (cache len %d)", o->name, D, H,
              nblk, N, shape, kv.len);
        double err = 0;
        for (size_t i = 0; i < nd; i++)
            if (!(fabs(Gw[i] - Gd[i]) <= err)) err = fabs(Gw[i] - Gd[i]);
        CHECK(err <= 1e-4 * gmax, "tf_forward %s vs double: max error %.3g, %.3g of max|G| %.3g "
              "(tol 1e-4)", o->name, err, err / gmax, gmax);
        double tol = f ? 2e-5 * gmax : 0;
        double es = maxdiff(Gw, Gs, nd), ec = maxdiff(Gw, Gc, nd);
        CHECK(es <= tol, "tf_forward %s: one call vs %d single steps: %.3g (tol %.3g)",
              o->name, N, es, tol);
        CHECK(ec <= tol, "tf_forward %s: one call vs chunks 3+5+%d: %.3g (tol %.3g)",
              o->name, N - 8, ec, tol);
        /* the cache is reusable after a reset */
        tf_run(o, &c, &kv, xin, pos, whole, 1, G2);
        CHECK(memcmp(Gw, G2, nd * sizeof(float)) == 0, "tf_forward %s: rerun after kv_reset "
              "is identical", o->name);
    }

#ifdef _OPENMP
    set_threads(1);
    tf_run(fast, &c, &kv, xin, pos, whole, 1, Gw);
    tf_run(fast, &c, &kv, xin, pos, steps1, 1, Gs);
    set_threads(2);
    tf_run(fast, &c, &kv, xin, pos, whole, 1, G2);
    tf_run(fast, &c, &kv, xin, pos, steps1, 1, Gc);
    CHECK(memcmp(Gw, G2, nd * sizeof(float)) == 0 && memcmp(Gs, Gc, nd * sizeof(float)) == 0,
          "tf_forward %s: 1 and 2 threads bit-identical (whole and stepwise)", fast->name);
#endif

    /* refusals: a full cache, a bad position */
    tflm__err(TFLM_OK, "%s", "");
    tflm_status st = tf_forward(ref, &c.fw, &c.dm, &kv, xin, pos, 1, G2);
    CHECK(st == TFLM_EINVAL && kv.len == N && strstr(tflm_last_error(), "cache"),
          "tf_forward refuses a step past the cache: \"%s\"", tflm_last_error());
    kv_reset(&kv);
    int bad = N;
    st = tf_forward(ref, &c.fw, &c.dm, &kv, xin, &bad, 1, G2);
    CHECK(st == TFLM_EINVAL && kv.len == 0, "tf_forward refuses position %d: \"%s\"", bad,
          tflm_last_error());

    kv_free(&kv);
    free(xin); free(pos); free(Gd); free(Gw); free(Gs); free(Gc); free(G2);
    tf_free(&c);
}

int main(void) {
    const Ops *ref = ops_get(0), *fast = ops_get(1);
    CHECK(ref == &ops_cpu_ref, "ops_get(0) is the reference (%s)", ref->name);
#ifdef HAVE_BLAS
    CHECK(fast == &ops_cpu_blas, "ops_get(1) is the BLAS table (%s)", fast->name);
#else
    CHECK(fast == &ops_cpu_ref, "ops_get(1) without BLAS is the reference");
    fast = &ops_cpu_blas;
#endif
    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads() < 2 ? 2 : omp_get_max_threads();
#endif
    set_threads(threads);

    test_matmul(ref, fast);
    test_layernorm_gelu(ref, fast);
    test_attention(ref, fast);
    test_threads(fast);
    set_threads(threads);
    test_transformer(ref, fast, 48, 4, 2, 7, 23, 0);
    test_transformer(ref, fast, 40, 5, 3, 3, 17, 1);
    test_transformer(ref, fast, 64, 2, 1, 16, 70, 1);
    set_threads(threads);
    return tap_done();
}
