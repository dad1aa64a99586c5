"""Model families: one `FamilySpec` per family, in one registry that every other module asks.

A family is a set of networks, an objective with its defaults, a trainer, the network training exports, and the
words its bundle says about it. `medvol.networks.factory.build` builds its networks, `medvol.objectives.build_objective`
its objective, `medvol.bundles.training.build_trainer` its trainer, `medvol.sampling` draws from it, and
`medvol.bundles.render` writes its bundle folder (`scripts/render_bundles.py`). Adding a family is one
`register_family(FamilySpec(...))` (see docs/architecture.md, "How to add a family").

| family    | networks                                                  | objective (`medvol.objectives`)        |
|-----------|-----------------------------------------------------------|----------------------------------------|
| cae       | ConvAutoencoder                                           | MSE reconstruction                     |
| vae       | VariationalAutoencoder                                    | MSE + KL                               |
| gan       | FullyConnectedGenerator / FullyConnectedDiscriminator     | non-saturating BCE                     |
| dcgan     | DCGANGenerator / DCGANDiscriminator (batch norm)          | non-saturating BCE                     |
| wgan      | DCGANGenerator / DCGANDiscriminator (batch norm)          | Wasserstein, weight clipping           |
| wgan_gp   | ResidualGenerator / ResidualCritic (no norm in critic)    | Wasserstein, gradient penalty          |
| cgan      | DCGAN pair, label embedding in G, projection critic       | non-saturating BCE + mode seeking      |
| acwgan_gp | residual pair, label embedding in G, class head in critic | gradient penalty + auxiliary CE        |
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

__all__ = [
    "FamilyKind",
    "LatentPrior",
    "WidthRule",
    "BundleText",
    "FamilySpec",
    "register_family",
    "unregister_family",
    "get_family",
    "family_names",
    "bundle_help",
]


class FamilyKind(str, Enum):
    """How a family learns: which networks it has and how it is trained and sampled."""

    AUTOENCODER = "autoencoder"  # one network `autoencoder`, reconstruction objective, samples by decoding latents
    ADVERSARIAL = "adversarial"  # `generator` and `critic`, adversarial objective, samples by the generator


class LatentPrior(str, Enum):
    """Where sampling draws latent vectors from."""

    STANDARD_NORMAL = "standard_normal"
    TRAINING_CODES = "training_codes"  # a Gaussian fitted to the codes of training images (an autoencoder without prior)


class WidthRule(str, Enum):
    """How `medvol.networks.factory.sized_options` sizes a family's layers from one base width."""

    STRIDED = "strided"  # `channels` per stride-2 stage (autoencoders, DCGAN pair)
    RESIDUAL = "residual"  # `base_channels` / `max_channels`
    DENSE = "dense"  # `hidden_sizes` of fully connected networks


def locate(target: type | str) -> type:
    """A class, or the class a dotted name (``package.module.Class``) names, imported on first use.

    Raises:
        ValueError: the name is not an importable class.
    """
    if isinstance(target, type):
        return target
    module, _, name = str(target).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name) if module else None
    except (ImportError, AttributeError):
        cls = None
    if not isinstance(cls, type):
        raise ValueError(f"{target!r} is not an importable class")
    return cls


# what a kind fixes unless its spec says otherwise
_KIND_DEFAULTS = {
    FamilyKind.AUTOENCODER: {
        "output_range": (0.0, 1.0),
        "trainer": "medvol.engines.AutoencoderTrainer",
        "exported_network": "autoencoder",
    },
    FamilyKind.ADVERSARIAL: {
        "output_range": (-1.0, 1.0),
        "trainer": "medvol.engines.GenerativeAdversarialTrainer",
        "exported_network": "generator",
    },
}


