/* app_doc.c: the app's session: documents (each generation or edit is one
 * step with the recipe that replays it), undo/redo, the worker thread that
 * runs the library, session files (JSON) and exports (text, JSON trace, and
 * ANSI or HTML snapshots of the Layers and Heatmap views). No curses here. */
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <jansson.h>
#include "app.h"

/* ---- documents ------------------------------------------------------------ */

void doc_free(doc *d) {
    if (!d) return;
    free(d->prefix);
    tflm_trace_free(d->tr);
    tflm_trace_free(d->before);
    free(d->context);
    free(d->replace);
    free(d->text);
    free(d);
}

void docs_push(app *a, doc *d) {
    for (int i = a->cur + 1; i < a->n_docs; i++) doc_free(a->docs[i]);
    a->n_docs = a->cur + 1;
    if (a->n_docs == a->cap_docs) {
        int cap = a->cap_docs ? 2 * a->cap_docs : 16;
        doc **nd = realloc(a->docs, cap * sizeof *nd);
        if (!nd) { doc_free(d); return; }
        a->docs = nd;
        a->cap_docs = cap;
    }
    a->docs[a->n_docs++] = d;
    a->cur = a->n_docs - 1;
    a->dirty = 1;
    if (d->kind == DOC_EDIT) a->dirty_edits = 1;
}

static void after_move(app *a) {
    doc *d = app_doc(a);
    if (d) {
        if (a->cur_tok >= d->tr->n_tok) a->cur_tok = d->tr->n_tok - 1;
        if (a->cur_tok < d->tr->n_pad) a->cur_tok = d->tr->n_pad;
        if (a->cur_layer > d->tr->n_flows) a->cur_layer = d->tr->n_flows;
    }
    a->ed_a = a->ed_b = -1;
    a->ed_anchor = -1;
    a->ed_show_after = 0;
    replay_reset(a);
}

int app_undo(app *a) {
    if (a->busy) { app_message(a, 1, "busy: wait or press Ctrl-C"); return 1; }
    if (a->cur < 0) { app_message(a, 1, "nothing to undo"); return 1; }
    a->cur--;
    a->dirty = 1;
    after_move(a);
    app_message(a, 0, "undone (step %d of %d; redo with Alt-r or U)", a->cur + 1, a->n_docs);
    return 0;
}

int app_redo(app *a) {
    if (a->busy) { app_message(a, 1, "busy: wait or press Ctrl-C"); return 1; }
    if (a->cur + 1 >= a->n_docs) { app_message(a, 1, "nothing to redo"); return 1; }
    a->cur++;
    a->dirty = 1;
    after_move(a);
    app_message(a, 0, "redone (step %d of %d)", a->cur + 1, a->n_docs);
    return 0;
}

static char *str_cat(const char *x, const char *y) {
    size_t nx = strlen(x), ny = strlen(y);
    char *s = malloc(nx + ny + 1);
    if (!s) return NULL;
    memcpy(s, x, nx);
    memcpy(s + nx, y, ny + 1);
    return s;
}

/* ---- the text of a running generation (the worker's side) ------------------------- */

typedef struct {
    app *a;
    const int *ids;        /* the whole context as tokenized */
    int n;
    int n_new;
    int first;             /* no block seen yet */
    int delay_ms;          /* pause after each block */
    double slept_ms;       /* time spent in the block delay */
} live_job;

/* tflm_gen_params.on_block: runs in the worker thread inside tflm_generate.
 * Copies the final tokens so far into a->live under its mutex, wakes the
 * event loop through the self-pipe, and pauses if a block delay is set.
 * Never calls curses. Non-zero cancels the generation. */
