"""Monitoring: montages (2D grid, 3D tri-planar), TensorBoard scalars, sample PNGs, progress bar, health warnings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medvol.engines import AdversarialHealth, GenerativeAdversarialTrainer, TrainingMonitor, sample_montage
from medvol.engines.monitoring import triplanar_views
from tests.engines.toys import ToyCritic, ToyWassersteinGP, make_gan, make_loader

# [batch shape, expected picture shape]: 2D grid of ceil(sqrt(B)) columns; 3D one row of 3 views per volume
TEST_CASE_2D = [(5, 1, 8, 8), (2 * 8 + 2, 3 * 8 + 2 * 2)]
TEST_CASE_3D = [(2, 1, 8, 6, 4), (2 * 6 + 2, 3 * 8 + 2 * 2)]


@pytest.mark.parametrize("shape,expected", [TEST_CASE_2D, TEST_CASE_3D])
def test_sample_montage_shapes(shape, expected):
    picture = sample_montage(torch.rand(shape) * 2 - 1)
    assert picture.shape == expected and picture.dtype == np.uint8


def test_triplanar_views_are_the_central_slices_oriented_for_display():
    volume = np.zeros((8, 6, 4), dtype=np.float32)  # [x, y, z]; centre (4, 3, 2)
    volume[1, 2, 2] = 1.0  # in the axial slice z=2
    volume[4, 5, 0] = 2.0  # in the sagittal slice x=4
    axial, coronal, sagittal = triplanar_views(volume)
    assert axial.shape == (6, 8) and coronal.shape == (4, 8) and sagittal.shape == (4, 6)
    assert axial[6 - 1 - 2, 1] == 1.0  # rows run from high y (top) to low y; columns are x
    assert sagittal[4 - 1 - 0, 5] == 2.0  # rows from high z (superior) down; columns are y


def test_monitor_writes_scalars_samples_and_progress(tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    generator, critic, g_opt, d_opt = make_gan(3, 8)
    monitor = TrainingMonitor(run_dir=tmp_path, sample_interval=2, sample_count=3)
    trainer = GenerativeAdversarialTrainer(
        "cpu", make_loader(spatial_dims=3), generator, critic, g_opt, d_opt, ToyWassersteinGP(), max_iterations=3, monitor=monitor
    )
    trainer.run()
    assert [p.name for p in sorted((tmp_path / "samples").glob("*.png"))] == ["iteration_00000002.png", "iteration_00000003.png"]
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for tag in ("critic/loss", "critic/gradient_penalty", "critic/wasserstein", "generator/loss", "lr/generator", "lr/critic",
                "time/seconds_per_step", "time/samples_per_second", "memory/peak_bytes"):
        assert tag in tags, tags
    assert [e.step for e in events.Scalars("critic/gradient_penalty")] == [1, 2, 3]
    assert events.Tags()["images"] == ["samples"]
    assert "3/3" in capsys.readouterr().err  # the tqdm bar reached the end
    # the pictures use fixed latents from a private generator
    first = trainer.sample(3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(first, trainer.sample(3, generator=torch.Generator().manual_seed(0)))


def test_health_warns_after_patience():
    health = AdversarialHealth(patience=3)
    for iteration in range(1, 4):
        raised = health.update(iteration, accuracy=1.0, fake_diversity=0.5, real_diversity=0.5)
    assert len(raised) == 1 and "separated real and generated images perfectly" in raised[0]
    assert health.update(4, accuracy=1.0, fake_diversity=0.5, real_diversity=0.5) == []  # once per episode
    assert AdversarialHealth.ranking_accuracy(torch.tensor([2.0, 3.0]), torch.tensor([0.0, 1.0])) == 1.0
    assert AdversarialHealth.ranking_accuracy(torch.tensor([0.0]), torch.tensor([1.0])) == 0.0


class ConstantGenerator(nn.Module):
    """Ignores its latent code: a collapsed generator."""

    def __init__(self, size: int = 8):
        super().__init__()
        self.latent_size, self.num_classes, self.spatial_dims = 4, 0, 2
        self.image = nn.Parameter(torch.zeros(1, 1, size, size))
        self.scale = nn.Linear(4, 1)

    def forward(self, z, labels=None):
        return torch.tanh(self.image + 0 * self.scale(z)[:, :, None, None])


def test_collapsed_generator_is_reported(caplog):
    generator = ConstantGenerator()
    critic = ToyCritic(2, 8)
    trainer = GenerativeAdversarialTrainer(
        "cpu", make_loader(), generator, critic, torch.optim.Adam(generator.parameters()), torch.optim.Adam(critic.parameters()),
        ToyWassersteinGP(), critic_steps=1, max_iterations=3, health_interval=1, health=AdversarialHealth(patience=2),
    )
    with caplog.at_level("WARNING", logger="medvol.engines.guards"):
        trainer.run()
    assert any("collapsed" in w for w in trainer.health.warnings)
    assert "collapsed" in caplog.text


def test_autoencoder_samples_show_inputs_and_reconstructions(tmp_path):
    from PIL import Image

    from medvol.engines import AutoencoderTrainer
    from tests.engines.toys import ToyAutoencoder, reconstruction_loss

    network = ToyAutoencoder(2)
    trainer = AutoencoderTrainer(
        "cpu", make_loader(count=8, batch_size=4), network, torch.optim.Adam(network.parameters()), reconstruction_loss,
        max_iterations=2, monitor=TrainingMonitor(run_dir=tmp_path, sample_interval=2, sample_count=2, progress=False),
    )
    trainer.run()
    picture = np.asarray(Image.open(tmp_path / "samples" / "iteration_00000002.png"))
    assert picture.shape == (2 * 8 + 2, 2 * 8 + 2)  # 2 inputs + 2 reconstructions in a 2 x 2 grid
