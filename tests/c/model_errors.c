/* A model shared by several threads: reading its error detail while other threads' calls fail
 * is safe (run under AddressSanitizer: a freed or replaced message would be reported).
 *   model_errors MODEL.gguf */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "edgemoe.h"

#define THREADS 4
#define ROUNDS 20000

static const emoe_model *shared;
static volatile int bad = 0;

static void *hammer(void *arg) {
    int base = (int)(size_t)arg;
    char piece[16];
    size_t n = 0;
    for (int i = 0; i < ROUNDS; i++) {
        /* Messages of varying lengths, each call replacing the model's last error. */
        int token = -(base * ROUNDS + i + 1);
        if (emoe_token_to_piece(shared, token, piece, sizeof piece, &n) != EMOE_STATUS_INVALID_ARGUMENT) bad = 1;
        const char *msg = emoe_model_last_error(shared);
        char copy[128];
        size_t len = strlen(msg);
        if (len >= sizeof copy) len = sizeof copy - 1;
        memcpy(copy, msg, len);
        copy[len] = 0;
        /* A thread's message, or past many distinct messages the text pointing to the copy. */
        if (len > 0 && strstr(copy, "negative") == NULL && strstr(copy, "emoe_model_last_error_copy") == NULL)
            bad = 1;
        char buf[128];
        size_t full = 0;
        if (emoe_model_last_error_copy(shared, buf, sizeof buf, &full) != EMOE_STATUS_OK) bad = 1;
        if (strlen(buf) != full || (full > 0 && strstr(buf, "negative") == NULL)) bad = 1;
        /* A small buffer gets a truncated, NUL-terminated message and the full length. */
        char tiny[4];
        if (emoe_model_last_error_copy(shared, tiny, sizeof tiny, &full) != EMOE_STATUS_OK) bad = 1;
        if (strlen(tiny) > 3) bad = 1;
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.gguf\n", argv[0]);
        return 2;
    }
    char error[256];
    emoe_model *model = NULL;
    if (emoe_model_load(argv[1], NULL, &model, error, sizeof error) != EMOE_STATUS_OK) {
        fprintf(stderr, "load failed: %s\n", error);
        return 1;
    }
    shared = model;
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, hammer, (void *)(size_t)i);
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    /* NULL handle or buffer: a status, never a crash. */
    size_t full = 0;
    char buf[8];
    if (emoe_model_last_error_copy(NULL, buf, sizeof buf, &full) != EMOE_STATUS_INVALID_ARGUMENT) bad = 1;
    if (emoe_model_last_error_copy(model, NULL, 0, &full) != EMOE_STATUS_OK) bad = 1;
    emoe_model_free(model);
    if (bad) {
        fprintf(stderr, "model_errors: wrong status or message\n");
        return 1;
    }
    printf("model errors: safe across %d threads\n", THREADS);
    return 0;
}
