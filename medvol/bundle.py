"""MONAI bundles of medvol: find a bundle by name, load its configs with overrides, run its workflows.

Every family (cae, vae, gan, dcgan, wgan, wgan_gp, cgan, acwgan_gp) is a MONAI bundle under ``bundles/<family>/``
(``configs/{metadata.json, train.yaml, sample.yaml, multi_gpu_train.yaml, logging.conf}`` + ``docs/README.md``).
The wiring they share lives once in ``bundles/common/configs/``; a family config pulls its sections in with MONAI
macros such as ``"%bundles/common/configs/train.yaml#train"``. MONAI resolves such macro paths against the working
directory, so ``python -m monai.bundle run --config_file bundles/NAME/configs/train.yaml`` works from the repository
root; :func:`load_workflow` rewrites them to absolute paths so that ``medvol train`` works from anywhere.

``medvol train``/``sample`` never wire training by hand: they build overrides and run the same bundle workflows.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from monai.bundle import ConfigParser, ConfigWorkflow
from monai.bundle.utils import MACRO_KEY
from torch.nn.parallel import DistributedDataParallel

from medvol import __version__
from medvol.engines.checkpoint import CheckpointManager
from medvol.errors import MedvolInputError
from medvol.networks.factory import FAMILIES

__all__ = [
    "FAMILIES",
    "BUNDLES_DIR",
    "resolve_bundle",
    "bundle_config_files",
    "load_workflow",
    "create_workflow",
    "run_workflow",
    "input_errors_unwrapped",
    "resolved_config",
    "torchrun_command",
    "run_torchrun",
    "datalist_path",
    "class_count",
    "training_dataset",
    "fit_batch_size",
    "place_networks",
    "DistributedNetwork",
    "is_rank_zero",
    "every",
    "scalar_outputs",
    "write_run_record",
    "init_distributed",
    "distributed_device",
    "RankZeroCheckpoints",
    "follow_rank_zero",
    "finish_distributed",
    "TrainingTimeLimit",
]

logger = logging.getLogger(__name__)

# ``MEDVOL_BUNDLES`` points at another bundles folder (its parent is then the root macro paths are relative to).
BUNDLES_DIR = Path(os.environ.get("MEDVOL_BUNDLES", Path(__file__).resolve().parents[1] / "bundles"))
WORKFLOW_FILES = {"train": "train.yaml", "sample": "sample.yaml", "evaluate": "evaluate.yaml"}
MULTI_GPU_FILE = "multi_gpu_train.yaml"
REFERENCE_SAMPLES = 16  # training samples whose intensity records and geometry run.json summarises


def resolve_bundle(name: str | os.PathLike) -> Path:
    """The folder of a bundle given its family name (``wgan_gp``) or a path to a bundle folder.

    Args:
        name: a family name of `FAMILIES`, or a folder that holds ``configs/train.yaml``.

    Raises:
        MedvolInputError: neither a known name nor a bundle folder; the message lists the available bundles.
    """
    text = str(name)
    candidates = [BUNDLES_DIR / text] if text in FAMILIES else []
    candidates.append(Path(text).expanduser())
    for folder in candidates:
        if (folder / "configs" / WORKFLOW_FILES["train"]).is_file():
            return folder.resolve()
    available = ", ".join(f for f in FAMILIES if (BUNDLES_DIR / f / "configs").is_dir())
    raise MedvolInputError(text, f"not a medvol bundle (no configs/train.yaml); available bundles: {available}")


def bundle_config_files(bundle: str | os.PathLike, workflow: str = "train", distributed: bool = False) -> list[Path]:
    """The config files of one workflow of a bundle, in the order MONAI merges them.

    Args:
        bundle: a bundle name or folder (see `resolve_bundle`).
        workflow: ``train``, ``sample`` or ``evaluate``.
        distributed: append ``multi_gpu_train.yaml`` (training only).
    """
    if workflow not in WORKFLOW_FILES:
        raise ValueError(f"workflow must be one of {sorted(WORKFLOW_FILES)}, got {workflow!r}")
    configs = resolve_bundle(bundle) / "configs"
    files = [configs / WORKFLOW_FILES[workflow]]
    if distributed:
        if workflow != "train":
            raise ValueError("only the train workflow runs distributed")
        files.append(configs / MULTI_GPU_FILE)
    return files


def _anchor_macro(value: str, root: Path) -> str:
    """``%relative/file.yaml#id`` -> ``%/root/relative/file.yaml#id`` when the file is found under `root`."""
    path, ids = ConfigParser.split_path_id(value[len(MACRO_KEY) :])
    if not path or Path(path).is_absolute() or not (root / path).is_file():
        return value
    return f"{MACRO_KEY}{(root / path).as_posix()}" + (f"#{ids}" if ids else "")


