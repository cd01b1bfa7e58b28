#!/usr/bin/env python3
"""Regenerates tests/golden_traces/traces.tsv: generation traces (token,
iterations per token) under per-token compute limits, from the independent
numpy reference (tools/reference.py, `generate`).

For each case: `rd make-test-model` writes a random F32 Huginn GGUF from a seed
(the same models as tools/make_goldens.py), the reference prefills a 9-token
prompt in one chunk and greedily generates 12 tokens with the case's limits
(min/max iterations, exit criterion and threshold, check interval, warm start,
KV budget B). The Rust test (tests/traces.rs) rebuilds the same GGUF with the
maker, checks its FNV-1a hash (so it runs on exactly the file the reference
read), runs `Session::generate` and asserts the exact same trace.

An exact trace is only meaningful when no decision sits on a knife edge: the
runtime computes in f32, the reference in f64. For every case we therefore
report (and require) margins: every exit decision's criterion value must be at
least MIN_REL_MARGIN away from its threshold (relative, |ln(value/threshold)|),
and every argmax that matters (greedy picks; each check of argmax-stability)
must lead its runner-up by MIN_LOGIT_GAP logits.

Usage: python3 tools/make_traces.py [--rd target/debug/rd] [--verbose]
"""

import argparse
import math
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import reference  # noqa: E402
from make_goldens import MODELS, fnv1a64, make_model  # noqa: E402

N_PROMPT = 9
N_GENERATE = 12
MIN_REL_MARGIN = 0.05   # |ln(value / threshold)| at every exit decision
MIN_LOGIT_GAP = 0.02    # top-1 minus top-2 logit wherever an argmax matters

# (name, model, min, max, exit, check_every, warm_start, prefill (None = max), B (None = max)
#  [, lead_in (default True, the runtime's default)])
CASES = [
    # Fixed steps (no criterion): full cache and B = 1; a prefill deeper than B.
    ("a-fixed6-b6", "a", 6, 6, "none", 1, False, None, None),
    ("a-fixed6-b1", "a", 6, 6, "none", 1, False, None, 1),
    ("a-none-min1-max5-p3-b3", "a", 1, 5, "none", 1, False, 3, 3),
    # kl: two thresholds, then min/max/check_every variations.
    ("a-kl1e-3-min2-max16-c1", "a", 2, 16, "kl:1e-3", 1, False, None, None),
    ("a-kl2e-2-min2-max16-c1", "a", 2, 16, "kl:2e-2", 1, False, None, None),
    ("a-kl4e-3-min3-max12-c3", "a", 3, 12, "kl:4e-3", 3, False, None, None),
    # min not on the check_every grid from 0, max not on the grid from min.
    ("a-kl5e-3-min2-max13-c3", "a", 2, 13, "kl:5e-3", 3, False, None, None),
    ("b-kl1e-3-min2-max13-c3", "b", 2, 13, "kl:1e-3", 3, False, None, None),
    # B = 4 < max: the KL of this model cycles with period B, so exits are late.
    ("a-kl0.4-min4-max12-c2-p4-b4", "a", 4, 12, "kl:0.4", 2, False, 4, 4),
    # B = 1 with kl exits.
    ("a-kl1e-3-min2-max16-b1", "a", 2, 16, "kl:1e-3", 1, False, None, 1),
    # Warm start (compare a-kl1e-2 below, without it).
    ("a-kl7e-3-warm", "a", 2, 16, "kl:7e-3", 1, True, None, None),
    ("a-kl7e-3", "a", 2, 16, "kl:7e-3", 1, False, None, None),
    ("a-minp-kl1e-2", "a", 2, 16, "minp-kl:1e-2", 1, False, None, None),
    ("a-latent-diff0.028", "a", 2, 16, "latent-diff:0.028", 1, False, None, None),
    ("b-kl3e-3-min2-max16-c1", "b", 2, 16, "kl:3e-3", 1, False, None, None),
    ("b-argmax-stability2-c1", "b", 2, 16, "argmax-stability:2", 1, False, None, None),
    ("b-argmax-stability2-c2", "b", 2, 16, "argmax-stability:2", 2, False, None, None),
    ("b-cosine4e-3", "b", 2, 16, "cosine:4e-3", 1, False, None, None),
    ("b-entropy-diff1e-2-warm-b2", "b", 2, 16, "entropy-diff:1e-2", 1, True, None, 2),
    # confidence: exits at a token's first check (min 1), and on a check_every grid.
    ("a-confidence0.5-min1-max12", "a", 1, 12, "confidence:0.5", 1, False, None, None),
    ("b-confidence0.55-min1-max16-c2", "b", 1, 16, "confidence:0.55", 2, False, None, None),
    # The lead-in: a KL threshold the first check (against the uniform
    # distribution, about 7-14 nats here) passes for some tokens. Without the
    # lead-in (the authors' behaviour) those tokens stop after one step; with
    # it every token stops at its second check.
    ("a-kl11.4-min1-max16-no-lead-in", "a", 1, 16, "kl:11.4", 1, False, None, None, False),
    ("a-kl11.4-min1-max16-lead-in", "a", 1, 16, "kl:11.4", 1, False, None, None, True),
]


