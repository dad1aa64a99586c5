"""Experiment 3 of issue 10: slice-wise (2D) versus volumetric (3D) WGAN-GP on the hippocampus MRI crops.

The volumes, their axial slices and the 3D WGAN-GP run are those of `hippocampus3d.py` (its work folder, reused:
`prepare_volumes`, `prepare_slices`, `train_gan`, `training_facts`); the slice datalist is the same grid in slice mode,
so the 2D model trains on the slices of exactly the volumes the 3D model trains on. Then:

1. a 2D WGAN-GP on those slices, with the 3D run's batch size, trained first to the 3D run's iteration count (same
   optimiser steps; sampled there) and then on to about the 3D run's training time (same wall-clock budget; the
   seconds per 2D iteration are measured on the first part);
2. V volumes sampled from the 3D run; V x Z slices sampled from each 2D checkpoint and stacked into V volumes of Z
   slices (`medvol.sampling.stack_slice_samples`: consecutive samples, each from its own latent vector, since a
   slice-wise generator has no notion of a volume);
3. `medvol evaluate` of every set against the real slices (2D metrics: each volume cut into its axial slices, scaled
   as a whole like the real ones) and against the real volumes (3D metrics and adjacent-slice coherence per axis),
   one feature network per dimensionality for all sets;
4. docs/experiments/slice_vs_volume/README.md: the tables and tri-planar montages of real, 3D and stacked 2D volumes.

Run: `.venv/bin/python scripts/experiments/slice_vs_volume.py [--profile cpu|gpu|smoke]`.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Experiment, finished_run, fmt, load_json, parser  # noqa: E402

from medvol.evaluation.keys import MetricsKeys as Keys  # noqa: E402
from hippocampus3d import prepare_slices, prepare_volumes, train_gan, training_facts, triplanar_montage  # noqa: E402

NAME = "slice_vs_volume"
# V synthetic volumes per model (the test split has 52); evaluations subsample each real split and synthetic set to
# at most `slices_max` slices (2D) and `volumes_max` volumes (3D); `epochs` of the feature networks (None: medvol's);
# `max_2d`: at most this many 2D iterations for the same-training-time run
SETTINGS = {
    "smoke": {"volumes": 8, "slices_max": 128, "volumes_max": 16, "epochs": 1, "max_2d": 6},
    "cpu": {"volumes": 52, "slices_max": 2048, "volumes_max": None, "epochs": None, "max_2d": 4000},
    "gpu": {"volumes": 52, "slices_max": None, "volumes_max": None, "epochs": None, "max_2d": 40000},
}
SEED = 1  # sampling seed of every model
WARM_UP_STEPS = 3  # first logged 2D steps left out of the seconds-per-iteration estimate (caches fill)
AXES = ("0", "1", "2")
PLANE = {"0": "sagittal (x)", "1": "coronal (y)", "2": "axial (z)"}
FEATURES = Path("features") / "feature_extractor.pt"  # where medvol evaluate caches its feature network


def train_2d(exp: Experiment, slices: Path, run: Path, iterations: int, batch: int) -> float:
    return exp.medvol("train", "--bundle", "wgan_gp", "--spatial-dims", 2, "--data", slices, "--out", run,
                      "--iterations", iterations, "--batch-size", batch, "--evaluate-every", 0, "--device", exp.device,
                      skip_if=finished_run(run, iterations))


def same_time_iterations(exp: Experiment, run: Path, seconds_3d: float, done: int, cap: int) -> dict:
    """2D iterations that take about `seconds_3d`: the median logged seconds per step of the 2D run so far (after
    the warm-up steps); kept in OUT/budget.json so that a rerun trains to the same count."""
    from medvol.report.html import read_scalar_curves

    path = exp.out / "budget.json"
    if path.is_file():
        return load_json(path)
    steps, seconds = read_scalar_curves(run).get("time/seconds_per_step", ([], []))
    measured = [s for step, s in zip(steps, seconds) if step > WARM_UP_STEPS] or list(seconds)
    per_step = statistics.median(measured)
    budget = {"seconds_3d": seconds_3d, "seconds_per_2d_iteration": round(per_step, 4), "measured_steps": len(measured),
              "iterations": int(min(cap, max(done, round(seconds_3d / per_step)))), "cap": cap}
    path.write_text(json.dumps(budget, indent=2) + "\n")
    return budget


def partial_time(run: Path, iterations: int) -> float:
    """Seconds of the logged steps up to `iterations` (the same-iterations checkpoint of a longer run)."""
    from medvol.report.html import read_scalar_curves

    steps, seconds = read_scalar_curves(run).get("time/seconds_per_step", ([], []))
    return round(float(sum(s for step, s in zip(steps, seconds) if step <= iterations)), 1)


def evaluate(exp: Experiment, real: Path, synthetic: Path, name: str, settings: dict, features: Path | None,
             max_samples: int | None) -> dict:
    options = []
    if max_samples:
        options += ["--max-samples", max_samples]
    if settings["epochs"]:
        options += ["--classifier-epochs", settings["epochs"]]
    if features is not None:
        options += ["--features", features]
    return exp.evaluate(real, synthetic, exp.out / name, *options)


def fidelity(metrics: dict) -> dict:
    keys = ("fid", "kid", "fid_real_baseline", "kid_real_baseline", "precision", "recall", "density", "coverage",
            "precision_real_baseline", "recall_real_baseline", "density_real_baseline", "coverage_real_baseline",
            "ms_ssim_synthetic", "ms_ssim_real", "mode_collapse")
    summary = {key: metrics.get(key) for key in keys}
    summary["possible_copies"] = metrics[Keys.PRIVACY]["flagged_fraction"]
    summary["n"] = (metrics.get(Keys.FID) or {}).get("n_real")
    summary["counts"] = metrics[Keys.INPUTS]["counts"]
    return summary


def montage(exp: Experiment, volumes: Path, folders: dict[str, Path], cache: Path) -> str:
    """One tri-planar montage (`hippocampus3d.triplanar_montage`: middle axial, coronal and sagittal slice, one volume
    per row, one column group per set) of real test volumes and each synthetic set, loaded as evaluate loads them
    (the same preprocessing and [-1, 1] scale)."""
    from medvol.evaluation.data import load_real, load_synthetic

    real = load_real(volumes / "datalist.json", cache, progress=False)
    sets = {"real (test)": real.splits["test"].images}
    for name, folder in folders.items():
        sets[name] = load_synthetic(folder, real, cache, progress=False).images.images
    return triplanar_montage(sets, exp.figure_path("montage_real_3d_2d.png")).name


def ci(entry) -> str:
    if not isinstance(entry, dict) or entry.get("value") is None:
        return fmt(entry)
    low, high = entry.get("ci95") or (None, None)
    return f"{fmt(entry['value'])} [{fmt(low)}, {fmt(high)}]" if low is not None else fmt(entry["value"])


def fidelity_table(rows: dict[str, dict]) -> str:
    """Rows: the real baseline (held-out test vs training, from the first set), then each synthetic set."""
    first = next(iter(rows.values()))
    lines = ["| set | FID [95% CI] | KID [95% CI] | precision | recall | density | coverage | MS-SSIM | "
             "possible copies |",
             "|---|---|---|---|---|---|---|---|---|",
             f"| real test vs real training (baseline) | {ci(first['fid_real_baseline'])} | "
             f"{ci(first['kid_real_baseline'])} | {fmt(first['precision_real_baseline'])} | "
             f"{fmt(first['recall_real_baseline'])} | {fmt(first['density_real_baseline'])} | "
             f"{fmt(first['coverage_real_baseline'])} | {fmt(first['ms_ssim_real'])} (training) | "
             "about 0.05 by design |"]
    for name, row in rows.items():
        collapse = " (mode collapse)" if row["mode_collapse"] else ""
        lines.append(f"| {name} | {ci(row['fid'])} | {ci(row['kid'])} | {fmt(row['precision'])} | "
                     f"{fmt(row['recall'])} | {fmt(row['density'])} | {fmt(row['coverage'])} | "
                     f"{fmt(row['ms_ssim_synthetic'])}{collapse} | {fmt(row['possible_copies'])} |")
    return "\n".join(lines)


def coherence_rows(evaluations: dict[str, dict]) -> tuple[dict, str]:
    """Adjacent-slice NCC (mean ± sd over volumes) and SSIM per axis: real training and test volumes (from the first
    evaluation), then each synthetic set."""
    first = next(iter(evaluations.values()))["slice_coherence"]["sets"]
    sets = {"real training": first["real"], "real test": first["test"]}
    sets.update({name: m["slice_coherence"]["sets"]["synthetic"] for name, m in evaluations.items()})
    table = {name: {axis: {"ncc": s["axes"][axis]["ncc"]["mean"], "ncc_sd": s["axes"][axis]["ncc"]["sd"],
                           "ssim": s["axes"][axis]["ssim"]["mean"]} for axis in AXES} for name, s in sets.items()}
    lines = ["| volumes | n | " + " | ".join(f"{PLANE[a]} NCC | SSIM" for a in AXES) + " |",
             "|---|---|" + "---|---|" * len(AXES)]
    for name, s in sets.items():
        cells = " | ".join(f"{fmt(table[name][a]['ncc'])} ± {fmt(table[name][a]['ncc_sd'], 2)} | "
                           f"{fmt(table[name][a]['ssim'])}" for a in AXES)
        lines.append(f"| {name} | {s['n']} | {cells} |")
    return table, "\n".join(lines)


def main() -> None:
    args = parser(NAME, __doc__.splitlines()[0]).parse_args()
    exp = Experiment(NAME, args)
    settings = SETTINGS[exp.profile]
    from medvol.sampling import stack_slice_samples

    volumes = prepare_volumes(exp)
    slices = prepare_slices(exp, volumes)
    run3d = train_gan(exp, "wgan_gp", volumes)
    facts3d = training_facts(run3d)
    depth = int(load_json(volumes / "datalist.json")["preprocessing"]["size"][2])
    equal, batch = facts3d["iterations"], facts3d["batch"]

    # the 2D model: to the 3D run's iteration count (sampled there before training goes on: old checkpoints are
    # pruned), then to about the 3D run's training time
    run2d, count = exp.out / "run_wgan_gp_2d", settings["volumes"]
    samples = {"3d": exp.out / "samples_3d", "2d_iterations": exp.out / "samples_2d_same_iterations",
               "2d_time": exp.out / "samples_2d_same_time"}
    if not (samples["2d_iterations"] / "datalist.json").is_file():
        train_2d(exp, slices, run2d, equal, batch)
    exp.medvol("sample", run2d, "--n", count * depth, "--out", samples["2d_iterations"], "--seed", SEED,
               "--checkpoint", f"checkpoint_{equal:08d}.pt", skip_if=samples["2d_iterations"] / "datalist.json")
    budget = same_time_iterations(exp, run2d, facts3d["train_seconds"], equal, settings["max_2d"])
    train_2d(exp, slices, run2d, budget["iterations"], batch)
    facts2d = training_facts(run2d)
    facts2d_equal = {**facts2d, "iterations": equal, "train_seconds": partial_time(run2d, equal)}
    facts2d_equal["seconds_per_iteration"] = round(facts2d_equal["train_seconds"] / max(1, equal), 3)
    exp.medvol("sample", run3d, "--n", count, "--out", samples["3d"], "--seed", SEED,
               skip_if=samples["3d"] / "datalist.json")
    exp.medvol("sample", run2d, "--n", count * depth, "--out", samples["2d_time"], "--seed", SEED,
               skip_if=samples["2d_time"] / "datalist.json")
    stacked = {"3d": samples["3d"]}
    for key in ("2d_iterations", "2d_time"):
        stacked[key] = exp.out / f"stacked_{key}"
        if not (stacked[key] / "datalist.json").is_file():
            stack_slice_samples(samples[key], stacked[key], depth=depth, axis=2)

    labels = {"3d": f"3D WGAN-GP, {equal} it", "2d_iterations": f"2D WGAN-GP, {equal} it (same iterations)",
              "2d_time": f"2D WGAN-GP, {budget['iterations']} it (same training time)"}
    # 2D metrics: every set cut into its axial slices against the real slices; 3D metrics against the volumes. The
    # first evaluation of each kind trains the feature network, the others reuse it (one space per kind)
    e2d, e3d = {}, {}
    for kind, real, results, limit in (("2d", slices, e2d, settings["slices_max"]),
                                       ("3d", volumes, e3d, settings["volumes_max"])):
        features = None
        for key, folder in stacked.items():
            name = f"eval{kind}_{key}"
            results[labels[key]] = evaluate(exp, real, folder, name, settings, features, limit)
            features = features or exp.out / name / FEATURES

    figure = montage(exp, volumes, {labels[key]: folder for key, folder in stacked.items()},
                     exp.out / "eval3d_3d" / "cache")
    coherence, coherence_md = coherence_rows(e3d)
    results = {
        "settings": settings,
        "budget": {"rule": "2D: the 3D run's batch size; sampled at the 3D run's iteration count and again after "
                           "about the 3D run's training time", **budget},
        "grid": load_json(volumes / "datalist.json")["preprocessing"],
        "slices_per_volume": depth,
        "split": {split: len(entries) for split, entries in load_json(volumes / "datalist.json").items()
                  if split in ("training", "validation", "test")},
        "training": {labels["3d"]: facts3d, labels["2d_iterations"]: facts2d_equal, labels["2d_time"]: facts2d},
        "slice_realism": {name: fidelity(m) for name, m in e2d.items()},
        "volume_realism": {name: fidelity(m) for name, m in e3d.items()},
        "slice_coherence": coherence,
        "figures": {"montage": figure},
    }
    exp.finish(results, page(results, e2d, e3d, coherence_md, labels))


def page(results: dict, e2d: dict, e3d: dict, coherence_md: str, labels: dict) -> str:
    grid, budget = results["grid"], results["budget"]
    size = "x".join(map(str, grid["size"]))
    first2d, first3d = next(iter(e2d.values())), next(iter(e3d.values()))
    counts2d, counts3d = first2d["inputs"]["counts"], first3d["inputs"]["counts"]
    t3 = results["training"][labels["3d"]]
    n3d = results["volume_realism"][labels["3d"]]["n"]
    n2d = results["slice_realism"][labels["3d"]]["n"]
    prepare = f"medvol prepare --mode slice --size {','.join(map(str, grid['size']))}"
    subset2d = " (seeded subsets)" if results["settings"]["slices_max"] else ""
    subset3d = " (a seeded subset)" if results["settings"]["volumes_max"] else ""

    def row(model: str, facts: dict) -> str:
        p = facts["parameters"]
        unit = "slices" if len(facts["image_size"]) == 2 else "volumes"
        return (f"| {model} | {facts['training_samples']} {unit} | {'x'.join(map(str, facts['image_size']))} | "
                f"{facts['iterations']} x {facts['batch']} | {facts['train_seconds'] / 60:.1f} min | "
                f"{facts['seconds_per_iteration']:.2f} | {p.get('generator', 0) / 1e6:.2f} M / "
                f"{p.get('critic', 0) / 1e6:.2f} M | {facts['width']} |")

    training = "\n".join([
        "| model | training data | image size | iterations x batch | training time | s / iteration | generator / "
        "critic parameters | width |",
        "|---|---|---|---|---|---|---|---|",
        *(row(name, facts) for name, facts in results["training"].items()),
    ])
    return f"""
