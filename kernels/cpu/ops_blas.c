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
 * Without BLAS (configure --without-blas) this table runs the reference
 * loops of ops_ref.c, row-parallel; matmul, layernorm and attention are then
 * identical to ops_cpu_ref, gelu within 1e-6. */
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
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
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
        for (int i = c * E; i < e1; i++) {
            float x = in[i];
            out[i] = x / (1.0f + exp_approx(s2 * (x + 0.044715f * x * x * x)));
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
    float sum = 0.0f;
    for (int j = 0; j < len; j++) {
        p[j] = exp_approx(p[j] - mx);
        sum += p[j];
    }
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

const Ops ops_cpu_blas = {
    .name = "blas",
    .matmul = blas_matmul,
    .layernorm = par_layernorm,
    .gelu = par_gelu,
    .attention = blas_attention,
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

const Ops ops_cpu_blas = {
    .name = "ref-omp",
    .matmul = par_matmul,
    .layernorm = par_layernorm,
    .gelu = par_gelu,
    .attention = par_attention,
};

#endif /* HAVE_BLAS */
