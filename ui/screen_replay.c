/* screen_replay.c: the generation as it happened, one layer after another
 * from the noise down, and inside a layer position by position in that
 * flow's direction (a moving write head). d switches to the reverse,
 * "dissolve": the text runs forward through the flows into noise, with the
 * bits per character each flow accounts for. */
#include <curses.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "app.h"

/* positions replayed: the generated ones (the whole text for an edit or a dissolve) */
static int first_pos(app *a, doc *d) {
    if (a->rp_dissolve || d->kind != DOC_GEN) return d->tr->n_pad / d->tr->patch;
    return d->new_from / d->tr->patch;
}

/* when flow l (1..L) visits position pos among positions [p0, p1): blocks
 * in order (aligned to absolute positions), reversed inside for a flip flow */
static int rank(app *a, const tflm_trace *tr, int l, int p0, int p1, int pos) {
    if (!tr->direction[l - 1]) return pos - p0;
    int B = a->info.flip_block > 0 ? a->info.flip_block : a->info.positions;
    int bs = (pos / B) * B, end = bs + B;
    if (bs < p0) bs = p0;
    if (end > p1) end = p1;
    return (bs - p0) + (end - 1 - pos);
}

int replay_total(app *a, const tflm_trace *tr, int from) {
    (void)a;
    return tr->n_flows * (tr->n_pos - from);
}

void replay_reset(app *a) {
    a->rp_step = 0;
    a->rp_playing = 0;
    a->rp_last = app_now();
    doc *d = app_doc(a);
    a->rp_total = d ? replay_total(a, d->tr, first_pos(a, d)) : 0;
}

void replay_tick(app *a) {
    double now = app_now();
    double per = 1000.0 / a->rp_speed;
    if (now - a->rp_last < per) return;
    int k = (int)((now - a->rp_last) / per);
    a->rp_last += k * per;
    a->rp_step += k;
    if (a->rp_step >= a->rp_total) {
        a->rp_step = a->rp_total;
        a->rp_playing = 0;
    }
}

/* state of cell (l, pos) at step s: 1 written, 0 not yet; *head when it is the write head */
static int written(app *a, const tflm_trace *tr, int p0, int l, int pos, int s, int *head) {
    int L = tr->n_flows, np = tr->n_pos - p0;
    *head = 0;
    if (pos < p0) return 1;
    if (np <= 0) return 1;
    int phase = s / np, k = s % np;   /* flows completed, positions done in the current one */
    if (!a->rp_dissolve) {
        /* inverting flow L - phase writes h^(L - phase - 1) */
        if (l == L) return 1;
        int lw = L - phase - 1;
        if (l > lw) return 1;
        if (l < lw) return 0;
        int n = rank(a, tr, lw + 1, p0, tr->n_pos, pos);
        *head = n == k;
        return n < k;
    } else {
        /* flow phase + 1 writes h^(phase + 1) */
        if (l == 0) return 1;
        int lw = phase + 1;
        if (l < lw) return 1;
        if (l > lw) return 0;
        int n = rank(a, tr, lw, p0, tr->n_pos, pos);
        *head = n == k;
        return n < k;
    }
}

