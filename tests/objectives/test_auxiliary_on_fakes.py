"""`auxiliary_on_fakes=False`: the critic's class head learns from real images only; the generator keeps its term."""

from __future__ import annotations

import math

import pytest
import torch

from medvol.networks import ResidualCritic
from medvol.objectives import WassersteinGradientPenalty, build_objective


class ScoresAndLogits:
    """Score = first voxel; class logits = the first three voxels (so real and fake logits can differ)."""

    def __call__(self, x, labels=None):
        flat = x.flatten(1)
        return flat[:, 0], flat[:, :3]


def test_critic_class_term_on_real_images_only():
    real, fake = torch.zeros(2, 1, 2, 2), torch.zeros(2, 1, 2, 2)
    fake[:, 0, 0, 1] = 5.0  # generated images: class 1 by a margin, but conditioned on class 0
    labels = torch.tensor([0, 0])
    both = WassersteinGradientPenalty(penalty_weight=0.0).discriminator_loss(ScoresAndLogits(), real, fake, labels)
    real_only = WassersteinGradientPenalty(penalty_weight=0.0, auxiliary_on_fakes=False).discriminator_loss(
        ScoresAndLogits(), real, fake, labels)
    fake_ce = -math.log(1.0 / (2.0 + math.exp(5.0)))  # CE of logits (0, 5, 0) for class 0
    assert float(both["aux_loss"]) == pytest.approx(math.log(3) + fake_ce, rel=1e-5)
    assert float(real_only["aux_loss"]) == pytest.approx(math.log(3), rel=1e-5)
    generator = WassersteinGradientPenalty(auxiliary_on_fakes=False).generator_loss(ScoresAndLogits(), fake, labels)
    assert float(generator["aux_loss"]) == pytest.approx(fake_ce, rel=1e-5)  # the generator's term is unchanged


def _class_head_gradient(auxiliary_on_fakes: bool, fake: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(0)
    critic = ResidualCritic(2, 8, channels=(4,), num_classes=2, projection=False, auxiliary_classifier=True)
    objective, _ = build_objective("acwgan_gp", auxiliary_on_fakes=auxiliary_on_fakes, penalty_weight=0.0)
    real, labels = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 0, 1])
    objective.discriminator_loss(critic, real, fake, labels)["loss"].backward()
    return critic.head.classifier.weight.grad.clone()


def test_class_head_gradient_does_not_depend_on_generated_images():
    fake_a, fake_b = torch.rand(4, 1, 8, 8), torch.rand(4, 1, 8, 8) * 2 - 1
    assert _class_head_gradient(False, fake_a).abs().sum() > 0  # it learns from the real images
    assert torch.allclose(_class_head_gradient(False, fake_a), _class_head_gradient(False, fake_b))
    assert not torch.allclose(_class_head_gradient(True, fake_a), _class_head_gradient(True, fake_b))
