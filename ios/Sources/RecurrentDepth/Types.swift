import RecurrentDepthC

/// When a token may stop iterating before `ComputeLimits.maxIterations`
/// (`rd_exit_criterion` and its threshold). Criteria on logits run the coda
/// and head at every check; the latent ones only compare states.
public enum ExitCriterion: Equatable, Sendable {
    /// Never exit early: every token runs `maxIterations`.
    case none
    /// KL divergence of successive next-token distributions below the threshold.
    case kl(threshold: Double = 5e-4)
    /// The same KL after min-p(0.1) filtering.
    case minPKL(threshold: Double = 1e-5)
    /// |H_t - H_{t-1}| of the entropies below the threshold.
    case entropyDiff(threshold: Double = 1e-3)
    /// Relative change of the latent state below the threshold.
    case latentDiff(threshold: Double = 0.03)
    /// 1 - cos(x_t, x_{t-1}) of the latent states below the threshold.
    case cosine(threshold: Double = 1e-3)
    /// The argmax unchanged for this many consecutive checks.
    case argmaxStability(checks: Int = 5)
    /// The model's learned exit gate (Ouro): exit once the accumulated exit
    /// probability reaches the threshold.
    case gate(threshold: Double = 0.9)
    /// The top probability of one check's next-token distribution reaches
    /// the threshold; a token's first check can already exit.
    case confidence(threshold: Double = 0.9)

    var code: rd_exit_criterion {
        switch self {
        case .none: return rd_exit_criterion(RD_EXIT_NONE)
        case .kl: return rd_exit_criterion(RD_EXIT_KL)
        case .minPKL: return rd_exit_criterion(RD_EXIT_MINP_KL)
        case .entropyDiff: return rd_exit_criterion(RD_EXIT_ENTROPY_DIFF)
        case .latentDiff: return rd_exit_criterion(RD_EXIT_LATENT_DIFF)
        case .cosine: return rd_exit_criterion(RD_EXIT_COSINE)
        case .argmaxStability: return rd_exit_criterion(RD_EXIT_ARGMAX_STABILITY)
        case .gate: return rd_exit_criterion(RD_EXIT_GATE)
        case .confidence: return rd_exit_criterion(RD_EXIT_CONFIDENCE)
        }
    }

    var threshold: Double {
        switch self {
        case .none: return 0
        case .kl(let t), .minPKL(let t), .entropyDiff(let t), .latentDiff(let t), .cosine(let t),
             .gate(let t), .confidence(let t): return t
        case .argmaxStability(let checks): return Double(checks)
        }
    }
}

/// How much each token may think (`rd_compute_limits`): the core runs at
/// least `minIterations` and at most `maxIterations` times per token; from
/// `minIterations` on, every `checkEvery` steps, `exit` is evaluated. The
/// library validates the values (`RecurrentDepthError.Code.invalidArgument`).
public struct ComputeLimits: Equatable, Sendable {
    public var minIterations: Int
    public var maxIterations: Int
    public var checkEvery: Int
    public var exit: ExitCriterion
    /// Start each token from the previous token's final state.
    public var warmStart: Bool
    /// Allow the exit criterion on the prompt's last position.
    public var exitInPrefill: Bool
    /// A latent screen (`.cosine` or `.latentDiff`) that must pass before
    /// `exit` (a criterion on the next-token distribution) is evaluated;
    /// `.none`: no screen.
    public var exitScreen: ExitCriterion
    /// The prompt's own exit: `.cosine` or `.latentDiff` over every prompt
    /// position (all must have settled), at each step up to the prompt's
    /// budget; `.none`: the prompt runs its budget. Not with `exitInPrefill`.
    public var prefillExit: ExitCriterion
    /// A token's first check of a criterion that compares two checks is a
    /// lead-in: it cannot end the token and runs in the same graph as the
    /// next check (default). `false`: the authors' behaviour, in which the
    /// first check may end a token (docs/semantics.md, "The lead-in check").
    public var leadIn: Bool

