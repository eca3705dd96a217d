"""Bit-identical results: across thread counts, across runs, across a checkpoint."""

import copy
import io

import pytest
import torch

from fused_rmsprop import FusedRMSprop

KW = dict(lr=0.01, momentum=0.9, centered=True, weight_decay=0.01)


def _run(dtype, threads, steps=4, shapes=((300_001,), (513, 17), (3,), (0,))):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(0)
        params = [torch.randn(s, generator=gen).to(dtype).requires_grad_() for s in shapes]
        opt = FusedRMSprop(params, **KW)
        for _ in range(steps):
            for p in params:
                p.grad = torch.randn(p.shape, generator=gen).to(dtype)
            opt.step()
        return [p.detach() for p in params], opt
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_one_and_two_threads_and_two_runs_are_bit_identical(dtype):
    one, opt1 = _run(dtype, 1)
    two, opt2 = _run(dtype, 2)
    again, _ = _run(dtype, 2)
    for a, b, c in zip(one, two, again):
        assert torch.equal(a, b) and torch.equal(b, c)
    for s1, s2 in zip(opt1.state.values(), opt2.state.values()):
        for k in s1:
            assert torch.equal(s1[k], s2[k]), k


def _model_and_data():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    data = [(torch.randn(8, 16), torch.randn(8, 4)) for _ in range(8)]
    return model, data


def _train(model, opt, sched, batches):
    for x, y in batches:
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        sched.step()


def test_checkpoint_resume_is_bit_identical_to_an_uninterrupted_run():
    model, data = _model_and_data()
    opt = FusedRMSprop(model.parameters(), **KW)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, 0.9)
    _train(model, opt, sched, data)
    uninterrupted = [p.detach().clone() for p in model.parameters()]

    model, data = _model_and_data()
    opt = FusedRMSprop(model.parameters(), **KW)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, 0.9)
    _train(model, opt, sched, data[:3])
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(),
                "sched": sched.state_dict()}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer)

    resumed_model, _ = _model_and_data()
    resumed_model.load_state_dict(checkpoint["model"])
    resumed = FusedRMSprop(resumed_model.parameters(), **KW)
    resumed.load_state_dict(copy.deepcopy(checkpoint["opt"]))
    resumed_sched = torch.optim.lr_scheduler.ExponentialLR(resumed, 0.9)
    resumed_sched.load_state_dict(checkpoint["sched"])
    _train(resumed_model, resumed, resumed_sched, data[3:])
    for a, b in zip(resumed_model.parameters(), uninterrupted):
        assert torch.equal(a.detach(), b)
