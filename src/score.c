/* score.c: the forward pass over a text (DESIGN §2.5, §3): consecutive
 * windows of T tokens (the last left-padded), every layer's log-densities,
 * R_t, the ELBO and bits per character; and the encode trace of the first
 * window. Windows run in parallel; sums are taken in window order so the
 * result does not depend on the thread count. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>
#include "trace.h"

typedef struct {
    double R, lp[MAX_FLOWS], ln[MAX_FLOWS];
    long long ntok;
} WinResult;

/* tokens of window wi: left-padded with <pad> when short */
static void window_tokens(const int *ids, int n, int T, int wi, int *tok) {
    int a = wi * T, len = n - a < T ? n - a : T, pad = T - len;
    for (int t = 0; t < pad; t++) tok[t] = 0;
    memcpy(tok + pad, ids + a, len * sizeof(int));
}

/* forward through every flow of a window already in w->h[0] */
tflm_status window_forward(Work *w, const Ops *ops) {
    const Config *cf = &w->m->cfg;
    for (int l = 1; l <= cf->L; l++) {
        kv_reset(&w->kv[l - 1]);
        tflm_status st = flow_forward_steps(w, ops, l, 0, cf->N);
        if (st != TFLM_OK) return st;
    }
    return TFLM_OK;
}

static tflm_status score_window(Work *w, const Ops *ops, const int *tok, int mean, uint64_t seed,
                                uint64_t stream, WinResult *r) {
    const Config *cf = &w->m->cfg;
    memset(r, 0, sizeof *r);
    for (int t = 0; t < cf->T; t++) r->ntok += tok[t] != 0;
    if (cf->is_ar) {
        kv_reset(&w->kv[0]);
        tflm_status st = ar_steps(w, ops, tok, 0, cf->T);
        if (st != TFLM_OK) return st;
        for (int t = 0; t < cf->T; t++)
            if (tok[t]) r->lp[0] += ar_logsoftmax(w->HO + (size_t)t * cf->V, cf->V, tok[t], 1.0);
        return TFLM_OK;
    }
    work_set_tokens(w, tok);
    work_encode(w, tok, mean, seed, stream, &r->R);
    tflm_status st = window_forward(w, ops);
    if (st != TFLM_OK) return st;
    for (int l = 1; l <= cf->L; l++)
        for (int p = 0; p < cf->N; p++) {
            r->lp[l - 1] += w->lp_pos[l - 1][p];
            r->ln[l - 1] += w->ln_pos[l - 1][p];
        }
    return TFLM_OK;
}

static void sum_results(const Config *cf, const WinResult *res, int nres, int samples,
                        tflm_score *out) {
    int L = cf->is_ar ? 0 : cf->L;
    double R = 0, lp[MAX_FLOWS] = {0}, ln[MAX_FLOWS] = {0}, arll = 0;
    long long ntok = 0;
    for (int i = 0; i < nres; i++) {
        R += res[i].R;
        arll += res[i].lp[0];
        for (int l = 0; l < L; l++) {
            lp[l] += res[i].lp[l];
            ln[l] += res[i].ln[l];
        }
        ntok += res[i].ntok;
    }
    memset(out, 0, sizeof *out);
    out->n_flows = L;
    out->n_tokens = ntok / samples;
    out->R = R / samples;
    double elbo = out->R;
    if (cf->is_ar) {
        elbo = arll / samples;
    } else {
        for (int l = 0; l < L; l++) {
            out->lp[l] = lp[l] / samples;
            out->ln[l] = ln[l] / samples;
            out->logdet[l] = out->lp[l] - out->ln[l];
            elbo += out->lp[l];
            if (l < L - 1) elbo -= out->ln[l];
        }
    }
    out->elbo = elbo;
    out->bpc = out->n_tokens > 0 ? -elbo / (out->n_tokens * M_LN2) : 0;
    /* the importance-weighted bound: per window, log of the mean over the
     * samples of exp(ELBO of that sample), summed over windows (results are
     * stored sample-major: res[s * nwin + wi]) */
    int nwin = nres / samples;
    double iw = 0;
    for (int wi = 0; wi < nwin; wi++) {
        double mx = -INFINITY, acc = 0;   /* running log-sum-exp */
        for (int s = 0; s < samples; s++) {
            const WinResult *r = &res[(size_t)s * nwin + wi];
            double v = r->R;
            if (cf->is_ar) v = r->lp[0];
            else
                for (int l = 0; l < L; l++) v += r->lp[l] - (l < L - 1 ? r->ln[l] : 0);
            if (v > mx) { acc = acc * exp(mx - v) + 1; mx = v; }
            else acc += exp(v - mx);
        }
        iw += mx + log(acc / samples);
    }
    out->iw_elbo = iw;
    out->iw_bpc = out->n_tokens > 0 ? -iw / (out->n_tokens * M_LN2) : 0;
}

