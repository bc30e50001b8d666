/* test_cuda.c: the CUDA backend (kernels/cuda) against the CPU reference,
 * op by op, then the transformer and the whole model.
 *
 * Without a usable GPU it prints the TAP skip plan "1..0 # SKIP no CUDA
 * device" and exits 0 (the TAP driver counts exit 77 as an error).
 *
 * - every op of the ops table (matmul with and without bias and with pinned
 *   weights, layernorm, gelu, KV-cache attention at several (start, n),
 *   matmul_backward with every NULL combination, layernorm_train and
 *   layernorm_backward, gelu_backward including |x| up to 1e4,
 *   attention_train, attention_backward), in-place calls (in == out) too;
 * - the batch functions of ops_cuda.h: mix1 and affine forward and inverse,
 *   mixd forward and inverse (src/mixture.c), the codebook encoder and
 *   decoder (src/codebook.c), AdamW and the sum of squares (src/train.c);
 *   a root finder that must fail (y = NaN) fails with TFLM_ENUMERIC;
 * - tf_forward (step by step through the KV cache) and tf_train_forward /
 *   tf_train_backward with the CUDA ops against the reference ops;
 * - a model with random heads loaded with TFLM_DEVICE_CUDA and with the
 *   CPU: the same scores and the same generated states (same seed).
 * Every output is also checked to be finite.
 *
 * Error measure: max |cuda - ref| / max |ref| over an output (normalised).
 * Tolerances, and why:
 * - float ops (matmul, layernorm, attention and their backward): 1e-5 (ops
 *   whose sums run over up to ~1000 terms: (k+1) u ~ 6e-5 is the worst-case
 *   bound, random-sign sums come out ~1e-7; a wrong term is off by >1e-3).
 *   cuBLAS must run in FP32 (TFLM_CUDA_TF32 unset): TF32 would give ~1e-3.
 * - gelu, gelu_backward: 2e-6 (a few roundings; CUDA's tanhf/expf are within
 *   2 ulp).
 * - double-precision mixtures: 1e-9 relative to 1 + |value| (CUDA's erfc,
 *   log, exp are within 2 ulp of glibc's, and FMA contraction changes the
 *   last bits; the root finder stops at a 1e-10 step, so x may differ by
 *   about that much).
 * - codebook logits 1e-12 relative; encoder 1e-6 (expf).
 * - AdamW: 2e-7 relative (the same double formula, cast to float).
 * - transformer G and gradients: 1e-4 normalised (DESIGN §6 asks 1e-4 of
 *   the single-precision transformer against float64; here both are float).
 * - whole model: ELBO and per-layer sums 1e-4 relative, generated states
 *   1e-3 absolute (the flows invert position by position, so differences of
 *   1e-6 in G can grow along the window), and at least 95% of the generated
 *   tokens equal (a near-tie of two codebook entries may flip one). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <unistd.h>
#include "config.h"
#include "train.h"
#include "cuda/ops_cuda.h"
#include "tap.h"

/* ---- random numbers and comparisons ---------------------------------------------- */

static uint64_t rstate = 0x2545f4914f6cdd1dULL;

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

static float *fcopy(const float *a, size_t n) {
    float *p = malloc((n ? n : 1) * sizeof(float));
    memcpy(p, a, n * sizeof(float));
    return p;
}

static float *fnans(size_t n) {
    float *p = malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = NAN;
    return p;
}

/* normalised max error of got against want, and the count of non-finite got */
static double nerr(const float *got, const float *want, size_t n, size_t *bad) {
    double md = 0, mw = 0;
    *bad = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i])) (*bad)++;
        double d = fabs((double)got[i] - want[i]);
        if (d > md) md = d;
        if (fabs(want[i]) > mw) mw = fabs(want[i]);
    }
    return md / (mw > 0 ? mw : 1.0);
}

static void cmpf(const char *what, const float *got, const float *want, size_t n, double tol) {
    size_t bad;
    double e = nerr(got, want, n, &bad);
    CHECK(bad == 0 && e <= tol, "%s: error %.3g (tol %.1g), %zu non-finite", what, e, tol, bad);
}

/* doubles: max |got - want| / (1 + |want|) */
static void cmpd(const char *what, const double *got, const double *want, size_t n, double tol) {
    double e = 0;
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i]) && isfinite(want[i])) bad++;
        double d = fabs(got[i] - want[i]) / (1 + fabs(want[i]));
        if (isfinite(want[i]) && d > e) e = d;
    }
    CHECK(bad == 0 && e <= tol, "%s: error %.3g (tol %.1g), %zu non-finite", what, e, tol, bad);
}

static const Ops *R_, *G_;          /* the reference and the CUDA tables */

/* ---- the ops table ----------------------------------------------------------------- */

