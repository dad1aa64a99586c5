"""`medvol train --bundle NAME --data DIR --out RUN`: train a generative bundle; the same command on RUN resumes.

The command does not wire training itself: it turns its arguments into overrides of the bundle's MONAI config
(``bundles/NAME/configs/train.yaml``) and runs that workflow, the same one ``python -m monai.bundle run`` runs.
Steps: resolve the bundle; prepare DIR into ``RUN/data`` when it holds raw images instead of a ``datalist.json``
(``medvol prepare``'s code); write ``RUN/config.yaml`` (the config used); run the workflow, which writes
``run.json``, ``plan.json`` (memory plan), ``checkpoints/``, ``tensorboard/`` and ``samples/`` and resumes from the
latest checkpoint when there is one. ``--nproc N`` runs ``multi_gpu_train.yaml`` on top under ``torchrun``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from medvol import bundle as bundles
from medvol.errors import MedvolInputError

logger = logging.getLogger(__name__)

DATALIST_FILE = "datalist.json"
PREPARED_DIR = "data"
# run.json facts that must match when a command resumes an existing run
RESUME_KEYS = ("family", "spatial_dims", "image_size")


def prepared_data(data: str | Path, run_dir: Path, spatial_dims: int | None, seed: int) -> Path:
    """The prepared folder to train on: DATA itself when it holds a ``datalist.json``, else ``RUN/data``, prepared
    from DATA by `medvol prepare` (once: a resumed run reuses it). DATA may also name a built-in source
    (``phantoms``, ``builtin:phantoms3d``...).
    """
    from medvol.commands import prepare

    source = Path(data).expanduser()
    if (source / DATALIST_FILE).is_file():
        return source.resolve()
    if source.is_file() and source.name == DATALIST_FILE:
        return source.parent.resolve()
    target = run_dir / PREPARED_DIR
    if (target / DATALIST_FILE).is_file():
        logger.info("using the data prepared earlier in %s", target)
        return target
    is_builtin = prepare.resolve_builtin(str(data), "volume" if spatial_dims != 2 else "slice") is not None
    if not is_builtin and not source.exists():
        raise MedvolInputError(data, "does not exist")
    logger.info("%s holds no %s: preparing it into %s", data, DATALIST_FILE, target)
    prepare.run(
        argparse.Namespace(
            source=str(data),
            out=str(target),
            mode="slice" if spatial_dims == 2 else "volume",
            labels=None,
            size=None,
            spacing=None,
            split=[0.6, 0.2, 0.2],
            seed=seed,
        )
    )
    return target


def _datalist_image_size(datalist: Mapping, spatial_dims: int) -> list[int] | None:
    """The sample size the data was prepared at, in the dimensionality trained (a 2D size from a 3D one drops the
    slice axis, the last)."""
    size = (datalist.get("preprocessing") or {}).get("size")
    if not size:
        return None
    size = [int(s) for s in size]
    if len(size) == spatial_dims:
        return size
    if len(size) == 3 and spatial_dims == 2:
        return size[:2]
    return None


def training_overrides(args: argparse.Namespace, data_dir: Path, run_dir: Path) -> dict[str, Any]:
    """The bundle config overrides that `medvol train`'s arguments stand for."""
    datalist = json.loads((data_dir / DATALIST_FILE).read_text())
    spatial_dims = args.spatial_dims or int(datalist.get("spatial_dims") or (3 if datalist.get("mode") == "volume" else 2))
    if spatial_dims == 3 and int(datalist.get("source_spatial_dims") or 3) == 2:
        raise MedvolInputError(data_dir, "holds 2D images: it can train only with --spatial-dims 2")
    overrides: dict[str, Any] = {
        "dataset_dir": str(data_dir),
        "output_dir": str(run_dir),
        "spatial_dims": spatial_dims,
        "seed": int(args.seed),
        "precision": args.precision,
        "max_memory_gb": args.max_memory,
    }
    size = _datalist_image_size(datalist, spatial_dims)
    image_size = getattr(args, "image_size", None)
    if image_size:
        if len(image_size) != spatial_dims or min(image_size) < 4:
            raise MedvolInputError("--image-size", f"expected {spatial_dims} sizes of at least 4, got {image_size}")
        size = image_size
    if size is not None:
        overrides["image_size"] = size
    if args.iterations is not None:
        if args.iterations < 1:
            raise MedvolInputError("--iterations", f"must be at least 1, got {args.iterations}")
        overrides["iterations"] = int(args.iterations)
    if args.checkpoint_every is not None:
        overrides["checkpoint_every"] = int(args.checkpoint_every)
    if args.batch_size != "auto":
        overrides["batch_size"] = int(args.batch_size)
    if args.device is not None:
        overrides["device"] = args.device
    return overrides


