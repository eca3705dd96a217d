"""Gradient release: each parameter updated during backward, in fused buckets.

NOTE: [gradient release] `release_gradients()` registers, on every parameter,
a hook that runs when its gradient is final: torch's post-accumulate-grad
hook on plain parameters, which FSDP2 also runs for its sharded parameters
after their reduce-scatter, or, under DDP, a comm hook run per DDP bucket
after its allreduce (never on a rank's unreduced gradients). A hook only
appends the parameter to the pending bucket; the bucket is updated (the same
`_update` as step(), for the params it names: one op call per param group,
state form, device and dtype) and its gradients freed when it holds
`bucket_bytes` of gradients, at the end of each DDP bucket, and at the end of
backward (a callback queued with the autograd engine, which also frees what
DDP's reducer leaves in .grad). So a backward holds at most `bucket_bytes` of
released gradients waiting (plus what autograd itself holds), and no
gradients are held between steps.

step() ends the step: it updates any gradient still held (none, unless some
came from outside backward or from `no_release`) and allows the next
backward to release. A backward that would release while the previous
backward's updates have not been closed by step() raises before it writes:
gradients cannot accumulate over backward passes when each pass consumes
them (accumulate inside `no_release()`, or DDP's `no_sync()`, or FSDP2's
`set_requires_gradient_sync(False)`). What needs every gradient before the
first update is refused, before any write where it can be seen: clipping by
the total norm (max_grad_norm, clip_grad_norm_), a closure, and GradScaler
(seen only at scaler.step(): nothing ties a scaler to an optimizer before)."""

from __future__ import annotations

import contextlib
import threading
import weakref

import torch
import torch.distributed as dist

from ._state import DTensor, local

# DDP's default bucket size (bucket_cap_mb=25)
DEFAULT_BUCKET_BYTES = 25 * 2**20

_ACCUMULATION = (
    "FusedRMSprop with gradient release: a backward pass reached parameters whose "
    "previous gradients were already used and freed, and step() was not called in "
    "between. Each backward pass updates the parameters, so gradients cannot accumulate "
    "over passes: call step() after every backward(), or accumulate micro-batches "
    "inside `with optimizer.no_release():` (DDP: `with model.no_sync():`; FSDP2: "
    "model.set_requires_gradient_sync(False)). Nothing was updated in this pass.")


