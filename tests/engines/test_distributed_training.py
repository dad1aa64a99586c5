"""Two gloo processes train a toy GAN under DistributedDataParallel: each rank draws its own latents and penalty mixing
weights, the ranks end with identical weights, micro-batches other than the last do not all-reduce (``no_sync``), the
EMA generator is a copy of the network (not of the wrapper), and activation checkpointing reaches the network's blocks
through the wrapper."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from torch.nn.parallel import DistributedDataParallel

from medvol.engines import GenerativeAdversarialTrainer
from medvol.engines.memory import apply_activation_checkpointing
from tests.engines.toys import ToyWassersteinGP, make_gan, make_loader

ITERATIONS = 3


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _counting_hook(counter: list[int]):
    def hook(state, bucket):
        counter[0] += 1
        return allreduce_hook(state, bucket)

    return hook


def _rank(rank: int, port: int, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)  # every rank seeded alike: only the trainer's per-rank streams may tell them apart
        generator, critic, g_opt, d_opt = make_gan(2, 8, num_classes=2, seed=0)
        generator, critic = DistributedDataParallel(generator), DistributedDataParallel(critic)
        counts = {"generator": [0], "critic": [0]}
        generator.register_comm_hook(dist.group.WORLD, _counting_hook(counts["generator"]))
        critic.register_comm_hook(dist.group.WORLD, _counting_hook(counts["critic"]))
        objective = ToyWassersteinGP(record=True)
        trainer = GenerativeAdversarialTrainer(
            "cpu", make_loader(count=16, batch_size=4, num_classes=2, shuffle=False), generator, critic, g_opt, d_opt,
            objective, critic_steps=2, micro_batch=2, ema_decay=0.9, max_iterations=ITERATIONS, seed=3, health_interval=0,
        )
        alphas = []
        original_rand = torch.rand

        def recording_rand(*args, **kwargs):
            value = original_rand(*args, **kwargs)
            alphas.append(value.clone())
            return value

        torch.rand = recording_rand  # the penalty's mixing weights come from the global torch.rand
        try:
            trainer.run()
        finally:
            torch.rand = original_rand
        results[rank] = {
            "fakes": torch.cat([call["fake"] for call in objective.critic_calls]),
            "generator_fakes": torch.cat([call["fake"] for call in objective.generator_calls]),
            "alphas": torch.cat([a.flatten() for a in alphas]),
            "weights": {k: v.clone() for k, v in generator.module.state_dict().items()},
            "critic_weights": {k: v.clone() for k, v in critic.module.state_dict().items()},
            "ema_is_wrapper": isinstance(trainer.ema_generator, DistributedDataParallel),
            "ema_keys": sorted(trainer.ema_generator.state_dict()),
            "export_keys": sorted(trainer.model_state_dict()),
            "all_reduces": {name: count[0] for name, count in counts.items()},
            "checkpointed": apply_activation_checkpointing(DistributedDataParallel(make_gan(2, 8, seed=0)[1])),
            "global_rng": torch.get_rng_state(),
        }
    finally:
        dist.destroy_process_group()


def test_ranks_draw_their_own_latents_and_end_with_identical_weights():
    results = mp.Manager().dict()
    mp.spawn(_rank, args=(_free_port(), results), nprocs=2, join=True)
    first, second = results[0], results[1]
    # the same number of draws on both ranks, none of them equal
    assert first["fakes"].shape == second["fakes"].shape == (ITERATIONS * 2 * 4, 1, 8, 8)  # 2 critic steps of 4
    assert not torch.isclose(first["fakes"], second["fakes"]).all(dim=(1, 2, 3)).any()
    assert not torch.isclose(first["generator_fakes"], second["generator_fakes"]).all(dim=(1, 2, 3)).any()
    assert first["alphas"].numel() == second["alphas"].numel() == ITERATIONS * 2 * 4
    assert not torch.isclose(first["alphas"], second["alphas"]).any()
    # gradients averaged over both ranks' (different) samples: identical weights
    for name in ("weights", "critic_weights"):
        assert first[name].keys() == second[name].keys()
        assert all(torch.equal(first[name][k], second[name][k]) for k in first[name])
    # one all-reduce per optimiser step (2 micro-batches each): the first micro-batch stays local under no_sync
    assert first["all_reduces"] == {"generator": ITERATIONS, "critic": 2 * ITERATIONS}
    assert not first["ema_is_wrapper"] and first["ema_keys"] == first["export_keys"] == sorted(first["weights"])
    # the critic's two convolutions are its blocks, found inside the wrapper
    assert first["checkpointed"] == ["features"]
    # the training steps left the global generator alone (both ranks seeded it alike)
    assert torch.equal(first["global_rng"], second["global_rng"])
