"""Callback plumbing shared by the evaluation callbacks."""
import os

import keras

TENSORBOARD_SUBFOLDER = "validation"  # next to the val_* scalars of keras.callbacks.TensorBoard
SCALARS_PLUGIN = "scalars"  # TensorBoard's plugin name for scalar summaries


class RedirectModel(keras.callbacks.Callback):
    """Run a wrapped callback against another model than the one being trained.

    E.g. ``RedirectModel(Evaluate(generator), prediction_model)`` evaluates the inference
    model (which shares its weights with the training model) after every epoch.

    Args:
        callback: the keras.callbacks.Callback to wrap.
        model: the model the wrapped callback sees as ``self.model``.
    """

    def __init__(self, callback, model):
        super().__init__()
        self.callback = callback
        self.redirect_model = model

    def set_params(self, params):
        super().set_params(params)
        self.callback.set_params(params)

    def on_train_begin(self, logs=None):
        self.callback.set_model(self.redirect_model)
        self.callback.on_train_begin(logs=logs)

    def on_train_end(self, logs=None):
        self.callback.on_train_end(logs=logs)

    def on_epoch_begin(self, epoch, logs=None):
        self.callback.on_epoch_begin(epoch, logs=logs)

    def on_epoch_end(self, epoch, logs=None):
        self.callback.on_epoch_end(epoch, logs=logs)

    def on_train_batch_begin(self, batch, logs=None):
        self.callback.on_train_batch_begin(batch, logs=logs)

    def on_train_batch_end(self, batch, logs=None):
        self.callback.on_train_batch_end(batch, logs=logs)


def resolve_model(callback_model, prediction_model):
    """The inference model an evaluation callback should run.

    Args:
        callback_model: the callback's ``self.model`` (the model being trained).
        prediction_model: None (use ``callback_model`` itself, e.g. under RedirectModel),
            a model with ``predict_on_batch`` (e.g. ``retinanet_bbox(model=training_model)``,
            sharing its weights), or a callable ``training_model -> inference model``
            (e.g. ``keras_retinanet.models.convert_model``), called at every evaluation.
    """
    if prediction_model is None:
        return callback_model
    if hasattr(prediction_model, "predict_on_batch"):
        return prediction_model
    if callable(prediction_model):
        return prediction_model(callback_model)
    raise TypeError(
        "prediction_model must be None, a model with predict_on_batch, or a callable "
        f"training_model -> inference model; got {type(prediction_model).__name__}"
    )


class ScalarWriter:
    """Writes scalars to TensorBoard, given a log folder, a tf.summary writer or a TensorBoard callback.

    Args:
        tensorboard: None (write nothing), a folder path, a ``tf.summary`` writer, or a
            ``keras.callbacks.TensorBoard`` (scalars go to its ``log_dir/validation``).
    """

    def __init__(self, tensorboard):
        self.tensorboard = tensorboard
        self._writer = None

    def _get_writer(self):
        import tensorflow as tf

        if self._writer is None:
            target = self.tensorboard
            if hasattr(target, "as_default"):
                self._writer = target
            elif isinstance(target, keras.callbacks.TensorBoard):
                self._writer = tf.summary.create_file_writer(os.path.join(target.log_dir, TENSORBOARD_SUBFOLDER))
            elif isinstance(target, (str, os.PathLike)):
                self._writer = tf.summary.create_file_writer(os.fspath(target))
            else:
                raise TypeError(
                    "tensorboard must be a log folder, a tf.summary writer or a keras.callbacks.TensorBoard; "
                    f"got {type(target).__name__}"
                )
        return self._writer

    def write(self, scalars, step):
        """Write {tag: float} at ``step`` (the epoch) and flush."""
        if self.tensorboard is None:
            return
        import tensorflow as tf
        from tensorflow.core.framework import summary_pb2

        # tf.summary.write with the scalars plugin's metadata is what tf.summary.scalar
        # writes, without needing the tensorboard package installed.
        metadata = summary_pb2.SummaryMetadata()
        metadata.plugin_data.plugin_name = SCALARS_PLUGIN
        writer = self._get_writer()
        with writer.as_default():
            for tag, value in scalars.items():
                tf.summary.write(tag, tf.constant(float(value), dtype=tf.float32), step=int(step), metadata=metadata)
        writer.flush()
