"""scripts/bench_training.py, the GPU benchmark of docs/benchmarks.md: its --help and a --dry-run that takes every
code path on the CPU (the CUDA planner-vs-bisection rows included), so that the run on a GPU machine does not fail on
a typo in a branch no CPU test took."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_training.py"


def _script(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=600)


def test_help_lists_the_gpu_options():
    result = _script("--help")
    assert result.returncode == 0, result.stderr
    for option in ("--device", "--planner-sizes", "--no-throughput", "--dry-run"):
        assert option in result.stdout


@pytest.mark.slow
def test_a_dry_run_takes_the_planner_rows_on_the_cpu(tmp_path):
    out = tmp_path / "dry.json"
    result = _script("--dry-run", "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert all(row["status"] == "ok" for row in rows), rows
    throughput = [row for row in rows if row["baseline"] == "plain fp32 loop"]
    planner = [row for row in rows if "planned_micro_batch" in row]
    assert len(throughput) == 4 and len(planner) == 3
    for row in planner:
        assert 1 <= row["planned_micro_batch"] <= row["largest_fitting_batch"], row
