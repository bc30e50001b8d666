/* test_file.c: configs, the parameter table, safetensors files, model
 * init/save/load round trips, malformed files (each refused with the right
 * status and a telling message), the shared fixtures and the tokenizer. */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include "internal.h"
#include "tap.h"

static char tmpdir[64];
static const char *configs[] = { "tiny-mix1", "tiny-affine", "tiny-mixd", "tiny-maf", "tiny-ar" };

/* ---- small helpers ---------------------------------------------------------- */

static char *tmp_path(const char *name) {
    static char buf[8][256];
    static int k;
    char *p = buf[k++ % 8];
    snprintf(p, 256, "%s/%s", tmpdir, name);
    return p;
}

static uint8_t *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)n + 1);
    if (fread(b, 1, (size_t)n, f) != (size_t)n)
        n = 0;
    b[n] = 0;
    fclose(f);
    *len = (size_t)n;
    return b;
}

static void spit(const char *path, const void *b, size_t len) {
    FILE *f = fopen(path, "wb");
    if (f) {
        fwrite(b, 1, len, f);
        fclose(f);
    }
}

static int has(const char *s, const char *word) { return strstr(s, word) != NULL; }

/* the last error, for messages of checks that expect success */
static const char *why(tflm_status st) { return st ? tflm_last_error() : "ok"; }

static int utf8_chars(const char *s) {
    int n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

/* tests/configs/<name>.json under $TFLM_SRCDIR, else . or .. */
static char *config_text(const char *name) {
    const char *env = getenv("TFLM_SRCDIR");
    const char *dirs[3] = { env ? env : ".", "..", "." };
    char path[512];
    size_t len;
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/tests/configs/%s.json", dirs[i], name);
        char *text = (char *)slurp(path, &len);
        if (text)
            return text;
    }
    printf("# cannot read tests/configs/%s.json (set TFLM_SRCDIR)\n", name);
    return NULL;
}

static const ParamInfo *param(const Model *m, const char *name) {
    for (int i = 0; i < m->params.n; i++)
        if (strcmp(m->params.p[i].name, name) == 0)
            return &m->params.p[i];
    return NULL;
}

/* ---- config ------------------------------------------------------------------ */

static const char *base_cfg =
    "{\"format\": \"tflm\", \"version\": 1, \"vocab_size\": 97, \"latent_dim\": 4, "
    "\"patch\": 2, \"window\": 16, \"d_model\": 16, \"n_heads\": 2, \"flip_block\": 4, "
    "\"flows\": [{\"type\": \"mixd\", \"layers\": 1}, {\"type\": \"mix1\", \"layers\": 2, "
    "\"mixtures\": 3}, {\"type\": \"affine\", \"layers\": 1, \"maf\": {\"embed\": 2, "
    "\"hidden\": 5}}]}";

/* parse base_cfg with the keys of patch replaced (null deletes a key) */
static tflm_status parse_patched(const char *patch, Config *cfg) {
    json_t *root = json_loads(base_cfg, 0, NULL), *p = json_loads(patch, 0, NULL);
    const char *k;
    json_t *v;
    json_object_foreach(p, k, v) {
        if (json_is_null(v))
            json_object_del(root, k);
        else
            json_object_set(root, k, v);
    }
    char *text = json_dumps(root, 0);
    tflm_status st = config_parse(cfg, text);
    free(text);
    json_decref(root);
    json_decref(p);
    return st;
}

static void test_config_ok(void) {
    Config c;
    tflm_status st = config_parse(&c, base_cfg);
    CHECK(st == TFLM_OK, "base config parses: %s", why(st));
    CHECK(c.L == 3 && c.N == 8 && c.c == 8 && c.P == 2 && !c.is_ar, "L, N, c, P derived");
    CHECK(c.flow[0].dir == DIR_L2R && c.flow[1].dir == DIR_FLIP && c.flow[2].dir == DIR_L2R,
          "missing directions alternate from l2r");
    CHECK(c.ln_eps == 1e-5, "ln_eps defaults to 1e-5");
    CHECK(c.flow[0].K == 97 && c.flow[1].K == 3 && c.flow[2].K == 1, "K: mixd V, mix1, affine 1");
    CHECK(c.flow[2].maf_E == 2 && c.flow[2].maf_H == 5, "maf sizes read");
    CHECK(flow_hout(&c, 1) == 2 * 97 && flow_hout(&c, 2) == 8 * 9 && flow_hout(&c, 3) == 0,
          "flow_hout: mixd P*V, mix1 c*3K, maf 0");
    CHECK(flow_cin(&c) == 8, "flow_cin is c");
    st = parse_patched("{\"window\": 16, \"patch\": 1, \"flip_block\": 5}", &c);
    CHECK(st == TFLM_OK, "a flip_block that does not divide N is fine: %s", why(st));
    st = parse_patched("{\"patch\": 3, \"window\": 12, \"flows\": [{\"type\": \"ar\", "
                       "\"layers\": 2}]}", &c);
    CHECK(st == TFLM_OK, "ar parses: %s", why(st));
    CHECK(c.is_ar && c.P == 1 && c.N == 12 && c.c == 4 && c.L == 1 && c.flow[0].K == 0,
          "ar ignores the patch: P 1, N T, c d");
    CHECK(flow_hout(&c, 1) == 97 && flow_cin(&c) == 4, "ar hout V, cin d");
    for (int i = 0; i < 5; i++) {
        char *text = config_text(configs[i]);
        st = text ? config_parse(&c, text) : TFLM_EIO;
        CHECK(st == TFLM_OK, "%s parses: %s", configs[i], why(st));
        char *back = text ? config_to_json(&c) : NULL;
        if (text)
            text[strcspn(text, "\n")] = 0;
        CHECK(back && strcmp(back, text) == 0, "%s: config_to_json writes it back byte for byte",
              configs[i]);
        free(back);
        free(text);
    }
}

