"""`medvol train --bundle NAME --data DIR --out RUN`: train a generative bundle; the same command on RUN resumes.

The command does not wire training itself: it turns its arguments into overrides of the bundle's MONAI config
(``bundles/NAME/configs/train.yaml``) and runs that workflow, the same one ``python -m monai.bundle run`` runs.
Steps: resolve the bundle; prepare DIR into ``RUN/data`` when it holds raw images instead of a ``datalist.json``
(``medvol prepare``'s code); write ``RUN/config.yaml`` (the config used); run the workflow, which writes
``run.json``, ``plan.json`` (memory plan), ``checkpoints/``, ``tensorboard/`` and ``samples/`` and resumes from the
latest checkpoint when there is one. ``--nproc N`` runs ``multi_gpu_train.yaml`` on top under ``torchrun``, one
process per rank running this module (``python -m medvol.commands.train BUNDLE OVERRIDES``, see `worker_main`).

Ctrl-C (SIGINT) or SIGTERM ends training after the current iteration with a checkpoint of it, one line saying where,
and exit code 130 / 143; the same command resumes. Under ``--nproc`` the workers run in their own session, so that
only this process receives the terminal's Ctrl-C: it asks the workers to stop through a file in RUN (`STOP_FILE`),
they agree on the iteration to stop after, rank 0 saves it, and they exit normally.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from medvol import bundles
from medvol.defaults import SEED
from medvol.errors import MedvolInputError
from medvol.io.datalist import prepared_size, read_datalist
from medvol.io.files import atomic_write_bytes
from medvol.runs import RunRecord

logger = logging.getLogger(__name__)

DATALIST_FILE = "datalist.json"
PREPARED_DIR = "data"
# run.json facts that must match when a command resumes an existing run
RESUME_KEYS = ("family", "spatial_dims", "image_size")
# written by `medvol train --nproc N` when it receives SIGINT/SIGTERM: its workers stop after the current iteration
STOP_FILE = ".stop-requested"
# where rank 0 of `medvol train --nproc N` leaves a bad-input message, or the signal that stopped the workers
# (sent to them rather than to `medvol`), for the parent to report
WORKER_ERROR_FILE = ".worker-error"
WORKER_SIGNAL_FILE = ".worker-signal"
# the logger of the bundles' StatsHandler (bundles/NAME/configs/train.yaml): loss lines every `sample_every`
# iterations, which `medvol train` shows only with --verbose (TensorBoard has them; the progress bar shows the loss)
STATS_LOGGER = "medvol.train"


def _verbose() -> bool:
    return logging.getLogger("medvol").isEnabledFor(logging.DEBUG)


def _quiet_statistics() -> None:
    if not _verbose():  # after the workflow built its StatsHandler, which sets the level of its logger to INFO
        logging.getLogger(STATS_LOGGER).setLevel(logging.WARNING)


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
    # mode None: from the data (2D images give slices); split None: the default fractions, or the official split of a
    # source that has one (.npz)
    prepare.run(source=str(data), out=str(target), mode={2: "slice", 3: "volume"}.get(spatial_dims), seed=seed)
    return target


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainingOptions:
    """The options of `medvol train` that become overrides of the bundle's train config (`overrides`); ``medvol train
    --help`` explains each."""

    spatial_dims: int | None = None
    image_size: list[int] | None = None
    iterations: int | None = None
    seed: int = SEED
    checkpoint_every: int | None = None
    evaluate_every: int | None = None
    batch_size: str | int = "auto"
    max_memory: float | None = None
    precision: str = "auto"
    device: str | None = None
    width: int | None = None
    augment: bool = False
    critic_augment: str | None = None

    def overrides(self, data_dir: Path, run_dir: Path) -> dict[str, Any]:
        """The bundle config overrides these options stand for, on the data prepared in `data_dir`.

        Raises:
            MedvolInputError: an option out of range, or one the data cannot train with.
        """
        datalist = read_datalist(data_dir)
        spatial_dims = self.spatial_dims or int(
            datalist.get("spatial_dims") or (3 if datalist.get("mode") == "volume" else 2))
        if spatial_dims == 3 and int(datalist.get("source_spatial_dims") or 3) == 2:
            raise MedvolInputError(data_dir, "holds 2D images: it can train only with --spatial-dims 2")
        overrides: dict[str, Any] = {
            "dataset_dir": str(data_dir),
            "output_dir": str(run_dir),
            "spatial_dims": spatial_dims,
            "seed": int(self.seed),
            "precision": self.precision,
            "max_memory_gb": self.max_memory,
        }
        size = prepared_size(datalist, spatial_dims)
        if self.image_size:
            if len(self.image_size) != spatial_dims or min(self.image_size) < 4:
                raise MedvolInputError("--image-size",
                                       f"expected {spatial_dims} sizes of at least 4, got {self.image_size}")
            size = self.image_size
        if size is not None:
            overrides["image_size"] = size
            from medvol.commands.prepare import MIN_TRAINING_BATCH, check_size_fits_memory

            batch = int(self.batch_size) if str(self.batch_size).isdigit() else MIN_TRAINING_BATCH
            where = "--image-size" if self.image_size else f"{data_dir} (its prepared --size)"
            check_size_fits_memory(size, where, batch)
        if self.iterations is not None:
            if self.iterations < 1:
                raise MedvolInputError("--iterations", f"must be at least 1, got {self.iterations}")
            overrides["iterations"] = int(self.iterations)
        if self.checkpoint_every is not None:
            overrides["checkpoint_every"] = int(self.checkpoint_every)
        if self.evaluate_every is not None:
            if self.evaluate_every < 0:
                raise MedvolInputError("--evaluate-every", "must be 0 (off) or a positive number of iterations, got "
                                       f"{self.evaluate_every}")
            overrides["evaluate_every"] = int(self.evaluate_every)
        if self.batch_size != "auto":
            overrides["batch_size"] = int(self.batch_size)
        if self.device is not None:
            overrides["device"] = self.device
        if self.augment:
            overrides["augment"] = True
        if self.critic_augment is not None:
            from medvol.transforms.differentiable import parse_critic_augment

            overrides["critic_augment"] = parse_critic_augment(self.critic_augment)
        if self.width is not None:
            if self.width < 1:
                raise MedvolInputError("--width", f"must be a positive number of channels, got {self.width}")
            overrides["width"] = int(self.width)
        return overrides


def key_value_overrides(
    pairs: list[str], base: Mapping[str, Any] | None, option: str = "--network", example: str = "minibatch_std=true"
) -> dict[str, Any]:
    """A bundle's settings group (``network``, ``objective``) with `medvol train OPTION KEY=VALUE` pairs applied
    (values read as YAML; a dotted key such as ``critic.minibatch_std=true`` sets a key of one sub-group).

    Args:
        pairs: the ``KEY=VALUE`` texts.
        base: the bundle's settings of that group.
        option: the command-line option, for messages.
        example: a valid pair, for messages.

    Raises:
        MedvolInputError: a pair without ``=`` or with an empty key.
    """
    merged = {key: dict(value) if isinstance(value, Mapping) else value for key, value in (base or {}).items()}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        path = [part.strip() for part in key.split(".")]
        if not sep or not all(path):
            raise MedvolInputError(option, f"expected KEY=VALUE (e.g. {example}), got {pair!r}")
        target = merged
        for part in path[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise MedvolInputError(option, f"{part!r} is not a group of options in {pair!r}")
        target[path[-1]] = _yaml_value(text)
    return merged


def _yaml_value(text: str) -> Any:
    """A command-line value read as YAML, where `1e-4` (a string to YAML 1.1) is the number a user means."""
    if not text.strip():
        return None
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def network_overrides(pairs: list[str], network: Mapping[str, Any] | None) -> dict[str, Any]:
    """The bundle's ``network`` settings with `medvol train --network KEY=VALUE` pairs applied."""
    return key_value_overrides(pairs, network, "--network", "minibatch_std=true")


