/* Times llama.cpp on a GGUF file, for tools/bench_peer.sh: a prompt of
 * N_PROMPT token ids evaluated in one batch (prefill), then N_GEN greedy
 * tokens one at a time (decode).
 *
 *   llama_timing MODEL.gguf N_PROMPT N_GEN THREADS
 *
 * Prints "prefill_tok_per_s decode_tok_per_s" on one line. The prompt ids are
 * (i * 7919 + 13) mod n_vocab, the same formula bench_peer.sh gives rd. */
#include "llama.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void no_log(enum ggml_log_level level, const char *text, void *user) {
    (void)level;
    (void)text;
    (void)user;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s MODEL N_PROMPT N_GEN THREADS\n", argv[0]);
        return 2;
    }
    const int n_prompt = atoi(argv[2]);
    const int n_gen = atoi(argv[3]);
    const int n_threads = atoi(argv[4]);
    if (n_prompt < 1 || n_gen < 0 || n_threads < 1) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    llama_log_set(no_log, NULL);
    llama_backend_init();
    struct llama_model *model =
        llama_model_load_from_file(argv[1], llama_model_default_params());
    if (model == NULL) {
        fprintf(stderr, "cannot load %s\n", argv[1]);
        return 1;
    }
    struct llama_context_params cparams = llama_context_default_params();
    cparams.n_ctx = (uint32_t)(n_prompt + n_gen + 16);
    cparams.n_batch = (uint32_t)n_prompt;
    cparams.n_ubatch = (uint32_t)n_prompt;
    cparams.n_threads = n_threads;
    cparams.n_threads_batch = n_threads;
    struct llama_context *ctx = llama_init_from_model(model, cparams);
    if (ctx == NULL) {
        fprintf(stderr, "cannot create a context\n");
        return 1;
    }
    const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    llama_token *prompt = malloc(sizeof *prompt * (size_t)n_prompt);
    if (prompt == NULL) {
        return 1;
    }
    for (int i = 0; i < n_prompt; i++) {
        prompt[i] = (llama_token)(((long)i * 7919 + 13) % n_vocab);
    }
    struct llama_sampler *greedy = llama_sampler_chain_init(llama_sampler_chain_default_params());
    llama_sampler_chain_add(greedy, llama_sampler_init_greedy());

    const double t_prefill = seconds();
    if (llama_decode(ctx, llama_batch_get_one(prompt, n_prompt)) != 0) {
        fprintf(stderr, "prompt evaluation failed\n");
        return 1;
    }
    const double prefill_s = seconds() - t_prefill;
    llama_token next = llama_sampler_sample(greedy, ctx, -1);
    const double t_decode = seconds();
    for (int i = 0; i < n_gen; i++) {
        if (llama_decode(ctx, llama_batch_get_one(&next, 1)) != 0) {
            fprintf(stderr, "decode failed\n");
            return 1;
        }
        next = llama_sampler_sample(greedy, ctx, -1);
    }
    const double decode_s = seconds() - t_decode;
    printf("%.3f %.3f\n", n_prompt / prefill_s, n_gen > 0 ? n_gen / decode_s : 0.0);
    llama_sampler_free(greedy);
    free(prompt);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
