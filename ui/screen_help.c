/* screen_help.c: the overlays drawn over any screen: help (F1 or ?: the
 * keys of this screen, what it shows, the global keys and a glossary) and
 * the parameters panel (seed, prior temperature, decoding, new characters,
 * model), with the ':set' command that changes the same settings. */
#include <curses.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "app.h"
#include "cli.h"

extern const screen screen_generate, screen_layers, screen_heatmap, screen_replay, screen_edit;
static const screen *const all[SCR_COUNT] = {
    &screen_generate, &screen_layers, &screen_heatmap, &screen_replay, &screen_edit,
};

static const char global_keys[] =
    "F1, ?\tthis help (? on the Generate screen when the line is empty)\n"
    "Tab, Shift-Tab\tnext, previous screen\n"
    "F2-F6, Alt-1..5\tGenerate, Layers, Heatmap, Replay, Edit\n"
    "F9, p\tparameters panel\n"
    ":\tcommand line (:set, :save, :load, :model, :export, :undo, :help)\n"
    "T\tswitch model: teaching <-> likelihood (Alt-T on Generate)\n"
    "u, U\tundo, redo (Alt-u, Alt-r on the Generate screen)\n"
    "n, s, c\tnew seed, same seed, continue (Alt- on Generate)\n"
    "Ctrl-C\tcancel the running computation (never quits)\n"
    "q, Ctrl-D\tquit (asks first when edits are unsaved)\n";

const char app_glossary[] =
    "flow\tan invertible layer; the model stacks L of them between text and noise\n"
    "h^(l)\tthe state after flow l: h^(0) holds the text's latents, h^(L) is noise\n"
    "decoder\tp(x | h): which character a state is closest to (Gaussian codebook)\n"
    "confidence\tthe decoder's probability of the character it reads\n"
    "entropy\thow spread the decoder's probabilities are (0 = certain)\n"
    "direction\t-> a flow reads positions left to right; <- reversed per block\n"
    "log-det\thow much a flow stretches space at a position (in nats)\n"
    "seed\tkey of all the random draws: the same seed gives the same text\n"
    "prior temp.\tscale of the noise drawn at h^(L); lower is more conservative\n"
    "block\tflip block: the positions generated together; the context is exact\n"
    "profile\tper layer, the share of the text already read as the final text\n";

static int help_lines(app *a, char lines[][200], int max) {
    int n = 0;
    const screen *s = all[a->scr];
    snprintf(lines[n++], 200, "\x01%s screen", s->name);
    /* wrap the paragraph */
    const char *p = s->what;
    int w = COLS - 12 > 20 ? COLS - 12 : 20;
    if (w > 190) w = 190;
    while (*p && n < max) {
        int k = (int)strlen(p);
        if (k > w) {
            k = w;
            while (k > 0 && p[k] != ' ') k--;
            if (k == 0) k = w;
        }
        snprintf(lines[n++], 200, "%.*s", k, p);
        p += k;
        while (*p == ' ') p++;
    }
    const char *sections[3][2] = {{"Keys on this screen", s->keys}, {"Keys everywhere", global_keys},
                                  {"Glossary", app_glossary}};
    for (int k = 0; k < 3 && n < max; k++) {
        snprintf(lines[n++], 200, "%s", "");
        snprintf(lines[n++], 200, "\x01%s", sections[k][0]);
        const char *q = sections[k][1];
        while (*q && n < max) {
            const char *e = strchr(q, '\n');
            int len = e ? (int)(e - q) : (int)strlen(q);
            char one[96];
            snprintf(one, sizeof one, "%.*s", len, q);
            char *tab = strchr(one, '\t');
            if (tab) {
                *tab = 0;
                snprintf(lines[n++], 200, "  %-16s %s", one, tab + 1);
            } else {
                snprintf(lines[n++], 200, "  %s", one);
            }
            q += len + (e ? 1 : 0);
        }
    }
    return n;
}

static void draw_box(int y, int x, int h, int w, const char *title) {
    for (int r = 0; r < h; r++) {
        move(y + r, x);
        for (int c = 0; c < w; c++) addch(' ');
    }
    attron(A_BOLD);
    mvhline(y, x, ACS_HLINE, w);
    mvhline(y + h - 1, x, ACS_HLINE, w);
    mvvline(y, x, ACS_VLINE, h);
    mvvline(y, x + w - 1, ACS_VLINE, h);
    mvaddch(y, x, ACS_ULCORNER);
    mvaddch(y, x + w - 1, ACS_URCORNER);
    mvaddch(y + h - 1, x, ACS_LLCORNER);
    mvaddch(y + h - 1, x + w - 1, ACS_LRCORNER);
    mvprintw(y, x + 2, " %s ", title);
    attroff(A_BOLD);
}

