"""CocoEval callback: COCO AP / AR figures after every epoch, into the logs and TensorBoard."""
import keras

from keras_retinanet.callbacks.common import ScalarWriter, resolve_model
from keras_retinanet.constants import DEFAULT_SCORE_THRESHOLD
from keras_retinanet.utils.coco_eval import COCO_METRIC_NAMES, evaluate_coco, evaluate_coco_metrics

LOG_PREFIX = "coco_"


class CocoEval(keras.callbacks.Callback):
    """Compute COCO metrics on a generator's images at the end of every epoch.

    For a CocoGenerator (it has ``.coco``) the figures are pycocotools' against the
    dataset's own annotations; for any other generator (CSV, Pascal VOC) against its boxes
    (see utils.coco_eval). The 12 figures go into the logs as ``coco_AP``, ``coco_AP50``,
    ..., ``coco_ARl`` and to TensorBoard as ``coco/AP``, .... The model: as for
    ``Evaluate`` (``prediction_model=`` or RedirectModel).

    Args:
        generator: Generator-like over the evaluation images.
        tensorboard: log folder, tf.summary writer or keras.callbacks.TensorBoard, or None.
        threshold: detections with a lower score are ignored.
        prediction_model: inference model or callable training model -> inference model.
        verbose: 1 shows a progress bar and prints the figures.
        batch_size: images per predict_on_batch call.
    """

    def __init__(
        self,
        generator,
        tensorboard=None,
        threshold=DEFAULT_SCORE_THRESHOLD,
        prediction_model=None,
        verbose=1,
        batch_size=1,
    ):
        super().__init__()
        self.generator = generator
        self.tensorboard = tensorboard
        self.threshold = threshold
        self.prediction_model = prediction_model
        self.verbose = verbose
        self.batch_size = batch_size
        self.metrics = {}
        self._scalars = ScalarWriter(tensorboard)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        model = resolve_model(self.model, self.prediction_model)
        progress = self.verbose == 1
        if hasattr(self.generator, "coco"):
            stats = evaluate_coco(self.generator, model, self.threshold, batch_size=self.batch_size, progress=progress)
            if stats is None:  # no detection above the threshold
                stats = [0.0] * len(COCO_METRIC_NAMES)
            self.metrics = dict(zip(COCO_METRIC_NAMES, (float(value) for value in stats)))
        else:
            self.metrics = evaluate_coco_metrics(
                self.generator, model, score_threshold=self.threshold, batch_size=self.batch_size, progress=progress
            )
        for name, value in self.metrics.items():
            logs[LOG_PREFIX + name] = value
        self._scalars.write({f"coco/{name}": value for name, value in self.metrics.items()}, epoch)
        if progress:
            print("  ".join(f"{name} {value:.4f}" for name, value in self.metrics.items()))
