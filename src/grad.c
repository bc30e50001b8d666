/* grad.c: backward passes of the couplings (mix1, affine, mixd), the maf head
 * and the codebook's R_t (DESIGN §2.1, §2.2, §2.5), for the trainer (issue 3).
 * Every function ACCUMULATES (+=) into its gradient buffers (src/train.h).
 *
 * Mixture arithmetic is double precision and in log space where it matters
 * (DESIGN §2.3). For y = Phi^-1(F) the derivative is dF / phi(y); its pieces
 * are formed so that nothing cancels in the tails:
 *  - w_k phi(r_k) / phi(y) is gamma_k * P with gamma the posterior
 *    responsibilities and P = p(x) / phi(y) = exp(log p + y^2/2 + log sqrt2pi),
 *    one exp per call;
 *  - dF/du_k = w_k (Phi(r_k) - F) for softmax logits u is taken on the tail
 *    that y was inverted from: w_k (Phi(r_k) - F) on the lower one and
 *    w_k ((1 - F) - Phi(-r_k)) on the upper one, from the same per-component
 *    erfc values as the forward (or, below 1e-280, from log Phi).
 * Where the forward clamped the tail at 1e-300 y is constant and gets no
 * gradient.
 *
 * mixd runs its dimensions backwards: u^(d) = logits + sum_i l_ki is needed
 * for log p anyway, and u^(i) = u^(i+1) - l_ki recovers each earlier step's
 * log-weights without storing them, while a running sum W_k of the
 * adjoints of u^(i') for i' > i carries the chain to z_i, mu_ki and s_k. */
#include <math.h>
#include <stdlib.h>
#include "train.h"

#define SQRT1_2 0.70710678118654752440
#define LOG_1E300 (-690.77552789821370521)  /* the forward's tail clamp */
#define LIN_MIN 1e-280      /* smallest tail trusted from the linear sums (as mixture.c) */
#define EXP_UNDER (-745.2)  /* exp(t) == 0 in double below this */
#define R_ZERO 39.0         /* erfc(r/sqrt2)/2 == 0 in double for r >= 38.5 */
#define LIGHT_CUT 50.0      /* mixd: weights below e^-50 of the largest skip exp (cdf_backward) */
#define STACK_N 256         /* components handled without malloc */
#define CB_STACK 1024       /* codebook entries handled without malloc */
#define HC 64               /* maf hidden units per chunk */

/* ---- small helpers -------------------------------------------------------- */

/* tanh(u) and sech^2(u) = 1 - tanh^2(u), the latter without cancellation
 * for large |u| */
static void tanh_sech2(double u, double *t, double *s2) {
    double a = fabs(u);
    if (a < 1.0) {
        double em = expm1(-2.0 * a);
        double th = -em / (2.0 + em);
        *t = u < 0 ? -th : th;
        *s2 = 1.0 - th * th;
    } else {
        double e = exp(-2.0 * a), q = 1.0 + e;
        double th = (1.0 - e) / q;
        *t = u < 0 ? -th : th;
        *s2 = 4.0 * e / (q * q);
    }
}

/* log sigma = clamp(v, f) / 2 with clamp(v) = c tanh(v / max(c, 1)), c = e^f,
 * and its derivatives in v and f. At c = 1 (f = 0, the initial value) the
 * f-derivative has a kink; the c >= 1 side is taken. */
static double half_clamp(double v, double f, double *dv, double *df) {
    double c = exp(f), t, s2;
    if (c >= 1.0) {
        tanh_sech2(v / c, &t, &s2);
        *dv = 0.5 * s2;
        *df = 0.5 * (c * t - v * s2);
    } else {
        tanh_sech2(v, &t, &s2);
        *dv = 0.5 * c * s2;
        *df = 0.5 * c * t;
    }
    return 0.5 * c * t;
}

/* max and log-sum-exp of n values */
static double lse(const double *q, int n) {
    double M = -INFINITY;
    for (int k = 0; k < n; k++)
        if (q[k] > M)
            M = q[k];
    if (!isfinite(M))
        return M;
    double S = 0.0;
    for (int k = 0; k < n; k++) {
        double t = q[k] - M;
        if (t > EXP_UNDER)
            S += exp(t);
    }
    return M + log(S);
}

