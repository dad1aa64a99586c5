"""`medvol evaluate` on the command line: exit 2 with one line naming the problem for every kind of bad input, and
a run on exact copies of training images that flags all of them as possible copies."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from medvol.cli import main
from medvol.data.phantoms import make_phantom_batch
from tests.evaluation.test_pipeline import SIZE, write_synthetic
from tests.report.test_html import check_self_contained_valid_html


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("evaluate_cli")
    prepared = root / "data"
    assert main(["prepare", "phantoms", "--out", str(prepared), "--mode", "slice", "--size", f"{SIZE},{SIZE}"]) == 0
    no_test = root / "no_test"
    assert main(["prepare", "phantoms", "--out", str(no_test), "--mode", "slice", "--size", f"{SIZE},{SIZE}",
                 "--split", "0.8,0.2,0"]) == 0
    images, labels = make_phantom_batch(8, 2, (SIZE, SIZE), seed=3)
    folders = {
        "real": prepared / "datalist.json",
        "no_test": no_test / "datalist.json",
        "good": write_synthetic(root / "good", images, labels),
        "volumes": write_synthetic(root / "volumes", *make_phantom_batch(8, 3, (SIZE,) * 3, seed=3)),
        "tumour": write_synthetic(root / "tumour", images, labels, classes=["normal", "tumour"]),
        "few": write_synthetic(root / "few", images[:3], labels[:3]),
    }
    unlabelled = root / "unlabelled"
    unlabelled.mkdir()
    for path in sorted((root / "good").glob("*.nii.gz")):
        shutil.copy(path, unlabelled / path.name)
    folders["unlabelled"] = unlabelled
    (root / "not_a_run").mkdir()
    folders["not_a_run"] = root / "not_a_run"
    return folders


# (arguments with {placeholders} for the fixture's folders, words the one error line must hold)
BAD_INPUTS = {
    "no test split": (["--real", "{no_test}", "--synthetic", "{good}"], ["test split is empty"]),
    "other dimensionality": (["--real", "{real}", "--synthetic", "{volumes}"], ["3D", "2D"]),
    "labels the real data lacks": (["--real", "{real}", "--synthetic", "{tumour}"], ["'tumour'", "not classes"]),
    "too few samples": (["--real", "{real}", "--synthetic", "{few}"], ["3 synthetic samples", "at least 6"]),
    "utility without labels": (["--real", "{real}", "--synthetic", "{unlabelled}", "--utility"], ["no class labels"]),
    "missing datalist": (["--real", "{good}/nothing.json", "--synthetic", "{good}"], ["datalist not found"]),
    "missing feature network": (["--real", "{real}", "--synthetic", "{good}", "--features", "{good}/no.pt"], ["--features"]),
    "run without curves": (["--real", "{real}", "--synthetic", "{good}", "--run", "{not_a_run}"], ["TensorBoard"]),
    "no seeds": (["--real", "{real}", "--synthetic", "{good}", "--utility", "--seeds", "0"], ["--seeds"]),
    "selection above 1": (["--real", "{real}", "--synthetic", "{good}", "--select-confidence", "1.5"],
                          ["--select-confidence", "(0, 1]", "1.5"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line(case, data, tmp_path, capsys):
    arguments, words = BAD_INPUTS[case]
    arguments = [a.format(**{k: str(v) for k, v in data.items()}) for a in arguments]
    capsys.readouterr()
    assert main(["evaluate", *arguments, "--out", str(tmp_path / "out"), "--device", "cpu"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and error.startswith("medvol evaluate: error: "), error
    for word in words:
        assert word in error, (word, error)
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_exact_copies_of_training_images_are_all_flagged(data, tmp_path, capsys):
    """A plain folder holding copies of training images (unlabelled): every one is a possible copy, recognisability is
    skipped with its reason, and the summary lines name the flagged count."""
    datalist = json.loads(data["real"].read_text())
    copies = tmp_path / "copies"
    copies.mkdir()
    sources = [Path(entry["image"]) for entry in datalist["training"][:8]]
    for index, source in enumerate(sources):
        shutil.copy(source, copies / f"copy_{index}{source.suffix}")
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["evaluate", "--real", str(data["real"]), "--synthetic", str(copies), "--out", str(out),
                 "--classifier-epochs", "1", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "possible copies: 8 (1)" in printed and "report.html" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["inputs"]["synthetic_source"] == "folder"
    assert metrics["privacy"]["flagged_fraction"] == 1.0
    assert sorted(metrics["privacy"]["flagged"]) == sorted(str(p) for p in copies.iterdir())
    assert all(n["feature_distance"] == pytest.approx(0.0, abs=1e-9) for n in metrics["privacy"]["nearest"])
    assert metrics["recognisability"]["overall"] is None and "no class labels" in metrics["recognisability"]["skipped"]
    assert np.isfinite(metrics["fid"]["value"])
    check_self_contained_valid_html((out / "report.html").read_text(encoding="utf-8"))
