"""utils.threads: when TensorFlow runs whole ops two at once, and what it sets."""
import json
import os
import subprocess
import sys

import pytest

from keras_retinanet.errors import SettingError
from keras_retinanet.utils import threads
from keras_retinanet.utils.threads import MAX_SIDE, parallel_ops_threads

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize(
    "light_ops, side, cores, environ, has_gpu, expected",
    [
        (True, 128, 2, {}, False, (1, 2)),  # the demo: a MobileNet at 128 px on 2 cores
        (True, MAX_SIDE, 2, {}, False, (1, 2)),
        (True, MAX_SIDE + 1, 2, {}, False, None),  # 800 px: a MobileNet's ops split well enough
        (True, 128, 1, {}, False, (1, 1)),
        (True, 128, 8, {}, False, None),  # larger machines: not measured, TensorFlow's defaults
        (False, 128, 2, {}, False, None),  # a ResNet's convolutions split well at any size
        (True, None, 2, {}, False, None),  # images not resized: their size is unknown
        (True, 128, 2, {}, True, None),  # a GPU: the CPU only feeds it
        (True, 128, 2, {"KERAS_RETINANET_THREADS": "tensorflow"}, False, None),
        (True, 128, 2, {"KERAS_RETINANET_THREADS": " TensorFlow "}, False, None),
        (True, 128, 2, {"TF_NUM_INTRAOP_THREADS": "2"}, False, None),  # TensorFlow's own settings win
        (True, 128, 2, {"TF_NUM_INTEROP_THREADS": "4"}, False, None),
        (True, 128, 2, {"TF_NUM_INTEROP_THREADS": ""}, False, (1, 2)),  # set but empty: not a choice
    ],
)
def test_parallel_ops_threads(light_ops, side, cores, environ, has_gpu, expected):
    assert parallel_ops_threads(light_ops, side, cores=cores, environ=environ, has_gpu=has_gpu) == expected


@pytest.mark.parametrize("value, expected", [("", "auto"), (" AUTO ", "auto"), ("tensorflow", "tensorflow")])
def test_setting_reads_the_known_values(value, expected):
    assert threads.setting({"KERAS_RETINANET_THREADS": value}) == expected
    assert threads.setting({}) == "auto"


@pytest.mark.parametrize("value", ["tensorlfow", "1", "off"])
def test_a_mistyped_setting_is_an_error_not_ignored(value):
    with pytest.raises(SettingError, match=rf"KERAS_RETINANET_THREADS='{value}' is not a setting: use 'tensorflow'"):
        parallel_ops_threads(True, 128, cores=2, environ={"KERAS_RETINANET_THREADS": value})


def test_light_ops_of_backbones():
    from keras_retinanet import models

    assert models.backbone("mobilenet128_0.25").light_ops
    assert models.backbone("mobilenetv2_1.0").light_ops
    assert not models.backbone("resnet50").light_ops
    assert not models.backbone("vgg16").light_ops


SCRIPT = """
import json, sys
import tensorflow as tf
from keras_retinanet.errors import SettingError
from keras_retinanet.utils import threads
if sys.argv[1] == "op-first":
    tf.constant(1.0) + 1.0
chosen = threads.use_parallel_ops(True, 128)
print(json.dumps({
    "returned": chosen, "chosen": threads.chosen_threads(), "calls": threads.model_calls_at_once(),
    "intra": tf.config.threading.get_intra_op_parallelism_threads(),
    "inter": tf.config.threading.get_inter_op_parallelism_threads(),
}))
"""


def _fresh_process(mode, **environ):
    env = {k: v for k, v in os.environ.items() if k not in threads.TENSORFLOW_VARIABLES + (threads.ENVIRONMENT_VARIABLE,)}
    env.update(environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    command = [sys.executable, "-c", SCRIPT, mode]
    output = subprocess.run(command, capture_output=True, text=True, check=True, env=env, cwd=REPO).stdout
    return json.loads(output.strip().splitlines()[-1])


@pytest.mark.skipif(threads.usable_cores() > threads.MAX_CORES, reason="the rule keeps TensorFlow's defaults here")
def test_use_parallel_ops_sets_tensorflow_threads_before_the_first_op():
    cores = threads.usable_cores()
    result = _fresh_process("fresh")
    assert result == {"returned": [1, cores], "chosen": [1, cores], "calls": cores, "intra": 1, "inter": cores}


def test_use_parallel_ops_after_the_first_op_keeps_the_defaults():
    result = _fresh_process("op-first")
    assert result == {"returned": None, "chosen": None, "calls": 1, "intra": 0, "inter": 0}


def test_use_parallel_ops_honours_keras_retinanet_threads():
    result = _fresh_process("fresh", KERAS_RETINANET_THREADS="tensorflow")
    assert result == {"returned": None, "chosen": None, "calls": 1, "intra": 0, "inter": 0}
