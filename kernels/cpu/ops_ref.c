/* ops_ref.c: the reference compute ops, plain C loops (kernels/ops.h).
 *
 * This file is the spec every other backend is tested against, so it is
 * written for clarity, not speed: one output element at a time, float
 * accumulation in the natural index order. It also holds ops_get(), which
 * picks the backend. */
#include <math.h>
#include <stddef.h>
#include "config.h"
#include "ops.h"
#ifdef HAVE_BLAS
#include <cblas.h>
#endif

/* out[n, out] = in[n, in] @ w[out, in]^T + b[out] */
static void ref_matmul(float *out, const float *in, const float *w, const float *b,
                       int n, int in_dim, int out_dim) {
    for (int i = 0; i < n; i++) {
        const float *x = in + (size_t)i * in_dim;
        for (int o = 0; o < out_dim; o++) {
            const float *wo = w + (size_t)o * in_dim;
            float acc = 0.0f;
            for (int k = 0; k < in_dim; k++) acc += x[k] * wo[k];
            out[(size_t)i * out_dim + o] = b ? acc + b[o] : acc;
        }
    }
}

/* out[n, D] = (in - mean) / sqrt(var + eps) * w + b, biased variance.
 * The row statistics are summed in double (two passes). in == out is fine. */
static void ref_layernorm(float *out, const float *in, const float *w, const float *b,
                          int n, int D, float eps) {
    for (int i = 0; i < n; i++) {
        const float *x = in + (size_t)i * D;
        float *y = out + (size_t)i * D;
        double mean = 0.0, var = 0.0;
        for (int j = 0; j < D; j++) mean += x[j];
        mean /= D;
        for (int j = 0; j < D; j++) {
            double dx = x[j] - mean;
            var += dx * dx;
        }
        var /= D;
        float rstd = (float)(1.0 / sqrt(var + eps));
        float m = (float)mean;
        for (int j = 0; j < D; j++) y[j] = (x[j] - m) * rstd * w[j] + b[j];
    }
}

/* GELU, tanh form. in == out is fine. */
static void ref_gelu(float *out, const float *in, int n) {
    const float s = 0.7978845608028654f;    /* sqrt(2/pi) */
    for (int i = 0; i < n; i++) {
        float x = in[i];
        out[i] = 0.5f * x * (1.0f + tanhf(s * (x + 0.044715f * x * x * x)));
    }
}

/* Causal multi-head attention of steps start..start+n-1 over the cache.
 * Row i is absolute step t = start+i and sees steps 0..t. Head h uses
 * columns h*hs..(h+1)*hs-1 of q, k and v. scratch: start+n floats. */
static void ref_attention(float *out, const float *q, const float *kc, const float *vc,
                          int start, int n, int D, int H, float *scratch) {
    int hs = D / H;
    float scale = 1.0f / sqrtf((float)hs);
    float *p = scratch;
    for (int i = 0; i < n; i++) {
        int t = start + i;
        for (int h = 0; h < H; h++) {
            const float *qh = q + (size_t)i * D + h * hs;
            float *oh = out + (size_t)i * D + h * hs;
            /* scores, and their max for a stable softmax */
            float mx = -INFINITY;
            for (int j = 0; j <= t; j++) {
                const float *kh = kc + (size_t)j * D + h * hs;
                float acc = 0.0f;
                for (int e = 0; e < hs; e++) acc += qh[e] * kh[e];
                p[j] = acc * scale;
                if (p[j] > mx) mx = p[j];
            }
            float sum = 0.0f;
            for (int j = 0; j <= t; j++) {
                p[j] = expf(p[j] - mx);
                sum += p[j];
            }
            float inv = 1.0f / sum;
            for (int j = 0; j <= t; j++) p[j] *= inv;
            /* weighted sum of values, summed over j in order */
            for (int e = 0; e < hs; e++) oh[e] = 0.0f;
            for (int j = 0; j <= t; j++) {
                const float *vh = vc + (size_t)j * D + h * hs;
                for (int e = 0; e < hs; e++) oh[e] += p[j] * vh[e];
            }
        }
    }
}

/* ---- training ops ------------------------------------------------------------ */

/* dW += dout^T in, db += column sums of dout, din = dout W; each sum in
 * index order. dW, db, din may each be NULL (skipped). */
