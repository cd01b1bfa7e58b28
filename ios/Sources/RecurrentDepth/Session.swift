import Foundation
import RecurrentDepthC

/// A conversation over a `Model` (`rd_session`): its KV cache and compute
/// buffers, allocated when it is created. Generations run one at a time on
/// the session's own serial queue (a blocking native call each, kept off
/// Swift's cooperative thread pool). `cancel()` and `setComputeLimits(_:)`
/// may be called from anywhere. The session is freed when the last reference
/// goes, which a running generation holds.
public final class Session: @unchecked Sendable {
    let handle: OpaquePointer
    private let queue = DispatchQueue(label: "recurrent-depth.session", qos: .userInitiated)
    private let statsLock = NSLock()
    private var _lastStats: GenerationStats?

    init(handle: OpaquePointer) {
        self.handle = handle
    }

    deinit {
        rd_session_free(handle)
    }

    /// Statistics of the last generation that finished without an error.
    public var lastStats: GenerationStats? {
        statsLock.lock()
        defer { statsLock.unlock() }
        return _lastStats
    }

    /// Evaluates `prompt` (token ids appended to the cached positions; empty
    /// to continue from the last evaluated position), then generates up to
    /// `maxTokens` tokens, delivered as they are made (`rd_generate`).
    ///
    /// Cancelling the consuming `Task` (or dropping the stream) calls
    /// `rd_cancel`, which stops the native computation within one graph node,
    /// also during a long prompt. `sampling` nil decodes greedily. Generation
    /// ends after one of `stopTokens`, or, when none are given and
    /// `defaultStopTokens` is set, after the tokenizer's end-of-text or
    /// end-of-turn token. `TokenEvent.text` renders control tokens unless
    /// `skipSpecialText`. The stream throws `RecurrentDepthError`
    /// (`.invalidArgument`, `.contextFull`, `.busy`, `.backend` when Metal
    /// refuses work in the background, `.cancelled` after `cancel()`).
    ///
    /// The last token is not in the cache: to continue a conversation, pass
    /// it as the first token of the next prompt. `draft` decodes
    /// speculatively (see `Draft`). `prefillIterations` 0 lets the runtime
    /// choose the prompt's iterations (with an exit criterion: up to the
    /// model's default, stopping once the prompt's states settle); a number
    /// runs the prompt at exactly that.
    public func generate(prompt: [Int], limits: ComputeLimits = ComputeLimits(),
                         sampling: Sampling? = nil, maxTokens: Int = 64,
                         stopTokens: [Int] = [], defaultStopTokens: Bool = true,
                         skipSpecialText: Bool = false, prefillIterations: Int = 0,
                         draft: Draft? = nil)
        -> AsyncThrowingStream<TokenEvent, Error>
    {
        stream(.ids(prompt.map { rd_token(truncatingIfNeeded: $0) }), limits, sampling, maxTokens,
               stopTokens, defaultStopTokens, 0, skipSpecialText, prefillIterations, draft)
    }

    /// Like `generate(prompt:)` with token ids, with the prompt as text
    /// tokenized by the model's tokenizer (`rd_generate_text`): special-token
    /// text such as `<|end_turn|>` becomes its id unless `parseSpecial` is
    /// false, and a BOS comes first when the tokenizer asks for one, the cache
    /// is empty and `addSpecial` is set. Suits the output of
    /// `Model.applyChatTemplate`. Also throws `.noTokenizer`, `.tokenizer`.
    public func generate(prompt: String, limits: ComputeLimits = ComputeLimits(),
                         sampling: Sampling? = nil, maxTokens: Int = 64,
                         stopTokens: [Int] = [], defaultStopTokens: Bool = true,
                         skipSpecialText: Bool = false, addSpecial: Bool = true,
                         parseSpecial: Bool = true, prefillIterations: Int = 0,
                         draft: Draft? = nil)
        -> AsyncThrowingStream<TokenEvent, Error>
    {
        stream(.text(Array(prompt.utf8)), limits, sampling, maxTokens, stopTokens, defaultStopTokens,
               tokenizeFlags(addSpecial: addSpecial, parseSpecial: parseSpecial), skipSpecialText,
               prefillIterations, draft)
    }

    private enum Prompt {
        case ids([rd_token])
        case text([UInt8])
    }

