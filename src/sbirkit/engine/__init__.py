"""The shared engine: configs and presets, the training loop, checkpoints, inference, evaluation."""

from .checkpoint import CheckpointError, atomic_save, load_checkpoint
from .config import ConfigError, apply_overrides, list_presets, load_preset, save_config
from .evaluate import evaluate_run
from .inference import embed_samples, load_run, model_fingerprint
from .trainer import Trainer, train

__all__ = [
    "CheckpointError",
    "ConfigError",
    "Trainer",
    "apply_overrides",
    "atomic_save",
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
