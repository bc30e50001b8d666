/* cmd_init.c: tflm init: write a randomly initialised model of a
 * configuration (the tflm.config JSON of tflm(5)). */
#include <stdlib.h>
#include <string.h>
#include "cli.h"

static const char init_usage[] =
    "Usage: tflm init --config FILE.json -o OUT [--seed S]\n"
    "\n"
    "Write a randomly initialised model of the configuration in FILE.json (the\n"
    "tflm.config JSON of tflm(5)) to OUT. The same seed gives the same file.\n"
    "\n"
    "Options:\n"
    "      --config FILE  the configuration JSON (\"-\" = stdin)\n"
    "  -o, --output OUT   the model file to write (replaced if it exists)\n"
    "      --seed S       seed of the initial weights (default 1)\n"
    "  -h, --help         show this help\n"
    "\n";

int cmd_init(int argc, char **argv) {
    static const struct option longopts[] = {
        {"config", required_argument, NULL, OPT_CONFIG},
        {"output", required_argument, NULL, 'o'},
        {"seed", required_argument, NULL, OPT_SEED},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}
    };
    const char *config = NULL, *out = NULL;
    uint64_t seed = 1;
    int opt;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":o:h", longopts, NULL)) != -1) {
        switch (opt) {
        case OPT_CONFIG: config = optarg; break;
        case 'o': out = optarg; break;
        case OPT_SEED:
            if (cli_parse_u64(optarg, &seed))
                return cli_usage_error("init", "--seed: '%s' is not a non-negative integer", optarg);
            break;
        case 'h':
            fputs(init_usage, stdout);
            fputs(cli_exit_help, stdout);
            return EXIT_OK;
        default:
            return cli_getopt_error("init", opt, argv);
        }
    }
    if (optind < argc)
        return cli_usage_error("init", "unexpected argument '%s'", argv[optind]);
    if (!config) return cli_usage_error("init", "--config FILE.json is required");
    if (!out) return cli_usage_error("init", "-o OUT is required");

    char *json;
    size_t len;
    int rc = cli_read_file(config, &json, &len);
    if (rc != EXIT_OK) return rc;
    if (strlen(json) != len) {
        free(json);
        cli_msg("%s: the configuration contains a NUL byte", config);
        return EXIT_BADMODEL;
    }
    tflm_status st = tflm_init_model(json, seed, out);
    free(json);
    if (st != TFLM_OK) {
        if (st == TFLM_EFORMAT) return cli_fail(st, config);
        return cli_fail(st, out);
    }
    return EXIT_OK;
}