static void draw(app *a, int y0, int h) {
    doc *d = app_doc(a);
    if (!d) {
        app_put(y0 + 1, 2, COLS - 4, "No text yet: generate one on the Generate screen first.", 0);
        return;
    }
    tflm_trace *tr = d->tr;
    int L = tr->n_flows, P = tr->patch;
    int p0 = first_pos(a, d);
    a->rp_total = replay_total(a, tr, p0);
    if (a->rp_step > a->rp_total) a->rp_step = a->rp_total;
    int np = tr->n_pos - p0, s = a->rp_step;
    char buf[300];
    if (np <= 0 || L == 0) {
        app_put(y0 + 1, 2, COLS - 4, "Nothing to replay (no generated positions, or an ar model).", 0);
        return;
    }
    int phase = s / np, k = s % np;
    if (s >= a->rp_total) {
        snprintf(buf, sizeof buf, " %s: done (%d steps).  Home: again   d: %s", a->rp_dissolve ? "Dissolve" : "Replay",
                 a->rp_total, a->rp_dissolve ? "replay the generation" : "dissolve the text into noise");
    } else {
        int fl = a->rp_dissolve ? phase + 1 : L - phase;
        snprintf(buf, sizeof buf, " %s: flow %d %s %s h%d -> h%d   position %d of %d   step %d/%d   %s %.0f steps/s",
                 a->rp_dissolve ? "Dissolve (forward pass)" : "Replay (inverse pass)", fl,
                 app_arrow(a, tr->direction[fl - 1]), tr->direction[fl - 1] ? "flip" : "l2r",
                 a->rp_dissolve ? fl - 1 : fl, a->rp_dissolve ? fl : fl - 1, k + 1, np, s + 1,
                 a->rp_total, a->rp_playing ? "playing" : "paused", a->rp_speed);
    }
    app_put(y0, 0, COLS, buf, A_BOLD);
    /* the refinement profile of the replayed text, shown for each row once
     * it is complete (right of the first band) */
    tflm_profile prof;
    int have_prof = app_profile(a, tr, p0 * P, &prof) == 0;
    int pw = have_prof ? PROFILE_W : 0;
    if (have_prof) app_put(y0 + 1, COLS - pw, pw, " agree conf", A_DIM);
    bands b;
    bands_layout(a, tr, p0 * P, tr->n_tok, COLS - pw, &b);
    int gh = h - 3 - (a->rp_dissolve ? L + 1 : 0);
    int nb = gh / b.rows_per_band;
    if (nb < 1) nb = 1;
    /* follow the write head */
    int head_tok = -1;
    int cattr = app_attr_changed(a);
    for (int pos = p0; pos < tr->n_pos && head_tok < 0; pos++)
        for (int l = 0; l <= L; l++) {
            int hd;
            written(a, tr, p0, l, pos, s, &hd);
            if (hd) { head_tok = pos * P; break; }
        }
    int top = 0;
    if (head_tok >= 0) {
        int cb = (head_tok - b.t0) / b.per_band;
        if (cb >= nb) top = cb - nb + 1;
    }
    for (int kk = 0; kk < nb; kk++) {
        int t0 = b.t0 + (top + kk) * b.per_band;
        if (t0 >= b.t1) break;
        int t1 = t0 + b.per_band < b.t1 ? t0 + b.per_band : b.t1;
        for (int r = 0; r <= L; r++) {
            int l = L - r, y = y0 + 2 + kk * b.rows_per_band + r;
            char lab[32];
            snprintf(lab, sizeof lab, "h%-2d%s", l, l > 0 ? app_arrow(a, tr->direction[l - 1]) : " ");
            app_put(y, 0, b.label_w, lab, A_DIM);
            int done = a->rp_dissolve ? l <= phase : l >= L - phase;
            if (have_prof && kk == 0 && done) app_draw_profile(a, y, COLS - pw, &prof, l);
            for (int t = t0; t < t1; t++) {
                int hd, w = written(a, tr, p0, l, t / P, s, &hd);
                size_t i = (size_t)l * tr->n_tok + t;
                char g[8];
                int attr = 0;
                if (w || hd) {
                    app_tok_glyph(a, tr->dec[i], g);
                    if (!a->rp_dissolve && l < L && tr->dec[i] != tr->dec[i + tr->n_tok]) attr = cattr;
                    if (a->rp_dissolve && l > 0 && tr->dec[i] != tr->dec[i - tr->n_tok]) attr = cattr;
                } else {
                    snprintf(g, sizeof g, "%s", a->utf8 ? "\xc2\xb7" : ".");
                    attr = A_DIM;
                }
                if (hd) attr = A_REVERSE | A_BOLD;
                app_put(y, b.label_w + (t - t0) * b.cell_w, 1, g, attr);
            }
        }
    }
    if (a->rp_dissolve) {
        /* bits per character each flow accounts for: -sum log-det / (n ln 2) */
        int y = y0 + h - 2 - L;
        int ntok = tr->n_tok - p0 * P;
        app_put(y, 1, COLS - 2, "bits per character by flow (-log-det / ln 2 per character; the prior and decoder terms not shown):", A_DIM);
        for (int l = 1; l <= L; l++) {
            double sum = 0;
            for (int q = p0; q < tr->n_pos; q++) sum += tr->logdet[(size_t)(l - 1) * tr->n_pos + q];
            double bits = -sum / (ntok * log(2.0));
            int done = phase >= l;
            if (done || s >= a->rp_total) snprintf(buf, sizeof buf, "  flow %d %s  %+8.3f bits/char", l, app_arrow(a, tr->direction[l - 1]), bits);
            else snprintf(buf, sizeof buf, "  flow %d %s  ...", l, app_arrow(a, tr->direction[l - 1]));
            app_put(y + l, 1, COLS - 2, buf, 0);
        }
    }
    app_put(y0 + h - 1, 1, COLS - 2,
            "space play/pause   . , step   ] [ layer   + - speed   Home End   d dissolve", A_DIM);
}