    public init(minIterations: Int = 1, maxIterations: Int = 32, checkEvery: Int = 1,
                exit: ExitCriterion = .none, warmStart: Bool = false, exitInPrefill: Bool = false,
                exitScreen: ExitCriterion = .none, prefillExit: ExitCriterion = .none,
                leadIn: Bool = true) {
        self.minIterations = minIterations
        self.maxIterations = maxIterations
        self.checkEvery = checkEvery
        self.exit = exit
        self.warmStart = warmStart
        self.exitInPrefill = exitInPrefill
        self.exitScreen = exitScreen
        self.prefillExit = prefillExit
        self.leadIn = leadIn
    }

    /// Exactly `iterations` per token.
    public static func fixed(_ iterations: Int) -> ComputeLimits {
        ComputeLimits(minIterations: iterations, maxIterations: iterations)
    }

    var c: rd_compute_limits {
        var l = rd_compute_limits_default()
        l.min_iterations = UInt32(clamping: minIterations)
        l.max_iterations = UInt32(clamping: maxIterations)
        l.check_every = UInt32(clamping: checkEvery)
        l.exit_criterion = exit.code
        l.exit_threshold = exit.threshold
        l.warm_start = warmStart
        l.exit_in_prefill = exitInPrefill
        l.exit_screen_criterion = exitScreen.code
        l.exit_screen_threshold = exitScreen.threshold
        l.prefill_exit_criterion = prefillExit.code
        l.prefill_exit_threshold = prefillExit.threshold
        l.lead_in = leadIn
        return l
    }
}

/// Sampling of the next token (`rd_sampling_params`). Pass `nil` instead to
/// decode greedily.
public struct Sampling: Equatable, Sendable {
    public var temperature: Float = 0.8
    public var topK: Int = 40
    public var topP: Float = 0.95
    public var minP: Float = 0.05
    public var repeatPenalty: Float = 1
    public var repeatLastN: Int = 64
    public var seed: UInt64 = 0
    public var greedy: Bool = false

    public init(temperature: Float = 0.8, topK: Int = 40, topP: Float = 0.95, minP: Float = 0.05,
                repeatPenalty: Float = 1, repeatLastN: Int = 64, seed: UInt64 = 0, greedy: Bool = false) {
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        self.minP = minP
        self.repeatPenalty = repeatPenalty
        self.repeatLastN = repeatLastN
        self.seed = seed
        self.greedy = greedy
    }

    var c: rd_sampling_params {
        var s = rd_sampling_default_params()
        s.temperature = temperature
        s.top_k = UInt32(clamping: topK)
        s.top_p = topP
        s.min_p = minP
        s.repeat_penalty = repeatPenalty
        s.repeat_last_n = UInt32(clamping: repeatLastN)
        s.seed = seed
        s.greedy = greedy
        return s
    }
}

/// One generated token.
public struct TokenEvent: Equatable, Sendable {
    /// The token id.
    public let token: Int
    /// Core iterations of the distribution it was sampled from (the first
    /// token's: the prompt's).
    public let iterations: Int
    /// Its index in this generation, from 0.
    public let index: Int
    /// The exit criterion's value at the last check; nil when none was evaluated.
    public let exitValue: Double?
    /// The text this token completes: whole characters only (the library
    /// holds back the bytes of a character split over tokens until the token
    /// that completes it), possibly "". The texts of a generation concatenate
    /// to `Model.detokenize` of its tokens. nil when the model has no usable
    /// tokenizer.
    public let text: String?
    /// Natural log of the probability the model gave this token: the log
    /// softmax of the raw logits it was sampled from (before temperature,
    /// penalties and filters).
    public let logprob: Float
}

/// Why a generation ended (`rd_stop_reason`).
public enum StopReason: Int, Sendable {
    case maxTokens = 0, stopToken = 1, callback = 2, contextFull = 3, unknown = -1
}

/// Statistics of a finished generation (`rd_generate_stats`).
public struct GenerationStats: Equatable, Sendable {
    public let tokens: Int
    public let promptTokens: Int
    public let prefillIterations: Int
    public let stopReason: StopReason
    public let prefillSeconds: Double
    public let decodeSeconds: Double
    public let meanIterations: Double
    public let kvBytes: UInt64
    /// Tokens drafted by speculative decoding (0 without it).
    public let drafted: Int
    /// Drafted tokens the verifier accepted.
    public let draftAccepted: Int
    /// Speculative verification passes.
    public let verifyPasses: Int
}

