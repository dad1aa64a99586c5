"""Adversarial and autoencoder trainers on ``monai.engines.Trainer`` (ignite), with mixed precision, micro-batching,
out-of-memory back-off, crash-safe checkpoints with exact resume, and guards.

Iterations and epochs: **one ignite iteration is one generator step** (for the autoencoder: one optimiser step). In
that iteration the adversarial trainer takes ``critic_steps`` effective batches from the data stream, one fresh real
batch and freshly generated fakes per critic step, then does one generator step on a fresh latent batch.
``epoch_length`` defaults to ``len(loader) // critic_steps`` (so one ignite epoch is about one pass over the data)
and ``max_epochs`` counts those; ``max_iterations`` instead stops after that many generator steps (ignite's
``max_iters``) and is what ``medvol train --iterations N`` uses.

Batches: the loader's batch size is the **effective batch** (samples per optimiser step). Each step is split into
micro-batches of ``plan.micro_batch`` with gradients accumulated (losses weighted by micro-batch share), so the
optimiser sees the same batch whatever the memory plan. An out-of-memory error inside a step
(:func:`medvol.engines.memory.is_out_of_memory`) zeroes the gradients, resets the gradient scalers' record of the
step, halves the micro-batch (same effective batch, more accumulation), rewrites ``plan.json`` and repeats the step
with the same data and latents; the iteration count is untouched. An error inside the optimiser's update after it had
begun changing weights is never repeated (:class:`~medvol.engines.memory.UnrepeatableStepError`). Networks with batch
norm are the exception: their statistics come from the batch, so they always run the whole effective batch (a smaller
micro-batch is refused with a warning and ``plan.json`` says why; an out-of-memory error is then not answered by a
split).

Randomness: every random draw of an iteration (latents, sampled labels, the gradient penalty's mixing weights, label
flips, dropout) comes from this rank's stream for that iteration (:meth:`MedvolTrainer.rank_random_stream`), so the
ranks of a distributed run draw different samples and a resume continues every rank's stream exactly. The critic
augmentation of :class:`GenerativeAdversarialTrainer` draws from a stream of its own, seeded the same way.

Events: MONAI's ``IterationEvents`` fire as usual: ``INNER_ITERATION_STARTED/COMPLETED`` around each critic step,
``FORWARD_COMPLETED`` / ``LOSS_COMPLETED`` / ``BACKWARD_COMPLETED`` per optimiser step and ``MODEL_COMPLETED`` at the
end of the iteration. ``engine.state.output`` is a dict of floats (``g_loss``, ``d_loss`` as MONAI's ``GanKeys``, and
every term the objectives log, as ``critic/<term>`` and ``generator/<term>``), plus detached ``reals``/``fakes``, so
``StatsHandler(output_transform=lambda output: output["g_loss"])``, ``TensorBoardStatsHandler``,
``CheckpointSaver(save_dict=trainer.networks)`` and ``ValidationHandler`` attach as to any MONAI trainer.

How to construct (Python; a bundle writes the same with ``_target_``)::

    trainer = GenerativeAdversarialTrainer(
        device="cuda", train_data_loader=loader,              # loader batch size = effective batch
        generator=g, critic=d, g_optimizer=opt_g, d_optimizer=opt_d,
        objective=WassersteinGradientPenalty(),               # medvol.objectives; critic_steps from it by default
        max_iterations=20000, precision="auto", ema_decay=0.999,
        run_dir="RUN", checkpoint_every=500, memory_plan="auto", max_memory_gb=None,
        monitor=TrainingMonitor(run_dir="RUN", sample_interval=500),   # TensorBoard, sample PNGs, progress bar
    )
    trainer.run()         # resumes from RUN/checkpoints when it holds a checkpoint

.. code-block:: yaml

    trainer:
      _target_: medvol.engines.GenerativeAdversarialTrainer
      device: "$torch.device('cuda')"
      train_data_loader: "@train_loader"
      generator: "@generator"
      critic: "@critic"
      g_optimizer: "@g_optimizer"
      d_optimizer: "@d_optimizer"
      objective: "@objective"
      max_iterations: 20000
      run_dir: "@run_dir"
      checkpoint_every: 500
      memory_plan: auto
      monitor:
        _target_: medvol.engines.TrainingMonitor
        run_dir: "@run_dir"
        sample_interval: 500

Resume: ``run()`` looks in ``run_dir/checkpoints`` (or ``checkpoint_dir``) and, when ``resume`` is True and a
checkpoint exists, restores networks, optimisers, gradient scalers, the EMA generator, the memory plan, the data
stream position, the iteration/epoch counters and, last, the torch/CUDA/numpy/Python RNG states (rank 0's; other
ranks seed theirs from the seed, their rank and the iteration), then lets ignite continue from that iteration. With deterministic algorithms on CPU a resumed run ends with bitwise the same weights as
an uninterrupted one (data order depends only on the seed and the pass; see :mod:`medvol.engines.stream`).
Randomness inside data-loader workers (random augmentation with ``num_workers > 0``) is not part of that promise.

Interruption: during ``run()`` SIGINT (Ctrl-C) and SIGTERM only ask training to stop; the current iteration finishes,
its checkpoint is written and :class:`TrainingInterrupted` (a ``KeyboardInterrupt`` with ``exit_code`` 130 / 143 and a
one-line message saying where the checkpoint is) is raised; ``request_stop()`` does the same from code. Under
DistributedDataParallel the ranks all-reduce the stop flag, so all stop after the same iteration: after every
iteration with gloo (CPU), after every 10th with NCCL (``STOP_SYNC_EVERY_NCCL``: reading the flag back waits for the
GPU to finish its queued work, so it is not done every iteration).

Export: when training ends, ``run_dir/models/model.pt`` receives the weights sampling needs as a plain ``state_dict``
(the EMA generator when there is one, else the generator; the autoencoder), and ``run.json``, when present, names it.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim import Optimizer

from monai.engines import Trainer
from monai.engines.utils import IterationEvents
from monai.utils import GanKeys, IgniteInfo, min_version, optional_import

from medvol.engines.amp import (
    AutocastModule,
    configure_cudnn,
    forget_unfinished_step,
    make_grad_scaler,
    resolve_precision,
)
from medvol.engines.checkpoint import CheckpointManager, capture_rng_state, restore_rng_state, seed_cuda_device
from medvol.engines.distributed import unwrapped, without_ddp_prefix
from medvol.engines.guards import AdversarialHealth, check_finite
from medvol.engines.memory import (
    MemoryPlan,
    OptimizerUpdateWatch,
    TensorMemoryTracker,
    UnrepeatableStepError,
    apply_activation_checkpointing,
    batch_norm_layers,
    is_out_of_memory,
    parse_memory_budget,
    plan_memory,
    release_cached_memory,
    static_training_bytes,
)
from medvol.engines.stream import BatchStream
from medvol.errors import MedvolInputError
from medvol.transforms.differentiable import AugmentedCritic, CriticAugmentation

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = [
    "MedvolTrainer", "GenerativeAdversarialTrainer", "AutoencoderTrainer", "TrainingInterrupted", "default_prepare_batch"
]

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
MODEL_EXPORT = Path("models") / "model.pt"  # the model zoo's name for a bundle's trained weights


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on SIGINT (Ctrl-C) or SIGTERM (e.g. cluster preemption) after its last completed iteration
    was checkpointed; running the same training again resumes there.

    A `KeyboardInterrupt`, so that ``except Exception`` blocks let it through, as they let Ctrl-C through.

    Attributes:
        signal: the signal received.
        iteration: the last completed iteration.
        checkpoint: the checkpoint holding it (None without a checkpoint folder).
        exit_code: ``128 + signal``: 130 for SIGINT, 143 for SIGTERM, as a shell reports a process the signal ended.
    """

    def __init__(self, signum: int, iteration: int, checkpoint: str | None):
        self.signal = signal.Signals(signum)
        self.iteration = int(iteration)
        self.checkpoint = checkpoint
        self.exit_code = 128 + int(signum)
        where = f"checkpoint saved to {checkpoint}; rerun the same command to resume" if checkpoint else "nothing was saved"
        super().__init__(f"interrupted ({self.signal.name}) at iteration {self.iteration}; {where}")


