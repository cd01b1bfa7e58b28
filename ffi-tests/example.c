/*
 * Minimal use of the recurrent-depth C API (shown in docs/c-api.md): load a
 * model, create a session, generate with an iteration budget and a KL early
 * exit, and stream the tokens with the iterations each one used.
 *
 *   cc -std=c11 -Iinclude example.c -Ltarget/release -lrecurrent_depth -o example
 *   ./example model.gguf
 */
#include <stdio.h>

#include "recurrent_depth.h"

static bool on_token(const rd_token_event *ev, void *user_data) {
    (void)user_data;
    printf("token %5u  %3u iterations  exit value %.2e\n", ev->token, ev->iterations,
           ev->exit_value);
    return true; /* keep going */
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.gguf\n", argv[0]);
        return 2;
    }
    rd_model *model = NULL;
    rd_model_params mp = rd_model_default_params();
    if (rd_model_load(argv[1], &mp, &model) != RD_OK) {
        fprintf(stderr, "load: %s\n", rd_last_error());
        return 1;
    }

    rd_session *session = NULL;
    rd_session_params sp = rd_session_default_params(); /* the model's context, B = 1 */
    rd_status st = rd_session_new(model, &sp, &session);
    rd_model_free(model); /* the session keeps the weights alive */
    if (st != RD_OK) {
        fprintf(stderr, "session: %s\n", rd_last_error());
        return 1;
    }

    rd_compute_limits limits = rd_compute_limits_default();
    limits.min_iterations = 4;
    limits.max_iterations = 32;
    limits.exit_criterion = RD_EXIT_KL;
    limits.exit_threshold = 5e-4;

    rd_generate_params gp = rd_generate_default_params(); /* greedy */
    gp.limits = &limits;
    gp.max_tokens = 16;

    const rd_token prompt[] = {1, 2, 3, 4, 5};
    rd_generate_stats stats = {.struct_size = sizeof stats};
    st = rd_generate(session, prompt, 5, &gp, on_token, NULL, &stats);
    if (st != RD_OK) {
        fprintf(stderr, "generate: %s\n", rd_last_error());
    } else {
        printf("%zu tokens, mean %.2f iterations, %.1f tokens/s\n", stats.n_tokens,
               stats.mean_iterations, stats.n_tokens / stats.decode_seconds);
    }
    rd_session_free(session);
    return st == RD_OK ? 0 : 1;
}
