/* cmd_score.c: tflm score: bits per character of text files, the ELBO
 * bound with sampled encodings or the deterministic mean-encoding number,
 * with per-layer sums in --json. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "cli.h"

static const char score_usage[] =
    "Usage: tflm score [-m MODEL] [--mean | --samples N --seed S] [--json] FILE...\n"
    "\n"
    "Score each FILE (\"-\" = stdin) as UTF-8 text: bits per character from\n"
    "the ELBO, averaged over N sampled encodings per window (a bound on the\n"
    "model's true bits per character). With N > 1 the line also gives the\n"
    "importance-weighted bound (per window, the log of the mean over the N\n"
    "samples of exp(ELBO)): also a bound, never above the ELBO, and tighter\n"
    "as N grows. With --mean the encoding is the\n"
    "deterministic mean, which is not the ELBO and is labelled so. An ar\n"
    "model's number is its exact cross-entropy either way. With several files\n"
    "a total line follows.\n"
    "\n"
    "Options:\n"
    "  -m, --model FILE  the model (default: $TFLM_MODEL, else the default model)\n"
    "      --mean        mean encoding (deterministic; not the ELBO)\n"
    "      --samples N   sampled encodings per window (default 1)\n"
    "      --seed S      seed of the sampled encodings (default 1234)\n"
    "      --json        print {\"files\": [...], \"total\": {...}} with per-layer\n"
    "                    lp, ln and logdet\n"
    "      --threads N   worker threads (default 1, or $TFLM_THREADS)\n"
    "      --no-blas     use the reference C kernels\n"
    "  -h, --help        show this help\n"
    "\n";

typedef struct {
    const char *file;
    tflm_score s;
} result;

/* Number of per-layer entries: L for flow models, none for ar. */
static int n_layers(const tflm_info *in, const tflm_score *s) {
    if (in->is_ar) return 0;
    return s->n_flows < TFLM_MAX_FLOWS ? s->n_flows : TFLM_MAX_FLOWS;
}

static void print_label(const tflm_info *in, const tflm_score_params *sp,
                        const tflm_score *s) {
    if (in->is_ar) printf("(cross-entropy, ar model; ");
    else if (sp->mean) printf("(mean encoding, not the ELBO; ");
    else printf("(ELBO, %d sample%s, seed %llu; ", sp->samples, sp->samples == 1 ? "" : "s",
                (unsigned long long)sp->seed);
    printf("%lld chars, %d window%s)", s->n_tokens, s->n_windows, s->n_windows == 1 ? "" : "s");
    if (!in->is_ar && !sp->mean && sp->samples > 1)
        printf("; importance-weighted bound %.4f bits/char", s->iw_bpc);
    printf("\n");
}

static void json_result(jw *w, const char *file, const tflm_info *in,
                        const tflm_score_params *sp, const tflm_score *s) {
    int L = n_layers(in, s);
    jw_obj(w);
    if (file) {
        jw_key(w, "file");
        jw_str(w, file);
    }
    jw_key(w, "chars"); jw_int(w, s->n_tokens);
    jw_key(w, "windows"); jw_int(w, s->n_windows);
    jw_key(w, "bpc"); jw_num(w, s->bpc, 17);
    jw_key(w, "elbo"); jw_num(w, s->elbo, 17);
    jw_key(w, "iw_bpc"); jw_num(w, s->iw_bpc, 17);
    jw_key(w, "iw_elbo"); jw_num(w, s->iw_elbo, 17);
    jw_key(w, "R"); jw_num(w, s->R, 17);
    jw_key(w, "lp"); jw_num_array(w, s->lp, L, 17);
    jw_key(w, "ln"); jw_num_array(w, s->ln, L, 17);
    jw_key(w, "logdet"); jw_num_array(w, s->logdet, L, 17);
    jw_key(w, "mean"); jw_bool(w, sp->mean);
    jw_key(w, "samples");
    if (sp->mean) jw_null(w);
    else jw_int(w, sp->samples);
    jw_key(w, "seed");
    if (sp->mean) jw_null(w);
    else jw_int(w, (long long)sp->seed);
    jw_obj_end(w);
}

