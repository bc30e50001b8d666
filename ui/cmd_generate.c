/* cmd_generate.c: tflm generate and tflm layers: continue a context (or
 * start from nothing) by inverting the flows from Gaussian noise; layers
 * prints the same generation as one decoded line per layer, noise to text,
 * or with --profile its refinement profile (issue 7): per state, how much of
 * the decoded text already agrees with the final text, and the same for a
 * real text encoded forward (--text FILE). */
#include <stdlib.h>
#include <string.h>
#include "cli.h"

enum { OPT_PROFILE = 420, OPT_TEXT };

static const char gen_opts_help[] =
    "Options:\n"
    "  -m, --model FILE      the model (default: $TFLM_MODEL, else the default model)\n"
    "  -p, --context TEXT    the context to continue (default: none)\n"
    "  -f, --file FILE       read the context from FILE (\"-\" = stdin)\n"
    "  -n, --tokens N        new tokens (characters) to generate (default 128)\n"
    "      --seed S          seed of the noise (default 1); the same seed gives\n"
    "                        the same text on every machine and thread count\n"
    "      --prior-temp T    prior temperature: u ~ N(0, T^2 I) (default 1.0)\n"
    "      --decode MODE     argmax (default) or sample\n"
    "      --temp T          decoder temperature for --decode sample (default 1.0)\n"
    "      --json            print JSON: context, text, seed, tokens, layers,\n"
    "                        ms_per_layer\n"
    "      --threads N       worker threads (default 1, or $TFLM_THREADS)\n"
    "      --no-blas         use the reference C kernels\n"
    "  -h, --help            show this help\n"
    "\n";

static const char generate_usage[] =
    "Usage: tflm generate [-m MODEL] [-p CONTEXT | -f FILE] [-n N] [--seed S]\n"
    "                     [--prior-temp T] [--decode argmax|sample] [--temp T] [--json]\n"
    "\n"
    "Generate N new tokens after the context and print the context followed by\n"
    "the new text and a newline. A model with flip block 0 cannot take a\n"
    "context exactly and only generates unconditionally.\n"
    "\n";

static const char layers_usage[] =
    "Usage: tflm layers [-m MODEL] [-p CONTEXT | -f FILE] [-n N] [--seed S]\n"
    "                   [--prior-temp T] [--decode argmax|sample] [--temp T]\n"
    "                   [--with-context] [--json]\n"
    "       tflm layers --profile [--text FILE] [GENERATION OPTIONS] [--json]\n"
    "\n"
    "The same generation as tflm generate, printed as one line of decoded text\n"
    "per layer, from the noise h^(L) down to the text h^(0). Each line starts\n"
    "with the layer index and an arrow for the direction of the flow that made\n"
    "it (-> l2r, <- flip; arrows in a UTF-8 locale). Newlines show as a return\n"
    "symbol (\\n in ASCII). Only the generated part is shown unless\n"
    "--with-context is given.\n"
    "\n"
    "With --profile it prints the refinement profile of the generation instead:\n"
    "for each state h^(L) .. h^(0), the percentage of new tokens whose decoded\n"
    "character already equals the final text's (agree; 100% at h^(0)) and the\n"
    "decoder's mean probability of the characters it reads there (conf). A model\n"
    "that teaches well rises through its intermediate layers instead of jumping\n"
    "at the last one. With --text FILE it also prints the profile of that real\n"
    "text encoded forward (mean encoding, the whole file cut into windows, the\n"
    "windows' profiles averaged by token counts): agreement with the input.\n"
    "\n"
    "      --with-context    also print the context on each line\n"
    "      --profile         print the refinement profile, not the layers' text;\n"
    "                        with --json: {\"n_flows\", \"generation\": {\"agree\",\n"
    "                        \"confidence\", \"tokens\", \"seed\"}, \"encoded\": {...,\n"
    "                        \"windows\", \"file\"}}, arrays indexed by layer 0..L\n"
    "      --text FILE       also profile the text of FILE (\"-\" = stdin), encoded\n"
    "                        forward; implies --profile\n"
    "\n";

