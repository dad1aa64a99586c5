"""The datalist: which image belongs to which subject and class, what happened to every input file, and its JSON
files (``datalist.json``, ``report.json``).

A datalist is a list of entries (plain dicts, the MONAI idiom) plus a `FileRecord` for every input file:

    {"image": "/abs/path.nii.gz", "id": "hippocampus_001", "subject": "hippocampus_001",
     "label": 1, "label_name": "lesion", "segmentation": "/abs/labels/hippocampus_001.nii.gz", "series_uid": "1.2..."}

`image` and `subject` are always present; `id` is unique per image; the other keys only when they apply.
`medvol.io.discovery` builds datalists from the layouts radiology data comes in, `medvol.io.labels` labels them
from a CSV; `read_datalist` is the one reader of ``datalist.json`` (prepare, datasets, train, bundles, sampling).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from medvol import __version__
from medvol.errors import MedvolInputError
from medvol.io.files import write_json
from medvol.io.report import SKIPPED, USED, WARNING, FileRecord

SPLIT_KEYS = ("training", "validation", "test")
DATALIST_FILE = "datalist.json"
REPORT_FILE = "report.json"


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
        messages: dataset-level warnings (for example a labels CSV replacing class folders).
        labels_csv: the CSV the class labels came from, if any.
        labels: how the labels were read (CSV columns, header, counts, the unlabelled policy), for report.json.
        intensity: what the source says about its intensities (`medvol.commands.prepare.intensity_hint` completes
            it): ``kind`` (``minmax`` for the 0-255 arrays of a MedMNIST .npz; absent: from the modality) and
            ``levels`` (the only values of binary masks, e.g. ``[0, 255]``: sampling snaps generated voxels to them).
    """

    entries: list[dict]
    records: dict[str, FileRecord]
    source: str
    source_spatial_dims: int
    classes: list[str] = field(default_factory=list)
    modality: str | None = None
    messages: list[str] = field(default_factory=list)
    labels_csv: str | None = None
    labels: dict = field(default_factory=dict)
    intensity: dict = field(default_factory=dict)

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

    def assign_classes(self, names: Sequence[str | None], class_order: Sequence[str] | None = None) -> None:
        """Set ``label``/``label_name`` of every entry from `names` (one per entry; None leaves an entry unlabelled).

        Classes are sorted (numerically when all are numbers) unless `class_order` fixes them.

        Raises:
            MedvolInputError: a name that is not in `class_order`.
        """
        present = {n for n in names if n is not None}
        if class_order is not None:
            unknown = present - set(class_order)
            if unknown:
                raise MedvolInputError(None, f"labels {sorted(unknown)} are not among the classes {list(class_order)}")
            classes = list(class_order)
        else:
            classes = sorted(present, key=_class_sort_key)
        self.classes = classes
        for entry, name in zip(self.entries, names):
            entry.pop("label", None)
            entry.pop("label_name", None)
            if name is not None:
                entry["label_name"] = name
                entry["label"] = classes.index(name)

    def name_classes(self, names: Sequence[str]) -> None:
        """Name integer class labels: class ``"k"`` becomes ``names[k]`` (``medvol prepare --class-names``, for
        sources whose labels are numbers, such as a MedMNIST .npz).

        Raises:
            MedvolInputError: a class that is not an integer below ``len(names)``, or repeated names.
        """
        names = [str(n).strip() for n in names]
        if len(set(names)) != len(names) or not all(names):
            raise MedvolInputError("--class-names", f"names must be distinct and non-empty, got {names}")
        if not self.classes:
            raise MedvolInputError("--class-names", f"{self.source} has no class labels to name")
        if not all(c.isdigit() and int(c) < len(names) for c in self.classes):
            raise MedvolInputError("--class-names", f"names the integer labels 0..{len(names) - 1}, but the classes "
                                   f"of {self.source} are {self.classes}")
        self.classes = [names[int(c)] for c in self.classes]
        for entry in self.entries:
            if entry.get("label") is not None:
                entry["label_name"] = self.classes[entry["label"]]

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
            per_class = Counter(e.get("label") for e in self.entries)
            summary["per_class"] = {name: per_class.get(i, 0) for i, name in enumerate(self.classes)}
            if per_class.get(None):
                summary["unlabelled"] = per_class[None]
        return summary


def _class_sort_key(name: str):
    try:
        return (0, float(name), name)
    except ValueError:
        return (1, 0.0, name)


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
    write_json(path, document)
    return document


def write_report(path: str | Path, datalist: Datalist, **extra) -> dict:
    """Write ``report.json``: every input file with status, reason and subject, summary counts and messages."""
    document = {"source": datalist.source, "files": [r.to_dict() for r in datalist.records.values()],
                "summary": {**datalist.summary(), **extra.pop("summary", {})}, "messages": list(datalist.messages),
                **({"labels": datalist.labels} if datalist.labels else {}), **extra}
    write_json(path, document)
    return document


def datalist_file(path: str | os.PathLike) -> Path:
    """The ``datalist.json`` of a prepared folder, or `path` itself when it names a file."""
    path = Path(path).expanduser()
    return path / DATALIST_FILE if path.is_dir() or path.suffix.lower() != ".json" else path


def read_datalist(path: str | os.PathLike) -> dict:
    """Read a ``datalist.json`` (`write_datalist`'s, or a synthetic one of `medvol sample`): the one reader.

    Args:
        path: the file, or the folder holding it.

    Raises:
        MedvolInputError: the file is missing, not a JSON object, or holds no split list
            (``training``/``validation``/``test``), or a split that is not a list.
    """
    path = datalist_file(path)
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise MedvolInputError(path, "datalist not found (run `medvol prepare` first)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise MedvolInputError(path, f"is not a readable datalist JSON ({err})") from None
    if not isinstance(document, Mapping) or not any(k in document for k in SPLIT_KEYS):
        raise MedvolInputError(path, "is not a datalist: expected a JSON object with 'training'/'validation'/'test'")
    bad = [k for k in SPLIT_KEYS if k in document and not isinstance(document[k], list)]
    if bad:
        raise MedvolInputError(path, f"datalist splits {bad} are not lists")
    return dict(document)


def prepared_size(document: Mapping, spatial_dims: int) -> list[int] | None:
    """The sample size a datalist was prepared at (``preprocessing.size``) in `spatial_dims` dimensions: a 2D size
    from a 3D one drops the slice axis (the last); None when it names none or another dimensionality."""
    size = (document.get("preprocessing") or {}).get("size")
    if not size:
        return None
    size = [int(s) for s in size]
    if len(size) == spatial_dims:
        return size
    return size[:2] if len(size) == 3 and spatial_dims == 2 else None