def _anchor_macros(config: Any, root: Path) -> Any:
    """Rewrite every file macro in `config` (nested dicts/lists) to an absolute path under `root`."""
    if isinstance(config, dict):
        return {key: _anchor_macros(value, root) for key, value in config.items()}
    if isinstance(config, list):
        return [_anchor_macros(value, root) for value in config]
    if isinstance(config, str) and config.startswith(MACRO_KEY):
        return _anchor_macro(config, root)
    return config


def load_workflow(
    bundle: str | os.PathLike,
    workflow: str = "train",
    overrides: Mapping[str, Any] | None = None,
    distributed: bool = False,
    logging_file: str | bool | None = False,
) -> ConfigWorkflow:
    """A MONAI `ConfigWorkflow` of a bundle with its config loaded, macros expanded and `overrides` applied (not
    initialised: nothing is built or run yet).

    Args:
        bundle: a bundle name or folder (see `resolve_bundle`).
        workflow: ``train``, ``sample`` or ``evaluate``.
        overrides: config ids to values, as ``python -m monai.bundle run --ID VALUE`` (e.g. ``{"spatial_dims": 3,
            "dataset_dir": "/data/prepared"}``). Unlike on MONAI's command line, ids inside the shared sections
            (``"train#dataloader#num_workers"``) work too: they are applied after the macros are expanded.
        distributed: add ``multi_gpu_train.yaml`` (the process must have been started by torchrun).
        logging_file: the bundle's ``logging.conf`` when None, a path, or False to leave Python logging as it is.
    """
    files = bundle_config_files(bundle, workflow, distributed)
    root = BUNDLES_DIR.parent
    overrides = {key: _anchor_macros(value, root) for key, value in (overrides or {}).items()}
    top_level = {key: value for key, value in overrides.items() if "#" not in key and "::" not in key}
    # MONAI warns "Logging file is set to False, skipping logging." when asked to leave logging alone
    workflows_logger = logging.getLogger("monai.bundle.workflows")
    level = workflows_logger.level
    if logging_file is False:
        workflows_logger.setLevel(logging.ERROR)
    try:
        config_workflow = ConfigWorkflow(
            config_file=[str(f) for f in files],
            meta_file=str(files[0].parent / "metadata.json"),
            logging_file=logging_file if logging_file is not None else str(files[0].parent / "logging.conf"),
            workflow_type="train" if workflow == "train" else "infer",
            **top_level,
        )
    finally:
        workflows_logger.setLevel(level)
    parser = config_workflow.parser
    parser.set(_anchor_macros(parser.get(), root))
    parser.resolve_macro_and_relative_ids()
    parser.update({key: value for key, value in overrides.items() if key not in top_level})
    return config_workflow


def create_workflow(
    bundle: str | os.PathLike,
    workflow: str = "train",
    overrides: Mapping[str, Any] | None = None,
    distributed: bool = False,
    logging_file: str | bool | None = False,
) -> ConfigWorkflow:
    """`load_workflow`, then initialised (the ``initialize`` expressions ran); ready to `run()`."""
    config_workflow = load_workflow(bundle, workflow, overrides, distributed, logging_file)
    config_workflow.initialize()
    return config_workflow


@contextlib.contextmanager
def input_errors_unwrapped():
    """Re-raise a `MedvolInputError` that MONAI wrapped while evaluating a config expression (``RuntimeError: Failed
    to evaluate ConfigExpression``) as itself, so that the CLI reports it in one line."""
    try:
        yield
    except RuntimeError as error:
        cause = error
        while cause is not None and not isinstance(cause, MedvolInputError):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        raise cause from None


