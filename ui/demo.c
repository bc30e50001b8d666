/* demo.c: tflm demo, a scripted tour for teaching. A script is a text file
 * of one command per line ('#' starts a comment):
 *
 *   caption TEXT      show TEXT in the caption bar (caption+ appends a line)
 *   type TEXT         put TEXT on the compose line
 *   generate [TEXT]   generate from TEXT (default: the compose line); waits
 *   continue          continue the text; waits
 *   screen NAME       generate, layers, heatmap, replay or edit
 *   key KEY           press a key: a character, or space, enter, left,
 *                     right, up, down, home, end, tab
 *   set NAME VALUE    as :set
 *   play              start the replay and wait until it ends
 *   wait SECONDS      wait (any key skips)
 *   pause             wait for space/Enter (or --auto seconds)
 *   end               stop here (the app stays open)
 *
 * Space, Enter or n advances a pause; q or Esc leaves the demo. */
#include <curses.h>
#include <readline/readline.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "app.h"

struct demo {
    char **line;
    int n, pc;
    int waiting;          /* 0 run, 1 pause (key), 2 wait (time), 3 job, 4 replay, 5 ended */
    double until;
};

struct demo *demo_load(const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open the script", path);
        return NULL;
    }
    struct demo *d = calloc(1, sizeof *d);
    char buf[2048];
    int cap = 0;
    while (d && fgets(buf, sizeof buf, f)) {
        size_t k = strlen(buf);
        while (k > 0 && (buf[k - 1] == '\n' || buf[k - 1] == '\r')) buf[--k] = 0;
        char *s = buf + strspn(buf, " \t");
        if (!*s || *s == '#') continue;
        if (d->n == cap) {
            cap = cap ? cap * 2 : 64;
            char **nl = realloc(d->line, cap * sizeof *nl);
            if (!nl) break;
            d->line = nl;
        }
        d->line[d->n++] = strdup(s);
    }
    fclose(f);
    if (d && d->n == 0) {
        snprintf(err, errlen, "%s: the script is empty", path);
        demo_free(d);
        return NULL;
    }
    return d;
}

void demo_free(struct demo *d) {
    if (!d) return;
    for (int i = 0; i < d->n; i++) free(d->line[i]);
    free(d->line);
    free(d);
}

static int key_code(const char *k) {
    static const struct { const char *n; int c; } names[] = {
        {"space", ' '}, {"enter", '\r'}, {"left", KEY_LEFT}, {"right", KEY_RIGHT},
        {"up", KEY_UP}, {"down", KEY_DOWN}, {"home", KEY_HOME}, {"end", KEY_END}, {"tab", '\t'},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(k, names[i].n)) return names[i].c;
    return (unsigned char)k[0];
}

static int screen_index(const char *name) {
    static const char *n[SCR_COUNT] = {"generate", "layers", "heatmap", "replay", "edit"};
    for (int i = 0; i < SCR_COUNT; i++) if (!strcmp(name, n[i])) return i;
    return -1;
}

extern const screen screen_generate, screen_layers, screen_heatmap, screen_replay, screen_edit;

/* run one line; returns 1 when the demo must wait */
static int run_line(app *a, struct demo *d, const char *ln) {
    char cmd[32];
    int k = 0;
    while (ln[k] && ln[k] != ' ' && k < 31) { cmd[k] = ln[k]; k++; }
    cmd[k] = 0;
    const char *arg = ln + k;
    arg += strspn(arg, " \t");
    if (!strcmp(cmd, "caption")) {
        snprintf(a->caption, sizeof a->caption, "%s", arg);
    } else if (!strcmp(cmd, "caption+")) {
        size_t n = strlen(a->caption);
        snprintf(a->caption + n, sizeof a->caption - n, "\n%s", arg);
    } else if (!strcmp(cmd, "type")) {
        app_set_screen(a, SCR_GENERATE);
        app_open_line(a, 0, arg);
    } else if (!strcmp(cmd, "generate")) {
        app_set_screen(a, SCR_GENERATE);
        char *text = strdup(*arg ? arg : (rl_line_buffer ? rl_line_buffer : ""));
        app_open_line(a, 0, "");
        app_start_generate(a, text, &a->gp);
        free(text);
        d->waiting = 3;
        return 1;
    } else if (!strcmp(cmd, "continue")) {
        app_start_generate(a, NULL, &a->gp);
        d->waiting = 3;
        return 1;
    } else if (!strcmp(cmd, "screen")) {
        int s = screen_index(arg);
        if (s >= 0) app_set_screen(a, s);
    } else if (!strcmp(cmd, "key")) {
        int c = key_code(arg);
        const screen *sc[SCR_COUNT] = {&screen_generate, &screen_layers, &screen_heatmap,
                                       &screen_replay, &screen_edit};
        sc[a->scr]->key(a, c);
    } else if (!strcmp(cmd, "set")) {
        char name[64], val[256];
        if (sscanf(arg, "%63s %255s", name, val) == 2) {
            char err[256];
            if (params_set(a, name, val, err, sizeof err)) app_message(a, 1, "demo: %s", err);
        }
    } else if (!strcmp(cmd, "play")) {
        app_set_screen(a, SCR_REPLAY);
        a->rp_step = 0;
        a->rp_playing = 1;
        a->rp_last = app_now();
        d->waiting = 4;
        return 1;
    } else if (!strcmp(cmd, "wait")) {
        double s = atof(arg);
        d->waiting = 2;
        d->until = app_now() + s * 1000;
        return 1;
    } else if (!strcmp(cmd, "pause")) {
        d->waiting = 1;
        d->until = a->opt.demo_auto > 0 ? app_now() + a->opt.demo_auto * 1000 : 0;
        return 1;
    } else if (!strcmp(cmd, "end")) {
        d->waiting = 5;
        return 1;
    } else {
        app_message(a, 1, "demo: unknown command '%s'", cmd);
    }
    return 0;
}

int demo_tick(app *a) {
    struct demo *d = a->demo;
    if (!d) return -1;
    double now = app_now();
    switch (d->waiting) {
    case 1:
        if (d->until > 0 && now >= d->until) break;
        return d->until > 0 ? (int)(d->until - now) + 1 : -1;
    case 2:
        if (now >= d->until) break;
        return (int)(d->until - now) + 1;
    case 3:
        if (a->busy) return 100;
        break;
    case 4:
        if (a->rp_playing) return 50;
        break;
    case 5:
        return -1;
    }
    d->waiting = 0;
    while (d->pc < d->n) {
        if (run_line(a, d, d->line[d->pc++])) return 10;
    }
    d->waiting = 5;
    snprintf(a->caption, sizeof a->caption, "The tour is over. Explore on your own (F1 for help), or press q to quit.");
    return -1;
}

int demo_key(app *a, int ch) {
    struct demo *d = a->demo;
    if (!d || d->waiting == 5) return 0;
    if (ch == 'q' || ch == 27) {
        a->quit = 1;
        return 1;
    }
    if (d->waiting == 1 || d->waiting == 2) {
        if (ch == ' ' || ch == '\r' || ch == '\n' || ch == 'n' || ch == KEY_NPAGE) {
            d->until = 0;
            d->waiting = 2;   /* let demo_tick run the next lines now */
            return 1;
        }
    }
    return 0;
}