static void test_config_errors(void) {
    static const struct { const char *patch, *word; } cases[] = {
        { "{\"version\": 2}", "version" },
        { "{\"format\": \"gguf\"}", "format" },
        { "{\"window\": 15}", "multiple of patch" },
        { "{\"d_model\": 18, \"n_heads\": 4}", "n_heads" },
        { "{\"flows\": [{\"type\": \"mix1\", \"layers\": 1, \"mixtures\": 2}, "
          "{\"type\": \"mixd\", \"layers\": 1}]}", "mixd" },
        { "{\"flows\": []}", "flows" },
        { "{\"flows\": [{\"type\": \"affine\", \"layers\": 1}, {\"type\": \"affine\", "
          "\"layers\": 1}, {\"type\": \"affine\", \"layers\": 1}, {\"type\": \"affine\", "
          "\"layers\": 1}, {\"type\": \"affine\", \"layers\": 1}, {\"type\": \"affine\", "
          "\"layers\": 1}, {\"type\": \"affine\", \"layers\": 1}, {\"type\": \"affine\", "
          "\"layers\": 1}, {\"type\": \"affine\", \"layers\": 1}, {\"type\": \"affine\", "
          "\"layers\": 1}, {\"type\": \"affine\", \"layers\": 1}, {\"type\": \"affine\", "
          "\"layers\": 1}, {\"type\": \"affine\", \"layers\": 1}, {\"type\": \"affine\", "
          "\"layers\": 1}, {\"type\": \"affine\", \"layers\": 1}, {\"type\": \"affine\", "
          "\"layers\": 1}, {\"type\": \"affine\", \"layers\": 1}]}", "flows" },
        { "{\"flows\": [{\"type\": \"affine\", \"layers\": 0}]}", "layers" },
        { "{\"flows\": [{\"type\": \"affine\", \"layers\": 33}]}", "layers" },
        { "{\"flows\": [{\"type\": \"mixd\", \"layers\": 1, \"maf\": {\"embed\": 2, "
          "\"hidden\": 2}}]}", "maf" },
        { "{\"flows\": [{\"type\": \"mix1\", \"layers\": 1, \"mixtures\": 2, \"maf\": "
          "{\"embed\": 2}}]}", "hidden" },
        { "{\"flows\": [{\"type\": \"mix2\", \"layers\": 1}]}", "type" },
        { "{\"flows\": [{\"type\": \"affine\", \"layers\": 1, \"direction\": \"r2l\"}]}",
          "direction" },
        { "{\"flows\": [{\"type\": \"ar\", \"layers\": 1}, {\"type\": \"ar\", \"layers\": 1}]}",
          "ar" },
        { "{\"flows\": [{\"type\": \"mix1\", \"layers\": 1}]}", "mixtures" },
        { "{\"vocab_size\": -1}", "vocab_size" },
        { "{\"latent_dim\": null}", "latent_dim" },
        { "{\"patch\": 1.5}", "patch" },
        { "{\"flip_block\": 9}", "flip_block" },
        { "{\"ln_eps\": -1}", "ln_eps" },
        { "{\"d_model\": 100000}", "d_model" },
        { "{\"flows\": null}", "flows" },
    };
    Config c;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tflm_status st = parse_patched(cases[i].patch, &c);
        const char *msg = tflm_last_error();
        CHECK(st == TFLM_EFORMAT && has(msg, cases[i].word) && !strchr(msg, '\n'),
              "config %s refused naming '%s': %s", cases[i].patch, cases[i].word, msg);
    }
    CHECK(config_parse(&c, "{\"format\": ") == TFLM_EFORMAT && has(tflm_last_error(), "JSON"),
          "config that is not JSON refused: %s", tflm_last_error());
    CHECK(config_parse(&c, "[1, 2]") == TFLM_EFORMAT && has(tflm_last_error(), "object"),
          "config that is not an object refused: %s", tflm_last_error());
}

/* ---- parameter table and init ------------------------------------------------ */