static int on_block(void *user, const tflm_trace *tr, int n_ready) {
    live_job *lj = user;
    app *a = lj->a;
    live_text *lv = &a->live;
    char *prefix = NULL;
    if (lj->first) {
        int drop = lj->n - tr->n_ctx;
        prefix = tflm_detokenize(a->ctx, lj->ids, drop > 0 ? drop : 0);
    }
    int end = tr->n_pad + tr->n_ctx + lj->n_new;   /* the last block may overshoot */
    if (end > tr->n_tok) end = tr->n_tok;
    if (n_ready > end) n_ready = end;
    if (n_ready < 0) n_ready = 0;
    pthread_mutex_lock(&lv->mu);
    if (lj->first) {
        free(lv->prefix);
        lv->prefix = prefix;
        lj->first = 0;
    }
    if (end > lv->cap) {
        int *nt = realloc(lv->tok, end * sizeof *nt);
        if (nt) lv->tok = nt;
        float *np = realloc(lv->prob, end * sizeof *np);
        if (np) lv->prob = np;
        if (nt && np) lv->cap = end;
    }
    if (n_ready <= lv->cap) {
        memcpy(lv->tok, tr->tokens, n_ready * sizeof *lv->tok);
        memcpy(lv->prob, tr->prob, n_ready * sizeof *lv->prob);   /* layer 0 comes first */
        lv->n = n_ready;
        lv->n_pad = tr->n_pad;
        lv->from = tr->n_pad + tr->n_ctx;
        lv->end = end;
        lv->blocks++;
    }
    pthread_mutex_unlock(&lv->mu);
    if (write(a->wake[1], "b", 1) < 0) { /* full pipe: the loop is awake anyway */ }
    int delay = lj->delay_ms;
    if (delay > 0 && n_ready < end) {
        double t0 = app_now();
        while (!a->cancel && app_now() - t0 < delay) {
            double left = delay - (app_now() - t0);
            usleep((useconds_t)(1000 * (left < 20 ? left : 20)));
        }
        lj->slept_ms += app_now() - t0;
    }
    return a->cancel;
}

/* the Generate screen shows nothing of the last run's partial text */
static void live_reset(app *a) {
    pthread_mutex_lock(&a->live.mu);
    a->live.n = 0;
    a->live.end = 0;
    a->live.blocks = 0;
    free(a->live.prefix);
    a->live.prefix = NULL;
    pthread_mutex_unlock(&a->live.mu);
}

/* Run a document's recipe: fills prefix, tr, before, new_from/new_to, text.
 * live: a generation reports its blocks to the Generate screen (worker). */
static int doc_run_live(app *a, doc *d, int live, char *err, size_t errlen) {
    double t0 = app_now();
    live_job lj = {a, NULL, 0, 0, 1, a->block_delay_ms, 0};
    tflm_status st;
    int *ids = NULL, n = 0;
    const char *ctxt = d->context ? d->context : "";
    if (*ctxt) {
        st = tflm_tokenize(a->ctx, ctxt, strlen(ctxt), &ids, &n, NULL);
        if (st != TFLM_OK) goto fail;
    }
    if (d->kind == DOC_GEN) {
        tflm_gen_params g = d->gp;   /* the recipe keeps no callback */
        g.on_block = NULL;
        g.user = NULL;
        if (live) {
            lj.ids = ids;
            lj.n = n;
            lj.n_new = g.n_new;
            g.on_block = on_block;
            g.user = &lj;
        }
        st = tflm_generate_ids(a->ctx, ids, n, &g, &d->tr);
        if (st != TFLM_OK) goto fail;
        /* the block delay is for watching, not part of the model's speed */
        if (lj.slept_ms > 0 && d->tr->n_flows > 0) {
            d->tr->ms_per_layer -= lj.slept_ms / d->tr->n_flows;
            if (d->tr->ms_per_layer < 0) d->tr->ms_per_layer = 0;
        }
        int kept = d->tr->n_ctx;
        d->prefix = tflm_detokenize(a->ctx, ids, n - kept);
        d->new_from = d->tr->n_pad + d->tr->n_ctx;
    } else {
        int T = a->info.window, off = n > T ? n - T : 0;
        if (d->span_a < off || d->span_b > n || d->span_a >= d->span_b) {
            snprintf(err, errlen, "the span %d..%d must lie in the text's last window "
                     "(tokens %d..%d)", d->span_a, d->span_b, off, n);
            free(ids);
            return 1;
        }
        d->edit_off = off;
        d->ep.span_a = d->span_a - off;
        d->ep.span_b = d->span_b - off;
        d->ep.replace = d->replace;
        char *win = tflm_detokenize(a->ctx, ids + off, n - off);
        d->prefix = tflm_detokenize(a->ctx, ids, off);
        st = win ? tflm_edit(a->ctx, win, &d->ep, &d->before, &d->tr) : TFLM_ENOMEM;
        free(win);
        if (st != TFLM_OK) goto fail;
        d->new_from = d->tr->n_pad + d->ep.span_a;
        d->new_to = d->tr->n_pad + d->ep.span_b;
    }
    free(ids);
    char *tail = tflm_trace_text(a->ctx, d->tr, 0, d->tr->n_pad);
    d->text = str_cat(d->prefix ? d->prefix : "", tail ? tail : "");
    free(tail);
    d->wall_ms = app_now() - t0 - lj.slept_ms;
    return d->text ? 0 : 1;
fail:
    free(ids);
    if (st == TFLM_ECANCELLED) snprintf(err, errlen, "cancelled");
    else snprintf(err, errlen, "%s", tflm_last_error());
    return st == TFLM_ECANCELLED ? 2 : 1;
}

