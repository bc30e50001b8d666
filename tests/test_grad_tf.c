/* test_grad_tf.c: the training ops (kernels/ops.h) and the training
 * transformer with its backward pass (src/train_tf.c).
 *
 * (a) Each backward op against central finite differences of the loss
 *     L = sum_k C_k out_k (C random), where out comes from a double-precision
 *     forward written here, so the differences themselves are exact to
 *     ~1e-9 (step 1e-5: truncation h^2 f'''/6 ~ 1e-10, cancellation
 *     1e-16 |L| / h ~ 1e-10) and what is measured is the float backward.
 *     Weight gradients are checked to ACCUMULATE (buffers pre-filled with
 *     random values that are subtracted again), input gradients to
 *     OVERWRITE (pre-filled with NaN).
 * (b) The BLAS table against the reference table on larger shapes.
 * (c) tf_train_forward against tf_forward run step by step through the KV
 *     cache, window by window.
 * (d) tf_train_backward: the gradient of every tensor (in_proj, pos, every
 *     block tensor, ln_f), of the inputs (dxin) and of sos (sum of dxin over
 *     each window's first row) against finite differences of a
 *     double-precision transformer written here, on a tiny model (D=8, H=2,
 *     2 blocks, cin=3, nb=2 windows of n=5 steps, one window flipped).
 * (e) 1 and 2 OpenMP threads give bit-identical results.
 *
 * Error measure: for each tensor, max_i |analytic_i - fd_i| / max_i |fd_i|
 * (an element that is wrong by its own size, unless it is below 1e-3 of
 * the tensor's largest, shows up as >= 1e-3).
 *
 * Tolerances, and why:
 * - ops vs finite differences, 1e-5: each analytic element is a float sum
 *   of at most ~30 terms (n, D, hs here are <= 16), so its error is below
 *   30 u ~ 2e-6 of the terms' scale (u = 2^-24), and the saved float
 *   statistics (mu, rstd, probabilities) add a few u. A missing or wrong
 *   term is off by 1e-2 or more.
 * - whole model vs finite differences, 2e-5: the forward's activations and
 *   the backward's gradients each pass ~20 float ops, every one adding a
 *   few u of relative error (20 * 3u ~ 4e-6), and LayerNorm backward
 *   multiplies by 1/std; measured ~1e-6. A wrong term is off by >1e-2.
 * - matmul_backward BLAS vs ref: per element, twice the worst-case bound of
 *   a float sum of k terms, (k+1) u sum |terms| (as test_ops).
 * - layernorm_train and the dx of layernorm_backward: the BLAS table calls
 *   the reference's loop, so bit for bit; dw, db are the same sums in the
 *   same order, checked against the (n+1) u sum |terms| bound.
 * - gelu_backward: the reference's 1 - tanh^2 u cancels where tanh u is
 *   near 1 but not yet 1 (x ~ 1.5..4); its absolute error there is about
 *   2u |0.5 x s (1 + 3 0.044715 x^2)| <= 2u * 15 ~ 2e-6 (s = sqrt(2/pi)).
 *   The BLAS form has no cancellation. So 2e-6 of |dout| for ref vs double
 *   and for BLAS vs ref.
 * - attention_train BLAS vs ref: 2e-5 absolute (the test_ops argument:
 *   |v| <= 1, scores within ~1e-5); probabilities within 2e-6 absolute.
 * - attention_backward BLAS vs ref: 2e-5 of max |dqkv|: the sums run over
 *   up to n = 130 steps and hs = 24, (n + hs) u ~ 1e-5 of the terms' scale.
 * - tf_train_forward vs tf_forward step by step: the reference ops compute
 *   every row with the same loops (and q | k | v packed or not give the same
 *   dot products), so bit for bit; BLAS: 2e-5 of max |G| as in test_ops
 *   (sgemm tiles vs sgemv round differently). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include "config.h"
#include "train.h"
#include "tap.h"
#ifdef _OPENMP
#include <omp.h>
#endif

#define U 5.9604644775390625e-08    /* 2^-24, float unit roundoff */
#define FD_STEP 1e-5
#define TOL_OP 1e-5
#define TOL_MODEL 2e-5
#define EPS 1e-5f

/* ---- random numbers, buffers ------------------------------------------------ */

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

static void rfill(float *p, size_t n, double scale, double offset) {
    for (size_t i = 0; i < n; i++) p[i] = (float)(offset + scale * urand());
}

static float *fzeros(size_t n) { return calloc(n ? n : 1, sizeof(float)); }

static float *fnans(size_t n) {
    float *p = malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = NAN;
    return p;
}

static float *fcopy(const float *a, size_t n) {
    float *p = malloc((n ? n : 1) * sizeof(float));
    memcpy(p, a, n * sizeof(float));
    return p;
}

static double *dalloc(size_t n) { return calloc(n ? n : 1, sizeof(double)); }

static double maxdiff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= m)) m = d;   /* NaN propagates as the max */
    }
    return m;
}

static double maxabs(const float *a, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) if (fabs(a[i]) > m) m = fabs(a[i]);
    return m;
}

static void set_threads(int t) {
#ifdef _OPENMP
    omp_set_num_threads(t);
#else
    (void)t;
#endif
}

/* max_i |ana_i - pre_i - fd_i| / max_i |fd_i| (pre may be NULL); NaN if any is NaN */
static double grad_err(const float *ana, const float *pre, const double *fd, size_t m) {
    double e = 0, s = 0;
    for (size_t i = 0; i < m; i++) {
        double a = (double)ana[i] - (pre ? (double)pre[i] : 0.0);
        double d = fabs(a - fd[i]);
        if (!(d <= e)) e = d;
        if (fabs(fd[i]) > s) s = fabs(fd[i]);
    }
    return e / (s > 0 ? s : 1e-300);
}

/* ---- double-precision forwards ------------------------------------------------- */

