"""Layouts radiology data comes in, turned into a `Datalist` (`build_datalist` picks one from what it finds):

- one folder per class (`root/<class>/*.png`): subject id ``"<class>/<stem>"``, because stems repeat across class
  folders (MedNIST has ``00000000.jpg`` in every class); a file in class folders is its own subject;
- a folder of NIfTI volumes or 2D images, optionally with a CSV of ``id,label`` (`medvol.io.labels`): subject id from
  the file stem (BIDS names ``sub-XX_...`` give ``sub-XX``, so all sessions of one subject stay together); when stems
  repeat in different sub-folders the id is the relative path without suffix;
- a Decathlon ``dataset.json`` (`datalist_from_decathlon_json`): images with their segmentations;
- a Decathlon layout without json, ``images/`` + ``labels/`` (`datalist_from_image_label_folders`): paired by name;
- a MedMNIST-style ``.npz`` (`medvol.io.npz.datalist_from_npz`): every image written out as NIfTI, official split;
- a DICOM tree: every volume (a series, or one echo / time point / orientation of it) is converted once to NIfTI
  under ``images_dir``; subject id from PatientID. Volumes with irregular geometry (missing slices, uneven spacing,
  gantry tilt, duplicate positions, slices not parallel) are skipped with the reason unless their kinds are
  accepted (``medvol prepare --accept-irregular-dicom``).

File validation comes from `medvol.io.nifti.check_nifti` and `medvol.io.images.check_image_2d`; DICOM grouping,
sorting and geometry checks from `medvol.io.dicom` (SimpleITK/pydicom underneath).
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np

from medvol.errors import MedvolInputError
from medvol.io.datalist import SPLIT_KEYS, Datalist
from medvol.io.files import (
    IMAGE_2D_SUFFIXES,
    NIFTI_SUFFIXES,
    classify_file,
    image_stem,
    is_image_2d,
    image_suffix,
    list_files,
    not_an_image_reason,
)
from medvol.io.images import check_image_2d
from medvol.io.labels import LABELS_FILE, apply_labels_csv
from medvol.io.nifti import check_nifti, nifti_spatial_dims
from medvol.io.npz import datalist_from_npz, is_npz
from medvol.io.report import SKIPPED, USED, WARNING, FileRecord
from medvol.runs import RUN_RECORD_FILE, RunRecord

_BIDS_SUBJECT = re.compile(r"^(sub-[A-Za-z0-9]+)(?:_|$)")
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def subject_from_stem(stem: str) -> str:
    """Subject id of a file stem: the BIDS ``sub-<label>`` part when present, else the stem itself."""
    match = _BIDS_SUBJECT.match(stem)
    return match.group(1) if match else stem


def _safe_name(text: str) -> str:
    return _UNSAFE_NAME.sub("_", text).strip("_") or "unnamed"


def _progress(items, desc: str, total: int | None = None):
    """tqdm on a terminal, plain iteration otherwise (tqdm's ``disable=None`` turns it off without a TTY)."""
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, total=total, unit="file", disable=None, leave=False)


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
    for path in _progress(paths, f"checking {kind} files"):
        if kind == "nifti":
            status, reason, _ = check_nifti(path)
        else:
            status, reason, _ = check_image_2d(path)
        image_id = ids[path]
        subject = subjects[path] if subjects else subject_from_stem(image_id)
        datalist.record(path, status, reason, subject)
        if status != SKIPPED:
            datalist.entries.append({"image": str(path), "id": image_id, "subject": subject})


