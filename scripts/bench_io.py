"""I/O benchmark driver: prints the table of `medvol.benchmarks.io` and saves the results as JSON.

    .venv/bin/python scripts/bench_io.py --repeats 5 --n-files 40 --out bench_io.json
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from medvol.benchmarks import format_table
from medvol.benchmarks import io as io_benchmark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", help="folder with dicom/ and hippocampus3d/ (default ../shared/data)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case; medians are reported")
    parser.add_argument("--n-files", type=int, default=40, help="hippocampus files for the NIfTI and dataset cases")
    parser.add_argument("--size", type=lambda t: [int(v) for v in t.split(",")], default=[32, 32, 32],
                        help="sample size of the dataset case (default 32,32,32)")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch intra-op threads during the run")
    parser.add_argument("--out", default="bench_io.json", help="JSON output file (default bench_io.json)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = io_benchmark.run(args.data_root, args.repeats, args.n_files, args.size, torch_threads=args.torch_threads)
    print(format_table({"io": result}))
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
