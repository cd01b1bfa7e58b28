#!/usr/bin/env python3
"""Independent float64 reference forward pass for `huginn` GGUF files.

This file is a specification in code. It is written from the maths in
docs/semantics.md (sections 1 to 4) and the schema in docs/gguf.md, reads the same GGUF
files the runtime reads, and computes everything in float64 numpy so that the
runtime (f32 / f16 / quantized, on ggml) can be compared against it.

Model (Huginn "raven" architecture; sandwich blocks, or pre-norm Llama blocks
with `huginn.block_type = prenorm`, the layout of retrofitted recurrence):

    e = token_embd[ids] * embedding_scale
    e = prelude blocks(e)
    x = initial state (zeros, or a seeded truncated normal)
    repeat r times:  x = adapter @ concat(x, e);  x = core blocks(x)
    x = output_norm(x)            (if huginn.norm_after_recurrence)
    x = coda blocks(x)
    logits = head(output_norm(x))  (head = output.weight, or token_embd when tied)

KV cache (docs/semantics.md, section 3): every prelude layer, every (core layer j, slot s)
and every coda layer has its own K/V rows. With a recurrence budget B there are
B slots per core layer; recurrence step t (1-based) reads and writes slot
(t - 1) mod B. A slot keeps, for each position, the latest row written to it.
A token that ran e < B steps never wrote slots e..B-1; those are filled with the
token's deepest entry (the one written at step e) so later tokens read the
token's latest state ("latest" semantics). Nothing stale or missing is ever
read: reading a position that has no row is an error.

Tokens are processed in the order the runtime uses: one prefill chunk (all
prompt positions run each step together, causally masked), then one token at a
time.

Usage:
    python3 tools/reference.py --model M.gguf --tokens 1,2,3 --iterations 4 \\
        [--kv-budget B] [--init zeros|seed:N] [--decode N | --force-tokens a,b,c] \\
        [--decode-iterations n1,n2,...] [--out FILE.npz]
    python3 tools/reference.py --model M.gguf --tokens 1,2,3 --generate 12 \\
        --min-iterations 2 --max-iterations 16 --exit kl:1e-3 --check-every 1 \\
        [--warm-start] [--prefill-iterations P] [--kv-budget B] [--verbose]

With --generate the reference mirrors the runtime's generation loop
(Session::generate): greedy picks, per-token early exit (`generate`,
`Session.feed_adaptive`, `ExitState`) and prints the (token, iterations) trace.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass

import numpy as np
import gguf
from gguf import GGMLQuantizationType as QT

ARCH = "huginn"

# Types the schema allows for "matrix" tensors (norm weights and biases are F32).
MATRIX_TYPES = {
    QT.F32, QT.F16, QT.BF16, QT.Q8_0, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1,
    QT.Q2_K, QT.Q3_K, QT.Q4_K, QT.Q5_K, QT.Q6_K,
}

MASK64 = (1 << 64) - 1


# ---------------------------------------------------------------------------
# Seeded initial-state generator (docs/gguf.md, "The seeded initial state")
# ---------------------------------------------------------------------------

class SplitMix64:
    """SplitMix64 over a 64-bit state, with Python ints masked to 64 bits."""

    def __init__(self, seed: int):
        self.state = seed & MASK64

    def next_u64(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def uniform(self) -> float:
        """A double in [0, 1): the top 53 bits of one draw, times 2^-53."""
        return (self.next_u64() >> 11) * (2.0 ** -53)

    def truncated_normal(self) -> float:
        """One standard normal cut at 3: Box-Muller (cosine branch only),
        both uniforms redrawn while |z| > 3."""
        while True:
            u1 = self.uniform()
            u2 = self.uniform()
            z = math.sqrt(-2.0 * math.log(1.0 - u1)) * math.cos(2.0 * math.pi * u2)
            if abs(z) <= 3.0:
                return z


# ---------------------------------------------------------------------------
# Loading a GGUF file
# ---------------------------------------------------------------------------

@dataclass
class HParams:
    d: int                      # residual width
    ffn: int                    # width of one MLP half
    vocab: int
    context_length: int
    n_prelude: int
    n_core: int
    n_coda: int
    n_head: int
    n_head_kv: int
    head_dim: int
    eps: float
    rope_base: float
    rope_pairing: str           # "adjacent" or "neox"
    block_type: str             # "sandwich" or "prenorm"
    embedding_scale: float
    default_recurrence: int
    state_init_std: float
    norm_after_recurrence: bool
    norm_after_step: bool = False       # ouro: output_norm ends every step
    state_from_embedding: bool = False  # ouro: the state starts as the embedding


def _field(reader: gguf.GGUFReader, key: str, default=None, required=False):
    """The scalar/string value of a metadata key, or `default` when absent."""
    f = reader.fields.get(key)
    if f is None:
        if required:
            raise ValueError(f"missing required metadata key {key!r}")
        return default
    return f.contents()


def _as_f64(x) -> float:
    """A metadata float as float64 (f32 values are widened exactly)."""
    return float(x)


def dequantize_tensor(t) -> np.ndarray:
    """A GGUF tensor as float64 numpy, in numpy (reversed-ggml) layout.

    The GGUF shape lists ne0 first (the contiguous dimension); the numpy array
    is shaped reversed(shape), so a ggml matrix [in=ne0, out=ne1] becomes a
    numpy [out, in] array (PyTorch's Linear layout) and y = x @ W.T.
    """
    shape = tuple(int(n) for n in reversed(t.shape.tolist()))
    data = gguf.quants.dequantize(t.data, t.tensor_type)
    return np.asarray(data, dtype=np.float64).reshape(shape)


def _tensor_getter(tensors: dict, used: set):
    """get(name, ggml_shape, matrix, optional=False): a tensor of the file
    as float64 (PyTorch order), checked for shape and type (matrices any
    supported type, vectors F32), its name recorded in `used`."""
    def get(name, ggml_shape, matrix, optional=False):
        t = tensors.get(name)
        if t is None:
            if optional:
                return None
            raise ValueError(f"missing tensor {name}")
        used.add(name)
        shape = [int(n) for n in t.shape.tolist()]
        if shape != list(ggml_shape):
            raise ValueError(f"tensor {name}: ggml shape {shape}, expected {list(ggml_shape)}")
        allowed = MATRIX_TYPES if matrix else {QT.F32}
        if t.tensor_type not in allowed:
            raise ValueError(f"tensor {name}: type {t.tensor_type.name} not allowed here")
        return dequantize_tensor(t)
    return get


class Model:
    """Hyper-parameters and float64 weights of a `huginn` GGUF file."""

    def __init__(self, path: str):
        reader = gguf.GGUFReader(path, "r")
        arch = _field(reader, "general.architecture", required=True)
        if arch == "ouro":
            self._init_ouro(reader)
            return
        if arch != ARCH:
            raise ValueError(f"general.architecture is {arch!r}, expected {ARCH!r}")

        def key(name, default=None, required=False):
            return _field(reader, f"{ARCH}.{name}", default, required)

        block_type = key("block_type", "sandwich")
        if block_type not in ("sandwich", "prenorm"):
            raise ValueError(f"{ARCH}.block_type {block_type!r} is not 'sandwich' or 'prenorm'")

        d = int(key("embedding_length", required=True))
        n_head = int(key("attention.head_count", required=True))
        n_head_kv = int(key("attention.head_count_kv", n_head))
        if n_head_kv <= 0 or n_head % n_head_kv != 0:
            raise ValueError("attention.head_count_kv must divide attention.head_count")
        head_dim = int(key("attention.key_length", d // n_head))
        if head_dim <= 0 or head_dim % 2 != 0:
            raise ValueError("attention.key_length (head dimension) must be positive and even")
        pairing = key("rope.pairing", "adjacent")
        if pairing not in ("adjacent", "neox"):
            raise ValueError(f"{ARCH}.rope.pairing {pairing!r} is not 'adjacent' or 'neox'")

        n_prelude = int(key("prelude_block_count", required=True))
        n_core = int(key("core_block_count", required=True))
        n_coda = int(key("coda_block_count", required=True))
        n_blocks = int(key("block_count", required=True))
        if n_core < 1 or n_prelude + n_core + n_coda != n_blocks:
            raise ValueError("block counts: need core >= 1 and prelude + core + coda == block_count")

        tensors = {t.name: t for t in reader.tensors}
        if "token_embd.weight" not in tensors:
            raise ValueError("missing tensor token_embd.weight")
        vocab = int(tensors["token_embd.weight"].shape[1])

        self.hp = HParams(
            d=d,
            ffn=int(key("feed_forward_length", required=True)),
            vocab=vocab,
            context_length=int(key("context_length", required=True)),
            n_prelude=n_prelude, n_core=n_core, n_coda=n_coda,
            n_head=n_head, n_head_kv=n_head_kv, head_dim=head_dim,
            eps=_as_f64(key("attention.layer_norm_rms_epsilon", required=True)),
            rope_base=_as_f64(key("rope.freq_base", 10000.0)),
            rope_pairing=pairing,
            block_type=block_type,
            embedding_scale=_as_f64(key("embedding_scale", math.sqrt(d))),
            default_recurrence=int(key("recurrence.default", 32)),
            state_init_std=_as_f64(key("recurrence.state_init_std", math.sqrt(2.0 / (5.0 * d)))),
            norm_after_recurrence=bool(key("norm_after_recurrence", True)),
        )
        self._load_tensors(tensors)

    def _init_ouro(self, reader) -> None:
        """An `ouro` file (docs/gguf.md): every block looped, norms around each
        sublayer, output_norm after every loop, the state starting as the
        embedding; separate q/k/v and gate/up (fused here), an exit gate."""
        def key(name, default=None, required=False):
            return _field(reader, f"ouro.{name}", default, required)

        d = int(key("embedding_length", required=True))
        n_head = int(key("attention.head_count", required=True))
        n_head_kv = int(key("attention.head_count_kv", n_head))
        head_dim = int(key("attention.key_length", d // n_head))
        tensors = {t.name: t for t in reader.tensors}
        vocab = int(tensors["token_embd.weight"].shape[1])
        n_layers = int(key("block_count", required=True))
        self.hp = HParams(
            d=d, ffn=int(key("feed_forward_length", required=True)), vocab=vocab,
            context_length=int(key("context_length", required=True)),
            n_prelude=0, n_core=n_layers, n_coda=0,
            n_head=n_head, n_head_kv=n_head_kv, head_dim=head_dim,
            eps=_as_f64(key("attention.layer_norm_rms_epsilon", required=True)),
            rope_base=_as_f64(key("rope.freq_base", 10000.0)), rope_pairing="neox",
            block_type="perinorm", embedding_scale=1.0,
            default_recurrence=int(key("loop_count", 4)), state_init_std=0.0,
            norm_after_recurrence=False, norm_after_step=True, state_from_embedding=True,
        )
        hp = self.hp
        q, kv = n_head * head_dim, n_head_kv * head_dim
        used = set()

        get = _tensor_getter(tensors, used)

        self.token_embd = get("token_embd.weight", [d, vocab], True)
        self.blocks = []
        for n in range(n_layers):
            p = f"blk.{n}."
            self.blocks.append({
                "attn_norm": get(p + "attn_norm.weight", [d], False),
                "attn_qkv": np.concatenate([get(p + "attn_q.weight", [d, q], True),
                                            get(p + "attn_k.weight", [d, kv], True),
                                            get(p + "attn_v.weight", [d, kv], True)], axis=0),
                "attn_q_bias": None, "attn_k_bias": None,
                "attn_output": get(p + "attn_output.weight", [q, d], True),
                "attn_post_norm": get(p + "attn_post_norm.weight", [d], False),
                "ffn_norm": get(p + "ffn_norm.weight", [d], False),
                "ffn_gate_up": np.concatenate([get(p + "ffn_gate.weight", [d, hp.ffn], True),
                                               get(p + "ffn_up.weight", [d, hp.ffn], True)], axis=0),
                "ffn_down": get(p + "ffn_down.weight", [hp.ffn, d], True),
                "ffn_post_norm": get(p + "ffn_post_norm.weight", [d], False),
            })
        self.adapter = None
        self.output_norm = get("output_norm.weight", [d], False)
        head = get("output.weight", [d, vocab], True, optional=True)
        self.tied = head is None
        self.output = self.token_embd if head is None else head
        self.gate_w = get("exit_gate.weight", [d], False)
        self.gate_b = float(get("exit_gate.bias", [1], False)[0])
        extra = set(tensors) - used
        if extra:
            raise ValueError(f"unexpected tensor {sorted(extra)[0]}")

    # -- tensors ------------------------------------------------------------

    def _load_tensors(self, tensors: dict) -> None:
        hp = self.hp
        q, kv = hp.n_head * hp.head_dim, hp.n_head_kv * hp.head_dim
        used = set()

        get = _tensor_getter(tensors, used)

        self.token_embd = get("token_embd.weight", [hp.d, hp.vocab], True)      # [vocab, d]
        self.blocks = []
        for n in range(hp.n_prelude + hp.n_core + hp.n_coda):
            p = f"blk.{n}."
            b = {
                "attn_norm": get(p + "attn_norm.weight", [hp.d], False),
                "attn_qkv": get(p + "attn_qkv.weight", [hp.d, q + 2 * kv], True),    # [q+2kv, d]
                "attn_q_bias": get(p + "attn_q.bias", [q], False, optional=True),
                "attn_k_bias": get(p + "attn_k.bias", [kv], False, optional=True),
                "attn_output": get(p + "attn_output.weight", [q, hp.d], True),       # [d, q]
                "attn_post_norm": get(p + "attn_post_norm.weight", [hp.d], False)
                if hp.block_type == "sandwich" else None,
                "ffn_norm": get(p + "ffn_norm.weight", [hp.d], False),
                "ffn_gate_up": get(p + "ffn_gate_up.weight", [hp.d, 2 * hp.ffn], True),  # [2ffn, d]
                "ffn_down": get(p + "ffn_down.weight", [hp.ffn, hp.d], True),       # [d, ffn]
                "ffn_post_norm": get(p + "ffn_post_norm.weight", [hp.d], False)
                if hp.block_type == "sandwich" else None,
            }
            if (b["attn_q_bias"] is None) != (b["attn_k_bias"] is None):
                raise ValueError(f"blk.{n}: attn_q.bias and attn_k.bias must be both present or both absent")
            self.blocks.append(b)
        self.adapter = get("adapter.weight", [2 * hp.d, hp.d], True)             # [d, 2d]
        self.output_norm = get("output_norm.weight", [hp.d], False)
        out = get("output.weight", [hp.d, hp.vocab], True, optional=True)
        self.tied = out is None
        self.output = self.token_embd if out is None else out                   # [vocab, d]
        # Llama 3's RoPE frequency divisors (retrofitted Llama 3.x models).
        self.rope_factors = get("rope_freqs.weight", [hp.head_dim // 2], False, optional=True)

        unknown = [name for name in tensors if name not in used]
        if unknown:
            raise ValueError(f"unknown tensor {unknown[0]} for architecture {ARCH}")

    # block index helpers: prelude 0..P, core P..P+C, coda P+C..P+C+K
    def prelude_block(self, i):
        return self.blocks[i]

    def core_block(self, j):
        return self.blocks[self.hp.n_prelude + j]

    def coda_block(self, i):
        return self.blocks[self.hp.n_prelude + self.hp.n_core + i]


# ---------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------

def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """x / sqrt(mean(x^2) + eps) * w, over the last axis."""
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def rope(x: np.ndarray, positions: np.ndarray, base: float, pairing: str,
         factors: np.ndarray | None = None) -> np.ndarray:
    """Rotary embedding of x [n, heads, head_dim] at integer `positions` [n].

    Pair i (i = 0..head_dim/2-1) is rotated by angle pos * base^(-2i/head_dim):
        x0' = x0 cos - x1 sin,   x1' = x0 sin + x1 cos
    "adjacent" pairs are (x[2i], x[2i+1]) (ggml normal mode, Huginn);
    "neox" pairs are (x[i], x[i + head_dim/2]). `factors` [head_dim/2]
    divide the frequencies (Llama 3's RoPE scaling).
    """
    head_dim = x.shape[-1]
    half = head_dim // 2
    inv_freq = base ** (-2.0 * np.arange(half, dtype=np.float64) / head_dim)   # [half]
    if factors is not None:     # pair i turns at base^(-2i/head_dim) / factors[i]
        inv_freq = inv_freq / np.asarray(factors, dtype=np.float64)
    angle = positions.astype(np.float64)[:, None] * inv_freq[None, :]          # [n, half]
    cos = np.cos(angle)[:, None, :]                                              # [n, 1, half]
    sin = np.sin(angle)[:, None, :]
    if pairing == "adjacent":
        x0, x1 = x[..., 0::2], x[..., 1::2]
    else:
        x0, x1 = x[..., :half], x[..., half:]
    y0 = x0 * cos - x1 * sin
    y1 = x0 * sin + x1 * cos
    out = np.empty_like(x)
    if pairing == "adjacent":
        out[..., 0::2], out[..., 1::2] = y0, y1
    else:
        out[..., :half], out[..., half:] = y0, y1
    return out


class KVCache:
    """Explicit cache: (layer key, slot) -> {position: (k row, v row)}.

    Layer keys are ("prelude", i), ("core", j) and ("coda", i); prelude and
    coda layers use slot 0 only, core layer j uses slots 0..B-1.
    """

    def __init__(self):
        self.rows: dict[tuple, dict[int, tuple[np.ndarray, np.ndarray]]] = {}

    def write(self, key, positions, k, v):
        """Store rows k[i], v[i] ([heads_kv, head_dim]) at positions[i],
        replacing any earlier row at that position (latest write wins)."""
        slot = self.rows.setdefault(key, {})
        for i, p in enumerate(positions):
            slot[int(p)] = (k[i].copy(), v[i].copy())

    def read(self, key, n_positions):
        """K and V [n_positions, heads_kv, head_dim] for positions 0..n-1."""
        slot = self.rows.get(key, {})
        missing = [p for p in range(n_positions) if p not in slot]
        if missing:
            raise RuntimeError(f"KV cache {key}: no row for position {missing[0]}")
        k = np.stack([slot[p][0] for p in range(n_positions)])
        v = np.stack([slot[p][1] for p in range(n_positions)])
        return k, v

    def copy_rows(self, src_key, dst_key, positions):
        """Copy the rows of `positions` from one (layer, slot) to another."""
        src = self.rows[src_key]
        dst = self.rows.setdefault(dst_key, {})
        for p in positions:
            k, v = src[int(p)]
            dst[int(p)] = (k.copy(), v.copy())


def attention(model: Model, blk: dict, h: np.ndarray, positions: np.ndarray,
              cache: KVCache, cache_key) -> np.ndarray:
    """Causal self-attention of a chunk h [n, d] at `positions` (consecutive,
    following every position already in the cache under `cache_key`)."""
    hp = model.hp
    n = h.shape[0]
    H, Hkv, hd = hp.n_head, hp.n_head_kv, hp.head_dim

    qkv = h @ blk["attn_qkv"].T                       # [n, q + 2kv]; rows q, then k, then v
    q = qkv[:, : H * hd].reshape(n, H, hd)
    k = qkv[:, H * hd: (H + Hkv) * hd].reshape(n, Hkv, hd)
    v = qkv[:, (H + Hkv) * hd:].reshape(n, Hkv, hd)
    if blk["attn_q_bias"] is not None:                # per head, per dim; before RoPE
        q = q + blk["attn_q_bias"].reshape(H, hd)
        k = k + blk["attn_k_bias"].reshape(Hkv, hd)
    factors = getattr(model, "rope_factors", None)
    q = rope(q, positions, hp.rope_base, hp.rope_pairing, factors)
    k = rope(k, positions, hp.rope_base, hp.rope_pairing, factors)

    cache.write(cache_key, positions, k, v)
    n_kv = int(positions[-1]) + 1
    K, V = cache.read(cache_key, n_kv)                # [n_kv, Hkv, hd]

    # causal mask: query at position p sees keys at positions <= p
    visible = np.arange(n_kv)[None, :] <= positions[:, None]    # [n, n_kv]
    group = H // Hkv                                   # q heads per kv head
    out = np.empty((n, H, hd))
    for head in range(H):
        g = head // group
        scores = (q[:, head, :] @ K[:, g, :].T) / math.sqrt(hd)
        scores = np.where(visible, scores, -np.inf)
        scores -= scores.max(axis=-1, keepdims=True)
        p = np.exp(scores)
        p /= p.sum(axis=-1, keepdims=True)
        out[:, head, :] = p @ V[:, g, :]
    return out.reshape(n, H * hd) @ blk["attn_output"].T


def mlp(model: Model, blk: dict, h: np.ndarray) -> np.ndarray:
    """fc -> halves a (first ffn outputs), b -> down(silu(a) * b)."""
    ab = h @ blk["ffn_gate_up"].T
    a, b = ab[:, : model.hp.ffn], ab[:, model.hp.ffn:]
    return (silu(a) * b) @ blk["ffn_down"].T


def sandwich_block(model: Model, blk: dict, x: np.ndarray, positions: np.ndarray,
                   cache: KVCache, cache_key) -> np.ndarray:
    """x = n2(attn(n1(x)) + x);  x = n4(mlp(n3(x)) + x)."""
    eps = model.hp.eps
    a = attention(model, blk, rms_norm(x, blk["attn_norm"], eps), positions, cache, cache_key)
    x = rms_norm(a + x, blk["attn_post_norm"], eps)
    m = mlp(model, blk, rms_norm(x, blk["ffn_norm"], eps))
    return rms_norm(m + x, blk["ffn_post_norm"], eps)


def prenorm_block(model: Model, blk: dict, x: np.ndarray, positions: np.ndarray,
                  cache: KVCache, cache_key) -> np.ndarray:
    """x = x + attn(n1(x));  x = x + mlp(n2(x))."""
    eps = model.hp.eps
    x = x + attention(model, blk, rms_norm(x, blk["attn_norm"], eps), positions, cache, cache_key)
    return x + mlp(model, blk, rms_norm(x, blk["ffn_norm"], eps))


def perinorm_block(model: Model, blk: dict, x: np.ndarray, positions: np.ndarray,
                   cache: KVCache, cache_key) -> np.ndarray:
    """x = x + n2(attn(n1(x)));  x = x + n4(mlp(n3(x)))  (Ouro)."""
    eps = model.hp.eps
    a = attention(model, blk, rms_norm(x, blk["attn_norm"], eps), positions, cache, cache_key)
    x = x + rms_norm(a, blk["attn_post_norm"], eps)
    m = mlp(model, blk, rms_norm(x, blk["ffn_norm"], eps))
    return x + rms_norm(m, blk["ffn_post_norm"], eps)


def block(model: Model, blk: dict, x: np.ndarray, positions: np.ndarray,
          cache: KVCache, cache_key) -> np.ndarray:
    """The model's block type applied to x."""
    f = {"sandwich": sandwich_block, "prenorm": prenorm_block,
         "perinorm": perinorm_block}[model.hp.block_type]
    return f(model, blk, x, positions, cache, cache_key)


# ---------------------------------------------------------------------------
# A session: cache + generator + position counter
# ---------------------------------------------------------------------------

class Session:
    """Feeds chunks of tokens through the model, keeping the KV cache.

    kv_budget: B, the number of cache slots per core layer.
    init: "zeros" or an integer seed for the truncated-normal initial state.
    """

    def __init__(self, model: Model, kv_budget: int, init="zeros"):
        if kv_budget < 1:
            raise ValueError("kv budget must be >= 1")
        self.model = model
        self.B = kv_budget
        self.cache = KVCache()
        self.n_past = 0
        self.rng = None if init == "zeros" else SplitMix64(int(init))
        self.last_state = None   # the state after the last core step (for tests)

    def initial_state(self, n: int) -> np.ndarray:
        """x0 for n new positions: zeros, or seeded truncated normals drawn
        position-major (feature fastest), z * std * scale rounded to f32."""
        hp = self.model.hp
        if self.rng is None or hp.state_init_std == 0.0:
            return np.zeros((n, hp.d))
        x = np.empty((n, hp.d))
        for i in range(n):
            for f in range(hp.d):
                z = self.rng.truncated_normal()
                x[i, f] = np.float32(z * hp.state_init_std * hp.embedding_scale)
        return x

    def _check_chunk(self, ids) -> np.ndarray:
        hp = self.model.hp
        ids = np.asarray(ids, dtype=np.int64)
        n = len(ids)
        if n == 0:
            raise ValueError("empty chunk")
        if ids.min() < 0 or ids.max() >= hp.vocab:
            raise ValueError(f"token id out of range 0..{hp.vocab - 1}")
        if self.n_past + n > hp.context_length:
            raise ValueError("context length exceeded")
        return ids

    def _prelude(self, ids: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Embedding and prelude blocks of a chunk: e [n, d]."""
        model, hp = self.model, self.model.hp
        e = model.token_embd[ids] * hp.embedding_scale
        for i in range(hp.n_prelude):
            e = block(model, model.prelude_block(i), e, positions, self.cache, ("prelude", i))
        return e

    def _core_step(self, x: np.ndarray, e: np.ndarray, positions: np.ndarray, t: int) -> np.ndarray:
        """Recurrence step t (1-based): adapter, then every core block on slot (t-1) mod B."""
        model, hp = self.model, self.model.hp
        slot = (t - 1) % self.B
        if model.adapter is not None:
            x = np.concatenate([x, e], axis=-1) @ model.adapter.T
        for j in range(hp.n_core):
            x = block(model, model.core_block(j), x, positions, self.cache, ("core", j, slot))
        if hp.norm_after_step:
            x = rms_norm(x, model.output_norm, hp.eps)
        return x

    def _fill_unreached(self, steps: int, positions: np.ndarray) -> None:
        """A chunk that stopped before using every slot leaves its deepest entry
        in the slots it never reached, so later tokens read its latest state."""
        if steps < self.B:
            for j in range(self.model.hp.n_core):
                for s in range(steps, self.B):
                    self.cache.copy_rows(("core", j, steps - 1), ("core", j, s), positions)

    def _coda_head(self, x: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Coda and head on the state x [n, d]; (re)writes the coda's K/V rows
        of `positions` (the last write is the one later tokens read)."""
        model, hp = self.model, self.model.hp
        if hp.norm_after_recurrence:
            x = rms_norm(x, model.output_norm, hp.eps)
        for i in range(hp.n_coda):
            x = block(model, model.coda_block(i), x, positions, self.cache, ("coda", i))
        if not hp.norm_after_step:      # (else every step ended with it)
            x = rms_norm(x, model.output_norm, hp.eps)
        return x @ model.output.T

    def feed(self, ids, iterations: int) -> np.ndarray:
        """Run tokens `ids` (one chunk, at the next positions) for `iterations`
        recurrence steps; return their logits [n, vocab] in float64."""
        if iterations < 1:
            raise ValueError("iterations must be >= 1")
        ids = self._check_chunk(ids)
        n = len(ids)
        positions = np.arange(self.n_past, self.n_past + n)

        # 1. embedding and prelude
        e = self._prelude(ids, positions)
        # 2. recurrence: step t uses slot (t-1) mod B of every core layer
        x = e.copy() if self.model.hp.state_from_embedding else self.initial_state(n)
        for t in range(1, iterations + 1):
            x = self._core_step(x, e, positions, t)
        self._fill_unreached(iterations, positions)
        self.last_state = x
        # 3. coda and head
        logits = self._coda_head(x, positions)
        self.n_past += n
        return logits

    def feed_adaptive(self, token: int, limits: "ComputeLimits", warm_state=None):
        """Run one token under per-token compute limits (docs/semantics.md, section 2, the
        runtime's generation loop): the core runs step by step; at each check
        step the exit criterion is evaluated (criteria on the next-token
        distribution run the coda and head at that step, rewriting the coda's
        K/V rows of this position; latent criteria read the state x_t); the
        token stops at the first check with t >= min_iterations whose value
        says exit (with `lead_in`, not the first check of a comparing
        criterion), or at max_iterations. After a latent exit the coda runs on
        the exit state. `warm_state` [d] replaces the initial state (the
        generator is still drawn from, as the runtime does).

        Returns a TokenRun (logits [vocab] of the exit step, iterations used,
        last criterion value, final state [d], per-check records).
        """
        lim = limits
        ids = self._check_chunk([token])
        positions = np.arange(self.n_past, self.n_past + 1)
        crit = lim.criterion
        needs_logits = crit in LOGIT_CRITERIA
        needs_latent = crit in LATENT_CRITERIA
        exit_state = ExitState(self.model.hp.vocab, self.model.hp.d)
        survival = 1.0      # gate: prod (1 - lambda_j) over this token's steps

        e = self._prelude(ids, positions)
        x = e.copy() if self.model.hp.state_from_embedding else self.initial_state(1)
        if warm_state is not None:
            x = np.asarray(warm_state, dtype=np.float64).reshape(1, -1).copy()
        t = 0
        value = math.nan
        logits = None
        checks = []
        while True:
            t += 1
            x = self._core_step(x, e, positions, t)
            if not lim.is_check(t):
                continue
            if needs_logits or t == lim.max_iterations:
                logits = self._coda_head(x, positions)[-1]
            if needs_logits:
                value = exit_state.observe_logits(crit, logits)
            elif needs_latent:
                value = exit_state.observe_latent(crit, x[-1])
            elif crit == "gate":
                # lambda_t = sigmoid(w . x_t + b) on the step's normed state;
                # the value is the probability of having exited by step t.
                lam = 1.0 / (1.0 + math.exp(-(float(np.dot(self.model.gate_w, x[-1])) + self.model.gate_b)))
                survival *= 1.0 - lam
                value = 1.0 - survival
            checks.append(CheckRecord(t, value, None if logits is None or not needs_logits
                                      else top2_gap(logits)))
            if t >= lim.max_iterations:
                break
            lead = lim.lead_in and crit in COMPARING_CRITERIA and len(checks) == 1
            if t >= lim.min_iterations and not lead and should_exit(crit, lim.threshold, value):
                if not needs_logits:
                    logits = self._coda_head(x, positions)[-1]
                break
        self._fill_unreached(t, positions)
        self.last_state = x
        self.n_past += 1
        return TokenRun(logits=logits, iterations=t, value=value, state=x[-1].copy(), checks=checks)


def greedy(logits_row: np.ndarray) -> int:
    """argmax, ties to the lowest id (np.argmax returns the first maximum)."""
    return int(np.argmax(logits_row))


def run(model: Model, prompt, iterations: int, kv_budget: int | None = None, init="zeros",
        decode: int = 0, force_tokens=None, decode_iterations=None):
    """Prefill `prompt` in one chunk, then decode one token at a time.

    decode: number of greedy tokens (each is fed back); force_tokens: feed
    these instead (teacher forcing). decode_iterations: optional per-decoded-
    token iteration counts (default: `iterations` for every token).
    Returns (logits [n_fed, vocab] f64, tokens fed, greedy picks, B used).
    """
    n_dec = len(force_tokens) if force_tokens is not None else decode
    its = list(decode_iterations) if decode_iterations else [iterations] * n_dec
    if len(its) != n_dec:
        raise ValueError("decode-iterations needs one entry per decoded token")
    B = kv_budget if kv_budget is not None else max([iterations] + its)
    sess = Session(model, B, init)
    rows = [sess.feed(prompt, iterations)]
    tokens = list(prompt)
    generated = []
    for i in range(n_dec):
        pick = greedy(rows[-1][-1])
        generated.append(pick)
        tok = force_tokens[i] if force_tokens is not None else pick
        tokens.append(tok)
        rows.append(sess.feed([tok], its[i]))
    return np.concatenate(rows, axis=0), tokens, generated, B


# ---------------------------------------------------------------------------
# Generation under per-token compute limits (docs/semantics.md, section 2; the runtime's
# src/generate.rs and src/exit.rs)
# ---------------------------------------------------------------------------

EXIT_CRITERIA = ("none", "kl", "minp-kl", "entropy-diff", "latent-diff", "cosine", "argmax-stability",
                 "gate", "confidence")
LOGIT_CRITERIA = ("kl", "minp-kl", "entropy-diff", "argmax-stability", "confidence")
LATENT_CRITERIA = ("latent-diff", "cosine")
# Criteria whose value compares a check with the previous one (their first
# check has a conventional reference only).
COMPARING_CRITERIA = ("kl", "minp-kl", "entropy-diff", "argmax-stability", "latent-diff", "cosine")
DEFAULT_THRESHOLDS = {
    "none": 0.0, "kl": 5e-4, "minp-kl": 1e-5, "entropy-diff": 1e-3,
    "latent-diff": 0.03, "cosine": 1e-3, "argmax-stability": 5.0, "gate": 0.9,
    "confidence": 0.9,
}
MINP_KL_LEVEL = 0.1     # minp-kl sets p < 0.1 p_max to 1/V, then renormalises
FIRST_CHECK_ENTROPY = 100.0  # entropy-diff's "previous entropy" at a token's first check
KL_PROB_FLOOR = 1e-10   # a zero current probability where the previous one is not


def parse_exit(spec: str):
    """'name' or 'name:threshold' -> (criterion, threshold), validated like the runtime."""
    name, _, thr = spec.partition(":")
    name = name.strip()
    if name not in EXIT_CRITERIA:
        raise ValueError(f"unknown exit criterion {name!r}")
    threshold = DEFAULT_THRESHOLDS[name] if thr == "" and ":" not in spec else float(thr)
    validate_threshold(name, threshold)
    return name, threshold


def validate_threshold(criterion: str, threshold: float) -> None:
    if math.isnan(threshold) or threshold < 0.0:
        raise ValueError(f"exit threshold for {criterion} must be >= 0, got {threshold}")
    if criterion == "argmax-stability" and math.isfinite(threshold) \
            and (threshold < 1.0 or threshold != int(threshold)):
        raise ValueError(f"exit threshold for argmax-stability must be an integer >= 1, got {threshold}")


def should_exit(criterion: str, threshold: float, value: float) -> bool:
    """value < threshold (value >= threshold for argmax-stability, gate and
    confidence); never for 'none'; a NaN value never exits."""
    if criterion == "none" or math.isnan(value):
        return False
    if criterion in ("argmax-stability", "gate", "confidence"):
        return value >= threshold
    return value < threshold


@dataclass
class ComputeLimits:
    min_iterations: int = 1
    max_iterations: int = 32
    criterion: str = "none"
    threshold: float = 0.0
    check_every: int = 1
    warm_start: bool = False
    # The runtime's lead-in (docs/semantics.md, "The lead-in check"): the
    # first check of a comparing criterion cannot end a token. False is the
    # authors' behaviour.
    lead_in: bool = False

    def validate(self) -> None:
        if not 1 <= self.max_iterations <= 4096:
            raise ValueError(f"max_iterations {self.max_iterations} out of range 1..=4096")
        if not 1 <= self.min_iterations <= self.max_iterations:
            raise ValueError("min_iterations must be in 1..=max_iterations")
        if self.check_every < 1:
            raise ValueError("check_every must be at least 1")
        if self.criterion not in EXIT_CRITERIA:
            raise ValueError(f"unknown exit criterion {self.criterion!r}")
        validate_threshold(self.criterion, self.threshold)

    def is_check(self, t: int) -> bool:
        """Whether the criterion is evaluated after step t (1-based): always at
        max_iterations; with a criterion, at min, min + c, min + 2c, ...;
        gate (which accumulates over steps) after every step."""
        return t == self.max_iterations or self.criterion == "gate" or (
            self.criterion != "none" and t >= self.min_iterations
            and (t - self.min_iterations) % self.check_every == 0)


@dataclass
class CheckRecord:
    step: int
    value: float
    logit_gap: float | None     # top-1 minus top-2 logit at this check (logit criteria)


@dataclass
class TokenRun:
    logits: np.ndarray
    iterations: int
    value: float
    state: np.ndarray
    checks: list


def top2_gap(logits: np.ndarray) -> float:
    """Largest minus second-largest logit (how safe an argmax is)."""
    if len(logits) < 2:
        return math.inf
    a = np.partition(np.asarray(logits, dtype=np.float64), -2)
    return float(a[-1] - a[-2])


def log_softmax_stats(logits: np.ndarray):
    """Stable float64 log-softmax, as src/exit.rs: returns (logp, entropy,
    max_logp, minp_log_mass, argmax). NaN counts as -inf; +inf logits give a
    uniform distribution over them; all -inf gives a uniform distribution."""
    l = np.asarray(logits, dtype=np.float64).copy()
    l[np.isnan(l)] = -np.inf
    argmax = int(np.argmax(l))          # first maximum = lowest id
    mx = l[argmax]
    if math.isinf(mx):
        if mx > 0:
            keep = l == np.inf
        else:
            keep = np.ones(len(l), dtype=bool)
        lp = -math.log(int(keep.sum()))
        out = np.where(keep, lp, -np.inf)
        dropped = int(len(l) - keep.sum())
        return out, -lp, lp, math.log(1.0 + dropped / len(l)), argmax
    s = l - mx
    log_z = math.log(float(np.sum(np.exp(s))))
    out = s - log_z
    fin = out > -np.inf
    p = np.exp(out[fin])
    entropy = max(0.0, float(-np.sum(p * out[fin])))
    cut = math.log(MINP_KL_LEVEL) - log_z
    keep = out >= cut
    kept = float(np.sum(np.exp(out[keep])))
    dropped = int(len(out) - keep.sum())
    return out, entropy, -log_z, math.log(kept + dropped / len(out)), argmax


def _minp_filtered(lp: np.ndarray, max_logp: float, log_norm: float, ln_v: float) -> np.ndarray:
    """The authors' min-p(0.1) filter: probabilities below 0.1 p_max become
    1/V, then the distribution is renormalised (log_norm = ln of its sum)."""
    cut = max_logp + math.log(MINP_KL_LEVEL)
    return np.where(lp >= cut, lp, -ln_v) - log_norm


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    """KL(p || q) over log-probabilities: terms with p = 0 contribute 0, a
    zero q where p > 0 is floored at KL_PROB_FLOOR."""
    live = p > -np.inf
    lq = np.maximum(q, math.log(KL_PROB_FLOOR))
    return max(float(np.sum(np.exp(p[live]) * (p[live] - lq[live]))), 0.0)


def _kl_from_uniform(q: np.ndarray, ln_v: float) -> float:
    """KL(uniform || q) = -ln V - mean(ln q), zeros of q floored."""
    lq = np.maximum(q, math.log(KL_PROB_FLOOR))
    return max(-ln_v - float(np.mean(lq)), 0.0)


class ExitState:
    """The previous check's distribution and latent state of one token (reset
    per token); mirrors ExitState in src/exit.rs."""

    def __init__(self, vocab: int, d: int):
        self.vocab, self.d = vocab, d
        self.reset()

    def reset(self):
        self.prev = None            # (logp, entropy, max_logp, minp_log_norm, argmax)
        self.argmax_run = 0
        self.prev_latent = None

    def observe_logits(self, criterion: str, logits: np.ndarray) -> float:
        cur = log_softmax_stats(logits)
        logp, entropy, max_logp, minp_log_norm, argmax = cur
        ln_v = math.log(self.vocab)
        first = self.prev is None
        # The authors' definitions: KL from the previous check's distribution
        # (uniform at the first check) to the current one.
        if criterion == "kl":
            value = _kl_from_uniform(logp, ln_v) if first else _kl(self.prev[0], logp)
        elif criterion == "minp-kl":
            cur_f = _minp_filtered(logp, max_logp, minp_log_norm, ln_v)
            if first:
                value = _kl_from_uniform(cur_f, ln_v)
            else:
                prev_f = _minp_filtered(self.prev[0], self.prev[2], self.prev[3], ln_v)
                value = _kl(prev_f, cur_f)
        elif criterion == "entropy-diff":
            prev_h = FIRST_CHECK_ENTROPY if first else self.prev[1]
            value = abs(entropy - prev_h)
        elif criterion == "argmax-stability":
            value = float(self.argmax_run + 1) if (not first and argmax == self.prev[4]) else 0.0
        elif criterion == "confidence":
            # This check's top probability alone (no previous check needed).
            value = math.exp(max_logp)
        else:
            value = math.nan
        self.argmax_run = self.argmax_run + 1 if (not first and argmax == self.prev[4]) else 0
        self.prev = cur
        return value

    def observe_latent(self, criterion: str, x: np.ndarray) -> float:
        x = np.asarray(x, dtype=np.float64)
        first = self.prev_latent is None
        if criterion in LATENT_CRITERIA and first:
            value = 1.0
        elif criterion == "latent-diff":
            b = self.prev_latent
            diff2, norm2, prev2 = float(np.sum((x - b) ** 2)), float(np.sum(x * x)), float(np.sum(b * b))
            if norm2 == 0.0:
                value = 0.0 if prev2 == 0.0 else math.inf
            else:
                value = math.sqrt(diff2 / norm2)
        elif criterion == "cosine":
            b = self.prev_latent
            dot, na, nb = float(np.dot(x, b)), float(np.sum(x * x)), float(np.sum(b * b))
            if na == 0.0 or nb == 0.0:
                value = 0.0 if na == nb else 1.0
            else:
                d = 1.0 - dot / (math.sqrt(na) * math.sqrt(nb))
                value = d if math.isnan(d) else max(d, 0.0)
        else:
            value = math.nan
        self.prev_latent = x.copy()
        return value


@dataclass
class GeneratedToken:
    token: int
    iterations: int
    value: float                # criterion value at the last check (NaN for the first token)
    pick_gap: float             # top-1 minus top-2 logit of the distribution it was picked from
    checks: list                # CheckRecords of the run that produced its distribution


def generate(model: Model, prompt, n_tokens: int, limits: ComputeLimits,
             prefill_iterations: int | None = None, kv_budget: int = 1, init="zeros"):
    """Greedy generation of `n_tokens` tokens as the runtime's Session::generate:

    * the prompt runs as ONE chunk with a fixed `prefill_iterations` (default
      limits.max_iterations; no exit in prefill);
    * the first token is the argmax of the prefill logits (its iterations are
      the prefill's); every token but the last is fed back and runs under
      `limits` (Session.feed_adaptive);
    * warm start: a fed token starts from the previous batch's final state (the
      last prompt position's for the first one).

    Returns a list of GeneratedToken.
    """
    limits.validate()
    pre = prefill_iterations if prefill_iterations is not None else limits.max_iterations
    if not 1 <= pre <= 4096:
        raise ValueError(f"prefill_iterations {pre} out of range")
    sess = Session(model, kv_budget, init)
    logits = sess.feed(prompt, pre)[-1]
    prev_state = sess.last_state[-1].copy()
    iters, value, checks = pre, math.nan, []
    out = []
    for index in range(n_tokens):
        tok = greedy(logits)
        out.append(GeneratedToken(tok, iters, value, top2_gap(logits), checks))
        if index + 1 == n_tokens:
            break
        r = sess.feed_adaptive(tok, limits, prev_state if limits.warm_start else None)
        logits, iters, value, checks = r.logits, r.iterations, r.value, r.checks
        prev_state = r.state
    return out


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

def _int_list(s: str):
    return [int(v) for v in s.split(",") if v.strip() != ""]


def _parse_init(s: str):
    if s == "zeros":
        return "zeros"
    if s.startswith("seed:"):
        return int(s[len("seed:"):], 0)
    raise argparse.ArgumentTypeError("--init must be 'zeros' or 'seed:N'")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="float64 numpy reference forward for huginn GGUF files")
    ap.add_argument("--model", required=True, help="path to a huginn GGUF file")
    ap.add_argument("--tokens", required=True, type=_int_list, help="prompt token ids, comma-separated")
    ap.add_argument("--iterations", type=int, default=None,
                    help="recurrence steps per token (default: huginn.recurrence.default)")
    ap.add_argument("--kv-budget", type=int, default=None,
                    help="cache slots per core layer B (default: the largest iteration count, i.e. full cache)")
    ap.add_argument("--init", type=_parse_init, default="zeros", help="initial state: zeros | seed:N")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--decode", type=int, default=0, help="greedy-decode N tokens one at a time, feeding each back")
    g.add_argument("--force-tokens", type=_int_list, default=None,
                   help="teacher forcing: feed these tokens one at a time instead of greedy picks")
    g.add_argument("--generate", type=int, default=None, metavar="N",
                   help="greedy generation of N tokens under per-token compute limits "
                        "(as Session::generate); prints the (token, iterations) trace")
    ap.add_argument("--decode-iterations", type=_int_list, default=None,
                    help="optional per-decoded-token iteration counts (simulates early exits)")
    gl = ap.add_argument_group("compute limits (with --generate)")
    gl.add_argument("--min-iterations", type=int, default=1)
    gl.add_argument("--max-iterations", type=int, default=None,
                    help="default: --iterations, else huginn.recurrence.default")
    gl.add_argument("--exit", default="none", help="exit criterion: name or name:threshold (e.g. kl:1e-3)")
    gl.add_argument("--check-every", type=int, default=1)
    gl.add_argument("--warm-start", action="store_true",
                    help="each fed token starts from the previous token's final state")
    gl.add_argument("--lead-in", action="store_true",
                    help="the runtime's default: a comparing criterion's first check cannot end a token")
    gl.add_argument("--prefill-iterations", type=int, default=None,
                    help="fixed iterations of the prompt (default: --max-iterations)")
    gl.add_argument("--verbose", action="store_true", help="print every check's value")
    ap.add_argument("--out", default=None, help="write an .npz with logits, tokens, generated, metadata")
    args = ap.parse_args(argv)

    model = Model(args.model)
    if not args.tokens:
        ap.error("--tokens: at least one token")
    iterations = args.iterations if args.iterations is not None else model.hp.default_recurrence
    if args.generate is not None:
        return _main_generate(args, model, iterations)
    logits, tokens, generated, B = run(model, args.tokens, iterations, args.kv_budget, args.init,
                                       args.decode, args.force_tokens, args.decode_iterations)
    dec_its = args.decode_iterations or [iterations] * (len(tokens) - len(args.tokens))

    if args.out:
        np.savez(
            args.out,
            logits=logits.astype(np.float32),
            tokens=np.asarray(tokens, dtype=np.int32),
            generated=np.asarray(generated, dtype=np.int32),
            n_prompt=np.int32(len(args.tokens)),
            iterations=np.int32(iterations),
            kv_budget=np.int32(B),
            decode_iterations=np.asarray(dec_its, dtype=np.int32),
            init_seed=np.int64(-1 if args.init == "zeros" else args.init),   # -1: zero state
            forced=np.int32(args.force_tokens is not None),
        )

    hp = model.hp
    print(f"model: d={hp.d} heads={hp.n_head}/{hp.n_head_kv}x{hp.head_dim} ffn={hp.ffn} vocab={hp.vocab} "
          f"blocks={hp.n_prelude}/{hp.n_core}/{hp.n_coda} tied={model.tied} rope={hp.rope_pairing}")
    print(f"iterations={iterations} kv_budget={B} init={args.init} prompt={len(args.tokens)} "
          f"decoded={len(tokens) - len(args.tokens)}")
    print(f"logits: {logits.shape}  argmax per row (first 16): {np.argmax(logits, axis=-1)[:16].tolist()}")
    if generated:
        print(f"generated: {generated}")
    if args.out:
        print(f"wrote {args.out}")
    return 0


def _main_generate(args, model: Model, iterations: int) -> int:
    crit, thr = parse_exit(args.exit)
    max_it = args.max_iterations if args.max_iterations is not None else iterations
    limits = ComputeLimits(min_iterations=args.min_iterations, max_iterations=max_it, criterion=crit,
                           threshold=thr, check_every=args.check_every, warm_start=args.warm_start,
                           lead_in=args.lead_in)
    pre = args.prefill_iterations if args.prefill_iterations is not None else max_it
    B = args.kv_budget if args.kv_budget is not None else max(max_it, pre)
    trace = generate(model, args.tokens, args.generate, limits, pre, B, args.init)
    print(f"limits: min={limits.min_iterations} max={limits.max_iterations} exit={crit}:{thr} "
          f"check_every={limits.check_every} warm_start={limits.warm_start} prefill={pre} kv_budget={B}")
    print("tokens: " + ",".join(str(g.token) for g in trace))
    print("iterations: " + ",".join(str(g.iterations) for g in trace))
    if args.verbose:
        for i, g in enumerate(trace):
            checks = " ".join(f"{c.step}:{c.value:.4g}" for c in g.checks)
            print(f"  [{i}] token {g.token} it {g.iterations} gap {g.pick_gap:.3g}  checks {checks}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
