"""The bad-input corpus of medvol (issue N): build each faulty input in a temporary folder, run the `medvol` command on
it, record the exit code and the answer, and write docs/bad_input.md.

Usage: ``python scripts/bad_input_corpus.py [--out docs/bad_input.md] [--shared ../shared/data]``

Commands run in this process through `medvol.cli.main` (one import of torch and MONAI for the whole corpus; a case
takes well under a second except those that train, sample or evaluate on 16x16 phantoms). The answer is the last line
medvol wrote on stderr when the exit code is not 0; for exit code 0 it is the first warning, or the last line of
output. Full disks and Ctrl-C are injected (a writer raising ENOSPC, a KeyboardInterrupt between two writes); an
output folder under a regular file fails for every user, root included. Cases that need the real DICOM data in
``../shared/data`` are listed as skipped when it is absent.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import gzip
import io
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


class _CurrentStderr:
    """A stream that writes to whatever `sys.stderr` is now (so logging lines land in each case's capture)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


@dataclass
class Case:
    input: str
    command: str
    build: Callable[["Workspace"], list[str]]
    test: str
    patch: Callable[["Workspace"], contextlib.AbstractContextManager] | None = None
    shared: bool = False
    expect: str = ""  # exit code 0: the answer is the first line holding this text


CASES: list[Case] = []


def case(input: str, command: str, test: str = "", patch=None, shared: bool = False, expect: str = ""):
    def register(build):
        CASES.append(Case(input, command, build, test, patch, shared, expect))
        return build
    return register


class Workspace:
    """Temporary folder with the good material the bad inputs are made from (built once, on demand)."""

    def __init__(self, root: Path, shared: Path):
        self.root, self.shared = root, shared
        self._cache: dict[str, Path] = {}
        self.count = 0

    def folder(self, name: str) -> Path:
        self.count += 1
        path = self.root / f"{self.count:02d}_{name}"
        path.mkdir(parents=True)
        return path

    def once(self, key: str, make: Callable[[], Path]) -> Path:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def png_classes(self, folder: Path, classes: str = "ab", per_class: int = 4, size: int = 16) -> Path:
        from PIL import Image

        rng = np.random.default_rng(len(classes))
        for name in classes:
            (folder / name).mkdir(parents=True, exist_ok=True)
            for index in range(per_class):
                picture = rng.integers(0, 255, (size, size), dtype=np.uint8)
                Image.fromarray(picture).save(folder / name / f"{name}{index}.png")
        return folder

    def nifti(self, path: Path, affine=None, array=None) -> Path:
        import nibabel as nib

        rng = np.random.default_rng(sum(path.name.encode()))
        data = rng.integers(0, 1000, (20, 20, 20)).astype(np.int16) if array is None else array
        nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
        return path

    def singular(self, path: Path) -> Path:
        """A NIfTI whose sform (code 1) is all zero (nibabel refuses to build such an image directly)."""
        import nibabel as nib

        image = nib.Nifti1Image(np.random.default_rng(0).random((12, 12, 10)).astype(np.float32), np.eye(4))
        header = image.header
        header["srow_x"], header["srow_y"], header["srow_z"] = [[0, 0, 0, 0]] * 3
        header["sform_code"], header["qform_code"] = 1, 0
        nib.Nifti1Image(image.get_fdata(dtype=np.float32), None, header=header).to_filename(str(path))
        return path

    def prepared(self) -> Path:
        def make() -> Path:
            out = self.root / "good_prepared"
            run_medvol(["prepare", "phantoms", "--out", str(out), "--mode", "slice", "--size", "16,16"])
            return out
        return self.once("prepared", make)

    def run2d(self) -> Path:
        def make() -> Path:
            out = self.root / "good_run2d"
            run_medvol(["train", *TRAIN, "--data", str(self.prepared()), "--out", str(out), "--iterations", "2"])
            return out
        return self.once("run2d", make)

    def samples(self) -> Path:
        def make() -> Path:
            out = self.root / "good_samples"
            run_medvol(["sample", str(self.run2d()), "--n", "8", "--out", str(out)])
            return out
        return self.once("samples", make)

    def blocked(self, name: str) -> Path:
        """A path under a regular file: no user can create it."""
        blocker = self.folder(name) / "a_file"
        blocker.write_text("a file, not a folder")
        return blocker / "out"


TRAIN = ["--bundle", "cgan", "--device", "cpu", "--precision", "fp32", "--evaluate-every", "0", "--width", "4"]


def run_medvol(argv: list[str]) -> tuple[int, str, str]:
    """`medvol ARGV` in this process: (exit code, stdout, stderr); an uncaught exception is exit 1 with its
    traceback on stderr, as the console script would end."""
    from medvol.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as stop:  # argparse
            code = stop.code if isinstance(stop.code, int) else 2
        except BaseException:  # noqa: BLE001 - a traceback is an answer the corpus records
            traceback.print_exc()
            code = 1
    return int(code or 0), out.getvalue(), err.getvalue()


def full_disk(module, name: str):
    """`module.name` fails as a full disk does, after writing a byte to the file it was given."""
    def fail(*args, **kwargs):
        for value in (*args, *kwargs.values()):
            if isinstance(value, (str, Path)) and "." in Path(value).name:
                Path(value).write_bytes(b"\x1f")
                break
        raise OSError(errno.ENOSPC, "No space left on device")
    return mock.patch.object(module, name, fail)


def full_disk_json():
    from medvol.io import files

    real = files.atomic_write

    def fail(path, write):
        def partial(stream):
            stream.write(b"{")
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, partial)
    return mock.patch.object(files, "atomic_write", fail)


