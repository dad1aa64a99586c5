"""Build the networks of a model family by name (the families and their networks: `medvol.families`).

Options of the conditional recipe for small data (any GAN family, through `generator={...}` / `critic={...}`):
`critic={"spectral_norm": True, "norm": None}` (spectral-norm critic), `critic={"projection": True}` (projection
conditioning), `generator={"conditional_norm": True}` (per-class gain and bias in the generator's normalisation),
`generator={"upsampling": "nearest"}` (DCGAN generator: interpolation + convolution instead of transposed
convolutions); with `build_objective(family, loss="hinge")` for the hinge loss.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from torch import nn

from medvol import families
from medvol.defaults import BASE_WIDTH, WIDTH_DOUBLING_DATASET_SIZES
from medvol.networks.blocks import count_parameters, plan_resolution, spatial_shape

# the widest layer is at most this many times the base width (DCGAN's published 1024 / 128)
MAX_WIDTH_FACTOR = 8


def default_width(spatial_dims: int, dataset_size: int | None = None) -> int:
    """Base channel count for a dataset: `BASE_WIDTH` (32 in 2D, 16 in 3D), doubled at 2 000 and again at 20 000
    training samples (unknown size: the base)."""
    width = BASE_WIDTH[int(spatial_dims)]
    for threshold in WIDTH_DOUBLING_DATASET_SIZES:
        if dataset_size is not None and dataset_size >= threshold:
            width *= 2
    return width


def _stage_widths(width: int, stages: int) -> list[int]:
    """`stages` widths fine to coarse: `width`, doubling per stage, capped at `MAX_WIDTH_FACTOR * width`."""
    return [width * min(2**stage, MAX_WIDTH_FACTOR) for stage in range(stages)]


def _stages(image_size: Sequence[int], options: dict[str, Any]) -> int | None:
    """Stride-2 stages of a strided network at `image_size` (coarsest axis 4 to 7); None when `start_shape` is given
    or no such plan exists (the network class then reports the problem)."""
    if options.get("start_shape") is not None:
        return None
    try:
        return plan_resolution(tuple(int(s) for s in image_size)).num_stages or None
    except ValueError:
        return None


def sized_options(
    family: str,
    spatial_dims: int,
    image_size: int | Sequence[int],
    network: dict[str, Any] | None = None,
    width: int | None = None,
    dataset_size: int | None = None,
) -> dict[str, Any]:
    """`build` overrides with the layer widths of `family` sized to the data; what `network` sets is kept.

    The networks' own defaults are the published sizes (a 38 M-parameter DCGAN pair at 64^2), far too big for a few
    hundred images on a CPU. Here every width follows one base width (`width`, else `default_width`): strided networks
    (DCGAN, autoencoders) get one stage per halving down to a 4-7 voxel coarsest axis, widths `width * 2**stage`
    capped at 8 x `width`; residual networks `base_channels=width`, `max_channels=4*width`; the fully connected GAN
    hidden layers of 4, 8 and 16 x `width` (discriminator 8 and 4 x `width`).

    Args:
        family: a registered family (`medvol.families`); its `width_rule` says which widths are set.
        spatial_dims: 2 or 3.
        image_size: spatial shape of the images.
        network: user overrides (as `build` takes them); their keys win.
        width: base channel count; None for `default_width(spatial_dims, dataset_size)`.
        dataset_size: training samples, used when `width` is None.

    Returns:
        the overrides to pass to `build` (the explicit widths are what a run records, so that sampling rebuilds
        the same networks).
    """
    if width is not None and int(width) < 1:
        raise ValueError(f"width must be a positive number of channels, got {width}")
    options = {key: dict(value) if isinstance(value, dict) else value for key, value in (network or {}).items()}
    width = int(width) if width is not None else default_width(spatial_dims, dataset_size)
    size = spatial_shape(image_size, spatial_dims)
    spec = families.get_family(family)
    if spec.is_autoencoder:
        stages = _stages(size, options)
        if spec.width_rule is families.WidthRule.STRIDED and stages is not None and "channels" not in options:
            options["channels"] = _stage_widths(width, stages)
        return options
    generator = options.setdefault("generator", {})
    critic = options.setdefault("critic", {})
    if spec.width_rule is families.WidthRule.DENSE:
        generator.setdefault("hidden_sizes", [4 * width, 8 * width, 16 * width])
        critic.setdefault("hidden_sizes", [8 * width, 4 * width])
    elif spec.width_rule is families.WidthRule.STRIDED:
        for part in (generator, critic):
            stages = _stages(size, {**options, **part})
            if stages is not None and "channels" not in part and "channels" not in options:
                widths = _stage_widths(width, stages)
                part["channels"] = widths[::-1] if part is generator else widths
    elif spec.width_rule is families.WidthRule.RESIDUAL:
        for part in (generator, critic):
            if "channels" not in part and "channels" not in options:
                part.setdefault("base_channels", options.get("base_channels", width))
                part.setdefault("max_channels", options.get("max_channels", 4 * width))
    return options


def parameter_counts(networks: dict[str, nn.Module]) -> dict[str, int]:
    """Trainable parameters of each network of a family, by name."""
    return {name: count_parameters(module) for name, module in networks.items()}


def _accepts(cls: type, name: str) -> bool:
    return name in inspect.signature(cls.__init__).parameters


def build(
    family: str, spatial_dims: int, image_size: int | Sequence[int], num_classes: int = 0, **overrides: Any
) -> dict[str, nn.Module]:
    """Build the networks of `family`.

    Args:
        family: a registered family (`medvol.families`).
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
    spec = families.get_family(family)
    if spec.is_autoencoder:
        cls = spec.network_class("autoencoder")
        unknown = [key for key in overrides if not _accepts(cls, key)]
        if unknown:
            raise ValueError(f"{family}: {cls.__name__} takes no argument {unknown[0]!r}")
        return {"autoencoder": cls(spatial_dims, image_size, **{**spec.network_args.get("autoencoder", {}), **overrides})}
    generator_cls, critic_cls = spec.network_class("generator"), spec.network_class("critic")
    if spec.conditional and num_classes < 2:
        raise ValueError(f"{family} is a conditional family: it needs num_classes >= 2, got {num_classes}")
    classes = num_classes if spec.conditional else 0
    generator_args = {**spec.network_args.get("generator", {}), "num_classes": classes}
    critic_args = {**spec.network_args.get("critic", {}), "num_classes": classes}
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
