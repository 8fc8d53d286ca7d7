#!/usr/bin/env python3
"""Temperature-scale a trained Hugging Face checkpoint (Guo et al., 2017) and save the result.

A small model trained for many epochs on a 1 MB corpus is over-confident on text it has not
seen: its held-out perplexity then moves little, or even falls, when its experts are quantised,
because noise in the logits acts like a softer temperature. Fitting one temperature T on part of
the validation split and folding it into the weights (the final norm's scale divided by T, so
every logit is divided by T) gives a calibrated model whose perplexity follows the KL of a
quantised copy, as the bitwidth goal's "+1% perplexity" assumes.

The fit uses the validation text from --fit-from (a fraction of the validation split, default
its second half), so the held-out text `edgemoe calibrate` checks (the first 8192 tokens of the
validation split) stays unseen.

    .venv/bin/python tools/train/temperature_scale.py demo256b -o demo256b-t
"""
import argparse
import json
import math
import os
import shutil
from pathlib import Path

import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM


def window_logits(model, ids, ctx):
    """Logits and targets of every non-overlapping window of `ctx` tokens (tail dropped)."""
    logits, targets = [], []
    with torch.no_grad():
        for k in range(len(ids) // ctx):
            w = torch.tensor(ids[k * ctx:(k + 1) * ctx]).unsqueeze(0)
            out = model(w).logits[0, :-1].float()
            logits.append(out)
            targets.append(w[0, 1:])
    return torch.cat(logits), torch.cat(targets)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("-o", "--out", type=Path, required=True)
    ap.add_argument("--text", type=Path, default=os.environ.get("EDGEMOE_CORPUS"),
                    help="the training corpus, tinyshakespeare.txt (default: $EDGEMOE_CORPUS)")
    ap.add_argument("--val-fraction", type=float, default=0.1,
                    help="the validation split: the text's last fraction")
    ap.add_argument("--fit-from", type=float, default=0.5,
                    help="fit on the validation split from this fraction of it to its end")
    ap.add_argument("--ctx", type=int, default=256)
    args = ap.parse_args()
    if args.text is None:
        ap.error("no corpus: pass --text PATH (tinyshakespeare.txt) or set $EDGEMOE_CORPUS")

    text = Path(args.text).read_text()
    val = text[int((1 - args.val_fraction) * len(text)):]
    fit_text = val[int(args.fit_from * len(val)):]
    tok = Tokenizer.from_file(str(args.checkpoint / "tokenizer.json"))
    ids = tok.encode(fit_text, add_special_tokens=False).ids
    model = AutoModelForCausalLM.from_pretrained(args.checkpoint, dtype=torch.float32)
    model.eval()
    logits, targets = window_logits(model, ids, args.ctx)

    def nll(t):
        return torch.nn.functional.cross_entropy(logits / t, targets).item()

    # NLL(T) is convex in 1/T: golden-section search on log T.
    lo, hi = math.log(0.5), math.log(4.0)
    g = (math.sqrt(5) - 1) / 2
    for _ in range(60):
        a, b = hi - g * (hi - lo), lo + g * (hi - lo)
        if nll(math.exp(a)) < nll(math.exp(b)):
            hi = b
        else:
            lo = a
    t = math.exp((lo + hi) / 2)
    before, after = nll(1.0), nll(t)
    print(f"fit on {len(targets)} predictions: T = {t:.4f}, "
          f"perplexity {math.exp(before):.3f} -> {math.exp(after):.3f}")

    with torch.no_grad():
        model.model.norm.weight.div_(t)
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if (args.checkpoint / name).exists():
            shutil.copy(args.checkpoint / name, args.out / name)
    (args.out / "temperature.json").write_text(json.dumps({
        "source": str(args.checkpoint),
        "temperature": t,
        "fit": {"text": str(args.text), "val_fraction": args.val_fraction,
                "fit_from": args.fit_from, "predictions": len(targets),
                "perplexity_before": math.exp(before), "perplexity_after": math.exp(after)},
        "how": "final norm weight divided by T: every logit divided by T",
    }, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
