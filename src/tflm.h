/* tflm.h: the public API of libtflm, TarFlowLM in C.
 *
 * TarFlowLM models text in a continuous space: each token becomes a Gaussian
 * latent h^(0), and a stack of L autoregressive normalizing flows maps it to
 * Gaussian noise h^(L). Generation runs the stack backwards, so every
 * layer's state can be decoded to text. The mathematics and the file format
 * are in DESIGN.md (shipped as man page tflm(5)).
 *
 * Usage:
 *
 *     #include <tflm.h>
 *
 *     tflm_params p;
 *     tflm_params_default(&p);
 *     p.threads = 2;
 *     tflm_ctx *ctx = NULL;
 *     if (tflm_load(&ctx, "model.safetensors", &p) != TFLM_OK) {
 *         fprintf(stderr, "tflm: %s\n", tflm_last_error());
 *         return 1;
 *     }
 *     tflm_gen_params g;
 *     tflm_gen_params_default(&g);
 *     g.n_new = 200;
 *     g.seed = 1;
 *     tflm_trace *tr = NULL;
 *     if (tflm_generate(ctx, "It is a truth universally", &g, &tr) == TFLM_OK) {
 *         char *text = tflm_trace_text(ctx, tr, 0, 0);  // layer 0 = text
 *         puts(text);
 *         free(text);
 *         tflm_trace_free(tr);
 *     }
 *     tflm_free(ctx);
 *
 * Conventions:
 * - Every function that can fail returns a tflm_status; on failure
 *   tflm_last_error() holds a one-line reason (per thread).
 * - The library never prints and never exits; messages go through the
 *   optional log callback, progress through the progress callback (which
 *   may ask to cancel long work by returning non-zero).
 * - Ownership is stated per function. Objects returned through a pointer
 *   argument belong to the caller and are released with the matching
 *   *_free function; strings returned as char * are released with free().
 * - Layer indices: 0 is the text side h^(0) (token latents), L the noise
 *   side h^(L). Flow ℓ = 1..L maps h^(ℓ-1) to h^(ℓ).
 * - A tflm_ctx may be used by one thread at a time.
 */
#ifndef TFLM_H
#define TFLM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TFLM_MAX_FLOWS 16

typedef enum {
    TFLM_OK = 0,
    TFLM_EINVAL = 1,       /* bad argument */
    TFLM_ENOMEM = 2,       /* out of memory */
    TFLM_EIO = 3,          /* read or write failed (missing file, full disk) */
    TFLM_EFORMAT = 4,      /* malformed model file or config */
    TFLM_EUNSUPPORTED = 5, /* valid request the model cannot do */
    TFLM_ECANCELLED = 6,   /* the progress callback asked to stop */
    TFLM_ENUMERIC = 7      /* NaN/inf or a root finder that failed */
} tflm_status;

/* Last error message of the calling thread ("" if none). Owned by the library. */
const char *tflm_last_error(void);
/* Short name of a status ("invalid argument", ...). Static string. */
const char *tflm_status_str(tflm_status s);
/* Library version string, e.g. "0.1.0". Static string. */
const char *tflm_version(void);

/* ---- context -------------------------------------------------------- */

typedef struct tflm_ctx tflm_ctx;

typedef enum { TFLM_LOG_DEBUG = 0, TFLM_LOG_INFO = 1, TFLM_LOG_WARN = 2 } tflm_log_level;

/* Where the transformer runs. The couplings, the codebook and the optimizer
 * stay on the CPU in double precision either way (kernels/cuda/README.md). */
typedef enum {
    TFLM_DEVICE_CPU = 0,   /* default: reference C loops or OpenBLAS (use_blas) */
    TFLM_DEVICE_CUDA = 1   /* the CUDA backend: needs configure --with-cuda and a GPU */
} tflm_device;

typedef struct {
    int threads;   /* worker threads for inference loops; default 1. Results
                      do not depend on it. */
    int use_blas;  /* 1 (default): OpenBLAS matrix products when built with
                      it; 0: the reference C loops */
    int no_mmap;   /* 0 (default): weights are mmapped read-only; 1: read */
    /* optional callbacks; user is passed back untouched */
    void (*log)(void *user, tflm_log_level level, const char *msg);
    int (*progress)(void *user, const char *what, double fraction); /* non-zero: cancel */
    void *user;
    int device;    /* tflm_device: TFLM_DEVICE_CPU (default) or TFLM_DEVICE_CUDA; tflm_load
                      fails with TFLM_EUNSUPPORTED when CUDA is not built or no GPU is usable */
} tflm_params;

