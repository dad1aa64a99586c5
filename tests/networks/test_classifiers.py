"""ResNetClassifier: shapes in 2D and 3D, the strided-stem rule, input checks, rebuilding from its config."""

from __future__ import annotations

import pytest
import torch

from medvol.networks import ResNetClassifier
from medvol.networks.classifiers import stem_stride_for

# spatial_dims, input size, num_classes, channels, stem_stride
TEST_CASE_1 = [2, (16, 16), 2, (8, 16, 32), 1]
TEST_CASE_2 = [2, (32, 32), 6, (16, 32, 64), 2]
TEST_CASE_3 = [2, (24, 40), 3, (8, 16), 1]
TEST_CASE_4 = [3, (16, 16, 16), 2, (4, 8, 16), 1]
TEST_CASE_5 = [3, (16, 16, 8), 4, (4, 8), 2]


@pytest.mark.parametrize("spatial_dims, size, num_classes, channels, stem_stride", [
    TEST_CASE_1, TEST_CASE_2, TEST_CASE_3, TEST_CASE_4, TEST_CASE_5
])
def test_output_and_feature_shapes(spatial_dims, size, num_classes, channels, stem_stride):
    model = ResNetClassifier(spatial_dims, num_classes, channels=channels, stem_stride=stem_stride).eval()
    x = torch.randn(3, 1, *size)
    with torch.no_grad():
        logits = model(x)
        features = model.features(x)
    assert logits.shape == (3, num_classes)
    assert features.shape == (3, channels[-1])
    assert model.feature_size == channels[-1]
    assert torch.all(features >= 0)  # pooled after a ReLU
    assert torch.allclose(model.head(features), logits)


@pytest.mark.parametrize("size, expected", [((16, 16), 1), ((17, 64), 2), ((31, 64), 2), ((32, 32), 2), ((64, 64), 2),
                                            ((16, 16, 16), 1), ((28, 28, 28), 2), ((32, 32, 32), 2), ((64, 64, 16), 1)])
def test_stem_stride_rule_keeps_two_voxels_per_axis(size, expected):
    channels = (16, 32, 64)
    stride = stem_stride_for(size, channels)
    assert stride == expected
    model = ResNetClassifier(len(size), 2, channels=(2, 2, 2), stem_stride=stride)
    h = model.stem(torch.zeros(1, 1, *size))
    for stage in model.stages:
        h = stage(h)
    assert min(h.shape[2:]) >= 2


def test_rejects_wrong_inputs():
    model = ResNetClassifier(2, 2, channels=(4, 8))
    with pytest.raises(ValueError, match="2D classifier expects"):
        model(torch.zeros(2, 1, 8, 8, 8))
    with pytest.raises(ValueError, match="2D classifier expects"):
        model(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="num_classes >= 2"):
        ResNetClassifier(2, 1)
    with pytest.raises(ValueError, match="spatial_dims"):
        ResNetClassifier(4, 2)
    with pytest.raises(ValueError, match="stem_stride"):
        ResNetClassifier(2, 2, stem_stride=3)


def test_config_rebuilds_the_same_network():
    model = ResNetClassifier(3, 3, channels=(4, 8), blocks_per_stage=2, stem_stride=2).eval()
    copy = ResNetClassifier(**model.config()).eval()
    copy.load_state_dict(model.state_dict())
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), copy(x))
    assert len(model.stages[0]) == 2
