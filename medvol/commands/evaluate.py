"""`medvol evaluate --real DATALIST --synthetic DIR --out OUT [--utility] [--seeds N] ...`: is the synthetic data
faithful, diverse, private and useful? `medvol evaluate --real DATALIST --reconstruct RUN --out OUT`: how well does an
autoencoder run reconstruct the held-out images (`medvol.metrics.reconstruction`)?

Writes ``OUT/metrics.json`` (fidelity with real-vs-real baselines, diversity and ``mode_collapse``, ``privacy``,
``recognisability``, with ``--utility`` the utility study, with ``--filter`` the realness filtering) and the
self-contained ``OUT/report.html``. The work is `medvol.metrics.evaluate.evaluate`; the bundles'
``configs/evaluate.yaml`` run the same function through ``python -m monai.bundle run``.
"""

from __future__ import annotations

import argparse
from pathlib import Path


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


def _reconstruction(args: argparse.Namespace) -> int:
    """`medvol evaluate --real DATALIST --reconstruct RUN --out OUT`: the autoencoder's reconstructions."""
    from medvol.errors import MedvolInputError
    from medvol.metrics.evaluate import METRICS_FILE
    from medvol.metrics.reconstruction import MONTAGE_FILE, evaluate_reconstruction

    for option, given in (("--synthetic", args.synthetic), ("--utility", args.utility), ("--filter", args.filter),
                          ("--features", args.features), ("--run", args.run), ("--balance", args.balance),
                          ("--pretrain-synthetic", args.pretrain_synthetic),
                          ("--select-confidence", args.select_confidence is not None)):
        if given:
            raise MedvolInputError(option, "does not apply to --reconstruct (an autoencoder's reconstructions)")
    metrics = evaluate_reconstruction(args.real, args.reconstruct, args.out, device=args.device,
                                      max_samples=args.max_samples, seed=args.seed)
    out = Path(args.out).expanduser().resolve()
    for line in _reconstruction_lines(metrics):
        print(line)
    print(f"wrote {out / METRICS_FILE} and {out / MONTAGE_FILE} ({metrics['timing']['total']:.0f} s)")
    return 0


def run(args: argparse.Namespace) -> int:
    """`medvol evaluate` (see the module docstring)."""
    from medvol.errors import MedvolInputError
    from medvol.metrics.evaluate import METRICS_FILE, REPORT_FILE, evaluate

    if getattr(args, "reconstruct", None):
        return _reconstruction(args)
    if not args.synthetic:
        raise MedvolInputError("--synthetic", "is required: the synthetic folder to evaluate (or --reconstruct RUN "
                                              "for an autoencoder's reconstructions of the held-out images)")
    metrics = evaluate(
        args.real,
        args.synthetic,
        args.out,
        utility=args.utility,
        seeds=args.seeds,
        synthetic_ratio=args.synthetic_ratio,
        classifier_epochs=args.classifier_epochs,
        features_path=args.features,
        run_dir=args.run,
        filter_synthetic=args.filter,
        balance=args.balance,
        pretrain=args.pretrain_synthetic,
        select_confidence=args.select_confidence,
        device=args.device,
        max_samples=args.max_samples,
        seed=args.seed,
    )
    out = Path(args.out).expanduser().resolve()
    for line in _summary_lines(metrics):
        print(line)
    print(f"wrote {out / METRICS_FILE} and {out / REPORT_FILE} ({metrics['timing']['total']:.0f} s)")
    return 0
