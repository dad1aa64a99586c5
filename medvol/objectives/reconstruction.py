"""Autoencoder objectives: MSE or L1 reconstruction, and MSE (or L1) + KL for the VAE.

Each is called as `objective(output, target) -> dict` with the scalar `"loss"` and detached terms to log, where
`output` is what the autoencoder returned (a reconstruction, or the VAE's `(reconstruction, mu, logvar)`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

RECONSTRUCTION_METRICS = {"mse": F.mse_loss, "l1": F.l1_loss}


class ReconstructionLoss:
    """Mean squared or absolute error between reconstruction and target, averaged over voxels (float32).

    Args:
        metric: "mse" or "l1".
    """

    #: recommended optimiser (a torch.optim name plus keyword arguments)
    optimizer: dict[str, Any] = {"name": "Adam", "lr": 1e-3, "betas": (0.9, 0.999)}

    def __init__(self, metric: str = "mse") -> None:
        if metric not in RECONSTRUCTION_METRICS:
            raise ValueError(f"metric must be one of {sorted(RECONSTRUCTION_METRICS)}, got {metric!r}")
        self.metric = metric

    def reconstruction_error(self, reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return RECONSTRUCTION_METRICS[self.metric](reconstruction.float(), target.float())

    def __call__(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        error = self.reconstruction_error(output, target)
        return {"loss": error, self.metric: error.detach()}

    def recommended_settings(self) -> dict[str, Any]:
        """`{"optimizer": {...}}` for trainers and bundles."""
        return {"optimizer": dict(self.optimizer)}


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)), summed over latent dimensions and averaged over the batch (float32)."""
    mu, logvar = mu.float(), logvar.float()
    return (-0.5 * (1.0 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()


class VAELoss(ReconstructionLoss):
    """Reconstruction error (mean over voxels) plus `kl_weight` times the KL divergence (sum over the latent, mean over
    the batch). Because the two terms are normalised differently, useful weights are small (1e-4 to 1e-2);
    larger weights trade sharpness for a smoother latent space.

    Args:
        kl_weight: weight of the KL term.
        metric: reconstruction metric, "mse" or "l1".
    """

    def __init__(self, kl_weight: float = 1e-3, metric: str = "mse") -> None:
        super().__init__(metric)
        if kl_weight < 0:
            raise ValueError(f"kl_weight must be non-negative, got {kl_weight}")
        self.kl_weight = float(kl_weight)

    def __call__(  # type: ignore[override]
        self, output: tuple[torch.Tensor, torch.Tensor, torch.Tensor], target: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        reconstruction, mu, logvar = output
        error = self.reconstruction_error(reconstruction, target)
        kl = kl_divergence(mu, logvar)
        return {"loss": error + self.kl_weight * kl, self.metric: error.detach(), "kl": kl.detach()}
