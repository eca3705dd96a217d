"""FusedRMSprop: torch.optim.RMSprop with one fused kernel call per device/dtype."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.optim.optimizer import Optimizer

from ._calls import build_calls
from ._checkpoint import TorchFormatCheckpoints
from ._clipping import GradClipping
from ._release import GradientRelease
from ._op_args import grad_factor_for
from ._ops import rmsprop_check
from ._options import checked_defaults
from ._prepare import prepare_calls
from ._quantized import MIN_8BIT_SIZE


class FusedRMSprop(GradClipping, GradientRelease, TorchFormatCheckpoints, Optimizer):
    """RMSprop whose step is one fused kernel call per device and dtype.

    Takes the arguments of ``torch.optim.RMSprop`` with the same defaults and
    validation, keeps the same state (``step``, ``square_avg``,
    ``momentum_buffer``, ``grad_avg``), and computes the same update. Four
    keyword-only switches reproduce other frameworks' conventions:

    * ``eps_in_sqrt``: divide by ``sqrt(v + eps)`` instead of ``sqrt(v) + eps``
      (d2l, TensorFlow, Keras, Optax, MXNet);
    * ``initial_square_avg``: the value ``square_avg`` starts at (TF1 and
      timm use 1.0);
    * ``lr_in_momentum``: the momentum buffer accumulates ``lr * g / d`` and
      the parameter moves by the buffer (TF, Keras, timm, Optax, MXNet);
    * ``decoupled_weight_decay``: ``p *= 1 - lr * weight_decay`` before the
      step, the gradient untouched (Keras, timm's ``decoupled_decay``).

    ``state_dtype=torch.float32`` keeps the state of float16/bfloat16
    parameters in float32 (default None: the parameter's dtype, as torch).

    ``foreach`` is accepted and ignored (the step is always fused);
    ``differentiable=True`` is rejected. float16 and bfloat16 parameters are
    computed in float32 and stored back; complex parameters are updated as
    pairs of real numbers, as torch does. Parameters that are strided views
    (e.g. ``x[..., 0]``) are updated through a dense copy; dense ones
    (contiguous, channels_last, transposed) in place. A Tensor ``lr`` is read
    by the kernel: no host sync, and no recompile under ``torch.compile``.
    ``step`` lives on the parameter's device, as in torch's fused optimizers,
    whatever ``capturable`` says, so a GradScaler step never waits for the
    GPU; a CPU ``step`` from a torch checkpoint moves there when loaded.

    ``max_grad_norm`` clips every step's gradients by their total norm (of
    order ``norm_type``, over all param groups), as
    ``torch.nn.utils.clip_grad_norm_`` does, inside the fused step: one read
    pass for the norm, no pass to scale the gradients, no host sync, the
    unscaled norm under GradScaler. ``p.grad`` is not modified; the norm of
    the last clipped step is ``last_grad_norm`` (a tensor). ``clip_grad_norm_``
    does the same for the next step only, where torch's call was.

    ``stochastic_rounding=True`` stores bfloat16 parameters (and bfloat16
    state) with stochastic rounding instead of round-to-nearest, so updates
    smaller than half a bfloat16 ulp survive in expectation (pure-bfloat16
    training without a float32 copy). The random bits come from a
    counter-based generator keyed on ``rounding_seed`` (default:
    ``torch.initial_seed()``), the parameter's index in the optimizer, its
    ``step`` and the element's index: results are reproducible, independent
    of the thread count, the same on CPU and CUDA, and a checkpoint carries
    the generator's position. Parameters of other dtypes are unaffected.

    ``state_bits=8`` keeps ``square_avg``, ``momentum_buffer`` and
    ``grad_avg`` of parameters with at least ``min_8bit_size`` elements
    (default 4096) as 8-bit block-wise quantized codes: ``<key>_codes``
    (uint8, the parameter's shape) and ``<key>_scales`` (float32, one per
    block of 128 elements), about 1.03 bytes per element and state instead of
    4. Smaller parameters keep full-precision state. For DTensor parameters
    (FSDP2) each rank quantizes its own shard.

    ``release_gradients()`` turns on gradient release: each parameter is
    updated during ``backward()`` as soon as its gradient is final (after
    DDP's allreduce or FSDP2's reduce-scatter), in fused buckets, and its
    gradient is freed; see its docstring.

    ``state_dict()`` has torch.optim.RMSprop's format (the switches above are
    left out where they have torch's values), so checkpoints, including
    ``torch.distributed.checkpoint`` ones, move between the two classes and
    between world sizes. 8-bit state is saved as float32 state (4 bytes per
    element while the state_dict exists) and encoded again when loaded.
    ``torch_state_dict`` leaves out this optimizer's own options.
    """

    # GradScaler sets `grad_scale` and `found_inf` on this optimizer and calls
    # step() directly; the kernel unscales and skips without host syncs.
    _step_supports_amp_scaling = True

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum: float = 0,
        centered: bool = False,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        *,
        eps_in_sqrt: bool = False,
        initial_square_avg: float = 0.0,
        lr_in_momentum: bool = False,
        decoupled_weight_decay: bool = False,
        state_dtype: torch.dtype | None = None,
        max_grad_norm: float | None = None,
        norm_type: float = 2.0,
        stochastic_rounding: bool = False,
        rounding_seed: int | None = None,
        state_bits: int | None = None,
        min_8bit_size: int = MIN_8BIT_SIZE,
    ) -> None:
        defaults = checked_defaults(
            lr, alpha, eps, weight_decay, momentum, centered, capturable, foreach, maximize,
            differentiable, eps_in_sqrt, initial_square_avg, lr_in_momentum,
            decoupled_weight_decay, state_dtype, stochastic_rounding, rounding_seed, state_bits,
            min_8bit_size)
        self._init_clipping(max_grad_norm, norm_type)
        self._release = None  # NOTE: [gradient release]
        super().__init__(params, defaults)
        self._init_tiers()

    def _init_tiers(self):
        # Indices of the param groups to gather with care (NOTE: [grouping]).
        self._special_groups = set()
        # Steps that took the slow tier (a dict: torch 2.11's dynamo cannot
        # trace setattr on the optimizer in a compiled step).
        self._tiers = {"slow": 0}

    @property
    def slow_steps(self) -> int:
        """How many steps (with gradient release: bucket updates) took the
        slow tier (first steps, new parameters or options, loaded
        checkpoints, ...); a steady loop adds none."""
        return self._tiers["slow"]

    @torch.no_grad()
    def step(self, closure=None):
        """Perform a single optimization step.

        Args:
            closure (Callable, optional): A closure that reevaluates the model
                and returns the loss.
        """
        self._accelerator_graph_capture_health_check()
        if self._release is not None:
            # NOTE: [gradient release]: the updates ran during backward; this
            # ends the step (and updates any gradient still held)
            self._release.end_step(closure, self)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._update()
        return loss

    def _update(self, select=None):
        """Updates the params that have a grad (of those `select` names:
        _calls.selected; gradient release passes a bucket)."""
        # NOTE: [fast tier] (_calls.py) and NOTE: [slow tier] (_prepare.py)
        built = build_calls(self, self._special_groups, self._special_groups, select)
        # NOTE: [fused clipping]: the coefficient the kernels multiply every
        # gradient by, computed on the device before any update.
        factor = grad_factor_for(self._clip_coefficient(built))
        if built.refusal is None and _run_unless_refused(built.calls, factor):
            return
        self._tiers["slow"] += 1
        built = prepare_calls(self, select)
        for call in built.calls:
            _set_factor(call, factor)
            call.run()


def _set_factor(call, factor):
    p = call.lists["params"][0]
    call.options.update(factor(p.device, p.dtype))


def _run_unless_refused(calls, factor):
    """Runs the fast tier's calls; False when the op refuses them, which it
    does before writing anything (NOTE: [checks first] in csrc/op_entry.h)."""
    try:
        for call in calls:
            _set_factor(call, factor)
        if len(calls) == 1:
            # One call checks all its arguments before writing anything, so
            # a separate check call would only repeat that work (about 0.9 us
            # per parameter).
            calls[0].run()
            return True
        for call in calls:
            rmsprop_check(*call.lists.values(), **call.options)
    except NotImplementedError:  # no kernel for these tensors, e.g. sparse
        return False
    except RuntimeError as error:
        if not str(error).startswith("fused_rmsprop:"):
            raise  # not an argument check: e.g. a failed kernel launch
        return False
    for call in calls:
        call.run()
    return True
