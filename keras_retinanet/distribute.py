"""Training on several machines (``retinanet-train --strategy multi-worker``): roles, input, agreement.

One process per machine (a *worker*), all started with the same command line and each
with a ``TF_CONFIG`` environment variable naming the cluster and the worker's place in it;
``tf.distribute.MultiWorkerMirroredStrategy`` keeps a copy of the model on every replica
and sums the gradients over all of them at every step (collectives over gRPC: ring
all-reduce on CPUs, NCCL on GPUs). What this module decides:

- roles (``read_tf_config``, ``WorkerRole``): the chief (the task of type 'chief', else
  worker 0) evaluates and writes snapshots, logs and TensorBoard; the others write nothing.
- input (``distribute_input``): every global batch is cut into per-replica slices
  (``preprocessing.pipeline.BatchShard``) and each worker's tf.data pipeline loads only
  its own slices, so no image is decoded on two workers.
- agreement (``WorkerGroup``; ``callbacks.training.ChiefLogs``): the values that
  callbacks decide on between steps are made the same on every worker (the chief's mAP,
  one clock for the time limit and a time-based schedule), so that all workers stop, and
  set their learning rate, at the same step. A worker that stopped alone would leave the
  others waiting in the next all-reduce.

Light on purpose (TensorFlow is imported inside the functions that need it), so that
retinanet-train checks TF_CONFIG before importing it.
"""
import json
import os
import time
from typing import NamedTuple

import numpy as np

from keras_retinanet.errors import ClusterConfigError

TF_CONFIG = "TF_CONFIG"
# The task types retinanet-train runs, in the order of their replicas (TensorFlow's).
WORKER_TYPES = ("chief", "worker")
TF_CONFIG_EXAMPLE = (
    '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}'
)


class WorkerRole(NamedTuple):
    """This process's place among the workers of a run.

    index: 0-based, the chief first; count: number of workers; is_chief: evaluates and
    writes the run's files; task: TF_CONFIG's name of the task, e.g. 'worker 1'.
    """

    index: int
    count: int
    is_chief: bool
    task: str

    def describe(self):
        """'worker 2 of 2 (TF_CONFIG task worker 1)', or '' for a run of one process."""
        if self.count == 1:
            return ""
        chief = ", the chief" if self.is_chief else ""
        return f"worker {self.index + 1} of {self.count} (TF_CONFIG task {self.task}{chief})"


ONLY_WORKER = WorkerRole(0, 1, True, "")


class ClusterConfig(NamedTuple):
    """TF_CONFIG, checked: ``cluster`` {task type: [host:port]}, this process's task type and index."""

    cluster: dict
    task_type: str
    task_index: int

    @property
    def role(self):
        """The ``WorkerRole`` of this process."""
        tasks = [(kind, i) for kind in WORKER_TYPES for i in range(len(self.cluster.get(kind, ())))]
        is_chief = self.task_type == "chief" or ("chief" not in self.cluster and self.task_index == 0)
        return WorkerRole(
            tasks.index((self.task_type, self.task_index)), len(tasks), is_chief, f"{self.task_type} {self.task_index}"
        )


def _fail(message):
    raise ClusterConfigError(f"TF_CONFIG: {message} (expected e.g. TF_CONFIG='{TF_CONFIG_EXAMPLE}')")


