/* trace.c: per-layer traces of a window or a generation: every layer's state
 * at every position, its decoded tokens, their probability and entropy, and
 * each flow's log-determinant per position (DESIGN §3 "Trace"). */
#include <stdlib.h>
#include <string.h>
#include "trace.h"

tflm_trace *trace_alloc(const Config *cf, int n_pos) {
    tflm_trace *tr = calloc(1, sizeof *tr);
    if (!tr) return NULL;
    int L = cf->is_ar ? 0 : cf->L, P = cf->P, c = cf->c;
    tr->n_flows = L;
    tr->n_pos = n_pos;
    tr->n_tok = n_pos * P;
    tr->channels = c;
    tr->patch = P;
    size_t nt = (size_t)(L + 1) * tr->n_tok;
    tr->tokens = calloc(tr->n_tok > 0 ? tr->n_tok : 1, sizeof(int));
    tr->dec = calloc(nt ? nt : 1, sizeof(int));
    tr->prob = calloc(nt ? nt : 1, sizeof(float));
    tr->entropy = calloc(nt ? nt : 1, sizeof(float));
    tr->state = calloc((size_t)(L + 1) * n_pos * c + 1, sizeof(float));
    tr->logdet = calloc((size_t)L * n_pos + 1, sizeof(float));
    tr->direction = calloc(L + 1, sizeof(int));
    if (!tr->tokens || !tr->dec || !tr->prob || !tr->entropy || !tr->state || !tr->logdet ||
        !tr->direction) {
        tflm_trace_free(tr);
        return NULL;
    }
    for (int l = 1; l <= L; l++) tr->direction[l - 1] = cf->flow[l - 1].dir;
    return tr;
}

void tflm_trace_free(tflm_trace *tr) {
    if (!tr) return;
    free(tr->tokens);
    free(tr->dec);
    free(tr->prob);
    free(tr->entropy);
    free(tr->state);
    free(tr->logdet);
    free(tr->direction);
    free(tr);
}

void trace_set(const Model *m, tflm_trace *tr, int layer, int pos, const float *h, double logdet) {
    const Config *cf = &m->cfg;
    int c = cf->c, d = cf->d, P = cf->P;
    if (pos < 0 || pos >= tr->n_pos) return;
    memcpy(tr->state + ((size_t)layer * tr->n_pos + pos) * c, h, c * sizeof(float));
    float z[512];
    state_unmix(cf, layer, h, z);
    for (int j = 0; j < P; j++) {
        size_t t = (size_t)layer * tr->n_tok + (size_t)pos * P + j;
        tr->dec[t] = codebook_decode(m, z + j * d, &tr->prob[t], &tr->entropy[t]);
        if (layer == 0) tr->tokens[pos * P + j] = tr->dec[t];
    }
    if (layer > 0) tr->logdet[(size_t)(layer - 1) * tr->n_pos + pos] = (float)logdet;
}

char *tflm_trace_text(const tflm_ctx *ctx, const tflm_trace *tr, int layer, int from) {
    if (!ctx || !tr || layer < 0 || layer > tr->n_flows) return NULL;
    if (from < 0) from = 0;
    if (from > tr->n_tok) from = tr->n_tok;
    return tflm_detokenize(ctx, tr->dec + (size_t)layer * tr->n_tok + from, tr->n_tok - from);
}
