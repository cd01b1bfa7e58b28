/*
 * rd_jni.c: the JNI bridge of the Android library, over the C API of
 * include/recurrent_depth.h. C11; builds for Android (CMakeLists.txt beside
 * this file, driven by Gradle) and for the host (android/hosttest/run.sh),
 * where a desktop JVM runs the same native methods.
 *
 * The Java side is dev.recurrentdepth.RdNative (src/main/java). The methods
 * are bound in JNI_OnLoad with RegisterNatives and the signature table at the
 * end of this file, so a Java declaration that does not match fails the load
 * (NoSuchMethodError) instead of corrupting arguments. Only JNI_OnLoad is
 * exported.
 *
 * Every failing rd_* call throws dev.recurrentdepth.RdException(code,
 * rd_last_error() as UTF-8 bytes). Strings cross as UTF-8 byte arrays or
 * through java.lang.String(byte[], "UTF-8"): JNI's NewStringUTF expects
 * "modified UTF-8" and aborts (CheckJNI) on 4-byte sequences.
 */
#include <jni.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recurrent_depth.h"

#define RD_JNI_EXPORT __attribute__((visibility("default")))

static jclass g_exception_class;    /* dev/recurrentdepth/RdException */
static jmethodID g_exception_ctor;  /* RdException(int, byte[]) */
static jclass g_string_class;       /* java/lang/String */
static jmethodID g_string_ctor;     /* String(byte[], String) */
static jstring g_utf8_name;         /* "UTF-8" */
static jmethodID g_on_token;        /* TokenListener.onToken(IIJD[BF)Z */

/* Handles: C pointers carried as jlong (also on 32-bit ABIs). */
static inline jlong to_handle(const void *p) { return (jlong)(intptr_t)p; }
#define MODEL(h) ((rd_model *)(intptr_t)(h))
#define SESSION(h) ((rd_session *)(intptr_t)(h))

static jbyteArray new_bytes(JNIEnv *env, const char *s, size_t len) {
    if (len > INT32_MAX) len = INT32_MAX;
    jbyteArray a = (*env)->NewByteArray(env, (jsize)len);
    if (a != NULL && len > 0) (*env)->SetByteArrayRegion(env, a, 0, (jsize)len, (const jbyte *)s);
    return a;
}

/* A java.lang.String from a NUL-terminated UTF-8 string (NULL gives NULL). */
static jstring new_string(JNIEnv *env, const char *s) {
    if (s == NULL) return NULL;
    jbyteArray bytes = new_bytes(env, s, strlen(s));
    if (bytes == NULL) return NULL;
    jstring str = (jstring)(*env)->NewObject(env, g_string_class, g_string_ctor, bytes, g_utf8_name);
    (*env)->DeleteLocalRef(env, bytes);
    return str;
}

static void throw_rd(JNIEnv *env, int code, const char *message) {
    if ((*env)->ExceptionCheck(env)) return; /* keep the first exception */
    jbyteArray msg = new_bytes(env, message, strlen(message));
    if (msg == NULL) return; /* OutOfMemoryError pending */
    jobject ex = (*env)->NewObject(env, g_exception_class, g_exception_ctor, (jint)code, msg);
    (*env)->DeleteLocalRef(env, msg);
    if (ex != NULL) {
        (*env)->Throw(env, (jthrowable)ex);
        (*env)->DeleteLocalRef(env, ex);
    }
}

/* Throws for a failed status; returns true when `st` is RD_OK. */
static bool check(JNIEnv *env, rd_status st) {
    if (st == RD_OK) return true;
    throw_rd(env, (int)st, rd_last_error());
    return false;
}

/* Rejects a negative Java int where the C API takes an unsigned count. */
static bool non_negative(JNIEnv *env, jint v, const char *what) {
    if (v >= 0) return true;
    char msg[128];
    snprintf(msg, sizeof msg, "rd_jni: %s must be >= 0 (got %d)", what, (int)v);
    throw_rd(env, RD_ERR_INVALID_ARGUMENT, msg);
    return false;
}

/* ---- version, strings, defaults ------------------------------------------ */

static jstring jni_version(JNIEnv *env, jclass cls) {
    (void)cls;
    return new_string(env, rd_version());
}

static jstring jni_status_string(JNIEnv *env, jclass cls, jint status) {
    (void)cls;
    return new_string(env, rd_status_string(status));
}

static jdouble jni_exit_default_threshold(JNIEnv *env, jclass cls, jint criterion) {
    (void)env;
    (void)cls;
    return rd_exit_default_threshold((rd_exit_criterion)criterion);
}

