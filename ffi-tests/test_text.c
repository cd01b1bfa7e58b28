/*
 * C11 tests of the text side of the recurrent-depth C API: the model's
 * tokenizer (rd_tokenize, rd_detokenize), prompts as text (rd_generate_text),
 * token text streamed to the callback, default stop tokens, and the chat
 * template (rd_chat_apply_template). Built against the static and the shared
 * library, and run under ASan+UBSan and valgrind (see Makefile).
 *
 * Usage: test_text FIXTURE_DIR
 * FIXTURE_DIR holds model.gguf (no tokenizer) and tok-model.gguf, made by
 * `rd make-test-model --n-vocab 276 --tokenizer data/tokenizer.json
 * --chat-template data/chat_template.jinja`. The tokenizer (made by
 * data/make_tokenizer.py) has 273 ids: the 256 bytes in byte order, 11
 * merges, then <|begin_text|> (267, the BOS, put first by its
 * post-processor), <|end_text|> (268), <|begin_header|>, <|end_header|>,
 * <|end_turn|> (271) and <|pad|> (272); ids 273..275 of the model have no
 * text. Characters such as the euro sign always span two tokens.
 */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdint.h>

#include "rdtest.h"

#define TOK_VOCAB 276
#define BOS 267
#define EOS 268
#define EOT 271
#define N_BYTE_AND_MERGE_IDS 267 /* ids below this are ordinary text */
#define MAX_EVENTS 256
#define MAX_TEXT 8192

static const char *g_dir;
static char g_plain_path[4096], g_tok_path[4096];

/* --------------------------------------------------------------- helpers */

static rd_model *load(const char *path) {
    rd_model_params mp = rd_model_default_params();
    mp.backend = RD_BACKEND_CPU;
    mp.n_threads = 1;
    rd_model *m = NULL;
    rd_status s = rd_model_load(path, &mp, &m);
    if (s != RD_OK) {
        fprintf(stderr, "    load %s: %s: %s\n", path, rd_status_string(s), rd_last_error());
        return NULL;
    }
    return m;
}

static rd_session *session_of(const rd_model *m, uint32_t n_ctx) {
    rd_session_params sp = rd_session_default_params();
    sp.n_ctx = n_ctx;
    rd_session *s = NULL;
    rd_status st = rd_session_new(m, &sp, &s);
    if (st != RD_OK) {
        fprintf(stderr, "    session: %s: %s\n", rd_status_string(st), rd_last_error());
        return NULL;
    }
    return s;
}

/* Whether bytes[0..n] is well-formed UTF-8 (RFC 3629: no overlongs, no
 * surrogates, nothing above U+10FFFF). */
static int utf8_valid(const unsigned char *b, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = b[i];
        size_t len;
        unsigned lo = 0x80, hi = 0xBF;
        if (c < 0x80) len = 1;
        else if (c >= 0xC2 && c <= 0xDF) len = 2;
        else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F;
        } else return 0;
        if (i + len > n) return 0;
        for (size_t k = 1; k < len; k++) {
            unsigned d = b[i + k];
            if (k == 1 ? (d < lo || d > hi) : (d < 0x80 || d > 0xBF)) return 0;
        }
        i += len;
    }
    return 1;
}

