/*
 * (f) Heap allocations per generated token, counted by interposing the C
 * allocator in this executable: malloc, calloc, realloc, free,
 * posix_memalign, aligned_alloc, memalign and valloc are defined here and
 * forward to glibc's __libc_* entry points. Definitions in the executable
 * take precedence for the statically linked library (resolved at link time)
 * and for the shared library and libstdc++ (ELF symbol interposition), so
 * Rust's allocator, ggml's C and C++ allocations and the C library's own all
 * pass through these counters. glibc only; not for sanitizer builds.
 *
 * The window is from the second to the last token callback of a generation
 * of 300 tokens from a 6-token prompt (prefill and the first decoded token
 * are outside it). Every scenario must make 0 allocator calls in the window:
 * fixed budgets (one and several graphs a token), KL exits with B = 1 and with
 * a budget that needs the latest-entry fill, a latent criterion with warm
 * start, argmax-stability every 3 steps, sampling with every filter, and
 * streamed token text. How (docs/c-api.md, "Memory"): graphs run directly on
 * the CPU backend with one ggml graph allocator per single-token graph shape,
 * planned for the full context when rd_generate starts, and ggml-sys patches
 * ggml_cpu_init's per-graph context away.
 *
 * In the static build (linked with -rdynamic, so frames have names) each call
 * is attributed to the ggml site that made it, to say where a regression is.
 *
 * Usage: test_alloc FIXTURE_DIR (holding model-ctx512.gguf and tok-model-ctx512.gguf)
 */
#define _GNU_SOURCE

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>

#ifdef RD_ATTRIBUTE
#include <dlfcn.h>
#include <execinfo.h>
#endif

#include "rdtest.h"

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);
extern void *__libc_memalign(size_t, size_t);

enum { C_MALLOC, C_CALLOC, C_REALLOC, C_FREE, C_ALIGNED, C_N };
static const char *const COUNTER_NAMES[C_N] = {"malloc", "calloc", "realloc", "free",
                                               "posix_memalign/aligned_alloc/memalign/valloc"};
static atomic_long g_count[C_N];

/* Set between the second and the last token callback. */
static atomic_int g_window;

#ifdef RD_ATTRIBUTE
/* ggml functions whose internal allocations are known (see the top). */
enum { S_CPU_INIT, S_SCHED_SPLIT, S_GALLOCR, S_OTHER, S_N };
static const char *const SITE_NAMES[S_N] = {
    "ggml_cpu_init (from ggml_graph_compute)", "ggml_backend_sched_split_graph",
    "ggml_gallocr_alloc_graph (re-reserve)", "elsewhere"};
static atomic_long g_site[S_N];
static _Thread_local int t_busy;
#define MAX_REPORTS 4
#define REPORT_DEPTH 16
static void *g_reports[MAX_REPORTS][REPORT_DEPTH];
static int g_report_depth[MAX_REPORTS];
static atomic_int g_n_reports;

static int site_of(void *const *frames, int n) {
    for (int i = 1; i < n && i < 8; i++) {
        Dl_info info;
        if (!dladdr(frames[i], &info) || !info.dli_sname) continue;
        if (strcmp(info.dli_sname, "ggml_cpu_init") == 0) return S_CPU_INIT;
        if (strcmp(info.dli_sname, "ggml_backend_sched_split_graph") == 0) return S_SCHED_SPLIT;
        if (strcmp(info.dli_sname, "ggml_gallocr_alloc_graph") == 0) return S_GALLOCR;
    }
    return S_OTHER;
}

static void attribute(void) {
    if (!atomic_load_explicit(&g_window, memory_order_relaxed) || t_busy) return;
    t_busy = 1;
    void *frames[REPORT_DEPTH];
    int n = backtrace(frames, REPORT_DEPTH);
    int site = site_of(frames, n);
    atomic_fetch_add(&g_site[site], 1);
    if (site == S_OTHER) {
        int r = atomic_fetch_add(&g_n_reports, 1);
        if (r < MAX_REPORTS) {
            memcpy(g_reports[r], frames, (size_t)n * sizeof frames[0]);
            g_report_depth[r] = n;
        }
    }
    t_busy = 0;
}
#else
#define attribute() ((void)0)
#endif

static inline void bump(int which) {
    atomic_fetch_add_explicit(&g_count[which], 1, memory_order_relaxed);
    attribute();
}

