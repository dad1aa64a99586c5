"""`medvol sample RUN --n N [--label L] --format nifti|dicom|png --out DIR`: synthetic files from a trained run.

Runs the bundle's sample workflow (``bundles/NAME/configs/inference.yaml``, the one ``python -m monai.bundle run``
runs) with the arguments as overrides: N samples (per class for conditional models), intensities mapped back to the
source range (HU for CT), NIfTI with the training data's spacing and orientation or one DICOM series per sample
(new UIDs, DERIVED\\SECONDARY, SYNTHETIC, no identifiers), or for 2D runs PNG in source units (8 or 16 bits), and
``DIR/datalist.json`` in the datalist format of ``medvol prepare`` with labels and provenance (run, checkpoint,
seed). DIR appears with all of it or not at all (`medvol.io.files.atomic_folder`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from medvol import bundles
from medvol.errors import MedvolInputError
from medvol.sampling import check_checkpoint, load_run_record, resolve_checkpoint, sample_labels


def sample(run_dir: str | Path, n: int, out_dir: str | Path, fmt: str = "nifti", label: str | None = None,
           seed: int = 0, device: str | None = None, checkpoint: str = "latest") -> dict:
    """Run the sample workflow of the run's bundle; returns the written datalist document.

    Raises:
        MedvolInputError: not a run folder, no checkpoint, bad --n or --label.
    """
    if n < 1:
        raise MedvolInputError("--n", f"must be at least 1, got {n}")
    run_dir = Path(run_dir).expanduser().resolve()
    record = load_run_record(run_dir)
    check_checkpoint(resolve_checkpoint(run_dir, checkpoint))
    sample_labels(record, n, label)  # a bad --label fails here, with one line, before any work
    out_dir = Path(out_dir).expanduser().resolve()
    if out_dir.is_dir() and any(out_dir.iterdir()):
        raise MedvolInputError(out_dir, "--out is not empty: choose a new folder for the synthetic files")
    overrides = {"run_dir": str(run_dir), "n": int(n), "label": label, "format": fmt, "output_dir": str(out_dir),
                 "seed": int(seed), "checkpoint": checkpoint}
    if device is not None:
        overrides["device"] = device
    bundles.run_workflow(record["family"], "sample", overrides, logging_file=False)
    return json.loads((out_dir / "datalist.json").read_text())


def run(args: argparse.Namespace) -> int:
    """`medvol sample` (see the module docstring)."""
    document = sample(args.run, args.n, args.out, args.format, args.label, args.seed,
                      checkpoint=getattr(args, "checkpoint", "latest"))
    print(f"wrote {document['numTraining']} synthetic {args.format} samples and datalist.json to {Path(args.out).resolve()} "
          f"(checkpoint {document['provenance']['checkpoint']}, seed {document['provenance']['seed']})")
    return 0