/* rd_detokenize into a malloc'd NUL-terminated string (NULL on failure). */
static char *detok(const rd_model *m, const rd_token *t, size_t n, rd_detokenize_flags flags,
                   size_t *len) {
    size_t need = 0;
    rd_status s = rd_detokenize(m, t, n, flags, NULL, 0, &need);
    if (s != RD_OK && s != RD_ERR_BUFFER_TOO_SMALL) return NULL;
    char *buf = malloc(need + 1);
    if (!buf) return NULL;
    if (rd_detokenize(m, t, n, flags, buf, need + 1, len) != RD_OK || *len != need) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* What the token callback saw. */
typedef struct {
    rd_token tokens[MAX_EVENTS];
    size_t text_len[MAX_EVENTS];
    size_t text_at[MAX_EVENTS]; /* offset of each event's text in `text` */
    size_t n;
    char text[MAX_TEXT];
    size_t len;
    int bad;            /* an event whose text broke the contract */
    int saw_null_text;  /* an event with text == NULL */
    long stop_at;
} stream_t;

static void stream_init(stream_t *c) {
    memset(c, 0, sizeof *c);
    c->stop_at = -1;
}

static bool stream_cb(const rd_token_event *ev, void *user_data) {
    stream_t *c = user_data;
    if (ev->index != c->n) c->bad = 1;
    if (ev->text == NULL) {
        c->saw_null_text = 1;
        if (ev->text_len != 0) c->bad = 1;
    } else {
        /* Whole UTF-8 characters only, followed by a NUL. */
        if (!utf8_valid((const unsigned char *)ev->text, ev->text_len)) c->bad = 1;
        if (ev->text[ev->text_len] != '\0') c->bad = 1;
    }
    if (c->n < MAX_EVENTS) {
        c->tokens[c->n] = ev->token;
        c->text_len[c->n] = ev->text_len;
        c->text_at[c->n] = c->len;
    }
    if (ev->text && c->len + ev->text_len < MAX_TEXT) {
        memcpy(c->text + c->len, ev->text, ev->text_len);
        c->len += ev->text_len;
        c->text[c->len] = '\0';
    }
    return (long)c->n++ != c->stop_at;
}

/* Sampling close to uniform over the vocabulary, so that random byte tokens
 * (and split multi-byte characters) come up. */
static rd_sampling_params wild_sampling(uint64_t seed) {
    rd_sampling_params sp = rd_sampling_default_params();
    sp.temperature = 20.0f;
    sp.top_k = 0;
    sp.top_p = 1.0f;
    sp.min_p = 0.0f;
    sp.seed = seed;
    return sp;
}

static int starts_with_multibyte(const char *s, size_t n) {
    const unsigned char *b = (const unsigned char *)s;
    if (n < 2 || b[0] < 0xC2) return 0;
    /* U+FFFD (EF BF BD) marks bytes that never formed a character. */
    return !(n >= 3 && b[0] == 0xEF && b[1] == 0xBF && b[2] == 0xBD);
}

/* ------------------------------------------------------------------ tests */

static void test_model_info(void) {
    rd_model *m = load(g_tok_path);
    rd_model *p = load(g_plain_path);
    CHECK(m && p);
    if (!m || !p) {
        rd_model_free(m);
        rd_model_free(p);
        return;
    }
    rd_model_info info = {.struct_size = sizeof info};
    REQUIRE_OK(rd_model_get_info(m, &info));
    CHECK(info.n_vocab == TOK_VOCAB);
    CHECK(info.has_tokenizer && info.has_chat_template && info.add_bos);
    CHECK(info.bos_token == BOS && info.eos_token == EOS && info.eot_token == EOT);
    rd_model_info pi = {.struct_size = sizeof pi};
    REQUIRE_OK(rd_model_get_info(p, &pi));
    CHECK(!pi.has_tokenizer && !pi.has_chat_template && !pi.add_bos);
    CHECK(pi.bos_token == RD_TOKEN_NONE && pi.eos_token == RD_TOKEN_NONE &&
          pi.eot_token == RD_TOKEN_NONE);
    CHECK(strstr(rd_status_string(RD_ERR_NO_TOKENIZER), "RD_ERR_NO_TOKENIZER") != NULL);
    CHECK(strstr(rd_status_string(RD_ERR_NO_TEMPLATE), "RD_ERR_NO_TEMPLATE") != NULL);
    CHECK(strstr(rd_status_string(RD_ERR_TOKENIZER), "RD_ERR_TOKENIZER") != NULL);
    CHECK(strstr(rd_status_string(RD_ERR_CHAT_TEMPLATE), "RD_ERR_CHAT_TEMPLATE") != NULL);
    rd_model_free(m);
    rd_model_free(p);
}

static void test_tokenize(void) {
    rd_model *m = load(g_tok_path);
    if (!m) {
        CHECK(m != NULL);
        return;
    }
    const char *hi = "Hi there";
    const rd_token expect[] = {BOS, 262, 258, 114, 101}; /* BOS "Hi" " the" "r" "e" */
    rd_token out[64];
    size_t n = 0;
    const rd_tokenize_flags all = RD_TOKENIZE_ADD_SPECIAL | RD_TOKENIZE_PARSE_SPECIAL;

    /* Size negotiation: NULL/0 asks for the count, a short buffer is left
     * alone and gets the count too, an exact buffer works. */
    CHECK_STATUS(rd_tokenize(m, hi, strlen(hi), all, NULL, 0, &n), RD_ERR_BUFFER_TOO_SMALL);
    CHECK(n == 5);
    for (size_t i = 0; i < 64; i++) out[i] = 0xAAAAu;
    n = 0;
    CHECK_STATUS(rd_tokenize(m, hi, strlen(hi), all, out, 4, &n), RD_ERR_BUFFER_TOO_SMALL);
    CHECK(n == 5 && out[0] == 0xAAAAu && out[3] == 0xAAAAu);
    n = 0;
    REQUIRE_OK(rd_tokenize(m, hi, strlen(hi), all, out, 5, &n));
    CHECK(n == 5 && memcmp(out, expect, sizeof expect) == 0);
    /* Without ADD_SPECIAL: no BOS. */
    REQUIRE_OK(rd_tokenize(m, hi, strlen(hi), 0, out, 64, &n));
    CHECK(n == 4 && memcmp(out, expect + 1, 4 * sizeof(rd_token)) == 0);

    /* Special-token text: parsed to its id only with PARSE_SPECIAL. */
    const char *sp = "<|end_turn|>x";
    REQUIRE_OK(rd_tokenize(m, sp, strlen(sp), RD_TOKENIZE_PARSE_SPECIAL, out, 64, &n));
    CHECK(n == 2 && out[0] == EOT && out[1] == 'x');
    REQUIRE_OK(rd_tokenize(m, sp, strlen(sp), 0, out, 64, &n));
    CHECK(n > 2);
    for (size_t i = 0; i < n; i++) CHECK(out[i] < N_BYTE_AND_MERGE_IDS);

    /* Empty text: no tokens (a NULL pointer is fine), or the BOS alone. */
    n = 99;
    REQUIRE_OK(rd_tokenize(m, NULL, 0, 0, NULL, 0, &n));
    CHECK(n == 0);
    REQUIRE_OK(rd_tokenize(m, "", 0, RD_TOKENIZE_ADD_SPECIAL, out, 64, &n));
    CHECK(n == 1 && out[0] == BOS);
    /* A NUL byte is text like any other. */
    REQUIRE_OK(rd_tokenize(m, "a\0b", 3, 0, out, 64, &n));
    CHECK(n == 3 && out[0] == 'a' && out[1] == 0 && out[2] == 'b');

    /* Multi-byte characters: the euro sign and the emoji span two tokens. */
    const char *mb = "\xe2\x82\xac\xf0\x9f\x98\x80\xc3\xa9"; /* euro, U+1F600, e-acute */
    REQUIRE_OK(rd_tokenize(m, mb, strlen(mb), 0, out, 64, &n));
    const rd_token mb_ids[] = {265, 0xAC, 266, 0x98, 0x80, 263};
    CHECK(n == 6 && memcmp(out, mb_ids, sizeof mb_ids) == 0);

    /* Invalid UTF-8 (a lone continuation byte, a truncated character, an
     * overlong encoding, a surrogate): an invalid argument, outputs alone. */
    const char *bad[] = {"ab\x80", "\xe2\x82", "\xc0\xaf", "\xed\xa0\x80"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        n = 77;
        out[0] = 0xAAAAu;
        CHECK_STATUS(rd_tokenize(m, bad[i], strlen(bad[i]), all, out, 64, &n),
                     RD_ERR_INVALID_ARGUMENT);
        CHECK(strstr(rd_last_error(), "UTF-8") != NULL);
        CHECK(n == 77 && out[0] == 0xAAAAu);
    }

    /* Bad arguments. */
    CHECK_STATUS(rd_tokenize(NULL, hi, 2, 0, out, 64, &n), RD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(rd_tokenize(m, NULL, 2, 0, out, 64, &n), RD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(rd_tokenize(m, hi, 2, 0, out, 64, NULL), RD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(rd_tokenize(m, hi, 2, 0, NULL, 64, &n), RD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(rd_tokenize(m, hi, 2, 4, out, 64, &n), RD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(rd_tokenize(m, hi, SIZE_MAX, 0, out, 64, &n), RD_ERR_INVALID_ARGUMENT);

    /* A model without a tokenizer says so. */
    rd_model *p = load(g_plain_path);
    if (p) {
        CHECK_STATUS(rd_tokenize(p, hi, strlen(hi), 0, out, 64, &n), RD_ERR_NO_TOKENIZER);
        /* Argument errors come first. */
        CHECK_STATUS(rd_tokenize(p, "\xff", 1, 0, out, 64, &n), RD_ERR_INVALID_ARGUMENT);
        rd_model_free(p);
    }
    rd_model_free(m);
}

static void test_detokenize(void) {
    rd_model *m = load(g_tok_path);
    if (!m) {
        CHECK(m != NULL);
        return;
    }
    /* Round trip of text with multi-byte characters split across tokens. */
    const char *text = "h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80 <|end_turn|> \xc3\xb1";
    rd_token ids[64];
    size_t n = 0, len = 0;
    REQUIRE_OK(rd_tokenize(m, text, strlen(text), RD_TOKENIZE_ADD_SPECIAL |
                           RD_TOKENIZE_PARSE_SPECIAL, ids, 64, &n));
    CHECK(ids[0] == BOS);
    char buf[128];
    const size_t tlen = strlen(text), full = strlen("<|begin_text|>") + tlen;

    /* Size negotiation. */
    CHECK_STATUS(rd_detokenize(m, ids, n, 0, NULL, 0, &len), RD_ERR_BUFFER_TOO_SMALL);
    CHECK(len == full);
    memset(buf, 'x', sizeof buf);
    len = 0;
    CHECK_STATUS(rd_detokenize(m, ids, n, 0, buf, full - 1, &len), RD_ERR_BUFFER_TOO_SMALL);
    CHECK(len == full && buf[0] == 'x');
    /* Exactly the length: the text and no NUL. */
    len = 0;
    REQUIRE_OK(rd_detokenize(m, ids, n, 0, buf, full, &len));
    CHECK(len == full && buf[full] == 'x');
    CHECK(memcmp(buf, "<|begin_text|>", 14) == 0 && memcmp(buf + 14, text, tlen) == 0);
    /* One more byte: a NUL follows. */
    REQUIRE_OK(rd_detokenize(m, ids, n, 0, buf, sizeof buf, &len));
    CHECK(len == full && buf[full] == '\0');

    /* SKIP_SPECIAL leaves out the control tokens (BOS and <|end_turn|>). */
    REQUIRE_OK(rd_detokenize(m, ids, n, RD_DETOKENIZE_SKIP_SPECIAL, buf, sizeof buf, &len));
    const char *plain = "h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80  \xc3\xb1";
    CHECK(len == strlen(plain) && strcmp(buf, plain) == 0);

    /* A character cut short becomes U+FFFD; completed, it is itself. */
    const rd_token euro[] = {265, 0xAC};
    REQUIRE_OK(rd_detokenize(m, euro, 1, 0, buf, sizeof buf, &len));
    CHECK(len == 3 && strcmp(buf, "\xef\xbf\xbd") == 0);
    REQUIRE_OK(rd_detokenize(m, euro, 2, 0, buf, sizeof buf, &len));
    CHECK(len == 3 && strcmp(buf, "\xe2\x82\xac") == 0);
    const rd_token stray[] = {0xAC, 'a'}; /* a lone continuation byte */
    REQUIRE_OK(rd_detokenize(m, stray, 2, 0, buf, sizeof buf, &len));
    CHECK(len == 4 && strcmp(buf, "\xef\xbf\xbd" "a") == 0);
    /* The byte 0 is a NUL character inside the text. */
    const rd_token nul[] = {'a', 0, 'b'};
    REQUIRE_OK(rd_detokenize(m, nul, 3, 0, buf, sizeof buf, &len));
    CHECK(len == 3 && memcmp(buf, "a\0b", 4) == 0);
    /* Ids of the model's vocabulary without text (padding): nothing. */
    const rd_token pad[] = {273, 'z', 275};
    REQUIRE_OK(rd_detokenize(m, pad, 3, 0, buf, sizeof buf, &len));
    CHECK(len == 1 && strcmp(buf, "z") == 0);
    /* No tokens: empty text. */
    len = 9;
    REQUIRE_OK(rd_detokenize(m, NULL, 0, 0, NULL, 0, &len));
    CHECK(len == 0);

    /* Bad arguments. */
    const rd_token out_of_range[] = {'a', TOK_VOCAB};
    len = 5;
    CHECK_STATUS(rd_detokenize(m, out_of_range, 2, 0, buf, sizeof buf, &len),
                 RD_ERR_INVALID_ARGUMENT);
    CHECK(len == 5);
    CHECK_STATUS(rd_detokenize(NULL, ids, n, 0, buf, sizeof buf, &len), RD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(rd_detokenize(m, NULL, n, 0, buf, sizeof buf, &len), RD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(rd_detokenize(m, ids, n, 0, NULL, sizeof buf, &len), RD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(rd_detokenize(m, ids, n, 0, buf, sizeof buf, NULL), RD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(rd_detokenize(m, ids, n, 2, buf, sizeof buf, &len), RD_ERR_INVALID_ARGUMENT);

    rd_model *p = load(g_plain_path);
    if (p) {
        const rd_token ab[] = {'a', 'b'};
        CHECK_STATUS(rd_detokenize(p, ab, 2, 0, buf, sizeof buf, &len), RD_ERR_NO_TOKENIZER);
        /* Argument errors come first. */
        CHECK_STATUS(rd_detokenize(p, ids, 2, 0, buf, sizeof buf, &len), RD_ERR_INVALID_ARGUMENT);
        rd_model_free(p);
    }
    rd_model_free(m);
}

/* The concatenated text of the events equals rd_detokenize of the tokens,
 * for both flag settings, over several seeds; characters split across tokens
 * are held back and come out whole. */
static void test_streamed_text(void) {
    rd_model *m = load(g_tok_path);
    if (!m) {
        CHECK(m != NULL);
        return;
    }
    rd_session *s = session_of(m, 128);
    if (!s) {
        CHECK(s != NULL);
        rd_model_free(m);
        return;
    }
    rd_compute_limits l = rd_compute_limits_default();
    l.min_iterations = l.max_iterations = 2;
    rd_generate_params gp = rd_generate_default_params();
    gp.limits = &l;
    gp.max_tokens = 100;
    gp.default_stop_tokens = false;
    const char *prompt = "Hi there";
    stream_t *c = malloc(sizeof *c);
    if (!c) {
        CHECK(c != NULL);
        return;
    }
    int rounds = getenv("RD_TEST_SLOW") ? 6 : 12;
    long held_seed = -1, held_at = -1;
    for (int seed = 1; seed <= rounds; seed++) {
        for (int skip = 0; skip < 2; skip++) {
            rd_sampling_params smp = wild_sampling((uint64_t)seed);
            gp.sampling = &smp;
            gp.detokenize_flags = skip ? RD_DETOKENIZE_SKIP_SPECIAL : 0;
            stream_init(c);
            rd_generate_stats st = {.struct_size = sizeof st};
            REQUIRE_OK(rd_session_reset(s));
            REQUIRE_OK(rd_generate_text(s, prompt, strlen(prompt), &gp, stream_cb, c, &st));
            CHECK(c->n == 100 && st.n_tokens == 100 && !c->bad && !c->saw_null_text);
            CHECK(st.n_prompt_tokens == 5); /* BOS + 4 */
            size_t len = 0;
            char *ref = detok(m, c->tokens, c->n, gp.detokenize_flags, &len);
            CHECK(ref != NULL);
            if (ref) {
                if (len != c->len || memcmp(ref, c->text, len) != 0) {
                    fprintf(stderr, "    seed %d skip %d: streamed %zu bytes, detokenized %zu\n",
                            seed, skip, c->len, len);
                    CHECK(0);
                }
                free(ref);
            }
            /* A byte token held back, completed by the next token with text
             * into a real multi-byte character. */
            for (size_t i = 0; i + 1 < c->n && held_at < 0; i++) {
                if (c->tokens[i] >= N_BYTE_AND_MERGE_IDS || c->text_len[i] != 0) continue;
                size_t j = i + 1;
                while (j < c->n && c->text_len[j] == 0) j++;
                if (j < c->n && starts_with_multibyte(c->text + c->text_at[j], c->text_len[j])) {
                    held_seed = seed;
                    held_at = (long)i;
                }
            }
        }
    }
    printf("     split character: seed %ld, held back at token %ld\n", held_seed, held_at);
    CHECK(held_at >= 0);

    /* Ending the generation on a held-back token flushes it as U+FFFD, so the
     * text still equals rd_detokenize's. */
    if (held_at >= 0) {
        rd_sampling_params smp = wild_sampling((uint64_t)held_seed);
        gp.sampling = &smp;
        gp.detokenize_flags = 0;
        gp.max_tokens = (uint32_t)held_at + 1;
        stream_init(c);
        REQUIRE_OK(rd_session_reset(s));
        REQUIRE_OK(rd_generate_text(s, prompt, strlen(prompt), &gp, stream_cb, c, NULL));
        CHECK(c->n == (size_t)held_at + 1 && !c->bad);
        size_t last = c->n - 1;
        CHECK(c->text_len[last] >= 3 &&
              memcmp(c->text + c->text_at[last] + c->text_len[last] - 3, "\xef\xbf\xbd", 3) == 0);
        size_t len = 0;
        char *ref = detok(m, c->tokens, c->n, 0, &len);
        CHECK(ref && len == c->len && memcmp(ref, c->text, len) == 0);
        free(ref);
    }

    /* A model without a tokenizer streams no text (NULL). */
    rd_model *p = load(g_plain_path);
    rd_session *ps = p ? session_of(p, 64) : NULL;
    rd_model_free(p);
    if (ps) {
        const rd_token toks[] = {1, 2, 3};
        gp = rd_generate_default_params();
        gp.limits = &l;
        gp.max_tokens = 4;
        stream_init(c);
        REQUIRE_OK(rd_generate(ps, toks, 3, &gp, stream_cb, c, NULL));
        CHECK(c->n == 4 && c->saw_null_text && !c->bad && c->len == 0);
        rd_session_free(ps);
    }
    free(c);
    rd_session_free(s);
    rd_model_free(m);
}

static void test_generate_text_prompt(void) {
    rd_model *m = load(g_tok_path);
    if (!m) {
        CHECK(m != NULL);
        return;
    }
    rd_session *s = session_of(m, 32);
    if (!s) {
        CHECK(s != NULL);
        rd_model_free(m);
        return;
    }
    stream_t *a = malloc(sizeof *a), *b = malloc(sizeof *b);
    if (!a || !b) {
        CHECK(a && b);
        free(a);
        free(b);
        return;
    }
    rd_compute_limits l = rd_compute_limits_default();
    l.min_iterations = l.max_iterations = 4;
    rd_generate_params gp = rd_generate_default_params(); /* greedy */
    gp.limits = &l;
    gp.max_tokens = 6;
    gp.default_stop_tokens = false;

    /* The same as rd_generate on rd_tokenize's ids (BOS, special tokens). */
    const char *prompt = "<|begin_header|>user<|end_header|>Hi";
    rd_token ids[64];
    size_t n = 0;
    REQUIRE_OK(rd_tokenize(m, prompt, strlen(prompt),
                           RD_TOKENIZE_ADD_SPECIAL | RD_TOKENIZE_PARSE_SPECIAL, ids, 64, &n));
    const rd_token expect[] = {BOS, 269, 'u', 's', 260, 270, 262}; /* "er" and "Hi" are merges */
    CHECK(n == 7 && memcmp(ids, expect, sizeof expect) == 0);
    stream_init(a);
    stream_init(b);
    rd_generate_stats st = {.struct_size = sizeof st};
    REQUIRE_OK(rd_generate(s, ids, n, &gp, stream_cb, a, NULL));
    REQUIRE_OK(rd_session_reset(s));
    REQUIRE_OK(rd_generate_text(s, prompt, strlen(prompt), &gp, stream_cb, b, &st));
    CHECK(st.n_prompt_tokens == n);
    CHECK(a->n == 6 && b->n == 6 && memcmp(a->tokens, b->tokens, 6 * sizeof(rd_token)) == 0);
    CHECK(a->len == b->len && strcmp(a->text, b->text) == 0);

    /* A BOS starts the conversation only: the next turn gets none. */
    const char *more = " more";
    rd_token more_ids[16];
    size_t n_more = 0;
    REQUIRE_OK(rd_tokenize(m, more, strlen(more), RD_TOKENIZE_PARSE_SPECIAL, more_ids, 16,
                           &n_more));
    stream_init(b);
    REQUIRE_OK(rd_generate_text(s, more, strlen(more), &gp, stream_cb, b, &st));
    CHECK(st.n_prompt_tokens == n_more);
    /* Text that gives no tokens continues from the last position. */
    gp.max_tokens = 1;
    stream_init(b);
    REQUIRE_OK(rd_generate_text(s, NULL, 0, &gp, stream_cb, b, &st));
    CHECK(st.n_prompt_tokens == 0 && b->n == 1);
    /* Without flags the special-token text is plain text (more tokens). */
    REQUIRE_OK(rd_session_reset(s));
    gp.tokenize_flags = 0;
    REQUIRE_OK(rd_generate_text(s, prompt, strlen(prompt), &gp, NULL, NULL, &st));
    CHECK(st.n_prompt_tokens > n);
    gp.tokenize_flags = RD_TOKENIZE_ADD_SPECIAL | RD_TOKENIZE_PARSE_SPECIAL;

    /* Errors leave the session usable. */
    REQUIRE_OK(rd_session_reset(s));
    stream_init(b);
    const char *bad_utf8 = "Hi \xff there";
    CHECK_STATUS(rd_generate_text(s, bad_utf8, strlen(bad_utf8), &gp, stream_cb, b, &st),
                 RD_ERR_INVALID_ARGUMENT);
    CHECK(strstr(rd_last_error(), "UTF-8") != NULL);
    CHECK_STATUS(rd_generate_text(s, "\xe2\x82", 2, &gp, stream_cb, b, &st),
                 RD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(rd_generate_text(s, NULL, 3, &gp, stream_cb, b, &st), RD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(rd_generate_text(NULL, "a", 1, &gp, stream_cb, b, &st), RD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(rd_generate_text(s, "a", 1, NULL, stream_cb, b, &st), RD_ERR_INVALID_ARGUMENT);
    /* Nothing to generate from: no tokens (not even a BOS) and an empty cache. */
    rd_generate_params nob = gp;
    nob.tokenize_flags = 0;
    CHECK_STATUS(rd_generate_text(s, "", 0, &nob, stream_cb, b, &st), RD_ERR_INVALID_ARGUMENT);
    nob.tokenize_flags = 8;
    CHECK_STATUS(rd_generate_text(s, "a", 1, &nob, stream_cb, b, &st), RD_ERR_INVALID_ARGUMENT);
    nob = gp;
    nob.detokenize_flags = 2;
    CHECK_STATUS(rd_generate_text(s, "a", 1, &nob, stream_cb, b, &st), RD_ERR_INVALID_ARGUMENT);
    /* A prompt longer than the context (32). */
    char longp[200];
    memset(longp, 'q', sizeof longp - 1);
    longp[sizeof longp - 1] = '\0';
    CHECK_STATUS(rd_generate_text(s, longp, strlen(longp), &gp, stream_cb, b, &st),
                 RD_ERR_CONTEXT_FULL);
    CHECK(b->n == 0);
    rd_session_info si = {.struct_size = sizeof si};
    REQUIRE_OK(rd_session_get_info(s, &si));
    CHECK(si.n_past == 0);
    gp.max_tokens = 6;
    stream_init(b);
    REQUIRE_OK(rd_generate_text(s, prompt, strlen(prompt), &gp, stream_cb, b, NULL));
    CHECK(b->n == 6 && memcmp(a->tokens, b->tokens, 6 * sizeof(rd_token)) == 0);

    /* A model without a tokenizer. */
    rd_model *p = load(g_plain_path);
    rd_session *ps = p ? session_of(p, 64) : NULL;
    rd_model_free(p);
    if (ps) {
        CHECK_STATUS(rd_generate_text(ps, "Hi", 2, &gp, stream_cb, b, NULL), RD_ERR_NO_TOKENIZER);
        CHECK_STATUS(rd_generate_text(ps, "\xff", 1, &gp, stream_cb, b, NULL),
                     RD_ERR_INVALID_ARGUMENT);
        rd_session_free(ps);
    }
    free(a);
    free(b);
    rd_session_free(s);
    rd_model_free(m);
}

/* Without stop tokens, the tokenizer's EOS and end-of-turn stop generation. */
static void test_default_stop_tokens(void) {
    rd_model *m = load(g_tok_path);
    if (!m) {
        CHECK(m != NULL);
        return;
    }
    rd_session *s = session_of(m, 128);
    stream_t *c = malloc(sizeof *c);
    if (!s || !c) {
        CHECK(s && c);
        free(c);
        rd_model_free(m);
        return;
    }
    rd_compute_limits l = rd_compute_limits_default();
    l.min_iterations = l.max_iterations = 2;
    rd_generate_params gp = rd_generate_default_params();
    gp.limits = &l;
    gp.max_tokens = 100;
    gp.default_stop_tokens = false;
    const char *prompt = "Hi";
    /* Find a seed whose generation contains EOS or EOT. */
    long seed = -1, first = -1;
    for (int sd = 1; sd <= 40 && seed < 0; sd++) {
        rd_sampling_params smp = wild_sampling((uint64_t)sd);
        gp.sampling = &smp;
        stream_init(c);
        REQUIRE_OK(rd_session_reset(s));
        REQUIRE_OK(rd_generate_text(s, prompt, strlen(prompt), &gp, stream_cb, c, NULL));
        for (size_t i = 0; i < c->n; i++)
            if (c->tokens[i] == EOS || c->tokens[i] == EOT) {
                seed = sd;
                first = (long)i;
                break;
            }
    }
    printf("     seed %ld: first EOS/EOT at token %ld\n", seed, first);
    CHECK(seed >= 0);
    if (seed >= 0) {
        rd_token stop_tok = c->tokens[first];
        rd_sampling_params smp = wild_sampling((uint64_t)seed);
        gp.sampling = &smp;
        gp.default_stop_tokens = true;
        rd_generate_stats st = {.struct_size = sizeof st};
        stream_init(c);
        REQUIRE_OK(rd_session_reset(s));
        REQUIRE_OK(rd_generate_text(s, prompt, strlen(prompt), &gp, stream_cb, c, &st));
        CHECK(st.stop_reason == RD_STOP_STOP_TOKEN && st.n_tokens == (size_t)first + 1);
        CHECK(c->n == (size_t)first + 1 && c->tokens[first] == stop_tok);
        /* The stop token's text is reported (or skipped with SKIP_SPECIAL). */
        const char *name = stop_tok == EOS ? "<|end_text|>" : "<|end_turn|>";
        CHECK(c->len >= strlen(name) && strcmp(c->text + c->len - strlen(name), name) == 0);
        /* Given stop tokens replace the defaults. */
        rd_token other = 'a';
        gp.stop_tokens = &other;
        gp.n_stop_tokens = 1;
        stream_init(c);
        REQUIRE_OK(rd_session_reset(s));
        REQUIRE_OK(rd_generate_text(s, prompt, strlen(prompt), &gp, stream_cb, c, &st));
        CHECK(st.n_tokens > (size_t)first + 1 || st.stop_reason == RD_STOP_STOP_TOKEN);
        for (size_t i = 0; i + 1 < c->n; i++) CHECK(c->tokens[i] != 'a');
    }
    free(c);
    rd_session_free(s);
    rd_model_free(m);
}

static void test_chat_template(void) {
    rd_model *m = load(g_tok_path);
    if (!m) {
        CHECK(m != NULL);
        return;
    }
    const rd_chat_message msgs[] = {{"system", "You are terse."}, {"user", " Hi "}};
    const char *expect = "<|begin_text|><|begin_header|>system<|end_header|>\n\nYou are terse."
                         "<|end_turn|><|begin_header|>user<|end_header|>\n\nHi<|end_turn|>"
                         "<|begin_header|>Huginn<|end_header|>\n\n";
    size_t elen = strlen(expect), len = 0;
    char buf[512];
    CHECK_STATUS(rd_chat_apply_template(m, msgs, 2, true, NULL, 0, &len), RD_ERR_BUFFER_TOO_SMALL);
    CHECK(len == elen);
    memset(buf, 'x', sizeof buf);
    len = 0;
    CHECK_STATUS(rd_chat_apply_template(m, msgs, 2, true, buf, elen - 1, &len),
                 RD_ERR_BUFFER_TOO_SMALL);
    CHECK(len == elen && buf[0] == 'x');
    REQUIRE_OK(rd_chat_apply_template(m, msgs, 2, true, buf, elen, &len));
    CHECK(len == elen && memcmp(buf, expect, elen) == 0 && buf[elen] == 'x');
    REQUIRE_OK(rd_chat_apply_template(m, msgs, 2, true, buf, sizeof buf, &len));
    CHECK(len == elen && strcmp(buf, expect) == 0);
    if (strcmp(buf, expect) != 0) fprintf(stderr, "    rendered: [%s]\n", buf);
    /* Without the generation prompt the text ends the document. */
    REQUIRE_OK(rd_chat_apply_template(m, msgs, 2, false, buf, sizeof buf, &len));
    CHECK(len > 12 && strcmp(buf + len - 12, "<|end_text|>") == 0);
    /* No messages. */
    REQUIRE_OK(rd_chat_apply_template(m, NULL, 0, false, buf, sizeof buf, &len));
    CHECK(strcmp(buf, "<|end_text|>") == 0);
    /* Multi-byte text goes through unchanged. */
    const rd_chat_message u[] = {{"user", "\xe2\x82\xac \xf0\x9f\x98\x80"}};
    REQUIRE_OK(rd_chat_apply_template(m, u, 1, true, buf, sizeof buf, &len));
    CHECK(strstr(buf, "\n\n\xe2\x82\xac \xf0\x9f\x98\x80<|end_turn|>") != NULL);

    /* The template rejects a role it does not know. */
    const rd_chat_message bad_role[] = {{"robot", "beep"}};
    CHECK_STATUS(rd_chat_apply_template(m, bad_role, 1, true, buf, sizeof buf, &len),
                 RD_ERR_CHAT_TEMPLATE);
    CHECK(strstr(rd_last_error(), "unknown role robot") != NULL);
    /* Bad arguments. */
    const rd_chat_message null_role[] = {{NULL, "x"}};
    const rd_chat_message null_content[] = {{"user", NULL}};
    const rd_chat_message bad_utf8[] = {{"user", "caf\xc3"}};
    len = 3;
    CHECK_STATUS(rd_chat_apply_template(m, null_role, 1, true, buf, sizeof buf, &len),
                 RD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(rd_chat_apply_template(m, null_content, 1, true, buf, sizeof buf, &len),
                 RD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(rd_chat_apply_template(m, bad_utf8, 1, true, buf, sizeof buf, &len),
                 RD_ERR_INVALID_ARGUMENT);
    CHECK(strstr(rd_last_error(), "messages[0].content") != NULL);
    CHECK_STATUS(rd_chat_apply_template(NULL, msgs, 2, true, buf, sizeof buf, &len),
                 RD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(rd_chat_apply_template(m, NULL, 2, true, buf, sizeof buf, &len),
                 RD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(rd_chat_apply_template(m, msgs, 2, true, NULL, sizeof buf, &len),
                 RD_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(rd_chat_apply_template(m, msgs, 2, true, buf, sizeof buf, NULL),
                 RD_ERR_INVALID_ARGUMENT);
    CHECK(len == 3);

    /* A model without a template. */
    rd_model *p = load(g_plain_path);
    if (p) {
        CHECK_STATUS(rd_chat_apply_template(p, msgs, 2, true, buf, sizeof buf, &len),
                     RD_ERR_NO_TEMPLATE);
        rd_model_free(p);
    }

    /* Chat end to end: render, generate the reply as text. */
    rd_session *s = session_of(m, 128);
    if (s) {
        REQUIRE_OK(rd_chat_apply_template(m, msgs, 2, true, buf, sizeof buf, &len));
        rd_generate_params gp = rd_generate_default_params();
        gp.max_tokens = 8;
        gp.detokenize_flags = RD_DETOKENIZE_SKIP_SPECIAL;
        stream_t *c = malloc(sizeof *c);
        if (c) {
            stream_init(c);
            rd_generate_stats st = {.struct_size = sizeof st};
            CHECK_STATUS(rd_generate_text(s, buf, len, &gp, stream_cb, c, &st), RD_OK);
            CHECK(st.n_prompt_tokens > 10 && c->n >= 1 && !c->bad);
            free(c);
        }
        rd_session_free(s);
    }
    rd_model_free(m);
}

/* Replaces the first `what` in buf[0..n] by `with` (same length). */
static int patch(unsigned char *buf, size_t n, const char *what, const char *with) {
    size_t k = strlen(what);
    for (size_t i = 0; i + k <= n; i++)
        if (memcmp(buf + i, what, k) == 0) {
            memcpy(buf + i, with, k);
            return 1;
        }
    return 0;
}

/* A tokenizer and a template that are present but broken do not fail the
 * load; the calls that need them say why. */
static void test_broken_tokenizer_and_template(void) {
    size_t n = 0;
    unsigned char *bytes = rdt_read_file(g_tok_path, &n);
    CHECK(bytes != NULL);
    if (!bytes) return;
    CHECK(patch(bytes, n, "\"type\": \"BPE\"", "\"type\": \"XPE\""));
    CHECK(patch(bytes, n, "{% for message in messages %}", "{% fxr message in messages %}"));
    char p[4096];
    rdt_path(p, sizeof p, "%s/broken-text.gguf", g_dir);
    CHECK(rdt_write_file(p, bytes, n));
    free(bytes);
    rd_model *m = load(p);
    if (!m) {
        CHECK(m != NULL);
        return;
    }
    rd_model_info info = {.struct_size = sizeof info};
    REQUIRE_OK(rd_model_get_info(m, &info));
    CHECK(!info.has_tokenizer && !info.has_chat_template && info.eos_token == RD_TOKEN_NONE);
    rd_token ids[8];
    size_t k = 0;
    CHECK_STATUS(rd_tokenize(m, "Hi", 2, 0, ids, 8, &k), RD_ERR_TOKENIZER);
    CHECK(strstr(rd_last_error(), "tokenizer") != NULL);
    char buf[64];
    const rd_token t[] = {'a'};
    CHECK_STATUS(rd_detokenize(m, t, 1, 0, buf, sizeof buf, &k), RD_ERR_TOKENIZER);
    const rd_chat_message msgs[] = {{"user", "Hi"}};
    CHECK_STATUS(rd_chat_apply_template(m, msgs, 1, true, buf, sizeof buf, &k),
                 RD_ERR_CHAT_TEMPLATE);
    /* Token ids still work; the events carry no text. */
    rd_session *s = session_of(m, 64);
    if (s) {
        stream_t *c = malloc(sizeof *c);
        if (c) {
            stream_init(c);
            rd_generate_params gp = rd_generate_default_params();
            gp.max_tokens = 3;
            const rd_token prompt[] = {1, 2, 3};
            CHECK_STATUS(rd_generate(s, prompt, 3, &gp, stream_cb, c, NULL), RD_OK);
            CHECK(c->n == 3 && c->saw_null_text);
            CHECK_STATUS(rd_generate_text(s, "Hi", 2, &gp, stream_cb, c, NULL), RD_ERR_TOKENIZER);
            free(c);
        }
        rd_session_free(s);
    }
    rd_model_free(m);
}

/* The model's text functions may be called from several threads at once. */
typedef struct {
    const rd_model *model;
    int ok;
} text_worker_t;

static void *text_worker(void *arg) {
    text_worker_t *w = arg;
    const char *text = "h\xc3\xa9llo \xe2\x82\xac there <|end_turn|>";
    w->ok = 1;
    for (int i = 0; i < 50 && w->ok; i++) {
        rd_token ids[64];
        size_t n = 0, len = 0;
        char buf[128];
        const rd_chat_message msgs[] = {{"user", text}};
        if (rd_tokenize(w->model, text, strlen(text), RD_TOKENIZE_PARSE_SPECIAL, ids, 64, &n) !=
                RD_OK ||
            rd_detokenize(w->model, ids, n, 0, buf, sizeof buf, &len) != RD_OK ||
            strcmp(buf, text) != 0 ||
            rd_chat_apply_template(w->model, msgs, 1, true, NULL, 0, &len) !=
                RD_ERR_BUFFER_TOO_SMALL)
            w->ok = 0;
    }
    return NULL;
}

static void test_text_from_threads(void) {
    rd_model *m = load(g_tok_path);
    if (!m) {
        CHECK(m != NULL);
        return;
    }
    text_worker_t w[3];
    pthread_t th[3];
    for (int i = 0; i < 3; i++) {
        w[i] = (text_worker_t){.model = m};
        CHECK(pthread_create(&th[i], NULL, text_worker, &w[i]) == 0);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        CHECK(w[i].ok);
    }
    rd_model_free(m);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s FIXTURE_DIR (holding model.gguf and tok-model.gguf)\n",
                argv[0]);
        return 2;
    }
    g_dir = argv[1];
    rdt_path(g_plain_path, sizeof g_plain_path, "%s/model.gguf", g_dir);
    rdt_path(g_tok_path, sizeof g_tok_path, "%s/tok-model.gguf", g_dir);
    printf("recurrent-depth %s C API text tests (%s)\n", rd_version(), argv[0]);
    RUN(test_model_info);
    RUN(test_tokenize);
    RUN(test_detokenize);
    RUN(test_streamed_text);
    RUN(test_generate_text_prompt);
    RUN(test_default_stop_tokens);
    RUN(test_chat_template);
    RUN(test_broken_tokenizer_and_template);
    RUN(test_text_from_threads);
    return FINISH();
}
