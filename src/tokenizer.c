/* tokenizer.c: UTF-8 text to token ids and back with the model's vocabulary
 * (DESIGN §3). Vocabulary entries are single characters (plus "<pad>").
 * Characters the vocabulary lacks are mapped: CRLF and a lone CR to a
 * newline, tab and no-break space to a space, typographic quotes, dashes and
 * the ellipsis to ASCII, anything else (and invalid UTF-8) to '?'. */
#include <stdlib.h>
#include <string.h>
#include "internal.h"

typedef struct {
    const Model *m;
    int ascii[128];         /* id of each ASCII character, -1 if none */
} Lookup;

/* decode one UTF-8 character of s[0..n); returns its length, or 0 if invalid */
static int utf8_decode(const unsigned char *s, size_t n, uint32_t *cp) {
    if (s[0] < 0x80) {
        *cp = s[0];
        return 1;
    }
    int len = s[0] >= 0xF0 ? 4 : s[0] >= 0xE0 ? 3 : s[0] >= 0xC0 ? 2 : 0;
    if (len == 0 || s[0] > 0xF4 || (size_t)len > n)
        return 0;
    uint32_t c = s[0] & (0x7F >> len);
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        c = c << 6 | (s[i] & 0x3F);
    }
    static const uint32_t min[5] = { 0, 0, 0x80, 0x800, 0x10000 };
    if (c < min[len] || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
        return 0;
    *cp = c;
    return len;
}

static void lookup_init(Lookup *lk, const Model *m) {
    lk->m = m;
    for (int i = 0; i < 128; i++)
        lk->ascii[i] = -1;
    for (int id = m->cfg.V - 1; id >= 0; id--) {
        const unsigned char *s = (const unsigned char *)m->vocab[id];
        if (s[0] && s[0] < 0x80 && !s[1])
            lk->ascii[s[0]] = id;
    }
}

/* id of the vocabulary entry that is exactly the character cp, or -1 */
static int find_char(const Lookup *lk, uint32_t cp) {
    if (cp < 128)
        return lk->ascii[cp];
    for (int id = 0; id < lk->m->cfg.V; id++) {
        const unsigned char *s = (const unsigned char *)lk->m->vocab[id];
        uint32_t c;
        size_t n = strlen((const char *)s);
        if (s[0] >= 0x80 && utf8_decode(s, n, &c) == (int)n && c == cp)
            return id;
    }
    return -1;
}

/* ASCII stand-in of a character the vocabulary lacks, or NULL */
static const char *replacement(uint32_t cp) {
    switch (cp) {
    case '\t': case 0x00A0: return " ";
    case '\r': return "\n";
    case 0x2018: case 0x2019: case 0x201A: case 0x201B: case 0x2032: return "'";
    case 0x201C: case 0x201D: case 0x201E: case 0x2033: return "\"";
    case 0x2013: return "-";
    case 0x2014: case 0x2015: return "--";
    case 0x2026: return "...";
    }
    return NULL;
}

/* append the ids of ASCII string r; 0 if one of its characters is missing */
static int emit_ascii(const Lookup *lk, const char *r, int *ids, int *n) {
    for (const char *p = r; *p; p++)
        if (lk->ascii[(unsigned char)*p] < 0)
            return 0;
    for (const char *p = r; *p; p++)
        ids[(*n)++] = lk->ascii[(unsigned char)*p];
    return 1;
}

/* map one source character (cp, or an invalid byte when bad) to ids */
static tflm_status emit(const Lookup *lk, uint32_t cp, int bad, int *ids, int *n, int *mapped) {
    int id = bad || cp == '\r' ? -1 : find_char(lk, cp);
    if (id >= 0) {
        ids[(*n)++] = id;
        return TFLM_OK;
    }
    (*mapped)++;
    const char *r = bad ? NULL : replacement(cp);
    if (r && emit_ascii(lk, r, ids, n))
        return TFLM_OK;
    if (emit_ascii(lk, "?", ids, n))
        return TFLM_OK;
    if (bad)
        return tflm__err(TFLM_EINVAL, "invalid UTF-8 byte 0x%02X in the text, and the vocabulary "
                         "has no '?' to stand for it", cp);
    return tflm__err(TFLM_EINVAL, "character U+%04X is not in the vocabulary, which has no '?' "
                     "to stand for it", cp);
}

tflm_status tflm_tokenize(const tflm_ctx *ctx, const char *text, size_t len, int **ids, int *n,
                          int *n_mapped) {
    if (!ctx || !ids || !n || (!text && len > 0))
        return tflm__err(TFLM_EINVAL, "tflm_tokenize: missing argument");
    if (len > (size_t)(INT32_MAX - 1))
        return tflm__err(TFLM_EINVAL, "tflm_tokenize: text of %zu bytes is too long", len);
    *ids = NULL;
    *n = 0;
    int *out = malloc((len + 1) * sizeof *out);   /* every byte yields at most one id */
    if (!out)
        return tflm__err(TFLM_ENOMEM, "tflm_tokenize: out of memory");
    Lookup lk;
    lookup_init(&lk, &ctx->m);
    const unsigned char *s = (const unsigned char *)text;
    int cnt = 0, mapped = 0;
    tflm_status st = TFLM_OK;
    for (size_t i = 0; i < len && !st;) {
        uint32_t cp;
        int k = utf8_decode(s + i, len - i, &cp);
        int bad = k == 0;
        if (bad)
            cp = s[i], k = 1;
        if (cp == '\r' && !bad && i + 1 < len && s[i + 1] == '\n')
            k = 2;   /* CRLF: one mapped newline */
        st = emit(&lk, cp, bad, out, &cnt, &mapped);
        i += (size_t)k;
    }
    if (st) {
        free(out);
        return st;
    }
    *ids = out;
    *n = cnt;
    if (n_mapped)
        *n_mapped = mapped;
    return TFLM_OK;
}

/* the text of a token: "<pad>" and unknown ids decode to nothing */
static const char *tok_text(const tflm_ctx *ctx, int id) {
    if (id < 0 || id >= ctx->m.cfg.V || strcmp(ctx->m.vocab[id], "<pad>") == 0)
        return "";
    return ctx->m.vocab[id];
}

char *tflm_detokenize(const tflm_ctx *ctx, const int *ids, int n) {
    if (!ctx || (!ids && n > 0))
        return NULL;
    size_t total = 1;
    for (int i = 0; i < n; i++)
        total += strlen(tok_text(ctx, ids[i]));
    char *s = malloc(total), *p = s;
    if (!s)
        return NULL;
    for (int i = 0; i < n; i++) {
        size_t k = strlen(tok_text(ctx, ids[i]));
        memcpy(p, tok_text(ctx, ids[i]), k);
        p += k;
    }
    *p = 0;
    return s;
}

const char *tflm_token_str(const tflm_ctx *ctx, int id) {
    if (!ctx || !ctx->m.vocab || id < 0 || id >= ctx->m.cfg.V)
        return NULL;
    return ctx->m.vocab[id];
}
