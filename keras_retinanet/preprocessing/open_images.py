"""Generator over Open Images (OID) bounding boxes, in fizyr's layout and versions.

Layout, by ``version`` (``MAIN_DIR`` is the dataset folder)::

    v4:            MAIN_DIR/2018_04/class-descriptions-boxable.csv        /m/011k07,Tortoise
                   MAIN_DIR/2018_04/bbox_labels_600_hierarchy.json        (for parent_label)
                   MAIN_DIR/2018_04/<subset>/<subset>-annotations-bbox.csv
                   MAIN_DIR/images/<subset>/<ImageID>.jpg
    challenge2018: MAIN_DIR/challenge2018/challenge-2018-class-descriptions-500.csv
                   MAIN_DIR/challenge2018/bbox_labels_500_hierarchy.json
                   MAIN_DIR/challenge2018/challenge-2018-train-annotations-bbox.csv
                   MAIN_DIR/challenge2018/challenge-2018-image-ids-valset-od.csv   (ImageID header; the
                   'validation' subset, the rest of the training set is 'train')
                   MAIN_DIR/images/train/<ImageID>.jpg
    v3:            MAIN_DIR/2017_11/classes-bbox-trainable.txt (one label id a line) and
                   class-descriptions.csv; MAIN_DIR/2017_11/<subset>/annotations-human-bbox.csv

An annotations file has a header line naming its columns, of which ``ImageID``,
``LabelName``, ``XMin``, ``XMax``, ``YMin``, ``YMax`` are used (coordinates relative to the
image, 0..1)::

    ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,IsOccluded,IsTruncated,IsGroupOf,IsDepiction,IsInside
    000026e7ee790996,freeform,/m/07j7r,1,0.071905,0.145346,0.206591,0.391306,0,1,1,0,0

Labels are the classes' positions in the class-descriptions file (0..C-1), names their
descriptions (with quotes and backticks removed, as fizyr did). Only images with at least
one box of a known class are listed; an image whose file is absent is left out with a
warning (fizyr left them out silently), and so is a box whose corners round to the same
pixel. The parsed annotations are cached in ``<annotation_cache_dir>/<subset>.json``
(fizyr's file and format: ``{ImageID: {"w", "h", "boxes": [{"cls_id", "x1", "x2", "y1", "y2"}]}}``,
relative coordinates, labels of the full class list) and read from there next time.
``labels_filter`` (class descriptions) or ``parent_label`` (a class and its descendants
in the hierarchy json) keep some classes, relabelled 0..K-1 in that order.
"""
import csv
import itertools
import json
import os
import warnings

import numpy as np

from ..errors import OutputError
from ..utils.files import atomic_open, read_utf8
from ..utils.image import read_image_bgr, read_image_size
from .generator import Generator

#: Per version: the metadata folder, the class files and the hierarchy (fizyr's names).
OID_VERSIONS = {
    "v4": {"metadata": "2018_04", "classes": "class-descriptions-boxable.csv",
           "hierarchy": "bbox_labels_600_hierarchy.json"},
    "challenge2018": {"metadata": "challenge2018", "classes": "challenge-2018-class-descriptions-500.csv",
                      "hierarchy": "bbox_labels_500_hierarchy.json"},
    "v3": {"metadata": "2017_11", "trainable": "classes-bbox-trainable.txt", "classes": "class-descriptions.csv",
           "hierarchy": "bbox_labels_600_hierarchy.json"},
}  # fmt: skip
CHALLENGE_VALIDATION_IDS = "challenge-2018-image-ids-valset-od.csv"
CHALLENGE_ANNOTATIONS = "challenge-2018-train-annotations-bbox.csv"
CHALLENGE_SUBSETS = ("train", "validation")
ANNOTATION_COLUMNS = ("ImageID", "LabelName", "XMin", "XMax", "YMin", "YMax")
IMAGE_SUFFIX = ".jpg"
CHUNK_ROWS = 200_000  # annotation lines parsed and checked together (OID v4's training file has 14.6 M)
MAX_LISTED = 5  # line numbers / file names listed in a warning


def _check_version(version):
    if version not in OID_VERSIONS:
        raise ValueError(f"unknown Open Images version {version!r}; expected one of {list(OID_VERSIONS)}")
    return OID_VERSIONS[version]


