"""Loads the native ops and makes them traceable by torch.compile."""

import torch

try:
    from . import _C  # noqa: F401  (loading it registers torch.ops.fused_rmsprop)
except ImportError as error:  # pragma: no cover - exercised by hand
    raise ImportError(
        "fused_rmsprop: the native extension fused_rmsprop._C is missing or failed "
        f"to load ({error}). It must be compiled: run `make build` in the "
        "checkout, or `pip install --no-build-isolation -e .` in an environment "
        "that already has torch (set FUSED_RMSPROP_CUDA=0 to build without CUDA). "
        "There is no pure-Python fallback."
    ) from error


@torch.library.register_fake("fused_rmsprop::rmsprop_")
def _rmsprop_fake(
    params,
    grads,
    square_avgs,
    momentum_buffers,
    grad_avgs,
    *,
    lr,
    alpha,
    eps,
    weight_decay,
    momentum,
    maximize,
    eps_in_sqrt=False,
    lr_in_momentum=False,
    decoupled_weight_decay=False,
):
    # The op only mutates its inputs in place: nothing to allocate or return.
    return None


rmsprop_ = torch.ops.fused_rmsprop.rmsprop_
