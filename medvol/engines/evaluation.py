"""Evaluation during training: FID and diversity of generated samples against the validation split, as TensorBoard
curves, with the checkpoint of the lowest FID kept as the run's ``best``.

Attach to a medvol trainer (``train_handlers=[TrainingEvaluator(evaluate_every=500, run_dir="RUN", datalist=...)]``;
the bundles wire it from their ``evaluate_every`` parameter). At the start of training it loads the validation split
(at most ``max_samples`` images) and builds the feature space once from the training split
(`medvol.evaluation.features.build_feature_extractor`: a classifier trained on the real training images when they are
labelled, else an autoencoder's encoder), cached in ``RUN/evaluation/features`` so that a resumed run reuses it.
Every ``evaluate_every`` iterations, and at the last iteration, it

1. generates as many images as it holds validation images, the way ``medvol sample`` does
   (`medvol.sampling.generate`: the EMA generator when the trainer keeps one), from latents drawn once from a private
   seeded generator, so successive evaluations see the same latent codes; a class-conditional generator gets its
   labels in the validation split's class proportions;
2. computes the FID between their features and the validation images' (`medvol.metrics.fidelity.frechet_distance`)
   and their within-set diversity (`medvol.metrics.diversity.diversity_report`: mean pairwise voxel distance, averaged
   over the classes for a conditional generator, next to the same number for the validation images, and the
   mode-collapse flag);
3. logs ``evaluation/fid``, ``evaluation/diversity``, ``evaluation/diversity_real``, ``evaluation/ms_ssim`` and
   ``evaluation/mode_collapse`` to TensorBoard (the monitor's event file when there is one), one line to the log, and
   the evaluation to ``RUN/evaluation/history.json``;
4. when the FID is the lowest so far, saves the trainer's checkpoint for this iteration with the FID as its metric,
   so ``RUN/checkpoints/latest.json`` names it under ``best`` (``medvol sample RUN --checkpoint best``).

Training is not changed by any of this: every random-number-generator state (torch, CUDA, numpy, Python) and the
determinism flags are restored after each step of the evaluation, networks go back to their training mode, and a
checkpoint written for an evaluation holds exactly the state a periodic checkpoint of that iteration would hold, so
resumed runs stay bitwise equal to uninterrupted ones.

Distributed runs evaluate on rank 0 only (the bundles attach the handler there alone; on another rank it does
nothing). The evaluation uses the networks without their DistributedDataParallel wrapper and no collective, so it
cannot deadlock; the other ranks simply wait in their next gradient all-reduce until rank 0 is back, which must happen
within the process group's timeout (building the feature space at the start is the longest part).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monai.utils import IgniteInfo, min_version, optional_import

from medvol.data.datasets import build_dataset, seeded_subset, stack_samples
from medvol.defaults import AUTO_EVALUATION_MIN_ITERATIONS, AUTO_EVALUATIONS
from medvol.engines.checkpoint import atomic_write_bytes, capture_rng_state, restore_rng_state
from medvol.engines.distributed import is_rank_zero, unwrapped

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
SummaryWriter, has_tensorboard = optional_import("torch.utils.tensorboard", name="SummaryWriter")

__all__ = ["TrainingEvaluator", "evaluation_interval", "class_proportional_labels"]

logger = logging.getLogger(__name__)

EVALUATION_DIR = "evaluation"
HISTORY_FILE = "history.json"
MIN_VALIDATION_SAMPLES = 2


def evaluation_interval(evaluate_every: int | str | None, total_iterations: int | None) -> int:
    """The evaluation interval in iterations (0: no evaluation).

    Args:
        evaluate_every: a number of iterations (0 or None: off), or ``"auto"``: every tenth of the run for runs of at
            least `AUTO_EVALUATION_MIN_ITERATIONS` iterations, off for shorter ones.
        total_iterations: iterations the run trains to (None when unknown).
    """
    if evaluate_every is None or evaluate_every is False:
        return 0
    if isinstance(evaluate_every, str) and evaluate_every.strip().lower() == "auto":
        if total_iterations is None or total_iterations < AUTO_EVALUATION_MIN_ITERATIONS:
            return 0
        return max(1, int(total_iterations) // AUTO_EVALUATIONS)
    interval = int(evaluate_every)
    if interval < 0:
        raise ValueError(f"evaluate_every must be 0 (off), a positive number of iterations or 'auto', got {evaluate_every}")
    return interval


def class_proportional_labels(labels: np.ndarray, count: int, num_classes: int) -> np.ndarray:
    """`count` class indices in the proportions of `labels` (largest remainders; sorted by class; no randomness).

    Args:
        labels: class index of each reference image (-1 entries are ignored).
        count: labels to return.
        num_classes: number of classes; with no labelled reference image the classes get equal shares.
    """
    known = np.asarray(labels, dtype=np.int64)
    known = known[(known >= 0) & (known < num_classes)]
    shares = np.bincount(known, minlength=num_classes).astype(np.float64)
    if shares.sum() == 0:
        shares[:] = 1.0
    exact = shares / shares.sum() * count
    counts = np.floor(exact).astype(np.int64)
    for index in np.argsort(-(exact - counts), kind="stable")[: count - int(counts.sum())]:
        counts[index] += 1
    return np.repeat(np.arange(num_classes), counts)


@contextmanager
def _training_state_preserved() -> Iterator[None]:
    """Restore every random-number-generator state and the determinism flags on exit."""
    rng = capture_rng_state()
    flags = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(flags[0], warn_only=flags[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags[2], flags[3]
        restore_rng_state(rng)


class TrainingEvaluator:
    """FID and diversity against the validation split every `evaluate_every` iterations; keeps the best checkpoint.

    Give the real data either as a prepared datalist (`datalist` with the training `dataset_options`; the datasets
    are built only when evaluation is on) or directly as datasets (`validation_data`, `training_data`: items
    ``{"image", "label"}`` or tensors). See the module docstring for what happens at each evaluation.

    Args:
        evaluate_every: iterations between evaluations; 0 or None: off; ``"auto"``: see `evaluation_interval`.
        run_dir: run folder: ``evaluation/`` (feature-space cache, ``history.json``) and ``tensorboard/``.
        datalist: ``datalist.json`` of the training data (validation and training splits are read from it).
        dataset_options: `medvol.data.datasets.build_dataset` options of the training run (augmentation is ignored).
        validation_data: the validation images instead of `datalist`.
        training_data: the training images for the feature space instead of `datalist`.
        feature_extractor: ``extractor(images [N, 1, ...] in [-1, 1]) -> features [N, F]``; None: built from the
            training split with `medvol.evaluation.features.build_feature_extractor`.
        family: the model family (``cae`` and ``vae`` need it: it says how they generate; ``cae`` also needs
            `datalist`); None for the GAN families.
        value_range: intensity range of the training images and of the generated ones; mapped to [-1, 1], the range
            of the feature space (autoencoders: [0, 1]).
        max_samples: at most this many validation images (a seeded subset), and as many generated ones.
        feature_samples: at most this many training images (a seeded subset) to build the feature space from: on a
            CPU its training is the costly part of the evaluation (mednist64, 1800 images, 20 epochs: 12 CPU minutes).
        feature_epochs: training epochs of the feature network (None: the default of `build_feature_extractor`).
        features_path: a user feature network (TorchScript or medvol classifier checkpoint) instead of training one.
        keep_best: save the checkpoint of each new lowest FID with the FID as its metric (the trainer needs a
            checkpoint folder, no other ``best_metric`` and ``best_mode="min"``).
        tensorboard: log the scalars to TensorBoard (the trainer's monitor's writer, else ``run_dir/tensorboard``).
        diversity_pairs: image pairs per set and class for the diversity numbers.
        seed: seeds the generated latents and the subsets.
    """

    def __init__(
        self,
        *,
        evaluate_every: int | str | None = "auto",
        run_dir: str | os.PathLike | None = None,
        datalist: str | os.PathLike | None = None,
        dataset_options: Mapping[str, Any] | None = None,
        validation_data: Any = None,
        training_data: Any = None,
        feature_extractor: Callable[[torch.Tensor], np.ndarray] | None = None,
        family: str | None = None,
        value_range: Sequence[float] = (-1.0, 1.0),
        max_samples: int = 512,
        feature_samples: int = 1024,
        feature_epochs: int | None = None,
        features_path: str | os.PathLike | None = None,
        keep_best: bool = True,
        tensorboard: bool = True,
        diversity_pairs: int = 128,
        seed: int = 0,
    ):
        evaluation_interval(evaluate_every, None)  # rejects bad values now, not after the feature space is built
        if max_samples < MIN_VALIDATION_SAMPLES:
            raise ValueError(f"max_samples must be at least {MIN_VALIDATION_SAMPLES}, got {max_samples}")
        self.evaluate_every = evaluate_every
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.datalist = None if datalist is None else str(datalist)
        self.dataset_options = {k: v for k, v in dict(dataset_options or {}).items() if k != "augment"}
        self.validation_data = validation_data
        self.training_data = training_data
        self.feature_extractor = feature_extractor
        self.family = family
        self.value_range = (float(value_range[0]), float(value_range[1]))
        self.max_samples = int(max_samples)
        self.feature_samples = int(feature_samples)
        self.feature_epochs = feature_epochs
        self.features_path = features_path
        self.keep_best = keep_best
        self.tensorboard = tensorboard and has_tensorboard
        self.diversity_pairs = int(diversity_pairs)
        self.seed = int(seed)
        self.interval = 0
        self.total: int | None = None
        self.history: list[dict[str, Any]] = []
        self.classes: list[str] = []
        self.writer = None
        self._own_writer = False
        self._prepared = False
        self._temporary: tempfile.TemporaryDirectory | None = None

    # ---- wiring -------------------------------------------------------------------------------------------------
    def attach(self, engine: Any) -> None:
        if str(self.evaluate_every).strip().lower() != "auto" and evaluation_interval(self.evaluate_every, None) == 0:
            return
        if self.keep_best and getattr(engine, "checkpoints", None) is not None:
            if getattr(engine, "best_metric", None) is not None:
                raise ValueError(
                    f"the trainer already ranks its checkpoints by best_metric={engine.best_metric!r}: "
                    "give the evaluator keep_best=False, or the trainer best_metric=None"
                )
            if engine.checkpoints.best_mode != "min":
                raise ValueError("the evaluator keeps the lowest FID: the trainer needs best_mode='min'")
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        engine.add_event_handler(Events.COMPLETED, self._completed)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self._closed_on_error)

    @property
    def active(self) -> bool:
        return self._prepared and self.interval > 0

    @property
    def evaluation_dir(self) -> Path | None:
        return None if self.run_dir is None else self.run_dir / EVALUATION_DIR

    def _total(self, engine: Any) -> int | None:
        if engine.state.max_iters is not None:
            return int(engine.state.max_iters)
        if engine.state.max_epochs is not None and engine.state.epoch_length is not None:
            return int(engine.state.max_epochs * engine.state.epoch_length)
        return None

    def _started(self, engine: Any) -> None:
        if self._prepared:
            self._open_writer(engine)  # the same trainer run again: the monitor has a new writer
            return
        if not is_rank_zero():
            return
        self.total = self._total(engine)
        self.interval = evaluation_interval(self.evaluate_every, self.total)
        if self.interval == 0:
            logger.debug("evaluation during training is off (evaluate_every=%s, %s iterations)", self.evaluate_every, self.total)
            return
        started = time.perf_counter()
        ready = self._prepare(engine)
        if not ready:
            self.interval = 0
            return
        self._prepared = True
        self._load_history(int(engine.state.iteration))
        if self.history and (getattr(self.feature_extractor, "info", None) or {}).get("reused_cache") is False:
            self._log(
                engine, logging.WARNING,
                "the feature space was rebuilt (the training data or its settings changed): FIDs from now on are not "
                "comparable with the %d earlier evaluations in %s, nor with the best checkpoint they chose",
                len(self.history), self.history_path,
            )
        self._log(
            engine, logging.INFO,
            "evaluation every %d iterations on %d validation images (feature space: %s; ready in %.1f s)",
            self.interval, len(self.real_images), getattr(self.feature_extractor, "kind", "given"),
            time.perf_counter() - started,
        )

    # ---- data and feature space ---------------------------------------------------------------------------------
    def _split(self, name: str, given: Any, limit: int) -> tuple[torch.Tensor, np.ndarray]:
        if given is not None:
            if isinstance(given, (tuple, list)) and len(given) == 2 and isinstance(given[0], torch.Tensor):
                images, labels = given
                labels = np.full(len(images), -1, dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64)
                chosen = seeded_subset(len(images), limit, self.seed)
                return images[torch.as_tensor(chosen)].float(), labels[chosen]
            return stack_samples(given, seeded_subset(len(given), limit, self.seed), desc=f"{name} data")
        if self.datalist is None:
            raise ValueError(f"the evaluator needs a datalist or {name}_data")
        path = Path(self.datalist)
        document = json.loads((path / "datalist.json" if path.is_dir() else path).read_text())
        self.classes = list(document.get("classes") or [])
        if not document.get(name):
            return torch.empty(0), np.zeros(0, dtype=np.int64)
        dataset = build_dataset(self.datalist, split=name, **self.dataset_options)
        return stack_samples(dataset, seeded_subset(len(dataset), limit, self.seed), desc=str(self.datalist))

    def _to_feature_range(self, images: torch.Tensor) -> torch.Tensor:
        low, high = self.value_range
        if (low, high) == (-1.0, 1.0):
            return images.float()
        return (images.float() - low) / (high - low) * 2.0 - 1.0

    def _prepare(self, engine: Any) -> bool:
        with _training_state_preserved():
            return self._load_real_data(engine)

    def _load_real_data(self, engine: Any) -> bool:
        validation_images, validation_labels = self._split("validation", self.validation_data, self.max_samples)
        where = self.datalist or "validation_data"
        if len(validation_images) < MIN_VALIDATION_SAMPLES:
            self._log(
                engine, logging.WARNING,
                "%s: the validation split holds %d samples: no evaluation during training (FID needs at least %d; "
                "prepare the data with a validation fraction, e.g. --split 0.6,0.2,0.2)",
                where, len(validation_images), MIN_VALIDATION_SAMPLES,
            )
            return False
        self.real_images = self._to_feature_range(validation_images)
        self.real_labels = validation_labels
        device = engine.state.device
        if self.feature_extractor is None:
            self.feature_extractor = self._build_feature_extractor(device)
        self.real_features = np.asarray(self.feature_extractor(self.real_images), dtype=np.float64)
        self.num_classes = int(getattr(engine, "num_classes", 0) or 0)
        count = len(self.real_images)
        self.labels: list[int | None] = [None] * count
        if self.num_classes > 0:
            self.labels = [int(c) for c in class_proportional_labels(self.real_labels, count, self.num_classes)]
        if not self.classes:
            self.classes = [str(c) for c in range(int(max(self.real_labels.max(initial=-1) + 1, self.num_classes)))]
        self._open_writer(engine)
        return True

    def _build_feature_extractor(self, device: torch.device) -> Callable[[torch.Tensor], np.ndarray]:
        from medvol.evaluation.features import build_feature_extractor

        train_images, train_labels = self._split("training", self.training_data, self.feature_samples)
        labelled = len(train_labels) > 0 and bool(np.all(train_labels >= 0))
        num_classes = int(train_labels.max() + 1) if labelled else 0
        if self.classes and labelled:
            num_classes = max(num_classes, len(self.classes))
        if self.evaluation_dir is not None:
            out_dir = self.evaluation_dir / "features"
        else:
            self._temporary = tempfile.TemporaryDirectory(prefix="medvol-evaluation-")
            out_dir = Path(self._temporary.name)
        return build_feature_extractor(
            self._to_feature_range(train_images),
            train_labels if labelled else np.full(len(train_labels), -1, dtype=np.int64),
            num_classes,
            out_dir,
            seed=self.seed,
            epochs=self.feature_epochs,
            features_path=self.features_path,
            device=device,
        )

    def _open_writer(self, engine: Any) -> None:
        if not self.tensorboard:
            return
        monitor_writer = getattr(getattr(engine, "monitor", None), "writer", None)
        if monitor_writer is not None:
            self.writer = monitor_writer
        elif self.run_dir is not None:
            self.writer = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))
            self._own_writer = True

    # ---- evaluation ---------------------------------------------------------------------------------------------
    def _iteration_completed(self, engine: Any) -> None:
        if not self.active:
            return
        iteration = int(engine.state.iteration)
        if iteration % self.interval != 0 and iteration != self.total:
            return
        self._record(engine, self.evaluate(engine))

    @torch.no_grad()
    def generate(self, engine: Any) -> torch.Tensor:
        """The evaluation's generated images (fixed latents and labels), float32 in [-1, 1], on the CPU."""
        from medvol.runs import RunRecord
        from medvol.sampling import generate

        if hasattr(engine, "generator"):
            network = engine.ema_generator if getattr(engine, "ema_generator", None) is not None else engine.generator
            networks = {"generator": unwrapped(network)}
        else:
            if self.family is None:
                raise ValueError("evaluating an autoencoder needs its family ('cae' or 'vae'): it says how it generates")
            networks = {"autoencoder": unwrapped(engine.network)}
        size = list(self.real_images.shape[2:])
        record = RunRecord(family=self.family or "gan", spatial_dims=len(size), image_size=size, datalist=self.datalist,
                           dataset_options=self.dataset_options)
        modes = {name: net.training for name, net in networks.items()}
        for net in networks.values():
            net.eval()
        try:
            images = generate(record, networks, self.labels, seed=self.seed, device=engine.state.device)
        finally:
            for name, net in networks.items():
                net.train(modes[name])
        return self._to_feature_range(images)

    def evaluate(self, engine: Any) -> dict[str, Any]:
        """FID and diversity of the current generator (see the module docstring); changes no state of the training."""
        with _training_state_preserved():
            return self._evaluate(engine)

    def _evaluate(self, engine: Any) -> dict[str, Any]:
        from medvol.metrics.diversity import diversity_report
        from medvol.metrics.fidelity import frechet_distance

        started = time.perf_counter()
        images = self.generate(engine)
        if not bool(torch.isfinite(images).all()):
            return {"iteration": int(engine.state.iteration), "fid": None, "diversity": None,
                    "diversity_real": None, "ms_ssim": None, "ms_ssim_real": None, "mode_collapse": False,
                    "mode_collapse_reason": "", "samples": int(images.shape[0]), "non_finite": True,
                    "seconds": round(time.perf_counter() - started, 3)}
        features = np.asarray(self.feature_extractor(images), dtype=np.float64)
        fid = float(frechet_distance(self.real_features, features))
        synthetic_labels = np.asarray([-1 if c is None else c for c in self.labels], dtype=np.int64)
        diversity = diversity_report(
            images, synthetic_labels, self.real_images, self.real_labels, self.classes,
            max_pairs=self.diversity_pairs, seed=self.seed,
        )
        per_class = [e for e in diversity["per_class"].values() if e["distance_synthetic"] is not None and e["distance_real"] is not None]
        if self.num_classes > 0 and per_class:
            synthetic = float(np.mean([e["distance_synthetic"] for e in per_class]))
            real = float(np.mean([e["distance_real"] for e in per_class]))
        else:
            synthetic, real = diversity["distance_synthetic"], diversity["distance_real"]
        return {
            "iteration": int(engine.state.iteration),
            "fid": fid,
            "diversity": synthetic,
            "diversity_real": real,
            "ms_ssim": diversity["ms_ssim_synthetic"],
            "ms_ssim_real": diversity["ms_ssim_real"],
            "mode_collapse": bool(diversity["mode_collapse"]),
            "mode_collapse_reason": diversity["mode_collapse_reason"],
            "samples": int(images.shape[0]),
            "seconds": round(time.perf_counter() - started, 3),
        }

    def _record(self, engine: Any, result: dict[str, Any]) -> None:
        iteration = result["iteration"]
        if self.writer is not None:
            for key in ("fid", "diversity", "diversity_real", "ms_ssim", "mode_collapse"):
                value = result[key]
                if value is not None and math.isfinite(float(value)):
                    self.writer.add_scalar(f"evaluation/{key}", float(value), iteration)
            self.writer.flush()
        best = self._save_if_best(engine, result)
        self.history.append(result)
        self._write_history(best)
        best_text = "" if best is None else f" (best {best['metric']:.4g} at iteration {best['iteration']})"
        if result.get("non_finite"):
            self._log(engine, logging.WARNING, "evaluation at iteration %d: the generator returned non-finite values: no FID%s",
                      iteration, best_text)
            return
        collapse = ""
        if result["mode_collapse"]:
            reasons = result["mode_collapse_reason"].split("; ")
            more = f" (+{len(reasons) - 1} more in {self.history_path})" if len(reasons) > 1 and self.history_path else ""
            collapse = f"; possible mode collapse: {reasons[0]}{more}"
        self._log(
            engine, logging.INFO,
            "evaluation at iteration %d: FID %.4g%s, diversity %.3g (validation %.3g)%s",
            iteration, result["fid"], best_text, result["diversity"], result["diversity_real"], collapse,
        )

    @staticmethod
    def _log(engine: Any, level: int, message: str, *args: Any) -> None:
        """Log one line without breaking the monitor's progress bar (it is cleared and redrawn around the line)."""
        bar = getattr(getattr(engine, "monitor", None), "bar", None)
        with type(bar).external_write_mode(file=sys.stderr) if bar is not None else nullcontext():
            logger.log(level, message, *args)

    def _save_if_best(self, engine: Any, result: dict[str, Any]) -> dict[str, Any] | None:
        """Save this iteration's checkpoint with the FID as metric when it is the lowest so far; the best entry."""
        checkpoints = getattr(engine, "checkpoints", None)
        if not self.keep_best or checkpoints is None:
            return None
        best = (checkpoints.read_pointer() or {}).get("best")
        fid = result["fid"]
        if fid is not None and math.isfinite(fid) and (best is None or fid < best["metric"]):
            # the same state a periodic checkpoint of this iteration holds: resuming from it changes nothing
            path = checkpoints.save(engine.state_dict(), iteration=result["iteration"], metric=fid)
            engine.last_checkpoint = str(path)
            best = (checkpoints.read_pointer() or {}).get("best")
            result["checkpoint"] = path.name
        return best

    # ---- history ------------------------------------------------------------------------------------------------
    @property
    def history_path(self) -> Path | None:
        return None if self.evaluation_dir is None else self.evaluation_dir / HISTORY_FILE

    def _load_history(self, resumed_iteration: int) -> None:
        """Earlier evaluations of this run up to the iteration it resumes from (later ones are redone)."""
        path = self.history_path
        if path is None or not path.is_file():
            return
        try:
            entries = json.loads(path.read_text()).get("evaluations", [])
        except (OSError, json.JSONDecodeError, AttributeError):
            logger.warning("%s is unreadable: starting a new evaluation history", path)
            return
        self.history = [e for e in entries if int(e.get("iteration", 0)) <= resumed_iteration]

    def _write_history(self, best: dict[str, Any] | None) -> None:
        path = self.history_path
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "metric": "fid",
            "mode": "min",
            "interval": self.interval,
            "validation_samples": len(self.real_images),
            "feature_extractor": str(getattr(self.feature_extractor, "description", type(self.feature_extractor).__name__)),
            "best": best,
            "evaluations": self.history,
        }
        atomic_write_bytes(path, (json.dumps(document, indent=2) + "\n").encode())

    # ---- closing ------------------------------------------------------------------------------------------------
    def _close(self) -> None:
        if self.writer is not None and self._own_writer:
            self.writer.close()
        self.writer = None
        self._own_writer = False
        if self._temporary is not None:
            self._temporary.cleanup()
            self._temporary = None

    def _completed(self, engine: Any) -> None:
        self._close()

    def _closed_on_error(self, engine: Any, error: BaseException) -> None:
        self._close()
        raise error
