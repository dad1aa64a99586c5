"""A tiny, deterministic GAN training loop for the convergence tests (the real trainer lives in medvol.engines)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from medvol.data.phantoms import lesion_region_mask, make_phantom_batch
from medvol.networks.factory import build
from medvol.objectives import build_objective, build_optimizer

IMAGE_SIZE = (16, 16)

# small widths so that a few hundred steps take seconds on a shared CPU
SMALL_NETWORKS: dict[str, dict[str, Any]] = {
    "gan": {"latent_size": 16, "generator": {"hidden_sizes": (64, 128)}, "critic": {"hidden_sizes": (64, 32)}},
    "dcgan": {"latent_size": 16, "generator": {"channels": (32, 16)}, "critic": {"channels": (16, 32)}},
    "wgan": {"latent_size": 16, "generator": {"channels": (32, 16)}, "critic": {"channels": (16, 32)}},
    "cgan": {"latent_size": 16, "generator": {"channels": (32, 16)}, "critic": {"channels": (16, 32)}},
    "wgan_gp": {"latent_size": 16, "generator": {"channels": (32, 16, 8)}, "critic": {"channels": (8, 16)}},
    "acwgan_gp": {"latent_size": 16, "generator": {"channels": (32, 16, 8)}, "critic": {"channels": (8, 16)}},
}


def phantom_training_set(n: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two-class 2D phantoms in [-1, 1] and their labels."""
    images, labels = make_phantom_batch(n, 2, IMAGE_SIZE, seed=seed)
    return torch.from_numpy(images) * 2.0 - 1.0, torch.from_numpy(labels)


def lesion_mean(images: torch.Tensor) -> torch.Tensor:
    """Mean intensity in [0, 1] of the lesion region, one value per image."""
    mask = torch.from_numpy(lesion_region_mask(images.shape[2:]))
    return ((images[:, 0] + 1.0) / 2.0)[:, mask].mean(dim=1)


def train_gan(
    family: str, steps: int, seed: int = 0, batch_size: int = 32, objective_overrides: dict | None = None
) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """Train `family` on phantoms for `steps` generator updates; return (generator, real images, real labels)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # these tiny networks run several times faster on one thread of a shared CPU
    try:
        return _train_gan(family, steps, seed, batch_size, objective_overrides)
    finally:
        torch.set_num_threads(threads)


def _train_gan(
    family: str, steps: int, seed: int, batch_size: int, objective_overrides: dict | None
) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    real, labels = phantom_training_set()
    num_classes = 2 if family in ("cgan", "acwgan_gp") else 0
    networks = build(family, 2, IMAGE_SIZE, num_classes=num_classes, **SMALL_NETWORKS[family])
    generator, critic = networks["generator"], networks["critic"]
    objective, settings = build_objective(family, **(objective_overrides or {}))
    generator_optimizer = build_optimizer(generator.parameters(), settings["optimizer"])
    critic_optimizer = build_optimizer(critic.parameters(), settings["optimizer"])
    generator.train()
    critic.train()
    for _ in range(steps):
        for _ in range(objective.critic_steps):
            index = torch.randint(0, real.shape[0], (batch_size,))
            z = torch.randn(batch_size, generator.latent_size)
            with torch.no_grad():
                fake = generator(z, labels[index])
            losses = objective.discriminator_loss(critic, real[index], fake, labels[index])
            critic_optimizer.zero_grad()
            losses["loss"].backward()
            critic_optimizer.step()
            objective.after_critic_step(critic)
        fake_labels = labels[torch.randint(0, real.shape[0], (batch_size,))]
        fake = generator(torch.randn(batch_size, generator.latent_size), fake_labels)
        losses = objective.generator_loss(critic, fake, fake_labels)
        generator_optimizer.zero_grad()
        losses["loss"].backward()
        generator_optimizer.step()
    return generator, real, labels


@torch.no_grad()
def sample(generator: torch.nn.Module, n: int, label: int | None = None, seed: int = 1) -> torch.Tensor:
    """`n` samples in eval mode (conditioned on `label` when given)."""
    torch.manual_seed(seed)
    generator.eval()
    labels = None if label is None else torch.full((n,), label, dtype=torch.long)
    return generator(torch.randn(n, generator.latent_size), labels)


def mean_image_distance(samples: torch.Tensor, real: torch.Tensor) -> float:
    """Mean absolute difference in [0, 1] units between the average sample and the average real image."""
    return float(((samples.mean(0) - real.mean(0)).abs() / 2.0).mean())
