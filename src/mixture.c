/* mixture.c: the normal distribution's special functions (Phi, log Phi,
 * Wichura's AS241 Phi^-1), the soft clamp, and the mixture couplings of
 * DESIGN §2.2: mix1 and affine per channel, mixd (Rosenblatt transform of the
 * codebook mixture) per token, each with its inverse. Double precision and
 * log space throughout (DESIGN §2.3).
 *
 * Tails. F and 1 - F (called G here) are each summed on their own. A first
 * pass sums them in linear space with one erfc per component (the smaller
 * tail of a component is 0.5 erfc(|r|/sqrt 2), the larger one 1 minus it);
 * when the smaller of F and G is at least LIN_MIN that result is accurate to
 * a few ulps and is used. Otherwise a second pass forms log F and log G as
 * log-sum-exps of log w_k + log Phi(+-r_k), exact down to any depth. The
 * output y inverts the smaller tail, clamped at 1e-300 only when it is
 * smaller than that. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include "internal.h"

#define SQRT1_2 0.70710678118654752440
#define LOG_1E300 (-690.77552789821370521)  /* log(1e-300): the tail clamp */
#define LIN_MIN 1e-280      /* smallest tail trusted from the linear sums */
#define EXP_UNDER (-745.2)  /* exp(t) == 0 in double below this */
#define R_ZERO 39.0         /* erfc(r/sqrt2)/2 == 0 in double for r >= 38.5 */
#define STACK_N 256         /* components handled without malloc */
#define MAX_NEWTON 100
#define MAX_WIDEN 64
#define X_TOL 1e-10         /* stop at a Newton step below this (DESIGN) */
#define G_TOL 1e-3          /* ... taken where |log tail - target| is below this */

/* ---- special functions --------------------------------------------------- */

double norm_cdf(double x) {
    return 0.5 * erfc(-x * SQRT1_2);
}

double norm_logcdf(double x) {
    if (isnan(x))
        return x;
    if (x > 0)
        return log1p(-0.5 * erfc(x * SQRT1_2));
    if (x > -30)
        return log(0.5 * erfc(-x * SQRT1_2));
    /* Mills ratio series: Phi(x) = phi(x)/|x| (1 - 1/x^2 + 3/x^4 - 15/x^6 ...);
     * at x <= -30 the terms fall below 1e-17 after eight of them. */
    double z = 1.0 / (x * x), t = 1.0, s = 0.0;
    for (int n = 1; n < 30; n++) {
        t *= -(2.0 * n - 1.0) * z;
        s += t;
        if (fabs(t) < 1e-18)
            break;
    }
    return -0.5 * x * x - log(-x) - LOG_SQRT_2PI + log1p(s);
}

/* AS241 PPND16, region |p - 0.5| <= 0.425; q = p - 0.5 */
static double ppf_central(double q) {
    double r = 0.180625 - q * q;
    return q * (((((((2.5090809287301226727e+3 * r + 3.3430575583588128105e+4) * r
                     + 6.7265770927008700853e+4) * r + 4.5921953931549871457e+4) * r
                   + 1.3731693765509461125e+4) * r + 1.9715909503065514427e+3) * r
                 + 1.3314166789178437745e+2) * r + 3.3871328727963666080e0)
           / (((((((5.2264952788528545610e+3 * r + 2.8729085735721942674e+4) * r
                   + 3.9307895800092710610e+4) * r + 2.1213794301586595867e+4) * r
                 + 5.3941960214247511077e+3) * r + 6.8718700749205790830e+2) * r
               + 4.2313330701600911252e+1) * r + 1.0);
}

/* AS241 PPND16 tails: |Phi^-1(p)| for the tail probability p, given
 * r = sqrt(-log p) (p < 0.075) */
static double ppf_tail(double r) {
    if (r <= 5.0) {
        r -= 1.6;
        return (((((((7.74545014278341407640e-4 * r + 2.27238449892691845833e-2) * r
                     + 2.41780725177450611770e-1) * r + 1.27045825245236838258e0) * r
                   + 3.64784832476320460504e0) * r + 5.76949722146069140550e0) * r
                 + 4.63033784615654529590e0) * r + 1.42343711074968357734e0)
               / (((((((1.05075007164441684324e-9 * r + 5.47593808499534494600e-4) * r
                       + 1.51986665636164571966e-2) * r + 1.48103976427480074590e-1) * r
                     + 6.89767334985100004550e-1) * r + 1.67638483018380384940e0) * r
                   + 2.05319162663775882187e0) * r + 1.0);
    }
    r -= 5.0;
    return (((((((2.01033439929228813265e-7 * r + 2.71155556874348757815e-5) * r
                 + 1.24266094738807843860e-3) * r + 2.65321895265761230930e-2) * r
               + 2.96560571828504891230e-1) * r + 1.78482653991729133580e0) * r
             + 5.46378491116411436990e0) * r + 6.65790464350110377720e0)
           / (((((((2.04426310338993978564e-15 * r + 1.42151175831644588870e-7) * r
                   + 1.84631831751005468180e-5) * r + 7.86869131145613259100e-4) * r
                 + 1.48753612908506148525e-2) * r + 1.36929880922735805310e-1) * r
               + 5.99832206555887937690e-1) * r + 1.0);
}

