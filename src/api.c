/* api.c: the context (load, free, threads), model description, defaults,
 * and writing a randomly initialised model. */
#include <stdlib.h>
#include <string.h>
#include <omp.h>
#include "internal.h"
#include "config.h"
#ifdef HAVE_BLAS
#include <cblas.h>
#endif

void tflm_params_default(tflm_params *p) {
    memset(p, 0, sizeof *p);
    p->threads = 1;
    p->use_blas = 1;
}

void tflm_score_params_default(tflm_score_params *p) {
    memset(p, 0, sizeof *p);
    p->samples = 1;
    p->seed = 1234;
}

tflm_status tflm_load(tflm_ctx **out, const char *path, const tflm_params *p) {
    if (!out || !path) return tflm__err(TFLM_EINVAL, "load: missing argument");
    *out = NULL;
    tflm_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return tflm__err(TFLM_ENOMEM, "load: out of memory");
    if (p) ctx->p = *p;
    else tflm_params_default(&ctx->p);
    tflm_status st = model_load(&ctx->m, path, !ctx->p.no_mmap);
    if (st != TFLM_OK) {
        free(ctx);
        return st;
    }
    ctx->ops = ops_get(ctx->p.use_blas);
    if (ctx->p.device == TFLM_DEVICE_CUDA) {
        /* the transformer on the GPU, the weights pinned there (kernels/cuda) */
        const Ops *g = ops_cuda_get();
        if (!g) {
            model_free(&ctx->m);
            free(ctx);
            return tflm__err(TFLM_EUNSUPPORTED, "device cuda: %s", ops_cuda_error());
        }
        ctx->ops = g;
        for (int i = 0; i < ctx->m.params.n && g->pin; i++)
            g->pin(ctx, *ctx->m.params.p[i].slot, ctx->m.params.p[i].numel * sizeof(float));
    } else if (ctx->p.device != TFLM_DEVICE_CPU) {
        int dev = ctx->p.device;
        model_free(&ctx->m);
        free(ctx);
        return tflm__err(TFLM_EINVAL, "load: unknown device %d", dev);
    }
    tflm_set_threads(ctx, ctx->p.threads);
    *out = ctx;
    return TFLM_OK;
}

void tflm_free(tflm_ctx *ctx) {
    if (!ctx) return;
    if (ctx->ops && ctx->ops->unpin) ctx->ops->unpin(ctx);
    model_free(&ctx->m);
    free(ctx);
}

void tflm_set_threads(tflm_ctx *ctx, int threads) {
    if (!ctx) return;
    ctx->threads = threads > 0 ? threads : 1;
    /* the ops' own parallel loops use the same count: with more OpenMP
     * threads than the caller asked for, idle threads spin and, on a busy
     * machine, slow everything down many times over */
    omp_set_num_threads(ctx->threads);
#ifdef HAVE_BLAS
    /* we split work across threads ourselves; each runs a one-thread sgemm
     * (DESIGN §6: 1.7x faster than OpenBLAS's own threading on these shapes) */
    openblas_set_num_threads(1);
#endif
}

static const char *type_name(int t) {
    switch (t) {
    case FLOW_MIX1: return "mix1";
    case FLOW_AFFINE: return "affine";
    case FLOW_MIXD: return "mixd";
    default: return "ar";
    }
}

void tflm_get_info(const tflm_ctx *ctx, tflm_info *o) {
    memset(o, 0, sizeof *o);
    if (!ctx) return;
    const Config *cf = &ctx->m.cfg;
    o->vocab_size = cf->V;
    o->latent_dim = cf->d;
    o->patch = cf->P;
    o->window = cf->T;
    o->d_model = cf->D;
    o->n_heads = cf->H;
    o->flip_block = cf->B;
    o->ln_eps = cf->ln_eps;
    o->n_flows = cf->L;
    o->is_ar = cf->is_ar;
    o->positions = cf->N;
    o->channels = cf->c;
    o->n_params = (long long)ctx->m.params.total;
    for (int l = 0; l < cf->L; l++) {
        const FlowConfig *f = &cf->flow[l];
        snprintf(o->flows[l].type, sizeof o->flows[l].type, "%s", type_name(f->type));
        snprintf(o->flows[l].direction, sizeof o->flows[l].direction, "%s",
                 f->dir == DIR_FLIP ? "flip" : "l2r");
        o->flows[l].layers = f->layers;
        o->flows[l].mixtures = f->K;
        o->flows[l].maf_embed = f->maf_E;
        o->flows[l].maf_hidden = f->maf_H;
    }
}

const char *tflm_metadata(const tflm_ctx *ctx, const char *key) {
    if (!ctx || !key || !ctx->m.meta) return NULL;
    return json_string_value(json_object_get(ctx->m.meta, key));
}

tflm_status tflm_init_model(const char *config_json, uint64_t seed, const char *path) {
    if (!config_json || !path) return tflm__err(TFLM_EINVAL, "init: missing argument");
    Config cf;
    tflm_status st = config_parse(&cf, config_json);
    if (st != TFLM_OK) return st;
    Model m;
    memset(&m, 0, sizeof m);
    if ((st = model_init(&m, &cf, seed)) != TFLM_OK) return st;
    json_t *extra = json_object();
    char rec[160];
    snprintf(rec, sizeof rec, "{\"init\": \"random\", \"seed\": %llu, \"steps\": 0}",
             (unsigned long long)seed);
    json_object_set_new(extra, "tflm.train", json_string(rec));
    st = model_save(&m, path, extra);
    json_decref(extra);
    model_free(&m);
    return st;
}
