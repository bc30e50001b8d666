/* train.c: the trainer (issue 3; DESIGN §2–§4). Negative ELBO per token,
 * backpropagated through the flows, the codebook and the transformers;
 * progressive (codebook + flow 1, then each next flow on the frozen stack)
 * or joint schedules, and the ar baseline's cross-entropy; AdamW with
 * warm-up and cosine decay, gradient clipping; windows sampled by keyed
 * randomness from the step number, so a run resumed from a checkpoint
 * (weights, AdamW moments, step; written atomically) continues exactly.
 *
 * Threads: the batch is split into one contiguous share of windows per
 * thread; each thread runs one-thread sgemm on its share and keeps its own
 * gradient buffer; the buffers are summed in thread order. Results are
 * deterministic for a seed and a thread count. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <omp.h>
#include "train.h"
#include "flow.h"
#include "config.h"

#define RNG_TRAIN 6
#define MAX_THREADS 64

void sha256_hex(const void *data, size_t len, char out[65]);

/* ---- training configuration --------------------------------------------------- */
typedef struct {
    int joint;
    int nstages;
    long stage_steps[MAX_FLOWS];
    int batch;
    double lr, final_frac, b1, b2, aeps, wd, clip, pad_frac, sigma_floor;
    double flow_lr[MAX_FLOWS + 1];    /* learning-rate factor per flow (index 1..L; 0: codebook, 1) */
    int warmup;
    uint64_t seed;
    int valid_every, valid_chars, log_every, ckpt_every;
    double ckpt_s;
} TrainCfg;

static double jnum(json_t *o, const char *k, double def) {
    json_t *v = json_object_get(o, k);
    return json_is_number(v) ? json_number_value(v) : def;
}

/* Every setting a training config may hold, and the JSON type it must have
 * ('n' number, 's' string, 'o' object, 'a' array). "note" and any "*_note"
 * key are free-text comments, kept in the model's record. A key not listed is
 * refused, so that a typo never silently leaves a default in place. */
static const struct { const char *key; char type; } train_keys[] = {
    {"model", 'o'}, {"init", 's'}, {"init_sha256", 's'}, {"schedule", 's'}, {"steps", 'n'},
    {"stage_steps", 'a'}, {"batch", 'n'}, {"lr", 'n'}, {"warmup", 'n'}, {"final_lr_frac", 'n'},
    {"beta1", 'n'}, {"beta2", 'n'}, {"adam_eps", 'n'}, {"weight_decay", 'n'}, {"clip", 'n'},
    {"pad_frac", 'n'}, {"sigma_floor", 'n'}, {"flow_lr_scale", 'a'}, {"seed", 'n'},
    {"valid_every", 'n'}, {"valid_chars", 'n'}, {"log_every", 'n'}, {"checkpoint_every", 'n'},
    {"checkpoint_every_s", 'n'},
};

static tflm_status check_train_keys(json_t *root) {
    const char *k;
    json_t *v;
    json_object_foreach(root, k, v) {
        size_t n = strlen(k);
        if (!strcmp(k, "note") || (n > 5 && !strcmp(k + n - 5, "_note"))) {
            if (!json_is_string(v)) return tflm__err(TFLM_EFORMAT, "train config: %s must be a string", k);
            continue;
        }
        size_t i = 0, nk = sizeof train_keys / sizeof train_keys[0];
        while (i < nk && strcmp(train_keys[i].key, k)) i++;
        if (i == nk) return tflm__err(TFLM_EFORMAT, "train config: unknown setting '%s' (see tflm(1), Training config)", k);
        char ty = train_keys[i].type;
        int ok = ty == 'n' ? json_is_number(v) : ty == 's' ? json_is_string(v) :
                 ty == 'o' ? json_is_object(v) : json_is_array(v);
        if (!ok)
            return tflm__err(TFLM_EFORMAT, "train config: %s must be %s", k,
                             ty == 'n' ? "a number" : ty == 's' ? "a string" : ty == 'o' ? "an object" : "an array");
    }
    return TFLM_OK;
}

static tflm_status parse_train_cfg(TrainCfg *tc, json_t *root, const Config *mc) {
    memset(tc, 0, sizeof *tc);
    tflm_status kst = check_train_keys(root);
    if (kst != TFLM_OK) return kst;
    const char *sched = json_string_value(json_object_get(root, "schedule"));
    if (sched && strcmp(sched, "joint") && strcmp(sched, "progressive"))
        return tflm__err(TFLM_EFORMAT, "train config: schedule '%s' is not progressive or joint", sched);
    tc->joint = sched && !strcmp(sched, "joint");
    long steps = (long)jnum(root, "steps", 1000);
    json_t *ss = json_object_get(root, "stage_steps");
    if (mc->is_ar || tc->joint) {
        tc->nstages = 1;
        tc->stage_steps[0] = steps;
    } else {
        tc->nstages = mc->L;
        for (int k = 0; k < mc->L; k++) {
            json_t *v = json_array_get(ss, k);
            tc->stage_steps[k] = json_is_integer(v) ? (long)json_integer_value(v) : steps;
        }
        if (ss && (!json_is_array(ss) || (int)json_array_size(ss) != mc->L))
            return tflm__err(TFLM_EFORMAT, "train config: stage_steps must list %d step counts, one per flow", mc->L);
    }
    for (int k = 0; k < tc->nstages; k++)
        if (tc->stage_steps[k] < 0 || tc->stage_steps[k] > 100000000)
            return tflm__err(TFLM_EFORMAT, "train config: step count %ld out of range", tc->stage_steps[k]);
    tc->batch = (int)jnum(root, "batch", 32);
    tc->lr = jnum(root, "lr", 2e-3);
    tc->warmup = (int)jnum(root, "warmup", 100);
    tc->final_frac = jnum(root, "final_lr_frac", 0.1);
    tc->b1 = jnum(root, "beta1", 0.9);
    tc->b2 = jnum(root, "beta2", 0.99);
    tc->aeps = jnum(root, "adam_eps", 1e-8);
    tc->wd = jnum(root, "weight_decay", 0.01);
    tc->clip = jnum(root, "clip", 1.0);
    tc->pad_frac = jnum(root, "pad_frac", 0.1);
    tc->sigma_floor = jnum(root, "sigma_floor", 0);
    for (int k = 0; k <= MAX_FLOWS; k++) tc->flow_lr[k] = 1.0;
    json_t *fl = json_object_get(root, "flow_lr_scale");
    if (fl) {
        if (mc->is_ar)
            return tflm__err(TFLM_EFORMAT, "train config: flow_lr_scale is for flow models; an ar model has no flows");
        if (!json_is_array(fl) || (int)json_array_size(fl) != mc->L)
            return tflm__err(TFLM_EFORMAT, "train config: flow_lr_scale must list %d numbers, one per flow", mc->L);
        for (int k = 0; k < mc->L; k++) {
            json_t *v = json_array_get(fl, k);
            double f = json_is_number(v) ? json_number_value(v) : -1;
            if (!(f >= 0 && f <= 10))
                return tflm__err(TFLM_EFORMAT, "train config: flow_lr_scale[%d] must be a number in 0..10", k);
            tc->flow_lr[k + 1] = f;
        }
    }
    tc->seed = (uint64_t)jnum(root, "seed", 1);
    tc->valid_every = (int)jnum(root, "valid_every", 250);
    tc->valid_chars = (int)jnum(root, "valid_chars", 20000);
    tc->log_every = (int)jnum(root, "log_every", 10);
    tc->ckpt_every = (int)jnum(root, "checkpoint_every", 0);
    tc->ckpt_s = jnum(root, "checkpoint_every_s", 300);
    if (tc->batch < 1 || tc->batch > 4096)
        return tflm__err(TFLM_EFORMAT, "train config: batch %d out of range 1..4096", tc->batch);
    if (!(tc->lr > 0 && tc->lr < 1))
        return tflm__err(TFLM_EFORMAT, "train config: lr %g out of range (0, 1)", tc->lr);
    if (!(tc->pad_frac >= 0 && tc->pad_frac <= 1))
        return tflm__err(TFLM_EFORMAT, "train config: pad_frac %g out of range 0..1", tc->pad_frac);
    if (tc->log_every < 1) tc->log_every = 1;
    return TFLM_OK;
}