class GradientRelease:
    """The gradient-release half of FusedRMSprop: release_gradients() and
    no_release()."""

    def release_gradients(self, ddp=None, *, bucket_bytes: int = DEFAULT_BUCKET_BYTES) -> None:
        """Update each parameter during ``backward()`` as soon as its gradient
        is final, and free the gradient: no gradients are held between steps.

        Updates are fused: parameters whose gradients become final together
        (consecutive layers, an FSDP2 group after its reduce-scatter, a DDP
        bucket after its allreduce) are updated by one kernel call per device
        and dtype, once ``bucket_bytes`` of their gradients are waiting, and at
        the end of backward. Results equal ``step()`` after ``backward()``.

        Keep the training loop as it is: ``backward()``, then ``step()``
        (which closes the step; the updates have happened), LR schedulers and
        ``zero_grad()`` as usual. Under DistributedDataParallel pass the DDP
        module: updates then run after each bucket's allreduce (its comm hook;
        DDP takes one). FSDP2 needs nothing: its sharded parameters' hooks run
        after the reduce-scatter. To accumulate gradients over micro-batches,
        run the backward passes before the last one inside ``no_release()``
        (DDP: ``no_sync()``; FSDP2: ``set_requires_gradient_sync(False)``).

        Refused with an error, because they need every gradient before the
        first update: ``max_grad_norm`` and ``clip_grad_norm_``, ``step(closure)``
        and GradScaler (float16 loss scaling: use bfloat16 autocast, which needs
        none). Gradient release stays on for the optimizer's lifetime.
        """
        if self._release is not None:
            raise RuntimeError("FusedRMSprop.release_gradients: gradient release is already on")
        if isinstance(bucket_bytes, bool) or not isinstance(bucket_bytes, int) \
                or bucket_bytes < 0:
            raise ValueError(f"Invalid bucket_bytes: {bucket_bytes!r}; expected an integer "
                             ">= 0 (0: update each parameter on its own)")
        if self.max_grad_norm is not None:
            raise ValueError(
                f"FusedRMSprop(max_grad_norm={self.max_grad_norm}) cannot release gradients: "
                "clipping by the total norm needs every gradient before the first update, and "
                "gradient release updates each parameter as its gradient arrives. Clip each "
                "gradient on its own instead (a post-accumulate-grad hook registered before "
                "release_gradients(), e.g. clip_grad_norm_([p], max_norm) or "
                "p.grad.clamp_), or keep the gradients (no release).")
        if ddp is not None and not isinstance(ddp, torch.nn.parallel.DistributedDataParallel):
            raise TypeError("FusedRMSprop.release_gradients(ddp): expected the "
                            f"DistributedDataParallel module or None, got {type(ddp).__name__}")
        if ddp is not None and ddp.find_unused_parameters:
            raise ValueError(
                "FusedRMSprop.release_gradients(ddp) with DDP(find_unused_parameters=True): "
                "a parameter that no rank used keeps .grad None (step() skips it), but its "
                "bucket holds zeros, which gradient release would apply as a gradient. Use "
                "find_unused_parameters=False, or no release")
        self._release = _Releaser(self, ddp, bucket_bytes)

    def add_param_group(self, param_group):
        super().add_param_group(param_group)
        if getattr(self, "_release", None) is not None:
            try:
                self._release.watch(self)
            except BaseException:
                self.param_groups.pop()  # refused: the optimizer stays as it was
                self._release.watch(self)
                raise

    @contextlib.contextmanager
    def no_release(self):
        """Backward passes inside keep their gradients (they accumulate in
        ``.grad`` as without gradient release); the next backward outside
        updates with the accumulated gradients. Not for DDP: accumulate
        with its ``no_sync()``, whose passes skip the allreduce and so never
        reach the update."""
        release = self._release
        if release is not None and release.ddp is not None:
            raise RuntimeError("FusedRMSprop.no_release() under DDP: accumulate gradients with "
                               "`with model.no_sync():` (gradient release runs after the "
                               "allreduce, which no_sync skips)")
        if release is not None:
            release.holding += 1
        try:
            yield
        finally:
            if release is not None:
                release.holding -= 1


