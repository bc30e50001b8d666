/* config.c: the model configuration (DESIGN §4 `tflm.config`): parse and
 * check it with one-line errors naming the field, derive N, c and K, and
 * write it back in the same key order and spacing as the reference files. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

/* sane upper bounds; anything above is a typo or a broken file */
#define MAX_V (1 << 20)
#define MAX_DIM 4096
#define MAX_PATCH 64
#define MAX_WINDOW (1 << 20)
#define MAX_DMODEL 16384
#define MAX_K 1024

static const char *type_names[] = { "mix1", "affine", "mixd", "ar" };

/* An integer field of obj in [lo, hi]; missing is an error. */
static tflm_status get_int(json_t *obj, const char *where, const char *key, int lo, int hi,
                           int *out) {
    json_t *v = json_object_get(obj, key);
    if (!v)
        return tflm__err(TFLM_EFORMAT, "config: %s'%s' is missing", where, key);
    if (!json_is_integer(v))
        return tflm__err(TFLM_EFORMAT, "config: %s'%s' must be an integer", where, key);
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi)
        return tflm__err(TFLM_EFORMAT, "config: %s'%s' is %lld, must be in %d..%d", where, key,
                         (long long)x, lo, hi);
    *out = (int)x;
    return TFLM_OK;
}

static tflm_status check_header(json_t *root) {
    json_t *f = json_object_get(root, "format");
    if (!f)
        return tflm__err(TFLM_EFORMAT, "config: 'format' is missing (want \"tflm\")");
    if (!json_is_string(f) || strcmp(json_string_value(f), "tflm") != 0)
        return tflm__err(TFLM_EFORMAT, "config: 'format' must be \"tflm\"");
    json_t *v = json_object_get(root, "version");
    if (!v)
        return tflm__err(TFLM_EFORMAT, "config: 'version' is missing");
    if (!json_is_integer(v) || json_integer_value(v) != 1)
        return tflm__err(TFLM_EFORMAT, "config: unknown version (this build reads version 1)");
    return TFLM_OK;
}

static tflm_status parse_sizes(Config *cfg, json_t *root) {
    tflm_status st;
    if ((st = get_int(root, "", "vocab_size", 2, MAX_V, &cfg->V)) ||
        (st = get_int(root, "", "latent_dim", 1, MAX_DIM, &cfg->d)) ||
        (st = get_int(root, "", "patch", 1, MAX_PATCH, &cfg->P)) ||
        (st = get_int(root, "", "window", 1, MAX_WINDOW, &cfg->T)) ||
        (st = get_int(root, "", "d_model", 1, MAX_DMODEL, &cfg->D)) ||
        (st = get_int(root, "", "n_heads", 1, MAX_DMODEL, &cfg->H)) ||
        (st = get_int(root, "", "flip_block", 0, MAX_WINDOW, &cfg->B)))
        return st;
    if (cfg->D % cfg->H != 0)
        return tflm__err(TFLM_EFORMAT, "config: d_model %d is not a multiple of n_heads %d",
                         cfg->D, cfg->H);
    json_t *e = json_object_get(root, "ln_eps");
    cfg->ln_eps = 1e-5;
    if (e) {
        if (!json_is_number(e))
            return tflm__err(TFLM_EFORMAT, "config: 'ln_eps' must be a number");
        cfg->ln_eps = json_number_value(e);
        if (!(cfg->ln_eps > 0 && cfg->ln_eps <= 1))
            return tflm__err(TFLM_EFORMAT, "config: 'ln_eps' is %g, must be in (0, 1]",
                             cfg->ln_eps);
    }
    return TFLM_OK;
}

static tflm_status parse_type(json_t *fl, const char *where, int *type) {
    json_t *t = json_object_get(fl, "type");
    if (!t)
        return tflm__err(TFLM_EFORMAT, "config: %s'type' is missing", where);
    const char *s = json_is_string(t) ? json_string_value(t) : "";
    for (int i = 0; i < 4; i++)
        if (strcmp(s, type_names[i]) == 0) {
            *type = i;
            return TFLM_OK;
        }
    return tflm__err(TFLM_EFORMAT, "config: %sunknown type '%.40s' (mix1, affine, mixd or ar)",
                     where, s);
}

static tflm_status parse_dir(json_t *fl, const char *where, int l, int *dir) {
    json_t *t = json_object_get(fl, "direction");
    if (!t) {
        *dir = (l - 1) % 2 ? DIR_FLIP : DIR_L2R;   /* alternate, l2r first */
        return TFLM_OK;
    }
    const char *s = json_is_string(t) ? json_string_value(t) : "";
    if (strcmp(s, "l2r") == 0)
        *dir = DIR_L2R;
    else if (strcmp(s, "flip") == 0)
        *dir = DIR_FLIP;
    else
        return tflm__err(TFLM_EFORMAT, "config: %sunknown direction '%.40s' (l2r or flip)",
                         where, s);
    return TFLM_OK;
}

