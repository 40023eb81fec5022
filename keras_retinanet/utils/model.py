"""Model utilities."""


def freeze(model):
    """Make every layer of ``model`` non-trainable (BatchNormalization then runs in inference mode).

    Args:
        model: keras.Model, e.g. a backbone passed as ``modifier=freeze``.

    Returns:
        The same model, for use as a backbone ``modifier``.
    """
    for layer in model.layers:
        layer.trainable = False
    return model
