"""BatchStream: endless passes, order a function of (seed, pass), exact continuation after a restart."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, WeightedRandomSampler

from medvol.engines import BatchStream
from tests.engines.toys import IndexedImages, item_ids


def _take(stream, n):
    return [item_ids(next(stream)["image"]) for _ in range(n)]


@pytest.mark.parametrize("shuffle", [True, False])
def test_restarted_stream_continues_with_the_same_batches(shuffle):
    loader = DataLoader(IndexedImages(10), batch_size=3, shuffle=shuffle, drop_last=True)  # 3 batches per pass
    stream = BatchStream(loader, seed=5)
    first = _take(stream, 4)
    state = stream.state_dict()
    assert state == {"data_epoch": 1, "offset": 1, "seed": 5}
    rest = _take(stream, 5)

    torch.manual_seed(123)  # the global RNG plays no part in the order
    restarted = BatchStream(loader, seed=0)
    restarted.load_state_dict(state)
    assert _take(restarted, 5) == rest
    passes = [sum(first[:3], []), sum((first + rest)[3:6], [])]
    assert all(len(set(p)) == 9 for p in passes)
    assert (passes[0] != passes[1]) == shuffle


def test_other_samplers_are_skipped_by_drawing():
    dataset = IndexedImages(8)
    sampler = WeightedRandomSampler(torch.ones(8), num_samples=8, generator=torch.Generator().manual_seed(0))
    stream = BatchStream(DataLoader(dataset, batch_size=2, sampler=sampler))
    _take(stream, 2)
    assert stream.state_dict()["offset"] == 2
    restarted = BatchStream(DataLoader(dataset, batch_size=2, sampler=sampler))
    restarted.load_state_dict(stream.state_dict())
    assert len(_take(restarted, 3)) == 3  # continues (order depends on the sampler's own generator)


def test_an_empty_loader_is_an_error():
    stream = BatchStream(DataLoader(IndexedImages(2), batch_size=4, drop_last=True))
    with pytest.raises(RuntimeError, match="no batches"):
        next(stream)


def test_one_loader_and_persistent_workers_serve_every_pass():
    loader = DataLoader(IndexedImages(6), batch_size=2, shuffle=True, drop_last=True, num_workers=1)
    stream = BatchStream(loader, seed=1)
    first_pass = _take(stream, 3)
    pass_loader = stream._pass_loader
    workers = pass_loader._iterator._workers if pass_loader._iterator is not None else None
    second_pass = _take(stream, 3)
    assert stream._pass_loader is pass_loader and pass_loader.persistent_workers
    assert pass_loader._iterator._workers == workers  # the same worker processes, not new ones per pass
    assert sorted(sum(first_pass, [])) == sorted(sum(second_pass, [])) == list(range(6)) and first_pass != second_pass
