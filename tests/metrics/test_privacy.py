"""Privacy: exact copies of training images are flagged, independent real images mostly are not."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medvol.errors import MedvolInputError
from medvol.metrics.privacy import nearest_neighbour_privacy
from tests.metrics.test_diversity import load_mednist, smooth_images



def pooled_pixels(images: torch.Tensor) -> np.ndarray:
    """Stand-in features for tests: 4x4-average-pooled pixels (64 values for 32^2, 64 for 16^3)."""
    pool = F.avg_pool2d if images.ndim == 4 else F.avg_pool3d
    return pool(images, 4).flatten(1).double().numpy()


def _run(train, heldout, synthetic, **kwargs):
    return nearest_neighbour_privacy(
        train, pooled_pixels(train), heldout, pooled_pixels(heldout), synthetic, pooled_pixels(synthetic),
        [f"synthetic_{i:03d}.nii.gz" for i in range(len(synthetic))], **kwargs)


@pytest.mark.parametrize("size", [(32, 32), (16, 16, 16)])
def test_copies_are_flagged_with_their_training_neighbour(size):
    images = smooth_images(90, size)
    train, heldout = images[:60], images[60:]
    copies = train[[5, 17, 42]]
    result = _run(train, heldout, copies)
    assert result["flagged_fraction"] == 1.0 and result["flagged_with_ssim_fraction"] == 1.0
    assert result["flagged"] == ["synthetic_000.nii.gz", "synthetic_001.nii.gz", "synthetic_002.nii.gz"]
    assert [n["train_index"] for n in result["nearest"]] == [5, 17, 42]
    assert all(n["feature_distance"] == 0.0 and n["ssim"] == pytest.approx(1.0, abs=1e-5) for n in result["nearest"])
    assert result["threshold"]["feature"] > 0 and result["heldout"]["n"] == 30
    assert result["expected_fraction"] == 0.05


def test_slightly_changed_copies_are_flagged_new_images_are_not():
    images = smooth_images(140, (32, 32))
    train, heldout, new = images[:80], images[80:120], images[120:]
    noise = 0.01 * torch.randn(train[:10].shape, generator=torch.Generator().manual_seed(0))
    result = _run(train, heldout, torch.cat([train[:10] + noise, new]))
    flags = [n["flagged"] for n in result["nearest"]]
    assert all(flags[:10])
    assert sum(flags[10:]) <= 4  # about 5% of new images pass the held-out 5th percentile by construction


@pytest.mark.shared_data
@pytest.mark.parametrize("seed", [0, 1])
def test_mednist_copies_all_flagged_independent_images_mostly_not(shared_data, seed):
    images, _ = load_mednist(shared_data, per_class=150, seed=seed)  # 900 real images, 32^2
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(images)))
    images = images[order]
    train, heldout, independent = images[:500], images[500:700], images[700:]
    result = _run(train, heldout, independent)
    assert result["flagged_fraction"] < 0.15, result["flagged_fraction"]
    copies = _run(train, heldout, train[:50])
    assert copies["flagged_fraction"] == 1.0


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"heldout": slice(0, 1)}, "at least 2 held-out images, got 1"),
        ({"paths": 2}, "2 synthetic paths for 3 synthetic images"),
        ({"features": slice(0, 2)}, "3 synthetic images but 2 feature rows"),
        ({"percentile": 0.0}, r"percentile must be in \(0, 100\)"),
        ({"synthetic_size": 16}, "differ in size"),
    ],
)
def test_bad_input_is_one_clear_error(kwargs, message):
    images = smooth_images(12, (32, 32))
    train, heldout, synthetic = images[:6], images[6:9][kwargs.get("heldout", slice(None))], images[9:]
    if "synthetic_size" in kwargs:
        synthetic = smooth_images(3, (16, 16))
    features = pooled_pixels(synthetic)[kwargs.get("features", slice(None))]
    paths = [f"s{i}" for i in range(kwargs.get("paths", 3))]
    with pytest.raises(MedvolInputError, match=message):
        nearest_neighbour_privacy(train, pooled_pixels(train), heldout, pooled_pixels(heldout), synthetic,
                                  features, paths, percentile=kwargs.get("percentile", 5.0))
