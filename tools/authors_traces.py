#!/usr/bin/env python3
"""Writes tests/golden_traces/authors.tsv: generation traces computed by the
authors' own Huginn code, so that the runtime's adaptive-compute generation
(exit criteria, KV budget, exits in the prompt) can be compared with theirs.

What it does
------------
1. Builds small random test models with our maker (`rd make-test-model`, type
   f32) and records each file's FNV-1a 64 hash, as tools/make_traces.py does.
2. Loads every tensor of the GGUF (with the `gguf` package) into the authors'
   `RavenForCausalLM`, built with a matching `RavenConfig`. This is the inverse
   of our converter's name mapping (src/convert/plan.rs, docs/convert.md):
   ggml shapes are the reverse of PyTorch's and the bytes are the same, so no
   matrix is transposed; `attn_q.bias` and `attn_k.bias` become the two halves
   of `attn.qk_bias`; a file without `output.weight` is a tied model.
   Everything else our maker writes is what their code hard-wires (embedding
   scale sqrt(d), sandwich blocks, adjacent-pair RoPE, the final norm applied
   before the coda) and is checked against the file's metadata.
3. Checks the mapping: their logits for the prompt at 1, 4 and 32 iterations
   (zero initial state) must equal `rd logits` to 1e-4 of the logit range
   (measured: about 1e-6).
4. Runs their `generate_with_adaptive_compute` unmodified (their exit
   evaluators, their float32 arithmetic, a zero initial state, exits checked
   during the prompt too, greedy) for 12 tokens after a 9-token prompt, for
   each case below, and writes one row per case with the columns of
   traces.tsv plus `exit_in_prefill` (always 1 here).

How their settings map to ours (one row each)
---------------------------------------------
- min_steps m      -> min_iterations m + 1 (their first check is after step m + 1)
- num_steps        -> max_iterations; the prompt runs under the same limits, so
                      prefill_iterations = max_iterations and exit_in_prefill = 1
- check every n    -> check_every n, exact only when (max - min) % n == 0 (they
                      check at steps m+1, m+1+n, ... and not at the maximum
                      otherwise, and then sample from the last check's stale
                      logits); every case here uses 1
- "latest-m4"      -> kv_budget = max_iterations (full cache, latest entry)
- "latest-m4-compress-s4" -> kv_budget = 1 (one slot per core block)
- init_scale 0     -> initial state zeros
Their code cannot express grouped-query attention, and their m4 cache lookups
hard-code Huginn's 2 prelude and 4 core blocks, so every model is 2,4,K with
n_head_kv = n_head (the loader refuses anything else). The model names are
local to this file (only "c" is make_goldens.py's): a test should rebuild the
model from the row's columns and check fnv1a64.
The first token's value is the prompt's last check (the runtime reports it
too when exits are checked in the prompt). Its iterations are the steps the
prompt ran (all prompt positions stop together, decided on the last one).

Margins
-------
As in make_traces.py, a case is kept only when no decision sits on a knife
edge, so that an f32 runtime must reproduce it exactly: every exit decision
(a check before the last step) is at least 0.02 away from its threshold
(relative, |ln(value/thr)|, column min_rel_margin), and every argmax that
matters (greedy picks; each check of argmax-stability) leads its runner-up by
0.01 logits (min_logit_gap). A decision's margin is the smaller of their
float32 value's and the value recomputed in float64 from the same logits (their
float32 values carry up to ~2e-6 of rounding); for minp-kl also of the values
with any logit within 0.01 of the filter's edge (ln 0.1 below the top logit)
moved to the other side. Each case lists candidate (model, prompt) pairs; the
first with good margins and exits that vary is used. Every kept case is also
rerun with their model in float64 and must give the same tokens and
iterations.

The values column holds their float32 values: compare them with a tolerance
(our f64 reference, tools/reference.py, differs by up to ~4e-7 for kl and
minp-kl, ~5e-6 for entropy-diff); tokens and iterations must match exactly.

Usage
-----
    python3 tools/authors_traces.py --authors-dir DIR [--rd target/release/rd]
                                     [--out tests/golden_traces/authors.tsv] [--verbose]

DIR is the folder holding the authors' raven_modeling_minimal.py and
raven_config_minimal.py (github.com/seal-rg/recurrent-pretraining, folder
recpre/, checked at commit 59e0b69). Their code is imported from there, never
copied into this repository; DIR's __init__.py is not run.

Requirements: torch (CPU is enough), transformers==4.56.x, gguf, numpy.
transformers 5.x breaks the authors' tie_weights call. It runs on one CPU
thread in about 20 seconds.
"""

