"""CPU benchmark of the 2D training data path: shuffled slices of preprocessed, disk-cached volumes, in batches.

Compares, on the same synthetic NIfTI volumes and the same preprocessing (load, channel first, scale intensity):

- ``medvol SliceDataset, last volume only``: the former behaviour (``cache_bytes=0``): a shuffled slice reads its
  whole volume from MONAI's PersistentDataset disk cache;
- ``medvol SliceDataset, LRU``: the default store of decoded volumes (512 MiB);
- ``MONAI CacheDataset + PatchDataset + ShuffleBuffer``: every volume decoded in RAM once (CacheDataset), each cut into
  its slices (PatchDataset with a slicing ``patch_func``), shuffled through a buffer of one volume's slices times 4.

Prints slices per second (one shuffled pass after a warm-up pass, batches of 16, no workers) and writes JSON.

Usage: ``python scripts/bench_data_path.py [--volumes 24] [--size 64] [--out bench_data_path.json]``
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data import CacheDataset, PatchDataset, PersistentDataset, ShuffleBuffer
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, ScaleIntensityd

from medvol.data.datasets import SliceDataset


def _volumes(folder: Path, count: int, size: int) -> list[dict]:
    rng = np.random.default_rng(0)
    items = []
    for index in range(count):
        path = folder / f"volume_{index:03d}.nii.gz"
        nib.save(nib.Nifti1Image(rng.random((size,) * 3, dtype=np.float32), np.eye(4)), path)
        items.append({"image": str(path), "label": index % 2, "subject": f"s{index}"})
    return items


def _slices_per_second(loader_factory, passes: int = 2) -> tuple[float, int]:
    """Slices per second of the last of `passes` passes (the first warms caches up)."""
    rate, count = 0.0, 0
    for _ in range(passes):
        count, start = 0, time.perf_counter()
        for batch in loader_factory():
            count += batch["image"].shape[0]
        rate = count / (time.perf_counter() - start)
    return rate, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", type=int, default=24)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", default="bench_data_path.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    transform = Compose([LoadImaged("image"), EnsureChannelFirstd("image", channel_dim="no_channel"), ScaleIntensityd("image")])
    results = {"volumes": args.volumes, "size": args.size, "batch_size": args.batch_size, "torch_threads": 1, "rows": {}}
    with tempfile.TemporaryDirectory() as tmp:
        items = _volumes(Path(tmp), args.volumes, args.size)
        persistent = PersistentDataset(items, transform, cache_dir=Path(tmp) / "cache")
        for name, cache_bytes in (("medvol SliceDataset, last volume only", 0), ("medvol SliceDataset, LRU", 512 * 2**20)):
            setup = time.perf_counter()
            slices = SliceDataset(persistent, axis=2, cache_bytes=cache_bytes)
            setup = time.perf_counter() - setup
            generator = torch.Generator().manual_seed(0)
            rate, count = _slices_per_second(
                lambda: torch.utils.data.DataLoader(slices, batch_size=args.batch_size, shuffle=True, generator=generator)
            )
            results["rows"][name] = {"slices_per_second": rate, "slices": count, "setup_seconds": setup}
            print(f"{name:55s} {rate:9.0f} slices/s  (setup {setup:.1f} s)", flush=True)

        setup = time.perf_counter()
        cached = CacheDataset(items, transform, progress=False)
        setup = time.perf_counter() - setup

        def all_slices(sample):
            image = sample["image"]
            return [{"image": image[..., k], "label": sample["label"]} for k in range(image.shape[-1])]

        patches = PatchDataset(cached, patch_func=all_slices, samples_per_image=args.size)
        rate, count = _slices_per_second(
            lambda: torch.utils.data.DataLoader(
                ShuffleBuffer(patches, buffer_size=4 * args.size, seed=0), batch_size=args.batch_size
            )
        )
        name = "MONAI CacheDataset + PatchDataset + ShuffleBuffer"
        results["rows"][name] = {"slices_per_second": rate, "slices": count, "setup_seconds": setup}
        print(f"{name:55s} {rate:9.0f} slices/s  (setup {setup:.1f} s)", flush=True)
    rows = results["rows"]
    monai_rate = rows["MONAI CacheDataset + PatchDataset + ShuffleBuffer"]["slices_per_second"]
    results["ratio_lru_to_monai"] = rows["medvol SliceDataset, LRU"]["slices_per_second"] / monai_rate
    results["ratio_lru_to_last_volume_only"] = (
        rows["medvol SliceDataset, LRU"]["slices_per_second"] / rows["medvol SliceDataset, last volume only"]["slices_per_second"]
    )
    print(f"LRU / MONAI: {results['ratio_lru_to_monai']:.2f}; LRU / last volume only: {results['ratio_lru_to_last_volume_only']:.1f}")
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