static double gelu_d(double x) {
    return 0.5 * x * (1 + tanh(sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
}

/* y[out] = W x + b (b may be NULL) */
static void lin_d(double *y, const double *x, const double *W, const double *b, int in, int out) {
    for (int o = 0; o < out; o++) {
        double s = b ? b[o] : 0;
        for (int k = 0; k < in; k++) s += W[(size_t)o * in + k] * x[k];
        y[o] = s;
    }
}

static void ln_d(double *y, const double *x, const double *w, const double *b, int D) {
    double mean = 0, var = 0;
    for (int j = 0; j < D; j++) mean += x[j];
    mean /= D;
    for (int j = 0; j < D; j++) var += (x[j] - mean) * (x[j] - mean);
    var /= D;
    double rs = 1 / sqrt(var + (double)EPS);
    for (int j = 0; j < D; j++) y[j] = (x[j] - mean) * rs * w[j] + b[j];
}

/* causal attention of nb windows of n rows, qkv [nb*n, 3D] -> out [nb*n, D] */
static void attn_d(double *out, const double *qkv, int nb, int n, int D, int H) {
    int hs = D / H;
    size_t D3 = (size_t)3 * D;
    double *p = dalloc(n);
    for (int b = 0; b < nb; b++)
        for (int i = 0; i < n; i++)
            for (int h = 0; h < H; h++) {
                const double *qw = qkv + (size_t)b * n * D3, *q = qw + (size_t)i * D3 + h * hs;
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j <= i; j++) {
                    const double *k = qw + (size_t)j * D3 + D + h * hs;
                    double s = 0;
                    for (int e = 0; e < hs; e++) s += q[e] * k[e];
                    p[j] = s / sqrt((double)hs);
                    if (p[j] > mx) mx = p[j];
                }
                for (int j = 0; j <= i; j++) sum += (p[j] = exp(p[j] - mx));
                for (int e = 0; e < hs; e++) {
                    double o = 0;
                    for (int j = 0; j <= i; j++) o += p[j] * qw[(size_t)j * D3 + 2 * D + h * hs + e];
                    out[((size_t)b * n + i) * D + h * hs + e] = o / sum;
                }
            }
    free(p);
}

/* ---- (a) each backward op against finite differences --------------------------- */

/* dimensions of one op case and the loss weights C */
typedef struct {
    int n, in, out, D, H, nb;
    const double *C;
} OpCase;

typedef double (*LossFn)(const double *x, const OpCase *c);

static double dot_d(const double *a, const double *b, size_t m) {
    double s = 0;
    for (size_t i = 0; i < m; i++) s += a[i] * b[i];
    return s;
}

/* x = [in (n, in) | W (out, in) | b (out)] */
static double loss_matmul(const double *x, const OpCase *c) {
    const double *in = x, *W = in + (size_t)c->n * c->in, *b = W + (size_t)c->out * c->in;
    double *y = dalloc(c->out), L = 0;
    for (int i = 0; i < c->n; i++) {
        lin_d(y, in + (size_t)i * c->in, W, b, c->in, c->out);
        L += dot_d(y, c->C + (size_t)i * c->out, c->out);
    }
    free(y);
    return L;
}

/* x = [in (n, D) | w (D) | b (D)] */
static double loss_layernorm(const double *x, const OpCase *c) {
    const double *w = x + (size_t)c->n * c->D, *b = w + c->D;
    double *y = dalloc(c->D), L = 0;
    for (int i = 0; i < c->n; i++) {
        ln_d(y, x + (size_t)i * c->D, w, b, c->D);
        L += dot_d(y, c->C + (size_t)i * c->D, c->D);
    }
    free(y);
    return L;
}

static double loss_gelu(const double *x, const OpCase *c) {
    double L = 0;
    for (int i = 0; i < c->n; i++) L += c->C[i] * gelu_d(x[i]);
    return L;
}

/* x = qkv [nb*n, 3D] */
static double loss_attention(const double *x, const OpCase *c) {
    size_t m = (size_t)c->nb * c->n * c->D;
    double *out = dalloc(m);
    attn_d(out, x, c->nb, c->n, c->D, c->H);
    double L = dot_d(out, c->C, m);
    free(out);
    return L;
}

/* central differences of f at x into g */
static void fd_grad(LossFn f, const OpCase *c, double *x, size_t m, double *g) {
    for (size_t i = 0; i < m; i++) {
        double x0 = x[i];
        x[i] = x0 + FD_STEP;
        double lp = f(x, c);
        x[i] = x0 - FD_STEP;
        double lm = f(x, c);
        x[i] = x0;
        g[i] = (lp - lm) / (2 * FD_STEP);
    }
}

static double *to_d(const float *a, size_t m, double *dst) {
    for (size_t i = 0; i < m; i++) dst[i] = a[i];
    return dst + m;
}

static void test_matmul_grad(const Ops *o) {
    int n = 5, in = 7, out = 6;
    size_t ni = (size_t)n * in, oi = (size_t)out * in, no = (size_t)n * out;
    float *x = rvec(ni, 1, 0), *W = rvec(oi, 1, 0), *b = rvec(out, 1, 0), *C = rvec(no, 1, 0);
    float *preW = rvec(oi, 1, 0), *preb = rvec(out, 1, 0);
    float *din = fnans(ni), *dW = fcopy(preW, oi), *db = fcopy(preb, out);
    o->matmul_backward(din, dW, db, C, x, W, n, in, out);

    double *xd = dalloc(ni + oi + out), *g = dalloc(ni + oi + out), *Cd = dalloc(no);
    to_d(b, out, to_d(W, oi, to_d(x, ni, xd)));
    to_d(C, no, Cd);
    OpCase c = { .n = n, .in = in, .out = out, .C = Cd };
    fd_grad(loss_matmul, &c, xd, ni + oi + out, g);
    double e1 = grad_err(din, NULL, g, ni), e2 = grad_err(dW, preW, g + ni, oi);
    double e3 = grad_err(db, preb, g + ni + oi, out);
    CHECK(e1 <= TOL_OP && e2 <= TOL_OP && e3 <= TOL_OP, "matmul_backward %s vs finite "
          "differences: din %.2g, dW %.2g, db %.2g (tol %g)", o->name, e1, e2, e3, TOL_OP);

    /* NULL din and db: dW alone, accumulated a second time */
    float *dW1 = fcopy(dW, oi);
    o->matmul_backward(NULL, dW, NULL, C, x, W, n, in, out);
    double e4 = 0;
    for (size_t i = 0; i < oi; i++) {
        double want = 2.0 * dW1[i] - preW[i], d = fabs(dW[i] - want);
        if (!(d <= e4)) e4 = d;
    }
    CHECK(e4 <= 1e-5 * (1 + maxabs(dW, oi)), "matmul_backward %s with din, db NULL "
          "accumulates dW again: %.2g", o->name, e4);
    free(x); free(W); free(b); free(C); free(preW); free(preb); free(din); free(dW); free(db);
    free(dW1); free(xd); free(g); free(Cd);
}

static void test_layernorm_grad(const Ops *o) {
    int n = 4, D = 9;
    size_t nd = (size_t)n * D;
    float *x = rvec(nd, 2, 0.3), *w = rvec(D, 0.5, 1), *b = rvec(D, 0.5, 0), *C = rvec(nd, 1, 0);
    float *y = fzeros(nd), *y0 = fzeros(nd), *mu = fnans(n), *rs = fnans(n);
    o->layernorm_train(y, mu, rs, x, w, b, n, D, EPS);
    o->layernorm(y0, x, w, b, n, D, EPS);
    CHECK(memcmp(y, y0, nd * sizeof(float)) == 0, "layernorm_train %s output equals layernorm",
          o->name);
    double es = 0;
    for (int i = 0; i < n; i++) {
        double m = 0, v = 0;
        for (int j = 0; j < D; j++) m += x[i * D + j];
        m /= D;
        for (int j = 0; j < D; j++) v += (x[i * D + j] - m) * (x[i * D + j] - m);
        double r = 1 / sqrt(v / D + (double)EPS);
        double e = fmax(fabs(mu[i] - m) / (1 + fabs(m)), fabs(rs[i] - r) / r);
        if (!(e <= es)) es = e;
    }
    CHECK(es <= 1e-6, "layernorm_train %s saves mean and 1/std: %.2g (tol 1e-6 relative)",
          o->name, es);

    float *prew = rvec(D, 1, 0), *preb = rvec(D, 1, 0);
    float *din = fnans(nd), *dw = fcopy(prew, D), *db = fcopy(preb, D);
    o->layernorm_backward(din, dw, db, C, x, mu, rs, w, n, D);
    size_t m = nd + 2 * D;
    double *xd = dalloc(m), *g = dalloc(m), *Cd = dalloc(nd);
    to_d(b, D, to_d(w, D, to_d(x, nd, xd)));
    to_d(C, nd, Cd);
    OpCase c = { .n = n, .D = D, .C = Cd };
    fd_grad(loss_layernorm, &c, xd, m, g);
    double e1 = grad_err(din, NULL, g, nd), e2 = grad_err(dw, prew, g + nd, D);
    double e3 = grad_err(db, preb, g + nd + D, D);
    CHECK(e1 <= TOL_OP && e2 <= TOL_OP && e3 <= TOL_OP, "layernorm_backward %s vs finite "
          "differences: din %.2g, dw %.2g, db %.2g (tol %g)", o->name, e1, e2, e3, TOL_OP);
    free(x); free(w); free(b); free(C); free(y); free(y0); free(mu); free(rs); free(prew);
    free(preb); free(din); free(dw); free(db); free(xd); free(g); free(Cd);
}

static void test_gelu_grad(const Ops *o) {
    int n = 40;
    float *x = rvec(n, 5, 0), *C = rvec(n, 1, 0), *din = fnans(n);
    o->gelu_backward(din, C, x, n);
    double *xd = dalloc(n), *g = dalloc(n), *Cd = dalloc(n);
    to_d(x, n, xd);
    to_d(C, n, Cd);
    OpCase c = { .n = n, .C = Cd };
    fd_grad(loss_gelu, &c, xd, n, g);
    double e = grad_err(din, NULL, g, n);
    /* in place */
    float *io = fcopy(C, n);
    o->gelu_backward(io, io, x, n);
    CHECK(e <= TOL_OP && memcmp(io, din, n * sizeof(float)) == 0, "gelu_backward %s vs finite "
          "differences: %.2g (tol %g); in place identical", o->name, e, TOL_OP);
    free(x); free(C); free(din); free(xd); free(g); free(Cd); free(io);
}

static void test_attention_grad(const Ops *o, int nb, int n, int D, int H) {
    size_t R = (size_t)nb * n, m = R * 3 * D, nd = R * D;
    float *qkv = rvec(m, 1.5, 0), *C = rvec(nd, 1, 0);
    float *out = fzeros(nd), *probs = fnans((size_t)nb * H * n * n), *dqkv = fnans(m);
    o->attention_train(out, probs, qkv, nb, n, D, H);
    double *xd = dalloc(m), *g = dalloc(m), *Cd = dalloc(nd), *od = dalloc(nd);
    to_d(qkv, m, xd);
    to_d(C, nd, Cd);
    attn_d(od, xd, nb, n, D, H);
    double eo = 0, ep = 0;
    for (size_t i = 0; i < nd; i++) if (!(fabs(out[i] - od[i]) <= eo)) eo = fabs(out[i] - od[i]);
    for (int bh = 0; bh < nb * H; bh++)     /* rows sum to 1, masked entries 0 */
        for (int i = 0; i < n; i++) {
            const float *p = probs + ((size_t)bh * n + i) * n;
            double s = 0;
            for (int j = 0; j <= i; j++) s += p[j];
            double e = fabs(s - 1);
            for (int j = i + 1; j < n; j++) e += fabs(p[j]);
            if (!(e <= ep)) ep = e;
        }
    CHECK(eo <= 3e-5 && ep <= 1e-6, "attention_train %s nb=%d n=%d D=%d H=%d vs double: %.2g "
          "(tol 3e-5); probability rows %.2g (tol 1e-6)", o->name, nb, n, D, H, eo, ep);

    o->attention_backward(dqkv, C, probs, qkv, nb, n, D, H);
    OpCase c = { .nb = nb, .n = n, .D = D, .H = H, .C = Cd };
    fd_grad(loss_attention, &c, xd, m, g);
    /* q, k, v parts separately */
    float *part = malloc(R * D * sizeof(float));
    double *gp = dalloc(R * D), e[3];
    for (int s = 0; s < 3; s++) {
        for (size_t r = 0; r < R; r++)
            for (int j = 0; j < D; j++) {
                part[r * D + j] = dqkv[r * 3 * D + s * D + j];
                gp[r * D + j] = g[r * 3 * D + s * D + j];
            }
        e[s] = grad_err(part, NULL, gp, R * D);
    }
    CHECK(e[0] <= TOL_OP && e[1] <= TOL_OP && e[2] <= TOL_OP, "attention_backward %s nb=%d "
          "n=%d D=%d H=%d vs finite differences: dq %.2g, dk %.2g, dv %.2g (tol %g)", o->name,
          nb, n, D, H, e[0], e[1], e[2], TOL_OP);
    free(qkv); free(C); free(out); free(probs); free(dqkv); free(xd); free(g); free(Cd);
    free(od); free(part); free(gp);
}

/* ---- (b) BLAS table against the reference ------------------------------------- */

static void test_matmul_backward_blas(const Ops *ref, const Ops *fast) {
    static const int shapes[][3] = {    /* n, in, out */
        {1, 1, 1}, {1, 37, 5}, {3, 17, 33}, {70, 37, 300}, {130, 256, 513}, {300, 64, 256},
        {1030, 40, 20}, {64, 3, 96},
    };
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int n = shapes[s][0], in = shapes[s][1], out = shapes[s][2];
        size_t ni = (size_t)n * in, oi = (size_t)out * in, no = (size_t)n * out;
        float *x = rvec(ni, 1, 0), *W = rvec(oi, 1, 0), *dy = rvec(no, 1, 0);
        float *preW = rvec(oi, 1, 0), *preb = rvec(out, 1, 0);
        float *din_r = fnans(ni), *din_f = fnans(ni);
        float *dW_r = fcopy(preW, oi), *dW_f = fcopy(preW, oi);
        float *db_r = fcopy(preb, out), *db_f = fcopy(preb, out);
        ref->matmul_backward(din_r, dW_r, db_r, dy, x, W, n, in, out);
        fast->matmul_backward(din_f, dW_f, db_f, dy, x, W, n, in, out);
        double w1 = 0, w2 = 0, w3 = 0;     /* worst error / bound */
        for (int i = 0; i < n; i++)
            for (int k = 0; k < in; k++) {
                double sc = 0;
                for (int o = 0; o < out; o++) sc += fabs((double)dy[(size_t)i * out + o] * W[(size_t)o * in + k]);
                double bound = 2 * (out + 1) * U * sc + 1e-30;
                double e = fabs(din_r[(size_t)i * in + k] - (double)din_f[(size_t)i * in + k]) / bound;
                if (!(e <= w1)) w1 = e;
            }
        for (int o = 0; o < out; o++) {
            double sb = fabs(preb[o]);
            for (int i = 0; i < n; i++) sb += fabs(dy[(size_t)i * out + o]);
            double e = fabs(db_r[o] - (double)db_f[o]) / (2 * (n + 2) * U * sb + 1e-30);
            if (!(e <= w3)) w3 = e;
            for (int k = 0; k < in; k++) {
                double sc = fabs(preW[(size_t)o * in + k]);
                for (int i = 0; i < n; i++) sc += fabs((double)dy[(size_t)i * out + o] * x[(size_t)i * in + k]);
                double bound = 2 * (n + 2) * U * sc + 1e-30;
                e = fabs(dW_r[(size_t)o * in + k] - (double)dW_f[(size_t)o * in + k]) / bound;
                if (!(e <= w2)) w2 = e;
            }
        }
        CHECK(w1 <= 1 && w2 <= 1 && w3 <= 1, "matmul_backward %s n=%d in=%d out=%d vs ref: "
              "din %.2g, dW %.2g, db %.2g of the bound", fast->name, n, in, out, w1, w2, w3);
        free(x); free(W); free(dy); free(preW); free(preb); free(din_r); free(din_f);
        free(dW_r); free(dW_f); free(db_r); free(db_f);
    }
}

