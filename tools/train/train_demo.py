#!/usr/bin/env python3
"""Train the small Mixtral-style MoE demo model that ships with edgemoe.

PURPOSE
    Produces a tiny but real Mixture-of-Experts checkpoint (Hugging Face `MixtralForCausalLM`
    format, float32 safetensors, classic per-expert tensor layout) plus its byte-level BPE
    tokenizer, trained on Tiny Shakespeare.  The Rust engine uses it as a demo model and as a
    numerical reference (validation perplexity, generations, expert usage).

HOW TO RUN  (EDGEMOE_CORPUS=path/to/tinyshakespeare.txt, or --data PATH)
    nice -n 10 .venv/bin/python tools/train/train_demo.py                 # 20 min budget (default)
    .venv/bin/python tools/train/train_demo.py --minutes 5
    .venv/bin/python tools/train/train_demo.py --steps 300                # exact step count
    .venv/bin/python tools/train/train_demo.py --steps 20 --out /tmp/smoke  # smoke test (~1 min)
    Options: --family mixtral|olmoe (default mixtral; olmoe = OlmoeForCausalLM, same sizes,
             q/k norm, top-k weights not renormalised, fused expert tensors kept),
             --data (corpus path, tinyshakespeare.txt; default $EDGEMOE_CORPUS, one of
             the two is required), --out (default demo-hf), --seed (default 1234), --threads (default 2).
    Needs torch, transformers, tokenizers, safetensors, numpy (tested: torch 2.15.0,
    transformers 5.24.0, tokenizers 0.23.3, safetensors 0.8.0, numpy 2.4.6, Python 3.11).

EXPECTED RUNTIME
    Tokenizer ~2 s, training ~= the budget (default 20 min; one step of 32x128 tokens takes
    ~0.6 s on 2 idle cores, several seconds under contention; only the last 25% of the steps are
    planned in advance, so contention can stretch only that part), plus ~1 s per 100 steps of
    validation monitoring, then evaluation + save + reload checks + generation ~30 s.

DETERMINISM
    All RNGs are seeded (--seed).  With --steps N the run is deterministic (same thread count).
    LR schedule for N steps: linear warmup (WARMUP_STEPS), constant peak until step
    D = floor(3N/4), then cosine decay to 10% of peak at step N.  With --minutes the run trains at
    peak LR until 75% of the budget has elapsed (at step S), then sets N = ceil(4S/3) so that
    floor(3N/4) = S, and runs the cosine tail to step N.  The LR of every step therefore depends
    only on N, N is written to eval.json ("steps"), and `--steps N` reproduces the shipped
    weights bit for bit.

DATA
    Corpus: the whole file, decoded as UTF-8.  Split by characters: train = text[:int(0.9*len)],
    validation = text[int(0.9*len):].

TOKENIZER (GPT-2 style byte-level BPE, `tokenizers` library)
    model BPE (no unk token), pre_tokenizer ByteLevel(add_prefix_space=False, use_regex=True,
    i.e. the GPT-2 regex), decoder ByteLevel, no normalizer; the post-processor written by
    transformers is a TemplateProcessing "$A" that adds nothing.  Trained on the training split
    only (min_frequency 2); vocab_size 2048 total = 256 byte symbols + 1 special + 1791 merges.
    Special token `<|endoftext|>` = id 0, used as both BOS and EOS.  The tokenizer never adds
    special tokens by itself (add_bos_token = add_eos_token = False).

MODEL (MixtralForCausalLM)
    vocab 2048, hidden 128, 4 layers, 8 experts, top-2 routing (softmax over the 8 router logits,
    take the top 2, renormalise those 2 weights to sum to 1), expert FFN intermediate 320 (SwiGLU:
    w2(silu(w1 x) * w3 x)), 4 query heads / 2 KV heads, head_dim 32, RoPE theta 10000 (default
    rotate-half / NeoX layout as in HF Llama/Mixtral), max_position_embeddings 1024, RMSNorm eps
    1e-5, untied lm_head, no sliding window, no biases.

TRAINING
    Random 129-token slices of the tokenized training split (input 128, target shifted by one);
    batch 32.  In each batch the first BOS_ROWS rows instead start with <|endoftext|> followed by
    text beginning at a paragraph start (after a blank line), so that prompting with BOS is
    in-distribution.  Loss = CE + router_aux_loss_coef (0.02) * Switch-style load-balancing loss
    computed PER LAYER and averaged (see per_layer_balance_loss; router logits obtained with
    output_router_logits=True).  AdamW(betas 0.9/0.95, wd 0.1 on matrices, 0 on norms), peak lr
    3e-3, linear warmup, constant, then cosine decay over the last 25% of the steps to 10% of peak
    (see DETERMINISM), grad-clip 1.0.

VALIDATION PERPLEXITY PROTOCOL (reproduced by the Rust engine)
    1. ids = tokenizer.encode(validation_text) in ONE call, no special tokens added (no BOS/EOS).
    2. Cut ids into consecutive, non-overlapping windows of W = 256 tokens:
       window k = ids[256*k : 256*(k+1)], k = 0 .. floor(len(ids)/256)-1; the incomplete tail is
       dropped.
    3. Each window is run independently from an empty KV cache, positions 0..255 (no BOS).
    4. For each window, NLL_j = -log softmax(logits[j-1])[ids[j]] for j = 1..255 (255
       predictions per window; token 0 of each window is context only).
    5. perplexity = exp( sum of all NLL / (255 * number_of_windows) ).
    For Tiny Shakespeare with this tokenizer: 43559 validation tokens -> 170 windows (tail of 39
    tokens dropped) -> 43350 predictions.
    Computed in float32 with eager attention (and the reference per-expert loop), on the
    checkpoint reloaded from disk.

OUTPUT (directory --out)
    config.json, generation_config.json, model.safetensors (float32; per-expert layout:
    model.layers.{L}.block_sparse_moe.experts.{E}.w1/w2/w3.weight, router
    model.layers.{L}.block_sparse_moe.gate.weight), tokenizer.json, tokenizer_config.json,
    eval.json (perplexity, windows, token counts, steps, losses, wall time, versions, expert
    usage, generations).
"""

