"""Shapes, value ranges, parameter counts, conditioning and shape planning of every model family in 2D and 3D."""

from __future__ import annotations

import math

import pytest
import torch

from medvol.networks import (
    ConvAutoencoder,
    DCGANDiscriminator,
    DCGANGenerator,
    FullyConnectedDiscriminator,
    FullyConnectedGenerator,
    ResidualCritic,
    ResidualGenerator,
    VariationalAutoencoder,
    build,
    count_parameters,
    has_batch_norm,
    init_dcgan_weights,
    plan_resolution,
)

SIZES = [(2, (16, 16)), (2, (48, 64)), (3, (16, 16, 16)), (3, (64, 64, 160))]

# tiny widths: these tests are about shapes, not capacity
SMALL = {
    "cae": {"channels": (4, 4, 8, 8), "latent_size": 8},
    "vae": {"channels": (4, 4, 8, 8), "latent_size": 8},
    "gan": {"latent_size": 8, "generator": {"hidden_sizes": (8, 8)}, "critic": {"hidden_sizes": (8, 4)}},
    "dcgan": {"latent_size": 8, "generator": {"channels": (16, 8, 4, 4)}, "critic": {"channels": (4, 4, 8, 16)}},
    "wgan": {"latent_size": 8, "generator": {"channels": (16, 8, 4, 4)}, "critic": {"channels": (4, 4, 8, 16)}},
    "cgan": {"latent_size": 8, "generator": {"channels": (16, 8, 4, 4)}, "critic": {"channels": (4, 4, 8, 16)}},
    "wgan_gp": {"latent_size": 8, "base_channels": 4, "max_channels": 8},
    "acwgan_gp": {"latent_size": 8, "base_channels": 4, "max_channels": 8},
}
CONDITIONAL = ("cgan", "acwgan_gp")


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


def conv_params(in_channels: int, out_channels: int, kernel: int, dims: int, bias: bool = True) -> int:
    return in_channels * out_channels * kernel**dims + (out_channels if bias else 0)


def linear_params(in_features: int, out_features: int, bias: bool = True) -> int:
    return in_features * out_features + (out_features if bias else 0)


