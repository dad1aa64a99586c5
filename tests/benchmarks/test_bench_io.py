"""The I/O benchmark runs end to end on real data and reports ratios against MONAI measured in the same run."""

from __future__ import annotations

from medvol.benchmarks import format_table
from medvol.benchmarks.io import run


def test_io_benchmark_rows_are_measured(shared_data, tmp_path):
    result = run(data_root=shared_data, repeats=1, n_files=2, size=(16, 16, 16), cache_dir=tmp_path / "cache")
    rows = result["rows"]
    cases = " ".join(row["case"] for row in rows)
    assert "DICOM" in cases and "NIfTI" in cases
    for row in rows:
        assert row["status"] == "ok", row
        assert row["medvol_s"] > 0 and row["baseline_s"] > 0
        assert abs(row["speedup"] - row["baseline_s"] / row["medvol_s"]) < 1e-9
    table = format_table({"io": result})
    assert table.count("\n") == len(rows) + 1