Slice-wise versus volumetric generation of the hippocampus MRI crops (`../shared/data/hippocampus3d`): a 2D WGAN-GP
trained on axial slices against the 3D WGAN-GP of `hippocampus3d.py` trained on volumes, judged on slice realism (2D
metrics) and on volume coherence (3D metrics and adjacent-slice similarity).

**Data.** Every volume is brought to the {size} grid ({grid['shape_mode']}, spacing {grid.get('spacing')} mm); the 2D
model trains on the axial slices of exactly these volumes (`{prepare}`, same split:
{results['split']['training']} training / {results['split']['test']} test volumes), so both models see the same voxels.
**Budget.** The 2D model uses the 3D run's batch size ({t3['batch']}: a 2D step sees {t3['batch']} slices, a 3D step
{t3['batch']} volumes of {results['slices_per_volume']} slices) and is sampled twice: at the 3D run's iteration count
({t3['iterations']}, same optimiser steps) and after {budget['iterations']} iterations, about the 3D run's training time
({budget['seconds_3d'] / 60:.1f} min at {budget['seconds_per_2d_iteration']:.3g} s per 2D iteration, the median of the
first {budget['measured_steps']} measured steps; at most {budget['cap']}).
**Stacking.** {results['settings']['volumes']} volumes per model; a 2D volume is {results['slices_per_volume']}
consecutive 2D samples, every slice from its own latent vector (a slice-wise generator has no notion of a volume: the
stack is what it offers, nothing smooths it).