def metadata_dir(main_dir, version="v4"):
    """The folder of a version's class, hierarchy and annotation files."""
    return os.path.join(main_dir, _check_version(version)["metadata"])


def annotations_path(metadata, subset, version="v4"):
    """The annotations CSV of a subset."""
    _check_version(version)
    if version == "challenge2018":
        return os.path.join(metadata, CHALLENGE_ANNOTATIONS)
    if version == "v3":
        return os.path.join(metadata, subset, "annotations-human-bbox.csv")
    return os.path.join(metadata, subset, f"{subset}-annotations-bbox.csv")


def images_dir(main_dir, subset, version="v4"):
    """The folder of a subset's images (challenge2018's subsets both come from the training images)."""
    return os.path.join(main_dir, "images", "train" if version == "challenge2018" else subset)


def _require(path, what):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Open Images {what} not found: {path}")


def _read_text(path, what):
    _require(path, what)
    try:
        return read_utf8(path)
    except ValueError as error:
        raise ValueError(f"invalid Open Images {what}: {path}: {error}") from None


def _clean_description(text):
    return text.replace('"', "").replace("'", "").replace("`", "")


# -- classes and hierarchy --------------------------------------------------------------


def load_hierarchy(metadata_dir, version="v4"):
    """The class hierarchy json of a version: nested ``{"LabelName", "Subcategory": [...]}``."""
    path = os.path.join(metadata_dir, _check_version(version)["hierarchy"])
    try:
        hierarchy = json.loads(_read_text(path, "hierarchy file"))
    except (json.JSONDecodeError, RecursionError) as error:
        raise ValueError(f"invalid Open Images hierarchy file: {path}: {error}") from None
    problem = _hierarchy_problem(hierarchy)
    if problem:
        raise ValueError(f"invalid Open Images hierarchy file: {path}: {problem}")
    return hierarchy


def _hierarchy_nodes(hierarchy):
    """The nodes of a hierarchy, depth first, parents before their children (no recursion)."""
    stack = [hierarchy]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(node.get("Subcategory", [])))


def _hierarchy_problem(hierarchy):
    stack = [("the top level", hierarchy)]
    while stack:
        where, node = stack.pop()
        if not isinstance(node, dict) or not isinstance(node.get("LabelName"), str):
            return f"{where} must be an object with a string 'LabelName'"
        children = node.get("Subcategory", [])
        if not isinstance(children, list):
            return f"'Subcategory' of {node['LabelName']} must be a list"
        stack.extend((f"a subcategory of {node['LabelName']}", child) for child in children)
    return None


def load_hierarchy_children(hierarchy):
    """Label ids of a hierarchy node and of all its descendants, depth first (the node first)."""
    return [node["LabelName"] for node in _hierarchy_nodes(hierarchy)]


def find_hierarchy_parent(hierarchy, parent_cls):
    """The first node (depth first) whose ``LabelName`` is ``parent_cls``, or None."""
    return next((node for node in _hierarchy_nodes(hierarchy) if node["LabelName"] == parent_cls), None)


def _parse_class_rows(text):
    """[(label id, description)] of a ``label_id,description`` CSV text; ValueError 'line N: ...'."""
    rows, seen = [], {}
    reader = csv.reader(text.splitlines())
    try:
        for line, row in enumerate(reader, start=1):
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != 2 or not row[0]:
                raise ValueError(f"line {line}: format should be 'label_id,description', got {','.join(row)!r}")
            if row[0] in seen:
                raise ValueError(f"line {line}: duplicate label id {row[0]!r} (also on line {seen[row[0]]})")
            seen[row[0]] = line
            rows.append((row[0], _clean_description(row[1])))
    except csv.Error as error:
        raise ValueError(f"line {reader.line_num}: {error}") from None
    return rows


