"""Class labels from a CSV, as users have them: ``id,label`` with or without a header, spaces after separators,
``;`` or tab separators, extra columns, ids that are subject ids, file names, stems or paths.

Format (README "Labels CSV"): one row per image or per subject; the id column holds a subject id, an image id, a file
name or stem, a path relative to the CSV or SOURCE, or a DICOM series uid; the label column holds a class name
(any text, numbers included). Header names are matched without case and surrounding spaces; a two-column CSV needs
no header (its first row is data when its id matches an image, a header otherwise).
"""

from __future__ import annotations

import csv
import io
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from monai.utils import StrEnum

from medvol.errors import MedvolInputError
from medvol.io.datalist import Datalist
from medvol.io.files import image_stem
from medvol.io.report import SKIPPED, USED, WARNING, FileRecord

LABELS_FILE = "labels.csv"
ID_COLUMNS = ("id", "subject", "subject_id", "patient", "patient_id", "patientid", "case", "case_id", "name")
PATH_COLUMNS = ("image", "path", "file", "filename", "file_name")
LABEL_COLUMNS = ("label", "class", "label_name", "class_name", "diagnosis", "target", "category", "y")
EXAMPLES = 3


class Unlabelled(StrEnum):
    """What happens to images a labels CSV does not label: ``skip`` them (each listed in report.json with the
    reason) or ``keep`` them without a label (for unconditional models)."""

    SKIP = "skip"
    KEEP = "keep"


@dataclass
class _CsvRow:
    line: int
    cells: list[str]


@dataclass
class _Layout:
    """Where the ids, paths and labels are in the CSV's rows."""

    header: list[str]
    body: list[_CsvRow]
    key_col: int
    path_col: int | None
    label_col: int
    has_header: bool


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


def _id_lookup(datalist: Datalist) -> dict[str, set[int]]:
    """Every way a CSV may name an image -> the entries it names (a subject id names all its images)."""
    lookup: dict[str, set[int]] = defaultdict(set)
    source = Path(datalist.source)
    source = source.parent if source.is_file() else source
    for index, entry in enumerate(datalist.entries):
        image = Path(entry["image"])
        relative = os.path.relpath(image, source) if image.is_relative_to(source) else None
        for key in (entry["id"], entry["subject"], image.name, image_stem(image), entry.get("series_uid"), str(image),
                    relative):
            if key:
                lookup[key].add(index)
    return lookup


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _examples(items: Sequence[str]) -> str:
    shown = ", ".join(repr(i) for i in list(items)[:EXAMPLES])
    return shown + (", ..." if len(items) > EXAMPLES else "")


def _column(names: list[str], wanted: str, option: str, csv_path: Path, shown: list[str]) -> int:
    key = wanted.strip().lower()
    if key not in names:
        raise MedvolInputError(csv_path, f"{option} {wanted!r} is not a column of its header {shown}")
    return names.index(key)


