/* bench_gpu.c: the CUDA backend against the CPU, through the public API, for
 * two model sizes: the first release's default shape (model/recipes/experiments/likelihood-mixd.json:
 * d_model 128, flows mixd(2 blocks), mix1 K=8 (1), mix1 K=8 (1), T 128,
 * d 8) and the same shape about 10x larger (d_model 416, 8 heads).
 *
 * For each size and device:
 *  - a training step (joint schedule, batch 32 x 128 tokens): the time of a
 *    run of 1 + k steps minus a run of 1 step, over k (setup, the first
 *    step's warm-up and saving cancel out);
 *  - generating 256 characters with no context (argmax decoding, seed 1),
 *    one generation after a warm-up one;
 *  - on the GPU also with 1 trainer thread, since the couplings and the
 *    optimizer stay on the CPU and are split over the threads.
 * Usage: bench_gpu [threads] [cpu_train_steps] [gpu_train_steps] [sizes]
 * (default: all CPUs, 3, 10, 2; sizes 1 = the default shape only).
 * Prints one line per measurement. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "config.h"
#include "tflm.h"
#include "ops.h"
#ifdef HAVE_CUDA
#include "cuda/ops_cuda.h"
#endif

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

#define FLOWS "\"flows\":[{\"type\":\"mixd\",\"layers\":2,\"direction\":\"l2r\"}," \
    "{\"type\":\"mix1\",\"layers\":1,\"mixtures\":8,\"direction\":\"flip\"}," \
    "{\"type\":\"mix1\",\"layers\":1,\"mixtures\":8,\"direction\":\"l2r\"}]}"
static const char *MODEL_DEFAULT =
    "{\"format\":\"tflm\",\"version\":1,\"vocab_size\":97,\"latent_dim\":8,\"patch\":1,"
    "\"window\":128,\"d_model\":128,\"n_heads\":4,\"flip_block\":16,\"ln_eps\":1e-05," FLOWS;
static const char *MODEL_LARGE =
    "{\"format\":\"tflm\",\"version\":1,\"vocab_size\":97,\"latent_dim\":8,\"patch\":1,"
    "\"window\":128,\"d_model\":416,\"n_heads\":8,\"flip_block\":16,\"ln_eps\":1e-05," FLOWS;

static const char *DATA = "/tmp/tflm-bench-gpu.txt";

/* seconds of a tflm_train run of `steps` steps, or -1 */
static double train_run(const char *model, int device, int threads, int steps) {
    char cfg[4096], out[] = "/tmp/tflm-bench-gpu.safetensors", ck[256];
    snprintf(cfg, sizeof cfg, "{\"model\": %s, \"schedule\": \"joint\", \"steps\": %d, \"batch\": 32, "
             "\"valid_every\": 0, \"checkpoint_every_s\": 0, \"log_every\": 1000000}", model, steps);
    tflm_train_opts o;
    tflm_train_opts_default(&o);
    o.threads = threads;
    o.device = device;
    const char *files[1] = {DATA};
    double t = now();
    tflm_status st = tflm_train(cfg, files, 1, NULL, out, NULL, &o, NULL);
    t = now() - t;
    snprintf(ck, sizeof ck, "%s.ckpt", out);
    unlink(out);
    unlink(ck);
    if (st != TFLM_OK) {
        printf("    train failed: %s\n", tflm_last_error());
        return -1;
    }
    return t;
}

static void bench_train(const char *label, const char *model, int device, int threads, int k) {
    double t1 = train_run(model, device, threads, 1);
    double t2 = t1 < 0 ? -1 : train_run(model, device, threads, 1 + k);
    if (t1 < 0 || t2 < 0) return;
    double per = (t2 - t1) / k;
    printf("  train step  %-22s %9.1f ms/step  %9.0f tokens/s  (%d steps timed)\n", label,
           per * 1e3, 32.0 * 128 / per, k);
    fflush(stdout);
}

