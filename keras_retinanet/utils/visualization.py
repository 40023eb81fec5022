"""Drawing boxes, captions, detections and ground truth on images; precision-recall plots.

Images are (H, W, 3) uint8 BGR arrays, drawn on in place. Boxes are absolute
``x1, y1, x2, y2`` pixel corners (floats are rounded to the nearest pixel corner); the box
covers pixel columns x1 .. x2 - 1 and rows y1 .. y2 - 1.
"""
import cv2
import numpy as np

from keras_retinanet.utils.colors import label_color

CAPTION_FONT = cv2.FONT_HERSHEY_SIMPLEX
CAPTION_FONT_SCALE = 0.45
CAPTION_THICKNESS = 1
CAPTION_PADDING = 2  # pixels between the caption text and the edge of its filled background
# Text on a background brighter than this (ITU-R BT.601 luma, 0..255) is black, else white.
LUMA_THRESHOLD = 128
GROUND_TRUTH_COLOR = (0, 255, 0)

PR_FIGURE_SIZE = (5.0, 4.0)  # inches
PR_FIGURE_DPI = 100


def _pixel_box(box):
    """Integer pixel corners of a box: a (4,) int array ``x1, y1, x2, y2``."""
    return np.round(np.asarray(box, dtype=np.float64)[:4]).astype(np.int64)


def draw_box(image, box, color, thickness=2):
    """Draw a box outline: the ``thickness``-pixel band just inside the box's edges.

    Exactly the pixels of that band (clipped to the image) change; a box smaller than
    twice the thickness is filled.

    Args:
        image: (H, W, 3) uint8 BGR, modified in place.
        box: (4,) x1, y1, x2, y2.
        color: (b, g, r).
        thickness: band width in pixels, >= 1.
    """
    if thickness < 1:
        raise ValueError(f"draw_box: thickness must be >= 1, got {thickness}")
    height, width = image.shape[:2]
    x1, y1, x2, y2 = (int(v) for v in _pixel_box(box))
    if x2 <= x1 or y2 <= y1:
        return
    color = np.asarray(color, dtype=image.dtype)

    def fill(top, bottom, left, right):
        top, bottom = max(top, 0), min(bottom, height)
        left, right = max(left, 0), min(right, width)
        if top < bottom and left < right:
            image[top:bottom, left:right] = color

    fill(y1, min(y1 + thickness, y2), x1, x2)  # top edge
    fill(max(y2 - thickness, y1), y2, x1, x2)  # bottom edge
    fill(y1, y2, x1, min(x1 + thickness, x2))  # left edge
    fill(y1, y2, max(x2 - thickness, x1), x2)  # right edge


def _text_color(fill_color):
    blue, green, red = (float(c) for c in fill_color)
    luma = 0.114 * blue + 0.587 * green + 0.299 * red
    return (0, 0, 0) if luma > LUMA_THRESHOLD else (255, 255, 255)


def caption_size(caption):
    """(width, height) in pixels of a caption's filled background as draw_caption draws it."""
    (text_width, text_height), baseline = cv2.getTextSize(
        caption, CAPTION_FONT, CAPTION_FONT_SCALE, CAPTION_THICKNESS
    )
    return text_width + 2 * CAPTION_PADDING, text_height + baseline + 2 * CAPTION_PADDING


def draw_caption(image, box, caption, color=(0, 0, 0), below=False):
    """Write a caption on a filled background at a box's top-left (or bottom-left) corner.

    The caption sits just outside the box (above it, or below it with ``below=True``);
    where there is no room it moves inside the box, and it is shifted horizontally and
    vertically to stay inside the image (unless it is larger than the image). The text is
    black or white, whichever contrasts with ``color``.

    Args:
        image: (H, W, 3) uint8 BGR, modified in place.
        box: (4,) x1, y1, x2, y2.
        caption: text.
        color: (b, g, r) of the caption background.
        below: put the caption under the box instead of above it.

    Returns:
        (x1, y1, x2, y2) ints: the caption background rectangle that was filled.
    """
    height, width = image.shape[:2]
    x1, y1, _, y2 = (int(v) for v in _pixel_box(box))
    caption_width, caption_height = caption_size(caption)

    if below:
        top = y2 if y2 + caption_height <= height else y2 - caption_height
    else:
        top = y1 - caption_height if y1 - caption_height >= 0 else y1
    top = min(max(top, 0), max(height - caption_height, 0))
    left = min(max(x1, 0), max(width - caption_width, 0))
    right, bottom = left + caption_width, top + caption_height

    cv2.rectangle(image, (left, top), (right - 1, bottom - 1), tuple(int(c) for c in color), thickness=-1)
    (_, text_height), baseline = cv2.getTextSize(caption, CAPTION_FONT, CAPTION_FONT_SCALE, CAPTION_THICKNESS)
    origin = (left + CAPTION_PADDING, top + CAPTION_PADDING + text_height)
    cv2.putText(
        image, caption, origin, CAPTION_FONT, CAPTION_FONT_SCALE, _text_color(color),
        CAPTION_THICKNESS, cv2.LINE_AA,
    )
    return left, top, right, bottom


