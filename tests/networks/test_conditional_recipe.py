"""Options of the conditional recipe for small data (issue J): spectral-norm critics, projection, class-conditional
normalisation in the generator and upsampling without transposed convolutions, in 2D and 3D; resume with spectral
norm."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from medvol.bundles.inference import LatentGenerator
from medvol.engines import GenerativeAdversarialTrainer, CheckpointManager
from medvol.networks import DCGANDiscriminator, DCGANGenerator, ResidualCritic, ResidualGenerator, build
from medvol.networks.conditioning import ConditionalNorm
from medvol.objectives import build_objective, build_optimizer
from tests.engines.toys import make_loader

SIZES = [(2, (16, 16)), (3, (16, 16, 16))]
DCGAN = {"latent_size": 8, "generator": {"channels": (16, 8)}, "critic": {"channels": (4, 8)}}
RESIDUAL = {"latent_size": 8, "base_channels": 4, "max_channels": 8}
RECIPES = [
    ("cgan", {**DCGAN, "generator": {**DCGAN["generator"], "upsampling": "nearest"}}),
    ("cgan", {**DCGAN, "generator": {**DCGAN["generator"], "upsampling": "linear", "conditional_norm": True},
              "critic": {**DCGAN["critic"], "spectral_norm": True, "norm": None}}),
    ("acwgan_gp", {**RESIDUAL, "generator": {"conditional_norm": True}, "critic": {"spectral_norm": True}}),
    ("acwgan_gp", {**RESIDUAL, "critic": {"spectral_norm": True, "projection": True}}),
]


def _spectral_layers(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if nn.utils.parametrize.is_parametrized(m, "weight")]


@pytest.mark.parametrize("spatial_dims,size", SIZES)
@pytest.mark.parametrize("family,options", RECIPES)
def test_every_recipe_option_builds_in_2d_and_3d_with_the_contract_shapes(family, options, spatial_dims, size):
    torch.manual_seed(0)
    networks = build(family, spatial_dims, size, num_classes=3, **options)
    labels = torch.tensor([0, 1, 2, 1])
    with torch.no_grad():
        images = networks["generator"](torch.randn(4, 8), labels)
        output = networks["critic"](images, labels)
    assert images.shape == (4, 1, *size) and images.abs().max() <= 1
    score = output[0] if isinstance(output, tuple) else output
    assert score.shape == (4,)
    if family == "acwgan_gp":
        assert output[1].shape == (4, 3)
    spectral = bool(options.get("critic", {}).get("spectral_norm"))
    layers = [m for m in networks["critic"].modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]
    assert len(_spectral_layers(networks["critic"])) == (len(layers) + (networks["critic"].head.projection is not None)
                                                         if spectral else 0)
    conditional_norms = [m for m in networks["generator"].modules() if isinstance(m, ConditionalNorm)]
    assert bool(conditional_norms) == bool(options.get("generator", {}).get("conditional_norm"))


@pytest.mark.parametrize("spatial_dims,size", SIZES)
@pytest.mark.parametrize("upsampling", ["nearest", "linear"])
def test_upsampling_option_replaces_every_transposed_convolution(upsampling, spatial_dims, size):
    transposed = DCGANGenerator(spatial_dims, size, latent_size=8, channels=(8, 4))
    interpolated = DCGANGenerator(spatial_dims, size, latent_size=8, channels=(8, 4), upsampling=upsampling)
    kinds = lambda net, cls: sum(isinstance(m, cls) for m in net.modules())  # noqa: E731
    assert kinds(transposed, nn.modules.conv._ConvTransposeNd) == 2 and kinds(transposed, nn.Upsample) == 0
    assert kinds(interpolated, nn.modules.conv._ConvTransposeNd) == 0 and kinds(interpolated, nn.Upsample) == 2
    modes = {m.mode for m in interpolated.modules() if isinstance(m, nn.Upsample)}
    assert modes == ({"nearest"} if upsampling == "nearest" else {"bilinear" if spatial_dims == 2 else "trilinear"})
    with torch.no_grad():
        assert interpolated(torch.randn(2, 8)).shape == (2, 1, *size)
    with pytest.raises(ValueError, match="upsampling"):
        DCGANGenerator(spatial_dims, size, latent_size=8, channels=(8, 4), upsampling="pixelshuffle")


@pytest.mark.parametrize("critic_cls,options", [
    (DCGANDiscriminator, {"channels": (4, 8), "norm": None}),
    (ResidualCritic, {"channels": (4, 8)}),
])
@pytest.mark.parametrize("spatial_dims,size", SIZES)
def test_spectral_norm_brings_every_largest_singular_value_to_one(critic_cls, options, spatial_dims, size):
    torch.manual_seed(0)
    plain = critic_cls(spatial_dims, size, num_classes=3, **options)
    normalised = critic_cls(spatial_dims, size, num_classes=3, spectral_norm=True, **options)
    with torch.no_grad():
        for layer in _spectral_layers(normalised):  # scale the raw weights far from 1: the normalisation must undo it
            layer.parametrizations.weight.original.mul_(7.0)
        for _ in range(30):  # power iterations run in training-mode forwards
            normalised(torch.randn(4, 1, *size), torch.tensor([0, 1, 2, 0]))
    normalised.eval()

    def sigma(weight: torch.Tensor) -> float:
        return float(torch.linalg.matrix_norm(weight.detach().reshape(weight.shape[0], -1), ord=2))

    plain_sigmas = [sigma(m.weight) for m in plain.modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]
    assert max(abs(s - 1) for s in plain_sigmas) > 0.2  # without it the weights are not of unit norm
    layers = _spectral_layers(normalised)
    assert len(layers) == len(plain_sigmas) + 1  # every convolution and dense layer, and the projection embedding
    for layer in layers:
        assert sigma(layer.weight) == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("spatial_dims,size", SIZES)
def test_projection_term_uses_the_label_with_spectral_norm(spatial_dims, size):
    torch.manual_seed(0)
    critic = ResidualCritic(spatial_dims, size, channels=(4, 8), num_classes=3, projection=True, spectral_norm=True)
    critic.eval()
    images = torch.randn(3, 1, *size)
    with torch.no_grad():
        scores = torch.stack([critic(images, torch.full((3,), label)) for label in range(3)])
        unconditional = ResidualCritic(spatial_dims, size, channels=(4, 8), num_classes=3, projection=False).eval()
        same = torch.stack([unconditional(images, torch.full((3,), label)) for label in range(3)])
    assert (scores[0] - scores[1]).abs().min() > 1e-4 and (scores[1] - scores[2]).abs().min() > 1e-4
    assert torch.equal(same[0], same[1])  # a critic without projection ignores the label


def test_conditional_norm_applies_a_per_class_gain_and_bias():
    torch.manual_seed(0)
    layer = ConditionalNorm("batch", 2, channels=3, num_classes=2).eval()
    x = torch.randn(4, 3, 5, 5)
    plain = nn.BatchNorm2d(3, affine=False).eval()
    with torch.no_grad():
        assert torch.allclose(layer(x, torch.tensor([0, 0, 1, 1])), plain(x))  # starts as the plain normalisation
        layer.gain.weight.copy_(torch.tensor([[0.0, 1.0, -0.5], [2.0, 0.0, 0.0]]))
        layer.bias.weight.copy_(torch.tensor([[0.0, 0.0, 3.0], [-1.0, 0.0, 0.0]]))
        out0, out1 = layer(x, torch.zeros(4, dtype=torch.long)), layer(x, torch.ones(4, dtype=torch.long))
    normalised = plain(x)
    assert torch.allclose(out0[:, 1], 2.0 * normalised[:, 1]) and torch.allclose(out0[:, 2], 0.5 * normalised[:, 2] + 3)
    assert torch.allclose(out1[:, 0], 3.0 * normalised[:, 0] - 1) and torch.allclose(out1[:, 1], normalised[:, 1])
    with pytest.raises(ValueError, match="labels"):
        layer(x, None)


@pytest.mark.parametrize("generator_cls,options", [
    (DCGANGenerator, {"channels": (8, 4), "upsampling": "nearest"}),
    (ResidualGenerator, {"channels": (8, 8, 4)}),
])
@pytest.mark.parametrize("spatial_dims,size", SIZES)
def test_conditional_norm_carries_the_label_through_the_generator(generator_cls, options, spatial_dims, size):
    torch.manual_seed(0)
    generator = generator_cls(spatial_dims, size, latent_size=8, num_classes=3, conditional_norm=True, **options).eval()
    with torch.no_grad():
        generator.conditioning.embedding.weight.zero_()  # the label can then only act through the normalisation
        z = torch.randn(2, 8).repeat(3, 1)
        labels = torch.tensor([0, 0, 1, 1, 2, 2])
        before = generator(z, labels)
        assert torch.allclose(before[0:2], before[2:4]) and torch.allclose(before[2:4], before[4:6])
        for layer in generator.modules():
            if isinstance(layer, ConditionalNorm):
                nn.init.normal_(layer.gain.weight, 0.0, 0.5)
                nn.init.normal_(layer.bias.weight, 0.0, 0.5)
        after = generator(z, labels)
    assert (after[0:2] - after[2:4]).abs().max() > 1e-3 and (after[2:4] - after[4:6]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="conditional_norm"):
        generator_cls(spatial_dims, size, latent_size=8, num_classes=0, conditional_norm=True, **options)


def test_spectral_norm_state_dict_round_trip_restores_weights_and_power_iteration_vectors():
    torch.manual_seed(0)
    critic = DCGANDiscriminator(2, 16, channels=(4, 8), norm=None, num_classes=2, spectral_norm=True)
    for _ in range(3):
        critic(torch.randn(4, 1, 16, 16), torch.tensor([0, 1, 0, 1]))
    buffer = io.BytesIO()
    torch.save(critic.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(1)  # a fresh critic starts from other weights and other power-iteration vectors
    restored = DCGANDiscriminator(2, 16, channels=(4, 8), norm=None, num_classes=2, spectral_norm=True)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    x, labels = torch.randn(4, 1, 16, 16), torch.tensor([1, 0, 1, 0])
    assert torch.equal(critic(x, labels), restored(x, labels))  # training mode: one more power iteration each
    for key, value in critic.state_dict().items():
        assert torch.equal(value, restored.state_dict()[key]), key


def _trainer(run_dir, iterations: int) -> GenerativeAdversarialTrainer:
    torch.manual_seed(0)
    networks = build("cgan", 2, 8, num_classes=2, latent_size=4, generator={"channels": (8,), "conditional_norm": True},
                     critic={"channels": (4,), "norm": None, "spectral_norm": True})
    objective, settings = build_objective("cgan", loss="hinge")
    optimizers = [build_optimizer(networks[name].parameters(), settings["optimizer"]) for name in networks]
    return GenerativeAdversarialTrainer(
        "cpu", make_loader(size=8, num_classes=2), networks["generator"], networks["critic"], *optimizers, objective,
        max_iterations=iterations, run_dir=run_dir, checkpoint_every=2, ema_decay=0.5, health_interval=0,
        precision="fp32",
    )


def test_a_spectral_norm_hinge_run_resumes_bitwise(tmp_path):
    _trainer(tmp_path / "reference", 4).run()
    _trainer(tmp_path / "resumed", 2).run()
    resumed = _trainer(tmp_path / "resumed", 4)
    resumed.run()
    assert resumed.state.resumed_from.endswith("checkpoint_00000002.pt")
    expected = CheckpointManager(tmp_path / "reference" / "checkpoints").load_latest()
    actual = CheckpointManager(tmp_path / "resumed" / "checkpoints").load_latest()
    assert expected["iteration"] == actual["iteration"] == 4
    critic = expected["networks"]["critic"]
    assert any(key.endswith("_u") for key in critic)  # the power-iteration vectors are part of the checkpoint
    for name in ("generator", "critic"):
        for key, value in expected["networks"][name].items():
            assert torch.equal(value, actual["networks"][name][key]), f"{name}.{key}"


@pytest.mark.parametrize("spatial_dims,size", SIZES)
@pytest.mark.parametrize("family,generator", [
    ("cgan", {"channels": (16, 8), "conditional_norm": True, "upsampling": "linear"}),
    ("acwgan_gp", {"base_channels": 4, "max_channels": 8, "conditional_norm": True}),
])
def test_generators_with_the_recipe_options_export_with_torchscript(family, generator, spatial_dims, size):
    torch.manual_seed(0)
    network = build(family, spatial_dims, size, num_classes=3, latent_size=8, generator=generator)["generator"].eval()
    for layer in network.modules():
        if isinstance(layer, ConditionalNorm):
            nn.init.normal_(layer.gain.weight)
    exported = LatentGenerator(network)
    exported.load_state_dict(network.state_dict())
    scripted = torch.jit.script(exported.eval())
    z, labels = torch.randn(3, 8), torch.tensor([0, 1, 2])
    with torch.no_grad():
        assert torch.allclose(scripted(torch.cat([z, labels[:, None].float()], dim=1)), network(z, labels), atol=1e-6)