/* ---- per-thread workspace ----------------------------------------------------- */
typedef struct {
    int nb;                           /* windows this thread holds at most */
    int *tok;                         /* [nb, T] */
    float *eps;                       /* [nb, T, d] */
    float *h[MAX_FLOWS + 1];          /* [nb, N, c] states as stored */
    unsigned char *own[MAX_FLOWS + 1];/* [nb, N, c] */
    float *xin[MAX_FLOWS];            /* [nb*N, cin] transformer inputs per flow */
    int *pos[MAX_FLOWS];              /* [nb*N] */
    float *G[MAX_FLOWS];              /* [nb*N, D] */
    float *HO[MAX_FLOWS];             /* [nb*N, hout] */
    TfActs acts[MAX_FLOWS];
    float *dHO, *dG, *dxin;           /* [nb*N, hmax], [nb*N, D], [nb*N, cin] */
    double *dh, *dX;                  /* [nb, N, c] */
    /* the maf head of every row at once (maf flows only; H2, K, E, FE = (c-1)E
     * of that flow; channel-major, so that each channel is a matrix) */
    float *mafE[MAX_FLOWS];           /* [nb*N, FE] embeddings e_j of each row's inputs */
    float *mafH[MAX_FLOWS];           /* [c, nb*N, H2] hidden pre-activations */
    float *mafG[MAX_FLOWS];           /* [c, nb*N, H2] their GELU */
    float *mafP[MAX_FLOWS];           /* [c, nb*N, 3K] the channels' coupling parameters */
    float *mdP;                       /* [c, nb*N, 3Kmax] dL/d(parameters) */
    float *mdG;                       /* [nb*N, H2max] dL/dg, then dL/d(pre-activation) */
    float *mdE, *mdEi;                /* [nb*N, FEmax] dL/de: the sum, one channel's part */
    float *mFz, *mdFz;                /* [H2max, FEmax] F_i with columns >= iE zeroed; its gradient */
    double *mdej;                     /* [Emax] */
    float *gbuf;                      /* gradients, params-table order */
    Weights gw;
    ParamTable gt;
    double R, lp[MAX_FLOWS], ln[MAX_FLOWS], arll;
    tflm_status st;
    char err[256];
} TW;

typedef struct {
    Model m;
    float *wbuf;                      /* writable weights (params order) */
    float *mbuf, *vbuf;               /* AdamW moments */
    unsigned char *train_mask;        /* [params.n] */
    TrainCfg tc;
    json_t *tcjson;                   /* the training config as given */
    const Ops *ops;
    int nth;
    TW tw[MAX_THREADS];
    const int *fixed;                 /* tests: windows given, [batch, T] */
    int *corpus;                      /* training tokens */
    long ncorpus;
    int *valid;
    int nvalid;
    long step;                        /* next step to run */
    double elapsed;                   /* seconds of training before this sitting */
    double tokens;                    /* real tokens seen */
    double ema;                       /* train bits per character, moving average */
    int maf_ref;                      /* tests: maf heads position by position, loss only */
    double last_valid;
    json_t *corpus_rec;
    json_t *init_rec;                 /* with "init": the start file's name, sha256 and its own record */
    const tflm_train_opts *o;
} Trainer;

