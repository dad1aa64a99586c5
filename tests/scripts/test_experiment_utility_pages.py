"""The utility tables and readings of scripts/experiments/mednist.py and adrenal3d.py, fed a small hand-built
`utility` entry shaped as metrics.json has it: every arm run gets a row in the package's order, the synthetic arms
are compared with real+augmentation, and the words follow the signs and intervals of the numbers."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from medvol.evaluation.utility import ALL_ARMS, BALANCED_ARM, PRETRAINED_ARM

EXPERIMENTS = Path(__file__).resolve().parents[2] / "scripts" / "experiments"
CLASSES = ("normal", "lesion")
METRICS = ("accuracy", "balanced_accuracy", "auc", "sensitivity", "specificity")


def load_script(name: str):
    """scripts/experiments/NAME.py as a module (it imports its neighbour `common` from its folder)."""
    spec = importlib.util.spec_from_file_location(f"experiment_{name}", EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def scripts():
    added = str(EXPERIMENTS) not in sys.path
    modules = {name: load_script(name) for name in ("mednist", "adrenal3d")}
    yield modules
    if added and str(EXPERIMENTS) in sys.path:
        sys.path.remove(str(EXPERIMENTS))


def difference(mean: float, low: float, high: float) -> dict:
    return {"mean": mean, "ci95": [low, high], "values": [low, mean, high]}


def utility(against_augmentation: dict[str, tuple[float, float, float]], arms=ALL_ARMS, selection=True) -> dict:
    """A metrics.json `utility` entry: every metric of an arm at 0.80 + the arm's index / 100, the synthetic arms'
    paired differences against real+augmentation as given (the same for every metric)."""
    entry = {
        "seeds": [0, 1, 2],
        "steps": {arm: 504 for arm in arms},
        "counts": {arm: {"real": 0 if arm == "synthetic" else 180,
                         "synthetic": 0 if arm in ("real", "real+augmentation") else 120} for arm in arms},
        "arms": {arm: {m: {"mean": 0.80 + i / 100, "sd": 0.01, "values": [0.8] * 3} for m in METRICS}
                 for i, arm in enumerate(arms)},
        "paired_difference": {arm: {m: difference(0.05, 0.02, 0.08) for m in METRICS} for arm in arms if arm != "real"},
        "paired_difference_augmentation": {arm: {m: difference(*against_augmentation[arm]) for m in METRICS}
                                           for arm in against_augmentation},
        "notes": ["synthetic_ratio 1 asks for 180 synthetic samples but only 120 are available after filtering"],
        "recipe": "ResNetClassifier",
    }
    if selection:
        entry["selection"] = {"threshold": 0.9, "kept": 120, "kept_per_class": {"normal": 70, "lesion": 50},
                              "available_per_class": {"normal": 100, "lesion": 100}, "keep": [True] * 200,
                              "probabilities": [0.95] * 200, "classifier": "given"}
    return entry


ONE_ABOVE = {"synthetic": (-0.10, -0.15, -0.05), "real+synthetic": (-0.01, -0.03, +0.02),
             "real+augmentation+synthetic": (+0.004, -0.01, +0.02), BALANCED_ARM: (-0.02, -0.05, +0.01),
             PRETRAINED_ARM: (+0.03, +0.01, +0.05)}
NONE_ABOVE = dict(ONE_ABOVE, **{PRETRAINED_ARM: (+0.006, -0.004, +0.016)})


def bullet(lines: str, arm: str) -> str:
    [line] = [line for line in lines.splitlines() if line.startswith(f"- {arm} minus real+augmentation")]
    return line


def mednist_runs(differences: dict, selection: bool = True) -> dict:
    return {"cgan_scarce": {"family": "cgan", "regime": "scarce", "training_images": 60,
                            "evaluation_options": "--pretrain-synthetic --select-confidence 0.9",
                            "utility": utility(differences, selection=selection)}}


def test_mednist_table_has_every_arm_in_the_package_order_and_the_difference_to_augmentation(scripts):
    text, _ = scripts["mednist"].utility_section(mednist_runs(ONE_ABOVE), seeds=3)
    rows = [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ")
            and line.split("|")[1].strip() in ALL_ARMS]
    assert rows == list(ALL_ARMS) * 2  # the accuracy and the AUC table
    [pretrained] = [line for line in text.splitlines() if line.startswith(f"| {PRETRAINED_ARM} |")][:1]
    assert f"{0.80 + ALL_ARMS.index(PRETRAINED_ARM) / 100:.3f} ± 0.010; +0.030 [+0.010, +0.050]" in pretrained
    [real] = [line for line in text.splitlines() if line.startswith("| real |")][:1]
    assert ";" not in real  # the reference arms get no difference to real+augmentation


def test_mednist_reading_follows_the_intervals(scripts):
    text, targets = scripts["mednist"].utility_section(mednist_runs(ONE_ABOVE), seeds=3)
    assert "above real+augmentation" in bullet(text, PRETRAINED_ARM)
    assert "below real+augmentation" in bullet(text, "synthetic")
    for arm in ("real+synthetic", "real+augmentation+synthetic", BALANCED_ARM):
        assert "not distinguishable from real+augmentation" in bullet(text, arm)
    assert f"**met** by {PRETRAINED_ARM}" in text
    assert targets["cgan_scarce"]["met"] and targets["cgan_scarce"]["above"] == [PRETRAINED_ARM]
    assert "real+augmentation minus real, accuracy: +0.050 [+0.020, +0.080], above real" in text
    assert "normal 70 / 100, lesion 50 / 100" in text and "kept 120 of 200" in text
    assert "only 120 are available" in text  # the study's notes are not dropped


def test_mednist_reading_says_not_met_when_no_interval_is_above_zero(scripts):
    text, targets = scripts["mednist"].utility_section(mednist_runs(NONE_ABOVE, selection=False), seeds=3)
    assert not any("above real+augmentation" in bullet(text, arm) for arm in NONE_ABOVE)
    assert "not distinguishable from real+augmentation" in bullet(text, PRETRAINED_ARM)
    assert not targets["cgan_scarce"]["met"] and targets["cgan_scarce"]["best"] == PRETRAINED_ARM
    assert f"**not met**; the closest arm, {PRETRAINED_ARM}, has a positive mean difference +0.006" in text
    assert "no sample selection" in text


def test_adrenal_tables_hold_every_arm_and_the_synthetic_arms_against_augmentation(scripts):
    text = scripts["adrenal3d"].utility_section(utility(ONE_ABOVE), seeds=3)
    table, differences = text.split("minus **real+augmentation**")
    assert [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ")][1:] == list(ALL_ARMS)
    rows = [line.split("|")[1].strip() for line in differences.splitlines() if line.startswith("| ")
            and line.split("|")[1].strip() in ALL_ARMS]
    assert rows == [arm for arm in ALL_ARMS if arm in ONE_ABOVE]
    assert f"| {BALANCED_ARM} | 180 + 120 | 504 |" in table
    assert f"| {PRETRAINED_ARM} | +0.030 [+0.010, +0.050] |" in differences
    assert "below real+augmentation" in bullet(text, "synthetic")
    assert "balanced accuracy" in bullet(text, BALANCED_ARM)
    assert f"**met** by {PRETRAINED_ARM}" in text


def test_adrenal_reading_with_one_seed_claims_no_side(scripts):
    one_seed = {arm: {m: {"mean": -0.2, "ci95": None, "values": [-0.2]} for m in METRICS} for arm in ONE_ABOVE}
    entry = dict(utility(ONE_ABOVE), paired_difference_augmentation=one_seed)
    text = scripts["adrenal3d"].utility_section(entry, seeds=1)
    for arm in one_seed:
        assert "below" not in bullet(text, arm) and "above" not in bullet(text, arm)
    assert "no interval (one seed)" in bullet(text, "synthetic")


ADA = {"mode": "ada", "p": 0.0, "target": 0.6, "speed": 0.005,
       "ops": ["translation", "rotation", "scale", "brightness", "contrast", "cutout"]}


@pytest.mark.parametrize("recorded, options, refused", [
    ({"mode": "off"}, [], False),
    (None, [], False),  # a run from before critic augmentation existed
    (ADA, ["--augment", "--critic-augment", "ada"], False),
    (ADA, ["--augment"], True),
    ({"mode": "off"}, ["--augment", "--critic-augment", "ada"], True),
])
def test_a_reused_run_trained_with_other_critic_augmentation_is_refused(scripts, tmp_path, recorded, options, refused):
    from medvol.runs import RunRecord

    augment = "--augment" in options
    RunRecord(family="cgan", spatial_dims=2, image_size=[16, 16], critic_augment=recorded,
              dataset_options={"augment": augment}).save(tmp_path)
    check = scripts["mednist"].check_run_options
    if refused:
        with pytest.raises(SystemExit, match="critic augmentation"):
            check(tmp_path, options)
    else:
        check(tmp_path, options)
