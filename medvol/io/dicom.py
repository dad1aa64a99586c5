"""DICOM series: discovery, geometry, validation and reading.

Who does what:

- **pydicom** reads every file's header (pixel data is deferred, never loaded during discovery) and gives tag access.
- **medvol** (this module) groups files by SeriesInstanceUID, splits a series into the volumes it holds
  (echoes, time points, orientations, image types: :func:`_split_volumes`), orders slices by ImagePositionPatient
  projected on the slice normal (cross product of the ImageOrientationPatient rows), derives spacing, origin and direction the way
  ITK/SimpleITK do, and writes the checks the libraries lack: truncated or non-DICOM files, gaps, duplicate
  positions, non-uniform spacing, mixed sizes or orientations, multi-frame series, copies of one
  instance and header fields that contradict the rest of the series, study or modality (``problems``).
- **SimpleITK / GDCM** decode the pixel data (including compressed transfer syntaxes) from medvol's sorted file list
  and apply RescaleSlope/RescaleIntercept.
- **MONAI**: :class:`DicomSeriesReader` is an ``ImageReader`` so ``LoadImage(reader=DicomSeriesReader())`` loads a
  series folder into a MetaTensor with a RAS affine and the problems in its metadata.

Geometry is reported in the DICOM patient frame (LPS), ``shape``/``spacing`` as [x, y, z] (columns, rows, slices),
``direction`` row-major; the arrays returned are indexed [x, y, z] with a RAS affine, as MONAI expects.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from monai.data.image_reader import ImageReader
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple, optional_import

from medvol.errors import MedvolInputError
from medvol.io.files import IMAGE_2D_SUFFIXES, NIFTI_SUFFIXES
from medvol.io.geometry import affine_ras_from_geometry
from medvol.io.images import rgb_to_grey
from medvol.io.report import SKIPPED, USED, WARNING, FileRecord

pydicom, _ = optional_import("pydicom")
sitk, _ = optional_import("SimpleITK")
tqdm, _ = optional_import("tqdm", name="tqdm")

logger = logging.getLogger(__name__)

# Relative deviation from the median slice interval tolerated before spacing is called non-uniform.
SLICE_SPACING_TOLERANCE = 0.01
# Positions closer than this (mm) along the normal are the same slice.
DUPLICATE_POSITION_MM = 1e-3
# Largest difference between direction cosines of two slices that still counts as the same orientation.
ORIENTATION_TOLERANCE = 1e-4
# Angle between the stacking direction and the slice normal beyond which the stack is sheared (gantry tilt).
MAX_SHEAR_DEGREES = 0.5
# Direction cosines further apart than this put slices of one series into separate volumes (a localizer's planes);
# smaller differences inside a volume are reported against ORIENTATION_TOLERANCE.
ORIENTATION_SPLIT = 1e-2
# Attributes that separate the volumes stored under one SeriesInstanceUID, in the order they are tried, with the
# label of a volume's id (``<uid>#echo2``) and of its description (``T2 (echo 2)``).
VOLUME_KEYS = (
    ("ImageType", "type-{}", "image type {}"),
    ("EchoNumbers", "echo{}", "echo {}"),
    ("TemporalPositionIdentifier", "t{}", "time point {}"),
    ("TriggerTime", "trigger{}", "trigger time {} ms"),
    ("AcquisitionNumber", "acq{}", "acquisition {}"),
)
# Volumes a key separates cover the same stretch along the slice normal, to this tolerance (mm).
SAME_EXTENT_MM = 0.1
# Geometry problems that keep a series out of `medvol prepare` unless the user accepts them by kind.
IRREGULAR_KINDS = {
    "gap": "missing slices",
    "spacing": "non-uniform slice spacing",
    "tilt": "gantry tilt or sheared stack",
    "duplicate": "duplicate slice positions",
    "orientation": "slices not parallel",
}
ACCEPT_IRREGULAR_OPTION = "--accept-irregular-dicom"
# Attributes of the Patient, Study and General Series modules, and the synthetic mark: one value for every file of
# a series.
SERIES_LEVEL_TAGS = (
    "Modality",
    "BodyPartExamined",
    "PatientPosition",
    "Laterality",
    "PatientID",
    "PatientName",
    "StudyInstanceUID",
    "FrameOfReferenceUID",
    "SyntheticData",
)
PATIENT_LEVEL_TAGS = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex")
# Modalities whose image modules (PS3.3 CT, MR, PET Image) make the Image Plane module mandatory.
CROSS_SECTIONAL_MODALITIES = ("CT", "MR", "PT")
UNDEFINED_LENGTH = 0xFFFFFFFF
DEFLATED_TRANSFER_SYNTAX = "1.2.840.10008.1.2.1.99"
PIXEL_DATA_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)  # PixelData, FloatPixelData, DoubleFloatPixelData


@dataclass
class DicomSeries:
    """One volume of a DICOM series (the whole series, or one echo / time point / orientation / image type of it),
    its geometry as SimpleITK reports it for these files, and what is wrong with it.

    Args:
        uid: SeriesInstanceUID.
        description: SeriesDescription ("" when absent), followed by what separates this volume from the others of
            its series (``T2 (echo 2)``).
        modality: Modality of the first file ("" when absent).
        patient_id: PatientID, the subject id for datalists (None when absent).
        files: the files in spatial order (ascending position along the slice normal).
        shape: [x, y, z] = [columns, rows, slices (or frames)].
        spacing: [x, y, z] mm: in-plane from PixelSpacing, z the average slice interval along the normal (as ITK).
        origin: LPS position (mm) of the first voxel.
        direction: row-major 3x3 LPS direction; columns are the row, column and slice-normal directions.
        problems: human-readable findings; each one is reported, the data are not trusted blindly.
        study_uid: StudyInstanceUID ("" when absent).
        synthetic: the files say they are synthetic (Synthetic Data (0008,001C) ``YES`` or ConversionType ``SYN``),
            as medvol's own exports do: not images of a patient, never to be mixed with real data unknowingly.
        volume_id: ``uid`` for a series that is one volume, else ``uid`` followed by what separates this volume
            (``<uid>#echo2``, ``<uid>#t3``, ``<uid>#sagittal``, ``<uid>#echo1#t2``).
        split_by: the attribute values that separate this volume, e.g. ``{"EchoNumbers": "2"}`` (empty when whole).
        irregular: kinds of geometry problems (keys of ``IRREGULAR_KINDS``: gap, spacing, tilt, duplicate,
            orientation) that keep the volume out of `medvol prepare` unless accepted; each is also in ``problems``.
    """

    uid: str
    description: str
    modality: str
    patient_id: str | None
    files: list[str]
    shape: list[int]
    spacing: list[float]
    origin: list[float]
    direction: list[float]
    problems: list[str] = field(default_factory=list)
    study_uid: str = ""
    synthetic: bool = False
    volume_id: str = ""
    split_by: dict[str, str] = field(default_factory=dict)
    irregular: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.volume_id = self.volume_id or self.uid

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def affine_ras(self) -> np.ndarray:
        """4x4 voxel-to-world affine in RAS (MONAI's convention)."""
        return affine_ras_from_geometry(self.spacing, self.origin, self.direction)


@dataclass
class DicomScan:
    """Everything found under a path: the series and one record per file (used, warning or skipped with reason).

    Args:
        series: every series found, in path order of their first file.
        records: one ``FileRecord`` per file looked at.
        path: the file or folder scanned.
    """

    series: list[DicomSeries]
    records: list[FileRecord]
    path: str = ""

    @property
    def skipped(self) -> list[FileRecord]:
        return [r for r in self.records if r.status == SKIPPED]


def iter_files(path: str | os.PathLike) -> list[Path]:
    """Every regular file under ``path`` (or ``path`` itself), in sorted order, descending into subfolders.

    Args:
        path: a file or a folder.

    Raises:
        MedvolInputError: when ``path`` does not exist.
    """
    root = Path(path)
    if not root.exists():
        raise MedvolInputError(root, "no such file or folder")
    if root.is_file():
        return [root]
    found: list[Path] = []
    for folder, subfolders, names in os.walk(root):
        subfolders.sort()
        found.extend(Path(folder) / name for name in sorted(names))
    return found


def has_suffix(path: str | os.PathLike, suffixes: Sequence[str]) -> bool:
    """Whether the file name ends with one of ``suffixes`` (case-insensitive, multi-part suffixes allowed)."""
    name = Path(path).name.lower()
    return any(name.endswith(suffix) for suffix in suffixes)


def _text(dataset, keyword: str) -> str:
    value = dataset.get(keyword)
    return "" if value is None else str(value).strip()


def _floats(dataset, keyword: str) -> np.ndarray | None:
    value = dataset.get(keyword)
    if value is None or value == "":
        return None
    try:
        return np.asarray([float(v) for v in ensure_tuple(value)], dtype=float)
    except (TypeError, ValueError):
        return None


def _instance_number(dataset) -> int:
    try:
        return int(dataset.get("InstanceNumber") or 0)
    except (TypeError, ValueError):
        return 0


def is_synthetic(dataset) -> bool:
    """Whether a DICOM header marks its image as synthetic: Synthetic Data (0008,001C) ``YES`` or ConversionType
    ``SYN`` (Secondary Capture's "synthetic image"). ImageType ``DERIVED\\SECONDARY`` alone is not enough: every
    reformat and map carries it."""
    return _text(dataset, "SyntheticData").upper() == "YES" or _text(dataset, "ConversionType").upper() == "SYN"


def _is_greyscale(dataset) -> bool:
    photometric = _text(dataset, "PhotometricInterpretation")
    return int(dataset.get("SamplesPerPixel") or 1) == 1 and photometric != "PALETTE COLOR"


def _frames(dataset) -> int:
    try:
        return max(1, int(dataset.get("NumberOfFrames") or 1))
    except (TypeError, ValueError):
        return 1


def _pixel_data_problem(dataset, path: Path) -> str | None:
    """Why the pixel data of a header-parsed file cannot be trusted (missing, truncated, too short), or None."""
    raw = next((dataset._dict[tag] for tag in PIXEL_DATA_TAGS if tag in dataset._dict), None)
    if raw is None:
        sop_class = dataset.get("SOPClassUID")
        kind = getattr(sop_class, "name", None) or "unknown SOP class"
        if ("Rows" in dataset and "Columns" in dataset) or "Image Storage" in kind:
            return f"truncated: the header declares an image ({kind}) but the file ends before its pixel data"
        if path.name.upper() == "DICOMDIR":
            kind = "DICOMDIR index"
        return f"no pixel data ({kind}): not an image"
    length = getattr(raw, "length", None)
    value_tell = getattr(raw, "value_tell", None)
    transfer_syntax = str(getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", ""))
    if length is None or value_tell is None or transfer_syntax == DEFLATED_TRANSFER_SYNTAX:
        return None  # no file offsets to check (deflated files are parsed from an inflated buffer)
    file_size = path.stat().st_size
    if length == UNDEFINED_LENGTH:
        if max(dataset._dict) > raw.tag:  # trailing elements (e.g. padding) follow: the tail says nothing
            return None
        with open(path, "rb") as stream:
            stream.seek(max(0, file_size - 8))
            tail = stream.read(8)
        if tail not in (b"\xfe\xff\xdd\xe0\x00\x00\x00\x00", b"\xff\xfe\xe0\xdd\x00\x00\x00\x00"):
            return "truncated: compressed pixel data has no end-of-sequence marker"
        return None
    available = file_size - value_tell
    if available < length:
        return f"truncated: pixel data declares {length} bytes but the file holds only {available}"
    rows, columns = int(dataset.get("Rows") or 0), int(dataset.get("Columns") or 0)
    samples, bits = int(dataset.get("SamplesPerPixel") or 1), int(dataset.get("BitsAllocated") or 0)
    expected = rows * columns * samples * _frames(dataset) * bits // 8
    if bits and expected and length < expected:
        return (
            f"pixel data too short: {length} bytes for {rows} rows x {columns} columns x {samples} samples x "
            f"{_frames(dataset)} frames x {bits} bits = {expected} bytes"
        )
    return None


def read_header(path: str | os.PathLike):
    """Read one file's DICOM header with pydicom, pixel data deferred, and validate it.

    Args:
        path: the file.

    Returns:
        ``(dataset, None)`` for a usable image file, ``(None, reason)`` otherwise.
    """
    path = Path(path)
    if pydicom is None:  # pragma: no cover - pydicom is a declared dependency
        return None, "pydicom is not installed"
    try:
        with open(path, "rb") as stream:
            head = stream.read(132)
    except OSError as err:
        return None, f"unreadable: {err.strerror or err}"
    has_marker = len(head) == 132 and head[128:132] == b"DICM"
    try:
        with warnings.catch_warnings(record=True) as caught:  # pydicom's header remarks: logged, never fatal
            warnings.simplefilter("always")
            dataset = pydicom.dcmread(path, defer_size="64 KB", force=not has_marker)
    except Exception as err:  # pydicom raises many types on garbage; every one means "not readable DICOM"
        return None, f"not a readable DICOM file ({type(err).__name__}: {err})"
    for remark in caught:
        logger.debug("%s: pydicom: %s", path, remark.message)
    if has_marker and len(dataset) == 0:  # pydicom drops everything when an undefined-length element is cut
        return None, "truncated or damaged: no readable data element after the file meta information"
    if not has_marker and not ("SOPClassUID" in dataset or ("Rows" in dataset and "Columns" in dataset)):
        return None, "not a DICOM file (no 'DICM' marker and no DICOM image header)"
    problem = _pixel_data_problem(dataset, path)
    if problem:
        return None, problem
    if not dataset.get("Rows") or not dataset.get("Columns"):
        return None, "DICOM header without Rows/Columns"
    return dataset, None


def _name(path: str | Path) -> str:
    return Path(path).name


def _list_names(paths: Sequence[str | Path], limit: int = 6) -> str:
    names = [_name(p) for p in paths]
    return ", ".join(names) if len(names) <= limit else ", ".join(names[:limit]) + f", ... ({len(names)} files)"


def _header_problems(paths: list[Path], datasets: list) -> list[str]:
    """Header fields that contradict each other or the modality; each one reported, not trusted."""
    problems = []
    for keyword in SERIES_LEVEL_TAGS:
        values: dict[str, list[Path]] = defaultdict(list)
        for path, dataset in zip(paths, datasets):
            values[_text(dataset, keyword)].append(path)
        if len(values) > 1:
            listing = "; ".join(f"{value or '<empty>'} ({_list_names(files)})" for value, files in values.items())
            problems.append(f"{keyword} differs between files of one series: {listing}; reported, not trusted")
    instances: dict[str, list[Path]] = defaultdict(list)
    for path, dataset in zip(paths, datasets):
        uid = _text(dataset, "SOPInstanceUID")
        if uid:
            instances[uid].append(path)
    for uid, files in instances.items():
        if len(files) > 1:
            problems.append(
                f"{len(files)} files share SOPInstanceUID {uid}, i.e. they claim to be one image: {_list_names(files)}"
            )
    for path, dataset in zip(paths, datasets):
        problems.extend(_modality_problems(path, dataset))
    return problems


def _modality_problems(path: Path, dataset) -> list[str]:
    """The Modality tag checked against what images of that modality always carry (DICOM PS3.3 CT/MR modules)."""
    modality = _text(dataset, "Modality")
    if modality not in CROSS_SECTIONAL_MODALITIES:
        return []
    missing = [k for k in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing") if k not in dataset]
    evidence = []
    if modality == "CT":
        missing += [k for k in ("RescaleIntercept", "RescaleSlope") if k not in dataset]
        bits = int(dataset.get("BitsStored") or dataset.get("BitsAllocated") or 0)
        if bits and bits < 12:
            evidence.append(f"{bits}-bit pixels (CT stores 12-16 bits to hold Hounsfield units)")
    if missing:
        evidence.insert(0, "no " + ", ".join(missing))
    if not evidence:
        return []
    sop_class = dataset.get("SOPClassUID")
    if sop_class is not None and getattr(sop_class, "name", ""):
        evidence.append(f"SOP class {sop_class.name}")
    return [f"{_name(path)}: Modality {modality} is not credible: {'; '.join(evidence)}; reported, not trusted"]


def _spacing_problems(paths: list[Path], positions: np.ndarray) -> list[tuple[str, str]]:
    """Duplicates, gaps and non-uniform intervals of slice positions sorted along the normal, as (kind, text)."""
    problems = []
    intervals = np.diff(positions)
    duplicates = np.flatnonzero(intervals < DUPLICATE_POSITION_MM)
    for i in duplicates:
        problems.append((
            "duplicate",
            f"duplicate slice position {positions[i]:.3f} mm along the normal: "
            f"{_name(paths[i])} and {_name(paths[i + 1])}",
        ))
    distinct = intervals[intervals >= DUPLICATE_POSITION_MM]
    if distinct.size == 0:
        return problems
    step = float(np.median(distinct))
    irregular = []
    total_missing = 0
    gaps = []
    for i, interval in enumerate(intervals):
        if interval < DUPLICATE_POSITION_MM or abs(interval - step) <= SLICE_SPACING_TOLERANCE * step:
            continue
        ratio = interval / step
        if round(ratio) >= 2 and abs(ratio - round(ratio)) <= 0.1:
            missing = int(round(ratio)) - 1
            total_missing += missing
            gaps.append(
                f"{missing} between {_name(paths[i])} ({positions[i]:.2f} mm) and {_name(paths[i + 1])} "
                f"({positions[i + 1]:.2f} mm)"
            )
        else:
            irregular.append(float(interval))
    if gaps:
        problems.append((
            "gap",
            f"missing slices: {total_missing} missing (slice interval {step:.4g} mm): {'; '.join(gaps)}; "
            "the volume is not evenly sampled",
        ))
    if irregular:
        problems.append((
            "spacing",
            f"non-uniform slice spacing: intervals from {min(irregular + [step]):.4g} to "
            f"{max(irregular + [step]):.4g} mm "
            f"(median {step:.4g} mm, tolerance {SLICE_SPACING_TOLERANCE:.0%}) in {len(irregular)} of "
            f"{len(intervals)} intervals; the volume's z spacing is their average",
        ))
    return problems


def _shear_problems(
    first_position: np.ndarray, last_position: np.ndarray, normal: np.ndarray
) -> list[tuple[str, str]]:
    """Slices stacked off the normal (gantry tilt, sheared acquisition) do not form a rectilinear volume."""
    displacement = last_position - first_position
    length = float(np.linalg.norm(displacement))
    if length < DUPLICATE_POSITION_MM:
        return []
    angle = float(np.degrees(np.arccos(min(1.0, abs(float(displacement @ normal)) / length))))
    if angle <= MAX_SHEAR_DEGREES:
        return []
    return [(
        "tilt",
        f"slice positions advance {angle:.2f} degrees off the slice normal (gantry tilt or sheared stack): a "
        "rectilinear volume misplaces voxels; spacing is taken along the normal",
    )]


Label = tuple[str, str, str, str]  # (keyword, value, id label, description label) of what separates a volume


def _slice_geometry(dataset) -> tuple[np.ndarray, np.ndarray] | None:
    position, orientation = _floats(dataset, "ImagePositionPatient"), _floats(dataset, "ImageOrientationPatient")
    if position is None or position.size != 3 or orientation is None or orientation.size != 6:
        return None
    return position, orientation


def _key_value(dataset, keyword: str) -> str:
    value = dataset.get(keyword)
    if value is None or value == "":
        return ""
    return "\\".join(str(v).strip() for v in ensure_tuple(value))


def _value_order(value: str):
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def _plane(normal: np.ndarray) -> str:
    return ("sagittal", "coronal", "axial")[int(np.argmax(np.abs(normal)))]


def _orientation_groups(members: list[int], geometry: list) -> list[tuple[list[Label], list[int]]]:
    """Slices of one series grouped by orientation (cosines within ``ORIENTATION_SPLIT``), named by their plane."""
    clusters: list[tuple[np.ndarray, list[int]]] = []
    for index in members:
        orientation = geometry[index][1]
        for reference, cluster in clusters:
            if np.max(np.abs(orientation - reference)) <= ORIENTATION_SPLIT:
                cluster.append(index)
                break
        else:
            clusters.append((orientation, [index]))
    if len(clusters) == 1:
        return [([], members)]
    planes = [_plane(np.cross(reference[:3], reference[3:])) for reference, _ in clusters]
    groups = []
    for number, ((reference, cluster), plane) in enumerate(zip(clusters, planes), start=1):
        name = plane if planes.count(plane) == 1 else f"{plane}{number}"
        value = "\\".join(f"{v:g}" for v in np.round(reference, 4))
        groups.append(([("ImageOrientationPatient", value, name, name)], cluster))
    return groups


def _along_normal(members: list[int], geometry: list) -> np.ndarray:
    orientation = geometry[members[0]][1]
    normal = np.cross(orientation[:3], orientation[3:])
    return np.sort([float(geometry[i][0] @ normal) for i in members])


def _split_volumes(datasets: list) -> list[tuple[list[Label], list[int]]]:
    """The volumes one series holds, as (what separates each, indices of its files).

    Slices in different orientations are always separate volumes (a localizer's planes cannot be stacked), the
    largest first. Within an orientation, a group of files is split by the first of ``VOLUME_KEYS`` that separates
    it into consistent volumes, again within each part, while a group still holds two files at one position.
    Consistent means every part covers the same stretch along the normal: an echo, time point or image type repeats
    the whole stack, whereas some scanners number AcquisitionNumber (or TriggerTime) per slice or per slab, and
    splitting on those would shatter one volume into 1-slice pieces. Files without slice geometry (radiographs, 2D
    images) are never split.
    """
    everything = list(range(len(datasets)))
    geometry = [_slice_geometry(d) for d in datasets]
    if len(datasets) < 2 or any(g is None for g in geometry):
        return [([], everything)]
    groups = sorted(_orientation_groups(everything, geometry), key=lambda group: -len(group[1]))
    return [volume for labels, members in groups for volume in _split_group(labels, members, datasets, geometry)]


def _split_group(
    labels: list[Label], members: list[int], datasets: list, geometry: list
) -> list[tuple[list[Label], list[int]]]:
    """One group of parallel slices split by ``VOLUME_KEYS`` (see :func:`_split_volumes`), parts in value order."""
    positions = _along_normal(members, geometry)
    if len(members) < 2 or np.min(np.diff(positions)) >= DUPLICATE_POSITION_MM:
        return [(labels, members)]
    used = {label[0] for label in labels}
    for keyword, id_label, description_label in VOLUME_KEYS:
        if keyword in used:
            continue
        parts: dict[str, list[int]] = defaultdict(list)
        for index in members:
            parts[_key_value(datasets[index], keyword)].append(index)
        if len(parts) < 2:
            continue
        extents = np.asarray([_along_normal(part, geometry)[[0, -1]] for part in parts.values()])
        if np.max(np.abs(extents - extents[0])) > SAME_EXTENT_MM:
            continue
        shown = _image_type_labels(list(parts)) if keyword == "ImageType" else {v: v for v in parts}
        volumes = []
        for value in sorted(parts, key=_value_order):
            text = shown[value] or "none"
            text = f"{float(text):g}" if _value_order(text)[0] == 0 else text
            label = (keyword, value, id_label.format(text.replace("\\", "-")), description_label.format(text))
            volumes += _split_group([*labels, label], parts[value], datasets, geometry)
        return volumes
    return [(labels, members)]  # duplicate positions nothing separates: reported by _spacing_problems


def _image_type_labels(values: list[str]) -> dict[str, str]:
    """ImageType values shortened to the components that tell them apart (``M`` / ``P`` for magnitude / phase)."""
    split = {value: value.split("\\") for value in values}
    common = set.intersection(*(set(parts) for parts in split.values()))
    return {value: "\\".join(p for p in parts if p not in common) or value for value, parts in split.items()}


def _build_series(
    uid: str, paths: list[Path], datasets: list, labels: Sequence[tuple[str, str, str, str]] = ()
) -> DicomSeries:
    """Sort one volume's files in space, derive its geometry as SimpleITK does, and collect its problems.

    Args:
        uid: SeriesInstanceUID.
        paths: the volume's files.
        datasets: their headers.
        labels: what separates this volume from the others of its series, from :func:`_split_volumes`.
    """
    problems: list[str] = []
    irregular: list[str] = []
    first = datasets[0]
    sizes = {(int(d.Rows), int(d.Columns)) for d in datasets}
    if len(sizes) > 1:
        counts = Counter((int(d.Rows), int(d.Columns)) for d in datasets)
        listing = ", ".join(f"{r}x{c} ({n} files)" for (r, c), n in counts.items())
        problems.append(f"rows x columns differ within the series: {listing}; the files cannot be stacked")

    positions = [_floats(d, "ImagePositionPatient") for d in datasets]
    orientations = [_floats(d, "ImageOrientationPatient") for d in datasets]
    located = [p is not None and p.size == 3 and o is not None and o.size == 6 for p, o in zip(positions, orientations)]
    has_geometry = all(located)
    if has_geometry:
        reference = orientations[0]
        differing = [p for p, o in zip(paths, orientations) if np.max(np.abs(o - reference)) > ORIENTATION_TOLERANCE]
        if differing:
            irregular.append("orientation")
            problems.append(
                f"ImageOrientationPatient differs within the series ({_list_names(differing)} differ from "
                f"{_name(paths[0])}); slices are not parallel, geometry is unreliable"
            )
        row_cosine, column_cosine = reference[:3], reference[3:]
        normal = np.cross(row_cosine, column_cosine)
        along_normal = np.array([float(p @ normal) for p in positions])
        instance_numbers = [_instance_number(d) for d in datasets]
        order = sorted(range(len(paths)), key=lambda i: (along_normal[i], instance_numbers[i], str(paths[i])))
        paths = [paths[i] for i in order]
        datasets = [datasets[i] for i in order]
        along_normal = along_normal[order]
        origin = [float(v) for v in positions[order[0]]]
        direction = np.stack([row_cosine, column_cosine, normal], axis=1)
        z_spacing = float(along_normal[-1] - along_normal[0]) / (len(paths) - 1) if len(paths) > 1 else None
        stack_problems = _spacing_problems(paths, along_normal)
        stack_problems += _shear_problems(positions[order[0]], positions[order[-1]], normal)
        for kind, text in stack_problems:
            problems.append(text)
            if kind not in irregular:
                irregular.append(kind)
    else:
        unlocated = [p for p, ok in zip(paths, located) if not ok]
        order = sorted(range(len(paths)), key=lambda i: (_instance_number(datasets[i]), str(paths[i])))
        paths = [paths[i] for i in order]
        datasets = [datasets[i] for i in order]
        origin = [0.0, 0.0, 0.0]
        direction = np.eye(3)
        z_spacing = None
        if len(paths) > 1 and len(unlocated) == len(paths):
            problems.append(
                "no ImagePositionPatient/ImageOrientationPatient: these are separate 2D images, not a volume; "
                "stacked in InstanceNumber order with no slice geometry"
            )
        elif len(paths) > 1:
            problems.append(
                f"ImagePositionPatient/ImageOrientationPatient missing or malformed in {len(unlocated)} of "
                f"{len(paths)} files ({_list_names(unlocated)}): slice order and geometry unknown, stacked in "
                "InstanceNumber order"
            )

    first = datasets[0]
    pixel_spacing = _floats(first, "PixelSpacing")
    if pixel_spacing is None or pixel_spacing.size != 2:
        pixel_spacing = _floats(first, "ImagerPixelSpacing")
    if pixel_spacing is None or pixel_spacing.size != 2:
        pixel_spacing = np.ones(2)
        problems.append("no PixelSpacing or ImagerPixelSpacing: in-plane spacing unknown, 1 mm assumed")
    frames = sum(_frames(d) for d in datasets)
    multi_frame = [p for p, d in zip(paths, datasets) if _frames(d) > 1]
    if multi_frame:
        problems.append(
            f"multi-frame file(s): {_list_names(multi_frame)} ({frames} frames); per-frame geometry is read by "
            "SimpleITK/GDCM and not checked by medvol"
        )
    if z_spacing is None or z_spacing < DUPLICATE_POSITION_MM:
        z_spacing = _single_file_z_spacing(first) if len(paths) == 1 else 1.0

    colour = sorted({_text(d, "PhotometricInterpretation") for d in datasets if not _is_greyscale(d)})
    if colour:
        problems.append(f"colour pixel data ({', '.join(colour)}): converted to greyscale with ITU-R 601 weights")
    problems.extend(_header_problems(paths, datasets))
    geometry_override = _simpleitk_geometry(paths[0]) if multi_frame and len(paths) == 1 else None
    shape = [int(first.Columns), int(first.Rows), frames if multi_frame else len(paths)]
    spacing = [float(pixel_spacing[1]), float(pixel_spacing[0]), float(z_spacing)]
    direction_list = [float(v) for v in np.asarray(direction).ravel()]
    if geometry_override is not None:
        shape, spacing, origin, direction_list = geometry_override
    description = _text(first, "SeriesDescription")
    if labels:
        described = ", ".join(label[3] for label in labels)
        description = f"{description} ({described})" if description else described
    return DicomSeries(
        uid=uid,
        description=description,
        modality=_text(first, "Modality"),
        patient_id=_text(first, "PatientID") or None,
        files=[str(p) for p in paths],
        shape=shape,
        spacing=spacing,
        origin=origin,
        direction=direction_list,
        problems=problems,
        study_uid=_text(first, "StudyInstanceUID"),
        synthetic=any(is_synthetic(d) for d in datasets),
        volume_id="#".join([uid, *(label[2] for label in labels)]),
        split_by={label[0]: label[1] for label in labels},
        irregular=irregular,
    )


def _single_file_z_spacing(dataset) -> float:
    """ITK/GDCM's slice spacing of a lone slice: SpacingBetweenSlices, else 1 (SliceThickness is not a spacing)."""
    value = _floats(dataset, "SpacingBetweenSlices")
    if value is not None and value.size == 1 and value[0] > 0:
        return float(value[0])
    return 1.0


def _simpleitk_geometry(path: Path):
    """Geometry of one (multi-frame) file from SimpleITK's header reader, whose per-frame parsing we rely on."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    size = list(reader.GetSize())
    spacing = list(reader.GetSpacing())
    origin = list(reader.GetOrigin())
    direction = list(reader.GetDirection())
    if len(size) == 2:
        size, spacing, origin = size + [1], spacing + [1.0], origin + [0.0]
        direction = [direction[0], direction[1], 0.0, direction[2], direction[3], 0.0, 0.0, 0.0, 1.0]
    return (
        [int(s) for s in size],
        [float(s) for s in spacing],
        [float(o) for o in origin],
        [float(d) for d in direction],
    )


def _study_problems(series_list: list[DicomSeries], datasets_by_volume: dict[str, list]) -> None:
    """Patient attributes must agree across the series of one study; disagreements go to each series' problems."""
    by_study: dict[str, list[DicomSeries]] = defaultdict(list)
    for series in series_list:
        if series.study_uid:
            by_study[series.study_uid].append(series)
    for members in by_study.values():
        if len(members) < 2:
            continue
        for keyword in PATIENT_LEVEL_TAGS:
            values = {s.volume_id: _text(datasets_by_volume[s.volume_id][0], keyword) for s in members}
            values = {key: value for key, value in values.items() if value}  # absent is not a contradiction
            if len(set(values.values())) > 1:
                for series in members:
                    if series.volume_id not in values:
                        continue
                    others = sorted({v for key, v in values.items() if v != values[series.volume_id]})
                    series.problems.append(
                        f"{keyword} {values[series.volume_id]} disagrees with other series of the same study "
                        f"({', '.join(others)}); reported, not trusted"
                    )


def _name_skipped_files_in_gaps(series_list: Sequence[DicomSeries], records: dict[str, FileRecord]) -> None:
    """A series with missing slices gets a problem naming the files skipped in its folders (a truncated or damaged
    slice is the usual cause of the gap), so the gap is not the only thing the user reads."""
    skipped_by_folder: dict[Path, list[FileRecord]] = defaultdict(list)
    for record in records.values():
        if record.status == SKIPPED and not record.reason.startswith("not DICOM ("):
            skipped_by_folder[Path(record.path).parent].append(record)
    for series in series_list:
        if "gap" not in series.irregular:
            continue
        skipped = [r for folder in sorted({Path(f).parent for f in series.files}) for r in skipped_by_folder[folder]]
        if skipped:
            named = "; ".join(f"{Path(r.path).name} ({r.reason})" for r in skipped[:3])
            more = f"; and {len(skipped) - 3} more" if len(skipped) > 3 else ""
            series.problems.append(f"{len(skipped)} file(s) in its folder were skipped and may be the missing "
                                   f"slices: {named}{more}")


def discover_series(
    path: str | os.PathLike, files: Iterable[str | os.PathLike] | None = None, progress: bool = False
) -> DicomScan:
    """Find every DICOM series under ``path`` (a folder tree or one file), with or without file extensions.

    Never picks a series silently: all series are returned, and every file gets a record (``used``, ``warning`` when
    its series has problems, or ``skipped`` with the reason).

    Args:
        path: a DICOM file or a folder searched recursively.
        files: the files to consider, when the caller already listed ``path`` (default: every file under it).
        progress: show a progress bar on stderr while headers are read.

    Returns:
        the series (in order of their first file's path) and one record per file.

    Raises:
        MedvolInputError: when ``path`` does not exist.
    """
    candidates = [Path(f) for f in files] if files is not None else iter_files(path)
    records: dict[str, FileRecord] = {}
    grouped: dict[str, list[tuple[Path, object]]] = defaultdict(list)
    for file in tqdm(candidates, desc="reading DICOM headers", unit="file", disable=not progress, leave=False):
        if has_suffix(file, NIFTI_SUFFIXES + IMAGE_2D_SUFFIXES):
            records[str(file)] = FileRecord(str(file), SKIPPED, "not DICOM (NIfTI or 2D image file)")
            continue
        if has_suffix(file, (".json",)):
            records[str(file)] = FileRecord(str(file), SKIPPED, "not DICOM (JSON: a sidecar or datalist)")
            continue
        dataset, reason = read_header(file)
        if dataset is None:
            records[str(file)] = FileRecord(str(file), SKIPPED, reason)
            continue
        uid = _text(dataset, "SeriesInstanceUID")
        if not uid:
            records[str(file)] = FileRecord(str(file), SKIPPED, "DICOM image without SeriesInstanceUID")
            continue
        records[str(file)] = FileRecord(str(file), USED, "", _text(dataset, "PatientID") or None)
        grouped[uid].append((file, dataset))

    series_list = []
    datasets_by_volume = {}
    order = {}
    for uid, members in grouped.items():
        volumes = []
        for labels, indices in _split_volumes([m[1] for m in members]):
            datasets = [members[i][1] for i in indices]
            volumes.append(_build_series(uid, [members[i][0] for i in indices], datasets, labels))
            datasets_by_volume[volumes[-1].volume_id] = datasets
        for number, series in enumerate(volumes):  # a series' volumes stay together, in the order of their labels
            order[series.volume_id] = (volumes[0].files[0], number)
        series_list.extend(volumes)
    _study_problems(series_list, datasets_by_volume)
    _name_skipped_files_in_gaps(series_list, records)
    for series in series_list:
        if series.problems:
            for file in series.files:
                records[file].status = WARNING
                records[file].reason = f"series {series.description or series.uid}: " + " | ".join(series.problems)
    series_list.sort(key=lambda s: order[s.volume_id])
    for record in records.values():
        if record.status == SKIPPED:
            logger.debug("skipped %s: %s", record.path, record.reason)
    return DicomScan(series=series_list, records=list(records.values()), path=str(path))


def synthetic_series_warning(series_list: Sequence[DicomSeries]) -> str | None:
    """One line about the series that say they are synthetic, for the console of ``medvol prepare``; None if none do.

    Args:
        series_list: the series found (:attr:`DicomScan.series`).
    """
    marked = [s for s in series_list if s.synthetic]
    if not marked:
        return None
    shown = ", ".join(f"{s.description or s.uid}" for s in marked[:3]) + (" ..." if len(marked) > 3 else "")
    return (
        f"{len(marked)} of {len(series_list)} DICOM series are marked synthetic (Synthetic Data (0008,001C) YES or "
        f"ConversionType SYN; {shown}): generated images, not patients. Their datalist entries say "
        '"synthetic": true; do not mix them with real data unknowingly'
    )


def describe_choices(series_list: Sequence[DicomSeries]) -> str:
    """One line listing series as `UID (description, N files)` (UID#... for a volume of a split series)."""
    return "; ".join(
        f"{s.volume_id} ({s.description or 'no description'}, {len(s.files)} files)" for s in series_list
    )


def select_series(scan: DicomScan, key: str | None = None) -> DicomSeries:
    """Pick one series (one volume of it) by volume id, SeriesInstanceUID or description.

    Args:
        scan: result of :func:`discover_series`.
        key: volume id (``<uid>#echo2``), UID or description (``T2`` or ``T2 (echo 2)``); may be None only when the
            scan holds exactly one series.

    Raises:
        MedvolInputError: no series, no match, or several matches; the message lists the choices.
    """
    location = scan.path or None
    if not scan.series:
        raise MedvolInputError(location, "no readable DICOM series")
    if key is None:
        if len(scan.series) == 1:
            return scan.series[0]
        uids = len({s.uid for s in scan.series})
        found = f"{uids} series" + (f" ({len(scan.series)} volumes)" if uids < len(scan.series) else "")
        raise MedvolInputError(
            location, f"{found} found, choose one with --series UID|id|description: {describe_choices(scan.series)}"
        )
    matches = (
        [s for s in scan.series if s.volume_id == key]
        or [s for s in scan.series if s.uid == key]
        or [s for s in scan.series if s.description == key]
        or [s for s in scan.series if s.split_by and s.description.rsplit(" (", 1)[0] == key]
    )
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise MedvolInputError(location, f"no series matches {key!r}; choices: {describe_choices(scan.series)}")
    if len({s.uid for s in matches}) == 1:
        raise MedvolInputError(
            location, f"series {key!r} holds {len(matches)} volumes, choose one by its id: {describe_choices(matches)}"
        )
    raise MedvolInputError(
        location, f"{len(matches)} series have description {key!r}, use the UID: {describe_choices(matches)}"
    )


def parse_irregular_kinds(text: str | None) -> frozenset[str]:
    """The kinds of irregular geometry the user accepts: ``"gap,spacing"``, ``"all"``, or None (none).

    Raises:
        MedvolInputError: an unknown kind.
    """
    if text is None:
        return frozenset()
    kinds = {k.strip().lower() for k in str(text).split(",") if k.strip()}
    if "all" in kinds:
        return frozenset(IRREGULAR_KINDS)
    unknown = sorted(kinds - set(IRREGULAR_KINDS))
    if unknown or not kinds:
        raise MedvolInputError(
            ACCEPT_IRREGULAR_OPTION, f"unknown kind {', '.join(unknown) or repr(text)}: choose from "
            f"{', '.join(IRREGULAR_KINDS)} (comma separated) or all"
        )
    return frozenset(kinds)


def irregular_reason(series: DicomSeries, accepted: Iterable[str] = ()) -> str | None:
    """Why `medvol prepare` does not use a series (its geometry problems not in `accepted`), or None when it may.
    The problems themselves are in ``series.problems`` (and in the files' warning records).

    Args:
        series: a series (volume) from :func:`discover_series`.
        accepted: kinds the user accepted (:func:`parse_irregular_kinds`).
    """
    refused = [kind for kind in series.irregular if kind not in set(accepted)]
    if not refused:
        return None
    named = ", ".join(IRREGULAR_KINDS[kind] for kind in refused)
    return (
        f"series {series.description or series.volume_id}: not used, irregular geometry ({named}): pass "
        f"{ACCEPT_IRREGULAR_OPTION} {','.join(refused)} to use it"
    )


def read_series(series: DicomSeries) -> tuple[np.ndarray, np.ndarray]:
    """Read a series' voxels with SimpleITK/GDCM from medvol's spatially sorted file list.

    Args:
        series: a series from :func:`discover_series`.

    Returns:
        ``(array, affine_ras)``: float32 array indexed [x, y, z] with RescaleSlope/Intercept applied (RGB data are
        converted to greyscale with ITU-R 601 weights), and the 4x4 RAS voxel-to-world affine.

    Raises:
        MedvolInputError: when the files cannot be stacked (different sizes) or the pixel data cannot be decoded.
    """
    if len(series.files) == 1:  # a multi-frame file is a volume already; the series reader would make it 4D
        reader = sitk.ImageFileReader()
        reader.SetFileName(series.files[0])
    else:
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(list(series.files))
    warnings_shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # medvol reports spacing problems itself, in words
    try:
        image = reader.Execute()
    except RuntimeError as err:
        first_line = str(err).strip().splitlines()[-1] if str(err).strip() else "unknown error"
        raise MedvolInputError(series.files[0], f"SimpleITK/GDCM cannot decode the series: {first_line}") from None
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warnings_shown)
    array = sitk.GetArrayFromImage(image)
    if image.GetNumberOfComponentsPerPixel() > 1:
        array = rgb_to_grey(array)
    if array.ndim == 2:
        array = array[None]
    array = np.ascontiguousarray(np.transpose(array, (2, 1, 0)), dtype=np.float32)
    if list(array.shape) != list(series.shape):
        raise MedvolInputError(
            series.files[0], f"series {series.uid}: decoded shape {list(array.shape)} != header shape {series.shape}"
        )
    return array, series.affine_ras


class DicomSeriesReader(ImageReader):
    """MONAI ``ImageReader`` for DICOM series folders with medvol's ordering, geometry and checks.

    ``LoadImage(reader=DicomSeriesReader())("study/series_folder")`` returns a MetaTensor indexed [x, y, z] with a
    RAS ``affine``, ``spacing`` and ``problems`` (plus ``skipped_files``) in its metadata.

    Args:
        series: SeriesInstanceUID or SeriesDescription to pick when a path holds several series; without it such a
            path raises ``MedvolInputError`` listing the choices.
    """

    def __init__(self, series: str | None = None):
        super().__init__()
        self.series = series

    def verify_suffix(self, filename: Sequence[str | os.PathLike] | str | os.PathLike) -> bool:
        return all(
            Path(f).is_dir() or not has_suffix(f, NIFTI_SUFFIXES + IMAGE_2D_SUFFIXES + (".npy", ".npz", ".json"))
            for f in ensure_tuple(filename)
        )

    def read(self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs):
        """Discover and select one series per path in ``data``; returns a list of ``(series, skipped_records)``."""
        loaded = []
        for path in ensure_tuple(data):
            scan = discover_series(path)
            series = select_series(scan, self.series)
            loaded.append((series, scan.skipped))
        return loaded

    def get_data(self, img) -> tuple[np.ndarray, dict]:
        """Voxels [x, y, z] (several paths stacked on a new first axis) and metadata of the first series."""
        arrays = []
        meta: dict = {}
        for series, skipped in img:
            array, affine = read_series(series)
            arrays.append(array)
            if not meta:
                meta = {
                    MetaKeys.AFFINE: affine,
                    MetaKeys.ORIGINAL_AFFINE: affine.copy(),
                    MetaKeys.SPATIAL_SHAPE: np.asarray(series.shape),
                    MetaKeys.SPACE: SpaceKeys.RAS,
                    MetaKeys.ORIGINAL_CHANNEL_DIM: float("nan") if len(img) == 1 else 0,
                    "spacing": np.asarray(series.spacing),
                    "series_uid": series.uid,
                    "volume_id": series.volume_id,
                    "series_description": series.description,
                    "modality": series.modality,
                    "patient_id": series.patient_id or "",
                    "problems": list(series.problems),
                    "synthetic": series.synthetic,
                    "skipped_files": [f"{r.path}: {r.reason}" for r in skipped],
                }
        return (arrays[0] if len(arrays) == 1 else np.stack(arrays)), meta
