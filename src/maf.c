/* maf.c: the within-position MAF-MLP head of a mix1/affine flow (DESIGN §2.2,
 * "Within-position head"). For channel i of one position:
 *   e_j   = GELU(A_j [x_j, elu(x_j), elu(-x_j)] + a_j)        j < i, in R^E
 *   g_i   = GELU(C_i G + sum_{j<i} F_{i,j} e_j + b_i)          in R^H2
 *   out_i = O_i g_i + o_i                                       in R^3K
 * in single precision (the transformer's), GELU in tanh form, ELU alpha = 1.
 * Hidden units and embeddings are processed in chunks of CHUNK so that no
 * size limit or allocation is needed; each e_j is recomputed once per chunk
 * of hidden units, which is cheap next to the F_{i,j} products. */
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

void maf_channel(const FlowWeights *fw, int c, int K, int E, int H2, int D,
                 const float *G, const double *x, int i, float *out3K) {
    int n3 = 3 * K, FE = (c - 1) * E;
    const float *Ci = fw->maf_ctx_w + (size_t)i * H2 * D;
    const float *Fi = fw->maf_feat_w + (size_t)i * H2 * FE;
    const float *bi = fw->maf_hid_b + (size_t)i * H2;
    const float *Oi = fw->maf_out_w + (size_t)i * n3 * H2;
    const float *oi = fw->maf_out_b + (size_t)i * n3;
    for (int k = 0; k < n3; k++)
        out3K[k] = oi[k];
    for (int h0 = 0; h0 < H2; h0 += CHUNK) {
        int nh = H2 - h0 < CHUNK ? H2 - h0 : CHUNK;
        float hb[CHUNK];
        for (int h = 0; h < nh; h++)
            hb[h] = bi[h0 + h] + dotf(Ci + (size_t)(h0 + h) * D, G, D);
        for (int j = 0; j < i; j++) {
            float xf = (float)x[j];
            float f0 = xf, f1 = elu1(xf), f2 = elu1(-xf);
            const float *Aj = fw->maf_emb_w + (size_t)j * E * 3;
            const float *aj = fw->maf_emb_b + (size_t)j * E;
            for (int e0 = 0; e0 < E; e0 += CHUNK) {
                int ne = E - e0 < CHUNK ? E - e0 : CHUNK;
                float eb[CHUNK];
                for (int e = 0; e < ne; e++) {
                    const float *A = Aj + (size_t)(e0 + e) * 3;
                    eb[e] = gelu1(A[0] * f0 + A[1] * f1 + A[2] * f2 + aj[e0 + e]);
                }
                for (int h = 0; h < nh; h++)
                    hb[h] += dotf(Fi + (size_t)(h0 + h) * FE + (size_t)j * E + e0, eb, ne);
            }
        }
        for (int h = 0; h < nh; h++) {
            float g = gelu1(hb[h]);
            for (int k = 0; k < n3; k++)
                out3K[k] += Oi[(size_t)k * H2 + h0 + h] * g;
        }
    }
}
