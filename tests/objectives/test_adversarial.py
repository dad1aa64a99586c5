"""Adversarial objectives against known answers: gradient penalty of a linear critic, clipping, BCE, Wasserstein, AC term."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from medvol.networks import DCGANDiscriminator, ResidualCritic
from medvol.objectives import (
    NonSaturatingGANLoss,
    WassersteinGradientPenalty,
    WassersteinWeightClipping,
    build_objective,
    build_optimizer,
    gradient_penalty,
)


class LinearCritic(nn.Module):
    """f(x) = <w, x> + b: its gradient is w everywhere, so the penalty is lambda * (||w|| - 1)^2 exactly."""

    def __init__(self, shape: tuple[int, ...], weight_norm: float) -> None:
        super().__init__()
        weight = torch.randn(shape)
        self.weight = nn.Parameter(weight * weight_norm / weight.norm())
        self.bias = nn.Parameter(torch.tensor(0.5))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return (x * self.weight).flatten(1).sum(dim=1) + self.bias


class ConstantCritic(nn.Module):
    """Scores every real image `real_score` and every other image `fake_score` (real images are all ones here)."""

    def __init__(self, real_score: float, fake_score: float, num_classes: int = 0) -> None:
        super().__init__()
        self.real_score, self.fake_score = real_score, fake_score
        self.num_classes = num_classes

    def forward(self, x, labels=None):
        is_real = (x.flatten(1) == 1).all(dim=1)
        score = torch.where(is_real, torch.tensor(self.real_score), torch.tensor(self.fake_score))
        if self.num_classes:
            return score, torch.zeros(x.shape[0], self.num_classes)  # uniform class logits: CE = log(num_classes)
        return score


def value(tensor: torch.Tensor) -> float:
    return float(tensor.detach())


SHAPES = [(1, 8, 8), (1, 4, 6, 5), (2, 3, 3, 3)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("weight_norm", [0.25, 1.0, 3.0])
def test_gradient_penalty_of_a_linear_critic(shape, weight_norm):
    torch.manual_seed(0)
    critic = LinearCritic(shape, weight_norm)
    real, fake = torch.rand(4, *shape), torch.rand(4, *shape)
    penalty = gradient_penalty(critic, real, fake)
    assert value(penalty) == pytest.approx((weight_norm - 1.0) ** 2, rel=1e-4, abs=1e-6)
    objective = WassersteinGradientPenalty(penalty_weight=10.0)
    losses = objective.discriminator_loss(critic, real, fake)
    assert value(losses["gradient_penalty"]) == pytest.approx((weight_norm - 1.0) ** 2, rel=1e-4, abs=1e-6)
    wasserstein = critic(real).mean() - critic(fake).mean()
    assert value(losses["wasserstein"]) == pytest.approx(value(wasserstein), rel=1e-5, abs=1e-6)
    assert value(losses["loss"]) == pytest.approx(-value(wasserstein) + 10.0 * (weight_norm - 1.0) ** 2, rel=1e-4, abs=1e-5)


def test_gradient_penalty_is_differentiable_and_float32_under_autocast():
    torch.manual_seed(0)
    critic = LinearCritic((1, 6, 6), 3.0)
    real, fake = torch.rand(4, 1, 6, 6), torch.rand(4, 1, 6, 6)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        penalty = gradient_penalty(critic, real.bfloat16(), fake.bfloat16())
    assert penalty.dtype == torch.float32
    assert value(penalty) == pytest.approx(4.0, rel=1e-4)
    penalty.backward()  # create_graph=True: d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||
    expected = 2.0 * (3.0 - 1.0) * critic.weight / 3.0
    torch.testing.assert_close(critic.weight.grad, expected.detach(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_gradient_penalty_interpolates_per_sample(spatial_dims):
    """A critic |x|^2 / 2 has gradient x_hat; per-sample alphas make the gradient norms differ across the batch."""
    recorded = {}

    def critic(x, labels=None):
        recorded["x_hat"] = x.detach()
        return 0.5 * x.flatten(1).pow(2).sum(dim=1)

    real = torch.ones(6, 1, *(4,) * spatial_dims)
    fake = torch.zeros_like(real)
    gradient_penalty(critic, real, fake)
    alphas = recorded["x_hat"].flatten(1)
    assert torch.allclose(alphas, alphas[:, :1].expand_as(alphas))  # one alpha per sample, broadcast over voxels
    assert alphas[:, 0].unique().numel() == 6


def test_gradient_penalty_refuses_batch_norm_critics():
    critic = DCGANDiscriminator(2, 16, channels=(4, 8), norm="batch")
    with pytest.raises(ValueError, match="batch norm.*norm=None, 'layer' or 'instance'"):
        WassersteinGradientPenalty().discriminator_loss(critic, torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16))


@pytest.mark.parametrize("critic", [DCGANDiscriminator(2, 16, channels=(8, 16)), ResidualCritic(3, 8, channels=(4,))])
def test_weight_clipping_keeps_every_critic_weight_within_bounds(critic):
    torch.manual_seed(0)
    objective, settings = build_objective("wgan", lr=0.1)  # a large step pushes weights past c
    optimizer = build_optimizer(critic.parameters(), settings["optimizer"])
    shape = (4, 1, *critic.image_size)
    losses = objective.discriminator_loss(critic, torch.rand(shape), torch.rand(shape))
    optimizer.zero_grad()
    losses["loss"].backward()
    optimizer.step()
    assert max(value(p.abs().max()) for p in critic.parameters()) > 0.01
    objective.after_critic_step(critic)
    assert max(value(p.abs().max()) for p in critic.parameters()) <= 0.01


def bce(logit: float, target: float) -> float:
    p = 1.0 / (1.0 + math.exp(-logit))
    return -(target * math.log(p) + (1.0 - target) * math.log(1.0 - p))


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_non_saturating_bce_values(smoothing):
    critic = ConstantCritic(real_score=2.0, fake_score=-1.0)
    real, fake = torch.ones(4, 1, 4, 4), torch.zeros(4, 1, 4, 4)
    objective = NonSaturatingGANLoss(label_smoothing=smoothing)
    d = objective.discriminator_loss(critic, real, fake)
    assert value(d["loss"]) == pytest.approx(bce(2.0, 1.0 - smoothing) + bce(-1.0, 0.0), rel=1e-5)
    assert value(d["d_real"]) == pytest.approx(2.0) and value(d["d_fake"]) == pytest.approx(-1.0)
    g = objective.generator_loss(critic, fake)
    assert value(g["loss"]) == pytest.approx(bce(-1.0, 1.0), rel=1e-5)  # -log D(G(z)), not log(1 - D(G(z)))


def test_label_flipping_swaps_targets():
    critic = ConstantCritic(real_score=3.0, fake_score=-3.0)
    real, fake = torch.ones(4000, 1, 2, 2), torch.zeros(4000, 1, 2, 2)
    torch.manual_seed(0)
    flipped = value(NonSaturatingGANLoss(label_flip_probability=0.25).discriminator_loss(critic, real, fake)["loss"])
    expected = 2 * (0.75 * bce(3.0, 1.0) + 0.25 * bce(3.0, 0.0))
    assert flipped == pytest.approx(expected, rel=0.05)
    with pytest.raises(ValueError, match="label_flip_probability"):
        NonSaturatingGANLoss(label_flip_probability=0.7)


def test_wasserstein_values_and_auxiliary_term():
    critic = ConstantCritic(real_score=2.0, fake_score=-1.0, num_classes=3)
    real, fake = torch.ones(4, 1, 4, 4), torch.zeros(4, 1, 4, 4)
    labels = torch.tensor([0, 1, 2, 1])
    objective = WassersteinWeightClipping(auxiliary_weight=0.5)
    d = objective.discriminator_loss(critic, real, fake, labels)
    assert value(d["wasserstein"]) == pytest.approx(3.0)
    assert value(d["aux_loss"]) == pytest.approx(2 * math.log(3))  # CE on real and generated images
    assert value(d["loss"]) == pytest.approx(-3.0 + 0.5 * 2 * math.log(3), rel=1e-5)
    g = objective.generator_loss(critic, fake, labels)
    assert value(g["loss"]) == pytest.approx(1.0 + 0.5 * math.log(3), rel=1e-5)
    no_aux = WassersteinWeightClipping(auxiliary_weight=0.0).discriminator_loss(critic, real, fake, labels)
    assert "aux_loss" not in no_aux and value(no_aux["loss"]) == pytest.approx(-3.0)


def test_auxiliary_term_trains_the_class_head():
    torch.manual_seed(0)
    critic = ResidualCritic(2, 8, channels=(4,), num_classes=2, projection=False, auxiliary_classifier=True)
    objective, _ = build_objective("acwgan_gp")
    real, fake, labels = torch.rand(4, 1, 8, 8), torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 0, 1])
    losses = objective.discriminator_loss(critic, real, fake, labels)
    losses["loss"].backward()
    assert value(critic.head.classifier.weight.grad.abs().sum()) > 0
    assert {"loss", "wasserstein", "gradient_penalty", "aux_loss", "d_real", "d_fake"} <= set(losses)


@pytest.mark.parametrize(
    "family,critic_steps,optimizer",
    [
        ("gan", 1, {"name": "Adam", "lr": 2e-4, "betas": (0.5, 0.999)}),
        ("dcgan", 1, {"name": "Adam", "lr": 2e-4, "betas": (0.5, 0.999)}),
        ("cgan", 1, {"name": "Adam", "lr": 2e-4, "betas": (0.5, 0.999)}),
        ("wgan", 5, {"name": "RMSprop", "lr": 5e-5}),
        ("wgan_gp", 5, {"name": "Adam", "lr": 1e-4, "betas": (0.0, 0.9)}),
        ("acwgan_gp", 5, {"name": "Adam", "lr": 1e-4, "betas": (0.0, 0.9)}),
    ],
)
def test_recommended_settings(family, critic_steps, optimizer):
    objective, settings = build_objective(family)
    assert settings == {"critic_steps": critic_steps, "optimizer": optimizer}
    assert objective.critic_steps == critic_steps
    optimizer_instance = build_optimizer(nn.Linear(2, 2).parameters(), settings["optimizer"])
    assert isinstance(optimizer_instance, getattr(torch.optim, optimizer["name"]))


def test_build_objective_overrides_and_errors():
    objective, settings = build_objective("wgan_gp", penalty_weight=5.0, critic_steps=2, lr=3e-4)
    assert objective.penalty_weight == 5.0 and objective.critic_steps == 2
    assert settings == {"critic_steps": 2, "optimizer": {"name": "Adam", "lr": 3e-4, "betas": (0.0, 0.9)}}
    assert build_objective("wgan", clip_value=0.02)[0].clip_value == 0.02
    with pytest.raises(ValueError, match="unknown model family"):
        build_objective("pix2pix")
    with pytest.raises(TypeError):
        build_objective("dcgan", penalty_weight=10)
    with pytest.raises(ValueError, match="unknown optimizer"):
        build_optimizer(nn.Linear(2, 2).parameters(), {"name": "Adamm", "lr": 1e-3})


def test_switching_the_optimizer_class_drops_the_recommended_class_options():
    _, settings = build_objective("wgan_gp", optimizer={"name": "RMSprop"})
    assert settings["optimizer"] == {"name": "RMSprop", "lr": 1e-4}
    assert isinstance(build_optimizer(nn.Linear(2, 2).parameters(), settings["optimizer"]), torch.optim.RMSprop)
    _, settings = build_objective("wgan", optimizer={"name": "Adam", "betas": (0.5, 0.9)})
    assert settings["optimizer"] == {"name": "Adam", "lr": 5e-5, "betas": (0.5, 0.9)}
    with pytest.raises(ValueError, match="RMSprop does not take betas"):
        build_optimizer(nn.Linear(2, 2).parameters(), {"name": "RMSprop", "lr": 1e-3, "betas": (0.5, 0.9)})
