/* ops_cuda.c: the CUDA backend: the ops table of kernels/ops.h and the batch
 * functions of ops_cuda.h on top of the kernels of tcu.h.
 *
 * Host pointers in, host pointers out (kernels/cuda/README.md). Each call
 * copies its inputs to a device arena, queues the kernels on its thread's
 * stream, copies the results back and waits; data that was pinned (the
 * weights of a loaded model, Ops.pin) is read from its device copy and not
 * copied. Correctness first: the copies make small calls slower than the
 * CPU; keeping the activations on the GPU is the next step.
 *
 * Threads: every host thread gets its own stream, cuBLAS handle and arena
 * (the trainer calls the ops from several OpenMP threads at once). The pin
 * table is shared, under a mutex.
 *
 * Errors: a CUDA failure inside an op sets the op's outputs to NaN (the
 * engine's finiteness checks then stop the run) and records the reason for
 * ops_cuda_error(); the batch functions return a status. */
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cuda_runtime_api.h>
#include <cublas_v2.h>
#include "config.h"
#include "internal.h"
#include "ops.h"
#include "cuda/tcu.h"
#include "cuda/ops_cuda.h"

#ifndef TFLM_CUDA_GENCODE
#define TFLM_CUDA_GENCODE "?"
#endif

/* ---- the device, once ------------------------------------------------------ */

static pthread_once_t dev_once = PTHREAD_ONCE_INIT;
static int dev_id = -1, dev_usable;
static int dev_tf32;
static char dev_name[320];
static pthread_key_t ctx_key;

static pthread_mutex_t err_mu = PTHREAD_MUTEX_INITIALIZER;
static char err_msg[320] = "no CUDA device";

static void set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void set_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    pthread_mutex_lock(&err_mu);
    vsnprintf(err_msg, sizeof err_msg, fmt, ap);
    pthread_mutex_unlock(&err_mu);
    va_end(ap);
}

typedef struct {
    cudaStream_t s;
    cublasHandle_t h;
    void *arena;            /* device scratch of this thread */
    size_t cap;
} Ctx;

static void ctx_free(void *p) {
    Ctx *c = p;
    if (!c) return;
    if (c->h) cublasDestroy(c->h);
    if (c->s) cudaStreamDestroy(c->s);
    if (c->arena) cudaFree(c->arena);
    free(c);
}

static void dev_init(void) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n < 1) {
        set_error("no CUDA device (%s)", e != cudaSuccess ? cudaGetErrorString(e) : "none found");
        return;
    }
    const char *env = getenv("TFLM_CUDA_DEVICE");
    int id = env && *env ? atoi(env) : 0;
    if (id < 0 || id >= n) {
        set_error("TFLM_CUDA_DEVICE=%s: there are %d CUDA devices", env, n);
        return;
    }
    struct cudaDeviceProp prop;
    if ((e = cudaSetDevice(id)) != cudaSuccess ||
        (e = cudaGetDeviceProperties(&prop, id)) != cudaSuccess) {
        set_error("CUDA device %d: %s", id, cudaGetErrorString(e));
        return;
    }
    snprintf(dev_name, sizeof dev_name, "%s, compute capability %d.%d", prop.name, prop.major,
             prop.minor);
    /* the kernels must run here: built for TFLM_CUDA_GENCODE */
    float *d = NULL, h[32];
    e = cudaMalloc((void **)&d, sizeof h);
    if (e == cudaSuccess) e = (cudaError_t)tcu_probe(0, d);
    if (e == cudaSuccess) e = cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost);
    if (d) cudaFree(d);
    if (e != cudaSuccess || h[5] != 10.0f) {
        set_error("the CUDA kernels do not run on %s (built for %s): %s", dev_name,
                  TFLM_CUDA_GENCODE, e != cudaSuccess ? cudaGetErrorString(e) : "wrong result");
        return;
    }
    const char *tf = getenv("TFLM_CUDA_TF32");
    dev_tf32 = tf && *tf == '1';
    if (pthread_key_create(&ctx_key, ctx_free) != 0) {
        set_error("pthread_key_create failed");
        return;
    }
    dev_id = id;
    dev_usable = 1;
    set_error("no error");
}

/* this thread's context, made on first use; NULL without a usable device */
static _Thread_local Ctx *tls_ctx;

