/*
 * C11 tests of the recurrent-depth C API (include/recurrent_depth.h), built
 * against both the static and the shared library (see Makefile).
 *
 * Usage: test_api FIXTURE_DIR
 * FIXTURE_DIR holds model.gguf, a random huginn model made by
 * `rd make-test-model` (n_vocab 256, context 128, blocks 1,2,1, default 8
 * iterations); the tests write their broken files there too. The environment
 * variable RD_SMOLLM2_GGUF may name SmolLM2-135M-Instruct's GGUF, a plain
 * llama file that runs without recurrence; RD_REQUIRE_SMOLLM2=1 makes its
 * absence a failure.
 */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "rdtest.h"

#define N_VOCAB 256
#define MODEL_CTX 128
#define MAX_EVENTS 512

static const char *g_dir;
static char g_model_path[4096];
static const rd_token PROMPT[] = {1, 2, 3, 4, 5};
#define N_PROMPT (sizeof PROMPT / sizeof PROMPT[0])

/* ---------------------------------------------------------------- helpers */

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* One CPU thread: ggml's workers synchronise by spinning, which makes
 * several threads per session very slow on a busy two-core machine (and
 * these models are tiny). test_end_to_end_generation also checks 2. */
static rd_model *load_model_threads(const char *path, uint32_t n_threads) {
    rd_model_params mp = rd_model_default_params();
    mp.backend = RD_BACKEND_CPU;
    mp.n_threads = n_threads;
    rd_model *m = NULL;
    rd_status s = rd_model_load(path, &mp, &m);
    if (s != RD_OK) {
        fprintf(stderr, "    load %s: %s: %s\n", path, rd_status_string(s), rd_last_error());
        return NULL;
    }
    return m;
}

static rd_model *load_model(const char *path) { return load_model_threads(path, 1); }

static rd_session *new_session(const rd_model *m, uint32_t n_ctx, uint32_t kv_budget) {
    rd_session_params sp = rd_session_default_params();
    sp.n_ctx = n_ctx;
    sp.kv_budget = kv_budget;
    rd_session *s = NULL;
    rd_status st = rd_session_new(m, &sp, &s);
    if (st != RD_OK) {
        fprintf(stderr, "    session: %s: %s\n", rd_status_string(st), rd_last_error());
        return NULL;
    }
    return s;
}

/* A session on a fresh load of the test model (the session keeps the model
 * alive); NULL, with the test marked failed, when either step fails. */
static rd_session *open_session(uint32_t n_ctx, uint32_t kv_budget) {
    rd_model *m = load_model(g_model_path);
    CHECK(m != NULL);
    if (!m) return NULL;
    rd_session *s = new_session(m, n_ctx, kv_budget);
    rd_model_free(m);
    CHECK(s != NULL);
    return s;
}

static rd_compute_limits fixed_limits(uint32_t iterations) {
    rd_compute_limits l = rd_compute_limits_default();
    l.min_iterations = iterations;
    l.max_iterations = iterations;
    return l;
}

/* What a token callback saw, plus actions it takes at given indices. */
typedef struct {
    rd_token tokens[MAX_EVENTS];
    uint32_t iterations[MAX_EVENTS];
    double exit_values[MAX_EVENTS];
    size_t n;
    int bad_event;            /* an event with a wrong index, size or text */
    long stop_at;             /* return false at this index (-1: never) */
    rd_session *session;      /* for calls made from inside the callback */
    long set_limits_at;       /* call rd_set_compute_limits at this index */
    rd_compute_limits new_limits;
    rd_status set_limits_status;
    long cancel_at;           /* call rd_cancel at this index */
    long reenter_at;          /* try re-entrant calls at this index */
    rd_status reenter[4];
    atomic_int started;       /* set at the first token */
    long sleep_ms_per_token;
} collect_t;

static void collect_init(collect_t *c, rd_session *s) {
    memset(c, 0, sizeof *c);
    c->stop_at = c->set_limits_at = c->cancel_at = c->reenter_at = -1;
    c->session = s;
    atomic_init(&c->started, 0);
}

static bool collect_cb(const rd_token_event *ev, void *user_data) {
    collect_t *c = user_data;
    if (ev->struct_size < sizeof(rd_token_event) || ev->index != c->n || ev->text != NULL ||
        ev->text_len != 0 || ev->token >= N_VOCAB)
        c->bad_event = 1;
    if (c->n < MAX_EVENTS) {
        c->tokens[c->n] = ev->token;
        c->iterations[c->n] = ev->iterations;
        c->exit_values[c->n] = ev->exit_value;
    }
    long i = (long)c->n++;
    atomic_store(&c->started, 1);
    if (i == c->set_limits_at) c->set_limits_status = rd_set_compute_limits(c->session, &c->new_limits);
    if (i == c->cancel_at) rd_cancel(c->session);
    if (i == c->reenter_at) {
        rd_generate_params gp = rd_generate_default_params();
        float logits[N_VOCAB];
        size_t len = 0;
        c->reenter[0] = rd_generate(c->session, PROMPT, N_PROMPT, &gp, NULL, NULL, NULL);
        c->reenter[1] = rd_eval(c->session, PROMPT, N_PROMPT, 1);
        c->reenter[2] = rd_session_reset(c->session);
        c->reenter[3] = rd_get_logits(c->session, logits, N_VOCAB, &len);
        rd_session_free(c->session); /* detected and ignored */
    }
    if (c->sleep_ms_per_token) sleep_ms(c->sleep_ms_per_token);
    return i != c->stop_at;
}

/* Greedy generation with `limits` (NULL: defaults). */
static rd_status generate(rd_session *s, const rd_token *prompt, size_t n_prompt,
                          const rd_compute_limits *limits, uint32_t max_tokens, collect_t *c,
                          rd_generate_stats *stats) {
    rd_generate_params gp = rd_generate_default_params();
    gp.limits = limits;
    gp.max_tokens = max_tokens;
    return rd_generate(s, prompt, n_prompt, &gp, collect_cb, c, stats);
}

/* `generate` on the prompt after a session reset, collecting into `c`. */
static rd_status regenerate(rd_session *s, const rd_compute_limits *limits, uint32_t max_tokens,
                            collect_t *c, rd_generate_stats *stats) {
    rd_status st = rd_session_reset(s);
    if (st != RD_OK) return st;
    collect_init(c, s);
    return generate(s, PROMPT, N_PROMPT, limits, max_tokens, c, stats);
}

/* The greedy tokens of a fresh session (8 fixed iterations, n_ctx 128, B 1). */
static size_t reference_tokens(const rd_model *m, const rd_token *prompt, size_t n_prompt,
                               uint32_t max_tokens, rd_token *out) {
    rd_session *s = new_session(m, MODEL_CTX, 1);
    if (!s) return 0;
    collect_t c;
    collect_init(&c, s);
    rd_compute_limits l = fixed_limits(8);
    if (generate(s, prompt, n_prompt, &l, max_tokens, &c, NULL) != RD_OK) c.n = 0;
    memcpy(out, c.tokens, c.n * sizeof(rd_token));
    rd_session_free(s);
    return c.n;
}

/* Checks that `s` (any state) still works: after a reset it generates the
 * reference tokens. */
static int session_still_works(rd_session *s, const rd_token *ref, size_t n_ref) {
    if (rd_session_reset(s) != RD_OK) return 0;
    collect_t c;
    collect_init(&c, s);
    rd_compute_limits l = fixed_limits(8);
    if (generate(s, PROMPT, N_PROMPT, &l, (uint32_t)n_ref, &c, NULL) != RD_OK) return 0;
    return c.n == n_ref && memcmp(c.tokens, ref, n_ref * sizeof(rd_token)) == 0;
}

