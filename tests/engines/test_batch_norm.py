"""Batch norm and micro-batching: networks with batch norm always train on the whole effective batch (a requested or
planned split is refused, with a console warning and the reason in plan.json), an out-of-memory error is not answered
by a split, the planner probes no smaller micro-batch, and a batch of one never reaches batch norm."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from medvol.engines import GenerativeAdversarialTrainer
from medvol.engines.memory import MemoryPlan, batch_norm_layers
from medvol.errors import MedvolInputError
from medvol.networks import factory
from medvol.objectives import build_objective
from tests.engines.toys import make_loader

SIZE = 16
TINY = {
    "gan": {"latent_size": 8, "generator": {"hidden_sizes": [32, 64]}, "critic": {"hidden_sizes": [32]}},
    "dcgan": {"latent_size": 8, "generator": {"channels": [16, 8]}, "critic": {"channels": [8, 16]}},
    "cgan": {"latent_size": 8, "generator": {"channels": [16, 8]}, "critic": {"channels": [8, 16]}},
}


def _trainer(family: str, tmp_path=None, batch_size: int = 4, **kwargs) -> GenerativeAdversarialTrainer:
    num_classes = 2 if family == "cgan" else 0
    torch.manual_seed(0)
    networks = factory.build(family, 2, SIZE, num_classes=num_classes, **TINY[family])
    objective, settings = build_objective(family, critic_steps=1)
    optimizer = settings["optimizer"]
    optimizers = [
        getattr(torch.optim, optimizer["name"])(networks[name].parameters(), **{k: v for k, v in optimizer.items() if k != "name"})
        for name in ("generator", "critic")
    ]
    return GenerativeAdversarialTrainer(
        "cpu", make_loader(count=8, batch_size=batch_size, size=SIZE, num_classes=2, shuffle=False),
        networks["generator"], networks["critic"], *optimizers, objective, max_iterations=2, precision="fp32",
        health_interval=0, run_dir=tmp_path, **kwargs,
    )


def test_batch_norm_layers_are_found_in_the_families_that_have_them():
    networks = factory.build("dcgan", 2, SIZE, **TINY["dcgan"])
    assert len(batch_norm_layers([networks["generator"]])) >= 1 and len(batch_norm_layers([networks["critic"]])) >= 1
    assert batch_norm_layers(list(factory.build("cae", 2, SIZE).values())) == []


@pytest.mark.parametrize("family", ["dcgan", "gan", "cgan"])
def test_a_requested_split_is_refused_and_training_equals_the_whole_batch(family, tmp_path, caplog):
    whole = _trainer(family)
    whole.run()
    with caplog.at_level(logging.WARNING, logger="medvol.engines.trainer"):
        split = _trainer(family, tmp_path, micro_batch=1)  # the FC gan's BatchNorm1d cannot normalise a batch of one
        split.run()
    assert (split.plan.micro_batch, split.plan.accumulation_steps) == (4, 1)
    assert "batch norm" in split.plan.batch_norm and "generator" in split.plan.batch_norm
    assert json.loads((tmp_path / "plan.json").read_text())["batch_norm"] == split.plan.batch_norm
    assert any("micro-batch 1 not used" in r.getMessage() for r in caplog.records)
    for name in ("generator", "critic"):
        expected, actual = whole.networks[name].state_dict(), split.networks[name].state_dict()
        assert all(torch.equal(expected[k], actual[k]) for k in expected), name


def test_out_of_memory_with_batch_norm_is_not_answered_by_a_split():
    def oom(trainer, micro_batch):
        raise torch.OutOfMemoryError("simulated")

    trainer = _trainer("dcgan", oom_injector=oom)
    with pytest.raises(torch.OutOfMemoryError, match="batch norm"):
        trainer.run()
    assert trainer.plan.micro_batch == 4 and trainer.plan.oom_events == []


def test_the_planner_probes_only_the_whole_batch_of_a_batch_norm_network(tmp_path):
    trainer = _trainer("gan", memory_plan="auto", max_memory_gb=4)
    trainer.run()
    assert trainer.plan.method == "cpu-estimate" and trainer.plan.micro_batch == 4
    assert [probe["micro_batch"] for probe in trainer.plan.probes] == [4]
    tight = _trainer("gan", memory_plan="auto", max_memory_gb=1e-6)
    with pytest.raises(MemoryError, match="effective batch of 4 does not fit.*batch norm"):
        tight.run()


def test_a_batch_of_one_is_refused_before_batch_norm_sees_it():
    trainer = _trainer("gan", batch_size=1)
    with pytest.raises(MedvolInputError, match="batch norm, which needs at least 2 samples"):
        trainer.run()


def test_networks_without_batch_norm_keep_their_plan():
    plan = MemoryPlan.fixed(4, 2)
    assert plan.batch_norm is None
    from tests.engines.toys import ToyWasserstein, make_gan

    generator, critic, g_opt, d_opt = make_gan(2, 8)
    trainer = GenerativeAdversarialTrainer("cpu", make_loader(), generator, critic, g_opt, d_opt, ToyWasserstein(), micro_batch=2, max_iterations=1)
    trainer.run()
    assert (trainer.plan.micro_batch, trainer.plan.batch_norm) == (2, None)
