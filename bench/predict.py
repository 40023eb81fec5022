"""retinanet-predict's throughput on a folder of images, against a plain predict_on_batch loop.

Both sides run the same inference model (the one ``inference.load_detector`` makes of
MODEL: a training snapshot converted, batch normalisation folded) on the same images, each
in its own process, so each has the TensorFlow threads it would have on its own:

- **plain loop**: what a user writes from the old README, one image at a time in one
  thread, with TensorFlow's default threads (a subprocess that the rounds drive): ``read_image_bgr`` -> ``preprocess_image`` -> ``resize_image`` ->
  ``model.predict_on_batch(x[None])`` -> scores above the threshold, boxes / scale,
  clipped to the image;
- **retinanet-predict**: the tool's own ``run`` (``bin/predict.py``) with the flags given
  here (``--batch-size``, ``--workers``; ``--no-images`` unless ``--draw``): images read,
  decoded and resized ahead in threads, batched by resized size, the model in its own
  thread, the CSV / COCO JSON rows (and annotated PNGs with ``--draw``) written as the
  detections come; the output files are written too (into a temporary folder). The tool
  sets TensorFlow's threads for throughput where that was measured faster
  (``utils.threads``: a MobileNet at most 640 px on 2 cores gets whole ops, two model
  calls at once); the line "threads:" says what it did.

The detections of the two sides are asserted identical (same count and labels per image,
boxes within 1e-3 px, scores within 1e-5). Rounds are interleaved (plain, tool, then the
other way round) so both see the same background load; prints median images/s (min, max)
of each, the median of the per-round ratios, and where the plain loop's time goes, step by
step, plus the model alone at the tool's batch size. The load average at the start and the
end says what ran beside.

Models: ``--model`` a ``.keras`` snapshot or inference model (for instance a detector trained
by retinanet-train, with its images in ``--images``); without ``--model``, a ResNet-50
RetinaNet with random (He-initialised, so that detections vary) weights and ``--classes``
classes, on ``--count`` synthetic JPEG photos of ``--size H W`` at the default sizes 800/1333
unless ``--image-min-side/--image-max-side`` say otherwise.

Usage::

    python bench/predict.py --model crowns.keras --images crowns/images [--count 64]
                            [--runs 3] [--batch-size 4] [--workers 2] [--draw]
    python bench/predict.py --size 480 640 --image-min-side 480 --image-max-side 640 --count 16
"""
import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402

BOX_TOLERANCE = 1e-3  # px
SCORE_TOLERANCE = 1e-5
JPEG_QUALITY = 90


def parse_args(args=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help=".keras model (default: ResNet-50 RetinaNet with random weights)")
    parser.add_argument("--images", help="folder of images (default: --count synthetic JPEG photos of --size)")
    parser.add_argument("--count", type=int, default=64, help="images (the first COUNT of the folder; default 64)")
    parser.add_argument("--size", type=int, nargs=2, default=(480, 640), metavar=("H", "W"),
                        help="synthetic photo size (default 480 640)")  # fmt: skip
    parser.add_argument("--classes", type=int, default=80, help="classes of the random ResNet-50 (default 80)")
    parser.add_argument("--image-min-side", type=int, help="passed to retinanet-predict (default: the model's)")
    parser.add_argument("--image-max-side", type=int, help="passed to retinanet-predict (default: the model's)")
    parser.add_argument("--score-threshold", type=float, default=0.5, help="both sides (default 0.5)")
    parser.add_argument("--max-detections", type=int, default=100, help="both sides (default 100)")
    parser.add_argument("--batch-size", type=int, default=4, help="retinanet-predict --batch-size (default 4)")
    parser.add_argument("--workers", type=int, default=2, help="retinanet-predict --workers (default 2)")
    parser.add_argument("--draw", action="store_true", help="retinanet-predict writes annotated PNGs too")
    parser.add_argument("--runs", type=int, default=3, help="timed rounds (default 3)")
    parser.add_argument("--model-threads", type=int, help="inference.MODEL_THREADS (model calls at once)")
    parser.add_argument("--plain-server", metavar="FOLDER", help=argparse.SUPPRESS)  # internal: the plain side
    return parser.parse_args(args)


