"""Critic augmentation inside GenerativeAdversarialTrainer: applied to every critic input in training and to nothing else, a
generator trained through it learns the unaugmented images, ADA's probability follows the critic's real scores
with medvol's objectives, and `medvol train --critic-augment` records, checks and refuses settings in one line."""

from __future__ import annotations

import json

import pytest
import torch
from ignite.engine import Events
from monai.utils import GanKeys
from torch import nn

from medvol.cli import main
from medvol.data.phantoms import write_phantom_dataset
from medvol.engines import GenerativeAdversarialTrainer
from medvol.objectives.adversarial import NonSaturatingGANLoss, WassersteinGradientPenalty
from tests.engines.toys import ToyCritic, ToyWassersteinGP, make_gan, make_loader

CUTOUT_ONLY = {"mode": "fixed", "p": 1.0, "ops": ["cutout"]}


def _trainer(critic_augment, iterations=2, objective=None, spatial_dims=2, size=8, **kwargs):
    generator, critic, g_opt, d_opt = make_gan(spatial_dims, size, seed=1)
    loader = make_loader(count=8, batch_size=4, spatial_dims=spatial_dims, size=size)
    return GenerativeAdversarialTrainer(
        "cpu", loader, generator, critic, g_opt, d_opt, objective or ToyWassersteinGP(), max_iterations=iterations,
        precision="fp32", health_interval=0, critic_augment=critic_augment, **kwargs,
    )


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_every_critic_input_in_training_is_augmented_real_fake_penalty_and_generator_step(spatial_dims):
    # cutout at p=1 fills a box with exactly -1, a value neither the data (uniform) nor tanh outputs hit
    trainer = _trainer(CUTOUT_ONLY, iterations=2, spatial_dims=spatial_dims)
    seen = []
    trainer.critic.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    trainer.run()
    # per iteration: 2 critic steps x (real, fake, interpolates) + 1 generator step
    assert len(seen) == 2 * (2 * 3 + 1)
    for images in seen:
        assert bool((images == -1.0).flatten(1).any(1).all())


def test_samples_and_logged_fakes_are_the_generators_output_untouched():
    trainer = _trainer({"mode": "fixed", "p": 1.0}, iterations=1)
    produced = []
    trainer.generator.register_forward_hook(lambda module, args, output: produced.append(output.detach().clone()))
    trainer.run()
    fakes = trainer.state.output[GanKeys.FAKES]
    assert torch.equal(fakes, produced[-1])  # the generator step's images, not changed in place by the augmentation

    plain = _trainer(None, iterations=1)
    plain.generator.load_state_dict(trainer.generator.state_dict())
    plain.state.device = torch.device("cpu")  # set by run(), which this trainer never did
    samples = trainer.sample(4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(samples, plain.sample(4, generator=torch.Generator().manual_seed(0)))
    assert not bool((samples == -1.0).any())


class LearnedImage(nn.Module):
    """A generator that ignores its noise and learns one image."""

    spatial_dims, latent_size, num_classes = 2, 2, 0

    def __init__(self, size: int):
        super().__init__()
        self.image = nn.Parameter(torch.zeros(1, 1, size, size))

    def forward(self, z, labels=None):
        return torch.tanh(self.image).expand(z.shape[0], -1, -1, -1)


def test_a_generator_trained_through_translation_and_cutout_makes_centred_whole_images():
    """Real and generated images pass through the same random shifts and cutouts, so the generator that fools the
    critic is the one that makes the real image, unshifted and whole. (Had the augmentation reached the real images
    only, or only the critic step, the learned image would be shifted and holed: measured 0.22-0.36 mean error.)"""
    torch.manual_seed(0)
    size = 16
    target = -torch.ones(1, size, size)
    target[:, 5:11, 5:11] = 1.0
    loader = torch.utils.data.DataLoader([{"image": target}] * 64, batch_size=8, shuffle=True, drop_last=True)
    generator, critic = LearnedImage(size), ToyCritic(2, size, channels=8)
    trainer = GenerativeAdversarialTrainer(
        "cpu", loader, generator, critic,
        torch.optim.Adam(generator.parameters(), lr=0.05, betas=(0.5, 0.99)),
        torch.optim.Adam(critic.parameters(), lr=2e-3, betas=(0.5, 0.99)),
        NonSaturatingGANLoss(), max_iterations=200, precision="fp32", health_interval=0,
        critic_augment={"mode": "fixed", "p": 1.0, "ops": ["translation", "cutout"]},
    )
    trainer.run()
    image = trainer.sample(1)[0, 0]
    weights = (image + 1).clamp(min=0)
    grid = torch.arange(size, dtype=torch.float32)
    centre = [float((weights.sum(1 - axis) * grid).sum() / weights.sum()) for axis in (0, 1)]
    assert centre == pytest.approx([7.5, 7.5], abs=0.25)
    assert float(image[5:11, 5:11].min()) > 0.0  # no cut-out hole
    assert float((image - target[0]).abs().mean()) < 0.05


class RealDetector(nn.Module):
    """Scores `sign` * 5 an image of positive mean (the real ones: all +1, shifted at most 1/8) and the opposite
    otherwise (the generated ones, about -0.96), plus a vanishing image term so gradients flow."""

    def __init__(self, sign: float):
        super().__init__()
        self.sign = sign
        self.scale = nn.Parameter(torch.tensor(5.0))

    def forward(self, x, labels=None):
        mean = x.flatten(1).mean(1)
        return self.sign * self.scale * torch.where(mean > 0, 1.0, -1.0) + 1e-3 * mean


@pytest.mark.parametrize("objective", [NonSaturatingGANLoss(), WassersteinGradientPenalty()], ids=["bce", "wgan_gp"])
@pytest.mark.parametrize("sign, start, expected", [(1.0, 0.0, 0.2), (-1.0, 0.5, 0.3)])
def test_ada_probability_rises_when_the_critic_scores_reals_positive_and_falls_otherwise(objective, sign, start, expected):
    generator, critic = LearnedImage(8), RealDetector(sign)
    with torch.no_grad():
        generator.image.fill_(-2.0)
    loader = torch.utils.data.DataLoader([{"image": torch.ones(1, 8, 8)}] * 8, batch_size=4, shuffle=True, drop_last=True)
    trainer = GenerativeAdversarialTrainer(
        "cpu", loader, generator, critic, torch.optim.SGD(generator.parameters(), lr=0.0),
        torch.optim.SGD(critic.parameters(), lr=0.0), objective, critic_steps=1, max_iterations=8, precision="fp32",
        health_interval=0, critic_augment={"mode": "ada", "p": start, "target": 0.6, "speed": 0.1, "ops": ["translation"]},
    )
    curves = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda engine: curves.append(dict(engine.state.output)))
    trainer.run()
    assert trainer.critic_augmentation.p == pytest.approx(expected)
    assert curves[-1]["critic_augment/p"] == pytest.approx(expected)
    # counted from the critic's scores of the real batch only: the generated images score the other sign
    assert curves[-1]["critic_augment/real_sign"] == sign


