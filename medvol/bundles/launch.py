"""Distributed training from the command line: the ``torchrun`` command that runs a bundle's training workflow."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from medvol.bundles.configs import BUNDLES_DIR, bundle_config_files, resolve_bundle

__all__ = ["torchrun_command", "run_torchrun"]

logger = logging.getLogger(__name__)


def torchrun_command(
    nproc: int, bundle: str | os.PathLike, overrides: Mapping[str, Any], workflow: str = "train"
) -> list[str]:
    """The ``torchrun`` command line that trains `bundle` with `nproc` processes through ``monai.bundle run``.

    Args:
        nproc: processes on this machine (one per GPU; CPU runs use the gloo backend).
        bundle: a bundle name or folder.
        overrides: config ids to values (``train#dataloader#num_workers`` too); each becomes ``--ID VALUE`` (values
            in Python literal syntax, which ``python -m monai.bundle`` parses with `fire`).
        workflow: ``train``.
    """
    files = [str(f) for f in bundle_config_files(bundle, workflow, distributed=True)]
    configs = resolve_bundle(bundle) / "configs"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        repr(files),
        "--meta_file",
        str(configs / "metadata.json"),
        "--logging_file",
        str(configs / "logging.conf"),
    ]
    if "bundle_root" not in overrides:
        command += ["--bundle_root", repr(str(configs.parent))]
    for key, value in overrides.items():
        command += [f"--{key}", repr(value)]
    return command


def run_torchrun(command: Sequence[str], cwd: str | os.PathLike | None = None) -> int:
    """Run a `torchrun_command` (from `cwd`, by default the folder that holds the bundles); returns its code."""
    logger.info("running: %s", " ".join(command))
    return subprocess.call(list(command), cwd=str(cwd or BUNDLES_DIR.parent))