static Ctx *ctx_get(void) {
    if (tls_ctx) return tls_ctx;
    pthread_once(&dev_once, dev_init);
    if (!dev_usable) return NULL;
    Ctx *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    cudaError_t e = cudaSetDevice(dev_id);
    if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&c->s, cudaStreamNonBlocking);
    if (e != cudaSuccess) {
        set_error("cuda stream: %s", cudaGetErrorString(e));
        ctx_free(c);
        return NULL;
    }
    cublasStatus_t bs = cublasCreate(&c->h);
    if (bs == CUBLAS_STATUS_SUCCESS) bs = cublasSetStream(c->h, c->s);
    if (bs == CUBLAS_STATUS_SUCCESS)
        bs = cublasSetMathMode(c->h, dev_tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH);
    if (bs != CUBLAS_STATUS_SUCCESS) {
        set_error("cublas: status %d", (int)bs);
        ctx_free(c);
        return NULL;
    }
    pthread_setspecific(ctx_key, c);     /* freed when the thread ends */
    tls_ctx = c;
    return c;
}

const char *ops_cuda_error(void) {
    pthread_once(&dev_once, dev_init);
    return err_msg;
}

const char *ops_cuda_device_name(void) {
    pthread_once(&dev_once, dev_init);
    return dev_usable ? dev_name : NULL;
}

/* ---- pinned constant data --------------------------------------------------- */

typedef struct {
    const void *owner;
    const char *h;
    size_t bytes;
    char *d;
} Pin;

static pthread_mutex_t pin_mu = PTHREAD_MUTEX_INITIALIZER;
static Pin *pins;
static int npins, cap_pins;

static int cuda_pin(const void *owner, const void *host, size_t bytes) {
    if (!host || !bytes) return 0;
    if (!ctx_get()) return -1;
    char *d = NULL;
    cudaError_t e = cudaMalloc((void **)&d, bytes);
    if (e == cudaSuccess) e = cudaMemcpy(d, host, bytes, cudaMemcpyHostToDevice);
    /* from pageable memory cudaMemcpy may return before the DMA is done, and
     * the ops' streams do not wait for the legacy stream: wait here */
    if (e == cudaSuccess) e = cudaDeviceSynchronize();
    if (e != cudaSuccess) {
        if (d) cudaFree(d);
        set_error("pin %zu bytes: %s", bytes, cudaGetErrorString(e));
        return -1;
    }
    pthread_mutex_lock(&pin_mu);
    if (npins == cap_pins) {
        int nc = cap_pins ? 2 * cap_pins : 64;
        Pin *np = realloc(pins, (size_t)nc * sizeof *np);
        if (!np) {
            pthread_mutex_unlock(&pin_mu);
            cudaFree(d);
            return -1;
        }
        pins = np;
        cap_pins = nc;
    }
    pins[npins++] = (Pin){owner, host, bytes, d};
    pthread_mutex_unlock(&pin_mu);
    return 0;
}

static void cuda_unpin(const void *owner) {
    pthread_mutex_lock(&pin_mu);
    int k = 0;
    for (int i = 0; i < npins; i++) {
        if (pins[i].owner == owner) cudaFree(pins[i].d);
        else pins[k++] = pins[i];
    }
    npins = k;
    pthread_mutex_unlock(&pin_mu);
}

/* the device copy of host[0, bytes) when it lies inside a pinned range */
static void *pinned(const void *host, size_t bytes) {
    const char *p = host;
    void *d = NULL;
    pthread_mutex_lock(&pin_mu);
    for (int i = 0; i < npins; i++)
        if (p >= pins[i].h && p + bytes <= pins[i].h + pins[i].bytes) {
            d = pins[i].d + (p - pins[i].h);
            break;
        }
    pthread_mutex_unlock(&pin_mu);
    return d;
}

/* ---- one call: buffers in the arena, copies, wait ---------------------------- */

#define MAXBUF 12
#define ALIGN 256

typedef struct {
    const void *hin;        /* copied to the device first (NULL: none) */
    void *hout;             /* copied back at the end (NULL: none) */
    size_t bytes;
    void *d;                /* device address */
    int is_float;           /* hout is floats: set to NaN on failure */
} Buf;

typedef struct {
    Ctx *c;
    Buf b[MAXBUF];
    int nb;
    size_t total;
} Job;

static int job_begin(Job *j) {
    memset(j, 0, sizeof *j);
    j->c = ctx_get();
    return j->c != NULL;
}

/* a buffer of the call; returns its index */
static int job_buf(Job *j, const void *hin, void *hout, size_t bytes, int is_float) {
    Buf *b = &j->b[j->nb];
    b->hin = hin;
    b->hout = hout;
    b->bytes = bytes;
    b->is_float = is_float;
    if (hin && !hout && bytes) b->d = pinned(hin, bytes);
    if (!b->d) j->total += (bytes + ALIGN - 1) / ALIGN * ALIGN;
    return j->nb++;
}