void *malloc(size_t n) {
    bump(C_MALLOC);
    return __libc_malloc(n);
}

void *calloc(size_t a, size_t b) {
    bump(C_CALLOC);
    return __libc_calloc(a, b);
}

void *realloc(void *p, size_t n) {
    bump(C_REALLOC);
    return __libc_realloc(p, n);
}

void free(void *p) {
    if (p) bump(C_FREE);
    __libc_free(p);
}

int posix_memalign(void **out, size_t align, size_t n) {
    bump(C_ALIGNED);
    if (align < sizeof(void *) || (align & (align - 1)) != 0) return EINVAL;
    void *p = __libc_memalign(align, n);
    if (!p) return ENOMEM;
    *out = p;
    return 0;
}

void *aligned_alloc(size_t align, size_t n) {
    bump(C_ALIGNED);
    return __libc_memalign(align, n);
}

void *memalign(size_t align, size_t n) {
    bump(C_ALIGNED);
    return __libc_memalign(align, n);
}

void *valloc(size_t n) {
    bump(C_ALIGNED);
    return __libc_memalign(4096, n);
}

typedef struct {
    long v[C_N];
} counts_t;

static counts_t snapshot(void) {
    counts_t c;
    for (int i = 0; i < C_N; i++) c.v[i] = atomic_load(&g_count[i]);
    return c;
}

static long total_of(const counts_t *c) {
    long t = 0;
    for (int i = 0; i < C_N; i++) t += c->v[i];
    return t;
}

static void print_delta(const char *what, const counts_t *a, const counts_t *b) {
    printf("     %s:", what);
    for (int i = 0; i < C_N; i++)
        if (b->v[i] != a->v[i]) printf(" %s %ld", COUNTER_NAMES[i], b->v[i] - a->v[i]);
    printf(" (total %ld)\n", total_of(b) - total_of(a));
}

/* Counter totals at every token callback; opens and closes the window. */
#define MAX_TOKENS 320
typedef struct {
    size_t n, last_index;
    long total_at[MAX_TOKENS];
    counts_t at_second, at_last;
    size_t text_bytes;  /* bytes of token text seen */
    unsigned checksum;  /* of the text, so that it is read */
} probe_t;

static bool probe_cb(const rd_token_event *ev, void *user_data) {
    probe_t *p = user_data;
    counts_t now = snapshot();
    if (ev->index < MAX_TOKENS) p->total_at[ev->index] = total_of(&now);
    if (ev->index == 1) {
        p->at_second = now;
        atomic_store(&g_window, 1);
    }
    if (ev->index >= 1) p->at_last = now;
    if (ev->index == p->last_index) atomic_store(&g_window, 0);
    for (size_t i = 0; ev->text && i < ev->text_len; i++) p->checksum += (unsigned char)ev->text[i];
    p->text_bytes += ev->text_len;
    p->n++;
    return true;
}

static char g_model_path[4096], g_tok_model_path[4096];
/* Speculative decoding settings of the next generations (0: off). */
static uint32_t g_draft_tokens, g_draft_iterations;
static bool g_draft_adaptive;

/* Generates `n_tokens` (at most MAX_TOKENS) twice with the same settings (the
 * second call fully warm) and checks the window of both calls. */
