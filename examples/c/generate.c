/*
 * generate.c: the smallest complete use of the recurrent-depth C API.
 * Loads a model, opens a session, generates from a text prompt with an
 * iteration budget and a KL early exit, and prints the text as it streams
 * in, with the core iterations each token used.
 *
 * Build (after `cargo build --release`), from the repository root:
 *
 *   cc -std=c11 -Iinclude examples/c/generate.c -Ltarget/release -lrecurrent_depth \
 *      -Wl,-rpath,$PWD/target/release -o generate
 *   ./generate model.gguf "The capital of France is"
 *
 * The model needs a tokenizer (models converted by `rd convert` have one).
 */
#include <stdio.h>
#include <string.h>

#include "recurrent_depth.h"

/* Called once per generated token; `ev->text` is valid only during the call
 * and holds whole UTF-8 characters (NUL-terminated). */
static bool on_token(const rd_token_event *ev, void *user_data) {
    unsigned *iterations = user_data;
    iterations[ev->index < 256 ? ev->index : 255] = ev->iterations;
    fwrite(ev->text, 1, ev->text_len, stdout);
    fflush(stdout);
    return true; /* keep going */
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.gguf [PROMPT]\n", argv[0]);
        return 2;
    }
    const char *prompt = argc > 2 ? argv[2] : "Hello";

    rd_model *model = NULL;
    rd_model_params mp = rd_model_default_params();
    if (rd_model_load(argv[1], &mp, &model) != RD_OK) {
        fprintf(stderr, "load: %s\n", rd_last_error());
        return 1;
    }
    rd_session *session = NULL;
    rd_session_params sp = rd_session_default_params(); /* the model's context */
    rd_status st = rd_session_new(model, &sp, &session);
    rd_model_free(model); /* the session keeps what it needs */
    if (st != RD_OK) {
        fprintf(stderr, "session: %s\n", rd_last_error());
        return 1;
    }

    rd_compute_limits limits = rd_compute_limits_default();
    limits.min_iterations = 4;
    limits.max_iterations = 32;
    limits.exit_criterion = RD_EXIT_KL;
    limits.exit_threshold = rd_exit_default_threshold(RD_EXIT_KL);

    rd_generate_params gp = rd_generate_default_params(); /* greedy; stops at EOS */
    gp.limits = &limits;
    gp.max_tokens = 32;
    gp.detokenize_flags = RD_DETOKENIZE_SKIP_SPECIAL; /* no <|end_turn|> in the output */

    unsigned iterations[256] = {0};
    rd_generate_stats stats = {.struct_size = sizeof stats};
    printf("%s", prompt);
    st = rd_generate_text(session, prompt, strlen(prompt), &gp, on_token, iterations, &stats);
    printf("\n");
    if (st != RD_OK) {
        fprintf(stderr, "generate: %s\n", rd_last_error());
    } else {
        printf("iterations per token:");
        for (size_t i = 0; i < stats.n_tokens && i < 256; i++) printf(" %u", iterations[i]);
        printf("\n%zu tokens, mean %.2f iterations\n", stats.n_tokens, stats.mean_iterations);
    }
    rd_session_free(session);
    return st == RD_OK ? 0 : 1;
}
