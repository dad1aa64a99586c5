"""`medvol.sampling.stack_slice_samples`: 2D samples of a slice-wise run stacked into volumes (per class, in order),
with the slice normal's spacing along the stacking axis, provenance kept, and bad inputs refused."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from medvol.errors import MedvolInputError
from medvol.runs import RunRecord
from medvol.sampling import stack_slice_samples, write_samples

SLICE_AFFINE = [[1.0, 0, 0, 5.0], [0, 1.0, 0, 6.0], [0, 0, 2.0, 7.0], [0, 0, 0, 1]]  # 1 mm pixels, 2 mm slices


def write_2d_samples(folder, count: int, labels=None, shape=(6, 5)):
    """A `medvol sample` output of a 2D run: `count` slices of `shape`, each filled with its own index."""
    arrays = np.stack([np.full((1, *shape), float(i), dtype=np.float32) for i in range(count)])
    arrays[:, :, 0, 0] += np.arange(count)[:, None] * 0.5  # not constant
    record = RunRecord(spatial_dims=2, image_size=list(shape), classes=["a", "b"] if labels else [], family="wgan_gp",
                       reference_affine=SLICE_AFFINE, intensity_source={"kind": "mr"})
    run = folder.parent / "run2d"
    provenance = {"run": str(run), "checkpoint": str(run / "models" / "model.pt"), "seed": 3, "family": "wgan_gp"}
    write_samples(arrays, labels or [None] * count, record, folder, "nifti", provenance)
    return arrays


def test_consecutive_samples_become_the_slices_of_a_volume(tmp_path):
    arrays = write_2d_samples(tmp_path / "slices", 8)
    document = stack_slice_samples(tmp_path / "slices", tmp_path / "volumes", depth=4)
    assert document["mode"] == "volume" and document["spatial_dims"] == 3 and document["numTraining"] == 2
    assert document["preprocessing"]["size"] == [6, 5, 4] and document["intensity"] == {"kind": "mr"}
    stacked = document["provenance"]["stacked"]
    assert stacked == {"from": "slices", "depth": 4, "axis": 2, "latents": "independent per slice"}
    assert document["provenance"]["run"] == "run2d" and document["provenance"]["checkpoint"] == "models/model.pt"
    for v, entry in enumerate(document["training"]):
        image = nib.load(entry["image"])
        assert image.shape == (6, 5, 4)
        np.testing.assert_array_equal(np.asarray(image.dataobj), np.moveaxis(arrays[4 * v : 4 * v + 4, 0], 0, -1))
        np.testing.assert_allclose(image.affine, SLICE_AFFINE)
        assert image.header["descrip"].tobytes().startswith(b"SYNTHETIC")
    on_disk = json.loads((tmp_path / "volumes" / "datalist.json").read_text())
    assert on_disk["training"] == document["training"]


def test_conditional_samples_stack_within_their_class_and_along_another_axis(tmp_path):
    labels = [0, 1, 0, 1, 0, 1]
    arrays = write_2d_samples(tmp_path / "slices", 6, labels=labels)
    document = stack_slice_samples(tmp_path / "slices", tmp_path / "volumes", depth=3, axis=0)
    assert [e["label_name"] for e in document["training"]] == ["a", "b"]
    first = nib.load(document["training"][0]["image"])
    assert first.shape == (3, 6, 5)
    np.testing.assert_array_equal(np.asarray(first.dataobj), arrays[[0, 2, 4], 0])
    np.testing.assert_allclose(np.linalg.norm(first.affine[:3, :3], axis=0), [2.0, 1.0, 1.0])


@pytest.mark.parametrize("depth, message", [[3, "8 samples are not a multiple of depth 3"],
                                            [1, "depth must be at least 2"]])
def test_bad_depth_is_refused_with_one_line(tmp_path, depth, message):
    write_2d_samples(tmp_path / "slices", 8)
    with pytest.raises(MedvolInputError, match=message):
        stack_slice_samples(tmp_path / "slices", tmp_path / "volumes", depth=depth)


def test_a_folder_without_2d_samples_is_refused(tmp_path):
    with pytest.raises(MedvolInputError, match="no datalist.json"):
        stack_slice_samples(tmp_path, tmp_path / "volumes", depth=2)
    record = RunRecord(spatial_dims=3, image_size=[4, 4, 4], family="wgan_gp")
    write_samples(np.zeros((2, 1, 4, 4, 4), np.float32), [None, None], record, tmp_path / "volumes3d", "nifti",
                  {"run": str(tmp_path / "run"), "checkpoint": None, "seed": 0, "family": "wgan_gp"})
    with pytest.raises(MedvolInputError, match="NIfTI samples of a 2D"):
        stack_slice_samples(tmp_path / "volumes3d", tmp_path / "out", depth=2)
