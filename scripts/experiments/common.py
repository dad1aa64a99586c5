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
from medvol.evaluation.utility import ALL_ARMS
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

    def medvol(self, *arguments: Any, skip_if: Path | None = None, same_command: bool = False) -> float:
        """Run `medvol ARGUMENTS`; its output goes to OUT/commands.log. Returns the wall time in seconds (of the run
        that made the outputs, when they are reused; OUT/timings.json keeps them).

        Args:
            arguments: command-line arguments after `medvol`.
            skip_if: when this path exists the command is not run again (a rerun regenerates tables and figures
                from finished outputs).
            same_command: reuse `skip_if` only when this very command made it (recorded in OUT/timings.json), so a
                profile with other options runs it again.
        """
        command = medvol_command() + [str(a) for a in arguments]
        printable = "medvol " + shlex.join(str(a) for a in arguments)
        timings_file = self.out / "timings.json"
        timings = json.loads(timings_file.read_text()) if timings_file.is_file() else {}
        if skip_if is not None and Path(skip_if).exists() and (printable in timings or not same_command):
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
        this command wrote OUT/metrics.json after the samples); returns the metrics.

        Args:
            real: the prepared folder of the real data.
            synthetic: the samples folder.
            out: the evaluation folder.
            options: further `medvol evaluate` arguments.
        """
        self.medvol("evaluate", "--real", Path(real) / "datalist.json", "--synthetic", synthetic, "--out", out,
                    "--device", self.device, *options,
                    skip_if=up_to_date(Path(out) / METRICS_FILE, Path(synthetic) / "datalist.json"), same_command=True)
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
    """Exit with one line when the finished run in `run` was trained with other `--objective`, `--augment`,
    `--critic-augment` or `--precision` options than `options` (a reused run would otherwise be labelled with the
    profile's settings; without `--critic-augment` the bundles' default, off)."""
    from medvol.commands.train import key_value_overrides  # how `medvol train --objective` reads the pairs
    from medvol.transforms.differentiable import parse_critic_augment  # how `medvol train --critic-augment` reads it

    record = RunRecord.load(run)
    options = [str(o) for o in options]
    wanted = key_value_overrides([pair for flag, pair in zip(options, options[1:]) if flag == "--objective"], None,
                                 "--objective")
    recorded = record.objective
    problems = [f"objective {recorded} (profile: {wanted})"] if recorded != wanted else []
    augment = bool(record.dataset_options.get("augment"))
    if augment != ("--augment" in options):
        problems.append(f"augment {augment} (profile: {'--augment' in options})")
    critic = parse_critic_augment(options[options.index("--critic-augment") + 1] if "--critic-augment" in options
                                  else None)
    if (record.critic_augment or {"mode": "off"}) != critic:
        problems.append(f"critic augmentation {record.critic_augment} (profile: {critic})")
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


# The utility study's reading: every arm `medvol evaluate` ran, against the bar to clear (issue J): real+augmentation.
REFERENCE_ARM = "real+augmentation"


def utility_arms(utility: dict[str, Any]) -> list[str]:
    """The arms of a utility result in the package's order (`ALL_ARMS`), arms it does not know at the end."""
    ran = list(utility["arms"])
    return [arm for arm in ALL_ARMS if arm in ran] + [arm for arm in ran if arm not in ALL_ARMS]


def against_reference(entry: dict[str, Any] | None, reference: str = REFERENCE_ARM) -> str:
    """Words for a paired difference `{mean, ci95}` against `reference` that follow its 95% interval: above or below
    only when the whole interval is."""
    if not entry or entry.get("mean") is None:
        return "not measured"
    ci = entry.get("ci95")
    if not ci or ci[0] is None or ci[1] is None:
        return f"no interval (one seed), so no side of {reference} is claimed"
    if ci[0] > 0:
        return f"above {reference} (the 95% interval lies above 0)"
    if ci[1] < 0:
        return f"below {reference} (the 95% interval lies below 0)"
    return f"not distinguishable from {reference} (the 95% interval holds 0)"


def selection_counts(utility: dict[str, Any]) -> str:
    """The sample selection per class, `class kept / offered`, or why there is none."""
    selection = utility.get("selection")
    if not selection:
        return "no sample selection"
    kept, offered = selection["kept_per_class"], selection["available_per_class"]
    per_class = ", ".join(f"{name} {kept[name]} / {offered.get(name, 0)}" for name in kept)
    return (f"probability >= {selection['threshold']:g}: kept {sum(kept.values())} of {sum(offered.values())} "
            f"({per_class})")


def without_per_sample(utility: dict[str, Any]) -> dict[str, Any]:
    """A utility result for results.json: the selection's per-sample lists (keep, probabilities) left out."""
    if "selection" not in utility:
        return utility
    selection = {k: v for k, v in utility["selection"].items() if k not in ("keep", "probabilities")}
    return {**utility, "selection": selection}


