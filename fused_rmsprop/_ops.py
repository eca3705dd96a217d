"""Loads the native ops and makes them traceable by torch.compile."""

import re

import torch

from ._version import MIN_TORCH, __version__


def check_torch_version(version):
    """Raises ImportError for a torch older than the one the native library's
    stable ABI targets (MIN_TORCH); `version` is a torch.__version__."""
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None or tuple(map(int, match.groups())) < MIN_TORCH:
        floor = ".".join(map(str, MIN_TORCH))
        raise ImportError(
            f"fused_rmsprop {__version__} needs torch >= {floor}, found torch {version}: its "
            f"native library is built for the stable ABI of torch {floor}, which older "
            f"torch versions do not have. Upgrade torch (pip install 'torch>={floor}').")


check_torch_version(torch.__version__)

try:
    from . import _C  # noqa: F401  (loading it registers torch.ops.fused_rmsprop)
except ImportError as error:  # pragma: no cover - exercised by hand
    raise ImportError(
        "fused_rmsprop: the native extension fused_rmsprop._C is missing or failed "
        f"to load ({error}). It must be compiled: `pip install .` (or `make build` in "
        "the checkout; FUSED_RMSPROP_CUDA=0 builds without CUDA). "
        "There is no pure-Python fallback."
    ) from error

HAS_CUDA_KERNEL = torch._C._dispatch_has_kernel_for_dispatch_key(
    "fused_rmsprop::rmsprop_", "CUDA")

if not HAS_CUDA_KERNEL:
    # A build without nvcc (or with FUSED_RMSPROP_CUDA=0) has no CUDA kernel:
    # say so, instead of the dispatcher's "could not run ... with arguments
    # from the 'CUDA' backend". Registered for CUDA only; no write happens.
    def _no_cuda_kernel(*args, **kwargs):
        raise RuntimeError(
            "fused_rmsprop: this build has no CUDA kernel (it was built without nvcc, or "
            "with FUSED_RMSPROP_CUDA=0), so it cannot update CUDA tensors. Rebuild with "
            "the CUDA toolkit on PATH (or CUDA_HOME set) and FUSED_RMSPROP_CUDA=1, which "
            "fails loudly if nvcc or a CUDA build of torch is missing: "
            "FUSED_RMSPROP_CUDA=1 pip install . (from the source), or "
            "FUSED_RMSPROP_CUDA=1 make build (in the checkout).")

    for _op in ("rmsprop_", "grad_norm"):
        torch.library.impl(f"fused_rmsprop::{_op}", "cuda", _no_cuda_kernel)


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


def _grad_norm_dtype(grads):
    # As grad_norm_dtype in csrc/grad_norm.h: float64 for float64 grads, else float32.
    return torch.float64 if grads[0].dtype == torch.float64 else torch.float32


@torch.library.register_fake("fused_rmsprop::grad_norm")
def _grad_norm_fake(grads, norm_type):
    torch._check(len(grads) > 0, lambda: "fused_rmsprop.grad_norm: grads is empty")
    return grads[0].new_empty((), dtype=_grad_norm_dtype(grads))


@torch.library.impl("fused_rmsprop::_foreach_grad_norm", "cuda")
def _foreach_grad_norm(grads, norm_type):
    # grad_norm on a GPU, called by its C++ kernel after the argument checks:
    # torch's multi-tensor norms, then their norm (these ATen ops take a
    # Scalar, which the stable ABI cannot pass from C++; csrc/torch_api.h).
    norms = torch._foreach_norm(grads, norm_type, dtype=_grad_norm_dtype(grads))
    return torch.linalg.vector_norm(torch.stack(norms), norm_type)


rmsprop_ = torch.ops.fused_rmsprop.rmsprop_
grad_norm = torch.ops.fused_rmsprop.grad_norm
rmsprop_check = torch.ops.fused_rmsprop.rmsprop_check