def get_labels(metadata_dir, version="v4"):
    """The classes of a version: ({label: description}, {label id (MID): label}), labels 0..C-1.

    Raises:
        FileNotFoundError: a class file is missing.
        ValueError: ``invalid Open Images class descriptions file: PATH: line N: ...``.
    """
    files = _check_version(version)
    path = os.path.join(metadata_dir, files["classes"])
    text = _read_text(path, "class descriptions file")
    try:
        rows = _parse_class_rows(text)
        if not rows:
            raise ValueError("no classes")
    except ValueError as error:
        raise ValueError(f"invalid Open Images class descriptions file: {path}: {error}") from None
    if version != "v3":
        return {i: description for i, (_, description) in enumerate(rows)}, {mid: i for i, (mid, _) in enumerate(rows)}
    descriptions = dict(rows)
    trainable_path = os.path.join(metadata_dir, files["trainable"])
    trainable = []
    for line, text in enumerate(_read_text(trainable_path, "trainable classes file").splitlines(), start=1):
        mid = text.strip()
        if not mid:
            continue
        if mid not in descriptions:
            raise ValueError(f"invalid Open Images trainable classes file: {trainable_path}: line {line}: "
                             f"label id {mid!r} is not in {path}")  # fmt: skip
        trainable.append(mid)
    if not trainable:
        raise ValueError(f"invalid Open Images trainable classes file: {trainable_path}: no classes")
    return {i: descriptions[mid] for i, mid in enumerate(trainable)}, {mid: i for i, mid in enumerate(trainable)}


# -- annotations --------------------------------------------------------------------------


def _read_validation_ids(metadata):
    path = os.path.join(metadata, CHALLENGE_VALIDATION_IDS)
    lines = _read_text(path, "validation image ids file").splitlines()
    return {line.split(",")[0].strip() for line in lines[1:] if line.strip()}  # first line: the header


def _parse_coordinates(columns, line_numbers, path):
    """(N, 4) float64 XMin, XMax, YMin, YMax of string columns; ValueError naming the first bad line."""
    try:
        values = np.array(columns, dtype=np.float64).T.reshape(-1, 4)
        if np.isfinite(values).all():
            return values
    except ValueError:
        pass
    for row, line in enumerate(line_numbers):
        for name, column in zip(ANNOTATION_COLUMNS[2:], columns):
            try:
                value = float(column[row])
            except ValueError:
                value = None
            if value is None or not np.isfinite(value):
                raise ValueError(f"invalid Open Images annotations file: {path}: line {line}: "
                                 f"malformed {name}: {column[row]!r} is not a finite number")  # fmt: skip
    raise AssertionError("unreachable")  # pragma: no cover


def _rows(path):
    """The header's column indices and an iterator of (line number, row) of an annotations CSV."""
    _require(path, "annotations file")
    file = open(path, encoding="utf-8-sig", newline="")
    reader = csv.reader(file)

    def fail(message):
        file.close()
        raise ValueError(f"invalid Open Images annotations file: {path}: {message}")

    try:
        header = next(reader, None)
    except (UnicodeDecodeError, csv.Error) as error:
        fail(f"line 1: {error}")
    if header is None:
        fail("empty file (expected a header line naming the columns)")
    missing = [name for name in ANNOTATION_COLUMNS if name not in header]
    if missing:
        fail(f"line 1: the header has no {', '.join(missing)} column (expected {','.join(ANNOTATION_COLUMNS)}, ...)")
    indices = [header.index(name) for name in ANNOTATION_COLUMNS]

    def rows():
        with file:
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    return
                except UnicodeDecodeError:
                    raise ValueError(f"invalid Open Images annotations file: {path}: line {reader.line_num + 1}: "
                                     "not UTF-8 text; save the file as UTF-8") from None  # fmt: skip
                except csv.Error as error:
                    raise ValueError(f"invalid Open Images annotations file: {path}: line {reader.line_num}: "
                                     f"{error}") from None  # fmt: skip
                if not row:
                    continue
                if len(row) != len(header):
                    raise ValueError(f"invalid Open Images annotations file: {path}: line {reader.line_num}: "
                                     f"expected {len(header)} columns as the header, got {len(row)}")  # fmt: skip
                yield reader.line_num, row

    return indices, rows()


