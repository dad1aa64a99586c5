"""Synthetic DICOM checked by tools medvol does not control: dicom3tools' ``dciodvfy`` and dcmtk's ``dcmdump``/``dcm2pnm``.

Each export kind is written twice from the same array, as ``medvol sample`` would write it: a NIfTI sample (float32,
the reference) and a DICOM series. The tools come from the Debian packages ``dicom3tools`` and ``dcmtk`` (``.ci/run``
installs them); without them these tests skip with that reason.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import nibabel
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from PIL import Image
from pydicom.uid import CTImageStorage, MRImageStorage, SecondaryCaptureImageStorage

from medvol.io.geometry import affine_ras_from_geometry
from medvol.io.writers import SyntheticProvenance, write_synthetic_dicom_series, write_synthetic_nifti

DCIODVFY = shutil.which("dciodvfy")
DCMDUMP = shutil.which("dcmdump")
DCM2PNM = shutil.which("dcm2pnm")
needs_dciodvfy = pytest.mark.skipif(
    DCIODVFY is None, reason="dciodvfy is not installed (Debian package dicom3tools; .ci/run installs it)"
)
needs_dcmtk = pytest.mark.skipif(
    DCMDUMP is None or DCM2PNM is None, reason="dcmdump/dcm2pnm are not installed (Debian package dcmtk; .ci/run installs it)"
)

PROVENANCE = SyntheticProvenance(
    run="/home/someone/runs/wgan_gp_3d", checkpoint="/home/someone/runs/wgan_gp_3d/checkpoints/checkpoint_000200.pt",
    seed=3, family="wgan_gp", sample_index=0,
)  # fmt: skip
TILT = np.deg2rad(11.0)
OBLIQUE = np.array([[1, 0, 0], [0, np.cos(TILT), -np.sin(TILT)], [0, np.sin(TILT), np.cos(TILT)]])
IN_PLANE_ROTATION = np.array([[np.cos(TILT), -np.sin(TILT)], [np.sin(TILT), np.cos(TILT)]])


def _volume(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    """A smooth blob plus noise: structure a windowed rendering can get wrong (flips, transposes), float32."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    blob = np.exp(-sum((g - 0.3 * (i - 1)) ** 2 for i, g in enumerate(grids)) * 3)
    return (blob + 0.1 * rng.normal(size=shape)).astype(np.float32)


# name: modality, intensities in source units [x, y(, z)], spacing, origin, direction (LPS), expected SOP class
EXPORT_KINDS = {
    "mr_3d": ("MR", _volume(0, (16, 14, 12)) * 0.8 + 0.1, (0.9, 1.1, 2.0), (-12.0, 30.5, 7.25), OBLIQUE, MRImageStorage),
    "ct_3d": ("CT", _volume(1, (16, 14, 12)) * 900 - 700, (0.7, 0.7, 1.5), (5.0, -3.0, -40.0), np.eye(3), CTImageStorage),
    "sc_3d": ("OT", _volume(2, (16, 16, 16)) * 100, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3), SecondaryCaptureImageStorage),
    "mr_2d": ("MR", _volume(3, (16, 14)) * 0.8 + 0.1, (0.9, 1.1), (-12.0, 30.5), IN_PLANE_ROTATION, MRImageStorage),
    "ct_2d": ("CT", _volume(4, (16, 14)) * 900 - 700, (0.7, 0.7), (5.0, -3.0), np.eye(2), CTImageStorage),
    "sc_2d": ("DX", _volume(5, (16, 14)) * 200 + 20, (0.3, 0.45), None, None, SecondaryCaptureImageStorage),
}

# dciodvfy findings that are expected, each with its reason; any other warning or error fails the tests.
NEWER_THAN_VALIDATOR = re.compile(r"\(0x0008,0x001c\)")  # Synthetic Data: newer than the packaged dicom3tools
EXPLAINED_WARNINGS = [
    NEWER_THAN_VALIDATOR,
    # Laterality is Type 2C and unknown for a generated image: present and empty, which the validator questions
    re.compile(r"only permitted to be empty when actually unknown.*<Laterality>"),
    # the result of the unknown Synthetic Data attribute, and of the Image Plane attributes a 3D SC series keeps
    re.compile(r"this is a Standard Extended SOP Class"),
]
EXTENDED_3D_SECONDARY_CAPTURE = re.compile(
    r"not present in standard DICOM IOD - \(0x0020,0x(0032|0037|0052|1040)\)"  # positions, orientation, frame of reference
)


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict:
    """Every export kind written as NIfTI (the reference) and as DICOM from the same float32 array."""
    root = tmp_path_factory.mktemp("exports")
    written = {}
    for name, (modality, array, spacing, origin, direction, _) in EXPORT_KINDS.items():
        direction = None if direction is None else np.ravel(direction)
        geometry = {"spacing": spacing, "origin": origin, "direction": direction}
        nifti = write_synthetic_nifti(array, root / f"{name}.nii.gz", label="lesion", provenance=PROVENANCE, **geometry)
        export = write_synthetic_dicom_series(
            array, root / name, modality=modality, label="lesion", provenance=PROVENANCE, **geometry
        )  # fmt: skip
        written[name] = {"nifti": nifti, "export": export, "array": array}
    return written


