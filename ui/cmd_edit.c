/* cmd_edit.c: tflm edit: change a text's state at one layer over a span of
 * tokens (noise, resample, replace from another text), re-invert the
 * layers below and print the edited text. */
#include <stdlib.h>
#include <string.h>
#include "cli.h"

static const char edit_usage[] =
    "Usage: tflm edit [-m MODEL] --layer L --span A:B --op OP [--local] [--seed S]\n"
    "                 [--prior-temp T] [--json] (TEXT | -f FILE)\n"
    "\n"
    "Encode TEXT (at most one window, mean encoding), run it forward to layer L,\n"
    "change the state h^(L) on the tokens [A, B), then invert layers L..1 from\n"
    "the span's block onward and print the text decoded at layer 0. Text before\n"
    "the span's block is never changed; text after it may adapt.\n"
    "\n"
    "Operations:\n"
    "  noise:S         add Gaussian noise of scale S to the span's state\n"
    "  resample        draw the span's state afresh from N(0, T^2 I) (the\n"
    "                  prior; meant for the top layer)\n"
    "  replace:TEXT    put the state of TEXT (same positions, same layer) in\n"
    "                  place of the span's\n"
    "\n"
    "Options:\n"
    "  -m, --model FILE   the model (default: $TFLM_MODEL, else the default model)\n"
    "      --layer L      the layer to edit, 1..L\n"
    "      --span A:B     the token span [A, B) of the text, 0-based\n"
    "      --op OP        the operation, as above\n"
    "      --local        re-invert only the span's blocks; keep the rest\n"
    "      --seed S       seed of the noise (default 1)\n"
    "      --prior-temp T temperature T of resample (default 1.0)\n"
    "  -f, --file FILE    read the text from FILE (\"-\" = stdin)\n"
    "      --json         print the per-layer states before and after as JSON\n"
    "      --threads N    worker threads (default 1, or $TFLM_THREADS)\n"
    "      --no-blas      use the reference C kernels\n"
    "  -h, --help         show this help\n"
    "\n";

static void json_trace(jw *w, tflm_ctx *ctx, const tflm_trace *tr) {
    char *text = tflm_detokenize(ctx, tr->tokens, tr->n_tok);
    jw_obj(w);
    jw_key(w, "text"); jw_str(w, text ? text : "");
    jw_key(w, "tokens");
    jw_arr(w);
    for (int i = 0; i < tr->n_tok; i++) jw_int(w, tr->tokens[i]);
    jw_arr_end(w);
    jw_key(w, "n_pad"); jw_int(w, tr->n_pad);
    jw_key(w, "decoded");
    jw_arr(w);
    for (int l = 0; l <= tr->n_flows; l++) {
        char *t = tflm_trace_text(ctx, tr, l, 0);
        jw_str(w, t ? t : "");
        free(t);
    }
    jw_arr_end(w);
    jw_key(w, "states");
    jw_states(w, tr);
    jw_obj_end(w);
    free(text);
}

static int parse_span(const char *s, int *a, int *b) {
    const char *colon = strchr(s, ':');
    if (!colon || colon == s || !colon[1]) return -1;
    char left[32];
    size_t n = (size_t)(colon - s);
    if (n >= sizeof left) return -1;
    memcpy(left, s, n);
    left[n] = '\0';
    if (cli_parse_int(left, 0, 1 << 24, a) || cli_parse_int(colon + 1, 0, 1 << 24, b)) return -1;
    return *b > *a ? 0 : -1;
}

