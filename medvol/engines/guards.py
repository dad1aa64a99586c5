"""Training guards: stop on non-finite losses, warn when the critic wins outright or the generator collapses."""

from __future__ import annotations

import logging
import math

import torch

__all__ = ["NonFiniteLossError", "check_finite", "AdversarialHealth"]

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; the run stopped before that step changed any weight.

    Attributes:
        iteration: the iteration (generator step) during which it happened.
        term: which loss, e.g. ``critic/loss``.
        value: the offending value.
        checkpoint: the last good checkpoint (None when none was written yet).
    """

    def __init__(self, iteration: int, term: str, value: float, checkpoint: str | None):
        self.iteration = iteration
        self.term = term
        self.value = value
        self.checkpoint = checkpoint
        where = f"the last good checkpoint is {checkpoint}" if checkpoint else "no checkpoint had been written yet"
        super().__init__(
            f"training stopped at iteration {iteration}: {term} is {value} ({where}; "
            "lower the learning rate, use fp32 precision, or check the input intensities)"
        )


def check_finite(values: dict[str, torch.Tensor | float], iteration: int, prefix: str, checkpoint: str | None) -> None:
    """Raise :class:`NonFiniteLossError` when any of ``values`` is NaN or infinite."""
    for name, value in values.items():
        number = float(value.detach().float().sum()) if isinstance(value, torch.Tensor) else float(value)
        if not math.isfinite(number):
            raise NonFiniteLossError(iteration, f"{prefix}/{name}", number, checkpoint)


class AdversarialHealth:
    """Track two failure modes over iterations and log a warning (once per episode) when one persists.

    * the critic separates real from generated images perfectly (the fraction of (real, fake) pairs it ranks
      correctly stays above ``win_threshold``): with a saturating loss the generator's gradients then vanish;
    * the generator collapsed: its images of one class are near-identical. The diversity of a set is its mean pairwise
      voxel distance (`medvol.metrics.diversity.mean_pairwise_distance`), taken per class for a conditional generator
      (`class_diversity`); the warning comes when the generated images' diversity stays below ``collapse_ratio``
      times that of the real images of the same class. Each check sees one batch (a few images per class), so the
      ratio is noisy: real images split against themselves gave ratios down to 0.58 with 8 images per class
      (`medvol.metrics.diversity`), and the demo's collapsed conditional GAN gave 0.1-0.3 (docs/results.md).

    Args:
        patience: consecutive checks a condition must hold before the warning.
        win_threshold: ranking accuracy counted as a complete win.
        collapse_ratio: generated/real diversity ratio counted as a collapse.
    """

    def __init__(self, patience: int = 20, win_threshold: float = 0.99, collapse_ratio: float = 0.35):
        self.patience = patience
        self.win_threshold = win_threshold
        self.collapse_ratio = collapse_ratio
        self.win_streak = 0
        self.collapse_streak = 0
        self.warnings: list[str] = []

    @staticmethod
    def ranking_accuracy(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> float:
        """Fraction of (real, fake) pairs with a higher score for the real image."""
        return float((real_scores.float()[:, None] > fake_scores.float()[None, :]).float().mean())

    @staticmethod
    def diversity(images: torch.Tensor, max_pairs: int = 64) -> float:
        """Mean pairwise voxel distance of a set of images (0 when every image is the same; NaN below 2 images)."""
        from medvol.metrics.diversity import mean_pairwise_distance

        if images.shape[0] < 2:
            return float("nan")
        return mean_pairwise_distance(images.detach().float(), max_pairs=max_pairs, seed=0)

    @staticmethod
    def class_diversity(
        fakes: torch.Tensor,
        fake_labels: torch.Tensor | None,
        real: torch.Tensor,
        real_labels: torch.Tensor | None,
    ) -> tuple[float, float]:
        """``(generated, real)`` diversity of the class whose generated/real ratio is lowest, among the classes with
        at least 2 images on both sides; of the whole sets without labels. NaNs when no class qualifies."""
        if fake_labels is None or real_labels is None:
            return AdversarialHealth.diversity(fakes), AdversarialHealth.diversity(real)
        fake_labels, real_labels = fake_labels.reshape(-1).cpu(), real_labels.reshape(-1).cpu()
        worst = (float("nan"), float("nan"))
        for label in fake_labels.unique().tolist():
            generated = fakes[(fake_labels == label).to(fakes.device)]
            reference = real[(real_labels == label).to(real.device)]
            if generated.shape[0] < 2 or reference.shape[0] < 2:
                continue
            pair = (AdversarialHealth.diversity(generated), AdversarialHealth.diversity(reference))
            if pair[1] > 0 and (math.isnan(worst[0]) or pair[0] / pair[1] < worst[0] / worst[1]):
                worst = pair
        return worst

    def update(self, iteration: int, accuracy: float, fake_diversity: float, real_diversity: float) -> list[str]:
        """Record one check; returns the warnings raised by it."""
        raised = []
        self.win_streak = self.win_streak + 1 if accuracy >= self.win_threshold else 0
        if self.win_streak == self.patience:
            raised.append(
                f"iteration {iteration}: the critic has separated real and generated images perfectly for "
                f"{self.patience} checks (ranking accuracy {accuracy:.3f}); the generator may get no useful gradient "
                "(try a Wasserstein objective, label smoothing, or a lower critic learning rate)"
            )
        if math.isfinite(fake_diversity) and math.isfinite(real_diversity) and real_diversity > 0:  # else: no evidence
            collapsed = fake_diversity < self.collapse_ratio * real_diversity
            self.collapse_streak = self.collapse_streak + 1 if collapsed else 0
        if self.collapse_streak == self.patience:
            raised.append(
                f"iteration {iteration}: the generator may have collapsed: its images of a class are near-identical "
                f"(mean pairwise distance {fake_diversity:.4g}, below {self.collapse_ratio:.0%} of the real images' "
                f"{real_diversity:.4g}) for {self.patience} checks (try the objective option mode_seeking_weight=1 or the "
                "network option minibatch_std=true)"
            )
        for message in raised:
            logger.warning(message)
        self.warnings.extend(raised)
        return raised