int doc_run(app *a, doc *d, doc *prev, char *err, size_t errlen) {
    (void)prev;
    return doc_run_live(a, d, 0, err, errlen);
}

/* ---- the worker thread ---------------------------------------------------------- */

/* One persistent worker thread runs every job, so the library's OpenMP
 * thread team is made once and reused (a new thread per job would make a
 * new team each time, and the old ones spin on the cores for a while). */
static pthread_mutex_t wk_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wk_cv = PTHREAD_COND_INITIALIZER;
static int wk_pending, wk_stop, wk_started;

static void *worker(void *p) {
    app *a = p;
    for (;;) {
        pthread_mutex_lock(&wk_mu);
        while (!wk_pending && !wk_stop) pthread_cond_wait(&wk_cv, &wk_mu);
        if (wk_stop) {
            pthread_mutex_unlock(&wk_mu);
            return NULL;
        }
        wk_pending = 0;
        pthread_mutex_unlock(&wk_mu);
        a->jb.st = doc_run_live(a, a->jb.d, a->jb.kind == JOB_GEN, a->jb.err, sizeof a->jb.err);
        if (write(a->wake[1], "d", 1) < 0) { /* the loop polls with a timeout while busy */ }
    }
}

int worker_start(app *a) {
    if (wk_started) return 0;
    wk_stop = wk_pending = 0;
    if (pthread_create(&a->thread, NULL, worker, a) != 0) return 1;
    wk_started = 1;
    return 0;
}

/* wait for the running job (it was asked to cancel) and stop the thread */
void worker_stop(app *a) {
    if (!wk_started) return;
    if (a->busy) {
        char b;
        while (read(a->wake[0], &b, 1) != 1 || b != 'd') {
            struct pollfd pf = {a->wake[0], POLLIN, 0};
            poll(&pf, 1, 100);
        }
        a->busy = 0;
        doc_free(a->jb.d);
        a->jb.d = NULL;
    }
    pthread_mutex_lock(&wk_mu);
    wk_stop = 1;
    pthread_cond_signal(&wk_cv);
    pthread_mutex_unlock(&wk_mu);
    pthread_join(a->thread, NULL);
    wk_started = 0;
}

static int start_job(app *a, int kind, doc *d) {
    if (!wk_started && worker_start(a)) {
        doc_free(d);
        app_message(a, 1, "cannot start the worker thread: %s", strerror(errno));
        return 1;
    }
    a->jb.kind = kind;
    a->jb.d = d;
    a->jb.st = 0;
    a->jb.err[0] = 0;
    a->jb.progress = 0;
    live_reset(a);
    a->cancel = 0;
    a->busy = 1;
    a->msg[0] = 0;
    a->job_t0 = app_now();
    pthread_mutex_lock(&wk_mu);
    wk_pending = 1;
    pthread_cond_signal(&wk_cv);
    pthread_mutex_unlock(&wk_mu);
    return 0;
}

int app_start_generate(app *a, const char *context, const tflm_gen_params *gp) {
    if (a->busy) { app_message(a, 1, "busy: wait or press Ctrl-C"); return 1; }
    doc *cur = app_doc(a);
    doc *d = calloc(1, sizeof *d);
    if (!d) return 1;
    d->kind = DOC_GEN;
    d->gp = *gp;
    d->context = strdup(context ? context : cur ? cur->text : "");
    if (!d->context) { free(d); return 1; }
    return start_job(a, JOB_GEN, d);
}

