"""Patient-level, stratified, seeded splits."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from medvol.data.splits import (
    SPLIT_NAMES,
    check_no_subject_leak,
    split_subjects,
    split_summary,
    subject_strata,
    subsample_training,
    validate_fractions,
)
from medvol.errors import MedvolInputError


def make_entries(subjects_per_class: dict[int, int], entries_per_subject: int = 1) -> list[dict]:
    entries = []
    for label, count in subjects_per_class.items():
        for s in range(count):
            for e in range(entries_per_subject):
                entries.append({"image": f"/x/c{label}_s{s}_{e}.nii.gz", "subject": f"c{label}-s{s}", "label": label})
    return entries


def subjects_of(splits) -> dict[str, set[str]]:
    return {name: {e["subject"] for e in entries} for name, entries in splits.items()}


TEST_CASES_BAD_FRACTIONS = [
    [[0.6, 0.2], "expected 3 fractions"],
    [[0.7, 0.2, 0.2], "sum to 1"],
    [[0.5, 0.6, -0.1], "between 0 and 1"],
    [[0.0, 0.5, 0.5], "training fraction"],
    [[float("nan"), 0.5, 0.5], "between 0 and 1"],
]


@pytest.mark.parametrize("fractions, message", TEST_CASES_BAD_FRACTIONS)
def test_bad_fractions(fractions, message):
    with pytest.raises(MedvolInputError, match=message) as raised:
        validate_fractions(fractions)
    assert raised.value.path == "--split"


def test_fractions_with_zero_test_split_are_valid():
    assert validate_fractions([0.8, 0.2, 0.0]) == (0.8, 0.2, 0.0)
    splits = split_subjects(make_entries({0: 10}), [0.8, 0.2, 0.0])
    assert [len(splits[n]) for n in SPLIT_NAMES] == [8, 2, 0]


@pytest.mark.parametrize("entries_per_subject", [1, 4])
def test_no_subject_in_two_splits_and_every_entry_kept(entries_per_subject):
    entries = make_entries({0: 13, 1: 7, 2: 5}, entries_per_subject)
    splits = split_subjects(entries, seed=3)
    found = subjects_of(splits)
    assert not (found["training"] & found["validation"] or found["training"] & found["test"]
                or found["validation"] & found["test"])
    assert sum(len(v) for v in splits.values()) == len(entries)
    for name in SPLIT_NAMES:  # all entries of a subject travel together
        counts = Counter(e["subject"] for e in splits[name])
        assert set(counts.values()) <= {entries_per_subject}


def test_deterministic_and_independent_of_input_order():
    entries = make_entries({0: 30, 1: 20})
    first = split_subjects(entries, seed=7)
    shuffled = list(entries)
    random.Random(1).shuffle(shuffled)
    assert subjects_of(split_subjects(shuffled, seed=7)) == subjects_of(first)
    assert subjects_of(split_subjects(entries, seed=8)) != subjects_of(first)


@pytest.mark.parametrize("per_class, fractions", [
    [{0: 500, 1: 500, 2: 500}, (0.6, 0.2, 0.2)],
    [{0: 90, 1: 10}, (0.6, 0.2, 0.2)],
    [{0: 41, 1: 17, 2: 9}, (0.7, 0.15, 0.15)],
])
def test_stratified_class_proportions(per_class, fractions):
    splits = split_subjects(make_entries(per_class), fractions, seed=0)
    total = sum(per_class.values())
    for name, fraction in zip(SPLIT_NAMES, fractions):
        counts = Counter(e["label"] for e in splits[name])
        assert abs(len(splits[name]) - total * fraction) <= 1  # overall size matches the fraction
        for label, n in per_class.items():
            assert abs(counts[label] - n * fraction) < 1  # per class: floor or ceil of the exact share


def test_tiny_classes_are_spread_sanely():
    splits = split_subjects(make_entries({0: 1, 1: 2, 2: 2, 3: 2, 4: 2}), seed=0)
    per_split = {name: Counter(e["label"] for e in entries) for name, entries in splits.items()}
    assert per_split["training"][0] == 1  # a one-subject class trains
    for label in (1, 2, 3, 4):
        assert per_split["training"][label] >= 1
    assert len(splits["validation"]) >= 1 and len(splits["test"]) >= 1  # leftovers balance across splits
    assert sum(len(v) for v in splits.values()) == 9


def test_single_subject_goes_to_training():
    splits = split_subjects(make_entries({0: 1}, entries_per_subject=3))
    assert len(splits["training"]) == 3 and not splits["validation"] and not splits["test"]


def test_unlabelled_and_mixed_label_subjects():
    entries = [{"image": f"/x/{i}", "subject": f"s{i // 2}"} for i in range(20)]
    splits = split_subjects(entries, seed=1)
    assert [len({e["subject"] for e in splits[n]}) for n in SPLIT_NAMES] == [6, 2, 2]
    mixed = [{"subject": "a", "label": 0}, {"subject": "a", "label": 1}, {"subject": "b", "label": 1}]
    assert subject_strata(mixed) == {"a": (0, 1), "b": (1,)}


def test_missing_subject_raises():
    with pytest.raises(MedvolInputError, match="no subject id"):
        split_subjects([{"image": "/x/a.nii.gz", "subject": ""}])


def test_leak_guard_and_summary():
    with pytest.raises(RuntimeError, match="more than one split: \\['a'\\]"):
        check_no_subject_leak({"training": [{"subject": "a"}], "validation": [], "test": [{"subject": "a"}]})
    splits = split_subjects(make_entries({0: 5, 1: 5}, entries_per_subject=2), seed=0)
    summary = split_summary(splits, ["normal", "lesion"])
    assert summary["training"] == {"entries": 12, "subjects": 6, "per_class": {"normal": 6, "lesion": 6}}


def test_subsample_training_keeps_a_stratified_share_and_every_class():
    training = split_subjects(make_entries({0: 100, 1: 40, 2: 3}, entries_per_subject=2), seed=0)["training"]
    kept, left_out = subsample_training(training, 0.1, seed=0)
    assert len(kept) + len(left_out) == len(training)
    assert not {e["subject"] for e in kept} & {e["subject"] for e in left_out}  # whole subjects only
    per_class = Counter(e["label"] for e in kept)
    total = Counter(e["label"] for e in training)
    assert per_class[0] == 2 * round(0.1 * total[0] / 2) and per_class[1] == 2 * round(0.1 * total[1] / 2)
    assert per_class[2] == 2  # a stratum keeps at least one subject
    assert subsample_training(training, 0.1, seed=0) == (kept, left_out)
    assert subsample_training(training, 0.1, seed=1)[0] != kept
    assert subsample_training(training, 1.0, seed=0) == (training, [])
    with pytest.raises(MedvolInputError, match="--train-fraction"):
        subsample_training(training, 0.0)


def test_class_coverage_names_small_classes_and_splits_missing_one():
    from medvol.data.splits import class_coverage

    entries = [{"subject": f"s{i}", "label": 0} for i in range(10)] + [{"subject": "t0", "label": 1},
                                                                       {"subject": "t1", "label": 1}]
    splits = split_subjects(entries, (0.6, 0.2, 0.2), seed=0)
    coverage, lines = class_coverage(splits, ["big", "small"], (0.6, 0.2, 0.2))
    assert coverage["too_few_subjects"] == {"small": 2} and len(lines) == 2
    (missing,) = coverage["missing"]
    assert coverage["missing"][missing] == ["small"] and missing != "training"
    assert class_coverage(splits, ["big", "small"], (1.0, 0.0, 0.0)) == ({"too_few_subjects": {}, "missing": {}}, [])
    balanced = split_subjects(entries[:10] + [{"subject": f"t{i}", "label": 1} for i in range(5)], seed=0)
    assert class_coverage(balanced, ["big", "small"]) == ({"too_few_subjects": {}, "missing": {}}, [])
