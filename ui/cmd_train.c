/* cmd_train.c: tflm train: train a model (progressive, joint or ar) from a
 * training config, with progress lines on stderr and in OUT.log, atomic
 * checkpoints (OUT.ckpt), exact resume, and Ctrl-C/SIGTERM saving a
 * checkpoint before stopping. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "cli.h"

static const char train_usage[] =
    "Usage: tflm train --config FILE.json --data TRAIN [--data MORE...] [--valid VALID]\n"
    "                  -o OUT [--resume CKPT] [--threads N] [--seed S] [--time-limit MIN]\n"
    "                  [--stop-at STEP]\n"
    "\n"
    "Train a TarFlowLM (or ar) model on UTF-8 text. FILE.json holds the model (\"model\": a\n"
    "tflm.config object, or \"init\": a model file, with its init_sha256 if wanted) and the\n"
    "training settings (schedule progressive|joint, steps or stage_steps, batch, lr, warmup,\n"
    "final_lr_frac, beta1, beta2, adam_eps, weight_decay, clip, pad_frac, seed, valid_every,\n"
    "valid_chars, log_every, checkpoint_every, checkpoint_every_s, sigma_floor,\n"
    "flow_lr_scale: one learning-rate factor per flow; note: free text); any other key is\n"
    "refused. See tflm(1).\n"
    "\n"
    "A checkpoint OUT.ckpt is written atomically every few minutes, on Ctrl-C or SIGTERM,\n"
    "at the time limit and at the end; --resume OUT.ckpt continues exactly (bit for bit\n"
    "with the same --threads). Progress goes to stderr and is appended to OUT.log.\n"
    "\n"
    "Options:\n"
    "      --config FILE   training config (not needed with --resume)\n"
    "      --data FILE     training text (repeatable)\n"
    "      --valid FILE    validation text (bits per character every valid_every steps)\n"
    "  -o, --output OUT    the final model file\n"
    "      --resume CKPT   continue a checkpoint\n"
    "      --threads N     worker threads (default 1, or $TFLM_THREADS)\n"
    "      --device D      cpu (default, or $TFLM_DEVICE) or cuda: where the transformer runs\n"
    "      --seed S        override the config's seed\n"
    "      --time-limit MIN  stop with a checkpoint after MIN minutes\n"
    "      --stop-at STEP  finish at STEP and write OUT, as if the schedule ended there\n"
    "                      (the learning rate still follows the full schedule; with\n"
    "                      --resume, a checkpoint already at STEP is just written out)\n"
    "      --set KEY=VALUE   override a training-config setting (repeatable), e.g.\n"
    "                        --set lr=0.001 --set schedule=joint --set steps=500\n"
    "  -q, --quiet         no progress on stderr (the log file still gets it)\n"
    "  -h, --help          show this help\n"
    "\n";

static volatile int stop_flag;
static FILE *logf_;
static int quiet;

static void on_signal(int sig) {
    (void)sig;
    stop_flag = 1;
}

static void on_log(void *user, tflm_log_level lv, const char *msg) {
    (void)user;
    char ts[32];
    time_t now = time(NULL);
    strftime(ts, sizeof ts, "%Y-%m-%d %H:%M:%S", localtime(&now));
    if (logf_) {
        fprintf(logf_, "%s %s\n", ts, msg);
        fflush(logf_);
    }
    if (!quiet && lv >= TFLM_LOG_INFO) {
        fprintf(stderr, "tflm: train: %s\n", msg);
        fflush(stderr);
    }
}

int cmd_train(int argc, char **argv) {
    enum { O_DATA = 1000, O_VALID, O_RESUME, O_TIME, O_SET, O_STOPAT };
    static const struct option longopts[] = {
        {"config", required_argument, NULL, OPT_CONFIG},
        {"data", required_argument, NULL, O_DATA},
        {"valid", required_argument, NULL, O_VALID},
        {"output", required_argument, NULL, 'o'},
        {"resume", required_argument, NULL, O_RESUME},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"device", required_argument, NULL, OPT_DEVICE},
        {"seed", required_argument, NULL, OPT_SEED},
        {"time-limit", required_argument, NULL, O_TIME},
        {"set", required_argument, NULL, O_SET},
        {"stop-at", required_argument, NULL, O_STOPAT},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}
    };
    const char *config = NULL, *out = NULL, *valid = NULL, *resume = NULL;
    const char *data[64], *sets[64];
    int ndata = 0, nsets = 0, threads = 0;
    double minutes = 0;
    tflm_train_opts o;
    tflm_train_opts_default(&o);
    int device_set = 0;
    const char *envt = getenv("TFLM_THREADS");
    if (envt && *envt && cli_parse_int(envt, 1, 256, &threads))
        return cli_usage_error("train", "TFLM_THREADS: '%s' is not a thread count 1..256", envt);
    int opt;
    opterr = 0;
    quiet = 0;
    while ((opt = getopt_long(argc, argv, ":o:qh", longopts, NULL)) != -1) {
        switch (opt) {
        case OPT_CONFIG: config = optarg; break;
        case O_DATA:
            if (ndata == 64) return cli_usage_error("train", "too many --data files (64 at most)");
            data[ndata++] = optarg;
            break;
        case O_VALID: valid = optarg; break;
        case 'o': out = optarg; break;
        case O_RESUME: resume = optarg; break;
        case OPT_THREADS:
            if (cli_parse_int(optarg, 1, 256, &threads))
                return cli_usage_error("train", "--threads: '%s' is not a thread count 1..256", optarg);
            break;
        case OPT_SEED:
            if (cli_parse_u64(optarg, &o.seed))
                return cli_usage_error("train", "--seed: '%s' is not a non-negative integer", optarg);
            o.has_seed = 1;
            break;
        case O_TIME:
            if (cli_parse_double(optarg, 0.01, 1e7, &minutes))
                return cli_usage_error("train", "--time-limit: '%s' is not a number of minutes", optarg);
            break;
        case O_STOPAT: {
            int sa;
            if (cli_parse_int(optarg, 1, 2000000000, &sa))
                return cli_usage_error("train", "--stop-at: '%s' is not a step number >= 1", optarg);
            o.stop_at = sa;
            break;
        }
        case O_SET:
            if (nsets == 64) return cli_usage_error("train", "too many --set options (64 at most)");
            if (!strchr(optarg, '=') || optarg[0] == '=')
                return cli_usage_error("train", "--set: '%s' is not KEY=VALUE", optarg);
            sets[nsets++] = optarg;
            break;
        case OPT_DEVICE:
            if (cli_parse_device(optarg, &o.device))
                return cli_usage_error("train", "--device: '%s' is not cpu or cuda", optarg);
            device_set = 1;
            break;
        case 'q': quiet = 1; break;
        case 'h':
            fputs(train_usage, stdout);
            fputs(cli_exit_help, stdout);
            return EXIT_OK;
        default:
            return cli_getopt_error("train", opt, argv);
        }
    }
    if (optind < argc) return cli_usage_error("train", "unexpected argument '%s'", argv[optind]);
    const char *denv = getenv("TFLM_DEVICE");
    if (!device_set && denv && *denv && cli_parse_device(denv, &o.device))
        return cli_usage_error("train", "TFLM_DEVICE: '%s' is not cpu or cuda", denv);
    if (!out) return cli_usage_error("train", "-o OUT is required");
    if (!ndata) return cli_usage_error("train", "--data TRAIN is required");
    if (!config && !resume) return cli_usage_error("train", "--config FILE.json (or --resume CKPT) is required");
    if (config && resume) return cli_usage_error("train", "--resume takes its settings from the checkpoint; drop --config");
    char *json = NULL;
    size_t len;
    if (nsets && resume)
        return cli_usage_error("train", "--set changes a new run's settings; a resumed run keeps the checkpoint's");
    if (config) {
        int rc = cli_read_file(config, &json, &len);
        if (rc != EXIT_OK) return rc;
    }
    if (nsets) {
        /* apply KEY=VALUE overrides: a JSON value if VALUE parses as one, else a string */
        json_error_t e;
        json_t *root = json_loads(json, 0, &e);
        if (!json_is_object(root)) {
            json_decref(root);
            free(json);
            cli_msg("%s: not valid JSON: %s (line %d)", config, e.text, e.line);
            return EXIT_BADMODEL;
        }
        for (int i = 0; i < nsets; i++) {
            char key[128];
            const char *eq = strchr(sets[i], '=');
            snprintf(key, sizeof key, "%.*s", (int)(eq - sets[i]), sets[i]);
            json_t *v = json_loads(eq + 1, JSON_DECODE_ANY, NULL);
            if (!v) v = json_string(eq + 1);
            json_object_set_new(root, key, v);
        }
        free(json);
        json = json_dumps(root, JSON_COMPACT);
        json_decref(root);
    }
    char logpath[4096];
    snprintf(logpath, sizeof logpath, "%s.log", out);
    logf_ = fopen(logpath, "a");
    if (!logf_) cli_msg("warning: cannot open the log file %s; logging to stderr only", logpath);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    o.threads = threads > 0 ? threads : 1;
    o.time_limit_s = minutes * 60;
    o.stop = &stop_flag;
    o.log = on_log;
    int finished = 0;
    tflm_status st = tflm_train(json, data, ndata, valid, out, resume, &o, &finished);
    free(json);
    if (logf_) {
        /* a stop (SIGINT/SIGTERM) is not an error: the log already has its line */
        if (st != TFLM_OK && st != TFLM_ECANCELLED) fprintf(logf_, "error: %s\n", tflm_last_error());
        fclose(logf_);
        logf_ = NULL;
    }
    if (st == TFLM_ECANCELLED) {
        cli_msg("%s", tflm_last_error());      /* the message names "train:" */
        return EXIT_INTERRUPTED;
    }
    if (st == TFLM_EUNSUPPORTED && o.device == TFLM_DEVICE_CUDA) {
        cli_fail(st, "train");      /* no CUDA in this build, or no GPU */
        return EXIT_UNAVAILABLE;
    }
    if (st != TFLM_OK) return cli_fail(st, "train");
    return EXIT_OK;
}
