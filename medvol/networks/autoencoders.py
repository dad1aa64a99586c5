"""Convolutional autoencoder and variational autoencoder, one implementation for 2D and 3D.

Contract: `autoencoder(x) -> reconstruction` in [0, 1] (sigmoid output); the VAE returns `(reconstruction, mu, logvar)`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from medvol.networks.blocks import check_spatial_dims, plan_resolution, spatial_shape, strided_conv
from medvol.networks.init import init_kaiming_weights

OUTPUT_ACTIVATIONS = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


class ConvAutoencoder(nn.Module):
    """Convolutional autoencoder with a dense latent code, in the published layout by default.

    Encoder: one strided convolution per entry of `channels` (kernel 5, stride 2, padding 2; 64, 128, 256, 256) with
    LeakyReLU 0.2, flattened into a dense latent (100 in 2D, 200 in 3D). Decoder: dense back to the coarsest feature
    map with ReLU, then one transposed convolution (kernel 4, stride 2) per encoder stage through the reversed widths,
    ReLU between and a sigmoid at the output.

    Image sizes must be a multiple of `2**len(channels)` on every axis, or reachable from `start_shape` (see
    `medvol.networks.blocks.plan_resolution`: stride 1 along the axes that need fewer halvings).

    Args:
        spatial_dims: 2 or 3.
        image_size: input spatial shape.
        in_channels: image channels.
        channels: encoder widths, fine to coarse (the decoder mirrors them).
        latent_size: size of the dense code; None for 100 (2D) or 200 (3D).
        encoder_kernel_size: encoder kernel (5).
        decoder_kernel_size: decoder kernel (4).
        negative_slope: encoder LeakyReLU slope (0.2).
        start_shape: spatial shape of the coarsest feature map; None for `image_size / 2**len(channels)`.
        output_activation: "sigmoid" (reconstructions in [0, 1], the default) or "tanh" ([-1, 1]).
        kaiming_init: He-initialise the layers (`init_kaiming_weights`); PyTorch's default initialisation makes the 3D
            autoencoder sit on a constant output for hundreds of steps.
    """

    _codes_per_latent = 1  # values the encoder emits per latent dimension (2 for the VAE: mean and log-variance)

    def __init__(
        self,
        spatial_dims: int,
        image_size: int | Sequence[int],
        *,
        in_channels: int = 1,
        channels: Sequence[int] = (64, 128, 256, 256),
        latent_size: int | None = None,
        encoder_kernel_size: int = 5,
        decoder_kernel_size: int = 4,
        negative_slope: float = 0.2,
        start_shape: int | Sequence[int] | None = None,
        output_activation: str = "sigmoid",
        kaiming_init: bool = True,
    ) -> None:
        super().__init__()
        if output_activation not in OUTPUT_ACTIVATIONS:
            raise ValueError(f"output_activation must be one of {sorted(OUTPUT_ACTIVATIONS)}, got {output_activation!r}")
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.image_size = spatial_shape(image_size, spatial_dims)
        self.in_channels = int(in_channels)
        self.latent_size = int(latent_size or (100 if spatial_dims == 2 else 200))
        self.plan = plan_resolution(self.image_size, len(channels), start_shape)
        coarse_size = channels[-1] * math.prod(self.plan.start_shape)

        encoder: list[nn.Module] = []
        width = self.in_channels
        for stride, out_width in zip(reversed(self.plan.strides), channels):
            encoder += [
                strided_conv(spatial_dims, width, out_width, encoder_kernel_size, stride),
                nn.LeakyReLU(negative_slope),
            ]
            width = out_width
        encoder.append(nn.Flatten())
        self.encoder = nn.Sequential(*encoder)
        self.to_latent = nn.Linear(coarse_size, self.latent_size * self._codes_per_latent)

        widths = [*reversed(channels), self.in_channels]
        decoder: list[nn.Module] = [
            nn.Linear(self.latent_size, coarse_size),
            nn.ReLU(),
            nn.Unflatten(1, (widths[0], *self.plan.start_shape)),
        ]
        for stage, stride in enumerate(self.plan.strides):
            decoder.append(
                strided_conv(spatial_dims, widths[stage], widths[stage + 1], decoder_kernel_size, stride, transposed=True)
            )
            decoder.append(nn.ReLU() if stage < self.plan.num_stages - 1 else OUTPUT_ACTIVATIONS[output_activation]())
        self.decoder = nn.Sequential(*decoder)
        if kaiming_init:
            init_kaiming_weights(self.encoder, negative_slope)
            init_kaiming_weights(self.to_latent)
            init_kaiming_weights(self.decoder)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent code `[B, latent_size]` of images `[B, C, *image_size]`."""
        if tuple(x.shape[1:]) != (self.in_channels, *self.image_size):
            raise ValueError(
                f"autoencoder expects images [B, {self.in_channels}, {', '.join(map(str, self.image_size))}], "
                f"got {tuple(x.shape)}"
            )
        return self.to_latent(self.encoder(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images `[B, C, *image_size]` from latent codes `[B, latent_size]`."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


class VariationalAutoencoder(ConvAutoencoder):
    """Variational autoencoder on the `ConvAutoencoder` backbone: the encoder emits a mean and a log-variance per latent
    dimension; training samples the code with the reparameterisation trick, evaluation uses the mean. Sample new images
    with `decode(torch.randn(n, latent_size))`. Takes the arguments of `ConvAutoencoder`.
    """

    _codes_per_latent = 2

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        """`(mu, logvar)`, each `[B, latent_size]`."""
        mu, logvar = super().encode(x).chunk(2, dim=1)
        return mu, logvar

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # type: ignore[override]
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        return self.decode(z), mu, logvar
