"""retinanet-debug: look at a dataset as training sees it: annotations, positive anchors, augmentation.

    retinanet-debug csv annotations.csv classes.csv                 # a window, or files without a display
    retinanet-debug --no-gui --output-dir debug/ csv train.csv classes.csv --random-transform
    retinanet-debug pascal /data/VOC2007 --train-set trainval --image-min-side 600
    retinanet-debug coco /data/coco --train-set val2017 --config anchors.ini
    retinanet-debug --model snapshots/resnet50_csv_10.keras csv train.csv classes.csv
    retinanet-debug --no-gui oid /data/open_images validation --labels-filter Helmet,Hat

With --model, the anchors, pyramid levels and image sizes come from the model's detector
spec (what it was trained with), and its classes are checked against the dataset's. Every image is resized (and, with --random-transform, augmented) like in training;
positive anchors are drawn in cyan, annotations in green when some anchor matches them
and in red when none does (training ignores those boxes: the usual cause of a mAP that
stays at 0). Prints a summary: images, boxes per class, box size range, boxes with no
matching anchor. In the window: any key or n / space for the next image, p or b for the
previous one, q or Esc to quit.
"""
import argparse
import os
import sys

from keras_retinanet import constants
from keras_retinanet.bin import (
    LOGGER,
    RECIPE_FLAGS,
    ToolError,
    add_output_options,
    first_line,
    import_tensorflow,
    new_parser,
    print_notes,
    set_verbosity,
    tool_main,
)
from keras_retinanet.preprocessing.datasets import add_dataset_subparsers

PROG = "retinanet-debug"
EXAMPLES = """
retinanet-debug --no-gui --output-dir debug_out csv train.csv classes.csv
retinanet-debug --model snapshots/resnet50_csv_10.keras --no-gui csv train.csv classes.csv
retinanet-debug --random-transform --seed 1 pascal /data/VOC2007 --train-set trainval
retinanet-debug --config anchors.ini coco /data/coco --train-set val2017
retinanet-debug --no-gui --display-name kitti /data/kitti val
"""

DEFAULT_OUTPUT_DIR = "debug"
DEFAULT_SETS = {"coco": "val2017", "pascal": "test"}  # fizyr's
DEFAULT_SUBSETS = {"kitti": "train", "oid": "train"}
DEBUG_SUFFIX = "_debug"  # fizyr's output names: <image name>_debug<extension>
WINDOW_NAME = "retinanet-debug"
QUIT_KEYS = (ord("q"), 27)  # q, Esc
PREVIOUS_KEYS = (ord("p"), ord("b"))


def _add_options(parser, suppress):
    """Options shared by every dataset type (also accepted after the dataset arguments)."""

    def default(value):
        return argparse.SUPPRESS if suppress else value

    parser.add_argument("--random-transform", action="store_true", default=default(False),
                        help="augment like retinanet-train --random-transform")
    parser.add_argument("--seed", type=int, default=default(None), help="seed of the random transforms")
    parser.add_argument("--check-images", action="store_true", default=default(False),
                        help="decode every image and list those that cannot be read (exit status 1 if any), "
                             "without drawing anything")
    parser.add_argument("--anchors", dest="draw_anchors", action=argparse.BooleanOptionalAction,
                        default=default(True),
                        help="draw the positive anchors (default on)")
    parser.add_argument("--annotations", "--show-annotations", dest="draw_annotations",
                        action=argparse.BooleanOptionalAction, default=default(True),
                        help="draw the annotations: green with a matching anchor, red without (default on; "
                             "--show-annotations is fizyr's name)")
    parser.add_argument("--display-name", action="store_true", default=default(False),
                        help="write the image's file name in its bottom left corner")
    parser.add_argument("--flatten-output", action="store_true", default=default(False),
                        help="accepted for compatibility: --no-gui always writes into --output-dir itself, "
                             "as <index>_<image name>.png")
    parser.add_argument("--group-method", choices=("none", "random", "ratio"), default=default("ratio"),
                        help="accepted for compatibility; images are shown in dataset order")
    parser.add_argument("--fit-anchors", metavar="CONFIG", default=default(None),
                        help="fit the anchor sizes to the dataset's boxes (as retinanet-train --fit-anchors), "
                             "write them to this config.ini and print the boxes without a positive anchor "
                             "before and after, without drawing anything")
    parser.add_argument("--model", default=default(None),
                        help="a model (any format): use the anchors, pyramid levels and image sizes of its "
                             "detector spec, and check its classes against the dataset's")
    parser.add_argument("--image-min-side", type=int, default=default(None),
                        help="resize so the smallest side is this long (default: the model's, else "
                             f"{constants.DEFAULT_IMAGE_MIN_SIDE})")
    parser.add_argument("--image-max-side", type=int, default=default(None),
                        help="... unless the largest side then exceeds this (default: the model's, else "
                             f"{constants.DEFAULT_IMAGE_MAX_SIDE})")
    parser.add_argument("--no-resize", action="store_true", default=default(None), help="do not resize images")
    parser.add_argument("--config", default=default(None),
                        help="config .ini with anchor parameters / pyramid levels (as used for training; "
                             "with --model, only for a model without a detector spec)")
    parser.add_argument("--no-gui", action="store_true", default=default(not os.environ.get("DISPLAY")),
                        help="write images to --output-dir instead of showing them (the default without a "
                             "display, i.e. when DISPLAY is not set)")
    parser.add_argument("--output-dir", default=default(DEFAULT_OUTPUT_DIR),
                        help=f"where --no-gui writes images (default ./{DEFAULT_OUTPUT_DIR})")
    parser.add_argument("--overwrite", action="store_true", default=default(False),
                        help="replace images in --output-dir that exist already (inputs are never written over)")
    if suppress:
        add_output_options(parser, suppress=True)