static void t_matmul(int n, int in, int out, int bias, int pin) {
    float *x = rvec((size_t)n * in, 1, 0), *w = rvec((size_t)out * in, 1, 0);
    float *b = bias ? rvec(out, 1, 0) : NULL;
    float *y0 = fnans((size_t)n * out), *y1 = fnans((size_t)n * out);
    int owner;
    if (pin) {
        CHECK(G_->pin(&owner, w, (size_t)out * in * sizeof(float)) == 0 &&
              (!b || G_->pin(&owner, b, (size_t)out * sizeof(float)) == 0), "pin %d x %d weights",
              out, in);
    }
    R_->matmul(y0, x, w, b, n, in, out);
    G_->matmul(y1, x, w, b, n, in, out);
    char what[96];
    snprintf(what, sizeof what, "matmul n=%d in=%d out=%d%s%s", n, in, out, bias ? " +b" : "",
             pin ? " pinned" : "");
    cmpf(what, y1, y0, (size_t)n * out, 1e-5);
    if (pin) G_->unpin(&owner);
    free(x); free(w); free(b); free(y0); free(y1);
}

static void t_layernorm(int n, int D) {
    size_t nd = (size_t)n * D;
    float *x = rvec(nd, 2, 0.5), *w = rvec(D, 1, 1), *b = rvec(D, 0.5, 0);
    float *y0 = fnans(nd), *y1 = fnans(nd), *mu0 = fnans(n), *mu1 = fnans(n), *rs0 = fnans(n),
          *rs1 = fnans(n), *y2 = fnans(nd);
    R_->layernorm(y0, x, w, b, n, D, 1e-5f);
    G_->layernorm(y1, x, w, b, n, D, 1e-5f);
    char what[96];
    snprintf(what, sizeof what, "layernorm n=%d D=%d", n, D);
    cmpf(what, y1, y0, nd, 1e-5);
    G_->layernorm_train(y2, mu1, rs1, x, w, b, n, D, 1e-5f);
    R_->layernorm_train(y0, mu0, rs0, x, w, b, n, D, 1e-5f);
    CHECK(memcmp(y1, y2, nd * sizeof(float)) == 0,
          "layernorm_train n=%d D=%d: out equals layernorm's bit for bit", n, D);
    snprintf(what, sizeof what, "layernorm_train mu n=%d D=%d", n, D);
    cmpf(what, mu1, mu0, n, 1e-6);
    snprintf(what, sizeof what, "layernorm_train rstd n=%d D=%d", n, D);
    cmpf(what, rs1, rs0, n, 1e-6);
    /* in place */
    float *z = fcopy(x, nd);
    G_->layernorm(z, z, w, b, n, D, 1e-5f);
    CHECK(memcmp(z, y1, nd * sizeof(float)) == 0, "layernorm in place n=%d D=%d", n, D);
    /* backward: dw, db accumulate onto random values */
    float *dy = rvec(nd, 1, 0), *dx0 = fnans(nd), *dx1 = fnans(nd);
    float *dw0 = rvec(D, 1, 0), *db0 = rvec(D, 1, 0), *dw1 = fcopy(dw0, D), *db1 = fcopy(db0, D);
    R_->layernorm_backward(dx0, dw0, db0, dy, x, mu0, rs0, w, n, D);
    G_->layernorm_backward(dx1, dw1, db1, dy, x, mu0, rs0, w, n, D);
    snprintf(what, sizeof what, "layernorm_backward din n=%d D=%d", n, D);
    cmpf(what, dx1, dx0, nd, 1e-5);
    snprintf(what, sizeof what, "layernorm_backward dw (accumulated) n=%d D=%d", n, D);
    cmpf(what, dw1, dw0, D, 1e-5);
    snprintf(what, sizeof what, "layernorm_backward db (accumulated) n=%d D=%d", n, D);
    cmpf(what, db1, db0, D, 1e-5);
    float *dx2 = fnans(nd);
    G_->layernorm_backward(dx2, NULL, NULL, dy, x, mu0, rs0, w, n, D);
    CHECK(memcmp(dx2, dx1, nd * sizeof(float)) == 0,
          "layernorm_backward with dw = db = NULL: the same din");
    free(x); free(w); free(b); free(y0); free(y1); free(y2); free(mu0); free(mu1); free(rs0);
    free(rs1); free(z); free(dy); free(dx0); free(dx1); free(dx2); free(dw0); free(db0);
    free(dw1); free(db1);
}