static void test_norm_gelu_blas(const Ops *ref, const Ops *fast) {
    static const int shapes[][2] = { {1, 1}, {5, 64}, {33, 48}, {300, 256}, {700, 96} };
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int n = shapes[s][0], D = shapes[s][1];
        size_t nd = (size_t)n * D;
        float *x = rvec(nd, 3, 0.5), *w = rvec(D, 0.5, 1), *b = rvec(D, 0.5, 0);
        float *dy = rvec(nd, 1, 0), *pw = rvec(D, 1, 0), *pb = rvec(D, 1, 0);
        float *yr = fzeros(nd), *yf = fzeros(nd), *mr = fzeros(n), *mf = fzeros(n);
        float *rr = fzeros(n), *rf = fzeros(n), *dxr = fnans(nd), *dxf = fnans(nd);
        float *dwr = fcopy(pw, D), *dwf = fcopy(pw, D), *dbr = fcopy(pb, D), *dbf = fcopy(pb, D);
        ref->layernorm_train(yr, mr, rr, x, w, b, n, D, EPS);
        fast->layernorm_train(yf, mf, rf, x, w, b, n, D, EPS);
        CHECK(memcmp(yr, yf, nd * 4) == 0 && memcmp(mr, mf, n * 4) == 0 &&
              memcmp(rr, rf, n * 4) == 0, "layernorm_train %s n=%d D=%d equals ref",
              fast->name, n, D);
        ref->layernorm_backward(dxr, dwr, dbr, dy, x, mr, rr, w, n, D);
        fast->layernorm_backward(dxf, dwf, dbf, dy, x, mr, rr, w, n, D);
        double ew = 0, eb = 0;
        for (int j = 0; j < D; j++) {
            double sw = fabs(pw[j]), sb = fabs(pb[j]);
            for (int i = 0; i < n; i++) {
                size_t k = (size_t)i * D + j;
                sw += fabs(dy[k] * (x[k] - mr[i]) * rr[i]);
                sb += fabs(dy[k]);
            }
            double e1 = fabs(dwr[j] - (double)dwf[j]) / (2 * (n + 2) * U * sw + 1e-30);
            double e2 = fabs(dbr[j] - (double)dbf[j]) / (2 * (n + 2) * U * sb + 1e-30);
            if (!(e1 <= ew)) ew = e1;
            if (!(e2 <= eb)) eb = e2;
        }
        CHECK(memcmp(dxr, dxf, nd * 4) == 0 && ew <= 1 && eb <= 1, "layernorm_backward %s "
              "n=%d D=%d vs ref: din identical, dw %.2g, db %.2g of the bound", fast->name,
              n, D, ew, eb);
        free(x); free(w); free(b); free(dy); free(pw); free(pb); free(yr); free(yf); free(mr);
        free(mf); free(rr); free(rf); free(dxr); free(dxf); free(dwr); free(dwf); free(dbr);
        free(dbf);
    }
    static const int lens[] = { 1, 999, 20000 };
    for (size_t s = 0; s < sizeof lens / sizeof lens[0]; s++) {
        int n = lens[s];
        float *x = rvec(n, 6, 0), *dy = rvec(n, 1, 0), *gr = fzeros(n), *gf = fzeros(n);
        ref->gelu_backward(gr, dy, x, n);
        fast->gelu_backward(gf, dy, x, n);
        double er = 0, ef = 0;
        for (int i = 0; i < n; i++) {
            double v = x[i], s2 = sqrt(2 / M_PI), t = tanh(s2 * (v + 0.044715 * v * v * v));
            double want = dy[i] * (0.5 * (1 + t) + 0.5 * v * (1 - t * t) * s2 *
                                   (1 + 3 * 0.044715 * v * v));
            double e = fabs(gr[i] - want) / (fabs(dy[i]) + 1e-30);
            if (!(e <= er)) er = e;
            e = fabs(gf[i] - (double)gr[i]) / (fabs(dy[i]) + 1e-30);
            if (!(e <= ef)) ef = e;
        }
        CHECK(er <= 2e-6 && ef <= 2e-6, "gelu_backward n=%d: ref vs double %.2g, %s vs ref "
              "%.2g (tol 2e-6 of |dout|)", n, er, fast->name, ef);
        free(x); free(dy); free(gr); free(gf);
    }
}

