"""Evaluation tests run on one torch thread, as the metric tests (the fixture of tests/metrics/conftest.py)."""

from tests.metrics.conftest import _single_thread  # noqa: F401 - an autouse fixture for this folder
