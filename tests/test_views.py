"""Parameters that are strided views, which torch.optim.RMSprop updates too.

The fused kernel needs dense tensors, so such a parameter is updated through a
dense stand-in copied back after the step (NOTE: [grouping] in _calls.py);
dense parameters of every layout are still updated in place.
"""

import copy

import pytest
import torch

from fused_rmsprop import FusedRMSprop
from fused_rmsprop.testing import assert_no_less_accurate

KW = [dict(), dict(momentum=0.9, centered=True, weight_decay=0.1, maximize=True)]

# Every kind of view: a last-dim slice (the example), a step slice in
# two dims, a slice of a transpose, a column of a complex matrix, a slice of
# a permuted 3-D tensor, a diagonal, an unfold (strides in elements, not rows).
VIEWS = {
    "last_dim_index": lambda: torch.randn(10, 5, 2, dtype=torch.float64)[..., 0],
    "step_slices": lambda: torch.randn(6, 8, dtype=torch.float64)[::2, 1::3],
    "transposed_slice": lambda: torch.randn(4, 4, dtype=torch.float64).t()[1:3],
    "complex_column": lambda: torch.randn(5, 3, dtype=torch.complex128)[:, 1],
    "permuted_slice": lambda: torch.randn(3, 4, 5, dtype=torch.float64).permute(2, 0, 1)[::2],
    "diagonal": lambda: torch.randn(7, 7, dtype=torch.float64).diagonal(),
    "unfold": lambda: torch.randn(40, dtype=torch.float64)[::2].unfold(0, 2, 3),
}


def _train(views, opt_class, kw, steps=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    opt = opt_class(views, **kw)
    for _ in range(steps):
        for p in views:  # float64 draws (complex: complex128), cast: the same at every dtype
            wide = torch.complex128 if p.is_complex() else torch.float64
            p.grad = torch.randn(p.shape, dtype=wide, generator=gen).to(p.dtype)
        opt.step()
    return opt


@pytest.mark.parametrize("kw", KW, ids=["plain", "momentum_centered_wd_maximize"])
@pytest.mark.parametrize("name", list(VIEWS))
def test_strided_view_params_match_torch(name, kw):
    torch.manual_seed(0)
    ours, theirs = torch.nn.Parameter(VIEWS[name]()), torch.nn.Parameter(VIEWS[name]())
    with torch.no_grad():
        theirs.copy_(ours)
    assert not ours.is_contiguous()
    where, strides = ours.data_ptr(), ours.stride()
    o1 = _train([ours], FusedRMSprop, kw)
    o2 = _train([theirs], torch.optim.RMSprop, kw)
    # float64: two correct implementations agree to 1e-10
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)
    assert set(o1.state[ours]) == set(o2.state[theirs])
    for key, value in o2.state[theirs].items():
        torch.testing.assert_close(o1.state[ours][key], value, rtol=1e-10, atol=1e-12)
    # still the same view of the same memory, updated in place
    assert (ours.data_ptr(), ours.stride()) == (where, strides)


def test_views_and_dense_params_in_one_group_and_mixed_dtypes():
    torch.manual_seed(0)
    make = [lambda: torch.randn(10, 5, 2)[..., 0], lambda: torch.randn(7, 3),
            lambda: torch.randn(6, 8, dtype=torch.float64)[::2], lambda: torch.randn(4, 6).t()]
    ours = [torch.nn.Parameter(m()) for m in make]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    exact = [torch.nn.Parameter(p.detach().to(torch.float64, copy=True)) for p in ours]
    o1 = _train(ours, FusedRMSprop, KW[1], steps=5)
    _train(theirs, torch.optim.RMSprop, KW[1], steps=5)
    _train(exact, torch.optim.RMSprop, KW[1], steps=5)  # the same gradients, in float64
    for i, (a, b, e) in enumerate(zip(ours, theirs, exact)):
        if a.dtype == torch.float64:
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
        else:  # float32: as close to the float64 run as torch's float32 run is
            assert_no_less_accurate(a, b, e, f"param {i}")
    assert o1._special_groups == {0}


def test_a_step_that_raises_leaves_a_view_param_untouched():
    view = torch.nn.Parameter(torch.randn(10, 5, 2)[..., 0])
    other = torch.nn.Parameter(torch.randn(3))
    opt = FusedRMSprop([view, other], momentum=0.9)
    view.grad, other.grad = torch.randn(10, 5), torch.randn(3)
    opt.step()
    before = view.detach().clone(), {k: v.clone() for k, v in opt.state[view].items()}
    view.grad, other.grad = torch.randn(10, 5), torch.randn(3)
    opt.state[other]["square_avg"] = torch.zeros(4)  # as if from another model's checkpoint
    with pytest.raises(RuntimeError, match="state 'square_avg' of parameter 1"):
        opt.step()
    assert torch.equal(view.detach(), before[0])
    for key, value in before[1].items():
        assert torch.equal(opt.state[view][key], value)


def test_a_view_param_state_dict_round_trips_and_loads_into_torch():
    view = torch.nn.Parameter(torch.randn(10, 5, 2, dtype=torch.float64)[..., 0])
    opt = _train([view], FusedRMSprop, KW[1])
    twin = torch.nn.Parameter(view.detach().clone())
    theirs = torch.optim.RMSprop([twin], **KW[1])
    theirs.load_state_dict(copy.deepcopy(opt.state_dict()))
    again = FusedRMSprop([view], **KW[1])
    again.load_state_dict(copy.deepcopy(opt.state_dict()))
    gen = torch.Generator().manual_seed(5)
    for _ in range(2):  # both continue from the same state
        g = torch.randn(view.shape, dtype=view.dtype, generator=gen)
        view.grad, twin.grad = g.clone(), g.clone()
        again.step()
        theirs.step()
    torch.testing.assert_close(view, twin, rtol=1e-10, atol=1e-12)


def test_overlapping_params_are_refused_before_any_write():
    # torch.optim.RMSprop cannot update these either (in-place ops refuse
    # tensors whose elements share memory); we say so before writing.
    expanded = torch.nn.Parameter(torch.randn(3, 1).expand(3, 4))
    dense = torch.nn.Parameter(torch.randn(5))
    opt = FusedRMSprop([dense, expanded])
    dense.grad, expanded.grad = torch.randn(5), torch.randn(3, 4)
    before = dense.detach().clone()
    with pytest.raises(RuntimeError, match="parameter 1 .* overlap"):
        opt.step()
    assert torch.equal(dense.detach(), before) and not opt.state.get(dense)
