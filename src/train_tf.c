/* train_tf.c: the transformer of one flow for training (DESIGN §2.2, item 2):
 * a forward pass over whole windows that keeps every activation the
 * backward pass needs, and that backward pass.
 *
 * It computes the same function as tf_forward (src/transformer.c) on a
 * window, with the same ops in the same order, so with the reference ops
 * the two agree bit for bit; it only runs nb windows at once and keeps
 * q | k | v packed per row (one matmul against attn.qkv, one backward).
 *
 * Forward, rows r = b*n + s (window b, step s):
 *   res[0]   = xin W_in^T + b_in + pos[pos[r]]
 *   block l: ln1 = LN1(res[l]); qkv = ln1 Wqkv^T + bqkv; ao = attn(qkv)
 *            mid = res[l] + ao Wout^T + bout
 *            ln2 = LN2(mid); fc = ln2 Wfc^T + bfc; ge = gelu(fc)
 *            res[l+1] = mid + ge Wproj^T + bproj
 *   G        = LN_f(res[nblk])
 * Backward runs the same list in reverse with dx = dL/d(residual stream).
 * Each *_forward / *_backward pair is one op of the table (kernels/ops.h).
 *
 * TfActs holds one allocation made by tfa_init, so a training step
 * allocates nothing. */
#include <stdlib.h>
#include <string.h>
#include "train.h"

/* block l's slice of a per-block activation of `width` floats per row */
static float *blk(const TfActs *a, float *base, int l, int width) {
    return base + (size_t)l * a->cap_rows * width;
}

static float *blk_att(const TfActs *a, int l) {
    return a->att + (size_t)l * a->cap_rows * a->cap_n * a->H;
}

tflm_status tfa_init(TfActs *a, const TfDims *dm, int nb, int n) {
    memset(a, 0, sizeof *a);
    int D = dm->D, H = dm->H, L = dm->nblk;
    if (D <= 0 || H <= 0 || D % H != 0 || dm->cin <= 0 || L < 0 || L > MAX_BLOCKS)
        return tflm__err(TFLM_EINVAL, "training transformer: bad dimensions "
                         "(D %d, H %d, blocks %d, cin %d)", D, H, L, dm->cin);
    if (nb <= 0 || n <= 0 || n > ATT_TRAIN_MAX_N)
        return tflm__err(TFLM_EINVAL, "training transformer: %d windows of %d steps "
                         "(at most %d steps)", nb, n, ATT_TRAIN_MAX_N);
    size_t R = (size_t)nb * n;
    /* floats per row: res (L+1) D; per block ln1, ao, mid, ln2 (4D), qkv 3D,
     * fc, ge 8D, 4 statistics, att H n; lnf 2; scratch 7D */
    size_t per_row = (size_t)(L + 1) * D + (size_t)L * (15 * (size_t)D + 4 + (size_t)H * n)
                     + 2 + 7 * (size_t)D;
    if (per_row > (size_t)-1 / sizeof(float) / R)
        return tflm__err(TFLM_ENOMEM, "training transformer: %d windows of %d steps are "
                         "too large", nb, n);
    a->buf = malloc(per_row * R * sizeof(float));
    if (!a->buf)
        return tflm__err(TFLM_ENOMEM, "training transformer: out of memory (%zu MB of "
                         "activations)", per_row * R * sizeof(float) >> 20);
    a->D = D;
    a->H = H;
    a->nblk = L;
    a->cin = dm->cin;
    a->cap_rows = R;
    a->cap_n = n;
    float *p = a->buf;
#define TAKE(field, count) do { a->field = p; p += (count); } while (0)
    TAKE(res, (size_t)(L + 1) * R * D);
    TAKE(ln1, (size_t)L * R * D);
    TAKE(ln1_mu, (size_t)L * R);
    TAKE(ln1_rs, (size_t)L * R);
    TAKE(qkv, (size_t)L * R * 3 * D);
    TAKE(att, (size_t)L * R * n * H);
    TAKE(ao, (size_t)L * R * D);
    TAKE(mid, (size_t)L * R * D);
    TAKE(ln2, (size_t)L * R * D);
    TAKE(ln2_mu, (size_t)L * R);
    TAKE(ln2_rs, (size_t)L * R);
    TAKE(fc, (size_t)L * R * 4 * D);
    TAKE(ge, (size_t)L * R * 4 * D);
    TAKE(lnf_mu, R);
    TAKE(lnf_rs, R);
    TAKE(scratch, 7 * R * D);
#undef TAKE
    return TFLM_OK;
}

