"""The family registry (`medvol.families`): what a spec fixes, the registry's errors, and a toy family added by one
spec registered here (its bundle rendered into a temporary folder) that trains, samples and evaluates with no other
file touched. Tiny data: 16^2 phantoms, 2 iterations, networks of a few thousand parameters."""

from __future__ import annotations

import json

import pytest
import torch

from medvol.bundles import run_workflow
from medvol.bundles.render import write_bundle
from medvol.cli import main
from medvol.families import (
    BundleText,
    FamilyKind,
    FamilySpec,
    WidthRule,
    bundle_help,
    family_names,
    get_family,
    register_family,
    unregister_family,
)
from medvol.networks.gans import ResidualCritic, ResidualGenerator
from medvol.objectives import HingeLoss

SIZE = 16
TOY = FamilySpec(
    name="toy_hinge",
    kind=FamilyKind.ADVERSARIAL,
    networks={"generator": ResidualGenerator, "critic": ResidualCritic},
    network_args={"critic": {"norm": None, "spectral_norm": True}},
    conditional=True,
    objective=HingeLoss,
    objective_defaults={"mode_seeking_weight": 1.0},
    width_rule=WidthRule.RESIDUAL,
    description="toy: residual pair with a spectral-norm projection critic, hinge loss",
    bundle=BundleText(
        title="Toy hinge GAN",
        task="toy hinge GAN",
        summary="toy hinge GAN (residual networks, spectral-norm projection critic, hinge loss).",
        about="A family registered by a test.",
        learns="a residual generator and a spectral-norm critic trained with the hinge loss.",
        image_size=SIZE,
    ),
)


@pytest.fixture
def toy_family():
    register_family(TOY)
    try:
        yield TOY
    finally:
        unregister_family(TOY.name)


def test_the_kind_fills_what_a_spec_leaves_out():
    cae, wgan_gp = get_family("cae"), get_family("wgan_gp")
    assert (cae.output_range, cae.exported_network, cae.trainer) == ((0.0, 1.0), "autoencoder", "medvol.engines.AutoencoderTrainer")
    assert wgan_gp.output_range == (-1.0, 1.0) and wgan_gp.exported_network == "generator"
    assert wgan_gp.trainer_class().__name__ == "GenerativeAdversarialTrainer"
    assert wgan_gp.network_class("critic") is ResidualCritic and wgan_gp.objective_class().__name__ == "WassersteinGradientPenalty"
    assert family_names() == ("cae", "vae", "gan", "dcgan", "wgan", "wgan_gp", "cgan", "acwgan_gp")
    assert family_names(FamilyKind.AUTOENCODER) == ("cae", "vae")
    assert bundle_help().startswith("bundle name or path; the families: cae = convolutional autoencoder, vae = ")
    assert "cgan = conditional GAN (needs class labels), acwgan_gp = auxiliary-classifier WGAN-GP" in bundle_help()


def test_registry_errors_name_the_problem(toy_family):
    with pytest.raises(ValueError, match="unknown model family 'nope'; choose one of cae, .*toy_hinge"):
        get_family("nope")
    with pytest.raises(ValueError, match="'toy_hinge' is already registered"):
        register_family(TOY)
    with pytest.raises(ValueError, match=r"bad: adversarial families have the networks \['critic', 'generator'\]"):
        FamilySpec(name="bad", kind="adversarial", networks={"generator": ResidualGenerator}, objective=HingeLoss,
                   description="", bundle=TOY.bundle)
    with pytest.raises(ValueError, match="'medvol.nowhere.Trainer' is not an importable class"):
        FamilySpec(name="bad", kind="autoencoder", networks={"autoencoder": "x"}, objective=HingeLoss,
                   trainer="medvol.nowhere.Trainer", description="", bundle=TOY.bundle).trainer_class()
    with pytest.raises(TypeError):
        FamilySpec("bad")  # keyword-only


def test_toy_family_registered_by_one_spec_trains_samples_and_evaluates(toy_family, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    assert main(["prepare", "phantoms", "--out", str(data), "--mode", "slice", "--size", f"{SIZE},{SIZE}"]) == 0
    bundle = write_bundle(toy_family, tmp_path / "toy_hinge")
    train_yaml = (bundle / "configs" / "train.yaml").read_text()
    assert "family: toy_hinge" in train_yaml and "class_count(@dataset_dir)" in train_yaml  # conditional
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert metadata["name"] == "medvol toy_hinge" and metadata["network_data_format"]["inputs"]["image"]["num_channels"] == 129

    run_dir = tmp_path / "run"
    overrides = {
        "dataset_dir": str(data), "output_dir": str(run_dir), "iterations": 2, "batch_size": 4, "checkpoint_every": 0,
        "sample_every": 2, "evaluate_every": 0, "device": "cpu", "precision": "fp32", "objective": {"critic_steps": 1},
        "network": {"latent_size": 8, "base_channels": 4, "max_channels": 8},
    }
    workflow = run_workflow(bundle, "train", overrides)
    trainer = workflow.parser.get_parsed_content("train#trainer")
    assert isinstance(workflow.parser.get_parsed_content("train#objective"), HingeLoss)
    assert trainer.state.iteration == 2
    critic = workflow.parser.get_parsed_content("networks")["critic"]
    assert critic.spectral_norm and critic.num_classes == 2  # the spec's critic options and the data's classes
    record = json.loads((run_dir / "run.json").read_text())
    assert record["family"] == "toy_hinge" and record["num_classes"] == 2
    assert (run_dir / "models" / "model.pt").is_file()

    run_workflow(bundle, "sample", {"run_dir": str(run_dir), "n": 3, "device": "cpu"})
    samples = json.loads((run_dir / "synthetic" / "datalist.json").read_text())
    assert len(samples["training"]) == 6 and {entry["label"] for entry in samples["training"]} == {0, 1}

    run_workflow(bundle, "evaluate", {"run_dir": str(run_dir), "classifier_epochs": 1, "device": "cpu"})
    metrics = json.loads((run_dir / "evaluation" / "metrics.json").read_text())
    assert metrics["inputs"]["counts"]["synthetic"]["total"] == 6
    assert torch.isfinite(torch.tensor(float(metrics["fid"]["value"])))
    assert "toy_hinge" in (run_dir / "evaluation" / "report.html").read_text(encoding="utf-8")
