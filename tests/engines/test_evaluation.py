"""Evaluation during training: FID/diversity curves at the right iterations, the lowest-FID checkpoint kept as `best`
(and sampled from), bitwise-unchanged training and resume with the evaluator on, no evaluation without a validation
split, class proportions, and `medvol train --evaluate-every` end to end on tiny phantoms."""

from __future__ import annotations

import json
import logging
import random
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from medvol.engines import GenerativeAdversarialTrainer, CheckpointManager, TrainingEvaluator, TrainingMonitor
from medvol.engines.evaluation import class_proportional_labels, evaluation_interval
from medvol.errors import MedvolInputError
from medvol.sampling import resolve_checkpoint
from tests.engines.toys import ToyWassersteinGP, make_gan, make_loader

SIZE = 16
EVALUATION_LOG = "evaluation at iteration"


class PooledFeatures:
    """A fixed 4-feature space (2x2 average pooling). It also draws from every global generator on purpose: training
    results must not change all the same."""

    kind = "test"
    description = "2x2 average pooling"

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        torch.rand(1), np.random.rand(), random.random()
        return F.adaptive_avg_pool2d(images.float(), 2).flatten(1).double().numpy()


def validation_set(count: int = 12, minority: int = 3, seed: int = 5) -> tuple[torch.Tensor, np.ndarray]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand((count, 1, SIZE, SIZE), generator=generator) * 2 - 1
    labels = np.asarray([1] * minority + [0] * (count - minority), dtype=np.int64)
    return images, labels


def evaluator(run_dir, every, **kwargs) -> TrainingEvaluator:
    return TrainingEvaluator(
        evaluate_every=every, run_dir=run_dir, validation_data=validation_set(), feature_extractor=PooledFeatures(), **kwargs
    )


def gan_trainer(run_dir, iterations, handlers=None, num_classes=0, checkpoint_every=2, **kwargs) -> GenerativeAdversarialTrainer:
    generator, critic, g_opt, d_opt = make_gan(2, SIZE, num_classes=num_classes, seed=1)
    return GenerativeAdversarialTrainer(
        "cpu", make_loader(size=SIZE, num_classes=2), generator, critic, g_opt, d_opt, ToyWassersteinGP(),
        max_iterations=iterations, run_dir=run_dir, checkpoint_every=checkpoint_every, ema_decay=0.5, health_interval=0, precision="fp32",
        train_handlers=handlers, **kwargs,
    )


def history(run_dir) -> dict:
    return json.loads((run_dir / "evaluation" / "history.json").read_text())


def tensors(tree, prefix=""):
    """Flatten nested dicts/lists of a checkpoint into {path: value}."""
    if isinstance(tree, dict):
        return {k: v for key, value in tree.items() for k, v in tensors(value, f"{prefix}/{key}").items()}
    if isinstance(tree, (list, tuple)):
        return {k: v for i, value in enumerate(tree) for k, v in tensors(value, f"{prefix}/{i}").items()}
    return {prefix: tree}


def assert_same_training_state(expected: dict, actual: dict) -> None:
    for part in ("networks", "optimizers", "extra", "stream"):
        left, right = tensors(expected[part]), tensors(actual[part])
        assert left.keys() == right.keys()
        for key in left:
            same = torch.equal(left[key], right[key]) if isinstance(left[key], torch.Tensor) else left[key] == right[key]
            assert same, f"{part}{key} differs"


def test_evaluation_interval_rules():
    assert evaluation_interval(0, 5000) == 0 and evaluation_interval(None, 5000) == 0
    assert evaluation_interval(50, 10) == 50
    assert evaluation_interval("auto", 1999) == 0 and evaluation_interval("auto", None) == 0
    assert evaluation_interval("auto", 2000) == 200 and evaluation_interval("auto", 20000) == 2000
    with pytest.raises(ValueError, match="evaluate_every"):
        evaluation_interval(-1, 100)


@pytest.mark.parametrize(
    "labels,count,num_classes,expected",
    [
        ([0, 0, 0, 1], 8, 2, [0] * 6 + [1] * 2),
        ([0, 1, 2], 4, 3, [0, 0, 1, 2]),  # equal shares: the remainder goes to the first class
        ([2, 2, 1, -1], 5, 3, [1, 1, 2, 2, 2]),  # 1/3 and 2/3 of 5: 1.67 -> 2 and 3.33 -> 3; unlabelled ignored
        ([-1, -1], 3, 3, [0, 1, 2]),  # no labelled reference: equal shares
    ],
)
def test_class_proportional_labels(labels, count, num_classes, expected):
    assert class_proportional_labels(np.asarray(labels), count, num_classes).tolist() == expected