/* ---- model ---------------------------------------------------------------- */

static rd_model_params model_params(jint backend, jint n_threads, jboolean use_mmap,
                                    jboolean use_mlock, jboolean repack, jboolean prefetch) {
    rd_model_params mp = rd_model_default_params();
    mp.backend = (rd_backend)backend;
    mp.n_threads = (uint32_t)n_threads;
    mp.use_mmap = use_mmap == JNI_TRUE;
    mp.use_mlock = use_mlock == JNI_TRUE;
    mp.repack = repack == JNI_TRUE ? RD_REPACK_AUTO : RD_REPACK_OFF;
    mp.prefetch = prefetch == JNI_TRUE;
    return mp;
}

/* rd_model_load_fd: an APK asset's (fd, offset, length); the fd stays the caller's. */
static jlong jni_model_load_fd(JNIEnv *env, jclass cls, jint fd, jlong offset, jlong length,
                               jint backend, jint n_threads, jboolean use_mmap,
                               jboolean use_mlock, jboolean repack, jboolean prefetch) {
    (void)cls;
    if (offset < 0 || length < 0) {
        throw_rd(env, RD_ERR_INVALID_ARGUMENT, "rd_jni: offset and length must be >= 0");
        return 0;
    }
    if (!non_negative(env, n_threads, "nThreads")) return 0;
    rd_model_params mp = model_params(backend, n_threads, use_mmap, use_mlock, repack, prefetch);
    rd_model *model = NULL;
    rd_status st = rd_model_load_fd(fd, (uint64_t)offset, (uint64_t)length, &mp, &model);
    return check(env, st) ? to_handle(model) : 0;
}

static jlong jni_model_load(JNIEnv *env, jclass cls, jbyteArray path_utf8, jint backend,
                            jint n_threads, jboolean use_mmap, jboolean use_mlock,
                            jboolean repack, jboolean prefetch) {
    (void)cls;
    if (path_utf8 == NULL) {
        throw_rd(env, RD_ERR_INVALID_ARGUMENT, "rd_jni: path is null");
        return 0;
    }
    if (!non_negative(env, n_threads, "nThreads")) return 0;
    jsize len = (*env)->GetArrayLength(env, path_utf8);
    char *path = malloc((size_t)len + 1);
    if (path == NULL) {
        throw_rd(env, RD_ERR_OUT_OF_MEMORY, "rd_jni: out of memory");
        return 0;
    }
    (*env)->GetByteArrayRegion(env, path_utf8, 0, len, (jbyte *)path);
    path[len] = '\0';
    if (memchr(path, '\0', (size_t)len) != NULL) {
        free(path);
        throw_rd(env, RD_ERR_INVALID_ARGUMENT, "rd_jni: path contains a NUL character");
        return 0;
    }
    rd_model_params mp = model_params(backend, n_threads, use_mmap, use_mlock, repack, prefetch);
    rd_model *model = NULL;
    rd_status st = rd_model_load(path, &mp, &model);
    free(path);
    return check(env, st) ? to_handle(model) : 0;
}

static void jni_model_free(JNIEnv *env, jclass cls, jlong model) {
    (void)env;
    (void)cls;
    rd_model_free(MODEL(model));
}

static bool model_info(JNIEnv *env, jlong model, rd_model_info *info) {
    memset(info, 0, sizeof *info);
    info->struct_size = sizeof *info;
    return check(env, rd_model_get_info(MODEL(model), info));
}

static jintArray jni_model_info(JNIEnv *env, jclass cls, jlong model) {
    (void)cls;
    rd_model_info mi;
    if (!model_info(env, model, &mi)) return NULL;
    /* Order: RdNative.MI_* */
    const jint v[] = {
        (jint)mi.n_vocab,    (jint)mi.context_length,     (jint)mi.n_embd,
        (jint)mi.n_head,     (jint)mi.n_head_kv,          (jint)mi.n_prelude,
        (jint)mi.n_core,     (jint)mi.n_coda,             (jint)mi.default_iterations,
        (jint)mi.n_threads,  (jint)(mi.weights_mapped ? 1 : 0),
        (jint)(mi.has_tokenizer ? 1 : 0), (jint)(mi.has_chat_template ? 1 : 0),
        (jint)(mi.add_bos ? 1 : 0),
        /* RD_TOKEN_NONE (UINT32_MAX) arrives as -1 */
        (jint)mi.bos_token,  (jint)mi.eos_token,          (jint)mi.eot_token,
    };
    jsize n = (jsize)(sizeof v / sizeof v[0]);
    jintArray a = (*env)->NewIntArray(env, n);
    if (a != NULL) (*env)->SetIntArrayRegion(env, a, 0, n, v);
    return a;
}