/* ids, n: the whole context as tokenized (the trace keeps only the tail that
 * fits the window next to the new text). */
static void print_json(tflm_ctx *ctx, const tflm_trace *tr, const tflm_gen_params *g,
                       const int *ids, int n) {
    int start = tr->n_pad + tr->n_ctx;
    char *context = tflm_detokenize(ctx, ids, n);
    char *text = tflm_detokenize(ctx, tr->tokens + start, tr->n_tok - start);
    jw w;
    jw_init(&w, stdout);
    jw_obj(&w);
    jw_key(&w, "context"); jw_str(&w, context ? context : "");
    jw_key(&w, "text"); jw_str(&w, text ? text : "");
    jw_key(&w, "seed"); jw_int(&w, (long long)g->seed);
    jw_key(&w, "prior_temp"); jw_num(&w, g->prior_temp, 17);
    jw_key(&w, "decode"); jw_str(&w, g->decode == TFLM_DECODE_SAMPLE ? "sample" : "argmax");
    jw_key(&w, "temp"); jw_num(&w, g->temp, 17);
    jw_key(&w, "tokens");
    jw_arr(&w);
    for (int i = tr->n_pad; i < tr->n_tok; i++) jw_int(&w, tr->tokens[i]);
    jw_arr_end(&w);
    jw_key(&w, "layers");
    jw_arr(&w);
    for (int l = tr->n_flows; l >= 0; l--) {
        char *t = tflm_trace_text(ctx, tr, l, start);
        jw_obj(&w);
        jw_key(&w, "layer"); jw_int(&w, l);
        jw_key(&w, "direction");
        if (l == 0) jw_null(&w);
        else jw_str(&w, cli_dir_name(tr, l));
        jw_key(&w, "text"); jw_str(&w, t ? t : "");
        jw_obj_end(&w);
        free(t);
    }
    jw_arr_end(&w);
    jw_key(&w, "ms_per_layer"); jw_num(&w, tr->ms_per_layer, 6);
    jw_obj_end(&w);
    jw_end(&w);
    free(context);
    free(text);
}

static void print_layers(tflm_ctx *ctx, const tflm_trace *tr, int with_context) {
    int utf8 = cli_utf8(), color = cli_color(stdout);
    int start = tr->n_pad + tr->n_ctx;
    int width = tr->n_flows >= 10 ? 2 : 1;
    for (int l = tr->n_flows; l >= 0; l--) {
        const char *arrow;
        if (l == 0) arrow = utf8 ? " " : "  ";
        else if (tr->direction && tr->direction[l - 1]) arrow = utf8 ? "\xe2\x86\x90" : "<-";
        else arrow = utf8 ? "\xe2\x86\x92" : "->";
        if (color) fputs("\033[2m", stdout);
        printf("%*d %s", width, l, arrow);
        if (color) fputs("\033[0m", stdout);
        fputc(' ', stdout);
        char *gen = tflm_trace_text(ctx, tr, l, start);
        if (with_context) {
            char *all = tflm_trace_text(ctx, tr, l, tr->n_pad);
            if (all && gen) {
                size_t n_all = strlen(all), n_gen = strlen(gen);
                size_t n_ctx = n_all >= n_gen ? n_all - n_gen : 0;
                if (color) fputs("\033[2m", stdout);
                all[n_ctx] = '\0';
                cli_put_escaped(stdout, all);
                if (color) fputs("\033[0m", stdout);
            }
            free(all);
        }
        cli_put_escaped(stdout, gen ? gen : "");
        fputc('\n', stdout);
        free(gen);
    }
}

/* ---- the refinement profile (tflm layers --profile) ---------------------------- */

/* The profile of a real text: the ids cut into consecutive windows of T
 * tokens (the last one shorter, padded in front as tflm score does), each
 * encoded forward with the mean encoding and profiled against the input;
 * the windows' profiles averaged, weighted by their token counts. */
