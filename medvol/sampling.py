"""Synthetic samples from a trained run: generate, map intensities back to source units, write NIfTI or DICOM.

A run folder (``medvol train --out RUN`` or the bundles' train workflow with ``--output_dir RUN``) holds ``run.json``
(family, sizes, classes, network arguments, the intensity mapping and the geometry of the training samples) and
``checkpoints/``. :func:`sample_run` rebuilds the networks from ``run.json``, loads a checkpoint, draws samples with a
seeded generator and writes them with `medvol.io.writers` (marked SYNTHETIC, new UIDs, no identifiers), plus a
``datalist.json`` in the datalist format of ``medvol prepare`` so that synthetic and real data merge in one line::

    real["training"] + synthetic["training"]

How each family samples: GANs decode Gaussian noise (with the requested class for cgan / acwgan_gp); the VAE
decodes draws from its prior N(0, I); the convolutional autoencoder has no prior, so it decodes draws from a
Gaussian fitted (per latent dimension) to the codes of up to `CAE_FIT_SAMPLES` training images.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medvol import __version__, families
from medvol.devices import default_device
from medvol.errors import MedvolInputError
from medvol.io.files import atomic_folder, write_json
from medvol.runs import RunRecord

__all__ = [
    "resolve_checkpoint",
    "load_networks",
    "sample_labels",
    "generate",
    "to_source_units",
    "write_samples",
    "relative_provenance",
    "sample_run",
    "stack_slice_samples",
]

logger = logging.getLogger(__name__)

MODEL_EXPORT = Path("models") / "model.pt"  # the generator-only export training writes (medvol.engines.trainer)
CAE_FIT_SAMPLES = 64
SAMPLE_BATCH = 8
FORMATS = ("nifti", "dicom", "png")
MODALITY_BY_INTENSITY = {"ct": "CT", "mr": "MR"}


def resolve_checkpoint(run_dir: str | os.PathLike, checkpoint: str | os.PathLike | None = None) -> Path:
    """The checkpoint file to sample from: `checkpoint` (a path, a file name in ``RUN/checkpoints``, or ``best``: the
    one with the lowest FID of the evaluations during training), else the latest one, else, when the run has no
    checkpoint (``checkpoints/`` deleted to save space), its final export ``RUN/models/model.pt``. A path may also
    name a generator-only export (see :func:`load_networks`).

    Raises:
        MedvolInputError: no checkpoint found; ``best`` asked of a run that has none.
    """
    from medvol.engines.checkpoint import CheckpointManager

    folder = Path(run_dir) / "checkpoints"
    if checkpoint not in (None, "", "latest", "best"):
        path = Path(checkpoint)
        path = path if path.is_file() else folder / str(checkpoint)
        if not path.is_file():
            raise MedvolInputError(checkpoint, "checkpoint file not found")
        return path
    export = Path(run_dir) / MODEL_EXPORT
    if not folder.is_dir():
        if checkpoint != "best" and export.is_file():
            return export
        raise MedvolInputError(run_dir, f"the run has no checkpoints/ folder and no {MODEL_EXPORT.as_posix()} (has it trained?)")
    if checkpoint == "best":
        best = CheckpointManager(folder, remove_leftovers=False).best_path()
        if best is None:
            raise MedvolInputError(
                folder, "the run has no best checkpoint yet: it is chosen by FID on the validation split during "
                "training (medvol train --evaluate-every K); use --checkpoint latest"
            )
        if not best.is_file():
            raise MedvolInputError(best, "the best checkpoint named by latest.json is missing")
        return best
    # a reader: a training process may be writing a checkpoint into the folder right now
    latest = CheckpointManager(folder, remove_leftovers=False).latest_path()
    if latest is None and export.is_file():
        return export
    if latest is None:
        raise MedvolInputError(folder, "holds no checkpoint yet")
    if not latest.is_file():
        raise MedvolInputError(latest, "the latest checkpoint named by latest.json is missing")
    return latest


def check_checkpoint(path: str | os.PathLike) -> dict:
    """Load `path` once (``weights_only=True``) so that a damaged file is reported in one line before any work;
    returns its content.

    Raises:
        MedvolInputError: the file is missing or is not a readable medvol checkpoint.
    """
    from medvol.engines.checkpoint import CheckpointManager

    try:
        return CheckpointManager.load(path, map_location="cpu")
    except Exception as err:  # torch raises several types for truncated, foreign or pickled files
        raise MedvolInputError(
            path, f"not a readable medvol checkpoint ({type(err).__name__}): damaged, or not written by medvol"
        ) from None


def _build_networks(record: RunRecord) -> dict[str, torch.nn.Module]:
    from medvol.networks.factory import build

    return build(record.family, int(record.spatial_dims), record.image_size, num_classes=int(record.num_classes),
                 **dict(record.network))


def load_networks(
    record: RunRecord, checkpoint: str | os.PathLike, device: str | torch.device = "cpu", use_ema: bool = True
) -> dict[str, torch.nn.Module]:
    """The networks of a run with the weights of `checkpoint`, in eval mode on `device`.

    Args:
        record: the run record.
        checkpoint: a checkpoint file written by the run's trainer, or a generator-only export (``RUN/models/model.pt``:
            the plain ``state_dict`` of the generator, its EMA when training kept one, or of the autoencoder); from an
            export only that network is returned.
        device: where to put the networks.
        use_ema: load the exponential moving average of the generator weights when the checkpoint has one.

    Raises:
        MedvolInputError: the file holds no weights for the run's networks, or weights of another shape.
    """
    from medvol.engines.checkpoint import CheckpointManager
    from medvol.engines.distributed import without_ddp_prefix

    networks = _build_networks(record)
    state = CheckpointManager.load(checkpoint, map_location="cpu")
    if _is_export(state):
        default = families.get_family(record.family).exported_network
        name = str((record.model or {}).get("network") or default)
        networks = {name: networks[name]}
        state = {"networks": {name: state}}
    weights = dict(state.get("networks") or {})
    extra = state.get("extra") or {}
    for name, module in networks.items():
        source = weights.get(name)
        if use_ema and extra.get(f"ema_{name}") is not None:
            source = extra[f"ema_{name}"]
        if source is None:
            raise MedvolInputError(checkpoint, f"checkpoint holds no weights for the {name} (it has {sorted(weights)})")
        try:
            module.load_state_dict(without_ddp_prefix(source))
        except RuntimeError as err:
            problem = str(err).strip().splitlines()[0]
            raise MedvolInputError(
                checkpoint, f"its {name} weights do not fit the {record.family} network that run.json describes ({problem})"
            ) from None
        module.to(device).eval()
    return networks


def _is_export(state: Mapping[str, Any]) -> bool:
    """A plain ``state_dict`` (the model-zoo ``models/model.pt``) rather than a trainer checkpoint."""
    return bool(state) and "networks" not in state and all(isinstance(v, torch.Tensor) for v in state.values())


def sample_labels(record: RunRecord, n: int, label: str | int | None = None) -> list[int | None]:
    """One entry per sample: class indices (`n` per class, or `n` of `label`) for conditional models, else None.

    Raises:
        MedvolInputError: an unknown label, or a label for an unconditional model.
    """
    classes = list(record.classes)
    conditional = int(record.num_classes) > 0
    if label is not None and not conditional:
        raise MedvolInputError("--label", f"the {record.family} model is not conditional: it cannot sample a class")
    if not conditional:
        return [None] * n
    if label is None:
        return [c for c in range(int(record.num_classes)) for _ in range(n)]
    text = str(label)
    if text in classes:
        return [classes.index(text)] * n
    if text.lstrip("-").isdigit() and 0 <= int(text) < int(record.num_classes):
        return [int(text)] * n
    raise MedvolInputError("--label", f"unknown class {text!r}; the model knows {classes or list(range(record.num_classes))}")


def _cae_latent_gaussian(
    record: RunRecord, autoencoder: torch.nn.Module, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation per latent dimension of the codes of up to `CAE_FIT_SAMPLES` training images."""
    dataset = _training_dataset(record)
    count = min(len(dataset), CAE_FIT_SAMPLES)
    codes = []
    with torch.no_grad():
        for start in range(0, count, SAMPLE_BATCH):
            images = torch.stack([torch.as_tensor(dataset[i]["image"]) for i in range(start, min(count, start + SAMPLE_BATCH))])
            codes.append(autoencoder.encode(images.to(device)).float())
    stacked = torch.cat(codes)
    return stacked.mean(0), stacked.std(0, unbiased=count > 1).clamp_min(1e-6)


