"""What every experiment script under scripts/experiments shares: the medvol command runner, profiles, hardware and
load records, and the generated results page.

An experiment is a sequence of `medvol` commands (prepare -> train -> sample -> evaluate) run as a new user runs them,
plus figures and tables made from their outputs. Each script writes its work to `--out` (default
`experiments/<name>`, ignored by git) and its tables, figures and `results.json` to `docs/experiments/<name>/`
(`README.md` there is regenerated on every run; docs/results.md links to it and gives the reading).

Run one with `.venv/bin/python scripts/experiments/<name>.py [--profile cpu|gpu|smoke]`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medvol.evaluation.keys import METRICS_FILE
from medvol.runs import RunRecord

ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = ROOT.parent / "shared" / "data"
PROFILES = ("cpu", "gpu", "smoke")
PRODUCING_RUN_FILE = "producing_run.json"  # in the work folder: wall time and load of the run that ran the commands


def medvol_command() -> list[str]:
    """The `medvol` entry point of the interpreter running this script (the project's .venv)."""
    candidate = Path(sys.executable).with_name("medvol")
    return [str(candidate)] if candidate.exists() else [sys.executable, "-c", "from medvol.cli import main; main()"]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def hardware() -> dict[str, Any]:
    """CPU, cores, torch threads and GPU (when one is used) of this run."""
    import torch

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def parser(name: str, description: str) -> argparse.ArgumentParser:
    """The arguments every experiment takes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--profile", choices=PROFILES, default="cpu",
                   help="cpu (default: sized to finish within 60 minutes on 2 CPU cores), gpu (the full profile, "
                        "needs CUDA), smoke (minutes: checks that the pipeline runs, numbers meaningless)")
    p.add_argument("--out", default=None, help=f"work folder (default experiments/{name}-<profile>)")
    p.add_argument("--docs", default=None,
                   help=f"where tables, figures and results.json go (default docs/experiments/{name} for the cpu and "
                        f"gpu profiles, the work folder for smoke)")
    p.add_argument("--data", default=str(SHARED_DATA), help="the shared data folder (default ../shared/data)")
    return p


class Experiment:
    """One experiment run: runs medvol commands with their wall times, records hardware and load, writes results.

    Args:
        name: experiment name (folder names).
        args: parsed `parser()` arguments.
    """

    def __init__(self, name: str, args: argparse.Namespace):
        self.name = name
        self.profile = args.profile
        self.data = Path(args.data)
        self.out = Path(args.out or ROOT / "experiments" / f"{name}-{args.profile}").resolve()
        default_docs = self.out / "docs" if args.profile == "smoke" else ROOT / "docs" / "experiments" / name
        if args.profile == "gpu":
            default_docs = ROOT / "docs" / "experiments" / f"{name}-gpu"
        self.docs = Path(args.docs or default_docs).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.docs.mkdir(parents=True, exist_ok=True)
        self.device = "cuda" if args.profile == "gpu" else "cpu"
        self.started = time.time()
        self.steps: list[dict[str, Any]] = []
        self.results: dict[str, Any] = {
            "experiment": name,
            "profile": self.profile,
            "hardware": hardware(),
            "load_average_start": list(os.getloadavg()),
            "commands": self.steps,
        }
        self.log = (self.out / "commands.log").open("a")

    def require(self, *relative: str) -> None:
        """Stop with one line when a shared data file this experiment needs is missing."""
        for item in relative:
            if not (self.data / item).exists():
                sys.exit(f"{self.name}: {self.data / item} is missing: this experiment needs ../shared/data")

    def medvol(self, *arguments: Any, skip_if: Path | None = None) -> float:
        """Run `medvol ARGUMENTS`; its output goes to OUT/commands.log. Returns the wall time in seconds (of the run
        that made the outputs, when they are reused; OUT/timings.json keeps them).

        Args:
            arguments: command-line arguments after `medvol`.
            skip_if: when this path exists the command is not run again (a rerun regenerates tables and figures
                from finished outputs).
        """
        command = medvol_command() + [str(a) for a in arguments]
        printable = "medvol " + shlex.join(str(a) for a in arguments)
        timings_file = self.out / "timings.json"
        timings = json.loads(timings_file.read_text()) if timings_file.is_file() else {}
        if skip_if is not None and Path(skip_if).exists():
            print(f"[{self.name}] reuse {skip_if} ({printable})", flush=True)
            self.steps.append({"command": printable, "reused": True, "seconds": timings.get(printable)})
            return float(timings.get(printable) or 0.0)
        print(f"[{self.name}] {printable}", flush=True)
        self.log.write(f"\n$ {printable}\n")
        self.log.flush()
        load = os.getloadavg()[0]
        start = time.time()
        completed = subprocess.run(command, stdout=self.log, stderr=subprocess.STDOUT, cwd=self.out)
        seconds = time.time() - start
        self.steps.append({"command": printable, "seconds": round(seconds, 1), "load_average": round(load, 2)})
        if completed.returncode != 0:
            sys.exit(f"[{self.name}] failed ({completed.returncode}): {printable}; see {self.out / 'commands.log'}")
        timings[printable] = round(seconds, 1)
        timings_file.write_text(json.dumps(timings, indent=2) + "\n")
        print(f"[{self.name}]   {seconds:.0f} s", flush=True)
        return seconds

    def evaluate(self, real: Path, synthetic: Path, out: Path, *options: Any) -> dict[str, Any]:
        """`medvol evaluate --real REAL/datalist.json --synthetic SYNTHETIC --out OUT --device D OPTIONS` (skipped when
        OUT/metrics.json exists); returns the metrics.

        Args:
            real: the prepared folder of the real data.
            synthetic: the samples folder.
            out: the evaluation folder.
            options: further `medvol evaluate` arguments.
        """
        self.medvol("evaluate", "--real", Path(real) / "datalist.json", "--synthetic", synthetic, "--out", out,
                    "--device", self.device, *options,
                    skip_if=up_to_date(Path(out) / METRICS_FILE, Path(synthetic) / "datalist.json"))
        return load_json(Path(out) / METRICS_FILE)

    def figure_path(self, name: str) -> Path:
        return self.docs / name

    def finish(self, results: dict[str, Any], page: str) -> None:
        """Write docs/.../results.json and README.md (the page: markdown tables and figure links)."""
        self.results.update(results)
        self.results["wall_seconds"] = round(time.time() - self.started, 1)
        self.results["load_average_end"] = list(os.getloadavg())
        command_seconds = sum(step.get("seconds") or 0.0 for step in self.steps)
        self.results["command_seconds"] = round(command_seconds, 1)
        this_run = {key: self.results[key] for key in ("wall_seconds", "load_average_start", "load_average_end")}
        this_run["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        record = self.out / PRODUCING_RUN_FILE  # the last run of the script that ran commands rather than reusing
        if any(not step.get("reused") for step in self.steps):
            record.write_text(json.dumps(this_run, indent=2) + "\n")
        producing = load_json(record) if record.is_file() else None
        self.results["producing_run"] = producing
        (self.docs / "results.json").write_text(json.dumps(self.results, indent=2, default=float) + "\n")
        hw = self.results["hardware"]
        machine = (f"{hw['cpu']} ({hw['cores']} cores"
                   f"{', GPU ' + hw['gpu'] if 'gpu' in hw and self.device == 'cuda' else ''}; CPU trainings take 1 "
                   "torch thread when the load average reaches the core count, the evaluation's classifiers always 1)")
        if producing == this_run:
            run_text = (f"this run of the script took {this_run['wall_seconds'] / 60:.1f} min on {machine}, load "
                        f"average {this_run['load_average_start'][0]:.1f} at its start and "
                        f"{this_run['load_average_end'][0]:.1f} at its end")
        else:
            made = ("the run of the script that made them is not recorded" if producing is None else
                    f"the run of the script that made them took {producing['wall_seconds'] / 60:.1f} min, finished "
                    f"{producing['finished']}, load average {producing['load_average_start'][0]:.1f} at its start "
                    f"and {producing['load_average_end'][0]:.1f} at its end")
            run_text = (f"{made}; this page was regenerated from those outputs on {this_run['finished']} in "
                        f"{this_run['wall_seconds'] / 60:.1f} min on {machine}")
        header = (
            f"# Experiment: {self.name} ({self.profile} profile)\n\n"
            f"Generated by `scripts/experiments/{self.name}.py --profile {self.profile}`; do not edit by hand.\n"
            f"The medvol commands took **{command_seconds / 60:.1f} min** (table at the end; reused outputs count "
            f"with the time of the run that made them); {run_text}. Numbers: `results.json`.\n\n"
        )
        rows = []
        for step in self.steps:
            if step.get("reused"):
                took = "reused" + (f" ({step['seconds']:.0f} s when run)" if step.get("seconds") else "")
            else:
                took = f"{step['seconds']:.0f} s (load {step['load_average']:.1f})"
            rows.append(f"| `{step['command']}` | {took} |")
        commands = "\n".join(rows)
        footer = f"\n\n## Commands run\n\n| command | wall time |\n|---|---|\n{commands}\n"
        (self.docs / "README.md").write_text(header + page.strip() + footer)
        print(f"[{self.name}] wrote {self.docs / 'README.md'} ({self.results['wall_seconds'] / 60:.1f} min)")


def up_to_date(output: Path, *inputs: Path) -> Path | None:
    """`output` when it exists and is newer than every existing input (for `Experiment.medvol`'s skip_if: samples
    of a run trained further since, or an evaluation of samples drawn again, are made anew), else None."""
    output = Path(output)
    if not output.exists():
        return None
    newest = max((Path(p).stat().st_mtime for p in inputs if Path(p).exists()), default=0.0)
    return output if output.stat().st_mtime >= newest else None


def check_run_options(run: Path, options: Sequence[Any]) -> None:
    """Exit with one line when the finished run in `run` was trained with other `--objective`, `--augment` or
    `--precision` options than `options` (a reused run would otherwise be labelled with the profile's settings)."""
    from medvol.commands.train import key_value_overrides  # how `medvol train --objective` reads the pairs

    record = RunRecord.load(run)
    options = [str(o) for o in options]
    wanted = key_value_overrides([pair for flag, pair in zip(options, options[1:]) if flag == "--objective"], None,
                                 "--objective")
    recorded = record.objective
    problems = [f"objective {recorded} (profile: {wanted})"] if recorded != wanted else []
    augment = bool(record.dataset_options.get("augment"))
    if augment != ("--augment" in options):
        problems.append(f"augment {augment} (profile: {'--augment' in options})")
    if "--precision" in options:
        precision = options[options.index("--precision") + 1]
        plan = Path(run) / "plan.json"
        if plan.is_file() and load_json(plan).get("precision") != precision:
            problems.append(f"precision {load_json(plan).get('precision')} (profile: {precision})")
    if problems:
        sys.exit(f"{run} was trained with other settings than this profile's: {'; '.join(problems)}; delete it to "
                 "train it again")


def finished_run(run: Path, iterations: int) -> Path | None:
    """The checkpoint pointer of `run` when it has trained `iterations` already (for `Experiment.medvol`'s skip_if:
    `medvol train` would resume and stop at once, after loading everything), else None."""
    pointer = Path(run) / "checkpoints" / "latest.json"
    if pointer.is_file() and int(json.loads(pointer.read_text()).get("iteration", 0)) >= int(iterations):
        return pointer
    return None


def load_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def fmt(value: Any, digits: int = 3) -> str:
    """A number for a table: n/a for None, `digits` significant digits."""
    if value is None:
        return "n/a"
    if isinstance(value, dict) and "value" in value:
        value = value["value"]
    if isinstance(value, (int, float)):
        return f"{value:.{digits}g}"
    return str(value)


def mean_sd(entry: dict[str, Any] | None, digits: int = 3) -> str:
    """`mean ± sd` of a utility summary entry ({mean, sd, values})."""
    if not entry or entry.get("mean") is None:
        return "n/a"
    sd = entry.get("sd")
    return f"{entry['mean']:.{digits}f} ± {sd:.{digits}f}" if sd is not None else f"{entry['mean']:.{digits}f}"


def signed_interval(entry: dict[str, Any] | None, digits: int = 3) -> str:
    """`+mean [+low, +high]` of a paired difference ({mean, ci95}); the interval is omitted when undefined."""
    if not entry or entry.get("mean") is None:
        return "n/a"
    text = f"{entry['mean']:+.{digits}f}"
    if entry.get("ci95"):
        low, high = entry["ci95"]
        text += f" [{low:+.{digits}f}, {high:+.{digits}f}]"
    return text
