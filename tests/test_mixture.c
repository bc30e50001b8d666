/* tests/test_mixture.c: the normal special functions, the mix1 / affine /
 * mixd couplings and their inverses (src/mixture.c), and the maf head
 * (src/maf.c). Reference constants were computed with mpmath at 50 digits
 * from the exact double inputs. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "internal.h"
#include "tap.h"

/* ---- a small deterministic generator (splitmix64) ---------------------------- */
static uint64_t rs = 0x9E3779B97F4A7C15ull;
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

static double relerr(double a, double b) {
    if (a == b)
        return 0.0;
    return fabs(a - b) / fmax(fabs(b), DBL_MIN);
}

/* ---- special functions ------------------------------------------------------- */
static void test_special(void) {
    static const double ppf_ref[][2] = {
        {0.975, 1.9599639845400538556},       {0.025, -1.95996398454005421178},
        {1e-300, -37.0470962993611992365},    {1e-10, -6.3613409024040561991},
        {0.3, -0.524400512708040815969},      {0.9, 1.28155156554460059349},
        {1e-100, -21.2734535609653242942},    {0.999, 3.09023230616781327776},
        {1e-20, -9.26234008979840757957},     {0.07, -1.47579102817917068561},
        {0.08, -1.40507156030963254475},      {0.0749, -1.44023826752796366311},
        {0.4, -0.253347103135799741325},      {5e-324, -38.4674056171443462508},
    };
    double worst = 0.0;
    for (size_t t = 0; t < sizeof ppf_ref / sizeof ppf_ref[0]; t++) {
        double e = relerr(norm_ppf(ppf_ref[t][0]), ppf_ref[t][1]);
        if (e > worst)
            worst = e;
        if (e > 1e-15)
            printf("# norm_ppf(%g) = %.17g, want %.17g\n", ppf_ref[t][0],
                   norm_ppf(ppf_ref[t][0]), ppf_ref[t][1]);
    }
    CHECK(worst <= 1e-15, "norm_ppf matches 50-digit values to 1e-15 relative (worst %.2g)", worst);
    CHECK(norm_ppf(0.5) == 0.0, "norm_ppf(0.5) = 0");
    CHECK(isinf(norm_ppf(0.0)) && norm_ppf(0.0) < 0 && isinf(norm_ppf(-1.0)) && norm_ppf(-1) < 0,
          "norm_ppf(p <= 0) = -inf");
    CHECK(isinf(norm_ppf(1.0)) && norm_ppf(1.0) > 0 && isinf(norm_ppf(2.0)),
          "norm_ppf(p >= 1) = +inf");
    CHECK(isnan(norm_ppf(NAN)), "norm_ppf(NaN) = NaN");

    /* Round trip through the lower tail. Phi(x) = erfc(-x/sqrt2)/2 has a
     * relative error of about x^2 eps (the rounded argument), which Phi^-1
     * turns into an absolute error of about |x| eps: allow 4 |x| eps. */
    double rt = 0.0;
    for (int t = 0; t <= 4000; t++) {
        double x = -37.0 + 37.0 * t / 4000.0;
        double e = fabs(norm_ppf(norm_cdf(x)) - x) / fmax(1.0, fabs(x));
        if (e > rt)
            rt = e;
    }
    CHECK(rt <= 4 * DBL_EPSILON, "norm_ppf(norm_cdf(x)) = x on [-37, 0] (worst %.2g rel)", rt);
    CHECK(norm_cdf(0.0) == 0.5 && fabs(norm_cdf(1.959963984540054) - 0.975) < 1e-16,
          "norm_cdf(0) = 0.5, norm_cdf(1.959963984540054) = 0.975");
    CHECK_NEAR(norm_cdf(-37.0) / 5.7255712225239767e-300, 1.0, 2e-13,
               "norm_cdf(-37) relative to 50-digit value");

    static const double lc_ref[][2] = {
        {-100000.0, -5000000012.43186399827}, {-1000.0, -500007.82669481218431},
        {-40.0, -804.608442013753788167},     {-37.0, -689.030585576890593601},
        {-30.0, -454.321243956343197107},     {-20.0, -203.917155371097263937},
        {-5.0, -15.0649983939887257361},      {-1.0, -1.84102164500926350577},
        {0.0, -0.693147180559945309417},      {1.0, -0.172753779023449889526},
        {3.0, -0.00135080996474819379884},    {10.0, -7.61985302416052606597e-24},
    };
    worst = 0.0;
    for (size_t t = 0; t < sizeof lc_ref / sizeof lc_ref[0]; t++) {
        /* for x > 0, log Phi(x) ~ -Phi(-x) inherits erfc's relative error
         * from its rounded argument x/sqrt2, about x^2 eps */
        double x = lc_ref[t][0];
        double e = relerr(norm_logcdf(x), lc_ref[t][1])
                   / ((4.0 + (x > 0 ? x * x : 0)) * DBL_EPSILON);
        if (e > worst)
            worst = e;
        if (e > 1.0)
            printf("# norm_logcdf(%g) = %.17g, want %.17g\n", lc_ref[t][0],
                   norm_logcdf(lc_ref[t][0]), lc_ref[t][1]);
    }
    CHECK(worst <= 1.0, "norm_logcdf matches 50-digit values (incl. x = -40, -1000, -1e5) "
          "within (4 + x^2 [x > 0]) eps relative (worst %.2g of that)", worst);
    /* against log Phi where Phi is representable: the lower tail via log,
     * the upper via log1p(-Phi(-x)); errors of Phi are ~x^2 eps relative,
     * i.e. absolute in the log */
    worst = 0.0;
    for (int t = 0; t <= 6000; t++) {
        double x = -37.5 + 45.0 * t / 6000.0;
        double ref = x <= 0 ? log(norm_cdf(x)) : log1p(-norm_cdf(-x));
        double e = fabs(norm_logcdf(x) - ref) / (fabs(ref) * 4 * DBL_EPSILON + x * x * DBL_EPSILON);
        if (e > worst)
            worst = e;
    }
    CHECK(worst <= 1.0, "norm_logcdf = log norm_cdf on [-37.5, 7.5] within 4 eps rel + x^2 eps");
    /* the asymptotic branch joins the erfc branch at x = -30 */
    CHECK_NEAR(norm_logcdf(-30.0 - 1e-9), norm_logcdf(-30.0 + 1e-9) - 2 * 1e-9 * 30.0333, 1e-11,
               "norm_logcdf continuous at -30 (slope ~ 30.03)");
    CHECK(isfinite(norm_logcdf(-1e150)) && norm_logcdf(-1e150) < -1e299,
          "norm_logcdf(-1e150) finite");
    CHECK(norm_logcdf(-INFINITY) == -INFINITY && norm_logcdf(INFINITY) == 0.0,
          "norm_logcdf(-inf) = -inf, (+inf) = 0");

    /* soft clamp */
    CHECK_NEAR(soft_clamp(0.7, 0.0), tanh(0.7), 4e-16, "soft_clamp(v, 0) = tanh(v)");
    CHECK_NEAR(soft_clamp(3.0, log(5.0)), 5.0 * tanh(3.0 / 5.0), 1e-14,
               "soft_clamp(3, log 5) = 5 tanh(3/5)");
    CHECK_NEAR(soft_clamp(2.0, log(0.5)), 0.5 * tanh(2.0), 1e-15,
               "soft_clamp(2, log 0.5) = 0.5 tanh(2) (max(c,1) = 1)");
    CHECK(soft_clamp(1e6, 1.0) <= exp(1.0) && soft_clamp(-1e6, 1.0) >= -exp(1.0),
          "soft_clamp bounded by e^f");
}