import argparse
import copy
import importlib
import math
import os
import subprocess
import sys
import tempfile
import time
import types

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from make_goldens import fnv1a64, make_model_from_spec  # noqa: E402
from make_traces import TRACE_COLUMNS, finish  # noqa: E402

N_PROMPT = 9
N_GENERATE = 12
MAX_STEPS = 32
MIN_REL_MARGIN = 0.02
MIN_LOGIT_GAP = 0.01
LOGIT_TOLERANCE = 1e-4    # of the logit range, their f32 forward vs `rd logits`

# name: (seed, n_embd, n_ff, n_head, n_head_kv, n_vocab, blocks, tied, qk_bias),
# the tuple of make_goldens.MODELS. Their caches' "m4" lookups hard-code
# Huginn's 2 prelude and 4 core blocks, and they have no grouped-query
# attention, so every model is 2,4,K with n_head_kv = n_head.
MODELS = {
    "c": (13, 256, 256, 4, 4, 256, "2,4,2", True, True),    # make_goldens' "c"
    "h": (21, 128, 192, 2, 2, 256, "2,4,2", True, True),
    "u": (22, 192, 256, 3, 3, 256, "2,4,1", False, True),   # untied head
    "n": (23, 128, 128, 2, 2, 256, "2,4,2", True, False),   # no q/k bias
}

STRATEGIES = {"latest-m4": None, "latest-m4-compress-s4": 1}   # kv_budget (None = max)

# (name, exit spec, their min_steps, cache strategy, candidates [(model, prompt variant)])
CASES = [
    ("kl5e-4-b32", "kl:5e-4", 0, "latest-m4", [("c", 0), ("h", 1), ("u", 0)]),
    ("kl1e-3-b32", "kl:1e-3", 0, "latest-m4", [("h", 0), ("c", 0), ("u", 0)]),
    ("kl5e-4-b1", "kl:5e-4", 0, "latest-m4-compress-s4", [("h", 0), ("u", 0), ("c", 1)]),
    ("kl1e-3-b1", "kl:1e-3", 0, "latest-m4-compress-s4", [("c", 0), ("h", 0), ("c", 1)]),
    ("kl5e-4-min3-b32", "kl:5e-4", 3, "latest-m4", [("u", 1), ("u", 0), ("h", 0)]),
    ("entropy-diff1e-3-b32", "entropy-diff:1e-3", 0, "latest-m4", [("u", 0), ("c", 0), ("h", 0)]),
    ("minp-kl1e-5-b32", "minp-kl:1e-5", 0, "latest-m4", [("n", 0), ("h", 0), ("c", 1)]),
    ("argmax-stability5-b32", "argmax-stability:5", 0, "latest-m4", [("h", 0), ("u", 1), ("h", 1)]),
]

HEADER = TRACE_COLUMNS + ["exit_in_prefill"]


def prompt_tokens(n_vocab: int, variant: int) -> list:
    """Variant 0 is make_traces.py's prompt."""
    return [(7 * i * i + (3 + 2 * variant) * i + 1 + 13 * variant) % n_vocab for i in range(N_PROMPT)]


def import_authors(directory: str):
    """The authors' modelling module, imported from `directory` as the package
    `huginn_authors` (their file uses a relative import of the config)."""
    directory = os.path.abspath(directory)
    if not os.path.isfile(os.path.join(directory, "raven_modeling_minimal.py")):
        sys.exit(f"no raven_modeling_minimal.py in {directory}")
    pkg = types.ModuleType("huginn_authors")
    pkg.__path__ = [directory]
    sys.modules["huginn_authors"] = pkg
    return importlib.import_module("huginn_authors.raven_modeling_minimal")


# ---------------------------------------------------------------------------
# GGUF -> the authors' RavenForCausalLM
# ---------------------------------------------------------------------------

