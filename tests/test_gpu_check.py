"""`make gpu-check` (tools/gpu_check.py) on a machine without a GPU: its plan,
its refusal, and its stage runner (budget, failures, timeouts, summary) with
the GPU commands replaced by small Python ones."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import gpu_check  # noqa: E402
import run as bench_run  # noqa: E402


def run_script(*args, env=None):
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", "gpu_check.py"), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_the_dry_run_prints_every_stage_in_order_with_its_command(tmp_path):
    result = run_script("--dry-run", "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    stage_lines = [line.split()[0] for line in lines if line.startswith("  ") and "~" in line]
    assert stage_lines == ["env", "build", "check", "cudatests", "bench", "sanitizer"]
    for needed in ("setup.py build_ext --inplace", "-m fused_rmsprop.check",
                   "tests/test_cuda_device.py", "bench/run.py --device cuda",
                   "--tool memcheck --error-exitcode 9", "tools/sanitizer_step.py",
                   "PYTORCH_NO_CUDA_MEMORY_CACHING=1", "FUSED_RMSPROP_CUDA=1"):
        assert needed in result.stdout
    assert not (tmp_path / "out").exists()  # a plan writes nothing


def test_every_file_the_plan_runs_exists():
    for name, (argv, _) in gpu_check.commands("9.0", "/tmp/x").items():
        for arg in argv:
            if arg.endswith(".py") and not os.path.isabs(arg):
                assert os.path.exists(os.path.join(ROOT, arg)), (name, arg)


def test_the_benchmark_stage_runs_what_the_check_promises():
    args = bench_run.parse_args(gpu_check.BENCH_ARGS)
    assert args.device == "cuda" and args.sizes == [1e8] and args.models == ["gpt2-small"]
    assert args.dtypes == ["float32", "bfloat16"] and args.configs == ["plain", "mom+ctr+wd"]
    assert args.clipping_size == args.rounding_size == args.state_bits_size == 1e8
    names = [case[0] for case in bench_run.case_list(args, "cuda")]
    assert sorted(set(names)) == ["1e+08", "gpt2-small"]
    # against foreach and a compiled torch step on both float32 headline cases
    for name in ("1e+08", "gpt2-small"):
        assert bench_run.kinds_for(args, name, "float32", "cuda") == ["fused", "foreach", "compile"]


def test_the_stages_fit_the_default_budget_of_six_minutes():
    total = sum(estimate for estimate, _ in gpu_check.STAGES.values())
    assert total <= gpu_check.parse_args([]).budget <= 360


def test_without_a_gpu_it_prints_the_plan_says_so_and_fails(tmp_path):
    result = run_script("--out", str(tmp_path / "out"), env={"CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 2
    assert "gpu-check plan" in result.stdout
    assert "no CUDA GPU is visible to torch" in result.stdout
    assert not (tmp_path / "out").exists()


def test_make_gpu_check_uses_the_installed_python_and_no_venv():
    text = open(os.path.join(ROOT, "Makefile")).read()
    recipe = text[text.index("\ngpu-check:") + 1:].split("\n\n")[0]
    assert recipe.splitlines()[0] == "gpu-check:"  # no prerequisite: no venv, no pip
    assert "$(PYTHON) tools/gpu_check.py $(GPU_CHECK_ARGS)" in recipe


def test_an_unknown_stage_is_refused_by_name():
    result = run_script("--only", "build,bnech")
    assert result.returncode != 0 and "unknown stage(s) bnech" in result.stderr


@pytest.fixture
def fake_gpu(monkeypatch):
    """A GPU machine as far as the runner can tell, with each stage's command
    a small Python program (set per test in the returned dict)."""
    scripts = {name: "print('ok')" for name in gpu_check.STAGES if name != "env"}
    monkeypatch.setattr(gpu_check, "gpu_arch", lambda: ("9.0", None))
    monkeypatch.setattr(gpu_check, "kernel_registered", lambda: True)
    monkeypatch.setattr(gpu_check, "sanitizer_path", lambda: "/bin/true")
    monkeypatch.setattr(gpu_check, "env_report", lambda: "fake machine")
    monkeypatch.setattr(gpu_check, "commands", lambda arch, out: {
        name: ([sys.executable, "-c", code], {}) for name, code in scripts.items()})
    return scripts


def summary(out):
    with open(out / "summary.json") as f:
        return {row["stage"]: row["status"] for row in json.load(f)["stages"]}


def test_a_passing_run_writes_the_summary_with_the_bench_table(fake_gpu, tmp_path):
    fake_gpu["bench"] = ("print('  [1/2] 1e+08 float32 plain ... 1.0s');"
                         "print('W1130 22:05:10.883000 1497 torch/_logging/_internal.py:1279] x');"
                         "print('      case tensors     numel');"
                         "print('     1e+08       1  1.00e+08')")
    assert gpu_check.main(["--out", str(tmp_path)]) == 0
    assert set(summary(tmp_path).values()) == {"PASS"}
    text = (tmp_path / "summary.txt").read_text()
    assert "fake machine" in text and "case tensors" in text and "1.00e+08" in text
    assert "[1/2]" not in text and "W1130" not in text  # progress and log lines stay in the log
    assert (tmp_path / "bench.log").exists() and (tmp_path / "cudatests.log").exists()


def test_an_earlier_runs_results_are_not_left_to_be_mistaken_for_this_ones(fake_gpu, tmp_path):
    (tmp_path / "env.log").write_text("an older machine\n")
    (tmp_path / "bench.json").write_text("{}")
    assert gpu_check.main(["--out", str(tmp_path), "--only", "check", "--skip", "bench"]) == 0
    assert not (tmp_path / "env.log").exists() and not (tmp_path / "bench.json").exists()
    assert "an older machine" not in (tmp_path / "summary.txt").read_text()


def test_a_failing_stage_fails_the_run_and_the_others_still_run(fake_gpu, tmp_path):
    fake_gpu["check"] = "import sys; print('mismatch'); sys.exit(3)"
    assert gpu_check.main(["--out", str(tmp_path)]) == 1
    statuses = summary(tmp_path)
    assert statuses["check"] == "FAIL (exit status 3)"
    assert statuses["cudatests"] == statuses["sanitizer"] == "PASS"
    assert "mismatch" in (tmp_path / "check.log").read_text()


def test_a_stage_that_would_not_fit_is_skipped_and_one_past_the_budget_is_killed(
        fake_gpu, tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "STAGES", {
        "env": (0, ""), "build": (0, ""), "check": (0, ""), "cudatests": (1000, "")})
    fake_gpu["check"] = "import time; time.sleep(60)"
    assert gpu_check.main(["--out", str(tmp_path), "--budget", "3"]) == 1
    statuses = summary(tmp_path)
    assert statuses["build"] == "PASS"
    assert statuses["check"].startswith("TIMEOUT")
    assert statuses["cudatests"].startswith("SKIPPED (budget")


def test_after_a_failed_build_the_gpu_stages_are_skipped(fake_gpu, tmp_path):
    # (an older binary may still hold a CUDA kernel: it must not be what is tested)
    fake_gpu["build"] = "import sys; sys.exit(1)"
    assert gpu_check.main(["--out", str(tmp_path)]) == 1
    statuses = summary(tmp_path)
    assert statuses["build"] == "FAIL (exit status 1)"
    for name in ("check", "cudatests", "bench", "sanitizer"):
        assert statuses[name] == "SKIPPED (the build failed: see build.log)"


def test_without_the_cuda_kernel_the_gpu_stages_are_skipped(fake_gpu, tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "kernel_registered", lambda: False)
    assert gpu_check.main(["--out", str(tmp_path), "--skip", "build"]) == 0
    statuses = summary(tmp_path)
    assert "build" not in statuses
    for name in ("check", "cudatests", "bench", "sanitizer"):
        assert statuses[name] == "SKIPPED (the CUDA kernel is not built: see build)"
