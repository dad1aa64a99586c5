"""Memorisation check: is a synthetic image closer to a training image than new real images ever are?

For every synthetic image its nearest training image in feature space (Euclidean), and the SSIM between the two;
the same for every held-out real image, which gives the scale: a held-out image is by construction not a copy of
a training image, so a synthetic image closer to its training neighbour than 95% of the held-out images are to
theirs is a possible copy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from medvol.errors import MedvolInputError
from medvol.metrics.diversity import pair_ssim
from medvol.metrics.fidelity import as_feature_array, pairwise_euclidean

__all__ = ["nearest_neighbour_privacy", "nearest_training_neighbours"]


def _check_set(images: torch.Tensor, features, name: str, minimum: int) -> tuple[torch.Tensor, np.ndarray]:
    features = as_feature_array(features, f"privacy, {name} features")
    if not isinstance(images, torch.Tensor) or images.ndim not in (4, 5):
        raise MedvolInputError(None, f"privacy: expected {name} images [N, C, x, y(, z)], got {getattr(images, 'shape', images)}")
    if images.shape[0] != len(features):
        raise MedvolInputError(None, f"privacy: {images.shape[0]} {name} images but {len(features)} feature rows")
    if len(features) < minimum:
        raise MedvolInputError(None, f"privacy check needs at least {minimum} {name} images, got {len(features)}")
    return images, features


def nearest_training_neighbours(
    features: np.ndarray, images: torch.Tensor, train_features: np.ndarray, train_images: torch.Tensor
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each row of ``features``: index of the nearest training row, its Euclidean distance, and the SSIM of the
    two images (`medvol.metrics.diversity.pair_ssim`, 5-voxel Gaussian window, images in [-1, 1])."""
    distances = pairwise_euclidean(features, train_features)
    index = distances.argmin(axis=1)
    nearest = distances[np.arange(len(index)), index]
    ssim = pair_ssim(images, train_images[torch.as_tensor(index)]).double().numpy()
    return index, nearest, ssim


def nearest_neighbour_privacy(
    train_images: torch.Tensor,
    train_features,
    heldout_images: torch.Tensor,
    heldout_features,
    synthetic_images: torch.Tensor,
    synthetic_features,
    synthetic_paths: Sequence[str],
    percentile: float = 5.0,
) -> dict:
    """Flag synthetic images that sit closer to a training image than held-out real images do.

    Thresholds come from the held-out images' distances to their nearest training image: the ``percentile``-th
    percentile of the feature distance, and the ``100 - percentile``-th percentile of the SSIM (the
    ``percentile``-th of 1 - SSIM). A synthetic image is flagged when its feature distance is at most the feature
    threshold; SSIM does not have to agree (a memorised image that the generator shifted or re-contrasted keeps its
    features but loses SSIM), and ``ssim_agrees`` per sample says whether it also passed the SSIM threshold. Exact
    copies have distance 0 and are always flagged. A generator as good as new real data gets about
    ``percentile`` % flagged (``expected_fraction``), since that many held-out images pass the threshold too.

    Args:
        train_images: ``[N_train, 1, *size]`` in [-1, 1], the whole training split (a subset would miss copies of
            the images left out).
        train_features: ``[N_train, F]``.
        heldout_images: ``[N_heldout, 1, *size]`` real images not used for training (N_heldout >= 2).
        heldout_features: ``[N_heldout, F]``.
        synthetic_images: ``[N_synthetic, 1, *size]``.
        synthetic_features: ``[N_synthetic, F]``.
        synthetic_paths: file of each synthetic image (reported for the flagged ones).
        percentile: held-out percentile that sets the thresholds.

    Returns:
        dict with ``flagged_fraction``, ``flagged`` (paths), ``flagged_with_ssim_fraction`` (flagged and SSIM agrees),
        ``expected_fraction``, ``threshold`` {``feature``, ``ssim``}, ``percentile``, ``n_reference`` (training
        images searched), ``nearest`` (per synthetic image:
        ``path``, ``train_index``, ``feature_distance``, ``ssim``, ``flagged``, ``ssim_agrees``), ``heldout``
        {``n``, ``feature_distance`` and ``ssim`` as ``median``/``p05``/``p95``}.

    Raises:
        MedvolInputError: image and feature counts or paths that disagree, fewer than 2 held-out images, an empty
            set, or sets of different image sizes.
    """
    if not 0.0 < percentile < 100.0:
        raise MedvolInputError(None, f"privacy: percentile must be in (0, 100), got {percentile}")
    train_images, train_features = _check_set(train_images, train_features, "training", 1)
    heldout_images, heldout_features = _check_set(heldout_images, heldout_features, "held-out", 2)
    synthetic_images, synthetic_features = _check_set(synthetic_images, synthetic_features, "synthetic", 1)
    paths = [str(p) for p in synthetic_paths]
    if len(paths) != len(synthetic_features):
        raise MedvolInputError(None, f"privacy: {len(paths)} synthetic paths for {len(synthetic_features)} synthetic images")
    shapes = {tuple(x.shape[1:]) for x in (train_images, heldout_images, synthetic_images)}
    if len(shapes) != 1:
        raise MedvolInputError(None, f"privacy: training, held-out and synthetic images differ in size: {sorted(shapes)}")
    if len({train_features.shape[1], heldout_features.shape[1], synthetic_features.shape[1]}) != 1:
        raise MedvolInputError(None, "privacy: training, held-out and synthetic features differ in width")

    _, heldout_distance, heldout_ssim = nearest_training_neighbours(heldout_features, heldout_images, train_features, train_images)
    feature_threshold = float(np.percentile(heldout_distance, percentile))
    ssim_threshold = float(np.percentile(heldout_ssim, 100.0 - percentile))
    index, distance, ssim = nearest_training_neighbours(synthetic_features, synthetic_images, train_features, train_images)
    flagged = distance <= feature_threshold
    ssim_agrees = ssim >= ssim_threshold
    nearest = [
        {"path": path, "train_index": int(i), "feature_distance": float(d), "ssim": float(s), "flagged": bool(f),
         "ssim_agrees": bool(a)}
        for path, i, d, s, f, a in zip(paths, index, distance, ssim, flagged, ssim_agrees)
    ]

    def spread(values: np.ndarray) -> dict:
        p05, median, p95 = np.percentile(values, [5, 50, 95])
        return {"p05": float(p05), "median": float(median), "p95": float(p95)}

    return {
        "flagged_fraction": float(flagged.mean()),
        "flagged": [path for path, f in zip(paths, flagged) if f],
        "flagged_with_ssim_fraction": float((flagged & ssim_agrees).mean()),
        "expected_fraction": percentile / 100.0,
        "threshold": {"feature": feature_threshold, "ssim": ssim_threshold},
        "percentile": float(percentile),
        "n_reference": len(train_features),
        "nearest": nearest,
        "heldout": {"n": len(heldout_distance), "feature_distance": spread(heldout_distance), "ssim": spread(heldout_ssim)},
    }
