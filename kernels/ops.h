/* kernels/ops.h: the small table of compute ops between the model and the
 * backends (ggml style). The CPU reference (kernels/cpu/ops_ref.c) is the
 * spec; every other backend (OpenBLAS, later CUDA) is tested against it.
 *
 * Dimension legend: n rows, in/out widths, D model width, H heads,
 * start = steps already in the KV cache. All arrays are row-major float. */
#ifndef TFLM_OPS_H
#define TFLM_OPS_H

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
} Ops;

extern const Ops ops_cpu_ref;   /* naive C loops: the reference */
extern const Ops ops_cpu_blas;  /* OpenBLAS sgemm for matmul (== ref without BLAS) */

/* The backend to use: "ref" or "blas" (default). */
const Ops *ops_get(int use_blas);

#endif
