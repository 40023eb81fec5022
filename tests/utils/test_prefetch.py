"""utils.prefetch.ordered_map: order kept, work ahead bounded, errors at their place, threads stopped."""
import threading
import time

import pytest

from keras_retinanet.utils.prefetch import ordered_map


def _threads(name):
    return [t for t in threading.enumerate() if t.name.startswith(name)]


@pytest.mark.parametrize("workers", [0, 1, 3])
def test_results_come_in_input_order_whatever_the_workers(workers):
    def slow_square(x):
        time.sleep(0.002 * (x % 3))  # later items often finish first
        return x * x

    assert list(ordered_map(slow_square, range(20), workers)) == [(x, x * x) for x in range(20)]


def test_work_runs_in_other_threads_and_stays_within_the_window():
    started, where = [], set()

    def work(x):
        started.append(x)
        where.add(threading.current_thread().name)
        return x

    results = ordered_map(work, range(100), workers=2, window=3)
    assert next(results) == (0, 0)
    time.sleep(0.1)  # the threads run ahead as far as they may
    assert 1 + 3 <= len(started) <= 1 + 3 + 1  # the one taken, the window, the one the feeder holds
    assert [x for x, _ in results] == list(range(1, 100))
    assert threading.current_thread().name not in where


def test_an_error_is_raised_at_its_place_and_the_threads_stop():
    def work(x):
        if x == 5:
            raise OSError("item 5 is broken")
        return x

    seen = []
    with pytest.raises(OSError, match="item 5 is broken"):
        for x, _ in ordered_map(work, range(50), workers=2, name="test-error"):
            seen.append(x)
    assert seen == [0, 1, 2, 3, 4]
    time.sleep(0.2)
    assert not _threads("test-error")


def test_an_error_of_the_iterable_is_raised_after_its_items():
    def items():
        yield from range(3)
        raise ValueError("frame 3 unreadable")

    seen = []
    with pytest.raises(ValueError, match="frame 3"):
        for x, _ in ordered_map(lambda x: x, items(), workers=2):
            seen.append(x)
    assert seen == [0, 1, 2]


def test_stopping_early_closes_the_iterable_and_the_threads():
    closed = threading.Event()

    def items():
        try:
            yield from range(10_000)
        finally:
            closed.set()

    results = ordered_map(lambda x: x, items(), workers=2, name="test-close")
    assert [next(results) for _ in range(3)] == [(0, 0), (1, 1), (2, 2)]
    results.close()
    assert closed.wait(2)
    time.sleep(0.2)
    assert not _threads("test-close")


def test_bad_arguments_are_value_errors():
    with pytest.raises(ValueError, match="workers must be >= 0, got -1"):
        ordered_map(abs, [1], workers=-1)
    with pytest.raises(ValueError, match="window must be >= 1, got 0"):
        ordered_map(abs, [1], workers=1, window=0)