/* w = softmax(u), lw = log w; returns LSE(u). Entries more than cut below
 * the largest get w = 0 without an exp (their weight is below e^-cut of the
 * largest; lw stays exact up to that relative change of the sum). */
static double softmax(const double *u, int n, double *w, double *lw, double cut) {
    double M = -INFINITY;
    for (int k = 0; k < n; k++)
        if (u[k] > M)
            M = u[k];
    double S = 0.0, lo = -cut < EXP_UNDER ? EXP_UNDER : -cut;
    for (int k = 0; k < n; k++) {
        double t = u[k] - M;
        w[k] = t > lo ? exp(t) : 0.0;
        S += w[k];
    }
    double lS = log(S), iS = 1.0 / S;
    for (int k = 0; k < n; k++) {
        lw[k] = u[k] - M - lS;
        w[k] *= iS;
    }
    return M + lS;
}

/* The smaller tail 0.5 erfc(|r| / sqrt2) of one component, whose weight w
 * is added to the sums F and G = 1 - F */
static inline double tail_add(double w, double r, double *F, double *G) {
    double a = fabs(r);
    double ek = a < R_ZERO ? 0.5 * erfc(a * SQRT1_2) : 0.0;
    if (r < 0) {
        *F += w * ek;
        *G += w * (1.0 - ek);
    } else {
        *F += w * (1.0 - ek);
        *G += w * ek;
    }
    return ek;
}

/* The y part of a 1-D mixture CDF coupling. Components have log-weights lw,
 * weights w and standardised residuals r (K each); a weight of 0 may stand
 * for one not computed, at most wcap, which is then computed from lw if
 * needed. e is K doubles of scratch. Computes y = Phi^-1(F) on the smaller
 * tail as mixture.c does and b[k] = w_k (Phi(r_k) - F) / phi(y) = dy/du_k
 * for the softmax logits u. Returns 0 (b untouched) when y is clamped or not
 * finite: no gradient.
 *
 * Light components (below 2^-54 of the heaviest) skip their erfc, and those
 * not computed their exp too, when together they cannot move F or 1 - F by
 * 2^-54 relative; their smaller tail is then taken as 0 (and their weight as
 * 0), an error below 2^-54 of the largest b. In the tails they are summed. */
static int cdf_backward(int K, const double *lw, double *w, const double *r, double wcap,
                        double *e, double *yout, double *b) {
    double wmax = 0.0;
    for (int k = 0; k < K; k++)
        wmax = w[k] > wmax ? w[k] : wmax;
    double tau = 0x1p-54 * wmax, F = 0.0, G = 0.0, light = 0.0;
    for (int k = 0; k < K; k++) {
        if (w[k] < tau) {
            light += w[k] > 0.0 ? w[k] : wcap;
            e[k] = -1.0;    /* not computed yet */
            continue;
        }
        e[k] = tail_add(w[k], r[k], &F, &G);
    }
    if (light > 0.0) {
        int need = !(light <= 0x1p-54 * (F < G ? F : G));
        for (int k = 0; k < K; k++) {
            if (!(e[k] < 0.0))
                continue;
            if (need) {
                if (w[k] == 0.0 && wcap > 0.0)
                    w[k] = exp(lw[k]);
                e[k] = tail_add(w[k], r[k], &F, &G);
            } else {
                e[k] = 0.0;
            }
        }
    }
    if (F >= LIN_MIN && G >= LIN_MIN) {
        int lower = F <= G;
        double y = lower ? norm_ppf(F) : -norm_ppf(G);
        if (!isfinite(y))
            return 0;
        double iphi = exp(0.5 * y * y + LOG_SQRT_2PI);
        if (lower) {
            for (int k = 0; k < K; k++) {
                double phik = r[k] < 0 ? e[k] : 1.0 - e[k];
                b[k] = w[k] * (phik - F) * iphi;
            }
        } else {
            for (int k = 0; k < K; k++) {
                double phimk = r[k] < 0 ? 1.0 - e[k] : e[k];
                b[k] = w[k] * (G - phimk) * iphi;
            }
        }
        *yout = y;
        return 1;
    }
    /* a tail below LIN_MIN: log-sum-exp of the log tails */
    double mF = -INFINITY, sF = 0.0, mG = -INFINITY, sG = 0.0;
    for (int k = 0; k < K; k++) {
        double a = lw[k] + norm_logcdf(r[k]), c = lw[k] + norm_logcdf(-r[k]);
        if (a > mF) {
            sF = sF * exp(mF - a) + 1.0;
            mF = a;
        } else {
            sF += exp(a - mF);
        }
        if (c > mG) {
            sG = sG * exp(mG - c) + 1.0;
            mG = c;
        } else {
            sG += exp(c - mG);
        }
    }
    double lF = mF + log(sF), lG = mG + log(sG);
    if (isnan(lF) || isnan(lG))
        return 0;
    int lower = lF <= lG;
    double lt = lower ? lF : lG;
    if (lt < LOG_1E300)
        return 0;
    double y = lower ? norm_ppf(exp(lF)) : -norm_ppf(exp(lG));
    double L = 0.5 * y * y + LOG_SQRT_2PI;
    double tl = exp(lt + L); /* (F or 1 - F) / phi(y) */
    for (int k = 0; k < K; k++) {
        if (lower)
            b[k] = exp(lw[k] + norm_logcdf(r[k]) + L) - w[k] * tl;
        else
            b[k] = w[k] * tl - exp(lw[k] + norm_logcdf(-r[k]) + L);
    }
    *yout = y;
    return 1;
}

