#!/usr/bin/env python3
"""Generate the tiny MoE reference fixtures under tests/fixtures/.

For each family (mixtral, qwen2_moe, qwen3_moe, olmoe) this script

  1. trains a tiny tokenizer on the public-domain tinyshakespeare corpus,
  2. builds a tiny random-initialised Hugging Face `transformers` model
     (fixed seeds, float32, larger-than-default init so routing/logits are
     not degenerate),
  3. writes a hub-style checkpoint directory  tests/fixtures/<family>/hf/
     (config.json, model.safetensors with per-expert tensors, tokenizer.json,
     tokenizer_config.json, generation_config.json),
  4. records reference outputs (per-position logits, greedy continuation,
     router choices, tokenizer round trips) in tests/fixtures/<family>/reference.json,
  5. converts the checkpoint with llama.cpp's own convert_hf_to_gguf.py
     (--outtype f32) into tests/fixtures/<family>/stock-f32.gguf,
  6. re-loads everything (transformers from the written directory, the GGUF
     with the `gguf` package) and checks it, then writes tests/fixtures/README.md.

Nothing here is needed by CI: the outputs are committed.  Python is dev-only.

How to run (from the repository root):

    python3 -m venv /opt/venv && /opt/venv/bin/pip install -r tools/requirements.txt
    # llama.cpp source (dev tooling only, never committed): the llama-cpp-python
    # sdist vendors it.  `--no-binary llama-cpp-python` (not `:all:`, which would
    # also build cmake/ninja from source just to prepare metadata) fetches the sdist:
    /opt/venv/bin/pip download --no-deps --no-binary llama-cpp-python \
        llama-cpp-python==0.3.36 -d /tmp/llsrc && tar xzf /tmp/llsrc/llama_cpp_python-0.3.36.tar.gz -C /tmp/llsrc
    LLAMA_CPP_DIR=/tmp/llsrc/llama_cpp_python-0.3.36/vendor/llama.cpp \
        /opt/venv/bin/python tools/make_fixtures.py

Options: --families mixtral,olmoe  (subset), --corpus PATH (default
$EDGEMOE_CORPUS or /work/shared/data/tinyshakespeare.txt), --llama-cpp DIR
(default $LLAMA_CPP_DIR), --out DIR (default tests/fixtures), --work DIR
(scratch, default /tmp/edgemoe-fixtures-work), --skip-gguf.

The script is deterministic: re-running it with the same package versions
reproduces byte-identical files (checked by running it twice).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = "/work/shared/data/tinyshakespeare.txt"
LLAMA_CPP_PIP_VERSION = "llama-cpp-python==0.3.36 (vendors ggml-org/llama.cpp@0c1e57098)"

QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# --------------------------------------------------------------------------------------
# Family definitions
# --------------------------------------------------------------------------------------

# 6..12 tokens with every family's tokenizer (asserted); the second has punctuation + newline
PROMPTS = ["The king is dead.", "O, my lord!\nI am", "Now is the winter of our"]

FAMILIES: dict[str, dict] = {
    "mixtral": dict(
        seed=1001,
        arch="MixtralForCausalLM",
        tokenizer="spm_bpe",  # sentencepiece BPE, byte_fallback, Metaspace
        tok_vocab=512,
        config=dict(
            hidden_size=64,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            num_local_experts=8,
            num_experts_per_tok=2,
            max_position_embeddings=2048,
            rms_norm_eps=1e-5,
            rope_theta=1e6,
            tie_word_embeddings=False,
            sliding_window=None,
            router_jitter_noise=0.0,
        ),
        prompts=PROMPTS,
        gguf_pre=None,  # sentencepiece path, no BPE pre-tokenizer hash check
    ),
    "qwen2_moe": dict(
        seed=2002,
        arch="Qwen2MoeForCausalLM",
        tokenizer="qwen2_bpe",
        tok_vocab=700,  # BPE vocab (256 bytes + merges); 3 special tokens appended after
        vocab_pad_to=768,  # config.vocab_size > tokenizer size, like real Qwen checkpoints
        config=dict(
            hidden_size=64,
            intermediate_size=128,
            moe_intermediate_size=64,
            shared_expert_intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            num_experts=8,
            num_experts_per_tok=4,
            norm_topk_prob=False,
            decoder_sparse_step=1,
            mlp_only_layers=[],
            qkv_bias=True,
            max_position_embeddings=2048,
            rms_norm_eps=1e-6,
            rope_theta=1e6,
            tie_word_embeddings=False,
            use_sliding_window=False,
        ),
        prompts=PROMPTS,
        gguf_pre="qwen2",
    ),
    "qwen3_moe": dict(
        seed=3003,
        arch="Qwen3MoeForCausalLM",
        tokenizer="qwen2_bpe",
        tok_vocab=600,
        vocab_pad_to=None,
        # tied embeddings make random models echo their input token; louder blocks avoid that
        init=dict(experts=0.2, out_proj=0.16),
        config=dict(
            hidden_size=64,
            intermediate_size=128,
            moe_intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=32,  # explicit, != hidden_size / num_attention_heads (16)
            num_experts=8,
            num_experts_per_tok=2,
            norm_topk_prob=True,
            decoder_sparse_step=1,
            mlp_only_layers=[],
            attention_bias=False,
            max_position_embeddings=2048,
            rms_norm_eps=1e-6,
            rope_theta=1e6,
            tie_word_embeddings=True,
            use_sliding_window=False,
        ),
        prompts=PROMPTS,
        gguf_pre="qwen2",
    ),
    "olmoe": dict(
        seed=4004,
        arch="OlmoeForCausalLM",
        tokenizer="neox_bpe",
        tok_vocab=511,  # includes <|endoftext|>=0 and <|padding|>=1; +1 added token at the end
        config=dict(
            hidden_size=64,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            num_experts=16,
            num_experts_per_tok=4,
            norm_topk_prob=False,
            max_position_embeddings=2048,
            rms_norm_eps=1e-5,  # llama.cpp's converter hard-codes 1e-5 for OLMoE
            rope_theta=10000.0,
            tie_word_embeddings=False,
            attention_bias=False,
            clip_qkv=None,
        ),
        prompts=PROMPTS,
        gguf_pre="olmo",
    ),
}

TOKENIZER_CASES = [
    "Hello world",
    "To be, or not to be: that is the question.",
    "café, niño, über",
    "日本語",
    "中文",
    "🙂",
    "👍🏽 thumbs",
    "a  b   c\t\td\n\n e",
    " leading space",
    "   three leading spaces",
    "",
    "Numbers 12345 and 3.14159",
    "I'll say 'twas ROMEO's DOING!",
    "trailing space ",
    "\n\nnewlines first",
]
# family-specific extra cases exercising special / added tokens inside text
EXTRA_TOKENIZER_CASES = {
    "mixtral": ["<s>Hello</s>"],
    "qwen2_moe": ["<|im_start|>user\nhi<|im_end|><|endoftext|>"],
    "qwen3_moe": ["<|im_start|>user\nhi<|im_end|><|endoftext|>"],
    "olmoe": ["call |||IP_ADDRESS||| now<|endoftext|>"],
}

N_GREEDY = 16


# --------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------

def sig6(x: float) -> float:
    """Round to 6 significant digits (returns a python float)."""
    if x == 0.0 or not math.isfinite(x):
        return float(x)
    return float(f"{x:.6g}")


def dump_json(obj, path: Path):
    """JSON with 1-space indentation but every list of scalars on a single line."""
    def enc(o, ind):
        pad = " " * ind
        if isinstance(o, dict):
            if not o:
                return "{}"
            items = [f'{pad} {json.dumps(k, ensure_ascii=False)}: {enc(v, ind + 1)}' for k, v in o.items()]
            return "{\n" + ",\n".join(items) + "\n" + pad + "}"
        if isinstance(o, list):
            if all(not isinstance(v, (dict, list)) for v in o):
                return "[" + ",".join(json.dumps(v, ensure_ascii=False) for v in o) + "]"
            items = [pad + " " + enc(v, ind + 1) for v in o]
            return "[\n" + ",\n".join(items) + "\n" + pad + "]"
        return json.dumps(o, ensure_ascii=False)
    path.write_text(enc(obj, 0) + "\n", encoding="utf-8")


def sha256_file(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def log(msg: str):
    print(f"[make_fixtures] {msg}", flush=True)


# --------------------------------------------------------------------------------------
# Tokenizers
# --------------------------------------------------------------------------------------

def corpus_chunks(text: str, n: int = 4000):
    return [text[i:i + n] for i in range(0, len(text), n)]


def build_tokenizer(family: str, spec: dict, corpus: str, work: Path, hf_dir: Path):
    """Train a tokenizer and save HF tokenizer files into hf_dir. Returns (tokenizer, extra)."""
    from transformers import AutoTokenizer

    kind = spec["tokenizer"]
    tdir = work / "tokenizer_src"
    if tdir.exists():
        shutil.rmtree(tdir)
    tdir.mkdir(parents=True)
    extra = {}

    if kind == "spm_bpe":
        import sentencepiece as spm
        from transformers import LlamaTokenizer

        lines = [ln for ln in corpus.splitlines() if ln.strip()]
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines),
            model_prefix=str(tdir / "tokenizer"),
            model_type="bpe",
            vocab_size=spec["tok_vocab"],
            byte_fallback=True,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            add_dummy_prefix=True,
            split_digits=True,
            allow_whitespace_only_pieces=True,
            unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
            character_coverage=1.0,
            num_threads=1,
            max_sentencepiece_length=16,
            minloglevel=2,
        )
        for f in ("tokenizer.vocab",):
            (tdir / f).unlink(missing_ok=True)
        tok = LlamaTokenizer.from_pretrained(str(tdir), add_bos_token=True, add_eos_token=False, legacy=False)
        tok.save_pretrained(str(hf_dir))
        # keep tokenizer.model (only) in the scratch dir for llama.cpp's converter
        extra["spm_model"] = tdir / "tokenizer.model"
    elif kind in ("qwen2_bpe", "neox_bpe"):
        from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

        bpe = models.BPE(dropout=None, unk_token=None, continuing_subword_prefix="", end_of_word_suffix="",
                         fuse_unk=False, byte_fallback=False)
        t = Tokenizer(bpe)
        t.normalizer = normalizers.NFC()
        if kind == "qwen2_bpe":
            t.pre_tokenizer = pre_tokenizers.Sequence([
                pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ])
            t.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
            specials_train = []
        else:  # GPT-NeoX style
            t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
            t.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
            specials_train = ["<|endoftext|>", "<|padding|>"]
        t.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=spec["tok_vocab"], min_frequency=2, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      special_tokens=specials_train)
        t.train_from_iterator(corpus_chunks(corpus), trainer=trainer)
        if kind == "qwen2_bpe":
            t.add_special_tokens([AddedToken(s, special=True, normalized=False)
                                  for s in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")])
            if family == "qwen3_moe":
                cfg = {"tokenizer_class": "Qwen2Tokenizer", "bos_token": None, "eos_token": "<|im_end|>",
                       "pad_token": "<|endoftext|>", "unk_token": None}
            else:
                cfg = {"tokenizer_class": "Qwen2Tokenizer", "bos_token": None, "eos_token": "<|endoftext|>",
                       "pad_token": "<|endoftext|>", "unk_token": None}
            cfg.update({"add_prefix_space": False, "clean_up_tokenization_spaces": False, "errors": "replace",
                        "model_max_length": 32768, "split_special_tokens": False})
        else:
            # OLMoE's real tokenizer also has non-special added tokens like |||IP_ADDRESS|||
            t.add_tokens([AddedToken("|||IP_ADDRESS|||", special=False, normalized=False)])
            cfg = {"tokenizer_class": "GPTNeoXTokenizer", "bos_token": None, "eos_token": "<|endoftext|>",
                   "pad_token": "<|padding|>", "unk_token": None, "add_bos_token": False, "add_eos_token": False,
                   "add_prefix_space": False, "clean_up_tokenization_spaces": False, "errors": "replace",
                   "model_max_length": 4096}
        t.save(str(tdir / "tokenizer.json"))
        (tdir / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))
        tok = AutoTokenizer.from_pretrained(str(tdir))
        tok.save_pretrained(str(hf_dir))
    else:
        raise ValueError(kind)

    # strip loader artefacts that transformers v5 writes back (not part of a real hub file)
    tc_path = hf_dir / "tokenizer_config.json"
    tc = json.loads(tc_path.read_text())
    for k in ("is_local", "local_files_only", "name_or_path"):
        tc.pop(k, None)
    if kind == "spm_bpe":
        # real Llama/Mistral tokenizer_config.json files state this explicitly
        tc["add_bos_token"] = True
        tc["add_eos_token"] = False
    elif kind == "neox_bpe":
        # as in OLMoE's tokenizer_config.json (transformers v5 drops them on save)
        tc["add_bos_token"] = False
        tc["add_eos_token"] = False
    tc_path.write_text(json.dumps(tc, indent=2, ensure_ascii=False, sort_keys=True) + "\n")
    for stray in ("special_tokens_map.json", "chat_template.jinja", "added_tokens.json"):
        (hf_dir / stray).unlink(missing_ok=True)

    tok = AutoTokenizer.from_pretrained(str(hf_dir))
    return tok, extra


def check_tokenizer_consistency(tok, hf_dir: Path, corpus: str, texts: list[str]) -> dict:
    """HF AutoTokenizer vs raw tokenizers.Tokenizer(tokenizer.json): must be identical."""
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
    sample = texts + corpus.splitlines()[:3000:7] + corpus.split("\n\n")[:200:5]
    n = 0
    for s in sample:
        for add in (False, True):
            a = tok.encode(s, add_special_tokens=add)
            b = raw.encode(s, add_special_tokens=add).ids
            if a != b:
                raise AssertionError(f"AutoTokenizer and tokenizer.json disagree on {s!r} (add_special_tokens={add}): {a} vs {b}")
            n += 1
        ids = tok.encode(s, add_special_tokens=False)
        if tok.decode(ids) != raw.decode(ids, skip_special_tokens=False):
            raise AssertionError(f"decode mismatch for {s!r}")
    return {"strings_checked": len(sample), "encodings_compared": n}


# --------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------

def make_config(family: str, spec: dict, tok):
    from transformers import MixtralConfig, OlmoeConfig, Qwen2MoeConfig, Qwen3MoeConfig

    c = dict(spec["config"])
    rope_theta = c.pop("rope_theta")
    n_tok = len(tok)
    vocab_size = spec.get("vocab_pad_to") or n_tok
    assert vocab_size >= n_tok
    ids = {}
    if family == "mixtral":
        ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=None)
        cls = MixtralConfig
    elif family == "qwen2_moe":
        eot = tok.convert_tokens_to_ids("<|endoftext|>")
        ids = dict(bos_token_id=eot, eos_token_id=eot, pad_token_id=None)
        cls = Qwen2MoeConfig
    elif family == "qwen3_moe":
        ids = dict(bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
                   eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"), pad_token_id=None)
        cls = Qwen3MoeConfig
    elif family == "olmoe":
        ids = dict(bos_token_id=None, eos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
                   pad_token_id=tok.convert_tokens_to_ids("<|padding|>"))
        cls = OlmoeConfig
    cfg = cls(vocab_size=vocab_size, rope_parameters={"rope_type": "default", "rope_theta": rope_theta},
              initializer_range=0.02, **ids, **c)
    cfg.architectures = [spec["arch"]]
    return cfg


INIT_DEFAULT = dict(norm=0.1, bias=0.1, embed=0.1, lm_head=0.1, router=0.25, experts=0.1, proj=0.08, out_proj=0.08)


def init_weights(model, seed: int, overrides: dict | None = None):
    """Deterministic, deliberately 'loud' init so routing and logits are not degenerate.
    Norm weights ~ 1 + norm*N(0,1); biases ~ bias*N(0,1); every other weight ~ std*N(0,1)."""
    import torch

    s = dict(INIT_DEFAULT, **(overrides or {}))
    g = torch.Generator().manual_seed(seed)

    def randn(shape):
        return torch.randn(shape, generator=g, dtype=torch.float32)

    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if name.endswith("norm.weight") or "layernorm" in name:
                p.copy_(1.0 + s["norm"] * randn(p.shape))
            elif name.endswith(".bias"):
                p.copy_(s["bias"] * randn(p.shape))
            elif name.endswith("embed_tokens.weight"):
                p.copy_(s["embed"] * randn(p.shape))
            elif name.endswith("lm_head.weight"):
                p.copy_(s["lm_head"] * randn(p.shape))
            elif name.endswith(("mlp.gate.weight", "shared_expert_gate.weight")):
                p.copy_(s["router"] * randn(p.shape))  # routers / shared-expert gate
            elif "experts" in name:
                p.copy_(s["experts"] * randn(p.shape))
            elif name.endswith("o_proj.weight"):
                p.copy_(s["out_proj"] * randn(p.shape))
            else:  # q/k/v projections and shared-expert projections
                p.copy_(s["proj"] * randn(p.shape))


def load_model(path_or_cfg, from_config: bool):
    import torch
    from transformers import AutoModelForCausalLM

    kw = dict(attn_implementation="eager", experts_implementation="eager", dtype=torch.float32)
    if from_config:
        m = AutoModelForCausalLM.from_config(path_or_cfg, **kw)
    else:
        m = AutoModelForCausalLM.from_pretrained(str(path_or_cfg), **kw)
    m.eval()
    return m


def hubify_config(cfg_path: Path, family: str):
    """Rewrite transformers-v5 style config.json keys into the classic hub style
    (rope_theta at top level, torch_dtype) that real hub checkpoints of these families use."""
    d = json.loads(cfg_path.read_text())
    native = dict(d)
    rp = d.pop("rope_parameters", None)
    if rp is not None:
        assert set(rp) <= {"rope_type", "rope_theta"} and rp.get("rope_type", "default") == "default", rp
        d["rope_theta"] = rp["rope_theta"]
        d["rope_scaling"] = None
    if "dtype" in d:
        d["torch_dtype"] = d.pop("dtype")
    if d.get("head_dim", 0) is None:
        d.pop("head_dim")
    if family == "qwen2_moe":
        d.pop("layer_types", None)  # v5-only; hub Qwen1.5-MoE configs do not have it
        d.pop("qkv_bias", None)  # v5-only; Qwen2-MoE always has q/k/v biases (default True)
    if family == "qwen3_moe" and "num_local_experts" in d:
        d["num_experts"] = d.pop("num_local_experts")  # hub Qwen3-MoE configs use num_experts
    for k in ("experts_implementation", "_experts_implementation", "attn_implementation", "_attn_implementation"):
        d.pop(k, None)
    cfg_path.write_text(json.dumps(d, indent=2, sort_keys=True) + "\n")
    return native


HUB_EXPERT_NAMES = {
    # family -> (prefix inside a layer, gate name, up name, down name)
    "mixtral": ("block_sparse_moe", "w1", "w3", "w2"),
    "qwen2_moe": ("mlp", "gate_proj", "up_proj", "down_proj"),
    "qwen3_moe": ("mlp", "gate_proj", "up_proj", "down_proj"),
    "olmoe": ("mlp", "gate_proj", "up_proj", "down_proj"),
}


def to_hub_state_dict(model, family: str) -> dict:
    """Classic per-expert hub layout built from the in-memory (possibly fused) model."""
    sd = {}
    pre, gname, uname, dname = HUB_EXPERT_NAMES[family]
    tied = bool(model.config.tie_word_embeddings)
    for k, v in model.state_dict().items():
        v = v.detach().to("cpu").contiguous()
        if tied and k == "lm_head.weight":
            continue
        m = re.match(r"model\.layers\.(\d+)\.mlp\.experts\.(gate_up_proj|down_proj)$", k)
        if m:
            L, which = int(m.group(1)), m.group(2)
            E = v.shape[0]
            for e in range(E):
                if which == "gate_up_proj":
                    inter = v.shape[1] // 2
                    sd[f"model.layers.{L}.{pre}.experts.{e}.{gname}.weight"] = v[e, :inter].clone()
                    sd[f"model.layers.{L}.{pre}.experts.{e}.{uname}.weight"] = v[e, inter:].clone()
                else:
                    sd[f"model.layers.{L}.{pre}.experts.{e}.{dname}.weight"] = v[e].clone()
            continue
        if family == "mixtral":
            k = k.replace(".mlp.gate.", ".block_sparse_moe.gate.")
        sd[k] = v
    return sd


def save_checkpoint(model, family: str, hf_dir: Path, work: Path) -> dict:
    """save_pretrained(), inspect what transformers wrote natively, then ensure hub per-expert layout."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    native_dir = work / "native_save"
    if native_dir.exists():
        shutil.rmtree(native_dir)
    model.save_pretrained(str(native_dir))
    with safe_open(str(native_dir / "model.safetensors"), "pt") as f:
        native_keys = sorted(f.keys())
        native_shapes = {k: list(f.get_slice(k).get_shape()) for k in native_keys}
    fused = [k for k in native_keys if k.endswith("gate_up_proj") or re.search(r"experts\.(down|gate_up)_proj$", k)]
    per_expert = [k for k in native_keys if re.search(r"experts\.\d+\.", k)]
    native_layout = "fused-3d" if fused else ("per-expert" if per_expert else "unknown")

    hub_sd = to_hub_state_dict(model, family)
    # compare to what transformers wrote natively
    same_as_native = set(hub_sd) == set(native_keys)
    if same_as_native:
        with safe_open(str(native_dir / "model.safetensors"), "pt") as f:
            for k in native_keys:
                if not torch.equal(f.get_tensor(k), hub_sd[k]):
                    same_as_native = False
                    break
    for name in ("config.json", "generation_config.json"):
        shutil.copyfile(native_dir / name, hf_dir / name)
    if same_as_native:
        shutil.copyfile(native_dir / "model.safetensors", hf_dir / "model.safetensors")
        written_by = "transformers save_pretrained (already per-expert hub layout)"
    else:
        save_file(hub_sd, str(hf_dir / "model.safetensors"), metadata={"format": "pt"})
        written_by = "rewritten by make_fixtures.py into per-expert hub layout"
    return {
        "native_layout": native_layout,
        "native_expert_keys_example": (fused or per_expert)[:3],
        "native_num_tensors": len(native_keys),
        "hub_layout_identical_to_native": same_as_native,
        "written_by": written_by,
        "native_shapes_example": {k: native_shapes[k] for k in (fused or per_expert)[:3]},
    }


