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
def test_train_fraction_keeps_the_held_out_splits_of_the_full_dataset(shared_data, tmp_path):
    source = shared_data / "mednist64"
    assert prepare(source, "--out", tmp_path / "full", "--size", "16,16") == 0
    assert prepare(source, "--out", tmp_path / "low", "--size", "16,16", "--train-fraction", "0.1") == 0
    (full, _), (low, report) = load(tmp_path / "full"), load(tmp_path / "low")
    for name in ("validation", "test"):
        assert [e["image"] for e in low[name]] == [e["image"] for e in full[name]]
    assert {e["image"] for e in low["training"]} < {e["image"] for e in full["training"]}
    assert Counter(e["label_name"] for e in low["training"]) == {c: 30 for c in full["classes"]}
    assert low["train_fraction"] == 0.1
    left_out = [r for r in report["files"] if "--train-fraction" in r.get("reason", "")]
    assert len(left_out) == 1620 and all(r["status"] == "skipped" for r in left_out)


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
    labels.write_text("id,label\nsub 01,lesion\nsub_02,normal\nsub_03,lesion\nsub_03,lesion\nsub_09,normal\n"
                      "sub_05,normal\n")
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
    ["bad_fraction", "--train-fraction: must be in (0, 1]"],
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
    elif case == "bad_fraction":
        argv += ["--train-fraction", "1.5"]
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


# ------------------------------------------------------------------------------------ labels CSVs as users have them
def write_pngs(folder: Path, names, size=(8, 8), mode="L") -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        pixels = (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels if mode == "RGB" else pixels[..., 0]).save(folder / f"{name}.png")
    return folder


def test_head_ct_labels_csv_with_a_space_after_the_comma_is_found_and_announced(tmp_path, capsys):
    source = write_pngs(tmp_path / "ct", [f"ID_{i:03d}" for i in range(6)])
    (source / "labels.csv").write_text("id, hemorrhage\n" + "".join(f"ID_{i:03d}, {i % 2}\n" for i in range(6)))
    assert prepare(source, "--out", tmp_path / "out") == 0
    out = capsys.readouterr().out
    assert f"labels read from {(source / 'labels.csv').resolve()}, found in SOURCE (--labels none ignores it" in out
    datalist, report = load(tmp_path / "out")
    assert datalist["classes"] == ["0", "1"] and report["summary"]["per_class"] == {"0": 3, "1": 3}
    assert report["labels"]["header"] == ["id", "hemorrhage"] and report["labels"]["label_column"] == "hemorrhage"


def test_patient_diagnosis_csv_that_labels_few_images_exits_2_with_counts(tmp_path, capsys):
    source = write_pngs(tmp_path / "src", [f"img{i:03d}" for i in range(20)])
    labels = tmp_path / "labels.csv"
    labels.write_text("patient,diagnosis\nimg000,a\nimg001,b\n" + "".join(f"PAT{i},a\n" for i in range(18)))
    assert prepare(source, "--out", tmp_path / "out", "--labels", labels) == 2
    line = one_error_line(capsys)
    assert "labels 2 of 20 images; 18 images without a label (e.g. 'img002', 'img003', 'img004', ...); " \
           "18 of its 20 rows name no image (e.g. 'PAT0', 'PAT1', 'PAT2', ...)" in line
    assert not (tmp_path / "out" / "datalist.json").exists()
    assert prepare(source, "--out", tmp_path / "out", "--labels", labels, "--unlabelled", "skip") == 0
    datalist, report = load(tmp_path / "out")
    assert sum(len(datalist[s]) for s in SPLITS) == 2
    skipped = [f for f in report["files"] if f["status"] == "skipped" and f["path"].endswith(".png")]
    assert len(skipped) == 18 and {f["reason"] for f in skipped} == {"no label in labels.csv (--unlabelled skip)"}
    assert prepare(source, "--out", tmp_path / "keep", "--labels", labels, "--unlabelled", "keep") == 0
    datalist, report = load(tmp_path / "keep")
    entries = [e for s in SPLITS for e in datalist[s]]
    assert len(entries) == 20 and sum("label" in e for e in entries) == 2 and report["summary"]["unlabelled"] == 18