@dataclass(frozen=True, kw_only=True)
class BundleText:
    """What a family's bundle folder says about it (`medvol.bundles.render` fills the one template with it).

    Args:
        title: README title, e.g. ``Wasserstein GAN with gradient penalty``.
        task: completes the metadata task "... with a 2D/3D <task>".
        summary: the first comment line of ``train.yaml``.
        about: the metadata description (the template adds the image range and how to choose 2D/3D).
        learns: the README's "What it learns" after "to generate new synthetic ones: ".
        network_example: example of ``network`` overrides in ``train.yaml``.
        objective_example: example of ``objective`` overrides in ``train.yaml``.
        image_size: the bundle's default image size.
        measurements: README bullets of measured file sizes and times (markdown); empty: not measured.
        notes: a README note before the line on GPU figures.
    """

    title: str
    task: str
    summary: str
    about: str
    learns: str
    network_example: str = "{latent_size: 64}"
    objective_example: str = "{lr: 0.0002}"
    image_size: int = 64
    measurements: str = ""
    notes: str = ""


@dataclass(frozen=True, kw_only=True)
class FamilySpec:
    """Everything medvol knows about one model family.

    Args:
        name: the family's name (bundle folder, ``run.json`` ``family``, ``medvol train --bundle``).
        kind: `FamilyKind`.
        networks: network name to class (or its dotted name, imported on first use: this module stays light for
            the command line), ``{"autoencoder": cls}`` or ``{"generator": cls, "critic": cls}``; every class takes
            ``(spatial_dims, image_size, **options)``.
        network_args: fixed constructor arguments per network name (e.g. the critic's ``{"norm": None}``).
        conditional: the networks condition on class labels (``num_classes`` >= 2 required).
        objective: the objective class (`medvol.objectives`) or its dotted name.
        objective_defaults: its constructor arguments for this family.
        output_range: intensity range of the images the networks produce; None: the kind's.
        trainer: the trainer class or its dotted name; None: the kind's.
        exported_network: the network training exports as ``models/model.pt`` and sampling needs; None: the kind's.
        latent_prior: `LatentPrior` sampling draws latents from.
        width_rule: `WidthRule` that sizes the layers from a base width; None: the networks' own defaults.
        description: one line for the command-line help.
        bundle: the words of the bundle folder.
    """

    name: str
    kind: FamilyKind
    networks: Mapping[str, type | str]
    network_args: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    conditional: bool = False
    objective: type | str
    objective_defaults: Mapping[str, Any] = field(default_factory=dict)
    output_range: tuple[float, float] | None = None
    trainer: type | str | None = None
    exported_network: str | None = None
    latent_prior: LatentPrior = LatentPrior.STANDARD_NORMAL
    width_rule: WidthRule | None = None
    description: str
    bundle: BundleText

    def __post_init__(self) -> None:
        kind = FamilyKind(self.kind)
        object.__setattr__(self, "kind", kind)
        for key, value in _KIND_DEFAULTS[kind].items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, value)
        object.__setattr__(self, "output_range", tuple(float(v) for v in self.output_range))
        expected = {"autoencoder"} if kind is FamilyKind.AUTOENCODER else {"generator", "critic"}
        if set(self.networks) != expected:
            raise ValueError(f"{self.name}: {kind.value} families have the networks {sorted(expected)}, "
                             f"got {sorted(self.networks)}")
        if self.exported_network not in self.networks:
            raise ValueError(f"{self.name}: exported_network {self.exported_network!r} is none of its networks")

    @property
    def is_autoencoder(self) -> bool:
        return self.kind is FamilyKind.AUTOENCODER

    def network_class(self, network: str) -> type:
        """The class of one of the family's networks."""
        return locate(self.networks[network])

    def objective_class(self) -> type:
        return locate(self.objective)

    def trainer_class(self) -> type:
        return locate(self.trainer)


_REGISTRY: dict[str, FamilySpec] = {}


