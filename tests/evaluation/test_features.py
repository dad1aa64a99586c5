"""The classifier recipe and the feature extractor: learning, determinism, caching, user checkpoints, bad files."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from medvol.errors import MedvolInputError
from medvol.evaluation import features as features_module
from medvol.evaluation.classifier import predict_probabilities, recipe_epochs, recompute_batch_norm, train_classifier
from medvol.evaluation.features import build_feature_extractor, load_feature_extractor, save_checkpoint
from medvol.networks.classifiers import ResNetClassifier

SMALL = (4, 8, 16)


def brightness_toy(count: int, seed: int, spatial_dims: int = 2, size: int = 16):
    """Two classes that differ only in mean brightness (-0.6 vs +0.2, noise sd 0.2)."""
    generator = torch.Generator().manual_seed(seed)
    labels = np.arange(count) % 2
    images = torch.randn(count, 1, *(size,) * spatial_dims, generator=generator) * 0.2 - 0.6
    images[torch.as_tensor(labels == 1)] += 0.8
    return images.clamp(-1, 1), labels


def test_learns_a_separable_toy_problem():
    images, labels = brightness_toy(64, seed=0)
    test_images, test_labels = brightness_toy(100, seed=1)
    classifier = train_classifier(images, labels, 2, seed=0, epochs=3, channels=SMALL)
    accuracy = np.mean(predict_probabilities(classifier, test_images).argmax(1) == test_labels)
    assert accuracy > 0.9
    assert not classifier.training
    assert [h["epoch"] for h in classifier.history] == [1, 2, 3]
    assert classifier.history[-1]["lr"] < classifier.history[0]["lr"]  # cosine schedule


def test_same_seed_same_network_and_global_random_state_untouched():
    images, labels = brightness_toy(24, seed=0)
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    first = train_classifier(images, labels, 2, seed=5, epochs=2, channels=SMALL, augment=True)
    assert torch.equal(torch.rand(3), expected_draw)
    second = train_classifier(images, labels, 2, seed=5, epochs=2, channels=SMALL, augment=True)
    other = train_classifier(images, labels, 2, seed=6, epochs=2, channels=SMALL, augment=True)
    for key, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[key]), key
    assert not all(torch.equal(v, other.state_dict()[k]) for k, v in first.state_dict().items())
    assert first.history == second.history


def test_augmentation_changes_training_and_mask_selects_samples():
    images, labels = brightness_toy(16, seed=0)
    plain = train_classifier(images, labels, 2, seed=0, epochs=1, channels=SMALL)
    none_masked = train_classifier(images, labels, 2, seed=0, epochs=1, channels=SMALL, augment=np.zeros(16, bool))
    augmented = train_classifier(images, labels, 2, seed=0, epochs=1, channels=SMALL, augment=True)
    weight = "stem.0.weight"
    assert torch.equal(plain.state_dict()[weight], none_masked.state_dict()[weight])
    assert not torch.equal(plain.state_dict()[weight], augmented.state_dict()[weight])


def test_trains_on_volumes():
    images, labels = brightness_toy(8, seed=0, spatial_dims=3)
    classifier = train_classifier(images, labels, 2, seed=0, epochs=1, channels=SMALL, augment=True)
    assert classifier.spatial_dims == 3
    assert predict_probabilities(classifier, images).shape == (8, 2)


def test_monitor_records_curves_without_changing_the_network():
    images, labels = brightness_toy(24, seed=0)
    test_images, test_labels = brightness_toy(20, seed=1)
    plain = train_classifier(images, labels, 2, seed=0, epochs=2, channels=SMALL)
    monitored = train_classifier(
        images, labels, 2, seed=0, epochs=2, channels=SMALL, monitor=(test_images, test_labels)
    )
    assert all(0.0 <= h["monitor_accuracy"] <= 1.0 for h in monitored.history)
    for key, value in plain.state_dict().items():
        assert torch.allclose(value.float(), monitored.state_dict()[key].float()), key


def test_recompute_batch_norm_gives_the_population_statistics():
    model = ResNetClassifier(2, 2, channels=(4,))
    images = torch.randn(40, 1, 8, 8) * 3 + 2
    recompute_batch_norm(model, images, batch_size=40)
    stem_norm = model.stem[1]
    with torch.no_grad():
        stem_output = model.stem[0](images)
    assert torch.allclose(stem_norm.running_mean, stem_output.mean((0, 2, 3)), atol=1e-4)
    assert stem_norm.momentum == 0.1


def test_unlabelled_and_out_of_range_labels_are_user_errors():
    images, labels = brightness_toy(8, seed=0)
    with pytest.raises(MedvolInputError, match="unlabelled"):
        train_classifier(images, np.full(8, -1), 2, epochs=1)
    with pytest.raises(MedvolInputError, match="label 2"):
        train_classifier(images, np.full(8, 2), 2, epochs=1)


def test_feature_extractor_is_cached_and_reused(tmp_path, monkeypatch):
    images, labels = brightness_toy(24, seed=0)
    extractor = build_feature_extractor(images, labels, 2, tmp_path, seed=0, epochs=1)
    assert extractor.kind == "classifier" and extractor.spatial_dims == 2
    assert extractor.classifier is not None
    features = extractor(images)
    assert features.shape == (24, 64) and features.dtype == np.float64
    info = json.loads((tmp_path / "feature_extractor.json").read_text())
    assert info["epochs"] == 1 and info["kind"] == "classifier" and 0.0 <= info["training_accuracy"] <= 1.0
    assert extractor.info["reused_cache"] is False

    def no_training(*args, **kwargs):
        raise AssertionError("trained again although the cache matches")

    monkeypatch.setattr(features_module, "train_classifier", no_training)
    again = build_feature_extractor(images, labels, 2, tmp_path, seed=0, epochs=1)
    assert again.info["reused_cache"] is True
    np.testing.assert_array_equal(again(images), features)
    with pytest.raises(AssertionError, match="trained again"):  # other labels: a different hash
        build_feature_extractor(images, 1 - labels, 2, tmp_path, seed=0, epochs=1)


def test_unlabelled_data_gets_an_autoencoder(tmp_path):
    images, _ = brightness_toy(12, seed=0, size=12)  # 12 is padded to 16 for the autoencoder
    extractor = build_feature_extractor(images, np.full(12, -1), 0, tmp_path, epochs=1)
    assert extractor.kind == "autoencoder" and extractor.classifier is None
    assert extractor(images).shape == (12, 64)
    assert "autoencoder" in extractor.description
    again = build_feature_extractor(images, None, 0, tmp_path, epochs=1)
    assert again.info["reused_cache"] is True
    np.testing.assert_allclose(again(images), extractor(images))


class _Spatial(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_user_torchscript_and_export_models(tmp_path):
    images, _ = brightness_toy(6, seed=0)
    model = _Spatial().eval()
    script_path = tmp_path / "user.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.trace(model, images[:2]).save(str(script_path))
    extractor = load_feature_extractor(script_path, images)
    assert extractor.kind == "user"
    with torch.no_grad():
        expected = model(images).mean((2, 3)).double().numpy()
    np.testing.assert_allclose(extractor(images), expected, rtol=1e-5, atol=1e-6)

    export_path = tmp_path / "user.pt2"
    batch = torch.export.Dim("batch", min=2)
    torch.export.save(torch.export.export(model, (images[:2],), dynamic_shapes=({0: batch},)), export_path)
    exported = build_feature_extractor(images, None, 0, tmp_path / "out", features_path=export_path)
    np.testing.assert_allclose(exported(images), expected, rtol=1e-5, atol=1e-6)


def test_medvol_classifier_checkpoint_as_features(tmp_path):
    images, labels = brightness_toy(8, seed=0)
    classifier = train_classifier(images, labels, 2, epochs=1, channels=SMALL)
    path = save_checkpoint(classifier, tmp_path / "classifier.pt")
    extractor = build_feature_extractor(images, labels, 2, tmp_path / "out", features_path=path)
    assert extractor.kind == "classifier"
    with torch.no_grad():
        np.testing.assert_allclose(extractor(images), classifier.features(images).double().numpy(), rtol=1e-6)
    volumes, _ = brightness_toy(4, seed=0, spatial_dims=3)
    with pytest.raises(MedvolInputError, match="2D network but the data is 3D"):
        build_feature_extractor(volumes, None, 0, tmp_path / "out", features_path=path)


def test_bad_feature_files_are_one_line_user_errors(tmp_path):
    images, _ = brightness_toy(4, seed=0)
    with pytest.raises(MedvolInputError, match="does not exist"):
        build_feature_extractor(images, None, 0, tmp_path, features_path=tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a model at all")
    with pytest.raises(MedvolInputError, match="not a readable checkpoint") as raised:
        build_feature_extractor(images, None, 0, tmp_path, features_path=garbage)
    assert str(garbage) in str(raised.value) and "\n" not in str(raised.value)
    plain_dict = tmp_path / "state.pt"
    torch.save({"weight": torch.zeros(2)}, plain_dict)
    with pytest.raises(MedvolInputError, match="not a medvol feature checkpoint"):
        build_feature_extractor(images, None, 0, tmp_path, features_path=plain_dict)
    script_path = tmp_path / "user2d.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.trace(_Spatial().eval(), images[:2]).save(str(script_path))
    volumes, _ = brightness_toy(2, seed=0, spatial_dims=3)
    with pytest.raises(MedvolInputError, match="does not take this data's 3D images") as raised:
        build_feature_extractor(volumes, None, 0, tmp_path, features_path=script_path)
    assert "\n" not in str(raised.value)


def test_training_runs_on_one_thread_and_restores_the_setting(monkeypatch):
    images, labels = brightness_toy(8, seed=0)
    seen = []
    original = ResNetClassifier.forward

    def recording_forward(self, x):
        seen.append(torch.get_num_threads())
        return original(self, x)

    monkeypatch.setattr(ResNetClassifier, "forward", recording_forward)
    torch.set_num_threads(2)
    train_classifier(images, labels, 2, epochs=1, channels=SMALL)
    assert set(seen) == {1}
    assert torch.get_num_threads() == 2
    seen.clear()
    train_classifier(images, labels, 2, epochs=1, channels=SMALL, threads=None)
    assert set(seen) == {2}


def test_default_recipe_trains_small_sets_for_at_least_500_steps():
    assert recipe_epochs(1800) == 10  # 57 steps per epoch: 10 epochs are 570 steps
    assert recipe_epochs(180) == 84  # 6 steps per epoch
    assert recipe_epochs(360) == 42  # real + synthetic at ratio 1: as many steps as the real arm
    assert recipe_epochs(180, epochs=3) == 3  # explicit epochs are honoured
