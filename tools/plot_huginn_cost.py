#!/usr/bin/env python3
"""Decode cost per token against iterations per token on the full Huginn
shape (random weights, so only time means anything): fixed budgets, and KL
checks at every step that never exit (`kl:0`: the cost of checking), plus
the default KL exit (`kl:5e-4`, min 1) at each maximum as measured points.

Usage:
    python3 tools/plot_huginn_cost.py [--model target/bench-peer/huginn_q4_0.gguf]
        [--rd target/release/rd] [--threads 2] [--reps 2] [--out docs/huginn-cost.png]

The model is the one tools/bench_peer.sh makes (d 5280, 55 heads, MLP 17920,
vocabulary 65536, 2/4/2 blocks, Q4_0). Each point is the median of --reps
runs of 4 decoded tokens (KV budget 1), alternating configurations. Prints a
Markdown table and writes the plot (needs matplotlib). Run on an idle machine.
"""

import argparse
import json
import statistics
import subprocess


def decode_ms(rd, model, threads, args):
    """ms per decoded token and mean iterations of one `rd run`."""
    cmd = [rd, "run", "-m", model, "--threads", str(threads), "--kv-budget", "1", "--ctx", "64",
           "--prompt-tokens", "1", "--max-tokens", "5", "--json"] + args
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    stats = events[-1]["stats"]
    # The first token comes from the prompt; the next four are decoded.
    iters = [e["iterations"] for e in events[1:-1]]
    return 1000.0 * stats["decode_seconds"] / max(1, len(iters)), statistics.mean(iters)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="target/bench-peer/huginn_q4_0.gguf")
    ap.add_argument("--rd", default="target/release/rd")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--budgets", default="1,2,4,8,16,32")
    ap.add_argument("--out", default="docs/huginn-cost.png")
    a = ap.parse_args()
    budgets = [int(x) for x in a.budgets.split(",")]
    configs = {}
    for r in budgets:
        configs[("fixed", r)] = ["--iterations", str(r)]
        configs[("kl:0", r)] = ["--min-iterations", "1", "--max-iterations", str(r), "--exit", "kl:0"]
        configs[("kl:5e-4", r)] = ["--min-iterations", "1", "--max-iterations", str(r), "--exit", "kl:5e-4"]
    samples = {k: [] for k in configs}
    for _ in range(a.reps):
        for k, args in configs.items():
            samples[k].append(decode_ms(a.rd, a.model, a.threads, args))
    med = {k: (statistics.median(m for m, _ in v), statistics.median(i for _, i in v))
           for k, v in samples.items()}
    print(f"| max iterations | fixed ms/token | KL checks every step (kl:0) ms/token | extra cost per check | kl:5e-4 ms/token (mean iterations) |")
    print("|---|---|---|---|---|")
    for r in budgets:
        f, c, e = med[("fixed", r)], med[("kl:0", r)], med[("kl:5e-4", r)]
        # A fixed budget runs the coda and head once, at the last step; the
        # checking run at every one of the r steps: r - 1 more.
        per_check = f"{(c[0] - f[0]) / (r - 1):.1f} ms" if r > 1 else "-"
        print(f"| {r} | {f[0]:.0f} | {c[0]:.0f} | {per_check} | {e[0]:.0f} ({e[1]:.1f}) |")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(budgets, [med[("fixed", r)][0] for r in budgets], "o-", label="fixed iterations")
    ax.plot(budgets, [med[("kl:0", r)][0] for r in budgets], "s--", label="KL check every step (never exits)")
    ax.plot([med[("kl:5e-4", r)][1] for r in budgets], [med[("kl:5e-4", r)][0] for r in budgets], "^",
            label="KL 5e-4 exit (x: mean iterations)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("iterations per token")
    ax.set_ylabel("ms per decoded token")
    ax.set_title(f"Huginn shape (3.5B, Q4_0, random weights), {a.threads} threads")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(a.out, dpi=110)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
