/* mixture.cu: the mixture couplings of DESIGN §2.2 on the GPU, in double
 * precision and log space (DESIGN §2.3): mix1 / affine per channel and the
 * mixd Rosenblatt transform per token, forward (y and log-density) and
 * inverse (safeguarded Newton with bisection, per channel).
 *
 * This is a line-by-line port of src/mixture.c, which stays the reference:
 * the same tails (F and 1 - F summed on their own, log-space sums below
 * 1e-280, the 1e-300 clamp), the same AS241 Phi^-1, the same root finder
 * (start, bracket, widening, stopping rules). One thread per channel (mix1)
 * or per token (mixd); each thread's component arrays live in the caller's
 * scratch with a stride of n, so neighbouring threads touch neighbouring
 * words. */
#include <float.h>
#include "common.cuh"

#define SQRT1_2 0.70710678118654752440
#define LOG_SQRT_2PI 0.91893853320467274178
#define LOG_1E300 (-690.77552789821370521)
#define LIN_MIN 1e-280
#define EXP_UNDER (-745.2)
#define R_ZERO 39.0
#define MAX_NEWTON 100
#define MAX_WIDEN 64
#define X_TOL 1e-10
#define G_TOL 1e-3

/* ---- special functions ------------------------------------------------------- */

__device__ double d_norm_logcdf(double x) {
    if (isnan(x)) return x;
    if (x > 0) return log1p(-0.5 * erfc(x * SQRT1_2));
    if (x > -30) return log(0.5 * erfc(-x * SQRT1_2));
    double z = 1.0 / (x * x), t = 1.0, s = 0.0;
    for (int n = 1; n < 30; n++) {
        t *= -(2.0 * n - 1.0) * z;
        s += t;
        if (fabs(t) < 1e-18) break;
    }
    return -0.5 * x * x - log(-x) - LOG_SQRT_2PI + log1p(s);
}