static void t_gelu(int n) {
    float *x = rvec(n, 8, 0), *y0 = fnans(n), *y1 = fnans(n);
    x[0] = -1e4f; x[1] = 1e4f; x[2] = -30; x[3] = 0; x[4] = -15.5f;
    R_->gelu(y0, x, n);
    G_->gelu(y1, x, n);
    double eg = 0;
    size_t badg = 0;
    for (int i = 0; i < n; i++) {
        if (!isfinite(y1[i])) badg++;
        double t = fabs((double)y1[i] - y0[i]) / (1 + fabs(y0[i]));
        if (t > eg) eg = t;
    }
    CHECK(badg == 0 && eg <= 2e-6, "gelu (x up to 1e4): error %.3g of 1 + |y| (tol 2e-6), "
          "%zu non-finite", eg, badg);
    float *z = fcopy(x, n);
    G_->gelu(z, z, n);
    CHECK(memcmp(z, y1, n * sizeof(float)) == 0, "gelu in place");
    float *dy = rvec(n, 1, 0), *d0 = fnans(n), *d1 = fnans(n);
    R_->gelu_backward(d0, dy, x, n);
    G_->gelu_backward(d1, dy, x, n);
    /* the reference's 1 - tanh^2 cancels near |x| ~ 2: 2e-6 of |dout| (test_grad_tf) */
    double e = 0;
    size_t bad = 0;
    for (int i = 0; i < n; i++) {
        if (!isfinite(d1[i])) bad++;
        double t = fabs((double)d1[i] - d0[i]) / (1 + fabs(dy[i]));
        if (t > e) e = t;
    }
    CHECK(bad == 0 && e <= 4e-6, "gelu_backward (x up to 1e4): error %.3g of |dout| (tol 4e-6), "
          "%zu non-finite", e, bad);
    float *dd = fcopy(dy, n);
    G_->gelu_backward(dd, dd, x, n);
    CHECK(memcmp(dd, d1, n * sizeof(float)) == 0, "gelu_backward with din == dout");
    free(x); free(y0); free(y1); free(z); free(dy); free(d0); free(d1); free(dd);
}

static void t_attention(int start, int n, int D, int H) {
    int steps = start + n;
    float *q = rvec((size_t)n * D, 1, 0), *k = rvec((size_t)steps * D, 1, 0),
          *v = rvec((size_t)steps * D, 1, 0);
    float *o0 = fnans((size_t)n * D), *o1 = fnans((size_t)n * D), *scr = fnans((size_t)steps * 8);
    R_->attention(o0, q, k, v, start, n, D, H, scr);
    G_->attention(o1, q, k, v, start, n, D, H, scr);
    char what[96];
    snprintf(what, sizeof what, "attention start=%d n=%d D=%d H=%d", start, n, D, H);
    cmpf(what, o1, o0, (size_t)n * D, 1e-5);
    free(q); free(k); free(v); free(o0); free(o1); free(scr);
}

static void t_matmul_backward(int n, int in, int out) {
    float *x = rvec((size_t)n * in, 1, 0), *W = rvec((size_t)out * in, 1, 0),
          *dy = rvec((size_t)n * out, 1, 0);
    for (int mask = 0; mask < 8; mask++) {
        int want_din = mask & 1, want_dW = mask & 2, want_db = mask & 4;
        float *di0 = want_din ? fnans((size_t)n * in) : NULL, *di1 = want_din ? fnans((size_t)n * in) : NULL;
        float *dW0 = want_dW ? rvec((size_t)out * in, 1, 0) : NULL;
        float *dW1 = want_dW ? fcopy(dW0, (size_t)out * in) : NULL;
        float *db0 = want_db ? rvec(out, 1, 0) : NULL, *db1 = want_db ? fcopy(db0, out) : NULL;
        R_->matmul_backward(di0, dW0, db0, dy, x, W, n, in, out);
        G_->matmul_backward(di1, dW1, db1, dy, x, W, n, in, out);
        char what[128];
        if (want_din) {
            snprintf(what, sizeof what, "matmul_backward din n=%d in=%d out=%d (mask %d)", n, in, out, mask);
            cmpf(what, di1, di0, (size_t)n * in, 1e-5);
        }
        if (want_dW) {
            snprintf(what, sizeof what, "matmul_backward dW += n=%d in=%d out=%d (mask %d)", n, in, out, mask);
            cmpf(what, dW1, dW0, (size_t)out * in, 1e-5);
        }
        if (want_db) {
            snprintf(what, sizeof what, "matmul_backward db += n=%d out=%d (mask %d)", n, out, mask);
            cmpf(what, db1, db0, out, 1e-5);
        }
        free(di0); free(di1); free(dW0); free(dW1); free(db0); free(db1);
    }
    free(x); free(W); free(dy);
}

static void t_attention_train(int nb, int n, int D, int H) {
    size_t R = (size_t)nb * n, pp = (size_t)nb * H * n * n;
    float *qkv = rvec(R * 3 * D, 1, 0);
    float *o0 = fnans(R * D), *o1 = fnans(R * D), *p0 = fnans(pp), *p1 = fnans(pp);
    R_->attention_train(o0, p0, qkv, nb, n, D, H);
    G_->attention_train(o1, p1, qkv, nb, n, D, H);
    char what[96];
    snprintf(what, sizeof what, "attention_train out nb=%d n=%d D=%d H=%d", nb, n, D, H);
    cmpf(what, o1, o0, R * D, 1e-5);
    snprintf(what, sizeof what, "attention_train probs nb=%d n=%d D=%d H=%d", nb, n, D, H);
    cmpf(what, p1, p0, pp, 1e-5);
    float *dy = rvec(R * D, 1, 0), *d0 = fnans(R * 3 * D), *d1 = fnans(R * 3 * D);
    R_->attention_backward(d0, dy, p0, qkv, nb, n, D, H);
    G_->attention_backward(d1, dy, p0, qkv, nb, n, D, H);
    snprintf(what, sizeof what, "attention_backward dqkv nb=%d n=%d D=%d H=%d", nb, n, D, H);
    cmpf(what, d1, d0, R * 3 * D, 1e-5);
    free(qkv); free(o0); free(o1); free(p0); free(p1); free(dy); free(d0); free(d1);
}

