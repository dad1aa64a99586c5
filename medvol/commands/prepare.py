"""`medvol prepare SOURCE --out DIR`: datalist with patient-level splits, and a report of every input file.

SOURCE is a folder (NIfTI volumes, 2D images in one folder per class, a DICOM tree, a Decathlon ``images/`` +
``labels/`` layout), a Decathlon ``dataset.json``, a MedMNIST-style ``.npz`` (images written as NIfTI under
``DIR/images/``, the archive's official split kept unless ``--split`` is given, integer labels named by
``--class-names``), or built-in phantoms:

- ``builtin:phantoms3d``: labelled 3D phantoms (NIfTI, default 32^3, or ``--size`` when it has 3 values);
- ``builtin:phantoms2d``: labelled 2D phantoms (PNG, default 64^2, or ``--size`` when it has 2 values);
- ``phantoms``: ``builtin:phantoms3d`` with ``--mode volume``, ``builtin:phantoms2d`` with ``--mode slice``.

Built-in phantoms are written to ``DIR/source/`` first (always with the same data seed, so ``--seed`` changes only
the split). DICOM series are converted to NIfTI under ``DIR/images/``, one file per volume (a multi-echo or 4D
series holds several); volumes with gaps, non-uniform spacing, gantry tilt, duplicate positions or non-parallel
slices are skipped with the reason unless ``--accept-irregular-dicom KINDS`` accepts them. Writes ``DIR/datalist.json``,
``DIR/report.json`` and ``DIR/preview.png`` (training samples exactly as the model will see them).

Sizing (``--fit``, recorded under ``preprocessing`` in datalist.json, which training, sampling and evaluation read):
``fit`` (default without ``--spacing``) scales each image so its whole field of view fits ``--size`` (physical aspect
ratio kept) and pads with background; ``crop_pad`` (default with ``--spacing``) centre-crops / pads after resampling to
the spacing; ``resize`` stretches every axis to ``--size``. ``--crop-foreground`` first crops to the body.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

from medvol.defaults import SEED
from medvol.errors import MedvolInputError

logger = logging.getLogger(__name__)

BUILTIN_SOURCES = ("builtin:phantoms3d", "builtin:phantoms2d", "phantoms")
PHANTOMS_PER_CLASS = 20
PHANTOM_DATA_SEED = 0
DEFAULT_PHANTOM_SIZE = {2: (64, 64), 3: (32, 32, 32)}
PREVIEW_FILE = "preview.png"
PENDING_DATALIST = ".pending-datalist.json"  # the new datalist until report.json and preview.png are written
PREVIEW_PER_CLASS = {2: 4, 3: 3}
PREVIEW_UNLABELLED = {2: 16, 3: 6}
PREVIEW_MIN_TILE = 96  # pixels: smaller samples are enlarged (nearest neighbour) in the picture
PREVIEW_SIZE = 64  # per axis, when --size is not given (training then fits to the bundle's image size)
SLICE_AXIS = 2  # slice mode cuts volumes across their last (RAS: axial) axis


SIZE_CHECK_COPIES = 4  # a sample is held about four times while it is read, resampled, cast and batched
MIN_TRAINING_BATCH = 2  # the smallest batch medvol trains on (batch-norm networks refuse a batch of one)


def check_size_fits_memory(size, option: str, batch: int = MIN_TRAINING_BATCH) -> None:
    """Refuse a sample size whose batch cannot fit in the memory available now, before any work starts.

    Args:
        size: the sample shape (``--size`` / ``--image-size``).
        option: what to name in the error (the flag, or the datalist the size came from).
        batch: samples held at once.

    Raises:
        MedvolInputError: naming `option`, the memory the size needs and the memory available.
    """
    import psutil

    voxels = math.prod(int(v) for v in size)
    needed = voxels * 4 * batch * SIZE_CHECK_COPIES
    available = psutil.virtual_memory().available
    if needed > available:
        raise MedvolInputError(option, f"{'x'.join(str(int(v)) for v in size)} is {voxels:,} voxels a sample: a batch "
                               f"of {batch} needs at least {needed / 2**30:,.1f} GiB (4 bytes a voxel, "
                               f"{SIZE_CHECK_COPIES} working copies) but {available / 2**30:,.1f} GiB of memory is "
                               "available; choose a smaller size")


def _innermost(err: BaseException) -> str:
    """The message of the error at the bottom of a chain (MONAI wraps transform errors in ones that print the
    transform object)."""
    while err.__cause__ is not None:
        err = err.__cause__
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


def resolve_builtin(source: str, mode: str) -> int | None:
    """Spatial dims of the built-in phantom dataset SOURCE names, None when SOURCE is not built-in."""
    if source == "phantoms":
        return 3 if mode == "volume" else 2
    if source.startswith("builtin:"):
        if source not in BUILTIN_SOURCES:
            raise MedvolInputError(source, f"unknown built-in dataset; choose one of {', '.join(BUILTIN_SOURCES)}")
        return 3 if source.endswith("3d") else 2
    return None


def write_builtin_phantoms(out_dir: Path, spatial_dims: int, size: list[int] | None) -> Path:
    """Write the built-in phantom dataset into ``out_dir/source`` and return that folder."""
    from medvol.data.phantoms import write_phantom_dataset

    phantom_size = tuple(size) if size and len(size) == spatial_dims else DEFAULT_PHANTOM_SIZE[spatial_dims]
    target = out_dir / "source"
    logger.info("writing %d %dD phantoms of size %s to %s", 2 * PHANTOMS_PER_CLASS, spatial_dims, phantom_size, target)
    return write_phantom_dataset(target, spatial_dims, phantom_size, PHANTOMS_PER_CLASS, seed=PHANTOM_DATA_SEED)


def intensity_hint(spatial_dims_of_source: int, modality: str | None, source: dict | None = None) -> dict:
    """How the transforms should normalise intensities: what the `source` says (`Datalist.intensity`: min-max for
    the 0-255 arrays of a MedMNIST .npz, as MR percentiles would blank binary masks with less than 0.5% foreground,
    and the ``levels`` of binary masks), else CT window, MR percentiles, or min-max for 2D pictures."""
    source = dict(source or {})
    if source.get("kind"):
        return {"modality": modality, **source}
    if spatial_dims_of_source == 2:
        return {"kind": "minmax", "modality": modality}
    if modality and modality.upper() == "CT":
        return {"kind": "ct", "modality": "CT"}
    return {"kind": "mr", "modality": modality}


def _check_positive(name: str, values: list[float] | None) -> None:
    if values is not None and not all(0 < v < math.inf for v in values):  # also refuses NaN
        raise MedvolInputError(name, f"values must be positive and finite, got {values}")


def default_shape_mode(spacing) -> str:
    """``fit`` (whole field of view, aspect ratio kept, padded) unless a target spacing is given: then ``crop_pad``
    keeps that voxel size and centre-crops / pads to the size."""
    from medvol.transforms.spatial import ShapeMode

    return str(ShapeMode.CROP_PAD if spacing else ShapeMode.FIT)


def describe_sizing(preprocessing: dict, spatial_dims: int) -> str:
    """One sentence saying what happens to an image's size and field of view."""
    size, spacing, mode = preprocessing["size"], preprocessing["spacing"], preprocessing["shape_mode"]
    steps = []
    if spacing:
        steps.append(f"resampled to {'x'.join(f'{v:g}' for v in spacing)} mm")
    if preprocessing.get("crop_foreground"):
        steps.append("cropped to the body (foreground bounding box)")
    target = "x".join(str(v) for v in size) if size else "the training image size (the bundle's or --image-size)"
    if mode == "fit":
        steps.append(f"scaled so the whole field of view fits {target}, keeping the aspect ratio, and padded with "
                     "background")
    elif mode == "resize":
        steps.append(f"stretched to {target}, not keeping the aspect ratio")
    else:
        steps.append(f"centre-cropped / padded to {target} without scaling (what lies outside is cut off)")
    if preprocessing.get("volume_size"):
        steps[-1] = steps[-1].replace(target, "x".join(str(v) for v in preprocessing["volume_size"]))
        steps.append(f"cut into {target} slices across axis {SLICE_AXIS}")
        return "each volume: " + ", then ".join(steps)
    kind = "slice" if spatial_dims == 2 else "volume"
    return f"each {kind}: " + ", then ".join(steps)