# The columns of tests/golden_traces/traces.tsv (tools/authors_traces.py adds one).
TRACE_COLUMNS = ["name", "model", "seed", "type", "n_embd", "n_ff", "n_head", "n_head_kv", "n_vocab",
                 "blocks", "tied", "qk_bias", "min_iterations", "max_iterations", "exit", "check_every",
                 "warm_start", "prefill_iterations", "kv_budget", "lead_in", "prompt", "tokens", "iterations",
                 "values", "min_rel_margin", "min_logit_gap", "fnv1a64"]


def write_tsv(path: str, columns: list, rows: list) -> None:
    """One header line, then one tab-separated line per row."""
    with open(path, "w") as f:
        f.write("\t".join(columns) + "\n")
        for r in rows:
            f.write("\t".join(str(x) for x in r) + "\n")


def prompt_tokens(n_vocab: int) -> list:
    return [(7 * i * i + 3 * i + 1) % n_vocab for i in range(N_PROMPT)]


def margins(trace, limits):
    """(smallest relative threshold margin over exit decisions, smallest logit
    gap over argmaxes that matter)."""
    rel, gap = math.inf, math.inf
    crit, thr = limits.criterion, limits.threshold
    for g in trace:
        gap = min(gap, g.pick_gap)
        for c in g.checks:
            if crit == "argmax-stability":
                gap = min(gap, c.logit_gap)
                continue
            decides = crit != "none" and limits.min_iterations <= c.step < limits.max_iterations
            lead = limits.lead_in and crit in reference.COMPARING_CRITERIA and c is g.checks[0]
            if not decides or lead:
                continue
            if crit in reference.LATENT_CRITERIA and c.value == 1.0 and c is g.checks[0]:
                continue  # first latent check: 1.0 by convention, exact
            if thr == 0.0 or c.value == 0.0 or not math.isfinite(c.value):
                continue
            rel = min(rel, abs(math.log(c.value / thr)))
    return rel, gap


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rd", default=os.path.join(ROOT, "target", "debug", "rd"))
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "golden_traces"))
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rows, problems = [], []
    with tempfile.TemporaryDirectory() as tmp:
        loaded = {}
        for name, model, mn, mx, exit_spec, every, warm, prefill, budget, *rest in CASES:
            lead_in = rest[0] if rest else True
            if model not in loaded:
                path = os.path.join(tmp, f"{model}.gguf")
                make_model(args.rd, path, model, "f32")
                with open(path, "rb") as f:
                    digest = fnv1a64(f.read())
                loaded[model] = (reference.Model(path), digest)
            m, digest = loaded[model]
            crit, thr = reference.parse_exit(exit_spec)
            limits = reference.ComputeLimits(min_iterations=mn, max_iterations=mx, criterion=crit,
                                             threshold=thr, check_every=every, warm_start=warm,
                                             lead_in=lead_in)
            pre = prefill if prefill is not None else mx
            b = budget if budget is not None else mx
            prompt = prompt_tokens(m.hp.vocab)
            trace = reference.generate(m, prompt, N_GENERATE, limits, pre, b, "zeros")
            toks = [g.token for g in trace]
            its = [g.iterations for g in trace]

            # Cross-check: with no criterion the adaptive path is the fixed one.
            if crit == "none" and pre == mx:
                _, _, generated, _ = reference.run(m, prompt, mx, b, "zeros", decode=N_GENERATE)
                if generated != toks:
                    problems.append(f"{name}: generate() disagrees with run() at fixed iterations")

            rel, gap = margins(trace, limits)
            decode_its = its[1:]
            varied = len(set(decode_its)) > 1
            print(f"{name:32} tokens {toks}\n{'':32} iters  {its}  rel-margin {rel:.3f} gap {gap:.3f}")
            if args.verbose:
                for i, g in enumerate(trace):
                    checks = " ".join(f"{c.step}:{c.value:.4g}" for c in g.checks)
                    print(f"    [{i}] tok {g.token} it {g.iterations} gap {g.pick_gap:.3g} | {checks}")
            if rel < MIN_REL_MARGIN:
                problems.append(f"{name}: an exit decision is within {rel:.3f} (relative) of the threshold")
            if gap < MIN_LOGIT_GAP:
                problems.append(f"{name}: an argmax leads by only {gap:.4f} logits")
            # (A lead-in twin of a first-check case stops at its second check
            # every time, by design.)
            if crit != "none" and not varied and not name.endswith("-lead-in"):
                problems.append(f"{name}: exits do not vary: {decode_its}")
            seed, d, ff, nh, nkv, nv, blocks, tied, qkb = MODELS[model]
            rows.append([name, model, seed, "f32", d, ff, nh, nkv, nv, blocks, int(tied), int(qkb),
                         mn, mx, exit_spec, every, int(warm), pre, b, int(lead_in),
                         ",".join(map(str, prompt)), ",".join(map(str, toks)), ",".join(map(str, its)),
                         ",".join(repr(float(g.value)) for g in trace),
                         f"{rel:.4f}", f"{gap:.4f}", f"{digest:016x}"])
    return finish(os.path.join(args.out, "traces.tsv"), TRACE_COLUMNS, rows, problems)


def finish(path, columns, rows, problems, note=""):
    """Writes the manifest, reports it and any problems; returns the exit
    status (1 when a case had problems)."""
    write_tsv(path, columns, rows)
    print(f"wrote {len(rows)} cases to {path}{note}")
    if problems:
        print("\nPROBLEMS:\n  " + "\n  ".join(problems))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
