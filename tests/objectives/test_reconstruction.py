"""Autoencoder objectives against known values."""

from __future__ import annotations

import pytest
import torch

from medvol.objectives import ReconstructionLoss, VAELoss, build_objective, kl_divergence


@pytest.mark.parametrize("metric,expected", [("mse", 0.25), ("l1", 0.5)])
def test_reconstruction_errors(metric, expected):
    target = torch.zeros(2, 1, 4, 4, 4)
    losses = ReconstructionLoss(metric)(torch.full_like(target, 0.5), target)
    assert float(losses["loss"]) == pytest.approx(expected)
    assert float(losses[metric]) == pytest.approx(expected)


def test_kl_divergence_known_values():
    zeros = torch.zeros(3, 5)
    assert float(kl_divergence(zeros, zeros)) == pytest.approx(0.0)
    assert float(kl_divergence(torch.ones(3, 5), zeros)) == pytest.approx(2.5)  # 0.5 * mu^2 per dimension
    # sigma^2 = e: 0.5 * (e - 1 - 1) per dimension
    assert float(kl_divergence(zeros, torch.ones(3, 5))) == pytest.approx(5 * 0.5 * (torch.e - 2.0), rel=1e-5)


def test_vae_loss_combines_terms_with_kl_weight():
    target = torch.zeros(2, 1, 4, 4)
    output = (torch.full_like(target, 0.5), torch.ones(2, 5), torch.zeros(2, 5))
    losses = VAELoss(kl_weight=0.1)(output, target)
    assert float(losses["loss"]) == pytest.approx(0.25 + 0.1 * 2.5 / 16)  # per-voxel ELBO: KL over 16 values
    assert float(losses["kl"]) == pytest.approx(2.5)
    objective, settings = build_objective("vae", kl_weight=0.01, metric="l1")
    assert (objective.kl_weight, objective.metric) == (0.01, "l1")
    assert settings == {"optimizer": {"name": "Adam", "lr": 1e-3, "betas": (0.9, 0.999)}}
    with pytest.raises(ValueError, match="critic_steps does not apply"):
        build_objective("cae", critic_steps=5)
    with pytest.raises(ValueError, match="metric must be one of"):
        ReconstructionLoss("ssim")


def test_vae_balance_does_not_change_with_image_size():
    """The same per-voxel error and the same latent give the same loss at 16^2, 32^3 and 64^3."""
    mu, logvar = torch.ones(2, 5), torch.zeros(2, 5)
    losses = []
    for shape in ((16, 16), (32, 32, 32), (64, 64, 64)):
        target = torch.zeros(2, 1, *shape)
        losses.append(float(VAELoss(kl_weight=100.0)((torch.full_like(target, 0.5), mu, logvar), target)["loss"]))
    voxels = (16 * 16, 32**3, 64**3)
    # the KL's share shrinks with the voxel count exactly as a per-voxel ELBO says: error + beta * KL / voxels
    assert losses == pytest.approx([0.25 + 100.0 * 2.5 / n for n in voxels])
    # the gradient balance: d loss / d mu relative to d loss / d (one voxel) is beta * mu / (2 * error), at every size
    for shape in ((16, 16), (32, 32, 32)):
        target = torch.zeros(1, 1, *shape)
        recon = torch.full_like(target, 0.5).requires_grad_(True)
        mu1 = torch.ones(1, 5, requires_grad=True)
        VAELoss(kl_weight=100.0)((recon, mu1, torch.zeros(1, 5)), target)["loss"].backward()
        ratio = mu1.grad[0, 0] / recon.grad.flatten()[0]
        assert float(ratio) == pytest.approx(100.0 * 1.0 / (2 * 0.5))  # beta * mu / (d mse summed over voxels)


def test_vae_default_weight_reproduces_the_former_weight_at_the_demo_size():
    target = torch.zeros(2, 1, 32, 32, 32)
    output = (torch.full_like(target, 0.5), torch.ones(2, 5), torch.zeros(2, 5))
    assert float(VAELoss()(output, target)["loss"]) == pytest.approx(0.25 + 1e-3 * 2.5)  # the former 1e-3 x KL sum
