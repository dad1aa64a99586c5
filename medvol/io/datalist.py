"""Datalists: which image belongs to which subject and class, built from the layouts radiology data comes in.

A datalist is a list of entries (plain dicts, the MONAI idiom) plus a `FileRecord` for every input file:

    {"image": "/abs/path.nii.gz", "id": "hippocampus_001", "subject": "hippocampus_001",
     "label": 1, "label_name": "lesion", "segmentation": "/abs/labels/hippocampus_001.nii.gz", "series_uid": "1.2..."}

`image` and `subject` are always present; `id` is unique per image; the other keys only when they apply.
Layouts (`build_datalist` picks one from what it finds under SOURCE):

- one folder per class (`root/<class>/*.png`): subject id ``"<class>/<stem>"``, because stems repeat across class
  folders (MedNIST has ``00000000.jpg`` in every class); a file in class folders is its own subject;
- a folder of NIfTI volumes or 2D images, optionally with a CSV of ``id,label`` (`apply_labels_csv`): subject id from
  the file stem (BIDS names ``sub-XX_...`` give ``sub-XX``, so all sessions of one subject stay together); when stems
  repeat in different sub-folders the id is the relative path without suffix;
- a Decathlon ``dataset.json`` (`datalist_from_decathlon_json`): images with their segmentations;
- a Decathlon layout without json, ``images/`` + ``labels/`` (`datalist_from_image_label_folders`): paired by name;
- a DICOM tree: every series is converted once to NIfTI under ``images_dir``; subject id from PatientID.

Who does what: file discovery, validation of NIfTI (nibabel) and 2D files (Pillow) and label parsing live here;
DICOM grouping, sorting and geometry checks come from `medvol.io.dicom` (SimpleITK/pydicom underneath).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medvol import __version__
from medvol.errors import MedvolInputError
from medvol.io.report import SKIPPED, USED, WARNING, FileRecord

NIFTI_SUFFIXES = (".nii.gz", ".nii")
IMAGE_2D_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ".ima"})
NON_IMAGE_SUFFIXES = frozenset(
    {".txt", ".csv", ".tsv", ".json", ".md", ".rst", ".py", ".xml", ".html", ".htm", ".pdf", ".log", ".yaml", ".yml",
     ".zip", ".tar", ".gz", ".npz", ".npy", ".pkl", ".pt", ".ini", ".cfg", ".doc", ".docx", ".xls", ".xlsx", ".sh"}
)
GREYSCALE_MODES = frozenset({"1", "L", "I", "I;16", "I;16B", "I;16L", "F"})
ID_COLUMNS = ("id", "subject", "subject_id", "patient", "patient_id", "patientid", "case", "case_id", "name")
PATH_COLUMNS = ("image", "path", "file", "filename", "file_name")
LABEL_COLUMNS = ("label", "class", "label_name", "class_name", "diagnosis", "target", "category", "y")
SPLIT_KEYS = ("training", "validation", "test")
DATALIST_FILE = "datalist.json"
REPORT_FILE = "report.json"
_BIDS_SUBJECT = re.compile(r"^(sub-[A-Za-z0-9]+)(?:_|$)")
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class Datalist:
    """Entries plus what happened to every input file.

    Args:
        entries: one dict per usable image (see the module docstring for the keys).
        records: input file path (or ``csv:line`` for label rows) -> `FileRecord`, in discovery order.
        source: what the datalist was built from.
        source_spatial_dims: 3 for volumes, 2 for 2D images.
        classes: class names; an entry's ``label`` indexes this list. Empty when unlabelled.
        modality: most common DICOM/Decathlon modality of the entries (``"CT"``, ``"MR"``, ...), None when unknown.
        messages: dataset-level warnings (for example the list of files converted from RGB).
        labels_csv: the CSV the class labels came from, if any.
    """

    entries: list[dict]
    records: dict[str, FileRecord]
    source: str
    source_spatial_dims: int
    classes: list[str] = field(default_factory=list)
    modality: str | None = None
    messages: list[str] = field(default_factory=list)
    labels_csv: str | None = None

    def record(self, path: str | Path, status: str, reason: str = "", subject: str | None = None) -> None:
        """Set the outcome of `path`; a warning or skip keeps the reason recorded earlier for the same file."""
        key = str(path)
        previous = self.records.get(key)
        if previous is not None and previous.reason and status != USED and previous.reason not in reason:
            reason = f"{reason}; {previous.reason}" if reason else previous.reason
        if subject is None and previous is not None:
            subject = previous.subject
        self.records[key] = FileRecord(key, status, reason, subject)

    def drop_entries(self, keep: Sequence[bool], reason: str | Sequence[str]) -> None:
        """Remove entries whose `keep` flag is False and mark their input files skipped with `reason` (one per entry
        or one for all)."""
        reasons = [reason] * len(self.entries) if isinstance(reason, str) else list(reason)
        kept = []
        for entry, keep_it, reason in zip(self.entries, keep, reasons):
            if keep_it:
                kept.append(entry)
            else:
                for path in entry.get("_record_paths", [entry["image"]]):
                    self.record(path, SKIPPED, reason, entry["subject"])
        self.entries = kept

    def summary(self) -> dict:
        """Counts of records per status, entries, subjects and entries per class."""
        counts = Counter(r.status for r in self.records.values())
        summary = {
            "files": len(self.records),
            USED: counts.get(USED, 0),
            WARNING: counts.get(WARNING, 0),
            SKIPPED: counts.get(SKIPPED, 0),
            "entries": len(self.entries),
            "subjects": len({e["subject"] for e in self.entries}),
        }
        if self.classes:
            per_class = Counter(e["label"] for e in self.entries)
            summary["per_class"] = {name: per_class.get(i, 0) for i, name in enumerate(self.classes)}
        return summary


# ----------------------------------------------------------------------------------------------------- file helpers
def image_suffix(path: str | Path) -> str:
    """Lower-case suffix that knows ``.nii.gz``."""
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def image_stem(path: str | Path) -> str:
    """File name without ``.nii.gz`` / ``.nii`` / the last suffix."""
    name = Path(path).name
    suffix = image_suffix(path)
    return name[: -len(suffix)] if suffix else name


def subject_from_stem(stem: str) -> str:
    """Subject id of a file stem: the BIDS ``sub-<label>`` part when present, else the stem itself."""
    match = _BIDS_SUBJECT.match(stem)
    return match.group(1) if match else stem


def _safe_name(text: str) -> str:
    return _UNSAFE_NAME.sub("_", text).strip("_") or "unnamed"


def _has_dicom_preamble(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def classify_file(path: Path) -> str:
    """``nifti``, ``image2d``, ``dicom`` (a candidate: DICOM suffix, no suffix, or the DICM preamble), ``other``."""
    if path.name.startswith("."):
        return "other"
    suffix = image_suffix(path)
    if suffix in NIFTI_SUFFIXES:
        return "nifti"
    if suffix in IMAGE_2D_SUFFIXES:
        return "image2d"
    if suffix in DICOM_SUFFIXES or not suffix:
        return "dicom"
    if suffix not in NON_IMAGE_SUFFIXES and _has_dicom_preamble(path):
        return "dicom"
    return "other"


def list_files(root: Path, exclude: Sequence[Path] = ()) -> list[Path]:
    """Every file under `root` (recursively, skipping hidden folders and folders of `exclude` inside `root`), sorted."""
    root = root.resolve()
    excluded = [e for e in (Path(x).resolve() for x in exclude) if e != root and e.is_relative_to(root)]
    return sorted(
        p for p in root.rglob("*")
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts[:-1])
        and not any(p.resolve().is_relative_to(e) for e in excluded)
    )


def _not_an_image_reason(path: Path) -> str:
    if path.name.startswith("."):
        return "hidden file, not an image"
    suffix = image_suffix(path)
    return f"not an image file ({suffix} file)" if suffix else "not an image file"


def _progress(items, desc: str, total: int | None = None):
    """tqdm on a terminal, plain iteration otherwise (tqdm's ``disable=None`` turns it off without a TTY)."""
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, total=total, unit="file", disable=None, leave=False)


