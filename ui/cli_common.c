/* cli_common.c: what the tflm subcommands share: messages and exit codes,
 * the common options, model resolution and loading, reading input files,
 * SIGINT, terminal checks, text escaping and the JSON writer. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include "cli.h"

const char cli_exit_help[] =
    "Exit status:\n"
    "  0    success\n"
    "  1    runtime failure (the library reported an error)\n"
    "  2    bad model file or config, or no model found\n"
    "  64   usage error\n"
    "  66   an input file is missing or unreadable\n"
    "  69   unavailable (not built in this version)\n"
    "  70   internal error\n"
    "  130  interrupted (SIGINT)\n";

/* ---- messages ------------------------------------------------------------- */

void cli_msg(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("tflm: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

int cli_usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "tflm: %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (try 'tflm %s --help')\n", cmd);
    va_end(ap);
    return EXIT_USAGE;
}

int cli_status_exit(tflm_status st) {
    switch (st) {
    case TFLM_OK: return EXIT_OK;
    case TFLM_EFORMAT: return EXIT_BADMODEL;
    case TFLM_ECANCELLED: return EXIT_INTERRUPTED;
    default: return EXIT_RUNTIME;
    }
}

int cli_fail(tflm_status st, const char *what) {
    if (st == TFLM_ECANCELLED) {
        cli_msg("%s: interrupted", what);
        return EXIT_INTERRUPTED;
    }
    const char *e = tflm_last_error();
    size_t n = strlen(what);
    if (!e || !*e) e = tflm_status_str(st);
    if (strncmp(e, what, n) == 0 && e[n] == ':') cli_msg("%s", e);  /* already named */
    else cli_msg("%s: %s", what, e);
    return cli_status_exit(st);
}

/* ---- numbers ------------------------------------------------------------------ */