def read_tf_config(environ=None):
    """The cluster of a multi-worker run and this process's task, from ``TF_CONFIG``, checked.

    Only chief and worker tasks are run (no parameter servers, no evaluator); the cluster
    must have at least one worker task, at most one chief, and ``host:port`` addresses.

    Args:
        environ: the environment (default ``os.environ``).

    Returns:
        ``ClusterConfig``.

    Raises:
        ClusterConfigError: TF_CONFIG is missing, not JSON, or not such a cluster.
    """
    environ = os.environ if environ is None else environ
    text = environ.get(TF_CONFIG, "").strip()
    if not text:
        raise ClusterConfigError(
            "--strategy multi-worker needs the TF_CONFIG environment variable: the cluster and this worker's "
            f"place in it, e.g. TF_CONFIG='{TF_CONFIG_EXAMPLE}'"
        )
    try:
        config = json.loads(text)
    except ValueError as error:
        _fail(f"not JSON ({error})")
    if not isinstance(config, dict) or not isinstance(config.get("cluster"), dict):
        _fail("no 'cluster' object")
    cluster = config["cluster"]
    others = sorted(set(cluster) - set(WORKER_TYPES))
    if others:
        _fail(f"retinanet-train runs chief and worker tasks only; the cluster has {', '.join(others)}")
    seen = {}
    for kind in WORKER_TYPES:
        addresses = cluster.get(kind, [])
        if not isinstance(addresses, list):
            _fail(f"cluster {kind} must be a list of host:port addresses, got {addresses!r}")
        for index, address in enumerate(addresses):
            host, _, port = str(address).rpartition(":") if isinstance(address, str) else ("", "", "")
            if not host or not port.isdigit():
                _fail(f"cluster {kind} {index}: expected host:port, got {address!r}")
            if address in seen:
                _fail(f"cluster {kind} {index} has the address of {seen[address]}: {address}")
            seen[address] = f"{kind} {index}"
    if not cluster.get("worker"):
        _fail("the cluster has no worker task")
    if len(cluster.get("chief", [])) > 1:
        _fail(f"a cluster has at most one chief, this one has {len(cluster['chief'])}")
    task = config.get("task")
    if not isinstance(task, dict) or "type" not in task:
        _fail("no 'task' object with this worker's 'type' and 'index'")
    task_type, task_index = task["type"], task.get("index", 0)
    if task_type not in WORKER_TYPES:
        _fail(f"task type {task_type!r} is not one retinanet-train runs ({', '.join(WORKER_TYPES)})")
    if not isinstance(task_index, int) or not 0 <= task_index < len(cluster.get(task_type, [])):
        count = len(cluster.get(task_type, []))
        _fail(f"task {task_type} {task_index} is not in the cluster (it has {count} {task_type} task(s))")
    return ClusterConfig({kind: list(cluster[kind]) for kind in WORKER_TYPES if kind in cluster}, task_type, task_index)


# How long a worker may go unheard before the others stop with an error, and how long the
# workers wait for each other at exit. TensorFlow's defaults (10 s each) stop a run whose
# workers are briefly starved of CPU or disk; a dead worker is noticed within this too.
HEARTBEAT_TIMEOUT_SECONDS = 120
SHUTDOWN_TIMEOUT_SECONDS = 300


def _configure_coordination(config):
    """Set the coordination service's timeouts, before the strategy sets TensorFlow's defaults.

    MultiWorkerMirroredStrategy configures the service (leader: the chief, else worker 0;
    the chief and worker jobs) only if nothing has; this does the same with longer
    timeouts. Uses TensorFlow's internal context API: where it is not there, TensorFlow's
    defaults stay.

    Returns:
        Whether the timeouts were set.
    """
    try:
        from tensorflow.python.eager import context
    except ImportError:  # pragma: no cover - TensorFlow's layout changed
        return False
    try:
        from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    except ImportError:  # pragma: no cover - TensorFlow < 2.18
        try:
            from tensorflow.tsl.protobuf import coordination_config_pb2
        except ImportError:
            return False
    if context.context().coordination_service is not None:
        return False
    leader = "chief" if "chief" in config.cluster else "worker"
    jobs = [
        coordination_config_pb2.CoordinatedJob(name=kind, num_tasks=len(config.cluster[kind]))
        for kind in WORKER_TYPES
        if kind in config.cluster
    ]
    context.context().configure_coordination_service(
        service_type="standalone",
        service_leader=f"/job:{leader}/replica:0/task:0",
        coordinated_jobs=jobs,
        heartbeat_timeout_in_ms=HEARTBEAT_TIMEOUT_SECONDS * 1000,
        shutdown_barrier_timeout_in_ms=SHUTDOWN_TIMEOUT_SECONDS * 1000,
    )
    return True


