"""`medvol.evaluation.pipeline` and `medvol.evaluation.data`: real and synthetic images through the same preprocessing, every key of metrics.json
with the right counts, exact copies flagged, the realness filter's drops listed, and the bundles' evaluate.yaml
running the same evaluation. Tiny data: 16^2 phantoms, classifiers of one epoch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from medvol.cli import main
from medvol.errors import MedvolInputError
from medvol.data.phantoms import CLASSES, make_phantom_batch
from medvol.evaluation.data import HELDOUT_SPLIT, load_real, load_synthetic
from medvol.evaluation.pipeline import evaluate
from medvol.evaluation.utility import ARMS, BALANCED_ARM, PRETRAINED_ARM
from medvol.runs import RunRecord
from medvol.sampling import write_samples
from tests.report.test_html import check_self_contained_valid_html

SIZE = 16
ISSUE_KEYS = ("fid", "kid", "fid_real_baseline", "kid_real_baseline", "mmd", "precision", "recall", "density",
              "coverage", "ms_ssim_synthetic", "ms_ssim_real", "mode_collapse", "privacy", "recognisability")


def write_synthetic(out: Path, arrays: np.ndarray, labels, fmt: str = "nifti", classes=CLASSES) -> Path:
    """A folder as `medvol sample` writes it (files + datalist.json), from `arrays` [N, 1, *size] in source units."""
    record = RunRecord(spatial_dims=arrays.ndim - 2, image_size=list(arrays.shape[2:]), classes=list(classes),
                       family="cgan")
    provenance = {"run": str(out / "no-run"), "checkpoint": "none", "seed": 0, "family": "cgan"}
    write_samples(arrays, list(labels), record, out, fmt, provenance)
    return out


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """24 training / 8 validation / 8 test labelled 16^2 phantoms (PNG), prepared by `medvol prepare`."""
    out = tmp_path_factory.mktemp("evaluate") / "data"
    assert main(["prepare", "phantoms", "--out", str(out), "--mode", "slice", "--size", f"{SIZE},{SIZE}"]) == 0
    return out / "datalist.json"


@pytest.fixture(scope="module")
def synthetic(prepared) -> Path:
    """12 new phantoms (6 per class) written as a `medvol sample` NIfTI output."""
    images, labels = make_phantom_batch(12, 2, (SIZE, SIZE), seed=11)
    return write_synthetic(prepared.parent.parent / "synthetic", images, labels)


def test_synthetic_files_get_exactly_the_real_preprocessing(prepared, tmp_path):
    real = load_real(prepared, tmp_path / "cache", progress=False)
    train = real.splits["training"]
    assert len(train) == 24 and len(real.splits[HELDOUT_SPLIT]) == 8 and list(train.images.shape[1:]) == [1, SIZE, SIZE]
    assert float(train.images.min()) == pytest.approx(-1.0) and float(train.images.max()) == pytest.approx(1.0)
    # the training PNG files themselves, as a plain folder: the same tensors come out
    folder = tmp_path / "copies"
    folder.mkdir()
    for index, path in enumerate(train.paths[:8]):
        shutil.copy(path, folder / f"copy_{index}.png")
    copies = load_synthetic(folder, real, tmp_path / "cache", progress=False)
    assert copies.source == "folder" and not copies.images.labelled
    order = np.argsort([Path(p).name for p in copies.images.paths])
    torch.testing.assert_close(copies.images.images[torch.as_tensor(order)], train.images[:8], rtol=0, atol=0)
    # source-unit NIfTI and DICOM of the same arrays: the same images up to DICOM's int16 rounding
    arrays = (train.images[:6].numpy() + 1.0) * 500.0  # any linear source unit: the intensity window undoes it
    labels = train.labels[:6]
    nifti = load_synthetic(write_synthetic(tmp_path / "nifti", arrays, labels), real, tmp_path / "cache", progress=False)
    dicom = load_synthetic(write_synthetic(tmp_path / "dicom", arrays, labels, "dicom"), real, tmp_path / "cache",
                           progress=False)
    torch.testing.assert_close(nifti.images.images, train.images[:6], rtol=0, atol=1e-5)
    torch.testing.assert_close(dicom.images.images, train.images[:6], rtol=0, atol=2e-3)
    np.testing.assert_array_equal(nifti.images.labels, labels)
    np.testing.assert_array_equal(dicom.images.labels, labels)


def test_evaluation_writes_every_key_with_counts_utility_filtering_and_report(prepared, synthetic, tmp_path):
    out = tmp_path / "eval"
    metrics = evaluate(prepared, synthetic, out, utility=True, seeds=2, classifier_epochs=1, filter_synthetic=True,
                       device="cpu", progress=False)
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    for key in (*ISSUE_KEYS, "utility", "inputs", "feature_extractor", "methods", "timing", "filtering"):
        assert key in metrics, key
    assert isinstance(metrics["mode_collapse"], bool)
    for key in ("fid", "kid", "fid_real_baseline", "kid_real_baseline"):
        low, high = metrics[key]["ci95"]
        assert low <= high and np.isfinite(metrics[key]["value"])
    assert all(0.0 <= metrics[k] <= 1.0 for k in ("precision", "recall", "coverage"))
    # the k-NN metrics of the 12 synthetic samples and of the 8 held-out ones (their baseline) at one n
    assert metrics["precision_recall_n"] == {"n": 8, "n_reference": 24, "repeats": {"synthetic": 5, "real_baseline": 1}}
    counts = metrics["inputs"]["counts"]
    assert counts["training"] == {"total": 24, "per_class": {"normal": 12, "lesion": 12}}
    assert counts[HELDOUT_SPLIT]["total"] == 8 and counts["synthetic"] == {"total": 12, "per_class": {"normal": 6, "lesion": 6}}
    assert metrics["inputs"]["heldout_split"] == "test" and metrics["inputs"]["validation_used"] is False
    assert metrics["feature_extractor"]["kind"] == "classifier"
    synthetic_files = sorted(e["image"] for e in json.loads((synthetic / "datalist.json").read_text())["training"])
    assert sorted(n["path"] for n in metrics["privacy"]["nearest"]) == synthetic_files
    assert set(metrics["privacy"]["flagged"]) <= set(synthetic_files)
    assert set(metrics["recognisability"]["per_class"]) == set(CLASSES)
    utility = metrics["utility"]
    assert set(utility["arms"]) == set(ARMS) and set(utility["paired_difference"]) == set(ARMS) - {"real"}
    for arm in ARMS:
        assert len(utility["arms"][arm]["accuracy"]["values"]) == 2
    filtering = metrics["filtering"]
    assert filtering["kept"] + len(filtering["dropped"]) == 12 and set(filtering["dropped"]) <= set(synthetic_files)
    assert set(filtering["utility_after"]["arms"]) == set(ARMS)
    # the classifiers without synthetic data are kept beside the prepared data and not trained twice
    assert len(list((prepared.parent / "cache" / "utility").glob("*.json"))) == 4
    assert any("reused from" in note for note in filtering["utility_after"]["notes"])
    assert filtering["utility_after"]["arms"]["real"] == utility["arms"]["real"]
    for key in ("fid", "precision", "privacy", "recognisability", "utility", "filtering", "mode_collapse"):
        assert metrics["methods"][key], key
    assert {"load", "features", "fidelity", "privacy", "utility", "filtering", "total"} <= set(metrics["timing"])
    check_self_contained_valid_html((out / "report.html").read_text(encoding="utf-8"))


def test_bundle_evaluate_config_runs_the_same_evaluation(prepared, synthetic, tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    from medvol.bundles import BUNDLES_DIR, run_workflow
    from medvol.families import family_names

    assert all((BUNDLES_DIR / family / "configs" / "evaluate.yaml").is_file() for family in family_names())
    run_dir = tmp_path / "run"
    shutil.copytree(synthetic, run_dir / "synthetic")  # where the sample workflow writes by default
    RunRecord(family="cgan", spatial_dims=2, image_size=[SIZE, SIZE], datalist=str(prepared)).save(run_dir)
    writer = SummaryWriter(str(run_dir / "tensorboard"))
    for step in (1, 2, 3):
        writer.add_scalar("generator/loss", 1.0 / step, step)
    writer.close()
    run_workflow("cgan", "evaluate", {"run_dir": str(run_dir), "classifier_epochs": 1, "device": "cpu"})
    metrics = json.loads((run_dir / "evaluation" / "metrics.json").read_text())
    assert metrics["inputs"]["real"] == str(prepared) and metrics["inputs"]["counts"]["synthetic"]["total"] == 12
    assert "utility" not in metrics and all(key in metrics for key in ISSUE_KEYS)
    report = (run_dir / "evaluation" / "report.html").read_text(encoding="utf-8")
    check_self_contained_valid_html(report)
    assert "generator/loss over iterations" in report


def test_slice_mode_cuts_synthetic_volumes_like_the_real_ones(tmp_path):
    """A slice-mode datalist of volumes (on a 16^3 grid) and synthetic *volumes*: each is scaled as a whole and cut
    into slices as the real volumes are, so the real training volumes written as samples give the real slices."""
    from medvol.data.datasets import build_dataset

    data = tmp_path / "data"
    assert main(["prepare", "builtin:phantoms3d", "--out", str(data), "--mode", "slice", "--size", "16,16,16"]) == 0
    real = load_real(data, tmp_path / "cache", progress=False)
    train = real.splits["training"]
    assert real.mode == "slice" and list(train.images.shape[1:]) == [1, SIZE, SIZE] and len(train) == 24 * SIZE
    volumes = build_dataset(data, mode="volume", size=(SIZE,) * 3)
    arrays = np.stack([(np.asarray(volumes[i]["image"]) + 1.0) * 500.0 for i in range(3)])
    folder = write_synthetic(tmp_path / "volumes", arrays, [None] * 3, classes=[])
    synthetic = load_synthetic(folder, real, tmp_path / "cache", progress=False)
    assert len(synthetic.images) == 3 * SIZE
    assert synthetic.images.paths[SIZE + 2] == str(folder / "synthetic_0001.nii.gz") + "[slice 2]"
    # up to the MR percentile window taken again of an already windowed volume (its 99.5th percentile interpolates
    # just below the clipped top): 0.006 at most here
    torch.testing.assert_close(synthetic.images.images, train.images[: 3 * SIZE], rtol=0, atol=1e-2)
    other = write_synthetic(tmp_path / "other", arrays[:, :, :8], [None] * 3, classes=[])
    with pytest.raises(MedvolInputError, match=r"is 3D \[8, 16, 16\] but the real samples are 2D \[16, 16\]"):
        load_synthetic(other, real, tmp_path / "cache", progress=False)


def test_volumes_get_their_slice_coherence_next_to_real_and_heldout(prepared, synthetic, tmp_path):
    data = tmp_path / "data"
    assert main(["prepare", "builtin:phantoms3d", "--out", str(data), "--size", "16,16,16"]) == 0
    images, labels = make_phantom_batch(16, 3, (SIZE,) * 3, seed=5)
    folder = write_synthetic(tmp_path / "volumes", images, labels)
    metrics = evaluate(data, folder, tmp_path / "eval", classifier_epochs=1, device="cpu", progress=False,
                       report=False)
    coherence = metrics["slice_coherence"]
    assert set(coherence["sets"]) == {"real", HELDOUT_SPLIT, "synthetic"} and coherence["reference"] == "real"
    assert coherence["sets"]["synthetic"]["n"] == 16 and coherence["sets"][HELDOUT_SPLIT]["n"] == 8
    for axis in "012":
        for name in coherence["sets"]:
            assert -1.0 <= coherence["sets"][name]["axes"][axis]["ncc"]["mean"] <= 1.0
        assert set(coherence["difference"]["synthetic"][axis]) == {"ncc", "ssim"}
    assert metrics["methods"]["slice_coherence"] and "coherence" in metrics["timing"]
    flat = evaluate(prepared, synthetic, tmp_path / "flat", classifier_epochs=1, device="cpu", progress=False,
                    report=False)
    assert "slice_coherence" not in flat and "slice_coherence" not in flat["methods"]


def copy_training_images(real, folder: Path, count: int) -> Path:
    """The first `count` training images of `real`, copied file by file into a plain folder: a memorising generator."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, path in enumerate(real.splits["training"].paths[:count]):
        shutil.copy(path, folder / f"copy_{index:02d}.png")
    return folder