def default_prepare_batch(batch: Any, device: torch.device, non_blocking: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(images float32 [B, C, ...], labels long [B] or None)`` from a ``{"image", "label"}`` dict or a tensor."""
    if isinstance(batch, Mapping):
        images, labels = batch["image"], batch.get("label")
    elif isinstance(batch, (tuple, list)):
        images, labels = batch[0], (batch[1] if len(batch) > 1 else None)
    else:
        images, labels = batch, None
    if hasattr(images, "as_tensor"):
        images = images.as_tensor()
    images = torch.as_tensor(images).to(device=device, dtype=torch.float32, non_blocking=non_blocking)
    if labels is not None:
        labels = torch.as_tensor(labels).to(device=device, dtype=torch.long, non_blocking=non_blocking).reshape(-1)
    return images, labels


def ema_warmup_decay(decay: float, iteration: int) -> float:
    """EMA decay at `iteration` (1-based): ``min(decay, (1 + iteration) / (10 + iteration))``.

    Args:
        decay: the decay the average settles at.
        iteration: generator steps done, this one included.
    """
    return min(decay, (1.0 + iteration) / (10.0 + iteration))


def _micro_slices(n: int, micro_batch: int) -> list[slice]:
    return [slice(start, min(start + micro_batch, n)) for start in range(0, n, micro_batch)]


def process_rank() -> tuple[int, int]:
    """``(rank, world size)`` of this process: ``(0, 1)`` without an initialised process group."""
    distributed = torch.distributed
    if distributed.is_available() and distributed.is_initialized():
        return distributed.get_rank(), distributed.get_world_size()
    return 0, 1


def step_seed(seed: int, rank: int, iteration: int, stream: int = 0) -> int:
    """The seed of rank `rank`'s random stream `stream` in iteration `iteration` (well mixed, 63 bits); stream 0
    drives the training steps, stream 1 the global generators of a resumed rank other than 0, stream 2 the critic
    augmentation."""
    words = [int(value) & (2**64 - 1) for value in (seed, rank, iteration, stream)]
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0] >> 1)


class MedvolTrainer(Trainer):
    """Shared machinery of the medvol trainers (not used directly).

    Args:
        device: training device.
        train_data_loader: yields effective batches (``{"image": [B, C, ...], "label": [B]}`` dicts or tensors).
        networks: name -> module, everything checkpointed and planned for.
        optimizers: name -> optimiser (same names as the scalers).
        batches_per_iteration: loader batches one iteration consumes.
        max_epochs: ignite epochs to run (ignored when ``max_iterations`` is given).
        epoch_length: iterations per ignite epoch (default ``len(loader) // batches_per_iteration``).
        max_iterations: total iterations; when given, ignite runs in ``max_iters`` mode.
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16`` (see :mod:`medvol.engines.amp`).
        memory_plan: a :class:`MemoryPlan`, a path to a ``plan.json``, ``"auto"`` (plan at the start of ``run``) or
            None (whole effective batch, no accumulation).
        micro_batch: fixed micro-batch (overrides ``memory_plan``).
        max_memory_gb: budget for ``memory_plan="auto"`` in GiB (None: free GPU memory; unlimited on CPU).
        activation_checkpointing: ``True``, ``False`` or ``"auto"`` (3D networks, when the plan cannot take the
            whole effective batch without it).
        run_dir: run folder; when given: ``checkpoints/``, ``plan.json``, and (with a monitor) ``tensorboard/``,
            ``samples/``.
        checkpoint_dir: checkpoint folder (default ``run_dir/checkpoints``).
        checkpoint_every: save every this many iterations (0: only at the end); needs a checkpoint folder.
        keep_last: checkpoints kept.
        best_metric: ranks checkpoints to keep the best one as well: a key of ``engine.state.output`` (e.g.
            ``"autoencoder/loss"``) or a function of the trainer returning a number; None: no best.
        best_mode: ``"min"`` or ``"max"`` (whether a lower or higher ``best_metric`` is better).
        resume: continue from the latest checkpoint when there is one.
        seed: seeds the data order (see :class:`BatchStream`); set global RNGs yourself (``monai.utils.set_determinism``).
        prepare_batch: ``prepare_batch(batch, device, non_blocking) -> (images, labels | None)``.
        train_handlers: MONAI/ignite handlers (anything with ``attach(engine)``).
        monitor: a :class:`medvol.engines.monitoring.TrainingMonitor` (or True: one with defaults in ``run_dir``).
        oom_injector: test hook ``f(trainer, micro_batch)`` called before each micro-batch; may raise
            ``torch.OutOfMemoryError``.
        non_blocking: non-blocking host-to-device copies.
        cudnn_benchmark: on CUDA, autotune cuDNN's convolution algorithms (faster 3D convolutions, no longer bitwise
            reproducible; overrides ``set_determinism``, see :func:`medvol.engines.amp.configure_cudnn`). Default False.
    """

    def __init__(
        self,
        device: str | torch.device,
        train_data_loader: Any,
        networks: Mapping[str, nn.Module],
        optimizers: Mapping[str, Optimizer],
        *,
        batches_per_iteration: int = 1,
        max_epochs: int = 1,
        epoch_length: int | None = None,
        max_iterations: int | None = None,
        precision: str = "auto",
        memory_plan: MemoryPlan | str | os.PathLike | None = None,
        micro_batch: int | None = None,
        max_memory_gb: float | None = None,
        activation_checkpointing: bool | str = False,
        run_dir: str | os.PathLike | None = None,
        checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_every: int = 0,
        keep_last: int = 3,
        best_metric: str | Callable[[Any], float] | None = None,
        best_mode: str = "min",
        resume: bool = True,
        seed: int = 0,
        prepare_batch: Callable = default_prepare_batch,
        train_handlers: Sequence | None = None,
        monitor: Any = None,
        oom_injector: Callable[[Any, int], None] | None = None,
        non_blocking: bool = False,
        cudnn_benchmark: bool = False,
    ):
        device = torch.device(device)
        self.stream = BatchStream(train_data_loader, seed=seed)
        if epoch_length is None:
            try:
                epoch_length = max(1, len(train_data_loader) // batches_per_iteration)
            except TypeError as error:
                raise ValueError("epoch_length is required for a data loader without a length") from error
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            data_loader=self.stream,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=prepare_batch,
            decollate=False,
            amp=False,
        )
        self.train_data_loader = train_data_loader
        self.networks = dict(networks)
        self.optimizers = dict(optimizers)
        self.batches_per_iteration = batches_per_iteration
        self.max_iterations = max_iterations
        if max_iterations is not None:
            self.state.max_epochs = None
        self.precision, self.precision_reason = resolve_precision(precision, device)
        self.scalers = {name: make_grad_scaler(self.precision, device) for name in self.optimizers}
        self.run_dir = None if run_dir is None else Path(run_dir)
        if checkpoint_dir is None and self.run_dir is not None:
            checkpoint_dir = self.run_dir / "checkpoints"
        self.checkpoints = (
            None if checkpoint_dir is None else CheckpointManager(checkpoint_dir, keep_last=keep_last, best_mode=best_mode)
        )
        self.best_metric = best_metric
        self.checkpoint_every = int(checkpoint_every)
        self.resume = resume
        self.oom_injector = oom_injector
        self.max_memory_gb = max_memory_gb
        self.activation_checkpointing = activation_checkpointing
        self._requested_plan = memory_plan
        self._requested_micro_batch = micro_batch
        self.plan: MemoryPlan | None = None
        self.last_checkpoint: str | None = None
        self._last_saved_iteration = -1
        self.state.resumed_from = None
        self.state.iteration_seconds = float("nan")
        self.state.samples_per_second = float("nan")
        self._stop_signal: int | None = None
        self.seed = int(seed)
        self.cudnn_benchmark = bool(cudnn_benchmark)
        self.rank, self.world_size = process_rank()

        self.add_event_handler(Events.ITERATION_COMPLETED, self._save_periodic_checkpoint)
        self.add_event_handler(Events.ITERATION_COMPLETED, self._stop_when_signalled)
        self.add_event_handler(Events.COMPLETED, self._save_final_checkpoint)
        self.add_event_handler(Events.COMPLETED, self._export_model)
        if monitor is True:
            from medvol.engines.monitoring import TrainingMonitor

            monitor = TrainingMonitor(run_dir=self.run_dir)
        self.monitor = monitor or None
        if self.monitor is not None:
            self.monitor.attach(self)
        if train_handlers is not None:
            self._register_handlers(train_handlers)

    # ---- subclass interface -------------------------------------------------------------------------------------
    @property
    def effective_batch(self) -> int:
        batch_size = getattr(self.train_data_loader, "batch_size", None)
        if batch_size is None:
            raise ValueError("the training data loader needs a batch_size (the effective batch)")
        return int(batch_size)

    @property
    def spatial_dims(self) -> int:
        raise NotImplementedError

    def memory_probe(self, micro_batch: int) -> None:
        """One step's forward, loss and backward at ``micro_batch``, no optimiser step (the caller restores state)."""
        raise NotImplementedError

    def memory_forward(self, micro_batch: int) -> None:
        """The forward passes of one step at ``micro_batch`` (for the CPU activation estimate)."""
        raise NotImplementedError

    def sample(self, count: int, labels: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images for monitoring (generated, or reconstructed for an autoencoder)."""
        raise NotImplementedError

    # ---- checkpoint state ---------------------------------------------------------------------------------------
    def extra_state_dict(self) -> dict[str, Any]:
        return {}

    def load_extra_state_dict(self, state: Mapping[str, Any]) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs; only tensors, numbers, strings, lists and dicts."""
        return {
            "networks": {name: net.state_dict() for name, net in self.networks.items()},
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
            "scalers": {name: (s.state_dict() if s is not None else {}) for name, s in self.scalers.items()},
            "stream": self.stream.state_dict(),
            "epoch": int(self.state.epoch),
            "plan": self.plan.to_dict() if self.plan is not None else None,
            "precision": self.precision.value,
            "extra": self.extra_state_dict(),
            # the global generators (rank 0's); the per-rank streams of the training steps follow from the seed, the
            # rank and the iteration (see rank_random_stream)
            "rng": {**capture_rng_state(), "stream_seed": self.seed, "world_size": self.world_size},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (RNG states last)."""
        for name, net in self.networks.items():
            net.load_state_dict(state["networks"][name])
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        for name, scaler in self.scalers.items():
            if scaler is not None and state["scalers"].get(name):
                scaler.load_state_dict(state["scalers"][name])
        self.stream.load_state_dict(state["stream"])
        if state.get("plan") is not None:
            self.plan = MemoryPlan(**state["plan"])
        self.load_extra_state_dict(state.get("extra", {}))
        self.state.iteration = int(state["iteration"])
        self.state.epoch = int(state["epoch"])
        self.seed = int(state["rng"].get("stream_seed", self.seed))
        if self.rank == 0:
            restore_rng_state(state["rng"])
        else:  # rank 0's global generator states are not this rank's: seed them for this rank instead
            rank_seed = step_seed(self.seed, self.rank, self.state.iteration, stream=1)
            torch.manual_seed(rank_seed)
            np.random.seed(rank_seed % 2**32)
            random.seed(rank_seed)

    def _save(self) -> None:
        if self.checkpoints is None or self.state.iteration == self._last_saved_iteration:
            return
        path = self.checkpoints.save(self.state_dict(), iteration=self.state.iteration, metric=self._metric())
        self.last_checkpoint = str(path)
        self._last_saved_iteration = self.state.iteration

    def _metric(self) -> float | None:
        if self.best_metric is None:
            return None
        if callable(self.best_metric):
            return float(self.best_metric(self))
        output = self.state.output if isinstance(self.state.output, Mapping) else {}
        return float(output[self.best_metric]) if self.best_metric in output else None

    def _save_periodic_checkpoint(self, engine: Any) -> None:
        if self.checkpoint_every > 0 and self.state.iteration % self.checkpoint_every == 0:
            self._save()

    def _save_final_checkpoint(self, engine: Any) -> None:
        self._save()

    # ---- the final model export ---------------------------------------------------------------------------------
    def exported_network(self) -> tuple[str, nn.Module, bool]:
        """``(name, network, whether its weights are an exponential moving average)``: the one network sampling
        needs, which training exports as ``RUN/models/model.pt``."""
        raise NotImplementedError

    def model_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights of :meth:`exported_network` as a plain ``state_dict`` (no DistributedDataParallel prefix)."""
        return dict(unwrapped(self.exported_network()[1]).state_dict())

    def _export_model(self, engine: Any) -> None:
        """Write ``RUN/models/model.pt`` (weights only, on the CPU) and name it in ``RUN/run.json`` when there is one."""
        if self.run_dir is None or (self._stop_signal is not None and not self._is_finished()):
            return
        import io

        from medvol.engines.checkpoint import atomic_write_bytes
        from medvol.runs import RunRecord

        state = {key: value.detach().cpu() for key, value in self.model_state_dict().items()}
        buffer = io.BytesIO()
        torch.save(state, buffer)
        path = self.run_dir / MODEL_EXPORT
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, buffer.getvalue())
        if RunRecord.exists(self.run_dir):
            name, network, ema = self.exported_network()
            model = {"file": MODEL_EXPORT.as_posix(), "network": name, "ema": ema, "iteration": int(self.state.iteration),
                     "parameters": int(sum(p.numel() for p in network.parameters())), "bytes": path.stat().st_size}
            RunRecord.load(self.run_dir).update(model=model).save()

    # ---- stopping on SIGINT / SIGTERM ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _signals_stop_training(self):
        """While training, SIGINT and SIGTERM only ask the trainer to stop after the current iteration (a second
        signal changes nothing; SIGKILL still ends the process at once)."""
        if threading.current_thread() is not threading.main_thread():
            yield  # Python delivers signals to the main thread only
            return

        previous = {signum: signal.signal(signum, lambda signum, frame: self.request_stop(signum)) for signum in STOP_SIGNALS}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)

    # under NCCL the ranks agree on stopping every this many iterations (reading the flag waits for the GPU)
    STOP_SYNC_EVERY_NCCL = 10

    def request_stop(self, signum: int = signal.SIGINT) -> None:
        """Stop after the current iteration as if `signum` had been received (:meth:`run` then saves a checkpoint of
        it and raises :class:`TrainingInterrupted`)."""
        if self._stop_signal is None:
            self._stop_signal = int(signum)

    def _stop_when_signalled(self, engine: Any) -> None:
        stop = self._stop_signal or 0
        distributed = torch.distributed
        if distributed.is_available() and distributed.is_initialized() and distributed.get_world_size() > 1:
            # every rank stops after the same iteration: a rank still training would wait forever in an all-reduce
            nccl = distributed.get_backend() == "nccl"
            if self.state.iteration % (self.STOP_SYNC_EVERY_NCCL if nccl else 1):
                return
            flag = torch.tensor([stop], dtype=torch.int64, device=self.state.device if nccl else "cpu")
            distributed.all_reduce(flag, op=distributed.ReduceOp.MAX)
            stop = int(flag.item())
            if stop and self._stop_signal is None:
                self._stop_signal = stop
        if stop:
            self.terminate()  # COMPLETED still fires: the final checkpoint holds this iteration

    def try_resume(self) -> bool:
        """Load the latest checkpoint when there is one; returns whether it did."""
        if self.checkpoints is None:
            return False
        path = self.checkpoints.latest_path()
        if path is None:
            return False
        state = self.checkpoints.load(path, map_location="cpu")  # RNG states must stay on the CPU
        self.load_state_dict(state)
        self.last_checkpoint = str(path)
        self._last_saved_iteration = self.state.iteration
        self.state.resumed_from = str(path)
        logger.info("resumed from %s at iteration %d", path, self.state.iteration)
        return True

    # ---- memory plan --------------------------------------------------------------------------------------------
    def _checkpointable_networks(self) -> list[nn.Module]:
        # the networks inside DistributedDataParallel: the wrapper's one child is the whole network, and checkpointing
        # it as one segment would recompute every activation at once in the backward pass (no saving)
        return [unwrapped(net) for net in self.networks.values()]

    @contextlib.contextmanager
    def _local_networks(self):
        """Inside the block the trainer calls its networks without their DistributedDataParallel wrappers, so that a
        memory probe runs no collective: an out-of-memory error on one rank mid-probe cannot leave the other ranks
        waiting in a gradient all-reduce."""
        swapped = []
        for wrapper in vars(self).values():
            if isinstance(wrapper, AutocastModule) and isinstance(wrapper.module, nn.parallel.DistributedDataParallel):
                swapped.append((wrapper, wrapper.module))
                wrapper.module = wrapper.module.module
        try:
            yield
        finally:
            for wrapper, network in swapped:
                wrapper.module = network

    def _make_plan(self) -> MemoryPlan:
        common = dict(
            precision=self.precision.value, device=str(self.state.device), checkpointing=self.activation_checkpointing is True
        )
        requested = self._requested_plan
        if self._requested_micro_batch is not None:
            return MemoryPlan.fixed(self.effective_batch, self._requested_micro_batch, method="fixed", **common)
        if isinstance(requested, MemoryPlan):
            return requested
        if requested is None:
            return MemoryPlan.fixed(self.effective_batch, None, method="fixed", **common)
        if isinstance(requested, (str, os.PathLike)) and str(requested) != "auto":
            return MemoryPlan.load(requested)
        return self.plan_memory(parse_memory_budget(self.max_memory_gb))

    def batch_norm_networks(self) -> list[str]:
        """The names of the networks that hold batch-norm layers (see :func:`medvol.engines.memory.batch_norm_layers`)."""
        return [name for name, net in self.networks.items() if batch_norm_layers([unwrapped(net)])]

    def _batch_norm_note(self) -> str | None:
        networks = self.batch_norm_networks()
        if not networks:
            return None
        return (
            f"{' and '.join(networks)} use batch norm, whose statistics come from the batch: every step runs the whole "
            f"effective batch of {self.effective_batch} (micro-batches would change the result); lower the batch size "
            "to use less memory"
        )

    def _with_batch_norm_policy(self, plan: MemoryPlan) -> MemoryPlan:
        """Batch-norm networks never train on part of a step's batch: the plan's micro-batch becomes the effective
        batch (with a console warning when a smaller one was asked for or planned) and ``plan.json`` says why."""
        note = self._batch_norm_note()
        if note is None:
            return plan
        if self.effective_batch < 2:
            raise MedvolInputError(
                "batch_size", f"{' and '.join(self.batch_norm_networks())} use batch norm, which needs at least 2 "
                f"samples per step; the batch holds {self.effective_batch} per process"
            )
        if plan.micro_batch < plan.effective_batch:
            logger.warning("micro-batch %d not used: %s", plan.micro_batch, note)
            plan = dataclasses.replace(plan, micro_batch=plan.effective_batch, accumulation_steps=1)
        return dataclasses.replace(plan, batch_norm=note)

    def _local_memory_forward(self, micro_batch: int) -> None:
        # the per-sample activation estimate runs one sample: batch norm in training mode cannot normalise a
        # batch of one feature vector, and its running statistics must not move; eval mode has the same outputs' sizes
        modes = {net: net.training for net in self.networks.values()}
        try:
            for net in modes:
                net.eval()
            with self._local_networks():
                self.memory_forward(micro_batch)
        finally:
            for net, training in modes.items():
                net.train(training)

    def _budget_agreed_across_ranks(self, budget_bytes: int | None) -> int | None:
        """The smallest budget of all ranks (on CUDA, None means this GPU's free memory), agreed before any probe so
        that every rank plans for the same memory; the probes themselves then run without collectives and the
        resulting plans are reconciled once, afterwards (:meth:`MemoryPlan.agreed_across_ranks`)."""
        if self.world_size == 1:
            return budget_bytes
        if budget_bytes is None and self.state.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.state.device)
            budget_bytes = int(free + torch.cuda.memory_allocated(self.state.device))
        unlimited = 2**62
        distributed = torch.distributed
        device = self.state.device if distributed.get_backend() == "nccl" else torch.device("cpu")
        smallest = torch.tensor([unlimited if budget_bytes is None else budget_bytes], dtype=torch.int64, device=device)
        distributed.all_reduce(smallest, op=distributed.ReduceOp.MIN)
        agreed = int(smallest.item())
        return None if agreed == unlimited else agreed

    def plan_memory(self, budget_bytes: int | None, safety_margin: float = 0.15) -> MemoryPlan:
        """Plan micro-batch / accumulation / checkpointing for ``budget_bytes`` (see :func:`plan_memory`)."""
        budget_bytes = self._budget_agreed_across_ranks(budget_bytes)
        snapshot = self._snapshot()  # taken once, outside the measurements; restoring it allocates nothing

        def probe(micro_batch: int) -> None:
            try:
                with self._local_networks():
                    self.memory_probe(micro_batch)
            finally:
                self._restore_snapshot(snapshot)

        kwargs = dict(
            probe=probe,
            effective_batch=self.effective_batch,
            device=self.state.device,
            budget_bytes=budget_bytes,
            precision=self.precision.value,
            safety_margin=safety_margin,
            static_bytes=static_training_bytes(list(self.networks.values()), list(self.optimizers.values())),
            activation_forward=self._local_memory_forward,
            networks=[unwrapped(net) for net in self.networks.values()],
            smallest_micro_batch=self.effective_batch if self.batch_norm_networks() else 1,
        )
        if self.state.device.type == "cuda":
            kwargs["static_bytes"] = 0
            kwargs["unallocated_optimizer_bytes"] = static_training_bytes([], [o for o in self.optimizers.values() if not o.state])
        rng_state = capture_rng_state()  # probing draws latents and data; the run must not notice
        try:
            return self._plan_with_checkpointing_choice(kwargs)
        except MemoryError as error:
            note = self._batch_norm_note()
            if note is None:
                raise
            raise MemoryError(f"the effective batch of {self.effective_batch} does not fit the memory budget: {note}") from error
        finally:
            restore_rng_state(rng_state)

    def measure_step_bytes(self, micro_batch: int) -> int:
        """Peak bytes of one training step at ``micro_batch``, measured the way the planner measures on this device."""
        snapshot = self._snapshot()
        rng_state = capture_rng_state()
        try:
            if self.state.device.type == "cuda":
                torch.cuda.synchronize(self.state.device)
                torch.cuda.reset_peak_memory_stats(self.state.device)
                self.memory_probe(micro_batch)
                torch.cuda.synchronize(self.state.device)
                return int(torch.cuda.max_memory_allocated(self.state.device))
            static = static_training_bytes(list(self.networks.values()), list(self.optimizers.values()))
            with TensorMemoryTracker() as tracker:
                self.memory_probe(micro_batch)
            return static + tracker.peak_bytes
        finally:
            self._restore_snapshot(snapshot)
            restore_rng_state(rng_state)

    def _plan_with_checkpointing_choice(self, kwargs: dict[str, Any]) -> MemoryPlan:
        want_checkpointing = self.activation_checkpointing
        if want_checkpointing is True:
            self._enable_checkpointing()
            return plan_memory(checkpointing=True, **kwargs)
        try:
            plan = plan_memory(checkpointing=False, **kwargs)
        except MemoryError:
            if want_checkpointing != "auto" or self.spatial_dims != 3:
                raise
            plan = None
        if want_checkpointing == "auto" and self.spatial_dims == 3 and (plan is None or plan.micro_batch < self.effective_batch):
            self._enable_checkpointing()
            try:
                with_checkpointing = plan_memory(checkpointing=True, **kwargs)
            except MemoryError:
                with_checkpointing = None
            if with_checkpointing is not None and (plan is None or with_checkpointing.micro_batch > plan.micro_batch):
                return with_checkpointing
            if plan is None:
                raise MemoryError("no micro-batch fits the memory budget, even with activation checkpointing")
            self._disable_checkpointing()
        return plan

    def _enable_checkpointing(self) -> None:
        for net in self._checkpointable_networks():
            apply_activation_checkpointing(net)

    def _disable_checkpointing(self) -> None:
        for net in self._checkpointable_networks():
            for module in net.modules():
                if getattr(module, "_medvol_checkpointed", False):
                    del module.forward
                    del module._medvol_checkpointed

    def _snapshot(self) -> dict[str, Any]:
        return {
            "networks": {n: copy.deepcopy(net.state_dict()) for n, net in self.networks.items()},
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }

    def _restore_snapshot(self, snapshot: Mapping[str, Any]) -> None:
        for name, net in self.networks.items():
            net.load_state_dict(snapshot["networks"][name])
            net.zero_grad(set_to_none=True)
        torch.set_rng_state(snapshot["rng"])
        if snapshot["cuda_rng"] is not None:
            torch.cuda.set_rng_state_all(snapshot["cuda_rng"])

    # ---- running ------------------------------------------------------------------------------------------------
    def run(self) -> None:  # type: ignore[override]
        """Plan memory, resume when a checkpoint exists, and train until ``max_iterations`` / ``max_epochs``.

        SIGINT (Ctrl-C) or SIGTERM received meanwhile ends training after the current iteration: its checkpoint is
        written, then :class:`TrainingInterrupted` is raised (in a distributed run every rank stops after the same
        iteration and rank 0 writes the checkpoint).

        Raises:
            TrainingInterrupted: on SIGINT or SIGTERM.
        """
        self._stop_signal = None
        with self._signals_stop_training():
            self._run()
        if self._stop_signal is not None and not self._is_finished():
            raise TrainingInterrupted(self._stop_signal, self.state.iteration, self.last_checkpoint)

    def _run(self) -> None:
        resumed = self.resume and self.try_resume()
        if resumed and self._is_finished():
            logger.info("the run in %s already reached iteration %d: nothing to do", self.checkpoints.directory, self.state.iteration)
            return
        logger.info("precision: %s (%s)", self.precision.value, self.precision_reason)
        if configure_cudnn(self.state.device, self.cudnn_benchmark):
            logger.info("cuDNN autotuning on: faster convolutions, results no longer bitwise reproducible")
        if self.plan is None:
            self.plan = self._make_plan().agreed_across_ranks()
        self.plan = self._with_batch_norm_policy(self.plan)
        self.plan = dataclasses.replace(self.plan, precision=self.precision.value, precision_reason=self.precision_reason)
        if self.plan.checkpointing and not any(
            getattr(m, "_medvol_checkpointed", False) for net in self._checkpointable_networks() for m in net.modules()
        ):
            self._enable_checkpointing()
        self._write_plan()
        for net in self.networks.values():
            net.train()
        if self._stop_signal is not None:  # a signal during planning: nothing new to save
            return
        if self.max_iterations is not None:
            if resumed:
                self.state.max_iters = self.max_iterations
            Engine.run(self, data=self.stream, epoch_length=self.state.epoch_length, max_iters=self.max_iterations)
        else:
            Engine.run(self, data=self.stream, max_epochs=self.state.max_epochs, epoch_length=self.state.epoch_length)

    def _is_finished(self) -> bool:
        if self.max_iterations is not None:
            return self.state.iteration >= self.max_iterations
        return self.state.iteration >= self.state.max_epochs * self.state.epoch_length

    def _write_plan(self) -> None:
        if self.run_dir is not None and self.plan is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.plan.save(self.run_dir / "plan.json")

    def _with_oom_backoff(self, step: Callable[[int], dict[str, float]]) -> dict[str, float]:
        """Run ``step(micro_batch)``; on out-of-memory halve the micro-batch and repeat the same step.

        Under DistributedDataParallel the plan is agreed across ranks at the start (`MemoryPlan.agreed_across_ranks`);
        an out-of-memory error on one rank mid-run cannot be recovered this way, because the other ranks are already
        waiting in a gradient all-reduce: plan with ``--max-memory`` to leave headroom when training on several GPUs.
        """
        while True:
            try:
                return step(self.plan.micro_batch)
            except RuntimeError as error:
                if not is_out_of_memory(error):
                    raise
                for opt in self.optimizers.values():
                    opt.zero_grad(set_to_none=True)
                for scaler in self.scalers.values():
                    forget_unfinished_step(scaler)
                if self.plan.batch_norm is not None:
                    raise torch.OutOfMemoryError(f"out of memory at iteration {self.state.iteration}: {self.plan.batch_norm}") from error
                if self.plan.micro_batch <= 1:
                    raise
                reason = str(error).splitlines()[0][:200] if str(error) else "out of memory"
            # outside the except block, whose traceback still holds the failed step's tensors
            release_cached_memory(self.state.device)
            self.plan = self.plan.halved(reason, self.state.iteration)
            logger.warning(
                "iteration %d: out of memory; micro-batch halved to %d (accumulation %d, effective batch %d kept)",
                self.state.iteration, self.plan.micro_batch, self.plan.accumulation_steps, self.plan.effective_batch,
            )
            self._write_plan()

    def _maybe_inject_oom(self, micro_batch: int) -> None:
        if self.oom_injector is not None:
            self.oom_injector(self, micro_batch)

    def _optimizer_step(self, name: str) -> None:
        """``optimizer.step()`` (through the gradient scaler in float16). An out-of-memory error inside it is repeated
        by :meth:`_with_oom_backoff` only when the update had not begun; optimiser state the failed step created is
        dropped first. Once a weight or a moment has moved, :class:`UnrepeatableStepError` ends training instead."""
        optimizer, scaler = self.optimizers[name], self.scalers[name]
        watch = OptimizerUpdateWatch(optimizer)
        try:
            if scaler is None:
                optimizer.step()
            else:
                scaler.step(optimizer)
                scaler.update()
        except RuntimeError as error:
            if not is_out_of_memory(error):
                raise
            if watch.update_began():
                where = f"; the last checkpoint is {self.last_checkpoint}: rerun to resume from it" if self.last_checkpoint else ""
                raise UnrepeatableStepError(
                    f"iteration {self.state.iteration}: out of memory inside the {name} optimiser's update after it had "
                    f"changed weights, so the step can neither finish nor be repeated{where}; leave more memory free "
                    "(--max-memory) or use a smaller batch"
                ) from error
            watch.forget_new_state()
            raise

    def _backward(self, name: str, loss: torch.Tensor) -> None:
        scaler = self.scalers[name]
        (loss if scaler is None else scaler.scale(loss)).backward()

    def _accumulate(self, name: str, count: int, micro_batch: int, loss_of: Callable[[slice], dict[str, torch.Tensor]]) -> dict[str, float]:
        """Forward/backward over micro-batches of ``count`` samples; returns sample-weighted mean of logged terms.

        The terms are summed on the device and read back once, after the last micro-batch (one host sync per
        optimiser step, not one per term and micro-batch); a NaN or infinity in any micro-batch reaches that sum, so
        the finiteness check there still stops the step before the optimiser takes it. Under
        ``DistributedDataParallel`` all but the last micro-batch run in ``no_sync()``: their gradients accumulate
        locally and the last backward all-reduces the sum, one all-reduce per optimiser step.
        """
        network = self.networks.get(name)
        parts = _micro_slices(count, micro_batch)
        totals: dict[str, torch.Tensor | float] = {}
        for number, part in enumerate(parts):
            local = number < len(parts) - 1 and isinstance(network, nn.parallel.DistributedDataParallel)
            with network.no_sync() if local else contextlib.nullcontext():
                self._maybe_inject_oom(micro_batch)
                terms = loss_of(part)
                self.fire_event(IterationEvents.LOSS_COMPLETED)
                share = (part.stop - part.start) / count
                self._backward(name, terms["loss"].float() * share)
            for key, value in terms.items():
                value = value.detach().float().mean() if isinstance(value, torch.Tensor) else float(value)
                totals[key] = totals.get(key, 0.0) + value * share
        self.fire_event(IterationEvents.BACKWARD_COMPLETED)
        on_device = [key for key, value in totals.items() if isinstance(value, torch.Tensor)]
        if on_device:
            values = torch.stack([totals[key].reshape(()) for key in on_device]).tolist()
            totals.update(zip(on_device, values))
        logs = {key: float(value) for key, value in totals.items()}
        check_finite(logs, self.state.iteration, name, self.last_checkpoint)
        return logs

    @contextlib.contextmanager
    def rank_random_stream(self, iteration: int | None = None):
        """Make every random draw inside the block (latents, sampled labels, gradient-penalty mixing weights, label
        flips, dropout) come from this rank's stream for `iteration` (default: the current one), a torch generator
        seeded with :func:`step_seed` ``(seed, rank, iteration)``; the global CPU and CUDA generators are put back
        afterwards, untouched.

        Every rank of a distributed run thus draws different latents, and a resumed run draws, from iteration
        ``n + 1`` on, exactly what the uninterrupted run drew: the stream of an iteration is a function of the seed,
        the rank and the iteration alone, so a checkpoint restores every rank's stream from its iteration count,
        without gathering generator states from the other ranks (rank 0's checkpoint, and the evaluator's best
        checkpoint that rank 0 saves alone, need no collective) and whatever the number of ranks on resume.
        """
        iteration = int(self.state.iteration if iteration is None else iteration)
        seed = step_seed(self.seed, self.rank, iteration)
        cuda = self.state.device.type == "cuda"
        with torch.random.fork_rng(devices=[self.state.device] if cuda else [], device_type="cuda"):
            torch.default_generator.manual_seed(seed)
            if cuda:
                seed_cuda_device(self.state.device, seed)  # CUDA draws: latents, a penalty's mixing weights
            yield

    def _timed_iteration(self, work: Callable[[], dict[str, Any]], samples: int) -> dict[str, Any]:
        start = time.perf_counter()
        with self.rank_random_stream():
            output = work()
        seconds = time.perf_counter() - start
        self.state.iteration_seconds = seconds
        self.state.samples_per_second = samples / seconds if seconds > 0 else float("nan")
        self.fire_event(IterationEvents.MODEL_COMPLETED)
        return output