static tflm_status parse_maf(const Config *cfg, FlowConfig *fc, json_t *fl, const char *where) {
    json_t *maf = json_object_get(fl, "maf");
    if (!maf || json_is_null(maf))
        return TFLM_OK;
    if (fc->type != FLOW_MIX1 && fc->type != FLOW_AFFINE)
        return tflm__err(TFLM_EFORMAT, "config: %s'maf' is allowed on mix1 and affine flows only",
                         where);
    if (!json_is_object(maf))
        return tflm__err(TFLM_EFORMAT, "config: %s'maf' must be an object {embed, hidden}", where);
    if (cfg->P * cfg->d < 2)
        return tflm__err(TFLM_EFORMAT, "config: %s'maf' needs at least 2 channels (patch*latent_dim)",
                         where);
    char w2[64];
    snprintf(w2, sizeof w2, "%smaf.", where);
    tflm_status st = get_int(maf, w2, "embed", 1, MAX_DIM, &fc->maf_E);
    if (!st)
        st = get_int(maf, w2, "hidden", 1, MAX_DIM, &fc->maf_H);
    return st;
}

static tflm_status parse_flow(Config *cfg, json_t *fl, int l, int nflows) {
    FlowConfig *fc = &cfg->flow[l - 1];
    char where[48];
    snprintf(where, sizeof where, "flows[%d].", l - 1);
    if (!json_is_object(fl))
        return tflm__err(TFLM_EFORMAT, "config: flows[%d] must be an object", l - 1);
    tflm_status st = parse_type(fl, where, &fc->type);
    if (!st)
        st = get_int(fl, where, "layers", 1, MAX_BLOCKS, &fc->layers);
    if (!st)
        st = parse_dir(fl, where, l, &fc->dir);
    if (st)
        return st;
    if (fc->type == FLOW_AR && nflows != 1)
        return tflm__err(TFLM_EFORMAT, "config: an 'ar' model must have exactly one flow entry");
    if (fc->type == FLOW_AR && fc->dir != DIR_L2R)
        return tflm__err(TFLM_EFORMAT, "config: %s'direction' of an ar flow must be l2r", where);
    if (fc->type == FLOW_MIXD && l != 1)
        return tflm__err(TFLM_EFORMAT, "config: %smixd is allowed only at flow 1", where);
    fc->K = fc->type == FLOW_AFFINE ? 1 : fc->type == FLOW_MIXD ? cfg->V : 0;
    if (fc->type == FLOW_MIX1 && (st = get_int(fl, where, "mixtures", 1, MAX_K, &fc->K)))
        return st;
    return parse_maf(cfg, fc, fl, where);
}

static tflm_status parse_flows(Config *cfg, json_t *root) {
    json_t *flows = json_object_get(root, "flows");
    if (!flows)
        return tflm__err(TFLM_EFORMAT, "config: 'flows' is missing");
    if (!json_is_array(flows))
        return tflm__err(TFLM_EFORMAT, "config: 'flows' must be a list");
    size_t n = json_array_size(flows);
    if (n < 1 || n > MAX_FLOWS)
        return tflm__err(TFLM_EFORMAT, "config: 'flows' has %zu entries, must be 1..%d", n,
                         MAX_FLOWS);
    cfg->L = (int)n;
    for (int l = 1; l <= cfg->L; l++) {
        tflm_status st = parse_flow(cfg, json_array_get(flows, l - 1), l, cfg->L);
        if (st)
            return st;
    }
    cfg->is_ar = cfg->flow[0].type == FLOW_AR;
    return TFLM_OK;
}

/* N, c and the window/block checks, after everything is read */
static tflm_status derive(Config *cfg) {
    if (cfg->is_ar)
        cfg->P = 1;   /* ar ignores the patch */
    if (cfg->T % cfg->P != 0)
        return tflm__err(TFLM_EFORMAT, "config: window %d is not a multiple of patch %d", cfg->T,
                         cfg->P);
    cfg->N = cfg->T / cfg->P;
    cfg->c = cfg->P * cfg->d;
    if (cfg->B > cfg->N)
        return tflm__err(TFLM_EFORMAT,
                         "config: flip_block %d is larger than the window's %d positions", cfg->B,
                         cfg->N);
    /* engine limits: per-position work buffers live on the stack */
    if (cfg->V > 1024)
        return tflm__err(TFLM_EFORMAT, "config: vocab_size %d is above this engine's limit of 1024",
                         cfg->V);
    if (cfg->c > 512)
        return tflm__err(TFLM_EFORMAT,
                         "config: patch * latent_dim = %d channels is above this engine's limit of 512",
                         cfg->c);
    return TFLM_OK;
}

