/* test_train.c: gradients of whole tiny models against central finite
 * differences of the training loss (every layer type, both orders, P = 1
 * and 2, progressive stages and joint training, and the ar baseline), and
 * the loss/gradient's independence of how the batch is split. */
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include "tap.h"
#include "train.h"

static const char *CFG_FMT =
    "{\"format\":\"tflm\",\"version\":1,\"vocab_size\":97,\"latent_dim\":%d,\"patch\":%d,"
    "\"window\":%d,\"d_model\":8,\"n_heads\":2,\"flip_block\":%d,\"ln_eps\":1e-5,\"flows\":[%s]}";

static int make(Model *m, int d, int P, int T, int B, const char *flows, uint64_t seed) {
    char js[2048];
    snprintf(js, sizeof js, CFG_FMT, d, P, T, B, flows);
    Config cf;
    if (config_parse(&cf, js) != TFLM_OK || model_init(m, &cf, seed) != TFLM_OK) {
        printf("# %s\n", tflm_last_error());
        return -1;
    }
    /* perturb every tensor so that no gradient is trivially zero */
    for (int i = 0; i < m->params.n; i++) {
        ParamInfo *pi = &m->params.p[i];
        double s = pi->kind == PK_CODEBOOK ? 0.05 : 0.2;
        for (size_t j = 0; j < pi->numel; j++)
            (*pi->slot)[j] += (float)(s * rng_normal(rng_key(seed, 77, i, j, 0)));
    }
    return 0;
}

static void tokens(int *tok, int n, int T, uint64_t seed) {
    for (int i = 0; i < n; i++) {
        int t = i % T;
        tok[i] = (i / T == 1 && t < 3) ? 0 : 2 + (int)(rng_uniform(rng_key(seed, 3, i, 0, 0)) * 95);
    }
}

/* Compare the analytic gradient with central differences on a few entries
 * of every tensor that the objective trains. The transformer runs in float:
 * with step h = 2e-3 the loss (a few nats, summed in double from float
 * states) carries ~1e-7 relative rounding, i.e. ~3e-4 absolute error in a
 * difference quotient, plus O(h^2) truncation; so an entry passes when
 * |analytic - fd| <= 0.03 |fd| + 1e-3. A wrong gradient is off by O(1). */
static void gradcheck(const char *name, Model *m, int nb, int joint, int stage) {
    int T = m->cfg.T;
    int *tok = malloc(sizeof(int) * nb * T);
    tokens(tok, nb * T, T, 5);
    float *g = malloc(m->params.total * sizeof(float));
    double L0;
    tflm_status st = train_eval(m, tok, nb, joint, stage, 9, 1, &L0, g);
    CHECK(st == TFLM_OK, "%s: loss and gradient (%s)", name, st ? tflm_last_error() : "ok");
    if (st != TFLM_OK) return;
    int checked = 0, bad = 0, tensors = 0;
    double worst = 0;
    const char *worst_name = "";
    size_t off = 0;
    for (int i = 0; i < m->params.n; i++) {
        ParamInfo *pi = &m->params.p[i];
        size_t n = pi->numel;
        double gmax = 0;
        for (size_t j = 0; j < n; j++) gmax = fmax(gmax, fabs(g[off + j]));
        int trained = gmax > 0;
        if (trained) tensors++;
        /* the maf heads' tensors entry by entry (small here): their masks
         * (channel i reads channels < i only) must leave the unread entries
         * without gradient (to the check's absolute 1e-3 below) */
        int every = strncmp(pi->name, "flows.", 6) == 0 && strstr(pi->name, ".maf.") && n <= 256;
        int nk = every ? (int)n : 3;
        for (int k = 0; k < nk && (trained || every); k++) {
            /* the largest entry, then two keyed random ones */
            size_t j = (size_t)k;
            if (every) {
                /* j = k: every entry in turn */
            } else if (k == 0) { for (size_t q = 0; q < n; q++) if (fabs(g[off + q]) == gmax) { j = q; break; } }
            else j = (size_t)(rng_uniform(rng_key(11, i, k, 0, 0)) * n);
            float *x = *pi->slot + j, x0 = *x;
            const double h = 2e-3;
            double Lp, Lm;
            *x = (float)(x0 + h);
            double hp = (double)*x - x0;
            train_eval(m, tok, nb, joint, stage, 9, 1, &Lp, NULL);
            *x = (float)(x0 - h);
            double hm = x0 - (double)*x;
            train_eval(m, tok, nb, joint, stage, 9, 1, &Lm, NULL);
            *x = x0;
            double fd = (Lp - Lm) / (hp + hm), an = g[off + j];
            double err = fabs(an - fd) / (0.03 * fabs(fd) + 1e-3);
            checked++;
            if (err > 1) {
                bad++;
                printf("# %s: %s[%zu]: analytic %.6g, finite differences %.6g\n", name, pi->name, j, an, fd);
            }
            if (err > worst) { worst = err; worst_name = pi->name; }
        }
        off += n;
    }
    CHECK(bad == 0 && checked > 0, "%s: gradients of %d tensors match finite differences (%d entries; worst %.2f of "
          "the tolerance, %s)", name, tensors, checked, worst, worst_name);
    /* the same loss and gradient with the batch split over 2 threads: the
     * sums are taken in another order and OpenBLAS blocks the smaller
     * per-thread products differently, so they agree to float rounding, not
     * bit for bit. Measured: loss 0 with the AVX-512 kernels, up to 4.6e-9
     * relative with the Haswell and Zen ones (OPENBLAS_CORETYPE=Haswell);
     * allowed 1e-6 (float's epsilon is 1.2e-7). A window dropped or counted
     * twice moves the loss by about 1/nb relative. */
    float *g2 = malloc(m->params.total * sizeof(float));
    double L2;
    train_eval(m, tok, nb, joint, stage, 9, 2, &L2, g2);
    double gd = 0, gs = 0;
    for (size_t j = 0; j < m->params.total; j++) {
        gd = fmax(gd, fabs(g2[j] - g[j]));
        gs = fmax(gs, fabs(g[j]));
    }
    CHECK(fabs(L2 - L0) <= 1e-6 * fabs(L0) && gd <= 1e-5 * gs,
          "%s: loss and gradient agree over 1 and 2 threads (loss %.3g, grad %.3g relative)", name,
          fabs(L2 - L0) / fabs(L0), gd / gs);
    free(g2);
    free(g);
    free(tok);
}

