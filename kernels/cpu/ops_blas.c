/* ops_blas.c: the fast CPU ops: OpenBLAS for matrix products and attention,
 * OpenMP across fixed tiles (kernels/ops.h).
 *
 * Determinism: the work is cut into tiles whose shapes depend only on the
 * problem size, never on the thread count; each tile is one BLAS call or
 * one plain loop, run by one thread, with OpenBLAS itself on one
 * thread (ops_get). So every output element is computed by the same code
 * in the same order whatever the number of threads, and results are
 * bit-for-bit identical for 1 or many threads.
 *
 * GELU and the softmax use a branch-free exp (exp_approx, within ~1e-7
 * relative of expf) instead of tanhf/expf, which cost 10-30 ns each.
 *
 * The training ops follow the same rules: matmul_backward tiles dW over
 * its own elements (one sgemm over all rows per tile), attention runs one
 * task per (window, head), and the reductions over rows (db, LayerNorm's
 * dw, db) go by column chunks in row order.
 *
 * Without BLAS (configure --without-blas) this table runs the reference
 * loops of ops_ref.c, row-parallel; matmul, layernorm and attention (and
 * their training ops) are then identical to ops_cpu_ref, gelu within 1e-6. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "config.h"
#include "ops.h"
#ifdef HAVE_BLAS
#include <cblas.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

/* Below this many multiply-adds a parallel region costs more than it saves.
 * (It only decides whether threads are used, never how the work is cut.) */
#define PAR_MIN_WORK (1L << 15)

static int thread_id(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* ---- layernorm (the reference loop over row chunks) and gelu ------------- */

static void par_layernorm(float *out, const float *in, const float *w, const float *b,
                          int n, int D, float eps) {
    const int R = 16;                       /* rows per chunk */
    int chunks = (n + R - 1) / R;
    #pragma omp parallel for schedule(static) if ((long)n * D >= PAR_MIN_WORK)
    for (int c = 0; c < chunks; c++) {
        int r0 = c * R, rows = n - r0 < R ? n - r0 : R;
        ops_cpu_ref.layernorm(out + (size_t)r0 * D, in + (size_t)r0 * D, w, b, rows, D, eps);
    }
}

/* e^x, about 1 ulp for -87 <= x <= 88 (clamped outside): x = k ln2 + r,
 * |r| <= ln2/2, e^r by the Cephes expf polynomial, 2^k through the exponent
 * bits. No calls, no table. */
static inline float exp_approx(float x) {
    /* x = clamp(x, -87, 88) on the bits: integer selects vectorise under
     * "#pragma omp simd" where float compares do not (GCC, trapping math);
     * the same value for every x, and NaN stays NaN */
    int32_t xb;
    memcpy(&xb, &x, sizeof xb);
    int32_t mag = xb & 0x7fffffff;
    int32_t lim = xb < 0 ? 0x42ae0000 : 0x42b00000;            /* 87.0f, 88.0f */
    mag = (mag > lim && mag <= 0x7f800000) ? lim : mag;
    xb = (int32_t)((uint32_t)xb & 0x80000000u) | mag;
    memcpy(&x, &xb, sizeof x);
    float k = (x * 1.44269504f + 12582912.0f) - 12582912.0f;   /* round(x / ln2) */
    float r = x - k * 0.693359375f;                            /* ln2, high part */
    r = r + k * 2.12194440e-4f;                                /* low part */
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)k + 127) << 23;
    float two_k;
    memcpy(&two_k, &bits, sizeof two_k);
    return p * two_k;
}

/* GELU, tanh form, written as x sigmoid(2u): 0.5 x (1 + tanh u) = x / (1 + e^-2u) */
static void par_gelu(float *out, const float *in, int n) {
    const int E = 4096;                     /* elements per chunk */
    const float s2 = -2.0f * 0.7978845608028654f;
    int chunks = (n + E - 1) / E;
    #pragma omp parallel for schedule(static) if (n >= 4 * E)
    for (int c = 0; c < chunks; c++) {
        int e1 = (c + 1) * E < n ? (c + 1) * E : n;
        #pragma omp simd
        for (int i = c * E; i < e1; i++) {
            float x = in[i];
            out[i] = x / (1.0f + exp_approx(s2 * (x + 0.044715f * x * x * x)));
        }
    }
}