static jstring jni_model_architecture(JNIEnv *env, jclass cls, jlong model) {
    (void)cls;
    rd_model_info mi;
    return model_info(env, model, &mi) ? new_string(env, mi.architecture) : NULL;
}

static jstring jni_model_backend_name(JNIEnv *env, jclass cls, jlong model) {
    (void)cls;
    rd_model_info mi;
    return model_info(env, model, &mi) ? new_string(env, mi.backend_name) : NULL;
}

/* ---- text ----------------------------------------------------------------- */

/* Copies a byte[] into a malloc'ed buffer with a NUL after it. *len gets its
   length. NULL (with an exception pending) on failure; a null array is an
   invalid argument named `what`. */
static char *copy_bytes(JNIEnv *env, jbyteArray a, size_t *len, const char *what) {
    if (a == NULL) {
        char msg[96];
        snprintf(msg, sizeof msg, "rd_jni: %s is null", what);
        throw_rd(env, RD_ERR_INVALID_ARGUMENT, msg);
        return NULL;
    }
    jsize n = (*env)->GetArrayLength(env, a);
    char *buf = malloc((size_t)n + 1);
    if (buf == NULL) {
        throw_rd(env, RD_ERR_OUT_OF_MEMORY, "rd_jni: out of memory");
        return NULL;
    }
    (*env)->GetByteArrayRegion(env, a, 0, n, (jbyte *)buf);
    buf[n] = '\0';
    *len = (size_t)n;
    return buf;
}

static jintArray jni_tokenize(JNIEnv *env, jclass cls, jlong model, jbyteArray text_utf8,
                              jint flags) {
    (void)cls;
    size_t len;
    char *text = copy_bytes(env, text_utf8, &len, "text");
    if (text == NULL) return NULL;
    jintArray result = NULL;
    size_t n = 0;
    /* Size negotiation: ask for the count, then fill a buffer of that size. */
    rd_status st = rd_tokenize(MODEL(model), text, len, (rd_tokenize_flags)flags, NULL, 0, &n);
    if (st == RD_ERR_BUFFER_TOO_SMALL || (st == RD_OK && n > 0)) {
        rd_token *ids = malloc(n * sizeof *ids);
        if (ids == NULL) {
            throw_rd(env, RD_ERR_OUT_OF_MEMORY, "rd_jni: out of memory");
        } else {
            size_t got = 0;
            st = rd_tokenize(MODEL(model), text, len, (rd_tokenize_flags)flags, ids, n, &got);
            if (check(env, st)) {
                result = (*env)->NewIntArray(env, (jsize)got);
                if (result != NULL) (*env)->SetIntArrayRegion(env, result, 0, (jsize)got, (const jint *)ids);
            }
            free(ids);
        }
    } else if (check(env, st)) {
        result = (*env)->NewIntArray(env, 0);
    }
    free(text);
    return result;
}

/* Runs a size-negotiating text call (rd_detokenize, rd_chat_apply_template)
   twice and returns its text as a byte[]. */
typedef rd_status (*text_call)(void *args, char *out, size_t capacity, size_t *out_len);

static jbyteArray text_result(JNIEnv *env, text_call call, void *args) {
    size_t len = 0;
    rd_status st = call(args, NULL, 0, &len);
    if (st != RD_OK && st != RD_ERR_BUFFER_TOO_SMALL) {
        check(env, st);
        return NULL;
    }
    char *buf = malloc(len + 1);
    if (buf == NULL) {
        throw_rd(env, RD_ERR_OUT_OF_MEMORY, "rd_jni: out of memory");
        return NULL;
    }
    size_t got = 0;
    st = call(args, buf, len + 1, &got);
    jbyteArray result = check(env, st) ? new_bytes(env, buf, got) : NULL;
    free(buf);
    return result;
}

typedef struct {
    const rd_model *model;
    const rd_token *tokens;
    size_t n_tokens;
    rd_detokenize_flags flags;
} detok_args;

static rd_status detok_call(void *p, char *out, size_t capacity, size_t *out_len) {
    detok_args *a = p;
    return rd_detokenize(a->model, a->tokens, a->n_tokens, a->flags, out, capacity, out_len);
}

