"""Weight initialisers: PriorProbability for the classification head's final bias."""
import math

import keras


@keras.saving.register_keras_serializable(package="keras_retinanet")
class PriorProbability(keras.initializers.Initializer):
    """Constant bias ``-log((1 - p) / p)``, so a sigmoid output starts at probability ``p``.

    RetinaNet starts every anchor as background with confidence ``1 - p`` (p = 0.01), which
    keeps the many easy negatives from swamping the loss in the first iterations.
    """

    def __init__(self, probability=0.01):
        if not 0.0 < probability < 1.0:
            raise ValueError(f"PriorProbability: probability must be in (0, 1), got {probability}")
        self.probability = float(probability)

    def __call__(self, shape, dtype=None):
        value = -math.log((1.0 - self.probability) / self.probability)
        return keras.ops.full(shape, value, dtype=dtype or "float32")

    def get_config(self):
        return {"probability": self.probability}
