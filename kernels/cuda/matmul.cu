/* matmul.cu: the matrix products of the ops table on cuBLAS (sgemm), the
 * bias and the column sums (db) of the backward pass.
 *
 * Row-major A[r, c] is column-major A^T with leading dimension c, so
 *   out[n, o] = in[n, i] W[o, i]^T  is  out^T = W^T(T) in^T   (m = o, n = n, k = i)
 *   din[n, i] = dout[n, o] W[o, i]  is  din^T = W^T dout^T     (m = i, n = n, k = o)
 *   dW[o, i] += dout^T in           is  dW^T += in^T dout      (m = i, n = o, k = n)
 * cuBLAS runs in its default FP32 math mode (no TF32) unless ops_cuda.c
 * was told otherwise ($TFLM_CUDA_TF32=1). */
#include "common.cuh"

/* out[r, o] += b[o] */
__global__ void k_add_bias(float *out, const float *b, size_t total, int cols) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < total) out[i] += b[i % cols];
}

extern "C" int tcu_matmul(cublasHandle_t h, cudaStream_t s, float *out, const float *in,
                          const float *w, const float *b, int n, int in_dim, int out_dim) {
    if (n <= 0 || out_dim <= 0) return 0;
    const float one = 1.0f, zero = 0.0f;
    cublasStatus_t st = cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, out_dim, n, in_dim, &one, w,
                                    in_dim, in, in_dim, &zero, out, out_dim);
    if (st != CUBLAS_STATUS_SUCCESS) return (int)st;
    if (b) {
        size_t total = (size_t)n * out_dim;
        k_add_bias<<<tcu_blocks(total, 256), 256, 0, s>>>(out, b, total, out_dim);
        return tcu_launch_status();
    }
    return 0;
}

/* ---- column sums in two fixed stages -------------------------------------------
 * Stage 1: chunk c of CS rows, column j: part[c, j] = sum of the chunk's rows
 * in order. Stage 2: acc[j] += sum over chunks in order. The order depends
 * only on the shape, so the result is the same on every run. */
#define CS 256

extern "C" size_t tcu_colsum_scratch(int n, int cols) {
    return (size_t)((n + CS - 1) / CS) * cols;
}

__global__ void k_colsum_part(float *part, const float *x, int n, int cols) {
    int j = blockIdx.x * blockDim.x + threadIdx.x, c = blockIdx.y;
    if (j >= cols) return;
    int r0 = c * CS, r1 = min(n, r0 + CS);
    float acc = 0.0f;
    for (int r = r0; r < r1; r++) acc += x[(size_t)r * cols + j];
    part[(size_t)c * cols + j] = acc;
}

__global__ void k_colsum_final(float *acc, const float *part, int chunks, int cols) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= cols) return;
    float a = 0.0f;
    for (int c = 0; c < chunks; c++) a += part[(size_t)c * cols + j];
    acc[j] += a;
}

extern "C" int tcu_colsum_add(cudaStream_t s, float *acc, const float *x, int n, int cols,
                              float *scratch) {
    if (n <= 0 || cols <= 0) return 0;
    int chunks = (n + CS - 1) / CS;
    dim3 g1(tcu_blocks(cols, 128), chunks);
    k_colsum_part<<<g1, 128, 0, s>>>(scratch, x, n, cols);
    k_colsum_final<<<tcu_blocks(cols, 128), 128, 0, s>>>(acc, scratch, chunks, cols);
    return tcu_launch_status();
}

extern "C" int tcu_matmul_backward(cublasHandle_t h, cudaStream_t s, float *din, float *dW,
                                   float *db, const float *dout, const float *in, const float *W,
                                   int n, int in_dim, int out_dim, float *scratch) {
    if (n <= 0) return 0;
    const float one = 1.0f, zero = 0.0f;
    cublasStatus_t st;
    if (din) {
        st = cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, in_dim, n, out_dim, &one, W, in_dim, dout,
                         out_dim, &zero, din, in_dim);
        if (st != CUBLAS_STATUS_SUCCESS) return (int)st;
    }
    if (dW) {
        st = cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_T, in_dim, out_dim, n, &one, in, in_dim, dout,
                         out_dim, &one, dW, in_dim);
        if (st != CUBLAS_STATUS_SUCCESS) return (int)st;
    }
    if (db) return tcu_colsum_add(s, db, dout, n, out_dim, scratch);
    return 0;
}
