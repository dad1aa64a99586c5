"""Fidelity metrics with known answers: Gaussian feature sets whose Frechet distance is known in closed form."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from monai.metrics import FIDMetric, MMDMetric

from medvol.errors import MedvolInputError
from medvol.metrics.fidelity import (
    below_baseline_note,
    bootstrap_interval,
    fidelity_with_baseline,
    frechet_distance,
    kernel_inception_distance,
    matched_precision_recall,
    maximum_mean_discrepancy,
    pairwise_euclidean,
    precision_recall_density_coverage,
)

DIMS = 8


def gaussian(n: int, seed: int, shift: float = 0.0, scale: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, DIMS)) * scale + shift


def population_fid(shift: float, scale: float) -> float:
    """Frechet distance of N(0, I) and N(shift, scale^2 I) in DIMS dimensions."""
    return DIMS * shift**2 + DIMS * (1.0 - scale) ** 2


def test_fid_of_a_set_against_itself_is_zero():
    features = gaussian(200, seed=0)
    assert frechet_distance(features, features) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(features, features.copy()) == pytest.approx(0.0, abs=1e-9)


# [shift, scale]: FID of large samples close to the closed form
TEST_CASE_1 = [0.0, 1.0]
TEST_CASE_2 = [0.5, 1.0]
TEST_CASE_3 = [0.0, 0.5]
TEST_CASE_4 = [1.0, 2.0]


@pytest.mark.parametrize("shift,scale", [TEST_CASE_1, TEST_CASE_2, TEST_CASE_3, TEST_CASE_4])
def test_fid_matches_the_closed_form_and_monai(shift, scale):
    real, synthetic = gaussian(4000, seed=1), gaussian(4000, seed=2, shift=shift, scale=scale)
    value = frechet_distance(real, synthetic)
    assert value == pytest.approx(population_fid(shift, scale), abs=0.15 + 0.03 * population_fid(shift, scale))  # about 4 sd of the estimate
    with warnings.catch_warnings():  # MONAI calls scipy's sqrtm(disp=False), deprecated in SciPy 1.17
        warnings.simplefilter("ignore", DeprecationWarning)
        monai_value = float(FIDMetric()(torch.from_numpy(synthetic), torch.from_numpy(real)))
    assert value == pytest.approx(monai_value, rel=1e-6, abs=1e-8)


def test_fid_with_fewer_samples_than_features_stays_finite():
    real, synthetic = np.random.default_rng(0).normal(size=(2, 2, 16))
    value = frechet_distance(real, synthetic)
    assert np.isfinite(value) and value > 0


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("kind,steps", [("shift", [0.0, 0.5, 1.0, 2.0]), ("shrink", [1.0, 0.6, 0.3, 0.1])])
def test_moving_away_raises_fid_and_lowers_recall_monotonically(seed, kind, steps):
    real = gaussian(300, seed=seed)
    fids, recalls = [], []
    for i, step in enumerate(steps):
        shift, scale = (step, 1.0) if kind == "shift" else (0.0, step)
        synthetic = gaussian(300, seed=100 + 10 * seed + i, shift=shift, scale=scale)
        fids.append(frechet_distance(real, synthetic))
        recalls.append(precision_recall_density_coverage(real, synthetic)["recall"])
    assert all(a < b for a, b in zip(fids, fids[1:])), fids
    assert all(a > b for a, b in zip(recalls, recalls[1:])), recalls
    assert recalls[0] > 0.85  # same distribution: most real samples inside the synthetic manifold


def test_shrunk_distribution_keeps_precision_and_raises_density():
    real = gaussian(300, seed=0)
    same = precision_recall_density_coverage(real, gaussian(300, seed=1))
    shrunk = precision_recall_density_coverage(real, gaussian(300, seed=1, scale=0.3))
    assert shrunk["precision"] == 1.0 and shrunk["density"] > 1.5 * same["density"]
    assert shrunk["coverage"] < same["coverage"]


def test_precision_recall_density_coverage_hand_computed():
    # real 0,1,2,3 (k=1 radii: 1 each); synthetic 1.5 and 10 (radii 8.5 each)
    real = np.array([[0.0], [1.0], [2.0], [3.0]])
    synthetic = np.array([[10.0], [1.5]])
    result = precision_recall_density_coverage(real, synthetic, k=1)
    assert result["precision"] == 0.5  # 1.5 lies in the balls of 1 and 2; 10 in none
    assert result["recall"] == 1.0  # every real sample lies within 8.5 of 1.5
    assert result["density"] == 1.0  # (2 balls + 0 balls) / (k=1 * 2 synthetic)
    assert result["coverage"] == 0.5  # the balls of 1 and 2 hold a synthetic sample
    identical = precision_recall_density_coverage(real, real, k=2)
    assert identical["precision"] == identical["recall"] == identical["coverage"] == 1.0


def test_synthetic_and_real_baseline_knn_metrics_are_taken_at_one_n():
    """Coverage grows with the number of query samples (here 0.99 at n=400 against about 0.5 at n=60 for one
    distribution): the synthetic set and the held-out baseline are both queried with n = the smaller set."""
    train, heldout, synthetic = gaussian(400, seed=0), gaussian(60, seed=1), gaussian(400, seed=2)
    result = matched_precision_recall(train, heldout, synthetic, k=5, seed=0)
    assert result["n"] == 60 and result["n_reference"] == 400
    unmatched = precision_recall_density_coverage(train, synthetic, k=5)["coverage"]
    assert unmatched - result["real_baseline"]["coverage"] > 0.2  # what comparing at different n did
    # one n, one distribution: equal up to the noise of one 60-sample held-out set (density is the noisiest)
    for key, tolerance in (("precision", 0.1), ("recall", 0.1), ("density", 0.4), ("coverage", 0.15)):
        assert result["synthetic"][key] == pytest.approx(result["real_baseline"][key], abs=tolerance), key
    assert result["repeats"] == {"synthetic": 5, "real_baseline": 1}
    # the held-out set is the larger one: it is subsampled instead
    swapped = matched_precision_recall(train, synthetic, heldout, k=5, seed=0)
    assert swapped["n"] == 60 and swapped["repeats"] == {"synthetic": 1, "real_baseline": 5}


def test_kid_is_about_zero_for_one_distribution_and_grows_with_distance():
    real = gaussian(400, seed=0)
    same = kernel_inception_distance(real, gaussian(400, seed=1))
    shifted = kernel_inception_distance(real, gaussian(400, seed=1, shift=0.5))
    far = kernel_inception_distance(real, gaussian(400, seed=1, shift=1.0))
    assert abs(same) < 0.05 < 1.0 < shifted < far
    # subsets: deterministic under the seed, and close to the whole-set value
    subsets = kernel_inception_distance(real, gaussian(400, seed=1, shift=0.5), subset_size=200, subsets=20, seed=3)
    assert subsets == kernel_inception_distance(real, gaussian(400, seed=1, shift=0.5), subset_size=200, subsets=20, seed=3)
    assert subsets == pytest.approx(shifted, rel=0.25)


def test_gaussian_mmd_sees_spread_that_monai_linear_mmd_misses():
    real, same, wide = gaussian(400, seed=0), gaussian(400, seed=1), gaussian(400, seed=2, scale=2.0)
    assert abs(maximum_mean_discrepancy(real, same)) < 0.01
    assert maximum_mean_discrepancy(real, wide) > 0.1
    # MONAI's MMDMetric (linear kernel): only the means differ, and they do not
    linear = float(MMDMetric()(torch.from_numpy(real), torch.from_numpy(wide)))
    assert abs(linear) < 0.1


def test_bootstrap_bias_correction_moves_towards_the_population_value():
    shift = 0.3
    for seed in range(3):
        real, synthetic = gaussian(200, seed=seed), gaussian(200, seed=50 + seed, shift=shift)
        result = bootstrap_interval(frechet_distance, real, synthetic, resamples=100, seed=seed)
        assert result["n_real"] == result["n_synthetic"] == 200 and result["resamples"] == 100
        assert result["groups_real"] == result["groups_synthetic"] == 200  # no groups: every row is a unit
        # the full-sample FID is biased upward; the bootstrap correction moves it towards the population value
        truth = population_fid(shift, 1.0)
        assert abs(result["bias_corrected"] - truth) < abs(result["value"] - truth)
    again = bootstrap_interval(frechet_distance, real, synthetic, resamples=100, seed=seed)
    assert again == result


def test_fid_interval_covers_the_expected_fid_at_this_n_at_the_feature_extractor_width():
    """What ``ci95`` covers, simulated at the width of medvol's feature extractors (64): the expected FID of sets of
    this size (the number a new draw would give, finite-n bias included) in about every trial; not the population
    FID, which the finite-n bias puts far below it (2.56 against about 25 at n = 100); the plain percentile interval
    of the resampled FIDs lies above the point estimate and covers neither."""
    from medvol.evaluation.classifier import DEFAULT_CHANNELS
    from medvol.evaluation.features import AUTOENCODER_CHANNELS

    width, n, shift, trials = max(DEFAULT_CHANNELS[-1], AUTOENCODER_CHANNELS[-1]), 100, 0.2, 40
    rng = np.random.default_rng(0)
    results = [bootstrap_interval(frechet_distance, rng.normal(size=(n, width)), rng.normal(size=(n, width)) + shift,
                                  resamples=50, seed=trial, floor=0.0) for trial in range(trials)]
    values = np.array([r["value"] for r in results])
    expected, population = values.mean(), width * shift**2

    def coverage(key: str, target: float) -> float:
        return float(np.mean([r[key][0] <= target <= r[key][1] for r in results]))

    assert coverage("ci95", expected) >= 0.9
    assert coverage("ci95", population) == 0.0 and expected > 5 * population
    assert coverage("percentile", expected) < 0.2
    assert np.mean([r["percentile"][0] <= r["value"] <= r["percentile"][1] for r in results]) < 0.2


def test_fid_interval_never_reaches_below_zero():
    real, synthetic = np.random.default_rng(0).normal(size=(2, 300, 2))  # one distribution, FID about 0.01
    result = bootstrap_interval(frechet_distance, real, synthetic, resamples=100, seed=0, floor=0.0)
    assert result["ci95"][0] == 0.0 < result["value"] < result["ci95"][1]
    assert min(result["ci95_bias_corrected"] + [result["bias_corrected"]]) >= 0.0
    via_baseline = fidelity_with_baseline(real, synthetic[:150], synthetic[150:], resamples=50)
    assert via_baseline["fid"]["ci95"][0] >= 0.0 and via_baseline["fid_real_baseline"]["ci95"][0] >= 0.0


def _volumes_as_slices(rng, subjects: int, slices: int, shift: float) -> np.ndarray:
    """Features of `slices` slices per subject: a subject effect (sd 1) plus slice noise (sd 0.5), 8 dimensions."""
    subject = rng.normal(size=(subjects, 1, DIMS))
    return (subject + 0.5 * rng.normal(size=(subjects, slices, DIMS))).reshape(subjects * slices, DIMS) + shift


def test_slices_of_volumes_are_bootstrapped_by_subject():
    """30 subjects of 8 slices: resampling slices as if independent gave an interval about a third as wide as the
    spread of the FID over new draws of subjects (covering its expected value in 60% of trials); resampling subjects
    covers it about 95% of the time."""
    subjects, slices, trials = 30, 8, 40
    groups = np.repeat(np.arange(subjects), slices)
    rng = np.random.default_rng(0)
    by_subject, by_slice = [], []
    for trial in range(trials):
        real, synthetic = _volumes_as_slices(rng, subjects, slices, 0.0), _volumes_as_slices(rng, subjects, slices, 0.3)
        by_subject.append(bootstrap_interval(frechet_distance, real, synthetic, resamples=50, seed=trial,
                                             real_groups=groups, synthetic_groups=groups, floor=0.0))
        by_slice.append(bootstrap_interval(frechet_distance, real, synthetic, resamples=50, seed=trial, floor=0.0))
    expected = np.mean([r["value"] for r in by_subject])

    def coverage(results) -> float:
        return float(np.mean([r["ci95"][0] <= expected <= r["ci95"][1] for r in results]))

    def width(results) -> float:
        return float(np.mean([r["ci95"][1] - r["ci95"][0] for r in results]))

    assert by_subject[0]["groups_real"] == subjects and by_subject[0]["n_real"] == subjects * slices
    assert coverage(by_subject) >= 0.85 and coverage(by_slice) < 0.8
    assert width(by_subject) > 2 * width(by_slice)
    # the same unit for KID, and through fidelity_with_baseline (whose subsample keeps each row's subject)
    real, heldout, synthetic = (_volumes_as_slices(rng, subjects, slices, s) for s in (0.0, 0.0, 0.3))
    grouped = fidelity_with_baseline(real, heldout, synthetic, resamples=30, train_groups=groups,
                                     heldout_groups=groups, synthetic_groups=groups)
    plain = fidelity_with_baseline(real, heldout, synthetic, resamples=30)
    for key in ("fid", "kid", "fid_real_baseline", "kid_real_baseline"):
        assert grouped[key]["groups_real"] == subjects and plain[key]["groups_real"] == subjects * slices
        assert np.diff(grouped[key]["ci95"]) > 1.5 * np.diff(plain[key]["ci95"]), key


@pytest.mark.parametrize("grouped", [False, True])
def test_kid_bootstrap_from_cached_kernels_equals_the_generic_bootstrap(grouped):
    from medvol.metrics.fidelity import _kid_bootstrap

    real, synthetic = gaussian(100, seed=0), gaussian(100, seed=1, shift=0.3)  # equal sizes, as fidelity_with_baseline
    groups = {"real_groups": np.arange(100) // 4, "synthetic_groups": np.arange(100) // 5} if grouped else {}
    cached = _kid_bootstrap(real, synthetic, resamples=30, seed=4, **groups)
    generic = bootstrap_interval(kernel_inception_distance, real, synthetic, resamples=30, seed=4, **groups)
    assert cached["value"] == pytest.approx(generic["value"], rel=1e-9)
    for key in ("ci95", "ci95_bias_corrected"):
        assert cached[key] == pytest.approx(generic[key], rel=1e-9)


def test_kid_is_the_unbiased_estimator_not_the_biased_one():
    """Hand-computed on 4 + 4 samples (one subset, the whole sets): the unbiased MMD^2 leaves out each sample's
    kernel with itself; the biased (V-statistic) one keeps it and is positive even for two samples of one
    distribution."""
    x = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0], [1.0, 1.0]])
    y = np.array([[0.5, 0.5], [1.0, 2.0], [0.0, 0.0], [3.0, 1.0]])

    def k(a, b):
        return (float(a @ b) / 2 + 1.0) ** 3

    within_x = sum(k(a, b) for i, a in enumerate(x) for j, b in enumerate(x) if i != j) / (4 * 3)
    within_y = sum(k(a, b) for i, a in enumerate(y) for j, b in enumerate(y) if i != j) / (4 * 3)
    cross = sum(k(a, b) for a in x for b in y) / (4 * 4)
    unbiased = within_x + within_y - 2 * cross
    biased = (sum(k(a, b) for a in x for b in x) / 16 + sum(k(a, b) for a in y for b in y) / 16 - 2 * cross)
    assert abs(biased - unbiased) > 0.5
    assert kernel_inception_distance(x, y) == pytest.approx(unbiased, rel=1e-12)
    # one distribution: unbiased values scatter around 0 (some below), biased ones are all above
    values = [kernel_inception_distance(gaussian(30, seed=2 * s), gaussian(30, seed=2 * s + 1)) for s in range(20)]
    assert min(values) < 0.0 and abs(np.mean(values)) < 2 * np.std(values) / np.sqrt(len(values)) + 1e-3


def test_fidelity_with_baseline_uses_equal_sizes_and_separates_a_bad_generator():
    train, heldout = gaussian(300, seed=0), gaussian(100, seed=1)
    good = fidelity_with_baseline(train, heldout, gaussian(150, seed=2), seed=0, resamples=50)
    assert good["n"] == 100 and (good["n_train"], good["n_heldout"], good["n_synthetic"]) == (300, 100, 150)
    for key in ("fid", "kid", "fid_real_baseline", "kid_real_baseline"):
        assert good[key]["n_real"] == good[key]["n_synthetic"] == 100
    # a generator as good as new real data: its FID lies within the baseline's spread and vice versa
    assert good["fid"]["ci95"][0] < good["fid_real_baseline"]["value"] < good["fid"]["ci95"][1]
    bad = fidelity_with_baseline(train, heldout, gaussian(150, seed=2, shift=0.5), seed=0, resamples=50)
    assert bad["fid"]["ci95"][0] > bad["fid_real_baseline"]["ci95"][1]
    assert bad["kid"]["ci95"][0] > bad["kid_real_baseline"]["ci95"][1]
    assert bad["mmd"] > 10 * abs(bad["mmd_real_baseline"])
    assert bad["fid_real_baseline"] == good["fid_real_baseline"]  # the same training subsample and held-out set
    capped = fidelity_with_baseline(train, heldout, gaussian(150, seed=2), resamples=5, max_samples=40)
    assert capped["n"] == 40 and capped["kid"]["n_real"] == 40 and capped["n_train"] == 300


def test_an_fid_below_the_real_baseline_sends_the_reader_to_privacy():
    train = gaussian(200, seed=0)
    copies = fidelity_with_baseline(train, gaussian(100, seed=1), train[:100].copy(), resamples=20)
    assert copies["fid"]["value"] < copies["fid_real_baseline"]["value"]
    note = below_baseline_note(copies["fid"], copies["fid_real_baseline"])
    assert "below the real baseline" in note and "privacy" in note
    new = fidelity_with_baseline(train, gaussian(100, seed=1), gaussian(100, seed=2, shift=0.5), resamples=20)
    assert below_baseline_note(new["fid"], new["fid_real_baseline"]) is None


def test_pairwise_euclidean_is_exact_for_copies():
    features = np.random.default_rng(0).normal(size=(5, 3)) * 1e3
    distances = pairwise_euclidean(features, features)
    assert np.all(np.diag(distances) == 0.0)
    assert distances[0, 1] == pytest.approx(np.linalg.norm(features[0] - features[1]))


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: frechet_distance(np.zeros((1, 4)), np.zeros((5, 4))), "FID needs at least 2 samples in each set, got 1 real and 5"),
        (lambda: kernel_inception_distance(np.zeros((5, 4)), np.zeros((1, 4))), "KID needs at least 2 .* got 5 real and 1 synthetic"),
        (lambda: maximum_mean_discrepancy(np.zeros((5, 4)), np.zeros((5, 3))), "4 columns, synthetic 3"),
        (lambda: precision_recall_density_coverage(np.zeros((5, 4)), np.zeros((9, 4)), k=5), r"k=5 .* got 5 real and 9 synthetic"),
        (lambda: frechet_distance(np.full((3, 2), np.nan), np.zeros((3, 2))), "NaN or inf"),
        (lambda: frechet_distance(np.zeros(6), np.zeros((3, 2))), r"expected features \[N, F\]"),
        (lambda: fidelity_with_baseline(np.zeros((9, 2)), np.zeros((1, 2)), np.zeros((9, 2))), "got 9 training, 1 held-out"),
    ],
)
def test_too_few_or_bad_features_give_one_clear_error(call, message):
    with pytest.raises(MedvolInputError, match=message):
        call()
