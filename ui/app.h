/* app.h: the interactive app (tflm ui, tflm demo): its state, the screens'
 * interface and the helpers they share. ui/app.c owns the terminal (curses,
 * readline, signals, the event loop, the worker thread); each screen lives
 * in its own ui/screen_*.c and only draws into the body area and handles
 * its keys; ui/app_doc.c keeps the documents (undo/redo), runs the library
 * jobs and reads and writes sessions and exports; ui/demo.c plays scripts. */
#ifndef TFLM_APP_H
#define TFLM_APP_H

#include <pthread.h>
#include <stdint.h>
#include "tflm.h"

/* smallest usable terminal */
#define APP_MIN_W 60
#define APP_MIN_H 16

/* ---- documents: one step of the session (a generation or an edit) -------- */
enum { DOC_GEN = 0, DOC_EDIT = 1 };

typedef struct {
    int kind;              /* DOC_GEN or DOC_EDIT */
    char *prefix;          /* text before the trace's first token (not traced) */
    tflm_trace *tr;        /* the text's trace (owned) */
    tflm_trace *before;    /* DOC_EDIT: the window before the edit (owned) */
    int new_from;          /* trace token where new text starts (GEN) or the span starts */
    int new_to;            /* DOC_EDIT: end of the span (trace tokens) */
    /* the recipe, enough to replay the step exactly */
    char *context;         /* GEN: the context given to tflm_generate */
    tflm_gen_params gp;    /* GEN */
    tflm_edit_params ep;   /* EDIT: span in tokens of the edited window */
    int edit_off;          /* EDIT: tokens of the whole text before the window */
    int span_a, span_b;    /* EDIT: span in tokens of the whole text */
    char *replace;         /* EDIT: REPLACE text (ep.replace points here) */
    char *text;            /* the whole text */
    double wall_ms;        /* time the step took */
} doc;

/* ---- a job for the worker thread ---------------------------------------- */
enum { JOB_NONE = 0, JOB_GEN = 1, JOB_EDIT = 2 };

typedef struct {
    int kind;
    doc *d;                /* filled by the worker; the recipe set by the caller */
    tflm_status st;
    char err[256];
    double progress;       /* 0..1, written by the worker */
} job;

/* ---- the text of a running generation, block by block ---------------------- */
/* The worker's on_block callback copies what the Generate screen needs from
 * the partial trace under mu and wakes the event loop; the screen draws it
 * (under mu) until the job is done. Never touched by curses in the worker. */
typedef struct {
    pthread_mutex_t mu;
    int n;                 /* trace tokens [0, n) are final; 0: no block yet */
    int n_pad, from;       /* leading pads; first new token */
    int end;               /* tokens of the whole generation (pads, context, new) */
    int blocks;            /* blocks made so far */
    int cap;
    int *tok;              /* [cap] token ids */
    float *prob;           /* [cap] decoder probability at h^(0) */
    char *prefix;          /* context that fell out of the window */
} live_text;

/* ---- screens --------------------------------------------------------------- */
struct app;
typedef struct {
    const char *name;      /* tab title */
    const char *what;      /* "what am I looking at" paragraph for help */
    const char *keys;      /* key help, lines "KEY\tdescription\n" */
    void (*draw)(struct app *a, int y0, int h);
    int (*key)(struct app *a, int ch);  /* 1: handled */
} screen;

enum { SCR_GENERATE = 0, SCR_LAYERS, SCR_HEATMAP, SCR_REPLAY, SCR_EDIT, SCR_COUNT };
extern const screen screen_generate, screen_layers, screen_heatmap, screen_replay, screen_edit;

/* heatmap metrics */
enum { MET_CONF = 0, MET_ENTROPY, MET_AGREE, MET_CHANGE, MET_COUNT };

