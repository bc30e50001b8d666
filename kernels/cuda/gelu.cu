/* gelu.cu: GELU (tanh form) and its derivative, element-wise. */
#include "common.cuh"

#define GELU_S 0.7978845608028654f      /* sqrt(2/pi) */

__global__ void k_gelu(float *out, const float *in, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float x = in[i];
    out[i] = 0.5f * x * (1.0f + tanhf(GELU_S * (x + 0.044715f * x * x * x)));
}

/* gelu'(x) = sg (1 + x s (1 + 3 0.044715 x^2) 2 (1 - sg)), sg = 1 / (1 + e^-2u),
 * u = s (x + 0.044715 x^3); sg and 1 - sg are both formed from e^-2|u| <= 1,
 * so nothing overflows and nothing cancels for any finite x. */
__global__ void k_gelu_bwd(float *din, const float *dout, const float *in, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float x = in[i];
    float u = GELU_S * (x + 0.044715f * x * x * x);
    float e = expf(-2.0f * fabsf(u)), q = 1.0f / (1.0f + e);
    float sg = u >= 0.0f ? q : e * q, es = u >= 0.0f ? e * q : q;    /* sg, 1 - sg */
    float dg = sg * (1.0f + x * GELU_S * (1.0f + 0.134145f * x * x) * 2.0f * es);
    din[i] = dout[i] * dg;
}

extern "C" int tcu_gelu(cudaStream_t s, float *out, const float *in, size_t n) {
    if (!n) return 0;
    k_gelu<<<tcu_blocks(n, 256), 256, 0, s>>>(out, in, n);
    return tcu_launch_status();
}

extern "C" int tcu_gelu_backward(cudaStream_t s, float *din, const float *dout, const float *in,
                                 size_t n) {
    if (!n) return 0;
    k_gelu_bwd<<<tcu_blocks(n, 256), 256, 0, s>>>(din, dout, in, n);
    return tcu_launch_status();
}
