"""map_units, the per-unit stages' scheduler: every unit once, a bounded window read lazily, errors stop it."""

import threading
import time

import pytest

from pwd_agent.agents.runner import map_units


def counted(n: int, pulled: list):
    for i in range(n):
        pulled.append(i)
        yield i


@pytest.mark.parametrize("workers", [1, 4])
def test_every_unit_once_and_the_source_read_at_most_two_windows_ahead(workers):
    pulled, got = [], []
    for unit, result in map_units(lambda u: (time.sleep(0.001 * (u % 3)), u * 2)[1], counted(60, pulled), workers):
        assert result == unit * 2
        got.append(unit)
        # A stage reads a unit's inputs when it is pulled: never more than 2 x workers ahead of the
        # results handed back, so its memory follows the window, not the corpus.
        assert len(pulled) - len(got) <= 2 * max(workers, 1)
    assert sorted(got) == list(range(60))


def test_units_run_concurrently_up_to_the_workers():
    running, peak, lock = [0], [0], threading.Lock()

    def work(unit):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.02)
        with lock:
            running[0] -= 1
        return unit

    assert len(list(map_units(work, range(24), 4))) == 24
    assert peak[0] == 4


def test_an_error_in_a_unit_stops_the_stage_and_later_units_are_not_started():
    pulled, started = [], []

    def work(unit):
        started.append(unit)
        if unit == 3:
            raise ValueError("unit 3")
        time.sleep(0.01)
        return unit

    with pytest.raises(ValueError, match="unit 3"):
        for _ in map_units(work, counted(1000, pulled), 2):
            pass
    assert len(pulled) < 20 and len(started) < 20  # the rest of the source was never read or run
