"""`medvol sample RUN --n N [--label L] --format nifti|dicom|png --out DIR`: synthetic files from a trained run.

Runs the bundle's sample workflow (``bundles/NAME/configs/inference.yaml``, the one ``python -m monai.bundle run``
runs) with the arguments as overrides: N samples (per class for conditional models), intensities mapped back to the
source range (HU for CT), NIfTI with the training data's spacing and orientation or one DICOM series per sample
(new UIDs, DERIVED\\SECONDARY, SYNTHETIC, no identifiers), or for 2D runs PNG in source units (8 or 16 bits), and
``DIR/datalist.json`` in the datalist format of ``medvol prepare`` with labels and provenance (run, checkpoint,
seed). DIR appears with all of it or not at all (`medvol.io.files.atomic_folder`).
"""

from __future__ import annotations

import json
from pathlib import Path

from medvol import bundles
from medvol.defaults import SEED
from medvol.errors import MedvolInputError
from medvol.runs import RunRecord
from medvol.sampling import check_checkpoint, resolve_checkpoint, sample_labels


def sample(run_dir: str | Path, n: int, out_dir: str | Path, *, fmt: str = "nifti", label: str | None = None,
           seed: int = SEED, device: str | None = None, checkpoint: str = "latest") -> dict:
    """Run the sample workflow of the run's bundle; returns the written datalist document.

    Args:
        run_dir: the run folder `medvol train` wrote.
        n: samples (per class for conditional models).
        out_dir: the output folder (must be new or empty).
        fmt: ``nifti``, ``dicom`` or ``png`` (2D runs).
        label: only this class label.
        seed: the sampling seed.
        device: ``cpu`` or ``cuda`` (None: the workflow's default).
        checkpoint: ``latest``, ``best``, a file name in ``RUN/checkpoints`` or a path.

    Raises:
        MedvolInputError: not a run folder, no checkpoint, bad --n or --label.
    """
    if n < 1:
        raise MedvolInputError("--n", f"must be at least 1, got {n}")
    run_dir = Path(run_dir).expanduser().resolve()
    record = RunRecord.load(run_dir)
    check_checkpoint(resolve_checkpoint(run_dir, checkpoint))
    sample_labels(record, n, label)  # a bad --label fails here, with one line, before any work
    out_dir = Path(out_dir).expanduser().resolve()
    if out_dir.is_dir() and any(out_dir.iterdir()):
        raise MedvolInputError(out_dir, "--out is not empty: choose a new folder for the synthetic files")
    overrides = {"run_dir": str(run_dir), "n": int(n), "label": label, "format": fmt, "output_dir": str(out_dir),
                 "seed": int(seed), "checkpoint": checkpoint}
    if device is not None:
        overrides["device"] = device
    bundles.run_workflow(record.family, "sample", overrides, logging_file=False)
    return json.loads((out_dir / "datalist.json").read_text())


def run(*, run_dir: str, n: int, out: str, label: str | None = None, fmt: str = "nifti", seed: int = SEED,
        checkpoint: str = "latest") -> int:
    """`medvol sample` (see the module docstring and `sample`, whose arguments these are)."""
    document = sample(run_dir, n, out, fmt=fmt, label=label, seed=seed, checkpoint=checkpoint)
    print(f"wrote {document['numTraining']} synthetic {fmt} samples and datalist.json to {Path(out).resolve()} "
          f"(checkpoint {document['provenance']['checkpoint']}, seed {document['provenance']['seed']})")
    return 0
