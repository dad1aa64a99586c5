"""The committed bundle folders are the template rendered for each registered family (`medvol.bundles.render`):
edit medvol/bundles/template/ or a family's spec, then run scripts/render_bundles.py."""

from __future__ import annotations

import pytest

from medvol.bundles import BUNDLES_DIR
from medvol.bundles.render import rendered_files
from medvol.families import family_names


def committed_files(family: str) -> dict[str, str]:
    folder = BUNDLES_DIR / family
    paths = [folder / "LICENSE", *(folder / "configs").rglob("*"), *(folder / "docs").rglob("*")]
    return {path.relative_to(folder).as_posix(): path.read_text() for path in paths if path.is_file()}


@pytest.mark.parametrize("family", family_names())
def test_committed_bundle_is_its_rendering(family):
    rendered, committed = rendered_files(family), committed_files(family)
    assert sorted(committed) == sorted(rendered)
    stale = [relative for relative, text in rendered.items() if committed[relative] != text]
    assert not stale, f"bundles/{family}: {stale} differ from the template's rendering; run scripts/render_bundles.py"
    assert not any("{{" in text for text in rendered.values())
