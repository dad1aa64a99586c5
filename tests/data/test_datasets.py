"""Slice-wise and volumetric datasets from a datalist: samples, slice expansion, caching and bad inputs."""

from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import DataLoader, MetaTensor
from PIL import Image

from medvol.data.datasets import UNLABELLED, SliceDataset, build_dataset, load_datalist, split_items
from medvol.errors import MedvolInputError

SHAPE = (12, 10, 8)
EMPTY_SLICES = (0, 7)  # axial slices without any foreground in every test volume


def _volume(seed: int, dtype, scale: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    data = np.zeros(SHAPE, dtype=np.float64)
    data[2:10, 2:8, 1:7] = 0.5 + 0.5 * rng.random((8, 6, 6))
    return (data * scale).astype(dtype)


@pytest.fixture
def datalist_dir(tmp_path):
    """Three labelled subjects (float32 and uint8 files with different ranges) and one unlabelled, in a datalist."""
    (tmp_path / "images").mkdir()
    entries = []
    for i, (dtype, scale) in enumerate([(np.float32, 4000.0), (np.uint8, 255), (np.float32, 1.0), (np.uint8, 90)]):
        name = f"images/sub-{i}.nii.gz"
        nib.save(nib.Nifti1Image(_volume(i, dtype, scale), np.diag([1.0, 1.0, 2.0, 1.0])), str(tmp_path / name))
        entry = {"image": name, "subject": f"sub-{i}", "label": i % 2, "label_name": ["normal", "lesion"][i % 2]}
        if i == 3:
            del entry["label"], entry["label_name"]
        entries.append(entry)
    datalist = {"mode": "volume", "spatial_dims": 3, "classes": ["normal", "lesion"],
                "preprocessing": {"size": [16, 16, 16], "spacing": None}, "intensity": {"kind": "mr"},
                "training": entries[:3] + entries[3:], "validation": [], "test": []}
    (tmp_path / "datalist.json").write_text(json.dumps(datalist))
    return tmp_path


# [params, input (split), expected (sample shape, number of samples, voxel size)]; files: 1 x 1 x 2 mm
TEST_CASE_1 = [{"mode": "volume"}, "training", ((1, 16, 16, 16), 4, (1.0, 1.0, 2.0))]
TEST_CASE_2 = [
    {"mode": "volume", "size": (8, 8, 8), "output_range": (0, 1)}, "training", ((1, 8, 8, 8), 4, (1.0, 1.0, 2.0))
]
TEST_CASE_3 = [{"mode": "volume", "patch_size": (8, 8, 8)}, "training", ((1, 8, 8, 8), 4, (1.0, 1.0, 2.0))]
TEST_CASE_4 = [{"mode": "slice", "size": (16, 16)}, "training", ((1, 16, 16), 4 * SHAPE[2], (1.0, 1.0))]
TEST_CASE_5 = [{"mode": "slice", "size": (16, 16), "min_foreground_fraction": 0.05}, "training",
               ((1, 16, 16), 4 * (SHAPE[2] - len(EMPTY_SLICES)), (1.0, 1.0))]
TEST_CASE_6 = [{"mode": "slice", "size": (16, 8), "slice_axis": 0}, "training", ((1, 16, 8), 4 * SHAPE[0], (1.0, 2.0))]
# in-plane spacing only: 1 mm -> 2 mm halves x (12 -> 6) and y (10 -> 5), the 2 mm slices stay 8
TEST_CASE_7 = [
    {"mode": "slice", "size": (6, 5), "spacing": (2.0, 2.0)}, "training", ((1, 6, 5), 4 * SHAPE[2], (2.0, 2.0))
]


@pytest.mark.parametrize(
    "params, split, expected",
    [TEST_CASE_1, TEST_CASE_2, TEST_CASE_3, TEST_CASE_4, TEST_CASE_5, TEST_CASE_6, TEST_CASE_7],
)
def test_dataset_samples(datalist_dir, params, split, expected):
    dataset = build_dataset(datalist_dir / "datalist.json", split=split, **params)
    shape, count, voxel_size = expected
    assert len(dataset) == count
    out_lo, out_hi = params.get("output_range", (-1, 1))
    subjects = set()
    for i in range(len(dataset)):
        sample = dataset[i]
        assert set(sample) == {"image", "label", "subject"}
        assert isinstance(sample["image"], MetaTensor) and tuple(sample["image"].shape) == shape
        assert out_lo <= float(sample["image"].min()) and float(sample["image"].max()) <= out_hi
        assert sample["image"].meta["medvol_intensity"]["kind"] == "mr"
        column_norms = torch.linalg.norm(sample["image"].affine[:3, : len(voxel_size)], dim=0)
        torch.testing.assert_close(column_norms, torch.tensor(voxel_size, dtype=torch.float64))
        expected_label = UNLABELLED if sample["subject"] == "sub-3" else int(sample["subject"][-1]) % 2
        assert sample["label"] == expected_label
        subjects.add(sample["subject"])
    assert subjects == {"sub-0", "sub-1", "sub-2", "sub-3"}


def test_slices_keep_subject_and_order(datalist_dir):
    dataset = build_dataset(datalist_dir, mode="slice", size=(16, 16), min_foreground_fraction=0.05)
    kept = [k for k in range(SHAPE[2]) if k not in EMPTY_SLICES]
    assert dataset.index == [(v, k) for v in range(4) for k in kept]
    assert dataset.dropped_slices == {f"sub-{i}": len(EMPTY_SLICES) for i in range(4)}
    first = dataset[0]
    assert first["subject"] == "sub-0" and first["image"].meta["medvol_slice"] == {"axis": 2, "index": kept[0]}
    batch = next(iter(DataLoader(dataset, batch_size=len(kept), shuffle=False)))
    assert batch["image"].shape == (len(kept), 1, 16, 16)
    assert batch["subject"] == ["sub-0"] * len(kept)


def test_float_and_uint8_files_are_normalised_alike(datalist_dir):
    """sub-0 (float32 x4000) and sub-1 (uint8 x255) differ only by noise; both reach the full output range."""
    dataset = build_dataset(datalist_dir, mode="volume")
    for i in (0, 1, 2, 3):
        image = dataset[i]["image"]
        assert float(image.min()) == -1.0 and float(image.max()) == 1.0
        assert float((image > -1).float().mean()) == pytest.approx(8 * 6 * 6 / 16**3, abs=0.02)


def test_2d_images_are_single_samples_in_slice_mode(tmp_path):
    entries = []
    for i in range(3):
        pixels = np.zeros((10, 14), dtype=np.uint8)
        pixels[2:8, 3 + i : 9 + i] = 200
        Image.fromarray(pixels).save(tmp_path / f"img{i}.png")
        entries.append({"image": str(tmp_path / f"img{i}.png"), "subject": f"p{i}", "label": 0})
    dataset = build_dataset({"mode": "slice", "training": entries}, size=(16, 16))
    assert len(dataset) == 3
    assert tuple(dataset[2]["image"].shape) == (1, 16, 16)
    assert dataset[2]["subject"] == "p2"
    with pytest.raises(MedvolInputError, match="2D image"):
        build_dataset({"training": entries}, mode="volume", size=(16, 16, 16))


def _cache_files(cache_dir):
    return sorted(p for p in cache_dir.rglob("*.pt"))


def test_cache_is_keyed_by_settings_and_returns_identical_tensors(datalist_dir, tmp_path):
    cache = tmp_path / "cache"
    uncached = build_dataset(datalist_dir, mode="volume")
    cached = build_dataset(datalist_dir, mode="volume", cache_dir=cache)
    first = [cached[i] for i in range(len(cached))]
    files = _cache_files(cache)
    assert len(files) == 4 and len({f.parent for f in files}) == 1
    mtimes = [f.stat().st_mtime_ns for f in files]
    second = [build_dataset(datalist_dir, mode="volume", cache_dir=cache)[i] for i in range(4)]
    assert [f.stat().st_mtime_ns for f in _cache_files(cache)] == mtimes  # read back, not rewritten
    for a, b, c in zip(first, second, (uncached[i] for i in range(4))):
        torch.testing.assert_close(a["image"].as_tensor(), b["image"].as_tensor(), rtol=0, atol=0)
        torch.testing.assert_close(a["image"].as_tensor(), c["image"].as_tensor(), rtol=0, atol=0)
        torch.testing.assert_close(b["image"].affine, c["image"].affine)
        assert b["image"].meta["medvol_intensity"] == c["image"].meta["medvol_intensity"]
        assert (b["label"], b["subject"]) == (c["label"], c["subject"])
    # a different setting gets its own cache folder instead of reusing a stale one
    resized = build_dataset(datalist_dir, mode="volume", size=(8, 8, 8), cache_dir=cache)
    assert tuple(resized[0]["image"].shape) == (1, 8, 8, 8)
    build_dataset(datalist_dir, mode="volume", intensity="minmax", cache_dir=cache)[0]
    assert len({f.parent for f in _cache_files(cache)}) == 3


def test_rewritten_file_is_reprocessed(datalist_dir, tmp_path):
    cache = tmp_path / "cache"
    before = build_dataset(datalist_dir, mode="volume", cache_dir=cache)[0]["image"]
    path = datalist_dir / "images" / "sub-0.nii.gz"
    nib.save(nib.Nifti1Image(_volume(0, np.float32, 4000.0)[::-1].copy(), np.diag([1.0, 1.0, 2.0, 1.0])), str(path))
    os.utime(path, ns=(1, 1))  # a different stamp even on file systems with coarse mtimes
    after = build_dataset(datalist_dir, mode="volume", cache_dir=cache)[0]["image"]
    assert not torch.equal(before.as_tensor(), after.as_tensor())


def test_augmentation_stays_outside_the_cache(datalist_dir, tmp_path):
    cache = tmp_path / "cache"
    dataset = build_dataset(datalist_dir, mode="slice", size=(16, 16), cache_dir=cache,
                            augment={"prob": 1.0, "rotate_degrees": 20})
    dataset.transform.set_random_state(0)
    a, b = dataset[3]["image"], dataset[3]["image"]
    assert not torch.equal(a.as_tensor(), b.as_tensor())
    assert len(_cache_files(cache)) == 4  # one preprocessed volume per subject, no augmented copies
    plain = build_dataset(datalist_dir, mode="slice", size=(16, 16), cache_dir=cache)
    assert len(_cache_files(cache)) == 4  # the same settings reuse the same cache
    assert isinstance(plain, SliceDataset) and plain.transform is None


@pytest.mark.parametrize(
    "datalist, split, match",
    [({"training": []}, "validation", "has no split"),
     ({"training": [{"image": "/nonexistent/x.nii.gz"}]}, "training", "does not exist"),
     ({"training": [{"subject": "a"}]}, "training", "has no 'image'"),
     ({"classes": ["a"], "training": [{"image": __file__, "label": "b"}]}, "training", "not one of the datalist")],
)
def test_bad_datalists_raise_input_errors(datalist, split, match):
    with pytest.raises(MedvolInputError, match=match):
        split_items(datalist, split)


def test_load_datalist_errors(tmp_path):
    with pytest.raises(MedvolInputError, match="not found"):
        load_datalist(tmp_path)
    (tmp_path / "datalist.json").write_text("{not json")
    with pytest.raises(MedvolInputError, match="readable"):
        load_datalist(tmp_path)


@pytest.mark.parametrize(
    "params, match",
    [({"mode": "slice", "size": (16, 16, 16)}, "2 entries"),
     ({"mode": "tiles"}, "unknown mode"),
     ({"intensity": "pet"}, "bad preprocessing settings"),
     ({"spacing": (1.0, 1.0)}, "bad preprocessing settings"),
     ({"percentiles": (99, 1)}, "bad preprocessing settings")],
)
def test_bad_settings_raise_input_errors(datalist_dir, params, match):
    with pytest.raises(MedvolInputError, match=match):
        build_dataset(datalist_dir, **params)


def _hippocampus_entries(shared_data, n_float: int, n_uint8: int) -> list[dict]:
    """A few real hippocampus files, mixing float32 and uint8 storage."""
    picked = {"float32": [], "uint8": []}
    for path in sorted((shared_data / "hippocampus3d" / "images").glob("*.nii.gz")):
        kind = str(nib.load(str(path)).get_data_dtype())
        if kind in picked and len(picked[kind]) < {"float32": n_float, "uint8": n_uint8}[kind]:
            picked[kind].append(path)
        if len(picked["float32"]) == n_float and len(picked["uint8"]) == n_uint8:
            break
    paths = picked["float32"] + picked["uint8"]
    assert len(paths) == n_float + n_uint8
    return [{"image": str(p), "subject": p.name.split(".")[0]} for p in paths]


@pytest.mark.shared_data
def test_real_hippocampus_volumes_and_slices(shared_data, tmp_path):
    datalist = {"training": _hippocampus_entries(shared_data, 2, 2)}
    volumes = build_dataset(datalist, mode="volume", size=(32, 32, 32), cache_dir=tmp_path)
    for i in range(len(volumes)):
        sample = volumes[i]
        assert tuple(sample["image"].shape) == (1, 32, 32, 32) and sample["label"] == UNLABELLED
        assert float(sample["image"].min()) == -1.0 and float(sample["image"].max()) == 1.0
        low, high = sample["image"].meta["medvol_intensity"]["window"]
        assert high > low
    windows = [volumes[i]["image"].meta["medvol_intensity"]["window"][1] for i in range(4)]
    assert max(windows) / min(windows) > 2  # the files' intensity scales differ; the per-volume windows follow them
    slices = build_dataset(datalist, mode="slice", size=(32, 32), cache_dir=tmp_path, min_foreground_fraction=0.2)
    depths = [nib.load(e["image"]).shape[2] for e in datalist["training"]]
    assert 0 < len(slices) <= sum(depths)
    assert {slices[i]["subject"] for i in range(len(slices))} == {e["subject"] for e in datalist["training"]}
    batch = next(iter(DataLoader(slices, batch_size=16, shuffle=True)))
    assert batch["image"].shape == (16, 1, 32, 32)


def test_settings_default_to_the_datalist(datalist_dir):
    datalist, base_dir = load_datalist(datalist_dir)
    datalist["mode"] = "slice"
    datalist["preprocessing"] = {"size": [8, 8], "spacing": [2.0, 2.0, 2.0]}
    datalist["intensity"] = {"kind": "ct", "window": [-100, 3000], "output_range": [0, 1]}
    for entry in datalist["training"]:
        entry["image"] = str(base_dir / entry["image"])
    dataset = build_dataset(datalist)
    sample = dataset[0]["image"]
    assert tuple(sample.shape) == (1, 8, 8)
    assert sample.meta["medvol_intensity"] == {"kind": "ct", "window": [-100.0, 3000.0], "output_range": [0.0, 1.0]}
    assert dataset.preprocessing.spacing == (2.0, 2.0, 2.0)
    assert len(dataset) == 4 * SHAPE[2]  # the files have 2 mm slices already: resampling keeps their number


def test_partly_augmented_batches_collate(datalist_dir, tmp_path):
    """Augmented samples (affine and pixdim updated) and untouched ones batch together, from the cache too."""
    for _ in range(2):  # the second pass reads the cache
        dataset = build_dataset(datalist_dir, mode="slice", size=(16, 16), cache_dir=tmp_path / "cache",
                                augment={"prob": 0.5})
        dataset.transform.set_random_state(1)
        batch = next(iter(DataLoader(dataset, batch_size=len(dataset), shuffle=False)))
        assert batch["image"].shape == (len(dataset), 1, 16, 16)
        assert len(torch.unique(batch["image"].affine[:, 0, 0])) > 1  # some samples were augmented, some not


class _CountingVolumes(torch.utils.data.Dataset):
    """Volumes ``[1, 4, 4, 8]`` whose reads are counted (a stand-in for the disk-cached PersistentDataset)."""

    def __init__(self, count: int):
        self.count, self.reads = count, 0

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict:
        self.reads += 1
        return {"image": MetaTensor(torch.full((1, 4, 4, 8), float(index))), "label": 0, "subject": f"s{index}"}


@pytest.mark.parametrize("cache_bytes, expected_reads", [(2**20, 0), (0, None)])
def test_shuffled_slices_read_each_volume_once_when_the_volumes_fit(cache_bytes, expected_reads):
    volumes = _CountingVolumes(6)
    slices = SliceDataset(volumes, axis=2, cache_bytes=cache_bytes)
    assert len(slices) == 48 and volumes.reads == 6  # the index reads every volume once
    order = torch.randperm(48, generator=torch.Generator().manual_seed(0)).tolist()
    samples = [slices[i] for i in order]
    assert all(float(s["image"][0, 0, 0]) == slices.index[i][0] for s, i in zip(samples, order))
    pass_reads = volumes.reads - 6
    if expected_reads is not None:
        assert pass_reads == expected_reads  # 6 volumes of 512 bytes stay decoded
    else:
        assert pass_reads > 30  # only the last volume kept: nearly one read per shuffled slice


def test_slices_of_a_volume_grid_are_the_slices_of_volume_mode(datalist_dir):
    """volume_size: slice mode fits each volume as volume mode does (here z, 8 x 2 mm, decides the fit's scale), so
    the slices equal those of the volume-mode samples; fitting in-plane only would scale them differently."""
    volumes = build_dataset(datalist_dir, mode="volume", size=(8, 8, 8), shape_mode="fit")
    grid = build_dataset(datalist_dir, mode="slice", volume_size=(8, 8, 8), shape_mode="fit")
    in_plane = build_dataset(datalist_dir, mode="slice", size=(8, 8), shape_mode="fit")
    assert len(grid) == 4 * 8 and grid.preprocessing.size == (8, 8) and grid.preprocessing.volume_size == (8, 8, 8)
    for v in range(4):
        stacked = torch.stack([grid[v * 8 + k]["image"].as_tensor() for k in range(8)], dim=-1)
        torch.testing.assert_close(stacked, volumes[v]["image"].as_tensor())
    assert not torch.equal(in_plane[4]["image"].as_tensor(), grid[4]["image"].as_tensor())
    assert grid.preprocessing.cache_key() != in_plane.preprocessing.cache_key()


def test_volume_grid_comes_from_the_datalist_and_refuses_2d_images_and_volume_mode(datalist_dir, tmp_path):
    document = json.loads((datalist_dir / "datalist.json").read_text())
    document.update(mode="slice", preprocessing={"size": [8, 8], "volume_size": [8, 8, 8], "shape_mode": "fit"})
    (datalist_dir / "datalist.json").write_text(json.dumps(document))
    assert build_dataset(datalist_dir).preprocessing.volume_size == (8, 8, 8)
    with pytest.raises(MedvolInputError, match="slice mode only"):
        build_dataset(datalist_dir, mode="volume", volume_size=(8, 8, 8))
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / "flat.png")
    with pytest.raises(MedvolInputError, match="flat.png: is a 2D image; slices of a volume_size grid need 3D volumes"):
        build_dataset({"mode": "slice", "training": [{"image": str(tmp_path / "flat.png")}]}, volume_size=(8, 8, 8))
