"""The network a bundle's ``configs/inference.yaml`` names ``network_def``: the one network training exports as
``RUN/models/model.pt``, as a generator from latent vectors to images that MONAI's bundle tools can load the export
into and trace (``python -m monai.bundle ckpt_export``, ``verify_net_in_out``)."""

from __future__ import annotations

import os

import torch
from torch import nn

from medvol.networks.factory import AUTOENCODER_FAMILIES, build

__all__ = ["exported_network_name", "LatentGenerator", "export_network", "latent_input_size"]


def exported_network_name(family: str) -> str:
    """The network of a family that training exports and sampling needs: ``autoencoder`` or ``generator``."""
    return "autoencoder" if family in AUTOENCODER_FAMILIES else "generator"


class LatentGenerator(nn.Module):
    """Images ``[B, C, *image_size]`` from one tensor ``[B, latent_size]``, or ``[B, latent_size + 1]`` for a
    conditional generator (the last column holds the class index).

    It holds the submodules of `network` under their own names, so the ``state_dict`` of a medvol generator or
    autoencoder (``RUN/models/model.pt``) loads into it unchanged; an autoencoder generates through its decoder.

    Args:
        network: a medvol generator (`medvol.networks.gans.Generator`) or autoencoder.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        for name, child in network.named_children():
            self.add_module(name, child)
        self.latent_size = int(network.latent_size)
        self.is_autoencoder = hasattr(network, "decoder")
        self.conditional = getattr(network, "conditioning", None) is not None

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        if self.is_autoencoder:
            return self.decoder(latent)
        if not self.conditional:
            return self.body(latent)
        noise, labels = latent[:, : self.latent_size], latent[:, self.latent_size].round().long()
        return self.body(torch.cat([noise, self.conditioning.embedding(labels).to(noise.dtype)], dim=1))


def latent_input_size(network: LatentGenerator) -> int:
    """The width of the input of `network`: the latent size, plus one column for the class of a conditional one."""
    return network.latent_size + int(network.conditional)


def export_network(run_dir: str | os.PathLike) -> LatentGenerator:
    """The exported network of a run, built from its ``run.json`` (family, geometry, classes, resolved widths) with
    fresh weights: MONAI's tools load ``RUN/models/model.pt`` into it.

    Raises:
        MedvolInputError: `run_dir` is not a run folder.
    """
    from medvol.sampling import load_run_record

    record = load_run_record(run_dir)
    networks = build(
        record["family"],
        int(record["spatial_dims"]),
        record["image_size"],
        num_classes=int(record.get("num_classes") or 0),
        **dict(record.get("network") or {}),
    )
    return LatentGenerator(networks[exported_network_name(record["family"])]).eval()