double norm_ppf(double p) {
    if (isnan(p))
        return p;
    if (p <= 0)
        return -INFINITY;
    if (p >= 1)
        return INFINITY;
    double q = p - 0.5;
    if (fabs(q) <= 0.425)
        return ppf_central(q);
    double v = ppf_tail(sqrt(-log(q < 0 ? p : 1.0 - p)));
    return q < 0 ? -v : v;
}

/* Phi^-1(p) for a lower-tail probability p <= 0.5 (same as norm_ppf) */
static double ppf_lower(double p) {
    if (p >= 0.075)
        return ppf_central(p - 0.5);
    if (p <= 0)
        return -INFINITY;
    return -ppf_tail(sqrt(-log(p)));
}

double soft_clamp(double v, double f) {
    double c = exp(f);
    return c * tanh(v / (c > 1.0 ? c : 1.0));
}

/* ---- a 1-D Gaussian mixture -------------------------------------------------
 * Component k: weight w[k] = exp(lw[k]) (lw normalised), mean m[k*ms],
 * standard deviation exp(lsig[k]) = 1/isig[k]. Components with w[k] == 0
 * (their lw is below about -745) add exactly nothing to a linear sum and are
 * skipped there; log-space sums keep every component. */
typedef struct {
    int K;
    const double *lw, *w;
    const float *m;
    int ms;
    const double *isig, *lsig;
} Mix;

typedef struct {
    double F, G;    /* linear tails (valid when lin) */
    double lF, lG;  /* log tails (valid when !lin) */
    int lin;
} Tails;

static void mix_tails(const Mix *mx, double x, Tails *t) {
    double F = 0.0, G = 0.0;
    for (int k = 0; k < mx->K; k++) {
        double w = mx->w[k];
        if (w == 0.0)
            continue;
        double r = (x - (double)mx->m[(size_t)k * mx->ms]) * mx->isig[k];
        /* beyond |r| = 38.5 the smaller tail is exactly 0 in double */
        double e = fabs(r) < R_ZERO ? 0.5 * erfc(fabs(r) * SQRT1_2) : 0.0;
        if (r < 0) {
            F += w * e;
            G += w * (1.0 - e);
        } else {
            F += w * (1.0 - e);
            G += w * e;
        }
    }
    t->F = F;
    t->G = G;
    if (F >= LIN_MIN && G >= LIN_MIN) {
        t->lin = 1;
        return;
    }
    /* a tail is below LIN_MIN (or NaN): log-sum-exp of the log tails */
    double mF = -INFINITY, sF = 0.0, mG = -INFINITY, sG = 0.0;
    for (int k = 0; k < mx->K; k++) {
        double r = (x - (double)mx->m[(size_t)k * mx->ms]) * mx->isig[k];
        double a = mx->lw[k] + norm_logcdf(r), b = mx->lw[k] + norm_logcdf(-r);
        if (a > mF) {
            sF = sF * exp(mF - a) + 1.0;
            mF = a;
        } else {
            sF += exp(a - mF);
        }
        if (b > mG) {
            sG = sG * exp(mG - b) + 1.0;
            mG = b;
        } else {
            sG += exp(b - mG);
        }
    }
    t->lF = mF + log(sF);
    t->lG = mG + log(sG);
    t->lin = 0;
}

/* y = Phi^-1(F) computed from the smaller tail */
static double tails_y(const Tails *t) {
    if (t->lin)
        return t->F <= t->G ? ppf_lower(t->F) : -ppf_lower(t->G);
    if (isnan(t->lF) || isnan(t->lG))
        return NAN;
    if (t->lF <= t->lG) {
        double l = t->lF < LOG_1E300 ? LOG_1E300 : t->lF;
        return -ppf_tail(sqrt(-l));
    }
    double l = t->lG < LOG_1E300 ? LOG_1E300 : t->lG;
    return ppf_tail(sqrt(-l));
}