static void *D(const Job *j, int i) {
    return i >= 0 ? j->b[i].d : NULL;
}

static cudaError_t arena_reserve(Ctx *c, size_t bytes) {
    if (bytes <= c->cap) return cudaSuccess;
    if (c->arena) cudaFree(c->arena);
    c->arena = NULL;
    c->cap = 0;
    size_t cap = bytes + bytes / 2;
    cap = (cap + (1u << 20) - 1) & ~(size_t)((1u << 20) - 1);
    cudaError_t e = cudaMalloc(&c->arena, cap);
    if (e != cudaSuccess) {
        c->arena = NULL;
        e = cudaMalloc(&c->arena, bytes);       /* no margin */
        if (e != cudaSuccess) {
            c->arena = NULL;
            return e;
        }
        cap = bytes;
    }
    c->cap = cap;
    return cudaSuccess;
}

/* place the buffers and queue the input copies */
static int job_stage(Job *j) {
    Ctx *c = j->c;
    cudaError_t e = arena_reserve(c, j->total);
    if (e != cudaSuccess) return (int)e;
    size_t off = 0;
    for (int i = 0; i < j->nb; i++) {
        Buf *b = &j->b[i];
        if (b->d) continue;
        b->d = (char *)c->arena + off;
        off += (b->bytes + ALIGN - 1) / ALIGN * ALIGN;
        if (b->hin && b->bytes) {
            e = cudaMemcpyAsync(b->d, b->hin, b->bytes, cudaMemcpyHostToDevice, c->s);
            if (e != cudaSuccess) return (int)e;
        }
    }
    return 0;
}

/* queue the output copies and wait; on failure (err from a launch or from
 * here) record it for `what`, set the float outputs to NaN and return non-zero */
static int job_finish(Job *j, int err, const char *what) {
    Ctx *c = j->c;
    cudaError_t e = cudaSuccess;
    for (int i = 0; i < j->nb && !err; i++) {
        Buf *b = &j->b[i];
        if (b->hout && b->bytes) {
            e = cudaMemcpyAsync(b->hout, b->d, b->bytes, cudaMemcpyDeviceToHost, c->s);
            if (e != cudaSuccess) err = (int)e;
        }
    }
    if (c) {
        e = cudaStreamSynchronize(c->s);
        if (!err && e != cudaSuccess) err = (int)e;
    }
    if (!err) return 0;
    set_error("%s: CUDA or cuBLAS error %d (%s)", what, err,
              cudaGetErrorString((cudaError_t)err));
    for (int i = 0; i < j->nb; i++) {
        Buf *b = &j->b[i];
        if (b->hout && b->is_float)
            for (size_t k = 0; k < b->bytes / sizeof(float); k++) ((float *)b->hout)[k] = NAN;
    }
    return err ? err : -1;
}

/* NaN outputs when there is no device at all */
static void nan_fill(float *p, size_t n) {
    if (p)
        for (size_t i = 0; i < n; i++) p[i] = NAN;
}

#define F4 sizeof(float)

/* ---- the ops table ------------------------------------------------------------ */

static void cu_matmul(float *out, const float *in, const float *w, const float *b, int n,
                      int in_dim, int out_dim) {
    if (n <= 0 || out_dim <= 0) return;
    Job j;
    if (!job_begin(&j)) {
        nan_fill(out, (size_t)n * out_dim);
        return;
    }
    int bi = job_buf(&j, in, NULL, (size_t)n * in_dim * F4, 0);
    int bw = job_buf(&j, w, NULL, (size_t)out_dim * in_dim * F4, 0);
    int bb = b ? job_buf(&j, b, NULL, (size_t)out_dim * F4, 0) : -1;
    int bo = job_buf(&j, NULL, out, (size_t)n * out_dim * F4, 1);
    int e = job_stage(&j);
    if (!e) e = tcu_matmul(j.c->h, j.c->s, D(&j, bo), D(&j, bi), D(&j, bw), D(&j, bb), n, in_dim,
                           out_dim);
    job_finish(&j, e, "matmul");
}

static void cu_layernorm(float *out, const float *in, const float *w, const float *b, int n,
                         int D_, float eps) {
    if (n <= 0) return;
    Job j;
    if (!job_begin(&j)) {
        nan_fill(out, (size_t)n * D_);
        return;
    }
    size_t nd = (size_t)n * D_ * F4;
    int bi = job_buf(&j, in, NULL, nd, 0);
    int bw = job_buf(&j, w, NULL, (size_t)D_ * F4, 0);
    int bb = job_buf(&j, b, NULL, (size_t)D_ * F4, 0);
    int bo = job_buf(&j, NULL, out, nd, 1);
    int e = job_stage(&j);
    if (!e) e = tcu_layernorm(j.c->s, D(&j, bo), NULL, NULL, D(&j, bi), D(&j, bw), D(&j, bb), n,
                              D_, eps);
    job_finish(&j, e, "layernorm");
}