def objective_overrides(pairs: list[str], objective: Mapping[str, Any] | None, family: str) -> dict[str, Any]:
    """The bundle's ``objective`` settings with `medvol train --objective KEY=VALUE` pairs applied, checked by building
    the family's objective once.

    Raises:
        MedvolInputError: a malformed pair, or a key or value the family's objective does not take.
    """
    import torch

    from medvol.objectives import build_objective, build_optimizer

    merged = key_value_overrides(pairs, objective, "--objective", "critic_steps=3")
    try:
        _, settings = build_objective(family, **dict(merged))
        build_optimizer([torch.nn.Parameter(torch.zeros(1))], settings["optimizer"])
    except (TypeError, ValueError, ArithmeticError, LookupError) as err:
        raise MedvolInputError("--objective", f"{family} does not take {', '.join(pairs)}: {err}") from None
    return merged


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
    if not RunRecord.exists(run_dir):
        return
    previous = RunRecord.load(run_dir)
    parser = workflow.parser
    current = {
        "family": parser.get_parsed_content("family"),
        "spatial_dims": int(parser.get_parsed_content("spatial_dims")),
        "image_size": parser.get_parsed_content("train#image_shape"),
    }
    for key in RESUME_KEYS:
        if getattr(previous, key) != current[key]:
            raise MedvolInputError(
                run_dir, f"holds a run with {key}={getattr(previous, key)}, not {current[key]}: use another --out to "
                "start a new run"
            )
    _check_resumed_classes(run_dir, previous, parser)
    if not (run_dir / "checkpoints" / "latest.json").is_file():
        return
    # the optimiser state in the checkpoint carries the old settings; a resumed run must train as it started
    settings = {"objective": (previous.objective, dict(parser.get_parsed_content("objective") or {})),
                "augment": (previous.dataset_options.get("augment"), bool(parser.get_parsed_content("augment"))),
                # runs from before critic augmentation had none
                "critic_augment": (previous.critic_augment or {"mode": "off"},
                                   parser.get_parsed_content("train#critic_augment"))}
    options = {"objective": "--objective", "augment": "--augment", "critic_augment": "--critic-augment"}
    for key, (before, now) in settings.items():
        if before is not None and json.loads(json.dumps(before)) != json.loads(json.dumps(now)):
            option = options[key]
            raise MedvolInputError(
                run_dir, f"was trained with {key} {before}, not {now}: resume it with the same {option} settings, or "
                "use another --out to start a new run"
            )