/* ---- mix1 / affine ---------------------------------------------------------- */

double mix1_backward(const float *prm, const float *clampf, int K, double x, double glp,
                     double gy, float *dprm, float *dclamp) {
    enum { NB = 9 };
    double sbuf[NB * STACK_N], *buf = sbuf;
    if (K > STACK_N && !(buf = malloc(sizeof(double) * NB * (size_t)K)))
        return NAN;
    double *lw = buf, *w = buf + K, *r = buf + 2 * K, *q = buf + 3 * K, *dv = buf + 4 * K;
    double *df = buf + 5 * K, *e = buf + 6 * K, *b = buf + 7 * K, *isig = buf + 8 * K;
    double M = -INFINITY;
    for (int k = 0; k < K; k++)
        M = prm[k] > M ? prm[k] : M;
    double S = 0.0;
    for (int k = 0; k < K; k++) {
        double t = (double)prm[k] - M;
        w[k] = t > EXP_UNDER ? exp(t) : 0.0;
        S += w[k];
    }
    double lS = log(S), iS = 1.0 / S;
    for (int k = 0; k < K; k++) {
        lw[k] = (double)prm[k] - M - lS;
        w[k] *= iS;
        double ls = half_clamp(prm[2 * K + k], clampf[k], &dv[k], &df[k]);
        isig[k] = exp(-ls);
        r[k] = (x - (double)prm[K + k]) * isig[k];
        q[k] = lw[k] - ls - 0.5 * r[k] * r[k]; /* log w_k N(x; m_k, sigma_k) + log sqrt2pi */
    }
    double Q = lse(q, K);
    double y = 0.0, P = 0.0;
    int ygrad = gy != 0.0 && cdf_backward(K, lw, w, r, 0.0, e, &y, b);
    if (ygrad)
        P = exp(Q + 0.5 * y * y); /* p(x) / phi(y) = dy/dx */
    double dx = 0.0;    /* -sum_k dm_k: dlog p/dx = -sum gamma r / sigma, dy/dx = P */
    for (int k = 0; k < K; k++) {
        double t = q[k] - Q;
        double gam = t > EXP_UNDER ? exp(t) : 0.0;  /* responsibility */
        /* d/dm_k, and d/dlog sigma_k: glp part gamma (r^2 - 1), y part
         * -w_k phi(r_k) r_k / phi(y) = -gamma_k P (x - m_k) */
        double da = glp * (gam - w[k]);
        double dm = glp * gam * r[k] * isig[k];
        double dls = glp * gam * (r[k] * r[k] - 1.0);
        if (ygrad) {
            double gP = gy * gam * P;
            da += gy * b[k];
            dm -= gP;
            dls -= gP * (x - (double)prm[K + k]);
        }
        dx -= dm;
        dprm[k] += (float)da;
        dprm[K + k] += (float)dm;
        dprm[2 * K + k] += (float)(dls * dv[k]);
        dclamp[k] += (float)(dls * df[k]);
    }
    if (buf != sbuf)
        free(buf);
    return dx;
}

