"""Labels CSVs as users have them: headers with spaces, no header, chosen columns, ambiguous headers, partial
coverage (`medvol.io.labels.apply_labels_csv`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medvol.errors import MedvolInputError
from medvol.io.discovery import datalist_from_files
from medvol.io.labels import apply_labels_csv
from medvol.io.report import SKIPPED, WARNING

NAMES = [f"scan_{i:02d}" for i in range(6)]


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for i, name in enumerate(NAMES):
        Image.fromarray(np.full((8, 8), 20 * i, dtype=np.uint8)).save(folder / f"{name}.png")
    return folder


def label(folder: Path, text: str, **options):
    csv_path = folder.parent / "labels.csv"
    csv_path.write_text(text)
    return apply_labels_csv(datalist_from_files(folder, class_folders=False), csv_path, **options)


def labels_of(datalist) -> dict[str, str | None]:
    return {e["id"]: e.get("label_name") for e in datalist.entries}


def rows(header: str | None, cells) -> str:
    return "\n".join(([header] if header is not None else []) + list(cells)) + "\n"


EXPECTED = {name: str(i % 2) for i, name in enumerate(NAMES)}

# [header, row format, options]: every image gets EXPECTED
TEST_CASE_SPACE_AFTER_COMMA = ["id, hemorrhage", "{id}, {label}", {}]  # the head CT set's own labels.csv
TEST_CASE_NO_HEADER = [None, "{id},{label}", {}]
TEST_CASE_NO_HEADER_FILE_NAMES = [None, "{id}.png;{label}", {}]
TEST_CASE_UNKNOWN_TWO_COLUMN_HEADER = ["scan_ref,grade", "{id},{label}", {}]
TEST_CASE_KNOWN_NAMES_ANY_CASE = [" Patient_ID ; Diagnosis ", " {id} ; {label} ", {}]
TEST_CASE_CHOSEN_COLUMNS = ["PatientID, Age, Sex, Finding", "{id}, 50, F, {label}",
                            {"id_column": "patientid", "label_column": " Finding"}]
TEST_CASE_CHOSEN_LABEL_ONLY = ["id,age,sex,finding", "{id},50,F,{label}", {"label_column": "finding"}]


@pytest.mark.parametrize("header, row, options", [
    TEST_CASE_SPACE_AFTER_COMMA, TEST_CASE_NO_HEADER, TEST_CASE_NO_HEADER_FILE_NAMES,
    TEST_CASE_UNKNOWN_TWO_COLUMN_HEADER, TEST_CASE_KNOWN_NAMES_ANY_CASE, TEST_CASE_CHOSEN_COLUMNS,
    TEST_CASE_CHOSEN_LABEL_ONLY,
])
def test_csv_layouts_label_every_image(image_folder, header, row, options):
    text = rows(header, [row.format(id=name, label=EXPECTED[name]) for name in NAMES])
    datalist = label(image_folder, text, **options)
    assert labels_of(datalist) == EXPECTED  # the first data row is never taken for a header, nor the reverse
    assert datalist.classes == ["0", "1"]
    assert datalist.labels["labelled_images"] == 6 and datalist.labels["unlabelled_images"] == 0
    assert (datalist.labels["header"] is None) == (header is None)
    assert not [r for r in datalist.records.values() if r.status != "used"]


@pytest.mark.parametrize("text, options, message", [
    ["id,subject,label\nscan_00,scan_00,1\n", {}, r"header \['id', 'subject', 'label'\] is ambiguous \(id column: "
     r"one of \['id', 'subject'\]\): name the columns with --id-column and --label-column"],
    ["id,age,sex\nscan_00,50,F\n", {}, r"header \['id', 'age', 'sex'\] is ambiguous \(label column: none is named"],
    ["id,label,class\nscan_00,1,a\n", {}, r"\(label column: one of \['label', 'class'\]\)"],
    ["scan_00,1,a\n", {}, r"has no header and 3 columns"],
    ["id,finding\nscan_00,1\n", {"label_column": "diagnosis"},
     r"--label-column 'diagnosis' is not a column of its header \['id', 'finding'\]"],
])
def test_ambiguous_headers_name_the_columns(image_folder, text, options, message):
    with pytest.raises(MedvolInputError, match=message) as raised:
        label(image_folder, text, **options)
    assert "labels.csv" in str(raised.value) and "\n" not in str(raised.value)


def test_partial_coverage_is_an_error_with_counts(image_folder):
    """`patient,diagnosis` whose ids mostly match nothing: once accepted with exit 0, keeping 2 of the images."""
    text = rows("patient,diagnosis", ["scan_00,a", "scan_01,b"] + [f"P{i:03d},a" for i in range(7)])
    with pytest.raises(MedvolInputError) as raised:
        label(image_folder, text)
    message = str(raised.value)
    assert "labels 2 of 6 images; 4 images without a label (e.g. 'scan_02', 'scan_03', 'scan_04', ...)" in message
    assert "7 of its 9 rows name no image (e.g. 'P000', 'P001', 'P002', ...)" in message
    assert "--unlabelled skip" in message and "--unlabelled keep" in message


def test_unlabelled_skip_and_keep(image_folder):
    text = rows("id,label", ["scan_00,a", "scan_01,b", "scan_02,a", "ghost,b"])
    skipped = label(image_folder, text, unlabelled="skip")
    assert labels_of(skipped) == {"scan_00": "a", "scan_01": "b", "scan_02": "a"}
    reasons = {Path(p).name: (r.status, r.reason) for p, r in skipped.records.items()}
    for name in ("scan_03", "scan_04", "scan_05"):
        assert reasons[f"{name}.png"] == (SKIPPED, "no label in labels.csv (--unlabelled skip)")
    assert reasons["labels.csv:5"][0] == SKIPPED and "unknown id 'ghost'" in reasons["labels.csv:5"][1]
    assert skipped.labels["unlabelled"] == "skip" and skipped.labels["rows_without_image"] == 1

    kept = label(image_folder, text, unlabelled="keep")
    assert labels_of(kept) == {"scan_00": "a", "scan_01": "b", "scan_02": "a", "scan_03": None, "scan_04": None,
                               "scan_05": None}
    assert all("label" not in e for e in kept.entries if e["id"] >= "scan_03")
    assert kept.classes == ["a", "b"] and kept.summary()["unlabelled"] == 3
    record = kept.records[str(image_folder.resolve() / "scan_04.png")]
    assert record.status == WARNING and "kept without a label" in record.reason


def test_no_matching_id_at_all_says_what_ids_look_like(image_folder):
    with pytest.raises(MedvolInputError, match=r"none of the 2 values of its column 'patient' names an image .*\(they "
                                                r"look like 'P1', 'P2'; image ids look like 'scan_00'"):
        label(image_folder, "patient,diagnosis\nP1,a\nP2,b\n")