import argparse
import hashlib
import json
import math
import os
import platform
import random
import sys
import time

import numpy as np
import torch

SEED_DEFAULT = 1234
VOCAB_SIZE = 2048
SPECIAL = "<|endoftext|>"
SEQ_LEN = 128
BATCH = 32
BOS_ROWS = 4
PEAK_LR = 3e-3
MIN_LR_FRAC = 0.1
WARMUP_STEPS = 30
WEIGHT_DECAY = 0.1
DROPOUT = 0.2
GRAD_CLIP = 1.0
DECAY_FRAC_NUM, DECAY_FRAC_DEN = 3, 4  # cosine decay starts at floor(3N/4)
VAL_EVERY = 100  # monitoring only (never used for model selection)
EVAL_WINDOW = 256
EVAL_BATCH = 16
PROMPT = "ROMEO:"


def log(*a):
    print(*a, flush=True)


def set_seeds(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------- tokenizer
def train_tokenizer(train_text):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=[SPECIAL],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([train_text], trainer=trainer, length=1)
    assert tok.get_vocab_size() == VOCAB_SIZE, tok.get_vocab_size()
    assert tok.token_to_id(SPECIAL) == 0
    return tok


def wrap_tokenizer(tok):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=SPECIAL,
        eos_token=SPECIAL,
        add_bos_token=False,
        add_eos_token=False,
        model_max_length=1024,
        clean_up_tokenization_spaces=False,
    )