static char help_buf[160][200];

void help_draw(app *a) {
    int n = help_lines(a, help_buf, 160);
    int h = LINES - 4, w = COLS - 6, y = 2, x = 3;
    draw_box(y, x, h, w, "Help (arrows scroll, any other key closes)");
    int rows = h - 2;
    if (a->help_scroll > n - rows) a->help_scroll = n - rows;
    if (a->help_scroll < 0) a->help_scroll = 0;
    for (int r = 0; r < rows && a->help_scroll + r < n; r++) {
        const char *s = help_buf[a->help_scroll + r];
        int bold = s[0] == '\x01';
        app_put(y + 1 + r, x + 2, w - 4, bold ? s + 1 : s, bold ? A_BOLD | A_UNDERLINE : 0);
    }
}

int help_key(app *a, int ch) {
    switch (ch) {
    case KEY_DOWN: case 'j': a->help_scroll++; return 1;
    case KEY_UP: case 'k': a->help_scroll--; return 1;
    case KEY_NPAGE: case ' ': a->help_scroll += LINES / 2; return 1;
    case KEY_PPAGE: a->help_scroll -= LINES / 2; return 1;
    }
    a->overlay = 0;
    return 1;
}

/* ---- parameters ----------------------------------------------------------------- */

enum { PRM_SEED, PRM_PRIOR, PRM_DECODE, PRM_TEMP, PRM_N, PRM_CONF, PRM_DELAY, PRM_COUNT };
static const char *prm_names[PRM_COUNT] = {"seed", "prior-temp", "decode", "temp", "n", "confidence",
                                           "block-delay"};
static const char *prm_labels[PRM_COUNT] = {"seed", "prior temperature", "decoding",
                                            "decoder temperature", "new characters",
                                            "confidence colouring", "pause per block (ms)"};

void params_draw(app *a) {
    int h = PRM_COUNT + 8, w = 64, y = 3, x = (COLS - w) / 2;
    if (x < 0) x = 0;
    if (w > COLS) w = COLS;
    draw_box(y, x, h, w, "Parameters");
    for (int i = 0; i < PRM_COUNT; i++) {
        char v[64];
        switch (i) {
        case PRM_SEED: snprintf(v, sizeof v, "%llu", (unsigned long long)a->gp.seed); break;
        case PRM_PRIOR: snprintf(v, sizeof v, "%.2f", a->gp.prior_temp); break;
        case PRM_DECODE: snprintf(v, sizeof v, "%s", a->gp.decode == TFLM_DECODE_SAMPLE ? "sample" : "argmax"); break;
        case PRM_TEMP: snprintf(v, sizeof v, "%.2f", a->gp.temp); break;
        case PRM_N: snprintf(v, sizeof v, "%d", a->gp.n_new); break;
        case PRM_CONF: snprintf(v, sizeof v, "%s", a->conf_colour ? "on" : "off"); break;
        case PRM_DELAY: snprintf(v, sizeof v, "%d", a->block_delay_ms); break;
        }
        char line[200];
        snprintf(line, sizeof line, "%-22s %-14s (:set %s)", prm_labels[i], v, prm_names[i]);
        app_put(y + 2 + i, x + 3, w - 6, line, i == a->param_sel ? A_REVERSE : 0);
    }
    char m[300];
    snprintf(m, sizeof m, "model: %s", a->model_path);
    app_put(y + 3 + PRM_COUNT, x + 3, w - 6, m, A_DIM);
    snprintf(m, sizeof m, "       %d flows, window %d, vocabulary %d, flip block %d", a->info.n_flows,
             a->info.window, a->info.vocab_size, a->info.flip_block);
    app_put(y + 4 + PRM_COUNT, x + 3, w - 6, m, A_DIM);
    app_put(y + 6 + PRM_COUNT, x + 3, w - 6, "up/down choose, left/right change, Enter type a value, Esc close", A_DIM);
}

static void adjust(app *a, int i, int dir) {
    switch (i) {
    case PRM_SEED: if (dir > 0 || a->gp.seed > 0) a->gp.seed += dir; break;
    case PRM_PRIOR: a->gp.prior_temp += 0.05 * dir; if (a->gp.prior_temp < 0) a->gp.prior_temp = 0; break;
    case PRM_DECODE: a->gp.decode = a->gp.decode == TFLM_DECODE_SAMPLE ? TFLM_DECODE_ARGMAX : TFLM_DECODE_SAMPLE; break;
    case PRM_TEMP: a->gp.temp += 0.05 * dir; if (a->gp.temp < 0.05) a->gp.temp = 0.05; break;
    case PRM_N: a->gp.n_new += 16 * dir; if (a->gp.n_new < 1) a->gp.n_new = 1; break;
    case PRM_CONF: a->conf_colour = !a->conf_colour; break;
    case PRM_DELAY:
        a->block_delay_ms += 50 * dir;
        if (a->block_delay_ms < 0) a->block_delay_ms = 0;
        if (a->block_delay_ms > 5000) a->block_delay_ms = 5000;
        break;
    }
}