/* Fill p with the defaults. */
void tflm_params_default(tflm_params *p);

/* Open a model file (DESIGN §4), check it completely, and make a context.
 * p may be NULL for defaults. On success *out is owned by the caller
 * (release with tflm_free). On failure *out is NULL and the reason is in
 * tflm_last_error(). */
tflm_status tflm_load(tflm_ctx **out, const char *path, const tflm_params *p);
void tflm_free(tflm_ctx *ctx);
/* Change the thread count of a loaded context. */
void tflm_set_threads(tflm_ctx *ctx, int threads);

/* ---- model description -------------------------------------------------- */

typedef struct {
    char type[8];       /* "mix1", "affine", "mixd", "ar" */
    char direction[8];  /* "l2r" or "flip" */
    int layers;         /* transformer blocks */
    int mixtures;       /* K (mix1), 1 (affine), V (mixd), 0 (ar) */
    int maf_embed;      /* 0 when the flow has no maf head */
    int maf_hidden;
} tflm_flow_info;

typedef struct {
    int vocab_size, latent_dim, patch, window, d_model, n_heads, flip_block;
    double ln_eps;
    int n_flows;        /* L (1 for ar) */
    int is_ar;
    int positions;      /* N = window / patch (ar: window) */
    int channels;       /* c = patch * latent_dim */
    long long n_params;
    tflm_flow_info flows[TFLM_MAX_FLOWS];
} tflm_info;

/* Fill *out with the model's configuration. */
void tflm_get_info(const tflm_ctx *ctx, tflm_info *out);
/* Raw JSON of a metadata entry ("tflm.config", "tflm.vocab", "tflm.train",
 * ...) or NULL. Owned by the context. */
const char *tflm_metadata(const tflm_ctx *ctx, const char *key);
/* The string of token id (owned by the context), or NULL if out of range. */
const char *tflm_token_str(const tflm_ctx *ctx, int id);

/* Write a randomly initialised model of the configuration JSON config_json
 * (the tflm.config format, DESIGN §4) to path. Deterministic for a seed. */
tflm_status tflm_init_model(const char *config_json, uint64_t seed, const char *path);

/* ---- tokens ------------------------------------------------------------- */

/* Turn UTF-8 text into token ids with the model's vocabulary (DESIGN §3:
 * CRLF -> newline, tab -> space, typographic quotes/dashes/ellipsis -> ASCII,
 * anything else -> '?'). *ids is malloc'ed and owned by the caller; *n_mapped
 * (may be NULL) counts the characters that were mapped. */
tflm_status tflm_tokenize(const tflm_ctx *ctx, const char *text, size_t len,
                          int **ids, int *n, int *n_mapped);
/* Text of n ids (<pad> decodes to nothing). malloc'ed; caller frees. */
char *tflm_detokenize(const tflm_ctx *ctx, const int *ids, int n);

/* ---- scoring (forward pass, DESIGN §2.5) ---------------------------------- */

typedef struct {
    int mean;        /* 1: mean encoding (deterministic, not the ELBO) */
    int samples;     /* samples of eps per window (default 1) */
    uint64_t seed;   /* seed of the keyed eps (default 1234) */
} tflm_score_params;
void tflm_score_params_default(tflm_score_params *p);

typedef struct {
    int n_flows;                      /* L */
    long long n_tokens;               /* non-pad tokens scored */
    int n_windows;
    double elbo;                      /* total ELBO (nats), mean over samples */
    double R;                         /* sum of R_t */
    double bpc;                       /* -elbo / (n_tokens ln 2) */
    double lp[TFLM_MAX_FLOWS];        /* LP_l, index l-1 */
    double ln[TFLM_MAX_FLOWS];        /* LN_l */
    double logdet[TFLM_MAX_FLOWS];    /* LP_l - LN_l */
    double iw_elbo;                   /* importance-weighted bound (nats): per window
                                         log mean_s exp(ELBO_s), summed; = elbo
                                         with 1 sample, >= elbo always */
    double iw_bpc;                    /* -iw_elbo / (n_tokens ln 2) */
} tflm_score;

