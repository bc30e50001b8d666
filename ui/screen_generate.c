/* screen_generate.c: the home screen. The current text, wrapped: the
 * context in one colour (dim without colour), the continuation in bold and,
 * when confidence colouring is on, coloured by the decoder's probability of
 * each character; the characters an edit changed are marked. While a
 * generation runs, its text appears block by block as the worker makes it,
 * with a write head after it. The compose line below it belongs to readline
 * (ui/app.c). */
#include <curses.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "app.h"

typedef struct {
    char g[8];
    int attr;
    int nl;      /* a line break after this cell */
} cell;

static int scroll_back;   /* rows scrolled up from the end */

static int add_cell(cell **cs, int *n, int *cap, const char *g, int attr, int nl) {
    if (*n == *cap) {
        int c2 = *cap ? *cap * 2 : 256;
        cell *nc = realloc(*cs, c2 * sizeof *nc);
        if (!nc) return 1;
        *cs = nc;
        *cap = c2;
    }
    cell *c = &(*cs)[(*n)++];
    snprintf(c->g, sizeof c->g, "%s", g);
    c->attr = attr;
    c->nl = nl;
    return 0;
}

static void draw_welcome(app *a, int y0, int h) {
    static const char *lines[] = {
        "Welcome to tflm, a language model made of normalizing flows.",
        "",
        "Type a few words on the line at the bottom and press Enter: the model",
        "continues them. Then press Tab to see the Layers screen: how each",
        "flow layer turned Gaussian noise, step by step, into that text.",
        "",
        "Enter alone continues the text;  Alt-n: new seed;  Alt-s: same seed again;",
        "Alt-u / Alt-r: undo / redo;  Tab: next screen;  F1: help;  Ctrl-D: quit.",
    };
    int n = (int)(sizeof lines / sizeof lines[0]);
    for (int i = 0; i < n && i < h; i++)
        app_put(y0 + 1 + i, 2, COLS - 4, lines[i], i == 0 ? A_BOLD : 0);
}

static void draw_legend(app *a, int y) {
    int x = 1;
    app_put(y, x, 9, "context", app_attr_ctx(a));
    x += 9;
    app_put(y, x, 14, "continuation", A_BOLD);
    x += 14;
    if (a->conf_colour && COLS > 70) {
        app_put(y, x, 12, "confidence:", 0);
        x += 12;
        static const char *lv[] = {"<.2", "<.4", "<.6", "<.8", "high"};
        static const float pv[] = {0.1f, 0.3f, 0.5f, 0.7f, 0.9f};
        for (int i = 0; i < 5; i++) {
            app_put(y, x, 5, lv[i], app_attr_conf(a, pv[i]));
            x += (int)strlen(lv[i]) + 1;
        }
        app_put(y, x + 1, COLS - x - 2, "(Alt-k toggles)", A_DIM);
    }
}

/* text (UTF-8) as cells of one attribute; newlines break the row */
static void add_text(cell **cs, int *n, int *cap, const char *s, int attr) {
    const unsigned char *p = (const unsigned char *)s;
    while (p && *p) {
        int k = 1;
        if (*p >= 0x80) while (p[k] && (p[k] & 0xC0) == 0x80 && k < 4) k++;
        char g[8];
        memcpy(g, p, k);
        g[k] = 0;
        if (*p == '\n') add_cell(cs, n, cap, " ", attr, 1);
        else add_cell(cs, n, cap, g, attr, 0);
        p += k;
    }
}

/* a token as a cell (<pad> adds nothing) */
static void add_tok(app *a, cell **cs, int *n, int *cap, int id, int attr) {
    if (id == 0) return;
    const char *s = tflm_token_str(a->ctx, id);
    if (s && s[0] == '\n') {
        add_cell(cs, n, cap, " ", attr, 1);
    } else {
        char g[8];
        app_tok_glyph(a, id, g);
        add_cell(cs, n, cap, g, attr, 0);
    }
}

/* The running generation, block by block, from what the worker copied
 * (ui/app_doc.c, on_block): the context, the new text so far and the write
 * head after it. Writes a line about the progress into info. */
static void live_cells(app *a, cell **cs, int *n, int *cap, char *info, size_t len) {
    live_text *lv = &a->live;
    int cattr = app_attr_ctx(a);
    pthread_mutex_lock(&lv->mu);
    if (lv->n > 0) {
        add_text(cs, n, cap, lv->prefix, cattr);
        for (int t = lv->n_pad; t < lv->n; t++)
            add_tok(a, cs, n, cap, lv->tok[t], t < lv->from ? cattr : app_attr_conf(a, lv->prob[t]));
        int made = lv->n - lv->from, total = lv->end - lv->from;
        snprintf(info, len, "generating: %d of %d new characters, block %d  (Ctrl-C cancels)",
                 made > 0 ? made : 0, total, lv->blocks);
    } else {
        /* no block yet: the context as typed (the worker never writes it) */
        add_text(cs, n, cap, a->jb.d && a->jb.d->context ? a->jb.d->context : "", cattr);
        snprintf(info, len, "generating: the first block ...  (Ctrl-C cancels)");
    }
    pthread_mutex_unlock(&lv->mu);
    add_cell(cs, n, cap, " ", A_REVERSE, 0);   /* the write head */
}

