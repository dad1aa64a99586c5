"""The names of the former ``medvol.bundle`` module, kept for bundle configs and code written against it.

The module was split along its concepts: bundle configs and workflows in :mod:`medvol.bundles` (``configs``,
``launch``, ``training``), distributed training in :mod:`medvol.engines.distributed`, the run record in
:mod:`medvol.runs`, the time budget in :mod:`medvol.engines.time_limit`.
"""

from medvol.bundles import (
    BUNDLES_DIR,
    FAMILIES,
    bundle_config_files,
    class_count,
    create_workflow,
    datalist_path,
    every,
    fit_batch_size,
    input_errors_unwrapped,
    load_workflow,
    resolve_bundle,
    resolved_config,
    run_torchrun,
    run_workflow,
    scalar_outputs,
    torchrun_command,
    training_dataset,
)
from medvol.engines.distributed import (
    DistributedNetwork,
    RankZeroCheckpoints,
    distributed_device,
    finish_distributed,
    follow_rank_zero,
    init_distributed,
    is_rank_zero,
    place_networks,
)
from medvol.engines.time_limit import TrainingTimeLimit
from medvol.runs import training_data_summary, write_run_record

__all__ = [
    "FAMILIES",
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
    "place_networks",
    "DistributedNetwork",
    "is_rank_zero",
    "every",
    "scalar_outputs",
    "write_run_record",
    "training_data_summary",
    "init_distributed",
    "distributed_device",
    "RankZeroCheckpoints",
    "follow_rank_zero",
    "finish_distributed",
    "TrainingTimeLimit",
]
