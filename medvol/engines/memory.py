"""Memory planning: the largest micro-batch that fits a budget, gradient accumulation, activation checkpointing.

The data loader always delivers the *effective* batch; a trainer splits it into micro-batches of ``micro_batch``
samples and accumulates gradients over ``accumulation_steps = ceil(effective / micro_batch)`` of them, so the
optimiser sees the same batch whatever the plan. Candidates are ``ceil(effective / 2**k)`` (the effective batch, its
half, its quarter, ... 1), so halving after an out-of-memory error lands on the next candidate.

How a plan is chosen (:func:`plan_memory`):

* **CUDA**: real training steps (the trainer's ``probe(micro_batch)``: forward, loss, backward, no optimiser step,
  model state restored afterwards) are run from the largest candidate down; the peak is
  ``torch.cuda.max_memory_allocated`` plus optimiser state not yet allocated; the first candidate whose measured peak
  is within ``budget * (1 - safety_margin)`` wins (an out-of-memory error counts as too large). The budget defaults to
  the device's free memory plus what this process already holds.
* **CPU**: an estimate first, ``static + micro_batch * activation_bytes_per_sample * backward_factor``, where the
  activation bytes come from forward hooks summing every leaf module's output on one sample, and ``static`` is
  parameters + gradients + optimiser state. The largest candidate whose estimate fits is then *measured* with
  :class:`TensorMemoryTracker`: halved while the measurement does not fit, doubled while the per-sample slope of
  the last two measurements says the next candidate may fit and its measurement confirms it. Only measured candidates
  are chosen, so the plan's measured peak never exceeds the budget; the estimate only saves probes. There is no budget on CPU unless one is given (``--max-memory``); without one the whole
  effective batch is used.

Measuring CPU memory: :class:`TensorMemoryTracker` is a ``TorchDispatchMode`` that sees every tensor any operator
(forward, backward, double backward, optimiser) creates, records each new storage with a weak reference and its
size, and after each operator drops the storages that were freed: the running sum is the bytes of tensors alive
that were allocated inside the window, its maximum the peak. It counts exactly what PyTorch's allocator is asked
for (not allocator caching or Python objects), the CPU analogue of ``torch.cuda.max_memory_allocated``; process RSS
was rejected because glibc keeps freed pages and the numbers drift with whatever else the process did.

During training an out-of-memory error halves the micro-batch (see the trainers); the plan is rewritten with the new
micro-batch and an ``oom_events`` entry. "Out of memory" (:func:`is_out_of_memory`) is ``torch.OutOfMemoryError`` and
the allocation failures that reach Python as a plain ``RuntimeError``: cuBLAS/cuDNN workspace allocations
(``CUBLAS_STATUS_ALLOC_FAILED``), ``CUDA error: out of memory`` from outside PyTorch's allocator, and kernels that
refuse tensors beyond 32-bit indexing (3D upsampling at 128^3 with a large micro-batch); a smaller micro-batch cures
all of them. Every other error is raised as it is. ``torch.cuda.empty_cache()`` runs only after the ``except`` block
has ended, when the traceback, and with it the failed step's activations, has been released.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.checkpoint import checkpoint as activation_checkpoint

from medvol.engines.checkpoint import atomic_write_bytes

__all__ = [
    "MemoryPlan",
    "TensorMemoryTracker",
    "plan_memory",
    "candidate_micro_batches",
    "static_training_bytes",
    "activation_bytes_per_sample",
    "apply_activation_checkpointing",
    "parse_memory_budget",
    "batch_norm_layers",
    "is_out_of_memory",
    "release_cached_memory",
    "OptimizerUpdateWatch",
    "UnrepeatableStepError",
]

logger = logging.getLogger(__name__)

GIB = 1024**3

# allocation failures that PyTorch raises as a plain RuntimeError (lower case); a smaller micro-batch avoids each
_ALLOCATION_FAILURES = (
    "out of memory",  # "CUDA error: out of memory" (cudaMalloc outside the caching allocator, e.g. a cuDNN workspace)
    "cublas_status_alloc_failed",
    "cudnn_status_alloc_failed",
    "can't allocate memory",  # the CPU allocator
    "canuse32bitindexmath",
    "32-bit index math",
)


class UnrepeatableStepError(MemoryError):
    """Out of memory inside an optimiser's update after it had begun changing weights or optimiser state: the step can
    neither be finished nor repeated (repeating it would apply part of the update twice)."""


def is_out_of_memory(error: BaseException) -> bool:
    """Whether `error` means "this micro-batch does not fit": ``torch.OutOfMemoryError``, or a ``RuntimeError`` of an
    allocation failure or a 32-bit index limit (see the module docstring); False for every other error."""
    if isinstance(error, UnrepeatableStepError):
        return False
    if isinstance(error, torch.OutOfMemoryError):
        return True
    if not isinstance(error, RuntimeError):
        return False
    text = str(error).lower()
    return any(marker in text for marker in _ALLOCATION_FAILURES)


def release_cached_memory(device: str | torch.device) -> None:
    """Give the CUDA caching allocator's free blocks back to the device (no-op elsewhere). Call it after the
    ``except`` block of an out-of-memory error: inside it, the traceback still holds the failed step's tensors."""
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