/* ---- mixtures (double precision) ------------------------------------------------------ */

static void t_mix1(int K, int affine) {
    int c = 8, npos = 96, n = c * npos;
    int W = 3 * K;
    float *prm = malloc((size_t)n * W * sizeof(float)), *cl = malloc((size_t)c * K * sizeof(float));
    for (int r = 0; r < n; r++)
        for (int k = 0; k < K; k++) {
            prm[(size_t)r * W + k] = (float)(2 * urand());
            prm[(size_t)r * W + K + k] = (float)(1.5 * urand());
            prm[(size_t)r * W + 2 * K + k] = (float)(2.5 * urand());
        }
    for (int i = 0; i < c * K; i++) cl[i] = (float)(0.5 * urand());
    double *x = malloc(n * sizeof(double)), *y0 = malloc(n * sizeof(double)),
           *y1 = malloc(n * sizeof(double)), *l0 = malloc(n * sizeof(double)),
           *l1 = malloc(n * sizeof(double)), *x0 = malloc(n * sizeof(double)),
           *x1 = malloc(n * sizeof(double)), *il0 = malloc(n * sizeof(double)),
           *il1 = malloc(n * sizeof(double));
    for (int r = 0; r < n; r++) {
        double u = urand();
        x[r] = r % 17 == 0 ? 30 * u : r % 13 == 0 ? 9 * u : 2.5 * u;     /* tails too */
    }
    for (int r = 0; r < n; r++) {
        const float *p = prm + (size_t)r * W, *cf = cl + (size_t)(r % c) * K;
        l0[r] = affine ? affine_forward(p, cf, x[r], &y0[r]) : mix1_forward(p, cf, K, x[r], &y0[r]);
    }
    tflm_status st = ops_cuda_mix1_forward(prm, cl, n, c, K, affine, x, y1, l1);
    const char *name = affine ? "affine" : "mix1";
    CHECK(st == TFLM_OK, "%s K=%d forward, %d channels: %s", name, K, n,
          st == TFLM_OK ? "ok" : tflm_last_error());
    char what[96];
    snprintf(what, sizeof what, "%s K=%d forward y", name, K);
    cmpd(what, y1, y0, n, 1e-9);
    snprintf(what, sizeof what, "%s K=%d forward log p", name, K);
    cmpd(what, l1, l0, n, 1e-9);
    /* inverse of the CPU's y (clamped tails excepted: |y| < 37) */
    for (int r = 0; r < n; r++) {
        const float *p = prm + (size_t)r * W, *cf = cl + (size_t)(r % c) * K;
        if (!(fabs(y0[r]) < 37)) y0[r] = 0;
        if (affine) il0[r] = affine_inverse(p, cf, y0[r], &x0[r]);
        else if (mix1_inverse(p, cf, K, y0[r], &x0[r], &il0[r]) != TFLM_OK) x0[r] = il0[r] = NAN;
    }
    st = ops_cuda_mix1_inverse(prm, cl, n, c, K, affine, y0, x1, il1);
    CHECK(st == TFLM_OK, "%s K=%d inverse: %s", name, K, st == TFLM_OK ? "ok" : tflm_last_error());
    snprintf(what, sizeof what, "%s K=%d inverse x", name, K);
    cmpd(what, x1, x0, n, 1e-8);
    snprintf(what, sizeof what, "%s K=%d inverse log p", name, K);
    cmpd(what, il1, il0, n, 1e-8);
    if (!affine) {
        y0[5] = NAN;
        st = ops_cuda_mix1_inverse(prm, cl, n, c, K, 0, y0, x1, NULL);
        CHECK(st == TFLM_ENUMERIC && strstr(tflm_last_error(), "channel 5"),
              "mix1 inverse of y = NaN fails: \"%s\"", tflm_last_error());
    }
    free(prm); free(cl); free(x); free(y0); free(y1); free(l0); free(l1); free(x0); free(x1);
    free(il0); free(il1);
}

