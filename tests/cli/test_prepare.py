"""`medvol prepare` end to end on real data, built-in phantoms and bad inputs."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medvol.cli import main

SPLITS = ("training", "validation", "test")


def prepare(*argv) -> int:
    return main(["prepare", *map(str, argv)])


def load(out: Path) -> tuple[dict, dict]:
    return json.loads((out / "datalist.json").read_text()), json.loads((out / "report.json").read_text())


def split_subjects(datalist: dict) -> dict[str, set[str]]:
    return {name: {e["subject"] for e in datalist[name]} for name in SPLITS}


def assert_no_leak(datalist: dict) -> None:
    subjects = split_subjects(datalist)
    assert not (subjects["training"] & subjects["validation"])
    assert not (subjects["training"] & subjects["test"])
    assert not (subjects["validation"] & subjects["test"])


def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("medvol prepare: error: ")
    return lines[0]


@pytest.mark.shared_data
@pytest.mark.parametrize("mode, spatial_dims", [["volume", 3], ["slice", 2]])
def test_hippocampus_images(shared_data, tmp_path, mode, spatial_dims):
    source = shared_data / "hippocampus3d" / "images"
    assert prepare(source, "--out", tmp_path / "a", "--mode", mode, "--seed", "1") == 0
    datalist, report = load(tmp_path / "a")
    assert datalist["mode"] == mode and datalist["spatial_dims"] == spatial_dims
    assert datalist["source_spatial_dims"] == 3 and datalist["intensity"]["kind"] == "mr"
    files = {f["path"] for f in report["files"]}
    assert files == {str(p) for p in source.resolve().glob("*.nii.gz")}
    assert sum(len(datalist[s]) for s in SPLITS) == 261 == report["summary"]["entries"]
    assert all(e["image"].endswith(".nii.gz") for s in SPLITS for e in datalist[s])  # volumes; slices come later
    assert_no_leak(datalist)
    assert [len(datalist[s]) for s in SPLITS] == [157, 52, 52]
    if mode == "volume":  # the seed decides the split, and only the seed
        assert prepare(source, "--out", tmp_path / "b", "--mode", mode, "--seed", "1") == 0
        assert prepare(source, "--out", tmp_path / "c", "--mode", mode, "--seed", "2") == 0
        assert split_subjects(load(tmp_path / "b")[0]) == split_subjects(datalist)
        assert split_subjects(load(tmp_path / "c")[0]) != split_subjects(datalist)


@pytest.mark.shared_data
def test_mednist_class_folders_stratified(shared_data, tmp_path):
    assert prepare(shared_data / "mednist64", "--out", tmp_path, "--mode", "slice", "--size", "64,64") == 0
    datalist, report = load(tmp_path)
    assert datalist["classes"] == ["CTAbd", "CTChest", "CTHead", "CXR", "MRBrain", "MRBreast"]
    assert datalist["spatial_dims"] == 2 and datalist["intensity"]["kind"] == "minmax"
    assert datalist["preprocessing"] == {"size": [64, 64], "spacing": None, "shape_mode": "fit",
                                         "crop_foreground": False}
    assert report["summary"]["files"] == 3000 and report["summary"]["used"] == 3000
    assert_no_leak(datalist)
    for name, fraction in zip(SPLITS, datalist["split_fractions"]):
        counts = Counter(e["label_name"] for e in datalist[name])
        assert set(counts) == set(datalist["classes"])
        for count in counts.values():
            assert abs(count / (500 * fraction) - 1) < 0.02
    assert report["summary"]["seconds"] < 30


@pytest.mark.shared_data
def test_hippocampus_root_reports_labels_without_image(shared_data, tmp_path):
    assert prepare(shared_data / "hippocampus3d", "--out", tmp_path) == 0
    datalist, report = load(tmp_path)
    skipped = {Path(f["path"]).name for f in report["files"] if f["status"] == "skipped"}
    assert skipped == {"hippocampus_010.nii.gz", "hippocampus_281.nii.gz"}
    assert sum(len(datalist[s]) for s in SPLITS) == 261
    assert report["summary"]["files"] == 261 + 262


@pytest.mark.shared_data
def test_dicom_series_converted_to_nifti(shared_data, tmp_path):
    source = shared_data / "dicom" / "crop_series"
    assert prepare(source, "--out", tmp_path) == 0
    datalist, report = load(tmp_path)
    entries = [e for s in SPLITS for e in datalist[s]]
    assert len(entries) == 2 and len({e["series_uid"] for e in entries}) == 2
    assert {e["subject"] for e in entries} == {"PGBM-002", "PGBM-006"}
    for entry in entries:
        assert Path(entry["image"]).parent == tmp_path / "images"
        assert nib.load(entry["image"]).shape[2] in (32, 35)
    dicom_files = {str(p) for p in source.resolve().rglob("*.dcm")}
    assert {f["path"] for f in report["files"]} == dicom_files
    assert datalist["intensity"]["kind"] == "mr"
    converted = {e["image"]: Path(e["image"]).stat().st_mtime_ns for e in entries}
    assert prepare(source, "--out", tmp_path) == 0  # series are converted once, not on every run
    assert {image: Path(image).stat().st_mtime_ns for image in converted} == converted
    assert split_subjects(load(tmp_path)[0]) == split_subjects(datalist)


@pytest.mark.parametrize("source, mode, suffix, spatial_dims", [
    ["phantoms", "volume", ".nii.gz", 3],
    ["builtin:phantoms2d", "slice", ".png", 2],
])
def test_builtin_phantoms_load_with_monai(tmp_path, source, mode, suffix, spatial_dims):
    from monai.data import load_decathlon_datalist

    assert prepare(source, "--out", tmp_path, "--mode", mode, "--size", ",".join(["16"] * spatial_dims)) == 0
    datalist, report = load(tmp_path)
    assert datalist["classes"] == ["normal", "lesion"] and datalist["source"] == source
    training = load_decathlon_datalist(tmp_path / "datalist.json", is_segmentation=False)
    assert len(training) == 24 and training[0]["image"].endswith(suffix)
    assert Counter(e["label"] for e in training) == {0: 12, 1: 12}
    assert report["summary"]["skipped"] == 0 and report["summary"]["used"] == 41  # 40 images + labels.csv
    assert nib.load(training[0]["image"]).shape == (16, 16, 16) if spatial_dims == 3 else True


def write_volumes(folder: Path, names, nan_name: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        data = np.random.default_rng(0).random((6, 6, 4)).astype(np.float32)
        if name == nan_name:
            data[0, 0, 0] = np.nan
        nib.save(nib.Nifti1Image(data, np.eye(4)), str(folder / f"{name}.nii.gz"))
    return folder


def test_nan_volume_skipped_others_kept(tmp_path):
    source = write_volumes(tmp_path / "src", [f"s{i}" for i in range(6)], nan_name="s3")
    assert prepare(source, "--out", tmp_path / "out") == 0
    datalist, report = load(tmp_path / "out")
    records = {Path(f["path"]).name: f for f in report["files"]}
    assert records["s3.nii.gz"]["status"] == "skipped" and "NaN" in records["s3.nii.gz"]["reason"]
    assert sorted(e["subject"] for s in SPLITS for e in datalist[s]) == ["s0", "s1", "s2", "s4", "s5"]


def test_output_folder_inside_source_is_not_read_back(tmp_path):
    source = write_volumes(tmp_path / "src", ["a", "b", "c"])
    for _ in range(2):
        assert prepare(source, "--out", source / "prepared") == 0
    datalist, report = load(source / "prepared")
    assert len(report["files"]) == 3 and sum(len(datalist[s]) for s in SPLITS) == 3


def test_csv_with_space_in_id_is_repaired(tmp_path):
    source = write_volumes(tmp_path / "src", ["sub_01", "sub_02", "sub_03", "sub_04", "sub_05"])
    labels = tmp_path / "labels.csv"
    labels.write_text("id,label\nsub 01,lesion\nsub_02,normal\nsub_03,lesion\nsub_03,lesion\nsub_09,normal\nsub_05,normal\n")
    assert prepare(source, "--out", tmp_path / "out", "--labels", labels, "--unlabelled", "skip") == 0
    datalist, report = load(tmp_path / "out")
    reasons = {f["path"].rsplit("/", 1)[-1]: f["reason"] for f in report["files"]}
    assert "repaired to 'sub_01'" in reasons["labels.csv:2"]
    assert "duplicate id 'sub_03'" in reasons["labels.csv:5"]
    assert "unknown id 'sub_09'" in reasons["labels.csv:6"]
    assert reasons["sub_04.nii.gz"] == "no label in labels.csv (--unlabelled skip)"
    assert datalist["classes"] == ["lesion", "normal"]
    assert sorted(e["subject"] for s in SPLITS for e in datalist[s]) == ["sub_01", "sub_02", "sub_03", "sub_05"]


@pytest.mark.parametrize("case, message", [
    ["empty", "folder is empty"],
    ["missing", "does not exist"],
    ["ambiguous_csv", "labels.csv: line 2"],
    ["bad_split", "--split: fractions must sum to 1"],
    ["bad_size", "--size: volume mode needs 3 values"],
    ["no_images", "nothing usable"],
])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, case, message):
    source = tmp_path / "src"
    argv = [source, "--out", tmp_path / "out"]
    if case == "empty":
        source.mkdir()
    elif case == "no_images":
        source.mkdir()
        (source / "notes.txt").write_text("x")
    elif case != "missing":
        write_volumes(source, ["sub_01", "sub-01", "sub_02"])
    if case == "ambiguous_csv":
        (tmp_path / "labels.csv").write_text("id,label\nsub 01,lesion\nsub_02,normal\n")
        argv += ["--labels", tmp_path / "labels.csv"]
    elif case == "bad_split":
        argv += ["--split", "0.6,0.3,0.3"]
    elif case == "bad_size":
        argv += ["--size", "32,32"]
    assert prepare(*argv) == 2
    line = one_error_line(capsys)
    assert message in line
    if case == "no_images":
        assert "notes.txt" in line
        assert json.loads((tmp_path / "out" / "report.json").read_text())["summary"]["skipped"] == 1


@pytest.mark.shared_data
def test_radiographs_with_wrong_headers_are_reported(shared_data, tmp_path):
    assert prepare(shared_data / "dicom" / "cxr_single", "--out", tmp_path) == 0
    datalist, report = load(tmp_path)
    records = {Path(f["path"]).name: f for f in report["files"]}
    assert len(records) == 6 and all(f["status"] != "skipped" for f in records.values())
    assert "Modality CT is not credible" in records["test5.dcm"]["reason"]
    assert "RIBCAGE" in records["test4.dcm"]["reason"]
    assert datalist["spatial_dims"] == 2 and datalist["intensity"]["kind"] == "minmax"  # the CT header is not trusted
    entries = [e for s in SPLITS for e in datalist[s]]
    assert len(entries) == 6  # one 2D image per file, even where files share a series uid
    assert {nib.load(e["image"]).shape for e in entries} == {(1024, 1024, 1)}
    assert_no_leak(datalist)


@pytest.mark.parametrize("argv, message", [
    [["--seed", "-1"], "--seed: must be a non-negative integer"],
    [["--split", "0.5,0.5"], "--split: expected 3 fractions"],
    [["--size", "0,16,16"], "--size: values must be positive"],
    [["--spacing", "nan,1,1"], "--spacing: values must be positive and finite"],
    [["--spacing", "1,inf,1"], "--spacing: values must be positive and finite"],
])
def test_bad_flags_exit_2_before_any_work(tmp_path, capsys, argv, message):
    assert prepare(tmp_path / "missing", "--out", tmp_path / "out", *argv) == 2
    assert message in one_error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_labels_csv_found_in_source_is_used_and_recorded(tmp_path):
    source = write_volumes(tmp_path / "src", ["a", "b", "c", "d"])
    (source / "labels.csv").write_text("id,label\na,x\nb,y\nc,x\nd,y\n")
    assert prepare(source, "--out", tmp_path / "out") == 0
    datalist, report = load(tmp_path / "out")
    assert datalist["classes"] == ["x", "y"] and datalist["labels_csv"] == str((source / "labels.csv").resolve())
    assert any("labels read from" in m for m in report["messages"])