double affine_backward(const float *prm, const float *clampf, double x, double glp, double gy,
                       float *dprm, float *dclamp) {
    double dv, df;
    double ls = half_clamp(prm[2], clampf[0], &dv, &df);
    double isig = exp(-ls), r = (x - (double)prm[1]) * isig;
    /* log p = -ls - r^2/2 - log sqrt2pi, y = r */
    double dx = -glp * r * isig + gy * isig;
    double dls = glp * (r * r - 1.0) - gy * r;
    dprm[1] -= (float)dx;
    dprm[2] += (float)(dls * dv);
    dclamp[0] += (float)(dls * df);
    return dx;
}

/* ---- mixd (Rosenblatt) -------------------------------------------------------- */

void mixd_backward(const float *logits, const float *mu, const float *logsig, int V, int d,
                   const double *z, double glp, const double *gy, float *dlogits, float *dmu,
                   float *dlogsig, double *dz) {
    enum { NB = 13 };
    double sbuf[NB * STACK_N], *buf = sbuf;
    if (V > STACK_N && !(buf = malloc(sizeof(double) * NB * (size_t)V))) {
        for (int i = 0; i < d; i++)
            dz[i] = NAN;    /* caught by the trainer's NaN check */
        return;
    }
    double *u = buf, *isig = buf + V, *gam = buf + 2 * V, *anext = buf + 3 * V;
    double *acur = buf + 4 * V, *lw = buf + 5 * V, *r = buf + 6 * V, *e = buf + 7 * V;
    double *b = buf + 8 * V, *dmk = buf + 9 * V, *W = buf + 10 * V, *dls = buf + 11 * V;
    double *dlg = buf + 12 * V;

    /* stage one: u^(d)_k = logit_k + sum_i l_ki with l_ki = -s_k - r_ki^2/2
     * (the constants cancel in every softmax); log p(z) = LSE u^(d) - LSE logits
     * - d log sqrt2pi */
    for (int k = 0; k < V; k++) {
        const float *m = mu + (size_t)k * d;
        double s = logsig[k], is = exp(-s), uk = logits[k], ss = 0.0;
        for (int i = 0; i < d; i++) {
            double rk = (z[i] - (double)m[i]) * is;
            uk += -s - 0.5 * rk * rk;
            ss += rk * rk;
        }
        isig[k] = is;
        u[k] = uk;
        dls[k] = ss;   /* sum_i r_ki^2, turned into the gradient below */
        e[k] = logits[k];
    }
    softmax(e, V, acur, lw, LIGHT_CUT);                   /* pi */
    double lse_next = softmax(u, V, gam, lw, LIGHT_CUT);  /* responsibilities of z */
    for (int k = 0; k < V; k++) {
        dlg[k] = glp * (gam[k] - acur[k]);
        dls[k] = glp * gam[k] * (dls[k] - d);
        W[k] = 0.0;
        anext[k] = gam[k];
    }

    if (!gy) {
        for (int i = 0; i < d; i++) {
            double dzi = 0.0;
            for (int k = 0; k < V; k++) {
                double is = isig[k];
                double g = glp * gam[k] * (z[i] - (double)mu[(size_t)k * d + i]) * is * is;
                dmu[(size_t)k * d + i] += (float)g;
                dzi -= g;
            }
            dz[i] += dzi;
        }
    } else {
        /* backwards over the dimensions; on entry to step i, u = u^(i+1),
         * anext = alpha^(i+1) = the conditional responsibilities of z_i,
         * lse_next = LSE u^(i+1), W_k = sum_{i' > i} dL/du_k^(i') */
        for (int i = d - 1; i >= 0; i--) {
            double dzi = 0.0;
            for (int k = 0; k < V; k++) {
                double is = isig[k];
                double rk = (z[i] - (double)mu[(size_t)k * d + i]) * is;
                r[k] = rk;
                /* through l_ki (part of u^(i') for i' > i), plus stage one */
                double g = (W[k] + glp * gam[k]) * rk * is;
                dmk[k] = g;
                dzi -= g;
                dls[k] += W[k] * (rk * rk - 1.0);
                u[k] += logsig[k] + 0.5 * rk * rk;    /* u^(i) = u^(i+1) - l_ki */
            }
            double lse_cur = softmax(u, V, acur, lw, LIGHT_CUT);  /* alpha^(i) */
            double gi = gy[i], y;
            if (gi != 0.0 && cdf_backward(V, lw, acur, r, exp(-LIGHT_CUT), e, &y, b)) {
                /* P = p_i(z_i) / phi(y_i) */
                double P = exp(lse_next - lse_cur + 0.5 * y * y), gP = gi * P;
                dzi += gP;
                for (int k = 0; k < V; k++) {
                    double t = gP * anext[k];
                    dmk[k] -= t;
                    dls[k] -= t * (z[i] - (double)mu[(size_t)k * d + i]);
                    W[k] += gi * b[k];
                }
            }
            for (int k = 0; k < V; k++)
                dmu[(size_t)k * d + i] += (float)dmk[k];
            dz[i] += dzi;
            double *t = anext;
            anext = acur;
            acur = t;
            lse_next = lse_cur;
        }
    }
    for (int k = 0; k < V; k++) {
        dlogits[k] += (float)(dlg[k] + W[k]);
        dlogsig[k] += (float)dls[k];
    }
    if (buf != sbuf)
        free(buf);
}