/* ---- mix1 / affine ----------------------------------------------------------- */

/* random raw head outputs of one channel */
static void rand_mix1(int K, float *prm, float *cl) {
    static const double fs[] = {0.0, 0.0, 1.0, 2.302585093 /* c=10: sigma >= e^-5 */,
                                3.0 /* c=20: sigma >= e^-9.7 */};
    double mscale = (double[]){0.05, 0.5, 1.0, 3.0}[rint_(4)];
    double f = fs[rint_(5)];
    for (int k = 0; k < K; k++) {
        prm[k] = (float)(1.5 * rnorm());
        prm[K + k] = (float)(mscale * rnorm());
        prm[2 * K + k] = (float)(f > 1.5 ? -exp(f) * runif() * 2.0 : 2.0 * rnorm());
        cl[k] = (float)f;
    }
}

static void mix1_params(const float *prm, const float *cl, int K, double *w, double *sig) {
    double amax = -INFINITY, S = 0;
    for (int k = 0; k < K; k++)
        amax = fmax(amax, prm[k]);
    for (int k = 0; k < K; k++)
        S += (w[k] = exp(prm[k] - amax));
    for (int k = 0; k < K; k++) {
        w[k] /= S;
        sig[k] = exp(0.5 * soft_clamp(prm[2 * K + k], cl[k]));
    }
}

static double lognorm(double y) { return -0.5 * y * y - LOG_SQRT_2PI; }

/* Backward error of an inverse, in units of what double precision allows:
 * y' = y(x') may differ from y by rounding (1e-12 (1 + |y|) covers Phi,
 * Phi^-1 and the sums) plus a few ulps of x' times dy/dx = p(x')/phi(y)
 * (large for narrow components far from 0: sigma 6e-5 at |x| = 8 makes one
 * ulp of x worth 3e-11 in y). */
static double yback(double y, double y2, double x2, double lp2) {
    return fabs(y2 - y) / (1e-12 * (1.0 + fabs(y))
                           + 16.0 * DBL_EPSILON * fmax(1.0, fabs(x2)) * exp(lp2 - lognorm(y)));
}

