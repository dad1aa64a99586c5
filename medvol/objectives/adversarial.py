"""Adversarial objectives as small interchangeable objects.

Every objective has `discriminator_loss(critic, real, fake, labels=None)`, `generator_loss(critic, fake, labels=None)`
(each returns a dict with the scalar `"loss"` to back-propagate plus detached terms to log), `after_critic_step(critic)`
(weight clipping for WGAN, a no-op elsewhere) and `critic_steps`, the recommended number of critic updates per
generator update. Critics return a score `[B]` or `(score, class_logits)`; when they return class logits and labels
are given, the auxiliary classification term (cross-entropy of the class head, weighted by `auxiliary_weight`) is added:
on real and generated images for the critic, on generated images for the generator. With `mode_seeking_weight` and
the generator's noise passed as `latents`, the generator loss also gets the mode-seeking term (`mode_seeking_term`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medvol.networks.blocks import has_batch_norm

Labels = torch.Tensor | None


def split_critic_output(output: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`(score [B], class_logits or None)` from whatever a critic returned."""
    if isinstance(output, (tuple, list)):
        return output[0], output[1]
    return output, None


def auxiliary_classification_loss(class_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of a critic's class head (AC-GAN), computed in float32."""
    return F.cross_entropy(class_logits.float(), labels.to(class_logits.device).long())


def mode_seeking_term(fake: torch.Tensor, latents: torch.Tensor, labels: Labels = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mode-seeking regularisation (Mao et al. 2019, MSGAN): how much the images change with the noise.

    Pairs are consecutive samples of the same class (the batch in label order; all samples when unconditional).
    The ratio is `mean |G(z1) - G(z2)| / mean |z1 - z2|` over the pairs; the term to minimise is `1 / (ratio + 1e-5)`,
    large when the generator ignores its noise, as a conditional generator that returns one image per class does.

    Returns:
        `(term, ratio)`; both 0 when no two samples share a class.
    """
    order = torch.arange(fake.shape[0], device=fake.device)
    if labels is not None:
        order = torch.argsort(labels.to(fake.device).reshape(-1), stable=True)
        same = labels.to(fake.device).reshape(-1)[order]
        keep = torch.nonzero(same[1:] == same[:-1]).reshape(-1)
    else:
        keep = torch.arange(max(fake.shape[0] - 1, 0), device=fake.device)
    if keep.numel() == 0:
        zero = fake.sum() * 0.0
        return zero, zero.detach()
    first, second = order[keep], order[keep + 1]
    image_change = (fake[first].float() - fake[second].float()).abs().mean()
    noise_change = (latents[first].float() - latents[second].float()).abs().mean()
    ratio = image_change / noise_change.to(fake.device)
    return 1.0 / (ratio + 1e-5), ratio.detach()


def gradient_penalty(
    critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, labels: Labels = None
) -> torch.Tensor:
    """WGAN-GP penalty `mean((||grad_x critic(x_hat)||_2 - 1)^2)` at per-sample random interpolates
    `x_hat = a real + (1 - a) fake`, `a ~ U(0, 1)` per sample, broadcast over any number of spatial axes.

    Runs in float32 with autocast disabled (half-precision gradient norms overflow or underflow) and with
    `create_graph=True`, so the penalty itself can be back-propagated into the critic.

    Args:
        critic: the critic; its score (first output when it also returns class logits) is differentiated.
        real: real images `[B, C, *spatial]`.
        fake: generated images of the same shape (detached here).
        labels: class labels passed to a conditional critic.
    """
    if real.shape != fake.shape:
        raise ValueError(f"real {tuple(real.shape)} and fake {tuple(fake.shape)} images must have the same shape")
    with torch.autocast(device_type=real.device.type, enabled=False):
        alpha = torch.rand((real.shape[0],) + (1,) * (real.ndim - 1), device=real.device, dtype=torch.float32)
        interpolates = (alpha * real.detach().float() + (1.0 - alpha) * fake.detach().float()).requires_grad_(True)
        score, _ = split_critic_output(critic(interpolates, labels))
        (gradients,) = torch.autograd.grad(score.float().sum(), interpolates, create_graph=True)
        norms = torch.sqrt(gradients.flatten(1).pow(2).sum(dim=1) + 1e-12)
        return ((norms - 1.0) ** 2).mean()


class AdversarialObjective:
    """Base: runs the critic, adds the auxiliary classification term, collects logged terms.

    Subclasses implement `_critic_terms(real_score, fake_score)` and `_generator_terms(fake_score)`, each returning
    `(loss, {name: value})`.

    Args:
        auxiliary_weight: weight of the auxiliary classification term (used when the critic has a class head).
        mode_seeking_weight: weight of `mode_seeking_term` in the generator loss (0: off).
        auxiliary_on_fakes: train the critic's class head on generated images too (AC-GAN); False: on real images
            only, so that the head cannot learn the generator's own labelling of its images.
    """

    critic_steps = 1
    #: recommended optimiser for generator and critic: a name of torch.optim plus its keyword arguments
    optimizer: dict[str, Any] = {"name": "Adam", "lr": 2e-4, "betas": (0.5, 0.999)}

    def __init__(
        self, auxiliary_weight: float = 1.0, mode_seeking_weight: float = 0.0, auxiliary_on_fakes: bool = True
    ) -> None:
        if mode_seeking_weight < 0:
            raise ValueError(f"mode_seeking_weight must be 0 or positive, got {mode_seeking_weight}")
        self.auxiliary_weight = float(auxiliary_weight)
        self.mode_seeking_weight = float(mode_seeking_weight)
        self.auxiliary_on_fakes = bool(auxiliary_on_fakes)

    def _critic_terms(self, real_score: torch.Tensor, fake_score: torch.Tensor) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def _generator_terms(self, fake_score: torch.Tensor) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def _extra_critic_terms(
        self, critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, labels: Labels
    ) -> tuple[torch.Tensor | float, dict]:
        return 0.0, {}

    def discriminator_loss(
        self, critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, labels: Labels = None, fake_labels: Labels = None
    ) -> dict[str, torch.Tensor]:
        """Critic loss on a real and a generated batch (`fake` is detached here).

        Args:
            critic: the critic.
            real: real images.
            fake: generated images.
            labels: classes of the real images; also used for the generated ones unless `fake_labels` is given
                (generate conditional fakes with the real batch's labels, or pass theirs as `fake_labels`).
            fake_labels: classes the generated images were conditioned on, when they differ from `labels`.
        """
        fake = fake.detach()
        fake_labels = labels if fake_labels is None else fake_labels
        real_score, real_logits = split_critic_output(critic(real, labels))
        fake_score, fake_logits = split_critic_output(critic(fake, fake_labels))
        loss, logs = self._critic_terms(real_score.float(), fake_score.float())
        extra, extra_logs = self._extra_critic_terms(critic, real, fake, labels)
        loss = loss + extra
        logs.update(extra_logs)
        if real_logits is not None and labels is not None and self.auxiliary_weight > 0:
            aux = auxiliary_classification_loss(real_logits, labels)
            if self.auxiliary_on_fakes:
                aux = aux + auxiliary_classification_loss(fake_logits, fake_labels)
            loss = loss + self.auxiliary_weight * aux
            logs["aux_loss"] = aux.detach()
        logs["d_real"] = real_score.detach().float().mean()
        logs["d_fake"] = fake_score.detach().float().mean()
        return {"loss": loss, **logs}

    def generator_loss(
        self, critic: nn.Module, fake: torch.Tensor, labels: Labels = None, latents: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Generator loss on a generated batch (gradients flow into the generator through `fake`).

        Args:
            critic: the critic.
            fake: generated images.
            labels: classes the generated images were conditioned on.
            latents: the noise the images were generated from (needed by the mode-seeking term).
        """
        fake_score, fake_logits = split_critic_output(critic(fake, labels))
        loss, logs = self._generator_terms(fake_score.float())
        if fake_logits is not None and labels is not None and self.auxiliary_weight > 0:
            aux = auxiliary_classification_loss(fake_logits, labels)
            loss = loss + self.auxiliary_weight * aux
            logs["aux_loss"] = aux.detach()
        if self.mode_seeking_weight > 0 and latents is not None:
            term, ratio = mode_seeking_term(fake, latents, labels)
            loss = loss + self.mode_seeking_weight * term
            logs["mode_seeking_ratio"] = ratio
        return {"loss": loss, **logs}

    def after_critic_step(self, critic: nn.Module) -> None:
        """Hook to call after every critic optimiser step (weight clipping for WGAN; nothing here)."""

    def recommended_settings(self) -> dict[str, Any]:
        """`{"critic_steps": int, "optimizer": {"name": ..., "lr": ..., ...}}` for trainers and bundles."""
        return {"critic_steps": self.critic_steps, "optimizer": dict(self.optimizer)}


class NonSaturatingGANLoss(AdversarialObjective):
    """Binary cross-entropy on logits with the non-saturating generator loss `-log D(G(z))` (Goodfellow et al.).

    Args:
        label_smoothing: one-sided smoothing: real targets become `1 - label_smoothing` (0.1 is common); fake
            targets stay 0.
        label_flip_probability: probability of swapping the real and fake targets of each sample in the critic loss
            (noisy labels, against an over-confident discriminator).
        auxiliary_weight, auxiliary_on_fakes: the auxiliary classification term (see `AdversarialObjective`).
        mode_seeking_weight: weight of the mode-seeking term of the generator loss.
    """

    def __init__(
        self,
        label_smoothing: float = 0.0,
        label_flip_probability: float = 0.0,
        auxiliary_weight: float = 1.0,
        mode_seeking_weight: float = 0.0,
        auxiliary_on_fakes: bool = True,
    ):
        super().__init__(auxiliary_weight, mode_seeking_weight, auxiliary_on_fakes)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if not 0.0 <= label_flip_probability <= 0.5:
            raise ValueError(f"label_flip_probability must be in [0, 0.5], got {label_flip_probability}")
        self.label_smoothing = float(label_smoothing)
        self.label_flip_probability = float(label_flip_probability)

    def _critic_terms(self, real_score: torch.Tensor, fake_score: torch.Tensor) -> tuple[torch.Tensor, dict]:
        real_target = torch.full_like(real_score, 1.0 - self.label_smoothing)
        fake_target = torch.zeros_like(fake_score)
        if self.label_flip_probability > 0:
            flip_real = torch.rand_like(real_score) < self.label_flip_probability
            flip_fake = torch.rand_like(fake_score) < self.label_flip_probability
            real_target = torch.where(flip_real, torch.zeros_like(real_target), real_target)
            fake_target = torch.where(flip_fake, torch.full_like(fake_target, 1.0 - self.label_smoothing), fake_target)
        loss = F.binary_cross_entropy_with_logits(real_score, real_target) + F.binary_cross_entropy_with_logits(
            fake_score, fake_target
        )
        return loss, {"bce": loss.detach()}

    def _generator_terms(self, fake_score: torch.Tensor) -> tuple[torch.Tensor, dict]:
        loss = F.binary_cross_entropy_with_logits(fake_score, torch.ones_like(fake_score))
        return loss, {"bce": loss.detach()}


class HingeLoss(AdversarialObjective):
    """Hinge loss (Lim & Ye 2017; the SNGAN / projection-discriminator recipe of Miyato et al. 2018): critic
    `E[relu(1 - D(real))] + E[relu(1 + D(fake))]`, generator `-E[D(fake)]`. Meant for a spectrally normalised critic
    (`spectral_norm=True`), which bounds its scores; Adam lr 2e-4, betas (0.5, 0.999) and one critic step (the
    published setting with one critic update per generator update).

    Args:
        auxiliary_weight, auxiliary_on_fakes: the auxiliary classification term (see `AdversarialObjective`).
        mode_seeking_weight: weight of the mode-seeking term of the generator loss.
    """

    def _critic_terms(self, real_score: torch.Tensor, fake_score: torch.Tensor) -> tuple[torch.Tensor, dict]:
        real_term = F.relu(1.0 - real_score).mean()
        fake_term = F.relu(1.0 + fake_score).mean()
        return real_term + fake_term, {"hinge_real": real_term.detach(), "hinge_fake": fake_term.detach()}

    def _generator_terms(self, fake_score: torch.Tensor) -> tuple[torch.Tensor, dict]:
        return -fake_score.mean(), {}


class WassersteinLoss(AdversarialObjective):
    """Wasserstein critic loss `E[D(fake)] - E[D(real)]` and generator loss `-E[D(fake)]` (no Lipschitz constraint
    by itself: use `WassersteinWeightClipping` or `WassersteinGradientPenalty`)."""

    critic_steps = 5

    def _critic_terms(self, real_score: torch.Tensor, fake_score: torch.Tensor) -> tuple[torch.Tensor, dict]:
        wasserstein = real_score.mean() - fake_score.mean()
        return -wasserstein, {"wasserstein": wasserstein.detach()}

    def _generator_terms(self, fake_score: torch.Tensor) -> tuple[torch.Tensor, dict]:
        return -fake_score.mean(), {}


class WassersteinWeightClipping(WassersteinLoss):
    """WGAN (Arjovsky et al.): Wasserstein loss, every critic parameter clipped to [-c, c] after each critic step;
    RMSprop lr 5e-5 and 5 critic steps as published.

    Args:
        clip_value: c (0.01).
        auxiliary_weight, auxiliary_on_fakes: the auxiliary classification term (see `AdversarialObjective`).
        mode_seeking_weight: weight of the mode-seeking term of the generator loss.
    """

    optimizer = {"name": "RMSprop", "lr": 5e-5}

    def __init__(
        self, clip_value: float = 0.01, auxiliary_weight: float = 1.0, mode_seeking_weight: float = 0.0,
        auxiliary_on_fakes: bool = True,
    ) -> None:
        super().__init__(auxiliary_weight, mode_seeking_weight, auxiliary_on_fakes)
        if clip_value <= 0:
            raise ValueError(f"clip_value must be positive, got {clip_value}")
        self.clip_value = float(clip_value)

    @torch.no_grad()
    def after_critic_step(self, critic: nn.Module) -> None:
        for parameter in critic.parameters():
            parameter.clamp_(-self.clip_value, self.clip_value)


class WassersteinGradientPenalty(WassersteinLoss):
    """WGAN-GP (Gulrajani et al.): Wasserstein loss plus `penalty_weight * gradient_penalty`; Adam lr 1e-4,
    betas (0, 0.9), 5 critic steps as published.

    The penalty is per sample, so batch norm (which mixes the samples of a batch) invalidates it: this objective
    refuses a critic that contains batch norm with a ValueError (build the critic with `norm=None`, "layer" or
    "instance"; the `wgan_gp` and `acwgan_gp` families do).

    Args:
        penalty_weight: lambda (10).
        auxiliary_weight, auxiliary_on_fakes: the auxiliary classification term (see `AdversarialObjective`).
        mode_seeking_weight: weight of the mode-seeking term of the generator loss.
    """

    optimizer = {"name": "Adam", "lr": 1e-4, "betas": (0.0, 0.9)}

    def __init__(
        self, penalty_weight: float = 10.0, auxiliary_weight: float = 1.0, mode_seeking_weight: float = 0.0,
        auxiliary_on_fakes: bool = True,
    ) -> None:
        super().__init__(auxiliary_weight, mode_seeking_weight, auxiliary_on_fakes)
        self.penalty_weight = float(penalty_weight)

    def _extra_critic_terms(
        self, critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, labels: Labels
    ) -> tuple[torch.Tensor, dict]:
        if isinstance(critic, nn.Module) and has_batch_norm(critic):
            raise ValueError(
                f"{type(critic).__name__} contains batch norm, which invalidates the per-sample gradient penalty of "
                "WGAN-GP: build the critic with norm=None, 'layer' or 'instance'"
            )
        penalty = gradient_penalty(critic, real, fake, labels)
        return self.penalty_weight * penalty, {"gradient_penalty": penalty.detach()}
