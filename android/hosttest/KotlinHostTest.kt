package dev.recurrentdepth

import kotlin.system.exitProcess
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.CoroutineStart
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.async
import kotlinx.coroutines.cancelAndJoin
import kotlinx.coroutines.delay
import kotlinx.coroutines.flow.buffer
import kotlinx.coroutines.flow.collect
import kotlinx.coroutines.flow.onEach
import kotlinx.coroutines.flow.take
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout

/**
 * Desktop-JVM test of the Kotlin API (src/main/kotlin) over the host build of
 * the JNI bridge: the same Model/Session/Flow code an Android app runs.
 * Run by android/hosttest/run.sh when a Kotlin compiler is at hand, with the
 * properties of HostTest. Ends with "N passed, M failed".
 */
private var passed = 0
private var failed = 0

private class Failure(message: String) : RuntimeException(message)

private fun check(ok: Boolean, what: () -> String) {
    if (!ok) throw Failure(what())
}

private fun <T> checkEq(expected: T, actual: T, what: String) =
    check(expected == actual) { "$what: expected $expected, got $actual" }

private inline fun expectRd(status: RdException.Status, body: () -> Unit): RdException {
    try {
        body()
    } catch (e: RdException) {
        checkEq(status, e.status, "status of $e")
        return e
    }
    throw Failure("expected RdException($status), nothing was thrown")
}

private fun test(name: String, body: suspend CoroutineScope.() -> Unit) {
    val t0 = System.nanoTime()
    try {
        runBlocking { withTimeout(120_000) { body() } }
        passed++
        println("ok   %-44s %6.0f ms".format(name, (System.nanoTime() - t0) / 1e6))
    } catch (t: Throwable) {
        failed++
        println("FAIL $name: $t")
        if (t !is Failure) t.printStackTrace(System.out)
    }
}

private val PROMPT = intArrayOf(1, 2, 3, 4, 5)

