"""retinanet-predict on synthetic images: annotated PNGs, CSV that reads back, COCO JSON, tiles, video."""
import json
import os

import cv2
import numpy as np
import pytest

from keras_retinanet.bin import predict
from keras_retinanet.inference import load_detector
from keras_retinanet.preprocessing.csv_generator import CSVGenerator
from keras_retinanet.utils.synthetic import SHAPE_CLASSES, write_classes, write_split
from tests.detector_model import BACKBONE, training_model

MIN_SIDE, MAX_SIDE = 128, 160
SCORE_THRESHOLD = 0.4


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A training snapshot, classes.csv, and a folder of 5 images (two sizes)."""
    root = tmp_path_factory.mktemp("predict")
    snapshot = root / "training.keras"
    training_model().save(str(snapshot))
    classes = write_classes(str(root / "classes.csv"))
    write_split(str(root), "a", 3, image_size=128, seed=1)
    write_split(str(root), "b", 2, image_size=(96, 144), seed=2)
    return {"snapshot": str(snapshot), "classes": classes, "images": str(root / "images"), "root": root}


@pytest.fixture(scope="module")
def detector(data):
    return load_detector(data["snapshot"], backbone=BACKBONE, image_min_side=MIN_SIDE, image_max_side=MAX_SIDE,
                         score_threshold=SCORE_THRESHOLD, max_detections=100)  # fmt: skip


def _args(data, *inputs, out, extra=()):
    return [data["snapshot"], *inputs, "--backbone", BACKBONE, "--classes", data["classes"],
            "--image-min-side", str(MIN_SIDE), "--image-max-side", str(MAX_SIDE),
            "--score-threshold", str(SCORE_THRESHOLD), "--output-dir", str(out), *extra]  # fmt: skip


def _csv_boxes(generator, path):
    paths = [os.path.normpath(generator.image_path(i)) for i in range(generator.size())]
    index = paths.index(os.path.abspath(path))
    return generator.load_annotations(index)


def test_folder_gives_annotated_pngs_a_csv_that_reads_back_and_coco_json(data, detector, tmp_path, capsys):
    out = tmp_path / "out"
    assert predict.main(_args(data, data["images"], out=out, extra=["--batch-size", "2"])) == 0
    names = sorted(os.listdir(data["images"]))
    assert len(names) == 5
    assert sorted(p for p in os.listdir(out) if p.endswith(".png")) == names
    assert "5 images" in capsys.readouterr().out

    generator = CSVGenerator(str(out / "detections.csv"), data["classes"], shuffle_groups=False)
    assert generator.size() == 5
    records = json.loads((out / "detections.json").read_text())
    images = json.loads((out / "images.json").read_text())
    assert [image["id"] for image in images] == [0, 1, 2, 3, 4]
    total = 0
    for image_id, name in enumerate(names):
        path = os.path.join(data["images"], name)
        expected = detector.predict(path)
        assert len(expected) > 0
        written = _csv_boxes(generator, path)
        np.testing.assert_allclose(written["bboxes"], expected.boxes, atol=0.006)
        np.testing.assert_array_equal(written["labels"], expected.labels)
        mine = [r for r in records if r["image_id"] == image_id]
        assert [r["category_id"] for r in mine] == expected.labels.tolist()
        np.testing.assert_allclose([r["score"] for r in mine], expected.scores, atol=1e-4)
        x, y, w, h = mine[0]["bbox"]
        np.testing.assert_allclose([x, y, x + w, y + h], expected.boxes[0], atol=0.011)
        total += len(expected)

        original, drawn = cv2.imread(path), cv2.imread(str(out / name))
        assert drawn.shape == original.shape and (drawn != original).any(axis=2).mean() > 0.01
    assert len(records) == total


def test_images_without_detections_are_written_as_empty_rows(data, tmp_path, capsys):
    out = tmp_path / "none"
    args = _args(data, os.path.join(data["images"], "a_*.png"), out=out, extra=["--no-images"])
    args[args.index("--score-threshold") + 1] = "0.9999"
    assert predict.main(args) == 0
    rows = (out / "detections.csv").read_text().splitlines()
    assert rows == [f"{os.path.relpath(os.path.join(data['images'], f'a_{i:05d}.png'), out)},,,,," for i in range(3)]
    assert json.loads((out / "detections.json").read_text()) == []
    assert not [p for p in os.listdir(out) if p.endswith(".png")]
    assert "3 images, 0 detections" in capsys.readouterr().out


def test_tiles_give_detections_in_full_image_coordinates(data, detector, tmp_path):
    rng_image = cv2.imread(os.path.join(data["images"], "a_00000.png"))
    wide = np.concatenate([rng_image, rng_image[:, ::-1]], axis=1)  # 128 x 256
    path = tmp_path / "wide.png"
    cv2.imwrite(str(path), wide)
    out = tmp_path / "tiles"
    args = [data["snapshot"], str(path), "--backbone", BACKBONE, "--tile", "128", "--tile-overlap", "0",
            "--classes", data["classes"],
            "--score-threshold", str(SCORE_THRESHOLD), "--output-dir", str(out), "--no-images"]  # fmt: skip
    assert predict.main(args) == 0
    generator = CSVGenerator(str(out / "detections.csv"), data["classes"], shuffle_groups=False)
    boxes = generator.load_annotations(0)["bboxes"]
    # tiles run at native resolution (min and max side default to the tile size)
    tiled = load_detector(data["snapshot"], backbone=BACKBONE, image_min_side=128, image_max_side=128,
                          score_threshold=SCORE_THRESHOLD, max_detections=100).predict_tiled(wide, 128, 0)  # fmt: skip
    np.testing.assert_allclose(boxes, tiled.boxes, atol=0.006)
    assert boxes[:, 2].max() > 128 and boxes[:, 0].min() < 128 and boxes.max() <= 256


def test_a_video_gives_an_annotated_video_and_rows_per_frame(data, tmp_path):
    video = tmp_path / "clip.mp4"
    frame = cv2.imread(os.path.join(data["images"], "a_00001.png"))
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5, (128, 128))
    for shift in range(3):
        writer.write(np.roll(frame, 8 * shift, axis=1))
    writer.release()
    out = tmp_path / "video"
    assert predict.main(_args(data, str(video), out=out)) == 0
    capture = cv2.VideoCapture(str(out / "clip_detections.mp4"))
    assert capture.isOpened() and int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    capture.release()
    names = {line.split(",")[0] for line in (out / "detections.csv").read_text().splitlines()}
    assert names == {f"{os.path.relpath(video, out)}#{i}" for i in range(3)}


def _error(capsys, args):
    assert predict.main(args) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    return lines[0].removeprefix("retinanet-predict: error: ")


def test_bad_input_gives_one_line_and_exit_1(data, tmp_path, capsys):
    out = tmp_path / "out"
    missing = os.path.join(data["images"], "missing.png")
    assert _error(capsys, _args(data, data["images"], missing, out=out)) == f"image not found: {missing}"

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    assert _error(capsys, _args(data, str(broken), out=out)) == (
        f"could not read image {broken}: not an image file, or corrupt"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    assert _error(capsys, _args(data, str(empty), out=out)).startswith(f"no images in folder {empty} (looked for .jpg")
    pattern = str(tmp_path / "*.jpeg")
    assert _error(capsys, _args(data, pattern, out=out)) == f"no file matches {pattern}"

    classes = tmp_path / "classes.csv"
    classes.write_text("rectangle,0\ncircle,zero\n")
    args = _args(data, data["images"], out=out)
    args[args.index("--classes") + 1] = str(classes)
    message = _error(capsys, args)
    assert message.startswith(f"invalid classes file: {classes}: line 2: malformed class ID")

    args = _args(data, data["images"], out=out)
    args[0] = str(tmp_path / "model.keras")
    assert _error(capsys, args) == f"model not found: {tmp_path / 'model.keras'}"
    assert not out.exists()  # nothing written before the inputs are checked
    assert SHAPE_CLASSES == ("rectangle", "circle", "triangle")


def test_the_pipeline_and_batching_write_what_one_image_at_a_time_writes(data, tmp_path):
    """--workers (threads reading and resizing ahead) and --batch-size change no output.

    (Bit for bit with the same batches: tests/test_inference.py; here batched against one at a
    time, equal as written: boxes with 2 decimals, scores with 4.)
    """
    outputs = {}
    for workers, batch in (("0", "1"), ("2", "3")):
        out = tmp_path / f"w{workers}b{batch}"
        assert predict.main(_args(data, data["images"], out=out,
                                  extra=["--no-images", "--workers", workers, "--batch-size", batch])) == 0  # fmt: skip
        outputs[workers] = [(out / name).read_text() for name in ("detections.csv", "detections.json", "images.json")]
    assert outputs["2"] == outputs["0"]
    names = list(dict.fromkeys(line.split(",")[0] for line in outputs["2"][0].splitlines()))
    assert [os.path.basename(name) for name in names] == sorted(os.listdir(data["images"]))  # the folder's order


def test_an_image_that_cannot_be_decoded_is_skipped_named_and_the_rest_kept_in_order(data, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    names = sorted(os.listdir(data["images"]))
    for name in names:
        (folder / name).write_bytes((data["root"] / "images" / name).read_bytes())
    cut = folder / "a_00001b.jpg"  # its header reads, its body is cut short: found only when decoding
    ok, encoded = cv2.imencode(".jpg", cv2.imread(str(folder / names[0])))
    cut.write_bytes(encoded.tobytes()[: len(encoded) // 2])
    out = tmp_path / "out"
    assert predict.main(_args(data, str(folder), out=out, extra=["--no-images", "--workers", "2", "--batch-size", "2"])) == 0
    captured = capsys.readouterr()
    assert f"could not read image {cut}: a JPEG cut short (no end marker): skipped" in captured.err
    assert "5 images" in captured.out and "1 unreadable images skipped" in captured.out
    rows = (out / "detections.csv").read_text().splitlines()
    written = list(dict.fromkeys(os.path.basename(line.split(",")[0]) for line in rows))
    assert written == names
    assert [image["id"] for image in json.loads((out / "images.json").read_text())] == [0, 1, 3, 4, 5]


def test_bad_pipeline_flags_are_usage_errors(data, tmp_path, capsys):
    for flags, message in ((["--workers", "-1"], "--workers must be >= 0, got -1"),
                           (["--batch-size", "0"], "--batch-size must be >= 1, got 0")):  # fmt: skip
        with pytest.raises(SystemExit) as exit_info:
            predict.main(_args(data, data["images"], out=tmp_path / "out", extra=flags))
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.filterwarnings("ignore:\\s*Warning. tf.lite.Interpreter is deprecated:UserWarning")
@pytest.mark.parametrize("name, extra", [("model.tflite", ["--input-size", "128", "128"]), ("saved_model", [])])
def test_exported_models_run_through_the_pipeline(data, tmp_path, name, extra):
    """TFLite (fixed input, one image per call) and SavedModel (batches of one original size)."""
    from keras_retinanet.bin import convert_model

    model = tmp_path / name
    assert convert_model.main([data["snapshot"], str(model), "--backbone", BACKBONE, "-q",
                               "--image-min-side", str(MIN_SIDE), "--image-max-side", str(MAX_SIDE), *extra]) == 0  # fmt: skip
    outputs = []
    for flags in (["--workers", "0", "--batch-size", "1"], ["--workers", "2", "--batch-size", "3"]):
        out = tmp_path / f"out{len(outputs)}"
        args = [str(model), data["images"], "--classes", data["classes"], "--score-threshold", str(SCORE_THRESHOLD),
                "--output-dir", str(out), "--no-images", *flags]  # fmt: skip
        assert predict.main(args) == 0
        outputs.append([(out / file).read_text() for file in ("detections.csv", "detections.json", "images.json")])
    assert outputs[1] == outputs[0]
    assert len(outputs[0][0].splitlines()) > 5  # detections in the 5 images


def test_a_folder_in_its_own_process_runs_whole_ops_two_calls_at_once_and_writes_the_same(data, tmp_path):
    """The real tool: TensorFlow's threads are set before its first op (utils.threads), and the
    outputs are those of one image at a time with TensorFlow's defaults (--workers 0)."""
    import subprocess
    import sys

    from keras_retinanet.utils import threads

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {k: v for k, v in os.environ.items() if k not in threads.TENSORFLOW_VARIABLES + (threads.ENVIRONMENT_VARIABLE,)}
    env["PYTHONPATH"] = repo
    outputs, logs = {}, {}
    for workers in ("0", "2"):
        out = tmp_path / f"w{workers}"
        command = [sys.executable, "-m", "keras_retinanet.bin.predict", "-v",
                   *_args(data, data["images"], out=out, extra=["--no-images", "--workers", workers])]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=repo)
        assert done.returncode == 0, done.stderr[-2000:]
        logs[workers] = done.stderr
        outputs[workers] = [(out / name).read_text() for name in ("detections.csv", "detections.json", "images.json")]
    assert outputs["2"] == outputs["0"]
    assert "TensorFlow threads: its defaults" in logs["0"]
    if threads.usable_cores() <= threads.MAX_CORES:  # a MobileNet at 160 px on a small machine
        cores = threads.usable_cores()
        assert f"TensorFlow threads: 1 per op, {cores} ops at once" in logs["2"]