class OptimizerUpdateWatch:
    """Tells whether a failed ``optimizer.step()`` had begun its update, from the version counters of the parameters
    and of the optimiser state (every in-place change bumps them), and forgets optimiser state that the failed step
    created (e.g. Adam's moments on its first step), so that a repeated step starts from the state before it.

    Example::

        watch = OptimizerUpdateWatch(optimizer)
        try:
            optimizer.step()
        except torch.OutOfMemoryError:
            if watch.update_began():
                raise UnrepeatableStepError(...)
            watch.forget_new_state()

    Args:
        optimizer: the optimiser, before its step.
    """

    def __init__(self, optimizer: torch.optim.Optimizer):
        self.optimizer = optimizer
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self.versions = [p._version for p in self.params]
        self.had_state = {id(p) for p in self.params if p in optimizer.state}
        self.state_versions = [
            (value, value._version)
            for p in self.params if p in optimizer.state
            for value in optimizer.state[p].values() if isinstance(value, torch.Tensor)
        ]

    def update_began(self) -> bool:
        """Whether a parameter or an existing optimiser-state tensor changed since the watch was made."""
        if any(p._version != version for p, version in zip(self.params, self.versions)):
            return True
        return any(value._version != version for value, version in self.state_versions)

    def forget_new_state(self) -> None:
        """Remove the optimiser state of parameters that had none before the step."""
        for p in self.params:
            if id(p) not in self.had_state:
                self.optimizer.state.pop(p, None)


