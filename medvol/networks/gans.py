"""Generators and critics (discriminators) of the GAN families, each one class for 2D and 3D.

Contract: `generator(z, labels=None) -> images` in [-1, 1] with `z` of shape `[B, latent_size]`; `critic(x, labels=None)
-> score [B]` (a logit for BCE, a real number for Wasserstein), or `(score [B], class_logits [B, num_classes])` with an
auxiliary classifier head. Unconditional networks (`num_classes=0`) ignore `labels`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from monai.networks.layers.factories import Conv
from torch import nn

from medvol.networks.blocks import (
    MinibatchStdDev,
    ResidualDownBlock,
    ResidualUpBlock,
    check_spatial_dims,
    norm_layer,
    plan_resolution,
    spatial_shape,
    strided_conv,
    upsampling_conv,
)
from medvol.networks.conditioning import ConditionedSequential, CriticHead, InputLabelEmbedding, LabelNoiseConcat
from medvol.networks.init import init_dcgan_weights


class Generator(nn.Module):
    """Base of every generator: checks the noise, concatenates the label embedding when conditional, runs `self.body`.

    Subclasses build `self.body`, a `ConditionedSequential` mapping `[B, self.input_size]` to images
    `[B, out_channels, *image_size]` in [-1, 1] (its class-conditional normalisation layers get the labels).

    Args:
        spatial_dims: 2 or 3.
        image_size: output spatial shape (an int for every axis).
        latent_size: size of the noise vector.
        out_channels: image channels.
        num_classes: number of classes to condition on; 0 for an unconditional generator.
        embedding_size: size of the label embedding concatenated with the noise (default: `latent_size`).
    """

    def __init__(
        self,
        spatial_dims: int,
        image_size: int | Sequence[int],
        latent_size: int,
        out_channels: int = 1,
        num_classes: int = 0,
        embedding_size: int | None = None,
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.image_size = spatial_shape(image_size, spatial_dims)
        self.latent_size = int(latent_size)
        self.out_channels = int(out_channels)
        self.num_classes = int(num_classes)
        if self.num_classes > 0:
            embedding_size = self.latent_size if embedding_size is None else int(embedding_size)
            self.conditioning: LabelNoiseConcat | None = LabelNoiseConcat(self.num_classes, embedding_size)
            self.input_size = self.latent_size + embedding_size
        else:
            self.conditioning = None
            self.input_size = self.latent_size

    def _norm_classes(self, conditional_norm: bool) -> int:
        """`num_classes` for `norm_layer` when the generator's normalisation is class-conditional, else 0."""
        if conditional_norm and self.num_classes < 1:
            raise ValueError("conditional_norm needs a conditional generator (num_classes > 0)")
        return self.num_classes if conditional_norm else 0

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.latent_size:
            raise ValueError(f"noise must have shape [B, {self.latent_size}], got {tuple(z.shape)}")
        h = z if self.conditioning is None else self.conditioning(z, labels)
        return self.body(h, labels)


