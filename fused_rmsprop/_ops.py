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
@torch.library.register_fake("fused_rmsprop::rmsprop_check")
def _rmsprop_fake(params, grads, square_avgs, momentum_buffers, grad_avgs, state_steps,
                  **options):
    # The op only mutates its inputs in place: nothing to allocate or return.
    # Check what metadata can tell, so a traced call fails as an eager one
    # would; the other arguments (csrc/op_args.h) arrive in `options`.
    n = len(params)
    for name, lst in (("grads", grads), ("square_avgs", square_avgs),
                      ("momentum_buffers", momentum_buffers), ("grad_avgs", grad_avgs)):
        optional = name in ("momentum_buffers", "grad_avgs")
        torch._check(len(lst) == n or (optional and not lst),
                     lambda: f"fused_rmsprop: {name} has {len(lst)} tensors but params has {n}")
        for i, (p, t) in enumerate(zip(params, lst)):
            torch._check(t.shape == p.shape and t.device == p.device,
                         lambda: f"fused_rmsprop: {name}[{i}] has shape {tuple(t.shape)} and "
                                 f"device {t.device}, params[{i}] has shape {tuple(p.shape)} "
                                 f"and device {p.device}")
    torch._check(len(state_steps) in (0, n),
                 lambda: f"fused_rmsprop: state_steps has {len(state_steps)} tensors but params has {n}")
    momentum = options["momentum"]
    torch._check(momentum == 0 or len(momentum_buffers) == n,
                 lambda: f"fused_rmsprop: momentum = {momentum} > 0 needs one momentum_buffer "
                         "per parameter")
    quantized = bool(options.get("square_avg_scales"))
    for name, states in (("square_avg", square_avgs), ("momentum_buffer", momentum_buffers),
                         ("grad_avg", grad_avgs)):
        name, scales = name + "_scales", options.get(name + "_scales")
        wanted = len(states) if quantized else 0
        torch._check(len(scales or ()) == wanted,
                     lambda: f"fused_rmsprop: {name} has {len(scales or ())} tensors; expected "
                             f"{wanted}")
    rounding_ids = options.get("rounding_ids", ())
    torch._check(len(rounding_ids) in (0, n),
                 lambda: f"fused_rmsprop: rounding_ids has {len(rounding_ids)} ids but params "
                         f"has {n}")
    return None


@torch.library.register_fake("fused_rmsprop::grad_norm")
def _grad_norm_fake(grads, norm_type):
    torch._check(len(grads) > 0, lambda: "fused_rmsprop.grad_norm: grads is empty")
    dtype = torch.float64 if grads[0].dtype == torch.float64 else torch.float32
    return grads[0].new_empty((), dtype=dtype)


rmsprop_ = torch.ops.fused_rmsprop.rmsprop_
grad_norm = torch.ops.fused_rmsprop.grad_norm
rmsprop_check = torch.ops.fused_rmsprop.rmsprop_check
