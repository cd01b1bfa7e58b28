#!/usr/bin/env python3
"""Train the bundled demo model: a small Huginn ("raven") recurrent-depth model
that adds numbers, written from the maths in docs/semantics.md and docs/gguf.md.

The number of recurrences is sampled per step from a Poisson log-normal around
--mean-recurrence, gradients flow only through the last --backprop iterations,
and the state starts from a random truncated normal, as in Geiping et al. 2025.
The checkpoint is saved in the Hugging Face layout (config.json,
model.safetensors, tokenizer.json, tokenizer_config.json) for `rd convert`.

Needs torch, safetensors and tokenizers (pip); CPU is enough:
    python3 tools/train_demo.py --out models/demo-hf
"""

from __future__ import annotations

import json
import math
import os
import random

import torch
import torch.nn as nn
import torch.nn.functional as F

# The task (tokenizer and problems) lives in demo_task.py, which needs no torch.
from demo_task import (
    BOS,
    EOS,
    PAD,
    VOCAB,
    answer_text,
    build_hf_tokenizer,
    carry_problem,
    carry_problem_always,
    encode,
    make_problems,
    random_operand,
    tokenizer_config,
)


def batch_tensors(problems, order: str, bos_fraction: float = 1.0, rng: random.Random | None = None):
    """Token ids [B, T] (right-padded), next-token targets [B, T] (-100 where
    there is no loss: on the prompt and padding)."""
    seqs, starts = [], []
    for a, b in problems:
        bos = rng is None or rng.random() < bos_fraction
        prompt = encode(f"{a}+{b}=", bos=bos)
        ans = encode(answer_text(a, b, order), bos=False) + [EOS]
        seqs.append(prompt + ans)
        starts.append(len(prompt))
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), PAD, dtype=torch.long)
    tgt = torch.full((len(seqs), T), -100, dtype=torch.long)
    for i, (s, p) in enumerate(zip(seqs, starts)):
        ids[i, : len(s)] = torch.tensor(s)
        # position j predicts token j+1; the answer tokens are s[p:]
        tgt[i, p - 1 : len(s) - 1] = torch.tensor(s[p:])
    return ids, tgt


# ---------------------------------------------------------------------------
# The model (names follow the Hugging Face checkpoint of docs/semantics.md, section 1).
# ---------------------------------------------------------------------------


class Attention(nn.Module):
    def __init__(self, d: int, n_heads: int):
        super().__init__()
        self.h, self.hd = n_heads, d // n_heads
        self.Wqkv = nn.Linear(d, 3 * d, bias=False)
        self.qk_bias = nn.Parameter(torch.zeros(2, 1, n_heads, self.hd))
        self.proj = nn.Linear(d, d, bias=False)

    @staticmethod
    def rope(x, cos, sin):
        # adjacent pairs (x[2i], x[2i+1]) rotated by pos * base^(-2i/hd)
        x0, x1 = x[..., 0::2], x[..., 1::2]
        return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)

    def forward(self, x, cos, sin):
        B, T, d = x.shape
        q, k, v = self.Wqkv(x).view(B, T, 3, self.h, self.hd).unbind(2)
        q = self.rope(q + self.qk_bias[0], cos, sin)
        k = self.rope(k + self.qk_bias[1], cos, sin)
        y = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
        )
        return self.proj(y.transpose(1, 2).reshape(B, T, d))


class MLP(nn.Module):
    def __init__(self, d: int, ffn: int):
        super().__init__()
        self.fc = nn.Linear(d, 2 * ffn, bias=False)
        self.proj = nn.Linear(ffn, d, bias=False)

    def forward(self, x):
        a, b = self.fc(x).chunk(2, dim=-1)
        return self.proj(F.silu(a) * b)