static bool copy_tokens(JNIEnv *env, jintArray a, rd_token **out, size_t *n);

static jbyteArray jni_detokenize(JNIEnv *env, jclass cls, jlong model, jintArray tokens,
                                 jint flags) {
    (void)cls;
    detok_args a = {.model = MODEL(model), .flags = (rd_detokenize_flags)flags};
    rd_token *ids = NULL;
    if (!copy_tokens(env, tokens, &ids, &a.n_tokens)) return NULL;
    a.tokens = ids;
    jbyteArray result = text_result(env, detok_call, &a);
    free(ids);
    return result;
}

typedef struct {
    const rd_model *model;
    const rd_chat_message *messages;
    size_t n_messages;
    bool add_generation_prompt;
} chat_args;

static rd_status chat_call(void *p, char *out, size_t capacity, size_t *out_len) {
    chat_args *a = p;
    return rd_chat_apply_template(a->model, a->messages, a->n_messages, a->add_generation_prompt,
                                  out, capacity, out_len);
}

static jbyteArray jni_chat_apply_template(JNIEnv *env, jclass cls, jlong model,
                                          jobjectArray roles, jobjectArray contents,
                                          jboolean add_generation_prompt) {
    (void)cls;
    if (roles == NULL || contents == NULL ||
        (*env)->GetArrayLength(env, roles) != (*env)->GetArrayLength(env, contents)) {
        throw_rd(env, RD_ERR_INVALID_ARGUMENT, "rd_jni: roles and contents must have one entry per message");
        return NULL;
    }
    jsize n = (*env)->GetArrayLength(env, roles);
    rd_chat_message *messages = calloc((size_t)n + 1, sizeof *messages);
    if (messages == NULL) {
        throw_rd(env, RD_ERR_OUT_OF_MEMORY, "rd_jni: out of memory");
        return NULL;
    }
    jbyteArray result = NULL;
    for (jsize i = 0; i < n; i++) {
        jbyteArray r = (jbyteArray)(*env)->GetObjectArrayElement(env, roles, i);
        jbyteArray c = (jbyteArray)(*env)->GetObjectArrayElement(env, contents, i);
        size_t rl = 0, cl = 0;
        char *role = copy_bytes(env, r, &rl, "a role");
        char *content = role != NULL ? copy_bytes(env, c, &cl, "a content") : NULL;
        if (r != NULL) (*env)->DeleteLocalRef(env, r);
        if (c != NULL) (*env)->DeleteLocalRef(env, c);
        messages[i].role = role;
        messages[i].content = content;
        if (content == NULL) break;
        if (memchr(role, '\0', rl) != NULL || memchr(content, '\0', cl) != NULL) {
            throw_rd(env, RD_ERR_INVALID_ARGUMENT, "rd_jni: a message contains a NUL character");
            break;
        }
    }
    if (!(*env)->ExceptionCheck(env)) {
        chat_args a = {.model = MODEL(model), .messages = messages, .n_messages = (size_t)n,
                       .add_generation_prompt = add_generation_prompt == JNI_TRUE};
        result = text_result(env, chat_call, &a);
    }
    for (jsize k = 0; k < n; k++) { /* calloc'ed: entries never filled are NULL */
        free((void *)messages[k].role);
        free((void *)messages[k].content);
    }
    free(messages);
    return result;
}

/* ---- session -------------------------------------------------------------- */

static jlong jni_session_new(JNIEnv *env, jclass cls, jlong model, jint n_ctx, jint n_batch,
                             jint kv_budget, jint kv_type, jint state_init, jlong seed,
                             jint thread_poll, jint attention) {
    (void)cls;
    if (n_ctx < -1) {
        throw_rd(env, RD_ERR_INVALID_ARGUMENT, "rd_jni: nCtx must be >= 0, or -1 for the model's");
        return 0;
    }
    if (!non_negative(env, n_batch, "nBatch") || !non_negative(env, kv_budget, "kvBudget") ||
        !non_negative(env, thread_poll, "threadPoll"))
        return 0;
    rd_session_params sp = rd_session_default_params();
    sp.n_ctx = n_ctx == -1 ? (uint32_t)RD_N_CTX_FROM_MODEL : (uint32_t)n_ctx;
    sp.n_batch = (uint32_t)n_batch;
    sp.kv_budget = (uint32_t)kv_budget;
    sp.kv_type = (rd_kv_type)kv_type;
    sp.state_init = (rd_state_init)state_init;
    sp.seed = (uint64_t)seed;
    sp.thread_poll = (uint32_t)thread_poll;
    sp.attention = (rd_attention)attention;
    rd_session *session = NULL;
    rd_status st = rd_session_new(MODEL(model), &sp, &session);
    return check(env, st) ? to_handle(session) : 0;
}

