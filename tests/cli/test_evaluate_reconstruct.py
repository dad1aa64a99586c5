"""`medvol evaluate --real DATALIST --reconstruct RUN`: a 3D and a 2D autoencoder run scored on the same held-out
volumes, and one error line (exit 2) for every misuse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from medvol.cli import main
from medvol.data.phantoms import write_phantom_dataset

TINY = ["--network", "channels=[8,16]", "--network", "latent_size=8", "--iterations", "3", "--evaluate-every", "0",
        "--device", "cpu", "--precision", "fp32"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("reconstruct")
    raw = write_phantom_dataset(root / "raw", spatial_dims=3, size=(16, 16, 12), n_per_class=12, seed=3)
    prepared, slices = root / "data", root / "slices"  # volumes, and the slices of the same grid for the 2D runs
    for out, mode in ((prepared, "volume"), (slices, "slice")):
        assert main(["prepare", str(raw), "--mode", mode, "--size", "16,16,12", "--fit", "crop_pad", "--out", str(out)]) == 0
    folders = {"data": prepared, "slices": slices}
    for name, extra in (("cae3d", []), ("cae2d", ["--spatial-dims", "2"]), ("vae3d", []),
                        ("cae2d_small", ["--spatial-dims", "2", "--image-size", "8,8"])):
        bundle = "vae" if name.startswith("vae") else "cae"
        data = slices if "2d" in name else prepared
        assert main(["train", "--bundle", bundle, "--data", str(data), "--out", str(root / name), *TINY, *extra]) == 0
        folders[name] = root / name
    assert main(["train", "--bundle", "dcgan", "--data", str(prepared), "--out", str(root / "dcgan"), "--iterations", "1",
                 "--evaluate-every", "0", "--device", "cpu", "--width", "4", "--precision", "fp32"]) == 0
    folders["dcgan"] = root / "dcgan"
    return folders


def test_2d_and_3d_runs_are_scored_on_the_same_volumes(runs, tmp_path, capsys):
    test_split = json.loads((runs["data"] / "datalist.json").read_text())["test"]
    documents = {}
    for name in ("cae3d", "cae2d", "vae3d"):
        out = tmp_path / name
        capsys.readouterr()
        assert main(["evaluate", "--real", str(runs["data"]), "--reconstruct", str(runs[name]), "--out", str(out),
                     "--device", "cpu"]) == 0
        printed = capsys.readouterr().out
        assert "PSNR" in printed and "SSIM" in printed and "metrics.json" in printed
        document = json.loads((out / "metrics.json").read_text())
        assert document["evaluation"] == "reconstruction" and document["inputs"]["split"] == "test"
        assert document["inputs"]["n"] == len(test_split) == len(document["ssim"]["values"])
        for key in ("psnr", "ssim", "mae"):
            assert document[key]["mean"] is not None and document[key]["sd"] is not None
        assert document["run"]["logged_iterations"] == 3 and document["run"]["training_seconds"] > 0
        assert document["parameters_total"] == sum(json.loads((runs[name] / "run.json").read_text())["parameters"].values())
        with Image.open(out / "reconstruction.png") as picture:
            assert picture.mode == "L" and picture.width > picture.height / 2  # rows of 3 input + 3 reconstruction views
        documents[name] = document
    assert "slice by slice" in documents["cae2d"]["inputs"]["images"]
    assert documents["cae2d"]["run"]["spatial_dims"] == 2 and documents["cae3d"]["run"]["spatial_dims"] == 3
    same_files = [[entry["path"] for entry in documents[name]["per_image"]] for name in documents]
    assert same_files[0] == same_files[1] == same_files[2]
    # the slice datalist of the same grid as --real: the same volumes, the same numbers
    assert main(["evaluate", "--real", str(runs["slices"]), "--reconstruct", str(runs["cae2d"]), "--out",
                 str(tmp_path / "on_slices"), "--device", "cpu"]) == 0
    on_slices = json.loads((tmp_path / "on_slices" / "metrics.json").read_text())
    assert on_slices["inputs"]["images"] == documents["cae2d"]["inputs"]["images"]
    for key in ("psnr", "ssim", "mae"):
        assert on_slices[key]["values"] == pytest.approx(documents["cae2d"][key]["values"], abs=1e-5)


BAD_INPUTS = {
    "a GAN run": (["--reconstruct", "{dcgan}"], ["dcgan run", "cae or vae"]),
    "with --utility": (["--reconstruct", "{cae3d}", "--utility"], ["--utility", "does not apply"]),
    "with --synthetic": (["--reconstruct", "{cae3d}", "--synthetic", "{data}"], ["--synthetic", "does not apply"]),
    "neither": ([], ["--synthetic", "--reconstruct RUN"]),
    "not a run": (["--reconstruct", "{data}"], ["not a medvol run folder"]),
    "2D run of another in-plane size": (["--reconstruct", "{cae2d_small}"], ["[16, 16]", "[8, 8]"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line(case, runs, tmp_path, capsys):
    arguments, words = BAD_INPUTS[case]
    arguments = [a.format(**{k: str(v) for k, v in runs.items()}) for a in arguments]
    capsys.readouterr()
    assert main(["evaluate", "--real", str(runs["data"]), *arguments, "--out", str(tmp_path / "out"), "--device", "cpu"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and error.startswith("medvol evaluate: error: "), error
    for word in words:
        assert word in error, (word, error)
    assert not (tmp_path / "out" / "metrics.json").exists()
