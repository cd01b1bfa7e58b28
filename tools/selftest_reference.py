#!/usr/bin/env python3
"""Self-test of tools/reference.py.

Builds tiny `huginn` GGUF files with gguf.GGUFWriter, following docs/gguf.md,
and checks properties of the reference that can fail:

  1. prefill of the whole prompt in one chunk == feeding tokens one at a time
     (the KV cache and position handling are right), for several budgets and
     for both initial states;
  2. RoPE == an explicit complex-number formulation (adjacent and neox);
  3. the recurrence budget: iterations=1 with B=1 equals B=r; B > r equals
     B = r; B=1 changes multi-token results when r > 1 (the budget is live);
     a token that stops early leaves its deepest entry in unreached slots;
  4. the seeded generator: SplitMix64 known answers, and the first 4 normals
     for seed 42 (printed for the Rust side);
plus loader checks: ggml shape order, tied == explicit output.weight, GQA ==
the same model with K/V heads duplicated, and quantized (Q8_0/F16/BF16)
tensors load in the right orientation.

Run: python3 tools/selftest_reference.py   (exit status 0 on success)
"""

from __future__ import annotations

import math
import os
import sys
import tempfile

import numpy as np
import gguf
from gguf import GGMLQuantizationType as QT

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference as ref  # noqa: E402

FAILURES = []


def check(name: str, ok: bool, detail: str = "") -> None:
    print(f"[{'ok' if ok else 'FAIL'}] {name}" + (f"  ({detail})" if detail else ""))
    if not ok:
        FAILURES.append(name)


def maxdiff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


# ---------------------------------------------------------------------------
# Tiny model writer (docs/gguf.md)
# ---------------------------------------------------------------------------

def make_weights(rng, d=16, n_head=2, n_head_kv=2, head_dim=8, ffn=24, vocab=40,
                 blocks=(1, 2, 1), qk_bias=True):
    """Random weights in numpy (PyTorch) layout: a Linear in->out is [out, in]."""
    q, kv = n_head * head_dim, n_head_kv * head_dim

    def mat(out_dim, in_dim):
        return (rng.standard_normal((out_dim, in_dim)) / math.sqrt(in_dim)).astype(np.float32)

    def norm():
        return (1.0 + 0.1 * rng.standard_normal(d)).astype(np.float32)

    w = {"token_embd.weight": (0.2 * rng.standard_normal((vocab, d))).astype(np.float32)}
    for n in range(sum(blocks)):
        p = f"blk.{n}."
        w[p + "attn_norm.weight"] = norm()
        w[p + "attn_qkv.weight"] = mat(q + 2 * kv, d)
        if qk_bias:
            w[p + "attn_q.bias"] = (0.3 * rng.standard_normal(q)).astype(np.float32)
            w[p + "attn_k.bias"] = (0.3 * rng.standard_normal(kv)).astype(np.float32)
        w[p + "attn_output.weight"] = mat(d, q)
        w[p + "attn_post_norm.weight"] = norm()
        w[p + "ffn_norm.weight"] = norm()
        w[p + "ffn_gate_up.weight"] = mat(2 * ffn, d)
        w[p + "ffn_down.weight"] = mat(d, ffn)
        w[p + "ffn_post_norm.weight"] = norm()
    w["adapter.weight"] = mat(d, 2 * d)
    w["output_norm.weight"] = norm()
    hp = dict(d=d, n_head=n_head, n_head_kv=n_head_kv, head_dim=head_dim, ffn=ffn,
              vocab=vocab, blocks=blocks)
    return hp, w