int app_start_edit(app *a, int a_tok, int b_tok, int layer, int op, double strength,
                   int local, const char *replace, uint64_t seed) {
    if (a->busy) { app_message(a, 1, "busy: wait or press Ctrl-C"); return 1; }
    doc *cur = app_doc(a);
    if (!cur) { app_message(a, 1, "nothing to edit: generate a text first"); return 1; }
    if (a->info.is_ar) { app_message(a, 1, "editing needs a flow model; this is an ar model"); return 1; }
    doc *d = calloc(1, sizeof *d);
    if (!d) return 1;
    d->kind = DOC_EDIT;
    d->context = strdup(cur->text);
    tflm_edit_params_default(&d->ep);
    d->ep.layer = layer;
    d->ep.op = (tflm_edit_op)op;
    d->ep.strength = strength;
    d->ep.local = local;
    d->ep.seed = seed;
    d->ep.prior_temp = a->gp.prior_temp;
    if (op == TFLM_EDIT_REPLACE) d->replace = strdup(replace ? replace : "");
    /* trace tokens of the current doc -> tokens of the whole text */
    int *ids = NULL, n = 0;
    int prefix_n = 0;
    if (cur->prefix && *cur->prefix &&
        tflm_tokenize(a->ctx, cur->prefix, strlen(cur->prefix), &ids, &n, NULL) == TFLM_OK)
        prefix_n = n;
    free(ids);
    d->span_a = prefix_n + a_tok - cur->tr->n_pad;
    d->span_b = prefix_n + b_tok - cur->tr->n_pad;
    return start_job(a, JOB_EDIT, d);
}

void app_job_done(app *a) {
    if (!a->busy) return;
    a->busy = 0;
    doc *d = a->jb.d;
    a->jb.d = NULL;
    if (a->jb.st == 0) {
        docs_push(a, d);
        if (d->kind == DOC_GEN) {
            a->cur_tok = d->new_from < d->tr->n_tok ? d->new_from : d->tr->n_tok - 1;
            app_message(a, 0, "generated %d characters with seed %llu in %.0f ms",
                        d->tr->n_tok - d->new_from, (unsigned long long)d->gp.seed, d->wall_ms);
        } else {
            a->ed_show_after = 1;
            if (a->cur_tok >= d->tr->n_tok) a->cur_tok = d->tr->n_tok - 1;
            if (a->cur_tok < d->tr->n_pad) a->cur_tok = d->tr->n_pad;
            a->ed_a = a->ed_b = -1;
            a->ed_anchor = -1;
            app_message(a, 0, "edit applied at layer %d; u undoes it", d->ep.layer);
        }
        replay_reset(a);
    } else {
        app_message(a, a->jb.st != 2, "%s%s", a->jb.kind == JOB_EDIT ? "edit: " : "generate: ",
                    a->jb.err);
        doc_free(d);
    }
    a->cancel = 0;
    live_reset(a);
}

/* ---- sessions ------------------------------------------------------------------------ */

static const char *op_name(int op) {
    return op == TFLM_EDIT_RESAMPLE ? "resample" : op == TFLM_EDIT_REPLACE ? "replace" : "noise";
}

static json_t *gen_params_json(const tflm_gen_params *g) {
    return json_pack("{s:I, s:f, s:s, s:f, s:i}", "seed", (json_int_t)g->seed,
                     "prior_temp", g->prior_temp,
                     "decode", g->decode == TFLM_DECODE_SAMPLE ? "sample" : "argmax",
                     "temp", g->temp, "n_new", g->n_new);
}

static void gen_params_read(json_t *o, tflm_gen_params *g) {
    json_t *v;
    if ((v = json_object_get(o, "seed")) && json_is_integer(v)) g->seed = (uint64_t)json_integer_value(v);
    if ((v = json_object_get(o, "prior_temp")) && json_is_number(v)) g->prior_temp = json_number_value(v);
    if ((v = json_object_get(o, "temp")) && json_is_number(v)) g->temp = json_number_value(v);
    if ((v = json_object_get(o, "n_new")) && json_is_integer(v)) g->n_new = (int)json_integer_value(v);
    if ((v = json_object_get(o, "decode")) && json_is_string(v))
        g->decode = strcmp(json_string_value(v), "sample") == 0 ? TFLM_DECODE_SAMPLE : TFLM_DECODE_ARGMAX;
}

