/* cmd_info.c: tflm info: a model's configuration, parameter count,
 * vocabulary and training record, as text or JSON. */
#include <stdlib.h>
#include <string.h>
#include "cli.h"

static const char info_usage[] =
    "Usage: tflm info [-m MODEL] [--json]\n"
    "\n"
    "Show the model's configuration (each flow: type, transformer blocks,\n"
    "mixture components K, direction, maf head), parameter count, vocabulary,\n"
    "window geometry and training record.\n"
    "\n"
    "Options:\n"
    "  -m, --model FILE  the model (default: $TFLM_MODEL, else the default model)\n"
    "      --json        print one JSON object instead of text\n"
    "      --threads N   worker threads (default 1, or $TFLM_THREADS)\n"
    "      --no-blas     use the reference C kernels\n"
    "  -h, --help        show this help\n"
    "\n";

/* The code of a one-character token, or -1. */
static int single_char(const char *s) {
    return s && s[0] && !s[1] ? (unsigned char)s[0] : -1;
}

/* One vocabulary entry, readable: a one-byte token in single quotes with
 * C escapes, <special> names as they are, other strings in double quotes. */
static void put_token(FILE *f, const char *s) {
    int ch = single_char(s);
    if (!s) fputs("(null)", f);
    else if (ch == '\'' || ch == '\\') fprintf(f, "'\\%c'", ch);
    else if (ch >= 0x20 && ch < 0x7f) fprintf(f, "'%c'", ch);
    else if (ch == '\n') fputs("'\\n'", f);
    else if (ch == '\t') fputs("'\\t'", f);
    else if (ch > 0) fprintf(f, "'\\x%02x'", ch);
    else if (s[0] == '<' && s[strlen(s) - 1] == '>') fputs(s, f);  /* <pad> */
    else cli_put_quoted(f, s);
}

/* Compact vocabulary: runs of consecutive one-byte tokens become ranges. */
static void print_vocab(tflm_ctx *ctx, int V) {
    int shown = 0;
    for (int i = 0; i < V; ) {
        const char *s = tflm_token_str(ctx, i);
        int ch = single_char(s), j = i + 1;
        if (ch >= 0x20 && ch < 0x7f)
            while (j < V && single_char(tflm_token_str(ctx, j)) == ch + (j - i)) j++;
        if (shown && shown % 8 == 0) fputs("\n            ", stdout);
        else if (shown) fputs("  ", stdout);
        if (j - i >= 3) {
            printf("%d-%d ", i, j - 1);
            put_token(stdout, s);
            fputs("..", stdout);
            put_token(stdout, tflm_token_str(ctx, j - 1));
        } else {
            j = i + 1;
            printf("%d ", i);
            put_token(stdout, s);
        }
        shown++;
        i = j;
        if (shown >= 48 && i < V) {
            printf("  ... (%d more)", V - i);
            break;
        }
    }
    fputc('\n', stdout);
}

static json_t *parse_meta(tflm_ctx *ctx, const char *key) {
    const char *raw = tflm_metadata(ctx, key);
    if (!raw) return NULL;
    json_t *j = json_loads(raw, JSON_DECODE_ANY, NULL);
    if (j && json_is_null(j)) {
        json_decref(j);
        return NULL;
    }
    return j;
}

static void print_json(tflm_ctx *ctx, const char *path, const tflm_info *in) {
    jw w;
    jw_init(&w, stdout);
    jw_obj(&w);
    jw_key(&w, "model"); jw_str(&w, path);
    jw_key(&w, "version"); jw_str(&w, tflm_version());
    jw_key(&w, "type"); jw_str(&w, in->is_ar ? "ar" : "flow");
    jw_key(&w, "n_flows"); jw_int(&w, in->n_flows);
    jw_key(&w, "n_params"); jw_int(&w, in->n_params);
    jw_key(&w, "vocab_size"); jw_int(&w, in->vocab_size);
    jw_key(&w, "latent_dim"); jw_int(&w, in->latent_dim);
    jw_key(&w, "patch"); jw_int(&w, in->patch);
    jw_key(&w, "window"); jw_int(&w, in->window);
    jw_key(&w, "positions"); jw_int(&w, in->positions);
    jw_key(&w, "channels"); jw_int(&w, in->channels);
    jw_key(&w, "d_model"); jw_int(&w, in->d_model);
    jw_key(&w, "n_heads"); jw_int(&w, in->n_heads);
    jw_key(&w, "flip_block"); jw_int(&w, in->flip_block);
    jw_key(&w, "ln_eps"); jw_num(&w, in->ln_eps, 17);
    jw_key(&w, "flows");
    jw_arr(&w);
    for (int l = 0; l < in->n_flows && l < TFLM_MAX_FLOWS; l++) {
        const tflm_flow_info *f = &in->flows[l];
        jw_obj(&w);
        jw_key(&w, "flow"); jw_int(&w, l + 1);
        jw_key(&w, "type"); jw_str(&w, f->type);
        jw_key(&w, "layers"); jw_int(&w, f->layers);
        jw_key(&w, "mixtures"); jw_int(&w, f->mixtures);
        jw_key(&w, "direction");
        if (in->is_ar) jw_null(&w);
        else jw_str(&w, f->direction);
        jw_key(&w, "maf");
        if (f->maf_embed > 0) {
            jw_obj(&w);
            jw_key(&w, "embed"); jw_int(&w, f->maf_embed);
            jw_key(&w, "hidden"); jw_int(&w, f->maf_hidden);
            jw_obj_end(&w);
        } else {
            jw_null(&w);
        }
        jw_obj_end(&w);
    }
    jw_arr_end(&w);
    jw_key(&w, "vocab");
    jw_arr(&w);
    for (int i = 0; i < in->vocab_size; i++) jw_str(&w, tflm_token_str(ctx, i));
    jw_arr_end(&w);
    json_t *cfg = parse_meta(ctx, "tflm.config"), *train = parse_meta(ctx, "tflm.train");
    jw_key(&w, "config");
    if (cfg) jw_json(&w, cfg);
    else jw_null(&w);
    jw_key(&w, "train");
    if (train) jw_json(&w, train);
    else jw_null(&w);
    jw_obj_end(&w);
    jw_end(&w);
    json_decref(cfg);
    json_decref(train);
}

