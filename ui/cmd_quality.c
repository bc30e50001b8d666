/* cmd_quality.c: tflm quality: generative perplexity (the paper's Table 6 in
 * miniature). Unconditional samples of the model, seeds S, S+1, ..., are
 * scored by a judge model (an ar model, ideally) with tflm_score_ids, and
 * the judge's bits per character and perplexity over all sample characters
 * are reported, with the same judge's numbers on chunks of real text as the
 * reference row. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "cli.h"

/* long-only options of this command (past the shared codes in cli.h) */
enum { Q_JUDGE = 1024, Q_CHARS, Q_REAL };

static const char quality_usage[] =
    "Usage: tflm quality [-m MODEL] --judge JUDGE [-n SAMPLES] [--chars N] [--seed S]\n"
    "                    [--prior-temp T] [--decode argmax|sample] [--temp T]\n"
    "                    [--real FILE] [--json]\n"
    "\n"
    "Generative perplexity: generate SAMPLES unconditional samples (no context)\n"
    "of N characters from MODEL, with seeds S, S+1, ..., and score them with the\n"
    "JUDGE model. Prints the judge's bits per character over all sample\n"
    "characters (total nats / total chars / ln 2) and the perplexity per\n"
    "character exp(total nats / total chars). Lower means the judge finds the\n"
    "samples more like its training text; compare with --real, the judge on\n"
    "SAMPLES chunks of N characters of FILE taken at evenly spaced offsets\n"
    "(moved to a line start where one is near). The judge reads each sample in\n"
    "consecutive windows of its own size, as tflm score does.\n"
    "\n"
    "The judge should be an ar model, whose number is an exact cross-entropy;\n"
    "a flow judge is allowed, with a warning: its number is an ELBO bound.\n"
    "\n"
    "Decoding: a flow model's randomness comes from the prior noise, so its\n"
    "default is --decode argmax; an ar model decoded by argmax would give the\n"
    "same text for every seed, so its default is --decode sample --temp 1.\n"
    "--temp without --decode means --decode sample. The mode used is printed.\n"
    "\n"
    "Options:\n"
    "  -m, --model FILE      the model to sample (default: $TFLM_MODEL, else the\n"
    "                        default model)\n"
    "      --judge FILE      the model that scores the samples (required)\n"
    "  -n, --samples N       number of samples (default 200)\n"
    "      --chars N         characters per sample (default 256)\n"
    "      --seed S          seed of the first sample (default 1); sample i uses\n"
    "                        seed S+i\n"
    "      --prior-temp T    prior temperature: u ~ N(0, T^2 I) (default 1.0)\n"
    "      --decode MODE     argmax or sample (default: argmax for a flow model,\n"
    "                        sample for an ar model)\n"
    "      --temp T          decoder temperature when sampling (default 1.0)\n"
    "      --real FILE       also score SAMPLES chunks of N characters of FILE\n"
    "      --json            print one JSON object: model, judge, samples, chars,\n"
    "                        seed, decode, temp, prior_temp, samples_bpc,\n"
    "                        samples_ppl, samples_chars, real, real_bpc, real_ppl,\n"
    "                        real_chars, ms_per_sample, judge_ms_per_sample\n"
    "      --threads N       worker threads (default 1, or $TFLM_THREADS)\n"
    "      --no-blas         use the reference C kernels\n"
    "  -h, --help            show this help\n"
    "\n"
    "Progress goes to stderr: a line every 10 samples (one updated line on a\n"
    "terminal). Ctrl-C stops the run (exit 130) without printing results.\n"
    "\n";

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static const char *base_name(const char *path) {
    const char *s = strrchr(path, '/');
    return s && s[1] ? s + 1 : path;
}

/* Running totals of judge scores. */
typedef struct {
    double nats;       /* -sum of ELBOs (exact negative log-likelihood for ar) */
    long long chars;   /* non-pad characters scored */
    int n;             /* texts scored */
} tally;

static double tally_bpc(const tally *t) {
    return t->chars > 0 ? t->nats / ((double)t->chars * log(2.0)) : NAN;
}

static double tally_ppl(const tally *t) {
    return t->chars > 0 ? exp(t->nats / (double)t->chars) : NAN;
}

