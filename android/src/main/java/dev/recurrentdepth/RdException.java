package dev.recurrentdepth;

/**
 * A failed call of the recurrent-depth library: {@link #status} is the C
 * API's {@code rd_status} code and the message is {@code rd_last_error()}.
 * Thrown by the JNI bridge (its constructor is called from C).
 */
public class RdException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    /** The rd_status codes (include/recurrent_depth.h). */
    public enum Status {
        INVALID_ARGUMENT(1),
        IO(2),
        INVALID_MODEL(3),
        UNSUPPORTED_ARCHITECTURE(4),
        UNSUPPORTED(5),
        OUT_OF_MEMORY(6),
        BACKEND(7),
        CONTEXT_FULL(8),
        CANCELLED(9),
        BUFFER_TOO_SMALL(10),
        INVALID_STATE(11),
        BUSY(12),
        PANIC(13),
        /** The model file has no tokenizer: pass token ids. */
        NO_TOKENIZER(14),
        /** The model file has no chat template. */
        NO_TEMPLATE(15),
        /** The tokenizer is corrupt or unsupported, or failed on the input. */
        TOKENIZER(16),
        /** The chat template cannot be parsed or failed while rendering. */
        CHAT_TEMPLATE(17),
        /** A code this version does not know (a newer library). */
        UNKNOWN(-1);

        /** The numeric rd_status. */
        public final int code;

        Status(int code) {
            this.code = code;
        }

        /** The Status of a numeric rd_status; UNKNOWN for an unknown one. */
        public static Status of(int code) {
            for (Status s : values()) {
                if (s.code == code) {
                    return s;
                }
            }
            return UNKNOWN;
        }
    }

    /** The numeric rd_status (also for codes newer than {@link Status}). */
    public final int code;

    /** The status as an enum. */
    public final Status status;

    /** Called by the JNI bridge with the message as UTF-8 bytes. */
    RdException(int code, byte[] messageUtf8) {
        this(code, new String(messageUtf8, java.nio.charset.StandardCharsets.UTF_8));
    }

    public RdException(int code, String message) {
        super(message);
        this.code = code;
        this.status = Status.of(code);
    }

    @Override
    public String toString() {
        return "RdException(" + status + "): " + getMessage();
    }
}
