/* ops_cuda.h: the CUDA backend's host-side API (kernels/cuda/ops_cuda.c).
 *
 * ops_cuda_get() (declared in kernels/ops.h) gives the ops table; the
 * functions below are the other op families of the backend, as batch
 * calls over host arrays: the mixture couplings (double precision, as
 * src/mixture.c), the codebook encoder and decoder (src/codebook.c,
 * src/flow.c work_encode) and the AdamW step (src/train.c). Each copies its
 * inputs to the GPU, runs, copies the results back and returns TFLM_OK, or
 * a status with tflm_last_error() set: TFLM_EUNSUPPORTED when there is no
 * usable GPU, TFLM_ENUMERIC when a root finder failed (the first failing
 * element is named), TFLM_ENOMEM / TFLM_EIO for CUDA failures.
 *
 * Layouts: element r of a mix1 batch is channel r % c of its position,
 * prm [n, 3K] the head outputs of that channel ([a | m | v]), clampf [c, K].
 * mixd: logits [n, V], mu [V, d], logsig [V], z / y / lpc [n, d]. */
#ifndef TFLM_OPS_CUDA_H
#define TFLM_OPS_CUDA_H

#include <stddef.h>
#include "tflm.h"

#ifdef __cplusplus
extern "C" {
#endif

/* mix1 (affine = 0) or affine (affine = 1, K = 1): y[n] and logp[n] from x[n] */
tflm_status ops_cuda_mix1_forward(const float *prm, const float *clampf, int n, int c, int K,
                                  int affine, const double *x, double *y, double *logp);
/* the inverse: x[n] and logp[n] (may be NULL) from y[n] */
tflm_status ops_cuda_mix1_inverse(const float *prm, const float *clampf, int n, int c, int K,
                                  int affine, const double *y, double *x, double *logp);
/* mixd of n tokens: y, lpc (may be NULL) [n, d], logp [n] from z [n, d] */
tflm_status ops_cuda_mixd_forward(const float *logits, const float *mu, const float *logsig,
                                  int n, int V, int d, const double *z, double *y, double *lpc,
                                  double *logp);
tflm_status ops_cuda_mixd_inverse(const float *logits, const float *mu, const float *logsig,
                                  int n, int V, int d, const double *y, double *z, double *lpc,
                                  double *logp);

/* z [n, d] = mu[tok] + exp(logsig[tok]) eps (eps [n, d] may be NULL: mean) */
tflm_status ops_cuda_codebook_encode(const int *tok, const float *mu, const float *logsig,
                                     const double *eps, int n, int V, int d, float *z);
/* the decoder of n latents z [n, d]: logits [n, V] (may be NULL), argmax
 * ids, probability, entropy (nats), R = -LSE (each [n], each may be NULL) */
tflm_status ops_cuda_codebook_decode(const float *z, const float *mu, const float *logsig, int n,
                                     int V, int d, double *logits, int *ids, float *prob,
                                     float *entropy, double *R);

/* AdamW over n parameters (src/train.c optimize): w, m, v updated in place.
 * c1, c2: the bias corrections 1 - b^t; scale: the clipping factor. */
tflm_status ops_cuda_adamw(float *w, float *m, float *v, const float *g, size_t n, double lr,
                           double b1, double b2, double c1, double c2, double eps, double wd,
                           double scale);
/* sum of g^2 in double */
tflm_status ops_cuda_sumsq(const float *g, size_t n, double *out);

/* The GPU in use ("NVIDIA H200, compute capability 9.0"), or NULL. */
const char *ops_cuda_device_name(void);

#ifdef __cplusplus
}
#endif
#endif
