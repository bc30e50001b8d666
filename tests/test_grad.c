/* tests/test_grad.c: the backward passes of src/grad.c (mix1, affine, mixd,
 * the maf head, the codebook's R_t) against central finite differences.
 *
 * The differences are taken of double-precision copies of the forward
 * formulas written here (log space, tails from log Phi, y = Phi^-1 of the
 * smaller tail), so that the float parameters can be perturbed in double;
 * each copy is first checked against the library's own forward function.
 * Each difference quotient is Ridders' extrapolation of central differences
 * (Numerical Recipes' dfridr), which also estimates its own error fe.
 *
 * Error measure, for one gradient vector g against its difference quotients
 * f: max_i (|g_i - f_i| - 2 fe_i) / (|f_i| + 1e-4 max_j |f_j|), i.e. relative
 * per component, components below 1e-4 of the largest measured against that
 * (their difference quotients carry rounding noise of the loss divided by
 * the step). Tolerance 2e-6: the analytic gradients of float parameters are
 * returned in float (rounding 6e-8 relative), everything else is double. The
 * largest fe seen, in the same relative terms, is reported and bounded too,
 * so that no check passes on a difference quotient that resolved nothing. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "train.h"
#include "tap.h"

#define TOL 2e-6
/* The maf head runs in single precision like the transformer (DESIGN §2.3):
 * its context part C_i G + b_i and the embeddings e_j enter
 * maf_channel_backward rounded to float, and dL/d(C_i G + b_i) leaves as a
 * float (the engine does that product for all rows in one sgemm). Three
 * roundings of 6e-8, amplified by cancellation over up to (c-1)E + D terms
 * (measured up to 3.4e-5 with E = 70, D = 300), so 1e-4. */
#define MAF_TOL 1e-4
#define FLOOR 1e-4

