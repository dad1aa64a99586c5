"""Find a bundle by name, load its configs with overrides, run its workflows (MONAI `ConfigWorkflow`)."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from monai.bundle import ConfigWorkflow

from medvol import families
from medvol.errors import MedvolInputError
from medvol.runs import plain_json

__all__ = [
    "BUNDLES_DIR",
    "resolve_bundle",
    "bundle_config_files",
    "load_workflow",
    "create_workflow",
    "run_workflow",
    "input_errors_unwrapped",
    "resolved_config",
]

# ``MEDVOL_BUNDLES`` points at another folder of bundles (each bundle folder is self-contained).
BUNDLES_DIR = Path(os.environ.get("MEDVOL_BUNDLES", Path(__file__).resolve().parents[2] / "bundles"))
WORKFLOW_FILES = {"train": "train.yaml", "sample": "inference.yaml", "evaluate": "evaluate.yaml"}
MULTI_GPU_FILE = "multi_gpu_train.yaml"


def resolve_bundle(name: str | os.PathLike) -> Path:
    """The folder of a bundle given its family name (``wgan_gp``) or a path to a bundle folder.

    Args:
        name: a registered family's name (`medvol.families`), or a folder that holds ``configs/train.yaml``.

    Raises:
        MedvolInputError: neither a known name nor a bundle folder; the message lists the available bundles.
    """
    text = str(name)
    names = families.family_names()
    candidates = [BUNDLES_DIR / text] if text in names else []
    candidates.append(Path(text).expanduser())
    for folder in candidates:
        if (folder / "configs" / WORKFLOW_FILES["train"]).is_file():
            return folder.resolve()
    available = ", ".join(f for f in names if (BUNDLES_DIR / f / "configs").is_dir())
    raise MedvolInputError(text, f"not a medvol bundle (no configs/train.yaml); available bundles: {available}")


def bundle_config_files(bundle: str | os.PathLike, workflow: str = "train", distributed: bool = False) -> list[Path]:
    """The config files of one workflow of a bundle, in the order MONAI merges them.

    Args:
        bundle: a bundle name or folder (see `resolve_bundle`).
        workflow: ``train``, ``sample`` or ``evaluate``.
        distributed: append ``multi_gpu_train.yaml`` (training only).
    """
    if workflow not in WORKFLOW_FILES:
        raise ValueError(f"workflow must be one of {sorted(WORKFLOW_FILES)}, got {workflow!r}")
    configs = resolve_bundle(bundle) / "configs"
    files = [configs / WORKFLOW_FILES[workflow]]
    if distributed:
        if workflow != "train":
            raise ValueError("only the train workflow runs distributed")
        files.append(configs / MULTI_GPU_FILE)
    return files


def load_workflow(
    bundle: str | os.PathLike,
    workflow: str = "train",
    overrides: Mapping[str, Any] | None = None,
    distributed: bool = False,
    logging_file: str | bool | None = False,
) -> ConfigWorkflow:
    """A MONAI `ConfigWorkflow` of a bundle with its config loaded and `overrides` applied (not initialised: nothing
    is built or run yet).

    Args:
        bundle: a bundle name or folder (see `resolve_bundle`).
        workflow: ``train``, ``sample`` or ``evaluate``.
        overrides: config ids to values, as ``python -m monai.bundle run --ID VALUE`` (e.g. ``{"spatial_dims": 3,
            "dataset_dir": "/data/prepared", "train#dataloader#num_workers": 2}``); ``bundle_root`` defaults to the
            bundle folder.
        distributed: add ``multi_gpu_train.yaml`` (the process must have been started by torchrun).
        logging_file: the bundle's ``logging.conf`` when None, a path, or False to leave Python logging as it is.
    """
    files = bundle_config_files(bundle, workflow, distributed)
    overrides = {"bundle_root": str(files[0].parent.parent), **(overrides or {})}
    # MONAI warns "Logging file is set to False, skipping logging." when asked to leave logging alone
    workflows_logger = logging.getLogger("monai.bundle.workflows")
    level = workflows_logger.level
    if logging_file is False:
        workflows_logger.setLevel(logging.ERROR)
    try:
        config_workflow = ConfigWorkflow(
            config_file=[str(f) for f in files],
            meta_file=str(files[0].parent / "metadata.json"),
            logging_file=logging_file if logging_file is not None else str(files[0].parent / "logging.conf"),
            workflow_type="train" if workflow == "train" else "infer",
            **overrides,
        )
    finally:
        workflows_logger.setLevel(level)
    return config_workflow


def create_workflow(
    bundle: str | os.PathLike,
    workflow: str = "train",
    overrides: Mapping[str, Any] | None = None,
    distributed: bool = False,
    logging_file: str | bool | None = False,
) -> ConfigWorkflow:
    """`load_workflow`, then initialised (the ``initialize`` expressions ran); ready to `run()`."""
    config_workflow = load_workflow(bundle, workflow, overrides, distributed, logging_file)
    config_workflow.initialize()
    return config_workflow


@contextlib.contextmanager
def input_errors_unwrapped():
    """Re-raise a `MedvolInputError` that MONAI wrapped while evaluating a config expression (``RuntimeError: Failed
    to evaluate ConfigExpression``) as itself, so that the CLI reports it in one line."""
    try:
        yield
    except RuntimeError as error:
        cause = error
        while cause is not None and not isinstance(cause, MedvolInputError):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        raise cause from None


def run_workflow(
    bundle: str | os.PathLike,
    workflow: str = "train",
    overrides: Mapping[str, Any] | None = None,
    distributed: bool = False,
    logging_file: str | bool | None = False,
) -> ConfigWorkflow:
    """Create (see `create_workflow`), run and finalise a bundle workflow; returns the finished workflow.

    Raises:
        MedvolInputError: bad input found while the workflow is built or run (not wrapped in MONAI's RuntimeError).
    """
    with input_errors_unwrapped():
        config_workflow = create_workflow(bundle, workflow, overrides, distributed, logging_file)
        try:
            config_workflow.run()
        finally:
            config_workflow.finalize()
    return config_workflow


def resolved_config(config_workflow: ConfigWorkflow) -> dict:
    """The config a workflow runs (overrides applied, references kept), for ``RUN/config.yaml``."""
    config = dict(config_workflow.parser.get())
    config.pop(config_workflow.parser.meta_key, None)
    return plain_json(config, fallback=str)
