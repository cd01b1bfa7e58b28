#!/usr/bin/env python3
"""Accuracy of the addition demo model against the number of recurrences.

Two back ends, on the same held-out problems (never seen in training; rebuilt
from the seed recorded in the checkpoint's config.json):

  --hf DIR        the PyTorch model of tools/train_demo.py (teacher-forced
                  exact match, which equals greedy exact match)
  --gguf FILE     the converted model through the runtime (`rd run`, greedy,
                  one process per problem), also with KL early exit at two
                  thresholds and with the KV budget B = full and B = 1

Prints Markdown tables; --json writes the numbers and --plot a PNG of accuracy
against iterations. Examples:

    python3 tools/eval_demo.py --hf models/demo-hf
    python3 tools/eval_demo.py --gguf models/huginn-demo-addition.gguf \
        --rd target/release/rd --n 500 --plot docs/demo-accuracy.png
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

ITERS = (1, 2, 4, 8, 16, 32)

# The task's parameters, as train_demo.py's defaults; a checkpoint's config.json
# ("demo_task") overrides them.
DEFAULT_TASK = {"seed": 1234, "max_digits": 6, "answer_order": "msd", "n_eval": 2000}


def task_from(hf_dir: str | None) -> dict:
    task = dict(DEFAULT_TASK)
    if hf_dir and os.path.exists(os.path.join(hf_dir, "config.json")):
        with open(os.path.join(hf_dir, "config.json")) as f:
            dt = json.load(f).get("demo_task", {})
        for k in ("seed", "max_digits", "answer_order"):
            if k in dt:
                task[k] = dt[k]
        if "args" in dt and "n_eval" in dt["args"]:
            task["n_eval"] = dt["args"]["n_eval"]
    return task


def held_out(task: dict):
    from demo_task import make_problems

    return make_problems(task["seed"] + 1, task["n_eval"], task["max_digits"])


def digits_of(p) -> int:
    return max(len(str(p[0])), len(str(p[1])))


def breakdown(problems, ok, key):
    groups = {}
    for p, g in zip(problems, ok):
        k = key(p)
        n, c = groups.get(k, (0, 0))
        groups[k] = (n + 1, c + int(g))
    return {k: c / n for k, (n, c) in sorted(groups.items())}


# ---------------------------------------------------------------------------
# PyTorch
# ---------------------------------------------------------------------------


def eval_torch(hf_dir: str, problems, task, iters, seed: int):
    import torch

    from demo_task import carry_chain
    from train_demo import exact_match, load_hf

    torch.set_num_threads(int(os.environ.get("EVAL_THREADS", "2")))
    model = load_hf(hf_dir)
    res = {"random": {}, "zeros": {}, "by_digits": {}, "by_carry_chain": {}}
    for r in iters:
        ok = exact_match(model, problems, task["answer_order"], r, init="random", seed=seed)
        res["random"][r] = sum(ok) / len(ok)
        res["by_digits"][r] = breakdown(problems, ok, digits_of)
        res["by_carry_chain"][r] = breakdown(problems, ok, lambda p: min(carry_chain(*p), 4))
        okz = exact_match(model, problems, task["answer_order"], r, init="zeros")
        res["zeros"][r] = sum(okz) / len(okz)
    return res


# ---------------------------------------------------------------------------
# The runtime
# ---------------------------------------------------------------------------


def rd_answer(rd, gguf, prompt_ids, n_answer, extra):
    """Greedy answer ids from `rd run --json`, its per-token iterations and stats."""
    from demo_task import EOS

    cmd = [rd, "run", "-m", gguf, "--threads", "1", "--prompt-tokens", ",".join(map(str, prompt_ids)),
           "--max-tokens", str(n_answer), "--stop", str(EOS), "--json"] + extra
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    ids, iters, stats = [], [], {}
    for line in out.splitlines():
        obj = json.loads(line)
        if "stats" in obj:
            stats = obj["stats"]
        else:
            ids.append(obj["id"])
            iters.append(obj["iterations"])
    return ids, iters, stats


def eval_rd(rd, gguf, problems, task, configs):
    """Every configuration on every problem. The configurations take turns
    problem by problem, so that a machine slowing down or speeding up during
    the run moves all of them alike (their time ratios are what matter)."""
    from demo_task import EOS, answer_text, encode

    acc = [{"correct": 0, "n_iter": 0, "n_tok": 0, "compute": 0.0, "wall": 0.0} for _ in configs]
    for k, (a, b) in enumerate(problems):
        want = encode(answer_text(a, b, task["answer_order"]), bos=False) + [EOS]
        for (name, extra), c in zip(configs, acc):
            t0 = time.time()
            ids, its, stats = rd_answer(rd, gguf, encode(f"{a}+{b}="), len(want), extra)
            c["wall"] += time.time() - t0
            c["correct"] += int(ids == want)
            c["n_iter"] += sum(its)
            c["n_tok"] += len(its)
            # Prefill and decode as the runtime timed them (no process start).
            c["compute"] += stats.get("prefill_seconds", 0.0) + stats.get("decode_seconds", 0.0)
        if (k + 1) % 100 == 0:
            print(f"  {k + 1}/{len(problems)} problems", file=sys.stderr, flush=True)
    rows = []
    for (name, _), c in zip(configs, acc):
        n = len(problems)
        row = {"config": name, "accuracy": c["correct"] / n, "mean_iterations": c["n_iter"] / max(1, c["n_tok"]),
               "wall_ms_per_problem": 1000 * c["wall"] / n,
               "compute_ms_per_problem": 1000 * c["compute"] / n}
        rows.append(row)
        print(f"  {name:34s} acc {row['accuracy']:.3f}  mean it {row['mean_iterations']:5.2f}  "
              f"{row['wall_ms_per_problem']:.1f} ms/problem, compute {row['compute_ms_per_problem']:.2f} ms",
              file=sys.stderr, flush=True)
    return rows


def rd_configs(iters, kl_thresholds, init, kl_min=1, strategies=(), b1=True):
    cfgs = []
    budgets = (("B=full", []), ("B=1", ["--kv-budget", "1"])) if b1 else (("B=full", []),)
    for b_name, b in budgets:
        for r in iters:
            cfgs.append((f"{r} iterations, {b_name}", ["--iterations", str(r), "--init", init] + b))
        for th in kl_thresholds:
            cfgs.append((f"kl:{th:g} (min {kl_min}, max 32), {b_name}",
                         ["--max-iterations", "32", "--min-iterations", str(kl_min), "--exit", f"kl:{th:g}",
                          "--init", init] + b))
    for flags in strategies:
        cfgs.append((f"`{flags}`", flags.split() + ["--init", init]))
    return cfgs


# ---------------------------------------------------------------------------


def plot(path, series, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for label, pts in series:
        xs = sorted(pts)
        ax.plot(xs, [100 * pts[x] for x in xs], marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(ITERS))
    ax.set_xticklabels([str(x) for x in ITERS])
    ax.set_xlabel("recurrent iterations per token")
    ax.set_ylabel("exact-match accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hf", help="PyTorch checkpoint folder (HF layout)")
    ap.add_argument("--gguf", help="converted model, evaluated through the runtime")
    ap.add_argument("--rd", default="target/release/rd", help="the rd binary")
    ap.add_argument("--n", type=int, default=0, help="use the first N held-out problems (0 = all)")
    ap.add_argument("--iters", default=",".join(map(str, ITERS)))
    ap.add_argument("--kl", default="1e-2,1e-4", help="KL exit thresholds")
    ap.add_argument("--kl-min", type=int, default=1, help="min iterations of the KL exits")
    ap.add_argument("--strategy", action="append", default=[],
                    help="more `rd run` flags to evaluate as one configuration (B = full), "
                         "e.g. '--min-iterations 2 --max-iterations 32 --exit confidence:0.9'; repeatable")
    ap.add_argument("--no-b1", action="store_true", help="skip the B = 1 configurations")
    ap.add_argument("--init", default="zeros", help="runtime initial state: zeros or seed:N")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random initial state (PyTorch)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--plot", help="write a PNG of accuracy against iterations here")
    args = ap.parse_args()
    if not args.hf and not args.gguf:
        ap.error("give --hf and/or --gguf")

    task = task_from(args.hf)
    problems = held_out(task)
    if args.n:
        problems = problems[: args.n]
    iters = [int(x) for x in args.iters.split(",")]
    results = {"task": task, "n_problems": len(problems)}
    series = []

    print(f"held-out problems: {len(problems)} (a+b, 1..{task['max_digits']} digits each)\n")
    if args.hf:
        res = eval_torch(args.hf, problems, task, iters, args.seed)
        results["torch"] = res
        print("PyTorch model (teacher-forced exact match = greedy exact match)\n")
        print("| iterations | " + " | ".join(map(str, iters)) + " |")
        print("|---|" + "---|" * len(iters))
        for init in ("random", "zeros"):
            print(f"| accuracy, {init} initial state | " + " | ".join(f"{100 * res[init][r]:.1f}%" for r in iters) + " |")
        print()
        print("Accuracy (random initial state) by the longer operand's digit count:\n")
        keys = sorted({k for r in iters for k in res["by_digits"][r]})
        print("| digits | " + " | ".join(map(str, iters)) + " |")
        print("|---|" + "---|" * len(iters))
        for k in keys:
            print(f"| {k} | " + " | ".join(f"{100 * res['by_digits'][r].get(k, 0):.1f}%" for r in iters) + " |")
        print()
        print("Accuracy (random initial state) by the longest carry chain (4 = 4 or more):\n")
        keys = sorted({k for r in iters for k in res["by_carry_chain"][r]})
        print("| carries | " + " | ".join(map(str, iters)) + " |")
        print("|---|" + "---|" * len(iters))
        for k in keys:
            print(f"| {k} | " + " | ".join(f"{100 * res['by_carry_chain'][r].get(k, 0):.1f}%" for r in iters) + " |")
        print()
        series.append(("PyTorch, random initial state", res["random"]))
        series.append(("PyTorch, zero initial state", res["zeros"]))

    if args.gguf:
        rows = eval_rd(args.rd, args.gguf, problems, task,
                       rd_configs(iters, [float(x) for x in args.kl.split(",") if x], args.init, args.kl_min,
                                  args.strategy, not args.no_b1))
        results["runtime"] = rows
        print(f"Runtime (`rd run`, greedy, initial state {args.init}, one process per problem)\n")
        print("| configuration | accuracy | mean iterations per token | compute per problem | "
              "wall time per problem (with process start) |")
        print("|---|---|---|---|---|")
        for row in rows:
            print(f"| {row['config']} | {100 * row['accuracy']:.1f}% | {row['mean_iterations']:.2f} | "
                  f"{row['compute_ms_per_problem']:.2f} ms | {row['wall_ms_per_problem']:.1f} ms |")
        print()
        for b in ("B=full", "B=1"):
            pts = {}
            for row in rows:
                if row["config"].endswith(b) and "iterations," in row["config"]:
                    pts[int(row["config"].split()[0])] = row["accuracy"]
            series.append((f"runtime, {b}", pts))

    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    if args.plot:
        plot(args.plot, series, f"addition demo: {len(problems)} held-out problems")


if __name__ == "__main__":
    main()
