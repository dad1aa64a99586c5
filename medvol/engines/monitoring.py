"""Training monitor: TensorBoard scalars, sample grids / tri-planar montages (PNG + TensorBoard), a progress bar.

Attach to a medvol trainer (``monitor=TrainingMonitor(run_dir="RUN")``, or ``monitor=True``). Every iteration it logs
to ``RUN/tensorboard``: every float in ``engine.state.output`` (losses, ``critic/gradient_penalty``,
``critic/wasserstein``, ...), the learning rate of every optimiser (``lr/<name>``), ``time/seconds_per_step``,
``time/samples_per_second`` and ``memory/peak_bytes`` (``torch.cuda.max_memory_allocated`` on CUDA, the process's
peak resident set size on CPU). Every ``sample_interval`` iterations it renders ``trainer.sample(count)`` as one
image: a grid of 2D images, or for 3D one row per volume with its central axial, coronal and sagittal slices, written
to ``RUN/samples/iteration_<N>.png`` and to TensorBoard. The latents for those samples are drawn once from a private
generator, so successive grids show the same latent codes and monitoring never moves the training RNG.
"""

from __future__ import annotations

import math
import os
import resource
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monai.utils import IgniteInfo, min_version, optional_import

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
SummaryWriter, has_tensorboard = optional_import("torch.utils.tensorboard", name="SummaryWriter")
tqdm, has_tqdm = optional_import("tqdm", name="tqdm")
Image, has_pil = optional_import("PIL", name="Image")

from medvol.report.figures import sample_montage, triplanar_views

__all__ = ["TrainingMonitor", "sample_montage", "triplanar_views"]


def _peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


class TrainingMonitor:
    """TensorBoard scalars, sample pictures and a console progress bar for a medvol trainer.

    Args:
        run_dir: run folder (``tensorboard/`` and ``samples/`` go under it); None: no files.
        sample_interval: render samples every this many iterations (0: never; the last iteration always, when > 0).
        sample_count: images per picture (volumes per montage in 3D).
        progress: show a tqdm progress bar with ETA.
        tensorboard: write TensorBoard event files.
        seed: seeds the fixed latents of the sample pictures.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike | None = None,
        sample_interval: int = 0,
        sample_count: int = 16,
        progress: bool = True,
        tensorboard: bool = True,
        seed: int = 0,
    ):
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.sample_interval = int(sample_interval)
        self.sample_count = int(sample_count)
        self.progress = progress and has_tqdm
        self.tensorboard = tensorboard and has_tensorboard and self.run_dir is not None
        self.seed = seed
        self.writer = None
        self.bar = None
        self.sample_paths: list[Path] = []

    def attach(self, engine: Any) -> None:
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        engine.add_event_handler(Events.COMPLETED, self._completed)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self._closed_on_error)

    def _total(self, engine: Any) -> int | None:
        if engine.state.max_iters is not None:
            return int(engine.state.max_iters)
        if engine.state.max_epochs is not None and engine.state.epoch_length is not None:
            return int(engine.state.max_epochs * engine.state.epoch_length)
        return None

    def _started(self, engine: Any) -> None:
        if self.tensorboard and self.writer is None:
            self.writer = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))
        if self.progress and self.bar is None:
            self.bar = tqdm(total=self._total(engine), initial=engine.state.iteration, desc="train", unit="step", dynamic_ncols=True)

    def _scalars(self, engine: Any) -> dict[str, float]:
        output = engine.state.output if isinstance(engine.state.output, dict) else {}
        scalars = {k: float(v) for k, v in output.items() if isinstance(v, (int, float)) and "/" in k}
        for name, optimizer in getattr(engine, "optimizers", {}).items():
            scalars[f"lr/{name}"] = float(optimizer.param_groups[0]["lr"])
        scalars["time/seconds_per_step"] = float(engine.state.iteration_seconds)
        scalars["time/samples_per_second"] = float(engine.state.samples_per_second)
        scalars["memory/peak_bytes"] = float(_peak_memory_bytes(engine.state.device))
        if getattr(engine, "plan", None) is not None:
            scalars["memory/micro_batch"] = float(engine.plan.micro_batch)
        return scalars

    def _iteration_completed(self, engine: Any) -> None:
        iteration = engine.state.iteration
        scalars = self._scalars(engine)
        if self.writer is not None:
            for name, value in scalars.items():
                if math.isfinite(value):
                    self.writer.add_scalar(name, value, iteration)
        if self.bar is not None:
            shown = {k.split("/", 1)[1][:6] if k.startswith(("critic/", "generator/")) else k: v for k, v in scalars.items() if k.endswith("loss")}
            self.bar.set_postfix({k: f"{v:.3g}" for k, v in shown.items()}, refresh=False)
            self.bar.update(1)
        total = self._total(engine)
        if self.sample_interval > 0 and (iteration % self.sample_interval == 0 or iteration == total):
            self.write_samples(engine)

    def write_samples(self, engine: Any) -> Path | None:
        """Render ``engine.sample(sample_count)`` to ``samples/iteration_<N>.png`` and TensorBoard."""
        generator = torch.Generator().manual_seed(self.seed)
        images = engine.sample(self.sample_count, generator=generator)
        picture = sample_montage(images)
        path = None
        if self.run_dir is not None and has_pil:
            folder = self.run_dir / "samples"
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"iteration_{engine.state.iteration:08d}.png"
            Image.fromarray(picture).save(path)
            self.sample_paths.append(path)
        if self.writer is not None:
            self.writer.add_image("samples", picture[None], engine.state.iteration, dataformats="CHW")
        return path

    def _close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
            self.writer = None
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _completed(self, engine: Any) -> None:
        self._close()

    def _closed_on_error(self, engine: Any, error: BaseException) -> None:
        self._close()
        raise error