def _check_resumed_classes(run_dir: Path, previous: RunRecord, parser) -> None:
    """A conditional run resumes only on data with the classes it was trained on (its label embedding and class
    head have one row per class)."""
    from medvol import families

    family = previous.family
    conditional = family in families.family_names() and families.get_family(family).conditional
    if not conditional:
        return
    before, now = int(previous.num_classes), int(parser.get_parsed_content("num_classes"))
    if before != now:
        data = Path(str(parser.get_parsed_content("dataset_dir"))) / DATALIST_FILE
        names = read_datalist(data).get("classes") or []
        raise MedvolInputError(
            run_dir, f"holds a {family} run trained on {before} classes {previous.classes}, but "
            f"{data} has {now} {list(names)}: resume it with the data it was trained on, or use another --out to "
            "start a new run"
        )


def check_networks(workflow, pairs: list[str]) -> None:
    """Build the networks once, before any work, when `medvol train --network KEY=VALUE` changed them: a key no
    network of the family takes, or a value it cannot use, is one line instead of a traceback from the config.

    Raises:
        MedvolInputError: the networks cannot be built with these settings.
    """
    if not pairs:
        return
    try:
        with bundles.input_errors_unwrapped():
            workflow.parser.get_parsed_content("networks")
    except RuntimeError as error:
        cause = error.__cause__
        if not isinstance(cause, (TypeError, ValueError)):
            raise
        raise MedvolInputError("--network", f"{' '.join(pairs)}: {cause}") from None


