"""retinanet-predict: run a RetinaNet model on images (or a video) and write its detections.

    retinanet-predict model.keras photos/
    retinanet-predict snapshots/resnet50_csv_10.keras 'data/*.jpg' --score-threshold 0.3
    retinanet-predict exported/retinanet scene.jpg --output-dir out/        # SavedModel
    retinanet-predict model.keras big_aerial.tif --tile 1024 --tile-overlap 128
    retinanet-predict model.onnx traffic.mp4

MODEL is a training snapshot (converted on the fly), an inference model (.keras), or a
model exported by retinanet-convert-model (SavedModel directory, .tflite, .onnx). Its
detector spec gives the backbone's preprocessing, the image sizes and the class names:
images are resized like in training and the boxes scaled back to the original image. Writes,
in --output-dir: one annotated PNG per image (an annotated .mp4 per video),
detections.csv (annotations.csv format: path,x1,y1,x2,y2,class_name, and path,,,,, for
an image without detections, so predictions can be reused as annotations), and
detections.json (COCO results) with images.json (id, file_name, width, height of each image).

The next images (or video frames, or tiles) are read, decoded and resized in --workers threads
while the model runs in another, on batches of up to --batch-size images of one resized size,
and this thread writes the outputs; the detections and their order are those of --workers 0.
"""
import csv
import glob
import json
import os
import sys

from keras_retinanet import constants
from keras_retinanet.bin import (
    LOGGER,
    RECIPE_FLAGS,
    ToolError,
    first_line,
    import_tensorflow,
    log_threads,
    new_parser,
    print_notes,
    set_verbosity,
    tool_main,
)
from keras_retinanet.errors import OutputError
from keras_retinanet.utils.image import IMAGE_EXTENSIONS  # noqa: F401 (also a public name here)

PROG = "retinanet-predict"
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
DEFAULT_OUTPUT_DIR = "predictions"
DEFAULT_IMAGE_MIN_SIDE = constants.DEFAULT_IMAGE_MIN_SIDE
DEFAULT_IMAGE_MAX_SIDE = constants.DEFAULT_IMAGE_MAX_SIDE
VIDEO_CODEC = "mp4v"
DEFAULT_FPS = 25.0
DEFAULT_WORKERS = 2
EXAMPLES = """
retinanet-predict snapshots/resnet50_csv_10.keras photos/ --output-dir predictions
retinanet-predict model.keras 'data/*.jpg' --score-threshold 0.3 --csv detections.csv
retinanet-predict model.onnx traffic.mp4 --no-images --json detections.json
retinanet-predict model.keras big_aerial.tif --tile 1024 --tile-overlap 128
"""
RECIPE_NOTE = """the model's detector spec gives its backbone, image sizes and class names: --backbone,
--config and --classes are only for older models (and must agree with the spec);
--image-min-side / --image-max-side run at other sizes (a note says so)."""


