"""The evaluation of synthetic data (`medvol evaluate`), built on the pure computations of `medvol.metrics`.

- `pipeline`: `evaluate` as named stages (load, features, fidelity, diversity, coherence, privacy, recognisability,
  utility, filtering, report) and `run_datalist`, the real datalist of a training run.
"""

from medvol.metrics.evaluate import evaluate, run_datalist

__all__ = ["evaluate", "run_datalist"]