static void t_mixd(int V, int d, int n) {
    float *lg = rvec((size_t)n * V, 3, 0), *mu = rvec((size_t)V * d, 1, 0), *ls = rvec(V, 0.8, -1.2);
    double *z = malloc((size_t)n * d * sizeof(double));
    for (int t = 0; t < n; t++) {
        int k = (int)((urand() + 1) * 0.5 * V) % V;
        for (int i = 0; i < d; i++)
            z[(size_t)t * d + i] = mu[(size_t)k * d + i] + exp(ls[k]) * 1.5 * urand()
                                   + (t % 11 == 0 ? 6 : 0);
    }
    size_t nd = (size_t)n * d;
    double *y0 = malloc(nd * 8), *y1 = malloc(nd * 8), *c0 = malloc(nd * 8), *c1 = malloc(nd * 8),
           *l0 = malloc(n * 8), *l1 = malloc(n * 8), *z0 = malloc(nd * 8), *z1 = malloc(nd * 8),
           *q0 = malloc(n * 8), *q1 = malloc(n * 8);
    for (int t = 0; t < n; t++)
        l0[t] = mixd_forward(lg + (size_t)t * V, mu, ls, V, d, z + (size_t)t * d, y0 + (size_t)t * d,
                             c0 + (size_t)t * d);
    tflm_status st = ops_cuda_mixd_forward(lg, mu, ls, n, V, d, z, y1, c1, l1);
    CHECK(st == TFLM_OK, "mixd V=%d d=%d forward of %d tokens: %s", V, d, n,
          st == TFLM_OK ? "ok" : tflm_last_error());
    cmpd("mixd forward y", y1, y0, nd, 1e-9);
    cmpd("mixd forward per-dimension log p", c1, c0, nd, 1e-9);
    cmpd("mixd forward log p", l1, l0, n, 1e-9);
    for (size_t i = 0; i < nd; i++)
        if (!(fabs(y0[i]) < 37)) y0[i] = 0;
    for (int t = 0; t < n; t++)
        if (mixd_inverse(lg + (size_t)t * V, mu, ls, V, d, y0 + (size_t)t * d, z0 + (size_t)t * d,
                         NULL, &q0[t]) != TFLM_OK)
            q0[t] = NAN;
    st = ops_cuda_mixd_inverse(lg, mu, ls, n, V, d, y0, z1, NULL, q1);
    CHECK(st == TFLM_OK, "mixd inverse: %s", st == TFLM_OK ? "ok" : tflm_last_error());
    cmpd("mixd inverse z", z1, z0, nd, 1e-8);
    cmpd("mixd inverse log p", q1, q0, n, 1e-8);
    free(lg); free(mu); free(ls); free(z); free(y0); free(y1); free(c0); free(c1); free(l0);
    free(l1); free(z0); free(z1); free(q0); free(q1);
}

/* ---- codebook, AdamW -------------------------------------------------------------------- */

static void t_codebook(int V, int d, int n) {
    Model m;
    memset(&m, 0, sizeof m);
    m.cfg.V = V;
    m.cfg.d = d;
    m.w.cb_mean = rvec((size_t)V * d, 1, 0);
    m.w.cb_logsig = rvec(V, 0.7, -1.5);
    int *tok = malloc(n * sizeof(int));
    double *eps = malloc((size_t)n * d * sizeof(double));
    for (int t = 0; t < n; t++) tok[t] = (int)((urand() + 1) * 0.5 * V) % V;
    for (size_t i = 0; i < (size_t)n * d; i++) eps[i] = 2 * urand();
    float *z0 = fnans((size_t)n * d), *z1 = fnans((size_t)n * d);
    for (int t = 0; t < n; t++) {
        float sg = expf(m.w.cb_logsig[tok[t]]);
        for (int i = 0; i < d; i++)
            z0[(size_t)t * d + i] = m.w.cb_mean[(size_t)tok[t] * d + i] + sg * (float)eps[(size_t)t * d + i];
    }
    tflm_status st = ops_cuda_codebook_encode(tok, m.w.cb_mean, m.w.cb_logsig, eps, n, V, d, z1);
    CHECK(st == TFLM_OK, "codebook encode: %s", st == TFLM_OK ? "ok" : tflm_last_error());
    cmpf("codebook encode z", z1, z0, (size_t)n * d, 1e-6);
    double *lg0 = malloc((size_t)n * V * 8), *lg1 = malloc((size_t)n * V * 8), *R0 = malloc(n * 8),
           *R1 = malloc(n * 8);
    int *id0 = malloc(n * sizeof(int)), *id1 = malloc(n * sizeof(int));
    float *p0 = fnans(n), *p1 = fnans(n), *h0 = fnans(n), *h1 = fnans(n);
    for (int t = 0; t < n; t++) {
        codebook_logits(&m, z0 + (size_t)t * d, lg0 + (size_t)t * V);
        R0[t] = codebook_R(&m, z0 + (size_t)t * d);
        id0[t] = codebook_decode(&m, z0 + (size_t)t * d, &p0[t], &h0[t]);
    }
    st = ops_cuda_codebook_decode(z0, m.w.cb_mean, m.w.cb_logsig, n, V, d, lg1, id1, p1, h1, R1);
    CHECK(st == TFLM_OK, "codebook decode: %s", st == TFLM_OK ? "ok" : tflm_last_error());
    cmpd("codebook logits", lg1, lg0, (size_t)n * V, 1e-12);
    cmpd("codebook R", R1, R0, n, 1e-12);
    int same = 0;
    for (int t = 0; t < n; t++) same += id0[t] == id1[t];
    CHECK(same == n, "codebook decode: argmax of %d latents agrees (%d)", n, same);
    cmpf("codebook decode probability", p1, p0, n, 1e-6);
    cmpf("codebook decode entropy", h1, h0, n, 1e-6);
    free(m.w.cb_mean); free(m.w.cb_logsig); free(tok); free(eps); free(z0); free(z1); free(lg0);
    free(lg1); free(R0); free(R1); free(id0); free(id1); free(p0); free(p1); free(h0); free(h1);
}

