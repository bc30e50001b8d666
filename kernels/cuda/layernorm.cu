/* layernorm.cu: LayerNorm forward (with or without saved statistics) and
 * backward, one block per row, row statistics in double as in the
 * reference (kernels/cpu/ops_ref.c). The forward is one kernel for both
 * layernorm and layernorm_train, so their outputs agree bit for bit. */
#include "common.cuh"

__global__ void k_layernorm(float *out, float *mu, float *rstd, const float *in, const float *w,
                            const float *b, int D, float eps) {
    __shared__ double sh[32];
    size_t row = blockIdx.x;
    const float *x = in + row * D;
    float *y = out + row * D;
    double s = 0.0;
    for (int j = threadIdx.x; j < D; j += blockDim.x) s += x[j];
    double mean = block_sum(s, sh) / D;
    double v = 0.0;
    for (int j = threadIdx.x; j < D; j += blockDim.x) {
        double dx = x[j] - mean;
        v += dx * dx;
    }
    double var = block_sum(v, sh) / D;
    float rs = (float)(1.0 / sqrt(var + (double)eps));
    float m = (float)mean;
    for (int j = threadIdx.x; j < D; j += blockDim.x) y[j] = (x[j] - m) * rs * w[j] + b[j];
    if (threadIdx.x == 0 && mu) {
        mu[row] = m;
        rstd[row] = rs;
    }
}

extern "C" int tcu_layernorm(cudaStream_t s, float *out, float *mu, float *rstd, const float *in,
                             const float *w, const float *b, int n, int D, float eps) {
    if (n <= 0) return 0;
    int th = D >= TCU_THREADS ? TCU_THREADS : ((D + 31) / 32) * 32;
    k_layernorm<<<n, th, 0, s>>>(out, mu, rstd, in, w, b, D, eps);
    return tcu_launch_status();
}

/* din = rstd (g - mean(g) - xh mean(g xh)), g = dout w, xh = (x - mu) rstd */
__global__ void k_layernorm_bwd(float *din, const float *dout, const float *in, const float *mu,
                                const float *rstd, const float *w, int D) {
    __shared__ double sh[32];
    size_t row = blockIdx.x;
    const float *x = in + row * D, *dy = dout + row * D;
    float *dx = din + row * D;
    float m = mu[row], rs = rstd[row];
    double sg = 0.0, sgx = 0.0;
    for (int j = threadIdx.x; j < D; j += blockDim.x) {
        float g = dy[j] * w[j];
        sg += g;
        sgx += (double)g * ((x[j] - m) * rs);
    }
    sg = block_sum(sg, sh);
    sgx = block_sum(sgx, sh);
    float mg = (float)(sg / D), mgx = (float)(sgx / D);
    for (int j = threadIdx.x; j < D; j += blockDim.x) {
        float xh = (x[j] - m) * rs;
        dx[j] = rs * (dy[j] * w[j] - mg - xh * mgx);
    }
}

/* t[r, j] = dout[r, j] * xh[r, j], the summands of dw */
__global__ void k_dy_xh(float *t, const float *dout, const float *in, const float *mu,
                        const float *rstd, size_t total, int D) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    size_t r = i / D;
    t[i] = dout[i] * ((in[i] - mu[r]) * rstd[r]);
}

extern "C" int tcu_layernorm_backward(cudaStream_t s, float *din, float *dw, float *db,
                                      const float *dout, const float *in, const float *mu,
                                      const float *rstd, const float *w, int n, int D,
                                      float *scratch) {
    if (n <= 0) return 0;
    int th = D >= TCU_THREADS ? TCU_THREADS : ((D + 31) / 32) * 32;
    k_layernorm_bwd<<<n, th, 0, s>>>(din, dout, in, mu, rstd, w, D);
    int e = tcu_launch_status();
    if (e) return e;
    /* db: column sums of dout; dw: column sums of dout * xh, whose
     * summands go to scratch after the column-sum part */
    size_t part = tcu_colsum_scratch(n, D);
    if (db && (e = tcu_colsum_add(s, db, dout, n, D, scratch))) return e;
    if (dw) {
        float *t = scratch + part;
        size_t total = (size_t)n * D;
        k_dy_xh<<<tcu_blocks(total, 256), 256, 0, s>>>(t, dout, in, mu, rstd, total, D);
        if ((e = tcu_launch_status())) return e;
        if ((e = tcu_colsum_add(s, dw, t, n, D, scratch))) return e;
    }
    return 0;
}