# ----------------------------------------------------------------------------- model
def make_config(hidden=128, ffn=320, head_dim=32, family="mixtral"):
    from transformers import MixtralConfig, OlmoeConfig

    if family == "olmoe":
        # OLMoE: q/k RMSNorm over the whole projection, top-k weights NOT renormalised
        # (norm_topk_prob=False, as in the released OLMoE), head size = hidden / heads.
        return OlmoeConfig(
            vocab_size=VOCAB_SIZE,
            hidden_size=hidden,
            intermediate_size=ffn,
            num_hidden_layers=4,
            num_attention_heads=hidden // head_dim,
            num_key_value_heads=max(1, hidden // head_dim // 2),
            num_experts=8,
            num_experts_per_tok=2,
            norm_topk_prob=False,
            hidden_act="silu",
            max_position_embeddings=1024,
            rope_theta=10000.0,
            rms_norm_eps=1e-5,
            tie_word_embeddings=False,
            router_aux_loss_coef=0.02,
            output_router_logits=True,
            initializer_range=0.02,
            clip_qkv=None,
            bos_token_id=0,
            eos_token_id=0,
            pad_token_id=None,
            use_cache=True,
        )
    return MixtralConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=hidden,
        intermediate_size=ffn,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=head_dim,
        num_local_experts=8,
        num_experts_per_tok=2,
        hidden_act="silu",
        max_position_embeddings=1024,
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        sliding_window=None,
        router_aux_loss_coef=0.02,
        router_jitter_noise=0.0,
        output_router_logits=True,
        initializer_range=0.02,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=None,
        use_cache=True,
    )


def add_train_dropout(model, p):
    """Dropout (active only in train mode) on the token embeddings and on the output of every
    attention block and every MoE block, i.e. on each branch before it joins the residual stream.
    Implemented with forward hooks, so the architecture and saved checkpoint are plain Mixtral."""
    if p <= 0:
        return []

    def hook(mod, inp, out):
        if not mod.training:
            return out
        if isinstance(out, tuple):
            return (torch.nn.functional.dropout(out[0], p, True),) + tuple(out[1:])
        return torch.nn.functional.dropout(out, p, True)

    hs = [model.model.embed_tokens.register_forward_hook(hook)]
    for layer in model.model.layers:
        moe = getattr(layer, "block_sparse_moe", None) or getattr(layer, "mlp")
        hs.append(layer.self_attn.register_forward_hook(hook))
        hs.append(moe.register_forward_hook(hook))
    return hs


def set_impl(model, attn, experts):
    try:
        model.set_attn_implementation(attn)
    except Exception as e:  # older transformers
        log(f"note: set_attn_implementation({attn}) failed: {e}")
        model.config._attn_implementation = attn
    if experts is not None and hasattr(model, "set_experts_implementation"):
        try:
            model.set_experts_implementation(experts)
        except Exception as e:
            log(f"note: set_experts_implementation({experts}) failed: {e}")


# ----------------------------------------------------------------------------- data
class Batcher:
    def __init__(self, ids, para_starts, seed):
        self.ids = torch.tensor(ids, dtype=torch.long)
        self.para = np.asarray(para_starts, dtype=np.int64)
        self.rng = np.random.RandomState(seed)

    def next(self):
        n = len(self.ids)
        rows = []
        for r in range(BATCH):
            if r < BOS_ROWS:
                s = int(self.para[self.rng.randint(len(self.para))])
                s = min(s, n - SEQ_LEN)
                row = torch.cat([torch.zeros(1, dtype=torch.long), self.ids[s : s + SEQ_LEN]])
            else:
                s = int(self.rng.randint(0, n - SEQ_LEN - 1))
                row = self.ids[s : s + SEQ_LEN + 1]
            rows.append(row)
        b = torch.stack(rows)
        return b[:, :-1].contiguous(), b[:, 1:].contiguous()


def decay_start(total):
    return (DECAY_FRAC_NUM * total) // DECAY_FRAC_DEN


