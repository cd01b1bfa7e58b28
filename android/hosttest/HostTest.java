package dev.recurrentdepth;

import java.io.File;
import java.io.FileOutputStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;

/**
 * Desktop-JVM test of the JNI bridge (src/main/cpp/rd_jni.c) built for the
 * host, through the same native methods (RdNative) the Android library uses.
 * Run by android/hosttest/run.sh:
 *
 * <pre>
 *   java -Drecurrent_depth.jni.path=.../librecurrent_depth_jni.so \
 *        -Drd.model=model.gguf [-Drd.reference=183,160,...] dev.recurrentdepth.HostTest
 * </pre>
 *
 * rd.reference is what `rd run --json` generates for PROMPT with 4 fixed
 * iterations, B = 1 and 8 tokens: the bridge must produce the same ids. Ends
 * with "N passed, M failed"; exits 1 on any failure.
 */
public final class HostTest {
    static final int[] PROMPT = {1, 2, 3, 4, 5};

    static String modelPath;
    static String tokModelPath;
    static int nVocab;
    static int contextLength;
    static int passed;
    static int failed;

    // ---- tiny harness --------------------------------------------------------

    interface Body {
        void run() throws Exception;
    }

    static final class Failure extends RuntimeException {
        private static final long serialVersionUID = 1L;

        Failure(String m) {
            super(m);
        }
    }

    static void check(boolean ok, String what) {
        if (!ok) {
            throw new Failure(what);
        }
    }

    static void checkEq(Object expected, Object actual, String what) {
        if (expected == null ? actual != null : !expected.equals(actual)) {
            throw new Failure(what + ": expected " + expected + ", got " + actual);
        }
    }

    static RdException expectRd(RdException.Status status, Body body) throws Exception {
        try {
            body.run();
        } catch (RdException e) {
            checkEq(status, e.status, "status of " + e);
            check(e.getMessage() != null && !e.getMessage().isEmpty(), "exception has a message");
            return e;
        }
        throw new Failure("expected RdException(" + status + "), nothing was thrown");
    }

    static void test(String name, Body body) {
        long t0 = System.nanoTime();
        try {
            body.run();
            passed++;
            System.out.printf("ok   %-44s %6.0f ms%n", name, (System.nanoTime() - t0) / 1e6);
        } catch (Throwable t) {
            failed++;
            System.out.println("FAIL " + name + ": " + t);
            if (!(t instanceof Failure)) {
                t.printStackTrace(System.out);
            }
        }
    }

    // ---- helpers -------------------------------------------------------------

    static final class Event {
        final int token;
        final int iterations;
        final long index;
        final double exitValue;
        final byte[] text;
        float logprob;

        Event(int token, int iterations, long index, double exitValue, byte[] text) {
            this.token = token;
            this.iterations = iterations;
            this.index = index;
            this.exitValue = exitValue;
            this.text = text;
        }
    }

    /** Collects events; an optional hook runs in the listener. */
    static class Collector implements TokenListener {
        final List<Event> events = new ArrayList<>();

        @Override
        public boolean onToken(
                int token, int iterations, long index, double exitValue, byte[] text, float logprob) {
            Event e = new Event(token, iterations, index, exitValue, text);
            e.logprob = logprob;
            events.add(e);
            return hook(events.size() - 1);
        }

        boolean hook(int i) {
            return true;
        }

        int[] tokens() {
            int[] t = new int[events.size()];
            for (int i = 0; i < t.length; i++) {
                t[i] = events.get(i).token;
            }
            return t;
        }
    }

    static final class Limits {
        int min = 1;
        int max = 32;
        int checkEvery = 1;
        int criterion = RdNative.EXIT_NONE;
        double threshold = 0;
        boolean warmStart;
        boolean exitInPrefill;
        int screen = RdNative.EXIT_NONE;
        double screenThreshold = 0;
        int prefillExit = RdNative.EXIT_NONE;
        double prefillExitThreshold = 0;

        static Limits fixed(int n) {
            Limits l = new Limits();
            l.min = n;
            l.max = n;
            return l;
        }
    }

    static double[] generate(long s, int[] prompt, int maxTokens, Limits l, TokenListener listener) {
        return generate(s, prompt, maxTokens, l, false, 0L, null, listener);
    }

    static double[] generate(long s, int[] prompt, int maxTokens, Limits l, boolean sample, long seed,
            int[] stops, TokenListener listener) {
        return RdNative.generate(s, prompt, null, maxTokens, 0, l.min, l.max, l.checkEvery, l.criterion,
                l.threshold, l.warmStart, l.exitInPrefill, l.screen, l.screenThreshold, l.prefillExit, l.prefillExitThreshold, true, sample, 0.8f, 40, 0.95f, 0.05f, 1.0f, 64,
                seed, false, stops, true, 0, 0, 0, 4, false, listener);
    }

    static final int TEXT_FLAGS = RdNative.TOKENIZE_ADD_SPECIAL | RdNative.TOKENIZE_PARSE_SPECIAL;