def _add_dicom_entries(
    datalist: Datalist, root: Path, candidates: Sequence[Path], images_dir: Path | None,
    accept_irregular: Collection[str] = (),
) -> list[int]:
    """Discover the DICOM series under `root`, convert each volume to NIfTI and append one entry per volume.

    A volume with irregular geometry whose kinds are not all in `accept_irregular` is not converted: its files are
    skipped with the reason (`medvol.io.dicom.irregular_reason`); an accepted one is used and keeps its warning.

    Returns:
        spatial dims of each entry added: 2 for radiographs (single-frame files, or files without slice geometry,
        each written as a one-slice NIfTI), 3 for volumes.
    """
    from medvol.io.dicom import (
        ACCEPT_IRREGULAR_OPTION,
        IRREGULAR_KINDS,
        discover_series,
        irregular_reason,
        read_header,
        read_series,
        synthetic_series_warning,
    )
    from medvol.io.images import read_image_2d
    from medvol.io.nifti import write_nifti

    if images_dir is None:
        raise MedvolInputError(root, "holds DICOM files; converting them to NIfTI needs an output folder")
    candidate_set = {p.resolve() for p in candidates}
    scan = discover_series(root, files=sorted(candidate_set))
    synthetic = synthetic_series_warning(scan.series)
    if synthetic:
        datalist.messages.append(synthetic)
    for record in scan.records:  # used, warning (series problems) or skipped (not DICOM, unreadable, ...)
        datalist.record(Path(record.path).resolve(), record.status, record.reason, record.subject)
    for path in sorted(candidate_set):
        record = datalist.records.get(str(path))
        if record is None or (record.status == SKIPPED and not record.reason):
            datalist.record(path, SKIPPED, "not part of any readable DICOM series")
    dims = []
    images_dir.mkdir(parents=True, exist_ok=True)
    modalities = []
    refused: Counter = Counter()
    for series in _progress(scan.series, "converting DICOM series"):
        files = [Path(f).resolve() for f in series.files]
        subject = str(series.patient_id).strip() if series.patient_id else ""
        if not subject:
            subject = f"series-{series.uid}"
            datalist.messages.append(f"series {series.uid} has no PatientID: subject id set to {subject!r}")
        reason = irregular_reason(series, accept_irregular)
        if reason:
            refused.update(k for k in series.irregular if k not in accept_irregular)
            for path in files:
                datalist.record(path, SKIPPED, reason, subject)
            continue
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
                    datalist.record(path, WARNING, f"{converted_from} colour image read as greyscale with ITU-R 601 "
                                    "weights", file_subject)
                datalist.entries.append({
                    "image": str(output), "id": f"{file_subject}/{series.uid}/{path.stem}", "subject": file_subject,
                    "series_uid": series.uid, "series_description": series.description or "",
                    "modality": str(header.get("Modality") or "") if header is not None else "",
                    "_record_paths": [str(path)], **({"synthetic": True} if series.synthetic else {})})
                dims.append(2)
            continue
        output = images_dir / f"{_safe_name(subject)}_{_safe_name(series.volume_id)}.nii.gz"
        try:
            if not _is_up_to_date(output, files):  # an earlier run converted the unchanged series already
                voxels, affine = read_series(series)
                write_nifti(np.asarray(voxels, dtype=np.float32), affine, output)
        except MedvolInputError as err:
            reason = err.problem
        except Exception as err:  # a broken series must not take the others with it
            reason = f"series {series.volume_id} could not be read: {err}"
        else:
            reason = ""
        if reason:
            for path in files:
                datalist.record(path, SKIPPED, reason, subject)
            continue
        for path in files:  # keep the scan's status and reason (series problems), set the subject
            datalist.records[str(path)].subject = subject
        datalist.entries.append({
            "image": str(output), "id": f"{subject}/{series.volume_id}", "subject": subject, "series_uid": series.uid,
            **({"volume_id": series.volume_id} if series.volume_id != series.uid else {}),
            "series_description": series.description or "", "modality": series.modality or "",
            "_record_paths": [str(p) for p in files], **({"synthetic": True} if series.synthetic else {})})
        dims.append(3)
        modalities.append(series.modality)
    if refused:
        kinds = ", ".join(f"{IRREGULAR_KINDS[k]} ({n})" for k, n in refused.items())
        datalist.messages.append(
            f"DICOM volumes with irregular geometry not used: {kinds}; listed in report.json. They would train on "
            f"misplaced voxels; {ACCEPT_IRREGULAR_OPTION} {','.join(refused)} uses them anyway")
    accepted = sorted({k for s in scan.series for k in s.irregular} & set(accept_irregular))
    if accepted:
        datalist.messages.append(
            f"DICOM volumes with irregular geometry used as asked ({ACCEPT_IRREGULAR_OPTION}): "
            f"{', '.join(IRREGULAR_KINDS[k] for k in accepted)}; their files are listed as warnings")
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


MEDVOL_OUTPUT_MARKERS = ("datalist.json", RUN_RECORD_FILE)


def medvol_output_folders(root: Path, files: Sequence[Path]) -> list[Path]:
    """Folders below `root` (not `root` itself) that medvol wrote: ``prepare`` and ``sample`` outputs (a
    ``datalist.json`` with ``medvol_version``) and training runs (a readable ``run.json``).

    Args:
        root: the source folder.
        files: the files listed under it.
    """
    found = []
    for path in files:
        if path.name not in MEDVOL_OUTPUT_MARKERS or path.parent == root:
            continue
        if path.name == RUN_RECORD_FILE:
            try:
                found.append(RunRecord.load(path.parent).folder)
            except MedvolInputError:
                pass
            continue
        try:
            document = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError):
            continue
        if isinstance(document, dict) and "medvol_version" in document:
            found.append(path.parent)
    return sorted(f for f in set(found) if not any(f != g and f.is_relative_to(g) for g in found))