int session_save(app *a, const char *path, char *err, size_t errlen) {
    json_t *root = json_object(), *steps = json_array();
    json_object_set_new(root, "format", json_string("tflm-session"));
    json_object_set_new(root, "version", json_integer(1));
    json_object_set_new(root, "model", json_string(a->model_path));
    json_object_set_new(root, "params", gen_params_json(&a->gp));
    for (int i = 0; i <= a->cur; i++) {
        doc *d = a->docs[i];
        json_t *s;
        if (d->kind == DOC_GEN) {
            s = gen_params_json(&d->gp);
            json_object_set_new(s, "op", json_string("generate"));
            json_object_set_new(s, "context", json_string(d->context));
        } else {
            s = json_pack("{s:s, s:i, s:[i,i], s:s, s:f, s:f, s:b, s:I}", "op", "edit",
                          "layer", d->ep.layer, "span", d->span_a, d->span_b,
                          "edit", op_name(d->ep.op), "strength", d->ep.strength,
                          "prior_temp", d->ep.prior_temp, "local", d->ep.local,
                          "seed", (json_int_t)d->ep.seed);
            if (d->replace) json_object_set_new(s, "replace", json_string(d->replace));
        }
        json_object_set_new(s, "text", json_string(d->text));
        json_array_append_new(steps, s);
    }
    json_object_set_new(root, "steps", steps);
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int rc = json_dump_file(root, tmp, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (rc != 0 || rename(tmp, path) != 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        unlink(tmp);
        return 1;
    }
    snprintf(a->session_path, sizeof a->session_path, "%s", path);
    a->dirty = a->dirty_edits = 0;
    return 0;
}

int session_load(app *a, const char *path, char *err, size_t errlen) {
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) {
        snprintf(err, errlen, "%s:%d: %s", path, je.line, je.text);
        return 1;
    }
    json_t *fmt = json_object_get(root, "format"), *steps = json_object_get(root, "steps");
    if (!json_is_string(fmt) || strcmp(json_string_value(fmt), "tflm-session") != 0 ||
        !json_is_array(steps)) {
        snprintf(err, errlen, "%s: not a tflm session file", path);
        json_decref(root);
        return 1;
    }
    doc **nd = calloc(json_array_size(steps) + 1, sizeof *nd);
    int nn = 0, mismatch = -1, bad = 0;
    size_t i;
    json_t *s;
    json_array_foreach(steps, i, s) {
        const char *op = json_string_value(json_object_get(s, "op"));
        doc *d = calloc(1, sizeof *d);
        if (!d || !op) { free(d); bad = 1; snprintf(err, errlen, "%s: step %zu has no op", path, i + 1); break; }
        if (strcmp(op, "generate") == 0) {
            d->kind = DOC_GEN;
            tflm_gen_params_default(&d->gp);
            gen_params_read(s, &d->gp);
            const char *c = json_string_value(json_object_get(s, "context"));
            d->context = strdup(c ? c : "");
        } else if (strcmp(op, "edit") == 0 && nn > 0) {
            d->kind = DOC_EDIT;
            d->context = strdup(nd[nn - 1]->text);
            tflm_edit_params_default(&d->ep);
            json_t *sp = json_object_get(s, "span");
            d->ep.layer = (int)json_integer_value(json_object_get(s, "layer"));
            d->span_a = (int)json_integer_value(json_array_get(sp, 0));
            d->span_b = (int)json_integer_value(json_array_get(sp, 1));
            const char *e = json_string_value(json_object_get(s, "edit"));
            d->ep.op = e && !strcmp(e, "resample") ? TFLM_EDIT_RESAMPLE
                     : e && !strcmp(e, "replace") ? TFLM_EDIT_REPLACE : TFLM_EDIT_NOISE;
            json_t *v;
            if ((v = json_object_get(s, "strength"))) d->ep.strength = json_number_value(v);
            if ((v = json_object_get(s, "prior_temp"))) d->ep.prior_temp = json_number_value(v);
            d->ep.local = json_is_true(json_object_get(s, "local"));
            if ((v = json_object_get(s, "seed"))) d->ep.seed = (uint64_t)json_integer_value(v);
            const char *r = json_string_value(json_object_get(s, "replace"));
            if (r) d->replace = strdup(r);
        } else {
            free(d);
            bad = 1;
            snprintf(err, errlen, "%s: step %zu: unknown op '%s'", path, i + 1, op);
            break;
        }
        char e2[300];
        if (doc_run(a, d, NULL, e2, sizeof e2)) {
            snprintf(err, errlen, "%s: step %zu: %s", path, i + 1, e2);
            doc_free(d);
            bad = 1;
            break;
        }
        const char *want = json_string_value(json_object_get(s, "text"));
        if (want && strcmp(want, d->text) != 0 && mismatch < 0) mismatch = (int)i + 1;
        nd[nn++] = d;
    }
    if (bad) {
        for (int k = 0; k < nn; k++) doc_free(nd[k]);
        free(nd);
        json_decref(root);
        return 1;
    }
    for (int k = 0; k < a->n_docs; k++) doc_free(a->docs[k]);
    free(a->docs);
    a->docs = nd;
    a->n_docs = nn;
    a->cap_docs = (int)json_array_size(steps) + 1;
    a->cur = nn - 1;
    json_t *prm = json_object_get(root, "params");
    if (json_is_object(prm)) gen_params_read(prm, &a->gp);
    json_decref(root);
    snprintf(a->session_path, sizeof a->session_path, "%s", path);
    a->dirty = a->dirty_edits = 0;
    a->cur_tok = 0;
    a->cur_layer = 0;
    a->ed_a = a->ed_b = -1;
    a->ed_show_after = 0;
    replay_reset(a);
    if (mismatch > 0)
        app_message(a, 1, "loaded %s, but step %d replays to a different text (another model?)",
                    path, mismatch);
    else
        app_message(a, 0, "loaded %s (%d steps)", path, nn);
    return 0;
}

