"""What `medvol train` shows and how it stops, run as a user runs it (a subprocess): a quiet console without
--verbose (medvol's own lines and one progress bar; no MONAI bundle or ignite INFO lines, no "Logging file is set to
False"), in one process and with --nproc 2 (2 gloo CPU processes, rank 0 alone talks); Ctrl-C (SIGINT) and SIGTERM
save the last completed iteration, say where in one line, exit 130 / 143, and the same command resumes from there;
a conditional family on data without labels is refused in one line before any work."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medvol.bundles import BUNDLES_DIR
from medvol.cli import main
from tests.bundles.test_bundles import prepare_phantoms
from tests.cli.test_train_sample_demo import tiny_bundle

REPO_ROOT = BUNDLES_DIR.parent
INTERRUPTED = re.compile(
    r"^medvol train: interrupted \((SIGINT|SIGTERM)\) at iteration (\d+); checkpoint saved to (\S+); "
    r"rerun the same command to resume$"
)
# what must never reach the console without --verbose
NOISE = ("Logging file is set to", " - INFO - ", "ignite", "input summary", "Epoch:", "Traceback", "ERROR", "UserWarning")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    return prepare_phantoms(tmp_path_factory.mktemp("data") / "phantoms2d", 2)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return tiny_bundle("cgan", tmp_path_factory.mktemp("bundle"))  # narrow networks, 16^2, statistics every iteration


def _command(bundle: Path, data: Path, run_dir: Path, iterations: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "medvol.cli", "train", "--bundle", str(bundle), "--data", str(data), "--out",
            str(run_dir), "--iterations", str(iterations), "--device", "cpu", "--precision", "fp32",
            "--checkpoint-every", "1", *extra]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def _run(command: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    # bytes, decoded without universal newlines: a progress bar redraws itself with carriage returns on one line
    result = subprocess.run(command, cwd=REPO_ROOT, env=_env(), capture_output=True, timeout=timeout)
    result.stdout, result.stderr = result.stdout.decode(), result.stderr.decode()
    return result


def _lines(result) -> list[str]:
    """Console lines (a progress bar redrawn with carriage returns is one line)."""
    return [line for line in (result.stdout + result.stderr).split("\n") if line.strip()]


def _interrupt(command: list[str], run_dir: Path, stop_signal: int, timeout: float = 300) -> tuple[int, str, str]:
    """Start `command`, send `stop_signal` once it has written a checkpoint, return (code, stdout, stderr)."""
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    pointer = run_dir / "checkpoints" / "latest.json"
    deadline = time.monotonic() + timeout
    while not pointer.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert process.poll() is None, [stream.decode()[-3000:] for stream in process.communicate()]
    process.send_signal(stop_signal)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError("training did not stop after the signal") from None
    return process.returncode, out.decode(), err.decode()


def _check_interrupted(code: int, out: str, err: str, stop_signal: int, run_dir: Path) -> int:
    """The one-line report of an interrupted run; returns the iteration it saved."""
    assert code == 128 + stop_signal, (code, out, err[-3000:])
    last = err.strip().splitlines()[-1].split("\r")[-1]
    match = INTERRUPTED.match(last)
    assert match, err[-3000:]
    assert match.group(1) == signal.Signals(stop_signal).name
    iteration, checkpoint = int(match.group(2)), Path(match.group(3))
    assert checkpoint.is_file() and checkpoint.name == f"checkpoint_{iteration:08d}.pt"
    assert json.loads((run_dir / "checkpoints" / "latest.json").read_text())["iteration"] == iteration >= 1
    assert not any(noise in out + err for noise in NOISE), err[-3000:]
    assert not list(run_dir.glob(".stop-requested")) and not (run_dir / "models").exists()  # no final export
    return iteration


@pytest.mark.slow
@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_saves_the_last_iteration_and_the_same_command_resumes_quietly(stop_signal, prepared, bundle, tmp_path):
    run_dir = tmp_path / "run"
    code, out, err = _interrupt(_command(bundle, prepared, run_dir, 1000), run_dir, stop_signal)
    iteration = _check_interrupted(code, out, err, stop_signal, run_dir)
    if stop_signal == signal.SIGTERM:
        return
    resumed = _run(_command(bundle, prepared, run_dir, iteration + 2))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {run_dir / 'checkpoints' / f'checkpoint_{iteration:08d}.pt'}" in resumed.stdout
    assert json.loads((run_dir / "checkpoints" / "latest.json").read_text())["iteration"] == iteration + 2
    # the console: "resumed from" and "precision" lines, one progress bar, the summary; statistics only with --verbose
    lines = _lines(resumed)
    assert len(lines) <= 5, "\n".join(lines)
    assert sum("precision: fp32 (requested)" in line for line in lines) == 1, lines
    assert sum("train:" in line and "step" in line for line in lines) == 1, lines
    assert not any(noise in resumed.stdout + resumed.stderr for noise in NOISE), lines
    assert (run_dir / "models" / "model.pt").is_file()


@pytest.mark.slow
def test_two_processes_are_quiet_stop_together_on_ctrl_c_and_resume(prepared, bundle, tmp_path):
    run_dir = tmp_path / "run"
    code, out, err = _interrupt(_command(bundle, prepared, run_dir, 1000, "--nproc", "2"), run_dir, signal.SIGINT)
    iteration = _check_interrupted(code, out, err, signal.SIGINT, run_dir)
    assert not (run_dir / ".worker-error").exists()

    resumed = _run(_command(bundle, prepared, run_dir, iteration + 2, "--nproc", "2"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((run_dir / "checkpoints" / "latest.json").read_text())["iteration"] == iteration + 2
    lines = _lines(resumed)
    # rank 0 alone: "resumed from", "precision", one progress bar; the parent's summary
    assert len(lines) <= 5, "\n".join(lines)
    assert sum("precision: fp32 (requested)" in line for line in lines) == 1, lines
    assert sum("resumed from" in line for line in lines) == 1, lines
    assert not any(noise in resumed.stdout + resumed.stderr for noise in NOISE), lines
    assert "*****" not in resumed.stderr  # torchrun's OMP_NUM_THREADS banner


@pytest.mark.parametrize("family", ["cgan", "acwgan_gp"])
def test_a_conditional_family_on_data_without_labels_is_refused_before_any_work(family, prepared, tmp_path, capsys):
    unlabelled = tmp_path / "unlabelled"
    unlabelled.mkdir()
    datalist = json.loads((prepared / "datalist.json").read_text())
    datalist["classes"] = []
    for split in ("training", "validation", "test"):
        for entry in datalist[split]:
            entry.pop("label", None)
            entry.pop("label_name", None)
    (unlabelled / "datalist.json").write_text(json.dumps(datalist))
    run_dir = tmp_path / "run"
    code = main(["train", "--bundle", family, "--data", str(unlabelled), "--out", str(run_dir), "--device", "cpu"])
    assert code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1, error
    assert error[0].startswith(f"medvol train: error: {unlabelled / 'datalist.json'}: {family} is a conditional family")
    assert "--labels" in error[0] and "no class labels" in error[0]
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "run.json").exists()


def test_each_distinct_warning_reaches_the_console_once():
    from medvol.cli import _OnlyOnce

    only_once = _OnlyOnce()

    def record(level: int, message: str, *args) -> logging.LogRecord:
        return logging.LogRecord("medvol.io", level, __file__, 1, message, args, None)

    assert only_once.filter(record(logging.WARNING, "%s: converted RGB to grey", "a.png"))
    assert not only_once.filter(record(logging.WARNING, "%s: converted RGB to grey", "a.png"))
    assert only_once.filter(record(logging.WARNING, "%s: converted RGB to grey", "b.png"))  # another file: news
    assert only_once.filter(record(logging.INFO, "resumed")) and only_once.filter(record(logging.INFO, "resumed"))
    assert only_once.filter(record(logging.ERROR, "failed")) and only_once.filter(record(logging.ERROR, "failed"))
