"""`medvol evaluate --real DATALIST --synthetic DIR --out OUT [--utility] [--seeds N] ...`: is the synthetic data
faithful, diverse, private and useful? `medvol evaluate --real DATALIST --reconstruct RUN --out OUT`: how well does an
autoencoder run reconstruct the held-out images (`medvol.evaluation.reconstruction`)?

Writes ``OUT/metrics.json`` (fidelity with real-vs-real baselines, diversity and ``mode_collapse``, ``privacy``,
``recognisability``, with ``--utility`` the utility study, with ``--filter`` the realness filtering) and the
self-contained ``OUT/report.html``. The work is `medvol.evaluation.pipeline.evaluate`; the bundles'
``configs/evaluate.yaml`` run the same function through ``python -m monai.bundle run``.
"""

from __future__ import annotations

from pathlib import Path

from medvol import defaults


def _summary_lines(metrics: dict) -> list[str]:
    def value(entry):
        return entry.get("value") if isinstance(entry, dict) else entry

    def fmt(number):
        return "n/a" if number is None else f"{number:.4g}"

    lines = [
        f"FID {fmt(value(metrics['fid']))} (real vs real {fmt(value(metrics['fid_real_baseline']))}), "
        f"KID {fmt(value(metrics['kid']))} (real vs real {fmt(value(metrics['kid_real_baseline']))})",
        f"precision {fmt(metrics['precision'])}, recall {fmt(metrics['recall'])}, density {fmt(metrics['density'])}, "
        f"coverage {fmt(metrics['coverage'])}",
        f"MS-SSIM synthetic {fmt(metrics['ms_ssim_synthetic'])} vs real {fmt(metrics['ms_ssim_real'])}; "
        f"mode collapse: {'YES' if metrics['mode_collapse'] else 'no'}",
        f"possible copies: {len(metrics['privacy']['flagged'])} ({fmt(metrics['privacy']['flagged_fraction'])})",
    ]
    coherence = metrics.get("slice_coherence")
    if coherence:
        def ncc(name):
            axes = coherence["sets"][name]["axes"]
            return "/".join(fmt(axes[a]["ncc"]["mean"]) for a in sorted(axes))

        lines.append(f"adjacent-slice correlation (axes 0/1/2): synthetic {ncc('synthetic')} vs real {ncc('real')}")
    recognised = metrics.get("recognisability") or {}
    if recognised.get("overall") is not None:
        lines.append(f"recognisability {fmt(recognised['overall'])}")
    utility = metrics.get("utility")
    if utility:
        arms = utility["arms"]
        metric = "accuracy" if "accuracy" in arms.get("real", {}) else next(iter(arms.get("real", {})), None)
        if metric:
            lines.append(f"utility ({metric}, {', '.join(map(str, sorted(set(utility['steps'].values()))))} steps "
                         "per arm): " + ", ".join(
                f"{arm} {fmt(entry[metric]['mean'])}±{fmt(entry[metric]['sd'])}" for arm, entry in arms.items()))
        selection = utility.get("selection")
        if selection:
            lines.append(f"selection (own-class probability >= {selection['threshold']:g}): kept " + ", ".join(
                f"{name} {kept}/{selection['available_per_class'][name]}"
                for name, kept in selection["kept_per_class"].items()))
    verdict = metrics.get("verdict")
    return ([f"verdict: {verdict['headline']}"] if verdict else []) + lines


def _reconstruction_lines(metrics: dict) -> list[str]:
    def entry(name: str, digits: int) -> str:
        summary = metrics[name]
        if summary["mean"] is None:
            return f"{name.upper()} n/a"
        sd = "" if summary["sd"] is None else f" ± {summary['sd']:.{digits}f}"
        return f"{name.upper()} {summary['mean']:.{digits}f}{sd}"

    inputs, run = metrics["inputs"], metrics["run"]
    trained = "" if run.get("training_seconds") is None else f", trained {run['training_seconds']:.0f} s"
    return [
        f"{run['family']} ({run['spatial_dims']}D, {metrics['parameters_total']:,} parameters{trained}) "
        f"on {inputs['n']} {inputs['split']} images: {inputs['images']}",
        f"{entry('psnr', 2)} dB, {entry('ssim', 3)}, {entry('mae', 4)} (data range 1)",
    ]


