/* trace.h: building tflm_trace objects (src/trace.c). */
#ifndef TFLM_TRACE_H
#define TFLM_TRACE_H
#include "flow.h"

/* a zeroed trace for n_pos positions of model config cf (ar: one layer) */
tflm_trace *trace_alloc(const Config *cf, int n_pos);
/* record state h (as stored) of `layer` at trace position pos, decode its
 * tokens, and the flow's log-det there (layer >= 1) */
void trace_set(const Model *m, tflm_trace *tr, int layer, int pos, const float *h, double logdet);
#endif