static void cu_gelu(float *out, const float *in, int n) {
    if (n <= 0) return;
    Job j;
    if (!job_begin(&j)) {
        nan_fill(out, (size_t)n);
        return;
    }
    int bi = job_buf(&j, in, NULL, (size_t)n * F4, 0);
    int bo = job_buf(&j, NULL, out, (size_t)n * F4, 1);
    int e = job_stage(&j);
    if (!e) e = tcu_gelu(j.c->s, D(&j, bo), D(&j, bi), (size_t)n);
    job_finish(&j, e, "gelu");
}

static void cu_attention(float *out, const float *q, const float *kc, const float *vc, int start,
                         int n, int D_, int H, float *scratch) {
    (void)scratch;
    if (n <= 0) return;
    Job j;
    if (!job_begin(&j)) {
        nan_fill(out, (size_t)n * D_);
        return;
    }
    size_t steps = (size_t)start + n;
    int bq = job_buf(&j, q, NULL, (size_t)n * D_ * F4, 0);
    int bk = job_buf(&j, kc, NULL, steps * D_ * F4, 0);
    int bv = job_buf(&j, vc, NULL, steps * D_ * F4, 0);
    int bs = job_buf(&j, NULL, NULL, (size_t)n * H * steps * F4, 0);
    int bo = job_buf(&j, NULL, out, (size_t)n * D_ * F4, 1);
    int e = job_stage(&j);
    if (!e) e = tcu_attention(j.c->s, D(&j, bo), D(&j, bq), D(&j, bk), D(&j, bv), start, n, D_, H,
                              D(&j, bs));
    job_finish(&j, e, "attention");
}

static void cu_matmul_backward(float *din, float *dW, float *db, const float *dout,
                               const float *in, const float *W, int n, int in_dim, int out_dim) {
    if (n <= 0) return;
    Job j;
    if (!job_begin(&j)) {
        nan_fill(din, din ? (size_t)n * in_dim : 0);
        nan_fill(dW, dW ? (size_t)out_dim * in_dim : 0);
        nan_fill(db, db ? (size_t)out_dim : 0);
        return;
    }
    int bdo = job_buf(&j, dout, NULL, (size_t)n * out_dim * F4, 0);
    int bin = dW ? job_buf(&j, in, NULL, (size_t)n * in_dim * F4, 0) : -1;
    int bW = din ? job_buf(&j, W, NULL, (size_t)out_dim * in_dim * F4, 0) : -1;
    int bdi = din ? job_buf(&j, NULL, din, (size_t)n * in_dim * F4, 1) : -1;
    int bdW = dW ? job_buf(&j, dW, dW, (size_t)out_dim * in_dim * F4, 1) : -1;
    int bdb = db ? job_buf(&j, db, db, (size_t)out_dim * F4, 1) : -1;
    int bs = db ? job_buf(&j, NULL, NULL, tcu_colsum_scratch(n, out_dim) * F4, 0) : -1;
    int e = job_stage(&j);
    if (!e) e = tcu_matmul_backward(j.c->h, j.c->s, D(&j, bdi), D(&j, bdW), D(&j, bdb),
                                    D(&j, bdo), D(&j, bin), D(&j, bW), n, in_dim, out_dim,
                                    D(&j, bs));
    job_finish(&j, e, "matmul_backward");
}

static void cu_layernorm_train(float *out, float *mu, float *rstd, const float *in, const float *w,
                               const float *b, int n, int D_, float eps) {
    if (n <= 0) return;
    Job j;
    if (!job_begin(&j)) {
        nan_fill(out, (size_t)n * D_);
        nan_fill(mu, (size_t)n);
        nan_fill(rstd, (size_t)n);
        return;
    }
    size_t nd = (size_t)n * D_ * F4;
    int bi = job_buf(&j, in, NULL, nd, 0);
    int bw = job_buf(&j, w, NULL, (size_t)D_ * F4, 0);
    int bb = job_buf(&j, b, NULL, (size_t)D_ * F4, 0);
    int bo = job_buf(&j, NULL, out, nd, 1);
    int bm = job_buf(&j, NULL, mu, (size_t)n * F4, 1);
    int br = job_buf(&j, NULL, rstd, (size_t)n * F4, 1);
    int e = job_stage(&j);
    if (!e) e = tcu_layernorm(j.c->s, D(&j, bo), D(&j, bm), D(&j, br), D(&j, bi), D(&j, bw),
                              D(&j, bb), n, D_, eps);
    job_finish(&j, e, "layernorm_train");
}

