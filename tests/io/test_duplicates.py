"""Exact duplicates by pixel hash, near duplicates by thumbnail correlation, on real MedNIST and hippocampus files."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medvol.io.duplicates import NEAR_DUPLICATE_CORRELATION, find_duplicates, fingerprint


@pytest.mark.shared_data
def test_exact_copy_in_another_format_and_a_near_copy_are_found(shared_data, tmp_path):
    cxr, head = (sorted((shared_data / "mednist64" / c).glob("*.jpg"))[0] for c in ("CXR", "CTHead"))
    shutil.copy(cxr, tmp_path / "a.jpg")
    Image.open(cxr).save(tmp_path / "b_lossless_copy.png")  # same pixels, other bytes
    brighter = np.clip(np.asarray(Image.open(cxr)).astype(np.int16) + 3, 0, 255).astype(np.uint8)
    Image.fromarray(brighter).save(tmp_path / "c_brighter.png")
    shutil.copy(head, tmp_path / "d_other.jpg")
    Image.fromarray(np.full((64, 64), 7, np.uint8)).save(tmp_path / "e_constant.png")
    entries = [{"image": str(p), "subject": p.stem} for p in sorted(tmp_path.iterdir())]
    scan = find_duplicates(entries)
    assert scan.exact == [[0, 1]]
    assert scan.near_pairs.tolist() == [[0, 2]] and scan.near_correlation[0] > NEAR_DUPLICATE_CORRELATION
    assert find_duplicates(entries, threshold=None).near_pairs.shape == (0, 2)


@pytest.mark.shared_data
def test_volumes_are_compared_as_volumes(shared_data, tmp_path):
    first, second = sorted((shared_data / "hippocampus3d/images").glob("*.nii.gz"))[:2]
    shutil.copy(first, tmp_path / "a.nii.gz")
    shutil.copy(second, tmp_path / "b.nii.gz")
    image = nib.load(str(first))
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj), image.affine), str(tmp_path / "c_resaved.nii.gz"))
    entries = [{"image": str(p), "subject": p.name} for p in sorted(tmp_path.iterdir())]
    scan = find_duplicates(entries)
    assert scan.exact == [[0, 2]] and len(scan.near_pairs) == 0


def test_thumbnails_of_any_size_and_constant_images():
    rng = np.random.default_rng(0)
    image = rng.random((37, 23)).astype(np.float32)
    digest, thumbnail = fingerprint(image)
    assert thumbnail.shape == (256,) and np.isclose(np.linalg.norm(thumbnail), 1)
    assert fingerprint(image * 2 + 1)[0] != digest and float(fingerprint(image * 2 + 1)[1] @ thumbnail) > 0.9999
    assert fingerprint(np.zeros((5, 6, 7), np.float32))[1] is None
    assert fingerprint(rng.random((5, 6, 7)))[1].shape == (512,)
