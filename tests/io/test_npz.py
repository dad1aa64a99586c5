"""MedMNIST-style .npz archives through `medvol prepare`: official split, labels, class names, NIfTI files, bad
archives (one line, exit 2), and the real AdrenalMNIST3D file."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medvol.cli import main
from medvol.errors import MedvolInputError
from medvol.io.npz import datalist_from_npz

SPLITS = ("training", "validation", "test")
COUNTS = {"train": 10, "val": 3, "test": 5}


def write_npz(path: Path, shape=(8, 8, 8), counts=COUNTS, drop=(), **replace) -> Path:
    """A tiny archive: binary cubes (label 1 larger than label 0), labels [N, 1] uint8 as MedMNIST stores them."""
    rng = np.random.default_rng(0)
    arrays = {}
    for prefix, count in counts.items():
        labels = (np.arange(count) % 2).astype(np.uint8)[:, None]
        images = np.zeros((count, *shape), dtype=np.uint8)
        for i, label in enumerate(labels[:, 0]):
            side = 2 + 2 * int(label)
            corner = rng.integers(0, min(shape) - side, size=len(shape))
            images[(i, *(slice(c, c + side) for c in corner))] = 255
        arrays[f"{prefix}_images"], arrays[f"{prefix}_labels"] = images, labels
    arrays.update(replace)
    for key in drop:
        arrays.pop(key)
    np.savez_compressed(path, **arrays)
    return path


def prepare(*argv) -> int:
    return main(["prepare", *map(str, argv)])


def test_official_split_labels_names_and_files(tmp_path):
    source = write_npz(tmp_path / "tiny.npz")
    out = tmp_path / "prepared"
    assert prepare(source, "--out", out, "--class-names", "normal,hyperplasia") == 0
    datalist = json.loads((out / "datalist.json").read_text())
    report = json.loads((out / "report.json").read_text())
    assert [len(datalist[s]) for s in SPLITS] == [10, 3, 5]
    assert datalist["official_split"] is True and datalist["classes"] == ["normal", "hyperplasia"]
    assert datalist["intensity"]["kind"] == "minmax"  # MR percentiles would blank masks with < 0.5% foreground
    assert datalist["intensity"]["levels"] == [0.0, 255.0]  # binary masks: samples are snapped to these
    assert datalist["source_spatial_dims"] == 3 and datalist["mode"] == "volume"
    archive = np.load(source)
    for split, prefix in zip(SPLITS, ("train", "val", "test")):
        for index, entry in enumerate(datalist[split]):
            assert entry["id"] == entry["subject"] == f"{prefix}_{index:04d}"
            assert entry["label"] == archive[f"{prefix}_labels"][index, 0]
            assert entry["label_name"] == ("normal", "hyperplasia")[entry["label"]]
            image = nib.load(entry["image"])
            assert np.array_equal(np.asarray(image.dataobj), archive[f"{prefix}_images"][index])
            assert np.allclose(image.affine, np.eye(4))
    paths = [f["path"] for f in report["files"]]
    assert paths[0] == str(source.resolve()) and len(paths) == 1 + 18
    assert report["files"][0]["reason"].startswith("MedMNIST-style archive: train 10 / val 3 / test 5 images of 8x8x8")
    assert report["summary"]["splits"]["training"]["per_class"] == {"normal": 5, "hyperplasia": 5}


def test_without_names_and_with_a_new_split(tmp_path):
    source = write_npz(tmp_path / "tiny.npz")
    assert prepare(source, "--out", tmp_path / "a") == 0
    assert json.loads((tmp_path / "a" / "datalist.json").read_text())["classes"] == ["0", "1"]
    assert prepare(source, "--out", tmp_path / "b", "--split", "0.5,0.25,0.25") == 0  # --split replaces the official one
    datalist = json.loads((tmp_path / "b" / "datalist.json").read_text())
    assert "official_split" not in datalist and [len(datalist[s]) for s in SPLITS] == [9, 5, 4]


def test_2d_archive(tmp_path):
    grey = np.random.default_rng(1).integers(0, 256, size=(10, 6, 9), dtype=np.uint8)
    source = write_npz(tmp_path / "tiny2d.npz", shape=(6, 9), train_images=grey)
    datalist = datalist_from_npz(source, tmp_path / "images")
    assert datalist.source_spatial_dims == 2
    assert datalist.intensity == {"kind": "minmax"}  # greyscale pictures, not masks: no levels
    first = np.load(source)["train_images"][0]
    written = np.asarray(nib.load(datalist.entries[0]["image"]).dataobj)
    assert written.shape == (9, 6, 1) and np.array_equal(written[..., 0], first.T)  # [x, y, 1] like a radiograph


@pytest.mark.parametrize("kwargs, problem", [
    [{"drop": ("val_labels",)}, "missing arrays ['val_labels']"],
    [{"test_labels": np.zeros((4, 1), np.uint8)}, "test_labels has 4 labels but test_images has 5 images"],
    [{"train_labels": np.zeros((10, 3), np.uint8)}, "multi-label archives are not supported"],
    [{"train_labels": -np.ones((10, 1))}, "non-negative integer class labels"],
    [{"val_images": np.zeros((3, 8, 8, 8, 2))}, "expected [N, X, Y, Z] volumes"],
    [{"val_images": np.zeros((3, 8, 8))}, "the splits mix 2D images and 3D volumes"],
    [{"test_images": np.full((5, 8, 8, 8), np.nan)}, "test_images holds NaN or infinite values"],
])
def test_bad_archive_is_one_line_exit_2(tmp_path, capsys, kwargs, problem):
    source = write_npz(tmp_path / "bad.npz", **kwargs)
    assert prepare(source, "--out", tmp_path / "out") == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"medvol prepare: error: {source.resolve()}: ") and problem in lines[0]
    assert not (tmp_path / "out" / "images").exists()  # checked before anything is written


def test_not_an_archive_and_bad_class_names(tmp_path, capsys):
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not a zip file")
    assert prepare(broken, "--out", tmp_path / "a") == 2
    assert "not a readable .npz archive" in capsys.readouterr().err
    source = write_npz(tmp_path / "tiny.npz")
    assert prepare(source, "--out", tmp_path / "b", "--class-names", "normal") == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("medvol prepare: error: --class-names: names the integer labels 0..0")
    with pytest.raises(MedvolInputError, match="distinct"):
        datalist_from_npz(source, tmp_path / "c").name_classes(["a", "a"])


@pytest.mark.shared_data
def test_adrenalmnist3d(shared_data, tmp_path):
    source = shared_data / "adrenal3d" / "adrenalmnist3d.npz"
    out = tmp_path / "adrenal"
    assert prepare(source, "--out", out, "--class-names", "normal,hyperplasia", "--size", "28,28,28") == 0
    datalist = json.loads((out / "datalist.json").read_text())
    report = json.loads((out / "report.json").read_text())
    assert [len(datalist[s]) for s in SPLITS] == [1188, 98, 298]
    splits = report["summary"]["splits"]
    assert splits["training"]["per_class"] == {"normal": 929, "hyperplasia": 259}
    assert splits["test"]["per_class"] == {"normal": 229, "hyperplasia": 69}
    assert report["summary"]["files"] == 1 + 1584 and report["summary"]["skipped"] == 0
    image = nib.load(datalist["test"][0]["image"])
    assert image.shape == (28, 28, 28) and set(np.unique(np.asarray(image.dataobj))) == {0, 255}
    assert (out / "preview.png").is_file()


def test_train_on_the_archive_keeps_the_split_and_samples_masks(tmp_path):
    source = write_npz(tmp_path / "tiny.npz", shape=(16, 16, 16), counts={"train": 12, "val": 4, "test": 4})
    run = tmp_path / "run"
    argv = ["--bundle", "cgan", "--data", source, "--out", run, "--spatial-dims", "3", "--iterations", "1",
            "--evaluate-every", "0", "--device", "cpu", "--batch-size", "4"]
    assert main(["train", *map(str, argv)]) == 0  # prepared on the fly into RUN/data
    datalist = json.loads((run / "data" / "datalist.json").read_text())
    assert datalist["official_split"] is True and [len(datalist[s]) for s in SPLITS] == [12, 4, 4]
    assert json.loads((run / "run.json").read_text())["intensity_source"]["levels"] == [0.0, 255.0]
    assert main(["sample", str(run), "--n", "2", "--out", str(tmp_path / "samples")]) == 0
    for path in sorted((tmp_path / "samples").glob("*.nii.gz")):  # snapped to the masks' two values
        assert set(np.unique(np.asarray(nib.load(path).dataobj))) <= {0.0, 255.0}


@pytest.mark.shared_data
def test_an_archive_with_a_failing_zip_crc_is_one_line(shared_data, tmp_path, capsys):
    data = bytearray((shared_data / "adrenal3d/adrenalmnist3d.npz").read_bytes())
    data[len(data) // 3] ^= 0xFF  # inside train_images.npy, stored uncompressed: only its CRC-32 can tell
    (tmp_path / "damaged.npz").write_bytes(bytes(data))
    assert prepare(tmp_path / "damaged.npz", "--out", tmp_path / "out") == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"medvol prepare: error: {tmp_path / 'damaged.npz'}: array train_images cannot be read "
                     "(BadZipFile: Bad CRC-32 for file 'train_images.npy')"]
