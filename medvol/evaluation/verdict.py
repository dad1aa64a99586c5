"""The verdict on a synthetic set: one sentence a researcher can act on, from the numbers of `medvol evaluate`.

Each number is read against its real-vs-real baseline (what new real images score) and against chance:

- **FID** at least `FID_RATIO` times the real baseline, and above the baseline's bootstrap interval;
- **precision** (samples among real images) or **recall** (real variety covered) at most `NEAR_ZERO` where held-out
  real images reach at least `BASELINE_SOLID`;
- **recognisability** within `CHANCE_MARGIN` of the way from chance (1 / classes) to the real test images' score.

Two of these signals (or an FID `FID_RATIO_ALONE` times the baseline) say the samples are not realistic, one says
there are concerns; mode collapse, far more possible copies than chance, or a utility loss are concerns of samples
that pass. Diversity is not judged for unrealistic samples: noise is diverse.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from medvol.evaluation.keys import MetricsKeys as Keys

if TYPE_CHECKING:
    from medvol.runs import RunRecord

__all__ = ["NOT_REALISTIC", "CONCERNS", "CLOSE_TO_REAL", "VERDICT_METHOD", "samples_verdict", "run_identity"]

NOT_REALISTIC = "not_realistic"
CONCERNS = "concerns"
CLOSE_TO_REAL = "close_to_real"
FID_RATIO = 3.0
FID_RATIO_ALONE = 10.0
NEAR_ZERO = 0.1
BASELINE_SOLID = 0.5
CHANCE_MARGIN = 0.25
COPIES_FACTOR = 2.0  # flagged fraction above this many times the expected one: memorisation concern
# per-class recalls are many comparisons at 95% each: only the summary metrics of a utility arm are judged
HEADLINE_UTILITY_METRICS = ("accuracy", "balanced_accuracy", "auc")
VERDICT_METHOD = (
    f"Not realistic when two of these hold (or the first with FID at least {FID_RATIO_ALONE:g} times the baseline): "
    f"FID at least {FID_RATIO:g} times the real baseline and above its 95% interval; precision or recall at most "
    f"{NEAR_ZERO:g} where held-out real images reach {BASELINE_SOLID:g}; recognisability within "
    f"{CHANCE_MARGIN:.0%} of the way from chance (1 / classes) to the real test images' score. Concerns: one of "
    f"these, mode collapse, more than {COPIES_FACTOR:g} times the expected fraction of possible copies, or a "
    "utility arm with synthetic data whose paired difference (accuracy, balanced accuracy or AUC) to the same arm "
    "without synthetic data (real alone, or real+augmentation for the augmented arms) is below 0 with its whole 95% "
    "interval."
)


def _value(entry: Any) -> float | None:
    if isinstance(entry, Mapping):
        entry = entry.get("value", entry.get("mean"))
    return None if entry is None or isinstance(entry, bool) else float(entry)


def run_identity(metrics: Mapping, run_record: RunRecord | None = None) -> dict | None:
    """Family, checkpoint, iteration and run folder name of the generator, from the synthetic datalist's provenance
    (``inputs.synthetic_provenance``) and, when given, the run's record; None when nothing is known."""
    provenance = dict((metrics.get(Keys.INPUTS) or {}).get("synthetic_provenance") or {})
    if not provenance and run_record is None:
        return None
    checkpoint = provenance.get("checkpoint")
    match = re.search(r"checkpoint_(\d+)\.pt$", str(checkpoint or ""))
    folder = run_record.folder if run_record is not None else None
    identity = {
        "run": provenance.get("run") or (folder.name if folder is not None else None),
        "family": provenance.get("family") or (run_record.family if run_record is not None else None),
        "checkpoint": checkpoint,
        "iteration": int(match.group(1)) if match else None,
        "iterations_planned": run_record.iterations if run_record is not None else None,
        "seed": provenance.get("seed"),
    }
    return {key: value for key, value in identity.items() if value is not None} or None


def _run_text(identity: Mapping | None) -> str:
    if not identity:
        return ""
    parts = [str(identity["family"])] if identity.get("family") else []
    if identity.get("iteration") is not None:
        planned = identity.get("iterations_planned")
        parts.append(f"iteration {identity['iteration']}" + (f" of {planned}" if planned else ""))
    if identity.get("checkpoint"):
        parts.append(f"checkpoint {identity['checkpoint']}")
    if identity.get("run"):
        parts.append(f"run {identity['run']}")
    return f" ({', '.join(parts)})" if parts else ""


