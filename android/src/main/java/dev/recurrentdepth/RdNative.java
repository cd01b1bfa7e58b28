package dev.recurrentdepth;

import java.nio.charset.StandardCharsets;

/**
 * The JNI bridge: static native methods over the C API of
 * include/recurrent_depth.h, implemented in src/main/cpp/rd_jni.c.
 *
 * <p>This class is shared by the Kotlin API (Android) and the desktop JVM test
 * (android/hosttest), so the signatures that run on a phone are the ones the
 * host test calls. The C side registers them with {@code RegisterNatives} and a
 * table of signatures: a mismatch fails when the library loads, not later.
 *
 * <p>Conventions: handles are the C pointers as {@code long} (0 = none); every
 * failing call throws {@link RdException} with the {@code rd_status} and the
 * message of {@code rd_last_error()}; unsigned C values are passed as Java
 * {@code int}/{@code long} and negative counts are rejected with
 * {@code RD_ERR_INVALID_ARGUMENT} (except {@code nCtx = -1}, which is
 * {@code RD_N_CTX_FROM_MODEL}). Thread rules are those of the C API: a session
 * is used by one thread at a time, except {@link #cancel} (any thread).
 */
final class RdNative {
    private RdNative() {}

    /**
     * The bridge library's name for {@link System#loadLibrary}
     * (librecurrent_depth_jni.so). The system property
     * {@code recurrent_depth.jni.path}, when set, names a file to load
     * instead (the host test uses it).
     */
    static final String LIBRARY = "recurrent_depth_jni";

    static {
        String path = System.getProperty("recurrent_depth.jni.path");
        if (path != null && !path.isEmpty()) {
            System.load(path);
        } else {
            System.loadLibrary(LIBRARY);
        }
    }

    // rd_backend
    static final int BACKEND_AUTO = 0;
    static final int BACKEND_CPU = 1;
    static final int BACKEND_GPU = 2;
    static final int BACKEND_VULKAN = 3;

    // rd_kv_type
    static final int KV_F32 = 0;
    static final int KV_F16 = 1;
    static final int ATTENTION_AUTO = 0;
    static final int ATTENTION_FUSED = 1;
    static final int ATTENTION_SEPARATE = 2;

    // rd_state_init
    static final int STATE_INIT_ZEROS = 0;
    static final int STATE_INIT_RANDOM = 1;

    // rd_exit_criterion
    static final int EXIT_NONE = 0;
    static final int EXIT_KL = 1;
    static final int EXIT_MINP_KL = 2;
    static final int EXIT_ENTROPY_DIFF = 3;
    static final int EXIT_LATENT_DIFF = 4;
    static final int EXIT_COSINE = 5;
    static final int EXIT_ARGMAX_STABILITY = 6;
    static final int EXIT_GATE = 7;
    static final int EXIT_CONFIDENCE = 8;

    // rd_stop_reason
    static final int STOP_MAX_TOKENS = 0;
    static final int STOP_STOP_TOKEN = 1;
    static final int STOP_CALLBACK = 2;
    static final int STOP_CONTEXT_FULL = 3;

    // rd_tokenize_flags, rd_detokenize_flags
    static final int TOKENIZE_ADD_SPECIAL = 1;
    static final int TOKENIZE_PARSE_SPECIAL = 2;
    static final int DETOKENIZE_SKIP_SPECIAL = 1;

    /** RD_TOKEN_NONE as a Java int ("no such token", e.g. a vocabulary without EOT). */
    static final int TOKEN_NONE = -1;

    /** sessionNew's nCtx for "the model's training context" (RD_N_CTX_FROM_MODEL). */
    static final int N_CTX_FROM_MODEL = -1;

    // Indices of modelInfo()'s array (the fields of rd_model_info).
    static final int MI_N_VOCAB = 0;
    static final int MI_CONTEXT_LENGTH = 1;
    static final int MI_N_EMBD = 2;
    static final int MI_N_HEAD = 3;
    static final int MI_N_HEAD_KV = 4;
    static final int MI_N_PRELUDE = 5;
    static final int MI_N_CORE = 6;
    static final int MI_N_CODA = 7;
    static final int MI_DEFAULT_ITERATIONS = 8;
    static final int MI_N_THREADS = 9;
    static final int MI_WEIGHTS_MAPPED = 10;
    static final int MI_HAS_TOKENIZER = 11;
    static final int MI_HAS_CHAT_TEMPLATE = 12;
    static final int MI_ADD_BOS = 13;
    static final int MI_BOS_TOKEN = 14;
    static final int MI_EOS_TOKEN = 15;
    static final int MI_EOT_TOKEN = 16;
    static final int MI_LENGTH = 17;