int params_key(app *a, int ch) {
    switch (ch) {
    case KEY_UP: case 'k': a->param_sel = (a->param_sel + PRM_COUNT - 1) % PRM_COUNT; return 1;
    case KEY_DOWN: case 'j': a->param_sel = (a->param_sel + 1) % PRM_COUNT; return 1;
    case KEY_LEFT: case 'h': case '-': adjust(a, a->param_sel, -1); return 1;
    case KEY_RIGHT: case 'l': case '+': adjust(a, a->param_sel, 1); return 1;
    case '\r': case '\n': case KEY_ENTER: {
        char init[64];
        snprintf(init, sizeof init, "set %s ", prm_names[a->param_sel]);
        a->overlay = 0;
        app_open_line(a, 1, init);
        return 1;
    }
    }
    a->overlay = 0;
    return 1;
}

int params_set(app *a, const char *name, const char *value, char *err, size_t errlen) {
    double v;
    int iv;
    uint64_t u;
    if (!strcmp(name, "seed")) {
        if (cli_parse_u64(value, &u)) goto bad;
        a->gp.seed = u;
    } else if (!strcmp(name, "prior-temp") || !strcmp(name, "prior_temp") || !strcmp(name, "tau")) {
        if (cli_parse_double(value, 0, 100, &v)) goto bad;
        a->gp.prior_temp = v;
    } else if (!strcmp(name, "decode")) {
        if (!strcmp(value, "argmax")) a->gp.decode = TFLM_DECODE_ARGMAX;
        else if (!strcmp(value, "sample")) a->gp.decode = TFLM_DECODE_SAMPLE;
        else goto bad;
    } else if (!strcmp(name, "temp")) {
        if (cli_parse_double(value, 1e-3, 100, &v)) goto bad;
        a->gp.temp = v;
    } else if (!strcmp(name, "n") || !strcmp(name, "n_new") || !strcmp(name, "new") ||
               !strcmp(name, "tokens")) {
        if (cli_parse_int(value, 1, 100000, &iv)) goto bad;
        a->gp.n_new = iv;
    } else if (!strcmp(name, "confidence")) {
        if (!strcmp(value, "on") || !strcmp(value, "1")) a->conf_colour = 1;
        else if (!strcmp(value, "off") || !strcmp(value, "0")) a->conf_colour = 0;
        else goto bad;
    } else if (!strcmp(name, "block-delay") || !strcmp(name, "block_delay")) {
        if (cli_parse_int(value, 0, 5000, &iv)) goto bad;
        a->block_delay_ms = iv;
    } else if (!strcmp(name, "speed")) {
        if (cli_parse_double(value, 1, 2000, &v)) goto bad;
        a->rp_speed = v;
    } else if (!strcmp(name, "metric")) {
        static const char *m[MET_COUNT] = {"confidence", "entropy", "agreement", "change"};
        int k;
        for (k = 0; k < MET_COUNT; k++) if (!strcmp(value, m[k])) break;
        if (k == MET_COUNT) goto bad;
        a->metric = k;
    } else if (!strcmp(name, "layer")) {
        if (cli_parse_int(value, 1, a->info.n_flows, &iv)) goto bad;
        a->ed_layer = iv;
    } else if (!strcmp(name, "strength")) {
        if (cli_parse_double(value, 0, 100, &v)) goto bad;
        a->ed_strength = v;
    } else if (!strcmp(name, "op")) {
        if (!strcmp(value, "noise")) a->ed_op = TFLM_EDIT_NOISE;
        else if (!strcmp(value, "resample")) a->ed_op = TFLM_EDIT_RESAMPLE;
        else if (!strcmp(value, "replace")) a->ed_op = TFLM_EDIT_REPLACE;
        else goto bad;
    } else {
        snprintf(err, errlen, "unknown setting '%s' (seed, prior-temp, decode, temp, n, confidence, "
                 "block-delay, speed, metric, layer, strength, op)", name);
        return 1;
    }
    return 0;
bad:
    snprintf(err, errlen, "%s: bad value '%s'", name, value);
    return 1;
}