class _Releaser:
    """The hooks, the pending bucket and the per-step bookkeeping of an
    optimizer with gradient release on."""

    def __init__(self, optimizer, ddp, bucket_bytes):
        self.optimizer = weakref.ref(optimizer)  # the hooks live on the params
        self.ddp = ddp
        self.bucket_bytes = bucket_bytes
        self.where = {}      # param -> (group index, index in the group)
        self.watched = set()  # params with a hook (plain and FSDP2)
        self.pending, self.pending_bytes = [], 0
        self.in_backward = False  # an end-of-backward callback is queued
        self.released = False     # a backward released since the last step()
        self.holding = 0          # inside no_release()
        # autograd runs the hooks of CUDA params on its device threads
        self.lock = threading.RLock()
        self.watch(optimizer)
        if ddp is not None:
            ddp.register_comm_hook(ddp.process_group, self._on_ddp_bucket)
            # The reducer then leaves .grad alone at the end of backward
            # instead of copying each reduced bucket into it or pointing it
            # at the bucket (torch's own optimizer-in-backward does the same).
            ddp.reducer._set_optimizer_in_backward()

    def watch(self, optimizer):
        """Maps every param of the optimizer to its place; hooks new ones."""
        self.where = {p: (gi, i) for gi, group in enumerate(optimizer.param_groups)
                      for i, p in enumerate(group["params"])}
        new = [p for p in self.where if p not in self.watched]
        if self.ddp is not None:
            _check_ddp_params(self.ddp, self.where)
            return
        plain = [p for p in new if not isinstance(p, DTensor)]
        if plain and dist.is_available() and dist.is_initialized() \
                and dist.get_world_size() > 1:
            raise ValueError(
                "FusedRMSprop.release_gradients(): torch.distributed runs "
                f"{dist.get_world_size()} ranks and {len(plain)} parameters are plain tensors, "
                "whose gradients, when final in backward, are this rank's own: under "
                "DistributedDataParallel pass the DDP module, release_gradients(ddp_model), "
                "so that updates run after the allreduce")
        for p in new:
            p.register_post_accumulate_grad_hook(self._on_grad)
            self.watched.add(p)

    # -- during backward ---------------------------------------------------

    def _begin(self):
        if self.in_backward:
            return
        if self.released:
            raise RuntimeError(_ACCUMULATION)
        torch.autograd.Variable._execution_engine.queue_callback(self._end_of_backward)
        self.in_backward = self.released = True

    def _on_grad(self, p):
        """A param's gradient is final (post-accumulate-grad hook)."""
        if self.holding or self.optimizer() is None:
            return
        with self.lock:
            self._begin()
            self.pending.append(p)
            self.pending_bytes += local(p.grad).nbytes
            if self.pending_bytes >= self.bucket_bytes:
                self.flush()

    def _on_ddp_bucket(self, process_group, bucket):
        """DDP's comm hook: allreduce (DDP's default: the mean), then update
        the bucket's params with their reduced gradients."""
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

        reduced = allreduce_hook(process_group, bucket)
        reduced.wait()
        with self.lock:
            self._begin()
            for p, grad in zip(bucket.parameters(), bucket.gradients()):
                p.grad = grad  # a view of the reduced bucket
                self.pending.append(p)
            self.flush()
        done = torch.futures.Future()
        done.set_result(bucket.buffer())
        return done

    def _end_of_backward(self):
        with self.lock:
            self.in_backward = False
            self.flush()
            if self.ddp is not None:  # what DDP's reducer put back into .grad
                for p in self.where:
                    p.grad = None

    def flush(self):
        """Updates the pending params and frees their gradients."""
        with self.lock:
            params, self.pending, self.pending_bytes = self.pending, [], 0
            optimizer = self.optimizer()
            if not params or optimizer is None:
                return
            select = {}
            for p in params:
                group_index, i = self.where[p]
                select.setdefault(group_index, []).append(i)
            optimizer._update(select)
            for p in params:
                grad = local(p.grad)  # None after zero_grad() following a failed backward
                if grad is not None and grad.is_cuda:
                    # the update was queued on this stream, which may not be
                    # the one the gradient was made on (FSDP2's reduce-scatter
                    # stream): its memory is not reused before the update ran
                    grad.record_stream(torch.cuda.current_stream(grad.device))
                p.grad = None

    # -- step() ----------------------------------------------------------------

    def end_step(self, closure, optimizer):
        """step() with gradient release: refusals, then the step is closed."""
        if closure is not None:
            raise ValueError(
                "FusedRMSprop.step(closure) with gradient release: the closure's backward "
                "would update the parameters while it runs; call backward() and then step() "
                "without a closure")
        if getattr(optimizer, "grad_scale", None) is not None \
                or getattr(optimizer, "found_inf", None) is not None:
            raise RuntimeError(
                "GradScaler cannot be used with FusedRMSprop's gradient release: its decision "
                "to skip a step needs every gradient, and the parameters are updated during "
                "backward. The last backward pass has already updated them with scaled "
                "gradients. Use bfloat16 autocast (it needs no loss scaling), or an "
                "optimizer without gradient release.")
        with self.lock:
            self.flush()
            # (in_backward too: a backward that raised never ran its callback)
            self.released = self.in_backward = False


def _check_ddp_params(ddp, where):
    ignored = getattr(ddp, "parameters_to_ignore", ())
    managed = {p for name, p in ddp.module.named_parameters()
               if p.requires_grad and name not in ignored}
    outside = [p for p in where if p not in managed]
    if outside:
        raise ValueError(f"FusedRMSprop.release_gradients(ddp): {len(outside)} parameters of "
                         "the optimizer are not managed by this DDP module")
    missing = [p for p in managed if p not in where]
    if missing:
        raise ValueError(
            f"FusedRMSprop.release_gradients(ddp): {len(missing)} parameters that the DDP "
            "module reduces are not in this optimizer; gradient release needs them all in "
            "one optimizer (DDP leaves their reduced gradients out of .grad)")
