"""`MinibatchStdDev` computes each group's spread without host synchronisation (no ``unique()``, no boolean masks, no
``.item()``: on a GPU each waits for the device on every critic call), with the per-group definition's values."""

from __future__ import annotations

import pytest
import torch

from medvol.networks import MinibatchStdDev
from tests.operators import OperatorLog

# operators that copy a value to the host, or whose output size depends on tensor values
SYNCING = {"_local_scalar_dense", "nonzero", "_unique2", "unique_dim", "unique_consecutive", "masked_select", "item"}


def _per_group_spread(features: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """The definition, group by group."""
    flat = features.float().reshape(features.shape[0], -1)
    spread = torch.zeros(features.shape[0])
    for group in groups.unique():
        members = groups == group
        if int(members.sum()) > 1:
            spread[members] = torch.sqrt(flat[members].var(dim=0, unbiased=False) + 1e-8).mean()
    return spread


# [features shape, labels (None: groups of group_size consecutive samples)]
TEST_CASE_1 = [(8, 4, 6, 6), None]
TEST_CASE_2 = [(6, 3, 4, 4, 4), [0, 2, 2, 1, 0, 2]]  # class 1 alone: spread 0
TEST_CASE_3 = [(5, 7), None]  # groups of 1: zeros


@pytest.mark.parametrize("shape,labels", [TEST_CASE_1, TEST_CASE_2, TEST_CASE_3])
def test_the_spread_matches_the_per_group_definition_without_host_syncs(shape, labels):
    torch.manual_seed(0)
    features = torch.randn(shape) * 3 + 1
    layer = MinibatchStdDev(group_size=4)
    label_tensor = None if labels is None else torch.tensor(labels)
    with OperatorLog() as ops:
        out = layer(features, label_tensor)
    assert not SYNCING & set(ops.names), sorted(SYNCING & set(ops.names))
    if labels is None:
        size = max(g for g in range(1, min(4, shape[0]) + 1) if shape[0] % g == 0)
        groups = torch.arange(shape[0]) // size
    else:
        groups = label_tensor
    expected = _per_group_spread(features, groups)
    torch.testing.assert_close(out[:, -1].reshape(shape[0], -1)[:, 0], expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(out[:, :-1], features)


def test_the_spread_stays_float32_inside_a_bfloat16_critic():
    torch.manual_seed(0)
    features = torch.randn(8, 4, 6, 6) * 0.01 + 5  # a small spread on a large mean: bfloat16 sums would lose it
    expected = _per_group_spread(features, torch.arange(8) // 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = MinibatchStdDev(group_size=4)(features)
    torch.testing.assert_close(out[:, -1, 0, 0], expected, rtol=1e-4, atol=1e-6)
