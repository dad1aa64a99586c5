"""The parser of `medvol`: every sub-command's options are the keyword parameters of its typed `run` function, and
the defaults and the numbers in the help come from the constants the library uses."""

from __future__ import annotations

import argparse
import importlib
import inspect

from medvol import cli, defaults


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _help(parser: argparse.ArgumentParser, command: str) -> str:
    return " ".join(_subparsers(parser)[command].format_help().split())


def test_every_option_is_a_keyword_parameter_of_its_command_function():
    commands = _subparsers(cli.build_parser())
    assert list(commands) == ["inspect", "convert", "prepare", "train", "sample", "evaluate", "bench", "demo"]
    for name, parser in commands.items():
        options = {a.dest for a in parser._actions if not isinstance(a, argparse._HelpAction)}
        module = importlib.import_module(f"medvol.commands.{name}")
        parameters = dict(inspect.signature(module.run).parameters)
        if parameters.pop("options", None) is not None:  # `train`'s **options are its TrainingOptions
            parameters.update(inspect.signature(module.TrainingOptions).parameters)
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters.values()), name
        assert options == set(parameters), name
        required = {p.name for p in parameters.values() if p.default is inspect.Parameter.empty}
        assert required <= {a.dest for a in parser._actions if a.required}, name


def test_main_passes_the_options_by_name(monkeypatch):
    from medvol.commands import convert

    calls = []
    monkeypatch.setattr(convert, "run", lambda **options: calls.append(options) or 0)
    assert cli.main(["convert", "in.dcm", "out.nii.gz", "--series", "UID"]) == 0
    assert calls == [{"input_path": "in.dcm", "output": "out.nii.gz", "series": "UID"}]


def test_defaults_and_help_numbers_come_from_the_constants(monkeypatch):
    from medvol.commands import demo
    from medvol.data import splits
    from medvol.io import duplicates

    monkeypatch.setattr(defaults, "SEED", 5)
    monkeypatch.setattr(defaults, "UTILITY_SEEDS", 7)
    monkeypatch.setattr(defaults, "SYNTHETIC_RATIO", 2.5)
    monkeypatch.setattr(defaults, "CLASSIFIER_EPOCHS", 12)
    monkeypatch.setattr(defaults, "CLASSIFIER_MIN_STEPS", 321)
    monkeypatch.setattr(defaults, "BASE_WIDTH", {2: 48, 3: 24})
    monkeypatch.setattr(defaults, "WIDTH_DOUBLING_DATASET_SIZES", (111, 2222))
    monkeypatch.setattr(defaults, "AUTO_EVALUATIONS", 4)
    monkeypatch.setattr(defaults, "AUTO_EVALUATION_MIN_ITERATIONS", 900)
    monkeypatch.setattr(splits, "DEFAULT_FRACTIONS", (0.5, 0.3, 0.2))
    monkeypatch.setattr(duplicates, "NEAR_DUPLICATE_CORRELATION", 0.97)
    monkeypatch.setattr(demo, "DEMO_MINUTES", 3.0)
    parser = cli.build_parser()
    evaluate = parser.parse_args(["evaluate", "--real", "r", "--out", "o"])
    assert (evaluate.seeds, evaluate.synthetic_ratio, evaluate.seed) == (7, 2.5, 5)
    assert parser.parse_args(["demo"]).minutes == 3.0
    assert parser.parse_args(["prepare", "s", "--out", "o"]).seed == 5
    text = _help(parser, "evaluate")
    assert "seeds of the utility study (default 7)" in text and "(default 2.5)" in text
    assert "the recipe's 12 epochs, and at least 321 optimiser steps" in text
    text = _help(parser, "train")
    assert "(default: 48 in 2D, 24 in 3D, doubled from 111 and 2222 training samples)" in text
    assert "4 evaluations in runs of 900 iterations" in text and "random seed (default 5)" in text
    text = _help(parser, "prepare")
    assert "(default 0.5,0.3,0.2;" in text and "above 0.97" in text
    assert "(default 3)" in _help(parser, "demo")



def test_the_library_applies_the_defaults_the_help_states():
    from medvol.engines.evaluation import evaluation_interval
    from medvol.evaluation import evaluate, utility_study
    from medvol.evaluation.classifier import DEFAULT_BATCH_SIZE, recipe_epochs
    from medvol.networks.factory import default_width

    low, high = defaults.WIDTH_DOUBLING_DATASET_SIZES
    assert [default_width(2), default_width(3, low), default_width(3, high)] == [
        defaults.BASE_WIDTH[2], 2 * defaults.BASE_WIDTH[3], 4 * defaults.BASE_WIDTH[3]]
    shortest = defaults.AUTO_EVALUATION_MIN_ITERATIONS
    assert evaluation_interval("auto", shortest - 1) == 0
    assert evaluation_interval("auto", shortest) == shortest // defaults.AUTO_EVALUATIONS
    large = DEFAULT_BATCH_SIZE * defaults.CLASSIFIER_MIN_STEPS  # one step per epoch would be too few
    assert recipe_epochs(large) == defaults.CLASSIFIER_EPOCHS
    assert recipe_epochs(DEFAULT_BATCH_SIZE) == defaults.CLASSIFIER_MIN_STEPS
    for function in (evaluate, utility_study):
        parameters = inspect.signature(function).parameters
        assert parameters["seeds"].default == defaults.UTILITY_SEEDS
        assert parameters["synthetic_ratio"].default == defaults.SYNTHETIC_RATIO