/* ---- training: layernorm with statistics, layernorm and gelu backward ------ */

static void par_layernorm_train(float *out, float *mu, float *rstd, const float *in,
                                const float *w, const float *b, int n, int D, float eps) {
    const int R = 16;                       /* rows per chunk */
    int chunks = (n + R - 1) / R;
    #pragma omp parallel for schedule(static) if ((long)n * D >= PAR_MIN_WORK)
    for (int c = 0; c < chunks; c++) {
        int r0 = c * R, rows = n - r0 < R ? n - r0 : R;
        ops_cpu_ref.layernorm_train(out + (size_t)r0 * D, mu + r0, rstd + r0,
                                    in + (size_t)r0 * D, w, b, rows, D, eps);
    }
}

/* din by row chunks (the reference loop), then dw and db by column chunks,
 * each column summed over the rows in order as the reference does. */
static void par_layernorm_backward(float *din, float *dw, float *db, const float *dout,
                                   const float *in, const float *mu, const float *rstd,
                                   const float *w, int n, int D) {
    const int R = 16, C = 64;               /* rows, columns per chunk */
    int chunks = (n + R - 1) / R, cchunks = (D + C - 1) / C;
    int par = (long)n * D >= PAR_MIN_WORK;
    #pragma omp parallel for schedule(static) if (par)
    for (int c = 0; c < chunks; c++) {
        int r0 = c * R, rows = n - r0 < R ? n - r0 : R;
        ops_cpu_ref.layernorm_backward(din + (size_t)r0 * D, NULL, NULL, dout + (size_t)r0 * D,
                                       in + (size_t)r0 * D, mu + r0, rstd + r0, w, rows, D);
    }
    #pragma omp parallel for schedule(static) if (par)
    for (int c = 0; c < cchunks; c++) {
        int j0 = c * C, j1 = j0 + C < D ? j0 + C : D;
        for (int i = 0; i < n; i++) {
            const float *x = in + (size_t)i * D, *dy = dout + (size_t)i * D;
            float m = mu[i], rs = rstd[i];
            #pragma omp simd
            for (int j = j0; j < j1; j++) {
                dw[j] += dy[j] * ((x[j] - m) * rs);
                db[j] += dy[j];
            }
        }
    }
}

/* gelu'(x) with e = e^-2u, sg = 1 / (1 + e) = 0.5 (1 + tanh u), 1 - sg = e sg:
 * sg (1 + x sqrt(2/pi) (1 + 3 0.044715 x^2) 2 e sg), with no cancellation.
 * Finite for every finite x (a NaN here once stopped a training run). */
static void par_gelu_backward(float *din, const float *dout, const float *in, int n) {
    const int E = 4096;                     /* elements per chunk */
    const float s = 0.7978845608028654f;
    int chunks = (n + E - 1) / E;
    #pragma omp parallel for schedule(static) if (n >= 4 * E)
    for (int c = 0; c < chunks; c++) {
        int e1 = (c + 1) * E < n ? (c + 1) * E : n;
        #pragma omp simd
        for (int i = c * E; i < e1; i++) {
            float x = in[i];
            float e = exp_approx(-2.0f * s * (x + 0.044715f * x * x * x));
            float sg = 1.0f / (1.0f + e), es = e * sg;   /* es = 1 - sg, in [0, 1] */
            /* es first: x (1 + ...) e alone overflows float for x < -15 */
            float dg = sg * (1.0f + x * s * (1.0f + 0.134145f * x * x) * 2.0f * es);
            din[i] = dout[i] * dg;
        }
    }
}

#ifdef HAVE_BLAS

/* ---- matmul: sgemv for one row, sgemm over fixed tiles otherwise ----------- */

/* Tile sizes (measured on the dev machine, one core, SkylakeX kernels):
 * 128 x 256 keeps ~90% of one big sgemm's rate and still gives a window of
 * 256 rows two tiles; batches of 1024+ rows use 256-row tiles (~100%). */
#define GEMV_ROWS 128   /* output features per sgemv tile (n == 1) */
#define GEMM_N 256      /* output features per sgemm tile */