static int key(app *a, int ch) {
    doc *d = app_doc(a);
    if (!d) return 0;
    int np = d->tr->n_pos - first_pos(a, d);
    if (np < 1) np = 1;
    switch (ch) {
    case ' ':
        if (a->rp_step >= a->rp_total) a->rp_step = 0;
        a->rp_playing = !a->rp_playing;
        a->rp_last = app_now();
        return 1;
    case '.': case KEY_RIGHT: case 'l':
        a->rp_playing = 0;
        if (a->rp_step < a->rp_total) a->rp_step++;
        return 1;
    case ',': case KEY_LEFT: case 'h':
        a->rp_playing = 0;
        if (a->rp_step > 0) a->rp_step--;
        return 1;
    case ']': case KEY_DOWN: case 'j':
        a->rp_step = (a->rp_step / np + 1) * np;
        if (a->rp_step > a->rp_total) a->rp_step = a->rp_total;
        return 1;
    case '[': case KEY_UP: case 'k':
        a->rp_step = a->rp_step % np ? (a->rp_step / np) * np : a->rp_step - np;
        if (a->rp_step < 0) a->rp_step = 0;
        return 1;
    case '+': case '=': a->rp_speed *= 1.5; if (a->rp_speed > 2000) a->rp_speed = 2000; return 1;
    case '-': a->rp_speed /= 1.5; if (a->rp_speed < 1) a->rp_speed = 1; return 1;
    case KEY_HOME: case '0': a->rp_step = 0; return 1;
    case KEY_END: case '$': a->rp_step = a->rp_total; a->rp_playing = 0; return 1;
    case 'd':
        a->rp_dissolve = !a->rp_dissolve;
        replay_reset(a);
        return 1;
    }
    return 0;
}

const screen screen_replay = {
    "Replay",
    "The generation replayed as the model computed it: the noise row h^(L) "
    "is drawn first; then each flow, inverted, writes the state below it one "
    "position at a time, in the flow's own order (the highlighted write "
    "head), each position conditioned on the ones before it. Dissolve (d) "
    "runs the other way: the text goes forward through the flows into noise, "
    "and each flow's log-determinant says how many bits per character it "
    "accounts for. Once a row is complete, the column on the right shows its "
    "refinement profile: the share of the text it already reads as the final "
    "text (agree) and the decoder's mean confidence (conf).",
    "space\tplay, pause\n"
    ". or Right\tone step forward\n"
    ", or Left\tone step back\n"
    "] [\tnext, previous layer\n"
    "+ -\tfaster, slower\n"
    "Home End\tstart, end\n"
    "d\tswitch between replay and dissolve\n",
    draw,
    key,
};