def check_conditional(workflow, data_dir: Path) -> None:
    """Refuse, before any work, to train a conditional family (cgan, acwgan_gp) on data without class labels."""
    from medvol import families

    family = workflow.parser.get_parsed_content("family")
    if family not in families.family_names() or not families.get_family(family).conditional:
        return
    datalist = read_datalist(data_dir)
    if not datalist.get("training"):
        raise MedvolInputError(
            data_dir / DATALIST_FILE,
            f"has no training split (its 'training' list is {'empty' if 'training' in datalist else 'missing'}): "
            "train on a folder `medvol prepare SOURCE --out DIR` wrote (its --split gives training a fraction)",
        )
    classes = datalist.get("classes") or []
    unlabelled = sum(1 for entry in datalist.get("training") or [] if entry.get("label") is None)
    if len(classes) >= 2 and unlabelled:
        raise MedvolInputError(
            data_dir / DATALIST_FILE,
            f"{family} is a conditional family, but {unlabelled} training images have no label (prepared with "
            "--unlabelled keep): prepare with --unlabelled skip, or train an unconditional family such as dcgan",
        )
    if len(classes) < 2:
        found = f"only the class {classes[0]!r}" if classes else "no class labels"
        raise MedvolInputError(
            data_dir / DATALIST_FILE,
            f"{family} is a conditional family and needs at least 2 classes, but the data has {found}: prepare it "
            "with `medvol prepare SOURCE --labels CSV --out DIR` (or from one folder per class), or train an "
            "unconditional family such as dcgan or wgan_gp",
        )


