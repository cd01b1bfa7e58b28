package dev.recurrentdepth;

/**
 * Receives the tokens of {@link RdNative#generate}, on the generating thread,
 * once per token, before the next one is computed (the rd_token_callback of
 * the C API). Called from C through JNI: keep the name and signature (see
 * consumer-rules.pro).
 */
interface TokenListener {
    /**
     * @param token the token id
     * @param iterations core iterations of the distribution it was sampled from
     * @param index its index in this generation, from 0
     * @param exitValue the exit criterion's value at the last check, NaN if none
     * @param text the token's text as UTF-8 bytes (a piece of a character is
     *     possible), or null when the library gives no text
     * @param logprob natural log of the probability the model gave the token
     *     (log softmax of the raw logits it was sampled from)
     * @return true to continue, false to stop (stop reason STOP_CALLBACK)
     */
    boolean onToken(
            int token, int iterations, long index, double exitValue, byte[] text, float logprob);
}
