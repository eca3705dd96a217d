"""FusedRMSprop: torch.optim.RMSprop with one fused kernel call per device/dtype."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.optim.optimizer import Optimizer

from ._checkpoint import TorchFormatCheckpoints
from ._clipping import GradClipping
from ._op_args import (amp_tensors, grad_factor_for, lr_for, op_kwargs, rounding_for,
                       rounding_seed_from)
from ._ops import rmsprop_, rmsprop_check
from ._quantized import MIN_8BIT_SIZE, dequantize_state, quantize_state
from ._state import (STATE_KEYS, DTensor, Where, as_real, check_state, codes_key,
                     convert_state, dense_layout, is_dense, local_shards, new_state,
                     quantized, scales_key, state_dtype, zeros_quantized, zeros_state)

_PLAIN_TYPES = (Tensor, torch.nn.Parameter)  # never DTensors


class FusedRMSprop(GradClipping, TorchFormatCheckpoints, Optimizer):
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

    ``state_dict()`` has torch.optim.RMSprop's format (the switches above are
    left out where they have torch's values), so checkpoints, including
    ``torch.distributed.checkpoint`` ones, move between the two classes.
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
        # The same checks, in the same order and words, as torch.optim.RMSprop.
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= momentum:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not 0.0 <= alpha:
            raise ValueError(f"Invalid alpha value: {alpha}")
        if not 0.0 <= initial_square_avg < float("inf"):
            raise ValueError(f"Invalid initial_square_avg value: {initial_square_avg}")
        if state_dtype not in (None, torch.float32):
            raise ValueError(f"Invalid state_dtype: {state_dtype}; use None (the parameter's "
                             "dtype, as torch) or torch.float32 (for float16/bfloat16 params)")
        if not isinstance(stochastic_rounding, bool):
            raise ValueError(f"Invalid stochastic_rounding: {stochastic_rounding!r}; expected "
                             "True or False")
        rounding_seed = rounding_seed_from(rounding_seed)
        if state_bits not in (None, 8) or isinstance(state_bits, bool):
            raise ValueError(f"Invalid state_bits: {state_bits!r}; use None (full-precision "
                             "state) or 8 (8-bit block-wise quantized state)")
        if isinstance(min_8bit_size, bool) or not isinstance(min_8bit_size, int) \
                or min_8bit_size < 0:
            raise ValueError(f"Invalid min_8bit_size: {min_8bit_size!r}; expected an integer "
                             ">= 0 (parameters with fewer elements keep full-precision state)")
        if differentiable:
            raise ValueError(
                "FusedRMSprop does not support differentiable=True: its fused step "
                "is not recorded by autograd. Use torch.optim.RMSprop(differentiable=True)."
            )
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "alpha": alpha,
            "eps": eps,
            "centered": centered,
            "weight_decay": weight_decay,
            "capturable": capturable,
            "foreach": foreach,
            "maximize": maximize,
            "differentiable": differentiable,
            "eps_in_sqrt": eps_in_sqrt,
            "initial_square_avg": initial_square_avg,
            "lr_in_momentum": lr_in_momentum,
            "decoupled_weight_decay": decoupled_weight_decay,
            "state_dtype": state_dtype,
            "stochastic_rounding": stochastic_rounding,
            "rounding_seed": rounding_seed,
            "state_bits": state_bits,
            "min_8bit_size": min_8bit_size,
        }
        self._init_clipping(max_grad_norm, norm_type)
        super().__init__(params, defaults)
        # Indices of the param groups whose parameters need care when
        # gathered: mixed devices or dtypes, or strided views (NOTE: [grouping]).
        self._special_groups = set()

    @torch.no_grad()
    def step(self, closure=None):
        """Perform a single optimization step.

        Args:
            closure (Callable, optional): A closure that reevaluates the model
                and returns the loss.
        """
        self._accelerator_graph_capture_health_check()
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # NOTE: [fast path] A steady training step only gathers tensors into
        # lists. Every op call is checked before the first one writes (with
        # several calls by the check op, with one by the update's own checks),
        # so a step that raises changes nothing. Anything else (new
        # parameters, a grad laid out unlike its parameter, bad state) takes
        # the slow path, which validates in Python with precise messages,
        # creates or re-lays state, and then gathers again.
        # NOTE: [fused clipping]: the coefficient the kernels multiply every
        # gradient by, computed on the device before any update.
        factor = self._clip_coefficient()
        calls = self._gather_calls({}, factor=factor)
        if calls is not None and len(calls) == 1:
            # One call checks all its arguments before writing anything, so a
            # separate check call would only repeat that work (about 0.9 us
            # per parameter).
            if self._update_unless_refused(calls[0]):
                return loss
        elif calls is not None and self._all_pass_checks(calls):
            for call in calls:
                _run(call)
            return loss
        for call in self._prepare_slowly(factor):
            _run(call)
        return loss

    @staticmethod
    def _update_unless_refused(call):
        """Runs one op call; False when its checks or the dispatcher refused
        it, which happens before any write (run_checked in op_checks.h)."""
        try:
            rmsprop_(*call.args, **call.kwargs)
        except NotImplementedError:  # no kernel for these tensors, e.g. sparse
            return False
        except RuntimeError as error:
            if not str(error).startswith("fused_rmsprop:"):
                raise  # not an argument check: e.g. a failed kernel launch
            return False
        call.write_back()
        return True

    def _gather_calls(self, grad_override, regroup=False, factor=None):
        """[_Call] of one op call per (group, device, dtype), or None when
        some parameter needs the slow path.

        NOTE: [grouping] Splitting a group's lists by device and dtype costs
        0.1-0.4 ms per step for 200 params, so a group is passed whole unless
        it is known to need care (`_special_groups`, filled with regroup=True
        by the slow path): mixed devices or dtypes, or parameters that are
        strided views. Passing such a group whole is safe: the op refuses it
        before writing anything (params of one call must share a device and
        dtype, and be dense), and the step then takes the slow path, which
        regroups. A strided view is updated through a dense stand-in, copied
        back after the call (2 more passes over that parameter only)."""
        calls = []
        state = self.state
        amp = amp_tensors(self)
        factor = grad_factor_for(factor)  # the clipping coefficient, or None
        first_id = 0  # the index in the optimizer of the group's first param
        compiling = torch.compiler.is_compiling()
        for index, group in enumerate(self.param_groups):
            group_first_id, first_id = first_id, first_id + len(group["params"])
            momentum, centered = group["momentum"] > 0, group["centered"]
            special = regroup or index in self._special_groups
            # NOTE: [8-bit calls] Parameters with 8-bit state go to a call of
            # their own: (params, grads, square_avgs, momentum_buffers,
            # grad_avgs, state_steps) and with 8-bit state the three lists of
            # scales; the state lists hold codes then.
            full, eight = _CallLists(), _CallLists()
            params, grads, square_avgs, buffers, grad_avgs, steps = full.lists[:6]
            bits8, min_8bit = group["state_bits"] == 8, group["min_8bit_size"]
            rounding = group["stochastic_rounding"]
            views = []
            try:
                for i, p in enumerate(group["params"]):
                    grad = p.grad
                    if grad is None:
                        continue
                    s = state.get(p)
                    if not s:
                        return None
                    # 8-bit state in a group that no longer wants it has no
                    # "square_avg": the KeyError below sends it to the slow path
                    is8 = False
                    if bits8:
                        is8 = "square_avg_codes" in s
                        # (traced, the size test is left out: dynamo cannot
                        # always evaluate it, and the state already says it)
                        if is8 != (is8 if compiling else p.numel() >= min_8bit):
                            return None  # the slow path converts the state
                    target = eight if is8 else full
                    if rounding:
                        target.ids.append(group_first_id + i)
                    if grad_override:
                        grad = grad_override.get(p, grad)
                    # type() first: isinstance(p, DTensor) costs 0.1 us per param
                    if type(p) not in _PLAIN_TYPES and isinstance(p, DTensor):
                        p, grad, s = local_shards(p, grad, s)
                    if special and not is_dense(p):
                        view, p = p, dense_layout(p).copy_(p)
                        views.append((view, p))
                        if grad.stride() != p.stride():
                            grad = torch.empty_like(p).copy_(grad)
                    if p.is_complex():
                        p, grad = as_real(p), as_real(grad)
                        s = {k: as_real(v) for k, v in s.items()}
                    if is8:
                        eight.append(p, grad, s, momentum, centered)
                        continue
                    params.append(p)
                    grads.append(grad)
                    square_avgs.append(s["square_avg"])
                    if momentum:
                        buffers.append(s["momentum_buffer"])
                    if centered:
                        grad_avgs.append(s["grad_avg"])
                    steps.append(s["step"])
                splits, split_ids = [], []
                for target in (full, eight):
                    lists, ids = target.lists, target.ids
                    if not lists[0]:
                        continue
                    if special:
                        grouped = _group_by_device_and_dtype(lists)
                        if len(grouped) > 1 or views:
                            self._special_groups.add(index)
                        for sub_lists, positions in grouped:
                            splits.append(sub_lists)
                            split_ids.append([ids[k] for k in positions] if ids else ids)
                    else:
                        splits.append(list(lists))
                        split_ids.append(ids)
            except (KeyError, TypeError, AttributeError, RuntimeError):
                return None
            kwargs = op_kwargs(group)
            for i, (args, args_ids) in enumerate(zip(splits, split_ids)):
                device, dtype = args[0][0].device, args[0][0].dtype
                call_kwargs = dict(kwargs, **amp(device), **lr_for(group["lr"], device),
                                   **factor(device, dtype), **rounding_for(group, dtype, args_ids))
                if args[6]:  # 8-bit state: the scales
                    call_kwargs.update(square_avg_scales=args[6], momentum_buffer_scales=args[7],
                                       grad_avg_scales=args[8])
                calls.append(_Call(args[:6], call_kwargs, views if i == len(splits) - 1 else ()))
        return calls

    @staticmethod
    def _all_pass_checks(calls):
        try:
            for call in calls:
                rmsprop_check(*call.args, **call.kwargs)
        except RuntimeError:
            return False
        return True

    def _prepare_slowly(self, factor=None):
        plans = [self._plan_group(group) for group in self.param_groups]
        undo, grad_override = [], {}
        try:
            for group, plan in zip(self.param_groups, plans):
                self._commit_group(group, plan, undo, grad_override)
            calls = self._gather_calls(grad_override, regroup=True, factor=factor)
            if calls is None:
                raise RuntimeError("FusedRMSprop: internal error: state is incomplete after setup")
            for call in calls:
                rmsprop_check(*call.args, **call.kwargs)
        except BaseException:
            for state, key, old in reversed(undo):
                if old is None:
                    state.pop(key, None)
                else:
                    state[key] = old
            raise
        return calls

    def _plan_group(self, group):
        """Validates a group; returns [(param, grad, fresh state or None)]."""
        if group["differentiable"]:
            raise ValueError("FusedRMSprop does not support differentiable=True")
        plan = []
        for i, p in enumerate(group["params"]):
            grad = p.grad
            if grad is None:
                continue
            where = Where(i, p)
            if grad.is_sparse:
                raise RuntimeError("RMSprop does not support sparse gradients "
                                   f"(FusedRMSprop: {where} has a sparse grad)")
            if not (p.is_floating_point() or p.is_complex()):
                raise TypeError(f"FusedRMSprop: {where} has dtype {p.dtype}; "
                                "only floating-point and complex parameters can be optimized")
            if grad.shape != p.shape or grad.dtype != p.dtype or grad.device != p.device:
                raise RuntimeError(
                    f"FusedRMSprop: the grad of {where} has shape {tuple(grad.shape)}, "
                    f"dtype {grad.dtype}, device {grad.device}; expected the parameter's "
                    f"{tuple(p.shape)}, {p.dtype}, {p.device}")
            # (dense tensors never overlap; asking only for views keeps this
            # check out of what torch.compile traces for dense parameters)
            if not is_dense(p) and torch._debug_has_internal_overlap(p) == 1:  # expand()
                raise RuntimeError(
                    f"FusedRMSprop: {where} has elements that overlap in memory (strides "
                    f"{p.stride()}); torch.optim.RMSprop cannot update it in place either")
            if (group["state_bits"] == 8 and quantized(p, group)
                    and type(p) not in _PLAIN_TYPES and isinstance(p, DTensor)):
                raise ValueError(
                    f"FusedRMSprop: state_bits=8 is not supported for DTensor parameters "
                    f"(FSDP2, tensor parallel): {where} is a DTensor, whose shards would cut "
                    "the state's blocks; keep its state full precision (state_bits=None, or "
                    "min_8bit_size above its size)")
            state = self.state.get(p)
            fresh = None
            if not state:
                fresh = new_state(p, group)
            else:
                check_state(p, state, group, where)
            plan.append((p, grad, fresh))
        return plan

    def _commit_group(self, group, plan, undo, grad_override):
        """Creates missing state and re-lays state and grads laid out unlike
        their parameter; records in `undo` how to take it back."""
        wanted = [("momentum_buffer", group["momentum"] > 0), ("grad_avg", group["centered"])]
        for p, grad, fresh in plan:
            state = self.state[p]
            for key, value in (fresh or {}).items():
                undo.append((state, key, state.get(key)))
                state[key] = value
            # 8-bit state where the group now wants full precision, or the reverse
            undo.extend((state, key, old) for key, old in convert_state(p, group, state))
            for key, on in wanted:
                if on and key not in state and codes_key(key) not in state:
                    if quantized(p, group):
                        for k, v in zip((codes_key(key), scales_key(key)), zeros_quantized(p)):
                            undo.append((state, k, None))
                            state[k] = v
                    else:
                        undo.append((state, key, None))
                        state[key] = zeros_state(p, group)
            dtype = state_dtype(p, group)
            layout = dense_layout(p)  # p itself, or the dense stand-in of a view
            real_layout = as_real(layout)
            for key in STATE_KEYS:
                codes = state.get(codes_key(key))
                if codes is not None and codes.stride() != real_layout.stride():
                    # blocks follow memory order: decode, re-lay, encode again
                    values = dequantize_state(codes, state[scales_key(key)], key)
                    values = torch.empty_like(real_layout, dtype=torch.float32).copy_(values)
                    for k, v in zip((codes_key(key), scales_key(key)), quantize_state(values, key)):
                        undo.append((state, k, state[k]))
                        state[k] = v
                # e.g. a contiguous checkpoint loaded for a channels_last
                # parameter, or half-precision state where float32 is wanted
                value = state.get(key)
                if value is not None and (value.stride() != layout.stride()
                                          or value.dtype != dtype):
                    undo.append((state, key, value))
                    state[key] = torch.empty_like(layout, dtype=dtype).copy_(value)
            if grad.stride() != layout.stride() and is_dense(p):
                grad_override[p] = torch.empty_like(p).copy_(grad)


def _group_by_device_and_dtype(lists):
    """[(lists, positions)] of the params of `lists` split by device and dtype."""
    present = [lst for lst in lists if lst]
    if len(present) == len(lists) - 3 or not any(lists[6:]):  # full precision: torch's helper
        grouped = torch._C._group_tensors_by_device_and_dtype(present, True).values()
        result = []
        for sub_lists, positions in grouped:
            sub = iter(sub_lists)
            result.append(([next(sub) if lst else [] for lst in lists], positions))
        return result
    # 8-bit state (uint8 codes, float32 scales), which torch's helper refuses
    positions = {}
    for k, p in enumerate(lists[0]):
        positions.setdefault((p.device, p.dtype), []).append(k)
    return [([[lst[k] for k in ks] if lst else [] for lst in lists], ks)
            for ks in positions.values()]


class _CallLists:
    """The lists of one op call being gathered, and its params' ids."""

    __slots__ = ("lists", "ids")

    def __init__(self):
        # params, grads, square_avgs, momentum_buffers, grad_avgs, state_steps,
        # and for 8-bit state square_avg_, momentum_buffer_, grad_avg_scales
        self.lists = ([], [], [], [], [], [], [], [], [])
        self.ids = []  # each param's index in the optimizer (its state_dict key)

    def append(self, p, grad, s, momentum, centered):
        """A parameter with 8-bit state: its codes and scales (NOTE: [8-bit calls])."""
        lists = self.lists
        lists[0].append(p)
        lists[1].append(grad)
        for on, codes, scales, key in ((True, 2, 6, "square_avg"), (momentum, 3, 7, "momentum_buffer"),
                                       (centered, 4, 8, "grad_avg")):
            if on:
                lists[codes].append(s[codes_key(key)])
                lists[scales].append(s[scales_key(key)])
        lists[5].append(s["step"])


class _Call:
    """One op call: its arguments, and the strided-view parameters whose
    dense stand-ins it updates (copied back once it has run)."""

    __slots__ = ("args", "kwargs", "views")

    def __init__(self, args, kwargs, views=()):
        self.args, self.kwargs, self.views = args, kwargs, views

    def write_back(self):
        for view, dense in self.views:
            view.copy_(dense)


def _run(call):
    rmsprop_(*call.args, **call.kwargs)
    call.write_back()
