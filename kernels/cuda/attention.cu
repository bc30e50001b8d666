/* attention.cu: causal multi-head attention: the KV-cache forward of
 * inference (ops.h attention), the whole-window forward of training that
 * keeps the probabilities, and its backward.
 *
 * One block per (query row, head). The scores of the row go to a row of
 * global memory (the caller's scratch, or probs in training), the softmax is
 * a block reduction (max, then sum), and each output element is a sum over
 * the visible steps in step order. The backward runs two kernels so that no
 * element is summed by atomics: one per query row (dS, dq), one per key row
 * (dk, dv, summing over the query rows that see it, in order). */
#include "common.cuh"

#define ATT_THREADS 128

/* The row: scores of q against k_0..k_{len-1} (row stride ks), softmax into
 * p[0..len-1], zeros in p[len..pend-1], then o = sum_j p_j v_j. */
__device__ void att_row(const float *__restrict__ q, const float *__restrict__ k,
                        const float *__restrict__ v, int ks, int len, int pend, int hs,
                        float scale, float *__restrict__ p, float *__restrict__ o) {
    __shared__ float sh[32];
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < len; j += blockDim.x) {
        const float *kj = k + (size_t)j * ks;
        float acc = 0.0f;
        for (int e = 0; e < hs; e++) acc += q[e] * kj[e];
        acc *= scale;
        p[j] = acc;
        mx = fmaxf(mx, acc);
    }
    mx = block_max(mx, sh);
    float sum = 0.0f;
    for (int j = threadIdx.x; j < len; j += blockDim.x) {
        float t = expf(p[j] - mx);
        p[j] = t;
        sum += t;
    }
    sum = block_sum(sum, sh);
    float inv = 1.0f / sum;
    for (int j = threadIdx.x; j < len; j += blockDim.x) p[j] *= inv;
    for (int j = len + threadIdx.x; j < pend; j += blockDim.x) p[j] = 0.0f;
    __syncthreads();                /* p complete before any thread reads it */
    for (int e = threadIdx.x; e < hs; e += blockDim.x) {
        float acc = 0.0f;
        for (int j = 0; j < len; j++) acc += p[j] * v[(size_t)j * ks + e];
        o[e] = acc;
    }
}

/* grid (n, H): row i is absolute step start + i of the cache */
__global__ void k_att_cache(float *out, const float *q, const float *kc, const float *vc, int start,
                            int D, int hs, float scale, float *scratch, int steps) {
    int i = blockIdx.x, h = blockIdx.y, H = gridDim.y;
    int len = start + i + 1;
    float *p = scratch + ((size_t)i * H + h) * steps;
    att_row(q + (size_t)i * D + h * hs, kc + h * hs, vc + h * hs, D, len, len, hs, scale, p,
            out + (size_t)i * D + h * hs);
}

extern "C" int tcu_attention(cudaStream_t s, float *out, const float *q, const float *kc,
                             const float *vc, int start, int n, int D, int H, float *scratch) {
    if (n <= 0) return 0;
    int hs = D / H;
    dim3 g(n, H);
    k_att_cache<<<g, ATT_THREADS, 0, s>>>(out, q, kc, vc, start, D, hs, 1.0f / sqrtf((float)hs),
                                          scratch, start + n);
    return tcu_launch_status();
}

/* grid (nb*n, H): row r = b*n + i of the packed qkv */
__global__ void k_att_train(float *out, float *probs, const float *qkv, int n, int D, int hs,
                            float scale) {
    int r = blockIdx.x, h = blockIdx.y, H = gridDim.y;
    int b = r / n, i = r % n;
    size_t D3 = (size_t)3 * D;
    const float *w = qkv + (size_t)b * n * D3;          /* window b's rows */
    float *p = probs + (((size_t)b * H + h) * n + i) * n;
    att_row(qkv + (size_t)r * D3 + h * hs, w + D + h * hs, w + 2 * D + h * hs, (int)D3, i + 1, n,
            hs, scale, p, out + (size_t)r * D + h * hs);
}