# ------------------------------------------------------------------------------------------------ file validation
def check_nifti(path: Path, read_voxels: bool = True) -> tuple[str, str, tuple[int, ...] | None]:
    """Validate one NIfTI file with nibabel.

    Args:
        path: the file.
        read_voxels: also read the voxels to reject NaN/Inf and flag constant images (otherwise the header only).

    Returns:
        (status, reason, spatial shape or None): status ``used``, ``warning`` or ``skipped``.
    """
    import nibabel as nib

    try:
        image = nib.load(str(path))
        shape = tuple(int(s) for s in image.shape)
    except Exception as err:  # nibabel raises many types for broken files
        return SKIPPED, f"unreadable NIfTI: {err}", None
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) not in (2, 3):
        return SKIPPED, f"NIfTI has {len(shape)} dimensions {list(image.shape)}; expected a 2D or 3D image", None
    if min(shape) < 1:
        return SKIPPED, f"NIfTI has an empty dimension {list(shape)}", None
    if not np.all(np.isfinite(image.affine)):
        return SKIPPED, "NIfTI affine contains NaN/Inf", shape
    if not read_voxels:
        return USED, "", shape
    try:
        voxels = np.asanyarray(image.dataobj)
    except Exception as err:
        return SKIPPED, f"unreadable NIfTI voxels (truncated file?): {err}", shape
    if np.issubdtype(voxels.dtype, np.inexact):
        bad = int(np.count_nonzero(~np.isfinite(voxels)))
        if bad:
            return SKIPPED, f"NIfTI contains {bad} NaN/Inf voxels of {voxels.size}", shape
    if voxels.size and voxels.min() == voxels.max():
        return WARNING, f"image is constant (every voxel = {voxels.flat[0]})", shape
    return USED, "", shape


def check_image_2d(path: Path) -> tuple[str, str, str | None]:
    """Validate one PNG/JPEG/... with Pillow (decodes it, which takes well under a millisecond for thumbnails).

    Returns:
        (status, reason, converted_from): `converted_from` is the Pillow mode (``"RGB"``, ``"P"``, ...) when the
        image is colour and will be read as ITU-R 601 greyscale, None when it is greyscale already.
    """
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            frames = getattr(image, "n_frames", 1)
    except Exception as err:  # Pillow raises OSError, SyntaxError, ValueError... for broken files
        return SKIPPED, f"unreadable image: {err}", None
    reasons = []
    converted_from = None if mode in GREYSCALE_MODES else mode
    if converted_from:
        reasons.append(f"{mode} image read as greyscale with ITU-R 601 weights")
    if frames > 1:
        reasons.append(f"{frames} frames, only the first is used")
    return (WARNING if reasons else USED), "; ".join(reasons), converted_from