int cli_parse_int(const char *s, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

int cli_parse_u64(const char *s, uint64_t *out) {
    char *end;
    if (!*s || *s == '-' || *s == '+' || *s == ' ') return -1;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (*end || errno) return -1;
    *out = (uint64_t)v;
    return 0;
}

int cli_parse_double(const char *s, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || errno || !isfinite(v) || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

/* ---- common options ------------------------------------------------------------- */

void cli_common_init(cli_common *c, const char *cmd) {
    memset(c, 0, sizeof *c);
    c->cmd = cmd;
    c->device = -1;
}

int cli_parse_device(const char *s, int *out) {
    if (!strcmp(s, "cpu")) *out = TFLM_DEVICE_CPU;
    else if (!strcmp(s, "cuda") || !strcmp(s, "gpu")) *out = TFLM_DEVICE_CUDA;
    else return -1;
    return 0;
}

int cli_common_opt(cli_common *c, int opt, const char *arg) {
    switch (opt) {
    case 'm':
        c->model = arg;
        return 1;
    case OPT_THREADS:
        if (cli_parse_int(arg, 1, 1024, &c->threads)) {
            cli_usage_error(c->cmd, "--threads: '%s' is not a thread count (1..1024)", arg);
            return -EXIT_USAGE;
        }
        return 1;
    case OPT_NO_BLAS:
        c->no_blas = 1;
        return 1;
    case OPT_DEVICE:
        if (cli_parse_device(arg, &c->device)) {
            cli_usage_error(c->cmd, "--device: '%s' is not cpu or cuda", arg);
            return -EXIT_USAGE;
        }
        return 1;
    default:
        return 0;
    }
}

int cli_getopt_error(const char *cmd, int opt, char **argv) {
    const char *arg = optind > 0 ? argv[optind - 1] : "?";
    if (opt == ':')
        return cli_usage_error(cmd, "option '%s' needs a value", arg);
    if (optopt && optopt < 256)
        return cli_usage_error(cmd, "unknown option '-%c'", optopt);
    return cli_usage_error(cmd, "unknown option '%s'", arg);
}

/* ---- model -------------------------------------------------------------------- */

static void cli_log(void *user, tflm_log_level level, const char *msg) {
    (void)user;
    if (level >= TFLM_LOG_WARN) cli_msg("warning: %s", msg);
}

static int readable(const char *path) {
    return access(path, R_OK) == 0;
}

const char *cli_default_model(void) {
    static const char *const where[] = {
        TFLM_PKGDATADIR "/default.safetensors",
        TFLM_SRCDIR "/model/default.safetensors",
#ifdef TFLM_BUILDDIR
        TFLM_BUILDDIR "/model/default.safetensors",   /* made by make */
#endif
    };
    for (size_t i = 0; i < sizeof where / sizeof where[0]; i++)
        if (readable(where[i])) return where[i];
    return NULL;
}

int cli_load_model(const cli_common *c, tflm_ctx **out, const char **path_out) {
    *out = NULL;
    const char *path = NULL, *env = getenv("TFLM_MODEL");
    if (c->model) {
        path = c->model;
    } else if (env && *env) {
        path = env;
    } else if (!(path = cli_default_model())) {
        cli_msg("no model found: pass -m FILE, set TFLM_MODEL, or run "
                "'tflm init --config CONFIG -o model.safetensors'");
        return EXIT_BADMODEL;
    }
    if (!readable(path)) {
        cli_msg("%s%s: %s", c->model ? "" : "TFLM_MODEL=", path, strerror(errno));
        return EXIT_NOINPUT;
    }
    int threads = c->threads;
    const char *tenv = getenv("TFLM_THREADS");
    if (!threads && tenv && *tenv && cli_parse_int(tenv, 1, 1024, &threads)) {
        cli_msg("TFLM_THREADS='%s' is not a thread count (1..1024)", tenv);
        return EXIT_USAGE;
    }
    int device = c->device;
    const char *denv = getenv("TFLM_DEVICE");
    if (device < 0 && denv && *denv && cli_parse_device(denv, &device)) {
        cli_msg("TFLM_DEVICE='%s' is not cpu or cuda", denv);
        return EXIT_USAGE;
    }
    tflm_params p;
    tflm_params_default(&p);
    if (threads > 0) p.threads = threads;
    if (c->no_blas) p.use_blas = 0;
    if (device >= 0) p.device = device;
    p.log = cli_log;
    p.progress = cli_progress;
    if (c->tune) c->tune(&p, c->tune_user);
    tflm_status st = tflm_load(out, path, &p);
    if (st != TFLM_OK) {
        *out = NULL;
        if (st == TFLM_EIO) {
            cli_fail(st, path);
            return EXIT_NOINPUT;
        }
        if (st == TFLM_EUNSUPPORTED && p.device == TFLM_DEVICE_CUDA) {
            cli_fail(st, path);     /* no CUDA in this build, or no GPU */
            return EXIT_UNAVAILABLE;
        }
        return cli_fail(st, path);
    }
    if (path_out) *path_out = path;
    return EXIT_OK;
}

/* ---- input -------------------------------------------------------------------- */

int cli_read_file(const char *path, char **buf, size_t *len) {
    int is_stdin = strcmp(path, "-") == 0;
    const char *name = is_stdin ? "stdin" : path;
    FILE *f = is_stdin ? stdin : fopen(path, "rb");
    *buf = NULL;
    *len = 0;
    if (!f) {
        cli_msg("%s: %s", name, strerror(errno));
        return EXIT_NOINPUT;
    }
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    int rc = EXIT_OK;
    if (!b) {
        cli_msg("%s: out of memory", name);
        rc = EXIT_RUNTIME;
        goto done;
    }
    for (;;) {
        if (cap - n < 2) {
            char *nb = cap > SIZE_MAX / 2 ? NULL : realloc(b, cap * 2);
            if (!nb) {
                cli_msg("%s: out of memory", name);
                rc = EXIT_RUNTIME;
                goto done;
            }
            b = nb;
            cap *= 2;
        }
        size_t got = fread(b + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) {
            if (ferror(f)) {
                int e = errno;
                if (cli_interrupted()) {
                    cli_msg("%s: interrupted", name);
                    rc = EXIT_INTERRUPTED;
                } else {
                    cli_msg("%s: %s", name, e ? strerror(e) : "read error");
                    rc = EXIT_NOINPUT;
                }
                goto done;
            }
            break;
        }
    }
    b[n] = '\0';
done:
    if (!is_stdin) fclose(f);
    if (rc != EXIT_OK) {
        free(b);
        return rc;
    }
    *buf = b;
    *len = n;
    return EXIT_OK;
}

int cli_tokenize(tflm_ctx *ctx, const char *what, const char *text, size_t len,
                 int **ids, int *n) {
    int mapped = 0;
    *ids = NULL;
    *n = 0;
    tflm_status st = tflm_tokenize(ctx, text, len, ids, n, &mapped);
    if (st != TFLM_OK) {
        *ids = NULL;
        return cli_fail(st, what);
    }
    if (mapped > 0)
        cli_msg("%s: %d character%s mapped to the model's vocabulary", what, mapped,
                mapped == 1 ? "" : "s");
    return EXIT_OK;
}

/* ---- SIGINT ----------------------------------------------------------------- */

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig) {
    (void)sig;
    interrupted = 1;
}

void cli_install_sigint(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;  /* no SA_RESTART: a blocking read returns EINTR */
    sigaction(SIGINT, &sa, NULL);
}

int cli_interrupted(void) {
    return interrupted != 0;
}

int cli_progress(void *user, const char *what, double fraction) {
    (void)user;
    (void)what;
    (void)fraction;
    return interrupted != 0;
}

/* ---- terminal ---------------------------------------------------------------- */

int cli_utf8(void) {
    const char *vars[] = {"LC_ALL", "LC_CTYPE", "LANG"};
    for (int i = 0; i < 3; i++) {
        const char *v = getenv(vars[i]);
        if (!v || !*v) continue;
        for (; *v; v++)   /* "UTF-8" or "utf8", any case */
            if (strncasecmp(v, "utf-8", 5) == 0 || strncasecmp(v, "utf8", 4) == 0) return 1;
        return 0;
    }
    return 0;
}

int cli_color(FILE *f) {
    const char *nc = getenv("NO_COLOR"), *term = getenv("TERM");
    if (nc && *nc) return 0;
    if (!term || strcmp(term, "dumb") == 0) return 0;
    return isatty(fileno(f));
}

void cli_put_escaped(FILE *f, const char *s) {
    int utf8 = cli_utf8();
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '\n') fputs(utf8 ? "\xe2\x86\xb5" : "\\n", f);   /* U+21B5 */
        else if (*p < 0x20 || *p == 0x7f) fprintf(f, "\\x%02x", *p);
        else fputc(*p, f);
    }
}

