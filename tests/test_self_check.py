"""`python -m fused_rmsprop.check`: it reports every failure in its table and
goes on, whatever a check raises (before, anything but an AssertionError,
e.g. a CUDA fault, stopped it with a traceback)."""

import torch

import fused_rmsprop.check as check


def test_errors_of_any_kind_are_reported_and_the_run_goes_on(monkeypatch, capsys):
    # (test_cuda_device.py runs the real self-check; here the checks are stand-ins)
    calls = []

    def flaky(opt, *, dtype, device, **hyper):
        calls.append(dtype)
        if dtype == torch.float32:
            raise RuntimeError("CUDA error: an illegal memory access was encountered\nmore")
        if dtype == torch.float16 and hyper["momentum"]:
            raise AssertionError("Tensor-likes are not close!\ndetails")

    monkeypatch.setattr(check, "assert_matches_torch", flaky)
    monkeypatch.setattr(check, "assert_matches_reference", lambda *a, **k: None)
    monkeypatch.setattr(check, "assert_steps_match_reference", lambda *a, **k: None)
    monkeypatch.setattr(check, "devices", lambda: iter(["cpu"]))
    assert check.main() == 1
    out = capsys.readouterr().out
    rows = {line.split()[1]: line for line in out.splitlines() if line.startswith("cpu ")}
    n = len(check.OPTIONS)
    assert rows["float32"].endswith(f"FAILED ({n})")  # every torch check of float32
    assert rows["float16"].endswith(f"FAILED ({n // 2})")  # those with momentum
    assert rows["float64"].endswith("ok") and rows["bfloat16"].endswith("ok")
    assert "torch {'momentum': 0.0, 'centered': False, 'weight_decay': 0.0, 'maximize': False}: " \
           "RuntimeError: CUDA error: an illegal memory access was encountered" in out
    assert "Tensor-likes are not close!" in out and "AssertionError" not in out
    assert len(calls) == 4 * n  # every dtype was checked after the first error
    # every failure is listed, not only the first few of a row
    assert out.count("RuntimeError: CUDA error") == n
    assert out.count("Tensor-likes are not close!") == n // 2