# ----------------------------------------------------------------------------------------------------------- inspect
@case("path that does not exist", "inspect", "tests/cli/test_inspect_convert.py::test_empty_folder_and_missing_path")
def _(w):
    return ["inspect", str(w.root / "no_such_file.nii.gz")]


@case("empty folder", "inspect", "tests/cli/test_inspect_convert.py::test_empty_folder_and_missing_path")
def _(w):
    return ["inspect", str(w.folder("empty"))]


@case("text file named .dcm", "inspect", "tests/cli/test_inspect_convert.py::test_text_file_named_dcm")
def _(w):
    path = w.folder("text_dcm") / "slice.dcm"
    path.write_text("this is not DICOM")
    return ["inspect", str(path)]


@case("NIfTI holding NaN voxels", "inspect", "tests/cli/test_inspect_convert.py::test_nifti_with_nans")
def _(w):
    array = np.ones((8, 8, 8), np.float32)
    array[0, 0, 0] = np.nan
    return ["inspect", str(w.nifti(w.folder("nan") / "nan.nii.gz", array=array))]


@case("NIfTI with 5 axes", "inspect", "tests/cli/test_inspect_convert.py::test_nifti_beyond_three_axes_is_reported")
def _(w):
    return ["inspect", str(w.nifti(w.folder("5d") / "five.nii.gz", array=np.zeros((4, 4, 4, 2, 2), np.float32)))]


@case("NIfTI with an all-zero (singular) affine", "inspect",
      "tests/cli/test_inspect_convert.py::test_nifti_with_a_singular_or_non_finite_affine")
def _(w):
    return ["inspect", str(w.singular(w.folder("singular") / "singular.nii.gz"))]


@case(".nii.gz whose gzip CRC fails", "inspect", "tests/cli/test_inspect_convert.py::test_nifti_with_a_failing_gzip_crc")
def _(w):
    return ["inspect", str(corrupt_gzip(w))]


def corrupt_gzip(w) -> Path:
    path = w.nifti(w.folder("crc") / "crc.nii.gz")
    data = bytearray(path.read_bytes())
    data[-8] ^= 0xFF  # the CRC-32 of the trailer
    path.write_bytes(bytes(data))
    return path


@case("1x1 PNG", "inspect", "tests/cli/test_inspect_convert.py::test_tiny_image_is_a_problem_in_inspect")
def _(w):
    from PIL import Image

    folder = w.folder("one_pixel")
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(folder / "dot.png")
    return ["inspect", str(folder / "dot.png")]


@case("grey JPEGs stored as RGB (40 files)", "inspect",
      "tests/cli/test_inspect_convert.py::test_grey_jpegs_stored_as_rgb_are_no_finding_and_findings_are_grouped",
      expect="series/images")
def _(w):
    from PIL import Image

    folder = w.folder("grey_rgb")
    for index in range(40):
        grey = np.random.default_rng(index).integers(0, 255, (16, 16), dtype=np.uint8)
        Image.fromarray(np.stack([grey] * 3, axis=-1)).save(folder / f"g{index}.jpg")
    return ["inspect", str(folder)]


@case("truncated DICOM slice", "inspect", "tests/cli/test_inspect_convert.py::test_truncated_dicom", shared=True)
def _(w):
    source = sorted((w.shared / "dicom" / "crop_series").glob("*/*.dcm"))[0]
    path = w.folder("truncated") / "slice.dcm"
    path.write_bytes(source.read_bytes()[:1000])
    return ["inspect", str(path)]


@case("DICOM series with one slice removed", "inspect",
      "tests/cli/test_inspect_convert.py::test_series_with_one_slice_removed", shared=True)
def _(w):
    source = sorted(p for p in (w.shared / "dicom" / "crop_series").iterdir() if p.is_dir())[0]
    folder = w.folder("gap") / "series"
    shutil.copytree(source, folder)
    sorted(folder.glob("*.dcm"), key=lambda p: int(p.stem))[5].unlink()
    return ["inspect", str(folder)]


