import Foundation
import RecurrentDepthC

/// A loaded model (`rd_model`): hyper-parameters and weights, memory-mapped
/// and used in place. Thread-safe; any number of sessions may run on it at
/// once, and sessions keep the weights alive after the model is released.
///
/// ```swift
/// let model = try Model(path: url.path, threads: 4)
/// let session = try model.makeSession(contextLength: 2048)
/// for try await event in session.generate(prompt: ids, limits: .init(minIterations: 4, maxIterations: 32, exit: .kl())) {
///     print(event.text ?? "<\(event.token)>", event.iterations)
/// }
/// ```
public final class Model: @unchecked Sendable {
    let handle: OpaquePointer

    /// The library's version, "MAJOR.MINOR.PATCH" (`rd_version`).
    public static var libraryVersion: String { String(cString: rd_version()) }

    /// Loads a huginn GGUF file (`rd_model_load`). Blocks while the file is
    /// parsed and validated and the weights are mapped (and, with
    /// `prefetch`, read once): call it off the main actor. `threads` 0 uses
    /// one thread per physical core.
    /// `repack` converts the matrices the CPU has interleaved kernels for into
    /// memory the app owns (faster products); false keeps every weight in the
    /// shared, reclaimable page cache (docs/performance.md). `prefetch` reads
    /// the weights used in place once while loading, so that the first
    /// tokens do not wait on page faults (false: a faster load, slower first
    /// tokens).
    public init(path: String, backend: Backend = .auto, threads: Int = 0,
                useMmap: Bool = true, useMlock: Bool = false, repack: Bool = true,
                prefetch: Bool = true) throws {
        var params = rd_model_default_params()
        params.backend = backend.code
        params.n_threads = UInt32(clamping: threads)
        params.use_mmap = useMmap
        params.use_mlock = useMlock
        params.repack = rd_repack(repack ? RD_REPACK_AUTO : RD_REPACK_OFF)
        params.prefetch = prefetch
        var model: OpaquePointer?
        try check(rd_model_load(path, &params, &model))
        guard let model else { throw RecurrentDepthError(RD_ERR_PANIC) }
        handle = model
    }

    /// Loads a model stored as `length` bytes of the open file `fileDescriptor`
    /// from `offset` (`length` 0: to the end of the file), e.g. a model inside
    /// a larger bundle file (`rd_model_load_fd`). The descriptor is borrowed:
    /// the library keeps its own duplicate. Weights are used in place when
    /// `offset` is a multiple of 32, otherwise copied once.
    public init(fileDescriptor: Int32, offset: UInt64, length: UInt64 = 0,
                backend: Backend = .auto, threads: Int = 0, useMmap: Bool = true,
                repack: Bool = true, prefetch: Bool = true) throws {
        var params = rd_model_default_params()
        params.backend = backend.code
        params.n_threads = UInt32(clamping: threads)
        params.use_mmap = useMmap
        params.repack = rd_repack(repack ? RD_REPACK_AUTO : RD_REPACK_OFF)
        params.prefetch = prefetch
        var model: OpaquePointer?
        try check(rd_model_load_fd(fileDescriptor, offset, length, &params, &model))
        guard let model else { throw RecurrentDepthError(RD_ERR_PANIC) }
        handle = model
    }

    deinit {
        rd_model_free(handle)
    }

    /// What the file declares and where the weights live (`rd_model_get_info`).
    public var info: ModelInfo {
        get throws {
            var i = rd_model_info()
            i.struct_size = MemoryLayout<rd_model_info>.size
            try check(rd_model_get_info(handle, &i))
            return ModelInfo(
                architecture: String(cString: i.architecture),
                backendName: String(cString: i.backend_name),
                vocabularySize: Int(i.n_vocab),
                contextLength: Int(i.context_length),
                embeddingSize: Int(i.n_embd),
                heads: Int(i.n_head),
                kvHeads: Int(i.n_head_kv),
                preludeBlocks: Int(i.n_prelude),
                coreBlocks: Int(i.n_core),
                codaBlocks: Int(i.n_coda),
                defaultIterations: Int(i.default_iterations),
                threads: Int(i.n_threads),
                weightsMapped: i.weights_mapped,
                hasTokenizer: i.has_tokenizer,
                hasChatTemplate: i.has_chat_template,
                addsBOS: i.add_bos,
                bosToken: Model.token(i.bos_token),
                eosToken: Model.token(i.eos_token),
                eotToken: Model.token(i.eot_token)
            )
        }
    }

    private static func token(_ id: rd_token) -> Int? {
        id == rd_token(RD_TOKEN_NONE) ? nil : Int(id)
    }