/* ---- maf head ------------------------------------------------------------------- */

#define GELU_K 0.79788456080286535588   /* sqrt(2/pi) */
#define GELU_C 0.044715

static double gelu_d(double x, double *dg) {
    double t = tanh(GELU_K * (x + GELU_C * x * x * x));
    *dg = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * GELU_K * (1.0 + 3.0 * GELU_C * x * x);
    return 0.5 * x * (1.0 + t);
}

static double elu(double x) { return x > 0.0 ? x : expm1(x); }
static double elu_d(double x) { return x > 0.0 ? 1.0 : exp(x); }

void maf_channel_backward(const FlowWeights *fw, FlowWeights *gw, int c, int K, int E, int H2,
                          const float *cg, const float *e, int i, const float *dout,
                          float *dcg, double *de) {
    int n3 = 3 * K, FE = (c - 1) * E, ie = i * E;
    const float *Fi = fw->maf_feat_w + (size_t)i * H2 * FE;
    const float *Oi = fw->maf_out_w + (size_t)i * n3 * H2;
    float *dFi = gw->maf_feat_w + (size_t)i * H2 * FE;
    float *dOi = gw->maf_out_w + (size_t)i * n3 * H2;
    float *doi = gw->maf_out_b + (size_t)i * n3;
    for (int k = 0; k < n3; k++)
        doi[k] += dout[k];
    for (int h0 = 0; h0 < H2; h0 += HC) {
        int nh = H2 - h0 < HC ? H2 - h0 : HC;
        double hb[HC], dh[HC];
        /* forward: pre-activations of this chunk of hidden units */
        for (int h = 0; h < nh; h++) {
            const float *Fr = Fi + (size_t)(h0 + h) * FE;
            double s = cg[h0 + h];
            for (int t = 0; t < ie; t++)
                s += (double)Fr[t] * e[t];
            hb[h] = s;
        }
        /* out = O g + o: dO, and dh = (O^T dout) * GELU'(h) */
        for (int h = 0; h < nh; h++)
            dh[h] = 0.0;
        for (int k = 0; k < n3; k++) {
            const float *Or = Oi + (size_t)k * H2 + h0;
            double dk = dout[k];
            for (int h = 0; h < nh; h++)
                dh[h] += dk * Or[h];
        }
        for (int h = 0; h < nh; h++) {
            double gd, g = gelu_d(hb[h], &gd);
            hb[h] = g;          /* hb now holds g */
            dh[h] *= gd;
        }
        for (int k = 0; k < n3; k++) {
            float *dOr = dOi + (size_t)k * H2 + h0;
            double dk = dout[k];
            if (dk == 0.0)
                continue;
            for (int h = 0; h < nh; h++)
                dOr[h] += (float)(dk * hb[h]);
        }
        /* the context part (the caller turns dcg into dC, db and dG), the
         * feature weights dF_i += dh e^T and de += F_i^T dh */
        for (int h = 0; h < nh; h++) {
            double dhh = dh[h];
            dcg[h0 + h] += (float)dhh;
            if (dhh == 0.0)
                continue;
            const float *Fr = Fi + (size_t)(h0 + h) * FE;
            float *dFr = dFi + (size_t)(h0 + h) * FE;
            for (int t = 0; t < ie; t++) {
                dFr[t] += (float)(dhh * e[t]);
                de[t] += dhh * Fr[t];
            }
        }
    }
}

