"""Property-based: random shapes, dtypes and hyperparameters against the reference.

`make test` runs a small sample; `make test-slow` runs 1000 examples.
"""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fused_rmsprop import FusedRMSprop
from fused_rmsprop.testing import assert_steps_match_reference

shapes = st.lists(st.lists(st.integers(0, 40), min_size=0, max_size=3).map(tuple),
                  min_size=1, max_size=4)
dtypes = st.sampled_from([torch.float64, torch.float32, torch.bfloat16, torch.float16])
hyper = st.fixed_dictionaries({
    "lr": st.floats(0.0, 0.1),
    "alpha": st.floats(0.5, 0.999),
    "eps": st.sampled_from([1e-8, 1e-6, 1e-3]),
    "weight_decay": st.sampled_from([0.0, 0.01, 0.1]),
    "momentum": st.sampled_from([0.0, 0.5, 0.9]),
    "centered": st.booleans(),
    "maximize": st.booleans(),
    "eps_in_sqrt": st.booleans(),
    "lr_in_momentum": st.booleans(),
    "decoupled_weight_decay": st.booleans(),
    "initial_square_avg": st.sampled_from([0.0, 1.0]),
})


def _check(shape_list, dtype, kwargs, steps, seed):
    assert_steps_match_reference(FusedRMSprop, shapes=shape_list, dtype=dtype, steps=steps,
                                 seed=seed, **kwargs)


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(shapes, dtypes, hyper, st.integers(1, 4), st.integers(0, 2**16))
def test_random_cases_match_the_reference(shape_list, dtype, kwargs, steps, seed):
    _check(shape_list, dtype, kwargs, steps, seed)


@pytest.mark.slow
@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shapes, dtypes, hyper, st.integers(1, 4), st.integers(0, 2**16))
def test_many_random_cases_match_the_reference(shape_list, dtype, kwargs, steps, seed):
    _check(shape_list, dtype, kwargs, steps, seed)
