/* modelfile.c: models in files (DESIGN §4): load and check a safetensors
 * model against its own config (shapes, dtypes, finite values), write one,
 * randomly initialise one, and the default vocabulary. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

/* ---- vocabulary ------------------------------------------------------------ */

char **vocab_default(int *V) {
    char **v = calloc(97, sizeof *v);
    if (!v)
        return NULL;
    v[0] = strdup("<pad>");
    v[1] = strdup("\n");
    for (int i = 2; i < 97; i++) {
        char s[2] = { (char)(0x20 + i - 2), 0 };
        v[i] = strdup(s);
    }
    for (int i = 0; i < 97; i++)
        if (!v[i]) {
            for (int j = 0; j < 97; j++)
                free(v[j]);
            free(v);
            return NULL;
        }
    if (V)
        *V = 97;
    return v;
}

static void vocab_free(char **v, int V) {
    if (!v)
        return;
    for (int i = 0; i < V; i++)
        free(v[i]);
    free(v);
}

static tflm_status vocab_parse(Model *m, const char *text, const char *path) {
    json_error_t e;
    json_t *a = json_loads(text, 0, &e);
    tflm_status st = TFLM_OK;
    if (!json_is_array(a))
        st = tflm__err(TFLM_EFORMAT, "%s: tflm.vocab is not a JSON list of strings", path);
    else if ((int)json_array_size(a) != m->cfg.V)
        st = tflm__err(TFLM_EFORMAT, "%s: tflm.vocab has %zu tokens, but the config's vocab_size "
                       "is %d", path, json_array_size(a), m->cfg.V);
    else if (!(m->vocab = calloc((size_t)m->cfg.V, sizeof *m->vocab)))
        st = tflm__err(TFLM_ENOMEM, "%s: out of memory", path);
    for (int i = 0; !st && i < m->cfg.V; i++) {
        const char *s = json_string_value(json_array_get(a, i));
        if (!s || !*s)
            st = tflm__err(TFLM_EFORMAT, "%s: tflm.vocab entry %d is not a non-empty string",
                           path, i);
        else if (!(m->vocab[i] = strdup(s)))
            st = tflm__err(TFLM_ENOMEM, "%s: out of memory", path);
    }
    json_decref(a);
    return st;
}

/* ---- loading --------------------------------------------------------------- */

static void shape_str(char *buf, size_t n, int ndim, const int64_t *s) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)s[i]);
    if (k < n)
        snprintf(buf + k, n - k, "]");
}

static void want_str(char *buf, size_t n, const ParamInfo *p) {
    int64_t s[3] = { p->shape[0], p->shape[1], p->shape[2] };
    shape_str(buf, n, p->ndim, s);
}

static tflm_status check_tensor(const ParamInfo *p, const StTensor *t, const char *path) {
    char want[64], got[96];
    want_str(want, sizeof want, p);
    if (!t)
        return tflm__err(TFLM_EFORMAT, "%s: tensor '%s' is missing (config wants %s)", path,
                         p->name, want);
    int same = t->ndim == p->ndim;
    for (int i = 0; same && i < p->ndim; i++)
        same = t->shape[i] == p->shape[i];
    if (same)
        return TFLM_OK;
    shape_str(got, sizeof got, t->ndim, t->shape);
    return tflm__err(TFLM_EFORMAT, "%s: tensor '%s' has shape %s, config wants %s", path,
                     p->name, got, want);
}

/* file tensors the table does not know: refuse, except optimizer state */
static tflm_status check_extras(const Model *m, const char *path) {
    int known = 0;
    for (int i = 0; i < m->file.nt; i++)
        known += strncmp(m->file.t[i].name, "opt.", 4) != 0;
    if (known == m->params.n)   /* every param was found, names are unique */
        return TFLM_OK;
    for (int i = 0; i < m->file.nt; i++) {
        const char *name = m->file.t[i].name;
        int found = strncmp(name, "opt.", 4) == 0;
        for (int j = 0; !found && j < m->params.n; j++)
            found = strcmp(name, m->params.p[j].name) == 0;
        if (!found)
            return tflm__err(TFLM_EFORMAT, "%s: unexpected tensor '%s' (not part of this "
                             "config)", path, name);
    }
    return TFLM_OK;
}

