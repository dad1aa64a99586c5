"""Synthetic NIfTI and DICOM export: geometry that SimpleITK and nibabel read back, and no source identity."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import nibabel
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, SecondaryCaptureImageStorage, UID

from medvol.errors import MedvolInputError
from medvol.io.geometry import affine_ras_from_geometry
from medvol.io.writers import (
    SYNTHETIC_MARK,
    SyntheticProvenance,
    encode_hu,
    encode_int16,
    encode_uint16,
    identifying_tags_in,
    identifying_values,
    lps_geometry_from_affine_ras,
    write_synthetic_dicom_series,
    write_synthetic_nifti,
)

OBLIQUE_SERIES = Path("dicom/study_mixed_series/11-T1post-18670")
PROVENANCE = SyntheticProvenance(
    run="/runs/wgan_gp_3d", checkpoint="/runs/wgan_gp_3d/checkpoints/checkpoint_000200.pt", seed=7, family="wgan_gp"
)
# An axis-aligned geometry with x, y and z spacings and sizes all different, so a swapped PixelSpacing order or
# transposed slice shows up.
AXIS_ALIGNED = {"spacing": (0.8, 1.3, 2.5), "origin": (-12.0, 30.5, 7.25), "direction": np.eye(3).ravel()}


def read_series(folder: Path) -> tuple[sitk.Image, list[str]]:
    reader = sitk.ImageSeriesReader()
    series_ids = reader.GetGDCMSeriesIDs(str(folder))
    files = reader.GetGDCMSeriesFileNames(str(folder), series_ids[0])
    reader.SetFileNames(files)
    return reader.Execute(), list(series_ids)


def as_xyz(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image).T


def real_world_values(stored: np.ndarray, header: Dataset) -> np.ndarray:
    """Stored integers of an MR or SC export mapped back to the given intensities by its Real World Value Mapping."""
    mapping = header.RealWorldValueMappingSequence[0]
    assert (mapping.RealWorldValueFirstValueMapped, mapping.RealWorldValueLastValueMapped) == (0, 65535)
    assert mapping.MeasurementUnitsCodeSequence[0].CodingSchemeDesignator == "UCUM"
    return stored * mapping.RealWorldValueSlope + mapping.RealWorldValueIntercept


def assert_geometry(image: sitk.Image, spacing, origin, direction, atol: float = 1e-3) -> None:
    np.testing.assert_allclose(image.GetSpacing(), spacing, atol=atol)
    np.testing.assert_allclose(image.GetOrigin(), origin, atol=atol)
    np.testing.assert_allclose(image.GetDirection(), np.asarray(direction).ravel(), atol=atol)


@pytest.fixture(scope="module")
def oblique(shared_data):
    """The real oblique T1 series: its voxels [x, y, z] and SimpleITK geometry (LPS)."""
    image, _ = read_series(shared_data / OBLIQUE_SERIES)
    assert abs(image.GetDirection()[5]) > 0.1, "the reference series should be tilted"
    return {
        "array": as_xyz(image),
        "spacing": image.GetSpacing(),
        "origin": image.GetOrigin(),
        "direction": image.GetDirection(),
    }


@pytest.fixture(scope="module")
def source_datasets(shared_data):
    """Every real DICOM file of the shared data (headers only): the inputs whose identity must never leak."""
    files = [path for path in sorted((shared_data / "dicom").rglob("*")) if path.is_file()]
    return [pydicom.dcmread(path, stop_before_pixels=True, force=True) for path in files]


@pytest.fixture(scope="module")
def source_identifiers(source_datasets):
    return identifying_values(source_datasets)


# ------------------------------------------------------------------------------------------------- DICOM geometry

TEST_CASE_MR_INTEGER = ["MR", lambda a: a, MRImageStorage]
TEST_CASE_MR_FLOAT = ["MR", lambda a: a.astype(np.float64) / 977.3 - 0.25, MRImageStorage]
TEST_CASE_CT_FLOAT_HU = ["CT", lambda a: a.astype(np.float32) * 0.731 - 1024.25, CTImageStorage]
TEST_CASE_OT_FLOAT = ["OT", lambda a: np.sqrt(a.astype(np.float64)) / 7.0, SecondaryCaptureImageStorage]


@pytest.mark.parametrize(
    "modality, intensities, sop_class", [TEST_CASE_MR_INTEGER, TEST_CASE_MR_FLOAT, TEST_CASE_CT_FLOAT_HU, TEST_CASE_OT_FLOAT]
)
def test_oblique_series_round_trip(oblique, tmp_path, modality, intensities, sop_class):
    volume = intensities(oblique["array"])
    export = write_synthetic_dicom_series(
        volume, tmp_path / "series", spacing=oblique["spacing"], origin=oblique["origin"],
        direction=oblique["direction"], modality=modality, label="lesion", provenance=PROVENANCE,
    )  # fmt: skip

    image, series_ids = read_series(tmp_path / "series")
    assert series_ids == [export.series_instance_uid]
    assert len(export.files) == volume.shape[2] == image.GetSize()[2]
    assert_geometry(image, oblique["spacing"], oblique["origin"], oblique["direction"])
    decoded = as_xyz(image).astype(np.float64)
    assert decoded.shape == volume.shape
    first = pydicom.dcmread(export.files[0])
    assert first.SOPClassUID == sop_class
    if modality != "CT":  # stored integers are what viewers show; the Real World Value Mapping leads back
        assert "RescaleSlope" not in first and image.GetPixelID() == sitk.sitkUInt16
        decoded = real_world_values(decoded, first)
    np.testing.assert_allclose(decoded, volume, rtol=0, atol=export.encoding.max_error + 1e-6)
    if intensities is TEST_CASE_MR_INTEGER[1]:  # integer MR intensities are stored losslessly, as they are
        assert export.encoding.step == 0 and np.array_equal(as_xyz(image), volume)
    if intensities is TEST_CASE_MR_FLOAT[1]:  # float MR intensities use the whole uint16 range
        assert as_xyz(image).min() == 0 and as_xyz(image).max() == 65535
        assert export.encoding.step == pytest.approx((volume.max() - volume.min()) / 65535)


def test_axis_aligned_series_header(tmp_path):
    rng = np.random.default_rng(0)
    volume = rng.integers(-1000, 2000, size=(12, 9, 5)).astype(np.float32)
    export = write_synthetic_dicom_series(
        volume, tmp_path / "ct", modality="CT", label="normal", provenance=PROVENANCE,
        study_datetime=datetime(2026, 3, 14, 9, 26, 53, tzinfo=timezone.utc), **AXIS_ALIGNED,
    )  # fmt: skip

    image, _ = read_series(tmp_path / "ct")
    assert_geometry(image, AXIS_ALIGNED["spacing"], AXIS_ALIGNED["origin"], AXIS_ALIGNED["direction"], atol=1e-6)
    np.testing.assert_array_equal(as_xyz(image), volume)

    datasets = [pydicom.dcmread(path) for path in export.files]  # no force: real Part 10 files
    sx, sy, sz = AXIS_ALIGNED["spacing"]
    for k, ds in enumerate(datasets):
        assert ds.preamble is not None and Path(export.files[k]).read_bytes()[128:132] == b"DICM"
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID == CTImageStorage
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.InstanceNumber == k + 1
        assert (ds.Rows, ds.Columns) == (9, 12)
        np.testing.assert_allclose([float(v) for v in ds.PixelSpacing], [sy, sx])  # row spacing, column spacing
        assert float(ds.SliceThickness) == float(ds.SpacingBetweenSlices) == sz
        np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], np.add(AXIS_ALIGNED["origin"], [0, 0, k * sz]))
        np.testing.assert_allclose([float(v) for v in ds.ImageOrientationPatient], [1, 0, 0, 0, 1, 0])
        np.testing.assert_array_equal(ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept), volume[:, :, k].T)
    first = datasets[0]
    assert list(first.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert first.SeriesDescription == f"{SYNTHETIC_MARK} normal"
    assert (first.BurnedInAnnotation, first.PatientIdentityRemoved, first.RescaleType) == ("NO", "YES", "HU")
    assert first.DeidentificationMethod
    assert first.PatientName.family_name == SYNTHETIC_MARK and first.PatientID == export.patient_id.upper()
    assert first.PatientID.startswith("SYN-")
    assert (first.StudyDate, first.StudyTime, first.TimezoneOffsetFromUTC) == ("20260314", "092653", "+0000")
    assert first.StudyID.startswith("SYN") and first.PatientPosition == "HFS" and first.Laterality == ""
    for empty in ("PatientBirthDate", "PatientSex", "ReferringPhysicianName", "AccessionNumber"):
        assert first.get(empty) in ("", None), empty
    for absent in ("InstitutionName", "SeriesDate", "AcquisitionDate", "ContentDate", "ContentTime", "DeviceSerialNumber"):
        assert absent not in first, absent
    assert "seed=7" in first.ImageComments and "label=normal" in first.ImageComments
    # provenance without absolute paths: the run's folder name and the checkpoint relative to it
    assert "run=wgan_gp_3d; checkpoint=checkpoints/checkpoint_000200.pt" in first.ImageComments
    assert first.DerivationDescription == first.ImageComments and "/runs" not in first.ImageComments
    uids = {(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID) for ds in datasets}
    assert uids == {(export.study_instance_uid, export.series_instance_uid, export.frame_of_reference_uid)}
    assert len({ds.SOPInstanceUID for ds in datasets}) == len(datasets)
    assert all(UID(uid).is_valid for uid in next(iter(uids)))


def test_single_frame_2d(tmp_path):
    image_2d = np.random.default_rng(1).normal(100.0, 30.0, size=(20, 14))
    export = write_synthetic_dicom_series(image_2d, tmp_path / "cxr", spacing=(0.3, 0.45), modality="DX", label="Effusion", provenance=PROVENANCE)

    assert len(export.files) == 1 and export.sop_class_uid == SecondaryCaptureImageStorage
    ds = pydicom.dcmread(export.files[0])
    assert (ds.Modality, ds.ConversionType, ds.SOPClassUID) == ("DX", "SYN", SecondaryCaptureImageStorage)
    assert (ds.Rows, ds.Columns) == (14, 20) and "Effusion" in ds.SeriesDescription
    for not_in_secondary_capture in ("ImagePositionPatient", "ImageOrientationPatient", "FrameOfReferenceUID", "SliceThickness"):
        assert not_in_secondary_capture not in ds, not_in_secondary_capture
    assert ds.PatientOrientation == "" and "PatientPosition" not in ds
    image = sitk.ReadImage(str(export.files[0]))
    assert image.GetSize()[:2] == (20, 14)
    np.testing.assert_allclose(image.GetSpacing()[:2], (0.3, 0.45), atol=1e-6)
    np.testing.assert_allclose(real_world_values(as_xyz(image)[..., 0], ds), image_2d, atol=export.encoding.max_error + 1e-9)
    assert export.encoding.max_error == pytest.approx(np.ptp(image_2d) / 65535 / 2)


def test_2d_mr_slice_keeps_its_plane(tmp_path):
    rotation = [np.cos(0.3), -np.sin(0.3), np.sin(0.3), np.cos(0.3)]
    image_2d = np.random.default_rng(4).uniform(-1.0, 3.0, size=(12, 10))
    export = write_synthetic_dicom_series(image_2d, tmp_path / "slice", spacing=(0.5, 0.8), origin=(5.0, -3.0, 12.0), direction=rotation)

    assert export.sop_class_uid == MRImageStorage and len(export.files) == 1
    ds = pydicom.dcmread(export.files[0])
    np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], [5.0, -3.0, 12.0])
    np.testing.assert_allclose([float(v) for v in ds.ImageOrientationPatient], [np.cos(0.3), np.sin(0.3), 0, -np.sin(0.3), np.cos(0.3), 0], atol=1e-9)
    assert ds.SliceThickness in ("", None) and "SpacingBetweenSlices" not in ds and ds.PatientPosition == "HFS"
    np.testing.assert_allclose(real_world_values(ds.pixel_array.T, ds), image_2d, atol=export.encoding.max_error + 1e-12)
    assert export.encoding.max_error == pytest.approx(np.ptp(image_2d) / 65535 / 2)


def test_series_can_share_a_synthetic_study(tmp_path):
    started = datetime.now(timezone.utc).replace(microsecond=0)
    first = write_synthetic_dicom_series(np.zeros((4, 4, 2)), tmp_path / "a", spacing=(1, 1, 1), series_description="phantom")
    first_ds = pydicom.dcmread(first.files[0])
    study_datetime = datetime.strptime(first_ds.StudyDate + first_ds.StudyTime, "%Y%m%d%H%M%S").replace(tzinfo=timezone.utc)
    assert started <= study_datetime <= datetime.now(timezone.utc)  # the generation time, in UTC
    second = write_synthetic_dicom_series(
        np.ones((4, 4, 2)), tmp_path / "b", spacing=(1, 1, 1), study_instance_uid=first.study_instance_uid,
        patient_id=first.patient_id, series_number=2, study_datetime=study_datetime,
    )  # fmt: skip
    assert second.study_instance_uid == first.study_instance_uid and second.series_instance_uid != first.series_instance_uid
    assert first_ds.SeriesDescription == f"{SYNTHETIC_MARK} phantom"
    second_ds = pydicom.dcmread(second.files[0])
    study = ("StudyInstanceUID", "StudyID", "StudyDate", "StudyTime", "PatientID")
    assert [first_ds.get(k) for k in study] == [second_ds.get(k) for k in study]
    for folder in ("a", "b"):
        assert len(read_series(tmp_path / folder)[1]) == 1


TEST_CASE_NOT_EMPTY = [lambda folder: (folder / "old.dcm").write_bytes(b"x"), np.zeros((4, 4, 2)), MedvolInputError]
TEST_CASE_NAN = [lambda folder: None, np.full((4, 4, 2), np.nan), MedvolInputError]
TEST_CASE_4D = [lambda folder: None, np.zeros((1, 4, 4, 2)), ValueError]


@pytest.mark.parametrize("prepare, volume, error", [TEST_CASE_NOT_EMPTY, TEST_CASE_NAN, TEST_CASE_4D])
def test_dicom_writer_rejects_bad_input(tmp_path, prepare, volume, error):
    folder = tmp_path / "out"
    folder.mkdir()
    prepare(folder)
    with pytest.raises(error):
        write_synthetic_dicom_series(volume, folder, spacing=(1.0,) * volume.ndim)


def test_dicom_writer_rejects_spacing_of_wrong_length(tmp_path):
    with pytest.raises(ValueError, match="spacing"):
        write_synthetic_dicom_series(np.zeros((4, 4, 2)), tmp_path / "out", spacing=(1.0, 1.0))


# ------------------------------------------------------------------------------------------------- identity


def test_exported_series_holds_no_source_identifier(oblique, tmp_path, source_datasets, source_identifiers):
    # The identifiers of the real inputs were collected: names, ids, dates, times and instance UIDs of every file.
    t1_source = next(ds for ds in source_datasets if "T1post" in str(ds.get("SeriesDescription", "")))
    for identifying in (str(t1_source.PatientName), t1_source.PatientID, t1_source.StudyInstanceUID,
                        t1_source.SeriesInstanceUID, t1_source.FrameOfReferenceUID, t1_source.StudyDate):  # fmt: skip
        assert identifying in source_identifiers
    assert all(ds.SOPInstanceUID in source_identifiers for ds in source_datasets if "SOPInstanceUID" in ds)

    # a fixed generation time: a source time of day equal to the clock's would be chance, not a leak
    generated = datetime(2031, 5, 17, 14, 22, 9, tzinfo=timezone.utc)
    assert not {generated.strftime("%Y%m%d"), generated.strftime("%H%M%S")} & set(source_identifiers)
    export = write_synthetic_dicom_series(
        oblique["array"][:64, :64], tmp_path / "series", spacing=oblique["spacing"], origin=oblique["origin"],
        direction=oblique["direction"], modality=t1_source.Modality, label="lesion", provenance=PROVENANCE,
        study_datetime=generated,
    )  # fmt: skip
    long_identifiers = [value.encode() for value in source_identifiers if len(value) >= 6]
    for path in export.files:
        exported = pydicom.dcmread(path)
        assert identifying_tags_in(exported, source_identifiers) == []
        raw = path.read_bytes()  # also outside any element the parser knows: preamble, private data, padding
        # the UIDs the writer draws hold random digits, so a 6-8 digit source date or time turns up inside one by
        # chance (seen once in CI): inside UIDs only identifiers that are not short digit strings are looked for
        uids = {str(e.value) for ds in (exported, exported.file_meta) for e in ds.iterall() if e.VR == "UI"}
        by_chance = [value for value in long_identifiers if value.isdigit() and len(value) <= 8]
        assert [value for value in long_identifiers if value not in by_chance and any(value in u.encode() for u in uids)] == []
        for uid in uids:
            raw = raw.replace(uid.encode(), b"")
        assert [value for value in long_identifiers if value in raw] == []


def _planted(source: Dataset, where: str) -> tuple[Dataset, str]:
    """A clean synthetic-looking dataset with one identifying value of ``source`` planted at ``where``."""
    ds = Dataset()
    ds.PatientName = SYNTHETIC_MARK
    ds.ImageComments = "synthetic"
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    if where == "patient_name":
        ds.PatientName = source.PatientName
        return ds, str(source.PatientName)
    if where == "nested_uid":
        item = Dataset()
        item.ReferencedSOPInstanceUID = source.SOPInstanceUID
        ds.ReferencedImageSequence = Sequence([item])
        return ds, source.SOPInstanceUID
    if where == "date":
        ds.ContentDate = source.StudyDate
        return ds, source.StudyDate
    if where == "id_inside_text":
        ds.ImageComments = f"generated from the scan of {source.PatientID} in 2020"
        return ds, source.PatientID
    if where == "file_meta":
        ds.file_meta.MediaStorageSOPInstanceUID = source.SOPInstanceUID
        return ds, source.SOPInstanceUID
    raise AssertionError(where)


@pytest.mark.parametrize("where", ["patient_name", "nested_uid", "date", "id_inside_text", "file_meta"])
def test_identifying_tags_in_finds_planted_identifiers(source_datasets, where):
    t1_source = next(ds for ds in source_datasets if "T1post" in str(ds.get("SeriesDescription", "")))
    dataset, planted = _planted(t1_source, where)
    leaks = identifying_tags_in(dataset, source_datasets)
    assert planted in {leak.value for leak in leaks}, leaks
    if where == "nested_uid":
        assert any("[0]." in leak.location and "ReferencedSOPInstanceUID" in leak.location for leak in leaks)


def test_short_identifiers_match_whole_values_only():
    source = Dataset()
    source.StudyID = "1"
    source.PatientID = "AB12345"
    output = Dataset()
    output.SeriesDescription = "SYNTHETIC 1"  # "1" inside a longer value is not StudyID "1"
    output.OperatorsName = "1"
    output.ImageComments = "xxAB12345xx"
    leaks = identifying_tags_in(output, [source])
    assert sorted((leak.source, leak.value) for leak in leaks) == [("PatientID", "AB12345"), ("StudyID", "1")]


def test_uids_match_dotted_source_values_on_component_boundaries_only():
    source = Dataset()
    source.StudyTime = "010313"
    source.StudyInstanceUID = "1.2.840.99999.7"
    output = Dataset()
    output.SOPInstanceUID = "2.25.1234010313567"  # a source time inside random UID digits: chance, not a leak
    output.SeriesInstanceUID = "1.2.840.99999.7.5"  # the source study UID as a root: a leak
    output.ImageComments = "acquired 010313"  # a source time in free text: a leak
    leaks = identifying_tags_in(output, [source])
    assert sorted((leak.source, leak.value) for leak in leaks) == [
        ("StudyInstanceUID", "1.2.840.99999.7"),
        ("StudyTime", "010313"),
    ]


# ------------------------------------------------------------------------------------------------- NIfTI


def _geometry_case(name: str, oblique: dict | None):
    if name == "oblique":
        return oblique["array"][:40, :48, :6].astype(np.float32), oblique["spacing"], oblique["origin"], oblique["direction"]
    if name == "axis_aligned":
        volume = np.random.default_rng(2).normal(size=(12, 9, 5)).astype(np.float32)
        return volume, AXIS_ALIGNED["spacing"], AXIS_ALIGNED["origin"], AXIS_ALIGNED["direction"]
    rotation = [np.cos(0.3), -np.sin(0.3), np.sin(0.3), np.cos(0.3)]
    return np.random.default_rng(3).normal(size=(16, 11)).astype(np.float32), (0.4, 0.7), (5.0, -3.0), rotation


@pytest.mark.parametrize("case", ["oblique", "axis_aligned", "2d"])
@pytest.mark.parametrize("given", ["affine_ras", "lps"])
def test_nifti_geometry_and_marking(request, tmp_path, case, given):
    oblique = request.getfixturevalue("oblique") if case == "oblique" else None
    array, spacing, origin, direction = _geometry_case(case, oblique)
    affine = affine_ras_from_geometry(spacing, origin, np.ravel(direction))
    geometry = {"affine_ras": affine} if given == "affine_ras" else {"spacing": spacing, "origin": origin, "direction": direction}
    path = write_synthetic_nifti(array, tmp_path / "sample_0003.nii.gz", label="lesion", provenance=PROVENANCE.to_dict(), **geometry)

    loaded = nibabel.load(path)
    np.testing.assert_allclose(loaded.affine, affine, atol=1e-3)
    np.testing.assert_allclose(loaded.header.get_zooms(), spacing, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(loaded.dataobj), array)
    assert loaded.header["descrip"].tobytes().decode().startswith(f"{SYNTHETIC_MARK} label=lesion")
    assert loaded.header["intent_name"].tobytes().rstrip(b"\0").decode() == SYNTHETIC_MARK

    image = sitk.ReadImage(str(path))
    dims = array.ndim
    assert image.GetDimension() == dims
    origin_lps = np.append(origin, 0.0)[:3]
    direction_lps = np.asarray(direction, dtype=float).reshape(dims, dims)
    assert_geometry(image, spacing, origin_lps[:dims], direction_lps)
    np.testing.assert_array_equal(as_xyz(image), array)

    sidecar = json.loads((tmp_path / "sample_0003.json").read_text())
    assert sidecar["synthetic"] is True and sidecar["label"] == "lesion"
    assert sidecar["provenance"] == PROVENANCE.to_dict()
    np.testing.assert_allclose(sidecar["spacing"], spacing)


TILT = np.deg2rad(11.0)


@pytest.mark.parametrize(
    "spacing, origin, direction",
    [
        [(0.7, 0.8, 1.5), (10.0, -20.0, 5.0), [[0, -1, 0], [1, 0, 0], [0, 0, 1]]],
        [(1.0, 2.0, 3.0), (-97.2, -83.2, -11.4), [[1, 0, 0], [0, np.cos(TILT), -np.sin(TILT)], [0, np.sin(TILT), np.cos(TILT)]]],
    ],
)
def test_affine_conversion_matches_simpleitk_and_nibabel(tmp_path, spacing, origin, direction):
    direction = np.asarray(direction, dtype=float)
    image = sitk.GetImageFromArray(np.zeros((4, 5, 6), np.float32))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction.ravel().tolist())
    sitk.WriteImage(image, str(tmp_path / "itk.nii.gz"))

    affine = affine_ras_from_geometry(spacing, origin, direction.ravel())
    np.testing.assert_allclose(nibabel.load(tmp_path / "itk.nii.gz").affine, affine, atol=1e-4)
    spacing_back, origin_back, direction_back = lps_geometry_from_affine_ras(affine)
    np.testing.assert_allclose(spacing_back, spacing)
    np.testing.assert_allclose(origin_back, origin)
    np.testing.assert_allclose(direction_back, direction, atol=1e-12)


def test_nifti_accepts_monai_2d_affine(tmp_path):
    affine_2d = np.array([[-0.4, 0.0, 12.0], [0.0, -0.7, -3.0], [0.0, 0.0, 1.0]])  # RAS, as MONAI keeps for 2D
    path = write_synthetic_nifti(torch.ones(5, 6), tmp_path / "slice.nii", affine_ras=affine_2d)  # a generator's output
    image = sitk.ReadImage(str(path))
    assert_geometry(image, (0.4, 0.7), (-12.0, 3.0), np.eye(2), atol=1e-6)
    spacing, origin, direction = lps_geometry_from_affine_ras(affine_2d)
    np.testing.assert_allclose(spacing, [0.4, 0.7, 1.0])
    np.testing.assert_allclose(origin, [-12.0, 3.0, 0.0])
    np.testing.assert_allclose(direction, np.eye(3))


TEST_CASE_BAD_SUFFIX = ["out.img", {"spacing": (1.0, 1.0, 1.0)}, MedvolInputError]
TEST_CASE_BOTH_GEOMETRIES = ["out.nii", {"spacing": (1.0, 1.0, 1.0), "affine_ras": np.eye(4)}, ValueError]
TEST_CASE_NO_GEOMETRY = ["out.nii", {}, ValueError]


@pytest.mark.parametrize("name, geometry, error", [TEST_CASE_BAD_SUFFIX, TEST_CASE_BOTH_GEOMETRIES, TEST_CASE_NO_GEOMETRY])
def test_nifti_writer_rejects_bad_arguments(tmp_path, name, geometry, error):
    with pytest.raises(error):
        write_synthetic_nifti(np.zeros((3, 3, 3)), tmp_path / name, **geometry)
    assert not (tmp_path / name).exists()


# ------------------------------------------------------------------------------------------------- intensity encoding

TEST_CASE_HU_INTEGERS = [np.array([-1024.0, 0.0, 40.0, 3071.0]), 0.0]
TEST_CASE_UINT16_INTEGERS = [np.array([0.0, 1.0, 40000.0, 65535.0]), 0.0]
TEST_CASE_FLOAT_HU = [np.linspace(-1024.0, 3071.0, 1001), 4095.0 / 65000 / 2]
TEST_CASE_BEYOND_INT16 = [np.array([-1.0e6, 3.5, 2.0e6]), 3.0e6 / 65000 / 2]
TEST_CASE_CONSTANT = [np.full(5, 0.25), 0.0]


@pytest.mark.parametrize("values, worst_error", [TEST_CASE_HU_INTEGERS, TEST_CASE_UINT16_INTEGERS, TEST_CASE_FLOAT_HU, TEST_CASE_BEYOND_INT16, TEST_CASE_CONSTANT])
def test_encode_int16_is_faithful(values, worst_error):
    encoding = encode_int16(values)
    assert encoding.stored.dtype == np.int16
    # slope and intercept survive the 16-character DICOM DS string exactly as used for quantisation
    assert float(pydicom.valuerep.DSfloat(encoding.slope, auto_format=True)) == encoding.slope
    assert float(pydicom.valuerep.DSfloat(encoding.intercept, auto_format=True)) == encoding.intercept
    decoded = encoding.stored * encoding.slope + encoding.intercept
    error = np.abs(decoded - values).max()
    assert error <= encoding.max_error + 1e-9
    assert error <= worst_error * 1.001 + 1e-12


TEST_CASE_UINT16_AS_IS = [np.array([0.0, 7.0, 40000.0, 65535.0]), 0.0]
TEST_CASE_NEGATIVE_INTEGERS = [np.array([-300.0, 0.0, 1200.0]), 0.0]
TEST_CASE_FLOAT_MR = [np.linspace(-0.3, 1.7, 999), 2.0 / 65535 / 2]
TEST_CASE_WIDE_INTEGERS = [np.array([-1.0e6, 3.0, 2.0e6]), 3.0e6 / 65535 / 2]
TEST_CASE_HU_AS_IS = [np.array([-1024.0, -3.0, 40.0, 3071.0]), 0.0, False]
TEST_CASE_FRACTIONAL_HU = [np.linspace(-1024.0, 3071.0, 1001), 0.5, False]
TEST_CASE_NOT_HU = [np.array([-1.0e6, 3.5, 2.0e6]), 3.0e6 / 65000 / 2, True]


@pytest.mark.parametrize("values, worst_error, fallback", [TEST_CASE_HU_AS_IS, TEST_CASE_FRACTIONAL_HU, TEST_CASE_NOT_HU])
def test_encode_hu_the_usual_way(values, worst_error, fallback):
    encoding = encode_hu(values)
    assert encoding.stored.dtype == np.int16
    assert ((encoding.slope, encoding.intercept) == (1.0, -1024.0)) is not fallback
    error = np.abs(encoding.decode() - values).max()
    assert error <= encoding.max_error + 1e-9 and encoding.max_error == pytest.approx(worst_error, rel=0.01, abs=1e-12)


@pytest.mark.parametrize("values, worst_error", [TEST_CASE_UINT16_AS_IS, TEST_CASE_NEGATIVE_INTEGERS, TEST_CASE_FLOAT_MR, TEST_CASE_WIDE_INTEGERS, TEST_CASE_CONSTANT])
def test_encode_uint16_uses_the_whole_range(values, worst_error):
    encoding = encode_uint16(values)
    assert encoding.stored.dtype == np.uint16
    error = np.abs(encoding.decode() - values).max()
    assert error <= encoding.max_error + 1e-12 and encoding.max_error <= worst_error * (1 + 1e-9)
    if worst_error:  # not stored as is: the range spans every stored value
        assert (encoding.stored.min(), encoding.stored.max()) == (0, 65535) and encoding.step == encoding.slope
    else:
        assert encoding.step == 0 and encoding.slope == 1.0
    if values is TEST_CASE_UINT16_AS_IS[0]:
        np.testing.assert_array_equal(encoding.stored, values)


def test_provenance_requires_run_checkpoint_and_seed():
    with pytest.raises(ValueError, match="seed"):
        SyntheticProvenance.coerce({"run": "r", "checkpoint": "c"})
    coerced = SyntheticProvenance.coerce({"run": "r", "checkpoint": "c", "seed": "3", "intensity": "ct"})
    assert coerced.seed == 3 and coerced.extra == {"intensity": "ct"}