static int profile_text(tflm_ctx *ctx, const char *cmd, const int *ids, int n, tflm_profile *out,
                        int *windows) {
    tflm_info info;
    tflm_get_info(ctx, &info);
    int T = info.window > 0 ? info.window : 1;
    tflm_score_params sp;
    tflm_score_params_default(&sp);
    sp.mean = 1;
    memset(out, 0, sizeof *out);
    *windows = 0;
    long long total = 0;
    for (int off = 0; off < n; off += T) {
        if (cli_interrupted()) return EXIT_INTERRUPTED;
        int len = n - off < T ? n - off : T;
        tflm_trace *tr = NULL;
        tflm_status st = tflm_encode_ids(ctx, ids + off, len, &sp, &tr, NULL);
        if (st != TFLM_OK) return cli_fail(st, cmd);
        tflm_profile p;
        st = tflm_trace_profile(tr, NULL, tr->n_pad, &p);
        tflm_trace_free(tr);
        if (st != TFLM_OK) return cli_fail(st, cmd);
        out->n_flows = p.n_flows;
        for (int l = 0; l <= p.n_flows && l <= TFLM_MAX_FLOWS; l++) {
            out->agree[l] += p.agree[l] * p.n_tokens;
            out->conf[l] += p.conf[l] * p.n_tokens;
        }
        total += p.n_tokens;
        (*windows)++;
    }
    if (total <= 0) {
        cli_msg("%s: --text: no tokens to profile", cmd);
        return EXIT_RUNTIME;
    }
    for (int l = 0; l <= out->n_flows && l <= TFLM_MAX_FLOWS; l++) {
        out->agree[l] /= (double)total;
        out->conf[l] /= (double)total;
    }
    out->n_tokens = total > 0x7fffffff ? 0x7fffffff : (int)total;
    return EXIT_OK;
}

static void json_profile(jw *w, const tflm_profile *p) {
    int L = p->n_flows;
    jw_key(w, "agree");
    jw_num_array(w, p->agree, L + 1, 6);
    jw_key(w, "confidence");
    jw_num_array(w, p->conf, L + 1, 6);
    jw_key(w, "tokens");
    jw_int(w, p->n_tokens);
}

/* g: the generation's profile; e (may be NULL): the encoded text's */
static void print_profile(const tflm_trace *tr, const tflm_gen_params *gp, const tflm_profile *g,
                          const tflm_profile *e, int e_windows, const char *e_file, int as_json) {
    int L = g->n_flows;
    if (as_json) {
        jw w;
        jw_init(&w, stdout);
        jw_obj(&w);
        jw_key(&w, "n_flows"); jw_int(&w, L);
        jw_key(&w, "generation");
        jw_obj(&w);
        json_profile(&w, g);
        jw_key(&w, "seed"); jw_int(&w, (long long)gp->seed);
        jw_obj_end(&w);
        if (e) {
            jw_key(&w, "encoded");
            jw_obj(&w);
            json_profile(&w, e);
            jw_key(&w, "windows"); jw_int(&w, e_windows);
            jw_key(&w, "file"); jw_str(&w, strcmp(e_file, "-") == 0 ? "stdin" : e_file);
            jw_obj_end(&w);
        }
        jw_obj_end(&w);
        jw_end(&w);
        return;
    }
    int utf8 = cli_utf8();
    int width = L >= 10 ? 2 : 1;
    printf("%-6s%15s", "", "generation");
    if (e) printf("   %15s", "encoded text");
    printf("\n%-6s%8s%7s", "layer", "agree", "conf");
    if (e) printf("   %8s%7s", "agree", "conf");
    fputc('\n', stdout);
    for (int l = L; l >= 0; l--) {
        const char *arrow;
        if (l == 0) arrow = utf8 ? " " : "  ";
        else if (tr->direction && tr->direction[l - 1]) arrow = utf8 ? "\xe2\x86\x90" : "<-";
        else arrow = utf8 ? "\xe2\x86\x92" : "->";
        int cols = width + 1 + (utf8 ? 1 : 2);
        printf("%*d %s%*s", width, l, arrow, cols < 6 ? 6 - cols : 0, "");
        printf("%7.1f%%%7.3f", 100 * g->agree[l], g->conf[l]);
        if (e) printf("   %7.1f%%%7.3f", 100 * e->agree[l], e->conf[l]);
        fputc('\n', stdout);
    }
    printf("%-6s%8d", "tokens", g->n_tokens);
    if (e) printf("%7s   %8d in %d window%s", "", e->n_tokens, e_windows, e_windows == 1 ? "" : "s");
    fputc('\n', stdout);
}