static void test_attention_blas(const Ops *ref, const Ops *fast) {
    static const int shapes[][4] = {    /* nb, n, D, H */
        {1, 1, 8, 2}, {2, 13, 40, 4}, {3, 70, 64, 4}, {2, 130, 96, 4}, {1, 5, 5, 1},
    };
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int nb = shapes[s][0], n = shapes[s][1], D = shapes[s][2], H = shapes[s][3];
        size_t R = (size_t)nb * n, m = R * 3 * D, nd = R * D, np = (size_t)nb * H * n * n;
        float *qkv = rvec(m, 1, 0), *dy = rvec(nd, 1, 0);
        for (size_t r = 0; r < R; r++)                  /* q in [-3, 3] as in test_ops */
            for (int j = 0; j < D; j++) qkv[r * 3 * D + j] *= 3;
        float *or_ = fzeros(nd), *of = fzeros(nd), *pr = fnans(np), *pf = fnans(np);
        float *gr = fnans(m), *gf = fnans(m);
        ref->attention_train(or_, pr, qkv, nb, n, D, H);
        fast->attention_train(of, pf, qkv, nb, n, D, H);
        double eo = maxdiff(or_, of, nd), ep = maxdiff(pr, pf, np);
        CHECK(eo <= 2e-5 && ep <= 2e-6, "attention_train %s nb=%d n=%d D=%d H=%d vs ref: out "
              "%.2g (tol 2e-5), probabilities %.2g (tol 2e-6)", fast->name, nb, n, D, H, eo, ep);
        ref->attention_backward(gr, dy, pr, qkv, nb, n, D, H);
        fast->attention_backward(gf, dy, pr, qkv, nb, n, D, H);
        double eg = maxdiff(gr, gf, m) / maxabs(gr, m);
        CHECK(eg <= 2e-5, "attention_backward %s nb=%d n=%d D=%d H=%d vs ref: %.2g of max|dqkv| "
              "(tol 2e-5)", fast->name, nb, n, D, H, eg);
        free(qkv); free(dy); free(or_); free(of); free(pr); free(pf); free(gr); free(gf);
    }
}

