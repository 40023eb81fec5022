"""RetinaNetModel: a functional Keras model that carries its detector spec.

Training and inference models built by this package are ``RetinaNetModel`` instances: a
plain functional model (same layers, outputs and weights) plus ``spec``, the
``keras_retinanet.spec.DetectorSpec`` of how it was made. The spec is part of the
model's Keras config, so ``model.save("x.keras")`` keeps it and loading the file gives
it back, with no ``custom_objects``.

It also trains under every ``tf.distribute`` strategy retinanet-train offers: two steps of
Keras 3's ``fit`` fail under MultiWorkerMirroredStrategy (keras-team/keras#20585) and are
done differently here (see ``_maybe_symbolic_build`` and ``train_step``).
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

    # -- training under tf.distribute ------------------------------------------------------

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Build the compiled losses from the shapes of the data, not from a batch of it.

        Under a strategy, Keras 3 reads a first batch off the training iterator to build,
        reduces it over the replicas (which fails across workers: the reduce does not take
        its nested structure) and restarts the iterator: that batch is decoded for nothing
        and the pipeline's random draws (group order, augmentation) move on, so that the
        run no longer sees the data a run on one device sees. The dataset's element spec
        has the shapes and dtypes the build needs.
        """
        spec = _element_spec(iterator) if data_batch is None else None
        if spec is not None:
            return super()._maybe_symbolic_build(data_batch=spec)
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def train_step(self, data):
        return _logs_to_reduce(self, super().train_step(data))

    def test_step(self, data):
        return _logs_to_reduce(self, super().test_step(data))


def _element_spec(iterator):
    """Per-replica ``tf.TensorSpec`` structure of the data of a Keras epoch iterator, or None."""
    adapter = getattr(iterator, "data_adapter", None)
    get_dataset = getattr(adapter, "get_tf_dataset", None)
    if get_dataset is None:
        return None
    import tensorflow as tf

    try:
        spec = get_dataset().element_spec
    except (AttributeError, NotImplementedError, TypeError, ValueError):
        return None

    def per_replica(value):  # a distributed dataset's spec holds one spec per local replica
        specs = getattr(value, "_value_specs", None)
        return specs[0] if specs else value

    spec = tf.nest.map_structure(per_replica, spec)
    if not all(isinstance(s, tf.TensorSpec) for s in tf.nest.flatten(spec)):
        return None
    return spec


def _logs_to_reduce(model, logs):
    """A step's logs as Keras can reduce them over the workers of a multi-worker strategy.

    Keras 3 means the logs of the replicas of several workers along their first axis,
    which a scalar does not have: each becomes a vector of one. Elsewhere they are kept.
    """
    from keras_retinanet.distribute import in_multi_worker_mode

    if not in_multi_worker_mode(model.distribute_strategy):
        return logs
    return {key: keras.ops.reshape(value, (1,)) if len(value.shape) == 0 else value for key, value in logs.items()}


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
