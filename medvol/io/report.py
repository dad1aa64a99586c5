"""Per-file records: every input file ends up used, skipped (with a reason) or used with a warning."""

from __future__ import annotations

from dataclasses import asdict, dataclass

USED = "used"
SKIPPED = "skipped"
WARNING = "warning"


@dataclass
class FileRecord:
    """What happened to one input file.

    Args:
        path: the file.
        status: ``used``, ``skipped`` or ``warning`` (used, with a problem worth reading).
        reason: why it was skipped or what the warning is (empty when used cleanly).
        subject: subject id the file belongs to, when known.
    """

    path: str
    status: str = USED
    reason: str = ""
    subject: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)