    /// The token ids of `text` (`rd_tokenize`). `addSpecial` puts the BOS
    /// first when the tokenizer asks for one; `parseSpecial` turns
    /// special-token text (`<|end_turn|>`) into its id. Throws `.noTokenizer`,
    /// `.tokenizer`, `.invalidArgument`.
    public func tokenize(_ text: String, addSpecial: Bool = false, parseSpecial: Bool = false) throws -> [Int] {
        let flags = tokenizeFlags(addSpecial: addSpecial, parseSpecial: parseSpecial)
        let bytes = Array(text.utf8)
        return try bytes.withUnsafeBufferPointer { buf -> [Int] in
            let base = buf.baseAddress.map { UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self) }
            var n = 0
            // Size negotiation: ask for the count, then fill a buffer of that size.
            let st = rd_tokenize(handle, base, buf.count, flags, nil, 0, &n)
            if st == RD_OK { return [] }
            if st != RD_ERR_BUFFER_TOO_SMALL { throw RecurrentDepthError(st) }
            var ids = [rd_token](repeating: 0, count: n)
            var got = 0
            try check(rd_tokenize(handle, base, buf.count, flags, &ids, n, &got))
            return ids.prefix(got).map { Int($0) }
        }
    }

    /// The text of `tokens` (`rd_detokenize`); control tokens produce no text
    /// with `skipSpecial`. Throws `.noTokenizer`, `.tokenizer`,
    /// `.invalidArgument` (an id out of range).
    public func detokenize(_ tokens: [Int], skipSpecial: Bool = false) throws -> String {
        let ids = tokens.map { rd_token(truncatingIfNeeded: $0) }
        let flags = skipSpecial ? rd_detokenize_flags(RD_DETOKENIZE_SKIP_SPECIAL) : 0
        return try ids.withUnsafeBufferPointer { buf in
            try Model.text { out, capacity, len in
                rd_detokenize(handle, buf.baseAddress, buf.count, flags, out, capacity, len)
            }
        }
    }

    /// Renders `messages` with the model's chat template
    /// (`rd_chat_apply_template`); `addGenerationPrompt` ends with the header
    /// of the assistant's turn, ready for `Session.generate(prompt:)` with
    /// text. Throws `.noTemplate`, `.chatTemplate`, `.invalidArgument`.
    public func applyChatTemplate(_ messages: [ChatMessage], addGenerationPrompt: Bool = true) throws -> String {
        // NUL-terminated copies that live until the call returns.
        let roles = messages.map { strdup($0.role) }
        let contents = messages.map { strdup($0.content) }
        defer {
            roles.forEach { free($0) }
            contents.forEach { free($0) }
        }
        let cMessages = zip(roles, contents).map {
            rd_chat_message(role: UnsafePointer($0.0), content: UnsafePointer($0.1))
        }
        return try cMessages.withUnsafeBufferPointer { buf in
            try Model.text { out, capacity, len in
                rd_chat_apply_template(handle, buf.baseAddress, buf.count, addGenerationPrompt,
                                       out, capacity, len)
            }
        }
    }

    /// Runs a size-negotiating call that writes text twice: for the length,
    /// then into a buffer of that length plus a NUL.
    private static func text(_ call: (UnsafeMutablePointer<CChar>?, Int, UnsafeMutablePointer<Int>) -> rd_status)
        throws -> String
    {
        var len = 0
        let st = call(nil, 0, &len)
        if st != RD_OK && st != RD_ERR_BUFFER_TOO_SMALL { throw RecurrentDepthError(st) }
        let capacity = len + 1
        var buf = [CChar](repeating: 0, count: capacity)
        var got = 0
        try check(call(&buf, capacity, &got))
        return buf.withUnsafeBufferPointer { p in
            String(decoding: UnsafeRawBufferPointer(start: p.baseAddress, count: got), as: UTF8.self)
        }
    }

    /// Creates a session (`rd_session_new`), allocating its whole KV cache
    /// now: `contextLength` positions (nil = the model's training context)
    /// and `kvBudget` slots per core block (B). See docs/ios.md for memory.
    /// `threadPoll` (0...100): how hard idle CPU threads spin for work before
    /// sleeping (0 saves battery at some speed); `attention`: fused or
    /// separate (docs/performance.md).
    public func makeSession(contextLength: Int? = nil, kvBudget: Int = 1, kvType: KVType = .f32,
                            batchSize: Int = 0, randomInitialState: Bool = false,
                            seed: UInt64 = 0, threadPoll: Int = 50,
                            attention: Attention = .auto) throws -> Session {
        var p = rd_session_default_params()
        if let contextLength {
            p.n_ctx = UInt32(clamping: contextLength)
        }
        p.n_batch = UInt32(clamping: batchSize)
        p.kv_budget = UInt32(clamping: kvBudget)
        p.kv_type = kvType.code
        p.state_init = rd_state_init(randomInitialState ? RD_STATE_INIT_RANDOM : RD_STATE_INIT_ZEROS)
        p.seed = seed
        p.thread_poll = UInt32(clamping: threadPoll)
        p.attention = attention.code
        var session: OpaquePointer?
        try check(rd_session_new(handle, &p, &session))
        guard let session else { throw RecurrentDepthError(RD_ERR_PANIC) }
        return Session(handle: session)
    }
}
