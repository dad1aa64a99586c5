"""The names of metrics.json (`medvol.evaluation.keys`): every top-level key an evaluation writes is one of
`MetricsKeys`, and the whole key tree of a small evaluation with every option, in the order written, is the one committed in
tests/evaluation/data/metrics_keys.json (written by the evaluation before it moved into `medvol.evaluation`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from medvol.evaluation import evaluate
from medvol.evaluation.keys import METRICS_FILE, MetricsKeys
from tests.evaluation.test_pipeline import prepared, synthetic  # noqa: F401 - fixtures

KEY_TREE = Path(__file__).parent / "data" / "metrics_keys.json"


def key_tree(value, prefix: str = "") -> list[str]:
    """Dotted paths of every dict key in `value` in the order written (lists of dicts: their first item, as ``[]``)."""
    if isinstance(value, dict):
        return [path for key, item in value.items() for path in (prefix + key, *key_tree(item, f"{prefix}{key}."))]
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return key_tree(value[0], prefix + "[].")
    return []


def test_metrics_json_keys_are_the_named_ones_and_unchanged(prepared, synthetic, tmp_path):  # noqa: F811
    out = tmp_path / "eval"
    evaluate(prepared, synthetic, out, utility=True, seeds=1, classifier_epochs=2, filter_synthetic=True,
             balance=True, pretrain=True, select_confidence=0.1, device="cpu", progress=False)
    written = json.loads((out / METRICS_FILE).read_text())
    named = {value for name, value in vars(MetricsKeys).items() if name.isupper() and isinstance(value, str)}
    assert set(written) <= named and set(MetricsKeys.REQUIRED) <= set(written)
    tree = key_tree(written)
    if os.environ.get("MEDVOL_WRITE_KEY_TREE"):  # to record a deliberate change of metrics.json
        KEY_TREE.write_text(json.dumps(tree, indent=1) + "\n")
    assert tree == json.loads(KEY_TREE.read_text())
