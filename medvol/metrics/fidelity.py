"""Fidelity of synthetic images in a feature space: FID, KID, MMD, precision/recall/density/coverage, bootstrap intervals.

Features are float64 arrays ``[N, F]`` from one feature extractor (`medvol.evaluation.features`). Every number that
depends on the sample size (all of them: FID and the k-NN radii shrink or grow with N) is reported next to the same
number for real held-out images against the real training images at the same N (`fidelity_with_baseline`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np

from medvol.errors import MedvolInputError

__all__ = [
    "as_feature_array",
    "below_baseline_note",
    "bootstrap_interval",
    "fidelity_with_baseline",
    "frechet_distance",
    "kernel_inception_distance",
    "matched_precision_recall",
    "maximum_mean_discrepancy",
    "median_bandwidth",
    "pairwise_euclidean",
    "precision_recall_density_coverage",
]

_ROW_CHUNK = 1024
_KID_SUBSET_SIZE = 1000


def as_feature_array(features, name: str) -> np.ndarray:
    """``features`` (numpy or torch) as a finite float64 ``[N, F]`` array; `MedvolInputError` naming ``name`` if not."""
    array = np.asarray(features.detach().cpu() if hasattr(features, "detach") else features, dtype=np.float64)
    if array.ndim != 2:
        raise MedvolInputError(None, f"{name}: expected features [N, F], got shape {list(array.shape)}")
    if not np.isfinite(array).all():
        raise MedvolInputError(None, f"{name}: {int((~np.isfinite(array)).any(axis=1).sum())} feature rows hold NaN or inf")
    return array


def _feature_pair(real_features, synthetic_features, metric: str, minimum: int) -> tuple[np.ndarray, np.ndarray]:
    real = as_feature_array(real_features, f"{metric}, real features")
    synthetic = as_feature_array(synthetic_features, f"{metric}, synthetic features")
    if real.shape[1] != synthetic.shape[1]:
        raise MedvolInputError(None, f"{metric}: real features have {real.shape[1]} columns, synthetic {synthetic.shape[1]}")
    if len(real) < minimum or len(synthetic) < minimum:
        raise MedvolInputError(
            None, f"{metric} needs at least {minimum} samples in each set, got {len(real)} real and {len(synthetic)} synthetic"
        )
    return real, synthetic


def pairwise_euclidean(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Euclidean distances ``[len(first), len(second)]`` between feature rows, exact (0 for identical rows)."""
    first, second = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    out = np.empty((len(first), len(second)), dtype=np.float64)
    second_sq = np.einsum("ij,ij->i", second, second)
    for start in range(0, len(first), _ROW_CHUNK):
        block = first[start : start + _ROW_CHUNK]
        sq = np.einsum("ij,ij->i", block, block)[:, None] + second_sq[None, :] - 2.0 * block @ second.T
        out[start : start + _ROW_CHUNK] = np.sqrt(np.maximum(sq, 0.0))
    # the expanded form loses precision for near-identical rows; recompute the small distances directly
    close = np.argwhere(out < 1e-6 * (1.0 + np.sqrt(second_sq))[None, :])
    if len(close):
        out[close[:, 0], close[:, 1]] = np.linalg.norm(first[close[:, 0]] - second[close[:, 1]], axis=1)
    return out


