"""AdrenalMNIST3D: class-conditional 3D generation of adrenal gland shapes (normal / hyperplasia) and whether the
synthetic volumes help a 3D classifier of hyperplasia on the official test split.

prepare (the MedMNIST .npz, official split 1188 / 98 / 298) -> train the conditional 3D GAN (bundle cgan) ->
sample the same number of volumes per class -> medvol evaluate --utility --seeds 3 --balance --pretrain-synthetic
--select-confidence 0.9 (fidelity with real-vs-real baselines, diversity, mode collapse, privacy, recognisability,
every utility arm with paired differences against real+augmentation; the classes are imbalanced, so the balancing arm
fills the minority class with synthetic volumes) -> tri-planar montages of real and synthetic volumes per class ->
docs/experiments/adrenal3d/README.md.

Run: .venv/bin/python scripts/experiments/adrenal3d.py [--profile cpu|gpu|smoke]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    REFERENCE_ARM,
    Experiment,
    augmentation_difference_table,
    augmentation_target,
    finished_run,
    fmt,
    load_json,
    mean_sd,
    parser,
    selection_counts,
    utility_metrics_table,
    utility_reading,
    without_per_sample,
)

from medvol.evaluation.keys import METRICS_FILE, MetricsKeys as Keys  # noqa: E402
from medvol.runs import RunRecord  # noqa: E402

NAME = "adrenal3d"
CLASSES = ("normal", "hyperplasia")
METRICS = ("accuracy", "balanced_accuracy", "auc", "sensitivity", "specificity")
MONTAGE_VOLUMES = 6  # volumes per class and set in the montages
MONTAGE_ZOOM = {28: 3, 64: 2}

# Per profile: the archive (28^3 or 64^3), the GAN bundle and iterations, volumes sampled per class (594 x 2 = 1188,
# the size of the real training split: --synthetic-ratio 1 uses all of them), evaluation settings. The selection keeps
# the synthetic volumes a real-trained classifier gives their own class with probability >= select_confidence (a
# one-epoch smoke classifier is never that sure: the smoke profile checks that selection runs, not what it keeps).
PROFILES = {
    "smoke": {"npz": "adrenalmnist3d.npz", "size": 28, "bundle": "cgan", "iterations": 20, "per_class": 24,
              "seeds": 2, "classifier_epochs": 1, "max_samples": 64, "select_confidence": 0.3},
    "cpu": {"npz": "adrenalmnist3d.npz", "size": 28, "bundle": "cgan", "iterations": 1500, "per_class": 594,
            "seeds": 3, "classifier_epochs": None, "max_samples": None, "select_confidence": 0.9},
    "gpu": {"npz": "adrenalmnist3d_64.npz", "size": 64, "bundle": "cgan", "iterations": 4000, "per_class": 594,
            "seeds": 3, "classifier_epochs": None, "max_samples": None, "select_confidence": 0.9},
}
# the ways of using synthetic data of issue J, item 3: minority class filled with synthetic volumes, pre-training
UTILITY_OPTIONS = ["--balance", "--pretrain-synthetic"]

# Measured while choosing the bundle (not rerun by this script): `medvol train --spatial-dims 3` on the 28^3 data,
# batch 16, bf16 autocast, 1 torch thread (medvol's choice on a busy CPU), the 2-core machine shared with other runs.
BUNDLE_CHOICE = (
    "`cgan` (DCGAN pair with label embedding and projection critic, 2.26 M generator parameters at 28^3). "
    "Measured before choosing, 28^3, batch 16, one torch thread on this 2-core CPU at load average 3.3: `cgan` "
    "0.23 s/iteration (40 iterations), `acwgan_gp` (residual generator, 5.75 M parameters, 5 critic steps with "
    "gradient penalty per iteration) 9.7 s/iteration (4 iterations), 42 times slower: 1500 acwgan_gp iterations "
    "would take 4 hours, so only the cgan fits the 60-minute CPU budget."
)


# What the montages of the CPU run (2026-12-02) show, looked at by eye.
SEEN = (
    "Looked at by eye (CPU run): the synthetic glands lie where the real ones do, with the elongated diagonal "
    "sagittal profile and shapes that differ from sample to sample (no two alike, no featureless blobs), and the "
    "hyperplasia samples are thicker than the normal ones. But their outlines are ragged: holes, frayed edges and "
    "stray voxels around the gland, and the thin limbs of normal glands (the Y and L shapes of the axial and coronal "
    "views) are rarely reproduced."
)


def snapping_section(snapped: dict, continuous: dict) -> str:
    """Markdown: the same generator's samples before and after snapping to 0 / 255, in one feature space."""
    def row(label: str, key: str, baseline: str | None = None) -> str:
        show = interval if isinstance(snapped.get(key), dict) else fmt
        base = show(snapped.get(baseline)) if baseline else ""
        return f"| {label} | {show(continuous.get(key))} | {show(snapped.get(key))} | {base} |"

    rows = [row("FID", "fid", "fid_real_baseline"), row("KID", "kid", "kid_real_baseline"),
            row("precision", "precision", "precision_real_baseline"), row("recall", "recall", "recall_real_baseline"),
            row("density", "density", "density_real_baseline"), row("coverage", "coverage", "coverage_real_baseline"),
            row("MS-SSIM among samples", "ms_ssim_synthetic", "ms_ssim_real"),
            f"| mean pairwise distance | {fmt(continuous['diversity'].get('distance_synthetic'))} | "
            f"{fmt(snapped['diversity'].get('distance_synthetic'))} | {fmt(snapped['diversity'].get('distance_real'))} |",
            f"| flagged as possible copies | {len(continuous['privacy']['flagged'])} | "
            f"{len(snapped['privacy']['flagged'])} | 5% expected by chance |"]
    for name in snapped["inputs"]["classes"]:
        rows.append(f"| recognisability {name} | {fmt(continuous['recognisability']['per_class'].get(name))} | "
                    f"{fmt(snapped['recognisability']['per_class'].get(name))} | "
                    f"{fmt(snapped['recognisability']['real_test']['per_class'].get(name))} (real test recall) |")
    return f"""### Why the samples are snapped to 0 / 255

The generator ends in tanh: its raw output is continuous. In the CPU profile's continuous samples 27-31% of the
voxels lie between 10% and 90% of the range (12 samples checked by hand, every 99th; 28-33% in the first run of this
profile, made before medvol snapped samples of mask data): a low-level speckle around the gland that no training
mask has. Below, the generator's continuous output for the very latents of the table above (snapping it gives those
samples voxel for voxel), judged in the same feature space (`--features` of the main evaluation), against the snapped
samples (`medvol sample`, each voxel to the nearer of 0 and 255):

| | continuous output | snapped (the samples above) | real (test vs training; MS-SSIM and distance: training) |
|---|---|---|---|
{chr(10).join(rows)}
"""


