"""Synthetic detection data: images of simple filled shapes with exactly known boxes.

Used by the tests, the benchmarks and the demo. Every image has a near-uniform
background (a random colour plus small noise) and 0..N non-overlapping shapes, each
drawn in one solid colour far from the background, without anti-aliasing, so the
pixels of a shape span exactly its box. Boxes are absolute pixel corners
``x1, y1, x2, y2`` (a shape covering columns 3..10 has x1 = 3, x2 = 11).

Output layout (paths in the CSV are relative to its folder, as ``CSVGenerator`` reads them)::

    OUT/classes.csv             rectangle,0 / circle,1 / triangle,2
    OUT/<split>.csv             images/<split>_00000.png,x1,y1,x2,y2,class   (one box a line)
                                images/<split>_00003.png,,,,,                (image without objects)
    OUT/images/<split>_*.png

Command line::

    python -m keras_retinanet.utils.synthetic OUT --train 64 --val 16 --size 256
"""
import argparse
import csv
import os
import sys

import cv2
import numpy as np

SHAPE_CLASSES = ("rectangle", "circle", "triangle")
BACKGROUND_NOISE = 8  # +/- amplitude of the background noise, in grey levels
MIN_COLOUR_DISTANCE = 80  # shape colours differ from the background by at least this (L-inf)
_MAX_PLACEMENT_TRIES = 50


def _random_colour(rng, background):
    """A colour at L-inf distance >= MIN_COLOUR_DISTANCE from ``background``."""
    while True:
        colour = rng.integers(0, 256, size=3)
        if np.abs(colour - background).max() >= MIN_COLOUR_DISTANCE:
            return colour


def _overlaps(box, boxes, margin):
    for other in boxes:
        if (
            box[0] < other[2] + margin
            and other[0] < box[2] + margin
            and box[1] < other[3] + margin
            and other[1] < box[3] + margin
        ):
            return True
    return False


def _draw_shape(image, kind, box, colour, rng):
    """Draw ``kind`` filling the box [x1, x2) x [y1, y2) and touching all four sides."""
    x1, y1, x2, y2 = box
    colour = tuple(int(c) for c in colour)
    if kind == "rectangle":
        cv2.rectangle(image, (x1, y1), (x2 - 1, y2 - 1), colour, thickness=-1, lineType=cv2.LINE_8)
    elif kind == "circle":
        radius = (x2 - x1 - 1) // 2
        centre = (x1 + radius, y1 + radius)
        cv2.circle(image, centre, radius, colour, thickness=-1, lineType=cv2.LINE_8)
    elif kind == "triangle":
        # apex somewhere on the top edge, base on the bottom edge spanning the full width
        apex_x = int(rng.integers(x1, x2))
        points = np.array([[apex_x, y1], [x1, y2 - 1], [x2 - 1, y2 - 1]], dtype=np.int32)
        cv2.fillPoly(image, [points], colour, lineType=cv2.LINE_8)
    else:
        raise ValueError(f"unknown shape {kind!r}; expected one of {SHAPE_CLASSES}")


def make_image(rng, height, width, num_objects, min_size, max_size, classes=SHAPE_CLASSES):
    """One synthetic image and its boxes.

    Args:
        rng: ``numpy.random.Generator``.
        height, width: image size in pixels.
        num_objects: how many shapes to try to place (fewer if they do not fit).
        min_size, max_size: range of the box side, in pixels.
        classes: shape names to draw from (a subset of ``SHAPE_CLASSES``).

    Returns:
        image: (height, width, 3) uint8 BGR.
        boxes: (K, 4) int64 absolute x1, y1, x2, y2.
        labels: (K,) int64 indices into ``classes``.
    """
    max_size = int(min(max_size, height - 2, width - 2))
    min_size = int(min(min_size, max_size))
    background = rng.integers(0, 256, size=3)
    noise = rng.integers(-BACKGROUND_NOISE, BACKGROUND_NOISE + 1, size=(height, width, 3))
    image = np.clip(background[None, None, :] + noise, 0, 255).astype(np.uint8)

    boxes, labels = [], []
    for _ in range(num_objects):
        label = int(rng.integers(0, len(classes)))
        kind = classes[label]
        for _ in range(_MAX_PLACEMENT_TRIES):
            w = int(rng.integers(min_size, max_size + 1))
            h = w if kind == "circle" else int(rng.integers(min_size, max_size + 1))
            if kind == "circle" and w % 2 == 0:
                w = h = w - 1 if w > min_size else w + 1  # odd diameter: centre on a pixel
            if w > width - 2 or h > height - 2:
                continue
            x1 = int(rng.integers(1, width - w))
            y1 = int(rng.integers(1, height - h))
            box = (x1, y1, x1 + w, y1 + h)
            if not _overlaps(box, boxes, margin=2):
                break
        else:
            continue
        _draw_shape(image, kind, box, _random_colour(rng, background), rng)
        boxes.append(box)
        labels.append(label)

    return (
        image,
        np.asarray(boxes, dtype=np.int64).reshape(-1, 4),
        np.asarray(labels, dtype=np.int64),
    )