# -------------------------------------------------------------------------------------------------- the builders
def _unique_ids(paths: Sequence[Path], root: Path) -> dict[Path, str]:
    """Id per file: the stem, or the relative path without suffix for every file whose stem repeats."""
    stems = Counter(image_stem(p) for p in paths)
    ids = {}
    for path in paths:
        stem = image_stem(path)
        if stems[stem] > 1:
            relative = path.relative_to(root) if path.is_relative_to(root) else path
            stem = (relative.parent / image_stem(relative)).as_posix()
        ids[path] = stem
    return ids


def _add_image_entries(datalist: Datalist, paths: Sequence[Path], ids: dict[Path, str], kind: str,
                       subjects: dict[Path, str] | None = None) -> None:
    """Validate NIfTI or 2D files and append an entry for every usable one."""
    converted = []
    for path in _progress(paths, f"checking {kind} files"):
        if kind == "nifti":
            status, reason, _ = check_nifti(path)
        else:
            status, reason, converted_from = check_image_2d(path)
            if converted_from:
                converted.append(str(path))
        image_id = ids[path]
        subject = subjects[path] if subjects else subject_from_stem(image_id)
        datalist.record(path, status, reason, subject)
        if status != SKIPPED:
            datalist.entries.append({"image": str(path), "id": image_id, "subject": subject})
    if converted:
        shown = ", ".join(converted[:20]) + (f" and {len(converted) - 20} more" if len(converted) > 20 else "")
        datalist.messages.append(f"{len(converted)} colour image(s) converted to greyscale (ITU-R 601): {shown}")


def _add_dicom_entries(
    datalist: Datalist, root: Path, candidates: Sequence[Path], images_dir: Path | None
) -> list[int]:
    """Discover the DICOM series under `root`, convert each to NIfTI and append one entry per series.

    Returns:
        spatial dims of each entry added: 2 for radiographs (single-frame files, or files without slice geometry,
        each written as a one-slice NIfTI), 3 for volumes.
    """
    from medvol.io.dicom import discover_series, read_header, read_series
    from medvol.io.images import read_image_2d
    from medvol.io.nifti import write_nifti

    if images_dir is None:
        raise MedvolInputError(root, "holds DICOM files; converting them to NIfTI needs an output folder")
    candidate_set = {p.resolve() for p in candidates}
    scan = discover_series(root, files=sorted(candidate_set))
    for record in scan.records:  # used, warning (series problems) or skipped (not DICOM, unreadable, ...)
        datalist.record(Path(record.path).resolve(), record.status, record.reason, record.subject)
    for path in sorted(candidate_set):
        record = datalist.records.get(str(path))
        if record is None or (record.status == SKIPPED and not record.reason):
            datalist.record(path, SKIPPED, "not part of any readable DICOM series")
    dims = []
    images_dir.mkdir(parents=True, exist_ok=True)
    modalities = []
    for series in _progress(scan.series, "converting DICOM series"):
        files = [Path(f).resolve() for f in series.files]
        subject = str(series.patient_id).strip() if series.patient_id else ""
        if not subject:
            subject = f"series-{series.uid}"
            datalist.messages.append(f"series {series.uid} has no PatientID: subject id set to {subject!r}")
        if _is_2d_dicom_series(series, read_header):
            # radiographs: every file is its own 2D image (a one-slice NIfTI), read as greyscale like a PNG
            for path in files:
                header, _ = read_header(path)
                file_subject = (str(header.get("PatientID") or "").strip() if header is not None else "") or subject
                name = f"{_safe_name(file_subject)}_{_safe_name(series.uid)}_{_safe_name(path.stem)}.nii.gz"
                output = images_dir / name
                try:
                    pixels, converted_from = read_image_2d(path)
                    write_nifti(pixels[..., None], series.affine_ras, output)
                except MedvolInputError as err:
                    datalist.record(path, SKIPPED, err.problem, file_subject)
                    continue
                datalist.records[str(path)].subject = file_subject
                if converted_from:
                    datalist.record(path, WARNING, f"{converted_from} image read as greyscale", file_subject)
                datalist.entries.append({
                    "image": str(output), "id": f"{file_subject}/{series.uid}/{path.stem}", "subject": file_subject,
                    "series_uid": series.uid, "series_description": series.description or "",
                    "modality": str(header.get("Modality") or "") if header is not None else "",
                    "_record_paths": [str(path)]})
                dims.append(2)
            continue
        output = images_dir / f"{_safe_name(subject)}_{_safe_name(series.uid)}.nii.gz"
        try:
            if not _is_up_to_date(output, files):  # an earlier run converted the unchanged series already
                voxels, affine = read_series(series)
                write_nifti(np.asarray(voxels, dtype=np.float32), affine, output)
        except MedvolInputError as err:
            reason = err.problem
        except Exception as err:  # a broken series must not take the others with it
            reason = f"series {series.uid} could not be read: {err}"
        else:
            reason = ""
        if reason:
            for path in files:
                datalist.record(path, SKIPPED, reason, subject)
            continue
        for path in files:  # keep the scan's status and reason (series problems), set the subject
            datalist.records[str(path)].subject = subject
        datalist.entries.append({
            "image": str(output), "id": f"{subject}/{series.uid}", "subject": subject, "series_uid": series.uid,
            "series_description": series.description or "", "modality": series.modality or "",
            "_record_paths": [str(p) for p in files]})
        dims.append(3)
        modalities.append(series.modality)
    if modalities:
        datalist.modality = Counter(m for m in modalities if m).most_common(1)[0][0] if any(modalities) else None
    return dims