static void jni_session_free(JNIEnv *env, jclass cls, jlong session) {
    (void)env;
    (void)cls;
    rd_session_free(SESSION(session));
}

static void jni_session_reset(JNIEnv *env, jclass cls, jlong session) {
    (void)cls;
    check(env, rd_session_reset(SESSION(session)));
}

static jlongArray jni_session_info(JNIEnv *env, jclass cls, jlong session) {
    (void)cls;
    rd_session_info si;
    memset(&si, 0, sizeof si);
    si.struct_size = sizeof si;
    if (!check(env, rd_session_get_info(SESSION(session), &si))) return NULL;
    /* Order: RdNative.SI_* */
    const jlong v[] = {
        (jlong)si.n_ctx,     (jlong)si.n_past,   (jlong)si.n_batch,
        (jlong)si.kv_budget, (jlong)si.kv_bytes, (jlong)si.compute_bytes,
    };
    jsize n = (jsize)(sizeof v / sizeof v[0]);
    jlongArray a = (*env)->NewLongArray(env, n);
    if (a != NULL) (*env)->SetLongArrayRegion(env, a, 0, n, v);
    return a;
}

static void jni_cancel(JNIEnv *env, jclass cls, jlong session) {
    (void)cls;
    check(env, rd_cancel(SESSION(session)));
}

static void jni_session_truncate(JNIEnv *env, jclass cls, jlong session, jint n_keep) {
    (void)cls;
    if (!non_negative(env, n_keep, "nKeep")) return;
    check(env, rd_session_truncate(SESSION(session), (uint32_t)n_keep));
}

static void jni_session_set_threads(JNIEnv *env, jclass cls, jlong session, jint n_threads) {
    (void)cls;
    if (!non_negative(env, n_threads, "nThreads")) return;
    check(env, rd_session_set_threads(SESSION(session), (uint32_t)n_threads));
}

/* rd_session_state_save into a new byte[] of the state's size. */
static jbyteArray jni_state_save(JNIEnv *env, jclass cls, jlong session) {
    (void)cls;
    size_t size = 0;
    if (!check(env, rd_session_state_size(SESSION(session), &size))) return NULL;
    if (size > INT32_MAX) {
        throw_rd(env, RD_ERR_OUT_OF_MEMORY, "rd_jni: the state is larger than a Java array");
        return NULL;
    }
    unsigned char *buf = malloc(size);
    if (buf == NULL) {
        throw_rd(env, RD_ERR_OUT_OF_MEMORY, "rd_jni: out of memory");
        return NULL;
    }
    size_t len = 0;
    jbyteArray out = NULL;
    if (check(env, rd_session_state_save(SESSION(session), buf, size, &len)))
        out = new_bytes(env, (const char *)buf, len);
    free(buf);
    return out;
}

static void jni_state_load(JNIEnv *env, jclass cls, jlong session, jbyteArray state) {
    (void)cls;
    size_t len = 0;
    char *buf = copy_bytes(env, state, &len, "state");
    if (buf == NULL) return;
    check(env, rd_session_state_load(SESSION(session), (const uint8_t *)buf, len));
    free(buf);
}

static bool fill_limits(JNIEnv *env, rd_compute_limits *l, jint min_it, jint max_it,
                        jint check_every, jint criterion, jdouble threshold, jboolean warm_start,
                        jboolean exit_in_prefill, jint screen_criterion,
                        jdouble screen_threshold, jint prefill_criterion,
                        jdouble prefill_threshold, jboolean lead_in) {
    if (!non_negative(env, min_it, "minIterations") ||
        !non_negative(env, max_it, "maxIterations") ||
        !non_negative(env, check_every, "checkEvery"))
        return false;
    *l = rd_compute_limits_default();
    l->min_iterations = (uint32_t)min_it;
    l->max_iterations = (uint32_t)max_it;
    l->check_every = (uint32_t)check_every;
    l->exit_criterion = (rd_exit_criterion)criterion;
    l->exit_threshold = threshold;
    l->warm_start = warm_start == JNI_TRUE;
    l->exit_in_prefill = exit_in_prefill == JNI_TRUE;
    l->exit_screen_criterion = (rd_exit_criterion)screen_criterion;
    l->exit_screen_threshold = screen_threshold;
    l->prefill_exit_criterion = (rd_exit_criterion)prefill_criterion;
    l->prefill_exit_threshold = prefill_threshold;
    l->lead_in = lead_in == JNI_TRUE;
    return true;
}