static void check_generation_of(const char *path, const char *name, uint32_t n_threads,
                                uint32_t kv_budget, rd_compute_limits limits,
                                const rd_sampling_params *sampling, uint32_t n_tokens) {
    rd_model_params mp = rd_model_default_params();
    mp.backend = RD_BACKEND_CPU;
    mp.n_threads = n_threads;
    rd_model *m = NULL;
    REQUIRE_OK(rd_model_load(path, &mp, &m));
    rd_model_info info = {.struct_size = sizeof info};
    REQUIRE_OK(rd_model_get_info(m, &info));
    rd_session_params sp = rd_session_default_params();
    sp.n_ctx = 512;
    sp.kv_budget = kv_budget;
    rd_session *s = NULL;
    rd_status st = rd_session_new(m, &sp, &s);
    rd_model_free(m);
    REQUIRE_OK(st);
    static const rd_token prompt[] = {3, 1, 4, 1, 5, 9};
    rd_generate_params gp = rd_generate_default_params();
    gp.limits = &limits;
    gp.sampling = sampling;
    gp.max_tokens = n_tokens;
    gp.default_stop_tokens = false; /* a random model may sample EOS */
    gp.draft_tokens = g_draft_tokens;
    gp.draft_iterations = g_draft_iterations ? g_draft_iterations : 4;
    gp.draft_adaptive = g_draft_adaptive;
    for (int round = 0; round < 2; round++) {
        REQUIRE_OK(rd_session_reset(s));
        probe_t p = {.last_index = n_tokens - 1};
#ifdef RD_ATTRIBUTE
        long site0[S_N];
        for (int i = 0; i < S_N; i++) site0[i] = atomic_load(&g_site[i]);
#endif
        counts_t before = snapshot();
        rd_generate_stats stats = {.struct_size = sizeof stats};
        REQUIRE_OK(rd_generate(s, prompt, sizeof prompt / sizeof prompt[0], &gp, probe_cb, &p,
                               &stats));
        atomic_store(&g_window, 0);
        counts_t after = snapshot();
        CHECK(p.n == n_tokens);
        if (info.has_tokenizer) {
            printf("     %zu bytes of token text streamed\n", p.text_bytes);
            CHECK(p.text_bytes > 0);
        }
        long window = total_of(&p.at_last) - total_of(&p.at_second);
        char what[200];
        snprintf(what, sizeof what, "%s, call %d: %u tokens, mean %.1f iterations; whole call",
                 name, round + 1, n_tokens, stats.mean_iterations);
        print_delta(what, &before, &after);
        snprintf(what, sizeof what, "  tokens 2..%u (%.1f calls per token)", n_tokens,
                 (double)window / (n_tokens - 2));
        print_delta(what, &p.at_second, &p.at_last);
        if (window != 0) {
            for (size_t i = 1; i + 1 < p.n && i + 1 < MAX_TOKENS; i++) {
                long d = p.total_at[i + 1] - p.total_at[i];
                if (d) {
                    fprintf(stderr, "    first allocating token: %zu (%ld calls)\n", i + 1, d);
                    break;
                }
            }
        }
        CHECK(window == 0);
#ifdef RD_ATTRIBUTE
        printf("       by site:");
        for (int i = 0; i < S_N; i++) {
            long d = atomic_load(&g_site[i]) - site0[i];
            if (d) printf(" %s %ld;", SITE_NAMES[i], d);
        }
        printf("\n");
        long other = atomic_load(&g_site[S_OTHER]) - site0[S_OTHER];
        CHECK(other == 0);
#endif
    }
    rd_session_free(s);
}

static void check_generation(const char *name, uint32_t n_threads, uint32_t kv_budget,
                             rd_compute_limits limits, const rd_sampling_params *sampling,
                             uint32_t n_tokens) {
    check_generation_of(g_model_path, name, n_threads, kv_budget, limits, sampling, n_tokens);
}

static rd_compute_limits limits_of(uint32_t min, uint32_t max, rd_exit_criterion crit,
                                   uint32_t check_every, bool warm) {
    rd_compute_limits l = rd_compute_limits_default();
    l.min_iterations = min;
    l.max_iterations = max;
    l.exit_criterion = crit;
    l.exit_threshold = rd_exit_default_threshold(crit);
    l.check_every = check_every;
    l.warm_start = warm;
    return l;
}

static void test_interposition_works(void) {
    counts_t a = snapshot();
    void *volatile p = malloc(16);
    free(p);
    counts_t b = snapshot();
    CHECK(b.v[C_MALLOC] - a.v[C_MALLOC] == 1 && b.v[C_FREE] - a.v[C_FREE] == 1);
    /* The library's own allocations are seen too (loading allocates). */
    rd_model_params mp = rd_model_default_params();
    mp.backend = RD_BACKEND_CPU;
    rd_model *m = NULL;
    a = snapshot();
    REQUIRE_OK(rd_model_load(g_model_path, &mp, &m));
    rd_model_free(m);
    b = snapshot();
    print_delta("load + free of the model", &a, &b);
    CHECK(total_of(&b) - total_of(&a) > 0);
}

static void test_fixed_budget(void) {
    check_generation("fixed 8 iterations, B=1, 1 thread", 1, 1,
                     limits_of(8, 8, RD_EXIT_NONE, 1, false), NULL, 300);
    check_generation("fixed 40 iterations (3 graphs a token), B=2, 2 threads", 2, 2,
                     limits_of(40, 40, RD_EXIT_NONE, 1, false), NULL, 300);
}

