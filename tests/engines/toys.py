"""Tiny networks, objectives and data that follow medvol's contracts (docs/architecture.md), so the engine tests do not
depend on medvol.networks / medvol.objectives."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CONV = {2: nn.Conv2d, 3: nn.Conv3d}
CONV_T = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}


class ToyGenerator(nn.Module):
    """``g(z, labels=None)`` -> images ``[B, 1, size^d]`` in [-1, 1]."""

    def __init__(self, spatial_dims: int = 2, size: int = 8, latent_size: int = 4, num_classes: int = 0, channels: int = 4):
        super().__init__()
        self.spatial_dims, self.latent_size, self.num_classes, self.image_size = spatial_dims, latent_size, num_classes, size
        self.start = (channels,) + (size // 2,) * spatial_dims
        self.fc = nn.Linear(latent_size + num_classes, int(torch.tensor(self.start).prod()))
        self.blocks = nn.Sequential(
            CONV_T[spatial_dims](channels, channels, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            CONV[spatial_dims](channels, 1, 3, padding=1),
        )

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes:
            z = torch.cat([z, F.one_hot(labels.long(), self.num_classes).to(z.dtype)], dim=1)
        return torch.tanh(self.blocks(self.fc(z).reshape(-1, *self.start)))


class ToyCritic(nn.Module):
    """``d(x, labels=None)`` -> score ``[B]``, or ``(score, class_logits)`` with ``aux_classes``; projection conditioning."""

    def __init__(self, spatial_dims: int = 2, size: int = 8, num_classes: int = 0, aux_classes: int = 0, channels: int = 4):
        super().__init__()
        self.features = nn.Sequential(
            CONV[spatial_dims](1, channels, 3, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            CONV[spatial_dims](channels, channels, 3, padding=1),
            nn.LeakyReLU(0.2),
        )
        width = channels * (size // 2) ** spatial_dims
        self.score = nn.Linear(width, 1)
        self.embed = nn.Embedding(num_classes, width) if num_classes else None
        self.aux = nn.Linear(width, aux_classes) if aux_classes else None

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None):
        h = self.features(x).flatten(1)
        score = self.score(h).squeeze(1)
        if self.embed is not None and labels is not None:
            score = score + (self.embed(labels.long()) * h).sum(1)
        return (score, self.aux(h)) if self.aux is not None else score


def _split(output):
    return output if isinstance(output, tuple) else (output, None)


class ToyWassersteinGP:
    """Wasserstein loss with gradient penalty; records what every call saw (for the tests)."""

    critic_steps = 2

    def __init__(self, penalty_weight: float = 10.0, record: bool = False, nan_at_call: int | None = None):
        self.penalty_weight = penalty_weight
        self.record = record
        self.nan_at_call = nan_at_call
        self.calls = 0
        self.critic_calls: list[dict] = []
        self.generator_calls: list[dict] = []

    def discriminator_loss(self, critic, real, fake, labels=None):
        self.calls += 1
        real_score, real_logits = _split(critic(real, labels))
        fake_score, fake_logits = _split(critic(fake, labels))
        alpha = torch.rand((real.shape[0],) + (1,) * (real.ndim - 1), device=real.device)
        interpolates = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
        inter_score, _ = _split(critic(interpolates, labels))
        (grads,) = torch.autograd.grad(inter_score.sum(), interpolates, create_graph=True)
        penalty = ((grads.flatten(1).norm(dim=1) - 1) ** 2).mean()
        wasserstein = real_score.float().mean() - fake_score.float().mean()
        loss = -wasserstein + self.penalty_weight * penalty
        if real_logits is not None and labels is not None:
            loss = loss + F.cross_entropy(real_logits.float(), labels) + F.cross_entropy(fake_logits.float(), labels)
        if self.nan_at_call is not None and self.calls >= self.nan_at_call:
            loss = loss * float("nan")
        if self.record:
            self.critic_calls.append(
                {
                    "real": real.detach().clone(),
                    "fake": fake.detach().clone(),
                    "labels": None if labels is None else labels.clone(),
                    "autocast": torch.is_autocast_enabled(real.device.type),
                    "real_score_dtype": real_score.dtype,
                    "penalty_grad_dtype": grads.dtype,
                }
            )
        return {"loss": loss, "gradient_penalty": penalty.detach(), "wasserstein": wasserstein.detach()}

    def generator_loss(self, critic, fake, labels=None):
        score, logits = _split(critic(fake, labels))
        loss = -score.float().mean()
        if logits is not None and labels is not None:
            loss = loss + F.cross_entropy(logits.float(), labels)
        if self.record:
            self.generator_calls.append({"fake": fake.detach().clone(), "labels": None if labels is None else labels.clone()})
        return {"loss": loss}

    def after_critic_step(self, critic):
        pass


class ToyWasserstein(ToyWassersteinGP):
    """No penalty: every random draw happens outside the objective (for exact accumulation checks)."""

    critic_steps = 1

    def discriminator_loss(self, critic, real, fake, labels=None):
        wasserstein = _split(critic(real, labels))[0].float().mean() - _split(critic(fake, labels))[0].float().mean()
        return {"loss": -wasserstein, "wasserstein": wasserstein.detach()}


class ToyAutoencoder(nn.Module):
    """``model(x) -> reconstruction``, or ``(reconstruction, mu, logvar)`` when ``variational``."""

    def __init__(self, spatial_dims: int = 2, channels: int = 4, variational: bool = False):
        super().__init__()
        self.spatial_dims, self.variational = spatial_dims, variational
        self.encoder = nn.Sequential(CONV[spatial_dims](1, channels * (2 if variational else 1), 3, stride=2, padding=1))
        self.decoder = nn.Sequential(nn.LeakyReLU(0.2), CONV_T[spatial_dims](channels, 1, 4, stride=2, padding=1))

    def forward(self, x):
        h = self.encoder(x)
        if not self.variational:
            return self.decoder(h)
        mu, logvar = h.chunk(2, dim=1)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.decoder(z), mu, logvar


def reconstruction_loss(output, target):
    if isinstance(output, tuple):
        recon, mu, logvar = output
        kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).mean()
        mse = F.mse_loss(recon.float(), target)
        return {"loss": mse + 1e-3 * kl, "mse": mse.detach(), "kl": kl.detach()}
    mse = F.mse_loss(output.float(), target)
    return {"loss": mse, "mse": mse.detach()}


class IndexedImages(torch.utils.data.Dataset):
    """Item ``i`` is an image whose pixel [0, 0(, 0)] holds ``i`` (so tests can tell which items a batch held)."""

    def __init__(self, count: int = 16, spatial_dims: int = 2, size: int = 8, num_classes: int = 2, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.images = torch.rand((count, 1) + (size,) * spatial_dims, generator=generator) * 2 - 1
        for i in range(count):
            self.images[(i, 0) + (0,) * spatial_dims] = float(i)
        self.labels = torch.arange(count) % max(num_classes, 1)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        return {"image": self.images[index], "label": self.labels[index]}


def item_ids(images: torch.Tensor) -> list[int]:
    """The item indices :class:`IndexedImages` wrote into each image of a batch."""
    return [int(round(float(v))) for v in images.reshape(images.shape[0], -1)[:, 0]]


def make_gan(spatial_dims: int = 2, size: int = 8, num_classes: int = 0, aux: bool = False, seed: int = 0, lr: float = 1e-3):
    torch.manual_seed(seed)
    generator = ToyGenerator(spatial_dims, size, num_classes=num_classes)
    critic = ToyCritic(spatial_dims, size, num_classes=0 if aux else num_classes, aux_classes=num_classes if aux else 0)
    g_opt = torch.optim.Adam(generator.parameters(), lr=lr, betas=(0.5, 0.9))
    d_opt = torch.optim.Adam(critic.parameters(), lr=lr, betas=(0.5, 0.9))
    return generator, critic, g_opt, d_opt


def make_loader(count: int = 16, batch_size: int = 4, spatial_dims: int = 2, size: int = 8, num_classes: int = 2, shuffle: bool = True):
    dataset = IndexedImages(count, spatial_dims, size, num_classes)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=True)