class SandwichBlock(nn.Module):
    def __init__(self, d, n_heads, ffn, eps):
        super().__init__()
        self.norm_1 = nn.RMSNorm(d, eps=eps)
        self.attn = Attention(d, n_heads)
        self.norm_2 = nn.RMSNorm(d, eps=eps)
        self.norm_3 = nn.RMSNorm(d, eps=eps)
        self.mlp = MLP(d, ffn)
        self.norm_4 = nn.RMSNorm(d, eps=eps)

    def forward(self, x, cos, sin):
        x = self.norm_2(self.attn(self.norm_1(x), cos, sin) + x)
        return self.norm_4(self.mlp(self.norm_3(x)) + x)


class Raven(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.cfg = cfg
        d, H, ffn, eps = cfg["n_embd"], cfg["n_heads"], cfg["intermediate_size"], cfg["norm_eps"]
        self.d = d
        blocks = lambda n: nn.ModuleList(SandwichBlock(d, H, ffn, eps) for _ in range(n))  # noqa: E731
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(cfg["vocab_size"], d),
                prelude=blocks(cfg["n_layers_in_prelude"]),
                adapter=nn.Linear(2 * d, d, bias=False),
                core_block=blocks(cfg["n_layers_in_recurrent_block"]),
                coda=blocks(cfg["n_layers_in_coda"]),
                ln_f=nn.RMSNorm(d, eps=eps),
            )
        )
        self.emb_scale = math.sqrt(d)
        self.state_std = math.sqrt(2.0 / (5.0 * d))
        self.reset_parameters()

    def reset_parameters(self):
        n_eff = (
            self.cfg["n_layers_in_prelude"]
            + self.cfg["n_layers_in_coda"]
            + self.cfg["n_layers_in_recurrent_block"] * self.cfg["mean_recurrence"]
        )
        std = self.state_std
        out_std = std / math.sqrt(2.0 * n_eff)
        for name, p in self.named_parameters():
            if name.endswith("qk_bias"):
                nn.init.zeros_(p)
            elif "norm" in name or "ln_f" in name:
                nn.init.ones_(p)
            elif name.endswith("proj.weight"):
                nn.init.trunc_normal_(p, std=out_std, a=-3 * out_std, b=3 * out_std)
            else:
                nn.init.trunc_normal_(p, std=std, a=-3 * std, b=3 * std)

    def rope_tables(self, T, device=None):
        hd = self.d // self.cfg["n_heads"]
        inv = self.cfg["rope_base"] ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
        ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]
        # [T, 1, hd/2], broadcast over batch and heads of [B, T, H, hd/2]
        return ang.cos().float()[:, None, :], ang.sin().float()[:, None, :]

    def initial_state(self, shape, init="random", generator=None):
        if init == "zeros":
            return torch.zeros(shape)
        x = torch.empty(shape)
        nn.init.trunc_normal_(x, std=self.state_std, a=-3 * self.state_std, b=3 * self.state_std, generator=generator)
        return x * self.emb_scale

    def forward(self, ids, n_iter: int, n_grad: int | None = None, init="random", generator=None):
        """Logits [B, T, vocab] after n_iter recurrences; gradients flow only
        through the last n_grad of them (all when None)."""
        tr = self.transformer
        cos, sin = self.rope_tables(ids.shape[1])
        e = tr.wte(ids) * self.emb_scale
        for blk in tr.prelude:
            e = blk(e, cos, sin)
        x = self.initial_state(e.shape, init, generator)
        n_grad = n_iter if n_grad is None else min(n_grad, n_iter)

        def step(x):
            x = tr.adapter(torch.cat((x, e), dim=-1))
            for blk in tr.core_block:
                x = blk(x, cos, sin)
            return x

        with torch.no_grad():
            for _ in range(n_iter - n_grad):
                x = step(x)
        for _ in range(n_grad):
            x = step(x)
        x = tr.ln_f(x)
        for blk in tr.coda:
            x = blk(x, cos, sin)
        x = tr.ln_f(x)
        return x @ tr.wte.weight.T


# ---------------------------------------------------------------------------
# Hugging Face layout
# ---------------------------------------------------------------------------