def run(
    *,
    source: str,
    out: str,
    mode: str | None = None,
    labels: str | None = None,
    id_column: str | None = None,
    label_column: str | None = None,
    unlabelled: str | None = None,
    size: list[int] | None = None,
    fit: str | None = None,
    crop_foreground: bool = False,
    duplicates: str = "keep",
    spacing: list[float] | None = None,
    split: list[float] | None = None,
    class_names: list[str] | None = None,
    seed: int = SEED,
    train_fraction: float | None = None,
    accept_irregular_dicom: str | None = None,
) -> int:
    """Prepare SOURCE into `out` (see the module docstring); the arguments are `medvol prepare`'s options.

    Args:
        source: a folder, a Decathlon ``dataset.json``, a MedMNIST ``.npz`` or a built-in source (`BUILTIN_SOURCES`).
        out: the output folder.
        mode: ``slice`` or ``volume`` (None: volume for 3D sources, slice for 2D images).
        labels: a labels CSV, or ``none`` to ignore a ``labels.csv`` in SOURCE.
        id_column: the CSV column of the ids.
        label_column: the CSV column of the labels.
        unlabelled: ``skip`` or ``keep`` images the CSV does not label (None: an error).
        size: the sample shape (3 values in slice mode: the volume grid the slices are cut from).
        fit: ``fit``, ``crop_pad`` or ``resize`` (None: `default_shape_mode`).
        crop_foreground: crop each image to the body first.
        duplicates: ``keep``, ``drop`` or ``error`` for identical images of different subjects.
        spacing: the target spacing in mm.
        split: train, validation and test fractions (None: `DEFAULT_FRACTIONS`, or a source's official split).
        class_names: names of integer class labels 0, 1, ...
        seed: the seed of the patient-level split.
        train_fraction: keep only this share of the training subjects.
        accept_irregular_dicom: comma-separated DICOM geometry problems to accept.

    Raises:
        MedvolInputError: missing/empty SOURCE, nothing usable, bad labels CSV, bad --split/--size/--spacing,
            2D images with ``--mode volume``.
    """
    from tqdm.auto import tqdm

    from medvol.data.splits import (
        DEFAULT_FRACTIONS,
        SPLIT_NAMES,
        class_coverage,
        split_subjects,
        split_summary,
        subsample_training,
        validate_fractions,
    )
    from medvol.io import datalist as datalists
    from medvol.io.dicom import parse_irregular_kinds
    from medvol.io.discovery import build_datalist, require_usable
    from medvol.io.duplicates import apply_duplicate_policy, duplicate_message, duplicate_summary, find_duplicates

    started = time.perf_counter()
    split_given = split is not None
    fractions = validate_fractions(split if split_given else DEFAULT_FRACTIONS)
    if seed < 0:
        raise MedvolInputError("--seed", f"must be a non-negative integer, got {seed}")
    _check_positive("--size", size)
    _check_positive("--spacing", spacing)
    if size is not None:  # before any work: a size no batch of which fits in memory
        check_size_fits_memory(size, "--size")
    if train_fraction is not None and not 0 < train_fraction <= 1:
        raise MedvolInputError("--train-fraction", f"must be in (0, 1], got {train_fraction:g}")
    accept_irregular = parse_irregular_kinds(accept_irregular_dicom)
    ignore_labels_csv = labels is not None and str(labels).strip().lower() == "none"
    labels_csv = None if ignore_labels_csv else labels
    builtin_dims = resolve_builtin(str(source), mode or "volume")
    class_order = None
    if builtin_dims is None:
        source_path = Path(source).expanduser()
        if not source_path.exists():
            raise MedvolInputError(source_path, "SOURCE does not exist")
        if labels_csv and not Path(labels_csv).is_file():
            raise MedvolInputError(labels_csv, "labels CSV does not exist (--labels none ignores a labels.csv)")
    elif labels_csv:
        raise MedvolInputError("--labels", f"built-in source {source} brings its own labels")
    out_dir = Path(out).expanduser().resolve()
    if out_dir.exists() and not out_dir.is_dir():
        raise MedvolInputError(out_dir, "--out must be a folder, this is a file")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise MedvolInputError(out_dir, f"cannot create the output folder: {err.strerror or err}") from None
    if builtin_dims is not None:
        from medvol.data.phantoms import CLASSES

        source_path = write_builtin_phantoms(out_dir, builtin_dims, size)
        labels_csv, class_order = source_path / "labels.csv", list(CLASSES)

    datalist = build_datalist(
        source_path, images_dir=out_dir / "images", labels_csv=labels_csv, class_order=class_order, require_entries=False,
        exclude=[out_dir], find_labels_csv=not ignore_labels_csv, id_column=id_column, label_column=label_column,
        unlabelled=unlabelled,
        accept_irregular_dicom=accept_irregular)
    # one run's outputs are published together: the previous run's datalist and preview go first, the new datalist
    # (what train and evaluate trust) comes last, renamed into place after report.json and preview.png
    for stale in (datalists.DATALIST_FILE, PENDING_DATALIST, PREVIEW_FILE):
        (out_dir / stale).unlink(missing_ok=True)
    if not datalist.entries:
        datalists.write_report(out_dir / datalists.REPORT_FILE, datalist)
        require_usable(datalist)
    if class_names:
        datalist.name_classes(class_names)

    if datalist.source_spatial_dims == 2 and mode == "volume":
        raise MedvolInputError(datalist.source, "holds 2D images: volume mode needs 3D volumes; prepare it with "
                               "--mode slice (or without --mode)")
    mode = "slice" if datalist.source_spatial_dims == 2 else (mode or "volume")
    spatial_dims = 3 if mode == "volume" else 2
    volume_size = None
    if size is not None and len(size) == 3 and mode == "slice":
        if datalist.source_spatial_dims == 2:
            raise MedvolInputError("--size", f"3 values in slice mode are a volume grid to cut slices from; these are "
                                             f"2D images: give 2 values, got {size}")
        volume_size, size = list(size), list(size[:SLICE_AXIS] + size[SLICE_AXIS + 1:])
    if size is not None and len(size) != spatial_dims:
        raise MedvolInputError("--size", f"{mode} mode needs {spatial_dims} values (slice mode of volumes: or 3, the "
                                         f"volume grid to cut the slices from), got {size}")
    if spacing is not None and len(spacing) not in {datalist.source_spatial_dims, spatial_dims}:
        dims = datalist.source_spatial_dims
        raise MedvolInputError("--spacing", f"expected {dims} values for these {dims}D images, got {spacing}")
    preprocessing = {
        "size": size,
        "spacing": spacing,
        "shape_mode": fit or default_shape_mode(spacing),
        "crop_foreground": bool(crop_foreground),
    }
    if volume_size is not None:
        preprocessing["volume_size"] = volume_size
    sizing = describe_sizing(preprocessing, spatial_dims)

    scanned = list(datalist.entries)
    duplicate_scan = find_duplicates(scanned, progress=lambda items: tqdm(
        items, desc="finding duplicates", unit="image", disable=None, leave=False))
    linked, dropped = apply_duplicate_policy(datalist, duplicate_scan, scanned, duplicates)
    official = all(e.get("_split") for e in datalist.entries) and not split_given
    if official:  # a source with its own split (MedMNIST .npz) keeps it unless --split asks for another
        splits = {name: [e for e in datalist.entries if e["_split"] == name] for name in SPLIT_NAMES}
        fractions = tuple(round(len(splits[name]) / len(datalist.entries), 4) for name in SPLIT_NAMES)
        datalist.messages.append(f"the official split of {datalist.source} is kept (--split replaces it)")
    else:
        splits = split_subjects(datalist.entries, fractions, seed=seed, linked=linked)
    if train_fraction is not None:
        splits["training"], left_out = subsample_training(splits["training"], train_fraction, seed=seed)
        left_out_ids = {id(e) for e in left_out}
        datalist.drop_entries([id(e) not in left_out_ids for e in datalist.entries],
                              f"training subject left out by --train-fraction {train_fraction:g}")
        datalist.messages.append(
            f"--train-fraction {train_fraction:g}: {len(splits['training'])} training images kept, {len(left_out)} "
            f"left out (listed in report.json); validation and test splits as without the option")
    for name, fraction in zip(("validation", "test"), fractions[1:]):
        if fraction > 0 and not splits[name]:
            datalist.messages.append(f"the {name} split is empty: {len(set(e['subject'] for e in datalist.entries))} "
                                     f"subject(s) are too few for the fractions {list(fractions)}")
    duplicate_counts = duplicate_summary(duplicate_scan, scanned, duplicates,
                                   {str(e["subject"]): name for name, split in splits.items() for e in split}, dropped)
    if line := duplicate_message(duplicate_counts):
        datalist.messages.append(line)
    coverage, coverage_lines = class_coverage(splits, datalist.classes, fractions)
    datalist.messages.extend(coverage_lines)
    source_text = str(source) if builtin_dims is not None else datalist.source
    try:
        document = datalists.write_datalist(
            out_dir / PENDING_DATALIST, datalist, splits,
            source=source_text,
            mode=mode,
            spatial_dims=spatial_dims,
            seed=seed,
            split_fractions=list(fractions),
            **({"official_split": True} if official else {}),
            **({"train_fraction": train_fraction} if train_fraction is not None else {}),
            preprocessing=preprocessing,
            intensity=intensity_hint(datalist.source_spatial_dims, datalist.modality, datalist.intensity),
            labels_csv=datalist.labels_csv,
            **({"synthetic": True} if all(e.get("synthetic") for e in datalist.entries) else {}),
        )
        try:
            preview = write_preview(out_dir / PREVIEW_FILE, document)
        except (MedvolInputError, RuntimeError, ValueError, MemoryError) as err:  # training would meet it too
            preview = {"file": None, "description": f"not written: {_innermost(err)}"}
            datalist.messages.append(f"{PREVIEW_FILE} not written: preprocessing a training sample failed: "
                                     f"{_innermost(err)}")
        elapsed = time.perf_counter() - started
        summary = datalist.summary()
        datalists.write_report(out_dir / datalists.REPORT_FILE, datalist,
                               summary={"splits": split_summary(splits, datalist.classes), "class_coverage": coverage,
                                        "seconds": round(elapsed, 3),
                                        "accepted_irregular_dicom": sorted(accept_irregular)},
                               preprocessing={**preprocessing, "description": sizing}, preview=preview,
                               duplicates=duplicate_counts)
        os.replace(out_dir / PENDING_DATALIST, out_dir / datalists.DATALIST_FILE)
    except OSError as err:  # a full disk while the datalist is pending: name the file the user knows
        if err.filename is not None and Path(err.filename).name == PENDING_DATALIST:
            raise OSError(err.errno, err.strerror or str(err), str(out_dir / datalists.DATALIST_FILE)) from err
        raise
    finally:  # interrupted or failed: no half-published datalist is left
        (out_dir / PENDING_DATALIST).unlink(missing_ok=True)
    for message in datalist.messages:
        if message.startswith(("labels read from", "--train-fraction", "the official split")):
            print(message)
        else:
            logger.warning(message)
    _print_problem_records(datalist.records.values())
    sizes = " / ".join(f"{name} {len(entries)}" for name, entries in splits.items())
    print(f"prepared {summary['entries']} images of {summary['subjects']} subjects ({sizes}); "
          f"{summary['skipped']} of {summary['files']} file records skipped, {summary['warning']} with warnings; "
          f"wrote {out_dir / datalists.DATALIST_FILE} and {out_dir / datalists.REPORT_FILE} in {elapsed:.1f} s")
    print(f"sizing: {sizing} (see --fit and --crop-foreground)")
    if preview["file"]:
        print(f"preview: {preview['file']} ({preview['description']})")
    return 0