def _symmetric_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(real_features, synthetic_features) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (FID when the features are an Inception's).

    ``|mu_r - mu_s|^2 + tr(S_r + S_s - 2 (S_r S_s)^(1/2))`` (Heusel et al. 2017), the formula of MONAI's
    ``FIDMetric``. MONAI's implementation is not called: it takes the matrix square root with
    ``scipy.linalg.sqrtm(..., disp=False)``, deprecated in SciPy 1.17 (a DeprecationWarning, removed in 1.18), and
    prints to stdout when the covariance product is singular, which is the usual case with fewer samples than
    features. Here ``tr (S_r S_s)^(1/2) = tr (S_r^(1/2) S_s S_r^(1/2))^(1/2)`` is computed from symmetric eigen
    decompositions, which stay real and finite for singular covariances; the tests check that both agree.

    Args:
        real_features: ``[N, F]``, N >= 2.
        synthetic_features: ``[M, F]``, M >= 2.

    Raises:
        MedvolInputError: fewer than 2 samples in a set (no covariance), or different feature widths.
    """
    real, synthetic = _feature_pair(real_features, synthetic_features, "FID", minimum=2)
    mu_r, mu_s = real.mean(axis=0), synthetic.mean(axis=0)
    cov_r = np.atleast_2d(np.cov(real, rowvar=False))
    cov_s = np.atleast_2d(np.cov(synthetic, rowvar=False))
    root_r = _symmetric_sqrt(cov_r)
    cross = np.linalg.eigvalsh(root_r @ cov_s @ root_r)
    trace_sqrt = float(np.sqrt(np.clip(cross, 0.0, None)).sum())
    value = float(np.sum((mu_r - mu_s) ** 2) + np.trace(cov_r) + np.trace(cov_s) - 2.0 * trace_sqrt)
    return max(value, 0.0)


def _unbiased_mmd2(k_xx: np.ndarray, k_yy: np.ndarray, k_xy: np.ndarray) -> float:
    m, n = len(k_xx), len(k_yy)
    within_x = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    within_y = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(within_x + within_y - 2.0 * k_xy.mean())


def _polynomial_kernel(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    kernel = first @ second.T
    kernel /= first.shape[1]
    kernel += 1.0
    return kernel * kernel * kernel  # a float power (** 3) is several times slower


def kernel_inception_distance(
    real_features, synthetic_features, subset_size: int = _KID_SUBSET_SIZE, subsets: int = 100, seed: int = 0
) -> float:
    """Kernel Inception Distance (Binkowski et al. 2018): unbiased MMD^2 with the kernel ``(x.y / F + 1)^3``.

    Averaged over ``subsets`` random subsets of ``subset_size`` samples of each set (without replacement); when both
    sets are no larger than ``subset_size`` every subset would be the whole set, so it is computed once. About 0 for
    two samples of one distribution (it can be slightly negative: the estimator is unbiased).

    Args:
        real_features: ``[N, F]``, N >= 2.
        synthetic_features: ``[M, F]``, M >= 2.
        subset_size: samples per subset (capped at the smaller set).
        subsets: number of subsets averaged.
        seed: seed of the subset draws.

    Raises:
        MedvolInputError: fewer than 2 samples in a set, or different feature widths.
    """
    real, synthetic = _feature_pair(real_features, synthetic_features, "KID", minimum=2)
    size = min(subset_size, len(real), len(synthetic))
    if size < 2:
        raise MedvolInputError(None, f"KID needs subsets of at least 2 samples, got subset_size={subset_size}")
    if size == len(real) == len(synthetic):
        subsets = 1
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(max(1, subsets)):
        x = real[rng.choice(len(real), size, replace=False)]
        y = synthetic[rng.choice(len(synthetic), size, replace=False)]
        values.append(_unbiased_mmd2(_polynomial_kernel(x, x), _polynomial_kernel(y, y), _polynomial_kernel(x, y)))
    return float(np.mean(values))


def median_bandwidth(features: np.ndarray, max_samples: int = 1000, seed: int = 0) -> float:
    """Median pairwise Euclidean distance of (at most ``max_samples`` of) ``features``: the RBF bandwidth heuristic."""
    features = as_feature_array(features, "MMD bandwidth")
    if len(features) > max_samples:
        features = features[np.random.default_rng(seed).choice(len(features), max_samples, replace=False)]
    distances = pairwise_euclidean(features, features)[np.triu_indices(len(features), k=1)]
    positive = distances[distances > 0]
    return float(np.median(positive)) if len(positive) else 1.0


def maximum_mean_discrepancy(real_features, synthetic_features, bandwidth: float | None = None) -> float:
    """Unbiased MMD^2 with a Gaussian kernel ``exp(-|x - y|^2 / (2 bandwidth^2))`` (Gretton et al. 2012).

    MONAI's ``MMDMetric`` is not used on features: it takes images with a ``y_mapping``, uses the linear kernel
    ``x.y`` (its MMD is then only the squared distance between the two means, blind to spread and shape) and needs
    both sets to have the same number of samples. The Gaussian kernel's MMD is zero only for equal distributions.

    Args:
        real_features: ``[N, F]``, N >= 2.
        synthetic_features: ``[M, F]``, M >= 2.
        bandwidth: kernel width; default the median pairwise distance of the real features (pass the same value to
            compare several sets against one reference).

    Raises:
        MedvolInputError: fewer than 2 samples in a set, or different feature widths.
    """
    real, synthetic = _feature_pair(real_features, synthetic_features, "MMD", minimum=2)
    bandwidth = median_bandwidth(real) if bandwidth is None else float(bandwidth)
    scale = -1.0 / (2.0 * bandwidth**2)
    k_xx = np.exp(scale * pairwise_euclidean(real, real) ** 2)
    k_yy = np.exp(scale * pairwise_euclidean(synthetic, synthetic) ** 2)
    k_xy = np.exp(scale * pairwise_euclidean(real, synthetic) ** 2)
    return _unbiased_mmd2(k_xx, k_yy, k_xy)


def bootstrap_interval(
    metric: Callable[[np.ndarray, np.ndarray], float],
    real_features,
    synthetic_features,
    *,
    resamples: int = 200,
    seed: int = 0,
    real_groups=None,
    synthetic_groups=None,
    floor: float | None = None,
) -> dict:
    """A metric on the full sets with a 95% bootstrap interval of its spread, and its bootstrap bias correction.

    Both sets are resampled with replacement ``resamples`` times: whole groups (subjects: every slice of a resampled
    volume comes along, since slices of one volume are not independent images) when groups are given, else single
    rows. FID and KID are biased upward at finite N, and a resample's duplicates lower its effective size, so the
    resampled values sit above the full-set value (Gaussian features of width 64, population FID 2.56, n = 200: FID
    13.6 on average, resampled values 9.5 higher still). The plain percentile interval of the resampled values then lies above the value
    and usually excludes it. Hence:

    - ``ci95``: the 2.5th and 97.5th percentiles of the resampled values shifted down by the bootstrap bias
      (``mean(resampled) - value``), i.e. centred on ``value``, with the lower end clipped at ``floor``: the spread
      of the metric between sets of this size. It is an interval for the *expected value at this N* (the number a
      new draw of equally many real and synthetic samples would give, with its finite-N bias), not for the
      distance between the distributions; compare it with a baseline at the same N (`fidelity_with_baseline` does).
      Simulated at the feature extractor's width (64, n = 200, tests/metrics/test_fidelity.py) it covered that
      expected value in every trial: about 1.7x wider than needed, so conservative.
    - ``bias_corrected`` = ``2 value - mean(resampled)`` and ``ci95_bias_corrected`` (the basic bootstrap interval
      ``[2 value - q97.5, 2 value - q2.5]``), clipped at ``floor``: an estimate of the distance between the
      distributions themselves with the finite-N bias partly removed. At width 64 the bootstrap underestimates that
      bias: simulated, it covered the population FID in about 70% of trials at n = 200 and 3% at n = 100, so read
      it as rough unless n is many times the feature width.
    - ``percentile``: the plain percentiles ``[q2.5, q97.5]`` of the resampled values, for reference.

    Args:
        metric: ``metric(real_features, synthetic_features) -> float``.
        real_features: ``[N, F]``.
        synthetic_features: ``[M, F]``.
        resamples: bootstrap resamples (at least 1).
        seed: seed of the resampling.
        real_groups: ``[N]`` group (subject) of each real row; None: every row its own group.
        synthetic_groups: ``[M]`` group of each synthetic row; None: every row its own group.
        floor: lowest possible value of the metric (0 for FID); None: no clipping.

    Returns:
        dict with ``value``, ``ci95`` [low, high], ``bias_corrected``, ``ci95_bias_corrected`` [low, high],
        ``percentile`` [low, high], ``n_real``, ``n_synthetic``, ``groups_real``, ``groups_synthetic`` (the units
        resampled), ``resamples``.
    """
    if resamples < 1:
        raise MedvolInputError(None, f"bootstrap needs at least 1 resample, got {resamples}")
    real = as_feature_array(real_features, "bootstrap, real features")
    synthetic = as_feature_array(synthetic_features, "bootstrap, synthetic features")
    real_groups, synthetic_groups = _groups(real_groups, len(real)), _groups(synthetic_groups, len(synthetic))
    value = float(metric(real, synthetic))
    values = [metric(real[i], synthetic[j]) for i, j in _resample_indices(real_groups, synthetic_groups, resamples, seed)]
    return _interval(value, values, real_groups, synthetic_groups, floor)


def _groups(groups, count: int) -> np.ndarray:
    """Group labels as consecutive integers ``[count]`` (each row its own group when None)."""
    if groups is None:
        return np.arange(count)
    groups = np.asarray(groups).reshape(-1)
    if len(groups) != count:
        raise MedvolInputError(None, f"bootstrap: {len(groups)} group labels for {count} feature rows")
    return np.unique(groups, return_inverse=True)[1].reshape(-1)


def _resample_indices(real_groups: np.ndarray, synthetic_groups: np.ndarray, resamples: int, seed: int):
    """Row indices of each resample: as many groups as there are, drawn with replacement, with all their rows."""
    rng = np.random.default_rng(seed)
    members = [[np.flatnonzero(g == k) for k in range(int(g.max()) + 1)] for g in (real_groups, synthetic_groups)]
    singles = [len(m) == len(g) for m, g in zip(members, (real_groups, synthetic_groups))]
    for _ in range(resamples):
        drawn = []
        for rows, single in zip(members, singles):
            chosen = rng.integers(0, len(rows), len(rows))
            drawn.append(chosen if single else np.concatenate([rows[k] for k in chosen]))
        yield drawn[0], drawn[1]


def _interval(value: float, resampled: list[float], real_groups: np.ndarray, synthetic_groups: np.ndarray,
              floor: float | None) -> dict:
    values = np.asarray(resampled, dtype=np.float64)
    low, high = np.percentile(values, [2.5, 97.5])
    bias = float(values.mean() - value)

    def clip(x: float) -> float:
        return float(x) if floor is None else max(float(x), floor)

    return {
        "value": value,
        "ci95": [clip(low - bias), clip(high - bias)],
        "bias_corrected": clip(value - bias),
        "ci95_bias_corrected": [clip(2 * value - high), clip(2 * value - low)],
        "percentile": [clip(low), clip(high)],
        "n_real": len(real_groups),
        "n_synthetic": len(synthetic_groups),
        "groups_real": int(real_groups.max()) + 1,
        "groups_synthetic": int(synthetic_groups.max()) + 1,
        "resamples": len(values),
    }


def _kid_bootstrap(real: np.ndarray, synthetic: np.ndarray, resamples: int, seed: int, real_groups=None,
                   synthetic_groups=None) -> dict:
    """`bootstrap_interval` of the whole-set KID (`kernel_inception_distance` with ``subset_size`` = the set size),
    from kernel matrices computed once: a resample that draws sample i w_i times (M draws in all) sums ``w' K w``
    over all its pairs, less ``sum_i w_i K_ii`` for each position paired with itself (what the unbiased estimator
    leaves out), over M (M - 1) pairs."""
    k_rr, k_ss, k_rs = _polynomial_kernel(real, real), _polynomial_kernel(synthetic, synthetic), _polynomial_kernel(real, synthetic)
    value = _unbiased_mmd2(k_rr, k_ss, k_rs)
    m, n = len(real), len(synthetic)
    real_groups, synthetic_groups = _groups(real_groups, m), _groups(synthetic_groups, n)
    diag_rr, diag_ss = np.diag(k_rr), np.diag(k_ss)
    values = []
    for i, j in _resample_indices(real_groups, synthetic_groups, resamples, seed):
        w, v = np.bincount(i, minlength=m).astype(np.float64), np.bincount(j, minlength=n).astype(np.float64)
        big_m, big_n = w.sum(), v.sum()
        within_r = (w @ k_rr @ w - w @ diag_rr) / (big_m * (big_m - 1))
        within_s = (v @ k_ss @ v - v @ diag_ss) / (big_n * (big_n - 1))
        values.append(within_r + within_s - 2.0 * (w @ k_rs @ v) / (big_m * big_n))
    return _interval(value, values, real_groups, synthetic_groups, None)


def fidelity_with_baseline(
    train_features,
    heldout_features,
    synthetic_features,
    *,
    seed: int = 0,
    resamples: int = 200,
    max_samples: int = 2000,
    train_groups=None,
    heldout_groups=None,
    synthetic_groups=None,
) -> dict:
    """FID, KID and MMD of synthetic vs training features, each next to held-out real vs training (the real baseline).

    FID and KID depend on the number of samples, so all comparisons use one size n = the smallest of the three
    sets: the larger sets are subsampled (without replacement, seeded) to n, and the same training subsample is the
    reference for both the synthetic and the held-out set. A generator as good as new real data has ``fid`` about
    ``fid_real_baseline``; a ``fid`` clearly below it means samples closer to the training images than new real
    images are (the feature space is trained on the training split): look at the privacy check. n is capped at
    ``max_samples`` (time and memory of the bootstrap). KID here is the unbiased estimate over all n samples
    (`kernel_inception_distance` with ``subset_size=n``): averaging subsets only saves time for very large sets, and
    the whole set has the smaller variance. Intervals: `bootstrap_interval`, resampling groups (subjects) where given.

    Args:
        train_features: ``[N_train, F]`` real training-split features.
        heldout_features: ``[N_heldout, F]`` real held-out features (validation or test split).
        synthetic_features: ``[N_synthetic, F]``.
        seed: seed of the subsampling, the bootstrap and KID's subsets.
        resamples: bootstrap resamples per interval.
        max_samples: the most samples per set used.
        train_groups: ``[N_train]`` subject of each training row (slices of one volume share it); None: each row.
        heldout_groups: ``[N_heldout]`` the same for the held-out rows.
        synthetic_groups: ``[N_synthetic]`` the same for the synthetic rows (e.g. the file a slice was cut from).

    Returns:
        dict with ``fid``, ``kid``, ``fid_real_baseline``, ``kid_real_baseline`` (each `bootstrap_interval`'s dict),
        ``mmd``, ``mmd_real_baseline`` (floats, Gaussian kernel with the training subsample's median bandwidth),
        ``n`` (samples per set used) and ``n_train``, ``n_heldout``, ``n_synthetic`` (before subsampling).

    Raises:
        MedvolInputError: fewer than 2 samples in a set, or different feature widths.
    """
    train = as_feature_array(train_features, "fidelity, training features")
    heldout = as_feature_array(heldout_features, "fidelity, held-out features")
    synthetic = as_feature_array(synthetic_features, "fidelity, synthetic features")
    counts = {"training": len(train), "held-out": len(heldout), "synthetic": len(synthetic)}
    if min(counts.values()) < 2:
        raise MedvolInputError(
            None, "FID/KID need at least 2 samples per set, got " + ", ".join(f"{v} {k}" for k, v in counts.items())
        )
    if len({train.shape[1], heldout.shape[1], synthetic.shape[1]}) != 1:
        raise MedvolInputError(None, "fidelity: training, held-out and synthetic features differ in width")
    if resamples < 1:
        raise MedvolInputError(None, f"bootstrap needs at least 1 resample, got {resamples}")
    groups = [_groups(g, len(x)) for g, x in ((train_groups, train), (heldout_groups, heldout), (synthetic_groups, synthetic))]
    n = min(*counts.values(), max_samples)
    rng = np.random.default_rng(seed)
    chosen = [np.sort(rng.choice(len(x), n, replace=False)) for x in (train, heldout, synthetic)]
    train_n, heldout_n, synthetic_n = (x[c] for x, c in zip((train, heldout, synthetic), chosen))
    train_g, heldout_g, synthetic_g = (g[c] for g, c in zip(groups, chosen))
    fid = partial(bootstrap_interval, frechet_distance, resamples=resamples, seed=seed, floor=0.0)
    kid = partial(_kid_bootstrap, resamples=resamples, seed=seed)
    bandwidth = median_bandwidth(train_n, seed=seed)
    return {
        "fid": fid(train_n, synthetic_n, real_groups=train_g, synthetic_groups=synthetic_g),
        "kid": kid(train_n, synthetic_n, real_groups=train_g, synthetic_groups=synthetic_g),
        "fid_real_baseline": fid(train_n, heldout_n, real_groups=train_g, synthetic_groups=heldout_g),
        "kid_real_baseline": kid(train_n, heldout_n, real_groups=train_g, synthetic_groups=heldout_g),
        "mmd": maximum_mean_discrepancy(train_n, synthetic_n, bandwidth),
        "mmd_real_baseline": maximum_mean_discrepancy(train_n, heldout_n, bandwidth),
        "n": n,
        "n_train": counts["training"],
        "n_heldout": counts["held-out"],
        "n_synthetic": counts["synthetic"],
    }


def precision_recall_density_coverage(real_features, synthetic_features, k: int = 5) -> dict:
    """k-NN manifold precision and recall (Kynkaanniemi et al. 2019), density and coverage (Naeem et al. 2020).

    Each real sample gets a ball reaching its k-th nearest real neighbour, each synthetic sample one reaching its
    k-th nearest synthetic neighbour (Euclidean, the sample itself excluded). precision: fraction of synthetic
    samples inside some real ball; recall: fraction of real samples inside some synthetic ball; density: real balls
    containing each synthetic sample, averaged and divided by k (about 1 for equal distributions, above 1 when
    synthetic samples crowd where real ones are dense); coverage: fraction of real balls holding a synthetic sample.
    Deterministic.

    Args:
        real_features: ``[N, F]``, N > k.
        synthetic_features: ``[M, F]``, M > k.
        k: neighbour count of the balls.

    Raises:
        MedvolInputError: k >= the size of a set, or different feature widths.
    """
    if k < 1:
        raise MedvolInputError(None, f"precision/recall: k must be at least 1, got {k}")
    real, synthetic = _feature_pair(real_features, synthetic_features, f"precision/recall (k={k} nearest neighbours)", k + 1)
    real_radii = np.partition(pairwise_euclidean(real, real), k, axis=1)[:, k]  # column 0 is the sample itself
    synthetic_radii = np.partition(pairwise_euclidean(synthetic, synthetic), k, axis=1)[:, k]
    real_to_synthetic = pairwise_euclidean(real, synthetic)
    inside_real_balls = real_to_synthetic <= real_radii[:, None]  # [real, synthetic]
    return {
        "precision": float(inside_real_balls.any(axis=0).mean()),
        "recall": float((real_to_synthetic <= synthetic_radii[None, :]).any(axis=1).mean()),
        "density": float(inside_real_balls.sum() / (k * len(synthetic))),
        "coverage": float(inside_real_balls.any(axis=1).mean()),
        "k": int(k),
    }


def matched_precision_recall(
    train_features, heldout_features, synthetic_features, k: int = 5, seed: int = 0, repeats: int = 5
) -> dict:
    """`precision_recall_density_coverage` of the synthetic set and of the held-out real set (the real baseline),
    both against the whole training set and both queried with the same number n of samples.

    Coverage and recall grow with the number of query samples (one Gaussian in 8 dimensions, 400 reference
    samples: coverage 0.99 with 400 queries, about 0.5 with 60), so numbers at different n are not comparable. n is
    the size of the smaller of the two query sets; the larger set is subsampled to n (seeded, without replacement)
    `repeats` times and its numbers averaged.

    Args:
        train_features: ``[N_train, F]``, the reference (its balls and the recall/coverage denominators).
        heldout_features: ``[N_heldout, F]`` real images not used for training.
        synthetic_features: ``[N_synthetic, F]``.
        k: neighbour count of the balls (each set needs more than k samples).
        seed: seed of the subsets.
        repeats: subsets averaged for the larger set.

    Returns:
        dict with ``synthetic`` and ``real_baseline`` (each ``precision``, ``recall``, ``density``, ``coverage``,
        ``k``), ``n``, ``n_reference`` and ``repeats`` {``synthetic``, ``real_baseline``} (1 for the smaller set).

    Raises:
        MedvolInputError: a set with k or fewer samples, or different feature widths.
    """
    train = as_feature_array(train_features, "precision/recall, training features")
    heldout = as_feature_array(heldout_features, "precision/recall, held-out features")
    synthetic = as_feature_array(synthetic_features, "precision/recall, synthetic features")
    n = min(len(heldout), len(synthetic))
    rng = np.random.default_rng(seed)
    result: dict = {"n": n, "n_reference": len(train), "repeats": {}}
    for name, query in (("synthetic", synthetic), ("real_baseline", heldout)):
        draws = [np.arange(n)] if len(query) == n else [rng.choice(len(query), n, replace=False) for _ in range(max(1, repeats))]
        values = [precision_recall_density_coverage(train, query[index], k=k) for index in draws]
        result[name] = {key: float(np.mean([v[key] for v in values])) for key in ("precision", "recall", "density", "coverage")}
        result[name]["k"] = int(k)
        result["repeats"][name] = len(draws)
    return result


def below_baseline_note(fid: dict, baseline: dict) -> str | None:
    """A sentence for an FID below its real baseline (None otherwise): in a feature space trained on the training
    split, samples nearer the training images than new real images are score lower than real data, which is what
    memorised copies do, so such an FID sends the reader to the privacy check rather than reading as quality.

    Args:
        fid: `bootstrap_interval`'s dict of the synthetic set.
        baseline: the same of the held-out real set (at the same n).
    """
    if float(fid["value"]) >= float(baseline["value"]):
        return None
    return (f"FID {fid['value']:.4g} is below the real baseline {baseline['value']:.4g}: the synthetic samples are "
            f"closer to the training images than new real images are, in a feature space trained on those images. "
            f"Memorised copies do this; read the privacy section (flagged fraction against the 5% expected) before "
            f"taking it as quality.")
