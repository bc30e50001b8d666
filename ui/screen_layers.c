/* screen_layers.c: the refinement view. The text is laid out in bands; a
 * band has one row per state, noise h^(L) at the top to text h^(0) at the
 * bottom, each row that layer's state decoded to text, labelled with the
 * arrow of the flow that made it. Characters that differ from the row above
 * are marked. A cursor selects a cell; the inspector below shows the
 * decoder's top-5 tokens there with probabilities, the entropy, the norm of
 * the state and the flow's log-determinant at that position. A column on
 * the right of the first band shows the refinement profile: per row, the
 * share of the (new) text that already reads as the final text, and the
 * decoder's mean confidence. */
#include <curses.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "app.h"

#define INSPECT_ROWS 5

/* geometry of the last draw, for the mouse */
static bands gb;
static int g_y0, g_top, g_nb;

/* shared by the band screens: scroll so that the cursor's band is visible */
static int fit_top(app *a, const bands *b, int h) {
    int nb = h / b->rows_per_band;
    if (nb < 1) nb = 1;
    int cb = (a->cur_tok - b->t0) / b->per_band;
    if (cb < a->top_band) a->top_band = cb;
    if (cb >= a->top_band + nb) a->top_band = cb - nb + 1;
    if (a->top_band < 0) a->top_band = 0;
    return nb;
}

static void draw_inspector(app *a, doc *d, int y, int h) {
    tflm_trace *tr = d->tr;
    int l = a->cur_layer, t = a->cur_tok, L = tr->n_flows;
    if (t < 0 || t >= tr->n_tok || h < 3) return;
    mvhline(y, 0, ACS_HLINE, COLS);
    size_t i = (size_t)l * tr->n_tok + t;
    char g[8], gf[8];
    app_tok_glyph(a, tr->dec[i], g);
    app_tok_glyph(a, tr->tokens[t], gf);
    char buf[400];
    const char *part = d->kind == DOC_GEN ? (t < d->new_from ? "context" : "generated") : "text";
    if (l > 0)
        snprintf(buf, sizeof buf, " h%d %s (flow %d, %s %s)  position %d (%s)  reads '%s'  final '%s'", l,
                 app_arrow(a, tr->direction[l - 1]), l, a->info.flows[l - 1].type,
                 tr->direction[l - 1] ? "flip" : "l2r", t - tr->n_pad, part, g, gf);
    else
        snprintf(buf, sizeof buf, " h0 (the text)  position %d (%s)  reads '%s'", t - tr->n_pad, part, g);
    app_put(y + 1, 0, COLS, buf, A_BOLD);
    float z[512];
    double norm = 0;
    int dd = a->info.latent_dim;
    int ids[5];
    float pr[5];
    int have = dd <= 512 && tflm_trace_latent(a->ctx, tr, l, t, z) == TFLM_OK;
    if (have) for (int k = 0; k < dd; k++) norm += (double)z[k] * z[k];
    char ld[64] = "-";
    if (l > 0) snprintf(ld, sizeof ld, "%.3f nats", tr->logdet[(size_t)(l - 1) * tr->n_pos + t / tr->patch]);
    snprintf(buf, sizeof buf, " p = %.3f   entropy %.3f nats   |h| = %.3f (d = %d)   log-det of flow %d here: %s",
             tr->prob[i], tr->entropy[i], sqrt(norm), dd, l, ld);
    if (l == 0) snprintf(buf, sizeof buf, " p = %.3f   entropy %.3f nats   |h| = %.3f (d = %d)",
                         tr->prob[i], tr->entropy[i], sqrt(norm), dd);
    app_put(y + 2, 0, COLS, buf, 0);
    if (have && tflm_decode_topk(a->ctx, z, 5, ids, pr) == TFLM_OK) {
        int x = 1;
        app_put(y + 3, x, 7, "top 5:", A_DIM);
        x += 7;
        for (int k = 0; k < 5 && x < COLS - 14; k++) {
            char tg[8], item[64];
            app_tok_glyph(a, ids[k], tg);
            snprintf(item, sizeof item, "'%s' %.3f", tg, pr[k]);
            app_put(y + 3, x, COLS - x, item, k == 0 ? A_BOLD : 0);
            x += (int)strlen(item) - (int)strlen(tg) + 3;
        }
    }
    (void)L;
    if (h > 4) app_put(y + 4, 1, COLS - 2, "arrows/hjkl move   Home/End   PgUp/PgDn   Enter: this layer in Edit   ? help", A_DIM);
}

