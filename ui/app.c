/* app.c: the interactive app's terminal: curses setup and restore, crash
 * and interrupt signals, colours, readline through its callback interface
 * drawing into the curses compose line, the event loop (keys, resize,
 * the worker's wake-ups, timers), the title and status lines, overlays and
 * the ':' command line. Only this file calls initscr/endwin; screens draw
 * through the curses calls between them. */
#define _XOPEN_SOURCE_EXTENDED 1
#include <errno.h>
#include <fcntl.h>
#include <locale.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <curses.h>
#include <readline/readline.h>
#include <readline/history.h>
#include "app.h"
#include "cli.h"

static app *g_app;
static volatile sig_atomic_t g_curses_on;
static volatile sig_atomic_t g_sigint, g_sigterm;

static const screen *const screens[SCR_COUNT] = {
    &screen_generate, &screen_layers, &screen_heatmap, &screen_replay, &screen_edit,
};

/* ---- time, messages ------------------------------------------------------- */

double app_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

void app_message(app *a, int err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(a->msg, sizeof a->msg, fmt, ap);
    va_end(ap);
    a->msg_err = err;
}

doc *app_doc(app *a) {
    return a->cur >= 0 && a->cur < a->n_docs ? a->docs[a->cur] : NULL;
}

/* ---- signals: never draw in a handler ------------------------------------------ */