def _layout(rows: list[_CsvRow], lookup: dict, csv_path: Path, id_column: str | None,
            label_column: str | None) -> _Layout:
    """Find the header (if any) and the id, path and label columns.

    Raises:
        MedvolInputError: a named column is missing, or the header does not say which column is which.
    """
    first = [c.strip() for c in rows[0].cells]
    names = [c.lower() for c in first]
    if id_column is not None or label_column is not None:
        key_col = _column(names, id_column, "--id-column", csv_path, first) if id_column is not None else None
        label_col = _column(names, label_column, "--label-column", csv_path, first) if label_column else None
        others = [i for i in range(len(names)) if i not in (key_col, label_col)]
        if key_col is None:
            known = [i for i in others if names[i] in ID_COLUMNS + PATH_COLUMNS]
            key_col = known[0] if len(known) == 1 else (others[0] if len(others) == 1 else None)
        if label_col is None:
            known = [i for i in others if names[i] in LABEL_COLUMNS and i != key_col]
            rest = [i for i in others if i != key_col]
            label_col = known[0] if len(known) == 1 else (rest[0] if len(rest) == 1 else None)
        if key_col is None or label_col is None or key_col == label_col:
            what = "id" if key_col is None else "label"
            raise MedvolInputError(csv_path, f"cannot tell the {what} column of header {first}: name it with "
                                   f"--{what}-column")
        path_col = key_col if names[key_col] in PATH_COLUMNS else None
        return _Layout(rows[0].cells, rows[1:], key_col, path_col, label_col, True)
    if first and first[0] in lookup:  # the first row is data: ``id,label`` without a header
        if len(first) != 2:
            raise MedvolInputError(csv_path, f"has no header and {len(first)} columns ({first}): a CSV without a "
                                   "header must have two columns, id and label; add a header line and name its "
                                   "columns with --id-column and --label-column")
        return _Layout(["id", "label"], rows, 0, None, 1, False)
    ids = [i for i, n in enumerate(names) if n in ID_COLUMNS]
    paths = [i for i, n in enumerate(names) if n in PATH_COLUMNS]
    labels = [i for i, n in enumerate(names) if n in LABEL_COLUMNS]
    if len(first) == 2 and not (len(ids) + len(paths) == 1 and len(labels) == 1):
        # two columns: one of them named as an id (``id, hemorrhage``) or a label, or neither: id first, label second
        key_col = next(iter(ids + paths), None)
        label_col = labels[0] if len(labels) == 1 and labels[0] != key_col else None
        if key_col is None and label_col is None:
            key_col, label_col = 0, 1
        key_col = 1 - label_col if key_col is None else key_col
        label_col = 1 - key_col if label_col is None else label_col
        path_col = key_col if names[key_col] in PATH_COLUMNS else None
        return _Layout(rows[0].cells, rows[1:], key_col, path_col, label_col, True)
    problems = []
    if len(ids) > 1 or (not ids and len(paths) != 1):
        found = [first[i] for i in ids] if len(ids) > 1 else [first[i] for i in paths]
        problems.append("id column: " + (f"one of {found}" if found else f"none is named {'/'.join(ID_COLUMNS[:5])}"))
    if len(labels) != 1:
        found = [first[i] for i in labels]
        problems.append("label column: "
                        + (f"one of {found}" if found else f"none is named {'/'.join(LABEL_COLUMNS[:5])}"))
    if problems:
        raise MedvolInputError(csv_path, f"header {first} is ambiguous ({'; '.join(problems)}): name the columns "
                               "with --id-column and --label-column")
    key_col = ids[0] if ids else paths[0]
    return _Layout(rows[0].cells, rows[1:], key_col, paths[0] if paths else None, labels[0], True)


