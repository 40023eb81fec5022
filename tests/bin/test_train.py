"""retinanet-train end to end on tiny synthetic data (small backbone, 128 px images)."""
import os
import re
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from keras_retinanet import models
from keras_retinanet.bin import train

BACKBONE = "mobilenet128_0.25"


def _args(dataset, snapshots, *extra, epochs=2, steps=3, lr="1e-3"):
    lr = ["--lr", lr] if lr else []
    return [
        "--no-weights",
        "--backbone", BACKBONE,
        "--batch-size", "2",
        "--epochs", str(epochs),
        "--steps", str(steps),
        *lr,
        "--image-min-side", "128",
        "--image-max-side", "128",
        "--snapshot-path", str(snapshots),
        "--tensorboard-dir", "",
        "--seed", "1",
        *extra,
        "csv", dataset["train"], dataset["classes"],
    ]  # fmt: skip


def _summaries(out):
    """The per-epoch summary lines of the tool's output."""
    return [line for line in out.splitlines() if re.match(r"epoch \d+ \| ", line)]


@pytest.fixture(scope="module")
def trained(shapes_dataset, tmp_path_factory):
    """Two short epochs with validation mAP; returns (snapshot folder, captured stdout lines)."""
    snapshots = tmp_path_factory.mktemp("snapshots")
    args = _args(shapes_dataset, snapshots)
    args += ["--val-annotations", shapes_dataset["val"]]
    # a smaller FPN and heads than the default 256 x 4, as bench/train_synthetic.py uses
    # and a warmup longer than the first epoch (3 steps)
    args[args.index("csv"):args.index("csv")] = ["--feature-size", "32", "--head-depth", "2", "--warmup-steps", "4"]
    return snapshots, args


@pytest.mark.slow
def test_train_writes_snapshots_that_load_convert_and_predict(trained, capsys, shapes_dataset):
    snapshots, args = trained
    assert train.main(args) == 0
    out = capsys.readouterr().out
    assert sorted(os.listdir(snapshots)) == [f"{BACKBONE}_csv_01.keras", f"{BACKBONE}_csv_02.keras",
                                             f"{BACKBONE}_csv_log.csv"]  # fmt: skip
    # one summary line per epoch with losses, validation mAP and throughput
    summaries = _summaries(out)
    assert len(summaries) == 2
    assert re.search(r"epoch 2 \| .*loss \d+\.\d+ .*\| mAP \d\.\d{4} \| lr .* images/s", summaries[1])
    # warmup: the last step of epoch 1 (step 2 of 4) ran at 1e-3 * (0.001 + 0.999 * 3 / 4)
    assert "| lr 7.50e-04 |" in summaries[0] and "| lr 1.00e-03 |" in summaries[1]

    model = keras.models.load_model(str(snapshots / f"{BACKBONE}_csv_02.keras"))
    assert model.get_layer("P3").output.shape[-1] == 32
    head = model.get_layer("classification_submodel")
    assert [l.filters for l in head.layers if isinstance(l, keras.layers.Conv2D)] == [32, 32, 27]
    assert [o.name for o in model.outputs] == ["regression", "classification"] or model.output_names == [
        "regression",
        "classification",
    ]
    inference = models.convert_model(model)
    image = np.random.default_rng(0).uniform(-1, 1, (1, 128, 128, 3)).astype(np.float32)
    boxes, scores, labels = inference.predict_on_batch(image)[:3]
    assert boxes.shape == (1, 300, 4) and scores.shape == (1, 300) and labels.shape == (1, 300)