/* ---- the transformer: a model in one flat buffer ------------------------------- */

typedef struct {
    char name[32];
    size_t off, len;
} Tensor;

typedef struct {
    TfDims dm;
    int nb, n, R;           /* windows of n steps; the pos table has n rows */
    size_t total;           /* floats: all tensors, then xin */
    float *pf;              /* the flat buffer */
    FlowWeights fw;         /* pointers into pf */
    Tensor t[16 + 12 * MAX_BLOCKS];
    int nt;
    size_t xin_off;
    int *pos;               /* [R] */
} Model_;

static float *take(Model_ *m, size_t *at, const char *name, size_t len) {
    Tensor *t = &m->t[m->nt++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->off = *at;
    t->len = len;
    *at += len;
    return m->pf + t->off;
}

/* Random model (scales as test_ops), inputs, and positions: window b runs
 * left to right when b is even, reversed when odd. */
static void model_make(Model_ *m, int D, int H, int nblk, int cin, int nb, int n) {
    memset(m, 0, sizeof *m);
    m->dm = (TfDims){ .D = D, .H = H, .nblk = nblk, .cin = cin, .eps = EPS };
    m->nb = nb;
    m->n = n;
    m->R = nb * n;
    size_t per_blk = 4 * (size_t)D + 3 * (size_t)D * D + 3 * D + (size_t)D * D + D +
                     8 * (size_t)D * D + 4 * D + D;
    m->total = (size_t)D * cin + D + (size_t)n * D + nblk * per_blk + 2 * (size_t)D +
               (size_t)m->R * cin;
    m->pf = malloc(m->total * sizeof(float));
    size_t at = 0;
    double sD = 1 / sqrt((double)D), s4 = 1 / sqrt(4.0 * D);
    FlowWeights *fw = &m->fw;
    fw->in_w = take(m, &at, "in_w", (size_t)D * cin);
    rfill(fw->in_w, (size_t)D * cin, 1 / sqrt((double)cin), 0);
    fw->in_b = take(m, &at, "in_b", D);
    rfill(fw->in_b, D, 0.1, 0);
    fw->pos = take(m, &at, "pos", (size_t)n * D);
    rfill(fw->pos, (size_t)n * D, 0.5, 0);
    for (int l = 0; l < nblk; l++) {
        BlockWeights *b = &fw->blk[l];
        char nm[32];
#define T_(f, len, sc, off) do { snprintf(nm, sizeof nm, "blk%d.%s", l, #f); \
        b->f = take(m, &at, nm, len); rfill(b->f, len, sc, off); } while (0)
        T_(ln1_w, D, 0.2, 1); T_(ln1_b, D, 0.1, 0);
        T_(qkv_w, (size_t)3 * D * D, 2 * sD, 0); T_(qkv_b, 3 * D, 0.1, 0);
        T_(out_w, (size_t)D * D, sD, 0); T_(out_b, D, 0.1, 0);
        T_(ln2_w, D, 0.2, 1); T_(ln2_b, D, 0.1, 0);
        T_(fc_w, (size_t)4 * D * D, sD, 0); T_(fc_b, 4 * D, 0.1, 0);
        T_(proj_w, (size_t)4 * D * D, s4, 0); T_(proj_b, D, 0.1, 0);
#undef T_
    }
    fw->lnf_w = take(m, &at, "lnf_w", D);
    rfill(fw->lnf_w, D, 0.2, 1);
    fw->lnf_b = take(m, &at, "lnf_b", D);
    rfill(fw->lnf_b, D, 0.1, 0);
    m->xin_off = at;
    float *xin = take(m, &at, "xin", (size_t)m->R * cin);
    rfill(xin, (size_t)m->R * cin, 1.5, 0);
    m->nt--;                            /* xin is not a weight tensor */
    m->pos = malloc((size_t)m->R * sizeof(int));
    for (int b = 0; b < nb; b++)
        for (int s = 0; s < n; s++) m->pos[b * n + s] = (b % 2) ? n - 1 - s : s;
}

