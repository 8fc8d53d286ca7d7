/* One model, several sessions on several threads at once; each thread's greedy text must equal
 * the text one thread alone produces.
 *   threads MODEL.gguf [N_THREADS]
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgemoe.h"

#define MAX_TEXT 8192

typedef struct {
    const emoe_model *model;
    char text[MAX_TEXT];
    size_t len;
    emoe_status status;
} job;

static bool collect(void *user_data, const char *piece, size_t len) {
    job *j = user_data;
    if (j->len + len >= MAX_TEXT) return false;
    memcpy(j->text + j->len, piece, len);
    j->len += len;
    j->text[j->len] = 0;
    return true;
}

static void *run(void *arg) {
    job *j = arg;
    emoe_session *s = NULL;
    j->status = emoe_session_new(j->model, 256, &s);
    if (j->status != EMOE_STATUS_OK) return NULL;
    emoe_generate_params gp;
    emoe_generate_params_default(&gp);
    gp.max_tokens = 48;
    const char *prompt = "ROMEO:";
    j->status = emoe_session_generate(s, prompt, strlen(prompt), &gp, collect, j, NULL);
    emoe_session_free(s);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.gguf [N_THREADS]\n", argv[0]);
        return 2;
    }
    int n = argc > 2 ? atoi(argv[2]) : 4;
    if (n < 1 || n > 64) n = 4;
    char error[512];
    emoe_model *model = NULL;
    if (emoe_model_load(argv[1], NULL, &model, error, sizeof error) != EMOE_STATUS_OK) {
        fprintf(stderr, "load failed: %s\n", error);
        return 1;
    }
    job alone = {.model = model};
    run(&alone);
    if (alone.status != EMOE_STATUS_OK) {
        fprintf(stderr, "single-thread run failed\n");
        return 1;
    }
    job *jobs = calloc((size_t)n, sizeof *jobs);
    pthread_t *tids = calloc((size_t)n, sizeof *tids);
    for (int i = 0; i < n; i++) {
        jobs[i].model = model;
        pthread_create(&tids[i], NULL, run, &jobs[i]);
    }
    int bad = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(tids[i], NULL);
        if (jobs[i].status != EMOE_STATUS_OK || strcmp(jobs[i].text, alone.text) != 0) {
            fprintf(stderr, "thread %d differs (status %d)\n", i, jobs[i].status);
            bad = 1;
        }
    }
    printf("%d threads, each: %s\n", n, alone.text);
    free(jobs);
    free(tids);
    emoe_model_free(model);
    return bad;
}
