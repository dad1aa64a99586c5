"""Build the networks of a model family by name.

| family    | modules                                                  | objective (`medvol.objectives`)        |
|-----------|----------------------------------------------------------|----------------------------------------|
| cae       | ConvAutoencoder                                          | MSE reconstruction                     |
| vae       | VariationalAutoencoder                                   | MSE + KL                               |
| gan       | FullyConnectedGenerator / FullyConnectedDiscriminator    | non-saturating BCE                     |
| dcgan     | DCGANGenerator / DCGANDiscriminator (batch norm)         | non-saturating BCE                     |
| wgan      | DCGANGenerator / DCGANDiscriminator (batch norm)         | Wasserstein, weight clipping           |
| wgan_gp   | ResidualGenerator / ResidualCritic (no norm in critic)   | Wasserstein, gradient penalty          |
| cgan      | DCGAN pair, label embedding in G, projection critic      | non-saturating BCE                     |
| acwgan_gp | residual pair, label embedding in G, class head in critic| gradient penalty + auxiliary CE        |
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from torch import nn

from medvol.networks.autoencoders import ConvAutoencoder, VariationalAutoencoder
from medvol.networks.gans import (
    DCGANDiscriminator,
    DCGANGenerator,
    FullyConnectedDiscriminator,
    FullyConnectedGenerator,
    ResidualCritic,
    ResidualGenerator,
)

AUTOENCODER_FAMILIES = {"cae": ConvAutoencoder, "vae": VariationalAutoencoder}

# family -> (generator class, critic class, family-specific generator arguments, critic arguments, conditional)
GAN_FAMILIES: dict[str, tuple[type[nn.Module], type[nn.Module], dict[str, Any], dict[str, Any], bool]] = {
    "gan": (FullyConnectedGenerator, FullyConnectedDiscriminator, {}, {}, False),
    "dcgan": (DCGANGenerator, DCGANDiscriminator, {}, {}, False),
    "wgan": (DCGANGenerator, DCGANDiscriminator, {}, {}, False),
    "wgan_gp": (ResidualGenerator, ResidualCritic, {}, {"norm": None}, False),
    "cgan": (DCGANGenerator, DCGANDiscriminator, {}, {"projection": True}, True),
    "acwgan_gp": (
        ResidualGenerator,
        ResidualCritic,
        {},
        {"norm": None, "projection": False, "auxiliary_classifier": True},
        True,
    ),
}
FAMILIES = (*AUTOENCODER_FAMILIES, *GAN_FAMILIES)


def _accepts(cls: type, name: str) -> bool:
    return name in inspect.signature(cls.__init__).parameters


def build(
    family: str, spatial_dims: int, image_size: int | Sequence[int], num_classes: int = 0, **overrides: Any
) -> dict[str, nn.Module]:
    """Build the networks of `family`.

    Args:
        family: one of `FAMILIES`.
        spatial_dims: 2 or 3.
        image_size: spatial shape of the images.
        num_classes: number of classes; the conditional families (cgan, acwgan_gp) need at least 2, the others use
            it only when their critic is asked for conditioning through `critic={...}`.
        overrides: constructor arguments. `generator={...}` and `critic={...}` go to one network; any other key goes
            to every network of the family whose constructor takes it (e.g. `latent_size`, `in_channels`, `start_shape`).

    Returns:
        `{"autoencoder": module}` for cae/vae, else `{"generator": module, "critic": module}`.

    Raises:
        ValueError: unknown family, a conditional family without classes, or an override no network takes.
    """
    if family in AUTOENCODER_FAMILIES:
        cls = AUTOENCODER_FAMILIES[family]
        unknown = [key for key in overrides if not _accepts(cls, key)]
        if unknown:
            raise ValueError(f"{family}: {cls.__name__} takes no argument {unknown[0]!r}")
        return {"autoencoder": cls(spatial_dims, image_size, **overrides)}
    if family not in GAN_FAMILIES:
        raise ValueError(f"unknown model family {family!r}; choose one of {', '.join(FAMILIES)}")
    generator_cls, critic_cls, generator_args, critic_args, conditional = GAN_FAMILIES[family]
    if conditional and num_classes < 2:
        raise ValueError(f"{family} is a conditional family: it needs num_classes >= 2, got {num_classes}")
    generator_args = {**generator_args, "num_classes": num_classes if conditional else 0}
    critic_args = {**critic_args, "num_classes": num_classes if conditional else 0}
    generator_args.update(overrides.pop("generator", None) or {})
    critic_args.update(overrides.pop("critic", None) or {})
    for key, value in overrides.items():
        takers = [args for cls, args in ((generator_cls, generator_args), (critic_cls, critic_args)) if _accepts(cls, key)]
        if not takers:
            raise ValueError(f"{family}: neither {generator_cls.__name__} nor {critic_cls.__name__} takes {key!r}")
        for args in takers:
            args.setdefault(key, value)
    return {
        "generator": generator_cls(spatial_dims, image_size, **generator_args),
        "critic": critic_cls(spatial_dims, image_size, **critic_args),
    }