def apply_labels_csv(datalist: Datalist, csv_path: str | Path, class_order: Sequence[str] | None = None,
                     id_column: str | None = None, label_column: str | None = None,
                     unlabelled: Unlabelled | str | None = None) -> Datalist:
    """Give every entry its class from a CSV of ``id,label`` and report every problem of the CSV.

    The id of a row matches an entry's ``id``, ``subject``, file name or stem, path (relative to SOURCE or absolute)
    or DICOM series uid (a subject id labels all its images). Optional path column (``image``/``path``/``file``),
    the id when there is no id column: resolved against the CSV's folder, then SOURCE; a missing file is reported.
    Header names and cells are stripped of spaces. Per row, reported as ``<csv>:<line>`` records:

    - ids with an inner space that match no image but match exactly one image once the space becomes ``_``, ``-``
      or nothing, and rows split into extra columns by an unquoted space or separator inside the id when joining the
      pieces gives exactly one known id: repaired (warning);
    - ids that contain the CSV separator (quoted): warning;
    - unknown ids, empty labels: skipped rows; duplicate ids: warning when the label agrees, else the subject's
      images are skipped (conflicting labels).

    Images the CSV does not label make it fail (with the counts and examples) unless `unlabelled` says what to do.

    Args:
        datalist: entries to label (changed in place and returned).
        csv_path: the CSV (``,`` ``;`` or tab separated; a header naming the id and label columns, or two columns
            without header when the first row's id is a known image).
        class_order: fixed class order (``label`` indexes it); default sorted names (numerically when numbers).
        id_column: header name of the id column (default: found from `ID_COLUMNS` / `PATH_COLUMNS`).
        label_column: header name of the label column (default: found from `LABEL_COLUMNS`).
        unlabelled: ``skip`` (drop images without a label, each reported) or ``keep`` (keep them without a label);
            None raises when any image is left without a label.

    Raises:
        MedvolInputError: unreadable or empty CSV, an ambiguous header or a missing named column, a row whose repair
            is ambiguous, no id matching any image, or images without a label and no `unlabelled` policy.
    """
    csv_path = Path(csv_path).resolve()
    policy = None if unlabelled is None else Unlabelled(unlabelled)
    rows, delimiter = _read_csv_rows(csv_path)
    lookup = _id_lookup(datalist)
    layout = _layout(rows, lookup, csv_path, id_column, label_column)
    header, body, key_col, path_col, label_col = (layout.header, layout.body, layout.key_col, layout.path_col,
                                                  layout.label_col)
    sep_name = {",": "comma", ";": "semicolon", "\t": "tab"}[delimiter]
    csv_records: list[FileRecord] = []

    def note(line: int, status: str, reason: str, subject: str | None = None):
        csv_records.append(FileRecord(f"{csv_path}:{line}", status, reason, subject))

    ambiguous = []
    labels_of: dict[int, tuple[str, int]] = {}  # entry index -> (label, line)
    conflicted: dict[int, str] = {}
    seen_ids: dict[str, tuple[str, int]] = {}
    unknown_ids: list[str] = []
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
            if path is None and key_col == path_col and listed in lookup:
                path = False  # not a file but an image id: the column holds ids, read it as such
            elif path is None and key_col != path_col and key in lookup:
                note(row.line, WARNING, f"{header[path_col].strip()!r} {listed!r} is no file here; matched by its id "
                     f"{key!r}", key)
                path = False
            if path is None:
                note(row.line, SKIPPED, f"missing image: {listed} exists neither next to the CSV nor under "
                     f"{datalist.source}", None if key_col == path_col else key)
                unknown_ids.append(listed)
                continue
            if key_col == path_col and path:
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
            unknown_ids.append(key)
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
    image_ids = [e["id"] for e in datalist.entries]
    if datalist.entries and not labels_of:
        column = f"its column {header[key_col].strip()!r}" if layout.has_header else "its first column"
        read_as = " (read as image paths)" if path_col == key_col else ""
        matching = [header[c].strip() for c in range(len(header)) if layout.has_header and c != key_col
                    and any(c < len(r.cells) and r.cells[c].strip() in lookup for r in body)]
        hint = (f"; its column {matching[0]!r} holds image ids: --id-column {matching[0]}" if matching else
                "; name the column of image ids (file names, stems or subject ids) with --id-column")
        values = unknown_ids or [r.cells[key_col].strip() for r in body if key_col < len(r.cells)]
        raise MedvolInputError(csv_path, f"none of the {len(body)} values of {column}{read_as} names an image under "
                               f"{datalist.source} (they look like {_examples(values)}; image ids look like "
                               f"{_examples(image_ids)}){hint}")
    missing = [i for i in range(len(datalist.entries)) if i not in labels_of and i not in conflicted]
    labelled = len([i for i in labels_of if i not in conflicted])
    if missing and policy is None:
        raise MedvolInputError(
            csv_path, f"labels {labelled} of {len(datalist.entries)} images; {_count(len(missing), 'image')} "
            f"without a label (e.g. {_examples([image_ids[i] for i in missing])})"
            + (f"; {len(unknown_ids)} of its {_count(len(body), 'row')} name no image (e.g. {_examples(unknown_ids)})"
               if unknown_ids else "")
            + ": fix the ids, or pass --unlabelled skip (leave those images out) or --unlabelled keep (keep them "
            "without a label)")
    datalist.records[str(csv_path)] = FileRecord(str(csv_path), USED, "labels CSV")
    datalist.labels_csv = str(csv_path)
    for record in csv_records:
        datalist.records[record.path] = record
    datalist.labels = {
        "csv": str(csv_path), "header": [c.strip() for c in header] if layout.has_header else None,
        "id_column": header[key_col].strip() if layout.has_header else 0,
        "label_column": header[label_col].strip() if layout.has_header else 1,
        "rows": len(body), "labelled_images": labelled, "conflicting_images": len(conflicted),
        "unlabelled_images": len(missing), "rows_without_image": len(unknown_ids),
        "unlabelled": None if policy is None else str(policy),
    }
    reason = f"no label in {csv_path.name}"
    for index in missing:
        if policy == Unlabelled.KEEP:
            entry = datalist.entries[index]
            for path in entry.get("_record_paths", [entry["image"]]):
                datalist.record(path, WARNING, f"{reason}: kept without a label (--unlabelled keep)", entry["subject"])
    keep = [i not in conflicted and (i in labels_of or policy == Unlabelled.KEEP) for i in range(len(datalist.entries))]
    names = [labels_of[i][0] if i in labels_of else None for i, keep_it in enumerate(keep) if keep_it]
    datalist.drop_entries(keep, [conflicted.get(i, f"{reason} (--unlabelled skip)") for i in range(len(keep))])
    datalist.assign_classes(names, class_order)
    return datalist
