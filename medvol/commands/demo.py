"""`medvol demo [--out DIR] [--minutes M]`: the main job on the built-in phantoms, in a few minutes on a CPU.

1. prepare the labelled phantoms twice: 3D volumes (32^3) and 2D images (32^2) (``DIR/data3d``, ``DIR/data2d``);
2. train a small volumetric VAE (``DIR/vae_3d``) and a small slice-wise class-conditional GAN (``DIR/cgan_2d``)
   through the same bundle workflow as ``medvol train``, each to a fixed iteration target (1200 and 1000), with
   half of ``--minutes`` as a cap on each;
3. sample from both: NIfTI volumes plus one DICOM series per volume for 3D, NIfTI images per class for 2D, each with
   its ``datalist.json``, and a montage picture of the synthetic samples next to the training-time montages in
   ``RUN/samples/``;
4. write ``DIR/demo.json``: what was written where, iterations reached and seconds per step.

The networks have the bundles' default widths for 24 training images (`medvol.networks.factory.sized_options`: base
width 16 in 3D, 32 in 2D), with shorter latent codes; the conditional GAN's objective has the bundle's mode-seeking
term, without which its samples collapsed to one image per class, and its critic a per-class minibatch standard
deviation channel (docs/results.md). The results show the pipeline end to end, not converged models (train longer
with ``medvol train`` for that). Why these two families:
in a minute or two of CPU time the 3D VAE already decodes recognisable (blurry) phantoms from its prior, while a
narrow 3D DCGAN still produced noise after 300 iterations; and a gradient penalty's double backward through 3D
convolutions costs over 10 s per critic step on a 2-core CPU at 32^3, so the WGAN-GP families belong on a GPU.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from medvol.errors import MedvolInputError
from medvol.runs import RunRecord

logger = logging.getLogger(__name__)

DEMO_OUT = "medvol-demo"
DEMO_MINUTES = 8.0
DEMO_SIZE = {3: [32, 32, 32], 2: [32, 32]}
# (bundle, spatial dims, iterations, share of the time cap, overrides of the bundle config, samples per class)
# The iteration targets are where the samples became recognisable phantoms in our runs (docs/results.md); the time
# cap only cuts a run short on a slow or busy machine, so that the demo always ends within --minutes. The cGAN writes
# 8 samples per class: enough to see (and test) whether the samples of a class differ from each other.
DEMO_RUNS = (
    ("vae", 3, 1200, 0.5, {"network": {"latent_size": 32}, "batch_size": 8}, 4),
    ("cgan", 2, 1000, 0.5, {"network": {"latent_size": 64, "minibatch_std": True}, "batch_size": 16}, 8),
)


def prepare_phantoms(out_dir: Path, spatial_dims: int) -> Path:
    """The built-in phantoms prepared by `medvol prepare` into ``out_dir`` (skipped when already there)."""
    from medvol.commands import prepare

    if (out_dir / "datalist.json").is_file():
        return out_dir
    prepare.run(source="phantoms", out=str(out_dir), mode="volume" if spatial_dims == 3 else "slice",
                size=DEMO_SIZE[spatial_dims], split=[0.6, 0.2, 0.2], seed=0)
    return out_dir


def synthetic_montage(synthetic_dir: Path, path: Path) -> Path:
    """One picture of the synthetic NIfTI files of a folder (a grid in 2D, tri-planar rows in 3D)."""
    import nibabel as nib
    import torch
    from PIL import Image

    from medvol.report.figures import sample_montage

    files = sorted(synthetic_dir.glob("*.nii.gz"))
    images = torch.stack([torch.as_tensor(np.asarray(nib.load(str(f)).dataobj, dtype=np.float32))[None] for f in files])
    # the files hold source units (e.g. [0, 0.6]), which sample_montage would read as part of [-1, 1] (grey
    # background); one scale for all images keeps their brightness comparable
    low, high = float(images.min()), float(images.max())
    images = (images - low) / max(high - low, 1e-8) * 2.0 - 1.0
    Image.fromarray(sample_montage(images)).save(path)
    return path


def run_demo(out: str | Path, minutes: float = DEMO_MINUTES, only: str | None = None) -> dict[str, Any]:
    """The demo (see the module docstring); returns what ``demo.json`` records.

    Args:
        out: the demo folder.
        minutes: the time cap.
        only: run one part of the demo, ``"vae_3d"`` or ``"cgan_2d"`` (its share of the cap stays the same).
    """
    import torch

    from medvol.engines.threads import intra_op_threads

    if not (math.isfinite(minutes) and minutes > 0):
        raise MedvolInputError("--minutes", f"must be a positive number, got {minutes}")
    out = Path(out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    threads = torch.get_num_threads()
    chosen = intra_op_threads(threads)
    summary: dict[str, Any] = {"minutes": minutes, "torch_threads": chosen, "runs": {}}
    if chosen != threads:
        logger.info("the CPUs are busy (load average %.1f): training with %d torch thread", os.getloadavg()[0], chosen)
    torch.set_num_threads(chosen)
    try:
        _run_parts(out, minutes, only, summary)
    finally:
        torch.set_num_threads(threads)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    (out / "demo.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _run_parts(out: Path, minutes: float, only: str | None, summary: dict[str, Any]) -> None:
    """Prepare, train and sample each part of the demo (or `only` one), recording each in `summary["runs"]`."""
    from medvol.engines.time_limit import TrainingTimeLimit
    from medvol.commands.sample import sample
    from medvol.commands.train import train

    for family, spatial_dims, iterations, share, settings, per_class in DEMO_RUNS:
        if only is not None and only != f"{family}_{spatial_dims}d":
            continue
        data_dir = prepare_phantoms(out / f"data{spatial_dims}d", spatial_dims)
        run_dir = out / f"{family}_{spatial_dims}d"
        overrides = {
            "dataset_dir": str(data_dir),
            "output_dir": str(run_dir),
            "spatial_dims": spatial_dims,
            "image_size": DEMO_SIZE[spatial_dims],
            "iterations": iterations,
            "checkpoint_every": 100,
            "sample_every": 50,
            "seed": 0,
            **settings,
        }
        budget = max(5.0, minutes * 60.0 * share)
        print(f"demo: training {family} in {spatial_dims}D for {iterations} iterations (at most {budget:.0f} s) ...", flush=True)
        result = train(family, overrides, run_dir, extra_handlers=[TrainingTimeLimit(budget)])
        synthetic_dir = run_dir / "synthetic"
        # a demo run again into the same folder continues training; its samples replace the previous ones
        for previous in (synthetic_dir, run_dir / "synthetic_dicom"):
            shutil.rmtree(previous, ignore_errors=True)
        document = sample(run_dir, per_class, synthetic_dir, fmt="nifti", seed=0)
        outputs = {"nifti": str(synthetic_dir), "montage": str(synthetic_montage(synthetic_dir, run_dir / "synthetic_montage.png"))}
        if spatial_dims == 3:
            dicom_dir = run_dir / "synthetic_dicom"
            sample(run_dir, 2, dicom_dir, fmt="dicom", seed=1)
            outputs["dicom"] = str(dicom_dir)
        summary["runs"][f"{family}_{spatial_dims}d"] = {
            "run_dir": str(run_dir),
            "iterations": result["iterations"],
            "checkpoint": result["checkpoint"],
            "train_seconds": round(result["seconds"], 1),
            "seconds_per_iteration": round(result["seconds"] / max(1, result["iterations"]), 2),
            "parameters": RunRecord.load(run_dir).parameters,
            "samples": document["numTraining"],
            "training_montages": sorted(str(p) for p in (run_dir / "samples").glob("*.png")),
            **outputs,
        }


def run(*, out: str = DEMO_OUT, minutes: float = DEMO_MINUTES) -> int:
    """`medvol demo` (see the module docstring and `run_demo`)."""
    summary = run_demo(out, minutes)
    for name, result in summary["runs"].items():
        print(f"demo: {name}: {result['iterations']} iterations ({result['seconds_per_iteration']} s each), "
              f"{result['samples']} synthetic samples in {result['nifti']}, montage {result['montage']}")
    print(f"demo: finished in {summary['seconds']:.0f} s; summary in {Path(out).resolve() / 'demo.json'}")
    return 0