def dciodvfy(path: Path) -> list[str]:
    """The validator's findings for one file: its lines that start with Error or Warning."""
    result = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
    lines = (result.stdout + result.stderr).splitlines()
    return [line.strip() for line in lines if line.startswith(("Error", "Warning"))]


def dcmdump(*args: str) -> str:
    result = subprocess.run([DCMDUMP, *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert not [line for line in result.stderr.splitlines() if line.startswith(("E:", "F:"))], result.stderr
    return result.stdout


def dcmdump_values(path: Path, *tags: str) -> dict[str, str]:
    """Values of ``tags`` (``gggg,eeee``) as dcmdump prints them (full length)."""
    output = dcmdump("+L", *[arg for tag in tags for arg in ("+P", tag)], str(path))
    values = {}
    for line in output.splitlines():
        match = re.match(r"\s*\(([0-9a-f]{4},[0-9a-f]{4})\) \w\w (.*?)\s+#", line)
        if match:
            values[match.group(1)] = match.group(2).strip("[]")
    return values


def linear_voi(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM's linear VOI LUT function (PS3.3 C.11.2.1.2.1) onto 8 bits, before rounding."""
    scaled = ((values - (center - 0.5)) / (width - 1) + 0.5) * 255
    scaled = np.where(values <= center - 0.5 - (width - 1) / 2, 0.0, scaled)
    return np.where(values > center - 0.5 + (width - 1) / 2, 255.0, scaled)


@needs_dciodvfy
@pytest.mark.parametrize("name", list(EXPORT_KINDS))
def test_dciodvfy_finds_no_error(exports, name):
    export = exports[name]["export"]
    assert pydicom.dcmread(export.files[0]).SOPClassUID == EXPORT_KINDS[name][-1]
    explained = EXPLAINED_WARNINGS + ([EXTENDED_3D_SECONDARY_CAPTURE] if name == "sc_3d" else [])
    for path in (export.files[0], export.files[-1]):
        findings = dciodvfy(path)
        errors = [line for line in findings if line.startswith("Error") and not NEWER_THAN_VALIDATOR.search(line)]
        assert errors == [], f"{path.name}: {errors}"
        unexplained = [line for line in findings if not any(pattern.search(line) for pattern in explained)]
        assert unexplained == [], f"{path.name}: {unexplained}"


@needs_dciodvfy
def test_dciodvfy_reports_what_was_fixed(tmp_path, exports):
    """The check can fail: the attributes this export adds are the ones the validator asks for."""
    damaged = pydicom.dcmread(exports["mr_3d"]["export"].files[0])
    del damaged.Laterality, damaged.PatientPosition
    damaged.ImageType = ["DERIVED", "SECONDARY"]
    damaged.save_as(tmp_path / "damaged.dcm")
    errors = " ".join(line for line in dciodvfy(tmp_path / "damaged.dcm") if line.startswith("Error"))
    for missing in ("<Laterality>", "<PatientPosition>", "value 3"):
        assert missing in errors


@needs_dcmtk
def test_dcmdump_parses_every_file(exports):
    files = [str(path) for written in exports.values() for path in written["export"].files]
    output = dcmdump(*files)
    assert output.count("# Dicom-File-Format") == len(files)
    assert output.count("(0008,0060) CS [MR]") == len(exports["mr_3d"]["export"].files) + 1


@needs_dcmtk
@pytest.mark.parametrize("name", ["mr_3d", "ct_3d", "sc_2d", "mr_2d"])
def test_dcm2pnm_renders_the_nifti_slice(tmp_path, exports, name):
    written = exports[name]
    export, reference = written["export"], np.asarray(nibabel.load(written["nifti"]).dataobj, dtype=np.float64)
    reference = reference if reference.ndim == 3 else reference[..., None]
    k = reference.shape[2] // 2
    subprocess.run([DCM2PNM, "+Wi", "1", "+on", str(export.files[k]), str(tmp_path / "slice.png")], check=True, timeout=60)
    rendered = np.asarray(Image.open(tmp_path / "slice.png"), dtype=np.float64)

    header = pydicom.dcmread(export.files[k])
    center, width = float(header.WindowCenter), float(header.WindowWidth)
    values = reference[:, :, k].T  # DICOM rows are y, columns x
    if export.real_world_value_mapping:  # MR, SC: the window applies to the stored integers, rounded from these
        values = (values - export.encoding.intercept) / export.encoding.slope
        quantisation = 0.5
    else:  # CT: to HU within half a step; dcmtk then truncates HU to integers before windowing
        quantisation = export.encoding.max_error + 1.0
    expected = linear_voi(values, center, width)
    assert rendered.shape == expected.shape
    # dcm2pnm floors onto 8 bits: one grey level, plus the quantisation seen through the window's slope
    assert np.abs(rendered - expected).max() <= 1.0 + 255 * quantisation / (width - 1)
    assert np.ptp(rendered) >= 200  # the window spans the data: a real picture, not a flat one


def _nifti_and_sidecar(written) -> tuple[np.ndarray, dict]:
    sidecar = json.loads(written["export"].sidecar.read_text())
    return np.asarray(nibabel.load(written["nifti"]).dataobj, dtype=np.float64), sidecar


@needs_dcmtk
def test_mr_volume_read_by_dcmtk_matches_nifti(exports):
    reference, sidecar = _nifti_and_sidecar(exports["mr_3d"])
    export = exports["mr_3d"]["export"]
    assert sidecar["intensity"]["mapping"].startswith("RealWorldValueMappingSequence")
    tolerance = sidecar["intensity"]["max_error"]
    assert 0 < tolerance == sidecar["intensity"]["quantisation_step"] / 2 < np.ptp(reference) / 65535
    for k, path in enumerate(export.files):
        fields = dcmdump_values(path, "0028,0010", "0028,0011", "0028,0103", "0040,9225", "0040,9224", "7fe0,0010")
        rows, columns = int(fields["0028,0010"]), int(fields["0028,0011"])
        assert fields["0028,0103"] == "0"  # unsigned stored integers
        stored = np.array([int(word, 16) for word in fields["7fe0,0010"].split("\\")], dtype=np.float64)
        decoded = stored.reshape(rows, columns).T * float(fields["0040,9225"]) + float(fields["0040,9224"])
        np.testing.assert_allclose(decoded, reference[:, :, k], rtol=0, atol=tolerance * 1.001)


def test_mr_volume_read_by_simpleitk_matches_nifti(exports):
    reference, sidecar = _nifti_and_sidecar(exports["mr_3d"])
    export = exports["mr_3d"]["export"]
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(path) for path in export.files])
    image = reader.Execute()
    mapping = pydicom.dcmread(export.files[0]).RealWorldValueMappingSequence[0]
    assert (mapping.RealWorldValueSlope, mapping.RealWorldValueIntercept) == (
        sidecar["intensity"]["slope"], sidecar["intensity"]["intercept"])  # fmt: skip
    decoded = sitk.GetArrayFromImage(image).T * mapping.RealWorldValueSlope + mapping.RealWorldValueIntercept
    np.testing.assert_allclose(decoded, reference, rtol=0, atol=sidecar["intensity"]["max_error"] * 1.001)
    nifti = sitk.ReadImage(str(exports["mr_3d"]["nifti"]))
    for query in ("GetSpacing", "GetOrigin", "GetDirection"):
        np.testing.assert_allclose(getattr(image, query)(), getattr(nifti, query)(), atol=1e-4)


@pytest.mark.parametrize("name", list(EXPORT_KINDS))
def test_sidecar_and_header_say_synthetic_without_absolute_paths(exports, name):
    export = exports[name]["export"]
    sidecar = json.loads(export.sidecar.read_text())
    assert export.sidecar == export.directory.with_name(f"{name}.json")
    assert sidecar["synthetic"] is True and sidecar["series_instance_uid"] == export.series_instance_uid
    assert sidecar["files"] == [path.name for path in export.files]
    header = pydicom.dcmread(export.files[0])
    assert header.SyntheticData == "YES" and list(header.ImageType[:2]) == ["DERIVED", "SECONDARY"]
    for text in (header.ImageComments, header.DerivationDescription):
        assert "run=wgan_gp_3d; checkpoint=checkpoints/checkpoint_000200.pt" in text
        assert "/home" not in text and "someone" not in text
    assert header.StudyDate and header.StudyTime and header.StudyID
    if name.startswith("ct"):
        assert header.RescaleType == "HU" and sidecar["intensity"]["units"] == "HU"