/* Score n token ids cut into consecutive windows (DESIGN §3). */
tflm_status tflm_score_ids(tflm_ctx *ctx, const int *ids, int n,
                           const tflm_score_params *p, tflm_score *out);

/* ---- traces: every layer's state, decoded --------------------------------- */

typedef struct {
    int n_flows;      /* L; arrays below have L+1 layers (0 = text, L = noise) */
    int n_tok;        /* tokens in the trace (n_pos * patch), pads included */
    int n_pos;        /* positions */
    int channels;     /* c */
    int patch;
    int n_pad;        /* leading <pad> tokens */
    int n_ctx;        /* context tokens after the pads (generation) */
    int *tokens;      /* [n_tok] final text ids = dec of layer 0 (pads kept) */
    int *dec;         /* [(L+1) * n_tok] decoded id per layer */
    float *prob;      /* [(L+1) * n_tok] decoder probability of dec */
    float *entropy;   /* [(L+1) * n_tok] entropy of p(x | h) in nats */
    float *state;     /* [(L+1) * n_pos * c] states as stored (channel-mixed) */
    float *logdet;    /* [L * n_pos] log-det of flow l at a position, index l-1 */
    int *direction;   /* [L] 0 = l2r, 1 = flip, of flow l at index l-1 */
    double ms_per_layer; /* wall time per layer of the run that made it */
} tflm_trace;

void tflm_trace_free(tflm_trace *tr);
/* Text decoded at one layer (0..L), tokens [from, n_tok); malloc'ed. */
char *tflm_trace_text(const tflm_ctx *ctx, const tflm_trace *tr, int layer, int from);

/* Encode a text's first window with every layer's state, and score all of it. */
tflm_status tflm_encode_ids(tflm_ctx *ctx, const int *ids, int n, const tflm_score_params *p,
                            tflm_trace **first_window, tflm_score *totals);

/* ---- generation (DESIGN §3) ---------------------------------------------- */

typedef enum { TFLM_DECODE_ARGMAX = 0, TFLM_DECODE_SAMPLE = 1 } tflm_decode;

typedef struct {
    uint64_t seed;       /* default 1 */
    double prior_temp;   /* tau: u ~ N(0, tau^2 I); default 1.0 */
    tflm_decode decode;  /* default argmax */
    double temp;         /* decoder temperature when sampling; default 1.0 */
    int n_new;           /* new tokens; default 128 */
    /* optional: called after each generated block with the trace so far
     * (tokens [0, n_ready) and their states are final; the arrays are sized
     * for the whole generation). Return non-zero to cancel. The trace stays
     * owned by the library during the call. */
    int (*on_block)(void *user, const tflm_trace *partial, int n_ready);
    void *user;
} tflm_gen_params;
void tflm_gen_params_default(tflm_gen_params *p);

/* Generate a continuation of the UTF-8 context (may be NULL or ""). *out is
 * the trace of context + new tokens, owned by the caller. A model with
 * flip_block 0 cannot take a context exactly: it returns TFLM_EUNSUPPORTED
 * if one is given. */
tflm_status tflm_generate(tflm_ctx *ctx, const char *context, const tflm_gen_params *p,
                          tflm_trace **out);
/* The same from token ids. */
tflm_status tflm_generate_ids(tflm_ctx *ctx, const int *ctx_ids, int n_ctx,
                              const tflm_gen_params *p, tflm_trace **out);

/* ---- editing at a layer (DESIGN §3) -------------------------------------- */

typedef enum { TFLM_EDIT_NOISE = 0, TFLM_EDIT_RESAMPLE = 1, TFLM_EDIT_REPLACE = 2 } tflm_edit_op;

typedef struct {
    int layer;            /* 1..L */
    int span_a, span_b;   /* token span [a, b) of the text */
    tflm_edit_op op;
    double strength;      /* noise scale sigma (NOISE) */
    double prior_temp;    /* tau for RESAMPLE; default 1.0 */
    const char *replace;  /* REPLACE: text whose state replaces the span's */
    int local;            /* 1: re-invert only the span's blocks */
    uint64_t seed;        /* default 1 */
} tflm_edit_params;
void tflm_edit_params_default(tflm_edit_params *p);

