"""Exact and near-duplicate images in a datalist: a test image that also lies in training (under another name, class
or subject) makes every held-out metric optimistic.

Exact duplicates have the same decoded pixels (a SHA-1 of the voxel array and its shape, so a copy under another name
or format is found); `medvol prepare --duplicates` decides what happens to those that span subjects. Near duplicates
(a re-encoded or rescaled copy) have a Pearson correlation above `NEAR_DUPLICATE_CORRELATION` between area-averaged
thumbnails (`THUMBNAIL_SIDE` per axis: 16x16 for 2D, 8^3 for 3D); they are counted and listed, not acted on: on
MedNIST (mednist64, 3000 images) adjacent slices of one scan correlate above 0.999 for 40% of the images at 16x16 (11%
even at the full 64x64) while a quality-30 JPEG copy correlates 0.979 and a 2x down-and-up-sampled copy 0.988, so no
threshold tells a copy from a neighbouring slice, and grouping by it would chain whole classes together.
Hashing is one pass over the images; the thumbnail comparison is a chunked matrix product (n^2 x 256 operations).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import numpy as np

NEAR_DUPLICATE_CORRELATION = 0.98
THUMBNAIL_SIDE = {2: 16, 3: 8}
LISTED_NEAR_PAIRS = 20  # near-duplicate pairs listed in report.json (the counts cover all)
_CHUNK = 1024


class DuplicatePolicy(str, Enum):
    """What `medvol prepare --duplicates` does with exact duplicates that belong to different subjects (and so could
    land in different splits).

    ``keep``: every copy stays, and the subjects of each group are split together (one split per group);
    ``drop``: the copies of the first image's subject stay, those of other subjects are skipped with the reason;
    ``error``: stop with one line.
    """

    KEEP = "keep"
    DROP = "drop"
    ERROR = "error"


@dataclass
class DuplicateScan:
    """Duplicates among datalist entries (indices into the entries).

    Args:
        exact: groups (two or more entries, sorted by image path) with identical pixels.
        near_pairs: ``[P, 2]`` pairs of distinct images whose thumbnails correlate above the threshold.
        near_correlation: ``[P]`` their correlations.
    """

    exact: list[list[int]] = field(default_factory=list)
    near_pairs: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int64))
    near_correlation: np.ndarray = field(default_factory=lambda: np.zeros(0))


def _read_pixels(path: str) -> np.ndarray:
    from medvol.io.files import is_image_2d

    if is_image_2d(path):
        from medvol.io.images import read_image_2d

        return read_image_2d(path)[0]
    from medvol.io.nifti import read_nifti

    array = read_nifti(path)[0]
    while array.ndim > 2 and array.shape[-1] == 1:
        array = array[..., 0]
    return array


def _area_pool(array: np.ndarray, side: int) -> np.ndarray:
    """Average `array` into `side` bins per axis (axes shorter than `side` are repeated first)."""
    for axis, length in enumerate(array.shape):
        if length < side:
            array = np.repeat(array, -(-side // length), axis=axis)
            length = array.shape[axis]
        starts = (np.arange(side) * length) // side
        counts = np.diff(np.append(starts, length)).reshape([-1 if a == axis else 1 for a in range(array.ndim)])
        array = np.add.reduceat(array, starts, axis=axis) / counts
    return array


def fingerprint(array: np.ndarray) -> tuple[str, np.ndarray | None]:
    """SHA-1 of the pixels (with the shape) and the centred, unit-norm thumbnail (None for a constant image).

    Args:
        array: a 2D or 3D image.
    """
    array = np.ascontiguousarray(array, dtype=np.float32)
    digest = hashlib.sha1(str(array.shape).encode() + array.tobytes()).hexdigest()
    spatial_dims = 3 if array.ndim >= 3 else 2
    thumbnail = _area_pool(array.reshape(array.shape[:spatial_dims]).astype(np.float64), THUMBNAIL_SIDE[spatial_dims])
    thumbnail = thumbnail.ravel() - thumbnail.mean()
    norm = float(np.linalg.norm(thumbnail))
    if not np.isfinite(norm) or norm <= 1e-9 * max(1.0, float(np.abs(array).max(initial=0.0))) * thumbnail.size:
        return digest, None
    return digest, thumbnail / norm


def find_duplicates(entries: Sequence[dict], threshold: float | None = NEAR_DUPLICATE_CORRELATION,
                    progress=None) -> DuplicateScan:
    """Exact duplicate groups and near-duplicate pairs among the entries' images.

    Args:
        entries: datalist entries with ``image`` (a 2D image or a NIfTI file).
        threshold: thumbnail correlation above which two different images are near duplicates (None: exact only).
        progress: wraps the iteration over entries (e.g. a tqdm factory), or None.
    """
    order = sorted(range(len(entries)), key=lambda i: str(entries[i]["image"]))
    digests: dict[str, list[int]] = {}
    by_length: dict[int, list[tuple[int, np.ndarray]]] = {}  # 2D and 3D thumbnails are compared separately
    for index in progress(order) if progress else order:
        digest, thumbnail = fingerprint(_read_pixels(str(entries[index]["image"])))
        digests.setdefault(digest, []).append(index)
        if len(digests[digest]) == 1 and thumbnail is not None:
            by_length.setdefault(thumbnail.size, []).append((index, thumbnail))
    scan = DuplicateScan(exact=[members for members in digests.values() if len(members) > 1])
    if threshold is None:
        return scan
    pairs, correlations = [], []
    for items in by_length.values():
        indices = np.array([i for i, _ in items])
        matrix = np.stack([t for _, t in items])
        for start in range(0, len(items), _CHUNK):
            block = matrix[start:start + _CHUNK] @ matrix.T
            rows, columns = np.nonzero(block > threshold)
            upper = start + rows < columns
            rows, columns = rows[upper], columns[upper]
            pairs.append(np.stack([indices[start + rows], indices[columns]], axis=1))
            correlations.append(block[rows, columns])
    if pairs:
        scan.near_pairs, scan.near_correlation = np.concatenate(pairs), np.concatenate(correlations)
    return scan


def duplicate_summary(scan: DuplicateScan, entries: Sequence[dict], policy: str, split_of: dict[str, str],
                      dropped: Sequence[dict] = ()) -> dict:
    """The ``duplicates`` section of report.json: counts, the policy, every exact group and the first near pairs.

    Args:
        scan: from `find_duplicates`.
        entries: the entries the scan indexes (before any was dropped).
        policy: the `DuplicatePolicy` applied.
        split_of: subject -> split of the kept entries.
        dropped: entries the policy dropped.
    """
    dropped_ids = {id(e) for e in dropped}

    def facts(indices) -> tuple[set, set, set]:
        kept = [entries[i] for i in indices if id(entries[i]) not in dropped_ids]
        return ({str(e["subject"]) for e in kept}, {e.get("label") for e in kept if e.get("label") is not None},
                {split_of.get(str(e["subject"])) for e in kept})

    groups = []
    for members in scan.exact:
        subjects, labels, splits = facts(members)
        groups.append({"files": [str(entries[i]["image"]) for i in members], "subjects": sorted(subjects),
                       "classes": sorted({entries[i].get("label_name", entries[i].get("label")) for i in members
                                          if entries[i].get("label") is not None}, key=str),
                       "splits": sorted(s for s in splits if s), "across_splits": len(splits) > 1,
                       "dropped": [str(entries[i]["image"]) for i in members if id(entries[i]) in dropped_ids]})
    near = []
    across = {"splits": 0, "subjects": 0, "classes": 0}
    for (a, b), correlation in zip(scan.near_pairs.tolist(), scan.near_correlation.tolist()):
        subjects, labels, splits = facts((a, b))
        flags = {"splits": len(splits) > 1, "subjects": len(subjects) > 1, "classes": len(labels) > 1}
        for key, value in flags.items():
            across[key] += value
        if flags["splits"] or flags["classes"]:
            near.append((-correlation, a, b))
    near.sort()
    return {
        "policy": str(policy.value if isinstance(policy, Enum) else policy),
        "exact_groups": len(scan.exact),
        "exact_images": sum(len(m) for m in scan.exact),
        "exact_groups_across_subjects": sum(len(g["subjects"]) > 1 or bool(g["dropped"]) for g in groups),
        "exact_groups_across_classes": sum(len(g["classes"]) > 1 for g in groups),
        "exact_groups_across_splits": sum(g["across_splits"] for g in groups),
        "dropped": len(dropped_ids),
        "near_threshold": NEAR_DUPLICATE_CORRELATION,
        "near_pairs": int(len(scan.near_pairs)),
        "near_pairs_across_subjects": across["subjects"],
        "near_pairs_across_classes": across["classes"],
        "near_pairs_across_splits": across["splits"],
        "exact": groups,
        "near_examples": [{"files": [str(entries[a]["image"]), str(entries[b]["image"])],
                           "correlation": round(-c, 5)} for c, a, b in near[:LISTED_NEAR_PAIRS]],
    }


def apply_duplicate_policy(datalist, scan: DuplicateScan, entries: Sequence[dict],
                           policy: DuplicatePolicy | str) -> tuple[list[list[str]], list[dict]]:
    """Apply `policy` to the exact duplicates that span subjects; duplicates within one subject always stay.

    Args:
        datalist: the `medvol.io.datalist.Datalist` (entries dropped from it get a skipped record; messages).
        scan: `find_duplicates` of `entries`.
        entries: the entries scanned (the datalist's, before this call).
        policy: ``keep``, ``drop`` or ``error`` (`DuplicatePolicy`).

    Returns:
        ``(linked, dropped)``: the subject groups to split together (``keep``), the entries dropped (``drop``).

    Raises:
        MedvolInputError: ``error`` and identical images of different subjects.
    """
    from medvol.errors import MedvolInputError

    policy = DuplicatePolicy(policy)
    across = [m for m in scan.exact if len({str(entries[i]["subject"]) for i in m}) > 1]
    conflicting = [m for m in scan.exact if len({entries[i].get("label") for i in m}) > 1]

    def example(members) -> str:
        first, second = (entries[i] for i in members[:2])
        def name(e):
            return f"{e['image']}" + (f" ({e.get('label_name', e['label'])})" if e.get("label") is not None else "")
        return f"{name(first)} = {name(second)}"

    if conflicting:
        datalist.messages.append(
            f"{len(conflicting)} group(s) of identical images carry different class labels, so their labels "
            f"contradict each other (e.g. {example(conflicting[0])}); listed under duplicates in report.json")
    if not across:
        return [], []
    if policy is DuplicatePolicy.ERROR:
        raise MedvolInputError(
            datalist.source, f"{len(across)} group(s) of identical images belong to different subjects (e.g. "
            f"{example(across[0])}): --duplicates keep puts each group's subjects in one split, --duplicates drop "
            "keeps only the first subject's copy")
    if policy is DuplicatePolicy.KEEP:
        return [sorted({str(entries[i]["subject"]) for i in m}) for m in across], []
    dropped, reasons = {}, {}
    for members in across:
        first = entries[members[0]]
        for i in members[1:]:
            if str(entries[i]["subject"]) != str(first["subject"]):
                dropped[id(entries[i])] = entries[i]
                reasons[id(entries[i])] = (f"identical pixels to {first['image']} (subject {first['subject']}): "
                                           "dropped by --duplicates drop")
    datalist.drop_entries([id(e) not in dropped for e in datalist.entries],
                          [reasons.get(id(e), "") for e in datalist.entries])
    return [], list(dropped.values())


def duplicate_message(summary: dict) -> str | None:
    """One console line of `duplicate_summary`, None when there are no duplicates."""
    parts = []
    if summary["exact_groups"]:
        if summary["dropped"]:
            action = f"{summary['dropped']} copies of other subjects dropped by --duplicates {summary['policy']}"
        elif summary["exact_groups_across_subjects"]:
            action = f"each group's subjects kept in one split (--duplicates {summary['policy']})"
        else:
            action = "each within one subject"
        parts.append(f"{summary['exact_groups']} group(s) of identical images ({summary['exact_images']} images, "
                     f"{summary['exact_groups_across_subjects']} across subjects, "
                     f"{summary['exact_groups_across_classes']} across classes, "
                     f"{summary['exact_groups_across_splits']} across splits; {action})")
    if summary["near_pairs"]:
        parts.append(f"{summary['near_pairs']} near-duplicate pair(s) (thumbnail correlation > "
                     f"{summary['near_threshold']}: {summary['near_pairs_across_splits']} across splits, "
                     f"{summary['near_pairs_across_classes']} across classes; reported, not acted on)")
    return f"duplicates: {'; '.join(parts)}; listed under duplicates in report.json" if parts else None