static void test_mix1(void) {
    enum { NSET = 3000 };
    static const int Ks[] = {1, 2, 3, 4, 8, 16};
    float prm[48], cl[16];
    double w[16], sig[16];
    double max_dx = 0, max_dy = 0, max_lp = 0, max_fd = 0, max_dx_tail = 0, max_y = 0;
    int fails = 0, n_rt = 0, n_tail = 0, n_fd = 0, n_clamped = 0, n_ill = 0;
    double max_back = 0;
    double dx_scaled = 0;
    for (int s = 0; s < NSET; s++) {
        int K = Ks[rint_(6)];
        rand_mix1(K, prm, cl);
        mix1_params(prm, cl, K, w, sig);
        double smin = INFINITY;
        for (int k = 0; k < K; k++)
            smin = fmin(smin, sig[k]);
        for (int t = 0; t < 12; t++) {
            double x;
            int tail = t >= 8;
            if (!tail) { /* from the mixture, some of it 3 sd out */
                double u = runif(), c = 0;
                int k = 0;
                for (; k < K - 1; k++)
                    if ((c += w[k]) > u)
                        break;
                x = prm[K + k] + sig[k] * rnorm() * (t < 4 ? 1.0 : 3.0);
            } else { /* far tails: at least u sd beyond every component */
                double u = 38.0 * runif();
                x = t & 1 ? INFINITY : -INFINITY;
                for (int k = 0; k < K; k++)
                    x = t & 1 ? fmin(x, prm[K + k] - u * sig[k]) : fmax(x, prm[K + k] + u * sig[k]);
            }
            double y, x2, lp2;
            double lp = mix1_forward(prm, cl, K, x, &y);
            if (fabs(y) >= 37.04) {
                n_clamped++;
                continue;
            }
            tflm_status st = mix1_inverse(prm, cl, K, y, &x2, &lp2);
            if (st != TFLM_OK) {
                fails++;
                printf("# inverse failed: %s\n", tflm_last_error());
                continue;
            }
            double dx = fabs(x2 - x), y2;
            /* Conditioning: the root finder matches log F (or log(1-F)) to
             * its rounding, ~eps |log F|, which moves x by kappa eps with
             * kappa = F |log F| / p(x). Inside the mixture and in the far
             * tails kappa is about sigma (times |y| in the tails); between
             * narrow components p can be e^-700 while F is 0.3, and there x
             * is not determined by y in double precision at all. Such points
             * are checked for the backward error |y(x') - y| instead. */
            double ltail = norm_logcdf(-fabs(y));
            double kappa = exp(ltail - lp) * fmax(1.0, fabs(ltail));
            double lpx2 = mix1_forward(prm, cl, K, x2, &y2);
            max_back = fmax(max_back, yback(y, y2, x2, lp2));
            max_lp = fmax(max_lp, fabs(lpx2 - lp2) / fmax(1.0, fabs(lp2)));
            if (kappa > 1e5) {
                n_ill++;
                continue;
            }
            if (tail) {
                n_tail++;
                max_dx_tail = fmax(max_dx_tail, dx);
            } else {
                n_rt++;
            }
            max_dx = fmax(max_dx, dx);
            dx_scaled = fmax(dx_scaled, dx / smin);
            max_y = fmax(max_y, fabs(y));
            /* log-det vs finite differences (5-point, h = 1e-3 of the
             * smallest sigma: truncation ~ (h/sigma)^4, rounding ~ eps/h) */
            if (!tail && t % 2 == 0 && fabs(y) < 30) {
                double h = 1e-3 * smin, yp1, ym1, yp2, ym2;
                mix1_forward(prm, cl, K, x + h, &yp1);
                mix1_forward(prm, cl, K, x - h, &ym1);
                mix1_forward(prm, cl, K, x + 2 * h, &yp2);
                mix1_forward(prm, cl, K, x - 2 * h, &ym2);
                double fd = (8 * (yp1 - ym1) - (yp2 - ym2)) / (12 * h);
                double an = exp(lp - lognorm(y));
                /* only where the map is not nearly flat at the scale h
                 * (dy/dx * sigma_min below 1e-3: then rounding of y
                 * dominates the difference quotient) */
                if (an * smin > 1e-3) {
                    n_fd++;
                    max_fd = fmax(max_fd, fabs(fd - an) / an);
                }
            }
        }
        /* y -> x -> y over the whole range (|y| <= 37) */
        for (int t = 0; t < 6; t++) {
            double y = t < 3 ? rnorm() : (runif() * 2 - 1) * 37.0, x, y2, lp;
            if (mix1_inverse(prm, cl, K, y, &x, &lp) != TFLM_OK) {
                fails++;
                printf("# inverse failed: %s\n", tflm_last_error());
                continue;
            }
            double lpf = mix1_forward(prm, cl, K, x, &y2);
            max_dy = fmax(max_dy, yback(y, y2, x, lpf));
            max_lp = fmax(max_lp, fabs(lpf - lp) / fmax(1.0, fabs(lp)));
        }
    }
    CHECK(fails == 0, "mix1_inverse converged in all cases (%d failures)", fails);
    printf("# mix1 round trips: %d from the mixture, %d in the far tails (max |y| %.2f), "
           "%d skipped as clamped (|y| > 37.04), %d ill-conditioned (kappa > 1e5)\n",
           n_rt, n_tail, max_y, n_clamped, n_ill);
    /* Newton stops at a step below 1e-10 and converges quadratically, so the
     * remaining error is the conditioning of x given the rounded tail:
     * eps |log F| F/p(x), about eps * 37 * sigma in the far tails and
     * eps * sigma inside the mixture: far below 1e-9 for sigmas <= e^5. */
    CHECK(max_dx <= 1e-9, "mix1 x -> y -> x round trip where kappa <= 1e5: max |x - x'| = %.3g "
          "(<= 1e-9; tails %.3g; max |x - x'|/sigma_min %.3g)", max_dx, max_dx_tail, dx_scaled);
    CHECK(max_back <= 1.0, "mix1 x -> y -> x' everywhere: y(x') = y within rounding "
          "(1e-12 (1+|y|) + 16 ulp(x') dy/dx; worst %.3g of that)", max_back);
    CHECK(max_y > 36.0, "round trips reached |y| > 36 (max %.3f)", max_y);
    /* y -> x -> y: the forward map is well conditioned at the solved x
     * (dy = p/phi(y) dx, dx ~ eps F/p), up to the resolution of x itself */
    CHECK(max_dy <= 1.0, "mix1 y -> x -> y round trip for |y| <= 37 within rounding "
          "(1e-12 (1+|y|) + 16 ulp(x) dy/dx; worst %.3g of that)", max_dy);
    CHECK(max_lp <= 1e-12, "inverse's log p equals forward's at the same x (max rel diff %.3g)",
          max_lp);
    CHECK(n_fd > 1000 && max_fd <= 1e-6,
          "dy/dx by finite differences = exp(log p - log N(y)) to 1e-6 rel (%d points, worst %.3g)",
          n_fd, max_fd);

    /* affine == mix1 with K = 1 */
    double ay = 0, alp = 0, ax = 0;
    for (int s = 0; s < 2000; s++) {
        float p3[3], c1;
        rand_mix1(1, p3, &c1);
        double sg = exp(0.5 * soft_clamp(p3[2], c1));
        double x = p3[1] + sg * (runif() * 2 - 1) * 36.5, ya, ym, xa;
        double la = affine_forward(p3, &c1, x, &ya);
        double lm = mix1_forward(p3, &c1, 1, x, &ym);
        ay = fmax(ay, fabs(ya - ym));
        alp = fmax(alp, fabs(la - lm) / fmax(1.0, fabs(la)));
        double lai = affine_inverse(p3, &c1, ya, &xa);
        ax = fmax(ax, fabs(xa - x) / sg);
        alp = fmax(alp, fabs(lai - la) / fmax(1.0, fabs(la)));
    }
    CHECK(ay <= 1e-12, "affine y equals mix1 (K = 1) y for |y| <= 36.5 (max diff %.3g)", ay);
    CHECK(alp <= 1e-12, "affine log p equals mix1 (K = 1) log p (max rel diff %.3g)", alp);
    CHECK(ax <= 1e-13, "affine_inverse inverts affine_forward (max |dx|/sigma %.3g)", ax);

    /* the inverse reports a non-finite target */
    {
        float p3[3] = {0, 0, 0}, c1 = 0;
        double x, lp;
        CHECK(mix1_inverse(p3, &c1, 1, INFINITY, &x, &lp) == TFLM_ENUMERIC
              && strlen(tflm_last_error()) > 0, "mix1_inverse(y = inf) -> TFLM_ENUMERIC (%s)",
              tflm_last_error());
        CHECK(mix1_inverse(p3, &c1, 1, NAN, &x, &lp) == TFLM_ENUMERIC,
              "mix1_inverse(y = NaN) -> TFLM_ENUMERIC");
    }
    /* a standard normal: the identity */
    {
        float p3[3] = {0, 0, 0}, c1 = 0;
        double y, x;
        double lp = mix1_forward(p3, &c1, 1, 1.25, &y);
        CHECK_NEAR(y, 1.25, 1e-15, "N(0,1) mixture is the identity");
        CHECK_NEAR(lp, lognorm(1.25), 1e-15, "N(0,1) log p");
        mix1_inverse(p3, &c1, 1, -36.9, &x, &lp);
        CHECK_NEAR(x, -36.9, 1e-13, "N(0,1) inverse at y = -36.9");
    }
}

