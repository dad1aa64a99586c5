"""The run record ``RUN/run.json``: what sampling, evaluation and resuming need to know about a training run (the
family and its networks, the datalist, the geometry and intensity mapping of the training data)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medvol import __version__
from medvol.errors import MedvolInputError

__all__ = ["RUN_RECORD_FILE", "RunRecord", "plain_json", "training_data_summary"]

REFERENCE_SAMPLES = 16  # training samples whose intensity records and geometry run.json summarises


def plain_json(value: Any, fallback: Callable[[Any], Any] | None = None) -> Any:
    """`value` with tensors, arrays and numpy scalars as plain Python; other objects through `fallback` (if any)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): plain_json(v, fallback) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_json(v, fallback) for v in value]
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
        intensity = {**plain_json(records[0]), "window": np.median(windows, axis=0).tolist()}
        if len({tuple(w) for w in windows.tolist()}) > 1:
            intensity["per_volume"] = True
            intensity["window_range"] = [windows[:, 0].min().item(), windows[:, 1].max().item()]
    hint = dict(datalist.get("intensity") or {})
    kind = (intensity or {}).get("kind") or hint.get("kind")
    modality = hint.get("modality") or {"ct": "CT", "mr": "MR"}.get(str(kind), "OT")
    return {
        "reference_affine": plain_json(affine) if affine is not None else None,
        "intensity": intensity,
        "intensity_source": hint,
        "modality": modality,
    }


RUN_RECORD_FILE = "run.json"
REQUIRED_FIELDS = ("family", "spatial_dims", "image_size")  # what every run record since the first one holds


