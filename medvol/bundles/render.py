"""Bundle folders rendered from one template (``medvol/bundles/template``) and a family's spec (`medvol.families`).

Every bundle under ``bundles/`` is this module's output for a registered family (``scripts/render_bundles.py``
writes them, ``tests/bundles/test_render.py`` checks that the committed folders are the rendered ones); each stays a
self-contained MONAI bundle. The template's ``{{key}}`` placeholders take the family's words (`BundleText`), what its
kind says (`KIND_WORDS`) and figures of its default networks (latent size, parameter counts).
"""

from __future__ import annotations

import json
import os
import re
import textwrap
from pathlib import Path
from typing import Any

from medvol import defaults, families
from medvol.families import FamilyKind, FamilySpec, LatentPrior

__all__ = ["TEMPLATE_DIR", "KIND_WORDS", "rendered_files", "write_bundle"]

TEMPLATE_DIR = Path(__file__).resolve().parent / "template"
PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
# README paragraphs the renderer fills are wrapped at this width (the template's own lines are kept as written)
WRAP_WIDTH = 118
# the image size and training set size the README's parameter counts are given for (3D: 32^3)
VOLUME_SIZE = 32
DATASET_SIZE = 300
BYTES_PER_PARAMETER = 16  # fp32 weights, gradients and Adam's two moments

#: what a bundle says that follows from the family's kind
KIND_WORDS: dict[FamilyKind, dict[str, str]] = {
    FamilyKind.AUTOENCODER: {
        "ema_decay": "ema_decay: null                 # autoencoders keep no moving average of their weights",
        "critic_augment": "no critic in an autoencoder (the GAN bundles take fixed:P or ada)",
        "iteration": "optimiser steps",
        "activation": "sigmoid",
        "network_input": "image [B, 1, *image_size]",
        "exported": "decoder",
        "objective_keys": "`lr`, `betas`, ...)",
        "exported_weights": "the autoencoder's weights",
        "setting_example": "latent_size=64",
    },
    FamilyKind.ADVERSARIAL: {
        "ema_decay": "ema_decay: 0.999                # sample from an exponential moving average of the generator weights",
        "critic_augment": "differentiable augmentation of real and generated images before every critic call: off, "
        "fixed:P, ada[:target=0.6,speed=0.005]",
        "iteration": "generator steps",
        "activation": "tanh",
        "network_input": "noise [B, latent_size]",
        "exported": "generator",
        "objective_keys": "`lr`, `betas`, `critic_steps`, ...), `ema_decay`",
        "exported_weights": "the generator's weights, their moving average when `ema_decay` is set,",
        "setting_example": "minibatch_std=true",
    },
}


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else float(value)


def _default_networks(spec: FamilySpec, spatial_dims: int, size: int, sized: bool = True) -> dict:
    """The family's networks as the bundle builds them by default, on the meta device (no memory, no time)."""
    import torch

    from medvol.networks.factory import build, sized_options

    options = sized_options(spec.name, spatial_dims, size, {}, dataset_size=DATASET_SIZE) if sized else {}
    with torch.device("meta"):
        return build(spec.name, spatial_dims, size, num_classes=2 if spec.conditional else 0, **options)


def _parameters(spec: FamilySpec) -> str:
    """The README bullet on the default networks' parameters and the memory their training state takes."""
    from medvol.networks.factory import parameter_counts

    cases, totals = [], []
    for spatial_dims, size in ((2, spec.bundle.image_size), (3, VOLUME_SIZE)):
        counts = parameter_counts(_default_networks(spec, spatial_dims, size))
        published = sum(parameter_counts(_default_networks(spec, spatial_dims, size, sized=False)).values())
        total = sum(counts.values())
        parts = ", ".join(f"{name} {count / 1e6:.2f} M" for name, count in counts.items())
        cases.append(f"{spatial_dims}D {size}^{spatial_dims}: {parts} ({total / 1e6:.2f} M in all; the published "
                     f"widths: {published / 1e6:.1f} M)")
        totals.append(total * BYTES_PER_PARAMETER / 1e9)
    example = KIND_WORDS[spec.kind]["setting_example"]
    return (
        "- Parameters of the default networks for a few hundred training images (widths follow `width` (null: 32 in "
        "2D, 16 in 3D, doubled from 2000 and again from 20000 training samples; `medvol train --width N`, or "
        f"`--network key=value` for single settings such as `{example}`); `run.json` records the widths, the base "
        f"width and the parameter counts): {'; '.join(cases)}.\n"
        f"  Weights, gradients and Adam state take about 16 bytes per parameter in fp32: {totals[0]:.3f} GB (2D) and\n"
        f"  {totals[1]:.3f} GB (3D) before activations; the memory planner (`plan.json`) picks the micro-batch that fits"
    )