/* ---- a small deterministic generator (splitmix64) ---------------------------- */
static uint64_t rs = 0x5DEECE66Dull;
static uint64_t rnext(void) {
    uint64_t z = (rs += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double runif(void) { return ((rnext() >> 11) + 0.5) * (1.0 / 9007199254740992.0); }
static double rnorm(void) {
    return sqrt(-2.0 * log(runif())) * cos(6.283185307179586 * runif());
}
static int rint_(int n) { return (int)(rnext() % (uint64_t)n); }
static float rf(double v) { return (float)v; }

/* ---- finite differences -------------------------------------------------------- */
typedef double (*LossFn)(const double *th, const void *ctx);

/* Ridders' extrapolation of central differences (Numerical Recipes
 * dfridr): steps h0 = 0.01 scale shrinking by 1.4, the answer with the
 * smallest error estimate among the Neville tableau entries */
static double step(double scale) { return 0.01 * scale; }

static double central(LossFn f, double *th, int i, double h, const void *ctx) {
    double t0 = th[i];
    th[i] = t0 + h;
    double hp = th[i] - t0, fp = f(th, ctx);
    th[i] = t0 - h;
    double hm = t0 - th[i], fm = f(th, ctx);
    th[i] = t0;
    return (fp - fm) / (hp + hm);
}

static double fd_err; /* Ridders' error estimate of the last fdiff */

static double fdiff(LossFn f, double *th, int i, double h, const void *ctx) {
    enum { NT = 12 };
    const double CON = 1.4, CON2 = CON * CON, SAFE = 2.0;
    double a[NT][NT], err = INFINITY, ans = 0.0;
    a[0][0] = central(f, th, i, h, ctx);
    ans = a[0][0];
    for (int q = 1; q < NT; q++) {
        h /= CON;
        a[0][q] = central(f, th, i, h, ctx);
        double fac = CON2;
        for (int j = 1; j <= q; j++) {
            a[j][q] = (a[j - 1][q] * fac - a[j - 1][q - 1]) / (fac - 1.0);
            fac *= CON2;
            double e = fmax(fabs(a[j][q] - a[j - 1][q]), fabs(a[j][q] - a[j - 1][q - 1]));
            if (e <= err) {
                err = e;
                ans = a[j][q];
            }
        }
        if (fabs(a[q][q] - a[q - 1][q - 1]) >= SAFE * err)
            break;
    }
    fd_err = err;
    return ans;
}

/* the error measure of the header, less twice the difference quotient's own
 * error estimate fe; *where gets the worst index. Also tracks the largest
 * estimate, relative to the same denominator, over the whole run. */
static double fd_unc_worst;

static double gerr(const double *g, const double *f, const double *fe, int n, int *where) {
    double fm = 0.0, e = 0.0;
    for (int i = 0; i < n; i++)
        fm = fmax(fm, fabs(f[i]));
    for (int i = 0; i < n; i++) {
        double den = fabs(f[i]) + FLOOR * fm + DBL_MIN;
        double d = fmax(0.0, fabs(g[i] - f[i]) - 2.0 * fe[i]) / den;
        fd_unc_worst = fmax(fd_unc_worst, fe[i] / den);
        if (!(d <= e)) {
            e = d;
            if (where)
                *where = i;
        }
    }
    return e;
}

static double lse(const double *q, int n) {
    double M = -INFINITY, S = 0.0;
    for (int k = 0; k < n; k++)
        M = fmax(M, q[k]);
    for (int k = 0; k < n; k++)
        S += exp(q[k] - M);
    return M + log(S);
}

static double clamp_ref(double v, double f) {
    double c = exp(f);
    return c * tanh(v / fmax(c, 1.0));
}

/* y = Phi^-1(F) of a mixture with log-weights lw and residuals r, from the
 * smaller of the log tails */
static double y_ref(const double *lw, const double *r, int K) {
    double a[512], b[512];
    for (int k = 0; k < K; k++) {
        a[k] = lw[k] + norm_logcdf(r[k]);
        b[k] = lw[k] + norm_logcdf(-r[k]);
    }
    double lF = lse(a, K), lG = lse(b, K);
    return lF <= lG ? norm_ppf(exp(lF)) : -norm_ppf(exp(lG));
}

/* ---- mix1 / affine -------------------------------------------------------------- */
typedef struct {
    int K;
    double glp, gy;
} Mix1Ctx;

/* th = [a (K) | m (K) | v (K) | f (K) | x]; returns log p, fills *y */
static double mix1_ref(const double *th, int K, double *y) {
    double lw[256], r[256], q[256], A = lse(th, K);
    double x = th[4 * K];
    for (int k = 0; k < K; k++) {
        double ls = 0.5 * clamp_ref(th[2 * K + k], th[3 * K + k]);
        lw[k] = th[k] - A;
        r[k] = (x - th[K + k]) * exp(-ls);
        q[k] = lw[k] - ls - 0.5 * r[k] * r[k];
    }
    if (y)
        *y = y_ref(lw, r, K);
    return lse(q, K) - LOG_SQRT_2PI;
}

static double mix1_loss(const double *th, const void *vc) {
    const Mix1Ctx *c = vc;
    double y, lp = mix1_ref(th, c->K, &y);
    return c->glp * lp + (c->gy != 0.0 ? c->gy * y : 0.0);
}

/* one parameter set: n = 4K + 1 gradients, analytic and numeric */
static double mix1_case(const float *prm, const float *cl, int K, double x, double glp, double gy,
                        int affine, int *where) {
    double th[4 * 64 + 1], g[4 * 64 + 1], f[4 * 64 + 1], fe[4 * 64 + 1];
    float dprm[3 * 64] = {0}, dcl[64] = {0};
    int n = 4 * K + 1;
    for (int t = 0; t < 3 * K; t++)
        th[t] = prm[t];
    for (int k = 0; k < K; k++)
        th[3 * K + k] = cl[k];
    th[4 * K] = x;
    double dx = affine ? affine_backward(prm, cl, x, glp, gy, dprm, dcl)
                       : mix1_backward(prm, cl, K, x, glp, gy, dprm, dcl);
    for (int t = 0; t < 3 * K; t++)
        g[t] = dprm[t];
    for (int k = 0; k < K; k++)
        g[3 * K + k] = dcl[k];
    g[4 * K] = dx;
    Mix1Ctx c = {K, glp, gy};
    /* step scales: sigma_k for m_k, 1/(1 + |r_k|) for v_k, that over
     * (1 + |clamp_k|) for f_k, the smallest sigma of a component that matters
     * (|r| < 40) for x */
    double sx = INFINITY, sc[4 * 64 + 1];
    for (int k = 0; k < K; k++) {
        double cl2 = clamp_ref(th[2 * K + k], th[3 * K + k]), sig = exp(0.5 * cl2);
        double r = fmin(fabs(x - th[K + k]) / sig, 40.0);
        if (r < 40.0)
            sx = fmin(sx, sig);
        sc[k] = 1.0;
        sc[K + k] = sig;
        sc[2 * K + k] = 1.0 / (1.0 + r);
        sc[3 * K + k] = 1.0 / ((1.0 + r) * (1.0 + fabs(cl2)));
    }
    sc[4 * K] = isfinite(sx) ? sx : 1.0;
    for (int t = 0; t < n; t++) {
        f[t] = fdiff(mix1_loss, th, t, step(sc[t]), &c);
        fe[t] = fd_err;
    }
    if (affine)
        f[0] = fe[0] = 0.0; /* the logit of affine is unused: exactly zero */
    int w = 0;
    double e = gerr(g, f, fe, n, &w);
    if (where)
        *where = w;
    if (e > TOL && getenv("TG_DEBUG")) {
        printf("#  K=%d idx %d: fe %.3g g %.12g f %.12g f(h/8) %.12g f(h*8) %.12g th %.9g\n", K, w, fe[w], g[w], f[w],
               fdiff(mix1_loss, th, w, step(sc[w]) / 8, &c), fdiff(mix1_loss, th, w, step(sc[w]) * 8, &c), th[w]);
        for (int k = 0; k < K; k++)
            printf("#   a %.6g m %.6g v %.6g f %.6g  sig %.6g  r %.6g\n", th[k], th[K + k], th[2 * K + k],
                   th[3 * K + k], exp(0.5 * clamp_ref(th[2 * K + k], th[3 * K + k])),
                   (th[4 * K] - th[K + k]) / exp(0.5 * clamp_ref(th[2 * K + k], th[3 * K + k])));
    }
    return e;
}

/* random raw head outputs of one channel: soft clamp in every regime */
static void rand_mix1(int K, float *prm, float *cl) {
    static const double fs[] = {-2.0, -0.7, -0.2, 0.25, 1.0, 2.3, 3.0};
    double mscale = (double[]){0.05, 0.5, 1.0, 3.0}[rint_(4)];
    double f = fs[rint_(7)];
    int sat = rint_(3) == 0; /* saturate the clamp: |v| several times max(c, 1) */
    for (int k = 0; k < K; k++) {
        double c = exp(f), s = fmax(c, 1.0);
        prm[k] = rf(1.5 * rnorm());
        prm[K + k] = rf(mscale * rnorm());
        prm[2 * K + k] = rf(sat ? (rint_(2) ? 1 : -1) * s * (2.0 + 6.0 * runif())
                                : (f > 1.5 ? -c * runif() * 1.5 : 2.0 * rnorm()));
        double fk = f + 0.05 * rnorm();
        cl[k] = rf(fabs(fk) < 0.1 ? copysign(0.1, fk) : fk); /* away from the kink at 0 */
    }
}

static void test_mix1(void) {
    static const int Ks[] = {1, 2, 3, 5, 8};
    static const double gl[3][2] = {{1.3, 0.0}, {0.0, -0.7}, {0.8, 1.1}};
    double worst[3] = {0, 0, 0}, worst_tail = 0.0, worst_fwd = 0.0, worst_deep = 0.0;
    double ymax = 0.0;
    int nsets = 0, ndeep = 0;
    for (int s = 0; s < 400; s++) {
        int K = Ks[rint_(5)];
        float prm[24], cl[8];
        rand_mix1(K, prm, cl);
        for (int t = 0; t < 6; t++) {
            /* x from a target y: the bulk, the tails to |y| = 8 */
            double yt = t < 3 ? 2.0 * rnorm() : (rint_(2) ? 1 : -1) * (4.0 + 4.0 * runif());
            double x, lp;
            if (mix1_inverse(prm, cl, K, yt, &x, &lp) != TFLM_OK)
                continue;
            /* the double copy of the forward against the library's */
            double th[4 * 8 + 1], yr, yl;
            for (int i = 0; i < 3 * K; i++)
                th[i] = prm[i];
            for (int k = 0; k < K; k++)
                th[3 * K + k] = cl[k];
            th[4 * K] = x;
            double lr = mix1_ref(th, K, &yr), ll = mix1_forward(prm, cl, K, x, &yl);
            worst_fwd = fmax(worst_fwd, fmax(fabs(lr - ll) / (1 + fabs(ll)),
                                             fabs(yr - yl) / (1 + fabs(yl))));
            ymax = fmax(ymax, fabs(yl));
            nsets++;
            for (int c = 0; c < 3; c++) {
                int where = 0;
                double e = mix1_case(prm, cl, K, x, gl[c][0], gl[c][1], 0, &where);
                if (e > worst[c]) {
                    worst[c] = e;
                    if (e > TOL) {
                        printf("# mix1 K=%d y=%.3g glp=%g gy=%g: err %.3g at %d\n", K, yl,
                               gl[c][0], gl[c][1], e, where);
                    }
                }
                if (fabs(yl) > 6)
                    worst_tail = fmax(worst_tail, e);
            }
        }
        /* the deep tail, where the forward sums log Phi (F < 1e-280) */
        if (s % 8 == 0) {
            double yt = (rint_(2) ? 1 : -1) * (35.9 + 1.0 * runif()), x, lp;
            if (mix1_inverse(prm, cl, K, yt, &x, &lp) == TFLM_OK) {
                for (int c = 0; c < 3; c++)
                    worst_deep = fmax(worst_deep, mix1_case(prm, cl, K, x, gl[c][0], gl[c][1], 0,
                                                            NULL));
                ndeep++;
            }
        }
    }
    CHECK(worst_fwd <= 1e-12, "double-precision copy of mix1_forward agrees (%.2g)", worst_fwd);
    CHECK(nsets > 2000 && ymax > 7.5, "mix1: %d parameter sets and positions, |y| up to %.2f",
          nsets, ymax);
    CHECK(worst[0] <= TOL, "mix1_backward, log p only, vs finite differences: rel err %.2g "
          "(tol %g)", worst[0], TOL);
    CHECK(worst[1] <= TOL, "mix1_backward, y only: rel err %.2g (tol %g)", worst[1], TOL);
    CHECK(worst[2] <= TOL, "mix1_backward, log p and y: rel err %.2g (tol %g)", worst[2], TOL);
    CHECK(worst_tail <= TOL, "mix1_backward with |y| > 6: rel err %.2g (tol %g)", worst_tail, TOL);
    CHECK(ndeep > 20 && worst_deep <= TOL, "mix1_backward in the log-space tail (|y| ~ 36, "
          "%d sets): rel err %.2g (tol %g)", ndeep, worst_deep, TOL);

    /* gy == 0 skips the y part; glp == gy == 0 adds nothing but the zeros */
    {
        float prm[9], cl[3], d0[9] = {0}, c0[3] = {0};
        rand_mix1(3, prm, cl);
        double dx = mix1_backward(prm, cl, 3, 0.3, 0.0, 0.0, d0, c0);
        int zero = dx == 0.0;
        for (int t = 0; t < 9; t++)
            zero &= d0[t] == 0.0f;
        CHECK(zero, "mix1_backward with glp = gy = 0 leaves gradients zero");
        /* accumulation: a second call adds the same again */
        float d1[9] = {0}, c1[3] = {0};
        mix1_backward(prm, cl, 3, 0.3, 0.7, -0.4, d1, c1);
        float d2[9], c2[3];
        memcpy(d2, d1, sizeof d1);
        memcpy(c2, c1, sizeof c1);
        mix1_backward(prm, cl, 3, 0.3, 0.7, -0.4, d2, c2);
        int acc = 1;
        for (int t = 0; t < 9; t++)
            acc &= d2[t] == 2.0f * d1[t];
        for (int t = 0; t < 3; t++)
            acc &= c2[t] == 2.0f * c1[t];
        CHECK(acc, "mix1_backward accumulates (+=)");
    }

    /* affine: closed form, against finite differences and against mix1 K = 1 */
    double wa[3] = {0, 0, 0}, wm = 0.0;
    int zlogit = 1;
    for (int s = 0; s < 300; s++) {
        float prm[3], cl[1];
        rand_mix1(1, prm, cl);
        double x = prm[1] + exp(0.5 * soft_clamp(prm[2], cl[0])) * 3.0 * rnorm();
        for (int c = 0; c < 3; c++) {
            wa[c] = fmax(wa[c], mix1_case(prm, cl, 1, x, gl[c][0], gl[c][1], 1, NULL));
            float da[3] = {0}, dca[1] = {0}, dm[3] = {0}, dcm[1] = {0};
            double xa = affine_backward(prm, cl, x, gl[c][0], gl[c][1], da, dca);
            double xm = mix1_backward(prm, cl, 1, x, gl[c][0], gl[c][1], dm, dcm);
            zlogit &= da[0] == 0.0f;
            double sc = fmax(fmax(fabs(xa), fabs(da[1])), fmax(fabs(da[2]), fabs(dca[0])));
            double e = fmax(fmax(fabs(xa - xm), fabs(da[1] - dm[1])),
                            fmax(fabs(da[2] - dm[2]), fabs(dca[0] - dcm[0]))) / (sc + DBL_MIN);
            wm = fmax(wm, e);
        }
    }
    CHECK(wa[0] <= TOL && wa[1] <= TOL && wa[2] <= TOL, "affine_backward vs finite differences "
          "(log p, y, both): rel err %.2g %.2g %.2g (tol %g)", wa[0], wa[1], wa[2], TOL);
    CHECK(zlogit, "affine_backward: the unused logit gets exactly zero");
    CHECK(wm <= 1e-6, "affine_backward = mix1_backward with K = 1 (rel %.2g)", wm);
}

/* ---- mixd ------------------------------------------------------------------------ */
typedef struct {
    int V, d;
    double glp;
    const double *gy;
} MixdCtx;

/* th = [logits V | mu V*d | logsig V | z d]; forward order, every alpha from
 * its own softmax; fills y[d] when y != NULL; returns log p(z) */
static double mixd_ref(const double *th, int V, int d, double *y) {
    const double *lg = th, *mu = th + V, *ls = th + V + V * d, *z = th + 2 * V + V * d;
    double u[64], lw[64], r[64];
    for (int k = 0; k < V; k++)
        u[k] = lg[k];
    for (int i = 0; i < d; i++) {
        double A = lse(u, V);
        for (int k = 0; k < V; k++) {
            lw[k] = u[k] - A;
            r[k] = (z[i] - mu[k * d + i]) * exp(-ls[k]);
        }
        if (y)
            y[i] = y_ref(lw, r, V);
        for (int k = 0; k < V; k++)
            u[k] += -ls[k] - 0.5 * r[k] * r[k];
    }
    return lse(u, V) - lse(lg, V) - d * LOG_SQRT_2PI;
}

static double mixd_loss(const double *th, const void *vc) {
    const MixdCtx *c = vc;
    double y[16], lp = mixd_ref(th, c->V, c->d, c->gy ? y : NULL), L = c->glp * lp;
    if (c->gy)
        for (int i = 0; i < c->d; i++)
            L += c->gy[i] * y[i];
    return L;
}

/* errors of the four gradient kinds: logits, mu, logsig, z */
static void mixd_case(const float *lg, const float *mu, const float *ls, int V, int d,
                      const double *z, double glp, const double *gy, double err[4]) {
    enum { MAXN = 2 * 16 + 16 * 8 + 8 };
    double th[MAXN], g[MAXN], f[MAXN], fe[MAXN];
    float dlg[16] = {0}, dmu[128] = {0}, dls[16] = {0};
    double dz[8] = {0};
    int n = 2 * V + V * d + d;
    for (int k = 0; k < V; k++) {
        th[k] = lg[k];
        th[V + V * d + k] = ls[k];
    }
    for (int t = 0; t < V * d; t++)
        th[V + t] = mu[t];
    for (int i = 0; i < d; i++)
        th[2 * V + V * d + i] = z[i];
    mixd_backward(lg, mu, ls, V, d, z, glp, gy, dlg, dmu, dls, dz);
    for (int k = 0; k < V; k++) {
        g[k] = dlg[k];
        g[V + V * d + k] = dls[k];
    }
    for (int t = 0; t < V * d; t++)
        g[V + t] = dmu[t];
    for (int i = 0; i < d; i++)
        g[2 * V + V * d + i] = dz[i];
    MixdCtx c = {V, d, glp, gy};
    double smin = INFINITY;
    for (int k = 0; k < V; k++)
        smin = fmin(smin, exp(ls[k]));
    for (int t = 0; t < n; t++) {
        double sc = 1.0;
        if (t >= V && t < V + V * d)
            sc = exp(ls[(t - V) / d]);
        else if (t >= 2 * V + V * d)
            sc = smin;
        f[t] = fdiff(mixd_loss, th, t, step(sc), &c);
        fe[t] = fd_err;
    }
    int off[5] = {0, V, V + V * d, 2 * V + V * d, n};
    for (int q = 0; q < 4; q++) {
        /* each kind measured against its own largest component */
        err[q] = gerr(g + off[q], f + off[q], fe + off[q], off[q + 1] - off[q], NULL);
    }
}

/* V <= 16, d <= 8 */
static void test_mixd(int V, int d, int nset) {
    static const char *kind[4] = {"logits", "mu", "logsig", "z"};
    double worst[3][4] = {{0}}, worst_fwd = 0.0, ymax = 0.0;
    int nsets = 0;
    for (int s = 0; s < nset; s++) {
        float lg[16], mu[128], ls[16];
        double mscale = (double[]){0.2, 1.0, 3.0}[rint_(3)];
        for (int k = 0; k < V; k++) {
            lg[k] = rf(1.5 * rnorm());
            ls[k] = rf(-0.5 + 0.8 * rnorm());
            for (int i = 0; i < d; i++)
                mu[k * d + i] = rf(mscale * rnorm());
        }
        for (int t = 0; t < 4; t++) {
            double yt[8], z[8], lp;
            for (int i = 0; i < d; i++)
                yt[i] = t < 2 ? 1.5 * rnorm() : (rint_(2) ? 1 : -1) * 8.0 * runif();
            if (mixd_inverse(lg, mu, ls, V, d, yt, z, NULL, &lp) != TFLM_OK)
                continue;
            double th[2 * 16 + 16 * 8 + 8], yr[8], yl[8];
            for (int k = 0; k < V; k++) {
                th[k] = lg[k];
                th[V + V * d + k] = ls[k];
            }
            for (int q = 0; q < V * d; q++)
                th[V + q] = mu[q];
            for (int i = 0; i < d; i++)
                th[2 * V + V * d + i] = z[i];
            double lr = mixd_ref(th, V, d, yr), ll = mixd_forward(lg, mu, ls, V, d, z, yl, NULL);
            double e = fabs(lr - ll) / (1 + fabs(ll));
            for (int i = 0; i < d; i++) {
                e = fmax(e, fabs(yr[i] - yl[i]) / (1 + fabs(yl[i])));
                ymax = fmax(ymax, fabs(yl[i]));
            }
            worst_fwd = fmax(worst_fwd, e);
            nsets++;
            double gy[8];
            for (int i = 0; i < d; i++)
                gy[i] = rnorm();
            double err[4];
            mixd_case(lg, mu, ls, V, d, z, 1.3, NULL, err);
            for (int q = 0; q < 4; q++)
                worst[0][q] = fmax(worst[0][q], err[q]);
            mixd_case(lg, mu, ls, V, d, z, 0.0, gy, err);
            for (int q = 0; q < 4; q++)
                worst[1][q] = fmax(worst[1][q], err[q]);
            mixd_case(lg, mu, ls, V, d, z, -0.6, gy, err);
            for (int q = 0; q < 4; q++)
                worst[2][q] = fmax(worst[2][q], err[q]);
        }
    }
    CHECK(worst_fwd <= 1e-11, "double-precision copy of mixd_forward agrees (%.2g)", worst_fwd);
    CHECK(nsets > 3 * nset && ymax > 7.5, "mixd V=%d d=%d: %d sets, |y| up to %.2f", V, d, nsets,
          ymax);
    static const char *what[3] = {"log p only (gy = NULL)", "y only", "log p and y"};
    for (int c = 0; c < 3; c++)
        for (int q = 0; q < 4; q++)
            CHECK(worst[c][q] <= TOL, "mixd_backward V=%d d=%d d/d%s, %s: rel err %.2g (tol %g)",
                  V, d, kind[q], what[c], worst[c][q], TOL);
}

/* ---- maf ----------------------------------------------------------------------- */
typedef struct {
    int c, K, E, H2, D, i;
    size_t o_ew, o_eb, o_cw, o_fw, o_hb, o_ow, o_ob, o_G, o_x, n;
    const double *dout;
} MafCtx;

static void maf_layout(MafCtx *m) {
    int c = m->c, K = m->K, E = m->E, H2 = m->H2, D = m->D;
    m->o_ew = 0;
    m->o_eb = m->o_ew + (size_t)(c - 1) * E * 3;
    m->o_cw = m->o_eb + (size_t)(c - 1) * E;
    m->o_fw = m->o_cw + (size_t)c * H2 * D;
    m->o_hb = m->o_fw + (size_t)c * H2 * (c - 1) * E;
    m->o_ow = m->o_hb + (size_t)c * H2;
    m->o_ob = m->o_ow + (size_t)c * 3 * K * H2;
    m->o_G = m->o_ob + (size_t)c * 3 * K;
    m->o_x = m->o_G + D;
    m->n = m->o_x + c;
}

static double gelu_ref(double x) {
    return 0.5 * x * (1 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)));
}
static double elu_ref(double x) { return x > 0 ? x : expm1(x); }