static float half_to_float(uint16_t h) {
    int e = (h >> 10) & 31, f = h & 1023;
    float v = e == 0 ? ldexpf((float)f, -24)
            : e == 31 ? (f ? NAN : INFINITY)
            : ldexpf((float)(f | 1024), e - 25);
    return (h & 0x8000) ? -v : v;
}

static void widen(float *dst, const uint8_t *src, size_t n, int dtype) {
    for (size_t i = 0; i < n; i++) {
        uint16_t h = (uint16_t)(src[2 * i] | src[2 * i + 1] << 8);
        if (dtype == 1) {
            dst[i] = half_to_float(h);
        } else {
            uint32_t u = (uint32_t)h << 16;
            memcpy(&dst[i], &u, 4);
        }
    }
}

static int can_alias(const StFile *f, const StTensor *t) {
    return t->dtype == 0 && (((uintptr_t)(f->map + f->data_off + t->off)) & 3) == 0;
}

/* point every slot at its data: in the file when possible, else in owned */
static tflm_status bind_tensors(Model *m, const char *path) {
    size_t need = 0;
    for (int i = 0; i < m->params.n; i++) {
        const StTensor *t = st_find(&m->file, m->params.p[i].name);
        if (!can_alias(&m->file, t))
            need += m->params.p[i].numel;
    }
    if (need && !(m->owned = malloc(need * sizeof(float))))
        return tflm__err(TFLM_ENOMEM, "%s: out of memory for %zu weights", path, need);
    size_t off = 0;
    for (int i = 0; i < m->params.n; i++) {
        const ParamInfo *p = &m->params.p[i];
        const StTensor *t = st_find(&m->file, p->name);
        const uint8_t *src = m->file.map + m->file.data_off + t->off;
        if (can_alias(&m->file, t)) {
            *p->slot = (float *)(void *)src;
            continue;
        }
        *p->slot = m->owned + off;
        if (t->dtype == 0)
            memcpy(*p->slot, src, p->numel * sizeof(float));
        else
            widen(*p->slot, src, p->numel, t->dtype);
        off += p->numel;
    }
    return TFLM_OK;
}

static tflm_status check_finite(const Model *m, const char *path) {
    for (int i = 0; i < m->params.n; i++) {
        const ParamInfo *p = &m->params.p[i];
        const float *x = *p->slot;
        for (size_t j = 0; j < p->numel; j++)
            if (!isfinite(x[j]))
                return tflm__err(TFLM_EFORMAT, "%s: tensor '%s' holds %s at index %zu", path,
                                 p->name, isnan(x[j]) ? "NaN" : "infinity", j);
    }
    return TFLM_OK;
}

static tflm_status load_config(Model *m, const char *path) {
    const char *text = st_meta(&m->file, "tflm.config");
    if (!text)
        return tflm__err(TFLM_EFORMAT, "%s: no tflm.config in the metadata (not a tflm model "
                         "file?)", path);
    tflm_status st = config_parse(&m->cfg, text);
    if (st) {
        char msg[400];
        const char *e = tflm_last_error();
        snprintf(msg, sizeof msg, "%s", strncmp(e, "config: ", 8) ? e : e + 8);
        return tflm__err(st, "%s: tflm.config: %s", path, msg);
    }
    text = st_meta(&m->file, "tflm.vocab");
    if (!text)
        return tflm__err(TFLM_EFORMAT, "%s: no tflm.vocab in the metadata", path);
    return vocab_parse(m, text, path);
}

static tflm_status load_tensors(Model *m, const char *path) {
    tflm_status st = params_build(&m->params, &m->cfg, &m->w);
    if (st) {
        char msg[400];
        snprintf(msg, sizeof msg, "%s", tflm_last_error());
        return tflm__err(st, "%s: %s", path, msg);
    }
    for (int i = 0; !st && i < m->params.n; i++)
        st = check_tensor(&m->params.p[i], st_find(&m->file, m->params.p[i].name), path);
    if (!st)
        st = check_extras(m, path);
    if (!st)
        st = bind_tensors(m, path);
    if (!st)
        st = check_finite(m, path);
    return st;
}

