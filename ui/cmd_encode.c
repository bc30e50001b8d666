/* cmd_encode.c: tflm encode: every layer's state of a text's first window
 * and the per-layer totals over the whole text, for cross-checking other
 * implementations (the fixed JSON keys of tflm(5)). */
#include <stdlib.h>
#include <string.h>
#include "cli.h"

static const char encode_usage[] =
    "Usage: tflm encode [-m MODEL] [--mean] [--seed S] [--json] FILE\n"
    "\n"
    "Run FILE (\"-\" = stdin) forward through every flow. The first window's\n"
    "states h^(0)..h^(L) are recorded; lp, ln, logdet, R, elbo and bpc are sums\n"
    "over all windows. With --json the keys are fixed: tokens (ids of the first\n"
    "window), states (layers 0..L, [position][channel] in window order, as\n"
    "stored), decoded (text decoded from each layer), lp, ln, logdet (layers\n"
    "1..L), R, elbo, bpc. Without --json a summary is printed.\n"
    "\n"
    "Options:\n"
    "  -m, --model FILE  the model (default: $TFLM_MODEL, else the default model)\n"
    "      --mean        mean encoding (deterministic; not the ELBO)\n"
    "      --seed S      seed of the sampled encoding (default 1234)\n"
    "      --json        print JSON\n"
    "      --threads N   worker threads (default 1, or $TFLM_THREADS)\n"
    "      --no-blas     use the reference C kernels\n"
    "  -h, --help        show this help\n"
    "\n";

static void print_json(tflm_ctx *ctx, const tflm_info *in, const tflm_trace *tr,
                       const tflm_score *s) {
    int L = in->is_ar ? 0 : s->n_flows;
    jw w;
    jw_init(&w, stdout);
    jw_obj(&w);
    jw_key(&w, "tokens");
    jw_arr(&w);
    for (int i = 0; i < tr->n_tok; i++) jw_int(&w, tr->tokens[i]);
    jw_arr_end(&w);
    jw_key(&w, "states");
    jw_states(&w, tr);
    jw_key(&w, "decoded");
    jw_arr(&w);
    for (int l = 0; l <= tr->n_flows; l++) {
        char *t = tflm_trace_text(ctx, tr, l, 0);
        jw_str(&w, t ? t : "");
        free(t);
    }
    jw_arr_end(&w);
    jw_key(&w, "lp"); jw_num_array(&w, s->lp, L, 17);
    jw_key(&w, "ln"); jw_num_array(&w, s->ln, L, 17);
    jw_key(&w, "logdet"); jw_num_array(&w, s->logdet, L, 17);
    jw_key(&w, "R"); jw_num(&w, s->R, 17);
    jw_key(&w, "elbo"); jw_num(&w, s->elbo, 17);
    jw_key(&w, "bpc"); jw_num(&w, s->bpc, 17);
    jw_obj_end(&w);
    jw_end(&w);
}

static void print_text(tflm_ctx *ctx, const char *name, const tflm_info *in,
                       const tflm_score_params *sp, const tflm_trace *tr, const tflm_score *s) {
    printf("%s: %lld chars, %d window%s; first window: %d tokens (%d padding), "
           "%d positions x %d channels\n",
           name, s->n_tokens, s->n_windows, s->n_windows == 1 ? "" : "s", tr->n_tok,
           tr->n_pad, tr->n_pos, tr->channels);
    printf("decoded, first window:\n");
    for (int l = 0; l <= tr->n_flows; l++) {
        char *t = tflm_trace_text(ctx, tr, l, tr->n_pad);
        const char *what = l == 0 ? "text" : cli_dir_name(tr, l);
        printf("  %2d %-5s ", l, what);
        cli_put_escaped(stdout, t ? t : "");
        fputc('\n', stdout);
        free(t);
    }
    if (!in->is_ar) {
        printf("per flow (sums over all windows, nats):\n");
        printf("  %-4s %16s %16s %16s\n", "flow", "lp", "ln", "logdet");
        for (int l = 0; l < s->n_flows && l < TFLM_MAX_FLOWS; l++)
            printf("  %-4d %16.6f %16.6f %16.6f\n", l + 1, s->lp[l], s->ln[l], s->logdet[l]);
    }
    printf("R %.6f, elbo %.6f nats, %.4f bits/char ", s->R, s->elbo, s->bpc);
    if (in->is_ar) printf("(cross-entropy, ar model)\n");
    else if (sp->mean) printf("(mean encoding, not the ELBO)\n");
    else printf("(ELBO, 1 sample, seed %llu)\n", (unsigned long long)sp->seed);
}

int cmd_encode(int argc, char **argv) {
    static const struct option longopts[] = {
        CLI_COMMON_LONGOPTS,
        {"mean", no_argument, NULL, OPT_MEAN},
        {"seed", required_argument, NULL, OPT_SEED},
        {"json", no_argument, NULL, OPT_JSON},
        {NULL, 0, NULL, 0}
    };
    cli_common com;
    cli_common_init(&com, "encode");
    tflm_score_params sp;
    tflm_score_params_default(&sp);
    sp.samples = 1;
    int as_json = 0, opt, r;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":m:h", longopts, NULL)) != -1) {
        if ((r = cli_common_opt(&com, opt, optarg)) != 0) {
            if (r < 0) return -r;
            continue;
        }
        switch (opt) {
        case OPT_MEAN: sp.mean = 1; break;
        case OPT_SEED:
            if (cli_parse_u64(optarg, &sp.seed))
                return cli_usage_error("encode", "--seed: '%s' is not a non-negative integer", optarg);
            break;
        case OPT_JSON: as_json = 1; break;
        case 'h':
            fputs(encode_usage, stdout);
            fputs(cli_exit_help, stdout);
            return EXIT_OK;
        default:
            return cli_getopt_error("encode", opt, argv);
        }
    }
    if (optind >= argc) return cli_usage_error("encode", "no FILE to encode (use - for stdin)");
    if (argc - optind > 1)
        return cli_usage_error("encode", "one FILE at a time ('%s' is extra)", argv[optind + 1]);
    const char *file = argv[optind];
    const char *name = strcmp(file, "-") == 0 ? "stdin" : file;

    char *text;
    size_t len;
    int rc = cli_read_file(file, &text, &len);
    if (rc != EXIT_OK) return rc;
    tflm_ctx *ctx;
    rc = cli_load_model(&com, &ctx, NULL);
    if (rc != EXIT_OK) {
        free(text);
        return rc;
    }
    tflm_info in;
    memset(&in, 0, sizeof in);
    tflm_get_info(ctx, &in);
    int *ids = NULL, n = 0;
    rc = cli_tokenize(ctx, name, text, len, &ids, &n);
    free(text);
    if (rc == EXIT_OK && n == 0) {
        cli_msg("%s: empty text, nothing to encode", name);
        rc = EXIT_RUNTIME;
    }
    if (rc == EXIT_OK) {
        tflm_trace *tr = NULL;
        tflm_score s;
        memset(&s, 0, sizeof s);
        tflm_status st = tflm_encode_ids(ctx, ids, n, &sp, &tr, &s);
        if (st != TFLM_OK) {
            rc = cli_fail(st, name);
        } else if (!tr) {
            cli_msg("%s: internal error: no trace returned", name);
            rc = EXIT_INTERNAL;
        } else {
            if (as_json) print_json(ctx, &in, tr, &s);
            else print_text(ctx, name, &in, &sp, tr, &s);
        }
        if (tr) tflm_trace_free(tr);
    }
    free(ids);
    tflm_free(ctx);
    return rc;
}