def total_for_decay_start(s):
    """Smallest N with decay_start(N) == s, i.e. ceil(4s/3)."""
    n = -(-DECAY_FRAC_DEN * s // DECAY_FRAC_NUM)
    assert decay_start(n) == s
    return n


def lr_at(step, total):
    """LR for 0-based step index; for step < decay_start(total) it does not depend on total."""
    if step < WARMUP_STEPS:
        return PEAK_LR * (step + 1) / WARMUP_STEPS
    d = decay_start(total)
    if step < d:
        return PEAK_LR
    p = min(1.0, (step - d) / max(1, total - d))
    return PEAK_LR * (MIN_LR_FRAC + (1 - MIN_LR_FRAC) * 0.5 * (1 + math.cos(math.pi * p)))


def per_layer_balance_loss(router_logits, n_exp, top_k):
    """Switch-Transformer load-balancing loss computed per layer, then averaged over layers.

    For each layer: f_e = (# top-k slots routed to expert e) / T, P_e = mean router softmax prob of e,
    loss_l = n_exp * sum_e f_e * P_e  (= top_k when perfectly balanced).  transformers'
    built-in `aux_loss` pools the routing statistics of all layers before taking the product, so
    one layer's hot expert can be offset by another layer's cold one; per-layer keeps every
    layer's experts in use.  Same scale as the built-in loss (2.0 when balanced)."""
    losses = []
    for g in router_logits:
        probs = torch.softmax(g.float(), dim=-1)
        sel = torch.topk(probs, top_k, dim=-1).indices
        f = torch.zeros(n_exp).scatter_add_(0, sel.reshape(-1), torch.ones(sel.numel())) / probs.shape[0]
        losses.append(n_exp * (f * probs.mean(0)).sum())
    return torch.stack(losses).mean()


# ----------------------------------------------------------------------------- eval
@torch.no_grad()
def evaluate(model, val_ids, n_experts, top_k):
    """Perplexity per the protocol in the module docstring + per-layer expert usage counts."""
    model.eval()
    n_win = len(val_ids) // EVAL_WINDOW
    wins = torch.tensor(val_ids[: n_win * EVAL_WINDOW], dtype=torch.long).view(n_win, EVAL_WINDOW)
    nll_sum = 0.0
    n_pred = 0
    usage = None
    for b in range(0, n_win, EVAL_BATCH):
        # rows are independent sequences (no padding, causal mask) == running each window alone
        x = wins[b : b + EVAL_BATCH]
        out = model(input_ids=x, use_cache=False, output_router_logits=True)
        logits = out.logits.float()
        lp = torch.log_softmax(logits[:, :-1], dim=-1)
        nll = -lp.gather(-1, x[:, 1:, None]).squeeze(-1)
        nll_sum += nll.double().sum().item()
        n_pred += nll.numel()
        rl = out.router_logits
        if usage is None:
            usage = np.zeros((len(rl), n_experts), dtype=np.int64)
        for li, g in enumerate(rl):
            sel = torch.topk(g.float(), top_k, dim=-1).indices.reshape(-1)
            usage[li] += np.bincount(sel.numpy(), minlength=n_experts)
    mean_nll = nll_sum / n_pred
    return {
        "perplexity": math.exp(mean_nll),
        "mean_nll": mean_nll,
        "windows": n_win,
        "window_len": EVAL_WINDOW,
        "predictions": n_pred,
        "val_tokens_total": len(val_ids),
        "val_tokens_used": n_win * EVAL_WINDOW,
    }, usage


def usage_table(usage):
    n_layers, n_exp = usage.shape
    lines = ["layer | " + " ".join(f"  e{e:<4d}" for e in range(n_exp)) + " |  min%   max%"]
    for li in range(n_layers):
        tot = usage[li].sum()
        pct = 100.0 * usage[li] / tot
        lines.append(
            f"  {li:3d} | " + " ".join(f"{p:6.2f}%" for p in pct) + f" | {pct.min():5.2f}  {pct.max():5.2f}"
        )
    lines.append("(share of the top-2 routing slots per layer over all validation-window tokens; uniform = 12.50%)")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- checkpoint layout
def n_experts_of(cfg):
    return getattr(cfg, "num_local_experts", None) or cfg.num_experts


def ensure_per_expert_layout(path, cfg):
    """If transformers saved fused 3-D expert tensors, rewrite to the classic per-expert layout
    (Mixtral only: the OLMoE model keeps transformers' fused layout, which edgemoe reads too).

    Returns True if a rewrite happened."""
    if cfg.model_type != "mixtral":
        return False
    from safetensors.torch import load_file, save_file

    files = [f for f in os.listdir(path) if f.endswith(".safetensors")]
    changed = False
    for fn in files:
        fp = os.path.join(path, fn)
        sd = load_file(fp)
        if not any(("gate_up_proj" in k or "down_proj" in k or ".mlp." in k) for k in sd):
            continue
        changed = True
        I = cfg.intermediate_size
        new = {}
        for k, v in sd.items():
            if k.endswith("experts.gate_up_proj"):
                pre = k[: -len("experts.gate_up_proj")].replace(".mlp.", ".block_sparse_moe.")
                assert v.shape == (n_experts_of(cfg), 2 * I, cfg.hidden_size), v.shape
                for e in range(v.shape[0]):
                    new[f"{pre}experts.{e}.w1.weight"] = v[e, :I].contiguous()
                    new[f"{pre}experts.{e}.w3.weight"] = v[e, I:].contiguous()
            elif k.endswith("experts.down_proj"):
                pre = k[: -len("experts.down_proj")].replace(".mlp.", ".block_sparse_moe.")
                for e in range(v.shape[0]):
                    new[f"{pre}experts.{e}.w2.weight"] = v[e].contiguous()
            elif ".mlp.gate." in k:
                new[k.replace(".mlp.gate.", ".block_sparse_moe.gate.")] = v
            else:
                new[k] = v
        save_file(new, fp, metadata={"format": "pt"})
        idx = os.path.join(path, "model.safetensors.index.json")
        if os.path.exists(idx):  # keep a sharded index consistent
            with open(idx) as f:
                j = json.load(f)
            wm = {k2: fn2 for k2, fn2 in j["weight_map"].items() if fn2 != fn}
            wm.update({k2: fn for k2 in new})
            j["weight_map"] = dict(sorted(wm.items()))
            with open(idx, "w") as f:
                json.dump(j, f, indent=2)
    return changed


def patch_compat(path):
    """Add legacy keys so pre-v5 transformers / converters read the files too."""
    cp = os.path.join(path, "config.json")
    with open(cp) as f:
        c = json.load(f)
    c.setdefault("rope_theta", 10000.0)
    c.setdefault("torch_dtype", "float32")
    with open(cp, "w") as f:
        json.dump(c, f, indent=2, sort_keys=True)
    tp = os.path.join(path, "tokenizer_config.json")
    with open(tp) as f:
        t = json.load(f)
    t["tokenizer_class"] = "PreTrainedTokenizerFast"
    t["add_bos_token"] = False
    t["add_eos_token"] = False
    with open(tp, "w") as f:
        json.dump(t, f, indent=2, sort_keys=True)


def describe_safetensors(path):
    from safetensors import safe_open

    rows = []
    for fn in sorted(f for f in os.listdir(path) if f.endswith(".safetensors")):
        with safe_open(os.path.join(path, fn), "pt") as f:
            for k in f.keys():
                t = f.get_slice(k)
                rows.append((k, list(t.get_shape()), t.get_dtype()))
    return rows


# ----------------------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("EDGEMOE_CORPUS"),
                    help="tinyshakespeare.txt (default: $EDGEMOE_CORPUS)")
    ap.add_argument("--out", default="demo-hf")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--minutes", type=float, default=20.0, help="wall-clock training budget (default 20)")
    g.add_argument("--steps", type=int, default=None, help="exact number of optimizer steps (overrides --minutes)")
    ap.add_argument("--seed", type=int, default=SEED_DEFAULT)
    # Shape (defaults: the bundled demo model). Rows of 256k elements let K-quants apply to the
    # experts: --hidden 256 --ffn 256 --head-dim 64 is the calibration report's second model.
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--ffn", type=int, default=320)
    ap.add_argument("--head-dim", type=int, default=32)
    ap.add_argument("--family", choices=["mixtral", "olmoe"], default="mixtral",
                    help="model family (olmoe: the calibration report's second family)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--dropout", type=float, default=DROPOUT, help="train-only residual/embedding dropout")
    ap.add_argument("--weight-decay", type=float, default=WEIGHT_DECAY)
    args = ap.parse_args()
    if not args.data:
        ap.error("no corpus: pass --data PATH (tinyshakespeare.txt) or set $EDGEMOE_CORPUS")

    t_start = time.time()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    set_seeds(args.seed)

    import safetensors
    import tokenizers
    import transformers
    from transformers import AutoTokenizer, GenerationConfig, MixtralForCausalLM, OlmoeForCausalLM

    with open(args.data, "rb") as f:
        raw = f.read()
    corpus_sha = hashlib.sha256(raw).hexdigest()
    text = raw.decode("utf-8")
    cut = int(0.9 * len(text))
    train_text, val_text = text[:cut], text[cut:]
    log(f"corpus {args.data}: {len(text)} chars (sha256 {corpus_sha[:16]}...), train {len(train_text)}, val {len(val_text)}")

    # --- tokenizer
    t0 = time.time()
    tok = train_tokenizer(train_text)
    enc = tok.encode(train_text, add_special_tokens=False)
    train_ids = enc.ids
    para = [i for i, (s, _) in enumerate(enc.offsets) if s >= 2 and train_text[s - 2 : s] == "\n\n"]
    val_ids = tok.encode(val_text, add_special_tokens=False).ids
    log(f"tokenizer trained in {time.time()-t0:.1f}s: vocab {tok.get_vocab_size()}, train {len(train_ids)} tokens "
        f"({len(train_text)/len(train_ids):.2f} chars/tok), val {len(val_ids)} tokens, {len(para)} paragraph starts")
    assert tok.decode(val_ids) == val_text, "tokenizer does not round-trip the validation text"
    hf_tok = wrap_tokenizer(tok)

    # --- model
    cfg = make_config(args.hidden, args.ffn, args.head_dim, args.family)
    model_class = OlmoeForCausalLM if args.family == "olmoe" else MixtralForCausalLM
    set_seeds(args.seed)
    model = model_class(cfg).float()
    set_impl(model, "sdpa", "grouped_mm")  # fast paths for training; eval uses eager
    hooks = add_train_dropout(model, args.dropout)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params/1e6:.3f}M parameters")

    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (decay if p.dim() >= 2 else no_decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=PEAK_LR, betas=(0.9, 0.95), eps=1e-8,
    )
    batcher = Batcher(train_ids, para, args.seed + 1)

    # --- train
    budget_s = None if args.steps is not None else args.minutes * 60.0
    total = args.steps if args.steps is not None else 10**9
    model.train()
    t_train = time.time()
    hist = []
    val_curve = []
    step = 0
    while step < total:
        if budget_s is not None and total >= 10**9 and step >= 1 and time.time() - t_train >= 0.75 * budget_s:
            total = total_for_decay_start(step)
            log(f"75% of the budget used at step {step}: cosine decay from here, total steps = {total}")
        lr = lr_at(step, total)
        for gr in opt.param_groups:
            gr["lr"] = lr
        x, y = batcher.next()
        out = model(input_ids=x, use_cache=False, output_router_logits=True)
        ce = torch.nn.functional.cross_entropy(out.logits.float().view(-1, VOCAB_SIZE), y.view(-1))
        aux = per_layer_balance_loss(out.router_logits, n_experts_of(cfg), cfg.num_experts_per_tok)
        loss = ce + cfg.router_aux_loss_coef * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        opt.step()
        step += 1
        hist.append((ce.item(), aux.item()))
        if step % VAL_EVERY == 0 or step == total:
            tv = time.time()
            vppl = evaluate(model, val_ids, n_experts_of(cfg), cfg.num_experts_per_tok)[0]["perplexity"]
            model.train()
            val_curve.append((step, vppl))
            t_train += time.time() - tv  # keep monitoring time out of the training clock
            log(f"step {step:5d} | val ppl (monitor, sdpa) {vppl:.3f}")
        if step % args.log_every == 0 or step == 1 or step == total:
            el = time.time() - t_train
            ce_avg = np.mean([h[0] for h in hist[-args.log_every:]])
            aux_avg = np.mean([h[1] for h in hist[-args.log_every:]])
            tot_s = str(total) if total < 10**9 else "?"
            log(f"step {step:5d}/{tot_s} | ce {ce_avg:.4f} | aux {aux_avg:.4f} | lr {lr:.2e} | gnorm {gn:.2f} | "
                f"{el:6.0f}s | {step*BATCH*SEQ_LEN/el:6.0f} tok/s")
    train_time = time.time() - t_train
    final_ce = float(np.mean([h[0] for h in hist[-20:]]))
    final_aux = float(np.mean([h[1] for h in hist[-20:]]))
    log(f"training done: {step} steps in {train_time:.0f}s; train CE (mean of last 20 steps) {final_ce:.4f}, "
        f"last step {hist[-1][0]:.4f}, aux {final_aux:.4f}")

    # --- save
    for h in hooks:
        h.remove()
    os.makedirs(args.out, exist_ok=True)
    model.eval()
    set_impl(model, "eager", "eager")
    model.generation_config = GenerationConfig(bos_token_id=0, eos_token_id=0, pad_token_id=0)
    model.config.output_router_logits = False  # inference default; training set it True
    model.save_pretrained(args.out)
    hf_tok.save_pretrained(args.out)
    rewritten = ensure_per_expert_layout(args.out, cfg)
    patch_compat(args.out)
    layout = describe_safetensors(args.out)
    keys = [k for k, _, _ in layout]
    assert all(dt == "F32" for _, _, dt in layout), "non-float32 tensor saved"
    if args.family == "mixtral":
        assert not any("gate_up_proj" in k or ".mlp." in k for k in keys), "fused expert tensors remain"
        assert "model.layers.0.block_sparse_moe.experts.7.w3.weight" in keys and "lm_head.weight" in keys
    log(f"saved to {args.out} ({len(keys)} tensors, rewritten-to-per-expert={rewritten}): {sorted(os.listdir(args.out))}")

    # --- reload & check
    re_model = model_class.from_pretrained(args.out, dtype=torch.float32)
    set_impl(re_model, "eager", "eager")
    re_model.eval()
    re_tok = AutoTokenizer.from_pretrained(args.out)
    assert re_tok(val_text, add_special_tokens=False)["input_ids"] == val_ids, "reloaded tokenizer mismatch"
    assert re_tok("ROMEO:")["input_ids"] == tok.encode("ROMEO:").ids, "tokenizer adds special tokens by default"
    with torch.no_grad():
        xs = torch.tensor(val_ids[: 4 * EVAL_WINDOW]).view(4, EVAL_WINDOW)
        a = model(input_ids=xs, use_cache=False).logits
        b = re_model(input_ids=xs, use_cache=False).logits
    max_diff = (a - b).abs().max().item()
    log(f"reload check: max |logit diff| in-memory vs reloaded = {max_diff:.3e}")
    assert max_diff < 1e-4, max_diff

    # --- evaluate (on the reloaded checkpoint, float32, eager)
    t0 = time.time()
    ev, usage = evaluate(re_model, val_ids, n_experts_of(cfg), cfg.num_experts_per_tok)
    log(f"validation: perplexity {ev['perplexity']:.4f} (mean NLL {ev['mean_nll']:.5f}) over {ev['windows']} windows x "
        f"{EVAL_WINDOW - 1} predictions; val tokens {ev['val_tokens_total']} ({time.time()-t0:.0f}s)")
    table = usage_table(usage)
    log("expert usage (validation):\n" + table)

    # --- generations
    gens = []
    prompt_ids = tok.encode(PROMPT).ids

    def gen(with_bos, sample, seed=None):
        ids = ([0] if with_bos else []) + prompt_ids
        inp = torch.tensor([ids])
        kw = dict(max_new_tokens=100, do_sample=sample, pad_token_id=0, eos_token_id=0)
        if sample:
            torch.manual_seed(seed)
            kw.update(temperature=0.8, top_k=40, top_p=1.0)
        with torch.no_grad():
            o = re_model.generate(inp, attention_mask=torch.ones_like(inp), **kw)
        new = o[0, len(ids):].tolist()
        txt = PROMPT + tok.decode(new, skip_special_tokens=False)
        d = {"prompt": PROMPT, "bos": with_bos, "mode": "sample" if sample else "greedy", "max_new_tokens": 100,
             "prompt_ids": ids, "output_ids": new, "text": txt}
        if sample:
            d.update(seed=seed, temperature=0.8, top_k=40)
        gens.append(d)
        log(f"--- {d['mode']} (bos={with_bos}{', seed=%d' % seed if sample else ''}) ---\n{txt}\n")

    gen(True, False)
    gen(False, False)
    for s in (1, 2, 3):
        gen(True, True, s)

    wall = time.time() - t_start
    result = {
        "validation": dict(ev, protocol=(
            "ids = tokenizer.encode(val_text) in one call, no special tokens; windows ids[256k:256k+256] for "
            "k < floor(len/256), tail dropped; each window run alone from an empty cache at positions 0..255, no BOS; "
            "NLL of tokens 1..255 given preceding tokens of the same window; ppl = exp(mean NLL over all "
            "255*windows predictions); float32, eager attention, checkpoint reloaded from disk")),
        "data": {"path": os.path.basename(args.data), "sha256": corpus_sha, "chars": len(text), "train_chars": len(train_text),
                 "val_chars": len(val_text), "split": "train = text[:int(0.9*len(text))], val = the rest",
                 "train_tokens": len(train_ids)},
        "train": {"steps": step, "batch": BATCH, "seq_len": SEQ_LEN, "tokens_seen": step * BATCH * SEQ_LEN,
                  "final_train_ce": final_ce, "final_train_ce_last_step": hist[-1][0], "final_aux_loss": final_aux,
                  "final_train_loss_total": final_ce + cfg.router_aux_loss_coef * final_aux,
                  "peak_lr": PEAK_LR, "warmup_steps": WARMUP_STEPS, "min_lr_frac": MIN_LR_FRAC,
                  "weight_decay": args.weight_decay, "dropout": args.dropout, "grad_clip": GRAD_CLIP, "bos_rows_per_batch": BOS_ROWS,
                  "seed": args.seed, "threads": args.threads, "budget_minutes": None if args.steps else args.minutes,
                  "train_seconds": train_time,
                  "reproduce": f"--steps {step} --seed {args.seed} --threads {args.threads} "
                               f"--dropout {args.dropout} --weight-decay {args.weight_decay}"},
        "steps": step,
        "final_train_loss": final_ce,
        "perplexity": ev["perplexity"],
        "wall_time_seconds": wall,
        "parameters": n_params,
        "expert_usage": {"counts": usage.tolist(),
                         "fraction": (usage / usage.sum(axis=1, keepdims=True)).round(5).tolist(),
                         "note": "top-2 routing slot counts per layer [layer][expert] over all validation windows"},
        "val_ppl_curve_monitor": val_curve,
        "reload_max_abs_logit_diff": max_diff,
        "rewrote_fused_experts": rewritten,
        "generations": gens,
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
                     "safetensors": safetensors.__version__, "numpy": np.__version__},
    }
    with open(os.path.join(args.out, "eval.json"), "w") as f:
        json.dump(result, f, indent=2)
    log(f"wrote {os.path.join(args.out, 'eval.json')}; total wall time {wall:.0f}s")


if __name__ == "__main__":
    main()