static void ref_matmul_backward(float *din, float *dW, float *db, const float *dout,
                                const float *in, const float *W, int n, int in_dim, int out_dim) {
    if (din)
        for (int i = 0; i < n; i++)
            for (int k = 0; k < in_dim; k++) {
                float acc = 0.0f;
                for (int o = 0; o < out_dim; o++)
                    acc += dout[(size_t)i * out_dim + o] * W[(size_t)o * in_dim + k];
                din[(size_t)i * in_dim + k] = acc;
            }
    if (dW)
        for (int o = 0; o < out_dim; o++)
            for (int k = 0; k < in_dim; k++) {
                float acc = 0.0f;
                for (int i = 0; i < n; i++)
                    acc += dout[(size_t)i * out_dim + o] * in[(size_t)i * in_dim + k];
                dW[(size_t)o * in_dim + k] += acc;
            }
    if (db)
        for (int o = 0; o < out_dim; o++) {
            float acc = 0.0f;
            for (int i = 0; i < n; i++) acc += dout[(size_t)i * out_dim + o];
            db[o] += acc;
        }
}

/* ref_layernorm, also saving the row statistics it used */
static void ref_layernorm_train(float *out, float *mu, float *rstd, const float *in,
                                const float *w, const float *b, int n, int D, float eps) {
    for (int i = 0; i < n; i++) {
        const float *x = in + (size_t)i * D;
        float *y = out + (size_t)i * D;
        double mean = 0.0, var = 0.0;
        for (int j = 0; j < D; j++) mean += x[j];
        mean /= D;
        for (int j = 0; j < D; j++) {
            double dx = x[j] - mean;
            var += dx * dx;
        }
        var /= D;
        float rs = (float)(1.0 / sqrt(var + eps));
        float m = (float)mean;
        for (int j = 0; j < D; j++) y[j] = (x[j] - m) * rs * w[j] + b[j];
        mu[i] = m;
        rstd[i] = rs;
    }
}

/* With xh = (x - mu) rstd and g = dout * w:
 * din = rstd (g - mean(g) - xh mean(g xh)), dw += dout xh, db += dout.
 * The two row means are summed in double. dw, db may be NULL (skipped). */
static void ref_layernorm_backward(float *din, float *dw, float *db, const float *dout,
                                   const float *in, const float *mu, const float *rstd,
                                   const float *w, int n, int D) {
    for (int i = 0; i < n; i++) {
        const float *x = in + (size_t)i * D, *dy = dout + (size_t)i * D;
        float *dx = din + (size_t)i * D;
        float m = mu[i], rs = rstd[i];
        double sg = 0.0, sgx = 0.0;
        for (int j = 0; j < D; j++) {
            float g = dy[j] * w[j];
            sg += g;
            sgx += (double)g * ((x[j] - m) * rs);
        }
        float mg = (float)(sg / D), mgx = (float)(sgx / D);
        for (int j = 0; j < D; j++) {
            float xh = (x[j] - m) * rs;
            dx[j] = rs * (dy[j] * w[j] - mg - xh * mgx);
        }
    }
    for (int i = 0; i < n && (dw || db); i++)
        for (int j = 0; j < D; j++) {
            float dy = dout[(size_t)i * D + j];
            if (dw) dw[j] += dy * ((in[(size_t)i * D + j] - mu[i]) * rstd[i]);
            if (db) db[j] += dy;
        }
}

/* gelu'(x) = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) s (1 + 3 0.044715 x^2),
 * u = s (x + 0.044715 x^3), s = sqrt(2/pi) */
static void ref_gelu_backward(float *din, const float *dout, const float *in, int n) {
    const float s = 0.7978845608028654f;
    for (int i = 0; i < n; i++) {
        float x = in[i];
        float t = tanhf(s * (x + 0.044715f * x * x * x));
        float dg = 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * s * (1.0f + 0.134145f * x * x);
        din[i] = dout[i] * dg;
    }
}

/* ref_attention over each window's own steps (start = 0), with q, k, v read
 * from the packed qkv rows and the probabilities kept in probs. */
