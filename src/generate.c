/* generate.c: generation (DESIGN §3). Flow models: the context is
 * left-padded to a flip-block boundary, mean-encoded and run forward through
 * every layer (filling each layer's KV cache); then, block by block, keyed
 * prior noise u is drawn and inverted through layers L..1, extending the
 * caches, and h^(0) is decoded. Every layer is causal across blocks, so the
 * context never changes and the result is exact. When the window fills it
 * slides by whole blocks and the caches are rebuilt. The ar baseline
 * samples token by token. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "trace.h"

void tflm_gen_params_default(tflm_gen_params *p) {
    memset(p, 0, sizeof *p);
    p->seed = 1;
    p->prior_temp = 1.0;
    p->decode = TFLM_DECODE_ARGMAX;
    p->temp = 1.0;
    p->n_new = 128;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Sample from softmax(logits / temp) with a keyed uniform. */
static int sample_logits(const double *lg, int V, double temp, uint64_t key, float *prob) {
    double mx = -INFINITY, s = 0;
    for (int k = 0; k < V; k++) if (lg[k] / temp > mx) mx = lg[k] / temp;
    for (int k = 0; k < V; k++) s += exp(lg[k] / temp - mx);
    double u = rng_uniform(key) * s, acc = 0;
    int pick = V - 1;
    for (int k = 0; k < V; k++) {
        acc += exp(lg[k] / temp - mx);
        if (u < acc) { pick = k; break; }
    }
    if (prob) *prob = (float)exp(lg[pick] / temp - mx - log(s));
    return pick;
}

/* Keep only the first n_tok tokens (and the positions holding them). */
static void trace_truncate(tflm_trace *tr, int n_tok) {
    int L = tr->n_flows, P = tr->patch, c = tr->channels;
    int n_pos = (n_tok + P - 1) / P;
    if (n_tok >= tr->n_tok) return;
    for (int l = 0; l <= L; l++) {
        memmove(tr->dec + (size_t)l * n_tok, tr->dec + (size_t)l * tr->n_tok, n_tok * sizeof(int));
        memmove(tr->prob + (size_t)l * n_tok, tr->prob + (size_t)l * tr->n_tok, n_tok * sizeof(float));
        memmove(tr->entropy + (size_t)l * n_tok, tr->entropy + (size_t)l * tr->n_tok,
                n_tok * sizeof(float));
        memmove(tr->state + (size_t)l * n_pos * c, tr->state + (size_t)l * tr->n_pos * c,
                (size_t)n_pos * c * sizeof(float));
        if (l > 0)
            memmove(tr->logdet + (size_t)(l - 1) * n_pos, tr->logdet + (size_t)(l - 1) * tr->n_pos,
                    n_pos * sizeof(float));
    }
    tr->n_tok = n_tok;
    tr->n_pos = n_pos;
}

/* ---- flow models ---------------------------------------------------------------- */

/* positions of the next block starting at window position pos */
static int block_len(int pos, int Bb, int N) {
    int end = (pos / Bb + 1) * Bb;
    if (end > N) end = N;
    return end - pos;
}