static void draw(app *a, int y0, int h) {
    doc *d = app_doc(a);
    int live = a->busy && a->jb.kind == JOB_GEN;
    if (!d && !live) {
        draw_welcome(a, y0, h);
        return;
    }
    draw_legend(a, y0);
    y0 += 2;
    h -= 2;
    if (a->busy) h -= 1;
    cell *cs = NULL;
    int n = 0, cap = 0;
    char info[200] = "";
    int cattr = app_attr_ctx(a);
    if (live) {
        live_cells(a, &cs, &n, &cap, info, sizeof info);
    } else {
        /* the prefix: context that fell out of the window */
        add_text(&cs, &n, &cap, d->prefix, cattr);
        tflm_trace *tr = d->tr;
        for (int t = tr->n_pad; t < tr->n_tok; t++) {
            int id = tr->tokens[t];
            int attr;
            if (d->kind == DOC_GEN) {
                attr = t < d->new_from ? cattr : app_attr_conf(a, tr->prob[t]);
            } else {
                int changed = d->before && t < d->before->n_tok && d->before->tokens[t] != id;
                attr = changed ? app_attr_changed(a) : (t >= d->new_from && t < d->new_to) ? (int)A_BOLD : 0;
            }
            add_tok(a, &cs, &n, &cap, id, attr);
        }
        if (a->busy)
            snprintf(info, sizeof info, "%s ... %d%%", a->jb.kind == JOB_EDIT ? "editing" : "generating",
                     (int)(a->jb.progress * 100));
    }
    /* wrap into rows */
    int W = COLS - 2;
    int rows = 1, col = 0;
    for (int i = 0; i < n; i++) {
        if (cs[i].nl) { rows++; col = 0; continue; }
        if (++col >= W) { rows++; col = 0; }
    }
    int max_back = rows > h ? rows - h : 0;
    if (scroll_back > max_back) scroll_back = max_back;
    int first = rows > h ? rows - h - scroll_back : 0;
    int r = 0;
    col = 0;
    for (int i = 0; i < n; i++) {
        int y = y0 + r - first;
        if (cs[i].nl) {
            r++;
            col = 0;
            continue;
        }
        if (y >= y0 && y < y0 + h) app_put(y, 1 + col, 1, cs[i].g, cs[i].attr);
        if (++col >= W) { r++; col = 0; }
    }
    free(cs);
    if (a->busy) app_put(y0 + h, 1, COLS - 2, info, A_DIM);
}

static int key(app *a, int ch) {
    switch (ch) {
    case KEY_PPAGE: scroll_back += LINES / 2; return 1;
    case KEY_NPAGE: scroll_back -= LINES / 2; if (scroll_back < 0) scroll_back = 0; return 1;
    }
    return 0;
}

const screen screen_generate = {
    "Generate",
    "The text: the context you typed (in the context colour) and the model's "
    "continuation (bold), each character coloured by the decoder's confidence: "
    "the probability p(x | h0) of the character at the text layer. The model "
    "generates block by block: it draws Gaussian noise for a block of positions "
    "and inverts every flow layer, noise to text, keeping the context fixed; "
    "the text appears here one block at a time as it is made (:set block-delay "
    "MS slows it down to watch).",
    "Enter\tgenerate from the typed context (Enter alone: continue the text)\n"
    "Alt-Enter\tinsert a newline in the context\n"
    "Alt-n\tregenerate with a new seed\n"
    "Alt-s\trerun with the same seed (identical result)\n"
    "Alt-c\tcontinue the text\n"
    "Alt-u, Alt-r\tundo, redo\n"
    "Alt-k\tconfidence colouring on/off\n"
    "Alt-T\tswitch model: teaching <-> likelihood (flow 2 at a quarter)\n"
    "PgUp, PgDn\tscroll the text\n"
    "Ctrl-R\tsearch the history (readline)\n"
    "Ctrl-X Ctrl-E\tedit the context in $EDITOR\n"
    ":cmd\ta line starting with ':' is a command (:set, :save, :load, :export)\n"
    "Ctrl-D\tquit (on an empty line)\n",
    draw,
    key,
};
