"""`medvol evaluate`: is the synthetic data faithful, diverse, private and useful? One call, ``metrics.json`` and
``report.html``.

`evaluate` runs named stages, each timed under its name in ``metrics.json`` ``timing``; every number comes from the
pure computations of `medvol.metrics`:

1. ``load`` (`load_stage`): the real training and held-out (test) splits and the synthetic set through the same
   preprocessing (`medvol.evaluation.data`), checked, and their ``--max-samples`` subsets;
2. ``feature_extractor`` and ``features``: a feature space without downloads (`medvol.evaluation.features`);
3. ``fidelity``, ``diversity``, ``coherence`` (volumes), ``privacy``, ``recognisability`` and, on request,
   ``utility`` and ``filtering`` (`medvol.evaluation.utility`);
4. ``metrics.json`` (the names of `medvol.evaluation.keys`) with ``inputs``, ``feature_extractor``, ``methods``
   (`medvol.evaluation.methods`), ``timing`` and the ``verdict``, and the ``report`` stage: ``report.html``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medvol.data.datasets import seeded_subset
from medvol.defaults import SYNTHETIC_RATIO, UTILITY_SEEDS
from medvol.devices import default_device
from medvol.errors import MedvolInputError
from medvol.evaluation import utility as utility_module
from medvol.evaluation.classifier import train_classifier
from medvol.evaluation.data import (
    HELDOUT_SPLIT,
    SYNTHETIC_DATALIST,
    ImageSet,
    RealData,
    SyntheticData,
    _datalist_dims,
    _run_image_size,
    load_real,
    load_synthetic,
)
from medvol.evaluation.features import FeatureExtractor, build_feature_extractor
from medvol.evaluation.keys import METRICS_FILE, REPORT_FILE
from medvol.evaluation.keys import MetricsKeys as Keys
from medvol.evaluation.methods import evaluation_methods
from medvol.evaluation.verdict import VERDICT_METHOD, samples_verdict
from medvol.io.files import write_json
from medvol.metrics import coherence, diversity, fidelity, privacy
from medvol.runs import RUN_RECORD_FILE, RunRecord

__all__ = ["MIN_SAMPLES", "evaluate", "run_datalist"]

logger = logging.getLogger(__name__)

UTILITY_CACHE = "utility"  # DATA/cache/utility: results of the utility arms without synthetic data
# precision/recall and density/coverage take k = 5 nearest neighbours inside each set: k + 1 samples at least
MIN_SAMPLES = 6
NEAREST_K = 5


# ------------------------------------------------------------------------------------------------------- checks
def _check_counts(real: RealData, synthetic: SyntheticData) -> None:
    from medvol.metrics.diversity import MIN_MS_SSIM_SIDE

    if min(real.image_shape) < MIN_MS_SSIM_SIDE:
        raise MedvolInputError(real.datalist, f"samples of size {real.image_shape} are too small: MS-SSIM (diversity) "
                                              f"needs at least {MIN_MS_SSIM_SIDE} voxels per side; prepare with a "
                                              f"larger --size")
    for name, image_set, where in (
        ("training", real.splits["training"], real.datalist),
        (HELDOUT_SPLIT, real.splits[HELDOUT_SPLIT], real.datalist),
        ("synthetic", synthetic.images, synthetic.folder),
    ):
        if len(image_set) < MIN_SAMPLES:
            raise MedvolInputError(where, f"{len(image_set)} {name} samples: precision/recall and density/coverage "
                                          f"(k = {NEAREST_K} nearest neighbours) need at least {MIN_SAMPLES}")


def _check_options(seeds: int, synthetic_ratio: float, classifier_epochs: int | None, max_samples: int | None,
                   features_path: str | os.PathLike | None, run_dir: Path | None) -> None:
    if seeds < 1:
        raise MedvolInputError("--seeds", f"must be at least 1, got {seeds}")
    if not 0 < synthetic_ratio < float("inf"):
        raise MedvolInputError("--synthetic-ratio", f"must be a positive number, got {synthetic_ratio}")
    if classifier_epochs is not None and classifier_epochs < 1:
        raise MedvolInputError("--classifier-epochs", f"must be at least 1, got {classifier_epochs}")
    if max_samples is not None and max_samples < MIN_SAMPLES:
        raise MedvolInputError("--max-samples", f"must be at least {MIN_SAMPLES}, got {max_samples}")
    if features_path is not None and not Path(features_path).is_file():
        raise MedvolInputError(features_path, "feature extractor checkpoint (--features) not found")
    if run_dir is not None:
        if not run_dir.is_dir():
            raise MedvolInputError(run_dir, "--run is not a folder")
        events = run_dir / "tensorboard"
        if not (events.is_dir() and any(events.rglob("events.out.tfevents.*"))):
            raise MedvolInputError(run_dir, "--run holds no TensorBoard event files under tensorboard/ (not a medvol run?)")


# ------------------------------------------------------------------------------------------------------- stages
class _Timer:
    """Seconds per named stage, in the order they ran."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        started = time.perf_counter()
        logger.debug("evaluate: %s", name)
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - started, 3)