tflm_status config_from_json(Config *cfg, json_t *root) {
    memset(cfg, 0, sizeof *cfg);
    if (!json_is_object(root))
        return tflm__err(TFLM_EFORMAT, "config: not a JSON object");
    tflm_status st = check_header(root);
    if (!st)
        st = parse_sizes(cfg, root);
    if (!st)
        st = parse_flows(cfg, root);
    if (!st)
        st = derive(cfg);
    return st;
}

tflm_status config_parse(Config *cfg, const char *json_text) {
    if (!cfg || !json_text)
        return tflm__err(TFLM_EINVAL, "config: no text given");
    json_error_t e;
    json_t *root = json_loads(json_text, JSON_REJECT_DUPLICATES, &e);
    if (!root) {
        memset(cfg, 0, sizeof *cfg);
        return tflm__err(TFLM_EFORMAT, "config: not valid JSON: %s (line %d, column %d)", e.text,
                         e.line, e.column);
    }
    tflm_status st = config_from_json(cfg, root);
    json_decref(root);
    return st;
}

/* ---- writing ------------------------------------------------------------- */

/* a double the way Python's repr writes it: shortest text that reads back */
static void fmt_double(char *buf, size_t n, double x) {
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, n, "%.*g", p, x);
        if (strtod(buf, NULL) == x)
            break;
    }
    if (!strpbrk(buf, ".eEn"))
        strncat(buf, ".0", n - strlen(buf) - 1);
}

static void put(char *buf, size_t cap, size_t *len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void put(char *buf, size_t cap, size_t *len, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(buf + *len, cap - *len, fmt, ap);
    va_end(ap);
    if (k > 0)
        *len += (size_t)k < cap - *len ? (size_t)k : cap - *len - 1;
}

static void put_flow(char *buf, size_t cap, size_t *len, const FlowConfig *fc) {
    put(buf, cap, len, "{\"type\": \"%s\", \"layers\": %d", type_names[fc->type], fc->layers);
    if (fc->type == FLOW_MIX1)
        put(buf, cap, len, ", \"mixtures\": %d", fc->K);
    if (fc->type != FLOW_AR)
        put(buf, cap, len, ", \"direction\": \"%s\"", fc->dir == DIR_FLIP ? "flip" : "l2r");
    if (fc->maf_E > 0)
        put(buf, cap, len, ", \"maf\": {\"embed\": %d, \"hidden\": %d}", fc->maf_E, fc->maf_H);
    put(buf, cap, len, "}");
}

char *config_to_json(const Config *cfg) {
    size_t cap = 512 + (size_t)cfg->L * 160, len = 0;
    char *buf = malloc(cap), eps[40];
    if (!buf)
        return NULL;
    buf[0] = 0;
    fmt_double(eps, sizeof eps, cfg->ln_eps);
    put(buf, cap, &len,
        "{\"format\": \"tflm\", \"version\": 1, \"vocab_size\": %d, \"latent_dim\": %d, "
        "\"patch\": %d, \"window\": %d, \"d_model\": %d, \"n_heads\": %d, \"flip_block\": %d, "
        "\"ln_eps\": %s, \"flows\": [",
        cfg->V, cfg->d, cfg->P, cfg->T, cfg->D, cfg->H, cfg->B, eps);
    for (int l = 0; l < cfg->L; l++) {
        if (l)
            put(buf, cap, &len, ", ");
        put_flow(buf, cap, &len, &cfg->flow[l]);
    }
    put(buf, cap, &len, "]}");
    return buf;
}

int flow_cin(const Config *cfg) { return cfg->is_ar ? cfg->d : cfg->c; }

int flow_hout(const Config *cfg, int l) {
    const FlowConfig *fc = &cfg->flow[l - 1];
    switch (fc->type) {
    case FLOW_MIX1:
    case FLOW_AFFINE: return fc->maf_E > 0 ? 0 : cfg->c * 3 * fc->K;
    case FLOW_MIXD: return cfg->P * cfg->V;
    case FLOW_AR: return cfg->V;
    }
    return 0;
}

int flow_head(const Config *cfg, int l, const FlowWeights *fw, const float **W, const float **b) {
    const FlowConfig *fc = &cfg->flow[l - 1];
    if (fc->maf_E > 0) {
        if (fw) { *W = fw->maf_ctx_w; *b = fw->maf_hid_b; }
        return cfg->c * fc->maf_H;
    }
    if (fw) { *W = fw->head_w; *b = fw->head_b; }
    return flow_hout(cfg, l);
}
