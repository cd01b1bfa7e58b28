/* Re-quantizes a GGUF with llama.cpp (for tools/bench_peer.sh: SmolLM2 as
 * shipped is Q4_1; the Q8_0 comparison needs every tensor in Q8_0).
 *
 *   llama_requantize IN.gguf OUT.gguf FTYPE
 *
 * FTYPE is a llama_ftype number (7 = MOSTLY_Q8_0, 3 = MOSTLY_Q4_1); every
 * tensor, the embedding and the output included, gets that type. */
#include "llama.h"

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s IN OUT FTYPE\n", argv[0]);
        return 2;
    }
    llama_backend_init();
    struct llama_model_quantize_params qp = llama_model_quantize_default_params();
    qp.ftype = (enum llama_ftype)atoi(argv[3]);
    qp.pure = true;
    qp.allow_requantize = true;
    if (llama_model_quantize(argv[1], argv[2], &qp) != 0) {
        fprintf(stderr, "quantization failed\n");
        return 1;
    }
    llama_backend_free();
    return 0;
}
