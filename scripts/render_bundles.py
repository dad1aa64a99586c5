"""Write the bundle folder of every registered family from the one template (`medvol.bundles.render`).

    .venv/bin/python scripts/render_bundles.py            # rewrite bundles/<family>/ for every family
    .venv/bin/python scripts/render_bundles.py --check    # exit 1 when a committed bundle differs from its rendering

Edit `medvol/bundles/template/` (what every bundle shares) or a family's spec in `medvol/families.py` (its words),
never a file under bundles/: tests/bundles/test_render.py fails when the committed folders are not the rendered ones.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from medvol.bundles import BUNDLES_DIR
from medvol.bundles.render import rendered_files, write_bundle
from medvol.families import family_names


def stale_files(bundles_dir: Path) -> list[Path]:
    """Files of the bundles under `bundles_dir` that are missing or differ from their rendering."""
    return [
        bundles_dir / family / relative
        for family in family_names()
        for relative, text in rendered_files(family).items()
        if not (bundles_dir / family / relative).is_file() or (bundles_dir / family / relative).read_text() != text
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundles-dir", type=Path, default=BUNDLES_DIR, help=f"default {BUNDLES_DIR}")
    parser.add_argument("--check", action="store_true", help="only compare, write nothing")
    args = parser.parse_args()
    stale = stale_files(args.bundles_dir)
    if args.check:
        for path in stale:
            print(f"{path}: differs from its rendering (run scripts/render_bundles.py)")
        sys.exit(1 if stale else 0)
    for family in family_names():
        write_bundle(family, args.bundles_dir / family)
    print(f"rendered {len(family_names())} bundles into {args.bundles_dir} ({len(stale)} files changed)")


if __name__ == "__main__":
    main()