def run_workflow(
    bundle: str | os.PathLike,
    workflow: str = "train",
    overrides: Mapping[str, Any] | None = None,
    distributed: bool = False,
    logging_file: str | bool | None = False,
) -> ConfigWorkflow:
    """Create (see `create_workflow`), run and finalise a bundle workflow; returns the finished workflow.

    Raises:
        MedvolInputError: bad input found while the workflow is built or run (not wrapped in MONAI's RuntimeError).
    """
    with input_errors_unwrapped():
        config_workflow = create_workflow(bundle, workflow, overrides, distributed, logging_file)
        try:
            config_workflow.run()
        finally:
            config_workflow.finalize()
    return config_workflow


def resolved_config(config_workflow: ConfigWorkflow) -> dict:
    """The config a workflow runs (macros expanded, overrides applied, references kept), for ``RUN/config.yaml``."""
    config_workflow.parser.resolve_macro_and_relative_ids()
    config = dict(config_workflow.parser.get())
    config.pop(config_workflow.parser.meta_key, None)
    return _plain_json(config, fallback=str)


def torchrun_command(
    nproc: int, bundle: str | os.PathLike, overrides: Mapping[str, Any], workflow: str = "train"
) -> list[str]:
    """The ``torchrun`` command line that trains `bundle` with `nproc` processes through ``monai.bundle run``.

    Args:
        nproc: processes on this machine (one per GPU; CPU runs use the gloo backend).
        bundle: a bundle name or folder.
        overrides: root-level config ids to values; each becomes ``--ID VALUE`` (values in Python literal syntax,
            which ``python -m monai.bundle`` parses with `fire`). MONAI applies them before expanding the macros, so
            ids inside the shared sections (``train#...``) cannot be overridden this way.
        workflow: ``train``.
    """
    nested = [key for key in overrides if "#" in key or "::" in key]
    if nested:
        raise ValueError(f"monai.bundle's command line cannot override ids inside the shared sections: {nested}")
    files = [str(f) for f in bundle_config_files(bundle, workflow, distributed=True)]
    configs = resolve_bundle(bundle) / "configs"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        repr(files),
        "--meta_file",
        str(configs / "metadata.json"),
        "--logging_file",
        str(configs / "logging.conf"),
    ]
    for key, value in overrides.items():
        command += [f"--{key}", repr(_anchor_macros(value, BUNDLES_DIR.parent))]
    return command


def run_torchrun(command: Sequence[str], cwd: str | os.PathLike | None = None) -> int:
    """Run a `torchrun_command` from the repository root (where the configs' macro paths resolve); returns its code."""
    logger.info("running: %s", " ".join(command))
    return subprocess.call(list(command), cwd=str(cwd or BUNDLES_DIR.parent))


# ---------------------------------------------------------------------------------------------------------------
# helpers the bundle configs call (bundles/common/configs/*.yaml)


def datalist_path(dataset_dir: str | os.PathLike) -> str:
    """The ``datalist.json`` of a prepared folder (or the file itself).

    Raises:
        MedvolInputError: no datalist there (the folder was not prepared).
    """
    from medvol.io.datalist import datalist_file

    path = datalist_file(dataset_dir)
    if not path.is_file():
        raise MedvolInputError(path, "no datalist here: prepare the data first (`medvol prepare SOURCE --out DIR`)")
    return str(path.resolve())


def class_count(dataset_dir: str | os.PathLike) -> int:
    """The number of classes of a prepared folder's datalist (what conditional families condition on)."""
    from medvol.io.datalist import read_datalist

    return len(read_datalist(datalist_path(dataset_dir)).get("classes") or [])


