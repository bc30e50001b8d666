/* cli.h: shared pieces of the tflm command line: exit codes, the common
 * options (-m, --threads, --no-blas), model resolution and loading, input
 * files, SIGINT handling, a small JSON writer and text escaping. Every
 * subcommand is an int cmd_X(int argc, char **argv) that returns the
 * process exit status; argv[0] is the subcommand's name. */
#ifndef TFLM_CLI_H
#define TFLM_CLI_H

#include <stdio.h>
#include <stddef.h>
#include <stdint.h>
#include <getopt.h>
#include <jansson.h>
#include "tflm.h"

/* ---- exit status (documented in tflm --help and tflm(1)) ------------------ */
enum {
    EXIT_OK = 0,
    EXIT_RUNTIME = 1,      /* the library reported a failure */
    EXIT_BADMODEL = 2,     /* malformed model file or config, or no model */
    EXIT_USAGE = 64,       /* bad command line */
    EXIT_NOINPUT = 66,     /* an input file is missing or unreadable */
    EXIT_UNAVAILABLE = 69, /* the feature is not built */
    EXIT_INTERNAL = 70,    /* a bug: the library broke its own contract */
    EXIT_INTERRUPTED = 130 /* SIGINT */
};

/* The text of the exit-status table, shared by the help screens. */
extern const char cli_exit_help[];

