#!/usr/bin/env python3
"""Write a random-weight Mixtral-shaped MoE model as a stock llama.cpp GGUF (llama arch).

For benchmarks and streaming tests at realistic sizes: the weights are random, the
text is gibberish, but every tensor has the shape, type and place llama.cpp's own converter
gives a Mixtral checkpoint (stacked `blk.N.ffn_{gate,up,down}_exps`, q/k in llama.cpp's row
order, a SentencePiece-style `llama` vocabulary), so both llama.cpp and edgemoe load the file.

Defaults: hidden 1024, 16 layers, 8 experts (top-2), expert FFN 3584 (Mixtral's
3.5x), 16 heads / 4 KV heads, vocab 32000, f16: about 2.9 GB.

    .venv/bin/python tools/train/make_random_moe.py -o /tmp/moe.gguf              # ~2.9 GB
    .venv/bin/python tools/train/make_random_moe.py -o /tmp/moe-small.gguf \\
        --hidden 1024 --layers 4 --ffn 2048 --vocab 8000                         # ~0.4 GB
    llama-quantize /tmp/moe.gguf /tmp/moe-q4_k_m.gguf Q4_K_M                     # K-quants

Options: --hidden, --layers, --experts, --experts-used, --ffn, --heads, --kv-heads, --vocab,
--ctx, --type f32|f16|q8_0, --seed. Tensors are generated and written one at a time, so memory
use stays near the largest tensor. Weights are N(0, 1/fan_in) so activations stay O(1); norms
are 1. Needs numpy and the `gguf` package (tools/requirements.txt).
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import gguf


def vocabulary(n: int) -> tuple[list[str], list[float], list[int]]:
    """A SentencePiece-BPE-style vocabulary: <unk> <s> </s>, 256 byte tokens, then pieces."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256
    pieces: list[str] = []
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    pieces += ["\u2581"] + list(letters) + ["\u2581" + c for c in letters]
    i = 0
    while len(tokens) + len(pieces) < n:
        # two- and three-letter pieces, with and without the word-start marker
        a, b, c = letters[i % 26], letters[(i // 26) % 26], letters[(i // 676) % 26]
        word = a + b if i < 676 else a + b + c
        pieces.append(("\u2581" if (i // 2) % 2 else "") + word)
        i += 1
    pieces = list(dict.fromkeys(pieces))  # keep order, drop any repeat
    while len(tokens) + len(pieces) < n:
        pieces.append(f"\u2581tok{len(pieces)}")
    pieces = pieces[: n - len(tokens)]
    scores = [0.0] * len(tokens) + [-float(i) for i in range(len(pieces))]
    return tokens + pieces, scores, types + [1] * len(pieces)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--experts-used", type=int, default=2)
    ap.add_argument("--ffn", type=int, default=3584, help="expert FFN size")
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--ctx", type=int, default=4096)
    ap.add_argument("--type", choices=["f32", "f16", "q8_0"], default="f16")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.hidden % a.heads or a.heads % a.kv_heads:
        ap.error("hidden must be a multiple of heads, heads of kv-heads")
    if a.type == "q8_0" and (a.hidden % 32 or a.ffn % 32):
        ap.error("q8_0 needs hidden and ffn multiples of 32")

    H, F, E, L, V = a.hidden, a.ffn, a.experts, a.layers, a.vocab
    hd = H // a.heads
    kv = hd * a.kv_heads
    rng = np.random.default_rng(a.seed)

    # (name, numpy shape [slowest..fastest], fan_in or 0 for a norm of ones, matrix?)
    plan: list[tuple[str, tuple[int, ...], int, bool]] = [("token_embd.weight", (V, H), 1, True)]
    for l in range(L):
        p = f"blk.{l}."
        plan += [
            (p + "attn_norm.weight", (H,), 0, False),
            (p + "attn_q.weight", (H, H), H, True),
            (p + "attn_k.weight", (kv, H), H, True),
            (p + "attn_v.weight", (kv, H), H, True),
            (p + "attn_output.weight", (H, H), H, True),
            (p + "ffn_norm.weight", (H,), 0, False),
            (p + "ffn_gate_inp.weight", (E, H), H, False),  # the router stays f32, as llama.cpp writes it
            (p + "ffn_gate_exps.weight", (E, F, H), H, True),
            (p + "ffn_up_exps.weight", (E, F, H), H, True),
            (p + "ffn_down_exps.weight", (E, H, F), F, True),
        ]
    plan += [("output_norm.weight", (H,), 0, False), ("output.weight", (V, H), H, True)]

    qtype = {"f32": gguf.GGMLQuantizationType.F32, "f16": gguf.GGMLQuantizationType.F16,
             "q8_0": gguf.GGMLQuantizationType.Q8_0}[a.type]
    ftype = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
             "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[a.type]

    def tensor_type(matrix: bool) -> gguf.GGMLQuantizationType:
        return qtype if matrix else gguf.GGMLQuantizationType.F32

    def nbytes(shape: tuple[int, ...], ty: gguf.GGMLQuantizationType) -> int:
        block, size = gguf.GGML_QUANT_SIZES[ty]
        n = int(np.prod(shape))
        return n // block * size

    w = gguf.GGUFWriter(a.output, "llama")
    w.add_name(f"edgemoe random MoE {E}x h{H} l{L} f{F}")
    w.add_block_count(L)
    w.add_context_length(a.ctx)
    w.add_embedding_length(H)
    w.add_feed_forward_length(F)
    w.add_head_count(a.heads)
    w.add_head_count_kv(a.kv_heads)
    w.add_rope_freq_base(1e6)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_expert_count(E)
    w.add_expert_used_count(a.experts_used)
    w.add_vocab_size(V)
    w.add_rope_dimension_count(hd)
    w.add_file_type(ftype)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    tokens, scores, types = vocabulary(V)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)

    total = 0
    for name, shape, _, matrix in plan:
        ty = tensor_type(matrix)
        n = nbytes(shape, ty)
        total += n
        raw_shape = shape if ty != gguf.GGMLQuantizationType.Q8_0 else shape[:-1] + (shape[-1] // 32 * 34,)
        w.add_tensor_info(name, raw_shape, np.dtype(np.uint8) if ty == gguf.GGMLQuantizationType.Q8_0
                          else np.dtype(np.float32 if ty == gguf.GGMLQuantizationType.F32 else np.float16),
                          n, raw_dtype=ty if ty == gguf.GGMLQuantizationType.Q8_0 else None)
    print(f"writing {a.output}: {len(plan)} tensors, {total / 2**30:.2f} GiB of weights ({a.type})", file=sys.stderr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()

    t0 = time.time()
    done = 0
    for name, shape, fan_in, matrix in plan:
        ty = tensor_type(matrix)
        if fan_in == 0:
            x = np.ones(shape, dtype=np.float32)
        else:
            # by slices of the slowest dimension, so a stacked expert tensor never sits in memory
            # as float32 all at once
            x = None
        if x is not None:
            w.write_tensor_data(x)
        else:
            std = 1.0 / np.sqrt(fan_in)
            parts = []
            for s in range(shape[0] if len(shape) == 3 else 1):
                sub = shape[1:] if len(shape) == 3 else shape
                y = rng.standard_normal(sub, dtype=np.float32) * np.float32(std)
                if ty == gguf.GGMLQuantizationType.F16:
                    y = y.astype(np.float16)
                elif ty == gguf.GGMLQuantizationType.Q8_0:
                    y = gguf.quants.quantize(y, ty)
                parts.append(y)
            w.write_tensor_data(np.stack(parts) if len(shape) == 3 else parts[0])
        done += nbytes(shape, ty)
        if sys.stderr.isatty():
            print(f"\r{done / 2**30:6.2f} / {total / 2**30:.2f} GiB  {time.time() - t0:5.1f} s", end="", file=sys.stderr)
    print(file=sys.stderr)
    w.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