static void jni_set_compute_limits(JNIEnv *env, jclass cls, jlong session, jint min_it,
                                   jint max_it, jint check_every, jint criterion,
                                   jdouble threshold, jboolean warm_start,
                                   jboolean exit_in_prefill, jint screen_criterion,
                                   jdouble screen_threshold, jint prefill_criterion,
                                   jdouble prefill_threshold, jboolean lead_in) {
    (void)cls;
    rd_compute_limits l;
    if (!fill_limits(env, &l, min_it, max_it, check_every, criterion, threshold, warm_start,
                     exit_in_prefill, screen_criterion, screen_threshold, prefill_criterion,
                     prefill_threshold, lead_in))
        return;
    check(env, rd_set_compute_limits(SESSION(session), &l));
}

/* ---- generation ----------------------------------------------------------- */

typedef struct {
    JNIEnv *env;
    jobject listener;
} token_ctx;

/* Whether the library's rd_token_event carries `field` (struct_size rule). */
#define EVENT_HAS(ev, field) \
    ((ev)->struct_size >= offsetof(rd_token_event, field) + sizeof((ev)->field))

static bool on_token(const rd_token_event *ev, void *user_data) {
    token_ctx *c = user_data;
    JNIEnv *env = c->env;
    if (c->listener == NULL) return true;
    jbyteArray text = NULL;
    if (EVENT_HAS(ev, text_len) && ev->text != NULL) {
        text = new_bytes(env, ev->text, ev->text_len);
        if (text == NULL) return false; /* OutOfMemoryError pending */
    }
    /* A library older than the field sends no logprob: NaN. */
    jfloat logprob = EVENT_HAS(ev, logprob) ? ev->logprob : (jfloat)NAN;
    jboolean keep = (*env)->CallBooleanMethod(env, c->listener, g_on_token, (jint)ev->token,
                                              (jint)ev->iterations, (jlong)ev->index,
                                              (jdouble)ev->exit_value, text, logprob);
    if (text != NULL) (*env)->DeleteLocalRef(env, text); /* one per token: do not pile up */
    if ((*env)->ExceptionCheck(env)) return false;     /* rethrown after rd_generate */
    return keep == JNI_TRUE;
}

/* Copies a Java int[] of token ids; *out NULL for a null or empty array. */
static bool copy_tokens(JNIEnv *env, jintArray a, rd_token **out, size_t *n) {
    *out = NULL;
    *n = 0;
    if (a == NULL) return true;
    jsize len = (*env)->GetArrayLength(env, a);
    if (len == 0) return true;
    rd_token *t = malloc((size_t)len * sizeof *t);
    if (t == NULL) {
        throw_rd(env, RD_ERR_OUT_OF_MEMORY, "rd_jni: out of memory");
        return false;
    }
    /* jint and rd_token are both 32 bits; a negative id becomes >= n_vocab
       and is rejected by the library. */
    _Static_assert(sizeof(jint) == sizeof(rd_token), "rd_token is 32 bits");
    (*env)->GetIntArrayRegion(env, a, 0, len, (jint *)t);
    *out = t;
    *n = (size_t)len;
    return true;
}

