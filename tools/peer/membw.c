/* Memory read bandwidth with T threads: the floor of a recurrence step that
 * streams its core block's weights (tools/bench_peer.sh).
 *
 *   membw [MiB=2048] [THREADS=2] [PASSES=5]
 *
 * Prints the best pass's read rate in GB/s (1e9 bytes per second). */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

struct slice {
    const uint64_t *data;
    size_t n;
    uint64_t sum;
};

static double seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void *read_slice(void *arg) {
    struct slice *s = arg;
    uint64_t a = 0, b = 0, c = 0, d = 0;
    for (size_t i = 0; i + 4 <= s->n; i += 4) {
        a ^= s->data[i];
        b += s->data[i + 1];
        c ^= s->data[i + 2];
        d += s->data[i + 3];
    }
    s->sum = a + b + c + d;
    return NULL;
}

int main(int argc, char **argv) {
    size_t mib = argc > 1 ? (size_t)atol(argv[1]) : 2048;
    int threads = argc > 2 ? atoi(argv[2]) : 2;
    int passes = argc > 3 ? atoi(argv[3]) : 5;
    if (mib == 0 || threads < 1 || threads > 256 || passes < 1) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    size_t n = mib * 1024 * 1024 / sizeof(uint64_t);
    uint64_t *data = malloc(n * sizeof *data);
    if (data == NULL) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < n; i++) {
        data[i] = i * 0x9E3779B97F4A7C15ull;
    }
    pthread_t tid[256];
    struct slice sl[256];
    double best = 1e30;
    uint64_t check = 0;
    for (int p = 0; p < passes; p++) {
        size_t per = n / (size_t)threads;
        double t0 = seconds();
        for (int t = 0; t < threads; t++) {
            sl[t] = (struct slice){data + (size_t)t * per, per, 0};
            pthread_create(&tid[t], NULL, read_slice, &sl[t]);
        }
        for (int t = 0; t < threads; t++) {
            pthread_join(tid[t], NULL);
            check += sl[t].sum;
        }
        double dt = seconds() - t0;
        if (dt < best) {
            best = dt;
        }
    }
    printf("%.3f\n", (double)(n * sizeof *data) / best / 1e9);
    fprintf(stderr, "(checksum %llu)\n", (unsigned long long)check);
    free(data);
    return 0;
}
