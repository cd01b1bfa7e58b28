package dev.recurrentdepth

import java.util.concurrent.atomic.AtomicBoolean
import kotlinx.coroutines.CancellationException
import kotlinx.coroutines.CoroutineDispatcher
import kotlinx.coroutines.CoroutineStart
import kotlinx.coroutines.awaitCancellation
import kotlinx.coroutines.channels.trySendBlocking
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.channelFlow
import kotlinx.coroutines.isActive
import kotlinx.coroutines.launch
import kotlinx.coroutines.withContext

/**
 * A conversation over a [Model] (rd_session): its KV cache and compute
 * buffers, allocated when it is created. One generation at a time (a second
 * one started while the first runs fails with [RdException.Status.BUSY]);
 * [cancel], [setComputeLimits] and [close] may be called from any thread.
 */
class Session internal constructor(
    handle: Long,
    private val dispatcher: CoroutineDispatcher,
) : AutoCloseable {
    // Owns the rd_session pointer; frees it only when no call is in flight.
    private val native = SessionHandle(handle)

    /** Statistics of the last generation that finished without an error. */
    @Volatile
    var lastStats: GenerationStats? = null
        private set

    /**
     * Evaluates [prompt] (token ids appended to the cached positions; empty to
     * continue from the last evaluated position), then generates up to
     * [maxTokens] tokens, emitted as they are made (rd_generate).
     *
     * The flow is cold: each collection runs one generation, on the session's
     * dispatcher. Cancelling the collecting coroutine (or `take(n)`, a
     * timeout, a closed scope) calls rd_cancel, which stops the native
     * computation within one graph node, also during a long prompt. A slow
     * collector pauses generation (the buffer holds 64 events). [sampling]
     * null decodes greedily. Generation ends after one of [stopTokens], or,
     * when none are given and [defaultStopTokens] is set, after the
     * tokenizer's end-of-text or end-of-turn token. [TokenEvent.text] renders
     * control tokens unless [skipSpecialText].
     *
     * The last emitted token is not in the cache: to continue a conversation,
     * pass it as the first token of the next prompt. [draft] decodes
     * speculatively (see [Draft]); [lastStats] then counts the drafts.
     * [prefillIterations] 0 lets the runtime choose the prompt's iterations
     * (with an exit criterion: up to the model's default, stopping once the
     * prompt's states settle); a number runs the prompt at exactly that.
     *
     * @throws RdException INVALID_ARGUMENT (limits, token ids), CONTEXT_FULL
     *     (the prompt does not fit), CANCELLED (by [cancel] or [close]),
     *     BUSY, BACKEND (e.g. GPU work refused)
     */
    fun generate(
        prompt: IntArray,
        limits: ComputeLimits = ComputeLimits(),
        sampling: Sampling? = null,
        maxTokens: Int = 64,
        stopTokens: IntArray = IntArray(0),
        defaultStopTokens: Boolean = true,
        skipSpecialText: Boolean = false,
        prefillIterations: Int = 0,
        draft: Draft? = null,
    ): Flow<TokenEvent> = run(
        prompt, null, limits, sampling, maxTokens, stopTokens, defaultStopTokens,
        0, skipSpecialText, prefillIterations, draft,
    )

    /**
     * Like the other [generate], with the prompt as text, tokenized with the
     * model's tokenizer (rd_generate_text): special-token text such as
     * `<|end_turn|>` becomes its id unless [parseSpecial] is false, and a BOS
     * comes first when the tokenizer asks for one, the cache is empty and
     * [addSpecial] is set. Suits the output of [Model.applyChatTemplate].
     *
     * @throws RdException also NO_TOKENIZER, TOKENIZER
     */
    fun generate(
        prompt: String,
        limits: ComputeLimits = ComputeLimits(),
        sampling: Sampling? = null,
        maxTokens: Int = 64,
        stopTokens: IntArray = IntArray(0),
        defaultStopTokens: Boolean = true,
        skipSpecialText: Boolean = false,
        addSpecial: Boolean = true,
        parseSpecial: Boolean = true,
        prefillIterations: Int = 0,
        draft: Draft? = null,
    ): Flow<TokenEvent> = run(
        null, prompt.toByteArray(Charsets.UTF_8), limits, sampling, maxTokens, stopTokens,
        defaultStopTokens, tokenizeFlags(addSpecial, parseSpecial), skipSpecialText, prefillIterations,
        draft,
    )

    private fun run(
        ids: IntArray?,
        text: ByteArray?,
        limits: ComputeLimits,
        sampling: Sampling?,
        maxTokens: Int,
        stopTokens: IntArray,
        defaultStopTokens: Boolean,
        tokenizeFlags: Int,
        skipSpecialText: Boolean,
        prefillIterations: Int,
        draft: Draft?,
    ): Flow<TokenEvent> = channelFlow {
        val h = native.acquire()
        try {
            val finished = AtomicBoolean(false)
            // Coroutine cancellation -> rd_cancel. The native call below blocks
            // its thread and cannot see cancellation on its own.
            val canceller = launch(start = CoroutineStart.UNDISPATCHED) {
                try {
                    awaitCancellation()
                } finally {
                    if (!finished.get()) native.cancel()
                }
            }
            val stats = try {
                withContext(dispatcher) {
                    val s = sampling ?: Sampling(greedy = true)
                    RdNative.generate(
                        h, ids, text, maxTokens, prefillIterations,
                        limits.minIterations, limits.maxIterations, limits.checkEvery,
                        limits.exit.code, limits.exit.threshold, limits.warmStart, limits.exitInPrefill,
                        limits.exitScreen.code, limits.exitScreen.threshold,
                        limits.prefillExit.code, limits.prefillExit.threshold, limits.leadIn,
                        sampling != null, s.temperature, s.topK, s.topP, s.minP,
                        s.repeatPenalty, s.repeatLastN, s.seed, s.greedy,
                        stopTokens, defaultStopTokens, tokenizeFlags,
                        if (skipSpecialText) RdNative.DETOKENIZE_SKIP_SPECIAL else 0,
                        draft?.tokens ?: 0, draft?.iterations ?: 4, draft?.adaptive ?: false,
                        TokenListener { token, iterations, index, exitValue, bytes, logprob ->
                            val event = TokenEvent(
                                token = token,
                                iterations = iterations,
                                index = index,
                                exitValue = if (exitValue.isNaN()) null else exitValue,
                                // The library sends whole characters only.
                                text = bytes?.let { String(it, Charsets.UTF_8) },
                                logprob = logprob,
                            )
                            // Blocks while the buffer is full; fails once the
                            // collector is gone, which stops generation.
                            channel.trySendBlocking(event).isSuccess
                        },
                    )
                }
            } catch (e: RdException) {
                // Our own rd_cancel after the collector went away: report it
                // as the coroutine cancellation it is.
                if (e.status == RdException.Status.CANCELLED && !isActive) {
                    throw CancellationException("generation cancelled").apply { initCause(e) }
                }
                throw e
            } finally {
                finished.set(true)
                canceller.cancel()
            }
            lastStats = GenerationStats(
                tokens = stats[RdNative.GS_N_TOKENS].toLong(),
                promptTokens = stats[RdNative.GS_N_PROMPT_TOKENS].toLong(),
                prefillIterations = stats[RdNative.GS_PREFILL_ITERATIONS].toInt(),
                stopReason = StopReason.entries.getOrElse(stats[RdNative.GS_STOP_REASON].toInt()) {
                    StopReason.UNKNOWN
                },
                prefillSeconds = stats[RdNative.GS_PREFILL_SECONDS],
                decodeSeconds = stats[RdNative.GS_DECODE_SECONDS],
                meanIterations = stats[RdNative.GS_MEAN_ITERATIONS],
                kvBytes = stats[RdNative.GS_KV_BYTES].toLong(),
                drafted = stats[RdNative.GS_N_DRAFTED].toLong(),
                draftAccepted = stats[RdNative.GS_N_DRAFT_ACCEPTED].toLong(),
                verifyPasses = stats[RdNative.GS_N_VERIFY_PASSES].toLong(),
            )
        } finally {
            native.release()
        }
    }

    /**
     * Changes the limits of the running generation from the next token on
     * (rd_set_compute_limits): e.g. think harder when the user asks for it.
     * @throws RdException INVALID_STATE when no generation runs
     */
    fun setComputeLimits(limits: ComputeLimits) {
        val h = native.acquire()
        try {
            RdNative.setComputeLimits(
                h, limits.minIterations, limits.maxIterations, limits.checkEvery,
                limits.exit.code, limits.exit.threshold, limits.warmStart, limits.exitInPrefill,
                limits.exitScreen.code, limits.exitScreen.threshold,
                limits.prefillExit.code, limits.prefillExit.threshold, limits.leadIn,
            )
        } finally {
            native.release()
        }
    }

    /** Stops the running generation (rd_cancel); it fails with CANCELLED. Any thread. */
    fun cancel() = native.cancel()

    /** Forgets every cached position (rd_session_reset). Not during a generation (BUSY). */
    fun reset() {
        val h = native.acquire()
        try {
            RdNative.sessionReset(h)
        } finally {
            native.release()
        }
    }

    /** Runs [block] on the session's handle between acquire and release. */
    private inline fun <T> withHandle(block: (Long) -> T): T {
        val h = native.acquire()
        try {
            return block(h)
        } finally {
            native.release()
        }
    }

    /**
     * Drops the cached positions from [keep] on (rd_session_truncate): to
     * regenerate from an edited message, truncate to where it starts and
     * generate from its new tokens. Not during a generation (BUSY).
     */
    fun truncate(keep: Int) = withHandle { RdNative.sessionTruncate(it, keep) }

    /**
     * Computes with [threads] CPU threads from the next call on (0 = one per
     * physical core), e.g. 1 while the app is in the background
     * (rd_session_set_threads). Not during a generation (BUSY).
     */
    fun setThreads(threads: Int) = withHandle { RdNative.sessionSetThreads(it, threads) }

    /**
     * The session's state (cached positions, last logits; rd_session_state_save)
     * to keep a conversation across the app's process being killed: write it
     * to a file in onStop, and [loadState] it into a new session over the same
     * model file. Not during a generation (BUSY).
     */
    fun saveState(): ByteArray = withHandle { RdNative.stateSave(it) }

    /**
     * Restores a state from [saveState] (rd_session_state_load). A state of
     * another model file, KV budget or KV type, or a corrupt one, throws
     * INVALID_ARGUMENT and leaves the session unchanged.
     */
    fun loadState(state: ByteArray) = withHandle { RdNative.stateLoad(it, state) }

    /** Sizes and fill level (rd_session_get_info). Not during a generation (BUSY). */
    val info: SessionInfo
        get() {
            val h = native.acquire()
            try {
                val a = RdNative.sessionInfo(h)
                return SessionInfo(
                    contextLength = a[RdNative.SI_N_CTX].toInt(),
                    positions = a[RdNative.SI_N_PAST].toInt(),
                    batchSize = a[RdNative.SI_N_BATCH].toInt(),
                    kvBudget = a[RdNative.SI_KV_BUDGET].toInt(),
                    kvBytes = a[RdNative.SI_KV_BYTES],
                    computeBytes = a[RdNative.SI_COMPUTE_BYTES],
                )
            } finally {
                native.release()
            }
        }

    /**
     * Frees the session. Safe during a generation: that one is cancelled and
     * the memory is freed when it returns. Idempotent.
     */
    override fun close() = native.close()
}
