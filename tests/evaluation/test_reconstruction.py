"""Reconstruction metrics of autoencoder runs: known answers, slice-by-slice reconstruction of volumes by a 2D
autoencoder, the montage, and on real hippocampus volumes the slices a 2D run trains on being the slices of the
prepared 3D grid (what makes 2D and 3D reconstruction errors comparable)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medvol.errors import MedvolInputError
from medvol.evaluation.reconstruction import reconstruct, reconstruction_montage
from medvol.metrics.reconstruction import reconstruction_metrics
from medvol.networks.autoencoders import ConvAutoencoder

TEST_CASE_IDENTICAL_2D = [(1, 16, 16)]
TEST_CASE_IDENTICAL_3D = [(1, 16, 12, 8)]


@pytest.mark.parametrize("shape", [TEST_CASE_IDENTICAL_2D[0], TEST_CASE_IDENTICAL_3D[0]])
def test_known_answers(shape):
    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(shape, generator=generator) for _ in range(3)]
    perfect = reconstruction_metrics(images, [i.clone() for i in images])
    assert perfect["ssim"]["mean"] == pytest.approx(1.0, abs=1e-5)
    assert perfect["mae"]["mean"] == 0.0
    assert perfect["psnr"]["values"] == [None, None, None] and perfect["psnr"]["mean"] is None  # infinite: left out
    # a constant error of 0.1 everywhere: MSE 0.01, PSNR 20 dB, MAE 0.1
    shifted = reconstruction_metrics(images, [(i + 0.1) for i in images])
    assert shifted["psnr"]["mean"] == pytest.approx(20.0, abs=1e-3) and shifted["psnr"]["sd"] == pytest.approx(0.0, abs=1e-3)
    assert shifted["mae"]["mean"] == pytest.approx(0.1, abs=1e-6)
    assert 0.0 < shifted["ssim"]["mean"] < 1.0
    noise = reconstruction_metrics(images, [torch.rand(shape, generator=generator) for _ in images])
    assert noise["ssim"]["mean"] < 0.1 < shifted["ssim"]["mean"]
    assert len(noise["ssim"]["values"]) == 3 and noise["ssim"]["sd"] is not None
    assert noise["settings"]["ssim_window"] == [7 if min(shape[1:]) < 11 else 11]


def test_metrics_refuse_mismatched_reconstructions():
    with pytest.raises(MedvolInputError, match="reconstruction of shape"):
        reconstruction_metrics([torch.zeros(1, 8, 8)], [torch.zeros(1, 8, 9)])
    with pytest.raises(MedvolInputError, match="as many reconstructions"):
        reconstruction_metrics([torch.zeros(1, 8, 8)], [])


@pytest.mark.parametrize("slice_axis", [0, 2])
def test_2d_autoencoder_reconstructs_volumes_slice_by_slice(slice_axis):
    torch.manual_seed(0)
    in_plane = [s for axis, s in enumerate((16, 12, 8)) if axis != slice_axis]
    autoencoder = ConvAutoencoder(2, in_plane, channels=(4, 8), latent_size=4).eval()
    volume = torch.rand(1, 16, 12, 8)
    [output] = reconstruct(autoencoder, [volume], slice_axis=slice_axis, batch_size=3)
    assert output.shape == volume.shape
    with torch.no_grad():
        for k in range(volume.shape[slice_axis + 1]):
            expected = autoencoder(volume[0].select(slice_axis, k)[None, None])[0, 0]
            torch.testing.assert_close(output[0].select(slice_axis, k), expected)
    volumetric = ConvAutoencoder(3, (16, 12, 8), channels=(4, 8), latent_size=4).eval()
    assert reconstruct(volumetric, [volume])[0].shape == volume.shape


def test_montage_puts_input_left_of_reconstruction():
    inputs = [torch.zeros(1, 16, 16, 16) for _ in range(8)]
    outputs = [torch.ones(1, 16, 16, 16) for _ in range(8)]
    picture = reconstruction_montage(inputs, outputs, count=3)
    assert picture.dtype == np.uint8 and picture.shape[0] > picture.shape[1] / 3  # 3 rows of 6 views
    left, right = picture[:, : picture.shape[1] // 3], picture[:, -picture.shape[1] // 3 :]
    assert left.max() == 0 and right.max() == 255  # [0, 1] shows black..white


@pytest.mark.shared_data
def test_prepared_crop_pad_grid_slices_are_the_2d_training_slices(shared_data, tmp_path):
    """Hippocampus volumes resampled to 1.5 mm and centre-cropped/padded: the in-plane pixels of the 3D grid's
    slices equal those of the slices a 2D run trains on (same in-plane crop; the per-volume intensity window is measured
    on the grid each mode keeps, the central 24 slices or all of them: 0.006 apart at most, a crop one slice off 0.78)."""
    from medvol.data.datasets import build_dataset

    paths = sorted((shared_data / "hippocampus3d" / "images").glob("*.nii.gz"))[:3]
    datalist = {"mode": "volume", "training": [{"image": str(p)} for p in paths],
                "preprocessing": {"size": [24, 32, 24], "spacing": [1.5, 1.5, 1.5], "shape_mode": "crop_pad"}}
    common = {"output_range": [0.0, 1.0], "cache_dir": None}
    volumes = build_dataset(datalist, mode="volume", **common)
    slices = build_dataset(datalist, mode="slice", size=[24, 32], **common)
    for position in range(len(paths)):
        volume = volumes[position]["image"].as_tensor()[0]
        stack = slices.volumes[position]["image"].as_tensor()[0]  # [24, 32, its own depth]
        depth = stack.shape[2]
        if depth >= 24:  # the 3D grid keeps the central 24 slices
            start = (depth - 24) // 2
            torch.testing.assert_close(volume, stack[:, :, start : start + 24], atol=0.01, rtol=0)
        else:
            start = (24 - depth) // 2
            torch.testing.assert_close(volume[:, :, start : start + depth], stack, atol=0.01, rtol=0)