@pytest.mark.parametrize("max_samples", [None, 8])
def test_training_copies_sent_through_evaluate_are_flagged_against_the_whole_training_split(prepared, tmp_path,
                                                                                             max_samples):
    """Copies of 12 of the 24 training images: every one is flagged, also when --max-samples keeps only 8 samples
    per set for the distribution metrics (the nearest-neighbour reference stays the whole training split)."""
    real = load_real(prepared, tmp_path / "cache", progress=False)
    folder = copy_training_images(real, tmp_path / "copies", 12)
    metrics = evaluate(prepared, folder, tmp_path / "eval", classifier_epochs=1, device="cpu", progress=False,
                       report=False, max_samples=max_samples)
    privacy = metrics["privacy"]
    assert privacy["flagged_fraction"] == 1.0, privacy["flagged_fraction"]
    assert len(privacy["nearest"]) == (12 if max_samples is None else 8)
    assert privacy["n_reference"] == 24
    assert all(n["feature_distance"] == 0.0 for n in privacy["nearest"])


def test_max_samples_keeps_the_utility_arms_on_every_real_image(prepared, synthetic, tmp_path):
    metrics = evaluate(prepared, synthetic, tmp_path / "eval", utility=True, seeds=1, classifier_epochs=1,
                       device="cpu", progress=False, report=False, max_samples=6)
    counts = metrics["utility"]["counts"]
    assert counts["real"] == {"real": 24, "synthetic": 0}  # the generator saw all 24, not the 6 of --max-samples
    assert counts["synthetic"]["synthetic"] == 12
    assert metrics["inputs"]["counts"]["training"]["total"] == 6  # the distribution metrics' subset