/* Edit a text (at most one window) and re-invert. *before and *after are
 * traces owned by the caller (either pointer may be NULL if not wanted). */
tflm_status tflm_edit(tflm_ctx *ctx, const char *text, const tflm_edit_params *p,
                      tflm_trace **before, tflm_trace **after);

/* ---- inspecting a trace (src/inspect.c) ---------------------------------- */

/* The latent of token t (0..n_tok-1) of a trace at a layer (0..L), with the
 * channel mixes undone (DESIGN §2.4): latent_dim floats written to z. This
 * is what the decoder reads to show that layer as text. */
tflm_status tflm_trace_latent(const tflm_ctx *ctx, const tflm_trace *tr, int layer, int t,
                              float *z);
/* The decoder's k most probable tokens for a latent z (latent_dim floats):
 * ids[k] and their probabilities p(x | z) in decreasing order (k is capped
 * at the vocabulary size). These two read only the model's weights, so they
 * may be called while another thread runs a generation on the same ctx. */
tflm_status tflm_decode_topk(const tflm_ctx *ctx, const float *z, int k, int *ids, float *probs);

/* ---- training (issue 3; DESIGN §2-§4) -------------------------------------------- */

typedef struct {
    int threads;            /* worker threads (default 1); a resumed run is bit-identical to an
                               uninterrupted one when it uses the same thread count */
    int has_seed;           /* 1: seed overrides the training config's seed */
    uint64_t seed;
    double time_limit_s;    /* > 0: stop (with a checkpoint) after this many seconds */
    long stop_at;           /* > 0: finish at this step, writing out_path (and the checkpoint) as
                               if the schedule ended there; the learning-rate schedule keeps its
                               full length. A checkpoint already at stop_at is just written out. */
    volatile int *stop;     /* set non-zero (e.g. from a signal handler) to stop after the
                               current step, writing a checkpoint */
    void (*log)(void *user, tflm_log_level level, const char *msg); /* progress lines */
    void *user;
    int device;             /* tflm_device of the training steps (default TFLM_DEVICE_CPU) */
} tflm_train_opts;
void tflm_train_opts_default(tflm_train_opts *o);

/* Train a model. config_json is a training config (see tflm(1), "TRAINING
 * CONFIG"): a "model" (tflm.config object) or "init" (model file) plus the
 * schedule and optimizer settings; NULL when resuming. train_files: UTF-8
 * text files; valid_file may be NULL. Checkpoints are written atomically to
 * out_path + ".ckpt" every few minutes, on stop and at the end; resume_path
 * continues a checkpoint exactly. *finished (may be NULL) is 1 when every
 * step ran and out_path was written, 0 when a time limit stopped it first. */
tflm_status tflm_train(const char *config_json, const char *const *train_files, int n_train,
                       const char *valid_file, const char *out_path, const char *resume_path,
                       const tflm_train_opts *o, int *finished);

/* ---- refinement profile (issue 7) ----------------------------------------------------- */

/* How the text takes shape over the layers: for each state h^(l) (index l,
 * 0 = text, L = noise), the fraction of tokens whose decoded token equals
 * the reference, and the mean decoder probability of the decoded tokens. */
typedef struct {
    int n_flows;                          /* L */
    int n_tokens;                         /* tokens counted */
    double agree[TFLM_MAX_FLOWS + 1];     /* [l], l = 0..L */
    double conf[TFLM_MAX_FLOWS + 1];      /* [l] */
} tflm_profile;

/* Profile of tokens [from, n_tok) of a trace, pads excluded. ref (may be
 * NULL) gives the reference ids for the whole trace (tr->n_tok entries);
 * NULL means the trace's own final text (tr->tokens): for a generation,
 * agreement with the final text; for an encoded text (tflm_encode_ids, whose
 * tokens are the input), agreement with the input. */
tflm_status tflm_trace_profile(const tflm_trace *tr, const int *ref, int from, tflm_profile *out);

#ifdef __cplusplus
}
#endif
#endif /* TFLM_H */