int cmd_edit(int argc, char **argv) {
    static const struct option longopts[] = {
        CLI_COMMON_LONGOPTS,
        {"layer", required_argument, NULL, OPT_LAYER},
        {"span", required_argument, NULL, OPT_SPAN},
        {"op", required_argument, NULL, OPT_OP},
        {"local", no_argument, NULL, OPT_LOCAL},
        {"seed", required_argument, NULL, OPT_SEED},
        {"prior-temp", required_argument, NULL, OPT_PRIOR_TEMP},
        {"file", required_argument, NULL, 'f'},
        {"json", no_argument, NULL, OPT_JSON},
        {NULL, 0, NULL, 0}
    };
    cli_common com;
    cli_common_init(&com, "edit");
    tflm_edit_params ep;
    tflm_edit_params_default(&ep);
    const char *file = NULL, *op = NULL;
    int as_json = 0, got_layer = 0, got_span = 0, opt, r;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":m:f:h", longopts, NULL)) != -1) {
        if ((r = cli_common_opt(&com, opt, optarg)) != 0) {
            if (r < 0) return -r;
            continue;
        }
        switch (opt) {
        case OPT_LAYER:
            if (cli_parse_int(optarg, 1, TFLM_MAX_FLOWS, &ep.layer))
                return cli_usage_error("edit", "--layer: '%s' is not a layer 1..%d", optarg,
                                       TFLM_MAX_FLOWS);
            got_layer = 1;
            break;
        case OPT_SPAN:
            if (parse_span(optarg, &ep.span_a, &ep.span_b))
                return cli_usage_error("edit", "--span: '%s' is not A:B with 0 <= A < B", optarg);
            got_span = 1;
            break;
        case OPT_OP:
            op = optarg;
            if (strncmp(op, "noise:", 6) == 0) {
                ep.op = TFLM_EDIT_NOISE;
                if (cli_parse_double(op + 6, 0.0, 1e6, &ep.strength))
                    return cli_usage_error("edit", "--op noise:S: '%s' is not a noise scale", op + 6);
            } else if (strcmp(op, "resample") == 0) {
                ep.op = TFLM_EDIT_RESAMPLE;
            } else if (strncmp(op, "replace:", 8) == 0) {
                ep.op = TFLM_EDIT_REPLACE;
                ep.replace = op + 8;
                if (!*ep.replace)
                    return cli_usage_error("edit", "--op replace:TEXT needs a TEXT");
            } else {
                return cli_usage_error("edit", "--op: '%s' is not noise:S, resample or replace:TEXT", op);
            }
            break;
        case OPT_LOCAL: ep.local = 1; break;
        case OPT_SEED:
            if (cli_parse_u64(optarg, &ep.seed))
                return cli_usage_error("edit", "--seed: '%s' is not a non-negative integer", optarg);
            break;
        case OPT_PRIOR_TEMP:
            if (cli_parse_double(optarg, 0.0, 100.0, &ep.prior_temp))
                return cli_usage_error("edit", "--prior-temp: '%s' is not a temperature in [0, 100]", optarg);
            break;
        case 'f': file = optarg; break;
        case OPT_JSON: as_json = 1; break;
        case 'h':
            fputs(edit_usage, stdout);
            fputs(cli_exit_help, stdout);
            return EXIT_OK;
        default:
            return cli_getopt_error("edit", opt, argv);
        }
    }
    if (!got_layer) return cli_usage_error("edit", "--layer L is required");
    if (!got_span) return cli_usage_error("edit", "--span A:B is required");
    if (!op) return cli_usage_error("edit", "--op is required (noise:S, resample or replace:TEXT)");
    int n_args = argc - optind;
    if (file && n_args > 0) return cli_usage_error("edit", "give TEXT or -f FILE, not both");
    if (!file && n_args == 0) return cli_usage_error("edit", "no TEXT to edit (or -f FILE)");
    if (n_args > 1) return cli_usage_error("edit", "one TEXT at a time (quote it)");

    char *text = NULL;
    size_t len;
    int rc;
    if (file) {
        rc = cli_read_file(file, &text, &len);
        if (rc != EXIT_OK) return rc;
    } else {
        text = strdup(argv[optind]);
        if (!text) {
            cli_msg("out of memory");
            return EXIT_RUNTIME;
        }
    }
    const char *name = file ? (strcmp(file, "-") == 0 ? "stdin" : file) : "edit";
    tflm_ctx *ctx;
    rc = cli_load_model(&com, &ctx, NULL);
    if (rc != EXIT_OK) {
        free(text);
        return rc;
    }
    /* tokenize once only to warn about mapped characters */
    int *ids = NULL, n_ids = 0;
    rc = cli_tokenize(ctx, name, text, strlen(text), &ids, &n_ids);
    free(ids);
    if (rc != EXIT_OK) {
        free(text);
        tflm_free(ctx);
        return rc;
    }
    tflm_trace *before = NULL, *after = NULL;
    tflm_status st = tflm_edit(ctx, text, &ep, as_json ? &before : NULL, &after);
    if (st != TFLM_OK) {
        rc = cli_fail(st, name);
    } else if (!after || (as_json && !before)) {
        cli_msg("%s: internal error: no trace returned", name);
        rc = EXIT_INTERNAL;
    } else if (as_json) {
        jw w;
        jw_init(&w, stdout);
        jw_obj(&w);
        jw_key(&w, "layer"); jw_int(&w, ep.layer);
        jw_key(&w, "span");
        jw_arr(&w);
        jw_int(&w, ep.span_a);
        jw_int(&w, ep.span_b);
        jw_arr_end(&w);
        jw_key(&w, "op"); jw_str(&w, op);
        jw_key(&w, "local"); jw_bool(&w, ep.local);
        jw_key(&w, "seed"); jw_int(&w, (long long)ep.seed);
        jw_key(&w, "before"); json_trace(&w, ctx, before);
        jw_key(&w, "after"); json_trace(&w, ctx, after);
        jw_obj_end(&w);
        jw_end(&w);
    } else {
        char *out = tflm_trace_text(ctx, after, 0, 0);
        if (!out) {
            cli_msg("%s: out of memory", name);
            rc = EXIT_RUNTIME;
        } else {
            fputs(out, stdout);
            fputc('\n', stdout);
            free(out);
        }
    }
    if (before) tflm_trace_free(before);
    if (after) tflm_trace_free(after);
    free(text);
    tflm_free(ctx);
    return rc;
}
