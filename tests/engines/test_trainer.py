"""GenerativeAdversarialTrainer / AutoencoderTrainer: fresh data per critic step, conditioning, AMP, accumulation, EMA, handlers."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Events

from medvol.engines import GenerativeAdversarialTrainer, AutocastModule, AutoencoderTrainer, CheckpointManager
from medvol.engines.amp import Precision, resolve_precision
from medvol.engines.trainer import ema_warmup_decay
from tests.engines.toys import (
    ToyAutoencoder,
    ToyCritic,
    ToyWasserstein,
    ToyWassersteinGP,
    item_ids,
    make_gan,
    make_loader,
    reconstruction_loss,
)

# [spatial_dims, size, conditional, auxiliary head]
TEST_CASE_1 = [2, 8, 0, False]
TEST_CASE_2 = [2, 8, 2, False]
TEST_CASE_3 = [3, 8, 2, True]


@pytest.mark.parametrize("spatial_dims,size,num_classes,aux", [TEST_CASE_1, TEST_CASE_2, TEST_CASE_3])
def test_every_critic_step_sees_fresh_reals_and_fresh_fakes(spatial_dims, size, num_classes, aux):
    generator, critic, g_opt, d_opt = make_gan(spatial_dims, size, num_classes=num_classes, aux=aux)
    objective = ToyWassersteinGP(record=True)
    loader = make_loader(count=24, batch_size=4, spatial_dims=spatial_dims, size=size, num_classes=max(num_classes, 2))
    trainer = GenerativeAdversarialTrainer(
        "cpu", loader, generator, critic, g_opt, d_opt, objective, critic_steps=3, max_iterations=4, precision="fp32"
    )
    trainer.run()

    assert trainer.state.iteration == 4
    assert len(objective.critic_calls) == 4 * 3 and len(objective.generator_calls) == 4
    for it in range(4):
        calls = objective.critic_calls[3 * it : 3 * it + 3]
        batches = [item_ids(c["real"]) for c in calls]
        # three critic steps, three different real batches (no item shared), drawn from the loader in order
        assert len({i for b in batches for i in b}) == 12, batches
        for a in range(3):
            for b in range(a + 1, 3):
                assert not torch.equal(calls[a]["fake"], calls[b]["fake"]), f"iteration {it}: critic steps {a},{b} share fakes"
        if num_classes:
            for call in calls:  # the critic step conditions reals and fakes on the real batch's labels
                assert torch.equal(call["labels"], loader.dataset.labels[item_ids(call["real"])])
        else:
            assert all(c["labels"] is None for c in calls)
    # 24 items / batch 4 = 6 batches per pass; 12 critic batches = 2 passes, each a permutation of all 24 items
    seen = [i for c in objective.critic_calls for i in item_ids(c["real"])]
    assert sorted(seen[:24]) == list(range(24)) and sorted(seen[24:]) == list(range(24))
    assert seen[:24] != seen[24:], "the second pass must be reshuffled"
    if num_classes:
        sampled = torch.cat([c["labels"] for c in objective.generator_calls])
        assert set(sampled.tolist()) <= set(range(num_classes)) and len(set(sampled.tolist())) > 1
    output = trainer.state.output
    for key in ("critic/loss", "critic/gradient_penalty", "critic/wasserstein", "generator/loss", "g_loss", "d_loss"):
        assert isinstance(output[key], float) and torch.isfinite(torch.tensor(output[key]))


def test_bf16_autocast_runs_on_cpu_with_fp32_gradient_penalty():
    generator, critic, g_opt, d_opt = make_gan(2, 8)
    objective = ToyWassersteinGP(record=True)
    seen = []  # (input requires grad, output dtype) of the critic's first convolution, call by call
    critic.features[0].register_forward_hook(lambda module, args, out: seen.append((args[0].requires_grad, out.dtype)))
    trainer = GenerativeAdversarialTrainer("cpu", make_loader(), generator, critic, g_opt, d_opt, objective, max_iterations=2, precision="bf16")
    trainer.run()
    assert trainer.precision == Precision.BF16 and all(s is None for s in trainer.scalers.values())
    bf16, fp32 = torch.bfloat16, torch.float32
    # iteration 1: two critic steps of (real, fake, penalty interpolates), then the generator step's critic call
    assert seen[:7] == [(False, bf16), (False, bf16), (True, fp32)] * 2 + [(True, bf16)], seen[:7]
    call = objective.critic_calls[0]
    assert not call["autocast"], "objectives run outside autocast, in float32"
    assert call["penalty_grad_dtype"] == fp32
    assert all(torch.isfinite(p).all() for p in generator.parameters())


def test_fp16_uses_one_grad_scaler_per_network():
    generator, critic, g_opt, d_opt = make_gan(2, 8)
    trainer = GenerativeAdversarialTrainer("cpu", make_loader(), generator, critic, g_opt, d_opt, ToyWassersteinGP(), max_iterations=2, precision="fp16")
    trainer.run()
    scalers = trainer.scalers
    assert scalers["generator"] is not None and scalers["critic"] is not None and scalers["generator"] is not scalers["critic"]
    state = trainer.state_dict()["scalers"]
    assert state["generator"]["scale"] > 0 and state["critic"]["scale"] > 0


def test_auto_precision_is_concrete():
    assert resolve_precision("auto", "cpu")[0] in (Precision.FP32, Precision.BF16)
    assert resolve_precision("fp16", "cpu") == (Precision.FP16, "requested")
    with pytest.raises(ValueError):
        resolve_precision("half", "cpu")


def test_full_precision_wrapper_computes_the_penalty_gradient_in_fp32():
    torch.manual_seed(0)
    critic = ToyCritic(2, 16, channels=8)
    x = torch.randn(4, 1, 16, 16)

    def input_gradient(network):
        inp = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(network(inp).float().sum(), inp, create_graph=True)
        return grad.detach().float()

    reference = input_gradient(critic)
    # the critic-step wrapper: bf16 for ordinary calls, fp32 for the penalty's input-gradient call
    wrapped_error = (input_gradient(AutocastModule(critic, Precision.BF16, fp32_when_input_requires_grad=True)) - reference).abs().max()
    raw_error = (input_gradient(AutocastModule(critic, Precision.BF16)) - reference).abs().max()
    assert wrapped_error < 1e-6
    assert raw_error > 100 * max(float(wrapped_error), 1e-9), "bf16 input gradients should be visibly less precise"


def test_micro_batches_accumulate_to_the_full_batch_step():
    weights = []
    for micro_batch in (4, 1):
        generator, critic, g_opt, d_opt = make_gan(2, 8, seed=3)
        torch.manual_seed(11)
        trainer = GenerativeAdversarialTrainer(
            "cpu", make_loader(), generator, critic, g_opt, d_opt, ToyWasserstein(), max_iterations=2, micro_batch=micro_batch, precision="fp32"
        )
        trainer.run()
        assert trainer.plan.micro_batch == micro_batch and trainer.plan.accumulation_steps == 4 // micro_batch
        weights.append(torch.cat([p.detach().flatten() for p in list(generator.parameters()) + list(critic.parameters())]))
    torch.testing.assert_close(weights[0], weights[1], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("iteration, expected", [(1, 2 / 11), (90, 91 / 100), (10_000, 0.999)])
def test_ema_decay_warms_up_to_its_setting(iteration, expected):
    assert ema_warmup_decay(0.999, iteration) == pytest.approx(expected)


def test_ema_generator_follows_the_generator():
    generator, critic, g_opt, d_opt = make_gan(2, 8)
    initial = [p.detach().clone() for p in generator.parameters()]
    trainer = GenerativeAdversarialTrainer("cpu", make_loader(), generator, critic, g_opt, d_opt, ToyWassersteinGP(), max_iterations=1, ema_decay=0.9)
    trainer.run()
    for ema, start, now in zip(trainer.ema_generator.parameters(), initial, generator.parameters()):
        decay = ema_warmup_decay(0.9, 1)
        assert decay == pytest.approx(2 / 11)
        torch.testing.assert_close(ema, decay * start + (1 - decay) * now.detach())
    samples = trainer.sample(3, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (3, 1, 8, 8) and samples.abs().max() <= 1


def test_conditional_batches_without_labels_are_refused():
    generator, critic, g_opt, d_opt = make_gan(2, 8, num_classes=2)
    images = torch.utils.data.TensorDataset(torch.rand(8, 1, 8, 8))
    loader = torch.utils.data.DataLoader(images, batch_size=4)
    trainer = GenerativeAdversarialTrainer("cpu", loader, generator, critic, g_opt, d_opt, ToyWassersteinGP(), max_iterations=1)
    with pytest.raises(ValueError, match="label"):
        trainer.run()


@pytest.mark.parametrize("variational", [False, True])
def test_autoencoder_trainer_reduces_the_reconstruction_error(variational):
    torch.manual_seed(0)
    network = ToyAutoencoder(2, channels=8, variational=variational)
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-2)
    loader = make_loader(count=8, batch_size=4)
    trainer = AutoencoderTrainer("cpu", loader, network, optimizer, reconstruction_loss, max_iterations=40, micro_batch=2)
    losses = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(e.state.output["loss"]))
    trainer.run()
    assert trainer.plan.accumulation_steps == 2
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5, losses
    if variational:
        assert "autoencoder/kl" in trainer.state.output


def test_monai_handlers_attach(tmp_path, capsys):
    from monai.handlers import CheckpointSaver, StatsHandler, TensorBoardStatsHandler

    generator, critic, g_opt, d_opt = make_gan(2, 8)
    handlers = [
        StatsHandler(name="medvol.test.stats", output_transform=lambda output: output["g_loss"], iteration_log=True),
        TensorBoardStatsHandler(log_dir=str(tmp_path / "tb"), output_transform=lambda output: {"d_loss": output["d_loss"]}),
        CheckpointSaver(save_dir=str(tmp_path / "monai_ckpt"), save_dict={"generator": generator}, save_final=True),
    ]
    trainer = GenerativeAdversarialTrainer(
        "cpu", make_loader(), generator, critic, g_opt, d_opt, ToyWassersteinGP(), max_epochs=2, train_handlers=handlers
    )
    trainer.run()
    assert trainer.state.epoch == 2 and trainer.state.iteration == 2 * (4 // 2)  # 4 batches / 2 critic steps per epoch
    assert capsys.readouterr().out.count("-- Loss:") == 4  # StatsHandler printed every iteration's g_loss
    assert list((tmp_path / "tb").iterdir())
    assert list((tmp_path / "monai_ckpt").glob("*.pt"))


@pytest.mark.parametrize("family,num_classes", [("wgan_gp", 0), ("acwgan_gp", 2)])
def test_trains_medvol_networks_with_medvol_objectives(family, num_classes, tmp_path):
    from medvol.networks import factory
    from medvol.objectives import adversarial

    torch.manual_seed(0)
    networks = factory.build(family, 2, 16, num_classes=num_classes, base_channels=4)
    generator, critic = networks["generator"], networks["critic"]
    objective = adversarial.WassersteinGradientPenalty()
    trainer = GenerativeAdversarialTrainer(
        "cpu", make_loader(count=8, batch_size=4, size=16, num_classes=2), generator, critic,
        torch.optim.Adam(generator.parameters(), lr=1e-4, betas=(0.0, 0.9)), torch.optim.Adam(critic.parameters(), lr=1e-4, betas=(0.0, 0.9)),
        objective, critic_steps=2, max_iterations=2, precision="bf16", micro_batch=2, run_dir=tmp_path, checkpoint_every=1,
    )
    trainer.run()
    output = trainer.state.output
    assert trainer.state.iteration == 2 and output["critic/gradient_penalty"] >= 0
    if num_classes:
        assert "critic/aux_loss" in output and "generator/aux_loss" in output
    assert CheckpointManager(tmp_path / "checkpoints").load_latest()["iteration"] == 2


def test_logged_terms_are_read_back_once_per_optimiser_step_not_per_micro_batch(monkeypatch):
    from tests.engines.toys import ToyWasserstein

    reads = {"count": 0}
    for name in ("__float__", "item", "tolist"):
        original = getattr(torch.Tensor, name)

        def counting(self, *args, _original=original, **kwargs):
            reads["count"] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counting)

    def reads_of_one_iteration(micro_batch: int) -> int:
        generator, critic, g_opt, d_opt = make_gan(2, 8)
        trainer = GenerativeAdversarialTrainer(
            "cpu", make_loader(count=8, batch_size=8, shuffle=False), generator, critic, g_opt, d_opt, ToyWasserstein(),
            micro_batch=micro_batch, max_iterations=1, health_interval=0,
        )
        reads["count"] = 0
        trainer.run()
        return reads["count"]

    assert reads_of_one_iteration(1) == reads_of_one_iteration(8)  # 8 micro-batches read back as often as 1
