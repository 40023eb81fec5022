"""Every command line of fizyr/keras-retinanet 1.0.0's README and argparse definitions parses here.

The list below is fizyr's README examples plus one command line per flag of its
``bin/*.py`` parsers (train, evaluate, convert_model, debug), with the values our parsers
must read from them. When fizyr 1.0.0's own environment is there (``.venv-fizyr`` made by
``scripts/fizyr_fixtures.sh``, or ``$FIZYR_PYTHON``), the same list is also parsed by
fizyr's own parsers, so it holds only real fizyr command lines.
"""
import json
import os
import subprocess

import pytest

from keras_retinanet.bin import convert_model, debug, evaluate, train

# (tool, arguments, {attribute: value our parser must give})
COMMAND_LINES = [
    # README: training
    ("train", "--backbone resnet50 csv annotations.csv classes.csv",
     {"backbone": "resnet50", "dataset_type": "csv", "annotations": "annotations.csv", "classes": "classes.csv"}),
    ("train", "coco /path/to/MS/COCO", {"dataset_type": "coco", "coco_path": "/path/to/MS/COCO",
                                        "train_set": "train2017", "val_set": "val2017"}),
    ("train", "pascal /path/to/VOCdevkit/VOC2007", {"dataset_type": "pascal", "pascal_path": "/path/to/VOCdevkit/VOC2007"}),
    ("train", "oid /path/to/OpenImages", {"dataset_type": "oid", "main_dir": "/path/to/OpenImages", "version": "v4",
                                          "labels_filter": None, "annotation_cache_dir": ".", "parent_label": None,
                                          "train_set": "train", "val_set": "validation"}),
    ("train", "kitti /path/to/KITTI", {"dataset_type": "kitti", "kitti_path": "/path/to/KITTI",
                                       "train_set": "train", "val_set": "val"}),
    ("train", "csv /path/to/csv/file/containing/annotations /path/to/csv/file/containing/classes",
     {"annotations": "/path/to/csv/file/containing/annotations"}),
    ("train", "--snapshot snapshots/resnet50_coco_01.h5 coco /path/to/MS/COCO", {"snapshot": "snapshots/resnet50_coco_01.h5"}),
    ("train", "--weights resnet50_coco_best_v2.1.0.h5 --freeze-backbone csv train.csv classes.csv --val-annotations val.csv",
     {"weights": "resnet50_coco_best_v2.1.0.h5", "freeze_backbone": True, "val_annotations": "val.csv"}),
    ("train", "--gpu 0 --multi-gpu 2 --multi-gpu-force --batch-size 4 --epochs 20 --steps 1000 --lr 1e-4 "
              "--optimizer-clipnorm 0.01 --initial-epoch 2 csv a.csv c.csv",
     {"gpu": "0", "multi_gpu": 2, "batch_size": 4, "epochs": 20, "steps": 1000, "lr": 1e-4, "optimizer_clipnorm": 0.01,
      "initial_epoch": 2}),
    ("train", "--no-weights --backbone mobilenet224_1.0 --random-transform --image-min-side 600 --image-max-side 1000 "
              "--config config.ini --weighted-average --compute-val-loss --reduce-lr-patience 3 "
              "--reduce-lr-factor 0.5 --group-method random csv a.csv c.csv",
     {"imagenet_weights": False, "random_transform": True, "image_min_side": 600, "image_max_side": 1000,
      "config": "config.ini", "weighted_average": True, "compute_val_loss": True, "reduce_lr_patience": 3,
      "reduce_lr_factor": 0.5, "group_method": "random"}),
    ("train", "--imagenet-weights --snapshot-path snaps --tensorboard-dir logs --tensorboard-freq batch --no-snapshots "
              "--no-evaluation --no-resize csv a.csv c.csv",
     {"imagenet_weights": True, "snapshot_path": "snaps", "tensorboard_dir": "logs", "tensorboard_freq": "batch",
      "snapshots": False, "evaluation": False, "no_resize": True}),
    ("train", "--multiprocessing --workers 4 --max-queue-size 20 csv a.csv c.csv",
     {"multiprocessing": True, "workers": 4, "max_queue_size": 20}),
    ("train", "pascal /data/VOC2007 --image-extension .png", {"image_extension": ".png"}),
    ("train", "oid /data/oid --version challenge2018 --labels-filter Helmet,Hat --annotation-cache-dir /tmp/cache "
              "--parent-label Clothing",
     {"version": "challenge2018", "labels_filter": ["Helmet", "Hat"], "annotation_cache_dir": "/tmp/cache",
      "parent_label": "Clothing"}),
    # README: conversion
    ("convert_model", "/path/to/training/model.h5 /path/to/save/inference/model.h5",
     {"model_in": "/path/to/training/model.h5", "model_out": "/path/to/save/inference/model.h5"}),
    ("convert_model", "snapshot.h5 model.h5 --backbone resnet101 --no-nms --no-class-specific-filter --config c.ini "
                      "--nms-threshold 0.4 --score-threshold 0.3 --max-detections 100 --parallel-iterations 8",
     {"backbone": "resnet101", "nms": False, "class_specific_filter": False, "config": "c.ini", "nms_threshold": 0.4,
      "score_threshold": 0.3, "max_detections": 100, "parallel_iterations": 8}),
    # README: evaluation
    ("evaluate", "csv val.csv classes.csv model.h5 --convert-model",
     {"dataset_type": "csv", "model": "model.h5", "convert_model": True}),
    ("evaluate", "coco /path/to/coco ./snapshots/resnet50_coco_best_v2.1.0.h5",
     {"coco_path": "/path/to/coco", "set_name": "val2017", "model": "./snapshots/resnet50_coco_best_v2.1.0.h5"}),
    ("evaluate", "--convert-model --backbone resnet50 --gpu 0 --score-threshold 0.3 --iou-threshold 0.4 "
                 "--max-detections 50 --save-path out --image-min-side 600 --image-max-side 1000 --no-resize "
                 "--config c.ini --group-method none pascal /data/VOC2007 --image-extension .png model.h5",
     {"convert_model": True, "backbone": "resnet50", "gpu": "0", "score_threshold": 0.3, "iou_threshold": 0.4,
      "max_detections": 50, "save_path": "out", "image_min_side": 600, "image_max_side": 1000, "no_resize": True,
      "config": "c.ini", "group_method": "none", "set_name": "test", "image_extension": ".png", "model": "model.h5"}),
    # README: debugging
    ("debug", "csv annotations.csv classes.csv", {"dataset_type": "csv", "annotations": "annotations.csv"}),
    ("debug", "coco /data/coco", {"set_name": "val2017"}),
    ("debug", "coco /data/coco --coco-set train2017", {"set_name": "train2017"}),
    ("debug", "pascal /data/VOC2007", {"set_name": "test"}),
    ("debug", "pascal /data/VOC2007 --pascal-set trainval --image-extension .png",
     {"set_name": "trainval", "image_extension": ".png"}),
    ("debug", "kitti /data/kitti val", {"kitti_path": "/data/kitti", "set_name": "val"}),
    ("debug", "oid /data/oid validation --version v4 --labels-filter Helmet --annotation-cache-dir c --parent-label Animal",
     {"main_dir": "/data/oid", "set_name": "validation", "labels_filter": ["Helmet"], "parent_label": "Animal"}),
    ("debug", "--no-resize --anchors --display-name --show-annotations --random-transform --image-min-side 600 "
              "--image-max-side 1000 --config c.ini --no-gui --output-dir out --flatten-output --group-method none "
              "csv a.csv c.csv",
     {"no_resize": True, "draw_anchors": True, "display_name": True, "draw_annotations": True, "random_transform": True,
      "image_min_side": 600, "image_max_side": 1000, "config": "c.ini", "no_gui": True, "output_dir": "out",
      "flatten_output": True, "group_method": "none"}),
]  # fmt: skip
TOOLS = {"train": train, "evaluate": evaluate, "convert_model": convert_model, "debug": debug}