static void model_free_(Model_ *m) {
    free(m->pf);
    free(m->pos);
}

/* A FlowWeights with m's layout over another flat buffer (the gradients) */
static void bind_like(const Model_ *m, float *base, FlowWeights *g) {
    memset(g, 0, sizeof *g);
#define B_(f) g->f = base + (m->fw.f - m->pf)
    B_(in_w); B_(in_b); B_(pos); B_(lnf_w); B_(lnf_b);
    for (int l = 0; l < m->dm.nblk; l++) {
        B_(blk[l].ln1_w); B_(blk[l].ln1_b); B_(blk[l].qkv_w); B_(blk[l].qkv_b);
        B_(blk[l].out_w); B_(blk[l].out_b); B_(blk[l].ln2_w); B_(blk[l].ln2_b);
        B_(blk[l].fc_w); B_(blk[l].fc_b); B_(blk[l].proj_w); B_(blk[l].proj_b);
    }
#undef B_
}

/* L = sum C G of the double-precision transformer with every tensor and
 * the inputs read from pd (m's layout) */
static double model_loss_d(const Model_ *m, const double *pd, const double *C) {
    int D = m->dm.D, H = m->dm.H, cin = m->dm.cin, R = m->R;
    size_t nd = (size_t)R * D;
#define P_(f) (pd + (m->fw.f - m->pf))
    double *x = dalloc(nd), *a = dalloc(nd), *qkv = dalloc(3 * nd), *ao = dalloc(nd);
    double *h = dalloc(4 * (size_t)D), *t = dalloc(D);
    const double *xin = pd + m->xin_off;
    for (int r = 0; r < R; r++) {
        lin_d(x + (size_t)r * D, xin + (size_t)r * cin, P_(in_w), P_(in_b), cin, D);
        for (int j = 0; j < D; j++) x[(size_t)r * D + j] += P_(pos)[(size_t)m->pos[r] * D + j];
    }
    for (int l = 0; l < m->dm.nblk; l++) {
        for (int r = 0; r < R; r++) {
            ln_d(a + (size_t)r * D, x + (size_t)r * D, P_(blk[l].ln1_w), P_(blk[l].ln1_b), D);
            lin_d(qkv + (size_t)r * 3 * D, a + (size_t)r * D, P_(blk[l].qkv_w),
                  P_(blk[l].qkv_b), D, 3 * D);
        }
        attn_d(ao, qkv, m->nb, m->n, D, H);
        for (int r = 0; r < R; r++) {
            double *xr = x + (size_t)r * D;
            lin_d(t, ao + (size_t)r * D, P_(blk[l].out_w), P_(blk[l].out_b), D, D);
            for (int j = 0; j < D; j++) xr[j] += t[j];
            ln_d(a, xr, P_(blk[l].ln2_w), P_(blk[l].ln2_b), D);
            lin_d(h, a, P_(blk[l].fc_w), P_(blk[l].fc_b), D, 4 * D);
            for (int j = 0; j < 4 * D; j++) h[j] = gelu_d(h[j]);
            lin_d(t, h, P_(blk[l].proj_w), P_(blk[l].proj_b), 4 * D, D);
            for (int j = 0; j < D; j++) xr[j] += t[j];
        }
    }
    double L = 0;
    for (int r = 0; r < R; r++) {
        ln_d(a, x + (size_t)r * D, P_(lnf_w), P_(lnf_b), D);
        L += dot_d(a, C + (size_t)r * D, D);
    }
#undef P_
    free(x); free(a); free(qkv); free(ao); free(h); free(t);
    return L;
}