def write_gguf(path, hp, weights, qtype=QT.F32, extra_kv=None):
    """Write a huginn GGUF. Matrices are stored as `qtype`, norms/biases F32."""
    P, C, K = hp["blocks"]
    wr = gguf.GGUFWriter(path, ref.ARCH)  # writes general.architecture
    wr.add_string("general.name", "reference selftest")
    wr.add_uint32("huginn.context_length", 64)
    wr.add_uint32("huginn.embedding_length", hp["d"])
    wr.add_uint32("huginn.feed_forward_length", hp["ffn"])
    wr.add_uint32("huginn.block_count", P + C + K)
    wr.add_uint32("huginn.prelude_block_count", P)
    wr.add_uint32("huginn.core_block_count", C)
    wr.add_uint32("huginn.coda_block_count", K)
    wr.add_uint32("huginn.attention.head_count", hp["n_head"])
    wr.add_uint32("huginn.attention.head_count_kv", hp["n_head_kv"])
    if hp["head_dim"] != hp["d"] // hp["n_head"]:
        wr.add_uint32("huginn.attention.key_length", hp["head_dim"])
    wr.add_float32("huginn.attention.layer_norm_rms_epsilon", 1e-6)
    wr.add_float32("huginn.rope.freq_base", 50000.0)
    wr.add_string("huginn.block_type", "sandwich")
    wr.add_float32("huginn.embedding_scale", float(np.float32(math.sqrt(hp["d"]))))
    wr.add_uint32("huginn.recurrence.default", 4)
    wr.add_float32("huginn.recurrence.state_init_std", float(np.float32(math.sqrt(2 / (5 * hp["d"])))))
    wr.add_bool("huginn.norm_after_recurrence", True)
    for k, (kind, v) in (extra_kv or {}).items():
        getattr(wr, f"add_{kind}")(k, v)
    for name, arr in weights.items():
        if arr.ndim == 2 and qtype != QT.F32:
            wr.add_tensor(name, gguf.quants.quantize(arr, qtype), raw_dtype=qtype)
        else:
            wr.add_tensor(name, arr)  # numpy [out, in] -> ggml shape [in, out]
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------

def test_shapes(path, weights):
    """GGUFReader reports ggml order; our loader gives numpy [out, in]."""
    reader = gguf.GGUFReader(path)
    t = next(t for t in reader.tensors if t.name == "blk.0.attn_qkv.weight")
    w = weights["blk.0.attn_qkv.weight"]                   # numpy [q+2kv, d]
    check("ggml shape is [ne0=in, ne1=out]", t.shape.tolist() == [w.shape[1], w.shape[0]],
          f"{t.shape.tolist()} for numpy {list(w.shape)}")
    m = ref.Model(path)
    check("loader returns numpy [out, in] with the written values",
          m.blocks[0]["attn_qkv"].shape == w.shape and maxdiff(m.blocks[0]["attn_qkv"], w) == 0.0)
    check("token_embd is [vocab, d]", m.token_embd.shape == weights["token_embd.weight"].shape)


def test_chunk_vs_single(model, prompt, r):
    """(1) one prefill chunk == one token at a time, when B >= r.

    With B < r the two differ by design: inside a chunk, position p at step t
    reads the step-t rows just written by earlier positions of the chunk,
    while a token fed alone reads what earlier tokens left in slot (t-1) mod B
    after all their r steps (their latest write). The check asserts both."""
    for B in sorted({r, r + 3, 1, 2}):
        for init in ("zeros", 7):
            a = ref.Session(model, B, init).feed(prompt, r)
            s = ref.Session(model, B, init)
            b = np.concatenate([s.feed([tok], r) for tok in prompt])
            # also a 2-chunk split, exercising position offsets
            s2 = ref.Session(model, B, init)
            c = np.concatenate([s2.feed(prompt[:3], r), s2.feed(prompt[3:], r)])
            err = max(maxdiff(a, b), maxdiff(a, c))
            if B >= r:
                check(f"chunk == single tokens (r={r}, B={B}, init={init})", err < 1e-10, f"max diff {err:.2e}")
            else:
                check(f"chunk != single tokens when B < r (r={r}, B={B}, init={init})", err > 1e-6,
                      f"max diff {err:.2e}")