__device__ double d_ppf_central(double q) {
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

__device__ double d_ppf_tail(double r) {
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

__device__ double d_ppf_lower(double p) {
    if (p >= 0.075) return d_ppf_central(p - 0.5);
    if (p <= 0) return -INFINITY;
    return -d_ppf_tail(sqrt(-log(p)));
}

__device__ double d_soft_clamp(double v, double f) {
    double c = exp(f);
    return c * tanh(v / (c > 1.0 ? c : 1.0));
}

/* ---- a 1-D Gaussian mixture (mixture.c's Mix, with strided arrays) --------- */
struct Mix {
    int K;
    const double *lw, *w;       /* [k * st] */
    const float *m;             /* [k * ms] */
    int ms;
    const double *isig, *lsig;  /* [k * st] */
    size_t st;
};

struct Tails {
    double F, G, lF, lG;
    int lin;
};

__device__ void mix_tails(const Mix &mx, double x, Tails *t) {
    double F = 0.0, G = 0.0;
    for (int k = 0; k < mx.K; k++) {
        double w = mx.w[k * mx.st];
        if (w == 0.0) continue;
        double r = (x - (double)mx.m[(size_t)k * mx.ms]) * mx.isig[k * mx.st];
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
    double mF = -INFINITY, sF = 0.0, mG = -INFINITY, sG = 0.0;
    for (int k = 0; k < mx.K; k++) {
        double r = (x - (double)mx.m[(size_t)k * mx.ms]) * mx.isig[k * mx.st];
        double lw = mx.lw[k * mx.st];
        double a = lw + d_norm_logcdf(r), b = lw + d_norm_logcdf(-r);
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

__device__ double tails_y(const Tails *t) {
    if (t->lin) return t->F <= t->G ? d_ppf_lower(t->F) : -d_ppf_lower(t->G);
    if (isnan(t->lF) || isnan(t->lG)) return NAN;
    if (t->lF <= t->lG) {
        double l = t->lF < LOG_1E300 ? LOG_1E300 : t->lF;
        return -d_ppf_tail(sqrt(-l));
    }
    double l = t->lG < LOG_1E300 ? LOG_1E300 : t->lG;
    return d_ppf_tail(sqrt(-l));
}

__device__ double mix_logpdf(const Mix &mx, double x) {
    double M = -INFINITY, S = 0.0;
    for (int k = 0; k < mx.K; k++) {
        double r = (x - (double)mx.m[(size_t)k * mx.ms]) * mx.isig[k * mx.st];
        double q = mx.lw[k * mx.st] - mx.lsig[k * mx.st] - 0.5 * r * r;
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

__device__ double root_g(const Mix &mx, double x, int upper, double T, double *gp) {
    Tails t;
    mix_tails(mx, x, &t);
    double lt = upper ? (t.lin ? log(t.G) : t.lG) : (t.lin ? log(t.F) : t.lF);
    if (gp) *gp = exp(mix_logpdf(mx, x) - lt);
    return upper ? T - lt : lt - T;
}

/* mixture.c's mix_root: returns a TCU_* status */
__device__ int mix_root(const Mix &mx, double y, double *xout) {
    if (!isfinite(y)) return TCU_E_TARGET;
    double mean = 0.0, var = 0.0;
    for (int k = 0; k < mx.K; k++) mean += mx.w[k * mx.st] * (double)mx.m[(size_t)k * mx.ms];
    for (int k = 0; k < mx.K; k++) {
        double w = mx.w[k * mx.st];
        if (w == 0.0) continue;
        double dm = (double)mx.m[(size_t)k * mx.ms] - mean, s = 1.0 / mx.isig[k * mx.st];
        var += w * (s * s + dm * dm);
    }
    double sd = sqrt(var);
    if (!isfinite(mean) || !(sd > 0) || !isfinite(sd)) return TCU_E_MIXTURE;
    int upper = y > 0;
    double T = d_norm_logcdf(upper ? -y : y);
    double wlo = 8.0 * sd, whi = 8.0 * sd;
    double lo = mean - wlo, hi = mean + whi;
    int lo_ok = 0, hi_ok = 0, widen = 0;
    double dx = INFINITY, dxold = INFINITY;
    double x = mean + sd * y;
    if (x < lo) x = lo;
    if (x > hi) x = hi;
    for (int it = 0; it < MAX_NEWTON; it++) {
        double gp, g = root_g(mx, x, upper, T, &gp);
        if (isnan(g)) return TCU_E_NAN;
        if (g == 0) {
            *xout = x;
            return TCU_OK;
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
            if (lo_ok && xn < lo) xn = lo;
            if (hi_ok && xn > hi) xn = hi;
            *xout = xn;
            return TCU_OK;
        }
        int slow = fabs(dn) > 0.5 * dxold;
        if (slow || !(xn > lo && xn < hi)) {
            while (!lo_ok || !hi_ok) {
                if (++widen > MAX_WIDEN) return TCU_E_BRACKET;
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
            if (slow || !(xn > lo && xn < hi)) xn = 0.5 * (lo + hi);
        }
        dxold = dx;
        dx = fabs(xn - x);
        x = xn;
        if (dx <= 4.0 * DBL_EPSILON * fabs(x)
            || (lo_ok && hi_ok && hi - lo <= 8.0 * DBL_EPSILON * fmax(fabs(lo), fabs(hi)))) {
            *xout = x;
            return TCU_OK;
        }
    }
    return TCU_E_CONVERGE;
}

/* ---- mix1 / affine -------------------------------------------------------------- */

extern "C" size_t tcu_mix1_scratch(int n, int K) {
    return (size_t)4 * K * (n > 0 ? n : 0);
}

/* mixture.c's mix1_setup; thread r's arrays at buf + (a K + k) n + r */
__device__ void mix1_setup(Mix *mx, double *buf, size_t n, const float *prm, const float *clampf,
                           int K) {
    double *lw = buf, *w = buf + (size_t)K * n, *isig = buf + (size_t)2 * K * n,
           *lsig = buf + (size_t)3 * K * n;
    double amax = -INFINITY, S = 0.0;
    for (int k = 0; k < K; k++)
        if (prm[k] > amax) amax = prm[k];
    for (int k = 0; k < K; k++) {
        double e = exp((double)prm[k] - amax);
        w[k * n] = e;
        S += e;
    }
    double lS = log(S);
    for (int k = 0; k < K; k++) {
        lw[k * n] = (double)prm[k] - amax - lS;
        w[k * n] /= S;
        double ls = 0.5 * d_soft_clamp(prm[2 * K + k], clampf[k]);
        lsig[k * n] = ls;
        isig[k * n] = exp(-ls);
    }
    mx->K = K;
    mx->lw = lw;
    mx->w = w;
    mx->m = prm + K;
    mx->ms = 1;
    mx->isig = isig;
    mx->lsig = lsig;
    mx->st = n;
}

__global__ void k_mix1_forward(const float *prm, const float *clampf, int n, int c, int K,
                               int affine, const double *x, double *y, double *logp,
                               double *scratch) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= n) return;
    const float *p = prm + (size_t)r * 3 * K, *cf = clampf + (size_t)(r % c) * K;
    double xr = x[r];
    if (affine) {
        double ls = 0.5 * d_soft_clamp(p[2], cf[0]);
        double z = (xr - (double)p[1]) * exp(-ls);
        y[r] = z;
        logp[r] = -ls - 0.5 * z * z - LOG_SQRT_2PI;
        return;
    }
    Mix mx;
    Tails t;
    mix1_setup(&mx, scratch + r, (size_t)n, p, cf, K);
    mix_tails(mx, xr, &t);
    y[r] = tails_y(&t);
    logp[r] = mix_logpdf(mx, xr);
}

__global__ void k_mix1_inverse(const float *prm, const float *clampf, int n, int c, int K,
                               int affine, const double *y, double *x, double *logp, int *status,
                               double *scratch) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= n) return;
    const float *p = prm + (size_t)r * 3 * K, *cf = clampf + (size_t)(r % c) * K;
    double yr = y[r];
    if (affine) {
        double ls = 0.5 * d_soft_clamp(p[2], cf[0]);
        x[r] = (double)p[1] + exp(ls) * yr;
        if (logp) logp[r] = -ls - 0.5 * yr * yr - LOG_SQRT_2PI;
        status[r] = TCU_OK;
        return;
    }
    Mix mx;
    mix1_setup(&mx, scratch + r, (size_t)n, p, cf, K);
    double xr = NAN;
    int st = mix_root(mx, yr, &xr);
    x[r] = xr;
    if (logp) logp[r] = st == TCU_OK ? mix_logpdf(mx, xr) : NAN;
    status[r] = st;
}

extern "C" int tcu_mix1_forward(cudaStream_t s, const float *prm, const float *clampf, int n,
                                int c, int K, int affine, const double *x, double *y, double *logp,
                                double *scratch) {
    if (n <= 0) return 0;
    k_mix1_forward<<<tcu_blocks(n, 128), 128, 0, s>>>(prm, clampf, n, c, K, affine, x, y, logp,
                                                     scratch);
    return tcu_launch_status();
}

extern "C" int tcu_mix1_inverse(cudaStream_t s, const float *prm, const float *clampf, int n,
                                int c, int K, int affine, const double *y, double *x, double *logp,
                                int *status, double *scratch) {
    if (n <= 0) return 0;
    k_mix1_inverse<<<tcu_blocks(n, 128), 128, 0, s>>>(prm, clampf, n, c, K, affine, y, x, logp,
                                                     status, scratch);
    return tcu_launch_status();
}

/* ---- mixd (Rosenblatt) -------------------------------------------------------- */

extern "C" size_t tcu_mixd_scratch(int n, int V) {
    return (size_t)4 * V * (n > 0 ? n : 0);
}

/* mixture.c's mixd_setup: la, al, isig, lsig, thread r's at buf + (a V + k) n + r */
__device__ void mixd_setup(Mix *mx, double *buf, size_t n, const float *logits, const float *mu,
                           const float *logsig, int V, int d) {
    double *la = buf, *al = buf + (size_t)V * n, *isig = buf + (size_t)2 * V * n,
           *lsig = buf + (size_t)3 * V * n;
    double lmax = -INFINITY, S = 0.0;
    for (int k = 0; k < V; k++)
        if (logits[k] > lmax) lmax = logits[k];
    for (int k = 0; k < V; k++) {
        double t = (double)logits[k] - lmax;
        double a = t > EXP_UNDER ? exp(t) : 0.0;
        al[k * n] = a;
        S += a;
    }
    double lS = log(S);
    for (int k = 0; k < V; k++) {
        la[k * n] = (double)logits[k] - lmax - lS;
        al[k * n] /= S;
        lsig[k * n] = logsig[k];
        isig[k * n] = exp(-(double)logsig[k]);
    }
    mx->K = V;
    mx->lw = la;
    mx->w = al;
    mx->m = mu;
    mx->ms = d;
    mx->isig = isig;
    mx->lsig = lsig;
    mx->st = n;
}

/* mixture.c's mixd_update: log-density of z_i = x under alpha, then the
 * posterior update of alpha */
__device__ double mixd_update(const Mix &mx, double *la, double *al, double x) {
    int V = mx.K;
    size_t st = mx.st;
    double M = -INFINITY;
    for (int k = 0; k < V; k++) {
        double r = (x - (double)mx.m[(size_t)k * mx.ms]) * mx.isig[k * st];
        double v = la[k * st] + (-mx.lsig[k * st] - 0.5 * r * r);
        la[k * st] = v;
        if (v > M) M = v;
    }
    double S = 0.0;
    for (int k = 0; k < V; k++) {
        double t = la[k * st] - M;
        double a = t > EXP_UNDER ? exp(t) : 0.0;
        al[k * st] = a;
        S += a;
    }
    double lS = log(S);
    for (int k = 0; k < V; k++) {
        la[k * st] -= M + lS;
        al[k * st] /= S;
    }
    return M + lS - LOG_SQRT_2PI;
}

__global__ void k_mixd_forward(const float *logits, const float *mu, const float *logsig, int n,
                               int V, int d, const double *z, double *y, double *lpc, double *logp,
                               double *scratch) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= n) return;
    Mix mx;
    mixd_setup(&mx, scratch + r, (size_t)n, logits + (size_t)r * V, mu, logsig, V, d);
    double *la = (double *)mx.lw, *al = (double *)mx.w, total = 0.0;
    for (int i = 0; i < d; i++) {
        Tails t;
        double zi = z[(size_t)r * d + i];
        mx.m = mu + i;
        mix_tails(mx, zi, &t);
        y[(size_t)r * d + i] = tails_y(&t);
        double l = mixd_update(mx, la, al, zi);
        if (lpc) lpc[(size_t)r * d + i] = l;
        total += l;
    }
    logp[r] = total;
}

__global__ void k_mixd_inverse(const float *logits, const float *mu, const float *logsig, int n,
                               int V, int d, const double *y, double *z, double *lpc, double *logp,
                               int *status, double *scratch) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= n) return;
    Mix mx;
    mixd_setup(&mx, scratch + r, (size_t)n, logits + (size_t)r * V, mu, logsig, V, d);
    double *la = (double *)mx.lw, *al = (double *)mx.w, total = 0.0;
    int st = TCU_OK;
    for (int i = 0; i < d; i++) {
        double zi = NAN;
        mx.m = mu + i;
        st = mix_root(mx, y[(size_t)r * d + i], &zi);
        z[(size_t)r * d + i] = zi;
        if (st != TCU_OK) break;
        double l = mixd_update(mx, la, al, zi);
        if (lpc) lpc[(size_t)r * d + i] = l;
        total += l;
    }
    if (logp) logp[r] = st == TCU_OK ? total : NAN;
    status[r] = st;
}

extern "C" int tcu_mixd_forward(cudaStream_t s, const float *logits, const float *mu,
                                const float *logsig, int n, int V, int d, const double *z,
                                double *y, double *lpc, double *logp, double *scratch) {
    if (n <= 0) return 0;
    k_mixd_forward<<<tcu_blocks(n, 64), 64, 0, s>>>(logits, mu, logsig, n, V, d, z, y, lpc, logp,
                                                   scratch);
    return tcu_launch_status();
}

extern "C" int tcu_mixd_inverse(cudaStream_t s, const float *logits, const float *mu,
                                const float *logsig, int n, int V, int d, const double *y,
                                double *z, double *lpc, double *logp, int *status,
                                double *scratch) {
    if (n <= 0) return 0;
    k_mixd_inverse<<<tcu_blocks(n, 64), 64, 0, s>>>(logits, mu, logsig, n, V, d, y, z, lpc, logp,
                                                   status, scratch);
    return tcu_launch_status();
}
