"""Slice coherence: adjacent-slice NCC/SSIM per axis on known cases, constant (padding) slices left out, and real
hippocampus volumes against the same slices stacked across volumes (what a slice-wise generator's stack looks like)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medvol.errors import MedvolInputError
from medvol.metrics.coherence import adjacent_slice_similarity, coherence_report, slice_coherence
from tests.metrics.test_diversity import load_hippocampus, smooth_images


def shuffled_across_volumes(volumes: torch.Tensor, axis: int = 2, seed: int = 0) -> torch.Tensor:
    """Each slice position along `axis` filled from a random volume: slices that are real, stacks that are not."""
    generator = torch.Generator().manual_seed(seed)
    out = volumes.clone()
    for k in range(volumes.shape[axis + 2]):
        source = torch.randint(0, volumes.shape[0], (volumes.shape[0],), generator=generator)
        index = [slice(None)] * 5
        index[axis + 2] = k
        out[tuple(index)] = volumes[(source, *index[1:])]
    return out


def test_ncc_of_equal_negated_and_constant_slices():
    volume = smooth_images(1, (8, 8), seed=1)[0, 0]  # [8, 8]
    stack = torch.stack([volume, volume, -volume, torch.full_like(volume, -1.0), volume], dim=-1)[None, None]
    values = adjacent_slice_similarity(stack, axis=2, measure="ncc")
    assert values.shape == (1, 4)
    np.testing.assert_allclose(values[0, :2].numpy(), [1.0, -1.0], atol=1e-9)
    assert torch.isnan(values[0, 2:]).all()  # pairs with the constant (padding) slice have no structure to compare
    ssim = adjacent_slice_similarity(stack, axis=2, measure="ssim")
    assert ssim[0, 0] == pytest.approx(1.0, abs=1e-6) and ssim[0, 1] < 0.5 and torch.isnan(ssim[0, 2:]).all()


def test_smooth_volumes_are_coherent_on_every_axis_and_stacked_slices_only_in_plane():
    volumes = smooth_images(6, (16, 16, 16), seed=0)
    stacked = shuffled_across_volumes(volumes, axis=2)
    report = coherence_report({"real": volumes, "stacked": stacked})
    real, ours = report["sets"]["real"]["axes"], report["sets"]["stacked"]["axes"]
    for axis in "012":
        assert real[axis]["ncc"]["mean"] > 0.9 and real[axis]["ssim"]["mean"] > 0.8
        assert real[axis]["constant_pairs"] == 0 and real[axis]["pairs"] == 6 * 15
        assert len(real[axis]["ncc"]["profile"]) == 15 and len(real[axis]["ncc"]["per_volume"]) == 6
    assert ours["2"]["ncc"]["mean"] < 0.5 < ours["0"]["ncc"]["mean"]
    assert report["difference"]["stacked"]["2"]["ncc"] < -0.4
    assert ours["2"]["plane"] == "axial" and report["reference"] == "real"


def test_padding_slices_are_left_out_of_the_means():
    volumes = smooth_images(2, (8, 8, 8), seed=2)
    padded = torch.full((2, 1, 8, 8, 12), -1.0)
    padded[..., 2:10] = volumes
    plain, with_padding = slice_coherence(volumes)["axes"]["2"], slice_coherence(padded)["axes"]["2"]
    assert with_padding["constant_pairs"] == 2 * 4 and with_padding["pairs"] == 2 * 11
    assert with_padding["ncc"]["mean"] == pytest.approx(plain["ncc"]["mean"], abs=1e-9)
    assert with_padding["ncc"]["profile"][0] is None


@pytest.mark.parametrize("args, message", [
    [(torch.zeros(2, 1, 8, 8), 2, "ncc"), "expected volumes"],
    [(torch.zeros(2, 1, 8, 8, 8), 3, "ncc"), "axis must be 0, 1 or 2"],
    [(torch.zeros(2, 1, 8, 8, 8), 2, "mse"), "unknown coherence measure"],
    [(torch.zeros(2, 1, 4, 4, 8), 2, "ssim"), r"5\+ voxels per side"],
])
def test_bad_input_raises_one_clear_error(args, message):
    with pytest.raises(MedvolInputError, match=message):
        adjacent_slice_similarity(*args)


@pytest.mark.shared_data
def test_real_hippocampus_is_coherent_and_its_slices_restacked_are_not(shared_data):
    """20 real crops at 16^3: adjacent slices correlate strongly along every axis; the same axial slices drawn from
    random volumes (a stack of real slices, as a slice-wise model makes) lose it across z, not within the slices."""
    volumes = load_hippocampus(shared_data, count=20, size=16)
    report = coherence_report({"real": volumes, "restacked": shuffled_across_volumes(volumes, axis=2)})
    real, restacked = report["sets"]["real"]["axes"], report["sets"]["restacked"]["axes"]
    for axis in "012":
        assert real[axis]["ncc"]["mean"] > 0.6  # 0.70-0.72 at 16^3
    assert restacked["2"]["ncc"]["mean"] < real["2"]["ncc"]["mean"] - 0.15  # 0.49 vs 0.70
    assert restacked["2"]["ssim"]["mean"] < real["2"]["ssim"]["mean"] - 0.1
    in_plane_change = abs(restacked["0"]["ncc"]["mean"] - real["0"]["ncc"]["mean"])
    assert in_plane_change < abs(report["difference"]["restacked"]["2"]["ncc"])