    // Indices of sessionInfo()'s array (the fields of rd_session_info).
    static final int SI_N_CTX = 0;
    static final int SI_N_PAST = 1;
    static final int SI_N_BATCH = 2;
    static final int SI_KV_BUDGET = 3;
    static final int SI_KV_BYTES = 4;
    static final int SI_COMPUTE_BYTES = 5;
    static final int SI_LENGTH = 6;

    // Indices of generate()'s result (the fields of rd_generate_stats).
    static final int GS_N_TOKENS = 0;
    static final int GS_N_PROMPT_TOKENS = 1;
    static final int GS_PREFILL_ITERATIONS = 2;
    static final int GS_STOP_REASON = 3;
    static final int GS_PREFILL_SECONDS = 4;
    static final int GS_DECODE_SECONDS = 5;
    static final int GS_MEAN_ITERATIONS = 6;
    static final int GS_KV_BYTES = 7;
    static final int GS_N_DRAFTED = 8;
    static final int GS_N_DRAFT_ACCEPTED = 9;
    static final int GS_N_VERIFY_PASSES = 10;
    static final int GS_LENGTH = 11;

    /** rd_version(). */
    static native String version();

    /** rd_status_string(status). */
    static native String statusString(int status);

    /** rd_exit_default_threshold(criterion); NaN for an unknown criterion. */
    static native double exitDefaultThreshold(int criterion);

    /**
     * rd_model_load. {@code pathUtf8} is the file name's bytes (no NUL);
     * see {@link #modelLoad(String, int, int, boolean, boolean, boolean, boolean)}.
     * {@code repack}: RD_REPACK_AUTO when true, RD_REPACK_OFF when false;
     * {@code prefetch}: rd_model_params.prefetch. Returns the rd_model handle.
     */
    static native long modelLoadUtf8(
            byte[] pathUtf8, int backend, int nThreads, boolean useMmap, boolean useMlock,
            boolean repack, boolean prefetch);

    /** rd_model_load with the path encoded as UTF-8. */
    static long modelLoad(
            String path, int backend, int nThreads, boolean useMmap, boolean useMlock,
            boolean repack, boolean prefetch) {
        return modelLoadUtf8(utf8(path), backend, nThreads, useMmap, useMlock, repack, prefetch);
    }

    /**
     * rd_model_load_fd: the model stored as {@code length} bytes of the open
     * file {@code fd} from {@code offset} ({@code length} 0: to the end), e.g.
     * an uncompressed APK asset ({@code AssetFileDescriptor}); the fd is
     * borrowed (the library keeps its own duplicate). Returns the rd_model handle.
     */
    static native long modelLoadFd(
            int fd, long offset, long length, int backend, int nThreads, boolean useMmap,
            boolean useMlock, boolean repack, boolean prefetch);

    /** rd_model_free (0 is ignored). */
    static native void modelFree(long model);

    /** rd_model_get_info, as an array indexed by the MI_* constants. */
    static native int[] modelInfo(long model);

    /** rd_model_info.architecture. */
    static native String modelArchitecture(long model);

    /** rd_model_info.backend_name. */
    static native String modelBackendName(long model);

    /** rd_tokenize: the ids of UTF-8 text (TOKENIZE_* flags). */
    static native int[] tokenizeUtf8(long model, byte[] textUtf8, int flags);

    /** rd_tokenize of a String. */
    static int[] tokenize(long model, String text, int flags) {
        return tokenizeUtf8(model, utf8(text), flags);
    }

    /** rd_detokenize: the UTF-8 text of token ids (DETOKENIZE_* flags). */
    static native byte[] detokenizeUtf8(long model, int[] tokens, int flags);

    /** rd_detokenize as a String. */
    static String detokenize(long model, int[] tokens, int flags) {
        return new String(detokenizeUtf8(model, tokens, flags), StandardCharsets.UTF_8);
    }

