"""Training: runtime set-up, compilation, default callbacks, fit plans and the LR finder."""

from keras_med.tasks import monitor_mode
from keras_med.training.callbacks import build_callbacks
from keras_med.training.compile import build_loss, build_metrics, build_optimizer, compile_model
from keras_med.training.divergence import Divergence, DivergenceGuard, weights_are_finite
from keras_med.training.fit import fit_model, freeze_backbone, read_history, resolve_plan, unfreeze_top
from keras_med.training.lr_finder import LearningRateFinderResult, find_learning_rate
from keras_med.training.metrics import BalancedAccuracy
from keras_med.training.outcome import TrainingOutcome, check_training_settings, read_training_outcome
from keras_med.training.runtime import setup_runtime, use_jit_compile, use_mixed_precision

__all__ = ["BalancedAccuracy", "build_callbacks", "build_loss", "build_metrics", "build_optimizer",
           "check_training_settings", "compile_model", "Divergence", "DivergenceGuard", "find_learning_rate",
           "fit_model", "freeze_backbone", "LearningRateFinderResult", "monitor_mode", "read_history",
           "read_training_outcome", "resolve_plan", "setup_runtime", "TrainingOutcome", "unfreeze_top",
           "use_jit_compile", "use_mixed_precision", "weights_are_finite"]
