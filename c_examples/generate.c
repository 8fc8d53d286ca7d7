/* Load a model, stream a completion to stdout, print the figures.
 *   generate MODEL.gguf "PROMPT" [MAX_TOKENS] [MEMORY_BUDGET_BYTES]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgemoe.h"

static bool print_piece(void *user_data, const char *piece, size_t len) {
    (void)user_data;
    fwrite(piece, 1, len, stdout);
    fflush(stdout);
    return true;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL.gguf PROMPT [MAX_TOKENS] [MEMORY_BUDGET_BYTES]\n", argv[0]);
        return 2;
    }
    if (emoe_abi_version() != EMOE_ABI_VERSION) {
        fprintf(stderr, "edgemoe ABI mismatch: header %d, library %u\n", EMOE_ABI_VERSION, emoe_abi_version());
        return 1;
    }
    emoe_model_params mp;
    emoe_model_params_default(&mp);
    if (argc > 4) mp.memory_budget = strtoull(argv[4], NULL, 10);

    char error[512];
    emoe_model *model = NULL;
    emoe_status st = emoe_model_load(argv[1], &mp, &model, error, sizeof error);
    if (st != EMOE_STATUS_OK) {
        fprintf(stderr, "load failed (%s): %s\n", emoe_status_string(st), error);
        return 1;
    }
    emoe_model_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    emoe_model_get_info(model, &info);
    fprintf(stderr, "%s: %u layers, %u experts (%u used), resident %llu bytes, experts %llu bytes\n",
            info.architecture, info.n_layers, info.n_experts, info.n_experts_used,
            (unsigned long long)info.resident_bytes, (unsigned long long)info.expert_bytes);

    emoe_session *session = NULL;
    if (emoe_session_new(model, 0, &session) != EMOE_STATUS_OK) {
        char detail[256];
        emoe_model_last_error_copy(model, detail, sizeof detail, NULL);
        fprintf(stderr, "session: %s\n", detail);
        emoe_model_free(model);
        return 1;
    }
    emoe_generate_params gp;
    emoe_generate_params_default(&gp);
    gp.max_tokens = argc > 3 ? (uint32_t)atoi(argv[3]) : 64;

    emoe_generate_stats stats = {.struct_size = sizeof stats};
    fputs(argv[2], stdout);
    st = emoe_session_generate(session, argv[2], strlen(argv[2]), &gp, print_piece, NULL, &stats);
    putchar('\n');
    if (st != EMOE_STATUS_OK) {
        fprintf(stderr, "generate failed: %s\n", emoe_session_last_error(session));
    } else {
        fprintf(stderr, "prompt %u tokens (%.1f tok/s), generated %u tokens (%.1f tok/s)\n",
                stats.prompt_tokens, stats.prompt_tokens / (stats.prompt_seconds + 1e-9),
                stats.generated_tokens, stats.generated_tokens / (stats.decode_seconds + 1e-9));
    }
    emoe_session_free(session);
    emoe_model_free(model);
    return st == EMOE_STATUS_OK ? 0 : 1;
}