static jdoubleArray jni_generate(JNIEnv *env, jclass cls, jlong session, jintArray prompt,
                                 jbyteArray prompt_utf8, jint max_tokens,
                                 jint prefill_iterations, jint min_it,
                                 jint max_it, jint check_every, jint criterion,
                                 jdouble threshold, jboolean warm_start,
                                 jboolean exit_in_prefill, jint screen_criterion,
                                 jdouble screen_threshold, jint prefill_criterion,
                                 jdouble prefill_threshold, jboolean lead_in, jboolean sample,
                                 jfloat temperature,
                                 jint top_k, jfloat top_p, jfloat min_p, jfloat repeat_penalty,
                                 jint repeat_last_n, jlong seed, jboolean greedy,
                                 jintArray stop_tokens, jboolean default_stop_tokens,
                                 jint tokenize_flags, jint detokenize_flags, jint draft_tokens,
                                 jint draft_iterations, jboolean draft_adaptive,
                                 jobject listener) {
    (void)cls;
    if (!non_negative(env, max_tokens, "maxTokens") ||
        !non_negative(env, draft_tokens, "draftTokens") ||
        !non_negative(env, draft_iterations, "draftIterations") ||
        !non_negative(env, prefill_iterations, "prefillIterations") ||
        !non_negative(env, top_k, "topK") || !non_negative(env, repeat_last_n, "repeatLastN"))
        return NULL;
    rd_compute_limits limits;
    if (!fill_limits(env, &limits, min_it, max_it, check_every, criterion, threshold, warm_start,
                     exit_in_prefill, screen_criterion, screen_threshold, prefill_criterion,
                     prefill_threshold, lead_in))
        return NULL;
    rd_sampling_params sampling = rd_sampling_default_params();
    sampling.temperature = temperature;
    sampling.top_k = (uint32_t)top_k;
    sampling.top_p = top_p;
    sampling.min_p = min_p;
    sampling.repeat_penalty = repeat_penalty;
    sampling.repeat_last_n = (uint32_t)repeat_last_n;
    sampling.seed = (uint64_t)seed;
    sampling.greedy = greedy == JNI_TRUE;

    rd_token *tokens = NULL, *stops = NULL;
    size_t n_tokens = 0, n_stops = 0, text_len = 0;
    char *text = NULL;
    if (prompt_utf8 != NULL) {
        if (prompt != NULL) {
            throw_rd(env, RD_ERR_INVALID_ARGUMENT, "rd_jni: give the prompt as ids or as text, not both");
            return NULL;
        }
        text = copy_bytes(env, prompt_utf8, &text_len, "prompt");
        if (text == NULL) return NULL;
    } else if (!copy_tokens(env, prompt, &tokens, &n_tokens)) {
        return NULL;
    }
    if (!copy_tokens(env, stop_tokens, &stops, &n_stops)) {
        free(tokens);
        free(text);
        return NULL;
    }

    rd_generate_params gp = rd_generate_default_params();
    gp.max_tokens = (uint32_t)max_tokens;
    gp.prefill_iterations = (uint32_t)prefill_iterations;
    gp.limits = &limits;
    gp.sampling = sample == JNI_TRUE ? &sampling : NULL;
    gp.stop_tokens = stops;
    gp.n_stop_tokens = n_stops;
    gp.default_stop_tokens = default_stop_tokens == JNI_TRUE;
    gp.tokenize_flags = (rd_tokenize_flags)tokenize_flags;
    gp.detokenize_flags = (rd_detokenize_flags)detokenize_flags;
    gp.draft_tokens = (uint32_t)draft_tokens;
    gp.draft_iterations = (uint32_t)draft_iterations;
    gp.draft_adaptive = draft_adaptive == JNI_TRUE;

    token_ctx ctx = {.env = env, .listener = listener};
    rd_generate_stats stats;
    memset(&stats, 0, sizeof stats);
    stats.struct_size = sizeof stats;
    rd_status st =
        text != NULL
            ? rd_generate_text(SESSION(session), text, text_len, &gp, on_token, &ctx, &stats)
            : rd_generate(SESSION(session), tokens, n_tokens, &gp, on_token, &ctx, &stats);
    free(tokens);
    free(text);
    free(stops);
    if ((*env)->ExceptionCheck(env)) return NULL; /* the listener's exception wins */
    if (!check(env, st)) return NULL;
    /* Order: RdNative.GS_* */
    const jdouble v[] = {
        (jdouble)stats.n_tokens,        (jdouble)stats.n_prompt_tokens,
        (jdouble)stats.prefill_iterations, (jdouble)stats.stop_reason,
        stats.prefill_seconds,          stats.decode_seconds,
        stats.mean_iterations,          (jdouble)stats.kv_bytes,
        (jdouble)stats.n_drafted,       (jdouble)stats.n_draft_accepted,
        (jdouble)stats.n_verify_passes,
    };
    jsize n = (jsize)(sizeof v / sizeof v[0]);
    jdoubleArray a = (*env)->NewDoubleArray(env, n);
    if (a != NULL) (*env)->SetDoubleArrayRegion(env, a, 0, n, v);
    return a;
}

/* ---- registration --------------------------------------------------------- */

