"""How close is a reconstruction to its input? PSNR, SSIM and MAE per image, with their mean and sd.

SSIM is MONAI's `SSIMMetric` (Gaussian window of 11 voxels, sigma 1.5, k1 0.01, k2 0.03: Wang et al. 2004) in the
images' dimensionality, averaged over the whole image including its background; PSNR is MONAI's `PSNRMetric`
(10 log10(1 / MSE)); MAE the mean absolute voxel difference. The evaluation of an autoencoder run that uses them is
`medvol.evaluation.reconstruction`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from medvol.errors import MedvolInputError

__all__ = ["SSIM_WINDOW", "reconstruction_metrics"]

SSIM_WINDOW = 11  # MONAI's default and Wang et al.'s window; smaller only for images with a shorter side
SSIM_SIGMA = 1.5


def _summary(values: Sequence[float | None]) -> dict:
    """``{"mean", "sd", "values"}`` of the finite values (sd with n - 1; None for fewer than 2)."""
    finite = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    return {
        "mean": float(finite.mean()) if finite.size else None,
        "sd": float(finite.std(ddof=1)) if finite.size > 1 else None,
        "values": [None if v is None or not math.isfinite(v) else float(v) for v in values],
    }


def _ssim_window(shape: Sequence[int]) -> int:
    """`SSIM_WINDOW`, or the largest odd window that fits the shortest side."""
    side = int(min(shape))
    return min(SSIM_WINDOW, side if side % 2 else side - 1)


def reconstruction_metrics(
    inputs: Sequence[torch.Tensor], outputs: Sequence[torch.Tensor], data_range: float = 1.0
) -> dict:
    """PSNR, SSIM and MAE of each reconstruction against its input, and their mean and standard deviation.

    Args:
        inputs: images ``[1, *size]`` (a list, or a batch ``[N, 1, *size]``), 2D or 3D; sizes may differ between
            images.
        outputs: the reconstructions, the same shapes.
        data_range: intensity range of the images (1 for [0, 1]).

    Returns:
        ``{"psnr", "ssim", "mae"}`` each ``{"mean", "sd", "values"}``, and ``settings`` (data range, SSIM window).
        A perfect reconstruction has SSIM 1, MAE 0 and an infinite PSNR, reported as None and left out of the mean.

    Raises:
        MedvolInputError: different numbers or shapes of inputs and outputs, or an image side shorter than 3.
    """
    from monai.metrics import PSNRMetric, SSIMMetric

    if len(inputs) != len(outputs) or len(inputs) == 0:
        raise MedvolInputError(None, f"reconstruction metrics need as many reconstructions as inputs (at least one), got "
                                     f"{len(outputs)} and {len(inputs)}")
    psnr, ssim, mae, windows = [], [], [], set()
    for x, y in zip(inputs, outputs):
        x = torch.as_tensor(x).detach().float().cpu().as_subclass(torch.Tensor)
        y = torch.as_tensor(y).detach().float().cpu().as_subclass(torch.Tensor)
        if x.shape != y.shape or x.ndim not in (3, 4):
            raise MedvolInputError(None, f"reconstruction of shape {list(y.shape)} for an input of shape {list(x.shape)} "
                                         "(expected [1, x, y(, z)] each)")
        if min(x.shape[1:]) < 3:
            raise MedvolInputError(None, f"SSIM needs at least 3 voxels per side, got an image of size {list(x.shape[1:])}")
        window = _ssim_window(x.shape[1:])
        windows.add(window)
        metric = SSIMMetric(spatial_dims=x.ndim - 1, data_range=data_range, win_size=window, kernel_sigma=SSIM_SIGMA,
                            reduction="none")
        ssim.append(float(metric(y[None], x[None]).flatten()[0]))
        value = float(PSNRMetric(max_val=data_range, reduction="none")(y[None], x[None]).flatten()[0])
        psnr.append(value if math.isfinite(value) else None)
        mae.append(float((x - y).abs().double().mean()))
    return {
        "psnr": _summary(psnr),
        "ssim": _summary(ssim),
        "mae": _summary(mae),
        "settings": {"data_range": float(data_range), "ssim_window": sorted(windows), "ssim_sigma": SSIM_SIGMA,
                     "ssim_kernel": "gaussian", "ssim_k": [0.01, 0.03]},
    }
