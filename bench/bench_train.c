/* bench_train.c: training throughput of a ~2 M-parameter flow model (two
 * mix1 flows of one block, d_model 256, trained jointly) and the same-size ar
 * model (two blocks), against the machine's measured sgemm rate, in one run.
 * FLOPs per step: 6 x (matrix parameters) x tokens + attention (causal
 * QK^T and AV, forward and backward: 6 N^2 D per window and block).
 * Usage: bench_train [threads] [steps] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "config.h"
#include "tflm.h"
#ifdef HAVE_BLAS
#include <cblas.h>
#endif

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* one-thread sgemm rate on a training-sized product, times threads */
static double sgemm_gflops(void) {
#ifdef HAVE_BLAS
    int m = 2048, n = 1024, k = 256, reps = 10;
    float *a = calloc((size_t)m * k, 4), *b = calloc((size_t)k * n, 4), *c = calloc((size_t)m * n, 4);
    for (int i = 0; i < m * k; i++) a[i] = (float)(i % 7) * 0.1f;
    for (int i = 0; i < k * n; i++) b[i] = (float)(i % 5) * 0.1f;
    openblas_set_num_threads(1);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1, a, k, b, k, 0, c, n);
    double t = now();
    for (int r = 0; r < reps; r++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1, a, k, b, k, 0, c, n);
    t = now() - t;
    free(a); free(b); free(c);
    return 2.0 * m * n * k * reps / t / 1e9;
#else
    return 0;
#endif
}

static const char *MODEL_FLOW =
    "{\"format\":\"tflm\",\"version\":1,\"vocab_size\":97,\"latent_dim\":8,\"patch\":1,"
    "\"window\":128,\"d_model\":256,\"n_heads\":8,\"flip_block\":16,\"ln_eps\":1e-5,\"flows\":["
    "{\"type\":\"mix1\",\"layers\":1,\"mixtures\":8,\"direction\":\"l2r\"},"
    "{\"type\":\"mix1\",\"layers\":1,\"mixtures\":8,\"direction\":\"flip\"}]}";
static const char *MODEL_AR =
    "{\"format\":\"tflm\",\"version\":1,\"vocab_size\":97,\"latent_dim\":32,\"patch\":1,"
    "\"window\":128,\"d_model\":256,\"n_heads\":8,\"flip_block\":16,\"ln_eps\":1e-5,\"flows\":["
    "{\"type\":\"ar\",\"layers\":2}]}";

static double run(const char *model, const char *data, int threads, int steps) {
    char cfg[4096], out[] = "/tmp/tflm-bench-train.safetensors";
    snprintf(cfg, sizeof cfg, "{\"model\": %s, \"schedule\": \"joint\", \"steps\": %d, \"batch\": 32, "
             "\"valid_every\": 0, \"checkpoint_every_s\": 0, \"log_every\": 1000000}", model, steps);
    tflm_train_opts o;
    tflm_train_opts_default(&o);
    o.threads = threads;
    const char *files[1] = {data};
    double t = now();
    if (tflm_train(cfg, files, 1, NULL, out, NULL, &o, NULL) != TFLM_OK) {
        fprintf(stderr, "bench_train: %s\n", tflm_last_error());
        exit(1);
    }
    t = now() - t;
    char ck[256];
    snprintf(ck, sizeof ck, "%s.ckpt", out);
    unlink(out);
    unlink(ck);
    return t;
}

static void bench(const char *label, const char *model, long long matrix_params, int D, int blocks,
                  const char *data, int threads, int steps, double peak) {
    /* setup and saving cost the same in both runs: the difference is pure steps */
    double t1 = run(model, data, threads, 2), t2 = run(model, data, threads, 2 + steps);
    double per = (t2 - t1) / steps, tokens = 32.0 * 128;
    double flops = 6.0 * matrix_params * tokens + 32.0 * blocks * 6.0 * 128 * 128 * D;
    double gf = flops / per / 1e9;
    printf("%-5s %6.0f tokens/s  %6.1f ms/step  %6.1f GFLOP/s  = %4.1f %% of %d x sgemm (%.1f GFLOP/s)\n",
           label, tokens / per, per * 1e3, gf, 100 * gf / peak, threads, peak);
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2, steps = argc > 2 ? atoi(argv[2]) : 8;
    const char *data = "/tmp/tflm-bench-train.txt";
    FILE *f = fopen(data, "w");
    for (int i = 0; i < 4000; i++)
        fprintf(f, "It is a truth universally acknowledged, that a single man %d in possession.\n", i);
    fclose(f);
    double one = sgemm_gflops();
    printf("sgemm, one thread (2048x1024x256): %.1f GFLOP/s; %d threads: %.1f\n", one, threads, one * threads);
    printf("training, batch 32 x 128 tokens, %d thread(s), %d timed steps\n", threads, steps);
    /* matrix parameters: per block 12 D^2; in_proj, head */
    long long D = 256;
    bench("flow", MODEL_FLOW, 2 * (12 * D * D + D * 8 + D * 8 * 24), 256, 2, data, threads, steps, one * threads);
    bench("ar", MODEL_AR, 2 * 12 * D * D + D * 32 + D * 97, 256, 2, data, threads, steps, one * threads);
    unlink(data);
    return 0;
}
