"""Gradient clipping by the total norm, applied inside the fused step.

NOTE: [fused clipping] torch's recipe reads every gradient for the norm and
then reads and writes every gradient again to scale it, before the step reads
them a third time. Here the norm is one read pass (fused_rmsprop::grad_norm,
one call per device and dtype), and the coefficient min(1, max_norm / (norm +
1e-6)) is a device scalar the update kernel multiplies every gradient by
(the op's grad_factor), so clipping costs one read and no host sync. Under
GradScaler the norm is taken of the scaled gradients and divided by the
scale (a power of two, so this equals the norm of the unscaled gradients);
p.grad is never written."""

from __future__ import annotations

import math
import sys

import torch
from torch import Tensor

from ._calls import build_calls
from ._ops import grad_norm
from ._state import is_dense

# torch.nn.utils.clip_grad_norm_'s guard against dividing by a zero norm
CLIP_EPS = 1e-6


def check_norm_options(max_norm, norm_type):
    if max_norm is not None and not (isinstance(max_norm, (int, float)) and max_norm > 0
                                     and math.isfinite(max_norm)):
        raise ValueError(f"Invalid max_grad_norm: {max_norm!r}; expected None or a finite "
                         "number > 0")
    if not (isinstance(norm_type, (int, float)) and norm_type > 0):
        raise ValueError(f"Invalid norm_type: {norm_type!r}; expected a number > 0 or inf")


def _inside_zero_redundancy_optimizer(depth=4):
    """True when a ZeroRedundancyOptimizer is constructing this optimizer
    (then each rank holds only its shard of the parameters, and the norm of
    its gradients is not the global one)."""
    try:
        from torch.distributed.optim import ZeroRedundancyOptimizer
    except ImportError:  # torch built without distributed
        return False
    frame = sys._getframe(2)
    for _ in range(depth):
        if frame is None:
            return False
        if isinstance(frame.f_locals.get("self"), ZeroRedundancyOptimizer):
            return True
        frame = frame.f_back
    return False


class GradClipping:
    """Clipping for FusedRMSprop: the `max_grad_norm` option, clip_grad_norm_,
    and last_grad_norm."""

    def _init_clipping(self, max_grad_norm, norm_type):
        check_norm_options(max_grad_norm, norm_type)
        self.max_grad_norm = None if max_grad_norm is None else float(max_grad_norm)
        self.norm_type = float(norm_type)
        # What a step changes lives in a dict, not in attributes: torch 2.11's
        # dynamo cannot trace setattr on the optimizer in a compiled step.
        # "pending": (max_norm, total norm) from clip_grad_norm_; "last": the
        # unscaled norm of the last clipped step.
        self._clipping = {"pending": None, "last": None}
        # Known at construction only (ZeRO builds its local optimizer itself);
        # clip_grad_norm_ refuses later calls on such an optimizer too.
        self._in_zero = _inside_zero_redundancy_optimizer()
        if self._in_zero and max_grad_norm is not None:
            raise ValueError(
                "FusedRMSprop(max_grad_norm=...) inside ZeroRedundancyOptimizer: each rank "
                "holds only its shard of the parameters, so it cannot compute the global "
                "gradient norm. Clip before zero.step() with torch.nn.utils.clip_grad_norm_ "
                "over all of the model's parameters (every rank has all gradients).")

    @torch.no_grad()
    def clip_grad_norm_(self, max_norm: float, norm_type: float = 2.0,
                        error_if_nonfinite: bool = False) -> Tensor:
        """Clip the next step's gradients by their total norm, as
        ``torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type)`` would,
        without writing them.

        Returns the total norm of the gradients of all param groups, as torch
        does. ``p.grad`` is left as it is: the next ``step()`` multiplies each
        gradient by ``min(1, max_norm / (norm + 1e-6))`` inside its kernel.
        Under GradScaler without ``scaler.unscale_``, the returned norm is of
        the scaled gradients (as torch's would be), and the step still clips
        by the unscaled norm (it divides by the scale it is given).
        ``error_if_nonfinite=True`` reads the norm on the host (a sync), as
        torch does.
        """
        check_norm_options(max_norm, norm_type)
        if self._release is not None:
            raise RuntimeError(
                "FusedRMSprop.clip_grad_norm_ with gradient release: the total norm needs "
                "every gradient before the first update, and release_gradients() updates "
                "each parameter during backward (its gradient is gone by now)")
        if self._in_zero:
            raise RuntimeError("FusedRMSprop.clip_grad_norm_ inside ZeroRedundancyOptimizer "
                               "cannot see the global gradient norm")
        built = build_calls(self, self._special_groups, self._special_groups)
        total = _total_norm(built, float(norm_type))
        if total is None:  # no gradients: torch returns a zero norm too
            return torch.tensor(0.0)
        if error_if_nonfinite and not torch.isfinite(total):
            raise RuntimeError(
                f"The total norm of order {float(norm_type)} for gradients from `parameters` is "
                "non-finite, so it cannot be clipped. To disable this error and scale the "
                "gradients by the non-finite norm anyway, set `error_if_nonfinite=False`")
        self._clipping["pending"] = (float(max_norm), total)
        return total

    @property
    def last_grad_norm(self):
        """The total norm of the unscaled gradients of the last clipped step
        (a tensor on the first gradient's device), or None."""
        return self._clipping["last"]

    def _clip_coefficient(self, built):
        """The coefficient this step multiplies every gradient by (a 0-dim
        tensor on the first gradient's device), or None when not clipping;
        the norm is of the gradients `built` gathered. Sets last_grad_norm
        (unscaled)."""
        pending = self._clipping["pending"]
        if pending is not None:
            self._clipping["pending"] = None
            max_norm, total = pending
        elif self.max_grad_norm is not None:
            max_norm, total = self.max_grad_norm, _total_norm(built, self.norm_type)
        else:
            return None
        if total is None:
            return None
        grad_scale = getattr(self, "grad_scale", None)
        if grad_scale is not None:
            # GradScaler's own inverse: 1 / scale in float64, rounded to float32
            inv = grad_scale.double().reciprocal().float()
            total = total * inv.to(total.device, total.dtype, non_blocking=True)
        self._clipping["last"] = total
        return (max_norm / (total + CLIP_EPS)).clamp(max=1.0)