def test_scalars_are_logged_at_the_evaluation_iterations_and_the_last(tmp_path, caplog):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    caplog.set_level(logging.INFO, logger="medvol.engines.evaluation")
    monitor = TrainingMonitor(run_dir=tmp_path, progress=False)
    trainer = gan_trainer(tmp_path, 5, handlers=[evaluator(tmp_path, 2)], monitor=monitor)
    trainer.run()

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    for tag in ("evaluation/fid", "evaluation/diversity", "evaluation/diversity_real", "evaluation/ms_ssim"):
        assert [e.step for e in events.Scalars(tag)] == [2, 4, 5], tag
    assert len(list((tmp_path / "tensorboard").iterdir())) == 1  # the monitor's event file, not a second one
    recorded = history(tmp_path)["evaluations"]
    assert [e["iteration"] for e in recorded] == [2, 4, 5]
    np.testing.assert_allclose([e.value for e in events.Scalars("evaluation/fid")], [e["fid"] for e in recorded], rtol=1e-6)
    # the validation images' own diversity is the same number at every evaluation (fixed set, fixed pairs)
    assert len({e["diversity_real"] for e in recorded}) == 1 and recorded[0]["diversity_real"] > 0
    assert all(e["samples"] == 12 and e["fid"] >= 0 for e in recorded)
    assert len([r for r in caplog.records if EVALUATION_LOG in r.getMessage()]) == 3  # one line per evaluation


def test_best_checkpoint_is_the_lowest_fid_and_sampling_resolves_it(tmp_path, monkeypatch):
    scripted = iter([5.0, 3.0, 4.0, 2.5, 6.0])
    monkeypatch.setattr("medvol.metrics.fidelity.frechet_distance", lambda real, synthetic: next(scripted))
    with pytest.raises(MedvolInputError, match="no checkpoints/ folder"):
        resolve_checkpoint(tmp_path, "best")
    trainer = gan_trainer(tmp_path, 5, handlers=[evaluator(tmp_path, 1)], checkpoint_every=0, keep_last=1)
    trainer.run()

    pointer = CheckpointManager(tmp_path / "checkpoints").read_pointer()
    assert pointer["best"] == {"file": "checkpoint_00000004.pt", "iteration": 4, "metric": 2.5}
    assert pointer["iteration"] == 5  # the final checkpoint stays the latest
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("*.pt")) == ["checkpoint_00000004.pt", "checkpoint_00000005.pt"]
    assert resolve_checkpoint(tmp_path, "best") == tmp_path / "checkpoints" / "checkpoint_00000004.pt"
    assert resolve_checkpoint(tmp_path) == tmp_path / "checkpoints" / "checkpoint_00000005.pt"
    document = history(tmp_path)
    assert [e["fid"] for e in document["evaluations"]] == [5.0, 3.0, 4.0, 2.5, 6.0]
    # a checkpoint is written only for a new lowest FID
    assert [e.get("checkpoint") for e in document["evaluations"]] == [
        "checkpoint_00000001.pt", "checkpoint_00000002.pt", None, "checkpoint_00000004.pt", None
    ]
    assert document["best"]["iteration"] == 4


def test_the_best_checkpoint_holds_the_weights_that_were_evaluated(tmp_path):
    handler = evaluator(tmp_path, 1)
    trainer = gan_trainer(tmp_path, 3, handlers=[handler], num_classes=2)
    trainer.run()
    assert np.bincount(handler.labels).tolist() == [9, 3]  # the validation split's class proportions
    best = CheckpointManager(tmp_path / "checkpoints").read_pointer()["best"]
    fids = {e["iteration"]: e["fid"] for e in history(tmp_path)["evaluations"]}
    assert best["metric"] == min(fids.values()) and fids[best["iteration"]] == best["metric"]
    # its EMA generator, evaluated again with the same latents and labels, gives back exactly the recorded FID
    trainer.load_state_dict(CheckpointManager.load(resolve_checkpoint(tmp_path, "best")))
    assert handler.evaluate(trainer)["fid"] == pytest.approx(best["metric"], rel=1e-9)


def test_training_and_resume_are_bitwise_unchanged_by_the_evaluator(tmp_path):
    reference = gan_trainer(tmp_path / "reference", 6)
    reference.run()
    expected = CheckpointManager(tmp_path / "reference" / "checkpoints").load_latest()

    gan_trainer(tmp_path / "evaluated", 3, handlers=[evaluator(tmp_path / "evaluated", 2)]).run()  # stops at 3 ...
    resumed = gan_trainer(tmp_path / "evaluated", 6, handlers=[evaluator(tmp_path / "evaluated", 2)])
    resumed.run()  # ... and resumes to 6
    assert resumed.state.resumed_from.endswith("checkpoint_00000003.pt")
    actual = CheckpointManager(tmp_path / "evaluated" / "checkpoints").load_latest()
    assert actual["iteration"] == expected["iteration"] == 6
    assert_same_training_state(expected, actual)
    assert [e["iteration"] for e in history(tmp_path / "evaluated")["evaluations"]] == [2, 3, 4, 6]