def test_full_sequence_no_cache(model, prompt, r):
    """Prefill with the cache == a direct causal forward written without a
    cache (full-cache semantics: every token sees others at the same step)."""
    hp = model.hp
    n = len(prompt)
    pos = np.arange(n)

    def block(blk, x):
        H, Hkv, hd = hp.n_head, hp.n_head_kv, hp.head_dim
        h = ref.rms_norm(x, blk["attn_norm"], hp.eps)
        qkv = h @ blk["attn_qkv"].T
        q = qkv[:, :H * hd].reshape(n, H, hd) + blk["attn_q_bias"].reshape(H, hd)
        k = qkv[:, H * hd:(H + Hkv) * hd].reshape(n, Hkv, hd) + blk["attn_k_bias"].reshape(Hkv, hd)
        v = qkv[:, (H + Hkv) * hd:].reshape(n, Hkv, hd)
        q, k = rope_complex(q, pos, hp.rope_base, "adjacent"), rope_complex(k, pos, hp.rope_base, "adjacent")
        k = np.repeat(k, H // Hkv, axis=1)
        v = np.repeat(v, H // Hkv, axis=1)
        s = np.einsum("qhd,khd->hqk", q, k) / math.sqrt(hd)
        s = s + np.triu(np.full((n, n), -np.inf), 1)
        p = np.exp(s - s.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        a = np.einsum("hqk,khd->qhd", p, v).reshape(n, H * hd) @ blk["attn_output"].T
        x = ref.rms_norm(a + x, blk["attn_post_norm"], hp.eps)
        gu = ref.rms_norm(x, blk["ffn_norm"], hp.eps) @ blk["ffn_gate_up"].T
        m = (ref.silu(gu[:, :hp.ffn]) * gu[:, hp.ffn:]) @ blk["ffn_down"].T
        return ref.rms_norm(m + x, blk["ffn_post_norm"], hp.eps)

    e = model.token_embd[prompt] * hp.embedding_scale
    for i in range(hp.n_prelude):
        e = block(model.prelude_block(i), e)
    x = np.zeros_like(e)
    for _ in range(r):
        x = np.concatenate([x, e], -1) @ model.adapter.T
        for j in range(hp.n_core):
            x = block(model.core_block(j), x)
    x = ref.rms_norm(x, model.output_norm, hp.eps)
    for i in range(hp.n_coda):
        x = block(model.coda_block(i), x)
    want = ref.rms_norm(x, model.output_norm, hp.eps) @ model.token_embd.T
    got = ref.Session(model, r, "zeros").feed(prompt, r)
    err = maxdiff(got, want)
    check(f"cached prefill == cache-free causal forward (r={r})", err < 1e-10, f"max diff {err:.2e}")


def rope_complex(x, positions, base, pairing):
    """RoPE as complex multiplication: z_i * exp(i * pos * base^(-2i/hd))."""
    hd = x.shape[-1]
    half = hd // 2
    if pairing == "adjacent":
        z = x[..., 0::2] + 1j * x[..., 1::2]
    else:
        z = x[..., :half] + 1j * x[..., half:]
    freqs = np.array([base ** (-2.0 * i / hd) for i in range(half)])
    z = z * np.exp(1j * np.outer(positions, freqs))[:, None, :]
    out = np.empty_like(x)
    if pairing == "adjacent":
        out[..., 0::2], out[..., 1::2] = z.real, z.imag
    else:
        out[..., :half], out[..., half:] = z.real, z.imag
    return out


def test_rope():
    """(2) RoPE == complex formulation; and a hand-checked value."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 3, 8))
    pos = np.array([0, 1, 2, 17, 4000])
    for pairing in ("adjacent", "neox"):
        err = maxdiff(ref.rope(x, pos, 50000.0, pairing), rope_complex(x, pos, 50000.0, pairing))
        check(f"rope {pairing} == complex formulation", err < 1e-12, f"max diff {err:.2e}")
    # position 0 is the identity; a unit vector on pair 0 at pos 1 rotates by 1 radian
    check("rope at position 0 is identity", maxdiff(ref.rope(x[:1], np.array([0]), 50000.0, "adjacent"), x[:1]) == 0)
    u = np.zeros((1, 1, 8))
    u[0, 0, 0] = 1.0
    y = ref.rope(u, np.array([1]), 50000.0, "adjacent")[0, 0]
    check("rope adjacent pair (x0,x1) rotates by pos*1 for i=0",
          abs(y[0] - math.cos(1)) < 1e-15 and abs(y[1] - math.sin(1)) < 1e-15 and np.all(y[2:] == 0))
    # relative-position property: <rope(q,m), rope(k,n)> depends on m-n only
    q, k = rng.standard_normal((1, 1, 8)), rng.standard_normal((1, 1, 8))
    d1 = np.sum(ref.rope(q, np.array([9]), 1e4, "adjacent") * ref.rope(k, np.array([4]), 1e4, "adjacent"))
    d2 = np.sum(ref.rope(q, np.array([105]), 1e4, "adjacent") * ref.rope(k, np.array([100]), 1e4, "adjacent"))
    check("rope scores depend on relative position only", abs(d1 - d2) < 1e-12)


def test_budget(model, prompt):
    """(3) recurrence budget semantics."""
    a = ref.run(model, prompt, 1, kv_budget=1, decode=3)[0]
    b = ref.run(model, prompt, 1, kv_budget=None, decode=3)[0]   # B = r = 1
    check("iterations=1: B=1 == B=r", maxdiff(a, b) == 0.0)

    r = 4
    full = ref.run(model, prompt, r, kv_budget=r, decode=3)[0]
    more = ref.run(model, prompt, r, kv_budget=r + 3, decode=3)[0]
    check("B > r == B = r", maxdiff(full, more) < 1e-12, f"max diff {maxdiff(full, more):.2e}")

    one = ref.run(model, prompt, r, kv_budget=1, decode=3)[0]
    check("B=1 changes multi-token logits when r > 1", maxdiff(full, one) > 1e-6,
          f"max diff {maxdiff(full, one):.2e}")
    check("first position is independent of B (attends only to itself)", maxdiff(full[0], one[0]) < 1e-12)

    single = [prompt[0]]
    s1 = ref.Session(model, 1).feed(single, r)
    s4 = ref.Session(model, r).feed(single, r)
    check("a single token is independent of B", maxdiff(s1, s4) < 1e-12)

    # early stop: a prefill chunk that ran e=2 < B=4 steps leaves its step-2
    # rows (slot 1) in slots 2 and 3 ...
    s = ref.Session(model, 4)
    s.feed(prompt[:2], 2)
    ok = True
    for j in range(model.hp.n_core):
        for slot in (2, 3):
            for p in (0, 1):
                deep = s.cache.rows.get(("core", j, 1), {}).get(p)
                filled = s.cache.rows.get(("core", j, slot), {}).get(p)
                ok &= (deep is not None and filled is not None
                       and np.array_equal(deep[0], filled[0]) and np.array_equal(deep[1], filled[1]))
    check("early stop fills unreached slots with the deepest entry", ok)
    # ... so a later token running 4 steps reads every slot without a gap.
    try:
        s.feed([prompt[2]], 4)
        check("a deeper later token can read every slot", True)
    except RuntimeError as exc:
        check("a deeper later token can read every slot", False, str(exc))

    # greedy decoding == teacher forcing with the tokens it picked
    x, toks, gen, _ = ref.run(model, prompt, 3, kv_budget=1, decode=2, decode_iterations=[2, 5])
    y, _, gen2, _ = ref.run(model, prompt, 3, kv_budget=1, force_tokens=toks[len(prompt):],
                            decode_iterations=[2, 5])
    check("greedy decode == teacher forcing with the same tokens", maxdiff(x, y) == 0.0 and gen == gen2)


def test_generator():
    """(4) SplitMix64 known answers and the first normals for seed 42."""
    g = ref.SplitMix64(0)
    outs = [g.next_u64() for _ in range(3)]
    want = [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]
    check("SplitMix64(seed 0) known outputs", outs == want, ", ".join(f"{v:#018x}" for v in outs))

    # Recorded values for the Rust side (seed 42):
    #   u64:     0xbdd732262feb6e95, 0x28efe333b266f103, 0x47526757130f9f52, 0x581ce1ff0e4ae394
    #   normals: 0.8822489062222688, -0.4508498757188601, 0.1883526341159315, 0.219586379190761
    # (the first 4 normals consume the first 8 u64: none of them was redrawn)
    g = ref.SplitMix64(42)
    raw = [g.next_u64() for _ in range(4)]
    g = ref.SplitMix64(42)
    normals = [g.truncated_normal() for _ in range(4)]
    print("  seed 42 first 4 u64:", ", ".join(f"{v:#018x}" for v in raw))
    print("  seed 42 first 4 truncated normals:", ", ".join(repr(z) for z in normals))
    check("seed 42 u64 outputs match the recorded values",
          raw == [0xBDD732262FEB6E95, 0x28EFE333B266F103, 0x47526757130F9F52, 0x581CE1FF0E4AE394])
    check("seed 42 normals match the recorded values",
          maxdiff(normals, [0.8822489062222688, -0.4508498757188601, 0.1883526341159315, 0.219586379190761]) < 1e-15)
    # The first redraw for seed 42 happens at normal #944 (0-based); the first
    # 1000 normals consume 2002 u64 and sum to 5.93707941374941.
    g = ref.SplitMix64(42)
    zs = [g.truncated_normal() for _ in range(1000)]
    check("seed 42: normal #944 (after the first redraw) and the sum of 1000 normals",
          abs(zs[944] - 0.14401875744333867) < 1e-15 and abs(sum(zs) - 5.93707941374941) < 1e-12,
          f"z[944]={zs[944]!r} sum={sum(zs)!r}")
    # the truncation loop actually redraws: over many draws none exceed 3 and
    # the variance is that of a normal cut at 3 std (0.9733)
    g = ref.SplitMix64(1)
    zs = np.array([g.truncated_normal() for _ in range(40000)])
    check("truncated normal: |z| <= 3, mean ~0, var ~0.973",
          np.all(np.abs(zs) <= 3) and abs(zs.mean()) < 0.02 and abs(zs.var() - 0.9733) < 0.02,
          f"mean {zs.mean():.4f} var {zs.var():.4f}")


def test_seeded_init(model, prompt, r):
    """The seeded state draws d normals per token in processing order."""
    hp = model.hp
    s = ref.Session(model, r, 42)
    x0 = s.initial_state(2)
    g = ref.SplitMix64(42)
    want = np.array([[np.float32(g.truncated_normal() * hp.state_init_std * hp.embedding_scale)
                      for _ in range(hp.d)] for _ in range(2)])
    check("seeded state: position-major, f32-rounded", np.array_equal(x0, want))
    a = ref.run(model, prompt, r, init=42)[0]
    b = ref.run(model, prompt, r, init="zeros")[0]
    check("seeded init changes the logits", maxdiff(a, b) > 1e-6)


def test_gqa_and_tied(tmp, rng):
    """GQA == the same model with each K/V head duplicated; tied == explicit head."""
    hp, w = make_weights(rng, n_head=4, n_head_kv=2, head_dim=4)
    p1 = os.path.join(tmp, "gqa.gguf")
    write_gguf(p1, hp, w)
    # expand: q heads 0,1 use kv head 0; q heads 2,3 use kv head 1
    hp2, w2 = dict(hp, n_head_kv=4), dict(w)
    H, Hkv, hd = 4, 2, 4
    for n in range(sum(hp["blocks"])):
        qkv = w[f"blk.{n}.attn_qkv.weight"]
        q, k, v = qkv[:H * hd], qkv[H * hd:(H + Hkv) * hd], qkv[(H + Hkv) * hd:]
        dup = lambda m: np.repeat(m.reshape(Hkv, hd, -1), H // Hkv, axis=0).reshape(H * hd, -1)
        w2[f"blk.{n}.attn_qkv.weight"] = np.concatenate([q, dup(k), dup(v)])
        w2[f"blk.{n}.attn_k.bias"] = dup(w[f"blk.{n}.attn_k.bias"][:, None])[:, 0].copy()
    p2 = os.path.join(tmp, "gqa_expanded.gguf")
    write_gguf(p2, hp2, w2)
    prompt = [3, 1, 4, 1, 5]
    a = ref.run(ref.Model(p1), prompt, 3, decode=2)[0]
    b = ref.run(ref.Model(p2), prompt, 3, decode=2)[0]
    check("GQA == duplicated K/V heads", maxdiff(a, b) < 1e-10, f"max diff {maxdiff(a, b):.2e}")

    w3 = dict(w, **{"output.weight": w["token_embd.weight"].copy()})
    p3 = os.path.join(tmp, "untied.gguf")
    write_gguf(p3, hp, w3)
    m3 = ref.Model(p3)
    c = ref.run(m3, prompt, 3, decode=2)[0]
    check("tied head == explicit output.weight copy", not m3.tied and maxdiff(a, c) == 0.0)

    # neox pairing runs and differs from adjacent
    p4 = os.path.join(tmp, "neox.gguf")
    write_gguf(p4, hp, w, extra_kv={"huginn.rope.pairing": ("string", "neox")})
    d = ref.run(ref.Model(p4), prompt, 3)[0]
    check("neox pairing is read and changes the logits", maxdiff(a[:5], d) > 1e-6)


def test_quantized(tmp, rng):
    """Quantized matrices load in the same orientation as F32 ones."""
    hp, w = make_weights(rng, d=32, n_head=2, head_dim=16, ffn=32, vocab=64)
    p32 = os.path.join(tmp, "f32.gguf")
    write_gguf(p32, hp, w)
    m32 = ref.Model(p32)
    l32 = ref.run(m32, [1, 2, 3], 2)[0]
    # tol: relative logit difference allowed vs F32 (None: layout check only;
    # 4/5-bit error on random weights through the recurrence is not small)
    for qt, tol in ((QT.F16, 0.05), (QT.BF16, 0.3), (QT.Q8_0, 0.3),
                    (QT.Q4_0, None), (QT.Q4_1, None), (QT.Q5_0, None), (QT.Q5_1, None)):
        p = os.path.join(tmp, f"{qt.name}.gguf")
        write_gguf(p, hp, w, qtype=qt)
        m = ref.Model(p)

        def roundtrip(a):
            return gguf.quants.dequantize(gguf.quants.quantize(a, qt), qt)

        # every matrix equals quantize->dequantize of the original, same layout
        exact = all(
            np.array_equal(m.blocks[n][k], roundtrip(w[f"blk.{n}.{k}.weight"]))
            for n in range(sum(hp["blocks"]))
            for k in ("attn_qkv", "attn_output", "ffn_gate_up", "ffn_down")
        ) and np.array_equal(m.adapter, roundtrip(w["adapter.weight"])) \
          and np.array_equal(m.token_embd, roundtrip(w["token_embd.weight"]))
        lq = ref.run(m, [1, 2, 3], 2)[0]
        rel = maxdiff(lq, l32) / np.max(np.abs(l32))
        close = tol is None or rel < tol
        check(f"{qt.name} matrices load as dequantize(quantize(w)), same layout"
              + ("" if tol is None else ", logits close to F32"), exact and close, f"relative logit diff {rel:.2e}")


def test_cli(tmp, path):
    out = os.path.join(tmp, "out.npz")
    rc = ref.main(["--model", path, "--tokens", "1,2,3,4", "--iterations", "3", "--kv-budget", "2",
                   "--init", "seed:5", "--decode", "3", "--out", out])
    z = np.load(out)
    ok = (rc == 0 and z["logits"].shape == (7, 40) and z["logits"].dtype == np.float32
          and z["tokens"].tolist()[:4] == [1, 2, 3, 4] and len(z["generated"]) == 3
          and z["tokens"].tolist()[4:] == z["generated"].tolist()
          and int(z["iterations"]) == 3 and int(z["kv_budget"]) == 2
          and z["generated"].tolist() == np.argmax(z["logits"][3:6], -1).tolist())
    check("CLI writes the documented npz", ok)


def main() -> int:
    rng = np.random.default_rng(1234)
    with tempfile.TemporaryDirectory() as tmp:
        hp, w = make_weights(rng)    # d=16, 2 heads of 8, blocks 1/2/1, tied, qk bias
        path = os.path.join(tmp, "tiny.gguf")
        write_gguf(path, hp, w)
        model = ref.Model(path)
        prompt = [5, 17, 2, 33, 8, 0, 39]

        test_shapes(path, w)
        for r in (1, 3):
            test_chunk_vs_single(model, prompt, r)
        test_full_sequence_no_cache(model, prompt, 3)
        test_rope()
        test_budget(model, prompt)
        test_generator()
        test_seeded_init(model, prompt, 3)
        test_gqa_and_tied(tmp, rng)
        test_quantized(tmp, rng)
        test_cli(tmp, path)

    if FAILURES:
        print(f"\n{len(FAILURES)} check(s) failed: {FAILURES}")
        return 1
    print("\nall reference self-tests passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