/* ---- (c) forward against tf_forward step by step ---------------------------------- */

static void test_forward_vs_cache(const Ops *o, int D, int H, int nblk, int cin, int nb, int n) {
    Model_ m;
    model_make(&m, D, H, nblk, cin, nb, n);
    const float *xin = m.pf + m.xin_off;
    size_t nd = (size_t)m.R * D;
    float *G = fnans(nd), *Gs = fnans(nd);
    TfActs a;
    KVCache kv;
    tflm_status st = tfa_init(&a, &m.dm, nb, n);
    tflm_status s2 = kv_init(&kv, nblk, n, D);
    if (st == TFLM_OK) st = tf_train_forward(o, &m.fw, &m.dm, &a, xin, m.pos, nb, n, G);
    for (int b = 0; b < nb && st == TFLM_OK && s2 == TFLM_OK; b++) {
        kv_reset(&kv);
        for (int s = 0; s < n && s2 == TFLM_OK; s++) {
            size_t r = (size_t)b * n + s;
            s2 = tf_forward(o, &m.fw, &m.dm, &kv, xin + r * cin, m.pos + r, 1, Gs + r * D);
        }
    }
    double e = maxdiff(G, Gs, nd), gmax = maxabs(Gs, nd);
    double tol = o == &ops_cpu_ref ? 0 : 2e-5 * gmax;
    CHECK(st == TFLM_OK && s2 == TFLM_OK && e <= tol, "tf_train_forward %s D=%d H=%d blocks=%d "
          "nb=%d n=%d vs tf_forward step by step: %.3g (tol %.3g)", o->name, D, H, nblk, nb, n,
          e, tol);
    tfa_free(&a);
    kv_free(&kv);
    free(G); free(Gs);
    model_free_(&m);
}

/* ---- (d) whole-model gradients against finite differences ------------------------- */

static void test_model_grad(const Ops *o) {
    Model_ m;
    model_make(&m, 8, 2, 2, 3, 2, 5);
    int D = m.dm.D, cin = m.dm.cin, R = m.R;
    size_t nd = (size_t)R * D, total = m.total;
    float *C = rvec(nd, 1, 0), *G = fzeros(nd);
    /* gradient buffer: weights pre-filled (accumulation), dxin NaN (overwrite) */
    float *pre = rvec(total, 1, 0), *gbuf = malloc(total * sizeof(float));
    for (size_t i = m.xin_off; i < total; i++) pre[i] = 0;
    memcpy(gbuf, pre, total * sizeof(float));
    for (size_t i = m.xin_off; i < total; i++) gbuf[i] = NAN;
    FlowWeights gw;
    bind_like(&m, gbuf, &gw);
    TfActs a;
    tflm_status st = tfa_init(&a, &m.dm, m.nb, m.n);
    if (st == TFLM_OK)
        st = tf_train_forward(o, &m.fw, &m.dm, &a, m.pf + m.xin_off, m.pos, m.nb, m.n, G);
    if (st == TFLM_OK) st = tf_train_backward(o, &m.fw, &gw, &m.dm, &a, C, gbuf + m.xin_off);
    CHECK(st == TFLM_OK, "tf_train_forward, tf_train_backward %s on the tiny model", o->name);

    /* finite differences of every parameter and input */
    double *pd = dalloc(total), *Cd = dalloc(nd), *fd = dalloc(total);
    to_d(m.pf, total, pd);
    to_d(C, nd, Cd);
    for (size_t i = 0; i < total; i++) {
        double x0 = pd[i];
        pd[i] = x0 + FD_STEP;
        double lp = model_loss_d(&m, pd, Cd);
        pd[i] = x0 - FD_STEP;
        double lm = model_loss_d(&m, pd, Cd);
        pd[i] = x0;
        fd[i] = (lp - lm) / (2 * FD_STEP);
    }
    double worst = 0;
    const char *wname = "";
    int bad = 0;
    for (int k = 0; k < m.nt; k++) {
        const Tensor *t = &m.t[k];
        double e = grad_err(gbuf + t->off, pre + t->off, fd + t->off, t->len);
        if (!(e <= TOL_MODEL)) {
            bad++;
            printf("# %s: %s gradient error %.3g\n", o->name, t->name, e);
        }
        if (!(e <= worst)) { worst = e; wname = t->name; }
    }
    CHECK(bad == 0, "tf_train_backward %s: all %d weight tensors vs finite differences, worst "
          "%.2g (%s) (tol %g)", o->name, m.nt, worst, wname, TOL_MODEL);
    double ex = grad_err(gbuf + m.xin_off, NULL, fd + m.xin_off, (size_t)R * cin);
    CHECK(ex <= TOL_MODEL, "tf_train_backward %s: dxin vs finite differences %.2g (tol %g)",
          o->name, ex, TOL_MODEL);

    /* sos: one vector feeding row 0 of every window; its gradient is the
     * sum of dxin over those rows. Perturb it in all windows at once. */
    float gs[16];
    double fs[16];
    for (int k = 0; k < cin; k++) {
        gs[k] = 0;
        for (int b = 0; b < m.nb; b++) gs[k] += gbuf[m.xin_off + (size_t)b * m.n * cin + k];
        double l[2];
        for (int sgn = 0; sgn < 2; sgn++) {
            for (int b = 0; b < m.nb; b++) pd[m.xin_off + (size_t)b * m.n * cin + k] += sgn ? -2 * FD_STEP : FD_STEP;
            l[sgn] = model_loss_d(&m, pd, Cd);
        }
        for (int b = 0; b < m.nb; b++) pd[m.xin_off + (size_t)b * m.n * cin + k] += FD_STEP;
        fs[k] = (l[0] - l[1]) / (2 * FD_STEP);
    }
    double es = grad_err(gs, NULL, fs, cin);
    CHECK(es <= TOL_MODEL, "tf_train_backward %s: sos (sum of dxin over each window's first "
          "row) vs finite differences %.2g (tol %g)", o->name, es, TOL_MODEL);

    /* the float forward against the double one at the same point */
    double *Gd = dalloc(nd), L = model_loss_d(&m, pd, Cd), Lf = 0;
    for (size_t i = 0; i < nd; i++) Lf += (double)C[i] * G[i];
    CHECK(fabs(L - Lf) <= 1e-5 * (1 + fabs(L)), "tf_train_forward %s: loss %.8g vs double %.8g",
          o->name, Lf, L);

    tfa_free(&a);
    free(C); free(G); free(pre); free(gbuf); free(pd); free(Cd); free(fd); free(Gd);
    model_free_(&m);
}

