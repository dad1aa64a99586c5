"""One intensity path for real, generated and external images (issue J item 1, issue N's "another size").

- a generator's output written by `medvol sample` (NIfTI and DICOM) and read back by `medvol evaluate` is that output
  again, for every intensity kind (min-max pictures, MR percentiles, CT window, binary masks with levels);
- a real image resized by the preprocessing and the same image given already at that size land at the same values
  (per-image windows are measured on the samples' grid, so every real image reaches the top of the range);
- external images at another size go through the real data's recorded preprocessing, and the evaluation says so.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from medvol.data.datasets import build_dataset
from medvol.data.phantoms import CLASSES, make_phantom_batch
from medvol.evaluation.data import HELDOUT_SPLIT, load_real, load_synthetic
from medvol.evaluation.pipeline import evaluate
from medvol.runs import RunRecord, training_data_summary
from medvol.sampling import to_source_units, write_samples

SIZE = 16
SOURCE = 20  # real files are larger than the samples: the preprocessing resizes them
MEDNIST_CLASSES = ("CTHead", "MRBrain")


def write_datalist(folder: Path, files: list[Path], labels, mode: str, intensity: dict, size, n_test: int,
                   classes=CLASSES) -> Path:
    """A prepared-style datalist of `files` (the last `n_test` in the test split), fitted to `size`."""
    entries = [{"image": str(f), "subject": f.stem, "label": int(y)} for f, y in zip(files, labels)]
    document = {"mode": mode, "spatial_dims": 2 if mode == "slice" else 3, "classes": list(classes),
                "source_spatial_dims": 2 if mode == "slice" else 3,
                "preprocessing": {"size": list(size), "spacing": None, "shape_mode": "fit", "crop_foreground": False},
                "intensity": intensity, "training": entries[:-n_test], "validation": [], "test": entries[-n_test:]}
    path = folder / "datalist.json"
    path.write_text(json.dumps(document))
    return path


def real_files(folder: Path, kind: str) -> tuple[list[Path], np.ndarray, dict, int]:
    """16 real files of one intensity kind: (files, labels, datalist intensity block, sample size per axis)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    dims = 2 if kind == "minmax" else 3
    size = SIZE if kind == "masks" else SOURCE  # masks at the sample size: their windows are exactly [0, 255]
    images, labels = make_phantom_batch(16, dims, (size,) * dims, seed=2)
    files = []
    for index, image in enumerate(images[:, 0]):
        if kind == "minmax":  # 8-bit pictures
            path = folder / f"p{index:02d}.png"
            Image.fromarray(np.clip(image * 200 + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)).save(path)
        else:
            if kind == "mr":  # arbitrary positive units, a bright tail above the 99.5th percentile
                data = image * 900 + rng.gamma(2.0, 40.0, image.shape)
            elif kind == "ct":  # HU: air outside, soft tissue and a little bone inside
                data = np.round(image * 1300 - 1000 + rng.normal(0, 20, image.shape))
            else:
                data = np.where(image > 0.5, 255.0, 0.0)
            path = folder / f"v{index:02d}.nii.gz"
            nib.save(nib.Nifti1Image(data.astype(np.float32), np.diag([-1.0, -1.0, 1.0, 1.0])), str(path))
        files.append(path)
    intensity = {"kind": "minmax", "levels": [0.0, 255.0]} if kind == "masks" else {"kind": kind}
    return files, labels, intensity, dims


def run_record(datalist: Path, mode: str, dims: int) -> RunRecord:
    """The run record `medvol train` writes (intensity mapping and geometry from the training samples)."""
    document = json.loads(datalist.read_text())
    dataset = build_dataset(datalist, split="training", mode=mode, output_range=[-1.0, 1.0])
    return RunRecord(spatial_dims=dims, classes=list(CLASSES), num_classes=2, family="cgan", image_size=[SIZE] * dims,
                     **training_data_summary(dataset, document))


@pytest.mark.parametrize("fmt", ["nifti", "dicom"])
@pytest.mark.parametrize("kind", ["minmax", "mr", "ct", "masks"])
def test_a_sample_read_back_is_the_generators_output(tmp_path, kind, fmt):
    files, labels, intensity, dims = real_files(tmp_path / "real", kind)
    mode = "slice" if dims == 2 else "volume"
    datalist = write_datalist(tmp_path / "real", files, labels, mode, intensity, [SIZE] * dims, n_test=6)
    real = load_real(datalist, tmp_path / "cache", progress=False)
    record = run_record(datalist, mode, dims)
    # a generator's output: like the real images but neither reaching -1 nor 1, which a per-image window would undo
    rng = torch.Generator().manual_seed(0)
    generated = (0.8 * real.splits["training"].images[:6] - 0.1
                 + 0.02 * torch.randn(real.splits["training"].images[:6].shape, generator=rng)).clamp(-1, 1)
    sample_labels = [int(y) for y in real.splits["training"].labels[:6]]
    provenance = {"run": str(tmp_path / "run"), "checkpoint": "none", "seed": 0, "family": "cgan"}
    folder = tmp_path / fmt
    write_samples(to_source_units(generated, record), sample_labels, record, folder, fmt, provenance)
    synthetic = load_synthetic(folder, real, tmp_path / "cache", progress=False)
    expected = generated
    if kind == "masks":  # snapped to the levels 0 / 255, the window [0, 255]: the nearest level is the sign
        assert record.intensity["window"] == [0.0, 255.0]
        expected = torch.where(generated >= 0, 1.0, -1.0)
    # NIfTI float32; DICOM uint16 over the whole range (MR, SC) or integer HU (CT: half a HU of 1000 at most)
    tolerance = {"nifti": 1e-4, "dicom": 1e-3 if kind == "ct" else 1e-4}[fmt]
    torch.testing.assert_close(synthetic.images.images, expected, rtol=0, atol=tolerance)
    np.testing.assert_array_equal(synthetic.images.labels, sample_labels)
    assert "generator's output" in synthetic.preprocessing["intensity"]