def _synthetic_photos(folder, count, size, seed=0):
    """``count`` JPEGs of ``size`` with a few shapes each (utils.synthetic's drawing)."""
    import cv2

    from keras_retinanet.utils.synthetic import make_image

    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for index in range(count):
        image = make_image(rng, size[0], size[1], int(rng.integers(3, 12)), 24, min(size) // 3)[0]
        noise = rng.normal(0, 12, image.shape)  # texture, so the JPEGs are photo-like to decode
        image = np.clip(image + noise, 0, 255).astype(np.uint8)
        cv2.imwrite(os.path.join(folder, f"photo_{index:04d}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    return folder


def _random_resnet50(path, num_classes):
    """A ResNet-50 RetinaNet training snapshot with He-initialised weights (tests.detector_model)."""
    from tests.detector_model import training_model

    training_model(backbone="resnet50", num_classes=num_classes).save(path)
    return path


def plain_loop(model, paths, preprocess_mode, min_side, max_side, score_threshold, max_detections, steps=None):
    """Detections of each image, one at a time: [(boxes, scores, labels)]; ``steps`` gets seconds per step."""
    from keras_retinanet.utils.image import preprocess_image, read_image_bgr, resize_image

    clock = time.perf_counter
    results = []
    for path in paths:
        t0 = clock()
        image = read_image_bgr(path)
        t1 = clock()
        x = preprocess_image(image, mode=preprocess_mode)
        t2 = clock()
        x, scale = resize_image(x, min_side=min_side, max_side=max_side)
        t3 = clock()
        boxes, scores, labels = model.predict_on_batch(x[None])[:3]
        t4 = clock()
        keep = np.flatnonzero(scores[0] > score_threshold)[:max_detections]
        height, width = image.shape[:2]
        found = np.clip(boxes[0][keep] / scale, 0, [width, height, width, height]).astype(np.float32)
        results.append((found, scores[0][keep], labels[0][keep]))
        t5 = clock()
        if steps is not None:
            for name, seconds in zip(STEPS, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
                steps[name] = steps.get(name, 0.0) + seconds
    return results


STEPS = ("read + decode", "preprocess", "resize", "predict_on_batch (model, NMS inside)", "postprocess")


def tool_run(predict, argv, detector, paths):
    """retinanet-predict's ``run`` over ``paths`` with ``argv``'s flags; its detections by image, in order."""
    args = predict.parse_args(argv)
    plan, image_outputs, _ = predict.plan_outputs(args, paths, [])
    outputs = predict.Outputs(args, predict.label_names_of(detector, None), plan=plan)
    found = []
    add = outputs.add

    def keep(key, image, detections):
        found.append(detections)
        add(key, image, detections)

    outputs.add = keep
    predict.run(args, detector, paths, [], outputs, image_outputs)
    outputs.close()
    return found


def threading_note(detector):
    """How this process's TensorFlow threads were set (``utils.threads``) and the detector's model calls."""
    from keras_retinanet.utils import threads

    chosen = threads.chosen_threads()
    calls = detector.model_calls
    if chosen is None:
        return f"TensorFlow's defaults, {calls} model call(s) at once"
    return f"{chosen[0]} thread per op, {chosen[1]} ops at once, {calls} model calls at once"


def check_identical(plain, tool, paths):
    """AssertionError naming the first image whose detections differ.

    Detections whose scores tie within SCORE_TOLERANCE may come in either order (a batch of
    several images rounds differently from one image alone), so each image's detections are
    compared as sets: every plain detection must have a tool detection of the same label
    with its score and box within the tolerances, one to one.
    """
    assert len(plain) == len(tool) == len(paths), (len(plain), len(tool), len(paths))
    for path, (boxes, scores, labels), detections in zip(paths, plain, tool):
        where = os.path.basename(path)
        assert len(scores) == len(detections), f"{where}: {len(scores)} detections plain, {len(detections)} tool"
        close = (
            (labels[:, None] == detections.labels[None, :])
            & (np.abs(scores[:, None] - detections.scores[None, :]) <= SCORE_TOLERANCE)
            & (np.abs(boxes[:, None, :] - detections.boxes[None, :, :]) <= BOX_TOLERANCE).all(axis=-1)
        )
        taken = np.zeros(len(detections), bool)
        for row in range(len(scores)):  # a few hundred detections at most: greedy one-to-one matching
            free = np.flatnonzero(close[row] & ~taken)
            assert len(free), f"{where}: plain detection {row} (label {labels[row]}, score {scores[row]:.6f}, box {boxes[row]}) has no match"
            taken[free[0]] = True


def plain_server(args):
    """The plain side in its own process, with TensorFlow's default threads (what a user's loop gets).

    Loads the model as retinanet-predict would for one image, then answers one line per
    command on standard input: ``run`` (the loop over the images; their detections are
    pickled to ``<FOLDER>/plain.pkl``) and ``steps`` (the loop with its time per step),
    with one JSON line each: seconds, steps.
    """
    import json
    import pickle

    from keras_retinanet.bin import predict

    predict_args = predict.parse_args([args.model, args.images, "-q"] + _side_flags(args))
    detector = predict.load(predict_args)
    spec = detector.spec
    paths = predict.collect_inputs([args.images])[0][: args.count]
    print(json.dumps({"ready": True}), flush=True)
    for command in sys.stdin:
        steps = {} if command.strip() == "steps" else None
        start = time.perf_counter()
        found = plain_loop(
            detector.runner.model, paths, spec.preprocess_mode, spec.image_min_side, spec.image_max_side,
            args.score_threshold, args.max_detections, steps,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        with open(os.path.join(args.plain_server, "plain.pkl"), "wb") as file:
            pickle.dump(found, file)
        print(json.dumps({"seconds": seconds, "steps": steps}), flush=True)
    return 0


class PlainSide:
    """The plain loop in a subprocess (``plain_server``): ``run()`` -> (seconds, detections); ``steps()``."""

    def __init__(self, args, model_path, folder, work):
        import subprocess

        self.work = work
        command = [sys.executable, os.path.abspath(__file__), "--plain-server", work, "--model", model_path,
                   "--images", folder, "--count", str(args.count), "--score-threshold", str(args.score_threshold),
                   "--max-detections", str(args.max_detections)] + _side_flags(args)  # fmt: skip
        env = dict(os.environ, KERAS_RETINANET_THREADS="tensorflow")
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self._answer()

    def _answer(self):
        import json

        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the plain side stopped (exit status {self.process.wait()})")
        return json.loads(line)

    def _ask(self, command):
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._answer()

    def run(self):
        import pickle

        seconds = self._ask("run")["seconds"]
        with open(os.path.join(self.work, "plain.pkl"), "rb") as file:
            return seconds, pickle.load(file)

    def steps(self):
        return self._ask("steps")["steps"]

    def close(self):
        self.process.stdin.close()
        self.process.wait()


def _side_flags(args):
    flags = []
    for flag in ("image_min_side", "image_max_side"):
        if getattr(args, flag) is not None:
            flags += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    return flags


def main(argv=None):
    from keras_retinanet.utils.allocator import keep_freed_memory

    args = parse_args(argv)
    keep_freed_memory()  # both sides: as the tools do (a plain loop is given the same allocator settings)
    if args.plain_server:
        return plain_server(args)
    load_start = os.getloadavg()
    from keras_retinanet import inference
    from keras_retinanet.bin import predict

    if args.model_threads is not None:
        inference.MODEL_THREADS = args.model_threads
    work = tempfile.mkdtemp(prefix="bench_predict_")
    try:
        folder = args.images or _synthetic_photos(os.path.join(work, "photos"), args.count, args.size)
        paths = predict.collect_inputs([folder])[0][: args.count]
        model_path = args.model or _random_resnet50(os.path.join(work, "resnet50.keras"), args.classes)
        out = os.path.join(work, "out")
        argv = [model_path, folder, "--output-dir", out, "--overwrite", "-q",
                "--score-threshold", str(args.score_threshold), "--max-detections", str(args.max_detections),
                "--batch-size", str(args.batch_size), "--workers", str(args.workers)]  # fmt: skip
        argv += ([] if args.draw else ["--no-images"]) + _side_flags(args)
        tool_args = predict.parse_args(argv)
        predict.set_verbosity(tool_args)
        detector = predict.load(tool_args, many_images=tool_args.workers > 0)  # as the tool does on a folder
        spec = detector.spec
        model = detector.runner.model
        plain_side = PlainSide(args, model_path, folder, work)  # the same model file, TensorFlow's threads
        tool = lambda: tool_run(predict, argv, detector, paths)  # noqa: E731

        import cv2

        first = cv2.imread(paths[0])
        print(f"{len(paths)} images from {folder} ({first.shape[1]}x{first.shape[0]} first), model {model_path} "
              f"({spec.backbone}, {spec.num_classes} classes, min/max side {spec.image_min_side}/{spec.image_max_side})")  # fmt: skip
        print(f"retinanet-predict {' '.join(argv[1:])}")
        threads = threading_note(detector)
        print(f"threads: plain loop TensorFlow's defaults; retinanet-predict {threads}")
        check_identical(plain_side.run()[1], tool(), paths)  # warm-up of both sides (traces the batch shapes) and the check
        plain_rates, tool_rates, ratios = [], [], []
        for round_index in range(args.runs):
            order = ("plain", "tool") if round_index % 2 == 0 else ("tool", "plain")
            rates = {}
            for name in order:
                if name == "tool":
                    start = time.perf_counter()
                    tool_found = tool()
                    rates[name] = len(paths) / (time.perf_counter() - start)
                else:
                    seconds, plain_found = plain_side.run()
                    rates[name] = len(paths) / seconds
            check_identical(plain_found, tool_found, paths)
            plain_rates.append(rates["plain"])
            tool_rates.append(rates["tool"])
            ratios.append(rates["tool"] / rates["plain"])
            print(f"round {round_index + 1}: plain {rates['plain']:.2f} images/s, "
                  f"retinanet-predict {rates['tool']:.2f} images/s ({ratios[-1]:.2f}x)", flush=True)  # fmt: skip

        steps = plain_side.steps()
        plain_side.close()
        busy = []  # seconds of each model call in one more run of the tool
        run_batch = detector.runner.run

        def timed_run(*batch):
            start = time.perf_counter()
            outputs = run_batch(*batch)
            busy.append(time.perf_counter() - start)
            return outputs

        detector.runner.run = timed_run
        start = time.perf_counter()
        tool()
        tool_seconds = time.perf_counter() - start
        detector.runner.run = run_batch
        prepared = [detector.runner.prepare(cv2.imread(p))[0] for p in paths[: args.batch_size]]
        same = all(p.shape == prepared[0].shape for p in prepared)
        model_batch = None
        if same:
            stacked = np.stack(prepared)
            model.predict_on_batch(stacked)
            start = time.perf_counter()
            for _ in range(3):
                model.predict_on_batch(stacked)
            model_batch = (time.perf_counter() - start) / (3 * len(prepared))

        def line(name, rates):
            return (f"{name}: {statistics.median(rates):.2f} images/s "
                    f"(min {min(rates):.2f}, max {max(rates):.2f})")  # fmt: skip

        print(line("plain predict_on_batch loop", plain_rates))
        print(line(f"retinanet-predict (--batch-size {args.batch_size} --workers {args.workers})", tool_rates))
        print(f"ratio: {statistics.median(ratios):.2f}x (per round {min(ratios):.2f}-{max(ratios):.2f}); "
              f"detections identical (boxes within {BOX_TOLERANCE:g} px, scores within {SCORE_TOLERANCE:g})")
        total = sum(steps.values())
        print("plain loop, where the time goes (ms per image):")
        for name in STEPS:
            print(f"  {name:40s} {steps[name] / len(paths) * 1000:8.1f}  ({steps[name] / total:5.1%})")
        if model_batch is not None:
            print(f"  model alone at batch {len(prepared)}, one call at a time, retinanet-predict's threads: "
                  f"{model_batch * 1000:.1f} ms per image")
        print(f"retinanet-predict: {tool_seconds / len(paths) * 1000:.1f} ms per image, of which the model thread "
              f"was busy {sum(busy) / tool_seconds:.0%} ({len(busy)} calls, {sum(busy) / len(paths) * 1000:.1f} ms "
              "per image)")  # fmt: skip
        print(f"load average: {load_start[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end "
              f"({os.cpu_count()} cores)")  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
