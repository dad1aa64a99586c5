"""`medvol evaluate --real DATALIST --synthetic DIR --out OUT [--utility] [--seeds N] ...`: is the synthetic data
faithful, diverse, private and useful?

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
            lines.append(f"utility ({metric}): " + ", ".join(
                f"{arm} {fmt(entry[metric]['mean'])}±{fmt(entry[metric]['sd'])}" for arm, entry in arms.items()))
    return lines


def run(args: argparse.Namespace) -> int:
    """`medvol evaluate` (see the module docstring)."""
    from medvol.metrics.evaluate import METRICS_FILE, REPORT_FILE, evaluate

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
        device=args.device,
        max_samples=args.max_samples,
        seed=args.seed,
    )
    out = Path(args.out).expanduser().resolve()
    for line in _summary_lines(metrics):
        print(line)
    print(f"wrote {out / METRICS_FILE} and {out / REPORT_FILE} ({metrics['timing']['total']:.0f} s)")
    return 0
