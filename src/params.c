/* params.c: the parameter table: every tensor of a config with its DESIGN §4
 * name, shape, kind and the Weights pointer it binds to, in one fixed order
 * (codebook, then per flow: in_proj, pos, sos, blocks, ln_f, head or maf,
 * clamp). The loader, writer, initialiser and trainer all walk it. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

/* refuse models above 2^31 parameters (8 GiB of floats) */
#define MAX_TOTAL ((size_t)1 << 31)

typedef struct {
    ParamTable *t;
    int cap;
    int flow;
    char prefix[48];
} Builder;

static void add(Builder *b, float **slot, int kind, int ndim, int s0, int s1, int s2,
                const char *fmt, ...) __attribute__((format(printf, 8, 9)));

static void add(Builder *b, float **slot, int kind, int ndim, int s0, int s1, int s2,
                const char *fmt, ...) {
    ParamInfo *p = &b->t->p[b->t->n++];
    int k = snprintf(p->name, sizeof p->name, "%s", b->prefix);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->name + k, sizeof p->name - (size_t)k, fmt, ap);
    va_end(ap);
    p->ndim = ndim;
    p->shape[0] = s0;
    p->shape[1] = ndim > 1 ? s1 : 0;
    p->shape[2] = ndim > 2 ? s2 : 0;
    p->numel = (size_t)s0 * (ndim > 1 ? (size_t)s1 : 1) * (ndim > 2 ? (size_t)s2 : 1);
    p->slot = slot;
    p->kind = kind;
    p->flow = b->flow;
    b->t->total += p->numel;
}

static void add_block(Builder *b, BlockWeights *bw, int D, int i) {
    add(b, &bw->ln1_w, PK_VECTOR, 1, D, 0, 0, "blocks.%d.ln1.weight", i);
    add(b, &bw->ln1_b, PK_VECTOR, 1, D, 0, 0, "blocks.%d.ln1.bias", i);
    add(b, &bw->qkv_w, PK_MATRIX, 2, 3 * D, D, 0, "blocks.%d.attn.qkv.weight", i);
    add(b, &bw->qkv_b, PK_VECTOR, 1, 3 * D, 0, 0, "blocks.%d.attn.qkv.bias", i);
    add(b, &bw->out_w, PK_MATRIX, 2, D, D, 0, "blocks.%d.attn.out.weight", i);
    add(b, &bw->out_b, PK_VECTOR, 1, D, 0, 0, "blocks.%d.attn.out.bias", i);
    add(b, &bw->ln2_w, PK_VECTOR, 1, D, 0, 0, "blocks.%d.ln2.weight", i);
    add(b, &bw->ln2_b, PK_VECTOR, 1, D, 0, 0, "blocks.%d.ln2.bias", i);
    add(b, &bw->fc_w, PK_MATRIX, 2, 4 * D, D, 0, "blocks.%d.mlp.fc.weight", i);
    add(b, &bw->fc_b, PK_VECTOR, 1, 4 * D, 0, 0, "blocks.%d.mlp.fc.bias", i);
    add(b, &bw->proj_w, PK_MATRIX, 2, D, 4 * D, 0, "blocks.%d.mlp.proj.weight", i);
    add(b, &bw->proj_b, PK_VECTOR, 1, D, 0, 0, "blocks.%d.mlp.proj.bias", i);
}

static void add_maf(Builder *b, FlowWeights *fw, const Config *cfg, const FlowConfig *fc) {
    int c = cfg->c, E = fc->maf_E, H2 = fc->maf_H, K3 = 3 * fc->K;
    add(b, &fw->maf_emb_w, PK_MATRIX, 3, c - 1, E, 3, "maf.embed.weight");
    add(b, &fw->maf_emb_b, PK_VECTOR, 2, c - 1, E, 0, "maf.embed.bias");
    add(b, &fw->maf_ctx_w, PK_MATRIX, 3, c, H2, cfg->D, "maf.ctx.weight");
    add(b, &fw->maf_feat_w, PK_MATRIX, 3, c, H2, (c - 1) * E, "maf.feat.weight");
    add(b, &fw->maf_hid_b, PK_VECTOR, 2, c, H2, 0, "maf.hidden.bias");
    add(b, &fw->maf_out_w, PK_MATRIX, 3, c, K3, H2, "maf.out.weight");
    add(b, &fw->maf_out_b, PK_VECTOR, 2, c, K3, 0, "maf.out.bias");
}

static void add_flow(Builder *b, Weights *w, const Config *cfg, int l) {
    const FlowConfig *fc = &cfg->flow[l - 1];
    FlowWeights *fw = &w->flow[l - 1];
    int D = cfg->D, cin = flow_cin(cfg), N = cfg->is_ar ? cfg->T : cfg->N;
    b->flow = l;
    snprintf(b->prefix, sizeof b->prefix, "flows.%d.", l);
    add(b, &fw->in_w, PK_MATRIX, 2, D, cin, 0, "in_proj.weight");
    add(b, &fw->in_b, PK_VECTOR, 1, D, 0, 0, "in_proj.bias");
    add(b, &fw->pos, PK_EMBED, 2, N, D, 0, "pos");
    add(b, &fw->sos, PK_EMBED, 1, cin, 0, 0, "sos");
    for (int i = 0; i < fc->layers; i++)
        add_block(b, &fw->blk[i], D, i);
    add(b, &fw->lnf_w, PK_VECTOR, 1, D, 0, 0, "ln_f.weight");
    add(b, &fw->lnf_b, PK_VECTOR, 1, D, 0, 0, "ln_f.bias");
    if (fc->maf_E > 0) {
        add_maf(b, fw, cfg, fc);
    } else {
        int hout = flow_hout(cfg, l);
        add(b, &fw->head_w, PK_MATRIX, 2, hout, D, 0, "head.weight");
        add(b, &fw->head_b, PK_VECTOR, 1, hout, 0, 0, "head.bias");
    }
    if (fc->type == FLOW_MIX1 || fc->type == FLOW_AFFINE)
        add(b, &fw->clamp, PK_OTHER, 2, cfg->c, fc->K, 0, "clamp");
}

tflm_status params_build(ParamTable *t, const Config *cfg, Weights *w) {
    memset(t, 0, sizeof *t);
    memset(w, 0, sizeof *w);
    int cap = 2;
    for (int l = 1; l <= cfg->L; l++)
        cap += 16 + 12 * cfg->flow[l - 1].layers;
    t->p = calloc((size_t)cap, sizeof *t->p);
    if (!t->p)
        return tflm__err(TFLM_ENOMEM, "out of memory building the parameter table");
    Builder b = { .t = t, .cap = cap };
    add(&b, &w->cb_mean, PK_CODEBOOK, 2, cfg->V, cfg->d, 0, "codebook.mean");
    add(&b, &w->cb_logsig, PK_CODEBOOK, 1, cfg->V, 0, 0, "codebook.log_sigma");
    for (int l = 1; l <= cfg->L; l++)
        add_flow(&b, w, cfg, l);
    if (t->total > MAX_TOTAL) {
        size_t total = t->total;
        params_free(t);
        return tflm__err(TFLM_EFORMAT, "config: the model has %zu parameters, more than the "
                         "limit of %zu", total, MAX_TOTAL);
    }
    return TFLM_OK;
}

void params_free(ParamTable *t) {
    free(t->p);
    memset(t, 0, sizeof *t);
}

void params_bind(ParamTable *t, float *base) {
    size_t off = 0;
    for (int i = 0; i < t->n; i++) {
        *t->p[i].slot = base + off;
        off += t->p[i].numel;
    }
}
