package dev.recurrentdepth

/**
 * When a token may stop iterating before [ComputeLimits.maxIterations]
 * (rd_exit_criterion with its threshold). Criteria on logits run the coda
 * and head at every check; the latent ones only compare states.
 */
sealed class ExitCriterion(internal val code: Int, open val threshold: Double) {
    /** Never exit early: every token runs maxIterations. */
    data object None : ExitCriterion(RdNative.EXIT_NONE, 0.0)

    /** KL divergence of successive next-token distributions below [threshold]. */
    data class Kl(override val threshold: Double = 5e-4) : ExitCriterion(RdNative.EXIT_KL, threshold)

    /** The same KL after min-p(0.1) filtering. */
    data class MinPKl(override val threshold: Double = 1e-5) : ExitCriterion(RdNative.EXIT_MINP_KL, threshold)

    /** |H_t - H_{t-1}| of the entropies below [threshold]. */
    data class EntropyDiff(override val threshold: Double = 1e-3) :
        ExitCriterion(RdNative.EXIT_ENTROPY_DIFF, threshold)

    /** Relative change of the latent state below [threshold]. */
    data class LatentDiff(override val threshold: Double = 0.03) :
        ExitCriterion(RdNative.EXIT_LATENT_DIFF, threshold)

    /** 1 - cos(x_t, x_{t-1}) of the latent states below [threshold]. */
    data class Cosine(override val threshold: Double = 1e-3) : ExitCriterion(RdNative.EXIT_COSINE, threshold)

    /** The argmax unchanged for [checks] consecutive checks. */
    data class ArgmaxStability(val checks: Int = 5) :
        ExitCriterion(RdNative.EXIT_ARGMAX_STABILITY, checks.toDouble())

    /** The model's learned exit gate (Ouro): exit once the accumulated exit probability reaches [threshold]. */
    data class Gate(override val threshold: Double = 0.9) : ExitCriterion(RdNative.EXIT_GATE, threshold)

    /** The top probability of one check's next-token distribution reaches [threshold]; a token's first check can already exit. */
    data class Confidence(override val threshold: Double = 0.9) :
        ExitCriterion(RdNative.EXIT_CONFIDENCE, threshold)
}

/**
 * How much each token may think (rd_compute_limits): the core runs at least
 * [minIterations] and at most [maxIterations] times per token; from
 * [minIterations] on, every [checkEvery] steps, [exit] is evaluated
 * ([checkEvery] 0: chosen from the model's cost of a check, docs/semantics.md).
 * Validated by the library: invalid values make calls throw [RdException]
 * with [RdException.Status.INVALID_ARGUMENT].
 */
data class ComputeLimits(
    val minIterations: Int = 1,
    val maxIterations: Int = 32,
    val checkEvery: Int = 1,
    val exit: ExitCriterion = ExitCriterion.None,
    /** Start each token from the previous token's final state. */
    val warmStart: Boolean = false,
    /** Allow the exit criterion on the prompt's last position. */
    val exitInPrefill: Boolean = false,
    /**
     * A latent screen ([ExitCriterion.Cosine] or [ExitCriterion.LatentDiff])
     * that must pass before [exit], a criterion on the next-token
     * distribution, is evaluated (docs/semantics.md, "Screened exits");
     * [ExitCriterion.None]: no screen.
     */
    val exitScreen: ExitCriterion = ExitCriterion.None,
    /**
     * The prompt's own exit: [ExitCriterion.Cosine] or
     * [ExitCriterion.LatentDiff] over every prompt position (all must have
     * settled), at each step up to the prompt's budget (docs/semantics.md,
     * "The prompt's exit"); [ExitCriterion.None]: the prompt runs its
     * budget. Not together with [exitInPrefill].
     */
    val prefillExit: ExitCriterion = ExitCriterion.None,
    /**
     * A token's first check of a criterion that compares two checks is a
     * lead-in: it cannot end the token and runs in the same graph as the
     * next check (default). false: the authors' behaviour, in which the
     * first check may end a token (docs/semantics.md, "The lead-in check").
     */
    val leadIn: Boolean = true,
) {
    companion object {
        /** Exactly [iterations] per token. */
        fun fixed(iterations: Int) = ComputeLimits(minIterations = iterations, maxIterations = iterations)
    }
}

/**
 * Sampling of the next token (rd_sampling_params). Pass `null` instead of a
 * Sampling to decode greedily.
 */
data class Sampling(
    val temperature: Float = 0.8f,
    val topK: Int = 40,
    val topP: Float = 0.95f,
    val minP: Float = 0.05f,
    val repeatPenalty: Float = 1.0f,
    val repeatLastN: Int = 64,
    val seed: Long = 0,
    val greedy: Boolean = false,
)

