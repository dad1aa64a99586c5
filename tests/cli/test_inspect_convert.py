"""`medvol inspect` and `medvol convert` on the real DICOM data, checked against SimpleITK, and on bad inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medvol.cli import main
from medvol.runs import RunRecord

SINGLE_SERIES_FOLDERS = ["dicom/crop_series/study1_hippo_crop", "dicom/crop_series/study2_hippo_crop", "dicom/ct_tiny"]
STUDY = "dicom/study_mixed_series"


def simpleitk_reference(folder: Path) -> tuple[str, sitk.Image]:
    """SimpleITK's reading of the one series in ``folder`` (GDCM file names and order), with its UID."""
    uid = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))[0]
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        return uid, reader.Execute()
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def inspect_json(path, capsys) -> dict:
    assert main(["inspect", str(path), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def assert_geometry_equal(entry: dict, reference: sitk.Image) -> None:
    assert entry["shape"] == list(reference.GetSize())
    np.testing.assert_allclose(entry["spacing"], reference.GetSpacing(), atol=1e-3)
    np.testing.assert_allclose(entry["origin"], reference.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(entry["direction"], reference.GetDirection(), atol=1e-3)


def assert_converted_equals(output: Path, reference: sitk.Image) -> None:
    """The written NIfTI, read back by SimpleITK and by nibabel, has SimpleITK's DICOM geometry and voxels."""
    written = sitk.ReadImage(str(output))
    assert list(written.GetSize()) == list(reference.GetSize())
    np.testing.assert_allclose(written.GetSpacing(), reference.GetSpacing(), atol=1e-3)
    np.testing.assert_allclose(written.GetOrigin(), reference.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(written.GetDirection(), reference.GetDirection(), atol=1e-3)
    expected = sitk.GetArrayFromImage(reference).astype(np.float32)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written), expected)
    np.testing.assert_array_equal(np.asarray(nib.load(str(output)).dataobj), expected.transpose(2, 1, 0))


def one_error_line(capsys, *expected: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for text in expected:
        assert text in err, err
    return err


def test_inspect_and_convert_study_with_five_series(shared_data, capsys, tmp_path):
    report = inspect_json(shared_data / STUDY, capsys)
    assert len(report["series"]) == 5 and report["skipped"] == []
    for index, folder in enumerate(sorted((shared_data / STUDY).iterdir())):
        uid, reference = simpleitk_reference(folder)
        (entry,) = [e for e in report["series"] if e["uid"] == uid]
        assert entry["files"] == reference.GetSize()[2] and entry["modality"] == "MR" and entry["problems"] == []
        assert_geometry_equal(entry, reference)
        output = tmp_path / f"{entry['description']}{'.nii.gz' if index == 0 else '.nii'}"  # gzip once: it is slow
        assert main(["convert", str(shared_data / STUDY), str(output), "--series", uid]) == 0
        assert_converted_equals(output, reference)


@pytest.mark.parametrize("relative", SINGLE_SERIES_FOLDERS)
def test_inspect_and_convert_single_series(shared_data, capsys, tmp_path, relative):
    folder = shared_data / relative
    uid, reference = simpleitk_reference(folder)
    report = inspect_json(folder, capsys)
    (entry,) = report["series"]
    assert entry["uid"] == uid and entry["files"] == reference.GetSize()[2]
    assert_geometry_equal(entry, reference)
    output = tmp_path / "out.nii"
    assert main(["convert", str(folder), str(output)]) == 0
    assert_converted_equals(output, reference)


def test_table_output(shared_data, capsys):
    assert main(["inspect", str(shared_data / "dicom/ct_tiny")]) == 0
    out = capsys.readouterr().out
    assert "Routine Brain" in out and "[16, 16, 4]" in out and "161 missing" in out
    assert "     medvol prepare skips it unless --accept-irregular-dicom gap\n" in out


def test_multi_echo_series_inspected_and_converted_per_echo(shared_data, tmp_path, capsys):
    from tests.io.test_dicom import write_copies

    echoes = write_copies(shared_data / SINGLE_SERIES_FOLDERS[0], tmp_path / "echoes",
                          [{"EchoNumbers": 1}, {"EchoNumbers": 2}])
    report = inspect_json(tmp_path / "echoes", capsys)
    uid = report["series"][0]["uid"]
    assert [e["volume_id"] for e in report["series"]] == [f"{uid}#echo1", f"{uid}#echo2"]
    for number, (entry, files) in enumerate(zip(report["series"], echoes), start=1):
        assert entry["files"] == 32 and entry["problems"] == [] and entry["irregular"] == []  # no duplicate positions
        assert entry["split_by"] == {"EchoNumbers": str(number)}
        folder = copy_folder_of(files, tmp_path / f"echo{number}")
        _, reference = simpleitk_reference(folder)
        assert_geometry_equal(entry, reference)
        output = tmp_path / f"echo{number}.nii.gz"
        assert main(["convert", str(tmp_path / "echoes"), str(output), "--series", entry["volume_id"]]) == 0
        assert_converted_equals(output, reference)
    capsys.readouterr()
    assert main(["convert", str(tmp_path / "echoes"), str(tmp_path / "both.nii.gz")]) == 2
    one_error_line(capsys, "1 series (2 volumes) found, choose one with --series", f"{uid}#echo2 (HippoCrop (echo 2)")


def copy_folder_of(files: list[Path], target: Path) -> Path:
    target.mkdir(parents=True)
    for file in files:
        shutil.copy(file, target / file.name)
    return target


def copy_folder(source: Path, target: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    for file in sorted(source.iterdir()):
        shutil.copy(file, target / file.name)
    return target


def test_truncated_dicom(shared_data, capsys, tmp_path):
    folder = copy_folder(shared_data / SINGLE_SERIES_FOLDERS[0], tmp_path / "series")
    victim = folder / "12.dcm"
    victim.write_bytes(victim.read_bytes()[:-300])
    report = inspect_json(folder, capsys)
    assert report["skipped"][0]["path"] == str(victim) and report["skipped"][0]["reason"].startswith("truncated")
    assert report["series"][0]["files"] == 31  # the rest of the series still loads
    assert main(["convert", str(victim), str(tmp_path / "one.nii.gz")]) == 2
    one_error_line(capsys, "12.dcm", "truncated")
    assert main(["convert", str(folder), str(tmp_path / "rest.nii.gz")]) == 0
    assert nib.load(str(tmp_path / "rest.nii.gz")).shape == (35, 51, 31)


def test_text_file_named_dcm(shared_data, capsys, tmp_path):
    folder = copy_folder(shared_data / "dicom/ct_tiny", tmp_path / "series")
    (folder / "readme.dcm").write_text("exported by the PACS on Monday\n")
    report = inspect_json(folder, capsys)
    assert [Path(s["path"]).name for s in report["skipped"]] == ["readme.dcm"]
    assert "not a DICOM file" in report["skipped"][0]["reason"]
    assert report["series"][0]["files"] == 4
    assert main(["inspect", str(folder / "readme.dcm")]) == 2
    one_error_line(capsys, "readme.dcm", "not a DICOM file")


def test_series_with_one_slice_removed(shared_data, capsys, tmp_path):
    folder = copy_folder(shared_data / SINGLE_SERIES_FOLDERS[1], tmp_path / "series")
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder))
    Path(files[17]).unlink()
    (entry,) = inspect_json(folder, capsys)["series"]
    gaps = [p for p in entry["problems"] if p.startswith("missing slices")]
    assert entry["files"] == 34 and gaps and "1 missing" in gaps[0]
    assert Path(files[16]).name in gaps[0] and Path(files[18]).name in gaps[0]


def test_two_series_mixed_in_one_folder(shared_data, capsys, tmp_path):
    folder = tmp_path / "mixed"
    copy_folder(shared_data / SINGLE_SERIES_FOLDERS[0], folder)
    for file in (shared_data / "dicom/ct_tiny").iterdir():
        shutil.copy(file, folder / f"ct_{file.name}")
    report = inspect_json(folder, capsys)
    uids = sorted(e["uid"] for e in report["series"])
    assert sorted(e["files"] for e in report["series"]) == [4, 32]
    assert main(["convert", str(folder), str(tmp_path / "x.nii.gz")]) == 2
    one_error_line(capsys, str(folder), "2 series found", "--series", *uids)
    assert not (tmp_path / "x.nii.gz").exists()
    assert main(["convert", str(folder), str(tmp_path / "ct.nii.gz"), "--series", "Routine Brain"]) == 0
    assert nib.load(str(tmp_path / "ct.nii.gz")).shape == (16, 16, 4)


def test_nifti_with_nans(capsys, tmp_path):
    array = np.zeros((6, 5, 4), np.float32)
    array[1, 2, 3] = np.nan
    affine = np.diag([-0.5, -0.5, 2.0, 1.0])
    path = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(array, affine), str(path))
    (entry,) = inspect_json(path, capsys)["series"]
    assert entry["kind"] == "nifti" and "1 NaN" in entry["problems"][0]
    np.testing.assert_allclose(entry["spacing"], [0.5, 0.5, 2.0])
    np.testing.assert_allclose(entry["direction"], np.eye(3).ravel())  # RAS -x,-y == LPS +x,+y
    assert main(["convert", str(path), str(tmp_path / "out.nii")]) == 2
    one_error_line(capsys, "nan.nii.gz", "1 NaN")
    assert main(["convert", str(path), str(tmp_path / "out.nii"), "--series", "T1"]) == 2
    one_error_line(capsys, "nan.nii.gz", "--series 'T1' selects a DICOM series")


@pytest.mark.parametrize("shape, problems", [[(6, 5, 4), 0], [(6, 5, 4, 3), 1], [(9, 8), 0]])
def test_nifti_beyond_three_axes_is_reported(capsys, tmp_path, shape, problems):
    path = tmp_path / "image.nii"
    nib.save(nib.Nifti1Image(np.ones(shape, np.float32), np.eye(4)), str(path))
    (entry,) = inspect_json(path, capsys)["series"]
    assert entry["shape"] == list(shape[:3])
    assert len(entry["problems"]) == problems
    if problems:
        assert entry["problems"][0].startswith(f"4D image {list(shape)}")


def test_empty_folder_and_missing_path(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    assert main(["inspect", str(tmp_path / "empty"), "--json"]) == 2
    one_error_line(capsys, "empty", "empty folder")
    assert main(["inspect", str(tmp_path / "absent")]) == 2
    one_error_line(capsys, "absent", "no such file or folder")


def test_wrong_header_radiographs(shared_data, capsys):
    report = inspect_json(shared_data / "dicom/cxr_single", capsys)
    assert sum(e["files"] for e in report["series"]) == 6 and report["skipped"] == []
    problems = [p for e in report["series"] for p in e["problems"]]
    assert any(p.startswith("test5.dcm: Modality CT is not credible") for p in problems)
    assert any("BodyPartExamined differs" in p and "RIBCAGE (test4.dcm)" in p for p in problems)


def test_convert_bad_suffix_and_image(shared_data, capsys, tmp_path):
    assert main(["convert", str(shared_data / "dicom/ct_tiny"), str(tmp_path / "out.mha")]) == 2
    one_error_line(capsys, "out.mha", ".nii")
    source = sorted((shared_data / "mednist64/CXR").glob("*.jpg"))[0]
    assert main(["convert", str(source), str(tmp_path / "cxr.nii.gz")]) == 0
    written = nib.load(str(tmp_path / "cxr.nii.gz"))
    assert written.shape == (64, 64)


def test_inspect_image_folder_and_nifti(shared_data, capsys, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for source in sorted((shared_data / "mednist64/CXR").glob("*.jpg"))[:3]:
        shutil.copy(source, folder / source.name)
    (folder / "broken.png").write_bytes(b"\x89PNG broken")
    report = inspect_json(folder, capsys)
    assert [e["shape"] for e in report["series"]] == [[64, 64]] * 3
    assert [Path(s["path"]).name for s in report["skipped"]] == ["broken.png"]
    nifti = sorted((shared_data / "hippocampus3d/images").glob("*.nii.gz"))[0]
    (entry,) = inspect_json(nifti, capsys)["series"]
    assert_geometry_equal(entry, sitk.ReadImage(str(nifti)))


def synthetic_dicom_samples(out: Path, spatial_dims: int, modality: str) -> dict:
    """What `medvol sample --format dicom` writes for a conditional run: three series, sidecars, datalist.json."""
    from medvol.sampling import write_samples

    arrays = np.random.default_rng(spatial_dims).normal(0.4, 0.1, size=(3, 1, *(16,) * spatial_dims)).astype(np.float32)
    affine = np.diag([-0.9, -1.1, 2.0, 1.0]) if spatial_dims == 3 else np.diag([-0.9, -1.1, 1.0])
    record = RunRecord(family="wgan_gp", spatial_dims=spatial_dims, image_size=[16] * spatial_dims, modality=modality,
                       classes=["normal", "lesion"], reference_affine=affine.tolist())
    run = out.parent / "run"
    provenance = {"run": str(run), "checkpoint": str(run / "checkpoints" / "checkpoint_000010.pt"), "seed": 0, "family": "wgan_gp"}
    return write_samples(arrays, [0, 1, 0], record, out, "dicom", provenance)


@pytest.mark.parametrize("spatial_dims, modality, sop_class", [(3, "MR", "MR Image Storage"), (2, "OT", "Secondary Capture Image Storage")])
def test_inspect_synthetic_dicom_export(capsys, tmp_path, spatial_dims, modality, sop_class):
    document = synthetic_dicom_samples(tmp_path / "synthetic", spatial_dims, modality)
    report = inspect_json(tmp_path / "synthetic", capsys)
    assert len(report["series"]) == 3 and all(entry["kind"] == "dicom" for entry in report["series"])
    assert sorted(Path(entry["folder"]).name for entry in report["series"]) == sorted(e["id"] for e in document["training"])
    for entry in report["series"]:
        assert entry["synthetic"] is True and entry["modality"] == modality and entry["description"].startswith("SYNTHETIC")
        assert entry["shape"] == [16, 16, 16 if spatial_dims == 3 else 1]
        np.testing.assert_allclose(entry["spacing"][:2], [0.9, 1.1])
        assert entry["problems"] == []  # neither a volume nor a 2D picture has anything to report
        header = read_header(entry["first_file"])
        assert header.SOPClassUID.name == sop_class
        # provenance without the machine's paths: the run's folder name, the checkpoint relative to the run
        assert "run=run; checkpoint=checkpoints/checkpoint_000010.pt; seed=0" in header.ImageComments
        assert str(tmp_path) not in header.ImageComments + header.DerivationDescription
    skipped = sorted(Path(s["path"]).name for s in report["skipped"])  # the JSON files beside the series, with a reason
    assert skipped == sorted(["datalist.json"] + [f"{e['id']}.json" for e in document["training"]])
    assert {s["reason"] for s in report["skipped"]} == {"not DICOM (JSON: a sidecar or datalist)"}


def read_header(path: str):
    import pydicom

    return pydicom.dcmread(path, stop_before_pixels=True)


@pytest.mark.parametrize("spatial_dims, modality", [(3, "MR"), (2, "OT")])
def test_prepare_reads_a_synthetic_dicom_export_and_says_so(capsys, caplog, tmp_path, spatial_dims, modality):
    synthetic_dicom_samples(tmp_path / "synthetic", spatial_dims, modality)
    assert main(["prepare", str(tmp_path / "synthetic"), "--out", str(tmp_path / "prepared"), "--split", "1,0,0"]) == 0
    console = capsys.readouterr().err + caplog.text
    assert "3 of 3 DICOM series are marked synthetic (Synthetic Data (0008,001C) YES" in console
    document = json.loads((tmp_path / "prepared" / "datalist.json").read_text())
    assert document["synthetic"] is True and document["spatial_dims"] == spatial_dims
    assert len(document["training"]) == 3 and all(entry["synthetic"] is True for entry in document["training"])
    for entry in document["training"]:
        voxels = np.asarray(nib.load(entry["image"]).dataobj)
        assert voxels.shape[:2] == (16, 16) and voxels.size == 16**spatial_dims
        # the stored integers, as a viewer shows them: the whole uint16 range of each sample
        assert (voxels.min(), voxels.max()) == (0, 65535)


def test_prepare_of_real_dicom_is_not_synthetic(shared_data, tmp_path):
    assert main(["prepare", str(shared_data / SINGLE_SERIES_FOLDERS[0]), "--out", str(tmp_path / "prepared"), "--split", "1,0,0"]) == 0
    document = json.loads((tmp_path / "prepared" / "datalist.json").read_text())
    assert "synthetic" not in document and not any("synthetic" in entry for entry in document["training"])


# ------------------------------------------------------------------------------------- damaged and degenerate inputs
def crc_damaged_copy(source: Path, target: Path) -> Path:
    """A copy of a real .nii.gz with one byte of its compressed payload flipped: nibabel still decodes it (to
    wrong voxels), only the gzip CRC check at the end of the stream fails."""
    import gzip

    data = bytearray(source.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(gzip.BadGzipFile, match="CRC check failed"):
        gzip.decompress(bytes(data))
    nib.load(str(target)).get_fdata()  # the damage the check must catch: nibabel reads it without an error
    return target


def write_with_affine(path: Path, affine_rows) -> Path:
    """A small NIfTI whose sform (code 1) holds `affine_rows` (nibabel refuses to build such an image directly)."""
    image = nib.Nifti1Image(np.random.default_rng(0).random((12, 12, 10)).astype(np.float32), np.eye(4))
    header = image.header
    header["srow_x"], header["srow_y"], header["srow_z"] = affine_rows
    header["sform_code"], header["qform_code"] = 1, 0
    nib.Nifti1Image(image.get_fdata(dtype=np.float32), None, header=header).to_filename(str(path))
    return path


def test_nifti_with_a_failing_gzip_crc(shared_data, capsys, tmp_path):
    source = sorted((shared_data / "hippocampus3d/images").glob("*.nii.gz"))[0]
    damaged = crc_damaged_copy(source, tmp_path / "damaged.nii.gz")
    assert main(["inspect", str(damaged)]) == 2
    one_error_line(capsys, "damaged.nii.gz", "CRC check failed", "gzip -t")
    assert main(["convert", str(damaged), str(tmp_path / "out.nii.gz")]) == 2
    one_error_line(capsys, "damaged.nii.gz", "CRC check failed")
    assert not (tmp_path / "out.nii.gz").exists()
    shutil.copy(source, tmp_path / "intact.nii.gz")
    report = inspect_json(tmp_path, capsys)
    assert [Path(e["path"]).name for e in report["series"]] == ["intact.nii.gz"]
    assert [Path(s["path"]).name for s in report["skipped"]] == ["damaged.nii.gz"]
    assert "CRC check failed" in report["skipped"][0]["reason"]


@pytest.mark.parametrize("rows, problem", [
    [[[0, 0, 0, 0]] * 3, "affine is singular"],
    [[[np.nan, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]], "NaN/Inf"],
])
def test_nifti_with_a_singular_or_non_finite_affine(capsys, tmp_path, rows, problem):
    path = write_with_affine(tmp_path / "bad_affine.nii.gz", rows)
    assert main(["inspect", str(path)]) == 2
    one_error_line(capsys, "bad_affine.nii.gz", problem)
    assert main(["convert", str(path), str(tmp_path / "out.nii.gz")]) == 2
    one_error_line(capsys, "bad_affine.nii.gz", problem)


def test_tiny_image_is_a_problem_in_inspect(capsys, tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((1, 1), np.uint8)).save(tmp_path / "dot.png")
    Image.fromarray(np.full((8, 8), 9, np.uint8)).save(tmp_path / "small_but_fine.png")
    report = inspect_json(tmp_path, capsys)
    problems = {e["description"]: e["problems"] for e in report["series"]}
    assert problems["small_but_fine.png"] == []
    assert len(problems["dot.png"]) == 1 and "1x1 pixels, below the minimum of 8" in problems["dot.png"][0]
    assert "medvol prepare skips it" in problems["dot.png"][0]


def test_grey_jpegs_stored_as_rgb_are_no_finding_and_findings_are_grouped(shared_data, capsys, tmp_path):
    from PIL import Image

    sources = sorted((shared_data / "mednist64/CXR").glob("*.jpg"))[:5]
    for source in sources:  # grey pictures saved with three equal channels, as many exports do
        Image.open(source).convert("RGB").save(tmp_path / source.name)
    report = inspect_json(tmp_path, capsys)
    assert [e["problems"] for e in report["series"]] == [[]] * 5
    for source in sources[:4]:  # real colour: a tint in the red channel
        pixels = np.asarray(Image.open(source).convert("RGB")).copy()
        pixels[..., 0] = np.clip(pixels[..., 0].astype(int) + 40, 0, 255)
        Image.fromarray(pixels).save(tmp_path / f"tinted_{source.stem}.png")
    report = inspect_json(tmp_path, capsys)
    assert sum(1 for e in report["series"] if e["problems"]) == 4
    assert main(["inspect", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert table.count("converted from RGB to greyscale") == 1
    assert "! 4 series/images: converted from RGB to greyscale" in table