static void t_adamw(size_t n) {
    float *w0 = rvec(n, 1, 0), *m0 = rvec(n, 0.1, 0), *v0 = rvec(n, 0.01, 0.01), *g = rvec(n, 0.3, 0);
    float *w1 = fcopy(w0, n), *m1 = fcopy(m0, n), *v1 = fcopy(v0, n);
    double lr = 2e-3, b1 = 0.9, b2 = 0.99, c1 = 1 - pow(b1, 7), c2 = 1 - pow(b2, 7), eps = 1e-8,
           wd = 0.01, scale = 0.7;
    for (size_t j = 0; j < n; j++) {        /* src/train.c optimize */
        double gj = g[j] * scale;
        double mj = b1 * m0[j] + (1 - b1) * gj, vj = b2 * v0[j] + (1 - b2) * gj * gj;
        m0[j] = (float)mj;
        v0[j] = (float)vj;
        double upd = (mj / c1) / (sqrt(vj / c2) + eps) + wd * w0[j];
        w0[j] = (float)(w0[j] - lr * upd);
    }
    tflm_status st = ops_cuda_adamw(w1, m1, v1, g, n, lr, b1, b2, c1, c2, eps, wd, scale);
    CHECK(st == TFLM_OK, "adamw over %zu parameters: %s", n, st == TFLM_OK ? "ok" : tflm_last_error());
    cmpf("adamw w", w1, w0, n, 2e-7);
    cmpf("adamw m", m1, m0, n, 2e-7);
    cmpf("adamw v", v1, v0, n, 2e-7);
    double s0 = 0, s1 = NAN;
    for (size_t j = 0; j < n; j++) s0 += (double)g[j] * g[j];
    st = ops_cuda_sumsq(g, n, &s1);
    CHECK(st == TFLM_OK && fabs(s1 - s0) <= 1e-12 * s0, "sum of squares %.15g vs %.15g", s1, s0);
    free(w0); free(m0); free(v0); free(g); free(w1); free(m1); free(v1);
}

/* ---- the transformer ----------------------------------------------------------------- */

static const char *CFG =
    "{\"format\":\"tflm\",\"version\":1,\"vocab_size\":97,\"latent_dim\":8,\"patch\":1,"
    "\"window\":64,\"d_model\":96,\"n_heads\":4,\"flip_block\":16,\"ln_eps\":1e-5,\"flows\":["
    "{\"type\":\"mixd\",\"layers\":2,\"direction\":\"l2r\"},"
    "{\"type\":\"mix1\",\"layers\":1,\"mixtures\":8,\"direction\":\"flip\"},"
    "{\"type\":\"mix1\",\"layers\":1,\"mixtures\":8,\"direction\":\"l2r\"}]}";

/* a model of CFG whose heads are random (the initial zero heads would hide
 * the transformer: the couplings would not depend on it) */
static int make_model(Model *m) {
    Config cf;
    memset(m, 0, sizeof *m);
    if (config_parse(&cf, CFG) != TFLM_OK || model_init(m, &cf, 7) != TFLM_OK) return -1;
    for (int l = 1; l <= cf.L; l++) {
        FlowWeights *fw = &m->w.flow[l - 1];
        int hout = flow_hout(&cf, l);
        for (size_t i = 0; i < (size_t)hout * cf.D; i++) fw->head_w[i] = (float)(0.05 * urand());
    }
    return 0;
}