@pytest.mark.slow
def test_resume_continues_epochs_optimizer_and_loss(shapes_dataset, tmp_path, capsys):
    snapshots = tmp_path / "snaps"
    assert train.main(_args(shapes_dataset, snapshots, "--no-evaluation", epochs=2, steps=4)) == 0
    first = _summaries(capsys.readouterr().out)
    assert [l.split(" |")[0] for l in first] == ["epoch 1", "epoch 2"]
    last = snapshots / f"{BACKBONE}_csv_02.keras"
    saved = keras.models.load_model(str(last))
    iterations = int(saved.optimizer.iterations.numpy())
    assert iterations == 8

    # no --lr: a fresh optimiser would run at the default 1e-5, the resumed one goes on at 1e-3
    resume = _args(shapes_dataset, snapshots, "--no-evaluation", "--snapshot", str(last), epochs=4, steps=4, lr=None)
    resume.remove("--no-weights")
    assert train.main(resume) == 0
    second = _summaries(capsys.readouterr().out)
    assert [l.split(" |")[0] for l in second] == ["epoch 3", "epoch 4"]
    assert "| lr 1.00e-03 |" in second[0]
    assert [n for n in sorted(os.listdir(snapshots)) if n.endswith(".keras")][-2:] == [
        f"{BACKBONE}_csv_03.keras", f"{BACKBONE}_csv_04.keras"]  # fmt: skip
    epochs = [line.split(",")[0] for line in (snapshots / f"{BACKBONE}_csv_log.csv").read_text().splitlines()]
    assert epochs[0] == "epoch" and epochs[1:] == ["1", "2", "3", "4"]  # the resumed run appended to the log
    final = keras.models.load_model(str(snapshots / f"{BACKBONE}_csv_04.keras"))
    assert int(final.optimizer.iterations.numpy()) == 16  # the optimiser state went on

    # training went on from the epoch-2 weights: epoch 3 lies a few steps from them, while a
    # restart (same seed) would have retraced epoch 1
    def weights(epoch):
        model = keras.models.load_model(str(snapshots / f"{BACKBONE}_csv_{epoch:02d}.keras"))
        return np.concatenate([np.ravel(w.numpy()) for w in model.trainable_weights])

    w1, w2, w3 = weights(1), weights(2), weights(3)
    assert np.linalg.norm(w3 - w2) < 0.8 * np.linalg.norm(w3 - w1)
    assert all(np.isfinite(float(re.search(r"\| loss (\d+\.\d+)", l).group(1))) for l in second)


def test_resuming_refuses_flags_the_snapshot_decides_and_takes_a_given_lr(shapes_dataset, tmp_path, capsys):
    snapshots = tmp_path / "snaps"
    assert train.main(_args(shapes_dataset, snapshots, "--no-evaluation", epochs=1, steps=2)) == 0
    capsys.readouterr()
    last = snapshots / f"{BACKBONE}_csv_01.keras"

    def resume(*flags, epochs=2):
        args = _args(shapes_dataset, snapshots, "--no-evaluation", "--snapshot", str(last), *flags, epochs=epochs,
                     steps=2, lr=None)  # fmt: skip
        args.remove("--no-weights")
        return train.main(args), capsys.readouterr()

    for flags, saved in (
        (["--optimizer", "sgd"], "adam"),
        (["--box-loss", "giou"], "smooth_l1"),
        (["--optimizer-clipnorm", "10"], "0.001"),
        (["--weight-decay", "0.01"], "none"),
    ):
        status, captured = resume(*flags)
        assert status == 1
        assert captured.err.strip() == (
            f"retinanet-train: error: {flags[0]} {flags[1] if flags[0] != '--optimizer-clipnorm' else '10.0'}: "
            f"snapshot {last} resumes with its own ({saved}) as saved; drop {flags[0]}, or start a new run from its "
            f"weights with --weights {last}"
        )
    # agreeing flags are fine, and a given --lr replaces the saved rate (the plateau schedule goes on from it)
    status, captured = resume("--optimizer", "adam", "--box-loss", "smooth_l1", "--lr", "5e-4")
    assert status == 0, captured.err
    assert f"--lr 0.0005 replaces the learning rate 0.001 saved in {last}" in captured.out + captured.err
    assert "| lr 5.00e-04 |" in _summaries(captured.out)[0]


def _error(capsys, args):
    assert train.main(args) == 1
    return capsys.readouterr().err.strip()


