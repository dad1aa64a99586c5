"""`medvol bench [--json]`: runs every registered benchmark (`medvol.benchmarks.BENCHMARKS`) and prints the rows."""

from __future__ import annotations

import json

from medvol.benchmarks import format_table, run_benchmarks


def run(*, as_json: bool = False) -> int:
    """Runs the benchmarks; prints a table, or the full results as JSON with ``--json`` (`as_json`)."""
    results = run_benchmarks()
    print(json.dumps(results, indent=2) if as_json else format_table(results))
    return 0
