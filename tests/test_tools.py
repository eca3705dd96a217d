"""tools/sanitizer_step.py, the workload `make sanitize` runs under
compute-sanitizer on a GPU: it must run (here on the CPU kernel) and its
guard check must be able to fail."""

import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import sanitizer_step  # noqa: E402


def test_the_sanitizer_workload_runs_and_leaves_every_guard(capsys):
    assert sanitizer_step.main(["--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "36 op calls, 4 optimizer steps" in out and "0 guards overwritten" in out


def test_a_write_past_a_tensor_is_seen_by_the_guards():
    sanitizer_step.DEVICE = "cpu"
    guarded = sanitizer_step.Guarded()
    view = guarded(5, torch.float32, 1)
    assert guarded.touched() == 0
    guarded.buffers[0][1 + 5] = 0.0  # one element past the view
    assert guarded.touched() == 1


def test_make_sanitize_runs_three_tools_on_our_kernels():
    text = open(os.path.join(ROOT, "Makefile")).read()
    recipe = text[text.index("\nsanitize:"):]
    for tool in ("memcheck", "initcheck", "racecheck"):
        assert f"--tool {tool} --error-exitcode 9" in recipe
    assert recipe.count("tools/sanitizer_step.py") == 3
    assert "PYTORCH_NO_CUDA_MEMORY_CACHING=1" in recipe