@case("two DICOM series mixed in one folder", "convert",
      "tests/cli/test_inspect_convert.py::test_two_series_mixed_in_one_folder", shared=True)
def _(w):
    folder = w.folder("mixed") / "mixed"
    folder.mkdir()
    for series in sorted(p for p in (w.shared / "dicom" / "crop_series").iterdir() if p.is_dir())[:2]:
        for path in series.glob("*.dcm"):
            shutil.copy(path, folder / f"{series.name}_{path.name}")
    return ["convert", str(folder), str(folder.parent / "out.nii.gz")]


@case("DICOM series with a truncated slice inside", "prepare",
      "tests/cli/test_prepare.py::test_a_truncated_slice_inside_a_series_is_named", shared=True)
def _(w):
    source = sorted(p for p in (w.shared / "dicom" / "crop_series").iterdir() if p.is_dir())[0]
    folder = w.folder("series_truncated")
    shutil.copytree(source, folder / "series")
    victim = sorted((folder / "series").glob("*.dcm"), key=lambda p: int(p.stem))[10]
    victim.write_bytes(victim.read_bytes()[:600])
    return ["prepare", str(folder), "--out", str(folder.parent / f"{folder.name}_out")]


# ----------------------------------------------------------------------------------------------------------- convert
@case("output name without .nii/.nii.gz", "convert", "tests/cli/test_inspect_convert.py::test_convert_bad_suffix_and_image")
def _(w):
    return ["convert", str(w.nifti(w.folder("suffix") / "in.nii.gz")), str(w.root / "out.png")]


@case("input that does not exist", "convert")
def _(w):
    return ["convert", str(w.root / "missing.nii.gz"), str(w.root / "out.nii.gz")]


@case("--series given for a NIfTI input", "convert")
def _(w):
    return ["convert", str(w.nifti(w.folder("series_nifti") / "in.nii.gz")), str(w.root / "o.nii.gz"), "--series", "1.2.3"]


@case("NIfTI with an all-zero (singular) affine", "convert",
      "tests/cli/test_inspect_convert.py::test_nifti_with_a_singular_or_non_finite_affine")
def _(w):
    folder = w.folder("convert_singular")
    return ["convert", str(w.singular(folder / "singular.nii.gz")), str(folder / "out.nii.gz")]


@case("output folder under a regular file", "convert",
      "tests/cli/test_writes_and_runs.py::test_an_output_folder_under_a_file_is_one_line_naming_it")
def _(w):
    return ["convert", str(w.nifti(w.folder("convert_in") / "in.nii.gz")), str(w.blocked("convert") / "x.nii.gz")]


@case("full disk (ENOSPC) while writing", "convert",
      "tests/cli/test_writes_and_runs.py::test_a_full_disk_is_one_line_and_leaves_no_partial_file",
      patch=lambda w: full_disk(__import__("nibabel"), "save"))
def _(w):
    folder = w.folder("convert_full")
    return ["convert", str(w.nifti(folder / "in.nii.gz")), str(folder / "out" / "x.nii.gz")]


# ----------------------------------------------------------------------------------------------------------- prepare
@case("SOURCE that does not exist", "prepare", "tests/cli/test_prepare.py::test_bad_input_exits_2_with_one_line")
def _(w):
    return ["prepare", str(w.root / "nothing_here"), "--out", str(w.root / "p_missing")]


@case("--out is an existing file", "prepare")
def _(w):
    folder = w.folder("out_file")
    (folder / "taken").write_text("x")
    return ["prepare", str(w.png_classes(folder / "raw")), "--out", str(folder / "taken")]


@case("empty source folder", "prepare", "tests/cli/test_prepare.py::test_bad_input_exits_2_with_one_line")
def _(w):
    folder = w.folder("empty_source")
    (folder / "src").mkdir()
    return ["prepare", str(folder / "src"), "--out", str(folder / "out")]


@case("--labels CSV that does not exist", "prepare")
def _(w):
    folder = w.folder("no_csv")
    return ["prepare", str(w.png_classes(folder / "raw")), "--out", str(folder / "out"), "--labels", str(folder / "x.csv")]


@case("CSV whose id column matches no image (image,diagnosis)", "prepare",
      "tests/cli/test_prepare.py::test_a_csv_whose_id_column_holds_something_else")
def _(w):
    folder = w.folder("csv_ids")
    raw = w.png_classes(folder / "raw", "a", per_class=6)
    flat = folder / "flat"
    flat.mkdir()
    for path in sorted((raw / "a").glob("*.png")):
        shutil.copy(path, flat / path.name)
    (folder / "labels.csv").write_text("image,diagnosis\n" + "".join(f"{i:03d},{i % 2}\n" for i in range(6)))
    return ["prepare", str(flat), "--out", str(folder / "out"), "--labels", str(folder / "labels.csv")]