def _is_up_to_date(output: Path, inputs: Sequence[Path]) -> bool:
    try:
        return output.stat().st_mtime_ns >= max(p.stat().st_mtime_ns for p in inputs)
    except (OSError, ValueError):
        return False


def _is_2d_dicom_series(series, read_header) -> bool:
    """Single-frame single-file series, or several files without slice geometry (separate 2D images)."""
    if len(series.files) == 1:
        return int(series.shape[2]) == 1
    header, _ = read_header(series.files[0])
    return header is not None and not ("ImagePositionPatient" in header and "ImageOrientationPatient" in header)


def datalist_from_files(root: str | Path, images_dir: str | Path | None = None, class_folders: bool | None = None,
                        exclude: Sequence[Path] = ()) -> Datalist:
    """Datalist of every image under a folder: NIfTI, 2D images and DICOM series, unlabelled or one folder per class.

    Args:
        root: the folder.
        images_dir: where DICOM series are converted to NIfTI (needed only when DICOM files are present).
        class_folders: take the label from the first-level sub-folder. None: yes when every image lies exactly one
            level down, in at least two sub-folders, and there is no DICOM (DICOM studies keep one folder per series).
        exclude: folders under `root` to leave out (for example the output folder of `medvol prepare`).

    Raises:
        MedvolInputError: `root` is missing, empty, or holds no image of any kind.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise MedvolInputError(root, "folder does not exist" if not root.exists() else "is not a folder")
    files = list_files(root, exclude)
    if not files:
        raise MedvolInputError(root, "folder is empty (no files)")
    kinds = defaultdict(list)
    for path in files:
        kinds[classify_file(path)].append(path)
    datalist = Datalist([], {}, str(root), 3)
    for path in files:  # placeholder records keep discovery order in the report
        datalist.records[str(path)] = FileRecord(str(path), SKIPPED, "", None)
    for path in kinds["other"]:
        datalist.record(path, SKIPPED, _not_an_image_reason(path))

    volumes, images_2d, dicoms = kinds["nifti"], kinds["image2d"], kinds["dicom"]
    if class_folders is None:
        tops = {p.relative_to(root).parts[0] for p in volumes + images_2d if len(p.relative_to(root).parts) == 2}
        everything_one_down = all(len(p.relative_to(root).parts) == 2 for p in volumes + images_2d)
        class_folders = bool(volumes or images_2d) and everything_one_down and len(tops) >= 2 and not dicoms
    ids = _unique_ids(volumes + images_2d, root)
    subjects = None
    if class_folders:
        ids = {p: f"{p.parent.name}/{image_stem(p)}" for p in volumes + images_2d}
        subjects = ids
    if volumes:
        _add_image_entries(datalist, volumes, ids, "nifti", subjects)
    if images_2d:
        _add_image_entries(datalist, images_2d, ids, "image2d", subjects)
    dims = [2 if image_suffix(e["image"]) in IMAGE_2D_SUFFIXES else _nifti_dims(e["image"]) for e in datalist.entries]
    if dicoms:
        dims += _add_dicom_entries(datalist, root, dicoms, None if images_dir is None else Path(images_dir))
    _keep_one_dimensionality(datalist, dims)
    if class_folders:
        names = sorted({Path(e["image"]).parent.name for e in datalist.entries})
        datalist.classes = names
        for entry in datalist.entries:
            entry["label_name"] = Path(entry["image"]).parent.name
            entry["label"] = names.index(entry["label_name"])
    return datalist


def _nifti_dims(path: str) -> int:
    import nibabel as nib

    shape = [s for s in nib.load(path).shape]
    while len(shape) > 3 and shape[-1] == 1:
        shape.pop()
    return 2 if len(shape) == 2 or shape[-1] == 1 else 3


def _keep_one_dimensionality(datalist: Datalist, dims: Sequence[int]) -> None:
    """A dataset is 2D or 3D: when both occur, keep the majority and skip the others with a reason."""
    counts = Counter(dims)
    if not counts:
        datalist.source_spatial_dims = 3
        return
    majority = max(counts, key=lambda d: (counts[d], d))
    datalist.source_spatial_dims = majority
    if len(counts) > 1:
        minority = 5 - majority
        datalist.drop_entries([d == majority for d in dims], f"{minority}D image in a dataset of {majority}D images")
        datalist.messages.append(f"{counts[minority]} {minority}D image(s) skipped: the dataset is {majority}D")


def datalist_from_image_label_folders(root: str | Path) -> Datalist:
    """Decathlon layout without dataset.json: ``root/images`` (or ``imagesTr``) and ``root/labels`` (``labelsTr``).

    Images and segmentations pair by file name (an nnU-Net channel suffix ``_0000`` on the image is ignored).
    Labels without an image and labels whose shape differs from their image are reported and skipped; images
    without a label are kept, with a warning.
    """
    root = Path(root).resolve()
    images_dir, labels_dir = _image_label_dirs(root)
    datalist = datalist_from_files(images_dir, class_folders=False)
    datalist.source = str(root)
    by_name = {}
    for entry in datalist.entries:
        stem = image_stem(entry["image"])
        by_name[re.sub(r"_0000$", "", stem)] = entry
    label_files = list_files(labels_dir)
    for path in label_files:
        if classify_file(path) not in ("nifti", "image2d"):
            datalist.record(path, SKIPPED, _not_an_image_reason(path) + " (in the labels folder)")
            continue
        stem = image_stem(path)
        entry = by_name.get(stem)
        if entry is None:
            reason = f"label without image: no {stem} image in {images_dir}"
            datalist.record(path, SKIPPED, reason, subject_from_stem(stem))
            continue
        shape, reason = _header_shape(path)
        image_shape, _ = _header_shape(Path(entry["image"]))
        if shape is None:
            datalist.record(path, SKIPPED, reason, entry["subject"])
        elif shape != image_shape:
            reason = f"label shape {list(shape)} differs from image shape {list(image_shape)}"
            datalist.record(path, SKIPPED, reason, entry["subject"])
        else:
            datalist.record(path, USED, "", entry["subject"])
            entry["segmentation"] = str(path)
    for entry in datalist.entries:
        if "segmentation" not in entry:
            datalist.record(entry["image"], WARNING, f"no segmentation label in {labels_dir}", entry["subject"])
    for path in list_files(root):
        inside = path.is_relative_to(images_dir) or path.is_relative_to(labels_dir)
        if str(path) not in datalist.records and not inside:
            datalist.record(path, SKIPPED, _not_an_image_reason(path) if classify_file(path) == "other"
                            else "outside the images/ and labels/ folders")
    return datalist


def _header_shape(path: Path) -> tuple[tuple[int, ...] | None, str]:
    """Spatial shape [x, y(, z)] from the header alone (NIfTI via nibabel, 2D via Pillow), or (None, reason)."""
    if image_suffix(path) in NIFTI_SUFFIXES:
        status, reason, shape = check_nifti(path, read_voxels=False)
        return (None, reason) if status == SKIPPED else (shape, "")
    from PIL import Image

    try:
        with Image.open(path) as image:
            return tuple(image.size), ""  # Pillow's size is (columns, rows) = [x, y]
    except Exception as err:  # Pillow raises many types for broken files
        return None, f"unreadable image: {err}"


def _image_label_dirs(root: Path) -> tuple[Path, Path] | None:
    for images, labels in (("images", "labels"), ("imagesTr", "labelsTr")):
        if (root / images).is_dir() and (root / labels).is_dir():
            return root / images, root / labels
    return None


def datalist_from_decathlon_json(json_path: str | Path) -> Datalist:
    """Datalist of a Medical Segmentation Decathlon ``dataset.json``.

    ``training`` items give image + segmentation (``label`` as a path), ``test`` items (paths or dicts) give
    images only. An integer or non-path ``label``/``class`` is read as a class label instead. Items whose image is
    missing are reported; a missing segmentation drops only the segmentation (warning).

    Raises:
        MedvolInputError: unreadable json, no ``training``/``test`` list, or items of the wrong type.
    """
    json_path = Path(json_path).resolve()
    try:
        description = json.loads(json_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise MedvolInputError(json_path, f"not a readable dataset.json: {err}") from None
    if not isinstance(description, dict) or not any(isinstance(description.get(k), list) for k in SPLIT_KEYS):
        raise MedvolInputError(json_path, "no 'training' or 'test' list: not a Decathlon dataset.json")
    base = json_path.parent
    datalist = Datalist([], {}, str(json_path), 3)
    datalist.record(json_path, USED, "dataset description")
    modality = description.get("modality")
    if isinstance(modality, dict) and modality:
        first = str(next(iter(modality.values()))).upper()
        datalist.modality = "CT" if first == "CT" else ("MR" if first.startswith("M") else first)
    items = []
    for key in SPLIT_KEYS:
        for position, item in enumerate(description.get(key) or []):
            if isinstance(item, str):
                item = {"image": item}
            if not isinstance(item, dict) or not isinstance(item.get("image"), str):
                raise MedvolInputError(
                    json_path, f"{key}[{position}] is not an image path or a dict with an 'image' path")
            items.append(item)
    class_names = {}
    paths = [(base / item["image"]).resolve() for item in items]
    ids = _unique_ids(paths, base)
    for item, path in zip(items, paths):
        subject = subject_from_stem(ids[path])
        if not path.is_file():
            datalist.record(path, SKIPPED, f"image listed in {json_path.name} does not exist", subject)
            continue
        status, reason, _ = check_nifti(path) if image_suffix(path) in NIFTI_SUFFIXES else check_image_2d(path)
        datalist.record(path, status, reason, subject)
        if status == SKIPPED:
            continue
        entry = {"image": str(path), "id": ids[path], "subject": subject}
        label = item.get("label", item.get("class"))
        if isinstance(label, str) and image_suffix(label) in set(NIFTI_SUFFIXES) | IMAGE_2D_SUFFIXES:
            label_path = (base / label).resolve()
            if label_path.is_file():
                entry["segmentation"] = str(label_path)
                datalist.record(label_path, USED, "", subject)
            else:
                datalist.record(label_path, SKIPPED, f"segmentation listed in {json_path.name} does not exist", subject)
                datalist.record(path, WARNING, f"its segmentation {label} does not exist", subject)
        elif label is not None:
            class_names[id(entry)] = str(label)
        datalist.entries.append(entry)
    if class_names:
        labelled = [id(e) in class_names for e in datalist.entries]
        datalist.drop_entries(labelled, f"no class label in {json_path.name} while other items have one")
        _assign_classes(datalist, [class_names[id(e)] for e in datalist.entries])
    dims = [2 if image_suffix(e["image"]) in IMAGE_2D_SUFFIXES else _nifti_dims(e["image"]) for e in datalist.entries]
    _keep_one_dimensionality(datalist, dims)
    return datalist


def _class_sort_key(name: str):
    try:
        return (0, float(name), name)
    except ValueError:
        return (1, 0.0, name)


def _assign_classes(datalist: Datalist, names: Sequence[str], class_order: Sequence[str] | None = None) -> None:
    """Set ``label``/``label_name`` on every entry; classes sorted (numerically when all numbers) unless ordered."""
    present = set(names)
    if class_order is not None:
        unknown = present - set(class_order)
        if unknown:
            raise MedvolInputError(None, f"labels {sorted(unknown)} are not among the classes {list(class_order)}")
        classes = list(class_order)
    else:
        classes = sorted(present, key=_class_sort_key)
    datalist.classes = classes
    for entry, name in zip(datalist.entries, names):
        entry["label_name"] = name
        entry["label"] = classes.index(name)


# ------------------------------------------------------------------------------------------------- labels from CSV
@dataclass
class _CsvRow:
    line: int
    cells: list[str]


def _read_csv_rows(csv_path: Path) -> tuple[list[_CsvRow], str]:
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise MedvolInputError(csv_path, "labels CSV does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise MedvolInputError(csv_path, f"labels CSV is not readable text: {err}") from None
    lines = text.splitlines()
    first = next((line for line in lines if line.strip()), "")
    if not first:
        raise MedvolInputError(csv_path, "labels CSV is empty")
    delimiter = max(",;\t", key=first.count) if any(d in first for d in ",;\t") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows = []
    try:
        for cells in reader:
            while cells and not cells[-1].strip() and len(cells) > 1:  # trailing separators
                cells = cells[:-1]
            if any(c.strip() for c in cells):
                rows.append(_CsvRow(reader.line_num, cells))
    except csv.Error as err:
        raise MedvolInputError(csv_path, f"line {reader.line_num}: {err}") from None
    return rows, delimiter


def _columns(header: list[str]) -> tuple[int | None, int | None, int | None]:
    names = [c.strip().lower() for c in header]

    def find(options):
        return next((names.index(o) for o in options if o in names), None)

    return find(ID_COLUMNS), find(PATH_COLUMNS), find(LABEL_COLUMNS)


def apply_labels_csv(datalist: Datalist, csv_path: str | Path, class_order: Sequence[str] | None = None) -> Datalist:
    """Give every entry its class from a CSV of ``id,label`` and report every problem of the CSV.

    The id of a row matches an entry's ``id``, ``subject``, file name or stem, or DICOM series uid (a subject id
    labels all its images). Optional path column (``image``/``path``/``file``), the id when there is no id column:
    resolved against the CSV's folder, then SOURCE; a missing file is reported.
    Per row, reported as ``<csv>:<line>`` records:

    - ids with an inner space that match no image but match exactly one image once the space becomes ``_``, ``-``
      or nothing, and rows split into extra columns by an unquoted space or separator inside the id when joining the
      pieces gives exactly one known id: repaired (warning);
    - ids that contain the CSV separator (quoted): warning;
    - unknown ids, empty labels: skipped rows; duplicate ids: warning when the label agrees, else the subject's
      images are skipped (conflicting labels);
    - images without a label: skipped.

    Args:
        datalist: entries to label (changed in place and returned).
        csv_path: the CSV (``,`` ``;`` or tab separated, with a header naming the id and label columns, or two
            columns without header when the first row's id is a known image).
        class_order: fixed class order (``label`` indexes it); default sorted names (numerically when numbers).

    Raises:
        MedvolInputError: unreadable or empty CSV, no id/label columns, a row whose repair is ambiguous, or no id
            matching any image.
    """
    csv_path = Path(csv_path).resolve()
    rows, delimiter = _read_csv_rows(csv_path)
    lookup: dict[str, set[int]] = defaultdict(set)
    for index, entry in enumerate(datalist.entries):
        image = Path(entry["image"])
        for key in (entry["id"], entry["subject"], image.name, image_stem(image), entry.get("series_uid"), str(image)):
            if key:
                lookup[key].add(index)
    id_col, path_col, label_col = _columns(rows[0].cells)
    if label_col is not None and (id_col is not None or path_col is not None):
        header, body = rows[0].cells, rows[1:]
    elif len(rows[0].cells) == 2 and rows[0].cells[0].strip() in lookup:
        header, body, id_col, path_col, label_col = ["id", "label"], rows, 0, None, 1
    else:
        raise MedvolInputError(
            csv_path, f"header {rows[0].cells} names no id column ({', '.join(ID_COLUMNS[:3])}, ...) and label "
            f"column ({', '.join(LABEL_COLUMNS[:3])}, ...), and its first row is not 'id,label' of a known image")
    key_col = id_col if id_col is not None else path_col
    sep_name = {",": "comma", ";": "semicolon", "\t": "tab"}[delimiter]
    csv_records: list[FileRecord] = []

    def note(line: int, status: str, reason: str, subject: str | None = None):
        csv_records.append(FileRecord(f"{csv_path}:{line}", status, reason, subject))

    ambiguous = []
    labels_of: dict[int, tuple[str, int]] = {}  # entry index -> (label, line)
    conflicted: dict[int, str] = {}
    seen_ids: dict[str, tuple[str, int]] = {}
    for row in body:
        cells = [c.strip() for c in row.cells]
        extra = len(cells) - len(header)
        if extra > 0:
            pieces = cells[key_col: key_col + extra + 1]
            joined = {j.join(pieces) for j in (" ", delimiter, "_", "-", "")}
            matches = {k for k in joined if k in lookup}
            targets = {frozenset(lookup[k]) for k in matches}
            if len(targets) != 1:
                ambiguous.append(f"line {row.line}: {len(cells)} columns where the header has {len(header)} "
                                 f"({row.cells}); joining {pieces} gives {'several' if targets else 'no'} known id")
                continue
            repaired = sorted(matches)[0]
            cells = cells[:key_col] + [repaired] + cells[key_col + extra + 1:]
            note(row.line, WARNING, f"id split into {extra + 1} columns by an unquoted space or {sep_name}; "
                 f"repaired to {repaired!r}", repaired)
        elif extra < 0 and len(cells) <= max(key_col, label_col if label_col is not None else 0):
            note(row.line, SKIPPED, f"only {len(cells)} column(s), expected {len(header)}")
            continue
        key = cells[key_col]
        if path_col is not None and path_col < len(cells) and cells[path_col]:
            listed = cells[path_col]
            path = next((b / listed for b in (csv_path.parent, Path(datalist.source)) if (b / listed).is_file()), None)
            if path is None:
                note(row.line, SKIPPED, f"missing image: {listed} exists neither next to the CSV nor under "
                     f"{datalist.source}", None if key_col == path_col else key)
                continue
            if key_col == path_col:
                key = str(path.resolve())
        if delimiter in key:
            note(row.line, WARNING, f"id {key!r} contains the CSV separator ({sep_name}); quote or rename such ids",
                 key)
        if key not in lookup and " " in key:
            candidates = {key.replace(" ", j) for j in ("_", "-", "")}
            targets = {frozenset(lookup[c]) for c in candidates if c in lookup}
            if len(targets) > 1:
                ambiguous.append(f"line {row.line}: id {key!r} with a space matches several images "
                                 f"({sorted(c for c in candidates if c in lookup)})")
                continue
            if targets:
                repaired = next(c for c in sorted(candidates) if c in lookup)
                note(row.line, WARNING, f"id {key!r} contains a space; repaired to {repaired!r}", repaired)
                key = repaired
        label = cells[label_col].strip() if label_col is not None and label_col < len(cells) else ""
        if key not in lookup:
            note(row.line, SKIPPED, f"unknown id {key!r}: no image under {datalist.source} has this id", key)
            continue
        if not label:
            note(row.line, SKIPPED, f"empty label for {key!r}", key)
            continue
        if key in seen_ids:
            first_label, first_line = seen_ids[key]
            if first_label == label:
                note(row.line, WARNING, f"duplicate id {key!r} (same label as line {first_line})", key)
            else:
                note(row.line, SKIPPED, f"duplicate id {key!r}: label {label!r} here, {first_label!r} on line "
                     f"{first_line}; its images are skipped", key)
                for index in lookup[key]:
                    conflicted[index] = f"conflicting labels in {csv_path.name} (lines {first_line} and {row.line})"
            continue
        seen_ids[key] = (label, row.line)
        for index in lookup[key]:
            if index in labels_of and labels_of[index][0] != label:
                conflicted[index] = (f"conflicting labels in {csv_path.name} (lines {labels_of[index][1]} and "
                                     f"{row.line}, for the image and its subject)")
            labels_of[index] = (label, row.line)
    if ambiguous:
        more = f" (and {len(ambiguous) - 1} more such rows)" if len(ambiguous) > 1 else ""
        raise MedvolInputError(csv_path, f"{ambiguous[0]}{more}; fix or quote these rows")
    if datalist.entries and not labels_of:
        example = datalist.entries[0]["id"]
        raise MedvolInputError(csv_path, f"none of its {len(body)} ids matches an image under {datalist.source} "
                               f"(image ids look like {example!r})")
    datalist.records[str(csv_path)] = FileRecord(str(csv_path), USED, "labels CSV")
    datalist.labels_csv = str(csv_path)
    for record in csv_records:
        datalist.records[record.path] = record
    keep = [i in labels_of and i not in conflicted for i in range(len(datalist.entries))]
    names = [labels_of[i][0] for i, keep_it in enumerate(keep) if keep_it]
    datalist.drop_entries(keep, [conflicted.get(i, f"no label in {csv_path.name}") for i in range(len(keep))])
    _assign_classes(datalist, names, class_order)
    return datalist


# ------------------------------------------------------------------------------------------------ layout detection
def build_datalist(source: str | Path, images_dir: str | Path | None = None, labels_csv: str | Path | None = None,
                   class_order: Sequence[str] | None = None, require_entries: bool = True,
                   exclude: Sequence[Path] = ()) -> Datalist:
    """Datalist of SOURCE, whatever its layout (see the module docstring), with labels from `labels_csv`.

    Order of precedence: a ``.json`` file or a folder holding ``dataset.json`` (Decathlon); a folder with
    ``images/`` and ``labels/`` (Decathlon without json); any other folder (NIfTI, 2D images, DICOM tree; one folder
    per class unless a CSV gives the labels). A ``labels.csv`` at the top of SOURCE is used when `labels_csv` is None.

    Args:
        source: file or folder.
        images_dir: where DICOM series are converted to NIfTI.
        labels_csv: CSV of id,label.
        class_order: fixed class order for CSV labels.
        require_entries: raise when no usable image is left (set False to write a report first, then call
            `require_usable`).
        exclude: folders inside SOURCE to leave out (an output folder placed inside SOURCE).

    Raises:
        MedvolInputError: SOURCE missing or empty, nothing usable in it, or a bad labels CSV.
    """
    source = Path(source).expanduser().resolve()
    if not source.exists():
        raise MedvolInputError(source, "does not exist")
    if source.is_file():
        if source.suffix.lower() != ".json":
            raise MedvolInputError(source, "SOURCE must be a folder or a Decathlon dataset.json")
        datalist = datalist_from_decathlon_json(source)
    elif (source / "dataset.json").is_file():
        datalist = datalist_from_decathlon_json(source / "dataset.json")
        for path in list_files(source):
            if str(path) not in datalist.records and classify_file(path) != "other":
                datalist.record(path, SKIPPED, "image not listed in dataset.json")
    elif _image_label_dirs(source):
        datalist = datalist_from_image_label_folders(source)
    else:
        auto_csv = source / "labels.csv"
        found_csv = labels_csv is None and auto_csv.is_file()
        if found_csv:
            labels_csv = auto_csv
        datalist = datalist_from_files(source, images_dir, class_folders=False if labels_csv else None, exclude=exclude)
        if found_csv:
            datalist.messages.append(f"labels read from {auto_csv} (found in SOURCE; --labels overrides it)")
    if labels_csv is not None:
        if datalist.classes:
            datalist.messages.append(f"class labels of {datalist.source} replaced by those of {labels_csv}")
        apply_labels_csv(datalist, labels_csv, class_order)
    if require_entries:
        require_usable(datalist)
    return datalist


def require_usable(datalist: Datalist) -> None:
    """Raise `MedvolInputError` naming the source and the first skip reason when no entry is left."""
    if datalist.entries:
        return
    skipped = [r for r in datalist.records.values() if r.status == SKIPPED]
    example = f"; e.g. {skipped[0].path}: {skipped[0].reason}" if skipped else ""
    raise MedvolInputError(
        datalist.source, f"nothing usable: none of its {len(datalist.records)} files gave an image{example}")


# -------------------------------------------------------------------------------------------------- json files
def entries_for_json(entries: Iterable[dict]) -> list[dict]:
    """Entries without private keys (those starting with ``_``)."""
    return [{k: v for k, v in entry.items() if not k.startswith("_")} for entry in entries]


def write_datalist(path: str | Path, datalist: Datalist, splits: dict[str, list[dict]], **metadata) -> dict:
    """Write ``datalist.json`` (Decathlon-style split lists so `monai.data.load_decathlon_datalist` reads it).

    Args:
        path: output file.
        datalist: the datalist (source, classes).
        splits: ``{"training": [...], "validation": [...], "test": [...]}`` entries.
        metadata: further top-level keys (mode, spatial_dims, seed, split_fractions, preprocessing, intensity...).

    Returns:
        the written document.
    """
    document = {"medvol_version": __version__, "source": datalist.source, "classes": list(datalist.classes),
                "source_spatial_dims": datalist.source_spatial_dims, **metadata}
    for key in SPLIT_KEYS:
        document[key] = entries_for_json(splits.get(key, []))
    document["numTraining"] = len(document["training"])
    document["numValidation"] = len(document["validation"])
    document["numTest"] = len(document["test"])
    _write_json(path, document)
    return document


def write_report(path: str | Path, datalist: Datalist, **extra) -> dict:
    """Write ``report.json``: every input file with status, reason and subject, summary counts and messages."""
    document = {"source": datalist.source, "files": [r.to_dict() for r in datalist.records.values()],
                "summary": {**datalist.summary(), **extra.pop("summary", {})}, "messages": list(datalist.messages),
                **extra}
    _write_json(path, document)
    return document


def read_datalist(path: str | Path) -> dict:
    """Read a ``datalist.json`` written by `write_datalist`.

    Raises:
        MedvolInputError: the file is missing, not json, or lacks the split lists.
    """
    path = Path(path)
    if path.is_dir():
        path = path / DATALIST_FILE
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise MedvolInputError(path, "datalist does not exist (run `medvol prepare` first)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise MedvolInputError(path, f"not a readable datalist: {err}") from None
    missing = [k for k in SPLIT_KEYS if not isinstance(document.get(k), list)]
    if missing:
        raise MedvolInputError(path, f"datalist lacks the lists {missing}")
    return document


def _write_json(path: str | Path, document: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(document, indent=1))
    temporary.replace(path)
