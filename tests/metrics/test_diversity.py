"""Diversity: pairwise MS-SSIM and voxel distance at 16^3, 32^2 and 32^3, and the mode-collapse flag on real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from monai.metrics import MultiScaleSSIMMetric

from medvol.errors import MedvolInputError
from medvol.metrics.diversity import diversity_report, mean_pairwise_distance, ms_ssim_settings, pair_ssim, pairwise_ms_ssim

MEDNIST_CLASSES = ["CTAbd", "CTChest", "CTHead", "CXR", "MRBrain", "MRBreast"]



def smooth_images(n: int, size: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """Random smooth images in [-1, 1]: coarse noise upsampled, like blobs of anatomy."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn((n, 1, *(max(2, s // 8) for s in size)), generator=generator)
    mode = "bilinear" if len(size) == 2 else "trilinear"
    return torch.tanh(F.interpolate(coarse, size=size, mode=mode, align_corners=False))


def load_mednist(shared_data: Path, per_class: int, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """``per_class`` random real mednist64 images per class, area-downsampled to ``size``^2, in [-1, 1], with labels."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label, name in enumerate(MEDNIST_CLASSES):
        files = sorted((shared_data / "mednist64" / name).glob("*.jpg"))
        for index in rng.permutation(len(files))[:per_class]:
            images.append(np.asarray(Image.open(files[index]).convert("L"), dtype=np.float32) / 127.5 - 1.0)
            labels.append(label)
    tensor = F.interpolate(torch.from_numpy(np.stack(images))[:, None], size=(size, size), mode="area")
    return tensor, np.asarray(labels, dtype=np.int64)


def load_hippocampus(shared_data: Path, count: int, size: int) -> torch.Tensor:
    """The first ``count`` hippocampus MR crops, each scaled to [-1, 1] by its 0.5-99.5th percentiles, resized to size^3."""
    import nibabel as nib

    volumes = []
    for path in sorted((shared_data / "hippocampus3d" / "images").glob("*.nii.gz"))[:count]:
        array = np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)
        low, high = np.percentile(array, [0.5, 99.5])
        array = np.clip((array - low) / max(high - low, 1e-6), 0.0, 1.0) * 2.0 - 1.0
        volumes.append(F.interpolate(torch.from_numpy(array)[None, None], size=(size,) * 3, mode="trilinear")[0])
    return torch.stack(volumes)


# [image size, MS-SSIM scales]: a 5-voxel window and as many scales as fit (MONAI's defaults need > 160 voxels)
TEST_CASE_1 = [(16, 16, 16), 2]
TEST_CASE_2 = [(32, 32), 3]
TEST_CASE_3 = [(32, 32, 32), 3]
TEST_CASE_4 = [(64, 64), 4]


@pytest.mark.parametrize("size,scales", [TEST_CASE_1, TEST_CASE_2, TEST_CASE_3, TEST_CASE_4])
def test_ms_ssim_settings_fit_the_size_and_monai_accepts_them(size, scales):
    settings = ms_ssim_settings(size)
    assert len(settings["weights"]) == scales and settings["kernel_size"] == 5
    assert sum(settings["weights"]) == pytest.approx(1.0)
    images = smooth_images(2, size)
    metric = MultiScaleSSIMMetric(spatial_dims=len(size), data_range=1.0, **settings)
    value = metric((images[:1] + 1) / 2, (images[1:] + 1) / 2)  # raises when the size does not fit
    assert 0.0 <= float(value) <= 1.0
    with pytest.raises(ValueError):  # MONAI's default weights do not fit these sizes
        MultiScaleSSIMMetric(spatial_dims=len(size), data_range=1.0)((images[:1] + 1) / 2, (images[1:] + 1) / 2)


@pytest.mark.parametrize("size", [(32, 32), (16, 16, 16), (32, 32, 32)])
def test_pairwise_ms_ssim_is_one_for_copies_and_low_for_independent_images(size):
    images = smooth_images(6, size)
    copies = images[:1].repeat(4, *[1] * (len(size) + 1))
    assert pairwise_ms_ssim(copies) == pytest.approx(1.0, abs=1e-5)
    assert mean_pairwise_distance(copies) == 0.0
    independent = pairwise_ms_ssim(images)
    assert 0.0 <= independent < 0.5
    noisy = (copies + 0.3 * torch.randn(copies.shape, generator=torch.Generator().manual_seed(1))).clamp(-1, 1)
    assert independent < pairwise_ms_ssim(noisy) < 1.0


def test_mean_pairwise_distance_known_answer():
    # constant images -1, 0, 1: pair distances 1, 2, 1 -> mean 4/3
    images = torch.tensor([-1.0, 0.0, 1.0]).view(3, 1, 1, 1).expand(3, 1, 8, 8)
    assert mean_pairwise_distance(images) == pytest.approx(4.0 / 3.0)


def test_pairs_are_capped_and_seeded():
    images = smooth_images(40, (16, 16))  # 780 pairs
    assert pairwise_ms_ssim(images, max_pairs=50, seed=3) == pairwise_ms_ssim(images, max_pairs=50, seed=3)
    assert mean_pairwise_distance(images, max_pairs=50, seed=3) != mean_pairwise_distance(images, max_pairs=50, seed=4)
    # with enough pairs allowed, every pair is used once and the seed no longer matters
    assert mean_pairwise_distance(images, max_pairs=1000, seed=3) == mean_pairwise_distance(images, max_pairs=1000, seed=4)


def test_pair_ssim_matches_pairs():
    images = smooth_images(3, (16, 16))
    values = pair_ssim(images, torch.stack([images[0], images[2], images[1]]))
    assert values[0] == pytest.approx(1.0, abs=1e-5) and values[1] < 0.9 and values[2] < 0.9


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: pairwise_ms_ssim(smooth_images(1, (16, 16))), "at least 2 images, got 1"),
        (lambda: mean_pairwise_distance(torch.zeros(1, 1, 8, 8)), "at least 2 images, got 1"),
        (lambda: pairwise_ms_ssim(torch.zeros(3, 1, 4, 4)), "at least 10 voxels per side"),
        (lambda: pairwise_ms_ssim(torch.zeros(3, 16, 16)), "expected images"),
        (lambda: diversity_report(torch.zeros(3, 1, 16, 16), [0, 0, 0], torch.zeros(3, 1, 8, 8), [0, 0, 0], ["a"]), "differ"),
    ],
)
def test_bad_input_is_one_clear_error(call, message):
    with pytest.raises(MedvolInputError, match=message):
        call()


@pytest.mark.parametrize("side", [5, 6, 7, 8, 9])
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_ms_ssim_of_images_too_small_for_two_scales_is_one_clear_error(side, spatial_dims):
    """Two scales of the 5-voxel window need 10 voxels per side; 5-9 used to end in a torch convolution error."""
    images = torch.rand((3, 1, *[side] * spatial_dims), generator=torch.Generator().manual_seed(0)) * 2 - 1
    with pytest.raises(MedvolInputError, match=r"MS-SSIM needs at least 10 voxels per side \(two scales"):
        pairwise_ms_ssim(images)
    with pytest.raises(MedvolInputError, match="MS-SSIM needs at least 10"):
        diversity_report(images, [0, 0, 0], images, [0, 0, 0], ["a"])
    assert pair_ssim(images, images).shape == (3,)  # single-scale SSIM (the privacy check) still works from 5


@pytest.mark.parametrize("side", [10, 11, 20, 45])
def test_every_ms_ssim_scale_keeps_the_window_inside_the_image(side):
    images = smooth_images(3, (side, side))
    settings = ms_ssim_settings((side, side))
    assert side // 2 ** (len(settings["weights"]) - 1) >= settings["kernel_size"]
    assert 0.0 <= pairwise_ms_ssim(images) <= 1.0


def test_one_image_per_class_is_mode_collapse_without_real_data():
    real = smooth_images(24, (16, 16))
    labels = np.repeat([0, 1], 12)
    collapsed = torch.cat([real[:1].repeat(12, 1, 1, 1), real[12:13].repeat(12, 1, 1, 1)])
    report = diversity_report(collapsed, labels, real, labels, ["normal", "lesion"])
    assert report["mode_collapse"] is True
    assert "class 'normal'" in report["mode_collapse_reason"] and "class 'lesion'" in report["mode_collapse_reason"]
    assert report["per_class"]["lesion"]["ms_ssim_synthetic"] == pytest.approx(1.0, abs=1e-5)
    assert report["per_class"]["lesion"]["distance_synthetic"] == 0.0
    # four identical samples per class (the demo's case) count too, with the small-sample threshold
    few = diversity_report(collapsed[8:16], labels[8:16], real, labels, ["normal", "lesion"])
    assert few["mode_collapse"] is True and "0.1 x" in few["mode_collapse_reason"]
    # unlabelled data: only the overall ratio exists
    unlabelled = diversity_report(real[:12], np.full(12, -1), real[12:], np.full(12, -1), [])
    assert unlabelled["per_class"] == {} and unlabelled["mode_collapse"] is False


@pytest.mark.shared_data
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mednist_one_image_per_class_collapses_and_real_halves_do_not(shared_data, seed):
    images, labels = load_mednist(shared_data, per_class=24, seed=seed)
    first, second = np.zeros(len(labels), dtype=bool), np.zeros(len(labels), dtype=bool)
    for label in range(len(MEDNIST_CLASSES)):
        index = np.flatnonzero(labels == label)
        first[index[:12]], second[index[12:]] = True, True
    real_a, labels_a = images[torch.from_numpy(first)], labels[first]
    real_b, labels_b = images[torch.from_numpy(second)], labels[second]

    real_vs_real = diversity_report(real_a, labels_a, real_b, labels_b, MEDNIST_CLASSES)
    assert real_vs_real["mode_collapse"] is False, real_vs_real["mode_collapse_reason"]
    for entry in real_vs_real["per_class"].values():
        assert 0.5 < (1 - entry["ms_ssim_synthetic"]) / (1 - entry["ms_ssim_real"]) < 2.0

    one_per_class = torch.stack([real_a[labels_a == label][0] for label in labels_a])
    collapsed = diversity_report(one_per_class, labels_a, real_b, labels_b, MEDNIST_CLASSES)
    assert collapsed["mode_collapse"] is True
    for name in MEDNIST_CLASSES:
        assert f"class {name!r}: synthetic MS-SSIM 1.000" in collapsed["mode_collapse_reason"]


@pytest.mark.shared_data
def test_hippocampus_volumes_real_halves_do_not_collapse_repeated_volume_does(shared_data):
    volumes = load_hippocampus(shared_data, count=20, size=16)
    unlabelled = np.full(10, -1)
    real_vs_real = diversity_report(volumes[:10], unlabelled, volumes[10:], unlabelled, [])
    assert real_vs_real["mode_collapse"] is False, real_vs_real["mode_collapse_reason"]
    repeated = volumes[:1].repeat(10, 1, 1, 1, 1)
    collapsed = diversity_report(repeated, unlabelled, volumes[10:], unlabelled, [])
    assert collapsed["mode_collapse"] is True and collapsed["mode_collapse_reason"].startswith("overall:")