static void blas_matmul(float *out, const float *in, const float *w, const float *b,
                        int n, int in_dim, int out_dim) {
    long work = (long)n * in_dim * out_dim;
    float beta = b ? 1.0f : 0.0f;           /* out is pre-filled with the bias */
    if (n == 1) {
        int tiles = (out_dim + GEMV_ROWS - 1) / GEMV_ROWS;
        #pragma omp parallel for schedule(static) if (work >= 2 * PAR_MIN_WORK)
        for (int t = 0; t < tiles; t++) {
            int o0 = t * GEMV_ROWS;
            int m = out_dim - o0 < GEMV_ROWS ? out_dim - o0 : GEMV_ROWS;
            if (b) memcpy(out + o0, b + o0, (size_t)m * sizeof(float));
            cblas_sgemv(CblasRowMajor, CblasNoTrans, m, in_dim, 1.0f,
                        w + (size_t)o0 * in_dim, in_dim, in, 1, beta, out + o0, 1);
        }
        return;
    }
    int GEMM_M = n >= 1024 ? 256 : 128;     /* rows per sgemm tile */
    int tm = (n + GEMM_M - 1) / GEMM_M, tn = (out_dim + GEMM_N - 1) / GEMM_N;
    #pragma omp parallel for schedule(static) if (work >= 2 * PAR_MIN_WORK)
    for (int t = 0; t < tm * tn; t++) {
        int r0 = (t / tn) * GEMM_M, c0 = (t % tn) * GEMM_N;
        int m = n - r0 < GEMM_M ? n - r0 : GEMM_M;
        int nn = out_dim - c0 < GEMM_N ? out_dim - c0 : GEMM_N;
        float *o = out + (size_t)r0 * out_dim + c0;
        if (b)
            for (int i = 0; i < m; i++)
                memcpy(o + (size_t)i * out_dim, b + c0, (size_t)nn * sizeof(float));
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, nn, in_dim, 1.0f,
                    in + (size_t)r0 * in_dim, in_dim, w + (size_t)c0 * in_dim, in_dim,
                    beta, o, out_dim);
    }
}

/* Softmax of p[0..len-1] in place, summed in order. */
static void softmax(float *p, int len) {
    float mx = p[0];
    for (int j = 1; j < len; j++) if (p[j] > mx) mx = p[j];
    #pragma omp simd
    for (int j = 0; j < len; j++) p[j] = exp_approx(p[j] - mx);
    float sum = 0.0f;
    for (int j = 0; j < len; j++) sum += p[j];
    float inv = 1.0f / sum;
    for (int j = 0; j < len; j++) p[j] *= inv;
}

/* ---- attention -------------------------------------------------------------
 * One new step (generation): per head, two sgemv over the cached steps.
 * Several: per head and block of R rows, the score tile S = Q K^T by sgemm
 * (R rows x the steps the block's last row sees), masked softmax by row,
 * then S V by sgemm. S lives on the stack; R depends only on the number of
 * steps, so the tiles never depend on the thread count. */

#define ATT_TILE 16384  /* floats in a score tile (64 KiB) */
#define ATT_ROWS 64     /* most rows in a tile */

static void blas_attention(float *out, const float *q, const float *kc, const float *vc,
                           int start, int n, int D, int H, float *scratch) {
    int hs = D / H, steps = start + n;
    float scale = 1.0f / sqrtf((float)hs);
    long work = (long)n * steps * D;
    int R = ATT_TILE / steps < ATT_ROWS ? ATT_TILE / steps : ATT_ROWS;

    if (n == 1 || R < 8) {
        /* one (row, head) per task, scores in the caller's scratch */
        #pragma omp parallel for schedule(static) if (work >= PAR_MIN_WORK)
        for (int task = 0; task < n * H; task++) {
            int i = task / H, h = task % H, t = start + i;
            float *p = scratch + (size_t)thread_id() * steps;
            cblas_sgemv(CblasRowMajor, CblasNoTrans, t + 1, hs, scale, kc + h * hs, D,
                        q + (size_t)i * D + h * hs, 1, 0.0f, p, 1);
            softmax(p, t + 1);
            cblas_sgemv(CblasRowMajor, CblasTrans, t + 1, hs, 1.0f, vc + h * hs, D,
                        p, 1, 0.0f, out + (size_t)i * D + h * hs, 1);
        }
        return;
    }

    int blocks = (n + R - 1) / R;
    #pragma omp parallel for schedule(static) if (work >= PAR_MIN_WORK)
    for (int task = 0; task < blocks * H; task++) {
        float S[ATT_TILE];
        int i0 = (task / H) * R, h = task % H;
        int m = n - i0 < R ? n - i0 : R;
        int cols = start + i0 + m;          /* steps seen by the block's last row */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, cols, hs, scale,
                    q + (size_t)i0 * D + h * hs, D, kc + h * hs, D, 0.0f, S, cols);
        for (int r = 0; r < m; r++) {
            int len = start + i0 + r + 1;   /* row r sees steps 0..start+i0+r */
            float *p = S + (size_t)r * cols;
            softmax(p, len);
            for (int j = len; j < cols; j++) p[j] = 0.0f;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, hs, cols, 1.0f,
                    S, cols, vc + h * hs, D, 0.0f, out + (size_t)i0 * D + h * hs, D);
    }
}

