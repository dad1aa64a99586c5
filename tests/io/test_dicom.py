"""DICOM discovery, ordering, geometry and checks against SimpleITK on the real series in ../shared/data/dicom."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
import SimpleITK as sitk
import torch
from monai.data import MetaTensor
from monai.transforms import LoadImage

from medvol.errors import MedvolInputError
from medvol.io.dicom import (
    DicomSeriesReader,
    discover_series,
    irregular_reason,
    parse_irregular_kinds,
    read_series,
    select_series,
    synthetic_series_warning,
)
from medvol.io.geometry import affine_ras_from_geometry

SERIES_FOLDERS = [
    "dicom/study_mixed_series/11-T1post-18670",
    "dicom/study_mixed_series/26401-T1prereg-52906",
    "dicom/study_mixed_series/36468-FLAIRreg-58706",
    "dicom/study_mixed_series/37830-T2reg-78532",
    "dicom/study_mixed_series/11_HCropVolume",
    "dicom/crop_series/study1_hippo_crop",
    "dicom/crop_series/study2_hippo_crop",
    "dicom/ct_tiny",
]
# MONAI's LoadImage registers every default reader; without nvImageCodec (a CPU machine) that one warns.
NVIMGCODEC_WARNING = "ignore:NvImgCodecPydicomReader:UserWarning"
CROP_1 = "dicom/crop_series/study1_hippo_crop"
CROP_2 = "dicom/crop_series/study2_hippo_crop"


PYDICOM_TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"  # shipped inside the pydicom wheel


def pydicom_file(name: str) -> Path:
    path = PYDICOM_TEST_FILES / name
    if not path.is_file():
        pytest.skip(f"pydicom test file {name} is not installed")
    return path


def simpleitk_series(folder: Path) -> tuple[list[str], sitk.Image]:
    """GDCM's file order and SimpleITK's image for the one series in ``folder``: the reference medvol must match."""
    files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        return files, reader.Execute()
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def copy_folder(source: Path, target: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    for file in sorted(source.iterdir()):
        shutil.copy(file, target / file.name)
    return target


@pytest.mark.parametrize("relative", SERIES_FOLDERS)
def test_series_matches_simpleitk(shared_data, relative):
    folder = shared_data / relative
    reference_files, reference = simpleitk_series(folder)
    scan = discover_series(folder)
    assert len(scan.series) == 1 and not scan.skipped
    series = scan.series[0]
    assert series.files == reference_files  # spatial order, not file name or InstanceNumber order
    assert series.shape == list(reference.GetSize())
    np.testing.assert_allclose(series.spacing, reference.GetSpacing(), atol=1e-3)
    np.testing.assert_allclose(series.origin, reference.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(series.direction, reference.GetDirection(), atol=1e-3)
    array, affine = read_series(series)
    assert array.dtype == np.float32 and list(array.shape) == series.shape
    np.testing.assert_array_equal(array, sitk.GetArrayFromImage(reference).transpose(2, 1, 0).astype(np.float32))
    expected_affine = affine_ras_from_geometry(reference.GetSpacing(), reference.GetOrigin(), reference.GetDirection())
    np.testing.assert_allclose(affine, expected_affine, atol=1e-3)


def test_order_is_spatial_not_file_name(shared_data):
    series = discover_series(shared_data / CROP_1).series[0]
    names = [Path(f).name for f in series.files]
    assert names != sorted(names)  # "1, 10, 11, ..." must not decide the order
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in series.files]
    positions = [float(h.ImagePositionPatient[2]) for h in headers]  # axial crop: the normal is +z
    assert positions == sorted(positions)


def test_rescale_applied(shared_data):
    series = discover_series(shared_data / "dicom/ct_tiny").series[0]
    array, _ = read_series(series)
    first = pydicom.dcmread(series.files[0])
    expected = first.pixel_array.T.astype(np.float32) * float(first.RescaleSlope) + float(first.RescaleIntercept)
    np.testing.assert_array_equal(array[..., 0], expected)
    assert float(first.RescaleIntercept) == -1024.0


def test_ct_tiny_gap_reported(shared_data):
    series = discover_series(shared_data / "dicom/ct_tiny").series[0]
    assert any("161 missing" in p for p in series.problems), series.problems


def test_study_folder_lists_every_series(shared_data):
    scan = discover_series(shared_data / "dicom/study_mixed_series")
    assert sorted(s.description for s in scan.series) == ["FLAIR_reg", "HippoCrop", "T1post", "T1pre_reg", "T2_reg"]
    assert all(not s.problems for s in scan.series)
    with pytest.raises(MedvolInputError, match="5 series found.*T1post.*T2_reg"):
        select_series(scan)
    assert select_series(scan, "T2_reg").description == "T2_reg"
    t1 = next(s for s in scan.series if s.description == "T1post")
    assert select_series(scan, t1.uid) is t1
    with pytest.raises(MedvolInputError, match="no series matches 'PD'"):
        select_series(scan, "PD")


def test_two_series_in_one_folder_with_same_description(shared_data, tmp_path):
    folder = tmp_path / "mixed"
    copy_folder(shared_data / CROP_1, folder / "a")
    copy_folder(shared_data / CROP_2, folder / "b")
    for file in (folder / "b").iterdir():
        file.rename(folder / f"b_{file.name}")
    (folder / "b").rmdir()
    scan = discover_series(folder)
    assert sorted(len(s.files) for s in scan.series) == [32, 35]
    with pytest.raises(MedvolInputError, match="2 series have description 'HippoCrop', use the UID"):
        select_series(scan, "HippoCrop")
    chosen = select_series(scan, scan.series[1].uid)
    assert chosen is scan.series[1]


def test_truncated_file_skipped_rest_loads(shared_data, tmp_path):
    folder = copy_folder(shared_data / CROP_1, tmp_path / "series")
    victim = folder / "10.dcm"
    victim.write_bytes(victim.read_bytes()[:-500])
    scan = discover_series(folder)
    skipped = {Path(r.path).name: r.reason for r in scan.skipped}
    assert list(skipped) == ["10.dcm"] and skipped["10.dcm"].startswith("truncated")
    series = scan.series[0]
    assert len(series.files) == 31
    assert any("1 missing" in p for p in series.problems)  # the lost slice leaves a gap, reported too
    array, _ = read_series(series)
    assert array.shape[2] == 31


def test_text_file_named_dcm_skipped(shared_data, tmp_path):
    folder = copy_folder(shared_data / "dicom/ct_tiny", tmp_path / "series")
    (folder / "notes.dcm").write_text("patient moved during the scan\n" * 20)
    scan = discover_series(folder)
    assert [Path(r.path).name for r in scan.skipped] == ["notes.dcm"]
    assert "not a DICOM file" in scan.skipped[0].reason or "not a readable DICOM" in scan.skipped[0].reason
    assert len(scan.series) == 1 and len(scan.series[0].files) == 4


@pytest.mark.parametrize("removed, message", [("000010.dcm", "1 missing"), ("000000.dcm", None)])
def test_removed_slice(shared_data, tmp_path, removed, message):
    folder = copy_folder(shared_data / "dicom/study_mixed_series/26401-T1prereg-52906", tmp_path / "series")
    ordered = discover_series(folder).series[0].files
    # remove by spatial rank so the test does not depend on file naming
    victim = Path(ordered[10]) if removed == "000010.dcm" else Path(ordered[0])
    victim.unlink()
    series = discover_series(folder).series[0]
    assert len(series.files) == 21
    if message:
        gap = [p for p in series.problems if p.startswith("missing slices")]
        assert gap and message in gap[0] and victim.name not in gap[0], series.problems
    else:  # removing an end slice leaves a shorter but regular volume
        assert series.problems == []


def test_duplicate_position_reported(shared_data, tmp_path):
    folder = copy_folder(shared_data / "dicom/ct_tiny", tmp_path / "series")
    shutil.copy(folder / "7166", folder / "7166_copy")
    series = discover_series(folder).series[0]
    assert any(p.startswith("duplicate slice position") and "7166" in p for p in series.problems)
    assert any("share SOPInstanceUID" in p for p in series.problems)


def test_differing_size_reported(shared_data, tmp_path):
    folder = copy_folder(shared_data / CROP_1, tmp_path / "series")
    uid = pydicom.dcmread(folder / "1.dcm", stop_before_pixels=True).SeriesInstanceUID
    intruder = pydicom.dcmread(next((shared_data / CROP_2).iterdir()))
    intruder.SeriesInstanceUID = uid
    intruder.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    intruder.ImagePositionPatient = [0, 0, 40]  # beyond the last slice (z = 32): no gap, only the size differs
    intruder.save_as(folder / "intruder.dcm")
    scan = discover_series(folder)
    assert len(scan.series) == 1
    series = scan.series[0]
    assert any(p.startswith("rows x columns differ") for p in series.problems)
    with pytest.raises(MedvolInputError):
        read_series(series)


def test_slice_in_another_plane_is_its_own_volume(shared_data, tmp_path):
    folder = copy_folder(shared_data / CROP_1, tmp_path / "series")
    uid = pydicom.dcmread(folder / "1.dcm", stop_before_pixels=True).SeriesInstanceUID
    localizer = pydicom.dcmread(folder / "1.dcm")
    localizer.SOPInstanceUID = pydicom.uid.generate_uid()
    localizer.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    localizer.save_as(folder / "localizer.dcm")
    scan = discover_series(folder)
    assert [(s.volume_id, len(s.files)) for s in scan.series] == [(f"{uid}#axial", 32), (f"{uid}#sagittal", 1)]
    assert scan.series[0].problems == [] and scan.series[0].description == "HippoCrop (axial)"
    assert scan.series[1].shape == [35, 51, 1] and scan.series[1].description == "HippoCrop (sagittal)"


def test_slightly_rotated_slice_reported(shared_data, tmp_path):
    folder = copy_folder(shared_data / CROP_1, tmp_path / "series")
    tilted = pydicom.dcmread(folder / "5.dcm")
    tilted.ImageOrientationPatient = [1, 0, 0, 0, 0.999995, 0.003]  # 0.17 degrees: one volume, not parallel
    tilted.save_as(folder / "5.dcm")
    series = discover_series(folder).series[0]
    assert len(series.files) == 32 and series.irregular == ["orientation"]
    assert any("ImageOrientationPatient differs" in p and "5.dcm" in p for p in series.problems)


def write_copies(source: Path, target: Path, headers: list[dict]) -> list[list[Path]]:
    """One copy of the series in `source` per dict of header values, all under source's SeriesInstanceUID, in one
    folder: new SOPInstanceUIDs and InstanceNumbers, the pixel values of copy k divided by k + 1 (so volumes
    differ). A value that is a callable gets the slice's rank along z. Returns the files of each copy."""
    target.mkdir(parents=True, exist_ok=True)
    originals = sorted(source.iterdir(), key=lambda f: float(pydicom.dcmread(f).ImagePositionPatient[2]))
    written = []
    for copy, values in enumerate(headers):
        files = []
        for rank, original in enumerate(originals):
            dataset = pydicom.dcmread(original)
            dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
            dataset.InstanceNumber = copy * len(originals) + rank + 1
            dataset.PixelData = (dataset.pixel_array // (copy + 1)).astype(dataset.pixel_array.dtype).tobytes()
            for keyword, value in values.items():
                setattr(dataset, keyword, value(rank) if callable(value) else value)
            path = target / f"c{copy}_{original.name}"
            dataset.save_as(path)
            files.append(path)
        written.append(files)
    return written


def assert_volume_matches_simpleitk(series, files: list[Path], scratch: Path) -> None:
    """medvol's volume against SimpleITK's ImageSeriesReader on exactly these files (in GDCM's order)."""
    reference_files, reference = simpleitk_series(copy_files(files, scratch))
    assert [Path(f).name for f in series.files] == [Path(f).name for f in reference_files]
    assert series.shape == list(reference.GetSize())
    np.testing.assert_allclose(series.spacing, reference.GetSpacing(), atol=1e-3)
    np.testing.assert_allclose(series.origin, reference.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(series.direction, reference.GetDirection(), atol=1e-3)
    array, _ = read_series(series)
    np.testing.assert_array_equal(array, sitk.GetArrayFromImage(reference).transpose(2, 1, 0).astype(np.float32))


def copy_files(files: list[Path], target: Path) -> Path:
    target.mkdir(parents=True)
    for file in files:
        shutil.copy(file, target / file.name)
    return target


def test_multi_echo_series_gives_one_volume_per_echo(shared_data, tmp_path):
    echoes = write_copies(shared_data / CROP_1, tmp_path / "series", [{"EchoNumbers": 1}, {"EchoNumbers": 2}])
    scan = discover_series(tmp_path / "series")
    uid = pydicom.dcmread(echoes[0][0], stop_before_pixels=True).SeriesInstanceUID
    assert [s.volume_id for s in scan.series] == [f"{uid}#echo1", f"{uid}#echo2"]
    assert [s.description for s in scan.series] == ["HippoCrop (echo 1)", "HippoCrop (echo 2)"]
    assert [s.split_by for s in scan.series] == [{"EchoNumbers": "1"}, {"EchoNumbers": "2"}]
    for number, (series, files) in enumerate(zip(scan.series, echoes)):
        assert series.shape[2] == 32 and series.spacing[2] == pytest.approx(1.0)  # not 64 slices 0.5 mm apart
        assert series.problems == [] and series.irregular == []
        assert sorted(series.files) == sorted(str(f) for f in files)
        assert_volume_matches_simpleitk(series, files, tmp_path / f"reference{number}")
    first, second = (read_series(s)[0] for s in scan.series)
    np.testing.assert_array_equal(first // 2, second)
    assert select_series(scan, "HippoCrop (echo 2)") is scan.series[1]
    assert select_series(scan, f"{uid}#echo1") is scan.series[0]
    with pytest.raises(MedvolInputError, match="holds 2 volumes, choose one by its id: .*#echo1"):
        select_series(scan, uid)


def test_4d_series_gives_one_volume_per_time_point(shared_data, tmp_path):
    times = [{"TemporalPositionIdentifier": t, "AcquisitionNumber": 1} for t in (1, 2, 3)]
    copies = write_copies(shared_data / CROP_1, tmp_path / "series", times)
    scan = discover_series(tmp_path / "series")
    assert [s.volume_id.split("#", 1)[1] for s in scan.series] == ["t1", "t2", "t3"]
    assert [s.description for s in scan.series] == [f"HippoCrop (time point {t})" for t in (1, 2, 3)]
    for series, files in zip(scan.series, copies):
        assert series.shape == [35, 51, 32]
        assert series.problems == [] and sorted(series.files) == sorted(str(f) for f in files)
    assert_volume_matches_simpleitk(scan.series[2], copies[2], tmp_path / "reference")


def test_echoes_of_a_4d_series_and_magnitude_phase_split_together(shared_data, tmp_path):
    headers = [{"EchoNumbers": e, "TemporalPositionIdentifier": t} for t in (1, 2) for e in (1, 2)]
    headers += [{"EchoNumbers": 1, "TemporalPositionIdentifier": 1, "ImageType": ["ORIGINAL", "PRIMARY", "P"]}]
    for values in headers[:4]:
        values["ImageType"] = ["ORIGINAL", "PRIMARY", "M"]
    write_copies(shared_data / CROP_1, tmp_path / "series", headers)
    scan = discover_series(tmp_path / "series")
    assert sorted(s.volume_id.split("#", 1)[1] for s in scan.series) == [
        "type-M#echo1#t1", "type-M#echo1#t2", "type-M#echo2#t1", "type-M#echo2#t2", "type-P"]
    assert all(s.shape[2] == 32 and not s.problems for s in scan.series)


@pytest.mark.parametrize("numbering", ["per slice", "per slab"])
def test_acquisition_number_that_varies_inside_a_volume_does_not_split_it(shared_data, tmp_path, numbering):
    number = (lambda rank: rank + 1) if numbering == "per slice" else (lambda rank: 1 + rank // 16)
    write_copies(shared_data / CROP_1, tmp_path / "one", [{"AcquisitionNumber": number}])
    scan = discover_series(tmp_path / "one")
    assert len(scan.series) == 1 and scan.series[0].shape[2] == 32 and scan.series[0].problems == []
    # with two echoes: two volumes of 32, not 64 one-slice volumes
    echoes = [{"AcquisitionNumber": number, "EchoNumbers": e} for e in (1, 2)]
    write_copies(shared_data / CROP_1, tmp_path / "two", echoes)
    scan = discover_series(tmp_path / "two")
    assert [len(s.files) for s in scan.series] == [32, 32] and all(not s.problems for s in scan.series)


def test_time_points_that_do_not_cover_the_same_slices_stay_together_and_are_reported(shared_data, tmp_path):
    times = [{"TemporalPositionIdentifier": t} for t in (1, 2)]
    copies = write_copies(shared_data / CROP_1, tmp_path / "series", times)
    copies[1][-1].unlink()  # the second time point lost its top slice: the key no longer separates whole volumes
    scan = discover_series(tmp_path / "series")
    assert len(scan.series) == 1 and len(scan.series[0].files) == 63
    assert scan.series[0].irregular == ["duplicate"]
    assert sum(p.startswith("duplicate slice position") for p in scan.series[0].problems) == 31


def test_irregular_kinds_and_reason(shared_data):
    series = discover_series(shared_data / "dicom/ct_tiny").series[0]
    assert series.irregular == ["gap"]
    reason = irregular_reason(series)
    assert reason == ("series Routine Brain: not used, irregular geometry (missing slices): pass "
                      "--accept-irregular-dicom gap to use it")
    assert any(p.startswith("missing slices: 161 missing") for p in series.problems)
    assert irregular_reason(series, parse_irregular_kinds("gap")) is None
    assert irregular_reason(series, parse_irregular_kinds("all")) is None
    assert irregular_reason(series, parse_irregular_kinds("spacing,tilt")) is not None
    with pytest.raises(MedvolInputError, match="unknown kind gaps: choose from gap, spacing, tilt"):
        parse_irregular_kinds("gaps")


@pytest.mark.parametrize(
    "name, shape",
    [
        ("ct_tiny/7106", [16, 16, 1]),  # SliceThickness only: ITK's z spacing is 1
        ("cxr_single/test2.dcm", [1024, 1024, 1]),  # no geometry at all
        ("CT_small.dcm", [128, 128, 1]),  # SpacingBetweenSlices 5
        ("MR_small.dcm", [64, 64, 1]),
    ],
)
def test_single_file_series_matches_simpleitk(shared_data, name, shape):
    path = shared_data / "dicom" / name if "/" in name else pydicom_file(name)
    series = discover_series(path).series[0]
    assert series.shape == shape
    assert not any("single-file" in p for p in series.problems)  # a 2D image is not a problem: its shape says 2D
    reference = sitk.ReadImage(series.files[0])
    np.testing.assert_allclose(series.origin, reference.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(series.spacing, reference.GetSpacing(), atol=1e-3)
    np.testing.assert_allclose(series.direction, reference.GetDirection(), atol=1e-3)
    array, _ = read_series(series)
    np.testing.assert_array_equal(array, sitk.GetArrayFromImage(reference).transpose(2, 1, 0).astype(np.float32))


def test_multi_frame_reported(shared_data, tmp_path):
    source = [pydicom.dcmread(f) for f in discover_series(shared_data / "dicom/ct_tiny").series[0].files]
    frames = np.stack([d.pixel_array for d in source])
    multi = source[0].copy()
    multi.NumberOfFrames = len(frames)
    multi.PixelData = frames.tobytes()
    multi.save_as(tmp_path / "multi.dcm")
    series = discover_series(tmp_path).series[0]
    assert series.shape == [16, 16, 4]
    assert any(p.startswith("multi-frame file") for p in series.problems)


def test_wrong_header_radiographs_reported(shared_data):
    scan = discover_series(shared_data / "dicom/cxr_single")
    assert sum(len(s.files) for s in scan.series) == 6 and not scan.skipped
    problems = " | ".join(p for s in scan.series for p in s.problems)
    assert "test5.dcm: Modality CT is not credible" in problems
    assert "RescaleIntercept" in problems and "8-bit pixels" in problems
    assert "BodyPartExamined differs" in problems and "RIBCAGE (test4.dcm)" in problems
    assert "Modality differs" in problems and "CT (test5.dcm)" in problems
    clean = [s for s in scan.series if len(s.files) == 1]
    assert all("not credible" not in p and "differs" not in p for s in clean for p in s.problems)


@pytest.mark.filterwarnings(NVIMGCODEC_WARNING)
def test_monai_loadimage_reader(shared_data):
    folder = shared_data / "dicom/study_mixed_series/37830-T2reg-78532"
    image = LoadImage(reader=DicomSeriesReader(), image_only=True)(str(folder))
    series = discover_series(folder).series[0]
    assert isinstance(image, MetaTensor) and list(image.shape) == series.shape
    np.testing.assert_allclose(image.affine.numpy(), series.affine_ras, atol=1e-6)
    np.testing.assert_allclose(image.meta["spacing"], series.spacing)
    assert image.meta["problems"] == [] and image.meta["series_description"] == "T2_reg"
    _, reference = simpleitk_series(folder)
    expected = torch.as_tensor(sitk.GetArrayFromImage(reference).transpose(2, 1, 0).astype(np.float32))
    assert torch.equal(image.as_tensor(), expected)


@pytest.mark.filterwarnings(NVIMGCODEC_WARNING)
def test_monai_reader_refuses_several_series(shared_data):
    study = str(shared_data / "dicom/study_mixed_series")
    with pytest.raises(MedvolInputError, match="5 series found"):  # a reader given at call time raises as is
        LoadImage(image_only=True)(study, reader=DicomSeriesReader())
    with pytest.raises(RuntimeError, match="5 series found"):  # LoadImage wraps its registered readers' errors
        LoadImage(reader=DicomSeriesReader(), image_only=True)(study)
    image = LoadImage(reader=DicomSeriesReader(series="HippoCrop"), image_only=True)(
        str(shared_data / "dicom/study_mixed_series")
    )
    assert list(image.shape) == [34, 50, 40]


def test_missing_path_raises(tmp_path):
    with pytest.raises(MedvolInputError, match="no such file or folder"):
        discover_series(tmp_path / "absent")


def cut(source: Path, target: Path, keep: int) -> Path:
    target.write_bytes(source.read_bytes()[:keep])
    return target


TEST_CASE_SR = ["reportsi.dcm", None, "no pixel data (Basic Text SR Storage): not an image"]
TEST_CASE_RT_PLAN = ["rtplan.dcm", None, "no pixel data (RT Plan Storage): not an image"]
TEST_CASE_TRUNCATED_NATIVE = ["MR_truncated.dcm", None, "truncated: pixel data declares 8192 bytes but the file holds"]
TEST_CASE_CUT_IN_RLE_FRAGMENT = ["MR_small_RLE.dcm", 2516, "truncated or damaged"]
TEST_CASE_CUT_BEFORE_PIXELS = ["MR_small.dcm", 700, "truncated: the header declares an image (MR Image Storage)"]


@pytest.mark.parametrize(
    "name, keep, reason",
    [
        TEST_CASE_SR,
        TEST_CASE_RT_PLAN,
        TEST_CASE_TRUNCATED_NATIVE,
        TEST_CASE_CUT_IN_RLE_FRAGMENT,
        TEST_CASE_CUT_BEFORE_PIXELS,
    ],
)
def test_unusable_files_are_skipped_with_reason(tmp_path, name, keep, reason):
    path = pydicom_file(name) if keep is None else cut(pydicom_file(name), tmp_path / name, keep)
    scan = discover_series(path)
    assert scan.series == [] and len(scan.records) == 1
    assert scan.records[0].status == "skipped" and scan.records[0].reason.startswith(reason), scan.records[0].reason


def test_compressed_series_decoded_by_gdcm():
    series = discover_series(pydicom_file("MR_small_RLE.dcm")).series[0]
    array, _ = read_series(series)
    expected = pydicom.dcmread(pydicom_file("MR_small.dcm")).pixel_array.T.astype(np.float32)
    np.testing.assert_array_equal(array[..., 0], expected)


@pytest.mark.parametrize(
    "name, shape, photometric",
    [("SC_rgb_rle_2frame.dcm", [100, 100, 2], "RGB"), ("examples_palette.dcm", [800, 350, 1], "PALETTE COLOR")],
)
def test_colour_dicom_to_greyscale(name, shape, photometric):
    series = discover_series(pydicom_file(name)).series[0]
    assert series.shape == shape and any(f"colour pixel data ({photometric})" in p for p in series.problems)
    array, _ = read_series(series)
    dataset = pydicom.dcmread(series.files[0])
    rgb = sitk.GetArrayFromImage(sitk.ReadImage(series.files[0])).reshape(shape[2], shape[1], shape[0], 3)
    expected = (rgb.astype(np.float32) * np.asarray([0.2989, 0.5870, 0.1140], np.float32)).sum(-1).transpose(2, 1, 0)
    assert dataset.PhotometricInterpretation == photometric
    np.testing.assert_allclose(array, expected, rtol=1e-6)


@pytest.mark.filterwarnings(NVIMGCODEC_WARNING)
def test_synthetic_export_is_marked_and_has_no_problem(shared_data, tmp_path):
    from medvol.io.writers import write_synthetic_dicom_series

    volume = np.random.default_rng(0).normal(size=(16, 12, 6))
    export = write_synthetic_dicom_series(volume, tmp_path / "synthetic", spacing=(0.9, 1.1, 2.0), modality="MR")
    scan = discover_series(tmp_path)  # the series folder and its <folder>.json sidecar
    assert [s.uid for s in scan.series] == [export.series_instance_uid]
    series = scan.series[0]
    assert series.synthetic and series.problems == [] and series.shape == [16, 12, 6]
    assert [(Path(r.path).name, r.reason) for r in scan.skipped] == [("synthetic.json", "not DICOM (JSON: a sidecar or datalist)")]
    meta = LoadImage(reader=DicomSeriesReader(), image_only=True)(str(export.directory)).meta
    assert meta["synthetic"] is True
    real = discover_series(shared_data / "dicom/study_mixed_series").series
    assert not any(s.synthetic for s in real) and synthetic_series_warning(real) is None
    warning = synthetic_series_warning(real + [series])
    assert warning.startswith("1 of 6 DICOM series are marked synthetic (Synthetic Data (0008,001C) YES")
    assert "SYNTHETIC" in warning and '"synthetic": true' in warning


def test_series_mixing_synthetic_and_real_files_reported(shared_data, tmp_path):
    folder = copy_folder(shared_data / "dicom/ct_tiny", tmp_path / "ct")
    marked = sorted(p for p in folder.iterdir() if p.is_file())[0]
    dataset = pydicom.dcmread(marked)
    dataset.SyntheticData = "YES"
    dataset.save_as(marked)
    series = discover_series(folder).series[0]
    assert series.synthetic  # one synthetic file is enough to keep the series away from real data
    assert any(p.startswith("SyntheticData differs between files of one series") for p in series.problems)


@pytest.mark.parametrize("kind, position, problem", [
    ("tilt", lambda rank: [0.1 * rank, 0, rank + 1], "slice positions advance 5.71 degrees off the slice normal"),
    ("spacing", lambda rank: [0, 0, rank + 1 + (0.4 if rank == 10 else 0)], "non-uniform slice spacing: intervals"),
    ("gap", lambda rank: [0, 0, rank + 1 + (1 if rank >= 10 else 0)], "missing slices: 1 missing"),
])
def test_irregular_stacks_are_named_by_kind(shared_data, tmp_path, kind, position, problem):
    write_copies(shared_data / CROP_1, tmp_path / "series", [{"ImagePositionPatient": position}])
    series = discover_series(tmp_path / "series").series[0]
    assert series.irregular == [kind] and len(series.problems) == 1 and series.problems[0].startswith(problem)
    assert irregular_reason(series).endswith(f"pass --accept-irregular-dicom {kind} to use it")
    assert irregular_reason(series, [kind]) is None