def draw_boxes(image, boxes, color, thickness=2):
    """Draw several box outlines in one colour.

    Args:
        image: (H, W, 3) uint8 BGR, modified in place.
        boxes: (N, 4+) x1, y1, x2, y2 (extra columns ignored).
        color: (b, g, r).
        thickness: outline width in pixels.
    """
    boxes = np.asarray(boxes)
    if boxes.size == 0:
        return
    for box in boxes.reshape(-1, boxes.shape[-1]):
        draw_box(image, box, color, thickness=thickness)


def _name(label, label_to_name):
    return label_to_name(int(label)) if label_to_name else str(int(label))


def draw_detections(image, boxes, scores, labels, color=None, label_to_name=None, score_threshold=0.5):
    """Draw detections whose score exceeds a threshold, captioned ``name: score``.

    Args:
        image: (H, W, 3) uint8 BGR, modified in place.
        boxes: (N, 4) x1, y1, x2, y2.
        scores: (N,) confidence; detections with score <= score_threshold (e.g. the -1
            padding of the inference model) are skipped.
        labels: (N,) int class labels.
        color: (b, g, r) for every detection, or None for label_color(label).
        label_to_name: callable label -> class name for captions (None: the label number).
        score_threshold: draw only detections with a higher score.
    """
    boxes = np.asarray(boxes).reshape(-1, 4)
    scores = np.asarray(scores).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    for index in np.flatnonzero(scores > score_threshold):
        box_color = color if color is not None else label_color(labels[index])
        draw_box(image, boxes[index], box_color)
        caption = f"{_name(labels[index], label_to_name)}: {scores[index]:.2f}"
        draw_caption(image, boxes[index], caption, color=box_color)


def draw_annotations(image, annotations, color=GROUND_TRUTH_COLOR, label_to_name=None):
    """Draw ground-truth boxes captioned with their class name (caption under the box).

    Args:
        image: (H, W, 3) uint8 BGR, modified in place.
        annotations: dict with ``bboxes`` (K, 4) and ``labels`` (K,), or a (K, 5) array of
            x1, y1, x2, y2, label.
        color: (b, g, r) for every box, or None for label_color(label).
        label_to_name: callable label -> class name (None: the label number).
    """
    if isinstance(annotations, np.ndarray):
        if annotations.ndim != 2 or annotations.shape[1] < 5:
            raise ValueError(
                f"draw_annotations: an annotations array must be (K, 5) x1, y1, x2, y2, label; "
                f"got shape {annotations.shape}"
            )
        annotations = {"bboxes": annotations[:, :4], "labels": annotations[:, 4]}
    missing = {"bboxes", "labels"} - set(annotations)
    if missing:
        raise ValueError(f"draw_annotations: annotations lack {sorted(missing)}")
    bboxes = np.asarray(annotations["bboxes"]).reshape(-1, 4)
    labels = np.asarray(annotations["labels"]).reshape(-1)
    if len(bboxes) != len(labels):
        raise ValueError(
            f"draw_annotations: {len(bboxes)} bboxes but {len(labels)} labels"
        )
    for box, label in zip(bboxes, labels):
        box_color = color if color is not None else label_color(label)
        draw_box(image, box, box_color)
        draw_caption(image, box, _name(label, label_to_name), color=box_color, below=True)


def plot_precision_recall(recall, precision, path, title="", average_precision=None):
    """Write a precision-recall curve as a PNG (matplotlib Agg canvas, no pyplot state).

    Draws the raw curve (detections ranked by score) and its precision envelope, whose area
    is the all-point interpolated AP.

    Args:
        recall: (D,) recall after each ranked detection (non-decreasing).
        precision: (D,) precision after each ranked detection.
        path: output file (.png).
        title: plot title, e.g. the class name.
        average_precision: AP shown in the title, if given.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    figure = Figure(figsize=PR_FIGURE_SIZE, dpi=PR_FIGURE_DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    if recall.size:
        envelope = np.maximum.accumulate(precision[::-1])[::-1]
        axes.plot(recall, precision, color="tab:blue", linewidth=1, label="precision")
        axes.step(
            np.concatenate(([0.0], recall)), np.concatenate(([envelope[0]], envelope)),
            where="pre", color="tab:orange", linewidth=1.5, label="interpolated",
        )
        axes.legend(loc="lower left")
    else:
        axes.text(0.5, 0.5, "no detections", ha="center", va="center")
    if average_precision is not None:
        title = f"{title}  AP = {average_precision:.4f}".strip()
    axes.set_title(title)
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_xlim(0.0, 1.0)
    axes.set_ylim(0.0, 1.05)
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    from .files import write_atomically

    write_atomically(path, lambda temporary: figure.savefig(temporary, format="png"))
