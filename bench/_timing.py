"""Interleaved timing rounds, shared by the bench scripts that time two sides in one process."""
import time


def interleaved_seconds(sides, runs):
    """Seconds of each side's call per round, the order reversed every other round.

    Args:
        sides: {name: f()} the calls to time (warmed up by the caller).
        runs: rounds; each calls every side once.

    Returns:
        {name: [seconds of each round]}.
    """
    names = list(sides)
    seconds = {name: [] for name in names}
    for round_index in range(runs):
        for name in names if round_index % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            sides[name]()
            seconds[name].append(time.perf_counter() - start)
    return seconds
