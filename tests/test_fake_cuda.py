"""The optimizer's CUDA path with fake CUDA tensors (no GPU needed).

Under FakeTensorMode a tensor on "cuda" has metadata and no data: the op runs
its registered fake (shape and device checks), and anything that reads a
device value on the host (`.item()`, `float()`, `bool()`: a host sync on a
real GPU) raises. So a step that completes here never syncs in Python; the
native op's counters follow found_inf on the device (tests in
test_cuda_emulation.py, NOTE: [step counters])."""

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from fused_rmsprop import FusedRMSprop


def _params(n=3):
    ps = [torch.randn(5, 4, device="cuda", requires_grad=True) for _ in range(n)]
    for p in ps:
        p.grad = torch.randn_like(p)
    return ps


@pytest.fixture
def fake():
    with FakeTensorMode() as mode:
        yield mode


def test_host_reads_of_fake_cuda_values_raise(fake):
    # What makes the tests below able to fail.
    x = torch.zeros((), device="cuda")
    with pytest.raises(Exception, match="local_scalar_dense"):
        x.item()


@pytest.mark.parametrize("capturable", [False, True])
def test_step_counters_live_on_the_params_device(fake, capturable):
    params = _params()
    opt = FusedRMSprop(params, capturable=capturable, momentum=0.9, centered=True)
    opt.step()
    for p in params:
        assert opt.state[p]["step"].device == p.device
        assert all(opt.state[p][k].device == p.device
                   for k in ("square_avg", "momentum_buffer", "grad_avg"))


@pytest.mark.parametrize("capturable", [False, True])
def test_grad_scaler_step_reads_nothing_on_the_host(fake, capturable):
    # GradScaler sets these two tensors and calls step(); a Tensor lr too.
    params = _params()
    opt = FusedRMSprop(params, capturable=capturable)
    # (set after construction: the constructor checks lr >= 0 on the host, as torch's)
    opt.param_groups[0]["lr"] = torch.tensor(0.01, device="cuda")
    opt.grad_scale = torch.full((), 1024.0, device="cuda")
    opt.found_inf = torch.zeros((), device="cuda")
    for _ in range(3):  # the first step creates state (slow path), the others are steady
        opt.step()


def test_torch_checkpoint_with_cpu_steps_loads_onto_the_device(fake):
    params = _params()
    ref = torch.optim.RMSprop(params, momentum=0.9)
    ref.step()
    saved = ref.state_dict()
    assert all(s["step"].device.type == "cpu" for s in saved["state"].values())
    opt = FusedRMSprop(params, momentum=0.9)
    opt.load_state_dict(saved)
    for p in params:
        assert opt.state[p]["step"].device == p.device
    opt.step()
    # ... and ours loads into torch, whose non-capturable step runs with
    # counters anywhere (as from torch's own fused Adam).
    back = torch.optim.RMSprop(params, momentum=0.9)
    back.load_state_dict(opt.state_dict())
    back.step()


def test_numeric_step_from_an_old_checkpoint_goes_to_the_device(fake):
    params = _params(1)
    opt = FusedRMSprop(params)
    opt.step()
    saved = opt.state_dict()
    saved["state"][0]["step"] = 3
    opt.load_state_dict(saved)
    assert opt.state[params[0]]["step"].device == params[0].device


def test_a_clipped_grad_scaler_step_reads_nothing_on_the_host(fake):
    # NOTE: [fused clipping]: the norm, its unscaling and the coefficient stay
    # on the device; the fake op of grad_norm stands in for the CUDA one.
    params = _params()
    opt = FusedRMSprop(params, max_grad_norm=1.0, momentum=0.9)
    opt.grad_scale = torch.full((), 1024.0, device="cuda")
    opt.found_inf = torch.zeros((), device="cuda")
    for _ in range(3):
        opt.step()
    assert opt.last_grad_norm.device.type == "cuda" and opt.last_grad_norm.dtype == torch.float32
    assert opt.clip_grad_norm_(0.5).device.type == "cuda"
    opt.step()