def test_labels_none_ignores_the_labels_csv_in_source(tmp_path):
    source = write_pngs(tmp_path / "src", ["a", "b", "c"])
    (source / "labels.csv").write_text("id,label\na,x\nb,y\n")  # would need --unlabelled: c has no label
    assert prepare(source, "--out", tmp_path / "out", "--labels", "none") == 0
    datalist, report = load(tmp_path / "out")
    assert datalist["classes"] == [] and datalist["labels_csv"] is None
    assert all("label" not in e for s in SPLITS for e in datalist[s])
    record = next(f for f in report["files"] if f["path"].endswith("labels.csv"))
    assert (record["status"], record["reason"]) == ("skipped", "labels CSV ignored (--labels none)")


def test_chosen_columns_of_a_four_column_csv(tmp_path):
    source = write_pngs(tmp_path / "src", ["a", "b", "c", "d"])
    labels = tmp_path / "clinical.csv"
    labels.write_text("PatientID,Age,Sex,Finding\na,50,F,tumour\nb,61,M,normal\nc,44,F,tumour\nd,70,M,normal\n")
    assert prepare(source, "--out", tmp_path / "out", "--labels", labels) == 2  # which column holds the label?
    assert prepare(source, "--out", tmp_path / "out", "--labels", labels, "--id-column", "PatientID",
                   "--label-column", "Finding") == 0
    datalist, _ = load(tmp_path / "out")
    assert {e["id"]: e["label_name"] for s in SPLITS for e in datalist[s]} == {
        "a": "tumour", "b": "normal", "c": "tumour", "d": "normal"}


def test_ambiguous_header_exits_2_naming_the_columns(tmp_path, capsys):
    source = write_pngs(tmp_path / "src", ["a", "b"])
    labels = tmp_path / "labels.csv"
    labels.write_text("id,subject,label\na,a,x\nb,b,y\n")
    assert prepare(source, "--out", tmp_path / "out", "--labels", labels) == 2
    assert "header ['id', 'subject', 'label'] is ambiguous (id column: one of ['id', 'subject'])" in \
        one_error_line(capsys)


def test_volume_mode_on_2d_images_exits_2(tmp_path, capsys):
    source = write_pngs(tmp_path / "src", ["a", "b"])
    assert prepare(source, "--out", tmp_path / "out", "--mode", "volume", "--size", "16,16,16") == 2
    line = one_error_line(capsys)
    assert "holds 2D images: volume mode needs 3D volumes; prepare it with --mode slice (or without --mode)" in line
    assert "--size" not in line


def test_colour_warnings_are_grouped_on_the_console(tmp_path, capsys):
    source = write_pngs(tmp_path / "src", [f"c{i}" for i in range(6)], mode="RGB")
    write_pngs(source, ["grey"])
    assert prepare(source, "--out", tmp_path / "out") == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("  warning:")]
    assert len(lines) == 1 and lines[0].startswith("  warning: 6 files: RGB colour image read as greyscale")
    assert "(3 more in report.json)" in lines[0] and out.count("/c0.png") == 1
    _, report = load(tmp_path / "out")
    assert sum(f["status"] == "warning" for f in report["files"]) == 6


# --------------------------------------------------------------------------------------------- sizing and preview
def write_disc(path: Path, width: int, height: int) -> None:
    """A bright disc as tall as the picture, touching its left, top and bottom borders."""
    from PIL import Image

    radius = min(width, height) / 2
    y, x = np.mgrid[0:height, 0:width] + 0.5
    disc = (x - radius) ** 2 + (y - radius) ** 2 <= radius**2
    Image.fromarray(np.where(disc, 230, 10).astype(np.uint8)).save(path)


def fitted_samples(out: Path) -> dict[str, np.ndarray]:
    from medvol.data.datasets import build_dataset

    dataset = build_dataset(out)  # the sizing comes from datalist.json, as in training
    return {dataset[i]["subject"]: dataset[i]["image"].as_tensor()[0].numpy() for i in range(len(dataset))}


