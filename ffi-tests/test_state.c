/*
 * C11 tests of what a mobile app needs beyond generation: loading a model
 * from a file descriptor range (an APK asset), saving and restoring a
 * session's state, truncating the cache, changing threads at run time, and
 * per-token log-probabilities.
 *
 * Usage: test_state FIXTURE_DIR
 * FIXTURE_DIR holds model.gguf and model-ctx512.gguf (the same random weights
 * with another context length: another model file of the same shape) made by
 * `rd make-test-model`; the tests write their own files there too.
 */
#define _POSIX_C_SOURCE 200809L

#include <fcntl.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rdtest.h"

#define N_VOCAB 256
#define MODEL_CTX 128
#define MAX_EVENTS 64

static const char *g_dir;
static char g_model_path[4096];
static char g_other_model_path[4096];
static const rd_token PROMPT[] = {1, 2, 3, 4, 5};
#define N_PROMPT (sizeof PROMPT / sizeof PROMPT[0])

/* ---------------------------------------------------------------- helpers */

static rd_model_params cpu_params(bool use_mmap) {
    rd_model_params mp = rd_model_default_params();
    mp.backend = RD_BACKEND_CPU;
    mp.n_threads = 1;
    mp.use_mmap = use_mmap;
    return mp;
}

static rd_model *load_path(const char *path) {
    rd_model_params mp = cpu_params(true);
    rd_model *m = NULL;
    rd_status s = rd_model_load(path, &mp, &m);
    if (s != RD_OK) fprintf(stderr, "    load %s: %s\n", path, rd_last_error());
    return m;
}

static rd_session *new_session(const rd_model *m, uint32_t n_ctx, uint32_t kv_budget) {
    rd_session_params sp = rd_session_default_params();
    sp.n_ctx = n_ctx;
    sp.kv_budget = kv_budget;
    rd_session *s = NULL;
    if (rd_session_new(m, &sp, &s) != RD_OK) {
        fprintf(stderr, "    session: %s\n", rd_last_error());
        return NULL;
    }
    return s;
}

typedef struct {
    rd_token tokens[MAX_EVENTS];
    float logprobs[MAX_EVENTS];
    size_t n;
    int bad;
} events_t;

static bool on_token(const rd_token_event *ev, void *user_data) {
    events_t *e = user_data;
    if (ev->struct_size < sizeof(rd_token_event) || ev->index != e->n) e->bad = 1;
    if (e->n < MAX_EVENTS) {
        e->tokens[e->n] = ev->token;
        e->logprobs[e->n] = ev->logprob;
    }
    e->n++;
    return true;
}

/* Generation with fixed 8 iterations (greedy unless `sp` is given). */
static rd_status gen(rd_session *s, const rd_token *prompt, size_t n_prompt, uint32_t n,
                     const rd_sampling_params *sp, events_t *e) {
    memset(e, 0, sizeof *e);
    rd_compute_limits l = rd_compute_limits_default();
    l.min_iterations = l.max_iterations = 8;
    rd_generate_params gp = rd_generate_default_params();
    gp.limits = &l;
    gp.max_tokens = n;
    gp.sampling = sp;
    return rd_generate(s, prompt, n_prompt, &gp, on_token, e, NULL);
}

static uint32_t n_past(rd_session *s) {
    rd_session_info si = {.struct_size = sizeof si};
    return rd_session_get_info(s, &si) == RD_OK ? si.n_past : UINT32_MAX;
}

/* The reference: greedy tokens of a session on a path-loaded model. */
static size_t reference(rd_token *out, uint32_t n) {
    rd_model *m = load_path(g_model_path);
    if (!m) return 0;
    rd_session *s = new_session(m, MODEL_CTX, 1);
    rd_model_free(m);
    if (!s) return 0;
    events_t e;
    size_t got = gen(s, PROMPT, N_PROMPT, n, NULL, &e) == RD_OK ? e.n : 0;
    memcpy(out, e.tokens, got * sizeof(rd_token));
    rd_session_free(s);
    return got;
}

/* Writes `pre` bytes of 0xAB, the model file, then `post` bytes of 0xCD. */
static int write_embedded(const char *path, size_t pre, size_t post, size_t *model_len) {
    size_t n = 0;
    unsigned char *model = rdt_read_file(g_model_path, &n);
    if (!model) return 0;
    size_t total = pre + n + post;
    unsigned char *buf = malloc(total);
    if (!buf) {
        free(model);
        return 0;
    }
    memset(buf, 0xAB, pre);
    memcpy(buf + pre, model, n);
    memset(buf + pre + n, 0xCD, post);
    int ok = rdt_write_file(path, buf, total);
    free(buf);
    free(model);
    *model_len = n;
    return ok;
}

