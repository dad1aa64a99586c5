"""The network a bundle's ``configs/inference.yaml`` names ``network_def``: the one network training exports as
``RUN/models/model.pt``, as a generator from latent vectors to images that MONAI's bundle tools load the export into,
script and check (``python -m monai.bundle ckpt_export``, ``verify_net_in_out``)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from medvol import families
from medvol.errors import MedvolInputError
from medvol.runs import RUN_RECORD_FILE, RunRecord
from medvol.networks.factory import build, sized_options

__all__ = ["exported_network_name", "LatentGenerator", "export_network", "latent_input_size", "DEFAULT_NUM_CLASSES"]

# classes of a conditional family's network_def built without a run (a fresh bundle): the fewest it can have
DEFAULT_NUM_CLASSES = 2


def exported_network_name(family: str) -> str:
    """The network of a family that training exports and sampling needs: ``autoencoder`` or ``generator``."""
    return families.get_family(family).exported_network


class LatentGenerator(nn.Module):
    """Images ``[B, C, *image_size]`` from one tensor ``[B, latent_size]``, or ``[B, latent_size + 1]`` for a
    conditional generator (the last column holds the class index). It compiles with ``torch.jit.script``.

    It holds the submodules of `network` under their own names (a conditional generator's label embedding without the
    input checks around it), so the ``state_dict`` of a medvol generator or autoencoder (``RUN/models/model.pt``)
    loads into it unchanged; an autoencoder generates through its decoder.

    Args:
        network: a medvol generator (`medvol.networks.gans.Generator`) or autoencoder.
        source: where the architecture came from (a ``run.json`` or a bundle's ``train.yaml``), named when weights
            do not fit it.
    """

    __jit_ignored_attributes__ = ["source"]  # a path: not written into the TorchScript file

    def __init__(self, network: nn.Module, source: str = "") -> None:
        super().__init__()
        for name, child in network.named_children():
            if name == "conditioning":
                child = nn.ModuleDict({"embedding": child.embedding})
            self.add_module(name, child)
        self.latent_size = int(network.latent_size)
        self.conditional = hasattr(self, "conditioning")
        self.source = str(source)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        # hasattr is decided when TorchScript compiles: only the branch of this network's kind is compiled
        if hasattr(self, "decoder"):
            return self.decoder(latent)
        labels: torch.Tensor | None = None
        h = latent
        if hasattr(self, "conditioning"):
            noise, labels = latent[:, : self.latent_size], latent[:, self.latent_size].round().long()
            h = torch.cat([noise, self.conditioning["embedding"](labels).to(noise.dtype)], dim=1)
        return self.body(h, labels)  # a ConditionedSequential: class-conditional normalisation takes the labels

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # type: ignore[override]
        try:
            return super().load_state_dict(state_dict, strict=strict, assign=assign)
        except RuntimeError as err:
            detail = ([line.strip() for line in str(err).splitlines()[1:] if line.strip()] or [str(err)])[0]
            raise MedvolInputError(
                self.source or None,
                "the weights do not fit the network built from it; pass --run_dir RUN, the run they come from "
                f"({detail[:200]})",
            ) from err


def latent_input_size(network: LatentGenerator) -> int:
    """The width of the input of `network`: the latent size, plus one column for the class of a conditional one."""
    return network.latent_size + int(network.conditional)


def _bundle_defaults(bundle_root: str | os.PathLike) -> dict:
    """The network parameters of a bundle's ``configs/train.yaml`` (family, spatial_dims, image_size, num_classes,
    network, width) as written there; a class count computed from the data becomes `DEFAULT_NUM_CLASSES`."""
    from monai.bundle import ConfigParser

    path = Path(bundle_root) / "configs" / "train.yaml"
    if not path.is_file():
        raise MedvolInputError(path, "missing: network_def needs --run_dir RUN (a trained run) or --bundle_root DIR")
    config = ConfigParser.load_config_file(str(path))
    family = config.get("family")
    if family not in families.family_names():
        raise MedvolInputError(path, f"unknown family {family!r}")
    num_classes = config.get("num_classes") or 0
    if isinstance(num_classes, str):  # an expression: the classes of the datalist
        num_classes = DEFAULT_NUM_CLASSES
    options = {"family": family, "spatial_dims": config.get("spatial_dims", 2), "image_size": config.get("image_size")}
    options.update(num_classes=int(num_classes), network=config.get("network") or {}, width=config.get("width"))
    bad = [key for key, value in options.items() if isinstance(value, str) and value.startswith(("$", "@"))]
    if bad:
        raise MedvolInputError(path, f"{bad[0]} is an expression; network_def needs --run_dir RUN (a trained run)")
    return options


def export_network(run_dir: str | os.PathLike | None = None, bundle_root: str | os.PathLike = ".") -> LatentGenerator:
    """The exported network with fresh weights, into which MONAI's tools load ``RUN/models/model.pt``.

    Built from ``run_dir/run.json`` (family, geometry, classes, resolved widths) when `run_dir` holds a run, else
    the bundle's default network: the parameters of ``bundle_root/configs/train.yaml`` at the base width of
    `medvol.networks.factory.default_width` and, for a conditional family, `DEFAULT_NUM_CLASSES` classes. The default
    matches the weights of a run trained with the bundle's defaults on fewer than 2000 images (more images widen
    the networks; other settings change them): other runs need their folder as `run_dir`.

    Raises:
        MedvolInputError: `run_dir` holds an unreadable ``run.json``; no run and no ``train.yaml`` in `bundle_root`.
    """
    if run_dir is not None and RunRecord.exists(run_dir):
        record, source = RunRecord.load(run_dir), Path(run_dir) / RUN_RECORD_FILE
        network = dict(record.network)
    else:
        defaults, source = _bundle_defaults(bundle_root), Path(bundle_root) / "configs" / "train.yaml"
        record = RunRecord(family=defaults["family"], spatial_dims=int(defaults["spatial_dims"]),
                           image_size=defaults["image_size"], num_classes=defaults["num_classes"])
        network = sized_options(record.family, record.spatial_dims, record.image_size, defaults["network"],
                                width=defaults["width"])
    networks = build(record.family, int(record.spatial_dims), record.image_size, num_classes=int(record.num_classes),
                     **network)
    return LatentGenerator(networks[exported_network_name(record.family)], source=str(source)).eval()