/* ---- (e) 1 and 2 threads -------------------------------------------------------------- */

static void test_threads(const Ops *o) {
#ifdef _OPENMP
    Model_ m;
    model_make(&m, 96, 4, 2, 5, 4, 100);
    size_t nd = (size_t)m.R * m.dm.D, total = m.total;
    float *C = rvec(nd, 1, 0), *G[2], *g[2];
    TfActs a;
    tflm_status st = tfa_init(&a, &m.dm, m.nb, m.n);
    for (int t = 0; t < 2; t++) {
        G[t] = fzeros(nd);
        g[t] = fzeros(total);
        FlowWeights gw;
        bind_like(&m, g[t], &gw);
        set_threads(t + 1);
        if (st == TFLM_OK)
            st = tf_train_forward(o, &m.fw, &m.dm, &a, m.pf + m.xin_off, m.pos, m.nb, m.n, G[t]);
        if (st == TFLM_OK) st = tf_train_backward(o, &m.fw, &gw, &m.dm, &a, C, g[t] + m.xin_off);
    }
    CHECK(st == TFLM_OK && memcmp(G[0], G[1], nd * 4) == 0 &&
          memcmp(g[0], g[1], total * 4) == 0, "tf_train_forward/backward %s D=96 nb=4 n=100: "
          "1 and 2 threads bit-identical (G, every gradient, dxin)", o->name);
    tfa_free(&a);
    free(C);
    for (int t = 0; t < 2; t++) { free(G[t]); free(g[t]); }
    model_free_(&m);
#else
    (void)o;
    printf("# no OpenMP: thread checks skipped\n");
#endif
}

/* ---- refusals ------------------------------------------------------------------------- */

static void test_refusals(const Ops *o) {
    Model_ m;
    model_make(&m, 8, 2, 1, 3, 2, 5);
    TfActs a;
    float *G = fzeros((size_t)m.R * 8);
    CHECK(tfa_init(&a, &m.dm, 2, ATT_TRAIN_MAX_N + 1) == TFLM_EINVAL,
          "tfa_init refuses windows above %d steps: \"%s\"", ATT_TRAIN_MAX_N, tflm_last_error());
    CHECK(tfa_init(&a, &m.dm, m.nb, m.n) == TFLM_OK, "tfa_init 2 windows of 5 steps");
    tflm_status st = tf_train_forward(o, &m.fw, &m.dm, &a, m.pf + m.xin_off, m.pos, 3, 5, G);
    CHECK(st == TFLM_EINVAL, "tf_train_forward refuses more rows than its buffers: \"%s\"",
          tflm_last_error());
    m.pos[3] = 5;
    st = tf_train_forward(o, &m.fw, &m.dm, &a, m.pf + m.xin_off, m.pos, 2, 5, G);
    CHECK(st == TFLM_EINVAL && strstr(tflm_last_error(), "position"),
          "tf_train_forward refuses position 5: \"%s\"", tflm_last_error());
    TfDims dm2 = m.dm;
    dm2.D = 16;
    st = tf_train_forward(o, &m.fw, &dm2, &a, m.pf + m.xin_off, m.pos, 2, 5, G);
    CHECK(st == TFLM_EINVAL, "tf_train_forward refuses other dimensions: \"%s\"",
          tflm_last_error());
    tfa_free(&a);
    free(G);
    model_free_(&m);
}

int main(void) {
    const Ops *ref = &ops_cpu_ref, *fast = &ops_cpu_blas;
    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads() < 2 ? 2 : omp_get_max_threads();
#endif
    set_threads(threads);

    for (int f = 0; f < 2; f++) {
        const Ops *o = f ? fast : ref;
        test_matmul_grad(o);
        test_layernorm_grad(o);
        test_gelu_grad(o);
        test_attention_grad(o, 2, 6, 8, 2);
        test_attention_grad(o, 1, 9, 12, 3);
    }
    test_matmul_backward_blas(ref, fast);
    test_norm_gelu_blas(ref, fast);
    test_attention_blas(ref, fast);
    for (int f = 0; f < 2; f++) {
        const Ops *o = f ? fast : ref;
        test_forward_vs_cache(o, 8, 2, 2, 3, 2, 5);
        test_forward_vs_cache(o, 48, 4, 2, 7, 3, 23);
        test_forward_vs_cache(o, 64, 2, 1, 16, 2, 70);
        test_model_grad(o);
    }
    test_threads(fast);
    set_threads(threads);
    test_refusals(ref);
    /* gelu_backward far out in the tails: GELU'(x) -> 0 for x -> -inf and
     * -> 1 for x -> +inf; an overflow inside once gave NaN at x = -20 */
    {
        float xs[8] = {-1000, -100, -20, -12, 12, 20, 100, 1000}, one[8], d[8];
        for (int i = 0; i < 8; i++) one[i] = 1;
        for (int k = 0; k < 2; k++) {
            const Ops *o = k ? fast : ref;
            o->gelu_backward(d, one, xs, 8);
            int good = 1;
            for (int i = 0; i < 8; i++)
                good &= isfinite(d[i]) && fabsf(d[i] - (xs[i] > 0 ? 1.0f : 0.0f)) <= 1e-6f;
            CHECK(good, "gelu_backward (%s) is finite and exact in the tails (|x| 12..1000)", k ? "blas" : "ref");
        }
    }
    return tap_done();
}
