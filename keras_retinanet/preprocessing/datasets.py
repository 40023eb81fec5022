"""One generator for a tool's dataset sub-command: ``csv``, ``coco`` or ``pascal``.

The command-line tools share the sub-commands (``csv ANNOTATIONS CLASSES``, ``coco PATH``,
``pascal PATH``): ``add_dataset_subparsers`` declares them, ``generator_from_args`` builds
the matching generator from the parsed arguments, so each tool only adds its set options
and states the split and the generator options it wants.
"""

DATASET_TYPES = ("csv", "coco", "pascal")


def add_dataset_subparsers(parser, annotations_help="CSV file with the annotations"):
    """Add the required ``csv`` / ``coco`` / ``pascal`` sub-commands (``args.dataset_type``).

    Each gets its positionals (csv: ``annotations``, ``classes``; coco: ``coco_path``;
    pascal: ``pascal_path``) and pascal its ``--image-extension``.

    Returns:
        {dataset type: sub-parser}, for the tool's own options (set names, ...).
    """
    subparsers = parser.add_subparsers(dest="dataset_type", metavar="{csv,coco,pascal}", help="dataset type")
    subparsers.required = True
    csv_parser = subparsers.add_parser("csv", help="CSV files: path,x1,y1,x2,y2,class_name and class_name,id")
    csv_parser.add_argument("annotations", help=annotations_help)
    csv_parser.add_argument("classes", help="CSV file with the class names and ids")
    coco = subparsers.add_parser("coco", help="MS COCO layout: annotations/instances_<set>.json, images/<set>/")
    coco.add_argument("coco_path", help="path to the dataset folder (e.g. /data/coco)")
    pascal = subparsers.add_parser("pascal", help="Pascal VOC layout: ImageSets/Main, JPEGImages, Annotations")
    pascal.add_argument("pascal_path", help="path to the dataset folder (e.g. /data/VOC2007)")
    pascal.add_argument("--image-extension", default=".jpg", help="image file extension (default: .jpg)")
    return {"csv": csv_parser, "coco": coco, "pascal": pascal}


def generator_from_args(args, annotations=None, set_name=None, **kwargs):
    """The generator of ``args.dataset_type`` for one split.

    Args:
        args: parsed arguments with ``dataset_type`` and the sub-command's fields:
            csv: ``annotations``, ``classes``; coco: ``coco_path``; pascal: ``pascal_path``,
            ``image_extension``.
        annotations: csv only, the annotations file (default ``args.annotations``).
        set_name: coco / pascal only, the set to read (default ``args.set_name``).
        **kwargs: ``Generator`` options (batch_size, transform_generator, image_min_side, ...).

    Returns:
        a ``CSVGenerator``, ``CocoGenerator`` or ``PascalVocGenerator``.

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
    if dataset_type in ("coco", "pascal") and set_name is None:
        raise ValueError(f"no set name given for the {dataset_type} dataset (e.g. --set-name)")
    if dataset_type == "coco":
        from .coco import CocoGenerator

        return CocoGenerator(args.coco_path, set_name, **kwargs)
    if dataset_type == "pascal":
        from .pascal_voc import PascalVocGenerator

        return PascalVocGenerator(args.pascal_path, set_name, image_extension=args.image_extension, **kwargs)
    raise ValueError(f"unknown dataset type {dataset_type!r}; expected one of {list(DATASET_TYPES)}")
