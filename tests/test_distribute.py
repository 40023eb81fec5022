"""distribute: TF_CONFIG checks and worker roles (no cluster is started here; see tests/bin/test_multi_worker.py)."""
import json
import time

import numpy as np
import pytest

from keras_retinanet.distribute import ONLY_WORKER, read_tf_config
from keras_retinanet.errors import ClusterConfigError


def _config(cluster, task_type="worker", index=0):
    return {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})}


def test_roles_follow_tensorflow_chief_first_else_worker_zero():
    workers = {"worker": ["a:1", "b:1"]}
    first, second = (read_tf_config(_config(workers, index=i)).role for i in range(2))
    assert (first.index, first.count, first.is_chief, first.task) == (0, 2, True, "worker 0")
    assert (second.index, second.is_chief) == (1, False)
    assert first.describe() == "worker 1 of 2 (TF_CONFIG task worker 0, the chief)"
    assert second.describe() == "worker 2 of 2 (TF_CONFIG task worker 1)"

    with_chief = {"chief": ["c:1"], "worker": ["a:1", "b:1"]}
    chief = read_tf_config(_config(with_chief, "chief")).role
    worker = read_tf_config(_config(with_chief, "worker", 0)).role
    assert (chief.index, chief.count, chief.is_chief) == (0, 3, True)
    assert (worker.index, worker.is_chief) == (1, False)
    assert ONLY_WORKER.is_chief and ONLY_WORKER.describe() == ""


@pytest.mark.parametrize(
    "environ, message",
    [
        ({}, "--strategy multi-worker needs the TF_CONFIG environment variable"),
        ({"TF_CONFIG": "{cluster"}, "TF_CONFIG: not JSON"),
        ({"TF_CONFIG": json.dumps({"task": {"type": "worker"}})}, "TF_CONFIG: no 'cluster' object"),
        (_config({"worker": ["a:1"], "ps": ["p:1"]}), "runs chief and worker tasks only; the cluster has ps"),
        (_config({"worker": ["a"]}), "cluster worker 0: expected host:port, got 'a'"),
        (_config({"worker": ["a:1", "a:1"]}), "cluster worker 1 has the address of worker 0: a:1"),
        (_config({"chief": ["c:1"]}, "chief"), "the cluster has no worker task"),
        (_config({"worker": ["a:1"]}, "evaluator"), "task type 'evaluator' is not one retinanet-train runs"),
        (_config({"worker": ["a:1", "b:1"]}, index=2), "task worker 2 is not in the cluster (it has 2 worker task(s))"),
    ],
)
def test_a_bad_tf_config_is_one_line_naming_the_problem(environ, message):
    with pytest.raises(ClusterConfigError) as error:
        read_tf_config(environ)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_retinanet_train_reports_a_bad_tf_config_before_starting(shapes_dataset, monkeypatch, capsys):
    from keras_retinanet.bin import train

    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}}))
    args = ["--strategy", "multi-worker", "--no-weights", "csv", shapes_dataset["train"], shapes_dataset["classes"]]
    status = train.main(args)
    assert status == 1
    assert capsys.readouterr().err.strip().startswith("retinanet-train: error: TF_CONFIG: task type 'ps' is not one")


def test_worker_group_shares_the_chiefs_values_and_a_mean_clock():
    import tensorflow as tf

    from keras_retinanet.distribute import WorkerGroup, WorkerRole

    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])  # one replica: the all-reduce is the identity
    chief = WorkerGroup(strategy, WorkerRole(0, 2, True, "worker 0"))
    assert chief.from_chief([1.5, None, 2.0**40 + 1]) == [1.5, None, 2.0**40 + 1]  # integers (seeds) exactly
    np.testing.assert_array_equal(chief.mean([3.0, -1.0]), [3.0, -1.0])
    before = time.monotonic()
    assert before <= chief.clock() <= time.monotonic()
    # a worker alone without the chief hears nothing
    assert WorkerGroup(strategy, WorkerRole(1, 2, False, "worker 1")).from_chief([1.5]) == [None]