static int generate_main(int argc, char **argv, int layers) {
    static const struct option longopts[] = {
        CLI_COMMON_LONGOPTS,
        {"context", required_argument, NULL, 'p'},
        {"file", required_argument, NULL, 'f'},
        {"tokens", required_argument, NULL, 'n'},
        {"seed", required_argument, NULL, OPT_SEED},
        {"prior-temp", required_argument, NULL, OPT_PRIOR_TEMP},
        {"decode", required_argument, NULL, OPT_DECODE},
        {"temp", required_argument, NULL, OPT_TEMP},
        {"json", no_argument, NULL, OPT_JSON},
        {"with-context", no_argument, NULL, OPT_WITH_CONTEXT},
        {"profile", no_argument, NULL, OPT_PROFILE},
        {"text", required_argument, NULL, OPT_TEXT},
        {NULL, 0, NULL, 0}
    };
    const char *cmd = layers ? "layers" : "generate";
    cli_common com;
    cli_common_init(&com, cmd);
    tflm_gen_params g;
    tflm_gen_params_default(&g);
    const char *context = NULL, *file = NULL, *text_file = NULL;
    int as_json = 0, with_context = 0, profile = 0, opt, r;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":m:p:f:n:h", longopts, NULL)) != -1) {
        if ((r = cli_common_opt(&com, opt, optarg)) != 0) {
            if (r < 0) return -r;
            continue;
        }
        switch (opt) {
        case 'p': context = optarg; break;
        case 'f': file = optarg; break;
        case 'n':
            if (cli_parse_int(optarg, 1, 1 << 24, &g.n_new))
                return cli_usage_error(cmd, "-n: '%s' is not a positive number of tokens", optarg);
            break;
        case OPT_SEED:
            if (cli_parse_u64(optarg, &g.seed))
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
            break;
        case OPT_TEMP:
            if (cli_parse_double(optarg, 1e-6, 100.0, &g.temp))
                return cli_usage_error(cmd, "--temp: '%s' is not a temperature in (0, 100]", optarg);
            break;
        case OPT_JSON: as_json = 1; break;
        case OPT_WITH_CONTEXT:
            if (!layers) return cli_usage_error(cmd, "--with-context is an option of tflm layers");
            with_context = 1;
            break;
        case OPT_PROFILE:
            if (!layers) return cli_usage_error(cmd, "--profile is an option of tflm layers");
            profile = 1;
            break;
        case OPT_TEXT:
            if (!layers) return cli_usage_error(cmd, "--text is an option of tflm layers --profile");
            text_file = optarg;
            profile = 1;
            break;
        case 'h':
            fputs(layers ? layers_usage : generate_usage, stdout);
            fputs(gen_opts_help, stdout);
            fputs(cli_exit_help, stdout);
            return EXIT_OK;
        default:
            return cli_getopt_error(cmd, opt, argv);
        }
    }
    if (optind < argc)
        return cli_usage_error(cmd, "unexpected argument '%s' (give a context with -p TEXT)",
                               argv[optind]);
    if (context && file) return cli_usage_error(cmd, "give -p CONTEXT or -f FILE, not both");
    if (profile && with_context)
        return cli_usage_error(cmd, "--with-context shows the layers' text; --profile prints numbers");
    if (text_file && file && strcmp(text_file, "-") == 0 && strcmp(file, "-") == 0)
        return cli_usage_error(cmd, "-f - and --text - cannot both read stdin");

    char *buf = NULL;
    size_t len = 0;
    int rc;
    if (file) {
        rc = cli_read_file(file, &buf, &len);
        if (rc != EXIT_OK) return rc;
    } else if (context) {
        len = strlen(context);
        buf = malloc(len + 1);
        if (!buf) {
            cli_msg("out of memory");
            return EXIT_RUNTIME;
        }
        memcpy(buf, context, len + 1);
    }
    tflm_ctx *ctx;
    rc = cli_load_model(&com, &ctx, NULL);
    if (rc != EXIT_OK) {
        free(buf);
        return rc;
    }
    int *ids = NULL, n = 0;
    if (buf && len > 0) {
        rc = cli_tokenize(ctx, file ? (strcmp(file, "-") == 0 ? "stdin" : file) : "context",
                          buf, len, &ids, &n);
    }
    free(buf);
    /* the text to profile (--text): read and tokenized before generating */
    int *tids = NULL, tn = 0;
    if (rc == EXIT_OK && text_file) {
        char *tbuf = NULL;
        size_t tlen = 0;
        rc = cli_read_file(text_file, &tbuf, &tlen);
        if (rc == EXIT_OK) {
            if (tlen == 0) {
                cli_msg("%s: %s: empty text, nothing to profile", cmd,
                        strcmp(text_file, "-") == 0 ? "stdin" : text_file);
                rc = EXIT_RUNTIME;
            } else {
                rc = cli_tokenize(ctx, strcmp(text_file, "-") == 0 ? "stdin" : text_file, tbuf, tlen,
                                  &tids, &tn);
            }
        }
        free(tbuf);
    }
    if (rc == EXIT_OK) {
        tflm_trace *tr = NULL;
        tflm_status st = tflm_generate_ids(ctx, ids, n, &g, &tr);
        if (st != TFLM_OK) {
            rc = cli_fail(st, cmd);
        } else if (!tr || tr->n_tok < tr->n_pad + tr->n_ctx) {
            cli_msg("%s: internal error: bad trace returned", cmd);
            rc = EXIT_INTERNAL;
        } else if (profile) {
            tflm_profile gpf, epf;
            int windows = 0;
            st = tflm_trace_profile(tr, NULL, tr->n_pad + tr->n_ctx, &gpf);
            if (st != TFLM_OK) rc = cli_fail(st, cmd);
            if (rc == EXIT_OK && text_file) rc = profile_text(ctx, cmd, tids, tn, &epf, &windows);
            if (rc == EXIT_OK)
                print_profile(tr, &g, &gpf, text_file ? &epf : NULL, windows, text_file, as_json);
        } else if (as_json) {
            print_json(ctx, tr, &g, ids, n);
        } else if (layers) {
            print_layers(ctx, tr, with_context);
        } else {
            /* the whole context, then the new text */
            int start = tr->n_pad + tr->n_ctx;
            char *head = tflm_detokenize(ctx, ids, n);
            char *text = tflm_detokenize(ctx, tr->tokens + start, tr->n_tok - start);
            if (!head || !text) {
                cli_msg("%s: out of memory", cmd);
                rc = EXIT_RUNTIME;
            } else {
                fputs(head, stdout);
                fputs(text, stdout);
                fputc('\n', stdout);
            }
            free(head);
            free(text);
        }
        if (tr) tflm_trace_free(tr);
    }
    free(ids);
    free(tids);
    tflm_free(ctx);
    return rc;
}

int cmd_generate(int argc, char **argv) {
    return generate_main(argc, argv, 0);
}

int cmd_layers(int argc, char **argv) {
    return generate_main(argc, argv, 1);
}
