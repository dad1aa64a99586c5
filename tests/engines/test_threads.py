"""The CPU thread policy of training on a shared machine."""

from __future__ import annotations

import os

import torch

from medvol.engines import threads as thread_policy


def test_busy_cpus_train_with_one_thread_and_restore_the_setting(monkeypatch):
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        monkeypatch.setattr(os, "getloadavg", lambda: (float(os.cpu_count() or 1), 0.0, 0.0))
        with thread_policy.training_threads("cpu") as chosen:
            assert chosen == 1 == torch.get_num_threads()
        assert torch.get_num_threads() == 2
        with thread_policy.training_threads("cuda") as chosen:  # a GPU training keeps torch's setting
            assert chosen == 2 == torch.get_num_threads()
        monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
        with thread_policy.training_threads("cpu") as chosen:
            assert chosen == 2
    finally:
        torch.set_num_threads(previous)
