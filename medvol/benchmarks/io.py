"""I/O benchmark: medvol's loaders against MONAI's `LoadImage` defaults, and cached against uncached datasets.

Cases (all on ../shared/data, or `data_root`):

- DICOM series folder -> voxel array: `medvol.io.dicom` (discover, select, read with SimpleITK) against
  ``LoadImage()`` (MONAI's default reader choice for a folder; PydicomReader when ITK is absent). The row also says
  whether both return the same voxels in the same order.
- NIfTI files -> voxel arrays: `medvol.io.nifti.read_nifti` against ``LoadImage()`` on hippocampus3d files.
- Dataset iteration in volume mode on hippocampus3d: `medvol.data.datasets.build_dataset` with a warm disk cache
  (and the first pass that fills it) against the same pipeline without cache.

Each timing is the median of `repeats` runs, the two sides interleaved so that load on a shared machine hits both.
"""

from __future__ import annotations

import logging
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from medvol.benchmarks import environment

logger = logging.getLogger(__name__)

DICOM_SERIES = (
    "dicom/study_mixed_series/11-T1post-18670",
    "dicom/crop_series/study1_hippo_crop",
    "dicom/crop_series/study2_hippo_crop",
)
HIPPOCAMPUS_IMAGES = "hippocampus3d/images"
MONAI_LOADER = "monai LoadImage() defaults"