#define FN(f) ((void *)(f))
static const JNINativeMethod k_methods[] = {
    {"version", "()Ljava/lang/String;", FN(jni_version)},
    {"statusString", "(I)Ljava/lang/String;", FN(jni_status_string)},
    {"exitDefaultThreshold", "(I)D", FN(jni_exit_default_threshold)},
    {"modelLoadUtf8", "([BIIZZZZ)J", FN(jni_model_load)},
    {"modelLoadFd", "(IJJIIZZZZ)J", FN(jni_model_load_fd)},
    {"modelFree", "(J)V", FN(jni_model_free)},
    {"modelInfo", "(J)[I", FN(jni_model_info)},
    {"modelArchitecture", "(J)Ljava/lang/String;", FN(jni_model_architecture)},
    {"modelBackendName", "(J)Ljava/lang/String;", FN(jni_model_backend_name)},
    {"tokenizeUtf8", "(J[BI)[I", FN(jni_tokenize)},
    {"detokenizeUtf8", "(J[II)[B", FN(jni_detokenize)},
    {"chatApplyTemplateUtf8", "(J[[B[[BZ)[B", FN(jni_chat_apply_template)},
    {"sessionNew", "(JIIIIIJII)J", FN(jni_session_new)},
    {"sessionFree", "(J)V", FN(jni_session_free)},
    {"sessionReset", "(J)V", FN(jni_session_reset)},
    {"sessionInfo", "(J)[J", FN(jni_session_info)},
    {"cancel", "(J)V", FN(jni_cancel)},
    {"sessionTruncate", "(JI)V", FN(jni_session_truncate)},
    {"sessionSetThreads", "(JI)V", FN(jni_session_set_threads)},
    {"stateSave", "(J)[B", FN(jni_state_save)},
    {"stateLoad", "(J[B)V", FN(jni_state_load)},
    {"setComputeLimits", "(JIIIIDZZIDIDZ)V", FN(jni_set_compute_limits)},
    {"generate",
     "(J[I[BII" /* session, prompt, promptUtf8, maxTokens, prefillIterations */
     "IIIIDZZIDIDZ" /* limits */
     "ZFIFFFIJZ" /* sampling */
     "[IZII"    /* stopTokens, defaultStopTokens, tokenizeFlags, detokenizeFlags */
     "IIZ"      /* draftTokens, draftIterations, draftAdaptive */
     "Ldev/recurrentdepth/TokenListener;)[D",
     FN(jni_generate)},
};

static jclass global_class(JNIEnv *env, const char *name) {
    jclass local = (*env)->FindClass(env, name);
    if (local == NULL) return NULL;
    jclass global = (jclass)(*env)->NewGlobalRef(env, local);
    (*env)->DeleteLocalRef(env, local);
    return global;
}

RD_JNI_EXPORT jint JNI_OnLoad(JavaVM *vm, void *reserved) {
    (void)reserved;
    JNIEnv *env = NULL;
    if ((*vm)->GetEnv(vm, (void **)&env, JNI_VERSION_1_6) != JNI_OK) return JNI_ERR;

    g_exception_class = global_class(env, "dev/recurrentdepth/RdException");
    if (g_exception_class == NULL) return JNI_ERR;
    g_exception_ctor = (*env)->GetMethodID(env, g_exception_class, "<init>", "(I[B)V");
    if (g_exception_ctor == NULL) return JNI_ERR;

    g_string_class = global_class(env, "java/lang/String");
    if (g_string_class == NULL) return JNI_ERR;
    g_string_ctor = (*env)->GetMethodID(env, g_string_class, "<init>", "([BLjava/lang/String;)V");
    if (g_string_ctor == NULL) return JNI_ERR;
    jstring utf8 = (*env)->NewStringUTF(env, "UTF-8");
    if (utf8 == NULL) return JNI_ERR;
    g_utf8_name = (jstring)(*env)->NewGlobalRef(env, utf8);
    (*env)->DeleteLocalRef(env, utf8);

    jclass listener = (*env)->FindClass(env, "dev/recurrentdepth/TokenListener");
    if (listener == NULL) return JNI_ERR;
    g_on_token = (*env)->GetMethodID(env, listener, "onToken", "(IIJD[BF)Z");
    (*env)->DeleteLocalRef(env, listener);
    if (g_on_token == NULL) return JNI_ERR;

    jclass natives = (*env)->FindClass(env, "dev/recurrentdepth/RdNative");
    if (natives == NULL) return JNI_ERR;
    jint r = (*env)->RegisterNatives(env, natives, k_methods,
                                     (jint)(sizeof k_methods / sizeof k_methods[0]));
    (*env)->DeleteLocalRef(env, natives);
    if (r != JNI_OK) return JNI_ERR;
    return JNI_VERSION_1_6;
}