@case("CSV that labels only some images", "prepare",
      "tests/cli/test_prepare.py::test_patient_diagnosis_csv_that_labels_few_images_exits_2_with_counts")
def _(w):
    folder = w.folder("csv_few")
    flat = folder / "flat"
    w.png_classes(folder / "raw", "a", per_class=6)
    shutil.copytree(folder / "raw" / "a", flat)
    (folder / "labels.csv").write_text("id,label\na0,x\na1,y\n")
    return ["prepare", str(flat), "--out", str(folder / "out"), "--labels", str(folder / "labels.csv")]


@case("CSV with an ambiguous header", "prepare", "tests/cli/test_prepare.py::test_ambiguous_header_exits_2_naming_the_columns")
def _(w):
    folder = w.folder("csv_ambiguous")
    w.png_classes(folder / "raw", "a", per_class=4)
    shutil.copytree(folder / "raw" / "a", folder / "flat")
    (folder / "labels.csv").write_text("name,file,group,kind\n" + "".join(f"a{i},a{i}.png,g{i % 2},k{i % 2}\n" for i in range(4)))
    return ["prepare", str(folder / "flat"), "--out", str(folder / "out"), "--labels", str(folder / "labels.csv")]


@case("--mode volume on 2D images", "prepare", "tests/cli/test_prepare.py::test_volume_mode_on_2d_images_exits_2")
def _(w):
    folder = w.folder("volume_2d")
    return ["prepare", str(w.png_classes(folder / "raw")), "--out", str(folder / "out"), "--mode", "volume"]


@case("--size with 3 values for 2D images", "prepare", "tests/cli/test_prepare.py::test_a_volume_grid_for_2d_images_exits_2")
def _(w):
    folder = w.folder("size3_2d")
    return ["prepare", str(w.png_classes(folder / "raw")), "--out", str(folder / "out"), "--size", "16,16,16"]


@case("--size 100000,100000", "prepare", "tests/cli/test_prepare.py::test_a_size_no_machine_can_hold_is_refused_up_front")
def _(w):
    folder = w.folder("huge")
    return ["prepare", str(w.png_classes(folder / "raw")), "--out", str(folder / "out"), "--size", "100000,100000"]


@case("--spacing with a negative value", "prepare", "tests/cli/test_prepare.py::test_bad_flags_exit_2_before_any_work")
def _(w):
    folder = w.folder("spacing")
    return ["prepare", str(w.png_classes(folder / "raw")), "--out", str(folder / "out"), "--spacing", "1,-1"]


@case("--split that does not sum to 1", "prepare", "tests/cli/test_prepare.py::test_bad_flags_exit_2_before_any_work")
def _(w):
    folder = w.folder("split")
    return ["prepare", str(w.png_classes(folder / "raw")), "--out", str(folder / "out"), "--split", "0.5,0.2"]


@case("--seed -1", "prepare", "tests/cli/test_prepare.py::test_bad_flags_exit_2_before_any_work")
def _(w):
    folder = w.folder("seed")
    return ["prepare", str(w.png_classes(folder / "raw")), "--out", str(folder / "out"), "--seed", "-1"]


@case("--labels for a built-in source", "prepare")
def _(w):
    folder = w.folder("builtin_labels")
    (folder / "l.csv").write_text("id,label\n")
    return ["prepare", "phantoms", "--out", str(folder / "out"), "--labels", str(folder / "l.csv")]


@case("a class with a single image", "prepare", "tests/cli/test_prepare.py::test_a_class_too_small_for_the_splits_gets_a_line")
def _(w):
    folder = w.folder("single")
    raw = w.png_classes(folder / "raw", "ab", per_class=6)
    for path in sorted((raw / "b").glob("*.png"))[1:]:
        path.unlink()
    return ["prepare", str(raw), "--out", str(folder / "out")]


@case("byte-identical images under two classes", "prepare",
      "tests/cli/test_prepare.py::test_identical_images_of_different_subjects_never_span_splits", expect="identical")
def _(w):
    folder = w.folder("duplicates")
    raw = w.png_classes(folder / "raw", "ab", per_class=6)
    shutil.copy(raw / "a" / "a0.png", raw / "b" / "copy_of_a0.png")
    return ["prepare", str(raw), "--out", str(folder / "out")]


@case("byte-identical images under two classes, --duplicates error", "prepare",
      "tests/cli/test_prepare.py::test_duplicates_drop_and_error")
def _(w):
    folder = w.folder("duplicates_error")
    raw = w.png_classes(folder / "raw", "ab", per_class=6)
    shutil.copy(raw / "a" / "a0.png", raw / "b" / "copy_of_a0.png")
    return ["prepare", str(raw), "--out", str(folder / "out"), "--duplicates", "error"]