fun main() {
    val modelPath = System.getProperty("rd.model") ?: error("set -Drd.model")
    val reference = System.getProperty("rd.reference", "")
        .split(",").filter { it.isNotEmpty() }.map { it.toInt() }
    val tokModelPath: String? = System.getProperty("rd.tokmodel")

    fun load() = Model.load(modelPath, Backend.CPU, threads = 2)

    test("exit criteria defaults match the library") {
        checkEq(RdNative.exitDefaultThreshold(RdNative.EXIT_KL), ExitCriterion.Kl().threshold, "kl")
        checkEq(RdNative.exitDefaultThreshold(RdNative.EXIT_MINP_KL), ExitCriterion.MinPKl().threshold, "minp-kl")
        checkEq(RdNative.exitDefaultThreshold(RdNative.EXIT_ENTROPY_DIFF), ExitCriterion.EntropyDiff().threshold, "entropy")
        checkEq(RdNative.exitDefaultThreshold(RdNative.EXIT_LATENT_DIFF), ExitCriterion.LatentDiff().threshold, "latent")
        checkEq(RdNative.exitDefaultThreshold(RdNative.EXIT_COSINE), ExitCriterion.Cosine().threshold, "cosine")
        checkEq(RdNative.exitDefaultThreshold(RdNative.EXIT_ARGMAX_STABILITY), ExitCriterion.ArgmaxStability().threshold, "argmax")
        checkEq(RdNative.exitDefaultThreshold(RdNative.EXIT_GATE), ExitCriterion.Gate().threshold, "gate")
        checkEq(RdNative.exitDefaultThreshold(RdNative.EXIT_CONFIDENCE), ExitCriterion.Confidence().threshold, "confidence")
        checkEq(0.0, ExitCriterion.None.threshold, "none")
        check(Model.libraryVersion.matches(Regex("\\d+\\.\\d+\\.\\d+"))) { Model.libraryVersion }
    }

    test("generate collects a Flow of token events") {
        load().use { model ->
            val info = model.info
            checkEq("huginn", info.architecture, "architecture")
            checkEq(true, info.weightsMapped, "mapped")
            model.newSession().use { session ->
                checkEq(info.contextLength, session.info.contextLength, "context from the model")
                val events = session.generate(PROMPT, ComputeLimits.fixed(4), maxTokens = 8).toList()
                checkEq(8, events.size, "events")
                events.forEachIndexed { i, e ->
                    checkEq(i.toLong(), e.index, "index")
                    checkEq(4, e.iterations, "iterations")
                    checkEq(null, e.exitValue, "no criterion")
                    checkEq(null, e.text, "no tokenizer, no text")
                    check(e.token in 0 until info.vocabularySize) { "token ${e.token}" }
                }
                if (reference.isNotEmpty()) checkEq(reference, events.map { it.token }, "same tokens as rd run")
                val stats = session.lastStats ?: throw Failure("no stats")
                checkEq(8L, stats.tokens, "stats tokens")
                checkEq(StopReason.MAX_TOKENS, stats.stopReason, "stop")
                checkEq(5 + 7, session.info.positions, "positions")
            }
        }
    }

    test("repack and prefetch off, thread polling, attention: same tokens") {
        val want = load().use { m ->
            m.newSession().use { it.generate(PROMPT, ComputeLimits.fixed(4), maxTokens = 8).toList() }
        }
        Model.load(modelPath, Backend.CPU, threads = 2, repack = false, prefetch = false).use { m ->
            for (attention in Attention.values()) {
                m.newSession(threadPoll = 0, attention = attention).use { s ->
                    val got = s.generate(PROMPT, ComputeLimits.fixed(4), maxTokens = 8).toList()
                    checkEq(want.map { it.token }, got.map { it.token }, "tokens with $attention")
                }
            }
            try {
                m.newSession(threadPoll = 101)
                throw Failure("threadPoll 101 was accepted")
            } catch (e: RdException) {
                checkEq(RdException.Status.INVALID_ARGUMENT, e.status, "threadPoll 101")
            }
        }
    }

    test("loadFd, saveState/loadState, truncate, setThreads, logprob") {
        val fd = System.getProperty("rd.fd")?.toInt() ?: throw Failure("run.sh passes -Drd.fd")
        val offset = System.getProperty("rd.fdoffset").toLong()
        val length = System.getProperty("rd.fdlength").toLong()
        val want = load().use { m ->
            m.newSession().use { it.generate(PROMPT, ComputeLimits.fixed(4), maxTokens = 12).toList() }
        }
        Model.loadFd(fd, offset, length, Backend.CPU, threads = 2).use { model ->
            model.newSession().use { a ->
                val first = a.generate(PROMPT, ComputeLimits.fixed(4), maxTokens = 6).toList()
                checkEq(want.take(6).map { it.token }, first.map { it.token }, "fd model: same tokens")
                first.forEach { check(it.logprob <= 0f && !it.logprob.isNaN()) { "logprob ${it.logprob}" } }
                val state = a.saveState()
                model.newSession().use { b ->
                    b.loadState(state)
                    b.setThreads(1)
                    val rest = b.generate(IntArray(0), ComputeLimits.fixed(4), maxTokens = 7).toList()
                    checkEq(want.drop(5).map { it.token }, rest.map { it.token }, "restored: same continuation")
                    b.truncate(9)
                    checkEq(9, b.info.positions, "truncated")
                    val again = b.generate(intArrayOf(first[4].token), ComputeLimits.fixed(4), maxTokens = 7).toList()
                    checkEq(rest.map { it.token }, again.map { it.token }, "after truncate: same continuation")
                }
                try {
                    a.loadState(state.copyOf(state.size - 1))
                    throw Failure("a truncated state was accepted")
                } catch (e: RdException) {
                    checkEq(RdException.Status.INVALID_ARGUMENT, e.status, "truncated state refused")
                }
            }
        }
    }

    test("speculative decoding: the same greedy tokens, drafts counted") {
        load().use { model ->
            val want = model.newSession(kvBudget = 8).use {
                it.generate(PROMPT, ComputeLimits.fixed(8), maxTokens = 30).toList()
            }
            model.newSession(kvBudget = 8).use { s ->
                val got = s.generate(
                    PROMPT, ComputeLimits.fixed(8), maxTokens = 30, draft = Draft(tokens = 4, iterations = 2),
                ).toList()
                checkEq(want.map { it.token }, got.map { it.token }, "same tokens")
                val st = s.lastStats ?: throw Failure("no stats")
                check(st.verifyPasses > 0 && st.draftAccepted <= st.drafted) { "stats $st" }
                try {
                    s.generate(
                        PROMPT, ComputeLimits(maxIterations = 8, exit = ExitCriterion.Kl()), maxTokens = 4,
                        draft = Draft(tokens = 4),
                    ).toList()
                    throw Failure("speculation with an exit criterion was accepted")
                } catch (e: RdException) {
                    checkEq(RdException.Status.INVALID_ARGUMENT, e.status, "exit criterion refused")
                }
            }
        }
    }

    test("early exit keeps iterations within the limits") {
        load().use { model ->
            model.newSession().use { session ->
                val limits = ComputeLimits(minIterations = 2, maxIterations = 24, exit = ExitCriterion.Kl())
                // The runtime's prompt budget: up to the model's default (8),
                // stopping once the prompt's states settle; a budget of the
                // caller's runs in full.
                val fixed = session.generate(PROMPT, limits, maxTokens = 2, prefillIterations = 8).toList()
                checkEq(8, fixed.first().iterations, "the prompt runs the caller's budget")
                session.reset()
                val events = session.generate(PROMPT, limits, maxTokens = 10).toList()
                check(events.first().iterations in 2..8) { "prompt iterations ${events.first().iterations}" }
                for (e in events.drop(1)) {
                    check(e.iterations in 2..24) { "iterations ${e.iterations}" }
                    val v = e.exitValue ?: throw Failure("no KL value")
                    if (e.iterations < 24) check(v < 5e-4) { "exited above the threshold: $v" }
                }
            }
        }
    }

    test("an exit screen reaches the library") {
        load().use { model ->
            model.newSession().use { session ->
                val kl = ComputeLimits(minIterations = 2, maxIterations = 24, exit = ExitCriterion.Kl())
                // Closed (threshold 0): every generated token runs the maximum.
                val closed = kl.copy(exitScreen = ExitCriterion.Cosine(0.0))
                val events = session.generate(PROMPT, closed, maxTokens = 6).toList()
                for (e in events.drop(1)) checkEq(24, e.iterations, "closed screen")
                // Open at once: as without a screen.
                session.reset()
                val plain = session.generate(PROMPT, kl, maxTokens = 6).toList()
                session.reset()
                val open = kl.copy(exitScreen = ExitCriterion.LatentDiff(Double.POSITIVE_INFINITY))
                val screened = session.generate(PROMPT, open, maxTokens = 6).toList()
                checkEq(plain.map { it.iterations }, screened.map { it.iterations }, "open screen")
                // The prompt's exit: +inf passes at the first check that may
                // end it (min + 1 after the lead-in check at min; min
                // without the lead-in), 0 never (the prompt's budget, the
                // model's default 8).
                session.reset()
                val quick = kl.copy(prefillExit = ExitCriterion.Cosine(Double.POSITIVE_INFINITY))
                checkEq(3, session.generate(PROMPT, quick, maxTokens = 2).toList()[0].iterations, "prompt exit")
                session.reset()
                val authors = quick.copy(leadIn = false)
                checkEq(2, session.generate(PROMPT, authors, maxTokens = 2).toList()[0].iterations, "prompt exit, no lead-in")
                session.reset()
                val never = kl.copy(prefillExit = ExitCriterion.LatentDiff(0.0))
                checkEq(8, session.generate(PROMPT, never, maxTokens = 2).toList()[0].iterations, "prompt budget")
                // A screen before a latent criterion is refused.
                session.reset()
                val bad = ComputeLimits(exit = ExitCriterion.Cosine(), exitScreen = ExitCriterion.Cosine())
                expectRd(RdException.Status.INVALID_ARGUMENT) {
                    session.generate(PROMPT, bad, maxTokens = 2).toList()
                }
            }
        }
    }

    test("take(n) stops the generation; the session stays usable") {
        load().use { model ->
            model.newSession().use { session ->
                val first = session.generate(PROMPT, ComputeLimits.fixed(4), maxTokens = 50).take(3).toList()
                checkEq(3, first.size, "events taken")
                session.reset()
                val again = session.generate(PROMPT, ComputeLimits.fixed(4), maxTokens = 3).toList()
                checkEq(first.map { it.token }, again.map { it.token }, "same tokens after reset")
            }
        }
    }

    test("coroutine cancellation interrupts the native prompt") {
        load().use { model ->
            model.newSession().use { session ->
                // A prompt of 64 positions at 4096 iterations: many seconds of work.
                val events = mutableListOf<TokenEvent>()
                val job = launch(Dispatchers.Default) {
                    session.generate(IntArray(64) { it % 200 }, ComputeLimits.fixed(8), maxTokens = 4,
                        prefillIterations = 4096).collect { events.add(it) }
                }
                delay(300)
                val t0 = System.nanoTime()
                job.cancelAndJoin()
                val ms = (System.nanoTime() - t0) / 1e6
                println("     collector cancelled during the prompt; joined after %.1f ms".format(ms))
                checkEq(0, events.size, "no event before the prompt ended")
                // rd_cancel stopped the prompt: it left nothing in the cache.
                checkEq(0, session.info.positions, "positions after the cancelled prompt")
                checkEq(null, session.lastStats, "no stats for a cancelled generation")
                session.reset()
                checkEq(2, session.generate(PROMPT, ComputeLimits.fixed(2), maxTokens = 2).toList().size, "usable")
            }
        }
    }

    test("setComputeLimits from the collector") {
        load().use { model ->
            model.newSession().use { session ->
                val iterations = mutableListOf<Int>()
                // buffer(0): the generator waits for the collector, one event ahead at most.
                session.generate(PROMPT, ComputeLimits.fixed(8), maxTokens = 12).buffer(0).collect { e ->
                    iterations.add(e.iterations)
                    if (e.index == 2L) session.setComputeLimits(ComputeLimits.fixed(3))
                }
                checkEq(listOf(8, 8, 8), iterations.take(3), "before the change")
                checkEq(3, iterations.last(), "after the change")
                check(iterations.indexOf(3) in 3..5) { "took effect late: $iterations" }
                expectRd(RdException.Status.INVALID_STATE) { session.setComputeLimits(ComputeLimits.fixed(3)) }
            }
        }
    }

    test("close during a generation cancels it") {
        val model = load()
        val session = model.newSession()
        model.close()
        val failure = async(Dispatchers.Default, start = CoroutineStart.UNDISPATCHED) {
            try {
                session.generate(PROMPT, ComputeLimits.fixed(2048), maxTokens = 100, prefillIterations = 4)
                    .onEach { if (it.index == 0L) session.close() }
                    .collect()
                null
            } catch (e: RdException) {
                e
            }
        }.await()
        check(failure != null) { "the generation was not stopped" }
        checkEq(RdException.Status.CANCELLED, failure!!.status, "status")
        try {
            session.generate(PROMPT).toList()
            throw Failure("a closed session generated")
        } catch (expected: IllegalStateException) {
            // ok
        }
        session.close() // idempotent
    }

    test("errors become RdException") {
        expectRd(RdException.Status.IO) { Model.load("/nonexistent.gguf") }
        load().use { model ->
            model.newSession(contextLength = 16).use { session ->
                expectRd(RdException.Status.INVALID_ARGUMENT) {
                    session.generate(PROMPT, ComputeLimits(minIterations = 8, maxIterations = 4)).toList()
                }
                expectRd(RdException.Status.CONTEXT_FULL) {
                    session.generate(IntArray(17), ComputeLimits.fixed(1)).toList()
                }
                expectRd(RdException.Status.NO_TOKENIZER) { model.tokenize("hello") }
                expectRd(RdException.Status.NO_TEMPLATE) { model.applyChatTemplate(listOf(ChatMessage("user", "hi"))) }
                val events = session.generate(PROMPT, ComputeLimits.fixed(1), maxTokens = 100).toList()
                checkEq(StopReason.CONTEXT_FULL, session.lastStats?.stopReason, "context full stop")
                check(events.size in 1..12) { "events ${events.size}" }
            }
            expectRd(RdException.Status.INVALID_ARGUMENT) { model.newSession(contextLength = 0) }
        }
    }

    if (tokModelPath != null) {
        test("text: tokenizer, chat template, text prompt") {
            Model.load(tokModelPath, Backend.CPU, threads = 2).use { model ->
                val info = model.info
                check(info.hasTokenizer && info.hasChatTemplate) { "$info" }
                val text = "Gr\u00fc\u00dfe \ud83d\ude00 \u4e16\u754c"
                checkEq(text, model.detokenize(model.tokenize(text)), "round trip")
                if (info.addsBos) checkEq(info.bosToken, model.tokenize(text, addSpecial = true).first(), "BOS")
                val prompt = model.applyChatTemplate(listOf(ChatMessage("system", "Be brief."), ChatMessage("user", text)))
                check(prompt.contains(text)) { prompt }
                model.newSession().use { session ->
                    val events = session.generate(prompt, ComputeLimits.fixed(3), maxTokens = 12).toList()
                    check(events.isNotEmpty() && events.all { it.text != null }) { "texts: $events" }
                    if (session.lastStats?.stopReason != StopReason.CALLBACK) {
                        checkEq(model.detokenize(events.map { it.token }.toIntArray()),
                            events.joinToString("") { it.text!! }, "texts add up")
                    }
                    checkEq(model.tokenize(prompt, addSpecial = true, parseSpecial = true).size.toLong(),
                        session.lastStats?.promptTokens, "prompt tokens")
                }
            }
        }
    } else {
        println("(no -Drd.tokmodel: the tokenizer test is left out)")
    }

    println("$passed passed, $failed failed")
    exitProcess(if (failed == 0) 0 else 1)
}
