"""`medvol prepare SOURCE --out DIR`: datalist with patient-level splits, and a report of every input file.

SOURCE is a folder (NIfTI volumes, 2D images in one folder per class, a DICOM tree, a Decathlon ``images/`` +
``labels/`` layout), a Decathlon ``dataset.json``, or built-in phantoms:

- ``builtin:phantoms3d``: labelled 3D phantoms (NIfTI, default 32^3, or ``--size`` when it has 3 values);
- ``builtin:phantoms2d``: labelled 2D phantoms (PNG, default 64^2, or ``--size`` when it has 2 values);
- ``phantoms``: ``builtin:phantoms3d`` with ``--mode volume``, ``builtin:phantoms2d`` with ``--mode slice``.

Built-in phantoms are written to ``DIR/source/`` first (always with the same data seed, so ``--seed`` changes only
the split). DICOM series are converted to NIfTI under ``DIR/images/``. Writes ``DIR/datalist.json`` and
``DIR/report.json``.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

from medvol.errors import MedvolInputError

logger = logging.getLogger(__name__)

BUILTIN_SOURCES = ("builtin:phantoms3d", "builtin:phantoms2d", "phantoms")
PHANTOMS_PER_CLASS = 20
PHANTOM_DATA_SEED = 0
DEFAULT_PHANTOM_SIZE = {2: (64, 64), 3: (32, 32, 32)}


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


def intensity_hint(spatial_dims_of_source: int, modality: str | None) -> dict:
    """How the transforms should normalise intensities: CT window, MR percentiles, or min-max for 2D pictures."""
    if spatial_dims_of_source == 2:
        return {"kind": "minmax", "modality": modality}
    if modality and modality.upper() == "CT":
        return {"kind": "ct", "modality": "CT"}
    return {"kind": "mr", "modality": modality}


def _check_positive(name: str, values: list[float] | None) -> None:
    if values is not None and not all(0 < v < math.inf for v in values):  # also refuses NaN
        raise MedvolInputError(name, f"values must be positive and finite, got {values}")


def run(args) -> int:
    """Prepare SOURCE into ``args.out`` (see the module docstring).

    Raises:
        MedvolInputError: missing/empty SOURCE, nothing usable, bad labels CSV, bad --split/--size/--spacing.
    """
    from medvol.data.splits import split_subjects, split_summary, validate_fractions
    from medvol.io import datalist as datalists

    started = time.perf_counter()
    fractions = validate_fractions(args.split)
    if args.seed < 0:
        raise MedvolInputError("--seed", f"must be a non-negative integer, got {args.seed}")
    _check_positive("--size", args.size)
    _check_positive("--spacing", args.spacing)
    mode = args.mode or "volume"
    builtin_dims = resolve_builtin(str(args.source), mode)
    class_order = None
    labels_csv = args.labels
    if builtin_dims is None:
        source = Path(args.source).expanduser()
        if not source.exists():
            raise MedvolInputError(source, "SOURCE does not exist")
        if labels_csv and not Path(labels_csv).is_file():
            raise MedvolInputError(labels_csv, "labels CSV does not exist")
    elif labels_csv:
        raise MedvolInputError("--labels", f"built-in source {args.source} brings its own labels")
    out_dir = Path(args.out).expanduser().resolve()
    if out_dir.exists() and not out_dir.is_dir():
        raise MedvolInputError(out_dir, "--out must be a folder, this is a file")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise MedvolInputError(out_dir, f"cannot create the output folder: {err.strerror or err}") from None
    if builtin_dims is not None:
        from medvol.data.phantoms import CLASSES

        source = write_builtin_phantoms(out_dir, builtin_dims, args.size)
        labels_csv, class_order = source / "labels.csv", list(CLASSES)

    datalist = datalists.build_datalist(source, images_dir=out_dir / "images", labels_csv=labels_csv,
                                        class_order=class_order, require_entries=False, exclude=[out_dir])
    if not datalist.entries:
        datalists.write_report(out_dir / datalists.REPORT_FILE, datalist)
        datalists.require_usable(datalist)

    if datalist.source_spatial_dims == 2 and mode == "volume":
        if args.mode == "volume":  # asked for explicitly; the default needs no warning
            datalist.messages.append("SOURCE holds 2D images: prepared in slice mode (spatial_dims 2)")
        mode = "slice"
    spatial_dims = 3 if mode == "volume" else 2
    if args.size is not None and len(args.size) != spatial_dims:
        raise MedvolInputError("--size", f"{mode} mode needs {spatial_dims} values, got {args.size}")
    if args.spacing is not None and len(args.spacing) not in {datalist.source_spatial_dims, spatial_dims}:
        dims = datalist.source_spatial_dims
        raise MedvolInputError("--spacing", f"expected {dims} values for these {dims}D images, got {args.spacing}")

    splits = split_subjects(datalist.entries, fractions, seed=args.seed)
    for name, fraction in zip(("validation", "test"), fractions[1:]):
        if fraction > 0 and not splits[name]:
            datalist.messages.append(f"the {name} split is empty: {len(set(e['subject'] for e in datalist.entries))} "
                                     f"subject(s) are too few for the fractions {list(fractions)}")
    source_text = str(args.source) if builtin_dims is not None else datalist.source
    datalists.write_datalist(
        out_dir / datalists.DATALIST_FILE, datalist, splits,
        source=source_text,
        mode=mode,
        spatial_dims=spatial_dims,
        seed=args.seed,
        split_fractions=list(fractions),
        preprocessing={"size": args.size, "spacing": args.spacing},
        intensity=intensity_hint(datalist.source_spatial_dims, datalist.modality),
        labels_csv=datalist.labels_csv,
    )
    elapsed = time.perf_counter() - started
    summary = datalist.summary()
    datalists.write_report(out_dir / datalists.REPORT_FILE, datalist,
                           summary={"splits": split_summary(splits, datalist.classes), "seconds": round(elapsed, 3)})
    for message in datalist.messages:
        logger.warning(message)
    _print_problem_records(datalist.records.values())
    sizes = " / ".join(f"{name} {len(entries)}" for name, entries in splits.items())
    print(f"prepared {summary['entries']} images of {summary['subjects']} subjects ({sizes}); "
          f"{summary['skipped']} of {summary['files']} file records skipped, {summary['warning']} with warnings; "
          f"wrote {out_dir / datalists.DATALIST_FILE} and {out_dir / datalists.REPORT_FILE} in {elapsed:.1f} s")
    return 0


def _print_problem_records(records, limit: int = 20) -> None:
    """List skipped files and warnings on the console (all of them are in report.json)."""
    for status in ("skipped", "warning"):
        chosen = [r for r in records if r.status == status]
        for record in chosen[:limit]:
            reason = record.reason if len(record.reason) <= 240 else record.reason[:240] + " ... (see report.json)"
            print(f"  {status}: {record.path}: {reason}")
        if len(chosen) > limit:
            print(f"  ... and {len(chosen) - limit} more {status} files (see report.json)")