def expected_cae_params(dims, size, channels, latent, codes_per_latent=1, in_channels=1):
    """Encoder k5 convs, dense latent, dense back, k4 transposed convs (all with bias)."""
    coarse = channels[-1] * math.prod(s // 2 ** len(channels) for s in size)
    widths = [in_channels, *channels]
    encoder = sum(conv_params(a, b, 5, dims) for a, b in zip(widths[:-1], widths[1:]))
    decoder_widths = widths[::-1]
    decoder = sum(conv_params(a, b, 4, dims) for a, b in zip(decoder_widths[:-1], decoder_widths[1:]))
    return encoder + linear_params(coarse, latent * codes_per_latent) + linear_params(latent, coarse) + decoder


def expected_fc_gan_params(size, latent, g_hidden, d_hidden, channels=1, num_classes=0, embedding=0):
    """Dense + BN (scale and shift) per hidden layer, dense to the voxels; D dense layers and a 1-unit score."""
    voxels = channels * math.prod(size)
    g_widths = [latent + embedding, *g_hidden]
    generator = sum(linear_params(a, b) + 2 * b for a, b in zip(g_widths[:-1], g_widths[1:]))
    generator += linear_params(g_widths[-1], voxels) + num_classes * embedding
    d_widths = [voxels, *d_hidden]
    critic = sum(linear_params(a, b) for a, b in zip(d_widths[:-1], d_widths[1:])) + linear_params(d_widths[-1], 1)
    return generator, critic


def expected_dcgan_params(dims, size, latent, g_channels, d_channels):
    """Published DCGAN: bias-free dense/convs before batch norm, k5 (transposed) convs, BN scale and shift."""
    start = math.prod(s // 2 ** len(g_channels) for s in size)
    generator = linear_params(latent, g_channels[0] * start, bias=False) + 2 * g_channels[0]
    widths = [*g_channels, 1]
    for stage, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        last = stage == len(g_channels) - 1
        generator += conv_params(a, b, 5, dims, bias=last) + (0 if last else 2 * b)
    d_widths = [1, *d_channels]
    critic = conv_params(1, d_channels[0], 5, dims)  # first layer: bias, no norm
    critic += sum(conv_params(a, b, 5, dims, bias=False) + 2 * b for a, b in zip(d_widths[1:-1], d_widths[2:]))
    critic += linear_params(d_channels[-1] * start, 1)
    return generator, critic


@pytest.mark.parametrize("spatial_dims,size", SIZES)
@pytest.mark.parametrize("family", ["cae", "vae"])
def test_autoencoder_shapes_range_and_parameters(family, spatial_dims, size):
    torch.manual_seed(0)
    model = build(family, spatial_dims, size, **SMALL[family])["autoencoder"]
    x = torch.rand(2, 1, *size)
    output = model(x)
    reconstruction = output[0] if family == "vae" else output
    assert reconstruction.shape == x.shape
    assert 0.0 <= float(reconstruction.min()) and float(reconstruction.max()) <= 1.0
    expected = expected_cae_params(spatial_dims, size, (4, 4, 8, 8), 8, codes_per_latent=2 if family == "vae" else 1)
    assert count_parameters(model) == expected
    if family == "vae":
        _, mu, logvar = output
        assert mu.shape == logvar.shape == (2, 8)


@pytest.mark.parametrize("spatial_dims,size", SIZES)
@pytest.mark.parametrize("family", ["gan", "dcgan", "wgan", "wgan_gp", "cgan", "acwgan_gp"])
def test_gan_shapes_and_ranges(family, spatial_dims, size):
    torch.manual_seed(0)
    num_classes = 3 if family in CONDITIONAL else 0
    networks = build(family, spatial_dims, size, num_classes=num_classes, **SMALL[family])
    generator, critic = networks["generator"], networks["critic"]
    assert (generator.spatial_dims, generator.image_size, generator.num_classes) == (spatial_dims, size, num_classes)
    assert generator.latent_size == 8
    labels = torch.tensor([0, 2]) if num_classes else None
    images = generator(torch.randn(2, 8), labels)
    assert images.shape == (2, 1, *size)
    assert -1.0 <= float(images.min()) and float(images.max()) <= 1.0
    assert float(images.std()) > 0
    output = critic(images, labels)
    if family == "acwgan_gp":
        score, class_logits = output
        assert class_logits.shape == (2, num_classes)
    else:
        score = output
    assert score.shape == (2,)
    assert torch.isfinite(score).all()
    assert count_parameters(generator) > 0 and count_parameters(critic) > 0
    if family == "gan":
        expected = expected_fc_gan_params(size, 8, (8, 8), (8, 4))
        assert (count_parameters(generator), count_parameters(critic)) == expected


@pytest.mark.parametrize("spatial_dims,size", [(2, (28, 28)), (3, (8, 8, 8))])
def test_fc_gan_default_layout_parameters(spatial_dims, size):
    networks = build("gan", spatial_dims, size)
    expected = expected_fc_gan_params(size, 100, (256, 512, 1024), (512, 256))
    assert (count_parameters(networks["generator"]), count_parameters(networks["critic"])) == expected
    generator = networks["generator"]
    slopes = {m.negative_slope for m in generator.modules() if isinstance(m, torch.nn.LeakyReLU)}
    momenta = {m.momentum for m in generator.modules() if isinstance(m, torch.nn.BatchNorm1d)}
    assert slopes == {0.3}
    assert len(momenta) == 1 and momenta.pop() == pytest.approx(0.2)  # Keras momentum 0.8 == PyTorch 0.2


@pytest.mark.parametrize("spatial_dims,size", [(2, (32, 32)), (3, (16, 16, 16))])
def test_cae_default_layout_parameters(spatial_dims, size):
    model = build("cae", spatial_dims, size)["autoencoder"]
    latent = 100 if spatial_dims == 2 else 200
    assert model.latent_size == latent
    assert count_parameters(model) == expected_cae_params(spatial_dims, size, (64, 128, 256, 256), latent)
    vae = build("vae", spatial_dims, size)["autoencoder"]
    assert count_parameters(vae) == expected_cae_params(spatial_dims, size, (64, 128, 256, 256), latent, 2)


@pytest.mark.parametrize("spatial_dims,size", [(2, (64, 64)), (3, (16, 16, 16))])
def test_dcgan_default_layout_parameters(spatial_dims, size):
    with torch.device("meta"):  # the published 3D layout has ~90 M parameters: count without allocating them
        networks = build("dcgan", spatial_dims, size)
    expected = expected_dcgan_params(spatial_dims, size, 100, (1024, 512, 256, 128), (128, 256, 512, 1024))
    assert (count_parameters(networks["generator"]), count_parameters(networks["critic"])) == expected
    assert networks["generator"].plan.start_shape == tuple(s // 16 for s in size)


@pytest.mark.parametrize(
    "spatial_dims,size,blocks",
    [(2, (64, 64), 4), (2, (128, 128), 5), (2, (256, 256), 6), (3, (32, 32, 32), 3), (3, (128, 128, 128), 5)],
)
def test_residual_networks_grow_one_block_per_factor_of_two(spatial_dims, size, blocks):
    with torch.device("meta"):
        generator = ResidualGenerator(spatial_dims, size)
        critic = ResidualCritic(spatial_dims, size)
    assert generator.plan.num_stages == critic.plan.num_stages == blocks
    assert generator.plan.start_shape == (4,) * spatial_dims
    assert not has_batch_norm(critic)


@pytest.mark.parametrize("family", CONDITIONAL)
@pytest.mark.parametrize("spatial_dims,size", [(2, (16, 16)), (3, (16, 16, 16))])
def test_conditional_generators_depend_on_the_label(family, spatial_dims, size):
    torch.manual_seed(0)
    generator = build(family, spatial_dims, size, num_classes=2, **SMALL[family])["generator"].eval()
    z = torch.randn(1, 8).repeat(2, 1)
    images = generator(z, torch.tensor([0, 1]))
    # relative: a freshly DCGAN-initialised generator in evaluation mode has outputs of order 1e-6
    assert float((images[0] - images[1]).abs().max()) > 0.05 * float(images.abs().max()) > 0
    with pytest.raises(ValueError, match="pass labels"):
        generator(z)


@pytest.mark.parametrize(
    "critic_cls,options",
    [
        (DCGANDiscriminator, {"channels": (4, 8), "projection": True}),
        (ResidualCritic, {"channels": (4, 8), "projection": True}),
        (FullyConnectedDiscriminator, {"hidden_sizes": (8,), "projection": False, "input_conditioning": True}),
    ],
)
def test_conditional_critics_depend_on_the_label(critic_cls, options):
    torch.manual_seed(0)
    critic = critic_cls(2, (16, 16), num_classes=2, **options).eval()
    x = torch.rand(1, 1, 16, 16).repeat(2, 1, 1, 1)
    score = critic(x, torch.tensor([0, 1]))
    assert float((score[0] - score[1]).abs()) > 1e-4


def test_fully_connected_generator_conditioning_and_embedding_size():
    generator = FullyConnectedGenerator(2, 8, latent_size=4, hidden_sizes=(8,), num_classes=3, embedding_size=5)
    assert generator.input_size == 9
    g_params, _ = expected_fc_gan_params((8, 8), 4, (8,), (), num_classes=3, embedding=5)
    assert count_parameters(generator) == g_params


@pytest.mark.parametrize(
    "size,start_shape,expected_strides",
    [
        ((64, 64, 160), None, [(2, 2, 2)] * 4),
        ((48, 64), None, [(2, 2)] * 4),
        ((40, 64), (5, 4), [(1, 2), (2, 2), (2, 2), (2, 2)]),
        ((64, 64, 80), (4, 4, 10), [(2, 2, 1), (2, 2, 2), (2, 2, 2), (2, 2, 2)]),
    ],
)
def test_plan_resolution_per_axis_strides(size, start_shape, expected_strides):
    plan = plan_resolution(size, 4, start_shape)
    assert [tuple(s) for s in plan.strides] == expected_strides
    assert plan.shapes()[-1] == size


@pytest.mark.parametrize("spatial_dims,size,start_shape", [(2, (40, 64), (5, 4)), (3, (16, 16, 20), (1, 1, 5))])
def test_anisotropic_shapes_through_start_shape(spatial_dims, size, start_shape):
    generator = DCGANGenerator(spatial_dims, size, latent_size=4, channels=(8, 4, 4, 4), start_shape=start_shape)
    critic = DCGANDiscriminator(spatial_dims, size, channels=(4, 4, 4, 8), start_shape=start_shape)
    autoencoder = ConvAutoencoder(spatial_dims, size, channels=(4, 4, 4, 8), latent_size=4, start_shape=start_shape)
    images = generator(torch.randn(2, 4))
    assert images.shape == (2, 1, *size)
    assert critic(images).shape == (2,)
    assert autoencoder(torch.rand(2, 1, *size)).shape == (2, 1, *size)


@pytest.mark.parametrize(
    "build_network,match",
    [
        (lambda: DCGANGenerator(2, (40, 64), channels=(8, 4, 4, 4)), "not a multiple of 16.*start_shape"),
        (lambda: DCGANGenerator(2, (40, 64), channels=(8, 4, 4, 4), start_shape=(3, 4)), "axis 0, 40 is not 3 times"),
        (lambda: ConvAutoencoder(3, (16, 16, 20), channels=(4, 4, 4, 8)), "axis 2 \\(20\\) is not a multiple of 16"),
        (lambda: ConvAutoencoder(2, (64, 64), channels=(4, 4), start_shape=(4, 4)), "needs 4 doublings"),
        (lambda: ResidualGenerator(2, (36, 64)), "not a multiple of 8"),
        (lambda: ResidualCritic(2, 4), "too small"),
        (lambda: DCGANGenerator(4, 64), "spatial_dims must be 2 or 3"),
    ],
)
def test_unreachable_shapes_raise_clear_errors(build_network, match):
    with pytest.raises(ValueError, match=match):
        build_network()


def test_vae_samples_in_training_and_is_deterministic_in_evaluation():
    torch.manual_seed(0)
    vae = VariationalAutoencoder(2, 16, channels=(4, 8), latent_size=4)
    x = torch.rand(2, 1, 16, 16)
    assert not torch.equal(vae(x)[0], vae(x)[0])
    vae.eval()
    assert torch.equal(vae(x)[0], vae(x)[0])
    assert vae.decode(torch.randn(3, 4)).shape == (3, 1, 16, 16)


def test_init_dcgan_weights_statistics():
    torch.manual_seed(0)
    generator = DCGANGenerator(2, 32, latent_size=16, channels=(64, 32, 16), dcgan_init=False)
    init_dcgan_weights(generator)
    conv_weights = torch.cat(
        [m.weight.flatten() for m in generator.modules() if isinstance(m, (torch.nn.ConvTranspose2d, torch.nn.Linear))]
    )
    norm_weights = torch.cat([m.weight for m in generator.modules() if isinstance(m, torch.nn.BatchNorm2d)])
    assert float(conv_weights.mean()) == pytest.approx(0.0, abs=2e-3)
    assert float(conv_weights.std()) == pytest.approx(0.02, rel=0.05)
    assert float(norm_weights.mean()) == pytest.approx(1.0, abs=0.01)
    assert all(float(m.bias.abs().max()) == 0 for m in generator.modules() if getattr(m, "bias", None) is not None)


@pytest.mark.parametrize("family", ["wgan_gp", "acwgan_gp"])
def test_gradient_penalty_families_build_critics_without_batch_norm(family):
    networks = build(family, 2, 16, num_classes=2, **SMALL[family])
    assert not has_batch_norm(networks["critic"])
    assert has_batch_norm(build("dcgan", 2, 16, **SMALL["dcgan"])["critic"])


def test_layer_and_instance_norm_critics():
    for norm, layer in (("layer", torch.nn.GroupNorm), ("instance", torch.nn.InstanceNorm2d)):
        critic = DCGANDiscriminator(2, 16, channels=(4, 8), norm=norm)
        assert not has_batch_norm(critic) and any(isinstance(m, layer) for m in critic.modules())


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"family": "unet"}, "unknown model family"),
        ({"family": "cgan"}, "needs num_classes >= 2"),
        ({"family": "dcgan", "depth": 3}, "takes 'depth'"),
        ({"family": "cae", "hidden_sizes": (4,)}, "takes no argument 'hidden_sizes'"),
    ],
)
def test_factory_errors(kwargs, match):
    family = kwargs.pop("family")
    with pytest.raises(ValueError, match=match):
        build(family, 2, 16, **kwargs)


def test_factory_routes_shared_and_per_network_overrides():
    networks = build("acwgan_gp", 2, 16, num_classes=2, latent_size=6, base_channels=4, critic={"max_channels": 4})
    assert networks["generator"].latent_size == 6
    assert networks["critic"].auxiliary_classifier and networks["critic"].head.projection is None
    assert max(m.out_channels for m in networks["critic"].modules() if isinstance(m, torch.nn.Conv2d)) == 4


def test_networks_reject_wrong_inputs():
    generator = DCGANGenerator(2, 16, latent_size=4, channels=(4, 4))
    with pytest.raises(ValueError, match=r"noise must have shape \[B, 4\]"):
        generator(torch.randn(2, 5))
    critic = DCGANDiscriminator(2, 16, channels=(4, 4), num_classes=2)
    with pytest.raises(ValueError, match="critic expects images"):
        critic(torch.rand(2, 1, 8, 8), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        critic(torch.rand(2, 1, 16, 16), torch.tensor([0, 2]))
