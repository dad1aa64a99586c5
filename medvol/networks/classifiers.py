"""A small residual image classifier, one class for 2D and 3D: the feature space of the evaluation and the classifier
of its utility, recognisability and real-vs-synthetic studies.

MONAI's `monai.networks.nets.ResNet` is not used: it has exactly four stages with a 7-wide first convolution and a max
pool, which on the 16^2-64^3 inputs medvol evaluates leaves 1-voxel feature maps and costs more than a 2-core CPU
can spend on fifteen trainings; here the number of stages follows `channels`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.networks.layers.factories import Conv, Pool
from torch import nn

from medvol.networks.blocks import check_spatial_dims, norm_layer, strided_conv


class ResidualBlock(nn.Module):
    """Post-activation residual block (He et al. 2016): 3-conv (stride `stride`), norm, ReLU, 3-conv, norm, plus a
    skip (identity, or a strided 1-conv and norm when the shape changes), then ReLU.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        stride: per-axis stride (1 or 2 on each axis).
        norm: normalisation, see `medvol.networks.blocks.norm_layer`.
    """

    def __init__(
        self, spatial_dims: int, in_channels: int, out_channels: int, stride: Sequence[int], norm: str | None = "batch"
    ) -> None:
        super().__init__()
        stride = tuple(int(s) for s in stride)
        self.residual = nn.Sequential(
            strided_conv(spatial_dims, in_channels, out_channels, 3, stride, bias=norm is None),
            norm_layer(norm, spatial_dims, out_channels),
            nn.ReLU(inplace=True),
            Conv[Conv.CONV, spatial_dims](out_channels, out_channels, 3, padding=1, bias=norm is None),
            norm_layer(norm, spatial_dims, out_channels),
        )
        if in_channels == out_channels and max(stride) == 1:
            self.skip: nn.Module = nn.Identity()
        else:
            self.skip = nn.Sequential(
                Conv[Conv.CONV, spatial_dims](in_channels, out_channels, 1, stride=stride, bias=norm is None),
                norm_layer(norm, spatial_dims, out_channels),
            )
        self.activation = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.residual(x) + self.skip(x))


def stem_stride_for(image_size: Sequence[int], channels: Sequence[int]) -> int:
    """2 when the stem can halve the image and the last feature map still keeps at least 2 voxels per axis, else 1.

    Each stride-2 convolution (kernel 3, padding 1) maps n voxels to ceil(n / 2), so after the stem and one halving
    per stage an axis keeps at least 2 voxels when it is longer than 2**(len(channels) + 1): 17 or more with three
    stages (28^3 MedMNIST volumes: 14, 7, 4, 2; the stride makes their classifier about 10x cheaper).
    """
    return 2 if min(image_size) > 2 ** (len(channels) + 1) else 1


class ResNetClassifier(nn.Module):
    """Small ResNet: a 3-conv stem (optionally strided), one stage of residual blocks per entry of `channels` (each
    halving every axis; an axis of length 1 stays 1), global average pooling and a linear head.

    `features(x)` is the pooled penultimate vector `[B, channels[-1]]` (the evaluation's feature space);
    `forward(x)` returns class logits `[B, num_classes]`. Any spatial size works; with the default widths a 64^2
    image costs about 12 M multiply-adds.

    Args:
        spatial_dims: 2 or 3.
        num_classes: number of classes (at least 2).
        in_channels: image channels.
        channels: stage widths, fine to coarse.
        blocks_per_stage: residual blocks per stage (the first one strides).
        norm: "batch" (default), "instance", "layer" or None. Per-sample norms ("instance", "layer") remove each
            image's mean brightness after the stem, so they cannot tell classes apart by brightness alone.
        dropout: dropout before the linear head.
        stem_stride: 2 to halve every axis in the stem (about 4x (2D) to 13x (3D) less work; see `stem_stride_for`).
    """

    def __init__(
        self,
        spatial_dims: int,
        num_classes: int,
        *,
        in_channels: int = 1,
        channels: Sequence[int] = (16, 32, 64),
        blocks_per_stage: int = 1,
        norm: str | None = "batch",
        dropout: float = 0.0,
        stem_stride: int = 1,
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        if int(num_classes) < 2:
            raise ValueError(f"a classifier needs num_classes >= 2, got {num_classes}")
        if not channels or blocks_per_stage < 1:
            raise ValueError("channels must list at least one width and blocks_per_stage must be >= 1")
        self.num_classes = int(num_classes)
        self.in_channels = int(in_channels)
        self.channels = tuple(int(c) for c in channels)
        self.blocks_per_stage = int(blocks_per_stage)
        self.norm = norm
        self.dropout = float(dropout)
        if stem_stride not in (1, 2):
            raise ValueError(f"stem_stride must be 1 or 2, got {stem_stride}")
        self.stem_stride = int(stem_stride)
        self.feature_size = self.channels[-1]

        self.stem = nn.Sequential(
            strided_conv(
                spatial_dims, self.in_channels, self.channels[0], 3, (self.stem_stride,) * spatial_dims, norm is None
            ),
            norm_layer(norm, spatial_dims, self.channels[0]),
            nn.ReLU(inplace=True),
        )
        self.stages = nn.ModuleList()
        width = self.channels[0]
        for out_width in self.channels:
            blocks = [ResidualBlock(spatial_dims, width, out_width, (2,) * spatial_dims, norm)]
            blocks += [
                ResidualBlock(spatial_dims, out_width, out_width, (1,) * spatial_dims, norm)
                for _ in range(self.blocks_per_stage - 1)
            ]
            self.stages.append(nn.Sequential(*blocks))
            width = out_width
        self.pool = Pool[Pool.ADAPTIVEAVG, spatial_dims](1)
        self.head = nn.Sequential(nn.Dropout(self.dropout), nn.Linear(self.feature_size, self.num_classes))
        for module in self.modules():
            if isinstance(module, nn.modules.conv._ConvNd):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def config(self) -> dict[str, Any]:
        """Constructor arguments, enough to rebuild the network (saved next to its weights)."""
        return {
            "spatial_dims": self.spatial_dims,
            "num_classes": self.num_classes,
            "in_channels": self.in_channels,
            "channels": list(self.channels),
            "blocks_per_stage": self.blocks_per_stage,
            "norm": self.norm,
            "dropout": self.dropout,
            "stem_stride": self.stem_stride,
        }

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{self.spatial_dims}D classifier expects images [B, {self.in_channels}, "
                f"{', '.join(['...'] * self.spatial_dims)}], got {tuple(x.shape)}"
            )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled penultimate features `[B, channels[-1]]` of images `[B, in_channels, *spatial]`."""
        self._check_input(x)
        h = self.stem(x)
        for stage in self.stages:
            h = stage(h)
        return self.pool(h).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
