package dev.recurrentdepth

import kotlinx.coroutines.CoroutineDispatcher
import kotlinx.coroutines.Dispatchers

/**
 * A loaded model (rd_model): hyper-parameters and weights, memory-mapped and
 * used in place. Thread-safe; any number of [Session]s may run on it at once.
 * Sessions keep the weights alive, so the model may be closed before them.
 *
 * ```kotlin
 * val model = withContext(Dispatchers.IO) { Model.load(file.path, threads = 4) }
 * val session = model.newSession(contextLength = 2048)
 * model.close()
 * session.generate(promptIds, ComputeLimits(4, 32, exit = ExitCriterion.Kl()))
 *     .collect { print(it.text ?: "<${it.token}>") }
 * ```
 */
class Model private constructor(private var handle: Long) : AutoCloseable {
    companion object {
        /** The native library's version, "MAJOR.MINOR.PATCH" (rd_version). */
        @JvmStatic
        val libraryVersion: String
            get() = RdNative.version()

        /**
         * Loads a huginn GGUF file (rd_model_load). Blocks while the file is
         * parsed and validated and the weights are mapped (and, with
         * [prefetch], read once): call it off the main thread. [threads] = 0 uses one thread per physical core;
         * on phones the big cores alone are usually faster (docs/android.md).
         * [repack] converts the matrices the CPU has interleaved kernels for
         * into memory the app owns (faster products; false keeps every weight
         * in the shared, reclaimable page cache: docs/performance.md).
         * [prefetch] reads the weights used in place once while loading, so
         * that the first tokens do not wait on page faults (false: a faster
         * load, slower first tokens).
         *
         * @throws RdException IO (missing or unreadable file), INVALID_MODEL,
         *     UNSUPPORTED_ARCHITECTURE, BACKEND, OUT_OF_MEMORY, INVALID_ARGUMENT
         */
        @JvmStatic
        @JvmOverloads
        fun load(
            path: String,
            backend: Backend = Backend.AUTO,
            threads: Int = 0,
            useMmap: Boolean = true,
            useMlock: Boolean = false,
            repack: Boolean = true,
            prefetch: Boolean = true,
        ): Model = Model(RdNative.modelLoad(path, backend.code, threads, useMmap, useMlock, repack, prefetch))

        /**
         * Loads a model stored as [length] bytes of the open file [fd] from
         * [offset] ([length] 0: to the end of the file), as an uncompressed
         * APK asset is: `assets.openFd(name).use { Model.loadFd(it.parcelFileDescriptor.fd,
         * it.startOffset, it.length) }` (rd_model_load_fd). The descriptor is
         * borrowed: the library keeps its own duplicate, so the caller may close
         * it afterwards. Weights are used in place when [offset] is a multiple
         * of 32 (`zipalign -p` assets), otherwise copied once.
         *
         * @throws RdException IO (not a regular file, range outside the file),
         *     INVALID_MODEL (the range is not one GGUF file), as [load] otherwise
         */
        @JvmStatic
        @JvmOverloads
        fun loadFd(
            fd: Int,
            offset: Long,
            length: Long,
            backend: Backend = Backend.AUTO,
            threads: Int = 0,
            useMmap: Boolean = true,
            repack: Boolean = true,
            prefetch: Boolean = true,
        ): Model =
            Model(RdNative.modelLoadFd(fd, offset, length, backend.code, threads, useMmap, false, repack, prefetch))
    }

    private val lock = Any()

    private fun live(): Long {
        check(handle != 0L) { "the model is closed" }
        return handle
    }

