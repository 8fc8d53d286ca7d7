// Greedy continuations as llama.cpp computes them, for tools/fixtures/make_llamacpp_refs.py.
//
// Dev tooling only: compiled against a llama.cpp build (tools/llamacpp/build_llamacpp.sh) by
// make_llamacpp_refs.py; uses nothing but the public llama.h API.
//
//   llamacpp_greedy MODEL.gguf N_PREDICT KV(f16|f32) FLASH(on|off|auto) THREADS PROMPT...
//
// For each prompt: tokenize it as llama.cpp does by default (add_special = true: BOS if the
// model asks for it; parse_special = false), evaluate the prompt as one batch, then pick
// N_PREDICT tokens with llama.cpp's greedy sampler, one decode per token through the KV cache.
// Prints one JSON object per prompt and line: text, prompt ids, greedy ids, and for every
// greedy step the top-2 logits (so a reader can see how clear each choice was).
#include "llama.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

static void quiet_log(enum ggml_log_level level, const char *text, void *) {
    if (level == GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

static std::string json_string(const std::string &s) {
    std::string out = "\"";
    for (unsigned char c : s) {
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\t': out += "\\t"; break;
            case '\r': out += "\\r"; break;
            default:
                if (c < 0x20) {
                    char buf[8];
                    snprintf(buf, sizeof buf, "\\u%04x", c);
                    out += buf;
                } else {
                    out += (char)c;
                }
        }
    }
    return out + "\"";
}

static std::string ids_json(const std::vector<llama_token> &ids) {
    std::string out = "[";
    for (size_t i = 0; i < ids.size(); i++) {
        if (i) out += ",";
        out += std::to_string(ids[i]);
    }
    return out + "]";
}

int main(int argc, char **argv) {
    if (argc < 7) {
        fprintf(stderr, "usage: %s MODEL N_PREDICT f16|f32 on|off|auto THREADS PROMPT...\n", argv[0]);
        return 2;
    }
    const char *path = argv[1];
    const int n_predict = atoi(argv[2]);
    const bool kv_f32 = strcmp(argv[3], "f32") == 0;
    const char *flash = argv[4];
    const int threads = atoi(argv[5]);

    llama_log_set(quiet_log, nullptr);
    llama_backend_init();

    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    llama_model *model = llama_model_load_from_file(path, mp);
    if (!model) {
        fprintf(stderr, "cannot load %s\n", path);
        return 1;
    }
    const llama_vocab *vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);

    for (int a = 6; a < argc; a++) {
        const std::string text = argv[a];
        std::vector<llama_token> prompt(text.size() + 8);
        int n = llama_tokenize(vocab, text.data(), (int)text.size(), prompt.data(), (int)prompt.size(), true, false);
        if (n < 0) {
            fprintf(stderr, "tokenize failed\n");
            return 1;
        }
        prompt.resize(n);

        llama_context_params cp = llama_context_default_params();
        cp.n_ctx = 256;
        cp.n_batch = 256;
        cp.n_ubatch = 256;
        cp.n_threads = threads;
        cp.n_threads_batch = threads;
        cp.no_perf = true;
        if (kv_f32) {
            cp.type_k = GGML_TYPE_F32;
            cp.type_v = GGML_TYPE_F32;
        }
        if (strcmp(flash, "on") == 0) cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_ENABLED;
        if (strcmp(flash, "off") == 0) cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
        if (strcmp(flash, "auto") == 0) cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_AUTO;
        llama_context *ctx = llama_init_from_model(model, cp);
        if (!ctx) {
            fprintf(stderr, "cannot create a context\n");
            return 1;
        }
        llama_sampler *smpl = llama_sampler_chain_init(llama_sampler_chain_default_params());
        llama_sampler_chain_add(smpl, llama_sampler_init_greedy());

        std::vector<llama_token> out;
        std::string steps = "[";
        std::vector<llama_token> batch_ids = prompt;
        llama_batch batch = llama_batch_get_one(batch_ids.data(), (int)batch_ids.size());
        llama_token next = 0;
        for (int i = 0; i < n_predict; i++) {
            if (llama_decode(ctx, batch) != 0) {
                fprintf(stderr, "decode failed\n");
                return 1;
            }
            const float *logits = llama_get_logits_ith(ctx, -1);
            int best = 0, second = -1;
            for (int v = 1; v < n_vocab; v++) {
                if (logits[v] > logits[best]) {
                    second = best;
                    best = v;
                } else if (second < 0 || logits[v] > logits[second]) {
                    second = v;
                }
            }
            next = llama_sampler_sample(smpl, ctx, -1);
            if (next != best) {
                fprintf(stderr, "greedy sampler chose %d, argmax %d\n", next, best);
                return 1;
            }
            char buf[160];
            snprintf(buf, sizeof buf, "%s[%d,%.9g,%d,%.9g]", i ? "," : "", best, logits[best], second,
                     logits[second]);
            steps += buf;
            out.push_back(next);
            batch = llama_batch_get_one(&out.back(), 1);
        }
        steps += "]";

        std::string piece_text;
        for (llama_token t : out) {
            char buf[256];
            int k = llama_token_to_piece(vocab, t, buf, sizeof buf, 0, true);
            if (k > 0) piece_text.append(buf, k);
        }
        printf("{\"text\":%s,\"ids\":%s,\"greedy\":%s,\"greedy_text\":%s,\"top2\":%s}\n", json_string(text).c_str(),
               ids_json(prompt).c_str(), ids_json(out).c_str(), json_string(piece_text).c_str(), steps.c_str());
        fflush(stdout);
        llama_sampler_free(smpl);
        llama_free(ctx);
    }
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
