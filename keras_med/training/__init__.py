"""Training: runtime set-up, compilation, default callbacks, fit plans and the LR finder.

The names below are imported from their modules on first use (PEP 562), so that importing one
leaf module (`keras_med.training.metrics`, which `keras_med.models.saving` registers with Keras)
does not start the whole training stack, and no training module imports back through here.
"""

import importlib

_HOMES = {
    "monitor_mode": "keras_med.tasks",
    "build_callbacks": "keras_med.training.callbacks",
    "build_loss": "keras_med.training.compile", "build_metrics": "keras_med.training.compile",
    "build_optimizer": "keras_med.training.compile", "compile_model": "keras_med.training.compile",
    "Divergence": "keras_med.training.divergence", "DivergenceGuard": "keras_med.training.divergence",
    "weights_are_finite": "keras_med.training.divergence",
    "fit_model": "keras_med.training.fit", "freeze_backbone": "keras_med.training.fit",
    "read_history": "keras_med.training.fit", "resolve_plan": "keras_med.training.fit",
    "unfreeze_top": "keras_med.training.fit",
    "LearningRateFinderResult": "keras_med.training.lr_finder", "find_learning_rate": "keras_med.training.lr_finder",
    "BalancedAccuracy": "keras_med.training.metrics",
    "TrainingOutcome": "keras_med.training.outcome", "check_training_settings": "keras_med.training.outcome",
    "read_training_outcome": "keras_med.training.outcome",
    "setup_runtime": "keras_med.training.runtime", "use_jit_compile": "keras_med.training.runtime",
    "use_mixed_precision": "keras_med.training.runtime",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'keras_med.training' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)


def __dir__():
    return __all__