# --------------------------------------------------------------------------------------
# Reference outputs
# --------------------------------------------------------------------------------------

class RouterRecorder:
    def __init__(self, model):
        self.handles = []
        self.records = {}
        routers = [(n, m) for n, m in model.named_modules() if type(m).__name__.endswith("TopKRouter")]
        assert routers, "no router modules found"
        for n, m in routers:
            layer = int(re.search(r"layers\.(\d+)\.", n).group(1))
            self.handles.append(m.register_forward_hook(self._hook(layer)))
        self.n_layers = len(routers)

    def _hook(self, layer):
        def fn(mod, inp, out):
            logits, scores, idx = out
            self.records[layer] = (logits.detach().clone(), scores.detach().clone(), idx.detach().clone())
        return fn

    def clear(self):
        self.records = {}

    def remove(self):
        for h in self.handles:
            h.remove()


def greedy_generate(model, ids: list[int], pad_id: int):
    import torch
    from transformers import GenerationConfig

    gc = GenerationConfig(do_sample=False, max_new_tokens=N_GREEDY, min_new_tokens=0, eos_token_id=None,
                          pad_token_id=pad_id, bos_token_id=None, num_beams=1, temperature=None, top_p=None,
                          top_k=None, repetition_penalty=None)
    saved_eos = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = None
    try:
        x = torch.tensor([ids])
        out = model.generate(x, attention_mask=torch.ones_like(x), generation_config=gc)
    finally:
        model.generation_config.eos_token_id = saved_eos
    new = out[0, len(ids):].tolist()
    assert len(new) == N_GREEDY, new
    # independent check: full recompute argmax loop (no KV cache)
    seq = list(ids)
    for _ in range(N_GREEDY):
        lg = model(torch.tensor([seq])).logits[0, -1]
        seq.append(int(torch.argmax(lg)))
    assert seq[len(ids):] == new, (seq[len(ids):], new)
    return new


