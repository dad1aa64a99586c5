"""Licence: the repository and every bundle carry the Apache-2.0 text that pyproject.toml declares (the MONAI model
zoo's bundle check stops at a bundle without a LICENSE file)."""

from __future__ import annotations

import tomllib

import pytest

from medvol.bundles import BUNDLES_DIR
from medvol.families import family_names

ROOT = BUNDLES_DIR.parent


def test_root_licence_is_the_apache_2_text_pyproject_declares():
    text = (ROOT / "LICENSE").read_text()
    assert " ".join(text.split()[:4]) == "Apache License Version 2.0,", text[:200]
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert "END OF TERMS AND CONDITIONS" in text
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == {"text": "Apache-2.0"}


@pytest.mark.parametrize("family", family_names())
def test_every_bundle_has_the_licence(family):
    licence = BUNDLES_DIR / family / "LICENSE"
    assert licence.is_file(), f"{licence} is missing"
    assert licence.read_bytes() == (ROOT / "LICENSE").read_bytes()


def test_no_bundle_folder_without_a_licence():
    bundles = sorted(p.name for p in BUNDLES_DIR.iterdir() if (p / "configs").is_dir())
    assert bundles and sorted(family_names()) == bundles
    assert not [name for name in bundles if not (BUNDLES_DIR / name / "LICENSE").is_file()]
