"""The shared engine: configs and presets, the training loop, checkpoints, inference, evaluation.

What a method plugs into (``docs/architecture.md``): :class:`SetupContext` and the training
sources it builds (pairs, episodes, generated), :class:`StepContext` for manual optimisation,
:class:`OptimizerSpec` for named optimisers, :class:`Evaluator` and the protocols.
"""

from .checkpoint import CheckpointError, atomic_save, load_checkpoint
from .config import ConfigError, apply_overrides, list_presets, load_preset, save_config
from .context import SetupContext, StepContext
from .evaluate import evaluate_run
from .evaluator import Evaluator
from .inference import embed_samples, load_run, model_fingerprint
from .optim import OPTIMIZERS, OptimizerSpec
from .protocols import Protocol, StandardProtocol, create_protocol
from .sources import EpisodeSource, GeneratedSource, PairSource, TrainSource
from .trainer import Trainer, train

__all__ = [
    "OPTIMIZERS",
    "CheckpointError",
    "ConfigError",
    "EpisodeSource",
    "Evaluator",
    "GeneratedSource",
    "OptimizerSpec",
    "PairSource",
    "Protocol",
    "SetupContext",
    "StandardProtocol",
    "StepContext",
    "TrainSource",
    "Trainer",
    "apply_overrides",
    "atomic_save",
    "create_protocol",
    "embed_samples",
    "evaluate_run",
    "list_presets",
    "load_checkpoint",
    "load_preset",
    "load_run",
    "model_fingerprint",
    "save_config",
    "train",
]
