"""Hard synthetic detection scenes: textured clutter, many small objects, occlusion, wide scales.

The flat shapes of ``utils.synthetic`` are solved in minutes and no longer tell whether a
training change helps on real images. These scenes have what real photographs and aerial
tiles have and the flat shapes lack:

- backgrounds with natural-image statistics: colour noise whose amplitude falls as 1/f
  (the spectrum of natural images), an illumination gradient, and clutter -- blobs and
  strokes of the same colours as the objects, which are not objects;
- objects told apart by shape only (their colours come from the same palette), textured,
  shaded, anti-aliased, at low to moderate contrast, with box sides log-uniform over a wide
  range (most of them small);
- occlusion (an object may cover part of an earlier one; its box is still the full extent),
  camera blur and sensor noise.

Four kinds, so a recipe is not tuned to one:

``clutter``
    five shape classes (ellipse, rectangle, triangle, cross, ring) scattered over
    textured clutter, 16-96 px on 320 px images by default.
``crowns``
    one class, tree crowns seen from above: irregular round textured blobs with
    shadows, densely packed and touching, on textured ground with paths and small bushes
    (not annotated), 14-76 px on 400 px tiles by default -- like aerial tree-crown data.
``canopy``
    harder tree crowns: dense canopy where crowns touch and overlap, at low contrast with
    the vegetation around them, among many unannotated bushes of the same look; 16-76 px
    on 400 px tiles. Each tile comes from a *site* (its greens, ground, light direction,
    crown density); ``make_dataset`` draws each split from sites of its own, so the
    held-out split is other sites, as in real aerial data.
``shapes``
    three classes (ellipse, rectangle, triangle) of saturated colours over strong
    textured noise, 20-100 px on 256 px images: large, contrasted objects.

Boxes are absolute pixel corners ``x1, y1, x2, y2`` (x2, y2 exclusive), the full extent of
the object's drawn pixels (alpha > 0.5). The files are those of ``utils.synthetic``
(``classes.csv``, ``<split>.csv``, ``images/<split>_*.png``), read by ``CSVGenerator``.

Command line::

    python -m keras_retinanet.utils.scenes OUT --kind clutter --train 400 --val 100
    python -m keras_retinanet.utils.scenes OUT --kind crowns --train 60 --val 20
"""
import argparse
import os
import sys

import cv2
import numpy as np

from .synthetic import write_classes, write_images

CLUTTER_CLASSES = ("ellipse", "rectangle", "triangle", "cross", "ring")
CROWN_CLASSES = ("tree",)
SHAPE_CLASSES = ("ellipse", "rectangle", "triangle")
KINDS = {
    # classes, default image side, box side range, objects per image
    "clutter": {"classes": CLUTTER_CLASSES, "size": 320, "box": (16, 96), "objects": (4, 14)},
    "crowns": {"classes": CROWN_CLASSES, "size": 400, "box": (14, 76), "objects": (10, 30)},
    "canopy": {"classes": CROWN_CLASSES, "size": 400, "box": (16, 76), "objects": (25, 50)},
    "shapes": {"classes": SHAPE_CLASSES, "size": 256, "box": (20, 100), "objects": (2, 6)},
}
TREE_KINDS = ("crowns", "canopy")
SITES_PER_SPLIT = 3  # canopy: split i is drawn from sites 3i .. 3i + 2
_SUPERSAMPLE = 4  # masks are drawn at 4x and averaged down: anti-aliased edges
_PLACEMENT_TRIES = 30