static void on_crash(int sig) {
    if (g_curses_on) {
        endwin();
        fputs("\033[?2004l\033[?1000l\033[?1002l", stdout);   /* paste, mouse off */
        fflush(stdout);
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

static void on_sigint(int sig) {
    (void)sig;
    g_sigint = 1;
}

static void on_sigterm(int sig) {
    (void)sig;
    g_sigterm = 1;
}

static void install_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_crash;
    int crash[] = {SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL};
    for (size_t i = 0; i < sizeof crash / sizeof crash[0]; i++) sigaction(crash[i], &sa, NULL);
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_sigterm;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

/* ---- the library's progress callback: runs in the worker thread ------------------ */

static int app_progress(void *user, const char *what, double fraction) {
    (void)what;
    app *a = user;
    a->jb.progress = fraction;
    if (write(a->wake[1], "p", 1) < 0) { /* full pipe: the loop is awake anyway */ }
    return a->cancel || g_sigint;
}

/* ---- colours and attributes ------------------------------------------------------- */

enum {
    CP_TITLE = 1, CP_TAB, CP_STATUS, CP_ERR, CP_CTX, CP_CONF0, CP_CONF1, CP_CONF2, CP_CONF3,
    CP_CHANGED, CP_CAPTION, CP_DIM, CP_HEAT0 /* .. CP_HEAT0 + 9 */
};
#define HEAT_LEVELS 10

static void colours_init(app *a) {
    if (!a->color) return;
    start_color();
    use_default_colors();
    a->colors256 = COLORS >= 256;
    init_pair(CP_TITLE, COLOR_WHITE, COLOR_BLUE);
    init_pair(CP_TAB, COLOR_BLACK, COLOR_CYAN);
    init_pair(CP_STATUS, COLOR_BLACK, COLOR_WHITE);
    init_pair(CP_ERR, COLOR_WHITE, COLOR_RED);
    init_pair(CP_CTX, COLOR_CYAN, -1);
    init_pair(CP_CHANGED, COLOR_YELLOW, -1);
    init_pair(CP_CAPTION, COLOR_BLACK, COLOR_YELLOW);
    init_pair(CP_DIM, a->colors256 ? 244 : COLOR_BLUE, -1);
    if (a->colors256) {
        /* confidence: low red .. high default; the heat ramp is viridis-like,
         * ordered in lightness so it also reads for colour-blind users */
        init_pair(CP_CONF0, 196, -1);
        init_pair(CP_CONF1, 208, -1);
        init_pair(CP_CONF2, 178, -1);
        init_pair(CP_CONF3, 114, -1);
        static const short ramp[HEAT_LEVELS] = {53, 54, 61, 24, 31, 37, 35, 71, 149, 226};
        for (int i = 0; i < HEAT_LEVELS; i++)
            init_pair(CP_HEAT0 + i, i < 6 ? 255 : 16, ramp[i]);
    } else {
        init_pair(CP_CONF0, COLOR_RED, -1);
        init_pair(CP_CONF1, COLOR_MAGENTA, -1);
        init_pair(CP_CONF2, COLOR_YELLOW, -1);
        init_pair(CP_CONF3, COLOR_GREEN, -1);
        static const short ramp8[HEAT_LEVELS] = {COLOR_BLACK, COLOR_BLUE, COLOR_BLUE, COLOR_MAGENTA,
                                                 COLOR_MAGENTA, COLOR_RED, COLOR_RED, COLOR_YELLOW,
                                                 COLOR_YELLOW, COLOR_WHITE};
        for (int i = 0; i < HEAT_LEVELS; i++)
            init_pair(CP_HEAT0 + i, i < 7 ? COLOR_WHITE : COLOR_BLACK, ramp8[i]);
    }
}

int app_attr_ctx(app *a) {
    return a->color ? (int)COLOR_PAIR(CP_CTX) : A_DIM;
}

int app_attr_conf(app *a, float p) {
    if (!a->conf_colour) return A_BOLD;
    if (!a->color) return p < 0.5f ? A_UNDERLINE : A_BOLD;
    if (p < 0.2f) return COLOR_PAIR(CP_CONF0) | A_BOLD;
    if (p < 0.4f) return COLOR_PAIR(CP_CONF1) | A_BOLD;
    if (p < 0.6f) return COLOR_PAIR(CP_CONF2) | A_BOLD;
    if (p < 0.8f) return COLOR_PAIR(CP_CONF3) | A_BOLD;
    return A_BOLD;
}

int app_attr_changed(app *a) {
    return a->color ? (int)(COLOR_PAIR(CP_CHANGED) | A_BOLD | A_UNDERLINE) : (A_BOLD | A_UNDERLINE);
}

static int heat_level(double v) {
    if (!(v >= 0)) v = 0;
    if (v > 1) v = 1;
    int i = (int)(v * HEAT_LEVELS);
    return i >= HEAT_LEVELS ? HEAT_LEVELS - 1 : i;
}

int app_attr_heat(app *a, double v) {
    if (!a->color) return heat_level(v) >= 8 ? A_BOLD : 0;
    return COLOR_PAIR(CP_HEAT0 + heat_level(v));
}

const char *app_heat_glyph(app *a, double v) {
    static const char *ascii[HEAT_LEVELS] = {" ", ".", ":", "-", "=", "+", "*", "#", "%", "@"};
    static const char *uni[HEAT_LEVELS] = {" ", "\xc2\xb7", ":", "\xe2\x96\x81", "\xe2\x96\x82",
                                           "\xe2\x96\x83", "\xe2\x96\x84", "\xe2\x96\x85",
                                           "\xe2\x96\x86", "\xe2\x96\x88"};
    return (a->utf8 ? uni : ascii)[heat_level(v)];
}

const char *app_arrow(app *a, int dir) {
    if (a->utf8) return dir ? "\xe2\x86\x90" : "\xe2\x86\x92";
    return dir ? "<" : ">";
}

void app_tok_glyph(app *a, int id, char *out) {
    if (id == 0) {
        strcpy(out, a->utf8 ? "\xc2\xb7" : " ");   /* <pad> */
        return;
    }
    const char *s = tflm_token_str(a->ctx, id);
    if (!s || !*s) {
        strcpy(out, "?");
    } else if (s[0] == '\n') {
        strcpy(out, a->utf8 ? "\xe2\x86\xb5" : "$");
    } else if ((unsigned char)s[0] < 0x20 || s[0] == 0x7f) {
        strcpy(out, "?");
    } else if ((unsigned char)s[0] < 0x80 || !a->utf8) {
        out[0] = (unsigned char)s[0] < 0x80 ? s[0] : '?';
        out[1] = 0;
    } else {
        /* one UTF-8 character */
        int n = 1;
        while (s[n] && ((unsigned char)s[n] & 0xC0) == 0x80 && n < 4) n++;
        memcpy(out, s, n);
        out[n] = 0;
    }
}

/* Draw s (UTF-8) at y,x, at most maxw columns (one column per character). */
void app_put(int y, int x, int maxw, const char *s, int attr) {
    if (y < 0 || y >= LINES || x >= COLS || maxw <= 0) return;
    if (x + maxw > COLS) maxw = COLS - x;
    attron(attr);
    move(y, x);
    int col = 0;
    const unsigned char *p = (const unsigned char *)s;
    while (*p && col < maxw) {
        int n = 1;
        if (*p >= 0x80) while (p[n] && (p[n] & 0xC0) == 0x80 && n < 4) n++;
        if (*p == '\n' || *p == '\t') addch(' ');
        else addnstr((const char *)p, n);
        p += n;
        col++;
    }
    attroff(attr);
}

int app_draw_caption(app *a, int y0, int h) {
    if (!a->caption[0] || h < 3) return 0;
    /* word-wrap the caption into at most 4 lines */
    int w = COLS - 4, rows = 0;
    char lines[4][512];
    const char *p = a->caption;
    while (*p && rows < 4) {
        int n = (int)strlen(p);
        if (n > w) {
            n = w;
            while (n > 0 && p[n] != ' ') n--;
            if (n == 0) n = w;
        }
        const char *nl = memchr(p, '\n', n);
        if (nl) n = (int)(nl - p);
        snprintf(lines[rows++], sizeof lines[0], "%.*s", n, p);
        p += n;
        while (*p == ' ' || *p == '\n') p++;
    }
    int attr = a->color ? (int)(COLOR_PAIR(CP_CAPTION) | A_BOLD) : (A_REVERSE | A_BOLD);
    for (int r = 0; r < rows + 2 && r < h; r++) {
        attron(attr);
        mvhline(y0 + r, 0, ' ', COLS);
        attroff(attr);
        if (r >= 1 && r <= rows) app_put(y0 + r, 2, w, lines[r - 1], attr);
    }
    return rows + 2 < h ? rows + 2 : h;
}

/* ---- bands: text laid out as wrapped bands of (L+1) rows ----------------------------- */

void bands_layout(app *a, const tflm_trace *tr, int t0, int t1, int width, bands *b) {
    b->t0 = t0;
    b->t1 = t1;
    b->label_w = 6;
    b->cell_w = a->big ? 2 : 1;
    b->per_band = (width - b->label_w) / b->cell_w;
    if (b->per_band < 1) b->per_band = 1;
    b->rows_per_band = tr->n_flows + 2;
}

const char *metric_name(int metric) {
    static const char *n[MET_COUNT] = {"confidence", "entropy", "agreement with the text",
                                       "change from the layer above"};
    return metric >= 0 && metric < MET_COUNT ? n[metric] : "?";
}

double metric_value(app *a, const tflm_trace *tr, int metric, int l, int t, double *raw) {
    size_t i = (size_t)l * tr->n_tok + t;
    double v = 0, r = 0;
    switch (metric) {
    case MET_CONF:
        r = tr->prob[i];
        v = r;
        break;
    case MET_ENTROPY: {
        r = tr->entropy[i];
        double mx = log((double)a->info.vocab_size);
        v = mx > 0 ? r / mx : 0;
        break;
    }
    case MET_AGREE:
        r = tr->dec[i] == tr->tokens[t];
        v = r;
        break;
    case MET_CHANGE: {
        if (l >= tr->n_flows) { r = 0; v = 0; break; }
        float z0[512], z1[512];
        int d = a->info.latent_dim;
        if (d > 512 || tflm_trace_latent(a->ctx, tr, l, t, z0) != TFLM_OK ||
            tflm_trace_latent(a->ctx, tr, l + 1, t, z1) != TFLM_OK) break;
        double s = 0;
        for (int k = 0; k < d; k++) s += (double)(z0[k] - z1[k]) * (z0[k] - z1[k]);
        r = sqrt(s / d);
        v = r / 2.0;   /* an rms change of 2 (two prior sigmas) fills the ramp */
        break;
    }
    }
    if (raw) *raw = r;
    return v < 0 ? 0 : v > 1 ? 1 : v;
}

int app_profile(app *a, const tflm_trace *tr, int from, tflm_profile *p) {
    (void)a;
    if (!tr || tr->n_flows < 0 || tr->n_flows > TFLM_MAX_FLOWS) return 1;
    if (from < tr->n_pad) from = tr->n_pad;
    return tflm_trace_profile(tr, NULL, from, p) != TFLM_OK;
}

void app_draw_profile(app *a, int y, int x, const tflm_profile *p, int l) {
    if (l < 0 || l > p->n_flows) return;
    char buf[32];
    snprintf(buf, sizeof buf, "%4.0f%%", 100 * p->agree[l]);
    /* the agreement on the heat ramp; the numbers read without colour */
    app_put(y, x + 1, 5, buf, a->color ? app_attr_heat(a, p->agree[l]) : (int)A_BOLD);
    snprintf(buf, sizeof buf, "%4.2f", p->conf[l]);
    app_put(y, x + 7, 4, buf, 0);
}

/* ---- readline in the compose line ------------------------------------------------------ */

static int rl_pending = -1;
static char *saved_compose;   /* compose text kept while the command line is open */
/* compose text to put back on an empty line once readline is out of its
 * callback (readline clears the line after the line handler returns) */
static char *pending_compose;
static FILE *rl_null;

static int app_rl_getc(FILE *f) {
    (void)f;
    int c = rl_pending;
    rl_pending = -1;
    return c < 0 ? EOF : c;
}

static int app_rl_avail(void) {
    return rl_pending >= 0;
}

static void app_rl_redisplay(void) {
    /* drawn by the event loop (draw_line) */
}

static void app_rl_noprep(int meta) {
    (void)meta;
}

static void app_rl_nodeprep(void) {
}

static void feed_rl(int c) {
    rl_pending = c & 0xff;
    rl_callback_read_char();
}

static void on_line(char *line);

static const char *prompt_for(int kind) {
    return kind == 1 ? ":" : kind == 2 ? "replace with: " : "> ";
}

static void line_install(app *a) {
    rl_callback_handler_install(prompt_for(a->line_prompt_kind), on_line);
}

void app_open_line(app *a, int kind, const char *initial) {
    if (a->line_prompt_kind == 0 && kind != 0) {
        free(saved_compose);
        saved_compose = strdup(rl_line_buffer ? rl_line_buffer : "");
    }
    a->line_prompt_kind = kind;
    a->cmd_mode = kind != 0;
    a->line_on = 1;
    rl_set_prompt(prompt_for(kind));
    rl_replace_line(initial ? initial : "", 0);
    rl_point = rl_end;
}

static void close_cmd_line(app *a) {
    a->cmd_mode = 0;
    a->line_prompt_kind = 0;
    rl_set_prompt(prompt_for(0));
    rl_replace_line(saved_compose ? saved_compose : "", 0);
    rl_point = rl_end;
    if (saved_compose && *saved_compose) {   /* closed from the line handler: restored later */
        free(pending_compose);
        pending_compose = saved_compose;
    } else {
        free(saved_compose);
    }
    saved_compose = NULL;
    a->line_on = a->scr == SCR_GENERATE;
}

static void request_quit(app *a) {
    if (a->dirty_edits) a->overlay = 3;
    else a->quit = 1;
}

static void on_line(char *line) {
    app *a = g_app;
    if (!line) {   /* Ctrl-D on an empty line */
        if (a->cmd_mode) close_cmd_line(a);
        else request_quit(a);
        return;
    }
    int kind = a->line_prompt_kind;
    if (kind == 1) {
        if (*line) add_history(line);
        close_cmd_line(a);
        app_command(a, line);
    } else if (kind == 2) {
        snprintf(a->ed_replace, sizeof a->ed_replace, "%s", line);
        close_cmd_line(a);
        app_message(a, 0, "replacement text set; Enter applies the edit");
    } else if (line[0] == ':') {
        if (line[1]) add_history(line);
        app_command(a, line + 1);
    } else if (*line) {
        add_history(line);
        app_start_generate(a, line, &a->gp);
    } else if (app_doc(a)) {
        app_start_generate(a, NULL, &a->gp);   /* Enter on an empty line continues */
    } else {
        app_start_generate(a, "", &a->gp);
    }
    free(line);
}

static int app_rl_newline(int count, int key) {
    (void)count;
    (void)key;
    rl_insert_text("\n");
    return 0;
}

/* Ctrl-X Ctrl-E: edit the compose line in $VISUAL / $EDITOR */
static int rl_edit_external(int count, int key) {
    (void)count;
    (void)key;
    const char *ed = getenv("VISUAL");
    if (!ed || !*ed) ed = getenv("EDITOR");
    if (!ed || !*ed) ed = "vi";
    char path[] = "/tmp/tflm-compose.XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) return 0;
    FILE *f = fdopen(fd, "w");
    if (!f) { close(fd); return 0; }
    fputs(rl_line_buffer ? rl_line_buffer : "", f);
    fclose(f);
    def_prog_mode();
    endwin();
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "%s '%s'", ed, path);
    int rc = system(cmd);
    reset_prog_mode();
    refresh();
    if (rc == 0) {
        char *buf = NULL;
        size_t len = 0;
        FILE *g = fopen(path, "r");
        if (g) {
            buf = calloc(1, 65536);
            if (buf) len = fread(buf, 1, 65535, g);
            fclose(g);
        }
        if (buf) {
            while (len > 0 && buf[len - 1] == '\n') buf[--len] = 0;
            rl_replace_line(buf, 0);
            rl_point = rl_end;
            free(buf);
        }
    }
    unlink(path);
    return 0;
}

static char history_path[1024];

static void readline_init(app *a) {
    rl_readline_name = "tflm";
    rl_change_environment = 0;     /* keep LINES/COLUMNS for curses */
    rl_catch_signals = 0;
    rl_catch_sigwinch = 0;
    rl_null = fopen("/dev/null", "w");
    rl_outstream = rl_null ? rl_null : stderr;
    rl_instream = stdin;
    rl_getc_function = app_rl_getc;
    rl_input_available_hook = app_rl_avail;
    rl_redisplay_function = app_rl_redisplay;
    rl_prep_term_function = app_rl_noprep;
    rl_deprep_term_function = app_rl_nodeprep;
    rl_variable_bind("bell-style", "none");
    rl_variable_bind("enable-bracketed-paste", "off");
    rl_variable_bind("horizontal-scroll-mode", "on");
    rl_bind_keyseq("\\e\\r", app_rl_newline);
    rl_bind_keyseq("\\e\\n", app_rl_newline);
    rl_bind_keyseq("\\C-x\\C-e", rl_edit_external);
    using_history();
    history_path[0] = 0;
    const char *off = getenv("TFLM_NO_HISTORY");
    if (a->opt.history && !(off && *off)) {
        const char *st = getenv("XDG_STATE_HOME"), *home = getenv("HOME");
        char dir[900];
        if (st && *st) snprintf(dir, sizeof dir, "%s/tflm", st);
        else if (home && *home) snprintf(dir, sizeof dir, "%s/.local/state/tflm", home);
        else dir[0] = 0;
        if (dir[0]) {
            char parent[900];
            snprintf(parent, sizeof parent, "%s", dir);
            char *sl = strrchr(parent, '/');
            if (sl) { *sl = 0; mkdir(parent, 0700); }
            mkdir(dir, 0700);
            snprintf(history_path, sizeof history_path, "%s/history", dir);
            read_history(history_path);
        }
    }
    a->line_prompt_kind = 0;
    line_install(a);
}

static void readline_done(void) {
    if (history_path[0]) {
        write_history(history_path);
        history_truncate_file(history_path, 1000);
    }
    rl_callback_handler_remove();
    if (rl_null) fclose(rl_null);
    rl_null = NULL;
}

/* ---- drawing ------------------------------------------------------------------------------ */

static void draw_title(app *a) {
    int attr = a->color ? (int)COLOR_PAIR(CP_TITLE) : A_REVERSE;
    attron(attr);
    mvhline(0, 0, ' ', COLS);
    mvaddstr(0, 1, a->opt.demo ? "tflm demo" : "tflm");
    attroff(attr);
    int x = a->opt.demo ? 11 : 6;
    for (int i = 0; i < SCR_COUNT; i++) {
        char buf[32];
        snprintf(buf, sizeof buf, " %d %s ", i + 1, screens[i]->name);
        int at = i == a->scr ? (a->color ? (int)(COLOR_PAIR(CP_TAB) | A_BOLD) : (int)A_BOLD)
                             : attr;
        app_put(0, x, COLS - x, buf, at);
        x += (int)strlen(buf);
    }
    const char *m = strrchr(a->model_path, '/');
    m = m ? m + 1 : a->model_path;
    char right[300];
    snprintf(right, sizeof right, " %s, %d flow%s  F1 help ", m, a->info.n_flows,
             a->info.n_flows == 1 ? "" : "s");
    int rw = (int)strlen(right);
    if (x + rw >= COLS) {   /* narrow: the model's name alone, then only the help key */
        snprintf(right, sizeof right, " %s ", m);
        rw = (int)strlen(right);
    }
    if (x + rw >= COLS) {
        snprintf(right, sizeof right, " F1 help ");
        rw = (int)strlen(right);
    }
    if (x + rw < COLS) app_put(0, COLS - rw, rw, right, attr);
}

static void draw_status(app *a) {
    int y = LINES - 2;
    int attr = a->color ? (int)COLOR_PAIR(CP_STATUS) : A_REVERSE;
    attron(attr);
    mvhline(y, 0, ' ', COLS);
    attroff(attr);
    char left[700];
    if (a->busy) {
        const char *what = a->jb.kind == JOB_EDIT ? "editing" : "generating";
        int pct = (int)(a->jb.progress * 100 + 0.5);
        int w = 20, fill = (int)(a->jb.progress * w);
        char bar[64];
        for (int i = 0; i < w; i++) bar[i] = i < fill ? '#' : '.';
        bar[w] = 0;
        snprintf(left, sizeof left, " %s [%s] %d%%  (Ctrl-C cancels)", what, bar, pct);
    } else if (a->msg[0]) {
        snprintf(left, sizeof left, " %s", a->msg);
    } else {
        snprintf(left, sizeof left, " ready");
    }
    int lattr = a->msg_err && !a->busy ? (a->color ? (int)COLOR_PAIR(CP_ERR) : (int)(A_REVERSE | A_BOLD))
                                       : attr;
    doc *d = app_doc(a);
    char right[300];
    char speed[96] = "";
    if (d && d->wall_ms > 0) {
        int n_new = d->kind == DOC_GEN ? d->tr->n_tok - d->new_from : d->tr->n_tok - d->tr->n_pad;
        if (d->kind == DOC_GEN)
            snprintf(speed, sizeof speed, "%.0f ch/s  %.1f ms/layer  ",
                     n_new / (d->wall_ms / 1000.0), d->tr->ms_per_layer);
        else
            snprintf(speed, sizeof speed, "%.0f ms  ", d->wall_ms);
    }
    snprintf(right, sizeof right, "seed %llu  %sstep %d/%d%s ", (unsigned long long)a->gp.seed,
             speed, a->cur + 1, a->n_docs, a->dirty ? "  unsaved" : "");
    int rw = (int)strlen(right);
    app_put(y, 0, COLS - rw - 1, left, lattr);
    if (rw < COLS) app_put(y, COLS - rw, rw, right, attr);
}

/* the bottom line: the compose/command line, or the screen's key hints */
static int draw_line(app *a) {
    int y = LINES - 1;
    move(y, 0);
    clrtoeol();
    if (!a->line_on) {
        const char *hint = a->scr == SCR_GENERATE ? "" : " q quit  ? help  : command  Tab next screen  "
                                                      "u undo  p parameters  T model";
        app_put(y, 0, COLS, hint, A_DIM);
        return -1;
    }
    const char *prompt = rl_display_prompt ? rl_display_prompt : "> ";
    const char *buf = rl_line_buffer ? rl_line_buffer : "";
    int pw = 0;
    for (const unsigned char *p = (const unsigned char *)prompt; *p; p++)
        if ((*p & 0xC0) != 0x80) pw++;
    int avail = COLS - pw - 1;
    if (avail < 4) avail = 4;
    /* columns of the buffer up to the point */
    int pcol = 0;
    for (int i = 0; i < rl_point && buf[i]; i++)
        if (((unsigned char)buf[i] & 0xC0) != 0x80) pcol++;
    int skip = pcol >= avail ? pcol - avail + 1 : 0;
    app_put(y, 0, pw, prompt, A_BOLD);
    int col = 0, x = pw;
    for (const unsigned char *p = (const unsigned char *)buf; *p;) {
        int n = 1;
        if (*p >= 0x80) while (p[n] && (p[n] & 0xC0) == 0x80 && n < 4) n++;
        if (col >= skip && x < COLS) {
            if (*p == '\n') app_put(y, x, 1, a->utf8 ? "\xe2\x86\xb5" : "$", A_DIM);
            else if (*p < 0x20) app_put(y, x, 1, "?", A_DIM);
            else {
                char c[8];
                memcpy(c, p, n);
                c[n] = 0;
                app_put(y, x, 1, c, 0);
            }
            x++;
        }
        col++;
        p += n;
    }
    if (!buf[0] && a->line_prompt_kind == 0 && a->scr == SCR_GENERATE)
        app_put(y, pw, avail, app_doc(a) ? "type a new context and Enter; Enter alone continues"
                                         : "type a few words and press Enter to generate",
                A_DIM);
    return pw + pcol - skip;
}

static void draw_confirm(app *a) {
    const char *q = a->overlay == 4 ? "Unsaved edits. Switch the model anyway? (y/n)"
                                    : "Unsaved edits. Quit anyway? (y/n)";
    int w = (int)strlen(q) + 4, x = (COLS - w) / 2, y = LINES / 2 - 1;
    int attr = a->color ? (int)(COLOR_PAIR(CP_ERR) | A_BOLD) : A_REVERSE | A_BOLD;
    for (int r = 0; r < 3; r++) {
        attron(attr);
        mvhline(y + r, x, ' ', w);
        attroff(attr);
    }
    app_put(y + 1, x + 2, w - 4, q, attr);
}

static void draw_all(app *a) {
    erase();
    if (COLS < APP_MIN_W || LINES < APP_MIN_H) {
        char m1[128], m2[128];
        snprintf(m1, sizeof m1, "Terminal too small: %dx%d", COLS, LINES);
        snprintf(m2, sizeof m2, "tflm needs at least %dx%d", APP_MIN_W, APP_MIN_H);
        int y = LINES / 2 - 1;
        if (y < 0) y = 0;
        app_put(y, 0, COLS, m1, A_BOLD);
        if (y + 1 < LINES) app_put(y + 1, 0, COLS, m2, 0);
        curs_set(0);
        refresh();
        return;
    }
    draw_title(a);
    int y0 = 1, h = LINES - 3;
    if (a->caption[0]) {
        int used = app_draw_caption(a, y0, h);
        y0 += used;
        h -= used;
    }
    screens[a->scr]->draw(a, y0, h);
    draw_status(a);
    int cx = draw_line(a);
    if (a->overlay == 1) help_draw(a);
    else if (a->overlay == 2) params_draw(a);
    else if (a->overlay >= 3) draw_confirm(a);
    if (cx >= 0 && !a->overlay) {
        curs_set(1);
        move(LINES - 1, cx < COLS ? cx : COLS - 1);
    } else {
        curs_set(0);
    }
    refresh();
}

/* ---- screens and keys ----------------------------------------------------------------------- */

void app_set_screen(app *a, int s) {
    if (s < 0 || s >= SCR_COUNT) return;
    if (a->cmd_mode) close_cmd_line(a);
    a->scr = s;
    a->line_on = s == SCR_GENERATE;
    if (s == SCR_REPLAY) replay_reset(a);
    doc *d = app_doc(a);
    if (d && (s == SCR_LAYERS || s == SCR_HEATMAP || s == SCR_EDIT)) {
        if (a->cur_tok < d->tr->n_pad || a->cur_tok >= d->tr->n_tok)
            a->cur_tok = s == SCR_EDIT ? d->tr->n_pad : (d->kind == DOC_GEN ? d->new_from : d->tr->n_pad);
        if (a->cur_tok >= d->tr->n_tok) a->cur_tok = d->tr->n_tok - 1;
        if (a->cur_layer < 0 || a->cur_layer > d->tr->n_flows) a->cur_layer = 0;
    }
}

/* Alt-key actions, anywhere */
static int meta_key(app *a, int c) {
    if (c >= '1' && c <= '5') { app_set_screen(a, c - '1'); return 1; }
    switch (c) {
    case 'n': {   /* regenerate with a new seed */
        doc *d = app_doc(a);
        if (!d || d->kind != DOC_GEN) { app_message(a, 1, "nothing to regenerate yet"); return 1; }
        a->gp.seed++;
        tflm_gen_params g = a->gp;
        app_start_generate(a, d->context, &g);
        return 1;
    }
    case 's': {   /* the same seed again: an identical result */
        doc *d = app_doc(a);
        if (!d || d->kind != DOC_GEN) { app_message(a, 1, "nothing to rerun yet"); return 1; }
        tflm_gen_params g = a->gp;
        app_start_generate(a, d->context, &g);
        return 1;
    }
    case 'c':
        app_start_generate(a, NULL, &a->gp);
        return 1;
    case 'u': app_undo(a); return 1;
    case 'r': case 'U': app_redo(a); return 1;
    case 'k':
        a->conf_colour = !a->conf_colour;
        app_message(a, 0, "confidence colouring %s", a->conf_colour ? "on" : "off");
        return 1;
    case 'p': a->overlay = 2; return 1;
    case 'T': app_other_model(a); return 1;
    case '\r': case '\n':
        if (a->line_on) { rl_insert_text("\n"); }
        return 1;
    }
    return 0;
}

/* keys for readline: the curses key codes become readline commands */
static void key_to_line(app *a, int ch) {
    (void)a;
    switch (ch) {
    case KEY_LEFT: rl_backward_char(1, 0); return;
    case KEY_RIGHT: rl_forward_char(1, 0); return;
    case KEY_UP: rl_get_previous_history(1, 0); return;
    case KEY_DOWN: rl_get_next_history(1, 0); return;
    case KEY_HOME: rl_beg_of_line(1, 0); return;
    case KEY_END: rl_end_of_line(1, 0); return;
    case KEY_BACKSPACE: case 8: feed_rl(127); return;
    case KEY_DC: rl_delete(1, 0); return;
    case KEY_ENTER: feed_rl('\r'); return;
    }
    if (ch >= KEY_MIN) return;   /* other function keys: ignored */
    feed_rl(ch == '\n' ? '\r' : ch);
}

static void handle_key(app *a, int ch);
static void model_confirm(app *a, int yes);

/* ESC: Alt-key, bracketed paste, or a lone Escape */
static void handle_escape(app *a) {
    timeout(40);
    int c2 = getch();
    if (c2 == '[') {
        char seq[8];
        int n = 0;
        while (n < 5) {
            int c = getch();
            if (c == ERR) break;
            seq[n++] = (char)c;
            if (c == '~') break;
        }
        seq[n] = 0;
        nodelay(stdscr, TRUE);
        if (strcmp(seq, "200~") == 0) a->paste = 1;
        else if (strcmp(seq, "201~") == 0) a->paste = 0;
        return;
    }
    nodelay(stdscr, TRUE);
    if (c2 == ERR || c2 == 27) {   /* a lone Escape */
        if (a->overlay) a->overlay = 0;
        else if (a->cmd_mode) close_cmd_line(a);
        else if (a->opt.demo) demo_key(a, 27);
        return;
    }
    if (!meta_key(a, c2) && a->line_on) {
        feed_rl(27);
        key_to_line(a, c2);
    }
}

static void handle_key(app *a, int ch) {
    if (a->paste) {   /* inside a bracketed paste: everything is text */
        if (ch == 27) { handle_escape(a); return; }
        if (a->line_on && ch < KEY_MIN) {
            char s[2] = {(char)(ch == '\r' ? '\n' : ch), 0};
            rl_insert_text(s);
        }
        return;
    }
    if (ch == KEY_RESIZE) return;   /* curses has the new size; the loop redraws */
    if (ch == 3) {   /* Ctrl-C: cancel, never quit */
        if (a->busy) {
            a->cancel = 1;
            app_message(a, 0, "cancelling...");
        } else if (a->overlay) {
            a->overlay = 0;
        } else if (a->cmd_mode) {
            close_cmd_line(a);
        } else if (a->line_on && rl_end > 0) {
            rl_replace_line("", 0);
            rl_point = 0;
        } else if (a->scr == SCR_REPLAY && a->rp_playing) {
            a->rp_playing = 0;
        } else {
            app_message(a, 0, "Ctrl-C cancels; to quit press q (or Ctrl-D on the Generate screen)");
        }
        return;
    }
    if (ch == 27) { handle_escape(a); return; }
    if (a->overlay == 3) {
        if (ch == 'y' || ch == 'Y') a->quit = 1;
        else a->overlay = 0;
        return;
    }
    if (a->overlay == 4) { model_confirm(a, ch == 'y' || ch == 'Y'); return; }
    if (a->overlay == 1) { help_key(a, ch); return; }
    if (a->overlay == 2) { params_key(a, ch); return; }
    if (a->opt.demo && demo_key(a, ch)) return;
    if (ch == KEY_F(1)) { a->overlay = 1; a->help_scroll = 0; return; }
    if (ch >= KEY_F(2) && ch <= KEY_F(6)) { app_set_screen(a, ch - KEY_F(2)); return; }
    if (ch == KEY_F(9)) { a->overlay = 2; return; }
    if (ch == '\t' && !a->cmd_mode) { app_set_screen(a, (a->scr + 1) % SCR_COUNT); return; }
    if (ch == KEY_BTAB && !a->cmd_mode) { app_set_screen(a, (a->scr + SCR_COUNT - 1) % SCR_COUNT); return; }
    if (a->line_on && (ch == KEY_PPAGE || ch == KEY_NPAGE) && screens[a->scr]->key(a, ch)) return;
    if (a->line_on) {
        if (ch == '?' && rl_end == 0 && !a->cmd_mode) { a->overlay = 1; a->help_scroll = 0; return; }
        key_to_line(a, ch);
        return;
    }
    if (screens[a->scr]->key(a, ch)) return;
    switch (ch) {
    case 'q': case 4: request_quit(a); break;
    case '?': a->overlay = 1; a->help_scroll = 0; break;
    case ':': app_open_line(a, 1, ""); break;
    case 'p': a->overlay = 2; break;
    case 'u': app_undo(a); break;
    case 'U': app_redo(a); break;
    case 'n': case 's': case 'c': meta_key(a, ch); break;
    case 'g': app_set_screen(a, SCR_GENERATE); break;
    case 'T': app_other_model(a); break;
    }
}

/* ---- the ':' command line ------------------------------------------------------------------- */

int app_command(app *a, const char *line) {
    char buf[1200];
    snprintf(buf, sizeof buf, "%s", line);
    char *save = NULL, *cmd = strtok_r(buf, " \t", &save);
    if (!cmd) return 0;
    char *rest = save ? save + strspn(save, " \t") : NULL;
    char err[512] = "";
    if (!strcmp(cmd, "q") || !strcmp(cmd, "quit")) {
        request_quit(a);
        return 0;
    }
    if (!strcmp(cmd, "q!") || !strcmp(cmd, "quit!")) {
        a->quit = 1;
        return 0;
    }
    if (!strcmp(cmd, "set")) {
        char *name = rest ? strtok_r(rest, " \t=", &save) : NULL;
        char *val = name ? strtok_r(NULL, " \t=", &save) : NULL;
        if (!name || !val) {
            app_message(a, 1, ":set NAME VALUE (seed, prior-temp, decode, temp, n, confidence, block-delay)");
            return 1;
        }
        if (params_set(a, name, val, err, sizeof err)) {
            app_message(a, 1, "%s", err);
            return 1;
        }
        app_message(a, 0, "%s = %s", name, val);
        return 0;
    }
    if (!strcmp(cmd, "w") || !strcmp(cmd, "save")) {
        const char *path = rest && *rest ? rest : a->session_path;
        if (!*path) { app_message(a, 1, ":save FILE"); return 1; }
        if (session_save(a, path, err, sizeof err)) { app_message(a, 1, "%s", err); return 1; }
        app_message(a, 0, "saved %s", path);
        return 0;
    }
    if (!strcmp(cmd, "e") || !strcmp(cmd, "load") || !strcmp(cmd, "open")) {
        if (!rest || !*rest) { app_message(a, 1, ":load FILE"); return 1; }
        if (a->busy) { app_message(a, 1, "busy: wait or press Ctrl-C"); return 1; }
        if (session_load(a, rest, err, sizeof err)) { app_message(a, 1, "%s", err); return 1; }
        if (!a->msg_err) app_message(a, 0, "loaded %s", rest);
        return 0;
    }
    if (!strcmp(cmd, "export")) {
        char *kind = rest ? strtok_r(rest, " \t", &save) : NULL;
        char *path = kind ? save + strspn(save, " \t") : NULL;
        if (!kind || !path || !*path) {
            app_message(a, 1, ":export text|json|ansi|html FILE");
            return 1;
        }
        if (export_file(a, kind, path, err, sizeof err)) { app_message(a, 1, "%s", err); return 1; }
        app_message(a, 0, "exported %s to %s", kind, path);
        return 0;
    }
    if (!strcmp(cmd, "m") || !strcmp(cmd, "model")) {
        if (!rest || !*rest) {
            app_message(a, 1, ":model FILE (now %s; T switches to the other shipped model)",
                        a->model_path);
            return 1;
        }
        return app_use_model(a, rest);
    }
    if (!strcmp(cmd, "undo")) return app_undo(a);
    if (!strcmp(cmd, "redo")) return app_redo(a);
    if (!strcmp(cmd, "help")) { a->overlay = 1; return 0; }
    if (!strcmp(cmd, "params")) { a->overlay = 2; return 0; }
    if (!strcmp(cmd, "generate") || !strcmp(cmd, "gen")) {
        app_start_generate(a, rest ? rest : "", &a->gp);
        return 0;
    }
    if (!strcmp(cmd, "continue")) { app_start_generate(a, NULL, &a->gp); return 0; }
    static const char *names[SCR_COUNT] = {"generate", "layers", "heatmap", "replay", "edit"};
    if (!strcmp(cmd, "screen") && rest) cmd = rest;
    for (int i = 0; i < SCR_COUNT; i++)
        if (!strcmp(cmd, names[i])) { app_set_screen(a, i); return 0; }
    app_message(a, 1, "unknown command '%s' (try :set, :save, :load, :export, :model, :undo, :help)", cmd);
    return 1;
}

/* ---- setup, loop, teardown ------------------------------------------------------------------------ */

static void curses_start(app *a) {
    initscr();
    g_curses_on = 1;
    raw();                  /* Ctrl-C arrives as a key: it cancels, never quits */
    noecho();
    nonl();
    keypad(stdscr, TRUE);
    nodelay(stdscr, TRUE);
    set_escdelay(25);
    colours_init(a);
    if (a->mouse) mousemask(BUTTON1_PRESSED | BUTTON1_RELEASED | BUTTON1_CLICKED |
                            REPORT_MOUSE_POSITION, NULL);
    fputs("\033[?2004h", stdout);   /* bracketed paste */
    fflush(stdout);
}

static void curses_stop(void) {
    if (!g_curses_on) return;
    fputs("\033[?2004l", stdout);
    fflush(stdout);
    endwin();
    g_curses_on = 0;
}

/* ---- the model: loading and switching ---------------------------------------------------------- */

/* the app's load parameters: threads, BLAS, and our progress callback */
static void model_params(app *a, tflm_params *p) {
    tflm_params_default(p);
    const char *tenv = getenv("TFLM_THREADS");
    int th = 0;
    if (tenv && *tenv && cli_parse_int(tenv, 1, 1024, &th) == 0) p->threads = th;
    if (a->opt.threads > 0) p->threads = a->opt.threads;
    if (a->opt.no_blas) p->use_blas = 0;
    p->progress = app_progress;
    p->user = a;
}

static const char *base_name(const char *path) {
    const char *b = strrchr(path, '/');
    return b ? b + 1 : path;
}

/* cli_load_model's parameters, with the app's callbacks: no log lines on the
 * terminal curses owns, progress through the wake pipe */
static void app_tune(tflm_params *p, void *user) {
    p->log = NULL;
    p->progress = app_progress;
    p->user = user;
}

static int app_load(app *a) {
    cli_common c;
    cli_common_init(&c, a->opt.demo ? "demo" : "ui");
    c.model = a->opt.model_path;
    c.threads = a->opt.threads;
    c.no_blas = a->opt.no_blas;
    c.tune = app_tune;
    c.tune_user = a;
    const char *path = NULL;
    int rc = cli_load_model(&c, &a->ctx, &path);
    if (rc != EXIT_OK) return rc;
    snprintf(a->model_file, sizeof a->model_file, "%s", path);
    a->model_path = a->model_file;
    tflm_get_info(a->ctx, &a->info);
    return EXIT_OK;
}

static void apply_pending_compose(app *a) {
    if (!pending_compose || a->cmd_mode) return;
    if (rl_end == 0) {   /* never replace what the user is typing */
        rl_replace_line(pending_compose, 0);
        rl_point = rl_end;
    }
    free(pending_compose);
    pending_compose = NULL;
}

/* Load path into a fresh context *out; on failure a message, the app's model
 * untouched, and 1. */
static int model_load(app *a, const char *path, tflm_ctx **out) {
    *out = NULL;
    if (access(path, R_OK) != 0) {
        app_message(a, 1, "%s: %s (model unchanged)", path, strerror(errno));
        return 1;
    }
    app_message(a, 0, "loading %s ...", path);
    draw_all(a);
    tflm_params p;
    model_params(a, &p);
    tflm_status st = tflm_load(out, path, &p);
    g_sigint = 0;
    if (st == TFLM_OK) return 0;
    *out = NULL;
    const char *e = tflm_last_error();
    size_t n = strlen(path);
    if (st == TFLM_ECANCELLED) e = "loading cancelled";
    else if (!e || !*e) e = tflm_status_str(st);
    if (strncmp(e, path, n) == 0 && e[n] == ':') app_message(a, 1, "%s (model unchanged)", e);
    else app_message(a, 1, "%s: %s (model unchanged)", path, e);
    return 1;
}

/* Make the loaded context nc (of file path) the app's model: free the old
 * context and everything that came from it: the session's steps (their
 * traces are read with the model's vocabulary and layers), the views'
 * cursors, the replay and the edit span. Settings and the compose line
 * stay; the last context is offered again on an empty compose line. */
static void model_swap(app *a, tflm_ctx *nc, const char *path) {
    char file[sizeof a->model_file];
    snprintf(file, sizeof file, "%s", path);   /* path may be a->pending_model */
    const char *last = NULL;   /* the last generation's context */
    for (int i = a->cur; i >= 0 && !last; i--)
        if (a->docs[i]->kind == DOC_GEN) last = a->docs[i]->context;
    if (last && *last && !pending_compose) pending_compose = strdup(last);
    for (int i = 0; i < a->n_docs; i++) doc_free(a->docs[i]);
    free(a->docs);
    a->docs = NULL;
    a->n_docs = a->cap_docs = 0;
    a->cur = -1;
    a->dirty = a->dirty_edits = 0;
    a->session_path[0] = 0;   /* :w must not overwrite the old model's session */
    tflm_free(a->ctx);
    a->ctx = nc;
    tflm_get_info(a->ctx, &a->info);
    snprintf(a->model_file, sizeof a->model_file, "%s", file);
    a->model_path = a->model_file;
    a->cur_tok = a->cur_layer = a->top_band = 0;
    a->ed_a = a->ed_b = -1;
    a->ed_anchor = -1;
    a->ed_show_after = 0;
    a->ed_layer = a->info.n_flows;
    replay_reset(a);
    char size[32];
    if (a->info.n_params >= 1000000) snprintf(size, sizeof size, "%.1fM", a->info.n_params / 1e6);
    else snprintf(size, sizeof size, "%.0fk", a->info.n_params / 1e3);
    app_message(a, 0, "model: %s (%d flow%s, %s, %s parameters, window %d)", base_name(file),
                a->info.n_flows, a->info.n_flows == 1 ? "" : "s",
                a->info.is_ar ? "ar" : a->info.flows[0].type, size, a->info.window);
}

/* the answer to the question of overlay 4 */
static void model_confirm(app *a, int yes) {
    tflm_ctx *nc = a->pending_ctx;
    a->pending_ctx = NULL;
    if (a->overlay == 4) a->overlay = 0;
    if (!nc) return;
    if (yes && !a->busy) {
        model_swap(a, nc, a->pending_model);
    } else {
        tflm_free(nc);
        app_message(a, 0, "model unchanged");
    }
}

int app_use_model(app *a, const char *path) {
    if (a->busy) { app_message(a, 1, "busy: wait or press Ctrl-C"); return 1; }
    if (strlen(path) >= sizeof a->model_file) { app_message(a, 1, "model path too long"); return 1; }
    model_confirm(a, 0);
    tflm_ctx *nc;
    if (model_load(a, path, &nc)) return 1;
    if (a->dirty_edits) {   /* the switch drops the session: ask, as quitting does */
        snprintf(a->pending_model, sizeof a->pending_model, "%s", path);
        a->pending_ctx = nc;
        a->overlay = 4;
        app_message(a, 0, "loaded %s", path);
        return 0;
    }
    model_swap(a, nc, path);
    return 0;
}

int app_other_model(app *a) {
    static const char *const pair[2] = {"default.safetensors", "likelihood.safetensors"};
    const char *cur = a->model_path, *base = base_name(cur);
    char target[sizeof a->model_file];
    int k = !strcmp(base, pair[0]) ? 1 : !strcmp(base, pair[1]) ? 0 : -1;
    if (k >= 0) {   /* the partner in the same directory */
        int nd = (int)(base - cur);
        snprintf(target, sizeof target, "%.*s%s", nd, cur, pair[k]);
        if (access(target, R_OK) != 0) {
            const char *why = errno == ENOENT ? "no" : "no readable";
            if (nd == 0) app_message(a, 1, "cannot switch: %s %s in .", why, pair[k]);
            else app_message(a, 1, "cannot switch: %s %s in %.*s", why, pair[k], nd > 1 ? nd - 1 : 1, cur);
            return 1;
        }
    } else {        /* another file: back to the shipped default */
        const char *d = cli_default_model();
        if (!d) {
            app_message(a, 1, "no shipped default model found (use :model FILE)");
            return 1;
        }
        snprintf(target, sizeof target, "%s", d);
    }
    return app_use_model(a, target);
}

int app_run(app_opts *o) {
    if (!isatty(STDIN_FILENO) || !isatty(STDOUT_FILENO)) {
        cli_msg("%s: needs a terminal (for text output use 'tflm generate')",
                o->demo ? "demo" : "ui");
        return EXIT_USAGE;
    }
    app A;
    memset(&A, 0, sizeof A);
    app *a = &A;
    g_app = a;
    a->opt = *o;
    a->cur = -1;
    a->gp = o->gp;
    a->conf_colour = 1;
    a->rp_speed = 40;
    a->ed_layer = 1;
    a->ed_strength = 0.5;
    a->ed_a = a->ed_b = -1;
    a->ed_anchor = -1;
    int rc = app_load(a);
    if (rc != EXIT_OK) return rc;
    a->ed_layer = a->info.n_flows;
    a->utf8 = cli_utf8();
    const char *nc = getenv("NO_COLOR"), *term = getenv("TERM");
    if (o->color == 0) a->color = 0;
    else if (o->color == 1) a->color = 1;
    else a->color = !(nc && *nc) && term && strcmp(term, "dumb") != 0;
    a->mouse = o->mouse;
    if (a->opt.demo) {
        char err[512];
        a->demo = demo_load(o->script, err, sizeof err);
        if (!a->demo) {
            cli_msg("demo: %s", err);
            tflm_free(a->ctx);
            return EXIT_NOINPUT;
        }
        a->big = 1;
    }
    pthread_mutex_init(&a->live.mu, NULL);
    if (pipe(a->wake) != 0) {
        cli_msg("ui: pipe: %s", strerror(errno));
        tflm_free(a->ctx);
        return EXIT_RUNTIME;
    }
    fcntl(a->wake[0], F_SETFL, O_NONBLOCK);
    fcntl(a->wake[1], F_SETFL, O_NONBLOCK);
    setlocale(LC_ALL, "");
    install_signals();
    curses_start(a);
    if (a->color && !has_colors()) a->color = 0;
    readline_init(a);
    a->scr = SCR_GENERATE;
    a->line_on = 1;
    if (o->session) {
        char err[512];
        if (session_load(a, o->session, err, sizeof err)) app_message(a, 1, "%s", err);
    } else if (o->context) {
        app_start_generate(a, o->context, &a->gp);
    }
    while (!a->quit) {
        if (g_sigterm) break;
        if (g_sigint) {   /* a SIGINT from outside acts like Ctrl-C */
            g_sigint = 0;
            if (a->busy) { a->cancel = 1; app_message(a, 0, "cancelling..."); }
        }
        apply_pending_compose(a);
        draw_all(a);
        int timeout_ms = -1;
        if (a->busy) timeout_ms = 100;
        if (a->scr == SCR_REPLAY && a->rp_playing) {
            int t = (int)(1000.0 / a->rp_speed);
            timeout_ms = t < 10 ? 10 : t;
        }
        if (a->demo) {
            int t = demo_tick(a);
            if (a->quit) break;
            if (t >= 0 && (timeout_ms < 0 || t < timeout_ms)) timeout_ms = t;
            draw_all(a);
        }
        struct pollfd pf[2] = {{STDIN_FILENO, POLLIN, 0}, {a->wake[0], POLLIN, 0}};
        int r = poll(pf, 2, timeout_ms);
        if (r < 0 && errno != EINTR) break;
        if (r > 0 && (pf[1].revents & POLLIN)) {
            char b[64];
            ssize_t n;
            int done = 0;
            while ((n = read(a->wake[0], b, sizeof b)) > 0)
                for (ssize_t i = 0; i < n; i++) if (b[i] == 'd') done = 1;
            if (done) app_job_done(a);
        }
        if (r > 0 && (pf[0].revents & (POLLHUP | POLLERR)) && !(pf[0].revents & POLLIN)) break;
        int ch;
        while ((ch = getch()) != ERR) {
            if (ch == KEY_MOUSE) {
                MEVENT ev;
                if (getmouse(&ev) == OK && !a->overlay) {
                    a->mev_x = ev.x;
                    a->mev_y = ev.y;
                    a->mev_b = (unsigned long)ev.bstate;
                    screens[a->scr]->key(a, KEY_MOUSE);
                }
                continue;
            }
            handle_key(a, ch);
            apply_pending_compose(a);
            if (a->pending_ctx && a->overlay != 4) model_confirm(a, 0);   /* closed by Esc, Ctrl-C */
            if (a->quit) break;
        }
        if (a->scr == SCR_REPLAY && a->rp_playing) replay_tick(a);
    }
    a->cancel = 1;
    worker_stop(a);
    readline_done();
    curses_stop();
    for (int i = 0; i < a->n_docs; i++) doc_free(a->docs[i]);
    free(a->docs);
    demo_free(a->demo);
    tflm_free(a->ctx);
    free(pending_compose);
    pending_compose = NULL;
    tflm_free(a->pending_ctx);
    free(a->live.tok);
    free(a->live.prob);
    free(a->live.prefix);
    pthread_mutex_destroy(&a->live.mu);
    close(a->wake[0]);
    close(a->wake[1]);
    g_app = NULL;
    if (g_sigterm) return 128 + SIGTERM;
    return EXIT_OK;
}
