"""Utility-study variants on one prepared datalist and one sample folder, without the rest of `medvol evaluate`.

The rows of docs/results.md "Issue J, second round" came from this script: the arms and the study are
`medvol.evaluation.utility.utility_study` (what `medvol evaluate --utility` runs), plus one option the CLI does not
have, a selector trained with classical augmentation (`--selector augmented`). The real-only arms are cached per
prepared datalist, as `medvol evaluate` caches them, so variants on one datalist train them once.

    python scripts/experiments/utility_variants.py --real DATA/datalist.json --synthetic SAMPLES --work WORK \
        --ratio 10 --select 0.9 --arms 'real,real+augmentation,real+augmentation+synthetic,synthetic->real+augmentation'

Prints one line per arm and its paired difference against real+augmentation; `--out` saves the study's dict as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def number(value: float | None, spec: str = ".3f") -> str:
    """`value` formatted, or "n/a" (a standard deviation or interval of one seed)."""
    return "n/a" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", required=True, help="datalist.json written by medvol prepare")
    parser.add_argument("--synthetic", required=True, help="a medvol sample output (labelled)")
    parser.add_argument("--work", required=True, help="folder for the preprocessing cache")
    parser.add_argument("--arms", default="real,real+augmentation,synthetic->real+augmentation")
    parser.add_argument("--ratio", type=float, default=1.0, help="synthetic samples per real sample")
    parser.add_argument("--select", type=float, default=None, help="sample selection threshold (own-class probability)")
    parser.add_argument("--selector", default="plain", choices=["plain", "augmented"],
                        help="selector trained on the real training split without / with classical augmentation")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=None, help="optimiser steps per arm (default: the recipe's)")
    parser.add_argument("--out", default=None, help="JSON file for the study's result")
    args = parser.parse_args()

    from medvol.evaluation.classifier import train_classifier
    from medvol.evaluation.data import HELDOUT_SPLIT, load_real, load_synthetic
    from medvol.evaluation.utility import RealArmCache, utility_study

    started = time.time()
    cache = Path(args.work) / "cache"
    real = load_real(args.real, cache, progress=False)
    synthetic = load_synthetic(args.synthetic, real, cache, progress=False).images
    train, test = real.splits["training"], real.splits[HELDOUT_SPLIT]
    classes = list(real.classes)
    selector = None
    if args.select is not None:
        selector = train_classifier(train.images, train.labels, len(classes), seed=0, steps=args.steps or 500,
                                    augment=args.selector == "augmented")
    study = utility_study(
        train.images, train.labels, test.images, test.labels, synthetic.images, synthetic.labels, classes,
        seeds=args.seeds, synthetic_ratio=args.ratio, progress=False, arms=args.arms.split(","),
        cache=RealArmCache(Path(args.real).parent / "cache" / "utility"), steps=args.steps,
        select_confidence=args.select, selection_classifier=selector)
    print(f"{args.synthetic}: {round(time.time() - started)} s; counts {study['counts']}")
    for arm, summary in study["arms"].items():
        accuracy, balanced = summary["accuracy"], summary["balanced_accuracy"]
        line = f"{arm}: accuracy {number(accuracy['mean'])} ± {number(accuracy['sd'])}, balanced {number(balanced['mean'])}"
        difference = study.get("paired_difference_augmentation", {}).get(arm)
        if difference:
            low, high = difference["accuracy"]["ci95"]
            line += (f"; minus real+augmentation {number(difference['accuracy']['mean'], '+.3f')} "
                     f"[{number(low, '+.3f')}, {number(high, '+.3f')}]")
        print(line)
    if study.get("selection"):
        print("kept per class:", study["selection"]["kept_per_class"])
    if args.out:
        Path(args.out).write_text(json.dumps(study, default=str))


if __name__ == "__main__":
    from medvol.errors import MedvolInputError

    try:
        main()
    except MedvolInputError as error:  # bad input: one line, as the medvol commands answer it
        print(f"utility_variants.py: error: {error}", file=sys.stderr)
        sys.exit(2)