def _plain(value):
    """JSON-ready: numpy scalars/arrays and tuples to Python numbers and lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, torch.Tensor):
        return _plain(value.tolist())
    if isinstance(value, Path):
        return str(value)
    return value


def _recognisability_classifier(extractor, train: ImageSet, num_classes: int, seed: int, epochs: int | None, device):
    """The classifier of a classifier-kind feature extractor (trained on the real training split already), else one
    trained now with the same recipe."""
    network = getattr(extractor, "classifier", None)
    if extractor.kind == "classifier" and network is not None and int(getattr(network, "num_classes", -1)) == num_classes:
        return network
    recipe = {} if epochs is None else {"epochs": int(epochs)}
    return train_classifier(train.images, train.labels, num_classes, seed=seed, device=device, **recipe)


@dataclass
class _Sets:
    """The image sets of one evaluation: ``all_*`` whole, ``train``/``heldout``/``synth`` the seeded subsets of
    ``--max-samples`` (``train_index``/``synth_index`` into the whole sets) that the distribution metrics use."""

    real: RealData
    synthetic: SyntheticData
    all_train: ImageSet
    all_heldout: ImageSet
    all_synth: ImageSet
    train: ImageSet
    heldout: ImageSet
    synth: ImageSet
    train_index: np.ndarray
    synth_index: np.ndarray

    @property
    def labelled(self) -> bool:
        """Whether the real subsets have a class for every image (and the datalist names the classes)."""
        return self.train.labelled and self.heldout.labelled and bool(self.real.classes)


@dataclass
class _Features:
    """Features of the whole training split and of the subsets (float64 ``[N, F]``)."""

    all_train: np.ndarray
    train: np.ndarray
    heldout: np.ndarray
    synth: np.ndarray


def _synthetic_run(synthetic_folder: Path) -> Path | None:
    """The run a `medvol sample` output names in its provenance (None for another folder)."""
    listed = synthetic_folder / SYNTHETIC_DATALIST
    if not listed.is_file():
        return None
    try:
        provenance_run = json.loads(listed.read_text()).get("provenance", {}).get("run")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
    return Path(provenance_run) if provenance_run else None


def load_stage(real_datalist: str | os.PathLike, synthetic_dir: str | os.PathLike, run_path: Path | None,
               cache_dir: Path, max_samples: int | None, seed: int, progress: bool) -> _Sets:
    """Stage ``load``: the real splits and the synthetic set through the same preprocessing, checked, and their
    seeded ``--max-samples`` subsets. Every sample is loaded: the subsets serve only the distribution metrics; the
    privacy reference is the whole training split and the utility arms train on the real images the generator saw."""
    synthetic_folder = Path(synthetic_dir).expanduser().resolve()
    # a run's samples: the real data without a prepared size is fitted as the run was
    size = _run_image_size(run_path or _synthetic_run(synthetic_folder), _datalist_dims(real_datalist))
    real = load_real(real_datalist, cache_dir, seed=seed, progress=progress, size=size)
    synthetic = load_synthetic(synthetic_folder, real, cache_dir, seed=seed, progress=progress)
    _check_counts(real, synthetic)
    all_train, all_heldout, all_synth = real.splits["training"], real.splits[HELDOUT_SPLIT], synthetic.images
    train_index = seeded_subset(len(all_train), max_samples, seed)
    synth_index = seeded_subset(len(all_synth), max_samples, seed)
    heldout = all_heldout.subset(seeded_subset(len(all_heldout), max_samples, seed))
    return _Sets(real, synthetic, all_train, all_heldout, all_synth, all_train.subset(train_index), heldout,
                 all_synth.subset(synth_index), train_index, synth_index)


def features_stage(extractor: FeatureExtractor, sets: _Sets) -> _Features:
    """Stage ``features``: every set through the feature extractor."""
    all_train = np.asarray(extractor(sets.all_train.images), dtype=np.float64)
    heldout, synth = (np.asarray(extractor(s.images), dtype=np.float64) for s in (sets.heldout, sets.synth))
    return _Features(all_train, all_train[sets.train_index], heldout, synth)


def fidelity_stage(sets: _Sets, features: _Features, seed: int) -> tuple[dict, dict, dict]:
    """Stage ``fidelity``: FID, KID and MMD next to their real-vs-real baselines, and the k-NN metrics at one n.

    Returns:
        ``(metrics, counts, knn)``: the metrics.json entries, the sample counts and the k-NN result (for the
        methods text).
    """
    fid_kid = fidelity.fidelity_with_baseline(
        features.train, features.heldout, features.synth, seed=seed, train_groups=sets.train.groups,
        heldout_groups=sets.heldout.groups, synthetic_groups=sets.synth.groups)
    metrics: dict = {}
    note = fidelity.below_baseline_note(fid_kid[Keys.FID], fid_kid[Keys.FID_REAL_BASELINE])
    if note:
        metrics[Keys.FID_NOTE] = note
    metrics.update({key: fid_kid[key] for key in (Keys.FID, Keys.KID, Keys.FID_REAL_BASELINE,
                                                  Keys.KID_REAL_BASELINE, Keys.MMD)})
    knn = fidelity.matched_precision_recall(features.train, features.heldout, features.synth, k=NEAREST_K, seed=seed)
    metrics.update(knn["synthetic"])
    metrics[Keys.MMD_REAL_BASELINE] = fid_kid[Keys.MMD_REAL_BASELINE]
    counts = {key: fid_kid[key] for key in ("n", "n_train", "n_heldout", "n_synthetic")}
    counts["resamples"] = fid_kid[Keys.FID]["resamples"]
    counts["by_subject"] = any(fid_kid[key]["groups_real"] < fid_kid[key]["n_real"]
                               or fid_kid[key]["groups_synthetic"] < fid_kid[key]["n_synthetic"]
                               for key in (Keys.FID, Keys.FID_REAL_BASELINE))
    for key in Keys.NEAREST_NEIGHBOURS:
        metrics[f"{key}_real_baseline"] = knn["real_baseline"][key]
    metrics[Keys.PRECISION_RECALL_N] = {key: knn[key] for key in ("n", "n_reference", "repeats")}
    return metrics, counts, knn


def diversity_stage(sets: _Sets) -> dict:
    """Stage ``diversity``: pairwise MS-SSIM of the synthetic and the real training images, the collapse flag."""
    report = diversity.diversity_report(sets.synth.images, sets.synth.labels, sets.train.images, sets.train.labels,
                                        list(sets.real.classes))
    headline = (Keys.MS_SSIM_SYNTHETIC, Keys.MS_SSIM_REAL, Keys.MODE_COLLAPSE)
    return {**{key: report[key] for key in headline},
            Keys.DIVERSITY: {k: v for k, v in report.items() if k not in headline}}


def coherence_stage(sets: _Sets) -> dict:
    """Stage ``coherence`` (volumes): adjacent-slice similarity of the training, held-out and synthetic volumes."""
    return coherence.coherence_report(
        {"real": sets.train.images, HELDOUT_SPLIT: sets.heldout.images, "synthetic": sets.synth.images})


def privacy_stage(sets: _Sets, features: _Features) -> dict:
    """Stage ``privacy``: nearest training image (of the whole split) of every synthetic and held-out image."""
    return privacy.nearest_neighbour_privacy(sets.all_train.images, features.all_train, sets.heldout.images,
                                             features.heldout, sets.synth.images, features.synth, sets.synth.paths)


def recognisability_stage(sets: _Sets, extractor: FeatureExtractor, seed: int, epochs: int | None,
                          device: torch.device) -> tuple[dict, torch.nn.Module | None]:
    """Stage ``recognisability``: a classifier of the real training split labels the synthetic (and held-out)
    images; returns the metrics.json entry and that classifier (None without labels)."""
    if not (sets.labelled and sets.synth.labelled):
        why = "the real data has no class labels" if not sets.labelled else "the synthetic samples have no class labels"
        return {"per_class": {}, "overall": None, "skipped": f"not computed: {why}"}, None
    classes = list(sets.real.classes)
    classifier = _recognisability_classifier(extractor, sets.train, len(classes), seed, epochs, device)
    recognised = utility_module.recognisability(classifier, sets.synth.images, sets.synth.labels, classes,
                                                device=device)
    recognised["real_test"] = utility_module.recognisability(classifier, sets.heldout.images, sets.heldout.labels,
                                                             classes, device=device)
    return recognised, classifier


def utility_stage(sets: _Sets, study: dict, filter_mask: np.ndarray | None = None) -> dict:
    """Stage ``utility`` (and the second study of ``filtering``): the utility study on every sample; the real-only
    arms are cached beside the prepared data, for the next generator evaluated against it.

    Args:
        sets: the image sets.
        study: `utility_study` keywords (seeds, ratio, arms, selection, device, progress, epochs).
        filter_mask: the realness filter's keep mask, for the study after filtering.
    """
    cache = utility_module.RealArmCache(Path(sets.real.datalist).parent / "cache" / UTILITY_CACHE)
    return utility_module.utility_study(
        sets.all_train.images, sets.all_train.labels, sets.all_heldout.images, sets.all_heldout.labels,
        sets.all_synth.images, sets.all_synth.labels, list(sets.real.classes), filter_mask=filter_mask, cache=cache,
        **study)


def filtering_stage(sets: _Sets, study: dict, before: dict, seed: int) -> tuple[dict, np.ndarray]:
    """Stage ``filtering``: drop the synthetic samples a real-vs-synthetic classifier separates most confidently and
    run the utility study again; returns the metrics.json entry and the keep mask."""
    epochs = {"epochs": study["epochs"]} if "epochs" in study else {}
    keep_mask, scores = utility_module.realness_filter(sets.all_train.images, sets.all_synth.images, seed=seed,
                                                       device=study["device"], progress=study["progress"], **epochs)
    keep_mask = np.asarray(keep_mask, dtype=bool)
    after = utility_stage(sets, study, filter_mask=keep_mask)
    return {
        "kept": int(keep_mask.sum()),
        "dropped_fraction": float(1.0 - keep_mask.mean()),
        "dropped": [p for p, keep in zip(sets.all_synth.paths, keep_mask) if not keep],
        "realness_scores": np.asarray(scores, dtype=float).tolist(),
        "utility_before": before,
        "utility_after": after,
    }, keep_mask


def inputs_record(sets: _Sets, run_path: Path | None, max_samples: int | None, seed: int,
                  device: torch.device) -> dict:
    """The ``inputs`` entry of metrics.json: what was compared with what, and how many."""
    real, classes = sets.real, sets.real.classes
    return {
        "real": str(real.datalist),
        "synthetic": str(sets.synthetic.folder),
        "synthetic_source": sets.synthetic.source,
        "synthetic_provenance": sets.synthetic.provenance,
        "synthetic_skipped_files": sets.synthetic.skipped,
        "synthetic_preprocessing": sets.synthetic.preprocessing,
        "run": None if run_path is None else str(run_path),
        "reference_split": "training",
        "heldout_split": HELDOUT_SPLIT,
        "validation_used": False,
        "validation_not_used_because": "training may select its best checkpoint by a metric on the validation "
                                       "split, so it is not independent of the generator",
        "classes": list(classes),
        "counts": {"training": sets.train.counts(classes), HELDOUT_SPLIT: sets.heldout.counts(classes),
                   "synthetic": sets.synth.counts(classes)},
        "max_samples": max_samples,
        "counts_before_max_samples": {"training": len(sets.all_train), HELDOUT_SPLIT: len(sets.all_heldout),
                                      "synthetic": len(sets.all_synth)},
        "seed": seed,
        "mode": real.mode,
        "spatial_dims": real.spatial_dims,
        "image_shape": real.image_shape,
        "preprocessing": real.preprocessing,
        "device": str(device),
    }


def report_stage(out: Path, metrics: dict, sets: _Sets, features: _Features, run_path: Path | None,
                 keep_mask: np.ndarray | None, seed: int) -> None:
    """Stage ``report``: the self-contained ``report.html`` (`medvol.report.html`)."""
    from medvol.report.html import ReportInputs, write_report

    write_report(out / REPORT_FILE, metrics, ReportInputs(
        classes=list(sets.real.classes), train=sets.train, heldout=sets.heldout, synthetic=sets.synth,
        train_features=features.train, heldout_features=features.heldout, synthetic_features=features.synth,
        run_dir=run_path, keep_mask=None if keep_mask is None else keep_mask[sets.synth_index], seed=seed))


def evaluate(
    real_datalist: str | os.PathLike,
    synthetic_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    utility: bool = False,
    seeds: int = UTILITY_SEEDS,
    synthetic_ratio: float = SYNTHETIC_RATIO,
    classifier_epochs: int | None = None,
    features_path: str | os.PathLike | None = None,
    run_dir: str | os.PathLike | None = None,
    filter_synthetic: bool = False,
    balance: bool = False,
    pretrain: bool = False,
    select_confidence: float | None = None,
    device: str | torch.device | None = None,
    max_samples: int | None = None,
    seed: int = 0,
    progress: bool = True,
    report: bool = True,
) -> dict:
    """Evaluate a synthetic folder against the real data it imitates; writes ``OUT/metrics.json`` and
    ``OUT/report.html`` and returns the metrics.

    Args:
        real_datalist: the real ``datalist.json`` (`medvol prepare` output) with training and test splits.
        synthetic_dir: a `medvol sample` output (labels from its datalist.json) or a plain folder of images/volumes.
        out_dir: output folder (``metrics.json``, ``report.html``, ``cache/``, ``features/``); reruns reuse the
            caches.
        utility: run the utility study (five classifier arms, `seeds` seeds each).
        seeds: seeds of the utility study.
        synthetic_ratio: synthetic samples per real sample in the mixed utility arms.
        classifier_epochs: epochs of every classifier (feature extractor, recognisability, utility); None: the
            recipe's default.
        features_path: a user feature extractor checkpoint instead of the one trained here.
        run_dir: the training run; its TensorBoard curves go into the report (and its image size is used when the
            real datalist has none).
        filter_synthetic: drop the synthetic samples a real-vs-synthetic classifier separates most confidently and
            report the utility before and after (implies `utility`).
        balance: add the utility arm `real+augmentation+balanced` (minority classes filled with synthetic samples up
            to the majority count; implies `utility`).
        pretrain: add the utility arm `synthetic->real+augmentation` (pre-trained on synthetic, fine-tuned on
            real+augmentation, the same total steps; implies `utility`).
        select_confidence: the utility arms use only the synthetic samples that the recognisability classifier
            (trained on the real training split) assigns to their own class with at least this probability (implies
            `utility`).
        device: ``cpu`` or ``cuda`` (default: CUDA when available).
        max_samples: at most this many samples per real split and of the synthetic set (seeded subsets) in the
            feature extractor, fidelity, diversity, recognisability and the privacy queries; the privacy reference
            (nearest training image) is always the whole training split, and the utility study and realness filter
            always use every sample.
        seed: seed of every random choice (subsets, feature extractor, bootstrap, pairs).
        progress: progress bars on the long parts.
        report: write ``report.html`` too.

    Raises:
        MedvolInputError: bad input (see `load_real`, `load_synthetic`; too few samples; unlabelled data with
            `utility`; a bad option).
    """
    timer = _Timer()
    out = Path(out_dir).expanduser().resolve()
    run_path = None if run_dir is None else Path(run_dir).expanduser().resolve()
    utility = bool(utility or filter_synthetic or balance or pretrain or select_confidence is not None)
    if select_confidence is not None and not 0 < select_confidence <= 1:
        raise MedvolInputError("--select-confidence", f"must be a probability in (0, 1], got {select_confidence}")
    _check_options(seeds, synthetic_ratio, classifier_epochs, max_samples, features_path, run_path)
    if out.exists() and not out.is_dir():
        raise MedvolInputError(out, "--out must be a folder, this is a file")
    device = default_device(device)
    with timer.stage("load"):
        sets = load_stage(real_datalist, synthetic_dir, run_path, out / "cache", max_samples, seed, progress)
    if utility and not (sets.labelled and sets.synth.labelled):
        who = sets.real.datalist if not sets.labelled else sets.synthetic.folder
        raise MedvolInputError(who, "has no class labels: the utility study trains classifiers of the classes")
    out.mkdir(parents=True, exist_ok=True)
    with timer.stage("feature_extractor"):
        extractor = build_feature_extractor(
            sets.train.images, sets.train.labels, len(sets.real.classes) if sets.labelled else 0, out / "features",
            seed=seed, epochs=classifier_epochs, features_path=features_path, device=device, progress=progress)
    with timer.stage("features"):
        features = features_stage(extractor, sets)
    with timer.stage("fidelity"):
        metrics, fidelity_counts, knn = fidelity_stage(sets, features, seed)
    with timer.stage("diversity"):
        metrics.update(diversity_stage(sets))
    if sets.real.spatial_dims == 3:
        with timer.stage("coherence"):
            metrics[Keys.SLICE_COHERENCE] = coherence_stage(sets)
    with timer.stage("privacy"):
        metrics[Keys.PRIVACY] = privacy_stage(sets, features)
    with timer.stage("recognisability"):
        metrics[Keys.RECOGNISABILITY], classifier = recognisability_stage(sets, extractor, seed, classifier_epochs,
                                                                          device)
    keep_mask = None
    study = dict({} if classifier_epochs is None else {"epochs": int(classifier_epochs)},
                 arms=[*utility_module.ARMS, *([utility_module.BALANCED_ARM] if balance else []),
                       *([utility_module.PRETRAINED_ARM] if pretrain else [])],
                 select_confidence=select_confidence,
                 selection_classifier=classifier if select_confidence is not None else None,
                 seeds=seeds, synthetic_ratio=synthetic_ratio, device=device, progress=progress)
    if utility:
        with timer.stage("utility"):
            metrics[Keys.UTILITY] = utility_stage(sets, study)
    if filter_synthetic:
        with timer.stage("filtering"):
            metrics[Keys.FILTERING], keep_mask = filtering_stage(sets, study, metrics[Keys.UTILITY], seed)
    metrics[Keys.INPUTS] = inputs_record(sets, run_path, max_samples, seed, device)
    metrics[Keys.FEATURE_EXTRACTOR] = {"kind": extractor.kind, "description": extractor.description,
                                       "dimensions": int(features.train.shape[1])}
    metrics[Keys.METHODS] = evaluation_methods(sets.real, extractor, fidelity_counts, knn, filter_synthetic)
    if utility:
        metrics[Keys.METHODS]["utility"] = utility_module.utility_methods(
            metrics[Keys.UTILITY], f"the held-out real {HELDOUT_SPLIT} split")
    metrics[Keys.TIMING] = timer.seconds
    metrics = _plain(metrics)
    run_record = RunRecord.load(run_path) if run_path is not None and RunRecord.exists(run_path) else None
    metrics[Keys.VERDICT] = samples_verdict(metrics, run_record)
    metrics[Keys.METHODS]["verdict"] = VERDICT_METHOD
    if report:
        with timer.stage("report"):
            report_stage(out, metrics, sets, features, run_path, keep_mask, seed)
        metrics[Keys.TIMING] = _plain(timer.seconds)
    metrics[Keys.TIMING]["total"] = round(sum(v for k, v in timer.seconds.items()), 3)
    write_json(out / METRICS_FILE, metrics)
    return metrics


def run_datalist(run_dir: str | os.PathLike) -> str:
    """The real datalist a training run used (``datalist`` of ``RUN/run.json``): the default ``--real`` of the
    bundles' ``evaluate.yaml``.

    Raises:
        MedvolInputError: not a run folder, or its record names no datalist.
    """
    record = RunRecord.load(Path(run_dir).expanduser(), if_missing="give the real datalist")
    if not record.datalist:
        raise MedvolInputError(record.folder / RUN_RECORD_FILE, "names no datalist; give the real datalist")
    return str(record.datalist)