@case("prepare SOURCE --out SOURCE/prep, run twice (8 images in SOURCE)", "prepare",
      "tests/cli/test_prepare.py::test_earlier_outputs_inside_the_source_are_left_out_and_announced", expect="prepared")
def _(w):
    folder = w.folder("inside")
    raw = w.png_classes(folder / "raw")
    run_medvol(["prepare", str(raw), "--out", str(raw / "prep")])
    return ["prepare", str(raw), "--out", str(raw / "prep")]


@case(".nii.gz whose gzip CRC fails, among good volumes", "prepare",
      "tests/cli/test_prepare.py::test_damaged_gzip_and_singular_affine_volumes_are_skipped_with_the_reason",
      expect="skipped:")
def _(w):
    path = corrupt_gzip(w)
    for index in range(3):
        w.nifti(path.parent / f"good{index}.nii.gz")
    return ["prepare", str(path.parent), "--out", str(path.parent.parent / "crc_out")]


@case("NIfTI with a singular affine, among good volumes", "prepare",
      "tests/cli/test_prepare.py::test_damaged_gzip_and_singular_affine_volumes_are_skipped_with_the_reason",
      expect="skipped:")
def _(w):
    folder = w.folder("prep_singular")
    w.singular(folder / "singular.nii.gz")
    for index in range(3):
        w.nifti(folder / f"good{index}.nii.gz")
    return ["prepare", str(folder), "--out", str(folder.parent / "singular_out")]


@case("1x1 PNG in a class folder", "prepare", "tests/cli/test_prepare.py::test_a_one_pixel_png_is_not_a_training_image",
      expect="skipped:")
def _(w):
    from PIL import Image

    folder = w.folder("prep_dot")
    raw = w.png_classes(folder / "raw")
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(raw / "a" / "dot.png")
    return ["prepare", str(raw), "--out", str(folder / "out")]


@case("output folder under a regular file", "prepare",
      "tests/cli/test_writes_and_runs.py::test_an_output_folder_under_a_file_is_one_line_naming_it")
def _(w):
    return ["prepare", str(w.png_classes(w.folder("prep_blocked_raw"))), "--out", str(w.blocked("prepare"))]


@case("full disk (ENOSPC) while writing", "prepare",
      "tests/cli/test_writes_and_runs.py::test_a_full_disk_is_one_line_and_leaves_no_partial_file",
      patch=lambda w: full_disk_json())
def _(w):
    folder = w.folder("prep_full")
    return ["prepare", str(w.png_classes(folder / "raw")), "--out", str(folder / "out")]


@case("Ctrl-C after the datalist, before report.json and preview.png (rerun over an earlier run)", "prepare",
      "tests/cli/test_writes_and_runs.py::test_prepare_interrupted_before_report_and_preview_leaves_no_new_datalist",
      patch=lambda w: mock.patch("medvol.commands.prepare.write_preview", side_effect=KeyboardInterrupt))
def _(w):
    folder = w.folder("prep_ctrl_c")
    raw = w.png_classes(folder / "raw")
    run_medvol(["prepare", str(raw), "--out", str(folder / "out")])  # an earlier run's outputs are there
    return ["prepare", str(raw), "--out", str(folder / "out"), "--seed", "1"]


# ------------------------------------------------------------------------------------------------------------- train
@case("unknown bundle", "train")
def _(w):
    return ["train", "--bundle", "nosuchgan", "--data", str(w.prepared()), "--out", str(w.root / "t_bundle")]


@case("--data that does not exist", "train")
def _(w):
    return ["train", *TRAIN, "--data", str(w.root / "no_data"), "--out", str(w.root / "t_nodata")]


@case("--iterations 0", "train")
def _(w):
    return ["train", *TRAIN, "--data", str(w.prepared()), "--out", str(w.root / "t_iter"), "--iterations", "0"]


@case("--max-memory nan", "train", "tests/cli/test_train_sample_demo.py::test_non_finite_numbers_are_refused_before_any_work")
def _(w):
    return ["train", *TRAIN, "--data", str(w.prepared()), "--out", str(w.root / "t_mem"), "--max-memory", "nan"]


@case("--network nosuchkey=3", "train", "tests/cli/test_writes_and_runs.py::test_a_network_option_no_network_takes_is_one_line")
def _(w):
    return ["train", *TRAIN, "--data", str(w.prepared()), "--out", str(w.root / "t_net"), "--network", "nosuchkey=3"]


@case("--network latent_size (no value)", "train", "tests/cli/test_train_sample_demo.py::test_bad_width_or_network_option_is_one_line")
def _(w):
    return ["train", *TRAIN, "--data", str(w.prepared()), "--out", str(w.root / "t_net2"), "--network", "latent_size"]