/* The trainer evaluates maf heads for all rows at once by matrix products;
 * its loss must be the one of the per-position maf_channel (the arithmetic
 * of scoring and generation). Both are double sums of float-rounded terms in
 * another order: measured <= 4e-9 relative, allowed 1e-6; a wrong channel,
 * mask or row is off by O(1). */
static void mafcheck(const char *name, Model *m, int nb, int joint, int stage) {
    int T = m->cfg.T;
    int *tok = malloc(sizeof(int) * nb * T);
    tokens(tok, nb * T, T, 5);
    double Lb = 0, Lr = 0;
    tflm_status sb = train_eval(m, tok, nb, joint, stage, 9, 1, &Lb, NULL);
    tflm_status sr = train_eval_maf_ref(m, tok, nb, joint, stage, 9, &Lr);
    CHECK(sb == TFLM_OK && sr == TFLM_OK && fabs(Lb - Lr) <= 1e-6 * fabs(Lr),
          "%s: batched maf heads give the per-position loss (%.9g vs %.9g, %.2g relative)", name, Lb, Lr,
          fabs(Lb - Lr) / fabs(Lr));
    free(tok);
}

int main(void) {
    Model m;
    const char *mixd3 =
        "{\"type\":\"mixd\",\"layers\":1,\"direction\":\"l2r\"},"
        "{\"type\":\"mix1\",\"layers\":1,\"mixtures\":3,\"direction\":\"flip\"},"
        "{\"type\":\"mix1\",\"layers\":1,\"mixtures\":2,\"direction\":\"l2r\"}";
    if (!make(&m, 3, 1, 8, 4, mixd3, 1)) {
        gradcheck("progressive stage 1 (codebook + mixd)", &m, 2, 0, 0);
        gradcheck("progressive stage 2 (mix1 flip)", &m, 2, 0, 1);
        gradcheck("progressive stage 3 (mix1 l2r)", &m, 2, 0, 2);
        gradcheck("joint mixd + mix1 + mix1", &m, 2, 1, 0);
        model_free(&m);
    }
    const char *mix2 =
        "{\"type\":\"mix1\",\"layers\":1,\"mixtures\":2,\"direction\":\"l2r\"},"
        "{\"type\":\"affine\",\"layers\":1,\"direction\":\"flip\"}";
    if (!make(&m, 3, 1, 8, 0, mix2, 2)) {
        gradcheck("joint mix1 + affine, flip B=0", &m, 2, 1, 0);
        model_free(&m);
    }
    const char *maf =
        "{\"type\":\"mix1\",\"layers\":1,\"mixtures\":2,\"direction\":\"l2r\",\"maf\":{\"embed\":2,\"hidden\":3}},"
        "{\"type\":\"affine\",\"layers\":1,\"direction\":\"flip\",\"maf\":{\"embed\":2,\"hidden\":3}}";
    if (!make(&m, 2, 2, 8, 2, maf, 3)) {
        gradcheck("joint P=2 maf mix1 + maf affine", &m, 2, 1, 0);
        gradcheck("progressive P=2 stage 1 (codebook + maf mix1)", &m, 2, 0, 0);
        mafcheck("joint P=2 maf mix1 + maf affine", &m, 2, 1, 0);
        mafcheck("progressive P=2 stage 1", &m, 2, 0, 0);
        model_free(&m);
    }
    /* the teaching shape's head in miniature: a wider hidden layer, K 4, 3
     * windows */
    const char *maf2 =
        "{\"type\":\"mix1\",\"layers\":1,\"mixtures\":2,\"direction\":\"l2r\"},"
        "{\"type\":\"mix1\",\"layers\":1,\"mixtures\":4,\"direction\":\"flip\",\"maf\":{\"embed\":3,\"hidden\":70}}";
    if (!make(&m, 4, 1, 8, 2, maf2, 5)) {
        mafcheck("joint mix1 + maf mix1 (d=4 E=3 H2=70 K=4)", &m, 3, 1, 0);
        model_free(&m);
    }
    if (!make(&m, 4, 1, 8, 0, "{\"type\":\"ar\",\"layers\":2}", 4)) {
        gradcheck("ar", &m, 2, 0, 0);
        model_free(&m);
    }
    return tap_done();
}