/* ---- training: matmul backward ----------------------------------------------
 * din by (row, column) tiles as in blas_matmul, each one sgemm over all of
 * out; dW by (out, in) tiles, each one sgemm over all n rows; db by column
 * chunks, summed over rows in order. */

#define DW_ROWS 128     /* rows of dW per tile */

static void blas_matmul_backward(float *din, float *dW, float *db, const float *dout,
                                 const float *in, const float *W, int n, int in_dim,
                                 int out_dim) {
    if (n <= 0) return;
    int par = (long)n * in_dim * out_dim >= 2 * PAR_MIN_WORK;
    if (din) {
        int GEMM_M = n >= 1024 ? 256 : 128;
        int tm = (n + GEMM_M - 1) / GEMM_M, tn = (in_dim + GEMM_N - 1) / GEMM_N;
        #pragma omp parallel for schedule(static) if (par)
        for (int t = 0; t < tm * tn; t++) {
            int r0 = (t / tn) * GEMM_M, c0 = (t % tn) * GEMM_N;
            int m = n - r0 < GEMM_M ? n - r0 : GEMM_M;
            int nn = in_dim - c0 < GEMM_N ? in_dim - c0 : GEMM_N;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, nn, out_dim, 1.0f,
                        dout + (size_t)r0 * out_dim, out_dim, W + c0, in_dim, 0.0f,
                        din + (size_t)r0 * in_dim + c0, in_dim);
        }
    }
    if (dW) {
        int tm = (out_dim + DW_ROWS - 1) / DW_ROWS, tn = (in_dim + GEMM_N - 1) / GEMM_N;
        #pragma omp parallel for schedule(static) if (par)
        for (int t = 0; t < tm * tn; t++) {
            int o0 = (t / tn) * DW_ROWS, c0 = (t % tn) * GEMM_N;
            int m = out_dim - o0 < DW_ROWS ? out_dim - o0 : DW_ROWS;
            int nn = in_dim - c0 < GEMM_N ? in_dim - c0 : GEMM_N;
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, m, nn, n, 1.0f,
                        dout + o0, out_dim, in + c0, in_dim, 1.0f,
                        dW + (size_t)o0 * in_dim + c0, in_dim);
        }
    }
    if (db) {
        enum { C = 256 };                   /* columns per chunk */
        int chunks = (out_dim + C - 1) / C;
        #pragma omp parallel for schedule(static) if (par && chunks > 1)
        for (int c = 0; c < chunks; c++) {
            float acc[C];
            int j0 = c * C, w = out_dim - j0 < C ? out_dim - j0 : C;
            for (int j = 0; j < w; j++) acc[j] = 0.0f;
            for (int i = 0; i < n; i++) {
                const float *dy = dout + (size_t)i * out_dim + j0;
                #pragma omp simd
                for (int j = 0; j < w; j++) acc[j] += dy[j];
            }
            for (int j = 0; j < w; j++) db[j0 + j] += acc[j];
        }
    }
}

/* ---- training: attention over whole windows ------------------------------------
 * One task per (window, head), run by one thread. The rows go in blocks of
 * R (att_rows: depends on n only); block i0..i0+m-1 sees columns
 * 0..i0+m-1, so most of the masked half is never computed.
 * Forward: the scores go straight into probs, softmax by row, then P V.
 * Backward per block, with T a stack tile [m, cols]:
 *   T = dO V^T;  dV += P^T dO;  T = P (T - rowsum(P T)) scale (= dS scale);
 *   dQ = T K;  dK += T^T Q. */

