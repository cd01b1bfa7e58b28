#!/usr/bin/env python3
"""Regenerates the golden logits under tests/golden/ with the independent
numpy reference (tools/reference.py).

For each case: `rd make-test-model` writes a random Huginn GGUF from a seed, the
reference runs a 17-token prompt in one prefill chunk and then greedily decodes
16 tokens one at a time, and we store the logits of all 33 positions plus the
fed token sequence. The Rust test (tests/golden.rs) rebuilds the same GGUF with
the maker, checks its FNV-1a hash against the manifest (so it runs on exactly
the file the reference saw), replays the sequence and compares.

Usage: python3 tools/make_goldens.py [--rd target/debug/rd]
"""

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import reference  # noqa: E402

# name: (seed, type, n_embd, n_ff, n_head, n_head_kv, n_vocab, blocks, tied, qk_bias)
MODELS = {
    # head_dim 48, three core blocks, 1/3/2 layout, tied head.
    "a": (11, 96, 128, 2, 2, 256, "1,3,2", True, True),
    # head_dim 96, untied head, 2/2/1 layout.
    "b": (12, 192, 256, 2, 2, 256, "2,2,1", False, True),
    # K-quant friendly widths (multiples of 256): 4 heads of 64, 2/4/2 like Huginn.
    "c": (13, 256, 256, 4, 4, 256, "2,4,2", True, True),
    # grouped-query attention (6 query heads over 2 KV heads of 16), no q/k bias.
    "g": (14, 96, 160, 6, 2, 200, "1,2,1", True, False),
}

# (model, type, iterations, kv_budget, init)
CASES = [
    ("a", "f32", 1, None, "zeros"),
    ("a", "f32", 2, None, "zeros"),
    ("a", "f32", 7, None, "zeros"),
    ("a", "f32", 32, None, "zeros"),
    ("a", "f32", 7, 1, "zeros"),
    ("a", "f32", 7, 3, "zeros"),
    ("a", "f32", 4, None, "seed:5"),
    ("b", "f32", 2, None, "zeros"),
    ("b", "f32", 7, None, "zeros"),
    ("b", "f32", 32, None, "zeros"),
    ("c", "f32", 4, None, "zeros"),
    ("g", "f32", 5, None, "zeros"),
]
# Every non-F32 type at several iteration counts, so agreement is measured
# over enough positions (33 per case).
for _ty, _model in [("f16", "b"), ("bf16", "b"), ("q8_0", "b"), ("q4_0", "b"),
                    ("q8_0", "c"), ("q6_k", "c"), ("q4_k", "c")]:
    for _r in (1, 2, 7, 32):
        CASES.append((_model, _ty, _r, None, "zeros"))

N_PROMPT = 17
N_DECODE = 16


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def prompt_tokens(n_vocab: int) -> list:
    return [(7 * i * i + 3 * i + 1) % n_vocab for i in range(N_PROMPT)]


def make_model(rd: str, out: str, model: str, ty: str) -> None:
    make_model_from_spec(rd, out, MODELS[model], ty)


def make_model_from_spec(rd: str, out: str, spec, ty: str) -> None:
    """`rd make-test-model` for a (seed, n_embd, n_ff, n_head, n_head_kv,
    n_vocab, blocks, tied, qk_bias) tuple, as MODELS holds them."""
    seed, d, ff, nh, nkv, nv, blocks, tied, qkb = spec
    cmd = [rd, "make-test-model", "--out", out, "--seed", str(seed), "--type", ty,
           "--n-embd", str(d), "--n-ff", str(ff), "--n-head", str(nh), "--n-head-kv", str(nkv),
           "--n-vocab", str(nv), "--blocks", blocks]
    if not tied:
        cmd.append("--untied")
    if not qkb:
        cmd.append("--no-qk-bias")
    subprocess.run(cmd, check=True, capture_output=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rd", default=os.path.join(ROOT, "target", "debug", "rd"))
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "golden"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model, ty, iters, budget, init in CASES:
            path = os.path.join(tmp, f"{model}-{ty}.gguf")
            if not os.path.exists(path):
                make_model(args.rd, path, model, ty)
            with open(path, "rb") as f:
                digest = fnv1a64(f.read())
            m = reference.Model(path)
            b = budget or iters
            ref_init = "zeros" if init == "zeros" else int(init.split(":")[1])
            logits, tokens, generated, _ = reference.run(
                m, prompt_tokens(m.hp.vocab), iterations=iters, kv_budget=b, init=ref_init,
                decode=N_DECODE)
            name = f"{model}-{ty}-r{iters}-b{b}-{init.replace(':', '')}"
            np.save(os.path.join(args.out, f"{name}.logits.npy"), logits.astype(np.float32))
            np.save(os.path.join(args.out, f"{name}.tokens.npy"), np.asarray(tokens, dtype=np.int32))
            seed_, d, ff, nh, nkv, nv, blocks, tied, qkb = MODELS[model]
            rows.append([name, seed_, ty, d, ff, nh, nkv, nv, blocks, int(tied), int(qkb),
                         iters, b, init, N_PROMPT, f"{digest:016x}"])
            print(name, "generated:", generated[:8], "...")
    header = ["name", "seed", "type", "n_embd", "n_ff", "n_head", "n_head_kv", "n_vocab", "blocks",
              "tied", "qk_bias", "iterations", "kv_budget", "init", "n_prompt", "fnv1a64"]
    with open(os.path.join(args.out, "manifest.tsv"), "w") as f:
        f.write("\t".join(header) + "\n")
        for r in rows:
            f.write("\t".join(str(x) for x in r) + "\n")


if __name__ == "__main__":
    main()
