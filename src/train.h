/* train.h: interfaces of the trainer's pieces (issue 3): the transformer with
 * saved activations and its backward pass (src/train_tf.c), the backward
 * passes of the couplings, maf head and codebook (src/grad.c), and the
 * training loop (src/train.c).
 *
 * Gradients live in a second Weights struct bound (params_bind) to a
 * gradient buffer, so a FlowWeights of gradients has the same fields as the
 * weights. Every *_backward ACCUMULATES (+=) into gradient buffers.
 * Dimension legend as in internal.h; nb windows of n steps, R = nb * n rows. */
#ifndef TFLM_TRAIN_H
#define TFLM_TRAIN_H
#include "internal.h"

/* ---- transformer with saved activations (src/train_tf.c) ------------------ */
typedef struct {
    int nb, n, R;           /* windows, steps per window, rows = nb * n (last forward) */
    int D, H, nblk, cin;
    size_t cap_rows;        /* rows the buffers were sized for (per block) */
    int cap_n;              /* longest window they were sized for; positions < cap_n */
    float *buf;             /* one allocation for everything below */
    const float *xin;       /* [R, cin] inputs of the last forward (caller-owned) */
    const int *pos;         /* [R] position of each row (caller-owned) */
    /* per block l, each at l * cap_rows * width: */
    float *res;             /* [nblk+1][R, D] residual stream entering each block, and after the last */
    float *ln1, *ln1_mu, *ln1_rs;   /* [nblk][R, D], [nblk][R], [nblk][R] (mean, 1/std) */
    float *qkv;             /* [nblk][R, 3D] rows [q | k | v] */
    float *att;             /* [nblk][nb, H, n, n] softmax probabilities (block stride cap_rows * cap_n * H) */
    float *ao;              /* [nblk][R, D] attention output before attn.out */
    float *mid;             /* [nblk][R, D] residual after attention */
    float *ln2, *ln2_mu, *ln2_rs;
    float *fc;              /* [nblk][R, 4D] before GELU */
    float *ge;              /* [nblk][R, 4D] after GELU */
    float *lnf_mu, *lnf_rs; /* [R] */
    float *scratch;         /* backward: [R, D] x 3 + [R, 4D] */
} TfActs;

tflm_status tfa_init(TfActs *a, const TfDims *dm, int nb, int n);
void tfa_free(TfActs *a);
/* G[R, D] for nb independent windows of n causal steps each (no cache);
 * row r = b*n + s is step s of window b; pos[r] its window position. */
tflm_status tf_train_forward(const Ops *ops, const FlowWeights *fw, const TfDims *dm, TfActs *a,
                             const float *xin, const int *pos, int nb, int n, float *G);
/* Given dG[R, D], accumulate weight gradients into gw (in_proj, pos, blocks,
 * ln_f; not sos/head) and, if dxin != NULL, write dL/dxin [R, cin]. */
tflm_status tf_train_backward(const Ops *ops, const FlowWeights *fw, FlowWeights *gw,
                              const TfDims *dm, TfActs *a, const float *dG, float *dxin);

/* ---- coupling, maf and codebook gradients (src/grad.c) -------------------- */
/* mix1 / affine channel. Given upstream glp = dL/d(log p(x)) and gy = dL/dy,
 * accumulate dL/dprm [3K] into dprm and dL/dclamp [K] into dclamp, and
 * return dL/dx. */
double mix1_backward(const float *prm, const float *clampf, int K, double x, double glp,
                     double gy, float *dprm, float *dclamp);
double affine_backward(const float *prm, const float *clampf, double x, double glp, double gy,
                       float *dprm, float *dclamp);

/* mixd token. glp = dL/d(log p(z)) (all d dims of a token share an owner),
 * gy[d] = dL/dy (may be NULL: no gradient through y). Accumulates into
 * dlogits [V], dmu [V, d], dlogsig [V] and dz [d]. */
void mixd_backward(const float *logits, const float *mu, const float *logsig, int V, int d,
                   const double *z, double glp, const double *gy, float *dlogits, float *dmu,
                   float *dlogsig, double *dz);

/* The per-position maf backward. Since the trainer computes the maf head of
 * all rows at once (src/train.c maf_bwd), only tests/test_grad calls it: it
 * is the op-level statement of the head's gradient, checked there against
 * finite differences.
 * maf channel i: given dout [3K] = dL/d(out_i), accumulate the gradients of
 * the feature and output weights into gw's maf tensors, dL/d(cg) into dcg
 * [H2] (the context part C_i G + b_i; its matrix product is differentiated
 * by the caller) and dL/de into de [i*E] (e as maf_channel's). */
void maf_channel_backward(const FlowWeights *fw, FlowWeights *gw, int c, int K, int E, int H2,
                          const float *cg, const float *e, int i, const float *dout,
                          float *dcg, double *de);
/* e_j = maf_embed(x_j): given dej [E] = dL/de_j, accumulate the embedding
 * weights' gradients into gw and dL/dx_j into *dxj */
void maf_embed_backward(const FlowWeights *fw, FlowWeights *gw, int E, int j, double xj,
                        const double *dej, double *dxj);

/* R = -LSE_k l_k(z): accumulate g * dR/dmu, g * dR/dlogsig into the
 * codebook gradients and ADD g * dR/dz into dz [d]. */
void codebook_R_backward(const float *mu, const float *logsig, int V, int d, const float *z,
                         double g, float *dmu, float *dlogsig, double *dz);

/* ---- the trainer (src/train.c) -------------------------------------------- */
/* Tests: loss (nats per real token) of nb given windows tok [nb, T] for the
 * objective of progressive `stage` (0-based) or joint, with keyed eps of
 * `seed`, and its gradient in params-table order into grad (may be NULL). */
tflm_status train_eval(Model *m, const int *tok, int nb, int joint, int stage, uint64_t seed,
                       int threads, double *loss, float *grad);
/* Tests: train_eval's loss on 1 thread with every maf head evaluated one
 * position at a time by maf_channel (the scoring path's arithmetic) instead
 * of the trainer's batched matrix products; no gradient. */
tflm_status train_eval_maf_ref(Model *m, const int *tok, int nb, int joint, int stage, uint64_t seed,
                               double *loss);
#endif