## Slice realism (2D metrics against real axial slices)

Every synthetic volume cut into its axial slices and scaled as a whole, like the real ones (FID/KID at n = {n2d});
real: {counts2d['training']['total']} training and {counts2d['test']['total']} test slices{subset2d}. One feature
network (an autoencoder's encoder trained on the real training slices) for all sets.

{fidelity_table(results['slice_realism'])}

## Volume realism (3D metrics against real volumes)

One 3D feature network (autoencoder encoder on {counts3d['training']['total']} real training volumes{subset3d}) for all
sets; FID and KID at n = {n3d} (the test split's size bounds it: wide intervals).

{fidelity_table(results['volume_realism'])}

## Slice coherence

Normalised cross-correlation (mean ± sd over volumes) and SSIM of every slice with the next one, per axis (pairs with a
constant padding slice left out). Closer to the real volumes is better (a blurry volume exceeds them); the axial axis
is the 2D model's stacking axis.

{coherence_md}

## Training

{training}

Training time: the sum of the logged seconds per step (`time/seconds_per_step`), without start-up and checkpoints;
the load at each command is in the last table. The same-iterations 2D row is the first part of the same run.

## Figures

Middle axial, coronal and sagittal slice (columns of three) of one volume per row, [-1, 1] after the shared
preprocessing, from left to right: real test volumes, {labels['3d']}, {labels['2d_iterations']},
{labels['2d_time']} (their first samples). Incoherence between slices shows in the coronal and sagittal views, which
cut across the 2D model's stacking axis.

![real, 3D and stacked 2D volumes]({results['figures']['montage']})
"""


if __name__ == "__main__":
    main()
