/* cmd_ui.c: tflm ui and tflm demo: the command lines of the interactive
 * app (ui/app.c). They parse the options and hand over to app_run. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "app.h"
#include "cli.h"

enum { OPT_COLOR = 400, OPT_NO_MOUSE, OPT_NO_HISTORY, OPT_LOAD, OPT_AUTO };

static const char ui_usage[] =
    "Usage: tflm ui [-m MODEL] [-p CONTEXT] [--load SESSION] [--seed S] [-n N]\n"
    "               [--prior-temp T] [--decode argmax|sample] [--temp T]\n"
    "               [--color=auto|always|never] [--no-mouse] [--no-history]\n"
    "\n"
    "The interactive app: type a context, generate, and watch every flow layer\n"
    "refine noise into text (Layers, Heatmap, Replay), edit the latent state\n"
    "(Edit). 'tflm' without a command opens it too when run on a terminal.\n"
    "Press F1 in the app for the keys.\n"
    "\n";

static const char demo_usage[] =
    "Usage: tflm demo [-m MODEL] [--auto SECONDS] [--color=WHEN] [--no-mouse] [SCRIPT]\n"
    "\n"
    "A guided tour of the app for teaching: a script (default: the one that\n"
    "ships, " TFLM_PKGDATADIR "/demo.tflm) types contexts, generates, opens\n"
    "the screens and shows captions, with large cells. Space or Enter advances;\n"
    "--auto advances by itself every SECONDS. q leaves.\n"
    "\n"
    "      --auto SECONDS    advance by itself\n";

static const char common_help[] =
    "Options:\n"
    "  -m, --model FILE      the model (default: $TFLM_MODEL, else the default model)\n"
    "  -p, --context TEXT    generate from TEXT at start\n"
    "      --load FILE       open a saved session\n"
    "  -n, --tokens N        new characters per generation (default 128)\n"
    "      --seed S          seed of the first generation (default 1)\n"
    "      --prior-temp T    prior temperature (default 1.0)\n"
    "      --decode MODE     argmax (default) or sample\n"
    "      --temp T          decoder temperature for sampling (default 1.0)\n"
    "      --color=WHEN      auto (default: colour unless NO_COLOR is set or the\n"
    "                        terminal has none), always, never\n"
    "      --no-mouse        do not capture the mouse\n"
    "      --no-history      do not read or write the compose-line history\n"
    "                        ($XDG_STATE_HOME/tflm/history; TFLM_NO_HISTORY=1)\n"
    "      --threads N       worker threads (default 1, or $TFLM_THREADS)\n"
    "      --no-blas         use the reference C kernels\n"
    "  -h, --help            show this help\n";

static char default_script[1200];

static const char *find_script(void) {
    const char *cands[] = {TFLM_PKGDATADIR "/demo.tflm", TFLM_SRCDIR "/ui/demo.tflm"};
    for (size_t i = 0; i < sizeof cands / sizeof cands[0]; i++)
        if (access(cands[i], R_OK) == 0) {
            snprintf(default_script, sizeof default_script, "%s", cands[i]);
            return default_script;
        }
    return NULL;
}

static int run(int argc, char **argv, int demo) {
    const char *cmd = demo ? "demo" : "ui";
    static const struct option longopts[] = {
        CLI_COMMON_LONGOPTS,
        {"context", required_argument, NULL, 'p'},
        {"tokens", required_argument, NULL, 'n'},
        {"seed", required_argument, NULL, OPT_SEED},
        {"prior-temp", required_argument, NULL, OPT_PRIOR_TEMP},
        {"decode", required_argument, NULL, OPT_DECODE},
        {"temp", required_argument, NULL, OPT_TEMP},
        {"color", required_argument, NULL, OPT_COLOR},
        {"colour", required_argument, NULL, OPT_COLOR},
        {"no-mouse", no_argument, NULL, OPT_NO_MOUSE},
        {"no-history", no_argument, NULL, OPT_NO_HISTORY},
        {"load", required_argument, NULL, OPT_LOAD},
        {"auto", required_argument, NULL, OPT_AUTO},
        {NULL, 0, NULL, 0},
    };
    cli_common c;
    cli_common_init(&c, cmd);
    app_opts o;
    memset(&o, 0, sizeof o);
    o.color = -1;
    o.mouse = 1;
    o.history = 1;
    o.demo = demo;
    tflm_gen_params_default(&o.gp);
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, ":m:p:n:h", longopts, NULL)) != -1) {
        int r = cli_common_opt(&c, opt, optarg);
        if (r < 0) return -r;
        if (r > 0) continue;
        switch (opt) {
        case 'h':
            fputs(demo ? demo_usage : ui_usage, stdout);
            fputs(common_help, stdout);
            return EXIT_OK;
        case 'p': o.context = optarg; break;
        case 'n':
            if (cli_parse_int(optarg, 1, 100000, &o.gp.n_new))
                return cli_usage_error(cmd, "-n: '%s' is not a count (1..100000)", optarg);
            break;
        case OPT_SEED:
            if (cli_parse_u64(optarg, &o.gp.seed))
                return cli_usage_error(cmd, "--seed: '%s' is not a seed", optarg);
            break;
        case OPT_PRIOR_TEMP:
            if (cli_parse_double(optarg, 0, 100, &o.gp.prior_temp))
                return cli_usage_error(cmd, "--prior-temp: '%s' is not in 0..100", optarg);
            break;
        case OPT_DECODE:
            if (!strcmp(optarg, "argmax")) o.gp.decode = TFLM_DECODE_ARGMAX;
            else if (!strcmp(optarg, "sample")) o.gp.decode = TFLM_DECODE_SAMPLE;
            else return cli_usage_error(cmd, "--decode: '%s' is not argmax or sample", optarg);
            break;
        case OPT_TEMP:
            if (cli_parse_double(optarg, 1e-3, 100, &o.gp.temp))
                return cli_usage_error(cmd, "--temp: '%s' is not in 0.001..100", optarg);
            break;
        case OPT_COLOR:
            if (!strcmp(optarg, "auto")) o.color = -1;
            else if (!strcmp(optarg, "always")) o.color = 1;
            else if (!strcmp(optarg, "never")) o.color = 0;
            else return cli_usage_error(cmd, "--color: '%s' is not auto, always or never", optarg);
            break;
        case OPT_NO_MOUSE: o.mouse = 0; break;
        case OPT_NO_HISTORY: o.history = 0; break;
        case OPT_LOAD: o.session = optarg; break;
        case OPT_AUTO:
            if (!demo) return cli_usage_error(cmd, "--auto is an option of tflm demo");
            if (cli_parse_double(optarg, 0.1, 3600, &o.demo_auto))
                return cli_usage_error(cmd, "--auto: '%s' is not a number of seconds", optarg);
            break;
        default:
            return cli_getopt_error(cmd, opt, argv);
        }
    }
    if (demo) {
        if (optind < argc) o.script = argv[optind++];
        else if (!(o.script = find_script())) {
            cli_msg("demo: the default script is not installed; give a SCRIPT");
            return EXIT_NOINPUT;
        }
    }
    if (optind < argc) return cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    o.model_path = c.model;
    o.threads = c.threads;
    o.no_blas = c.no_blas;
    return app_run(&o);
}

int cmd_ui(int argc, char **argv) {
    return run(argc, argv, 0);
}

int cmd_demo(int argc, char **argv) {
    return run(argc, argv, 1);
}