def utility_section(utility: dict, seeds: int) -> str:
    """Markdown: every arm run (mean ± sd of each metric), every arm with synthetic data minus real+augmentation
    (paired, 95% interval), and the reading on balanced accuracy, computed from the numbers.

    Args:
        utility: the `utility` entry of metrics.json.
        seeds: number of seeds (for the words).
    """
    return f"""Mean ± sd over {seeds} seeds (the same seeds in every arm). Sensitivity is the recall of hyperplasia,
specificity that of normal.

{utility_metrics_table(utility, METRICS)}

Every arm with synthetic volumes minus **{REFERENCE_ARM}** (the bar to clear), paired by seed, mean and 95% t
interval over the seeds:

{augmentation_difference_table(utility, METRICS)}

Sample selection (synthetic volumes kept / offered per class, by a classifier trained on the real training split,
never the test split): {selection_counts(utility)}.

What the numbers say (balanced accuracy):
{chr(10).join(utility_reading(utility, "balanced_accuracy"))}
"""


def interval(entry: dict | None) -> str:
    if not entry or entry.get("value") is None:
        return "n/a"
    ci = entry.get("ci95")
    return f"{entry['value']:.3g}" + (f" [{ci[0]:.3g}, {ci[1]:.3g}]" if ci else "")


def continuous_samples(run: Path, out: Path, per_class: int, checkpoint: str, device: str) -> None:
    """The generator's continuous output for the latents `medvol sample` drew (same checkpoint, seed 0), written
    without snapping to the masks' two values: what snapping changes, measured in the same feature space."""
    from medvol.sampling import (
        generate,
        load_networks,
        resolve_checkpoint,
        sample_labels,
        to_source_units,
        write_samples,
    )

    record = RunRecord.load(run)
    checkpoint_file = resolve_checkpoint(run, checkpoint)
    networks = load_networks(record, checkpoint_file, device)
    labels = sample_labels(record, per_class)
    images = generate(record, networks, labels, seed=0, device=device)
    provenance = {"run": str(run), "checkpoint": str(checkpoint_file), "seed": 0, "family": record.family}
    write_samples(to_source_units(images, record, snap=False), labels, record, out, "nifti", provenance)