static void cu_layernorm_backward(float *din, float *dw, float *db, const float *dout,
                                  const float *in, const float *mu, const float *rstd,
                                  const float *w, int n, int D_) {
    if (n <= 0) return;
    Job j;
    if (!job_begin(&j)) {
        nan_fill(din, (size_t)n * D_);
        nan_fill(dw, dw ? (size_t)D_ : 0);
        nan_fill(db, db ? (size_t)D_ : 0);
        return;
    }
    size_t nd = (size_t)n * D_ * F4;
    int bdo = job_buf(&j, dout, NULL, nd, 0);
    int bin = job_buf(&j, in, NULL, nd, 0);
    int bmu = job_buf(&j, mu, NULL, (size_t)n * F4, 0);
    int brs = job_buf(&j, rstd, NULL, (size_t)n * F4, 0);
    int bw = job_buf(&j, w, NULL, (size_t)D_ * F4, 0);
    int bdi = job_buf(&j, NULL, din, nd, 1);
    int bdw = dw ? job_buf(&j, dw, dw, (size_t)D_ * F4, 1) : -1;
    int bdb = db ? job_buf(&j, db, db, (size_t)D_ * F4, 1) : -1;
    int bs = (dw || db) ? job_buf(&j, NULL, NULL, (tcu_colsum_scratch(n, D_) + (size_t)n * D_) * F4, 0)
                        : -1;
    int e = job_stage(&j);
    if (!e) e = tcu_layernorm_backward(j.c->s, D(&j, bdi), D(&j, bdw), D(&j, bdb), D(&j, bdo),
                                       D(&j, bin), D(&j, bmu), D(&j, brs), D(&j, bw), n, D_,
                                       D(&j, bs));
    job_finish(&j, e, "layernorm_backward");
}

static void cu_gelu_backward(float *din, const float *dout, const float *in, int n) {
    if (n <= 0) return;
    Job j;
    if (!job_begin(&j)) {
        nan_fill(din, (size_t)n);
        return;
    }
    int bdo = job_buf(&j, dout, NULL, (size_t)n * F4, 0);
    int bi = job_buf(&j, in, NULL, (size_t)n * F4, 0);
    int bdi = job_buf(&j, NULL, din, (size_t)n * F4, 1);
    int e = job_stage(&j);
    if (!e) e = tcu_gelu_backward(j.c->s, D(&j, bdi), D(&j, bdo), D(&j, bi), (size_t)n);
    job_finish(&j, e, "gelu_backward");
}

static void cu_attention_train(float *out, float *probs, const float *qkv, int nb, int n, int D_,
                               int H) {
    if (nb <= 0 || n <= 0) return;
    Job j;
    if (!job_begin(&j)) {
        nan_fill(out, (size_t)nb * n * D_);
        nan_fill(probs, (size_t)nb * H * n * n);
        return;
    }
    int bq = job_buf(&j, qkv, NULL, (size_t)nb * n * 3 * D_ * F4, 0);
    int bo = job_buf(&j, NULL, out, (size_t)nb * n * D_ * F4, 1);
    int bp = job_buf(&j, NULL, probs, (size_t)nb * H * n * n * F4, 1);
    int e = job_stage(&j);
    if (!e) e = tcu_attention_train(j.c->s, D(&j, bo), D(&j, bp), D(&j, bq), nb, n, D_, H);
    job_finish(&j, e, "attention_train");
}

static void cu_attention_backward(float *dqkv, const float *dout, const float *probs,
                                  const float *qkv, int nb, int n, int D_, int H) {
    if (nb <= 0 || n <= 0) return;
    Job j;
    if (!job_begin(&j)) {
        nan_fill(dqkv, (size_t)nb * n * 3 * D_);
        return;
    }
    size_t pp = (size_t)nb * H * n * n * F4;
    int bdo = job_buf(&j, dout, NULL, (size_t)nb * n * D_ * F4, 0);
    int bp = job_buf(&j, probs, NULL, pp, 0);
    int bq = job_buf(&j, qkv, NULL, (size_t)nb * n * 3 * D_ * F4, 0);
    int bs = job_buf(&j, NULL, NULL, pp, 0);
    int bd = job_buf(&j, NULL, dqkv, (size_t)nb * n * 3 * D_ * F4, 1);
    int e = job_stage(&j);
    if (!e) e = tcu_attention_backward(j.c->s, D(&j, bd), D(&j, bdo), D(&j, bp), D(&j, bq), nb, n,
                                       D_, H, D(&j, bs));
    job_finish(&j, e, "attention_backward");
}