def _reconstruction(real: str, reconstruct: str, out: str, *, device: str | None, max_samples: int | None,
                    seed: int, refused: dict[str, bool]) -> int:
    """`medvol evaluate --real DATALIST --reconstruct RUN --out OUT`: the autoencoder's reconstructions.

    Args:
        refused: whether each option of the synthetic-data evaluation was given (an error when one was).
    """
    from medvol.errors import MedvolInputError
    from medvol.evaluation.keys import METRICS_FILE
    from medvol.evaluation.reconstruction import MONTAGE_FILE, evaluate_reconstruction

    for option, given in refused.items():
        if given:
            raise MedvolInputError(option, "does not apply to --reconstruct (an autoencoder's reconstructions)")
    metrics = evaluate_reconstruction(real, reconstruct, out, device=device, max_samples=max_samples, seed=seed)
    out = Path(out).expanduser().resolve()
    for line in _reconstruction_lines(metrics):
        print(line)
    print(f"wrote {out / METRICS_FILE} and {out / MONTAGE_FILE} ({metrics['timing']['total']:.0f} s)")
    return 0


def run(
    *,
    real: str,
    out: str,
    synthetic: str | None = None,
    reconstruct: str | None = None,
    utility: bool = False,
    seeds: int = defaults.UTILITY_SEEDS,
    synthetic_ratio: float = defaults.SYNTHETIC_RATIO,
    classifier_epochs: int | None = None,
    features: str | None = None,
    run_dir: str | None = None,
    filter_synthetic: bool = False,
    select_confidence: float | None = None,
    balance: bool = False,
    pretrain_synthetic: bool = False,
    device: str | None = None,
    max_samples: int | None = None,
    seed: int = defaults.SEED,
) -> int:
    """`medvol evaluate` (see the module docstring); the arguments are its options (``--filter`` is
    `filter_synthetic`, ``--run`` `run_dir`), passed on to `medvol.evaluation.pipeline.evaluate`."""
    from medvol.errors import MedvolInputError
    from medvol.evaluation.keys import METRICS_FILE, REPORT_FILE
    from medvol.evaluation.pipeline import evaluate

    if reconstruct:
        refused = {"--synthetic": bool(synthetic), "--utility": utility, "--filter": filter_synthetic,
                   "--features": bool(features), "--run": bool(run_dir), "--balance": balance,
                   "--pretrain-synthetic": pretrain_synthetic, "--select-confidence": select_confidence is not None}
        return _reconstruction(real, reconstruct, out, device=device, max_samples=max_samples, seed=seed,
                               refused=refused)
    if not synthetic:
        raise MedvolInputError("--synthetic", "is required: the synthetic folder to evaluate (or --reconstruct RUN "
                                              "for an autoencoder's reconstructions of the held-out images)")
    metrics = evaluate(
        real,
        synthetic,
        out,
        utility=utility,
        seeds=seeds,
        synthetic_ratio=synthetic_ratio,
        classifier_epochs=classifier_epochs,
        features_path=features,
        run_dir=run_dir,
        filter_synthetic=filter_synthetic,
        balance=balance,
        pretrain=pretrain_synthetic,
        select_confidence=select_confidence,
        device=device,
        max_samples=max_samples,
        seed=seed,
    )
    out = Path(out).expanduser().resolve()
    for line in _summary_lines(metrics):
        print(line)
    print(f"wrote {out / METRICS_FILE} and {out / REPORT_FILE} ({metrics['timing']['total']:.0f} s)")
    return 0
