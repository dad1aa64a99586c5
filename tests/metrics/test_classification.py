"""Test metrics of a classifier (`medvol.metrics.classification`): known answers worked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medvol.metrics.classification import classification_metrics, paired_difference, roc_auc, summarise


# positive flags, scores, expected AUC (worked by hand over all positive-negative pairs, a tie counting 1/2)
AUC_CASE_1 = [[1, 1, 0, 0], [0.9, 0.8, 0.3, 0.1], 1.0]
AUC_CASE_2 = [[1, 1, 0, 0], [0.1, 0.2, 0.7, 0.9], 0.0]
AUC_CASE_3 = [[1, 0, 1, 0], [0.5, 0.5, 0.5, 0.5], 0.5]
AUC_CASE_4 = [[1, 1, 0, 0], [0.8, 0.4, 0.4, 0.1], 3.5 / 4]  # pairs: 1, 1, 1/2 (tie), 1
AUC_CASE_5 = [[0, 1, 0, 1, 1], [0.2, 0.2, 0.6, 0.7, 0.1], 2.5 / 6]  # 0.2:0.5+1, 0.7:1+1, 0.1:0+0


@pytest.mark.parametrize("positive, scores, expected", [AUC_CASE_1, AUC_CASE_2, AUC_CASE_3, AUC_CASE_4, AUC_CASE_5])
def test_roc_auc_by_rank_statistic(positive, scores, expected):
    assert roc_auc(np.array(positive, bool), np.array(scores)) == pytest.approx(expected)


def test_roc_auc_undefined_with_one_class():
    assert roc_auc(np.ones(3, bool), np.arange(3.0)) is None


def test_binary_metrics_known_answer():
    labels = np.array([0, 0, 0, 1, 1])
    probabilities = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8], [0.55, 0.45]])
    metrics, confusion = classification_metrics(labels, probabilities, ["no", "yes"])
    assert confusion.tolist() == [[2, 1], [1, 1]]
    assert metrics["accuracy"] == pytest.approx(3 / 5)
    assert metrics["sensitivity"] == pytest.approx(1 / 2)
    assert metrics["specificity"] == pytest.approx(2 / 3)
    assert metrics["balanced_accuracy"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert metrics["auc"] == pytest.approx(5 / 6)  # 0.8 beats 0.1, 0.4, 0.7; 0.45 beats 0.1, 0.4


def test_multiclass_metrics_macro_auc_and_per_class_recall():
    labels = np.array([0, 1, 2, 2])
    probabilities = np.array([[0.7, 0.2, 0.1], [0.5, 0.4, 0.1], [0.1, 0.1, 0.8], [0.2, 0.6, 0.2]])
    metrics, confusion = classification_metrics(labels, probabilities, ["a", "b", "c"])
    assert confusion.tolist() == [[1, 0, 0], [1, 0, 0], [0, 1, 1]]
    assert metrics["recall_a"] == 1.0 and metrics["recall_b"] == 0.0 and metrics["recall_c"] == 0.5
    assert metrics["balanced_accuracy"] == pytest.approx(0.5)
    # one-vs-rest: a 3/3, b (0.4 vs 0.2, 0.1, 0.6) 2/3, c (0.8, 0.2 vs 0.1, 0.1) 4/4
    assert metrics["auc"] == pytest.approx((1 + 2 / 3 + 1) / 3)
    assert "sensitivity" not in metrics


def test_summary_and_paired_difference_arithmetic():
    summary = summarise([0.8, 0.9, 0.7])
    assert summary["mean"] == pytest.approx(0.8) and summary["sd"] == pytest.approx(0.1)
    assert summarise([0.5]) == {"mean": 0.5, "sd": None, "values": [0.5]}
    difference = paired_difference([0.8, 0.9, 0.7], [0.7, 0.8, 0.8])
    assert difference["values"] == pytest.approx([0.1, 0.1, -0.1])
    half_width = 4.302652729749464 * np.std([0.1, 0.1, -0.1], ddof=1) / math.sqrt(3)  # t(0.975, 2)
    assert difference["mean"] == pytest.approx(0.1 / 3)
    assert difference["ci95"] == pytest.approx([0.1 / 3 - half_width, 0.1 / 3 + half_width])
    assert paired_difference([0.6], [0.5]) == {"mean": pytest.approx(0.1), "ci95": None, "values": [pytest.approx(0.1)]}