/* Score ids with the judge and add them to the tally. */
static int judge_add(tflm_ctx *judge, const tflm_score_params *sp, const int *ids, int n,
                     tally *t, const char *what) {
    tflm_score s;
    tflm_status st = tflm_score_ids(judge, ids, n, sp, &s);
    if (st != TFLM_OK) return cli_fail(st, what);
    t->nats -= s.elbo;
    t->chars += s.n_tokens;
    t->n++;
    return EXIT_OK;
}

/* ---- progress on stderr ---------------------------------------------------------- */

typedef struct {
    int tty, shown;    /* shown: a \r line is on the terminal */
} progress;

static void progress_show(progress *p, int done, int total, double ms) {
    double per = done > 0 ? ms / done : 0;
    if (p->tty) {
        fprintf(stderr, "\rtflm: quality: sample %d/%d, %.0f ms/sample   ", done, total, per);
        fflush(stderr);
        p->shown = 1;
    } else if (done % 10 == 0 || done == total) {
        fprintf(stderr, "tflm: quality: %d/%d samples, %.0f ms/sample\n", done, total, per);
    }
}

static void progress_end(progress *p) {
    if (p->shown) fputc('\n', stderr);
    p->shown = 0;
}

/* ---- real text ------------------------------------------------------------------- */

/* The judge's score of count chunks of n characters of a file, at evenly
 * spaced offsets, each moved forward to the first line start within its
 * share of the file (when there is one). */
static int score_real(tflm_ctx *judge, const tflm_score_params *sp, const char *file,
                      int count, int n, tally *t) {
    const char *name = strcmp(file, "-") == 0 ? "stdin" : file;
    char *text;
    size_t len;
    int rc = cli_read_file(file, &text, &len);
    if (rc != EXIT_OK) return rc;
    int *ids = NULL, m = 0;
    rc = cli_tokenize(judge, name, text, len, &ids, &m);
    free(text);
    if (rc != EXIT_OK) return rc;
    if (m == 0) {
        cli_msg("%s: empty text, nothing to score", name);
        free(ids);
        return EXIT_RUNTIME;
    }
    int c = n;
    if (m < n) {
        cli_msg("warning: %s has only %d characters: its chunks are %d characters, not %d",
                name, m, m, n);
        c = m;
    }
    /* the id of a newline in the judge's vocabulary, if it is one token */
    int nl = -1, *nl_ids = NULL, n_nl = 0;
    if (tflm_tokenize(judge, "\n", 1, &nl_ids, &n_nl, NULL) == TFLM_OK && n_nl == 1) nl = nl_ids[0];
    free(nl_ids);
    long long span = (long long)(m - c) + 1;   /* possible offsets 0 .. m-c */
    for (int i = 0; i < count && rc == EXIT_OK; i++) {
        if (cli_interrupted()) {
            cli_msg("%s: interrupted", name);
            rc = EXIT_INTERRUPTED;
            break;
        }
        long long a = (long long)i * span / count, b = (long long)(i + 1) * span / count;
        long long off = a;
        if (nl >= 0)
            for (long long o = a; o < b; o++)
                if (o == 0 || ids[o - 1] == nl) {
                    off = o;
                    break;
                }
        rc = judge_add(judge, sp, ids + off, c, t, name);
    }
    free(ids);
    return rc;
}

/* ---- output ---------------------------------------------------------------------- */

typedef struct {
    const char *model, *judge, *real;
    int model_ar, judge_ar, judge_T, samples, chars, empty;
    uint64_t seed;
    const tflm_gen_params *g;
    tally gen, ref;
    double ms_gen, ms_judge;   /* totals over the samples */
} report;

