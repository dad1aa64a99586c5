"""Volume coherence: how alike neighbouring slices are along each axis of real and synthetic volumes.

Anatomy is continuous: in a real volume slice k and slice k+1 look alike along every axis. A volumetric generator has
to learn that; a slice-wise (2D) generator whose samples are stacked into volumes does not know it at all, and its
stacks change abruptly from slice to slice along the stacking axis while staying smooth within each slice. The
profile of adjacent-slice similarity per axis, compared with real volumes, shows it (higher is not better: a blurry
generator is more coherent than anatomy; the real volumes' value is the target).

Volumes are float tensors ``[N, 1, x, y, z]`` in [-1, 1] (medvol's training range). Pairs in which either slice is
(nearly) constant, e.g. padding around a volume fitted to its grid, have no structure to compare and are left out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from medvol.errors import MedvolInputError
from medvol.metrics.diversity import pair_ssim

__all__ = ["MEASURES", "CONSTANT_STD", "adjacent_slice_similarity", "slice_coherence", "coherence_report"]

MEASURES = ("ncc", "ssim")
# slices whose voxel standard deviation is below this (in the [-1, 1] range) count as constant (padding)
CONSTANT_STD = 1e-3
PLANES = {0: "sagittal", 1: "coronal", 2: "axial"}  # the slices across each axis of an RAS volume


def _check_volumes(volumes: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(volumes, torch.Tensor) or volumes.ndim != 5 or volumes.shape[1] != 1:
        shape = tuple(volumes.shape) if hasattr(volumes, "shape") else type(volumes).__name__
        raise MedvolInputError(None, f"{name}: expected volumes [N, 1, x, y, z], got {shape}")
    if volumes.shape[0] < 1 or min(volumes.shape[2:]) < 2:
        raise MedvolInputError(None, f"{name}: need a volume of 2+ slices per axis, got {tuple(volumes.shape)}")
    return volumes.detach().float().as_subclass(torch.Tensor)


def adjacent_slice_similarity(volumes: torch.Tensor, axis: int, measure: str = "ncc") -> torch.Tensor:
    """Similarity of every slice with the next one along spatial `axis`, per volume.

    Args:
        volumes: ``[N, 1, x, y, z]`` in [-1, 1].
        axis: spatial axis (0, 1 or 2) the slices are cut across.
        measure: ``ncc`` (normalised cross-correlation, i.e. Pearson correlation of the two slices' voxels, in
            [-1, 1]) or ``ssim`` (SSIM with the 5-voxel Gaussian window of `medvol.metrics.diversity.pair_ssim`).

    Returns:
        float64 ``[N, L - 1]`` (L slices along `axis`); NaN where either slice is constant (std < `CONSTANT_STD`).
    """
    if measure not in MEASURES:
        raise MedvolInputError(None, f"unknown coherence measure {measure!r}; choose one of {', '.join(MEASURES)}")
    if axis not in (0, 1, 2):
        raise MedvolInputError(None, f"axis must be 0, 1 or 2, got {axis}")
    volumes = _check_volumes(volumes, "adjacent_slice_similarity")
    slices = volumes[:, 0].movedim(axis + 1, 1)  # [N, L, u, v]
    count, length = slices.shape[:2]
    first, second = slices[:, :-1].reshape(-1, *slices.shape[2:]), slices[:, 1:].reshape(-1, *slices.shape[2:])
    flat_first, flat_second = first.flatten(1).double(), second.flatten(1).double()
    std_first, std_second = flat_first.std(1, unbiased=False), flat_second.std(1, unbiased=False)
    constant = (std_first < CONSTANT_STD) | (std_second < CONSTANT_STD)
    if measure == "ncc":
        centred = (flat_first - flat_first.mean(1, keepdim=True)) * (flat_second - flat_second.mean(1, keepdim=True))
        values = centred.mean(1) / (std_first * std_second).clamp_min(1e-12)
    else:
        if min(first.shape[1:]) < 5:  # pair_ssim's window
            raise MedvolInputError(None, f"SSIM between slices needs 5+ voxels per side, got {list(first.shape[1:])}")
        values = pair_ssim(first[:, None], second[:, None]).double()
    values = torch.where(constant, torch.full_like(values, float("nan")), values)
    return values.reshape(count, length - 1)


def _summary(values: torch.Tensor) -> dict:
    """Per-volume means (NaN pairs left out), their mean and sd over volumes, and the mean profile over positions."""
    array = values.numpy()
    valid = ~np.isnan(array)
    with np.errstate(invalid="ignore"):
        per_volume = np.where(valid.any(1), np.nansum(array, 1) / np.maximum(valid.sum(1), 1), np.nan)
        profile = np.where(valid.any(0), np.nansum(array, 0) / np.maximum(valid.sum(0), 1), np.nan)
    kept = per_volume[~np.isnan(per_volume)]
    return {
        "mean": float(kept.mean()) if len(kept) else None,
        "sd": float(kept.std(ddof=1)) if len(kept) > 1 else None,
        "per_volume": [None if np.isnan(v) else float(v) for v in per_volume],
        "profile": [None if np.isnan(v) else float(v) for v in profile],
    }


def slice_coherence(volumes: torch.Tensor, axes: Sequence[int] = (0, 1, 2), measures: Sequence[str] = MEASURES) -> dict:
    """Adjacent-slice similarity of a set of volumes along each axis, summarised.

    Args:
        volumes: ``[N, 1, x, y, z]`` in [-1, 1].
        axes: spatial axes to cut slices across.
        measures: ``ncc`` and/or ``ssim`` (see `adjacent_slice_similarity`).

    Returns:
        ``{"n": N, "axes": {"0": {"plane": "sagittal", "pairs": P, "constant_pairs": C, "ncc": {"mean", "sd",
        "per_volume", "profile"}, "ssim": {...}}, ...}}``: ``mean`` over volumes of each volume's mean similarity of
        its non-constant adjacent pairs, ``sd`` across volumes, ``profile`` the mean per slice position (pair k, k+1).
    """
    volumes = _check_volumes(volumes, "slice_coherence")
    report: dict = {"n": int(volumes.shape[0]), "axes": {}}
    for axis in axes:
        entry: dict = {"plane": PLANES.get(int(axis), str(axis))}
        for measure in measures:
            values = adjacent_slice_similarity(volumes, int(axis), measure)
            entry["pairs"] = int(values.numel())
            entry["constant_pairs"] = int(torch.isnan(values).sum())
            entry[measure] = _summary(values)
        report["axes"][str(int(axis))] = entry
    return report


def coherence_report(
    sets: Mapping[str, torch.Tensor], reference: str = "real", measures: Sequence[str] = MEASURES
) -> dict:
    """`slice_coherence` of several sets of volumes (e.g. real, volumetric samples, stacked slice-wise samples) and
    each set's mean minus the reference set's, per axis and measure.

    Args:
        sets: name -> volumes ``[N, 1, x, y, z]`` in [-1, 1], all of one shape.
        reference: the name of the real set the others are compared with.
        measures: see `adjacent_slice_similarity`.

    Returns:
        ``{"reference": name, "sets": {name: slice_coherence}, "difference": {name: {axis: {measure: mean - real}}}}``.
    """
    if reference not in sets:
        raise MedvolInputError(None, f"coherence_report: the reference set {reference!r} is not among {list(sets)}")
    shapes = {name: tuple(v.shape[2:]) for name, v in sets.items()}
    if len(set(shapes.values())) > 1:
        raise MedvolInputError(None, f"coherence_report: volumes of different shapes {shapes}")
    results = {name: slice_coherence(volumes, measures=measures) for name, volumes in sets.items()}
    real = results[reference]["axes"]
    difference: dict = {}
    for name, result in results.items():
        if name == reference:
            continue
        difference[name] = {}
        for axis, entry in result["axes"].items():
            difference[name][axis] = {}
            for measure in measures:
                ours, theirs = entry[measure]["mean"], real[axis][measure]["mean"]
                difference[name][axis][measure] = None if ours is None or theirs is None else ours - theirs
    return {"reference": reference, "sets": results, "difference": difference}