@dataclass(frozen=True, kw_only=True)
class RunRecord:
    """``RUN/run.json``: the facts of a training run that sampling, evaluation and resuming need. The only reader and
    writer of that file; the fields are in the order the file lists them.

    Args:
        family: the model family (``medvol.networks.factory``).
        spatial_dims: 2 (slice-wise) or 3 (volumetric).
        image_size: the training image shape, one size per axis.
        num_classes: classes a conditional family was trained on; 0: unconditional.
        network: the network options the networks were built with (``medvol.networks.factory.build``).
        width: base channel count of the networks.
        parameters: parameter count per network.
        datalist: the training datalist file.
        dataset_options: the options of the training dataset (``medvol.data.datasets.build_dataset``).
        seed, iterations: of the latest training command.
        objective: the objective overrides; optimization: the objective's settings (critic steps, optimiser).
        critic_augment: the canonical critic augmentation settings; None in runs from before it existed.
        classes: the class names of the datalist.
        training_samples: samples in the training split.
        reference_affine, intensity, intensity_source, modality: geometry and intensity mapping of the training data
            (:func:`training_data_summary`).
        history: ``iterations`` and ``seed`` of the earlier training commands of a resumed run.
        model: the final export ``RUN/models/model.pt`` (file, network, ema, iteration, parameters, bytes), once written.
        extra: keys this version does not know, kept as they are.
        folder: the run folder the record was loaded from (not written).
    """

    medvol_version: str = __version__
    bundle: str | None = None
    family: str
    spatial_dims: int
    image_size: list[int]
    num_classes: int = 0
    network: dict[str, Any] = field(default_factory=dict)
    width: int | None = None
    parameters: dict[str, int] = field(default_factory=dict)
    datalist: str | None = None
    dataset_options: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    iterations: int | None = None
    objective: dict[str, Any] = field(default_factory=dict)
    optimization: dict[str, Any] | None = None
    critic_augment: dict[str, Any] | None = None
    classes: list[str] = field(default_factory=list)
    training_samples: int | None = None
    reference_affine: list[list[float]] | None = None
    intensity: dict[str, Any] | None = None
    intensity_source: dict[str, Any] = field(default_factory=dict)
    modality: str = "OT"
    history: list[dict[str, Any]] = field(default_factory=list)
    model: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    folder: Path | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_dict(cls, document: Mapping[str, Any], folder: str | os.PathLike | None = None) -> RunRecord:
        """The record of a ``run.json`` document (keys it lacks take their defaults; unknown keys go to `extra`).

        Raises:
            ValueError: the document is not a mapping, lacks a required field or has an impossible value.
        """
        if not isinstance(document, Mapping):
            raise ValueError(f"a run record is a JSON object, not {type(document).__name__}")
        missing = [key for key in REQUIRED_FIELDS if document.get(key) is None]
        if missing:
            raise ValueError(f"no {', '.join(missing)}: written by an older medvol or damaged")
        names = {f.name for f in fields(cls)} - {"extra", "folder"}
        known = {key: value for key, value in document.items() if key in names}
        defaults = {f.name: f.default_factory() for f in fields(cls) if f.default_factory is not MISSING}
        known.update({key: defaults[key] for key, value in known.items() if value is None and key in defaults})
        if known.get("modality") is None:
            known.pop("modality", None)
        spatial_dims = known["spatial_dims"]
        if isinstance(spatial_dims, bool) or spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims is {spatial_dims!r}, not 2 or 3")
        size = known["image_size"]
        known["image_size"] = [int(size)] * int(spatial_dims) if isinstance(size, (int, float)) else list(size)
        extra = {key: value for key, value in document.items() if key not in names}
        return cls(**known, extra=extra, folder=None if folder is None else Path(folder))

    def to_dict(self) -> dict[str, Any]:
        """The ``run.json`` document: every field in order (``history`` and ``model`` only when there are any), then
        the unknown keys."""
        document = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("extra", "folder")}
        if not self.history:
            del document["history"]
        if self.model is None:
            del document["model"]
        return plain_json({**document, **self.extra})

    @classmethod
    def load(cls, folder: str | os.PathLike, if_missing: str = "train one with `medvol train`") -> RunRecord:
        """The record of the run folder `folder`.

        Args:
            folder: the run folder.
            if_missing: what the user can do when `folder` holds no ``run.json``.

        Raises:
            MedvolInputError: `folder` holds no ``run.json``, or an unreadable, damaged or too old one.
        """
        path = Path(folder) / RUN_RECORD_FILE
        if not path.is_file():
            raise MedvolInputError(folder, f"not a medvol run folder (no {RUN_RECORD_FILE}; {if_missing})")
        try:
            return cls.from_dict(json.loads(path.read_text()), folder)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError, TypeError) as err:
            raise MedvolInputError(path, f"unreadable run record ({err})") from None

    @staticmethod
    def exists(folder: str | os.PathLike) -> bool:
        """Whether `folder` holds a ``run.json``."""
        return (Path(folder) / RUN_RECORD_FILE).is_file()

    def save(self, folder: str | os.PathLike | None = None) -> Path:
        """Write the record atomically to ``folder/run.json`` (default: the folder it was loaded from); returns the
        file."""
        target = folder if folder is not None else self.folder
        if target is None:
            raise ValueError("a run record needs a folder to be saved to")
        from medvol.io.files import write_json

        return write_json(Path(target) / RUN_RECORD_FILE, self.to_dict(), indent=2)

    def update(self, **changes: Any) -> RunRecord:
        """A copy with `changes` (field names) applied."""
        return replace(self, **changes)

    @classmethod
    def for_training(cls, run_dir: str | os.PathLike, *, dataset: torch.utils.data.Dataset,
                     datalist: str | os.PathLike, **facts: Any) -> RunRecord:
        """The record a training command starts with; when `run_dir` already holds one (a resumed run), its
        ``history`` gains the earlier command's ``iterations`` and ``seed``.

        Args:
            run_dir: the run folder.
            dataset: the training dataset (its size, geometry and intensity mapping are recorded).
            datalist: the datalist file.
            facts: the other fields (``bundle``, ``family``, ``spatial_dims``, ``image_size``, ``num_classes``,
                ``network``, ``width``, ``parameters``, ``dataset_options``, ``seed``, ``iterations``, ``objective``,
                ``optimization``, ``critic_augment``).
        """
        from medvol.io.datalist import read_datalist

        document = read_datalist(datalist)
        history: list[dict[str, Any]] = []
        if cls.exists(run_dir):
            previous = cls.load(run_dir)
            history = [*previous.history, {"iterations": previous.iterations, "seed": previous.seed}]
        return cls(**plain_json({**facts, "datalist": datalist}), classes=list(document.get("classes") or []),
                   training_samples=len(dataset), **training_data_summary(dataset, document), history=history,
                   folder=Path(run_dir))