def test_clear_errors_before_training(shapes_dataset, tmp_path, capsys):
    base = _args(shapes_dataset, tmp_path / "s")
    missing = base[:-3] + ["csv", str(tmp_path / "nope.csv"), shapes_dataset["classes"]]
    assert _error(capsys, missing) == f"retinanet-train: error: annotations file not found: {tmp_path / 'nope.csv'}"

    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("images/train_00000.png,10,10,5,40,circle\n")
    message = _error(capsys, base[:-3] + ["csv", str(bad_csv), shapes_dataset["classes"]])
    assert str(bad_csv) in message and "line 1" in message and "x2 (5) must be higher than x1 (10)" in message

    unknown = list(base)
    unknown[unknown.index(BACKBONE)] = "resnet9000"
    message = _error(capsys, unknown)
    assert "resnet9000" in message and "resnet50" in message and "mobilenet128_0.25" in message

    empty = tmp_path / "empty.csv"
    empty.write_text("")
    message = _error(capsys, base[:-3] + ["csv", str(empty), shapes_dataset["classes"]])
    assert "no images" in message


@pytest.mark.slow
def test_snapshot_of_the_wrong_kind_is_refused(shapes_dataset, tmp_path, capsys):
    model = models.backbone(BACKBONE).retinanet(3)
    inference_path = tmp_path / "inference.keras"
    models.convert_model(model).save(str(inference_path))
    args = _args(shapes_dataset, tmp_path / "s", "--snapshot", str(inference_path))
    args.remove("--no-weights")
    message = _error(capsys, args)
    assert f"snapshot {inference_path} is not a training model" in message


def test_batch_size_must_cover_the_replicas(capsys):
    with pytest.raises(SystemExit):
        train.parse_args(["--multi-gpu", "2", "--batch-size", "1", "csv", "a", "b"])
    assert "--batch-size (1) must be >= --multi-gpu (2)" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--feature-size", "0"], "--feature-size must be >= 1, got 0"),
        (["--head-depth", "-1"], "--head-depth must be >= 0, got -1"),
        (["--warmup-steps", "-5"], "--warmup-steps must be >= 0, got -5"),
        (
            ["--snapshot", "s.keras", "--feature-size", "64"],
            "--feature-size, --head-depth and --backbone-norm shape a new model; a --snapshot keeps the architecture it "
            "was saved with",
        ),
        (["--snapshot", "s.keras", "--backbone-norm", "group"], "--backbone-norm shape a new model"),
        (["--backbone-norm", "layer"], "argument --backbone-norm: invalid choice: 'layer'"),
        (["--time-limit", "0"], "--time-limit must be > 0 minutes, got 0.0"),
        (
            ["--snapshot", "s.keras", "--fit-anchors"],
            "--fit-anchors shapes a new model's anchors; a --snapshot keeps the anchors it was trained with",
        ),
        (["--head-norm", "batch"], "argument --head-norm: invalid choice: 'batch'"),
        (["--preset", "fast"], "argument --preset: invalid choice: 'fast'"),
    ],
)
def test_model_size_and_warmup_flags_are_checked(capsys, flags, message):
    with pytest.raises(SystemExit) as exit_info:
        train.parse_args([*flags, "csv", "a", "b"])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_backbone_norm_group_trains_and_is_kept_in_the_snapshot(shapes_dataset, tmp_path, capsys):
    from keras_retinanet.layers import BackboneGroupNormalization
    from keras_retinanet.spec import read_keras_spec

    args = _args(shapes_dataset, tmp_path, "--backbone-norm", "group", epochs=1, steps=2)
    assert train.main(args) == 0
    snapshot = tmp_path / f"{BACKBONE}_csv_01.keras"
    assert read_keras_spec(snapshot).backbone_norm == "group"
    model = keras.saving.load_model(snapshot, compile=False)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
    assert sum(isinstance(layer, BackboneGroupNormalization) for layer in model.layers) == 27
    assert re.search(r"epoch 1 \| .*loss", capsys.readouterr().out)


def test_a_group_norm_backbone_on_imagenet_weights_gets_a_note():
    from keras_retinanet.training import initial_weights_notes

    (note,) = initial_weights_notes(train.parse_args(["--backbone-norm", "group", "csv", "a", "b"]))
    assert "--backbone-norm group with ImageNet weights" in note and "--no-weights" in note
    for flags in (["--backbone-norm", "group", "--no-weights"], ["--preset", "scratch"], ["--backbone-norm", "batch"],
                  ["--backbone-norm", "group", "--weights", "w.h5"], []):  # fmt: skip
        assert initial_weights_notes(train.parse_args([*flags, "csv", "a", "b"])) == [], flags


