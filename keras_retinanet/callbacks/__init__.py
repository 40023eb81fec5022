"""Training callbacks: Evaluate (VOC mAP per epoch), CocoEval (COCO metrics), RedirectModel."""
from keras_retinanet.callbacks.common import RedirectModel  # noqa: F401
from keras_retinanet.callbacks.eval import Evaluate  # noqa: F401
from keras_retinanet.callbacks.coco import CocoEval  # noqa: F401
