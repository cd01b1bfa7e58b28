#!/usr/bin/env python3
"""Plots the table of `cargo bench --bench exits` as accuracy against compute
time: fixed budgets as a line (the frontier a fixed budget can reach), exit
strategies as labelled points. A strategy pays when it sits on or above the
line to the left of the fixed budget it matches.

Usage:
    RD_BENCH_N=300 cargo bench --bench exits | python3 tools/plot_exits.py --out docs/exits-pareto.png

Needs matplotlib. Reads the Markdown table (| strategy | right | mean
iterations | compute ms | [of which prompt ms |] vs fixed 8 |) from standard
input or --table FILE.
"""

import argparse
import re
import sys


def parse(text: str):
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) not in (5, 6) or not re.fullmatch(r"\d+/\d+", cells[1]):
            continue
        right, total = map(int, cells[1].split("/"))
        rows.append((cells[0], 100.0 * right / total, float(cells[2]), float(cells[3])))
    title = re.search(r"demo model, (\d+) problems, (\d+) thread", text)
    return rows, title


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", help="a file holding the benchmark's output (default: standard input)")
    ap.add_argument("--out", required=True, help="PNG to write")
    args = ap.parse_args()
    text = open(args.table).read() if args.table else sys.stdin.read()
    rows, title = parse(text)
    if not rows:
        print("no benchmark table found in the input", file=sys.stderr)
        return 1

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fixed = sorted((ms, acc, name) for name, acc, _, ms in rows if name.startswith("fixed "))
    others = [(ms, acc, name) for name, acc, _, ms in rows if not name.startswith("fixed ")]
    fig, ax = plt.subplots(figsize=(9, 5.5))
    ax.plot([f[0] for f in fixed], [f[1] for f in fixed], "o-", color="0.35", label="fixed budget")
    for ms, acc, name in fixed:
        ax.annotate(name.replace("fixed ", ""), (ms, acc), textcoords="offset points", xytext=(4, -11),
                    fontsize=8, color="0.35")
    markers = {"kl": "s", "cosine": "^", "latent-diff": "D"}
    for i, (ms, acc, name) in enumerate(others):
        m = markers.get(name.split()[0], "x")
        ax.plot(ms, acc, m, markersize=6, label=name)
    ax.set_xscale("log")
    ax.set_xlabel("compute time, prefill + decode (ms, log scale)")
    ax.set_ylabel("right answers (%)")
    if title:
        ax.set_title(f"Exit strategies vs fixed budgets: demo model, {title.group(1)} problems, "
                     f"{title.group(2)} thread(s)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right", ncol=1)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
