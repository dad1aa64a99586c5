"""Experiment 1 of issue 10: class-conditional 2D generation on MedNIST, and whether the samples help a classifier.

Two conditional families (`cgan`: conditional DCGAN with the mode-seeking term; `acwgan_gp`: auxiliary-classifier
WGAN-GP) are trained on the full training split (1800 images) and on a stratified 10% of it (180 images,
`medvol prepare --train-fraction 0.1`: the same validation and test splits; the CPU profile trains only the cgan
there), the low-data generators with `--augment`. Each run is sampled and evaluated with `medvol evaluate --utility`
against its own regime's training split, so the low-data classifiers and the generator that helps them saw the same
180 real images, and every test is on the same 600 held-out real images.

Usage: `.venv/bin/python scripts/experiments/mednist.py [--profile cpu|gpu|smoke]` (cpu: 32^2; gpu: 64^2, longer).
Writes docs/experiments/mednist/README.md (tables, targets), results.json and montages.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    Experiment,
    check_run_options,
    finished_run,
    fmt,
    load_json,
    mean_sd,
    parser,
    signed_interval,
    up_to_date,
)

from medvol.evaluation.keys import MetricsKeys as Keys  # noqa: E402
from medvol.runs import RunRecord  # noqa: E402

NAME = "mednist"
FAMILIES = ("cgan", "acwgan_gp")
REGIMES = {"full": None, "low": 0.1}  # share of the training split; None: all of it
# 2 CPU cores (measured idle on the 2-core Xeon, docs/results.md): 32^2; cgan 0.032 s/iteration; acwgan_gp in fp32
# (0.88 s per iteration against 1.17 in bf16 at these widths) with 2 critic steps (0.39 s/iteration) and in the full
# regime only: the budget buys it 2400 iterations there (600, or 400 with 5 critic steps, left it collapsed)
CPU_PLAN = {"regimes": {"cgan": ("full", "low"), "acwgan_gp": ("full",)},
            "train_options": {"acwgan_gp": ["--precision", "fp32", "--objective", "critic_steps=2"],
                              "cgan_low": ["--augment"]}}
PROFILES = {
    "cpu": {"size": 32, "iterations": {"cgan": 6000, "acwgan_gp": 2400}, "per_class": 100, "seeds": 3, **CPU_PLAN},
    "gpu": {"size": 64, "iterations": {"cgan": 10000, "acwgan_gp": 6000}, "per_class": 300, "seeds": 5,
            "train_options": {"cgan_low": ["--augment"], "acwgan_gp_low": ["--augment"]}},
    "smoke": {"size": 16, "iterations": {"cgan": 6, "acwgan_gp": 3}, "per_class": 10, "seeds": 1, **CPU_PLAN,
              "evaluate": ["--classifier-epochs", "1", "--max-samples", "120"]},
}
ARMS = ("real", "real+augmentation", "synthetic", "real+synthetic", "real+augmentation+synthetic")
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
                                   "--run", run, *settings.get("evaluate", []))
            run_record = RunRecord.load(run)
            montage(evaluation, data[regime] / "datalist.json", samples, exp.figure_path(f"montage_{key}.png"))
            results["runs"][key] = {
                "family": family, "regime": regime, "iterations": settings["iterations"][family],
                "training_options": " ".join(map(str, options)),
                "train_seconds": round(train_seconds, 1), "parameters": run_record.parameters,
                "training_images": metrics[Keys.INPUTS]["counts"]["training"]["total"],
                "metrics": {k: metrics[k] for k in (
                    "fid", "fid_real_baseline", "kid", "kid_real_baseline", "precision", "recall", "density",
                    "coverage", "coverage_real_baseline", "ms_ssim_synthetic", "ms_ssim_real", "mode_collapse")},
                "privacy": {k: metrics[Keys.PRIVACY][k] for k in ("flagged_fraction", "expected_fraction")}
                | {"flagged": len(metrics[Keys.PRIVACY]["flagged"])},
                "recognisability": metrics[Keys.RECOGNISABILITY],
                "utility": metrics[Keys.UTILITY],
                "evaluation_seconds": metrics[Keys.TIMING]["total"],
            }
            results["runs"][key]["_metrics_full"] = metrics
    exp.finish(*page(results, settings, exp))


def training_options(settings: dict, family: str, regime: str) -> list[str]:
    """The profile's extra `medvol train` options of one family in one regime."""
    extra = settings.get("train_options", {})
    return [*extra.get(family, []), *extra.get(f"{family}_{regime}", [])]


def utility_targets(run: dict) -> dict:
    """The issue's low-data target: real+synthetic better than real alone by more than one sd across seeds."""
    arms = run["utility"]["arms"]
    real, mixed = arms["real"]["accuracy"], arms["real+synthetic"]["accuracy"]
    gain = mixed["mean"] - real["mean"]
    sd = max(real["sd"] or 0.0, mixed["sd"] or 0.0)
    return {"gain": gain, "sd": sd, "met": gain > sd,
            "paired": run["utility"]["paired_difference"]["real+synthetic"]["accuracy"]}


