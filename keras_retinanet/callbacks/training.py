"""Callbacks for long training runs: atomic snapshots, a NaN guard, LR warmup, epoch summaries."""
import math
import os
import re
import sys
import time

import keras

from keras_retinanet.utils.files import write_atomically

SNAPSHOT_EPOCH_PATTERN = re.compile(r"_(\d+)\.keras$")


def snapshot_path(directory, backbone, dataset_type, epoch):
    """Path of the snapshot written after ``epoch`` (1-based): ``<backbone>_<dataset>_<epoch:02d>.keras``."""
    return os.path.join(directory, f"{backbone}_{dataset_type}_{epoch:02d}.keras")


def best_snapshot_path(directory, backbone, dataset_type):
    """Path of the best snapshot of a run (``--save-best``): ``<backbone>_<dataset>_best.keras``."""
    return os.path.join(directory, f"{backbone}_{dataset_type}_best.keras")


def log_path(directory, backbone, dataset_type):
    """Path of the CSV log of the epoch figures: ``<backbone>_<dataset>_log.csv``."""
    return os.path.join(directory, f"{backbone}_{dataset_type}_log.csv")


def epoch_from_snapshot(path):
    """Number of epochs a snapshot has completed, from its name (``resnet50_csv_07.keras`` -> 7), or None."""
    match = SNAPSHOT_EPOCH_PATTERN.search(os.path.basename(path))
    return int(match.group(1)) if match else None


def save_atomically(model, path):
    """Save ``model`` to ``path`` so that a crash mid-write never leaves a truncated file there.

    ``utils.files.write_atomically``: a temporary file in the same folder, fsync, rename.

    Raises:
        OutputError: the file could not be written (the previous one is intact).
    """
    write_atomically(path, model.save)


def _finite(value):
    return value is not None and math.isfinite(float(value))


class Snapshot(keras.callbacks.Callback):
    """Write the training model (with its optimiser state) after every epoch, atomically.

    Args:
        directory: folder of the snapshots.
        backbone, dataset_type: parts of the file name ``<backbone>_<dataset>_<epoch:02d>.keras``.
        model: the model to save (default: the model being trained). A ``RetinaNetModel``'s
            spec records the epoch (``spec.epoch``).
        keep_last: keep only this many of the snapshots this run wrote (None: all); the
            best one and the one resumed from are never removed.
        save_best: also keep ``<backbone>_<dataset>_best.keras``, rewritten whenever
            ``monitor`` improves.
        monitor, mode: the log value that decides "best" and whether higher ('max') or
            lower ('min') is better.
        best_value, best_epoch: the best so far of the run resumed (``best_in_log``).

    Attributes:
        last_path: the newest snapshot written, or the one training was resumed from.
        best_path, best_value, best_epoch: the best snapshot so far (``save_best``).
    """

    def __init__(
        self, directory, backbone, dataset_type, model=None, last_path=None, keep_last=None, save_best=False,
        monitor="mAP", mode="max", best_value=None, best_epoch=None,
    ):  # fmt: skip
        super().__init__()
        if keep_last is not None and keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}")
        self.directory = directory
        self.backbone = backbone
        self.dataset_type = dataset_type
        self._model_to_save = model
        self.last_path = last_path
        self.keep_last = keep_last
        self.save_best = save_best
        self.monitor = monitor
        self.mode = mode
        self.best_path = best_snapshot_path(directory, backbone, dataset_type) if save_best else None
        self.best_value = best_value  # an earlier run's best (a resumed run), to beat
        self.best_epoch = best_epoch
        self._written = []

    def _better(self, value):
        if value is None or not _finite(value):
            return False
        if self.best_value is None:
            return True
        return value > self.best_value if self.mode == "max" else value < self.best_value

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if "loss" in logs and not _finite(logs["loss"]):
            return  # never overwrite good weights with diverged ones
        model = self._model_to_save or self.model
        path = snapshot_path(self.directory, self.backbone, self.dataset_type, epoch + 1)
        spec = getattr(model, "spec", None)
        if spec is not None and hasattr(spec, "replace"):
            model.spec = spec.replace(epoch=epoch + 1)  # a snapshot knows how many epochs it has completed
        save_atomically(model, path)
        self.last_path = path
        self._written.append(path)
        value = logs.get(self.monitor)
        if self.save_best and self._better(None if value is None else float(value)):
            save_atomically(model, self.best_path)
            self.best_value, self.best_epoch = float(value), epoch + 1
        if self.keep_last is not None:
            while len(self._written) > self.keep_last:
                old = self._written.pop(0)
                if os.path.exists(old):
                    os.remove(old)