@dataclasses.dataclass
class MemoryPlan:
    """How a run uses memory; written to ``RUN/plan.json``.

    Attributes:
        micro_batch: samples per forward/backward pass.
        accumulation_steps: micro-batches accumulated per optimiser step (``ceil(effective_batch / micro_batch)``).
        effective_batch: samples per optimiser step (the data loader's batch size).
        precision: ``fp32``, ``bf16`` or ``fp16``.
        precision_reason: why that precision (``"requested"`` or what ``auto`` found on the device).
        checkpointing: whether activation checkpointing is applied to the networks.
        estimated_peak_bytes: the planner's estimate for ``micro_batch`` (None when not estimated).
        measured_peak_bytes: the peak measured on a real step at ``micro_batch`` (None when not measured).
        budget_bytes: the budget the plan was made for (None: unlimited).
        device: the device the plan is for.
        safety_margin: fraction of the budget kept free.
        method: ``cuda-probe``, ``cpu-estimate`` or ``fixed`` (given by the user).
        probes: every candidate tried, with its estimate / measurement and verdict.
        oom_events: out-of-memory back-offs that happened during training.
        batch_norm: why the micro-batch is the whole effective batch when the networks hold batch norm (None
            without batch norm); see :func:`batch_norm_layers`.
    """

    micro_batch: int
    accumulation_steps: int
    effective_batch: int
    precision: str = "fp32"
    precision_reason: str | None = None
    checkpointing: bool = False
    estimated_peak_bytes: int | None = None
    measured_peak_bytes: int | None = None
    budget_bytes: int | None = None
    device: str = "cpu"
    safety_margin: float = 0.15
    method: str = "fixed"
    probes: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    oom_events: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    batch_norm: str | None = None

    @classmethod
    def fixed(cls, effective_batch: int, micro_batch: int | None = None, **kwargs: Any) -> MemoryPlan:
        """A plan given by the user: ``micro_batch`` (default: the whole effective batch) without probing."""
        micro = effective_batch if micro_batch is None else max(1, min(int(micro_batch), effective_batch))
        return cls(micro_batch=micro, accumulation_steps=math.ceil(effective_batch / micro), effective_batch=effective_batch, **kwargs)

    def halved(self, reason: str, iteration: int) -> MemoryPlan:
        """The plan after an out-of-memory error: half the micro-batch, same effective batch."""
        if self.micro_batch <= 1:
            raise ValueError("the micro-batch is already 1 and cannot be halved")
        micro = math.ceil(self.micro_batch / 2)
        event = {"iteration": iteration, "from": self.micro_batch, "to": micro, "reason": reason}
        return dataclasses.replace(
            self,
            micro_batch=micro,
            accumulation_steps=math.ceil(self.effective_batch / micro),
            measured_peak_bytes=None,
            oom_events=[*self.oom_events, event],
        )

    def agreed_across_ranks(self) -> MemoryPlan:
        """The plan every distributed rank can run: the smallest micro-batch any rank planned (all ranks must do the
        same number of backward passes, or DistributedDataParallel's gradient all-reduce waits forever), with
        activation checkpointing when any rank needed it. One collective, after every rank finished probing (the
        probes run no collective). Without an initialised process group of more than one rank, the plan itself."""
        distributed = torch.distributed
        if not (distributed.is_available() and distributed.is_initialized()) or distributed.get_world_size() == 1:
            return self
        device = torch.device(self.device) if distributed.get_backend() == "nccl" else "cpu"  # the training GPU
        smallest = torch.tensor([self.micro_batch, -int(self.checkpointing)], dtype=torch.int64, device=device)
        distributed.all_reduce(smallest, op=distributed.ReduceOp.MIN)
        micro, checkpointing = int(smallest[0].item()), bool(-smallest[1].item())
        if micro == self.micro_batch and checkpointing == self.checkpointing:
            return self
        return dataclasses.replace(
            self, micro_batch=micro, accumulation_steps=math.ceil(self.effective_batch / micro), checkpointing=checkpointing
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | os.PathLike) -> None:
        """Write the plan as JSON (atomically)."""
        atomic_write_bytes(path, json.dumps(self.to_dict(), indent=2).encode())

    @classmethod
    def load(cls, path: str | os.PathLike) -> MemoryPlan:
        return cls(**json.loads(Path(path).read_text()))


def parse_memory_budget(max_memory_gb: float | str | None) -> int | None:
    """``--max-memory`` in GiB (a number or a string such as ``"6"`` / ``"6GB"``) as bytes; None stays None."""
    if max_memory_gb is None:
        return None
    text = str(max_memory_gb).strip().lower().removesuffix("gib").removesuffix("gb").removesuffix("g")
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"the memory budget must be positive, got {max_memory_gb!r}")
    return int(value * GIB)


def candidate_micro_batches(effective_batch: int) -> list[int]:
    """``ceil(effective / 2**k)`` for k = 0, 1, ... down to 1, largest first, without repeats."""
    candidates, k = [], 0
    while True:
        micro = math.ceil(effective_batch / 2**k)
        if not candidates or micro != candidates[-1]:
            candidates.append(micro)
        if micro == 1:
            return candidates
        k += 1


