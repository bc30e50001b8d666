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

const Ops ops_cpu_ref = {
    .name = "ref",
    .matmul = ref_matmul,
    .layernorm = ref_layernorm,
    .gelu = ref_gelu,
    .attention = ref_attention,
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