def _latent_size(spec: FamilySpec) -> int:
    return int(_default_networks(spec, 2, spec.bundle.image_size)[spec.exported_network].latent_size)


def _exported_network_words(spec: FamilySpec, latent: int, size: int, value_range: str) -> str:
    """The README paragraphs on ``network_def`` and the TorchScript file of the exported network."""
    name, channels = spec.name, latent + int(spec.conditional)
    classes = ", 2 classes" if spec.conditional else ""
    network_def = (
        f"`network_def` is rebuilt from `runs/{name}/run.json`; for a run in another folder add `--run_dir RUN` to "
        f"`ckpt_export` (without it the network comes from `runs/{name}`, or is the bundle's default network when no "
        "run is there, and weights that do not fit it end the command with `...: the weights do not fit the network "
        "built from it; pass --run_dir RUN, the run they come from (...)`). Without any run, `verify_net_in_out` "
        f"checks the bundle's default network (the parameters of `configs/train.yaml`{classes}) against "
        "`metadata.json`, which describes it: input `image` (MONAI's tools read that key; `type: noise`) "
        f"`[B, {channels}]` float32, output `[B, 1, {size}, {size}]` in {value_range} (a run with another "
        "`latent_size` needs `--_meta_#network_data_format#inputs#image#num_channels N`)."
    )
    script = "`G.ts` (compiled with `torch.jit.script`)"
    if spec.is_autoencoder and spec.latent_prior is LatentPrior.TRAINING_CODES:
        torchscript = (
            f"{script} is the decoder: latent codes `[B, {latent}]` to images `[B, 1, *image_size]` in {value_range}. "
            "Sampling draws the codes from a Gaussian fitted to the codes of training images (`inference.yaml` fits "
            "it from the training data); `G.ts` does not hold that Gaussian, so standard normal codes give other "
            "images."
        )
    elif spec.is_autoencoder:
        torchscript = (f"{script} is the decoder: latents `[B, {latent}]` drawn from the prior N(0, I) to images "
                       f"`[B, 1, *image_size]` in {value_range}.")
    elif spec.conditional:
        torchscript = (
            f"{script} maps `[B, {channels}]` to images `[B, 1, *image_size]` in {value_range}: columns 0 to "
            f"{latent - 1} standard normal noise, column {latent} the class index as a float (rounded; 0 to "
            "num_classes - 1, in the order of `run.json`'s `classes`). MONAI's tools feed a network one tensor, so "
            "the class travels as a column rather than as the `labels` argument of medvol's generator; "
            "`verify_net_in_out` puts a random 0 or 1 there. `G.ts` holds neither the class names nor a range check "
            "(an index outside the classes fails in the embedding lookup)."
        )
    else:
        torchscript = (f"{script} maps standard normal latents `[B, {latent}]` to images `[B, 1, *image_size]` in "
                       f"{value_range}.")
    return _wrap(network_def) + "\n" + _wrap(torchscript)


def _wrap(text: str) -> str:
    return textwrap.fill(text, width=WRAP_WIDTH, break_long_words=False, break_on_hyphens=False)


def _input_range(spec: FamilySpec, latent: int) -> str:
    if spec.latent_prior is LatentPrior.TRAINING_CODES:
        noise = "a Gaussian fitted to the latent codes of training images (medvol sample and configs/inference.yaml fit it)"
    else:
        noise = "standard normal N(0, 1)"
    if not spec.conditional:
        return noise
    return (f"columns 0-{latent - 1}: {noise}; column {latent}: the class index (0 to num_classes - 1, the classes of "
            "run.json)")