def generate_images_annotations_json(main_dir, metadata_dir, subset, cls_index, version="v4"):
    """Parse a subset's annotations CSV into fizyr's annotation dict.

    Args:
        main_dir: the dataset folder.
        metadata_dir: the version's metadata folder (``metadata_dir(main_dir, version)``).
        subset: 'train', 'validation', 'test' (challenge2018: 'train' or 'validation').
        cls_index: {label id (MID): label}; boxes of other classes are skipped.
        version: 'v4', 'challenge2018' or 'v3'.

    Returns:
        {ImageID: {"w": width, "h": height, "boxes": [{"cls_id", "x1", "x2", "y1", "y2"}]}},
        coordinates relative (0..1), images in the order they first appear.

    Raises:
        ValueError: ``invalid Open Images annotations file: PATH: line N: ...`` (a column
            missing, a malformed number, XMax <= XMin or YMax <= YMin).
    """
    _check_version(version)
    validation_ids = None
    if version == "challenge2018":
        if subset not in CHALLENGE_SUBSETS:
            raise ValueError(f"Open Images challenge2018 has the subsets {list(CHALLENGE_SUBSETS)}, not {subset!r}")
        validation_ids = _read_validation_ids(metadata_dir)
    path = annotations_path(metadata_dir, subset, version)
    image_dir = images_dir(main_dir, subset, version)
    indices, rows = _rows(path)
    annotations, sizes = {}, {}
    missing, rounded = {}, []  # image id -> boxes left out; lines of boxes rounded away

    def keep(row):
        if row[indices[1]] not in cls_index:
            return False
        if validation_ids is None:
            return True
        return (row[indices[0]] in validation_ids) == (subset == "validation")

    while True:
        read = list(itertools.islice(rows, CHUNK_ROWS))
        if not read:
            break
        chunk = [(line, row) for line, row in read if keep(row)]
        if not chunk:
            continue
        lines = [line for line, _ in chunk]
        columns = [[row[indices[k]] for _, row in chunk] for k in range(2, 6)]
        x1, x2, y1, y2 = _parse_coordinates(columns, lines, path).T
        for name, low, high, low_name in (("XMax", x1, x2, "XMin"), ("YMax", y1, y2, "YMin")):
            wrong = np.flatnonzero(high <= low)
            if len(wrong):
                row = wrong[0]
                raise ValueError(f"invalid Open Images annotations file: {path}: line {lines[row]}: {name} "
                                 f"({high[row]:g}) must be higher than {low_name} ({low[row]:g})")  # fmt: skip
        image_ids = [row[indices[0]] for _, row in chunk]
        for image_id in dict.fromkeys(image_ids):
            if image_id not in sizes:
                try:
                    height, width = read_image_size(os.path.join(image_dir, image_id + IMAGE_SUFFIX))
                    sizes[image_id] = (width, height)
                except OSError:
                    sizes[image_id] = None
        size = np.array([sizes[i] or (0, 0) for i in image_ids], dtype=np.float64).reshape(-1, 2)
        found = size[:, 0] > 0
        width, height = size[:, 0], size[:, 1]
        collapsed = found & ((np.round(x1 * width) == np.round(x2 * width)) | (np.round(y1 * height) == np.round(y2 * height)))
        rounded += [lines[i] for i in np.flatnonzero(collapsed)]
        labels = [cls_index[row[indices[1]]] for _, row in chunk]
        for i in np.flatnonzero(~found):
            missing[image_ids[i]] = missing.get(image_ids[i], 0) + 1
        for i in np.flatnonzero(found & ~collapsed):
            image_id = image_ids[i]
            entry = annotations.get(image_id)
            if entry is None:
                entry = annotations[image_id] = {"w": int(width[i]), "h": int(height[i]), "boxes": []}
            entry["boxes"].append({"cls_id": labels[i], "x1": float(x1[i]), "x2": float(x2[i]),
                                   "y1": float(y1[i]), "y2": float(y2[i])})  # fmt: skip
    if missing:
        listed = ", ".join(image_id + IMAGE_SUFFIX for image_id in list(missing)[:MAX_LISTED])
        warnings.warn(
            f"{path}: {len(missing)} images are not in {image_dir} and are left out with their "
            f"{sum(missing.values())} boxes ({listed}{', ...' if len(missing) > MAX_LISTED else ''})",
            stacklevel=2,
        )
    if rounded:
        listed = ", ".join(str(line) for line in rounded[:MAX_LISTED])
        warnings.warn(
            f"{path}: {len(rounded)} boxes left out, their corners round to the same pixel "
            f"(lines {listed}{', ...' if len(rounded) > MAX_LISTED else ''})",
            stacklevel=2,
        )
    return annotations


# -- the annotation cache ---------------------------------------------------------------