static const Ops ops_cuda = {
    .name = "cuda",
    .matmul = cu_matmul,
    .layernorm = cu_layernorm,
    .gelu = cu_gelu,
    .attention = cu_attention,
    .matmul_backward = cu_matmul_backward,
    .layernorm_train = cu_layernorm_train,
    .layernorm_backward = cu_layernorm_backward,
    .gelu_backward = cu_gelu_backward,
    .attention_train = cu_attention_train,
    .attention_backward = cu_attention_backward,
    .pin = cuda_pin,
    .unpin = cuda_unpin,
};

const Ops *ops_cuda_get(void) {
    pthread_once(&dev_once, dev_init);
    return dev_usable ? &ops_cuda : NULL;
}

/* ---- batch functions (ops_cuda.h) ----------------------------------------------- */

static tflm_status no_device(const char *what) {
    return tflm__err(TFLM_EUNSUPPORTED, "%s: %s", what, ops_cuda_error());
}

static tflm_status cuda_fail(const char *what, int err) {
    return tflm__err(err == (int)cudaErrorMemoryAllocation ? TFLM_ENOMEM : TFLM_EIO,
                     "%s (cuda): %s", what, ops_cuda_error());
}

static const char *root_reason(int st) {
    switch (st) {
    case TCU_E_TARGET: return "target y is not finite";
    case TCU_E_MIXTURE: return "bad mixture (mean or sd not finite)";
    case TCU_E_NAN: return "NaN during the search";
    case TCU_E_BRACKET: return "cannot bracket the root";
    case TCU_E_CONVERGE: return "no convergence in 100 steps";
    default: return "unknown failure";
    }
}

/* the first failing element of a root-finder batch, or TFLM_OK */
static tflm_status root_status(const int *st, int n, const char *what, const char *unit) {
    for (int r = 0; r < n; r++)
        if (st[r] != TCU_OK)
            return tflm__err(TFLM_ENUMERIC, "%s (cuda): %s %d: %s", what, unit, r,
                             root_reason(st[r]));
    return TFLM_OK;
}

#define D8 sizeof(double)

tflm_status ops_cuda_mix1_forward(const float *prm, const float *clampf, int n, int c, int K,
                                  int affine, const double *x, double *y, double *logp) {
    if (n <= 0) return TFLM_OK;
    if (c <= 0 || K <= 0) return tflm__err(TFLM_EINVAL, "mix1 forward (cuda): bad sizes");
    Job j;
    if (!job_begin(&j)) return no_device("mix1 forward");
    int bp = job_buf(&j, prm, NULL, (size_t)n * 3 * K * F4, 0);
    int bc = job_buf(&j, clampf, NULL, (size_t)c * K * F4, 0);
    int bx = job_buf(&j, x, NULL, (size_t)n * D8, 0);
    int by = job_buf(&j, NULL, y, (size_t)n * D8, 0);
    int bl = job_buf(&j, NULL, logp, (size_t)n * D8, 0);
    int bs = job_buf(&j, NULL, NULL, tcu_mix1_scratch(n, K) * D8, 0);
    int e = job_stage(&j);
    if (!e) e = tcu_mix1_forward(j.c->s, D(&j, bp), D(&j, bc), n, c, K, affine, D(&j, bx),
                                 D(&j, by), D(&j, bl), D(&j, bs));
    e = job_finish(&j, e, "mix1 forward");
    return e ? cuda_fail("mix1 forward", e) : TFLM_OK;
}

tflm_status ops_cuda_mix1_inverse(const float *prm, const float *clampf, int n, int c, int K,
                                  int affine, const double *y, double *x, double *logp) {
    if (n <= 0) return TFLM_OK;
    if (c <= 0 || K <= 0) return tflm__err(TFLM_EINVAL, "mix1 inverse (cuda): bad sizes");
    int *st = malloc((size_t)n * sizeof(int));
    if (!st) return tflm__err(TFLM_ENOMEM, "mix1 inverse (cuda): out of memory");
    Job j;
    if (!job_begin(&j)) {
        free(st);
        return no_device("mix1 inverse");
    }
    int bp = job_buf(&j, prm, NULL, (size_t)n * 3 * K * F4, 0);
    int bc = job_buf(&j, clampf, NULL, (size_t)c * K * F4, 0);
    int by = job_buf(&j, y, NULL, (size_t)n * D8, 0);
    int bx = job_buf(&j, NULL, x, (size_t)n * D8, 0);
    int bl = logp ? job_buf(&j, NULL, logp, (size_t)n * D8, 0) : -1;
    int bt = job_buf(&j, NULL, st, (size_t)n * sizeof(int), 0);
    int bs = job_buf(&j, NULL, NULL, tcu_mix1_scratch(n, K) * D8, 0);
    int e = job_stage(&j);
    if (!e) e = tcu_mix1_inverse(j.c->s, D(&j, bp), D(&j, bc), n, c, K, affine, D(&j, by),
                                 D(&j, bx), D(&j, bl), D(&j, bt), D(&j, bs));
    e = job_finish(&j, e, "mix1 inverse");
    tflm_status r = e ? cuda_fail("mix1 inverse", e) : root_status(st, n, "mix1 inverse", "channel");
    free(st);
    return r;
}

