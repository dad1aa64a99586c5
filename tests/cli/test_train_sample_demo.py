"""`medvol train` (data prepared on the fly, resume), `medvol sample` (NIfTI and DICOM with the training geometry,
no identifiers of a real input series) and `medvol demo` with a tiny time budget."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch
import yaml

from medvol.bundles import BUNDLES_DIR
from medvol.cli import main
from medvol.data.phantoms import write_phantom_dataset
from medvol.io.writers import identifying_tags_in, lps_geometry_from_affine_ras
from medvol.runs import RunRecord

TINY_NETWORKS = {
    "cgan": {"latent_size": 8, "generator": {"channels": [16, 8]}, "critic": {"channels": [8, 16]}},
    "cae": {"channels": [8, 16], "latent_size": 8},
}


def tiny_bundle(family: str, folder: Path) -> Path:
    """A copy of a bundle whose train.yaml has narrow networks, critic_steps 1 and 16^3 images (a 'tiny config')."""
    target = folder / f"tiny_{family}"
    shutil.copytree(BUNDLES_DIR / family, target)
    train_yaml = target / "configs" / "train.yaml"
    config = yaml.safe_load(train_yaml.read_text())
    config.update(network=TINY_NETWORKS[family], image_size=16, batch_size=4, sample_every=1, precision="fp32")
    if family != "cae":
        config["objective"] = {"critic_steps": 1}
    train_yaml.write_text(yaml.safe_dump(config, sort_keys=False))
    return target


def checkpoint_iterations(run_dir: Path) -> list[int]:
    return sorted(int(p.stem.split("_")[1]) for p in (run_dir / "checkpoints").glob("checkpoint_*.pt"))


def test_train_prepares_raw_data_resumes_and_samples_nifti(tmp_path, capsys):
    raw = write_phantom_dataset(tmp_path / "raw", spatial_dims=3, size=(16, 16, 16), n_per_class=4, seed=3)
    bundle = tiny_bundle("cgan", tmp_path)
    run_dir = tmp_path / "run"
    command = ["train", "--bundle", str(bundle), "--data", str(raw), "--out", str(run_dir), "--checkpoint-every", "1",
               "--device", "cpu", "--seed", "1"]

    assert main([*command, "--iterations", "2"]) == 0
    assert (run_dir / "data" / "datalist.json").is_file(), "raw data were not prepared into RUN/data"
    for name in ("run.json", "config.yaml", "plan.json"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tensorboard").iterdir()) and list((run_dir / "samples").glob("*.png"))
    assert checkpoint_iterations(run_dir) == [1, 2]
    config_used = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config_used["spatial_dims"] == 3 and config_used["iterations"] == 2 and config_used["seed"] == 1

    capsys.readouterr()
    assert main([*command, "--iterations", "3"]) == 0
    assert "resumed from" in capsys.readouterr().out
    assert checkpoint_iterations(run_dir) == [1, 2, 3]

    out = tmp_path / "synthetic"
    assert main(["sample", str(run_dir), "--n", "2", "--format", "nifti", "--out", str(out)]) == 0
    datalist = json.loads((out / "datalist.json").read_text())
    assert sorted(e["label_name"] for e in datalist["training"]) == ["lesion", "lesion", "normal", "normal"]
    assert datalist["provenance"]["checkpoint"].endswith("checkpoint_00000003.pt")
    training_image = nib.load(json.loads((run_dir / "data" / "datalist.json").read_text())["training"][0]["image"])
    for entry in datalist["training"]:
        image = nib.load(entry["image"])
        assert image.shape == (16, 16, 16)
        np.testing.assert_allclose(image.header.get_zooms(), training_image.header.get_zooms(), atol=1e-3)
    # same seed and checkpoint: the same images; another seed: other images
    def arrays(folder: Path) -> list[np.ndarray]:
        return [np.asarray(nib.load(str(p)).dataobj) for p in sorted(folder.glob("*.nii.gz"))]

    assert main(["sample", str(run_dir), "--n", "2", "--out", str(tmp_path / "again")]) == 0
    assert main(["sample", str(run_dir), "--n", "2", "--seed", "5", "--out", str(tmp_path / "other")]) == 0
    assert all(np.array_equal(a, b) for a, b in zip(arrays(out), arrays(tmp_path / "again")))
    assert not any(np.array_equal(a, b) for a, b in zip(arrays(out), arrays(tmp_path / "other")))
    # the synthetic datalist merges with the real one in one line
    real = json.loads((run_dir / "data" / "datalist.json").read_text())
    merged = real["training"] + datalist["training"]
    assert len(merged) == len(real["training"]) + 4

    assert main(["sample", str(run_dir), "--n", "1", "--label", "flower", "--out", str(tmp_path / "bad")]) == 2
    assert main(["train", "--bundle", "vae", "--data", str(raw), "--out", str(run_dir)]) == 2  # another model in RUN

    # the final export: the EMA generator alone, named in run.json; a run folder left with it (checkpoints deleted to
    # save space) samples the same images as the last checkpoint, and --checkpoint takes the export's path too
    model = json.loads((run_dir / "run.json").read_text())["model"]
    assert model["file"] == "models/model.pt" and model["network"] == "generator" and model["ema"] and model["iteration"] == 3
    export = run_dir / "models" / "model.pt"
    assert export.stat().st_size < (run_dir / "checkpoints" / "checkpoint_00000003.pt").stat().st_size / 4
    slim = tmp_path / "slim_run"
    shutil.copytree(run_dir, slim, ignore=shutil.ignore_patterns("checkpoints"))
    assert main(["sample", str(slim), "--n", "2", "--out", str(tmp_path / "from_export")]) == 0
    assert main(["sample", str(run_dir), "--n", "2", "--checkpoint", str(export), "--out", str(tmp_path / "by_path")]) == 0
    for folder in ("from_export", "by_path"):
        assert all(np.array_equal(a, b) for a, b in zip(arrays(out), arrays(tmp_path / folder))), folder
    assert json.loads((tmp_path / "from_export" / "datalist.json").read_text())["provenance"]["checkpoint"] == "models/model.pt"
    foreign = tmp_path / "foreign.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, foreign)
    assert main(["sample", str(run_dir), "--n", "1", "--checkpoint", str(foreign), "--out", str(tmp_path / "foreign")]) == 2


@pytest.mark.shared_data
def test_dicom_export_has_the_training_geometry_and_no_identifiers(shared_data, tmp_path):
    source = shared_data / "dicom" / "crop_series"
    bundle = tiny_bundle("cae", tmp_path)
    run_dir = tmp_path / "run"
    assert main(["prepare", str(source), "--out", str(tmp_path / "data"), "--split", "1,0,0"]) == 0
    assert main(["train", "--bundle", str(bundle), "--data", str(tmp_path / "data"), "--out", str(run_dir),
                 "--iterations", "1", "--device", "cpu"]) == 0
    out = tmp_path / "dicom"
    assert main(["sample", str(run_dir), "--n", "2", "--format", "dicom", "--out", str(out)]) == 0

    record = json.loads((run_dir / "run.json").read_text())
    spacing, origin, direction = lps_geometry_from_affine_ras(record["reference_affine"])
    sources = [pydicom.dcmread(str(p), stop_before_pixels=True) for p in sorted(source.rglob("*.dcm"))]
    source_series = sitk.ReadImage(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(source / "study1_hippo_crop")))
    datalist = json.loads((out / "datalist.json").read_text())
    assert len(datalist["training"]) == 2
    for entry in datalist["training"]:
        series_dir = Path(entry["image"])
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(series_dir)))
        image = reader.Execute()
        assert image.GetSize() == (16, 16, 16)
        np.testing.assert_allclose(image.GetSpacing(), spacing, atol=1e-3)
        np.testing.assert_allclose(image.GetOrigin(), origin, atol=1e-3)
        np.testing.assert_allclose(image.GetDirection(), direction.ravel(), atol=1e-3)
        # prepare's default `fit` resamples the whole field of view into 16^3 keeping the aspect ratio: the export
        # covers the real series' extent on every axis and equals it on the limiting one (axes may be reordered to RAS)
        exported_extent = np.sort(np.multiply(image.GetSize(), image.GetSpacing()))
        source_extent = np.sort(np.multiply(source_series.GetSize(), source_series.GetSpacing()))
        assert np.all(exported_extent >= source_extent - 1e-3)
        assert exported_extent.max() - source_extent.max() < max(image.GetSpacing())  # not zoomed out further
        for path in sorted(series_dir.glob("*.dcm")):
            exported = pydicom.dcmread(str(path))
            assert identifying_tags_in(exported, sources) == []
            assert list(exported.ImageType[:2]) == ["DERIVED", "SECONDARY"]
            assert "SYNTHETIC" in exported.SeriesDescription
            assert str(exported.PatientID) not in {str(s.get("PatientID", "")) for s in sources}
            assert exported.StudyInstanceUID not in {s.StudyInstanceUID for s in sources}


@pytest.mark.slow
def test_demo_with_a_tiny_budget_writes_files_nibabel_and_simpleitk_open(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--minutes", "0.1"]) == 0
    summary = json.loads((out / "demo.json").read_text())
    assert set(summary["runs"]) == {"vae_3d", "cgan_2d"}
    for name, result in summary["runs"].items():
        assert result["iterations"] >= 1
        assert Path(result["montage"]).is_file() and Path(result["checkpoint"]).is_file()
        files = sorted(Path(result["nifti"]).glob("*.nii.gz"))
        assert len(files) == result["samples"] > 0
        for path in files:
            assert np.isfinite(np.asarray(nib.load(str(path)).dataobj)).all()
            assert sitk.ReadImage(str(path)).GetDimension() == (3 if name.endswith("3d") else 2)
    dicom_dirs = sorted(p for p in Path(summary["runs"]["vae_3d"]["dicom"]).iterdir() if p.is_dir())
    assert len(dicom_dirs) == 2
    image = sitk.ReadImage(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(dicom_dirs[0])))
    assert image.GetSize() == (32, 32, 32)
    assert "demo: finished" in capsys.readouterr().out

    # the same command again continues both runs and replaces the samples instead of failing on a non-empty folder
    assert main(["demo", "--out", str(out), "--minutes", "0.1"]) == 0
    again = json.loads((out / "demo.json").read_text())
    for name, result in again["runs"].items():
        assert result["iterations"] > summary["runs"][name]["iterations"]
        assert len(list(Path(result["nifti"]).glob("*.nii.gz"))) == result["samples"]


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--bundle", "wgan_gp", "--data", "phantoms", "--max-memory", "nan"],
        ["train", "--bundle", "wgan_gp", "--data", "phantoms", "--max-memory", "inf"],
        ["train", "--bundle", "wgan_gp", "--data", "phantoms", "--max-memory", "0"],
        ["demo", "--minutes", "nan"],
    ],
)
def test_non_finite_numbers_are_refused_before_any_work(argv, tmp_path, capsys):
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "must be" in error[0], error
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("damage", ["missing", "garbage"])
def test_sample_reports_a_missing_or_damaged_checkpoint_in_one_line(damage, tmp_path, capsys):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    RunRecord(family="cae", spatial_dims=2, image_size=[16, 16]).save(run_dir)
    (run_dir / "checkpoints" / "latest.json").write_text(json.dumps({"iteration": 2, "file": "checkpoint_00000002.pt"}))
    if damage == "garbage":
        (run_dir / "checkpoints" / "checkpoint_00000002.pt").write_bytes(b"not a checkpoint")
    assert main(["sample", str(run_dir), "--n", "1", "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "checkpoint_00000002.pt" in error[0], error
    assert ("missing" if damage == "missing" else "not a readable medvol checkpoint") in error[0]


def test_width_and_network_options_size_the_networks_and_run_json_records_them(tmp_path, capsys):
    raw = write_phantom_dataset(tmp_path / "raw", spatial_dims=2, size=(16, 16), n_per_class=4, seed=3)
    run_dir = tmp_path / "run"
    argv = ["train", "--bundle", "cgan", "--data", str(raw), "--out", str(run_dir), "--iterations", "1", "--device", "cpu",
            "--precision", "fp32", "--evaluate-every", "0", "--image-size", "16,16", "--width", "4", "--network", "minibatch_std=true",
            "--network", "latent_size=8", "--network", "critic.channels=[4, 4]",
            "--objective", "mode_seeking_weight=0.5", "--objective", "lr=1e-4", "--augment"]
    assert main(argv) == 0
    record = json.loads((run_dir / "run.json").read_text())
    assert record["width"] == 4
    assert record["objective"] == {"mode_seeking_weight": 0.5, "lr": 1e-4}
    assert record["optimization"]["optimizer"]["lr"] == 1e-4 and record["dataset_options"]["augment"] is True
    # 16^2 gives 2 stride-2 stages: the generator's widths follow --width, the critic's --network
    assert record["network"] == {"minibatch_std": True, "latent_size": 8, "generator": {"channels": [8, 4]},
                                 "critic": {"channels": [4, 4]}}
    from medvol.networks.factory import build, parameter_counts

    rebuilt = build("cgan", 2, [16, 16], num_classes=2, **record["network"])
    assert record["parameters"] == parameter_counts(rebuilt)
    assert main(["sample", str(run_dir), "--n", "1", "--out", str(tmp_path / "samples")]) == 0
    assert len(list((tmp_path / "samples").glob("*.nii.gz"))) == 2


@pytest.mark.parametrize("argv,problem", [
    (["--width", "0"], "--width"),
    (["--network", "latent_size"], "KEY=VALUE"),
    (["--objective", "critic_steps"], "KEY=VALUE"),
    (["--objective", "penalty_weight=5"], "cgan does not take penalty_weight=5"),
    (["--objective", "lr=fast"], "cgan does not take lr=fast"),
    (["--objective", "critic_steps=0"], "critic_steps must be a whole number of at least 1"),
    (["--objective", "betas=[0.5]"], "betas must be two numbers"),
])
def test_bad_width_or_network_option_is_one_line(argv, problem, tmp_path, capsys):
    raw = write_phantom_dataset(tmp_path / "raw", spatial_dims=2, size=(16, 16), n_per_class=2, seed=3)
    assert main(["train", "--bundle", "cgan", "--data", str(raw), "--out", str(tmp_path / "run"), *argv]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and problem in error[0], error


def test_a_run_resumes_only_with_the_objective_and_augmentation_it_started_with(tmp_path, capsys):
    raw = write_phantom_dataset(tmp_path / "raw", spatial_dims=2, size=(16, 16), n_per_class=4, seed=3)
    run_dir = tmp_path / "run"
    base = ["train", "--bundle", "cgan", "--data", str(raw), "--out", str(run_dir), "--device", "cpu", "--precision",
            "fp32", "--evaluate-every", "0", "--image-size", "16,16", "--width", "4"]
    assert main([*base, "--iterations", "1", "--objective", "mode_seeking_weight=0.5"]) == 0
    capsys.readouterr()
    for changed, problem in ((["--objective", "mode_seeking_weight=0.5", "--augment"], "augment False, not True"),
                             ([], "objective {'mode_seeking_weight': 0.5}, not {}")):
        assert main([*base, "--iterations", "2", *changed]) == 2
        error = capsys.readouterr().err.strip().splitlines()
        assert len(error) == 1 and problem in error[0], error
    assert main([*base, "--iterations", "2", "--objective", "mode_seeking_weight=0.5"]) == 0
    assert json.loads((run_dir / "checkpoints" / "latest.json").read_text())["iteration"] == 2