static double tails_logF(const Tails *t) { return t->lin ? log(t->F) : t->lF; }
static double tails_logG(const Tails *t) { return t->lin ? log(t->G) : t->lG; }

/* log of the mixture density at x */
static double mix_logpdf(const Mix *mx, double x) {
    double M = -INFINITY, S = 0.0;
    for (int k = 0; k < mx->K; k++) {
        double r = (x - (double)mx->m[(size_t)k * mx->ms]) * mx->isig[k];
        double q = mx->lw[k] - mx->lsig[k] - 0.5 * r * r;
        if (q > M) {
            S = S * exp(M - q) + 1.0;
            M = q;
        } else if (q - M > EXP_UNDER) {
            S += exp(q - M);
        } else if (isnan(q)) {
            S = NAN;
        }
    }
    return M + log(S) - LOG_SQRT_2PI;
}

/* g(x) of the root finder: increasing in x, zero at the root. Lower tail
 * (y <= 0): log F(x) - log Phi(y); upper tail: log Phi(-y) - log G(x).
 * *gp = g'(x) = p(x)/F(x) or p(x)/G(x). */
static double root_g(const Mix *mx, double x, int upper, double T, double *gp) {
    Tails t;
    mix_tails(mx, x, &t);
    double lt = upper ? tails_logG(&t) : tails_logF(&t);
    if (gp)
        *gp = exp(mix_logpdf(mx, x) - lt);
    return upper ? T - lt : lt - T;
}

/* Solve Phi^-1(F(x)) = y (DESIGN §2.2 "Inverse"): safeguarded Newton on the
 * log tail, started at the mixture mean + y standard deviations, with the
 * bracket mean +- 8 sd widened by doubling when the root lies outside.
 * Bisection replaces a Newton step that would leave the bracket or that does
 * not shrink fast enough (more than half the step before last: Newton can
 * cycle between the modes of a mixture). A bracket end is evaluated only when
 * it is needed, so the usual case costs only the Newton steps. The search
 * stops at a Newton step below 1e-10, which is then taken (the error after
 * it is of the order of its square over the smallest sigma), or when the
 * bracket is a few ulps wide; a bisection step does not end it, as its error
 * is the step itself. */
static tflm_status mix_root(const Mix *mx, double y, double *xout) {
    if (!isfinite(y))
        return tflm__err(TFLM_ENUMERIC, "mixture inverse: target y is %g", y);
    double mean = 0.0, var = 0.0;
    for (int k = 0; k < mx->K; k++)
        mean += mx->w[k] * (double)mx->m[(size_t)k * mx->ms];
    for (int k = 0; k < mx->K; k++) {
        if (mx->w[k] == 0.0)
            continue;
        double dm = (double)mx->m[(size_t)k * mx->ms] - mean, s = 1.0 / mx->isig[k];
        var += mx->w[k] * (s * s + dm * dm);
    }
    double sd = sqrt(var);
    if (!isfinite(mean) || !(sd > 0) || !isfinite(sd))
        return tflm__err(TFLM_ENUMERIC, "mixture inverse: bad mixture (mean %g, sd %g)", mean, sd);
    int upper = y > 0;
    double T = norm_logcdf(upper ? -y : y);
    double wlo = 8.0 * sd, whi = 8.0 * sd;
    double lo = mean - wlo, hi = mean + whi;
    int lo_ok = 0, hi_ok = 0, widen = 0;
    double dx = INFINITY, dxold = INFINITY;
    double x = mean + sd * y;
    if (x < lo)
        x = lo;
    if (x > hi)
        x = hi;
    for (int it = 0; it < MAX_NEWTON; it++) {
        double gp, g = root_g(mx, x, upper, T, &gp);
        if (isnan(g))
            return tflm__err(TFLM_ENUMERIC, "mixture inverse: NaN at x = %g (y = %g)", x, y);
        if (g == 0) {
            *xout = x;
            return TFLM_OK;
        }
        if (g < 0) {
            lo = x;
            lo_ok = 1;
        } else {
            hi = x;
            hi_ok = 1;
        }
        double dn = g / gp, xn = x - dn;
        if (fabs(dn) < X_TOL && fabs(g) < G_TOL) {
            /* converged: a Newton step below 1e-10 near the root (the |g|
             * test rules out a tiny step on the flank of a narrow spike) */
            if (lo_ok && xn < lo)
                xn = lo;
            if (hi_ok && xn > hi)
                xn = hi;
            *xout = xn;
            return TFLM_OK;
        }
        int slow = fabs(dn) > 0.5 * dxold;
        if (slow || !(xn > lo && xn < hi)) {
            /* make sure the bracket holds the root */
            while (!lo_ok || !hi_ok) {
                if (++widen > MAX_WIDEN)
                    return tflm__err(TFLM_ENUMERIC,
                                     "mixture inverse: cannot bracket the root of y = %g", y);
                if (!lo_ok) {
                    double gl = root_g(mx, lo, upper, T, NULL);
                    if (gl <= 0) {
                        lo_ok = 1;
                    } else {
                        hi = lo;
                        hi_ok = 1;
                        wlo *= 2.0;
                        lo = mean - wlo;
                    }
                } else {
                    double gh = root_g(mx, hi, upper, T, NULL);
                    if (gh >= 0) {
                        hi_ok = 1;
                    } else {
                        lo = hi;
                        lo_ok = 1;
                        whi *= 2.0;
                        hi = mean + whi;
                    }
                }
            }
            if (slow || !(xn > lo && xn < hi))
                xn = 0.5 * (lo + hi);
        }
        dxold = dx;
        dx = fabs(xn - x);
        x = xn;
        if (dx <= 4.0 * DBL_EPSILON * fabs(x)
            || (lo_ok && hi_ok && hi - lo <= 8.0 * DBL_EPSILON * fmax(fabs(lo), fabs(hi)))) {
            /* the bracket is a few ulps wide */
            *xout = x;
            return TFLM_OK;
        }
    }
    return tflm__err(TFLM_ENUMERIC, "mixture inverse: no convergence in %d steps (y = %g)",
                     MAX_NEWTON, y);
}