/* ---- options from the command line ----------------------------------------- */
typedef struct {
    const char *model_path;
    int threads, no_blas;
    int color;             /* -1 auto, 0 never, 1 always */
    int mouse;
    int history;           /* readline history file */
    int demo;              /* tflm demo */
    const char *script;    /* demo script path */
    double demo_auto;      /* seconds per demo step when advancing by itself; 0 = keys */
    const char *session;   /* --load FILE */
    const char *context;   /* -p TEXT: generate at start */
    tflm_gen_params gp;
} app_opts;

/* ---- the app ----------------------------------------------------------------- */
typedef struct app {
    tflm_ctx *ctx;
    tflm_info info;
    const char *model_path;         /* points to model_file */
    char model_file[1024];          /* the loaded model's path */
    char pending_model[1024];       /* overlay 4: the model to switch to once confirmed */
    tflm_ctx *pending_ctx;          /* overlay 4: that model, loaded */
    app_opts opt;
    int utf8, color, colors256, mouse;

    /* session */
    doc **docs;
    int n_docs, cap_docs, cur;      /* cur: index of the shown doc, -1 = none */
    int dirty;                      /* unsaved steps */
    int dirty_edits;                /* unsaved edits among them */
    char session_path[1024];
    tflm_gen_params gp;             /* parameters of the next generation */
    int conf_colour;                /* colour continuation by confidence */

    /* worker */
    pthread_t thread;
    job jb;
    volatile int busy;              /* a job runs */
    volatile int cancel;            /* Ctrl-C asked to stop it */
    int wake[2];                    /* pipe: the worker wrote when done/progressing */
    double job_t0;
    live_text live;                 /* the running generation's text so far */
    int block_delay_ms;             /* pause after each block (teaching; :set block-delay) */

    /* screens */
    int scr;
    int overlay;                    /* 0 none, 1 help, 2 params, 3 quit confirm,
                                       4 model switch confirm */
    int param_sel;
    int help_scroll;
    int quit;
    char msg[512];                  /* message on the status line */
    int msg_err;

    /* compose / command line (readline) */
    int line_on;                    /* readline owns the bottom line */
    int cmd_mode;                   /* the line is a ':' command line */
    int line_prompt_kind;           /* 0 compose, 1 command, 2 replace text */
    int paste;                      /* inside a bracketed paste */

    /* layers / heatmap / edit cursor (trace token and layer) */
    int cur_tok, cur_layer, top_band;
    int metric;
    int heat_chars;                 /* heatmap shows characters instead of glyphs */

    /* replay */
    int rp_dissolve, rp_playing, rp_step, rp_total;
    double rp_speed;                /* steps per second */
    double rp_last;

    /* edit */
    int ed_a, ed_b, ed_anchor;      /* span in trace tokens of the shown doc */
    int ed_layer, ed_op, ed_local;
    double ed_strength;
    char ed_replace[512];
    int ed_show_after;              /* show before/after of the last edit */

    /* demo */
    struct demo *demo;
    int big;                        /* large cells (demo) */
    char caption[1024];

    /* the last mouse event (KEY_MOUSE is then passed to the screen) */
    int mev_x, mev_y;
    unsigned long mev_b;
} app;

