"""Subprocess used by test_resume.py: train a tiny conditional WGAN-GP deterministically in RUN, printing
``ITER <n>`` after each iteration; run again on the same RUN to resume. Usage:
``python -m tests.engines.resume_worker RUN ITERATIONS CHECKPOINT_EVERY``. On SIGINT/SIGTERM it prints
``INTERRUPTED <iteration> <checkpoint>`` and exits with the trainer's code (130 / 143)."""

from __future__ import annotations

import random
import sys

import numpy as np
import torch
from ignite.engine import Events

from medvol.engines import GenerativeAdversarialTrainer
from medvol.engines.trainer import TrainingInterrupted
from tests.engines.toys import ToyWassersteinGP, make_gan, make_loader


def main(run_dir: str, iterations: int, checkpoint_every: int) -> int:
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    generator, critic, g_opt, d_opt = make_gan(2, 8, num_classes=2, seed=0)
    trainer = GenerativeAdversarialTrainer(
        "cpu",
        make_loader(count=12, batch_size=4, num_classes=2),  # 3 batches per pass: passes end mid-iteration
        generator,
        critic,
        g_opt,
        d_opt,
        ToyWassersteinGP(),
        critic_steps=2,
        ema_decay=0.9,
        max_iterations=iterations,
        run_dir=run_dir,
        checkpoint_every=checkpoint_every,
        seed=7,
        precision="fp32",  # the bitwise promise is for fp32; auto would be bf16 on a CPU with AMX
        health_interval=0,
    )

    def report(engine):
        print(f"ITER {engine.state.iteration}", flush=True)

    trainer.add_event_handler(Events.ITERATION_COMPLETED, report)
    try:
        trainer.run()
    except TrainingInterrupted as stop:
        print(f"INTERRUPTED {stop.iteration} {stop.checkpoint}", flush=True)
        return stop.exit_code
    print("DONE", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