    /** What the file declares and where the weights live (rd_model_get_info). */
    val info: ModelInfo
        get() = synchronized(lock) {
            val h = live()
            val a = RdNative.modelInfo(h)
            ModelInfo(
                architecture = RdNative.modelArchitecture(h),
                backendName = RdNative.modelBackendName(h),
                vocabularySize = a[RdNative.MI_N_VOCAB],
                contextLength = a[RdNative.MI_CONTEXT_LENGTH],
                embeddingSize = a[RdNative.MI_N_EMBD],
                heads = a[RdNative.MI_N_HEAD],
                kvHeads = a[RdNative.MI_N_HEAD_KV],
                preludeBlocks = a[RdNative.MI_N_PRELUDE],
                coreBlocks = a[RdNative.MI_N_CORE],
                codaBlocks = a[RdNative.MI_N_CODA],
                defaultIterations = a[RdNative.MI_DEFAULT_ITERATIONS],
                threads = a[RdNative.MI_N_THREADS],
                weightsMapped = a[RdNative.MI_WEIGHTS_MAPPED] != 0,
                hasTokenizer = a[RdNative.MI_HAS_TOKENIZER] != 0,
                hasChatTemplate = a[RdNative.MI_HAS_CHAT_TEMPLATE] != 0,
                addsBos = a[RdNative.MI_ADD_BOS] != 0,
                bosToken = token(a[RdNative.MI_BOS_TOKEN]),
                eosToken = token(a[RdNative.MI_EOS_TOKEN]),
                eotToken = token(a[RdNative.MI_EOT_TOKEN]),
            )
        }

    private fun token(id: Int): Int? = if (id == RdNative.TOKEN_NONE) null else id

    /**
     * The token ids of [text] (rd_tokenize). [addSpecial] puts the BOS first
     * when the tokenizer asks for one; [parseSpecial] turns special-token text
     * (`<|end_turn|>`) into its id.
     * @throws RdException NO_TOKENIZER, TOKENIZER, INVALID_ARGUMENT
     */
    @JvmOverloads
    fun tokenize(text: String, addSpecial: Boolean = false, parseSpecial: Boolean = false): IntArray =
        synchronized(lock) { RdNative.tokenize(live(), text, tokenizeFlags(addSpecial, parseSpecial)) }

    /**
     * The text of [tokens] (rd_detokenize); control tokens produce no text
     * with [skipSpecial].
     * @throws RdException NO_TOKENIZER, TOKENIZER, INVALID_ARGUMENT (an id out of range)
     */
    @JvmOverloads
    fun detokenize(tokens: IntArray, skipSpecial: Boolean = false): String = synchronized(lock) {
        RdNative.detokenize(live(), tokens, if (skipSpecial) RdNative.DETOKENIZE_SKIP_SPECIAL else 0)
    }

    /**
     * Renders [messages] with the model's chat template
     * (rd_chat_apply_template); [addGenerationPrompt] ends with the header of
     * the assistant's turn, ready for [Session.generate] with a text prompt.
     * @throws RdException NO_TEMPLATE, CHAT_TEMPLATE, INVALID_ARGUMENT
     */
    @JvmOverloads
    fun applyChatTemplate(messages: List<ChatMessage>, addGenerationPrompt: Boolean = true): String =
        synchronized(lock) {
            RdNative.chatApplyTemplate(
                live(),
                messages.map { it.role }.toTypedArray(),
                messages.map { it.content }.toTypedArray(),
                addGenerationPrompt,
            )
        }

    /**
     * Creates a session (rd_session_new), allocating its whole KV cache now:
     * [contextLength] positions (null = the model's training context) and
     * [kvBudget] slots per core block (B). Memory grows with both; see
     * [SessionInfo.kvBytes] and docs/android.md. Generation runs on
     * [dispatcher] (a blocking native call per generation). [threadPoll]
     * (0..100) is how hard idle CPU threads spin for work before sleeping:
     * 0 saves battery at some speed. [attention] picks fused or separate
     * attention (docs/performance.md).
     */
    @JvmOverloads
    fun newSession(
        contextLength: Int? = null,
        kvBudget: Int = 1,
        kvType: KvType = KvType.F32,
        batchSize: Int = 0,
        randomInitialState: Boolean = false,
        seed: Long = 0,
        dispatcher: CoroutineDispatcher = Dispatchers.IO,
        threadPoll: Int = 50,
        attention: Attention = Attention.AUTO,
    ): Session = synchronized(lock) {
        val h = RdNative.sessionNew(
            live(),
            contextLength ?: RdNative.N_CTX_FROM_MODEL,
            batchSize,
            kvBudget,
            kvType.code,
            if (randomInitialState) RdNative.STATE_INIT_RANDOM else RdNative.STATE_INIT_ZEROS,
            seed,
            threadPoll,
            attention.code,
        )
        Session(h, dispatcher)
    }

    /** Releases this reference to the weights; sessions keep working. Idempotent. */
    override fun close() {
        synchronized(lock) {
            if (handle != 0L) {
                RdNative.modelFree(handle)
                handle = 0L
            }
        }
    }
}