def extent(mask: np.ndarray) -> tuple[int, int]:
    xs, ys = np.nonzero(mask)
    return (int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)) if xs.size else (0, 0)


def test_mixed_size_images_keep_the_whole_object(tmp_path):
    source = tmp_path / "mixed"
    source.mkdir()
    write_disc(source / "wide.png", 300, 120)
    write_disc(source / "tall.png", 120, 300)
    write_disc(source / "square.png", 200, 200)
    argv = [source, "--size", "32,32", "--split", "1,0,0"]
    assert prepare(*argv, "--out", tmp_path / "fit") == 0
    datalist, report = load(tmp_path / "fit")
    assert datalist["preprocessing"] == {"size": [32, 32], "spacing": None, "shape_mode": "fit",
                                         "crop_foreground": False}
    assert report["preprocessing"]["shape_mode"] == "fit" and "whole field of view" in \
        report["preprocessing"]["description"]
    samples = fitted_samples(tmp_path / "fit")
    wide = samples["wide"]  # [x, y]: 300 x 120 scaled by 32/300 to 32 x 12.8
    disc = wide > 0.5
    width, height = extent(disc)
    assert 12 <= width <= 14 and 12 <= height <= 14  # a disc stays a disc
    assert disc.sum() == pytest.approx(np.pi * 6.4**2, rel=0.15)  # and whole
    assert disc[0].any()  # it still touches the left border, as in the picture
    frame = np.all(wide == -1.0, axis=0)  # rows of pure background above and below the picture
    assert frame.sum() >= 32 - 14 and frame[0] and frame[-1]
    tall_width, tall_height = extent(samples["tall"] > 0.5)
    assert abs(tall_width - tall_height) <= 1 and 12 <= tall_width <= 14
    assert extent(samples["square"] > 0.5) == (32, 32)

    assert prepare(*argv, "--out", tmp_path / "crop", "--fit", "crop_pad") == 0
    assert load(tmp_path / "crop")[0]["preprocessing"]["shape_mode"] == "crop_pad"
    assert not (fitted_samples(tmp_path / "crop")["wide"] > 0.5).any()  # centre crop of 300 x 120: the disc is gone

    assert prepare(*argv, "--out", tmp_path / "resize", "--fit", "resize") == 0
    assert load(tmp_path / "resize")[0]["preprocessing"]["shape_mode"] == "resize"
    width, height = extent(fitted_samples(tmp_path / "resize")["wide"] > 0.5)
    assert height == 32 and abs(width / height - 0.4) < 0.05  # stretched: its width is 120/300 of its height


def test_crop_pad_is_the_default_with_a_spacing(tmp_path):
    source = write_volumes(tmp_path / "src", ["a", "b", "c"])
    assert prepare(source, "--out", tmp_path / "out", "--spacing", "1,1,1", "--size", "8,8,8") == 0
    assert load(tmp_path / "out")[0]["preprocessing"]["shape_mode"] == "crop_pad"
    assert prepare(source, "--out", tmp_path / "fg", "--crop-foreground") == 0
    assert load(tmp_path / "fg")[0]["preprocessing"] == {"size": None, "spacing": None, "shape_mode": "fit",
                                                         "crop_foreground": True}


@pytest.mark.parametrize("source, size, spatial_dims", [["builtin:phantoms2d", "16,16", 2],
                                                         ["builtin:phantoms3d", "16,16,16", 3]])
def test_preview_shows_training_samples_as_the_model_sees_them(tmp_path, capsys, source, size, spatial_dims):
    from PIL import Image

    from medvol.data.datasets import build_dataset
    from medvol.report.figures import sample_montage

    mode = "slice" if spatial_dims == 2 else "volume"
    assert prepare(source, "--out", tmp_path, "--size", size, "--mode", mode) == 0
    assert f"preview: {tmp_path / 'preview.png'} (" in capsys.readouterr().out
    picture = np.asarray(Image.open(tmp_path / "preview.png"))
    zoom = 6  # 16-voxel tiles are enlarged to 96 pixels
    if spatial_dims == 2:  # one row per class, 4 per row
        assert picture.shape == ((2 * 18 - 2) * zoom, (4 * 18 - 2) * zoom)
    else:  # 3 volumes per class, one per row, 3 views each
        assert picture.shape == ((6 * 18 - 2) * zoom, (3 * 18 - 2) * zoom)
    datalist, report = load(tmp_path)
    first = next(e for e in datalist["training"] if e["label"] == 0)
    sample = build_dataset(tmp_path)[datalist["training"].index(first)]["image"]
    expected = sample_montage(sample[None])[:16, :16]
    np.testing.assert_array_equal(picture[: 16 * zoom : zoom, : 16 * zoom : zoom], expected)
    assert report["preview"]["rows"] == ["normal", "lesion"]