    /** rd_generate_text, greedy, the default tokenize flags. */
    static double[] generateText(long s, String prompt, int maxTokens, Limits l, int detokenizeFlags,
            TokenListener listener) {
        return RdNative.generate(s, null, RdNative.utf8(prompt), maxTokens, 0, l.min, l.max, l.checkEvery,
                l.criterion, l.threshold, l.warmStart, l.exitInPrefill, l.screen, l.screenThreshold, l.prefillExit, l.prefillExitThreshold, true, false, 0, 0, 1, 0, 1, 0, 0, false,
                null, true, TEXT_FLAGS, detokenizeFlags, 0, 4, false, listener);
    }

    static long load() {
        return RdNative.modelLoad(modelPath, RdNative.BACKEND_CPU, 2, true, false, true, true);
    }

    static long newSession(long model, int nCtx) {
        return RdNative.sessionNew(model, nCtx, 0, 1, RdNative.KV_F32, RdNative.STATE_INIT_ZEROS, 0, 50, RdNative.ATTENTION_AUTO);
    }

    /** A model and a session (context 128 = the test model's, B = 1), freed by close. */
    static final class Fixture implements AutoCloseable {
        final long model = load();
        final long session = newSession(model, RdNative.N_CTX_FROM_MODEL);

        @Override
        public void close() {
            RdNative.sessionFree(session);
            RdNative.modelFree(model);
        }
    }

    static int[] greedyReference(long session, int n) {
        RdNative.sessionReset(session);
        Collector c = new Collector();
        generate(session, PROMPT, n, Limits.fixed(4), c);
        RdNative.sessionReset(session);
        return c.tokens();
    }

    // ---- tests ---------------------------------------------------------------

