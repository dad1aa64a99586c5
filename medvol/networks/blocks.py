"""Building blocks shared by every network: resolution planning, size-exact (transposed) convolutions, norms, residual blocks.

Everything here takes `spatial_dims` (2 or 3); layers come from MONAI's layer factories so that 2D and 3D share one code path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from monai.networks.layers.factories import Conv, Norm, Pool
from monai.utils import ensure_tuple_rep
from torch import nn

from medvol.networks.conditioning import ConditionalNorm, ConditionedSequential, LabelConditioned

NORMS = (None, "batch", "instance", "layer")
#: how a generator doubles its resolution: a transposed convolution, or interpolation then a convolution (no
#: checkerboard artefacts, Odena et al. 2016)
UPSAMPLING = ("transposed", "nearest", "linear")


def check_spatial_dims(spatial_dims: int) -> int:
    """Return `spatial_dims` after checking it is 2 or 3."""
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    return spatial_dims


def spatial_shape(size: int | Sequence[int], spatial_dims: int, name: str = "image_size") -> tuple[int, ...]:
    """`size` as a tuple of `spatial_dims` positive ints (an int is repeated on every axis)."""
    shape = tuple(int(s) for s in ensure_tuple_rep(size, check_spatial_dims(spatial_dims)))
    if any(s < 1 for s in shape):
        raise ValueError(f"{name} must be positive on every axis, got {shape}")
    return shape


@dataclass(frozen=True)
class ResolutionPlan:
    """How a network walks between a coarse `start_shape` and the `image_size`.

    Attributes:
        image_size: full-resolution spatial shape.
        start_shape: coarsest spatial shape (the generator's first feature map, the critic's last).
        strides: one per-axis stride tuple per stage, ordered coarse to fine (the generator's order); an axis with
            stride 1 in a stage keeps its size there, which is how anisotropic shapes such as 64 x 64 x 160 are reached.
    """

    image_size: tuple[int, ...]
    start_shape: tuple[int, ...]
    strides: tuple[tuple[int, ...], ...]

    @property
    def num_stages(self) -> int:
        return len(self.strides)

    def shapes(self) -> list[tuple[int, ...]]:
        """Spatial shape after each stage, coarse to fine, starting with `start_shape`."""
        shapes = [self.start_shape]
        for stride in self.strides:
            shapes.append(tuple(s * f for s, f in zip(shapes[-1], stride)))
        return shapes


def plan_resolution(
    image_size: Sequence[int],
    num_stages: int | None = None,
    start_shape: int | Sequence[int] | None = None,
    min_start: int = 4,
) -> ResolutionPlan:
    """Plan the stride-2 stages that turn a coarse start shape into `image_size`.

    Without `start_shape`, every axis is divided by 2 once per stage (`image_size / 2**num_stages` must then be whole);
    with it, an axis whose size is `start * 2**k` gets stride 2 in the last `k` stages and stride 1 before them.
    Without `num_stages` (networks that grow with resolution), it is the number of halvings that keeps the smallest
    axis at least `min_start` (or the largest per-axis exponent when `start_shape` is given).

    Args:
        image_size: target spatial shape.
        num_stages: number of up-/down-sampling stages; None to derive it.
        start_shape: coarsest spatial shape (int for every axis); None to derive it.
        min_start: smallest coarse size per axis when deriving `num_stages`.

    Raises:
        ValueError: when the shape cannot be reached; the message says which axis and what to pass instead.
    """
    size = tuple(int(s) for s in image_size)
    dims = len(size)
    if start_shape is None:
        if num_stages is None:
            num_stages = max(0, int(math.floor(math.log2(max(min(size), 1) / min_start))))
        factor = 2**num_stages
        bad = [axis for axis, s in enumerate(size) if s % factor]
        if bad:
            raise ValueError(
                f"image size {size} cannot be reached with {num_stages} stride-2 stages: axis {bad[0]} ({size[bad[0]]}) is "
                f"not a multiple of {factor}; choose a size divisible by {factor} on every axis or pass start_shape "
                f"(a shape whose per-axis ratio to the image size is a power of 2 no larger than {factor})"
            )
        start = tuple(s // factor for s in size)
        exponents = [num_stages] * dims
    else:
        start = spatial_shape(start_shape, dims, "start_shape")
        exponents = []
        for axis, (s, s0) in enumerate(zip(size, start)):
            ratio = s / s0
            exponent = int(round(math.log2(ratio))) if ratio >= 1 else -1
            if exponent < 0 or s0 * 2**exponent != s:
                raise ValueError(
                    f"image size {size} cannot be reached from start_shape {start}: along axis {axis}, {s} is not "
                    f"{s0} times a power of 2"
                )
            exponents.append(exponent)
        if num_stages is None:
            num_stages = max(exponents)
        elif max(exponents) > num_stages:
            axis = exponents.index(max(exponents))
            raise ValueError(
                f"image size {size} cannot be reached from start_shape {start} in {num_stages} stages: axis {axis} needs "
                f"{exponents[axis]} doublings; pass a larger start_shape"
            )
    strides = tuple(
        tuple(2 if stage >= num_stages - exponents[axis] else 1 for axis in range(dims)) for stage in range(num_stages)
    )
    return ResolutionPlan(size, start, strides)


def _axis_geometry(kernel_size: int, stride: int) -> tuple[int, int]:
    """(kernel, padding) so that a convolution divides an even axis exactly by `stride` (1 or 2)."""
    if stride == 1 and kernel_size % 2 == 0:
        kernel_size -= 1
    return kernel_size, (kernel_size - 1) // 2


def strided_conv(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: Sequence[int],
    transposed: bool = False,
    bias: bool = True,
) -> nn.Module:
    """Convolution that divides each (even) axis exactly by its `stride` (1 or 2), or, `transposed`, multiplies it.

    Along an axis with stride 1 an even kernel is shrunk by one, since it cannot keep the size with symmetric padding.
    """
    geometry = [_axis_geometry(kernel_size, s) for s in stride]
    options = {
        "kernel_size": tuple(k for k, _ in geometry),
        "stride": tuple(stride),
        "padding": tuple(p for _, p in geometry),
        "bias": bias,
    }
    if transposed:
        # output = (n - 1) * s - 2 p + k + output_padding = s * n  =>  output_padding = s + 2 p - k
        options["output_padding"] = tuple(s + 2 * p - k for s, (k, p) in zip(stride, geometry))
    return Conv[Conv.CONVTRANS if transposed else Conv.CONV, spatial_dims](in_channels, out_channels, **options)


def upsampling_conv(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: Sequence[int],
    mode: str = "transposed",
    bias: bool = True,
) -> nn.Module:
    """A layer that multiplies each axis by its `stride` (1 or 2): a transposed convolution (`mode="transposed"`), or
    nearest / (bi/tri)linear interpolation followed by a size-keeping convolution (`"nearest"`, `"linear"`)."""
    if mode == "transposed":
        return strided_conv(spatial_dims, in_channels, out_channels, kernel_size, stride, True, bias=bias)
    if mode not in UPSAMPLING:
        raise ValueError(f"upsampling must be one of {UPSAMPLING}, got {mode!r}")
    interpolation = "nearest" if mode == "nearest" else ("bilinear" if spatial_dims == 2 else "trilinear")
    corners = None if mode == "nearest" else False
    return nn.Sequential(
        nn.Upsample(scale_factor=tuple(float(s) for s in stride), mode=interpolation, align_corners=corners),
        strided_conv(spatial_dims, in_channels, out_channels, kernel_size, (1,) * len(stride), bias=bias),
    )


def norm_layer(
    norm: str | None, spatial_dims: int, channels: int, momentum: float = 0.1, num_classes: int = 0
) -> nn.Module:
    """Normalisation layer by name.

    Args:
        norm: None (identity), "batch", "instance" (affine) or "layer" (GroupNorm with one group: normalises each
            sample over channels and space, so it is safe in a WGAN-GP critic).
        spatial_dims: 2 or 3.
        channels: number of channels.
        momentum: running-statistics momentum of batch norm (PyTorch convention).
        num_classes: above 0, a class-conditional `ConditionalNorm` (per-class gain and bias) instead of the affine.
    """
    if norm is None:
        return nn.Identity()
    if num_classes > 0:
        return ConditionalNorm(norm, spatial_dims, channels, num_classes, momentum)
    if norm == "batch":
        return Norm[Norm.BATCH, spatial_dims](channels, momentum=momentum)
    if norm == "instance":
        return Norm[Norm.INSTANCE, spatial_dims](channels, affine=True)
    if norm == "layer":
        return nn.GroupNorm(1, channels)
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


def has_batch_norm(module: nn.Module) -> bool:
    """True when `module` contains a batch-norm layer (which couples the samples of a batch)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of `module`."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


class MinibatchStdDev(nn.Module):
    """Minibatch standard deviation (Karras et al. 2018): append to features `[B, C, *spatial]` (or `[B, F]`) one
    channel (one feature) holding, for each group of samples, their standard deviation across the group averaged over
    every channel and position.

    A critic then sees how much the images of a batch differ from each other: near-identical generated images give a
    value far below that of real images, which the layers after this one learn to score as fake. With `labels`, a
    group is the samples of one class (in a mixed batch, the difference between classes would otherwise hide a
    generator that returns one image per class); without, groups of `group_size` consecutive samples (the largest
    divisor of the batch size not above it). A sample alone in its group gets 0.

    Args:
        group_size: samples per group without labels.
    """

    def __init__(self, group_size: int = 4) -> None:
        super().__init__()
        if group_size < 2:
            raise ValueError(f"group_size must be at least 2, got {group_size}")
        self.group_size = int(group_size)

    def forward(self, features: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        batch = features.shape[0]
        flat = features.float().reshape(batch, -1)
        if labels is None:
            size = max(g for g in range(1, min(self.group_size, batch) + 1) if batch % g == 0)
            groups = torch.arange(batch, device=features.device) // size
        else:
            groups = torch.as_tensor(labels, device=features.device).reshape(-1).long()
        # same[i, j]: samples i and j share a group; sums over a group are matrix products (no unique(), no boolean
        # masks: both would wait for the GPU on every critic call)
        same = (groups[:, None] == groups[None, :]).to(flat.dtype)
        members = same.sum(dim=1, keepdim=True)
        with torch.autocast(features.device.type, enabled=False):  # float32 sums, also inside a bf16/fp16 critic
            deviation = flat - same @ flat / members
            variance = same @ deviation.square() / members
        spread = torch.where(members[:, 0] > 1, torch.sqrt(variance + 1e-8).mean(dim=1), 0.0)
        shape = (batch, 1, *features.shape[2:])
        channel = spread.reshape(batch, *([1] * (features.ndim - 1))).expand(shape)
        return torch.cat([features, channel.to(features.dtype)], dim=1)


class ResidualUpBlock(LabelConditioned):
    """Pre-activation residual block that upsamples: norm, ReLU, nearest upsampling, 3-conv, norm, ReLU, 3-conv,
    plus an additive skip (upsampling and a 1-conv).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        scale: per-axis upsampling factor (1 or 2 on each axis).
        norm: normalisation, see `norm_layer`.
        num_classes: above 0, class-conditional normalisation (`forward(x, labels)` then needs the labels).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        scale: Sequence[int],
        norm: str | None = "batch",
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        scale = tuple(int(s) for s in scale)
        upsample = nn.Upsample(scale_factor=tuple(float(s) for s in scale), mode="nearest")
        self.residual = ConditionedSequential(
            norm_layer(norm, spatial_dims, in_channels, num_classes=num_classes),
            nn.ReLU(),
            upsample,
            conv(in_channels, out_channels, 3, padding=1),
            norm_layer(norm, spatial_dims, out_channels, num_classes=num_classes),
            nn.ReLU(),
            conv(out_channels, out_channels, 3, padding=1),
        )
        self.skip = nn.Sequential(upsample, conv(in_channels, out_channels, 1))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.residual(x, labels) + self.skip(x)


class ResidualDownBlock(nn.Module):
    """Residual block that downsamples: [ReLU,] 3-conv, norm, ReLU, 3-conv, average pooling, plus an additive skip
    (1-conv and average pooling).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        factor: per-axis downsampling factor (1 or 2 on each axis).
        norm: normalisation; None or "layer"/"instance" for a WGAN-GP critic.
        preactivate: apply ReLU to the input (False for the first block, which sees the image).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        factor: Sequence[int],
        norm: str | None = None,
        preactivate: bool = True,
    ) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        factor = tuple(int(f) for f in factor)
        pool = Pool[Pool.AVG, spatial_dims](kernel_size=factor, stride=factor) if max(factor) > 1 else nn.Identity()
        self.residual = nn.Sequential(
            nn.ReLU() if preactivate else nn.Identity(),
            conv(in_channels, out_channels, 3, padding=1),
            norm_layer(norm, spatial_dims, out_channels),
            nn.ReLU(),
            conv(out_channels, out_channels, 3, padding=1),
            pool,
        )
        self.skip = nn.Sequential(conv(in_channels, out_channels, 1), pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.residual(x) + self.skip(x)