@case("--objective penalty_weight=5 for cgan", "train",
      "tests/cli/test_train_sample_demo.py::test_bad_width_or_network_option_is_one_line")
def _(w):
    return ["train", *TRAIN, "--data", str(w.prepared()), "--out", str(w.root / "t_obj"), "--objective", "penalty_weight=5"]


@case("--image-size 100000,100000", "train")
def _(w):
    return ["train", *TRAIN, "--data", str(w.prepared()), "--out", str(w.root / "t_huge"), "--image-size", "100000,100000"]


@case("conditional family on data without labels", "train",
      "tests/cli/test_train_console.py::test_a_conditional_family_on_data_without_labels_is_refused_before_any_work")
def _(w):
    folder = w.folder("unlabelled")
    raw = folder / "raw"
    w.png_classes(folder / "tmp", "a", per_class=6)
    shutil.copytree(folder / "tmp" / "a", raw)
    run_medvol(["prepare", str(raw), "--out", str(folder / "data")])
    return ["train", *TRAIN, "--data", str(folder / "data"), "--out", str(folder / "run")]


@case("datalist without a training split, for cgan", "train",
      "tests/cli/test_prepare.py::test_cgan_on_a_datalist_without_training_split_says_so")
def _(w):
    folder = w.folder("no_training")
    document = json.loads((w.prepared() / "datalist.json").read_text())
    document["training"], document["numTraining"] = [], 0
    (folder / "data").mkdir()
    (folder / "data" / "datalist.json").write_text(json.dumps(document))
    return ["train", *TRAIN, "--data", str(folder / "data"), "--out", str(folder / "run")]


@case("resuming a run on data with another class count", "train",
      "tests/cli/test_writes_and_runs.py::test_resuming_on_data_with_another_class_count_is_one_line")
def _(w):
    folder = w.folder("resume_classes")
    run_medvol(["prepare", str(w.png_classes(folder / "raw2", "ab")), "--out", str(folder / "two"), "--size", "16,16"])
    run_medvol(["prepare", str(w.png_classes(folder / "raw3", "abc")), "--out", str(folder / "three"), "--size", "16,16"])
    run_medvol(["train", *TRAIN, "--data", str(folder / "two"), "--out", str(folder / "run"), "--iterations", "1"])
    return ["train", *TRAIN, "--data", str(folder / "three"), "--out", str(folder / "run"), "--iterations", "2"]


@case("resuming a run at another --image-size", "train")
def _(w):
    folder = w.folder("resume_size")
    shutil.copytree(w.run2d(), folder / "run")
    return ["train", *TRAIN, "--data", str(w.prepared()), "--out", str(folder / "run"), "--iterations", "3",
            "--image-size", "32,32"]


@case("output folder under a regular file", "train",
      "tests/cli/test_writes_and_runs.py::test_an_output_folder_under_a_file_is_one_line_naming_it")
def _(w):
    return ["train", *TRAIN, "--data", str(w.prepared()), "--out", str(w.blocked("train")), "--iterations", "1"]


@case("full disk (ENOSPC) while writing", "train",
      "tests/cli/test_writes_and_runs.py::test_a_full_disk_is_one_line_and_leaves_no_partial_file",
      patch=lambda w: full_disk_json())
def _(w):
    return ["train", *TRAIN, "--data", str(w.prepared()), "--out", str(w.folder("train_full") / "run"), "--iterations", "1"]


# ------------------------------------------------------------------------------------------------------------ sample
@case("RUN that is not a run folder", "sample")
def _(w):
    return ["sample", str(w.folder("not_a_run")), "--n", "2", "--out", str(w.root / "s_notrun")]


@case("--n 0", "sample")
def _(w):
    return ["sample", str(w.run2d()), "--n", "0", "--out", str(w.root / "s_n0")]


@case("--label that is not a class of the run", "sample")
def _(w):
    return ["sample", str(w.run2d()), "--n", "1", "--label", "tumour", "--out", str(w.root / "s_label")]


@case("--out folder that is not empty", "sample")
def _(w):
    folder = w.folder("s_full_folder")
    (folder / "keep.txt").write_text("x")
    return ["sample", str(w.run2d()), "--n", "1", "--out", str(folder)]


@case("damaged latest checkpoint", "sample", "tests/cli/test_train_sample_demo.py::test_sample_reports_a_missing_or_damaged_checkpoint_in_one_line")
def _(w):
    folder = w.folder("damaged") / "run"
    shutil.copytree(w.run2d(), folder)
    latest = json.loads((folder / "checkpoints" / "latest.json").read_text())["file"]
    (folder / "checkpoints" / latest).write_bytes(b"not a checkpoint")
    return ["sample", str(folder), "--n", "1", "--out", str(folder.parent / "out")]


@case("output folder under a regular file", "sample",
      "tests/cli/test_writes_and_runs.py::test_an_output_folder_under_a_file_is_one_line_naming_it")