tflm_status tflm_score_ids(tflm_ctx *ctx, const int *ids, int n, const tflm_score_params *p,
                           tflm_score *out) {
    if (!ctx || !ids || !out) return tflm__err(TFLM_EINVAL, "score: missing argument");
    if (n <= 0) return tflm__err(TFLM_EINVAL, "score: the text is empty");
    tflm_score_params dp;
    tflm_score_params_default(&dp);
    if (!p) p = &dp;
    const Config *cf = &ctx->m.cfg;
    int T = cf->T, nwin = (n + T - 1) / T;
    int samples = (p->mean || cf->is_ar) ? 1 : (p->samples > 0 ? p->samples : 1);
    int njobs = nwin * samples, nth = ctx->threads > 0 ? ctx->threads : 1;
    if (nth > njobs) nth = njobs;
    WinResult *res = calloc(njobs, sizeof *res);
    Work *wk = calloc(nth, sizeof *wk);
    int **tok = calloc(nth, sizeof *tok);
    tflm_status st = TFLM_OK;
    if (!res || !wk || !tok) { st = tflm__err(TFLM_ENOMEM, "score: out of memory"); goto done; }
    for (int i = 0; i < nth; i++) {
        if ((st = work_init(&wk[i], &ctx->m)) != TFLM_OK) goto done;
        if (!(tok[i] = malloc(T * sizeof(int)))) { st = tflm__err(TFLM_ENOMEM, "score: out of memory"); goto done; }
    }
    /* chunks between progress reports */
    int chunk = nth * 8;
    for (int j0 = 0; j0 < njobs && st == TFLM_OK; j0 += chunk) {
        int j1 = j0 + chunk < njobs ? j0 + chunk : njobs;
        tflm_status sts[256];
        for (int i = 0; i < nth; i++) sts[i] = TFLM_OK;
        char errs[256][160];
        #pragma omp parallel for num_threads(nth) schedule(static, 1)
        for (int j = j0; j < j1; j++) {
            int th = omp_get_thread_num();
            if (sts[th] != TFLM_OK) continue;
            int s = j / nwin, wi = j % nwin;
            window_tokens(ids, n, T, wi, tok[th]);
            /* eps stream: one per (sample, window) */
            tflm_status r = score_window(&wk[th], ctx->ops, tok[th], p->mean, p->seed,
                                         (uint64_t)s * 1000003u + wi, &res[j]);
            if (r != TFLM_OK) {
                sts[th] = r;
                snprintf(errs[th], sizeof errs[th], "%s", tflm_last_error());
            }
        }
        for (int i = 0; i < nth; i++)
            if (sts[i] != TFLM_OK) { st = tflm__err(sts[i], "%s", errs[i]); break; }
        if (st == TFLM_OK && ctx->p.progress &&
            ctx->p.progress(ctx->p.user, "score", (double)j1 / njobs))
            st = tflm__err(TFLM_ECANCELLED, "score: cancelled");
    }
    if (st == TFLM_OK) {
        sum_results(cf, res, njobs, samples, out);
        out->n_windows = nwin;
        if (!isfinite(out->elbo)) st = tflm__err(TFLM_ENUMERIC, "score: the ELBO is not finite");
    }
done:
    if (wk) for (int i = 0; i < nth; i++) work_free(&wk[i]);
    if (tok) for (int i = 0; i < nth; i++) free(tok[i]);
    free(wk);
    free(tok);
    free(res);
    return st;
}

tflm_status tflm_encode_ids(tflm_ctx *ctx, const int *ids, int n, const tflm_score_params *p,
                            tflm_trace **first_window, tflm_score *totals) {
    if (!ctx || !ids || !first_window) return tflm__err(TFLM_EINVAL, "encode: missing argument");
    if (n <= 0) return tflm__err(TFLM_EINVAL, "encode: the text is empty");
    tflm_score_params dp;
    tflm_score_params_default(&dp);
    if (!p) p = &dp;
    *first_window = NULL;
    const Config *cf = &ctx->m.cfg;
    if (totals) {
        tflm_status st = tflm_score_ids(ctx, ids, n, p, totals);
        if (st != TFLM_OK) return st;
    }
    Work w;
    tflm_status st = work_init(&w, &ctx->m);
    if (st != TFLM_OK) return st;
    int *tok = malloc(cf->T * sizeof(int));
    tflm_trace *tr = trace_alloc(cf, cf->N);
    WinResult r;
    if (!tok || !tr) { st = tflm__err(TFLM_ENOMEM, "encode: out of memory"); goto done; }
    window_tokens(ids, n, cf->T, 0, tok);
    st = score_window(&w, ctx->ops, tok, p->mean, p->seed, 0, &r);
    if (st != TFLM_OK) goto done;
    for (tr->n_pad = 0; tr->n_pad < cf->T && tok[tr->n_pad] == 0; tr->n_pad++) {}
    if (cf->is_ar) {
        for (int t = 0; t < cf->T; t++) {
            const float *lg = w.HO + (size_t)t * cf->V;
            double H = 0;
            for (int k = 0; k < cf->V; k++) {
                double lpk = ar_logsoftmax(lg, cf->V, k, 1.0);
                H -= exp(lpk) * lpk;
            }
            tr->tokens[t] = tr->dec[t] = tok[t];
            tr->prob[t] = (float)exp(ar_logsoftmax(lg, cf->V, tok[t], 1.0));
            tr->entropy[t] = (float)H;
            memcpy(tr->state + (size_t)t * cf->d, ctx->m.w.cb_mean + (size_t)tok[t] * cf->d,
                   cf->d * sizeof(float));
        }
    } else {
        for (int l = 0; l <= cf->L; l++)
            for (int pp = 0; pp < cf->N; pp++)
                trace_set(&ctx->m, tr, l, pp, w.h[l] + (size_t)pp * cf->c,
                          l > 0 ? w.lp_pos[l - 1][pp] - w.ln_pos[l - 1][pp] : 0);
        /* the input tokens, not the decoding of a sampled z, are the text */
        memcpy(tr->tokens, tok, cf->T * sizeof(int));
    }
    *first_window = tr;
    tr = NULL;
done:
    tflm_trace_free(tr);
    free(tok);
    work_free(&w);
    return st;
}