void tfa_free(TfActs *a) {
    free(a->buf);
    memset(a, 0, sizeof *a);
}

/* x[i] += y[i], i < len */
static void add_inplace(float *x, const float *y, size_t len) {
    for (size_t i = 0; i < len; i++) x[i] += y[i];
}

tflm_status tf_train_forward(const Ops *ops, const FlowWeights *fw, const TfDims *dm, TfActs *a,
                             const float *xin, const int *pos, int nb, int n, float *G) {
    int D = dm->D, H = dm->H, cin = dm->cin;
    if (D != a->D || H != a->H || dm->nblk != a->nblk || cin != a->cin)
        return tflm__err(TFLM_EINVAL, "training transformer: model (D %d, H %d, blocks %d, "
                         "cin %d) does not match its buffers (D %d, H %d, blocks %d, cin %d)",
                         D, H, dm->nblk, cin, a->D, a->H, a->nblk, a->cin);
    if (nb <= 0 || n <= 0 || n > a->cap_n || (size_t)nb * n > a->cap_rows)
        return tflm__err(TFLM_EINVAL, "training transformer: %d windows of %d steps do not "
                         "fit buffers for %zu rows of windows up to %d steps", nb, n,
                         a->cap_rows, a->cap_n);
    int R = nb * n;
    for (int r = 0; r < R; r++)
        if (pos[r] < 0 || pos[r] >= a->cap_n)
            return tflm__err(TFLM_EINVAL, "training transformer: position %d out of range "
                             "0..%d", pos[r], a->cap_n - 1);
    a->nb = nb;
    a->n = n;
    a->R = R;
    a->xin = xin;
    a->pos = pos;
    size_t nd = (size_t)R * D;

    /* E = W_in X' + b_in + pos[o(step)] */
    float *x = a->res;
    ops->matmul(x, xin, fw->in_w, fw->in_b, R, cin, D);
    for (int r = 0; r < R; r++)
        add_inplace(x + (size_t)r * D, fw->pos + (size_t)pos[r] * D, D);

    for (int l = 0; l < dm->nblk; l++) {
        const BlockWeights *bw = &fw->blk[l];
        float *xl = blk(a, a->res, l, D), *xnext = blk(a, a->res, l + 1, D);
        float *ln1 = blk(a, a->ln1, l, D), *qkv = blk(a, a->qkv, l, 3 * D);
        float *ao = blk(a, a->ao, l, D), *mid = blk(a, a->mid, l, D);
        float *ln2 = blk(a, a->ln2, l, D), *fc = blk(a, a->fc, l, 4 * D);
        float *ge = blk(a, a->ge, l, 4 * D);

        /* mid = x + out(attn(LN1(x))) */
        ops->layernorm_train(ln1, blk(a, a->ln1_mu, l, 1), blk(a, a->ln1_rs, l, 1), xl,
                             bw->ln1_w, bw->ln1_b, R, D, dm->eps);
        ops->matmul(qkv, ln1, bw->qkv_w, bw->qkv_b, R, D, 3 * D);
        ops->attention_train(ao, blk_att(a, l), qkv, nb, n, D, H);
        ops->matmul(mid, ao, bw->out_w, bw->out_b, R, D, D);
        add_inplace(mid, xl, nd);

        /* x' = mid + proj(gelu(fc(LN2(mid)))) */
        ops->layernorm_train(ln2, blk(a, a->ln2_mu, l, 1), blk(a, a->ln2_rs, l, 1), mid,
                             bw->ln2_w, bw->ln2_b, R, D, dm->eps);
        ops->matmul(fc, ln2, bw->fc_w, bw->fc_b, R, D, 4 * D);
        ops->gelu(ge, fc, 4 * (int)nd);
        ops->matmul(xnext, ge, bw->proj_w, bw->proj_b, R, 4 * D, D);
        add_inplace(xnext, mid, nd);
    }
    ops->layernorm_train(G, a->lnf_mu, a->lnf_rs, blk(a, a->res, dm->nblk, D), fw->lnf_w,
                         fw->lnf_b, R, D, dm->eps);
    return TFLM_OK;
}