static void test_table(void) {
    char *text = config_text("tiny-maf");
    Config c;
    Weights w;
    ParamTable t;
    config_parse(&c, text ? text : "");
    free(text);
    CHECK(params_build(&t, &c, &w) == TFLM_OK, "params_build tiny-maf");
    size_t sum = 0;
    int ok = 1;
    for (int i = 0; i < t.n; i++)
        sum += t.p[i].numel;
    Model m = { 0 };
    m.params = t;
    const ParamInfo *feat = param(&m, "flows.1.maf.feat.weight");
    const ParamInfo *out = param(&m, "flows.1.maf.out.weight");
    const ParamInfo *cl = param(&m, "flows.2.clamp");
    const ParamInfo *hd = param(&m, "flows.3.head.weight");
    ok = feat && feat->ndim == 3 && feat->shape[0] == 8 && feat->shape[1] == 8 &&
         feat->shape[2] == 28 && feat->kind == PK_MATRIX;
    CHECK(ok, "maf.feat.weight is [c, H2, (c-1)E] = [8, 8, 28]");
    CHECK(out && out->shape[0] == 8 && out->shape[1] == 9 && out->shape[2] == 8,
          "maf.out.weight is [c, 3K, H2]");
    CHECK(cl && cl->shape[0] == 8 && cl->shape[1] == 1 && cl->kind == PK_OTHER,
          "affine clamp is [c, 1]");
    CHECK(hd && hd->shape[0] == 8 * 6 && hd->shape[1] == 16, "mix1 K=2 head is [c*3K, D]");
    CHECK(!param(&m, "flows.1.head.weight") && !param(&m, "flows.2.head.bias"),
          "no head tensors with maf");
    CHECK(sum == t.total, "total is the sum of numel (%zu)", t.total);
    float *buf = calloc(t.total, sizeof(float));
    params_bind(&t, buf);
    CHECK(w.cb_mean == buf && w.flow[0].maf_feat_w && w.flow[2].head_w &&
          !w.flow[0].head_w && w.flow[2].blk[0].proj_b, "params_bind fills the Weights slots");
    CHECK(w.cb_logsig == buf + 97 * 4, "slots follow table order");
    free(buf);
    params_free(&t);
}

static int all_equal(const float *x, size_t n, float v) {
    for (size_t i = 0; i < n; i++)
        if (x[i] != v)
            return 0;
    return 1;
}

static void test_init_values(void) {
    char *text = config_text("tiny-maf");
    Config c;
    Model m;
    config_parse(&c, text ? text : "");
    free(text);
    tflm_status st = model_init(&m, &c, 5);
    CHECK(st == TFLM_OK, "model_init tiny-maf: %s", why(st));
    if (!m.owned)
        return;
    FlowWeights *f1 = &m.w.flow[0], *f3 = &m.w.flow[2];
    CHECK(all_equal(m.w.cb_logsig, 97, (float)log(0.3)), "log_sigma = log 0.3");
    CHECK(all_equal(f3->head_w, 48 * 16, 0) && all_equal(f1->maf_out_w, 8 * 9 * 8, 0),
          "last head weights are zero");
    CHECK(all_equal(f1->blk[0].ln1_w, 16, 1) && all_equal(f1->lnf_w, 16, 1) &&
          all_equal(f1->lnf_b, 16, 0), "LayerNorm weights 1, biases 0");
    CHECK(all_equal(f1->clamp, 8 * 3, 0), "clamp 0");
    double m0 = 0.1 * -0.96742156610170104;   /* 0.1 Phi^-1(1/6) */
    CHECK_NEAR(f1->maf_out_b[3], m0, 1e-7, "maf.out.bias m_0 = 0.1 Phi^-1(1/6)");
    CHECK_NEAR(f1->maf_out_b[9 + 5], -m0, 1e-7, "channel 1 m_2 = 0.1 Phi^-1(5/6)");
    CHECK(f1->maf_out_b[4] == 0 && f1->maf_out_b[0] == 0 && f1->maf_out_b[8] == 0,
          "mean 0 at the middle component, logits and log-variances 0");
    CHECK_NEAR(f3->head_b[2], 0.1 * -0.67448975019608171, 1e-7, "mix1 K=2 head m_0");
    int masked = 1;
    for (int i = 0; i < 8; i++)
        for (int h = 0; h < 8; h++)
            for (int col = 0; col < 28; col++) {
                float x = f1->maf_feat_w[(i * 8 + h) * 28 + col];
                if ((col / 4 >= i) != (x == 0))
                    masked = 0;
            }
    CHECK(masked, "maf.feat.weight: blocks j >= i zero, the rest random");
    double s2 = 0;
    for (int i = 0; i < 48 * 16; i++)
        s2 += (double)f1->blk[0].qkv_w[i] * f1->blk[0].qkv_w[i];
    CHECK_NEAR(sqrt(s2 / (48 * 16)), 0.02, 0.003, "qkv weights have std 0.02");
    s2 = 0;
    for (int i = 0; i < 16 * 8; i++)
        s2 += (double)f1->in_w[i] * f1->in_w[i];
    CHECK_NEAR(sqrt(s2 / 128), sqrt(1.0 / 8), 0.07, "in_proj std sqrt(1/c)");
    Model m2;
    model_init(&m2, &c, 5);
    CHECK(m2.owned && memcmp(m.owned, m2.owned, m.params.total * 4) == 0,
          "same seed, same weights");
    model_free(&m2);
    model_init(&m2, &c, 6);
    CHECK(m2.owned && memcmp(m.owned, m2.owned, 97 * 4 * 4) != 0, "another seed differs");
    model_free(&m2);
    model_free(&m);
    c.V = 50;
    CHECK(model_init(&m, &c, 1) == TFLM_EUNSUPPORTED && has(tflm_last_error(), "vocab"),
          "model_init refuses a non-default vocab_size: %s", tflm_last_error());
}

/* ---- round trips -------------------------------------------------------------- */