def page(results: dict, settings: dict, exp: Experiment) -> tuple[dict, str]:
    runs = results["runs"]
    full_metrics = {key: run.pop("_metrics_full") for key, run in runs.items()}
    lines = [
        f"MedNIST (`../shared/data/mednist64`, 6 classes, 3000 images; split 1800 / 600 / 600 by `medvol prepare`),"
        f" brought to {settings['size']}x{settings['size']}. Regimes: **full** (1800 training images) and **low** (a "
        "stratified 10%, 180 images, `--train-fraction 0.1`; the same 600 test images). Each generator is trained on "
        f"its regime's images only, sampled ({settings['per_class']} per class) and evaluated by `medvol evaluate "
        f"--utility --seeds {settings['seeds']}` against the same regime: the feature space, recognisability "
        "classifier and utility classifiers see only that regime's real images. Iterations: "
        + ", ".join(f"{f} {n}" for f, n in settings["iterations"].items()) + ". Extra `medvol train` options: "
        + ("; ".join(f"{run['family']}, {run['regime']}: `{run['training_options']}`" for run in runs.values()
                      if run["training_options"]) or "none")
        + ". `--augment` in the low regime: classical augmentation of the 180 training images while the generator "
        "learns (the usual remedy for GANs on few images), so its samples carry rotations, zooms and shifts too.",
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

    lines += ["", "## Utility: classifiers tested on the 600 held-out real images", "",
              f"Accuracy, mean ± sd over {settings['seeds']} paired seeds (the same seed gives every arm the same "
              "initial weights); every arm trains 10 epochs and at least 500 optimiser steps, so the 180-image arms "
              "converge too. Synthetic ratio 1 (as many synthetic samples as real ones, or all samples when there are "
              "fewer: " + "; ".join(f"{run['family']}, {run['regime']}: {counts['real']} real + {counts['synthetic']} "
                                    "synthetic" for run in runs.values()
                                    for counts in [run["utility"]["counts"]["real+synthetic"]]) + ").", "",
              "| run | " + " | ".join(ARMS) + " | real+synthetic - real (paired, 95% CI) |",
              "|---|" + "---|" * (len(ARMS) + 1)]
    targets = {}
    for key, run in runs.items():
        arms = run["utility"]["arms"]
        target = utility_targets(run)
        targets[key] = target
        paired = target["paired"]
        lines.append(
            f"| {run['family']}, {run['regime']} | "
            + " | ".join(mean_sd(arms[a]["accuracy"]) if a in arms else "n/a" for a in ARMS)
            + f" | {signed_interval(paired)} |")
    lines += ["", "Balanced accuracy and AUC (mean ± sd):", "", "| run | arm | balanced accuracy | AUC |",
              "|---|---|---|---|"]
    for key, run in runs.items():
        for arm in ("real", "real+synthetic", "synthetic"):
            entry = run["utility"]["arms"].get(arm)
            if entry:
                lines.append(f"| {run['family']}, {run['regime']} | {arm} | {mean_sd(entry['balanced_accuracy'])} "
                             f"| {mean_sd(entry['auc'], 4)} |")

    lines += ["", "## Targets of issue 10 (CPU profile)", ""]
    for key, run in runs.items():
        if run["regime"] != "full":
            continue
        per_class = run["recognisability"]["per_class"]
        worst = min(per_class, key=lambda c: per_class[c])
        lines.append(f"- Recognisability >= 0.90 for every class, {run['family']}: "
                     f"{'met' if recognisability_met[key] else 'not met'} (lowest: {worst} {per_class[worst]:.2f}).")
    for key, run in runs.items():
        if run["regime"] != "low":
            continue
        t = targets[key]
        ci = t["paired"].get("ci95") or [None, None]
        significant = ci[0] is not None and (ci[0] > 0 or ci[1] < 0)
        augmentation = run["utility"]["arms"]["real+augmentation"]["accuracy"]["mean"]
        lines.append(f"- Low-data utility, {run['family']}: real+synthetic - real = {t['gain']:+.4f} against one sd "
                     f"{t['sd']:.4f}: {'met' if t['met'] else 'not met'} (paired difference "
                     f"{signed_interval(t['paired'], 4)}: {'significant' if significant else 'the interval holds 0'}"
                     f"; real+augmentation alone reaches {augmentation:.3f}).")

    lines += ["", "## Samples", "",
              "Per class one row: 8 real training images of the regime (left half), then 8 synthetic samples of "
              f"the class (right half); classes from top to bottom: {', '.join(classes)}.", ""]
    for key, run in runs.items():
        options = f", `{run['training_options']}`" if run["training_options"] else ""
        lines += [f"**{run['family']}, {run['regime']}** ({run['iterations']} iterations{options}, "
                  f"{run['train_seconds'] / 60:.1f} min training, evaluation {run['evaluation_seconds'] / 60:.1f} min):",
                  "", f"![{key}](montage_{key}.png)", ""]
    results["targets"] = {"recognisability_every_class_0.9": recognisability_met, "low_data_utility": targets}
    return results, "\n".join(lines)


if __name__ == "__main__":
    main()