def save_hf(model: Raven, out_dir: str, extra: dict | None = None):
    from safetensors.torch import save_file

    os.makedirs(out_dir, exist_ok=True)
    cfg = dict(model.cfg)
    cfg.update(
        {
            "architectures": ["RavenForCausalLM"],
            "model_type": "huginn_raven",
            "bos_token_id": BOS,
            "eos_token_id": EOS,
            "pad_token_id": PAD,
            "torch_dtype": "float32",
        }
    )
    if extra:
        cfg.update(extra)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    tensors = {k: v.detach().contiguous().float() for k, v in model.state_dict().items()}
    save_file(tensors, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    build_hf_tokenizer().save(os.path.join(out_dir, "tokenizer.json"))
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump(tokenizer_config(), f, indent=2)


CONFIG_KEYS = [
    "n_embd", "n_heads", "intermediate_size", "vocab_size", "block_size", "norm_eps",
    "rope_base", "n_layers_in_prelude", "n_layers_in_recurrent_block", "n_layers_in_coda",
    "mean_recurrence", "qk_bias", "tie_embeddings",
]


def load_hf(model_dir: str) -> Raven:
    from safetensors.torch import load_file

    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    model = Raven({k: cfg[k] for k in CONFIG_KEYS})
    sd = load_file(os.path.join(model_dir, "model.safetensors"))
    model.load_state_dict(sd, strict=True)
    model.eval()
    return model


@torch.no_grad()
def exact_match(model: Raven, problems, order: str, n_iter: int, init="random", seed=0, batch=500):
    """Per-problem correctness of greedy decoding. Teacher forcing gives the same
    verdict: greedy output equals the answer iff every answer token (and the end
    token) is the argmax given the correct prefix. Causal attention makes the
    right padding irrelevant, and the full-sequence recurrence equals the
    token-by-token decode with a full KV cache."""
    g = torch.Generator().manual_seed(seed)
    ok = []
    for i in range(0, len(problems), batch):
        ids, tgt = batch_tensors(problems[i : i + batch], order)
        pred = model(ids, n_iter, init=init, generator=g).argmax(-1)
        good = (pred == tgt) | (tgt == -100)
        ok.extend(good.all(dim=1).tolist())
    return ok


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------


def sample_recurrence(rng: random.Random, mean: float, sigma: float, cap: int) -> int:
    """Poisson log-normal: tau ~ N(log(mean) - sigma^2/2, sigma), r ~ Poisson(e^tau) + 1."""
    tau = rng.gauss(math.log(mean) - 0.5 * sigma * sigma, sigma)
    lam = math.exp(tau)
    # Knuth's Poisson sampler (lam is small)
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            break
        k += 1
    return min(k + 1, cap)


def main():
    import argparse
    import time

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="models/demo-hf", help="output folder (HF layout)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--max-digits", type=int, default=6)
    ap.add_argument("--order", choices=["msd", "lsd"], default="msd",
                    help="answer digits most- or least-significant first")
    ap.add_argument("--carry-fraction", type=float, default=0.25,
                    help="share of training problems built to have a long carry chain")
    ap.add_argument("--carry-kind", choices=["mixed", "always"], default="mixed",
                    help="carry-chain problems: the run of 9s carries half the time (mixed) or always")
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--ffn", type=int, default=256)
    ap.add_argument("--prelude", type=int, default=1)
    ap.add_argument("--core", type=int, default=2)
    ap.add_argument("--coda", type=int, default=1)
    ap.add_argument("--mean-recurrence", type=int, default=8)
    ap.add_argument("--sigma", type=float, default=0.5)
    ap.add_argument("--max-recurrence", type=int, default=24, help="cap on sampled recurrences")
    ap.add_argument("--backprop", type=int, default=4, help="iterations with gradients (the last k)")
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--n-eval", type=int, default=2000, help="held-out problems (never trained on)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--stop-after", type=int, default=0,
                    help="stop after this many steps of the --steps schedule (0 = run it all)")
    ap.add_argument("--init-from", help="start from this checkpoint (HF layout) instead of a random init")
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)
    cfg = {
        "n_embd": args.d,
        "n_heads": args.heads,
        "intermediate_size": args.ffn,
        "vocab_size": len(VOCAB),
        "block_size": 64,
        "norm_eps": 1e-6,
        "rope_base": 50000.0,
        "n_layers_in_prelude": args.prelude,
        "n_layers_in_recurrent_block": args.core,
        "n_layers_in_coda": args.coda,
        "mean_recurrence": args.mean_recurrence,
        "qk_bias": True,
        "tie_embeddings": True,
    }
    model = Raven(cfg)
    earlier_stages = []
    if args.init_from:
        with open(os.path.join(args.init_from, "config.json")) as f:
            prev = json.load(f).get("demo_task", {})
        earlier_stages = prev.get("stages") or [
            {"steps": prev.get("steps"), "train_seconds": prev.get("train_seconds"), "args": prev.get("args")}]
        from safetensors.torch import load_file

        model.load_state_dict(load_file(os.path.join(args.init_from, "model.safetensors")), strict=True)
        print(f"initialised from {args.init_from}", flush=True)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"parameters: {n_params}", flush=True)

    held_out = make_problems(args.seed + 1, args.n_eval, args.max_digits)
    held_set = set(held_out)
    monitor = held_out[:500]

    decay = [p for n, p in model.named_parameters() if p.dim() == 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() != 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.95),
    )

    def lr_at(step):
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        t = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))

    gen = torch.Generator().manual_seed(args.seed)
    t0 = time.time()
    log = []
    ema = None
    last = args.stop_after or args.steps
    for step in range(last):
        problems = []
        while len(problems) < args.batch:
            if args.carry_fraction > 0 and rng.random() < args.carry_fraction:
                make = carry_problem if args.carry_kind == "mixed" else carry_problem_always
                p = make(rng, args.max_digits)
            else:
                p = (random_operand(rng, args.max_digits), random_operand(rng, args.max_digits))
            if p not in held_set:
                problems.append(p)
        ids, tgt = batch_tensors(problems, args.order, bos_fraction=0.9, rng=rng)
        r = sample_recurrence(rng, args.mean_recurrence, args.sigma, args.max_recurrence)
        model.train()
        logits = model(ids, r, n_grad=args.backprop, init="random", generator=gen)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=-100)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if step % 50 == 0:
            print(f"step {step:5d}  r {r:2d}  loss {loss.item():.4f}  ema {ema:.4f}  {time.time() - t0:6.0f}s", flush=True)
        if (step + 1) % args.eval_every == 0 or step + 1 == last:
            model.eval()
            accs = {}
            for n_it in (1, 2, 4, 8, 16, 32):
                ok = exact_match(model, monitor, args.order, n_it, seed=0)
                accs[n_it] = sum(ok) / len(ok)
            line = "  ".join(f"r{k}={v:.3f}" for k, v in accs.items())
            print(f"eval step {step + 1}: {line}  ({time.time() - t0:.0f}s)", flush=True)
            log.append({"step": step + 1, "loss_ema": ema, "accuracy": accs, "seconds": time.time() - t0})
            stage = {"steps": step + 1, "train_seconds": round(time.time() - t0), "args": vars(args)}
            save_hf(model, args.out, extra={"demo_task": {
                "task": "addition", "max_digits": args.max_digits, "answer_order": args.order,
                "seed": args.seed, "stages": earlier_stages + [stage],
                "total_steps": sum(s["steps"] for s in earlier_stages) + step + 1,
                "total_train_seconds": sum(s["train_seconds"] for s in earlier_stages) + stage["train_seconds"],
                "args": vars(args)}})
    with open(os.path.join(args.out, "train_log.json"), "w") as f:
        json.dump(log, f, indent=1)
    print(f"done in {time.time() - t0:.0f}s; saved {args.out}", flush=True)


if __name__ == "__main__":
    main()