def compute_reference(model, tok, spec: dict, family: str) -> dict:
    import torch

    rec = RouterRecorder(model)
    prompts = []
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    with torch.no_grad():
        for text in spec["prompts"]:
            ids = tok.encode(text)  # default add_special_tokens=True
            plain = tok.encode(text, add_special_tokens=False)
            add_bos = len(ids) == len(plain) + 1 and ids[0] == tok.bos_token_id
            assert ids == ([tok.bos_token_id] if add_bos else []) + plain
            assert 6 <= len(ids) <= 12, (family, text, len(ids), ids)
            rec.clear()
            out = model(torch.tensor([ids]))
            logits = out.logits[0].float()
            router, router_w, router_logits = [], [], []
            for L in range(rec.n_layers):
                lg, sc, ix = rec.records[L]
                router.append(ix.tolist())
                router_w.append([[sig6(v) for v in row] for row in sc.float().tolist()])
                router_logits.append([[sig6(v) for v in row] for row in lg.float().tolist()])
            greedy = greedy_generate(model, ids, pad_id)
            prompts.append({
                "text": text,
                "add_bos": add_bos,
                "ids": ids,
                "n_tokens": len(ids),
                "logits": [[sig6(v) for v in row] for row in logits.tolist()],
                "argmax": [int(i) for i in torch.argmax(logits, dim=-1).tolist()],
                "greedy": greedy,
                "greedy_text": tok.decode(greedy),
                "router": router,
                "router_weights": router_w,
                "router_logits": router_logits,
            })
    rec.remove()
    return prompts


