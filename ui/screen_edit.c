/* screen_edit.c: editing the latent state. Select a span of the text (keys,
 * or the mouse), choose a layer and an operation (noise with a strength,
 * resample from the prior, replace with another text's state), apply: the
 * library re-inverts from that layer and the screen shows the text before
 * and after, the differences marked. Every edit is one undoable step. */
#include <curses.h>
#include <stdio.h>
#include <string.h>
#include "app.h"

static const char *op_names[3] = {"noise", "resample", "replace"};

/* geometry of the text grid for the mouse */
static int g_y0 = -1, g_rows, g_w, g_t0;

/* the first token an edit can touch: edits work on the text's last window */
static int edit_min(app *a, const doc *d) {
    int m = d->tr->n_tok - a->info.window;
    return m > d->tr->n_pad ? m : d->tr->n_pad;
}

static void span(app *a, doc *d, int *sa, int *sb) {
    if (a->ed_a >= 0 && a->ed_b > a->ed_a) {
        *sa = a->ed_a;
        *sb = a->ed_b;
    } else {
        *sa = a->cur_tok;
        *sb = a->cur_tok + 1;
    }
    if (*sa < edit_min(a, d)) *sa = edit_min(a, d);
    if (*sb > d->tr->n_tok) *sb = d->tr->n_tok;
    if (*sa >= *sb) {
        *sa = d->tr->n_tok - 1;
        *sb = d->tr->n_tok;
    }
}

/* draw tokens [t0, t1) of a trace wrapped in width w from row y; returns rows used */
static int draw_text(app *a, const tflm_trace *tr, const tflm_trace *other, int t0, int t1,
                     int y, int maxrows, int w, int sa, int sb, int cursor, int tmin) {
    int rows = 0;
    for (int t = t0; t < t1; t++) {
        int r = (t - t0) / w, c = (t - t0) % w;
        if (r >= maxrows) break;
        if (r + 1 > rows) rows = r + 1;
        char g[8];
        app_tok_glyph(a, tr->tokens[t], g);
        int attr = t < tmin ? A_DIM : 0;
        if (other && t < other->n_tok && other->tokens[t] != tr->tokens[t]) attr = app_attr_changed(a);
        if (t >= sa && t < sb) attr |= A_REVERSE;
        if (t == cursor) attr = A_REVERSE | A_BOLD | A_UNDERLINE;
        app_put(y + r, 1 + c, 1, g, attr);
    }
    return rows;
}

static void draw(app *a, int y0, int h) {
    doc *d = app_doc(a);
    if (!d) {
        app_put(y0 + 1, 2, COLS - 4, "No text yet: generate one on the Generate screen first.", 0);
        return;
    }
    if (a->info.is_ar) {
        app_put(y0 + 1, 2, COLS - 4, "Editing needs a flow model; this is an ar model.", 0);
        return;
    }
    tflm_trace *tr = d->tr;
    int L = a->info.n_flows;
    if (a->ed_layer < 1 || a->ed_layer > L) a->ed_layer = L;
    if (a->cur_tok < edit_min(a, d) || a->cur_tok >= tr->n_tok) a->cur_tok = edit_min(a, d);
    int sa, sb;
    span(a, d, &sa, &sb);
    char buf[700];
    char strength[32] = "";
    if (a->ed_op == TFLM_EDIT_NOISE) snprintf(strength, sizeof strength, " sigma %.2f", a->ed_strength);
    snprintf(buf, sizeof buf, " layer h%d %s   op %s%s%s%s%s   %s   span %d..%d (%d characters)", a->ed_layer,
             app_arrow(a, a->info.flows[a->ed_layer - 1].direction[0] == 'f'), op_names[a->ed_op], strength,
             a->ed_op == TFLM_EDIT_REPLACE ? " with \"" : "",
             a->ed_op == TFLM_EDIT_REPLACE ? a->ed_replace : "", a->ed_op == TFLM_EDIT_REPLACE ? "\"" : "",
             a->ed_local ? "local" : "global", sa - tr->n_pad, sb - tr->n_pad, sb - sa);
    app_put(y0, 0, COLS, buf, A_BOLD);
    app_put(y0 + 1, 1, COLS - 2,
            "arrows move  shift-arrows/v select  1-9 layer  o op  +/- strength  t text  g global/local  Enter apply  u undo",
            A_DIM);
    int w = COLS - 2;
    int y = y0 + 3;
    int avail = h - 4;
    int show_diff = d->kind == DOC_EDIT && d->before && a->ed_show_after;
    int rows_text = show_diff ? avail / 2 - 1 : avail;
    if (show_diff) {
        app_put(y - 1, 1, COLS - 2, "before:", A_DIM);
        int used = draw_text(a, d->before, tr, d->before->n_pad, d->before->n_tok, y, rows_text, w,
                             d->new_from, d->new_to, -1, 0);
        y += used + 1;
        app_put(y, 1, COLS - 2, "after (the text you edit next; changed characters marked):", A_DIM);
        y++;
    } else if ((d->prefix && *d->prefix) || edit_min(a, d) > tr->n_pad) {
        app_put(y - 1, 1, COLS - 2, "(edits work on the text's last window; the dim text before it stays)", A_DIM);
    }
    g_y0 = y;
    g_w = w;
    g_t0 = tr->n_pad;
    g_rows = draw_text(a, tr, show_diff ? d->before : NULL, tr->n_pad, tr->n_tok, y, rows_text, w, sa, sb,
                       a->cur_tok, edit_min(a, d));
}