class Critic(nn.Module):
    """Base of every critic/discriminator: optional input conditioning, `self.features` (image -> `[B, F]`), then
    `CriticHead` (score, projection conditioning, auxiliary classifier). Subclasses build `self.features` and call
    `self._build_head(F)`.

    Args:
        spatial_dims: 2 or 3.
        image_size: input spatial shape.
        in_channels: image channels.
        num_classes: number of classes; 0 for an unconditional critic.
        projection: projection conditioning of the score (used when `num_classes > 0`).
        input_conditioning: multiply a learned per-class map into the input (needs `num_classes > 0`).
        auxiliary_classifier: add a class head; the critic then returns `(score, class_logits)`.
        minibatch_std: add a `MinibatchStdDev` channel to the input of the critic's last layer (the spread within
            each class for a conditional critic, within groups of 4 otherwise), so that it can tell a batch of
            near-identical images from a batch of real ones.
        spectral_norm: divide the weight of every convolution, dense layer and projection embedding by its largest
            singular value (Miyato et al. 2018, one power iteration per training forward), which bounds the critic's
            Lipschitz constant without a gradient penalty. Subclasses call `_apply_spectral_norm()` last.
    """

    def __init__(
        self,
        spatial_dims: int,
        image_size: int | Sequence[int],
        in_channels: int = 1,
        num_classes: int = 0,
        projection: bool = True,
        input_conditioning: bool = False,
        auxiliary_classifier: bool = False,
        minibatch_std: bool = False,
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.image_size = spatial_shape(image_size, spatial_dims)
        self.in_channels = int(in_channels)
        self.spectral_norm = bool(spectral_norm)
        self.num_classes = int(num_classes)
        self.auxiliary_classifier = bool(auxiliary_classifier)
        self._projection = bool(projection)
        if input_conditioning and self.num_classes < 1:
            raise ValueError("input_conditioning needs num_classes > 0")
        self.input_embedding = (
            InputLabelEmbedding(self.num_classes, (self.in_channels, *self.image_size)) if input_conditioning else None
        )
        self.minibatch_std = bool(minibatch_std)

    def _before_last_layer(self, width: int) -> tuple[list[nn.Module], int]:
        """The layers to put in front of the last layer of `self.features`, and that layer's input width."""
        return ([MinibatchStdDev()], width + 1) if self.minibatch_std else ([], width)

    def _build_head(self, feature_size: int) -> None:
        self.head = CriticHead(feature_size, self.num_classes, self._projection, self.auxiliary_classifier)

    def _apply_spectral_norm(self) -> None:
        """Spectrally normalise the weights of `self.features` and `self.head` when `spectral_norm` is set (after any
        weight initialisation: the parametrised weight is computed, so initialising it afterwards has no effect)."""
        if not self.spectral_norm:
            return
        for part in (self.features, self.head):
            for layer in part.modules():
                if isinstance(layer, (nn.Linear, nn.modules.conv._ConvNd, nn.Embedding)):
                    nn.utils.parametrizations.spectral_norm(layer)

    def forward(
        self, x: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if tuple(x.shape[1:]) != (self.in_channels, *self.image_size):
            raise ValueError(
                f"critic expects images [B, {self.in_channels}, {', '.join(map(str, self.image_size))}], "
                f"got {tuple(x.shape)}"
            )
        if self.input_embedding is not None:
            x = self.input_embedding(x, labels)
        if not self.minibatch_std:
            return self.head(self.features(x), labels)
        class_labels = labels if self.num_classes > 0 else None
        for layer in self.features:
            x = layer(x, class_labels) if isinstance(layer, MinibatchStdDev) else layer(x)
        return self.head(x, labels)


class FullyConnectedGenerator(Generator):
    """Vanilla GAN generator (Goodfellow et al.; layout of the Keras reference): dense layers, each followed by
    LeakyReLU and batch norm, then a dense layer to every voxel and tanh. For small images.

    Args:
        spatial_dims: 2 or 3.
        image_size: output spatial shape.
        latent_size: noise size.
        hidden_sizes: widths of the hidden dense layers.
        out_channels: image channels.
        negative_slope: LeakyReLU slope (0.3 as published).
        batch_norm_momentum: PyTorch momentum of the batch norms. The published Keras value 0.8 is the weight of the
            old running average; PyTorch's momentum is the weight of the new batch, so the equivalent is 1 - 0.8 = 0.2.
        num_classes: classes to condition on (0: unconditional).
        embedding_size: label embedding size (default `latent_size`).
    """

    def __init__(
        self,
        spatial_dims: int,
        image_size: int | Sequence[int],
        *,
        latent_size: int = 100,
        hidden_sizes: Sequence[int] = (256, 512, 1024),
        out_channels: int = 1,
        negative_slope: float = 0.3,
        batch_norm_momentum: float = 0.2,
        num_classes: int = 0,
        embedding_size: int | None = None,
    ) -> None:
        super().__init__(spatial_dims, image_size, latent_size, out_channels, num_classes, embedding_size)
        layers: list[nn.Module] = []
        width = self.input_size
        for hidden in hidden_sizes:
            layers += [
                nn.Linear(width, hidden),
                nn.LeakyReLU(negative_slope),
                nn.BatchNorm1d(hidden, momentum=batch_norm_momentum),
            ]
            width = hidden
        layers += [
            nn.Linear(width, self.out_channels * math.prod(self.image_size)),
            nn.Tanh(),
            nn.Unflatten(1, (self.out_channels, *self.image_size)),
        ]
        self.body = ConditionedSequential(*layers)


class FullyConnectedDiscriminator(Critic):
    """Vanilla GAN discriminator: flatten, dense layers with LeakyReLU, a score (a logit; the sigmoid is in the loss).

    Args:
        spatial_dims: 2 or 3.
        image_size: input spatial shape.
        in_channels: image channels.
        hidden_sizes: widths of the hidden dense layers.
        negative_slope: LeakyReLU slope.
        num_classes, projection, input_conditioning, auxiliary_classifier, minibatch_std, spectral_norm: see `Critic`.
    """

    def __init__(
        self,
        spatial_dims: int,
        image_size: int | Sequence[int],
        *,
        in_channels: int = 1,
        hidden_sizes: Sequence[int] = (512, 256),
        negative_slope: float = 0.2,
        num_classes: int = 0,
        projection: bool = True,
        input_conditioning: bool = False,
        auxiliary_classifier: bool = False,
        minibatch_std: bool = False,
        spectral_norm: bool = False,
    ) -> None:
        super().__init__(
            spatial_dims, image_size, in_channels, num_classes, projection, input_conditioning, auxiliary_classifier,
            minibatch_std, spectral_norm,
        )
        layers: list[nn.Module] = [nn.Flatten()]
        width = self.in_channels * math.prod(self.image_size)
        for index, hidden in enumerate(hidden_sizes):
            if index == len(hidden_sizes) - 1:
                extra, width = self._before_last_layer(width)
                layers += extra
            layers += [nn.Linear(width, hidden), nn.LeakyReLU(negative_slope)]
            width = hidden
        self.features = nn.Sequential(*layers)
        self._build_head(width)
        self._apply_spectral_norm()


class DCGANGenerator(Generator):
    """DCGAN generator (Radford et al.; 3D as in Wu et al.): dense -> `channels[0]` x start shape, then one transposed
    convolution (stride 2 per axis, see `plan_resolution`) per entry of `channels`, batch norm and ReLU between, tanh out.
    Options: interpolation + convolution instead of the transposed convolutions (`upsampling`), class-conditional
    normalisation (`conditional_norm`).

    The default start shape is `image_size / 2**len(channels)` (4 x 4 (x 4) for 64-sized images); pass `start_shape`
    for shapes that are not a multiple of 16 on every axis (e.g. `start_shape=(4, 4, 5)` for 64 x 64 x 80 uses
    stride 1 along z in the first stage).

    Args:
        spatial_dims: 2 or 3.
        image_size: output spatial shape.
        latent_size: noise size.
        channels: feature widths, coarse to fine (the published 1024, 512, 256, 128).
        out_channels: image channels.
        kernel_size: transposed-convolution kernel (5 as published; along a stride-1 axis an even kernel shrinks by 1).
        start_shape: coarsest spatial shape; None for `image_size / 2**len(channels)`.
        norm: normalisation between layers ("batch" as published).
        num_classes: classes to condition on (0: unconditional).
        embedding_size: label embedding size (default `latent_size`).
        dcgan_init: initialise weights with `init_dcgan_weights`.
        upsampling: "transposed" (as published), "nearest" or "linear": interpolation then a convolution, which
            avoids the checkerboard pattern of transposed convolutions (`blocks.upsampling_conv`).
        conditional_norm: per-class gain and bias in every normalisation (`ConditionalNorm`; needs `num_classes`).
    """

    def __init__(
        self,
        spatial_dims: int,
        image_size: int | Sequence[int] = 64,
        *,
        latent_size: int = 100,
        channels: Sequence[int] = (1024, 512, 256, 128),
        out_channels: int = 1,
        kernel_size: int = 5,
        start_shape: int | Sequence[int] | None = None,
        norm: str | None = "batch",
        num_classes: int = 0,
        embedding_size: int | None = None,
        dcgan_init: bool = True,
        upsampling: str = "transposed",
        conditional_norm: bool = False,
    ) -> None:
        super().__init__(spatial_dims, image_size, latent_size, out_channels, num_classes, embedding_size)
        self.plan = plan_resolution(self.image_size, len(channels), start_shape)
        norm_classes = self._norm_classes(conditional_norm)
        widths = [*channels, self.out_channels]
        layers: list[nn.Module] = [
            nn.Linear(self.input_size, widths[0] * math.prod(self.plan.start_shape), bias=norm is None),
            nn.Unflatten(1, (widths[0], *self.plan.start_shape)),
            norm_layer(norm, spatial_dims, widths[0], num_classes=norm_classes),
            nn.ReLU(),
        ]
        for stage, stride in enumerate(self.plan.strides):
            last = stage == self.plan.num_stages - 1
            layers.append(
                upsampling_conv(
                    spatial_dims, widths[stage], widths[stage + 1], kernel_size, stride, upsampling,
                    bias=last or norm is None,
                )
            )
            layers += (
                [nn.Tanh()] if last
                else [norm_layer(norm, spatial_dims, widths[stage + 1], num_classes=norm_classes), nn.ReLU()]
            )
        self.body = ConditionedSequential(*layers)
        if dcgan_init:
            init_dcgan_weights(self)


class DCGANDiscriminator(Critic):
    """DCGAN discriminator, the generator mirrored: one strided convolution per entry of `channels` (fine to coarse),
    normalisation on all but the first, LeakyReLU, then a dense score on the flattened features.

    Args:
        spatial_dims: 2 or 3.
        image_size: input spatial shape.
        in_channels: image channels.
        channels: feature widths, fine to coarse (the published 128, 256, 512, 1024).
        kernel_size: convolution kernel (5 as published).
        negative_slope: LeakyReLU slope.
        start_shape: coarsest spatial shape (see `DCGANGenerator`).
        norm: normalisation ("batch" as published; "layer"/"instance"/None for a WGAN-GP critic).
        num_classes, projection, input_conditioning, auxiliary_classifier, minibatch_std, spectral_norm: see `Critic`.
        dcgan_init: initialise weights with `init_dcgan_weights`.
    """

    def __init__(
        self,
        spatial_dims: int,
        image_size: int | Sequence[int] = 64,
        *,
        in_channels: int = 1,
        channels: Sequence[int] = (128, 256, 512, 1024),
        kernel_size: int = 5,
        negative_slope: float = 0.2,
        start_shape: int | Sequence[int] | None = None,
        norm: str | None = "batch",
        num_classes: int = 0,
        projection: bool = True,
        input_conditioning: bool = False,
        auxiliary_classifier: bool = False,
        minibatch_std: bool = False,
        spectral_norm: bool = False,
        dcgan_init: bool = True,
    ) -> None:
        super().__init__(
            spatial_dims, image_size, in_channels, num_classes, projection, input_conditioning, auxiliary_classifier,
            minibatch_std, spectral_norm,
        )
        self.plan = plan_resolution(self.image_size, len(channels), start_shape)
        layers: list[nn.Module] = []
        width = self.in_channels
        for stage, (stride, out_width) in enumerate(zip(reversed(self.plan.strides), channels)):
            normalised = stage > 0 and norm is not None
            if stage == len(channels) - 1:
                extra, width = self._before_last_layer(width)
                layers += extra
            layers += [
                strided_conv(spatial_dims, width, out_width, kernel_size, stride, bias=not normalised),
                norm_layer(norm if normalised else None, spatial_dims, out_width),
                nn.LeakyReLU(negative_slope),
            ]
            width = out_width
        layers.append(nn.Flatten())
        self.features = nn.Sequential(*layers)
        self._build_head(width * math.prod(self.plan.start_shape))
        if dcgan_init:
            init_dcgan_weights(self)
        self._apply_spectral_norm()


def _residual_widths(count: int, spatial_dims: int, base_channels: int | None, max_channels: int | None) -> list[int]:
    """`count` widths fine to coarse: `base_channels` at full resolution (default 64 in 2D, 32 in 3D), doubling per
    stage up to `max_channels` (default 256 in 2D, 128 in 3D)."""
    base_channels = base_channels or (64 if spatial_dims == 2 else 32)
    max_channels = max_channels or (256 if spatial_dims == 2 else 128)
    return [min(max_channels, base_channels * 2**stage) for stage in range(count)]


class ResidualGenerator(Generator):
    """Residual generator that grows with resolution: dense -> `channels[0]` x start shape, one `ResidualUpBlock` per
    factor of 2 (per-axis strides for anisotropic shapes), then norm, ReLU, 3-convolution and tanh.

    A size argument is enough: 64, 128 and 256 (2D) or 32 to 128 (3D) give 4, 5, 6 or 3 to 5 blocks from a 4-voxel
    start; 64 x 64 x 160 starts at 4 x 4 x 10.

    Args:
        spatial_dims: 2 or 3.
        image_size: output spatial shape.
        latent_size: noise size.
        channels: widths coarse to fine, one more than the number of blocks; None to derive them from the size.
        base_channels: width at full resolution when `channels` is None (default 64 in 2D, 32 in 3D).
        max_channels: cap of the derived widths (default 256 in 2D, 128 in 3D).
        out_channels: image channels.
        start_shape: coarsest spatial shape; None to derive it (smallest axis 4 to 7).
        norm: normalisation in the blocks.
        num_classes: classes to condition on (0: unconditional).
        embedding_size: label embedding size (default `latent_size`).
        conditional_norm: per-class gain and bias in every normalisation (`ConditionalNorm`; needs `num_classes`).
    """

    def __init__(
        self,
        spatial_dims: int,
        image_size: int | Sequence[int] = 64,
        *,
        latent_size: int = 128,
        channels: Sequence[int] | None = None,
        base_channels: int | None = None,
        max_channels: int | None = None,
        out_channels: int = 1,
        start_shape: int | Sequence[int] | None = None,
        norm: str | None = "batch",
        num_classes: int = 0,
        embedding_size: int | None = None,
        conditional_norm: bool = False,
    ) -> None:
        super().__init__(spatial_dims, image_size, latent_size, out_channels, num_classes, embedding_size)
        self.plan = plan_resolution(self.image_size, None if channels is None else len(channels) - 1, start_shape)
        if self.plan.num_stages < 1:
            raise ValueError(f"image size {self.image_size} is too small for a residual generator (needs 8 or more per axis)")
        norm_classes = self._norm_classes(conditional_norm)
        if channels is None:
            channels = _residual_widths(self.plan.num_stages + 1, spatial_dims, base_channels, max_channels)[::-1]
        widths = list(channels)
        layers: list[nn.Module] = [
            nn.Linear(self.input_size, widths[0] * math.prod(self.plan.start_shape)),
            nn.Unflatten(1, (widths[0], *self.plan.start_shape)),
        ]
        for stage, stride in enumerate(self.plan.strides):
            layers.append(ResidualUpBlock(spatial_dims, widths[stage], widths[stage + 1], stride, norm, norm_classes))
        layers += [
            norm_layer(norm, spatial_dims, widths[-1], num_classes=norm_classes),
            nn.ReLU(),
            Conv[Conv.CONV, spatial_dims](widths[-1], self.out_channels, 3, padding=1),
            nn.Tanh(),
        ]
        self.body = ConditionedSequential(*layers)


class ResidualCritic(Critic):
    """Residual critic, the generator mirrored: one `ResidualDownBlock` per factor of 2, ReLU, flattened features,
    dense score. No batch norm by default, as the gradient penalty requires.

    Args:
        spatial_dims: 2 or 3.
        image_size: input spatial shape.
        in_channels: image channels.
        channels: widths fine to coarse, one per block; None to derive them from the size.
        base_channels: width of the first block when `channels` is None (default 64 in 2D, 32 in 3D).
        max_channels: cap of the derived widths (default 256 in 2D, 128 in 3D).
        start_shape: coarsest spatial shape; None to derive it.
        norm: normalisation in the blocks: None, "layer" or "instance" ("batch" breaks the gradient penalty).
        num_classes, projection, input_conditioning, auxiliary_classifier, minibatch_std, spectral_norm: see `Critic`.
    """

    def __init__(
        self,
        spatial_dims: int,
        image_size: int | Sequence[int] = 64,
        *,
        in_channels: int = 1,
        channels: Sequence[int] | None = None,
        base_channels: int | None = None,
        max_channels: int | None = None,
        start_shape: int | Sequence[int] | None = None,
        norm: str | None = None,
        num_classes: int = 0,
        projection: bool = True,
        input_conditioning: bool = False,
        auxiliary_classifier: bool = False,
        minibatch_std: bool = False,
        spectral_norm: bool = False,
    ) -> None:
        super().__init__(
            spatial_dims, image_size, in_channels, num_classes, projection, input_conditioning, auxiliary_classifier,
            minibatch_std, spectral_norm,
        )
        self.plan = plan_resolution(self.image_size, None if channels is None else len(channels), start_shape)
        if self.plan.num_stages < 1:
            raise ValueError(f"image size {self.image_size} is too small for a residual critic (needs 8 or more per axis)")
        if channels is None:
            channels = _residual_widths(self.plan.num_stages, spatial_dims, base_channels, max_channels)
        layers: list[nn.Module] = []
        width = self.in_channels
        for stage, (stride, out_width) in enumerate(zip(reversed(self.plan.strides), channels)):
            if stage == len(channels) - 1:
                extra, width = self._before_last_layer(width)
                layers += extra
            layers.append(ResidualDownBlock(spatial_dims, width, out_width, stride, norm, preactivate=stage > 0))
            width = out_width
        layers += [nn.ReLU(), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self._build_head(width * math.prod(self.plan.start_shape))
        self._apply_spectral_norm()