def montages(exp: Experiment, datalist: Path, samples: Path, work: Path, size: int) -> list[tuple[str, str]]:
    """One PNG per class: the first real training volumes (left) and synthetic volumes (right), one volume per row as
    central axial, coronal and sagittal slices (`medvol.report.figures.triplanar_views`), both sets through the same
    preprocessing as the evaluation ([-1, 1] shown black to white), grey lines between the tiles."""
    import numpy as np
    import torch

    from medvol.evaluation.data import load_real, load_synthetic
    from medvol.report.figures import save_png, triplanar_views

    real = load_real(datalist, cache_dir=work / "montage-cache", max_samples=120, seed=0, progress=False)
    synthetic = load_synthetic(samples, real, cache_dir=work / "montage-cache", max_samples=120, seed=0,
                               progress=False).images
    zoom, line, grey = MONTAGE_ZOOM.get(size, 1), 2, 128
    written = []
    for index, name in enumerate(real.classes):
        rows = []
        for row in range(MONTAGE_VOLUMES):
            tiles = []
            for image_set in (real.splits["training"], synthetic):
                chosen = np.flatnonzero(image_set.labels == index)
                volume = image_set.images[int(chosen[row]), 0].numpy() if row < len(chosen) else None
                views = triplanar_views(volume) if volume is not None else [np.full((size, size), -1.0)] * 3
                tiles += [np.round((np.clip(v, -1, 1) + 1) * 127.5).astype(np.uint8) for v in views]
            tiles = [t.repeat(zoom, axis=0).repeat(zoom, axis=1) for t in tiles]
            height = tiles[0].shape[0]
            pieces = []
            for column, tile in enumerate(tiles):
                if column:  # a wide bar between the real and the synthetic half, thin lines elsewhere
                    pieces.append(np.full((height, 4 * line if column == 3 else line), grey, dtype=np.uint8))
                pieces.append(tile)
            rows.append(np.concatenate(pieces, axis=1))
        width = rows[0].shape[1]
        separator = np.full((line, width), grey, np.uint8)
        picture = np.concatenate([piece for row in rows for piece in (row, separator)][:-1])
        file = f"montage_{name}.png"
        save_png(picture, exp.figure_path(file))
        written.append((name, file))
    return written


def evaluation_options(settings: dict) -> list:
    """The profile's `medvol evaluate` options of the main evaluation (without --run)."""
    options = ["--utility", "--seeds", settings["seeds"], *UTILITY_OPTIONS, "--select-confidence",
               settings["select_confidence"]]
    if settings["classifier_epochs"] is not None:
        options += ["--classifier-epochs", settings["classifier_epochs"]]
    if settings["max_samples"] is not None:
        options += ["--max-samples", settings["max_samples"]]
    return options