/* Loads the range through rd_model_load_fd; NULL with a message on failure. */
static rd_model *load_fd(const char *path, uint64_t off, uint64_t len, bool use_mmap,
                         rd_status *status) {
    int fd = open(path, O_RDONLY);
    *status = RD_ERR_IO;
    if (fd < 0) return NULL;
    rd_model_params mp = cpu_params(use_mmap);
    rd_model *m = NULL;
    *status = rd_model_load_fd(fd, off, len, &mp, &m);
    close(fd); /* the library holds its own descriptor */
    return m;
}

/* ------------------------------------------------------------------ tests */

static void test_load_from_fd_range(void) {
    rd_token ref[12];
    size_t n_ref = reference(ref, 12);
    CHECK(n_ref == 12);
    char path[4200];
    rdt_path(path, sizeof path, "%s/embedded.bin", g_dir);
    size_t len = 0;
    /* 13 bytes before (odd: mapped, weights copied once), 64 (aligned:
     * weights used in place), and a model running to the end of the file. */
    const struct {
        size_t pre, post;
        bool to_end;
    } cases[] = {{13, 7, false}, {64, 100, false}, {4099, 0, true}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        REQUIRE_OK(write_embedded(path, cases[c].pre, cases[c].post, &len) ? RD_OK : RD_ERR_IO);
        for (int mmap = 0; mmap <= 1; mmap++) {
            rd_status st = RD_ERR_IO;
            rd_model *m = load_fd(path, cases[c].pre, cases[c].to_end ? 0 : len, mmap, &st);
            if (!m) {
                fprintf(stderr, "    case %zu mmap %d: %s: %s\n", c, mmap, rd_status_string(st),
                        rd_last_error());
                CHECK(m != NULL);
                continue;
            }
            rd_model_info info = {.struct_size = sizeof info};
            CHECK(rd_model_get_info(m, &info) == RD_OK);
            CHECK(info.n_vocab == N_VOCAB);
            /* Mapped: in place exactly when the offset is 32-byte aligned.
             * (Read into memory, the copy's alignment is the allocator's.) */
            if (mmap) CHECK(info.weights_mapped == (cases[c].pre % 32 == 0));
            rd_session *s = new_session(m, MODEL_CTX, 1);
            rd_model_free(m);
            CHECK(s != NULL);
            if (!s) continue;
            events_t e;
            CHECK(gen(s, PROMPT, N_PROMPT, 12, NULL, &e) == RD_OK);
            CHECK(e.n == n_ref && memcmp(e.tokens, ref, sizeof ref) == 0);
            rd_session_free(s);
        }
    }

    /* What must be refused, cleanly. */
    rd_model_params mp = cpu_params(true);
    rd_model *m = NULL;
    CHECK_STATUS(rd_model_load_fd(-1, 0, 0, &mp, &m), RD_ERR_INVALID_ARGUMENT);
    int fd = open(path, O_RDONLY);
    CHECK(fd >= 0);
    close(fd);
    CHECK_STATUS(rd_model_load_fd(fd, 0, 0, &mp, &m), RD_ERR_IO); /* closed */
    fd = open(path, O_RDONLY);
    CHECK_STATUS(rd_model_load_fd(fd, 4099, 0, NULL, &m), RD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(rd_model_load_fd(fd, 4099, 0, &mp, NULL), RD_ERR_INVALID_ARGUMENT);
    /* Ranges beyond the file, overflowing, past its end. */
    CHECK_STATUS(rd_model_load_fd(fd, 4099, len + 1, &mp, &m), RD_ERR_IO);
    CHECK_STATUS(rd_model_load_fd(fd, UINT64_MAX - 3, 10, &mp, &m), RD_ERR_IO);
    CHECK_STATUS(rd_model_load_fd(fd, 4099 + len + 1, 0, &mp, &m), RD_ERR_IO);
    /* Wrong offset (not a GGUF there), a range cut short. */
    CHECK_STATUS(rd_model_load_fd(fd, 4098, len, &mp, &m), RD_ERR_INVALID_MODEL);
    CHECK_STATUS(rd_model_load_fd(fd, 4099, len / 2, &mp, &m), RD_ERR_INVALID_MODEL);
    mp.use_mmap = false;
    CHECK_STATUS(rd_model_load_fd(fd, 4099, len / 2, &mp, &m), RD_ERR_INVALID_MODEL);
    close(fd);
    /* A pipe is not a regular file (refused before reading: no hang). */
    int p[2];
    CHECK(pipe(p) == 0);
    CHECK_STATUS(rd_model_load_fd(p[0], 0, 0, &mp, &m), RD_ERR_IO);
    mp.use_mmap = true;
    CHECK_STATUS(rd_model_load_fd(p[0], 0, 16, &mp, &m), RD_ERR_IO);
    close(p[0]);
    close(p[1]);
    CHECK(m == NULL);
    unlink(path);
}

static void test_truncate(void) {
    rd_model *m = load_path(g_model_path);
    CHECK(m != NULL);
    if (!m) return;
    rd_session *a = new_session(m, MODEL_CTX, 2);
    rd_session *b = new_session(m, MODEL_CTX, 2);
    rd_model_free(m);
    CHECK(a && b);
    if (!a || !b) goto done;
    /* b: the first 4 prompt tokens evaluated, then generation from the 5th. */
    events_t want, got;
    REQUIRE_OK(rd_eval(b, PROMPT, N_PROMPT - 1, 8));
    REQUIRE_OK(gen(b, &PROMPT[N_PROMPT - 1], 1, 10, NULL, &want));
    /* a: something else first, then cut back to the same 4 positions. */
    REQUIRE_OK(gen(a, PROMPT, N_PROMPT, 20, NULL, &got));
    CHECK(n_past(a) == N_PROMPT + 19);
    CHECK_STATUS(rd_session_truncate(a, 1000), RD_OK); /* beyond: no change */
    CHECK(n_past(a) == N_PROMPT + 19);
    REQUIRE_OK(rd_session_truncate(a, N_PROMPT - 1));
    CHECK(n_past(a) == N_PROMPT - 1);
    /* The logits went with the dropped positions. */
    float logits[N_VOCAB];
    size_t len = 0;
    CHECK_STATUS(rd_get_logits(a, logits, N_VOCAB, &len), RD_ERR_INVALID_STATE);
    CHECK_STATUS(gen(a, NULL, 0, 1, NULL, &got), RD_ERR_INVALID_STATE);
    REQUIRE_OK(gen(a, &PROMPT[N_PROMPT - 1], 1, 10, NULL, &got));
    CHECK(got.n == 10 && memcmp(got.tokens, want.tokens, 10 * sizeof(rd_token)) == 0);
    /* 0 empties the cache; NULL is refused. */
    REQUIRE_OK(rd_session_truncate(a, 0));
    CHECK(n_past(a) == 0);
    CHECK_STATUS(rd_session_truncate(NULL, 0), RD_ERR_INVALID_ARGUMENT);
done:
    rd_session_free(a);
    rd_session_free(b);
}

static void test_set_threads(void) {
    rd_token ref[12];
    size_t n_ref = reference(ref, 12);
    rd_model *m = load_path(g_model_path);
    CHECK(m != NULL);
    if (!m) return;
    rd_session *s = new_session(m, MODEL_CTX, 1);
    rd_model_free(m);
    CHECK(s != NULL);
    if (!s) return;
    /* Under valgrind (RD_TEST_SLOW) one thread: valgrind runs one thread at
     * a time, and ggml's threads spin at every node until the other one is
     * scheduled (this test took over 7 minutes there with 2). */
    const uint32_t counts[] = {1, 2, 0};
    const size_t n_counts = getenv("RD_TEST_SLOW") ? 1 : sizeof counts / sizeof counts[0];
    for (size_t i = 0; i < n_counts; i++) {
        REQUIRE_OK(rd_session_set_threads(s, counts[i]));
        REQUIRE_OK(rd_session_reset(s));
        events_t e;
        REQUIRE_OK(gen(s, PROMPT, N_PROMPT, 12, NULL, &e));
        CHECK(e.n == n_ref && memcmp(e.tokens, ref, sizeof ref) == 0);
    }
    CHECK_STATUS(rd_session_set_threads(s, 513), RD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(rd_session_set_threads(NULL, 1), RD_ERR_INVALID_ARGUMENT);
    events_t e;
    REQUIRE_OK(rd_session_reset(s));
    REQUIRE_OK(gen(s, PROMPT, N_PROMPT, 12, NULL, &e)); /* still usable */
    CHECK(e.n == n_ref && memcmp(e.tokens, ref, sizeof ref) == 0);
    rd_session_free(s);
}

/* ln softmax(logits)[t], in double. */
static double log_softmax_at(const float *l, size_t n, size_t t) {
    double max = l[0];
    for (size_t i = 1; i < n; i++)
        if (l[i] > max) max = l[i];
    double sum = 0;
    for (size_t i = 0; i < n; i++) sum += exp((double)l[i] - max);
    return (double)l[t] - max - log(sum);
}

static void test_logprobs(void) {
    rd_model *m = load_path(g_model_path);
    CHECK(m != NULL);
    if (!m) return;
    rd_session *s = new_session(m, MODEL_CTX, 1);
    rd_model_free(m);
    if (!s) return;
    REQUIRE_OK(rd_eval(s, PROMPT, N_PROMPT, 8));
    float logits[N_VOCAB];
    size_t len = 0;
    REQUIRE_OK(rd_get_logits(s, logits, N_VOCAB, &len));
    /* Greedy and sampled: the event's logprob is that of the raw logits. */
    rd_sampling_params sp = rd_sampling_default_params();
    sp.greedy = false;
    sp.temperature = 1.3f;
    sp.top_k = 20;
    sp.seed = 11;
    const rd_sampling_params *modes[] = {NULL, &sp};
    for (int k = 0; k < 2; k++) {
        events_t e;
        REQUIRE_OK(gen(s, NULL, 0, 1, modes[k], &e));
        CHECK(e.n == 1 && !e.bad);
        double want = log_softmax_at(logits, N_VOCAB, e.tokens[0]);
        CHECK(fabs((double)e.logprobs[0] - want) < 1e-5);
        if (k == 0) {
            size_t best = 0;
            for (size_t i = 1; i < N_VOCAB; i++)
                if (logits[i] > logits[best]) best = i;
            CHECK(e.tokens[0] == best);
        }
        /* The 1-token generation evaluated nothing: the logits are unchanged. */
        REQUIRE_OK(rd_get_logits(s, logits, N_VOCAB, &len));
    }
    events_t e;
    REQUIRE_OK(gen(s, PROMPT, N_PROMPT, 20, &sp, &e));
    for (size_t i = 0; i < e.n; i++) CHECK(e.logprobs[i] <= 0 && isfinite(e.logprobs[i]));
    rd_session_free(s);
}

static void test_state_save_and_restore(void) {
    rd_model *m = load_path(g_model_path);
    CHECK(m != NULL);
    if (!m) return;
    rd_session *a = new_session(m, MODEL_CTX, 2);
    rd_session *b = new_session(m, 64, 2); /* another context length is fine */
    rd_session *wrong_budget = new_session(m, MODEL_CTX, 1);
    rd_session *small = new_session(m, 8, 2);
    rd_model_free(m);
    rd_model *other = load_path(g_other_model_path);
    rd_session *wrong_model = other ? new_session(other, MODEL_CTX, 2) : NULL;
    rd_model_free(other);
    unsigned char *buf = NULL, *copy = NULL;
    CHECK(a && b && wrong_budget && small && wrong_model);
    if (!a || !b || !wrong_budget || !small || !wrong_model) goto done;

    events_t first, want, got;
    REQUIRE_OK(gen(a, PROMPT, N_PROMPT, 10, NULL, &first));
    size_t size = 0, len = 0;
    REQUIRE_OK(rd_session_state_size(a, &size));
    CHECK(size > 0);
    /* Size negotiation. */
    CHECK_STATUS(rd_session_state_save(a, NULL, 0, &len), RD_ERR_BUFFER_TOO_SMALL);
    CHECK(len == size);
    CHECK_STATUS(rd_session_state_save(a, NULL, 16, &len), RD_ERR_INVALID_ARGUMENT);
    buf = malloc(size);
    copy = malloc(size);
    CHECK(buf && copy);
    if (!buf || !copy) goto done;
    len = 0;
    CHECK_STATUS(rd_session_state_save(a, buf, size - 1, &len), RD_ERR_BUFFER_TOO_SMALL);
    REQUIRE_OK(rd_session_state_save(a, buf, size, &len));
    CHECK(len == size);
    float la[N_VOCAB], lb[N_VOCAB];
    size_t nl = 0;
    REQUIRE_OK(rd_get_logits(a, la, N_VOCAB, &nl));
    /* The saved session goes on... */
    REQUIRE_OK(gen(a, NULL, 0, 12, NULL, &want));
    /* ...and so does the restored one, token for token. */
    REQUIRE_OK(rd_session_state_load(b, buf, len));
    CHECK(n_past(b) == N_PROMPT + 9);
    REQUIRE_OK(rd_get_logits(b, lb, N_VOCAB, &nl));
    CHECK(memcmp(la, lb, sizeof la) == 0);
    REQUIRE_OK(gen(b, NULL, 0, 12, NULL, &got));
    CHECK(got.n == 12 && memcmp(got.tokens, want.tokens, 12 * sizeof(rd_token)) == 0);

    /* The file form. */
    char path[4200];
    rdt_path(path, sizeof path, "%s/state.bin", g_dir);
    REQUIRE_OK(rd_session_reset(b));
    REQUIRE_OK(rd_session_state_load(b, buf, len));
    REQUIRE_OK(rd_session_state_save_file(b, path));
    REQUIRE_OK(rd_session_reset(b));
    REQUIRE_OK(rd_session_state_load_file(b, path));
    REQUIRE_OK(gen(b, NULL, 0, 12, NULL, &got));
    CHECK(got.n == 12 && memcmp(got.tokens, want.tokens, 12 * sizeof(rd_token)) == 0);

    /* Refusals leave the session as it was (here: empty). */
    REQUIRE_OK(rd_session_reset(b));
    memcpy(copy, buf, len);
    const size_t flips[] = {0, 5, 9, 20, 70, len / 2, len - 20, len - 1};
    for (size_t i = 0; i < sizeof flips / sizeof flips[0]; i++) {
        copy[flips[i]] ^= 0x10;
        CHECK_STATUS(rd_session_state_load(b, copy, len), RD_ERR_INVALID_ARGUMENT);
        copy[flips[i]] ^= 0x10;
        CHECK(n_past(b) == 0);
    }
    CHECK_STATUS(rd_session_state_load(b, buf, len - 1), RD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(rd_session_state_load(b, buf, 10), RD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(rd_session_state_load(b, NULL, len), RD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(rd_session_state_load(b, buf, 0), RD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(rd_session_state_load(wrong_budget, buf, len), RD_ERR_INVALID_ARGUMENT);
    CHECK(strstr(rd_last_error(), "budget") != NULL);
    CHECK_STATUS(rd_session_state_load(small, buf, len), RD_ERR_INVALID_ARGUMENT);
    CHECK(strstr(rd_last_error(), "context") != NULL);
    CHECK_STATUS(rd_session_state_load(wrong_model, buf, len), RD_ERR_INVALID_ARGUMENT);
    CHECK(strstr(rd_last_error(), "model") != NULL);
    CHECK(n_past(b) == 0 && n_past(wrong_budget) == 0 && n_past(small) == 0);
    CHECK_STATUS(rd_session_state_load_file(b, "/dev/zero"), RD_ERR_IO);
    CHECK_STATUS(rd_session_state_load_file(b, g_dir), RD_ERR_IO);
    rdt_path(path, sizeof path, "%s/no-such-state.bin", g_dir);
    CHECK_STATUS(rd_session_state_load_file(b, path), RD_ERR_IO);
    CHECK_STATUS(rd_session_state_load_file(b, g_model_path), RD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(rd_session_state_size(NULL, &len), RD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(rd_session_state_size(b, NULL), RD_ERR_INVALID_ARGUMENT);
    /* Still usable after every refusal: an empty session's state restores too. */
    REQUIRE_OK(rd_session_state_size(b, &size));
    REQUIRE_OK(rd_session_state_save(b, copy, size, &len));
    REQUIRE_OK(rd_session_state_load(a, copy, len));
    CHECK(n_past(a) == 0);
    float l0[N_VOCAB];
    CHECK_STATUS(rd_get_logits(a, l0, N_VOCAB, &nl), RD_ERR_INVALID_STATE);
    REQUIRE_OK(gen(b, PROMPT, N_PROMPT, 10, NULL, &got));
    CHECK(memcmp(got.tokens, first.tokens, 10 * sizeof(rd_token)) == 0);
    rdt_path(path, sizeof path, "%s/state.bin", g_dir);
    unlink(path);
done:
    free(buf);
    free(copy);
    rd_session_free(a);
    rd_session_free(b);
    rd_session_free(wrong_budget);
    rd_session_free(small);
    rd_session_free(wrong_model);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s FIXTURE_DIR\n", argv[0]);
        return 2;
    }
    g_dir = argv[1];
    rdt_path(g_model_path, sizeof g_model_path, "%s/model.gguf", g_dir);
    rdt_path(g_other_model_path, sizeof g_other_model_path, "%s/model-ctx512.gguf", g_dir);
    RUN(test_load_from_fd_range);
    RUN(test_truncate);
    RUN(test_set_threads);
    RUN(test_logprobs);
    RUN(test_state_save_and_restore);
    return FINISH();
}