static void print_text(tflm_ctx *ctx, const char *path, const tflm_info *in) {
    printf("model:      %s\n", path);
    if (in->is_ar)
        printf("type:       ar (discrete autoregressive baseline), %d transformer blocks\n",
               in->flows[0].layers);
    else
        printf("type:       TarFlowLM, %d flow%s\n", in->n_flows, in->n_flows == 1 ? "" : "s");
    printf("parameters: %lld\n", in->n_params);
    printf("window:     %d tokens", in->window);
    if (in->is_ar)
        printf(", latent dim %d\n", in->latent_dim);
    else
        printf(" = %d positions x patch %d; %d channels per position (latent dim %d)\n",
               in->positions, in->patch, in->channels, in->latent_dim);
    printf("transformer: width %d, %d heads, ln_eps %g\n", in->d_model, in->n_heads, in->ln_eps);
    if (!in->is_ar) {
        if (in->flip_block > 0)
            printf("flip block: %d positions (generation with a context is exact)\n",
                   in->flip_block);
        else
            printf("flip block: 0 = the whole window (no exact context; generates unconditionally)\n");
        printf("flows (1 = data side, %d = noise side):\n", in->n_flows);
        printf("  %-4s %-7s %-7s %-6s %-5s %s\n", "flow", "type", "blocks", "K", "dir", "maf");
        for (int l = 0; l < in->n_flows && l < TFLM_MAX_FLOWS; l++) {
            const tflm_flow_info *f = &in->flows[l];
            char maf[48];
            if (f->maf_embed > 0) snprintf(maf, sizeof maf, "embed %d, hidden %d", f->maf_embed, f->maf_hidden);
            else snprintf(maf, sizeof maf, "-");
            printf("  %-4d %-7s %-7d %-6d %-5s %s\n", l + 1, f->type, f->layers, f->mixtures,
                   f->direction, maf);
        }
    }
    printf("vocabulary: %d tokens: ", in->vocab_size);
    print_vocab(ctx, in->vocab_size);
    json_t *train = parse_meta(ctx, "tflm.train");
    json_t *steps = json_object_get(train, "steps"), *seed = json_object_get(train, "seed");
    if (!train || (json_is_object(train) && json_object_size(train) == 0)) {
        printf("training:   untrained (random init)\n");
    } else if (json_is_integer(steps) && json_integer_value(steps) == 0) {
        /* what tflm init writes */
        if (json_is_integer(seed))
            printf("training:   untrained (random init, seed %lld)\n",
                   (long long)json_integer_value(seed));
        else
            printf("training:   untrained (random init)\n");
    } else {
        char *s = json_dumps(train, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY |
                                        JSON_REAL_PRECISION(10));
        printf("training:\n%s\n", s ? s : "(unprintable)");
        free(s);
    }
    json_decref(train);
}

int cmd_info(int argc, char **argv) {
    static const struct option longopts[] = {
        CLI_COMMON_LONGOPTS,
        {"json", no_argument, NULL, OPT_JSON},
        {NULL, 0, NULL, 0}
    };
    cli_common com;
    cli_common_init(&com, "info");
    int as_json = 0, opt, r;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":m:h", longopts, NULL)) != -1) {
        if ((r = cli_common_opt(&com, opt, optarg)) != 0) {
            if (r < 0) return -r;
            continue;
        }
        switch (opt) {
        case OPT_JSON: as_json = 1; break;
        case 'h':
            fputs(info_usage, stdout);
            fputs(cli_exit_help, stdout);
            return EXIT_OK;
        default:
            return cli_getopt_error("info", opt, argv);
        }
    }
    if (optind < argc)
        return cli_usage_error("info", "unexpected argument '%s'", argv[optind]);
    tflm_ctx *ctx;
    const char *path;
    int rc = cli_load_model(&com, &ctx, &path);
    if (rc != EXIT_OK) return rc;
    tflm_info in;
    memset(&in, 0, sizeof in);
    tflm_get_info(ctx, &in);
    if (as_json) print_json(ctx, path, &in);
    else print_text(ctx, path, &in);
    tflm_free(ctx);
    return EXIT_OK;
}