def test_no_validation_split_means_no_evaluation_and_one_message(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="medvol.engines.evaluation")
    empty = (torch.empty(0, 1, SIZE, SIZE), np.zeros(0, dtype=np.int64))
    handler = TrainingEvaluator(evaluate_every=1, run_dir=tmp_path, validation_data=empty, feature_extractor=PooledFeatures())
    gan_trainer(tmp_path, 3, handlers=[handler]).run()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "no evaluation during training" in warnings[0] and "validation" in warnings[0]
    assert not any(EVALUATION_LOG in r.getMessage() for r in caplog.records)
    assert not (tmp_path / "evaluation").exists()
    assert CheckpointManager(tmp_path / "checkpoints").read_pointer()["best"] is None
    with pytest.raises(MedvolInputError, match="no best checkpoint yet"):
        resolve_checkpoint(tmp_path, "best")


def test_a_rank_other_than_zero_does_not_evaluate(tmp_path, monkeypatch):
    monkeypatch.setattr("medvol.engines.evaluation.is_rank_zero", lambda: False)
    features = PooledFeatures()
    features.calls = 0
    counting = lambda images: (setattr(features, "calls", features.calls + 1), features(images))[1]  # noqa: E731
    handler = TrainingEvaluator(evaluate_every=1, run_dir=tmp_path, validation_data=validation_set(), feature_extractor=counting)
    gan_trainer(tmp_path, 2, handlers=[handler]).run()
    assert features.calls == 0 and not handler.active and not (tmp_path / "evaluation").exists()


def test_the_evaluator_refuses_a_trainer_that_ranks_checkpoints_by_another_metric(tmp_path):
    with pytest.raises(ValueError, match="best_metric"):
        gan_trainer(tmp_path, 2, handlers=[evaluator(tmp_path, 1)], best_metric="generator/loss")


@pytest.mark.slow
def test_medvol_train_evaluate_every_logs_curves_and_samples_from_best(tmp_path, monkeypatch, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from medvol.bundles import BUNDLES_DIR
    from medvol.cli import main
    from medvol.data.phantoms import write_phantom_dataset

    monkeypatch.setattr("medvol.evaluation.classifier.DEFAULT_EPOCHS", 2)  # a feature classifier in seconds
    raw = write_phantom_dataset(tmp_path / "raw", spatial_dims=2, size=(SIZE, SIZE), n_per_class=8, seed=3)
    bundle = tmp_path / "tiny_dcgan"
    shutil.copytree(BUNDLES_DIR / "dcgan", bundle)
    config = yaml.safe_load((bundle / "configs" / "train.yaml").read_text())
    config.update(
        network={"latent_size": 8, "generator": {"channels": [16, 8]}, "critic": {"channels": [8, 16]}},
        objective={"critic_steps": 1}, image_size=SIZE, batch_size=4, sample_every=0, precision="fp32",
    )
    (bundle / "configs" / "train.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    run_dir = tmp_path / "run"

    def train(out, iterations: int, evaluate_every: int) -> int:
        return main(["train", "--bundle", str(bundle), "--data", str(raw), "--out", str(out), "--spatial-dims", "2",
                     "--iterations", str(iterations), "--evaluate-every", str(evaluate_every), "--device", "cpu",
                     "--precision", "fp32"])

    assert train(run_dir, 4, 2) == 0
    assert "best checkpoint checkpoint_0000000" in capsys.readouterr().out
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("evaluation/fid")] == [2, 4]
    assert [e.step for e in events.Scalars("evaluation/diversity")] == [2, 4]
    assert (run_dir / "evaluation" / "features").is_dir()  # the feature space is cached in the run
    best = json.loads((run_dir / "checkpoints" / "latest.json").read_text())["best"]
    fids = {e["iteration"]: e["fid"] for e in history(run_dir)["evaluations"]}
    assert best["iteration"] in (2, 4) and best["metric"] == min(fids.values())

    out = tmp_path / "synthetic"
    assert main(["sample", str(run_dir), "--n", "3", "--checkpoint", "best", "--out", str(out)]) == 0
    datalist = json.loads((out / "datalist.json").read_text())
    assert len(datalist["training"]) == 3 and datalist["provenance"]["checkpoint"].endswith(best["file"])

    off = tmp_path / "off"
    assert train(off, 1, 0) == 0
    capsys.readouterr()
    assert main(["sample", str(off), "--n", "1", "--checkpoint", "best", "--out", str(tmp_path / "none")]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "no best checkpoint yet" in error[0]