def _unrealism(metrics: Mapping) -> tuple[list[str], float | None]:
    """The signals of unrealistic samples that fire, as phrases, and the FID ratio."""
    findings = []
    fid, baseline = _value(metrics.get(Keys.FID)), _value(metrics.get(Keys.FID_REAL_BASELINE))
    ratio = fid / baseline if fid is not None and baseline is not None and baseline > 0 else None
    interval = (metrics.get(Keys.FID_REAL_BASELINE) or {}).get("ci95") if isinstance(metrics.get(Keys.FID_REAL_BASELINE), Mapping) else None
    above_interval = fid is not None and (not interval or fid > float(interval[1]))
    if ratio is not None and ratio >= FID_RATIO and above_interval:
        findings.append(f"FID {fid:.3g} is {ratio:.3g} times the real baseline ({baseline:.3g})")
    for key, meaning in (("precision", "samples among real images"), ("recall", "real variety covered")):
        value, real = _value(metrics.get(key)), _value(metrics.get(f"{key}_real_baseline"))
        if value is not None and real is not None and value <= NEAR_ZERO and real >= BASELINE_SOLID:
            findings.append(f"{key} {value:.2f} near 0 ({meaning}; held-out real images {real:.2f})")
    recognised = metrics.get(Keys.RECOGNISABILITY) or {}
    classes = len(recognised.get("per_class") or {})
    overall, real = _value(recognised.get("overall")), _value((recognised.get("real_test") or {}).get("overall"))
    if classes >= 2 and overall is not None and real is not None:
        chance = 1.0 / classes
        if real > chance and overall <= chance + CHANCE_MARGIN * (real - chance):
            findings.append(f"recognisability {overall:.2f} at chance ({chance:.2f} for {classes} classes; real test "
                            f"images {real:.2f})")
    return findings, ratio


def _concerns(metrics: Mapping) -> list[str]:
    concerns = []
    if metrics.get(Keys.MODE_COLLAPSE):
        reason = str((metrics.get(Keys.DIVERSITY) or {}).get("mode_collapse_reason") or "").split("; ")[0]
        concerns.append("mode collapse" + (f" ({reason})" if reason else ""))
    privacy = metrics.get(Keys.PRIVACY) or {}
    flagged, expected = _value(privacy.get("flagged_fraction")), _value(privacy.get("expected_fraction"))
    if flagged is not None and expected and flagged > COPIES_FACTOR * expected:
        concerns.append(f"{flagged:.0%} of the samples flagged as possible copies of training images (about "
                        f"{expected:.0%} by chance)")
    utility = metrics.get(Keys.UTILITY) or {}
    against_augmentation = utility.get("paired_difference_augmentation") or {}
    for arm, entry in (utility.get("paired_difference") or {}).items():
        if not _uses_synthetic(arm):
            continue  # real+augmentation against real says nothing about the samples
        reference = "real alone"
        if "augmentation" in arm and arm in against_augmentation:
            entry, reference = against_augmentation[arm], "real+augmentation"
        for name, difference in (entry or {}).items():
            interval = difference.get("ci95") if isinstance(difference, Mapping) else None
            if name in HEADLINE_UTILITY_METRICS and interval and float(interval[1]) < 0:
                concerns.append(f"utility: {arm} is worse than {reference} in {name} "
                                f"({_value(difference):+.3f} [{float(interval[0]):+.3f}, {float(interval[1]):+.3f}])")
    return concerns


def _uses_synthetic(arm: str) -> bool:
    return "synthetic" in arm or "balanced" in arm


def samples_verdict(metrics: Mapping, run_record: RunRecord | None = None) -> dict:
    """The verdict of `medvol evaluate` (``metrics.json`` ``verdict``, the first lines of ``report.html``).

    Args:
        metrics: the metrics `medvol evaluate` computed (fidelity, precision/recall, recognisability, diversity,
            privacy, utility; missing parts are not judged).
        run_record: the training run's record (``--run``), for its family and planned iterations.

    Returns:
        ``{"level": "not_realistic" | "concerns" | "close_to_real", "realistic": bool, "headline": str,
        "findings": [...], "concerns": [...], "fid_ratio": float | None, "run": {...} | None}``.
    """
    findings, ratio = _unrealism(metrics)
    identity = run_identity(metrics, run_record)
    not_realistic = len(findings) >= 2 or (ratio is not None and ratio >= FID_RATIO_ALONE and bool(findings))
    concerns = [] if not_realistic else _concerns(metrics)
    if not_realistic:
        level = NOT_REALISTIC
        headline = (f"Samples not yet realistic{_run_text(identity)}: {'; '.join(findings)}. Train longer or change "
                    "the recipe before using them; diversity and privacy say little about such samples.")
    elif findings or concerns:
        level = CONCERNS
        headline = f"Samples with concerns{_run_text(identity)}: {'; '.join(findings + concerns)}."
    else:
        level = CLOSE_TO_REAL
        closeness = f"FID {ratio:.3g} times the real baseline" if ratio is not None else "no signal of unrealism"
        headline = (f"Samples close to the real data on these measures{_run_text(identity)}: {closeness}, no "
                    "precision, recall or recognisability near 0 or chance, no mode collapse, no excess of possible "
                    "copies. Whether they help a classifier is what the utility study says.")
    return {"level": level, "realistic": not not_realistic, "headline": headline, "findings": findings,
            "concerns": concerns, "fid_ratio": ratio, "run": identity}