def _values(spec: FamilySpec) -> dict[str, Any]:
    """Every placeholder of the template for one family."""
    words, text = KIND_WORDS[spec.kind], spec.bundle
    low, high = (_number(v) for v in spec.output_range)
    value_range, size, latent = f"[{low}, {high}]", text.image_size, _latent_size(spec)
    name = spec.name
    return {
        **words,
        **{key: getattr(text, key) for key in ("title", "task", "summary", "about", "learns", "network_example",
                                                "objective_example", "image_size")},
        "name": name,
        "notes": f"{text.notes} " if text.notes else "",
        "range": value_range,
        "num_classes": ('"$medvol_training.class_count(@dataset_dir)"   # conditional: the classes of the datalist'
                        if spec.conditional else "0                  # unconditional"),
        "run_dir": f"runs/{name}".ljust(23),
        "labels": ("Labels are required: the model conditions on the datalist classes (`num_classes` is their count)."
                   if spec.conditional else "Labels are not used."),
        "network_input": words["network_input"] + (" + class index [B]" if spec.conditional else ""),
        "export": _wrap(f"Export the {words['exported']} of a trained run to TorchScript and check it with MONAI's "
                        f"tools, from the bundle folder, RUN being `runs/{name}` (the default `output_dir` of "
                        "`train.yaml` and `run_dir` of `inference.yaml`):"),
        "network_def": _exported_network_words(spec, latent, size, value_range),
        "label_option": "[--label lesion] " if spec.conditional else "",
        "parameters": _parameters(spec),
        "measurements": text.measurements or "- Files and times: not measured yet.",
        "input_channels": latent + int(spec.conditional),
        "input_range": _input_range(spec, latent),
        "input_channel_def": {str(latent): "class index, 0 to num_classes - 1 (the classes of run.json)"}
        if spec.conditional else {},
        "output_shape": [size, size],
        "output_range": [low, high],
        # the defaults that `medvol train`, `sample` and `evaluate` state too (padded to the comment column)
        "seed": defaults.SEED,
        "utility_seeds": f"{defaults.UTILITY_SEEDS}".ljust(25),
        "synthetic_ratio": f"{defaults.SYNTHETIC_RATIO}".ljust(15),
    }


def _fill(text: str, values: dict[str, Any], source: str) -> str:
    def value(match: re.Match) -> str:
        if match.group(1) not in values:
            raise KeyError(f"{source}: no value for the placeholder {match.group(0)}")
        return str(values[match.group(1)])

    return PLACEHOLDER.sub(value, text)


def _fill_json(node: Any, values: dict[str, Any], source: str) -> Any:
    """JSON with placeholders: a string that is one placeholder takes the value itself (a number, a list...)."""
    if isinstance(node, dict):
        return {key: _fill_json(item, values, source) for key, item in node.items()}
    if isinstance(node, list):
        return [_fill_json(item, values, source) for item in node]
    if isinstance(node, str):
        whole = PLACEHOLDER.fullmatch(node)
        return values[whole.group(1)] if whole and whole.group(1) in values else _fill(node, values, source)
    return node


def rendered_files(family: str | FamilySpec) -> dict[str, str]:
    """The files of a family's bundle folder, by path relative to the folder, as the template renders them."""
    spec = family if isinstance(family, FamilySpec) else families.get_family(family)
    values = _values(spec)
    files = {}
    for path in sorted(p for p in TEMPLATE_DIR.rglob("*") if p.is_file()):
        relative = path.relative_to(TEMPLATE_DIR).as_posix()
        text = path.read_text()
        if path.suffix == ".json":
            files[relative] = json.dumps(_fill_json(json.loads(text), values, relative), indent=4) + "\n"
        else:
            files[relative] = _fill(text, values, relative)
    return files


def write_bundle(family: str | FamilySpec, folder: str | os.PathLike) -> Path:
    """Write a family's rendered bundle into `folder` (created; files there that the template has are replaced).

    Returns:
        the bundle folder.
    """
    folder = Path(folder)
    for relative, text in rendered_files(family).items():
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return folder