static int same_model(const Model *a, const Model *b) {
    char *ca = config_to_json(&a->cfg), *cb = config_to_json(&b->cfg);
    int same = strcmp(ca, cb) == 0 && a->params.n == b->params.n && a->cfg.V == b->cfg.V;
    free(ca);
    free(cb);
    for (int i = 0; same && i < a->params.n; i++) {
        const ParamInfo *p = &a->params.p[i], *q = &b->params.p[i];
        same = strcmp(p->name, q->name) == 0 && p->numel == q->numel &&
               memcmp(*p->slot, *q->slot, p->numel * sizeof(float)) == 0;
    }
    for (int i = 0; same && i < a->cfg.V; i++)
        same = strcmp(a->vocab[i], b->vocab[i]) == 0;
    return same;
}

static void round_trip(const char *name) {
    char *text = config_text(name), path[300], path2[310];
    Config c;
    Model m, l1, l2;
    snprintf(path, sizeof path, "%s", tmp_path(name));
    snprintf(path2, sizeof path2, "%s.again", path);
    if (!text || config_parse(&c, text) != TFLM_OK || model_init(&m, &c, 11) != TFLM_OK) {
        CHECK(0, "%s: init: %s", name, tflm_last_error());
        free(text);
        return;
    }
    free(text);
    json_t *extra = json_pack("{s:s,s:i}", "tflm.train", "{\"steps\": 3}", "ignored", 1);
    tflm_status st = model_save(&m, path, extra);
    CHECK(st == TFLM_OK, "%s: save: %s", name, why(st));
    char tmp[310];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    CHECK(access(tmp, F_OK) != 0, "%s: no temporary file left", name);
    tflm_status s1 = model_load(&l1, path, 1), s2 = model_load(&l2, path, 0);
    CHECK(s1 == TFLM_OK && s2 == TFLM_OK, "%s: load (mmap and read): %s", name, why(s1 | s2));
    if (s1 == TFLM_OK && s2 == TFLM_OK) {
        CHECK(same_model(&m, &l1) && same_model(&m, &l2), "%s: loaded == saved, bit for bit",
              name);
        CHECK(l1.owned == NULL, "%s: mmapped F32 weights bound in place", name);
        const char *tr = json_string_value(json_object_get(l1.meta, "tflm.train"));
        CHECK(tr && strcmp(tr, "{\"steps\": 3}") == 0 &&
              !json_object_get(l1.meta, "ignored"), "%s: extra string metadata kept", name);
        model_save(&l1, path2, extra);
        size_t n1, n2;
        uint8_t *b1 = slurp(path, &n1), *b2 = slurp(path2, &n2);
        CHECK(b1 && b2 && n1 == n2 && memcmp(b1, b2, n1) == 0,
              "%s: saving the loaded model gives the same bytes", name);
        CHECK(n1 > 8 && (b1[0] | b1[1] << 8) % 8 == 0, "%s: header padded to 8 bytes", name);
        free(b1);
        free(b2);
    }
    json_decref(extra);
    model_free(&l1);
    model_free(&l2);
    model_free(&m);
}

/* ---- malformed files ----------------------------------------------------------- */

static uint8_t *good;       /* a valid tiny-mix1 file */
static size_t good_len;

typedef void (*EditFn)(json_t *root);

/* rewrite the good file's header with edit, keep the data section; extra
 * spaces (0..7) beyond the 8-byte padding misalign the data on purpose */
