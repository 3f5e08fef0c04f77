#!/usr/bin/python3
"""make plot: nvmx's exit counters as charts (PNG and SVG).

    plot.py [--bench build/bench.csv] [--stats build/stats.csv] [--out build]

--bench: the CSV `make bench` writes (`bench,cpu,shadowing,from,reason,name,
exits,l0_cycles`): the seed thread's picture, VMX-instruction exits of L1 per
reason with VMCS shadowing off vs on, one panel per core, log scale ->
<out>/bench.png, <out>/bench.svg.

--stats: `stats --csv` output saved to a file (header `cpu,from,vmexit,name,
times (hex),times,...`; the shell's prompt, echoed command and log lines
around it are skipped): exits per reason, one bar colour per level (L1, L2
handled by L0, L2 reflected to L1), one panel per core, log scale ->
<out>/stats.png, <out>/stats.svg.

Debian's python3-matplotlib (installed by `make deps`): log axes, grouped
bars, PNG and SVG from one figure, fonts included.
"""

import argparse
import csv
import os
import sys

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

# VMX instructions' basic exit reasons (SDM Vol. 3D, Appendix C).
VMX_REASONS = [19, 20, 21, 22, 23, 24, 25, 26, 27, 50, 53]
LEVELS = [("L1", "L1", "#1f77b4"), ("L2 (L0)", "L2 handled by L0", "#2ca02c"),
          ("L2 (to L1)", "L2 reflected to L1", "#d62728")]
SHADOWING = [("off", "VMCS shadowing off", "#d62728"), ("on", "VMCS shadowing on", "#1f77b4")]


def fail(msg):
    print(f"plot: {msg}", file=sys.stderr)
    sys.exit(1)


def read_bench(path):
    """{cpu: {shadowing: {reason: (name, exits)}}} of L1's exits."""
    runs = {}
    with open(path, newline="") as f:
        for row in csv.reader(f):
            if len(row) != 8 or row[0] != "bench" or not row[1].isdigit():
                continue
            cpu, mode, level, reason, name, exits = int(row[1]), row[2], row[3], int(row[4]), row[5], int(row[6])
            if level == "L1":
                runs.setdefault(cpu, {}).setdefault(mode, {})[reason] = (name, exits)
    if not runs:
        fail(f"{path}: no bench rows (expected lines like bench,0,off,L1,23,vmread,36008,16276000)")
    return runs


def read_stats(path):
    """{cpu: {(level, reason): (name, exits)}}."""
    cores = {}
    with open(path, newline="", errors="replace") as f:
        for row in csv.reader(f):
            row = [c.strip() for c in row]
            if len(row) != 11 or not row[0].isdigit() or not row[2].isdigit() or not row[5].isdigit():
                continue
            cores.setdefault(int(row[0]), {})[(row[1], int(row[2]))] = (row[3], int(row[5]))
    if not cores:
        fail(f"{path}: no `stats --csv` rows (expected lines like 0,L1,23,vmread,0x8CA8,36008,...)")
    return cores


def panels(n):
    fig, axes = plt.subplots(n, 1, figsize=(10, 3.6 * n + 0.8), squeeze=False)
    return fig, [a[0] for a in axes]


def bars(ax, labels, series, title, zeros):
    """Grouped bars of `series` = [(legend, colour, values)] on a log axis,
    each with its count; with `zeros`, a 0 (nothing to draw on a log scale)
    is written as "0" at the bottom, else left out."""
    n = len(series)
    width = 0.8 / n
    top = max([v for _, _, vals in series for v in vals] + [1])
    for i, (legend, colour, vals) in enumerate(series):
        xs = [x + (i - (n - 1) / 2) * width for x in range(len(labels))]
        ax.bar(xs, [v if v > 0 else 0 for v in vals], width, label=legend, color=colour)
        for x, v in zip(xs, vals):
            if v == 0 and not zeros:
                continue
            ax.annotate(f"{v}", (x, max(v, 1)), ha="center", va="bottom", fontsize=7, xytext=(0, 1),
                        textcoords="offset points")
    ax.set_yscale("log")
    ax.set_ylim(0.8, max(top * 4, 10))
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("exits (log)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", which="major", alpha=0.3)
    ax.legend(fontsize=8)


def save(fig, out, stem):
    fig.tight_layout()
    paths = [os.path.join(out, f"{stem}.{ext}") for ext in ("png", "svg")]
    for p in paths:
        fig.savefig(p, dpi=100)
    plt.close(fig)
    print("plot: wrote " + " and ".join(paths))


def plot_bench(runs, out, source):
    fig, axes = panels(len(runs))
    for ax, cpu in zip(axes, sorted(runs)):
        modes = runs[cpu]
        names = {r: n for m in modes.values() for r, (n, _) in m.items()}
        reasons = [r for r in VMX_REASONS if r in names]
        labels = [f"{r} {names[r]}" for r in reasons]
        series = [(legend, colour, [modes.get(mode, {}).get(r, ("", 0))[1] for r in reasons])
                  for mode, legend, colour in SHADOWING]
        bars(ax, labels, series, f"cpu {cpu}: VMX-instruction exits of L1 per reason (from {source})", True)
    save(fig, out, "bench")


def plot_stats(cores, out, source):
    fig, axes = panels(len(cores))
    for ax, cpu in zip(axes, sorted(cores)):
        rows = cores[cpu]
        reasons = sorted({r for (_, r) in rows})
        names = {r: n for (_, r), (n, _) in rows.items()}
        labels = [f"{r} {names[r]}" for r in reasons]
        series = [(legend, colour, [rows.get((level, r), ("", 0))[1] for r in reasons])
                  for level, legend, colour in LEVELS if any(level == lv for (lv, _) in rows)]
        bars(ax, labels, series, f"cpu {cpu}: exits per reason and level (from {source})", False)
    save(fig, out, "stats")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench", help="CSV from make bench (build/bench.csv)")
    ap.add_argument("--stats", help="`stats --csv` output saved to a file")
    ap.add_argument("--out", default="build", help="directory for the PNG and SVG files")
    args = ap.parse_args()
    have = [p for p in (args.bench, args.stats) if p and os.path.exists(p)]
    if not have:
        fail(f"nothing to draw: no {args.bench} (run `make bench`) and no {args.stats} "
             "(`make bench` writes one; or save `stats --csv` output there)")
    os.makedirs(args.out, exist_ok=True)
    if args.bench and os.path.exists(args.bench):
        plot_bench(read_bench(args.bench), args.out, os.path.basename(args.bench))
    if args.stats and os.path.exists(args.stats):
        plot_stats(read_stats(args.stats), args.out, os.path.basename(args.stats))


if __name__ == "__main__":
    main()