tflm_status model_load(Model *m, const char *path, int use_mmap) {
    memset(m, 0, sizeof *m);
    if (!path)
        return tflm__err(TFLM_EINVAL, "model_load: no path");
    tflm_status st = st_open(&m->file, path, use_mmap);
    if (!st)
        st = load_config(m, path);
    if (!st)
        st = load_tensors(m, path);
    if (!st)
        m->meta = json_incref(m->file.meta);
    if (st)
        model_free(m);
    return st;
}

void model_free(Model *m) {
    if (!m)
        return;
    vocab_free(m->vocab, m->cfg.V);
    params_free(&m->params);
    st_close(&m->file);
    free(m->owned);
    json_decref(m->meta);
    memset(m, 0, sizeof *m);
    m->file.fd = -1;
}

/* ---- random initialisation ------------------------------------------------- */


static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* head bias of one mix1/affine channel: a = 0, m_k = 0.1 Phi^-1((k+1/2)/K), v = 0 */
static void head_bias(float *b, int K) {
    for (int k = 0; k < K; k++) {
        b[k] = 0;
        b[K + k] = (float)(0.1 * norm_ppf((k + 0.5) / K));
        b[2 * K + k] = 0;
    }
}

static void fill_normal(float *x, size_t n, double std, uint64_t seed, int idx) {
    for (size_t j = 0; j < n; j++)
        x[j] = (float)(std * rng_normal(rng_key(seed, RNG_INIT, (uint64_t)idx, j, 0)));
}

static void fill(float *x, size_t n, float v) {
    for (size_t j = 0; j < n; j++)
        x[j] = v;
}

/* maf.feat.weight [c, H2, (c-1)E]: column blocks j >= i stay zero */
static void maf_feat_mask(float *w, int c, int H2, int E) {
    size_t cols = (size_t)(c - 1) * E;
    for (int i = 0; i < c; i++)
        for (int h = 0; h < H2; h++)
            for (size_t col = (size_t)i * E; col < cols; col++)
                w[((size_t)i * H2 + h) * cols + col] = 0;
}

/* std of a normal-initialised parameter, or 0 when it is filled otherwise */
static double init_std(const Config *cfg, const ParamInfo *p) {
    const FlowConfig *fc = p->flow ? &cfg->flow[p->flow - 1] : NULL;
    const char *n = p->name;
    if (strcmp(n, "codebook.mean") == 0 || ends_with(n, ".sos"))
        return 1.0;
    if (ends_with(n, ".pos"))
        return 0.02;
    if (ends_with(n, "in_proj.weight"))
        return sqrt(1.0 / flow_cin(cfg));
    if (ends_with(n, "attn.out.weight") || ends_with(n, "mlp.proj.weight"))
        return 0.02 / sqrt(2.0 * fc->layers);
    if (ends_with(n, "head.weight"))
        return fc->type == FLOW_AR ? 0.02 : 0;
    if (ends_with(n, "maf.out.weight"))
        return 0;
    return p->kind == PK_MATRIX ? 0.02 : 0;
}

static void init_param(const Config *cfg, const ParamInfo *p, int idx, uint64_t seed) {
    float *x = *p->slot;
    const FlowConfig *fc = p->flow ? &cfg->flow[p->flow - 1] : NULL;
    double std = init_std(cfg, p);
    if (std > 0)
        fill_normal(x, p->numel, std, seed, idx);
    else if (strcmp(p->name, "codebook.log_sigma") == 0)
        fill(x, p->numel, (float)log(0.3));
    else if (ends_with(p->name, "ln1.weight") || ends_with(p->name, "ln2.weight") ||
             ends_with(p->name, "ln_f.weight"))
        fill(x, p->numel, 1.0f);
    else
        fill(x, p->numel, 0.0f);
    int coupling = fc && (fc->type == FLOW_MIX1 || fc->type == FLOW_AFFINE);
    if (coupling && (ends_with(p->name, "head.bias") || ends_with(p->name, "maf.out.bias")))
        for (int i = 0; i < cfg->c; i++)
            head_bias(x + (size_t)i * 3 * fc->K, fc->K);
    if (ends_with(p->name, "maf.feat.weight"))
        maf_feat_mask(x, cfg->c, fc->maf_H, fc->maf_E);
}