/* ---- mix1 / affine ------------------------------------------------------ */

/* Fill lw, w, isig, lsig (4K doubles at buf) from the raw head outputs. */
static void mix1_setup(Mix *mx, double *buf, const float *prm, const float *clampf, int K) {
    double *lw = buf, *w = buf + K, *isig = buf + 2 * K, *lsig = buf + 3 * K;
    double amax = -INFINITY, S = 0.0;
    for (int k = 0; k < K; k++)
        if (prm[k] > amax)
            amax = prm[k];
    for (int k = 0; k < K; k++) {
        w[k] = exp((double)prm[k] - amax);
        S += w[k];
    }
    double lS = log(S);
    for (int k = 0; k < K; k++) {
        lw[k] = (double)prm[k] - amax - lS;
        w[k] /= S;
        lsig[k] = 0.5 * soft_clamp(prm[2 * K + k], clampf[k]);
        isig[k] = exp(-lsig[k]);
    }
    mx->K = K;
    mx->lw = lw;
    mx->w = w;
    mx->m = prm + K;
    mx->ms = 1;
    mx->isig = isig;
    mx->lsig = lsig;
}

double mix1_forward(const float *prm, const float *clampf, int K, double x, double *y) {
    double sbuf[4 * STACK_N], *buf = sbuf;
    if (K > STACK_N && !(buf = malloc(sizeof(double) * 4 * (size_t)K))) {
        *y = NAN;
        return NAN;
    }
    Mix mx;
    Tails t;
    mix1_setup(&mx, buf, prm, clampf, K);
    mix_tails(&mx, x, &t);
    *y = tails_y(&t);
    double lp = mix_logpdf(&mx, x);
    if (buf != sbuf)
        free(buf);
    return lp;
}

tflm_status mix1_inverse(const float *prm, const float *clampf, int K, double y, double *x,
                         double *logp) {
    double sbuf[4 * STACK_N], *buf = sbuf;
    if (K > STACK_N && !(buf = malloc(sizeof(double) * 4 * (size_t)K)))
        return tflm__err(TFLM_ENOMEM, "mix1 inverse: out of memory (K = %d)", K);
    Mix mx;
    mix1_setup(&mx, buf, prm, clampf, K);
    tflm_status st = mix_root(&mx, y, x);
    if (logp)
        *logp = st == TFLM_OK ? mix_logpdf(&mx, *x) : NAN;
    if (buf != sbuf)
        free(buf);
    return st;
}

double affine_forward(const float *prm, const float *clampf, double x, double *y) {
    double ls = 0.5 * soft_clamp(prm[2], clampf[0]);
    double r = (x - (double)prm[1]) * exp(-ls);
    *y = r;
    return -ls - 0.5 * r * r - LOG_SQRT_2PI;
}