static void print_json(const report *r) {
    jw w;
    jw_init(&w, stdout);
    jw_obj(&w);
    jw_key(&w, "model"); jw_str(&w, r->model);
    jw_key(&w, "judge"); jw_str(&w, r->judge);
    jw_key(&w, "judge_type"); jw_str(&w, r->judge_ar ? "ar" : "flow");
    jw_key(&w, "samples"); jw_int(&w, r->samples);
    jw_key(&w, "chars"); jw_int(&w, r->chars);
    jw_key(&w, "seed"); jw_int(&w, (long long)r->seed);
    jw_key(&w, "decode"); jw_str(&w, r->g->decode == TFLM_DECODE_SAMPLE ? "sample" : "argmax");
    jw_key(&w, "temp"); jw_num(&w, r->g->temp, 17);
    jw_key(&w, "prior_temp"); jw_num(&w, r->g->prior_temp, 17);
    jw_key(&w, "samples_bpc"); jw_num(&w, tally_bpc(&r->gen), 17);
    jw_key(&w, "samples_ppl"); jw_num(&w, tally_ppl(&r->gen), 17);
    jw_key(&w, "samples_chars"); jw_int(&w, r->gen.chars);
    jw_key(&w, "real");
    if (r->real) jw_str(&w, r->real);
    else jw_null(&w);
    jw_key(&w, "real_bpc");
    if (r->real) jw_num(&w, tally_bpc(&r->ref), 17);
    else jw_null(&w);
    jw_key(&w, "real_ppl");
    if (r->real) jw_num(&w, tally_ppl(&r->ref), 17);
    else jw_null(&w);
    jw_key(&w, "real_chars");
    if (r->real) jw_int(&w, r->ref.chars);
    else jw_null(&w);
    jw_key(&w, "ms_per_sample"); jw_num(&w, r->ms_gen / r->samples, 6);
    jw_key(&w, "judge_ms_per_sample"); jw_num(&w, r->ms_judge / r->samples, 6);
    jw_obj_end(&w);
    jw_end(&w);
}

static void print_row(const char *label, int width, const tally *t) {
    printf("%-*s  ", width, label);
    if (t->chars > 0) printf("%9.4f  %9.4f", tally_bpc(t), tally_ppl(t));
    else printf("%9s  %9s", "n/a", "n/a");
    printf("  %9lld\n", t->chars);
}

static void print_text(const report *r) {
    const tflm_gen_params *g = r->g;
    printf("judge: %s (%s, windows of %d)\n", r->judge,
           r->judge_ar ? "ar: exact cross-entropy" : "flow: ELBO bound", r->judge_T);
    printf("%d sample%s of %d chars, seed%s %llu", r->samples, r->samples == 1 ? "" : "s",
           r->chars, r->samples == 1 ? "" : "s", (unsigned long long)r->seed);
    if (r->samples > 1) printf("..%llu", (unsigned long long)(r->seed + (uint64_t)r->samples - 1));
    if (g->decode == TFLM_DECODE_SAMPLE) printf(", decode sample (temp %g)", g->temp);
    else printf(", decode argmax");
    if (!r->model_ar) printf(", prior temp %g", g->prior_temp);   /* ar models have no prior */
    printf(", %.1f ms/sample\n\n", r->ms_gen / r->samples);

    char gen_label[512], ref_label[512];
    snprintf(gen_label, sizeof gen_label, "%s samples", base_name(r->model));
    snprintf(ref_label, sizeof ref_label, "real text (%s)",
             r->real ? (strcmp(r->real, "-") == 0 ? "stdin" : base_name(r->real)) : "");
    int width = (int)strlen(gen_label);
    if (r->real && (int)strlen(ref_label) > width) width = (int)strlen(ref_label);
    printf("%-*s  %9s  %9s  %9s\n", width, "", "bits/char", "ppl/char", "chars");
    print_row(gen_label, width, &r->gen);
    if (r->real) print_row(ref_label, width, &r->ref);
}

/* ---- the command ----------------------------------------------------------------- */