def multi_worker_strategy(environ=None):
    """The ``tf.distribute.MultiWorkerMirroredStrategy`` of TF_CONFIG (create it before any TensorFlow op).

    Raises:
        ClusterConfigError: TF_CONFIG is missing or malformed (see ``read_tf_config``).
    """
    import tensorflow as tf

    config = read_tf_config(environ)
    _configure_coordination(config)
    return tf.distribute.MultiWorkerMirroredStrategy()


def in_multi_worker_mode(strategy):
    """Whether ``strategy`` spans several worker processes (MultiWorkerMirroredStrategy with a cluster)."""
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    spec = strategy.cluster_resolver.cluster_spec().as_dict()
    return sum(len(spec.get(kind, ())) for kind in WORKER_TYPES) > 1


def distribute_input(strategy, build):
    """Per-worker tf.data pipelines, each loading only its replicas' slices of every global batch.

    Pipeline ``p`` (one per worker) serves the ``k`` replicas of its worker: the slices
    ``p * k`` .. ``p * k + k - 1`` of the ``num_replicas_in_sync`` equal slices of every
    batch. Together the workers load every image of a batch once.

    Args:
        strategy: the run's ``tf.distribute`` strategy.
        build: ``f(shard)`` -> ``tf.data.Dataset`` of per-replica batches (e.g.
            ``build_dataset(generator, shard=shard)``), given a ``BatchShard``.

    Returns:
        ``tf.distribute.DistributedDataset`` to pass to ``model.fit``.
    """
    from keras_retinanet.preprocessing.pipeline import BatchShard

    replicas = strategy.num_replicas_in_sync

    def dataset_fn(context):
        per_pipeline = replicas // context.num_input_pipelines
        return build(BatchShard(context.input_pipeline_id * per_pipeline, per_pipeline, replicas))

    return strategy.distribute_datasets_from_function(dataset_fn)


class WorkerGroup:
    """The workers of a run, agreeing on values between training steps.

    Every method is an all-reduce over all replicas: every worker must call it at the same
    point (the callbacks of a run are the same on every worker, and call it from the same
    hooks), or the workers wait for each other forever.

    Args:
        strategy: the run's MultiWorkerMirroredStrategy.
        role: this process's ``WorkerRole``.
    """

    def __init__(self, strategy, role):
        import tensorflow as tf

        self.strategy = strategy
        self.role = role

        @tf.function
        def all_sum(values):
            per_replica = strategy.run(tf.identity, args=(values,))
            return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

        self._all_sum = all_sum

    def mean(self, values):
        """The mean over all replicas of ``values`` (a float64 vector of the same length on every worker)."""
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        return np.asarray(self._all_sum(values)) / self.strategy.num_replicas_in_sync

    def from_chief(self, values):
        """The chief's ``values`` on every worker (a list of floats or None; the others' are ignored)."""
        chief = 1.0 if self.role.is_chief else 0.0
        given = [chief * (value is not None) for value in values]
        numbers = [float(value) if flag else 0.0 for value, flag in zip(values, given)]
        total = self.mean(numbers + given + [chief])
        count = len(values)
        shares = total[2 * count]  # the chief's share of the replicas: its values are total / shares
        return [
            float(total[i] / shares) if total[count + i] > 0 else None
            for i in range(count)
        ]

    def clock(self):
        """Seconds on a monotonic clock the workers share: the mean of theirs (an all-reduce).

        The machines' clocks start anywhere; the differences of this one are the mean of
        their elapsed times, the same number on every worker.
        """
        return float(self.mean([time.monotonic()])[0])
