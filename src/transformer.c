/* transformer.c: the causal pre-LN transformer of one flow (DESIGN §2.2,
 * item 2) with a KV cache, on top of the ops table (kernels/ops.h).
 *
 * One call runs steps start..start+n-1 (start = kv->len) at once: n = 1 for
 * step-by-step inversion, n = N for a whole window, anything in between for
 * chunks. The keys and values of each block are written straight into the
 * cache, so a later call sees every earlier step. */
#include <stdlib.h>
#include <string.h>
#include "internal.h"
#ifdef _OPENMP
#include <omp.h>
#endif

tflm_status kv_init(KVCache *kv, int nblk, int cap, int D) {
    memset(kv, 0, sizeof *kv);
    if (nblk <= 0 || cap <= 0 || D <= 0)
        return tflm__err(TFLM_EINVAL, "kv cache: bad size (blocks %d, steps %d, width %d)",
                         nblk, cap, D);
    size_t len = (size_t)nblk * cap * D;
    kv->k = malloc(len * sizeof(float));
    kv->v = malloc(len * sizeof(float));
    if (!kv->k || !kv->v) {
        kv_free(kv);
        return tflm__err(TFLM_ENOMEM, "kv cache: out of memory (%zu floats)", 2 * len);
    }
    kv->nblk = nblk;
    kv->cap = cap;
    kv->D = D;
    kv->len = 0;
    return TFLM_OK;
}

void kv_free(KVCache *kv) {
    free(kv->k);
    free(kv->v);
    memset(kv, 0, sizeof *kv);
}

void kv_reset(KVCache *kv) { kv->len = 0; }

/* x[i] += y[i], i < len */
static void add_inplace(float *x, const float *y, size_t len) {
    for (size_t i = 0; i < len; i++) x[i] += y[i];
}

tflm_status tf_forward(const Ops *ops, const FlowWeights *fw, const TfDims *dm, KVCache *kv,
                       const float *xin, const int *pos_idx, int n, float *G) {
    int D = dm->D, H = dm->H, cin = dm->cin, start = kv->len;
    if (n < 0 || D <= 0 || H <= 0 || D % H != 0 || cin <= 0)
        return tflm__err(TFLM_EINVAL, "transformer: bad dimensions (n %d, D %d, H %d, cin %d)",
                         n, D, H, cin);
    if (dm->nblk < 0 || dm->nblk > kv->nblk || dm->nblk > MAX_BLOCKS || kv->D != D)
        return tflm__err(TFLM_EINVAL,
                         "transformer: cache (%d blocks, width %d) does not fit the model "
                         "(%d blocks, width %d)", kv->nblk, kv->D, dm->nblk, D);
    if (n > kv->cap - start)
        return tflm__err(TFLM_EINVAL, "transformer: %d new steps do not fit the cache "
                         "(%d of %d steps used)", n, start, kv->cap);
    for (int i = 0; i < n; i++)
        if (pos_idx[i] < 0 || pos_idx[i] >= kv->cap)
            return tflm__err(TFLM_EINVAL, "transformer: position %d out of range 0..%d",
                             pos_idx[i], kv->cap - 1);
    if (n == 0) return TFLM_OK;

    /* activations of this call, one allocation:
     * x, a, q, tmp [n, D]; h1, h2 [n, 4D]; attention scratch per thread */
    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    size_t nd = (size_t)n * D, steps = (size_t)start + n;
    float *buf = malloc((12 * nd + (size_t)threads * steps) * sizeof(float));
    if (!buf) return tflm__err(TFLM_ENOMEM, "transformer: out of memory (%d steps)", n);
    float *x = buf, *a = x + nd, *q = a + nd, *tmp = q + nd;
    float *h1 = tmp + nd, *h2 = h1 + 4 * nd, *scratch = h2 + 4 * nd;

    /* E = W_in X' + b_in + pos[o(step)] */
    ops->matmul(x, xin, fw->in_w, fw->in_b, n, cin, D);
    for (int i = 0; i < n; i++)
        add_inplace(x + (size_t)i * D, fw->pos + (size_t)pos_idx[i] * D, D);

    for (int l = 0; l < dm->nblk; l++) {
        const BlockWeights *bw = &fw->blk[l];
        float *kc = kv->k + (size_t)l * kv->cap * D;     /* [cap, D] */
        float *vc = kv->v + (size_t)l * kv->cap * D;
        size_t DD = (size_t)D * D;

        /* x += out(attn(LN1(x))); qkv rows are [q; k; v], so each third of
         * the weight is its own matmul and k, v land in the cache directly */
        ops->layernorm(a, x, bw->ln1_w, bw->ln1_b, n, D, dm->eps);
        ops->matmul(q, a, bw->qkv_w, bw->qkv_b, n, D, D);
        ops->matmul(kc + (size_t)start * D, a, bw->qkv_w + DD, bw->qkv_b + D, n, D, D);
        ops->matmul(vc + (size_t)start * D, a, bw->qkv_w + 2 * DD, bw->qkv_b + 2 * D, n, D, D);
        ops->attention(a, q, kc, vc, start, n, D, H, scratch);
        ops->matmul(tmp, a, bw->out_w, bw->out_b, n, D, D);
        add_inplace(x, tmp, nd);

        /* x += proj(gelu(fc(LN2(x)))) */
        ops->layernorm(a, x, bw->ln2_w, bw->ln2_b, n, D, dm->eps);
        ops->matmul(h1, a, bw->fc_w, bw->fc_b, n, D, 4 * D);
        ops->gelu(h2, h1, 4 * (int)nd);
        ops->matmul(tmp, h2, bw->proj_w, bw->proj_b, n, 4 * D, D);
        add_inplace(x, tmp, nd);
    }
    ops->layernorm(G, x, fw->lnf_w, fw->lnf_b, n, D, dm->eps);

    free(buf);
    kv->len = start + n;
    return TFLM_OK;
}
