"""The mode-seeking term (MSGAN) against known answers, and its place in the conditional GAN's generator loss."""

from __future__ import annotations

import pytest
import torch

from medvol.objectives import NonSaturatingGANLoss, build_objective
from medvol.objectives.adversarial import mode_seeking_term


def test_pairs_are_consecutive_samples_of_one_class():
    latents = torch.tensor([[0.0], [5.0], [2.0], [9.0]])
    images = torch.tensor([0.0, 10.0, 1.0, 30.0]).reshape(4, 1, 1, 1)
    labels = torch.tensor([0, 1, 0, 1])
    # class 0 pairs samples 0 and 2 (|1 - 0| / |2 - 0| ), class 1 samples 1 and 3 (20 / 4): means 10.5 / 3
    term, ratio = mode_seeking_term(images, latents, labels)
    assert ratio.item() == pytest.approx(10.5 / 3)
    assert term.item() == pytest.approx(1 / (10.5 / 3 + 1e-5))
    # unconditional: consecutive samples 0-1, 1-2, 2-3
    _, ratio = mode_seeking_term(images, latents)
    assert ratio.item() == pytest.approx((10 + 9 + 29) / (5 + 3 + 7))


def test_identical_images_give_the_largest_term_and_no_pair_gives_zero():
    latents = torch.randn(4, 3)
    same = torch.ones(4, 1, 2, 2)
    term, ratio = mode_seeking_term(same, latents, torch.tensor([0, 0, 1, 1]))
    assert ratio.item() == 0 and term.item() == pytest.approx(1e5)
    term, ratio = mode_seeking_term(same[:2], latents[:2], torch.tensor([0, 1]))
    assert term.item() == 0 and ratio.item() == 0


def test_generator_loss_adds_the_weighted_term_only_with_latents():
    critic = lambda images, labels=None: torch.zeros(images.shape[0])  # noqa: E731
    latents = torch.tensor([[0.0], [1.0]])
    fake = torch.tensor([0.0, 0.5]).reshape(2, 1, 1, 1).requires_grad_(True)
    plain = NonSaturatingGANLoss().generator_loss(critic, fake, latents=latents)
    weighted = NonSaturatingGANLoss(mode_seeking_weight=2.0).generator_loss(critic, fake, latents=latents)
    without_latents = NonSaturatingGANLoss(mode_seeking_weight=2.0).generator_loss(critic, fake)
    assert weighted["loss"].item() == pytest.approx(plain["loss"].item() + 2.0 / (0.5 + 1e-5))
    assert weighted["mode_seeking_ratio"].item() == pytest.approx(0.5)
    assert without_latents["loss"].item() == pytest.approx(plain["loss"].item())
    weighted["loss"].backward()
    assert fake.grad[1].item() < 0 < fake.grad[0].item()  # pushes the two images apart
    with pytest.raises(ValueError, match="mode_seeking_weight"):
        NonSaturatingGANLoss(mode_seeking_weight=-1.0)


def test_conditional_gan_uses_mode_seeking_by_default():
    assert build_objective("cgan")[0].mode_seeking_weight == 1.0
    # acwgan_gp returned one image per class without it (MedNIST, docs/results.md, issue J)
    assert build_objective("acwgan_gp")[0].mode_seeking_weight == 1.0
    assert build_objective("acwgan_gp", loss="hinge")[0].mode_seeking_weight == 1.0
    assert build_objective("cgan", mode_seeking_weight=0)[0].mode_seeking_weight == 0.0
    assert build_objective("dcgan")[0].mode_seeking_weight == 0.0
