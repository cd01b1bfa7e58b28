package dev.recurrentdepth;

/**
 * Owns an rd_session pointer and makes closing it safe while calls are in
 * flight: the C API forbids rd_session_free (and rd_cancel after it) while
 * another thread uses the session, and on Android a session is easily closed
 * (onCleared, onDestroy) while a generation still runs on a worker thread.
 *
 * <p>Every native call on the session runs between {@link #acquire} and
 * {@link #release}. {@link #close} marks the handle closed; when a call is in
 * flight it cancels it (rd_cancel) and the last {@link #release} frees the
 * session, otherwise it frees it at once. {@link #cancel} is a no-op once the
 * session is freed. All methods are thread-safe.
 */
final class SessionHandle {
    private long handle;
    private int active;
    private boolean closed;

    SessionHandle(long handle) {
        if (handle == 0) {
            throw new IllegalArgumentException("null rd_session");
        }
        this.handle = handle;
    }

    /** The pointer, counted as in use until {@link #release}; throws once closed. */
    synchronized long acquire() {
        if (closed) {
            throw new IllegalStateException("the session is closed");
        }
        active++;
        return handle;
    }

    /** Ends a call begun with {@link #acquire}; frees the session if it was closed meanwhile. */
    void release() {
        long toFree = 0;
        synchronized (this) {
            if (active <= 0) {
                throw new IllegalStateException("release without acquire");
            }
            active--;
            if (active == 0 && closed && handle != 0) {
                toFree = handle;
                handle = 0;
            }
        }
        if (toFree != 0) {
            RdNative.sessionFree(toFree);
        }
    }

    /** rd_cancel on the running call, if the session still exists. */
    synchronized void cancel() {
        if (handle != 0) {
            RdNative.cancel(handle);
        }
    }

    /** Whether {@link #close} was called. */
    synchronized boolean isClosed() {
        return closed;
    }

    /** Number of calls in flight (for tests). */
    synchronized int activeCalls() {
        return active;
    }

    /** Whether the native session has been freed (for tests). */
    synchronized boolean isFreed() {
        return handle == 0;
    }

    /**
     * Closes the session: frees it now when idle, else cancels the call in
     * flight and leaves the freeing to its release. Idempotent.
     */
    void close() {
        long toFree = 0;
        synchronized (this) {
            if (closed) {
                return;
            }
            closed = true;
            if (active > 0) {
                RdNative.cancel(handle);
            } else {
                toFree = handle;
                handle = 0;
            }
        }
        if (toFree != 0) {
            RdNative.sessionFree(toFree);
        }
    }
}
