"""One generator for a tool's dataset sub-command: ``csv``, ``coco``, ``pascal``, ``kitti`` or ``oid``.

The command-line tools share the sub-commands (``csv ANNOTATIONS CLASSES``, ``coco PATH``,
``pascal PATH``, ``kitti PATH``, ``oid MAIN_DIR`` with fizyr's ``--version``,
``--labels-filter``, ``--annotation-cache-dir``, ``--parent-label``):
``add_dataset_subparsers`` declares them, ``dataset_inputs`` lists the files and folders
they name (for the tools' checks before anything heavy), ``generator_from_args`` builds the
matching generator from the parsed arguments, so each tool only adds its set options and
states the split and the generator options it wants.
"""

DATASET_TYPES = ("csv", "coco", "pascal", "kitti", "oid")
# Folder-based dataset types: (the argument holding the folder, how messages name it).
DATASET_FOLDERS = {
    "coco": ("coco_path", "COCO folder"),
    "pascal": ("pascal_path", "Pascal VOC folder"),
    "kitti": ("kitti_path", "KITTI folder"),
    "oid": ("main_dir", "Open Images folder"),
}
SET_NAMED_TYPES = ("coco", "pascal", "kitti", "oid")  # the types that read a named set (subset)
OID_DEFAULT_VERSION = "v4"


def _csv_list(text):
    """fizyr's --labels-filter: 'Helmet,Hat' -> ['Helmet', 'Hat']."""
    return text.split(",")


def add_dataset_subparsers(parser, annotations_help="CSV file with the annotations"):
    """Add the required ``csv`` / ``coco`` / ``pascal`` / ``kitti`` / ``oid`` sub-commands (``args.dataset_type``).

    Each gets its positionals (csv: ``annotations``, ``classes``; coco: ``coco_path``;
    pascal: ``pascal_path``; kitti: ``kitti_path``; oid: ``main_dir``), pascal its
    ``--image-extension`` and oid fizyr's ``--version``, ``--labels-filter``,
    ``--annotation-cache-dir`` and ``--parent-label``.

    Returns:
        {dataset type: sub-parser}, for the tool's own options (set names, ...).
    """
    subparsers = parser.add_subparsers(dest="dataset_type", metavar="{" + ",".join(DATASET_TYPES) + "}",
                                       help="dataset type")  # fmt: skip
    subparsers.required = True
    csv_parser = subparsers.add_parser("csv", help="CSV files: path,x1,y1,x2,y2,class_name and class_name,id")
    csv_parser.add_argument("annotations", help=annotations_help)
    csv_parser.add_argument("classes", help="CSV file with the class names and ids")
    coco = subparsers.add_parser("coco", help="MS COCO layout: annotations/instances_<set>.json, images/<set>/")
    coco.add_argument("coco_path", help="path to the dataset folder (e.g. /data/coco)")
    pascal = subparsers.add_parser("pascal", help="Pascal VOC layout: ImageSets/Main, JPEGImages, Annotations")
    pascal.add_argument("pascal_path", help="path to the dataset folder (e.g. /data/VOC2007)")
    pascal.add_argument("--image-extension", default=".jpg", help="image file extension (default: .jpg)")
    kitti = subparsers.add_parser("kitti", help="KITTI layout: <subset>/labels/*.txt, <subset>/images/*.png")
    kitti.add_argument("kitti_path", help="path to the dataset folder (e.g. /data/kitti)")
    oid = subparsers.add_parser("oid", help="Open Images layout (v4: 2018_04/, images/<subset>/)")
    oid.add_argument("main_dir", help="path to the dataset folder (e.g. /data/open_images)")
    oid.add_argument("--version", default=OID_DEFAULT_VERSION,
                     help=f"dataset version: v4, challenge2018 or v3 (default: {OID_DEFAULT_VERSION})")  # fmt: skip
    oid.add_argument("--labels-filter", type=_csv_list, default=None, metavar="NAME,NAME",
                     help="keep only these classes (their descriptions, comma separated)")  # fmt: skip
    oid.add_argument("--annotation-cache-dir", default=".",
                     help="folder of the parsed-annotations cache <subset>.json (default: .)")  # fmt: skip
    oid.add_argument("--parent-label", default=None,
                     help="keep only this class and its descendants in the class hierarchy")  # fmt: skip
    return {"csv": csv_parser, "coco": coco, "pascal": pascal, "kitti": kitti, "oid": oid}


def dataset_inputs(args):
    """The files and folders a dataset sub-command names: [(what, path, is_folder)].

    E.g. ``[("annotations file", "train.csv", False), ("classes file", "classes.csv", False)]``
    or ``[("KITTI folder", "/data/kitti", True)]``; the tools check them before loading anything.
    """
    if args.dataset_type == "csv":
        return [("annotations file", args.annotations, False), ("classes file", args.classes, False)]
    attribute, what = DATASET_FOLDERS[args.dataset_type]
    return [(what, getattr(args, attribute), True)]


def generator_from_args(args, annotations=None, set_name=None, **kwargs):
    """The generator of ``args.dataset_type`` for one split.

    Args:
        args: parsed arguments with ``dataset_type`` and the sub-command's fields:
            csv: ``annotations``, ``classes``; coco: ``coco_path``; pascal: ``pascal_path``,
            ``image_extension``; kitti: ``kitti_path``; oid: ``main_dir``, ``version``,
            ``labels_filter``, ``annotation_cache_dir``, ``parent_label``.
        annotations: csv only, the annotations file (default ``args.annotations``).
        set_name: the set (subset) to read for the other types (default ``args.set_name``).
        **kwargs: ``Generator`` options (batch_size, transform_generator, image_min_side, ...).

    Returns:
        a ``CSVGenerator``, ``CocoGenerator``, ``PascalVocGenerator``, ``KittiGenerator`` or
        ``OpenImagesGenerator``.

    Raises:
        ValueError: unknown dataset type, no set name for coco / pascal; the generators' own errors (missing files,
            invalid lines) pass through unchanged.
    """
    dataset_type = args.dataset_type
    if dataset_type == "csv":
        from .csv_generator import CSVGenerator

        return CSVGenerator(args.annotations if annotations is None else annotations, args.classes, **kwargs)
    if set_name is None:
        set_name = getattr(args, "set_name", None)
    if dataset_type in SET_NAMED_TYPES and set_name is None:
        raise ValueError(f"no set name given for the {dataset_type} dataset (e.g. --set-name)")
    if dataset_type == "coco":
        from .coco import CocoGenerator

        return CocoGenerator(args.coco_path, set_name, **kwargs)
    if dataset_type == "pascal":
        from .pascal_voc import PascalVocGenerator

        return PascalVocGenerator(args.pascal_path, set_name, image_extension=args.image_extension, **kwargs)
    if dataset_type == "kitti":
        from .kitti import KittiGenerator

        return KittiGenerator(args.kitti_path, subset=set_name, **kwargs)
    if dataset_type == "oid":
        from .open_images import OpenImagesGenerator

        return OpenImagesGenerator(
            args.main_dir, subset=set_name, version=getattr(args, "version", OID_DEFAULT_VERSION),
            labels_filter=getattr(args, "labels_filter", None),
            annotation_cache_dir=getattr(args, "annotation_cache_dir", "."),
            parent_label=getattr(args, "parent_label", None), **kwargs,
        )  # fmt: skip
    raise ValueError(f"unknown dataset type {dataset_type!r}; expected one of {list(DATASET_TYPES)}")
