/* flow.h: the window workspace and flow-layer passes shared by scoring,
 * generation and editing (src/flow.c). */
#ifndef TFLM_FLOW_H
#define TFLM_FLOW_H
#include "internal.h"

typedef struct {
    const Model *m;
    KVCache kv[MAX_FLOWS];            /* per flow l at l-1 */
    float *h[MAX_FLOWS + 1];          /* [N, c] state h^(l), window order, as stored */
    unsigned char *own[MAX_FLOWS + 1];/* [N, c] channel owned by a real token, stored order */
    double *lp_pos[MAX_FLOWS];        /* [N] log p of flow l at a position (owned channels) */
    double *ln_pos[MAX_FLOWS];        /* [N] log N of flow l's output at a position */
    float *xin;                       /* [N, cin] transformer inputs */
    float *G;                         /* [N, D] head inputs */
    float *HO;                        /* [N, hout] head outputs */
    int *pidx;                        /* [N] window positions of steps */
} Work;

tflm_status work_init(Work *w, const Model *m);
void work_free(Work *w);
/* ownership flags of every layer from the window's T tokens */
void work_set_tokens(Work *w, const int *tok);
/* h^(0) from the window's T tokens: mean or keyed eps (seed, stream);
 * *R (may be NULL) = sum of R_t over real tokens */
void work_encode(Work *w, const int *tok, int mean, uint64_t seed, uint64_t stream, double *R);

/* window position visited at step n */
int flow_visit(int dir, int B, int N, int n);
/* flow l forward over steps [s0, s1): reads h[l-1], writes h[l] (kv len must be s0) */
tflm_status flow_forward_steps(Work *w, const Ops *ops, int l, int s0, int s1);
/* flow l's transformer over steps [s0, s1) to fill its KV cache only: reads
 * h[l-1], writes no state (kv len must be s0) */
tflm_status flow_cache_steps(Work *w, const Ops *ops, int l, int s0, int s1);
/* flow l inverse over steps [s0, s1): reads h[l], writes h[l-1] */
tflm_status flow_inverse_steps(Work *w, const Ops *ops, int l, int s0, int s1);
/* coupling of flow l at one position: X (c, as stored) -> Y (c, before the
 * mix), log p summed over owned input channels, log N of owned outputs */
tflm_status flow_couple_forward(const Model *m, int l, const float *ho,
                                const float *X, float *Y, const unsigned char *own,
                                double *lp, double *ln);
/* the same for a mix1 or affine flow whose channel parameters are given:
 * channel i's 3K at prm + i*stride (the trainer's batched maf head) */
tflm_status flow_couple_params(const Model *m, int l, const float *prm, size_t stride,
                               const float *X, float *Y, const unsigned char *own,
                               double *lp, double *ln);
/* undo the channel mixes of a state of layer `layer` at one position */
void state_unmix(const Config *cf, int layer, const float *h, float *out);


/* forward through every flow of a window already in h[0] (src/score.c) */
tflm_status window_forward(Work *w, const Ops *ops);

/* ---- ar baseline (src/ar.c) ---- */
/* steps [s0, s1) of the ar transformer; input of step s is tok[s-1] (sos at 0);
 * V logits per step into w->HO */
tflm_status ar_steps(Work *w, const Ops *ops, const int *tok, int s0, int s1);
/* log softmax(lg / temp)[k] in double */
double ar_logsoftmax(const float *lg, int V, int k, double temp);
#endif