tflm_status ops_cuda_mixd_forward(const float *logits, const float *mu, const float *logsig,
                                  int n, int V, int d, const double *z, double *y, double *lpc,
                                  double *logp) {
    if (n <= 0) return TFLM_OK;
    if (V <= 0 || d <= 0) return tflm__err(TFLM_EINVAL, "mixd forward (cuda): bad sizes");
    Job j;
    if (!job_begin(&j)) return no_device("mixd forward");
    int bl = job_buf(&j, logits, NULL, (size_t)n * V * F4, 0);
    int bm = job_buf(&j, mu, NULL, (size_t)V * d * F4, 0);
    int bs = job_buf(&j, logsig, NULL, (size_t)V * F4, 0);
    int bz = job_buf(&j, z, NULL, (size_t)n * d * D8, 0);
    int by = job_buf(&j, NULL, y, (size_t)n * d * D8, 0);
    int bc = lpc ? job_buf(&j, NULL, lpc, (size_t)n * d * D8, 0) : -1;
    int bp = job_buf(&j, NULL, logp, (size_t)n * D8, 0);
    int bw = job_buf(&j, NULL, NULL, tcu_mixd_scratch(n, V) * D8, 0);
    int e = job_stage(&j);
    if (!e) e = tcu_mixd_forward(j.c->s, D(&j, bl), D(&j, bm), D(&j, bs), n, V, d, D(&j, bz),
                                 D(&j, by), D(&j, bc), D(&j, bp), D(&j, bw));
    e = job_finish(&j, e, "mixd forward");
    return e ? cuda_fail("mixd forward", e) : TFLM_OK;
}

tflm_status ops_cuda_mixd_inverse(const float *logits, const float *mu, const float *logsig,
                                  int n, int V, int d, const double *y, double *z, double *lpc,
                                  double *logp) {
    if (n <= 0) return TFLM_OK;
    if (V <= 0 || d <= 0) return tflm__err(TFLM_EINVAL, "mixd inverse (cuda): bad sizes");
    int *st = malloc((size_t)n * sizeof(int));
    if (!st) return tflm__err(TFLM_ENOMEM, "mixd inverse (cuda): out of memory");
    Job j;
    if (!job_begin(&j)) {
        free(st);
        return no_device("mixd inverse");
    }
    int bl = job_buf(&j, logits, NULL, (size_t)n * V * F4, 0);
    int bm = job_buf(&j, mu, NULL, (size_t)V * d * F4, 0);
    int bs = job_buf(&j, logsig, NULL, (size_t)V * F4, 0);
    int by = job_buf(&j, y, NULL, (size_t)n * d * D8, 0);
    int bz = job_buf(&j, NULL, z, (size_t)n * d * D8, 0);
    int bc = lpc ? job_buf(&j, NULL, lpc, (size_t)n * d * D8, 0) : -1;
    int bp = logp ? job_buf(&j, NULL, logp, (size_t)n * D8, 0) : -1;
    int bt = job_buf(&j, NULL, st, (size_t)n * sizeof(int), 0);
    int bw = job_buf(&j, NULL, NULL, tcu_mixd_scratch(n, V) * D8, 0);
    int e = job_stage(&j);
    if (!e) e = tcu_mixd_inverse(j.c->s, D(&j, bl), D(&j, bm), D(&j, bs), n, V, d, D(&j, by),
                                 D(&j, bz), D(&j, bc), D(&j, bp), D(&j, bt), D(&j, bw));
    e = job_finish(&j, e, "mixd inverse");
    tflm_status r = e ? cuda_fail("mixd inverse", e) : root_status(st, n, "mixd inverse", "token");
    free(st);
    return r;
}