def write_classes(path, classes=SHAPE_CLASSES):
    """Write ``classes.csv`` (``name,id`` lines, ids from 0)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        for i, name in enumerate(classes):
            writer.writerow([name, i])
    return path


def write_split(
    out_dir,
    split="train",
    num_images=32,
    image_size=128,
    min_objects=1,
    max_objects=3,
    min_size=24,
    max_size=None,
    empty_fraction=0.1,
    seed=0,
    classes=SHAPE_CLASSES,
):
    """Write one split: ``out_dir/images/<split>_*.png`` and ``out_dir/<split>.csv``.

    Args:
        out_dir: dataset folder (created if missing).
        split: name of the split, used for the CSV and the image names.
        num_images: number of images.
        image_size: int (square) or (height, width).
        min_objects, max_objects: objects per non-empty image.
        min_size, max_size: box side range in pixels (max default: half the short side).
        empty_fraction: fraction of images without any object (written as ``path,,,,,``).
        seed: the output is a pure function of the arguments and the seed.
        classes: shape names to use.

    Returns:
        (csv_path, records) where records is a list of dicts with ``path`` (absolute),
        ``boxes`` (K, 4) and ``labels`` (K,), in CSV order.
    """
    height, width = (image_size, image_size) if np.isscalar(image_size) else image_size
    if max_size is None:
        max_size = min(height, width) // 2
    unknown = set(classes) - set(SHAPE_CLASSES)
    if unknown:
        raise ValueError(f"unknown shape classes {sorted(unknown)}; known: {SHAPE_CLASSES}")

    rng = np.random.default_rng(seed)

    def samples():
        for _ in range(num_images):
            empty = rng.random() < empty_fraction
            count = 0 if empty else int(rng.integers(min_objects, max_objects + 1))
            yield make_image(rng, height, width, count, min_size, max_size, classes)

    return write_images(out_dir, split, samples(), classes)


def write_images(out_dir, split, samples, classes):
    """Write ``out_dir/images/<split>_*.png`` and ``out_dir/<split>.csv`` from generated samples.

    Args:
        out_dir: dataset folder (created if missing).
        split: name of the split, used for the CSV and the image names.
        samples: iterable of ``(image, boxes, labels)``: (H, W, 3) uint8 BGR, (K, 4) absolute
            x1, y1, x2, y2, (K,) indices into ``classes``.
        classes: class names by label.

    Returns:
        (csv_path, records) where records is a list of dicts with ``path`` (absolute),
        ``boxes`` (K, 4) and ``labels`` (K,), in CSV order.
    """
    image_dir = os.path.join(out_dir, "images")
    os.makedirs(image_dir, exist_ok=True)
    csv_path = os.path.join(out_dir, f"{split}.csv")
    records = []
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        for i, (image, boxes, labels) in enumerate(samples):
            relative = f"images/{split}_{i:05d}.png"
            path = os.path.join(out_dir, relative)
            if not cv2.imwrite(path, image):
                raise OSError(f"could not write image {path}")
            if len(boxes) == 0:
                writer.writerow([relative, "", "", "", "", ""])
            for box, label in zip(boxes, labels):
                writer.writerow([relative, *[int(v) for v in box], classes[label]])
            records.append({"path": os.path.abspath(path), "boxes": boxes, "labels": labels})
    return csv_path, records


def make_dataset(out_dir, splits=None, seed=0, classes=SHAPE_CLASSES, **kwargs):
    """Write ``classes.csv`` and one CSV per split; different splits never share images.

    Args:
        out_dir: dataset folder.
        splits: {split name: number of images}, default {"train": 32, "val": 8}.
        seed: base seed; split ``i`` uses ``seed + 1000 * i``.
        classes: shape names.
        **kwargs: passed to ``write_split`` (image_size, min_size, ...).

    Returns:
        dict with ``classes`` (path of classes.csv) and one CSV path per split.
    """
    splits = {"train": 32, "val": 8} if splits is None else splits
    os.makedirs(out_dir, exist_ok=True)
    result = {"classes": write_classes(os.path.join(out_dir, "classes.csv"), classes)}
    for i, (split, count) in enumerate(splits.items()):
        result[split], _ = write_split(
            out_dir, split, count, seed=seed + 1000 * i, classes=classes, **kwargs
        )
    return result


def parse_args(args):
    parser = argparse.ArgumentParser(
        description="Write a synthetic shapes detection dataset (annotations CSV + classes CSV)."
    )
    parser.add_argument("out_dir", help="output folder")
    parser.add_argument("--train", type=int, default=64, help="number of training images")
    parser.add_argument("--val", type=int, default=16, help="number of validation images (0: none)")
    parser.add_argument("--size", type=int, nargs="+", default=[256], help="side, or height width")
    parser.add_argument("--min-objects", type=int, default=1)
    parser.add_argument("--max-objects", type=int, default=3)
    parser.add_argument("--min-box", type=int, default=24, help="smallest box side in pixels")
    parser.add_argument("--max-box", type=int, default=None, help="largest box side in pixels")
    parser.add_argument("--empty-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parsed = parser.parse_args(args)
    if len(parsed.size) not in (1, 2) or min(parsed.size) < 16:
        parser.error(f"--size takes one or two values >= 16, got {parsed.size}")
    if not 0 <= parsed.min_objects <= parsed.max_objects:
        parser.error("--min-objects must be >= 0 and <= --max-objects")
    return parsed


def main(args=None):
    args = parse_args(sys.argv[1:] if args is None else args)
    splits = {"train": args.train}
    if args.val:
        splits["val"] = args.val
    size = args.size[0] if len(args.size) == 1 else tuple(args.size)
    result = make_dataset(
        args.out_dir,
        splits,
        seed=args.seed,
        image_size=size,
        min_objects=args.min_objects,
        max_objects=args.max_objects,
        min_size=args.min_box,
        max_size=args.max_box,
        empty_fraction=args.empty_fraction,
    )
    for key, path in result.items():
        print(f"{key}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