/* ---- metadata, new models, saving ------------------------------------------ */

/* tflm.config, tflm.vocab and the string entries of extra (may be NULL) */
static json_t *save_meta(const Model *m, json_t *extra) {
    char *cj = config_to_json(&m->cfg);
    json_t *voc = json_array();
    for (int i = 0; i < m->cfg.V; i++)
        json_array_append_new(voc, json_string(m->vocab[i]));
    char *vj = json_dumps(voc, JSON_ENSURE_ASCII);
    json_decref(voc);
    json_t *meta = json_object();
    if (!cj || !vj || !meta) {
        free(cj);
        free(vj);
        json_decref(meta);
        return NULL;
    }
    json_object_set_new(meta, "tflm.config", json_string(cj));
    json_object_set_new(meta, "tflm.vocab", json_string(vj));
    free(cj);
    free(vj);
    const char *k;
    json_t *v;
    json_object_foreach(extra, k, v) {
        if (json_is_string(v) && strcmp(k, "tflm.config") && strcmp(k, "tflm.vocab"))
            json_object_set(meta, k, v);
    }
    return meta;
}

tflm_status model_init(Model *m, const Config *cfg, uint64_t seed) {
    memset(m, 0, sizeof *m);
    if (cfg->V != 97)
        return tflm__err(TFLM_EUNSUPPORTED, "vocab_size %d: a new model can only use the default "
                         "97-token vocabulary", cfg->V);
    m->cfg = *cfg;
    tflm_status st = params_build(&m->params, &m->cfg, &m->w);
    if (st)
        return st;
    m->owned = malloc(m->params.total * sizeof(float));
    m->vocab = vocab_default(NULL);
    if (!m->owned || !m->vocab)
        st = tflm__err(TFLM_ENOMEM, "out of memory for %zu weights", m->params.total);
    if (!st) {
        params_bind(&m->params, m->owned);
        for (int i = 0; i < m->params.n; i++)
            init_param(&m->cfg, &m->params.p[i], i, seed);
        m->meta = save_meta(m, NULL);
        if (!m->meta)
            st = tflm__err(TFLM_ENOMEM, "out of memory initialising a model");
    }
    if (st)
        model_free(m);
    return st;
}

tflm_status model_save(const Model *m, const char *path, json_t *extra_meta) {
    return model_save_ex(m, path, extra_meta, NULL, 0);
}

tflm_status model_save_ex(const Model *m, const char *path, json_t *extra_meta,
                          const StWriteTensor *extra, int n_extra) {
    if (!m || !path || !m->vocab)
        return tflm__err(TFLM_EINVAL, "model_save: no model or path");
    StWriteTensor *t = calloc((size_t)m->params.n + n_extra + 1, sizeof *t);
    json_t *meta = save_meta(m, extra_meta);
    tflm_status st = TFLM_OK;
    if (!t || !meta)
        st = tflm__err(TFLM_ENOMEM, "%s: out of memory", path);
    for (int i = 0; !st && i < m->params.n; i++) {
        const ParamInfo *p = &m->params.p[i];
        t[i].name = p->name;
        t[i].ndim = p->ndim;
        for (int j = 0; j < p->ndim; j++)
            t[i].shape[j] = p->shape[j];
        t[i].data = *p->slot;
    }
    for (int i = 0; !st && i < n_extra; i++)
        t[m->params.n + i] = extra[i];
    if (!st)
        st = st_write(path, t, m->params.n + n_extra, meta);
    free(t);
    json_decref(meta);
    return st;
}