/* ---- mixd -------------------------------------------------------------------- */

/* log sum_k pi_k N(z; mu_k, e^{2 s_k} I), directly */
static double mixd_direct(const float *lg, const float *mu, const float *ls, int V, int d,
                          const double *z) {
    double lmax = -INFINITY, S = 0, M = -INFINITY, T = 0;
    for (int k = 0; k < V; k++)
        lmax = fmax(lmax, lg[k]);
    for (int k = 0; k < V; k++)
        S += exp(lg[k] - lmax);
    double *q = malloc(sizeof(double) * V);
    for (int k = 0; k < V; k++) {
        double r2 = 0;
        for (int i = 0; i < d; i++) {
            double r = (z[i] - mu[k * d + i]) * exp(-(double)ls[k]);
            r2 += r * r;
        }
        q[k] = lg[k] - lmax - log(S) - d * (double)ls[k] - 0.5 * r2 - d * LOG_SQRT_2PI;
        M = fmax(M, q[k]);
    }
    for (int k = 0; k < V; k++)
        T += exp(q[k] - M);
    free(q);
    return M + log(T);
}

/* the joint density of a V-component 2-D mixture */
static double joint2(const float *lg, const float *mu, const float *ls, int V, double a, double b) {
    double z[2] = {a, b};
    return exp(mixd_direct(lg, mu, ls, V, 2, z));
}