/* ---- app.c: terminal and shared drawing -------------------------------------- */
int app_run(app_opts *o);
void app_message(app *a, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
double app_now(void);
void app_set_screen(app *a, int s);
/* run a ':' command line (without the ':'); returns 0 on success */
int app_command(app *a, const char *line);
/* open the command line with a prompt kind (1 ':' command, 2 replace text) */
void app_open_line(app *a, int kind, const char *initial);
/* load the model file path into a fresh context and, if that works, make it
 * the app's model: the old context and the session's steps (traces of the
 * old model) are freed, the settings and the compose line are kept; on
 * failure (a message) the old model stays. Asks first when edits are
 * unsaved. 0: switched (or asked) */
int app_use_model(app *a, const char *path);
/* T: switch between the shipped models default.safetensors (teaching) and
 * likelihood.safetensors (the full-rate contrast; same directory); from any other file, to the
 * shipped default. 0 on success */
int app_other_model(app *a);
/* the current document or NULL */
doc *app_doc(app *a);
/* draw text in the body */
void app_put(int y, int x, int maxw, const char *s, int attr);
/* the glyph of a token for a grid cell (one column): writes a UTF-8 string */
void app_tok_glyph(app *a, int id, char *out);
/* attributes */
int app_attr_ctx(app *a);
int app_attr_conf(app *a, float p);
int app_attr_changed(app *a);
int app_attr_heat(app *a, double v);   /* v in [0,1] */
const char *app_heat_glyph(app *a, double v);
const char *app_arrow(app *a, int dir);   /* 0 l2r, 1 flip */
int app_draw_caption(app *a, int y0, int h);  /* demo caption; returns rows used */

/* band layout shared by Layers, Heatmap, Replay: token range and rows */
typedef struct {
    int t0, t1;        /* trace tokens shown */
    int label_w, cell_w, per_band, rows_per_band;
} bands;
void bands_layout(app *a, const tflm_trace *tr, int t0, int t1, int width, bands *b);
/* heatmap metric of token t at layer l, in [0,1], and its raw value */
double metric_value(app *a, const tflm_trace *tr, int metric, int l, int t, double *raw);
const char *metric_name(int metric);
/* the refinement profile (agreement with the final text and mean confidence
 * per layer) of trace tokens [from, n_tok); 0 on success */
int app_profile(app *a, const tflm_trace *tr, int from, tflm_profile *p);
/* one layer's profile in PROFILE_W columns at y, x: "  42% 0.61" */
#define PROFILE_W 11
void app_draw_profile(app *a, int y, int x, const tflm_profile *p, int l);

/* ---- app_doc.c: documents, jobs, sessions, exports ----------------------------- */
void doc_free(doc *d);
void docs_push(app *a, doc *d);
int app_undo(app *a);
int app_redo(app *a);
/* start a generation job (context may be NULL: continue the current text) */
int app_start_generate(app *a, const char *context, const tflm_gen_params *gp);
/* start an edit job on the current doc; span in trace tokens of the current doc */
int app_start_edit(app *a, int a_tok, int b_tok, int layer, int op, double strength,
                   int local, const char *replace, uint64_t seed);
/* the persistent worker thread */
int worker_start(app *a);
void worker_stop(app *a);
/* the worker told us it finished: collect the result */
void app_job_done(app *a);
/* run a recipe synchronously (sessions, demo): 0 on success */
int doc_run(app *a, doc *d, doc *prev, char *err, size_t errlen);
int session_save(app *a, const char *path, char *err, size_t errlen);
int session_load(app *a, const char *path, char *err, size_t errlen);
int export_file(app *a, const char *kind, const char *path, char *err, size_t errlen);

/* ---- screen_help.c: overlays ------------------------------------------------------ */
void help_draw(app *a);
int help_key(app *a, int ch);
void params_draw(app *a);
int params_key(app *a, int ch);
/* :set NAME VALUE; returns 0 on success */
int params_set(app *a, const char *name, const char *value, char *err, size_t errlen);
extern const char app_glossary[];

/* ---- demo.c ------------------------------------------------------------------------- */
struct demo *demo_load(const char *path, char *err, size_t errlen);
void demo_free(struct demo *d);
/* advance the demo: called from the event loop; returns ms until the next call
 * wants to run (or -1 when waiting for a key) */
int demo_tick(app *a);
/* a key during the demo; 1 if it consumed it */
int demo_key(app *a, int ch);

/* ---- replay (screen_replay.c) ------------------------------------------------------- */
void replay_reset(app *a);
/* the step count and the (layer, token) written at step s */
int replay_total(app *a, const tflm_trace *tr, int from);
void replay_tick(app *a);

#endif /* TFLM_APP_H */