static tflm_status flow_generate(tflm_ctx *ctx, const int *ctx_ids, int n_ctx,
                                 const tflm_gen_params *p, tflm_trace **out) {
    const Model *m = &ctx->m;
    const Config *cf = &m->cfg;
    int N = cf->N, P = cf->P, c = cf->c, L = cf->L, T = cf->T;
    int Bb = cf->B > 0 ? cf->B : N;
    if (cf->B == 0 && n_ctx > 0)
        return tflm__err(TFLM_EUNSUPPORTED, "this model has flip_block 0 and cannot take a context "
                         "exactly; generate without one, or edit a text instead");
    if (cf->B == 0 && p->n_new > T)
        return tflm__err(TFLM_EUNSUPPORTED, "a model with flip_block 0 generates at most one window "
                         "(%d tokens)", T);
    if (n_ctx > 0 && N <= Bb)
        return tflm__err(TFLM_EUNSUPPORTED, "the window holds a single flip block: no room for a context");
    /* context: the tail that leaves at least one block free, padded to a block boundary */
    int kept = n_ctx;
    if (kept > (N - Bb) * P) kept = (N - Bb) * P;
    int blkTok = Bb * P;
    int npad = (blkTok - kept % blkTok) % blkTok;
    int Np = (npad + kept) / P;
    int new_pos = (p->n_new + P - 1) / P;
    int slide = ((N / 2) / Bb) * Bb;
    if (slide < Bb) slide = Bb;

    /* count the positions the loop will produce (blocks may overshoot n_new) */
    int total = Np, pos = Np, made = 0;
    while (made < new_pos) {
        if (pos >= N) pos -= slide;
        int bl = block_len(pos, Bb, N);
        pos += bl;
        made += bl;
        total += bl;
    }

    Work w;
    tflm_status st = work_init(&w, m);
    if (st != TFLM_OK) return st;
    int *tok = calloc(T, sizeof(int));
    tflm_trace *tr = trace_alloc(cf, total);
    if (!tok || !tr) { st = tflm__err(TFLM_ENOMEM, "generate: out of memory"); goto done; }
    tr->n_pad = npad;
    tr->n_ctx = kept;
    for (int t = 0; t < T; t++) tok[t] = 1;   /* generated tokens are real */
    for (int t = 0; t < npad; t++) tok[t] = 0;
    memcpy(tok + npad, ctx_ids + (n_ctx - kept), kept * sizeof(int));
    work_set_tokens(&w, tok);
    work_encode(&w, tok, 1, 0, 0, NULL);
    double t0 = now_ms();
    for (int l = 1; l <= L && st == TFLM_OK; l++) {
        kv_reset(&w.kv[l - 1]);
        st = flow_forward_steps(&w, ctx->ops, l, 0, Np);
    }
    if (st != TFLM_OK) goto done;
    for (int l = 0; l <= L; l++)
        for (int q = 0; q < Np; q++)
            trace_set(m, tr, l, q, w.h[l] + (size_t)q * c,
                      l > 0 ? w.lp_pos[l - 1][q] - w.ln_pos[l - 1][q] : 0);
    for (int t = 0; t < npad + kept; t++) tr->tokens[t] = tok[t];
    for (int t = 0; t < npad + kept; t++) tr->dec[t] = tok[t];

    int base = 0;   /* absolute (trace) position of window position 0 */
    pos = Np;
    made = 0;
    double lg[1024];
    while (made < new_pos) {
        if (pos >= N) {
            /* slide by whole blocks: keep the generated latents, rebuild caches */
            int keep = N - slide;
            memmove(w.h[0], w.h[0] + (size_t)slide * c, (size_t)keep * c * sizeof(float));
            memmove(tok, tok + slide * P, (size_t)keep * P * sizeof(int));
            for (int t = keep * P; t < T; t++) tok[t] = 1;
            work_set_tokens(&w, tok);
            base += slide;
            pos = keep;
            for (int l = 1; l <= L && st == TFLM_OK; l++) {
                kv_reset(&w.kv[l - 1]);
                st = flow_forward_steps(&w, ctx->ops, l, 0, keep);
            }
            if (st != TFLM_OK) goto done;
        }
        int bl = block_len(pos, Bb, N);
        for (int q = pos; q < pos + bl; q++)
            for (int i = 0; i < c; i++)
                w.h[L][(size_t)q * c + i] =
                    (float)(p->prior_temp * rng_normal(rng_key(p->seed, RNG_PRIOR, base + q, i, 0)));
        for (int l = L; l >= 1 && st == TFLM_OK; l--)
            st = flow_inverse_steps(&w, ctx->ops, l, pos, pos + bl);
        if (st != TFLM_OK) goto done;
        for (int q = pos; q < pos + bl; q++) {
            int a = base + q;
            for (int l = 0; l <= L; l++)
                trace_set(m, tr, l, a, w.h[l] + (size_t)q * c,
                          l > 0 ? w.lp_pos[l - 1][q] - w.ln_pos[l - 1][q] : 0);
            for (int j = 0; j < P; j++) {
                int t = a * P + j;
                if (p->decode == TFLM_DECODE_SAMPLE) {
                    codebook_logits(m, w.h[0] + (size_t)q * c + j * cf->d, lg);
                    int k = sample_logits(lg, cf->V, p->temp > 0 ? p->temp : 1.0,
                                          rng_key(p->seed, RNG_DECODE, t, 0, 0), &tr->prob[t]);
                    tr->dec[t] = tr->tokens[t] = k;
                }
                tok[q * P + j] = tr->tokens[t] ? tr->tokens[t] : 1;
            }
        }
        pos += bl;
        made += bl;
        if (p->on_block && p->on_block(p->user, tr, (base + pos) * P < tr->n_tok ? (base + pos) * P : tr->n_tok)) {
            st = tflm__err(TFLM_ECANCELLED, "generate: cancelled");
            goto done;
        }
        if (ctx->p.progress && ctx->p.progress(ctx->p.user, "generate", (double)made / new_pos)) {
            st = tflm__err(TFLM_ECANCELLED, "generate: cancelled");
            goto done;
        }
    }
    tr->ms_per_layer = (now_ms() - t0) / L;
    trace_truncate(tr, npad + kept + p->n_new);
    *out = tr;
    tr = NULL;
done:
    tflm_trace_free(tr);
    free(tok);
    work_free(&w);
    return st;
}

/* ---- the ar baseline ------------------------------------------------------------ */

static void ar_record(const Model *m, tflm_trace *tr, int t, const float *logits, int k) {
    int V = m->cfg.V;
    double H = 0;
    for (int i = 0; i < V; i++) {
        double lp = ar_logsoftmax(logits, V, i, 1.0);
        H -= exp(lp) * lp;
    }
    tr->dec[t] = tr->tokens[t] = k;
    tr->prob[t] = (float)exp(ar_logsoftmax(logits, V, k, 1.0));
    tr->entropy[t] = (float)H;
    memcpy(tr->state + (size_t)t * m->cfg.d, m->w.cb_mean + (size_t)k * m->cfg.d,
           m->cfg.d * sizeof(float));
}