def register_family(spec: FamilySpec, *, replace: bool = False) -> FamilySpec:
    """Add a family to the registry.

    Args:
        spec: the family.
        replace: allow replacing a registered family of the same name.

    Raises:
        ValueError: a family of that name exists and `replace` is False.
    """
    if spec.name in _REGISTRY and not replace:
        raise ValueError(f"family {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def unregister_family(name: str) -> FamilySpec:
    """Remove a family from the registry and return its spec."""
    return _REGISTRY.pop(get_family(name).name)


def get_family(name: str) -> FamilySpec:
    """The spec of a registered family.

    Raises:
        ValueError: no family of that name.
    """
    spec = _REGISTRY.get(str(name))
    if spec is None:
        raise ValueError(f"unknown model family {name!r}; choose one of {', '.join(_REGISTRY)}")
    return spec


def family_names(kind: FamilyKind | str | None = None) -> tuple[str, ...]:
    """Names of the registered families in registration order, only those of `kind` when given."""
    return tuple(name for name, spec in _REGISTRY.items() if kind is None or spec.kind == FamilyKind(kind))


def bundle_help() -> str:
    """The help of ``medvol train --bundle``: every family's name and description."""
    described = ", ".join(f"{name} = {spec.description}" for name, spec in _REGISTRY.items())
    return f"bundle name or path; the families: {described}"


_GANS = "medvol.networks.gans."
_AUTOENCODERS = "medvol.networks.autoencoders."
_DCGAN_NETWORK_EXAMPLE = "{latent_size: 64, minibatch_std: true, critic: {channels: [32, 64, 128, 256]}}"
_AUTOENCODER_NETWORK_EXAMPLE = "{latent_size: 64, channels: [32, 64, 128, 128]}"
_MEASURED = (
    "- Files at the default widths (a few hundred training images; measured through the trainers at commit 74f6dd8 "
    "and again at 0b4714c with the same result, fp32): {files}. {holds} `checkpoints/` keeps the last 3 (and the best, "
    "when evaluation runs); once training is done it can be deleted, `medvol sample` then uses `models/model.pt`.\n"
    "- Measured on the development machine (2 CPU cores shared with other jobs, so expect 2-4x variation; fp32, "
    "default networks, 2D {size}^2 phantoms, batch 16): **{seconds} s per iteration** ({steps}), the process's peak "
    "resident memory stayed below {memory} GB."
)
_AUTOENCODER_HOLDS = (
    "A checkpoint holds the weights and Adam's two moments, plus RNG states and counters (about 10 KB); "
    "`models/model.pt` is the autoencoder alone."
)
_GAN_HOLDS = (
    "A checkpoint holds both networks' weights, {state} and the EMA generator, plus RNG states and counters (about "
    "10 KB); `models/model.pt` is the EMA generator alone."
)
_ADAM_STATE = "Adam state (two moments per weight)"
_PENALTY_NOTE = (
    "The gradient penalty differentiates the critic twice: on a 2-core CPU a 3D critic step at 32^3 takes over 10 s, "
    "so train the volumetric model on a GPU."
)


def _measured(files: str, holds: str, seconds: str, steps: str, memory: str, size: int = 64) -> str:
    return _MEASURED.format(files=files, holds=holds, seconds=seconds, steps=steps, memory=memory, size=size)


def _files(*sizes: str) -> str:
    """`sizes`: parameters, checkpoint and model MB in 2D 64^2, then the same in 3D 32^3."""
    p2, c2, m2, p3, c3, m3 = sizes
    return (f"2D 64^2 ({p2} M parameters): checkpoint {c2} MB, `models/model.pt` {m2} MB; 3D 32^3 ({p3} M parameters): "
            f"checkpoint {c3} MB, `models/model.pt` {m3} MB")


for _spec in (
    FamilySpec(
        name="cae",
        kind=FamilyKind.AUTOENCODER,
        networks={"autoencoder": _AUTOENCODERS + "ConvAutoencoder"},
        objective="medvol.objectives.ReconstructionLoss",
        latent_prior=LatentPrior.TRAINING_CODES,
        width_rule=WidthRule.STRIDED,
        description="convolutional autoencoder",
        bundle=BundleText(
            title="Convolutional autoencoder",
            task="convolutional autoencoder",
            summary="convolutional autoencoder (published layout: 4 strided convolutions 64-128-256-256, dense latent "
            "100 in 2D / 200 in 3D, transposed-convolution decoder, sigmoid output).",
            about="Learns to compress a medical image or volume into a dense latent code (100 values in 2D, 200 in 3D) "
            "and to reconstruct it; synthetic images come from decoding latent vectors drawn from a Gaussian fitted to "
            "the latent codes of training images.",
            learns="an encoder of 4 strided convolutions (kernel 5, stride 2; 64, 128, 256, 256 channels; LeakyReLU "
            "0.2) into a dense latent code (100 values in 2D, 200 in 3D) and a decoder of 4 transposed convolutions "
            "(kernel 4, stride 2; ReLU; sigmoid output) that reconstructs the image. Objective: MSE (or L1) "
            "reconstruction, Adam lr 1e-3. The autoencoder has no prior: `inference.yaml` decodes latent codes drawn "
            "from a Gaussian fitted, per latent dimension, to the codes of up to 64 training images, so samples "
            "resemble perturbed training images.",
            network_example=_AUTOENCODER_NETWORK_EXAMPLE,
            objective_example="{metric: l1, lr: 0.0005}",
            measurements=_measured(_files("2.59", "31.1", "10.4", "2.13", "25.6", "8.5"), _AUTOENCODER_HOLDS, "1.76",
                                   "one step", "0.57"),
        ),
    ),
    FamilySpec(
        name="vae",
        kind=FamilyKind.AUTOENCODER,
        networks={"autoencoder": _AUTOENCODERS + "VariationalAutoencoder"},
        objective="medvol.objectives.VAELoss",
        width_rule=WidthRule.STRIDED,
        description="variational autoencoder",
        bundle=BundleText(
            title="Variational autoencoder",
            task="variational autoencoder",
            summary="variational autoencoder (the convolutional autoencoder's backbone, reparameterisation, MSE + KL).",
            about="Learns a Gaussian latent space of medical images or volumes (reparameterisation, MSE + KL "
            "objective); synthetic images come from decoding latent vectors drawn from the prior.",
            learns="the convolutional autoencoder's backbone with a Gaussian latent (mean and log-variance heads, "
            "reparameterisation). Objective: MSE reconstruction + KL divergence (weight configurable, `objective: "
            "{kl_weight: ...}`), Adam lr 1e-3. `inference.yaml` decodes draws from the prior N(0, I).",
            network_example=_AUTOENCODER_NETWORK_EXAMPLE,
            objective_example="{kl_weight: 8.0, lr: 0.0005} (KL per voxel: default 32.768)",
            measurements=_measured(_files("3.00", "36.0", "12.0", "2.95", "35.4", "11.8"), _AUTOENCODER_HOLDS, "1.73",
                                   "one step", "0.67"),
        ),
    ),
    FamilySpec(
        name="gan",
        kind=FamilyKind.ADVERSARIAL,
        networks={"generator": _GANS + "FullyConnectedGenerator", "critic": _GANS + "FullyConnectedDiscriminator"},
        objective="medvol.objectives.NonSaturatingGANLoss",
        width_rule=WidthRule.DENSE,
        description="fully connected GAN",
        bundle=BundleText(
            title="Vanilla GAN",
            task="vanilla (fully connected) GAN",
            summary="vanilla GAN (fully connected generator 256-512-1024 and discriminator 512-256, non-saturating "
            "BCE); for small images.",
            about="Fully connected generator and discriminator (non-saturating BCE); learns to map noise to small "
            "medical images or volumes.",
            learns="a fully connected generator (256, 512, 1024 units, LeakyReLU 0.3, batch norm, tanh) and "
            "discriminator (512, 256, LeakyReLU 0.2) trained with the non-saturating BCE loss (Adam lr 2e-4, betas "
            "0.5/0.999, one critic step). Every voxel is a dense output: keep images small (default 32^2; 3D only at "
            "16^3-32^3).",
            network_example=_DCGAN_NETWORK_EXAMPLE,
            objective_example="{label_smoothing: 0.1, lr: 0.0002}",
            image_size=32,
            measurements=_measured(_files("3.36", "49.5", "9.1", "12.67", "186.0", "33.9"),
                                   _GAN_HOLDS.format(state=_ADAM_STATE), "0.34", "1 critic step + 1 generator step",
                                   "0.67", size=32),
        ),
    ),
    FamilySpec(
        name="dcgan",
        kind=FamilyKind.ADVERSARIAL,
        networks={"generator": _GANS + "DCGANGenerator", "critic": _GANS + "DCGANDiscriminator"},
        objective="medvol.objectives.NonSaturatingGANLoss",
        width_rule=WidthRule.STRIDED,
        description="deep convolutional GAN",
        bundle=BundleText(
            title="DCGAN",
            task="DCGAN",
            summary="DCGAN (dense to 1024 x 4^d, transposed convolutions kernel 5 stride 2, batch norm in G and D, "
            "non-saturating BCE).",
            about="Deep convolutional GAN with batch norm in generator and discriminator (non-saturating BCE); learns "
            "to map noise to medical images or volumes.",
            learns="a deep convolutional generator (dense to 1024 x 4^d, transposed convolutions kernel 5 stride 2 "
            "through 512, 256, 128, batch norm, ReLU, tanh) and the mirrored strided-convolution discriminator (batch "
            "norm, LeakyReLU) trained with the non-saturating BCE loss (Adam lr 2e-4, betas 0.5/0.999).",
            network_example=_DCGAN_NETWORK_EXAMPLE,
            objective_example="{label_smoothing: 0.1}",
            measurements=_measured(_files("2.57", "36.8", "6.0", "1.06", "15.7", "2.9"),
                                   _GAN_HOLDS.format(state=_ADAM_STATE), "9.13", "1 critic step + 1 generator step",
                                   "1.46"),
        ),
    ),
    FamilySpec(
        name="wgan",
        kind=FamilyKind.ADVERSARIAL,
        networks={"generator": _GANS + "DCGANGenerator", "critic": _GANS + "DCGANDiscriminator"},
        objective="medvol.objectives.WassersteinWeightClipping",
        width_rule=WidthRule.STRIDED,
        description="Wasserstein GAN with weight clipping",
        bundle=BundleText(
            title="Wasserstein GAN with weight clipping",
            task="Wasserstein GAN with weight clipping",
            summary="Wasserstein GAN with weight clipping (DCGAN networks, clip 0.01, RMSprop lr 5e-5, 5 critic "
            "steps).",
            about="DCGAN-style generator and critic trained with the Wasserstein loss, critic weights clipped to "
            "[-0.01, 0.01], RMSprop, 5 critic steps per generator step.",
            learns="the DCGAN networks trained with the Wasserstein loss; the critic's weights are clipped to [-0.01, "
            "0.01] after each step; RMSprop lr 5e-5; 5 critic steps per generator step, each on a fresh real batch and "
            "fresh fakes.",
            network_example=_DCGAN_NETWORK_EXAMPLE,
            objective_example="{clip_value: 0.01, critic_steps: 5}",
            measurements=_measured(_files("2.57", "26.6", "6.0", "1.06", "11.4", "2.9"),
                                   _GAN_HOLDS.format(state="RMSprop state (one average per weight)"), "32.57",
                                   "5 critic steps + 1 generator step", "1.96"),
        ),
    ),
    FamilySpec(
        name="wgan_gp",
        kind=FamilyKind.ADVERSARIAL,
        networks={"generator": _GANS + "ResidualGenerator", "critic": _GANS + "ResidualCritic"},
        network_args={"critic": {"norm": None}},
        objective="medvol.objectives.WassersteinGradientPenalty",
        width_rule=WidthRule.RESIDUAL,
        description="Wasserstein GAN with gradient penalty",
        bundle=BundleText(
            title="Wasserstein GAN with gradient penalty",
            task="Wasserstein GAN with gradient penalty",
            summary="Wasserstein GAN with gradient penalty (residual generator and critic, no batch norm in the "
            "critic, lambda 10, Adam (0, 0.9), 5 critic steps).",
            about="Residual generator and critic (no batch norm in the critic) trained with the Wasserstein loss and a "
            "gradient penalty (lambda 10), Adam (0, 0.9), 5 critic steps per generator step.",
            learns="a residual generator and critic that grow with the resolution (one block per factor of 2; no batch "
            "norm in the critic, as the penalty requires) trained with the Wasserstein loss and a gradient penalty "
            "(lambda 10, per-sample interpolation; computed in fp32 under mixed precision); Adam lr 1e-4, betas (0, "
            "0.9); 5 critic steps per generator step; samples come from an exponential moving average of the "
            "generator weights (decay 0.999).",
            network_example=_DCGAN_NETWORK_EXAMPLE,
            objective_example="{critic_steps: 5, penalty_weight: 10}",
            measurements=_measured(_files("1.65", "24.1", "4.2", "1.08", "16.6", "3.5"),
                                   _GAN_HOLDS.format(state=_ADAM_STATE), "68.74", "5 critic steps + 1 generator step",
                                   "3.12"),
            notes=_PENALTY_NOTE,
        ),
    ),
    FamilySpec(
        name="cgan",
        kind=FamilyKind.ADVERSARIAL,
        networks={"generator": _GANS + "DCGANGenerator", "critic": _GANS + "DCGANDiscriminator"},
        network_args={"critic": {"projection": True}},
        conditional=True,
        objective="medvol.objectives.NonSaturatingGANLoss",
        objective_defaults={"mode_seeking_weight": 1.0},
        width_rule=WidthRule.STRIDED,
        description="conditional GAN (needs class labels)",
        bundle=BundleText(
            title="Conditional GAN",
            task="conditional GAN",
            summary="conditional GAN (DCGAN networks, label embedding concatenated with the noise, projection critic, "
            "non-saturating BCE).",
            about="DCGAN pair conditioned on the class label (label embedding concatenated with the noise, projection "
            "critic); generates images of a requested class.",
            learns="the DCGAN networks conditioned on the class label: a label embedding concatenated with the noise in "
            "the generator and a projection critic (embedding inner product with the critic's features); "
            "non-saturating BCE, plus the mode-seeking term (MSGAN, weight 1; `objective: {mode_seeking_weight: 0}` "
            "turns it off), without which the generator ignored its noise and returned one image per class "
            "(docs/results.md). `network: {minibatch_std: true}` adds a per-class minibatch standard deviation channel "
            "to the critic. `inference.yaml` draws N images per class (or of `--label`).",
            network_example=_DCGAN_NETWORK_EXAMPLE,
            objective_example="{label_smoothing: 0.1}",
            measurements=_measured(_files("2.99", "43.5", "7.6", "1.48", "22.3", "4.6"),
                                   _GAN_HOLDS.format(state=_ADAM_STATE), "2.35", "1 critic step + 1 generator step",
                                   "2.63"),
        ),
    ),
    FamilySpec(
        name="acwgan_gp",
        kind=FamilyKind.ADVERSARIAL,
        networks={"generator": _GANS + "ResidualGenerator", "critic": _GANS + "ResidualCritic"},
        network_args={"critic": {"norm": None, "projection": False, "auxiliary_classifier": True}},
        conditional=True,
        objective="medvol.objectives.WassersteinGradientPenalty",
        # the conditional families ignore their noise without the mode-seeking term (one image per class; docs/results.md)
        objective_defaults={"auxiliary_weight": 1.0, "mode_seeking_weight": 1.0},
        width_rule=WidthRule.RESIDUAL,
        description="auxiliary-classifier WGAN-GP (needs class labels)",
        bundle=BundleText(
            title="Auxiliary-classifier WGAN-GP",
            task="auxiliary-classifier WGAN-GP",
            summary="auxiliary-classifier WGAN-GP (residual networks, label embedding in the generator, class head on "
            "the critic, gradient penalty + cross-entropy).",
            about="Residual WGAN-GP conditioned on the class label with an auxiliary classification head on the critic "
            "(cross-entropy on real and generated images); generates images of a requested class.",
            learns="the residual WGAN-GP networks conditioned on the class label (embedding in the generator) with an "
            "auxiliary classification head on the critic: Wasserstein loss + gradient penalty + cross-entropy of the "
            "class head on real and generated images (`objective: {auxiliary_weight: ...}`). `inference.yaml` draws N "
            "images per class (or of `--label`).",
            network_example=_DCGAN_NETWORK_EXAMPLE,
            objective_example="{auxiliary_weight: 1.0, critic_steps: 5}; mode_seeking_weight is 1.0 by default (0 "
            "collapses to one image per class)",
            measurements=_measured(_files("1.92", "28.3", "5.2", "1.62", "25.0", "5.6"),
                                   _GAN_HOLDS.format(state=_ADAM_STATE), "64.5", "5 critic steps + 1 generator step",
                                   "3.25"),
            notes=_PENALTY_NOTE,
        ),
    ),
):
    register_family(_spec)
del _spec