def tokenizer_cases(tok, family: str, spm_model: Path | None):
    cases = []
    sp = None
    if spm_model is not None:
        import sentencepiece as spm
        sp = spm.SentencePieceProcessor(model_file=str(spm_model))
    for text in TOKENIZER_CASES + EXTRA_TOKENIZER_CASES.get(family, []):
        ids = tok.encode(text, add_special_tokens=False)
        c = {"text": text, "ids": ids, "tokens": tok.convert_ids_to_tokens(ids), "decoded": tok.decode(ids)}
        if sp is not None:
            c["sentencepiece_ids"] = sp.encode(text)
        cases.append(c)
    return cases


def sanity_checks(prompts: list[dict], cfg) -> dict:
    n_exp = getattr(cfg, "num_local_experts", None) or cfg.num_experts
    info = {}
    for p in prompts:
        g = p["greedy"]
        distinct = len(set(g))
        most = max(g.count(t) for t in set(g))
        assert distinct >= 6 and most <= 6, f"degenerate greedy continuation {g}"
    used_per_layer = []
    for L in range(cfg.num_hidden_layers):
        used = set()
        for p in prompts:
            for row in p["router"][L]:
                used.update(row)
        used_per_layer.append(len(used))
        assert len(used) >= math.ceil(0.75 * n_exp), f"layer {L} uses only experts {sorted(used)}"
    info["distinct_experts_used_per_layer"] = used_per_layer
    info["distinct_greedy_tokens"] = [len(set(p["greedy"])) for p in prompts]
    return info


# --------------------------------------------------------------------------------------
# GGUF conversion (runs llama.cpp's converter in a clean subprocess)
# --------------------------------------------------------------------------------------

def convert_worker(argv: list[str]):
    """Entry point of the subprocess: import llama.cpp's converter (with its own gguf-py),
    monkeypatch the pre-tokenizer hash lookup, and run its main()."""
    llama_dir, model_dir, outfile, pre = argv
    sys.path.insert(0, llama_dir)
    import convert_hf_to_gguf  # noqa: E402  (inserts llama.cpp's gguf-py into sys.path)
    from conversion import base  # noqa: E402

    if pre and pre != "-":
        def get_vocab_base_pre(self, tokenizer, _pre=pre):
            base.logger.info(f"edgemoe make_fixtures: tokenizer.ggml.pre forced to {_pre!r}")
            return _pre
        base.TextModel.get_vocab_base_pre = get_vocab_base_pre
    sys.argv = ["convert_hf_to_gguf.py", model_dir, "--outtype", "f32", "--outfile", outfile]
    convert_hf_to_gguf.main()


def convert_to_gguf(family: str, spec: dict, hf_dir: Path, work: Path, llama_dir: Path, out_path: Path,
                    spm_model: Path | None) -> str:
    conv_dir = work / f"edgemoe-tiny-{family.replace('_', '-')}"
    if conv_dir.exists():
        shutil.rmtree(conv_dir)
    shutil.copytree(hf_dir, conv_dir)
    if spm_model is not None:
        shutil.copy(spm_model, conv_dir / "tokenizer.model")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--convert-worker", str(llama_dir), str(conv_dir),
           str(out_path), spec["gguf_pre"] or "-"]
    env = dict(os.environ)
    env.pop("NO_LOCAL_GGUF", None)
    env["PYTHONHASHSEED"] = "0"
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    logp = work / f"convert-{family}.log"
    logp.write_text(r.stdout + "\n" + r.stderr)
    if r.returncode != 0:
        raise RuntimeError(f"convert_hf_to_gguf failed for {family}, see {logp}\n{r.stderr[-3000:]}")
    return r.stderr


def inspect_gguf(path: Path) -> dict:
    import gguf
    import numpy as np

    rd = gguf.GGUFReader(str(path))
    meta = {}
    for name, field in rd.fields.items():
        if name.startswith("GGUF."):
            continue
        t = field.types
        if not t:
            continue
        if t[0] == gguf.GGUFValueType.ARRAY:
            n = len(field.data)
            sub = t[-1]
            if sub == gguf.GGUFValueType.STRING:
                vals = [bytes(field.parts[i]).decode("utf-8", errors="replace") for i in field.data[:3]]
            else:
                vals = [field.parts[i].tolist()[0] for i in field.data[:3]]
            meta[name] = {"type": f"array[{sub.name.lower()}]", "len": n, "first": vals}
            if name == "tokenizer.ggml.token_type":
                counts = {}
                for i in field.data:
                    v = int(field.parts[i][0])
                    counts[v] = counts.get(v, 0) + 1
                meta[name]["counts"] = {str(k): counts[k] for k in sorted(counts)}
        elif t[0] == gguf.GGUFValueType.STRING:
            s = bytes(field.parts[field.data[0]]).decode("utf-8", errors="replace")
            meta[name] = {"type": "string", "value": s if len(s) < 200 else s[:200] + "..."}
        else:
            meta[name] = {"type": t[0].name.lower(), "value": field.parts[field.data[0]].tolist()[0]}
    tensors = []
    arrays = {}
    for ti in rd.tensors:
        tensors.append({"name": ti.name, "shape": [int(x) for x in ti.shape], "type": ti.tensor_type.name})
        arrays[ti.name] = np.array(ti.data)
    return {"metadata": meta, "tensors": tensors, "arrays": arrays}