/* out_i in double; returns sum_k dout_k out_k, fills out when != NULL */
static double maf_ref(const double *th, const void *vc) {
    const MafCtx *m = vc;
    int c = m->c, K = m->K, E = m->E, H2 = m->H2, D = m->D, i = m->i, FE = (c - 1) * E;
    double e[512], L = 0.0;
    const double *x = th + m->o_x, *G = th + m->o_G;
    for (int j = 0; j < i; j++) {
        double f[3] = {x[j], elu_ref(x[j]), elu_ref(-x[j])};
        for (int a = 0; a < E; a++) {
            double s = th[m->o_eb + j * E + a];
            for (int b = 0; b < 3; b++)
                s += th[m->o_ew + (j * E + a) * 3 + b] * f[b];
            e[j * E + a] = gelu_ref(s);
        }
    }
    for (int h = 0; h < H2; h++) {
        double s = th[m->o_hb + i * H2 + h];
        for (int t = 0; t < D; t++)
            s += th[m->o_cw + ((size_t)i * H2 + h) * D + t] * G[t];
        for (int col = 0; col < i * E; col++)
            s += th[m->o_fw + ((size_t)i * H2 + h) * FE + col] * e[col];
        double g = gelu_ref(s);
        for (int k = 0; k < 3 * K; k++)
            L += m->dout[k] * th[m->o_ow + ((size_t)i * 3 * K + k) * H2 + h] * g;
    }
    for (int k = 0; k < 3 * K; k++)
        L += m->dout[k] * th[m->o_ob + i * 3 * K + k];
    return L;
}