static size_t argmax(const float *x, size_t n) {
    size_t best = 0;
    for (size_t i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* ------------------------------------------------------------------ tests */

static void test_version_and_status_strings(void) {
    CHECK(strcmp(rd_version(), RD_VERSION_STRING) == 0);
    char expect[64];
    snprintf(expect, sizeof expect, "%d.%d.%d", RD_VERSION_MAJOR, RD_VERSION_MINOR,
             RD_VERSION_PATCH);
    CHECK(strcmp(rd_version(), expect) == 0);
    CHECK(strstr(rd_status_string(RD_OK), "RD_OK") != NULL);
    CHECK(strstr(rd_status_string(RD_ERR_CANCELLED), "RD_ERR_CANCELLED") != NULL);
    CHECK(strcmp(rd_status_string(12345), "unknown status") == 0);
    CHECK(rd_last_error() != NULL);
    CHECK(rd_exit_default_threshold(RD_EXIT_KL) == 5e-4);
    CHECK(rd_exit_default_threshold(RD_EXIT_ARGMAX_STABILITY) == 5.0);
    CHECK(rd_exit_default_threshold(RD_EXIT_GATE) == 0.9);
    CHECK(rd_exit_default_threshold(RD_EXIT_CONFIDENCE) == 0.9);
    CHECK(isnan(rd_exit_default_threshold(77)));
}

static void test_end_to_end_generation(void) {
    /* 2 threads (1 under valgrind, which serialises ggml's spinning workers). */
    uint32_t n_threads = getenv("RD_TEST_SLOW") ? 1 : 2;
    rd_model *m = load_model_threads(g_model_path, n_threads);
    CHECK(m != NULL);
    if (!m) return;
    rd_model_info info = {.struct_size = sizeof info};
    REQUIRE_OK(rd_model_get_info(m, &info));
    CHECK(strcmp(info.architecture, "huginn") == 0);
    CHECK(strcmp(info.backend_name, "CPU") == 0);
    CHECK(info.n_vocab == N_VOCAB);
    CHECK(info.context_length == MODEL_CTX);
    CHECK(info.n_prelude == 1 && info.n_core == 2 && info.n_coda == 1);
    CHECK(info.default_iterations == 8);
    CHECK(info.n_embd == 96 && info.n_head == 2 && info.n_head_kv == 2);
    CHECK(info.n_threads == n_threads);
    CHECK(info.weights_mapped);

    rd_session *s = new_session(m, RD_N_CTX_FROM_MODEL, 1);
    CHECK(s != NULL);
    if (!s) return;
    rd_session_info si = {.struct_size = sizeof si};
    REQUIRE_OK(rd_session_get_info(s, &si));
    CHECK(si.n_ctx == MODEL_CTX && si.n_past == 0 && si.kv_budget == 1 && si.kv_bytes > 0);

    collect_t c;
    collect_init(&c, s);
    rd_compute_limits l = fixed_limits(8);
    rd_generate_stats st = {.struct_size = sizeof st};
    REQUIRE_OK(generate(s, PROMPT, N_PROMPT, &l, 16, &c, &st));
    CHECK(c.n == 16 && !c.bad_event);
    CHECK(st.n_tokens == 16 && st.n_prompt_tokens == N_PROMPT);
    CHECK(st.stop_reason == RD_STOP_MAX_TOKENS);
    CHECK(st.mean_iterations == 8.0 && st.prefill_iterations == 8);
    CHECK(st.kv_bytes == si.kv_bytes);
    CHECK(st.prefill_seconds >= 0 && st.decode_seconds >= 0);
    REQUIRE_OK(rd_session_get_info(s, &si));
    CHECK(si.n_past == N_PROMPT + 15); /* the last token is reported, not evaluated */

    /* Deterministic: after a reset, and in a new session, the same tokens. */
    rd_token first[16];
    memcpy(first, c.tokens, sizeof first);
    REQUIRE_OK(rd_session_reset(s));
    collect_init(&c, s);
    REQUIRE_OK(generate(s, PROMPT, N_PROMPT, &l, 16, &c, NULL));
    CHECK(c.n == 16 && memcmp(c.tokens, first, sizeof first) == 0);

    /* Continue: pass the last reported token, then generate more. */
    rd_token last = c.tokens[15];
    collect_init(&c, s);
    REQUIRE_OK(generate(s, &last, 1, &l, 4, &c, NULL));
    CHECK(c.n == 4);
    /* No callback and no stats are fine too. */
    rd_generate_params quiet = rd_generate_default_params();
    quiet.limits = &l;
    quiet.max_tokens = 3;
    CHECK_STATUS(rd_generate(s, &last, 1, &quiet, NULL, NULL, NULL), RD_OK);
    /* Continue with no tokens: resample the last evaluated position. */
    collect_init(&c, s);
    REQUIRE_OK(generate(s, NULL, 0, &l, 2, &c, NULL));
    CHECK(c.n == 2);

    /* The model handle can go before its sessions. */
    rd_session *s2 = new_session(m, 64, 2);
    CHECK(s2 != NULL);
    rd_model_free(m);
    if (s2) {
        collect_init(&c, s2);
        CHECK_STATUS(generate(s2, PROMPT, N_PROMPT, &l, 16, &c, NULL), RD_OK);
        CHECK(c.n == 16 && memcmp(c.tokens, first, sizeof first) == 0);
        rd_session_free(s2);
    }
    rd_session_free(s);
}

static void test_sampling_seed_and_stop_tokens(void) {
    rd_session *s = open_session(MODEL_CTX, 1);
    if (!s) return;
    rd_compute_limits l = fixed_limits(4);
    rd_sampling_params sp = rd_sampling_default_params();
    sp.temperature = 1.5f;
    sp.top_k = 0;
    sp.top_p = 1.0f;
    sp.min_p = 0.0f;
    sp.seed = 42;
    rd_generate_params gp = rd_generate_default_params();
    gp.limits = &l;
    gp.sampling = &sp;
    gp.max_tokens = 24;
    collect_t a, b;
    collect_init(&a, s);
    REQUIRE_OK(rd_generate(s, PROMPT, N_PROMPT, &gp, collect_cb, &a, NULL));
    REQUIRE_OK(rd_session_reset(s));
    collect_init(&b, s);
    REQUIRE_OK(rd_generate(s, PROMPT, N_PROMPT, &gp, collect_cb, &b, NULL));
    CHECK(a.n == 24 && b.n == 24 && memcmp(a.tokens, b.tokens, sizeof a.tokens) == 0);

    /* Stop at the first occurrence of the 6th token. */
    rd_token stop = a.tokens[5];
    size_t first = 0;
    while (a.tokens[first] != stop) first++;
    gp.stop_tokens = &stop;
    gp.n_stop_tokens = 1;
    rd_generate_stats st = {.struct_size = sizeof st};
    REQUIRE_OK(rd_session_reset(s));
    collect_init(&b, s);
    REQUIRE_OK(rd_generate(s, PROMPT, N_PROMPT, &gp, collect_cb, &b, &st));
    CHECK(st.stop_reason == RD_STOP_STOP_TOKEN && st.n_tokens == first + 1 && b.n == first + 1);

    /* The callback stops generation. */
    gp.n_stop_tokens = 0;
    REQUIRE_OK(rd_session_reset(s));
    collect_init(&b, s);
    b.stop_at = 2;
    REQUIRE_OK(rd_generate(s, PROMPT, N_PROMPT, &gp, collect_cb, &b, &st));
    CHECK(st.stop_reason == RD_STOP_CALLBACK && st.n_tokens == 3 && b.n == 3);
    rd_session_free(s);
}

/* Self-speculative decoding: greedy tokens equal plain decoding's (B = r),
 * the stats count drafts, settings it cannot honour are refused, and a
 * caller built against the 0.3 header (shorter structs) gets no speculation. */
static void test_speculative_decoding(void) {
    rd_session *s = open_session(MODEL_CTX, 8);
    if (!s) return;
    rd_compute_limits l = fixed_limits(8);
    collect_t plain, spec;
    collect_init(&plain, s);
    REQUIRE_OK(generate(s, PROMPT, N_PROMPT, &l, 40, &plain, NULL));
    /* Continue from the cache (n_tokens = 0) as a later turn would. */
    collect_t plain_more, spec_more;
    collect_init(&plain_more, s);
    REQUIRE_OK(generate(s, NULL, 0, &l, 10, &plain_more, NULL));

    const uint32_t drafts[][3] = {{4, 2, 0}, {6, 1, 1}, {3, 8, 0}};
    for (size_t i = 0; i < sizeof drafts / sizeof drafts[0]; i++) {
        REQUIRE_OK(rd_session_reset(s));
        rd_generate_params gp = rd_generate_default_params();
        gp.limits = &l;
        gp.max_tokens = 40;
        gp.draft_tokens = drafts[i][0];
        gp.draft_iterations = drafts[i][1];
        gp.draft_adaptive = drafts[i][2] != 0;
        rd_generate_stats st = {.struct_size = sizeof st};
        collect_init(&spec, s);
        REQUIRE_OK(rd_generate(s, PROMPT, N_PROMPT, &gp, collect_cb, &spec, &st));
        CHECK(spec.n == 40 && memcmp(spec.tokens, plain.tokens, sizeof plain.tokens) == 0);
        CHECK(!spec.bad_event);
        for (size_t t = 0; t < spec.n; t++) CHECK(spec.iterations[t] == 8);
        CHECK(st.n_verify_passes > 0 && st.n_draft_accepted <= st.n_drafted);
        CHECK(st.n_tokens == 40 && st.stop_reason == RD_STOP_MAX_TOKENS);
        if (drafts[i][1] == 8) CHECK(st.n_draft_accepted == st.n_drafted);
        collect_init(&spec_more, s);
        REQUIRE_OK(generate(s, NULL, 0, &l, 10, &spec_more, NULL));
        CHECK(spec_more.n == 10 &&
              memcmp(spec_more.tokens, plain_more.tokens, sizeof plain_more.tokens) == 0);
    }

    /* Refused: an exit criterion, warm start, too many drafts, 0 iterations. */
    rd_generate_params gp = rd_generate_default_params();
    rd_compute_limits kl = rd_compute_limits_default();
    kl.max_iterations = 8;
    kl.exit_criterion = RD_EXIT_KL;
    kl.exit_threshold = 5e-4;
    gp.limits = &kl;
    gp.draft_tokens = 4;
    REQUIRE_OK(rd_session_reset(s));
    CHECK_STATUS(rd_generate(s, PROMPT, N_PROMPT, &gp, NULL, NULL, NULL),
                 RD_ERR_INVALID_ARGUMENT);
    rd_compute_limits warm = l;
    warm.warm_start = true;
    gp.limits = &warm;
    CHECK_STATUS(rd_generate(s, PROMPT, N_PROMPT, &gp, NULL, NULL, NULL),
                 RD_ERR_INVALID_ARGUMENT);
    gp.limits = &l;
    gp.draft_tokens = 100;
    CHECK_STATUS(rd_generate(s, PROMPT, N_PROMPT, &gp, NULL, NULL, NULL),
                 RD_ERR_INVALID_ARGUMENT);
    gp.draft_tokens = 4;
    gp.draft_iterations = 0;
    CHECK_STATUS(rd_generate(s, PROMPT, N_PROMPT, &gp, NULL, NULL, NULL),
                 RD_ERR_INVALID_ARGUMENT);
    rd_session_info info = {.struct_size = sizeof info};
    REQUIRE_OK(rd_session_get_info(s, &info));
    CHECK(info.n_past == 0);

    /* 0.3's struct sizes: accepted, the draft fields (there garbage) unread. */
    gp = rd_generate_default_params();
    gp.limits = &l;
    gp.max_tokens = 40;
    gp.draft_tokens = 4; /* beyond a 0.3 struct: ignored */
    gp.struct_size = offsetof(rd_generate_params, draft_tokens);
    rd_generate_stats st = {.struct_size = offsetof(rd_generate_stats, n_drafted)};
    st.n_verify_passes = 12345; /* beyond a 0.3 struct: left alone */
    collect_init(&spec, s);
    REQUIRE_OK(rd_generate(s, PROMPT, N_PROMPT, &gp, collect_cb, &spec, &st));
    CHECK(spec.n == 40 && memcmp(spec.tokens, plain.tokens, sizeof plain.tokens) == 0);
    CHECK(st.n_tokens == 40 && st.n_verify_passes == 12345);
    rd_session_free(s);
}

static void test_context_limits(void) {
    rd_model *m = load_model(g_model_path);
    if (!m) {
        CHECK(m != NULL);
        return;
    }
    rd_session *s = new_session(m, 16, 1);
    if (!s) {
        CHECK(s != NULL);
        rd_model_free(m);
        return;
    }
    rd_token ref[8];
    size_t n_ref = reference_tokens(m, PROMPT, N_PROMPT, 8, ref);
    CHECK(n_ref == 8);
    rd_compute_limits l = fixed_limits(8);
    collect_t c;
    collect_init(&c, s);
    rd_generate_stats st = {.struct_size = sizeof st};
    /* Asking for more tokens than fit ends at a full context. */
    REQUIRE_OK(generate(s, PROMPT, 4, &l, 1000, &c, &st));
    CHECK(st.stop_reason == RD_STOP_CONTEXT_FULL && st.n_tokens == 16 - 4 + 1 && c.n == 13);
    /* A full context rejects more tokens, and the session stays usable. */
    CHECK_STATUS(rd_eval(s, PROMPT, 1, 8), RD_ERR_CONTEXT_FULL);
    CHECK(session_still_works(s, ref, n_ref));
    /* A prompt longer than the context. */
    rd_token longp[17] = {0};
    rd_session_info si = {.struct_size = sizeof si};
    REQUIRE_OK(rd_session_reset(s));
    CHECK_STATUS(generate(s, longp, 17, &l, 4, &c, NULL), RD_ERR_CONTEXT_FULL);
    CHECK_STATUS(rd_eval(s, longp, 17, 8), RD_ERR_CONTEXT_FULL);
    REQUIRE_OK(rd_session_get_info(s, &si));
    CHECK(si.n_past == 0);
    CHECK(session_still_works(s, ref, n_ref));
    rd_session_free(s);
    rd_model_free(m);
}

static void test_eval_and_logits(void) {
    rd_model *m = load_model(g_model_path);
    if (!m) {
        CHECK(m != NULL);
        return;
    }
    rd_token ref[4];
    CHECK(reference_tokens(m, PROMPT, N_PROMPT, 4, ref) == 4);
    rd_session *s = new_session(m, MODEL_CTX, 1);
    if (!s) {
        CHECK(s != NULL);
        rd_model_free(m);
        return;
    }
    float logits[N_VOCAB];
    size_t len = 0;
    CHECK_STATUS(rd_get_logits(s, logits, N_VOCAB, &len), RD_ERR_INVALID_STATE);
    REQUIRE_OK(rd_eval(s, PROMPT, N_PROMPT, 8));
    /* Size negotiation. */
    CHECK_STATUS(rd_get_logits(s, NULL, 0, &len), RD_ERR_BUFFER_TOO_SMALL);
    CHECK(len == N_VOCAB);
    len = 0;
    CHECK_STATUS(rd_get_logits(s, logits, N_VOCAB - 1, &len), RD_ERR_BUFFER_TOO_SMALL);
    CHECK(len == N_VOCAB);
    len = 0;
    REQUIRE_OK(rd_get_logits(s, logits, N_VOCAB, &len));
    CHECK(len == N_VOCAB);
    CHECK(argmax(logits, N_VOCAB) == ref[0]); /* greedy's first token */

    /* Every position's logits; the last row is what rd_get_logits gives. */
    static float all[N_PROMPT * N_VOCAB];
    REQUIRE_OK(rd_session_reset(s));
    CHECK_STATUS(rd_eval_all_logits(s, PROMPT, N_PROMPT, 8, all, N_PROMPT * N_VOCAB - 1),
                 RD_ERR_BUFFER_TOO_SMALL);
    REQUIRE_OK(rd_eval_all_logits(s, PROMPT, N_PROMPT, 8, all, N_PROMPT * N_VOCAB));
    float again[N_VOCAB];
    REQUIRE_OK(rd_get_logits(s, again, N_VOCAB, &len));
    CHECK(memcmp(again, all + (N_PROMPT - 1) * N_VOCAB, sizeof again) == 0);
    /* rd_eval computed the head for the last position only: the same maths
     * in a differently shaped graph, equal up to float rounding. */
    float lo = logits[0], hi = logits[0], diff = 0;
    for (size_t i = 0; i < N_VOCAB; i++) {
        lo = fminf(lo, logits[i]);
        hi = fmaxf(hi, logits[i]);
        diff = fmaxf(diff, fabsf(again[i] - logits[i]));
    }
    CHECK(diff <= 1e-4f * (hi - lo));
    CHECK(argmax(again, N_VOCAB) == ref[0]);
    /* Generation can continue from an rd_eval'd prompt with no tokens. */
    collect_t c;
    collect_init(&c, s);
    rd_compute_limits l = fixed_limits(8);
    REQUIRE_OK(generate(s, NULL, 0, &l, 4, &c, NULL));
    CHECK(c.n == 4 && memcmp(c.tokens, ref, sizeof ref) == 0);
    rd_session_free(s);
    rd_model_free(m);
}

/* (b) the budget is respected and reported per token; exits lower it. */
/* Limits of 2..20 iterations: `exit` at its usual threshold behind the
 * screen `screen` at 0.1. */
static rd_compute_limits lat_screen_of(rd_exit_criterion exit, rd_exit_criterion screen) {
    rd_compute_limits l = fixed_limits(20);
    l.min_iterations = 2;
    l.exit_criterion = exit;
    l.exit_threshold = rd_exit_default_threshold(exit);
    l.exit_screen_criterion = screen;
    l.exit_screen_threshold = 0.1;
    return l;
}

static void test_iteration_budget(void) {
    rd_session *s = open_session(MODEL_CTX, 1);
    if (!s) return;
    collect_t c;
    rd_generate_stats st = {.struct_size = sizeof st};

    /* Fixed budget: every token reports it (the first one: the prompt's). */
    rd_compute_limits l = fixed_limits(6);
    collect_init(&c, s);
    REQUIRE_OK(generate(s, PROMPT, N_PROMPT, &l, 12, &c, &st));
    for (size_t i = 0; i < c.n; i++) CHECK(c.iterations[i] == 6);
    for (size_t i = 0; i < c.n; i++) CHECK(isnan(c.exit_values[i]));
    CHECK(st.mean_iterations == 6.0);

    /* No exit at 32 iterations vs a KL exit: the exit lowers the mean. */
    rd_compute_limits full = fixed_limits(32);
    full.min_iterations = 2;
    REQUIRE_OK(regenerate(s, &full, 24, &c, &st));
    double mean_full = st.mean_iterations;
    CHECK(mean_full == 32.0);
    /* The gate criterion needs a model with a learned gate (Ouro). */
    rd_compute_limits gate = full;
    gate.exit_criterion = RD_EXIT_GATE;
    gate.exit_threshold = rd_exit_default_threshold(RD_EXIT_GATE);
    CHECK_STATUS(generate(s, PROMPT, N_PROMPT, &gate, 4, &c, NULL), RD_ERR_INVALID_ARGUMENT);
    CHECK(strstr(rd_last_error(), "gate") != NULL);
    rd_compute_limits kl = full;
    kl.exit_criterion = RD_EXIT_KL;
    kl.exit_threshold = rd_exit_default_threshold(RD_EXIT_KL);
    REQUIRE_OK(regenerate(s, &kl, 24, &c, &st));
    double mean_kl = st.mean_iterations;
    printf("     mean iterations: %.2f without exit, %.2f with kl:5e-4\n", mean_full, mean_kl);
    CHECK(mean_kl < 0.75 * mean_full);
    /* With an exit criterion and prefill_iterations 0 the prompt runs up to
     * the model's default (8) and stops once its states settle: the prompt's
     * exit cosine 1e-2, as if set in the limits. */
    uint32_t auto_prompt = c.iterations[0];
    CHECK(auto_prompt >= 2 && auto_prompt <= 8);
    for (size_t i = 1; i < c.n; i++) {
        CHECK(c.iterations[i] >= 2 && c.iterations[i] <= 32);
        /* An early exit happened because the value fell below the threshold. */
        if (c.iterations[i] < 32) CHECK(c.exit_values[i] < kl.exit_threshold);
    }
    rd_compute_limits settle = kl;
    settle.prefill_exit_criterion = RD_EXIT_COSINE;
    settle.prefill_exit_threshold = 1e-2;
    REQUIRE_OK(regenerate(s, &settle, 4, &c, &st));
    CHECK(c.iterations[0] == auto_prompt && st.prefill_iterations == auto_prompt);
    /* A prompt budget of the caller's is run in full. */
    {
        REQUIRE_OK(rd_session_reset(s));
        collect_init(&c, s);
        rd_generate_params gp = rd_generate_default_params();
        gp.limits = &kl;
        gp.max_tokens = 4;
        gp.prefill_iterations = 8;
        REQUIRE_OK(rd_generate(s, PROMPT, N_PROMPT, &gp, collect_cb, &c, &st));
        CHECK(c.iterations[0] == 8 && st.prefill_iterations == 8);
    }

    /* Confidence needs no previous check: at threshold 0 every token exits at
     * its first check (min_iterations); at the default, an early exit means
     * the top probability reached the threshold. */
    rd_compute_limits conf = full;
    conf.exit_criterion = RD_EXIT_CONFIDENCE;
    conf.exit_threshold = 0.0;
    REQUIRE_OK(regenerate(s, &conf, 8, &c, &st));
    for (size_t i = 1; i < c.n; i++) CHECK(c.iterations[i] == conf.min_iterations);
    conf.exit_threshold = rd_exit_default_threshold(RD_EXIT_CONFIDENCE);
    REQUIRE_OK(regenerate(s, &conf, 12, &c, &st));
    for (size_t i = 1; i < c.n; i++) {
        CHECK(c.iterations[i] >= conf.min_iterations && c.iterations[i] <= 32);
        if (c.iterations[i] < 32) CHECK(c.exit_values[i] >= conf.exit_threshold);
    }

    /* A screen before the KL exit: closed (threshold 0), every token runs the
     * maximum; open at once (+inf), the same tokens and iterations as without
     * it; a screen before a latent criterion, or an unknown one, is refused. */
    rd_compute_limits closed = kl;
    closed.exit_screen_criterion = RD_EXIT_COSINE;
    closed.exit_screen_threshold = 0.0;
    REQUIRE_OK(regenerate(s, &closed, 8, &c, &st));
    for (size_t i = 1; i < c.n; i++) CHECK(c.iterations[i] == 32);
    uint32_t kl_iters[24];
    rd_token kl_tokens[24];
    REQUIRE_OK(regenerate(s, &kl, 12, &c, &st));
    size_t n_kl = c.n;
    memcpy(kl_iters, c.iterations, n_kl * sizeof kl_iters[0]);
    memcpy(kl_tokens, c.tokens, n_kl * sizeof kl_tokens[0]);
    rd_compute_limits open = kl;
    open.exit_screen_criterion = RD_EXIT_LATENT_DIFF;
    open.exit_screen_threshold = INFINITY;
    REQUIRE_OK(regenerate(s, &open, 12, &c, &st));
    CHECK(c.n == n_kl);
    CHECK(memcmp(c.iterations, kl_iters, n_kl * sizeof kl_iters[0]) == 0);
    CHECK(memcmp(c.tokens, kl_tokens, n_kl * sizeof kl_tokens[0]) == 0);
    rd_compute_limits bad_screen = lat_screen_of(RD_EXIT_COSINE, RD_EXIT_COSINE);
    CHECK_STATUS(generate(s, PROMPT, N_PROMPT, &bad_screen, 4, &c, NULL), RD_ERR_INVALID_ARGUMENT);
    CHECK(strstr(rd_last_error(), "screen") != NULL);
    bad_screen = lat_screen_of(RD_EXIT_KL, 42);
    CHECK_STATUS(generate(s, PROMPT, N_PROMPT, &bad_screen, 4, &c, NULL), RD_ERR_INVALID_ARGUMENT);
    /* A caller built against 0.3 (40 bytes) gets no screen, whatever lies after. */
    rd_compute_limits old = kl;
    old.struct_size = 40;
    old.exit_screen_criterion = 0xdead;
    REQUIRE_OK(regenerate(s, &old, 12, &c, &st));
    CHECK(memcmp(c.iterations, kl_iters, n_kl * sizeof kl_iters[0]) == 0);

    /* 0.4's struct (56 bytes) has no prompt exit, whatever lies after. */
    rd_compute_limits old4 = kl;
    old4.struct_size = 56;
    old4.prefill_exit_criterion = 0xdead;
    REQUIRE_OK(regenerate(s, &old4, 12, &c, &st));
    CHECK(c.n == n_kl && c.iterations[0] == kl_iters[0]);
    CHECK(memcmp(c.iterations, kl_iters, n_kl * sizeof kl_iters[0]) == 0);

    /* The prompt's exit over every position: +inf passes at the first check
     * that may end it (min + 1 = 3 after the lead-in check at min; min = 2
     * without the lead-in), 0 never (the prompt's budget, 8); only latent
     * criteria, and not together with exit_in_prefill. */
    rd_compute_limits pre = kl;
    pre.prefill_exit_criterion = RD_EXIT_COSINE;
    pre.prefill_exit_threshold = INFINITY;
    REQUIRE_OK(regenerate(s, &pre, 4, &c, &st));
    CHECK(c.iterations[0] == 3);
    pre.lead_in = false;
    REQUIRE_OK(regenerate(s, &pre, 4, &c, &st));
    CHECK(c.iterations[0] == 2);
    /* A caller built against 0.5 or 0.6 (72 bytes) gets the lead-in,
     * whatever lies after. */
    pre.struct_size = 72;
    REQUIRE_OK(regenerate(s, &pre, 4, &c, &st));
    CHECK(c.iterations[0] == 3);
    pre.struct_size = sizeof pre;
    pre.lead_in = true;
    pre.prefill_exit_criterion = RD_EXIT_LATENT_DIFF;
    pre.prefill_exit_threshold = 0.0;
    REQUIRE_OK(regenerate(s, &pre, 4, &c, &st));
    CHECK(c.iterations[0] == 8);
    pre.prefill_exit_criterion = RD_EXIT_KL;
    CHECK_STATUS(generate(s, PROMPT, N_PROMPT, &pre, 4, &c, NULL), RD_ERR_INVALID_ARGUMENT);
    CHECK(strstr(rd_last_error(), "prefill exit") != NULL);
    pre.prefill_exit_criterion = RD_EXIT_COSINE;
    pre.exit_in_prefill = true;
    CHECK_STATUS(generate(s, PROMPT, N_PROMPT, &pre, 4, &c, NULL), RD_ERR_INVALID_ARGUMENT);
    pre.exit_in_prefill = false;
    pre.prefill_exit_criterion = 77;
    CHECK_STATUS(generate(s, PROMPT, N_PROMPT, &pre, 4, &c, NULL), RD_ERR_INVALID_ARGUMENT);

    /* check_every: exits only at min + k * check_every (or at max). */
    rd_compute_limits ce = kl;
    ce.min_iterations = 3;
    ce.check_every = 4;
    ce.max_iterations = 30;
    REQUIRE_OK(regenerate(s, &ce, 16, &c, &st));
    for (size_t i = 1; i < c.n; i++)
        CHECK(c.iterations[i] == 30 || (c.iterations[i] >= 3 && (c.iterations[i] - 3) % 4 == 0));

    /* A latent criterion and warm start stay within the budget too. */
    rd_compute_limits lat = fixed_limits(20);
    lat.min_iterations = 2;
    lat.exit_criterion = RD_EXIT_COSINE;
    lat.exit_threshold = rd_exit_default_threshold(RD_EXIT_COSINE);
    lat.warm_start = true;
    REQUIRE_OK(regenerate(s, &lat, 16, &c, &st));
    for (size_t i = 1; i < c.n; i++) CHECK(c.iterations[i] >= 2 && c.iterations[i] <= 20);
    CHECK(st.mean_iterations < 20.0);

    /* rd_set_compute_limits from the callback applies from the next token. */
    REQUIRE_OK(rd_session_reset(s));
    collect_init(&c, s);
    c.set_limits_at = 3;
    c.new_limits = fixed_limits(3);
    REQUIRE_OK(generate(s, PROMPT, N_PROMPT, &full, 10, &c, &st));
    CHECK_STATUS(c.set_limits_status, RD_OK);
    for (size_t i = 0; i < c.n; i++) CHECK(c.iterations[i] == (i <= 3 ? 32u : 3u));
    CHECK(st.mean_iterations == (4 * 32.0 + 6 * 3.0) / 10);
    /* Invalid limits from the callback are refused; the running ones stay. */
    REQUIRE_OK(rd_session_reset(s));
    collect_init(&c, s);
    c.set_limits_at = 1;
    c.new_limits = fixed_limits(3);
    c.new_limits.min_iterations = 5;
    REQUIRE_OK(generate(s, PROMPT, N_PROMPT, &l, 5, &c, NULL));
    CHECK(c.set_limits_status == RD_ERR_INVALID_ARGUMENT);
    for (size_t i = 0; i < c.n; i++) CHECK(c.iterations[i] == 6);
    /* Outside a generation there is nothing to change. */
    CHECK_STATUS(rd_set_compute_limits(s, &l), RD_ERR_INVALID_STATE);
    rd_session_free(s);
}

/* Writes a minimal valid GGUF v3 file of architecture `arch` (no tensors). */
static int write_other_arch_gguf(const char *path, const char *arch) {
    unsigned char buf[256];
    size_t n = 0;
#define PUT(p, len) (memcpy(buf + n, (p), (len)), n += (len))
    uint32_t version = 3, ty_string = 8;
    uint64_t n_tensors = 0, n_kv = 1;
    const char *key = "general.architecture";
    uint64_t key_len = strlen(key), arch_len = strlen(arch);
    PUT("GGUF", 4);
    PUT(&version, 4);
    PUT(&n_tensors, 8);
    PUT(&n_kv, 8);
    PUT(&key_len, 8);
    PUT(key, key_len);
    PUT(&ty_string, 4);
    PUT(&arch_len, 8);
    PUT(arch, arch_len);
#undef PUT
    while (n % 32) buf[n++] = 0;
    return rdt_write_file(path, buf, n);
}

static bool count_iterations_cb(const rd_token_event *ev, void *user_data) {
    uint32_t *counts = user_data; /* [tokens, tokens with iterations != 1] */
    counts[0]++;
    if (ev->iterations != 1) counts[1]++;
    return true;
}

/* A plain llama GGUF (SmolLM2-135M-Instruct) runs without recurrence: one
 * pass per token whatever the iteration limits, exit criteria refused. */
static void test_llama_without_recurrence(void) {
    const char *smol = getenv("RD_SMOLLM2_GGUF");
    struct stat sb;
    if (!(smol && *smol && stat(smol, &sb) == 0)) {
        const char *req = getenv("RD_REQUIRE_SMOLLM2");
        printf("     note: SmolLM2 GGUF not found (set RD_SMOLLM2_GGUF); skipped\n");
        CHECK(!(req && strcmp(req, "1") == 0));
        return;
    }
    rd_model *m = load_model(smol);
    if (!m) return;
    rd_model_info info = {.struct_size = sizeof info};
    REQUIRE_OK(rd_model_get_info(m, &info));
    CHECK(strcmp(info.architecture, "llama") == 0);
    CHECK(info.n_core == 0 && info.n_coda == 0 && info.n_prelude == 30);
    CHECK(info.default_iterations == 1 && info.n_vocab == 49152);
    const char *text = "The capital of France is";
    rd_token prompt[32];
    size_t n_prompt = 0;
    CHECK_STATUS(rd_tokenize(m, text, strlen(text), 0, prompt, 32, &n_prompt), RD_OK);
    CHECK(n_prompt > 0 && n_prompt < 32);
    rd_session *s = new_session(m, 256, 1);
    rd_model_free(m);
    if (!s) return;
    rd_compute_limits l = rd_compute_limits_default();
    l.min_iterations = 4;
    l.max_iterations = 16;
    rd_generate_params gp = rd_generate_default_params();
    gp.limits = &l;
    gp.max_tokens = 8;
    uint32_t counts[2] = {0, 0};
    rd_generate_stats st = {.struct_size = sizeof st};
    REQUIRE_OK(rd_generate(s, prompt, n_prompt, &gp, count_iterations_cb, counts, &st));
    CHECK(counts[0] == 8 && counts[1] == 0 && st.n_tokens == 8);
    l.exit_criterion = RD_EXIT_KL;
    l.exit_threshold = 5e-4;
    CHECK_STATUS(rd_generate(s, NULL, 0, &gp, count_iterations_cb, counts, NULL),
                 RD_ERR_INVALID_ARGUMENT);
    CHECK(strstr(rd_last_error(), "no recurrence") != NULL);
    l.exit_criterion = RD_EXIT_NONE;
    counts[0] = 0;
    REQUIRE_OK(rd_generate(s, NULL, 0, &gp, count_iterations_cb, counts, NULL));
    CHECK(counts[0] == 8 && counts[1] == 0);
    rd_session_free(s);
}

/* (c) bad inputs: each gives its code, leaves outputs alone, and leaves the
 * process and the session usable. */
static void test_bad_model_files(void) {
    char p[4096];
    rd_model_params mp = rd_model_default_params();
    mp.backend = RD_BACKEND_CPU;
    rd_model *sentinel = (rd_model *)(uintptr_t)0x1234;
    rd_model *m = sentinel;

    CHECK_STATUS(rd_model_load(NULL, &mp, &m), RD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(rd_model_load(g_model_path, NULL, &m), RD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(rd_model_load(g_model_path, &mp, NULL), RD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(rd_model_load("", &mp, &m), RD_ERR_INVALID_ARGUMENT);
    rd_model_params bad = mp;
    bad.struct_size = 3;
    CHECK_STATUS(rd_model_load(g_model_path, &bad, &m), RD_ERR_INVALID_ARGUMENT);
    bad = mp;
    bad.backend = 9;
    CHECK_STATUS(rd_model_load(g_model_path, &bad, &m), RD_ERR_INVALID_ARGUMENT);
    bad = mp;
    bad.n_threads = 100000;
    CHECK_STATUS(rd_model_load(g_model_path, &bad, &m), RD_ERR_INVALID_ARGUMENT);
    CHECK(m == sentinel);

    CHECK_STATUS(rd_model_load(rdt_path(p, sizeof p, "%s/does-not-exist.gguf", g_dir), &mp, &m),
                 RD_ERR_IO);
    CHECK(strstr(rd_last_error(), "does-not-exist.gguf") != NULL);
    CHECK_STATUS(rd_model_load(g_dir, &mp, &m), RD_ERR_IO);
    CHECK(strstr(rd_last_error(), "directory") != NULL);
    CHECK(m == sentinel);

    /* Devices and pipes are refused before anything is read, with and without
     * mmap: /dev/zero would be read forever, opening a FIFO blocks until a
     * writer comes. The alarm turns a hang into a visible failure. */
    const char *fifo = rdt_path(p, sizeof p, "%s/fifo.gguf", g_dir);
    unlink(fifo);
    CHECK(mkfifo(fifo, 0600) == 0);
    const char *specials[] = {"/dev/zero", "/dev/urandom", "/dev/null", fifo};
    alarm(20);
    for (int mm = 0; mm < 2; mm++) {
        rd_model_params sp = mp;
        sp.use_mmap = mm == 1;
        for (size_t i = 0; i < sizeof specials / sizeof specials[0]; i++) {
            CHECK_STATUS(rd_model_load(specials[i], &sp, &m), RD_ERR_IO);
            CHECK(strstr(rd_last_error(), "not a regular file") != NULL);
            CHECK(m == sentinel);
        }
    }
    alarm(0);
    unlink(fifo);

    size_t n = 0;
    unsigned char *bytes = rdt_read_file(g_model_path, &n);
    CHECK(bytes != NULL && n > 4096);
    if (!bytes) return;
    struct {
        const char *name;
        size_t len;
        long patch_at;
        unsigned char patch[8];
        size_t patch_len;
    } cases[] = {
        {"empty", 0, -1, {0}, 0},
        {"magic-only", 4, -1, {0}, 0},
        {"header-only", 64, -1, {0}, 0},
        {"half", n / 2, -1, {0}, 0},
        {"one-byte-short", n - 1, -1, {0}, 0},
        {"bad-magic", n, 0, {'G', 'G', 'U', 'X'}, 4},
        {"bad-version", n, 4, {99, 0, 0, 0}, 4},
        {"huge-tensor-count", n, 8, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, 8},
        {"huge-kv-count", n, 16, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f}, 8},
        {"huge-key-length", n, 24, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0}, 8},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        rdt_path(p, sizeof p, "%s/bad-%s.gguf", g_dir, cases[i].name);
        if (cases[i].patch_at >= 0)
            memcpy(bytes + cases[i].patch_at, cases[i].patch, cases[i].patch_len);
        CHECK(rdt_write_file(p, bytes, cases[i].len));
        if (cases[i].patch_at >= 0) { /* restore */
            unsigned char *orig = rdt_read_file(g_model_path, &n);
            if (orig) {
                memcpy(bytes, orig, n);
                free(orig);
            }
        }
        for (int mmap_mode = 0; mmap_mode < 2; mmap_mode++) {
            mp.use_mmap = mmap_mode;
            rd_status s = rd_model_load(p, &mp, &m);
            if (s != RD_ERR_INVALID_MODEL) {
                fprintf(stderr, "    %s (mmap %d): %s: %s\n", cases[i].name, mmap_mode,
                        rd_status_string(s), rd_last_error());
                CHECK(s == RD_ERR_INVALID_MODEL);
            }
        }
        mp.use_mmap = true;
    }
    free(bytes);
    CHECK(m == sentinel);

    /* Valid GGUF files of another architecture. */
    rdt_path(p, sizeof p, "%s/llama-arch.gguf", g_dir);
    CHECK(write_other_arch_gguf(p, "gpt2"));
    CHECK_STATUS(rd_model_load(p, &mp, &m), RD_ERR_UNSUPPORTED_ARCHITECTURE);
    CHECK(strstr(rd_last_error(), "gpt2") != NULL);
    /* A llama file without its keys and tensors is a bad llama model. */
    CHECK(write_other_arch_gguf(p, "llama"));
    CHECK_STATUS(rd_model_load(p, &mp, &m), RD_ERR_INVALID_MODEL);
    CHECK(m == sentinel);

    /* The process is fine: the good file still loads. */
    m = load_model(g_model_path);
    CHECK(m != NULL);
    rd_model_free(m);
    rd_model_free(NULL);
}

static void test_bad_arguments(void) {
    rd_model *m = load_model(g_model_path);
    if (!m) {
        CHECK(m != NULL);
        return;
    }
    rd_token ref[8];
    size_t n_ref = reference_tokens(m, PROMPT, N_PROMPT, 8, ref);
    CHECK(n_ref == 8);

    /* Model info. */
    rd_model_info info = {.struct_size = sizeof info};
    CHECK_STATUS(rd_model_get_info(NULL, &info), RD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(rd_model_get_info(m, NULL), RD_ERR_INVALID_ARGUMENT);
    info.struct_size = 0;
    CHECK_STATUS(rd_model_get_info(m, &info), RD_ERR_INVALID_ARGUMENT);
    info.struct_size = sizeof info + 8;
    CHECK_STATUS(rd_model_get_info(m, &info), RD_ERR_INVALID_ARGUMENT);

    /* Session creation. */
    rd_session_params sp = rd_session_default_params();
    rd_session *sentinel = (rd_session *)(uintptr_t)0x5678;
    rd_session *s = sentinel;
    CHECK_STATUS(rd_session_new(NULL, &sp, &s), RD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(rd_session_new(m, NULL, &s), RD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(rd_session_new(m, &sp, NULL), RD_ERR_INVALID_ARGUMENT);
    uint32_t bad_ctx[] = {0, MODEL_CTX + 1, 1u << 30, 0xFFFFFFFEu};
    for (size_t i = 0; i < sizeof bad_ctx / sizeof bad_ctx[0]; i++) {
        sp = rd_session_default_params();
        sp.n_ctx = bad_ctx[i];
        CHECK_STATUS(rd_session_new(m, &sp, &s), RD_ERR_INVALID_ARGUMENT);
    }
    sp = rd_session_default_params();
    sp.kv_budget = 0;
    CHECK_STATUS(rd_session_new(m, &sp, &s), RD_ERR_INVALID_ARGUMENT);
    sp.kv_budget = 5000;
    CHECK_STATUS(rd_session_new(m, &sp, &s), RD_ERR_INVALID_ARGUMENT);
    sp = rd_session_default_params();
    sp.kv_type = 3;
    CHECK_STATUS(rd_session_new(m, &sp, &s), RD_ERR_INVALID_ARGUMENT);
    sp = rd_session_default_params();
    sp.state_init = 3;
    CHECK_STATUS(rd_session_new(m, &sp, &s), RD_ERR_INVALID_ARGUMENT);
    sp = rd_session_default_params();
    sp.struct_size = 0;
    CHECK_STATUS(rd_session_new(m, &sp, &s), RD_ERR_INVALID_ARGUMENT);
    CHECK(s == sentinel);

    s = new_session(m, MODEL_CTX, 1);
    if (!s) {
        CHECK(s != NULL);
        rd_model_free(m);
        return;
    }
    /* rd_generate: NULLs. */
    rd_generate_params gp = rd_generate_default_params();
    rd_generate_stats st = {.struct_size = sizeof st};
    collect_t c;
    collect_init(&c, s);
    CHECK_STATUS(rd_generate(NULL, PROMPT, N_PROMPT, &gp, collect_cb, &c, &st),
                 RD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(rd_generate(s, NULL, 3, &gp, collect_cb, &c, &st), RD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(rd_generate(s, PROMPT, N_PROMPT, NULL, collect_cb, &c, &st),
                 RD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(rd_generate(s, NULL, 0, &gp, collect_cb, &c, &st), RD_ERR_INVALID_ARGUMENT);
    gp.stop_tokens = NULL;
    gp.n_stop_tokens = 2;
    CHECK_STATUS(rd_generate(s, PROMPT, N_PROMPT, &gp, collect_cb, &c, &st),
                 RD_ERR_INVALID_ARGUMENT);
    gp = rd_generate_default_params();
    gp.struct_size = 1;
    CHECK_STATUS(rd_generate(s, PROMPT, N_PROMPT, &gp, collect_cb, &c, &st),
                 RD_ERR_INVALID_ARGUMENT);

    /* rd_generate: out-of-range limits, each rejected before anything runs. */
    struct {
        const char *name;
        uint32_t min, max, every, crit;
        double thr;
    } lim[] = {
        {"max 0", 1, 0, 1, RD_EXIT_NONE, 0},
        {"min 0", 0, 4, 1, RD_EXIT_NONE, 0},
        {"min > max", 5, 4, 1, RD_EXIT_NONE, 0},
        {"max > 4096", 1, 5000, 1, RD_EXIT_NONE, 0},
        {"NaN threshold", 1, 4, 1, RD_EXIT_KL, NAN},
        {"negative threshold", 1, 4, 1, RD_EXIT_KL, -1e-3},
        {"negative latent threshold", 1, 4, 1, RD_EXIT_LATENT_DIFF, -0.5},
        {"fractional argmax threshold", 1, 4, 1, RD_EXIT_ARGMAX_STABILITY, 0.5},
        {"unknown criterion", 1, 4, 1, 42, 1e-3},
    };
    for (size_t i = 0; i < sizeof lim / sizeof lim[0]; i++) {
        rd_compute_limits l = rd_compute_limits_default();
        l.min_iterations = lim[i].min;
        l.max_iterations = lim[i].max;
        l.check_every = lim[i].every;
        l.exit_criterion = lim[i].crit;
        l.exit_threshold = lim[i].thr;
        gp = rd_generate_default_params();
        gp.limits = &l;
        rd_status r = rd_generate(s, PROMPT, N_PROMPT, &gp, collect_cb, &c, &st);
        if (r != RD_ERR_INVALID_ARGUMENT)
            fprintf(stderr, "    limits '%s': %s\n", lim[i].name, rd_status_string(r));
        CHECK(r == RD_ERR_INVALID_ARGUMENT);
    }
    /* check_every 0: chosen by the library (from 0.3). */
    rd_compute_limits autol = rd_compute_limits_default();
    autol.min_iterations = 2;
    autol.max_iterations = 12;
    autol.check_every = 0;
    autol.exit_criterion = RD_EXIT_KL;
    autol.exit_threshold = rd_exit_default_threshold(RD_EXIT_KL);
    gp = rd_generate_default_params();
    gp.limits = &autol;
    gp.max_tokens = 4;
    collect_init(&c, s);
    CHECK_STATUS(rd_generate(s, PROMPT, N_PROMPT, &gp, collect_cb, &c, &st), RD_OK);
    for (size_t i = 0; i < c.n; i++) CHECK(c.iterations[i] >= 2 && c.iterations[i] <= 12);
    rd_session_reset(s);
    collect_init(&c, s);
    rd_compute_limits l = rd_compute_limits_default();
    l.struct_size = sizeof l - 1;
    gp = rd_generate_default_params();
    gp.limits = &l;
    CHECK_STATUS(rd_generate(s, PROMPT, N_PROMPT, &gp, collect_cb, &c, &st),
                 RD_ERR_INVALID_ARGUMENT);

    /* rd_generate: sampling out of range. */
    rd_sampling_params smp = rd_sampling_default_params();
    gp = rd_generate_default_params();
    gp.sampling = &smp;
    smp.temperature = NAN;
    CHECK_STATUS(rd_generate(s, PROMPT, N_PROMPT, &gp, collect_cb, &c, &st),
                 RD_ERR_INVALID_ARGUMENT);
    smp = rd_sampling_default_params();
    smp.top_p = 0.0f;
    CHECK_STATUS(rd_generate(s, PROMPT, N_PROMPT, &gp, collect_cb, &c, &st),
                 RD_ERR_INVALID_ARGUMENT);
    smp = rd_sampling_default_params();
    smp.repeat_penalty = -1.0f;
    CHECK_STATUS(rd_generate(s, PROMPT, N_PROMPT, &gp, collect_cb, &c, &st),
                 RD_ERR_INVALID_ARGUMENT);

    /* Token ids out of range, in the prompt and among the stop tokens. */
    gp = rd_generate_default_params();
    rd_token bad_prompt[] = {1, 2, N_VOCAB};
    CHECK_STATUS(rd_generate(s, bad_prompt, 3, &gp, collect_cb, &c, &st),
                 RD_ERR_INVALID_ARGUMENT);
    rd_token huge_prompt[] = {0xFFFFFFFFu};
    CHECK_STATUS(rd_generate(s, huge_prompt, 1, &gp, collect_cb, &c, &st),
                 RD_ERR_INVALID_ARGUMENT);
    rd_token stop = N_VOCAB + 7;
    gp.stop_tokens = &stop;
    gp.n_stop_tokens = 1;
    CHECK_STATUS(rd_generate(s, PROMPT, N_PROMPT, &gp, collect_cb, &c, &st),
                 RD_ERR_INVALID_ARGUMENT);
    gp = rd_generate_default_params();
    gp.prefill_iterations = 5000;
    CHECK_STATUS(rd_generate(s, PROMPT, N_PROMPT, &gp, collect_cb, &c, &st),
                 RD_ERR_INVALID_ARGUMENT);
    /* A bad out_stats is detected before anything runs. */
    gp = rd_generate_default_params();
    rd_generate_stats bad_st = {.struct_size = 4};
    CHECK_STATUS(rd_generate(s, PROMPT, N_PROMPT, &gp, collect_cb, &c, &bad_st),
                 RD_ERR_INVALID_ARGUMENT);
    CHECK(bad_st.struct_size == 4 && bad_st.n_tokens == 0);
    CHECK(c.n == 0); /* no call above generated anything */
    rd_session_info si = {.struct_size = sizeof si};
    REQUIRE_OK(rd_session_get_info(s, &si));
    CHECK(si.n_past == 0);

    /* rd_eval / rd_eval_all_logits / rd_get_logits. */
    float logits[N_VOCAB];
    size_t len = 99;
    CHECK_STATUS(rd_eval(NULL, PROMPT, N_PROMPT, 8), RD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(rd_eval(s, NULL, N_PROMPT, 8), RD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(rd_eval(s, PROMPT, 0, 8), RD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(rd_eval(s, PROMPT, N_PROMPT, 0), RD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(rd_eval(s, PROMPT, N_PROMPT, 5000), RD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(rd_eval(s, bad_prompt, 3, 8), RD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(rd_eval(s, PROMPT, SIZE_MAX, 8), RD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(rd_eval_all_logits(s, PROMPT, N_PROMPT, 8, NULL, 10000), RD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(rd_get_logits(NULL, logits, N_VOCAB, &len), RD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(rd_get_logits(s, logits, N_VOCAB, NULL), RD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(rd_get_logits(s, NULL, N_VOCAB, &len), RD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(rd_get_logits(s, logits, N_VOCAB, &len), RD_ERR_INVALID_STATE);
    CHECK(len == 99);

    /* Session calls with NULLs. */
    l = rd_compute_limits_default();
    CHECK_STATUS(rd_set_compute_limits(NULL, &l), RD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(rd_set_compute_limits(s, NULL), RD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(rd_cancel(NULL), RD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(rd_session_reset(NULL), RD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(rd_session_get_info(NULL, &si), RD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(rd_session_get_info(s, NULL), RD_ERR_INVALID_ARGUMENT);
    rd_session_free(NULL);

    /* Re-entrant calls from the token callback are refused, not raced. */
    collect_init(&c, s);
    c.reenter_at = 1;
    rd_compute_limits fixed = fixed_limits(8);
    CHECK_STATUS(generate(s, PROMPT, N_PROMPT, &fixed, 8, &c, &st), RD_OK);
    CHECK(c.n == 8 && memcmp(c.tokens, ref, sizeof ref) == 0);
    CHECK(c.reenter[0] == RD_ERR_BUSY);
    CHECK(c.reenter[1] == RD_ERR_BUSY);
    CHECK(c.reenter[2] == RD_ERR_BUSY);
    CHECK(c.reenter[3] == RD_ERR_BUSY);

    /* After all of that the session still produces the reference tokens. */
    CHECK(session_still_works(s, ref, n_ref));
    rd_session_free(s);
    rd_model_free(m);
}

static void test_model_load_options(void) {
    char p[4096];
    rd_model_params mp = rd_model_default_params();
    mp.backend = RD_BACKEND_CPU;
    rd_model *m = NULL;
    /* Without mmap. */
    mp.use_mmap = false;
    CHECK_STATUS(rd_model_load(g_model_path, &mp, &m), RD_OK);
    rd_model_free(m);
    /* mlock: works where allowed (root, or RLIMIT_MEMLOCK), else RD_ERR_IO. */
    mp = rd_model_default_params();
    mp.backend = RD_BACKEND_CPU;
    mp.use_mlock = true;
    m = NULL;
    rd_status s = rd_model_load(g_model_path, &mp, &m);
    printf("     use_mlock: %s\n", rd_status_string(s));
    CHECK(s == RD_OK || s == RD_ERR_IO);
    rd_model_free(m);
    /* Only a mapped file can be locked. */
    mp.use_mmap = false;
    m = NULL;
    CHECK_STATUS(rd_model_load(g_model_path, &mp, &m), RD_ERR_UNSUPPORTED);
    CHECK(m == NULL);
    /* No GPU in this build or machine: a clear backend error, not a crash. */
    mp = rd_model_default_params();
    mp.backend = RD_BACKEND_GPU;
    m = NULL;
    s = rd_model_load(g_model_path, &mp, &m);
    printf("     RD_BACKEND_GPU: %s\n", rd_status_string(s));
    CHECK(s == RD_OK || s == RD_ERR_BACKEND);
    rd_model_free(m);
    /* Explicit device choices: Vulkan device 1000 never exists; Metal exists
     * only in Metal builds on Apple machines. */
    mp = rd_model_default_params();
    mp.backend = RD_BACKEND_VULKAN;
    mp.device_index = 1000;
    m = NULL;
    CHECK_STATUS(rd_model_load(g_model_path, &mp, &m), RD_ERR_BACKEND);
    CHECK(m == NULL);
    mp.backend = RD_BACKEND_METAL;
    mp.device_index = 0;
    s = rd_model_load(g_model_path, &mp, &m);
    printf("     RD_BACKEND_METAL: %s\n", rd_status_string(s));
    CHECK(s == RD_OK || s == RD_ERR_BACKEND);
    rd_model_free(m);
    m = NULL;
    /* device_index with a backend that has no index; an unknown backend. */
    mp = rd_model_default_params();
    mp.backend = RD_BACKEND_CPU;
    mp.device_index = 1;
    CHECK_STATUS(rd_model_load(g_model_path, &mp, &m), RD_ERR_INVALID_ARGUMENT);
    mp.device_index = 0;
    mp.backend = 99;
    CHECK_STATUS(rd_model_load(g_model_path, &mp, &m), RD_ERR_INVALID_ARGUMENT);
    CHECK(m == NULL);
    /* Repacking: off, an unknown value, and a 0.2 caller (no repack field). */
    mp = rd_model_default_params();
    CHECK(mp.repack == RD_REPACK_AUTO);
    mp.backend = RD_BACKEND_CPU;
    mp.repack = 7;
    CHECK_STATUS(rd_model_load(g_model_path, &mp, &m), RD_ERR_INVALID_ARGUMENT);
    CHECK(m == NULL);
    mp.repack = RD_REPACK_OFF;
    CHECK_STATUS(rd_model_load(g_model_path, &mp, &m), RD_OK);
    if (m) {
        rd_model_info ri = {.struct_size = sizeof ri};
        CHECK_STATUS(rd_model_get_info(m, &ri), RD_OK);
        CHECK(ri.repacked_bytes == 0);
        CHECK(ri.weights_mapped);
    }
    rd_model_free(m);
    m = NULL;
    mp.repack = 7; /* beyond the declared size: must be ignored */
    mp.struct_size = offsetof(rd_model_params, repack);
    CHECK_STATUS(rd_model_load(g_model_path, &mp, &m), RD_OK);
    rd_model_free(m);
    m = NULL;
    /* 0.4: prefetch off maps lazily (same model); a 0.3 caller (56 bytes,
     * garbage where prefetch is) gets the default. */
    mp = rd_model_default_params();
    CHECK(mp.prefetch);
    mp.backend = RD_BACKEND_CPU;
    mp.prefetch = false;
    CHECK_STATUS(rd_model_load(g_model_path, &mp, &m), RD_OK);
    rd_model_free(m);
    m = NULL;
    memset(&mp.prefetch, 0x5a, sizeof mp.prefetch);
    mp.struct_size = offsetof(rd_model_params, prefetch);
    CHECK(mp.struct_size == 56 || sizeof(void *) != 8);
    CHECK_STATUS(rd_model_load(g_model_path, &mp, &m), RD_OK);
    rd_model_free(m);
    m = NULL;
    /* A caller built against the 0.1 header (no device_index) still loads. */
    mp = rd_model_default_params();
    mp.backend = RD_BACKEND_CPU;
    mp.device_index = 7; /* beyond the declared size: must be ignored */
    mp.struct_size = offsetof(rd_model_params, device_index);
    CHECK_STATUS(rd_model_load(g_model_path, &mp, &m), RD_OK);
    rd_model_info info = {.struct_size = sizeof info};
    if (m) {
        CHECK_STATUS(rd_model_get_info(m, &info), RD_OK);
        CHECK(info.backend == RD_BACKEND_CPU && info.device_index == 0);
        CHECK(info.device_description != NULL && strlen(info.device_description) > 0);
        rd_session *ses = new_session(m, 64, 1);
        if (ses) {
            rd_session_info si = {.struct_size = sizeof si};
            CHECK_STATUS(rd_session_get_info(ses, &si), RD_OK);
            CHECK(si.graph_splits == 1); /* everything on the CPU */
            rd_session_free(ses);
        }
    }
    rd_model_free(m);
    (void)p;
}

static void count_log(rd_log_level level, const char *message, void *user_data) {
    (void)level;
    (void)message;
    (*(int *)user_data)++;
}

/* rd_log_set: levels are validated; a callback and the default can be set
 * and the library keeps working under both. */
static void test_log_settings(void) {
    int n = 0;
    CHECK_STATUS(rd_log_set(count_log, &n, 0), RD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(rd_log_set(count_log, &n, 5), RD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(rd_log_set(count_log, &n, RD_LOG_DEBUG), RD_OK);
    rd_model *m = load_model(g_model_path);
    CHECK(m != NULL);
    rd_session *s = m ? new_session(m, 64, 1) : NULL;
    if (s) {
        CHECK_STATUS(rd_eval(s, PROMPT, N_PROMPT, 2), RD_OK);
        rd_session_free(s);
    }
    rd_model_free(m);
    printf("     %d ggml messages at debug level on this backend\n", n);
    CHECK_STATUS(rd_log_set(NULL, NULL, RD_LOG_WARN), RD_OK);
}

/* exit_place: the KL and confidence values computed inside the graph give
 * the same tokens and iterations as on the host; unknown places and old
 * struct sizes. */
static void test_exit_place(void) {
    rd_model *m = load_model(g_model_path);
    if (!m) {
        CHECK(m != NULL);
        return;
    }
    const rd_exit_criterion criteria[2] = {RD_EXIT_KL, RD_EXIT_CONFIDENCE};
    for (int c = 0; c < 2; c++) {
        rd_compute_limits lim = fixed_limits(24);
        lim.min_iterations = 2;
        lim.exit_criterion = criteria[c];
        lim.exit_threshold = rd_exit_default_threshold(criteria[c]);
        static collect_t runs[2];
        const rd_exit_place places[2] = {RD_EXIT_PLACE_HOST, RD_EXIT_PLACE_DEVICE};
        for (int k = 0; k < 2; k++) {
            rd_session_params sp = rd_session_default_params();
            sp.n_ctx = 64;
            sp.exit_place = places[k];
            rd_session *s = NULL;
            CHECK_STATUS(rd_session_new(m, &sp, &s), RD_OK);
            if (!s) continue;
            rd_generate_stats st = {.struct_size = sizeof st};
            collect_init(&runs[k], s);
            CHECK_STATUS(generate(s, PROMPT, N_PROMPT, &lim, 12, &runs[k], &st), RD_OK);
            rd_session_free(s);
        }
        CHECK(runs[0].n == runs[1].n && runs[0].n == 12);
        int exits = 0;
        for (size_t i = 0; i < runs[0].n && i < runs[1].n; i++) {
            CHECK(runs[0].tokens[i] == runs[1].tokens[i]);
            CHECK(runs[0].iterations[i] == runs[1].iterations[i]);
            if (runs[0].iterations[i] < 24) exits++;
            if (!isnan(runs[0].exit_values[i]))
                CHECK(fabs(runs[0].exit_values[i] - runs[1].exit_values[i]) <=
                      1e-3 * fabs(runs[0].exit_values[i]) + 1e-6);
        }
        printf("     %s: %d of %zu tokens exited early, same on host and in graph\n",
               c == 0 ? "kl" : "confidence", exits, runs[0].n);
    }
    rd_session_params bad = rd_session_default_params();
    bad.exit_place = 3;
    rd_session *s = NULL;
    CHECK_STATUS(rd_session_new(m, &bad, &s), RD_ERR_INVALID_ARGUMENT);
    bad.exit_place = 3; /* beyond an 0.1 caller's struct: ignored */
    bad.struct_size = offsetof(rd_session_params, exit_place);
    bad.n_ctx = 64;
    CHECK_STATUS(rd_session_new(m, &bad, &s), RD_OK);
    rd_session_free(s);
    s = NULL;
    /* Thread polling: out of range is refused; 0.2 callers get the default. */
    bad = rd_session_default_params();
    CHECK(bad.thread_poll == 50);
    bad.n_ctx = 64;
    bad.thread_poll = 101;
    CHECK_STATUS(rd_session_new(m, &bad, &s), RD_ERR_INVALID_ARGUMENT);
    CHECK(s == NULL);
    bad.struct_size = offsetof(rd_session_params, thread_poll);
    CHECK_STATUS(rd_session_new(m, &bad, &s), RD_OK);
    rd_session_free(s);
    s = NULL;
    /* Attention: an unknown value is refused; fused and separate generate the
     * same tokens (F32 cache: they differ in rounding only). */
    bad = rd_session_default_params();
    CHECK(bad.attention == RD_ATTENTION_AUTO);
    bad.n_ctx = 64;
    bad.attention = 9;
    CHECK_STATUS(rd_session_new(m, &bad, &s), RD_ERR_INVALID_ARGUMENT);
    CHECK(s == NULL);
    static collect_t att[2];
    const rd_attention kinds[2] = {RD_ATTENTION_FUSED, RD_ATTENTION_SEPARATE};
    for (int k = 0; k < 2; k++) {
        bad.attention = kinds[k];
        s = NULL;
        CHECK_STATUS(rd_session_new(m, &bad, &s), RD_OK);
        if (!s) continue;
        rd_compute_limits fixed = fixed_limits(6);
        collect_init(&att[k], s);
        CHECK_STATUS(generate(s, PROMPT, N_PROMPT, &fixed, 10, &att[k], NULL), RD_OK);
        rd_session_free(s);
    }
    CHECK(att[0].n == 10 && att[1].n == 10);
    for (size_t i = 0; i < att[0].n && i < att[1].n; i++) CHECK(att[0].tokens[i] == att[1].tokens[i]);
    rd_model_free(m);
}

/* Device enumeration: the CPU is always listed; bad indices and NULL fail. */
static void test_devices(void) {
    uint32_t n = rd_device_count();
    CHECK(n >= 1);
    bool saw_cpu = false;
    for (uint32_t i = 0; i < n; i++) {
        rd_device_info d = {.struct_size = sizeof d};
        CHECK_STATUS(rd_device_get_info(i, &d), RD_OK);
        CHECK(d.name && d.description && d.api);
        printf("     device %u: %s (%s, %s) backend %u index %u, %llu MiB\n", i, d.name, d.api,
               d.description, d.backend, d.device_index,
               (unsigned long long)(d.memory_total >> 20));
        if (d.is_cpu) {
            saw_cpu = true;
            CHECK(d.backend == RD_BACKEND_CPU && d.maps_host_memory);
        } else {
            CHECK(d.backend == RD_BACKEND_VULKAN || d.backend == RD_BACKEND_METAL);
        }
    }
    CHECK(saw_cpu);
    rd_device_info d = {.struct_size = sizeof d};
    CHECK_STATUS(rd_device_get_info(n, &d), RD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(rd_device_get_info(0, NULL), RD_ERR_INVALID_ARGUMENT);
    d.struct_size = 3;
    CHECK_STATUS(rd_device_get_info(0, &d), RD_ERR_INVALID_ARGUMENT);
}

typedef struct {
    int calls;
    float values[8];
    int cancel_at;
} progress_t;

static bool progress_cb(float progress, void *user_data) {
    progress_t *pr = user_data;
    if (pr->calls < 8) pr->values[pr->calls] = progress;
    return pr->calls++ != pr->cancel_at;
}

static void test_progress_callback(void) {
    rd_model_params mp = rd_model_default_params();
    mp.backend = RD_BACKEND_CPU;
    progress_t pr = {.cancel_at = -1};
    mp.progress_callback = progress_cb;
    mp.progress_user_data = &pr;
    rd_model *m = NULL;
    REQUIRE_OK(rd_model_load(g_model_path, &mp, &m));
    /* 0 before opening, 0.5 parsed, then (prefetching the mapped weights)
     * one report per tensor, increasing, up to 0.95 placed and 1 done. */
    CHECK(pr.calls > 8 && pr.values[0] == 0.0f && pr.values[1] == 0.5f);
    for (int i = 1; i < 8; i++) CHECK(pr.values[i] >= pr.values[i - 1]);
    rd_model_free(m);
    /* Mapped lazily: nothing to report between parsing and placing. */
    progress_t lazy = {.cancel_at = -1};
    mp.prefetch = false;
    mp.progress_user_data = &lazy;
    REQUIRE_OK(rd_model_load(g_model_path, &mp, &m));
    CHECK(lazy.calls == 4 && lazy.values[0] == 0.0f && lazy.values[1] == 0.5f &&
          lazy.values[2] == 0.95f && lazy.values[3] == 1.0f);
    rd_model_free(m);
    mp.prefetch = true;
    /* Without mmap: increasing values (per tensor when the weights are
     * copied to a device), ending at 1. */
    progress_t up = {.cancel_at = -1};
    mp.use_mmap = false;
    mp.progress_user_data = &up;
    REQUIRE_OK(rd_model_load(g_model_path, &mp, &m));
    CHECK(up.calls >= 4);
    for (int i = 1; i < up.calls && i < 8; i++) CHECK(up.values[i] >= up.values[i - 1]);
    CHECK(up.calls > 8 || up.values[up.calls - 1] == 1.0f);
    rd_model_free(m);
    mp.use_mmap = true;
    for (int at = 0; at < 4; at++) {
        progress_t c = {.cancel_at = at};
        mp.progress_user_data = &c;
        m = NULL;
        CHECK_STATUS(rd_model_load(g_model_path, &mp, &m), RD_ERR_CANCELLED);
        CHECK(m == NULL && c.calls == at + 1);
    }
}

/* (d) cancellation from a second thread. */
typedef struct {
    rd_session *session;
    atomic_int *started;
    long delay_ms;
    double cancelled_at;
} canceller_t;

static void *canceller(void *arg) {
    canceller_t *k = arg;
    while (!atomic_load(k->started)) sleep_ms(1);
    sleep_ms(k->delay_ms);
    k->cancelled_at = now_seconds();
    rd_cancel(k->session);
    return NULL;
}

typedef struct {
    rd_session *session;
    atomic_int started;
    rd_status status;
} evaler_t;

static void *long_eval(void *arg) {
    evaler_t *e = arg;
    rd_token toks[64] = {0};
    atomic_store(&e->started, 1);
    e->status = rd_eval(e->session, toks, 64, getenv("RD_TEST_SLOW") ? 512 : 4096);
    return NULL;
}

static void test_cancel_from_another_thread(void) {
    rd_model *m = load_model(g_model_path);
    if (!m) {
        CHECK(m != NULL);
        return;
    }
    rd_token ref[8];
    size_t n_ref = reference_tokens(m, PROMPT, N_PROMPT, 8, ref);
    rd_session *s = new_session(m, MODEL_CTX, 1);
    rd_model_free(m);
    if (!s) {
        CHECK(s != NULL);
        return;
    }
    /* Tokens of 2048 iterations each (256 under valgrind, where one takes
     * seconds): cancelled in the middle of one. Were the cancel lost, the
     * call would run all 100 tokens and the checks below would fail. */
    int slow = getenv("RD_TEST_SLOW") != NULL;
    rd_compute_limits l = fixed_limits(slow ? 256 : 2048);
    l.min_iterations = 1;
    collect_t c;
    collect_init(&c, s);
    canceller_t k = {.session = s, .started = &c.started, .delay_ms = 30};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, canceller, &k) == 0);
    rd_generate_stats st = {.struct_size = sizeof st};
    rd_generate_params gp = rd_generate_default_params();
    gp.limits = &l;
    gp.max_tokens = 100;
    gp.prefill_iterations = 4;
    double t0 = now_seconds();
    rd_status r = rd_generate(s, PROMPT, N_PROMPT, &gp, collect_cb, &c, &st);
    double t_end = now_seconds();
    pthread_join(th, NULL);
    CHECK_STATUS(r, RD_ERR_CANCELLED);
    CHECK(c.n >= 1 && c.n < 100);
    CHECK(st.n_tokens == 0); /* outputs are written only on success */
    double latency = t_end - k.cancelled_at;
    printf("     cancelled after %zu tokens; returned %.1f ms after rd_cancel (run %.0f ms)\n",
           c.n, latency * 1e3, (t_end - t0) * 1e3);
    CHECK(latency < (slow ? 5.0 : 0.5));

    /* The session is usable: its logits are gone, a reset starts over. */
    float logits[N_VOCAB];
    size_t len;
    CHECK_STATUS(rd_get_logits(s, logits, N_VOCAB, &len), RD_ERR_INVALID_STATE);
    CHECK_STATUS(generate(s, NULL, 0, &l, 1, &c, NULL), RD_ERR_INVALID_STATE);
    CHECK(session_still_works(s, ref, n_ref));

    /* A cancel while nothing runs does not cancel the next call. */
    REQUIRE_OK(rd_cancel(s));
    CHECK(session_still_works(s, ref, n_ref));

    /* Cancel from inside the callback. */
    REQUIRE_OK(rd_session_reset(s));
    collect_init(&c, s);
    c.cancel_at = 2;
    rd_compute_limits f8 = fixed_limits(8);
    CHECK_STATUS(generate(s, PROMPT, N_PROMPT, &f8, 10, &c, NULL), RD_ERR_CANCELLED);
    CHECK(c.n == 3);

    /* Cancel a long rd_eval from another thread. */
    REQUIRE_OK(rd_session_reset(s));
    evaler_t e = {.session = s};
    atomic_init(&e.started, 0);
    k = (canceller_t){.session = s, .started = &e.started, .delay_ms = 50};
    pthread_t te, tk;
    CHECK(pthread_create(&te, NULL, long_eval, &e) == 0);
    CHECK(pthread_create(&tk, NULL, canceller, &k) == 0);
    pthread_join(te, NULL);
    pthread_join(tk, NULL);
    CHECK_STATUS(e.status, RD_ERR_CANCELLED);
    CHECK(session_still_works(s, ref, n_ref));
    rd_session_free(s);
}

/* (e) two sessions over one model, generating at once on two threads. */
typedef struct {
    rd_session *session;
    const rd_token *prompt;
    size_t n_prompt;
    collect_t c;
    rd_status status;
} worker_t;

static void *worker(void *arg) {
    worker_t *w = arg;
    rd_compute_limits l = fixed_limits(8);
    int rounds = getenv("RD_TEST_SLOW") ? 1 : 3;
    for (int round = 0; round < rounds && w->status == RD_OK; round++) {
        if (rd_session_reset(w->session) != RD_OK) w->status = RD_ERR_PANIC;
        collect_init(&w->c, w->session);
        w->status = generate(w->session, w->prompt, w->n_prompt, &l, 48, &w->c, NULL);
    }
    return NULL;
}

static void test_two_sessions_two_threads(void) {
    rd_model *m = load_model(g_model_path);
    if (!m) {
        CHECK(m != NULL);
        return;
    }
    static const rd_token p2[] = {200, 17, 99};
    rd_token ref1[48], ref2[48];
    CHECK(reference_tokens(m, PROMPT, N_PROMPT, 48, ref1) == 48);
    CHECK(reference_tokens(m, p2, 3, 48, ref2) == 48);
    worker_t w[2] = {{.prompt = PROMPT, .n_prompt = N_PROMPT}, {.prompt = p2, .n_prompt = 3}};
    for (int i = 0; i < 2; i++) {
        w[i].session = new_session(m, MODEL_CTX, 1);
        CHECK(w[i].session != NULL);
        if (!w[i].session) return;
    }
    rd_model_free(m); /* the sessions keep the weights alive */
    pthread_t th[2];
    for (int i = 0; i < 2; i++) CHECK(pthread_create(&th[i], NULL, worker, &w[i]) == 0);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < 2; i++) {
        CHECK_STATUS(w[i].status, RD_OK);
        CHECK(w[i].c.n == 48);
        CHECK(memcmp(w[i].c.tokens, i == 0 ? ref1 : ref2, sizeof ref1) == 0);
        rd_session_free(w[i].session);
    }
}

/* One session used from two threads at once is refused, not raced. */
typedef struct {
    rd_session *session;
    atomic_int *started;
    rd_status status;
} intruder_t;

static void *intruder(void *arg) {
    intruder_t *t = arg;
    while (!atomic_load(t->started)) sleep_ms(1);
    t->status = rd_eval(t->session, PROMPT, 1, 1);
    return NULL;
}

static void test_one_session_two_threads_is_busy(void) {
    rd_session *s = open_session(MODEL_CTX, 1);
    if (!s) return;
    collect_t c;
    collect_init(&c, s);
    c.sleep_ms_per_token = 20; /* the session is held while the callback sleeps */
    intruder_t t = {.session = s, .started = &c.started};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, intruder, &t) == 0);
    rd_compute_limits l = fixed_limits(4);
    CHECK_STATUS(generate(s, PROMPT, N_PROMPT, &l, 5, &c, NULL), RD_OK);
    pthread_join(th, NULL);
    CHECK_STATUS(t.status, RD_ERR_BUSY);
    rd_session_free(s);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s FIXTURE_DIR (holding model.gguf)\n", argv[0]);
        return 2;
    }
    g_dir = argv[1];
    rdt_path(g_model_path, sizeof g_model_path, "%s/model.gguf", g_dir);
    printf("recurrent-depth %s C API tests (%s)\n", rd_version(), argv[0]);
    RUN(test_version_and_status_strings);
    RUN(test_end_to_end_generation);
    RUN(test_sampling_seed_and_stop_tokens);
    RUN(test_speculative_decoding);
    RUN(test_context_limits);
    RUN(test_eval_and_logits);
    RUN(test_iteration_budget);
    RUN(test_bad_model_files);
    RUN(test_llama_without_recurrence);
    RUN(test_bad_arguments);
    RUN(test_model_load_options);
    RUN(test_devices);
    RUN(test_exit_place);
    RUN(test_log_settings);
    RUN(test_progress_callback);
    RUN(test_cancel_from_another_thread);
    RUN(test_two_sessions_two_threads);
    RUN(test_one_session_two_threads_is_busy);
    return FINISH();
}
