import RecurrentDepthC

/// A failed call of the library: the C API's `rd_status` and the message of
/// `rd_last_error()` (read on the thread that failed).
public struct RecurrentDepthError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The `rd_status` codes of include/recurrent_depth.h.
    public enum Code: Int, Sendable {
        case invalidArgument = 1
        case io = 2
        case invalidModel = 3
        case unsupportedArchitecture = 4
        case unsupported = 5
        case outOfMemory = 6
        /// The compute backend failed; on iOS also Metal work refused in the
        /// background (see docs/ios.md).
        case backend = 7
        case contextFull = 8
        case cancelled = 9
        case bufferTooSmall = 10
        case invalidState = 11
        case busy = 12
        case panic = 13
        /// The model file has no tokenizer: pass token ids.
        case noTokenizer = 14
        /// The model file has no chat template.
        case noTemplate = 15
        /// The tokenizer is corrupt or unsupported, or failed on the input.
        case tokenizer = 16
        /// The chat template cannot be parsed or failed while rendering.
        case chatTemplate = 17
        /// A code this version does not know (a newer library).
        case unknown = -1
    }

    public let code: Code
    /// The numeric `rd_status` (also for codes newer than `Code`).
    public let status: Int
    public let message: String

    public var description: String { "RecurrentDepthError.\(code) (\(status)): \(message)" }

    /// Call right after the failure, on the same thread.
    init(_ status: rd_status) {
        let raw = Int(status.rawValue)
        self.status = raw
        self.code = Code(rawValue: raw) ?? .unknown
        self.message = String(cString: rd_last_error())
    }
}

/// Throws for any status but `RD_OK`.
@inline(__always)
func check(_ status: rd_status) throws {
    if status != RD_OK {
        throw RecurrentDepthError(status)
    }
}