/* Simpson's rule of f over [lo, hi] with n (even) intervals */
static double simpson_joint(const float *lg, const float *mu, const float *ls, int V, int which,
                            double fixed, double lo, double hi, int n) {
    double h = (hi - lo) / n, s = 0;
    for (int t = 0; t <= n; t++) {
        double u = lo + t * h;
        double f = which == 0 ? 0 : joint2(lg, mu, ls, V, fixed, u);
        if (which == 0) { /* marginal of z_1: sum_k pi_k N(u; mu_k1, sigma_k) */
            double lmax = -INFINITY, S = 0;
            for (int k = 0; k < V; k++)
                lmax = fmax(lmax, lg[k]);
            for (int k = 0; k < V; k++)
                S += exp(lg[k] - lmax);
            for (int k = 0; k < V; k++) {
                double sg = exp((double)ls[k]), r = (u - mu[k * 2]) / sg;
                f += exp(lg[k] - lmax) / S * exp(-0.5 * r * r) / (sg * 2.5066282746310002);
            }
        }
        s += f * (t == 0 || t == n ? 1 : t % 2 ? 4 : 2);
    }
    return s * h / 3;
}

static void test_mixd(void) {
    /* V = 2, d = 2 against the direct formula and numerical integration */
    double max_lp = 0, max_F1 = 0, max_F2 = 0, max_rt = 0, max_sum = 0, max_lpc = 0;
    for (int s = 0; s < 40; s++) {
        float lg[2], mu[4], ls[2];
        for (int k = 0; k < 2; k++) {
            lg[k] = (float)(2 * rnorm());
            ls[k] = (float)(-1.5 + runif() * 1.5);
            mu[2 * k] = (float)rnorm();
            mu[2 * k + 1] = (float)rnorm();
        }
        int k = rint_(2);
        double z[2], y[2], lpc[2], z2[2], lpc2[2], lp2;
        for (int i = 0; i < 2; i++)
            z[i] = mu[2 * k + i] + exp(ls[k]) * rnorm() * (s % 3 == 0 ? 2.5 : 1.0);
        double lp = mixd_forward(lg, mu, ls, 2, 2, z, y, lpc);
        max_lp = fmax(max_lp, fabs(lp - mixd_direct(lg, mu, ls, 2, 2, z)));
        max_sum = fmax(max_sum, fabs(lpc[0] + lpc[1] - lp));
        /* F_1: integrate the marginal density over the smaller tail */
        double lo = fmin(mu[0], mu[2]) - 20, hi = fmax(mu[0], mu[2]) + 20;
        double F1 = y[0] <= 0 ? simpson_joint(lg, mu, ls, 2, 0, 0, lo, z[0], 200000)
                              : simpson_joint(lg, mu, ls, 2, 0, 0, z[0], hi, 200000);
        double F1w = norm_cdf(y[0] <= 0 ? y[0] : -y[0]);
        max_F1 = fmax(max_F1, fabs(F1 - F1w) / F1w);
        /* F_2: the conditional CDF = integral of the joint over z_2 / marginal */
        double marg = exp(lpc[0]);
        lo = fmin(mu[1], mu[3]) - 20, hi = fmax(mu[1], mu[3]) + 20;
        double F2 = (y[1] <= 0 ? simpson_joint(lg, mu, ls, 2, 1, z[0], lo, z[1], 200000)
                               : simpson_joint(lg, mu, ls, 2, 1, z[0], z[1], hi, 200000)) / marg;
        double F2w = norm_cdf(y[1] <= 0 ? y[1] : -y[1]);
        max_F2 = fmax(max_F2, fabs(F2 - F2w) / F2w);
        if (mixd_inverse(lg, mu, ls, 2, 2, y, z2, lpc2, &lp2) != TFLM_OK) {
            max_rt = INFINITY;
            continue;
        }
        for (int i = 0; i < 2; i++) {
            max_rt = fmax(max_rt, fabs(z2[i] - z[i]));
            max_lpc = fmax(max_lpc, fabs(lpc2[i] - lpc[i]));
        }
        max_lpc = fmax(max_lpc, fabs(lp2 - lp));
    }
    CHECK(max_lp <= 1e-12, "mixd V=2 d=2: log p = log sum_k pi_k N(z; mu_k, e^2s I) (max %.3g)",
          max_lp);
    CHECK(max_sum <= 1e-12, "mixd: sum of lpc = log p (max %.3g)", max_sum);
    /* Simpson with h = 2e-4 on sigmas >= e^-1.5: error ~ (h/sigma)^4 ~ 1e-13 */
    CHECK(max_F1 <= 1e-9, "mixd F_1 = integral of the marginal density (max rel %.3g)", max_F1);
    CHECK(max_F2 <= 1e-9, "mixd F_2 = integral of the conditional density (max rel %.3g)", max_F2);
    CHECK(max_rt <= 1e-9, "mixd V=2 d=2 inverse round trip (max |z - z'| %.3g)", max_rt);
    CHECK(max_lpc <= 1e-9, "mixd inverse lpc and log p equal the forward's (max %.3g)", max_lpc);

    /* the default model's shape: V = 97, d = 8 */
    enum { V = 97, d = 8 };
    static float lg[V], mu[V * d], ls[V];
    max_lp = max_rt = max_sum = 0;
    double max_y = 0, max_dy = 0;
    int fails = 0, n_ill = 0, n_ok = 0;
    for (int s = 0; s < 60; s++) {
        double lsbase = s % 4 == 3 ? -9.0 : -3.0; /* tiny sigmas on every fourth set */
        for (int k = 0; k < V; k++) {
            lg[k] = (float)(3 * rnorm());
            ls[k] = (float)(lsbase + 2 * runif());
            for (int i = 0; i < d; i++)
                mu[k * d + i] = (float)rnorm();
        }
        for (int t = 0; t < 8; t++) {
            int k = rint_(V);
            double z[d], y[d], lpc[d], z2[d], lpc2[d], lp2;
            for (int i = 0; i < d; i++)
                z[i] = t < 6 ? mu[k * d + i] + exp(ls[k]) * rnorm() * (t < 3 ? 1.0 : 4.0)
                             : 2.5 * rnorm();
            double lp = mixd_forward(lg, mu, ls, V, d, z, y, lpc);
            double sum = 0;
            for (int i = 0; i < d; i++) {
                sum += lpc[i];
                max_y = fmax(max_y, fabs(y[i]));
            }
            max_lp = fmax(max_lp, fabs(lp - mixd_direct(lg, mu, ls, V, d, z)) / fmax(1, fabs(lp)));
            max_sum = fmax(max_sum, fabs(sum - lp));
            int clamped = 0;
            for (int i = 0; i < d; i++)
                clamped |= fabs(y[i]) >= 37.04;
            if (clamped)
                continue;
            if (mixd_inverse(lg, mu, ls, V, d, y, z2, lpc2, &lp2) != TFLM_OK) {
                fails++;
                printf("# mixd inverse failed: %s\n", tflm_last_error());
                continue;
            }
            /* The inverse is triangular: an error in z_i moves the posterior
             * weights of every later dimension by (z_i - mu_ki)/sigma_k^2
             * per unit, so rounding errors of y (~1e-15) are amplified by
             * the condition number of the whole inverse, max |dz_j/dy_i|.
             * Estimate it by differences (and, as differences step over
             * the gaps between narrow components, by each dimension's
             * kappa_i of the mix1 test) and hold the round trip to 1e-9
             * where it is below 1e5; elsewhere (z between narrow
             * components, or several sigmas out where the posterior switches
             * sharply) the backward error is checked below. */
            double cond = 0;
            for (int i = 0; i < d; i++) {
                double lt = norm_logcdf(-fabs(y[i]));
                cond = fmax(cond, exp(lt - lpc[i]) * fmax(1.0, fabs(lt)));
            }
            for (int i = 0; i < d && cond <= 1e5; i++) {
                double yp[d], zp[d], h = 1e-6;
                memcpy(yp, y, sizeof yp);
                yp[i] += h;
                if (mixd_inverse(lg, mu, ls, V, d, yp, zp, NULL, &lp2) != TFLM_OK) {
                    cond = INFINITY;
                    break;
                }
                for (int j = 0; j < d; j++)
                    cond = fmax(cond, fabs(zp[j] - z2[j]) / h);
            }
            if (!(cond <= 1e5)) {
                n_ill++;
                continue;
            }
            n_ok++;
            for (int i = 0; i < d; i++)
                max_rt = fmax(max_rt, fabs(z2[i] - z[i]));
        }
        /* y -> z -> y */
        for (int t = 0; t < 3; t++) {
            double y[d], z[d], y2[d], lpc[d], lp;
            for (int i = 0; i < d; i++)
                y[i] = t == 2 ? (runif() * 2 - 1) * 37 : rnorm();
            if (mixd_inverse(lg, mu, ls, V, d, y, z, NULL, &lp) != TFLM_OK) {
                fails++;
                printf("# mixd inverse failed: %s\n", tflm_last_error());
                continue;
            }
            mixd_forward(lg, mu, ls, V, d, z, y2, lpc);
            for (int i = 0; i < d; i++)
                max_dy = fmax(max_dy, yback(y[i], y2[i], z[i], lpc[i]));
        }
    }
    CHECK(fails == 0, "mixd V=97 d=8: inverse converged everywhere (%d failures)", fails);
    CHECK(max_lp <= 1e-12, "mixd V=97 d=8: log p = direct mixture formula (max rel %.3g)", max_lp);
    CHECK(max_sum <= 1e-9, "mixd V=97 d=8: sum of lpc = log p (max %.3g)", max_sum);
    CHECK(max_rt <= 1e-9 && n_ok > 300, "mixd V=97 d=8: z -> y -> z round trip where "
          "max |dz/dy| <= 1e5 (max %.3g, max |y| %.1f; %d points, %d ill-conditioned skipped)",
          max_rt, max_y, n_ok, n_ill);
    CHECK(max_dy <= 1.0, "mixd V=97 d=8: y -> z -> y round trip incl. |y| <= 37 within rounding "
          "(worst %.3g of the allowance)", max_dy);

    /* a component whose weight underflows (log pi = -800) becomes the whole
     * posterior after dimension 2, and the other one then underflows */
    {
        float lg2[2] = {0.0f, -800.0f}, ls2[2] = {0.0f, 0.0f};
        float mu2[6] = {0, 0, 0, 0, 60, 0};
        double z[3] = {0.3, 60.2, 0.5}, y[3], lpc[3], z2[3], y2[3];
        double lp = mixd_forward(lg2, mu2, ls2, 2, 3, z, y, lpc);
        CHECK_NEAR(lp, mixd_direct(lg2, mu2, ls2, 2, 3, z), 1e-12 * fabs(lp),
                   "mixd with an underflowing weight: log p = direct formula");
        CHECK_NEAR(lpc[0] + lpc[1] + lpc[2], lp, 1e-12 * fabs(lp), "... sum of lpc = log p");
        CHECK_NEAR(y[0], 0.3, 1e-15, "... y_1 = 0.3 (both components agree in dimension 1)");
        CHECK_NEAR(y[1], -norm_ppf(1e-300), 1e-13,
                   "... y_2: 1 - F = e^-800 Phi(-0.2) is clamped at 1e-300");
        CHECK_NEAR(y[2], 0.5, 1e-15, "... y_3 = 0.5 (posterior = component 2)");
        double yt[3] = {0.3, 36.0, 0.5}, lp2;
        CHECK(mixd_inverse(lg2, mu2, ls2, 2, 3, yt, z2, NULL, &lp2) == TFLM_OK,
              "... inverse at y_2 = 36 converges");
        mixd_forward(lg2, mu2, ls2, 2, 3, z2, y2, NULL);
        CHECK(fabs(y2[0] - yt[0]) < 1e-14 && fabs(y2[1] - yt[1]) < 1e-12
              && fabs(y2[2] - yt[2]) < 1e-14, "... and y(z') = y (%.17g %.17g %.17g)", y2[0], y2[1],
              y2[2]);
    }
    /* more components than the stack buffer holds (malloc path) */
    {
        enum { VB = 300, dB = 3 };
        static float lgb[VB], mub[VB * dB], lsb[VB];
        for (int k = 0; k < VB; k++) {
            lgb[k] = (float)rnorm();
            lsb[k] = (float)(-2 + runif());
            for (int i = 0; i < dB; i++)
                mub[k * dB + i] = (float)rnorm();
        }
        double z[dB] = {0.1, -0.4, 0.7}, y[dB], z2[dB], lp2;
        double lp = mixd_forward(lgb, mub, lsb, VB, dB, z, y, NULL);
        CHECK_NEAR(lp, mixd_direct(lgb, mub, lsb, VB, dB, z), 1e-12 * fmax(1, fabs(lp)),
                   "mixd V=300: log p = direct formula");
        CHECK(mixd_inverse(lgb, mub, lsb, VB, dB, y, z2, NULL, &lp2) == TFLM_OK
              && fabs(z2[0] - z[0]) + fabs(z2[1] - z[1]) + fabs(z2[2] - z[2]) < 1e-9
              && fabs(lp2 - lp) < 1e-9, "mixd V=300: round trip");
    }

    /* timing (informational) */
    {
        double z[d], y[d], acc = 0;
        int n = 2000;
        clock_t c0 = clock();
        for (int t = 0; t < n; t++) {
            int k = t % V;
            for (int i = 0; i < d; i++)
                z[i] = mu[k * d + i] + 0.01 * (i - 3);
            acc += mixd_forward(lg, mu, ls, V, d, z, y, NULL);
        }
        double tf = (double)(clock() - c0) / CLOCKS_PER_SEC / n;
        c0 = clock();
        for (int t = 0; t < n / 4; t++) {
            for (int i = 0; i < d; i++)
                y[i] = 0.3 * (i - 3) + 1e-3 * t;
            double lp;
            mixd_inverse(lg, mu, ls, V, d, y, z, NULL, &lp);
            acc += lp;
        }
        double ti = (double)(clock() - c0) / CLOCKS_PER_SEC / (n / 4);
        printf("# mixd V=97 d=8: forward %.1f us/token, inverse %.1f us/token (%g)\n", tf * 1e6,
               ti * 1e6, acc > 0 ? 1.0 : 0.0);
    }
}