void cli_put_quoted(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '\n': fputs("\\n", f); break;
        case '\t': fputs("\\t", f); break;
        case '\r': fputs("\\r", f); break;
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        default:
            if (*p < 0x20 || *p >= 0x7f) fprintf(f, "\\x%02x", *p);
            else fputc(*p, f);
        }
    }
    fputc('"', f);
}

const char *cli_dir_name(const tflm_trace *tr, int l) {
    if (l < 1 || l > tr->n_flows || !tr->direction) return "";
    return tr->direction[l - 1] ? "flip" : "l2r";
}

/* ---- JSON writer ---------------------------------------------------------------- */

void jw_init(jw *w, FILE *f) {
    memset(w, 0, sizeof *w);
    w->f = f;
    w->first[0] = 1;
}

static void jw_newline(jw *w) {
    fputc('\n', w->f);
    for (int i = 0; i < w->depth; i++) fputs("  ", w->f);
}

/* Before a value: the comma, and a line break for a container inside an array. */
static void jw_pre(jw *w, int container) {
    if (w->after_key) {
        w->after_key = 0;
        return;
    }
    if (w->depth == 0) return;
    if (!w->first[w->depth]) fputc(',', w->f);
    w->first[w->depth] = 0;
    if (container) {
        jw_newline(w);
        w->broke[w->depth] = 1;
    } else if (w->broke[w->depth]) {
        jw_newline(w);
    }
}

static void jw_open(jw *w, char ch) {
    jw_pre(w, 1);
    fputc(ch, w->f);
    if (w->depth < JW_MAXDEPTH - 1) w->depth++;
    w->first[w->depth] = 1;
    w->broke[w->depth] = 0;
}