def _preview_samples(dataset, positions: list[int]) -> list:
    """One image per chosen datalist entry: the sample itself (2D images, volumes), or the middle kept slice of a
    volume cut into slices."""
    from medvol.data.datasets import SliceDataset

    if not isinstance(dataset, SliceDataset):
        return [dataset[i]["image"] for i in positions]
    by_volume: dict[int, list[int]] = {}
    for index, (volume, _) in enumerate(dataset.index):
        by_volume.setdefault(volume, []).append(index)
    return [dataset[by_volume[p][len(by_volume[p]) // 2]]["image"] if by_volume.get(p) else None for p in positions]


def write_preview(path: Path, document: dict) -> dict:
    """Write a grid of training samples through `build_dataset`, exactly as training preprocesses them (tri-planar
    views for volumes): one row per class (a few images each), or a grid when unlabelled.

    Returns:
        ``{"file", "rows", "per_row", "size", "description"}`` for report.json and the console.
    """
    import torch

    from medvol.data.datasets import build_dataset
    from medvol.report.figures import sample_montage, save_png

    spatial_dims = int(document["spatial_dims"])
    entries = document["training"] or document["validation"] or document["test"]
    classes = list(document.get("classes") or [])
    groups: list[tuple[str, list[dict]]] = []
    if classes:
        per_class = PREVIEW_PER_CLASS[spatial_dims]
        for index, name in enumerate(classes):
            groups.append((name, [e for e in entries if e.get("label") == index][:per_class]))
        unlabelled = [e for e in entries if e.get("label") is None][:per_class]
        if unlabelled:
            groups.append(("unlabelled", unlabelled))
        per_row = per_class
    else:
        groups.append(("all", entries[: PREVIEW_UNLABELLED[spatial_dims]]))
        per_row = math.ceil(math.sqrt(len(groups[0][1]))) if spatial_dims == 2 else 1
    chosen = [e for _, group in groups for e in group]
    size = document["preprocessing"].get("size") or [PREVIEW_SIZE] * spatial_dims
    dataset = build_dataset({**document, "training": chosen}, split="training", size=size)
    images = _preview_samples(dataset, list(range(len(chosen))))
    low = float(dataset.preprocessing.output_range[0])
    blank = torch.full((1, *size), low)
    tiles, position = [], 0
    for _, group in groups:
        row = [torch.as_tensor(images[position + k]) if images[position + k] is not None else blank
               for k in range(len(group))]
        position += len(group)
        if spatial_dims == 2 and classes:
            row += [blank] * (per_row - len(row))
        tiles += row
    picture = sample_montage(torch.stack(tiles), columns=per_row if spatial_dims == 2 else None)
    zoom = max(1, math.ceil(PREVIEW_MIN_TILE / max(size)))  # small tiles enlarged, pixel for pixel
    save_png(picture.repeat(zoom, axis=0).repeat(zoom, axis=1), path)
    shown = "x".join(str(v) for v in size)
    if spatial_dims == 3:
        layout = "one volume per row: axial, coronal and sagittal middle slices"
    else:
        layout = f"{per_row} per row"
    rows = [name for name, _ in groups]
    description = (f"{len(chosen)} training samples at {shown}" + (f" (enlarged x{zoom})" if zoom > 1 else "")
                   + f", {layout}"
                   + (f"; rows by class: {', '.join(f'{n} x{len(g)}' for n, g in groups)}" if classes else "")
                   + ("" if document["preprocessing"].get("size") else
                      f"; no --size: shown at {shown}, training uses its own image size"))
    return {"file": str(path), "rows": rows, "per_row": per_row, "size": size, "description": description}


def _print_problem_records(records, limit: int = 20, examples: int = 3) -> None:
    """Skipped files and warnings on the console, one line per distinct reason with the count and a few examples
    (every file with its reason is in report.json)."""
    for status in ("skipped", "warning"):
        by_reason: dict[str, list[str]] = {}
        for record in records:
            if record.status == status:
                by_reason.setdefault(record.reason, []).append(record.path)
        ordered = sorted(by_reason.items(), key=lambda item: -len(item[1]))
        for shown, (reason, paths) in enumerate(ordered):
            if shown == limit:
                rest = sum(len(p) for _, p in ordered[limit:])
                print(f"  ... and {rest} more {status} files with other reasons (see report.json)")
                break
            text = reason if len(reason) <= 240 else reason[:240] + " ... (see report.json)"
            if len(paths) == 1:
                print(f"  {status}: {paths[0]}: {text}")
            else:
                more = f", ... ({len(paths) - examples} more in report.json)" if len(paths) > examples else ""
                print(f"  {status}: {len(paths)} files: {text} (e.g. {', '.join(paths[:examples])}{more})")