static int att_rows(int n) {
    int R = ATT_TILE / (n > 0 ? n : 1);
    if (R > ATT_ROWS) R = ATT_ROWS;
    return R < 1 ? 1 : R;
}

static void blas_attention_train(float *out, float *probs, const float *qkv, int nb, int n,
                                 int D, int H) {
    int hs = D / H, D3 = 3 * D, R = att_rows(n);
    int blocks = (n + R - 1) / R;
    float scale = 1.0f / sqrtf((float)hs);
    #pragma omp parallel for schedule(static) if ((long)nb * n * n * D >= PAR_MIN_WORK)
    for (int task = 0; task < nb * H; task++) {
        int b = task / H, h = task % H;
        const float *q = qkv + (size_t)b * n * D3 + h * hs, *k = q + D, *v = q + 2 * D;
        float *P = probs + (size_t)task * n * n;        /* task = b * H + h */
        float *o = out + (size_t)b * n * D + h * hs;
        for (int blk = 0; blk < blocks; blk++) {
            int i0 = blk * R, m = n - i0 < R ? n - i0 : R, cols = i0 + m;
            float *S = P + (size_t)i0 * n;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, cols, hs, scale,
                        q + (size_t)i0 * D3, D3, k, D3, 0.0f, S, n);
            for (int r = 0; r < m; r++) {
                int len = i0 + r + 1;
                float *p = S + (size_t)r * n;
                softmax(p, len);
                for (int j = len; j < n; j++) p[j] = 0.0f;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, hs, cols, 1.0f,
                        S, n, v, D3, 0.0f, o + (size_t)i0 * D, D);
        }
    }
}

static void blas_attention_backward(float *dqkv, const float *dout, const float *probs,
                                    const float *qkv, int nb, int n, int D, int H) {
    int hs = D / H, D3 = 3 * D, R = att_rows(n);
    int blocks = (n + R - 1) / R;
    float scale = 1.0f / sqrtf((float)hs);
    #pragma omp parallel for schedule(static) if ((long)nb * n * n * D >= PAR_MIN_WORK)
    for (int task = 0; task < nb * H; task++) {
        float T[ATT_TILE];
        int b = task / H, h = task % H;
        size_t w0 = (size_t)b * n * D3 + h * hs;
        const float *q = qkv + w0, *k = q + D, *v = q + 2 * D;
        float *dq = dqkv + w0, *dk = dq + D, *dv = dq + 2 * D;
        const float *P = probs + (size_t)task * n * n;
        const float *dO = dout + (size_t)b * n * D + h * hs;
        for (int i = 0; i < n; i++) {
            memset(dk + (size_t)i * D3, 0, (size_t)hs * sizeof(float));
            memset(dv + (size_t)i * D3, 0, (size_t)hs * sizeof(float));
        }
        for (int blk = 0; blk < blocks; blk++) {
            int i0 = blk * R, m = n - i0 < R ? n - i0 : R, cols = i0 + m;
            const float *Pb = P + (size_t)i0 * n, *dOb = dO + (size_t)i0 * D;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, cols, hs, 1.0f,
                        dOb, D, v, D3, 0.0f, T, cols);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, cols, hs, m, 1.0f,
                        Pb, n, dOb, D, 1.0f, dv, D3);
            for (int r = 0; r < m; r++) {
                int len = i0 + r + 1;
                const float *p = Pb + (size_t)r * n;
                float *t = T + (size_t)r * cols, dot = 0.0f;
                for (int j = 0; j < len; j++) dot += p[j] * t[j];
                for (int j = 0; j < len; j++) t[j] = p[j] * (t[j] - dot) * scale;
                for (int j = len; j < cols; j++) t[j] = 0.0f;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, hs, cols, 1.0f,
                        T, cols, k, D3, 0.0f, dq + (size_t)i0 * D3, D3);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, cols, hs, m, 1.0f,
                        T, cols, q + (size_t)i0 * D3, D3, 1.0f, dk, D3);
        }
    }
}

