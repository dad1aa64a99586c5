"""The run record ``RUN/run.json``: what sampling, evaluation and resuming need to know about a training run (the
family and its networks, the datalist, the geometry and intensity mapping of the training data)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medvol import __version__

__all__ = ["plain_json", "training_data_summary", "write_run_record"]

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
        **plain_json(facts),
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
