"""RetinaNetModel: a functional Keras model that carries its detector spec.

Training and inference models built by this package are ``RetinaNetModel`` instances: a
plain functional model (same layers, outputs and weights) plus ``spec``, the
``keras_retinanet.spec.DetectorSpec`` of how it was made. The spec is part of the
model's Keras config, so ``model.save("x.keras")`` keeps it and loading the file gives
it back, with no ``custom_objects``.
"""
import keras

from ..spec import CONFIG_KEY, DetectorSpec


@keras.saving.register_keras_serializable(package="keras_retinanet")
class RetinaNetModel(keras.Model):
    """Functional model with a ``spec`` (``DetectorSpec`` or None).

    Args:
        inputs, outputs, name: as ``keras.Model(inputs, outputs, name)``.
        detector_spec: ``DetectorSpec`` or its ``to_dict()`` form (from a saved config).
    """

    def __init__(self, inputs, outputs, name=None, **kwargs):
        spec = kwargs.pop(CONFIG_KEY, None)
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)
        self.spec = spec

    @property
    def spec(self):
        return self._detector_spec

    @spec.setter
    def spec(self, value):
        if isinstance(value, dict):
            value = DetectorSpec.from_dict(value)
        if value is not None and not isinstance(value, DetectorSpec):
            raise TypeError(f"spec must be a DetectorSpec, a dict or None, got {type(value).__name__}")
        # object.__setattr__: the spec is plain data, not something for Keras to track
        object.__setattr__(self, "_detector_spec", value)

    @property
    def class_names(self):
        """Class names by label (None if the spec does not record them)."""
        return None if self.spec is None else self.spec.class_names

    def get_config(self):
        config = super().get_config()
        if self.spec is not None:
            config[CONFIG_KEY] = self.spec.to_dict()
        return config


def model_spec(model):
    """The ``DetectorSpec`` of a model (None for a model without one, e.g. an older snapshot)."""
    return getattr(model, "spec", None) if isinstance(getattr(model, "spec", None), DetectorSpec) else None


def with_spec(model, spec):
    """Set ``spec`` on a RetinaNetModel; a plain functional model is wrapped into one.

    The wrapper shares the model's layers and weights; a compiled model's optimizer (its
    state included) and losses carry over, so a resumed older snapshot trains on.
    """
    if not isinstance(model, RetinaNetModel):
        wrapped = RetinaNetModel(model.inputs, model.outputs, name=model.name)
        if getattr(model, "compiled", False) and getattr(model, "optimizer", None) is not None:
            wrapped.compile(optimizer=model.optimizer, loss=model.loss)
        model = wrapped
    model.spec = spec
    return model
