"""Issue N: bad training options and resumes, full disks and unwritable folders, interrupted `prepare`, PNG samples.

Every failure is one line on stderr with exit code 2 naming the path or option, and leaves no file that a later
command would trust: outputs are written under temporary names and renamed (`medvol.io.files.atomic_path`,
`atomic_folder`), `prepare` publishes its datalist last."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medvol.cli import main
from medvol.data.phantoms import write_phantom_dataset
from medvol.io import files
from medvol.runs import RunRecord

TRAIN = ["--bundle", "cgan", "--device", "cpu", "--precision", "fp32", "--evaluate-every", "0", "--width", "4"]


def _one_line(capsys) -> str:
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1, error
    return error[0]


def _class_folders(root: Path, classes: str, per_class: int = 4) -> Path:
    rng = np.random.default_rng(len(classes))
    for name in classes:
        (root / name).mkdir(parents=True)
        for index in range(per_class):
            Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(root / name / f"{name}{index}.png")
    return root


@pytest.fixture(scope="module")
def run2d(tmp_path_factory) -> Path:
    """A 2-class 2D cgan run of one iteration at 16x16 on prepared PNG class folders."""
    root = tmp_path_factory.mktemp("run2d")
    raw = _class_folders(root / "raw", "ab")
    assert main(["prepare", str(raw), "--out", str(root / "data"), "--size", "16,16"]) == 0
    assert main(["train", *TRAIN, "--data", str(root / "data"), "--out", str(root / "run"), "--iterations", "1"]) == 0
    return root / "run"


@pytest.mark.parametrize("pair,problem", [
    ("nosuchkey=3", "neither DCGANGenerator nor DCGANDiscriminator takes 'nosuchkey'"),
    ("critic.nosuch=1", "unexpected keyword argument 'nosuch'"),
])
def test_a_network_option_no_network_takes_is_one_line(pair, problem, tmp_path, capsys):
    raw = write_phantom_dataset(tmp_path / "raw", spatial_dims=2, size=(16, 16), n_per_class=2, seed=3)
    run_dir = tmp_path / "run"
    assert main(["train", *TRAIN, "--data", str(raw), "--out", str(run_dir), "--iterations", "1",
                 "--network", pair]) == 2
    line = _one_line(capsys)
    assert line.startswith(f"medvol train: error: --network: {pair}: ") and problem in line, line
    assert not (run_dir / "checkpoints").exists()


def test_resuming_on_data_with_another_class_count_is_one_line(run2d, tmp_path, capsys):
    three = tmp_path / "three"
    assert main(["prepare", str(_class_folders(tmp_path / "raw", "abc")), "--out", str(three), "--size", "16,16"]) == 0
    capsys.readouterr()
    assert main(["train", *TRAIN, "--data", str(three), "--out", str(run2d), "--iterations", "2"]) == 2
    line = _one_line(capsys)
    assert f"{run2d}: holds a cgan run trained on 2 classes ['a', 'b'], but {three / 'datalist.json'} has 3 " \
           "['a', 'b', 'c']" in line, line
    assert json.loads((run2d / "checkpoints" / "latest.json").read_text())["iteration"] == 1


def _full_disk(monkeypatch, module, name: str) -> None:
    """`module.name(..., path)` writes a few bytes to its path and fails as a full disk does (write() names no file)."""
    def full(*args, **kwargs):
        target = next(Path(a) for a in (*args, *kwargs.values()) if isinstance(a, (str, Path)) and "." in str(a))
        target.write_bytes(b"\x1f")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(module, name, full)


def _full_disk_for_atomic_writes(monkeypatch) -> None:
    """`files.atomic_write` writes one byte of its file and fails as a full disk does."""
    real_atomic_write = files.atomic_write

    def full(path, write):
        def fail(stream):
            stream.write(b"{")
            raise OSError(errno.ENOSPC, "No space left on device")

        real_atomic_write(path, fail)

    monkeypatch.setattr(files, "atomic_write", full)


def _leftovers(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.name.startswith(files.TEMP_PREFIX))


@pytest.mark.parametrize("fmt", ["nifti", "png"])
def test_sample_on_a_full_disk_is_one_line_and_leaves_no_file(fmt, run2d, tmp_path, capsys, monkeypatch):
    if fmt == "nifti":
        _full_disk(monkeypatch, nib, "save")
    else:
        _full_disk(monkeypatch, Image.Image, "save")
    out = tmp_path / "synthetic"
    assert main(["sample", str(run2d), "--n", "2", "--format", fmt, "--out", str(out)]) == 2
    line = _one_line(capsys)
    assert "No space left on device" in line and f"{tmp_path}/" in line, line
    assert not out.exists() and not _leftovers(tmp_path), list(tmp_path.rglob("*"))


def test_evaluate_refuses_an_empty_or_unreadable_sample(run2d, tmp_path, capsys):
    real = json.loads((run2d / "run.json").read_text())["datalist"]
    out = tmp_path / "synthetic"
    assert main(["sample", str(run2d), "--n", "4", "--out", str(out)]) == 0
    (out / "datalist.json").unlink()  # a plain folder of files, as another tool or an interrupted copy leaves it
    empty = sorted(out.glob("*.nii.gz"))[0]
    empty.write_bytes(b"")
    capsys.readouterr()
    assert main(["evaluate", "--real", real, "--synthetic", str(out), "--out", str(tmp_path / "evaluation")]) == 2
    line = _one_line(capsys)
    assert str(empty) in line and "1 of 8 image files" in line, line


@pytest.mark.parametrize("command", ["prepare", "train", "sample", "convert", "evaluate"])
def test_an_output_folder_under_a_file_is_one_line_naming_it(command, run2d, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    out = blocker / "out"
    data = run2d.parent / "data"
    argv = {
        "prepare": ["prepare", str(run2d.parent / "raw"), "--out", str(out)],
        "train": ["train", *TRAIN, "--data", str(data), "--out", str(out), "--iterations", "1"],
        "sample": ["sample", str(run2d), "--n", "1", "--out", str(out)],
        "convert": ["convert", str(run2d.parent / "raw" / "a" / "a0.png"), str(out / "a0.nii.gz")],
        "evaluate": ["evaluate", "--real", str(data), "--synthetic", str(run2d.parent / "raw"), "--out", str(out)],
    }[command]
    assert main(argv) == 2
    line = _one_line(capsys)
    assert line.startswith(f"medvol {command}: error: {blocker}") and "choose another output folder" in line or \
        line.startswith(f"medvol {command}: error: {out}"), line


@pytest.mark.parametrize("command", ["prepare", "convert", "train"])
def test_a_full_disk_is_one_line_and_leaves_no_partial_file(command, run2d, tmp_path, capsys, monkeypatch):
    _full_disk_for_atomic_writes(monkeypatch)  # every JSON and checkpoint medvol writes
    _full_disk(monkeypatch, nib, "save")
    out = tmp_path / "out"
    argv = {
        "prepare": ["prepare", str(run2d.parent / "raw"), "--out", str(out)],
        "convert": ["convert", str(run2d.parent / "raw" / "a" / "a0.png"), str(out / "a0.nii.gz")],
        "train": ["train", *TRAIN, "--data", str(run2d.parent / "data"), "--out", str(out), "--iterations", "1"],
    }[command]
    assert main(argv) == 2
    line = _one_line(capsys)
    assert f"medvol {command}: error: {out}/" in line and "No space left on device" in line, line
    if command == "prepare":  # the datalist is written under a pending name: the line names the file the user knows
        assert f"{out}/datalist.json" in line, line
    assert not list(out.rglob("datalist.json")) and not list(out.rglob("*.nii.gz")), list(out.rglob("*"))
    assert not list(out.rglob("checkpoint_*.pt")) and not _leftovers(tmp_path)


@pytest.mark.parametrize("interrupted", ["write_preview", "write_report"])
def test_prepare_interrupted_before_report_and_preview_leaves_no_new_datalist(interrupted, run2d, tmp_path,
                                                                              monkeypatch):
    from medvol.commands import prepare
    from medvol.io import datalist as datalists

    out = tmp_path / "prepared"
    raw = run2d.parent / "raw"
    assert main(["prepare", str(raw), "--out", str(out), "--seed", "0"]) == 0
    first = {name: (out / name).read_bytes() for name in ("datalist.json", "report.json", "preview.png")}

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare if interrupted == "write_preview" else datalists, interrupted, interrupt)
    assert main(["prepare", str(raw), "--out", str(out), "--seed", "1"]) == 130
    # the folder holds no datalist of the second run next to the first run's report and preview
    datalist = out / "datalist.json"
    assert not datalist.exists() or datalist.read_bytes() == first["datalist.json"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    monkeypatch.undo()
    assert main(["prepare", str(raw), "--out", str(out), "--seed", "1"]) == 0
    assert json.loads(datalist.read_text())["seed"] == 1 and (out / "preview.png").is_file()


def test_png_samples_of_a_2d_run_read_back_as_the_nifti_samples(run2d, tmp_path, capsys):
    from medvol.evaluation.data import load_real, load_synthetic

    for fmt in ("png", "nifti"):
        assert main(["sample", str(run2d), "--n", "3", "--format", fmt, "--out", str(tmp_path / fmt)]) == 0
    pictures = sorted((tmp_path / "png").glob("*.png"))
    assert len(pictures) == 6 and json.loads((tmp_path / "png" / "datalist.json").read_text())["png_bit_depth"] == 8
    with Image.open(pictures[0]) as picture:
        assert picture.mode == "L" and "SYNTHETIC" in picture.text["Description"]
    record = json.loads((run2d / "run.json").read_text())
    real = load_real(record["datalist"], tmp_path / "cache", progress=False)
    loaded = {fmt: load_synthetic(tmp_path / fmt, real, tmp_path / "cache", progress=False).images
              for fmt in ("png", "nifti")}
    np.testing.assert_array_equal(loaded["png"].labels, loaded["nifti"].labels)
    # the generator's output both ways, up to the PNG's rounding to whole source units (half a unit at most)
    window = record["intensity"]["window"]
    unit = 2 / (window[1] - window[0])
    difference = (loaded["png"].images - loaded["nifti"].images).abs()
    assert float(difference.max()) <= unit / 2 + 1e-5, float(difference.max())
    assert float(loaded["png"].images.std()) > 0


def test_png_samples_of_a_3d_run_are_refused_in_one_line(tmp_path, capsys):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    from medvol.sampling import write_samples
    from medvol.errors import MedvolInputError

    with pytest.raises(MedvolInputError, match="png is for 2D runs; this run is 3D"):
        write_samples(np.zeros((1, 1, 4, 4, 4), np.float32), [None],
                      RunRecord(family="gan", spatial_dims=3, image_size=[4, 4, 4]), tmp_path / "out", "png",
                      {"run": str(run_dir), "checkpoint": str(run_dir / "checkpoints" / "c.pt"), "seed": 0})
    assert not (tmp_path / "out").exists()


def test_a_read_only_output_folder_is_one_line(run2d, tmp_path, capsys):
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("chmod does not stop this user (root) from writing; the output-folder-under-a-file test "
                        "covers unwritable folders for every user")
        assert main(["sample", str(run2d), "--n", "1", "--out", str(folder / "out")]) == 2
        line = _one_line(capsys)
        assert str(folder) in line and "Permission denied" in line, line
    finally:
        folder.chmod(0o700)


@pytest.mark.parametrize("window_range,bit_depth,mode", [((0.0, 200.0), 8, "L"), ((0.0, 4000.0), 16, "I;16")])
def test_png_bit_depth_follows_the_source_range(window_range, bit_depth, mode, tmp_path):
    from medvol.sampling import write_samples

    record = RunRecord(family="gan", spatial_dims=2, image_size=[8, 8], intensity={
        "window": list(window_range), "window_range": list(window_range), "output_range": [-1.0, 1.0]})
    values = np.linspace(0, window_range[1], 64, dtype=np.float32).reshape(1, 1, 8, 8)
    provenance = {"run": str(tmp_path / "run"), "checkpoint": str(tmp_path / "run" / "c.pt"), "seed": 0}
    document = write_samples(values, [None], record, tmp_path / "out", "png", provenance)
    assert document["png_bit_depth"] == bit_depth
    with Image.open(document["training"][0]["image"]) as picture:
        assert picture.mode == mode
        stored = np.asarray(picture)
    # the file's first row is the top of the picture (highest y): medvol's [x, y] is its transpose, flipped
    np.testing.assert_array_equal(stored, np.rint(values[0, 0])[:, ::-1].T.astype(stored.dtype))


def test_png_samples_of_ct_hounsfield_units_are_refused_in_one_line(tmp_path):
    from medvol.errors import MedvolInputError
    from medvol.sampling import write_samples

    record = RunRecord(family="gan", spatial_dims=2, image_size=[8, 8], intensity={
        "window": [-1024.0, 3071.0], "window_range": [-1024.0, 3071.0], "output_range": [-1.0, 1.0]})
    provenance = {"run": str(tmp_path / "run"), "checkpoint": str(tmp_path / "run" / "c.pt"), "seed": 0}
    with pytest.raises(MedvolInputError, match="source intensities reach -1024: write nifti or dicom"):
        write_samples(np.zeros((1, 1, 8, 8), np.float32), [None], record, tmp_path / "out", "png", provenance)
    assert not (tmp_path / "out").exists() and not _leftovers(tmp_path)


def test_evaluate_on_a_full_disk_is_one_line_and_leaves_no_metrics_or_report(tmp_path, capsys, monkeypatch):
    data = tmp_path / "data"
    assert main(["prepare", "phantoms", "--out", str(data), "--mode", "slice", "--size", "16,16"]) == 0
    held_out = tmp_path / "held_out"  # the validation split, which evaluate does not use, as a synthetic set
    for entry in json.loads((data / "datalist.json").read_text())["validation"]:
        (held_out / entry["label_name"]).mkdir(parents=True, exist_ok=True)
        Path(held_out / entry["label_name"] / Path(entry["image"]).name).write_bytes(Path(entry["image"]).read_bytes())
    capsys.readouterr()
    _full_disk_for_atomic_writes(monkeypatch)
    out = tmp_path / "evaluation"
    assert main(["evaluate", "--real", str(data), "--synthetic", str(held_out), "--out", str(out),
                 "--classifier-epochs", "20"]) == 2
    error = capsys.readouterr().err  # progress bars, then the one line
    line = error.strip().splitlines()[-1]
    assert "Traceback" not in error and line.startswith("medvol evaluate: error:"), error[-2000:]
    assert f"medvol evaluate: error: {out}/" in line and "No space left on device" in line, line
    assert not (out / "metrics.json").exists() and not (out / "report.html").exists() and not _leftovers(tmp_path)


def test_no_permission_is_one_line_naming_the_file(run2d, tmp_path, capsys, monkeypatch):
    def denied(image, filename, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(filename))

    monkeypatch.setattr(nib, "save", denied)  # what a read-only folder does for a user chmod binds (not root)
    out = tmp_path / "synthetic"
    assert main(["sample", str(run2d), "--n", "1", "--out", str(out)]) == 2
    line = _one_line(capsys)
    assert line.startswith(f"medvol sample: error: {out}/synthetic_0000_a.nii.gz: Permission denied: this user may "
                           "not use it"), line
    assert not out.exists() and not _leftovers(tmp_path)