def main() -> None:
    args = parser(NAME, __doc__.splitlines()[0]).parse_args()
    exp = Experiment(NAME, args)
    settings = PROFILES[exp.profile]
    exp.require(f"adrenal3d/{settings['npz']}")
    size = settings["size"]
    data, run = exp.out / "data", exp.out / "run"
    samples, evaluation = exp.out / "samples", exp.out / "evaluation"

    exp.medvol("prepare", exp.data / "adrenal3d" / settings["npz"], "--out", data, "--class-names", ",".join(CLASSES),
               "--size", f"{size},{size},{size}", skip_if=data / "datalist.json")
    train = ["train", "--bundle", settings["bundle"], "--data", data, "--out", run, "--spatial-dims", 3,
             "--iterations", settings["iterations"], "--seed", 0, "--device", exp.device]
    if exp.profile != "gpu":
        train += ["--evaluate-every", 0]  # the FID evaluations during training cost more than they tell here
    exp.medvol(*train, skip_if=finished_run(run, settings["iterations"]))
    latest = run / "checkpoints" / "latest.json"
    best = latest.is_file() and bool(load_json(latest).get("best"))  # an FID evaluation during training chose one
    exp.medvol("sample", run, "--n", settings["per_class"], "--out", samples, "--seed", 0,
               *(["--checkpoint", "best"] if best else []), skip_if=samples / "datalist.json")
    exp.evaluate(data, samples, evaluation, *evaluation_options(settings), "--run", run)

    # the same samples before snapping, judged in the same feature space (the evaluation's feature extractor)
    continuous, continuous_evaluation = exp.out / "samples-continuous", exp.out / "evaluation-continuous"
    if not (continuous / "datalist.json").is_file():
        continuous_samples(run, continuous, settings["per_class"], "best" if best else "latest", exp.device)
    exp.medvol("evaluate", "--real", data / "datalist.json", "--synthetic", continuous, "--out", continuous_evaluation,
               "--features", evaluation / "features" / "feature_extractor.pt", "--device", exp.device,
               *(["--max-samples", settings["max_samples"]] if settings["max_samples"] is not None else []),
               skip_if=continuous_evaluation / METRICS_FILE)

    metrics = load_json(evaluation / METRICS_FILE)
    metrics["continuous"] = load_json(continuous_evaluation / METRICS_FILE)
    run_record = RunRecord.load(run)
    figures = montages(exp, data / "datalist.json", samples, exp.out, size)
    results = page(exp, settings, metrics, run_record, figures)
    exp.finish(*results)


