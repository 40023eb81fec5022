"""Evaluate callback: VOC mAP on a dataset after every epoch, into the logs and TensorBoard."""
import keras

from keras_retinanet.callbacks.common import ScalarWriter, resolve_model
from keras_retinanet.utils.eval import (
    DEFAULT_IOU_THRESHOLD,
    DEFAULT_MAX_DETECTIONS,
    DEFAULT_SCORE_THRESHOLD,
    evaluate,
    mean_average_precision,
    weighted_mean_average_precision,
)


class Evaluate(keras.callbacks.Callback):
    """Compute the mAP of a generator's images at the end of every epoch.

    Puts ``mAP`` into the epoch logs, so callbacks listed after this one (EarlyStopping,
    ReduceLROnPlateau, ModelCheckpoint with monitor='mAP', mode='max') and the History
    see it. The training model has no box decoding, so give one of:

    - ``prediction_model=`` an inference model sharing the training model's weights
      (``retinanet_bbox(model=training_model)``), or a callable converting the training
      model (``keras_retinanet.models.convert_model``), called at each evaluation; or
    - wrap the callback, ``RedirectModel(Evaluate(generator), prediction_model)``, as
      fizyr's train.py does.

    Args:
        generator: Generator-like over the evaluation images (see utils.eval.evaluate).
        iou_threshold: minimum IoU of a true positive.
        score_threshold: detections with a lower score are ignored.
        max_detections: best detections kept per image.
        save_path: folder for the drawn images and PR plots (overwritten every epoch).
        tensorboard: log folder, tf.summary writer or keras.callbacks.TensorBoard to
            write ``mAP`` and ``AP/<class>`` to, or None.
        weighted_average: weight each class's AP by its number of instances.
        verbose: 1 prints the AP per class and the mAP, and shows a progress bar.
        prediction_model: see above.
        batch_size: images per predict_on_batch call.
    """

    def __init__(
        self,
        generator,
        iou_threshold=DEFAULT_IOU_THRESHOLD,
        score_threshold=DEFAULT_SCORE_THRESHOLD,
        max_detections=DEFAULT_MAX_DETECTIONS,
        save_path=None,
        tensorboard=None,
        weighted_average=False,
        verbose=1,
        prediction_model=None,
        batch_size=1,
    ):
        super().__init__()
        self.generator = generator
        self.iou_threshold = iou_threshold
        self.score_threshold = score_threshold
        self.max_detections = max_detections
        self.save_path = save_path
        self.tensorboard = tensorboard
        self.weighted_average = weighted_average
        self.verbose = verbose
        self.prediction_model = prediction_model
        self.batch_size = batch_size
        self.average_precisions = {}
        self.mean_ap = None
        self._scalars = ScalarWriter(tensorboard)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        model = resolve_model(self.model, self.prediction_model)
        self.average_precisions, _ = evaluate(
            self.generator,
            model,
            iou_threshold=self.iou_threshold,
            score_threshold=self.score_threshold,
            max_detections=self.max_detections,
            save_path=self.save_path,
            batch_size=self.batch_size,
            progress=self.verbose == 1,
        )
        average = weighted_mean_average_precision if self.weighted_average else mean_average_precision
        self.mean_ap = average(self.average_precisions)
        logs["mAP"] = self.mean_ap

        scalars = {"mAP": self.mean_ap}
        for label, (average_precision, _) in self.average_precisions.items():
            scalars[f"AP/{self.generator.label_to_name(label)}"] = average_precision
        self._scalars.write(scalars, epoch)

        if self.verbose == 1:
            for label, (average_precision, count) in self.average_precisions.items():
                print(f"{count:.0f} instances of class {self.generator.label_to_name(label)} "
                      f"with average precision: {average_precision:.4f}")
            print(f"mAP: {self.mean_ap:.4f}")
