"""Data-sized default widths (`factory.sized_options`), parameter counts, and the minibatch-standard-deviation
option of every critic."""

from __future__ import annotations

import pytest
import torch

from medvol.networks import MinibatchStdDev, build, count_parameters
from medvol.families import FamilyKind, family_names
from medvol.networks.factory import default_width, parameter_counts, sized_options


def test_minibatch_std_appends_the_group_spread():
    layer = MinibatchStdDev(group_size=2)
    # two groups of two samples, 1 channel x 2 positions: group 1 differs by 2 everywhere (std 1), group 2 is equal
    features = torch.tensor([[[0.0, 0.0]], [[2.0, 2.0]], [[5.0, 1.0]], [[5.0, 1.0]]])
    out = layer(features)
    assert out.shape == (4, 2, 2)
    assert torch.equal(out[:, :1], features)
    assert torch.allclose(out[:, 1], torch.tensor([[1.0, 1.0], [1.0, 1.0], [0.0, 0.0], [0.0, 0.0]]), atol=1e-3)
    # a batch of 3 is not a multiple of 2: one group of... the largest divisor of 3 not above 2 is 1 -> zeros
    assert torch.equal(layer(torch.randn(3, 5))[:, -1], torch.zeros(3))


def test_minibatch_std_separates_identical_from_varied_batches():
    layer = MinibatchStdDev()
    identical = torch.randn(1, 4, 8, 8).repeat(8, 1, 1, 1)
    varied = torch.randn(8, 4, 8, 8)
    assert float(layer(identical)[:, -1].max()) < 1e-3
    assert float(layer(varied)[:, -1].min()) > 0.5


@pytest.mark.parametrize("family", family_names(FamilyKind.ADVERSARIAL))
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_every_critic_takes_minibatch_std(family, spatial_dims):
    options = sized_options(family, spatial_dims, 16, {"minibatch_std": True}, width=4)
    networks = build(family, spatial_dims, 16, num_classes=2, **options)
    plain = build(family, spatial_dims, 16, num_classes=2, **sized_options(family, spatial_dims, 16, {}, width=4))
    critic = networks["critic"]
    assert sum(isinstance(m, MinibatchStdDev) for m in critic.modules()) == 1
    assert sum(isinstance(m, MinibatchStdDev) for m in plain["critic"].modules()) == 0
    # the extra input channel of the critic's last layer is all it adds
    assert count_parameters(critic) > count_parameters(plain["critic"])
    assert count_parameters(critic) - count_parameters(plain["critic"]) <= 9 * 4 * 8 * 27
    images = torch.randn(4, 1, *[16] * spatial_dims)
    output = critic(images, torch.tensor([0, 1, 0, 1]))
    score = output[0] if isinstance(output, tuple) else output
    assert score.shape == (4,) and torch.isfinite(score).all()


def test_default_width_follows_dimensions_and_dataset_size():
    assert default_width(2) == default_width(2, 300) == 32
    assert default_width(3, 300) == 16
    assert default_width(2, 2000) == 64 and default_width(2, 20000) == 128
    assert default_width(3, 1999) == 16 and default_width(3, 5000) == 32


def test_sized_dcgan_at_64_is_a_fraction_of_the_published_one():
    sized = build("cgan", 2, 64, num_classes=2, **sized_options("cgan", 2, 64, {}, dataset_size=300))
    published = build("cgan", 2, 64, num_classes=2)
    assert sized["generator"].body[2].num_features == 256  # 4 stages: 256, 128, 64, 32 channels
    sized_total, published_total = sum(parameter_counts(sized).values()), sum(parameter_counts(published).values())
    assert published_total > 37_000_000
    assert sized_total == 2_985_578 and sized_total < published_total / 10


@pytest.mark.parametrize(
    "family,size,expected",
    [
        ("dcgan", 32, {"generator": {"channels": [128, 64, 32]}, "critic": {"channels": [32, 64, 128]}}),
        ("dcgan", 128, {"generator": {"channels": [256, 256, 128, 64, 32]}, "critic": {"channels": [32, 64, 128, 256, 256]}}),
        ("wgan_gp", 64, {"generator": {"base_channels": 32, "max_channels": 128}, "critic": {"base_channels": 32, "max_channels": 128}}),
        ("gan", 32, {"generator": {"hidden_sizes": [128, 256, 512]}, "critic": {"hidden_sizes": [256, 128]}}),
        ("vae", 32, {"channels": [32, 64, 128]}),
    ],
)
def test_sized_options_per_family(family, size, expected):
    assert sized_options(family, 2, size, {}, dataset_size=100) == expected


def test_user_settings_win_and_width_overrides_the_default():
    options = sized_options("cgan", 2, 32, {"latent_size": 16, "critic": {"channels": [8, 8, 8]}}, width=8)
    assert options == {"latent_size": 16, "generator": {"channels": [32, 16, 8]}, "critic": {"channels": [8, 8, 8]}}
    assert sized_options("vae", 3, 32, {}, width=4) == {"channels": [4, 8, 16]}
    # a size no stride-2 plan reaches is left to the network class, which names the problem
    assert sized_options("dcgan", 2, 36, {}, width=4)["generator"] == {}
    with pytest.raises(ValueError, match="width"):
        sized_options("dcgan", 2, 32, {}, width=0)


@pytest.mark.parametrize("family", family_names())
def test_sized_networks_build_in_2d_and_3d(family):
    for spatial_dims in (2, 3):
        options = sized_options(family, spatial_dims, 16, {}, width=2)
        networks = build(family, spatial_dims, 16, num_classes=2, **options)
        assert all(count > 0 for count in parameter_counts(networks).values())
