/* The C API's contract: NULL arguments, double free of NULL, bad input, cancellation from
 * another thread, sessions usable after errors, versioned structs.   contract MODEL.gguf */
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "edgemoe.h"

/* emoe_generate_params as ABI 3 (and older) headers declared it: sampling embedded. */
typedef struct {
    uint32_t struct_size;
    uint32_t max_tokens;
    bool add_bos;
    emoe_sampling_params sampling;
    const char *const *stop;
    size_t n_stop;
} generate_params_v3;

static int failures = 0;
#define EXPECT(cond)                                                      \
    do {                                                                  \
        if (!(cond)) {                                                    \
            fprintf(stderr, "%s:%d: expected %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                   \
        }                                                                 \
    } while (0)
#define INVALID EMOE_STATUS_INVALID_ARGUMENT

typedef struct {
    emoe_session *session;
    volatile int pieces;
} cancel_job;

static bool count_piece(void *user_data, const char *piece, size_t len) {
    (void)piece;
    (void)len;
    cancel_job *j = user_data;
    j->pieces++;
    return true;
}

static int progress_calls = 0;
static bool stop_at_half(void *user_data, float progress) {
    (void)user_data;
    progress_calls++;
    return progress < 0.5f;
}

/* Threads of this process (Linux /proc), or -1 where that cannot be read. */
static int count_threads(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    int n = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "Threads:", 8) == 0) n = atoi(line + 8);
    fclose(f);
    return n;
}

static void *canceller(void *arg) {
    cancel_job *j = arg;
    while (j->pieces < 2) usleep(1000);
    emoe_session_cancel(j->session);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.gguf\n", argv[0]);
        return 2;
    }
    char error[256];
    emoe_model *model = NULL;
    emoe_session *session = NULL;
    emoe_model_params mp;
    emoe_generate_params gp;
    emoe_sampling_params sp;
    emoe_model_info info;
    int32_t tokens[64];
    size_t n = 0;
    const float *logits = NULL;

    /* NULL everywhere: a status, never a crash. */
    EXPECT(emoe_model_params_default(NULL) == INVALID);
    EXPECT(emoe_generate_params_default(NULL) == INVALID);
    EXPECT(emoe_sampling_params_default(NULL) == INVALID);
    EXPECT(emoe_model_load(NULL, NULL, &model, error, sizeof error) == INVALID);
    EXPECT(strlen(error) > 0);
    EXPECT(emoe_model_load(argv[1], NULL, NULL, NULL, 0) == INVALID);
    EXPECT(emoe_model_load_fd(-1, 0, 0, NULL, &model, NULL, 0) == INVALID);
    EXPECT(emoe_model_get_info(NULL, &info) == INVALID);
    EXPECT(emoe_tokenize(NULL, "a", 1, true, tokens, 64, &n) == INVALID);
    EXPECT(emoe_token_to_piece(NULL, 0, error, sizeof error, &n) == INVALID);
    EXPECT(emoe_session_new(NULL, 0, &session) == INVALID);
    EXPECT(emoe_session_eval(NULL, tokens, 1) == INVALID);
    EXPECT(emoe_session_logits(NULL, &logits, &n) == INVALID);
    EXPECT(emoe_session_sample(NULL, NULL, tokens) == INVALID);
    EXPECT(emoe_session_generate(NULL, "a", 1, NULL, NULL, NULL, NULL) == INVALID);
    EXPECT(emoe_session_cancel(NULL) == INVALID);
    EXPECT(emoe_session_reset(NULL) == INVALID);
    EXPECT(emoe_session_position(NULL, &n) == INVALID);
    EXPECT(strcmp(emoe_model_last_error(NULL), "") == 0);
    EXPECT(strcmp(emoe_session_last_error(NULL), "") == 0);
    emoe_model_free(NULL);
    emoe_model_free(NULL);
    emoe_session_free(NULL);
    emoe_session_free(NULL);
    EXPECT(strlen(emoe_version()) > 0);
    EXPECT(emoe_abi_version() == EMOE_ABI_VERSION);
    EXPECT(strcmp(emoe_status_string(12345), "unknown status") == 0);

    /* Bad files: typed errors with a message. */
    EXPECT(emoe_model_load("/nonexistent/model.gguf", NULL, &model, error, sizeof error) == EMOE_STATUS_IO);
    EXPECT(strstr(error, "nonexistent") != NULL);
    FILE *junk = fopen("contract-not-a-model.gguf", "wb");
    if (junk) {
        fputs("GGUF but then nothing sensible at all", junk);
        fclose(junk);
    }
    EXPECT(emoe_model_load("contract-not-a-model.gguf", NULL, &model, error, sizeof error) == EMOE_STATUS_INVALID_FILE);
    EXPECT(strstr(error, "contract-not-a-model.gguf") != NULL);
    remove("contract-not-a-model.gguf");
    mp.struct_size = 1; /* not initialised with the _default function */
    EXPECT(emoe_model_load(argv[1], &mp, &model, error, sizeof error) == INVALID);
    EXPECT(model == NULL);

    /* Unknown predictor or policy, a NaN threshold; the statistics predictor on a file
       without a table; lower precision on a miss on a file without low-precision copies. */
    emoe_model_params_default(&mp);
    mp.predictor = 99;
    EXPECT(emoe_model_load(argv[1], &mp, &model, error, sizeof error) == INVALID);
    emoe_model_params_default(&mp);
    mp.policy = 99;
    EXPECT(emoe_model_load(argv[1], &mp, &model, error, sizeof error) == INVALID);
    emoe_model_params_default(&mp);
    mp.low_precision_threshold = 0.0f / 0.0f;
    EXPECT(emoe_model_load(argv[1], &mp, &model, error, sizeof error) == INVALID);
    emoe_model_params_default(&mp);
    mp.predictor = EMOE_PREDICTOR_STATS;
    EXPECT(emoe_model_load(argv[1], &mp, &model, error, sizeof error) == INVALID);
    EXPECT(strstr(error, "edgemoe profile") != NULL);
    emoe_model_params_default(&mp);
    mp.low_precision_threshold = 0.5f;
    EXPECT(emoe_model_load(argv[1], &mp, &model, error, sizeof error) != EMOE_STATUS_OK);
    EXPECT(model == NULL);
    /* Every predictor and policy that can run here loads. */
    emoe_model_params_default(&mp);
    mp.predictor = EMOE_PREDICTOR_NONE;
    mp.policy = EMOE_POLICY_FORWARD;
    mp.preload_count = 3;
    EXPECT(emoe_model_load(argv[1], &mp, &model, error, sizeof error) == EMOE_STATUS_OK);
    emoe_model_free(model);
    model = NULL;

    /* A progress callback that returns false cancels the load. */
    emoe_model_params_default(&mp);
    mp.progress = stop_at_half;
    EXPECT(emoe_model_load(argv[1], &mp, &model, error, sizeof error) == EMOE_STATUS_CANCELLED);
    EXPECT(model == NULL && progress_calls > 0);

    /* A real model. */
    emoe_model_params_default(&mp);
    EXPECT(emoe_model_load(argv[1], &mp, &model, error, sizeof error) == EMOE_STATUS_OK);
    if (!model) return 1;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    EXPECT(emoe_model_get_info(model, &info) == EMOE_STATUS_OK && info.n_experts > 0);
    EXPECT(emoe_model_get_info(model, NULL) == INVALID);
    info.struct_size = 0;
    EXPECT(emoe_model_get_info(model, &info) == INVALID);
    info.struct_size = sizeof info;
    EXPECT(strlen(emoe_model_last_error(model)) > 0);

    /* Tokenizer: invalid UTF-8, small buffers. */
    const char bad_utf8[] = {'a', (char)0xff, 'b'};
    EXPECT(emoe_tokenize(model, bad_utf8, 3, true, tokens, 64, &n) == INVALID);
    EXPECT(emoe_tokenize(model, "ROMEO: hello there", 18, true, tokens, 1, &n) == EMOE_STATUS_BUFFER_TOO_SMALL);
    EXPECT(n > 1);
    EXPECT(emoe_tokenize(model, "ROMEO: hello there", 18, true, tokens, 64, &n) == EMOE_STATUS_OK);
    EXPECT(emoe_token_to_piece(model, -1, error, sizeof error, &n) == INVALID);
    EXPECT(emoe_token_to_piece(model, 1 << 30, error, sizeof error, &n) == INVALID);

    /* Caller sizes are validated: a context whose KV cache cannot be allocated is a status,
       not an abort; more tokens than the context holds are refused before anything is read. */
    session = NULL;
    EXPECT(emoe_session_new(model, 1u << 30, &session) == INVALID);
    EXPECT(session == NULL && strlen(emoe_model_last_error(model)) > 0);
    EXPECT(emoe_session_new(model, UINT32_MAX, &session) == INVALID && session == NULL);
    EXPECT(emoe_session_new(model, 8, &session) == EMOE_STATUS_OK);
    EXPECT(emoe_session_eval(session, tokens, (size_t)1 << 40) == EMOE_STATUS_CONTEXT_FULL);
    emoe_session_free(session);
    session = NULL;
    /* A thread count far past the cores starts at most four threads per CPU. */
    emoe_model_params_default(&mp);
    mp.n_threads = 100000;
    emoe_model *many = NULL;
    EXPECT(emoe_model_load(argv[1], &mp, &many, error, sizeof error) == EMOE_STATUS_OK);
    if (many) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        int threads = count_threads();
        EXPECT(threads < 0 || threads <= 4 * cpus + 16);
        emoe_model_free(many);
    }

    /* Sessions: eval, logits, sample; errors leave them usable. */
    EXPECT(emoe_session_new(model, 64, &session) == EMOE_STATUS_OK);
    EXPECT(emoe_session_logits(session, &logits, &n) == INVALID); /* nothing evaluated yet */
    int32_t out_of_vocab = 1 << 30;
    EXPECT(emoe_session_eval(session, &out_of_vocab, 1) == INVALID);
    EXPECT(emoe_tokenize(model, "ROMEO:", 6, true, tokens, 64, &n) == EMOE_STATUS_OK);
    EXPECT(emoe_session_eval(session, tokens, n) == EMOE_STATUS_OK);
    EXPECT(emoe_session_logits(session, &logits, &n) == EMOE_STATUS_OK && n == info.vocab_size);
    emoe_sampling_params_default(&sp);
    int32_t next = -1;
    EXPECT(emoe_session_sample(session, &sp, &next) == EMOE_STATUS_OK && next >= 0);
    EXPECT(emoe_session_generate(session, bad_utf8, 3, NULL, NULL, NULL, NULL) == INVALID);
    emoe_generate_params_default(&gp);
    gp.n_stop = 1; /* with a NULL stop array */
    EXPECT(emoe_session_generate(session, "x", 1, &gp, NULL, NULL, NULL) == INVALID);

    /* Versioned structs: the current and the ABI-3 layout of emoe_generate_params (sampling
       embedded) both work; a size that is no version's, or a larger one (a newer header)
       setting fields this library does not know, is refused before anything runs. */
    {
        emoe_sampling_params greedy;
        emoe_sampling_params_default(&greedy);
        emoe_generate_params_default(&gp);
        gp.max_tokens = 3;
        gp.sampling = &greedy;
        EXPECT(emoe_session_reset(session) == EMOE_STATUS_OK);
        emoe_generate_stats vs = {.struct_size = sizeof vs};
        EXPECT(emoe_session_generate(session, "ROMEO:", 6, &gp, NULL, NULL, &vs) == EMOE_STATUS_OK);
        EXPECT(vs.generated_tokens > 0 && vs.generated_tokens <= 3);
        generate_params_v3 old;
        memset(&old, 0, sizeof old);
        old.struct_size = sizeof old;
        old.max_tokens = 2;
        old.add_bos = true;
        old.sampling = greedy;
        EXPECT(emoe_session_reset(session) == EMOE_STATUS_OK);
        vs.struct_size = sizeof vs;
        EXPECT(emoe_session_generate(session, "ROMEO:", 6, (const emoe_generate_params *)&old, NULL, NULL, &vs) ==
               EMOE_STATUS_OK);
        EXPECT(vs.generated_tokens > 0 && vs.generated_tokens <= 2);
        old.sampling.struct_size = 6; /* half a field of the embedded struct */
        EXPECT(emoe_session_generate(session, "ROMEO:", 6, (const emoe_generate_params *)&old, NULL, NULL, NULL) ==
               INVALID);
        struct {
            emoe_generate_params p;
            uint64_t newer_field;
        } newer;
        emoe_generate_params_default(&newer.p);
        newer.p.max_tokens = 2;
        newer.p.struct_size = sizeof newer;
        newer.newer_field = 0; /* unknown but zero: its default */
        EXPECT(emoe_session_reset(session) == EMOE_STATUS_OK);
        EXPECT(emoe_session_generate(session, "ROMEO:", 6, &newer.p, NULL, NULL, NULL) == EMOE_STATUS_OK);
        newer.newer_field = 1; /* a field this library cannot honour */
        EXPECT(emoe_session_generate(session, "ROMEO:", 6, &newer.p, NULL, NULL, NULL) == INVALID);
        EXPECT(strstr(emoe_session_last_error(session), "does not know") != NULL);
        emoe_generate_params_default(&gp);
        gp.struct_size = 6; /* cuts max_tokens in half */
        EXPECT(emoe_session_generate(session, "ROMEO:", 6, &gp, NULL, NULL, NULL) == INVALID);
        emoe_sampling_params_default(&sp);
        sp.struct_size = sizeof sp - 4; /* cuts seed in half */
        EXPECT(emoe_session_sample(session, &sp, &next) == INVALID);
        /* A result struct whose size would cut a field in half: refused, nothing written. */
        emoe_generate_stats cut;
        memset(&cut, 0, sizeof cut);
        cut.struct_size = offsetof(emoe_generate_stats, generated_tokens) + 2;
        EXPECT(emoe_session_generate(session, "ROMEO:", 6, NULL, NULL, NULL, &cut) == INVALID);
        EXPECT(cut.prompt_tokens == 0);
        memset(&info, 0, sizeof info);
        info.struct_size = offsetof(emoe_model_info, vocab_size);
        EXPECT(emoe_model_get_info(model, &info) == INVALID && info.n_layers == 0);
        info.struct_size = sizeof info;
        EXPECT(emoe_session_reset(session) == EMOE_STATUS_OK);
    }

    /* Context full is a status, and reset makes room again. */
    emoe_generate_params_default(&gp);
    gp.max_tokens = 1000;
    emoe_generate_stats stats = {.struct_size = 0};
    /* Result structs are versioned by the caller's struct_size: an unset one is refused
     * before anything is generated. */
    size_t before = 0;
    EXPECT(emoe_session_position(session, &before) == EMOE_STATUS_OK);
    EXPECT(emoe_session_generate(session, "ROMEO:", 6, &gp, NULL, NULL, &stats) == INVALID);
    EXPECT(emoe_session_position(session, &n) == EMOE_STATUS_OK && n == before);
    stats.struct_size = sizeof stats;
    EXPECT(emoe_session_generate(session, "ROMEO:", 6, &gp, NULL, NULL, &stats) == EMOE_STATUS_OK);
    EXPECT(stats.struct_size == sizeof stats);
    EXPECT(stats.stop_reason == 3 || stats.stop_reason == 0);
    EXPECT(emoe_session_reset(session) == EMOE_STATUS_OK);
    EXPECT(emoe_session_position(session, &n) == EMOE_STATUS_OK && n == 0);
    emoe_session_free(session);

    /* Cancel from another thread during generation; the session stays usable. */
    EXPECT(emoe_session_new(model, 512, &session) == EMOE_STATUS_OK);
    cancel_job job = {session, 0};
    pthread_t tid;
    pthread_create(&tid, NULL, canceller, &job);
    emoe_generate_params_default(&gp);
    gp.max_tokens = 400;
    memset(&stats, 0, sizeof stats);
    stats.struct_size = sizeof stats;
    emoe_status st = emoe_session_generate(session, "ROMEO:", 6, &gp, count_piece, &job, &stats);
    pthread_join(tid, NULL);
    EXPECT(st == EMOE_STATUS_CANCELLED);
    /* The stats are written after a cancel too. */
    EXPECT(stats.stop_reason == 5 && stats.prompt_tokens > 0 && stats.generated_tokens >= 2);
    EXPECT(stats.generated_tokens < 400);
    EXPECT(emoe_session_reset(session) == EMOE_STATUS_OK);
    gp.max_tokens = 4;
    EXPECT(emoe_session_generate(session, "ROMEO:", 6, &gp, NULL, NULL, NULL) == EMOE_STATUS_OK);
    /* A cancel while idle reaches no later call, with or without a reset in between. */
    EXPECT(emoe_session_cancel(session) == EMOE_STATUS_OK);
    EXPECT(emoe_session_generate(session, " JULIET:", 8, &gp, NULL, NULL, NULL) == EMOE_STATUS_OK);
    EXPECT(emoe_session_cancel(session) == EMOE_STATUS_OK);
    EXPECT(emoe_session_reset(session) == EMOE_STATUS_OK);
    EXPECT(emoe_session_generate(session, "ROMEO:", 6, &gp, NULL, NULL, NULL) == EMOE_STATUS_OK);
    EXPECT(emoe_session_cancel(session) == EMOE_STATUS_OK);
    EXPECT(emoe_tokenize(model, "ROMEO:", 6, true, tokens, 64, &n) == EMOE_STATUS_OK);
    EXPECT(emoe_session_eval(session, tokens, n) == EMOE_STATUS_OK);
    emoe_session_free(session);

    /* A prompt longer than the context: CONTEXT_FULL, with the stats written. */
    EXPECT(emoe_session_new(model, 4, &session) == EMOE_STATUS_OK);
    memset(&stats, 0, sizeof stats);
    stats.struct_size = sizeof stats;
    emoe_generate_params_default(&gp);
    const char *long_prompt = "ROMEO: But soft, what light through yonder window breaks?";
    EXPECT(emoe_session_generate(session, long_prompt, strlen(long_prompt), &gp, NULL, NULL, &stats) ==
           EMOE_STATUS_CONTEXT_FULL);
    EXPECT(stats.struct_size == sizeof stats && stats.stop_reason == 3 && stats.prompt_tokens > 4);
    EXPECT(stats.generated_tokens == 0);
    emoe_session_free(session);

    /* Preflight, a budgeted load, stats, budget changes. */
    emoe_preflight pf = {.struct_size = 0};
    EXPECT(emoe_model_preflight(argv[1], 0, 64, &pf) == INVALID);
    pf.struct_size = sizeof pf;
    EXPECT(emoe_model_preflight(NULL, 0, 0, &pf) == INVALID);
    EXPECT(emoe_model_preflight(argv[1], 0, 64, NULL) == INVALID);
    EXPECT(emoe_model_preflight(argv[1], 0, 64, &pf) == EMOE_STATUS_OK);
    EXPECT(pf.min_budget > pf.resident_bytes && pf.pool_bytes == 0 && pf.full_budget > pf.min_budget);
    emoe_model *budgeted = NULL;
    emoe_model_params_default(&mp);
    mp.context_length = 64; /* as asked of the preflight */
    mp.memory_budget = pf.min_budget - 1;
    EXPECT(emoe_model_load(argv[1], &mp, &budgeted, error, sizeof error) == EMOE_STATUS_BUDGET_TOO_SMALL);
    mp.memory_budget = pf.min_budget + (1 << 20);
    mp.backend = EMOE_BACKEND_PREAD;
    EXPECT(emoe_model_load(argv[1], &mp, &budgeted, error, sizeof error) == EMOE_STATUS_OK);
    if (budgeted) {
        emoe_session *bs = NULL;
        /* The budget reserved a KV cache of 64 tokens: a larger session is refused, naming
           the context the budget allows, and 0 asks for exactly that. */
        EXPECT(emoe_session_new(budgeted, 65, &bs) == EMOE_STATUS_BUDGET_TOO_SMALL && bs == NULL);
        EXPECT(strstr(emoe_model_last_error(budgeted), "at most 64 tokens") != NULL);
        EXPECT(emoe_session_new(budgeted, 0, &bs) == EMOE_STATUS_OK);
        emoe_session_free(bs);
        bs = NULL;
        EXPECT(emoe_session_new(budgeted, 64, &bs) == EMOE_STATUS_OK);
        emoe_generate_params_default(&gp);
        gp.max_tokens = 8;
        EXPECT(emoe_session_generate(bs, "ROMEO:", 6, &gp, NULL, NULL, NULL) == EMOE_STATUS_OK);
        EXPECT(emoe_model_set_memory_budget(budgeted, pf.min_budget) == EMOE_STATUS_OK);
        EXPECT(emoe_model_set_memory_budget(budgeted, 1) == EMOE_STATUS_BUDGET_TOO_SMALL);
        /* 0 means no limit here as at load. */
        EXPECT(emoe_model_set_memory_budget(budgeted, 0) == EMOE_STATUS_OK);
        EXPECT(emoe_model_set_memory_budget(budgeted, pf.min_budget) == EMOE_STATUS_OK);
        EXPECT(emoe_session_generate(bs, " more", 5, &gp, NULL, NULL, NULL) == EMOE_STATUS_OK);
        /* emoe_stats is versioned by the caller's struct_size. */
        uint64_t sentinel;
        memset(&sentinel, 0xab, sizeof sentinel);
        emoe_stats es;
        memset(&es, 0xab, sizeof es);
        es.struct_size = sizeof es;
        EXPECT(emoe_model_stats(budgeted, NULL) == INVALID);
        EXPECT(emoe_model_stats(budgeted, &es) == EMOE_STATUS_OK && es.bytes_read > 0 && es.expert_fetches > 0);
        EXPECT(es.struct_size == sizeof es);
        EXPECT(es.cache_hits + es.preload_hits + es.misses == es.expert_fetches);
        EXPECT(es.fill_reads <= es.preloads && es.dropped_preloads != sentinel);
        EXPECT(es.reads > 0 && es.reads <= es.bytes_read && es.waits <= es.expert_fetches);
        EXPECT(es.io_busy_seconds > 0 && es.io_busy_seconds < 3600);
        EXPECT(es.cancelled_reads == 0 && es.low_precision_fetches == 0 && es.low_precision_reads == 0 &&
               es.low_precision_bytes_saved == 0); /* no cancellation, no low-precision copies */
        emoe_stats unset;
        memset(&unset, 0, sizeof unset); /* struct_size not set: refused, nothing written */
        EXPECT(emoe_model_stats(budgeted, &unset) == INVALID && unset.expert_fetches == 0);
        EXPECT(strstr(emoe_model_last_error(budgeted), "struct_size") != NULL);
        /* A caller built against the previous header: nothing past its struct_size is written. */
        memset(&es, 0xab, sizeof es);
        es.struct_size = offsetof(emoe_stats, cancelled_reads);
        EXPECT(emoe_model_stats(budgeted, &es) == EMOE_STATUS_OK && es.bytes_read > 0);
        EXPECT(es.struct_size == offsetof(emoe_stats, cancelled_reads));
        EXPECT(es.cancelled_reads == sentinel && es.low_precision_bytes_saved == sentinel);
        emoe_session_free(bs);
        emoe_model_free(budgeted);
    }

    /* Fill-ahead (default on, as in Rust) with room for every expert: experts are read into
       empty slots ahead of need; off, none is. Budget-aware preloads can be turned off. A
       caller whose struct_size ends before the new fields gets their defaults. */
    emoe_model_params_default(&mp);
    EXPECT(mp.fill_ahead && mp.budget_aware_preloads);
    for (int variant = 0; variant < 4; variant++) {
        emoe_model_params_default(&mp);
        mp.context_length = 64;
        mp.memory_budget = pf.full_budget;
        mp.backend = EMOE_BACKEND_PREAD;
        mp.use_mlock = false;
        mp.fill_ahead = variant != 1;
        mp.budget_aware_preloads = variant != 2;
        if (variant == 3) {
            mp.fill_ahead = false; /* past struct_size: ignored, the default (on) applies */
            mp.struct_size = offsetof(emoe_model_params, fill_ahead);
        }
        emoe_model *fm = NULL;
        EXPECT(emoe_model_load(argv[1], &mp, &fm, error, sizeof error) == EMOE_STATUS_OK);
        if (!fm) continue;
        emoe_session *fs = NULL;
        EXPECT(emoe_session_new(fm, 64, &fs) == EMOE_STATUS_OK);
        emoe_generate_params_default(&gp);
        gp.max_tokens = 8;
        EXPECT(emoe_session_generate(fs, "ROMEO:", 6, &gp, NULL, NULL, NULL) == EMOE_STATUS_OK);
        emoe_stats fst;
        memset(&fst, 0, sizeof fst);
        fst.struct_size = sizeof fst;
        EXPECT(emoe_model_stats(fm, &fst) == EMOE_STATUS_OK && fst.bytes_read > 0);
        if (variant == 1) {
            EXPECT(fst.fill_reads == 0);
        } else {
            EXPECT(fst.fill_reads > 0 && fst.fill_reads <= fst.preloads);
        }
        emoe_session_free(fs);
        emoe_model_free(fm);
    }
    EXPECT(emoe_model_set_memory_budget(NULL, 1) == INVALID);
    EXPECT(emoe_model_set_memory_budget(model, 1 << 30) == INVALID); /* loaded without a budget */

    /* A descriptor (an Android asset) streams under a budget too; the caller keeps the fd. */
    FILE *mf = fopen(argv[1], "rb");
    EXPECT(mf != NULL);
    if (mf) {
        fseek(mf, 0, SEEK_END);
        long flen = ftell(mf);
        emoe_model_params_default(&mp);
        mp.context_length = 64;
        mp.memory_budget = pf.min_budget + (1 << 20);
        emoe_model *from_fd = NULL;
        EXPECT(emoe_model_load_fd(fileno(mf), 0, (uint64_t)flen + 1, &mp, &from_fd, error, sizeof error) == EMOE_STATUS_INVALID_FILE);
        EXPECT(emoe_model_load_fd(fileno(mf), 0, (uint64_t)flen, &mp, &from_fd, error, sizeof error) == EMOE_STATUS_OK);
        if (from_fd) {
            emoe_session *fs = NULL;
            EXPECT(emoe_session_new(from_fd, 64, &fs) == EMOE_STATUS_OK);
            emoe_generate_params_default(&gp);
            gp.max_tokens = 8;
            EXPECT(emoe_session_generate(fs, "ROMEO:", 6, &gp, NULL, NULL, NULL) == EMOE_STATUS_OK);
            emoe_stats es;
            memset(&es, 0, sizeof es);
            es.struct_size = sizeof es;
            EXPECT(emoe_model_stats(from_fd, &es) == EMOE_STATUS_OK && es.bytes_read > 0);
            emoe_session_free(fs);
            emoe_model_free(from_fd);
        }
        fclose(mf);
    }

    /* A session keeps its model alive after the model handle is freed. */
    EXPECT(emoe_session_new(model, 32, &session) == EMOE_STATUS_OK);
    emoe_model_free(model);
    gp.max_tokens = 4;
    EXPECT(emoe_session_generate(session, "ROMEO:", 6, &gp, NULL, NULL, NULL) == EMOE_STATUS_OK);
    emoe_session_free(session);

    if (failures) {
        fprintf(stderr, "%d contract failures\n", failures);
        return 1;
    }
    printf("C API contract: all checks passed\n");
    return 0;
}