static void ref_attention_train(float *out, float *probs, const float *qkv, int nb, int n,
                                int D, int H) {
    int hs = D / H;
    size_t D3 = (size_t)3 * D;
    float scale = 1.0f / sqrtf((float)hs);
    for (int b = 0; b < nb; b++) {
        const float *qw = qkv + (size_t)b * n * D3;     /* window b's rows */
        for (int i = 0; i < n; i++)
            for (int h = 0; h < H; h++) {
                const float *qh = qw + (size_t)i * D3 + h * hs;
                float *oh = out + ((size_t)b * n + i) * D + h * hs;
                float *p = probs + (((size_t)b * H + h) * n + i) * n;
                float mx = -INFINITY;
                for (int j = 0; j <= i; j++) {
                    const float *kh = qw + (size_t)j * D3 + D + h * hs;
                    float acc = 0.0f;
                    for (int e = 0; e < hs; e++) acc += qh[e] * kh[e];
                    p[j] = acc * scale;
                    if (p[j] > mx) mx = p[j];
                }
                float sum = 0.0f;
                for (int j = 0; j <= i; j++) {
                    p[j] = expf(p[j] - mx);
                    sum += p[j];
                }
                float inv = 1.0f / sum;
                for (int j = 0; j <= i; j++) p[j] *= inv;
                for (int j = i + 1; j < n; j++) p[j] = 0.0f;
                for (int e = 0; e < hs; e++) oh[e] = 0.0f;
                for (int j = 0; j <= i; j++) {
                    const float *vh = qw + (size_t)j * D3 + 2 * D + h * hs;
                    for (int e = 0; e < hs; e++) oh[e] += p[j] * vh[e];
                }
            }
    }
}

/* With P the probabilities, dP_ij = dout_i . v_j and
 * dS_ij = P_ij (dP_ij - sum_j' P_ij' dP_ij') (softmax backward):
 * dq_i = scale sum_j dS_ij k_j, dk_j = scale sum_i dS_ij q_i, dv_j = sum_i P_ij dout_i. */
static void ref_attention_backward(float *dqkv, const float *dout, const float *probs,
                                   const float *qkv, int nb, int n, int D, int H) {
    int hs = D / H;
    size_t D3 = (size_t)3 * D;
    float scale = 1.0f / sqrtf((float)hs);
    for (size_t r = 0; r < (size_t)nb * n * D3; r++) dqkv[r] = 0.0f;
    for (int b = 0; b < nb; b++) {
        const float *qw = qkv + (size_t)b * n * D3;
        float *dw = dqkv + (size_t)b * n * D3;
        for (int h = 0; h < H; h++)
            for (int i = 0; i < n; i++) {
                const float *p = probs + (((size_t)b * H + h) * n + i) * n;
                const float *dy = dout + ((size_t)b * n + i) * D + h * hs;
                const float *qh = qw + (size_t)i * D3 + h * hs;
                float *dqh = dw + (size_t)i * D3 + h * hs;
                float dot = 0.0f;           /* sum_j P_ij dP_ij */
                for (int j = 0; j <= i; j++) {
                    const float *vh = qw + (size_t)j * D3 + 2 * D + h * hs;
                    float dp = 0.0f;
                    for (int e = 0; e < hs; e++) dp += dy[e] * vh[e];
                    dot += p[j] * dp;
                }
                for (int j = 0; j <= i; j++) {
                    const float *kh = qw + (size_t)j * D3 + D + h * hs;
                    const float *vh = qw + (size_t)j * D3 + 2 * D + h * hs;
                    float *dkh = dw + (size_t)j * D3 + D + h * hs;
                    float *dvh = dw + (size_t)j * D3 + 2 * D + h * hs;
                    float dp = 0.0f;
                    for (int e = 0; e < hs; e++) dp += dy[e] * vh[e];
                    float ds = p[j] * (dp - dot) * scale;
                    for (int e = 0; e < hs; e++) {
                        dqh[e] += ds * kh[e];
                        dkh[e] += ds * qh[e];
                        dvh[e] += p[j] * dy[e];
                    }
                }
            }
    }
}

const Ops ops_cpu_ref = {
    .name = "ref",
    .matmul = ref_matmul,
    .layernorm = ref_layernorm,
    .gelu = ref_gelu,
    .attention = ref_attention,
    .matmul_backward = ref_matmul_backward,
    .layernorm_train = ref_layernorm_train,
    .layernorm_backward = ref_layernorm_backward,
    .gelu_backward = ref_gelu_backward,
    .attention_train = ref_attention_train,
    .attention_backward = ref_attention_backward,
};

/* The BLAS backend runs OpenBLAS on one thread: tflm splits the work itself
 * over fixed tiles with OpenMP (faster on these small shapes, DESIGN §6,
 * and results that do not depend on the thread count). */
const Ops *ops_get(int use_blas) {
#ifdef HAVE_BLAS
    if (use_blas) {
#ifdef OPENBLAS_VERSION
        openblas_set_num_threads(1);
#endif
        return &ops_cpu_blas;
    }
#endif
    (void)use_blas;
    return &ops_cpu_ref;
}

#ifndef HAVE_CUDA
/* built without the CUDA backend (configure --with-cuda builds kernels/cuda) */
const Ops *ops_cuda_get(void) {
    return NULL;
}

const char *ops_cuda_error(void) {
    return "this tflm was built without CUDA (configure --with-cuda)";
}
#endif