void maf_embed_backward(const FlowWeights *fw, FlowWeights *gw, int E, int j, double xj,
                        const double *dej, double *dxj) {
    double xf = (float)xj;
    double f0 = xf, f1 = elu(xf), f2 = elu(-xf);
    double d1 = elu_d(xf), d2 = -elu_d(-xf);
    const float *Aj = fw->maf_emb_w + (size_t)j * E * 3;
    const float *aj = fw->maf_emb_b + (size_t)j * E;
    float *dAj = gw->maf_emb_w + (size_t)j * E * 3;
    float *daj = gw->maf_emb_b + (size_t)j * E;
    double dx = 0.0;
    for (int e = 0; e < E; e++) {
        if (dej[e] == 0.0)
            continue;
        const float *A = Aj + (size_t)e * 3;
        float *dA = dAj + (size_t)e * 3;
        double ud;
        gelu_d(A[0] * f0 + A[1] * f1 + A[2] * f2 + aj[e], &ud);
        double du = dej[e] * ud;
        dA[0] += (float)(du * f0);
        dA[1] += (float)(du * f1);
        dA[2] += (float)(du * f2);
        daj[e] += (float)du;
        dx += du * (A[0] + A[1] * d1 + A[2] * d2);
    }
    *dxj += dx;
}

/* ---- codebook R_t ----------------------------------------------------------------- */

void codebook_R_backward(const float *mu, const float *logsig, int V, int d, const float *z,
                         double g, float *dmu, float *dlogsig, double *dz) {
    double sbuf[2 * CB_STACK], *buf = sbuf;
    if (V > CB_STACK && !(buf = malloc(sizeof(double) * 2 * (size_t)V))) {
        for (int i = 0; i < d; i++)
            dz[i] = NAN;
        return;
    }
    double *l = buf, *q = buf + V;
    double M = -INFINITY;
    for (int k = 0; k < V; k++) {
        const float *m = mu + (size_t)k * d;
        double s = logsig[k], dist = 0.0;
        for (int i = 0; i < d; i++) {
            double t = (double)z[i] - m[i];
            dist += t * t;
        }
        q[k] = dist * exp(-2.0 * s);            /* |z - mu_k|^2 e^{-2 s_k} */
        l[k] = -d * s - 0.5 * q[k];             /* l_k + (d/2) log 2pi */
        if (l[k] > M)
            M = l[k];
    }
    double S = 0.0;
    for (int k = 0; k < V; k++) {
        double t = l[k] - M;
        l[k] = t > EXP_UNDER ? exp(t) : 0.0;
        S += l[k];
    }
    double gS = g / S;
    for (int k = 0; k < V; k++) {
        double gp = gS * l[k];                  /* g p_k */
        if (gp == 0.0)
            continue;
        dlogsig[k] += (float)(gp * (d - q[k]));
        const float *m = mu + (size_t)k * d;
        float *dm = dmu + (size_t)k * d;
        double c = gp * exp(-2.0 * logsig[k]);
        for (int i = 0; i < d; i++) {
            double t = c * ((double)z[i] - m[i]);
            dm[i] -= (float)t;
            dz[i] += t;
        }
    }
    if (buf != sbuf)
        free(buf);
}
