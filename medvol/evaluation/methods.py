"""The ``methods`` entry of metrics.json: how each number of `medvol evaluate` was computed, in words."""

from __future__ import annotations

from collections.abc import Mapping

from medvol.evaluation.data import HELDOUT_SPLIT, RealData
from medvol.evaluation.features import FeatureExtractor

__all__ = ["evaluation_methods"]


def evaluation_methods(real: RealData, extractor: FeatureExtractor, fidelity_counts: Mapping, knn: Mapping,
                       filtering: bool) -> dict:
    """One sentence per number of metrics.json: how it was computed (``methods``; the utility study's sentence is
    `medvol.evaluation.utility.utility_methods`, the verdict's `medvol.evaluation.verdict.VERDICT_METHOD`)."""
    heldout = f"the held-out real {HELDOUT_SPLIT} split"
    k = knn["synthetic"]["k"]
    n = fidelity_counts["n"]
    unit = ("resampling subjects: all slices of a volume together" if fidelity_counts.get("by_subject")
            else "resampling images")
    space = f"features of the {extractor.kind} feature extractor ({extractor.description})"
    methods = {
        "preprocessing": f"Real and synthetic files went through the same preprocessing as training "
                         f"({real.mode} mode, {real.preprocessing.get('intensity')} intensity scaling to [-1, 1], "
                         f"size {real.image_shape}), intensities scaled on that grid; synthetic files of another shape went through "
                         f"the real spatial preprocessing, `medvol sample` files were read back with the window they "
                         f"were written with (inputs.synthetic_preprocessing).",
        "fid": f"Frechet distance between Gaussians fitted to the {space} of the real training split and of the "
               f"synthetic samples, every set subsampled (seeded) to the same n = {n} (FID grows as n shrinks). "
               f"ci95: the 2.5th-97.5th percentiles of the FID over {fidelity_counts.get('resamples')} bootstrap resamples of both "
               f"sets ({unit}), shifted down by the bootstrap bias (resampling duplicates images, which raises the "
               f"FID, so the plain percentiles, kept as `percentile`, lie above the point estimate and usually "
               f"exclude it), lower end clipped at 0: the spread of the FID of n-sample sets, an interval for the "
               f"expected FID at this n (simulated at the extractor's width it covered that in every trial, i.e. "
               f"conservative), not for the distance between the distributions, which the finite-n bias puts well "
               f"below; compare it with fid_real_baseline at the same n. `bias_corrected` and `ci95_bias_corrected` "
               f"remove part of that bias (rough: they covered the population FID in 2-70% of simulated trials). An "
               f"FID below the real baseline is no sign of quality by itself: the feature extractor is trained on "
               f"the training split, so copies of training images score lower than new real images (`fid_note`, "
               f"read the privacy section).",
        "fid_real_baseline": f"The same Frechet distance, same n = {n} and the same training subsample, between the "
                             f"real training split and {heldout}: what new real images score, the scale for `fid`.",
        "kid": f"Kernel inception distance (unbiased MMD^2 with the kernel (x.y / F + 1)^3) between training-split "
               f"and synthetic features, n = {n} each, with a 95% bootstrap interval as for `fid` ({unit}; not "
               f"clipped: the unbiased estimate can be below 0).",
        "kid_real_baseline": f"The same KID between the real training split and {heldout}, n = {n} each.",
        "mmd": f"Maximum mean discrepancy (Gaussian kernel, bandwidth the median pairwise distance of the training "
               f"subsample) between training-split and synthetic features, n = {n} each.",
        "precision": f"Fraction of the synthetic samples inside the real manifold: the union of balls around each of "
                     f"the {knn['n_reference']} training-split features with the radius of its k = {k}-th "
                     f"nearest real neighbour (Euclidean distance in feature space). Precision, recall, density and "
                     f"coverage of the synthetic set and of {heldout} (their real baselines) are computed with the "
                     f"same number of samples, n = {knn['n']} (`precision_recall_n`; coverage and recall grow with "
                     f"n): the larger of the two sets is subsampled to n, {max(knn['repeats'].values())} seeded "
                     f"subsets averaged.",
        "recall": f"Fraction of training-split features inside the synthetic manifold (balls of radius the "
                  f"k = {k}-th nearest synthetic neighbour).",
        "density": f"Mean number of real k = {k} balls that contain each synthetic sample, divided by k "
                   f"(about 1 for samples distributed like the real ones).",
        "coverage": f"Fraction of training-split features whose k = {k} ball contains at least one synthetic sample.",
        "real_baselines": f"`*_real_baseline` of precision/recall/density/coverage: the same numbers against all "
                          f"{knn['n_reference']} training features with n = {knn['n']} samples of {heldout} in place "
                          f"of the n = {knn['n']} synthetic ones; `mmd_real_baseline`: the MMD between the training "
                          f"and held-out subsamples.",
        "ms_ssim_synthetic": "Mean multi-scale SSIM over random pairs of synthetic samples (kernel and scales sized "
                             "for small images, see diversity.settings; per class in diversity.per_class); high "
                             "values mean similar samples (low diversity).",
        "ms_ssim_real": "The same pairwise MS-SSIM among the real training images: the diversity to expect.",
        "mode_collapse": "True when the synthetic samples are far more alike than the real ones, overall or within a "
                         "class (see diversity.mode_collapse_reason for the rule that fired).",
        "privacy": f"For each synthetic sample its nearest training image by feature distance, and the SSIM to it; "
                   f"the 5th percentile of the same distance from {heldout} to the training split is the threshold: "
                   f"synthetic samples at most that far are flagged as possible copies (ssim_agrees: the SSIM also "
                   f"exceeds the held-out 95th percentile); new real images are flagged about 5% of the time.",
        "recognisability": "A classifier trained on the real training split labels each synthetic sample; the "
                           "fraction labelled as the class it was generated for, per class and overall "
                           f"(real_test: the same classifier on {heldout}, for scale).",
    }
    if real.spatial_dims == 3:
        methods["slice_coherence"] = (
            "Per axis (0 sagittal, 1 coronal, 2 axial slices), the normalised cross-correlation and SSIM of every slice "
            "with the next one, averaged per volume (pairs with a constant slice, e.g. padding, left out), then mean "
            f"and sd over the volumes of the real training split, {heldout} and the synthetic set; `difference`: "
            "each set's mean minus the training split's. Closer to real is better: stacks of independent 2D samples "
            "fall short across their stacking axis, blurry volumes exceed real.")
    # methods["utility"] is written from the study's result (`medvol.evaluation.utility.utility_methods`)
    if filtering:
        methods["filtering"] = ("A real-vs-synthetic classifier scores every synthetic sample; the samples it "
                                "separates most confidently are dropped and the utility study is run again.")
    return methods