def test_resume_refuses_a_checkpoint_of_another_augmentation_setting(tmp_path):
    _trainer("ada", iterations=2, run_dir=tmp_path).run()
    with pytest.raises(ValueError, match="trained with critic augmentation and this run is without it"):
        _trainer(None, iterations=3, run_dir=tmp_path).run()
    with pytest.raises(ValueError, match="differs from this run's"):
        _trainer("ada:speed=0.1", iterations=3, run_dir=tmp_path).run()
    _trainer("ada", iterations=3, run_dir=tmp_path).run()


def _train_argv(raw, run_dir, *extra):
    return ["train", "--bundle", "cgan", "--data", str(raw), "--out", str(run_dir), "--device", "cpu", "--precision",
            "fp32", "--evaluate-every", "0", "--image-size", "16,16", "--width", "4", *extra]


def test_train_records_critic_augment_in_run_json_and_resumes_only_with_it(tmp_path, capsys):
    raw = write_phantom_dataset(tmp_path / "raw", spatial_dims=2, size=(16, 16), n_per_class=4, seed=3)
    run_dir = tmp_path / "run"
    assert main(_train_argv(raw, run_dir, "--iterations", "4", "--critic-augment", "ada:speed=0.5")) == 0
    record = json.loads((run_dir / "run.json").read_text())
    assert record["critic_augment"] == {"mode": "ada", "p": 0.0, "target": 0.6, "speed": 0.5,
                                        "ops": ["translation", "rotation", "scale", "brightness", "contrast", "cutout"]}
    state = torch.load(run_dir / "checkpoints" / "checkpoint_00000004.pt", weights_only=True)
    assert state["extra"]["critic_augment"]["iterations"] == 4
    capsys.readouterr()
    for changed in ([], ["--critic-augment", "fixed:0.5"]):
        assert main(_train_argv(raw, run_dir, "--iterations", "5", *changed)) == 2
        error = capsys.readouterr().err.strip().splitlines()
        assert len(error) == 1 and "resume it with the same --critic-augment settings" in error[0], error
    assert main(_train_argv(raw, run_dir, "--iterations", "5", "--critic-augment", "ada:speed=0.5")) == 0


@pytest.mark.parametrize("argv, problem", [
    (["--critic-augment", "always"], "--critic-augment: expected off, fixed:P or ada"),
    (["--critic-augment", "fixed:2"], "--critic-augment: p must be between 0.0 and 1.0"),
])
def test_a_bad_critic_augment_value_is_one_line(argv, problem, tmp_path, capsys):
    raw = write_phantom_dataset(tmp_path / "raw", spatial_dims=2, size=(16, 16), n_per_class=2, seed=3)
    assert main(_train_argv(raw, tmp_path / "run", *argv)) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and problem in error[0], error


def test_an_autoencoder_bundle_refuses_critic_augmentation_in_one_line(tmp_path, capsys):
    raw = write_phantom_dataset(tmp_path / "raw", spatial_dims=2, size=(16, 16), n_per_class=2, seed=3)
    argv = ["train", "--bundle", "cae", "--data", str(raw), "--out", str(tmp_path / "run"), "--device", "cpu",
            "--iterations", "1", "--critic-augment", "ada"]
    assert main(argv) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "cae has no critic" in error[0], error