def _training_dataset(record: RunRecord):
    from medvol.data.datasets import build_dataset

    return build_dataset(record.datalist, split="training", **dict(record.dataset_options))


@torch.no_grad()
def generate(
    record: RunRecord,
    networks: Mapping[str, torch.nn.Module],
    labels: Sequence[int | None],
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Draw one image per entry of `labels` (in the networks' output range), reproducibly for a given `seed`.

    Returns:
        float32 tensor ``[N, 1, *image_size]`` on the CPU.
    """
    device = torch.device(device)
    generator = torch.Generator().manual_seed(int(seed))
    spec = families.get_family(record.family)
    outputs = []
    if spec.is_autoencoder:
        autoencoder = networks["autoencoder"]
        latent_size = int(autoencoder.latent_size)
        mean, std = torch.zeros(latent_size), torch.ones(latent_size)
        if spec.latent_prior is families.LatentPrior.TRAINING_CODES:
            mean, std = (t.cpu() for t in _cae_latent_gaussian(record, autoencoder, device))
        for start in range(0, len(labels), SAMPLE_BATCH):
            count = min(SAMPLE_BATCH, len(labels) - start)
            z = mean + std * torch.randn(count, latent_size, generator=generator)
            outputs.append(autoencoder.decode(z.to(device)).float().cpu())
        return torch.cat(outputs) if outputs else torch.empty(0)
    model = networks["generator"]
    for start in range(0, len(labels), SAMPLE_BATCH):
        chunk = list(labels[start : start + SAMPLE_BATCH])
        z = torch.randn(len(chunk), int(model.latent_size), generator=generator)
        y = None if chunk[0] is None else torch.as_tensor(chunk, dtype=torch.long, device=device)
        outputs.append(model(z.to(device), y).float().cpu())
    return torch.cat(outputs) if outputs else torch.empty(0)


def to_source_units(images: torch.Tensor, record: RunRecord, snap: bool = True) -> np.ndarray:
    """Images in the networks' output range mapped back to the source intensities (HU for CT) with the run's
    intensity record; values are clipped to the output range first, so they land within the source window. When the
    training images were masks (``intensity_source.levels`` of the run, e.g. 0 / 255 recorded by `medvol prepare`),
    every voxel is snapped to the nearest level unless `snap` is False: the generator's continuous output would
    otherwise carry a low-level speckle that no training image has."""
    from medvol.transforms.intensity import invert_intensity, snap_to_levels

    mapping = record.intensity
    array = images.detach().cpu().numpy().astype(np.float32)
    if not mapping:
        return array
    low, high = (float(v) for v in mapping["output_range"])
    array = np.asarray(invert_intensity(np.clip(array, low, high), mapping), dtype=np.float32)
    levels = record.intensity_source.get("levels")
    return snap_to_levels(array, levels) if snap and levels else array


def _label_name(record: RunRecord, label: int | None) -> str | None:
    if label is None:
        return None
    classes = list(record.classes)
    return classes[label] if label < len(classes) else str(label)


def relative_provenance(provenance: Mapping[str, Any]) -> dict[str, Any]:
    """`provenance` without absolute paths of this machine: ``run`` becomes the run folder's name and ``checkpoint``
    its path relative to the run folder (``checkpoints/checkpoint_00000100.pt``, ``models/model.pt``), or its file
    name when it lies elsewhere."""
    relative = dict(provenance)
    run_dir = Path(str(provenance["run"])).expanduser().resolve()
    relative["run"] = run_dir.name
    if provenance.get("checkpoint") is not None:
        checkpoint = Path(str(provenance["checkpoint"])).expanduser().resolve()
        try:
            relative["checkpoint"] = checkpoint.relative_to(run_dir).as_posix()
        except ValueError:
            relative["checkpoint"] = checkpoint.name
    return relative


def write_samples(
    arrays: np.ndarray,
    labels: Sequence[int | None],
    record: RunRecord,
    out_dir: str | os.PathLike,
    fmt: str,
    provenance: Mapping[str, Any],
) -> dict:
    """Write one file (NIfTI) or series (DICOM) per sample with the training data's geometry, and ``datalist.json``.

    Args:
        arrays: ``[N, 1, *image_size]`` in source units.
        labels: class index per sample (None for unconditional models).
        record: the run record (geometry under ``reference_affine``, ``modality``, classes).
        out_dir: output folder, absent or empty; it appears with every file and ``datalist.json`` or not at all
            (written in a temporary folder beside it, then renamed).
        fmt: ``nifti``, ``dicom`` or ``png`` (2D runs whose source intensities are 0 or more: 8-bit when they fit
            0-255, else 16-bit).
        provenance: ``run`` (the run folder), ``checkpoint``, ``seed`` and ``family``; written without absolute
            paths (`relative_provenance`) into the datalist, the NIfTI descriptions and the DICOM headers.

    Returns:
        the datalist document written to ``out_dir/datalist.json``.
    """
    if fmt not in FORMATS:
        raise MedvolInputError("--format", f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise MedvolInputError(out, "--out is not an empty folder: choose a new folder for the synthetic files")
    with atomic_folder(out) as staging:
        return _write_samples(arrays, labels, record, out, staging, fmt, relative_provenance(provenance))


def _write_samples(arrays: np.ndarray, labels: Sequence[int | None], record: RunRecord, out: Path, staging: Path,
                   fmt: str, provenance: Mapping[str, Any]) -> dict:
    """`write_samples` into `staging`, with the paths the files will have in `out`."""
    from medvol.io.writers import (
        lps_geometry_from_affine_ras,
        png_bit_depth,
        write_synthetic_dicom_series,
        write_synthetic_nifti,
        write_synthetic_png,
    )

    spatial_dims = int(record.spatial_dims)
    bit_depth = None
    if fmt == "png":
        if spatial_dims != 2:
            raise MedvolInputError("--format", f"png is for 2D runs; this run is {spatial_dims}D: write nifti or dicom")
        mapping = record.intensity or {}
        bit_depth = png_bit_depth(mapping.get("window_range") or mapping.get("window") or (0, 255))
    affine = np.asarray(record.reference_affine or np.eye(4 if spatial_dims == 3 else 3), dtype=float)
    spacing, origin, direction = lps_geometry_from_affine_ras(affine)
    modality = record.modality
    entries = []
    for index, (array, label) in enumerate(zip(arrays, labels)):
        name = _label_name(record, label)
        stem = f"synthetic_{index:04d}"
        if name is not None:
            stem += f"_{_safe(name)}"
        sample_provenance = {**provenance, "sample_index": index}
        if fmt == "nifti":
            path = write_synthetic_nifti(array[0], staging / f"{stem}.nii.gz", affine_ras=affine, label=name,
                                         provenance=sample_provenance)
        elif fmt == "png":
            path = write_synthetic_png(array[0], staging / f"{stem}.png", bit_depth=bit_depth, label=name,
                                       provenance=sample_provenance)
        else:
            export = write_synthetic_dicom_series(
                array[0],
                staging / stem,
                spacing=spacing[:spatial_dims] if spatial_dims == 2 else spacing,
                origin=origin,
                direction=direction.ravel(),
                modality=modality,
                label=name,
                provenance=sample_provenance,
                series_number=index + 1,
            )
            path = Path(export.directory)
        entry = {"image": str(out / path.name), "id": stem, "subject": stem, "synthetic": True}
        if label is not None:
            entry.update({"label": int(label), "label_name": name})
        entries.append(entry)
    document = {
        "medvol_version": __version__,
        "source": f"synthetic:{provenance['run']}",
        "synthetic": True,
        "mode": "volume" if spatial_dims == 3 else "slice",
        "spatial_dims": spatial_dims,
        "classes": list(record.classes),
        "format": fmt,
        "provenance": dict(provenance),
        "preprocessing": {"size": list(arrays.shape[2:]), "spacing": None},
        "intensity": sample_intensity(record),
        **({"png_bit_depth": bit_depth} if bit_depth else {}),
        "training": entries,
        "validation": [],
        "test": [],
        "numTraining": len(entries),
        "numValidation": 0,
        "numTest": 0,
    }
    write_json(staging / "datalist.json", document, indent=2)
    return document


def sample_intensity(record: RunRecord) -> dict:
    """The ``intensity`` block of a sample folder's datalist: what the training data's source says (kind, modality,
    levels) and, under ``sample_mapping``, the run's mapping that `to_source_units` inverted (``window`` in source
    units onto ``output_range``), so `medvol evaluate` reads the files back with that fixed window: exactly the
    generator's output, not a window measured again on each generated image."""
    intensity = dict(record.intensity_source)
    mapping = record.intensity
    if mapping:
        intensity["sample_mapping"] = {"window": [float(v) for v in mapping["window"]],
                                       "output_range": [float(v) for v in mapping["output_range"]]}
    return intensity


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def sample_run(
    run_dir: str | os.PathLike,
    n: int,
    out_dir: str | os.PathLike,
    *,
    fmt: str = "nifti",
    label: str | int | None = None,
    seed: int = 0,
    checkpoint: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
) -> dict:
    """Generate `n` samples (per class for conditional models, or `n` of `label`) from a run and write them.

    Args:
        run_dir: the run folder.
        n: samples (per class for conditional models).
        out_dir: output folder (gets the files and ``datalist.json``).
        fmt: ``nifti`` or ``dicom``.
        label: only this class (name or index); conditional models only.
        seed: sampling seed (same seed, same checkpoint: same images).
        checkpoint: a checkpoint path or file name; the latest when None.
        device: ``cpu`` or ``cuda``; CUDA when available when None.

    Returns:
        the written datalist document.
    """
    if n < 1:
        raise MedvolInputError("--n", f"must be at least 1, got {n}")
    if fmt not in FORMATS:
        raise MedvolInputError("--format", f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    run_dir = Path(run_dir).expanduser().resolve()
    record = RunRecord.load(run_dir)
    checkpoint_path = resolve_checkpoint(run_dir, checkpoint)
    device = default_device(device)
    networks = load_networks(record, checkpoint_path, device)
    labels = sample_labels(record, n, label)
    images = generate(record, networks, labels, seed=seed, device=device)
    arrays = to_source_units(images, record)
    provenance = {"run": str(run_dir), "checkpoint": str(checkpoint_path), "seed": int(seed), "family": record.family}
    document = write_samples(arrays, labels, record, out_dir, fmt, provenance)
    logger.info("wrote %d synthetic %s samples to %s", len(labels), fmt, out_dir)
    return document


def stack_slice_samples(sample_dir: str | os.PathLike, out_dir: str | os.PathLike, depth: int, axis: int = 2) -> dict:
    """Volumes of `depth` samples each from the `medvol sample` output of a slice-wise (2D) run, for judging a 2D
    model on volumes (3D metrics, slice coherence) and cutting the volumes again where a slice datalist needs them.

    Samples ``k * depth`` to ``(k + 1) * depth - 1`` in the order of the folder's datalist (within one class for
    conditional runs) become volume k, sample i its slice i along `axis`. `medvol sample` draws every sample from its
    own latent vector, so the slices of a volume are independent draws: a slice-wise generator has no notion of a
    volume, and stacking adds none. Geometry: the samples' 4x4 affine (in-plane axes, then the slice normal of the
    training volumes), its columns moved so the normal runs along `axis`. Intensities are copied as written (source
    units); files, sidecars and ``datalist.json`` are written by `write_samples`.

    Args:
        sample_dir: a `medvol sample` NIfTI output of a 2D run (files and ``datalist.json``).
        out_dir: output folder for the volumes and their ``datalist.json``.
        depth: slices per volume (e.g. the volumetric grid's length along `axis`).
        axis: spatial axis the slices are stacked along (2: axial slices of RAS volumes).

    Returns:
        the written datalist document (``provenance.stacked`` says from where, how deep and along which axis).

    Raises:
        MedvolInputError: not a 2D NIfTI `medvol sample` output, a class whose count is not a multiple of `depth`.
    """
    import nibabel as nib

    from medvol.io.datalist import read_datalist

    folder = Path(sample_dir).expanduser().resolve()
    listed = folder / "datalist.json"
    if not listed.is_file():
        raise MedvolInputError(folder, "not a `medvol sample` output (no datalist.json)")
    document = read_datalist(listed)
    if int(document.get("spatial_dims") or 0) != 2 or document.get("format", "nifti") != "nifti":
        raise MedvolInputError(listed, "stacking needs the NIfTI samples of a 2D (slice-wise) run")
    if depth < 2 or axis not in (0, 1, 2):
        raise MedvolInputError(folder, f"depth must be at least 2 and axis 0, 1 or 2, got depth {depth}, axis {axis}")
    by_label: dict = {}
    for entry in document["training"]:
        by_label.setdefault(entry.get("label"), []).append(folder / entry["image"])
    for label, files in by_label.items():
        if len(files) % depth:
            which = "" if label is None else f" of class {label}"
            raise MedvolInputError(folder, f"{len(files)} samples{which} are not a multiple of depth {depth}")
    arrays, labels, affine = [], [], None
    for label, files in by_label.items():
        for start in range(0, len(files), depth):
            images = [nib.load(str(f)) for f in files[start : start + depth]]
            slices = [np.asarray(image.dataobj, dtype=np.float32).reshape(image.shape[:2]) for image in images]
            arrays.append(np.stack(slices, axis=axis)[None])
            labels.append(label)
            affine = images[0].affine if affine is None else affine
    columns = [0, 1, 2]
    columns.insert(axis, columns.pop(2))  # the slice normal (third column) to `axis`, the in-plane axes around it
    volume_affine = np.asarray(affine, dtype=float).copy()
    volume_affine[:, :3] = np.asarray(affine, dtype=float)[:, columns]
    provenance = dict(document.get("provenance") or {})
    run = str(provenance.get("run", folder.name))
    stacked = np.stack(arrays)
    # what write_samples needs of a run: geometry, classes and intensity of the stacked samples
    record = RunRecord(family=str(provenance.get("family")), spatial_dims=3, image_size=list(stacked.shape[2:]),
                       reference_affine=volume_affine.tolist(), classes=list(document.get("classes") or []),
                       intensity_source=dict(document.get("intensity") or {}),
                       modality=MODALITY_BY_INTENSITY.get(str((document.get("intensity") or {}).get("kind")), "OT"))
    provenance.update({
        "run": run,  # the run's name; the checkpoint as a path inside it, so relative_provenance keeps it as it was
        "checkpoint": None if provenance.get("checkpoint") is None else str(Path(run) / str(provenance["checkpoint"])),
        "stacked": {"from": folder.name, "depth": int(depth), "axis": int(axis), "latents": "independent per slice"},
    })
    written = write_samples(stacked, labels, record, out_dir, "nifti", provenance)
    logger.info("stacked %d samples of %s into %d volumes of depth %d in %s", len(document["training"]), folder,
                len(arrays), depth, out_dir)
    return written
