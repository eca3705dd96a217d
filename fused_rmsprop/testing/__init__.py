"""Reference RMSprop and side-by-side checks, for this project's tests and yours.

    from fused_rmsprop import FusedRMSprop
    from fused_rmsprop.testing import assert_matches_torch, assert_steps_match_reference

    assert_matches_torch(FusedRMSprop, dtype=torch.float32, momentum=0.9, centered=True)
    assert_steps_match_reference(FusedRMSprop, dtype=torch.bfloat16, eps_in_sqrt=True)
"""

from .compare import (
    DEFAULT_SHAPES,
    assert_close_scaled,
    assert_matches_reference,
    assert_matches_torch,
    assert_no_less_accurate,
    assert_steps_match_reference,
    compare_optimizers,
    make_problem,
    trajectory_tolerance,
)
from .frameworks import FRAMEWORKS
from .reference import ReferenceRMSprop, reference_rmsprop_update

__all__ = [
    "DEFAULT_SHAPES",
    "FRAMEWORKS",
    "ReferenceRMSprop",
    "assert_close_scaled",
    "assert_matches_reference",
    "assert_matches_torch",
    "assert_no_less_accurate",
    "assert_steps_match_reference",
    "compare_optimizers",
    "make_problem",
    "reference_rmsprop_update",
    "trajectory_tolerance",
]