tflm_status ops_cuda_codebook_encode(const int *tok, const float *mu, const float *logsig,
                                     const double *eps, int n, int V, int d, float *z) {
    if (n <= 0) return TFLM_OK;
    for (int t = 0; t < n; t++)
        if (tok[t] < 0 || tok[t] >= V)
            return tflm__err(TFLM_EINVAL, "codebook encode (cuda): token %d out of range", tok[t]);
    Job j;
    if (!job_begin(&j)) return no_device("codebook encode");
    int bt = job_buf(&j, tok, NULL, (size_t)n * sizeof(int), 0);
    int bm = job_buf(&j, mu, NULL, (size_t)V * d * F4, 0);
    int bs = job_buf(&j, logsig, NULL, (size_t)V * F4, 0);
    int be = eps ? job_buf(&j, eps, NULL, (size_t)n * d * D8, 0) : -1;
    int bz = job_buf(&j, NULL, z, (size_t)n * d * F4, 1);
    int e = job_stage(&j);
    if (!e) e = tcu_codebook_encode(j.c->s, D(&j, bz), D(&j, bt), D(&j, bm), D(&j, bs), D(&j, be),
                                    n, d);
    e = job_finish(&j, e, "codebook encode");
    return e ? cuda_fail("codebook encode", e) : TFLM_OK;
}

tflm_status ops_cuda_codebook_decode(const float *z, const float *mu, const float *logsig, int n,
                                     int V, int d, double *logits, int *ids, float *prob,
                                     float *entropy, double *R) {
    if (n <= 0) return TFLM_OK;
    Job j;
    if (!job_begin(&j)) return no_device("codebook decode");
    int bz = job_buf(&j, z, NULL, (size_t)n * d * F4, 0);
    int bm = job_buf(&j, mu, NULL, (size_t)V * d * F4, 0);
    int bs = job_buf(&j, logsig, NULL, (size_t)V * F4, 0);
    int bl = job_buf(&j, NULL, logits, (size_t)n * V * D8, 0);
    int bi = ids ? job_buf(&j, NULL, ids, (size_t)n * sizeof(int), 0) : -1;
    int bp = prob ? job_buf(&j, NULL, prob, (size_t)n * F4, 1) : -1;
    int bh = entropy ? job_buf(&j, NULL, entropy, (size_t)n * F4, 1) : -1;
    int br = R ? job_buf(&j, NULL, R, (size_t)n * D8, 0) : -1;
    int e = job_stage(&j);
    if (!e) e = tcu_codebook_logits(j.c->s, D(&j, bl), D(&j, bz), D(&j, bm), D(&j, bs), n, V, d);
    if (!e && (ids || prob || entropy || R))
        e = tcu_codebook_decode(j.c->s, D(&j, bl), n, V, D(&j, bi), D(&j, bp), D(&j, bh),
                                D(&j, br));
    e = job_finish(&j, e, "codebook decode");
    return e ? cuda_fail("codebook decode", e) : TFLM_OK;
}

tflm_status ops_cuda_adamw(float *w, float *m, float *v, const float *g, size_t n, double lr,
                           double b1, double b2, double c1, double c2, double eps, double wd,
                           double scale) {
    if (!n) return TFLM_OK;
    Job j;
    if (!job_begin(&j)) return no_device("adamw");
    int bw = job_buf(&j, w, w, n * F4, 1);
    int bm = job_buf(&j, m, m, n * F4, 1);
    int bv = job_buf(&j, v, v, n * F4, 1);
    int bg = job_buf(&j, g, NULL, n * F4, 0);
    int e = job_stage(&j);
    if (!e) e = tcu_adamw(j.c->s, D(&j, bw), D(&j, bm), D(&j, bv), D(&j, bg), n, lr, b1, b2, c1,
                          c2, eps, wd, scale);
    e = job_finish(&j, e, "adamw");
    return e ? cuda_fail("adamw", e) : TFLM_OK;
}

tflm_status ops_cuda_sumsq(const float *g, size_t n, double *out) {
    Job j;
    if (!job_begin(&j)) return no_device("sumsq");
    int bg = n ? job_buf(&j, g, NULL, n * F4, 0) : -1;
    int bo = job_buf(&j, NULL, out, D8, 0);
    int bs = job_buf(&j, NULL, NULL, (tcu_sumsq_scratch(n) + 1) * D8, 0);
    int e = job_stage(&j);
    if (!e) e = tcu_sumsq(j.c->s, D(&j, bg), n, D(&j, bo), D(&j, bs));
    e = job_finish(&j, e, "sumsq");
    return e ? cuda_fail("sumsq", e) : TFLM_OK;
}
