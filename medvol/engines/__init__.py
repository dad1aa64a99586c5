"""Training engines: adversarial and autoencoder trainers (MONAI/ignite), mixed precision, memory planning,
crash-safe checkpoints, monitoring and evaluation during training. See :mod:`medvol.engines.trainer` for how to
construct a trainer."""

from medvol.engines.amp import AutocastModule, Precision, resolve_precision
from medvol.engines.checkpoint import CheckpointManager, capture_rng_state, restore_rng_state
from medvol.engines.evaluation import TrainingEvaluator
from medvol.engines.guards import AdversarialHealth, NonFiniteLossError
from medvol.engines.memory import MemoryPlan, TensorMemoryTracker, apply_activation_checkpointing, plan_memory
from medvol.engines.monitoring import TrainingMonitor, sample_montage
from medvol.engines.stream import BatchStream
from medvol.engines.trainer import (
    AutoencoderTrainer,
    GenerativeAdversarialTrainer,
    MedvolTrainer,
    default_prepare_batch,
)

__all__ = [
    "GenerativeAdversarialTrainer",
    "AutoencoderTrainer",
    "MedvolTrainer",
    "default_prepare_batch",
    "Precision",
    "resolve_precision",
    "AutocastModule",
    "CheckpointManager",
    "capture_rng_state",
    "restore_rng_state",
    "NonFiniteLossError",
    "AdversarialHealth",
    "MemoryPlan",
    "TensorMemoryTracker",
    "plan_memory",
    "apply_activation_checkpointing",
    "TrainingMonitor",
    "TrainingEvaluator",
    "sample_montage",
    "BatchStream",
]