def _(w):
    return ["sample", str(w.run2d()), "--n", "1", "--out", str(w.blocked("sample"))]


@case("full disk (ENOSPC) while writing", "sample",
      "tests/cli/test_writes_and_runs.py::test_sample_on_a_full_disk_is_one_line_and_leaves_no_file",
      patch=lambda w: full_disk(__import__("nibabel"), "save"))
def _(w):
    return ["sample", str(w.run2d()), "--n", "1", "--out", str(w.folder("sample_full") / "out")]


@case("--format png of a 2D run (a JPEG user's request)", "sample",
      "tests/cli/test_writes_and_runs.py::test_png_samples_of_a_2d_run_read_back_as_the_nifti_samples")
def _(w):
    return ["sample", str(w.run2d()), "--n", "1", "--format", "png", "--out", str(w.folder("sample_png") / "out")]


# ---------------------------------------------------------------------------------------------------------- evaluate
def _evaluate(w, synthetic: Path, name: str, *extra: str) -> list[str]:
    return ["evaluate", "--real", str(w.prepared()), "--synthetic", str(synthetic), "--out", str(w.root / name),
            "--classifier-epochs", "20", *extra]


@case("synthetic folder holding a 0-byte .nii.gz (left by a failed sample)", "evaluate",
      "tests/cli/test_writes_and_runs.py::test_evaluate_refuses_an_empty_or_unreadable_sample")
def _(w):
    folder = w.folder("zero_byte") / "synthetic"
    shutil.copytree(w.samples(), folder)
    (folder / "datalist.json").unlink()
    sorted(folder.glob("*.nii.gz"))[0].write_bytes(b"")
    return _evaluate(w, folder, "e_zero")


@case("--real datalist that does not exist", "evaluate", "tests/cli/test_evaluate.py::test_bad_input_exits_2_with_one_line")
def _(w):
    return ["evaluate", "--real", str(w.root / "none.json"), "--synthetic", str(w.samples()), "--out", str(w.root / "e_none")]


@case("synthetic labels the real data lacks", "evaluate", "tests/cli/test_evaluate.py::test_bad_input_exits_2_with_one_line")
def _(w):
    folder = w.folder("tumour") / "synthetic"
    for index, path in enumerate(sorted(w.samples().glob("*.nii.gz"))):
        name = ("normal", "tumour")[index % 2]
        (folder / name).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / name / path.name)
    return _evaluate(w, folder, "e_tumour")


@case("too few synthetic samples (3)", "evaluate", "tests/cli/test_evaluate.py::test_bad_input_exits_2_with_one_line")
def _(w):
    folder = w.folder("few") / "synthetic"
    folder.mkdir()
    for path in sorted(w.samples().glob("*.nii.gz"))[:3]:
        shutil.copy(path, folder / path.name)
    return _evaluate(w, folder, "e_few")


@case("--utility with unlabelled synthetic images", "evaluate", "tests/cli/test_evaluate.py::test_bad_input_exits_2_with_one_line")
def _(w):
    folder = w.folder("unlabelled_synthetic") / "synthetic"
    folder.mkdir()
    for path in sorted(w.samples().glob("*.nii.gz")):
        shutil.copy(path, folder / path.name)
    return _evaluate(w, folder, "e_unlabelled", "--utility")


@case("synthetic PNGs from another tool at 957x821 (real data at 16x16)", "evaluate", expect="synthetic files not at")
def _(w):
    from PIL import Image

    folder = w.folder("external") / "synthetic"
    rng = np.random.default_rng(5)
    for name in ("normal", "lesion"):
        (folder / name).mkdir(parents=True)
        for index in range(6):
            Image.fromarray(rng.integers(0, 255, (821, 957), dtype=np.uint8)).save(folder / name / f"{index}.png")
    return _evaluate(w, folder, "e_external")


@case("output folder under a regular file", "evaluate",
      "tests/cli/test_writes_and_runs.py::test_an_output_folder_under_a_file_is_one_line_naming_it")
def _(w):
    return ["evaluate", "--real", str(w.prepared()), "--synthetic", str(w.samples()), "--out", str(w.blocked("evaluate"))]


@case("samples of a 3-iteration run (pure noise): the report's verdict", "evaluate",
      "tests/evaluation/test_verdict.py::test_report_of_an_untrained_run_opens_with_not_realistic_and_held_out_real_images_do_not")
def _(w):
    return _evaluate(w, w.samples(), "e_noise", "--run", str(w.run2d()))