@pytest.mark.parametrize("tool, arguments, expected", COMMAND_LINES, ids=[f"{t} {a}"[:80] for t, a, _ in COMMAND_LINES])
def test_fizyr_command_line_parses_here(tool, arguments, expected):
    parsed = TOOLS[tool].parse_args(arguments.split())
    assert {name: getattr(parsed, name) for name in expected} == expected


def _fizyr_python():
    candidates = [os.environ.get("FIZYR_PYTHON"), os.path.join(os.path.dirname(__file__), "..", "..", ".venv-fizyr",
                                                                "bin", "python")]  # fmt: skip
    return next((path for path in candidates if path and os.path.isfile(path)), None)


def test_the_list_holds_fizyrs_own_command_lines():
    """fizyr 1.0.0's parsers (in its own environment) accept every command line of the list."""
    python = _fizyr_python()
    if python is None:
        message = "fizyr 1.0.0's environment not found (.venv-fizyr, $FIZYR_PYTHON)"
        if os.environ.get("KERAS_RETINANET_REQUIRE_FIZYR_FIXTURES"):
            pytest.fail(message)
        pytest.skip(message)
    script = (
        "import json, sys\n"
        "import importlib, importlib.metadata\n"
        "assert importlib.metadata.version('keras-retinanet') == '1.0.0'\n"
        "failed = []\n"
        "for tool, arguments in json.load(sys.stdin):\n"
        "    module = importlib.import_module('keras_retinanet.bin.' + tool)\n"
        "    try:\n"
        "        module.parse_args(arguments.split())\n"
        "    except SystemExit:\n"
        "        failed.append(tool + ' ' + arguments)\n"
        "print(json.dumps(failed))\n"
    )
    lines = [(tool, arguments) for tool, arguments, _ in COMMAND_LINES]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("PYTHONPATH", None)
    result = subprocess.run([python, "-c", script], input=json.dumps(lines), capture_output=True, text=True,
                            cwd="/", env=env, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_check_args_takes_fizyrs_call_form_and_ours(capsys):
    parser_args = train.parse_args(["csv", "a.csv", "c.csv"])
    assert train.check_args(parser_args) is parser_args  # fizyr: check_args(parsed_args)
    parser_args.batch_size, parser_args.multi_gpu = 1, 2
    with pytest.raises(ValueError, match=r"^--batch-size \(1\) must be >= --multi-gpu \(2\)$"):
        train.check_args(parser_args)
    with pytest.raises(SystemExit) as exit_info:  # ours, through parse_args: argparse's message, status 2
        train.parse_args(["--multi-gpu", "2", "csv", "a.csv", "c.csv"])
    assert exit_info.value.code == 2
    assert "error: --batch-size (1) must be >= --multi-gpu (2)" in capsys.readouterr().err

    import argparse

    fizyr_style = argparse.Namespace(multi_gpu=0, batch_size=1, snapshot=None, backbone="resnet50", lr=-1.0)
    with pytest.raises(ValueError, match=r"^--lr must be > 0, got -1.0$"):  # attributes it lacks count as defaults
        train.check_args(fizyr_style)


def test_makedirs_and_model_with_weights(tmp_path):
    import numpy as np

    from tests.detector_model import training_model

    folder = tmp_path / "a" / "b"
    train.makedirs(str(folder))
    train.makedirs(str(folder))  # exists already: nothing
    assert folder.is_dir()
    (tmp_path / "file").write_text("")
    with pytest.raises(FileExistsError):
        train.makedirs(str(tmp_path / "file"))

    source, target = training_model(), training_model()
    layer = next(l for l in source.layers if l.weights and l.name.startswith("P3"))
    weights = str(tmp_path / "source.weights.h5")
    source.save_weights(weights)
    assert train.model_with_weights(target, None, skip_mismatch=True) is target
    assert train.model_with_weights(target, weights, skip_mismatch=True) is target
    np.testing.assert_array_equal(target.get_layer(layer.name).get_weights()[0], layer.get_weights()[0])