const Ops ops_cpu_blas = {
    .name = "blas",
    .matmul = blas_matmul,
    .layernorm = par_layernorm,
    .gelu = par_gelu,
    .attention = blas_attention,
    .matmul_backward = blas_matmul_backward,
    .layernorm_train = par_layernorm_train,
    .layernorm_backward = par_layernorm_backward,
    .gelu_backward = par_gelu_backward,
    .attention_train = blas_attention_train,
    .attention_backward = blas_attention_backward,
};

#else /* !HAVE_BLAS */

/* ---- no BLAS: the reference loops, rows in parallel ----------------------- */

static void par_matmul(float *out, const float *in, const float *w, const float *b,
                       int n, int in_dim, int out_dim) {
    #pragma omp parallel for schedule(static) if ((long)n * in_dim * out_dim >= 2 * PAR_MIN_WORK)
    for (int i = 0; i < n; i++)
        ops_cpu_ref.matmul(out + (size_t)i * out_dim, in + (size_t)i * in_dim, w, b,
                           1, in_dim, out_dim);
}

static void par_attention(float *out, const float *q, const float *kc, const float *vc,
                          int start, int n, int D, int H, float *scratch) {
    int steps = start + n;
    #pragma omp parallel for schedule(static) if ((long)n * steps * D >= PAR_MIN_WORK)
    for (int i = 0; i < n; i++)
        ops_cpu_ref.attention(out + (size_t)i * D, q + (size_t)i * D, kc, vc, start + i, 1,
                              D, H, scratch + (size_t)thread_id() * steps);
}

/* din by rows, dW and db by rows of dW, each sum in the reference's order */
static void par_matmul_backward(float *din, float *dW, float *db, const float *dout,
                                const float *in, const float *W, int n, int in_dim,
                                int out_dim) {
    int par = (long)n * in_dim * out_dim >= 2 * PAR_MIN_WORK;
    if (din) {
        #pragma omp parallel for schedule(static) if (par)
        for (int i = 0; i < n; i++)
            ops_cpu_ref.matmul_backward(din + (size_t)i * in_dim, NULL, NULL,
                                        dout + (size_t)i * out_dim, NULL, W, 1, in_dim, out_dim);
    }
    #pragma omp parallel for schedule(static) if (par)
    for (int o = 0; o < out_dim; o++) {
        for (int k = 0; dW && k < in_dim; k++) {
            float acc = 0.0f;
            for (int i = 0; i < n; i++)
                acc += dout[(size_t)i * out_dim + o] * in[(size_t)i * in_dim + k];
            dW[(size_t)o * in_dim + k] += acc;
        }
        if (db) {
            float acc = 0.0f;
            for (int i = 0; i < n; i++) acc += dout[(size_t)i * out_dim + o];
            db[o] += acc;
        }
    }
}

/* the reference, one window per task */
static void par_attention_train(float *out, float *probs, const float *qkv, int nb, int n,
                                int D, int H) {
    #pragma omp parallel for schedule(static) if ((long)nb * n * n * D >= PAR_MIN_WORK)
    for (int b = 0; b < nb; b++)
        ops_cpu_ref.attention_train(out + (size_t)b * n * D, probs + (size_t)b * H * n * n,
                                    qkv + (size_t)b * n * 3 * D, 1, n, D, H);
}

static void par_attention_backward(float *dqkv, const float *dout, const float *probs,
                                   const float *qkv, int nb, int n, int D, int H) {
    #pragma omp parallel for schedule(static) if ((long)nb * n * n * D >= PAR_MIN_WORK)
    for (int b = 0; b < nb; b++)
        ops_cpu_ref.attention_backward(dqkv + (size_t)b * n * 3 * D, dout + (size_t)b * n * D,
                                       probs + (size_t)b * H * n * n,
                                       qkv + (size_t)b * n * 3 * D, 1, n, D, H);
}

const Ops ops_cpu_blas = {
    .name = "ref-omp",
    .matmul = par_matmul,
    .layernorm = par_layernorm,
    .gelu = par_gelu,
    .attention = par_attention,
    .matmul_backward = par_matmul_backward,
    .layernorm_train = par_layernorm_train,
    .layernorm_backward = par_layernorm_backward,
    .gelu_backward = par_gelu_backward,
    .attention_train = par_attention_train,
    .attention_backward = par_attention_backward,
};

#endif /* HAVE_BLAS */