int cmd_score(int argc, char **argv) {
    static const struct option longopts[] = {
        CLI_COMMON_LONGOPTS,
        {"mean", no_argument, NULL, OPT_MEAN},
        {"samples", required_argument, NULL, OPT_SAMPLES},
        {"seed", required_argument, NULL, OPT_SEED},
        {"json", no_argument, NULL, OPT_JSON},
        {NULL, 0, NULL, 0}
    };
    cli_common com;
    cli_common_init(&com, "score");
    tflm_score_params sp;
    tflm_score_params_default(&sp);
    int as_json = 0, opt, r, got_samples = 0, got_seed = 0;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":m:h", longopts, NULL)) != -1) {
        if ((r = cli_common_opt(&com, opt, optarg)) != 0) {
            if (r < 0) return -r;
            continue;
        }
        switch (opt) {
        case OPT_MEAN: sp.mean = 1; break;
        case OPT_SAMPLES:
            if (cli_parse_int(optarg, 1, 1000000, &sp.samples))
                return cli_usage_error("score", "--samples: '%s' is not a positive integer", optarg);
            got_samples = 1;
            break;
        case OPT_SEED:
            if (cli_parse_u64(optarg, &sp.seed))
                return cli_usage_error("score", "--seed: '%s' is not a non-negative integer", optarg);
            got_seed = 1;
            break;
        case OPT_JSON: as_json = 1; break;
        case 'h':
            fputs(score_usage, stdout);
            fputs(cli_exit_help, stdout);
            return EXIT_OK;
        default:
            return cli_getopt_error("score", opt, argv);
        }
    }
    if (sp.mean && (got_samples || got_seed))
        return cli_usage_error("score", "--mean is deterministic: it takes no --samples or --seed");
    if (optind >= argc) return cli_usage_error("score", "no FILE to score (use - for stdin)");
    int n_files = argc - optind;
    if (!sp.mean && sp.samples < 1) sp.samples = 1;

    tflm_ctx *ctx;
    int rc = cli_load_model(&com, &ctx, NULL);
    if (rc != EXIT_OK) return rc;
    tflm_info in;
    memset(&in, 0, sizeof in);
    tflm_get_info(ctx, &in);

    result *res = calloc((size_t)n_files, sizeof *res);
    if (!res) {
        tflm_free(ctx);
        cli_msg("out of memory");
        return EXIT_RUNTIME;
    }
    int n_done = 0;
    for (int i = 0; i < n_files && !cli_interrupted(); i++) {
        const char *file = argv[optind + i];
        const char *name = strcmp(file, "-") == 0 ? "stdin" : file;
        char *text;
        size_t len;
        int frc = cli_read_file(file, &text, &len);
        if (frc == EXIT_OK) {
            int *ids, n;
            frc = cli_tokenize(ctx, name, text, len, &ids, &n);
            free(text);
            if (frc == EXIT_OK) {
                if (n == 0) {
                    cli_msg("%s: empty text, nothing to score", name);
                    frc = EXIT_RUNTIME;
                } else {
                    tflm_score *s = &res[n_done].s;
                    tflm_status st = tflm_score_ids(ctx, ids, n, &sp, s);
                    if (st != TFLM_OK) {
                        frc = cli_fail(st, name);
                    } else {
                        res[n_done++].file = file;
                        if (!as_json) {
                            printf("%s: %.4f bits/char ", file, s->bpc);
                            print_label(&in, &sp, s);
                            fflush(stdout);
                        }
                    }
                }
                free(ids);
            }
        }
        if (frc != EXIT_OK && rc == EXIT_OK) rc = frc;
        if (frc == EXIT_INTERRUPTED) break;
    }
    if (cli_interrupted()) rc = EXIT_INTERRUPTED;

    /* the total over the files that were scored */
    tflm_score tot;
    memset(&tot, 0, sizeof tot);
    tot.n_flows = n_done ? res[0].s.n_flows : in.n_flows;
    for (int i = 0; i < n_done; i++) {
        const tflm_score *s = &res[i].s;
        tot.n_tokens += s->n_tokens;
        tot.n_windows += s->n_windows;
        tot.elbo += s->elbo;
        tot.iw_elbo += s->iw_elbo;
        tot.R += s->R;
        for (int l = 0; l < TFLM_MAX_FLOWS; l++) {
            tot.lp[l] += s->lp[l];
            tot.ln[l] += s->ln[l];
            tot.logdet[l] += s->logdet[l];
        }
    }
    tot.bpc = tot.n_tokens > 0 ? -tot.elbo / ((double)tot.n_tokens * log(2.0)) : NAN;
    tot.iw_bpc = tot.n_tokens > 0 ? -tot.iw_elbo / ((double)tot.n_tokens * log(2.0)) : NAN;

    if (rc != EXIT_INTERRUPTED) {
        if (as_json) {
            jw w;
            jw_init(&w, stdout);
            jw_obj(&w);
            jw_key(&w, "files");
            jw_arr(&w);
            for (int i = 0; i < n_done; i++) json_result(&w, res[i].file, &in, &sp, &res[i].s);
            jw_arr_end(&w);
            jw_key(&w, "total");
            json_result(&w, NULL, &in, &sp, &tot);
            jw_obj_end(&w);
            jw_end(&w);
        } else if (n_files > 1 && n_done > 0) {
            printf("total: %.4f bits/char ", tot.bpc);
            print_label(&in, &sp, &tot);
        }
    }
    free(res);
    tflm_free(ctx);
    return rc;
}
