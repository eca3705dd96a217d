"""Printing and plotting benchmark rows."""

from __future__ import annotations

import platform


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _speedup(row, kind):
    ratio = row.get(f"{kind}_speedup")
    return f"{ratio:.2f}x" if ratio else "-"


def print_table(rows, probe, probe_name="in-place addcmul_"):
    header = (f"{'case':>10} {'tensors':>7} {'numel':>9} {'dtype':>8} {'config':>10} "
              f"{'fused ms':>9} {'Gelem/s':>8} {'GB/s':>6} {'roof%':>5} "
              f"{'vs loop':>7} {'vs foreach':>10} {'vs compile':>10}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['case']:>10} {r['tensors']:>7} {r['numel']:>9.2e} {r['dtype']:>8} "
              f"{r['config']:>10} {1e3 * r['fused_s']:>9.3f} {r['numel'] / r['fused_s'] / 1e9:>8.2f} "
              f"{r['gbps']:>6.1f} {r['roofline_pct']:>5.0f} {_speedup(r, 'for-loop'):>7} "
              f"{_speedup(r, 'foreach'):>10} {_speedup(r, 'compile'):>10}")
    compiled = [r for r in rows if "compile_time_s" in r]
    for r in compiled:
        print(f"torch.compile of the {r['case']} {r['dtype']} {r['config']} step: "
              f"{r['compile_time_s']:.1f} s to compile, {1e3 * r['compile_s']:.2f} ms per step")
    if probe_name == "in-place addcmul_":
        where = (f"timed interleaved with each case of 4M+ elements (smaller cases: 64M fp32 at "
                 f"the start, {probe:.1f} GB/s)")
    else:
        where = f"timed interleaved with each case ({probe:.1f} GB/s at the start)"
    print(f"roof%: GB/s against an {probe_name} {where}; GB/s counts the minimum bytes per "
          "element (read p, g and state, write p and state)")
    print("roof% and the speed-ups are medians over repeats of ratios of times taken in the "
          "same repeat; ms is the median step time")


def plot(rows, probe, path, device):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return None
    sweep = [r for r in rows if r["tensors"] == 1]
    configs = sorted({r["config"] for r in sweep})
    if not configs:
        return None
    fig, axes = plt.subplots(1, len(configs), figsize=(6 * len(configs), 4.5), squeeze=False)
    for ax, config in zip(axes[0], configs):
        for dtype in sorted({r["dtype"] for r in sweep}):
            pts = sorted((r for r in sweep if r["config"] == config and r["dtype"] == dtype),
                         key=lambda r: r["numel"])
            xs = [r["numel"] for r in pts]
            for kind, style in (("fused", "-o"), ("for-loop", "--x"), ("foreach", ":^")):
                if any(f"{kind}_s" not in r for r in pts):
                    continue  # (no for-loop baseline on a GPU)
                ys = [r["bytes_per_element"] * r["numel"] / r[f"{kind}_s"] / 1e9 for r in pts]
                label = "FusedRMSprop" if kind == "fused" else f"torch {kind}"
                ax.plot(xs, ys, style, label=f"{label} {dtype}")
        ax.axhline(probe, color="k", lw=1, label=f"probe {probe:.0f} GB/s")
        ax.set_xscale("log")
        ax.set_xlabel("elements in the parameter")
        ax.set_ylabel("GB/s (minimum bytes per step)")
        ax.set_title(f"{device}, {config}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def markdown_table(rows):
    """The rows as a Markdown table (for docs/performance.md)."""
    lines = ["| case | tensors | dtype | options | FusedRMSprop ms | GB/s | roof % "
             "| vs torch for-loop | vs torch foreach | vs torch.compile |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['tensors']} | {r['dtype']} | {r['config']} | "
                     f"{1e3 * r['fused_s']:.2f} | {r['gbps']:.1f} | {r['roofline_pct']:.0f} | "
                     f"{_speedup(r, 'for-loop')} | {_speedup(r, 'foreach')} | "
                     f"{_speedup(r, 'compile')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    import json
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python bench/report.py bench/results/results.json  (prints Markdown tables)")
    with open(sys.argv[1]) as f:
        results = json.load(f)
    print(f"machine: {results['machine']}")
    for device, data in results["devices"].items():
        print(f"\n{device}: bandwidth probe at the start {data['roofline_gbps']:.1f} GB/s\n")
        print(markdown_table(data["rows"]))
