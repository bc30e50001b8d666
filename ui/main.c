/* main.c: the tflm command: finds the subcommand and hands it the rest of
 * the command line. Data goes to stdout, messages to stderr; the exit status
 * is one of the codes in cli.h (and tflm(1)). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "cli.h"
#include "config.h"
#ifdef HAVE_BLAS
#include <cblas.h>
#include <strings.h>
#endif

/* OpenBLAS 0.3.21 (Debian 12) does not recognise recent Intel CPUs and falls
 * back to its slowest generic kernels ("Prescott"), 4x slower here. Its core
 * is chosen when the library loads, so the only remedy is to run again with
 * OPENBLAS_CORETYPE set. A user's own OPENBLAS_CORETYPE is always kept. */
static void blas_core_fix(char **argv) {
    int again = 0;
    /* OpenMP reads its environment when it loads, too: without a thread
     * count, the ops' loops start one thread per core whatever --threads
     * says, and on a busy machine their spinning made scoring 20x slower.
     * The library sets its own thread count; passive waiting keeps idle
     * threads asleep. A user's own settings are always kept. */
    if (!getenv("OMP_NUM_THREADS")) {
        setenv("OMP_NUM_THREADS", "1", 1);
        again = 1;
    }
    if (!getenv("OMP_WAIT_POLICY")) {
        setenv("OMP_WAIT_POLICY", "passive", 1);
        again = 1;
    }
#ifdef HAVE_BLAS
    if (!getenv("OPENBLAS_CORETYPE")) {
        const char *core = openblas_get_corename();
        __builtin_cpu_init();
        const char *target = __builtin_cpu_supports("avx512f") ? "SkylakeX"
                           : __builtin_cpu_supports("avx2") ? "Haswell" : NULL;
        if (core && strcasecmp(core, "prescott") == 0 && target) {
            setenv("OPENBLAS_CORETYPE", target, 1);
            again = 1;
        }
    }
#endif
    if (again) execv("/proc/self/exe", argv);   /* on failure, carry on as we are */
}

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *what;
} command;

static const command commands[] = {
    {"generate", cmd_generate, "continue a text (or start one) from the model"},
    {"layers", cmd_layers, "the same generation, one decoded line per layer"},
    {"edit", cmd_edit, "change a text's state at one layer and re-invert"},
    {"train", cmd_train, "train a model on text (progressive, joint or ar)"},
    {"score", cmd_score, "bits per character of files (ELBO)"},
    {"quality", cmd_quality, "generative perplexity of samples, scored by a judge"},
    {"encode", cmd_encode, "every layer's state of a text, as JSON"},
    {"info", cmd_info, "configuration, vocabulary and training record"},
    {"init", cmd_init, "write a randomly initialised model"},
    {"ui", cmd_ui, "the interactive app (also 'tflm' alone on a terminal)"},
    {"demo", cmd_demo, "a guided tour of the app, for teaching"},
};
#define N_COMMANDS (int)(sizeof commands / sizeof commands[0])

static void usage(FILE *f) {
    fputs("Usage: tflm COMMAND [OPTIONS] [ARGS]\n"
          "       tflm COMMAND --help\n"
          "       tflm --help | --version\n"
          "\n"
          "TarFlowLM: a language model made of normalizing flows over a continuous\n"
          "latent space, whose every layer can be read as text.\n"
          "\n"
          "Commands:\n", f);
    for (int i = 0; i < N_COMMANDS; i++)
        fprintf(f, "  %-9s %s\n", commands[i].name, commands[i].what);
    fputs("\n"
          "Options of the commands that use a model:\n"
          "  -m, --model FILE  the model (default: $TFLM_MODEL, else the installed\n"
          "                    default model)\n"
          "      --threads N   worker threads (default 1, or $TFLM_THREADS)\n"
          "      --no-blas     use the reference C kernels instead of OpenBLAS\n"
          "      --device D    cpu (default, or $TFLM_DEVICE) or cuda: where the\n"
          "                    transformer runs (cuda: configure --with-cuda)\n"
          "\n", f);
    fputs(cli_exit_help, f);
    fputs("\nSee tflm(1) and, for the model file format, tflm(5).\n", f);
}

int main(int argc, char **argv) {
    blas_core_fix(argv);
    cli_install_sigint();
    if (argc < 2) {
        if (isatty(STDIN_FILENO) && isatty(STDOUT_FILENO)) {   /* the app */
            char *sub[] = {"ui", NULL};
            return cmd_ui(1, sub);
        }
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *name = argv[1];
    int rc;
    if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0) {
        usage(stdout);
        rc = EXIT_OK;
    } else if (strcmp(name, "--version") == 0 || strcmp(name, "-V") == 0) {
        printf("tflm %s\n", tflm_version());
        rc = EXIT_OK;
    } else if (strcmp(name, "help") == 0) {
        if (argc < 3) {
            usage(stdout);
            rc = EXIT_OK;
        } else {
            /* "tflm help CMD" is "tflm CMD --help" */
            char *sub[] = {argv[2], "--help", NULL};
            int i;
            for (i = 0; i < N_COMMANDS; i++)
                if (strcmp(argv[2], commands[i].name) == 0) break;
            if (i == N_COMMANDS) {
                cli_msg("unknown command '%s' (try 'tflm --help')", argv[2]);
                return EXIT_USAGE;
            }
            rc = commands[i].run(2, sub);
        }
    } else if (name[0] == '-') {
        cli_msg("unknown option '%s' (try 'tflm --help')", name);
        return EXIT_USAGE;
    } else {
        int i;
        for (i = 0; i < N_COMMANDS; i++)
            if (strcmp(name, commands[i].name) == 0) break;
        if (i == N_COMMANDS) {
            cli_msg("unknown command '%s' (try 'tflm --help')", name);
            return EXIT_USAGE;
        }
        rc = commands[i].run(argc - 1, argv + 1);
    }
    if (rc == EXIT_OK && cli_interrupted()) rc = EXIT_INTERRUPTED;
    /* report a failed write of the data (full disk, closed pipe) */
    if (fflush(stdout) != 0 || ferror(stdout)) {
        if (rc == EXIT_OK) {
            cli_msg("standard output: %s", strerror(errno));
            rc = EXIT_RUNTIME;
        }
    }
    return rc;
}
