#!/usr/bin/env python3
"""Generate the quantisation fixtures in tests/fixtures/quant/ with gguf-py.

For every type edgemoe reads, writes:

  <type>.q.bin    raw bytes of the quantised data (ggml block layout)
  <type>.deq.bin  gguf-py's dequantisation of those bytes, little-endian f32
  <type>.in.bin   (types gguf-py can quantise) the f32 input that was quantised

and index.json describing them. For types gguf-py can quantise (F32, F16,
BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) the input is random data with edge cases
(all zeros, large magnitudes, one outlier, constant blocks, tiny values) and
the bytes are gguf-py's quantisation. For the K-quants, which gguf-py can only
dequantise, the bytes are random valid blocks (random quants and sub-scales,
finite fp16 super-block scales).

The fixtures are committed: CI has no Python. Rerun after changing this
script:  /opt/venv/bin/python tools/make_quant_fixtures.py
"""

import json
import os

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

SEED = 0x5EED_2026
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "quant")

rng = np.random.default_rng(SEED)


def edge_blocks(block: int) -> np.ndarray:
    """Rows of `block` elements exercising the corner cases of the quantisers."""
    rows = []
    rows.append(np.zeros(block))  # all zeros
    rows.append(rng.standard_normal(block) * 3e3)  # large magnitudes (fp16 scale still finite)
    r = rng.standard_normal(block) * 0.1
    r[block // 3] = 25.0  # one positive outlier
    rows.append(r)
    r = rng.standard_normal(block) * 0.1
    r[block - 1] = -40.0  # one negative outlier, last element
    rows.append(r)
    rows.append(np.full(block, 0.75))  # constant (max == min)
    rows.append(np.full(block, -1.5))
    rows.append(rng.standard_normal(block) * 1e-6)  # tiny: fp16 scale is subnormal
    r = rng.integers(-8, 8, block).astype(np.float64) * 0.5  # many exact ties
    rows.append(r)
    r = np.abs(rng.standard_normal(block))  # all positive
    rows.append(r)
    rows.append(-np.abs(rng.standard_normal(block)))  # all negative
    r = rng.standard_normal(block)
    r[0] = r[1] = np.abs(r).max() * 2  # equal maxima: first one wins
    rows.append(r)
    return np.concatenate(rows)


def float_inputs(block: int, n_random_blocks: int) -> np.ndarray:
    x = np.concatenate([rng.standard_normal(block * n_random_blocks), edge_blocks(block)])
    return x.astype(np.float32)


def f16_scale(shape, lo=1e-4, hi=2.0) -> np.ndarray:
    """Finite fp16 scales spanning several orders of magnitude, random sign."""
    mag = np.exp(rng.uniform(np.log(lo), np.log(hi), shape))
    sign = np.where(rng.random(shape) < 0.5, -1.0, 1.0)
    return (mag * sign).astype(np.float16)


def random_kquant(qt: T, n_blocks: int) -> np.ndarray:
    """Random valid K-quant blocks: random bytes, then finite fp16 scales placed."""
    _, type_size = quants.GGML_QUANT_SIZES[qt]
    b = rng.integers(0, 256, (n_blocks, type_size), dtype=np.uint8)

    def put(col: int, vals: np.ndarray) -> None:
        b[:, col:col + 2] = vals.reshape(-1, 1).view(np.uint8).reshape(n_blocks, 2)

    d = f16_scale(n_blocks)
    d[0] = 0.0  # a zero super-block scale
    if qt == T.Q2_K:
        put(80, d)
        put(82, np.abs(f16_scale(n_blocks)))
    elif qt == T.Q3_K:
        put(108, d)
    elif qt in (T.Q4_K, T.Q5_K):
        put(0, d)
        put(2, np.abs(f16_scale(n_blocks)))
    elif qt == T.Q6_K:
        put(208, d)
    else:
        raise ValueError(qt)
    return b


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    index = {}

    def write(name: str, q: np.ndarray, deq: np.ndarray, inp, n: int, quantized_by_gguf: bool) -> None:
        q.astype(np.uint8).tofile(os.path.join(OUT, f"{name}.q.bin"))
        deq.astype("<f4").tofile(os.path.join(OUT, f"{name}.deq.bin"))
        entry = {"n": n, "q_bytes": int(q.size), "gguf_quantized": quantized_by_gguf}
        if inp is not None:
            inp.astype("<f4").tofile(os.path.join(OUT, f"{name}.in.bin"))
        entry["has_input"] = inp is not None
        index[name] = entry

    # Types gguf-py quantises.
    for name, qt, block in [
        ("f32", T.F32, 32),
        ("f16", T.F16, 32),
        ("bf16", T.BF16, 32),
        ("q4_0", T.Q4_0, 32),
        ("q4_1", T.Q4_1, 32),
        ("q5_0", T.Q5_0, 32),
        ("q5_1", T.Q5_1, 32),
        ("q8_0", T.Q8_0, 32),
    ]:
        x = float_inputs(block, 16)
        if qt in (T.F16, T.BF16):
            # Values that round, overflow fp16, or are fp16 subnormals.
            extra = np.array([65504.0, 65520.0, 1e6, -1e6, 6e-8, 3e-5, 1.0009765625,
                              1.00048828125, 3.0e38, -2.5e-39, 1 + 2**-8, 1 + 3 * 2**-9],
                             dtype=np.float32)
            extra = np.concatenate([extra, np.zeros((-len(extra)) % block, dtype=np.float32)])
            x = np.concatenate([x, extra])
        if qt == T.BF16:
            x = np.concatenate([x, np.array([np.nan, -np.inf, np.inf, 0.0] * 8, dtype=np.float32)])
        q = quants.quantize(x, qt)
        q = np.ascontiguousarray(q).view(np.uint8).reshape(-1)
        deq = quants.dequantize(q, qt).reshape(-1)
        assert deq.size == x.size
        write(name, q, deq, x, int(x.size), True)

    # K-quants: gguf-py dequantises only.
    for name, qt in [("q2_k", T.Q2_K), ("q3_k", T.Q3_K), ("q4_k", T.Q4_K), ("q5_k", T.Q5_K), ("q6_k", T.Q6_K)]:
        n_blocks = 12
        q = random_kquant(qt, n_blocks).reshape(-1)
        deq = quants.dequantize(q, qt).reshape(-1)
        assert deq.size == n_blocks * 256
        assert np.isfinite(deq).all()
        write(name, q, deq, None, n_blocks * 256, False)

    with open(os.path.join(OUT, "index.json"), "w") as f:
        json.dump({"seed": SEED, "generator": "tools/make_quant_fixtures.py",
                   "gguf_version": _gguf_version(), "types": index}, f, indent=1, sort_keys=True)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(OUT, p)) for p in os.listdir(OUT))
    print(f"wrote {len(index)} types to {OUT}, {total} bytes")


def _gguf_version() -> str:
    try:
        from importlib.metadata import version
        return version("gguf")
    except Exception:  # pragma: no cover
        return "unknown"


if __name__ == "__main__":
    main()