def mednist(shared_data: Path, per_class: int) -> tuple[list[Path], np.ndarray]:
    files, labels = [], []
    for label, name in enumerate(MEDNIST_CLASSES):
        chosen = sorted((shared_data / "mednist64" / name).glob("*.jpg"))[:per_class]
        files += chosen
        labels += [label] * len(chosen)
    order = np.random.default_rng(0).permutation(len(files))  # both classes in both splits
    return [files[i] for i in order], np.asarray(labels)[order]


def plain_folder(folder: Path, files: list[Path], size: tuple[int, int]) -> Path:
    """The pictures resized to `size` (columns, rows) by another tool (PIL, antialiased), as PNG."""
    folder.mkdir(parents=True)
    for index, path in enumerate(files):
        Image.open(path).convert("L").resize(size, Image.Resampling.BILINEAR).save(folder / f"x{index:02d}.png")
    return folder


@pytest.mark.shared_data
def test_a_resized_real_image_and_the_same_image_given_resized_land_at_the_same_values(shared_data, tmp_path):
    """mednist64 pictures prepared at 32x32: every one reaches the top of the range (measured on the 32x32 grid, not
    at 64x64 before resizing), and the same pictures resized to 32x32 by PIL and given as synthetic match them."""
    files, labels = mednist(shared_data, 8)
    datalist = write_datalist(tmp_path, files, labels, "slice", {"kind": "minmax"}, [32, 32], 6, MEDNIST_CLASSES)
    real = load_real(datalist, tmp_path / "cache", progress=False)
    train = real.splits["training"]
    maxima = train.images.amax(dim=(1, 2, 3))
    torch.testing.assert_close(maxima, torch.ones_like(maxima))
    external = load_synthetic(plain_folder(tmp_path / "resized", files[:10], (32, 32)), real, tmp_path / "cache",
                              progress=False)
    assert "fitted" not in external.preprocessing  # already at the real size: intensity only
    difference = (external.images.images - train.images).abs()
    # PIL's bilinear antialiasing and MONAI's Gaussian-smoothed resize differ a little at edges: mean 0.013 here
    # (0.053 with the window measured at 64x64 before resizing), mean brightness 0.008 apart (0.028)
    assert float(difference.mean()) < 0.025 and float(difference.amax()) < 0.4
    assert abs(float(external.images.images.mean() - train.images.mean())) < 0.015


@pytest.mark.shared_data
def test_external_images_at_another_size_go_through_the_real_preprocessing(shared_data, tmp_path, caplog):
    """mednist64 data prepared at its own 64x64; external PNGs of the same pictures at 192x192 (upsampled) are fitted
    back to 64x64 and match the real images; 957x821 ones are fitted (aspect kept, padded) and evaluated; one log
    line and metrics.json say so."""
    files, labels = mednist(shared_data, 8)
    datalist = write_datalist(tmp_path, files, labels, "slice", {"kind": "minmax"}, [64, 64], 6, MEDNIST_CLASSES)
    real = load_real(datalist, tmp_path / "cache", progress=False)
    train = real.splits["training"]
    upsampled = plain_folder(tmp_path / "upsampled", files[:10], (192, 192))
    with caplog.at_level(logging.INFO, logger="medvol.evaluation.data"):
        external = load_synthetic(upsampled, real, tmp_path / "cache", progress=False)
    lines = [r.getMessage() for r in caplog.records if "real data's preprocessing" in r.getMessage()]
    assert len(lines) == 1 and "10 synthetic files not at the real size 64x64 (10 at 192x192)" in lines[0], lines
    assert "fit to that size" in lines[0] and "minmax intensity" in lines[0]
    assert external.preprocessing["fitted"]["files"] == 10
    assert list(external.images.images.shape) == [10, 1, 64, 64]
    difference = (external.images.images - train.images).abs()
    assert float(difference.mean()) < 0.04  # 0.026: upsampled by PIL, smoothed and downsampled by MONAI

    odd = plain_folder(tmp_path / "odd", files[:10], (957, 821))
    metrics = evaluate(datalist, odd, tmp_path / "eval", classifier_epochs=1, device="cpu", progress=False,
                       report=False)
    fitted = metrics["inputs"]["synthetic_preprocessing"]["fitted"]
    assert fitted["shapes"] == {"957x821": 10} and "fit to that size" in fitted["note"]
    assert metrics["inputs"]["counts"]["synthetic"]["total"] == 10 and np.isfinite(metrics["fid"]["value"])
    # the pictures keep their aspect ratio: 957x821 fits as 64x55, padded with the background (-1) above and below
    odd_images = load_synthetic(odd, real, tmp_path / "cache", progress=False).images.images
    assert torch.all(odd_images[:, :, :, :4] == -1.0) and torch.all(odd_images[:, :, :, -4:] == -1.0)
    assert float(odd_images.amax()) == pytest.approx(1.0)
    assert metrics["inputs"]["counts"][HELDOUT_SPLIT]["total"] == 6