static void say(Trainer *t, tflm_log_level lv, const char *fmt, ...) {
    if (!t->o || !t->o->log) return;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    t->o->log(t->o->user, lv, buf);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void tw_free(TW *w) {
    free(w->tok);
    free(w->eps);
    for (int l = 0; l <= MAX_FLOWS; l++) {
        free(w->h[l]);
        free(w->own[l]);
    }
    for (int l = 0; l < MAX_FLOWS; l++) {
        free(w->xin[l]);
        free(w->pos[l]);
        free(w->G[l]);
        free(w->HO[l]);
        tfa_free(&w->acts[l]);
    }
    free(w->dHO);
    free(w->dG);
    free(w->dxin);
    free(w->dh);
    free(w->dX);
    for (int l = 0; l < MAX_FLOWS; l++) {
        free(w->mafE[l]);
        free(w->mafH[l]);
        free(w->mafG[l]);
        free(w->mafP[l]);
    }
    free(w->mdP);
    free(w->mdG);
    free(w->mdE);
    free(w->mdEi);
    free(w->mFz);
    free(w->mdFz);
    free(w->mdej);
    free(w->gbuf);
    params_free(&w->gt);
    memset(w, 0, sizeof *w);
}

static tflm_status tw_init(TW *w, const Model *m, int nb) {
    const Config *cf = &m->cfg;
    memset(w, 0, sizeof *w);
    w->nb = nb;
    int N = cf->N, c = cf->c, D = cf->D, T = cf->T, cin = flow_cin(cf);
    size_t R = (size_t)nb * N;
    int hmax = 1;
    int nflows = cf->is_ar ? 1 : cf->L;
    for (int l = 1; l <= nflows; l++) {
        int h = flow_head(cf, l, NULL, NULL, NULL);
        if (h > hmax) hmax = h;
    }
    int ok = 1;
    ok &= !!(w->tok = calloc((size_t)nb * T, sizeof(int)));
    ok &= !!(w->eps = calloc((size_t)nb * T * cf->d, sizeof(float)));
    for (int l = 0; l <= nflows && !cf->is_ar; l++) {
        ok &= !!(w->h[l] = calloc(R * c, sizeof(float)));
        ok &= !!(w->own[l] = calloc(R * c, 1));
    }
    for (int l = 0; l < nflows; l++) {
        ok &= !!(w->xin[l] = calloc(R * cin, sizeof(float)));
        ok &= !!(w->pos[l] = calloc(R, sizeof(int)));
        ok &= !!(w->G[l] = calloc(R * D, sizeof(float)));
        ok &= !!(w->HO[l] = calloc(R * flow_head(cf, l + 1, NULL, NULL, NULL), sizeof(float)));
        TfDims dm = { D, cf->H, cf->flow[l].layers, cin, (float)cf->ln_eps };
        if (ok && tfa_init(&w->acts[l], &dm, nb, N) != TFLM_OK) ok = 0;
    }
    ok &= !!(w->dHO = calloc(R * hmax, sizeof(float)));
    ok &= !!(w->dG = calloc(R * D, sizeof(float)));
    ok &= !!(w->dxin = calloc(R * cin, sizeof(float)));
    ok &= !!(w->dh = calloc(R * c, sizeof(double)));
    ok &= !!(w->dX = calloc(R * c, sizeof(double)));
    size_t emax = 1, femax = 1, h2max = 1, pmax = 1;
    for (int l = 0; l < nflows && !cf->is_ar; l++) {
        const FlowConfig *fc = &cf->flow[l];
        if (fc->maf_E == 0) continue;
        size_t E = fc->maf_E, FE = (size_t)(c - 1) * E + 1, H2 = fc->maf_H, n3 = 3 * (size_t)fc->K;
        ok &= !!(w->mafE[l] = calloc(R * FE, sizeof(float)));
        ok &= !!(w->mafH[l] = calloc(R * c * H2, sizeof(float)));
        ok &= !!(w->mafG[l] = calloc(R * c * H2, sizeof(float)));
        ok &= !!(w->mafP[l] = calloc(R * c * n3, sizeof(float)));
        if (E > emax) emax = E;
        if (FE > femax) femax = FE;
        if (H2 > h2max) h2max = H2;
        if (n3 > pmax) pmax = n3;
    }
    if (pmax > 1) {
        ok &= !!(w->mdP = calloc(R * c * pmax, sizeof(float)));
        ok &= !!(w->mdG = calloc(R * h2max, sizeof(float)));
        ok &= !!(w->mdE = calloc(R * femax, sizeof(float)));
        ok &= !!(w->mdEi = calloc(R * femax, sizeof(float)));
        ok &= !!(w->mFz = calloc(h2max * femax, sizeof(float)));
        ok &= !!(w->mdFz = calloc(h2max * femax, sizeof(float)));
        ok &= !!(w->mdej = calloc(emax, sizeof(double)));
    }
    if (ok && params_build(&w->gt, cf, &w->gw) != TFLM_OK) ok = 0;
    if (ok) ok &= !!(w->gbuf = calloc(w->gt.total, sizeof(float)));
    if (!ok) {
        tw_free(w);
        return tflm__err(TFLM_ENOMEM, "train: out of memory for a batch of %d windows", nb);
    }
    params_bind(&w->gt, w->gbuf);
    return TFLM_OK;
}

/* ---- data ------------------------------------------------------------------------ */

/* Window b of step g: random offset; a fraction start with 1..T-1 pads
 * followed by text from a line start (DESIGN §3). */
static void sample_window(const Trainer *t, long g, int b, int *tok) {
    int T = t->m.cfg.T;
    if (t->fixed) {
        memcpy(tok, t->fixed + (size_t)b * T, T * sizeof(int));
        return;
    }
    long n = t->ncorpus;
    uint64_t k = rng_key(t->tc.seed, RNG_TRAIN, (uint64_t)g, (uint64_t)b, 0);
    int pad = rng_uniform(k) < t->tc.pad_frac;
    long off = (long)(rng_uniform(rng_key(t->tc.seed, RNG_TRAIN, g, b, 1)) * (double)(n - T));
    int npad = 0;
    if (pad) {
        npad = 1 + (int)(rng_uniform(rng_key(t->tc.seed, RNG_TRAIN, g, b, 2)) * (T - 1));
        long o = off;
        while (o < n - T && t->corpus[o] != 1) o++;
        if (o < n - T) off = o + 1;
    }
    for (int i = 0; i < npad; i++) tok[i] = 0;
    memcpy(tok + npad, t->corpus + off, (size_t)(T - npad) * sizeof(int));
}

/* ---- forward / backward of one thread's share ------------------------------------ */

static void set_own(const Config *cf, TW *w, int nbw) {
    int N = cf->N, c = cf->c, d = cf->d, P = cf->P, T = cf->T, L = cf->L;
    for (int b = 0; b < nbw; b++) {
        for (int n = 0; n < N; n++)
            for (int j = 0; j < c; j++)
                w->own[0][((size_t)b * N + n) * c + j] = w->tok[(size_t)b * T + n * P + j / d] != 0;
        for (int l = 1; l <= L; l++)
            for (int n = 0; n < N; n++) {
                const unsigned char *src = w->own[l - 1] + ((size_t)b * N + n) * c;
                unsigned char *dst = w->own[l] + ((size_t)b * N + n) * c;
                if (l < L) {
                    int k = 0;
                    for (int i = 0; i < c; i += 2) dst[k++] = src[i];
                    for (int i = 1; i < c; i += 2) dst[k++] = src[i];
                } else {
                    memcpy(dst, src, c);
                }
            }
    }
}

/* ---- the maf head of all rows at once (DESIGN §2.2, "Within-position head") ----
 * In training every input x is known, so channel i's hidden layer over the R
 * rows of a share is one matrix product, g_i = GELU(C_i G + b_i + E F_i^T)
 * (E [R, FE] the rows' embeddings, F_i with its columns >= iE zeroed: channel
 * i reads e_j for j < i only), and its parameters another, g_i O_i^T + o_i.
 * The same arithmetic as maf_channel / maf_channel_backward (src/maf.c,
 * src/grad.c), which do it one position at a time, through the ops table. */

/* Fz = F_i with the columns of channels >= i zeroed, [H2, FE] */
static void maf_masked(const FlowWeights *fw, int i, int H2, int FE, int E, float *Fz) {
    const float *Fi = fw->maf_feat_w + (size_t)i * H2 * FE;
    for (int h = 0; h < H2; h++)
        for (int k = 0; k < FE; k++)
            Fz[(size_t)h * FE + k] = k < i * E ? Fi[(size_t)h * FE + k] : 0.0f;
}

/* forward: the rows' embeddings, hidden layers and parameters (w->maf*[l-1]) */
static void maf_fwd(Trainer *t, TW *w, int l, size_t R) {
    const Config *cf = &t->m.cfg;
    const FlowConfig *fc = &cf->flow[l - 1];
    const FlowWeights *fw = &t->m.w.flow[l - 1];
    int N = cf->N, c = cf->c, E = fc->maf_E, H2 = fc->maf_H, n3 = 3 * fc->K, FE = (c - 1) * E;
    const float *hin = w->h[l - 1], *ho = w->HO[l - 1];
    float *Em = w->mafE[l - 1];
    for (size_t row = 0; row < R; row++) {
        size_t at = ((row / N) * N + w->pos[l - 1][row]) * c;
        for (int j = 0; j < c - 1; j++)
            maf_embed(fw, E, j, hin[at + j], Em + row * FE + (size_t)j * E);
    }
    for (int i = 0; i < c; i++) {
        float *Hp = w->mafH[l - 1] + (size_t)i * R * H2, *Gi = w->mafG[l - 1] + (size_t)i * R * H2;
        if (i > 0) {
            maf_masked(fw, i, H2, FE, E, w->mFz);
            t->ops->matmul(Hp, Em, w->mFz, NULL, (int)R, FE, H2);
        } else {
            memset(Hp, 0, R * H2 * sizeof(float));
        }
        for (size_t row = 0; row < R; row++)
            for (int h = 0; h < H2; h++)
                Hp[row * H2 + h] += ho[(row * c + i) * H2 + h];
        t->ops->gelu(Gi, Hp, (int)(R * H2));
        t->ops->matmul(w->mafP[l - 1] + (size_t)i * R * n3, Gi, fw->maf_out_w + (size_t)i * n3 * H2,
                       fw->maf_out_b + (size_t)i * n3, (int)R, H2, n3);
    }
}

/* backward: given w->mdP = dL/d(parameters), accumulate the maf weights'
 * gradients, dL/d(C_i G + b_i) into w->dHO and dL/dx (through the
 * embeddings) into w->dX */
static void maf_bwd(Trainer *t, TW *w, int l, size_t R) {
    const Config *cf = &t->m.cfg;
    const FlowConfig *fc = &cf->flow[l - 1];
    const FlowWeights *fw = &t->m.w.flow[l - 1];
    FlowWeights *gf = &w->gw.flow[l - 1];
    int N = cf->N, c = cf->c, E = fc->maf_E, H2 = fc->maf_H, n3 = 3 * fc->K, FE = (c - 1) * E;
    const float *Em = w->mafE[l - 1];
    memset(w->mdE, 0, R * FE * sizeof(float));
    for (int i = 0; i < c; i++) {
        const float *Hp = w->mafH[l - 1] + (size_t)i * R * H2, *Gi = w->mafG[l - 1] + (size_t)i * R * H2;
        t->ops->matmul_backward(w->mdG, gf->maf_out_w + (size_t)i * n3 * H2, gf->maf_out_b + (size_t)i * n3,
                                w->mdP + (size_t)i * R * n3, Gi, fw->maf_out_w + (size_t)i * n3 * H2,
                                (int)R, H2, n3);
        t->ops->gelu_backward(w->mdG, w->mdG, Hp, (int)(R * H2));
        for (size_t row = 0; row < R; row++)
            for (int h = 0; h < H2; h++)
                w->dHO[(row * c + i) * H2 + h] += w->mdG[row * H2 + h];
        if (i == 0) continue;
        maf_masked(fw, i, H2, FE, E, w->mFz);
        memset(w->mdFz, 0, (size_t)H2 * FE * sizeof(float));
        t->ops->matmul_backward(w->mdEi, w->mdFz, NULL, w->mdG, Em, w->mFz, (int)R, FE, H2);
        float *dFi = gf->maf_feat_w + (size_t)i * H2 * FE;
        for (int h = 0; h < H2; h++)
            for (int k = 0; k < i * E; k++)
                dFi[(size_t)h * FE + k] += w->mdFz[(size_t)h * FE + k];
        /* mdEi is zero from column iE on (so is Fz there): channel i adds
         * only to the gradients of the embeddings it reads */
        for (size_t r = 0; r < R * FE; r++)
            w->mdE[r] += w->mdEi[r];
    }
    const float *hin = w->h[l - 1];
    for (size_t row = 0; row < R; row++) {
        size_t at = ((row / N) * N + w->pos[l - 1][row]) * c;
        for (int j = 0; j < c - 1; j++) {
            for (int e = 0; e < E; e++) w->mdej[e] = w->mdE[row * FE + (size_t)j * E + e];
            double dx = 0.0;
            maf_embed_backward(fw, gf, E, j, hin[at + j], w->mdej, &dx);
            w->dX[at + j] += dx;
        }
    }
}

static tflm_status flow_fwd(Trainer *t, TW *w, int l, int nbw) {
    const Model *m = &t->m;
    const Config *cf = &m->cfg;
    int N = cf->N, c = cf->c, D = cf->D, L = cf->L, dir = cf->flow[l - 1].dir;
    const FlowWeights *fw = &m->w.flow[l - 1];
    float *xin = w->xin[l - 1];
    int *pos = w->pos[l - 1];
    const float *hin = w->h[l - 1];
    for (int b = 0; b < nbw; b++)
        for (int s = 0; s < N; s++) {
            size_t row = (size_t)b * N + s;
            const float *src = s == 0 ? fw->sos
                             : hin + ((size_t)b * N + flow_visit(dir, cf->B, N, s - 1)) * c;
            memcpy(xin + row * c, src, c * sizeof(float));
            pos[row] = flow_visit(dir, cf->B, N, s);
        }
    TfDims dm = { D, cf->H, cf->flow[l - 1].layers, c, (float)cf->ln_eps };
    tflm_status st = tf_train_forward(t->ops, fw, &dm, &w->acts[l - 1], xin, pos, nbw, N, w->G[l - 1]);
    if (st != TFLM_OK) return st;
    const float *HW, *Hb;
    int hout = flow_head(cf, l, fw, &HW, &Hb);
    t->ops->matmul(w->HO[l - 1], w->G[l - 1], HW, Hb, nbw * N, D, hout);
    const FlowConfig *fc = &cf->flow[l - 1];
    size_t R = (size_t)nbw * N, n3 = 3 * (size_t)fc->K;
    int batched = fc->maf_E > 0 && !t->maf_ref;
    if (batched) maf_fwd(t, w, l, R);
    double lp = 0, ln = 0;
    for (int b = 0; b < nbw; b++)
        for (int s = 0; s < N; s++) {
            size_t row = (size_t)b * N + s;
            int p = pos[row];
            size_t at = ((size_t)b * N + p) * c;
            float Y[512];
            double a, z;
            st = batched
                ? flow_couple_params(m, l, w->mafP[l - 1] + row * n3, R * n3, hin + at, Y,
                                     w->own[l - 1] + at, &a, &z)
                : flow_couple_forward(m, l, w->HO[l - 1] + row * hout,
                                      hin + at, Y, w->own[l - 1] + at, &a, &z);
            if (st != TFLM_OK) return st;
            lp += a;
            ln += z;
            if (l < L) chmix(Y, w->h[l] + at, c);
            else memcpy(w->h[l] + at, Y, c * sizeof(float));
        }
    w->lp[l - 1] += lp;
    w->ln[l - 1] += ln;
    return TFLM_OK;
}

/* Backward of flow l. On entry w->dh holds dL/dh^(l) (stored order; zero at
 * the top); top = the highest flow in the objective; on exit, when need_dx,
 * w->dh holds dL/dh^(l-1). */
static tflm_status flow_bwd(Trainer *t, TW *w, int l, int nbw, int top, int need_dx, double inv) {
    const Model *m = &t->m;
    const Config *cf = &m->cfg;
    const FlowConfig *fc = &cf->flow[l - 1];
    const FlowWeights *fw = &m->w.flow[l - 1];
    FlowWeights *gf = &w->gw.flow[l - 1];
    int N = cf->N, c = cf->c, D = cf->D, L = cf->L, K = fc->K, d = cf->d, V = cf->V;
    const float *HW, *Hb;
    int hout = flow_head(cf, l, fw, &HW, &Hb), dir = fc->dir;
    size_t R = (size_t)nbw * N;
    memset(w->dHO, 0, R * hout * sizeof(float));
    memset(w->dX, 0, R * c * sizeof(double));   /* dG: written whole by matmul_backward below */
    if (fc->maf_E > 0) memset(w->mdP, 0, R * c * 3 * (size_t)K * sizeof(float));
    for (int b = 0; b < nbw; b++)
        for (int s = 0; s < N; s++) {
            size_t row = (size_t)b * N + s;
            int p = flow_visit(dir, cf->B, N, s);
            size_t at = ((size_t)b * N + p) * c;
            const unsigned char *own = w->own[l - 1] + at;
            double x[512], gy[512], dx[512];
            float Y[512];
            for (int i = 0; i < c; i++) x[i] = w->h[l - 1][at + i];
            /* dL/dY: the upper gradient (unmixed) plus the LN term below the top */
            if (l < L) chunmix(w->h[l] + at, Y, c);
            else memcpy(Y, w->h[l] + at, c * sizeof(float));
            double up[512];
            int any_gy = 0;
            if (l < top) {
                /* unmix the double gradient: stored channel j holds Y[perm[j]] */
                int k = 0;
                for (int i = 0; i < c; i += 2) up[i] = w->dh[at + k++];
                for (int i = 1; i < c; i += 2) up[i] = w->dh[at + k++];
                for (int i = 0; i < c; i++) {
                    gy[i] = up[i] + (own[i] ? -(double)Y[i] * inv : 0.0);
                    any_gy |= gy[i] != 0;
                }
            } else {
                for (int i = 0; i < c; i++) gy[i] = 0;
            }
            for (int i = 0; i < c; i++) dx[i] = 0;
            float *dho = w->dHO + row * hout;
            const float *ho = w->HO[l - 1] + row * hout;
            if (fc->type == FLOW_MIXD) {
                for (int j = 0; j < cf->P; j++) {
                    double glp = own[j * d] ? -inv : 0.0;
                    mixd_backward(ho + (size_t)j * V, m->w.cb_mean, m->w.cb_logsig, V, d, x + j * d, glp,
                                  any_gy ? gy + j * d : NULL, dho + (size_t)j * V, w->gw.cb_mean,
                                  w->gw.cb_logsig, dx + j * d);
                }
            } else {
                /* channel i's parameters and their gradient: the head's output,
                 * or the maf head's (channel-major, from maf_fwd) */
                size_t n3 = 3 * (size_t)K, ps = fc->maf_E > 0 ? R * n3 : n3;
                const float *pb = fc->maf_E > 0 ? w->mafP[l - 1] + row * n3 : ho;
                float *db = fc->maf_E > 0 ? w->mdP + row * n3 : dho;
                for (int i = 0; i < c; i++) {
                    const float *prm = pb + i * ps;
                    const float *cl = fw->clamp + (size_t)i * K;
                    float *gcl = gf->clamp + (size_t)i * K;
                    double glp = own[i] ? -inv : 0.0;
                    dx[i] += fc->type == FLOW_AFFINE
                        ? affine_backward(prm, cl, x[i], glp, gy[i], db + i * ps, gcl)
                        : mix1_backward(prm, cl, K, x[i], glp, gy[i], db + i * ps, gcl);
                }
            }
            for (int i = 0; i < c; i++) w->dX[at + i] += dx[i];
        }
    if (fc->maf_E > 0) maf_bwd(t, w, l, R);
    /* dG = dHO @ W, and the gradients of the head (maf: of C and b) */
    if (fc->maf_E > 0)
        t->ops->matmul_backward(w->dG, gf->maf_ctx_w, gf->maf_hid_b, w->dHO, w->G[l - 1], HW, (int)R, D, hout);
    else
        t->ops->matmul_backward(w->dG, gf->head_w, gf->head_b, w->dHO, w->G[l - 1], HW, (int)R, D, hout);
    TfDims dm = { D, cf->H, fc->layers, c, (float)cf->ln_eps };
    /* dxin is always needed: row 0 of each window is the trainable sos */
    tflm_status st = tf_train_backward(t->ops, fw, gf, &dm, &w->acts[l - 1], w->dG, w->dxin);
    if (st != TFLM_OK) return st;
    for (int b = 0; b < nbw; b++)
        for (int s = 0; s < N; s++) {
            size_t row = (size_t)b * N + s;
            const float *gx = w->dxin + row * c;
            if (s == 0) {
                for (int i = 0; i < c; i++) gf->sos[i] += gx[i];
            } else if (need_dx) {
                size_t at = ((size_t)b * N + flow_visit(dir, cf->B, N, s - 1)) * c;
                for (int i = 0; i < c; i++) w->dX[at + i] += gx[i];
            }
        }
    if (need_dx) memcpy(w->dh, w->dX, R * c * sizeof(double));
    return TFLM_OK;
}

/* one thread's share of a step: forward, loss sums, backward into w->gbuf */
static tflm_status share_step(Trainer *t, TW *w, long g, int b0, int nbw, double inv, int stage) {
    const Model *m = &t->m;
    const Config *cf = &m->cfg;
    int T = cf->T, d = cf->d, N = cf->N, D = cf->D, V = cf->V;
    memset(w->gbuf, 0, w->gt.total * sizeof(float));
    w->R = w->arll = 0;
    memset(w->lp, 0, sizeof w->lp);
    memset(w->ln, 0, sizeof w->ln);
    for (int b = 0; b < nbw; b++) sample_window(t, g, b0 + b, w->tok + (size_t)b * T);
    tflm_status st;
    if (cf->is_ar) {
        const FlowWeights *fw = &m->w.flow[0];
        FlowWeights *gf = &w->gw.flow[0];
        float *xin = w->xin[0];
        int *pos = w->pos[0];
        for (int b = 0; b < nbw; b++)
            for (int s = 0; s < T; s++) {
                size_t row = (size_t)b * T + s;
                const float *src = s == 0 ? fw->sos : m->w.cb_mean + (size_t)w->tok[row - 1] * d;
                memcpy(xin + row * d, src, d * sizeof(float));
                pos[row] = s;
            }
        TfDims dm = { D, cf->H, cf->flow[0].layers, d, (float)cf->ln_eps };
        if ((st = tf_train_forward(t->ops, fw, &dm, &w->acts[0], xin, pos, nbw, T, w->G[0])) != TFLM_OK) return st;
        size_t R = (size_t)nbw * T;
        t->ops->matmul(w->HO[0], w->G[0], fw->head_w, fw->head_b, (int)R, D, V);
        for (size_t r = 0; r < R; r++) {
            const float *lg = w->HO[0] + r * V;
            float *dl = w->dHO + r * V;
            int k = w->tok[r];
            if (!k) { memset(dl, 0, V * sizeof(float)); continue; }
            double mx = -INFINITY, sum = 0;
            for (int i = 0; i < V; i++) if (lg[i] > mx) mx = lg[i];
            for (int i = 0; i < V; i++) sum += exp(lg[i] - mx);
            double lz = mx + log(sum);
            w->arll += lg[k] - lz;
            for (int i = 0; i < V; i++) dl[i] = (float)(exp(lg[i] - lz) * inv);
            dl[k] -= (float)inv;
        }
        t->ops->matmul_backward(w->dG, gf->head_w, gf->head_b, w->dHO, w->G[0], fw->head_w, (int)R, D, V);
        if ((st = tf_train_backward(t->ops, fw, gf, &dm, &w->acts[0], w->dG, w->dxin)) != TFLM_OK) return st;
        for (size_t r = 0; r < R; r++) {
            int s = (int)(r % T);
            float *dst = s == 0 ? gf->sos : w->gw.cb_mean + (size_t)w->tok[r - 1] * d;
            for (int i = 0; i < d; i++) dst[i] += w->dxin[r * d + i];
        }
        return TFLM_OK;
    }
    /* flow model: encode with reparameterised eps */
    set_own(cf, w, nbw);
    for (int b = 0; b < nbw; b++)
        for (int tt = 0; tt < T; tt++) {
            size_t r = (size_t)b * T + tt;
            int k = w->tok[r];
            float sg = expf(m->w.cb_logsig[k]);
            for (int i = 0; i < d; i++) {
                float e = (float)rng_normal(rng_key(t->tc.seed, RNG_TRAIN + 1, g, b0 + b, (uint64_t)tt * d + i));
                w->eps[r * d + i] = e;
                w->h[0][r * d + i] = m->w.cb_mean[(size_t)k * d + i] + sg * e;
            }
            if (k) w->R += codebook_R(m, w->h[0] + r * d);
        }
    int top = t->tc.joint ? cf->L : stage + 1;
    for (int l = 1; l <= top; l++)
        if ((st = flow_fwd(t, w, l, nbw)) != TFLM_OK) return st;
    if (t->maf_ref) return TFLM_OK;   /* loss only */
    /* backward */
    size_t R = (size_t)nbw * N;
    memset(w->dh, 0, R * cf->c * sizeof(double));
    int lo = t->tc.joint ? 1 : top;
    int train_cb = t->tc.joint || top == 1;
    for (int l = top; l >= lo; l--)
        if ((st = flow_bwd(t, w, l, nbw, top, train_cb || l > lo, inv)) != TFLM_OK) return st;
    if (train_cb) {
        /* dz: from flow 1's input (w->dh) and from R; z = mu + e^s eps */
        for (int b = 0; b < nbw; b++)
            for (int tt = 0; tt < T; tt++) {
                size_t r = (size_t)b * T + tt;
                int k = w->tok[r];
                double dz[512];
                for (int i = 0; i < d; i++) dz[i] = w->dh[r * d + i];
                if (k) codebook_R_backward(m->w.cb_mean, m->w.cb_logsig, V, d, w->h[0] + r * d, -inv,
                                           w->gw.cb_mean, w->gw.cb_logsig, dz);
                double sg = exp(m->w.cb_logsig[k]), ds = 0;
                for (int i = 0; i < d; i++) {
                    w->gw.cb_mean[(size_t)k * d + i] += (float)dz[i];
                    ds += dz[i] * sg * w->eps[r * d + i];
                }
                w->gw.cb_logsig[k] += (float)ds;
            }
    }
    return TFLM_OK;
}

/* ---- optimizer ------------------------------------------------------------------ */

static double lr_at(const TrainCfg *tc, long s, long S) {
    if (s < tc->warmup) return tc->lr * (s + 1) / tc->warmup;
    double prog = S > tc->warmup ? (double)(s - tc->warmup) / (double)(S - tc->warmup) : 1.0;
    if (prog > 1) prog = 1;
    return tc->lr * (tc->final_frac + (1 - tc->final_frac) * 0.5 * (1 + cos(M_PI * prog)));
}

static void stage_of(const TrainCfg *tc, long g, int *stage, long *sstep, long *slen) {
    long acc = 0;
    for (int k = 0; k < tc->nstages; k++) {
        if (g < acc + tc->stage_steps[k] || k == tc->nstages - 1) {
            *stage = k;
            *sstep = g - acc;
            *slen = tc->stage_steps[k];
            return;
        }
        acc += tc->stage_steps[k];
    }
}

static long total_steps(const TrainCfg *tc) {
    long s = 0;
    for (int k = 0; k < tc->nstages; k++) s += tc->stage_steps[k];
    return s;
}

static void set_mask(Trainer *t, int stage) {
    const Config *cf = &t->m.cfg;
    for (int i = 0; i < t->m.params.n; i++) {
        const ParamInfo *p = &t->m.params.p[i];
        int on;
        if (cf->is_ar || t->tc.joint) on = 1;
        else on = p->flow == stage + 1 || (stage == 0 && p->flow == 0);
        if (cf->is_ar && !strcmp(p->name, "codebook.log_sigma")) on = 0;   /* unused by ar */
        t->train_mask[i] = (unsigned char)on;
    }
}

/* reduce thread gradients into tw[0], clip, AdamW; returns the gradient norm */
static double optimize(Trainer *t, long sstep, long slen) {
    ParamTable *pt = &t->m.params;
    size_t total = pt->total;
    float *g0 = t->tw[0].gbuf;
    #pragma omp parallel for num_threads(t->nth) schedule(static)
    for (size_t j = 0; j < total; j++) {
        float s = g0[j];
        for (int th = 1; th < t->nth; th++) s += t->tw[th].gbuf[j];
        g0[j] = s;
    }
    double nrm = 0;
    size_t off = 0;
    for (int i = 0; i < pt->n; i++) {
        if (t->train_mask[i])
            for (size_t j = 0; j < pt->p[i].numel; j++) nrm += (double)g0[off + j] * g0[off + j];
        off += pt->p[i].numel;
    }
    nrm = sqrt(nrm);
    if (!isfinite(nrm)) return nrm;
    double scale = t->tc.clip > 0 && nrm > t->tc.clip ? t->tc.clip / nrm : 1.0;
    double lr = lr_at(&t->tc, sstep, slen);
    double b1 = t->tc.b1, b2 = t->tc.b2;
    double c1 = 1 - pow(b1, (double)(sstep + 1)), c2 = 1 - pow(b2, (double)(sstep + 1));
    off = 0;
    for (int i = 0; i < pt->n; i++) {
        const ParamInfo *p = &pt->p[i];
        size_t n = p->numel;
        if (t->train_mask[i]) {
            float *w = t->wbuf + off, *m = t->mbuf + off, *v = t->vbuf + off, *gr = g0 + off;
            double wd = p->kind == PK_MATRIX ? t->tc.wd : 0.0;
            double lri = lr * t->tc.flow_lr[p->flow];   /* p->flow 0 (the codebook) has factor 1 */
            #pragma omp parallel for num_threads(t->nth) schedule(static)
            for (size_t j = 0; j < n; j++) {
                double gj = gr[j] * scale;
                double mj = b1 * m[j] + (1 - b1) * gj, vj = b2 * v[j] + (1 - b2) * gj * gj;
                m[j] = (float)mj;
                v[j] = (float)vj;
                double upd = (mj / c1) / (sqrt(vj / c2) + t->tc.aeps) + wd * w[j];
                w[j] = (float)(w[j] - lri * upd);
            }
        }
        off += n;
    }
    if (t->tc.sigma_floor > 0 && !t->m.cfg.is_ar) {
        float fl = (float)log(t->tc.sigma_floor);
        for (int k = 0; k < t->m.cfg.V; k++)
            if (t->m.w.cb_logsig[k] < fl) t->m.w.cb_logsig[k] = fl;
    }
    return nrm;
}

/* ---- files ----------------------------------------------------------------------- */

static tflm_status read_text_tokens(const Model *m, const char *path, int **ids, long *n, long limit) {
    FILE *f = fopen(path, "rb");
    if (!f) return tflm__err(TFLM_EIO, "%s: cannot open: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc(sz > 0 ? sz : 1);
    if (!buf) { fclose(f); return tflm__err(TFLM_ENOMEM, "%s: out of memory", path); }
    size_t got = fread(buf, 1, sz, f);
    fclose(f);
    if ((long)got != sz) { free(buf); return tflm__err(TFLM_EIO, "%s: short read", path); }
    tflm_ctx tmp;
    memset(&tmp, 0, sizeof tmp);
    tmp.m = *m;
    int *t = NULL, nt = 0;
    tflm_status st = tflm_tokenize(&tmp, buf, got, &t, &nt, NULL);
    free(buf);
    if (st != TFLM_OK) return st;
    if (limit > 0 && nt > limit) nt = (int)limit;
    *ids = t;
    *n = nt;
    return TFLM_OK;
}

static json_t *optim_meta(Trainer *t, double elapsed) {
    json_t *o = json_object();
    json_object_set_new(o, "step", json_integer(t->step));
    json_object_set_new(o, "elapsed_s", json_real(elapsed));
    json_object_set_new(o, "tokens", json_real(t->tokens));
    json_object_set_new(o, "ema_bpc", json_real(t->ema));
    json_object_set_new(o, "last_valid_bpc", json_real(t->last_valid));
    json_object_set_new(o, "threads", json_integer(t->nth));
    json_object_set(o, "train_config", t->tcjson);
    json_object_set(o, "corpus", t->corpus_rec);
    if (t->init_rec) json_object_set(o, "init", t->init_rec);
    return o;
}

static json_t *train_record(Trainer *t, double elapsed) {
    json_t *r = json_object();
    char who[64];
    snprintf(who, sizeof who, "tflm %s train", PACKAGE_VERSION);
    json_object_set_new(r, "trainer", json_string(who));
    json_object_set_new(r, "schedule", json_string(t->m.cfg.is_ar ? "ar" : t->tc.joint ? "joint" : "progressive"));
    json_object_set(r, "corpus", t->corpus_rec);
    json_object_set(r, "train_config", t->tcjson);
    if (t->init_rec) json_object_set(r, "init", t->init_rec);
    json_object_set_new(r, "steps", json_integer(t->step));
    json_object_set_new(r, "schedule_steps", json_integer(total_steps(&t->tc)));
    json_object_set_new(r, "tokens", json_real(t->tokens));
    json_object_set_new(r, "seed", json_integer((json_int_t)t->tc.seed));
    json_object_set_new(r, "threads", json_integer(t->nth));
    json_object_set_new(r, "wall_seconds", json_real(elapsed));
    json_t *fin = json_object();
    json_object_set_new(fin, "train_ema_bpc", json_real(t->ema));
    json_object_set_new(fin, "valid_bpc", json_real(t->last_valid));
    json_object_set_new(fin, "valid_note", json_string("ELBO, 1 sample, seed 1234, on the first valid_chars characters of the validation file"));
    json_object_set_new(r, "final", fin);
    return r;
}

static tflm_status save(Trainer *t, const char *path, int with_opt, double elapsed) {
    ParamTable *pt = &t->m.params;
    StWriteTensor *ex = NULL;
    char (*names)[112] = NULL;
    int nex = 0;
    if (with_opt) {
        ex = calloc((size_t)2 * pt->n, sizeof *ex);
        names = calloc((size_t)2 * pt->n, sizeof *names);
        if (!ex || !names) { free(ex); free(names); return tflm__err(TFLM_ENOMEM, "checkpoint: out of memory"); }
        size_t off = 0;
        for (int i = 0; i < pt->n; i++) {
            for (int k = 0; k < 2; k++) {
                StWriteTensor *e = &ex[nex];
                snprintf(names[nex], sizeof names[nex], "opt.%c.%s", k ? 'v' : 'm', pt->p[i].name);
                e->name = names[nex];
                e->ndim = pt->p[i].ndim;
                for (int j = 0; j < e->ndim; j++) e->shape[j] = pt->p[i].shape[j];
                e->data = (k ? t->vbuf : t->mbuf) + off;
                nex++;
            }
            off += pt->p[i].numel;
        }
    }
    json_t *meta = json_object();
    json_t *rec = train_record(t, elapsed);
    char *rj = json_dumps(rec, JSON_COMPACT | JSON_ENSURE_ASCII);
    json_object_set_new(meta, "tflm.train", json_string(rj));
    free(rj);
    json_decref(rec);
    if (with_opt) {
        json_t *o = optim_meta(t, elapsed);
        char *oj = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
        json_object_set_new(meta, "tflm.optim", json_string(oj));
        free(oj);
        json_decref(o);
    }
    tflm_status st = model_save_ex(&t->m, path, meta, ex, nex);
    json_decref(meta);
    free(ex);
    free(names);
    return st;
}

/* writable copies of the weights and zeroed moments */
static tflm_status own_weights(Trainer *t) {
    ParamTable *pt = &t->m.params;
    t->wbuf = malloc(pt->total * sizeof(float));
    t->mbuf = calloc(pt->total, sizeof(float));
    t->vbuf = calloc(pt->total, sizeof(float));
    t->train_mask = calloc(pt->n, 1);
    if (!t->wbuf || !t->mbuf || !t->vbuf || !t->train_mask)
        return tflm__err(TFLM_ENOMEM, "train: out of memory for %zu weights", pt->total);
    size_t off = 0;
    for (int i = 0; i < pt->n; i++) {
        memcpy(t->wbuf + off, *pt->p[i].slot, pt->p[i].numel * sizeof(float));
        off += pt->p[i].numel;
    }
    params_bind(pt, t->wbuf);
    return TFLM_OK;
}

/* The start file of an "init" run: its sha256 (checked against init_sha256
 * when the config gives one) and its own training record, so that the new
 * model carries its whole history. f is that file, opened. */
static tflm_status init_record(Trainer *t, const StFile *f, const char *path) {
    char hex[65];
    sha256_hex(f->map, f->size, hex);
    const char *want = json_string_value(json_object_get(t->tcjson, "init_sha256"));
    if (want && strcasecmp(want, hex))
        return tflm__err(TFLM_EFORMAT, "train config: %s has sha256 %.12s..., not the init_sha256 %.12s...",
                         path, hex, want);
    const char *base = strrchr(path, '/');
    t->init_rec = json_object();
    json_object_set_new(t->init_rec, "file", json_string(base ? base + 1 : path));
    json_object_set_new(t->init_rec, "sha256", json_string(hex));
    const char *prev = st_meta(f, "tflm.train");
    json_t *pj = prev ? json_loads(prev, 0, NULL) : NULL;
    json_object_set_new(t->init_rec, "train", pj ? pj : json_null());
    return TFLM_OK;
}

/* A checkpoint of an init run written before the record existed (before
 * commit a90ce0d): when the config names the start file's
 * sha256 and that file is still there and matches, rebuild the record from
 * it; otherwise the model goes without one (never an error). */
static void init_record_late(Trainer *t) {
    const char *init = json_string_value(json_object_get(t->tcjson, "init"));
    if (t->init_rec || !init || !json_is_string(json_object_get(t->tcjson, "init_sha256"))) return;
    StFile f;
    memset(&f, 0, sizeof f);
    if (st_open(&f, init, 1) != TFLM_OK) return;
    if (init_record(t, &f, init) != TFLM_OK) {
        json_decref(t->init_rec);
        t->init_rec = NULL;
    }
    st_close(&f);
}

static tflm_status load_resume(Trainer *t, const char *path) {
    tflm_status st = model_load(&t->m, path, 0);
    if (st != TFLM_OK) return st;
    const char *oj = st_meta(&t->m.file, "tflm.optim");
    if (!oj) return tflm__err(TFLM_EFORMAT, "%s: not a training checkpoint (no tflm.optim metadata)", path);
    json_error_t e;
    json_t *o = json_loads(oj, 0, &e);
    if (!json_is_object(o)) {
        json_decref(o);
        return tflm__err(TFLM_EFORMAT, "%s: tflm.optim is not valid JSON: %s", path, e.text);
    }
    t->step = (long)json_integer_value(json_object_get(o, "step"));
    t->elapsed = jnum(o, "elapsed_s", 0);
    t->tokens = jnum(o, "tokens", 0);
    t->ema = jnum(o, "ema_bpc", 0);
    t->last_valid = jnum(o, "last_valid_bpc", 0);
    t->tcjson = json_incref(json_object_get(o, "train_config"));
    if (json_is_object(json_object_get(o, "init"))) t->init_rec = json_incref(json_object_get(o, "init"));
    int th = (int)jnum(o, "threads", 0);
    json_decref(o);
    if (!json_is_object(t->tcjson))
        return tflm__err(TFLM_EFORMAT, "%s: tflm.optim has no train_config", path);
    init_record_late(t);
    if (th && t->o && t->o->threads && th != t->o->threads)
        say(t, TFLM_LOG_WARN, "resuming with %d threads; the checkpoint was written with %d: "
            "the run stays valid but is no longer bit-identical to an uninterrupted one", t->o->threads, th);
    if ((st = own_weights(t)) != TFLM_OK) return st;
    ParamTable *pt = &t->m.params;
    size_t off = 0;
    for (int i = 0; i < pt->n; i++) {
        for (int k = 0; k < 2; k++) {
            char nm[128];
            snprintf(nm, sizeof nm, "opt.%c.%s", k ? 'v' : 'm', pt->p[i].name);
            const StTensor *ts = st_find(&t->m.file, nm);
            if (!ts || ts->dtype != 0 || ts->len != pt->p[i].numel * sizeof(float))
                return tflm__err(TFLM_EFORMAT, "%s: optimizer state '%s' is missing or has the wrong size", path, nm);
            const uint8_t *src = t->m.file.map + t->m.file.data_off + ts->off;
            float *dst = (k ? t->vbuf : t->mbuf) + off;
            memcpy(dst, src, ts->len);
            for (size_t j = 0; j < pt->p[i].numel; j++)
                if (!isfinite(dst[j]))
                    return tflm__err(TFLM_EFORMAT, "%s: optimizer state '%s' holds a non-finite value", path, nm);
        }
        off += pt->p[i].numel;
    }
    return TFLM_OK;
}

static double valid_bpc(Trainer *t) {
    if (!t->valid || t->nvalid <= 0) return NAN;
    tflm_ctx v;
    memset(&v, 0, sizeof v);
    v.m = t->m;
    v.ops = t->ops;
    v.threads = t->nth;
    tflm_params_default(&v.p);
    tflm_score_params sp;
    tflm_score_params_default(&sp);
    tflm_score s;
    if (tflm_score_ids(&v, t->valid, t->nvalid, &sp, &s) != TFLM_OK) return NAN;
    return s.bpc;
}

void tflm_train_opts_default(tflm_train_opts *o) {
    memset(o, 0, sizeof *o);
    o->threads = 1;
}

static void trainer_free(Trainer *t) {
    for (int i = 0; i < MAX_THREADS; i++) tw_free(&t->tw[i]);
    free(t->corpus);
    free(t->valid);
    free(t->mbuf);
    free(t->vbuf);
    free(t->train_mask);
    json_decref(t->tcjson);
    json_decref(t->corpus_rec);
    json_decref(t->init_rec);
    model_free(&t->m);
    free(t->wbuf);
}

tflm_status tflm_train(const char *config_json, const char *const *train_files, int n_train,
                       const char *valid_file, const char *out_path, const char *resume_path,
                       const tflm_train_opts *o, int *finished) {
    tflm_train_opts dop;
    tflm_train_opts_default(&dop);
    if (!o) o = &dop;
    if (finished) *finished = 0;
    if (!out_path || !train_files || n_train < 1)
        return tflm__err(TFLM_EINVAL, "train: needs training text and an output path");
    if (!config_json && !resume_path)
        return tflm__err(TFLM_EINVAL, "train: needs a training config or a checkpoint to resume");
    Trainer *t = calloc(1, sizeof *t);
    if (!t) return tflm__err(TFLM_ENOMEM, "train: out of memory");
    t->o = o;
    t->nth = o->threads > 0 ? (o->threads < MAX_THREADS ? o->threads : MAX_THREADS) : 1;
    omp_set_num_threads(t->nth);   /* the ops' loops: no more threads than asked for */
    tflm_status st = TFLM_OK;
    double t_start = now_s();
    char ckpt[4096];
    snprintf(ckpt, sizeof ckpt, "%s.ckpt", out_path);
    if (resume_path) {
        if ((st = load_resume(t, resume_path)) != TFLM_OK) goto done;
        say(t, TFLM_LOG_INFO, "resuming %s at step %ld", resume_path, t->step);
    } else {
        json_error_t e;
        t->tcjson = json_loads(config_json, JSON_REJECT_DUPLICATES, &e);
        if (!json_is_object(t->tcjson)) {
            st = tflm__err(TFLM_EFORMAT, "train config: not valid JSON: %s (line %d)", e.text, e.line);
            goto done;
        }
        const char *init = json_string_value(json_object_get(t->tcjson, "init"));
        json_t *mj = json_object_get(t->tcjson, "model");
        if (init) {
            if ((st = model_load(&t->m, init, 0)) != TFLM_OK) goto done;
            if ((st = init_record(t, &t->m.file, init)) != TFLM_OK) goto done;
        } else if (json_is_object(mj)) {
            Config cf;
            if ((st = config_from_json(&cf, mj)) != TFLM_OK) goto done;
            uint64_t iseed = (uint64_t)jnum(t->tcjson, "seed", 1);
            if (o->has_seed) iseed = o->seed;
            if ((st = model_init(&t->m, &cf, iseed)) != TFLM_OK) goto done;
        } else {
            st = tflm__err(TFLM_EFORMAT, "train config: needs \"model\" (a tflm.config object) or \"init\" (a model file)");
            goto done;
        }
        if (o->has_seed) json_object_set_new(t->tcjson, "seed", json_integer((json_int_t)o->seed));
        if ((st = own_weights(t)) != TFLM_OK) goto done;
    }
    if ((st = parse_train_cfg(&t->tc, t->tcjson, &t->m.cfg)) != TFLM_OK) goto done;
    t->ops = ops_get(1);
    if (o->device == TFLM_DEVICE_CUDA && !(t->ops = ops_cuda_get())) {
        st = tflm__err(TFLM_EUNSUPPORTED, "train: device cuda: %s", ops_cuda_error());
        goto done;
    }
    /* corpus */
    t->corpus_rec = json_array();
    for (int i = 0; i < n_train; i++) {
        int *ids;
        long n;
        if ((st = read_text_tokens(&t->m, train_files[i], &ids, &n, 0)) != TFLM_OK) goto done;
        int *nc = realloc(t->corpus, (size_t)(t->ncorpus + n) * sizeof(int));
        if (!nc) { free(ids); st = tflm__err(TFLM_ENOMEM, "train: out of memory for the corpus"); goto done; }
        t->corpus = nc;
        memcpy(t->corpus + t->ncorpus, ids, n * sizeof(int));
        t->ncorpus += n;
        free(ids);
        /* record name and sha256 */
        FILE *f = fopen(train_files[i], "rb");
        char hex[65] = "";
        if (f) {
            fseek(f, 0, SEEK_END);
            long sz = ftell(f);
            fseek(f, 0, SEEK_SET);
            char *buf = malloc(sz > 0 ? sz : 1);
            if (buf && (long)fread(buf, 1, sz, f) == sz) sha256_hex(buf, sz, hex);
            free(buf);
            fclose(f);
        }
        const char *base = strrchr(train_files[i], '/');
        json_t *e = json_object();
        json_object_set_new(e, "file", json_string(base ? base + 1 : train_files[i]));
        json_object_set_new(e, "sha256", json_string(hex));
        json_object_set_new(e, "tokens", json_integer(n));
        json_array_append_new(t->corpus_rec, e);
    }
    if (t->ncorpus < t->m.cfg.T + 2) {
        st = tflm__err(TFLM_EINVAL, "train: the training text has %ld tokens; it needs more than a window (%d)",
                       t->ncorpus, t->m.cfg.T);
        goto done;
    }
    if (valid_file) {
        long nv;
        if ((st = read_text_tokens(&t->m, valid_file, &t->valid, &nv, t->tc.valid_chars)) != TFLM_OK) goto done;
        t->nvalid = (int)nv;
    }
    /* workspaces */
    if (t->nth > t->tc.batch) t->nth = t->tc.batch;
    for (int th = 0; th < t->nth; th++) {
        int nb = (t->tc.batch * (th + 1)) / t->nth - (t->tc.batch * th) / t->nth;
        if ((st = tw_init(&t->tw[th], &t->m, nb)) != TFLM_OK) goto done;
    }
    long total = total_steps(&t->tc), end = total;
    if (o->stop_at > 0) {
        if (o->stop_at > total) {
            st = tflm__err(TFLM_EINVAL, "train: stop at step %ld: the schedule has only %ld steps", o->stop_at, total);
            goto done;
        }
        if (t->step > o->stop_at) {
            st = tflm__err(TFLM_EINVAL, "train: stop at step %ld: the checkpoint is already at step %ld",
                           o->stop_at, t->step);
            goto done;
        }
        end = o->stop_at;
    }
    int cur_stage = -1;
    double sitting0 = now_s(), last_ckpt = sitting0, step_time = 0;
    char upto[64] = "";
    if (end < total) snprintf(upto, sizeof upto, " (stopping at step %ld)", end);
    say(t, TFLM_LOG_INFO, "training %s: %ld steps%s, batch %d x %d tokens, %d thread(s), %zu parameters",
        t->m.cfg.is_ar ? "ar" : t->tc.joint ? "jointly" : "progressively", total, upto, t->tc.batch, t->m.cfg.T,
        t->nth, t->m.params.total);
    while (t->step < end) {
        int stage = 0;
        long sstep = 0, slen = 1;
        stage_of(&t->tc, t->step, &stage, &sstep, &slen);
        if (stage != cur_stage) {
            set_mask(t, stage);
            cur_stage = stage;
            if (!t->m.cfg.is_ar && !t->tc.joint)
                say(t, TFLM_LOG_INFO, "stage %d of %d: training flow %d%s", stage + 1, t->tc.nstages, stage + 1,
                    stage == 0 ? " and the codebook" : "");
        }
        double ts = now_s();
        /* count real tokens first: the loss is per real token of the batch */
        long ntok = 0;
        int *tmp = t->tw[0].tok;
        for (int b = 0; b < t->tc.batch; b++) {
            sample_window(t, t->step, b, tmp);
            for (int i = 0; i < t->m.cfg.T; i++) ntok += tmp[i] != 0;
        }
        double inv = ntok > 0 ? 1.0 / ntok : 0;
        #pragma omp parallel for num_threads(t->nth) schedule(static, 1)
        for (int th = 0; th < t->nth; th++) {
            TW *w = &t->tw[th];
            int b0 = (t->tc.batch * th) / t->nth;
            w->st = share_step(t, w, t->step, b0, w->nb, inv, stage);
            if (w->st != TFLM_OK) snprintf(w->err, sizeof w->err, "%s", tflm_last_error());
        }
        for (int th = 0; th < t->nth; th++)
            if (t->tw[th].st != TFLM_OK) { st = tflm__err(t->tw[th].st, "train: step %ld: %s", t->step, t->tw[th].err); goto done; }
        double ll = 0;
        for (int th = 0; th < t->nth; th++) {
            TW *w = &t->tw[th];
            if (t->m.cfg.is_ar) { ll += w->arll; continue; }
            int top = t->tc.joint ? t->m.cfg.L : stage + 1;
            ll += w->R;
            for (int l = 1; l <= top; l++) ll += w->lp[l - 1] - (l < top ? w->ln[l - 1] : 0);
        }
        double bpc = -ll * inv / M_LN2;
        if (!isfinite(bpc)) {
            st = tflm__err(TFLM_ENUMERIC, "train: the loss became %g at step %ld; stopped, the last checkpoint "
                           "(%s) is kept", bpc, t->step, ckpt);
            goto done;
        }
        double gn = optimize(t, sstep, slen);
        if (!isfinite(gn)) {
            const char *bad = "?";
            size_t off = 0;
            for (int i = 0; i < t->m.params.n && *bad == '?'; i++) {
                for (size_t j = 0; j < t->m.params.p[i].numel; j++)
                    if (!isfinite(t->tw[0].gbuf[off + j])) { bad = t->m.params.p[i].name; break; }
                off += t->m.params.p[i].numel;
            }
            st = tflm__err(TFLM_ENUMERIC, "train: the gradient of %s became %g at step %ld; stopped, the last "
                           "checkpoint (%s) is kept", bad, gn, t->step, ckpt);
            goto done;
        }
        t->step++;
        t->tokens += ntok;
        t->ema = t->ema == 0 ? bpc : 0.98 * t->ema + 0.02 * bpc;
        double dt = now_s() - ts;
        step_time = step_time == 0 ? dt : 0.95 * step_time + 0.05 * dt;
        int do_valid = t->tc.valid_every > 0 && (t->step % t->tc.valid_every == 0 || t->step == end);
        if (do_valid) t->last_valid = valid_bpc(t);
        if (t->step % t->tc.log_every == 0 || do_valid || t->step == end) {
            double eta = (end - t->step) * step_time;   /* to --stop-at, if given */
            char vb[32] = "-";
            if (t->last_valid > 0) snprintf(vb, sizeof vb, "%.4f", t->last_valid);
            say(t, TFLM_LOG_INFO, "stage %d/%d step %ld/%ld  %.0f tok/s  train %.4f bpc  valid %s  |g| %.2f  lr %.2e  ETA %dh%02dm",
                stage + 1, t->tc.nstages, t->step, total, ntok / dt, t->ema, vb, gn,
                lr_at(&t->tc, sstep, slen), (int)(eta / 3600), (int)fmod(eta / 60, 60));
        }
        double el = t->elapsed + (now_s() - sitting0);
        int stop = o->stop && *o->stop;
        int timeup = o->time_limit_s > 0 && now_s() - t_start >= o->time_limit_s;
        int want_ckpt = (t->tc.ckpt_every > 0 && t->step % t->tc.ckpt_every == 0) ||
                        (t->tc.ckpt_s > 0 && now_s() - last_ckpt >= t->tc.ckpt_s) || stop || timeup ||
                        t->step == end;
        if (want_ckpt) {
            if ((st = save(t, ckpt, 1, el)) != TFLM_OK) goto done;
            last_ckpt = now_s();
            say(t, TFLM_LOG_DEBUG, "checkpoint %s at step %ld", ckpt, t->step);
        }
        if ((stop || timeup) && t->step < end) {
            say(t, TFLM_LOG_INFO, "%s at step %ld of %ld; checkpoint %s; continue with --resume %s",
                stop ? "stopped" : "time limit reached", t->step, total, ckpt, ckpt);
            st = stop ? tflm__err(TFLM_ECANCELLED, "train: stopped at step %ld; checkpoint %s", t->step, ckpt) : TFLM_OK;
            goto done;
        }
    }
    {
        double el = t->elapsed + (now_s() - sitting0);
        if (t->valid) t->last_valid = valid_bpc(t);
        if ((st = save(t, out_path, 0, el)) != TFLM_OK) goto done;
        char vb[48] = "";
        if (t->valid) snprintf(vb, sizeof vb, "; valid %.4f bpc", t->last_valid);
        if (end < total)
            say(t, TFLM_LOG_INFO, "done: stopped as asked at step %ld of the %ld-step schedule, %.0f tokens, "
                "%.1f min%s; wrote %s", t->step, total, t->tokens, el / 60, vb, out_path);
        else
            say(t, TFLM_LOG_INFO, "done: %ld steps, %.0f tokens, %.1f min%s; wrote %s", t->step, t->tokens,
                el / 60, vb, out_path);
        if (finished) *finished = 1;
    }
done:
    trainer_free(t);
    free(t);
    return st;
}

/* ---- for tests: the loss and gradient of given windows ------------------------------ */
static tflm_status eval_batch(Model *m, const int *tok, int nb, int joint, int stage, uint64_t seed,
                              int threads, int maf_ref, double *loss, float *grad) {
    Trainer *t = calloc(1, sizeof *t);
    if (!t) return tflm__err(TFLM_ENOMEM, "train_eval: out of memory");
    t->m = *m;
    t->maf_ref = maf_ref;
    t->tc.joint = joint;
    t->tc.nstages = 1;
    t->tc.batch = nb;
    t->tc.seed = seed;
    t->fixed = tok;
    t->ops = ops_get(1);
    t->nth = threads < 1 ? 1 : threads > nb ? nb : threads;
    tflm_status st = TFLM_OK;
    for (int th = 0; th < t->nth && st == TFLM_OK; th++) {
        int n = (nb * (th + 1)) / t->nth - (nb * th) / t->nth;
        st = tw_init(&t->tw[th], &t->m, n);
    }
    long ntok = 0;
    for (int i = 0; i < nb * m->cfg.T; i++) ntok += tok[i] != 0;
    double inv = ntok ? 1.0 / ntok : 0;
    for (int th = 0; th < t->nth && st == TFLM_OK; th++)
        st = share_step(t, &t->tw[th], 0, (nb * th) / t->nth, t->tw[th].nb, inv, stage);
    if (st == TFLM_OK) {
        double ll = 0;
        int top = joint ? m->cfg.L : stage + 1;
        for (int th = 0; th < t->nth; th++) {
            TW *w = &t->tw[th];
            if (m->cfg.is_ar) { ll += w->arll; continue; }
            ll += w->R;
            for (int l = 1; l <= top; l++) ll += w->lp[l - 1] - (l < top ? w->ln[l - 1] : 0);
        }
        *loss = -ll * inv;
        if (grad) {
            memset(grad, 0, m->params.total * sizeof(float));
            for (int th = 0; th < t->nth; th++)
                for (size_t j = 0; j < m->params.total; j++) grad[j] += t->tw[th].gbuf[j];
        }
    }
    for (int i = 0; i < MAX_THREADS; i++) tw_free(&t->tw[i]);
    free(t);
    return st;
}

tflm_status train_eval(Model *m, const int *tok, int nb, int joint, int stage, uint64_t seed,
                       int threads, double *loss, float *grad) {
    return eval_batch(m, tok, nb, joint, stage, seed, threads, 0, loss, grad);
}

tflm_status train_eval_maf_ref(Model *m, const int *tok, int nb, int joint, int stage, uint64_t seed,
                               double *loss) {
    return eval_batch(m, tok, nb, joint, stage, seed, 1, 1, loss, NULL);
}