static void t_transformer(const Model *m) {
    const Config *cf = &m->cfg;
    const FlowWeights *fw = &m->w.flow[0];
    TfDims dm = {cf->D, cf->H, cf->flow[0].layers, flow_cin(cf), (float)cf->ln_eps};
    int n = cf->N, nb = 3, cin = dm.cin, D = cf->D;
    size_t R = (size_t)nb * n;
    float *xin = rvec(R * cin, 1.5, 0), *G0 = fnans(R * D), *G1 = fnans(R * D);
    int *pos = malloc(R * sizeof(int));
    for (size_t r = 0; r < R; r++) pos[r] = (int)(r % n);
    /* inference: step by step through the KV cache, then one chunk */
    KVCache kv0, kv1;
    tflm_status st = kv_init(&kv0, dm.nblk, n, D);
    if (st == TFLM_OK) st = kv_init(&kv1, dm.nblk, n, D);
    for (int s = 0; s < n && st == TFLM_OK; s++) {
        st = tf_forward(R_, fw, &dm, &kv0, xin + (size_t)s * cin, pos + s, 1, G0 + (size_t)s * D);
        if (st == TFLM_OK)
            st = tf_forward(G_, fw, &dm, &kv1, xin + (size_t)s * cin, pos + s, 1, G1 + (size_t)s * D);
    }
    CHECK(st == TFLM_OK, "tf_forward step by step, both tables");
    cmpf("tf_forward step by step (KV cache) G", G1, G0, (size_t)n * D, 1e-4);
    kv_reset(&kv1);
    float *G2 = fnans((size_t)n * D);
    st = tf_forward(G_, fw, &dm, &kv1, xin, pos, 9, G2);
    if (st == TFLM_OK) st = tf_forward(G_, fw, &dm, &kv1, xin + 9 * cin, pos + 9, n - 9, G2 + 9 * D);
    cmpf("tf_forward in chunks 9 + rest vs step by step (cuda)", G2, G1, (size_t)n * D, 1e-5);
    kv_free(&kv0);
    kv_free(&kv1);
    free(G2);
    /* training forward and backward */
    TfActs a0, a1;
    st = tfa_init(&a0, &dm, nb, n);
    if (st == TFLM_OK) st = tfa_init(&a1, &dm, nb, n);
    if (st == TFLM_OK) st = tf_train_forward(R_, fw, &dm, &a0, xin, pos, nb, n, G0);
    if (st == TFLM_OK) st = tf_train_forward(G_, fw, &dm, &a1, xin, pos, nb, n, G1);
    CHECK(st == TFLM_OK, "tf_train_forward, both tables");
    cmpf("tf_train_forward G", G1, G0, R * D, 1e-4);
    ParamTable t0, t1;
    Weights gw0, gw1;
    memset(&gw0, 0, sizeof gw0);
    memset(&gw1, 0, sizeof gw1);
    params_build(&t0, cf, &gw0);
    params_build(&t1, cf, &gw1);
    float *g0 = calloc(t0.total, sizeof(float)), *g1 = calloc(t1.total, sizeof(float));
    params_bind(&t0, g0);
    params_bind(&t1, g1);
    float *dG = rvec(R * D, 1, 0), *dx0 = fnans(R * cin), *dx1 = fnans(R * cin);
    if (st == TFLM_OK) st = tf_train_backward(R_, fw, &gw0.flow[0], &dm, &a0, dG, dx0);
    if (st == TFLM_OK) st = tf_train_backward(G_, fw, &gw1.flow[0], &dm, &a1, dG, dx1);
    CHECK(st == TFLM_OK, "tf_train_backward, both tables");
    cmpf("tf_train_backward dxin", dx1, dx0, R * cin, 1e-4);
    int worst_i = -1;
    double worst = 0;
    size_t off = 0, bad = 0;
    for (int i = 0; i < t0.n; i++) {
        size_t nb_ = 0;
        if (t0.p[i].flow == 1) {
            double e = nerr(g1 + off, g0 + off, t0.p[i].numel, &nb_);
            bad += nb_;
            if (e > worst) { worst = e; worst_i = i; }
        }
        off += t0.p[i].numel;
    }
    CHECK(bad == 0 && worst <= 1e-4, "tf_train_backward: every weight gradient of flow 1, worst "
          "%.3g (%s), %zu non-finite", worst, worst_i >= 0 ? t0.p[worst_i].name : "-", bad);
    tfa_free(&a0);
    tfa_free(&a1);
    params_free(&t0);
    params_free(&t1);
    free(g0); free(g1); free(dG); free(dx0); free(dx1); free(xin); free(G0); free(G1); free(pos);
}

/* ---- the whole model through the API ---------------------------------------------------- */