class TensorMemoryTracker(TorchDispatchMode):
    """Peak bytes of tensors allocated (and still alive) inside the ``with`` block, on any device.

    Example::

        with TensorMemoryTracker() as tracker:
            loss = model(x).mean(); loss.backward()
        tracker.peak_bytes
    """

    def __init__(self):
        super().__init__()
        self._live: dict[tuple[str, int], tuple[StorageWeakRef, int]] = {}
        self.current_bytes = 0
        self.peak_bytes = 0

    def _forget_freed(self) -> None:
        freed = [key for key, (ref, _) in self._live.items() if ref.expired()]
        for key in freed:
            self.current_bytes -= self._live.pop(key)[1]

    @property
    def live_bytes(self) -> int:
        """Bytes of tensors allocated inside the window that are still alive now."""
        self._forget_freed()
        return self.current_bytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self._forget_freed()
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor) and value.device.type != "meta":
                storage = value.untyped_storage()
                key = (str(value.device), storage.data_ptr())
                if key[1] and key not in self._live:
                    self._live[key] = (StorageWeakRef(storage), storage.nbytes())
                    self.current_bytes += storage.nbytes()
        self.peak_bytes = max(self.peak_bytes, self.current_bytes)
        return out


def batch_norm_layers(networks: Sequence[nn.Module]) -> list[str]:
    """Names (``network.layer``, networks numbered from 0) of the batch-norm layers in `networks`.

    Batch norm normalises with the statistics of the batch it sees, so a step split into micro-batches is a different
    computation (issue 9 measured a DCGAN trained with micro-batch 1 instead of 4 ending 4e-4 away in its weights),
    and an FC generator's ``BatchNorm1d`` cannot run a micro-batch of 1 at all ("Expected more than 1 value per
    channel"). The trainers therefore never split the effective batch of networks that hold batch norm
    (:attr:`MemoryPlan.batch_norm` says so in ``plan.json``); the effective batch is what must fit in memory.
    """
    return [
        f"{index}.{name}" if name else str(index)
        for index, network in enumerate(networks)
        for name, module in network.named_modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm)
    ]


def _tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


_OPTIMIZER_STATE_PER_PARAM = {"Adam": 2, "AdamW": 2, "NAdam": 2, "RAdam": 2, "Adamax": 2, "RMSprop": 1, "Adagrad": 1}


