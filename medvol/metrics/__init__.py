"""Metrics of synthetic data: is it faithful, diverse, private and useful?

- `fidelity`: FID, KID and MMD with bootstrap intervals next to the real-vs-real baseline, precision/recall and
  density/coverage;
- `diversity`: pairwise MS-SSIM and voxel distance per class, the `mode_collapse` flag;
- `coherence`: adjacent-slice similarity along each axis of volumes (does a stack of slices hang together?);
- `privacy`: nearest training neighbour of every synthetic sample, flagged against held-out real images;
- `classification`: a classifier's test metrics (accuracy, balanced accuracy, ROC AUC, recalls, confusion) and their
  summaries over seeds (mean and sd, paired differences with a t interval);
- `reconstruction`: PSNR / SSIM / MAE of reconstructions against their inputs.

Pure computations on images, features and labels; the evaluation that trains networks, reads files and writes
metrics.json is `medvol.evaluation`.
"""

from medvol.metrics.classification import classification_metrics, paired_difference, roc_auc, summarise
from medvol.metrics.coherence import adjacent_slice_similarity, coherence_report, slice_coherence
from medvol.metrics.diversity import diversity_report, mean_pairwise_distance, pairwise_ms_ssim
from medvol.metrics.fidelity import (
    bootstrap_interval,
    fidelity_with_baseline,
    frechet_distance,
    kernel_inception_distance,
    maximum_mean_discrepancy,
    precision_recall_density_coverage,
)
from medvol.metrics.privacy import nearest_neighbour_privacy, nearest_training_neighbours
from medvol.metrics.reconstruction import reconstruction_metrics

__all__ = [
    "frechet_distance",
    "kernel_inception_distance",
    "maximum_mean_discrepancy",
    "bootstrap_interval",
    "fidelity_with_baseline",
    "precision_recall_density_coverage",
    "pairwise_ms_ssim",
    "mean_pairwise_distance",
    "diversity_report",
    "adjacent_slice_similarity",
    "slice_coherence",
    "coherence_report",
    "nearest_neighbour_privacy",
    "nearest_training_neighbours",
    "reconstruction_metrics",
    "classification_metrics",
    "roc_auc",
    "summarise",
    "paired_difference",
]
