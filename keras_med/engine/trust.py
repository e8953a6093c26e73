"""The trust step of a recipe run: `assess_trust` on the run's own splits and settings.

Lives with the recipes because it reads a run's `PreparedData` and `RecipeConfig`; the measuring
itself is `keras_med.evaluation.trust`.
"""

from __future__ import annotations


def assess_run_trust(run_dir, model, prepared, config, recipe: str | None = None):
    """`assess_trust` for a recipe run: its splits, pipelines options and evaluation settings.

    Args:
        run_dir: The run directory (gets `trust/`).
        model: The trained model.
        prepared: The run's `PreparedData` (keras_med.data.preparation).
        config: The run's `RecipeConfig`.
        recipe: The recipe name.

    Returns:
        The `keras_med.evaluation.trust.TrustResult`.
    """
    # Imported here: the recipe registry imports this module, and `keras-med recipes` should not wait
    # for TensorFlow.
    from keras_med.data.preparation import test_image_source
    from keras_med.evaluation.trust import assess_trust, save_trust

    parts = prepared.parts
    datasets = {name: evaluation_pipeline(parts[name], config) for name in ("train", "val", "test")}
    evaluation = config.evaluation
    result = assess_trust(
        model, task=prepared.table.task, class_names=prepared.table.class_names, datasets=datasets,
        targets={name: parts[name].targets() for name in datasets},
        groups_test=parts["test"].frame["group"].to_numpy(), test_images=test_image_source(parts["test"], config),
        image_size=config.data.image_size, recipe=recipe, ood_method=evaluation.ood,
        pass_rate=evaluation.ood_pass_rate, coverage=evaluation.coverage, conformal_mode=evaluation.conformal,
        n_bootstrap=evaluation.bootstrap, seed=config.train.seed)
    save_trust(result, run_dir)
    return result


def evaluation_pipeline(part, config):
    """A split's images without augmentation, in table order (the training split's too)."""
    from keras_med import data as kdata

    options = dict(image_size=config.data.image_size, batch_size=config.data.batch_size, resize=config.data.resize,
                   seed=config.train.seed, cache="none" if part.pixels is None else "memory", training=False,
                   augment="none")
    if config.data.prepared and part.pixels is None:
        return kdata.build_prepared_pipeline(config.data.prepared, part, **options)
    # The images were checked when the run's own pipelines were built.
    return kdata.build_image_pipeline(part.images(), part.targets(), check=False, **options)
