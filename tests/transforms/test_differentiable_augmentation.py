"""Differentiable critic augmentation: 2D and 3D shapes, background fill, determinism, gradients (including the
gradient penalty's second derivative), the ADA probability controller and the settings parser."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medvol.errors import MedvolInputError
from medvol.transforms.differentiable import (
    AUGMENT_OPERATIONS,
    CriticAugmentation,
    DifferentiableAugment,
    parse_critic_augment,
)

CONV = {2: nn.Conv2d, 3: nn.Conv3d}


def _square(spatial_dims: int, size: int = 16, count: int = 4) -> torch.Tensor:
    """Background -1 with a centred bright box."""
    images = -torch.ones((count, 1) + (size,) * spatial_dims)
    images[(slice(None), slice(None)) + (slice(size // 4, 3 * size // 4),) * spatial_dims] = 1.0
    return images


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_shapes_identity_at_p0_and_input_untouched(spatial_dims):
    images = _square(spatial_dims)
    before = images.clone()
    augment = DifferentiableAugment(spatial_dims)
    generator = torch.Generator().manual_seed(0)
    assert augment(images, 0.0, generator) is images
    out = augment(images, 1.0, generator)
    assert out.shape == images.shape and out.dtype == torch.float32
    for operation in AUGMENT_OPERATIONS:  # not modified in place (the trainer keeps the fakes it logs)
        DifferentiableAugment(spatial_dims, operations=[operation])(images, 1.0, generator)
        assert torch.equal(images, before), operation
    assert not torch.allclose(out, images)
    with pytest.raises(ValueError, match="spatial axes"):
        augment(images[0], 1.0, generator)


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("operation", ["translation", "rotation", "scale"])
def test_geometric_operations_fill_with_the_background_not_zero(spatial_dims, operation):
    augment = DifferentiableAugment(spatial_dims, operations=[operation], translation=0.25, rotation=30, scale=0.3)
    background = -torch.ones((4, 1) + (12,) * spatial_dims)
    out = augment(background, 1.0, torch.Generator().manual_seed(1))
    assert torch.allclose(out, background, atol=1e-6)
    moved = augment(_square(spatial_dims, 12), 1.0, torch.Generator().manual_seed(1))
    assert not torch.allclose(moved, _square(spatial_dims, 12))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_cutout_fills_a_box_of_at_most_half_the_size_per_axis_with_the_background(spatial_dims):
    augment = DifferentiableAugment(spatial_dims, operations=["cutout"])
    out = augment(torch.ones((8, 1) + (16,) * spatial_dims), 1.0, torch.Generator().manual_seed(2))
    cut = (out == -1.0).flatten(1).float().mean(1)
    assert bool(((cut > 0) & (cut <= 0.5**spatial_dims + 1e-6)).all()), cut
    assert bool(((out == -1.0) | (out == 1.0)).all())


def test_translation_moves_images_at_most_an_eighth_of_their_size():
    image = -torch.ones(1, 1, 32, 32)
    image[0, 0, 15:17, 15:17] = 1.0
    augment = DifferentiableAugment(2, operations=["translation"], translation=0.125)
    centres = []
    for seed in range(20):
        out = augment(image, 1.0, torch.Generator().manual_seed(seed))
        weights = (out[0, 0] + 1).clamp(min=0)
        grid = torch.arange(32.0)
        centres.append(((weights.sum(1) * grid).sum() / weights.sum()).item())
    offsets = torch.tensor(centres) - 15.5
    assert offsets.abs().max() <= 32 / 8 + 1e-4 and offsets.abs().max() > 1.0


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_same_generator_seed_same_augmentation_other_seed_other_augmentation(spatial_dims):
    images = _square(spatial_dims)
    augment = DifferentiableAugment(spatial_dims)
    first = augment(images, 0.5, torch.Generator().manual_seed(3))
    again = augment(images, 0.5, torch.Generator().manual_seed(3))
    other = augment(images, 0.5, torch.Generator().manual_seed(4))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_gradients_reach_the_generator_and_the_penalty_can_be_differentiated(spatial_dims):
    torch.manual_seed(0)
    size = 8
    generator = nn.Sequential(nn.Linear(4, size**spatial_dims), nn.Tanh())
    critic = nn.Sequential(CONV[spatial_dims](1, 2, 3, padding=1), nn.Flatten(), nn.LazyLinear(1))
    augment = DifferentiableAugment(spatial_dims)
    fake = generator(torch.randn(3, 4)).reshape((3, 1) + (size,) * spatial_dims)
    score = critic(augment(fake, 1.0, torch.Generator().manual_seed(5)))
    score.sum().backward()
    grads = [p.grad for p in generator.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)

    # WGAN-GP: d/d(critic weights) of the norm of d critic(augment(x)) / dx
    critic.zero_grad()
    x = fake.detach().requires_grad_(True)
    inner = critic(augment(x, 1.0, torch.Generator().manual_seed(6))).sum()
    (gradient,) = torch.autograd.grad(inner, x, create_graph=True)
    gradient.flatten(1).norm(dim=1).mean().backward()
    assert critic[0].weight.grad is not None and critic[0].weight.grad.abs().sum() > 0


def _controller(mode="ada", p=0.0, speed=0.1):
    return CriticAugmentation(2, mode=mode, p=p, target=0.6, speed=speed, interval=4)


def test_ada_raises_p_when_the_critic_scores_real_images_positive_and_lowers_it_otherwise():
    overfit = _controller()
    for _ in range(8):
        overfit.observe(sign_sum=16.0, count=16)  # every real score positive: r_t = 1 > 0.6
        logs = overfit.end_iteration()
    assert overfit.p == pytest.approx(0.2) and logs["critic_augment/real_sign"] == 1.0
    assert logs["critic_augment/p"] == overfit.p

    healthy = _controller(p=0.5)
    for _ in range(8):
        healthy.observe(sign_sum=-4.0, count=16)  # r_t = -0.25 < 0.6
        healthy.end_iteration()
    assert healthy.p == pytest.approx(0.3) and healthy.real_sign == -0.25

    bounded = _controller(p=0.95)
    for _ in range(40):
        bounded.observe(16.0, 16)
        bounded.end_iteration()
    assert bounded.p == 1.0

    fixed = _controller(mode="fixed", p=0.3)
    for _ in range(8):
        fixed.observe(16.0, 16)
        fixed.end_iteration()
    assert fixed.p == 0.3 and fixed.real_sign == 1.0  # the statistic is still reported


def test_ada_moves_only_every_interval_and_its_state_restores_exactly():
    ada = _controller()
    for _ in range(3):
        ada.observe(16.0, 16)
        assert "critic_augment/real_sign" not in ada.end_iteration() and ada.p == 0.0
    ada.observe(16.0, 16)
    ada.end_iteration()
    assert ada.p == pytest.approx(0.1)
    ada.observe(6.0, 16)
    state = ada.state_dict()
    restored = _controller()
    restored.load_state_dict(state)
    assert restored.state_dict() == state
    for controller in (ada, restored):
        for _ in range(3):
            controller.observe(16.0, 16)
            controller.end_iteration()
    assert restored.p == ada.p and restored.real_sign == ada.real_sign
    with pytest.raises(ValueError, match="differs"):
        _controller(speed=0.2).load_state_dict(state)


@pytest.mark.parametrize("text, expected", [
    ("off", {"mode": "off"}),
    (False, {"mode": "off"}),
    (None, {"mode": "off"}),
    ("fixed:0.3", {"mode": "fixed", "p": 0.3, "ops": list(AUGMENT_OPERATIONS)}),
    ("fixed:p=0.5,ops=translation+cutout", {"mode": "fixed", "p": 0.5, "ops": ["translation", "cutout"]}),
    ("ada", {"mode": "ada", "p": 0.0, "target": 0.6, "speed": 0.005, "ops": list(AUGMENT_OPERATIONS)}),
    ("ada:target=0.7,speed=0.01", {"mode": "ada", "p": 0.0, "target": 0.7, "speed": 0.01, "ops": list(AUGMENT_OPERATIONS)}),
    ({"mode": "fixed", "p": 0.2, "ops": ["cutout"]}, {"mode": "fixed", "p": 0.2, "ops": ["cutout"]}),
])
def test_settings_are_read_into_one_canonical_form(text, expected):
    assert parse_critic_augment(text) == expected
    assert parse_critic_augment(parse_critic_augment(text)) == expected


@pytest.mark.parametrize("text, problem", [
    ("sometimes", "expected off, fixed:P or ada"),
    ("fixed", "needs a probability"),
    ("fixed:1.5", "p must be between 0.0 and 1.0"),
    ("fixed:lots", "p must be a number"),
    ("ada:target=0.6,rate=2", "ada does not take rate"),
    ("fixed:0.3,target=0.5", "fixed does not take target"),
    ("ada:ops=flip", "ops must be some of"),
    ("ada:0.5", "expected KEY=VALUE"),
])
def test_bad_settings_are_one_clear_error_naming_the_option(text, problem):
    with pytest.raises(MedvolInputError, match=problem) as caught:
        parse_critic_augment(text)
    assert "--critic-augment" in str(caught.value)