def training_dataset(datalist_file: str | os.PathLike, options: Mapping[str, Any]) -> torch.utils.data.Dataset:
    """The training split of a datalist (`medvol.data.datasets.build_dataset` with `options`).

    Raises:
        MedvolInputError: the split is empty.
    """
    from medvol.data.datasets import build_dataset

    dataset = build_dataset(datalist_file, split="training", **dict(options))
    if len(dataset) == 0:
        raise MedvolInputError(datalist_file, "the training split holds no samples")
    return dataset


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def fit_batch_size(batch_size: int, dataset_size: int, distributed: bool = False) -> int:
    """The batch size per process: `batch_size`, at most what the dataset (its share per process) holds, at least 1.

    Small datasets would otherwise give a loader that drops its only, incomplete batch.
    """
    per_process = dataset_size // (_world_size() if distributed else 1)
    fitted = max(1, min(int(batch_size), per_process))
    if fitted < int(batch_size):
        logger.warning("batch size %d reduced to %d: the training split has %d samples", batch_size, fitted, dataset_size)
    return fitted


class DistributedNetwork(DistributedDataParallel):
    """`DistributedDataParallel` that also exposes the wrapped network's attributes (``latent_size``,
    ``num_classes``, ``spatial_dims``, ``encode``...), which the trainers and samplers read."""

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


def place_networks(networks: Mapping[str, torch.nn.Module], device: str | torch.device, distributed: bool = False) -> dict:
    """The networks on `device`; wrapped in `DistributedNetwork` (DDP) when `distributed`.

    Batch-norm statistics stay per process (no buffer broadcast); gradients are averaged over all processes.
    """
    device = torch.device(device)
    placed = {}
    for name, network in networks.items():
        network = network.to(device)
        if distributed:
            # no buffer sync in forward: rank 0 alone runs extra forward passes (sample pictures, health checks),
            # and a collective inside them would wait forever for the other ranks (buffers are synced once here)
            network = DistributedNetwork(
                network, device_ids=[device.index] if device.type == "cuda" else None, forward_sync_buffers=False
            )
        placed[name] = network
    return placed


def is_rank_zero() -> bool:
    """True in a single process and in the first process of a distributed run (the one that writes files)."""
    return _world_size() == 1 or dist.get_rank() == 0


def every(interval: int | None) -> Callable[[Any, int], bool] | bool:
    """An ignite event filter that fires every `interval` iterations (False when `interval` is 0 or None)."""
    if not interval:
        return False
    return lambda engine, event: event % int(interval) == 0


