"""Patient-level, label-stratified, seeded train/validation/test splits.

All entries of one subject go to the same split, so no patient can leak from training into evaluation. Subjects
are grouped by label (their stratum), each stratum is shuffled with the seed and cut by the fractions; the
rounding is balanced across strata so the split sizes also match the fractions overall. The result depends only
on the set of entries and the seed, not on their order (subjects are sorted before shuffling).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from medvol.errors import MedvolInputError

SPLIT_NAMES = ("training", "validation", "test")
DEFAULT_FRACTIONS = (0.6, 0.2, 0.2)


def validate_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    """Check train/validation/test fractions: three numbers in [0, 1], training above 0, summing to 1 (±1e-6).

    Raises:
        MedvolInputError: naming ``--split`` and the problem.
    """
    values = tuple(float(f) for f in fractions)
    if len(values) != 3:
        raise MedvolInputError("--split", f"expected 3 fractions train,validation,test, got {list(values)}")
    if any(not math.isfinite(v) or v < 0 or v > 1 for v in values):
        raise MedvolInputError("--split", f"fractions must lie between 0 and 1, got {list(values)}")
    if values[0] == 0:
        raise MedvolInputError("--split", "the training fraction must be above 0")
    if abs(sum(values) - 1.0) > 1e-6:
        raise MedvolInputError("--split", f"fractions must sum to 1, got {list(values)} (sum {sum(values):g})")
    return values  # type: ignore[return-value]


def _apportion(total: int, fractions: Sequence[float]) -> list[int]:
    """Largest-remainder rounding of `total * fractions` (ties go to the earlier split)."""
    exact = [total * f for f in fractions]
    counts = [math.floor(x + 1e-9) for x in exact]
    order = sorted(range(len(fractions)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


def _stratum_counts(sizes: Sequence[int], fractions: Sequence[float]) -> list[list[int]]:
    """Subjects per split for each stratum: floors per stratum, then the leftover subjects go where the
    per-stratum remainder is largest among the splits still below their overall target."""
    counts = [[math.floor(n * f + 1e-9) for f in fractions] for n in sizes]
    target = _apportion(sum(sizes), fractions)
    deficit = [target[i] - sum(c[i] for c in counts) for i in range(len(fractions))]
    leftover = [n - sum(c) for n, c in zip(sizes, counts)]
    candidates = sorted(
        ((n * f - counts[s][i], s, i) for s, n in enumerate(sizes) for i, f in enumerate(fractions) if f > 0),
        key=lambda c: (-c[0], c[1], c[2]),
    )
    for _, s, i in candidates:
        if leftover[s] > 0 and deficit[i] > 0:
            counts[s][i] += 1
            leftover[s] -= 1
            deficit[i] -= 1
    for s, n in enumerate(sizes):  # what the overall targets could not place goes to the split with most room
        while leftover[s] > 0:
            i = max(range(len(fractions)), key=lambda k: (fractions[k] > 0, deficit[k], fractions[k], -k))
            counts[s][i] += 1
            leftover[s] -= 1
            deficit[i] -= 1
    return counts


def subject_strata(entries: Sequence[dict]) -> dict[str, tuple]:
    """Stratum of every subject: the sorted tuple of its distinct labels (``()`` when unlabelled)."""
    labels: dict[str, set] = {}
    for entry in entries:
        subject_labels = labels.setdefault(str(entry["subject"]), set())
        if entry.get("label") is not None:
            subject_labels.add(int(entry["label"]))
    return {subject: tuple(sorted(values)) for subject, values in labels.items()}


def split_subjects(
    entries: Sequence[dict],
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    stratify: bool = True,
    linked: Sequence[Sequence[str]] = (),
) -> dict[str, list[dict]]:
    """Split entries at subject level into ``training``, ``validation`` and ``test``.

    Args:
        entries: dicts with a ``subject`` key and, for stratification, an integer ``label``.
        fractions: train, validation, test fractions summing to 1 (validated).
        seed: seed of the shuffle; the same entries and seed always give the same split, whatever their order.
        stratify: keep label proportions in every split (subjects whose entries carry several labels form their
            own stratum). A stratum smaller than the number of splits fills training first, then the split whose
            overall share is furthest below its fraction.
        linked: groups of subjects that must share a split (subjects holding identical images): each group is
            split as one unit.

    Returns:
        ``{split name: entries}``, entries in their input order within each split.

    Raises:
        MedvolInputError: bad fractions, a negative seed, or an entry without a subject id.
        RuntimeError: if a subject ended up in two splits (a bug guard that must never fire).
    """
    fractions = validate_fractions(fractions)
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise MedvolInputError("--seed", f"must be a non-negative integer, got {seed!r}")
    for position, entry in enumerate(entries):
        if entry.get("subject") in (None, ""):
            raise MedvolInputError(None, f"datalist entry {position} ({entry.get('image')}) has no subject id")
    unit_of = _units(sorted({str(e["subject"]) for e in entries}), linked)
    strata = subject_strata([{**e, "subject": unit_of[str(e["subject"])]} for e in entries])
    groups: dict[tuple, list[str]] = defaultdict(list)
    for subject in sorted(strata):
        groups[strata[subject] if stratify else ()].append(subject)
    ordered_strata = sorted(groups)
    counts = _stratum_counts([len(groups[s]) for s in ordered_strata], fractions)
    rng = np.random.default_rng(seed)
    split_of: dict[str, str] = {}
    for stratum, stratum_counts in zip(ordered_strata, counts):
        subjects = list(groups[stratum])
        rng.shuffle(subjects)
        start = 0
        for name, count in zip(SPLIT_NAMES, stratum_counts):
            for subject in subjects[start: start + count]:
                split_of[subject] = name
            start += count
    splits: dict[str, list[dict]] = {name: [] for name in SPLIT_NAMES}
    for entry in entries:
        splits[split_of[unit_of[str(entry["subject"])]]].append(entry)
    check_no_subject_leak(splits)
    return splits


def _units(subjects: Sequence[str], linked: Sequence[Sequence[str]]) -> dict[str, str]:
    """Subject -> the unit it is split with: the first (sorted) subject of its linked component, else itself."""
    parent = {s: s for s in subjects}

    def find(s: str) -> str:
        while parent[s] != s:
            parent[s] = parent[parent[s]]
            s = parent[s]
        return s

    for group in linked:
        members = sorted(str(m) for m in group if str(m) in parent)
        for other in members[1:]:
            a, b = find(members[0]), find(other)
            if a != b:
                parent[max(a, b)] = min(a, b)
    return {s: find(s) for s in subjects}


def subsample_training(
    training: Sequence[dict], fraction: float, seed: int = 0
) -> tuple[list[dict], list[dict]]:
    """Keep `fraction` of the training subjects, stratified by label like `split_subjects`: the low-data regime.

    The validation and test splits are not touched, so a dataset prepared with a fraction has the same held-out
    splits as the full one (same source, fractions and seed).

    Args:
        training: the training entries of `split_subjects`.
        fraction: share of the training subjects to keep, in (0, 1]; every stratum keeps at least one subject.
        seed: seed of the choice (independent of the split's shuffle).

    Returns:
        `(kept, left_out)` entries, each in input order.

    Raises:
        MedvolInputError: a fraction outside (0, 1].
    """
    if not 0 < fraction <= 1:
        raise MedvolInputError("--train-fraction", f"must be in (0, 1], got {fraction}")
    if fraction == 1:
        return list(training), []
    strata = subject_strata(training)
    groups: dict[tuple, list[str]] = defaultdict(list)
    for subject in sorted(strata):
        groups[strata[subject]].append(subject)
    rng = np.random.default_rng([seed, 1])
    kept_subjects: set[str] = set()
    for stratum in sorted(groups):
        subjects = list(groups[stratum])
        rng.shuffle(subjects)
        kept_subjects.update(subjects[: max(1, round(fraction * len(subjects)))])
    kept = [e for e in training if str(e["subject"]) in kept_subjects]
    left_out = [e for e in training if str(e["subject"]) not in kept_subjects]
    return kept, left_out


def check_no_subject_leak(splits: dict[str, Sequence[dict]]) -> None:
    """Raise if any subject has entries in more than one split.

    Raises:
        RuntimeError: naming the subjects found in several splits.
    """
    seen: dict[str, str] = {}
    leaks = set()
    for name, split_entries in splits.items():
        for entry in split_entries:
            subject = str(entry["subject"])
            if seen.setdefault(subject, name) != name:
                leaks.add(subject)
    if leaks:
        raise RuntimeError(f"subjects in more than one split: {sorted(leaks)[:10]}")


def split_summary(splits: dict[str, Sequence[dict]], classes: Sequence[str] = ()) -> dict:
    """Entries, subjects and (when labelled) entries per class name in every split."""
    summary = {}
    for name, split_entries in splits.items():
        item = {"entries": len(split_entries), "subjects": len({e["subject"] for e in split_entries})}
        if classes:
            per_class = {c: 0 for c in classes}
            for entry in split_entries:
                if entry.get("label") is not None:
                    per_class[classes[int(entry["label"])]] += 1
            item["per_class"] = per_class
        summary[name] = item
    return summary


def class_coverage(splits: dict[str, Sequence[dict]], classes: Sequence[str],
                   fractions: Sequence[float] = DEFAULT_FRACTIONS) -> tuple[dict, list[str]]:
    """Classes with too few subjects to reach every split, and splits that miss a class.

    Only splits with a fraction above 0 that hold entries count (an empty split has its own message).

    Args:
        splits: ``{split name: entries}`` with integer ``label`` (None: unlabelled).
        classes: class names indexed by the labels.
        fractions: the split fractions, in `SPLIT_NAMES` order.

    Returns:
        ``({"too_few_subjects": {class: subjects}, "missing": {split: [classes]}}, lines)``: one line per class too
        small for the splits and one per split missing classes; both empty when every split has every class.
    """
    used = [name for name, fraction in zip(SPLIT_NAMES, fractions) if fraction > 0 and splits.get(name)]
    if not classes or len(used) < 2:
        return {"too_few_subjects": {}, "missing": {}}, []
    subjects: dict[int, set] = defaultdict(set)
    present: dict[str, set[int]] = {name: set() for name in used}
    for name in used:
        for entry in splits[name]:
            if entry.get("label") is not None:
                subjects[int(entry["label"])].add(str(entry["subject"]))
                present[name].add(int(entry["label"]))
    lines = []
    too_few = {classes[k]: len(subjects[k]) for k in range(len(classes)) if len(subjects[k]) < len(used)}
    for name, count in too_few.items():
        k = list(classes).index(name)
        where = [s for s in used if k in present[s]]
        lines.append(f"class {name!r} has {count} subject(s), too few for the {len(used)} splits "
                     f"{', '.join(used)}: " + (f"it is in {', '.join(where)} only" if where else "it has no image"))
    missing = {}
    for name in used:
        absent = [classes[k] for k in range(len(classes)) if k not in present[name]]
        if absent:
            missing[name] = absent
            lines.append(f"the {name} split has no image of class(es) {', '.join(map(repr, absent))}: its metrics "
                         "say nothing about them")
    return {"too_few_subjects": too_few, "missing": missing}, lines