static void draw(app *a, int y0, int h) {
    doc *d = app_doc(a);
    if (!d) {
        app_put(y0 + 1, 2, COLS - 4, "No text yet: go back to Generate (Tab or Alt-1), type a context and press Enter.", 0);
        return;
    }
    tflm_trace *tr = d->tr;
    int L = tr->n_flows;
    /* the refinement profile: a column right of the first band shown */
    tflm_profile prof;
    int from = d->kind == DOC_GEN ? d->new_from : tr->n_pad;
    int have_prof = app_profile(a, tr, from, &prof) == 0;
    int pw = have_prof ? PROFILE_W : 0;
    if (have_prof) {
        char head[200];
        if (L > 0)
            snprintf(head, sizeof head, "noise h%d at the top, text h0 below; marked: changed from the row above", L);
        else
            snprintf(head, sizeof head, "an ar model has no flow layers: h0 is the text");
        app_put(y0, 0, COLS - pw - 1, head, A_DIM);
        app_put(y0, COLS - pw, pw, " agree conf", A_DIM);
    }
    y0 += 1;
    h -= 1;
    bands b;
    bands_layout(a, tr, tr->n_pad, tr->n_tok, COLS - pw, &b);
    int gh = h - INSPECT_ROWS;
    int nb = fit_top(a, &b, gh);
    gb = b;
    g_y0 = y0;
    g_top = a->top_band;
    g_nb = nb;
    int changed_attr = app_attr_changed(a), cattr = app_attr_ctx(a);
    for (int k = 0; k < nb; k++) {
        int band = a->top_band + k;
        int t0 = b.t0 + band * b.per_band;
        if (t0 >= b.t1) break;
        int t1 = t0 + b.per_band < b.t1 ? t0 + b.per_band : b.t1;
        for (int r = 0; r <= L; r++) {
            int l = L - r, y = y0 + k * b.rows_per_band + r;
            char lab[32];
            snprintf(lab, sizeof lab, "h%-2d%s", l, l > 0 ? app_arrow(a, tr->direction[l - 1]) : " ");
            app_put(y, 0, b.label_w, lab, l == a->cur_layer ? A_BOLD : A_DIM);
            if (have_prof && k == 0) app_draw_profile(a, y, COLS - pw, &prof, l);
            for (int t = t0; t < t1; t++) {
                size_t i = (size_t)l * tr->n_tok + t;
                char g[8];
                app_tok_glyph(a, tr->dec[i], g);
                int attr = 0;
                if (l < L && tr->dec[i] != tr->dec[i + tr->n_tok]) attr = changed_attr;
                else if (l == 0 && d->kind == DOC_GEN && t < d->new_from) attr = cattr;
                if (t == a->cur_tok && l == a->cur_layer) attr = A_REVERSE | A_BOLD;
                app_put(y, b.label_w + (t - t0) * b.cell_w, 1, g, attr);
            }
        }
    }
    draw_inspector(a, d, y0 + gh, INSPECT_ROWS);
}

/* move the cursor with the keys shared by Layers and Heatmap */
int grid_move(app *a, int ch, int per_band);
int grid_move(app *a, int ch, int per_band) {
    doc *d = app_doc(a);
    if (!d) return 0;
    tflm_trace *tr = d->tr;
    int t = a->cur_tok, l = a->cur_layer;
    switch (ch) {
    case KEY_LEFT: case 'h': t--; break;
    case KEY_RIGHT: case 'l': t++; break;
    case KEY_UP: case 'k': l++; break;
    case KEY_DOWN: case 'j': l--; break;
    case KEY_HOME: case '0': t = tr->n_pad; break;
    case KEY_END: case '$': t = tr->n_tok - 1; break;
    case KEY_PPAGE: t -= per_band; break;
    case KEY_NPAGE: t += per_band; break;
    case 'w': t += 8; break;
    case 'b': t -= 8; break;
    default: return 0;
    }
    if (t < tr->n_pad) t = tr->n_pad;
    if (t >= tr->n_tok) t = tr->n_tok - 1;
    if (l < 0) l = 0;
    if (l > tr->n_flows) l = tr->n_flows;
    a->cur_tok = t;
    a->cur_layer = l;
    return 1;
}

/* a mouse click on a band grid: select that cell */
int grid_click(app *a, const bands *b, int y0, int top, int nb);
int grid_click(app *a, const bands *b, int y0, int top, int nb) {
    doc *d = app_doc(a);
    if (!d || !(a->mev_b & (BUTTON1_PRESSED | BUTTON1_CLICKED | BUTTON1_RELEASED))) return 0;
    int dy = a->mev_y - y0;
    if (dy < 0 || dy >= nb * b->rows_per_band) return 0;
    int k = dy / b->rows_per_band, r = dy % b->rows_per_band;
    int L = d->tr->n_flows;
    if (r > L) return 0;
    int col = (a->mev_x - b->label_w) / b->cell_w;
    if (col < 0 || col >= b->per_band) return 0;
    int t = b->t0 + (top + k) * b->per_band + col;
    if (t >= b->t1) return 0;
    a->cur_tok = t;
    a->cur_layer = L - r;
    return 1;
}

static int key(app *a, int ch) {
    if (ch == KEY_MOUSE) return grid_click(a, &gb, g_y0, g_top, g_nb);
    if (grid_move(a, ch, gb.per_band > 0 ? gb.per_band : 64)) return 1;
    if (ch == '\r' || ch == '\n' || ch == KEY_ENTER) {
        if (a->cur_layer >= 1) a->ed_layer = a->cur_layer;
        a->ed_a = a->ed_b = -1;
        app_set_screen(a, SCR_EDIT);
        return 1;
    }
    return 0;
}

const screen screen_layers = {
    "Layers",
    "Every state of the generation, decoded to text. The top row of a band "
    "is the Gaussian noise h^(L) the model drew; each flow layer, inverted, "
    "turns the row above into the row below, down to the text h^(0). The arrow "
    "is the direction in which that flow reads the positions (-> left to "
    "right, <- reversed within each flip block). Marked characters changed "
    "from the row above. The inspector shows what the decoder p(x | h) sees "
    "at the cursor: its five most likely characters, its entropy, the length "
    "of the state vector and the flow's log-determinant there (how much the "
    "flow stretched or squeezed space at that position). The column on the "
    "right is the refinement profile: for each row, the share of the new "
    "text that already reads as the final text (agree; 100% at h0) and the "
    "decoder's mean confidence there (conf). A model that teaches well rises "
    "through its layers instead of jumping at the last one.",
    "arrows, hjkl\tmove the cursor (up: towards the noise)\n"
    "Home, End\tfirst, last position\n"
    "PgUp, PgDn\tone band back, forward\n"
    "w, b\t8 positions forward, back\n"
    "Enter\tedit at this layer (Edit screen)\n"
    "mouse\tclick a cell to select it\n",
    draw,
    key,
};
