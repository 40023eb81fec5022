"""Hard synthetic scenes: real boxes, the properties the module promises, files CSVGenerator reads."""
import numpy as np
import pytest

from keras_retinanet.preprocessing.csv_generator import CSVGenerator
from keras_retinanet.utils import scenes


def _box_stats(kind, count=6, seed=0, **kwargs):
    rng = np.random.default_rng(seed)
    return [scenes.make_scene(rng, kind, **kwargs) for _ in range(count)]


@pytest.mark.parametrize("kind", sorted(scenes.KINDS))
def test_boxes_are_the_drawn_objects_within_the_kinds_ranges(kind):
    settings = scenes.KINDS[kind]
    samples = _box_stats(kind)
    sides = []
    for image, boxes, labels in samples:
        assert image.dtype == np.uint8 and image.shape == (settings["size"], settings["size"], 3)
        assert len(boxes) >= settings["objects"][0] // 2
        assert ((boxes[:, :2] >= 0) & (boxes[:, 2:] <= settings["size"]) & (boxes[:, 2:] > boxes[:, :2])).all()
        assert set(labels.tolist()) <= set(range(len(settings["classes"])))
        sides += list(np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])))
    sides = np.asarray(sides)
    low, high = settings["box"]
    # a crown's outline may fall short of its drawn square on some sides
    assert sides.min() >= min(low - 2, 0.85 * low) and sides.max() <= high + 2
    # log-uniform sides: most objects are in the smaller half of the range
    assert np.median(sides) < (low + high) / 2


def test_backgrounds_are_textured_and_objects_low_contrast_and_occluded():
    samples = _box_stats("clutter", count=8)
    overlapping = 0
    for image, boxes, _ in samples:
        grey = image.astype(np.float32).mean(-1)
        outside = np.ones(grey.shape, bool)
        for x1, y1, x2, y2 in boxes:
            outside[y1:y2, x1:x2] = False
        # texture: the background varies a lot, over large and small scales (not flat noise)
        assert grey[outside].std() > 10
        blurred = grey[::8, ::8]
        assert blurred[outside[::8, ::8]].std() > 8
        # some boxes overlap (occlusion), but none hides another one entirely
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                a, b = boxes[i], boxes[j]
                iw = min(a[2], b[2]) - max(a[0], b[0])
                ih = min(a[3], b[3]) - max(a[1], b[1])
                overlapping += iw > 0 and ih > 0
    assert overlapping > 0
    # every class occurs
    assert set(np.concatenate([labels for _, _, labels in samples]).tolist()) == set(range(5))


def test_scenes_are_repeatable_and_splits_differ(tmp_path):
    a = scenes.make_dataset(str(tmp_path / "a"), "crowns", {"train": 3, "val": 2}, seed=4, image_size=128)
    b = scenes.make_dataset(str(tmp_path / "b"), "crowns", {"train": 3, "val": 2}, seed=4, image_size=128)
    assert open(a["train"]).read() == open(b["train"]).read()
    generator = CSVGenerator(a["train"], a["classes"], shuffle_groups=False)
    assert generator.size() == 3 and generator.num_classes() == 1 and generator.label_to_name(0) == "tree"
    image = generator.load_image(0)
    assert image.shape == (128, 128, 3)
    val = CSVGenerator(a["val"], a["classes"], shuffle_groups=False)
    assert not np.array_equal(val.load_image(0), image)
    with pytest.raises(ValueError, match="unknown scene kind 'forest'"):
        scenes.make_dataset(str(tmp_path / "c"), "forest")


def test_canopy_held_out_split_is_other_sites(tmp_path):
    # sites differ in their greens: the training tiles' mean colour is not the held-out tiles'
    result = scenes.make_dataset(str(tmp_path), "canopy", {"train": 6, "val": 6}, seed=1, image_size=128)
    train = CSVGenerator(result["train"], result["classes"], shuffle_groups=False)
    val = CSVGenerator(result["val"], result["classes"], shuffle_groups=False)
    looks = [scenes._site("canopy", site)["tint"] for site in range(2 * scenes.SITES_PER_SPLIT)]
    assert not np.allclose(looks[0], looks[scenes.SITES_PER_SPLIT])
    assert train.size() == val.size() == 6 and train.label_to_name(0) == "tree"
    # dense: many crowns per tile, some touching or overlapping
    counts = [len(train.load_annotations(i)["bboxes"]) for i in range(train.size())]
    assert min(counts) >= 5 and np.mean(counts) > 10


def test_shapes_are_large_and_contrasted():
    samples = _box_stats("shapes", count=6)
    for image, boxes, labels in samples:
        grey = image.astype(np.float32)
        for x1, y1, x2, y2 in boxes:
            cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
            inside = grey[cy - 2 : cy + 3, cx - 2 : cx + 3].reshape(-1, 3).mean(0)
            ring = np.concatenate([grey[max(y1 - 4, 0) : y1, x1:x2].reshape(-1, 3), grey[y2 : y2 + 4, x1:x2].reshape(-1, 3)])
            if len(ring):
                assert np.linalg.norm(inside - ring.mean(0)) > 25
    assert set(np.concatenate([labels for _, _, labels in samples]).tolist()) == {0, 1, 2}


def test_command_line_writes_a_dataset(tmp_path, capsys):
    assert scenes.main([str(tmp_path), "--kind", "clutter", "--train", "2", "--val", "1", "--size", "96"]) == 0
    assert "train:" in capsys.readouterr().out
    assert (tmp_path / "val.csv").exists() and len(list((tmp_path / "images").iterdir())) == 3