static tflm_status ar_generate(tflm_ctx *ctx, const int *ctx_ids, int n_ctx,
                               const tflm_gen_params *p, tflm_trace **out) {
    const Model *m = &ctx->m;
    const Config *cf = &m->cfg;
    int T = cf->T, V = cf->V;
    int kept = n_ctx < T - 1 ? n_ctx : T / 2;
    Work w;
    tflm_status st = work_init(&w, m);
    if (st != TFLM_OK) return st;
    int *win = calloc(T + 1, sizeof(int));
    tflm_trace *tr = trace_alloc(cf, kept + p->n_new);
    double lg[1024];
    if (!win || !tr) { st = tflm__err(TFLM_ENOMEM, "generate: out of memory"); goto done; }
    tr->n_ctx = kept;
    memcpy(win, ctx_ids + (n_ctx - kept), kept * sizeof(int));
    int len = kept;
    double t0 = now_ms();
    kv_reset(&w.kv[0]);
    /* steps 0..len: logits of step s predict token s */
    st = ar_steps(&w, ctx->ops, win, 0, len + 1);
    if (st != TFLM_OK) goto done;
    for (int t = 0; t < kept; t++) ar_record(m, tr, t, w.HO + (size_t)t * V, win[t]);
    const float *cur = w.HO + (size_t)len * V;
    for (int i = 0; i < p->n_new; i++) {
        int t = kept + i, k;
        if (p->decode == TFLM_DECODE_SAMPLE) {
            for (int j = 0; j < V; j++) lg[j] = cur[j];
            k = sample_logits(lg, V, p->temp > 0 ? p->temp : 1.0,
                              rng_key(p->seed, RNG_DECODE, t, 0, 0), NULL);
        } else {
            k = 0;
            for (int j = 1; j < V; j++) if (cur[j] > cur[k]) k = j;
        }
        ar_record(m, tr, t, cur, k);
        if (len + 1 >= T) {   /* slide: keep the last half of the window */
            int keep = T / 2;
            memmove(win, win + len - keep, keep * sizeof(int));
            len = keep;
            kv_reset(&w.kv[0]);
            /* steps 0..len read sos and win[0..len-1] */
            if ((st = ar_steps(&w, ctx->ops, win, 0, len + 1)) != TFLM_OK) goto done;
        }
        win[len++] = k;
        if ((st = ar_steps(&w, ctx->ops, win, len, len + 1)) != TFLM_OK) goto done;
        cur = w.HO;
        if (p->on_block && (i & 15) == 15 && p->on_block(p->user, tr, t + 1)) {
            st = tflm__err(TFLM_ECANCELLED, "generate: cancelled");
            goto done;
        }
        if (ctx->p.progress && (i & 15) == 15 &&
            ctx->p.progress(ctx->p.user, "generate", (double)(i + 1) / p->n_new)) {
            st = tflm__err(TFLM_ECANCELLED, "generate: cancelled");
            goto done;
        }
    }
    tr->ms_per_layer = now_ms() - t0;
    *out = tr;
    tr = NULL;
done:
    tflm_trace_free(tr);
    free(win);
    work_free(&w);
    return st;
}

tflm_status tflm_generate_ids(tflm_ctx *ctx, const int *ctx_ids, int n_ctx,
                              const tflm_gen_params *p, tflm_trace **out) {
    if (!ctx || !out || (n_ctx > 0 && !ctx_ids)) return tflm__err(TFLM_EINVAL, "generate: missing argument");
    *out = NULL;
    tflm_gen_params dp;
    tflm_gen_params_default(&dp);
    if (!p) p = &dp;
    if (p->n_new < 0 || p->n_new > 1000000) return tflm__err(TFLM_EINVAL, "generate: n_new %d out of range", p->n_new);
    if (!(p->prior_temp >= 0) || p->prior_temp > 100)
        return tflm__err(TFLM_EINVAL, "generate: prior temperature %g out of range", p->prior_temp);
    for (int i = 0; i < n_ctx; i++)
        if (ctx_ids[i] < 0 || ctx_ids[i] >= ctx->m.cfg.V)
            return tflm__err(TFLM_EINVAL, "generate: token id %d out of range", ctx_ids[i]);
    return ctx->m.cfg.is_ar ? ar_generate(ctx, ctx_ids, n_ctx, p, out)
                            : flow_generate(ctx, ctx_ids, n_ctx, p, out);
}

tflm_status tflm_generate(tflm_ctx *ctx, const char *context, const tflm_gen_params *p,
                          tflm_trace **out) {
    int *ids = NULL, n = 0;
    if (context && *context) {
        tflm_status st = tflm_tokenize(ctx, context, strlen(context), &ids, &n, NULL);
        if (st != TFLM_OK) return st;
    }
    tflm_status st = tflm_generate_ids(ctx, ids, n, p, out);
    free(ids);
    return st;
}