/** One generated token. */
data class TokenEvent(
    /** The token id. */
    val token: Int,
    /** Core iterations of the distribution it was sampled from (the first: the prompt's). */
    val iterations: Int,
    /** Its index in this generation, from 0. */
    val index: Long,
    /** The exit criterion's value at the last check; null when none was evaluated. */
    val exitValue: Double?,
    /**
     * The text this token completes: whole characters only (the library holds
     * back the bytes of a character split over tokens until the token that
     * completes it), possibly "". The texts of a generation concatenate to
     * [Model.detokenize] of its tokens. `null` when the model has no usable
     * tokenizer.
     */
    val text: String?,
    /**
     * Natural log of the probability the model gave this token: the log
     * softmax of the raw logits it was sampled from (before temperature,
     * penalties and filters).
     */
    val logprob: Float,
)

/** Why a generation ended (rd_stop_reason). */
enum class StopReason { MAX_TOKENS, STOP_TOKEN, CALLBACK, CONTEXT_FULL, UNKNOWN }

/**
 * Self-speculative decoding (rd_generate_params.draft_*): [tokens] drafted
 * per verification pass at [iterations] core iterations each, the draft
 * length adapted to acceptance when [adaptive]. Needs fixed limits (no exit
 * criterion, no warm start); greedy output equals plain decoding's when the
 * session's KV budget is at least [ComputeLimits.maxIterations]
 * (docs/semantics.md, section 5).
 */
data class Draft(
    val tokens: Int,
    val iterations: Int = 4,
    val adaptive: Boolean = false,
)

/** Statistics of the last finished generation (rd_generate_stats). */
data class GenerationStats(
    val tokens: Long,
    val promptTokens: Long,
    val prefillIterations: Int,
    val stopReason: StopReason,
    val prefillSeconds: Double,
    val decodeSeconds: Double,
    val meanIterations: Double,
    val kvBytes: Long,
    /** Tokens drafted by speculative decoding (0 without it). */
    val drafted: Long = 0,
    /** Drafted tokens the verifier accepted. */
    val draftAccepted: Long = 0,
    /** Speculative verification passes. */
    val verifyPasses: Long = 0,
)

/** Where the weights and the recurrent block run (rd_backend). */
enum class Backend(internal val code: Int) {
    /** A GPU when the build has one and one is present, else the CPU. */
    AUTO(RdNative.BACKEND_AUTO),
    CPU(RdNative.BACKEND_CPU),
    /** A GPU, or the load fails with [RdException.Status.BACKEND]. */
    GPU(RdNative.BACKEND_GPU),
    /**
     * Vulkan device 0, or the load fails with [RdException.Status.BACKEND]
     * (needs a library built with the `vulkan` feature; docs/vulkan.md).
     */
    VULKAN(RdNative.BACKEND_VULKAN),
}

/** Element type of the KV cache (rd_kv_type). */
enum class KvType(internal val code: Int) { F32(RdNative.KV_F32), F16(RdNative.KV_F16) }

/** How attention is computed (rd_attention): AUTO is separate today (fused: faster prefill, slower decode). */
enum class Attention(internal val code: Int) {
    AUTO(RdNative.ATTENTION_AUTO),
    FUSED(RdNative.ATTENTION_FUSED),
    SEPARATE(RdNative.ATTENTION_SEPARATE),
}

/** Hyper-parameters and placement of a model (rd_model_info). */
data class ModelInfo(
    val architecture: String,
    val backendName: String,
    val vocabularySize: Int,
    val contextLength: Int,
    val embeddingSize: Int,
    val heads: Int,
    val kvHeads: Int,
    val preludeBlocks: Int,
    val coreBlocks: Int,
    val codaBlocks: Int,
    val defaultIterations: Int,
    val threads: Int,
    val weightsMapped: Boolean,
    /** Tokenizer calls, text prompts and [TokenEvent.text] work. */
    val hasTokenizer: Boolean,
    /** [Model.applyChatTemplate] works. */
    val hasChatTemplate: Boolean,
    /** Whether `addSpecial` puts [bosToken] first. */
    val addsBos: Boolean,
    val bosToken: Int?,
    val eosToken: Int?,
    /** End of turn (chat). */
    val eotToken: Int?,
)

/** One message of a conversation, for [Model.applyChatTemplate]. */
data class ChatMessage(
    /** "system", "user", "assistant", ... as the model's template expects. */
    val role: String,
    val content: String,
)

internal fun tokenizeFlags(addSpecial: Boolean, parseSpecial: Boolean): Int =
    (if (addSpecial) RdNative.TOKENIZE_ADD_SPECIAL else 0) or
        (if (parseSpecial) RdNative.TOKENIZE_PARSE_SPECIAL else 0)

/** Sizes and fill level of a session (rd_session_info). */
data class SessionInfo(
    val contextLength: Int,
    val positions: Int,
    val batchSize: Int,
    val kvBudget: Int,
    val kvBytes: Long,
    val computeBytes: Long,
)
