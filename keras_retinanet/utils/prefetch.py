"""Ordered, bounded parallel map: work on the next items of a stream while the caller uses this one.

    from keras_retinanet.utils.prefetch import ordered_map

    for path, image in ordered_map(read_image_bgr, paths, workers=2):
        ...   # the next images decode in two threads meanwhile

Results come in input order; at most ``window`` results wait ahead of the caller, so memory
stays bounded on a long stream (a folder of photos, the frames of a video). ``workers=0``
runs everything in the caller's thread, one item after the other (the same results, no
threads). The input iterable is consumed by one feeder thread, so a generator that decodes
video frames runs beside the caller as well.

An exception raised by ``function`` (or by the iterable) is raised in the caller at that
item's place in the order; closing the returned generator early (``break``, an exception in
the caller) stops the threads and closes the iterable.
"""
import concurrent.futures
import queue
import threading

_END = object()
_POLL_SECONDS = 0.1


class _IterationError:
    """The exception the input iterable raised, carried to the caller."""

    def __init__(self, error):
        self.error = error


def ordered_map(function, items, workers=2, window=None, name="prefetch"):
    """Yield ``(item, function(item))`` for every item, in order, computed ahead in threads.

    Args:
        function: f(item) -> result; must be safe to call from several threads at once
            when ``workers`` > 1.
        items: any iterable (consumed once, by a feeder thread when ``workers`` > 0).
        workers: threads calling ``function``; 0 calls it in the caller's thread.
        window: results computed ahead of the caller at most (default ``2 * workers``).
        name: prefix of the threads' names.

    Yields:
        (item, result) pairs in the order of ``items``.

    Raises:
        ValueError: ``workers`` < 0 or ``window`` < 1.
        Whatever ``function`` or the iterable raises, at that item's place.
    """
    workers = int(workers)
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    window = 2 * max(workers, 1) if window is None else int(window)
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if workers == 0:
        return ((item, function(item)) for item in items)
    return _threaded(function, items, workers, window, name)


def _threaded(function, items, workers, window, name):
    pending = queue.Queue(maxsize=window)  # (item, future) in order, then _END
    stop = threading.Event()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)

    def put(entry):
        while not stop.is_set():
            try:
                pending.put(entry, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def feed():
        iterator = None
        try:
            iterator = iter(items)
            for item in iterator:
                if stop.is_set() or not put((item, pool.submit(function, item))):
                    break
        except BaseException as error:  # noqa: BLE001 - carried to the caller, raised there
            put((_IterationError(error), None))
        finally:
            close = getattr(iterator, "close", None)
            if stop.is_set() and close is not None:
                close()  # e.g. release a video capture
            put(_END)

    feeder = threading.Thread(target=feed, name=f"{name}-feeder", daemon=True)
    feeder.start()
    try:
        while True:
            entry = pending.get()
            if entry is _END:
                return
            item, future = entry
            if isinstance(item, _IterationError):
                raise item.error
            yield item, future.result()
    finally:
        stop.set()
        while feeder.is_alive():  # unblock a feeder waiting for room
            try:
                entry = pending.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                continue
            if entry is not _END and entry[1] is not None:
                entry[1].cancel()
        feeder.join()
        pool.shutdown(wait=True, cancel_futures=True)