    private func stream(_ prompt: Prompt, _ limits: ComputeLimits, _ sampling: Sampling?,
                        _ maxTokens: Int, _ stopTokens: [Int], _ defaultStopTokens: Bool,
                        _ tokenizeFlags: rd_tokenize_flags, _ skipSpecialText: Bool,
                        _ prefillIterations: Int, _ draft: Draft?)
        -> AsyncThrowingStream<TokenEvent, Error>
    {
        var params = rd_generate_default_params()
        params.max_tokens = UInt32(clamping: maxTokens)
        params.prefill_iterations = UInt32(clamping: prefillIterations)
        params.default_stop_tokens = defaultStopTokens
        params.tokenize_flags = tokenizeFlags
        params.detokenize_flags = skipSpecialText ? rd_detokenize_flags(RD_DETOKENIZE_SKIP_SPECIAL) : 0
        if let draft = draft {
            params.draft_tokens = UInt32(clamping: draft.tokens)
            params.draft_iterations = UInt32(clamping: draft.iterations)
            params.draft_adaptive = draft.adaptive
        }
        let request = Request(prompt: prompt, params: params, limits: limits.c, sampling: sampling?.c,
                              stops: stopTokens.map { rd_token(truncatingIfNeeded: $0) })
        return AsyncThrowingStream { continuation in
            let context = GenerationContext(continuation: continuation)
            continuation.onTermination = { termination in
                if case .cancelled = termination {
                    context.cancel(self.handle)
                }
            }
            queue.async {
                guard context.begin() else {
                    continuation.finish(throwing: CancellationError())
                    return
                }
                let result = self.run(request, context)
                context.end()
                switch result {
                case .success(let stats):
                    self.statsLock.lock()
                    self._lastStats = stats
                    self.statsLock.unlock()
                    continuation.finish()
                case .failure(let error):
                    continuation.finish(throwing: error)
                }
            }
        }
    }

    /// Everything one generation reads, copied when it is requested.
    private struct Request {
        let prompt: Prompt
        let params: rd_generate_params
        let limits: rd_compute_limits
        let sampling: rd_sampling_params?
        let stops: [rd_token]
    }

    /// Runs rd_generate or rd_generate_text on the session queue; errors are
    /// read on this thread.
    private func run(_ request: Request, _ context: GenerationContext) -> Result<GenerationStats, Error> {
        var params = request.params
        var limits = request.limits
        var sampling = request.sampling ?? rd_sampling_default_params()
        let useSampling = request.sampling != nil
        var stats = rd_generate_stats()
        stats.struct_size = MemoryLayout<rd_generate_stats>.size
        let user = Unmanaged.passUnretained(context).toOpaque()
        let status: rd_status = withUnsafePointer(to: &limits) { limitsPtr in
            withUnsafePointer(to: &sampling) { samplingPtr in
                request.stops.withUnsafeBufferPointer { stopBuf in
                    params.limits = limitsPtr
                    params.sampling = useSampling ? samplingPtr : nil
                    params.stop_tokens = stopBuf.count > 0 ? stopBuf.baseAddress : nil
                    params.n_stop_tokens = stopBuf.count
                    switch request.prompt {
                    case .ids(let tokens):
                        return tokens.withUnsafeBufferPointer { buf in
                            rd_generate(handle, buf.count > 0 ? buf.baseAddress : nil, buf.count,
                                        &params, tokenCallback, user, &stats)
                        }
                    case .text(let bytes):
                        return bytes.withUnsafeBufferPointer { buf in
                            let text = buf.baseAddress.map {
                                UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self)
                            }
                            return rd_generate_text(handle, buf.count > 0 ? text : nil, buf.count,
                                                    &params, tokenCallback, user, &stats)
                        }
                    }
                }
            }
        }
        if status != RD_OK {
            return .failure(RecurrentDepthError(status))
        }
        return .success(GenerationStats(
            tokens: stats.n_tokens,
            promptTokens: stats.n_prompt_tokens,
            prefillIterations: Int(stats.prefill_iterations),
            stopReason: StopReason(rawValue: Int(stats.stop_reason)) ?? .unknown,
            prefillSeconds: stats.prefill_seconds,
            decodeSeconds: stats.decode_seconds,
            meanIterations: stats.mean_iterations,
            kvBytes: stats.kv_bytes,
            drafted: Int(stats.n_drafted),
            draftAccepted: Int(stats.n_draft_accepted),
            verifyPasses: Int(stats.n_verify_passes)
        ))
    }

    /// Changes the limits of the running generation from the next token on
    /// (`rd_set_compute_limits`). Throws `.invalidState` when none runs.
    public func setComputeLimits(_ limits: ComputeLimits) throws {
        var l = limits.c
        try check(rd_set_compute_limits(handle, &l))
    }

    /// Stops the running generation (`rd_cancel`); its stream throws
    /// `.cancelled`. A cancel while nothing runs is dropped.
    public func cancel() {
        _ = rd_cancel(handle)
    }

    /// Forgets every cached position (`rd_session_reset`). Runs after the
    /// generations already started on this session.
    public func reset() throws {
        try onQueue { rd_session_reset($0) }
    }

    /// Runs one C call on the session's queue (after the generations already
    /// started) and throws its failure.
    private func onQueue(_ call: (OpaquePointer) -> rd_status) throws {
        let status = queue.sync { () -> Result<Void, Error> in
            let st = call(handle)
            return st == RD_OK ? .success(()) : .failure(RecurrentDepthError(st))
        }
        try status.get()
    }

    /// Drops the cached positions from `keep` on (`rd_session_truncate`): to
    /// regenerate from an edited message, truncate to where it starts and
    /// generate from its new tokens.
    public func truncate(to keep: Int) throws {
        try onQueue { rd_session_truncate($0, UInt32(clamping: keep)) }
    }

    /// Computes with `threads` CPU threads from the next call on (0 = one per
    /// physical core), e.g. fewer while the app is in the background
    /// (`rd_session_set_threads`).
    public func setThreads(_ threads: Int) throws {
        try onQueue { rd_session_set_threads($0, UInt32(clamping: threads)) }
    }

    /// The session's state (`rd_session_state_save`: cached positions, last
    /// logits), to keep a conversation across the app being terminated in the
    /// background; restore it with `loadState` into a session over the same
    /// model file, KV budget and KV type.
    public func saveState() throws -> Data {
        var data = Data()
        try onQueue { h in
            var size = 0
            let st = rd_session_state_size(h, &size)
            if st != RD_OK { return st }
            data = Data(count: size)
            var written = 0
            let rc = data.withUnsafeMutableBytes { buf in
                rd_session_state_save(h, buf.bindMemory(to: UInt8.self).baseAddress, size, &written)
            }
            data.count = written
            return rc
        }
        return data
    }

    /// Restores a state from `saveState` (`rd_session_state_load`). A state of
    /// another model file, budget or KV type, or a corrupt one, throws
    /// `.invalidArgument` and leaves the session unchanged.
    public func loadState(_ state: Data) throws {
        try onQueue { h in
            state.withUnsafeBytes { buf in
                rd_session_state_load(h, buf.bindMemory(to: UInt8.self).baseAddress, buf.count)
            }
        }
    }

    /// `saveState` into a file (`rd_session_state_save_file`).
    public func saveState(toFile path: String) throws {
        try onQueue { rd_session_state_save_file($0, path) }
    }

    /// `loadState` from a file written by `saveState(toFile:)`
    /// (`rd_session_state_load_file`).
    public func loadState(fromFile path: String) throws {
        try onQueue { rd_session_state_load_file($0, path) }
    }

    /// Sizes and fill level (`rd_session_get_info`), after the generations
    /// already started on this session.
    public var info: SessionInfo {
        get throws {
            try queue.sync { () -> Result<SessionInfo, Error> in
                var i = rd_session_info()
                i.struct_size = MemoryLayout<rd_session_info>.size
                let st = rd_session_get_info(handle, &i)
                if st != RD_OK {
                    return .failure(RecurrentDepthError(st))
                }
                return .success(SessionInfo(
                    contextLength: Int(i.n_ctx),
                    positions: Int(i.n_past),
                    batchSize: Int(i.n_batch),
                    kvBudget: Int(i.kv_budget),
                    kvBytes: i.kv_bytes,
                    computeBytes: i.compute_bytes
                ))
            }.get()
        }
    }
}

