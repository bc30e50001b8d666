/* edit.c: editing a text at a chosen layer (DESIGN §3 "Editing"). The text
 * (one window, left-padded) is mean-encoded and run forward; the span's
 * state at layer l is changed (noise, resample, or replaced by the state of
 * the text with the span rewritten); then layers l..1 are inverted for every
 * step from the span's block onward (global) or over the span's blocks only
 * (local), the earlier positions feeding the KV caches unchanged. Text
 * before the span's block is untouched by construction. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "trace.h"

void tflm_edit_params_default(tflm_edit_params *p) {
    memset(p, 0, sizeof *p);
    p->layer = 1;
    p->op = TFLM_EDIT_NOISE;
    p->strength = 0.5;
    p->prior_temp = 1.0;
    p->seed = 1;
}

static tflm_trace *window_trace(const Work *w, int npad) {
    const Model *m = w->m;
    const Config *cf = &m->cfg;
    tflm_trace *tr = trace_alloc(cf, cf->N);
    if (!tr) return NULL;
    for (int l = 0; l <= cf->L; l++)
        for (int q = 0; q < cf->N; q++)
            trace_set(m, tr, l, q, w->h[l] + (size_t)q * cf->c,
                      l > 0 ? w->lp_pos[l - 1][q] - w->ln_pos[l - 1][q] : 0);
    tr->n_pad = npad;
    tr->n_ctx = cf->T - npad;
    return tr;
}

tflm_status tflm_edit(tflm_ctx *ctx, const char *text, const tflm_edit_params *p,
                      tflm_trace **before, tflm_trace **after) {
    if (!ctx || !text || !p) return tflm__err(TFLM_EINVAL, "edit: missing argument");
    const Model *m = &ctx->m;
    const Config *cf = &m->cfg;
    if (before) *before = NULL;
    if (after) *after = NULL;
    if (cf->is_ar) return tflm__err(TFLM_EUNSUPPORTED, "edit needs a flow model; this is an ar model");
    int *ids = NULL, n = 0, *rep = NULL, nrep = 0;
    tflm_status st = tflm_tokenize(ctx, text, strlen(text), &ids, &n, NULL);
    if (st != TFLM_OK) return st;
    int T = cf->T, N = cf->N, P = cf->P, c = cf->c, L = cf->L;
    Work w, w2;
    memset(&w, 0, sizeof w);
    memset(&w2, 0, sizeof w2);
    int *tok = NULL;
    tflm_trace *tb = NULL, *ta = NULL;
    if (n == 0) { st = tflm__err(TFLM_EINVAL, "edit: the text is empty"); goto done; }
    if (n > T) {
        st = tflm__err(TFLM_EINVAL, "edit: the text has %d tokens; a window holds %d", n, T);
        goto done;
    }
    if (p->layer < 1 || p->layer > L) {
        st = tflm__err(TFLM_EINVAL, "edit: layer %d out of range 1..%d", p->layer, L);
        goto done;
    }
    if (p->span_a < 0 || p->span_b > n || p->span_a >= p->span_b) {
        st = tflm__err(TFLM_EINVAL, "edit: span %d:%d is not inside the text's %d tokens",
                       p->span_a, p->span_b, n);
        goto done;
    }
    int npad = T - n;
    tok = malloc(T * sizeof(int));
    if (!tok) { st = tflm__err(TFLM_ENOMEM, "edit: out of memory"); goto done; }
    for (int t = 0; t < npad; t++) tok[t] = 0;
    memcpy(tok + npad, ids, n * sizeof(int));
    if ((st = work_init(&w, m)) != TFLM_OK) goto done;
    work_set_tokens(&w, tok);
    work_encode(&w, tok, 1, 0, 0, NULL);
    if ((st = window_forward(&w, ctx->ops)) != TFLM_OK) goto done;
    if (before && !(tb = window_trace(&w, npad))) { st = tflm__err(TFLM_ENOMEM, "edit: out of memory"); goto done; }

    int l0 = p->layer;
    int pa = (npad + p->span_a) / P, pb = (npad + p->span_b + P - 1) / P;
    int Bb = cf->B > 0 ? cf->B : N;
    int S = (pa / Bb) * Bb;
    int E = p->local ? ((pb - 1) / Bb + 1) * Bb : N;
    if (E > N) E = N;

    /* change the span's state at layer l0 */
    float *h = w.h[l0];
    if (p->op == TFLM_EDIT_NOISE || p->op == TFLM_EDIT_RESAMPLE) {
        for (int q = pa; q < pb; q++)
            for (int i = 0; i < c; i++) {
                double e = rng_normal(rng_key(p->seed, RNG_EDIT, l0, q, i));
                float *x = &h[(size_t)q * c + i];
                *x = p->op == TFLM_EDIT_NOISE ? *x + (float)(p->strength * e) : (float)(p->prior_temp * e);
            }
    } else if (p->op == TFLM_EDIT_REPLACE) {
        if (!p->replace) { st = tflm__err(TFLM_EINVAL, "edit: replace needs a text"); goto done; }
        if ((st = tflm_tokenize(ctx, p->replace, strlen(p->replace), &rep, &nrep, NULL)) != TFLM_OK) goto done;
        int *tok2 = malloc(T * sizeof(int));
        if (!tok2) { st = tflm__err(TFLM_ENOMEM, "edit: out of memory"); goto done; }
        memcpy(tok2, tok, T * sizeof(int));
        for (int i = 0; i < p->span_b - p->span_a && i < nrep; i++) tok2[npad + p->span_a + i] = rep[i];
        if ((st = work_init(&w2, m)) == TFLM_OK) {
            work_set_tokens(&w2, tok2);
            work_encode(&w2, tok2, 1, 0, 0, NULL);
            st = window_forward(&w2, ctx->ops);
        }
        free(tok2);
        if (st != TFLM_OK) goto done;
        memcpy(h + (size_t)pa * c, w2.h[l0] + (size_t)pa * c, (size_t)(pb - pa) * c * sizeof(float));
    } else {
        st = tflm__err(TFLM_EINVAL, "edit: unknown operation %d", (int)p->op);
        goto done;
    }

    /* re-invert layers l0..1 from the span's block on; the earlier steps
     * only refill the KV caches, so their states (and log-densities) stay
     * exactly those of the forward pass */
    for (int l = l0; l >= 1 && st == TFLM_OK; l--) {
        kv_reset(&w.kv[l - 1]);
        st = flow_cache_steps(&w, ctx->ops, l, 0, S);
        if (st == TFLM_OK) st = flow_inverse_steps(&w, ctx->ops, l, S, E);
    }
    if (st != TFLM_OK) goto done;
    if (after && !(ta = window_trace(&w, npad))) { st = tflm__err(TFLM_ENOMEM, "edit: out of memory"); goto done; }
    if (before) { *before = tb; tb = NULL; }
    if (after) { *after = ta; ta = NULL; }
done:
    tflm_trace_free(tb);
    tflm_trace_free(ta);
    work_free(&w);
    work_free(&w2);
    free(tok);
    free(ids);
    free(rep);
    return st;
}
