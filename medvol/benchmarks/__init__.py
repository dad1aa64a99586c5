"""Benchmarks behind `medvol bench`: a registry of modules, each with ``run(**options) -> dict``.

A benchmark result is ``{"name", "rows": [...], "settings": {...}, "environment": {...}}``; every row compares a
medvol path with a baseline measured in the same run, as ``{"case", "medvol", "baseline", "medvol_s",
"baseline_s", "speedup", "status", "note"}`` where ``speedup = baseline_s / medvol_s`` (> 1: medvol is faster)
and ``status`` is ``ok``, ``pending`` (the medvol part does not exist yet), ``skipped`` or ``error``.
Times are medians over repeats; on a shared machine only the ratios are worth quoting.
"""

from __future__ import annotations

import importlib
import os
import platform
from collections.abc import Iterable

import monai
import numpy as np
import torch

import medvol

BENCHMARKS: dict[str, str] = {"io": "medvol.benchmarks.io", "training": "medvol.benchmarks.training"}


def register(name: str, module: str) -> None:
    """Adds a benchmark: `module` (a dotted path) must define ``run(**options) -> dict`` returning rows."""
    BENCHMARKS[name] = module


def environment() -> dict:
    """What the numbers were measured on."""
    return {
        "medvol": medvol.__version__,
        "monai": monai.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        **_cuda_environment(),
    }


def _cuda_environment() -> dict:
    """The GPU and the float32 modes its numbers were measured in: with ``cudnn_tf32`` true (PyTorch's default),
    "fp32" convolutions run in TF32 on Ampere and later GPUs; matrix products only with ``matmul_tf32``."""
    if not torch.cuda.is_available():
        return {}
    return {
        "cuda_device": torch.cuda.get_device_name(),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "cudnn_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
    }


def run_benchmarks(names: Iterable[str] | None = None, **options) -> dict[str, dict]:
    """Runs the registered benchmarks (all when `names` is None) and returns their results by name."""
    selected = list(BENCHMARKS) if names is None else list(names)
    unknown = [n for n in selected if n not in BENCHMARKS]
    if unknown:
        raise KeyError(f"unknown benchmark(s) {unknown}; registered: {sorted(BENCHMARKS)}")
    return {name: importlib.import_module(BENCHMARKS[name]).run(**options) for name in selected}


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"


def format_table(results: dict[str, dict]) -> str:
    """A plain-text table of every row of every result."""
    header = ("benchmark", "case", "medvol", "baseline", "medvol time", "baseline time", "speedup", "status")
    lines = []
    for name, result in results.items():
        for row in result["rows"]:
            speedup = "-" if row.get("speedup") is None else f"{row['speedup']:.2f}x"
            status = row["status"] + (f" ({row['note']})" if row.get("note") else "")
            lines.append(
                (name, row["case"], row["medvol"], row["baseline"], _seconds(row.get("medvol_s")),
                 _seconds(row.get("baseline_s")), speedup, status)
            )
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines)]
    render = ["  ".join(str(cell).ljust(w) for cell, w in zip(cells, widths)).rstrip() for cells in [header, *lines]]
    render.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(render)
