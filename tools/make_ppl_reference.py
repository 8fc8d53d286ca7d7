#!/usr/bin/env python3
"""Reference perplexities of the tiny fixture models, computed with transformers.

For each family in tests/fixtures/<family>/hf this tokenizes tests/fixtures/shakespeare-2k.txt
(no special tokens), runs the float32 eager model over strided windows and writes
tests/fixtures/<family>/perplexity.json with the token ids and, per (ctx, stride), the mean NLL
and perplexity. tests/perplexity.rs checks edgemoe's figures against these.

The window protocol (edgemoe's `engine::perplexity`): windows start at 0, stride, 2*stride, ...
and hold ctx tokens; only full windows are used. Each window is run alone from an empty cache;
the first window scores tokens 1..ctx, every later one only the tokens past the end of the
previous window (as in the Hugging Face "perplexity of fixed-length models" guide).

    /opt/venv/bin/python tools/make_ppl_reference.py
"""

import json
import math
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
TEXT = FIXTURES / "shakespeare-2k.txt"
FAMILIES = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe"]
# (ctx, stride) pairs: non-overlapping windows and overlapping ones.
SETTINGS = [(64, 64), (64, 16), (128, 48)]


def windows(n: int, ctx: int, stride: int):
    """(begin, first scored position) of each window, as edgemoe plans them."""
    out = []
    prev_end = 0
    begin = 0
    while begin + ctx <= n:
        end = begin + ctx
        # position 0 has no prediction (nothing before it in the window)
        first = 1 if begin == 0 else max(1, prev_end - begin)
        out.append((begin, first))
        prev_end = end
        begin += stride
    return out


@torch.no_grad()
def perplexity(model, ids: list[int], ctx: int, stride: int) -> dict:
    nll = []
    for begin, first in windows(len(ids), ctx, stride):
        chunk = torch.tensor([ids[begin:begin + ctx]])
        logits = model(chunk).logits[0].double()
        logp = torch.log_softmax(logits, dim=-1)
        for t in range(first, ctx):
            nll.append(-logp[t - 1, ids[begin + t]].item())
    mean = sum(nll) / len(nll)
    return {
        "ctx": ctx,
        "stride": stride,
        "windows": len(windows(len(ids), ctx, stride)),
        "predictions": len(nll),
        "mean_nll": mean,
        "perplexity": math.exp(mean),
    }


def main():
    text = TEXT.read_text()
    for family in FAMILIES:
        hf = FIXTURES / family / "hf"
        tok = AutoTokenizer.from_pretrained(str(hf))
        ids = tok(text, add_special_tokens=False)["input_ids"]
        model = AutoModelForCausalLM.from_pretrained(
            str(hf), dtype=torch.float32, attn_implementation="eager"
        ).eval()
        results = [perplexity(model, ids, c, s) for c, s in SETTINGS]
        out = {
            "family": family,
            "text": TEXT.name,
            "protocol": __doc__.split("\n\n")[1].replace("\n", " "),
            "ids": ids,
            "results": results,
        }
        path = FIXTURES / family / "perplexity.json"
        path.write_text(json.dumps(out, indent=1) + "\n")
        print(family, len(ids), "tokens", [round(r["perplexity"], 4) for r in results])


if __name__ == "__main__":
    main()