def pink_noise(rng, height, width, channels=3, exponent=1.0):
    """Noise with a 1/f**exponent amplitude spectrum, zero mean and unit std per channel.

    Returns:
        (height, width, channels) float32.
    """
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    frequency = np.sqrt(fx**2 + fy**2)
    frequency[0, 0] = 1.0 / max(height, width)
    shape = (channels, height, width // 2 + 1)
    spectrum = (rng.normal(size=shape) + 1j * rng.normal(size=shape)) / frequency**exponent
    field = np.fft.irfft2(spectrum, s=(height, width), axes=(1, 2))
    field -= field.mean(axis=(1, 2), keepdims=True)
    field /= field.std(axis=(1, 2), keepdims=True) + 1e-12
    return np.moveaxis(field, 0, -1).astype(np.float32)


def _log_uniform(rng, low, high):
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def _site(kind, site):
    """A canopy site's look: {tint (BGR gain), light (unit vector), density, contrast range}."""
    rng = np.random.default_rng(10_000 + (site or 0))
    return {
        "tint": np.array([rng.uniform(0.8, 1.1), rng.uniform(0.9, 1.15), rng.uniform(0.75, 1.25)], np.float32),
        "light": (lambda a: np.array([np.cos(a), np.sin(a)]))(rng.uniform(0, 2 * np.pi)),
        "density": rng.uniform(0.7, 1.0),
        "contrast": (rng.uniform(8, 14), rng.uniform(30, 45)),
    }


def _palette(rng, kind, site=None):
    """Colours (BGR floats) shared by objects and clutter."""
    if kind == "canopy":
        hues = rng.uniform(0, 1, (8, 1))
        dark = np.array([35, 65, 40], np.float32)
        light = np.array([80, 125, 100], np.float32)
        return (dark + hues * (light - dark) + rng.normal(0, 6, (8, 3))) * _site(kind, site)["tint"]
    if kind == "shapes":
        return rng.uniform(0, 255, (8, 3)).astype(np.float32)
    if kind == "crowns":
        # greens and olive browns, from dark canopy to light ground
        hues = rng.uniform(0, 1, (8, 1))
        dark = np.array([40, 70, 45], np.float32)
        light = np.array([120, 160, 150], np.float32)
        return dark + hues * (light - dark) + rng.normal(0, 10, (8, 3))
    return rng.uniform(30, 225, (8, 3)).astype(np.float32)


def _mask(kind, size_x, size_y, rng):
    """An anti-aliased mask of one shape, (size_y, size_x) float32 in [0, 1]."""
    s = _SUPERSAMPLE
    w, h = size_x * s, size_y * s
    canvas = np.zeros((h, w), np.uint8)
    if kind in ("ellipse", "ring"):
        cv2.ellipse(canvas, (w // 2, h // 2), (w // 2 - 1, h // 2 - 1), 0, 0, 360, 255, -1)
        if kind == "ring":
            inner = rng.uniform(0.35, 0.6)
            cv2.ellipse(canvas, (w // 2, h // 2), (int(w * inner / 2), int(h * inner / 2)), 0, 0, 360, 0, -1)
    elif kind == "rectangle":
        canvas[:] = 255
    elif kind == "triangle":
        apex = int(rng.uniform(0, w - 1))
        points = np.array([[apex, 0], [0, h - 1], [w - 1, h - 1]], np.int32)
        cv2.fillPoly(canvas, [points], 255)
    elif kind == "cross":
        bar = rng.uniform(0.25, 0.4)
        cv2.rectangle(canvas, (0, int(h * (0.5 - bar / 2))), (w - 1, int(h * (0.5 + bar / 2))), 255, -1)
        cv2.rectangle(canvas, (int(w * (0.5 - bar / 2)), 0), (int(w * (0.5 + bar / 2)), h - 1), 255, -1)
    elif kind in ("tree", "blob"):
        # star-convex outline with a smoothly perturbed radius
        angles = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        phases = rng.uniform(0, 2 * np.pi, 3)
        radius = 1 + sum(rng.uniform(0.03, 0.09) * np.cos(k * angles + p) for k, p in zip((3, 5, 7), phases))
        radius = radius / radius.max()
        x = w / 2 + (w / 2 - 1) * radius * np.cos(angles)
        y = h / 2 + (h / 2 - 1) * radius * np.sin(angles)
        cv2.fillPoly(canvas, [np.stack([x, y], 1).astype(np.int32)], 255)
    else:
        raise ValueError(f"unknown shape {kind!r}")
    return cv2.resize(canvas, (size_x, size_y), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def _paste(image, mask, x1, y1, colour, rng, texture=0.25, shading=0.3):
    """Blend a textured, shaded fill of ``colour`` into ``image`` through ``mask`` (in place)."""
    h, w = mask.shape
    fill = colour[None, None, :] * (1 + texture * pink_noise(rng, h, w, 1, exponent=0.8))
    ramp = np.linspace(-1, 1, w)[None, :, None] * np.cos(rng.uniform(0, np.pi))
    ramp = ramp + np.linspace(-1, 1, h)[:, None, None] * np.sin(rng.uniform(0, np.pi))
    fill = fill * (1 + shading * 0.5 * ramp)
    region = image[y1 : y1 + h, x1 : x1 + w]
    alpha = mask[:, :, None]
    region[:] = alpha * fill + (1 - alpha) * region


def _background(rng, kind, height, width, palette):
    base = palette[rng.integers(len(palette))]
    # mostly brightness, a little colour: the channels of natural images are strongly correlated
    chroma = 0.2 if kind in TREE_KINDS else 0.35
    texture = pink_noise(rng, height, width, 1) + chroma * pink_noise(rng, height, width, 3)
    amplitude = rng.uniform(35, 60) if kind == "shapes" else rng.uniform(18, 40)
    if kind == "shapes":  # noise with fine grain as well as large blotches
        texture = texture + 0.6 * rng.normal(size=(height, width, 1))
    image = base[None, None, :] + amplitude * texture
    gradient = np.linspace(-1, 1, width)[None, :, None] * rng.uniform(-25, 25)
    image = image + gradient + np.linspace(-1, 1, height)[:, None, None] * rng.uniform(-25, 25)
    image = np.ascontiguousarray(image, np.float32)
    if kind in TREE_KINDS:
        for _ in range(int(rng.integers(0, 3))):  # paths across the tile
            points = rng.uniform(0, 1, (2, 2)) * (width, height)
            colour = tuple(float(v) for v in palette[rng.integers(len(palette))] + 40)
            start, end = (tuple(int(v) for v in p) for p in points)
            cv2.line(image, start, end, colour, int(rng.integers(3, 9)), cv2.LINE_AA)
    return image


def _clutter(rng, kind, image, palette, count, box_range):
    """Things that are not objects: blobs and strokes in the objects' colours, and small bushes."""
    height, width = image.shape[:2]
    for _ in range(count):
        colour = palette[rng.integers(len(palette))]
        if rng.random() < (0.9 if kind == "canopy" else 0.5):  # canopy: mostly bushes, few strokes
            side_range = {"crowns": (4, 10), "canopy": (5, 14)}.get(kind, (box_range[0] / 2, box_range[1]))
            sx = max(3, int(_log_uniform(rng, *side_range)))
            sy = max(3, int(sx * rng.uniform(0.5, 2.0)))
            if sx >= width or sy >= height:
                continue
            x1, y1 = int(rng.integers(0, width - sx)), int(rng.integers(0, height - sy))
            _paste(image, _mask("blob", sx, sy, rng), x1, y1, colour, rng)
        else:
            points = (rng.uniform(0, 1, (int(rng.integers(2, 5)), 2)) * (width, height)).astype(np.int32)
            cv2.polylines(image, [points], False, tuple(float(v) for v in colour), int(rng.integers(1, 4)), cv2.LINE_AA)


def _too_covered(box, boxes, limit):
    """True when ``box`` would cover more than ``limit`` of an earlier box's area."""
    if not boxes:
        return False
    others = np.asarray(boxes, np.float64)
    iw = np.clip(np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]), 0, None)
    ih = np.clip(np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]), 0, None)
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    own = (box[2] - box[0]) * (box[3] - box[1])
    return bool(np.any(iw * ih > limit * np.minimum(areas, own)))


def make_scene(rng, kind="clutter", height=None, width=None, min_box=None, max_box=None, num_objects=None, site=None):
    """One hard scene and its boxes.

    Args:
        rng: ``numpy.random.Generator``.
        kind: one of ``KINDS`` (see the module docstring).
        height, width: image size (default: the kind's).
        min_box, max_box: box side range in pixels (default: the kind's); sides are
            log-uniform in it, so most objects are small.
        num_objects: objects to try to place (default: uniform in the kind's range).
        site: canopy only, the site the tile comes from (an int; default 0).

    Returns:
        image: (height, width, 3) uint8 BGR.
        boxes: (K, 4) int64 absolute x1, y1, x2, y2 (x2, y2 exclusive).
        labels: (K,) int64 indices into the kind's classes.
    """
    settings = KINDS[kind]
    classes = settings["classes"]
    height = height or settings["size"]
    width = width or settings["size"]
    low, high = settings["box"]
    min_box, max_box = min_box or low, min(max_box or high, height - 2, width - 2)
    if num_objects is None:
        num_objects = int(rng.integers(settings["objects"][0], settings["objects"][1] + 1))
    looks = _site(kind, site) if kind == "canopy" else None
    if looks is not None:
        num_objects = int(round(num_objects * looks["density"]))
    palette = _palette(rng, kind, site)
    image = _background(rng, kind, height, width, palette)
    clutter = {"canopy": (30, 70), "shapes": (0, 1)}.get(kind, (4, 12))
    _clutter(rng, kind, image, palette, int(rng.integers(*clutter)), (min_box, max_box))

    boxes, labels = [], []
    # crowns touch and overlap a little (canopy more); other objects may hide up to half of another
    cover_limit = {"crowns": 0.2, "canopy": 0.35}.get(kind, 0.5)
    for _ in range(num_objects):
        label = int(rng.integers(len(classes)))
        for _ in range(_PLACEMENT_TRIES):
            sx = int(round(_log_uniform(rng, min_box, max_box + 1)))
            aspect = rng.uniform(0.8, 1.25) if kind in TREE_KINDS else np.exp(rng.uniform(-0.6, 0.6))
            sy = int(np.clip(round(sx * aspect), min_box, max_box))
            if sx > width - 2 or sy > height - 2:
                continue
            x1, y1 = int(rng.integers(1, width - sx)), int(rng.integers(1, height - sy))
            if not _too_covered((x1, y1, x1 + sx, y1 + sy), boxes, cover_limit):
                break
        else:
            continue
        mask = _mask(classes[label], sx, sy, rng)
        if kind in TREE_KINDS:  # a shadow to one side, under the crown
            direction = looks["light"] if looks is not None else np.array([1.0, 1.0])
            shift = np.round(direction * max(1, sx // 6)).astype(int)
            xs, ys = int(np.clip(x1 + shift[0], 0, width - sx)), int(np.clip(y1 + shift[1], 0, height - sy))
            region = image[ys : ys + sy, xs : xs + sx]
            region *= 1 - (0.3 if kind == "canopy" else 0.45) * mask[:, :, None]
        background = image[y1 : y1 + sy, x1 : x1 + sx].reshape(-1, 3).mean(0)
        colour = _object_colour(rng, palette, background, kind, looks)
        _paste(image, mask, x1, y1, colour, rng, texture=0.35 if kind in TREE_KINDS else 0.2)
        rows, cols = np.nonzero(mask > 0.5)
        if len(rows) == 0:
            continue
        boxes.append((x1 + cols.min(), y1 + rows.min(), x1 + cols.max() + 1, y1 + rows.max() + 1))
        labels.append(label)

    sigma = rng.uniform(0.4, 1.1)
    image = cv2.GaussianBlur(image, (0, 0), sigma)
    image = image + rng.normal(0, rng.uniform(2, 6), image.shape)
    return (
        np.clip(image, 0, 255).astype(np.uint8),
        np.asarray(boxes, np.int64).reshape(-1, 4),
        np.asarray(labels, np.int64),
    )


def _object_colour(rng, palette, background, kind, looks=None):
    """A palette colour at a low to moderate contrast with the local background."""
    contrast = rng.uniform(*(looks["contrast"] if looks else (60, 150) if kind == "shapes" else (25, 90)))
    if kind in TREE_KINDS:  # canopies: greens, mostly darker than the ground
        palette = palette * np.array([0.7, 0.9, 0.6], np.float32)
    for _ in range(20):
        colour = palette[rng.integers(len(palette))] + rng.normal(0, 12, 3)
        if np.linalg.norm(colour - background) >= contrast:
            return colour.astype(np.float32)
    direction = rng.normal(0, 1, 3)
    if kind in TREE_KINDS:
        direction = -np.abs(direction)  # canopies darker than the ground
    return (background + contrast * direction / np.linalg.norm(direction)).astype(np.float32)


def make_dataset(out_dir, kind="clutter", splits=None, seed=0, image_size=None, **kwargs):
    """Write ``classes.csv`` and one CSV per split of scenes of ``kind``.

    Args:
        out_dir: dataset folder.
        kind: one of ``KINDS``.
        splits: {split name: number of images}, default {"train": 64, "val": 16}.
        seed: base seed; split ``i`` uses ``seed + 1000 * i``: splits never share images.
            Canopy tiles of split ``i`` come from sites ``3i .. 3i + 2`` (in turn): the
            held-out splits are other sites than the training split.
        image_size: side of the square images (default: the kind's).
        **kwargs: passed to ``make_scene`` (min_box, max_box, num_objects).

    Returns:
        dict with ``classes`` (path of classes.csv) and one CSV path per split.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown scene kind {kind!r}; expected one of {sorted(KINDS)}")
    classes = KINDS[kind]["classes"]
    splits = {"train": 64, "val": 16} if splits is None else splits
    os.makedirs(out_dir, exist_ok=True)
    result = {"classes": write_classes(os.path.join(out_dir, "classes.csv"), classes)}
    for i, (split, count) in enumerate(splits.items()):
        rng = np.random.default_rng(seed + 1000 * i)
        sites = [None] * count
        if kind == "canopy":
            sites = [SITES_PER_SPLIT * i + n % SITES_PER_SPLIT for n in range(count)]
        samples = (make_scene(rng, kind, image_size, image_size, site=site, **kwargs) for site in sites)
        result[split], _ = write_images(out_dir, split, samples, classes)
    return result


def parse_args(args):
    parser = argparse.ArgumentParser(description="Write a hard synthetic detection dataset (annotations CSV + classes CSV).")
    parser.add_argument("out_dir", help="output folder")
    parser.add_argument("--kind", choices=sorted(KINDS), default="clutter")
    parser.add_argument("--train", type=int, default=64, help="number of training images")
    parser.add_argument("--val", type=int, default=16, help="number of validation images (0: none)")
    parser.add_argument("--size", type=int, default=None, help="image side (default: 320 clutter, 400 crowns and canopy, 256 shapes)")
    parser.add_argument("--min-box", type=int, default=None, help="smallest box side in pixels")
    parser.add_argument("--max-box", type=int, default=None, help="largest box side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parsed = parser.parse_args(args)
    if parsed.size is not None and parsed.size < 64:
        parser.error(f"--size must be at least 64, got {parsed.size}")
    return parsed


def main(args=None):
    args = parse_args(sys.argv[1:] if args is None else args)
    splits = {"train": args.train}
    if args.val:
        splits["val"] = args.val
    result = make_dataset(
        args.out_dir, args.kind, splits, seed=args.seed, image_size=args.size, min_box=args.min_box, max_box=args.max_box
    )
    for key, path in result.items():
        print(f"{key}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
