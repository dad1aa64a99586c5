"""Utility study, recognisability and the real-vs-synthetic filter: known answers on toy data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medvol.errors import MedvolInputError
from medvol.evaluation.classifier import train_classifier
from medvol.evaluation import utility as utility_module
from medvol.evaluation.utility import (
    ARMS,
    BALANCED_ARM,
    PRETRAINED_ARM,
    RealArmCache,
    realness_filter,
    recognisability,
    utility_methods,
    utility_study,
)

SMALL = (4, 8, 16)


def bars(count: int, seed: int, size: int = 16, classes: int = 2):
    """Class 0: a horizontal bar, class 1: a vertical bar, class 2: a square, at random places on noise."""
    generator = torch.Generator().manual_seed(seed)
    labels = np.arange(count) % classes
    images = torch.randn(count, 1, size, size, generator=generator) * 0.3 - 0.6
    for i, label in enumerate(labels):
        x, y = (int(v) for v in torch.randint(0, size - 6, (2,), generator=generator))
        if label == 0:
            images[i, 0, x + 2 : x + 4, y : y + 6] += 1.2
        elif label == 1:
            images[i, 0, x : x + 6, y + 2 : y + 4] += 1.2
        else:
            images[i, 0, x + 1 : x + 5, y + 1 : y + 5] += 1.2
    return images.clamp(-1, 1), labels


def test_utility_study_keys_shapes_and_paired_differences():
    train_images, train_labels = bars(12, seed=0, classes=3)
    test_images, test_labels = bars(9, seed=1, classes=3)
    synthetic_images, synthetic_labels = bars(10, seed=2, classes=3)
    classes = ["h", "v", "square"]
    result = utility_study(
        train_images, train_labels, test_images, test_labels, synthetic_images, synthetic_labels, classes,
        seeds=2, epochs=1, synthetic_ratio=0.5, progress=False, record_curves=True,
    )
    assert result["seeds"] == [0, 1]
    assert set(result["arms"]) == set(ARMS)
    assert set(result["paired_difference"]) == set(ARMS) - {"real"}
    expected_metrics = {"accuracy", "balanced_accuracy", "auc", "recall_h", "recall_v", "recall_square"}
    assert set(result["metrics"]) == expected_metrics
    assert result["synthetic_requested"] == 6 and result["notes"] == []
    assert result["counts"]["real+synthetic"] == {"real": 12, "synthetic": 6}
    assert result["counts"]["synthetic"] == {"real": 0, "synthetic": 6}
    for arm in ARMS:
        assert set(result["arms"][arm]) == expected_metrics
        for summary in result["arms"][arm].values():
            assert len(summary["values"]) == 2
            assert summary["mean"] == pytest.approx(np.mean(summary["values"]))
            assert summary["sd"] == pytest.approx(np.std(summary["values"], ddof=1))
        confusion = np.array(result["confusion"][arm])
        assert confusion.shape == (3, 3) and confusion.sum() == 2 * 9
        assert np.array_equal(confusion, np.sum(result["confusion_per_seed"][arm], axis=0))
        assert len(result["curves"][arm]) == 2 and len(result["curves"][arm][0]) == 1
    for arm, per_metric in result["paired_difference"].items():
        for name, difference in per_metric.items():
            values = np.array(result["arms"][arm][name]["values"]) - np.array(result["arms"]["real"][name]["values"])
            assert difference["values"] == pytest.approx(values.tolist())
            assert difference["mean"] == pytest.approx(values.mean())
            half = (difference["ci95"][1] - difference["ci95"][0]) / 2
            assert half == pytest.approx(12.706204736174698 * values.std(ddof=1) / math.sqrt(2))  # t(0.975, 1)


def test_utility_study_with_too_few_synthetic_samples_and_a_filter():
    train_images, train_labels = bars(8, seed=0)
    synthetic_images, synthetic_labels = bars(6, seed=2)
    keep = np.array([True, True, True, False, True, False])
    result = utility_study(
        train_images, train_labels, train_images, train_labels, synthetic_images, synthetic_labels, ["h", "v"],
        seeds=1, epochs=1, synthetic_ratio=1.0, filter_mask=keep, progress=False, arms=["real", "synthetic"],
    )
    assert set(result["arms"]) == {"real", "synthetic"}
    assert result["synthetic_requested"] == 8 and result["synthetic_available"] == 4
    assert result["counts"]["synthetic"]["synthetic"] == 4
    assert "only 4 are available after filtering" in result["notes"][0]
    assert result["arms"]["real"]["accuracy"]["sd"] is None
    assert result["paired_difference"]["synthetic"]["accuracy"]["ci95"] is None
    assert {"sensitivity", "specificity", "auc"} <= set(result["metrics"])


def test_real_only_arms_are_reused_from_the_cache_and_only_for_the_same_real_data(tmp_path, monkeypatch):
    train_images, train_labels = bars(12, seed=0)
    test_images, test_labels = bars(8, seed=1)
    synthetic_a, synthetic_labels = bars(12, seed=2)
    synthetic_b, _ = bars(12, seed=3)
    trained = []
    original = utility_module.train_classifier

    def counting(*args, description=None, **kwargs):
        trained.append(description)
        return original(*args, description=description, **kwargs)

    monkeypatch.setattr(utility_module, "train_classifier", counting)
    options = {"seeds": 2, "epochs": 1, "progress": False, "record_curves": True}
    first = utility_study(train_images, train_labels, test_images, test_labels, synthetic_a, synthetic_labels,
                          ["h", "v"], cache=RealArmCache(tmp_path / "cache"), **options)
    assert len(trained) == 10 and first["notes"] == []
    assert len(list((tmp_path / "cache").glob("*.json"))) == 4  # 2 real-only arms x 2 seeds

    trained.clear()
    second = utility_study(train_images, train_labels, test_images, test_labels, synthetic_b, synthetic_labels,
                           ["h", "v"], cache=RealArmCache(tmp_path / "cache"), **options)
    assert sorted(trained) == sorted(f"{arm} (seed {seed})" for arm in ARMS[2:] for seed in (0, 1))
    for arm in ("real", "real+augmentation"):
        assert second["arms"][arm] == first["arms"][arm]
        assert second["confusion_per_seed"][arm] == first["confusion_per_seed"][arm]
        assert second["curves"][arm] == first["curves"][arm]
    assert "reused from" in second["notes"][0] and "real+augmentation (seed 1)" in second["notes"][0]
    # the paired differences still pair the cached real arm with this synthetic set's arms, seed by seed
    mixed = np.array(second["arms"]["real+synthetic"]["accuracy"]["values"])
    assert second["paired_difference"]["real+synthetic"]["accuracy"]["values"] == pytest.approx(
        (mixed - np.array(first["arms"]["real"]["accuracy"]["values"])).tolist())

    trained.clear()  # other real training images (one label changed): nothing is reused
    changed = train_labels.copy()
    changed[0] = 1 - changed[0]
    utility_study(train_images, changed, test_images, test_labels, synthetic_b, synthetic_labels, ["h", "v"],
                  cache=RealArmCache(tmp_path / "cache"), **options)
    assert len(trained) == 10

    trained.clear()  # the same data and epochs but another step budget: nothing is reused
    utility_study(train_images, train_labels, test_images, test_labels, synthetic_b, synthetic_labels, ["h", "v"],
                  cache=RealArmCache(tmp_path / "cache"), steps=2, **options)
    assert len(trained) == 10


def test_an_unwritable_cache_folder_leaves_the_study_working(tmp_path):
    train_images, train_labels = bars(8, seed=0)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = utility_study(train_images, train_labels, train_images, train_labels, train_images, train_labels,
                           ["h", "v"], seeds=1, epochs=1, progress=False, arms=["real"],
                           cache=RealArmCache(blocker / "cache"))
    assert result["arms"]["real"]["accuracy"]["values"] and result["notes"] == []


def test_utility_study_rejects_bad_input():
    images, labels = bars(6, seed=0)
    with pytest.raises(MedvolInputError, match="synthetic labels contain unlabelled"):
        utility_study(images, labels, images, labels, images, np.full(6, -1), ["h", "v"], seeds=1, epochs=1,
                      progress=False)
    with pytest.raises(MedvolInputError, match="spatial shape"):
        utility_study(images, labels, images, labels, torch.zeros(6, 1, 8, 8), labels, ["h", "v"], seeds=1,
                      epochs=1, progress=False)
    with pytest.raises(MedvolInputError, match="no synthetic samples"):
        utility_study(images, labels, images, labels, images, labels, ["h", "v"], seeds=1, epochs=1,
                      filter_mask=np.zeros(6, bool), progress=False)


@pytest.mark.slow
def test_more_data_from_the_same_distribution_helps_a_low_data_classifier():
    """The 'synthetic' set is more real data: at the same optimiser steps, real+synthetic must beat real on every
    seed (the data helps, not extra steps)."""
    train_images, train_labels = bars(8, seed=0)
    test_images, test_labels = bars(200, seed=1)
    extra_images, extra_labels = bars(160, seed=2)
    result = utility_study(
        train_images, train_labels, test_images, test_labels, extra_images, extra_labels, ["h", "v"],
        seeds=2, steps=36, synthetic_ratio=20, progress=False, arms=["real", "real+synthetic"],
    )
    assert result["steps"] == {"real": 36, "real+synthetic": 36}
    difference = result["paired_difference"]["real+synthetic"]["balanced_accuracy"]
    assert min(difference["values"]) > 0.1
    assert result["arms"]["real+synthetic"]["balanced_accuracy"]["mean"] > 0.8


def test_recognisability_of_the_training_data_is_perfect():
    images, labels = bars(24, seed=0)
    images[torch.as_tensor(labels == 1)] += 0.8  # make the toy trivially separable by brightness too
    classifier = train_classifier(images, labels, 2, seed=0, epochs=5, channels=SMALL)
    result = recognisability(classifier, images, labels, ["h", "v"])
    assert result["per_class"] == {"h": 1.0, "v": 1.0}
    assert result["overall"] == 1.0
    assert result["counts"] == {"h": 12, "v": 12}
    flipped = recognisability(classifier, images, 1 - labels, ["h", "v"])
    assert flipped["overall"] == 0.0
    only_h = recognisability(classifier, images[:1], labels[:1], ["h", "v"])
    assert only_h["per_class"]["v"] is None


def test_realness_filter_drops_the_requested_fraction_and_prefers_noise():
    real_images, _ = bars(32, seed=0)
    real_like, _ = bars(36, seed=1)
    noise = torch.rand(12, 1, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1
    synthetic = torch.cat([real_like, noise])
    keep, scores = realness_filter(real_images, synthetic, drop_fraction=0.25, seed=0)
    assert keep.dtype == bool and keep.shape == (48,) and scores.shape == (48,)
    assert int((~keep).sum()) == 12
    assert np.all((scores >= 0) & (scores <= 1))
    assert int((~keep[36:]).sum()) >= 9  # the noise images are the ones dropped (3 by chance)
    assert scores[36:].mean() > scores[:36].mean()
    keep_none, _ = realness_filter(real_images, synthetic, drop_fraction=0.0, seed=0, folds=2, epochs=1)
    assert keep_none.all()


@pytest.fixture
def recorded(monkeypatch):
    """Every classifier the utility study trains: its description, images, labels, augmentation mask, `steps`,
    `initial` network, returned network and the optimiser steps it really took."""
    calls = []
    original = utility_module.train_classifier
    original_step = torch.optim.AdamW.step
    counter = [0]

    def counting_step(self, *args, **kwargs):
        counter[0] += 1
        return original_step(self, *args, **kwargs)

    def recording(images, labels, num_classes, description="classifier", augment=False, **kwargs):
        before = counter[0]
        network = original(images, labels, num_classes, description=description, augment=augment, **kwargs)
        calls.append({"description": description, "images": images, "labels": np.asarray(labels),
                      "augment": np.broadcast_to(np.asarray(augment, bool), (images.shape[0],)).copy(),
                      "steps": kwargs.get("steps"), "initial": kwargs.get("initial"), "network": network,
                      "taken": counter[0] - before})
        return network

    monkeypatch.setattr(torch.optim.AdamW, "step", counting_step)
    monkeypatch.setattr(utility_module, "train_classifier", recording)
    return calls


def test_every_arm_takes_the_same_optimiser_steps_whatever_its_size(recorded):
    train_images, train_labels = bars(40, seed=0)
    synthetic_images, synthetic_labels = bars(80, seed=2)
    result = utility_study(train_images, train_labels, train_images[:8], train_labels[:8], synthetic_images,
                           synthetic_labels, ["h", "v"], seeds=1, epochs=2, synthetic_ratio=2.0, progress=False)
    # the real arm's recipe: 2 epochs of ceil(40 / 32) = 2 batches; real+synthetic has 120 images (4 batches)
    assert result["steps"] == {arm: 4 for arm in ARMS}
    assert {call["description"]: call["taken"] for call in recorded} == {f"{arm} (seed 0)": 4 for arm in ARMS}
    assert result["counts"]["real+synthetic"] == {"real": 40, "synthetic": 80}


def test_real_augmentation_synthetic_augments_the_synthetic_samples_too(recorded):
    train_images, train_labels = bars(8, seed=0)
    synthetic_images, synthetic_labels = bars(8, seed=2)
    utility_study(train_images, train_labels, train_images, train_labels, synthetic_images, synthetic_labels,
                  ["h", "v"], seeds=1, epochs=1, progress=False, arms=["real", "real+augmentation+synthetic"])
    call = next(c for c in recorded if c["description"].startswith("real+augmentation+synthetic"))
    assert call["images"].shape[0] == 16 and call["augment"].all()


def test_balanced_arm_fills_the_minority_classes_with_synthetic_samples_up_to_the_majority(recorded):
    images, labels = bars(24, seed=0)
    keep = np.concatenate([np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)[:4]])  # 12 h, 4 v
    synthetic_images, synthetic_labels = bars(20, seed=2)  # 10 h, 10 v
    result = utility_study(images[keep], labels[keep], images, labels, synthetic_images, synthetic_labels,
                           ["h", "v"], seeds=2, epochs=1, progress=False, arms=["real", BALANCED_ARM])
    assert result["counts"][BALANCED_ARM] == {"real": 16, "synthetic": 8}
    assert result["balanced"] == {"per_class": {"h": 0, "v": 8}, "target": 12}
    calls = [c for c in recorded if c["description"].startswith(BALANCED_ARM)]
    assert len(calls) == 2
    for call in calls:
        assert np.bincount(call["labels"]).tolist() == [12, 12] and call["augment"].all()
        assert torch.equal(call["images"][:16], images[keep])
    # the synthetic fill is drawn per seed from the synthetic samples of the minority class
    fills = [c["images"][16:] for c in calls]
    v_synthetic = synthetic_images[torch.as_tensor(synthetic_labels == 1)]
    for fill in fills:
        assert all(any(torch.equal(f, s) for s in v_synthetic) for f in fill)
    assert not torch.equal(fills[0], fills[1])
    assert set(result["paired_difference"]) == {BALANCED_ARM}
    assert result["notes"] == []


def test_balanced_arm_on_balanced_data_is_real_augmentation_and_says_so():
    train_images, train_labels = bars(12, seed=0)
    synthetic_images, synthetic_labels = bars(12, seed=2)
    result = utility_study(train_images, train_labels, train_images, train_labels, synthetic_images, synthetic_labels,
                           ["h", "v"], seeds=1, epochs=1, progress=False,
                           arms=["real", "real+augmentation", BALANCED_ARM])
    assert result["counts"][BALANCED_ARM] == {"real": 12, "synthetic": 0}
    assert result["arms"][BALANCED_ARM] == result["arms"]["real+augmentation"]
    assert any(f"{BALANCED_ARM} is real+augmentation" in note for note in result["notes"])


def test_balanced_arm_with_too_few_synthetic_samples_of_a_class_says_so(recorded):
    images, labels = bars(24, seed=0)
    keep = np.concatenate([np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)[:4]])
    synthetic_images, synthetic_labels = bars(6, seed=2)  # 3 v
    result = utility_study(images[keep], labels[keep], images, labels, synthetic_images, synthetic_labels,
                           ["h", "v"], seeds=1, epochs=1, progress=False, arms=["real", BALANCED_ARM])
    assert result["counts"][BALANCED_ARM]["synthetic"] == 3
    assert any("balancing" in note and "v" in note and "3 of 8" in note for note in result["notes"])


def test_pretraining_arm_pretrains_on_synthetic_then_fine_tunes_on_real_with_the_same_total_steps(recorded):
    train_images, train_labels = bars(40, seed=0)
    synthetic_images, synthetic_labels = bars(60, seed=2)
    result = utility_study(train_images, train_labels, train_images[:8], train_labels[:8], synthetic_images,
                           synthetic_labels, ["h", "v"], seeds=1, epochs=3, progress=False,
                           arms=["real", PRETRAINED_ARM])
    assert result["steps"] == {"real": 6, PRETRAINED_ARM: 6}
    pretrain, finetune = [c for c in recorded if c["description"].startswith(PRETRAINED_ARM)]
    assert pretrain["taken"] == 3 and finetune["taken"] == 3
    assert pretrain["images"].shape[0] == 40 and pretrain["initial"] is None and pretrain["augment"].all()
    assert not any(torch.equal(pretrain["images"][0], image) for image in train_images)
    assert torch.equal(finetune["images"], train_images) and finetune["augment"].all()
    assert finetune["initial"] is pretrain["network"]
    assert result["counts"][PRETRAINED_ARM] == {"real": 40, "synthetic": 40}


def test_train_classifier_starts_from_the_initial_network():
    images, labels = bars(16, seed=0)
    first = train_classifier(images, labels, 2, seed=0, steps=2, channels=SMALL)
    untouched = train_classifier(images, labels, 2, seed=1, steps=1, lr=0.0, weight_decay=0.0, channels=SMALL,
                                 initial=first)
    fresh = train_classifier(images, labels, 2, seed=1, steps=1, lr=0.0, weight_decay=0.0, channels=SMALL)
    weights = [dict(n.named_parameters()) for n in (first, untouched, fresh)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])


def test_train_classifier_takes_exactly_the_steps_asked_across_a_partial_epoch(recorded):
    images, labels = bars(40, seed=0)  # 2 batches per epoch
    network = utility_module.train_classifier(images, labels, 2, seed=0, steps=5, channels=SMALL)
    assert recorded[0]["taken"] == 5 and len(network.history) == 3


def test_selection_keeps_the_samples_a_real_trained_classifier_assigns_to_their_own_class(recorded):
    train_images, train_labels = bars(48, seed=0)
    test_a, labels_a = bars(8, seed=1)
    test_b, labels_b = bars(8, seed=5)
    synthetic_images, synthetic_labels = bars(24, seed=2)
    for images, labels in ((train_images, train_labels), (synthetic_images, synthetic_labels)):
        images[torch.as_tensor(labels == 1)] += 0.8  # trivially separable by brightness too
    wrong = np.arange(24) % 3 == 0  # 8 samples made with the other class's label
    synthetic_labels = np.where(wrong, 1 - synthetic_labels, synthetic_labels)
    options = {"seeds": 1, "steps": 20, "progress": False, "arms": ["real", "synthetic"], "select_confidence": 0.8}
    first = utility_study(train_images, train_labels, test_a, labels_a, synthetic_images, synthetic_labels,
                          ["h", "v"], **options)
    selection = first["selection"]
    selector = next(c for c in recorded if c["description"].startswith("selection"))
    assert torch.equal(selector["images"], train_images) and np.array_equal(selector["labels"], train_labels)
    kept = np.asarray(selection["keep"])
    assert selection["threshold"] == 0.8 and kept.sum() == selection["kept"]
    assert selection["kept_per_class"] == {"h": int(kept[synthetic_labels == 0].sum()),
                                           "v": int(kept[synthetic_labels == 1].sum())}
    assert selection["available_per_class"] == {"h": 12, "v": 12}
    assert kept[wrong].sum() <= 1 and kept[~wrong].sum() >= 12
    assert first["counts"]["synthetic"]["synthetic"] == int(kept.sum())
    synthetic_call = next(c for c in recorded if c["description"].startswith("synthetic"))
    kept_images = synthetic_images[torch.as_tensor(kept)]
    assert all(any(torch.equal(x, k) for k in kept_images) for x in synthetic_call["images"])
    # another test split changes nothing in the selection (the selector never sees test images)
    second = utility_study(train_images, train_labels, test_b, labels_b, synthetic_images, synthetic_labels,
                           ["h", "v"], **options)
    assert second["selection"]["keep"] == selection["keep"]
    assert second["selection"]["probabilities"] == pytest.approx(selection["probabilities"])


def test_paired_differences_against_real_augmentation_and_the_methods_text():
    train_images, train_labels = bars(12, seed=0)
    synthetic_images, synthetic_labels = bars(12, seed=2)
    result = utility_study(train_images, train_labels, train_images, train_labels, synthetic_images, synthetic_labels,
                           ["h", "v"], seeds=2, epochs=1, progress=False,
                           arms=["real", "real+augmentation", "real+augmentation+synthetic", BALANCED_ARM])
    against = result["paired_difference_augmentation"]
    assert set(against) == {"real+augmentation+synthetic", BALANCED_ARM}
    for arm, per_metric in against.items():
        values = (np.array(result["arms"][arm]["accuracy"]["values"])
                  - np.array(result["arms"]["real+augmentation"]["accuracy"]["values"]))
        assert per_metric["accuracy"]["values"] == pytest.approx(values.tolist())
    text = utility_methods(result, "the test split")
    assert "the synthetic ones too" in text and "same 1 optimiser steps" in text
    assert "up to the real majority count" in text and "pre-trained" not in text
    assert "against `real+augmentation`" in text