double affine_inverse(const float *prm, const float *clampf, double y, double *x) {
    double ls = 0.5 * soft_clamp(prm[2], clampf[0]);
    *x = (double)prm[1] + exp(ls) * y;
    return -ls - 0.5 * y * y - LOG_SQRT_2PI;
}

/* ---- mixd (Rosenblatt) -------------------------------------------------- */

/* Scratch: la (log alpha), al (alpha), isig, lsig: 4V doubles. */
static void mixd_setup(Mix *mx, double *buf, const float *logits, const float *mu,
                       const float *logsig, int V, int d) {
    double *la = buf, *al = buf + V, *isig = buf + 2 * V, *lsig = buf + 3 * V;
    double lmax = -INFINITY, S = 0.0;
    for (int k = 0; k < V; k++)
        if (logits[k] > lmax)
            lmax = logits[k];
    for (int k = 0; k < V; k++) {
        double t = (double)logits[k] - lmax;
        al[k] = t > EXP_UNDER ? exp(t) : 0.0;
        S += al[k];
    }
    double lS = log(S);
    for (int k = 0; k < V; k++) {
        la[k] = (double)logits[k] - lmax - lS;
        al[k] /= S;
        lsig[k] = logsig[k];
        isig[k] = exp(-lsig[k]);
    }
    mx->K = V;
    mx->lw = la;
    mx->w = al;
    mx->m = mu;
    mx->ms = d;
    mx->isig = isig;
    mx->lsig = lsig;
}

/* Conditional log-density of z_i = x under the current alpha (the
 * returned lpc), then alpha_k <- alpha_k N(x; mu_ki, sigma_k) / exp(lpc). */
static double mixd_update(Mix *mx, double *la, double *al, double x) {
    int V = mx->K;
    double M = -INFINITY;
    for (int k = 0; k < V; k++) {
        double r = (x - (double)mx->m[(size_t)k * mx->ms]) * mx->isig[k];
        la[k] += -mx->lsig[k] - 0.5 * r * r;
        if (la[k] > M)
            M = la[k];
    }
    double S = 0.0;
    for (int k = 0; k < V; k++) {
        double t = la[k] - M;
        al[k] = t > EXP_UNDER ? exp(t) : 0.0;
        S += al[k];
    }
    double lS = log(S);
    for (int k = 0; k < V; k++) {
        la[k] -= M + lS;
        al[k] /= S;
    }
    return M + lS - LOG_SQRT_2PI;
}

double mixd_forward(const float *logits, const float *mu, const float *logsig, int V, int d,
                    const double *z, double *y, double *lpc) {
    double sbuf[4 * STACK_N], *buf = sbuf;
    if (V > STACK_N && !(buf = malloc(sizeof(double) * 4 * (size_t)V))) {
        for (int i = 0; i < d; i++) {
            y[i] = NAN;
            if (lpc)
                lpc[i] = NAN;
        }
        return NAN;
    }
    Mix mx;
    mixd_setup(&mx, buf, logits, mu, logsig, V, d);
    double *la = buf, *al = buf + V, total = 0.0;
    for (int i = 0; i < d; i++) {
        Tails t;
        mx.m = mu + i;
        mix_tails(&mx, z[i], &t);
        y[i] = tails_y(&t);
        double l = mixd_update(&mx, la, al, z[i]);
        if (lpc)
            lpc[i] = l;
        total += l;
    }
    if (buf != sbuf)
        free(buf);
    return total;
}

tflm_status mixd_inverse(const float *logits, const float *mu, const float *logsig, int V, int d,
                         const double *y, double *z, double *lpc, double *logp) {
    double sbuf[4 * STACK_N], *buf = sbuf;
    if (V > STACK_N && !(buf = malloc(sizeof(double) * 4 * (size_t)V)))
        return tflm__err(TFLM_ENOMEM, "mixd inverse: out of memory (V = %d)", V);
    Mix mx;
    mixd_setup(&mx, buf, logits, mu, logsig, V, d);
    double *la = buf, *al = buf + V, total = 0.0;
    tflm_status st = TFLM_OK;
    for (int i = 0; i < d && st == TFLM_OK; i++) {
        mx.m = mu + i;
        st = mix_root(&mx, y[i], &z[i]);
        if (st != TFLM_OK)
            break;
        double l = mixd_update(&mx, la, al, z[i]);
        if (lpc)
            lpc[i] = l;
        total += l;
    }
    if (logp)
        *logp = st == TFLM_OK ? total : NAN;
    if (buf != sbuf)
        free(buf);
    return st;
}