def _cache_problem(annotations, num_classes):
    """What is wrong with a cache's content, or None."""
    if not isinstance(annotations, dict):
        return "the top level must be an object {ImageID: {w, h, boxes}}"
    for image_id, entry in annotations.items():
        if not isinstance(entry, dict) or not {"w", "h", "boxes"} <= entry.keys():
            return f"image {image_id!r} must be an object with w, h and boxes"
        if not all(isinstance(entry[k], (int, float)) and not isinstance(entry[k], bool) and entry[k] > 0
                   for k in ("w", "h")):  # fmt: skip
            return f"image {image_id!r}: w and h must be positive numbers"
        if not isinstance(entry["boxes"], list):
            return f"image {image_id!r}: boxes must be a list"
        for i, box in enumerate(entry["boxes"]):
            if not isinstance(box, dict) or not {"cls_id", "x1", "x2", "y1", "y2"} <= box.keys():
                return f"image {image_id!r}: boxes[{i}] must have cls_id, x1, x2, y1, y2"
            label = box["cls_id"]
            if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < num_classes:
                return f"image {image_id!r}: boxes[{i}]: cls_id {label!r} is not a label 0..{num_classes - 1}"
            if not all(isinstance(box[k], (int, float)) and not isinstance(box[k], bool) and np.isfinite(box[k])
                       for k in ("x1", "x2", "y1", "y2")):  # fmt: skip
                return f"image {image_id!r}: boxes[{i}]: coordinates must be finite numbers"
    return None


def read_annotation_cache(path, num_classes):
    """The annotation dict of a cache file written by this generator or fizyr's.

    Raises:
        ValueError: ``invalid Open Images annotation cache: PATH: ... (delete it to read the
            annotations again)``.
    """
    def fail(message):
        raise ValueError(f"invalid Open Images annotation cache: {path}: {message} (delete it to read the "
                         "annotations again)")  # fmt: skip

    try:
        annotations = json.loads(read_utf8(path))
    except (json.JSONDecodeError, RecursionError) as error:
        fail(str(error))
    except ValueError as error:  # not UTF-8
        fail(str(error))
    problem = _cache_problem(annotations, num_classes)
    if problem:
        fail(problem)
    return annotations


def write_annotation_cache(path, annotations):
    """Write the cache atomically; a cache that cannot be written is a warning, not an error."""
    try:
        with atomic_open(path, "w", encoding="utf-8") as file:
            json.dump(annotations, file)
    except OutputError as error:
        warnings.warn(f"{error}: the annotations are not cached and will be read again next time", stacklevel=3)


# -- class filters ----------------------------------------------------------------------


def filter_classes(id_to_labels, cls_index, annotations, labels_filter=None, parent_label=None, hierarchy=None):
    """Keep some classes, relabelled 0..K-1: those named in ``labels_filter`` (in its order), or
    ``parent_label`` and its descendants in ``hierarchy`` (depth first). Images left without
    boxes are dropped.

    Returns:
        ({new label: description}, annotations with new labels).

    Raises:
        ValueError: a name that is no class, a parent missing from the hierarchy.
    """
    by_description = {}
    for label, description in id_to_labels.items():
        by_description.setdefault(description, label)
    if parent_label is None:
        unknown = [name for name in labels_filter if name not in by_description]
        if unknown:
            raise ValueError(f"labels filter: {', '.join(map(repr, unknown))} not among the classes "
                             f"(e.g. {', '.join(list(by_description)[:5])})")  # fmt: skip
        kept = list(dict.fromkeys(by_description[name] for name in labels_filter))
    else:
        if parent_label not in by_description:
            raise ValueError(f"parent label {parent_label!r} is not among the classes")
        parent_mid = next(mid for mid, label in cls_index.items() if label == by_description[parent_label])
        tree = find_hierarchy_parent(hierarchy, parent_mid)
        if tree is None:
            raise ValueError(f"parent label {parent_label!r} ({parent_mid}) is not in the class hierarchy")
        kept = list(dict.fromkeys(cls_index[mid] for mid in load_hierarchy_children(tree) if mid in cls_index))
    new_label = {old: new for new, old in enumerate(kept)}
    filtered = {}
    for image_id, entry in annotations.items():
        boxes = [dict(box, cls_id=new_label[box["cls_id"]]) for box in entry["boxes"] if box["cls_id"] in new_label]
        if boxes:
            filtered[image_id] = {"w": entry["w"], "h": entry["h"], "boxes": boxes}
    return {new: id_to_labels[old] for old, new in new_label.items()}, filtered


