"""Is the synthetic data useful? Utility study, recognisability and a real-vs-synthetic filter.

Every classifier here comes from one recipe, `medvol.evaluation.classifier.train_classifier`, and is tested on the
held-out real test split only. Seed `s` gives every arm of the utility study the same initial weights and, for arms of
equal size, the same sample order; the differences between arms are therefore paired by seed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from medvol.defaults import SYNTHETIC_RATIO, UTILITY_SEEDS
from medvol.devices import default_device
from medvol.errors import MedvolInputError
from medvol.evaluation.classifier import (
    check_images,
    check_labels,
    predict_probabilities,
    recipe_steps,
    train_classifier,
)
from medvol.metrics.classification import classification_metrics, confusion_matrix, paired_difference, summarise

logger = logging.getLogger(__name__)

ARMS = ("real", "real+augmentation", "synthetic", "real+synthetic", "real+augmentation+synthetic")
BALANCED_ARM = "real+augmentation+balanced"  # minority classes filled with synthetic samples up to the majority count
PRETRAINED_ARM = "synthetic->real+augmentation"  # pre-trained on synthetic, fine-tuned on real+augmentation
ALL_ARMS = (*ARMS, BALANCED_ARM, PRETRAINED_ARM)
REAL_ONLY_ARMS = ("real", "real+augmentation")  # their classifiers do not depend on the synthetic set: cacheable
DEFAULT_FILTER_FOLDS = 3
DEFAULT_FILTER_EPOCHS = 3


def _seed_list(seeds: int | Sequence[int]) -> list[int]:
    if isinstance(seeds, (int, np.integer)):
        if seeds < 1:
            raise MedvolInputError("--seeds", f"needs at least 1 seed, got {seeds}")
        return list(range(int(seeds)))
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise MedvolInputError("--seeds", "needs at least 1 seed")
    return seeds


def _recipe_fingerprint() -> str:
    """A digest of the code that trains and scores the utility classifiers (recipe, network, augmentation) and of the
    torch and MONAI versions: a cached result is reused only with the same."""
    import monai

    from medvol.evaluation import classifier
    from medvol.networks import blocks, classifiers
    from medvol.transforms import augment

    digest = hashlib.sha256(f"{torch.__version__} {monai.__version__}".encode())
    for module in (classifier, classifiers, blocks, augment):
        digest.update(Path(module.__file__).read_bytes())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()


def _data_fingerprint(*arrays: Any) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        value = array.detach().cpu().contiguous().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
        digest.update(str((value.dtype, value.shape)).encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()


class RealArmCache:
    """Results of the utility classifiers that see no synthetic data (`REAL_ONLY_ARMS`), kept on disk so that
    evaluating a second generator against the same real data does not train them again.

    A result is keyed by the real training and test images and labels, the arm, seed, optimiser steps, device type and a digest
    of the classifier recipe's code; one JSON file per result. A folder that cannot be written leaves the cache off.

    Args:
        folder: the cache folder (e.g. ``DATA/cache/utility`` beside the prepared datalist).
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self._recipe = _recipe_fingerprint()

    def key(self, data: str, arm: str, seed: int, steps: int, device: Any, record_curves: bool) -> str:
        device_type = default_device(device).type
        text = json.dumps([self._recipe, data, arm, int(seed), int(steps), device_type, bool(record_curves)])
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def load(self, key: str) -> dict | None:
        """The cached entry (`metrics`, `confusion`, `curve`), or None when absent or unreadable."""
        try:
            entry = json.loads((self.folder / f"{key}.json").read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(entry, dict) or not isinstance(entry.get("metrics"), dict) or "confusion" not in entry:
            return None
        return entry

    def save(self, key: str, entry: dict) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            temporary = self.folder / f".{key}.{os.getpid()}.tmp"
            try:
                temporary.write_text(json.dumps(entry))
                os.replace(temporary, self.folder / f"{key}.json")
            finally:
                temporary.unlink(missing_ok=True)
        except (OSError, TypeError, ValueError) as err:
            logger.debug("utility cache %s not written: %s", self.folder, err)


def confidence_selection(
    train_images: torch.Tensor,
    train_labels: Any,
    synthetic_images: torch.Tensor,
    synthetic_labels: Any,
    classes: Sequence[str],
    threshold: float,
    *,
    offered: Any = None,
    classifier: torch.nn.Module | None = None,
    seed: int = 0,
    steps: int | None = None,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Keep the synthetic samples that a classifier trained on the real training split assigns to their own class with
    probability >= `threshold`. Only the training split is ever used: the test split cannot influence the selection.

    Args:
        train_images: real training images (the selector's training data when `classifier` is None).
        train_labels: their classes.
        synthetic_images: synthetic images to select from.
        synthetic_labels: the classes they were made for.
        classes: class names, index = label.
        threshold: least probability of the own class, in (0, 1].
        offered: boolean per synthetic sample, False for samples already left out (not counted as available).
        classifier: a classifier trained on the real training split (e.g. the recognisability one); None: one is
            trained here with the recipe (`train_classifier`, `seed`, `steps`).
        seed: seed of the classifier trained here.
        steps: its optimiser steps (None: the recipe's).
        device: torch device.

    Returns:
        `{threshold, keep (bool per sample), probabilities (own-class probability per sample), kept, kept_per_class,
        available_per_class, classifier (words)}`.
    """
    if not 0.0 < float(threshold) <= 1.0:
        raise MedvolInputError("--select-confidence", f"must be in (0, 1], got {threshold}")
    classes = [str(c) for c in classes]
    synthetic_images = check_images(synthetic_images, "synthetic images")
    labels = check_labels(synthetic_labels, synthetic_images.shape[0], len(classes), "synthetic labels")
    offered = np.ones(labels.size, bool) if offered is None else np.asarray(offered, dtype=bool).reshape(-1)
    described = "given (trained on the real training split)"
    if classifier is None:
        classifier = train_classifier(train_images, train_labels, len(classes), seed=seed, steps=steps, device=device,
                                      description="selection classifier")
        described = f"trained here on the real training split (seed {seed}, {steps or 'recipe'} steps)"
    probabilities = predict_probabilities(classifier, synthetic_images, device=device)
    own = probabilities[np.arange(labels.size), labels] if labels.size else np.zeros(0)
    keep = offered & (own >= float(threshold))
    return {
        "threshold": float(threshold),
        "keep": keep.tolist(),
        "probabilities": own.astype(float).tolist(),
        "kept": int(keep.sum()),
        "kept_per_class": {name: int(keep[labels == c].sum()) for c, name in enumerate(classes)},
        "available_per_class": {name: int(offered[labels == c].sum()) for c, name in enumerate(classes)},
        "classifier": described,
    }


@dataclass
class _StudyData:
    """The checked inputs of a utility study: images `[N, 1, *size]`, int64 labels, arms in `ALL_ARMS` order (`real`
    first), seeds and the optimiser steps of every arm."""

    train_images: torch.Tensor
    train_labels: np.ndarray
    test_images: torch.Tensor
    test_labels: np.ndarray
    synthetic_images: torch.Tensor
    synthetic_labels: np.ndarray
    classes: list[str]
    arms: list[str]
    seeds: list[int]
    budget: int

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass
class _SyntheticPool:
    """The synthetic samples the arms may draw from (`pool`: indices), how many each arm uses, the per-class fill of
    the balanced arm, the confidence selection (if any) and the notes about them."""

    pool: np.ndarray
    requested: int
    used: int
    uses_synthetic: bool
    balance_fill: list[int]
    target: int
    selection: dict | None
    notes: list[str]


def _study_data(train_images, train_labels, test_images, test_labels, synthetic_images, synthetic_labels, classes,
                seeds, epochs, synthetic_ratio, arms, steps) -> _StudyData:
    classes = [str(c) for c in classes]
    num_classes = len(classes)
    if num_classes < 2:
        raise MedvolInputError(None, f"the utility study needs at least 2 classes, got {num_classes}")
    unknown = [a for a in arms if a not in ALL_ARMS]
    if unknown:
        raise ValueError(f"unknown utility arm {unknown[0]!r}; choose from {ALL_ARMS}")
    arms = ["real", *[a for a in ALL_ARMS if a in arms and a != "real"]]
    if not synthetic_ratio > 0:
        raise MedvolInputError("--synthetic-ratio", f"must be > 0, got {synthetic_ratio}")
    train_images = check_images(train_images, "real training images")
    test_images = check_images(test_images, "real test images")
    synthetic_images = check_images(synthetic_images, "synthetic images")
    for name, images in (("real test", test_images), ("synthetic", synthetic_images)):
        if images.shape[2:] != train_images.shape[2:]:
            raise MedvolInputError(
                None,
                f"{name} images have spatial shape {list(images.shape[2:])}, the real training images "
                f"{list(train_images.shape[2:])}",
            )
    if train_images.shape[0] < 2 or test_images.shape[0] < 1:
        raise MedvolInputError(
            None,
            f"the utility study needs real training and test images (got {train_images.shape[0]} training, "
            f"{test_images.shape[0]} test)",
        )
    train_labels = check_labels(train_labels, train_images.shape[0], num_classes, "real training labels")
    test_labels = check_labels(test_labels, test_images.shape[0], num_classes, "real test labels")
    synthetic_labels = check_labels(synthetic_labels, synthetic_images.shape[0], num_classes, "synthetic labels")
    seed_list = _seed_list(seeds)
    budget = int(steps) if steps is not None else recipe_steps(train_images.shape[0], epochs)
    if budget < 1:
        raise MedvolInputError(None, f"the utility classifiers need at least 1 optimiser step, got {budget}")
    if PRETRAINED_ARM in arms and budget < 2:
        raise MedvolInputError(None, f"the {PRETRAINED_ARM} arm needs at least 2 optimiser steps, got {budget}")
    return _StudyData(train_images, train_labels, test_images, test_labels, synthetic_images, synthetic_labels,
                      classes, arms, seed_list, budget)


def _synthetic_pool(data: _StudyData, synthetic_ratio: float, filter_mask: Any, select_confidence: float | None,
                    selection_classifier: torch.nn.Module | None, device) -> _SyntheticPool:
    keep = np.ones(data.synthetic_images.shape[0], dtype=bool)
    if filter_mask is not None:
        keep = np.asarray(filter_mask, dtype=bool).reshape(-1).copy()
        if keep.shape[0] != data.synthetic_images.shape[0]:
            raise ValueError(
                f"filter_mask has {keep.shape[0]} entries for {data.synthetic_images.shape[0]} synthetic images"
            )
    selection = None
    if select_confidence is not None:
        selection = confidence_selection(
            data.train_images, data.train_labels, data.synthetic_images, data.synthetic_labels, data.classes,
            select_confidence, offered=keep, classifier=selection_classifier, seed=data.seeds[0], steps=data.budget,
            device=device)
        keep &= np.asarray(selection["keep"], dtype=bool)
    pool = np.flatnonzero(keep)
    n_train = data.train_images.shape[0]
    requested = int(round(synthetic_ratio * n_train))
    used = min(requested, pool.size)
    notes: list[str] = []
    uses_synthetic = any(arm not in REAL_ONLY_ARMS for arm in data.arms)
    if uses_synthetic and used < 1:
        raise MedvolInputError(
            None, "no synthetic samples are left for the utility study (all filtered out or none given)"
        )
    if uses_synthetic and used < requested:
        notes.append(
            f"synthetic_ratio {synthetic_ratio} asks for {requested} synthetic samples but only {pool.size} are "
            f"available{' after filtering' if filter_mask is not None or selection else ''}; all {used} are used "
            f"(effective ratio {used / n_train:.3f})"
        )
    missing = sorted(set(range(data.num_classes)) - set(data.synthetic_labels[pool].tolist()))
    if uses_synthetic and missing:
        notes.append(f"no synthetic samples of class {', '.join(data.classes[c] for c in missing)}")
    target, balance_fill = _balance_fill(data, pool, notes)
    return _SyntheticPool(pool, requested, used, uses_synthetic, balance_fill, target, selection, notes)


def _balance_fill(data: _StudyData, pool: np.ndarray, notes: list[str]) -> tuple[int, list[int]]:
    """The real majority count and the synthetic samples per class that fill the balanced arm up to it (a note when
    too few are left, or none is needed)."""
    real_counts = np.bincount(data.train_labels, minlength=data.num_classes)
    target = int(real_counts.max())
    balance_fill = [min(int(target - real_counts[c]), int(np.sum(data.synthetic_labels[pool] == c)))
                    for c in range(data.num_classes)]
    if BALANCED_ARM in data.arms:
        short = [f"{data.classes[c]} ({balance_fill[c]} of {target - real_counts[c]})"
                 for c in range(data.num_classes) if balance_fill[c] < target - real_counts[c]]
        if short:
            notes.append(f"balancing: too few synthetic samples to fill class {', '.join(short)}; all are used")
        if not any(balance_fill):
            notes.append(f"balancing: no class to fill (the real training split is balanced or no synthetic sample "
                         f"of a minority class is left); {BALANCED_ARM} is real+augmentation")
    return target, balance_fill


def _seed_subsets(data: _StudyData, synthetic: _SyntheticPool, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The synthetic subset of the seed's mixed arms and, from its own stream (the other arms' subsets stay as they
    were), the samples that fill the balanced arm."""
    rng = np.random.default_rng(seed)
    pool = synthetic.pool
    chosen = np.sort(rng.choice(pool, size=synthetic.used, replace=False)) if synthetic.uses_synthetic else pool[:0]
    fill_rng = np.random.default_rng([seed, 1])
    fill = np.sort(np.concatenate([
        fill_rng.choice(pool[data.synthetic_labels[pool] == c], size=synthetic.balance_fill[c], replace=False)
        for c in range(data.num_classes)]).astype(np.int64))
    return chosen, fill


def _arm_training_set(data: _StudyData, arm: str, chosen: np.ndarray,
                      fill: np.ndarray) -> tuple[torch.Tensor, np.ndarray, dict[str, int]]:
    """The images and labels an arm trains on (the pre-training arm: its fine-tuning set) and its counts."""
    if arm == BALANCED_ARM:
        synthetic_index = fill
    elif arm == PRETRAINED_ARM or arm.endswith("synthetic"):
        synthetic_index = chosen
    else:
        synthetic_index = chosen[:0]
    with_real = arm != "synthetic"
    # real+synthetic arms train on both at once; the pre-training arm sees the synthetic part first
    mixed = synthetic_index if arm != PRETRAINED_ARM else chosen[:0]
    parts = [data.train_images] if with_real else []
    if mixed.size:
        parts.append(data.synthetic_images[torch.as_tensor(mixed)])
    images = torch.cat(parts) if len(parts) > 1 else parts[0]
    labels = np.concatenate(([data.train_labels] if with_real else []) + [data.synthetic_labels[mixed]])
    counts = {"real": data.train_images.shape[0] if with_real else 0, "synthetic": int(synthetic_index.size)}
    return images, labels, counts


def _train_and_test_arm(data: _StudyData, arm: str, seed: int, chosen: np.ndarray, fill: np.ndarray, device,
                        progress: bool, record_curves: bool) -> tuple[dict, dict[str, int]]:
    """Train the arm's classifier for one seed and test it: `({metrics, confusion, curve}, counts)`."""
    images, labels, counts = _arm_training_set(data, arm, chosen, fill)

    def train(images, labels, augment, arm_steps, description, initial=None):
        return train_classifier(
            images, labels, data.num_classes, seed=seed, steps=arm_steps, augment=augment, device=device,
            monitor=(data.test_images, data.test_labels) if record_curves else None, progress=progress,
            description=description, initial=initial)

    initial, arm_steps = None, data.budget
    if arm == PRETRAINED_ARM:
        pretrain_steps = data.budget // 2
        synthetic_part = data.synthetic_images[torch.as_tensor(chosen, dtype=torch.long)]
        initial = train(synthetic_part, data.synthetic_labels[chosen], True, pretrain_steps,
                        f"{arm} pre-training (seed {seed})")
        arm_steps = data.budget - pretrain_steps
    # augmentation arms augment every sample, real and synthetic alike
    classifier = train(images, labels, "augmentation" in arm, arm_steps, f"{arm} (seed {seed})", initial)
    probabilities = predict_probabilities(classifier, data.test_images)
    metrics, confusion = classification_metrics(data.test_labels, probabilities, data.classes)
    curve = [h["monitor_accuracy"] for h in classifier.history] if record_curves else None
    return {"metrics": metrics, "confusion": confusion.tolist(), "curve": curve}, counts


def _paired_by_seed(per_seed: dict[str, list[dict]], arms: Sequence[str], reference: str,
                    metric_names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """`paired_difference` of every metric of each of `arms` against the `reference` arm, seed by seed."""
    return {
        arm: {
            name: paired_difference([m[name] for m in per_seed[arm]], [m[name] for m in per_seed[reference]])
            for name in metric_names
        }
        for arm in arms
    }


def _study_result(data: _StudyData, synthetic: _SyntheticPool, per_seed: dict[str, list[dict]],
                  confusions: dict[str, list[np.ndarray]], counts: dict[str, dict[str, int]], synthetic_ratio: float,
                  epochs: int | None, steps: int | None) -> dict[str, Any]:
    """The `utility_study` result without `curves` (see its Returns)."""
    arms, budget = data.arms, data.budget
    metric_names = list(per_seed["real"][0])
    budget_words = (f"{epochs} epochs" if epochs is not None else "10 epochs and at least 500 optimiser steps") + \
        " of the real training split"
    result: dict[str, Any] = {
        "seeds": data.seeds,
        "steps": {arm: budget for arm in arms},
        "synthetic_ratio": float(synthetic_ratio),
        "synthetic_requested": synthetic.requested,
        "synthetic_available": int(synthetic.pool.size),
        "counts": counts,
        "test_count": int(data.test_images.shape[0]),
        "classes": data.classes,
        "metrics": metric_names,
        "notes": synthetic.notes,
        "recipe": (
            f"ResNetClassifier trained by medvol.evaluation.classifier.train_classifier per arm and seed for the same "
            f"{budget} optimiser steps in every arm ("
            + (f"{steps} as asked" if steps is not None else budget_words)
            + "; a larger training set is seen for fewer passes) (AdamW, cosine learning rate, class-weighted "
            "cross-entropy, last step kept); augmentation arms augment every sample, real and synthetic; tested on "
            "the held-out real test split; synthetic subset drawn per seed"
        ),
        "arms": {
            arm: {name: summarise([m[name] for m in per_seed[arm]]) for name in metric_names} for arm in arms
        },
        "paired_difference": _paired_by_seed(per_seed, [a for a in arms if a != "real"], "real", metric_names),
        "confusion": {arm: np.sum(confusions[arm], axis=0).tolist() for arm in arms},
        "confusion_per_seed": {arm: [c.tolist() for c in confusions[arm]] for arm in arms},
    }
    if "real+augmentation" in arms:  # the bar to clear: classical augmentation alone
        result["paired_difference_augmentation"] = _paired_by_seed(
            per_seed, [a for a in arms if a not in REAL_ONLY_ARMS], "real+augmentation", metric_names)
    if BALANCED_ARM in arms:
        result["balanced"] = {"per_class": {data.classes[c]: synthetic.balance_fill[c]
                                            for c in range(data.num_classes)},
                              "target": synthetic.target}
    if PRETRAINED_ARM in arms:
        pretrain_steps = budget // 2
        result["pretraining"] = {"pretrain_steps": pretrain_steps, "finetune_steps": budget - pretrain_steps,
                                 "pretrain_data": "the arm's synthetic subset (as real+synthetic's), augmented",
                                 "finetune_data": "the real training split, augmented; a fresh optimiser"}
    if synthetic.selection is not None:
        result["selection"] = synthetic.selection
    return result


def utility_study(
    train_images: torch.Tensor,
    train_labels: Any,
    test_images: torch.Tensor,
    test_labels: Any,
    synthetic_images: torch.Tensor,
    synthetic_labels: Any,
    classes: Sequence[str],
    *,
    seeds: int | Sequence[int] = UTILITY_SEEDS,
    epochs: int | None = None,
    synthetic_ratio: float = SYNTHETIC_RATIO,
    filter_mask: Any = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    record_curves: bool = False,
    arms: Sequence[str] = ARMS,
    cache: RealArmCache | None = None,
    steps: int | None = None,
    select_confidence: float | None = None,
    selection_classifier: torch.nn.Module | None = None,
) -> dict[str, Any]:
    """Train the same classifier recipe on several training sets and test each on the same held-out real test split.

    Arms (`ARMS` by default, `ALL_ARMS` on request): `real` (the real training split), `real+augmentation` (with
    medvol's classical augmentation drawn anew every time a sample is seen), `synthetic` (synthetic samples only),
    `real+synthetic`, `real+augmentation+synthetic` (every sample augmented, real and synthetic, so that it differs
    from `real+synthetic` by the augmentation alone); `BALANCED_ARM` (real+augmentation with every minority class
    filled with synthetic samples of that class up to the real majority count, drawn per seed); `PRETRAINED_ARM`
    (pre-trained on the synthetic subset for half the steps, then fine-tuned on real+augmentation for the other half
    with a fresh optimiser). The synthetic part is a random subset, drawn per seed, of
    `round(synthetic_ratio * len(train))` samples from those `filter_mask` (and the selection) keeps; when fewer are
    kept than asked, all of them are used and `notes` says so. Every arm takes the same number of optimiser steps, the
    real arm's recipe (`recipe_steps`: 10 epochs and at least `DEFAULT_MIN_STEPS` steps, or `epochs` epochs of the
    real training split) unless `steps` is given, so that an arm with more images does not also train longer; each
    keeps its last step.

    Args:
        train_images: real training images `[N, 1, *size]` in [-1, 1].
        train_labels: their classes.
        test_images: held-out real test images.
        test_labels: their classes.
        synthetic_images: synthetic images, same spatial shape.
        synthetic_labels: their (conditioning) classes.
        classes: class names, index = label.
        seeds: number of seeds (0..N-1) or the seeds themselves.
        epochs: epochs of the real training split that set every arm's step budget (default: the recipe's,
            `medvol.evaluation.classifier.recipe_steps`).
        synthetic_ratio: synthetic samples per real training sample (> 0).
        filter_mask: boolean per synthetic sample, False to leave it out (e.g. `realness_filter`'s keep mask).
        device: torch device (default: CUDA when available).
        progress: show a progress bar over the trainings.
        record_curves: also record each training's per-epoch test accuracy in `curves` (for plots; no epoch is
            chosen from it).
        arms: the arms to run (default: the five of `ARMS`; `real` is always run, as the reference).
        cache: reuse (and store) the results of the arms without synthetic data; `notes` says which were reused.
        steps: optimiser steps of every arm (overrides the budget from `epochs`).
        select_confidence: keep only the synthetic samples whose own class gets at least this probability from a
            classifier trained on the real training split (`confidence_selection`); None: no selection.
        selection_classifier: that classifier when the caller has one (trained on the real training split only);
            None: trained here.

    Returns:
        dict with `seeds`, `steps` {arm: optimiser steps}, `synthetic_ratio`, `counts` {arm: {real, synthetic}},
        `synthetic_requested`, `synthetic_available`, `test_count`, `notes`, `metrics` (names), `arms` {arm: {metric:
        {mean, sd, values}}}, `paired_difference` {arm: {metric: {mean, ci95, values}}} against `real` (seed by seed),
        `paired_difference_augmentation` the same against `real+augmentation` (when run) for the arms with synthetic
        data, `confusion` {arm: [[...]] summed over seeds, rows true, columns predicted}, `confusion_per_seed` {arm:
        [matrix per seed]},
        `recipe` (words), with the balanced arm `balanced` {per_class: synthetic samples added, target}, with the
        pre-training arm `pretraining` (steps of each stage), with `select_confidence` `selection`
        (`confidence_selection`), and with `record_curves` `curves` {arm: [[accuracy per epoch] per seed]}.

    Raises:
        MedvolInputError: unlabelled or out-of-range labels, an empty split, no synthetic sample left, a shape mismatch.
    """
    data = _study_data(train_images, train_labels, test_images, test_labels, synthetic_images, synthetic_labels,
                       classes, seeds, epochs, synthetic_ratio, arms, steps)
    synthetic = _synthetic_pool(data, synthetic_ratio, filter_mask, select_confidence, selection_classifier, device)
    per_seed: dict[str, list[dict[str, float | None]]] = {arm: [] for arm in data.arms}
    confusions: dict[str, list[np.ndarray]] = {arm: [] for arm in data.arms}
    curves: dict[str, list[list[float]]] = {arm: [] for arm in data.arms}
    counts: dict[str, dict[str, int]] = {}
    reused: list[str] = []
    data_key = None
    bar = tqdm(total=len(data.arms) * len(data.seeds), desc="utility", unit="classifier", disable=not progress)
    for seed in data.seeds:
        chosen, fill = _seed_subsets(data, synthetic, seed)
        for arm in data.arms:
            bar.set_postfix_str(f"{arm}, seed {seed}")
            key = entry = None
            if cache is not None and arm in REAL_ONLY_ARMS:
                if data_key is None:
                    data_key = _data_fingerprint(data.train_images, data.train_labels, data.test_images,
                                                 data.test_labels, np.asarray(data.classes))
                key = cache.key(data_key, arm, seed, data.budget, device, record_curves)
                entry = cache.load(key)
            if entry is not None:
                reused.append(f"{arm} (seed {seed})")
                counts[arm] = _arm_training_set(data, arm, chosen, fill)[2]
            else:
                entry, counts[arm] = _train_and_test_arm(data, arm, seed, chosen, fill, device, progress,
                                                         record_curves)
                if key is not None:
                    cache.save(key, entry)
            per_seed[arm].append(entry["metrics"])
            confusions[arm].append(np.asarray(entry["confusion"], dtype=np.int64))
            if record_curves:
                curves[arm].append(entry["curve"])
            bar.update()
    bar.close()
    if reused:
        synthetic.notes.append(
            f"reused from {cache.folder} (same real images, labels, recipe, steps and seeds; delete the folder to "
            "retrain): " + ", ".join(reused)
        )
    result = _study_result(data, synthetic, per_seed, confusions, counts, synthetic_ratio, epochs, steps)
    if record_curves:
        result["curves"] = curves
    return result

def utility_methods(result: dict[str, Any], test_split: str) -> str:
    """How a `utility_study` result was computed, in words (the methods entry of metrics.json).

    Args:
        result: the `utility_study` result.
        test_split: words for the test split, e.g. "the held-out real test split".
    """
    arms = list(result["arms"])
    steps = sorted(set(result["steps"].values()))
    text = (f"One classifier recipe trained per arm ({', '.join(arms)}) with the same {len(result['seeds'])} seeds "
            f"and the same {', '.join(map(str, steps))} optimiser steps in every arm (a larger training set is seen "
            f"for fewer passes), each tested on {test_split}; synthetic-to-real ratio {result['synthetic_ratio']:g}, "
            "the synthetic subset drawn per seed.")
    if any("augmentation" in arm for arm in arms):
        text += (" In the augmentation arms every training sample is augmented (classical augmentation drawn anew "
                 "each time it is seen), the synthetic ones too.")
    if "balanced" in result:
        text += (f" {BALANCED_ARM}: every minority class is filled with synthetic samples of that class up to the "
                 f"real majority count ({result['balanced']['target']}).")
    if "pretraining" in result:
        stages = result["pretraining"]
        text += (f" {PRETRAINED_ARM}: pre-trained for {stages['pretrain_steps']} steps on the synthetic subset "
                 f"(augmented), then fine-tuned for {stages['finetune_steps']} steps on real+augmentation with a "
                 "fresh optimiser.")
    if "selection" in result:
        selection = result["selection"]
        text += (f" Only the synthetic samples that a classifier trained on the real training split (never the test "
                 f"split) assigns to their own class with probability >= {selection['threshold']:g} were used "
                 f"({selection['kept']} kept).")
    text += " Mean, sd and the value per seed; paired differences against `real`"
    if "paired_difference_augmentation" in result:
        text += " and against `real+augmentation`"
    return text + " per seed, with a 95% t confidence interval."


def recognisability(
    classifier: torch.nn.Module,
    synthetic_images: torch.Tensor,
    synthetic_labels: Any,
    classes: Sequence[str],
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Fraction of synthetic samples that a classifier trained on real data assigns to the class they were made for.

    Returns:
        `{per_class: {name: fraction or None when the class has no synthetic sample}, overall: fraction of all samples,
        counts: {name: samples}, confusion: [[...]] rows = intended class, columns = predicted class}`.
    """
    classes = [str(c) for c in classes]
    synthetic_images = check_images(synthetic_images, "synthetic images")
    labels = check_labels(synthetic_labels, synthetic_images.shape[0], len(classes), "synthetic labels")
    if labels.size == 0:
        raise MedvolInputError(None, "recognisability needs at least one labelled synthetic sample")
    predicted = predict_probabilities(classifier, synthetic_images, device=device).argmax(1)
    confusion = confusion_matrix(labels, predicted, len(classes))
    support = confusion.sum(1)
    return {
        "per_class": {
            name: float(confusion[c, c] / support[c]) if support[c] else None for c, name in enumerate(classes)
        },
        "overall": float(np.mean(predicted == labels)),
        "counts": {name: int(support[c]) for c, name in enumerate(classes)},
        "confusion": confusion.tolist(),
    }


def realness_filter(
    real_images: torch.Tensor,
    synthetic_images: torch.Tensor,
    *,
    drop_fraction: float = 0.1,
    seed: int = 0,
    folds: int = DEFAULT_FILTER_FOLDS,
    epochs: int = DEFAULT_FILTER_EPOCHS,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Score how recognisably synthetic each synthetic sample is, and drop the most obvious ones.

    A binary real-vs-synthetic classifier (`train_classifier`, class-weighted, seeded) is cross-fitted: the real and
    the synthetic samples are each split into `folds` random folds, and the synthetic samples of fold k are scored by
    a classifier trained on all other folds, so no sample is scored by a model that saw it. The score is that model's
    probability that the sample is synthetic; the `round(drop_fraction * N)` highest scores are dropped (ties broken
    by sample order).

    Args:
        real_images: real images (e.g. the training split) `[N_real, 1, *size]`.
        synthetic_images: synthetic images `[N, 1, *size]`.
        drop_fraction: fraction of synthetic samples to drop, in [0, 1).
        seed: seed of the folds and of the classifiers.
        folds: number of folds (at least 2; lowered to the smaller set's size).
        epochs: training epochs per fold; few on purpose: trained longer, the classifier memorises its training
            samples and ranks the held-out ones worse (toy of 12 noise images among 48: 11-12 found at 3 epochs,
            6-10 at 6).
        device: torch device.
        progress: show a progress bar over the folds.

    Returns:
        `(keep_mask, scores)`: boolean `[N]` (False = dropped) and float64 `[N]` probabilities of being synthetic.
    """
    real_images = check_images(real_images, "real images")
    synthetic_images = check_images(synthetic_images, "synthetic images")
    if real_images.shape[2:] != synthetic_images.shape[2:]:
        raise MedvolInputError(
            None,
            f"synthetic images have spatial shape {list(synthetic_images.shape[2:])}, the real images "
            f"{list(real_images.shape[2:])}",
        )
    if not 0.0 <= drop_fraction < 1.0:
        raise MedvolInputError("--filter", f"drop fraction must be in [0, 1), got {drop_fraction}")
    n_real, n_synthetic = real_images.shape[0], synthetic_images.shape[0]
    folds = min(int(folds), n_real, n_synthetic)
    if folds < 2:
        raise MedvolInputError(
            None,
            f"the real-vs-synthetic filter needs at least 2 real and 2 synthetic images (got {n_real}, {n_synthetic})",
        )
    rng = np.random.default_rng(seed)
    real_fold = rng.permutation(n_real) % folds
    synthetic_fold = rng.permutation(n_synthetic) % folds
    scores = np.zeros(n_synthetic, dtype=np.float64)
    for fold in tqdm(range(folds), desc="real-vs-synthetic filter", unit="fold", disable=not progress):
        real_train = torch.as_tensor(np.flatnonzero(real_fold != fold))
        synthetic_train = torch.as_tensor(np.flatnonzero(synthetic_fold != fold))
        images = torch.cat([real_images[real_train], synthetic_images[synthetic_train]])
        labels = np.concatenate([np.zeros(real_train.numel(), np.int64), np.ones(synthetic_train.numel(), np.int64)])
        classifier = train_classifier(images, labels, 2, seed=seed, epochs=epochs, device=device)
        held_out = np.flatnonzero(synthetic_fold == fold)
        scores[held_out] = predict_probabilities(classifier, synthetic_images[torch.as_tensor(held_out)])[:, 1]
    drop = int(round(drop_fraction * n_synthetic))
    keep = np.ones(n_synthetic, dtype=bool)
    keep[np.argsort(-scores, kind="stable")[:drop]] = False
    return keep, scores