extern "C" int tcu_attention_train(cudaStream_t s, float *out, float *probs, const float *qkv,
                                   int nb, int n, int D, int H) {
    if (nb <= 0 || n <= 0) return 0;
    int hs = D / H;
    dim3 g(nb * n, H);
    k_att_train<<<g, ATT_THREADS, 0, s>>>(out, probs, qkv, n, D, hs, 1.0f / sqrtf((float)hs));
    return tcu_launch_status();
}

/* Query row i: dP_ij = dout_i . v_j, dot = sum_j P_ij dP_ij,
 * dS_ij = P_ij (dP_ij - dot) scale into ds (same layout as probs),
 * dq_i = sum_j dS_ij k_j. */
__global__ void k_att_bwd_q(float *dqkv, float *ds, const float *dout, const float *probs,
                            const float *qkv, int n, int D, int hs, float scale) {
    __shared__ float sh[32];
    int r = blockIdx.x, h = blockIdx.y, H = gridDim.y;
    int b = r / n, i = r % n, len = i + 1;
    size_t D3 = (size_t)3 * D;
    const float *w = qkv + (size_t)b * n * D3;
    const float *k = w + D + h * hs, *v = w + 2 * D + h * hs;
    const float *dy = dout + (size_t)r * D + h * hs;
    size_t prow = (((size_t)b * H + h) * n + i) * n;
    const float *p = probs + prow;
    float *d = ds + prow;
    float dot = 0.0f;
    for (int j = threadIdx.x; j < len; j += blockDim.x) {
        const float *vj = v + (size_t)j * D3;
        float dp = 0.0f;
        for (int e = 0; e < hs; e++) dp += dy[e] * vj[e];
        d[j] = dp;
        dot += p[j] * dp;
    }
    dot = block_sum(dot, sh);
    for (int j = threadIdx.x; j < len; j += blockDim.x) d[j] = p[j] * (d[j] - dot) * scale;
    for (int j = len + threadIdx.x; j < n; j += blockDim.x) d[j] = 0.0f;
    __syncthreads();
    float *dq = dqkv + (size_t)r * D3 + h * hs;
    for (int e = threadIdx.x; e < hs; e += blockDim.x) {
        float acc = 0.0f;
        for (int j = 0; j < len; j++) acc += d[j] * k[(size_t)j * D3 + e];
        dq[e] = acc;
    }
}

/* Key row j: dk_j = sum_{i >= j} dS_ij q_i, dv_j = sum_{i >= j} P_ij dout_i. */
__global__ void k_att_bwd_kv(float *dqkv, const float *ds, const float *dout, const float *probs,
                             const float *qkv, int n, int D, int hs) {
    int r = blockIdx.x, h = blockIdx.y, H = gridDim.y;
    int b = r / n, j = r % n;
    size_t D3 = (size_t)3 * D;
    const float *q = qkv + (size_t)b * n * D3 + h * hs;
    const float *dy = dout + (size_t)b * n * D + h * hs;
    size_t base = ((size_t)b * H + h) * n * n;          /* (b, h) block of probs/ds */
    float *dk = dqkv + (size_t)r * D3 + D + h * hs, *dv = dk + D;
    for (int e = threadIdx.x; e < hs; e += blockDim.x) {
        float ak = 0.0f, av = 0.0f;
        for (int i = j; i < n; i++) {
            size_t pij = base + (size_t)i * n + j;
            ak += ds[pij] * q[(size_t)i * D3 + e];
            av += probs[pij] * dy[(size_t)i * D + e];
        }
        dk[e] = ak;
        dv[e] = av;
    }
}

extern "C" int tcu_attention_backward(cudaStream_t s, float *dqkv, const float *dout,
                                      const float *probs, const float *qkv, int nb, int n, int D,
                                      int H, float *scratch) {
    if (nb <= 0 || n <= 0) return 0;
    int hs = D / H;
    dim3 g(nb * n, H);
    k_att_bwd_q<<<g, ATT_THREADS, 0, s>>>(dqkv, scratch, dout, probs, qkv, n, D, hs,
                                          1.0f / sqrtf((float)hs));
    int e = tcu_launch_status();
    if (e) return e;
    k_att_bwd_kv<<<g, hs < 32 ? 32 : (hs > 256 ? 256 : ((hs + 31) / 32) * 32), 0, s>>>(
        dqkv, scratch, dout, probs, qkv, n, D, hs);
    return tcu_launch_status();
}
