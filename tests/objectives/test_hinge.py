"""Hinge loss against hand-computed values, and `loss=NAME` of build_objective / `medvol train --objective`."""

from __future__ import annotations

import pytest
import torch

from medvol.commands.train import objective_overrides
from medvol.errors import MedvolInputError
from medvol.objectives import HingeLoss, NonSaturatingGANLoss, WassersteinGradientPenalty, build_objective


class ScoresByFirstVoxel:
    """A critic whose score of an image is its first voxel, with uniform class logits when `num_classes`."""

    def __init__(self, num_classes: int = 0) -> None:
        self.num_classes = num_classes

    def __call__(self, x, labels=None):
        score = x.flatten(1)[:, 0]
        return (score, torch.zeros(x.shape[0], self.num_classes)) if self.num_classes else score


def images(scores: list[float]) -> torch.Tensor:
    batch = torch.zeros(len(scores), 1, 4, 4)
    batch[:, 0, 0, 0] = torch.tensor(scores)
    return batch


def test_hinge_values_on_a_toy_input():
    real, fake = images([2.0, 0.5, -1.0]), images([-2.0, 0.3, 1.5])
    d = HingeLoss().discriminator_loss(ScoresByFirstVoxel(), real, fake)
    # real: relu(1 - 2) = 0, relu(1 - 0.5) = 0.5, relu(1 + 1) = 2 -> mean 2.5 / 3
    # fake: relu(1 - 2) = 0, relu(1 + 0.3) = 1.3, relu(1 + 1.5) = 2.5 -> mean 3.8 / 3
    assert float(d["hinge_real"]) == pytest.approx(2.5 / 3)
    assert float(d["hinge_fake"]) == pytest.approx(3.8 / 3)
    assert float(d["loss"]) == pytest.approx(6.3 / 3)
    g = HingeLoss().generator_loss(ScoresByFirstVoxel(), fake)
    assert float(g["loss"]) == pytest.approx(-(-2.0 + 0.3 + 1.5) / 3)  # -E[D(G(z))], no margin


def test_hinge_gradients_vanish_beyond_the_margin():
    real = images([3.0, 0.0]).requires_grad_(True)
    fake = images([-3.0, 0.0]).requires_grad_(True)
    HingeLoss().discriminator_loss(lambda x, labels=None: x.flatten(1)[:, 0] * 1.0, real, fake)["loss"].backward()
    # the detached fake gets no gradient; a real scored 3 > 1 none either, a real at 0 gets -1/2
    assert real.grad[:, 0, 0, 0].tolist() == [0.0, -0.5]


def test_loss_option_swaps_the_adversarial_loss_and_keeps_the_family_defaults():
    objective, settings = build_objective("cgan", loss="hinge")
    assert type(objective) is HingeLoss and objective.mode_seeking_weight == 1.0  # the cgan default stays
    assert settings == {"critic_steps": 1, "optimizer": {"name": "Adam", "lr": 2e-4, "betas": (0.5, 0.999)}}
    objective, settings = build_objective("acwgan_gp", loss="hinge", critic_steps=2, auxiliary_weight=0.5)
    assert type(objective) is HingeLoss and objective.auxiliary_weight == 0.5 and settings["critic_steps"] == 2
    assert type(build_objective("cgan", loss="wgan_gp")[0]) is WassersteinGradientPenalty
    assert type(build_objective("cgan")[0]) is NonSaturatingGANLoss
    with pytest.raises(ValueError, match="loss must be one of"):
        build_objective("cgan", loss="hinged")
    with pytest.raises(ValueError, match="autoencoder"):
        build_objective("cae", loss="hinge")
    with pytest.raises(TypeError):
        build_objective("cgan", loss="hinge", label_smoothing=0.1)  # a BCE option the hinge loss does not take


def test_train_objective_option_reads_loss_and_refuses_an_unknown_one_in_one_line():
    assert objective_overrides(["loss=hinge"], {}, "cgan") == {"loss": "hinge"}
    with pytest.raises(MedvolInputError, match="loss must be one of bce, hinge"):
        objective_overrides(["loss=squared"], {}, "cgan")
