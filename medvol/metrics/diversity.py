"""Diversity of a set of images: pairwise MS-SSIM and voxel distance, per class, and a mode-collapse flag.

Images are float tensors ``[N, 1, *size]`` in [-1, 1] (medvol's training range), 2D or 3D. Pairs are drawn inside
one set (within-set similarity): a generator that returns the same image again and again has MS-SSIM 1 and distance 0
between its samples, while real images of one class vary.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from monai.metrics.regression import compute_ms_ssim, compute_ssim_and_cs

from medvol.errors import MedvolInputError

__all__ = [
    "DIVERSITY_RATIO_THRESHOLD",
    "MIN_MS_SSIM_SIDE",
    "MIN_SAMPLES_FOR_RATIO",
    "SMALL_SAMPLE_RATIO_THRESHOLD",
    "diversity_report",
    "mean_pairwise_distance",
    "ms_ssim_settings",
    "pair_ssim",
    "pairwise_ms_ssim",
]

# Wang et al. 2003's weights for 5 scales, finest first (MONAI's default).
_STANDARD_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_KERNEL_SIZE = 5
_KERNEL_SIGMA = 1.0
MIN_MS_SSIM_SIDE = 2 * _KERNEL_SIZE  # two scales: the window fits the half-size image
_CHUNK_VOXELS = 2**22  # voxels per image batch of a similarity computation: large batches, bounded memory

# Mode collapse: synthetic within-set diversity, as (1 - MS-SSIM) or as mean voxel distance, below this fraction of the
# real images' (overall or in any class); with fewer than MIN_SAMPLES_FOR_RATIO images on a side the ratio is noisy and
# only near-identical samples count. See diversity_report for how the numbers were chosen.
DIVERSITY_RATIO_THRESHOLD = 0.5
SMALL_SAMPLE_RATIO_THRESHOLD = 0.1
MIN_SAMPLES_FOR_RATIO = 8


def ms_ssim_settings(spatial_size: Sequence[int]) -> dict:
    """MS-SSIM kernel and scale weights that fit images of ``spatial_size`` (e.g. 16^3, 32^2, 32^3).

    MONAI's defaults (11-voxel kernel, 5 scales) need more than 160 voxels per side. medvol keeps a 5-voxel Gaussian
    window (sigma 1.0, so the window spans +-2 sigma) at every size and uses as many scales (at most 5) as MONAI's size
    check allows and as keep the window inside the coarsest scale (each scale halves the image): 2 at 16 voxels, 3 at
    32, 4 at 64, 5 from 128 on; at least 2, so at least 10 voxels per side. The weights are the
    first (finest) standard weights, renormalised to sum 1, so the finest level of a small image plays the part of
    the finest level of the original pyramid. Numbers are comparable between sets of the same size only.

    Args:
        spatial_size: the image's spatial shape ``[x, y(, z)]``.

    Raises:
        MedvolInputError: a side shorter than two scales of the 5-voxel window (10 voxels).
    """
    side = int(min(spatial_size))
    if side < MIN_MS_SSIM_SIDE:
        raise MedvolInputError(None, f"MS-SSIM needs at least {MIN_MS_SSIM_SIDE} voxels per side (two scales of its "
                                     f"{_KERNEL_SIZE}-voxel window), got images of size {list(spatial_size)}")
    scales = 1
    for n in range(2, len(_STANDARD_WEIGHTS) + 1):
        if side // (n - 1) ** 2 > _KERNEL_SIZE - 1:  # MONAI compute_ms_ssim's own size check
            scales = n
    weights = np.asarray(_STANDARD_WEIGHTS[:scales], dtype=np.float64)
    return {
        "kernel_size": _KERNEL_SIZE,
        "kernel_sigma": _KERNEL_SIGMA,
        "weights": tuple(float(w) for w in weights / weights.sum()),
    }


def _check_images(images: torch.Tensor, name: str, minimum: int = 2) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.ndim not in (4, 5):
        shape = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
        raise MedvolInputError(None, f"{name}: expected images [N, C, x, y(, z)], got {shape}")
    if images.shape[0] < minimum:
        raise MedvolInputError(None, f"{name} needs at least {minimum} images, got {images.shape[0]}")
    return _plain(images)


def _plain(images: torch.Tensor) -> torch.Tensor:
    """float32 torch.Tensor without autograd history or MetaTensor metadata (none is needed for a similarity)."""
    return images.detach().float().as_subclass(torch.Tensor)


def _pairs(n: int, max_pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """All pairs i < j when there are at most ``max_pairs``, else ``max_pairs`` random pairs of distinct images."""
    if n * (n - 1) // 2 <= max_pairs:
        first, second = np.triu_indices(n, k=1)
        return first, second
    rng = np.random.default_rng(seed)
    first = rng.integers(0, n, size=max_pairs)
    second = (first + rng.integers(1, n, size=max_pairs)) % n
    return first, second


def _chunk(images: torch.Tensor) -> int:
    return max(1, min(1024, _CHUNK_VOXELS // max(1, int(np.prod(images.shape[1:])))))


def _unit_range(images: torch.Tensor) -> torch.Tensor:
    # SSIM's luminance term (2 mu_x mu_y + c1) / (mu_x^2 + mu_y^2 + c1) assumes non-negative intensities: [-1, 1]
    # (a data range of 2) is shifted to [0, 1] with data range 1, which leaves the contrast and structure terms unchanged.
    return (images + 1.0) / 2.0


def pair_ssim(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """SSIM of each image in ``first`` with the image at the same index in ``second`` (MONAI's SSIM), shape ``[N]``.

    Uses the same 5-voxel Gaussian window as the MS-SSIM here; images in [-1, 1].
    """
    first, second = _plain(first), _plain(second)
    if first.shape != second.shape:
        raise MedvolInputError(None, f"SSIM: images of shape {list(first.shape)} and {list(second.shape)} differ")
    if min(first.shape[2:]) < _KERNEL_SIZE:
        raise MedvolInputError(None, f"SSIM needs at least {_KERNEL_SIZE} voxels per side, got images of size {list(first.shape[2:])}")
    spatial_dims = first.ndim - 2
    out, chunk = [], _chunk(first)
    for start in range(0, first.shape[0], chunk):
        ssim_map, _ = compute_ssim_and_cs(
            y_pred=_unit_range(first[start : start + chunk]),
            y=_unit_range(second[start : start + chunk]),
            spatial_dims=spatial_dims,
            kernel_size=[_KERNEL_SIZE] * spatial_dims,
            kernel_sigma=[_KERNEL_SIGMA] * spatial_dims,
            data_range=1.0,
        )
        out.append(ssim_map.flatten(1).mean(1))
    return torch.cat(out) if out else torch.zeros(0)


def pairwise_ms_ssim(images: torch.Tensor, max_pairs: int = 256, seed: int = 0) -> float:
    """Mean MS-SSIM between pairs of images of one set (MONAI's ``compute_ms_ssim``, settings from `ms_ssim_settings`).

    Args:
        images: ``[N, 1, *size]`` in [-1, 1], N >= 2.
        max_pairs: all pairs when there are at most this many, else this many random pairs.
        seed: seed of the pair draw.

    Returns:
        mean MS-SSIM in [0, 1]; 1 means every pair is identical.
    """
    images = _check_images(images, "MS-SSIM")
    settings = ms_ssim_settings(images.shape[2:])
    first, second = _pairs(images.shape[0], max_pairs, seed)
    values, chunk = [], _chunk(images)
    for start in range(0, len(first), chunk):
        a = images[torch.as_tensor(first[start : start + chunk])]
        b = images[torch.as_tensor(second[start : start + chunk])]
        values.append(
            compute_ms_ssim(
                _unit_range(a), _unit_range(b), spatial_dims=images.ndim - 2, data_range=1.0, **settings
            ).flatten()
        )
    return float(torch.cat(values).double().mean())


def mean_pairwise_distance(images: torch.Tensor, max_pairs: int = 256, seed: int = 0) -> float:
    """Mean absolute voxel difference between pairs of images of one set (in [-1, 1] units, so 0..2).

    Args:
        images: ``[N, 1, *size]`` in [-1, 1], N >= 2.
        max_pairs: all pairs when there are at most this many, else this many random pairs.
        seed: seed of the pair draw.
    """
    images = _check_images(images, "mean pairwise distance")
    first, second = _pairs(images.shape[0], max_pairs, seed)
    total, chunk = 0.0, _chunk(images)
    for start in range(0, len(first), chunk):
        a = images[torch.as_tensor(first[start : start + chunk])]
        b = images[torch.as_tensor(second[start : start + chunk])]
        total += float((a - b).abs().flatten(1).double().mean(1).sum())
    return total / len(first)


def _set_diversity(images: torch.Tensor, max_pairs: int, seed: int) -> tuple[float | None, float | None]:
    if images.shape[0] < 2:
        return None, None
    return pairwise_ms_ssim(images, max_pairs, seed), mean_pairwise_distance(images, max_pairs, seed)


def _ratio_threshold(n_synthetic: int, n_real: int) -> float:
    if min(n_synthetic, n_real) >= MIN_SAMPLES_FOR_RATIO:
        return DIVERSITY_RATIO_THRESHOLD
    return SMALL_SAMPLE_RATIO_THRESHOLD


def _collapse_reasons(scope: str, entry: dict, threshold: float) -> list[str]:
    reasons = []
    ms_syn, ms_real = entry["ms_ssim_synthetic"], entry["ms_ssim_real"]
    if ms_syn is not None and ms_real is not None and (1.0 - ms_syn) < threshold * (1.0 - ms_real):
        reasons.append(
            f"{scope}: synthetic MS-SSIM {ms_syn:.3f} vs real {ms_real:.3f} "
            f"(1 - MS-SSIM {1.0 - ms_syn:.3f} < {threshold} x {1.0 - ms_real:.3f})"
        )
    d_syn, d_real = entry["distance_synthetic"], entry["distance_real"]
    if d_syn is not None and d_real is not None and d_syn < threshold * d_real:
        reasons.append(f"{scope}: synthetic mean pairwise distance {d_syn:.4f} < {threshold} x real {d_real:.4f}")
    return reasons


def diversity_report(
    synthetic_images: torch.Tensor,
    synthetic_labels: np.ndarray,
    real_images: torch.Tensor,
    real_labels: np.ndarray,
    classes: Sequence[str],
    max_pairs: int = 256,
    seed: int = 0,
) -> dict:
    """Within-set diversity of synthetic and real images, overall and per class, and a mode-collapse flag.

    ``mode_collapse`` is True when the synthetic images are much less diverse than the real ones, overall or in any
    class: their dissimilarity ``1 - MS-SSIM`` or their mean pairwise voxel distance is below 0.5 times the real
    images' (below 0.1 times when a side has fewer than 8 images). A generator that returns one image per class has
    ratio 0 in every class. The thresholds come from real data split against itself (random disjoint sets of n images
    per class of mednist64 at 32^2, 12 draws, 6 classes, both ratios): the smallest ratio seen was 0.58 at n=8,
    0.67 at n=16, 0.84 at n=50, but 0.18 at n=4, where 6 pairs are too few to tell a small spread from collapse;
    hippocampus volumes (8 draws at 16^3 and 32^3) stayed above 0.84 from n=8 on and above 0.70 at n=4.
    Hence 0.5 from 8 images on and only near-identical samples (ratio < 0.1) below that. A generator whose samples
    of a class are copies of 2 images sits near 0.5 and may go either way; 3 or more modes are not flagged.

    Args:
        synthetic_images: ``[N, 1, *size]`` in [-1, 1].
        synthetic_labels: ``[N]`` int class indices (-1 = unlabelled).
        real_images: ``[M, 1, *size]`` in [-1, 1], the same size.
        real_labels: ``[M]`` int class indices (-1 = unlabelled).
        classes: class names by index (empty for unlabelled data).
        max_pairs: pairs per set and class (all pairs when fewer).
        seed: seed of the pair draws.

    Returns:
        dict with ``ms_ssim_synthetic``, ``ms_ssim_real``, ``distance_synthetic``, ``distance_real`` (overall),
        ``per_class`` {name: {``ms_ssim_synthetic``, ``ms_ssim_real``, ``distance_synthetic``, ``distance_real``,
        ``n_synthetic``, ``n_real``}} (values None for a class with fewer than 2 images on a side),
        ``mode_collapse`` (bool), ``mode_collapse_reason`` (str, empty when False), ``thresholds``,
        ``settings`` (MS-SSIM kernel, weights, pairs).

    Raises:
        MedvolInputError: fewer than 2 images in a set, or sets of different image sizes.
    """
    synthetic_images = _check_images(synthetic_images, "diversity of the synthetic images")
    real_images = _check_images(real_images, "diversity of the real images")
    if tuple(synthetic_images.shape[1:]) != tuple(real_images.shape[1:]):
        raise MedvolInputError(
            None,
            f"synthetic images {list(synthetic_images.shape[1:])} and real images {list(real_images.shape[1:])} "
            "differ in channels or size",
        )
    synthetic_labels = np.asarray(synthetic_labels, dtype=np.int64).reshape(-1)
    real_labels = np.asarray(real_labels, dtype=np.int64).reshape(-1)
    if len(synthetic_labels) != synthetic_images.shape[0] or len(real_labels) != real_images.shape[0]:
        raise MedvolInputError(None, "diversity: the number of labels differs from the number of images")

    ms_syn, d_syn = _set_diversity(synthetic_images, max_pairs, seed)
    ms_real, d_real = _set_diversity(real_images, max_pairs, seed)
    overall = {"ms_ssim_synthetic": ms_syn, "ms_ssim_real": ms_real, "distance_synthetic": d_syn, "distance_real": d_real}
    reasons = _collapse_reasons("overall", overall, _ratio_threshold(synthetic_images.shape[0], real_images.shape[0]))
    per_class = {}
    for index, name in enumerate(classes):
        syn = synthetic_images[torch.as_tensor(synthetic_labels == index)]
        real = real_images[torch.as_tensor(real_labels == index)]
        ms_s, d_s = _set_diversity(syn, max_pairs, seed)
        ms_r, d_r = _set_diversity(real, max_pairs, seed)
        entry = {"ms_ssim_synthetic": ms_s, "ms_ssim_real": ms_r, "distance_synthetic": d_s, "distance_real": d_r,
                 "n_synthetic": int(syn.shape[0]), "n_real": int(real.shape[0])}
        per_class[str(name)] = entry
        reasons += _collapse_reasons(f"class {name!r}", entry, _ratio_threshold(syn.shape[0], real.shape[0]))
    return {
        **overall,
        "per_class": per_class,
        "mode_collapse": bool(reasons),
        "mode_collapse_reason": "; ".join(reasons),
        "thresholds": {"ratio": DIVERSITY_RATIO_THRESHOLD, "small_sample_ratio": SMALL_SAMPLE_RATIO_THRESHOLD,
                       "min_samples_for_ratio": MIN_SAMPLES_FOR_RATIO},
        "settings": {**ms_ssim_settings(real_images.shape[2:]), "max_pairs": max_pairs, "seed": seed},
    }
