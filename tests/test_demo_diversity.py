"""No mode collapse: the per-class diversity check of training, and the demo's conditional GAN, whose samples of one
class must differ from each other about as much as the real images of that class do (docs/results.md)."""

from __future__ import annotations

import logging

import torch
from torch import nn

from medvol.engines import AdversarialHealth, AdversarialTrainer
from tests.engines.toys import ToyCritic, ToyWassersteinGP, make_loader


def test_class_diversity_reports_the_class_that_collapsed():
    generator = torch.Generator().manual_seed(0)
    real = torch.rand(8, 1, 8, 8, generator=generator) * 2 - 1
    real_labels = torch.tensor([0, 1] * 4)
    varied = torch.rand(4, 1, 8, 8, generator=generator) * 2 - 1
    identical = varied[:1].repeat(4, 1, 1, 1)
    fakes = torch.cat([identical, varied])
    fake_labels = torch.tensor([0] * 4 + [1] * 4)
    fake_diversity, real_diversity = AdversarialHealth.class_diversity(fakes, fake_labels, real, real_labels)
    assert fake_diversity == 0.0
    assert abs(real_diversity - AdversarialHealth.diversity(real[real_labels == 0])) < 1e-12
    # mixing the classes hides it: the whole batch still varies
    assert AdversarialHealth.diversity(fakes) > 0.5 * AdversarialHealth.diversity(real)
    # a class with a single image on one side gives no evidence
    assert all(v != v for v in AdversarialHealth.class_diversity(fakes[:1], fake_labels[:1], real, real_labels))


def test_no_evidence_keeps_the_streak_and_the_warning_comes_once(caplog):
    health = AdversarialHealth(patience=3)
    with caplog.at_level(logging.WARNING, logger="medvol.engines.guards"):
        health.update(1, accuracy=0.5, fake_diversity=0.0, real_diversity=0.3)
        health.update(2, accuracy=0.5, fake_diversity=float("nan"), real_diversity=float("nan"))
        health.update(3, accuracy=0.5, fake_diversity=0.01, real_diversity=0.3)
        raised = health.update(4, accuracy=0.5, fake_diversity=0.02, real_diversity=0.3)
        assert health.update(5, accuracy=0.5, fake_diversity=0.0, real_diversity=0.3) == []
    assert len(raised) == 1 and "near-identical" in raised[0] and "minibatch_std" in raised[0]
    assert caplog.text.count("near-identical") == 1
    # a healthy ratio ends the episode
    health.update(6, accuracy=0.5, fake_diversity=0.25, real_diversity=0.3)
    assert health.collapse_streak == 0


class OneImagePerClass(nn.Module):
    """A conditional generator that ignores its noise: one image per class."""

    def __init__(self, size: int = 8, num_classes: int = 2):
        super().__init__()
        self.latent_size, self.num_classes, self.spatial_dims = 4, num_classes, 2
        self.images = nn.Parameter(torch.randn(num_classes, 1, size, size))
        self.unused = nn.Linear(4, 1)

    def forward(self, z, labels=None):
        return torch.tanh(self.images[labels] + 0 * self.unused(z)[:, :, None, None])


def test_training_warns_when_a_conditional_generator_returns_one_image_per_class(caplog):
    generator = OneImagePerClass()
    critic = ToyCritic(2, 8, num_classes=2)
    trainer = AdversarialTrainer(
        "cpu", make_loader(count=16, batch_size=8), generator, critic, torch.optim.Adam(generator.parameters()),
        torch.optim.Adam(critic.parameters()), ToyWassersteinGP(), critic_steps=1, max_iterations=4, health_interval=1,
        health=AdversarialHealth(patience=3),
    )
    with caplog.at_level(logging.WARNING, logger="medvol.engines.guards"):
        trainer.run()
    assert sum("near-identical" in w for w in trainer.health.warnings) == 1
    assert caplog.text.count("near-identical") == 1
