"""MONAI bundles of medvol: find a bundle by name, load and run its workflows (:mod:`medvol.bundles.configs`), start
distributed training with torchrun (:mod:`medvol.bundles.launch`), and the helpers the bundles' configs call
(:mod:`medvol.bundles.training`).

``medvol train``/``sample``/``evaluate`` never wire training by hand: they build overrides and run the same bundle
workflows as ``python -m monai.bundle run``.
"""

from medvol.bundles.configs import (
    BUNDLES_DIR,
    bundle_config_files,
    create_workflow,
    input_errors_unwrapped,
    load_workflow,
    resolve_bundle,
    resolved_config,
    run_workflow,
)
from medvol.bundles.launch import run_torchrun, torchrun_command
from medvol.bundles.training import class_count, datalist_path, every, fit_batch_size, scalar_outputs, training_dataset

__all__ = [
    "BUNDLES_DIR",
    "resolve_bundle",
    "bundle_config_files",
    "load_workflow",
    "create_workflow",
    "run_workflow",
    "input_errors_unwrapped",
    "resolved_config",
    "torchrun_command",
    "run_torchrun",
    "datalist_path",
    "class_count",
    "training_dataset",
    "fit_batch_size",
    "every",
    "scalar_outputs",
]
