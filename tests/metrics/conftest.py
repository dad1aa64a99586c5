"""Metric tests run on one torch thread: their many small convolutions and matrix products are several times faster
single-threaded on a shared 2-core CPU."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