/* nsub > 0: check only nsub random parameters (plus all of G and x) */
static void test_maf_case(int c, int E, int H2, int K, int D, int nsub) {
    MafCtx m = {c, K, E, H2, D, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, NULL};
    maf_layout(&m);
    size_t n = m.n, np = m.o_G;
    float *wf = malloc(sizeof(float) * np), *gf = calloc(np, sizeof(float));
    double *th = malloc(sizeof(double) * n), *g = malloc(sizeof(double) * n);
    double *f = malloc(sizeof(double) * n), *gs = malloc(sizeof(double) * n);
    double *fs = malloc(sizeof(double) * n), *fe = malloc(sizeof(double) * n);
    float *G = malloc(sizeof(float) * D), *dG = malloc(sizeof(float) * D);
    float *cg = malloc(sizeof(float) * H2), *dcg = malloc(sizeof(float) * H2);
    float *e = malloc(sizeof(float) * c * E);
    double *de = malloc(sizeof(double) * c * E);
    double x[64], dx[64], dout[64];
    float doutf[64], out[64];
    for (size_t t = 0; t < np; t++) {
        double sc = t < m.o_cw ? 0.8 : t < m.o_hb ? 0.5 : 0.4;
        wf[t] = rf(sc * rnorm());
    }
    FlowWeights fw, gw;
    memset(&fw, 0, sizeof fw);
    memset(&gw, 0, sizeof gw);
    fw.maf_emb_w = wf + m.o_ew; gw.maf_emb_w = gf + m.o_ew;
    fw.maf_emb_b = wf + m.o_eb; gw.maf_emb_b = gf + m.o_eb;
    fw.maf_ctx_w = wf + m.o_cw; gw.maf_ctx_w = gf + m.o_cw;
    fw.maf_feat_w = wf + m.o_fw; gw.maf_feat_w = gf + m.o_fw;
    fw.maf_hid_b = wf + m.o_hb; gw.maf_hid_b = gf + m.o_hb;
    fw.maf_out_w = wf + m.o_ow; gw.maf_out_w = gf + m.o_ow;
    fw.maf_out_b = wf + m.o_ob; gw.maf_out_b = gf + m.o_ob;
    double worst = 0.0, worst_fwd = 0.0;
    int untouched = 1, ntrial = nsub ? 2 : 4, nchk = 0;
    for (int trial = 0; trial < ntrial; trial++) {
        for (int t = 0; t < D; t++)
            G[t] = rf(rnorm());
        for (int j = 0; j < c; j++)
            x[j] = rf(1.5 * rnorm());
        for (int j = 0; j < c - 1; j++)
            maf_embed(&fw, E, j, x[j], e + (size_t)j * E);
        for (int i = 0; i < c; i++) {
            m.i = i;
            for (int k = 0; k < 3 * K; k++) {
                doutf[k] = rf(rnorm());
                dout[k] = doutf[k];
            }
            m.dout = dout;
            for (size_t t = 0; t < np; t++)
                th[t] = wf[t];
            for (int t = 0; t < D; t++)
                th[m.o_G + t] = G[t];
            for (int j = 0; j < c; j++)
                th[m.o_x + j] = x[j];
            /* the context part C_i G + b_i, as the engine's matrix product gives it */
            for (int h = 0; h < H2; h++) {
                const float *row = fw.maf_ctx_w + ((size_t)i * H2 + h) * D;
                double sacc = fw.maf_hid_b[(size_t)i * H2 + h];
                for (int t = 0; t < D; t++)
                    sacc += (double)row[t] * G[t];
                cg[h] = (float)sacc;
            }
            /* the reference forward against maf_channel (float) */
            maf_channel(&fw, c, K, E, H2, cg, e, i, out);
            double Lf = 0.0, Lr = maf_ref(th, &m), sc = 0.0;
            for (int k = 0; k < 3 * K; k++) {
                Lf += dout[k] * out[k];
                sc += fabs(dout[k] * out[k]);
            }
            worst_fwd = fmax(worst_fwd, fabs(Lf - Lr) / (sc + 1.0));
            memset(gf, 0, sizeof(float) * np);
            memset(dG, 0, sizeof(float) * D);
            for (int j = 0; j < c; j++)
                dx[j] = 0.0;
            memset(dcg, 0, sizeof(float) * H2);
            for (int t = 0; t < c * E; t++)
                de[t] = 0.0;
            maf_channel_backward(&fw, &gw, c, K, E, H2, cg, e, i, doutf, dcg, de);
            for (int t = i * E; t < c * E; t++)
                untouched &= de[t] == 0.0;
            for (int j = 0; j < c - 1; j++)
                maf_embed_backward(&fw, &gw, E, j, x[j], de + (size_t)j * E, &dx[j]);
            /* the caller's part (the matmul op's backward): dC += dcg G^T,
             * db += dcg, dG = C^T dcg (summed in double: this test checks the
             * maf head's arithmetic, not float accumulation over H2 terms) */
            for (int t = 0; t < D; t++) {
                double sacc = 0.0;
                for (int h = 0; h < H2; h++)
                    sacc += (double)dcg[h] * fw.maf_ctx_w[((size_t)i * H2 + h) * D + t];
                dG[t] = (float)sacc;
            }
            for (int h = 0; h < H2; h++) {
                float *drow = gw.maf_ctx_w + ((size_t)i * H2 + h) * D;
                gw.maf_hid_b[(size_t)i * H2 + h] += dcg[h];
                for (int t = 0; t < D; t++)
                    drow[t] += (float)((double)dcg[h] * G[t]);
            }
            for (size_t t = 0; t < np; t++)
                g[t] = gf[t];
            for (int t = 0; t < D; t++)
                g[m.o_G + t] = dG[t];
            for (int j = 0; j < c; j++)
                g[m.o_x + j] = dx[j];
            for (int j = i; j < c; j++)
                untouched &= dx[j] == 0.0;
            for (size_t t = m.o_ew + (size_t)i * E * 3; t < m.o_eb; t++)
                untouched &= gf[t] == 0.0f;   /* e_j for j >= i not used */
            /* finite differences: all parameters, or a random subset */
            size_t ns = 0;
            if (!nsub) {
                for (size_t t = 0; t < n; t++) {
                    f[t] = fdiff(maf_ref, th, (int)t, step(1.0), &m);
                    fe[t] = fd_err;
                    gs[t] = g[t];
                }
                ns = n;
            } else {
                for (int q = 0; q < nsub; q++) {
                    size_t t = rnext() % np;
                    fs[ns] = fdiff(maf_ref, th, (int)t, step(1.0), &m);
                    fe[ns] = fd_err;
                    gs[ns++] = g[t];
                }
                for (size_t t = m.o_G; t < n; t++) {
                    fs[ns] = fdiff(maf_ref, th, (int)t, step(1.0), &m);
                    fe[ns] = fd_err;
                    gs[ns++] = g[t];
                }
                memcpy(f, fs, sizeof(double) * ns);
            }
            int wi = 0;
            double ee = gerr(gs, f, fe, (int)ns, &wi);
            if (ee > MAF_TOL && getenv("TG_DEBUG"))
                printf("#  maf i=%d idx %d of %zu: g %.10g f %.10g fe %.3g\n", i, wi, ns, gs[wi], f[wi], fe[wi]);
            worst = fmax(worst, ee);
            nchk += (int)ns;
        }
    }
    CHECK(worst_fwd <= 1e-5, "maf: double-precision reference = maf_channel (%.2g)", worst_fwd);
    CHECK(worst <= MAF_TOL, "maf_channel_backward (c=%d E=%d H2=%d K=%d D=%d, %d gradients) vs "
          "finite differences: rel err %.2g (tol %g)", c, E, H2, K, D, nchk, worst, MAF_TOL);
    CHECK(untouched, "maf_channel_backward: nothing flows to x_j or e_j for j >= i");
    free(wf); free(gf); free(th); free(g); free(f); free(gs); free(fs); free(fe); free(G); free(dG);
    free(cg); free(dcg); free(e); free(de);
}

