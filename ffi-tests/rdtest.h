/*
 * rdtest.h: a minimal C11 test harness for the recurrent-depth C API tests.
 *
 * Each test is a function `static void test_x(void)`; RUN(test_x) runs it and
 * records a pass or a failure; FINISH() prints "N passed, M failed" and gives
 * the process exit status.
 */
#ifndef RDTEST_H
#define RDTEST_H

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "recurrent_depth.h"

static int rdt_passed, rdt_failed, rdt_current_failed;
static const char *rdt_current;

/* Wall-clock seconds (C11 timespec_get), for the time each test prints. */
static inline double rdt_seconds(void) {
    struct timespec ts;
    if (timespec_get(&ts, TIME_UTC) != TIME_UTC) return 0.0;
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (!(cond)) {                                                                \
            rdt_current_failed = 1;                                                   \
            fprintf(stderr, "    %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                             \
    } while (0)

/* Checks that `call` returns `expected`; on a mismatch prints both codes and
 * rd_last_error(). A failing call must also leave a non-empty message. */
#define CHECK_STATUS(call, expected)                                                  \
    do {                                                                              \
        rd_status rdt_s_ = (call);                                                    \
        rd_status rdt_e_ = (expected);                                                \
        if (rdt_s_ != rdt_e_) {                                                       \
            rdt_current_failed = 1;                                                   \
            fprintf(stderr, "    %s:%d: %s\n      returned %s, expected %s\n      last error: %s\n", \
                    __FILE__, __LINE__, #call, rd_status_string(rdt_s_),              \
                    rd_status_string(rdt_e_), rd_last_error());                       \
        } else if (rdt_s_ != RD_OK && rd_last_error()[0] == '\0') {                   \
            rdt_current_failed = 1;                                                   \
            fprintf(stderr, "    %s:%d: %s failed without a message\n", __FILE__,     \
                    __LINE__, #call);                                                 \
        }                                                                             \
    } while (0)

/* Like CHECK_STATUS(call, RD_OK) but returns from the test on failure. */
#define REQUIRE_OK(call)                                                              \
    do {                                                                              \
        rd_status rdt_s_ = (call);                                                    \
        if (rdt_s_ != RD_OK) {                                                        \
            rdt_current_failed = 1;                                                   \
            fprintf(stderr, "    %s:%d: %s\n      returned %s: %s\n", __FILE__,       \
                    __LINE__, #call, rd_status_string(rdt_s_), rd_last_error());      \
            return;                                                                   \
        }                                                                             \
    } while (0)

#define RUN(fn)                                                                       \
    do {                                                                              \
        rdt_current = #fn;                                                            \
        rdt_current_failed = 0;                                                       \
        double rdt_t0_ = rdt_seconds();                                               \
        fn();                                                                         \
        double rdt_dt_ = rdt_seconds() - rdt_t0_;                                     \
        if (rdt_current_failed) {                                                     \
            rdt_failed++;                                                             \
            printf("FAIL %s (%.1f s)\n", #fn, rdt_dt_);                               \
        } else {                                                                      \
            rdt_passed++;                                                             \
            printf("ok   %s (%.1f s)\n", #fn, rdt_dt_);                               \
        }                                                                             \
        fflush(stdout);                                                               \
    } while (0)

#define FINISH()                                                                      \
    (printf("%d passed, %d failed\n", rdt_passed, rdt_failed), rdt_failed ? 1 : 0)

/* Writes n bytes to path; 1 on success. */
static inline int rdt_write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    size_t w = n ? fwrite(data, 1, n, f) : 0;
    return fclose(f) == 0 && w == n;
}

/* Reads a whole file into a malloc'd buffer (the caller frees it); NULL on
 * failure. */
static inline unsigned char *rdt_read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = len >= 0 ? malloc((size_t)len + 1) : NULL;
    if (buf && fread(buf, 1, (size_t)len, f) != (size_t)len) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *n = len >= 0 ? (size_t)len : 0;
    return buf;
}

/* Formats a path into `buf` (size n). */
static inline const char *rdt_path(char *buf, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, n, fmt, ap);
    va_end(ap);
    return buf;
}

#endif /* RDTEST_H */
