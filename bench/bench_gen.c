/* bench_gen.c: generation speed of a flow model against the same-size ar
 * baseline in the same engine, and the machine's sgemm rate, in one run.
 * Model: d_model 256, 8 heads, 2 blocks per flow (~1.7 M parameters per
 * flow), 4 flows (mixd, then mix1 K=8 alternating), d 8, P 1, T 256,
 * flip block 16. ar: the same width and total depth (8 blocks).
 * Usage: bench_gen [threads] [new_chars] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "config.h"
#include "flow.h"
#ifdef HAVE_BLAS
#include <cblas.h>
#endif

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static long rss_kb(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, rss = 0;
    if (f) { if (fscanf(f, "%ld %ld", &pages, &rss) != 2) rss = 0; fclose(f); }
    return rss * (sysconf(_SC_PAGESIZE) / 1024);
}

static double sgemm_gflops(void) {
#ifdef HAVE_BLAS
    int n = 256, m = 1024, k = 256, reps = 40;
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

static const char *CFG_FLOW =
    "{\"format\":\"tflm\",\"version\":1,\"vocab_size\":97,\"latent_dim\":8,\"patch\":1,"
    "\"window\":256,\"d_model\":256,\"n_heads\":8,\"flip_block\":16,\"ln_eps\":1e-5,\"flows\":["
    "{\"type\":\"mixd\",\"layers\":2,\"direction\":\"l2r\"},"
    "{\"type\":\"mix1\",\"layers\":2,\"mixtures\":8,\"direction\":\"flip\"},"
    "{\"type\":\"mix1\",\"layers\":2,\"mixtures\":8,\"direction\":\"l2r\"},"
    "{\"type\":\"mix1\",\"layers\":2,\"mixtures\":8,\"direction\":\"flip\"}]}";
static const char *CFG_AR =
    "{\"format\":\"tflm\",\"version\":1,\"vocab_size\":97,\"latent_dim\":32,\"patch\":1,"
    "\"window\":256,\"d_model\":256,\"n_heads\":8,\"flip_block\":16,\"ln_eps\":1e-5,\"flows\":["
    "{\"type\":\"ar\",\"layers\":8}]}";

static void run(const char *label, const char *cfgjson, const char *path, int threads, int n_new) {
    if (tflm_init_model(cfgjson, 1, path) != TFLM_OK) {
        fprintf(stderr, "bench: %s\n", tflm_last_error());
        exit(1);
    }
    long rss0 = rss_kb();
    tflm_params p;
    tflm_params_default(&p);
    p.threads = threads;
    p.no_mmap = 1;   /* the heads are randomised below */
    tflm_ctx *ctx;
    if (tflm_load(&ctx, path, &p) != TFLM_OK) { fprintf(stderr, "bench: %s\n", tflm_last_error()); exit(1); }
    tflm_info info;
    tflm_get_info(ctx, &info);
    /* random heads so that the inverse does real root finding */
    for (int i = 0; i < ctx->m.params.n; i++) {
        ParamInfo *pi = &ctx->m.params.p[i];
        if (!strstr(pi->name, "head.weight")) continue;
        for (size_t j = 0; j < pi->numel; j++)
            (*pi->slot)[j] = (float)(0.05 * rng_normal(rng_key(3, 9, i, j, 0)));
    }
    tflm_gen_params g;
    tflm_gen_params_default(&g);
    g.n_new = 16;
    tflm_trace *tr = NULL;
    double t = now();
    tflm_generate(ctx, "It is a truth universally acknowledged", &g, &tr);
    double first = now() - t;
    tflm_trace_free(tr);
    g.n_new = n_new;
    t = now();
    tflm_status st = tflm_generate(ctx, "It is a truth universally acknowledged", &g, &tr);
    double el = now() - t;
    if (st != TFLM_OK) { fprintf(stderr, "bench: %s\n", tflm_last_error()); exit(1); }
    long rss1 = rss_kb();
    int layers = info.is_ar ? 1 : info.n_flows;
    printf("%-6s params %8lld  %3d chars in %7.3f s  %8.1f chars/s  first block %6.1f ms  "
           "ms/char/flow %.3f  RSS +%ld kB\n", label, info.n_params, n_new, el, n_new / el,
           first * 1e3, el * 1e3 / n_new / layers, rss1 - rss0);
    tflm_trace_free(tr);
    tflm_free(ctx);
}

/* resident memory of a loaded (mmapped) model after a generation, against
 * the budget: file size + KV caches + 16 MB */
static void memory(const char *label, const char *cfgjson, const char *path) {
    tflm_init_model(cfgjson, 1, path);
    FILE *f = fopen(path, "rb");
    fseek(f, 0, SEEK_END);
    long fsize = ftell(f);
    fclose(f);
    long rss0 = rss_kb();
    tflm_ctx *ctx;
    if (tflm_load(&ctx, path, NULL) != TFLM_OK) { fprintf(stderr, "bench: %s\n", tflm_last_error()); exit(1); }
    tflm_info in;
    tflm_get_info(ctx, &in);
    long kv = 0;
    for (int l = 0; l < in.n_flows; l++) kv += 2L * in.flows[l].layers * in.positions * in.d_model * 4;
    tflm_gen_params g;
    tflm_gen_params_default(&g);
    g.n_new = 256;
    tflm_trace *tr = NULL;
    tflm_generate(ctx, "It is a truth universally acknowledged", &g, &tr);
    long used = rss_kb() - rss0;
    long budget = fsize / 1024 + kv / 1024 + 16 * 1024;
    printf("%-6s memory: RSS +%ld kB after load + 256-char generation; budget file %ld kB + KV %ld kB "
           "+ 16 MB = %ld kB: %s\n", label, used, fsize / 1024, kv / 1024, budget,
           used <= budget ? "within" : "OVER");
    tflm_trace_free(tr);
    tflm_free(ctx);
    unlink(path);
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 1, n_new = argc > 2 ? atoi(argv[2]) : 256;
    char fpath[] = "/tmp/tflm-bench-flow.safetensors", apath[] = "/tmp/tflm-bench-ar.safetensors";
    printf("sgemm (1 thread, 1024x256x256): %.1f GFLOP/s\n", sgemm_gflops());
    printf("generation, %d thread(s), %d new characters after a 38-character context\n", threads, n_new);
    run("flow", CFG_FLOW, fpath, threads, n_new);
    run("ar", CFG_AR, apath, threads, n_new);
    memory("flow", CFG_FLOW, fpath);
    memory("ar", CFG_AR, apath);
    unlink(fpath);
    unlink(apath);
    return 0;
}
