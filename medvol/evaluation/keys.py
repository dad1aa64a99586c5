"""The names in ``metrics.json``: the one place that the evaluation writes them from and the report, the verdict and the
experiment scripts read them from.

Plain strings in a namespace class, as MONAI's `CommonKeys`, so a document written with them is the same JSON as one
written with literals.
"""

from __future__ import annotations

__all__ = ["METRICS_FILE", "REPORT_FILE", "MetricsKeys"]

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.html"


class MetricsKeys:
    """Top-level keys of the ``metrics.json`` that `medvol evaluate` writes (`medvol.evaluation.pipeline.evaluate`).

    Fidelity: `FID`, `KID`, `MMD` and their real-vs-real baselines, `FID_NOTE` (only when the FID is below its
    baseline), the k-NN metrics `PRECISION`, `RECALL`, `DENSITY`, `COVERAGE` with their `NEIGHBOURS_K`, their
    baselines and `PRECISION_RECALL_N`. Diversity: `MS_SSIM_SYNTHETIC`, `MS_SSIM_REAL`, `MODE_COLLAPSE`, `DIVERSITY`;
    `SLICE_COHERENCE` for volumes. Then `PRIVACY`, `RECOGNISABILITY`, `UTILITY` and `FILTERING` (on request),
    `INPUTS`, `FEATURE_EXTRACTOR`, `METHODS` (one sentence per number), `TIMING` (seconds per stage) and `VERDICT`.
    """

    FID = "fid"
    KID = "kid"
    MMD = "mmd"
    FID_REAL_BASELINE = "fid_real_baseline"
    KID_REAL_BASELINE = "kid_real_baseline"
    MMD_REAL_BASELINE = "mmd_real_baseline"
    FID_NOTE = "fid_note"
    PRECISION = "precision"
    RECALL = "recall"
    DENSITY = "density"
    COVERAGE = "coverage"
    NEIGHBOURS_K = "k"
    PRECISION_REAL_BASELINE = "precision_real_baseline"
    RECALL_REAL_BASELINE = "recall_real_baseline"
    DENSITY_REAL_BASELINE = "density_real_baseline"
    COVERAGE_REAL_BASELINE = "coverage_real_baseline"
    PRECISION_RECALL_N = "precision_recall_n"
    MS_SSIM_SYNTHETIC = "ms_ssim_synthetic"
    MS_SSIM_REAL = "ms_ssim_real"
    MODE_COLLAPSE = "mode_collapse"
    DIVERSITY = "diversity"
    SLICE_COHERENCE = "slice_coherence"
    PRIVACY = "privacy"
    RECOGNISABILITY = "recognisability"
    UTILITY = "utility"
    FILTERING = "filtering"
    INPUTS = "inputs"
    FEATURE_EXTRACTOR = "feature_extractor"
    METHODS = "methods"
    TIMING = "timing"
    VERDICT = "verdict"

    NEAREST_NEIGHBOURS = (PRECISION, RECALL, DENSITY, COVERAGE)
    # what the evaluation issue asks every metrics.json to hold
    REQUIRED = (FID, KID, FID_REAL_BASELINE, KID_REAL_BASELINE, MMD, *NEAREST_NEIGHBOURS, MS_SSIM_SYNTHETIC,
                MS_SSIM_REAL, MODE_COLLAPSE, PRIVACY, RECOGNISABILITY)
