"""Class conditioning for generators and critics.

- Generators: a learned label embedding concatenated with the noise (`LabelNoiseConcat`), optionally class-conditional
  normalisation (`ConditionalNorm`: a per-class gain and bias after a normalisation without its own affine, as in
  conditional batch norm of de Vries et al. 2017 and the SNGAN/BigGAN generators).
- Critics: projection (the inner product of a label embedding with the critic's features is added to the score,
  Miyato & Koyama 2018), optionally an embedding the size of the image multiplied into the input (`InputLabelEmbedding`,
  as in the Keras conditional GAN), and an auxiliary classifier head (AC-GAN); all in `CriticHead`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from monai.networks.layers.factories import Norm
from torch import nn


def check_labels(labels: torch.Tensor | None, num_classes: int, batch_size: int) -> torch.Tensor:
    """Validate class labels of a conditional network and return them as a long tensor `[B]`.

    Raises:
        ValueError: when labels are missing, of the wrong length or outside [0, num_classes).
    """
    if labels is None:
        raise ValueError(f"this network is conditioned on {num_classes} classes: pass labels (a tensor of class indices)")
    labels = torch.as_tensor(labels).reshape(-1).long()
    if labels.numel() != batch_size:
        raise ValueError(f"got {labels.numel()} labels for a batch of {batch_size}")
    if labels.numel() and labels.device.type != "cpu":
        # reading the labels back would stall the GPU stream on every forward: the device checks them asynchronously
        torch._assert_async(((labels >= 0) & (labels < num_classes)).all(), f"labels must lie in [0, {num_classes})")
    elif labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got {labels.unique().tolist()}")
    return labels


class LabelNoiseConcat(nn.Module):
    """Concatenate a learned label embedding to the noise: `[B, latent] -> [B, latent + embedding_size]`.

    Args:
        num_classes: number of classes (> 0).
        embedding_size: size of the label embedding.
    """

    def __init__(self, num_classes: int, embedding_size: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.embedding = nn.Embedding(num_classes, embedding_size)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        labels = check_labels(labels, self.num_classes, z.shape[0]).to(z.device)
        return torch.cat([z, self.embedding(labels).to(z.dtype)], dim=1)


class LabelConditioned(nn.Module):
    """Base of the layers of a `ConditionedSequential` that are called as `layer(x, labels)`; they carry the attribute
    `takes_labels`, which TorchScript can test (`hasattr` on a module is decided when it compiles)."""

    def __init__(self) -> None:
        super().__init__()
        self.takes_labels = True


class ConditionedSequential(nn.Sequential):
    """`nn.Sequential` whose `forward(x, labels=None)` passes the labels to its `LabelConditioned` layers; it compiles
    with `torch.jit.script` (the loop is unrolled and `hasattr` decided per layer)."""

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self:
            if hasattr(layer, "takes_labels"):
                x = layer(x, labels)
            else:
                x = layer(x)
        return x


class ConditionalNorm(LabelConditioned):
    """Normalisation whose gain and bias are chosen by the class: `norm(x) * (1 + gain[y]) + bias[y]`, per channel.

    Gains and biases start at 0 (the layer starts as the plain normalisation with unit scale). Called as
    `layer(x, labels)`.

    Args:
        norm: "batch", "instance" or "layer" (GroupNorm with one group), each without an affine of its own.
        spatial_dims: 2 or 3.
        channels: number of channels.
        num_classes: number of classes (> 0).
        momentum: running-statistics momentum of batch norm.
    """

    def __init__(self, norm: str, spatial_dims: int, channels: int, num_classes: int, momentum: float = 0.1) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError("conditional normalisation needs num_classes > 0")
        if norm == "batch":
            self.norm: nn.Module = Norm[Norm.BATCH, spatial_dims](channels, affine=False, momentum=momentum)
        elif norm == "instance":
            self.norm = Norm[Norm.INSTANCE, spatial_dims](channels, affine=False)
        elif norm == "layer":
            self.norm = nn.GroupNorm(1, channels, affine=False)
        else:
            raise ValueError(f"conditional normalisation needs norm 'batch', 'instance' or 'layer', got {norm!r}")
        self.num_classes = int(num_classes)
        self.gain = nn.Embedding(self.num_classes, channels)
        self.bias = nn.Embedding(self.num_classes, channels)
        nn.init.zeros_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)

    @torch.jit.unused
    def _checked(self, labels: torch.Tensor, batch_size: int) -> torch.Tensor:
        return check_labels(labels, self.num_classes, batch_size)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if labels is None:
            raise ValueError(f"this layer is conditioned on {self.num_classes} classes: pass labels")
        if not torch.jit.is_scripting():
            labels = self._checked(labels, x.shape[0])
        labels = labels.to(x.device)
        gain = self.gain(labels).to(x.dtype)
        bias = self.bias(labels).to(x.dtype)
        while gain.dim() < x.dim():
            gain, bias = gain.unsqueeze(-1), bias.unsqueeze(-1)
        return self.norm(x) * (1.0 + gain) + bias


class InputLabelEmbedding(nn.Module):
    """Multiply the critic's input by a learned per-class map of the input's shape.

    Args:
        num_classes: number of classes (> 0).
        input_shape: `(channels, *spatial)` of the critic's input.
    """

    def __init__(self, num_classes: int, input_shape: Sequence[int]) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.input_shape = tuple(input_shape)
        self.embedding = nn.Embedding(num_classes, math.prod(self.input_shape))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        labels = check_labels(labels, self.num_classes, x.shape[0]).to(x.device)
        return x * self.embedding(labels).view(x.shape[0], *self.input_shape).to(x.dtype)


class CriticHead(nn.Module):
    """Turn critic features `[B, F]` into a score `[B]`, with optional projection conditioning and class head.

    Args:
        feature_size: F.
        num_classes: number of classes; 0 for an unconditional critic.
        projection: add `<embedding(label), features>` to the score (needs `num_classes > 0`).
        auxiliary_classifier: also return class logits `[B, num_classes]` (needs `num_classes > 0`).
    """

    def __init__(self, feature_size: int, num_classes: int = 0, projection: bool = True, auxiliary_classifier: bool = False):
        super().__init__()
        if auxiliary_classifier and num_classes < 1:
            raise ValueError("an auxiliary classifier head needs num_classes > 0")
        self.num_classes = num_classes
        self.score = nn.Linear(feature_size, 1)
        self.projection = nn.Embedding(num_classes, feature_size) if projection and num_classes > 0 else None
        self.classifier = nn.Linear(feature_size, num_classes) if auxiliary_classifier else None
        if self.projection is not None:
            nn.init.normal_(self.projection.weight, 0.0, 1.0 / math.sqrt(feature_size))

    def forward(
        self, features: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        score = self.score(features).squeeze(1)
        if self.projection is not None:
            labels = check_labels(labels, self.num_classes, features.shape[0]).to(features.device)
            score = score + (self.projection(labels).to(features.dtype) * features).sum(dim=1)
        if self.classifier is not None:
            return score, self.classifier(features)
        return score