def test_a_preset_sets_defaults_that_flags_override():
    from keras_retinanet.presets import PRESETS

    preset = train.parse_args(["--preset", "scratch", "csv", "a", "b"])
    for dest, value in PRESETS["scratch"]["flags"].items():
        assert getattr(preset, dest) == value, dest
    assert preset.imagenet_weights is False and preset.fit_anchors is True and preset.head_norm == "group"
    given = train.parse_args(["--preset", "scratch", "--lr", "0.02", "--no-fit-anchors", "--head-norm", "none", "csv", "a", "b"])
    assert (given.lr, given.fit_anchors, given.head_norm, given.box_loss) == (0.02, False, "none", "giou")
    # resuming with the preset: the snapshot keeps its architecture and anchors, the rest applies
    resumed = train.parse_args(["--preset", "scratch", "--snapshot", "s.keras", "csv", "a", "b"])
    assert (resumed.backbone, resumed.feature_size, resumed.fit_anchors, resumed.backbone_norm) == (None, None, False, None)
    assert (resumed.lr, resumed.lr_schedule, resumed.optimizer_clipnorm) == (1e-3, "cosine", 10.0)
    plain = train.parse_args(["csv", "a", "b"])
    assert (plain.lr, plain.fit_anchors, plain.head_norm, plain.box_loss, plain.optimizer, plain.backbone_norm) == (
        1e-5, False, None, "smooth_l1", "adam", None
    )
    assert plain.steps is None  # one pass over the training set


def test_fitted_anchors_reach_the_generators_and_the_spec(tmp_path):
    from keras_retinanet.preprocessing.csv_generator import CSVGenerator
    from keras_retinanet.spec import DetectorSpec
    from keras_retinanet.training import fit_run_anchors, upscaling_notes
    from keras_retinanet.utils import synthetic

    paths = synthetic.make_dataset(
        str(tmp_path), {"train": 12, "val": 4}, image_size=160, min_size=14, max_size=20, min_objects=3, max_objects=5
    )
    train_generator = CSVGenerator(paths["train"], paths["classes"], image_min_side=160, image_max_side=160)
    val_generator = CSVGenerator(paths["val"], paths["classes"], image_min_side=160, image_max_side=160)
    spec, note = fit_run_anchors(DetectorSpec(backbone="mobilenet128_0.25"), train_generator, val_generator)
    sizes = spec.anchors.sizes
    assert sizes[0] <= 16 and train_generator.anchor_params.sizes == list(sizes) == val_generator.anchor_params.sizes
    unmatched = re.search(r"boxes without a positive anchor (\d+) -> (\d+) of (\d+)", note)
    before, after, total = (int(v) for v in unmatched.groups())
    assert before > total / 2 and after < total / 8  # 14-20 px boxes: the default 32 px anchors miss most

    # the default 800 / 1333 sides would enlarge these 160 px images x5: a note says so
    default_spec = DetectorSpec(image_min_side=800, image_max_side=1333, no_resize=False)
    notes = upscaling_notes(train_generator, default_spec)
    assert len(notes) == 1 and "about 160x160 px" in notes[0] and "x5.0" in notes[0]
    assert "--image-min-side 160 --image-max-side 160" in notes[0]
    assert upscaling_notes(train_generator, default_spec, given=True) == []
    assert upscaling_notes(train_generator, DetectorSpec(image_min_side=160, image_max_side=160)) == []