/* ---- codebook R --------------------------------------------------------------------- */
typedef struct {
    int V, d;
    double g;
} CbCtx;

/* th = [mu V*d | logsig V | z d]: g R */
static double cb_ref(const double *th, const void *vc) {
    const CbCtx *c = vc;
    int V = c->V, d = c->d;
    const double *mu = th, *ls = th + V * d, *z = th + V * d + V;
    double *l = malloc(sizeof(double) * V);
    for (int k = 0; k < V; k++) {
        double q = 0.0;
        for (int i = 0; i < d; i++)
            q += (z[i] - mu[k * d + i]) * (z[i] - mu[k * d + i]);
        l[k] = -d * LOG_SQRT_2PI - d * ls[k] - 0.5 * q * exp(-2.0 * ls[k]);
    }
    double R = -lse(l, V);
    free(l);
    return c->g * R;
}

static double cb_case(int V, int d, int nsub) {
    size_t n = (size_t)V * d + V + d;
    float *mu = malloc(sizeof(float) * V * d), *ls = malloc(sizeof(float) * V);
    float *dmu = calloc((size_t)V * d, sizeof(float)), *dls = calloc(V, sizeof(float));
    float z[16];
    double *th = malloc(sizeof(double) * n), *g = malloc(sizeof(double) * n);
    double *f = malloc(sizeof(double) * n), *gs = malloc(sizeof(double) * n), dz[16] = {0};
    double *fe = malloc(sizeof(double) * n);
    double mscale = (double[]){0.3, 1.0, 3.0}[rint_(3)];
    for (int k = 0; k < V; k++) {
        ls[k] = rf(-1.0 + rnorm());
        for (int i = 0; i < d; i++)
            mu[k * d + i] = rf(mscale * rnorm());
    }
    int k0 = rint_(V);
    double zs = (double[]){0.0, 0.3, 1.0, 4.0}[rint_(4)];
    for (int i = 0; i < d; i++)
        z[i] = rf(mu[k0 * d + i] + zs * exp(ls[k0]) * rnorm() + (zs == 0.0 ? 0.0 : 0.1 * rnorm()));
    for (size_t t = 0; t < (size_t)V * d; t++)
        th[t] = mu[t];
    for (int k = 0; k < V; k++)
        th[V * d + k] = ls[k];
    for (int i = 0; i < d; i++)
        th[V * d + V + i] = z[i];
    CbCtx c = {V, d, 1.7};
    codebook_R_backward(mu, ls, V, d, z, c.g, dmu, dls, dz);
    for (size_t t = 0; t < (size_t)V * d; t++)
        g[t] = dmu[t];
    for (int k = 0; k < V; k++)
        g[V * d + k] = dls[k];
    for (int i = 0; i < d; i++)
        g[V * d + V + i] = dz[i];
    double smin = INFINITY;
    for (int k = 0; k < V; k++)
        smin = fmin(smin, exp(ls[k]));
    size_t ns = 0;
    for (size_t q = 0; q < (nsub ? (size_t)nsub + d : n); q++) {
        size_t t = !nsub ? q : q < (size_t)nsub ? rnext() % (n - d) : n - d + (q - nsub);
        double sc = t < (size_t)V * d ? exp(ls[t / d]) : t >= n - d ? smin : 1.0;
        f[ns] = fdiff(cb_ref, th, (int)t, step(sc), &c);
        fe[ns] = fd_err;
        gs[ns++] = g[t];
    }
    double e = gerr(gs, f, fe, (int)ns, NULL);
    free(fe);
    free(mu); free(ls); free(dmu); free(dls); free(th); free(g); free(f); free(gs);
    return e;
}

