"""`medvol bench [--json]`: runs every registered benchmark (`medvol.benchmarks.BENCHMARKS`) and prints the rows."""

from __future__ import annotations

import argparse
import json

from medvol.benchmarks import format_table, run_benchmarks


def run(args: argparse.Namespace) -> int:
    """Runs the benchmarks; prints a table, or the full results as JSON with ``--json``."""
    results = run_benchmarks()
    print(json.dumps(results, indent=2) if args.json else format_table(results))
    return 0