def answer(code: int, out: str, err: str, argv: list[str], expect: str = "") -> str:
    lines = [line.split("\r")[-1].strip() for line in err.splitlines()]
    lines = [line for line in lines if line]
    if code == 0 and expect:
        found = [line.strip() for line in (out + "\n" + err).splitlines() if expect in line]
        if found:
            return found[0]
    if code != 0:
        if "Traceback (most recent call last):" in err:
            return f"traceback ({len(err.splitlines())} lines): {lines[-1]}"
        return lines[-1] if lines else "(nothing on stderr)"
    if argv[0] == "evaluate":
        verdict_file = Path(argv[argv.index("--out") + 1]) / "metrics.json"
        if verdict_file.is_file():
            return "verdict: " + json.loads(verdict_file.read_text())["verdict"]["headline"]
    warnings = [line for line in lines if line.startswith("WARNING")]
    if warnings:
        return warnings[0]
    output = [line for line in out.splitlines() if line.strip()]
    return output[-1] if output else ""


def left_behind(argv: list[str]) -> str:
    """The files in the output folder of `argv` (``--out``, or the folder of convert's OUTPUT)."""
    folder = Path(argv[argv.index("--out") + 1]) if "--out" in argv else Path(argv[2]).parent
    if not folder.exists():
        return f"{folder.name}/ does not exist"
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    shown = ", ".join(files[:8]) + (f" and {len(files) - 8} more" if len(files) > 8 else "")
    return f"{folder.name}/ holds {shown}" if files else f"{folder.name}/ is empty"


def cell(text: str, root: Path) -> str:
    text = text.replace(str(root), "TMP").replace(str(ROOT), "REPO").replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= 600 else text[:600] + " ..."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "bad_input.md"))
    parser.add_argument("--shared", default=os.environ.get("MEDVOL_SHARED_DATA", str(ROOT.parent / "shared" / "data")))
    parser.add_argument("-k", help="only cases whose input or command contains this text")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    logging.basicConfig(stream=_CurrentStderr(), format="%(levelname)s %(name)s: %(message)s")
    import torch

    import medvol.engines.checkpoint  # noqa: F401 - binds the real atomic_write before a case patches it

    torch.set_num_threads(1)
    shared = Path(args.shared)
    rows, started_all = [], time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="medvol-bad-input-") as tmp:
        root = Path(tmp).resolve()
        workspace = Workspace(root, shared)
        for number, item in enumerate(CASES, 1):
            if args.k and args.k not in item.input + item.command:
                continue
            if item.shared and not shared.is_dir():
                rows.append((number, item, None, f"skipped: needs {shared}", "", 0.0))
                continue
            try:
                argv_case = item.build(workspace)
            except Exception as err:  # noqa: BLE001 - a broken case is reported, the corpus goes on
                rows.append((number, item, None, cell(f"case not built: {type(err).__name__}: {err}", root), "", 0.0))
                print(f"{number:3d} {item.command:8s} NOT BUILT: {err}", file=sys.__stdout__, flush=True)
                continue
            started = time.perf_counter()
            with item.patch(workspace) if item.patch else contextlib.nullcontext():
                code, out, err = run_medvol(argv_case)
            seconds = time.perf_counter() - started
            text = answer(code, out, err, argv_case, item.expect)
            if item.patch:  # an injected failure: say what it left where the outputs go
                text += f" [afterwards: {left_behind(argv_case)}]"
            rows.append((number, item, code, cell(text, root), cell("medvol " + " ".join(argv_case), root), seconds))
            print(f"{number:3d} {item.command:8s} exit {code} {seconds:5.1f} s  {item.input}: {text[:150]}",
                  file=sys.__stdout__, flush=True)
    total = time.perf_counter() - started_all
    tracebacks = sum(1 for r in rows if r[2] is not None and r[3].startswith("traceback"))
    header = [
        "# The bad-input corpus",
        "",
        "Every faulty input medvol has been tried with (issue N and earlier), the command, and the answer medvol gives "
        "now: the one line it prints on stderr with exit code 2, or, where the input is handled, the warning or the "
        "result (exit code 0). Generated by `python scripts/bad_input_corpus.py` (each input built in a temporary "
        "folder TMP, commands run through `medvol.cli.main`, full disks and Ctrl-C injected); do not edit by hand. "
        f"{len(rows)} cases, {tracebacks} tracebacks; {total:.0f} s on this machine. The test column names the test "
        "that guards the answer.",
        "",
        "| # | input | command | exit | answer | test |",
        "|---|---|---|---|---|---|",
    ]
    body = [f"| {number} | {cell(item.input, Path('/nonexistent'))} | `{command}` | "
            f"{'–' if code is None else code} | {text} | {item.test or '–'} |"
            for number, item, code, text, command, _ in rows]
    Path(args.out).write_text("\n".join(header + body) + "\n")
    print(f"wrote {args.out}: {len(rows)} cases in {total:.0f} s", file=sys.__stdout__)
    return 0


if __name__ == "__main__":
    sys.exit(main())