class NanGuard(keras.callbacks.Callback):
    """Stop training as soon as the loss stops being finite, and say where to restart from.

    Args:
        snapshot: the ``Snapshot`` callback whose ``last_path`` names the last good snapshot
            (or None when snapshots are off).
    """

    def __init__(self, snapshot=None):
        super().__init__()
        self.snapshot = snapshot
        self.message = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or _finite(loss):
            return
        last = self.snapshot.last_path if self.snapshot is not None else None
        where = f"last good snapshot: {last}" if last else "no snapshot was written before it"
        self.message = (
            f"training stopped: the loss became {float(loss)} in epoch {self._epoch + 1}, "
            f"batch {batch + 1}; {where}. Lower --lr or check the annotations."
        )
        self.model.stop_training = True


class LinearWarmup(keras.callbacks.Callback):
    """Raise the learning rate linearly to ``learning_rate`` over the first ``steps`` steps.

    Step ``i`` (0-based: the optimiser's iteration count) runs at ``learning_rate * factor(i)``
    with ``factor(i) = start_factor + (1 - start_factor) * (i + 1) / steps``: the last warmup
    step already runs at the full rate, and after it the callback never writes the rate
    again (ReduceLROnPlateau owns it).

    - A change made by another callback during the warmup (the rate is not the one this
      callback set) scales the rest of the ramp by the same ratio.
    - A resumed optimiser (iterations > 0) continues the ramp if its rate is the one the
      ramp gives at that step; otherwise its own rate is kept, with a warning.

    Args:
        steps: warmup length in optimiser steps (0: no warmup).
        learning_rate: the rate reached at the last warmup step.
        start_factor: ``factor(-1)``, the fraction of ``learning_rate`` the ramp starts from.
        print_fn: where the warning goes (default: standard error).
    """

    def __init__(self, steps, learning_rate, start_factor=0.001, print_fn=None):
        super().__init__()
        if steps < 0 or not 0 < start_factor <= 1:
            raise ValueError(f"warmup needs steps >= 0 and 0 < start_factor <= 1, got {steps}, {start_factor}")
        self.steps = int(steps)
        self.learning_rate = float(learning_rate)
        self.start_factor = float(start_factor)
        self.print_fn = print_fn or (lambda message: print(message, file=sys.stderr))
        self._done = self.steps == 0
        self._last = None  # the rate this callback set last

    def factor(self, step):
        """Fraction of ``learning_rate`` that step ``step`` runs at (during the warmup)."""
        return self.start_factor + (1.0 - self.start_factor) * (step + 1) / self.steps

    def _optimizer_state(self):
        optimizer = self.model.optimizer
        step = int(keras.ops.convert_to_numpy(optimizer.iterations))
        return step, float(keras.ops.convert_to_numpy(optimizer.learning_rate))

    def on_train_begin(self, logs=None):
        if self._done:
            return
        step, rate = self._optimizer_state()
        if step >= self.steps:
            self._done = True
        elif step > 0:
            expected = self.learning_rate * self.factor(step - 1)
            if math.isclose(rate, expected, rel_tol=1e-3):
                self._last = rate
            else:
                self._done = True
                self.print_fn(
                    f"warning: warmup not continued: the resumed optimiser is at step {step} with "
                    f"learning rate {rate:.3g}, not the {expected:.3g} of a warmup to {self.learning_rate:.3g}; "
                    "its rate is kept"
                )

    def on_train_batch_begin(self, batch, logs=None):
        if self._done:
            return
        step, rate = self._optimizer_state()
        if step >= self.steps:
            self._done = True
            return
        if self._last is not None and not math.isclose(rate, self._last, rel_tol=1e-4):
            self.learning_rate *= rate / self._last
        self._last = self.learning_rate * self.factor(step)
        self.model.optimizer.learning_rate = self._last
        self._done = step == self.steps - 1