static void t_model(const Model *m) {
    char path[] = "/tmp/tflm-test-cuda-XXXXXX";
    int fd = mkstemp(path);
    if (fd >= 0) close(fd);
    tflm_status st = model_save(m, path, NULL);
    CHECK(st == TFLM_OK, "model with random heads saved");
    tflm_params p;
    tflm_params_default(&p);
    tflm_ctx *c0 = NULL, *c1 = NULL;
    st = tflm_load(&c0, path, &p);
    p.device = TFLM_DEVICE_CUDA;
    tflm_status s1 = tflm_load(&c1, path, &p);
    CHECK(st == TFLM_OK && s1 == TFLM_OK, "loaded on the CPU and with TFLM_DEVICE_CUDA: %s",
          s1 == TFLM_OK ? "ok" : tflm_last_error());
    if (st != TFLM_OK || s1 != TFLM_OK) {
        unlink(path);
        return;
    }
    const char *text = "It is a truth universally acknowledged, that a single man in possession "
                       "of a good fortune, must be in want of a wife.\nHowever little known";
    int *ids = NULL, nid = 0;
    tflm_tokenize(c0, text, strlen(text), &ids, &nid, NULL);
    tflm_score_params sp;
    tflm_score_params_default(&sp);
    sp.mean = 1;
    tflm_score a, b;
    st = tflm_score_ids(c0, ids, nid, &sp, &a);
    s1 = tflm_score_ids(c1, ids, nid, &sp, &b);
    CHECK(st == TFLM_OK && s1 == TFLM_OK && fabs(a.elbo - b.elbo) <= 1e-4 * fabs(a.elbo),
          "score (mean encoding): elbo cpu %.10g cuda %.10g", a.elbo, b.elbo);
    double worst = 0;
    for (int l = 0; l < a.n_flows; l++) {
        double e = fabs(a.lp[l] - b.lp[l]) / (1 + fabs(a.lp[l]));
        if (e > worst) worst = e;
        e = fabs(a.ln[l] - b.ln[l]) / (1 + fabs(a.ln[l]));
        if (e > worst) worst = e;
    }
    CHECK(worst <= 1e-4, "score: per-layer lp and ln agree to %.3g (tol 1e-4)", worst);
    tflm_gen_params gp;
    tflm_gen_params_default(&gp);
    gp.n_new = 48;
    gp.seed = 11;
    tflm_trace *t0 = NULL, *t1 = NULL;
    st = tflm_generate_ids(c0, ids, 16, &gp, &t0);
    s1 = tflm_generate_ids(c1, ids, 16, &gp, &t1);
    CHECK(st == TFLM_OK && s1 == TFLM_OK, "generate 48 tokens after a 16-token context, both devices: %s",
          s1 == TFLM_OK ? "ok" : tflm_last_error());
    if (st == TFLM_OK && s1 == TFLM_OK && t0->n_tok == t1->n_tok) {
        size_t ns = (size_t)(t0->n_flows + 1) * t0->n_pos * t0->channels;
        double e = 0;
        size_t bad = 0;
        for (size_t i = 0; i < ns; i++) {
            if (!isfinite(t1->state[i])) bad++;
            double d = fabs((double)t0->state[i] - t1->state[i]);
            if (d > e) e = d;
        }
        int same = 0;
        for (int i = 0; i < t0->n_tok; i++) same += t0->tokens[i] == t1->tokens[i];
        CHECK(bad == 0 && e <= 1e-3, "generation: every layer's states agree to %.3g (tol 1e-3)", e);
        /* a token whose two best codebook entries are within ~1e-6 may flip */
        CHECK(same >= 0.95 * t0->n_tok, "generation: the same text (%d of %d tokens, at least 95%%)",
              same, t0->n_tok);
    }
    tflm_trace_free(t0);
    tflm_trace_free(t1);
    free(ids);
    tflm_free(c0);
    tflm_free(c1);
    unlink(path);
}

int main(void) {
    G_ = ops_cuda_get();
    if (!G_) {
        const char *why = ops_cuda_error();
        if (!strncmp(why, "no CUDA device", 14)) printf("1..0 # SKIP %s\n", why);
        else printf("1..0 # SKIP no CUDA device: %s\n", why);
        return 0;
    }
    R_ = &ops_cpu_ref;
    printf("# CUDA device: %s\n", ops_cuda_device_name());
    t_matmul(1, 128, 384, 1, 0);
    t_matmul(37, 64, 96, 0, 0);
    t_matmul(300, 128, 512, 1, 0);
    t_matmul(257, 512, 128, 1, 1);
    t_matmul(1, 96, 24, 1, 1);
    t_layernorm(1, 128);
    t_layernorm(301, 96);
    t_layernorm(64, 1000);
    t_gelu(100003);
    t_attention(0, 1, 64, 4);
    t_attention(0, 37, 96, 4);
    t_attention(20, 1, 128, 4);
    t_attention(20, 13, 128, 8);
    t_attention(0, 128, 128, 4);
    t_attention(300, 2, 96, 3);
    t_matmul_backward(1, 64, 96);
    t_matmul_backward(300, 128, 512);
    t_matmul_backward(513, 96, 48);
    t_attention_train(2, 5, 16, 2);
    t_attention_train(4, 64, 96, 4);
    t_attention_train(2, 130, 96, 4);
    t_mix1(8, 0);
    t_mix1(1, 0);
    t_mix1(1, 1);
    t_mix1(33, 0);
    t_mixd(97, 8, 200);
    t_mixd(5, 2, 64);
    t_codebook(97, 8, 300);
    t_adamw(100000);
    Model m;
    if (make_model(&m) == 0) {
        t_transformer(&m);
        t_model(&m);
        model_free(&m);
    } else {
        CHECK(0, "test model: %s", tflm_last_error());
    }
    return tap_done();
}
