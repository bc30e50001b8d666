/* kernels/ops.h: the small table of compute ops between the model and the
 * backends (ggml style). The CPU reference (kernels/cpu/ops_ref.c) is the
 * spec; every other backend (OpenBLAS, later CUDA) is tested against it.
 *
 * Dimension legend: n rows, in/out widths, D model width, H heads,
 * start = steps already in the KV cache. All arrays are row-major float. */
#ifndef TFLM_OPS_H
#define TFLM_OPS_H

#include <stddef.h>

typedef struct Ops {
    const char *name;
    /* out[n, out] = in[n, in] @ w[out, in]^T + b[out] (b may be NULL) */
    void (*matmul)(float *out, const float *in, const float *w, const float *b,
                   int n, int in_dim, int out_dim);
    /* out[n, D] = (in - mean) / sqrt(var + eps) * w + b, biased variance */
    void (*layernorm)(float *out, const float *in, const float *w, const float *b,
                      int n, int D, float eps);
    /* out[i] = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), i < n */
    void (*gelu)(float *out, const float *in, int n);
    /* causal multi-head attention of n new steps (absolute steps start..start+n-1)
     * q[n, D]; kc, vc [start+n, D] hold keys/values of all steps so far;
     * out[n, D] = concat_h softmax(q_h k_h^T / sqrt(D/H), masked) v_h.
     * scratch: at least (start+n) floats per thread. */
    void (*attention)(float *out, const float *q, const float *kc, const float *vc,
                      int start, int n, int D, int H, float *scratch);

    /* ---- training: forward ops that save what backward needs, and the
     * backward ops. Every backward op OVERWRITES the input gradient (din,
     * dqkv) and ACCUMULATES (+=) into weight gradients (dW, db, dw). */

    /* dW[out, in] += dout[n, out]^T @ in[n, in]; db[out] += column sums of
     * dout (db may be NULL); din[n, in] = dout @ W (din may be NULL). */
    void (*matmul_backward)(float *din, float *dW, float *db, const float *dout,
                            const float *in, const float *W, int n, int in_dim, int out_dim);
    /* layernorm, also saving each row's mean mu[n] and 1/sqrt(var + eps) rstd[n];
     * out equals layernorm's out bit for bit */
    void (*layernorm_train)(float *out, float *mu, float *rstd, const float *in, const float *w,
                            const float *b, int n, int D, float eps);
    /* din[n, D] = dL/din given dout = dL/dout; dw[D] += dL/dw, db[D] += dL/db
     * (mu, rstd from layernorm_train) */
    void (*layernorm_backward)(float *din, float *dw, float *db, const float *dout,
                               const float *in, const float *mu, const float *rstd,
                               const float *w, int n, int D);
    /* din[i] = dout[i] * gelu'(in[i]), i < n; din == dout is fine */
    void (*gelu_backward)(float *din, const float *dout, const float *in, int n);
    /* causal attention of nb independent windows of n steps (no cache).
     * qkv[nb*n, 3D]: row r holds [q | k | v] (the layout of attn.qkv's output);
     * out[nb*n, D] as attention's; probs[nb, H, n, n] the softmax rows
     * (masked entries 0). n <= ATT_TRAIN_MAX_N. */
    void (*attention_train)(float *out, float *probs, const float *qkv, int nb, int n, int D,
                            int H);
    /* dqkv[nb*n, 3D] = dL/dqkv given dout[nb*n, D] = dL/dout, probs from
     * attention_train. dqkv must not alias the inputs. */
    void (*attention_backward)(float *dqkv, const float *dout, const float *probs,
                               const float *qkv, int nb, int n, int D, int H);

    /* ---- optional, NULL in the CPU backends: constant data on a device.
     * pin declares host[0, bytes) constant until unpin(owner): the backend
     * keeps a device copy and reads it wherever an op's input lies inside
     * the range (the weights of a loaded model). Returns 0, or -1 when the
     * copy could not be made (the host data is then read as usual). */
    int (*pin)(const void *owner, const void *host, size_t bytes);
    void (*unpin)(const void *owner);
} Ops;

/* Longest training window attention_train/_backward accept (one row of
 * scores must fit the BLAS backend's 64 KiB score tile). */
#define ATT_TRAIN_MAX_N 16384

extern const Ops ops_cpu_ref;   /* naive C loops: the reference */
extern const Ops ops_cpu_blas;  /* OpenBLAS sgemm for matmul (== ref without BLAS) */

/* The backend to use: "ref" or "blas" (default). */
const Ops *ops_get(int use_blas);

/* The CUDA backend (kernels/cuda, configure --with-cuda): NULL when tflm was
 * built without it or no usable GPU is present; ops_cuda_error() then says
 * why in a short phrase. The ops take host pointers (kernels/cuda/README.md).
 * If a CUDA call fails inside an op, the op's outputs are set to NaN (so
 * the caller's finiteness checks stop) and ops_cuda_error() names the call. */
const Ops *ops_cuda_get(void);
const char *ops_cuda_error(void);

#endif
