"""The classical augmentation preset: small affine changes, no flips unless asked for."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import RandFlipd

from medvol.transforms.augment import classical_augmentation


def _asymmetric_image(spatial_dims: int) -> MetaTensor:
    """A smooth blob off-centre along every axis, so each flip moves it far away."""
    size = 24 if spatial_dims == 2 else 16
    grid = torch.stack(torch.meshgrid(*[torch.arange(size, dtype=torch.float32)] * spatial_dims, indexing="ij"))
    centre = torch.tensor([size * 0.3] * spatial_dims).view(-1, *[1] * spatial_dims)
    blob = torch.exp(-((grid - centre) ** 2).sum(0) / (2 * (size / 8) ** 2))
    return MetaTensor((blob * 2 - 1)[None], affine=torch.eye(4, dtype=torch.float64))


def _correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.flatten().numpy(), b.flatten().numpy())[0, 1])


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_default_preset_never_flips(spatial_dims):
    image = _asymmetric_image(spatial_dims)
    augment = classical_augmentation(spatial_dims, image.shape[1:], prob=1.0)
    assert not any(isinstance(t, RandFlipd) for t in augment.transforms)
    for seed in range(6):
        augment.set_random_state(seed)
        out = augment({"image": image})["image"]
        assert out.shape == image.shape
        original = _correlation(out.as_tensor(), image.as_tensor())
        for axis in range(spatial_dims):
            flipped = _correlation(out.as_tensor(), torch.flip(image.as_tensor(), dims=(axis + 1,)))
            assert original > flipped + 0.3, f"seed {seed}: looks flipped along axis {axis}"


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_flips_only_when_requested(spatial_dims):
    image = _asymmetric_image(spatial_dims)
    augment = classical_augmentation(spatial_dims, image.shape[1:], prob=0.0, flip_axes=[0], flip_prob=1.0)
    out = augment({"image": image})["image"]
    torch.testing.assert_close(out.as_tensor(), torch.flip(image.as_tensor(), dims=(1,)))


def test_augmentation_changes_image_and_records_affine():
    image = _asymmetric_image(3)
    augment = classical_augmentation(3, image.shape[1:], prob=1.0)
    augment.set_random_state(0)
    out = augment({"image": image, "subject": "s"})["image"]
    assert not torch.allclose(out.as_tensor(), image.as_tensor())
    assert not torch.allclose(out.affine, image.affine)
    assert float(out.min()) >= -1.0 - 1e-5  # border padding introduces no new values below the background


@pytest.mark.parametrize(
    "params",
    [
        {"spatial_dims": 4, "image_size": (8,) * 4},
        {"spatial_dims": 2, "image_size": (8,) * 3},
        {"spatial_dims": 2, "image_size": (8, 8), "flip_axes": [2]},
    ],
)
def test_invalid_arguments_raise(params):
    with pytest.raises(ValueError):
        classical_augmentation(**params)
