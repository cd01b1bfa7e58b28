// rd-swift-example: loads a model, streams a generation with an iteration
// budget and a KL early exit, and shows Task cancellation.
//
//   swift run rd-swift-example MODEL.gguf [--cpu] [--tokens 1,2,3,4,5 | --chat "Hello"]
//
// --chat renders a user message with the model's chat template and generates
// the reply from text (the model needs a tokenizer and a template).
// A model for trying it: `cargo run --release -- make-test-model --out /tmp/model.gguf`.
import Foundation
import RecurrentDepth

@main
struct Example {
    static func main() async {
        var args = Array(CommandLine.arguments.dropFirst())
        guard let path = args.first else {
            print("usage: rd-swift-example MODEL.gguf [--cpu] [--tokens 1,2,3 | --chat TEXT]")
            exit(2)
        }
        args.removeFirst()
        var backend = Backend.auto
        var prompt = [1, 2, 3, 4, 5]
        var chat: String?
        while let arg = args.first {
            args.removeFirst()
            switch arg {
            case "--cpu": backend = .cpu
            case "--tokens":
                prompt = (args.first ?? "").split(separator: ",").compactMap { Int($0) }
                if !args.isEmpty { args.removeFirst() }
            case "--chat":
                chat = args.first ?? ""
                if !args.isEmpty { args.removeFirst() }
            default:
                print("unknown argument \(arg)")
                exit(2)
            }
        }

        do {
            print("recurrent-depth \(Model.libraryVersion)")
            let model = try Model(path: path, backend: backend)
            let info = try model.info
            print("\(info.architecture) on \(info.backendName): vocabulary \(info.vocabularySize), context \(info.contextLength)")
            let session = try model.makeSession(contextLength: min(info.contextLength, 2048))

            // 4 to 32 iterations per token, stopping when KL < 5e-4.
            let limits = ComputeLimits(minIterations: 4, maxIterations: 32, exit: .kl())
            let stream: AsyncThrowingStream<TokenEvent, Error>
            if let chat {
                let text = try model.applyChatTemplate([ChatMessage(role: "user", content: chat)])
                stream = session.generate(prompt: text, limits: limits, maxTokens: 64)
            } else {
                stream = session.generate(prompt: prompt, limits: limits, maxTokens: 16)
            }
            for try await event in stream {
                let value = event.exitValue.map { String(format: "%.2e", $0) } ?? "-"
                print("token \(event.token)\t\(event.iterations) iterations\texit value \(value)\t\(event.text ?? "")")
            }
            if let stats = session.lastStats {
                print("\(stats.tokens) tokens, mean \(String(format: "%.2f", stats.meanIterations)) iterations, stop: \(stats.stopReason)")
            }

            // Cancelling the consuming task stops the native computation (rd_cancel).
            try session.reset()
            let ids = prompt  // a constant for the task to capture
            let task = Task {
                var n = 0
                for try await _ in session.generate(prompt: ids, limits: .fixed(2048), maxTokens: 1000) {
                    n += 1
                }
                return n
            }
            try await Task.sleep(nanoseconds: 200_000_000)
            task.cancel()
            let produced = (try? await task.value) ?? -1
            print("cancelled after \(produced) tokens")
        } catch {
            print("error: \(error)")
            exit(1)
        }
    }
}