def default_data_root() -> Path:
    """``$MEDVOL_SHARED_DATA``, else ``../shared/data`` next to the repository."""
    env = os.environ.get("MEDVOL_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "data"


def median_seconds(functions: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall time of each function over `repeats` interleaved runs, after one untimed warm-up run each."""
    for function in functions.values():
        function()
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def _row(
    case: str, medvol: str, baseline: str, seconds: dict | None = None, status: str = "ok", note: str = ""
) -> dict:
    medvol_s = seconds.get("medvol") if seconds else None
    baseline_s = seconds.get("baseline") if seconds else None
    speedup = baseline_s / medvol_s if medvol_s and baseline_s else None
    return {"case": case, "medvol": medvol, "baseline": baseline, "medvol_s": medvol_s, "baseline_s": baseline_s,
            "speedup": speedup, "status": status, "note": note}


def _monai_loader():
    from monai.transforms import LoadImage

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader", category=UserWarning)
        return LoadImage()


def _voxel_agreement(ours: np.ndarray, theirs: np.ndarray) -> str:
    theirs = np.asarray(theirs, dtype=np.float32)
    if ours.shape != theirs.shape:
        return f"MONAI shape {list(theirs.shape)} != medvol {list(ours.shape)}"
    if np.array_equal(ours, theirs):
        return "same voxels"
    for axis in range(ours.ndim):
        if np.array_equal(ours, np.flip(theirs, axis)):
            return f"MONAI voxels reversed along axis {axis}"
    if np.array_equal(np.sort(ours, axis=-1), np.sort(theirs, axis=-1)) or np.array_equal(
        np.sort(ours.reshape(-1, ours.shape[-1]), axis=0), np.sort(theirs.reshape(-1, theirs.shape[-1]), axis=0)
    ):
        return "same voxels, MONAI slice order differs"
    return "MONAI voxels differ"


def bench_dicom(data_root: Path, repeats: int) -> list[dict]:
    """DICOM series folder to array: medvol against MONAI's defaults."""
    medvol_name = "medvol.io.dicom discover+read_series"
    try:
        from medvol.io.dicom import discover_series, read_series, select_series
    except ImportError as err:
        return [_row(f"DICOM {s}", medvol_name, MONAI_LOADER, status="pending", note=f"medvol.io.dicom: {err}")
                for s in DICOM_SERIES]
    loader = _monai_loader()
    rows = []
    for relative in DICOM_SERIES:
        folder = data_root / relative
        case = f"DICOM {Path(relative).name}"
        if not folder.is_dir():
            rows.append(_row(case, medvol_name, MONAI_LOADER, status="skipped", note=f"{folder} is absent"))
            continue
        logger.info("bench io: %s", case)

        def medvol_load(folder=folder):
            return read_series(select_series(discover_series(folder)))[0]

        def monai_load(folder=folder):
            return loader(str(folder))

        try:
            agreement = _voxel_agreement(medvol_load(), monai_load())
            seconds = median_seconds(
                {"medvol": medvol_load, "baseline": monai_load, "discover": lambda f=folder: discover_series(f)},
                repeats,
            )
        except Exception as err:  # one broken case must not hide the others
            rows.append(_row(case, medvol_name, MONAI_LOADER, status="error", note=f"{type(err).__name__}: {err}"))
            continue
        note = f"{agreement}; discover_series alone {seconds['discover'] * 1000:.0f} ms"
        rows.append(_row(case, medvol_name, MONAI_LOADER, seconds, note=note))
    return rows


def _hippocampus_files(data_root: Path, n_files: int) -> list[Path]:
    return sorted((data_root / HIPPOCAMPUS_IMAGES).glob("*.nii.gz"))[:n_files]


def bench_nifti(data_root: Path, repeats: int, n_files: int) -> list[dict]:
    """NIfTI files to arrays: medvol.io.nifti against MONAI's defaults."""
    medvol_name = "medvol.io.nifti.read_nifti"
    files = _hippocampus_files(data_root, n_files)
    case = f"NIfTI hippocampus3d x{len(files)}"
    if not files:
        return [_row(case, medvol_name, MONAI_LOADER, status="skipped", note=f"no files under {data_root}")]
    try:
        from medvol.io.nifti import read_nifti
    except ImportError as err:
        return [_row(case, medvol_name, MONAI_LOADER, status="pending", note=f"medvol.io.nifti: {err}")]
    loader = _monai_loader()
    logger.info("bench io: %s", case)
    same = all(np.array_equal(read_nifti(f)[0], np.asarray(loader(str(f)), dtype=np.float32)) for f in files)
    seconds = median_seconds(
        {"medvol": lambda: [read_nifti(f) for f in files], "baseline": lambda: [loader(str(f)) for f in files]},
        repeats,
    )
    return [_row(case, medvol_name, MONAI_LOADER, seconds, note="same voxels" if same else "voxels differ")]


def bench_dataset_cache(
    data_root: Path, repeats: int, n_files: int, size: Sequence[int], cache_dir: str | os.PathLike | None = None
) -> list[dict]:
    """Volume-mode dataset iteration with a warm disk cache, and the pass that fills it, against no cache."""
    from medvol.data.datasets import build_dataset

    files = _hippocampus_files(data_root, n_files)
    case = f"dataset volume mode {list(size)}, hippocampus3d x{len(files)}"
    baseline = "same pipeline, no cache"
    if not files:
        return [_row(case, "PersistentDataset", baseline, status="skipped", note=f"no files under {data_root}")]
    datalist = {"training": [{"image": str(f), "subject": f.name.split(".")[0]} for f in files]}
    logger.info("bench io: %s", case)

    def iterate(dataset):
        for i in range(len(dataset)):
            dataset[i]

    uncached = build_dataset(datalist, mode="volume", size=size)
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as scratch:
        fills = []

        def fill_cache():  # every call starts from an empty cache folder
            folder = tempfile.mkdtemp(dir=scratch)
            start = time.perf_counter()
            iterate(build_dataset(datalist, mode="volume", size=size, cache_dir=folder))
            fills.append(time.perf_counter() - start)

        warm = build_dataset(datalist, mode="volume", size=size, cache_dir=Path(scratch) / "warm")
        seconds = median_seconds(
            {"medvol": lambda: iterate(warm), "baseline": lambda: iterate(uncached), "fill": fill_cache}, repeats
        )
    fill_s = statistics.median(fills[1:])  # fills[0] is the warm-up
    return [
        _row(case, "PersistentDataset, warm cache", baseline, seconds),
        _row(case, "PersistentDataset, first pass", baseline, {"medvol": fill_s, "baseline": seconds["baseline"]},
             note="fills the cache"),
    ]


def run(
    data_root: str | os.PathLike | None = None,
    repeats: int = 5,
    n_files: int = 40,
    size: Sequence[int] = (32, 32, 32),
    cache_dir: str | os.PathLike | None = None,
    torch_threads: int = 1,
) -> dict:
    """Runs every I/O case and returns ``{"name": "io", "rows", "settings", "environment"}``.

    Args:
        data_root: folder holding ``dicom/`` and ``hippocampus3d/`` (default: `default_data_root`).
        repeats: timed runs per case (the median is reported).
        n_files: hippocampus files used by the NIfTI and dataset cases.
        size: sample size of the dataset case.
        cache_dir: where the dataset case's temporary caches go (default: the system temp folder).
        torch_threads: intra-op threads during the run. 1 is what a DataLoader worker gets; several threads on a
            busy machine make each small tensor operation wait on the others (milliseconds instead of microseconds).
    """
    root = Path(data_root) if data_root is not None else default_data_root()
    threads = torch.get_num_threads()
    torch.set_num_threads(torch_threads)
    try:
        rows = bench_dicom(root, repeats) + bench_nifti(root, repeats, n_files)
        rows += bench_dataset_cache(root, repeats, n_files, size, cache_dir)
    finally:
        torch.set_num_threads(threads)
    settings = {"data_root": str(root), "repeats": repeats, "n_files": n_files, "size": list(size),
                "torch_threads": torch_threads}
    return {"name": "io", "rows": rows, "settings": settings, "environment": environment()}