class CosineSchedule(keras.callbacks.Callback):
    """Linear warmup, then a cosine decay of the learning rate to ``floor * learning_rate``.

    Before each step: ``rate = learning_rate * warm * (floor + (1 - floor) * (1 + cos(pi * t)) / 2)``
    with ``warm`` rising linearly from 1/1000 to 1 over ``warmup_steps`` optimiser steps and
    ``t`` the progress from 0 to 1: the optimiser's step over ``total_steps``, or the
    training time over ``seconds`` (for a run bounded by ``--time-limit``). The callback
    owns the rate: do not combine it with LinearWarmup or ReduceLROnPlateau.

    Args:
        learning_rate: the peak rate.
        total_steps: steps of the whole run (the decay ends there), or None with ``seconds``.
        seconds: length of the whole run in training seconds (when steps are not known).
        warmup_steps: steps of the linear warmup (0: none).
        floor: the last rate as a fraction of ``learning_rate``.
        clock: monotonic clock in seconds (for tests).
    """

    def __init__(self, learning_rate, total_steps=None, seconds=None, warmup_steps=0, floor=0.01, clock=time.monotonic):
        super().__init__()
        if (total_steps is None) == (seconds is None):
            raise ValueError("give the cosine schedule's length as total_steps or as seconds, not both")
        if (total_steps is not None and total_steps < 1) or (seconds is not None and not seconds > 0):
            raise ValueError(f"the cosine schedule needs a positive length, got {total_steps or seconds}")
        if warmup_steps < 0 or not 0 <= floor <= 1:
            raise ValueError(f"the cosine schedule needs warmup_steps >= 0 and 0 <= floor <= 1, got {warmup_steps}, {floor}")
        self.learning_rate = float(learning_rate)
        self.total_steps = total_steps
        self.seconds = seconds
        self.warmup_steps = int(warmup_steps)
        self.floor = float(floor)
        self.clock = clock
        self._start = None

    def rate(self, step, elapsed=0.0):
        """The rate of optimiser step ``step`` (0-based), ``elapsed`` training seconds in."""
        warm = 1.0
        if step < self.warmup_steps:
            warm = 0.001 + 0.999 * (step + 1) / self.warmup_steps
        progress = step / self.total_steps if self.total_steps else elapsed / self.seconds
        progress = min(max(progress, 0.0), 1.0)
        return self.learning_rate * warm * (self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * progress)))

    def on_train_begin(self, logs=None):
        self._start = self.clock()

    def on_train_batch_begin(self, batch, logs=None):
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        self.model.optimizer.learning_rate = self.rate(step, self.clock() - self._start)


