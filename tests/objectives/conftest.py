"""Fixtures of the objective tests: the single-thread fixture of the network tests."""

from tests.networks.conftest import _single_thread  # noqa: F401
