"""Throughput microbenchmarks of FusedRMSprop against torch.optim.RMSprop.

    make bench                                   # the embedded default: the CPU (under 5 min
                                                 # here) and then every visible GPU
    make bench BENCH_ARGS="--quick"              # sizes up to 1e6, 200x50K and 200x16, no compile
    python bench/run.py --device cuda --sizes 1e6 1e8 --dtypes float32 --models gpt2-small

Cases: one tensor per size of the sweep (CPU 1e3 to 1e8, GPU 1e6 to 1e9),
and parameter lists shaped like real models, for each dtype and option set.
Baselines, timed in the same run: torch.optim.RMSprop's for-loop (its CPU
default; CPU only), foreach=True, and torch.compile of its step on the
headline cases (cases.HEADLINES; compile time reported on its own). The
roofline is a probe timed interleaved with the steps of each case: on the
CPU an in-place addcmul_ (16 bytes per element), on a GPU a device-to-device
copy of 1 GiB (8 bytes per element). GB/s counts the minimum bytes a step
must move (bench/cases.py: bytes_per_element). Every repeat runs one step of
each optimizer and one probe in turn, and the table shows medians, so ratios
are taken under the same machine conditions. On a GPU each call is timed
with CUDA events after an L2 flush; a case that does not fit in the GPU's
free memory is skipped with a note.

After the table's cases, on each device: clipping, stochastic rounding, 8-bit
state, and gradient release (the GPT-2-small list: backward + step() against
the updates inside backward, and the updates alone).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cases  # noqa: E402
import harness  # noqa: E402
import report  # noqa: E402
from fused_rmsprop import FusedRMSprop  # noqa: E402

BASELINES = ["for-loop", "foreach", "compile"]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default=None,
                   help="cpu, cuda, cuda:1 ... (default: the CPU and every GPU)")
    p.add_argument("--sizes", type=float, nargs="*", default=None,
                   help=f"default: {cases.DEFAULT_SIZES} on the CPU, {cases.GPU_SIZES} on a GPU")
    p.add_argument("--models", nargs="*", default=list(cases.MODELS), choices=list(cases.MODELS))
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    p.add_argument("--configs", nargs="+", default=list(cases.CONFIGS), choices=list(cases.CONFIGS))
    p.add_argument("--compile", choices=["headline", "all", "none"], default="headline",
                   help="torch.compile baseline: headline = the float32 cases of "
                        "cases.HEADLINES (CPU 6.4e7; GPU 1e8 and gpt2-small)")
    p.add_argument("--clipping-size", type=float, default=6.4e7,
                   help="elements of the clipping cases (0: none)")
    p.add_argument("--rounding-size", type=float, default=6.4e7,
                   help="elements of the stochastic-rounding cases (0: none)")
    p.add_argument("--state-bits-size", type=float, default=6.4e7,
                   help="elements of the 8-bit state cases (0: none)")
    p.add_argument("--release-model", default="gpt2-small", choices=list(cases.MODELS) + ["none"],
                   help="parameter list of the gradient-release case (none: skip it)")
    p.add_argument("--quick", action="store_true",
                   help="sizes up to 1e6, the 200x50K and 200x16 lists only, no compile baseline")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = p.parse_args(argv)
    if args.quick:
        args.sizes = [s for s in (args.sizes or cases.DEFAULT_SIZES) if s <= 1e6]
        args.models = ["200x50K", "200x16"]
        args.compile = "none"
        args.clipping_size = 0
        args.rounding_size = 0
        args.state_bits_size = 0
        args.release_model = "none"
    return args


def repeats_for(numel):
    return 20 if numel <= 1e6 else 15 if numel <= 2e7 else 9


def sizes_for(args, device):
    if args.sizes is not None:
        return args.sizes
    return cases.GPU_SIZES if harness.is_cuda(device) else cases.DEFAULT_SIZES


def case_list(args, device="cpu"):
    out = []
    for dtype in args.dtypes:
        for config in args.configs:
            for size in sizes_for(args, device):
                out.append((cases.size_name(size), [(int(size),)], dtype, config))
            for model in args.models:
                out.append((model, cases.MODELS[model](), dtype, config))
    return out


def wants_compile(args, name, dtype, device="cpu"):
    headline = name in cases.HEADLINES[torch.device(device).type] and dtype == "float32"
    return args.compile == "all" or (args.compile == "headline" and headline)


def kinds_for(args, name, dtype, device):
    kinds = ["fused", "foreach"] if harness.is_cuda(device) else ["fused", "for-loop", "foreach"]
    if wants_compile(args, name, dtype, device):
        kinds.append("compile")
    return kinds


def bytes_needed(shapes, dtype, config, kinds):
    """GPU memory a case needs: params and grads, each optimizer's state,
    torch foreach's temporaries (about two tensors), and the probe's 2 GiB
    and the L2 flush buffer."""
    n = cases.numel(shapes)
    size = torch.empty((), dtype=getattr(torch, dtype)).element_size()
    options = cases.CONFIGS[config]
    state = 1 + (options.get("momentum", 0) > 0) + bool(options.get("centered", False))
    return n * size * (2 + state * len(kinds) + 2) + (2**31 + 2**28)


def run_device(device, args):
    probe_name, probe_bytes, probe_default_numel, _ = harness.probe_for(device)
    probe = harness.bandwidth_probe(device)
    gpu = harness.is_cuda(device)
    label = torch.cuda.get_device_name(torch.device(device)) if gpu else report.cpu_name()
    print(f"[{device}] {label}: {probe_name} bandwidth probe ({probe_default_numel / 2**20:.0f}M "
          f"fp32): {probe:.1f} GB/s; each case {'' if gpu else 'of 4M+ elements '}also runs a probe "
          "interleaved with its steps and uses that for roof%", flush=True)
    rows = []
    todo = case_list(args, device)
    for i, (name, shapes, dtype_name, config) in enumerate(todo, 1):
        dtype = getattr(torch, dtype_name)
        n = cases.numel(shapes)
        kinds = kinds_for(args, name, dtype_name, device)
        print(f"  [{i}/{len(todo)}] {name} {dtype_name} {config} ...", end="", flush=True)
        free = harness.free_bytes(device)
        if free is not None and bytes_needed(shapes, dtype_name, config, kinds) > 0.95 * free:
            need = bytes_needed(shapes, dtype_name, config, kinds)
            print(f" skipped: needs about {need / 2**30:.0f} GiB, {free / 2**30:.0f} GiB free",
                  flush=True)
            continue
        started = time.perf_counter()
        params = harness.make_params(shapes, dtype, device)
        options = cases.CONFIGS[config]
        reps = repeats_for(n)
        row = dict(device=device, case=name, tensors=len(shapes), numel=n, dtype=dtype_name,
                   config=config, bytes_per_element=cases.bytes_per_element(dtype, config),
                   roofline_gbps=probe, probe=probe_name)
        # On the CPU, cases larger than the caches get their own interleaved
        # probe; on a GPU every case does (the L2 is flushed before each call).
        if gpu:
            probe_numel = probe_default_numel
        else:
            probe_numel = min(n, 2**26) if n >= 2**22 else 0
        times, compile_s = harness.time_case(params, options, kinds, reps, device, probe_numel)
        for kind in kinds:
            row[f"{kind}_s"] = statistics.median(times[kind])
            if kind != "fused":  # speed-up, from times of the same repeat
                row[f"{kind}_speedup"] = harness.paired(times[kind], times["fused"])
        if compile_s is not None:
            row["compile_time_s"] = compile_s
        del params
        row["gbps"] = row["bytes_per_element"] * n / row["fused_s"] / 1e9
        if probe_numel:
            row["roofline_gbps"] = probe_bytes * probe_numel / statistics.median(times["probe"]) / 1e9
            # fused GB/s over probe GB/s, from times of the same repeat
            row["roofline_pct"] = 100 * harness.paired(
                [row["bytes_per_element"] * n / t for t in times["fused"]],
                [probe_bytes * probe_numel / t for t in times["probe"]])
        else:
            row["roofline_pct"] = 100 * row["gbps"] / row["roofline_gbps"]
        rows.append(row)
        print(f" {time.perf_counter() - started:.1f}s", flush=True)
    return probe, rows


def run_clipping(device, args):
    """The clipped step against torch's clip_grad_norm_ + compiled step, with
    and without GradScaler, and the norm pass against a read-only probe, all
    timed interleaved on one float32 tensor of args.clipping_size elements."""
    n = int(args.clipping_size)
    if not n:
        return None
    print(f"  clipping cases, {cases.size_name(n)} float32 ...", end="", flush=True)
    started = time.perf_counter()
    params = harness.make_params([(n,)], torch.float32, device)
    kinds = ["fused+clip", "compile+clip", "fused+clip+amp", "compile+clip+amp", "norm",
             "read-probe"]
    times, _ = harness.time_case(params, {}, kinds, repeats_for(n), device, 0)
    del params
    print(f" {time.perf_counter() - started:.1f}s", flush=True)
    ms = {k: 1e3 * statistics.median(times[k]) for k in kinds}
    result = dict(numel=n, ms=ms,
                  speedup=harness.paired(times["compile+clip"], times["fused+clip"]),
                  speedup_amp=harness.paired(times["compile+clip+amp"], times["fused+clip+amp"]),
                  norm_gbps=4 * n / statistics.median(times["norm"]) / 1e9,
                  read_gbps=4 * n / statistics.median(times["read-probe"]) / 1e9,
                  norm_pct=100 * harness.paired(times["read-probe"], times["norm"]))
    print(f"clipped step, {cases.size_name(n)} float32 (max_grad_norm vs clip_grad_norm_(foreach) "
          f"+ torch.compile'd step): fused {ms['fused+clip']:.2f} ms, torch "
          f"{ms['compile+clip']:.2f} ms: {result['speedup']:.2f}x; under GradScaler (torch also "
          f"unscale_s): fused {ms['fused+clip+amp']:.2f} ms, torch {ms['compile+clip+amp']:.2f} ms: "
          f"{result['speedup_amp']:.2f}x")
    print(f"norm pass: {result['norm_gbps']:.1f} GB/s, {result['norm_pct']:.0f} % of a read-only "
          f"probe (sum) at {result['read_gbps']:.1f} GB/s")
    return result


def run_rounding(device, args):
    """The cost of stochastic rounding: a bfloat16 step of args.rounding_size
    elements with stochastic_rounding=True against the same step rounding to
    nearest, timed interleaved, with bfloat16 state (torch's default) and with
    float32 state."""
    n = int(args.rounding_size)
    if not n:
        return None
    print(f"  stochastic rounding cases, {cases.size_name(n)} bfloat16 ...", end="", flush=True)
    started = time.perf_counter()
    result = {"numel": n}
    for state in ("bfloat16", "float32"):
        params = harness.make_params([(n,)], torch.bfloat16, device)
        options = {"state_dtype": torch.float32} if state == "float32" else {}
        times, _ = harness.time_case(params, options, ["fused", "fused+sr"], 21, device, 0)
        del params
        result[f"{state} state"] = dict(
            ms={k: 1e3 * statistics.median(v) for k, v in times.items()},
            cost_pct=100 * (harness.paired(times["fused+sr"], times["fused"]) - 1))
    print(f" {time.perf_counter() - started:.1f}s", flush=True)
    for state in ("bfloat16", "float32"):
        r = result[f"{state} state"]
        print(f"stochastic rounding, {cases.size_name(n)} bfloat16 params, {state} state: "
              f"{r['ms']['fused+sr']:.2f} ms against {r['ms']['fused']:.2f} ms rounding to "
              f"nearest: {r['cost_pct']:+.1f} %")
    return result


STATE_BITS_CONFIGS = {"plain": {}, "momentum+centered+wd": dict(momentum=0.9, centered=True,
                                                                 weight_decay=1e-2)}


def run_state_bits(device, args):
    """8-bit state (state_bits=8) on one float32 tensor of args.state_bits_size
    elements: the step against the torch.compile'd torch step and the
    full-precision fused step, timed interleaved with the bandwidth probe;
    its throughput at its own bytes per element, and its state's bytes per
    state element (scales included), measured on the optimizer's tensors."""
    n = int(args.state_bits_size)
    if not n:
        return None
    result = {"numel": n}
    probe_name, probe_bytes, probe_numel, _ = harness.probe_for(device)
    for config, options in STATE_BITS_CONFIGS.items():
        print(f"  8-bit state, {config}, {cases.size_name(n)} float32 ...", end="", flush=True)
        started = time.perf_counter()
        params = harness.make_params([(n,)], torch.float32, device)
        opt = FusedRMSprop(params, state_bits=8, **options)
        opt.step()
        state = [v for s in opt.state.values() for k, v in s.items() if k != "step"]
        states = sum(1 for s in opt.state.values() for k in s if k.endswith("_codes"))
        state_bytes = sum(t.numel() * t.element_size() for t in state) / (n * states)
        del opt, state
        # what one element moves: param and codes read and written, grad and scales read
        nbytes = 4 * 3 + states * (2 + 8 / 128)
        times, _ = harness.time_case(params, options, ["fused8", "compile", "fused"],
                                     repeats_for(n), device, probe_numel)
        del params
        print(f" {time.perf_counter() - started:.1f}s", flush=True)
        gbps = [nbytes * n / t / 1e9 for t in times["fused8"]]
        probe = [probe_bytes * probe_numel / t / 1e9 for t in times["probe"]]
        result[config] = dict(
            ms={k: 1e3 * statistics.median(v) for k, v in times.items() if k != "probe"},
            state_bytes_per_element=state_bytes, bytes_per_element=nbytes,
            speedup_vs_compile=harness.paired(times["compile"], times["fused8"]),
            speedup_vs_full=harness.paired(times["fused"], times["fused8"]),
            gbps=statistics.median(gbps), roofline_gbps=statistics.median(probe),
            roofline_pct=100 * harness.paired(gbps, probe))
    for config in STATE_BITS_CONFIGS:
        r = result[config]
        print(f"8-bit state, {config}, {cases.size_name(n)} float32: {r['ms']['fused8']:.2f} ms, "
              f"{r['speedup_vs_compile']:.2f}x the torch.compile'd step ({r['ms']['compile']:.2f} "
              f"ms), {r['speedup_vs_full']:.2f}x the full-precision fused step; "
              f"{r['gbps']:.1f} GB/s at {r['bytes_per_element']:.2f} B/element = "
              f"{r['roofline_pct']:.0f} % of the {probe_name} probe; state "
              f"{r['state_bytes_per_element']:.3f} B per state element")
    return result


def run_release(device, args):
    """Gradient release (NOTE: [gradient release]) against step() after
    backward, float32 params of the args.release_model list, default options:
    the same backward (one multiply per parameter, so it writes every
    gradient) then step(), or with release_gradients() (default buckets) the
    updates inside that backward; each its own copy of the parameters (the
    hooks live on them), timed interleaved."""
    name = args.release_model
    if name == "none":
        return None
    shapes = cases.MODELS[name]()
    n = cases.numel(shapes)
    print(f"  gradient release, {name} float32 ...", end="", flush=True)
    started = time.perf_counter()
    steps, updates = {}, {}
    for kind in ("step", "release"):
        params = harness.make_params(shapes, torch.float32, device)
        steps[kind], updates[kind] = harness.backward_and_step(params, release=(kind == "release"))
    del params
    times = harness.interleaved(steps, repeats_for(n), device)
    del steps
    print(f" {time.perf_counter() - started:.1f}s", flush=True)
    warm = {k: v[-len(times[k]):] for k, v in updates.items()}  # the timed repeats
    result = dict(model=name, numel=n, tensors=len(shapes),
                  ms={k: 1e3 * statistics.median(v) for k, v in times.items()},
                  update_ms={k: 1e3 * statistics.median(v) for k, v in warm.items()},
                  overhead_pct=100 * (harness.paired(times["release"], times["step"]) - 1),
                  update_overhead_pct=100 * (harness.paired(warm["release"], warm["step"]) - 1))
    ms, up = result["ms"], result["update_ms"]
    print(f"gradient release, {name} ({len(shapes)} float32 tensors, {n / 1e6:.1f}M): "
          f"backward with the updates inside {ms['release']:.1f} ms against backward + step() "
          f"{ms['step']:.1f} ms: {result['overhead_pct']:+.1f} %; the updates alone: "
          f"{up['release']:.1f} ms in buckets against {up['step']:.1f} ms in step(): "
          f"{result['update_overhead_pct']:+.1f} %")
    return result


def main(argv=None):
    args = parse_args(argv)
    devices = [args.device] if args.device else ["cpu"] + [
        f"cuda:{i}" for i in range(torch.cuda.device_count())]
    machine = dict(platform=platform.platform(), processor=report.cpu_name(),
                   threads=torch.get_num_threads(), torch=torch.__version__,
                   python=platform.python_version(), cuda=torch.version.cuda,
                   gpus=[torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])
    print(f"fused_rmsprop benchmark on {machine['processor']}, {machine['threads']} threads, "
          f"torch {machine['torch']}", flush=True)
    os.makedirs(args.out, exist_ok=True)
    results = dict(machine=machine, devices={})
    for device in devices:
        probe, rows = run_device(device, args)
        clipping = run_clipping(device, args)
        rounding = run_rounding(device, args)
        state_bits = run_state_bits(device, args)
        release = run_release(device, args)
        results["devices"][device] = dict(roofline_gbps=probe, rows=rows, clipping=clipping,
                                          rounding=rounding, state_bits=state_bits,
                                          release=release)
        print()
        report.print_table(rows, probe, harness.probe_for(device)[0])
        tag = device.replace(":", "")
        png = report.plot(rows, probe, os.path.join(args.out, f"throughput_{tag}.png"), device)
        if png:
            print(f"plot written to {png}")
    path = os.path.join(args.out, "results.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    print(f"results written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