class EpochLog(keras.callbacks.Callback):
    """The figures of every epoch in a CSV file: epoch (1-based, as the snapshots), lr, the logs.

    The whole file is written again atomically after every epoch, so a kill leaves the
    epochs done, and columns that appear later (a resumed run with validation data) join
    the header instead of shifting the rows.

    Args:
        path: the CSV file.
        append: keep the rows already in it (a resumed run).
    """

    def __init__(self, path, append=False):
        super().__init__()
        self.path = path
        self.append = append
        self.rows = []

    def on_train_begin(self, logs=None):
        import csv

        self.rows = []
        if self.append and os.path.isfile(self.path):
            with open(self.path, newline="", encoding="utf-8") as file:
                self.rows = list(csv.DictReader(file))

    def on_epoch_end(self, epoch, logs=None):
        import csv

        from keras_retinanet.utils.files import atomic_open

        row = {"epoch": epoch + 1, "lr": float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))}
        row.update({key: float(value) for key, value in (logs or {}).items() if key != "learning_rate"})
        self.rows = [r for r in self.rows if str(r.get("epoch")) != str(epoch + 1)] + [row]
        columns = list(dict.fromkeys(key for r in self.rows for key in r))
        with atomic_open(self.path, "w", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(self.rows)


def best_in_log(path, monitor, mode="max"):
    """(best value, its epoch) of ``monitor`` in an ``EpochLog`` file, or (None, None)."""
    import csv

    if not os.path.isfile(path):
        return None, None
    best = (None, None)
    with open(path, newline="", encoding="utf-8") as file:
        for row in csv.DictReader(file):
            try:
                value, epoch = float(row.get(monitor, "")), int(float(row["epoch"]))
            except (TypeError, ValueError, KeyError):
                continue
            if math.isfinite(value) and (best[0] is None or (value > best[0] if mode == "max" else value < best[0])):
                best = (value, epoch)
    return best


class TimeLimit(keras.callbacks.Callback):
    """Stop training once ``seconds`` of training have passed, at the end of a step.

    The epoch in progress then ends early: its line, its log row and its snapshot are
    written as for any epoch (so the last snapshot holds all the training done).

    Args:
        seconds: training time allowed, counted from the start of ``fit``.
        clock: a monotonic clock in seconds (for tests).
    """

    def __init__(self, seconds, clock=time.monotonic):
        super().__init__()
        if not seconds > 0:
            raise ValueError(f"the time limit must be positive, got {seconds}")
        self.seconds = float(seconds)
        self.clock = clock
        self.stopped_at = None  # (epoch, step) where the limit stopped training
        self._start = None
        self._epoch = 0

    def on_train_begin(self, logs=None):
        self._start = self.clock()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.stopped_at is None and self.clock() - self._start >= self.seconds:
            self.stopped_at = (self._epoch + 1, batch + 1)
            self.model.stop_training = True


class EpochSummary(keras.callbacks.Callback):
    """Print one line per epoch: losses, validation mAP, learning rate, images/s, duration.

    Args:
        batch_size: images per step (global batch).
        print_fn: where lines go (default ``print``).
        skipped: ``preprocessing.generator.SkippedImages`` registries (training, validation)
            whose new entries the epoch's line names.
    """

    def __init__(self, batch_size, print_fn=print, skipped=(), interactive=True):
        super().__init__()
        self.batch_size = batch_size
        self.print_fn = print_fn
        self.interactive = interactive
        self.skipped = [registry for registry in skipped if registry is not None]
        self.history = []
        self._start = None
        self._steps = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self._steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self._steps = batch + 1

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        seconds = time.perf_counter() - self._start
        images_per_second = self._steps * self.batch_size / seconds if seconds > 0 else float("nan")
        learning_rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        row = {
            "epoch": epoch + 1,
            "seconds": seconds,
            "images_per_second": images_per_second,
            "lr": learning_rate,
        }
        row.update({k: float(v) for k, v in logs.items() if k not in ("learning_rate",)})
        self.history.append(row)
        parts = [f"epoch {epoch + 1}"]
        parts += [f"{k} {float(v):.4f}" for k, v in logs.items() if k.endswith("loss")]
        if "mAP" in logs:
            parts.append(f"mAP {float(logs['mAP']):.4f}")
        parts += [f"lr {learning_rate:.2e}", f"{images_per_second:.1f} images/s", f"{seconds:.0f} s"]
        new = [item for registry in self.skipped for item in registry.new()]
        if new:
            from keras_retinanet.preprocessing.generator import describe_skipped

            parts.append(describe_skipped(new))
        # Keras finishes its progress bar after the user's callbacks: start on a fresh line
        self.print_fn(("\n" if self.interactive else "") + " | ".join(parts))


class ChiefLogs(keras.callbacks.Callback):
    """Give every worker the chief's values of epoch logs only the chief computes (its mAP).

    Put it after the evaluation callback and before the ones that read the values
    (EarlyStopping, the snapshots' "best", the epoch summary): they then decide the same
    on every worker. A value the chief does not have is removed from every worker's logs.

    Args:
        workers: the run's ``distribute.WorkerGroup`` (anything with its ``from_chief``).
        keys: the log entries to share.
    """

    def __init__(self, workers, keys=("mAP",)):
        super().__init__()
        self.workers = workers
        self.keys = tuple(keys)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        values = [logs.get(key) for key in self.keys]
        shared = self.workers.from_chief([None if value is None else float(value) for value in values])
        for key, value in zip(self.keys, shared):
            if value is None:
                logs.pop(key, None)
            else:
                logs[key] = value
