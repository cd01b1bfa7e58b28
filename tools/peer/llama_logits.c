/* Reference logits from llama.cpp, for tests/llama_reference.rs: evaluates a
 * prompt in one batch with logits at every position (K/V cache in F32,
 * attention not fused, one thread), writes them to OUT as raw little-endian
 * f32 (position-major, n_vocab per position), then decodes N_GEN tokens
 * greedily and prints their ids on one line.
 *
 *   llama_logits MODEL.gguf OUT.f32 N_GEN ID...
 *
 * Built by tools/setup_llama_peer.sh next to libllama.so. */
#include "llama.h"

#include <stdio.h>
#include <stdlib.h>

static void no_log(enum ggml_log_level level, const char *text, void *user) {
    (void)level;
    (void)text;
    (void)user;
}

static int argmax(const float *v, int n) {
    int best = 0;
    for (int i = 1; i < n; i++) {
        if (v[i] > v[best]) {
            best = i;
        }
    }
    return best;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s MODEL OUT N_GEN ID...\n", argv[0]);
        return 2;
    }
    const int n_gen = atoi(argv[3]);
    const int n_prompt = argc - 4;
    if (n_gen < 0) {
        fprintf(stderr, "bad N_GEN\n");
        return 2;
    }
    llama_log_set(no_log, NULL);
    llama_backend_init();
    /* Weights as stored (no repacked or AMX layouts), as the test runs rd:
     * the interleaved kernels add partial sums in orders of their own. */
    struct llama_model_params mp = llama_model_default_params();
    mp.use_extra_bufts = false;
    struct llama_model *model = llama_model_load_from_file(argv[1], mp);
    if (model == NULL) {
        fprintf(stderr, "cannot load %s\n", argv[1]);
        return 1;
    }
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t)(n_prompt + n_gen + 16);
    cp.n_batch = (uint32_t)n_prompt;
    cp.n_ubatch = (uint32_t)n_prompt;
    cp.n_threads = 1;
    cp.n_threads_batch = 1;
    cp.type_k = GGML_TYPE_F32;
    cp.type_v = GGML_TYPE_F32;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    if (ctx == NULL) {
        fprintf(stderr, "cannot create a context\n");
        return 1;
    }
    const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    struct llama_batch batch = llama_batch_init(n_prompt, 0, 1);
    for (int i = 0; i < n_prompt; i++) {
        batch.token[i] = (llama_token)atoi(argv[4 + i]);
        batch.pos[i] = i;
        batch.n_seq_id[i] = 1;
        batch.seq_id[i][0] = 0;
        batch.logits[i] = 1;
    }
    batch.n_tokens = n_prompt;
    if (llama_decode(ctx, batch) != 0) {
        fprintf(stderr, "prompt evaluation failed\n");
        return 1;
    }
    FILE *out = fopen(argv[2], "wb");
    if (out == NULL) {
        fprintf(stderr, "cannot write %s\n", argv[2]);
        return 1;
    }
    for (int i = 0; i < n_prompt; i++) {
        const float *l = llama_get_logits_ith(ctx, i);
        if (l == NULL || fwrite(l, sizeof *l, (size_t)n_vocab, out) != (size_t)n_vocab) {
            fprintf(stderr, "cannot write logits\n");
            return 1;
        }
    }
    fclose(out);
    llama_token next = argmax(llama_get_logits_ith(ctx, n_prompt - 1), n_vocab);
    for (int i = 0; i < n_gen; i++) {
        printf(i ? " %d" : "%d", next);
        if (i + 1 == n_gen) {
            break;
        }
        if (llama_decode(ctx, llama_batch_get_one(&next, 1)) != 0) {
            fprintf(stderr, "decode failed\n");
            return 1;
        }
        next = argmax(llama_get_logits_ith(ctx, -1), n_vocab);
    }
    printf("\n");
    llama_batch_free(batch);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