def check_resumable(run_dir: Path, workflow) -> None:
    """Refuse to resume a run folder that holds a different model (another family, dimensionality or size) or
    whose latest checkpoint is missing or damaged."""
    from medvol.sampling import check_checkpoint, resolve_checkpoint

    if (run_dir / "checkpoints" / "latest.json").is_file():
        state = check_checkpoint(resolve_checkpoint(run_dir))  # a damaged latest checkpoint: one line, before any work
        wrapped = any(key.startswith("module.") for weights in state.get("networks", {}).values() for key in weights)
        if wrapped != bool(workflow.parser.get_parsed_content("distributed")):
            how = "several processes (--nproc 2 or more)" if wrapped else "one process"
            raise MedvolInputError(run_dir, f"was trained with {how}: resume it the same way, or use another --out")
    record_path = run_dir / "run.json"
    if not record_path.is_file():
        return
    previous = json.loads(record_path.read_text())
    parser = workflow.parser
    current = {
        "family": parser.get_parsed_content("family"),
        "spatial_dims": int(parser.get_parsed_content("spatial_dims")),
        "image_size": parser.get_parsed_content("train#image_shape"),
    }
    for key in RESUME_KEYS:
        if key in previous and previous[key] != current[key]:
            raise MedvolInputError(
                run_dir, f"holds a run with {key}={previous[key]}, not {current[key]}: use another --out to start a new run"
            )


def train(
    bundle: str | Path,
    overrides: Mapping[str, Any],
    run_dir: Path,
    nproc: int = 1,
    extra_handlers: list | None = None,
) -> dict[str, Any]:
    """Run a bundle's train workflow into `run_dir` (resuming from its checkpoints) and summarise it.

    Args:
        bundle: bundle name or folder.
        overrides: config overrides (``output_dir`` must be `run_dir`).
        run_dir: the run folder.
        nproc: processes; above 1 the workflow runs under ``torchrun`` with ``multi_gpu_train.yaml``.
        extra_handlers: more ignite/MONAI handlers for the trainer (single process only).

    Returns:
        ``{"iterations", "checkpoint", "seconds", "resumed_from"}``.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    config_workflow = bundles.load_workflow(bundle, "train", overrides, distributed=nproc > 1, logging_file=False)
    check_resumable(run_dir, config_workflow)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(bundles.resolved_config(config_workflow), sort_keys=False))
    if nproc > 1:
        # each process takes the GPU of its local rank: only an explicit CPU choice is passed on
        per_process = {k: v for k, v in overrides.items() if k != "device" or str(v) == "cpu"}
        command = bundles.torchrun_command(nproc, bundle, per_process)
        code = bundles.run_torchrun(command)
        if code != 0:
            raise RuntimeError(f"distributed training failed (exit code {code}): {' '.join(command)}")
        latest = json.loads((run_dir / "checkpoints" / "latest.json").read_text())
        return {"iterations": latest["iteration"], "checkpoint": str(run_dir / "checkpoints" / latest["file"]),
                "seconds": time.perf_counter() - started, "resumed_from": None}
    config_workflow.initialize()
    trainer = config_workflow.parser.get_parsed_content("train#trainer")
    for handler in extra_handlers or []:
        handler.attach(trainer)
    try:
        config_workflow.run()
    finally:
        config_workflow.finalize()
    return {
        "iterations": int(trainer.state.iteration),
        "checkpoint": trainer.last_checkpoint,
        "seconds": time.perf_counter() - started,
        "resumed_from": trainer.state.resumed_from,
    }


def run(args: argparse.Namespace) -> int:
    """`medvol train` (see the module docstring).

    Raises:
        MedvolInputError: unknown bundle, missing or unusable data, a run folder of another model, bad numbers.
    """
    bundle_dir = bundles.resolve_bundle(args.bundle)
    if args.nproc < 1:
        raise MedvolInputError("--nproc", f"must be at least 1, got {args.nproc}")
    if args.max_memory is not None and not (math.isfinite(args.max_memory) and args.max_memory > 0):
        raise MedvolInputError("--max-memory", f"must be a positive number of GB, got {args.max_memory}")
    run_dir = Path(args.out).expanduser().resolve()
    if run_dir.exists() and not run_dir.is_dir():
        raise MedvolInputError(run_dir, "--out exists and is not a folder")
    data_dir = prepared_data(args.data, run_dir, args.spatial_dims, args.seed)
    overrides = training_overrides(args, data_dir, run_dir)
    summary = train(bundle_dir, overrides, run_dir, nproc=args.nproc)
    resumed = f" (resumed from {summary['resumed_from']})" if summary.get("resumed_from") else ""
    plan_path = run_dir / "plan.json"
    plan = ""
    if plan_path.is_file():
        memory = json.loads(plan_path.read_text())
        plan = (f"; memory plan: micro-batch {memory['micro_batch']} x {memory['accumulation_steps']} accumulation steps, "
                f"{memory['precision']}")
    print(
        f"trained {bundle_dir.name} to iteration {summary['iterations']} in {summary['seconds']:.1f} s{resumed}{plan}; "
        f"checkpoint {summary['checkpoint']}; run folder {run_dir}"
    )
    return 0
