/* codebook.cu: the Gaussian codebook (DESIGN §2.1) on the GPU: the encoder
 * z = mu_x + e^{s_x} eps, and the tied decoder's logits
 * l_k(z) = -(d/2) log 2pi - d s_k - (|z|^2 - 2 z.mu_k + |mu_k|^2) e^{-2 s_k} / 2
 * in double precision (src/codebook.c), with argmax, probability, entropy
 * and R = -LSE per latent. */
#include "common.cuh"

#define LOG_SQRT_2PI 0.91893853320467274178

/* src/flow.c work_encode: z[i] = mu[i] + expf(s) * (float)eps */
__global__ void k_cb_encode(float *z, const int *tok, const float *mu, const float *logsig,
                            const double *eps, int n, int d) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)n * d) return;
    size_t t = i / d;
    int k = tok[t], j = (int)(i % d);
    float sg = expf(logsig[k]);
    z[i] = mu[(size_t)k * d + j] + sg * (eps ? (float)eps[i] : 0.0f);
}

extern "C" int tcu_codebook_encode(cudaStream_t s, float *z, const int *tok, const float *mu,
                                   const float *logsig, const double *eps, int n, int d) {
    size_t total = (size_t)n * d;
    if (!total) return 0;
    k_cb_encode<<<tcu_blocks(total, 256), 256, 0, s>>>(z, tok, mu, logsig, eps, n, d);
    return tcu_launch_status();
}

/* one thread per (latent r, token k); sums over the d dimensions in order */
__global__ void k_cb_logits(double *logits, const float *z, const float *mu, const float *logsig,
                            int n, int V, int d) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)n * V) return;
    size_t r = i / V;
    int k = (int)(i % V);
    const float *zr = z + r * d, *mk = mu + (size_t)k * d;
    double zz = 0, zm = 0, mm = 0;
    for (int j = 0; j < d; j++) zz += (double)zr[j] * zr[j];
    for (int j = 0; j < d; j++) {
        zm += (double)zr[j] * mk[j];
        mm += (double)mk[j] * mk[j];
    }
    double s = logsig[k], dist = zz - 2 * zm + mm;
    if (dist < 0) dist = 0;
    logits[i] = -d * LOG_SQRT_2PI - d * s - 0.5 * dist * exp(-2 * s);
}

extern "C" int tcu_codebook_logits(cudaStream_t s, double *logits, const float *z, const float *mu,
                                   const float *logsig, int n, int V, int d) {
    size_t total = (size_t)n * V;
    if (!total) return 0;
    k_cb_logits<<<tcu_blocks(total, 256), 256, 0, s>>>(logits, z, mu, logsig, n, V, d);
    return tcu_launch_status();
}

/* src/codebook.c codebook_decode and codebook_R, one thread per latent */
__global__ void k_cb_decode(const double *logits, int n, int V, int *ids, float *prob,
                            float *entropy, double *R) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= n) return;
    const double *lg = logits + (size_t)r * V;
    double mx = -INFINITY;
    int best = 0;
    for (int k = 0; k < V; k++) {
        if (lg[k] > mx) mx = lg[k];
        if (lg[k] > lg[best]) best = k;
    }
    double s = 0;
    for (int k = 0; k < V; k++) s += exp(lg[k] - mx);
    double Z = mx + log(s), H = 0;
    for (int k = 0; k < V; k++) {
        double lp = lg[k] - Z;
        if (lp > -745) H -= exp(lp) * lp;
    }
    if (ids) ids[r] = best;
    if (prob) prob[r] = (float)exp(lg[best] - Z);
    if (entropy) entropy[r] = (float)H;
    if (R) R[r] = -Z;
}

extern "C" int tcu_codebook_decode(cudaStream_t s, const double *logits, int n, int V, int *ids,
                                   float *prob, float *entropy, double *R) {
    if (n <= 0) return 0;
    k_cb_decode<<<tcu_blocks(n, 128), 128, 0, s>>>(logits, n, V, ids, prob, entropy, R);
    return tcu_launch_status();
}