@pytest.mark.shared_data
def test_slice_mode_on_a_volume_grid_cuts_the_volumes_of_volume_mode(shared_data, tmp_path, capsys):
    """--mode slice --size X,Y,Z: the slices of the volumes --mode volume --size X,Y,Z gives (same split), where
    fitting each slice in-plane would scale volumes whose depth decides the fit differently."""
    import shutil

    from medvol.data.datasets import build_dataset

    source = tmp_path / "src"
    source.mkdir()
    for path in sorted((shared_data / "hippocampus3d" / "images").glob("*.nii.gz"))[:6]:
        shutil.copy(path, source)
    assert prepare(source, "--out", tmp_path / "volume", "--size", "16,24,16") == 0
    assert prepare(source, "--out", tmp_path / "grid", "--mode", "slice", "--size", "16,24,16") == 0
    assert "then cut into 16x24 slices across axis 2" in capsys.readouterr().out
    (volume, _), (grid, report) = load(tmp_path / "volume"), load(tmp_path / "grid")
    assert grid["mode"] == "slice" and grid["preprocessing"]["size"] == [16, 24]
    assert grid["preprocessing"]["volume_size"] == [16, 24, 16]
    assert split_subjects(grid) == split_subjects(volume)
    assert "16x24x16" in report["preprocessing"]["description"]
    volumes, slices = build_dataset(tmp_path / "volume"), build_dataset(tmp_path / "grid")
    assert len(slices) == 16 * len(volumes)
    for v in range(len(volumes)):
        stacked = np.stack([np.asarray(slices[16 * v + k]["image"]) for k in range(16)], axis=-1)
        np.testing.assert_array_equal(stacked, np.asarray(volumes[v]["image"]))


def test_a_volume_grid_for_2d_images_exits_2(tmp_path, capsys):
    assert prepare("builtin:phantoms2d", "--out", tmp_path, "--mode", "slice", "--size", "16,16,16") == 2
    assert "--size: 3 values in slice mode are a volume grid to cut slices from; these are 2D images" in \
        one_error_line(capsys)