def scalar_outputs(output: Any) -> dict[str, float]:
    """The float entries of a medvol trainer's ``engine.state.output`` (losses and logged terms), for StatsHandler."""
    if not isinstance(output, Mapping):
        return {}
    return {str(k): float(v) for k, v in output.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def init_distributed(device: str | torch.device | None = None) -> None:
    """Join the process group torchrun set up: NCCL for CUDA devices, gloo for the CPU; one GPU per local rank.

    Args:
        device: this process's device (default: `distributed_device`).
    """
    device = torch.device(device) if device is not None else distributed_device()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not is_rank_zero():
        # rank 0 alone reports progress and warnings (the other ranks would repeat them); errors come from every rank
        for name in ("", "ignite", "monai", "medvol"):
            logging.getLogger(name).setLevel(logging.ERROR)


def distributed_device() -> torch.device:
    """This process's device in a distributed run: ``cuda:<local rank>``, or the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


class RankZeroCheckpoints(CheckpointManager):
    """The checkpoint folder as the ranks other than 0 see it: they resume from it but never write to it."""

    def __init__(self, directory: str | os.PathLike, keep_last: int = 3):
        # skips CheckpointManager.__init__, which would remove rank 0's in-progress temporary files
        self.directory = Path(directory)
        self.keep_last = keep_last
        self.keep_best = False
        self.best_mode = "min"

    def save(self, state: Mapping[str, Any], iteration: int, metric: float | None = None) -> Path:
        return self.directory / f"checkpoint_{iteration:08d}.pt"


def follow_rank_zero(trainer: Any) -> bool:
    """Make a trainer on a rank other than 0 read rank 0's checkpoints without writing any; True on rank 0."""
    if is_rank_zero() or getattr(trainer, "checkpoints", None) is None:
        return True
    trainer.checkpoints = RankZeroCheckpoints(trainer.checkpoints.directory, trainer.checkpoints.keep_last)
    return True


def finish_distributed(distributed: bool) -> None:
    """Destroy the process group of a distributed run."""
    if distributed and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _plain_json(value: Any, fallback: Callable[[Any], Any] | None = None) -> Any:
    """`value` with tensors, arrays and numpy scalars as plain Python; other objects through `fallback` (if any)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _plain_json(v, fallback) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_json(v, fallback) for v in value]
    if fallback is not None and not isinstance(value, (str, int, float, bool, type(None))):
        return fallback(value)
    return value


def training_data_summary(dataset: torch.utils.data.Dataset, datalist: Mapping) -> dict[str, Any]:
    """What sampling needs to know about the training data: the geometry of a sample, the intensity mapping and the
    modality.

    The intensity mapping is the one recorded by the preprocessing (``meta["medvol_intensity"]``) on the first
    samples: a CT window is the same for every volume; per-volume windows (MR percentiles, min-max) differ, and the
    median window stands for them (MR has no absolute unit to recover).
    """
    from medvol.transforms.intensity import intensity_record

    records, affine = [], None
    step = max(1, len(dataset) // REFERENCE_SAMPLES)
    for index in range(0, min(len(dataset), step * REFERENCE_SAMPLES), step):
        image = dataset[index]["image"]
        if affine is None and hasattr(image, "affine"):
            affine = image.affine
        record = intensity_record(image)
        if record:
            records.append(record)
    intensity = None
    if records:
        windows = np.asarray([[float(v) for v in r["window"]] for r in records])
        intensity = {**_plain_json(records[0]), "window": np.median(windows, axis=0).tolist()}
        if len({tuple(w) for w in windows.tolist()}) > 1:
            intensity["per_volume"] = True
            intensity["window_range"] = [windows[:, 0].min().item(), windows[:, 1].max().item()]
    hint = dict(datalist.get("intensity") or {})
    kind = (intensity or {}).get("kind") or hint.get("kind")
    modality = hint.get("modality") or {"ct": "CT", "mr": "MR"}.get(str(kind), "OT")
    return {
        "reference_affine": _plain_json(affine) if affine is not None else None,
        "intensity": intensity,
        "intensity_source": hint,
        "modality": modality,
    }


def write_run_record(output_dir: str | os.PathLike, **facts: Any) -> bool:
    """Write ``RUN/run.json``: the facts of a training run that sampling and resuming need.

    Args:
        output_dir: the run folder.
        facts: ``bundle``, ``family``, ``spatial_dims``, ``image_size``, ``num_classes``, ``network``, ``datalist``
            (the datalist file), ``dataset`` (the training dataset), ``dataset_options``, ``seed``, ``iterations``.

    Returns:
        True (so that a config can chain it with ``and``).
    """
    run_dir = Path(output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    dataset = facts.pop("dataset")
    from medvol.io.datalist import read_datalist

    datalist = read_datalist(facts["datalist"])
    record = {
        "medvol_version": __version__,
        **_plain_json(facts),
        "classes": list(datalist.get("classes") or []),
        "training_samples": len(dataset),
        **training_data_summary(dataset, datalist),
    }
    path = run_dir / "run.json"
    if path.is_file():
        previous = json.loads(path.read_text())
        record["history"] = [*previous.get("history", []), {k: previous.get(k) for k in ("iterations", "seed")}]
    from medvol.io.files import write_json

    write_json(path, record, indent=2)
    return True


class TrainingTimeLimit:
    """Ends training (with its final checkpoint) once `seconds` have passed since the first iteration started.

    Args:
        seconds: the training time budget.
    """

    def __init__(self, seconds: float):
        self.seconds = float(seconds)
        self.started: float | None = None

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.ITERATION_STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._check)

    def _start(self, engine: Any) -> None:
        if self.started is None:
            self.started = time.perf_counter()

    def _check(self, engine: Any) -> None:
        if self.started is not None and time.perf_counter() - self.started >= self.seconds:
            logger.info("time budget of %.0f s reached at iteration %d", self.seconds, engine.state.iteration)
            engine.terminate()
