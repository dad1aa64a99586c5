"""Experiment 1 of issue 10: class-conditional 2D generation on MedNIST, and whether the samples help a classifier.

Two conditional families (`cgan`: conditional DCGAN with the mode-seeking term; `acwgan_gp`: auxiliary-classifier
WGAN-GP) are trained on the full training split (1800 images), on a stratified 10% of it (low: 180 images,
`medvol prepare --train-fraction 0.1`) and on 10 images per class (scarce: 60 images, `--train-fraction 0.0333`);
the same validation and test splits; the CPU profile trains only the cgan on the smaller regimes, with `--augment`
(and `--critic-augment ada` in the scarce one). Each run is sampled and evaluated with `medvol evaluate --utility
--pretrain-synthetic --select-confidence P` against its own regime's training split, so the classifiers and the
generator that helps them saw the same real images, and every test is on the same 600 held-out real images. The
tables hold every utility arm the evaluation ran, the synthetic ones against real+augmentation (issue J's bar).

Usage: `.venv/bin/python scripts/experiments/mednist.py [--profile cpu|gpu|smoke]` (cpu: 32^2; gpu: 64^2, longer).
Writes docs/experiments/mednist/README.md (tables, targets), results.json and montages.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    REFERENCE_ARM,
    Experiment,
    augmentation_target,
    check_run_options,
    finished_run,
    fmt,
    parser,
    selection_counts,
    up_to_date,
    utility_reading,
    utility_runs_table,
    without_per_sample,
)

from medvol.evaluation.keys import MetricsKeys as Keys  # noqa: E402
from medvol.runs import RunRecord  # noqa: E402

NAME = "mednist"
FAMILIES = ("cgan", "acwgan_gp")
# share of the training split (None: all of it); scarce: 10 images per class (60 of 1800)
REGIMES = {"full": None, "low": 0.1, "scarce": 0.0333}
# 2 CPU cores (measured idle on the 2-core Xeon, docs/results.md): 32^2; cgan 0.032 s/iteration; acwgan_gp in fp32
# (0.88 s per iteration against 1.17 in bf16 at these widths) with 2 critic steps (0.39 s/iteration) and in the full
# regime only: the budget buys it 2400 iterations there (600, or 400 with 5 critic steps, left it collapsed).
# Scarce: ADA raised the synthetic-only arm from 0.759 to 0.816 and recall from 0.23 to 0.73 on the 60 images
# (docs/results.md, issue J), so it trains with --critic-augment ada there; its 240 synthetic images (ratio 4) are
# what that measurement used.
CPU_PLAN = {"regimes": {"cgan": ("full", "low", "scarce"), "acwgan_gp": ("full",)},
            "train_options": {"acwgan_gp": ["--precision", "fp32", "--objective", "critic_steps=2"],
                              "cgan_low": ["--augment"], "cgan_scarce": ["--augment", "--critic-augment", "ada"]},
            "evaluate_regime": {"scarce": ["--synthetic-ratio", 4]}}
# every profile: the pre-training arm and sample selection (the ways of using synthetic data of issue J, item 3)
UTILITY_OPTIONS = ["--pretrain-synthetic"]
PROFILES = {
    "cpu": {"size": 32, "iterations": {"cgan": 6000, "acwgan_gp": 2400}, "per_class": 100, "seeds": 3, **CPU_PLAN,
            "select_confidence": 0.9},
    "gpu": {"size": 64, "iterations": {"cgan": 10000, "acwgan_gp": 6000}, "per_class": 300, "seeds": 5,
            "select_confidence": 0.9,
            "train_options": {"cgan_low": ["--augment"], "acwgan_gp_low": ["--augment"],
                              "cgan_scarce": ["--augment", "--critic-augment", "ada"],
                              "acwgan_gp_scarce": ["--augment", "--critic-augment", "ada"]},
            "evaluate_regime": {"scarce": ["--synthetic-ratio", 4]}},
    # a one-epoch selector is rarely 0.9 sure: the smoke profile checks that selection runs, not what it keeps
    "smoke": {"size": 16, "iterations": {"cgan": 6, "acwgan_gp": 3}, "per_class": 10, "seeds": 1, **CPU_PLAN,
              "select_confidence": 0.1, "evaluate": ["--classifier-epochs", "1", "--max-samples", "120"]},
}
MONTAGE_COLUMNS = 8


def montage(evaluation: Path, datalist: Path, samples: Path, out: Path) -> None:
    """Per class one row: 8 real training images, then 8 synthetic ones (from the evaluation's caches), enlarged x2."""
    import torch

    from medvol.evaluation.data import load_real, load_synthetic
    from medvol.report.figures import sample_montage, save_png

    real = load_real(datalist, evaluation / "cache", progress=False)
    synthetic = load_synthetic(samples, real, evaluation / "cache", progress=False).images
    train = real.splits["training"]
    rows = []
    for label in range(len(real.classes)):
        real_rows = train.images[torch.as_tensor(train.labels == label)][:MONTAGE_COLUMNS]
        fake_rows = synthetic.images[torch.as_tensor(synthetic.labels == label)][:MONTAGE_COLUMNS]
        rows += [real_rows, fake_rows]
    picture = sample_montage(torch.cat(rows), columns=MONTAGE_COLUMNS * 2)
    save_png(picture.repeat(2, axis=0).repeat(2, axis=1), out)


def summary_rows(metrics: dict, label: str) -> str:
    recognised = metrics[Keys.RECOGNISABILITY]
    return (
        f"| {label} | {fmt(metrics['fid'])} [{fmt(metrics['fid']['ci95'][0])}, {fmt(metrics['fid']['ci95'][1])}] "
        f"| {fmt(metrics['fid_real_baseline'])} | {fmt(metrics['kid'])} | {fmt(metrics['kid_real_baseline'])} "
        f"| {fmt(metrics['precision'], 2)} / {fmt(metrics['recall'], 2)} "
        f"| {fmt(metrics['coverage'], 2)} ({fmt(metrics['coverage_real_baseline'], 2)}) "
        f"| {fmt(metrics['ms_ssim_synthetic'], 2)} ({fmt(metrics['ms_ssim_real'], 2)}) "
        f"| {'**yes**' if metrics['mode_collapse'] else 'no'} "
        f"| {len(metrics['privacy']['flagged'])} ({fmt(metrics['privacy']['flagged_fraction'], 2)}) "
        f"| {fmt(recognised['overall'], 3)} |"
    )


def main() -> None:
    args = parser(NAME, __doc__.splitlines()[0]).parse_args()
    exp = Experiment(NAME, args)
    exp.require("mednist64")
    settings = PROFILES[exp.profile]
    size = settings["size"]
    data = {}
    for regime, fraction in REGIMES.items():
        data[regime] = exp.out / f"data_{regime}"
        extra = [] if fraction is None else ["--train-fraction", fraction]
        exp.medvol("prepare", exp.data / "mednist64", "--out", data[regime], "--size", f"{size},{size}", *extra,
                   skip_if=data[regime] / "datalist.json")

    results: dict = {"settings": settings, "runs": {}}
    for family in FAMILIES:
        for regime in settings.get("regimes", {}).get(family, REGIMES):
            key = f"{family}_{regime}"
            run, samples, evaluation = exp.out / "runs" / key, exp.out / "samples" / key, exp.out / "evaluation" / key
            options = training_options(settings, family, regime)
            train_seconds = exp.medvol("train", "--bundle", family, "--data", data[regime], "--out", run,
                                       "--iterations", settings["iterations"][family], "--evaluate-every", 0,
                                       "--device", exp.device, *options,
                                       skip_if=finished_run(run, settings["iterations"][family]))
            check_run_options(run, options)
            exp.medvol("sample", run, "--n", settings["per_class"], "--out", samples,
                       skip_if=up_to_date(samples / "datalist.json", run / "checkpoints" / "latest.json"))
            metrics = exp.evaluate(data[regime], samples, evaluation, "--utility", "--seeds", settings["seeds"],
                                   "--run", run, *evaluation_options(settings, regime))
            run_record = RunRecord.load(run)
            montage(evaluation, data[regime] / "datalist.json", samples, exp.figure_path(f"montage_{key}.png"))
            results["runs"][key] = {
                "family": family, "regime": regime, "iterations": settings["iterations"][family],
                "training_options": " ".join(map(str, options)),
                "train_seconds": round(train_seconds, 1), "parameters": run_record.parameters,
                # the whole training split: --max-samples subsets only the distribution metrics
                "training_images": metrics[Keys.INPUTS]["counts_before_max_samples"]["training"],
                "metrics": {k: metrics[k] for k in (
                    "fid", "fid_real_baseline", "kid", "kid_real_baseline", "precision", "recall", "density",
                    "coverage", "coverage_real_baseline", "ms_ssim_synthetic", "ms_ssim_real", "mode_collapse")},
                "privacy": {k: metrics[Keys.PRIVACY][k] for k in ("flagged_fraction", "expected_fraction")}
                | {"flagged": len(metrics[Keys.PRIVACY]["flagged"])},
                "recognisability": metrics[Keys.RECOGNISABILITY],
                "utility": without_per_sample(metrics[Keys.UTILITY]),
                "evaluation_options": " ".join(map(str, evaluation_options(settings, regime))),
                "evaluation_seconds": metrics[Keys.TIMING]["total"],
            }
            results["runs"][key]["_metrics_full"] = metrics
    exp.finish(*page(results, settings, exp))


def training_options(settings: dict, family: str, regime: str) -> list[str]:
    """The profile's extra `medvol train` options of one family in one regime."""
    extra = settings.get("train_options", {})
    return [*extra.get(family, []), *extra.get(f"{family}_{regime}", [])]


def evaluation_options(settings: dict, regime: str) -> list:
    """The profile's `medvol evaluate` options after `--utility --seeds N --run RUN` in one regime."""
    return [*UTILITY_OPTIONS, "--select-confidence", settings["select_confidence"], *settings.get("evaluate", []),
            *settings.get("evaluate_regime", {}).get(regime, [])]


def run_label(run: dict) -> str:
    return f"{run['family']}, {run['regime']} ({run['training_images']} images)"


def utility_section(runs: dict, seeds: int) -> tuple[str, dict]:
    """Markdown: every arm of every run (accuracy and AUC, synthetic arms against real+augmentation), the selection
    counts and the reading of each run, computed from the numbers; and issue J's target per run (`augmentation_target`
    on accuracy).

    Args:
        runs: per run key `{family, regime, training_images, evaluation_options, utility}` (`utility` as metrics.json
            has it).
        seeds: seeds of the study (for the words).
    """
    utilities = {run_label(run): run["utility"] for run in runs.values()}
    lines = [
        "## Utility: classifiers tested on the 600 held-out real images", "",
        f"Mean ± sd over {seeds} paired seed(s) (the same seed gives every arm the same initial weights); every arm "
        "of a run takes the same optimiser steps (" + "; ".join(
            f"{label}: {', '.join(map(str, sorted(set(u['steps'].values()))))}" for label, u in utilities.items())
        + "), so an arm with more images is not also trained longer. After the `;`: the arm minus "
        f"**{REFERENCE_ARM}**, paired by seed, mean [95% interval]: the bar synthetic data has to clear. "
        "`medvol evaluate` options after `--utility`: " + "; ".join(
            f"{run_label(run)}: `{run['evaluation_options']}`" for run in runs.values()) + ". Training images per "
        "arm (real + synthetic): " + "; ".join(
            f"{label}: " + ", ".join(f"{arm} {c['real']} + {c['synthetic']}" for arm, c in u["counts"].items()
                                     if c["synthetic"]) for label, u in utilities.items()) + ".", "",
        "Accuracy:", "", utility_runs_table(utilities, "accuracy"), "",
        "AUC:", "", utility_runs_table(utilities, "auc", 4), "",
        "Sample selection (synthetic samples kept / offered per class, by a classifier trained on the regime's real "
        "training split, never the test split):", ""]
    lines += [f"- {label}: {selection_counts(u)}." for label, u in utilities.items()]
    targets = {}
    for key, run in runs.items():
        targets[key] = augmentation_target(run["utility"], "accuracy")
        lines += ["", f"**Reading, {run_label(run)}** (accuracy):", "", *utility_reading(run["utility"], "accuracy")]
    return "\n".join(lines), targets


def page(results: dict, settings: dict, exp: Experiment) -> tuple[dict, str]:
    runs = results["runs"]
    full_metrics = {key: run.pop("_metrics_full") for key, run in runs.items()}
    lines = [
        f"MedNIST (`../shared/data/mednist64`, 6 classes, 3000 images; split 1800 / 600 / 600 by `medvol prepare`),"
        f" brought to {settings['size']}x{settings['size']}. Regimes: **full** (1800 training images), **low** (a "
        "stratified 10%, 180 images, `--train-fraction 0.1`) and **scarce** (10 images per class, 60 images, "
        "`--train-fraction 0.0333`); the same 600 test images. Each generator is trained on "
        f"its regime's images only, sampled ({settings['per_class']} per class) and evaluated by `medvol evaluate "
        f"--utility --seeds {settings['seeds']}` against the same regime: the feature space, recognisability "
        "classifier and utility classifiers see only that regime's real images. Iterations: "
        + ", ".join(f"{f} {n}" for f, n in settings["iterations"].items()) + ". Extra `medvol train` options: "
        + ("; ".join(f"{run['family']}, {run['regime']}: `{run['training_options']}`" for run in runs.values()
                      if run["training_options"]) or "none")
        + ". `--augment`: classical augmentation of the training images while the generator learns, so its samples "
        "carry rotations, zooms and shifts too; `--critic-augment ada`: differentiable augmentation of real and "
        "generated images before every critic call, never of the samples.",
        "",
        "## Fidelity, diversity, privacy, recognisability",
        "",
        "FID/KID: in the feature space of a classifier trained on the regime's real training split, with the real "
        "baseline (the held-out test split against the training split, same n). Coverage and MS-SSIM: synthetic "
        "(real baseline in brackets). Copies: samples whose nearest training image is closer than the 5th "
        "percentile of held-out real images (5% expected for new real images).",
        "",
        "| run | FID [95% CI] | FID real | KID | KID real | precision / recall | coverage (real) "
        "| MS-SSIM (real) | collapse | copies flagged | recognisability |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [summary_rows(full_metrics[key], f"{run['family']}, {run['regime']}") for key, run in runs.items()]
    classes = next(iter(full_metrics.values()))["inputs"]["classes"]
    lines += ["", "Recognisability per class (the regime's real-trained classifier labels the samples; in brackets "
              "the same classifier on real test images):", "",
              "| run | " + " | ".join(classes) + " | every class >= 0.90 |", "|---|" + "---|" * (len(classes) + 1)]
    recognisability_met = {}
    for key, run in runs.items():
        per_class = run["recognisability"]["per_class"]
        real_test = run["recognisability"].get("real_test", {}).get("per_class", {})
        met = all(v is not None and v >= 0.9 for v in per_class.values())
        recognisability_met[key] = met
        cells = " | ".join(f"{fmt(per_class.get(c), 2)} ({fmt(real_test.get(c), 2)})" for c in classes)
        lines.append(f"| {run['family']}, {run['regime']} | {cells} | {'met' if met else '**not met**'} |")

    utility_text, targets = utility_section(runs, settings["seeds"])
    lines += ["", utility_text, "", "## Targets of issue 10 (CPU profile)", ""]
    for key, run in runs.items():
        if run["regime"] != "full":
            continue
        per_class = run["recognisability"]["per_class"]
        worst = min(per_class, key=lambda c: per_class[c])
        lines.append(f"- Recognisability >= 0.90 for every class, {run['family']}: "
                     f"{'met' if recognisability_met[key] else 'not met'} (lowest: {worst} {per_class[worst]:.2f}).")

    lines += ["", "## Samples", "",
              "Per class one row: 8 real training images of the regime (left half), then 8 synthetic samples of "
              f"the class (right half); classes from top to bottom: {', '.join(classes)}.", ""]
    for key, run in runs.items():
        options = f", `{run['training_options']}`" if run["training_options"] else ""
        lines += [f"**{run['family']}, {run['regime']}** ({run['iterations']} iterations{options}, "
                  f"{run['train_seconds'] / 60:.1f} min training, evaluation {run['evaluation_seconds'] / 60:.1f} min):",
                  "", f"![{key}](montage_{key}.png)", ""]
    results["targets"] = {"recognisability_every_class_0.9": recognisability_met,
                          "synthetic_above_augmentation": targets}
    return results, "\n".join(lines)


if __name__ == "__main__":
    main()