def parse_args(args):
    """Parse the command line (a list of strings)."""
    parser = new_parser(
        PROG,
        "Show a dataset as training sees it: annotations, positive anchors, augmentation; "
        "report boxes that no anchor matches.",
        EXAMPLES,
    )
    datasets = add_dataset_subparsers(parser)
    for dataset_type, default_set in DEFAULT_SETS.items():
        datasets[dataset_type].add_argument(
            f"--{dataset_type}-set", "--train-set", dest="set_name", default=default_set,
            help=f"set to show (default {default_set})",
        )
    for dataset_type, default_subset in DEFAULT_SUBSETS.items():  # fizyr's positional subset
        datasets[dataset_type].add_argument(
            "set_name", nargs="?", default=default_subset, metavar="subset",
            help=f"subset to show (default {default_subset})",
        )

    for sub_parser in datasets.values():
        _add_options(sub_parser, suppress=True)
    _add_options(parser, suppress=False)
    parsed = parser.parse_args(args)
    for flag in ("image_min_side", "image_max_side"):
        if getattr(parsed, flag) is not None and getattr(parsed, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be > 0, got {getattr(parsed, flag)}")
    if None not in (parsed.image_min_side, parsed.image_max_side) and parsed.image_min_side > parsed.image_max_side:
        parser.error("--image-min-side must be <= --image-max-side")
    return parsed


def check_inputs(args):
    """Raise ToolError if a file or folder named on the command line does not exist."""
    from keras_retinanet.preprocessing.datasets import dataset_inputs

    required = [(what, path, os.path.isdir if is_folder else os.path.isfile)
                for what, path, is_folder in dataset_inputs(args)]  # fmt: skip
    if args.config:
        required.append(("config file", args.config, os.path.isfile))
    if args.model:
        required.append(("model", args.model, os.path.exists))
    for what, path, exists in required:
        if not exists(path):
            raise ToolError(f"{what} not found: {path}")


def resolve_settings(args):
    """The anchors, levels and image sizes to inspect with: the flags, checked against --model's spec.

    Returns:
        (``spec.Recipe`` (its spec has anchors, pyramid_levels, image sizes), the model's
        ``DetectorSpec`` or None).
    """
    from keras_retinanet.errors import ModelLoadError, SpecConflictError, SpecError
    from keras_retinanet.inference import recipe_from_config
    from keras_retinanet.spec import RESIZE_FIELDS, Recipe, read_spec, resolve_recipe

    try:
        given = dict(
            recipe_from_config(args.config), image_min_side=args.image_min_side,
            image_max_side=args.image_max_side, no_resize=args.no_resize,
        )  # fmt: skip
        spec = read_spec(args.model) if args.model else None
        recipe = resolve_recipe(
            spec, given, needed=("anchors", "pyramid_levels") + RESIZE_FIELDS, source=args.model or "the dataset",
            flag_names=RECIPE_FLAGS,
        )  # fmt: skip
    except (ModelLoadError, SpecConflictError, SpecError, ValueError, OSError) as error:
        raise ToolError(first_line(error)) from None
    if not args.model:  # nothing was assumed about a model: the defaults are simply the tool's
        recipe = Recipe(recipe.spec)
    return recipe, spec


def _check_images(generator):
    """--check-images: decode every image, list those that fail; the exit status."""
    from tqdm import tqdm

    with tqdm(total=generator.size(), desc="Checking", unit="image", file=sys.stderr, disable=None) as bar:
        failures = generator.check_images(progress=lambda done: bar.update(done - bar.n))
    print(f"images: {generator.size()}, unreadable: {len(failures)}")
    for _, path, reason in failures:
        print(f"  {path}: {reason}")
    return 1 if failures else 0


def create_generator(args, settings=None):
    """The dataset's generator: images in order, augmented with --random-transform.

    Args:
        settings: ``DetectorSpec`` with the anchors, pyramid levels and image sizes to use
            (``resolve_settings``; default: the flags with the package defaults).
    """
    import numpy as np

    from keras_retinanet.training import random_augmentation

    if settings is None:
        settings = resolve_settings(args)[0].spec

    transform_generator = visual_effect_generator = None
    if args.random_transform:
        transform_generator, visual_effect_generator = random_augmentation(np.random.RandomState(args.seed))
    common = {
        "transform_generator": transform_generator,
        "visual_effect_generator": visual_effect_generator,
        "image_min_side": settings.image_min_side,
        "image_max_side": settings.image_max_side,
        "no_resize": settings.no_resize,
        "anchor_params": settings.anchor_params,
        "pyramid_levels": settings.pyramid_levels,
        "group_method": "none",
        "shuffle_groups": False,
    }
    from keras_retinanet.preprocessing.datasets import generator_from_args

    try:
        return generator_from_args(args, **common)
    except (ValueError, OSError, KeyError) as error:
        raise ToolError(first_line(error)) from None


def _label_to_name(generator):
    def name(label):
        try:
            return str(generator.label_to_name(label))
        except (KeyError, IndexError):
            return str(label)

    return name


def _output_path(args, index, image_path):
    stem = os.path.splitext(os.path.basename(image_path))[0]
    return os.path.join(args.output_dir, f"{index:05d}_{stem}.png")


def _fit_anchors(args, generator):
    """``--fit-anchors CONFIG``: fit, write the config atomically, print the coverage; exit status."""
    from keras_retinanet.errors import OutputError
    from keras_retinanet.inspection import fit_anchors
    from keras_retinanet.utils.config import format_config
    from keras_retinanet.utils.files import OutputPlan, write_atomically

    inputs = [path for path in (args.config, getattr(args, "annotations", None), getattr(args, "classes", None)) if path]
    try:
        path = OutputPlan(inputs=inputs, overwrite=args.overwrite).check(args.fit_anchors, "anchor config")
    except OutputError as error:
        raise ToolError(str(error)) from None
    fit = fit_anchors(generator)
    comment = (
        f"anchor sizes fitted by retinanet-debug --fit-anchors: x{fit.factor:g} of the sizes before; boxes without a "
        f"positive anchor {fit.before.unmatched} -> {fit.after.unmatched} of {fit.after.boxes}"
    )
    text = format_config(fit.anchor_params, generator.pyramid_levels, comment)

    def write(temporary):
        with open(temporary, "w", encoding="utf-8") as file:
            file.write(text)

    try:
        write_atomically(path, write)
    except OutputError as error:
        raise ToolError(str(error)) from None
    print(f"before: {fit.before.describe()}")
    print(f"after:  {fit.after.describe()}")
    print(f"anchor sizes {' '.join(f'{s:g}' for s in fit.anchor_params.sizes)} (x{fit.factor:g}) written to {path}; "
          f"train with --config {args.fit_anchors}")
    return 0


def plan_outputs(args, generator):
    """Check every picture --output-dir will get before any work: {index: path}.

    Raises:
        ToolError: a picture would be an input, exists already (without --overwrite), or
            cannot be written.
    """
    from keras_retinanet.errors import OutputError
    from keras_retinanet.utils.files import OutputPlan

    from keras_retinanet.inspection import image_path_of

    paths = {index: _output_path(args, index, image_path_of(generator, index)) for index in range(generator.size())}
    inputs = [path for path in (image_path_of(generator, index) for index in paths) if os.path.exists(path)]
    plan = OutputPlan(inputs=inputs, overwrite=args.overwrite)
    try:
        plan.check_folder(args.output_dir, "--output-dir")
        for path in paths.values():
            plan.check(path, "picture")
    except OutputError as error:
        raise ToolError(str(error)) from None
    return plan, paths


def run_files(args, generator, summary):
    """Inspect every image, write each drawing to --output-dir; returns the number written."""
    from tqdm import tqdm

    from keras_retinanet.errors import OutputError
    from keras_retinanet.inspection import draw_inspection, image_path_of, inspect_image
    from keras_retinanet.utils.eval import write_image

    plan, paths = plan_outputs(args, generator)
    name = _label_to_name(generator)
    for index in tqdm(range(generator.size()), desc="Inspecting", unit="image", file=sys.stderr, disable=None):
        try:
            inspection = inspect_image(generator, index)
        except OSError as error:  # an image that cannot be decoded: listed in the summary
            summary.skip(image_path_of(generator, index), first_line(error))
            continue
        summary.add(inspection)
        canvas = draw_inspection(
            inspection, anchors=args.draw_anchors, annotations=args.draw_annotations, label_to_name=name,
            display_name=args.display_name,
        )  # fmt: skip
        try:
            plan.write(paths[index], lambda temporary: write_image(temporary, canvas), "picture")
        except OutputError as error:
            raise ToolError(str(error)) from None
    return generator.size()


def run_gui(args, generator, summary):
    """Show the images one by one in a window; the summary covers the images shown.

    Returns:
        (number of images shown, whether the user quit before the last image).
    """
    import cv2

    from keras_retinanet.inspection import draw_inspection, inspect_image

    name = _label_to_name(generator)
    seen = set()
    index = 0
    try:
        cv2.namedWindow(WINDOW_NAME, cv2.WINDOW_NORMAL)
    except cv2.error:
        raise ToolError("this OpenCV build has no GUI (opencv-python-headless?): use --no-gui") from None
    while 0 <= index < generator.size():
        inspection = inspect_image(generator, index)
        if index not in seen:
            summary.add(inspection)
            seen.add(index)
        canvas = draw_inspection(
            inspection, anchors=args.draw_anchors, annotations=args.draw_annotations, label_to_name=name,
            display_name=args.display_name,
        )  # fmt: skip
        cv2.setWindowTitle(WINDOW_NAME, f"{WINDOW_NAME}: {inspection.path} ({index + 1}/{generator.size()})")
        cv2.imshow(WINDOW_NAME, canvas)
        key = cv2.waitKey() & 0xFF
        if key in QUIT_KEYS:
            cv2.destroyAllWindows()
            return len(seen), True
        index = max(index - 1, 0) if key in PREVIOUS_KEYS else index + 1
    cv2.destroyAllWindows()
    return len(seen), False


def make_output_path(output_dir, image_path, flatten=False):
    """fizyr's name for a drawing of an image: ``<output_dir>/<image path>_debug<extension>``.

    The image's folders are kept under ``output_dir`` (an absolute path taken from the
    file-system root, a Windows drive dropped), or dropped with ``flatten``:
    ``make_output_path('out', '/data/a/1.png')`` is ``out/data/a/1_debug.png``, with
    ``flatten=True`` ``out/1_debug.png``. (retinanet-debug itself writes
    ``<output_dir>/<index>_<image name>.png``, which never collide.)
    """
    if flatten:
        path = os.path.basename(image_path)
    else:
        path = os.path.splitdrive(image_path)[1]
        if os.path.isabs(path):
            path = os.path.relpath(path, os.path.sep)
    base, extension = os.path.splitext(path)
    return os.path.join(output_dir, base + DEBUG_SUFFIX + extension)


def run(generator, args, anchor_params=None, pyramid_levels=None):
    """fizyr's main loop over a generator: show each image (or write it with ``args.no_gui``).

    Takes fizyr's arguments (``anchors``, ``show_annotations``, ``random_transform``,
    ``resize``, ``display_name``, ``no_gui``, ``output_dir``) or this tool's
    (``draw_anchors``, ``draw_annotations``, ``overwrite``); images go through the training
    step of ``inspection.inspect_image``, augmented only with ``random_transform``, resized
    unless ``resize`` is False. Prints the dataset summary.

    Args:
        generator: a ``Generator``.
        args: parsed arguments (see above).
        anchor_params, pyramid_levels: the anchors to match boxes with (default: the generator's).

    Returns:
        False if the user quit the window before the last image, else True.
    """
    from keras_retinanet.inspection import DatasetSummary

    options = argparse.Namespace(
        draw_anchors=getattr(args, "draw_anchors", getattr(args, "anchors", True)),
        draw_annotations=getattr(args, "draw_annotations", getattr(args, "show_annotations", True)),
        display_name=getattr(args, "display_name", False),
        output_dir=getattr(args, "output_dir", DEFAULT_OUTPUT_DIR),
        overwrite=getattr(args, "overwrite", False),
    )
    saved = {name: getattr(generator, name) for name in
             ("anchor_params", "pyramid_levels", "no_resize", "transform_generator", "visual_effect_generator")}  # fmt: skip
    try:
        if anchor_params is not None:
            generator.anchor_params = anchor_params
        if pyramid_levels is not None:
            generator.pyramid_levels = list(pyramid_levels)
        if not getattr(args, "resize", True):
            generator.no_resize = True
        if not getattr(args, "random_transform", True):
            generator.transform_generator = generator.visual_effect_generator = None
        summary = DatasetSummary(_label_to_name(generator), anchor_params=generator.anchor_params)
        if getattr(args, "no_gui", False):
            run_files(options, generator, summary)
            finished = True
        else:
            finished = not run_gui(options, generator, summary)[1]
    finally:
        for name, value in saved.items():
            setattr(generator, name, value)
    print("\n".join(summary.lines()))
    return finished


@tool_main(PROG)
def main(args=None):
    """Entry point of retinanet-debug; returns the exit status."""
    args = parse_args(sys.argv[1:] if args is None else args)
    set_verbosity(args)
    if args.flatten_output:
        LOGGER.info("--flatten-output is not needed: the images are always written into --output-dir itself")
    try:
        check_inputs(args)
        import_tensorflow(args.verbose)
        recipe, model_spec = resolve_settings(args)
        generator = create_generator(args, recipe.spec)
        missing = generator.missing_images() if hasattr(generator, "missing_images") else []
        if missing:  # as retinanet-train and -evaluate: missing files are a mistake to fix first
            listed = ", ".join(path for _, path in missing[:5])
            raise ToolError(f"{len(missing)} images of the dataset are missing: {listed}{', ...' if len(missing) > 5 else ''}")
        if model_spec is not None:
            from keras_retinanet.errors import SpecConflictError
            from keras_retinanet.spec import check_class_names, class_names_of

            try:
                check_class_names(model_spec, class_names_of(generator), source=args.model)
            except SpecConflictError as error:
                raise ToolError(str(error)) from None
        print_notes(PROG, recipe.notes)
        if args.check_images:
            return _check_images(generator)
        if args.fit_anchors:
            return _fit_anchors(args, generator)
        from keras_retinanet.inspection import DatasetSummary

        summary = DatasetSummary(
            _label_to_name(generator), anchor_params=generator.anchor_params,
            duplicates=getattr(generator, "duplicate_lines", ()),
        )  # fmt: skip
        try:
            if args.no_gui:
                run_files(args, generator, summary)
            else:
                run_gui(args, generator, summary)
        except (OSError, ValueError) as error:  # an image that cannot be read, a bad annotation
            raise ToolError(first_line(error)) from None
    except ToolError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    print("\n".join(summary.lines()))
    if args.no_gui:
        print(f"images written to {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