tflm_status tf_train_backward(const Ops *ops, const FlowWeights *fw, FlowWeights *gw,
                              const TfDims *dm, TfActs *a, const float *dG, float *dxin) {
    int D = dm->D, H = dm->H, cin = dm->cin, R = a->R, nb = a->nb, n = a->n;
    if (D != a->D || H != a->H || dm->nblk != a->nblk || cin != a->cin || R <= 0)
        return tflm__err(TFLM_EINVAL, "training transformer: backward without a matching "
                         "forward");
    size_t nd = (size_t)R * D;
    /* dx: dL/d(residual stream); d1, d2 [R, D]; dh [R, 4D] (also dqkv [R, 3D]) */
    float *dx = a->scratch, *d1 = dx + nd, *d2 = d1 + nd, *dh = d2 + nd;

    ops->layernorm_backward(dx, gw->lnf_w, gw->lnf_b, dG, blk(a, a->res, dm->nblk, D),
                            a->lnf_mu, a->lnf_rs, fw->lnf_w, R, D);

    for (int l = dm->nblk - 1; l >= 0; l--) {
        const BlockWeights *bw = &fw->blk[l];
        BlockWeights *gb = &gw->blk[l];
        float *xl = blk(a, a->res, l, D);
        float *ln1 = blk(a, a->ln1, l, D), *qkv = blk(a, a->qkv, l, 3 * D);
        float *ao = blk(a, a->ao, l, D), *mid = blk(a, a->mid, l, D);
        float *ln2 = blk(a, a->ln2, l, D), *fc = blk(a, a->fc, l, 4 * D);
        float *ge = blk(a, a->ge, l, 4 * D);

        /* MLP: dx flows on through the residual and through the branch */
        ops->matmul_backward(dh, gb->proj_w, gb->proj_b, dx, ge, bw->proj_w, R, 4 * D, D);
        ops->gelu_backward(dh, dh, fc, 4 * (int)nd);
        ops->matmul_backward(d1, gb->fc_w, gb->fc_b, dh, ln2, bw->fc_w, R, D, 4 * D);
        ops->layernorm_backward(d2, gb->ln2_w, gb->ln2_b, d1, mid, blk(a, a->ln2_mu, l, 1),
                                blk(a, a->ln2_rs, l, 1), bw->ln2_w, R, D);
        add_inplace(dx, d2, nd);

        /* attention */
        ops->matmul_backward(d1, gb->out_w, gb->out_b, dx, ao, bw->out_w, R, D, D);
        ops->attention_backward(dh, d1, blk_att(a, l), qkv, nb, n, D, H);
        ops->matmul_backward(d1, gb->qkv_w, gb->qkv_b, dh, ln1, bw->qkv_w, R, D, 3 * D);
        ops->layernorm_backward(d2, gb->ln1_w, gb->ln1_b, d1, xl, blk(a, a->ln1_mu, l, 1),
                                blk(a, a->ln1_rs, l, 1), bw->ln1_w, R, D);
        add_inplace(dx, d2, nd);
    }

    /* embedding: positions scatter-add in row order, then in_proj */
    for (int r = 0; r < R; r++)
        add_inplace(gw->pos + (size_t)a->pos[r] * D, dx + (size_t)r * D, D);
    ops->matmul_backward(dxin, gw->in_w, gw->in_b, dx, a->xin, fw->in_w, R, cin, D);
    return TFLM_OK;
}