static int key(app *a, int ch) {
    doc *d = app_doc(a);
    if (!d) return 0;
    tflm_trace *tr = d->tr;
    int L = a->info.n_flows, t = a->cur_tok;
    int w = COLS - 2;
    switch (ch) {
    case KEY_LEFT: case 'h': case KEY_SLEFT: t--; break;
    case KEY_RIGHT: case 'l': case KEY_SRIGHT: t++; break;
    case KEY_UP: case 'k': t -= w; break;
    case KEY_DOWN: case 'j': t += w; break;
    case KEY_HOME: t = edit_min(a, d); break;
    case KEY_END: t = tr->n_tok - 1; break;
    case 'v':
        /* start a selection at the cursor; moving extends it; v again ends it */
        if (a->ed_anchor >= 0) {
            a->ed_anchor = -1;
        } else {
            a->ed_anchor = t;
            a->ed_a = t;
            a->ed_b = t + 1;
        }
        return 1;
    case 'x': a->ed_a = a->ed_b = -1; a->ed_anchor = -1; return 1;
    case 'o': a->ed_op = (a->ed_op + 1) % 3; return 1;
    case '+': case '=': a->ed_strength *= 1.25; if (a->ed_strength > 10) a->ed_strength = 10; return 1;
    case '-': a->ed_strength /= 1.25; if (a->ed_strength < 0.01) a->ed_strength = 0.01; return 1;
    case 'g': a->ed_local = !a->ed_local; return 1;
    case 't': a->ed_op = TFLM_EDIT_REPLACE; app_open_line(a, 2, a->ed_replace); return 1;
    case '\r': case '\n': case KEY_ENTER: {
        if (a->ed_op == TFLM_EDIT_REPLACE && !a->ed_replace[0]) {
            app_open_line(a, 2, "");
            return 1;
        }
        int sa, sb;
        span(a, d, &sa, &sb);
        app_start_edit(a, sa, sb, a->ed_layer, a->ed_op, a->ed_strength, a->ed_local,
                       a->ed_replace, a->gp.seed);
        return 1;
    }
    case KEY_MOUSE: {
        if (g_y0 < 0) return 0;
        int r = a->mev_y - g_y0, c = a->mev_x - 1;
        if (r < 0 || r >= g_rows || c < 0 || c >= g_w) return 0;
        int tt = g_t0 + r * g_w + c;
        if (tt >= tr->n_tok || tt < edit_min(a, d)) return 0;
        if (a->mev_b & BUTTON1_PRESSED) {
            a->ed_anchor = tt;
            a->cur_tok = tt;
            a->ed_a = tt;
            a->ed_b = tt + 1;
        } else if (a->mev_b & (BUTTON1_RELEASED | REPORT_MOUSE_POSITION)) {
            int an = a->ed_anchor >= 0 ? a->ed_anchor : tt;
            a->cur_tok = tt;
            a->ed_a = an < tt ? an : tt;
            a->ed_b = (an > tt ? an : tt) + 1;
            if (a->mev_b & BUTTON1_RELEASED) a->ed_anchor = -1;
        } else if (a->mev_b & BUTTON1_CLICKED) {
            a->cur_tok = tt;
            a->ed_a = a->ed_b = -1;
            a->ed_anchor = -1;
        }
        return 1;
    }
    default:
        if (ch >= '1' && ch <= '9' && ch - '0' <= L) { a->ed_layer = ch - '0'; return 1; }
        return 0;
    }
    if (t < edit_min(a, d)) t = edit_min(a, d);
    if (t >= tr->n_tok) t = tr->n_tok - 1;
    a->cur_tok = t;
    if ((ch == KEY_SLEFT || ch == KEY_SRIGHT) && a->ed_anchor < 0) {
        a->ed_anchor = ch == KEY_SLEFT ? t + 1 : t - 1;
        if (a->ed_anchor < edit_min(a, d)) a->ed_anchor = edit_min(a, d);
    }
    if (a->ed_anchor >= 0) {   /* selecting: the span runs from the anchor to the cursor */
        int an = a->ed_anchor;
        a->ed_a = an < t ? an : t;
        a->ed_b = (an > t ? an : t) + 1;
    }
    return 1;
}

const screen screen_edit = {
    "Edit",
    "Change the text by changing its latent state at one layer. The text is "
    "encoded and run forward to layer h^(l); the selected span's state there "
    "is changed (noise: add Gaussian noise of scale sigma; resample: draw it "
    "again from the prior, meaningful at the noise layer; replace: put in the "
    "state that another text has at that layer); then the flows l..1 are "
    "inverted again. Text before the span's block cannot change; text after "
    "it may adapt (global) or stay as it was (local: only the span's blocks "
    "are re-inverted). Before and after are shown with the changes marked.",
    "arrows, hjkl\tmove the cursor\n"
    "v\tstart a selection here (moving extends it; v again ends it)\n"
    "shift-arrows\tselect while moving; x clears the selection\n"
    "mouse\tdrag to select a span\n"
    "1-9\tthe layer to edit at\n"
    "o\toperation: noise, resample, replace\n"
    "+ -\tnoise strength sigma\n"
    "t\tthe replacement text\n"
    "g\tglobal / local re-inversion\n"
    "Enter\tapply the edit\n"
    "u, U\tundo, redo\n",
    draw,
    key,
};