def static_training_bytes(networks: Sequence[nn.Module], optimizers: Sequence[torch.optim.Optimizer] = ()) -> int:
    """Parameters + gradients + optimiser state (measured when allocated, else estimated from the optimiser type)."""
    params = [p for net in networks for p in net.parameters()]
    total = 2 * _tensor_bytes(params)
    for opt in optimizers:
        state_tensors = [v for s in opt.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
        if state_tensors:
            total += _tensor_bytes(state_tensors)
        else:
            per_param = _OPTIMIZER_STATE_PER_PARAM.get(type(opt).__name__, 1)
            opt_params = [p for group in opt.param_groups for p in group["params"]]
            total += per_param * _tensor_bytes(opt_params)
    return total


def activation_bytes_per_sample(forward: Callable[[int], Any], networks: Sequence[nn.Module]) -> int:
    """Bytes of every leaf module's output during ``forward(1)`` (one sample), via forward hooks.

    Args:
        forward: runs the networks' forward pass on a micro-batch of the given size.
        networks: the modules whose leaf outputs count.
    """
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        total += _tensor_bytes(t for t in tree_flatten(output)[0] if isinstance(t, torch.Tensor))

    handles = [
        m.register_forward_hook(hook) for net in networks for m in net.modules() if not list(m.children())
    ]
    try:
        with torch.no_grad():
            forward(1)
    finally:
        for handle in handles:
            handle.remove()
    return total


def _measure_cuda(probe: Callable[[int], None], micro_batch: int, device: torch.device) -> int:
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    probe(micro_batch)
    torch.cuda.synchronize(device)
    return int(torch.cuda.max_memory_allocated(device))


def _measure_tracked(probe: Callable[[int], None], micro_batch: int) -> int:
    with TensorMemoryTracker() as tracker:
        probe(micro_batch)
    return tracker.peak_bytes


def plan_memory(
    probe: Callable[[int], None],
    effective_batch: int,
    *,
    device: str | torch.device = "cpu",
    budget_bytes: int | None = None,
    precision: str = "fp32",
    checkpointing: bool = False,
    safety_margin: float = 0.15,
    static_bytes: int = 0,
    unallocated_optimizer_bytes: int = 0,
    activation_forward: Callable[[int], Any] | None = None,
    networks: Sequence[nn.Module] = (),
    backward_factor: float = 3.0,
    smallest_micro_batch: int = 1,
) -> MemoryPlan:
    """Choose the largest micro-batch whose peak memory fits ``budget_bytes * (1 - safety_margin)``.

    Args:
        probe: ``probe(micro_batch)`` runs one full training step's computation at that micro-batch (forward, loss,
            backward, no optimiser step) and leaves the model as it found it.
        effective_batch: samples per optimiser step.
        device: the training device.
        budget_bytes: memory allowed for training; None: free CUDA memory (plus what this process holds) on CUDA,
            unlimited on CPU.
        precision: recorded in the plan (the probe must already run in it).
        checkpointing: recorded in the plan (the probe must already run with it).
        safety_margin: fraction of the budget kept free for fragmentation and what the probe does not see.
        static_bytes: parameters + gradients + optimiser state (:func:`static_training_bytes`); added to the CPU
            estimate and measurement (the tracker sees only tensors allocated inside the probe).
        unallocated_optimizer_bytes: optimiser state that does not exist yet (before the first step); added to CUDA
            measurements.
        activation_forward: ``activation_forward(micro_batch)`` runs the forward passes of one step, for the CPU
            estimate; None skips the estimate and measures every candidate.
        networks: the modules whose leaf outputs :func:`activation_bytes_per_sample` counts.
        backward_factor: activation bytes times this estimates forward + backward (3 covers a gradient penalty's
            double backward).
        smallest_micro_batch: no candidate below this (the effective batch for batch-norm networks: no split).

    Returns:
        The :class:`MemoryPlan`.

    Raises:
        MemoryError: when not even a micro-batch of 1 fits the budget.
    """
    device = torch.device(device)
    if device.type == "cuda" and budget_bytes is None:
        free, _ = torch.cuda.mem_get_info(device)
        budget_bytes = int(free + torch.cuda.memory_allocated(device))
    base = dict(
        effective_batch=effective_batch,
        precision=str(precision),
        checkpointing=bool(checkpointing),
        budget_bytes=budget_bytes,
        device=str(device),
        safety_margin=safety_margin,
    )
    if budget_bytes is None:
        return MemoryPlan.fixed(method="no-budget", **base)
    usable = budget_bytes * (1.0 - safety_margin)
    probes: list[dict[str, Any]] = []
    candidates = [m for m in candidate_micro_batches(effective_batch) if m >= min(smallest_micro_batch, effective_batch)]

    if device.type == "cuda":
        for micro in candidates:
            failure = None
            try:
                measured = _measure_cuda(probe, micro, device) + unallocated_optimizer_bytes
            except RuntimeError as error:
                if not is_out_of_memory(error):
                    raise
                failure = str(error).splitlines()[0][:200] if str(error) else "out of memory"
            if failure is not None:
                release_cached_memory(device)
                probes.append({"micro_batch": micro, "measured_bytes": None, "fits": False, "note": failure})
                continue
            fits = measured <= usable
            probes.append({"micro_batch": micro, "measured_bytes": measured, "fits": fits})
            if fits:
                return MemoryPlan(
                    micro_batch=micro, accumulation_steps=math.ceil(effective_batch / micro),
                    measured_peak_bytes=measured, method="cuda-probe", probes=probes, **base,
                )
        raise MemoryError(_does_not_fit(budget_bytes, safety_margin, probes))

    per_sample = activation_bytes_per_sample(activation_forward, networks) if activation_forward is not None else None
    estimates = {m: (None if per_sample is None else int(static_bytes + m * per_sample * backward_factor)) for m in candidates}
    measured: dict[int, int] = {}

    def measure(micro: int) -> bool:
        measured[micro] = static_bytes + _measure_tracked(probe, micro)
        probes.append({"micro_batch": micro, "estimated_bytes": estimates[micro], "measured_bytes": measured[micro], "fits": measured[micro] <= usable})
        return measured[micro] <= usable

    # start at the largest candidate the estimate admits, then let measurements decide: down while too large,
    # up while the measured per-sample slope says the next larger candidate may fit
    index = next((i for i, m in enumerate(candidates) if estimates[m] is None or estimates[m] <= usable), len(candidates) - 1)
    while not measure(candidates[index]):
        if index == len(candidates) - 1:
            raise MemoryError(_does_not_fit(budget_bytes, safety_margin, probes))
        index += 1
    while index > 0:
        fitted, larger = candidates[index], candidates[index - 1]
        smaller = candidates[index + 1] if index + 1 < len(candidates) else None
        if smaller in measured:  # two measurements: extrapolate the per-sample slope before probing further
            slope = (measured[fitted] - measured[smaller]) / (fitted - smaller)
            if measured[fitted] + slope * (larger - fitted) > usable:
                break
        if not measure(larger):
            break
        index -= 1
    chosen = candidates[index]
    return MemoryPlan(
        micro_batch=chosen, accumulation_steps=math.ceil(effective_batch / chosen),
        estimated_peak_bytes=estimates[chosen], measured_peak_bytes=measured[chosen], method="cpu-estimate",
        probes=probes, **base,
    )


def _human_bytes(count: int) -> str:
    for unit, size in (("GiB", GIB), ("MiB", 1024**2), ("KiB", 1024)):
        if count >= size:
            return f"{count / size:.2f} {unit}"
    return f"{count} B"


def _does_not_fit(budget_bytes: int, safety_margin: float, probes: list[dict[str, Any]]) -> str:
    smallest = probes[-1] if probes else {}
    need = smallest.get("measured_bytes") or smallest.get("estimated_bytes")
    need_text = _human_bytes(need) if need else "more than the device has"
    return (
        f"not even a micro-batch of 1 fits the memory budget of {_human_bytes(budget_bytes)} "
        f"(with a {safety_margin:.0%} safety margin); one sample needs {need_text}. "
        "Use a smaller image size, activation checkpointing, bf16 precision or a larger --max-memory."
    )


_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def _checkpointed_forward(original_forward, *args, **kwargs):
    if not torch.is_grad_enabled():
        return original_forward(*args, **kwargs)
    return activation_checkpoint(original_forward, *args, use_reentrant=False, **kwargs)


def _has_conv(module: nn.Module) -> bool:
    return any(isinstance(m, _CONV_TYPES) for m in module.modules())


def apply_activation_checkpointing(network: nn.Module) -> list[str]:
    """Recompute the activations of every convolutional block in the backward pass instead of storing them.

    A *block* is a child module holding convolutions: a custom module (a residual block), or a ``Sequential`` of
    plain layers (conv, norm, activation). A ``Sequential`` whose children are themselves such blocks, and every
    ``ModuleList``/``ModuleDict``, is descended into so that each of its blocks becomes one checkpointed segment.
    The block's ``forward`` is wrapped with non-reentrant ``torch.utils.checkpoint`` (which supports the gradient
    penalty's double backward) and only while gradients are enabled; parameters and ``state_dict`` keys do not
    change. Batch-norm layers inside a block see their forward twice, so their running statistics move twice per
    step. The saving is in plain backward passes (generator step, autoencoders, the critic's real/fake terms); a
    gradient penalty's ``create_graph`` backward keeps the recomputed activations for its second backward, so the
    penalty term itself does not get smaller.

    Returns:
        The names of the wrapped modules.
    """
    wrapped: list[str] = []
    if isinstance(network, nn.parallel.DistributedDataParallel):
        network = network.module  # its blocks, not the wrapper's one child (the whole network as one segment)

    def visit(module: nn.Module, prefix: str) -> None:
        for name, child in module.named_children():
            full = f"{prefix}{name}"
            if not _has_conv(child) or getattr(child, "_medvol_checkpointed", False):
                continue
            composite = any(_has_conv(g) and not isinstance(g, _CONV_TYPES) for g in child.children())
            if isinstance(child, (nn.ModuleList, nn.ModuleDict)) or (isinstance(child, nn.Sequential) and composite):
                visit(child, f"{full}.")
                continue
            child.forward = functools.partial(_checkpointed_forward, child.forward)
            child._medvol_checkpointed = True
            wrapped.append(full)

    visit(network, "")
    return wrapped
