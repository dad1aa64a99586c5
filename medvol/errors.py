"""User-facing errors: one line that names the file and the problem."""

from __future__ import annotations

import os


class MedvolInputError(Exception):
    """Bad user input (a file, a folder or a flag). The CLI prints it as one line and exits with code 2.

    Args:
        path: the file, folder or flag at fault (None when no path applies).
        problem: what is wrong, in plain words.
    """

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)