/* ---- exports -------------------------------------------------------------------------- */

static void json_trace(app *a, doc *d, FILE *f) {
    tflm_trace *tr = d->tr;
    json_t *root = json_object(), *layers = json_array(), *toks = json_array();
    json_object_set_new(root, "text", json_string(d->text));
    json_object_set_new(root, "prefix", json_string(d->prefix ? d->prefix : ""));
    json_object_set_new(root, "n_pad", json_integer(tr->n_pad));
    json_object_set_new(root, "new_from", json_integer(d->new_from));
    for (int t = 0; t < tr->n_tok; t++) json_array_append_new(toks, json_integer(tr->tokens[t]));
    json_object_set_new(root, "tokens", toks);
    for (int l = tr->n_flows; l >= 0; l--) {
        json_t *o = json_object(), *dec = json_array(), *pr = json_array(), *en = json_array();
        char *txt = tflm_trace_text(a->ctx, tr, l, tr->n_pad);
        json_object_set_new(o, "layer", json_integer(l));
        json_object_set_new(o, "direction",
                            l == 0 ? json_null() : json_string(tr->direction[l - 1] ? "flip" : "l2r"));
        json_object_set_new(o, "text", json_string(txt ? txt : ""));
        free(txt);
        for (int t = 0; t < tr->n_tok; t++) {
            size_t i = (size_t)l * tr->n_tok + t;
            json_array_append_new(dec, json_integer(tr->dec[i]));
            json_array_append_new(pr, json_real(tr->prob[i]));
            json_array_append_new(en, json_real(tr->entropy[i]));
        }
        json_object_set_new(o, "dec", dec);
        json_object_set_new(o, "prob", pr);
        json_object_set_new(o, "entropy", en);
        if (l > 0) {
            json_t *ld = json_array();
            for (int q = 0; q < tr->n_pos; q++)
                json_array_append_new(ld, json_real(tr->logdet[(size_t)(l - 1) * tr->n_pos + q]));
            json_object_set_new(o, "logdet", ld);
        }
        json_array_append_new(layers, o);
    }
    json_object_set_new(root, "layers", layers);
    tflm_profile pf;
    int from = d->kind == DOC_GEN ? d->new_from : tr->n_pad;
    if (app_profile(a, tr, from, &pf) == 0) {
        /* the refinement profile, arrays indexed by layer 0..L (as tflm layers --profile) */
        json_t *ag = json_array(), *cf = json_array();
        for (int l = 0; l <= pf.n_flows; l++) {
            json_array_append_new(ag, json_real(pf.agree[l]));
            json_array_append_new(cf, json_real(pf.conf[l]));
        }
        json_object_set_new(root, "profile", json_pack("{s:o, s:o, s:i, s:i}", "agree", ag,
                                                       "confidence", cf, "tokens", pf.n_tokens,
                                                       "from", from));
    }
    json_dumpf(root, f, JSON_INDENT(1) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(7));
    fputc('\n', f);
    json_decref(root);
}