def datalist_from_files(root: str | Path, images_dir: str | Path | None = None, class_folders: bool | None = None,
                        exclude: Sequence[Path] = (), accept_irregular_dicom: Collection[str] = ()) -> Datalist:
    """Datalist of every image under a folder: NIfTI, 2D images and DICOM series, unlabelled or one folder per class.

    Args:
        root: the folder.
        images_dir: where DICOM series are converted to NIfTI (needed only when DICOM files are present).
        class_folders: take the label from the first-level sub-folder. None: yes when every image lies exactly one
            level down, in at least two sub-folders, and there is no DICOM (DICOM studies keep one folder per series).
        exclude: folders under `root` to leave out (for example the output folder of `medvol prepare`).
        accept_irregular_dicom: kinds of irregular DICOM geometry to use anyway (`medvol.io.dicom.IRREGULAR_KINDS`);
            DICOM volumes with other kinds are skipped with the reason.

    Raises:
        MedvolInputError: `root` is missing, empty, or holds no image of any kind.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise MedvolInputError(root, "folder does not exist" if not root.exists() else "is not a folder")
    files = list_files(root, exclude)
    outputs = medvol_output_folders(root, files)
    if outputs:
        files = [p for p in files if not any(p.is_relative_to(folder) for folder in outputs)]
    if not files:
        raise MedvolInputError(root, "folder is empty (no files)" if not outputs else
                               f"holds only medvol output folders ({', '.join(map(str, outputs))}), no source images")
    kinds = defaultdict(list)
    for path in files:
        kinds[classify_file(path)].append(path)
    datalist = Datalist([], {}, str(root), 3)
    if outputs:
        datalist.messages.append(
            f"left out {len(outputs)} folder(s) inside the source that medvol wrote (they hold a medvol datalist.json "
            f"or run.json), so earlier outputs are never read as images: {', '.join(map(str, outputs))}")
    for path in files:  # placeholder records keep discovery order in the report
        datalist.records[str(path)] = FileRecord(str(path), SKIPPED, "", None)
    for path in kinds["other"]:
        datalist.record(path, SKIPPED, not_an_image_reason(path))

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
    dims = [2 if is_image_2d(e["image"]) else nifti_spatial_dims(e["image"]) for e in datalist.entries]
    if dicoms:
        dims += _add_dicom_entries(datalist, root, dicoms, None if images_dir is None else Path(images_dir),
                                   accept_irregular_dicom)
    _keep_one_dimensionality(datalist, dims)
    if class_folders:
        names = sorted({Path(e["image"]).parent.name for e in datalist.entries})
        datalist.classes = names
        for entry in datalist.entries:
            entry["label_name"] = Path(entry["image"]).parent.name
            entry["label"] = names.index(entry["label_name"])
    return datalist


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
            datalist.record(path, SKIPPED, not_an_image_reason(path) + " (in the labels folder)")
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
            datalist.record(path, SKIPPED, not_an_image_reason(path) if classify_file(path) == "other"
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
        if isinstance(label, str) and image_suffix(label) in (*NIFTI_SUFFIXES, *IMAGE_2D_SUFFIXES):
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
        datalist.assign_classes([class_names[id(e)] for e in datalist.entries])
    dims = [2 if is_image_2d(e["image"]) else nifti_spatial_dims(e["image"]) for e in datalist.entries]
    _keep_one_dimensionality(datalist, dims)
    return datalist


# ------------------------------------------------------------------------------------------------ layout detection
def build_datalist(source: str | Path, *, images_dir: str | Path | None = None, labels_csv: str | Path | None = None,
                   class_order: Sequence[str] | None = None, require_entries: bool = True,
                   exclude: Sequence[Path] = (), find_labels_csv: bool = True, id_column: str | None = None,
                   label_column: str | None = None, unlabelled: str | None = None,
                   accept_irregular_dicom: Collection[str] = ()) -> Datalist:
    """Datalist of SOURCE, whatever its layout (see the module docstring), with labels from `labels_csv`.

    Order of precedence: a ``.json`` file or a folder holding ``dataset.json`` (Decathlon); a folder with
    ``images/`` and ``labels/`` (Decathlon without json); any other folder (NIfTI, 2D images, DICOM tree; one folder
    per class unless a CSV gives the labels). A ``labels.csv`` at the top of SOURCE is used when `labels_csv` is None
    and `find_labels_csv` is True; the datalist's messages then say so.

    Args:
        source: file or folder.
        images_dir: where DICOM series are converted to NIfTI.
        labels_csv: CSV of id,label (see `medvol.io.labels.apply_labels_csv`).
        class_order: fixed class order for CSV labels.
        require_entries: raise when no usable image is left (set False to write a report first, then call
            `require_usable`).
        exclude: folders inside SOURCE to leave out (an output folder placed inside SOURCE).
        find_labels_csv: use a ``labels.csv`` found at the top of SOURCE (False: ignore it, ``--labels none``).
        id_column: CSV column of the ids (default: found from the header).
        label_column: CSV column of the labels (default: found from the header).
        unlabelled: what to do with images the CSV does not label: None (raise), ``skip`` or ``keep``.
        accept_irregular_dicom: kinds of irregular DICOM geometry to use anyway (see `datalist_from_files`).

    Raises:
        MedvolInputError: SOURCE missing or empty, nothing usable in it, or a bad labels CSV.
    """
    source = Path(source).expanduser().resolve()
    if not source.exists():
        raise MedvolInputError(source, "does not exist")
    found_csv = None
    if source.is_file():
        if is_npz(source):
            if images_dir is None:
                raise MedvolInputError(source, "an .npz archive is written out as NIfTI files: it needs an output "
                                       "folder")
            datalist = datalist_from_npz(source, images_dir)
        elif source.suffix.lower() != ".json":
            raise MedvolInputError(source, "SOURCE must be a folder, a Decathlon dataset.json or a MedMNIST-style .npz")
        else:
            datalist = datalist_from_decathlon_json(source)
    elif (source / "dataset.json").is_file():
        datalist = datalist_from_decathlon_json(source / "dataset.json")
        for path in list_files(source):
            if str(path) not in datalist.records and classify_file(path) != "other":
                datalist.record(path, SKIPPED, "image not listed in dataset.json")
    elif _image_label_dirs(source):
        datalist = datalist_from_image_label_folders(source)
    else:
        auto_csv = source / LABELS_FILE
        if labels_csv is None and auto_csv.is_file() and find_labels_csv:
            labels_csv = found_csv = auto_csv
        datalist = datalist_from_files(source, images_dir, class_folders=False if labels_csv else None, exclude=exclude,
                                       accept_irregular_dicom=accept_irregular_dicom)
        if auto_csv.is_file() and not find_labels_csv:
            datalist.records[str(auto_csv)] = FileRecord(str(auto_csv), SKIPPED, "labels CSV ignored (--labels none)")
        elif auto_csv.is_file() and found_csv is None and Path(labels_csv).resolve() != auto_csv.resolve():
            datalist.records[str(auto_csv)] = FileRecord(str(auto_csv), SKIPPED,
                                                         f"labels CSV not used: --labels gave {labels_csv}")
    if labels_csv is not None:
        if found_csv is not None:
            datalist.messages.append(f"labels read from {found_csv}, found in SOURCE (--labels none ignores it, "
                                     "--labels CSV reads another)")
        if datalist.classes:
            datalist.messages.append(f"class labels of {datalist.source} replaced by those of {labels_csv}")
        apply_labels_csv(datalist, labels_csv, class_order, id_column=id_column, label_column=label_column,
                         unlabelled=unlabelled)
    elif id_column or label_column or unlabelled:
        datalist.messages.append("--id-column, --label-column and --unlabelled apply to a labels CSV: none was read")
    if require_entries:
        require_usable(datalist)
    return datalist


def require_usable(datalist: Datalist) -> None:
    """Raise `MedvolInputError` naming the source and the first skip reason when no entry is left."""
    if datalist.entries:
        return
    by_reason: dict[str, list[str]] = defaultdict(list)
    for record in datalist.records.values():
        if record.status == SKIPPED:
            by_reason[record.reason].append(record.path)
    reasons = sorted(by_reason.items(), key=lambda item: len(item[1]))  # a file's own problem before its series'
    shown = [f"{paths[0]}: {reason}" if len(paths) == 1 else f"{len(paths)} files (e.g. {paths[0]}): {reason}"
             for reason, paths in reasons[:3]]
    more = f"; {len(reasons) - 3} other reasons in report.json" if len(reasons) > 3 else ""
    example = f"; {'; '.join(shown)}{more}" if shown else ""
    raise MedvolInputError(
        datalist.source, f"nothing usable: none of its {len(datalist.records)} files gave an image{example}")

