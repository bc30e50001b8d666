/* screen_heatmap.c: layers x positions, one cell per character, coloured
 * by a metric cycled with m: the decoder's confidence, its entropy,
 * agreement with the final text, or the change of the state from the layer
 * above. A glyph ramp is always drawn so the map reads in monochrome, with
 * NO_COLOR and for colour-blind users; c shows the characters instead. */
#include <curses.h>
#include <stdio.h>
#include <string.h>
#include "app.h"

int grid_move(app *a, int ch, int per_band);
int grid_click(app *a, const bands *b, int y0, int top, int nb);

static bands gb;
static int g_y0, g_top, g_nb;

static void draw_legend(app *a, int y) {
    char buf[200];
    snprintf(buf, sizeof buf, " metric: %s  (m: next)  low ", metric_name(a->metric));
    app_put(y, 0, COLS, buf, A_BOLD);
    int x = (int)strlen(buf);
    for (int i = 0; i < 10 && x < COLS - 6; i++) {
        double v = (i + 0.5) / 10;
        app_put(y, x, 1, app_heat_glyph(a, v), app_attr_heat(a, v));
        app_put(y, x + 1, 1, app_heat_glyph(a, v), app_attr_heat(a, v));
        x += 2;
    }
    app_put(y, x, COLS - x, " high", A_BOLD);
}

static void draw(app *a, int y0, int h) {
    doc *d = app_doc(a);
    if (!d) {
        app_put(y0 + 1, 2, COLS - 4, "No text yet: generate one on the Generate screen first.", 0);
        return;
    }
    tflm_trace *tr = d->tr;
    int L = tr->n_flows;
    draw_legend(a, y0);
    bands b;
    bands_layout(a, tr, tr->n_pad, tr->n_tok, COLS, &b);
    int gy = y0 + 2, gh = h - 4;
    int nb = gh / b.rows_per_band;
    if (nb < 1) nb = 1;
    int cb = (a->cur_tok - b.t0) / b.per_band;
    if (cb < a->top_band) a->top_band = cb;
    if (cb >= a->top_band + nb) a->top_band = cb - nb + 1;
    if (a->top_band < 0) a->top_band = 0;
    gb = b;
    g_y0 = gy;
    g_top = a->top_band;
    g_nb = nb;
    for (int k = 0; k < nb; k++) {
        int t0 = b.t0 + (a->top_band + k) * b.per_band;
        if (t0 >= b.t1) break;
        int t1 = t0 + b.per_band < b.t1 ? t0 + b.per_band : b.t1;
        for (int r = 0; r <= L; r++) {
            int l = L - r, y = gy + k * b.rows_per_band + r;
            char lab[32];
            snprintf(lab, sizeof lab, "h%-2d%s", l, l > 0 ? app_arrow(a, tr->direction[l - 1]) : " ");
            app_put(y, 0, b.label_w, lab, l == a->cur_layer ? A_BOLD : A_DIM);
            for (int t = t0; t < t1; t++) {
                double v = metric_value(a, tr, a->metric, l, t, NULL);
                char g[8];
                if (a->heat_chars) app_tok_glyph(a, tr->dec[(size_t)l * tr->n_tok + t], g);
                else snprintf(g, sizeof g, "%s", app_heat_glyph(a, v));
                int attr = app_attr_heat(a, v);
                if (t == a->cur_tok && l == a->cur_layer) attr = A_REVERSE | A_BOLD;
                int x = b.label_w + (t - t0) * b.cell_w;
                app_put(y, x, 1, g, attr);
                if (b.cell_w == 2) app_put(y, x + 1, 1, g, attr);
            }
        }
    }
    /* the value under the cursor */
    if (a->cur_tok >= tr->n_pad && a->cur_tok < tr->n_tok) {
        double raw;
        double v = metric_value(a, tr, a->metric, a->cur_layer, a->cur_tok, &raw);
        char g[8], buf[256];
        app_tok_glyph(a, tr->dec[(size_t)a->cur_layer * tr->n_tok + a->cur_tok], g);
        snprintf(buf, sizeof buf, " h%d position %d '%s': %s = %.3f%s (scaled %.2f)", a->cur_layer,
                 a->cur_tok - tr->n_pad, g, metric_name(a->metric), raw,
                 a->metric == MET_ENTROPY ? " nats" : "", v);
        app_put(y0 + h - 2, 0, COLS, buf, 0);
    }
    app_put(y0 + h - 1, 1, COLS - 2, "m/M metric   c characters/glyphs   arrows move   ? help", A_DIM);
}

static int key(app *a, int ch) {
    if (ch == KEY_MOUSE) return grid_click(a, &gb, g_y0, g_top, g_nb);
    if (grid_move(a, ch, gb.per_band > 0 ? gb.per_band : 64)) return 1;
    switch (ch) {
    case 'm': a->metric = (a->metric + 1) % MET_COUNT; return 1;
    case 'M': a->metric = (a->metric + MET_COUNT - 1) % MET_COUNT; return 1;
    case 'c': a->heat_chars = !a->heat_chars; return 1;
    }
    return 0;
}

const screen screen_heatmap = {
    "Heatmap",
    "One cell per character and layer, coloured by a metric: confidence is "
    "the decoder's probability of the character it reads from that layer's "
    "state; entropy is how unsure the decoder is there (scaled by log V); "
    "agreement marks where the layer already reads as the final text; change "
    "is how far the state moved from the layer above (root mean square per "
    "dimension, 2 fills the ramp). The glyph ramp reads without colour.",
    "m, M\tnext, previous metric\n"
    "c\tcharacters instead of glyphs\n"
    "arrows, hjkl\tmove the cursor\n"
    "mouse\tclick a cell to select it\n",
    draw,
    key,
};