def utility_cell(utility: dict[str, Any], arm: str, metric: str, digits: int = 3) -> str:
    """`mean ± sd` of an arm, followed for the synthetic arms by their paired difference against real+augmentation."""
    entry = utility["arms"].get(arm)
    if entry is None:
        return "not run"
    text = mean_sd(entry.get(metric), digits)
    difference = utility.get("paired_difference_augmentation", {}).get(arm, {}).get(metric)
    return text + (f"; {signed_interval(difference, digits)}" if difference else "")


def utility_runs_table(utilities: dict[str, dict[str, Any]], metric: str, digits: int = 3) -> str:
    """Markdown: one row per arm that any run has, one column per run (`utility_cell`)."""
    arms = utility_arms({"arms": {arm: None for u in utilities.values() for arm in utility_arms(u)}})
    lines = ["| arm | " + " | ".join(utilities) + " |", "|---|" + "---|" * len(utilities)]
    lines += [f"| {arm} | " + " | ".join(utility_cell(u, arm, metric, digits) for u in utilities.values()) + " |"
              for arm in arms]
    return "\n".join(lines)


def utility_metrics_table(utility: dict[str, Any], metrics: Sequence[str]) -> str:
    """Markdown: one row per arm run, its training images (real + synthetic), optimiser steps and `mean ± sd` of each
    metric."""
    lines = ["| arm | training images (real + synthetic) | steps | " + " | ".join(m.replace("_", " ") for m in metrics)
             + " |", "|---|---|---|" + "---|" * len(metrics)]
    for arm in utility_arms(utility):
        counts = utility["counts"][arm]
        lines.append(f"| {arm} | {counts['real']} + {counts['synthetic']} | {utility['steps'].get(arm, 'n/a')} | "
                     + " | ".join(mean_sd(utility["arms"][arm].get(m)) for m in metrics) + " |")
    return "\n".join(lines)


def augmentation_difference_table(utility: dict[str, Any], metrics: Sequence[str]) -> str:
    """Markdown: every arm with synthetic data minus real+augmentation (paired by seed, mean and 95% interval)."""
    differences = utility.get("paired_difference_augmentation", {})
    lines = [f"| arm minus {REFERENCE_ARM} | " + " | ".join(m.replace("_", " ") for m in metrics) + " |",
             "|---|" + "---|" * len(metrics)]
    lines += [f"| {arm} | " + " | ".join(signed_interval(differences[arm].get(m)) for m in metrics) + " |"
              for arm in utility_arms(utility) if arm in differences]
    return "\n".join(lines)


def augmentation_target(utility: dict[str, Any], metric: str) -> dict[str, Any]:
    """Issue J's target on `metric`: an arm with synthetic data above real+augmentation, its paired 95% interval above
    0. Returns `{met, above (arms), best (highest mean difference), difference (its entry)}`."""
    differences = {arm: entry[metric] for arm, entry in utility.get("paired_difference_augmentation", {}).items()
                   if entry.get(metric) and entry[metric].get("mean") is not None}
    above = [arm for arm, entry in differences.items() if entry.get("ci95") and entry["ci95"][0] > 0]
    best = max(differences, key=lambda arm: differences[arm]["mean"], default=None)
    return {"metric": metric, "met": bool(above), "above": above, "best": best,
            "difference": differences.get(best)}


def utility_reading(utility: dict[str, Any], metric: str, digits: int = 3) -> list[str]:
    """Markdown bullets computed from the numbers: augmentation against real, every synthetic arm against
    real+augmentation, the target, and the study's notes."""
    name = metric.replace("_", " ")
    lines = []
    augmentation = utility["paired_difference"].get(REFERENCE_ARM, {}).get(metric)
    if augmentation:
        lines.append(f"- {REFERENCE_ARM} minus real, {name}: {signed_interval(augmentation, digits)}, "
                     f"{against_reference(augmentation, 'real')}.")
    differences = utility.get("paired_difference_augmentation", {})
    for arm in utility_arms(utility):
        if arm in differences:
            entry = differences[arm].get(metric)
            lines.append(f"- {arm} minus {REFERENCE_ARM}, {name}: {signed_interval(entry, digits)}, "
                         f"{against_reference(entry)}.")
    target = augmentation_target(utility, metric)
    if target["met"]:
        lines.append(f"- Target (an arm with synthetic data above {REFERENCE_ARM}, paired 95% interval above 0): "
                     f"**met** by {', '.join(target['above'])}.")
    elif target["best"] is not None:
        best = target["difference"]
        side = "a positive" if best["mean"] > 0 else "a negative" if best["mean"] < 0 else "a zero"
        lines.append(f"- Target (an arm with synthetic data above {REFERENCE_ARM}, paired 95% interval above 0): "
                     f"**not met**; the closest arm, {target['best']}, has {side} mean difference "
                     f"{signed_interval(best, digits)}.")
    lines += [f"- Note: {note.rstrip('.')}." for note in utility.get("notes", [])]
    return lines
