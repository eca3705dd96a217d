"""What a user sees when the install does not fit the machine: a torch older
than the floor, and CUDA tensors with a build that has no CUDA kernel."""

import os
import re
import subprocess
import sys
import textwrap

import pytest

from fused_rmsprop import _ops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(code):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=300)


@pytest.mark.parametrize("version", ["2.10.1+cu128", "2.9.0", "1.13.1"])
def test_an_older_torch_is_refused_naming_both_versions(version):
    with pytest.raises(ImportError, match=rf"needs torch >= 2\.11, found torch {re.escape(version)}"):
        _ops.check_torch_version(version)


@pytest.mark.parametrize("version", ["2.11.0", "2.11.0+cu130", "2.14.1", "2.20.0a0+git1234", "3.0.0"])
def test_the_floor_and_newer_torches_are_accepted(version):
    _ops.check_torch_version(version)


def test_import_under_an_older_torch_raises_import_error():
    out = _run("""
        import torch
        torch.__version__ = "2.10.0"
        try:
            import fused_rmsprop
        except ImportError as error:
            print("ImportError:", error)
        """)
    assert out.returncode == 0, out.stderr
    assert "ImportError: fused_rmsprop" in out.stdout
    assert "needs torch >= 2.11, found torch 2.10.0" in out.stdout


def test_cuda_tensors_without_a_cuda_kernel_name_the_build_switch():
    # The import sees a build without a CUDA kernel (as after FUSED_RMSPROP_CUDA=0);
    # the call is sent to the CUDA kernel by its dispatch key, with CPU tensors
    # (no GPU needed), and must refuse before writing anything.
    out = _run("""
        import torch
        real = torch._C._dispatch_has_kernel_for_dispatch_key
        torch._C._dispatch_has_kernel_for_dispatch_key = (
            lambda op, key: False if key == "CUDA" else real(op, key))
        import fused_rmsprop
        torch._C._dispatch_has_kernel_for_dispatch_key = real
        cuda = torch._C.DispatchKeySet(torch._C.DispatchKey.CUDA)
        p, g, v = torch.zeros(3), torch.ones(3), torch.zeros(3)
        for call in (
            lambda: torch.ops.fused_rmsprop.rmsprop_.default.redispatch(
                cuda, [p], [g], [v], [], [], [], lr=0.1, alpha=0.9, eps=1e-8,
                weight_decay=0.0, momentum=0.0, maximize=False),
            lambda: torch.ops.fused_rmsprop.grad_norm.default.redispatch(cuda, [g], 2.0),
        ):
            try:
                call()
            except RuntimeError as error:
                print("RuntimeError:", error)
        print("unchanged:", bool((p == 0).all() and (v == 0).all()))
        """)
    assert out.returncode == 0, out.stderr
    errors = [line for line in out.stdout.splitlines() if line.startswith("RuntimeError:")]
    assert len(errors) == 2, out.stdout
    for error in errors:
        assert "this build has no CUDA kernel" in error
        assert "FUSED_RMSPROP_CUDA=1 pip install ." in error
    assert "unchanged: True" in out.stdout