BLOCK_TENSORS = {  # GGUF block tensor -> their module path inside the block
    "attn_norm.weight": "norm_1.weight",
    "attn_qkv.weight": "attn.Wqkv.weight",
    "attn_output.weight": "attn.proj.weight",
    "attn_post_norm.weight": "norm_2.weight",
    "ffn_norm.weight": "norm_3.weight",
    "ffn_gate_up.weight": "mlp.fc.weight",
    "ffn_down.weight": "mlp.proj.weight",
    "ffn_post_norm.weight": "norm_4.weight",
}


def load_authors_model(authors, path: str, max_steps: int):
    """Their model with the weights of the GGUF at `path` (float32)."""
    import gguf
    import torch

    reader = gguf.GGUFReader(path, "r")

    def key(name, default=None):
        f = reader.fields.get(name)
        return default if f is None else f.contents()

    assert key("general.architecture") == "huginn"
    hk = lambda n, default=None: key("huginn." + n, default)  # noqa: E731
    d = int(hk("embedding_length"))
    n_head = int(hk("attention.head_count"))
    n_head_kv = int(hk("attention.head_count_kv", n_head))
    head_dim = int(hk("attention.key_length", d // n_head))
    P, C, K = (int(hk(f"{p}_block_count")) for p in ("prelude", "core", "coda"))
    eps = float(hk("attention.layer_norm_rms_epsilon"))
    f32 = lambda x: float(np.float32(x))  # noqa: E731
    # What their code hard-wires, or cannot express, must be what the file says.
    problems = []
    if n_head_kv != n_head:
        problems.append("grouped-query attention (their num_key_value_heads = n_heads)")
    if head_dim * n_head != d:
        problems.append("key_length * head_count != n_embd")
    if hk("rope.pairing", "adjacent") != "adjacent":
        problems.append("NeoX RoPE (theirs rotates adjacent pairs)")
    if hk("block_type", "sandwich") != "sandwich":
        problems.append("block type other than sandwich")
    if not hk("norm_after_recurrence", True):
        problems.append("no final norm after the recurrence")
    if f32(hk("embedding_scale", math.sqrt(d))) != f32(math.sqrt(d)):
        problems.append("embedding scale other than sqrt(n_embd)")
    if (P, C) != (2, 4):
        problems.append(f"{P} prelude / {C} core blocks (their m4 cache lookups assume 2 / 4)")
    if problems:
        raise ValueError(f"{path}: not expressible in the authors' model: " + "; ".join(problems))

    tensors = {}
    for t in reader.tensors:
        assert t.tensor_type == gguf.GGMLQuantizationType.F32, f"{t.name}: use --type f32"
        shape = tuple(int(n) for n in reversed(t.shape.tolist()))  # PyTorch order
        tensors[t.name] = np.array(t.data, dtype=np.float32).reshape(shape)
    vocab = tensors["token_embd.weight"].shape[0]
    tied = "output.weight" not in tensors
    qk_bias = "blk.0.attn_q.bias" in tensors

    cfg = authors.RavenConfig(
        n_embd=d, n_heads=n_head, n_layers=P + C + K, block_size=int(hk("context_length")),
        vocab_size=vocab, tie_embeddings=tied, intermediate_size=int(hk("feed_forward_length")),
        norm_eps=eps, n_layers_in_prelude=P, n_layers_in_recurrent_block=C, n_layers_in_coda=K,
        mean_recurrence=max_steps, qk_bias=qk_bias, rope_base=float(hk("rope.freq_base", 10000.0)),
    )
    torch.manual_seed(0)
    model = authors.RavenForCausalLM(cfg).float().eval()

    # GGUF name -> (their parameter name, array in their shape)
    mapped = {"token_embd.weight": ("transformer.wte.weight", tensors["token_embd.weight"]),
              "adapter.weight": ("transformer.adapter.weight", tensors["adapter.weight"]),
              "output_norm.weight": ("transformer.ln_f.weight", tensors["output_norm.weight"])}
    if not tied:
        mapped["output.weight"] = ("lm_head.weight", tensors["output.weight"])
    for n in range(P + C + K):
        part, i = (("prelude", n) if n < P else ("core_block", n - P) if n < P + C
                   else ("coda", n - P - C))
        for g, theirs in BLOCK_TENSORS.items():
            mapped[f"blk.{n}.{g}"] = (f"transformer.{part}.{i}.{theirs}", tensors[f"blk.{n}.{g}"])
        if qk_bias:
            q = tensors[f"blk.{n}.attn_q.bias"].reshape(1, n_head, head_dim)
            k = tensors[f"blk.{n}.attn_k.bias"].reshape(1, n_head, head_dim)
            mapped[f"blk.{n}.attn_q.bias"] = (f"transformer.{part}.{i}.attn.qk_bias", np.stack([q, k]))
            mapped[f"blk.{n}.attn_k.bias"] = mapped[f"blk.{n}.attn_q.bias"]
    unknown = set(tensors) - set(mapped)
    assert not unknown, f"unmapped GGUF tensors: {sorted(unknown)}"

    params = dict(model.named_parameters())   # the tied head appears once, as wte
    assigned = set()
    with torch.no_grad():
        for theirs, arr in mapped.values():
            p = params[theirs]
            assert tuple(p.shape) == arr.shape, f"{theirs}: {tuple(p.shape)} vs {arr.shape}"
            p.copy_(torch.from_numpy(arr))
            assigned.add(theirs)
    missing = set(params) - assigned
    assert not missing, f"parameters without a GGUF tensor: {sorted(missing)}"
    if tied:
        assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr(), "head not tied"
    return model


def rd_logits(rd: str, path: str, prompt, iterations: int, tmp: str) -> np.ndarray:
    out = os.path.join(tmp, "logits.npy")
    subprocess.run([rd, "logits", "-m", path, "--device", "cpu", "--threads", "1", "--init", "zeros",
                    "--tokens", ",".join(map(str, prompt)), "--iterations", str(iterations),
                    "--out", out], check=True, capture_output=True)
    return np.load(out).astype(np.float64)


def verify_logits(model, rd, path, prompt, tmp):
    """Max |their logits - rd logits| / logit range at 1, 4 and 32 iterations,
    for their model in float32 and float64."""
    import torch

    ids = torch.tensor([prompt])
    m64 = copy.deepcopy(model).double()
    worst = {}
    for r in (1, 4, 32):
        ours = rd_logits(rd, path, prompt, r, tmp)
        span = float(ours.max() - ours.min())
        with torch.no_grad():
            for tag, m in (("f32", model), ("f64", m64)):
                theirs = m(ids, num_steps=r, init_scale=0.0).logits[0].double().numpy()
                rel = float(np.abs(theirs - ours).max()) / span
                worst[(tag, r)] = rel
    return worst


# ---------------------------------------------------------------------------
# Their adaptive generation, recorded
# ---------------------------------------------------------------------------

class Recorder:
    """Wraps one of their exit evaluators (unchanged) and records every check:
    its value, whether it said exit, and the last position's logits."""

    def __init__(self, inner):
        self.inner = inner
        self.tokens = []

    def init(self, initial_latents):
        self.inner.init(initial_latents)
        self.tokens.append([])

    def check(self, model, latents, aux_inputs):
        exits, outputs, values = self.inner.check(model, latents, aux_inputs)
        logits = None if outputs is None else outputs.logits[0, -1].detach().double().numpy().copy()
        self.tokens[-1].append((float(values[0]), bool(exits[0]), logits))
        return exits, outputs, values


def parse_exit(spec: str):
    crit, thr = spec.split(":")
    return crit, (int(thr) if crit == "argmax-stability" else float(thr))


def top2_gap(logits: np.ndarray) -> float:
    a = np.partition(logits, -2)
    return float(a[-1] - a[-2])


def run_theirs(authors, model, prompt, spec, min_steps, strategy):
    """Their generation; returns (tokens, per-token check records)."""
    import torch
    from transformers import GenerationConfig

    crit, thr = parse_exit(spec)
    rec = Recorder(authors.get_adaptive_exit_evaluator(model, crit, thr))
    gc = GenerationConfig(do_sample=False, max_new_tokens=N_GENERATE, eos_token_id=None,
                          bos_token_id=None, pad_token_id=None)
    ids = torch.tensor([prompt])
    with torch.no_grad():
        out = model.generate_with_adaptive_compute(
            ids, gc, criterion=crit, exit_threshold=thr, init_scale=0.0,
            cache_lookup_strategy=strategy, do_not_exit_in_prefill=False, min_steps=min_steps,
            check_criterion_every_n_steps=1, exit_evaluator=rec, max_new_tokens=N_GENERATE,
            num_steps=MAX_STEPS)
    toks = out[0, len(prompt):].tolist()
    assert len(toks) == N_GENERATE and len(rec.tokens) == N_GENERATE
    return toks, rec.tokens


def log_softmax64(lg: np.ndarray) -> np.ndarray:
    z = lg - lg.max()
    return z - math.log(np.exp(z).sum())


def minp_log_probs64(lg, vocab, flip=None):
    """Their min-p filter in float64: probabilities below 0.1 p_max become 1/V,
    then renormalise; `flip` moves one logit to the other side of the edge."""
    if lg is None:                   # their start: the uniform distribution
        return np.full(vocab, -math.log(vocab))
    p = np.exp(log_softmax64(lg))
    mask = p < 0.1 * p.max()
    if flip is not None:
        mask[flip] = not mask[flip]
    q = np.where(mask, 1.0 / vocab, p)
    return np.log(q / q.sum())


def value64(crit, prev, lg, flip_prev=None, flip_cur=None) -> float:
    """Their criterion's value recomputed in float64 from their float32 logits
    (`prev` None at the first check of a token)."""
    vocab = len(lg)
    if crit == "kl":
        a = np.full(vocab, -math.log(vocab)) if prev is None else log_softmax64(prev)
        b = log_softmax64(lg)
    elif crit == "minp-kl":
        a, b = minp_log_probs64(prev, vocab, flip_prev), minp_log_probs64(lg, vocab, flip_cur)
    elif crit == "entropy-diff":
        def entropy(x):
            p = np.exp(log_softmax64(x))
            return float(-np.sum(p * np.log(p + 1e-10)))
        return abs(entropy(lg) - (100.0 if prev is None else entropy(prev)))
    else:
        raise ValueError(crit)
    return float(np.sum(np.exp(a) * (a - b)))    # KL(prev || cur), as their F.kl_div


def near_edge(lg, width=MIN_LOGIT_GAP):
    """Logits within `width` of the min-p filter's edge (ln 0.1 below the top)."""
    if lg is None:
        return []
    return [int(i) for i in np.nonzero(np.abs(lg - lg.max() - math.log(0.1)) < width)[0]]


def decision_margin(v: float, thr: float) -> float:
    """|ln(value / threshold)|; a value <= 0 (float noise around a zero
    divergence) counts by its magnitude."""
    if v == 0.0 or not math.isfinite(v):
        return math.inf
    return abs(math.log(abs(v) / thr))


def analyse(spec, min_steps, toks, checks):
    """Per-token iterations and values, and the margins (make_traces.py's
    definitions). Each decision's margin is the smaller of their float32
    value's and the value recomputed in float64 from the same logits; for
    minp-kl also of the values with a logit within MIN_LOGIT_GAP of the
    filter's edge moved to the other side (in this check or the previous one).
    A variant that decides the other way gives margin 0."""
    crit, thr = parse_exit(spec)
    its, vals = [], []
    rel, gap = math.inf, math.inf
    for tok, cs in zip(toks, checks):
        exit_at = next((j for j, c in enumerate(cs) if c[1]), None)
        steps = MAX_STEPS if exit_at is None else min_steps + 1 + exit_at
        assert len(cs) == steps - min_steps, "one check per step from min_steps + 1"
        its.append(steps)
        vals.append(cs[-1][0])
        logits = cs[-1][2]                       # the distribution the token was picked from
        assert int(np.argmax(logits)) == tok
        gap = min(gap, top2_gap(logits))
        for j, (v, exits, lg) in enumerate(cs):
            step = min_steps + 1 + j
            if crit == "argmax-stability":
                gap = min(gap, top2_gap(lg))
                continue
            if step >= MAX_STEPS:
                continue                         # the last step is no decision
            prev = cs[j - 1][2] if j > 0 else None
            # their float32 value, the float64 one, and for minp-kl the values
            # with a near-edge logit on the other side of the filter
            variants = [v, value64(crit, prev, lg)]
            assert abs(variants[1] - v) <= 0.05 * abs(variants[1]) + 1e-6, (crit, v, variants)
            if crit == "minp-kl":
                variants += [value64(crit, prev, lg, flip_cur=i) for i in near_edge(lg)]
                variants += [value64(crit, prev, lg, flip_prev=i) for i in near_edge(prev)]
            for w in variants:
                rel = min(rel, decision_margin(w, thr) if (w < thr) == exits else 0.0)
    return its, vals, rel, gap


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--authors-dir", required=True,
                    help="folder with the authors' raven_modeling_minimal.py and raven_config_minimal.py")
    ap.add_argument("--rd", default=os.path.join(ROOT, "target", "release", "rd"))
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "golden_traces", "authors.tsv"))
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()

    import torch
    torch.set_num_threads(1)
    authors = import_authors(args.authors_dir)
    t_start = time.time()
    rows, problems = [], []
    with tempfile.TemporaryDirectory() as tmp:
        loaded = {}

        def get_model(name):
            if name not in loaded:
                path = os.path.join(tmp, f"{name}.gguf")
                make_model_from_spec(args.rd, path, MODELS[name], "f32")
                with open(path, "rb") as f:
                    digest = fnv1a64(f.read())
                model = load_authors_model(authors, path, MAX_STEPS)
                worst = verify_logits(model, args.rd, path, prompt_tokens(MODELS[name][5], 0), tmp)
                print(f"model {name}: logits vs rd, max |diff| / range: "
                      + ", ".join(f"{t} r{r} {v:.1e}" for (t, r), v in worst.items()))
                bad = {k: v for k, v in worst.items() if k[0] == "f32" and v > LOGIT_TOLERANCE}
                if bad:
                    raise SystemExit(f"model {name}: their logits disagree with rd logits: {bad}")
                loaded[name] = (model, digest)
            return loaded[name]

        for name, spec, min_steps, strategy, candidates in CASES:
            chosen = None
            for model_name, variant in candidates:
                model, digest = get_model(model_name)
                prompt = prompt_tokens(MODELS[model_name][5], variant)
                toks, checks = run_theirs(authors, model, prompt, spec, min_steps, strategy)
                its, vals, rel, gap = analyse(spec, min_steps, toks, checks)
                varied = len(set(its[1:])) > 1 and min(its) < MAX_STEPS
                ok = rel >= MIN_REL_MARGIN and gap >= MIN_LOGIT_GAP and varied
                print(f"{name:24} {model_name}/p{variant} tokens {toks}\n{'':24} iters {its} "
                      f"rel-margin {rel:.3f} gap {gap:.3f} {'ok' if ok else 'REJECTED'}")
                if args.verbose:
                    for i, cs in enumerate(checks):
                        print(f"    [{i}] tok {toks[i]} it {its[i]} | "
                              + " ".join(f"{min_steps + 1 + j}:{c[0]:.4g}" for j, c in enumerate(cs)))
                if ok:
                    chosen = (model_name, variant, prompt, toks, its, vals, rel, gap, digest)
                    break
            if chosen is None:
                problems.append(f"{name}: no candidate with good margins and varying exits")
                continue
            model_name, variant, prompt, toks, its, vals, rel, gap, digest = chosen
            # The same case with their model in float64 must decide the same way.
            m64 = copy.deepcopy(loaded[model_name][0]).double()
            toks64, checks64 = run_theirs(authors, m64, prompt, spec, min_steps, strategy)
            its64 = analyse(spec, min_steps, toks64, checks64)[0]
            if (toks64, its64) != (toks, its):
                problems.append(f"{name}: float64 run differs: {toks64} {its64}")
            seed, d, ff, nh, nkv, nv, blocks, tied, qkb = MODELS[model_name]
            budget = STRATEGIES[strategy] or MAX_STEPS
            values = [repr(float(v)) for v in vals]
            rows.append([f"authors-{model_name}-{name}", model_name, seed, "f32", d, ff, nh, nkv, nv,
                         blocks, int(tied), int(qkb), min_steps + 1, MAX_STEPS, spec, 1, 0, MAX_STEPS,
                         budget, ",".join(map(str, prompt)), ",".join(map(str, toks)),
                         ",".join(map(str, its)), ",".join(values), f"{rel:.4f}", f"{gap:.4f}",
                         f"{digest:016x}", 1])

    return finish(args.out, HEADER, rows, problems, f" in {time.time() - t_start:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
