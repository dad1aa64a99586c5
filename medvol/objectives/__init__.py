"""Training objectives: adversarial losses for the GAN families, reconstruction losses for the autoencoders.

`build_objective(family)` gives the objective of a model family (see `medvol.families`) with its recommended
optimiser settings; `build_optimizer(parameters, settings["optimizer"])` turns those settings into a torch optimiser.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

import torch

from medvol import families
from medvol.objectives.adversarial import (
    AdversarialObjective,
    HingeLoss,
    NonSaturatingGANLoss,
    WassersteinGradientPenalty,
    WassersteinLoss,
    WassersteinWeightClipping,
    auxiliary_classification_loss,
    gradient_penalty,
    split_critic_output,
)
from medvol.objectives.reconstruction import ReconstructionLoss, VAELoss, kl_divergence

SETTING_KEYS = ("critic_steps", "optimizer", "lr", "betas")
#: adversarial losses any GAN family can switch to with `loss=NAME` (the family's defaults that the new class takes,
#: such as `mode_seeking_weight` or `auxiliary_weight`, are kept)
LOSSES: dict[str, type] = {
    "bce": NonSaturatingGANLoss,
    "hinge": HingeLoss,
    "wgan_clip": WassersteinWeightClipping,
    "wgan_gp": WassersteinGradientPenalty,
}


def build_objective(family: str, **overrides: Any) -> tuple[AdversarialObjective | ReconstructionLoss, dict[str, Any]]:
    """The objective of a model family and its recommended optimiser settings.

    Args:
        family: a registered family (`medvol.families`): its objective class and defaults.
        overrides: `critic_steps`, `optimizer` (a dict merged into the recommended one), `lr` and `betas` change the
            settings; `loss` (a GAN family only) replaces the adversarial loss by one of `LOSSES` (e.g. `loss=hinge`),
            with that loss's recommended settings; any other key goes to the objective's constructor (e.g.
            `penalty_weight=5`, `clip_value=0.02`, `label_smoothing=0.1`, `kl_weight=8.0`, `metric="l1"`,
            `auxiliary_weight=0.5`).

    Returns:
        `(objective, settings)` where settings is `{"optimizer": {"name": "Adam", "lr": ..., ...}}` plus, for the GAN
        families, `"critic_steps"` (critic updates per generator update): WGAN RMSprop lr 5e-5 and 5 steps; WGAN-GP
        Adam lr 1e-4 betas (0, 0.9) and 5 steps; BCE families Adam lr 2e-4 betas (0.5, 0.999) and 1 step; autoencoders
        Adam lr 1e-3.
    """
    spec = families.get_family(family)
    cls, defaults = spec.objective_class(), dict(spec.objective_defaults)
    loss = overrides.pop("loss", None)
    if loss is not None:
        if not issubclass(cls, AdversarialObjective):
            raise ValueError(f"{family} is an autoencoder family: loss does not apply")
        if not isinstance(loss, str) or loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
        cls = LOSSES[loss]
        defaults = {key: value for key, value in defaults.items() if key in inspect.signature(cls.__init__).parameters}
    settings_overrides = {key: overrides.pop(key) for key in SETTING_KEYS if key in overrides}
    objective = cls(**{**defaults, **overrides})
    settings = objective.recommended_settings()
    if "critic_steps" in settings_overrides:
        if not isinstance(objective, AdversarialObjective):
            raise ValueError(f"{family} is an autoencoder family: critic_steps does not apply")
        steps = settings_overrides["critic_steps"]
        if isinstance(steps, bool) or not isinstance(steps, (int, float)) or steps != int(steps) or steps < 1:
            raise ValueError(f"critic_steps must be a whole number of at least 1, got {steps!r}")
        objective.critic_steps = int(steps)
        settings["critic_steps"] = objective.critic_steps
    optimizer_override = dict(settings_overrides.get("optimizer") or {})
    if optimizer_override.get("name", settings["optimizer"]["name"]) != settings["optimizer"]["name"]:
        # another optimiser class: the recommended one's own options (Adam's betas) do not apply to it
        settings["optimizer"] = {"name": optimizer_override["name"], "lr": settings["optimizer"]["lr"]}
    settings["optimizer"].update(optimizer_override)
    settings["optimizer"].update({key: settings_overrides[key] for key in ("lr", "betas") if key in settings_overrides})
    lr, betas = settings["optimizer"].get("lr"), settings["optimizer"].get("betas")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < float("inf"):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if betas is not None and (not isinstance(betas, (list, tuple)) or len(betas) != 2
                              or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas)):
        raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
    return objective, settings


def build_optimizer(parameters: Iterable[torch.nn.Parameter], optimizer: dict[str, Any]) -> torch.optim.Optimizer:
    """A torch optimiser from settings such as `{"name": "Adam", "lr": 1e-4, "betas": (0.0, 0.9)}`."""
    options = dict(optimizer)
    name = options.pop("name")
    if not hasattr(torch.optim, name):
        raise ValueError(f"unknown optimizer {name!r} (a class of torch.optim, e.g. Adam, RMSprop)")
    if "betas" in options:
        options["betas"] = tuple(options["betas"])
    accepted = inspect.signature(getattr(torch.optim, name).__init__).parameters
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"optimizer {name} does not take {', '.join(unknown)}")
    return getattr(torch.optim, name)(parameters, **options)


__all__ = [
    "AdversarialObjective",
    "HingeLoss",
    "LOSSES",
    "NonSaturatingGANLoss",
    "ReconstructionLoss",
    "VAELoss",
    "WassersteinGradientPenalty",
    "WassersteinLoss",
    "WassersteinWeightClipping",
    "auxiliary_classification_loss",
    "build_objective",
    "build_optimizer",
    "gradient_penalty",
    "kl_divergence",
    "split_critic_output",
]