int cmd_quality(int argc, char **argv) {
    static const struct option longopts[] = {
        CLI_COMMON_LONGOPTS,
        {"judge", required_argument, NULL, Q_JUDGE},
        {"samples", required_argument, NULL, 'n'},
        {"chars", required_argument, NULL, Q_CHARS},
        {"seed", required_argument, NULL, OPT_SEED},
        {"prior-temp", required_argument, NULL, OPT_PRIOR_TEMP},
        {"decode", required_argument, NULL, OPT_DECODE},
        {"temp", required_argument, NULL, OPT_TEMP},
        {"real", required_argument, NULL, Q_REAL},
        {"json", no_argument, NULL, OPT_JSON},
        {NULL, 0, NULL, 0}
    };
    const char *cmd = "quality";
    cli_common com;
    cli_common_init(&com, cmd);
    tflm_gen_params g;
    tflm_gen_params_default(&g);
    const char *judge_path = NULL, *real = NULL;
    int samples = 200, chars = 256, as_json = 0, got_decode = 0, got_temp = 0, opt, r;
    uint64_t seed = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":m:n:h", longopts, NULL)) != -1) {
        if ((r = cli_common_opt(&com, opt, optarg)) != 0) {
            if (r < 0) return -r;
            continue;
        }
        switch (opt) {
        case Q_JUDGE: judge_path = optarg; break;
        case 'n':
            if (cli_parse_int(optarg, 1, 1000000, &samples))
                return cli_usage_error(cmd, "-n: '%s' is not a positive number of samples", optarg);
            break;
        case Q_CHARS:
            if (cli_parse_int(optarg, 1, 1000000, &chars))
                return cli_usage_error(cmd, "--chars: '%s' is not a number of characters in 1..1000000",
                                       optarg);
            break;
        case OPT_SEED:
            if (cli_parse_u64(optarg, &seed))
                return cli_usage_error(cmd, "--seed: '%s' is not a non-negative integer", optarg);
            break;
        case OPT_PRIOR_TEMP:
            if (cli_parse_double(optarg, 0.0, 100.0, &g.prior_temp))
                return cli_usage_error(cmd, "--prior-temp: '%s' is not a temperature in [0, 100]", optarg);
            break;
        case OPT_DECODE:
            if (strcmp(optarg, "argmax") == 0) g.decode = TFLM_DECODE_ARGMAX;
            else if (strcmp(optarg, "sample") == 0) g.decode = TFLM_DECODE_SAMPLE;
            else return cli_usage_error(cmd, "--decode: '%s' is not argmax or sample", optarg);
            got_decode = 1;
            break;
        case OPT_TEMP:
            if (cli_parse_double(optarg, 1e-6, 100.0, &g.temp))
                return cli_usage_error(cmd, "--temp: '%s' is not a temperature in (0, 100]", optarg);
            got_temp = 1;
            break;
        case Q_REAL: real = optarg; break;
        case OPT_JSON: as_json = 1; break;
        case 'h':
            fputs(quality_usage, stdout);
            fputs(cli_exit_help, stdout);
            return EXIT_OK;
        default:
            return cli_getopt_error(cmd, opt, argv);
        }
    }
    if (optind < argc) return cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    if (!judge_path) return cli_usage_error(cmd, "no judge model (give --judge FILE, an ar model)");
    if (seed > UINT64_MAX - (uint64_t)samples)
        return cli_usage_error(cmd, "--seed: %llu + %d samples overflows",
                               (unsigned long long)seed, samples);

    tflm_ctx *ctx = NULL, *judge = NULL;
    const char *model_path = NULL;
    int rc = cli_load_model(&com, &ctx, &model_path);
    if (rc != EXIT_OK) return rc;
    cli_common jc = com;
    jc.model = judge_path;
    rc = cli_load_model(&jc, &judge, NULL);
    if (rc != EXIT_OK) {
        tflm_free(ctx);
        return rc;
    }
    tflm_info mi, ji;
    memset(&mi, 0, sizeof mi);
    memset(&ji, 0, sizeof ji);
    tflm_get_info(ctx, &mi);
    tflm_get_info(judge, &ji);
    if (!got_decode) g.decode = (mi.is_ar || got_temp) ? TFLM_DECODE_SAMPLE : TFLM_DECODE_ARGMAX;
    g.n_new = chars;
    if (mi.is_ar && g.decode == TFLM_DECODE_ARGMAX && samples > 1)
        cli_msg("warning: %s is an ar model decoded by argmax: every sample is the same text",
                base_name(model_path));
    if (!ji.is_ar)
        cli_msg("warning: judge %s is a flow model: its bits per character are an ELBO bound "
                "(1 sampled encoding), not an exact cross-entropy", base_name(judge_path));
    /* the samples' ids go to the judge as they are when the vocabularies
     * agree; otherwise as text, tokenized by the judge */
    const char *mv = tflm_metadata(ctx, "tflm.vocab"), *jv = tflm_metadata(judge, "tflm.vocab");
    int same_vocab = mv && jv && strcmp(mv, jv) == 0;
    if (!same_vocab)
        cli_msg("warning: the judge's vocabulary differs from the model's: samples are "
                "re-tokenized as text");
    tflm_score_params sp;
    tflm_score_params_default(&sp);

    report rep;
    memset(&rep, 0, sizeof rep);
    rep.model = model_path;
    rep.judge = judge_path;
    rep.real = real;
    rep.model_ar = mi.is_ar;
    rep.judge_ar = ji.is_ar;
    rep.judge_T = ji.window;
    rep.samples = samples;
    rep.chars = chars;
    rep.seed = seed;
    rep.g = &g;

    progress pr = {isatty(STDERR_FILENO), 0};
    double t_start = now_ms();
    int *ids = malloc((size_t)chars * sizeof(int) + sizeof(int));
    if (!ids) {
        cli_msg("out of memory");
        rc = EXIT_RUNTIME;
    }
    for (int i = 0; i < samples && rc == EXIT_OK; i++) {
        if (cli_interrupted()) {
            progress_end(&pr);
            cli_msg("%s: interrupted", cmd);
            rc = EXIT_INTERRUPTED;
            break;
        }
        g.seed = seed + (uint64_t)i;
        tflm_trace *tr = NULL;
        double t0 = now_ms();
        tflm_status st = tflm_generate_ids(ctx, NULL, 0, &g, &tr);
        double t1 = now_ms();
        rep.ms_gen += t1 - t0;
        if (st != TFLM_OK) {
            progress_end(&pr);
            rc = cli_fail(st, cmd);
            break;
        }
        if (!tr || tr->n_tok < tr->n_pad + tr->n_ctx) {
            progress_end(&pr);
            cli_msg("%s: internal error: bad trace returned", cmd);
            tflm_trace_free(tr);
            rc = EXIT_INTERNAL;
            break;
        }
        /* the sample: tokens after the pads, pads inside dropped */
        int n = 0;
        for (int t = tr->n_pad + tr->n_ctx; t < tr->n_tok && n < chars; t++)
            if (tr->tokens[t] != 0) ids[n++] = tr->tokens[t];
        char what[64];
        snprintf(what, sizeof what, "sample %d (seed %llu)", i + 1, (unsigned long long)g.seed);
        if (n == 0) {
            rep.empty++;
        } else if (same_vocab) {
            rc = judge_add(judge, &sp, ids, n, &rep.gen, what);
        } else {
            char *text = tflm_detokenize(ctx, ids, n);
            int *jids = NULL, jn = 0;
            st = text ? tflm_tokenize(judge, text, strlen(text), &jids, &jn, NULL) : TFLM_ENOMEM;
            free(text);
            if (st != TFLM_OK) rc = cli_fail(st, what);
            else if (jn > 0) rc = judge_add(judge, &sp, jids, jn, &rep.gen, what);
            else rep.empty++;
            free(jids);
        }
        tflm_trace_free(tr);
        rep.ms_judge += now_ms() - t1;
        if (rc != EXIT_OK) {
            progress_end(&pr);
            break;
        }
        progress_show(&pr, i + 1, samples, rep.ms_gen);
    }
    progress_end(&pr);
    free(ids);
    if (rc == EXIT_OK && rep.empty > 0)
        cli_msg("warning: %d sample%s decoded to no characters (only <pad>) and %s not scored",
                rep.empty, rep.empty == 1 ? "" : "s", rep.empty == 1 ? "was" : "were");
    if (rc == EXIT_OK && real) rc = score_real(judge, &sp, real, samples, chars, &rep.ref);
    if (rc == EXIT_OK && cli_interrupted()) {
        cli_msg("%s: interrupted", cmd);
        rc = EXIT_INTERRUPTED;
    }
    if (rc == EXIT_OK) {
        cli_msg("%s: %d sample%s in %.1f s", cmd, samples, samples == 1 ? "" : "s",
                (now_ms() - t_start) / 1e3);
        if (as_json) print_json(&rep);
        else print_text(&rep);
    }
    tflm_free(judge);
    tflm_free(ctx);
    return rc;
}