def worker_command(nproc: int, bundle: str | Path, overrides: Mapping[str, Any], verbose: bool = False) -> list[str]:
    """The ``torchrun`` command line of ``medvol train --nproc N``: `nproc` processes running `worker_main`."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "medvol.commands.train", str(bundle), json.dumps(dict(overrides))]
    return command + (["--verbose"] if verbose else [])


def run_workers(command: list[str], run_dir: Path) -> tuple[int, int | None]:
    """Run the `worker_command` until it ends; SIGINT/SIGTERM meanwhile ask the workers to stop (`STOP_FILE`).

    Returns:
        ``(torchrun's exit code, the signal received or None)``.
    """
    stop_file = run_dir / STOP_FILE
    stop_file.unlink(missing_ok=True)
    received: list[int] = []

    def request_stop(signum: int, frame: Any) -> None:
        if not received:
            received.append(signum)
            stop_file.touch()

    env = dict(os.environ)
    # torchrun prints a banner when it has to choose the threads per process itself
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // int(command[4].split("=")[1]))))
    logger.debug("running: %s", " ".join(command))
    # a session of their own: the terminal's Ctrl-C reaches this process only (torchrun would forward it as a
    # SIGINT of its own and print its shutdown report)
    process = subprocess.Popen(command, cwd=str(bundles.BUNDLES_DIR.parent), env=env, start_new_session=True)
    previous = {signum: signal.signal(signum, request_stop) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = process.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        stop_file.unlink(missing_ok=True)
    return code, (received[0] if received else None)


def _latest_checkpoint(run_dir: Path) -> tuple[int, str | None]:
    pointer = run_dir / "checkpoints" / "latest.json"
    if not pointer.is_file():
        return 0, None
    latest = json.loads(pointer.read_text())
    return int(latest["iteration"]), str(run_dir / "checkpoints" / latest["file"])


def train(
    bundle: str | Path,
    overrides: Mapping[str, Any],
    run_dir: Path,
    *,
    nproc: int = 1,
    extra_handlers: list | None = None,
    network_pairs: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Run a bundle's train workflow into `run_dir` (resuming from its checkpoints) and summarise it.

    Args:
        bundle: bundle name or folder.
        overrides: config overrides (``output_dir`` must be `run_dir`).
        run_dir: the run folder.
        nproc: processes; above 1 the workflow runs under ``torchrun`` with ``multi_gpu_train.yaml``.
        extra_handlers: more ignite/MONAI handlers for the trainer (single process only).
        network_pairs: the ``--network KEY=VALUE`` texts behind ``overrides["network"]`` (checked, see
            `check_networks`).

    Returns:
        ``{"iterations", "checkpoint", "seconds", "resumed_from"}``.
    """
    from medvol.engines.trainer import TrainingInterrupted

    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    config_workflow = bundles.load_workflow(bundle, "train", overrides, distributed=nproc > 1, logging_file=False)
    check_conditional(config_workflow, Path(overrides["dataset_dir"]))
    check_networks(config_workflow, list(network_pairs))
    check_resumable(run_dir, config_workflow)
    atomic_write_bytes(run_dir / "config.yaml",
                       yaml.safe_dump(bundles.resolved_config(config_workflow), sort_keys=False).encode())
    if nproc > 1:
        # each process takes the GPU of its local rank: only an explicit CPU choice is passed on
        per_process = {k: v for k, v in overrides.items() if k != "device" or str(v) == "cpu"}
        command = worker_command(nproc, bundle, per_process, verbose=_verbose())
        error_file, signal_file = run_dir / WORKER_ERROR_FILE, run_dir / WORKER_SIGNAL_FILE
        error_file.unlink(missing_ok=True)
        signal_file.unlink(missing_ok=True)
        code, received = run_workers(command, run_dir)
        iteration, checkpoint = _latest_checkpoint(run_dir)
        if error_file.is_file():
            problem = error_file.read_text().strip()
            error_file.unlink()
            raise MedvolInputError(None, problem)
        if signal_file.is_file():
            received = received or int(signal_file.read_text())
            signal_file.unlink()
        if received is not None:
            raise TrainingInterrupted(received, iteration, checkpoint)
        if code != 0:
            raise RuntimeError(f"distributed training failed (exit code {code}): {' '.join(command)}")
        return {"iterations": iteration, "checkpoint": checkpoint, "seconds": time.perf_counter() - started,
                "resumed_from": None}
    from medvol.devices import default_device
    from medvol.engines.threads import training_threads

    with bundles.input_errors_unwrapped(), training_threads(default_device(overrides.get("device"))) as threads:
        config_workflow.initialize()
        trainer = config_workflow.parser.get_parsed_content("train#trainer")
        _quiet_statistics()
        for handler in extra_handlers or []:
            handler.attach(trainer)
        try:
            config_workflow.run()
        finally:
            config_workflow.finalize()
    return {
        "threads": threads,
        "iterations": int(trainer.state.iteration),
        "checkpoint": trainer.last_checkpoint,
        "seconds": time.perf_counter() - started,
        "resumed_from": trainer.state.resumed_from,
    }


def _check_gpus_for_processes(nproc: int, device: str | None) -> None:
    """Refuse ``--nproc`` above the number of visible GPUs when the workers would run on CUDA (one GPU each)."""
    import torch

    if device == "cpu" or (device is None and not torch.cuda.is_available()):
        return
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus < nproc:
        raise MedvolInputError("--nproc", f"{nproc} processes on CUDA need one GPU each, but {gpus} are visible; "
                               f"use --nproc {max(gpus, 1)} or --device cpu")


def run(
    *,
    bundle: str,
    data: str,
    out: str,
    nproc: int = 1,
    network: Sequence[str] = (),
    objective: Sequence[str] = (),
    **options: Any,
) -> int:
    """`medvol train` (see the module docstring); the arguments are its options (``--help`` explains them).

    Args:
        options: the `TrainingOptions` (``--spatial-dims``, ``--iterations``, ``--seed``...).

    Raises:
        MedvolInputError: unknown bundle, missing or unusable data, a run folder of another model, bad numbers.
    """
    settings = TrainingOptions(**options)
    bundle_dir = bundles.resolve_bundle(bundle)
    if nproc < 1:
        raise MedvolInputError("--nproc", f"must be at least 1, got {nproc}")
    if nproc > 1:
        _check_gpus_for_processes(nproc, settings.device)
    max_memory = settings.max_memory
    if max_memory is not None and not (math.isfinite(max_memory) and max_memory > 0):
        raise MedvolInputError("--max-memory", f"must be a positive number of GB, got {max_memory}")
    run_dir = Path(out).expanduser().resolve()
    if run_dir.exists() and not run_dir.is_dir():
        raise MedvolInputError(run_dir, "--out exists and is not a folder")
    data_dir = prepared_data(data, run_dir, settings.spatial_dims, settings.seed)
    overrides = settings.overrides(data_dir, run_dir)
    if network or objective:
        bundle_config = yaml.safe_load((bundle_dir / "configs" / "train.yaml").read_text()) or {}
        network_settings, objective_settings = (bundle_config.get(key) for key in ("network", "objective"))
        if network:
            overrides["network"] = network_overrides(
                list(network), network_settings if isinstance(network_settings, Mapping) else None)
        if objective:
            overrides["objective"] = objective_overrides(
                list(objective), objective_settings if isinstance(objective_settings, Mapping) else None,
                str(bundle_config.get("family", bundle_dir.name)))
    summary = train(bundle_dir, overrides, run_dir, nproc=nproc, network_pairs=tuple(network))
    resumed = f" (resumed from {summary['resumed_from']})" if summary.get("resumed_from") else ""
    plan_path = run_dir / "plan.json"
    plan = ""
    if plan_path.is_file():
        memory = json.loads(plan_path.read_text())
        plan = (f"; memory plan: micro-batch {memory['micro_batch']} x {memory['accumulation_steps']} accumulation steps, "
                f"{memory['precision']}")
    best = ""
    pointer_path = run_dir / "checkpoints" / "latest.json"
    if pointer_path.is_file() and json.loads(pointer_path.read_text()).get("best"):
        entry = json.loads(pointer_path.read_text())["best"]
        best = f"; best checkpoint {entry['file']} (FID {entry['metric']:.4g} at iteration {entry['iteration']})"
    print(
        f"trained {bundle_dir.name} to iteration {summary['iterations']} in {summary['seconds']:.1f} s{resumed}{plan}; "
        f"checkpoint {summary['checkpoint']}{best}; run folder {run_dir}"
    )
    return 0


def worker_main(argv: list[str] | None = None) -> int:
    """One process of ``medvol train --nproc N``, started by torchrun: the bundle's train workflow with
    ``multi_gpu_train.yaml``, logging like the ``medvol`` command on rank 0 and only errors on the other ranks.

    Usage: ``python -m medvol.commands.train BUNDLE OVERRIDES_JSON [--verbose]``. It stops after the iteration in which
    ``RUN/.stop-requested`` appears (see `run_workers`), or after a SIGINT/SIGTERM of its own, and then exits 0,
    leaving the message to the parent (the signal in ``RUN/.worker-signal``); bad input goes to ``RUN/.worker-error``
    for the parent to print, also with exit code 0 (torchrun would print a report of its own for any other code).
    """
    import warnings

    from ignite.engine import Events

    from medvol.cli import configure_logging
    from medvol.engines.trainer import TrainingInterrupted

    parser = argparse.ArgumentParser(prog="python -m medvol.commands.train")
    parser.add_argument("bundle")
    parser.add_argument("overrides", help="config overrides as JSON")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    rank_zero = int(os.environ.get("RANK", "0")) == 0
    configure_logging(args.verbose, rank_zero=rank_zero)
    if not rank_zero:
        warnings.simplefilter("ignore")  # rank 0 shows the same warnings
    overrides = json.loads(args.overrides)
    run_dir = Path(overrides["output_dir"])
    stop_file = run_dir / STOP_FILE
    workflow = None
    try:
        with bundles.input_errors_unwrapped():
            workflow = bundles.create_workflow(args.bundle, "train", overrides, distributed=True, logging_file=False)
            trainer = workflow.parser.get_parsed_content("train#trainer")
        _quiet_statistics()

        def stop_when_asked(engine: Any) -> None:
            if stop_file.exists():
                trainer.request_stop(signal.SIGINT)

        trainer.add_event_handler(Events.ITERATION_STARTED, stop_when_asked)
        with bundles.input_errors_unwrapped():
            workflow.run()
    except MedvolInputError as err:
        if rank_zero:
            (run_dir / WORKER_ERROR_FILE).write_text(str(err))
        return 0
    except TrainingInterrupted as stop:
        if rank_zero and not stop_file.exists():
            (run_dir / WORKER_SIGNAL_FILE).write_text(str(int(stop.signal)))
        return 0
    finally:
        if workflow is not None:
            workflow.finalize()
    return 0


if __name__ == "__main__":
    sys.exit(worker_main())