static void write_edited(const char *path, EditFn edit, int extra, const void *tail,
                         size_t tail_len) {
    size_t n = (size_t)good[0] | (size_t)good[1] << 8 | (size_t)good[2] << 16;
    json_t *root = json_loadb((const char *)good + 8, n, 0, NULL);
    if (edit)
        edit(root);
    char *h = json_dumps(root, JSON_COMPACT);
    size_t hl = strlen(h), padded = (hl + 7) / 8 * 8 + (size_t)extra;
    uint8_t *buf = malloc(8 + padded + (good_len - 8 - n) + tail_len);
    for (int i = 0; i < 8; i++)
        buf[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    memcpy(buf + 8, h, hl);
    memset(buf + 8 + hl, ' ', padded - hl);
    memcpy(buf + 8 + padded, good + 8 + n, good_len - 8 - n);
    if (tail_len)
        memcpy(buf + 8 + padded + good_len - 8 - n, tail, tail_len);
    spit(path, buf, 8 + padded + good_len - 8 - n + tail_len);
    free(buf);
    free(h);
    json_decref(root);
}

static json_t *entry(json_t *root, const char *name) { return json_object_get(root, name); }

static void set_offsets(json_t *root, const char *name, long long a, long long b) {
    json_object_set_new(entry(root, name), "data_offsets", json_pack("[I,I]", a, b));
}

static long long offset_of(json_t *root, const char *name, int which) {
    return json_integer_value(json_array_get(json_object_get(entry(root, name),
                                                             "data_offsets"), which));
}

static void ed_offsets_past(json_t *r) { set_offsets(r, "flows.1.pos", 10, 1 << 30); }
static void ed_overlap(json_t *r) {
    long long a = offset_of(r, "flows.1.sos", 0), len = offset_of(r, "flows.1.sos", 1) - a;
    set_offsets(r, "flows.2.sos", a + 4, a + 4 + len);
}
static void ed_dtype(json_t *r) {
    json_object_set_new(entry(r, "flows.1.sos"), "dtype", json_string("I32"));
}
static void ed_shape(json_t *r) {
    json_object_set_new(entry(r, "flows.1.in_proj.weight"), "shape", json_pack("[i,i]", 4, 16));
}
static void ed_bytes(json_t *r) {
    json_object_set_new(entry(r, "codebook.log_sigma"), "shape", json_pack("[i]", 96));
}
static void ed_negshape(json_t *r) {
    json_object_set_new(entry(r, "codebook.log_sigma"), "shape", json_pack("[i,i]", -1, -97));
}
static void ed_badoffsets(json_t *r) {
    json_object_set_new(entry(r, "codebook.log_sigma"), "data_offsets", json_pack("[i]", 0));
}
static void ed_missing(json_t *r) { json_object_del(r, "flows.2.blocks.0.mlp.fc.bias"); }
static void ed_nodtype(json_t *r) { json_object_del(entry(r, "flows.1.sos"), "dtype"); }
static json_t *meta(json_t *r) { return json_object_get(r, "__metadata__"); }
static void set_config(json_t *r, const char *from, const char *to) {
    const char *s = json_string_value(json_object_get(meta(r), "tflm.config"));
    char buf[4096];
    const char *at = strstr(s, from);
    if (!at)
        return;
    snprintf(buf, sizeof buf, "%.*s%s%s", (int)(at - s), s, to, at + strlen(from));
    json_object_set_new(meta(r), "tflm.config", json_string(buf));
}
static void ed_version(json_t *r) { set_config(r, "\"version\": 1", "\"version\": 7"); }
static void ed_noconfig(json_t *r) { json_object_del(meta(r), "tflm.config"); }
static void ed_novocab(json_t *r) { json_object_del(meta(r), "tflm.vocab"); }
static void ed_shortvocab(json_t *r) {
    json_object_set_new(meta(r), "tflm.vocab", json_string("[\"<pad>\", \"a\"]"));
}
static void ed_metaint(json_t *r) { json_object_set_new(meta(r), "tflm.steps", json_integer(3)); }
static void ed_extra(json_t *r) {
    json_object_set_new(r, "flows.9.mystery", json_pack("{s:s,s:[i],s:[i,i]}", "dtype", "F32",
                                                        "shape", 0, "data_offsets", 0, 0));
}
static void ed_opt(json_t *r) {
    json_object_set_new(r, "opt.m.codebook.log_sigma", json_pack("{s:s,s:[i],s:[i,i]}", "dtype",
                                                                 "F32", "shape", 0,
                                                                 "data_offsets", 0, 0));
}
static void ed_array(json_t *r) { json_object_clear(r); }
static void ed_longname(json_t *r) {
    char name[200];
    memset(name, 'x', sizeof name - 1);
    name[sizeof name - 1] = 0;
    json_object_set_new(r, name, json_pack("{s:s,s:[i],s:[i,i]}", "dtype", "F32", "shape", 0,
                                           "data_offsets", 0, 0));
}

/* file tensor -> its bytes in the good file */
static uint8_t *tensor_bytes(const char *name) {
    StFile f;
    if (st_open(&f, tmp_path("good"), 0) != TFLM_OK)
        return NULL;
    const StTensor *t = st_find(&f, name);
    size_t at = t ? f.data_off + t->off : 0;
    st_close(&f);
    return t ? good + at : NULL;
}

/* refused with mmap and with read (valgrind sees reads past a malloc'ed copy) */
static void expect_refused(const char *label, tflm_status want, const char *word) {
    for (int use_mmap = 1; use_mmap >= 0; use_mmap--) {
        Model m;
        tflm_status st = model_load(&m, tmp_path("bad"), use_mmap);
        const char *msg = tflm_last_error();
        CHECK(st == want && has(msg, word) && !strchr(msg, '\n'),
              "%s refused%s (status %d, wants %d) naming '%s': %s", label,
              use_mmap ? "" : " (read)", st, want, word, msg);
        CHECK(m.owned == NULL && m.vocab == NULL && m.file.map == NULL,
              "%s: nothing left held", label);
        if (st == TFLM_OK)
            model_free(&m);
    }
}

static void edited(const char *label, EditFn fn, const char *word) {
    write_edited(tmp_path("bad"), fn, 0, NULL, 0);
    expect_refused(label, TFLM_EFORMAT, word);
}

static void test_bytes_edits(void) {
    uint8_t *b = malloc(good_len);
    spit(tmp_path("bad"), good, 4);
    expect_refused("4-byte file", TFLM_EFORMAT, "shorter");
    spit(tmp_path("bad"), good, good_len - 100);
    expect_refused("truncated data", TFLM_EFORMAT, "past the end");
    memcpy(b, good, good_len);
    uint64_t lie = good_len - 7;
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(lie >> (8 * i));
    spit(tmp_path("bad"), b, good_len);
    expect_refused("header length past the file", TFLM_EFORMAT, "header length");
    memset(b, 0xFF, 8);
    spit(tmp_path("bad"), b, good_len);
    expect_refused("header length 2^64-1", TFLM_EFORMAT, "header length");
    memcpy(b, good, good_len);
    b[8] = '#';
    spit(tmp_path("bad"), b, good_len);
    expect_refused("bad JSON", TFLM_EFORMAT, "JSON");
    memset(b, 0, 8);
    spit(tmp_path("bad"), b, good_len);
    expect_refused("zero header length", TFLM_EFORMAT, "JSON");
    memcpy(b, "\x08\0\0\0\0\0\0\0[]      ", 16);
    spit(tmp_path("bad"), b, 16);
    expect_refused("header that is a list", TFLM_EFORMAT, "not a JSON object");
    uint8_t *nan = tensor_bytes("flows.2.blocks.0.attn.qkv.weight");
    memcpy(b, good, good_len);
    if (nan)
        memcpy(b + (nan - good) + 4 * 5, "\x00\x00\xc0\x7f", 4);
    spit(tmp_path("bad"), b, good_len);
    expect_refused("NaN weight", TFLM_EFORMAT, "NaN at index 5");
    memcpy(b, good, good_len);
    if (nan)
        memcpy(b + (nan - good), "\x00\x00\x80\xff", 4);
    spit(tmp_path("bad"), b, good_len);
    expect_refused("-inf weight", TFLM_EFORMAT, "infinity");
    free(b);
    FILE *f = fopen(tmp_path("bad"), "wb");
    fwrite("\x00\x00\x00\x09\x00\x00\x00\x00", 1, 8, f);   /* 144 MiB header */
    fclose(f);
    CHECK(truncate(tmp_path("bad"), 200 << 20) == 0, "sparse 200 MiB file");
    Model m;
    CHECK(model_load(&m, tmp_path("bad"), 1) == TFLM_EFORMAT && has(tflm_last_error(), "absurd"),
          "absurd header length refused: %s", tflm_last_error());
    CHECK(model_load(&m, tmp_path("no-such-file"), 1) == TFLM_EIO &&
          has(tflm_last_error(), "No such file"), "missing file: EIO: %s", tflm_last_error());
}

static void test_header_edits(void) {
    edited("offsets out of range", ed_offsets_past, "run past the end");
    edited("overlapping offsets", ed_overlap, "overlap");
    edited("dtype I32", ed_dtype, "I32");
    edited("missing dtype", ed_nodtype, "dtype");
    edited("wrong shape", ed_shape, "has shape [4, 16], config wants [16, 4]");
    edited("shape vs byte length", ed_bytes, "bytes");
    edited("negative shape", ed_negshape, "non-negative");
    edited("malformed data_offsets", ed_badoffsets, "data_offsets");
    edited("missing tensor", ed_missing, "'flows.2.blocks.0.mlp.fc.bias' is missing");
    edited("unknown version", ed_version, "version");
    edited("missing tflm.config", ed_noconfig, "tflm.config");
    edited("missing tflm.vocab", ed_novocab, "tflm.vocab");
    edited("vocab of the wrong size", ed_shortvocab, "vocab");
    edited("non-string metadata", ed_metaint, "not a string");
    edited("unexpected tensor", ed_extra, "unexpected tensor 'flows.9.mystery'");
    edited("empty header", ed_array, "tflm.config");
    edited("tensor name too long", ed_longname, "longer");
    write_edited(tmp_path("bad"), ed_opt, 0, NULL, 0);
    Model m;
    tflm_status st = model_load(&m, tmp_path("bad"), 1);
    CHECK(st == TFLM_OK, "opt.* tensors are accepted: %s", why(st));
    model_free(&m);
}

/* widen a tensor to F16 / BF16 appended at the end of the data section */
static const float halves[4] = { 1.5f, -2.0f, 0.0f, 65504.0f };
static void ed_f16(json_t *r) {
    size_t data_len = good_len - 8 - ((size_t)good[0] | (size_t)good[1] << 8);
    json_object_set_new(entry(r, "flows.1.sos"), "dtype", json_string("F16"));
    set_offsets(r, "flows.1.sos", (long long)data_len, (long long)data_len + 8);
}
static void ed_bf16(json_t *r) {
    ed_f16(r);
    json_object_set_new(entry(r, "flows.1.sos"), "dtype", json_string("BF16"));
}

static void test_widen_and_align(void) {
    static const uint8_t f16[8] = { 0x00, 0x3e, 0x00, 0xc0, 0x00, 0x00, 0xff, 0x7b };
    static const uint8_t bf16[8] = { 0xc0, 0x3f, 0x00, 0xc0, 0x00, 0x00, 0x80, 0x47 };
    Model m;
    write_edited(tmp_path("bad"), ed_f16, 0, f16, 8);
    tflm_status st = model_load(&m, tmp_path("bad"), 1);
    CHECK(st == TFLM_OK, "F16 tensor loads: %s", why(st));
    if (st == TFLM_OK) {
        CHECK(memcmp(m.w.flow[0].sos, halves, 16) == 0 && m.owned,
              "F16 widened into owned memory");
        model_free(&m);
    }
    write_edited(tmp_path("bad"), ed_bf16, 0, bf16, 8);
    st = model_load(&m, tmp_path("bad"), 0);
    CHECK(st == TFLM_OK, "BF16 tensor loads: %s", why(st));
    if (st == TFLM_OK) {
        CHECK(m.w.flow[0].sos[0] == 1.5f && m.w.flow[0].sos[1] == -2.0f &&
              m.w.flow[0].sos[3] == 65536.0f, "BF16 widened");
        model_free(&m);
    }
    Model ref;
    model_load(&ref, tmp_path("good"), 1);
    write_edited(tmp_path("bad"), NULL, 2, NULL, 0);
    st = model_load(&m, tmp_path("bad"), 1);
    CHECK(st == TFLM_OK && m.owned && same_model(&m, &ref),
          "misaligned data section is copied, same values: %s", why(st));
    if (st == TFLM_OK)
        model_free(&m);
    model_free(&ref);
}

static void test_st_write_errors(void) {
    StWriteTensor t = { "x", 1, { 4 }, halves };
    CHECK(st_write("/nonexistent-dir/x.safetensors", &t, 1, NULL) == TFLM_EIO &&
          has(tflm_last_error(), "No such file"), "unwritable path: EIO: %s", tflm_last_error());
    /* a full disk, simulated by a file size limit */
    const char *path = tmp_path("full.safetensors");
    CHECK(st_write(path, &t, 1, NULL) == TFLM_OK, "small file written");
    static float big[1 << 16];
    StWriteTensor tb = { "big", 1, { 1 << 16 }, big };
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = 4096;
    signal(SIGXFSZ, SIG_IGN);
    setrlimit(RLIMIT_FSIZE, &lim);
    tflm_status st = st_write(path, &tb, 1, NULL);
    setrlimit(RLIMIT_FSIZE, &old);
    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    CHECK(st == TFLM_EIO && has(tflm_last_error(), "write failed"), "full disk: EIO: %s",
          tflm_last_error());
    StFile f;
    CHECK(st_open(&f, path, 1) == TFLM_OK && f.nt == 1 && st_find(&f, "x"),
          "the old file is still in place");
    st_close(&f);
    CHECK(access(tmp, F_OK) != 0 && errno == ENOENT, "the temporary file is removed");
}

/* flip random header bytes: every result loads or is refused in one line */
static void test_fuzz(void) {
    size_t hl = (size_t)good[0] | (size_t)good[1] << 8;
    uint8_t *b = malloc(good_len);
    int ok = 1, refused = 0;
    for (int it = 0; it < 400 && ok; it++) {
        memcpy(b, good, good_len);
        for (int k = 0; k < 1 + it % 3; k++) {
            size_t at = (size_t)(rng_uniform(rng_key(9, 1, (uint64_t)it, (uint64_t)k, 0)) *
                                 (double)(8 + hl));
            b[at] = (uint8_t)(rng_uniform(rng_key(9, 2, (uint64_t)it, (uint64_t)k, 0)) * 256);
        }
        spit(tmp_path("fuzz"), b, good_len);
        Model m;
        tflm_status st = model_load(&m, tmp_path("fuzz"), it % 2);
        if (st == TFLM_OK)
            model_free(&m);
        else
            refused++;
        const char *msg = tflm_last_error();
        if (st != TFLM_OK && (st != TFLM_EFORMAT || !*msg || strchr(msg, '\n'))) {
            printf("# fuzz %d: status %d: %s\n", it, st, msg);
            ok = 0;
        }
    }
    CHECK(ok && refused > 100, "400 corrupted headers: each loads or is refused in one line "
          "(%d refused)", refused);
    free(b);
}

static void test_malformed(void) {
    char *text = config_text("tiny-mix1");
    Config c;
    Model m;
    config_parse(&c, text ? text : "");
    free(text);
    if (model_init(&m, &c, 3) != TFLM_OK || model_save(&m, tmp_path("good"), NULL) != TFLM_OK) {
        CHECK(0, "good file: %s", tflm_last_error());
        return;
    }
    model_free(&m);
    good = slurp(tmp_path("good"), &good_len);
    test_bytes_edits();
    test_header_edits();
    test_widen_and_align();
    test_fuzz();
    free(good);
}

/* ---- fixtures ------------------------------------------------------------------ */

static void test_fixture(const char *file, int nt, int is_ar) {
    const char *dir = getenv("TFLM_SHARED");
    char path[512];
    snprintf(path, sizeof path, "%s/fixtures/%s", dir ? dir : "../shared", file);
    if (access(path, R_OK) != 0) {
        printf("# skip %s: not found\n", path);
        return;
    }
    Model m;
    tflm_status st = model_load(&m, path, 1);
    CHECK(st == TFLM_OK, "%s loads: %s", file, why(st));
    if (st)
        return;
    CHECK(m.params.n == nt && m.file.nt == nt, "%s: %d tensors, all in the table", file, nt);
    CHECK(m.cfg.is_ar == is_ar && m.cfg.V == 97 && m.cfg.T == 128 && m.cfg.D == 128,
          "%s: config read", file);
    char *back = config_to_json(&m.cfg);
    CHECK(strcmp(back, st_meta(&m.file, "tflm.config")) == 0,
          "%s: config_to_json matches the file's tflm.config exactly", file);
    free(back);
    int V;
    char **dv = vocab_default(&V);
    int same = V == m.cfg.V;
    for (int i = 0; same && i < V; i++)
        same = strcmp(dv[i], m.vocab[i]) == 0;
    CHECK(same, "%s: vocabulary is the default one", file);
    for (int i = 0; i < V; i++)
        free(dv[i]);
    free(dv);
    Model r;
    CHECK(model_load(&r, path, 0) == TFLM_OK && same_model(&m, &r),
          "%s: read without mmap, same weights", file);
    model_free(&r);
    model_free(&m);
}

/* ---- tokenizer ------------------------------------------------------------------ */

static int tok_is(tflm_ctx *ctx, const char *text, const char *want, int want_mapped) {
    int *ids = NULL, n = 0, mapped = -1;
    if (tflm_tokenize(ctx, text, strlen(text), &ids, &n, &mapped) != TFLM_OK)
        return 0;
    char *back = tflm_detokenize(ctx, ids, n);
    int ok = back && strcmp(back, want) == 0 && mapped == want_mapped &&
             n == utf8_chars(want);
    if (!ok)
        printf("# tokenize: got '%s' mapped %d\n", back ? back : "(null)", mapped);
    free(back);
    free(ids);
    return ok;
}

static void test_tokenizer(void) {
    tflm_ctx ctx = { 0 };
    if (model_load(&ctx.m, tmp_path("tiny-mix1"), 1) != TFLM_OK) {
        CHECK(0, "tokenizer model: %s", tflm_last_error());
        return;
    }
    CHECK(tok_is(&ctx, "Hello, world!\n", "Hello, world!\n", 0), "ASCII passes unchanged");
    CHECK(tok_is(&ctx, "a\r\nb\rc", "a\nb\nc", 2), "CRLF and lone CR become newlines");
    CHECK(tok_is(&ctx, "\tx", " x", 1), "tab becomes a space");
    CHECK(tok_is(&ctx, "\xe2\x80\x98q\xe2\x80\x99 \xe2\x80\x9cQ\xe2\x80\x9d", "'q' \"Q\"", 4),
          "typographic quotes become ASCII");
    CHECK(tok_is(&ctx, "\xe2\x80\x9a\xe2\x80\x9b\xe2\x80\xb2\xe2\x80\x9e\xe2\x80\xb3",
                 "'''\"\"", 5), "low and prime quotes too");
    CHECK(tok_is(&ctx, "a\xe2\x80\x93" "b\xe2\x80\x94" "c\xe2\x80\x95", "a-b--c--", 3),
          "en dash, em dash, bar");
    CHECK(tok_is(&ctx, "wait\xe2\x80\xa6", "wait...", 1), "ellipsis");
    CHECK(tok_is(&ctx, "a\xc2\xa0" "b", "a b", 1), "no-break space");
    CHECK(tok_is(&ctx, "caf\xc3\xa9 \xf0\x9f\x98\x80", "caf? ?", 2), "other characters become ?");
    CHECK(tok_is(&ctx, "x\xff\xc3y\xed\xa0\x80", "x??y???", 5),
          "invalid UTF-8 bytes become ? one by one");
    CHECK(tok_is(&ctx, "<pad>", "<pad>", 0), "a literal <pad> is five characters");
    int ids[4] = { 0, 35, 0, 96 }, *out, n, mapped;
    char *s = tflm_detokenize(&ctx, ids, 4);
    CHECK(s && strcmp(s, "A~") == 0, "pads decode to nothing");
    free(s);
    CHECK(tflm_token_str(&ctx, 0) && strcmp(tflm_token_str(&ctx, 0), "<pad>") == 0 &&
          strcmp(tflm_token_str(&ctx, 1), "\n") == 0 && !tflm_token_str(&ctx, 97) &&
          !tflm_token_str(&ctx, -1), "tflm_token_str");
    CHECK(tflm_tokenize(&ctx, "", 0, &out, &n, NULL) == TFLM_OK && n == 0, "empty text");
    free(out);
    CHECK(tflm_tokenize(&ctx, "a\0b", 3, &out, &n, &mapped) == TFLM_OK && n == 3 &&
          out[1] == 33 && mapped == 1, "NUL inside the length becomes ?");
    free(out);
    free(ctx.m.vocab[96]);
    ctx.m.vocab[96] = strdup("\xc3\xa9");   /* '~' becomes 'é' */
    CHECK(tok_is(&ctx, "caf\xc3\xa9", "caf\xc3\xa9", 0), "multi-byte vocabulary entries match");
    free(ctx.m.vocab[33]);
    ctx.m.vocab[33] = strdup("\xc2\xbf");   /* no '?' any more */
    CHECK(tflm_tokenize(&ctx, "\xe4\xb8\xad", 3, &out, &n, &mapped) == TFLM_EINVAL &&
          has(tflm_last_error(), "U+4E2D"), "no '?' in the vocabulary: EINVAL naming the char: %s",
          tflm_last_error());
    model_free(&ctx.m);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/tflm-test-file-XXXXXX");
    if (!mkdtemp(tmpdir)) {
        printf("Bail out! mkdtemp: %s\n", strerror(errno));
        return 99;
    }
    test_config_ok();
    test_config_errors();
    test_table();
    test_init_values();
    for (int i = 0; i < 5; i++)
        round_trip(configs[i]);
    test_malformed();
    test_st_write_errors();
    test_fixture("novels-small.safetensors", 76, 0);
    test_fixture("novels-small-ar.safetensors", 58, 1);
    test_tokenizer();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        printf("# could not remove %s\n", tmpdir);
    return tap_done();
}