def parse_args(args):
    """Parse the command line (a list of strings)."""
    parser = new_parser(
        PROG,
        "Run a RetinaNet model on images, folders, globs or a video; write annotated "
        "images and the detections as CSV (annotations format) and JSON (COCO results).",
        EXAMPLES,
        RECIPE_NOTE,
    )
    parser.add_argument("model", help="training snapshot or inference model (.keras), SavedModel directory, "
                                      ".tflite or .onnx (from retinanet-convert-model)")
    parser.add_argument("images", nargs="+", help="image files, folders (their images), globs ('data/*.jpg'), "
                                                  "or a video file OpenCV can read")
    parser.add_argument("--backbone", help="backbone of a .keras model without a detector spec (default resnet50)")
    parser.add_argument("--config", help="config .ini with anchor parameters / pyramid levels of a training "
                                         "snapshot without a detector spec")
    parser.add_argument("--classes", help="classes CSV (class_name,id) for a model without class names in its "
                                          "spec (default: the spec's names, else label ids)")
    parser.add_argument("--score-threshold", type=float, default=0.5,
                        help="keep detections scoring higher (default 0.5)")
    parser.add_argument("--max-detections", type=int, default=100,
                        help="detections per image, best first (default 100)")
    parser.add_argument("--batch-size", type=int, default=1,
                        help="images of the same (resized) size per model call (default 1)")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                        help="threads reading, decoding and resizing the next images (or tiles, video frames) "
                             "while the model runs in another thread and the outputs are written in this one "
                             f"(default {DEFAULT_WORKERS}; 0: one step after the other in one thread); the "
                             "detections are the same")
    parser.add_argument("--image-min-side", type=int, default=None,
                        help="resize so the smallest side is this long (default: the model's, else "
                             f"{DEFAULT_IMAGE_MIN_SIDE}; the tile size with --tile); exported models resize "
                             "as they were exported")
    parser.add_argument("--image-max-side", type=int, default=None,
                        help="... unless the largest side then exceeds this (default: the model's, else "
                             f"{DEFAULT_IMAGE_MAX_SIDE}; the tile size with --tile)")
    parser.add_argument("--no-resize", action="store_true", default=None,
                        help="run .keras models on images at their size")
    parser.add_argument("--tile", type=int, metavar="SIZE",
                        help="cut each image into SIZE x SIZE tiles, detect in each (at native resolution by "
                             "default) and merge with NMS: for images much larger than the objects")
    parser.add_argument("--tile-overlap", type=int, default=None, metavar="PIXELS",
                        help="overlap of neighbouring tiles; make it >= the object size (default SIZE / 8)")
    parser.add_argument("--tile-nms-threshold", type=float, default=0.5,
                        help="IoU above which detections from different tiles are merged (default 0.5)")
    parser.add_argument("--output-dir", default=DEFAULT_OUTPUT_DIR,
                        help=f"folder for annotated images, detections.csv and detections.json "
                             f"(default ./{DEFAULT_OUTPUT_DIR})")
    parser.add_argument("--no-images", dest="draw", action="store_false", help="do not write annotated images")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace outputs that exist already (an input image is never written over)")
    parser.add_argument("--csv", help="detections CSV path (default OUTPUT_DIR/detections.csv)")
    parser.add_argument("--json", help="COCO results JSON path (default OUTPUT_DIR/detections.json)")
    parser.add_argument("--gpu", help="id of the GPU to use (sets CUDA_VISIBLE_DEVICES)")
    parsed = parser.parse_args(args)
    if parsed.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {parsed.batch_size}")
    if parsed.workers < 0:
        parser.error(f"--workers must be >= 0, got {parsed.workers}")
    if parsed.max_detections < 1:
        parser.error(f"--max-detections must be >= 1, got {parsed.max_detections}")
    if parsed.tile is not None:
        if parsed.tile < 32:
            parser.error(f"--tile must be >= 32, got {parsed.tile}")
        if parsed.tile_overlap is None:
            parsed.tile_overlap = parsed.tile // 8
        if not 0 <= parsed.tile_overlap < parsed.tile:
            parser.error(f"--tile-overlap must be in [0, {parsed.tile}), got {parsed.tile_overlap}")
    from keras_retinanet.export import SUFFIX_FORMATS

    keras_model = SUFFIX_FORMATS.get(os.path.splitext(os.path.normpath(parsed.model))[1].lower()) == "keras"
    # tiles of a Keras model run at native resolution unless told otherwise (exported graphs resize inside)
    if parsed.tile is not None and not parsed.no_resize and keras_model:
        if parsed.image_min_side is None:
            parsed.image_min_side = parsed.tile
        if parsed.image_max_side is None:
            parsed.image_max_side = max(parsed.tile, parsed.image_min_side)
    for flag in ("image_min_side", "image_max_side"):
        if getattr(parsed, flag) is not None and getattr(parsed, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be > 0, got {getattr(parsed, flag)}")
    if None not in (parsed.image_min_side, parsed.image_max_side) and parsed.image_min_side > parsed.image_max_side:
        parser.error("--image-min-side must be <= --image-max-side")
    parsed.csv = parsed.csv or os.path.join(parsed.output_dir, "detections.csv")
    parsed.json = parsed.json or os.path.join(parsed.output_dir, "detections.json")
    return parsed


# ------------------------------------------------------------------------ inputs


def _has_extension(path, extensions):
    return os.path.splitext(path)[1].lower() in extensions


def collect_inputs(arguments):
    """Expand image arguments into ([image paths], [video paths]), in order.

    Raises:
        ToolError: a path that does not exist, a glob that matches nothing, a folder
            without images.
    """
    images, videos = [], []
    for argument in arguments:
        if os.path.isdir(argument):
            found = sorted(
                os.path.join(argument, name)
                for name in os.listdir(argument)
                if _has_extension(name, IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(argument, name))
            )
            if not found:
                raise ToolError(f"no images in folder {argument} (looked for {', '.join(IMAGE_EXTENSIONS)})")
            images += found
        elif os.path.isfile(argument):
            (videos if _has_extension(argument, VIDEO_EXTENSIONS) else images).append(argument)
        elif glob.has_magic(argument):
            found = sorted(p for p in glob.glob(argument, recursive=True) if os.path.isfile(p))
            if not found:
                raise ToolError(f"no file matches {argument}")
            videos += [p for p in found if _has_extension(p, VIDEO_EXTENSIONS)]
            images += [p for p in found if not _has_extension(p, VIDEO_EXTENSIONS)]
        else:
            raise ToolError(f"image not found: {argument}")
    return images, videos


def check_images(images, videos):
    """Raise ToolError naming the first file that is not a readable image or video.

    Images are checked from their headers (fast); videos by opening them with OpenCV.
    """
    import cv2

    from keras_retinanet.utils.image import read_image_size

    for path in images:
        try:
            read_image_size(path)
        except OSError:
            raise ToolError(f"could not read image {path}: not an image file, or corrupt") from None
    for path in videos:
        capture = cv2.VideoCapture(path)
        opened = capture.isOpened()
        capture.release()
        if not opened:
            raise ToolError(f"could not read video {path}: OpenCV cannot decode it")


def read_classes(path):
    """{label: name} from a classes CSV; ToolError naming the file and line if invalid."""
    from keras_retinanet.preprocessing.csv_format import read_classes_file

    if os.path.isdir(path):
        raise ToolError(f"invalid classes file: {path} is a folder, not a CSV file")
    if not os.path.isfile(path):
        raise ToolError(f"classes file not found: {path}")
    try:
        classes = read_classes_file(path)
    except (ValueError, csv.Error) as error:
        raise ToolError(f"invalid classes file: {path}: {error}") from None
    if not classes:
        raise ToolError(f"invalid classes file: {path}: no classes")
    return {label: name for name, label in classes.items()}


def _image_ids(images):
    """COCO image ids: the file names' numbers when they all are distinct integers, else 0, 1, ..."""
    stems = [os.path.splitext(os.path.basename(path))[0] for path in images]
    if stems and all(stem.isdigit() for stem in stems) and len({int(s) for s in stems}) == len(stems):
        return [int(stem) for stem in stems]
    return list(range(len(images)))


# ------------------------------------------------------------------------ outputs


def plan_outputs(args, images, videos):
    """Check every output before any work: (``OutputPlan``, annotated path of each image, of each video).

    Annotated outputs are ``<stem>.png`` per image and ``<stem>_detections.mp4`` per video
    in --output-dir (``<stem>_1.png``, ... when names repeat). None is ever an input file;
    existing files are replaced only with --overwrite.

    Raises:
        OutputError: naming the first output that cannot be written.
    """
    from keras_retinanet.utils.files import OutputPlan

    others = [path for path in (args.model, args.classes, args.config) if path]
    plan = OutputPlan(inputs=list(images) + list(videos) + others, overwrite=args.overwrite)
    plan.check_folder(args.output_dir, "--output-dir")
    folders = {os.path.realpath(os.path.dirname(os.path.abspath(path))) for path in list(images) + list(videos)}
    if args.draw and os.path.realpath(os.path.abspath(args.output_dir)) in folders:
        raise OutputError(
            f"--output-dir {args.output_dir} is a folder of the input images: the annotated copies would mix with "
            "them; choose another folder"
        )
    used = set()

    def unique(path, suffix):
        stem = os.path.splitext(os.path.basename(path))[0]
        name, count = stem + suffix, 1
        while name in used:
            name, count = f"{stem}_{count}{suffix}", count + 1
        used.add(name)
        return os.path.join(args.output_dir, name)

    image_outputs = [unique(path, ".png") if args.draw else None for path in images]
    video_outputs = [unique(path, "_detections.mp4") if args.draw else None for path in videos]
    for out in image_outputs + video_outputs:
        if out is not None:
            plan.check(out, "annotated image")
    plan.check(args.csv, "detections CSV")
    plan.check(args.json, "detections JSON")
    plan.check(images_json_path(args), "images JSON")
    return plan, image_outputs, video_outputs


def images_json_path(args):
    return os.path.join(os.path.dirname(os.path.abspath(args.json)), "images.json")


def _imwrite(path, image):
    import cv2

    if not cv2.imwrite(path, image):
        raise OSError(f"OpenCV could not write {path}")


class Outputs:
    """Writes annotated images, the CSV rows and the COCO results as detections come in.

    Every file is written atomically through ``plan`` (``plan_outputs``); videos go to a
    temporary file renamed into place when they are complete.
    """

    def __init__(self, args, label_names, describe_classes=None, plan=None):
        from keras_retinanet.utils.files import OutputPlan

        self.args = args
        self.label_names = label_names
        self.describe_classes = describe_classes or args.classes
        self.plan = plan or OutputPlan(overwrite=True)
        self.csv_dir = os.path.dirname(os.path.abspath(args.csv))
        self.rows, self.results, self.images = [], [], []
        self.unknown_labels = set()
        self.num_detections = 0
        self.skipped = []  # (path, reason) of the images that could not be decoded
        self.writers = {}  # video path -> (cv2.VideoWriter, temporary path, final path)

    def label_to_name(self, label):
        if self.label_names is None:
            return str(label)
        if self.label_names.get(label) is None:
            self.unknown_labels.add(label)
            return str(label)
        return self.label_names[label]

    def _csv_path(self, path):
        try:
            return os.path.relpath(os.path.abspath(path), self.csv_dir)
        except ValueError:  # another drive (Windows)
            return os.path.abspath(path)

    def _draw(self, image, detections):
        from keras_retinanet.utils.visualization import draw_detections

        canvas = image.copy()
        draw_detections(
            canvas, detections.boxes, detections.scores, detections.labels,
            label_to_name=self.label_to_name, score_threshold=self.args.score_threshold,
        )  # fmt: skip
        return canvas

    def add(self, key, image, detections):
        """Record one image's (or video frame's) detections.

        key = (path, frame or None, image id, annotated output path or None).
        """
        from keras_retinanet.inference import coco_results, csv_rows

        path, frame, image_id, output = key
        name = self._csv_path(path) if frame is None else f"{self._csv_path(path)}#{frame}"
        self.rows += csv_rows(name, detections, self.label_to_name)
        self.results += coco_results(image_id, detections)
        self.images.append({"id": image_id, "file_name": name, "height": image.shape[0], "width": image.shape[1]})
        self.num_detections += len(detections)
        if output is None:
            return
        canvas = self._draw(image, detections)
        if frame is None:
            self.plan.write(output, lambda temporary: _imwrite(temporary, canvas), "annotated image")
            return
        self._video_writer(path, output, canvas.shape).write(canvas)

    def _video_writer(self, path, output, shape):
        import cv2

        from keras_retinanet.utils.files import temporary_path

        if path not in self.writers:
            capture = cv2.VideoCapture(path)
            fps = capture.get(cv2.CAP_PROP_FPS) or DEFAULT_FPS
            capture.release()
            temporary = temporary_path(output)
            os.makedirs(os.path.dirname(temporary), exist_ok=True)
            writer = cv2.VideoWriter(temporary, cv2.VideoWriter_fourcc(*VIDEO_CODEC), fps, (shape[1], shape[0]))
            if not writer.isOpened():
                raise OutputError(f"cannot write the annotated video {output}: OpenCV cannot open it for writing")
            self.writers[path] = (writer, temporary, output)
        return self.writers[path][0]

    def close(self, complete=True):
        """Finish the videos and write the CSV and JSON files (videos are kept only if ``complete``)."""
        for writer, temporary, output in self.writers.values():
            writer.release()
            if complete and os.path.exists(temporary):
                os.replace(temporary, output)
            elif os.path.exists(temporary):
                os.remove(temporary)
        with self.plan.open(self.args.csv, "w", "detections CSV", newline="", encoding="utf-8") as file:
            csv.writer(file).writerows(self.rows)
        with self.plan.open(self.args.json, "w", "detections JSON", encoding="utf-8") as file:
            json.dump(self.results, file)
        with self.plan.open(images_json_path(self.args), "w", "images JSON", encoding="utf-8") as file:
            json.dump(self.images, file, indent=1)
        if self.unknown_labels:
            LOGGER.warning(f"labels {sorted(self.unknown_labels)} are not in {self.describe_classes}; written as numbers")


def _video_frames(path, first_id, output=None):
    import cv2

    capture = cv2.VideoCapture(path)
    frame = 0
    try:
        while True:
            ok, image = capture.read()
            if not ok:
                break
            yield (path, frame, first_id + frame, output), image
            frame += 1
    finally:
        capture.release()


def _frame_count(path):
    import cv2

    capture = cv2.VideoCapture(path)
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    capture.release()
    return max(count, 0)


def _items(images, videos, image_outputs=None, video_outputs=None):
    """(key, image or path) pairs of every image, then every video frame (see ``Outputs.add`` for the key)."""
    ids = _image_ids(images)
    image_outputs = image_outputs or [None] * len(images)
    video_outputs = video_outputs or [None] * len(videos)
    yield from (((path, None, image_id, out), path) for path, image_id, out in zip(images, ids, image_outputs))
    next_id = max(ids, default=-1) + 1
    for path, out in zip(videos, video_outputs):
        for item in _video_frames(path, next_id, out):
            yield item
            next_id = item[0][2] + 1


def run(args, detector, images, videos, outputs, image_outputs=None, video_outputs=None):
    """Detect in every image and video frame, feeding ``outputs``; shows a progress bar.

    With ``args.workers`` > 0 the next images are read, decoded and resized in that many
    threads and the model runs in its own, while this thread writes the outputs; the results
    (and their order) are those of one thread doing one step after the other.
    """
    from tqdm import tqdm

    total = len(images) + sum(_frame_count(path) for path in videos)
    items = _items(images, videos, image_outputs, video_outputs)
    workers = getattr(args, "workers", 0)
    with tqdm(total=total, desc="Detecting", unit="image", file=sys.stderr, disable=None) as bar:
        if args.tile is None:
            stream = detector.predict_iter(items, workers=workers, on_error=_skipper(outputs.skipped))
        else:
            stream = (
                (key, image, detector.predict_tiled(
                    image, args.tile, args.tile_overlap, args.tile_nms_threshold, workers=workers
                ))  # fmt: skip
                for key, image in _loaded(items, outputs.skipped, workers)
            )
        for key, image, detections in stream:
            outputs.add(key, image, detections)
            bar.update(1)


def _skipper(skipped):
    """f(key, error) recording an image that cannot be decoded in ``skipped``, with a warning."""

    def skip(key, error):
        skipped.append((key[0], first_line(error)))
        LOGGER.warning(f"{first_line(error)}: skipped")

    return skip


def _read(item):
    """(key, decoded image, None) of an item, or (key, None, OSError) if it cannot be decoded."""
    from keras_retinanet.utils.image import read_image_bgr

    key, image = item
    if isinstance(image, str):
        try:
            image = read_image_bgr(image)
        except OSError as error:
            return key, None, error
    return key, image, None


def _loaded(items, skipped, workers=0):
    """(key, decoded image) of every item, read ahead by ``workers`` threads; an image that cannot be decoded is
    skipped, with a warning."""
    from keras_retinanet.utils.prefetch import ordered_map

    skip = _skipper(skipped)
    for _, (key, image, error) in ordered_map(_read, items, workers, name="retinanet-read"):
        if error is not None:
            skip(key, error)
            continue
        yield key, image


def load(args, class_names=None, many_images=False):
    """The Detector for --model; ToolError for a model that cannot be used or flags that contradict it.

    ``many_images``: several images or video frames to run through ``run`` with --workers
    (``inference.load_detector``'s: TensorFlow's threads set for throughput).
    """
    from keras_retinanet.errors import ModelLoadError, SpecConflictError, SpecError
    from keras_retinanet.inference import load_detector

    try:
        return load_detector(
            args.model,
            backbone=args.backbone,
            config=args.config,
            image_min_side=args.image_min_side,
            image_max_side=args.image_max_side,
            no_resize=args.no_resize,
            score_threshold=args.score_threshold,
            max_detections=args.max_detections,
            batch_size=args.batch_size,
            class_names=class_names,
            many_images=many_images,
            flag_names=dict(RECIPE_FLAGS, image_min_side="--image-min-side / --tile", image_max_side="--image-max-side / --tile")
            if args.tile is not None else RECIPE_FLAGS,
        )
    except (ModelLoadError, SpecConflictError, SpecError, ValueError) as error:  # ValueError: unknown backbone, ...
        raise ToolError(first_line(error)) from None


def label_names_of(detector, classes_from_file):
    """{label: name} for the outputs: the detector's (spec) names, filled in by --classes."""
    names = dict(classes_from_file or {})
    if detector.class_names is not None:
        names.update({label: name for label, name in enumerate(detector.class_names) if name is not None})
    return names or None


@tool_main(PROG)
def main(args=None):
    """Entry point of retinanet-predict; returns the exit status."""
    args = parse_args(sys.argv[1:] if args is None else args)
    set_verbosity(args)
    try:
        if not os.path.exists(args.model):
            raise ToolError(f"model not found: {args.model}")
        if args.config and not os.path.isfile(args.config):
            raise ToolError(f"config file not found: {args.config}")
        classes = read_classes(args.classes) if args.classes else None
        images, videos = collect_inputs(args.images)
        check_images(images, videos)
        try:
            plan, image_outputs, video_outputs = plan_outputs(args, images, videos)
        except OutputError as error:
            raise ToolError(str(error)) from None
        if args.gpu is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = str(args.gpu)
        import_tensorflow(args.verbose)
        from keras_retinanet.spec import class_names_from_mapping

        many = args.workers > 0 and args.tile is None and (len(images) > 1 or bool(videos))
        detector = load(args, class_names_from_mapping(classes) if classes else None, many_images=many)
        log_threads()
        print_notes(PROG, detector.notes)
        label_names = label_names_of(detector, classes)
        outputs = Outputs(args, label_names, args.classes or f"the class names of {args.model}", plan)
        complete = False
        try:
            run(args, detector, images, videos, outputs, image_outputs, video_outputs)
            complete = True
        except OutputError as error:
            raise ToolError(str(error)) from None
        except (OSError, ValueError) as error:  # a video frame, a model failing on an input
            raise ToolError(first_line(error)) from None
        finally:
            try:
                outputs.close(complete)
            except OutputError as error:
                raise ToolError(str(error)) from None
    except ToolError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    drawn = f"; annotated images in {args.output_dir}" if args.draw else ""
    skipped = f"; {len(outputs.skipped)} unreadable images skipped" if outputs.skipped else ""
    print(
        f"{len(outputs.images)} images, {outputs.num_detections} detections above {args.score_threshold:g}"
        f"{drawn}; detections in {args.csv} and {args.json}{skipped}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