static void jw_close(jw *w, char ch) {
    int broke = w->broke[w->depth];
    if (w->depth > 0) w->depth--;
    if (broke) jw_newline(w);
    fputc(ch, w->f);
}

void jw_obj(jw *w) { jw_open(w, '{'); }
void jw_obj_end(jw *w) { jw_close(w, '}'); }
void jw_arr(jw *w) { jw_open(w, '['); }
void jw_arr_end(jw *w) { jw_close(w, ']'); }

static void jw_raw_str(jw *w, const char *s) {
    fputc('"', w->f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': fputs("\\\"", w->f); break;
        case '\\': fputs("\\\\", w->f); break;
        case '\n': fputs("\\n", w->f); break;
        case '\r': fputs("\\r", w->f); break;
        case '\t': fputs("\\t", w->f); break;
        default:
            if (*p < 0x20 || *p == 0x7f) fprintf(w->f, "\\u%04x", *p);
            else fputc(*p, w->f);
        }
    }
    fputc('"', w->f);
}

void jw_key(jw *w, const char *key) {
    if (!w->first[w->depth]) fputc(',', w->f);
    w->first[w->depth] = 0;
    w->broke[w->depth] = 1;
    jw_newline(w);
    jw_raw_str(w, key);
    fputs(": ", w->f);
    w->after_key = 1;
}

void jw_str(jw *w, const char *s) {
    jw_pre(w, 0);
    if (s) jw_raw_str(w, s);
    else fputs("null", w->f);
}

void jw_int(jw *w, long long v) {
    jw_pre(w, 0);
    fprintf(w->f, "%lld", v);
}

void jw_bool(jw *w, int v) {
    jw_pre(w, 0);
    fputs(v ? "true" : "false", w->f);
}

void jw_null(jw *w) {
    jw_pre(w, 0);
    fputs("null", w->f);
}

void jw_num(jw *w, double v, int digits) {
    jw_pre(w, 0);
    if (!isfinite(v)) {
        fputs("null", w->f);
        return;
    }
    /* with 17 digits: the shortest of %.15g..%.17g that reads back exactly */
    char buf[40];
    for (int p = digits >= 17 ? 15 : digits; p <= digits; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, v);
        if (strtod(buf, NULL) == v) break;
    }
    fputs(buf, w->f);
}

void jw_json(jw *w, const json_t *j) {
    const char *key;
    json_t *val;
    size_t i;
    switch (json_typeof(j)) {
    case JSON_OBJECT:
        jw_obj(w);
        json_object_foreach((json_t *)j, key, val) {
            jw_key(w, key);
            jw_json(w, val);
        }
        jw_obj_end(w);
        break;
    case JSON_ARRAY:
        jw_arr(w);
        json_array_foreach(j, i, val) jw_json(w, val);
        jw_arr_end(w);
        break;
    case JSON_STRING: jw_str(w, json_string_value(j)); break;
    case JSON_INTEGER: jw_int(w, (long long)json_integer_value(j)); break;
    case JSON_REAL: jw_num(w, json_real_value(j), 17); break;
    case JSON_TRUE: jw_bool(w, 1); break;
    case JSON_FALSE: jw_bool(w, 0); break;
    default: jw_null(w); break;
    }
}

void jw_end(jw *w) {
    fputc('\n', w->f);
}

void jw_num_array(jw *w, const double *v, int n, int digits) {
    jw_arr(w);
    for (int i = 0; i < n; i++) jw_num(w, v[i], digits);
    jw_arr_end(w);
}

void jw_states(jw *w, const tflm_trace *tr) {
    jw_arr(w);
    for (int l = 0; l <= tr->n_flows; l++) {
        jw_arr(w);
        for (int n = 0; n < tr->n_pos; n++) {
            const float *row = tr->state + ((size_t)l * tr->n_pos + n) * tr->channels;
            jw_arr(w);
            for (int j = 0; j < tr->channels; j++) jw_num(w, row[j], 9);
            jw_arr_end(w);
        }
        jw_arr_end(w);
    }
    jw_arr_end(w);
}