class GenerativeAdversarialTrainer(MedvolTrainer):
    """GAN training: ``critic_steps`` critic updates (fresh real batch and fresh fakes each) per generator update.

    Conditioning: when ``generator.num_classes > 0`` the real labels come from ``batch["label"]``; the critic step's
    fakes are generated with the real batch's labels (the objective contract has one ``labels`` argument for both,
    which also keeps the class balance of the data), the generator step samples labels uniformly. A critic with an
    auxiliary class head gets its classification term from the objective.

    Args:
        device: training device.
        train_data_loader: yields effective batches of real images (``{"image", "label"}`` dicts or tensors).
        generator: ``generator(z, labels=None)`` with ``latent_size``, ``num_classes`` and ``spatial_dims``.
        critic: ``critic(x, labels=None) -> score`` or ``(score, class_logits)``.
        g_optimizer: optimiser of the generator.
        d_optimizer: optimiser of the critic.
        objective: ``discriminator_loss``/``generator_loss``/``after_critic_step``/``critic_steps`` (medvol.objectives).
        critic_steps: critic updates per generator update (default: ``objective.critic_steps``).
        ema_decay: keep an exponential moving average of the generator weights with this decay (e.g. 0.999) and
            sample from it; None: no EMA. The decay warms up as ``min(ema_decay, (1 + t) / (10 + t))`` at
            iteration t, so a short run does not sample from weights that are still mostly the initial ones
            (with a fixed 0.999, 600 iterations leave 55 % of the untrained weights in the average).
        health_interval: check for a winning critic / collapsed generator every this many iterations (0: never).
        health: thresholds for those checks (:class:`AdversarialHealth`).
        critic_augment: differentiable augmentation of every image the critic sees in training, real and generated
            (critic step, generator step, gradient penalty; never samples): a
            :class:`medvol.transforms.differentiable.CriticAugmentation`, or settings
            :func:`~medvol.transforms.differentiable.parse_critic_augment` reads (``"off"``, ``"fixed:0.3"``, ``"ada"``,
            a mapping); None: off. Its random numbers come from a stream of their own per iteration and rank, and its
            probability and the critic's real-sign statistic are logged (``critic_augment/p``,
            ``critic_augment/real_sign``) and checkpointed.
        kwargs: everything :class:`MedvolTrainer` takes (``max_iterations``, ``precision``, ``memory_plan``,
            ``run_dir``, ``checkpoint_every``, ``monitor``, ...).
    """

    def __init__(
        self,
        device: str | torch.device,
        train_data_loader: Any,
        generator: nn.Module,
        critic: nn.Module,
        g_optimizer: Optimizer,
        d_optimizer: Optimizer,
        objective: Any,
        *,
        critic_steps: int | None = None,
        ema_decay: float | None = None,
        health_interval: int = 10,
        health: AdversarialHealth | None = None,
        critic_augment: Any = None,
        **kwargs: Any,
    ):
        self.critic_steps = int(critic_steps if critic_steps is not None else getattr(objective, "critic_steps", 1))
        if self.critic_steps < 1:
            raise ValueError(f"critic_steps must be at least 1, got {self.critic_steps}")
        self.generator = generator
        self.critic = critic
        self.objective = objective
        self.ema_decay = ema_decay
        self.ema_generator: nn.Module | None = None
        if ema_decay is not None:
            if not 0.0 < ema_decay < 1.0:
                raise ValueError(f"ema_decay must be in (0, 1), got {ema_decay}")
            # a copy of the network, not of a DistributedDataParallel wrapper (process group, reducer, hooks)
            self.ema_generator = copy.deepcopy(unwrapped(generator)).eval().requires_grad_(False)
        self.latent_size = int(unwrapped(generator).latent_size)
        self.num_classes = int(getattr(unwrapped(generator), "num_classes", 0) or 0)
        self.health_interval = health_interval
        self.health = health or AdversarialHealth()
        super().__init__(
            device=device,
            train_data_loader=train_data_loader,
            networks={"generator": generator, "critic": critic},
            optimizers={"generator": g_optimizer, "critic": d_optimizer},
            batches_per_iteration=self.critic_steps,
            **kwargs,
        )
        self._generator_amp = AutocastModule(generator, self.precision)
        self._critic_amp_d_step = AutocastModule(critic, self.precision, fp32_when_input_requires_grad=True)
        # the generator step only differentiates through the frozen critic: called without its DistributedDataParallel
        # wrapper, whose forward would prepare a gradient reduction that never comes and fire it in the next backward
        self._critic_amp_g_step = AutocastModule(unwrapped(critic), self.precision)
        # what the objectives call: the critic, behind the augmentation when there is one
        self.critic_augmentation = CriticAugmentation.from_settings(critic_augment, self.spatial_dims)
        self._critic_d = self._critic_amp_d_step
        self._critic_g = self._critic_amp_g_step
        if self.critic_augmentation is not None:
            self._critic_d = AugmentedCritic(self._critic_amp_d_step, self.critic_augmentation)
            self._critic_g = AugmentedCritic(self._critic_amp_g_step, self.critic_augmentation)

    @property
    def spatial_dims(self) -> int:
        return int(getattr(unwrapped(self.generator), "spatial_dims", 2))

    def _checkpointable_networks(self) -> list[nn.Module]:
        return [self.generator, self.critic]

    # ---- sampling -----------------------------------------------------------------------------------------------
    def _latents(self, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Latents drawn on the training device (from this iteration's stream); with a `generator`, on its device."""
        if generator is None:
            return torch.randn(count, self.latent_size, device=self.state.device)
        z = torch.randn(count, self.latent_size, generator=generator, device=generator.device)
        return z.to(self.state.device, non_blocking=True)

    def _sample_labels(self, count: int, generator: torch.Generator | None = None) -> torch.Tensor | None:
        if self.num_classes <= 0:
            return None
        if generator is None:
            return torch.randint(0, self.num_classes, (count,), device=self.state.device)
        labels = torch.randint(0, self.num_classes, (count,), generator=generator, device=generator.device)
        return labels.to(self.state.device, non_blocking=True)


    @torch.no_grad()
    def sample(self, count: int, labels: torch.Tensor | None = None, generator: torch.Generator | None = None, use_ema: bool = True) -> torch.Tensor:
        """``count`` generated images (float32, [-1, 1]) from the EMA generator when there is one.

        Args:
            count: number of images.
            labels: class labels (default: cycling through the classes for a conditional generator).
            generator: torch RNG for the latents (pass one to leave the global RNG untouched).
            use_ema: use the EMA weights when available.
        """
        network = self.ema_generator if (use_ema and self.ema_generator is not None) else self.generator
        was_training = network.training
        network.eval()
        if labels is None and self.num_classes > 0:
            labels = torch.arange(count) % self.num_classes
        if labels is not None:
            labels = torch.as_tensor(labels, dtype=torch.long).to(self.state.device)
        try:
            images = AutocastModule(network, self.precision)(self._latents(count, generator), labels)
        finally:
            network.train(was_training)
        return images.float()

    # ---- one iteration ------------------------------------------------------------------------------------------
    def _critic_step(self, real: torch.Tensor, labels: torch.Tensor | None, z: torch.Tensor) -> dict[str, float]:
        def step(micro_batch: int) -> dict[str, float]:
            self.optimizers["critic"].zero_grad(set_to_none=True)

            if self.critic_augmentation is not None:
                self._critic_d.signs.clear()  # a step repeated after an out-of-memory error counts once

            def loss_of(part: slice) -> dict[str, torch.Tensor]:
                part_labels = None if labels is None else labels[part]
                with torch.no_grad():
                    fake = self._generator_amp(z[part], part_labels)
                self.fire_event(IterationEvents.FORWARD_COMPLETED)
                part_real = real[part]
                if self.critic_augmentation is not None:
                    self._critic_d.real = part_real  # ADA counts the signs of the critic's scores of these
                return self.objective.discriminator_loss(self._critic_d, part_real, fake, labels=part_labels)

            logs = self._accumulate("critic", real.shape[0], micro_batch, loss_of)
            self._optimizer_step("critic")
            self.objective.after_critic_step(self.critic)
            return logs

        logs = self._with_oom_backoff(step)
        if self.critic_augmentation is not None:
            self._critic_d.observe_real_signs()
        return logs

    def _generator_step(self, count: int) -> tuple[dict[str, float], torch.Tensor, torch.Tensor | None]:
        z = self._latents(count)
        labels = self._sample_labels(count)
        fakes: list[torch.Tensor] = []

        def step(micro_batch: int) -> dict[str, float]:
            self.optimizers["generator"].zero_grad(set_to_none=True)
            fakes.clear()

            def loss_of(part: slice) -> dict[str, torch.Tensor]:
                part_labels = None if labels is None else labels[part]
                fake = self._generator_amp(z[part], part_labels)
                fakes.append(fake.detach())
                self.fire_event(IterationEvents.FORWARD_COMPLETED)
                # the mode-seeking term compares images generated from different noise
                noise = {"latents": z[part]} if getattr(self.objective, "mode_seeking_weight", 0) else {}
                return self.objective.generator_loss(self._critic_g, fake, labels=part_labels, **noise)

            self.critic.requires_grad_(False)
            try:
                logs = self._accumulate("generator", count, micro_batch, loss_of)
            finally:
                self.critic.requires_grad_(True)
            self._optimizer_step("generator")
            return logs

        logs = self._with_oom_backoff(step)
        return logs, torch.cat(fakes), labels

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.ema_generator is None:
            return
        decay = ema_warmup_decay(self.ema_decay, int(self.state.iteration))
        # one fused kernel per list on CUDA (a per-parameter loop launches one kernel per tensor)
        torch._foreach_lerp_(list(self.ema_generator.parameters()), list(self.generator.parameters()), 1.0 - decay)
        buffers = list(self.generator.buffers())
        if buffers:
            torch._foreach_copy_(list(self.ema_generator.buffers()), buffers)

    def _iteration(self, engine: Any, batchdata: Any) -> dict[str, Any]:
        batches = [batchdata] + [next(self.stream) for _ in range(self.critic_steps - 1)]

        def work() -> dict[str, Any]:
            critic_logs: dict[str, float] = {}
            real = labels = None
            self._start_augmentation_stream()
            for batch in batches:
                self.fire_event(IterationEvents.INNER_ITERATION_STARTED)
                real, labels = self.prepare_batch(batch, self.state.device, self.non_blocking)
                if self.num_classes > 0 and labels is None:
                    raise ValueError("the generator is conditional (num_classes > 0) but the batch has no 'label'")
                if self.num_classes == 0:
                    labels = None
                z = self._latents(real.shape[0])
                logs = self._critic_step(real, labels, z)
                for key, value in logs.items():
                    critic_logs[key] = critic_logs.get(key, 0.0) + value / len(batches)
                self.fire_event(IterationEvents.INNER_ITERATION_COMPLETED)
            generator_logs, fakes, fake_labels = self._generator_step(real.shape[0])
            self._update_ema()
            output: dict[str, Any] = {f"critic/{k}": v for k, v in critic_logs.items()}
            output.update({f"generator/{k}": v for k, v in generator_logs.items()})
            output[GanKeys.DLOSS] = critic_logs["loss"]
            output[GanKeys.GLOSS] = generator_logs["loss"]
            output[GanKeys.REALS] = real.detach()
            output[GanKeys.FAKES] = fakes
            if self.critic_augmentation is not None:
                output.update(self.critic_augmentation.end_iteration(self._summed_over_ranks))
            if self.health_interval and (self.state.iteration % self.health_interval == 0):
                self._check_health(real, labels, fakes, fake_labels)
            return output

        return self._timed_iteration(work, samples=self.effective_batch * (self.critic_steps + 1))

    def _start_augmentation_stream(self) -> None:
        """Seed this iteration's augmentation stream (stream 2 of :func:`step_seed`): its draws depend on the seed, the
        rank and the iteration alone, and leave the latents of the training stream as they are without augmentation."""
        if self.critic_augmentation is None:
            return
        generator = torch.Generator().manual_seed(step_seed(self.seed, self.rank, int(self.state.iteration), stream=2))
        self._critic_d.generator = self._critic_g.generator = generator

    def _summed_over_ranks(self, values: list[float]) -> list[float]:
        distributed = torch.distributed
        if self.world_size == 1 or not (distributed.is_available() and distributed.is_initialized()):
            return values
        device = self.state.device if distributed.get_backend() == "nccl" else torch.device("cpu")
        totals = torch.tensor(values, dtype=torch.float64, device=device)
        distributed.all_reduce(totals)
        return totals.tolist()

    @torch.no_grad()
    def _check_health(
        self, real: torch.Tensor, labels: torch.Tensor | None, fakes: torch.Tensor, fake_labels: torch.Tensor | None = None
    ) -> None:
        count = min(real.shape[0], fakes.shape[0], self.plan.micro_batch)
        real_scores = _score(self._critic_amp_g_step(real[:count], None if labels is None else labels[:count]))
        fake_scores = _score(self._critic_amp_g_step(fakes[:count], None if fake_labels is None else fake_labels[:count]))
        fake_diversity, real_diversity = AdversarialHealth.class_diversity(fakes, fake_labels, real, labels)
        self.health.update(
            self.state.iteration,
            accuracy=AdversarialHealth.ranking_accuracy(real_scores, fake_scores),
            fake_diversity=fake_diversity,
            real_diversity=real_diversity,
        )

    # ---- memory probes ------------------------------------------------------------------------------------------
    def _probe_inputs(self, micro_batch: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        first = next(iter(self.train_data_loader))
        real, labels = self.prepare_batch(first, self.state.device, self.non_blocking)
        repeats = math.ceil(micro_batch / real.shape[0])
        real = real.repeat((repeats,) + (1,) * (real.ndim - 1))[:micro_batch]
        if labels is not None and self.num_classes > 0:
            labels = labels.repeat(repeats)[:micro_batch]
        else:
            labels = None
        return real, labels

    def memory_forward(self, micro_batch: int) -> None:
        real, labels = self._probe_inputs(micro_batch)
        z = self._latents(micro_batch)
        fake = self._generator_amp(z, labels)
        self._critic_amp_g_step(real, labels)
        self._critic_amp_g_step(fake, labels)

    def memory_probe(self, micro_batch: int) -> None:
        real, labels = self._probe_inputs(micro_batch)
        # a real step also holds the whole effective batch of real images and of generated ones
        held = torch.empty((2 * self.effective_batch,) + tuple(real.shape[1:]), device=real.device)
        try:
            z = self._latents(micro_batch)
            with torch.no_grad():
                fake = self._generator_amp(z, labels)
            self._start_augmentation_stream()
            terms = self.objective.discriminator_loss(self._critic_d, real, fake, labels=labels)
            terms["loss"].float().backward()
            del terms, fake
            self.critic.zero_grad(set_to_none=True)
            self.critic.requires_grad_(False)
            try:
                fake = self._generator_amp(z, labels)
                terms = self.objective.generator_loss(self._critic_g, fake, labels=labels)
                terms["loss"].float().backward()
            finally:
                self.critic.requires_grad_(True)
        finally:
            del held

    # ---- extra checkpoint state ---------------------------------------------------------------------------------
    def extra_state_dict(self) -> dict[str, Any]:
        state = {"ema_generator": self.ema_generator.state_dict() if self.ema_generator is not None else None}
        if self.critic_augmentation is not None:
            state["critic_augment"] = self.critic_augmentation.state_dict()
        return state

    def exported_network(self) -> tuple[str, nn.Module, bool]:
        """The generator; its exponential moving average when there is one (what sampling uses)."""
        if self.ema_generator is not None:
            return "generator", self.ema_generator, True
        return "generator", self.generator, False

    def load_extra_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.ema_generator is not None and state.get("ema_generator") is not None:
            self.ema_generator.load_state_dict(without_ddp_prefix(state["ema_generator"]))
        saved = state.get("critic_augment")
        if (saved is None) != (self.critic_augmentation is None):
            raise ValueError(
                f"the checkpoint was trained {'without' if saved is None else 'with'} critic augmentation and this run is "
                f"{'with' if saved is None else 'without'} it: resume with the setting the run started with"
            )
        if saved is not None:
            self.critic_augmentation.load_state_dict(saved)


def _score(output: Any) -> torch.Tensor:
    return (output[0] if isinstance(output, (tuple, list)) else output).reshape(-1).float()


class AutoencoderTrainer(MedvolTrainer):
    """Autoencoder / VAE training: one optimiser step per iteration on one effective batch.

    Args:
        device: training device.
        train_data_loader: yields effective batches of images.
        network: ``network(x) -> reconstruction`` or, for the VAE, ``(reconstruction, mu, logvar)``.
        optimizer: its optimiser.
        loss_function: ``loss_function(output, target) -> {"loss": ..., terms...}`` (medvol.objectives
            ``ReconstructionLoss`` / ``VAELoss``) or a plain tensor-returning loss.
        spatial_dims: 2 or 3 (default: ``network.spatial_dims``, else 2).
        kwargs: everything :class:`MedvolTrainer` takes.
    """

    def __init__(
        self,
        device: str | torch.device,
        train_data_loader: Any,
        network: nn.Module,
        optimizer: Optimizer,
        loss_function: Callable,
        spatial_dims: int | None = None,
        **kwargs: Any,
    ):
        self.network = network
        self.loss_function = loss_function
        self._spatial_dims = int(spatial_dims if spatial_dims is not None else getattr(unwrapped(network), "spatial_dims", 2))
        self._last_batch: torch.Tensor | None = None
        super().__init__(
            device=device,
            train_data_loader=train_data_loader,
            networks={"autoencoder": network},
            optimizers={"autoencoder": optimizer},
            batches_per_iteration=1,
            **kwargs,
        )
        self._network_amp = AutocastModule(network, self.precision)

    @property
    def spatial_dims(self) -> int:
        return self._spatial_dims

    def exported_network(self) -> tuple[str, nn.Module, bool]:
        """The autoencoder (sampling decodes latent codes; the CAE also encodes training images)."""
        return "autoencoder", self.network, False

    def _loss_terms(self, output: Any, target: torch.Tensor) -> dict[str, torch.Tensor]:
        result = self.loss_function(output, target)
        return result if isinstance(result, Mapping) else {"loss": result}

    def _iteration(self, engine: Any, batchdata: Any) -> dict[str, Any]:
        images, _ = self.prepare_batch(batchdata, self.state.device, self.non_blocking)

        def step(micro_batch: int) -> dict[str, float]:
            self.optimizers["autoencoder"].zero_grad(set_to_none=True)

            def loss_of(part: slice) -> dict[str, torch.Tensor]:
                output = self._network_amp(images[part])
                self.fire_event(IterationEvents.FORWARD_COMPLETED)
                return self._loss_terms(output, images[part])

            logs = self._accumulate("autoencoder", images.shape[0], micro_batch, loss_of)
            self._optimizer_step("autoencoder")
            return logs

        def work() -> dict[str, Any]:
            logs = self._with_oom_backoff(step)
            self._last_batch = images[: min(16, images.shape[0])].detach()
            output: dict[str, Any] = {f"autoencoder/{k}": v for k, v in logs.items()}
            output["loss"] = logs["loss"]
            output["image"] = images.detach()
            return output

        return self._timed_iteration(work, samples=images.shape[0])

    @torch.no_grad()
    def sample(self, count: int, labels: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """The first ``count`` images of the latest batch followed by their reconstructions (2 x count images)."""
        if self._last_batch is None:
            self._last_batch, _ = self.prepare_batch(next(iter(self.train_data_loader)), self.state.device, False)
        images = self._last_batch[:count]
        was_training = self.network.training
        self.network.eval()
        try:
            output = self._network_amp(images)
        finally:
            self.network.train(was_training)
        recon = output[0] if isinstance(output, (tuple, list)) else output
        return torch.cat([images.float(), recon.float()])

    def _probe_batch(self, micro_batch: int) -> torch.Tensor:
        images, _ = self.prepare_batch(next(iter(self.train_data_loader)), self.state.device, self.non_blocking)
        repeats = math.ceil(micro_batch / images.shape[0])
        return images.repeat((repeats,) + (1,) * (images.ndim - 1))[:micro_batch]

    def memory_forward(self, micro_batch: int) -> None:
        self._network_amp(self._probe_batch(micro_batch))

    def memory_probe(self, micro_batch: int) -> None:
        images = self._probe_batch(micro_batch)
        held = torch.empty((self.effective_batch,) + tuple(images.shape[1:]), device=images.device)  # the batch
        try:
            terms = self._loss_terms(self._network_amp(images), images)
            terms["loss"].float().backward()
        finally:
            del held
