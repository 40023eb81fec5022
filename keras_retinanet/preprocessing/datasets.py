"""One generator for a tool's dataset sub-command: ``csv``, ``coco`` or ``pascal``.

The command-line tools share the sub-commands (``csv ANNOTATIONS CLASSES``, ``coco PATH``,
``pascal PATH``); ``generator_from_args`` builds the matching generator from the parsed
arguments, so each tool only states the split and the generator options it wants.
"""

DATASET_TYPES = ("csv", "coco", "pascal")


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