static void test_codebook(void) {
    double worst = 0.0, worst_big = 0.0;
    for (int s = 0; s < 300; s++)
        worst = fmax(worst, cb_case(7, 4, 0));
    for (int s = 0; s < 4; s++)
        worst_big = fmax(worst_big, cb_case(1100, 3, 200));
    CHECK(worst <= TOL, "codebook_R_backward (V=7, d=4, 300 sets) vs finite differences: "
          "rel err %.2g (tol %g)", worst, TOL);
    CHECK(worst_big <= TOL, "codebook_R_backward (V=1100: heap scratch) rel err %.2g (tol %g)",
          worst_big, TOL);
}

/* ---- speed (printed, not asserted) ---------------------------------------------------- */
static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);  /* CPU time: robust to a busy machine */
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static volatile double sink;

static void timing(void) {
    enum { K = 8, V = 97, d = 8, N = 20000, M = 2000 };
    float prm[3 * K], cl[K], dprm[3 * K] = {0}, dcl[K] = {0};
    rand_mix1(K, prm, cl);
    double acc = 0.0, t0 = now();
    for (int r = 0; r < N; r++)
        acc += mix1_backward(prm, cl, K, 0.01 * (r % 200) - 1.0, 1.0, 0.5, dprm, dcl);
    double t1 = now();
    for (int r = 0; r < N; r++)
        acc += mix1_backward(prm, cl, K, 0.01 * (r % 200) - 1.0, 1.0, 0.0, dprm, dcl);
    double t2 = now();
    printf("# mix1_backward K=%d: %.3f us/call (log p and y), %.3f us/call (log p only)\n", K,
           (t1 - t0) / N * 1e6, (t2 - t1) / N * 1e6);
    static float lg[V], mu[V * d], ls[V], dlg[V], dmu[V * d], dls[V];
    for (int k = 0; k < V; k++) {
        lg[k] = rf(rnorm());
        ls[k] = rf(-1.0 + 0.3 * rnorm());
        for (int i = 0; i < d; i++)
            mu[k * d + i] = rf(rnorm());
    }
    double z[d], gy[d], dz[d] = {0};
    for (int i = 0; i < d; i++) {
        z[i] = mu[3 * d + i] + 0.3 * rnorm();
        gy[i] = rnorm();
    }
    t0 = now();
    for (int r = 0; r < M; r++)
        mixd_backward(lg, mu, ls, V, d, z, 1.0, gy, dlg, dmu, dls, dz);
    t1 = now();
    for (int r = 0; r < M; r++)
        mixd_backward(lg, mu, ls, V, d, z, 1.0, NULL, dlg, dmu, dls, dz);
    t2 = now();
    printf("# mixd_backward V=%d d=%d: %.2f us/call with gy, %.2f us/call without\n", V, d,
           (t1 - t0) / M * 1e6, (t2 - t1) / M * 1e6);
    sink = acc + dz[0];
}

int main(void) {
    test_mix1();
    test_mixd(5, 3, 300);
    test_mixd(12, 8, 25);   /* the default model's d: the backward recursion over 8 dims */
    test_maf_case(4, 3, 5, 2, 6, 0);
    test_maf_case(3, 70, 130, 3, 300, 400); /* chunks: E, H2 > 64 */
    test_maf_case(2, 2, 3, 1, 1100, 20);    /* D > 1024: dG summed per chunk */
    test_codebook();
    CHECK(fd_unc_worst <= 1e-3, "every difference quotient resolved its component to %.2g "
          "(Ridders' estimate, relative as above)", fd_unc_worst);
    timing();
    return tap_done();
}
