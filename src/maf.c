/* maf.c: the within-position MAF-MLP head of a mix1/affine flow (DESIGN §2.2,
 * "Within-position head"). For channel i of one position:
 *   e_j   = GELU(A_j [x_j, elu(x_j), elu(-x_j)] + a_j)        j < i, in R^E
 *   g_i   = GELU(C_i G + sum_{j<i} F_{i,j} e_j + b_i)          in R^H2
 *   out_i = O_i g_i + o_i                                       in R^3K
 * in single precision (the transformer's), GELU in tanh form, ELU alpha = 1.
 * The pieces come in precomputed so that nothing is computed twice: the
 * context part C_i G + b_i of every channel as one matrix product for all
 * rows (flow_head), and each e_j once per position (maf_embed), shared by
 * the channels after j. Since F_i's row h is laid out [F_{i,0} | F_{i,1} |
 * ...], sum_j F_{i,j} e_j is one dot product with the prefix e[0 .. i*E). */
#include <math.h>
#include "internal.h"

#define CHUNK 64

static float gelu1(float x) {
    const float k = 0.7978845608028654f; /* sqrt(2/pi) */
    return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
}

static float elu1(float x) { return x > 0.0f ? x : expm1f(x); }

static float dotf(const float *a, const float *b, int n) {
    float s = 0.0f;
    for (int t = 0; t < n; t++)
        s += a[t] * b[t];
    return s;
}

void maf_embed(const FlowWeights *fw, int E, int j, double xj, float *ej) {
    float xf = (float)xj;
    float f0 = xf, f1 = elu1(xf), f2 = elu1(-xf);
    const float *Aj = fw->maf_emb_w + (size_t)j * E * 3;
    const float *aj = fw->maf_emb_b + (size_t)j * E;
    for (int e = 0; e < E; e++) {
        const float *A = Aj + (size_t)e * 3;
        ej[e] = gelu1(A[0] * f0 + A[1] * f1 + A[2] * f2 + aj[e]);
    }
}

void maf_channel(const FlowWeights *fw, int c, int K, int E, int H2,
                 const float *cg, const float *e, int i, float *out3K) {
    int n3 = 3 * K, FE = (c - 1) * E, ie = i * E;
    const float *Fi = fw->maf_feat_w + (size_t)i * H2 * FE;
    const float *Oi = fw->maf_out_w + (size_t)i * n3 * H2;
    const float *oi = fw->maf_out_b + (size_t)i * n3;
    for (int k = 0; k < n3; k++)
        out3K[k] = oi[k];
    for (int h0 = 0; h0 < H2; h0 += CHUNK) {
        int nh = H2 - h0 < CHUNK ? H2 - h0 : CHUNK;
        float g[CHUNK];
        for (int h = 0; h < nh; h++)
            g[h] = gelu1(cg[h0 + h] + dotf(Fi + (size_t)(h0 + h) * FE, e, ie));
        for (int k = 0; k < n3; k++)
            out3K[k] += dotf(Oi + (size_t)k * H2 + h0, g, nh);
    }
}