def _total_norm(built, norm_type):
    """The norm of every gradient the call builder gathered (local shards for
    DTensors, then reduced over their mesh), or None without gradients."""
    if built.has_complex and norm_type != 2.0:
        raise ValueError("FusedRMSprop: clipping complex parameters supports "
                         f"norm_type 2 only, got {norm_type}")
    groups = {}
    for g in built.grads():
        if g.is_sparse:
            raise RuntimeError("FusedRMSprop: clipping does not support sparse gradients")
        groups.setdefault((g.device, g.dtype), []).append(g if is_dense(g) else g.contiguous())
    if not groups:
        return None
    norms = [grad_norm(grads, norm_type) for grads in groups.values()]
    first = norms[0].device
    dtype = torch.float64 if any(n.dtype == torch.float64 for n in norms) else torch.float32
    total = norms[0] if len(norms) == 1 else torch.linalg.vector_norm(
        torch.stack([n.to(first, dtype, non_blocking=True) for n in norms]), norm_type)
    if built.dtensors:
        total = _reduce_over_shards(total, norm_type, built.dtensors,
                                    sum(map(len, groups.values())))
    return total


def _reduce_over_shards(total, norm_type, dtensors, n_grads):
    """The global norm from each rank's norm of its DTensor shards: a sum of
    |g|^p (or a max) over the mesh dimensions the parameters are sharded on,
    as torch.nn.utils.clip_grad_norm_ gets for DTensors."""
    import torch.distributed as dist
    from torch.distributed.tensor import Replicate

    if len(dtensors) != n_grads:
        raise NotImplementedError("FusedRMSprop: clipping a mix of DTensor and plain "
                                  "parameters is not supported (the plain ones are not sharded)")
    mesh = dtensors[0].device_mesh
    kinds = {tuple(isinstance(pl, Replicate) for pl in p.placements) for p in dtensors}
    if any(p.device_mesh != mesh for p in dtensors) or len(kinds) != 1:
        raise NotImplementedError("FusedRMSprop: clipping needs every DTensor parameter on one "
                                  "device mesh, sharded along the same mesh dimensions")
    replicated = kinds.pop()
    dims = [d for d, rep in enumerate(replicated) if not rep]
    if norm_type == math.inf:
        for d in dims:
            dist.all_reduce(total, op=dist.ReduceOp.MAX, group=mesh.get_group(d))
        return total
    powered = total.double() ** norm_type
    for d in dims:
        dist.all_reduce(powered, op=dist.ReduceOp.SUM, group=mesh.get_group(d))
    return (powered ** (1.0 / norm_type)).to(total.dtype)
