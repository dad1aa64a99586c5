"""A training time budget for ignite engines."""

from __future__ import annotations

import logging
import time
from typing import Any

__all__ = ["TrainingTimeLimit"]

logger = logging.getLogger(__name__)


class TrainingTimeLimit:
    """Ends training (with its final checkpoint) once `seconds` have passed since the first iteration started.

    Args:
        seconds: the training time budget.
    """

    def __init__(self, seconds: float):
        self.seconds = float(seconds)
        self.started: float | None = None

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.ITERATION_STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._check)

    def _start(self, engine: Any) -> None:
        if self.started is None:
            self.started = time.perf_counter()

    def _check(self, engine: Any) -> None:
        if self.started is not None and time.perf_counter() - self.started >= self.seconds:
            logger.info("time budget of %.0f s reached at iteration %d", self.seconds, engine.state.iteration)
            engine.terminate()