/* one character of a token, escaped for the output kind */
static void put_tok(app *a, FILE *f, int id, int html) {
    char g[8];
    app_tok_glyph(a, id, g);
    if (html && g[0] == '<') fputs("&lt;", f);
    else if (html && g[0] == '>') fputs("&gt;", f);
    else if (html && g[0] == '&') fputs("&amp;", f);
    else fputs(g, f);
}

static void snapshot(app *a, doc *d, FILE *f, int html) {
    tflm_trace *tr = d->tr;
    int L = tr->n_flows, W = 72;
    static const char *hex[10] = {"#440154", "#482878", "#3e4989", "#31688e", "#26828e",
                                  "#1f9e89", "#35b779", "#6ece58", "#b5de2b", "#fde725"};
    static const int ansi256[10] = {53, 54, 61, 24, 31, 37, 35, 71, 149, 226};
    if (html)
        fputs("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>tflm snapshot</title>\n"
              "<style>body{background:#111;color:#ddd;font-family:monospace}"
              ".c{color:#fc3;text-decoration:underline}pre{line-height:1.2}</style></head><body>\n"
              "<h2>Layers</h2>\n<pre>\n", f);
    else
        fputs("\033[1mLayers\033[0m  (changed characters underlined)\n", f);
    for (int t0 = tr->n_pad; t0 < tr->n_tok; t0 += W) {
        int t1 = t0 + W < tr->n_tok ? t0 + W : tr->n_tok;
        for (int l = L; l >= 0; l--) {
            fprintf(f, "h%-2d %s ", l, l ? app_arrow(a, tr->direction[l - 1]) : " ");
            for (int t = t0; t < t1; t++) {
                int id = tr->dec[(size_t)l * tr->n_tok + t];
                int ch = l < L && id != tr->dec[(size_t)(l + 1) * tr->n_tok + t];
                if (ch) fputs(html ? "<span class=\"c\">" : "\033[4;33m", f);
                put_tok(a, f, id, html);
                if (ch) fputs(html ? "</span>" : "\033[0m", f);
            }
            fputc('\n', f);
        }
        fputc('\n', f);
    }
    for (int m = 0; m < MET_COUNT; m++) {
        if (html) fprintf(f, "</pre>\n<h2>Heatmap: %s</h2>\n<pre>\n", metric_name(m));
        else fprintf(f, "\033[1mHeatmap: %s\033[0m\n", metric_name(m));
        for (int t0 = tr->n_pad; t0 < tr->n_tok; t0 += W) {
            int t1 = t0 + W < tr->n_tok ? t0 + W : tr->n_tok;
            for (int l = L; l >= 0; l--) {
                fprintf(f, "h%-2d   ", l);
                for (int t = t0; t < t1; t++) {
                    double v = metric_value(a, tr, m, l, t, NULL);
                    int k = (int)(v * 10);
                    if (k > 9) k = 9;
                    if (html) fprintf(f, "<span style=\"background:%s;color:%s\">", hex[k],
                                      k < 6 ? "#fff" : "#000");
                    else fprintf(f, "\033[48;5;%d;38;5;%dm", ansi256[k], k < 6 ? 255 : 16);
                    put_tok(a, f, tr->dec[(size_t)l * tr->n_tok + t], html);
                    fputs(html ? "</span>" : "\033[0m", f);
                }
                fputc('\n', f);
            }
            fputc('\n', f);
        }
    }
    if (html) fputs("</pre></body></html>\n", f);
}

int export_file(app *a, const char *kind, const char *path, char *err, size_t errlen) {
    doc *d = app_doc(a);
    if (!d) { snprintf(err, errlen, "nothing to export yet"); return 1; }
    int k = !strcmp(kind, "text") ? 0 : !strcmp(kind, "json") ? 1 : !strcmp(kind, "ansi") ? 2
          : !strcmp(kind, "html") ? 3 : -1;
    if (k < 0) { snprintf(err, errlen, "export: '%s' is not text, json, ansi or html", kind); return 1; }
    FILE *f = fopen(path, "w");
    if (!f) { snprintf(err, errlen, "%s: %s", path, strerror(errno)); return 1; }
    if (k == 0) fprintf(f, "%s\n", d->text);
    else if (k == 1) json_trace(a, d, f);
    else snapshot(a, d, f, k == 3);
    if (fclose(f) != 0) { snprintf(err, errlen, "%s: %s", path, strerror(errno)); return 1; }
    return 0;
}
