#!/usr/bin/env python3
"""Rewrite an edgemoe packed GGUF (e.g. models/demo.gguf) in llama.cpp's stock layout.

edgemoe's packed layout stores each expert's matrices as their own tensors
(`blk.N.ffn_{gate,up,down}.E.weight`, 4096-aligned) and its tokenizer as
`tokenizer.huggingface.json`; llama.cpp wants the experts stacked
(`blk.N.ffn_{gate,up,down}_exps.weight`) and `tokenizer.ggml.*` arrays. This writes the same
weights (same types, bit for bit) in the stock layout so both llama.cpp and edgemoe can run one
file, e.g. for tools/bench_vs_llamacpp.sh, and llama-quantize can quantise it:

    /opt/venv/bin/python tools/packed_to_stock.py models/demo.gguf -o /tmp/demo-f16.gguf
    llama-quantize /tmp/demo-f16.gguf /tmp/demo-q8_0.gguf Q8_0

Only byte-level BPE tokenizers (`tokenizer.json` model BPE with a ByteLevel pre-tokenizer, as
the demo model has) are translated, to `tokenizer.ggml.model = gpt2`, `pre = gpt-2`; the
tokenizer.json is kept too (edgemoe prefers it). q/k rows are already in llama.cpp's order in
packed files of the `llama` arch (edgemoe's converter permutes them as llama.cpp's does).
"""
from __future__ import annotations

import argparse
import json
import re
import sys

import numpy as np
import gguf
from gguf import GGUFValueType as VT

PER_EXPERT = re.compile(r"^blk\.(\d+)\.ffn_(gate|up|down)\.(\d+)\.weight$")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input")
    ap.add_argument("-o", "--output", required=True)
    a = ap.parse_args()
    r = gguf.GGUFReader(a.input)
    arch = r.fields["general.architecture"].contents()
    w = gguf.GGUFWriter(a.output, arch)
    skip = {"general.architecture", "general.alignment", "GGUF.version", "GGUF.tensor_count", "GGUF.kv_count"}
    for key, f in r.fields.items():
        if key in skip or key.startswith("edgemoe."):
            continue
        vtype = f.types[0]
        sub = f.types[-1] if vtype == VT.ARRAY else None
        w.add_key_value(key, f.contents(), vtype, sub)
    expert_norm = r.fields.get("edgemoe.expert_weights_norm")
    if expert_norm is not None and arch != "llama":
        w.add_bool(f"{arch}.expert_weights_norm", bool(expert_norm.contents()))

    if "tokenizer.ggml.tokens" not in r.fields:
        tj = json.loads(r.fields["tokenizer.huggingface.json"].contents())
        model = tj["model"]
        if model["type"] != "BPE" or "ByteLevel" not in json.dumps(tj.get("pre_tokenizer")):
            sys.exit("only byte-level BPE tokenizers are translated")
        vocab = model["vocab"]
        n = max(vocab.values()) + 1
        for t in tj.get("added_tokens", []):
            n = max(n, t["id"] + 1)
        tokens = [f"[PAD{i}]" for i in range(n)]
        types = [gguf.TokenType.UNUSED] * n
        for tok, i in vocab.items():
            tokens[i], types[i] = tok, gguf.TokenType.NORMAL
        for t in tj.get("added_tokens", []):
            tokens[t["id"]] = t["content"]
            types[t["id"]] = gguf.TokenType.CONTROL if t.get("special") else gguf.TokenType.USER_DEFINED
        merges = [" ".join(m) if isinstance(m, list) else m for m in model["merges"]]
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("gpt-2")
        w.add_token_list(tokens)
        w.add_token_types(types)
        w.add_token_merges(merges)
        if "tokenizer.ggml.add_bos_token" not in r.fields:
            w.add_add_bos_token(False)

    # Non-expert tensors first, as they come; then each layer's stacked experts.
    experts: dict[tuple[int, str], dict[int, gguf.ReaderTensor]] = {}
    order: list[tuple[str, object]] = []
    for t in r.tensors:
        m = PER_EXPERT.match(t.name)
        if m:
            key = (int(m.group(1)), m.group(2))
            if key not in experts:
                experts[key] = {}
                order.append(("experts", key))
            experts[key][int(m.group(3))] = t
        else:
            order.append(("tensor", t))

    def raw(t: gguf.ReaderTensor) -> np.ndarray:
        return np.asarray(t.data)

    plan = []
    for kind, item in order:
        if kind == "tensor":
            plan.append((item.name, [raw(item)], item.tensor_type))
        else:
            layer, which = item
            parts = experts[item]
            ts = [parts[e] for e in range(len(parts))]
            plan.append((f"blk.{layer}.ffn_{which}_exps.weight", [raw(t) for t in ts], ts[0].tensor_type))
    for name, arrays, ty in plan:
        x = arrays[0] if len(arrays) == 1 else np.stack(arrays)
        if ty in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            w.add_tensor(name, x)
        else:
            w.add_tensor(name, x.view(np.uint8), raw_dtype=ty)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {a.output}: {len(plan)} tensors", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
