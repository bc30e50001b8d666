/* internal.h: libtflm's internal structures and module interfaces.
 *
 * Dimension legend (used in every shape comment of the library):
 *   V  vocabulary size          d  latent dim per token
 *   P  patch (tokens/position)  c  channels per position = P*d
 *   T  tokens per window        N  positions per window = T/P (ar: T)
 *   D  transformer width        H  heads, hs = D/H head size
 *   K  mixture components       L  flow layers (1 for ar)
 *   cin transformer input width: c for flows, d for ar
 *   hout head output width: mix1 c*3K, affine c*3, mixd P*V, ar V
 *   n  rows (steps) in one call
 *
 * Layout follows llama2.c: a config, the weights (one pointer per tensor,
 * shape in a comment), per-run activations, per-session state.
 */
#ifndef TFLM_INTERNAL_H
#define TFLM_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include "tflm.h"

#define MAX_FLOWS TFLM_MAX_FLOWS

/* ---- errors (src/error.c) ------------------------------------------------ */
/* Set the thread's last error (printf format) and return st. */
tflm_status tflm__err(tflm_status st, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- config (src/config.c) ----------------------------------------------- */
enum { FLOW_MIX1 = 0, FLOW_AFFINE = 1, FLOW_MIXD = 2, FLOW_AR = 3 };
enum { DIR_L2R = 0, DIR_FLIP = 1 };

typedef struct {
    int type;        /* FLOW_* */
    int layers;      /* transformer blocks */
    int K;           /* mix1: mixtures; affine: 1; mixd: V; ar: 0 */
    int dir;         /* DIR_* */
    int maf_E;       /* maf embed E, 0 = no maf */
    int maf_H;       /* maf hidden H2 */
} FlowConfig;

typedef struct {
    int V, d, P, T, D, H, B;
    double ln_eps;
    int L;           /* number of flows (ar: 1) */
    int is_ar;
    int N;           /* positions: T/P (ar: T) */
    int c;           /* channels: P*d */
    FlowConfig flow[MAX_FLOWS]; /* index l-1 for flow l */
} Config;

/* Parse and check a tflm.config JSON text. Errors are one line. */
tflm_status config_parse(Config *cfg, const char *json_text);
tflm_status config_from_json(Config *cfg, json_t *root);
/* Serialise (keys and spacing as the reference files write them, DESIGN §4); malloc'ed string. */
char *config_to_json(const Config *cfg);
int flow_cin(const Config *cfg);            /* transformer input width */
int flow_hout(const Config *cfg, int l);    /* head output width of flow l (1-based) */

/* ---- weights --------------------------------------------------------------- */
typedef struct {
    float *ln1_w, *ln1_b;   /* [D], [D] */
    float *qkv_w, *qkv_b;   /* [3D, D], [3D] */
    float *out_w, *out_b;   /* [D, D], [D] */
    float *ln2_w, *ln2_b;   /* [D], [D] */
    float *fc_w, *fc_b;     /* [4D, D], [4D] */
    float *proj_w, *proj_b; /* [D, 4D], [D] */
} BlockWeights;

typedef struct {
    float *in_w, *in_b;     /* [D, cin], [D] */
    float *pos;             /* [N, D] */
    float *sos;             /* [cin] */
    BlockWeights blk[32];   /* layers blocks */
    float *lnf_w, *lnf_b;   /* [D], [D] */
    float *head_w, *head_b; /* [hout, D], [hout]; NULL with maf */
    float *clamp;           /* [c, K] mix1/affine; NULL otherwise */
    /* maf head (DESIGN §2.2), all NULL without maf */
    float *maf_emb_w;       /* [c-1, E, 3] */
    float *maf_emb_b;       /* [c-1, E] */
    float *maf_ctx_w;       /* [c, H2, D] */
    float *maf_feat_w;      /* [c, H2, (c-1)*E] */
    float *maf_hid_b;       /* [c, H2] */
    float *maf_out_w;       /* [c, 3K, H2] */
    float *maf_out_b;       /* [c, 3K] */
} FlowWeights;

/* The per-row matrix product a flow computes from G: its head (width
 * flow_hout), or for a maf flow the context part of every channel's hidden
 * layer, [C_0 G + b_0 | ... | C_{c-1} G + b_{c-1}] (width c*H2). Returns the
 * width; *W [width, D] and *b [width] point into fw (NULL fw: width only). */
int flow_head(const Config *cfg, int l, const FlowWeights *fw, const float **W, const float **b);

#define MAX_BLOCKS 32

typedef struct {
    float *cb_mean;         /* [V, d] codebook.mean */
    float *cb_logsig;       /* [V] codebook.log_sigma */
    FlowWeights flow[MAX_FLOWS];
} Weights;

/* ---- parameter table (src/params.c) ----------------------------------------
 * Every tensor of a config, in a fixed order, with its DESIGN §4 name, shape
 * and the address of the Weights pointer it binds to. The loader, the writer,
 * the initialiser and (later) the trainer all walk this one table. */
enum { PK_MATRIX = 0, PK_VECTOR = 1, PK_EMBED = 2, PK_CODEBOOK = 3, PK_OTHER = 4 };
typedef struct {
    char name[96];
    int ndim;
    int shape[3];
    size_t numel;
    float **slot;           /* &weights->... */
    int kind;               /* PK_*: for init and weight decay */
    int flow;               /* 1..L, 0 for the codebook */
} ParamInfo;

typedef struct {
    ParamInfo *p;
    int n;
    size_t total;           /* sum of numel */
} ParamTable;

/* Build the table for cfg, bound to w. Caller frees with params_free. */
tflm_status params_build(ParamTable *t, const Config *cfg, Weights *w);
void params_free(ParamTable *t);
/* Point every slot into one contiguous buffer of t->total floats (table order). */
void params_bind(ParamTable *t, float *base);

/* ---- safetensors (src/safetensors.c) ---------------------------------------- */
typedef struct {
    char name[96];
    int dtype;              /* 0 F32, 1 F16, 2 BF16 */
    int ndim;
    int64_t shape[4];
    size_t off, len;        /* byte range relative to the data section */
} StTensor;

typedef struct {
    int fd;
    uint8_t *map;           /* whole file (mmap or malloc) */
    size_t size;
    int mapped;
    size_t data_off;        /* 8 + header length */
    StTensor *t;
    int nt;
    json_t *meta;           /* __metadata__ object (string values), may be NULL */
} StFile;

/* Open and validate the container (sizes, offsets, overlaps, dtypes, JSON).
 * Never reads out of bounds. One-line error on failure. */
tflm_status st_open(StFile *f, const char *path, int use_mmap);
void st_close(StFile *f);
const StTensor *st_find(const StFile *f, const char *name);
const char *st_meta(const StFile *f, const char *key);

typedef struct {
    const char *name;
    int ndim;
    int64_t shape[4];
    const float *data;      /* F32 */
} StWriteTensor;
/* Write atomically: path.tmp, fsync, rename. meta is an object of strings. */
tflm_status st_write(const char *path, const StWriteTensor *t, int nt, json_t *meta);

/* ---- model (src/modelfile.c) ------------------------------------------------ */
typedef struct {
    Config cfg;
    Weights w;
    ParamTable params;
    StFile file;            /* keeps the mapping alive */
    float *owned;           /* weights not in the mapping (widened/unaligned), or NULL */
    char **vocab;           /* [V] token strings */
    json_t *meta;           /* all metadata strings */
} Model;

/* Load and check everything (DESIGN §4): shapes vs config, dtype, finiteness. */
tflm_status model_load(Model *m, const char *path, int use_mmap);
void model_free(Model *m);
/* Random init (FINDINGS "Settings that worked"); owns its buffer. */
tflm_status model_init(Model *m, const Config *cfg, uint64_t seed);
/* Save weights + metadata (tflm.config, tflm.vocab, extra entries of meta). */
tflm_status model_save(const Model *m, const char *path, json_t *extra_meta);
/* the same with extra tensors after the weights (checkpoints' opt.* state) */
tflm_status model_save_ex(const Model *m, const char *path, json_t *extra_meta,
                          const StWriteTensor *extra, int n_extra);
/* The default vocabulary (DESIGN §3); malloc'ed array of V=97 strings. */
char **vocab_default(int *V);

/* ---- keyed randomness (src/rng.c) ------------------------------------------ */
enum { RNG_PRIOR = 1, RNG_EPS = 2, RNG_DECODE = 3, RNG_EDIT = 4, RNG_INIT = 5 };
uint64_t rng_key(uint64_t seed, uint64_t purpose, uint64_t a, uint64_t b, uint64_t c);
double rng_uniform(uint64_t key);   /* (0, 1) */
double rng_normal(uint64_t key);    /* N(0, 1) */

/* ---- compute ops (kernels/ops.h) -------------------------------------------- */
#include "../kernels/ops.h"

/* ---- transformer (src/transformer.c) ------------------------------------------
 * Causal pre-LN transformer of one flow over steps, with a KV cache.
 * A call processes steps start..start+n-1 where start = cache->len, given the
 * shifted inputs X' (row 0 of a window is sos) and each step's window
 * position; it appends their keys/values and returns the head input G. */
typedef struct {
    int cap;                /* steps the cache can hold (N) */
    int len;                /* steps cached */
    int nblk, D;
    float *k;               /* [nblk, cap, D] */
    float *v;               /* [nblk, cap, D] */
} KVCache;

tflm_status kv_init(KVCache *kv, int nblk, int cap, int D);
void kv_free(KVCache *kv);
void kv_reset(KVCache *kv);

typedef struct {
    int D, H, nblk, cin;
    float eps;
} TfDims;

/* G[n, D] = ln_f(blocks(in_proj(xin) + pos[pos_idx])) for steps
 * kv->len .. kv->len+n-1; xin [n, cin]; pos_idx [n]. */
tflm_status tf_forward(const Ops *ops, const FlowWeights *fw, const TfDims *dm, KVCache *kv,
                       const float *xin, const int *pos_idx, int n, float *G);

/* ---- mixtures and special functions (src/mixture.c) ---------------------- */
double norm_cdf(double x);          /* Phi */
double norm_logcdf(double x);       /* log Phi, tail-safe */
double norm_ppf(double p);          /* Phi^-1, Wichura AS241 */
#define LOG_SQRT_2PI 0.91893853320467274178
double soft_clamp(double v, double f); /* c tanh(v / max(c,1)), c = e^f */

/* mix1 / affine coupling of one channel. prm = [a(K) | m(K) | v(K)] raw head
 * outputs (float), clamp f[K]. Forward: y from x; inverse: x from y. Both
 * return log p(x) (the mixture density at x). Double precision throughout. */
double mix1_forward(const float *prm, const float *clampf, int K, double x, double *y);
tflm_status mix1_inverse(const float *prm, const float *clampf, int K, double y, double *x,
                         double *logp);
/* affine closed form (K = 1): same contract */
double affine_forward(const float *prm, const float *clampf, double x, double *y);
double affine_inverse(const float *prm, const float *clampf, double y, double *x);

/* mixd Rosenblatt of one token: logits[V] (head output), codebook mu[V,d],
 * logsig[V], z[d] (layer input). Returns log p(z); fills y[d] and, when
 * lpc != NULL, the per-dimension conditional log-densities lpc[d]. */
double mixd_forward(const float *logits, const float *mu, const float *logsig, int V, int d,
                    const double *z, double *y, double *lpc);
tflm_status mixd_inverse(const float *logits, const float *mu, const float *logsig, int V, int d,
                         const double *y, double *z, double *lpc, double *logp);

/* maf head (src/maf.c). maf_embed: e_j [E] of channel j's input x_j.
 * maf_channel: the 3K parameters of channel i of one position, given
 * cg[H2] = C_i G + b_i (the context part, computed for all rows and channels
 * at once as one matrix product: see flow_head) and e = [e_0 | ... | e_{i-1}]
 * (i*E floats, from maf_embed; only channels j < i are read). */
void maf_embed(const FlowWeights *fw, int E, int j, double xj, float *ej);
void maf_channel(const FlowWeights *fw, int c, int K, int E, int H2,
                 const float *cg, const float *e, int i, float *out3K);

/* ---- codebook (src/codebook.c) --------------------------------------------- */
/* logits l_k(z) in double, [V] (DESIGN §2.1) */
void codebook_logits(const Model *m, const float *z, double *logits);
/* R_t = -LSE_k l_k(z) */
double codebook_R(const Model *m, const float *z);
/* decode: argmax id, its probability and entropy (nats) of softmax(logits) */
int codebook_decode(const Model *m, const float *z, float *prob, float *entropy);

/* ---- channel mixing (src/flow.c) ------------------------------------------- */
/* ChannelMix: out = [x0, x2, x4, ..., x1, x3, ...]; perm[i] = source of out[i] */
void chmix_perm(int c, int *perm);
void chmix(const float *in, float *out, int c);
void chunmix(const float *in, float *out, int c);

/* ---- the context ----------------------------------------------------------- */
struct tflm_ctx {
    Model m;
    tflm_params p;
    const Ops *ops;
    int threads;
};

#endif /* TFLM_INTERNAL_H */