def test_images_too_small_for_ms_ssim_are_one_clear_error(tmp_path, capsys):
    data = tmp_path / "data"
    assert main(["prepare", "phantoms", "--out", str(data), "--mode", "slice", "--size", "8,8"]) == 0
    images, labels = make_phantom_batch(6, 2, (8, 8), seed=1)
    folder = write_synthetic(tmp_path / "synthetic", images, labels)
    code = main(["evaluate", "--real", str(data / "datalist.json"), "--synthetic", str(folder), "--out",
                 str(tmp_path / "eval"), "--classifier-epochs", "1", "--device", "cpu"])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(error) == 1, error
    assert str(data / "datalist.json") in error[0] and "MS-SSIM (diversity) needs at least 10 voxels" in error[0]


def test_utility_options_balance_pretrain_and_a_selection_that_never_sees_the_test_split(prepared, synthetic, tmp_path):
    options = {"seeds": 1, "classifier_epochs": 2, "balance": True, "pretrain": True, "select_confidence": 0.5,
               "device": "cpu", "progress": False}
    first = evaluate(prepared, synthetic, tmp_path / "first", **options)
    utility = first["utility"]
    assert set(utility["arms"]) == {*ARMS, BALANCED_ARM, PRETRAINED_ARM}
    assert len(set(utility["steps"].values())) == 1
    selection = utility["selection"]
    assert selection["available_per_class"] == {"normal": 6, "lesion": 6}
    assert sum(selection["kept_per_class"].values()) == selection["kept"] == sum(selection["keep"])
    assert utility["synthetic_available"] == selection["kept"]
    assert "probability >= 0.5" in first["methods"]["utility"] and "the synthetic ones too" in first["methods"]["utility"]
    report = (tmp_path / "first" / "report.html").read_text(encoding="utf-8")
    assert "Sample selection" in report and "Paired difference against <code>real+augmentation</code>" in report
    # the validation images as the test split: the selection is the same (it only ever sees the training split)
    document = json.loads(prepared.read_text())
    document["test"] = document["validation"]
    other = prepared.parent / "datalist_other_test.json"
    other.write_text(json.dumps(document))
    second = evaluate(other, synthetic, tmp_path / "second", **options)
    assert second["utility"]["test_count"] == 8
    assert second["utility"]["selection"]["keep"] == selection["keep"]
    assert second["utility"]["selection"]["probabilities"] == pytest.approx(selection["probabilities"])


def test_intervals_of_slices_cut_from_volumes_resample_subjects(tmp_path):
    """Real slices of 16^3 phantom volumes and synthetic volumes cut the same way: the FID/KID bootstrap resamples
    subjects (real) and files (synthetic), not slices."""
    data = tmp_path / "data"
    assert main(["prepare", "builtin:phantoms3d", "--out", str(data), "--mode", "slice", "--size", "16,16,16"]) == 0
    images, labels = make_phantom_batch(8, 3, (SIZE,) * 3, seed=3)
    folder = write_synthetic(tmp_path / "volumes", images * 500.0, labels)
    metrics = evaluate(data, folder, tmp_path / "eval", classifier_epochs=1, device="cpu", progress=False,
                       report=False)
    n = metrics["fid"]["n_real"]
    assert n == 8 * SIZE  # the test split: 8 volumes of 16 slices
    for key in ("fid", "kid", "fid_real_baseline", "kid_real_baseline"):
        entry = metrics[key]
        assert entry["n_real"] == entry["n_synthetic"] == n
        assert 8 <= entry["groups_real"] <= 24 and entry["groups_synthetic"] == 8, (key, entry)
    assert "resampling subjects" in metrics["methods"]["fid"]
