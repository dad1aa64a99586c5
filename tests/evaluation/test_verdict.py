"""The verdict that opens report.html and goes to metrics.json (`medvol.evaluation.verdict`): an untrained run is told
its samples are not realistic, held-out real images given as synthetic are not, and unrealistic samples get no
green "no mode collapse"."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from medvol.cli import main
from medvol.evaluation.verdict import CLOSE_TO_REAL, CONCERNS, NOT_REALISTIC, samples_verdict
from medvol.report import html

# metrics of a real-looking set (numbers as medvol evaluate writes them), and changes that make it worse
REAL_LIKE = {
    "fid": {"value": 6.0, "ci95": [2.0, 30.0]}, "fid_real_baseline": {"value": 5.0, "ci95": [0.0, 40.0]},
    "precision": 0.6, "precision_real_baseline": 0.65, "recall": 0.7, "recall_real_baseline": 0.8,
    "mode_collapse": False, "privacy": {"flagged_fraction": 0.05, "expected_fraction": 0.05},
    "recognisability": {"per_class": {"a": 0.9, "b": 0.85}, "overall": 0.88, "real_test": {"overall": 0.95}},
    "inputs": {"synthetic_provenance": {"run": "run7", "checkpoint": "checkpoints/checkpoint_00000005.pt",
                                        "family": "cgan", "seed": 0}},
}
NOISE = {"fid": {"value": 120.0, "ci95": [60.0, 150.0]}, "precision": 0.0, "recall": 0.0,
         "recognisability": {"per_class": {"a": 0.0, "b": 1.0}, "overall": 0.5, "real_test": {"overall": 1.0}}}

CASES = [
    ({}, CLOSE_TO_REAL, []),
    (NOISE, NOT_REALISTIC, ["FID 120 is 24 times the real baseline (5)", "precision 0.00 near 0",
                            "recall 0.00 near 0", "recognisability 0.50 at chance (0.50 for 2 classes"]),
    ({"fid": {"value": 60.0}}, NOT_REALISTIC, ["FID 60 is 12 times"]),  # FID alone, 10 times the baseline or more
    ({"fid": {"value": 45.0}}, CONCERNS, ["FID 45 is 9 times"]),  # FID alone, 3 to 10 times: a concern
    ({"fid": {"value": 35.0}}, CLOSE_TO_REAL, []),  # 7 times, but inside the baseline's interval at this n
    ({"mode_collapse": True}, CONCERNS, ["mode collapse"]),
    ({"privacy": {"flagged_fraction": 0.4, "expected_fraction": 0.05}}, CONCERNS, ["40% of the samples flagged"]),
]

WORSE = {"mean": -0.05, "ci95": [-0.08, -0.02]}
UNCLEAR = {"mean": -0.01, "ci95": [-0.04, 0.02]}
# the utility judgement: arms with synthetic data against the same arm without it, summary metrics only
UTILITY_CASES = [
    # augmentation against real alone says nothing about the samples; a per-class recall is one of many comparisons
    ({"paired_difference": {"real+augmentation": {"accuracy": WORSE},
                            "real+synthetic": {"recall_a": WORSE, "accuracy": UNCLEAR}}}, CLOSE_TO_REAL, []),
    ({"paired_difference": {"real+synthetic": {"accuracy": WORSE}}}, CONCERNS,
     ["real+synthetic is worse than real alone in accuracy (-0.050"]),
    # an augmented arm is judged against real+augmentation, not against real alone
    ({"paired_difference": {"real+augmentation+synthetic": {"balanced_accuracy": {"mean": 0.03, "ci95": [0.01, 0.05]}}},
      "paired_difference_augmentation": {"real+augmentation+synthetic": {"balanced_accuracy": WORSE}}}, CONCERNS,
     ["real+augmentation+synthetic is worse than real+augmentation in balanced_accuracy (-0.050"]),
    ({"paired_difference": {"real+augmentation+synthetic": {"accuracy": WORSE}},
      "paired_difference_augmentation": {"real+augmentation+synthetic": {"accuracy": UNCLEAR}}}, CLOSE_TO_REAL, []),
]


@pytest.mark.parametrize("utility,level,phrases", UTILITY_CASES)
def test_utility_concerns_compare_like_with_like(utility, level, phrases):
    verdict = samples_verdict({**REAL_LIKE, "utility": utility})
    assert verdict["level"] == level, verdict
    for phrase in phrases:
        assert phrase in verdict["headline"], verdict["headline"]


@pytest.mark.parametrize("changes,level,phrases", CASES)
def test_verdict_levels(changes, level, phrases):
    verdict = samples_verdict({**REAL_LIKE, **changes})
    assert verdict["level"] == level, verdict
    assert verdict["realistic"] is (level != NOT_REALISTIC)
    for phrase in phrases:
        assert phrase in verdict["headline"], verdict["headline"]
    assert "(cgan, iteration 5, checkpoint checkpoints/checkpoint_00000005.pt, run run7)" in verdict["headline"]


def test_unrealistic_samples_get_no_green_all_clear_on_diversity():
    metrics = {**REAL_LIKE, **NOISE}
    metrics["verdict"] = samples_verdict(metrics)
    summary, diversity = html._summary(metrics), html._diversity(metrics)
    assert 'class="ok">no<' not in summary and "not judged" in summary
    assert "No mode collapse" not in diversity and "not judged" in diversity
    assert "chance 0.50 for 2 classes" in summary
    metrics = {**REAL_LIKE, "verdict": samples_verdict(REAL_LIKE)}
    assert 'class="ok">no<' in html._summary(metrics) and "No mode collapse" in html._diversity(metrics)


@pytest.mark.slow
def test_report_of_an_untrained_run_opens_with_not_realistic_and_held_out_real_images_do_not(tmp_path, capsys):
    data = tmp_path / "data"
    assert main(["prepare", "phantoms", "--out", str(data), "--mode", "slice", "--size", "16,16"]) == 0
    run_dir = tmp_path / "run"
    assert main(["train", "--bundle", "cgan", "--data", str(data), "--out", str(run_dir), "--iterations", "3",
                 "--device", "cpu", "--precision", "fp32", "--width", "4", "--evaluate-every", "0"]) == 0
    assert main(["sample", str(run_dir), "--n", "12", "--out", str(tmp_path / "samples")]) == 0
    evaluation = tmp_path / "evaluation"
    capsys.readouterr()
    assert main(["evaluate", "--real", str(data), "--synthetic", str(tmp_path / "samples"), "--out", str(evaluation),
                 "--run", str(run_dir), "--classifier-epochs", "100"]) == 0
    assert "verdict: Samples not yet realistic (cgan" in capsys.readouterr().out  # the console says it too
    verdict = json.loads((evaluation / "metrics.json").read_text())["verdict"]
    assert verdict["level"] == NOT_REALISTIC and verdict["headline"].startswith("Samples not yet realistic (cgan, iteration 3 of 3")
    report = (evaluation / "report.html").read_text()
    body = report[report.index("<body>"):]
    first_paragraph = re.search(r"<p[^>]*>(.*?)</p>", body).group(1)
    assert first_paragraph.startswith("Samples not yet realistic"), first_paragraph

    # held-out real images (the validation split, which evaluate does not use) given as synthetic, by class folder
    held_out = tmp_path / "held_out"
    for entry in json.loads((data / "datalist.json").read_text())["validation"]:
        (held_out / entry["label_name"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(entry["image"], held_out / entry["label_name"] / Path(entry["image"]).name)
    assert main(["evaluate", "--real", str(data), "--synthetic", str(held_out), "--out", str(tmp_path / "real_eval"),
                 "--classifier-epochs", "100"]) == 0
    verdict = json.loads((tmp_path / "real_eval" / "metrics.json").read_text())["verdict"]
    assert verdict["level"] != NOT_REALISTIC and verdict["realistic"], verdict