/// Self-speculative decoding (`rd_generate_params.draft_*`): `tokens` drafted
/// per verification pass at `iterations` core iterations each, the draft
/// length adapted to acceptance when `adaptive`. Needs fixed limits (no exit
/// criterion, no warm start); greedy output equals plain decoding's when the
/// session's KV budget is at least the limits' `maxIterations`
/// (docs/semantics.md, section 5).
public struct Draft: Equatable, Sendable {
    public var tokens: Int
    public var iterations: Int
    public var adaptive: Bool

    public init(tokens: Int, iterations: Int = 4, adaptive: Bool = false) {
        self.tokens = tokens
        self.iterations = iterations
        self.adaptive = adaptive
    }
}

/// Where weights and computation go (`rd_backend`).
public enum Backend: Sendable {
    /// Metal when present, else the CPU.
    case auto
    case cpu
    /// Any GPU (Metal on Apple platforms), or loading fails with `.backend`.
    case gpu
    /// Metal, or loading fails with `.backend` (a library built without the
    /// `metal` feature, or no Metal device).
    case metal

    var code: rd_backend {
        switch self {
        case .auto: return rd_backend(RD_BACKEND_AUTO)
        case .cpu: return rd_backend(RD_BACKEND_CPU)
        case .gpu: return rd_backend(RD_BACKEND_GPU)
        case .metal: return rd_backend(RD_BACKEND_METAL)
        }
    }
}

/// Element type of the KV cache (`rd_kv_type`).
public enum KVType: Sendable {
    case f32, f16

    var code: rd_kv_type {
        self == .f32 ? rd_kv_type(RD_KV_F32) : rd_kv_type(RD_KV_F16)
    }
}

/// How attention is computed (`rd_attention`): `.auto` is separate today
/// (fused: faster prefill, slower decode on the CPU).
public enum Attention: Sendable {
    case auto, fused, separate

    var code: rd_attention {
        switch self {
        case .auto: return rd_attention(RD_ATTENTION_AUTO)
        case .fused: return rd_attention(RD_ATTENTION_FUSED)
        case .separate: return rd_attention(RD_ATTENTION_SEPARATE)
        }
    }
}

/// Hyper-parameters and placement of a model (`rd_model_info`).
public struct ModelInfo: Equatable, Sendable {
    public let architecture: String
    public let backendName: String
    public let vocabularySize: Int
    public let contextLength: Int
    public let embeddingSize: Int
    public let heads: Int
    public let kvHeads: Int
    public let preludeBlocks: Int
    public let coreBlocks: Int
    public let codaBlocks: Int
    public let defaultIterations: Int
    public let threads: Int
    public let weightsMapped: Bool
    /// Tokenizer calls, text prompts and `TokenEvent.text` work.
    public let hasTokenizer: Bool
    /// `Model.applyChatTemplate(_:addGenerationPrompt:)` works.
    public let hasChatTemplate: Bool
    /// Whether `addSpecial` puts `bosToken` first.
    public let addsBOS: Bool
    public let bosToken: Int?
    public let eosToken: Int?
    /// End of turn (chat).
    public let eotToken: Int?
}

/// One message of a conversation, for `Model.applyChatTemplate(_:addGenerationPrompt:)`.
public struct ChatMessage: Equatable, Sendable {
    /// "system", "user", "assistant", ... as the model's template expects.
    public var role: String
    public var content: String

    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }
}

func tokenizeFlags(addSpecial: Bool, parseSpecial: Bool) -> rd_tokenize_flags {
    (addSpecial ? rd_tokenize_flags(RD_TOKENIZE_ADD_SPECIAL) : 0)
        | (parseSpecial ? rd_tokenize_flags(RD_TOKENIZE_PARSE_SPECIAL) : 0)
}

/// Sizes and fill level of a session (`rd_session_info`).
public struct SessionInfo: Equatable, Sendable {
    public let contextLength: Int
    public let positions: Int
    public let batchSize: Int
    public let kvBudget: Int
    public let kvBytes: UInt64
    public let computeBytes: UInt64
}