class OpenImagesGenerator(Generator):
    """Generator over an Open Images subset (see the module docstring for the layout).

    Args:
        main_dir: the dataset folder.
        subset: 'train', 'validation' or 'test' (challenge2018: 'train' or 'validation').
        version: 'v4' (default), 'challenge2018' or 'v3'.
        labels_filter: class descriptions to keep (e.g. ['Helmet', 'Hat']), or None.
        annotation_cache_dir: folder of the annotation cache ``<subset>.json`` (default '.').
        parent_label: keep this class and its descendants in the hierarchy (takes the place
            of ``labels_filter``, as in fizyr), or None.
        **kwargs: ``Generator`` arguments.

    Attributes (fizyr's): ``annotations`` ({ImageID: {w, h, boxes}}), ``id_to_labels``
    ({label: description}), ``id_to_image_id`` ({index: ImageID}), ``hierarchy``, ``base_dir``
    (the images' folder).

    Raises:
        FileNotFoundError: a metadata file is missing.
        ValueError: unknown version, malformed files (naming file and line), a bad filter.
    """

    def __init__(
        self,
        main_dir,
        subset,
        version="v4",
        labels_filter=None,
        annotation_cache_dir=".",
        parent_label=None,
        **kwargs,
    ):
        _check_version(version)
        self.main_dir, self.subset, self.version = main_dir, subset, version
        self.base_dir = images_dir(main_dir, subset, version)
        metadata = metadata_dir(main_dir, version)
        hierarchy_path = os.path.join(metadata, OID_VERSIONS[version]["hierarchy"])
        self.hierarchy = None
        if parent_label is not None or os.path.isfile(hierarchy_path):
            self.hierarchy = load_hierarchy(metadata, version)
        id_to_labels, cls_index = get_labels(metadata, version)

        cache = os.path.join(annotation_cache_dir, subset + ".json")
        if os.path.isfile(cache):
            self.annotations = read_annotation_cache(cache, len(id_to_labels))
        else:
            self.annotations = generate_images_annotations_json(main_dir, metadata, subset, cls_index, version)
            write_annotation_cache(cache, self.annotations)

        if labels_filter is not None and parent_label is not None:
            warnings.warn("Open Images: parent_label is given, labels_filter is ignored (as in fizyr)", stacklevel=2)
        if labels_filter is not None or parent_label is not None:
            self.id_to_labels, self.annotations = filter_classes(
                id_to_labels, cls_index, self.annotations, labels_filter, parent_label, self.hierarchy
            )
        else:
            self.id_to_labels = id_to_labels
        if not self.annotations:
            raise ValueError(f"Open Images {version} {subset}: no image with boxes of the classes "
                             f"(annotations: {annotations_path(metadata, subset, version)}, images: {self.base_dir})")
        self.id_to_image_id = dict(enumerate(self.annotations))
        self.labels = self.id_to_labels
        self.classes = {}
        for label, description in self.id_to_labels.items():
            self.classes.setdefault(description, label)
        super().__init__(**kwargs)

    def size(self):
        return len(self.annotations)

    def num_classes(self):
        return len(self.id_to_labels)

    def image_aspect_ratio(self, image_index):
        entry = self.annotations[self.id_to_image_id[image_index]]
        return float(entry["w"]) / float(entry["h"])

    def image_path(self, image_index):
        return os.path.join(self.base_dir, self.id_to_image_id[image_index] + IMAGE_SUFFIX)

    def image_size(self, image_index):
        entry = self.annotations[self.id_to_image_id[image_index]]
        return int(entry["h"]), int(entry["w"])

    def load_image(self, image_index):
        return read_image_bgr(self.image_path(image_index))

    def load_annotations(self, image_index):
        """dict with ``bboxes`` (K, 4) float64 x1, y1, x2, y2 in pixels and ``labels`` (K,) int64."""
        entry = self.annotations[self.id_to_image_id[image_index]]
        boxes = entry["boxes"]
        relative = np.array([[b["x1"], b["y1"], b["x2"], b["y2"]] for b in boxes], dtype=np.float64).reshape(-1, 4)
        scale = np.array([entry["w"], entry["h"], entry["w"], entry["h"]], dtype=np.float64)
        return {"bboxes": relative * scale, "labels": np.array([b["cls_id"] for b in boxes], dtype=np.int64)}