static void bench_gen(const char *label, const char *path, int device, int threads) {
    tflm_params p;
    tflm_params_default(&p);
    p.threads = threads;
    p.device = device;
    tflm_ctx *ctx = NULL;
    double t0 = now();
    if (tflm_load(&ctx, path, &p) != TFLM_OK) {
        printf("    load failed: %s\n", tflm_last_error());
        return;
    }
    double tl = now() - t0;
    tflm_gen_params g;
    tflm_gen_params_default(&g);
    g.n_new = 256;
    g.seed = 1;
    tflm_trace *tr = NULL;
    g.n_new = 32;                          /* warm-up */
    if (tflm_generate_ids(ctx, NULL, 0, &g, &tr) != TFLM_OK) {
        printf("    generate failed: %s\n", tflm_last_error());
        tflm_free(ctx);
        return;
    }
    tflm_trace_free(tr);
    tr = NULL;
    g.n_new = 256;
    double t = now();
    tflm_status st = tflm_generate_ids(ctx, NULL, 0, &g, &tr);
    t = now() - t;
    if (st != TFLM_OK) printf("    generate failed: %s\n", tflm_last_error());
    else
        printf("  generate 256 %-22s %9.3f s          %9.1f chars/s   (load %.2f s)\n", label, t,
               256 / t, tl);
    fflush(stdout);
    tflm_trace_free(tr);
    tflm_free(ctx);
}

int main(int argc, char **argv) {
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int threads = argc > 1 ? atoi(argv[1]) : (int)(ncpu > 0 ? ncpu : 1);
    int kc = argc > 2 ? atoi(argv[2]) : 3, kg = argc > 3 ? atoi(argv[3]) : 10;
    int sizes = argc > 4 ? atoi(argv[4]) : 2;
    if (threads < 1) threads = 1;
    if (kc < 1) kc = 1;
    if (kg < 1) kg = 1;
    FILE *f = fopen(DATA, "w");
    if (!f) return 1;
    for (int i = 0; i < 4000; i++)
        fprintf(f, "It is a truth universally acknowledged, that a single man %d in possession.\n", i);
    fclose(f);
    const Ops *g = ops_cuda_get();
    printf("CPU: %ld cores online, %d threads; BLAS: %s\n", ncpu, threads, ops_get(1)->name);
#ifdef HAVE_CUDA
    printf("GPU: %s\n", g ? ops_cuda_device_name() : ops_cuda_error());
#else
    printf("GPU: %s\n", ops_cuda_error());
#endif
    const char *names[2] = {"default", "10x"}, *models[2] = {MODEL_DEFAULT, MODEL_LARGE};
    for (int s = 0; s < sizes && s < 2; s++) {
        char path[64];
        snprintf(path, sizeof path, "/tmp/tflm-bench-gpu-%s.safetensors", names[s]);
        if (tflm_init_model(models[s], 1, path) != TFLM_OK) {
            printf("init failed: %s\n", tflm_last_error());
            return 1;
        }
        tflm_ctx *ctx = NULL;
        tflm_info info;
        if (tflm_load(&ctx, path, NULL) == TFLM_OK) {
            tflm_get_info(ctx, &info);
            printf("\nmodel %s: d_model %d, %d heads, %d flows, %.2f M parameters\n", names[s],
                   info.d_model, info.n_heads, info.n_flows, info.n_params / 1e6);
            tflm_free(ctx);
        }
        char lab[64], labg[64];
        snprintf(lab, sizeof lab, "cpu, %d threads", threads);
        bench_train(lab, models[s], TFLM_DEVICE_CPU, threads, kc);
        if (g) {
            snprintf(labg, sizeof labg, "cuda, %d threads", threads);
            bench_train(labg, models[s], TFLM_DEVICE_CUDA, threads, kg);
            bench_train("cuda, 1 thread", models[s], TFLM_DEVICE_CUDA, 1, kg);
        }
        bench_gen("cpu, 1 thread", path, TFLM_DEVICE_CPU, 1);
        if (threads > 1) bench_gen(lab, path, TFLM_DEVICE_CPU, threads);
        if (g) bench_gen("cuda", path, TFLM_DEVICE_CUDA, 1);
        unlink(path);
    }
    unlink(DATA);
    return 0;
}
