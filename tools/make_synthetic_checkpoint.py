#!/usr/bin/env python3
"""Write a synthetic Hugging Face Huginn checkpoint with random weights.

The layout is that of the authors' `save_pretrained`: config.json, bf16 tensors
under their HF names in safetensors shards with model.safetensors.index.json,
a byte-level BPE tokenizer.json of the full vocabulary size, and
tokenizer_config.json with a chat template. The default shapes are
Huginn-0125's (d 5280, 55 heads, MLP 17920, vocabulary 65536, 2/4/2 blocks),
which is about 7 GB on disk; used to measure `rd convert`'s memory and speed
(docs/convert.md). Only numpy is needed; the values are random normals.

    python3 tools/make_synthetic_checkpoint.py OUT_DIR [--blocks 2,4,2] [--n-embd 5280]
"""

import argparse
import json
import os
import struct

import numpy as np

SPECIALS = ["<|begin_text|>", "<|end_text|>", "<|begin_header|>", "<|end_header|>",
            "<|end_turn|>", "<|pad|>"]


def gpt2_byte_chars():
    out, n = [], 0
    for b in range(256):
        if 33 <= b <= 126 or 161 <= b <= 172 or b >= 174:
            out.append(chr(b))
        else:
            out.append(chr(256 + n))
            n += 1
    return out


def tokenizer_files(out, vocab_size, rng):
    """A byte-level BPE tokenizer.json with vocab_size entries (specials last)."""
    vocab = {c: i for i, c in enumerate(gpt2_byte_chars())}
    tokens = list(vocab)
    merges = []
    target = vocab_size - len(SPECIALS)
    while len(vocab) < target:
        a = tokens[rng.integers(len(tokens))]
        b = tokens[rng.integers(len(tokens))]
        ab = a + b
        if ab in vocab or len(ab) > 16:
            continue
        vocab[ab] = len(vocab)
        tokens.append(ab)
        merges.append(f"{a} {b}")
    added = []
    for s in SPECIALS:
        added.append({"id": len(vocab), "content": s, "single_word": False, "lstrip": False,
                      "rstrip": False, "normalized": False, "special": True})
        vocab[s] = len(vocab)
    tok = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                          "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    }
    with open(os.path.join(out, "tokenizer.json"), "w") as f:
        json.dump(tok, f, ensure_ascii=False)
    template = ("{% for m in messages %}{% if loop.index0 == 0 %}{{ bos_token }}{% endif %}"
                "<|begin_header|>{{ 'Huginn' if m['role'] == 'assistant' else m['role'] }}"
                "<|end_header|>\n\n{{ m['content'] | trim }}<|end_turn|>{% endfor %}"
                "{% if add_generation_prompt %}<|begin_header|>Huginn<|end_header|>\n\n{% endif %}")
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<|begin_text|>", "eos_token": "<|end_text|>",
                   "pad_token": "<|pad|>", "chat_template": template}, f)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--n-embd", type=int, default=5280)
    ap.add_argument("--n-heads", type=int, default=55)
    ap.add_argument("--n-ff", type=int, default=17920)
    ap.add_argument("--vocab", type=int, default=65536)
    ap.add_argument("--blocks", default="2,4,2")
    ap.add_argument("--shard-bytes", type=int, default=5_000_000_000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    p, c, k = (int(x) for x in a.blocks.split(","))
    d, h, ff, v = a.n_embd, a.n_heads, a.n_ff, a.vocab
    hd = d // h
    os.makedirs(a.out, exist_ok=True)
    rng = np.random.default_rng(a.seed)

    tensors = [("transformer.wte.weight", (v, d))]
    for part, n in (("prelude", p), ("core_block", c), ("coda", k)):
        for i in range(n):
            b = f"transformer.{part}.{i}"
            tensors += [(f"{b}.norm_1.weight", (d,)), (f"{b}.attn.Wqkv.weight", (3 * d, d)),
                        (f"{b}.attn.qk_bias", (2, 1, h, hd)), (f"{b}.attn.proj.weight", (d, d)),
                        (f"{b}.norm_2.weight", (d,)), (f"{b}.norm_3.weight", (d,)),
                        (f"{b}.mlp.fc.weight", (2 * ff, d)), (f"{b}.mlp.proj.weight", (d, ff)),
                        (f"{b}.norm_4.weight", (d,))]
    tensors += [("transformer.adapter.weight", (d, 2 * d)), ("transformer.ln_f.weight", (d,)),
                ("freqs_cis", (1, 4096, 1, hd // 2, 2))]

    # Group into shards of at most shard_bytes, in order.
    shards, cur, size = [], [], 0
    for name, shape in tensors:
        nbytes = int(np.prod(shape)) * 2
        if cur and size + nbytes > a.shard_bytes:
            shards.append(cur)
            cur, size = [], 0
        cur.append((name, shape))
        size += nbytes
    shards.append(cur)

    weight_map, total = {}, 0
    for si, shard in enumerate(shards):
        fname = f"model-{si + 1:05d}-of-{len(shards):05d}.safetensors"
        header, off = {}, 0
        for name, shape in shard:
            nbytes = int(np.prod(shape)) * 2
            header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + nbytes]}
            off += nbytes
            weight_map[name] = fname
        total += off
        hjson = json.dumps(header).encode()
        hjson += b" " * (-len(hjson) % 8)
        with open(os.path.join(a.out, fname), "wb") as f:
            f.write(struct.pack("<Q", len(hjson)))
            f.write(hjson)
            for name, shape in shard:
                n = int(np.prod(shape))
                std = 1.0 if len(shape) == 1 else 1.0 / np.sqrt(shape[-1])
                mean = 1.0 if name.endswith(("norm_1.weight", "norm_2.weight", "norm_3.weight",
                                             "norm_4.weight", "ln_f.weight")) else 0.0
                step = 1 << 24
                for start in range(0, n, step):
                    m = min(step, n - start)
                    x = rng.standard_normal(m, dtype=np.float32) * np.float32(std) + np.float32(mean)
                    f.write((x.view(np.uint32) >> 16).astype("<u2").tobytes())
        print(f"wrote {fname}: {off / 1e9:.2f} GB")
    with open(os.path.join(a.out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    config = {
        "architectures": ["RavenForCausalLM"], "model_type": "huginn_raven",
        "name": "synthetic-huginn", "n_embd": d, "n_heads": h, "n_layers": p + c + k,
        "block_size": 4096, "vocab_size": v, "padding_multiple": 4096, "tie_embeddings": True,
        "intermediate_size": ff, "bias": False, "block_class_name": "SandwichBlock",
        "norm_class_name": "RMSNorm_llama", "norm_eps": 1e-6, "mlp_class_name": "GatedMLP",
        "nonlin_name": "SiLU", "injection_type": "linear", "n_layers_in_recurrent_block": c,
        "mean_recurrence": 32, "n_layers_in_prelude": p, "n_layers_in_coda": k, "qk_bias": True,
        "rope_base": 50000, "torch_dtype": "bfloat16",
    }
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    tokenizer_files(a.out, v, rng)
    print(f"total {total / 1e9:.2f} GB in {len(shards)} shard(s)")


if __name__ == "__main__":
    main()
