"""Test metrics of a classifier and their summaries over seeds: accuracy, balanced accuracy, ROC AUC, per-class
recalls, the confusion matrix, mean and sd per metric, paired differences with a t confidence interval.

Pure computations on labels and predicted probabilities (numpy); the classifiers themselves are trained by
`medvol.evaluation.classifier`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats


def roc_auc(positive: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve by the rank statistic (Mann-Whitney U / (n_pos * n_neg)); tied scores get their
    average rank, so a tie between a positive and a negative counts one half.

    Args:
        positive: boolean per sample, True for the positive class.
        scores: higher = more positive.

    Returns:
        the AUC, or None when one of the two classes is absent (undefined).
    """
    positive = np.asarray(positive, dtype=bool).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = stats.rankdata(scores)  # average ranks for ties, 1-based
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """`[num_classes, num_classes]` counts: rows are the true classes, columns the predicted ones."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels, dtype=np.int64), np.asarray(predicted, dtype=np.int64)), 1)
    return matrix


def classification_metrics(
    labels: np.ndarray, probabilities: np.ndarray, classes: Sequence[str]
) -> tuple[dict[str, float | None], np.ndarray]:
    """Test metrics of one classifier.

    Returns:
        `(metrics, confusion)`. Metrics: `accuracy`; `balanced_accuracy` (mean recall over the classes present in
        `labels`); `auc` (binary: of the class-1 probability; multi-class: one-vs-rest macro average over the classes
        present, each scored by its own probability); for two classes `sensitivity` (recall of class 1, the positive
        class) and `specificity` (recall of class 0); for more, `recall_<class>` per class. A value that is undefined
        (a class absent from `labels`) is None.
    """
    labels = np.asarray(labels, dtype=np.int64)
    num_classes = len(classes)
    predicted = probabilities.argmax(1)
    confusion = confusion_matrix(labels, predicted, num_classes)
    support = confusion.sum(1)
    recall = [float(confusion[c, c] / support[c]) if support[c] else None for c in range(num_classes)]
    present = [r for r in recall if r is not None]
    metrics: dict[str, float | None] = {
        "accuracy": float(np.mean(predicted == labels)) if labels.size else None,
        "balanced_accuracy": float(np.mean(present)) if present else None,
    }
    if num_classes == 2:
        metrics["auc"] = roc_auc(labels == 1, probabilities[:, 1])
        metrics["sensitivity"] = recall[1]
        metrics["specificity"] = recall[0]
    else:
        per_class_auc = [roc_auc(labels == c, probabilities[:, c]) for c in range(num_classes)]
        defined = [a for a in per_class_auc if a is not None]
        metrics["auc"] = float(np.mean(defined)) if defined else None
        for name, value in zip(classes, recall):
            metrics[f"recall_{name}"] = value
    return metrics, confusion


def summarise(values: Sequence[float | None]) -> dict[str, Any]:
    """`{mean, sd, values}` over seeds; sd with ddof=1 (None for one value); None throughout when a value is None."""
    values = list(values)
    if not values or any(v is None for v in values):
        return {"mean": None, "sd": None, "values": values}
    array = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(array.mean()),
        "sd": float(array.std(ddof=1)) if array.size > 1 else None,
        "values": [float(v) for v in array],
    }


def paired_difference(values: Sequence[float | None], reference: Sequence[float | None]) -> dict[str, Any]:
    """Mean of the per-seed differences `values - reference` with a 95% t-interval (`mean +- t(0.975, n-1) * sd /
    sqrt(n)`, sd with ddof=1); `ci95` is None with one seed (no spread to estimate) or an undefined value."""
    if not values or any(v is None for v in (*values, *reference)):
        return {"mean": None, "ci95": None, "values": []}
    differences = np.asarray(values, dtype=np.float64) - np.asarray(reference, dtype=np.float64)
    mean = float(differences.mean())
    ci95 = None
    if differences.size > 1:
        standard_error = differences.std(ddof=1) / np.sqrt(differences.size)
        half_width = float(stats.t.ppf(0.975, differences.size - 1) * standard_error)
        ci95 = [mean - half_width, mean + half_width]
    return {"mean": mean, "ci95": ci95, "values": [float(d) for d in differences]}