static void test_exits_and_sampling(void) {
    check_generation("kl exit 2..32, B=1", 1, 1, limits_of(2, 32, RD_EXIT_KL, 1, false), NULL, 300);
    check_generation("kl exit 2..32, B=4 (latest-entry fill)", 1, 4,
                     limits_of(2, 32, RD_EXIT_KL, 1, false), NULL, 300);
    check_generation("cosine exit 1..40, warm start", 1, 1,
                     limits_of(1, 40, RD_EXIT_COSINE, 1, true), NULL, 300);
    check_generation("argmax-stability, check_every 3", 1, 2,
                     limits_of(3, 24, RD_EXIT_ARGMAX_STABILITY, 3, false), NULL, 300);
    rd_compute_limits screened = limits_of(1, 32, RD_EXIT_KL, 1, false);
    screened.exit_screen_criterion = RD_EXIT_COSINE;
    screened.exit_screen_threshold = 1e-2;
    check_generation("kl exit 1..32 behind a cosine screen, B=2", 1, 2, screened, NULL, 300);
    rd_sampling_params sp = rd_sampling_default_params();
    sp.seed = 7;
    sp.repeat_penalty = 1.1f;
    check_generation("sampled (temperature, top-k, top-p, min-p, penalty)", 1, 1,
                     limits_of(2, 16, RD_EXIT_KL, 1, false), &sp, 300);
}

/* Token text streamed to the callback (split characters held back) adds no
 * allocation. Sampling close to uniform makes byte tokens of every kind. */
static void test_streamed_text(void) {
    rd_sampling_params sp = rd_sampling_default_params();
    sp.temperature = 20.0f;
    sp.top_k = 0;
    sp.top_p = 1.0f;
    sp.min_p = 0.0f;
    sp.seed = 3;
    check_generation_of(g_tok_model_path, "token text, fixed 8 iterations", 1, 1,
                        limits_of(8, 8, RD_EXIT_NONE, 1, false), &sp, 300);
    check_generation_of(g_tok_model_path, "token text, greedy, kl exit 2..16", 1, 1,
                        limits_of(2, 16, RD_EXIT_KL, 1, false), NULL, 300);
}

/* Speculative rounds (drafts, one verification batch, rewinds) allocate
 * nothing either: their graphs are planned when the call starts. */
static void test_speculative(void) {
    g_draft_tokens = 4;
    g_draft_iterations = 2;
    check_generation("speculative, greedy, 4 drafts at 2 of 8 iterations, B=8", 1, 8,
                     limits_of(8, 8, RD_EXIT_NONE, 1, false), NULL, 300);
    g_draft_tokens = 6;
    g_draft_iterations = 1;
    g_draft_adaptive = true;
    rd_sampling_params sp = rd_sampling_default_params();
    sp.seed = 5;
    check_generation("speculative, sampled, adaptive up to 6 drafts, 20 iterations (2 graphs), "
                     "B=2, 2 threads",
                     2, 2, limits_of(20, 20, RD_EXIT_NONE, 1, false), &sp, 300);
    g_draft_tokens = 0;
    g_draft_iterations = 0;
    g_draft_adaptive = false;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s FIXTURE_DIR (holding model.gguf)\n", argv[0]);
        return 2;
    }
#ifdef RD_ATTRIBUTE
    void *warm[4];
    backtrace(warm, 4); /* loads the unwinder before any window opens */
#endif
    rdt_path(g_model_path, sizeof g_model_path, "%s/model-ctx512.gguf", argv[1]);
    rdt_path(g_tok_model_path, sizeof g_tok_model_path, "%s/tok-model-ctx512.gguf", argv[1]);
    printf("recurrent-depth %s allocation tests (%s)\n", rd_version(), argv[0]);
    RUN(test_interposition_works);
    RUN(test_fixed_budget);
    RUN(test_speculative);
    RUN(test_exits_and_sampling);
    RUN(test_streamed_text);
#ifdef RD_ATTRIBUTE
    int n_reports = atomic_load(&g_n_reports);
    for (int r = 0; r < n_reports && r < MAX_REPORTS; r++) {
        fprintf(stderr, "allocation outside the known ggml sites:\n");
        backtrace_symbols_fd(g_reports[r], g_report_depth[r], 2);
    }
#endif
    return FINISH();
}
