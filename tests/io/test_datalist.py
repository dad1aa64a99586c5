"""Datalists from class folders, NIfTI folders, CSV labels, Decathlon json and images/ + labels/ folders."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medvol.errors import MedvolInputError
from medvol.io.datalist import read_datalist, write_datalist, write_report
from medvol.io.discovery import (
    build_datalist,
    datalist_from_decathlon_json,
    datalist_from_files,
    datalist_from_image_label_folders,
    subject_from_stem,
)
from medvol.io.files import classify_file, image_stem
from medvol.io.labels import apply_labels_csv
from medvol.io.report import SKIPPED, USED, WARNING


def write_volume(path: Path, value: float = 1.0, shape=(8, 8, 6), nan: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(0).random(shape).astype(np.float32) * value
    if nan:
        data[1, 2, 3] = np.nan
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    return path


def write_png(path: Path, mode: str = "L") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {"L": (), "RGB": (3,)}[mode]
    Image.fromarray((np.random.default_rng(1).random((8, 8) + channels) * 255).astype(np.uint8), mode).save(path)
    return path


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def statuses(datalist) -> dict[str, tuple[str, str]]:
    return {Path(p).name if ".csv:" not in p else "csv:" + p.rsplit(":", 1)[1]: (r.status, r.reason)
            for p, r in datalist.records.items()}


@pytest.fixture
def volume_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "volumes"
    for name in ("sub_01", "sub_02", "sub_03", "sub_04", "sub 05"):
        write_volume(folder / f"{name}.nii.gz")
    return folder


TEST_CASES_NAMES = [
    ["scan.nii.gz", "nifti", "scan"],
    ["scan.nii", "nifti", "scan"],
    ["x.PNG", "image2d", "x"],
    ["notes.txt", "other", "notes"],
    [".DS_Store", "other", ".DS_Store"],
    ["IM0001", "dicom", "IM0001"],
    ["a.dcm", "dicom", "a"],
]


@pytest.mark.parametrize("name, kind, stem", TEST_CASES_NAMES)
def test_classify_and_stem(tmp_path, name, kind, stem):
    path = tmp_path / name
    path.write_bytes(b"x")
    assert classify_file(path) == kind
    assert image_stem(path) == stem


@pytest.mark.parametrize("stem, subject", [["sub-01_ses-2_T1w", "sub-01"], ["sub-A7", "sub-A7"], ["case_3", "case_3"]])
def test_subject_from_stem(stem, subject):
    assert subject_from_stem(stem) == subject


def test_class_folders_unique_ids_and_rgb_warning(tmp_path):
    write_png(tmp_path / "CXR" / "0000.png")
    write_png(tmp_path / "CXR" / "0001.png")
    write_png(tmp_path / "Hand" / "0000.png", "RGB")
    (tmp_path / "Hand" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (tmp_path / "README.txt").write_text("readme")
    datalist = datalist_from_files(tmp_path)
    assert datalist.classes == ["CXR", "Hand"]
    assert datalist.source_spatial_dims == 2
    ids = sorted(e["id"] for e in datalist.entries)
    assert ids == ["CXR/0000", "CXR/0001", "Hand/0000"]  # stems repeat across class folders: ids stay unique
    assert all(e["subject"] == e["id"] for e in datalist.entries)
    assert {e["id"]: e["label"] for e in datalist.entries}["Hand/0000"] == 1
    found = statuses(datalist)
    assert found["0000.png"][0] in (USED, WARNING)
    assert found["broken.png"][0] == SKIPPED and "unreadable" in found["broken.png"][1]
    assert found["README.txt"] == (SKIPPED, "not an image file (.txt file)")
    rgb = datalist.records[str((tmp_path / "Hand" / "0000.png").resolve())]
    assert rgb.status == WARNING and "ITU-R 601" in rgb.reason
    assert rgb.reason.count("ITU-R 601") == 1 and not datalist.messages  # once per file, in its record only


def test_rgb_file_with_equal_channels_is_greyscale(tmp_path):
    grey = (np.random.default_rng(2).random((8, 8)) * 255).astype(np.uint8)
    Image.fromarray(np.stack([grey] * 3, -1), "RGB").save(tmp_path / "grey_as_rgb.png")
    Image.fromarray(grey, "L").convert("P").save(tmp_path / "grey_palette.png")
    write_png(tmp_path / "colour.png", "RGB")
    found = statuses(datalist_from_files(tmp_path))
    assert found["grey_as_rgb.png"] == (USED, "") and found["grey_palette.png"] == (USED, "")
    assert found["colour.png"] == (WARNING, "RGB colour image read as greyscale with ITU-R 601 weights")


def test_nifti_folder_skips_nan_and_keeps_others(volume_folder):
    write_volume(volume_folder / "broken_nan.nii.gz", nan=True)
    (volume_folder / "truncated.nii.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    datalist = datalist_from_files(volume_folder)
    found = statuses(datalist)
    assert found["broken_nan.nii.gz"][0] == SKIPPED and "NaN" in found["broken_nan.nii.gz"][1]
    assert found["truncated.nii.gz"][0] == SKIPPED
    assert sorted(e["subject"] for e in datalist.entries) == ["sub 05", "sub_01", "sub_02", "sub_03", "sub_04"]
    assert datalist.classes == [] and datalist.source_spatial_dims == 3
    assert len(datalist.records) == 7


def test_same_stem_in_subfolders_gets_relative_ids(tmp_path):
    write_volume(tmp_path / "siteA" / "case1.nii.gz")
    write_volume(tmp_path / "siteB" / "case1.nii.gz")
    write_volume(tmp_path / "siteB" / "case2.nii.gz")
    datalist = datalist_from_files(tmp_path, class_folders=False)
    assert sorted(e["id"] for e in datalist.entries) == ["case2", "siteA/case1", "siteB/case1"]


def test_empty_and_unusable_folders(tmp_path):
    with pytest.raises(MedvolInputError, match="empty"):
        datalist_from_files(tmp_path)
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(MedvolInputError, match="nothing usable.*notes.txt: not an image"):
        build_datalist(tmp_path)


def test_csv_labels_report_every_problem(volume_folder):
    write_volume(volume_folder / "sub,06.nii.gz")
    write_volume(volume_folder / "sub_07.nii.gz")
    csv_path = write_csv(volume_folder.parent / "labels.csv", "\n".join([
        "id,label",
        "sub 01,lesion",  # 2: space in id, repaired to sub_01
        "sub,02,normal",  # 3: unquoted id split into an extra column, repaired to sub_02
        "sub_03,normal",  # 4
        "sub_03,normal",  # 5: duplicate, same label
        "ghost,lesion",  # 6: unknown id
        "sub 05 , lesion",  # 7: a real file name with a space: no repair needed
        '"sub,06",normal',  # 8: quoted id holding the separator
        "sub_07,lesion",  # 9
        "sub_07,normal",  # 10: conflicting duplicate
        "",
    ]))
    with pytest.raises(MedvolInputError, match=r"labels 5 of 7 images; 1 image without a label \(e.g. 'sub_04'\); "
                       r"1 of its 9 rows name no image \(e.g. 'ghost'\).*--unlabelled skip"):
        apply_labels_csv(datalist_from_files(volume_folder), csv_path)
    datalist = apply_labels_csv(datalist_from_files(volume_folder), csv_path, unlabelled="skip")
    found = statuses(datalist)
    assert found["csv:2"][0] == WARNING and "repaired to 'sub_01'" in found["csv:2"][1]
    assert found["csv:3"][0] == WARNING and "repaired to 'sub_02'" in found["csv:3"][1]
    assert found["csv:5"][0] == WARNING and "duplicate" in found["csv:5"][1]
    assert found["csv:6"][0] == SKIPPED and "unknown id 'ghost'" in found["csv:6"][1]
    assert found["csv:8"][0] == WARNING and "separator" in found["csv:8"][1]
    assert found["csv:10"][0] == SKIPPED and "duplicate id 'sub_07'" in found["csv:10"][1]
    assert "csv:7" not in found and "csv:4" not in found
    assert found["labels.csv"] == (USED, "labels CSV")
    assert found["sub_04.nii.gz"] == (SKIPPED, "no label in labels.csv (--unlabelled skip)")
    assert found["sub_07.nii.gz"][0] == SKIPPED and "conflicting labels" in found["sub_07.nii.gz"][1]
    labels = {e["id"]: e["label_name"] for e in datalist.entries}
    assert labels == {"sub_01": "lesion", "sub_02": "normal", "sub_03": "normal", "sub 05": "lesion", "sub,06": "normal"}
    assert datalist.classes == ["lesion", "normal"]
    assert all(datalist.classes[e["label"]] == e["label_name"] for e in datalist.entries)


def test_csv_path_column_reports_missing_image(volume_folder):
    csv_path = write_csv(volume_folder / "list.csv", "image;class\nsub_01.nii.gz;1\nsub_02.nii.gz;0\nmissing.nii.gz;1\n")
    datalist = apply_labels_csv(datalist_from_files(volume_folder, class_folders=False), csv_path, unlabelled="skip")
    found = statuses(datalist)
    assert found["csv:4"][0] == SKIPPED and "missing image" in found["csv:4"][1]
    assert {e["id"]: e["label"] for e in datalist.entries} == {"sub_01": 1, "sub_02": 0}
    assert datalist.classes == ["0", "1"]


TEST_CASES_BAD_CSV = [
    ["id,label\nsub,0,1,lesion\n", "joining", []],  # three pieces that join to nothing known
    ["id,label\nsub 01,lesion\n", "matches several images", ["sub-01"]],  # sub_01 and sub-01 both exist
    ["id,label\nghost,lesion\n", "none of the 1 values of its column 'id' names an image", []],
    ["name;value;other\nx;y;z\n", r"header \['name', 'value', 'other'\] is ambiguous \(label column", []],
    ["", "empty", []],
]


@pytest.mark.parametrize("text, message, extra_files", TEST_CASES_BAD_CSV)
def test_ambiguous_or_unusable_csv_raises(volume_folder, text, message, extra_files):
    for name in extra_files:
        write_volume(volume_folder / f"{name}.nii.gz")
    csv_path = write_csv(volume_folder.parent / "labels.csv", text)
    datalist = datalist_from_files(volume_folder)
    with pytest.raises(MedvolInputError, match=message) as raised:
        apply_labels_csv(datalist, csv_path)
    assert "labels.csv" in str(raised.value) and "\n" not in str(raised.value)


def test_decathlon_json(tmp_path):
    write_volume(tmp_path / "imagesTr" / "case_1.nii.gz")
    write_volume(tmp_path / "imagesTr" / "case_2.nii.gz")
    write_volume(tmp_path / "labelsTr" / "case_1.nii.gz")
    write_volume(tmp_path / "imagesTs" / "case_9.nii.gz")
    write_volume(tmp_path / "imagesTr" / "unlisted.nii.gz")
    (tmp_path / "dataset.json").write_text(json.dumps({
        "modality": {"0": "CT"},
        "training": [
            {"image": "./imagesTr/case_1.nii.gz", "label": "./labelsTr/case_1.nii.gz"},
            {"image": "./imagesTr/case_2.nii.gz", "label": "./labelsTr/case_2.nii.gz"},
            {"image": "./imagesTr/case_3.nii.gz", "label": "./labelsTr/case_3.nii.gz"},
        ],
        "test": ["./imagesTs/case_9.nii.gz"],
    }))
    datalist = build_datalist(tmp_path)
    found = statuses(datalist)
    assert found["case_3.nii.gz"][0] == SKIPPED and "does not exist" in found["case_3.nii.gz"][1]
    assert found["unlisted.nii.gz"] == (SKIPPED, "image not listed in dataset.json")
    assert datalist.modality == "CT"
    entries = {e["id"]: e for e in datalist.entries}
    assert sorted(entries) == ["case_1", "case_2", "case_9"]
    assert entries["case_1"]["segmentation"].endswith("labelsTr/case_1.nii.gz")
    assert "segmentation" not in entries["case_2"]
    assert datalist.records[entries["case_2"]["image"]].status == WARNING


def test_decathlon_json_errors(tmp_path):
    bad = tmp_path / "dataset.json"
    bad.write_text("{not json")
    with pytest.raises(MedvolInputError, match="not a readable dataset.json"):
        datalist_from_decathlon_json(bad)
    bad.write_text(json.dumps({"name": "x"}))
    with pytest.raises(MedvolInputError, match="no 'training' or 'test' list"):
        datalist_from_decathlon_json(bad)


def test_image_label_folders_pairing(tmp_path):
    for name in ("a", "b", "c"):
        write_volume(tmp_path / "images" / f"{name}.nii.gz")
    write_volume(tmp_path / "labels" / "a.nii.gz")
    write_volume(tmp_path / "labels" / "b.nii.gz", shape=(4, 4, 4))
    write_volume(tmp_path / "labels" / "orphan.nii.gz")
    datalist = datalist_from_image_label_folders(tmp_path)
    found = statuses(datalist)
    assert found["orphan.nii.gz"][0] == SKIPPED and "label without image" in found["orphan.nii.gz"][1]
    mismatched = datalist.records[str(tmp_path / "labels" / "b.nii.gz")]
    assert mismatched.status == SKIPPED and "label shape [4, 4, 4] differs from image shape [8, 8, 6]" in mismatched.reason
    assert [e.get("segmentation") is not None for e in datalist.entries] == [True, False, False]
    assert datalist.records[str(tmp_path / "images" / "c.nii.gz")].status == WARNING


@pytest.mark.shared_data
def test_hippocampus_labels_without_image(shared_data):
    datalist = build_datalist(shared_data / "hippocampus3d")
    skipped = {Path(p).name: r.reason for p, r in datalist.records.items() if r.status == SKIPPED}
    assert set(skipped) == {"hippocampus_010.nii.gz", "hippocampus_281.nii.gz"}
    assert all("label without image" in reason for reason in skipped.values())
    assert len(datalist.entries) == 261
    images = {str(p) for p in (shared_data / "hippocampus3d" / "images").resolve().glob("*.nii.gz")}
    assert images <= set(datalist.records) and len(datalist.records) == 261 + 262


def test_write_and_read_datalist_round_trip(tmp_path, volume_folder):
    from monai.data import load_decathlon_datalist

    datalist = datalist_from_files(volume_folder)
    datalist.entries[0]["_private"] = "not written"
    splits = {"training": datalist.entries[:3], "validation": datalist.entries[3:4], "test": datalist.entries[4:]}
    write_datalist(tmp_path / "out" / "datalist.json", datalist, splits, mode="volume", spatial_dims=3)
    write_report(tmp_path / "out" / "report.json", datalist)
    document = read_datalist(tmp_path / "out")
    assert document["mode"] == "volume" and document["numTraining"] == 3
    assert "_private" not in document["training"][0]
    loaded = load_decathlon_datalist(tmp_path / "out" / "datalist.json", data_list_key="test")
    assert loaded[0]["image"] == datalist.entries[4]["image"]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["summary"]["used"] == 5 and len(report["files"]) == 5
    with pytest.raises(MedvolInputError, match="not found"):
        read_datalist(tmp_path / "nowhere" / "datalist.json")


def test_csv_path_column_tells_repeated_stems_apart(tmp_path):
    for folder in ("A", "B"):
        write_png(tmp_path / "src" / folder / "0000.png")
    csv_path = write_csv(tmp_path / "labels.csv", "path,label\nA/0000.png,yes\nB/0000.png,no\n")
    datalist = apply_labels_csv(datalist_from_files(tmp_path / "src", class_folders=False), csv_path)
    assert {e["id"]: e["label_name"] for e in datalist.entries} == {"A/0000": "yes", "B/0000": "no"}
