"""Each GAN family, trained briefly on two-class 16 x 16 phantoms, moves its samples measurably toward the real data.

Statistics (intensities in [0, 1]): the mean absolute difference between the average sample and the average real image,
and the mean intensity of the lesion region (class 1 phantoms carry a bright lesion there). For the conditional
families, class-1 samples must have a brighter lesion region than class-0 samples, as the real classes do (gap ~0.3).
Step counts and learning rates are chosen so that every case takes seconds on one CPU thread; the Wasserstein
families use 2 critic steps instead of 5 for the same reason.
"""

from __future__ import annotations

import pytest
import torch

from medvol.networks.factory import build
from tests.objectives.gan_training import (
    IMAGE_SIZE,
    SMALL_NETWORKS,
    lesion_mean,
    mean_image_distance,
    phantom_training_set,
    sample,
    train_gan,
)

CASES = [
    ("gan", 300, {"lr": 1e-3}),
    ("dcgan", 300, {}),
    ("cgan", 300, {}),
    ("wgan", 200, {"lr": 2e-4, "critic_steps": 2}),
    ("wgan_gp", 200, {"lr": 5e-4, "critic_steps": 2}),
    ("acwgan_gp", 200, {"lr": 5e-4, "critic_steps": 2}),
]


def class_balanced_samples(generator: torch.nn.Module, n: int) -> torch.Tensor:
    if not generator.num_classes:
        return sample(generator, n)
    return torch.cat([sample(generator, n // 2, label=0), sample(generator, n // 2, label=1)])


@pytest.mark.slow
@pytest.mark.parametrize("family,steps,settings", CASES)
def test_gan_moves_samples_toward_real_phantoms(family, steps, settings):
    torch.manual_seed(0)
    num_classes = 2 if family in ("cgan", "acwgan_gp") else 0
    untrained = build(family, 2, IMAGE_SIZE, num_classes=num_classes, **SMALL_NETWORKS[family])["generator"]
    before = class_balanced_samples(untrained, 256)

    generator, real, labels = train_gan(family, steps, seed=0, batch_size=16, objective_overrides=settings)
    after = class_balanced_samples(generator, 256)

    distance_before, distance_after = mean_image_distance(before, real), mean_image_distance(after, real)
    assert distance_after < 0.3 * distance_before, (distance_before, distance_after)
    lesion_real = float(lesion_mean(real).mean())
    lesion_before, lesion_after = float(lesion_mean(before).mean()), float(lesion_mean(after).mean())
    assert abs(lesion_after - lesion_real) < 0.5 * abs(lesion_before - lesion_real), (lesion_before, lesion_after)
    assert float(after.std(dim=0).mean()) > 0.02  # not one image for every noise vector
    if num_classes:
        real_gap = float(lesion_mean(real[labels == 1]).mean() - lesion_mean(real[labels == 0]).mean())
        sample_gap = float(lesion_mean(sample(generator, 128, 1)).mean() - lesion_mean(sample(generator, 128, 0)).mean())
        assert sample_gap > 0.5 * real_gap > 0.1, (sample_gap, real_gap)