MIRRORED_SCRIPT = textwrap.dedent(
    """
    import os, sys, json
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import numpy as np, tensorflow as tf, keras
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from keras_retinanet import models, training
    from keras_retinanet.preprocessing.csv_generator import CSVGenerator
    from keras_retinanet.preprocessing.pipeline import build_dataset

    backbone = models.backbone("mobilenet128_0.25")
    gen = CSVGenerator(sys.argv[1], sys.argv[2], batch_size=4, image_min_side=128, image_max_side=128,
                       preprocess_image=backbone.preprocess_image, shuffle_groups=False)
    images, targets = next(iter(build_dataset(gen, shuffle=False)))
    keras.utils.set_random_seed(3)
    single = backbone.retinanet(3, freeze_bn=True)
    weights = single.get_weights()
    training.compile_training_model(single, lr=1e-4)
    strategy = training.create_strategy("mirrored")
    assert strategy.num_replicas_in_sync == 2, strategy.num_replicas_in_sync
    with strategy.scope():
        mirrored = backbone.retinanet(3, freeze_bn=True)
        mirrored.set_weights(weights)
        training.compile_training_model(mirrored, lr=1e-4)
    data = tf.data.Dataset.from_tensors((images, targets))
    one = single.evaluate(data, verbose=0, return_dict=True)
    two = mirrored.evaluate(data, verbose=0, return_dict=True)
    history = mirrored.fit(data.repeat(), steps_per_epoch=2, epochs=1, verbose=0)
    print(json.dumps({"one": one, "two": two, "fit_loss": history.history["loss"][-1]}))
    """
)


@pytest.mark.slow
def test_mirrored_strategy_on_two_cpus_gives_the_single_device_loss(shapes_dataset, tmp_path):
    import json

    script = tmp_path / "mirrored.py"
    script.write_text(MIRRORED_SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run(
        [sys.executable, str(script), shapes_dataset["train"], shapes_dataset["classes"]],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["one"]["loss"] > 0
    np.testing.assert_allclose(figures["two"]["loss"], figures["one"]["loss"], rtol=1e-4)
    np.testing.assert_allclose(
        figures["two"]["classification_loss"], figures["one"]["classification_loss"], rtol=1e-4
    )
    assert np.isfinite(figures["fit_loss"])


@pytest.mark.parametrize(
    "variable, value", [("KERAS_RETINANET_THREADS", "tensorlfow"), ("KERAS_RETINANET_MALLOC", "sytem")]
)
def test_a_mistyped_environment_setting_stops_the_tool_in_one_line(shapes_dataset, tmp_path, variable, value):
    env = dict(os.environ, PYTHONPATH=os.getcwd(), **{variable: value})
    args = _args(shapes_dataset, tmp_path / "snapshots", epochs=1, steps=1)
    done = subprocess.run([sys.executable, "-m", "keras_retinanet.bin.train", *args], capture_output=True, text=True,
                          env=env, timeout=600)  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"retinanet-train: error: {variable}='{value}' is not a setting: use "
        + ("'tensorflow' (TensorFlow's default threads) or 'auto' (the package's choice)" if variable.endswith("THREADS")
           else "'system' (glibc's defaults) or 'keep' (keep freed memory for reuse)")
        + ", or leave it unset"
    )  # fmt: skip
    assert not (tmp_path / "snapshots").exists()


@pytest.mark.parametrize("environ, expected", [({}, "ops at once"), ({"KERAS_RETINANET_THREADS": "tensorflow"}, "its defaults")])
def test_a_small_mobilenet_trains_with_whole_ops_two_at_once(shapes_dataset, tmp_path, environ, expected):
    """In its own process (as a user runs it) retinanet-train sets TensorFlow's threads before
    its first op (utils.threads) -- also with --strategy, whose creation starts TensorFlow."""
    from keras_retinanet.utils import threads

    if threads.usable_cores() > threads.MAX_CORES and not environ:
        pytest.skip("the rule keeps TensorFlow's defaults on this machine")
    env = {k: v for k, v in os.environ.items() if k not in threads.TENSORFLOW_VARIABLES + (threads.ENVIRONMENT_VARIABLE,)}
    env.update(environ, PYTHONPATH=os.getcwd())
    args = _args(shapes_dataset, tmp_path / "snapshots", "--no-snapshots", "--strategy", "mirrored", epochs=1, steps=1)
    args[args.index("csv"):args.index("csv")] = ["--feature-size", "32", "--head-depth", "1", "-v"]
    done = subprocess.run([sys.executable, "-m", "keras_retinanet.bin.train", *args], capture_output=True, text=True,
                          env=env, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(line for line in done.stderr.splitlines() if "TensorFlow threads:" in line)
    assert expected in line
    if not environ:
        assert f"1 per op, {threads.usable_cores()} ops at once" in line
    assert re.search(r"epoch 1 \| .*loss", done.stdout)