/* ---- subcommands ---------------------------------------------------------- */
int cmd_init(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_score(int argc, char **argv);
int cmd_encode(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_layers(int argc, char **argv);
int cmd_edit(int argc, char **argv);
int cmd_ui(int argc, char **argv);     /* ui/cmd_ui.c: the app */
int cmd_demo(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_quality(int argc, char **argv);   /* ui/cmd_quality.c */

/* ---- messages ------------------------------------------------------------- */
/* "tflm: <fmt>" and a newline on stderr. */
void cli_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "tflm: <cmd>: <fmt> (try 'tflm <cmd> --help')" on stderr; returns EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "tflm: <what>: <tflm_last_error()>" on stderr; returns the exit status of st. */
int cli_fail(tflm_status st, const char *what);
/* Exit status for a library status (EFORMAT 2, ECANCELLED 130, else 1). */
int cli_status_exit(tflm_status st);

/* ---- common options ---------------------------------------------------------- */
/* getopt_long codes of the long-only options; every subcommand shares them. */
enum {
    OPT_THREADS = 256, OPT_NO_BLAS, OPT_SEED, OPT_JSON, OPT_MEAN, OPT_SAMPLES,
    OPT_CONFIG, OPT_PRIOR_TEMP, OPT_DECODE, OPT_TEMP, OPT_WITH_CONTEXT,
    OPT_LAYER, OPT_SPAN, OPT_OP, OPT_LOCAL, OPT_DEVICE
};

/* The long options of the model-using commands: -m/--model, --threads,
 * --no-blas, --device, -h/--help. Spliced into each command's table with this macro. */
#define CLI_COMMON_LONGOPTS \
    {"model", required_argument, NULL, 'm'}, \
    {"threads", required_argument, NULL, OPT_THREADS}, \
    {"no-blas", no_argument, NULL, OPT_NO_BLAS}, \
    {"device", required_argument, NULL, OPT_DEVICE}, \
    {"help", no_argument, NULL, 'h'}

typedef struct {
    const char *cmd;     /* subcommand name, for messages */
    const char *model;   /* -m/--model, or NULL */
    int threads;         /* --threads or $TFLM_THREADS; 0 = not given */
    int no_blas;         /* --no-blas */
    int device;          /* --device or $TFLM_DEVICE: TFLM_DEVICE_*; -1 = not given */
    /* optional: adjust the load parameters (callbacks) before cli_load_model loads */
    void (*tune)(tflm_params *p, void *user);
    void *tune_user;
} cli_common;

void cli_common_init(cli_common *c, const char *cmd);
/* Handle a common option code c (from getopt_long). Returns 1 if it was
 * one and went well, 0 if c is not a common option, or -EXIT_USAGE on a
 * bad value (message printed). 'h' is not handled here. */
int cli_common_opt(cli_common *c, int opt, const char *arg);
/* "cpu" or "cuda" to TFLM_DEVICE_*; 0 = ok, -1 = not a device name */
int cli_parse_device(const char *s, int *out);
/* Report the getopt_long error of code '?' or ':' (optstring must start
 * with ':'); returns EXIT_USAGE. */
int cli_getopt_error(const char *cmd, int opt, char **argv);

/* Resolve the model path (-m, $TFLM_MODEL, installed default, build tree)
 * and load it with the common options and the SIGINT progress callback.
 * On failure prints one line and returns the exit status; *out is NULL. */
int cli_load_model(const cli_common *c, tflm_ctx **out, const char **path_out);
/* The shipped default model where the lookup of cli_load_model finds it
 * without -m or $TFLM_MODEL (installed, source tree, build tree), or NULL. */
const char *cli_default_model(void);

/* ---- numbers ------------------------------------------------------------------- */
/* Strict parsers: the whole string must be a number in range. 0 = ok. */
int cli_parse_int(const char *s, long lo, long hi, int *out);
int cli_parse_u64(const char *s, uint64_t *out);
int cli_parse_double(const char *s, double lo, double hi, double *out);

/* ---- input ------------------------------------------------------------------- */
/* Read a whole file ("-" = stdin) into a NUL-terminated malloc'ed buffer.
 * On failure prints "tflm: FILE: reason" and returns the exit status
 * (EXIT_NOINPUT, or EXIT_INTERRUPTED). */
int cli_read_file(const char *path, char **buf, size_t *len);
/* Tokenize text with the model's vocabulary and warn on stderr (naming
 * what) when characters were mapped. Returns an exit status. */
int cli_tokenize(tflm_ctx *ctx, const char *what, const char *text, size_t len,
                 int **ids, int *n);

/* ---- SIGINT ------------------------------------------------------------------ */
void cli_install_sigint(void);
int cli_interrupted(void);
/* The tflm_params.progress callback: non-zero once SIGINT arrived. */
int cli_progress(void *user, const char *what, double fraction);

/* ---- terminal ---------------------------------------------------------------- */
/* 1 when the locale (LC_ALL, LC_CTYPE, LANG) names UTF-8. */
int cli_utf8(void);
/* 1 when f is a terminal, $NO_COLOR is unset or empty and $TERM is not dumb. */
int cli_color(FILE *f);
/* Print text on one line: newline as a return symbol (or \n in ASCII),
 * other control bytes as \xNN. */
void cli_put_escaped(FILE *f, const char *s);
/* Print s in double quotes with C-style escapes (ASCII only output). */
void cli_put_quoted(FILE *f, const char *s);

/* ---- JSON writer ---------------------------------------------------------------- */
/* A streaming writer: objects break a line before each key, arrays of
 * containers break before each element, arrays of scalars stay on one line.
 * Non-finite numbers are written as null. */
#define JW_MAXDEPTH 32
typedef struct {
    FILE *f;
    int depth;
    int after_key;
    unsigned char first[JW_MAXDEPTH], broke[JW_MAXDEPTH];
} jw;

void jw_init(jw *w, FILE *f);
void jw_obj(jw *w);
void jw_obj_end(jw *w);
void jw_arr(jw *w);
void jw_arr_end(jw *w);
void jw_key(jw *w, const char *key);
void jw_str(jw *w, const char *s);
void jw_int(jw *w, long long v);
void jw_bool(jw *w, int v);
void jw_null(jw *w);
void jw_num(jw *w, double v, int digits);   /* %.<digits>g */
void jw_json(jw *w, const json_t *j);       /* a jansson value, reals %.17g */
void jw_end(jw *w);                         /* final newline */
/* An array of n doubles, %.<digits>g each. */
void jw_num_array(jw *w, const double *v, int n, int digits);
/* Layer states [layers][n_pos][c] of a trace as nested arrays, %.9g. */
void jw_states(jw *w, const tflm_trace *tr);

/* "l2r" / "flip" of flow index l-1 of a trace (l in 1..L). */
const char *cli_dir_name(const tflm_trace *tr, int l);

#endif /* TFLM_CLI_H */