    /**
     * rd_chat_apply_template: renders the messages (role and content of
     * message i at index i, as UTF-8) with the model's chat template.
     */
    static native byte[] chatApplyTemplateUtf8(
            long model, byte[][] rolesUtf8, byte[][] contentsUtf8, boolean addGenerationPrompt);

    /** rd_chat_apply_template with Strings. */
    static String chatApplyTemplate(
            long model, String[] roles, String[] contents, boolean addGenerationPrompt) {
        byte[][] r = new byte[roles.length][];
        byte[][] c = new byte[contents.length][];
        for (int i = 0; i < r.length; i++) {
            r[i] = utf8(roles[i]);
        }
        for (int i = 0; i < c.length; i++) {
            c[i] = utf8(contents[i]);
        }
        byte[] out = chatApplyTemplateUtf8(model, r, c, addGenerationPrompt);
        return new String(out, StandardCharsets.UTF_8);
    }

    /** UTF-8 bytes of a String; null stays null. */
    static byte[] utf8(String s) {
        return s == null ? null : s.getBytes(StandardCharsets.UTF_8);
    }

    /**
     * rd_session_new. {@code threadPoll}: rd_session_params.thread_poll
     * (0..100); {@code attention}: an ATTENTION_* value. Returns the
     * rd_session handle.
     */
    static native long sessionNew(
            long model, int nCtx, int nBatch, int kvBudget, int kvType, int stateInit, long seed,
            int threadPoll, int attention);

    /** rd_session_free (0 is ignored). Not while another call uses the session. */
    static native void sessionFree(long session);

    /** rd_session_reset. */
    static native void sessionReset(long session);

    /** rd_session_get_info, as an array indexed by the SI_* constants. */
    static native long[] sessionInfo(long session);

    /** rd_cancel: callable from any thread while the session exists. */
    static native void cancel(long session);

    /** rd_session_truncate: keeps the first {@code nKeep} cached positions. */
    static native void sessionTruncate(long session, int nKeep);

    /** rd_session_set_threads (0 = the physical cores). */
    static native void sessionSetThreads(long session, int nThreads);

    /** rd_session_state_save: the session's state as a new byte array. */
    static native byte[] stateSave(long session);

    /** rd_session_state_load of a state from {@link #stateSave}. */
    static native void stateLoad(long session, byte[] state);

    /** rd_set_compute_limits: from the listener or another thread during generate. */
    static native void setComputeLimits(
            long session,
            int minIterations,
            int maxIterations,
            int checkEvery,
            int exitCriterion,
            double exitThreshold,
            boolean warmStart,
            boolean exitInPrefill,
            int exitScreenCriterion,
            double exitScreenThreshold,
            int prefillExitCriterion,
            double prefillExitThreshold,
            boolean leadIn);

    /**
     * rd_generate, or rd_generate_text when {@code promptUtf8} is not null
     * (then {@code prompt} must be null). {@code prompt} may be null or empty
     * to continue from the last evaluated position. With {@code sample}
     * false the sampling arguments are ignored and decoding is greedy
     * (rd_generate_params.sampling = NULL). {@code listener} (may be null) is
     * called on this thread for every token; returning false stops
     * generation, and an exception it throws stops generation and is
     * rethrown from here. {@code draftTokens} > 0 decodes speculatively
     * (rd_generate_params.draft_*). Returns the statistics indexed by the
     * GS_* constants.
     */
    static native double[] generate(
            long session,
            int[] prompt,
            byte[] promptUtf8,
            int maxTokens,
            int prefillIterations,
            int minIterations,
            int maxIterations,
            int checkEvery,
            int exitCriterion,
            double exitThreshold,
            boolean warmStart,
            boolean exitInPrefill,
            int exitScreenCriterion,
            double exitScreenThreshold,
            int prefillExitCriterion,
            double prefillExitThreshold,
            boolean leadIn,
            boolean sample,
            float temperature,
            int topK,
            float topP,
            float minP,
            float repeatPenalty,
            int repeatLastN,
            long seed,
            boolean greedy,
            int[] stopTokens,
            boolean defaultStopTokens,
            int tokenizeFlags,
            int detokenizeFlags,
            int draftTokens,
            int draftIterations,
            boolean draftAdaptive,
            TokenListener listener);
}
