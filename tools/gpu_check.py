"""`make gpu-check`: verify fused_rmsprop on a machine with a GPU in one command.

Offline, against the python3 and torch already installed (no pip, no venv):

    make gpu-check                                # every stage, 360 s budget
    make gpu-check GPU_CHECK_ARGS="--only build,check,cudatests"
    python tools/gpu_check.py --dry-run           # the plan only (any machine)

Stages, in order, with the seconds each took on a 16-core machine with one
H200 (torch 2.11.0+cu130, nvcc 13.0, 2026-11-30); STAGES holds the estimates:

    env         0  versions of torch, CUDA, nvcc and compute-sanitizer; the GPU
    build      69  setup.py build_ext --inplace for this GPU's arch only
    check      29  python -m fused_rmsprop.check (the reference checks, every device)
    cudatests  61  pytest tests/test_cuda_device.py
    bench      96  bench/run.py on the GPU: 1e8 elements and the GPT-2-small list,
                   float32 and bfloat16, plain and momentum+centered+wd, against
                   torch's foreach and a torch.compile'd step; clipping, stochastic
                   rounding and 8-bit state at 1e8 (timed with 1e6 and 200x16
                   cases more than this stage runs)
    sanitizer  17  compute-sanitizer memcheck over tools/sanitizer_step.py

A stage starts only if the budget left covers its estimate (else SKIPPED,
so the summary always comes back) and is killed when the budget runs out.
The stages after `build` need the CUDA kernel: if the build failed (an older
binary must not be what is tested) or the kernel is not there, they are
SKIPPED. Everything goes to one folder (--out): a log per stage,
summary.txt (status and seconds per stage, then the benchmark table),
summary.json and bench.json; what an earlier run left there is removed
first. Exit status 0 when no stage failed.

On a machine with no visible CUDA GPU it prints the plan, says so and exits
with status 2 (the test suite checks this on its CPU machines).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> (estimate in seconds, what it does). The estimates are what each
# stage took on the H200 machine above, rounded up.
STAGES = {
    "env": (5, "versions and the GPU"),
    "build": (75, "build the extension for this GPU's arch only"),
    "check": (35, "python -m fused_rmsprop.check"),
    "cudatests": (70, "pytest tests/test_cuda_device.py"),
    "bench": (110, "GPU benchmark: 1e8 and gpt2-small, clipping, rounding, 8-bit"),
    "sanitizer": (25, "compute-sanitizer memcheck over tools/sanitizer_step.py"),
}
NEEDS_KERNEL = {"check", "cudatests", "bench", "sanitizer"}
GLOG_LINE = re.compile(r"^[IWEF]\d{4} ")  # torch's C++ log lines: W1130 22:05:10 ...
BENCH_ARGS = ["--device", "cuda", "--sizes", "1e8", "--models", "gpt2-small",
              "--dtypes", "float32", "bfloat16", "--configs", "plain", "mom+ctr+wd",
              "--compile", "headline", "--clipping-size", "1e8", "--rounding-size", "1e8",
              "--state-bits-size", "1e8"]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.path.join(ROOT, "gpu_check_out"),
                   help="folder for the logs, summary.txt, summary.json and bench.json")
    p.add_argument("--budget", type=float, default=360.0,
                   help="seconds for every stage together (default 360)")
    p.add_argument("--only", default="", help="comma-separated stages to run")
    p.add_argument("--skip", default="", help="comma-separated stages to leave out")
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    args = p.parse_args(argv)
    for option in ("only", "skip"):
        names = [s for s in getattr(args, option).split(",") if s]
        unknown = [s for s in names if s not in STAGES]
        if unknown:
            p.error(f"--{option}: unknown stage(s) {', '.join(unknown)}; "
                    f"the stages are {', '.join(STAGES)}")
        setattr(args, option, names)
    if args.budget <= 0:
        p.error(f"--budget must be positive, got {args.budget}")
    return args


def selected(args):
    return [s for s in STAGES if (not args.only or s in args.only) and s not in args.skip]


def gpu_arch():
    """('9.0', None) for the first visible GPU, else (None, why not)."""
    try:
        import torch
    except ImportError as error:
        return None, f"{sys.executable} cannot import torch ({error}); run with PYTHON=... " \
                     "naming the python that has torch"
    if not torch.cuda.is_available():
        return None, "no CUDA GPU is visible to torch on this machine"
    major, minor = torch.cuda.get_device_capability(0)
    return f"{major}.{minor}", None


def sanitizer_path():
    found = shutil.which("compute-sanitizer")
    if found:
        return found
    home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    candidate = os.path.join(home, "bin", "compute-sanitizer")
    return candidate if os.path.exists(candidate) else None


def commands(arch, out):
    """name -> (argv, extra environment) for every stage but env."""
    py = sys.executable
    build_env = {"TORCH_CUDA_ARCH_LIST": arch or "<this GPU's compute capability>",
                 "FUSED_RMSPROP_CUDA": "1", "MAX_JOBS": str(os.cpu_count() or 4)}
    return {
        "build": ([py, "setup.py", "build_ext", "--inplace"], build_env),
        "check": ([py, "-m", "fused_rmsprop.check"], {}),
        "cudatests": ([py, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider",
                       "tests/test_cuda_device.py"], {}),
        "bench": ([py, "bench/run.py", *BENCH_ARGS, "--out", os.path.join(out, "bench")], {}),
        "sanitizer": ([sanitizer_path() or "compute-sanitizer", "--tool", "memcheck",
                       "--error-exitcode", "9", py, "tools/sanitizer_step.py"],
                      {"PYTORCH_NO_CUDA_MEMORY_CACHING": "1"}),
    }


def describe_plan(stages, arch, out, budget):
    lines = [f"gpu-check plan (budget {budget:.0f} s, results in {out}):"]
    cmds = commands(arch, out)
    for name in stages:
        estimate, what = STAGES[name]
        lines.append(f"  {name:<10} ~{estimate:>3} s  {what}")
        if name in cmds:
            argv, env = cmds[name]
            prefix = " ".join(f"{k}={v}" for k, v in env.items())
            lines.append(f"               {prefix + ' ' if prefix else ''}{' '.join(argv)}")
    total = sum(STAGES[s][0] for s in stages)
    lines.append(f"  estimated {total} s in all; a stage that does not fit in what is left is skipped")
    return "\n".join(lines)


def kernel_registered():
    """Whether the built extension imports (in a fresh process) with its CUDA kernel."""
    probe = ("import torch, fused_rmsprop; import sys; sys.exit(0 if torch._C."
             "_dispatch_has_kernel_for_dispatch_key('fused_rmsprop::rmsprop_', 'CUDA') else 1)")
    return subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True).returncode == 0


def run_logged(argv, env, log_path, timeout):
    """Runs argv in the checkout, its output to the console and log_path.
    Returns the exit status, or None when it ran past timeout (then killed)."""
    full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1",
                # the test-only emulation build is not part of this check
                "FUSED_RMSPROP_EMULATION": "0"}
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(argv) + "\n")
        proc = subprocess.Popen(argv, cwd=ROOT, env=full_env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        timed_out = threading.Event()

        def kill():
            timed_out.set()
            os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            for line in proc.stdout:
                sys.stdout.write(line)
                log.write(line)
            proc.wait()
        finally:
            timer.cancel()
    return None if timed_out.is_set() else proc.returncode


def env_report():
    import torch
    lines = [f"python {sys.version.split()[0]}, torch {torch.__version__}, "
             f"CUDA {torch.version.cuda}, {os.cpu_count()} CPUs"]
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        lines.append(f"cuda:{i} {props.name}, sm_{props.major}{props.minor}, "
                     f"{props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs")
    nvcc = shutil.which("nvcc") or os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"),
                                                "bin", "nvcc")
    for tool, argv in (("nvcc", [nvcc, "--version"]),
                       ("compute-sanitizer", [sanitizer_path() or "compute-sanitizer", "--version"])):
        try:
            text = subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout
            lines.append(f"{tool}: {text.strip().splitlines()[-1]}")
        except (OSError, IndexError, subprocess.TimeoutExpired):
            lines.append(f"{tool}: not found")
    return "\n".join(lines)


def bench_lines(log_path):
    """The benchmark's results from its log: the table and the one-line cases."""
    keep = []
    with open(log_path) as log:
        for line in log:
            if line.startswith(("$ ", "  [")) or GLOG_LINE.match(line) or "Warning" in line:
                continue  # the command, progress, torch's log lines and warnings
            keep.append(line.rstrip("\n"))
    return keep


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    out = os.path.abspath(args.out)
    stages = selected(args)
    arch, why_not = gpu_arch()
    print(describe_plan(stages, arch, out, args.budget), flush=True)
    if args.dry_run:
        return 0
    if arch is None:
        print(f"gpu-check: {why_not}: nothing was run (the CPU kernel is checked by "
              "`make test` and `python -m fused_rmsprop.check`)")
        return 2
    os.makedirs(out, exist_ok=True)
    for old in [f"{s}.log" for s in STAGES] + ["summary.txt", "summary.json", "bench.json"]:
        if os.path.exists(os.path.join(out, old)):  # an earlier run's, not to be mistaken
            os.remove(os.path.join(out, old))
    cmds = commands(arch, out)
    results, start = [], time.monotonic()
    kernel = None  # whether the CUDA kernel is there: asked once, again after build
    build_failed = False  # then the stages after it would test an older binary
    for name in stages:
        estimate = STAGES[name][0]
        left = args.budget - (time.monotonic() - start)
        log_path = os.path.join(out, f"{name}.log")
        t0 = time.monotonic()
        if left < estimate:
            status = f"SKIPPED (budget: {left:.0f} s left, needs ~{estimate} s)"
        elif name in NEEDS_KERNEL and build_failed:
            status = "SKIPPED (the build failed: see build.log)"
        elif name in NEEDS_KERNEL and not (kernel if kernel is not None
                                           else (kernel := kernel_registered())):
            status = "SKIPPED (the CUDA kernel is not built: see build)"
        elif name == "sanitizer" and sanitizer_path() is None:
            status = "SKIPPED (compute-sanitizer not found on PATH or in CUDA_HOME)"
        elif name == "env":
            text = env_report()
            print(text, flush=True)
            with open(log_path, "w") as log:
                log.write(text + "\n")
            status = "PASS"
        else:
            print(f"=== {name}", flush=True)
            rc = run_logged(*cmds[name], log_path, timeout=left)
            status = ("PASS" if rc == 0 else f"TIMEOUT (budget ran out after {left:.0f} s)"
                      if rc is None else f"FAIL (exit status {rc})")
        if name == "build":
            kernel, build_failed = None, status != "PASS"
        seconds = time.monotonic() - t0
        results.append({"stage": name, "status": status, "seconds": round(seconds, 1),
                        "estimate": estimate})
        print(f"=== {name}: {status} in {seconds:.0f} s", flush=True)
    write_summary(out, arch, results)
    return 1 if any(r["status"].startswith(("FAIL", "TIMEOUT")) for r in results) else 0


def write_summary(out, arch, results):
    lines = [f"fused_rmsprop gpu-check, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
             f"sm_{arch.replace('.', '')}"]
    env_log = os.path.join(out, "env.log")
    if os.path.exists(env_log):
        lines += open(env_log).read().splitlines()
    lines.append(f"{'stage':<10} {'seconds':>7}  status")
    lines += [f"{r['stage']:<10} {r['seconds']:>7.0f}  {r['status']}" for r in results]
    bench = {r["stage"]: r for r in results}.get("bench")
    if bench and bench["status"] == "PASS":
        lines += ["", "benchmark:"] + bench_lines(os.path.join(out, "bench.log"))
        produced = os.path.join(out, "bench", "results.json")
        if os.path.exists(produced):
            shutil.copy(produced, os.path.join(out, "bench.json"))
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, "summary.txt"), "w") as f:
        f.write(text)
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump({"arch": arch, "stages": results}, f, indent=1)
    print("\n" + text + f"(written to {out})")


if __name__ == "__main__":
    sys.exit(main())
