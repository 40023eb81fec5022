"""The numbers that several parts of the package share, in one place.

Pure Python (no TensorFlow): the command-line tools read these for their ``--help``.
Modules that own a concept re-export its constants under their historical names
(``layers.filter_detections.DEFAULT_SCORE_THRESHOLD``, ``utils.anchors.ANCHOR_IGNORE``, ...);
those are the same objects as here.
"""

# Image resizing: the shorter side is scaled to MIN_SIDE unless the longer one then exceeds MAX_SIDE.
DEFAULT_IMAGE_MIN_SIDE = 800
DEFAULT_IMAGE_MAX_SIDE = 1333

# Detection filtering in the inference graph (layers.FilterDetections).
DEFAULT_SCORE_THRESHOLD = 0.05  # detections scoring at or below this are dropped
DEFAULT_NMS_THRESHOLD = 0.5  # IoU above which NMS drops the lower-scoring box
DEFAULT_MAX_DETECTIONS = 300  # detections per image the graph returns
DEFAULT_PRE_NMS_TOP_K = 1000  # candidates per image before NMS

# Evaluation protocol (utils.eval, retinanet-evaluate; fizyr's and VOC's).
DEFAULT_IOU_THRESHOLD = 0.5  # minimum IoU of a true positive
DEFAULT_EVAL_MAX_DETECTIONS = 100  # best detections kept per image

# Padding of the inference outputs: boxes, scores and labels beyond the detections found.
PADDING_VALUE = -1

# Anchor states, in the last column of the regression and classification targets.
ANCHOR_IGNORE = -1
ANCHOR_NEGATIVE = 0
ANCHOR_POSITIVE = 1

# training choices of retinanet-train (the names its flags take)
OPTIMIZERS = ("adam", "adamw", "sgd")
BOX_LOSSES = ("smooth_l1", "giou")
HEAD_NORMS = ("none", "group")
BACKBONE_NORMS = ("batch", "group")
LR_SCHEDULES = ("plateau", "cosine")
