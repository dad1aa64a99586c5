"""How well does a trained autoencoder run (cae, vae) reconstruct held-out real images? PSNR, SSIM and MAE per
volume (`medvol.metrics.reconstruction`), the parameters of the run, and a montage of inputs next to their reconstructions.

`medvol evaluate --real DATALIST --reconstruct RUN --out OUT` runs `evaluate_reconstruction`: it writes
``OUT/metrics.json`` and ``OUT/reconstruction.png``.

Which images: the held-out (test) split of DATALIST, preprocessed the way the run trained (its size, the datalist's
spacing, fit and intensity settings, scaled to the autoencoders' [0, 1] range). Every metric is computed in that
range with a data range of 1.

- A 3D run reconstructs each volume at its training size.
- A 2D run on volumes (trained slice-wise) reconstructs *the same volumes* slice by slice across its slice axis and
  the metrics are computed on the re-stacked volumes, so 2D and 3D runs on one datalist are scored on the same
  voxels. The volumes are those of the datalist's 3D grid when it has one (``medvol prepare --size X,Y,Z`` in volume
  mode, or in slice mode, where the slices a 2D run trains on are exactly the slices of that grid; the in-plane size
  must be the run's), else each volume with the run's in-plane preprocessing and its own depth.
- A 2D run on 2D images reconstructs each image.

SSIM, PSNR and MAE (`medvol.metrics.reconstruction.reconstruction_metrics`) are computed in the images'
dimensionality (a 3D window on volumes, also for 2D runs).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from medvol.errors import MedvolInputError
from medvol.metrics.reconstruction import reconstruction_metrics
from medvol.runs import RunRecord

__all__ = ["MONTAGE_FILE", "evaluate_reconstruction", "heldout_images", "reconstruct", "reconstruction_montage",
           "training_seconds"]

logger = logging.getLogger(__name__)

MONTAGE_FILE = "reconstruction.png"
MONTAGE_IMAGES = 6
MONTAGE_MIN_TILE = 96  # pixels: smaller images are enlarged (nearest neighbour), as in `medvol prepare`'s preview
BATCH = 16


def heldout_images(
    datalist: str | os.PathLike,
    record: RunRecord,
    split: str = "test",
    cache_dir: str | os.PathLike | None = None,
) -> tuple[list[torch.Tensor], list[str], str]:
    """The images of one split of `datalist` to reconstruct with the run of `record`, in the run's output range.

    Args:
        datalist: ``datalist.json`` written by `medvol prepare` (or its folder).
        record: the run record.
        split: the split (``test``: the held-out images).
        cache_dir: disk cache of the preprocessing.

    Returns:
        the images ``[1, *size]`` (volumes for a 3D source, whatever the run's dimensionality), their files, and how
        they were prepared (one sentence).

    Raises:
        MedvolInputError: an empty split, a 3D run on 2D images, a 2D run whose slice size is not the in-plane size
            of the prepared volumes.
    """
    from medvol.data.datasets import build_dataset
    from medvol.io.datalist import datalist_file, read_datalist

    path = datalist_file(datalist)
    document = read_datalist(path)
    if not document.get(split):
        raise MedvolInputError(path, f"the {split} split is empty: it holds the images to reconstruct; prepare the data "
                                     "with a non-zero test fraction (e.g. --split 0.6,0.2,0.2)")
    run_dims = int(record.spatial_dims)
    size = [int(s) for s in record.image_size]
    options = dict(record.dataset_options)
    output_range = [float(v) for v in options.get("output_range") or (0.0, 1.0)]
    slice_axis = int(options.get("slice_axis", 2))
    source_dims = int(document.get("source_spatial_dims") or (3 if document.get("mode") == "volume" else 2))
    prepared = [int(s) for s in (document.get("preprocessing") or {}).get("size") or []]
    grid = [int(s) for s in (document.get("preprocessing") or {}).get("volume_size") or []]
    common = {"split": split, "output_range": output_range, "cache_dir": None if cache_dir is None else str(cache_dir)}
    if source_dims == 2:
        if run_dims == 3:
            raise MedvolInputError(path, "holds 2D images; the run is 3D: reconstruct them with a 2D run")
        dataset = build_dataset(path, mode="slice", size=size, **common)
        how = f"2D images at {size}"
    elif run_dims == 3:
        dataset = build_dataset(path, mode="volume", size=size, **common)
        how = f"volumes at {size}"
    elif len(prepared) == 3 or grid:
        grid = prepared if len(prepared) == 3 else grid
        in_plane = [s for axis, s in enumerate(grid) if axis != slice_axis]
        if in_plane != size:
            raise MedvolInputError(
                path, f"its volumes are prepared at {grid}, whose slices across axis {slice_axis} are {in_plane}; "
                      f"the 2D run trained on slices of {size}: prepare the volumes with that in-plane size")
        if len(prepared) == 3:
            dataset = build_dataset(path, mode="volume", size=grid, **common)
        else:  # a slice datalist on a volume grid (prepare --mode slice --size X,Y,Z): the grid's volumes
            dataset = build_dataset(path, mode="slice", volume_size=grid, slice_axis=slice_axis, **common).volumes
        how = f"volumes at {grid}, reconstructed slice by slice across axis {slice_axis} and re-stacked"
    else:
        dataset = build_dataset(path, mode="slice", size=size, slice_axis=slice_axis, **common).volumes
        how = (f"volumes with slices of {size} across axis {slice_axis} and their own depth, reconstructed slice by "
               "slice and re-stacked")
    images, paths = [], []
    for index in range(len(dataset)):
        sample = dataset[index]
        image = sample["image"]
        images.append((image.as_tensor() if hasattr(image, "as_tensor") else torch.as_tensor(image)).float())
        paths.append(str(getattr(image, "meta", {}).get("filename_or_obj") or sample.get("subject") or index))
    return images, paths, how


@torch.no_grad()
def reconstruct(
    autoencoder: torch.nn.Module,
    images: Sequence[torch.Tensor],
    slice_axis: int = 2,
    device: str | torch.device = "cpu",
    batch_size: int = BATCH,
) -> list[torch.Tensor]:
    """Reconstructions of `images` by `autoencoder` (a VAE decodes its mean code); a 2D autoencoder reconstructs a
    volume slice by slice across `slice_axis` and re-stacks the slices.

    Args:
        autoencoder: a `ConvAutoencoder` or `VariationalAutoencoder` in eval mode.
        images: ``[1, *size]`` each.
        slice_axis: the spatial axis a 2D autoencoder's slices are cut across.
        device: where to run the autoencoder.
        batch_size: images or slices per forward pass.

    Returns:
        one ``[1, *size]`` float32 CPU tensor per image.
    """
    device = torch.device(device)
    model_dims = int(autoencoder.spatial_dims)

    def forward(batch: torch.Tensor) -> torch.Tensor:
        parts = []
        for start in range(0, batch.shape[0], batch_size):
            output = autoencoder(batch[start : start + batch_size].to(device))
            parts.append((output[0] if isinstance(output, tuple) else output).float().cpu())
        return torch.cat(parts)

    outputs = []
    for image in images:
        if image.ndim - 1 == model_dims:
            outputs.append(forward(image[None])[0])
        elif image.ndim - 1 == 3 and model_dims == 2:
            slices = torch.movedim(image[0], slice_axis, 0)[:, None]  # [depth, 1, *in-plane]
            outputs.append(torch.movedim(forward(slices)[:, 0], 0, slice_axis)[None])
        else:
            raise MedvolInputError(None, f"a {model_dims}D autoencoder cannot reconstruct an image of size {list(image.shape[1:])}")
    return outputs


def reconstruction_montage(
    inputs: Sequence[torch.Tensor], outputs: Sequence[torch.Tensor], count: int = MONTAGE_IMAGES, gap: int = 4
) -> np.ndarray:
    """One row per image: the input on the left, its reconstruction on the right (tri-planar views of volumes).

    Images in [0, 1] show black..white; `count` images evenly spaced through the list are shown.

    Returns:
        uint8 ``[rows, columns]``.
    """
    from medvol.report.figures import sample_montage

    chosen = np.unique(np.linspace(0, len(inputs) - 1, num=min(count, len(inputs))).round().astype(int))
    rows = []
    for index in chosen:
        left, right = (sample_montage(2.0 * torch.as_tensor(image)[None].float() - 1.0)
                       for image in (inputs[index], outputs[index]))
        spacer = np.full((left.shape[0], gap), 128, dtype=np.uint8)
        rows.append(np.concatenate([left, spacer, right], axis=1))
    width = max(row.shape[1] for row in rows)
    rows = [np.pad(row, ((0, gap), (0, width - row.shape[1]))) for row in rows]
    picture = np.concatenate(rows)[:-gap]
    zoom = max(1, math.ceil(MONTAGE_MIN_TILE / max(max(image.shape[1:]) for image in inputs)))
    return np.kron(picture, np.ones((zoom, zoom), dtype=np.uint8)) if zoom > 1 else picture


def training_seconds(run_dir: str | os.PathLike) -> tuple[int, float | None]:
    """Iterations logged in the run's TensorBoard ``time/seconds_per_step`` and their sum (None without curves):
    the training time without start-up, evaluation and checkpoint writing."""
    from medvol.report.html import read_scalar_curves

    try:
        steps, seconds = read_scalar_curves(run_dir).get("time/seconds_per_step", ([], []))
    except Exception as err:  # a damaged or missing event file must not cost the reconstruction numbers
        logger.warning("%s: no training time from its TensorBoard curves (%s)", run_dir, err)
        return 0, None
    return len(steps), (float(sum(seconds)) if steps else None)


def _reconstruction_document(record: RunRecord, run_dir: Path, checkpoint_path: Path, datalist: str | os.PathLike,
                             split: str, how: str, paths: Sequence[str], metrics: dict,
                             output_range: tuple[float, float]) -> dict:
    """The metrics.json of `evaluate_reconstruction` up to its ``timing``: the run, the images, the metrics."""
    from medvol.io.datalist import datalist_file
    from medvol.sampling import relative_provenance

    low, high = output_range
    parameters = dict(record.parameters)
    steps, seconds = training_seconds(run_dir)
    provenance = relative_provenance({"run": str(run_dir), "checkpoint": str(checkpoint_path)})
    return {
        "evaluation": "reconstruction",
        "run": {**provenance, "family": record.family, "spatial_dims": int(record.spatial_dims),
                "image_size": record.image_size, "training_samples": record.training_samples,
                "iterations": record.iterations, "logged_iterations": steps, "training_seconds": seconds},
        "parameters": parameters,
        "parameters_total": int(sum(parameters.values())),
        "inputs": {"datalist": str(datalist_file(datalist).resolve()), "split": split, "n": len(paths),
                   "images": how},
        "intensity": f"the autoencoder's range [{low:g}, {high:g}] mapped to [0, 1]; data range 1",
        **{key: metrics[key] for key in ("psnr", "ssim", "mae")},
        "per_image": [{"path": p, "psnr": a, "ssim": b, "mae": c} for p, a, b, c in
                      zip(paths, metrics["psnr"]["values"], metrics["ssim"]["values"], metrics["mae"]["values"])],
        "settings": metrics["settings"],
        "montage": MONTAGE_FILE,
    }


def evaluate_reconstruction(
    datalist: str | os.PathLike,
    run_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    checkpoint: str | os.PathLike | None = None,
    split: str = "test",
    device: str | torch.device | None = None,
    max_samples: int | None = None,
    seed: int = 0,
) -> dict:
    """Reconstruct the held-out images of `datalist` with an autoencoder run; write ``metrics.json`` and the montage.

    Args:
        datalist: ``datalist.json`` written by `medvol prepare` (or its folder).
        run_dir: a cae or vae run folder (``medvol train --bundle cae|vae``).
        out_dir: output folder (``metrics.json``, ``reconstruction.png``, ``cache/``).
        checkpoint: a checkpoint of the run (see `medvol.sampling.resolve_checkpoint`); None: the latest.
        split: the split to reconstruct (``test``, the held-out images).
        device: ``cpu`` or ``cuda``; CUDA when available when None.
        max_samples: at most this many images (a seeded random subset); None: all.
        seed: seed of that subset.

    Returns:
        the metrics document (see `reconstruction_metrics`; plus ``per_image``, ``parameters``, ``run`` (with the
        training time from its TensorBoard curves), ``inputs``, ``timing``).

    Raises:
        MedvolInputError: not an autoencoder run, an unusable datalist (see `heldout_images`), a missing checkpoint.
    """
    from medvol.data.datasets import seeded_subset
    from medvol.devices import default_device
    from medvol.evaluation.keys import METRICS_FILE
    from medvol.families import FamilyKind, family_names
    from medvol.io.files import write_json
    from medvol.report.figures import save_png
    from medvol.sampling import load_networks, resolve_checkpoint

    started = time.perf_counter()
    run_dir = Path(run_dir).expanduser().resolve()
    out = Path(out_dir).expanduser().resolve()
    record = RunRecord.load(run_dir)
    autoencoders = family_names(FamilyKind.AUTOENCODER)
    if record.family not in autoencoders:
        raise MedvolInputError(run_dir, f"is a {record.family} run: --reconstruct needs an autoencoder run "
                                        f"({' or '.join(autoencoders)})")
    checkpoint_path = resolve_checkpoint(run_dir, checkpoint)
    device = default_device(device)
    autoencoder = load_networks(record, checkpoint_path, device)["autoencoder"]
    images, paths, how = heldout_images(datalist, record, split, out / "cache")
    chosen = seeded_subset(len(images), max_samples, seed)
    images, paths = [images[i] for i in chosen], [paths[i] for i in chosen]
    low, high = (float(v) for v in record.dataset_options.get("output_range") or (0.0, 1.0))
    slice_axis = int(record.dataset_options.get("slice_axis", 2))
    loaded = time.perf_counter()
    outputs = reconstruct(autoencoder, images, slice_axis=slice_axis, device=device)
    reconstructed = time.perf_counter()
    inputs = [(image - low) / (high - low) for image in images]
    outputs = [(output - low) / (high - low) for output in outputs]
    metrics = reconstruction_metrics(inputs, outputs, data_range=1.0)
    document = {**_reconstruction_document(record, run_dir, checkpoint_path, datalist, split, how, paths, metrics,
                                           (low, high)),
                "timing": {"loading": loaded - started, "reconstruction": reconstructed - loaded}}
    save_png(reconstruction_montage(inputs, outputs), out / MONTAGE_FILE)
    document["timing"]["total"] = time.perf_counter() - started
    write_json(out / METRICS_FILE, document, indent=2)
    return document
