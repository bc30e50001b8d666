/* tcu.h: the CUDA kernels of tflm (the .cu files of kernels/cuda), as C entry points
 * that take DEVICE pointers and a stream. kernels/cuda/ops_cuda.c builds the
 * host-pointer ops table (kernels/ops.h) and the batch functions of
 * ops_cuda.h on top of them. Each launcher only queues work on the stream
 * and returns 0, or a cudaError_t / cublasStatus_t (non-zero) when the
 * launch itself failed; the caller synchronises and checks.
 *
 * Shapes and meanings are those of kernels/ops.h and src/internal.h; every
 * array is row-major. Scratch sizes are given per function. */
#ifndef TFLM_TCU_H
#define TFLM_TCU_H

#include <stddef.h>
#include <cuda_runtime_api.h>
#include <cublas_v2.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- matmul.cu (cuBLAS sgemm) -------------------------------------------- */
/* out[n, out] = in[n, in] @ w[out, in]^T + b[out] (b may be NULL) */
int tcu_matmul(cublasHandle_t h, cudaStream_t s, float *out, const float *in, const float *w,
               const float *b, int n, int in_dim, int out_dim);
/* din = dout @ W (din may be NULL); dW += dout^T in (may be NULL);
 * db += column sums of dout (may be NULL). scratch: tcu_colsum_scratch(n, out) floats */
int tcu_matmul_backward(cublasHandle_t h, cudaStream_t s, float *din, float *dW, float *db,
                        const float *dout, const float *in, const float *W, int n, int in_dim,
                        int out_dim, float *scratch);
/* column sums of a [n, cols] matrix added to acc[cols] (a fixed two-stage
 * order: deterministic) */
size_t tcu_colsum_scratch(int n, int cols);
int tcu_colsum_add(cudaStream_t s, float *acc, const float *x, int n, int cols, float *scratch);

/* ---- layernorm.cu --------------------------------------------------------- */
/* out = layernorm(in); mu, rstd [n] saved when non-NULL (layernorm_train) */
int tcu_layernorm(cudaStream_t s, float *out, float *mu, float *rstd, const float *in,
                  const float *w, const float *b, int n, int D, float eps);
/* din [n, D]; dw, db [D] += (may be NULL).
 * scratch: tcu_colsum_scratch(n, D) + n * D floats */
int tcu_layernorm_backward(cudaStream_t s, float *din, float *dw, float *db, const float *dout,
                           const float *in, const float *mu, const float *rstd, const float *w,
                           int n, int D, float *scratch);

/* ---- gelu.cu ---------------------------------------------------------------- */
int tcu_gelu(cudaStream_t s, float *out, const float *in, size_t n);
int tcu_gelu_backward(cudaStream_t s, float *din, const float *dout, const float *in, size_t n);

/* ---- attention.cu ----------------------------------------------------------- */
/* KV-cache attention (ops.h attention). scratch: n * H * (start + n) floats */
int tcu_attention(cudaStream_t s, float *out, const float *q, const float *kc, const float *vc,
                  int start, int n, int D, int H, float *scratch);
/* whole-window training attention: out [nb*n, D], probs [nb, H, n, n] */
int tcu_attention_train(cudaStream_t s, float *out, float *probs, const float *qkv, int nb, int n,
                        int D, int H);
/* dqkv [nb*n, 3D] (every element written). scratch: nb * H * n * n floats */
int tcu_attention_backward(cudaStream_t s, float *dqkv, const float *dout, const float *probs,
                           const float *qkv, int nb, int n, int D, int H, float *scratch);

/* ---- mixture.cu: the couplings in double precision (src/mixture.c) -------- */
/* Element r (r < n) is channel r % c: parameters prm + r * 3K ([a | m | v]),
 * clamp clampf + (r % c) * K. affine != 0: the closed-form affine map (K = 1).
 * status[r]: 0 ok, else a TCU_E* code (inverse only).
 * scratch: tcu_mix1_scratch(n, K) doubles. */
size_t tcu_mix1_scratch(int n, int K);
int tcu_mix1_forward(cudaStream_t s, const float *prm, const float *clampf, int n, int c, int K,
                     int affine, const double *x, double *y, double *logp, double *scratch);
int tcu_mix1_inverse(cudaStream_t s, const float *prm, const float *clampf, int n, int c, int K,
                     int affine, const double *y, double *x, double *logp, int *status,
                     double *scratch);
/* mixd of n tokens: logits [n, V], codebook mu [V, d], logsig [V]; z, y,
 * lpc [n, d] (lpc may be NULL); logp [n]. scratch: tcu_mixd_scratch(n, V) doubles */
size_t tcu_mixd_scratch(int n, int V);
int tcu_mixd_forward(cudaStream_t s, const float *logits, const float *mu, const float *logsig,
                     int n, int V, int d, const double *z, double *y, double *lpc, double *logp,
                     double *scratch);
int tcu_mixd_inverse(cudaStream_t s, const float *logits, const float *mu, const float *logsig,
                     int n, int V, int d, const double *y, double *z, double *lpc, double *logp,
                     int *status, double *scratch);
/* status codes of the root finder */
enum {
    TCU_OK = 0,
    TCU_E_TARGET = 1,    /* target y not finite */
    TCU_E_MIXTURE = 2,   /* mean or sd of the mixture not finite / zero */
    TCU_E_NAN = 3,       /* NaN during the search */
    TCU_E_BRACKET = 4,   /* root not bracketed after 64 doublings */
    TCU_E_CONVERGE = 5   /* no convergence in 100 steps */
};

/* ---- codebook.cu ------------------------------------------------------------ */
/* z[t, d] = mu[tok[t]] + exp(logsig[tok[t]]) * eps[t, d] (eps may be NULL: mean) */
int tcu_codebook_encode(cudaStream_t s, float *z, const int *tok, const float *mu,
                        const float *logsig, const double *eps, int n, int d);
/* logits[n, V] (double) of the tied decoder, DESIGN §2.1 */
int tcu_codebook_logits(cudaStream_t s, double *logits, const float *z, const float *mu,
                        const float *logsig, int n, int V, int d);
/* from logits [n, V]: argmax id, its probability, entropy (nats), R = -LSE
 * (any output may be NULL) */
int tcu_codebook_decode(cudaStream_t s, const double *logits, int n, int V, int *ids,
                        float *prob, float *entropy, double *R);

/* ---- adamw.cu ---------------------------------------------------------------- */
/* The trainer's AdamW step (src/train.c optimize), element-wise in double:
 * g' = g scale; m = b1 m + (1-b1) g'; v = b2 v + (1-b2) g'^2;
 * w -= lr ((m/c1) / (sqrt(v/c2) + eps) + wd w) */
int tcu_adamw(cudaStream_t s, float *w, float *m, float *v, const float *g, size_t n, double lr,
              double b1, double b2, double c1, double c2, double eps, double wd, double scale);
/* out[0] = sum of g^2 in double (fixed order). scratch: tcu_sumsq_scratch(n) doubles */
size_t tcu_sumsq_scratch(size_t n);
int tcu_sumsq(cudaStream_t s, const float *g, size_t n, double *out, double *scratch);

/* ---- probe (ops_cuda.c: checks that the kernel image runs on the device) -- */
int tcu_probe(cudaStream_t s, float *buf);

#ifdef __cplusplus
}
#endif
#endif