def test_conditional_training_refuses_images_kept_without_a_label(tmp_path, capsys):
    source = write_pngs(tmp_path / "src", [f"img{i}" for i in range(6)], size=(16, 16))
    labels = tmp_path / "labels.csv"
    labels.write_text("id,label\nimg0,a\nimg1,b\nimg2,a\nimg3,b\n")
    assert prepare(source, "--out", tmp_path / "data", "--labels", labels, "--unlabelled", "keep", "--split", "1,0,0") == 0
    capsys.readouterr()
    assert main(["train", "--bundle", "cgan", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"),
                 "--iterations", "1", "--device", "cpu"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "cgan is a conditional family, but 2 training images have no label (prepared with --unlabelled keep)" in line
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.shared_data
def test_dicom_series_with_a_gap_is_skipped_unless_accepted(shared_data, tmp_path, capsys, caplog):
    from tests.io.test_dicom import copy_folder

    source = tmp_path / "study"
    copy_folder(shared_data / "dicom" / "crop_series" / "study2_hippo_crop", source / "intact")
    damaged = copy_folder(shared_data / "dicom" / "crop_series" / "study1_hippo_crop", source / "damaged")
    (damaged / "16.dcm").unlink()  # z = 16 mm: a gap in the middle of the stack
    assert prepare(source, "--out", tmp_path / "default", "--split", "1,0,0") == 0
    datalist, report = load(tmp_path / "default")
    assert [e["subject"] for e in datalist["training"]] == ["PGBM-006"]
    records = {Path(f["path"]).name: f for f in report["files"] if Path(f["path"]).parent.name == "damaged"}
    assert len(records) == 31 and {f["status"] for f in records.values()} == {"skipped"}
    reason = records["1.dcm"]["reason"]
    assert reason.startswith("series HippoCrop: not used, irregular geometry (missing slices): pass "
                             "--accept-irregular-dicom gap to use it; series HippoCrop: missing slices: 1 missing")
    console = capsys.readouterr().out + caplog.text
    assert "  skipped: 31 files: series HippoCrop: not used, irregular geometry (missing slices)" in console
    assert "DICOM volumes with irregular geometry not used: missing slices (1)" in console
    assert report["summary"]["accepted_irregular_dicom"] == []

    out = tmp_path / "accepted"
    assert prepare(source, "--out", out, "--split", "1,0,0", "--accept-irregular-dicom", "gap,tilt") == 0
    datalist, report = load(out)
    assert sorted(e["subject"] for e in datalist["training"]) == ["PGBM-002", "PGBM-006"]
    warned = [f for f in report["files"] if Path(f["path"]).parent.name == "damaged"]
    assert {f["status"] for f in warned} == {"warning"} and "1 missing" in warned[0]["reason"]
    assert nib.load(next(e["image"] for e in datalist["training"] if e["subject"] == "PGBM-002")).shape == (35, 51, 31)
    assert report["summary"]["accepted_irregular_dicom"] == ["gap", "tilt"]


@pytest.mark.shared_data
def test_ct_tiny_uneven_slices_need_the_option(shared_data, tmp_path, capsys):
    source = shared_data / "dicom" / "ct_tiny"
    assert prepare(source, "--out", tmp_path / "a") == 2
    line = one_error_line(capsys)
    assert "nothing usable" in line and "not used, irregular geometry (missing slices): pass " \
        "--accept-irregular-dicom gap to use it" in line
    assert prepare(source, "--out", tmp_path / "b", "--accept-irregular-dicom", "all", "--split", "1,0,0") == 0
    datalist, report = load(tmp_path / "b")
    assert len(datalist["training"]) == 1 and {f["status"] for f in report["files"]} == {"warning"}
    assert prepare(source, "--out", tmp_path / "c", "--accept-irregular-dicom", "gaps") == 2
    assert "--accept-irregular-dicom: unknown kind gaps: choose from gap, spacing, tilt" in one_error_line(capsys)


@pytest.mark.shared_data
def test_multi_echo_dicom_series_gives_one_training_volume_per_echo(shared_data, tmp_path):
    from tests.io.test_dicom import write_copies

    source = tmp_path / "echoes"
    write_copies(shared_data / "dicom" / "crop_series" / "study1_hippo_crop", source,
                 [{"EchoNumbers": 1}, {"EchoNumbers": 2}])
    assert prepare(source, "--out", tmp_path / "out", "--split", "1,0,0") == 0
    datalist, report = load(tmp_path / "out")
    entries = datalist["training"]
    uid = entries[0]["series_uid"]
    assert sorted(e["volume_id"] for e in entries) == [f"{uid}#echo1", f"{uid}#echo2"]
    assert sorted(e["series_description"] for e in entries) == ["HippoCrop (echo 1)", "HippoCrop (echo 2)"]
    assert {nib.load(e["image"]).shape for e in entries} == {(35, 51, 32)}
    assert {tuple(np.round(nib.load(e["image"]).header.get_zooms(), 4)) for e in entries} == {(1.0, 1.0, 1.0)}
    assert {f["status"] for f in report["files"]} == {"used"} and len(report["files"]) == 64


# ----------------------------------------------------------------------- damaged, degenerate and leaking inputs (N)
@pytest.mark.shared_data
def test_damaged_gzip_and_singular_affine_volumes_are_skipped_with_the_reason(shared_data, tmp_path, capsys):
    from tests.cli.test_inspect_convert import crc_damaged_copy, write_with_affine

    source = tmp_path / "src"
    source.mkdir()
    real = sorted((shared_data / "hippocampus3d/images").glob("*.nii.gz"))[:5]
    for path in real[1:]:
        (source / path.name).write_bytes(path.read_bytes())
    crc_damaged_copy(real[0], source / "damaged.nii.gz")
    write_with_affine(source / "zero_affine.nii.gz", [[0, 0, 0, 0]] * 3)
    assert prepare(source, "--out", tmp_path / "out") == 0
    datalist, report = load(tmp_path / "out")
    reasons = {Path(f["path"]).name: (f["status"], f["reason"]) for f in report["files"]}
    assert reasons["damaged.nii.gz"][0] == "skipped" and "CRC check failed" in reasons["damaged.nii.gz"][1]
    assert reasons["zero_affine.nii.gz"][0] == "skipped" and "affine is singular" in reasons["zero_affine.nii.gz"][1]
    used = sorted(Path(e["image"]).name for s in SPLITS for e in datalist[s])
    assert used == sorted(p.name for p in real[1:])
    out = capsys.readouterr().out
    assert "damaged.nii.gz: unreadable NIfTI: damaged gzip data (CRC check failed" in out
    assert "zero_affine.nii.gz: NIfTI affine is singular" in out


def test_a_one_pixel_png_is_not_a_training_image(tmp_path, capsys):
    from PIL import Image

    source = tmp_path / "src"
    write_pngs(source / "a", [f"a{i}" for i in range(3)])
    write_pngs(source / "b", [f"b{i}" for i in range(3)])
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(source / "a" / "dot.png")
    assert prepare(source, "--out", tmp_path / "out") == 0
    datalist, report = load(tmp_path / "out")
    (record,) = [f for f in report["files"] if f["path"].endswith("dot.png")]
    assert record["status"] == "skipped" and "1x1 pixels, below the minimum of 8 per side" in record["reason"]
    assert "dot.png" not in json.dumps(datalist)
    assert "dot.png: image is 1x1 pixels" in capsys.readouterr().out


def test_earlier_outputs_inside_the_source_are_left_out_and_announced(tmp_path, caplog):
    source = tmp_path / "src"
    for name in ("a", "b"):
        write_pngs(source / name, [f"{name}{i}" for i in range(5)])
    assert prepare(source, "--out", source / "prep") == 0
    assert prepare(source, "--out", source / "prep2") == 0  # the first output (preview.png ...) lies in SOURCE
    datalist, report = load(source / "prep2")
    assert datalist["classes"] == ["a", "b"] and sum(len(datalist[s]) for s in SPLITS) == 10
    assert not any("/prep/" in f["path"] for f in report["files"])
    (message,) = [m for m in report["messages"] if m.startswith("left out 1 folder(s) inside the source")]
    assert str((source / "prep").resolve()) in message and message in caplog.text


def test_a_class_too_small_for_the_splits_gets_a_line(tmp_path, caplog):
    source = tmp_path / "src"
    write_pngs(source / "common", [f"c{i}" for i in range(10)])
    write_pngs(source / "rare", ["r0"])
    assert prepare(source, "--out", tmp_path / "out") == 0
    datalist, report = load(tmp_path / "out")
    expected = ["class 'rare' has 1 subject(s), too few for the 3 splits training, validation, test: it is in "
                "training only",
                "the validation split has no image of class(es) 'rare': its metrics say nothing about them",
                "the test split has no image of class(es) 'rare': its metrics say nothing about them"]
    assert [m for m in report["messages"] if "'rare'" in m] == expected
    assert all(line in caplog.text for line in expected)
    assert report["summary"]["class_coverage"] == {"too_few_subjects": {"rare": 1},
                                                   "missing": {"validation": ["rare"], "test": ["rare"]}}


def duplicated_mednist(shared_data: Path, source: Path) -> dict[str, list[str]]:
    """Two classes of real MedNIST JPEGs plus 10 byte-identical copies under new names (6 in their own class, 4 in
    the other class) and one image 3 grey levels brighter saved as PNG (a near duplicate). Returns the copies' names by kind."""
    import shutil

    from PIL import Image

    originals = {c: sorted((shared_data / "mednist64" / c).glob("*.jpg"))[:15] for c in ("CXR", "MRBrain")}
    for name, files in originals.items():
        (source / name).mkdir(parents=True)
        for file in files:
            shutil.copy(file, source / name / file.name)
    copies = {"same_class": [], "other_class": [], "near": []}
    for k in range(6):
        shutil.copy(originals["CXR"][k], source / "CXR" / f"copy_{k}.jpg")
        copies["same_class"].append(f"CXR/copy_{k}.jpg")
    for k in range(4):
        shutil.copy(originals["MRBrain"][k], source / "CXR" / f"mislabelled_{k}.jpg")
        copies["other_class"].append(f"CXR/mislabelled_{k}.jpg")
    brighter = np.asarray(Image.open(originals["MRBrain"][10])).astype(np.int16) + 3
    Image.fromarray(np.clip(brighter, 0, 255).astype(np.uint8)).save(source / "MRBrain" / "brighter.png")
    copies["near"].append("MRBrain/brighter.png")
    return copies


@pytest.mark.shared_data
def test_identical_images_of_different_subjects_never_span_splits(shared_data, tmp_path, caplog):
    source = tmp_path / "src"
    duplicated_mednist(shared_data, source)
    assert prepare(source, "--out", tmp_path / "out") == 0
    datalist, report = load(tmp_path / "out")
    duplicates = report["duplicates"]
    assert duplicates["policy"] == "keep" and duplicates["dropped"] == 0
    assert (duplicates["exact_groups"], duplicates["exact_images"]) == (10, 20)
    assert duplicates["exact_groups_across_subjects"] == 10 and duplicates["exact_groups_across_classes"] == 4
    assert duplicates["exact_groups_across_splits"] == 0
    split_of = {e["image"]: name for name in SPLITS for e in datalist[name]}
    assert len(split_of) == 41  # nothing lost
    for group in duplicates["exact"]:
        assert len({split_of[f] for f in group["files"]}) == 1, group
    assert len({g["splits"][0] for g in duplicates["exact"]}) > 1  # groups are spread, not all put in training
    assert duplicates["near_pairs_across_subjects"] >= 1  # brighter.png and its original, at least
    (line,) = [m for m in report["messages"] if m.startswith("duplicates: 10 group(s) of identical images")]
    assert "10 across subjects, 4 across classes, 0 across splits" in line and line in caplog.text
    (conflict,) = [m for m in report["messages"] if "carry different class labels" in m]
    assert conflict.startswith("4 group(s) of identical images")


@pytest.mark.shared_data
def test_duplicates_drop_and_error(shared_data, tmp_path, capsys):
    source = tmp_path / "src"
    duplicated_mednist(shared_data, source)
    assert prepare(source, "--out", tmp_path / "dropped", "--duplicates", "drop") == 0
    datalist, report = load(tmp_path / "dropped")
    assert report["duplicates"]["dropped"] == 10 and sum(len(datalist[s]) for s in SPLITS) == 31
    skipped = [f for f in report["files"] if f["status"] == "skipped"]
    assert len(skipped) == 10 and all("dropped by --duplicates drop" in f["reason"] for f in skipped)
    assert prepare(source, "--out", tmp_path / "refused", "--duplicates", "error") == 2
    line = one_error_line(capsys)
    assert "10 group(s) of identical images belong to different subjects" in line and "--duplicates keep" in line


def test_a_size_no_machine_can_hold_is_refused_up_front(tmp_path, capsys):
    source = tmp_path / "src"
    write_pngs(source / "a", ["a0", "a1", "a2"])
    write_pngs(source / "b", ["b0", "b1", "b2"])
    assert prepare(source, "--out", tmp_path / "huge", "--size", "1000000,1000000") == 2
    line = one_error_line(capsys)
    assert "--size: 1000000x1000000 is 1,000,000,000,000 voxels a sample: a batch of 2 needs at least" in line
    assert "GiB of memory is available; choose a smaller size" in line
    assert not (tmp_path / "huge" / "datalist.json").exists()
    assert prepare(source, "--out", tmp_path / "ok", "--size", "16,16") == 0
    capsys.readouterr()
    assert main(["train", "--bundle", "cgan", "--data", str(tmp_path / "ok"), "--out", str(tmp_path / "run"),
                 "--image-size", "1000000,1000000", "--iterations", "1", "--device", "cpu"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("medvol train: error: --image-size: 1000000x1000000 is")


@pytest.mark.shared_data
def test_a_truncated_slice_inside_a_series_is_named(shared_data, tmp_path, capsys):
    import shutil

    source = tmp_path / "series"
    shutil.copytree(shared_data / "dicom/crop_series/study1_hippo_crop", source)
    victim = source / "12.dcm"
    victim.chmod(0o644)
    victim.write_bytes(victim.read_bytes()[:2000])  # a slice cut off in its pixel data
    assert prepare(source, "--out", tmp_path / "out") == 2
    line = one_error_line(capsys)
    own = line.index(f"{victim}: truncated: pixel data declares")
    assert own < line.index("31 files (e.g. ") and "1 between 11.dcm (11.00 mm) and 13.dcm (13.00 mm)" in line
    assert main(["inspect", str(source), "--json"]) == 0
    (series,) = json.loads(capsys.readouterr().out)["series"]
    assert any(p.startswith("1 file(s) in its folder were skipped and may be the missing slices: 12.dcm (truncated")
               for p in series["problems"])


@pytest.mark.parametrize("header, row, outcome", [
    ["image,diagnosis", "{id},{label}", "labelled"],  # 'image' holds ids, not paths: read as ids
    ["patient,image,diagnosis", "{id},scan{n}.dcm,{label}", "labelled"],  # paths elsewhere: matched by the id
    ["image,diagnosis,mrn", "scan{n}.dcm,{label},{id}", "medvol prepare: error: {csv}: none of the 6 values of its "
     "column 'image' (read as image paths) names an image under {src} (they look like 'scan0.dcm', 'scan1.dcm', "
     "'scan2.dcm', ...; image ids look like '000', '001', '002', ...); its column 'mrn' holds image ids: "
     "--id-column mrn"],
    ["accession,diagnosis", "A{n},{label}", "medvol prepare: error: {csv}: none of the 6 values of its column "
     "'accession' names an image under {src} (they look like 'A0', 'A1', 'A2', ...; image ids look like '000', "
     "'001', '002', ...); name the column of image ids (file names, stems or subject ids) with --id-column"],
])
def test_a_csv_whose_id_column_holds_something_else(tmp_path, capsys, header, row, outcome):
    source = write_pngs(tmp_path / "src", [f"{i:03d}" for i in range(6)])
    csv = tmp_path / "labels.csv"
    csv.write_text(header + "\n" + "".join(row.format(id=f"{i:03d}", n=i, label=i % 2) + "\n" for i in range(6)))
    code = prepare(source, "--out", tmp_path / "out", "--labels", csv)
    if outcome == "labelled":
        assert code == 0
        datalist, _ = load(tmp_path / "out")
        assert datalist["classes"] == ["0", "1"] and sum(len(datalist[s]) for s in SPLITS) == 6
    else:
        assert code == 2
        assert one_error_line(capsys) == outcome.format(csv=csv, src=source)


def test_cgan_on_a_datalist_without_training_split_says_so(tmp_path, capsys):
    source = tmp_path / "src"
    write_pngs(source / "a", ["a0", "a1", "a2"])
    write_pngs(source / "b", ["b0", "b1", "b2"])
    assert prepare(source, "--out", tmp_path / "prepared") == 0
    document = json.loads((tmp_path / "prepared" / "datalist.json").read_text())
    document["test"] += document.pop("training")  # a test-only datalist, such as evaluation sets are
    document["classes"] = []
    (tmp_path / "prepared" / "datalist.json").write_text(json.dumps(document))
    capsys.readouterr()
    assert main(["train", "--bundle", "cgan", "--data", str(tmp_path / "prepared"), "--out", str(tmp_path / "run"),
                 "--iterations", "1", "--device", "cpu"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "datalist.json: has no training split" in lines[0], lines
    assert "class labels" not in lines[0]
