/* common.cuh: helpers shared by the CUDA kernels of tflm: block-wide
 * reductions (fixed shapes, so results do not depend on timing) and the
 * launch-error convention of tcu.h. */
#ifndef TFLM_COMMON_CUH
#define TFLM_COMMON_CUH

#include <cuda_runtime.h>
#include <math.h>
#include "tcu.h"

#define TCU_THREADS 256     /* threads per block of the row kernels */

/* the launch error of the last kernel (0 when it was queued) */
static inline int tcu_launch_status(void) {
    return (int)cudaGetLastError();
}

static inline unsigned tcu_blocks(size_t n, int threads) {
    return (unsigned)((n + threads - 1) / threads);
}

/* ---- warp and block reductions ------------------------------------------------
 * Every thread of the block must call them; all threads get the result.
 * sh: at least 32 elements of shared memory, reused after a __syncthreads. */
template <typename T> __device__ __forceinline__ T warp_sum(T v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    return v;
}
template <typename T> __device__ __forceinline__ T warp_max(T v) {
    for (int o = 16; o > 0; o >>= 1) {
        T u = __shfl_down_sync(0xffffffffu, v, o);
        v = u > v ? u : v;
    }
    return v;
}

template <typename T> __device__ T block_sum(T v, T *sh) {
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    __syncthreads();                  /* sh may still be read by an earlier call */
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    T r = 0;
    if (wid == 0) {
        r = lane < nw ? sh[lane] : (T)0;
        r = warp_sum(r);
        if (lane == 0) sh[0] = r;
    }
    __syncthreads();
    return sh[0];
}

template <typename T> __device__ T block_max(T v, T *sh) {
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    if (wid == 0) {
        T r = lane < nw ? sh[lane] : (T)-INFINITY;
        r = warp_max(r);
        if (lane == 0) sh[0] = r;
    }
    __syncthreads();
    return sh[0];
}

#endif