/* ---- maf --------------------------------------------------------------------- */

static double gelu_d(double x) {
    return 0.5 * x * (1 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)));
}
static double elu_d(double x) { return x > 0 ? x : expm1(x); }

/* straightforward reference in double: all e_j first, then g_i, then out_i */
static void maf_ref(const FlowWeights *fw, int c, int K, int E, int H2, int D, const float *G,
                    const double *x, int i, double *out) {
    double *e = calloc((size_t)(c - 1) * E + 1, sizeof(double));
    double *g = calloc((size_t)H2, sizeof(double));
    for (int j = 0; j < i; j++) {
        double xf = (float)x[j];
        double f[3] = {xf, elu_d(xf), elu_d(-xf)};
        for (int a = 0; a < E; a++) {
            double s = fw->maf_emb_b[j * E + a];
            for (int b = 0; b < 3; b++)
                s += fw->maf_emb_w[(j * E + a) * 3 + b] * f[b];
            e[j * E + a] = gelu_d(s);
        }
    }
    for (int h = 0; h < H2; h++) {
        double s = fw->maf_hid_b[i * H2 + h];
        for (int t = 0; t < D; t++)
            s += fw->maf_ctx_w[((size_t)i * H2 + h) * D + t] * (double)G[t];
        for (int col = 0; col < i * E; col++)
            s += fw->maf_feat_w[((size_t)i * H2 + h) * (c - 1) * E + col] * e[col];
        g[h] = gelu_d(s);
    }
    for (int k = 0; k < 3 * K; k++) {
        double s = fw->maf_out_b[i * 3 * K + k];
        for (int h = 0; h < H2; h++)
            s += fw->maf_out_w[((size_t)i * 3 * K + k) * H2 + h] * g[h];
        out[k] = s;
    }
    free(e);
    free(g);
}