def llama_permute(w, n_head: int, n_head_kv: int):
    """llama.cpp convert_hf_to_gguf LlamaModel.permute (HF rotate-half -> interleaved rope layout)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def map_gguf_to_hf(family: str, cfg, sd: dict, arrays: dict) -> dict:
    """Check every GGUF tensor against the HF checkpoint tensors; report q/k permutation."""
    import numpy as np

    pre, gname, uname, dname = HUB_EXPERT_NAMES[family]
    n_head, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
    n_exp = getattr(cfg, "num_local_experts", None) or cfg.num_experts
    res = {"checked": 0, "qk_permuted": None, "unmatched": []}

    def hf(name):
        return sd[name].numpy()

    for gname_, arr in arrays.items():
        m = re.match(r"blk\.(\d+)\.(.+)$", gname_)
        exp = None
        permuted = False
        if gname_ == "token_embd.weight":
            exp = hf("model.embed_tokens.weight")
        elif gname_ == "output_norm.weight":
            exp = hf("model.norm.weight")
        elif gname_ == "output.weight":
            exp = hf("lm_head.weight")
        elif m:
            L, rest = int(m.group(1)), m.group(2)
            p = f"model.layers.{L}."
            simple = {
                "attn_norm.weight": "input_layernorm.weight",
                "ffn_norm.weight": "post_attention_layernorm.weight",
                "attn_q.weight": "self_attn.q_proj.weight", "attn_k.weight": "self_attn.k_proj.weight",
                "attn_v.weight": "self_attn.v_proj.weight", "attn_output.weight": "self_attn.o_proj.weight",
                "attn_q.bias": "self_attn.q_proj.bias", "attn_k.bias": "self_attn.k_proj.bias",
                "attn_v.bias": "self_attn.v_proj.bias",
                "attn_q_norm.weight": "self_attn.q_norm.weight", "attn_k_norm.weight": "self_attn.k_norm.weight",
                "ffn_gate_inp.weight": f"{pre}.gate.weight",
                "ffn_gate_shexp.weight": "mlp.shared_expert.gate_proj.weight",
                "ffn_up_shexp.weight": "mlp.shared_expert.up_proj.weight",
                "ffn_down_shexp.weight": "mlp.shared_expert.down_proj.weight",
                "ffn_gate_inp_shexp.weight": "mlp.shared_expert_gate.weight",
            }
            if rest in simple:
                exp = hf(p + simple[rest])
                if family == "mixtral" and rest in ("attn_q.weight", "attn_k.weight"):
                    q_perm = llama_permute(exp, n_head, n_head if rest == "attn_q.weight" else n_kv)
                    if np.array_equal(arr.reshape(q_perm.shape), q_perm):
                        exp, permuted = q_perm, True
                if rest == "ffn_gate_inp_shexp.weight":
                    exp = exp.reshape(-1)
            elif rest in ("ffn_gate_exps.weight", "ffn_up_exps.weight", "ffn_down_exps.weight"):
                which = {"ffn_gate_exps.weight": gname, "ffn_up_exps.weight": uname,
                         "ffn_down_exps.weight": dname}[rest]
                exp = np.stack([hf(f"{p}{pre}.experts.{e}.{which}.weight") for e in range(n_exp)])
        if exp is None:
            res["unmatched"].append(gname_)
            continue
        if arr.shape != exp.shape and arr.size == exp.size:
            arr = arr.reshape(exp.shape)
        if not (arr.shape == exp.shape and np.array_equal(arr, exp)):
            res["unmatched"].append(gname_)
            continue
        res["checked"] += 1
        if gname_.endswith(("attn_q.weight", "attn_k.weight")):
            res["qk_permuted"] = permuted if res["qk_permuted"] in (None, permuted) else "mixed"
    return res


# --------------------------------------------------------------------------------------
# Main per-family pipeline
# --------------------------------------------------------------------------------------

def run_family(family: str, args, corpus: str, versions: dict) -> dict:
    import torch
    import transformers
    from safetensors import safe_open

    spec = FAMILIES[family]
    out_dir = Path(args.out) / family
    hf_dir = out_dir / "hf"
    work = Path(args.work) / family
    for d in (hf_dir, work):
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
    for f in ("reference.json", "stock-f32.gguf"):
        (out_dir / f).unlink(missing_ok=True)

    log(f"{family}: training tokenizer")
    torch.manual_seed(spec["seed"])
    tok, extra = build_tokenizer(family, spec, corpus, work, hf_dir)
    tok_check = check_tokenizer_consistency(tok, hf_dir, corpus,
                                            TOKENIZER_CASES + EXTRA_TOKENIZER_CASES.get(family, []) + spec["prompts"])

    log(f"{family}: building model")
    cfg = make_config(family, spec, tok)
    # Deterministic search over init seeds (spec seed, +1, +2, ...) until the random model is
    # "interesting": greedy continuations not collapsing to one token, routers using many experts.
    for attempt in range(32):
        init_seed = spec["seed"] + attempt
        torch.manual_seed(init_seed)
        model = load_model(cfg, from_config=True)
        init_weights(model, init_seed, spec.get("init"))
        model.generation_config.bos_token_id = cfg.bos_token_id
        model.generation_config.eos_token_id = cfg.eos_token_id
        model.generation_config.pad_token_id = cfg.pad_token_id
        log(f"{family}: computing reference outputs (init seed {init_seed})")
        prompts = compute_reference(model, tok, spec, family)
        try:
            checks = sanity_checks(prompts, cfg)
            break
        except AssertionError as e:
            log(f"{family}: init seed {init_seed} rejected: {e}")
    else:
        raise RuntimeError(f"{family}: no acceptable init seed found")
    checks["init_seed"] = init_seed

    save_info = save_checkpoint(model, family, hf_dir, work)
    native_cfg = hubify_config(hf_dir / "config.json", family)

    # ---- reload the written checkpoint + tokenizer and check exact reproduction
    from transformers import AutoTokenizer
    tok2 = AutoTokenizer.from_pretrained(str(hf_dir))
    m2 = load_model(hf_dir, from_config=False)
    rp = m2.config.rope_parameters
    assert abs(rp["rope_theta"] - spec["config"]["rope_theta"]) < 1e-6, rp
    max_diff = 0.0
    with torch.no_grad():
        for p in prompts:
            assert tok2.encode(p["text"]) == p["ids"]
            lg = m2(torch.tensor([p["ids"]])).logits[0]
            ref = torch.tensor(p["logits"])
            max_diff = max(max_diff, float((lg - ref).abs().max()))
            assert torch.equal(torch.argmax(lg, -1), torch.tensor(p["argmax"]))
        sd1 = model.state_dict()
        sd2 = m2.state_dict()
        assert set(sd1) == set(sd2)
        for k in sd1:
            assert torch.equal(sd1[k], sd2[k]), k
        # exact (unrounded) logits equality between the in-memory and reloaded models
        exact = all(torch.equal(model(torch.tensor([p["ids"]])).logits, m2(torch.tensor([p["ids"]])).logits)
                    for p in prompts)
        assert exact, "reloaded model logits differ"
        assert greedy_generate(m2, prompts[0]["ids"], tok.pad_token_id or 0) == prompts[0]["greedy"]
        # default (grouped_mm) experts implementation, for information only
        from transformers import AutoModelForCausalLM
        m3 = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32, attn_implementation="eager").eval()
        gm_diff = max(float((m3(torch.tensor([p["ids"]])).logits[0] - m2(torch.tensor([p["ids"]])).logits[0]).abs().max())
                      for p in prompts)
        del m3
    assert max_diff < 5e-5, max_diff

    with safe_open(str(hf_dir / "model.safetensors"), "pt") as f:
        st_keys = sorted(f.keys())
        st_sd = {k: f.get_tensor(k) for k in st_keys}
        st_tensors = [{"name": k, "shape": list(st_sd[k].shape), "dtype": str(st_sd[k].dtype).replace("torch.", "")}
                      for k in st_keys]

    hp = cfg.to_dict()
    n_exp = getattr(cfg, "num_local_experts", None) or cfg.num_experts
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    hyper = {
        "architecture": spec["arch"],
        "model_type": cfg.model_type,
        "vocab_size": cfg.vocab_size,
        "tokenizer_size": len(tok),
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads,
        "head_dim": head_dim,
        "num_experts": n_exp,
        "num_experts_per_tok": cfg.num_experts_per_tok,
        "expert_intermediate_size": hp.get("moe_intermediate_size") or hp.get("intermediate_size"),
        "shared_expert_intermediate_size": hp.get("shared_expert_intermediate_size"),
        "norm_topk_prob": hp.get("norm_topk_prob", True if family == "mixtral" else None),
        "rope_theta": spec["config"]["rope_theta"],
        "rms_norm_eps": cfg.rms_norm_eps,
        "tie_word_embeddings": bool(cfg.tie_word_embeddings),
        "qkv_bias": bool(hp.get("qkv_bias", hp.get("attention_bias", False))),
        "qk_norm": {"qwen3_moe": "per-head (RMSNorm over head_dim)",
                    "olmoe": "whole projection (RMSNorm over n_heads*head_dim / n_kv_heads*head_dim)"}.get(family),
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": cfg.eos_token_id,
        "pad_token_id": cfg.pad_token_id,
        "max_position_embeddings": cfg.max_position_embeddings,
        "hidden_act": cfg.hidden_act,
        "init_seed": init_seed,
    }

    reference = {
        "family": family,
        "format_version": 1,
        "versions": versions,
        "dtype": "float32",
        "attn_implementation": "eager",
        "experts_implementation": "eager",
        "hyperparameters": hyper,
        "add_bos": prompts[0]["add_bos"],
        "n_greedy": N_GREEDY,
        "prompts": prompts,
        "tokenizer_cases": tokenizer_cases(tok, family, extra.get("spm_model")),
    }
    dump_json(reference, out_dir / "reference.json")

    # ---- GGUF
    gguf_info = None
    if not args.skip_gguf:
        log(f"{family}: converting with llama.cpp convert_hf_to_gguf.py --outtype f32")
        convert_to_gguf(family, spec, hf_dir, work, Path(args.llama_cpp), out_dir / "stock-f32.gguf",
                        extra.get("spm_model"))
        gi = inspect_gguf(out_dir / "stock-f32.gguf")
        st_sd_np = {k: v for k, v in st_sd.items()}
        mapping = map_gguf_to_hf(family, cfg, st_sd_np, gi.pop("arrays"))
        assert not mapping["unmatched"], mapping
        gguf_info = {**gi, "tensor_check": mapping}

    # ---- final summary for README
    files = {}
    for p in sorted(out_dir.rglob("*")):
        if p.is_file():
            files[str(p.relative_to(out_dir))] = {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
    summary = {
        "family": family,
        "hyperparameters": hyper,
        "save_info": save_info,
        "native_config_keys": sorted(native_cfg),
        "tokenizer_check": tok_check,
        "tokenizer_class": json.loads((hf_dir / "tokenizer_config.json").read_text()).get("tokenizer_class"),
        "tokenizer_json_summary": summarize_tokenizer_json(hf_dir / "tokenizer.json"),
        "safetensors_tensors": st_tensors,
        "reload_max_abs_logit_diff_vs_rounded_reference": max_diff,
        "grouped_mm_vs_eager_max_abs_logit_diff": gm_diff,
        "checks": checks,
        "prompt_token_counts": [p["n_tokens"] for p in prompts],
        "gguf": gguf_info,
        "files": files,
    }
    (Path(args.work) / f"summary-{family}.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False))
    return summary


def summarize_tokenizer_json(path: Path) -> dict:
    d = json.loads(path.read_text())
    m = d["model"]
    return {
        "model": m.get("type"),
        "byte_fallback": m.get("byte_fallback"),
        "n_vocab": len(m.get("vocab", {})),
        "n_merges": len(m.get("merges", [])),
        "normalizer": (d.get("normalizer") or {}).get("type"),
        "pre_tokenizer": describe_pt(d.get("pre_tokenizer")),
        "decoder": describe_pt(d.get("decoder")),
        "post_processor": (d.get("post_processor") or {}).get("type"),
        "added_tokens": [(a["id"], a["content"], "special" if a["special"] else "non-special") for a in d["added_tokens"]],
    }


def describe_pt(p):
    if not p:
        return None
    t = p.get("type")
    if t == "Sequence":
        key = "pretokenizers" if "pretokenizers" in p else "decoders"
        return "Sequence[" + ", ".join(describe_pt(x) for x in p.get(key, [])) + "]"
    if t == "Metaspace":
        return f"Metaspace(replacement={p.get('replacement')!r}, prepend_scheme={p.get('prepend_scheme')}, split={p.get('split')})"
    if t == "ByteLevel":
        return f"ByteLevel(add_prefix_space={p.get('add_prefix_space')}, use_regex={p.get('use_regex')})"
    if t == "Split":
        return "Split(Qwen2 regex, isolated)" if p.get("pattern", {}).get("Regex") == QWEN2_PRETOKENIZE_REGEX else f"Split({p.get('pattern')})"
    return t


# --------------------------------------------------------------------------------------
# README
# --------------------------------------------------------------------------------------

FAMILY_NOTES = {
    "mixtral": dict(
        tokenizer="SentencePiece-style BPE (llama/Mistral style): trained with the `sentencepiece` package "
                  "(model_type=bpe, byte_fallback=True, identity normalisation, split_digits, add_dummy_prefix), "
                  "converted by transformers' `LlamaTokenizer` into tokenizer.json: BPE model with "
                  "`byte_fallback: true`, Metaspace(▁, prepend_scheme=first, split=false) pre-tokenizer, no normalizer, "
                  "decoder Replace(▁→' ')+ByteFallback+Fuse+Strip(1 leading space), TemplateProcessing post-processor "
                  "adding `<s>`. ids 0/1/2 = `<unk>`/`<s>`/`</s>`, ids 3..258 = byte tokens `<0x00>`..`<0xFF>`. "
                  "BOS is added by default (`add_bos=true`).",
        router="softmax over experts (float32) → torch.topk(k=2) → renormalised to sum 1 (Mixtral always renormalises).",
        gguf="llama.cpp writes the generic `llama` architecture. Because `tokenizer.model` is present it uses its "
             "SentencePiece path: `tokenizer.ggml.model=llama`, `pre=default`, `scores` present (no merges). "
             "q/k weights ARE permuted by the converter (`LlamaModel.permute`, HF rotate-half layout → "
             "interleaved pairs) because llama.cpp's `llama` arch uses rope type NORM (adjacent pairs); "
             "the fixture checker verified attn_q/attn_k == permute(HF q_proj/k_proj). Expert tensors are "
             "stacked into `blk.N.ffn_{gate,up,down}_exps` (gate=w1, up=w3, down=w2).",
        rope="llama.cpp LLAMA_ROPE_TYPE_NORM (rotates adjacent pairs) applied to the converter-permuted q/k rows, "
             "which is equivalent to HF's rotate-half rope on the original weights",
    ),
    "qwen2_moe": dict(
        tokenizer="byte-level BPE (Qwen2 style) trained with the `tokenizers` library: NFC normalizer, pre-tokenizer "
                  "Sequence[Split(Qwen2 regex, isolated), ByteLevel(add_prefix_space=false, use_regex=false)], "
                  "ByteLevel decoder, no BOS. Special tokens `<|endoftext|>`, `<|im_start|>`, `<|im_end|>` appended "
                  "after the BPE vocab. config.vocab_size (768) is larger than the tokenizer (703 tokens): rows "
                  "703..767 of the embedding/lm_head exist but no token maps to them (like real Qwen checkpoints).",
        router="softmax over experts (float32) → torch.topk(k=4) → NOT renormalised (`norm_topk_prob=false`); "
               "the shared expert output is added, scaled by sigmoid(shared_expert_gate · x).",
        gguf="arch `qwen2moe`, tokenizer `gpt2` with `pre=qwen2` (forced via monkeypatch: the hash of a custom "
             "tokenizer is unknown to llama.cpp), merges present, no scores. Padded vocab entries are written as "
             "`[PAD703]`.. with token type UNUSED(5). q/k NOT permuted.",
        rope="NEOX (rotate-half), q/k not permuted",
    ),
    "qwen3_moe": dict(
        tokenizer="byte-level BPE (Qwen2 regex, same pipeline as qwen2_moe), 600 BPE tokens + "
                  "`<|endoftext|>`(600) `<|im_start|>`(601) `<|im_end|>`(602); vocab_size 603 (not padded). "
                  "No BOS; eos = `<|im_end|>`.",
        router="softmax over experts (float32) → torch.topk(k=2) → renormalised (`norm_topk_prob=true`).",
        gguf="arch `qwen3moe`, tokenizer `gpt2` with `pre=qwen2` (forced), merges present. Tied embeddings: the "
             "checkpoint has no `lm_head.weight` and the GGUF has no `output.weight` (use token_embd). "
             "`qwen3moe.attention.key_length/value_length` = 32 = explicit head_dim (≠ hidden/heads = 16). "
             "Per-head q/k RMSNorm weights `attn_q_norm`/`attn_k_norm` have shape [head_dim]. q/k NOT permuted.",
        rope="NEOX (rotate-half), q/k not permuted",
    ),
    "olmoe": dict(
        tokenizer="byte-level BPE, GPT-2/GPT-NeoX style (NFC normalizer, ByteLevel pre-tokenizer with the GPT-2 "
                  "regex, add_prefix_space=false), special tokens `<|endoftext|>`=0 (eos) and `<|padding|>`=1 (pad) "
                  "at the START of the vocab, plus a NON-special added token `|||IP_ADDRESS|||` (id 511) as OLMoE's "
                  "real tokenizer has. No BOS (bos_token_id null).",
        router="softmax over experts (float32) → torch.topk(k=4) → NOT renormalised (`norm_topk_prob=false`).",
        gguf="arch `olmoe`, tokenizer `gpt2` with `pre=olmo` (forced; llama.cpp uses the GPT-2 regex for it), "
             "merges present. q_norm/k_norm are over the WHOLE projection: `attn_q_norm` [n_head*head_dim=64], "
             "`attn_k_norm` [n_kv_head*head_dim=32]. No `expert_feed_forward_length` key: `feed_forward_length` "
             "(= intermediate_size = 32) is the expert size. No `tokenizer.ggml.bos_token_id` "
             "(llama.cpp then internally defaults BOS to id 11 for gpt2 vocabs but does not add it since "
             "add_bos_token=false). q/k NOT permuted. Note llama.cpp's converter hard-codes rms eps 1e-5 for OLMoE; "
             "the fixture uses 1e-5 so both agree.",
        rope="NEOX (rotate-half), q/k not permuted",
    ),
}


def _collapse_safetensors(tensors: list[dict]) -> list[str]:
    """Collapse layer / expert indices of identical-shape tensors into {L}/{E} patterns."""
    groups: dict[tuple, dict] = {}
    order = []
    for t in tensors:
        name = t["name"]
        m = re.match(r"model\.layers\.(\d+)\.(.*)$", name)
        L = None
        rest = name
        if m:
            L, rest = int(m.group(1)), m.group(2)
        E = None
        m2 = re.match(r"(.*experts\.)(\d+)(\..*)$", rest)
        if m2:
            E = int(m2.group(2))
            rest = m2.group(1) + "{E}" + m2.group(3)
        key = (("model.layers.{L}." if L is not None else "") + rest, tuple(t["shape"]), t["dtype"])
        if key not in groups:
            groups[key] = {"L": set(), "E": set()}
            order.append(key)
        if L is not None:
            groups[key]["L"].add(L)
        if E is not None:
            groups[key]["E"].add(E)
    lines = []
    for key in sorted(order, key=lambda k: (0 if "layers" not in k[0] else 1, k[0])):
        name, shape, dtype = key
        g = groups[key]
        rng = []
        if g["L"]:
            rng.append(f"L=0..{max(g['L'])}")
        if g["E"]:
            rng.append(f"E=0..{max(g['E'])}")
        lines.append(f"| `{name}` | {list(shape)} | {dtype} | {', '.join(rng)} |")
    return lines


def render_readme(summaries: dict, versions: dict) -> str:
    out = []
    w = out.append
    w("# Test fixtures: tiny random MoE models + Hugging Face reference outputs\n")
    w("Generated by `tools/make_fixtures.py` — do not edit by hand. Everything the Rust tests need is committed; "
      "CI does not need Python.\n")
    w("Each family directory holds a tiny, randomly initialised (fixed seeds) model of a real MoE architecture, "
      "a tokenizer trained on tinyshakespeare, reference outputs computed with Hugging Face `transformers` "
      "(float32, `attn_implementation=\"eager\"`, `experts_implementation=\"eager\"`, `model.eval()`, "
      "`torch.no_grad()`), and the same model converted by llama.cpp's own `convert_hf_to_gguf.py --outtype f32`.\n")
    w("## Layout\n")
    w("```")
    w("tests/fixtures/<family>/            family ∈ {mixtral, qwen2_moe, qwen3_moe, olmoe}")
    w("  hf/config.json                    HF model config, classic hub key style (see below)")
    w("  hf/model.safetensors              float32 weights, classic per-expert hub tensor names")
    w("  hf/tokenizer.json                 HF `tokenizers` serialisation (authoritative tokenizer)")
    w("  hf/tokenizer_config.json          tokenizer class, special tokens, add_bos/eos flags")
    w("  hf/generation_config.json         bos/eos ids as written by transformers")
    w("  stock-f32.gguf                    llama.cpp convert_hf_to_gguf.py --outtype f32 of hf/")
    w("  reference.json                    transformers reference outputs (schema below)")
    w("  stock-q8_0.gguf, stock-q4_k_m.gguf llama-quantize of stock-f32.gguf (not olmoe)     } tools/make_llamacpp_refs.py,")
    w("  llamacpp.json                     llama.cpp's greedy continuations of those          } see LLAMACPP.md")
    w("tests/fixtures/mixtral_k/           only the three llama.cpp files above: a 256-wide Mixtral-shaped model for the K-quants,")
    w("                                    its f32 GGUF generated by tools/make_llamacpp_refs.py (see LLAMACPP.md)")
    w("```\n")
    w("## Regenerating\n")
    w("```sh")
    w("python3 -m venv /opt/venv && /opt/venv/bin/pip install -r tools/requirements.txt")
    w("# llama.cpp source is dev tooling only (never committed); llama-cpp-python's sdist vendors it:")
    w("/opt/venv/bin/pip download --no-deps --no-binary llama-cpp-python llama-cpp-python==0.3.36 -d /tmp/llsrc")
    w("tar xzf /tmp/llsrc/llama_cpp_python-0.3.36.tar.gz -C /tmp/llsrc")
    w("LLAMA_CPP_DIR=/tmp/llsrc/llama_cpp_python-0.3.36/vendor/llama.cpp /opt/venv/bin/python tools/make_fixtures.py")
    w("```\n")
    w("Options: `--families a,b`, `--corpus PATH` (default /work/shared/data/tinyshakespeare.txt, "
      "or `$EDGEMOE_CORPUS`), `--skip-gguf`. The output is deterministic (byte-identical on re-run with the "
      "same package versions). The script asserts, for every family: AutoTokenizer == raw tokenizer.json "
      "encodings on ~500 strings; the reloaded checkpoint reproduces the in-memory model's logits bit-exactly and "
      "the rounded reference within 5e-5; `generate()` greedy == a no-KV-cache argmax loop; greedy continuations "
      "are not degenerate (≥6 distinct tokens, no token >6 times) and every layer's router uses ≥ 3/4 of the "
      "experts; every GGUF tensor equals the corresponding safetensors tensor(s) (after llama.cpp's q/k permutation "
      "for the llama arch).\n")
    w("## Versions used\n")
    w("| package | version |\n|---|---|")
    for k, v in versions.items():
        w(f"| {k} | {v} |")
    w("")
    w("## reference.json schema\n")
    w("```jsonc")
    w("{")
    w('  "family": "mixtral" | "qwen2_moe" | "qwen3_moe" | "olmoe",')
    w('  "format_version": 1,')
    w('  "versions": { "torch": "...", "transformers": "...", ... },')
    w('  "dtype": "float32", "attn_implementation": "eager", "experts_implementation": "eager",')
    w('  "hyperparameters": {            // summary of config.json')
    w('    "architecture", "model_type", "vocab_size" (= logits width), "tokenizer_size", "hidden_size",')
    w('    "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim", "num_experts",')
    w('    "num_experts_per_tok", "expert_intermediate_size", "shared_expert_intermediate_size" (null if none),')
    w('    "norm_topk_prob", "rope_theta", "rms_norm_eps", "tie_word_embeddings", "qkv_bias", "qk_norm",')
    w('    "bos_token_id", "eos_token_id", "pad_token_id", "max_position_embeddings", "hidden_act", "init_seed"')
    w("  },")
    w('  "add_bos": bool,                // whether tokenizer.encode(text) (default add_special_tokens=True) prepends BOS')
    w('  "n_greedy": 16,')
    w('  "prompts": [                    // 3 prompts, 6..12 tokens each (BOS included)')
    w("    {")
    w('      "text": str,')
    w('      "add_bos": bool,')
    w('      "ids": [int; T],             // tokenizer.encode(text) incl. BOS if the tokenizer adds one')
    w('      "n_tokens": T,')
    w('      "logits": [[float; V]; T],   // float32 logits at EVERY position (one forward pass over ids), 6 significant digits')
    w('      "argmax": [int; T],          // argmax of each logits row (next-token prediction per position)')
    w('      "greedy": [int; 16],         // model.generate(do_sample=False, max_new_tokens=16), EOS disabled: new tokens only')
    w('      "greedy_text": str,          // tokenizer.decode(greedy)')
    w('      "router": [[[int; k]; T]; L],          // per layer, per position: top-k expert ids in torch.topk order')
    w('                                             // (descending probability) over softmax(router_logits)')
    w('      "router_weights": [[[float; k]; T]; L], // the weights actually applied to those experts (after the')
    w('                                             // family\'s renormalisation or not), same order as "router"')
    w('      "router_logits": [[[float; E]; T]; L]   // raw router logits (x · W_gate^T) before softmax')
    w("    }")
    w("  ],")
    w('  "tokenizer_cases": [            // tokenizer round trips')
    w('    { "text": str,')
    w('      "ids": [int],                // tokenizer.encode(text, add_special_tokens=False)')
    w('      "tokens": [str],             // tokenizer.convert_ids_to_tokens(ids)')
    w('      "decoded": str,              // tokenizer.decode(ids)  (may differ from text, see caveats)')
    w('      "sentencepiece_ids": [int]   // mixtral only: sentencepiece.encode(text) with the original .model (what')
    w('                                   // llama.cpp\'s SPM tokenizer reproduces); differs for leading spaces and for')
    w('                                   // special-token text')
    w("    } ]")
    w("}")
    w("```\n")
    w("Numbers are JSON floats rounded to 6 significant digits (`%.6g`); compare logits with an absolute "
      "tolerance around 1e-4 (values are O(1)). L = num_hidden_layers, T = prompt length, V = config vocab_size, "
      "E = num_experts, k = num_experts_per_tok.\n")
    w("## Conventions shared by all families\n")
    w("* **config.json** is written in the classic hub key style that real checkpoints of these families use: "
      "`rope_theta` at top level with `rope_scaling: null`, `torch_dtype`, Qwen3-MoE `num_experts`. "
      "transformers v5 natively writes `rope_parameters: {rope_type, rope_theta}` and `dtype` instead (and "
      "`num_local_experts` for Qwen3-MoE, `layer_types`/`qkv_bias` for Qwen2-MoE); the script verifies v5 loads "
      "the rewritten file to identical weights, rope theta and logits. A loader should accept both styles.")
    w("* **model.safetensors** uses the classic per-expert hub layout: Mixtral "
      "`model.layers.{L}.block_sparse_moe.experts.{E}.w1/w2/w3.weight` (w1=gate, w3=up, w2=down) and router "
      "`block_sparse_moe.gate.weight`; Qwen2-MoE/Qwen3-MoE/OLMoE `model.layers.{L}.mlp.experts.{E}.gate_proj/"
      "up_proj/down_proj.weight` and router `mlp.gate.weight`; Qwen2-MoE also `mlp.shared_expert.{gate,up,down}"
      "_proj.weight` and `mlp.shared_expert_gate.weight` [1, hidden]. Weights are [out_features, in_features].")
    native = {f: s["save_info"]["native_layout"] for f, s in summaries.items()}
    w(f"* **What transformers {versions.get('transformers')} saves natively:** in memory v5 fuses experts into "
      "3-D parameters (`mlp.experts.gate_up_proj` [E, 2*I, H] = gate rows then up rows, `mlp.experts.down_proj` "
      "[E, H, I]; Mixtral's `block_sparse_moe` is renamed `mlp`), but `save_pretrained` reverts its weight "
      f"conversion mapping and writes the per-expert hub layout ({', '.join(f'{k}: {v}' for k, v in native.items())}). "
      "The script checks the saved tensors equal its own per-expert split of the fused parameters; if a future "
      "version saved fused tensors it would rewrite them.")
    w("* **Tokenizer**: `hf/tokenizer.json` is authoritative; transformers v5 tokenizer classes rebuild the "
      "pipeline from vocab/merges, so the script asserts AutoTokenizer and the raw tokenizer.json agree.")
    w("* **Greedy**: `generate(do_sample=False, max_new_tokens=16)` with `eos_token_id=None`, i.e. pure argmax "
      "including the EOS id; checked against a full-recompute argmax loop.")
    w("* **GGUF** (llama.cpp converter, f32): expert weights are stacked as `blk.N.ffn_{gate,up,down}_exps.weight` "
      "with ggml shapes {H, I, E} for gate/up and {I, H, E} for down (ggml lists dims fastest-first, i.e. the "
      "reverse of numpy/torch: numpy shape [E, I, H]). Router `blk.N.ffn_gate_inp.weight` {H, E}. Attention "
      "weights keep HF row order except the llama arch (Mixtral) whose q/k rows are permuted.\n")

    for fam, s in summaries.items():
        hp = s["hyperparameters"]
        notes = FAMILY_NOTES[fam]
        w(f"## {fam}\n")
        w("| hyperparameter | value |\n|---|---|")
        for k, v in hp.items():
            w(f"| {k} | {json.dumps(v)} |")
        w(f"| prompt token counts | {s['prompt_token_counts']} |")
        w(f"| distinct experts used per layer (all prompts) | {s['checks']['distinct_experts_used_per_layer']} |")
        w("")
        w(f"**Tokenizer** (`{s['tokenizer_class']}`): {notes['tokenizer']}\n")
        tj = s["tokenizer_json_summary"]
        w(f"tokenizer.json: model={tj['model']}, byte_fallback={tj['byte_fallback']}, vocab={tj['n_vocab']}, "
          f"merges={tj['n_merges']}, normalizer={tj['normalizer']}, pre_tokenizer={tj['pre_tokenizer']}, "
          f"decoder={tj['decoder']}, post_processor={tj['post_processor']}, added_tokens={tj['added_tokens']}\n")
        w(f"**Router**: {notes['router']}\n")
        w("**safetensors tensors** (float32; `{L}`/`{E}` collapse identical per-layer/per-expert entries):\n")
        w("| name | shape | dtype | range |\n|---|---|---|---|")
        out.extend(_collapse_safetensors(s["safetensors_tensors"]))
        w("")
        g = s.get("gguf")
        if g:
            arch = g["metadata"]["general.architecture"]["value"]
            w(f"**GGUF**: architecture `{arch}`; rope type: {notes['rope']}; q/k permuted by converter: "
              f"{'YES' if g['tensor_check']['qk_permuted'] is True else 'no'}. {notes['gguf']}\n")
            w("Metadata written by llama.cpp (arrays: length and first 3 entries):\n")
            w("| key | type | value |\n|---|---|---|")
            for k, v in g["metadata"].items():
                if "len" in v:
                    val = f"len={v['len']}, first={json.dumps(v['first'], ensure_ascii=False)}"
                    if "counts" in v:
                        val += f", token_type counts={json.dumps(v['counts'])}"
                else:
                    val = json.dumps(v["value"], ensure_ascii=False)
                w(f"| `{k}` | {v['type']} | {val.replace('|', '&#124;')} |")
            tk = g["metadata"]
            w("")
            w(f"Tokenizer keys: model=`{tk['tokenizer.ggml.model']['value']}`, pre=`{tk['tokenizer.ggml.pre']['value']}`, "
              f"merges {'present' if 'tokenizer.ggml.merges' in tk else 'absent'}, "
              f"scores {'present' if 'tokenizer.ggml.scores' in tk else 'absent'}. Rope keys: "
              + ", ".join(f"`{k}`={tk[k]['value']}" for k in tk if ".rope." in k) + ".\n")
            w("GGUF tensors (ggml shape order, fastest dim first):\n")
            w("| name | shape | type |\n|---|---|---|")
            for t in g["tensors"]:
                w(f"| `{t['name']}` | {t['shape']} | {t['type']} |")
            w("")
        w("Files:\n")
        w("| file | bytes | sha256 (first 16) |\n|---|---|---|")
        for f, info in s["files"].items():
            w(f"| {f} | {info['bytes']} | {info['sha256'][:16]} |")
        w("")
    w("## Caveats\n")
    w("* Models are random: continuations are gibberish, often byte tokens that decode to U+FFFD. "
      "That is expected; the point is exact numerical agreement.")
    w("* Mixtral tokenizer: transformers v5's `LlamaTokenizer` uses Metaspace with `prepend_scheme=first`, which does "
      "not add the dummy-prefix ▁ when the text already starts with a space, while SentencePiece (and llama.cpp's SPM "
      "tokenizer, `add_space_prefix`) always prepends it. So for texts with leading spaces `ids` != "
      "`sentencepiece_ids`, and `decoded` drops one leading space. `<s>Hello</s>` also differs (HF matches special tokens in text, "
      "sentencepiece does not). All other cases agree (see reference.json).")
    w("* `tokenizer.ggml.pre` for the BPE families was forced by monkeypatching llama.cpp's "
      "`get_vocab_base_pre` (hash-based detection cannot know a freshly trained tokenizer): `qwen2` for the Qwen "
      "families (identical regex to our tokenizer.json), `olmo` for OLMoE (GPT-2 regex, identical to ByteLevel's "
      "built-in regex). This is exactly what llama.cpp writes for the real Qwen/OLMo tokenizers.")
    w("* The converter emits a harmless `Unknown RoPE type: default` warning (transformers v5 AutoConfig "
      "normalises `rope_theta` into `rope_parameters`); no rope-scaling keys are written.")
    w("* grouped_mm (transformers v5's default experts implementation) vs eager max |Δlogit|: "
      + ", ".join(f"{f}: {s['grouped_mm_vs_eager_max_abs_logit_diff']:.2g}" for f, s in summaries.items())
      + " (float summation-order differences only; the references use eager).")
    w("* Real OLMoE has no GQA; here num_key_value_heads < num_attention_heads for every family (as requested), "
      "so OLMoE's k_norm covers n_kv_heads*head_dim.")
    return "\n".join(out) + "\n"


def write_readme(out: Path, summaries: dict, versions: dict):
    (out / "README.md").write_text(render_readme(summaries, versions), encoding="utf-8")


def get_versions() -> dict:
    import importlib.metadata as md
    import platform

    v = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "tokenizers", "safetensors", "sentencepiece", "numpy", "gguf", "protobuf"):
        try:
            v[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            v[pkg] = None
    v["llama.cpp"] = LLAMA_CPP_PIP_VERSION
    return v


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--convert-worker":
        convert_worker(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(REPO_ROOT / "tests" / "fixtures"))
    ap.add_argument("--work", default="/tmp/edgemoe-fixtures-work")
    ap.add_argument("--corpus", default=os.environ.get("EDGEMOE_CORPUS", DEFAULT_CORPUS))
    ap.add_argument("--llama-cpp", default=os.environ.get("LLAMA_CPP_DIR"))
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--skip-gguf", action="store_true")
    ap.add_argument("--no-readme", action="store_true")
    args = ap.parse_args()
    if not args.skip_gguf:
        if not args.llama_cpp or not (Path(args.llama_cpp) / "convert_hf_to_gguf.py").is_file():
            ap.error("need --llama-cpp DIR (or $LLAMA_CPP_DIR) containing convert_hf_to_gguf.py, or --skip-gguf")
    os.environ.setdefault("PYTHONHASHSEED", "0")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)

    corpus = Path(args.corpus).read_text(encoding="utf-8")
    versions = get_versions()
    Path(args.work).mkdir(parents=True, exist_ok=True)
    summaries = {}
    for fam in [f for f in args.families.split(",") if f]:
        summaries[fam] = run_family(fam, args, corpus, versions)
    # README covers all families: load summaries of families not re-run this time from the work dir
    if not args.no_readme:
        for fam in FAMILIES:
            if fam not in summaries:
                p = Path(args.work) / f"summary-{fam}.json"
                if p.exists():
                    summaries[fam] = json.loads(p.read_text())
        write_readme(Path(args.out), {f: summaries[f] for f in FAMILIES if f in summaries}, versions)
    total = sum(p.stat().st_size for p in Path(args.out).rglob("*") if p.is_file())
    log(f"done; tests/fixtures total {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