def page(exp: Experiment, settings: dict, metrics: dict, run_record: RunRecord, figures) -> tuple[dict, str]:
    """results.json content and the markdown page."""
    utility = metrics[Keys.UTILITY]
    counts = metrics[Keys.INPUTS]["counts"]
    test = counts["test"]["per_class"]
    majority = max(test.values()) / sum(test.values())
    diversity = metrics[Keys.DIVERSITY]
    privacy = metrics[Keys.PRIVACY]
    recognised = metrics[Keys.RECOGNISABILITY]
    size = settings["size"]
    training_counts = counts["training"]["per_class"]
    normal_share = training_counts.get("normal", 0) / max(1, sum(training_counts.values()))
    collapse = "YES" if metrics[Keys.MODE_COLLAPSE] else "no"
    if diversity.get("mode_collapse_reason"):
        collapse += f" ({diversity['mode_collapse_reason']})"
    per_class_diversity = "\n".join(
        f"| {name} | {fmt(entry.get('ms_ssim_synthetic'))} | {fmt(entry.get('ms_ssim_real'))} | "
        f"{fmt(entry.get('distance_synthetic'))} | {fmt(entry.get('distance_real'))} | {entry.get('n_synthetic')} / "
        f"{entry.get('n_real')} |"
        for name, entry in diversity["per_class"].items())
    recognition = "\n".join(
        f"| {name} | {fmt(recognised['per_class'].get(name))} | {fmt(recognised['real_test']['per_class'].get(name))} |"
        for name in metrics[Keys.INPUTS]["classes"])
    real_bal = utility["arms"]["real"]["balanced_accuracy"]
    iterations = run_record.iterations or settings["iterations"]
    snapping = snapping_section(metrics, metrics["continuous"])
    fid_note = f"Feature extractor: {metrics['feature_extractor']['description']}."
    if (metrics[Keys.FID].get("value") or 0) < (metrics[Keys.FID_REAL_BASELINE].get("value") or 0):
        fid_note += (" The synthetic set's FID lies below the real test split's: a classifier that fits its training "
                     "images perfectly places unseen real volumes further from them, so a synthetic set can sit closer "
                     "to the training volumes than new real ones without being more realistic. Nearness to individual "
                     "training volumes is what the privacy check below measures.")
    options = " ".join(map(str, evaluation_options(settings)))
    steps = ", ".join(map(str, sorted(set(utility["steps"].values()))))
    reduced = {
        "cpu": f"Reduced for the CPU: {settings['iterations']} generator iterations at 28^3 (the GPU profile, "
               f"not run yet: {PROFILES['gpu']['iterations']} at 64^3 with FID evaluations during training), so "
               "that the whole run stays within 60 minutes on 2 cores.",
        "gpu": "GPU profile: 64^3 volumes, FID evaluations during training and the best checkpoint by FID.",
        "smoke": "Smoke profile: a pipeline check, the numbers mean nothing.",
    }[exp.profile]
    figure_lines = "\n\n".join(
        f"**{name}**: {MONTAGE_VOLUMES} real training volumes (left three columns) and {MONTAGE_VOLUMES} synthetic "
        f"volumes (right three), one volume per row: central axial, coronal and sagittal slices, black background, "
        f"white gland.\n\n![{name}]({file})" for name, file in figures)
    text = f"""
## Setup

- Data: AdrenalMNIST3D (MedMNIST v2, CC BY 4.0), `../shared/data/adrenal3d/{settings['npz']}`: binary adrenal gland
  masks at {size}^3, labels normal / hyperplasia, the official split kept by `medvol prepare` (training
  {counts['training']['total']}: {counts['training']['per_class']}; test {counts['test']['total']}: {test};
  the validation volumes are not used by the evaluation). Intensities are min-max scaled (0/255 to -1/1).
- Generator: {BUNDLE_CHOICE}
- Training: {iterations} iterations, seed 0, widths sized by medvol for {counts['training']['total']} images
  (generator {run_record.parameters.get('generator', 'n/a')} and critic
  {run_record.parameters.get('critic', 'n/a')} parameters). {reduced}
- Sampling: `medvol sample --n {settings['per_class']}` per class: {counts['synthetic']['per_class']}, every voxel
  snapped to 0 or 255 (the training masks' two values, recorded by `medvol prepare` as `intensity.levels`). The synthetic
  set is class-balanced while the real training split is {normal_share:.0%} normal: the real+synthetic arms see
  relatively more hyperplasia than the real arm does (the classifier's loss is class-weighted in every arm); the
  balancing arm adds synthetic volumes of the minority class only.
- Evaluation: `medvol evaluate {options}` with every other default: the classifier recipe is
  medvol's 3D `ResNetClassifier` with class-weighted cross-entropy ({utility['recipe']}), tested on the official test
  split. Every arm takes the same optimiser steps ({steps}), so an arm with more volumes is not also trained longer.

## Utility: does a classifier trained with synthetic volumes do better on the real test split than augmentation?

{utility_section(utility, len(utility['seeds']))}

**Class imbalance.** The test split is {test.get('normal')} normal to {test.get('hyperplasia')} hyperplasia: a
classifier that always answers "normal" scores accuracy {majority:.3f} and balanced accuracy 0.500, so accuracy alone
rewards ignoring the minority class. Balanced accuracy (the mean of sensitivity and specificity) and AUC are the
numbers to read; the real arm's balanced accuracy is {mean_sd(real_bal)}.

## Fidelity (feature space of a classifier trained on the real training split)

| metric | synthetic vs real training | real test vs real training (baseline) |
|---|---|---|
| FID | {interval(metrics['fid'])} | {interval(metrics['fid_real_baseline'])} |
| KID | {interval(metrics['kid'])} | {interval(metrics['kid_real_baseline'])} |
| MMD | {fmt(metrics.get('mmd'))} | {fmt(metrics.get('mmd_real_baseline'))} |
| precision | {fmt(metrics.get('precision'))} | {fmt(metrics.get('precision_real_baseline'))} |
| recall | {fmt(metrics.get('recall'))} | {fmt(metrics.get('recall_real_baseline'))} |
| density | {fmt(metrics.get('density'))} | {fmt(metrics.get('density_real_baseline'))} |
| coverage | {fmt(metrics.get('coverage'))} | {fmt(metrics.get('coverage_real_baseline'))} |

{fid_note}

## Diversity and mode collapse

MS-SSIM among samples (higher = more alike): synthetic {fmt(metrics['ms_ssim_synthetic'])}, real
{fmt(metrics['ms_ssim_real'])}; mean pairwise distance synthetic {fmt(diversity.get('distance_synthetic'))}, real
{fmt(diversity.get('distance_real'))}. **Mode collapse: {collapse}**.

| class | MS-SSIM synthetic | MS-SSIM real | distance synthetic | distance real | n synthetic / real |
|---|---|---|---|---|---|
{per_class_diversity}

## Privacy

{len(privacy['flagged'])} of {counts['synthetic']['total']} synthetic volumes
({fmt(privacy['flagged_fraction'])}) are closer to a training volume than {privacy['percentile']:g}% of held-out
real volumes are (feature distance), against {fmt(privacy['expected_fraction'])} expected by chance;
{fmt(privacy.get('flagged_with_ssim_fraction'))} are also that close by SSIM.

## Recognisability

A classifier trained on the real training split labels each synthetic volume; the fraction given its intended class
(overall {fmt(recognised.get('overall'))}), next to the same classifier's recall on the real test split:

| class | synthetic recognised as their class | real test recall |
|---|---|---|
{recognition}

## Samples

{figure_lines}

{SEEN if exp.profile == "cpu" else ""}

{snapping}

The evaluation's full report (with the training curves) is `{exp.out.name}/evaluation/report.html` in the work
folder; it is not committed.
"""
    keep = ("fid", "kid", "fid_real_baseline", "kid_real_baseline", "mmd", "mmd_real_baseline", "precision", "recall",
            "density", "coverage", "precision_real_baseline", "recall_real_baseline", "density_real_baseline",
            "coverage_real_baseline", "ms_ssim_synthetic", "ms_ssim_real", "mode_collapse", "diversity",
            "recognisability", "utility", "timing", "feature_extractor")
    results = {
        "settings": settings,
        "target": augmentation_target(utility, "balanced_accuracy"),
        "training": {"iterations": iterations, "parameters": run_record.parameters,
                     "width": run_record.width},
        "metrics": {key: metrics.get(key) for key in keep} | {"utility": without_per_sample(utility)},
        "privacy": {k: v for k, v in privacy.items() if k != "nearest"},
        "counts": counts,
        "majority_baseline_accuracy": majority,
        "figures": [file for _, file in figures],
    }
    return results, text


if __name__ == "__main__":
    main()