/// State of one generation, shared by its stream and the C callback.
private final class GenerationContext: @unchecked Sendable {
    let continuation: AsyncThrowingStream<TokenEvent, Error>.Continuation
    private let lock = NSLock()
    private var running = false
    private var cancelled = false

    init(continuation: AsyncThrowingStream<TokenEvent, Error>.Continuation) {
        self.continuation = continuation
    }

    /// On the queue, before rd_generate: false when already cancelled.
    func begin() -> Bool {
        lock.lock()
        defer { lock.unlock() }
        running = !cancelled
        return running
    }

    /// On the queue, after rd_generate returned.
    func end() {
        lock.lock()
        running = false
        lock.unlock()
    }

    /// From the stream's termination: cancels this generation only, never a
    /// later one on the same session.
    func cancel(_ session: OpaquePointer) {
        lock.lock()
        defer { lock.unlock() }
        cancelled = true
        if running {
            _ = rd_cancel(session)
        }
    }

    /// Called for every token; false stops generation.
    func deliver(_ ev: UnsafePointer<rd_token_event>) -> Bool {
        var text: String?
        if ev.pointee.struct_size >= MemoryLayout<rd_token_event>.size, let bytes = ev.pointee.text {
            // The library sends whole characters only.
            text = String(decoding: UnsafeRawBufferPointer(start: bytes, count: ev.pointee.text_len),
                          as: UTF8.self)
        }
        let value = ev.pointee.exit_value
        let event = TokenEvent(
            token: Int(ev.pointee.token),
            iterations: Int(ev.pointee.iterations),
            index: ev.pointee.index,
            exitValue: value.isNaN ? nil : value,
            text: text,
            logprob: ev.pointee.logprob
        )
        if case .terminated = continuation.yield(event) {
            return false
        }
        return true
    }
}

/// The C callback: forwards to the GenerationContext passed as user data.
private let tokenCallback: rd_token_callback = { event, userData in
    guard let event, let userData else { return false }
    return Unmanaged<GenerationContext>.fromOpaque(userData).takeUnretainedValue().deliver(event)
}
