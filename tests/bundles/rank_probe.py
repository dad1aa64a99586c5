"""Test instrumentation for distributed bundle runs, attached by a config override (see
`tests/bundles/test_distributed_resume.py`): on every rank, a digest of the first latent batch the trainer draws in
each iteration and, when training completes, of the generator's (and its EMA's) parameters, written to
``out_dir/rank_<rank>.json``. It only reads: the run trains exactly as without it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import torch
from ignite.engine import Events

from medvol.engines.distributed import unwrapped


def digest(tensors: Iterable[torch.Tensor]) -> str:
    """A short hash of the bytes of `tensors`, in order."""
    hasher = hashlib.sha256()
    for tensor in tensors:
        hasher.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return hasher.hexdigest()[:16]


def parameters_digest(network: torch.nn.Module) -> str:
    return digest(parameter for _, parameter in sorted(unwrapped(network).named_parameters()))


class RankProbe:
    """A MONAI/ignite handler (``attach(engine)``) for an `GenerativeAdversarialTrainer`.

    Args:
        out_dir: folder of the ``rank_<rank>.json`` records.
    """

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.latents: dict[int, str] = {}

    def attach(self, engine) -> None:
        draw = engine._latents

        def recording(count: int, generator: torch.Generator | None = None) -> torch.Tensor:
            latents = draw(count, generator)
            if generator is None:  # the training steps' draws (sample pictures use a private generator)
                self.latents.setdefault(int(engine.state.iteration), digest([latents]))
            return latents

        engine._latents = recording
        engine.add_event_handler(Events.COMPLETED, self.write)

    def write(self, engine) -> None:
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        record = {
            "rank": rank,
            "latents": {str(iteration): value for iteration, value in sorted(self.latents.items())},
            "generator": parameters_digest(engine.generator),
            "ema_generator": None if engine.ema_generator is None else parameters_digest(engine.ema_generator),
        }
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / f"rank_{rank}.json").write_text(json.dumps(record, indent=1))