    public static void main(String[] args) throws Exception {
        modelPath = System.getProperty("rd.model");
        if (modelPath == null) {
            System.err.println("set -Drd.model=PATH (a model from `rd make-test-model`)");
            System.exit(2);
        }
        String reference = System.getProperty("rd.reference", "");
        tokModelPath = System.getProperty("rd.tokmodel");

        test("version and status strings", () -> {
            String v = RdNative.version();
            check(v != null && v.matches("\\d+\\.\\d+\\.\\d+"), "version " + v);
            check(RdNative.statusString(0).startsWith("RD_OK"), RdNative.statusString(0));
            check(RdNative.statusString(9).startsWith("RD_ERR_CANCELLED"), RdNative.statusString(9));
            checkEq("unknown status", RdNative.statusString(1000), "unknown status");
            checkEq(5e-4, RdNative.exitDefaultThreshold(RdNative.EXIT_KL), "KL threshold");
            checkEq(5.0, RdNative.exitDefaultThreshold(RdNative.EXIT_ARGMAX_STABILITY), "argmax");
            check(Double.isNaN(RdNative.exitDefaultThreshold(99)), "unknown criterion gives NaN");
        });

        test("model info", () -> {
            long m = load();
            try {
                int[] mi = RdNative.modelInfo(m);
                checkEq(RdNative.MI_LENGTH, mi.length, "info length");
                nVocab = mi[RdNative.MI_N_VOCAB];
                contextLength = mi[RdNative.MI_CONTEXT_LENGTH];
                check(nVocab > 0 && contextLength > 0, "n_vocab and context");
                check(mi[RdNative.MI_N_CORE] > 0, "core blocks");
                checkEq(2, mi[RdNative.MI_N_THREADS], "n_threads as asked");
                checkEq(1, mi[RdNative.MI_WEIGHTS_MAPPED], "weights used from the mapping");
                checkEq("huginn", RdNative.modelArchitecture(m), "architecture");
                checkEq("CPU", RdNative.modelBackendName(m), "backend");
            } finally {
                RdNative.modelFree(m);
            }
        });

        test("greedy generation, fixed budget", () -> {
            try (Fixture f = new Fixture()) {
                Collector c = new Collector();
                double[] st = generate(f.session, PROMPT, 8, Limits.fixed(4), c);
                checkEq(RdNative.GS_LENGTH, st.length, "stats length");
                checkEq(8, c.events.size(), "tokens reported");
                checkEq(8.0, st[RdNative.GS_N_TOKENS], "stats n_tokens");
                checkEq(5.0, st[RdNative.GS_N_PROMPT_TOKENS], "stats n_prompt_tokens");
                checkEq((double) RdNative.STOP_MAX_TOKENS, st[RdNative.GS_STOP_REASON], "stop");
                checkEq(4.0, st[RdNative.GS_MEAN_ITERATIONS], "mean iterations");
                for (int i = 0; i < 8; i++) {
                    Event e = c.events.get(i);
                    check(e.token >= 0 && e.token < nVocab, "token id in range: " + e.token);
                    checkEq(4, e.iterations, "iterations of token " + i);
                    checkEq((long) i, e.index, "index");
                    check(Double.isNaN(e.exitValue), "no criterion: exit value NaN");
                }
                long[] si = RdNative.sessionInfo(f.session);
                checkEq(RdNative.SI_LENGTH, si.length, "session info length");
                checkEq((long) contextLength, si[RdNative.SI_N_CTX], "n_ctx from the model");
                // The last reported token is not in the cache.
                checkEq(5L + 7L, si[RdNative.SI_N_PAST], "n_past");
                checkEq(1L, si[RdNative.SI_KV_BUDGET], "B");
                check(si[RdNative.SI_KV_BYTES] > 0, "kv bytes");
                checkEq((double) si[RdNative.SI_KV_BYTES], st[RdNative.GS_KV_BYTES], "kv bytes");
                // The same tokens again after a reset.
                int[] again = greedyReference(f.session, 8);
                check(Arrays.equals(c.tokens(), again), "deterministic after reset: "
                        + Arrays.toString(c.tokens()) + " vs " + Arrays.toString(again));
                if (!reference.isEmpty()) {
                    int[] ref = Arrays.stream(reference.split(",")).mapToInt(Integer::parseInt).toArray();
                    check(Arrays.equals(ref, c.tokens()), "same tokens as `rd run`: "
                            + Arrays.toString(ref) + " vs " + Arrays.toString(c.tokens()));
                }
            }
        });

        test("model from a file descriptor range (an APK asset)", () -> {
            // run.sh opens fd rd.fd on a file holding the model at rd.fdoffset.
            String fdProp = System.getProperty("rd.fd");
            check(fdProp != null, "run.sh passes -Drd.fd");
            int fd = Integer.parseInt(fdProp);
            long off = Long.parseLong(System.getProperty("rd.fdoffset"));
            long len = Long.parseLong(System.getProperty("rd.fdlength"));
            int[] want;
            try (Fixture f = new Fixture()) {
                want = greedyReference(f.session, 8);
            }
            for (boolean mmap : new boolean[] {true, false}) {
                long m = RdNative.modelLoadFd(fd, off, len, RdNative.BACKEND_CPU, 2, mmap, false, true, true);
                try {
                    long s = newSession(m, RdNative.N_CTX_FROM_MODEL);
                    try {
                        check(Arrays.equals(want, greedyReference(s, 8)), "same tokens as from the path");
                    } finally {
                        RdNative.sessionFree(s);
                    }
                } finally {
                    RdNative.modelFree(m);
                }
            }
            expectRd(RdException.Status.IO,
                    () -> RdNative.modelLoadFd(fd, off, len + (1 << 20), RdNative.BACKEND_CPU, 1, true, false, true, true));
            expectRd(RdException.Status.INVALID_MODEL,
                    () -> RdNative.modelLoadFd(fd, off + 1, len - 1, RdNative.BACKEND_CPU, 1, true, false, true, true));
            expectRd(RdException.Status.INVALID_ARGUMENT,
                    () -> RdNative.modelLoadFd(-1, 0, 0, RdNative.BACKEND_CPU, 1, true, false, true, true));
        });

        test("state save and restore, truncate, threads, logprobs", () -> {
            try (Fixture a = new Fixture(); Fixture b = new Fixture()) {
                Collector first = new Collector();
                generate(a.session, PROMPT, 6, Limits.fixed(4), first);
                for (Event e : first.events) {
                    check(e.logprob <= 0 && !Float.isNaN(e.logprob), "logprob " + e.logprob);
                }
                byte[] state = RdNative.stateSave(a.session);
                Collector want = new Collector();
                generate(a.session, null, 6, Limits.fixed(4), want);
                RdNative.stateLoad(b.session, state);
                checkEq(5L + 5L, RdNative.sessionInfo(b.session)[RdNative.SI_N_PAST], "restored n_past");
                Collector got = new Collector();
                generate(b.session, null, 6, Limits.fixed(4), got);
                check(Arrays.equals(want.tokens(), got.tokens()), "restored session continues the same");
                byte[] bad = state.clone();
                bad[bad.length / 2] ^= 1;
                expectRd(RdException.Status.INVALID_ARGUMENT, () -> RdNative.stateLoad(b.session, bad));
                // Truncate back to the saved point: the same continuation again.
                RdNative.stateLoad(b.session, state);
                RdNative.sessionTruncate(b.session, 9);
                checkEq(9L, RdNative.sessionInfo(b.session)[RdNative.SI_N_PAST], "truncated n_past");
                expectRd(RdException.Status.INVALID_STATE,
                        () -> generate(b.session, null, 1, Limits.fixed(4), null));
                expectRd(RdException.Status.INVALID_ARGUMENT, () -> RdNative.sessionTruncate(b.session, -1));
                RdNative.sessionSetThreads(b.session, 1);
                Collector one = new Collector();
                generate(b.session, new int[] {first.events.get(4).token}, 6, Limits.fixed(4), one);
                check(Arrays.equals(want.tokens(), one.tokens()), "after truncate, with 1 thread");
                expectRd(RdException.Status.INVALID_ARGUMENT, () -> RdNative.sessionSetThreads(b.session, 513));
            }
        });

        test("KV bytes follow the formula of docs/android.md", () -> {
            long m = load();
            try {
                int[] mi = RdNative.modelInfo(m);
                long d = mi[RdNative.MI_N_EMBD];
                long kvDim = mi[RdNative.MI_N_HEAD_KV] * (d / mi[RdNative.MI_N_HEAD]);
                long layers0 = mi[RdNative.MI_N_PRELUDE] + mi[RdNative.MI_N_CODA];
                for (int kvType : new int[] {RdNative.KV_F32, RdNative.KV_F16}) {
                    for (int b : new int[] {1, 3}) {
                        for (int nCtx : new int[] {32, contextLength}) {
                            long s = RdNative.sessionNew(m, nCtx, 0, b, kvType, 0, 0, 50, RdNative.ATTENTION_AUTO);
                            try {
                                long[] si = RdNative.sessionInfo(s);
                                long elt = kvType == RdNative.KV_F32 ? 4 : 2;
                                long layers = layers0 + (long) mi[RdNative.MI_N_CORE] * b;
                                // K and V per layer instance, plus two f32 [d, n_batch] state stores.
                                long expected = layers * 2 * nCtx * kvDim * elt
                                        + 2 * d * si[RdNative.SI_N_BATCH] * 4;
                                checkEq(expected, si[RdNative.SI_KV_BYTES],
                                        "kv bytes, type " + kvType + ", B " + b + ", n_ctx " + nCtx);
                            } finally {
                                RdNative.sessionFree(s);
                            }
                        }
                    }
                }
            } finally {
                RdNative.modelFree(m);
            }
        });

        test("early exit keeps iterations within limits", () -> {
            try (Fixture f = new Fixture()) {
                Limits l = new Limits();
                l.min = 2;
                l.max = 24;
                l.criterion = RdNative.EXIT_KL;
                l.threshold = RdNative.exitDefaultThreshold(RdNative.EXIT_KL);
                Collector c = new Collector();
                double[] st = generate(f.session, PROMPT, 12, l, c);
                checkEq(12, c.events.size(), "tokens");
                // The first token comes from the prompt, which (with an exit
                // criterion and the runtime's prompt budget) runs up to the
                // model's default iterations, 8, and stops once its states
                // settle.
                int prompt = c.events.get(0).iterations;
                check(prompt >= 2 && prompt <= 8, "prompt iterations " + prompt);
                checkEq((double) prompt, st[RdNative.GS_PREFILL_ITERATIONS], "stats prefill iterations");
                double sum = 0;
                for (Event e : c.events.subList(1, 12)) {
                    check(e.iterations >= 2 && e.iterations <= 24, "iterations " + e.iterations);
                    check(!Double.isNaN(e.exitValue) && e.exitValue >= 0, "KL value " + e.exitValue);
                    if (e.iterations < 24) {
                        check(e.exitValue < l.threshold, "exited early below the threshold");
                    }
                    sum += e.iterations;
                }
                double mean = st[RdNative.GS_MEAN_ITERATIONS];
                check(mean >= 2 && mean <= 24, "mean iterations " + mean);
                check(sum / 11 <= 24, "mean of reported iterations");
            }
        });

        test("setComputeLimits from the listener", () -> {
            try (Fixture f = new Fixture()) {
                final long s = f.session;
                Collector c = new Collector() {
                    @Override
                    boolean hook(int i) {
                        if (i == 2) {
                            RdNative.setComputeLimits(s, 3, 3, 1, RdNative.EXIT_NONE, 0, false, false, 0, 0, 0, 0, true);
                        }
                        return true;
                    }
                };
                generate(s, PROMPT, 6, Limits.fixed(8), c);
                checkEq(6, c.events.size(), "tokens");
                for (int i = 0; i < 6; i++) {
                    checkEq(i <= 2 ? 8 : 3, c.events.get(i).iterations, "iterations of token " + i);
                }
                // Not running: INVALID_STATE; invalid limits: INVALID_ARGUMENT.
                expectRd(RdException.Status.INVALID_STATE,
                        () -> RdNative.setComputeLimits(s, 1, 4, 1, 0, 0, false, false, 0, 0, 0, 0, true));
            }
        });

        test("listener stops generation", () -> {
            try (Fixture f = new Fixture()) {
                Collector c = new Collector() {
                    @Override
                    boolean hook(int i) {
                        return i < 3;
                    }
                };
                double[] st = generate(f.session, PROMPT, 20, Limits.fixed(4), c);
                checkEq(4, c.events.size(), "tokens until false");
                checkEq((double) RdNative.STOP_CALLBACK, st[RdNative.GS_STOP_REASON], "stop");
            }
        });

        test("stop tokens", () -> {
            try (Fixture f = new Fixture()) {
                int[] ref = greedyReference(f.session, 8);
                int stop = ref[2];
                int first = 0;
                while (ref[first] != stop) {
                    first++;
                }
                Collector c = new Collector();
                double[] st = generate(f.session, PROMPT, 8, Limits.fixed(4), false, 0, new int[] {stop}, c);
                checkEq(first + 1, c.events.size(), "tokens up to and including the stop token");
                checkEq(stop, c.events.get(first).token, "last token");
                checkEq((double) RdNative.STOP_STOP_TOKEN, st[RdNative.GS_STOP_REASON], "stop");
            }
        });

        test("seeded sampling is reproducible", () -> {
            try (Fixture f = new Fixture()) {
                Collector a = new Collector();
                generate(f.session, PROMPT, 10, Limits.fixed(4), true, 42, null, a);
                RdNative.sessionReset(f.session);
                Collector b = new Collector();
                generate(f.session, PROMPT, 10, Limits.fixed(4), true, 42, null, b);
                checkEq(10, a.events.size(), "tokens");
                check(Arrays.equals(a.tokens(), b.tokens()), "same seed, same tokens");
                for (int t : a.tokens()) {
                    check(t >= 0 && t < nVocab, "token in range");
                }
            }
        });

        test("context full ends generation", () -> {
            long m = load();
            long s = newSession(m, 16);
            RdNative.modelFree(m); // the session keeps the weights
            try {
                Collector c = new Collector();
                double[] st = generate(s, PROMPT, 100, Limits.fixed(2), c);
                checkEq((double) RdNative.STOP_CONTEXT_FULL, st[RdNative.GS_STOP_REASON], "stop");
                check(c.events.size() > 0 && c.events.size() <= 16 - 5 + 1, "tokens " + c.events.size());
                int[] tooLong = new int[17];
                RdNative.sessionReset(s);
                expectRd(RdException.Status.CONTEXT_FULL,
                        () -> generate(s, tooLong, 1, Limits.fixed(2), null));
            } finally {
                RdNative.sessionFree(s);
            }
        });

        test("cancel from the listener", () -> {
            try (Fixture f = new Fixture()) {
                final long s = f.session;
                int[] ref = greedyReference(s, 4);
                Collector c = new Collector() {
                    @Override
                    boolean hook(int i) {
                        if (i == 2) {
                            RdNative.cancel(s);
                        }
                        return true;
                    }
                };
                expectRd(RdException.Status.CANCELLED, () -> generate(s, PROMPT, 10, Limits.fixed(8), c));
                checkEq(3, c.events.size(), "tokens before the cancel took effect");
                // A cancel while idle does not cancel the next call; the session still works.
                RdNative.cancel(s);
                checkEq(Arrays.toString(ref), Arrays.toString(greedyReference(s, 4)), "usable after");
            }
        });

        test("cancel from another thread", () -> {
            try (Fixture f = new Fixture()) {
                final long s = f.session;
                CountDownLatch first = new CountDownLatch(1);
                Collector c = new Collector() {
                    @Override
                    boolean hook(int i) {
                        first.countDown();
                        return true;
                    }
                };
                long[] cancelledAt = new long[1];
                Thread canceller = new Thread(() -> {
                    try {
                        first.await();
                        Thread.sleep(20);
                    } catch (InterruptedException e) {
                        return;
                    }
                    cancelledAt[0] = System.nanoTime();
                    RdNative.cancel(s);
                });
                canceller.start();
                Limits l = Limits.fixed(2048);
                l.min = 1;
                long t0 = System.nanoTime();
                expectRd(RdException.Status.CANCELLED, () -> RdNative.generate(s, PROMPT, null, 100, 4,
                        l.min, l.max, 1, 0, 0, false, false, 0, 0, 0, 0, true, false, 0, 0, 1, 0, 1, 0, 0, false, null,
                        true, 0, 0, 0, 4, false, c));
                long t1 = System.nanoTime();
                canceller.join();
                check(c.events.size() >= 1 && c.events.size() < 100, "tokens " + c.events.size());
                double latencyMs = (t1 - cancelledAt[0]) / 1e6;
                System.out.printf("     cancelled after %d tokens, %.1f ms after rd_cancel (run %.0f ms)%n",
                        c.events.size(), latencyMs, (t1 - t0) / 1e6);
                check(latencyMs < 5000, "returned promptly after the cancel");
                RdNative.sessionReset(s);
                checkEq(4, greedyReference(s, 4).length, "usable after reset");
            }
        });

        test("close during generation cancels, then frees", () -> {
            long m = load();
            SessionHandle h = new SessionHandle(newSession(m, RdNative.N_CTX_FROM_MODEL));
            RdNative.modelFree(m);
            CountDownLatch first = new CountDownLatch(1);
            AtomicReference<Throwable> thrown = new AtomicReference<>();
            boolean[] freedBeforeRelease = new boolean[1];
            Thread gen = new Thread(() -> {
                long s = h.acquire();
                try {
                    RdNative.generate(s, PROMPT, null, 100, 4, 1, 2048, 1, 0, 0, false, false, 0, 0, 0, 0, true, false,
                            0, 0, 1, 0, 1, 0, 0, false, null, true, 0, 0, 0, 4, false,
                            (t, it, idx, ev, text, lp) -> {
                                first.countDown();
                                return true;
                            });
                } catch (Throwable t) {
                    thrown.set(t);
                } finally {
                    freedBeforeRelease[0] = h.isFreed();
                    h.release();
                }
            });
            gen.start();
            check(first.await(60, TimeUnit.SECONDS), "first token");
            checkEq(1, h.activeCalls(), "one call in flight");
            h.close();
            gen.join(60_000);
            check(!gen.isAlive(), "generation ended");
            check(!freedBeforeRelease[0], "not freed while the call ran");
            check(thrown.get() instanceof RdException, "generation failed: " + thrown.get());
            checkEq(RdException.Status.CANCELLED, ((RdException) thrown.get()).status, "status");
            check(h.isFreed(), "freed by the last release");
            h.cancel(); // a no-op after the free
            h.close(); // idempotent
            try {
                h.acquire();
                throw new Failure("acquire after close must throw");
            } catch (IllegalStateException expected) {
                // ok
            }
        });

        test("two sessions on two threads over one model", () -> {
            long m = load();
            try {
                long s0 = newSession(m, RdNative.N_CTX_FROM_MODEL);
                int[] ref = greedyReference(s0, 6);
                RdNative.sessionFree(s0);
                int[][] got = new int[2][];
                Thread[] ts = new Thread[2];
                for (int k = 0; k < 2; k++) {
                    final int kk = k;
                    ts[k] = new Thread(() -> {
                        long s = newSession(m, RdNative.N_CTX_FROM_MODEL);
                        try {
                            Collector c = new Collector();
                            generate(s, PROMPT, 6, Limits.fixed(4), c);
                            got[kk] = c.tokens();
                        } finally {
                            RdNative.sessionFree(s);
                        }
                    });
                    ts[k].start();
                }
                for (Thread t : ts) {
                    t.join();
                }
                check(Arrays.equals(ref, got[0]) && Arrays.equals(ref, got[1]), "same tokens on both");
            } finally {
                RdNative.modelFree(m);
            }
        });

        test("errors become exceptions", () -> {
            expectRd(RdException.Status.IO, () -> RdNative.modelLoad(
                    "/nonexistent/model.gguf", RdNative.BACKEND_CPU, 0, true, false, true, true));
            File junk = File.createTempFile("rd-hosttest", ".gguf");
            junk.deleteOnExit();
            try (FileOutputStream out = new FileOutputStream(junk)) {
                out.write("GGUF but not really".getBytes(StandardCharsets.US_ASCII));
            }
            expectRd(RdException.Status.INVALID_MODEL, () -> RdNative.modelLoad(
                    junk.getPath(), RdNative.BACKEND_CPU, 0, true, false, true, true));
            // A path with non-ASCII characters reaches the library intact.
            RdException e = expectRd(RdException.Status.IO, () -> RdNative.modelLoad(
                    "/nonexistent/mod\u00e8le-\ud83d\ude00.gguf", RdNative.BACKEND_CPU, 0, true, false, true, true));
            check(e.getMessage().contains("mod\u00e8le-\ud83d\ude00"), "UTF-8 message: " + e.getMessage());
            expectRd(RdException.Status.INVALID_ARGUMENT, () -> RdNative.modelLoad(
                    "a\u0000b", RdNative.BACKEND_CPU, 0, true, false, true, true));
            expectRd(RdException.Status.INVALID_ARGUMENT, () -> RdNative.modelLoad(
                    null, RdNative.BACKEND_CPU, 0, true, false, true, true));
            expectRd(RdException.Status.INVALID_ARGUMENT, () -> RdNative.modelLoad(
                    modelPath, 77, 0, true, false, true, true));
            expectRd(RdException.Status.INVALID_ARGUMENT, () -> RdNative.modelInfo(0));
            expectRd(RdException.Status.INVALID_ARGUMENT, () -> RdNative.sessionReset(0));
            expectRd(RdException.Status.INVALID_ARGUMENT, () -> RdNative.cancel(0));
            try (Fixture f = new Fixture()) {
                long s = f.session;
                expectRd(RdException.Status.INVALID_ARGUMENT,
                        () -> newSession(f.model, contextLength + 1));
                expectRd(RdException.Status.INVALID_ARGUMENT, () -> newSession(f.model, 0));
                expectRd(RdException.Status.INVALID_ARGUMENT, () -> RdNative.sessionNew(
                        f.model, -1, 0, 0, 0, 0, 0, 50, RdNative.ATTENTION_AUTO));
                Limits bad = Limits.fixed(4);
                bad.min = 8;
                expectRd(RdException.Status.INVALID_ARGUMENT, () -> generate(s, PROMPT, 4, bad, null));
                Limits nan = Limits.fixed(4);
                nan.criterion = RdNative.EXIT_KL;
                nan.threshold = Double.NaN;
                expectRd(RdException.Status.INVALID_ARGUMENT, () -> generate(s, PROMPT, 4, nan, null));
                expectRd(RdException.Status.INVALID_ARGUMENT,
                        () -> generate(s, new int[] {1, nVocab}, 4, Limits.fixed(4), null));
                expectRd(RdException.Status.INVALID_ARGUMENT,
                        () -> generate(s, new int[] {-1}, 4, Limits.fixed(4), null));
                expectRd(RdException.Status.INVALID_ARGUMENT,
                        () -> generate(s, PROMPT, -1, Limits.fixed(4), null));
                // Nothing evaluated yet: an empty prompt is invalid.
                expectRd(RdException.Status.INVALID_ARGUMENT,
                        () -> generate(s, new int[0], 4, Limits.fixed(4), null));
                // Re-entering the session from its own listener: BUSY, which the
                // listener's caller sees as a thrown exception.
                Collector reenter = new Collector() {
                    @Override
                    boolean hook(int i) {
                        RdNative.sessionReset(s);
                        return true;
                    }
                };
                expectRd(RdException.Status.BUSY, () -> generate(s, PROMPT, 4, Limits.fixed(4), reenter));
                checkEq(1, reenter.events.size(), "stopped at the first token");
                // An exception thrown by the listener comes out of generate unchanged.
                RdNative.sessionReset(s);
                IllegalStateException mine = new IllegalStateException("from the listener");
                try {
                    generate(s, PROMPT, 4, Limits.fixed(4), (t, it, idx, ev, text, lp) -> {
                        throw mine;
                    });
                    throw new Failure("the listener's exception was swallowed");
                } catch (IllegalStateException got) {
                    check(got == mine, "the same exception");
                }
                // And the session is fine afterwards.
                checkEq(4, greedyReference(s, 4).length, "usable after the errors");
            }
        });

        test("model without a tokenizer: no text, text calls fail", () -> {
            try (Fixture f = new Fixture()) {
                int[] mi = RdNative.modelInfo(f.model);
                checkEq(0, mi[RdNative.MI_HAS_TOKENIZER], "has_tokenizer");
                checkEq(0, mi[RdNative.MI_HAS_CHAT_TEMPLATE], "has_chat_template");
                Collector c = new Collector();
                generate(f.session, PROMPT, 3, Limits.fixed(2), c);
                for (Event e : c.events) {
                    check(e.text == null, "no text without a tokenizer");
                }
                expectRd(RdException.Status.NO_TOKENIZER, () -> RdNative.tokenize(f.model, "hi", 0));
                expectRd(RdException.Status.NO_TOKENIZER,
                        () -> RdNative.detokenize(f.model, new int[] {1, 2}, 0));
                expectRd(RdException.Status.NO_TEMPLATE, () -> RdNative.chatApplyTemplate(
                        f.model, new String[] {"user"}, new String[] {"hi"}, true));
                RdNative.sessionReset(f.session);
                expectRd(RdException.Status.NO_TOKENIZER,
                        () -> generateText(f.session, "hi", 2, Limits.fixed(2), 0, null));
            }
        });

        if (tokModelPath == null) {
            System.out.println("(no -Drd.tokmodel: the tokenizer tests are left out)");
        } else {
            test("tokenize and detokenize", () -> {
                long m = RdNative.modelLoad(tokModelPath, RdNative.BACKEND_CPU, 2, true, false, true, true);
                try {
                    int[] mi = RdNative.modelInfo(m);
                    checkEq(1, mi[RdNative.MI_HAS_TOKENIZER], "has_tokenizer");
                    checkEq(1, mi[RdNative.MI_HAS_CHAT_TEMPLATE], "has_chat_template");
                    String text = "Hello w\u00f6rld \ud83d\ude00 \u4e16\u754c";
                    int[] ids = RdNative.tokenize(m, text, 0);
                    check(ids.length > 0, "ids");
                    for (int id : ids) {
                        check(id >= 0 && id < mi[RdNative.MI_N_VOCAB], "id in range " + id);
                    }
                    checkEq(text, RdNative.detokenize(m, ids, 0), "round trip");
                    checkEq(0, RdNative.tokenize(m, "", 0).length, "empty text");
                    checkEq("", RdNative.detokenize(m, new int[0], 0), "no ids");
                    int[] withBos = RdNative.tokenize(m, text, RdNative.TOKENIZE_ADD_SPECIAL);
                    if (mi[RdNative.MI_ADD_BOS] == 1) {
                        checkEq(ids.length + 1, withBos.length, "BOS added");
                        checkEq(mi[RdNative.MI_BOS_TOKEN], withBos[0], "BOS first");
                        checkEq("", RdNative.detokenize(m, new int[] {withBos[0]},
                                RdNative.DETOKENIZE_SKIP_SPECIAL), "special skipped");
                    }
                    // Special-token text: one id with PARSE_SPECIAL, several without.
                    int eot = mi[RdNative.MI_EOT_TOKEN];
                    if (eot != RdNative.TOKEN_NONE) {
                        String eotText = RdNative.detokenize(m, new int[] {eot}, 0);
                        int[] parsed = RdNative.tokenize(m, eotText, RdNative.TOKENIZE_PARSE_SPECIAL);
                        check(Arrays.equals(new int[] {eot}, parsed), "special parsed: " + Arrays.toString(parsed));
                        check(RdNative.tokenize(m, eotText, 0).length > 1, "plain text without the flag");
                    }
                    expectRd(RdException.Status.INVALID_ARGUMENT,
                            () -> RdNative.tokenizeUtf8(m, new byte[] {'a', (byte) 0xff}, 0));
                    expectRd(RdException.Status.INVALID_ARGUMENT,
                            () -> RdNative.tokenize(m, "a", 1 << 20));
                    expectRd(RdException.Status.INVALID_ARGUMENT,
                            () -> RdNative.detokenize(m, new int[] {mi[RdNative.MI_N_VOCAB]}, 0));
                    expectRd(RdException.Status.INVALID_ARGUMENT, () -> RdNative.tokenizeUtf8(m, null, 0));
                } finally {
                    RdNative.modelFree(m);
                }
            });

            test("chat template", () -> {
                long m = RdNative.modelLoad(tokModelPath, RdNative.BACKEND_CPU, 2, true, false, true, true);
                try {
                    String[] roles = {"system", "user"};
                    String[] contents = {"Be brief.", "Gr\u00fc\u00dfe \ud83d\ude00"};
                    String open = RdNative.chatApplyTemplate(m, roles, contents, true);
                    check(open.contains("Be brief.") && open.contains(contents[1]), "messages rendered: " + open);
                    String closed = RdNative.chatApplyTemplate(m, roles, contents, false);
                    check(!open.equals(closed), "the generation prompt changes the text");
                    check(open.length() > 0 && closed.length() > 0, "non-empty");
                    expectRd(RdException.Status.CHAT_TEMPLATE, () -> RdNative.chatApplyTemplate(
                            m, new String[] {"nobody"}, new String[] {"x"}, true));
                    expectRd(RdException.Status.INVALID_ARGUMENT, () -> RdNative.chatApplyTemplate(
                            m, new String[] {"user", "user"}, new String[] {"x"}, true));
                    expectRd(RdException.Status.INVALID_ARGUMENT, () -> RdNative.chatApplyTemplate(
                            m, new String[] {"user"}, new String[] {"a\u0000b"}, true));
                    expectRd(RdException.Status.INVALID_ARGUMENT, () -> RdNative.chatApplyTemplate(
                            m, new String[] {"user"}, new String[] {null}, true));
                    check(RdNative.chatApplyTemplate(m, new String[0], new String[0], true) != null,
                            "no messages is allowed");
                } finally {
                    RdNative.modelFree(m);
                }
            });

            test("generate from text: events carry text", () -> {
                long m = RdNative.modelLoad(tokModelPath, RdNative.BACKEND_CPU, 2, true, false, true, true);
                long s = newSession(m, RdNative.N_CTX_FROM_MODEL);
                try {
                    String prompt = RdNative.chatApplyTemplate(
                            m, new String[] {"user"}, new String[] {"Hello there"}, true);
                    Collector c = new Collector();
                    double[] st = generateText(s, prompt, 12, Limits.fixed(3), 0, c);
                    int[] promptIds = RdNative.tokenize(m, prompt, TEXT_FLAGS);
                    checkEq((double) promptIds.length, st[RdNative.GS_N_PROMPT_TOKENS], "prompt tokens");
                    check(c.events.size() >= 1 && c.events.size() <= 12, "tokens " + c.events.size());
                    java.nio.charset.CharsetDecoder strict = StandardCharsets.UTF_8.newDecoder();
                    StringBuilder all = new StringBuilder();
                    for (Event e : c.events) {
                        check(e.text != null, "text with a tokenizer");
                        // Whole characters per event: each piece is valid UTF-8 on its own.
                        all.append(strict.decode(java.nio.ByteBuffer.wrap(e.text)));
                    }
                    int stop = (int) st[RdNative.GS_STOP_REASON];
                    if (stop != RdNative.STOP_CALLBACK) {
                        checkEq(RdNative.detokenize(m, c.tokens(), 0), all.toString(),
                                "event texts concatenate to detokenize(tokens)");
                    }
                    // The same tokens as rd_generate on the tokenized prompt.
                    RdNative.sessionReset(s);
                    Collector ids = new Collector();
                    generate(s, promptIds, 12, Limits.fixed(3), ids);
                    check(Arrays.equals(c.tokens(), ids.tokens()), "text and ids prompts agree: "
                            + Arrays.toString(c.tokens()) + " vs " + Arrays.toString(ids.tokens()));
                    // Both prompts at once is an error; so is invalid UTF-8.
                    RdNative.sessionReset(s);
                    expectRd(RdException.Status.INVALID_ARGUMENT, () -> RdNative.generate(s, PROMPT,
                            RdNative.utf8("x"), 1, 0, 1, 1, 1, 0, 0, false, false, 0, 0, 0, 0, true, false, 0, 0, 1, 0, 1, 0, 0,
                            false, null, true, 0, 0, 0, 4, false, null));
                    expectRd(RdException.Status.INVALID_ARGUMENT, () -> RdNative.generate(s, null,
                            new byte[] {(byte) 0xc3}, 1, 0, 1, 1, 1, 0, 0, false, false, 0, 0, 0, 0, true, false, 0, 0, 1, 0, 1,
                            0, 0, false, null, true, TEXT_FLAGS, 0, 0, 4, false, null));
                } finally {
                    RdNative.sessionFree(s);
                    RdNative.modelFree(m);
                }
            });
        }

        System.out.println(passed + " passed, " + failed + " failed");
        System.exit(failed == 0 ? 0 : 1);
    }
}
