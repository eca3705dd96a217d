"""FusedRMSprop: torch.optim.RMSprop with one fused kernel call per device/dtype."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.optim.optimizer import Optimizer, _get_scalar_dtype

from ._ops import rmsprop_, rmsprop_check

_STATE_KEYS = ("square_avg", "momentum_buffer", "grad_avg")


class FusedRMSprop(Optimizer):
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

    ``foreach`` is accepted and ignored (the step is always fused);
    ``differentiable=True`` is rejected. float16 and bfloat16 parameters are
    computed in float32 and stored back; complex parameters are updated as
    pairs of real numbers, as torch does.
    """

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
        }
        super().__init__(params, defaults)

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:
            for key in ("momentum", "centered", "foreach", "maximize",
                        "differentiable", "capturable", "eps_in_sqrt", "lr_in_momentum",
                        "decoupled_weight_decay"):
                group.setdefault(key, self.defaults.get(key, False))
            group.setdefault("initial_square_avg", 0.0)

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
        # lists: the native check op validates every call before the first
        # update, so a step that raises changes nothing. Anything else (new
        # parameters, a grad laid out unlike its parameter, bad state) takes
        # the slow path, which validates in Python with precise messages,
        # creates or re-lays state, and then gathers again.
        calls = self._gather_calls({})
        if calls is None or not self._all_pass_checks(calls):
            calls = self._prepare_slowly()
        for args, kwargs in calls:
            rmsprop_(*args, **kwargs)
        return loss

    def _gather_calls(self, grad_override):
        """[(args, kwargs)] of one op call per (group, device, dtype), or None
        when some parameter needs the slow path."""
        calls = []
        state = self.state
        for group in self.param_groups:
            momentum, centered = group["momentum"] > 0, group["centered"]
            lists = ([], [], [], [], [], [])
            params, grads, square_avgs, buffers, grad_avgs, steps = lists
            try:
                for p in group["params"]:
                    grad = p.grad
                    if grad is None:
                        continue
                    s = state.get(p)
                    if not s:
                        return None
                    grad = grad_override.get(p, grad)
                    if p.is_complex():
                        p, grad = _as_real(p), _as_real(grad)
                        s = {k: _as_real(v) for k, v in s.items()}
                    params.append(p)
                    grads.append(grad)
                    square_avgs.append(s["square_avg"])
                    if momentum:
                        buffers.append(s["momentum_buffer"])
                    if centered:
                        grad_avgs.append(s["grad_avg"])
                    steps.append(s["step"])
                if not params:
                    continue
                present = [lst for lst in lists if lst]
                grouped = torch._C._group_tensors_by_device_and_dtype(present, False)
            except (KeyError, TypeError, AttributeError, RuntimeError):
                return None
            kwargs = _op_kwargs(group)
            for sub_lists, _ in grouped.values():
                sub = iter(sub_lists)
                args = [next(sub) if lst else [] for lst in lists]
                calls.append((args, kwargs))
        return calls

    @staticmethod
    def _all_pass_checks(calls):
        try:
            for args, kwargs in calls:
                rmsprop_check(*args, **kwargs)
        except RuntimeError:
            return False
        return True

    def _prepare_slowly(self):
        plans = [self._plan_group(group) for group in self.param_groups]
        undo, grad_override = [], {}
        try:
            for group, plan in zip(self.param_groups, plans):
                self._commit_group(group, plan, undo, grad_override)
            calls = self._gather_calls(grad_override)
            if calls is None:
                raise RuntimeError("FusedRMSprop: internal error: state is incomplete after setup")
            for args, kwargs in calls:
                rmsprop_check(*args, **kwargs)
        except BaseException:
            for state, key, old in reversed(undo):
                if old is None:
                    state.pop(key, None)
                else:
                    state[key] = old
            raise
        return calls

    def _plan_group(self, group):
        """Validates a group; returns [(param, grad, new_state or None)]."""
        if group["differentiable"]:
            raise ValueError("FusedRMSprop does not support differentiable=True")
        plan = []
        for i, p in enumerate(group["params"]):
            grad = p.grad
            if grad is None:
                continue
            where = _Where(i, p)
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
            if not _is_dense(p):
                raise RuntimeError(
                    f"FusedRMSprop: {where} is a strided view (strides {p.stride()}); "
                    "the fused step needs parameters that are dense in memory "
                    "(contiguous or permuted, e.g. channels_last). Make the "
                    "parameter contiguous before building the optimizer.")
            state = self.state.get(p)
            new_state = None
            if not state:
                new_state = self._new_state(p, group)
            else:
                self._check_state(p, state, group, where)
            plan.append((p, grad, new_state))
        return plan

    def _new_state(self, p, group):
        step_device = p.device if group["capturable"] else "cpu"
        state = {"step": torch.zeros((), dtype=_get_scalar_dtype(), device=step_device)}
        square_avg = torch.zeros_like(p, memory_format=torch.preserve_format)
        if group["initial_square_avg"] != 0:
            _as_real(square_avg).fill_(group["initial_square_avg"])
        state["square_avg"] = square_avg
        if group["momentum"] > 0:
            state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if group["centered"]:
            state["grad_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    @staticmethod
    def _check_state(p, state, group, where):
        if not torch.is_tensor(state.get("step")):
            raise RuntimeError(f"FusedRMSprop: the state of {where} has no 'step' tensor")
        required = ["square_avg"]
        required += ["momentum_buffer"] if group["momentum"] > 0 else []
        required += ["grad_avg"] if group["centered"] else []
        for key in required:
            value = state.get(key)
            if value is None:
                continue  # created on first use (torch would raise a KeyError)
            if (not torch.is_tensor(value) or value.shape != p.shape
                    or value.dtype != p.dtype or value.device != p.device):
                got = (f"shape {tuple(value.shape)}, dtype {value.dtype}, device {value.device}"
                       if torch.is_tensor(value) else type(value).__name__)
                raise RuntimeError(
                    f"FusedRMSprop: state '{key}' of {where} has {got}; expected shape "
                    f"{tuple(p.shape)}, dtype {p.dtype}, device {p.device} "
                    "(was a state_dict from another model loaded?)")

    def _commit_group(self, group, plan, undo, grad_override):
        """Creates missing state and re-lays state and grads laid out unlike
        their parameter; records in `undo` how to take it back."""
        wanted = [("momentum_buffer", group["momentum"] > 0), ("grad_avg", group["centered"])]
        for p, grad, new_state in plan:
            state = self.state[p]
            for key, value in (new_state or {}).items():
                undo.append((state, key, state.get(key)))
                state[key] = value
            for key, on in wanted:
                if on and key not in state:
                    undo.append((state, key, None))
                    state[key] = torch.zeros_like(p, memory_format=torch.preserve_format)
            for key in _STATE_KEYS:
                # e.g. a contiguous checkpoint loaded for a channels_last parameter
                if key in state and state[key].stride() != p.stride():
                    undo.append((state, key, state[key]))
                    state[key] = torch.empty_like(p).copy_(state[key])
            if grad.stride() != p.stride():
                grad_override[p] = torch.empty_like(p).copy_(grad)


def _op_kwargs(group):
    lr = group["lr"]
    return dict(
        lr=lr.item() if isinstance(lr, Tensor) else float(lr),
        alpha=float(group["alpha"]),
        eps=float(group["eps"]),
        weight_decay=float(group["weight_decay"]),
        momentum=float(group["momentum"]),
        maximize=bool(group["maximize"]),
        eps_in_sqrt=bool(group["eps_in_sqrt"]),
        lr_in_momentum=bool(group["lr_in_momentum"]),
        decoupled_weight_decay=bool(group["decoupled_weight_decay"]),
    )


class _Where:
    """Names a parameter in error messages; formatted only when one is raised."""

    def __init__(self, index, param):
        self.index, self.param = index, param

    def __str__(self):
        return f"parameter {self.index} of its param group (shape {tuple(self.param.shape)})"


def _as_real(t: Tensor) -> Tensor:
    return torch.view_as_real(t) if t.is_complex() else t


def _is_dense(t: Tensor) -> bool:
    """True when `t` fills exactly numel consecutive elements of memory, in any
    dimension order (contiguous, channels_last, transposed)."""
    if t.is_contiguous():
        return True
    expected = 1
    for size, stride in sorted(zip(t.shape, t.stride()), key=lambda d: d[1]):
        if size != 1 and stride != expected:
            return False
        expected *= size
    return True