static float *rand_arr(size_t n, double scale) {
    float *a = malloc(sizeof(float) * n);
    for (size_t t = 0; t < n; t++)
        a[t] = (float)(scale * rnorm());
    return a;
}

/* the context part C_i G + b_i of channel i (what flow_head's matrix product
 * gives the engine), in float as the matmul op computes it */
static void maf_cg(const FlowWeights *fw, int H2, int D, const float *G, int i, float *cg) {
    for (int h = 0; h < H2; h++) {
        const float *row = fw->maf_ctx_w + ((size_t)i * H2 + h) * D;
        float s = fw->maf_hid_b[(size_t)i * H2 + h];
        for (int t = 0; t < D; t++)
            s += row[t] * G[t];
        cg[h] = s;
    }
}

static void test_maf_case(int c, int E, int H2, int K, int D) {
    FlowWeights fw;
    memset(&fw, 0, sizeof fw);
    fw.maf_emb_w = rand_arr((size_t)(c - 1) * E * 3, 0.8);
    fw.maf_emb_b = rand_arr((size_t)(c - 1) * E, 0.3);
    fw.maf_ctx_w = rand_arr((size_t)c * H2 * D, 0.5);
    fw.maf_feat_w = rand_arr((size_t)c * H2 * (c - 1) * E, 0.5);
    fw.maf_hid_b = rand_arr((size_t)c * H2, 0.3);
    fw.maf_out_w = rand_arr((size_t)c * 3 * K * H2, 0.5);
    fw.maf_out_b = rand_arr((size_t)c * 3 * K, 0.3);
    float *G = rand_arr((size_t)D, 1.0);
    double *x = malloc(sizeof(double) * c), *x2 = malloc(sizeof(double) * c);
    double *ref = malloc(sizeof(double) * 3 * K);
    float *out = malloc(sizeof(float) * 3 * K), *out2 = malloc(sizeof(float) * 3 * K);
    float *cg = malloc(sizeof(float) * H2);
    float *e = malloc(sizeof(float) * c * E), *e2 = malloc(sizeof(float) * c * E);
    double worst = 0;
    int indep = 1;
    for (int trial = 0; trial < 20; trial++) {
        for (int j = 0; j < c; j++)
            x[j] = 1.5 * rnorm();
        for (int j = 0; j < c - 1; j++)
            maf_embed(&fw, E, j, x[j], e + (size_t)j * E);
        for (int i = 0; i < c; i++) {
            maf_cg(&fw, H2, D, G, i, cg);
            maf_channel(&fw, c, K, E, H2, cg, e, i, out);
            maf_ref(&fw, c, K, E, H2, D, G, x, i, ref);
            double scale = 0;
            for (int k = 0; k < 3 * K; k++)
                scale = fmax(scale, fabs(ref[k]));
            for (int k = 0; k < 3 * K; k++)
                worst = fmax(worst, fabs(out[k] - ref[k]) / fmax(1.0, scale));
            /* channels j >= i must not matter */
            memcpy(x2, x, sizeof(double) * c);
            for (int j = i; j < c; j++)
                x2[j] = 10 * rnorm();
            for (int j = 0; j < c - 1; j++)
                maf_embed(&fw, E, j, x2[j], e2 + (size_t)j * E);
            maf_channel(&fw, c, K, E, H2, cg, e2, i, out2);
            if (memcmp(out, out2, sizeof(float) * 3 * K) != 0)
                indep = 0;
        }
    }
    /* single-precision accumulation over D + i E + H2 terms: ~1e-6 */
    CHECK(worst <= 2e-5, "maf_channel (c=%d E=%d H2=%d K=%d D=%d) = reference "
          "(max rel diff %.3g)", c, E, H2, K, D, worst);
    CHECK(indep, "maf_channel out_i does not depend on x_j for j >= i (c=%d)", c);
    /* channel 0 sees only the context */
    {
        float *o0 = malloc(sizeof(float) * 3 * K);
        maf_cg(&fw, H2, D, G, 0, cg);
        maf_channel(&fw, c, K, E, H2, cg, e, 0, out);
        for (int t = 0; t < (c - 1) * E; t++)
            e2[t] = 100.0f;
        maf_channel(&fw, c, K, E, H2, cg, e2, 0, o0);
        CHECK(memcmp(out, o0, sizeof(float) * 3 * K) == 0, "maf channel 0 reads no x");
        free(o0);
    }
    free(fw.maf_emb_w); free(fw.maf_emb_b); free(fw.maf_ctx_w); free(fw.maf_feat_w);
    free(fw.maf_hid_b); free(fw.maf_out_w); free(fw.maf_out_b);
    free(G); free(x); free(x2); free(ref); free(out); free(out2); free(cg);
    free(e); free(e2);
}

int main(void) {
    test_special();
    test_mix1();
    test_mixd();
    test_maf_case(4, 3, 5, 2, 6);
    test_maf_case(3, 70, 130, 3, 8); /* exercises the chunking (> 64) */
    return tap_done();
}
